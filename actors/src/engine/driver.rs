//! Driver actors: one per driver seen online, holding position, heading,
//! speed, availability, the orders it carries and its socket.
//!
//! A position fans out from here without touching the store: to the geo
//! index (one cast), straight into the outboxes of each carried order's
//! watchers through the order's [`OrderFeed`] (no hop through the order
//! actor, which hears only of estimates that moved), and to the breadcrumb
//! writer's bounded queue.

use crate::domain::geo_index::DriverEntry;
use crate::domain::input::LocationFix;
use crate::domain::model::*;
use crate::engine::breadcrumbs::BreadcrumbSink;
use crate::engine::config::EngineConfig;
use crate::engine::geo_actor::{GeoMessage, PendingUpsert};
use crate::engine::order::OrderMessage;
use crate::engine::order::feed::OrderFeed;
use crate::engine::outbox::{Outbox, SessionId};
use crate::store::Breadcrumb;
use crate::wire::Frame;
use dashmap::DashMap;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DRIVER_CALL_TIMEOUT: Duration = Duration::from_secs(5);

pub enum DriverMessage {
    /// A position from the driver's socket or the REST fallback.
    Located {
        fix: LocationFix,
        received_at: Instant,
    },
    /// Pause or resume; replies with the setting now in force.
    SetAvailability(bool, Option<RpcReplyPort<bool>>),
    /// The driver's socket; a previous one is closed as replaced.
    AttachSession(Arc<Outbox>),
    DetachSession(SessionId),
    /// An order was assigned to this driver (or recovered with it).
    Carry {
        order_id: OrderId,
        actor: ActorRef<OrderMessage>,
        feed: Arc<OrderFeed>,
    },
    /// Delivered, cancelled or unassigned: the slot is free again.
    Release(OrderId),
    /// The geo index dropped this driver for lack of positions.
    WentStale,
    /// Push a frame (an offer, an offer result) to the driver's socket;
    /// replies whether there was a socket to push to.
    Push(Frame, Option<RpcReplyPort<bool>>),
    Status(RpcReplyPort<DriverStatus>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct DriverStatus {
    pub online: bool,
    pub paused: bool,
    pub connected: bool,
    pub location: Option<DriverLocation>,
    pub active_orders: u32,
}

pub struct DriverActor;

pub struct DriverArguments {
    pub profile: Driver,
    pub geo: ActorRef<GeoMessage>,
    pub breadcrumbs: BreadcrumbSink,
    pub config: Arc<EngineConfig>,
}

pub struct DriverState {
    profile: Driver,
    location: Option<DriverLocation>,
    online: bool,
    paused: bool,
    carrying: HashMap<OrderId, Carried>,
    session: Option<Arc<Outbox>>,
    geo: ActorRef<GeoMessage>,
    /// This driver's next update for the geo index, coalesced while the
    /// geo actor has not taken it.
    pending_geo: Arc<PendingUpsert>,
    breadcrumbs: BreadcrumbSink,
    /// When this driver's last breadcrumb was sampled.
    breadcrumb_taken_at: Option<Instant>,
    config: Arc<EngineConfig>,
}

/// An order this driver carries.
struct Carried {
    actor: ActorRef<OrderMessage>,
    feed: Arc<OrderFeed>,
}

impl Carried {
    /// Queues the position for the order's watchers; the order actor hears
    /// of it only when it moved the estimate enough to store.
    fn publish(&self, location: DriverLocation, received_at: Instant) {
        if let Some(moved) = self.feed.publish_location(location, received_at) {
            let _ = self.actor.cast(OrderMessage::EtaMoved(moved));
        }
    }
}

impl DriverState {
    /// Offerable: online, not paused, below the order limit, and with a
    /// socket to receive the offer on.
    fn available(&self) -> bool {
        self.online
            && !self.paused
            && self.session.is_some()
            && (self.carrying.len() as u32) < self.config.max_active_orders
    }

    /// Tells the index where the driver is and whether it may be offered.
    fn index(&self, fresh: bool) {
        let Some(location) = self.location else {
            return;
        };
        if !self.online {
            return;
        }
        let entry = DriverEntry {
            id: self.profile.id,
            at: location.at(),
            available: self.available(),
            active_orders: self.carrying.len() as u32,
        };
        if self.pending_geo.put(entry, fresh)
            && self
                .geo
                .cast(GeoMessage::Upsert(self.pending_geo.clone()))
                .is_err()
        {
            // No geo actor to take it: do not leave the slot looking told.
            self.pending_geo.take();
        }
    }
}

impl Actor for DriverActor {
    type Msg = DriverMessage;
    type State = DriverState;
    type Arguments = DriverArguments;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: DriverArguments,
    ) -> Result<DriverState, ActorProcessingErr> {
        Ok(DriverState {
            profile: args.profile,
            location: None,
            online: false,
            paused: false,
            carrying: HashMap::new(),
            session: None,
            geo: args.geo,
            pending_geo: Arc::new(PendingUpsert::default()),
            breadcrumbs: args.breadcrumbs,
            breadcrumb_taken_at: None,
            config: args.config,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: DriverMessage,
        state: &mut DriverState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            DriverMessage::Located { fix, received_at } => {
                let location = DriverLocation {
                    driver_id: state.profile.id,
                    lat: fix.at.lat,
                    lon: fix.at.lon,
                    heading: fix.heading,
                    speed_mps: fix.speed_mps,
                    timestamp: fix_time(fix.timestamp),
                };
                state.location = Some(location);
                state.online = true;
                state.index(true);
                for carried in state.carrying.values() {
                    carried.publish(location, received_at);
                }
                if !state.carrying.is_empty()
                    && state.breadcrumbs.due(&mut state.breadcrumb_taken_at)
                {
                    let recorded_at = crate::engine::order::now();
                    for order_id in state.carrying.keys() {
                        state.breadcrumbs.offer(Breadcrumb {
                            driver_id: location.driver_id,
                            order_id: Some(*order_id),
                            lat: location.lat,
                            lon: location.lon,
                            heading: location.heading,
                            speed_mps: location.speed_mps,
                            recorded_at,
                        });
                    }
                }
            }
            DriverMessage::SetAvailability(available, reply) => {
                state.paused = !available;
                state.index(false);
                if let Some(reply) = reply {
                    let _ = reply.send(!state.paused);
                }
            }
            DriverMessage::AttachSession(outbox) => {
                if let Some(old) = state.session.replace(outbox.clone())
                    && old.session_id != outbox.session_id
                {
                    old.close(crate::engine::outbox::CloseReason::Replaced);
                }
                for carried in state.carrying.values() {
                    let _ = carried
                        .actor
                        .cast(OrderMessage::AttachDriverSession(outbox.clone()));
                }
                state.index(false);
            }
            DriverMessage::DetachSession(session_id) => {
                if state
                    .session
                    .as_ref()
                    .is_some_and(|s| s.session_id == session_id)
                {
                    state.session = None;
                    state.index(false);
                }
            }
            DriverMessage::Carry {
                order_id,
                actor,
                feed,
            } => {
                if let Some(outbox) = &state.session {
                    let _ = actor.cast(OrderMessage::AttachDriverSession(outbox.clone()));
                }
                let carried = Carried { actor, feed };
                if let Some(location) = state.location {
                    carried.publish(location, Instant::now());
                }
                state.carrying.insert(order_id, carried);
                state.index(false);
            }
            DriverMessage::Release(order_id) => {
                if state.carrying.remove(&order_id).is_some() {
                    state.index(false);
                }
            }
            DriverMessage::WentStale => {
                state.online = false;
            }
            DriverMessage::Push(frame, reply) => {
                let pushed = state.session.as_ref().is_some_and(|s| s.push(frame));
                if let Some(reply) = reply {
                    let _ = reply.send(pushed);
                }
            }
            DriverMessage::Status(reply) => {
                let _ = reply.send(DriverStatus {
                    online: state.online,
                    paused: state.paused,
                    connected: state.session.is_some(),
                    location: state.location,
                    active_orders: state.carrying.len() as u32,
                });
            }
        }
        Ok(())
    }
}

/// How far a device clock may be from ours before its timestamp is ignored.
const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// The fix's own time when the device gave a plausible one (watchers can
/// then tell how old a position is), else the time it reached us.
fn fix_time(device: Option<i64>) -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    device
        .filter(|t| (now - t).abs() <= MAX_CLOCK_SKEW_MS)
        .unwrap_or(now)
}

/// Every driver actor, by driver id, and what the dispatcher needs to know
/// of each without asking it (its profile).
#[derive(Clone)]
pub struct Drivers {
    registry: Arc<DashMap<DriverId, ActorRef<DriverMessage>>>,
    profiles: Arc<DashMap<DriverId, Driver>>,
    spawning: Arc<tokio::sync::Mutex<()>>,
    geo: ActorRef<GeoMessage>,
    breadcrumbs: BreadcrumbSink,
    config: Arc<EngineConfig>,
}

impl Drivers {
    pub fn new(
        registry: Arc<DashMap<DriverId, ActorRef<DriverMessage>>>,
        geo: ActorRef<GeoMessage>,
        breadcrumbs: BreadcrumbSink,
        config: Arc<EngineConfig>,
    ) -> Drivers {
        Drivers {
            registry,
            profiles: Arc::new(DashMap::new()),
            spawning: Arc::new(tokio::sync::Mutex::new(())),
            geo,
            breadcrumbs,
            config,
        }
    }

