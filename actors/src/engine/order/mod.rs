//! Order actors: one per non-terminal order, the only writer of that order.
//!
//! A command reaches the actor through [`Orders`], the directory the gateway
//! holds. The actor decides the transition with [`lifecycle::decide`], writes
//! it (order row with a version check + event row, one transaction), and only
//! then updates its state, replies and tells the order's listeners. Awaiting
//! its own write is the point: commands on one order are serialised, so no
//! update is ever lost. A terminal order stops its actor.

pub mod feed;

use crate::domain::eta::{self, Eta, Leg};
use crate::domain::lifecycle::{self, Action, Refusal};
use crate::domain::model::*;
use crate::engine::config::EngineConfig;
use crate::engine::order::feed::{MovedEta, OrderFeed, Trip};
use crate::engine::outbox::{Outbox, SessionId};
use crate::metrics as m;
use crate::store::{NewOrderEvent, OrderChange, Store, StoreError};
use crate::wire::{self, ServerMessage};
use chrono::{DateTime, SubsecRound, Utc};
use dashmap::DashMap;
use ractor::rpc::CallResult;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the gateway waits for an order actor. Longer than any store
/// write may take (the pool's acquire timeout plus the statement), so that a
/// timed-out caller never misses a write that later commits.
pub const ORDER_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The current time at the precision every store keeps (milliseconds), so an
/// order reads back exactly as it was written.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

/// What an order actor knows of its restaurant: enough for ETAs and offers
/// without a store read per position.
#[derive(Debug, Clone, PartialEq)]
pub struct RestaurantInfo {
    pub id: RestaurantId,
    pub name: String,
    pub location: LatLon,
    pub prep_time_minutes: i32,
}

impl From<&Restaurant> for RestaurantInfo {
    fn from(r: &Restaurant) -> Self {
        RestaurantInfo {
            id: r.id,
            name: r.name.clone(),
            location: r.location,
            prep_time_minutes: r.prep_time_minutes,
        }
    }
}

/// A committed change, as listeners hear of it.
pub struct OrderChanged<'a> {
    pub order: &'a Order,
    pub event: &'a NewOrderEvent,
    pub restaurant: &'a RestaurantInfo,
    pub driver: Option<&'a Driver>,
    pub actor: &'a ActorRef<OrderMessage>,
    /// Where the carrying driver publishes its positions.
    pub feed: &'a Arc<OrderFeed>,
}

/// Hears of every durable change to an order, after it committed, and of
/// every order actor that starts (new or recovered). Implementations must
/// not block: they cast to other actors.
pub trait OrderListener: Send + Sync + 'static {
    fn order_changed(&self, change: OrderChanged<'_>);
    fn order_started(&self, _started: OrderChanged<'_>) {}
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The order actor did not answer in time or is gone.
    #[error("order actor unavailable")]
    Unavailable,
}

#[derive(Debug, Clone)]
pub struct TransitionCommand {
    pub caller: Caller,
    pub action: Action,
    pub expected_version: Option<i64>,
    pub reason: Option<String>,
}

pub enum OrderMessage {
    Transition(TransitionCommand, RpcReplyPort<Result<Order, CommandError>>),
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
    /// Assign the driver who accepted an offer.
    Assign {
        driver: Driver,
        offer_id: OfferId,
        reply: RpcReplyPort<Result<Order, CommandError>>,
    },
}

pub struct OrderActor;

pub struct OrderArguments {
    pub order: Order,
    pub restaurant: RestaurantInfo,
    pub driver: Option<Driver>,
    pub store: Arc<dyn Store>,
    pub listener: Arc<dyn OrderListener>,
    pub config: Arc<EngineConfig>,
    pub feed: Arc<OrderFeed>,
}

pub struct OrderState {
    order: Order,
    restaurant: RestaurantInfo,
    driver: Option<Driver>,
    /// Watchers and the driver's position, shared with the driver's actor.
    feed: Arc<OrderFeed>,
    store: Arc<dyn Store>,
    listener: Arc<dyn OrderListener>,
    config: Arc<EngineConfig>,
}

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
        };
        state.feed.track(state.trip());
        let started = NewOrderEvent {
            kind: OrderEventType::StatusChanged,
            from_status: None,
            to_status: Some(state.order.status),
            actor_id: None,
            actor_role: None,
            at: now(),
            data: serde_json::Value::Null,
        };
        state.listener.order_started(OrderChanged {
            order: &state.order,
            event: &started,
            restaurant: &state.restaurant,
            driver: state.driver.as_ref(),
            actor: &myself,
            feed: &state.feed,
        });
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
            OrderMessage::Transition(command, reply) => {
                let result = state.transition(&myself, command).await;
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
            OrderMessage::Assign {
                driver,
                offer_id,
                reply,
            } => {
                let _ = reply.send(state.assign(&myself, driver, offer_id).await);
            }
        }
        Ok(())
    }
}

