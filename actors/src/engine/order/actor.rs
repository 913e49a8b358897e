//! The order actor: one per non-terminal order, the only writer of that
//! order. It decides a transition with [`lifecycle::decide`], writes it
//! (order row with a version check + event row, one transaction), and only
//! then updates its state, replies and tells the order's listeners.
//! Awaiting its own write is the point: commands on one order are
//! serialised, so no update is ever lost. A terminal order stops its actor.

use super::feed::{MovedEta, OrderFeed, Trip};
use super::{
    Audience, CommandError, NearestDriver, OrderChanged, OrderListener, OrderRef, TransitionCommand,
};
use crate::domain::eta::{self, Eta, Kitchen, Leg};
use crate::domain::lifecycle::{self, Refusal};
use crate::domain::model::*;
use crate::engine::config::EngineConfig;
use crate::engine::eta_writer::EtaWrites;
use crate::engine::outbox::{Outbox, SessionId};
use crate::metrics as m;
use crate::store::{NewOrderEvent, OrderChange, Store, StoreError};
use crate::wire::{self, ServerMessage};
use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

pub(crate) enum OrderMessage {
    /// With the span of the request that asked (its `request_id`), entered
    /// while the actor works on it, so the actor's log lines carry it.
    Transition(
        TransitionCommand,
        tracing::Span,
        RpcReplyPort<Result<Order, CommandError>>,
    ),
    /// A session asks to watch the order; on success the actor queues the
    /// `snapshot` itself, so no update can slip between snapshot and
    /// subscription.
    Subscribe {
        caller: Caller,
        outbox: Arc<Outbox>,
        reply: RpcReplyPort<Result<(), Refusal>>,
    },
    /// The assigned driver's own socket, subscribed without asking.
    AttachDriverSession(Arc<Outbox>),
    Unsubscribe(SessionId),
    /// A position of the assigned driver moved the estimate past the push
    /// threshold ([`OrderFeed::publish_location`]): store it and tell the
    /// watchers.
    EtaMoved(MovedEta),
    /// The carrying driver approached or reached the next stop: record it.
    Arrived(crate::domain::arrival::Arrival),
    /// Tell `Audience` of this order again, as if it had just started:
    /// after the dispatcher or the driver actors restarted, they learn
    /// again which orders wait for a driver and who carries what.
    Reannounce(Audience),
    /// An order still waiting for a driver recomputes its estimate: the
    /// clock moved on, and so may the drivers near it.
    RefreshEta,
    /// The nearest available driver the dispatcher found for this order in
    /// its last round (`None`: nobody within the search radius).
    DriverNear(Option<NearestDriver>),
    /// Cluster mode: the order's region went to another node. The order
    /// leaves dispatch, its driver lets it go, and the actor stops; the
    /// new owner loads it from the store. Its watchers, if given, go on
    /// following it over the bus.
    Release(Option<super::ReleasedWatchers>),
    /// Cluster mode: sessions that followed this order over the bus while
    /// another node ran it; each joins the feed with a snapshot, unless it
    /// unsubscribed meanwhile (it left the handoff set).
    AdoptWatchers(Vec<Arc<Outbox>>, super::Handoff),
    /// Assign the driver who accepted an offer.
    Assign {
        driver: Driver,
        offer_id: OfferId,
        /// The drop-offs the driver makes before this order's: the earlier
        /// orders of its bundle, in sequence (none for a single offer).
        drops_before: Vec<(OrderId, LatLon)>,
        /// The accepting request's span, as for `Transition`.
        span: tracing::Span,
        reply: RpcReplyPort<Result<Order, CommandError>>,
    },
}

pub(crate) struct OrderActor;

pub(crate) struct OrderArguments {
    pub order: Order,
    pub restaurant: RestaurantInfo,
    pub driver: Option<Driver>,
    pub store: Arc<dyn Store>,
    pub listener: Arc<dyn OrderListener>,
    pub config: Arc<EngineConfig>,
    pub feed: Arc<OrderFeed>,
    pub eta_writes: EtaWrites,
    /// The feed was a failed actor's: its watchers may have missed a
    /// change, so each gets a fresh snapshot.
    pub adopted: bool,
}

