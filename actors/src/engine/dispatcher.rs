//! The Dispatcher: finds a driver for every confirmed order (CONTRACT.md
//! "Dispatch", DESIGN.md "Matching").
//!
//! The waiting orders sit on a [`Board`], the same store-free round the
//! replay runs: every round the board groups the orders without an
//! outstanding offer into jobs (bundles of one restaurant, or single
//! orders), the geo index answers its queries (one round trip for the whole
//! round), the board solves the round as a minimum-cost assignment, and the
//! dispatcher sends one offer per job. A decline or an expiry excludes that
//! driver for the offer's orders; a restaurant that finds nobody widens its
//! radius step by step. Accepting goes through the order
//! actor, whose durable write makes the assignment; that write runs in a
//! task, so the dispatcher itself never waits on the store.

use crate::domain::dispatch::{Board, Candidate, WaitingOrder};
use crate::domain::model::*;
use crate::engine::config::EngineConfig;
use crate::engine::driver::{Drivers, Pushed, UNREACHABLE_FOR};
use crate::engine::geo_actor::Geo;
use crate::engine::order::{CommandError, NearestDriver, ORDER_CALL_TIMEOUT, Orders};
use crate::engine::slot::Slot;
use crate::metrics as m;
use crate::store::ExclusionReason;
use crate::wire::{OfferDropoff, OfferOutcome, Pickup, ServerMessage};
use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// An order the engine is looking for a driver for.
#[derive(Debug, Clone)]
pub struct Dispatchable {
    pub order_id: OrderId,
    pub restaurant: RestaurantInfo,
    pub dropoff: LatLon,
    pub food_ready_at: DateTime<Utc>,
    /// Click-to-door counts from here.
    pub placed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OfferError {
    /// No such offer for this driver (never made, or void after a restart).
    NotFound,
    Expired,
    /// The order went to someone else, or was cancelled.
    Taken,
    /// The store could not record the assignment; the offer may be retried.
    Unavailable,
}

/// Why a driver's answer came to nothing when the dispatcher that made the
/// offer did not take it (down, or restarted before answering a ping sent
/// after it); the socket's `error` frame says so, naming the offer.
pub const ANSWER_NOT_TAKEN: &str =
    "the dispatcher that made this offer did not take the answer; the offer is void";

pub(crate) enum DispatchMessage {
    Open(Box<Dispatchable>),
    /// A waiting order's food-ready time moved (preparing, or ready).
    ReadyAt(OrderId, DateTime<Utc>),
    /// Assigned, cancelled or otherwise no longer in need of a driver.
    Withdraw(OrderId),
    Round,
    Respond {
        offer_id: OfferId,
        driver_id: DriverId,
        accept: bool,
        /// The answering request's span (a socket's answer has none).
        span: tracing::Span,
        reply: Option<RpcReplyPort<Result<Option<Order>, OfferError>>>,
    },
    Expire(OfferId),
    /// The drivers the store remembers as excluded from an order just
    /// opened (they declined it, or let its offer expire, before a restart).
    Excluded(OrderId, Vec<DriverId>),
    /// The orders waiting for a driver, for the operator's view.
    Overview(RpcReplyPort<Vec<crate::wire::OpsOrder>>),
    /// Answered once every message before it was handled.
    Ping(RpcReplyPort<()>),
    /// The outcome of an accepted offer's assignment writes, one per order.
    Assigned {
        offer_id: OfferId,
        offer: Offer,
        results: Vec<Result<Order, CommandError>>,
        reply: Option<RpcReplyPort<Result<Option<Order>, OfferError>>>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Offer {
    /// One order, or a bundle of one restaurant in drop-off sequence.
    order_ids: Vec<OrderId>,
    driver_id: DriverId,
    expires: Instant,
    /// When the order became dispatchable. Carried here because the order's
    /// entry is withdrawn (on DRIVER_ASSIGNED) before the accept's outcome
    /// comes back to record the time to assign.
    dispatchable_since: Instant,
}

pub(crate) struct Dispatcher;

pub(crate) struct DispatcherArguments {
    pub orders: Orders,
    pub drivers: Drivers,
    pub geo: Geo,
    pub config: Arc<EngineConfig>,
}

pub(crate) struct DispatcherState {
    /// The orders waiting for a driver, and the round over them.
    board: Board,
    /// What each waiting order needs for its offer beyond the board. An
    /// order is here first and goes on the board once the store said whom
    /// it excludes, so no restart makes a driver hear it twice.
    open: HashMap<OrderId, Dispatchable>,
    /// The outstanding offer naming each order.
    offer_of: HashMap<OrderId, OfferId>,
    offers: HashMap<OfferId, Offer>,
    /// Offers that ended, kept a while to answer late responses precisely.
    closed: HashMap<OfferId, (Offer, OfferOutcome, Instant)>,
    /// One outstanding offer per driver.
    offered_drivers: HashSet<DriverId>,
    /// Cluster mode: drivers whose node refused an offer because they
    /// hold another node's (or are at their order limit), left out of the
    /// rounds until then.
    busy_elsewhere: HashMap<DriverId, Instant>,
    next_offer_id: OfferId,
    args: DispatcherArguments,
}

const CLOSED_OFFER_MEMORY: Duration = Duration::from_secs(600);

impl Actor for Dispatcher {
    type Msg = DispatchMessage;
    type State = DispatcherState;
    type Arguments = DispatcherArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: DispatcherArguments,
    ) -> Result<DispatcherState, ActorProcessingErr> {
        myself.send_interval(args.config.round_interval, || DispatchMessage::Round);
        // Offers of an earlier dispatcher (it failed and was restarted) are
        // void: the drivers here no longer hold them.
        args.drivers.offers_void();
        let board = Board::new(args.config.board_rules(), args.config.policy_params());
        Ok(DispatcherState {
            board,
            open: HashMap::new(),
            offer_of: HashMap::new(),
            offers: HashMap::new(),
            closed: HashMap::new(),
            offered_drivers: HashSet::new(),
            busy_elsewhere: HashMap::new(),
            // Offer ids stay unique across restarts (offers made before a
            // crash are void, and must not be mistaken for new ones).
            next_offer_id: Utc::now().timestamp_millis() * 1000,
            args,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: DispatchMessage,
        state: &mut DispatcherState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            DispatchMessage::Open(info) => {
                let order_id = info.order_id;
                if let std::collections::hash_map::Entry::Vacant(vacant) =
                    state.open.entry(order_id)
                {
                    vacant.insert(*info);
                    // Off the dispatcher: it never waits on the store.
                    let orders = state.args.orders.clone();
                    let myself = myself.clone();
                    tokio::spawn(async move {
                        let excluded = orders.excluded_drivers(order_id).await;
                        let _ = myself.cast(DispatchMessage::Excluded(order_id, excluded));
                    });
                }
            }
            DispatchMessage::Excluded(order_id, drivers) => {
                // Withdrawn meanwhile, or already on the board: nothing to do.
                if let Some(info) = state.open.get(&order_id)
                    && state.board.get(order_id).is_none()
                {
                    state.board.open(
                        WaitingOrder {
                            order_id,
                            restaurant_id: info.restaurant.id,
                            restaurant: info.restaurant.location,
                            dropoff: info.dropoff,
                            ready_at: info.food_ready_at,
                            placed_at: info.placed_at,
                        },
                        Utc::now(),
                    );
                    for driver_id in drivers {
                        state.board.offer_ended(order_id, driver_id, true);
                    }
                }
            }
            DispatchMessage::ReadyAt(order_id, ready_at) => {
                // Only an order already waiting: the board's next round plans
                // with it (an order held for a bundle stops being held once
                // its food is ready).
                if let Some(info) = state.open.get_mut(&order_id) {
                    info.food_ready_at = ready_at;
                    state.board.ready_at(order_id, ready_at);
                }
            }
            DispatchMessage::Withdraw(order_id) => state.withdraw(order_id).await,
            DispatchMessage::Round => state.round(&myself).await,
            DispatchMessage::Respond {
                offer_id,
                driver_id,
                accept,
                span,
                reply,
            } => {
                state
                    .respond(&myself, offer_id, driver_id, accept, reply)
                    .instrument(span)
                    .await
            }
            DispatchMessage::Expire(offer_id) => {
                if state
                    .offers
                    .get(&offer_id)
                    .is_some_and(|o| o.expires <= Instant::now())
                {
                    state.close_offer(offer_id, OfferOutcome::Expired).await;
                }
            }
            DispatchMessage::Assigned {
                offer_id,
                offer,
                results,
                reply,
            } => state.assigned(offer_id, offer, results, reply).await,
            DispatchMessage::Ping(reply) => {
                let _ = reply.send(());
            }
            DispatchMessage::Overview(reply) => {
                let now = Utc::now();
                let waiting = state
                    .board
                    .entries()
                    .map(|e| crate::wire::OpsOrder {
                        order_id: e.order.order_id,
                        restaurant_id: e.order.restaurant_id,
                        waiting_secs: (now - e.since).num_milliseconds() as f64 / 1000.0,
                        radius_km: e.radius_km,
                        offered_to: state
                            .offer_of
                            .get(&e.order.order_id)
                            .and_then(|id| state.offers.get(id))
                            .map(|o| o.driver_id),
                        hopeless: e.hopeless,
                    })
                    .collect();
                let _ = reply.send(waiting);
            }
        }
        metrics::gauge!(m::DISPATCHABLE_ORDERS).set(state.board.len() as f64);
        Ok(())
    }
}

impl DispatcherState {
    async fn withdraw(&mut self, order_id: OrderId) {
        self.board.withdraw(order_id);
        self.open.remove(&order_id);
        if let Some(offer_id) = self.offer_of.remove(&order_id) {
            // The rest of a bundle goes back to the pool.
            self.close_offer(offer_id, OfferOutcome::Taken).await;
        }
    }

    async fn round(&mut self, myself: &ActorRef<DispatchMessage>) {
        self.closed
            .retain(|_, (_, _, at)| at.elapsed() < CLOSED_OFFER_MEMORY);
        if self.board.is_empty() {
            metrics::gauge!(m::BATCH_HELD_ORDERS).set(0.0);
            return;
        }
        let started = Instant::now();
        let now = Utc::now();
        let plan = if self.busy_elsewhere.is_empty() {
            self.board.plan(now, &self.offered_drivers)
        } else {
            let instant = Instant::now();
            self.busy_elsewhere.retain(|_, until| *until > instant);
            let mut busy = self.offered_drivers.clone();
            busy.extend(self.busy_elsewhere.keys().copied());
            self.board.plan(now, &busy)
        };
        for order_id in &plan.hopeless {
            metrics::counter!(m::HOPELESS_ORDERS_TOTAL).increment(1);
            tracing::warn!(
                order_id,
                "No driver can deliver this order within the maximum click-to-door any more"
            );
        }
        if plan.queries.is_empty() {
            metrics::gauge!(m::BATCH_HELD_ORDERS).set(0.0);
            return;
        }
        let max_active_orders = self.args.config.max_active_orders;
        let Some(answers) = self
            .args
            .geo
            .candidates(plan.queries.clone(), max_active_orders)
            .await
        else {
            tracing::warn!("Geo index did not answer; skipping this round");
            return;
        };
        let answers: Vec<Vec<Candidate>> = answers
            .iter()
            .map(|nearby| {
                nearby
                    .iter()
                    .map(|n| {
                        let vehicle = self
                            .args
                            .drivers
                            .profile(n.entry.id)
                            .map(|p| p.vehicle_type)
                            .unwrap_or_default();
                        Candidate::free(n.entry.id, n.entry.at, vehicle, n.entry.active_orders)
                    })
                    .collect()
            })
            .collect();
        // Each waiting order's ETA counts from the nearest driver its
        // restaurant's query found.
        for (query, nearby) in answers.iter().enumerate() {
            let nearest = nearby
                .iter()
                .min_by(|a, b| {
                    crate::domain::geo::distance_km(a.at, plan.queries[query].at).total_cmp(
                        &crate::domain::geo::distance_km(b.at, plan.queries[query].at),
                    )
                })
                .map(|c| NearestDriver {
                    at: c.at,
                    vehicle: c.vehicle,
                });
            for order_id in plan.orders_of_query(query) {
                self.args.orders.driver_near(order_id, nearest);
            }
        }
        let decision = self.board.decide(plan, answers);
        metrics::counter!(m::RADIUS_WIDENINGS_TOTAL).increment(decision.widened as u64);
        metrics::gauge!(m::UNSERVED_JOBS).set(self.board.unserved() as f64);
        metrics::gauge!(m::BATCH_HELD_ORDERS).set(decision.held.len() as f64);
        metrics::histogram!(m::DISPATCH_ROUND_SECONDS).record(started.elapsed().as_secs_f64());

        for assignment in decision.assignments {
            self.offer(
                myself,
                assignment.orders,
                assignment.driver.driver_id,
                assignment.driver.at,
            )
            .await;
        }
    }

    async fn offer(
        &mut self,
        myself: &ActorRef<DispatchMessage>,
        order_ids: Vec<OrderId>,
        driver_id: DriverId,
        driver_at: LatLon,
    ) {
        let Some(first) = order_ids.first().and_then(|id| self.open.get(id)) else {
            return;
        };
        let offer_id = self.next_offer_id;
        self.next_offer_id += 1;
        let timeout = self.args.config.offer_timeout;
        let expires_at = Utc::now() + chrono::Duration::from_std(timeout).unwrap_or_default();
        let restaurant = &first.restaurant;
        let pickup = Pickup {
            restaurant_id: restaurant.id,
            name: restaurant.name.clone(),
            lat: restaurant.location.lat,
            lon: restaurant.location.lon,
        };
        let distance_km =
            (crate::domain::geo::distance_km(driver_at, restaurant.location) * 1000.0).round()
                / 1000.0;
        let dropoffs: Vec<OfferDropoff> = order_ids
            .iter()
            .filter_map(|id| self.open.get(id))
            .map(|d| OfferDropoff {
                order_id: d.order_id,
                lat: d.dropoff.lat,
                lon: d.dropoff.lon,
            })
            .collect();
        let frame = ServerMessage::Offer {
            offer_id,
            order_id: first.order_id,
            order_ids: &order_ids,
            pickup: &pickup,
            dropoff: first.dropoff,
            dropoffs: &dropoffs,
            distance_km,
            expires_at,
        }
        .encode();
        let expires = Instant::now() + timeout;
        match self
            .args
            .drivers
            .offer(driver_id, offer_id, expires, frame)
            .await
        {
            Pushed::Delivered => {}
            Pushed::NoSocket => {
                // The socket went away since the index saw it: try another next round.
                for id in &order_ids {
                    self.board.offer_ended(*id, driver_id, false);
                }
                return;
            }
            Pushed::Unreachable { .. } => {
                // Its node did not answer: not tried again for a while,
                // even if it comes back sooner (a dead node's driver would
                // otherwise be tried every round until its presence lapses).
                for id in &order_ids {
                    self.board.offer_ended(*id, driver_id, false);
                }
                self.busy_elsewhere
                    .insert(driver_id, Instant::now() + UNREACHABLE_FOR);
                metrics::counter!(m::OFFERS_TOTAL, "result" => "unreachable").increment(1);
                return;
            }
            Pushed::Busy(busy_for) => {
                // Cluster mode: another node's offer, or an order it just
                // took, keeps the driver busy. Left out as a driver with
                // an offer of ours is, without excluding it from these
                // orders; they go to someone else next round.
                for id in &order_ids {
                    self.board.offer_ended(*id, driver_id, false);
                }
                self.busy_elsewhere
                    .insert(driver_id, Instant::now() + busy_for);
                metrics::counter!(m::OFFERS_TOTAL, "result" => "busy").increment(1);
                return;
            }
        }
        let since = self
            .board
            .get(order_ids[0])
            .map(|e| e.since)
            .unwrap_or_else(Utc::now);
        let waited = (Utc::now() - since).to_std().unwrap_or_default();
        for id in &order_ids {
            self.offer_of.insert(*id, offer_id);
        }
        if order_ids.len() > 1 {
            metrics::counter!(m::BUNDLED_OFFERS_TOTAL).increment(1);
        }
        self.offers.insert(
            offer_id,
            Offer {
                order_ids,
                driver_id,
                expires,
                dispatchable_since: Instant::now() - waited,
            },
        );
        self.offered_drivers.insert(driver_id);
        metrics::counter!(m::OFFERS_TOTAL, "result" => "sent").increment(1);
        myself.send_after(timeout, move || DispatchMessage::Expire(offer_id));
    }

    /// Ends an outstanding offer and tells its driver how.
    async fn close_offer(&mut self, offer_id: OfferId, outcome: OfferOutcome) {
        let Some(offer) = self.offers.remove(&offer_id) else {
            return;
        };
        self.offered_drivers.remove(&offer.driver_id);
        let reason = match outcome {
            OfferOutcome::Declined => Some(ExclusionReason::Declined),
            OfferOutcome::Expired => Some(ExclusionReason::Expired),
            _ => None,
        };
        for id in &offer.order_ids {
            self.offer_of.remove(id);
            self.board
                .offer_ended(*id, offer.driver_id, reason.is_some());
            if let Some(reason) = reason {
                // Remembered across a restart; written off the dispatcher.
                self.args
                    .orders
                    .exclude_driver(*id, offer.driver_id, reason);
            }
        }
        self.tell(offer_id, &offer, outcome, Vec::new());
        self.closed
            .insert(offer_id, (offer, outcome, Instant::now()));
        metrics::counter!(m::OFFERS_TOTAL, "result" => outcome.as_str()).increment(1);
    }

    /// Tells the driver how its offer ended. `assigned`: the orders it now
    /// carries (all of a bundle's, unless one could not be written), named
    /// in an `assigned` frame and counted in its load.
    fn tell(
        &self,
        offer_id: OfferId,
        offer: &Offer,
        outcome: OfferOutcome,
        assigned: Vec<OrderId>,
    ) {
        let named = if outcome == OfferOutcome::Assigned {
            &assigned
        } else {
            &offer.order_ids
        };
        let frame = ServerMessage::OfferResult {
            offer_id,
            order_id: named.first().copied().unwrap_or_default(),
            order_ids: named,
            result: outcome,
        }
        .encode();
        self.args.drivers.tell(offer.driver_id, frame);
        // Its actor here (if any) may hold another offer now; on another
        // node the frame itself says so.
        self.args
            .drivers
            .offer_closed_here(offer.driver_id, None, offer_id, assigned);
    }

    async fn respond(
        &mut self,
        myself: &ActorRef<DispatchMessage>,
        offer_id: OfferId,
        driver_id: DriverId,
        accept: bool,
        reply: Option<RpcReplyPort<Result<Option<Order>, OfferError>>>,
    ) {
        let answer = |reply: Option<RpcReplyPort<_>>, result| {
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        };
        let Some(offer) = self
            .offers
            .get(&offer_id)
            .filter(|o| o.driver_id == driver_id)
            .cloned()
        else {
            // A late or foreign answer: say precisely what became of it.
            let late = self
                .closed
                .get(&offer_id)
                .filter(|(o, _, _)| o.driver_id == driver_id);
            let error = match late {
                Some((offer, OfferOutcome::Expired, _))
                    if offer.order_ids.iter().any(|id| self.open.contains_key(id)) =>
                {
                    OfferError::Expired
                }
                Some((_, OfferOutcome::Declined, _)) | None => OfferError::NotFound,
                Some(_) => OfferError::Taken,
            };
            if reply.is_none() {
                // On the socket: an offer_result where there was an offer,
                // an error where there never was one.
                match (late, &error) {
                    (Some((offer, _, _)), OfferError::Expired) => {
                        self.tell(offer_id, offer, OfferOutcome::Expired, Vec::new())
                    }
                    (Some((offer, _, _)), OfferError::Taken) => {
                        self.tell(offer_id, offer, OfferOutcome::Taken, Vec::new())
                    }
                    _ => {
                        let frame = crate::wire::error_frame(
                            "NOT_FOUND",
                            "no such offer for this driver",
                            None,
                        );
                        self.args.drivers.tell(driver_id, frame);
                    }
                }
            }
            answer(reply, Err(error));
            return;
        };
        if offer.expires <= Instant::now() {
            self.close_offer(offer_id, OfferOutcome::Expired).await;
            answer(reply, Err(OfferError::Expired));
            return;
        }
        if !accept {
            self.close_offer(offer_id, OfferOutcome::Declined).await;
            answer(reply, Ok(None));
            return;
        }
        let Some(profile) = self.args.drivers.profile(driver_id) else {
            answer(reply, Err(OfferError::NotFound));
            return;
        };
        // Take the offer out now, so a second answer cannot race this one.
        self.offers.remove(&offer_id);
        for id in &offer.order_ids {
            self.offer_of.remove(id);
        }
        let dropoffs: HashMap<OrderId, LatLon> = offer
            .order_ids
            .iter()
            .filter_map(|id| self.open.get(id).map(|d| (*id, d.dropoff)))
            .collect();
        let orders = self.args.orders.clone();
        let myself = myself.clone();
        tokio::spawn(
            async move {
                // A bundle is accepted as a whole: every order of it is
                // written, in drop-off sequence, each knowing the drop-offs
                // before its own (of the orders actually assigned), so
                // that its ETA goes through them.
                let mut results = Vec::with_capacity(offer.order_ids.len());
                let mut drops_before = Vec::new();
                for id in &offer.order_ids {
                    let result = orders
                        .assign(*id, profile.clone(), offer_id, drops_before.clone())
                        .await;
                    if result.is_ok()
                        && let Some(at) = dropoffs.get(id)
                    {
                        drops_before.push((*id, *at));
                    }
                    results.push(result);
                }
                let _ = myself.cast(DispatchMessage::Assigned {
                    offer_id,
                    offer,
                    results,
                    reply,
                });
            }
            .in_current_span(),
        );
    }

    async fn assigned(
        &mut self,
        offer_id: OfferId,
        offer: Offer,
        results: Vec<Result<Order, CommandError>>,
        reply: Option<RpcReplyPort<Result<Option<Order>, OfferError>>>,
    ) {
        self.offered_drivers.remove(&offer.driver_id);
        let mut first_assigned = None;
        let mut assigned_ids = Vec::with_capacity(offer.order_ids.len());
        let mut unavailable = false;
        for (id, result) in offer.order_ids.iter().zip(results) {
            match result {
                Ok(order) => {
                    self.board.withdraw(*id);
                    self.open.remove(id);
                    assigned_ids.push(*id);
                    first_assigned.get_or_insert(order);
                }
                Err(CommandError::Store(_)) | Err(CommandError::Unavailable) => {
                    // Nothing was written; the order goes back into the pool.
                    self.board.offer_ended(*id, offer.driver_id, false);
                    unavailable = true;
                }
                Err(CommandError::Refused(_)) => {
                    self.board.withdraw(*id);
                    self.open.remove(id);
                }
            }
        }
        let (outcome, answer) = match first_assigned {
            Some(order) => {
                metrics::histogram!(m::ASSIGN_SECONDS)
                    .record(offer.dispatchable_since.elapsed().as_secs_f64());
                (OfferOutcome::Assigned, Ok(Some(order)))
            }
            None if unavailable => {
                metrics::counter!(m::OFFERS_TOTAL, "result" => "failed").increment(1);
                // The offer is over: the driver (here or on its node) no
                // longer holds it, so the order can be offered to it again,
                // and a socket's answer hears why nothing came of it (a
                // REST answer gets the same code as its 503).
                // The message names the offer: a new offer may reach the
                // socket before this frame (a relayed one travels apart).
                let frame = reply.is_none().then(|| {
                    crate::wire::error_frame(
                        "STORE_UNAVAILABLE",
                        &format!(
                            "offer {offer_id}: the assignment could not be written; the offer is void"
                        ),
                        None,
                    )
                });
                self.args
                    .drivers
                    .offer_ended(offer.driver_id, offer_id, frame);
                if let Some(reply) = reply {
                    let _ = reply.send(Err(OfferError::Unavailable));
                }
                return;
            }
            None => (OfferOutcome::Taken, Err(OfferError::Taken)),
        };
        self.tell(offer_id, &offer, outcome, assigned_ids);
        self.closed
            .insert(offer_id, (offer, outcome, Instant::now()));
        metrics::counter!(m::OFFERS_TOTAL, "result" => outcome.as_str()).increment(1);
        if let Some(reply) = reply {
            let _ = reply.send(answer);
        }
    }
}

pub type RespondFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<Order>, OfferError>> + Send>>;

/// Cluster mode: offers another node's dispatcher made to a driver
/// connected here (`dispatchd::cluster::drivers` relays them). An answer
/// to one of those goes back to the node that made it.
pub trait RemoteOffers: Send + Sync + 'static {
    /// The answer carried to the offer's node, when `offer_id` is an offer
    /// to `driver_id` relayed from there; None for this node's own offers.
    /// `on_socket`: the driver answered on its socket, so the outcome goes
    /// back as frames on it (as on one node) rather than as the result.
    fn respond(
        &self,
        offer_id: OfferId,
        driver_id: DriverId,
        accept: bool,
        on_socket: bool,
    ) -> Option<RespondFuture>;
}

/// The handle on the dispatcher: the only way in from outside it.
#[derive(Clone)]
pub struct DispatchHandle {
    slot: Slot<DispatchMessage>,
    elsewhere: Arc<std::sync::OnceLock<Arc<dyn RemoteOffers>>>,
}

impl DispatchHandle {
    pub(crate) fn new(slot: Slot<DispatchMessage>) -> DispatchHandle {
        DispatchHandle {
            slot,
            elsewhere: Arc::default(),
        }
    }