impl OrderState {
    fn subscribe(&mut self, outbox: Arc<Outbox>) {
        let eta = self.eta();
        self.feed.subscribe(outbox, |driver_location| {
            ServerMessage::Snapshot {
                order_id: self.order.id,
                order: &self.order,
                driver: self.driver.as_ref(),
                driver_location,
                eta,
            }
            .encode()
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
        if self.order.status.is_terminal() {
            return None;
        }
        self.order
            .estimated_delivery_at
            .map(|at| Eta::at(at, now()))
    }

    /// When the food is (or will be) ready.
    fn food_ready_at(&self, order: &Order) -> DateTime<Utc> {
        let prep = chrono::Duration::minutes(i64::from(self.restaurant.prep_time_minutes));
        order
            .ready_at
            .or_else(|| order.preparing_at.map(|t| t + prep))
            .unwrap_or_else(|| order.confirmed_at.unwrap_or(order.placed_at) + prep)
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
            _ => Leg::Unassigned { vehicle },
        };
        let dropoff = LatLon {
            lat: order.delivery_address.lat,
            lon: order.delivery_address.lon,
        };
        Some(eta::estimate_delivery(
            now(),
            self.food_ready_at(order),
            self.restaurant.location,
            dropoff,
            leg,
            self.config.road_factor,
        ))
    }

    fn announce(&mut self, myself: &ActorRef<OrderMessage>, event: &NewOrderEvent) {
        self.feed
            .broadcast(&wire::order_update(&self.order, self.eta()));
        self.listener.order_changed(OrderChanged {
            order: &self.order,
            event,
            restaurant: &self.restaurant,
            driver: self.driver.as_ref(),
            actor: myself,
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
                    actor: myself,
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
    ) -> Result<Order, CommandError> {
        if self.order.driver_id.is_some() {
            return Err(Refusal::InvalidTransition {
                action: "assign",
                from: self.order.status,
            }
            .into());
        }
        if !matches!(
            self.order.status,
            OrderStatus::Confirmed | OrderStatus::Preparing | OrderStatus::ReadyForPickup
        ) {
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
        self.announce(myself, &event);
        Ok(self.order.clone())
    }

    /// Stores and pushes an estimate the driver's position moved, unless a
    /// change committed since (its own estimate stands).
    fn eta_moved(&mut self, moved: MovedEta) {
        if !self.feed.is_current(&moved) || self.order.status.is_terminal() {
            return;
        }
        let fresh = moved.estimated_delivery_at;
        self.order.estimated_delivery_at = Some(fresh);
        metrics::counter!(m::ETA_UPDATES_TOTAL).increment(1);
        // Off the hot path: the estimate is advisory, so a lost write
        // costs nothing but a stale ETA until the next one.
        let store = self.store.clone();
        let order_id = self.order.id;
        tokio::spawn(async move {
            if let Err(error) = store.set_estimated_delivery(order_id, fresh).await {
                tracing::debug!(order_id, %error, "ETA not stored");
            }
        });
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

pub fn store_error_kind(error: &StoreError) -> &'static str {
    match error {
        StoreError::Unavailable(_) => "unavailable",
        StoreError::Conflict => "conflict",
        StoreError::EmailTaken => "email_taken",
        StoreError::Internal(_) => "internal",
    }
}

/// Spawns order actors under one supervisor and keeps the id -> actor map.
pub struct OrderSupervisor;

/// What starting an order actor needs besides the shared handles.
pub struct LiveOrder {
    pub order: Order,
    pub restaurant: RestaurantInfo,
    pub driver: Option<Driver>,
}

/// A running order actor and the feed it shares with its driver's actor.
#[derive(Clone)]
pub struct OrderHandle {
    pub actor: ActorRef<OrderMessage>,
    pub feed: Arc<OrderFeed>,
}

pub enum SupervisorMessage {
    /// Start the actor of an order unless it runs already; reply with it.
    Start(Box<LiveOrder>, RpcReplyPort<Option<OrderHandle>>),
}

pub struct SupervisorArguments {
    pub registry: Arc<DashMap<OrderId, OrderHandle>>,
    pub store: Arc<dyn Store>,
    pub listener: Arc<dyn OrderListener>,
    pub config: Arc<EngineConfig>,
}

pub struct SupervisorState {
    args: SupervisorArguments,
    children: HashMap<ActorId, OrderId>,
}

impl Actor for OrderSupervisor {
    type Msg = SupervisorMessage;
    type State = SupervisorState;
    type Arguments = SupervisorArguments;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SupervisorArguments,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            args,
            children: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: SupervisorMessage,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMessage::Start(order, reply) => {
                let _ = reply.send(state.start(&myself, *order).await);
            }
        }
        Ok(())
    }

    /// A child that stops or fails leaves the directory; a supervisor never
    /// stops because of a child. A failed order actor is not restarted here:
    /// its order is durable, and the next command for it respawns it from the
    /// store ([`Orders::transition`]).
    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure): (&ActorCell, Option<String>) = match &event {
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            SupervisionEvent::ActorFailed(cell, error) => (cell, Some(error.to_string())),
            _ => return Ok(()),
        };
        if let Some(order_id) = state.children.remove(&cell.get_id()) {
            let removed = state
                .args
                .registry
                .remove_if(&order_id, |_, live| live.actor.get_id() == cell.get_id());
            // The driver may still hold a failed actor's feed: its watchers
            // would hear positions but no status, so no more positions go
            // there. A revived actor starts a new feed.
            if let Some((_, live)) = removed {
                live.feed.track(None);
            }
            if let Some(error) = failure {
                tracing::error!(order_id, %error, "Order actor failed");
            }
        }
        Ok(())
    }
}

impl SupervisorState {
    async fn start(
        &mut self,
        myself: &ActorRef<SupervisorMessage>,
        live: LiveOrder,
    ) -> Option<OrderHandle> {
        if let Some(running) = self.args.registry.get(&live.order.id) {
            return Some(running.clone());
        }
        if live.order.status.is_terminal() {
            return None;
        }
        let order_id = live.order.id;
        let config = &self.args.config;
        let feed = Arc::new(OrderFeed::new(
            order_id,
            &live.restaurant,
            config.road_factor,
            config.eta_push_threshold,
        ));
        let args = OrderArguments {
            order: live.order,
            restaurant: live.restaurant,
            driver: live.driver,
            store: self.args.store.clone(),
            listener: self.args.listener.clone(),
            config: config.clone(),
            feed: feed.clone(),
        };
        match Actor::spawn_linked(None, OrderActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.children.insert(actor.get_id(), order_id);
                let handle = OrderHandle { actor, feed };
                self.args.registry.insert(order_id, handle.clone());
                Some(handle)
            }
            Err(error) => {
                tracing::error!(order_id, %error, "Order actor failed to start");
                None
            }
        }
    }
}