    pub fn get(&self, id: DriverId) -> Option<ActorRef<DriverMessage>> {
        self.registry.get(&id).map(|a| a.clone())
    }

    pub fn profile(&self, id: DriverId) -> Option<Driver> {
        self.profiles.get(&id).map(|p| p.clone())
    }

    /// The driver's actor, started if it is not running.
    pub async fn ensure(&self, profile: Driver) -> Option<ActorRef<DriverMessage>> {
        if let Some(actor) = self.get(profile.id) {
            return Some(actor);
        }
        // Spawns are serialised so two first messages of one driver cannot
        // start two actors.
        let _guard = self.spawning.lock().await;
        if let Some(actor) = self.get(profile.id) {
            return Some(actor);
        }
        let id = profile.id;
        self.profiles.insert(id, profile.clone());
        let args = DriverArguments {
            profile,
            geo: self.geo.clone(),
            breadcrumbs: self.breadcrumbs.clone(),
            config: self.config.clone(),
        };
        match Actor::spawn(None, DriverActor, args).await {
            Ok((actor, handle)) => {
                self.registry.insert(id, actor.clone());
                let registry = self.registry.clone();
                let actor_id = actor.get_id();
                tokio::spawn(async move {
                    let _ = handle.await;
                    registry.remove_if(&id, |_, a| a.get_id() == actor_id);
                });
                Some(actor)
            }
            Err(error) => {
                tracing::error!(driver_id = id, %error, "Driver actor failed to start");
                None
            }
        }
    }