    /// Cluster mode: answers to offers relayed from other nodes go back
    /// through `offers`. A second call is refused (false).
    pub fn relay_through(&self, offers: Arc<dyn RemoteOffers>) -> bool {
        self.elsewhere.set(offers).is_ok()
    }

    /// The answer to an offer this node relayed, carried to its node.
    fn relayed(
        &self,
        offer_id: OfferId,
        driver_id: DriverId,
        accept: bool,
        on_socket: bool,
    ) -> Option<RespondFuture> {
        self.elsewhere
            .get()?
            .respond(offer_id, driver_id, accept, on_socket)
    }

    /// The order waits for a driver.
    pub(crate) fn open(&self, order: Dispatchable) {
        self.slot.cast(DispatchMessage::Open(Box::new(order)));
    }

    /// A waiting order's food will be ready at `ready_at` (the kitchen
    /// started preparing it, or marked it ready); no-op for an order not
    /// waiting for a driver.
    pub(crate) fn ready_at(&self, order_id: OrderId, ready_at: DateTime<Utc>) {
        self.slot.cast(DispatchMessage::ReadyAt(order_id, ready_at));
    }

    /// Assigned, cancelled or otherwise no longer in need of a driver.
    pub(crate) fn withdraw(&self, order_id: OrderId) {
        self.slot.cast(DispatchMessage::Withdraw(order_id));
    }