/// The gateway's handle on every live order: find, start, command, watch.
#[derive(Clone)]
pub struct Orders {
    registry: Arc<DashMap<OrderId, OrderHandle>>,
    restaurants: Arc<DashMap<RestaurantId, RestaurantInfo>>,
    supervisor: ActorRef<SupervisorMessage>,
    store: Arc<dyn Store>,
    listener: Arc<dyn OrderListener>,
}

/// Why a subscription was not made.
#[derive(Debug, PartialEq, Eq)]
pub enum SubscribeRefused {
    /// The caller may not see it, or it does not exist.
    NotVisible,
    /// The order has no live actor (it is terminal): answer from the store.
    NotLive,
}

impl Orders {
    /// Starts the supervisor. Call [`Orders::recover`] next to respawn the
    /// actors of orders that were live at the last stop.
    pub async fn start(
        store: Arc<dyn Store>,
        listener: Arc<dyn OrderListener>,
        config: Arc<EngineConfig>,
    ) -> Result<Self, ractor::SpawnErr> {
        let registry = Arc::new(DashMap::new());
        let args = SupervisorArguments {
            registry: registry.clone(),
            store: store.clone(),
            listener: listener.clone(),
            config,
        };
        let (supervisor, _) = Actor::spawn(None, OrderSupervisor, args).await?;
        Ok(Orders {
            registry,
            restaurants: Arc::new(DashMap::new()),
            supervisor,
            store,
            listener,
        })
    }