pub(crate) struct OrderState {
    order: Order,
    restaurant: RestaurantInfo,
    driver: Option<Driver>,
    /// Watchers and the driver's position, shared with the driver's actor.
    feed: Arc<OrderFeed>,
    store: Arc<dyn Store>,
    listener: Arc<dyn OrderListener>,
    config: Arc<EngineConfig>,
    eta_writes: EtaWrites,
    /// While no driver is assigned: who the dispatcher last saw nearest.
    nearest: Option<(NearestDriver, Instant)>,
    /// The arrival events this order has recorded. The feed's geofence
    /// lives in memory and starts afresh after a restart; this set, read
    /// from the order's history at its first arrival since the actor
    /// started, keeps a restart from announcing an arrival twice.
    recorded_arrivals: Option<HashSet<RecordedArrival>>,
}

/// Which arrival, at which stop, of which driver.
type RecordedArrival = (
    crate::domain::arrival::ArrivalKind,
    crate::domain::arrival::Stop,
    DriverId,
);

/// A dispatcher's sighting older than this no longer says where the
/// nearest driver is (the order had an offer out meanwhile, or the
/// dispatcher restarted).
const NEAREST_DRIVER_TTL: std::time::Duration = std::time::Duration::from_secs(60);

impl Actor for OrderActor {
    type Msg = OrderMessage;
    type State = OrderState;
    type Arguments = OrderArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: OrderArguments,
    ) -> Result<OrderState, ActorProcessingErr> {
        metrics::gauge!(m::ORDERS_ACTIVE, "status" => args.order.status.as_str()).increment(1.0);
        metrics::gauge!(m::ORDER_ACTORS).increment(1.0);
        let state = OrderState {
            order: args.order,
            restaurant: args.restaurant,
            driver: args.driver,
            feed: args.feed,
            store: args.store,
            listener: args.listener,
            config: args.config,
            eta_writes: args.eta_writes,
            nearest: None,
            recorded_arrivals: None,
        };
        state.feed.track(state.trip());
        if args.adopted {
            state.resnapshot();
        }
        state.started(&myself);
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut OrderState,
    ) -> Result<(), ActorProcessingErr> {
        metrics::gauge!(m::ORDERS_ACTIVE, "status" => state.order.status.as_str()).decrement(1.0);
        metrics::gauge!(m::ORDER_ACTORS).decrement(1.0);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: OrderMessage,
        state: &mut OrderState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            OrderMessage::Transition(command, span, reply) => {
                let result = state.transition(&myself, command).instrument(span).await;
                let terminal = matches!(&result, Ok(order) if order.status.is_terminal());
                // The caller may have given up; the write stands either way.
                let _ = reply.send(result);
                if terminal {
                    myself.stop(Some("order is terminal".into()));
                }
            }
            OrderMessage::Subscribe {
                caller,
                outbox,
                reply,
            } => {
                if !lifecycle::can_see(&state.order, &caller) {
                    let _ = reply.send(Err(Refusal::NotVisible));
                    return Ok(());
                }
                state.subscribe(outbox);
                let _ = reply.send(Ok(()));
            }
            OrderMessage::AttachDriverSession(outbox) => {
                state.feed.set_driver_session(outbox.session_id);
                state.subscribe(outbox);
            }
            OrderMessage::Unsubscribe(session_id) => state.feed.unsubscribe(session_id),
            OrderMessage::EtaMoved(fresh) => state.eta_moved(fresh),
            OrderMessage::Arrived(arrival) => state.arrived(&myself, arrival).await,
            OrderMessage::Release(watchers) => {
                if let Some(watchers) = watchers {
                    let moved = {
                        let mut moving = super::lock_handoff(&watchers.handoff);
                        let outboxes = state.feed.take_watchers();
                        for outbox in &outboxes {
                            moving.insert((state.order.id, outbox.session_id));
                        }
                        outboxes
                    };
                    if !moved.is_empty() {
                        (watchers.follow)(moved);
                    }
                }
                tracing::info!(
                    order_id = state.order.id,
                    "Order handed to its region's new owner"
                );
                state.listener.order_released(&state.order);
                myself.stop(Some("region released".into()));
            }
            OrderMessage::AdoptWatchers(outboxes, handoff) => {
                let mut moving = super::lock_handoff(&handoff);
                for outbox in outboxes {
                    if moving.remove(&(state.order.id, outbox.session_id)) {
                        state.subscribe(outbox);
                    }
                }
            }
            OrderMessage::Reannounce(audience) => {
                let concerned = match audience {
                    Audience::Dispatcher => lifecycle::awaits_driver(&state.order),
                    Audience::Driver => state.order.driver_id.is_some(),
                };
                if concerned {
                    state.started(&myself);
                }
            }
            OrderMessage::RefreshEta => state.refresh_waiting_eta(),
            OrderMessage::DriverNear(nearest) => {
                state.nearest = nearest.map(|n| (n, Instant::now()));
            }
            OrderMessage::Assign {
                driver,
                offer_id,
                drops_before,
                span,
                reply,
            } => {
                let assigned = state
                    .assign(&myself, driver, offer_id, drops_before)
                    .instrument(span)
                    .await;
                let _ = reply.send(assigned);
            }
        }
        Ok(())
    }
}

