//! The Dispatcher: finds a driver for every confirmed order (CONTRACT.md
//! "Dispatch", DESIGN.md "Matching").
//!
//! Every round it takes the dispatchable orders without an outstanding
//! offer, asks the geo index for available drivers near each restaurant
//! (one round trip for the whole round), solves the round as a minimum-cost
//! assignment (`dispatch::assign_round`), and sends offers. A decline
//! or an expiry excludes that driver for that order; an order that finds
//! nobody widens its radius step by step. Accepting goes through the order
//! actor, whose durable write makes the assignment; that write runs in a
//! task, so the dispatcher itself never waits on the store.

use crate::domain::dispatch::{self, Candidate, OpenOrder, PolicyParams};
use crate::domain::model::*;
use crate::engine::config::EngineConfig;
use crate::engine::driver::Drivers;
use crate::engine::geo_actor::{CandidateQuery, Geo};
use crate::engine::order::{CommandError, NearestDriver, ORDER_CALL_TIMEOUT, Orders};
use crate::engine::slot::Slot;
use crate::metrics as m;
use crate::store::ExclusionReason;
use crate::wire::{OfferOutcome, Pickup, ServerMessage};
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferError {
    /// No such offer for this driver (never made, or void after a restart).
    NotFound,
    Expired,
    /// The order went to someone else, or was cancelled.
    Taken,
    /// The store could not record the assignment; the offer may be retried.
    Unavailable,
}

pub(crate) enum DispatchMessage {
    Open(Box<Dispatchable>),
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
    /// The outcome of an accepted offer's assignment write.
    Assigned {
        offer_id: OfferId,
        offer: Offer,
        result: Box<Result<Order, CommandError>>,
        reply: Option<RpcReplyPort<Result<Option<Order>, OfferError>>>,
    },
}

struct OpenEntry {
    info: Dispatchable,
    since: Instant,
    radius_km: f64,
    excluded: HashSet<DriverId>,
    offer: Option<OfferId>,
    /// False until the store said whom it excludes: no offer before that.
    exclusions_known: bool,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Offer {
    order_id: OrderId,
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
    open: HashMap<OrderId, OpenEntry>,
    offers: HashMap<OfferId, Offer>,
    /// Offers that ended, kept a while to answer late responses precisely.
    closed: HashMap<OfferId, (Offer, OfferOutcome, Instant)>,
    /// One outstanding offer per driver.
    offered_drivers: HashSet<DriverId>,
    next_offer_id: OfferId,
    params: PolicyParams,
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
        let params = PolicyParams {
            road_factor: args.config.road_factor,
            max_active_orders: args.config.max_active_orders,
            ..PolicyParams::default()
        };
        Ok(DispatcherState {
            open: HashMap::new(),
            offers: HashMap::new(),
            closed: HashMap::new(),
            offered_drivers: HashSet::new(),
            // Offer ids stay unique across restarts (offers made before a
            // crash are void, and must not be mistaken for new ones).
            next_offer_id: Utc::now().timestamp_millis() * 1000,
            params,
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
                let radius_km = state.args.config.search_radius_km;
                let order_id = info.order_id;
                if let std::collections::hash_map::Entry::Vacant(vacant) =
                    state.open.entry(order_id)
                {
                    vacant.insert(OpenEntry {
                        info: *info,
                        since: Instant::now(),
                        radius_km,
                        excluded: HashSet::new(),
                        offer: None,
                        exclusions_known: false,
                    });
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
                if let Some(entry) = state.open.get_mut(&order_id) {
                    entry.excluded.extend(drivers);
                    entry.exclusions_known = true;
                }
            }
            DispatchMessage::Withdraw(order_id) => {
                if let Some(entry) = state.open.remove(&order_id)
                    && let Some(offer_id) = entry.offer
                {
                    state.close_offer(offer_id, OfferOutcome::Taken).await;
                }
            }
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
                result,
                reply,
            } => state.assigned(offer_id, offer, *result, reply).await,
            DispatchMessage::Overview(reply) => {
                let waiting = state
                    .open
                    .values()
                    .map(|e| crate::wire::OpsOrder {
                        order_id: e.info.order_id,
                        restaurant_id: e.info.restaurant.id,
                        waiting_secs: e.since.elapsed().as_secs_f64(),
                        radius_km: e.radius_km,
                        offered_to: e
                            .offer
                            .and_then(|id| state.offers.get(&id))
                            .map(|o| o.driver_id),
                    })
                    .collect();
                let _ = reply.send(waiting);
            }
        }
        metrics::gauge!(m::DISPATCHABLE_ORDERS).set(state.open.len() as f64);
        Ok(())
    }
}