    /// Respawns an actor for every non-terminal order in the store.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let active = self.store.active_orders().await?;
        let count = active.len();
        for order in active {
            self.spawn(order).await?;
        }
        Ok(count)
    }

    /// What an order actor needs to know of a restaurant, cached.
    pub async fn restaurant_info(&self, id: RestaurantId) -> Result<RestaurantInfo, StoreError> {
        if let Some(info) = self.restaurants.get(&id) {
            return Ok(info.clone());
        }
        let restaurant = self.store.restaurant(id).await?.ok_or_else(|| {
            StoreError::Internal(format!("order refers to missing restaurant {id}"))
        })?;
        let info = RestaurantInfo::from(&restaurant);
        self.restaurants.insert(id, info.clone());
        Ok(info)
    }

    /// Drops a cached restaurant after it changed; new order actors see the change.
    pub fn forget_restaurant(&self, id: RestaurantId) {
        self.restaurants.remove(&id);
    }

    /// Starts the actor of a recovered (or revived) order.
    pub async fn spawn(&self, order: Order) -> Result<Option<OrderHandle>, StoreError> {
        let restaurant = self.restaurant_info(order.restaurant_id).await?;
        let driver = match order.driver_id {
            Some(id) => self.store.driver(id).await?,
            None => None,
        };
        let order_id = order.id;
        let live = LiveOrder {
            order,
            restaurant,
            driver,
        };
        match self
            .supervisor
            .call(
                |reply| SupervisorMessage::Start(Box::new(live), reply),
                Some(ORDER_CALL_TIMEOUT),
            )
            .await
        {
            Ok(CallResult::Success(actor)) => Ok(actor),
            _ => {
                tracing::error!(order_id, "Order supervisor did not answer");
                Ok(None)
            }
        }
    }

    /// Starts the actor of a just-placed order and tells the listeners (the
    /// restaurant's tablets hear of it from here).
    pub async fn placed(&self, order: Order) -> Result<(), StoreError> {
        let Some(live) = self.spawn(order.clone()).await? else {
            return Ok(());
        };
        let restaurant = self.restaurant_info(order.restaurant_id).await?;
        let event = NewOrderEvent {
            kind: OrderEventType::OrderPlaced,
            from_status: None,
            to_status: Some(OrderStatus::Placed),
            actor_id: Some(order.customer_id),
            actor_role: Some(Role::Customer),
            at: order.placed_at,
            data: serde_json::Value::Null,
        };
        self.listener.order_changed(OrderChanged {
            order: &order,
            event: &event,
            restaurant: &restaurant,
            driver: None,
            actor: &live.actor,
            feed: &live.feed,
        });
        Ok(())
    }

    pub fn actor(&self, order_id: OrderId) -> Option<ActorRef<OrderMessage>> {
        self.registry.get(&order_id).map(|live| live.actor.clone())
    }

    /// Subscribes a session to a live order; the actor queues the snapshot.
    pub async fn subscribe(
        &self,
        order_id: OrderId,
        caller: Caller,
        outbox: Arc<Outbox>,
    ) -> Result<(), SubscribeRefused> {
        let actor = self.actor(order_id).ok_or(SubscribeRefused::NotLive)?;
        let asked = actor
            .call(
                |reply| OrderMessage::Subscribe {
                    caller,
                    outbox,
                    reply,
                },
                Some(ORDER_CALL_TIMEOUT),
            )
            .await;
        match asked {
            Ok(CallResult::Success(Ok(()))) => Ok(()),
            Ok(CallResult::Success(Err(_))) => Err(SubscribeRefused::NotVisible),
            // Stopped meanwhile: it just became terminal.
            _ => Err(SubscribeRefused::NotLive),
        }
    }

    pub fn unsubscribe(&self, order_id: OrderId, session_id: SessionId) {
        if let Some(actor) = self.actor(order_id) {
            let _ = actor.cast(OrderMessage::Unsubscribe(session_id));
        }
    }

    /// Assigns `driver` to the order (an accepted offer).
    pub async fn assign(
        &self,
        order_id: OrderId,
        driver: Driver,
        offer_id: OfferId,
    ) -> Result<Order, CommandError> {
        let actor = self.actor(order_id).ok_or(Refusal::NotVisible)?;
        match actor
            .call(
                |reply| OrderMessage::Assign {
                    driver,
                    offer_id,
                    reply,
                },
                Some(ORDER_CALL_TIMEOUT),
            )
            .await
        {
            Ok(CallResult::Success(result)) => result,
            _ => Err(CommandError::Unavailable),
        }
    }

    /// Runs a transition on the order's actor. An order without a live actor
    /// (terminal, or its actor failed) is read from the store: a terminal one
    /// is refused exactly as its actor would have refused, a live one gets its
    /// actor back and the command goes through.
    pub async fn transition(
        &self,
        order_id: OrderId,
        command: TransitionCommand,
    ) -> Result<Order, CommandError> {
        // Two attempts: an actor can stop between our lookup and its mailbox
        // (it just became terminal); the second attempt reads the store.
        for _attempt in 0..2 {
            let actor = match self.actor(order_id) {
                Some(actor) => actor,
                None => self.revive(order_id, &command).await?,
            };
            let asked = actor
                .call(
                    |reply| OrderMessage::Transition(command.clone(), reply),
                    Some(ORDER_CALL_TIMEOUT),
                )
                .await;
            match asked {
                Ok(CallResult::Success(result)) => return result,
                Ok(CallResult::Timeout) => return Err(CommandError::Unavailable),
                Ok(CallResult::SenderError) | Err(_) => {
                    self.registry
                        .remove_if(&order_id, |_, live| live.actor.get_id() == actor.get_id());
                }
            }
        }
        Err(CommandError::Unavailable)
    }

    /// The actor for an order that has none running: refuses a terminal
    /// order's command, restarts a live order's actor.
    async fn revive(
        &self,
        order_id: OrderId,
        command: &TransitionCommand,
    ) -> Result<ActorRef<OrderMessage>, CommandError> {
        let order = self
            .store
            .order(order_id)
            .await?
            .ok_or(Refusal::NotVisible)?;
        if order.status.is_terminal() {
            // Every action on a terminal order is refused; decide() says why
            // (not visible, forbidden, or an invalid transition).
            lifecycle::decide(
                &order,
                &command.caller,
                command.action,
                command.expected_version,
            )?;
            return Err(Refusal::InvalidTransition {
                action: command.action.as_str(),
                from: order.status,
            }
            .into());
        }
        self.spawn(order)
            .await?
            .map(|live| live.actor)
            .ok_or(CommandError::Unavailable)
    }

    /// Stops every order actor (shutdown).
    pub fn stop(&self) {
        self.supervisor.stop_children(None);
        self.supervisor.stop(None);
    }
}
