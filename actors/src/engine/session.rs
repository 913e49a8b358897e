//! Session actors: one per WebSocket connection, holding who it is, what it
//! watches, and its bounded outbound queue ([`Outbox`]).
//!
//! The socket reader hands it decoded, rate-limited client messages; frames
//! for the client go into the outbox, never straight to the socket. Reading
//! an order that has no live actor (a terminal one) is handed to a task, so
//! the session never waits on the store.

use crate::domain::input::LocationInput;
use crate::domain::lifecycle;
use crate::domain::model::*;
use crate::engine::dispatcher::{ANSWER_NOT_TAKEN, DispatchHandle};
use crate::engine::driver::DriverHandle;
use crate::engine::feeds::{OpsFeed, RestaurantFeeds};
use crate::engine::order::{Orders, SubscribeRefused};
use crate::engine::outbox::{CloseReason, Outbox};
use crate::metrics as m;
use crate::store::Store;
use crate::wire::{self, ClientMessage, ServerMessage};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

pub(crate) enum SessionMessage {
    /// A decoded client message, with the client's `ref` and when it arrived.
    Client(ClientMessage, Option<Value>, Instant),
}

pub(crate) struct SessionActor;

/// The handles a session works with.
#[derive(Clone)]
pub(crate) struct SessionWiring {
    pub orders: Orders,
    pub feeds: Arc<RestaurantFeeds>,
    pub ops: Arc<OpsFeed>,
    pub dispatch: DispatchHandle,
    pub store: Arc<dyn Store>,
}

pub(crate) struct SessionArguments {
    pub caller: Caller,
    pub outbox: Arc<Outbox>,
    pub wiring: SessionWiring,
    /// Set for drivers: their actor, already holding this session's outbox.
    pub driver: Option<DriverHandle>,
}

pub(crate) struct SessionState {
    caller: Caller,
    outbox: Arc<Outbox>,
    engine: SessionWiring,
    driver: Option<DriverHandle>,
    orders: HashSet<OrderId>,
    restaurants: HashSet<RestaurantId>,
    /// Subscriptions answered from the store (terminal or unknown orders)
    /// in this second: each costs a read, so a client may not ask for
    /// thousands of made-up ids.
    store_reads: (Instant, u32),
}

/// Store-answered subscriptions per session per second; more are refused
/// with RATE_LIMITED.
const STORE_READS_PER_SEC: u32 = 5;

impl SessionState {
    fn error(&self, code: &str, message: &str, reference: Option<Value>) {
        metrics::counter!(m::WS_MESSAGES_OUT_TOTAL, "type" => "error").increment(1);
        self.outbox
            .push(wire::error_frame(code, message, reference));
    }

    fn require_driver(&self, reference: &Option<Value>) -> Option<DriverHandle> {
        let driver = self.driver.clone();
        if driver.is_none() {
            self.error("FORBIDDEN", "only drivers may send this", reference.clone());
        }
        driver
    }
}

