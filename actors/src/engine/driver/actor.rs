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
use crate::engine::driver::{DriverBus, MirroredDriver, Pushed};
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
    /// (Each replies once taken: what the bus brings waits its turn.)
    CarryElsewhere(OrderId, RpcReplyPort<()>),
    ReleaseElsewhere(OrderId, RpcReplyPort<()>),
    /// Cluster mode: this node's order went to another node with its
    /// region (a hand-over, a lapsed lease), not delivered or cancelled:
    /// it still counts in the load until its new owner announces it.
    HandedOver(OrderId),
    /// The geo index dropped this driver for lack of positions.
    WentStale,
    /// The geo actor restarted with an empty index: give it this driver's
    /// entry again.
    Rejoin,
    /// Push a frame (an offer's result, an error) to the driver's socket;
    /// replies whether there was a socket to push to.
    Push(Frame, Option<RpcReplyPort<bool>>),
    /// An offer for the driver's socket, from this node's dispatcher or
    /// (cluster mode) relayed from another node's: refused while the
    /// driver holds a live offer or carries as many orders as it may, as
    /// one node's dispatcher never offers such a driver anything; one of
    /// the same node's dispatcher started again replaces the held one.
    Offer {
        /// The node whose dispatcher made it (None: this node's).
        origin: Option<String>,
        /// How many times that node's dispatcher had started when it made
        /// the offer: a new count means the held offer's dispatcher is gone.
        dispatcher_starts: u64,
        offer_id: OfferId,
        /// When the offer expires (its dispatcher's clock, as an instant here).
        expires: Instant,
        frame: Frame,
        reply: RpcReplyPort<Pushed>,
    },
    /// This node's dispatcher restarted: the offer the driver held of it
    /// is forgotten (its offers are void). Another node's stays held: it
    /// is still live there.
    OffersVoid,
    /// The offer ended (answered, expired, taken): another may come.
    /// `assigned`: the orders it won, counted in the load at once (their
    /// carry follows: from this node's order actors, or announced by
    /// another node), so that no offer slips in between.
    OfferClosed {
        origin: Option<String>,
        offer_id: OfferId,
        assigned: Vec<OrderId>,
    },
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

/// How long an offer's dispatcher leaves a driver out after it was refused
/// for carrying as many orders as it may (its index hears of the load at
/// once; this covers an offer already on its way).
pub(crate) const AT_CAP_BUSY: std::time::Duration = std::time::Duration::from_secs(2);

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
    /// The offer the driver holds now, and until when.
    offer: Option<HeldOffer>,
    geo: Geo,
    /// This driver's next update for the geo index, coalesced while the
    /// geo actor has not taken it.
    pending_geo: Arc<PendingUpsert>,
    breadcrumbs: BreadcrumbSink,
    /// When this driver's last breadcrumb was sampled.
    breadcrumb_taken_at: Option<Instant>,
    config: Arc<EngineConfig>,
}

/// The offer a driver holds. Offer ids are unique per node only (each
/// dispatcher numbers its own), so an offer is known by its node and id.
pub(crate) struct HeldOffer {
    /// The node whose dispatcher made it (None: this node's).
    origin: Option<String>,
    /// Its dispatcher's start count ([`DriverMessage::Offer`]).
    dispatcher_starts: u64,
    offer_id: OfferId,
    until: Instant,
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

    /// Orders carried, this node's and (cluster mode) other nodes' (an
    /// order counted once, however it is known).
    fn active_orders(&self) -> u32 {
        let elsewhere = self
            .elsewhere
            .keys()
            .filter(|id| !self.carrying.contains_key(id))
            .count();
        (self.carrying.len() + elsewhere) as u32
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
            offer: None,
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
                // Known here now: no longer only through its former owner.
                state.elsewhere.remove(&order_id);
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
            DriverMessage::HandedOver(order_id) => {
                // Its region went to another node, which announces it in a
                // moment: it stays in the driver's load meanwhile (and is
                // forgotten if nobody does within the TTL).
                // Nothing was delivered: the other orders' ETAs still go
                // through its door (a bundle shares one restaurant and so
                // one region, and moves as a whole anyway).
                if state.carrying.remove(&order_id).is_some() {
                    state.elsewhere.insert(order_id, Instant::now());
                }
            }
            DriverMessage::CarryElsewhere(order_id, reply) => {
                let new = state.elsewhere.insert(order_id, Instant::now()).is_none();
                if new && !state.carrying.contains_key(&order_id) {
                    state.index(Change::Availability);
                }
                let _ = reply.send(());
            }
            DriverMessage::ReleaseElsewhere(order_id, reply) => {
                if state.elsewhere.remove(&order_id).is_some()
                    && !state.carrying.contains_key(&order_id)
                {
                    state.index(Change::Availability);
                }
                let _ = reply.send(());
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
            DriverMessage::Offer {
                origin,
                dispatcher_starts,
                offer_id,
                expires,
                frame,
                reply,
            } => {
                let now = Instant::now();
                // A live offer keeps the driver busy, unless a restart of
                // its dispatcher voided it: a new offer of the same node
                // with a new start count replaces it. Not any new offer of
                // the same node: its result may still be on its way (a
                // relayed result travels behind positions), and the new
                // offer must not pass a driver at its order limit.
                let outcome = match &state.offer {
                    Some(held)
                        if held.until > now
                            && !(held.origin == origin
                                && (held.offer_id == offer_id
                                    || held.dispatcher_starts != dispatcher_starts)) =>
                    {
                        Pushed::Busy(held.until - now)
                    }
                    _ if state.active_orders() >= state.config.max_active_orders => {
                        Pushed::Busy(AT_CAP_BUSY)
                    }
                    _ => {
                        if state.session.as_ref().is_some_and(|s| s.push(frame)) {
                            state.offer = Some(HeldOffer {
                                origin,
                                dispatcher_starts,
                                offer_id,
                                until: expires,
                            });
                            Pushed::Delivered
                        } else {
                            Pushed::NoSocket
                        }
                    }
                };
                let _ = reply.send(outcome);
            }
            DriverMessage::OffersVoid => {
                if state
                    .offer
                    .as_ref()
                    .is_some_and(|held| held.origin.is_none())
                {
                    state.offer = None;
                }
            }
            DriverMessage::OfferClosed {
                origin,
                offer_id,
                assigned,
            } => {
                let before = state.active_orders();
                for order_id in assigned {
                    if !state.carrying.contains_key(&order_id) {
                        state.elsewhere.insert(order_id, Instant::now());
                    }
                }
                if state
                    .offer
                    .as_ref()
                    .is_some_and(|held| held.offer_id == offer_id && held.origin == origin)
                {
                    state.offer = None;
                }
                if state.active_orders() != before {
                    state.index(Change::Availability);
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
