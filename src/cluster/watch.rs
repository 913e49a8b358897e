//! Orders watched across nodes (DESIGN.md "Cluster", subjects): each
//! live order's status updates for its watchers travel on
//! `<bucket>.order.<id>.out` and its driver's positions on
//! `<bucket>.order.<id>.loc` (prefixed like the command subjects, so that
//! clusters sharing a NATS server stay apart). Two subjects, so that a
//! node that wants an order's updates but not its positions (it only holds
//! the carrying driver's socket) is not sent every position to drop.
//!
//! - **Publishing.** The node that runs an order's feed publishes each of
//!   its status updates once, and each of its driver positions once *if
//!   some node has declared interest in the order* (below): a position
//!   nobody on another node watches never leaves the process. Publishing
//!   never blocks the feed: frames go through one bounded queue to one
//!   publisher task; when it is full they are dropped and counted.
//! - **Interest.** A node with at least one local session watching an
//!   order another node runs announces the order on `<bucket>.interest`
//!   before it reads the snapshot, and every [`INTEREST_RENEW`] announces
//!   all the orders it watches again. The socket of the driver carrying
//!   the order does not count: it follows the order for its status
//!   updates only, since on one node a driver is never sent its own
//!   positions back (before, every position of a driver on another node
//!   than its order's came back to its node and its socket: a bus message
//!   and a frame per position for nothing, benches/README.md). Every node hears that subject and
//!   keeps each announced order for [`INTEREST_TTL`] since its last
//!   announcement, so a watcher node that dies or stops watching costs the
//!   publisher nothing after that.
//! - **Watching.** A node with at least one local session watching an
//!   order another node runs subscribes to its updates once, and to its
//!   positions while at least one of those sessions wants them; it ends
//!   each subscription when its last local watcher of that kind leaves. Each bus message is
//!   fanned out to the local watchers' outboxes: status updates as frames
//!   that must not be dropped, positions coalesced per order (drop-oldest),
//!   exactly as the local path does.
//! - **Payload.** One byte for the kind (`U` update, `L` location), the
//!   publisher's wall clock in Unix milliseconds (8 bytes, big-endian; for
//!   the cross-node latency), then the frame as the local watchers get it.
//!   No NATS headers: a header map per message was a tenth of the bus's
//!   cost per position (benches/README.md).
//!
//! Bounded: at most `cluster.max_watched_orders` subscriptions per node
//! (10,000 by default; one more subscribe is refused with RATE_LIMITED),
//! each held by the server within `cluster.watch_timeout_ms` (5 s) or
//! refused with ENGINE_UNAVAILABLE; each
//! subscription's own buffer is async-nats' (bounded; a slow consumer
//! loses messages there); at most [`MAX_HELD`] frames (one position, the
//! newest) are held for a watcher until its snapshot is queued, a window
//! of one store read; at most [`INTEREST_NODES`] times
//! `cluster.max_watched_orders` orders of interest are kept.

use actors::domain::model::{OrderId, OrderStatus};
use actors::engine::order::bus::{BusFrame, OrderBus, WatchFuture, WatchRefused};
use actors::engine::outbox::{Outbox, SessionId};
use actors::metrics as m;
use actors::wire::Frame;
use futures::StreamExt;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Frames held for a watcher between its subscription and its snapshot
/// (a few milliseconds: one store read). Past it the oldest go.
const MAX_HELD: usize = 64;
/// Frames waiting for the publisher task; past it, frames are dropped.
const PUBLISH_QUEUE: usize = 16_384;
/// Room in the publish queue that positions may not take, so that a burst
/// of positions never crowds out a status update (which watchers must not
/// miss; a position is replaced by the next one anyway).
const KEPT_FOR_UPDATES: usize = PUBLISH_QUEUE / 4;