    /// The orders waiting for a driver, for the operators' view.
    pub(crate) async fn overview(&self) -> Option<Vec<crate::wire::OpsOrder>> {
        self.slot
            .call(DispatchMessage::Overview, Duration::from_secs(2))
            .await
    }

    /// Answers an offer (REST); `Ok(Some(order))` after an accept.
    pub async fn respond(
        &self,
        offer_id: OfferId,
        driver_id: DriverId,
        accept: bool,
    ) -> Result<Option<Order>, OfferError> {
        if let Some(relayed) = self.relayed(offer_id, driver_id, accept, false) {
            return relayed.await;
        }
        self.respond_here(offer_id, driver_id, accept).await
    }

    /// Answers an offer of this node's dispatcher (also one carried here
    /// from the driver's node); `Ok(Some(order))` after an accept.
    pub async fn respond_here(
        &self,
        offer_id: OfferId,
        driver_id: DriverId,
        accept: bool,
    ) -> Result<Option<Order>, OfferError> {
        self.slot
            .call(
                |reply| DispatchMessage::Respond {
                    offer_id,
                    driver_id,
                    accept,
                    span: tracing::Span::current(),
                    reply: Some(reply),
                },
                ORDER_CALL_TIMEOUT,
            )
            .await
            .unwrap_or(Err(OfferError::Unavailable))
    }