impl DispatcherState {
    async fn round(&mut self, myself: &ActorRef<DispatchMessage>) {
        self.closed
            .retain(|_, (_, _, at)| at.elapsed() < CLOSED_OFFER_MEMORY);
        let waiting: Vec<OrderId> = self
            .open
            .iter()
            .filter(|(_, e)| e.offer.is_none() && e.exclusions_known)
            .map(|(id, _)| *id)
            .collect();
        if waiting.is_empty() {
            return;
        }
        let started = Instant::now();
        let queries: Vec<CandidateQuery> = waiting
            .iter()
            .map(|id| {
                let entry = &self.open[id];
                let mut exclude = entry.excluded.clone();
                exclude.extend(self.offered_drivers.iter().copied());
                CandidateQuery {
                    at: entry.info.restaurant.location,
                    max_km: entry.radius_km,
                    exclude,
                }
            })
            .collect();
        let k = self.args.config.candidates_per_order;
        let max_active_orders = self.args.config.max_active_orders;
        let Some(answers) = self
            .args
            .geo
            .candidates(queries, k, max_active_orders)
            .await
        else {
            tracing::warn!("Geo index did not answer; skipping this round");
            return;
        };

        let now = Utc::now();
        let mut orders = Vec::with_capacity(waiting.len());
        let mut candidates = Vec::with_capacity(waiting.len());
        for (order_id, nearby) in waiting.iter().zip(answers) {
            // `waiting` was built from `open` above, in this same handler.
            let Some(entry) = self.open.get_mut(order_id) else {
                continue;
            };
            // The waiting order's ETA counts from the nearest of them.
            let nearest = nearby
                .iter()
                .min_by(|a, b| a.distance_km.total_cmp(&b.distance_km))
                .map(|n| NearestDriver {
                    at: n.entry.at,
                    vehicle: self
                        .args
                        .drivers
                        .profile(n.entry.id)
                        .map(|p| p.vehicle_type)
                        .unwrap_or_default(),
                });
            self.args.orders.driver_near(*order_id, nearest);
            if nearby.is_empty() {
                if let Some(wider) = dispatch::widen_radius(
                    entry.radius_km,
                    self.args.config.search_radius_km,
                    self.args.config.max_radius_km,
                ) {
                    entry.radius_km = wider;
                    metrics::counter!(m::RADIUS_WIDENINGS_TOTAL).increment(1);
                }
                continue;
            }
            orders.push(OpenOrder {
                order_id: *order_id,
                restaurant: entry.info.restaurant.location,
                dropoff: entry.info.dropoff,
                ready_in_secs: (entry.info.food_ready_at - now).num_milliseconds() as f64 / 1000.0,
            });
            candidates.push(
                nearby
                    .iter()
                    .map(|n| Candidate {
                        driver_id: n.entry.id,
                        at: n.entry.at,
                        vehicle: self
                            .args
                            .drivers
                            .profile(n.entry.id)
                            .map(|p| p.vehicle_type)
                            .unwrap_or_default(),
                        active_orders: n.entry.active_orders,
                    })
                    .collect::<Vec<_>>(),
            );
        }
        let pairings = dispatch::assign_round(&orders, &candidates, &self.params);
        metrics::histogram!(m::DISPATCH_ROUND_SECONDS).record(started.elapsed().as_secs_f64());

        for pairing in pairings {
            let Some(index) = orders.iter().position(|o| o.order_id == pairing.order_id) else {
                continue;
            };
            let driver_at = candidates[index]
                .iter()
                .find(|c| c.driver_id == pairing.driver_id)
                .map(|c| c.at);
            self.offer(myself, pairing.order_id, pairing.driver_id, driver_at)
                .await;
        }
    }