/// Whether a frame of `kind` may enter the publish queue with `free` slots left.
fn admits(kind: BusFrame, free: usize) -> bool {
    match kind {
        BusFrame::Update => free > 0,
        BusFrame::Location => free > KEPT_FOR_UPDATES,
    }
}
/// How often a node announces again every order it watches remotely.
pub const INTEREST_RENEW: Duration = Duration::from_secs(2);
/// How long an announced interest lasts without a renewal: three renewals,
/// so one lost announcement costs nothing.
pub const INTEREST_TTL: Duration = Duration::from_secs(6);
/// Orders in one interest announcement (about 8 KB of JSON).
const INTEREST_CHUNK: usize = 1_000;
/// Orders of interest one node keeps, in nodes' worth of its own
/// `cluster.max_watched_orders` (every other node's watched orders, for
/// up to ten nodes with the same setting); past it, newly announced
/// orders are not kept and their positions not published.
const INTEREST_NODES: usize = 10;
/// Bytes before the frame in a bus payload: the kind, the publish time.
const PREFIX_LEN: usize = 9;

/// The NATS side of [`OrderBus`], cheap to clone.
#[derive(Clone)]
pub struct NatsOrderBus {
    shared: Arc<Shared>,
}

struct Shared {
    client: async_nats::Client,
    bucket: String,
    outgoing: mpsc::Sender<(OrderId, BusFrame, Frame, i64)>,
    watched: Mutex<HashMap<OrderId, Watched>>,
    /// At most this many orders subscribed to at once.
    max_watched: usize,
    /// How long a subscription may take to be held by the server.
    watch_timeout: Duration,
    /// Orders some node (this one included) announced it watches, with
    /// when that interest lapses: only their positions are published.
    interest: Mutex<HashMap<OrderId, Instant>>,
    /// Makes one subscription at a time, so two sessions watching the
    /// same order at once end with one subscription.
    subscribing: tokio::sync::Mutex<()>,
}

/// One order of another node, as this node follows it. Dropping it ends
/// its subscriptions.
struct Watched {
    /// Fans out the order's status updates (`.out`).
    updates: JoinHandle<()>,
    /// Fans out its positions (`.loc`), while some session wants them.
    positions: Option<JoinHandle<()>>,
    sessions: HashMap<SessionId, Watcher>,
    /// Sessions of `sessions` that get no positions: the socket of the
    /// driver carrying the order (as on one node, it is not sent its own
    /// positions back). An order only they watch is not announced.
    updates_only: HashSet<SessionId>,
}

impl Watched {
    /// Whether some session here wants the order's positions.
    fn wants_positions(&self) -> bool {
        self.sessions
            .keys()
            .any(|session_id| !self.updates_only.contains(session_id))
    }

    /// Ends the positions' subscription once no session here wants them
    /// (the last customer left; the driver's socket may stay).
    fn drop_unwanted_positions(&mut self) {
        if !self.wants_positions()
            && let Some(positions) = self.positions.take()
        {
            // Aborting the task drops its subscriber: NATS stops sending.
            positions.abort();
            metrics::counter!(m::CLUSTER_ORDER_SUBSCRIPTIONS_TOTAL, "op" => "unsubscribe")
                .increment(1);
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.updates.abort();
        let mut ended = 1;
        if let Some(positions) = self.positions.take() {
            positions.abort();
            ended += 1;
        }
        metrics::counter!(m::CLUSTER_ORDER_SUBSCRIPTIONS_TOTAL, "op" => "unsubscribe")
            .increment(ended);
    }
}

enum Watcher {
    /// Subscribed, its snapshot not queued yet: frames wait here.
    Waiting {
        outbox: Arc<Outbox>,
        held: VecDeque<(BusFrame, Frame)>,
    },
    Live(Arc<Outbox>),
}

impl Watcher {
    fn outbox(&self) -> &Arc<Outbox> {
        match self {
            Watcher::Waiting { outbox, .. } | Watcher::Live(outbox) => outbox,
        }
    }