impl OrderState {
    fn snapshot(&self, driver_location: Option<&DriverLocation>) -> wire::Frame {
        ServerMessage::Snapshot {
            order_id: self.order.id,
            order: &self.order,
            driver: self.driver.as_ref(),
            driver_location,
            eta: self.eta(),
        }
        .encode()
    }

    fn subscribe(&mut self, outbox: Arc<Outbox>) {
        self.feed
            .subscribe(outbox, |driver_location| self.snapshot(driver_location));
    }

    /// Every watcher gets the order as it stands now.
    fn resnapshot(&self) {
        self.feed
            .resnapshot(|driver_location| self.snapshot(driver_location));
    }

    /// Tells the listeners this order is live, as it stands.
    fn started(&self, myself: &ActorRef<OrderMessage>) {
        let started = NewOrderEvent {
            kind: OrderEventType::StatusChanged,
            from_status: None,
            to_status: Some(self.order.status),
            actor_id: None,
            actor_role: None,
            at: now(),
            data: serde_json::Value::Null,
        };
        self.listener.order_started(OrderChanged {
            order: &self.order,
            event: &started,
            restaurant: &self.restaurant,
            driver: self.driver.as_ref(),
            order_ref: &OrderRef::new(myself.clone(), self.order.id),
            feed: &self.feed,
        });
    }

    /// What the driver's positions mean for this order, while it has one.
    fn trip(&self) -> Option<Trip> {
        let driver_id = self.order.driver_id?;
        if self.order.status.is_terminal() {
            return None;
        }
        Some(Trip {
            driver_id,
            vehicle: self
                .driver
                .as_ref()
                .map(|d| d.vehicle_type)
                .unwrap_or_default(),
            picked_up: self.order.status == OrderStatus::PickedUp,
            food_ready_at: self.food_ready_at(&self.order),
            dropoff: LatLon {
                lat: self.order.delivery_address.lat,
                lon: self.order.delivery_address.lon,
            },
            stored_eta: self.order.estimated_delivery_at,
        })
    }

    /// The `eta` clients see: the stored estimate, none once terminal.
    fn eta(&self) -> Option<Eta> {
        Eta::of(&self.order, now())
    }

    fn food_ready_at(&self, order: &Order) -> DateTime<Utc> {
        eta::food_ready_at(Kitchen::from(order), self.restaurant.prep_time_minutes)
    }

    /// A fresh estimate for `order` as it stands (CONTRACT.md "Dispatch").
    fn estimate(&self, order: &Order) -> Option<DateTime<Utc>> {
        if order.status.is_terminal() {
            return order.estimated_delivery_at;
        }
        let vehicle = self
            .driver
            .as_ref()
            .map(|d| d.vehicle_type)
            .unwrap_or_default();
        let here = self.feed.location().map(|l| l.at());
        let leg = match (order.status, here) {
            (OrderStatus::PickedUp, Some(at)) => Leg::ToCustomer { at, vehicle },
            // Picked up but no position seen yet: keep what we had.
            (OrderStatus::PickedUp, None) => return order.estimated_delivery_at,
            (_, Some(at)) if order.driver_id.is_some() => Leg::ToRestaurant { at, vehicle },
            // No driver yet: from the nearest one the dispatcher saw, if it
            // is far enough to be later than the food; else one assumed to
            // be at the restaurant when the food is ready.
            _ => match self.nearest_driver() {
                Some(nearest) if order.driver_id.is_none() => Leg::ToRestaurant {
                    at: nearest.at,
                    vehicle: nearest.vehicle,
                },
                _ => Leg::Unassigned { vehicle },
            },
        };
        let dropoff = LatLon {
            lat: order.delivery_address.lat,
            lon: order.delivery_address.lon,
        };
        // A waiting order has no drop-offs before it; an assigned one of a
        // bundle has its driver's earlier ones still to be made.
        let drops_before = if order.driver_id.is_some() {
            self.feed.drops_before()
        } else {
            Vec::new()
        };
        Some(eta::estimate_delivery_via(
            now(),
            self.food_ready_at(order),
            self.restaurant.location,
            &drops_before,
            dropoff,
            leg,
            self.config.road_factor,
        ))
    }