    async fn offer(
        &mut self,
        myself: &ActorRef<DispatchMessage>,
        order_id: OrderId,
        driver_id: DriverId,
        driver_at: Option<LatLon>,
    ) {
        let Some(entry) = self.open.get_mut(&order_id) else {
            return;
        };
        let offer_id = self.next_offer_id;
        self.next_offer_id += 1;
        let timeout = self.args.config.offer_timeout;
        let expires_at = Utc::now() + chrono::Duration::from_std(timeout).unwrap_or_default();
        let restaurant = &entry.info.restaurant;
        let pickup = Pickup {
            restaurant_id: restaurant.id,
            name: restaurant.name.clone(),
            lat: restaurant.location.lat,
            lon: restaurant.location.lon,
        };
        let distance_km = driver_at
            .map(|at| {
                (crate::domain::geo::distance_km(at, restaurant.location) * 1000.0).round() / 1000.0
            })
            .unwrap_or(0.0);
        let frame = ServerMessage::Offer {
            offer_id,
            order_id,
            pickup: &pickup,
            dropoff: entry.info.dropoff,
            distance_km,
            expires_at,
        }
        .encode();
        if !self.args.drivers.push(driver_id, frame).await {
            // The socket went away since the index saw it: try another next round.
            return;
        }
        entry.offer = Some(offer_id);
        self.offers.insert(
            offer_id,
            Offer {
                order_id,
                driver_id,
                expires: Instant::now() + timeout,
                dispatchable_since: entry.since,
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
        if let Some(entry) = self.open.get_mut(&offer.order_id) {
            entry.offer = None;
            let reason = match outcome {
                OfferOutcome::Declined => Some(ExclusionReason::Declined),
                OfferOutcome::Expired => Some(ExclusionReason::Expired),
                _ => None,
            };
            if let Some(reason) = reason {
                entry.excluded.insert(offer.driver_id);
                // Remembered across a restart; written off the dispatcher.
                self.args
                    .orders
                    .exclude_driver(offer.order_id, offer.driver_id, reason);
            }
        }
        self.closed
            .insert(offer_id, (offer, outcome, Instant::now()));
        metrics::counter!(m::OFFERS_TOTAL, "result" => outcome.as_str()).increment(1);
        self.tell(offer_id, offer, outcome);
    }

    fn tell(&self, offer_id: OfferId, offer: Offer, outcome: OfferOutcome) {
        let frame = ServerMessage::OfferResult {
            offer_id,
            order_id: offer.order_id,
            result: outcome,
        }
        .encode();
        self.args.drivers.tell(offer.driver_id, frame);
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
            .copied()
            .filter(|o| o.driver_id == driver_id)
        else {
            // A late or foreign answer: say precisely what became of it.
            let late = self
                .closed
                .get(&offer_id)
                .filter(|(o, _, _)| o.driver_id == driver_id);
            let error = match late {
                Some((offer, OfferOutcome::Expired, _))
                    if self.open.contains_key(&offer.order_id) =>
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
                        self.tell(offer_id, *offer, OfferOutcome::Expired)
                    }
                    (Some((offer, _, _)), OfferError::Taken) => {
                        self.tell(offer_id, *offer, OfferOutcome::Taken)
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
        let orders = self.args.orders.clone();
        let myself = myself.clone();
        tokio::spawn(
            async move {
                let result = orders.assign(offer.order_id, profile, offer_id).await;
                let _ = myself.cast(DispatchMessage::Assigned {
                    offer_id,
                    offer,
                    result: Box::new(result),
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
        result: Result<Order, CommandError>,
        reply: Option<RpcReplyPort<Result<Option<Order>, OfferError>>>,
    ) {
        self.offered_drivers.remove(&offer.driver_id);
        let (outcome, answer) = match result {
            Ok(order) => {
                self.open.remove(&offer.order_id);
                metrics::histogram!(m::ASSIGN_SECONDS)
                    .record(offer.dispatchable_since.elapsed().as_secs_f64());
                (OfferOutcome::Assigned, Ok(Some(order)))
            }
            Err(CommandError::Store(_)) | Err(CommandError::Unavailable) => {
                // Nothing was written; the order goes back into the pool.
                if let Some(entry) = self.open.get_mut(&offer.order_id) {
                    entry.offer = None;
                }
                metrics::counter!(m::OFFERS_TOTAL, "result" => "failed").increment(1);
                if let Some(reply) = reply {
                    let _ = reply.send(Err(OfferError::Unavailable));
                }
                return;
            }
            Err(CommandError::Refused(_)) => {
                self.open.remove(&offer.order_id);
                (OfferOutcome::Taken, Err(OfferError::Taken))
            }
        };
        self.closed
            .insert(offer_id, (offer, outcome, Instant::now()));
        metrics::counter!(m::OFFERS_TOTAL, "result" => outcome.as_str()).increment(1);
        self.tell(offer_id, offer, outcome);
        if let Some(reply) = reply {
            let _ = reply.send(answer);
        }
    }
}

/// The handle on the dispatcher: the only way in from outside it.
#[derive(Clone)]
pub struct DispatchHandle {
    slot: Slot<DispatchMessage>,
}

impl DispatchHandle {
    pub(crate) fn new(slot: Slot<DispatchMessage>) -> DispatchHandle {
        DispatchHandle { slot }
    }

    /// The order waits for a driver.
    pub(crate) fn open(&self, order: Dispatchable) {
        self.slot.cast(DispatchMessage::Open(Box::new(order)));
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
    /// an `offer_result` frame.
    pub(crate) fn respond_async(&self, offer_id: OfferId, driver_id: DriverId, accept: bool) {
        self.slot.cast(DispatchMessage::Respond {
            offer_id,
            driver_id,
            accept,
            span: tracing::Span::none(),
            reply: None,
        });
    }
}
