//! The driver actor: one per driver seen online, holding position, heading,
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
use crate::engine::driver::{DriverBus, MirroredDriver};
use crate::engine::geo_actor::{Change, Geo, PendingUpsert};
use crate::engine::order::{OrderFeed, OrderRef};
use crate::engine::outbox::{CloseReason, Outbox, SessionId};
use crate::store::Breadcrumb;
use crate::wire::Frame;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

pub(crate) enum DriverMessage {
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
        order: OrderRef,
        feed: Arc<OrderFeed>,
    },
    /// Delivered, cancelled or unassigned: the slot is free again.
    Release(OrderId),
    /// Cluster mode: an order another node runs, which this driver carries
    /// (announced again by its owner every few seconds).
    CarryElsewhere(OrderId),
    ReleaseElsewhere(OrderId),
    /// The geo index dropped this driver for lack of positions.
    WentStale,
    /// The geo actor restarted with an empty index: give it this driver's
    /// entry again.
    Rejoin,
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

pub(crate) struct DriverActor;

pub(crate) struct DriverArguments {
    pub profile: Driver,
    pub geo: Geo,
    pub breadcrumbs: BreadcrumbSink,
    pub config: Arc<EngineConfig>,
    /// The driver's pause as last stored (it survives restarts).
    pub paused: bool,
    /// Cluster mode: where this driver's entry goes for other nodes.
    pub bus: Option<Arc<dyn DriverBus>>,
}

/// How long an order of another node counts in a driver's load without
/// its owner announcing it again (its owner died: the order is carried by
/// whichever node serves its region next, which announces it anew).
const ELSEWHERE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) struct DriverState {
    profile: Driver,
    location: Option<DriverLocation>,
    online: bool,
    paused: bool,
    carrying: HashMap<OrderId, Carried>,
    /// Cluster mode: orders of other nodes it carries, with when their
    /// owner last said so.
    elsewhere: HashMap<OrderId, Instant>,
    bus: Option<Arc<dyn DriverBus>>,
    session: Option<Arc<Outbox>>,
    geo: Geo,
    /// This driver's next update for the geo index, coalesced while the
    /// geo actor has not taken it.
    pending_geo: Arc<PendingUpsert>,
    breadcrumbs: BreadcrumbSink,
    /// When this driver's last breadcrumb was sampled.
    breadcrumb_taken_at: Option<Instant>,
    config: Arc<EngineConfig>,
}

/// An order a driver carries.
pub(crate) struct Carried {
    pub(crate) order: OrderRef,
    pub(crate) feed: Arc<OrderFeed>,
}

impl Carried {
    pub(crate) fn restaurant_at(&self) -> LatLon {
        self.feed.restaurant_at()
    }

    /// Queues the position for the order's watchers; the order actor hears
    /// of it only when it moved the estimate enough to store.
    pub(crate) fn publish(&self, location: DriverLocation, received_at: Instant) {
        let published = self.feed.publish_location(location, received_at);
        if let Some(moved) = published.moved {
            self.order.eta_moved(moved);
        }
        for arrival in published.arrivals {
            self.order.arrived(arrival);
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
            && self.active_orders() < self.config.max_active_orders
    }

    /// Orders carried, this node's and (cluster mode) other nodes'.
    fn active_orders(&self) -> u32 {
        (self.carrying.len() + self.elsewhere.len()) as u32
    }

    /// Tells the index where the driver is and whether it may be offered.
    fn index(&self, change: Change) {
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
            active_orders: self.active_orders(),
        };
        if self.pending_geo.put(entry, change) && !self.geo.upsert(&self.pending_geo) {
            // No geo actor to take it: do not leave the slot looking told.
            self.pending_geo.take();
        }
        if let Some(bus) = &self.bus
            && change != Change::Rejoin
        {
            bus.moved(MirroredDriver {
                location,
                available: entry.available,
                active_orders: entry.active_orders,
                position: change == Change::Position,
            });
        }
    }

    /// Forgets the orders of other nodes their owner stopped announcing.
    fn expire_elsewhere(&mut self) {
        if !self.elsewhere.is_empty() {
            self.elsewhere
                .retain(|_, announced| announced.elapsed() < ELSEWHERE_TTL);
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
            paused: args.paused,
            carrying: HashMap::new(),
            elsewhere: HashMap::new(),
            bus: args.bus,
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
                state.expire_elsewhere();
                state.index(Change::Position);
                for carried in state.carrying.values() {
                    carried.publish(location, received_at);
                }
                if !state.carrying.is_empty()
                    && state.breadcrumbs.due(&mut state.breadcrumb_taken_at)
                {
                    let recorded_at = now();
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
                state.index(Change::Availability);
                if let Some(reply) = reply {
                    let _ = reply.send(!state.paused);
                }
            }
            DriverMessage::AttachSession(outbox) => {
                if let Some(old) = state.session.replace(outbox.clone())
                    && old.session_id != outbox.session_id
                {
                    old.close(CloseReason::Replaced);
                }
                for carried in state.carrying.values() {
                    carried.order.attach_driver_session(outbox.clone());
                }
                state.index(Change::Availability);
            }
            DriverMessage::DetachSession(session_id) => {
                if state
                    .session
                    .as_ref()
                    .is_some_and(|s| s.session_id == session_id)
                {
                    state.session = None;
                    state.index(Change::Availability);
                }
            }
            DriverMessage::Carry {
                order_id,
                order,
                feed,
            } => {
                if let Some(outbox) = &state.session {
                    order.attach_driver_session(outbox.clone());
                }
                let carried = Carried { order, feed };
                if let Some(location) = state.location {
                    carried.publish(location, Instant::now());
                }
                state.carrying.insert(order_id, carried);
                state.index(Change::Availability);
            }
            DriverMessage::Release(order_id) => {
                if state.carrying.remove(&order_id).is_some() {
                    // A later order of the same bundle no longer goes
                    // through this one's door.
                    for carried in state.carrying.values() {
                        carried.feed.drop_made(order_id);
                    }
                    state.index(Change::Availability);
                }
            }
            DriverMessage::CarryElsewhere(order_id) => {
                let new = state.elsewhere.insert(order_id, Instant::now()).is_none();
                if new {
                    state.index(Change::Availability);
                }
            }
            DriverMessage::ReleaseElsewhere(order_id) => {
                if state.elsewhere.remove(&order_id).is_some() {
                    state.index(Change::Availability);
                }
            }
            DriverMessage::WentStale => {
                state.online = false;
                if let Some(bus) = &state.bus {
                    bus.gone(state.profile.id);
                }
            }
            DriverMessage::Rejoin => {
                // The old actor may have died holding this driver's update
                // in its mailbox: the slot would look told forever.
                state.pending_geo.take();
                state.index(Change::Rejoin);
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
                    active_orders: state.active_orders(),
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