impl Actor for SessionActor {
    type Msg = SessionMessage;
    type State = SessionState;
    type Arguments = SessionArguments;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SessionArguments,
    ) -> Result<SessionState, ActorProcessingErr> {
        metrics::gauge!(m::WS_CONNECTIONS, "role" => args.caller.role.as_str()).increment(1.0);
        Ok(SessionState {
            caller: args.caller,
            outbox: args.outbox,
            engine: args.wiring,
            driver: args.driver,
            orders: HashSet::new(),
            restaurants: HashSet::new(),
            store_reads: (Instant::now(), 0),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        metrics::gauge!(m::WS_CONNECTIONS, "role" => state.caller.role.as_str()).decrement(1.0);
        let session_id = state.outbox.session_id;
        for order_id in &state.orders {
            state.engine.orders.unsubscribe(*order_id, session_id);
        }
        for restaurant_id in &state.restaurants {
            state.engine.feeds.unwatch(*restaurant_id, session_id);
        }
        if let Some(driver) = &state.driver {
            driver.detach(session_id);
        }
        state.engine.ops.unwatch(session_id);
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: SessionMessage,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        let SessionMessage::Client(message, reference, received_at) = message;
        match message {
            ClientMessage::Subscribe { order_id } => state.subscribe(order_id, reference).await,
            ClientMessage::Unsubscribe { order_id } => {
                state.orders.remove(&order_id);
                state
                    .engine
                    .orders
                    .unsubscribe(order_id, state.outbox.session_id);
            }
            ClientMessage::SubscribeRestaurant { restaurant_id } => {
                state.watch_restaurant(restaurant_id, reference)
            }
            ClientMessage::Location(input) => state.located(input, reference, received_at),
            ClientMessage::SetAvailability { available } => {
                if let Some(driver) = state.require_driver(&reference)
                    && !driver.set_availability(available)
                {
                    state.outbox.close(CloseReason::Restarting);
                }
            }
            ClientMessage::OfferResponse { offer_id, accept } => {
                if state.require_driver(&reference).is_some() {
                    let driver_id = state.caller.user_id;
                    let outbox = state.outbox.clone();
                    // The driver's hold of the offer ends when the
                    // dispatcher starts again (its offers are void).
                    let lost = move || {
                        metrics::counter!(m::WS_MESSAGES_OUT_TOTAL, "type" => "error").increment(1);
                        outbox.push(wire::error_frame(
                            "ENGINE_UNAVAILABLE",
                            &format!("offer {offer_id}: {ANSWER_NOT_TAKEN}"),
                            None,
                        ));
                    };
                    state
                        .engine
                        .dispatch
                        .respond_async(offer_id, driver_id, accept, lost);
                }
            }
            ClientMessage::SubscribeOps {} => {
                if state.caller.role == Role::Admin {
                    state.engine.ops.watch(state.outbox.clone());
                } else {
                    state.error(
                        "FORBIDDEN",
                        "only admins may watch the whole city",
                        reference,
                    );
                }
            }
            ClientMessage::UnsubscribeOps {} => state.engine.ops.unwatch(state.outbox.session_id),
            ClientMessage::Ping { id } => {
                // Normally answered by the socket reader itself; kept here
                // so a ping is never left unanswered.
                state.outbox.push(ServerMessage::Pong { id }.encode());
            }
        }
        Ok(())
    }
}

impl SessionState {
    async fn subscribe(&mut self, order_id: OrderId, reference: Option<Value>) {
        if order_id <= 0 {
            self.error(
                "VALIDATION_ERROR",
                "orderId must be a positive integer",
                reference,
            );
            return;
        }
        match self
            .engine
            .orders
            .subscribe(order_id, self.caller, self.outbox.clone())
            .await
        {
            Ok(()) => {
                self.orders.insert(order_id);
            }
            Err(SubscribeRefused::NotVisible) => {
                self.error("NOT_FOUND", "order not found", reference)
            }
            Err(SubscribeRefused::NotLive) => {
                if !self.may_read_store() {
                    metrics::counter!(m::RATE_LIMITED_TOTAL, "limit" => "ws_store_reads")
                        .increment(1);
                    self.error(
                        "RATE_LIMITED",
                        "too many subscriptions to past or unknown orders; slow down",
                        reference,
                    );
                    return;
                }
                // Terminal (or not yet recovered): answer from the store,
                // off this actor. Nothing more will happen to a terminal order.
                // Cluster mode: or run by another node, and watched through
                // the bus; remembered so that leaving unwatches it there.
                self.orders.insert(order_id);
                self.engine
                    .orders
                    .expect_follow(order_id, self.outbox.session_id);
                let engine = self.engine.clone();
                let caller = self.caller;
                let outbox = self.outbox.clone();
                tokio::spawn(async move {
                    let frame = match engine.store.order(order_id).await {
                        // Cluster mode: a live order run by another node.
                        // Watched through the bus when there is one; else
                        // its snapshot would never be followed by updates
                        // here, so say where it is instead.
                        Ok(Some(order))
                            if lifecycle::can_see(&order, &caller)
                                && !order.status.is_terminal()
                                && let Err(crate::store::StoreError::NotServed {
                                    region,
                                    owner,
                                }) = engine.orders.served_here(&order).await =>
                        {
                            match engine.orders.bus() {
                                Some(bus) => {
                                    let failed = engine
                                        .orders
                                        .follow_remote(
                                            bus,
                                            order_id,
                                            vec![outbox.clone()],
                                            true,
                                            true,
                                        )
                                        .await;
                                    match failed.into_iter().next() {
                                        None => return,
                                        Some((_, (code, message))) => {
                                            wire::error_frame(code, &message, reference)
                                        }
                                    }
                                }
                                None => {
                                    let served_by = owner
                                        .map(|node| format!("node {node} serves it"))
                                        .unwrap_or_else(|| "no node holds it just now".into());
                                    wire::error_frame(
                                        "ENGINE_UNAVAILABLE",
                                        &format!(
                                            "this node does not serve region {region}, where the order is: {served_by}; subscribe there"
                                        ),
                                        reference,
                                    )
                                }
                            }
                        }
                        Ok(Some(order)) if lifecycle::can_see(&order, &caller) => {
                            let driver = match order.driver_id {
                                Some(id) => engine.store.driver(id).await.ok().flatten(),
                                None => None,
                            };
                            ServerMessage::Snapshot {
                                order_id,
                                order: &order,
                                driver: driver.as_ref(),
                                driver_location: None,
                                eta: None,
                            }
                            .encode()
                        }
                        Ok(_) => wire::error_frame("NOT_FOUND", "order not found", reference),
                        Err(_) => wire::error_frame(
                            "STORE_UNAVAILABLE",
                            "the store is unavailable",
                            reference,
                        ),
                    };
                    engine.orders.forget_follow(order_id, outbox.session_id);
                    outbox.push(frame);
                });
            }
        }
    }

    /// Counts a store read against this second's allowance.
    fn may_read_store(&mut self) -> bool {
        let (started, used) = &mut self.store_reads;
        if started.elapsed() >= std::time::Duration::from_secs(1) {
            *started = Instant::now();
            *used = 0;
        }
        *used += 1;
        *used <= STORE_READS_PER_SEC
    }

    fn watch_restaurant(&mut self, restaurant_id: RestaurantId, reference: Option<Value>) {
        let allowed = match self.caller.role {
            Role::Admin => true,
            Role::Restaurant => self.caller.restaurant_id == Some(restaurant_id),
            _ => false,
        };
        if !allowed {
            self.error(
                "FORBIDDEN",
                "only its staff and admins may watch a restaurant",
                reference,
            );
            return;
        }
        self.restaurants.insert(restaurant_id);
        self.engine.feeds.watch(restaurant_id, self.outbox.clone());
    }

    fn located(&self, input: LocationInput, reference: Option<Value>, received_at: Instant) {
        if let Some(driver) = self.require_driver(&reference) {
            forward_location(&driver, &input, reference, received_at, &self.outbox);
        }
    }
}

/// Validates a driver's position and hands it to the driver's actor, or
/// answers VALIDATION_ERROR naming each bad field. The socket reader calls
/// this directly for drivers (one task hop fewer on the hottest path); the
/// session uses it for anything that reaches it. A driver actor that is gone
/// (it failed and was started again) closes the socket with 1012, so the
/// app reconnects to the new one.
pub fn forward_location(
    driver: &DriverHandle,
    input: &LocationInput,
    reference: Option<Value>,
    received_at: Instant,
    outbox: &Outbox,
) {
    match input.parse() {
        Ok(fix) => {
            metrics::counter!(m::LOCATION_UPDATES_TOTAL, "source" => "ws").increment(1);
            if !driver.located(fix, received_at) {
                outbox.close(CloseReason::Restarting);
            }
        }
        Err(fields) => {
            let message = fields
                .iter()
                .map(|f| format!("{} {}", f.field, f.message))
                .collect::<Vec<_>>()
                .join("; ");
            metrics::counter!(m::WS_MESSAGES_OUT_TOTAL, "type" => "error").increment(1);
            outbox.push(wire::error_frame("VALIDATION_ERROR", &message, reference));
        }
    }
}

/// One connection's session actor, as its socket reader holds it.
pub struct SessionHandle {
    actor: ActorRef<SessionMessage>,
}

impl SessionHandle {
    pub(crate) async fn start(args: SessionArguments) -> Result<SessionHandle, ractor::SpawnErr> {
        let (actor, _) = Actor::spawn(None, SessionActor, args).await?;
        Ok(SessionHandle { actor })
    }

    /// A decoded client message with its `ref` and when it arrived; false
    /// when the session actor is gone (the caller closes the socket).
    pub fn client(
        &self,
        message: ClientMessage,
        reference: Option<Value>,
        received_at: Instant,
    ) -> bool {
        self.actor
            .cast(SessionMessage::Client(message, reference, received_at))
            .is_ok()
    }

    /// The connection ended.
    pub fn stop(&self) {
        self.actor.stop(None);
    }
}