    pub fn cast(&self, id: DriverId, message: DriverMessage) {
        if let Some(actor) = self.get(id) {
            let _ = actor.cast(message);
        }
    }

    pub async fn status(&self, id: DriverId) -> Option<DriverStatus> {
        let actor = self.get(id)?;
        match actor
            .call(DriverMessage::Status, Some(DRIVER_CALL_TIMEOUT))
            .await
        {
            Ok(CallResult::Success(status)) => Some(status),
            _ => None,
        }
    }

    /// Pushes a frame to the driver's socket; false if it has none.
    pub async fn push(&self, id: DriverId, frame: Frame) -> bool {
        let Some(actor) = self.get(id) else {
            return false;
        };
        matches!(
            actor
                .call(
                    |reply| DriverMessage::Push(frame, Some(reply)),
                    Some(DRIVER_CALL_TIMEOUT)
                )
                .await,
            Ok(CallResult::Success(true))
        )
    }

    pub async fn set_availability(&self, id: DriverId, available: bool) -> Option<bool> {
        let actor = self.get(id)?;
        match actor
            .call(
                |reply| DriverMessage::SetAvailability(available, Some(reply)),
                Some(DRIVER_CALL_TIMEOUT),
            )
            .await
        {
            Ok(CallResult::Success(setting)) => Some(setting),
            _ => None,
        }
    }

    pub fn stop_all(&self) {
        for actor in self.registry.iter() {
            actor.stop(None);
        }
    }
}
