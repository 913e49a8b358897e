//! The real-time engine wired together: the actors every session and
//! request reaches (orders, drivers, the geo index, the dispatcher), the
//! restaurant feeds, and the listener that turns an order's committed
//! changes into work for the others.

pub mod breadcrumbs;
pub mod config;
pub mod dispatcher;
pub mod driver;
pub mod geo_actor;
pub mod order;
pub mod outbox;
pub mod session;

use crate::domain::model::*;
use crate::engine::breadcrumbs::BreadcrumbSink;
use crate::engine::config::EngineConfig;
use crate::engine::dispatcher::{
    DispatchHandle, DispatchMessage, Dispatchable, Dispatcher, DispatcherArguments,
};
use crate::engine::driver::{DriverMessage, Drivers};
use crate::engine::geo_actor::{GeoActor, GeoArguments, GeoMessage};
use crate::engine::order::{OrderChanged, OrderListener, Orders};
use crate::engine::outbox::{Outbox, SessionId};
use crate::store::Store;
use crate::wire::{self, Frame};
use dashmap::DashMap;
use ractor::{Actor, ActorRef};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// Sessions watching a restaurant's new orders (tablets, operators).
#[derive(Default)]
pub struct RestaurantFeeds {
    watchers: DashMap<RestaurantId, HashMap<SessionId, Arc<Outbox>>>,
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

    pub fn publish(&self, restaurant_id: RestaurantId, frame: &Frame) {
        if let Some(mut sessions) = self.watchers.get_mut(&restaurant_id) {
            sessions.retain(|_, outbox| outbox.push(frame.clone()));
        }
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
fn spawn_ops_reporter(engine: Engine) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(OPS_PERIOD);
        let mut last_positions: Option<(u64, std::time::Instant)> = None;
        loop {
            tick.tick().await;
            if engine.geo.get_status() != ractor::ActorStatus::Running {
                return;
            }
            if engine.ops.is_empty() {
                continue;
            }
            let timeout = Some(std::time::Duration::from_secs(2));
            let Ok(ractor::rpc::CallResult::Success((everyone, positions))) =
                engine.geo.call(GeoMessage::Everyone, timeout).await
            else {
                continue;
            };
            let Ok(ractor::rpc::CallResult::Success(waiting)) = engine
                .dispatcher
                .actor
                .call(DispatchMessage::Overview, timeout)
                .await
            else {
                continue;
            };
            let offered: std::collections::HashSet<DriverId> =
                waiting.iter().filter_map(|w| w.offered_to).collect();
            let stale_after = engine.config.presence_ttl / 2;
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
            engine.ops.publish(&frame);
        }
    });
}

/// Turns committed order changes into work for drivers, the dispatcher and
/// the restaurant feeds. Runs inside order actors: it only casts.
pub struct EngineListener {
    feeds: Arc<RestaurantFeeds>,
    drivers: Drivers,
    dispatcher: OnceLock<ActorRef<DispatchMessage>>,
}

impl EngineListener {
    fn dispatch(&self, message: DispatchMessage) {
        if let Some(dispatcher) = self.dispatcher.get() {
            let _ = dispatcher.cast(message);
        }
    }

    fn open_for_dispatch(&self, change: &OrderChanged<'_>) {
        let order = change.order;
        let prep = chrono::Duration::minutes(i64::from(change.restaurant.prep_time_minutes));
        let food_ready_at = order
            .ready_at
            .or_else(|| order.preparing_at.map(|t| t + prep))
            .unwrap_or_else(|| order.confirmed_at.unwrap_or(order.placed_at) + prep);
        self.dispatch(DispatchMessage::Open(Box::new(Dispatchable {
            order_id: order.id,
            restaurant: change.restaurant.clone(),
            dropoff: LatLon {
                lat: order.delivery_address.lat,
                lon: order.delivery_address.lon,
            },
            food_ready_at,
        })));
    }