    /// Answers an offer from the driver's socket; the result goes back as
    /// an `offer_result` frame. `lost` runs if this node's dispatcher did
    /// not take the answer (it was down, or restarted before it answered
    /// a ping sent after the answer), so that the socket hears why nothing
    /// will come of it rather than seeing the offer expire; across nodes,
    /// the offer's node tells it the same way.
    pub(crate) fn respond_async(
        &self,
        offer_id: OfferId,
        driver_id: DriverId,
        accept: bool,
        lost: impl FnOnce() + Send + 'static,
    ) {
        if let Some(relayed) = self.relayed(offer_id, driver_id, accept, true) {
            // Its node tells the driver's socket how it went, through us.
            tokio::spawn(async move {
                let _ = relayed.await;
            });
            return;
        }
        // Off the session: the ping waits behind the dispatcher's round.
        // At most one task per answer, and answers come at the socket's
        // message rate.
        let dispatch = self.clone();
        tokio::spawn(async move {
            if !dispatch
                .respond_here_taken(offer_id, driver_id, accept)
                .await
            {
                lost();
            }
        });
    }

    /// Sends the answer to this node's dispatcher, resolving once it took
    /// the answer (cluster mode: answers carried from other nodes wait
    /// their turn, so a flood of them cannot pile up in its mailbox).
    /// False when it did not: no dispatcher, or it stopped (a restart)
    /// before it answered a ping sent after the answer to the same actor,
    /// so the answer may be lost and the driver must hear that it was.
    pub async fn respond_here_taken(
        &self,
        offer_id: OfferId,
        driver_id: DriverId,
        accept: bool,
    ) -> bool {
        let Some(actor) = self.slot.get() else {
            return false;
        };
        let respond = DispatchMessage::Respond {
            offer_id,
            driver_id,
            accept,
            span: tracing::Span::none(),
            reply: None,
        };
        if actor.cast(respond).is_err() {
            return false;
        }
        matches!(
            actor
                .call(DispatchMessage::Ping, Some(ORDER_CALL_TIMEOUT))
                .await,
            Ok(ractor::rpc::CallResult::Success(()))
        )
    }
}
