//! The feeds that are not one order's: a restaurant's new orders (for its
//! tablets) and the whole city (for operators), with the task that builds
//! the operators' view once a second.

use crate::domain::model::*;
use crate::engine::dispatcher::DispatchHandle;
use crate::engine::geo_actor::Geo;
use crate::engine::outbox::{Outbox, SessionId};
use crate::wire::{self, Frame};
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Sessions watching a restaurant's new orders (tablets, operators).
#[derive(Default)]
pub struct RestaurantFeeds {
    watchers: DashMap<RestaurantId, HashMap<SessionId, Arc<Outbox>>>,
    /// Cluster mode: where this node's restaurant frames also go, for the
    /// tablets connected to other nodes (the restaurant's orders run on
    /// its region's owner only).
    bus: std::sync::OnceLock<Arc<dyn RestaurantBus>>,
}

/// Cluster mode: carries restaurant frames to the other nodes
/// (`dispatchd::cluster::restaurants`). Must not block.
pub trait RestaurantBus: Send + Sync + 'static {
    fn publish(&self, restaurant_id: RestaurantId, frame: &Frame);
}

impl RestaurantFeeds {
    pub fn watch(&self, restaurant_id: RestaurantId, outbox: Arc<Outbox>) {
        self.watchers
            .entry(restaurant_id)
            .or_default()
            .insert(outbox.session_id, outbox);
    }

    pub fn unwatch(&self, restaurant_id: RestaurantId, session_id: SessionId) {
        if let Some(mut sessions) = self.watchers.get_mut(&restaurant_id) {
            sessions.remove(&session_id);
        }
    }

    /// A frame of one of this node's orders: to its local watchers, and
    /// in cluster mode to the other nodes'.
    pub fn publish(&self, restaurant_id: RestaurantId, frame: &Frame) {
        self.deliver(restaurant_id, frame);
        if let Some(bus) = self.bus.get() {
            bus.publish(restaurant_id, frame);
        }
    }

    /// A frame another node published: to the local watchers only.
    pub fn deliver(&self, restaurant_id: RestaurantId, frame: &Frame) {
        if let Some(mut sessions) = self.watchers.get_mut(&restaurant_id) {
            sessions.retain(|_, outbox| outbox.push(frame.clone()));
        }
    }

    /// Cluster mode: publish to `bus` too from now on (set once, at start).
    pub fn publish_to(&self, bus: Arc<dyn RestaurantBus>) -> bool {
        self.bus.set(bus).is_ok()
    }
}

/// Operators watching the whole city.
#[derive(Default)]
pub struct OpsFeed {
    watchers: DashMap<SessionId, Arc<Outbox>>,
}

impl OpsFeed {
    pub fn watch(&self, outbox: Arc<Outbox>) {
        self.watchers.insert(outbox.session_id, outbox);
    }

    pub fn unwatch(&self, session_id: SessionId) {
        self.watchers.remove(&session_id);
    }

    pub fn is_empty(&self) -> bool {
        self.watchers.is_empty()
    }

    /// Queues the newest view for every operator; an older one not yet sent
    /// is replaced, so a slow console never backs up.
    fn publish(&self, frame: &Frame) {
        let now = std::time::Instant::now();
        self.watchers.retain(|_, outbox| {
            outbox.push_location(OPS_SLOT, frame.clone(), now);
            !outbox.is_closed()
        });
    }
}

/// The coalescing slot of the ops view in an outbox (no order has id 0).
const OPS_SLOT: OrderId = 0;
/// How often operators get the city view.
const OPS_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// Builds the operator's view once a second while anyone watches.
pub(crate) fn spawn_ops_reporter(
    ops: Arc<OpsFeed>,
    geo: Geo,
    dispatch: DispatchHandle,
    presence_ttl: std::time::Duration,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(OPS_PERIOD);
        let mut last_positions: Option<(u64, std::time::Instant)> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if ops.is_empty() {
                continue;
            }
            // Either actor may be restarting: skip this second.
            let Some((everyone, positions)) = geo.everyone().await else {
                continue;
            };
            let Some(waiting) = dispatch.overview().await else {
                continue;
            };
            let offered: std::collections::HashSet<DriverId> =
                waiting.iter().filter_map(|w| w.offered_to).collect();
            let stale_after = presence_ttl / 2;
            let drivers: Vec<wire::OpsDriver> = everyone
                .into_iter()
                .map(|(entry, age)| wire::OpsDriver {
                    id: entry.id,
                    lat: entry.at.lat,
                    lon: entry.at.lon,
                    state: if age > stale_after {
                        "stale"
                    } else if offered.contains(&entry.id) {
                        "offered"
                    } else if entry.active_orders > 0 {
                        "busy"
                    } else if entry.available {
                        "available"
                    } else {
                        "paused"
                    },
                    active_orders: entry.active_orders,
                })
                .collect();
            let now = std::time::Instant::now();
            let positions_per_sec = match last_positions {
                Some((before, at)) => {
                    (positions.saturating_sub(before)) as f64 / now.duration_since(at).as_secs_f64()
                }
                None => 0.0,
            };
            last_positions = Some((positions, now));
            let frame = wire::ServerMessage::Ops {
                at: chrono::Utc::now(),
                drivers: &drivers,
                waiting: &waiting,
                offers_in_flight: offered.len(),
                positions_per_sec,
            }
            .encode();
            ops.publish(&frame);
        }
    });
}