    /// Queues (or holds) one frame; false once the session is closed.
    fn deliver(&mut self, order_id: OrderId, kind: BusFrame, frame: &Frame) -> bool {
        match self {
            Watcher::Waiting { outbox, held } => {
                // Positions coalesce as in an outbox: only the newest waits.
                if kind == BusFrame::Location {
                    held.retain(|(held_kind, _)| *held_kind != BusFrame::Location);
                }
                if held.len() >= MAX_HELD {
                    held.pop_front();
                    metrics::counter!(m::CLUSTER_ORDER_BUS_DROPPED_TOTAL, "kind" => kind.as_str())
                        .increment(1);
                }
                held.push_back((kind, frame.clone()));
                !outbox.is_closed()
            }
            Watcher::Live(outbox) => queue(outbox, order_id, kind, frame.clone()),
        }
    }
}

fn queue(outbox: &Outbox, order_id: OrderId, kind: BusFrame, frame: Frame) -> bool {
    match kind {
        BusFrame::Update => outbox.push(frame),
        BusFrame::Location => {
            outbox.push_location(order_id, frame, Instant::now());
            !outbox.is_closed()
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The subject of an order's status updates.
pub fn subject(bucket: &str, order_id: OrderId) -> String {
    format!("{bucket}.order.{order_id}.out")
}

/// The subject of an order's driver positions.
pub fn location_subject(bucket: &str, order_id: OrderId) -> String {
    format!("{bucket}.order.{order_id}.loc")
}

/// The subject a frame of `kind` of `order_id` travels on.
fn subject_of(bucket: &str, order_id: OrderId, kind: BusFrame) -> String {
    match kind {
        BusFrame::Update => subject(bucket, order_id),
        BusFrame::Location => location_subject(bucket, order_id),
    }
}

pub fn interest_subject(bucket: &str) -> String {
    format!("{bucket}.interest")
}

/// One announcement on the interest subject: orders its sender watches.
#[derive(serde::Serialize, serde::Deserialize)]
struct Interest {
    orders: Vec<OrderId>,
}

/// A frame as it travels on an order's subject (see the module's "Payload").
fn encode(kind: BusFrame, published_ms: i64, frame: &Frame) -> bytes::Bytes {
    let mut payload = bytes::BytesMut::with_capacity(PREFIX_LEN + frame.len());
    payload.extend_from_slice(match kind {
        BusFrame::Update => b"U",
        BusFrame::Location => b"L",
    });
    payload.extend_from_slice(&published_ms.to_be_bytes());
    payload.extend_from_slice(frame);
    payload.freeze()
}

/// The kind, publish time and frame of a bus payload; None if malformed.
fn decode(payload: &bytes::Bytes) -> Option<(BusFrame, i64, Frame)> {
    let kind = match payload.first()? {
        b'U' => BusFrame::Update,
        b'L' => BusFrame::Location,
        _ => return None,
    };
    let published_ms = i64::from_be_bytes(payload.get(1..PREFIX_LEN)?.try_into().ok()?);
    Some((kind, published_ms, payload.slice(PREFIX_LEN..)))
}

impl NatsOrderBus {
    /// The bus on `client`, with its publisher task: following at most
    /// `max_watched` orders at once, each subscription held by the server
    /// within `watch_timeout` or refused.
    pub fn start(
        client: async_nats::Client,
        bucket: &str,
        max_watched: usize,
        watch_timeout: Duration,
    ) -> NatsOrderBus {
        let (outgoing, queued) = mpsc::channel(PUBLISH_QUEUE);
        let bus = NatsOrderBus {
            shared: Arc::new(Shared {
                client,
                bucket: bucket.to_string(),
                outgoing,
                watched: Mutex::default(),
                max_watched,
                watch_timeout,
                interest: Mutex::default(),
                subscribing: tokio::sync::Mutex::new(()),
            }),
        };
        tokio::spawn(bus.clone().publish_queued(queued));
        tokio::spawn(bus.clone().hear_interest());
        tokio::spawn(bus.clone().renew_interest());
        bus
    }

    /// Whether some node watches `order_id` now (its positions go out).
    fn interested(&self, order_id: OrderId) -> bool {
        lock(&self.shared.interest)
            .get(&order_id)
            .is_some_and(|until| *until > Instant::now())
    }

    /// Keeps what every node announces on the interest subject, for
    /// [`INTEREST_TTL`]; subscribes again if the subscription ends.
    async fn hear_interest(self) {
        let subject = interest_subject(&self.shared.bucket);
        loop {
            match self.shared.client.subscribe(subject.clone()).await {
                Ok(mut subscriber) => {
                    while let Some(message) = subscriber.next().await {
                        metrics::counter!(m::CLUSTER_INTEREST_MESSAGES_TOTAL, "direction" => "in")
                            .increment(1);
                        match serde_json::from_slice::<Interest>(&message.payload) {
                            Ok(interest) => self.keep_interest(&interest.orders),
                            Err(error) => {
                                tracing::debug!(%error, "Malformed interest announcement")
                            }
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "Interest subject not subscribed"),
            }
            tokio::time::sleep(INTEREST_RENEW).await;
        }
    }

    fn keep_interest(&self, orders: &[OrderId]) {
        let until = Instant::now() + INTEREST_TTL;
        let mut interest = lock(&self.shared.interest);
        for order_id in orders {
            if interest.len() >= INTEREST_NODES * self.shared.max_watched
                && !interest.contains_key(order_id)
            {
                metrics::counter!(m::CLUSTER_INTEREST_MESSAGES_TOTAL, "direction" => "refused_full")
                    .increment(1);
                continue;
            }
            interest.insert(*order_id, until);
        }
        metrics::gauge!(m::CLUSTER_ORDER_INTEREST).set(interest.len() as f64);
    }

    /// Announces `orders` (this node watches them) on the interest subject.
    async fn announce(&self, orders: &[OrderId]) {
        for chunk in orders.chunks(INTEREST_CHUNK) {
            let Ok(body) = serde_json::to_vec(&Interest {
                orders: chunk.to_vec(),
            }) else {
                continue;
            };
            let sent = self
                .shared
                .client
                .publish(interest_subject(&self.shared.bucket), body.into())
                .await;
            match sent {
                Ok(()) => {
                    metrics::counter!(m::CLUSTER_INTEREST_MESSAGES_TOTAL, "direction" => "out")
                        .increment(1)
                }
                Err(error) => tracing::debug!(%error, "Interest not announced"),
            }
        }
    }

    /// Every [`INTEREST_RENEW`]: announces every order this node watches
    /// again, and forgets the interest nobody renewed.
    async fn renew_interest(self) {
        let mut tick = tokio::time::interval(INTEREST_RENEW);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let watched: Vec<OrderId> = lock(&self.shared.watched)
                .iter()
                .filter(|(_, order)| order.wants_positions())
                .map(|(order_id, _)| *order_id)
                .collect();
            self.announce(&watched).await;
            let now = Instant::now();
            let mut interest = lock(&self.shared.interest);
            interest.retain(|_, until| *until > now);
            metrics::gauge!(m::CLUSTER_ORDER_INTEREST).set(interest.len() as f64);
        }
    }

    async fn publish_queued(self, mut queued: mpsc::Receiver<(OrderId, BusFrame, Frame, i64)>) {
        while let Some((order_id, kind, frame, published_ms)) = queued.recv().await {
            let sent = self
                .shared
                .client
                .publish(
                    subject_of(&self.shared.bucket, order_id, kind),
                    encode(kind, published_ms, &frame),
                )
                .await;
            match sent {
                Ok(()) => metrics::counter!(m::CLUSTER_ORDER_BUS_MESSAGES_TOTAL, "direction" => "out", "kind" => kind.as_str()).increment(1),
                Err(error) => {
                    metrics::counter!(m::CLUSTER_ORDER_BUS_DROPPED_TOTAL, "kind" => kind.as_str())
                        .increment(1);
                    tracing::debug!(order_id, %error, "Order frame not published");
                }
            }
        }
    }

    /// Subscribes to the order's subjects of `subjects`, announces the
    /// order as watched if `announce` (its positions are wanted), and
    /// flushes, all within `cluster.watch_timeout_ms`: once this returns,
    /// the server holds the subscriptions and has passed the interest on,
    /// so no frame published after the caller's snapshot read can pass
    /// this node by, and the publisher sends positions.
    async fn held<const N: usize>(
        &self,
        order_id: OrderId,
        subjects: [fn(&str, OrderId) -> String; N],
        announce: bool,
    ) -> Result<[async_nats::Subscriber; N], WatchRefused> {
        let client = &self.shared.client;
        let subscribed = tokio::time::timeout(self.shared.watch_timeout, async {
            let mut subscribers = Vec::with_capacity(N);
            for subject in subjects {
                let subscriber = client
                    .subscribe(subject(&self.shared.bucket, order_id))
                    .await
                    .map_err(|e| e.to_string())?;
                subscribers.push(subscriber);
            }
            if announce {
                self.announce(&[order_id]).await;
            }
            client.flush().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(subscribers)
        })
        .await;
        let subscribers = match subscribed {
            Ok(Ok(subscribers)) => subscribers,
            Ok(Err(error)) => return Err(failed(error)),
            Err(_) => return Err(failed("no answer from NATS in time".into())),
        };
        metrics::counter!(m::CLUSTER_ORDER_SUBSCRIPTIONS_TOTAL, "op" => "subscribe")
            .increment(N as u64);
        subscribers
            .try_into()
            .map_err(|_| failed("subscriptions lost".into()))
    }

    /// Fans each message of one of an order's subscriptions (updates or
    /// positions) out to its local watchers, until the last of them leaves
    /// (the task is aborted) or every one of them is found closed.
    async fn fan_out(self, order_id: OrderId, mut subscriber: async_nats::Subscriber) {
        while let Some(message) = subscriber.next().await {
            let Some((kind, published_ms, frame)) = decode(&message.payload) else {
                tracing::debug!(order_id, "Malformed frame on an order subject");
                continue;
            };
            metrics::counter!(m::CLUSTER_ORDER_BUS_MESSAGES_TOTAL, "direction" => "in", "kind" => kind.as_str()).increment(1);
            let everyone_left = {
                let mut watched = lock(&self.shared.watched);
                let Some(order) = watched.get_mut(&order_id) else {
                    return;
                };
                let updates_only = &mut order.updates_only;
                order.sessions.retain(|session_id, watcher| {
                    let open = if kind == BusFrame::Location && updates_only.contains(session_id) {
                        !watcher.outbox().is_closed()
                    } else {
                        watcher.deliver(order_id, kind, &frame)
                    };
                    if !open {
                        updates_only.remove(session_id);
                    }
                    open
                });
                // A delivered or cancelled order says nothing more: its
                // watchers keep their last frame, the subscriptions end.
                let left = order.sessions.is_empty()
                    || (kind == BusFrame::Update && is_terminal_update(&frame));
                if left {
                    // Dropping it ends both subscriptions, this one too.
                    watched.remove(&order_id);
                } else {
                    order.drop_unwanted_positions();
                }
                gauges(&watched);
                left
            };
            let waited_ms = (chrono::Utc::now().timestamp_millis() - published_ms).max(0);
            metrics::histogram!(m::CLUSTER_FANOUT_LATENCY_SECONDS, "kind" => kind.as_str())
                .record(waited_ms as f64 / 1000.0);
            if everyone_left {
                // Dropping the subscriber ends the subscription on the server.
                return;
            }
        }
    }
}

fn gauges(watched: &HashMap<OrderId, Watched>) {
    metrics::gauge!(m::CLUSTER_WATCHED_ORDERS).set(watched.len() as f64);
    let watchers: usize = watched.values().map(|order| order.sessions.len()).sum();
    metrics::gauge!(m::CLUSTER_REMOTE_WATCHERS).set(watchers as f64);
}

impl OrderBus for NatsOrderBus {
    fn publish(&self, order_id: OrderId, kind: BusFrame, frame: &Frame) {
        // A status update always goes (a watcher subscribing now must not
        // miss it); a position only for an order some node watches.
        if kind == BusFrame::Location && !self.interested(order_id) {
            return;
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let outgoing = &self.shared.outgoing;
        if !admits(kind, outgoing.capacity())
            || outgoing
                .try_send((order_id, kind, frame.clone(), now_ms))
                .is_err()
        {
            metrics::counter!(m::CLUSTER_ORDER_BUS_DROPPED_TOTAL, "kind" => kind.as_str())
                .increment(1);
        }
    }

    fn watch(&self, order_id: OrderId, outbox: Arc<Outbox>, positions: bool) -> WatchFuture {
        let bus = self.clone();
        Box::pin(async move {
            let session_id = outbox.session_id;
            let waiting = || Watcher::Waiting {
                outbox: outbox.clone(),
                held: VecDeque::new(),
            };
            let join = |order: &mut Watched| {
                order.sessions.insert(session_id, waiting());
                if positions {
                    order.updates_only.remove(&session_id);
                } else {
                    order.updates_only.insert(session_id);
                }
            };
            let _one_at_a_time = bus.shared.subscribing.lock().await;
            let followed_with_positions = lock(&bus.shared.watched)
                .get(&order_id)
                .map(|order| order.positions.is_some());
            if let Some(with_positions) = followed_with_positions {
                // Followed already. A session that wants positions, where
                // only the driver's socket (updates only) was: the node
                // subscribes to them too, and the order's node hears that
                // they are wanted now.
                let positions_task = if positions && !with_positions {
                    let [subscriber] = bus.held(order_id, [location_subject], true).await?;
                    Some(tokio::spawn(bus.clone().fan_out(order_id, subscriber)))
                } else {
                    None
                };
                let mut watched = lock(&bus.shared.watched);
                if let Some(order) = watched.get_mut(&order_id) {
                    join(order);
                    if positions_task.is_some() {
                        order.positions = positions_task;
                    }
                    gauges(&watched);
                    return Ok(());
                }
                // Its last update said delivered or cancelled meanwhile:
                // follow it afresh below, to the same end.
                if let Some(task) = positions_task {
                    task.abort();
                    metrics::counter!(m::CLUSTER_ORDER_SUBSCRIPTIONS_TOTAL, "op" => "unsubscribe")
                        .increment(1);
                }
            }
            {
                let watched = lock(&bus.shared.watched);
                if watched.len() >= bus.shared.max_watched {
                    metrics::counter!(m::CLUSTER_ORDER_SUBSCRIPTIONS_TOTAL, "op" => "refused_full")
                        .increment(1);
                    return Err(WatchRefused::Full(bus.shared.max_watched));
                }
            }
            let (updates, positions_task) = if positions {
                let [updates, located] = bus
                    .held(order_id, [subject, location_subject], true)
                    .await?;
                let positions_task = tokio::spawn(bus.clone().fan_out(order_id, located));
                (updates, Some(positions_task))
            } else {
                let [updates] = bus.held(order_id, [subject], false).await?;
                (updates, None)
            };
            let mut watched = lock(&bus.shared.watched);
            let mut order = Watched {
                updates: tokio::spawn(bus.clone().fan_out(order_id, updates)),
                positions: positions_task,
                sessions: HashMap::new(),
                updates_only: HashSet::new(),
            };
            join(&mut order);
            watched.insert(order_id, order);
            gauges(&watched);
            Ok(())
        })
    }

    fn ready(&self, order_id: OrderId, session_id: SessionId, snapshot: Frame, version: i64) {
        let mut watched = lock(&self.shared.watched);
        let Some(watcher) = watched
            .get_mut(&order_id)
            .and_then(|order| order.sessions.get_mut(&session_id))
        else {
            return;
        };
        let outbox = watcher.outbox().clone();
        let mut open = outbox.push(snapshot);
        if let Watcher::Waiting { held, .. } = watcher {
            for (kind, frame) in held.drain(..) {
                if kind == BusFrame::Update && shown_by_snapshot(&frame, version) {
                    continue;
                }
                open = open && queue(&outbox, order_id, kind, frame);
            }
        }
        *watcher = Watcher::Live(outbox);
        drop(watched);
        if !open {
            self.unwatch(order_id, session_id);
        }
    }

    fn unwatch(&self, order_id: OrderId, session_id: SessionId) {
        let mut watched = lock(&self.shared.watched);
        let Some(order) = watched.get_mut(&order_id) else {
            return;
        };
        order.sessions.remove(&session_id);
        order.updates_only.remove(&session_id);
        if order.sessions.is_empty() {
            // Dropping it ends its subscriptions: NATS stops sending.
            watched.remove(&order_id);
        } else {
            order.drop_unwanted_positions();
        }
        gauges(&watched);
    }

    fn take_watchers(&self, order_id: OrderId) -> Vec<Arc<Outbox>> {
        let mut watched = lock(&self.shared.watched);
        let Some(mut order) = watched.remove(&order_id) else {
            return Vec::new();
        };
        gauges(&watched);
        // Dropped at the end: its subscriptions end.
        std::mem::take(&mut order.sessions)
            .into_values()
            .map(|watcher| watcher.outbox().clone())
            .filter(|outbox| !outbox.is_closed())
            .collect()
    }
}

/// Whether an `order_update` frame says the order is delivered or cancelled.
fn is_terminal_update(frame: &Frame) -> bool {
    #[derive(serde::Deserialize)]
    struct Status {
        #[serde(rename = "type")]
        kind: Option<String>,
        status: Option<OrderStatus>,
    }
    serde_json::from_slice::<Status>(frame).is_ok_and(|update| {
        update.kind.as_deref() == Some("order_update")
            && update.status.is_some_and(OrderStatus::is_terminal)
    })
}

/// Whether a held status update is of a version the snapshot already
/// shows (it committed before the snapshot's read; its frame came after
/// the subscription). Only frames held while a watcher waited are read.
fn shown_by_snapshot(frame: &Frame, snapshot_version: i64) -> bool {
    #[derive(serde::Deserialize)]
    struct Versioned {
        version: Option<i64>,
    }
    serde_json::from_slice::<Versioned>(frame)
        .ok()
        .and_then(|update| update.version)
        .is_some_and(|version| version <= snapshot_version)
}

fn failed(error: String) -> WatchRefused {
    metrics::counter!(m::CLUSTER_ORDER_SUBSCRIPTIONS_TOTAL, "op" => "failed").increment(1);
    WatchRefused::Unavailable(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bus_payload_carries_kind_time_and_frame_and_a_malformed_one_is_refused() {
        let frame = update(4);
        let payload = encode(BusFrame::Location, 1_733_100_000_123, &frame);
        assert_eq!(payload.len(), PREFIX_LEN + frame.len());
        assert_eq!(
            decode(&payload),
            Some((BusFrame::Location, 1_733_100_000_123, frame.clone()))
        );
        let payload = encode(BusFrame::Update, -1, &frame);
        assert_eq!(decode(&payload), Some((BusFrame::Update, -1, frame)));
        assert_eq!(decode(&bytes::Bytes::from_static(b"")), None);
        assert_eq!(decode(&bytes::Bytes::from_static(b"L1234")), None);
        assert_eq!(decode(&bytes::Bytes::from_static(b"X12345678{}")), None);
        // A frame may be empty; the prefix alone is well-formed.
        assert_eq!(
            decode(&bytes::Bytes::from_static(b"U\0\0\0\0\0\0\0\x01")),
            Some((BusFrame::Update, 1, Frame::new()))
        );
    }

    #[test]
    fn positions_leave_room_in_the_publish_queue_for_status_updates() {
        assert!(admits(BusFrame::Location, PUBLISH_QUEUE));
        assert!(admits(BusFrame::Location, KEPT_FOR_UPDATES + 1));
        assert!(!admits(BusFrame::Location, KEPT_FOR_UPDATES));
        assert!(admits(BusFrame::Update, KEPT_FOR_UPDATES));
        assert!(admits(BusFrame::Update, 1));
        assert!(!admits(BusFrame::Update, 0));
    }
    use actors::engine::outbox::next_session_id;

    fn update(version: i64) -> Frame {
        Frame::from(format!(
            "{{\"type\":\"order_update\",\"orderId\":7,\"status\":\"CONFIRMED\",\"version\":{version}}}"
        ))
    }

    #[test]
    fn a_held_update_the_snapshot_shows_is_recognised_by_its_version() {
        assert!(shown_by_snapshot(&update(2), 2));
        assert!(shown_by_snapshot(&update(1), 2));
        assert!(!shown_by_snapshot(&update(3), 2));
        // Frames without a version (arrivals) are never taken for shown.
        assert!(!shown_by_snapshot(
            &Frame::from_static(b"{\"type\":\"driver_arrived\",\"orderId\":7}"),
            2
        ));
    }

    #[test]
    fn a_waiting_watcher_holds_at_most_max_held_frames_the_newest_kept() {
        let outbox = Arc::new(Outbox::new(next_session_id(), 8));
        let mut watcher = Watcher::Waiting {
            outbox,
            held: VecDeque::new(),
        };
        for version in 0..(MAX_HELD as i64 + 10) {
            assert!(watcher.deliver(7, BusFrame::Update, &update(version)));
        }
        let Watcher::Waiting { held, .. } = &watcher else {
            panic!("still waiting");
        };
        assert_eq!(held.len(), MAX_HELD);
        assert_eq!(held.front().map(|(_, f)| f.clone()), Some(update(10)));
    }

    #[test]
    fn only_a_delivered_or_cancelled_update_ends_the_subscription() {
        let with = |status: &str| {
            Frame::from(format!(
                "{{\"type\":\"order_update\",\"orderId\":7,\"status\":\"{status}\",\"version\":5}}"
            ))
        };
        assert!(is_terminal_update(&with("DELIVERED")));
        assert!(is_terminal_update(&with("CANCELLED")));
        assert!(!is_terminal_update(&with("PICKED_UP")));
        assert!(!is_terminal_update(&Frame::from_static(
            b"{\"type\":\"driver_arrived\"}"
        )));
    }

    #[test]
    fn a_waiting_watcher_holds_only_the_newest_position() {
        let outbox = Arc::new(Outbox::new(next_session_id(), 8));
        let mut watcher = Watcher::Waiting {
            outbox,
            held: VecDeque::new(),
        };
        let position =
            |lat: &str| Frame::from(format!("{{\"type\":\"driver_location\",\"lat\":{lat}}}"));
        watcher.deliver(7, BusFrame::Location, &position("1"));
        watcher.deliver(7, BusFrame::Update, &update(3));
        watcher.deliver(7, BusFrame::Location, &position("2"));
        let Watcher::Waiting { held, .. } = &watcher else {
            panic!("still waiting");
        };
        let frames: Vec<Frame> = held.iter().map(|(_, f)| f.clone()).collect();
        assert_eq!(frames, vec![update(3), position("2")]);
    }
}