    fn announce(&mut self, myself: &ActorRef<OrderMessage>, event: &NewOrderEvent) {
        tracing::info!(
            order_id = self.order.id,
            event = event.kind.as_str(),
            status = self.order.status.as_str(),
            version = self.order.version,
            driver_id = self.order.driver_id,
            "Order changed"
        );
        self.feed
            .broadcast(&wire::order_update(&self.order, self.eta()));
        self.listener.order_changed(OrderChanged {
            order: &self.order,
            event,
            restaurant: &self.restaurant,
            driver: self.driver.as_ref(),
            order_ref: &OrderRef::new(myself.clone(), self.order.id),
            feed: &self.feed,
        });
    }

    /// Writes `next` with `event`, or leaves the state as it was.
    async fn commit(
        &mut self,
        next: Order,
        event: NewOrderEvent,
    ) -> Result<NewOrderEvent, CommandError> {
        let change = OrderChange {
            order: next,
            from_version: self.order.version,
            event,
        };
        let started = Instant::now();
        let written = self.store.apply_change(&change).await;
        metrics::histogram!(m::STORE_WRITE_DURATION_SECONDS)
            .record(started.elapsed().as_secs_f64());
        if let Err(error) = written {
            metrics::counter!(m::STORE_ERRORS_TOTAL, "kind" => store_error_kind(&error))
                .increment(1);
            // Someone wrote this order behind our back (another node, an
            // operator): our state is stale. Reload before the next command.
            if matches!(error, StoreError::Conflict)
                && let Ok(Some(fresh)) = self.store.order(self.order.id).await
            {
                self.replace(fresh);
            }
            return Err(error.into());
        }
        self.replace(change.order);
        Ok(change.event)
    }

    async fn transition(
        &mut self,
        myself: &ActorRef<OrderMessage>,
        command: TransitionCommand,
    ) -> Result<Order, CommandError> {
        let TransitionCommand {
            caller,
            action,
            expected_version,
            reason,
        } = command;
        let target = lifecycle::decide(&self.order, &caller, action, expected_version).inspect_err(|refusal| {
            metrics::counter!(m::ORDER_TRANSITIONS_REFUSED_TOTAL, "reason" => refusal_code(refusal)).increment(1);
        })?;

        let at = now();
        let mut next = self.order.clone();
        next.status = target;
        next.version += 1;
        next.stamp(target, at);
        if target == OrderStatus::Cancelled {
            next.cancel_reason = reason.clone();
        }
        next.estimated_delivery_at = self.estimate(&next);
        let event = NewOrderEvent {
            kind: OrderEventType::StatusChanged,
            from_status: Some(self.order.status),
            to_status: Some(target),
            actor_id: Some(caller.user_id),
            actor_role: Some(caller.role),
            at,
            data: match &reason {
                Some(reason) => serde_json::json!({ "action": action.as_str(), "reason": reason }),
                None => serde_json::json!({ "action": action.as_str() }),
            },
        };
        let event = self.commit(next, event).await?;
        metrics::counter!(m::ORDER_TRANSITIONS_TOTAL, "status" => target.as_str()).increment(1);

        // A cancelled order frees its driver, on the record too.
        if target == OrderStatus::Cancelled
            && let Some(driver_id) = self.order.driver_id
        {
            let mut released = self.order.clone();
            released.version += 1;
            let unassigned = NewOrderEvent {
                kind: OrderEventType::DriverUnassigned,
                from_status: Some(target),
                to_status: Some(target),
                actor_id: Some(caller.user_id),
                actor_role: Some(caller.role),
                at,
                data: serde_json::json!({ "driverId": driver_id, "reason": "order cancelled" }),
            };
            match self.commit(released, unassigned).await {
                Ok(unassigned) => self.listener.order_changed(OrderChanged {
                    order: &self.order,
                    event: &unassigned,
                    restaurant: &self.restaurant,
                    driver: self.driver.as_ref(),
                    order_ref: &OrderRef::new(myself.clone(), self.order.id),
                    feed: &self.feed,
                }),
                // The cancellation stands; the driver is still released in
                // memory by the listener hearing of the cancellation.
                Err(error) => {
                    tracing::warn!(order_id = self.order.id, %error, "Could not record DRIVER_UNASSIGNED")
                }
            }
        }
        self.announce(myself, &event);
        Ok(self.order.clone())
    }

