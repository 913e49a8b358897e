//! An order's feed as other nodes hear it (cluster mode): the seam between
//! this crate and `dispatchd::cluster`, which carries it over NATS.
//!
//! Every frame an order's feed gives its local watchers (status updates,
//! driver positions) is also handed to the bus once, and a session that
//! watches a live order another node runs is registered with the bus
//! instead of an order actor. Without cluster mode there is no bus and
//! nothing of this runs.

use crate::domain::model::OrderId;
use crate::engine::outbox::{Outbox, SessionId};
use crate::wire::Frame;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What a frame on the bus is: a status update must reach every watcher;
/// a position may be replaced by a newer one (drop-oldest, as locally).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusFrame {
    Update,
    Location,
}

impl BusFrame {
    pub fn as_str(self) -> &'static str {
        match self {
            BusFrame::Update => "update",
            BusFrame::Location => "location",
        }
    }
}

/// Why a session could not watch an order of another node.
#[derive(Debug, thiserror::Error)]
pub enum WatchRefused {
    /// This node watches as many orders of other nodes as it may.
    #[error("this node watches {0} orders of other nodes, its limit")]
    Full(usize),
    /// The bus did not take the subscription.
    #[error("the cluster bus is unavailable: {0}")]
    Unavailable(String),
}

pub type WatchFuture = Pin<Box<dyn Future<Output = Result<(), WatchRefused>> + Send>>;

pub trait OrderBus: Send + Sync + 'static {
    /// A frame this node's feed of `order_id` gave its watchers, for the
    /// watchers on other nodes. Must not block (called under the feed's lock).
    fn publish(&self, order_id: OrderId, kind: BusFrame, frame: &Frame);

    /// Registers `outbox` as a watcher of `order_id`, which another node
    /// runs; once the future is done, this node hears the order's frames.
    /// They are held (bounded) until [`OrderBus::ready`] queues the snapshot.
    /// Without `positions` (the carrying driver's own socket, which on one
    /// node is never sent its own positions either) the watcher gets
    /// everything but `driver_location` frames, and does not make the
    /// order's node publish them.
    fn watch(&self, order_id: OrderId, outbox: Arc<Outbox>, positions: bool) -> WatchFuture;

    /// Queues `snapshot` (of the order at `version`), then what was held
    /// since `watch` less the status updates the snapshot already shows,
    /// and from then on every frame of the order.
    fn ready(&self, order_id: OrderId, session_id: SessionId, snapshot: Frame, version: i64);

    /// The session stopped watching; the last local watcher of an order
    /// ends this node's subscription to it.
    fn unwatch(&self, order_id: OrderId, session_id: SessionId);

    /// This node now runs `order_id` itself (it claimed the order's
    /// region): hands over every local watcher of it, waiting or live, and
    /// ends the subscription. The order's feed takes them from here.
    fn take_watchers(&self, order_id: OrderId) -> Vec<Arc<Outbox>>;
}