    fn carry(&self, change: &OrderChanged<'_>) {
        let (Some(driver_id), Some(profile)) = (change.order.driver_id, change.driver.cloned())
        else {
            return;
        };
        let drivers = self.drivers.clone();
        let order_id = change.order.id;
        let actor = change.actor.clone();
        let feed = change.feed.clone();
        tokio::spawn(async move {
            if let Some(driver) = drivers.ensure(profile).await {
                let _ = driver.cast(DriverMessage::Carry {
                    order_id,
                    actor,
                    feed,
                });
            } else {
                tracing::warn!(
                    order_id,
                    driver_id,
                    "Driver actor unavailable; order not carried"
                );
            }
        });
    }

    fn release(&self, order: &Order) {
        if let Some(driver_id) = order.driver_id {
            self.drivers
                .cast(driver_id, DriverMessage::Release(order.id));
        }
    }
}

fn dispatchable(order: &Order) -> bool {
    order.driver_id.is_none()
        && matches!(
            order.status,
            OrderStatus::Confirmed | OrderStatus::Preparing | OrderStatus::ReadyForPickup
        )
}

impl OrderListener for EngineListener {
    fn order_changed(&self, change: OrderChanged<'_>) {
        let order = change.order;
        match change.event.kind {
            OrderEventType::OrderPlaced => {
                self.feeds
                    .publish(order.restaurant_id, &wire::order_update(order, None));
            }
            OrderEventType::StatusChanged => match order.status {
                OrderStatus::Confirmed if dispatchable(order) => self.open_for_dispatch(&change),
                OrderStatus::Cancelled | OrderStatus::Delivered => {
                    self.dispatch(DispatchMessage::Withdraw(order.id));
                    self.release(order);
                }
                _ => {}
            },
            OrderEventType::DriverAssigned => {
                self.dispatch(DispatchMessage::Withdraw(order.id));
                self.carry(&change);
            }
            OrderEventType::DriverUnassigned => self.release(order),
        }
    }

    fn order_started(&self, change: OrderChanged<'_>) {
        if dispatchable(change.order) {
            self.open_for_dispatch(&change);
        } else if change.order.driver_id.is_some() {
            self.carry(&change);
        }
    }
}

/// Every handle the gateway needs, cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub store: Arc<dyn Store>,
    pub orders: Orders,
    pub drivers: Drivers,
    pub geo: ActorRef<GeoMessage>,
    pub dispatcher: DispatchHandle,
    pub feeds: Arc<RestaurantFeeds>,
    pub ops: Arc<OpsFeed>,
    pub config: Arc<EngineConfig>,
}

impl Engine {
    /// Starts the actors in dependency order. Call `orders.recover()` after.
    pub async fn start(
        store: Arc<dyn Store>,
        breadcrumbs: BreadcrumbSink,
        config: EngineConfig,
    ) -> anyhow::Result<Engine> {
        let config = Arc::new(config);
        let driver_registry = Arc::new(DashMap::new());
        let (geo, _) = Actor::spawn(
            None,
            GeoActor,
            GeoArguments {
                presence_ttl: config.presence_ttl,
                drivers: driver_registry.clone(),
            },
        )
        .await?;
        let drivers = Drivers::new(driver_registry, geo.clone(), breadcrumbs, config.clone());
        let feeds = Arc::new(RestaurantFeeds::default());
        let listener = Arc::new(EngineListener {
            feeds: feeds.clone(),
            drivers: drivers.clone(),
            dispatcher: OnceLock::new(),
        });
        let orders = Orders::start(store.clone(), listener.clone(), config.clone()).await?;
        let (dispatcher, _) = Actor::spawn(
            None,
            Dispatcher,
            DispatcherArguments {
                orders: orders.clone(),
                drivers: drivers.clone(),
                geo: geo.clone(),
                config: config.clone(),
            },
        )
        .await?;
        let _ = listener.dispatcher.set(dispatcher.clone());
        let engine = Engine {
            store,
            orders,
            drivers,
            geo,
            dispatcher: DispatchHandle { actor: dispatcher },
            feeds,
            ops: Arc::new(OpsFeed::default()),
            config,
        };
        spawn_ops_reporter(engine.clone());
        Ok(engine)
    }

    pub fn stop(&self) {
        self.dispatcher.actor.stop(None);
        self.orders.stop();
        self.drivers.stop_all();
        self.geo.stop(None);
    }
}