    async fn assign(
        &mut self,
        myself: &ActorRef<OrderMessage>,
        driver: Driver,
        offer_id: OfferId,
        drops_before: Vec<(OrderId, LatLon)>,
    ) -> Result<Order, CommandError> {
        if !lifecycle::awaits_driver(&self.order) {
            return Err(Refusal::InvalidTransition {
                action: "assign",
                from: self.order.status,
            }
            .into());
        }
        let at = now();
        let mut next = self.order.clone();
        next.driver_id = Some(driver.id);
        next.version += 1;
        let event = NewOrderEvent {
            kind: OrderEventType::DriverAssigned,
            from_status: Some(self.order.status),
            to_status: Some(self.order.status),
            actor_id: Some(driver.id),
            actor_role: Some(Role::Driver),
            at,
            data: serde_json::json!({ "driverId": driver.id, "offerId": offer_id }),
        };
        let previous_driver = self.driver.replace(driver);
        let event = match self.commit(next, event).await {
            Ok(event) => event,
            Err(error) => {
                self.driver = previous_driver;
                return Err(error);
            }
        };
        // Before anyone hears of the driver: its first position's estimate
        // already goes through the drop-offs before this one.
        self.feed.set_drops_before(drops_before);
        self.announce(myself, &event);
        Ok(self.order.clone())
    }

    fn nearest_driver(&self) -> Option<NearestDriver> {
        self.nearest
            .filter(|(_, seen)| seen.elapsed() < NEAREST_DRIVER_TTL)
            .map(|(nearest, _)| nearest)
    }

    /// An order without a driver: a fresh estimate, stored and pushed when
    /// it moved past the threshold, as a driver's position does for an
    /// assigned order. Without this, a waiting order's ETA stayed what it
    /// was at placement and counted down to zero while nobody came.
    fn refresh_waiting_eta(&mut self) {
        if self.order.driver_id.is_some() || self.order.status.is_terminal() {
            return;
        }
        let Some(fresh) = self.estimate(&self.order) else {
            return;
        };
        let threshold = chrono::Duration::from_std(self.config.eta_push_threshold)
            .unwrap_or(chrono::Duration::MAX);
        let moved = self
            .order
            .estimated_delivery_at
            .is_none_or(|stored| (fresh - stored).abs() > threshold);
        if !moved {
            return;
        }
        self.order.estimated_delivery_at = Some(fresh);
        metrics::counter!(m::ETA_UPDATES_TOTAL).increment(1);
        self.eta_writes
            .offer(self.order.id, self.order.version, fresh);
        self.feed
            .broadcast(&wire::order_update(&self.order, self.eta()));
    }

    /// Stores and pushes an estimate the driver's position moved, unless a
    /// change committed since (its own estimate stands).
    /// Records an arrival event (a new version, like an assignment) and
    /// tells the watchers. Advisory: one the store refuses is logged and
    /// dropped, and one for a stop the order has left behind is ignored.
    async fn arrived(
        &mut self,
        myself: &ActorRef<OrderMessage>,
        arrival: crate::domain::arrival::Arrival,
    ) {
        use crate::domain::arrival::Stop;
        let Some(driver_id) = self.order.driver_id else {
            return;
        };
        let current = match arrival.stop {
            Stop::Restaurant => self.order.status != OrderStatus::PickedUp,
            Stop::Dropoff => self.order.status == OrderStatus::PickedUp,
        };
        if self.order.status.is_terminal() || !current {
            return;
        }
        let key = (arrival.kind, arrival.stop, driver_id);
        if self.already_recorded(key).await {
            metrics::counter!(m::ARRIVAL_REPEATS_SKIPPED_TOTAL).increment(1);
            return;
        }
        let mut next = self.order.clone();
        next.version += 1;
        let event = NewOrderEvent {
            kind: arrival_event_type(arrival.kind),
            from_status: Some(self.order.status),
            to_status: Some(self.order.status),
            actor_id: Some(driver_id),
            actor_role: Some(Role::Driver),
            at: now(),
            data: serde_json::json!({
                "driverId": driver_id,
                "stop": arrival.stop.as_str(),
                "distanceM": (arrival.distance_m * 10.0).round() / 10.0,
            }),
        };
        match self.commit(next, event).await {
            Ok(event) => {
                if let Some(recorded) = self.recorded_arrivals.as_mut() {
                    recorded.insert(key);
                }
                metrics::counter!(m::ARRIVAL_EVENTS_TOTAL, "kind" => arrival.kind.as_str(), "stop" => arrival.stop.as_str()).increment(1);
                if let Some(frame) = wire::arrival(self.order.id, &event) {
                    self.feed.broadcast(&frame);
                }
                self.announce(myself, &event);
            }
            Err(error) => {
                tracing::warn!(order_id = self.order.id, %error, kind = arrival.kind.as_str(), "Arrival event not recorded")
            }
        }
    }

    /// Whether this order's history already holds `key`, read once per
    /// actor life. A failed read counts as not recorded (arrival events are
    /// advisory) and is tried again at the next arrival.
    async fn already_recorded(&mut self, key: RecordedArrival) -> bool {
        use crate::domain::arrival::{ArrivalKind, Stop};
        if self.recorded_arrivals.is_none() {
            match self.store.order_events(self.order.id).await {
                Ok(events) => {
                    let recorded = events
                        .iter()
                        .filter_map(|event| {
                            let kind = [ArrivalKind::Approaching, ArrivalKind::Arrived]
                                .into_iter()
                                .find(|kind| arrival_event_type(*kind) == event.kind)?;
                            let stop = match event.data["stop"].as_str()? {
                                "restaurant" => Stop::Restaurant,
                                "dropoff" => Stop::Dropoff,
                                _ => return None,
                            };
                            Some((kind, stop, event.data["driverId"].as_i64()?))
                        })
                        .collect();
                    self.recorded_arrivals = Some(recorded);
                }
                Err(error) => {
                    tracing::warn!(order_id = self.order.id, %error, "Arrival history not read");
                    return false;
                }
            }
        }
        self.recorded_arrivals
            .as_ref()
            .is_some_and(|recorded| recorded.contains(&key))
    }

    fn eta_moved(&mut self, moved: MovedEta) {
        if !self.feed.is_current(&moved) || self.order.status.is_terminal() {
            return;
        }
        let fresh = moved.estimated_delivery_at;
        self.order.estimated_delivery_at = Some(fresh);
        metrics::counter!(m::ETA_UPDATES_TOTAL).increment(1);
        // Stored in the background, for this version only: a change
        // committed meanwhile writes its own estimate.
        self.eta_writes
            .offer(self.order.id, self.order.version, fresh);
        self.feed
            .broadcast(&wire::order_update(&self.order, self.eta()));
    }

    /// Swaps in a new committed state, keeping the per-status gauge right.
    fn replace(&mut self, order: Order) {
        if order.status != self.order.status {
            metrics::gauge!(m::ORDERS_ACTIVE, "status" => self.order.status.as_str())
                .decrement(1.0);
            metrics::gauge!(m::ORDERS_ACTIVE, "status" => order.status.as_str()).increment(1.0);
        }
        self.order = order;
        self.feed.track(self.trip());
    }
}

fn refusal_code(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::NotVisible => "not_visible",
        Refusal::Forbidden { .. } => "forbidden",
        Refusal::InvalidTransition { .. } => "invalid_transition",
        Refusal::NoDriverAssigned => "no_driver",
        Refusal::VersionConflict { .. } => "version_conflict",
    }
}

pub(crate) fn store_error_kind(error: &StoreError) -> &'static str {
    match error {
        StoreError::Unavailable(_) => "unavailable",
        StoreError::Conflict => "conflict",
        StoreError::EmailTaken => "email_taken",
        StoreError::UnknownReference => "unknown_reference",
        StoreError::NotServed { .. } => "not_served",
        StoreError::Internal(_) => "internal",
    }
}

/// The order event an arrival is recorded as.
fn arrival_event_type(kind: crate::domain::arrival::ArrivalKind) -> OrderEventType {
    match kind {
        crate::domain::arrival::ArrivalKind::Approaching => OrderEventType::DriverApproaching,
        crate::domain::arrival::ArrivalKind::Arrived => OrderEventType::DriverArrived,
    }
}
