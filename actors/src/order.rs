//! Order actors: one per non-terminal order, the only writer of that order.
//!
//! A command reaches the actor through [`Orders`], the directory the gateway
//! holds. The actor decides the transition with [`lifecycle::decide`], writes
//! it (order row with a version check + event row, one transaction), and only
//! then updates its state, replies and tells the order's listeners. Awaiting
//! its own write is the point: commands on one order are serialised, so no
//! update is ever lost. A terminal order stops its actor.

use crate::lifecycle::{self, Action, Refusal};
use crate::metrics as m;
use crate::model::*;
use crate::store::{NewOrderEvent, OrderChange, Store, StoreError};
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

/// Hears of every durable change to an order, after it committed.
pub trait OrderListener: Send + Sync + 'static {
    fn order_changed(&self, order: &Order, event: &NewOrderEvent);
}

/// A listener that hears nothing, for tests and tools.
pub struct NoListener;
impl OrderListener for NoListener {
    fn order_changed(&self, _: &Order, _: &NewOrderEvent) {}
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
    Snapshot(RpcReplyPort<Order>),
}

pub struct OrderActor;

pub struct OrderArguments {
    pub order: Order,
    pub store: Arc<dyn Store>,
    pub listener: Arc<dyn OrderListener>,
}

pub struct OrderState {
    order: Order,
    store: Arc<dyn Store>,
    listener: Arc<dyn OrderListener>,
}

impl Actor for OrderActor {
    type Msg = OrderMessage;
    type State = OrderState;
    type Arguments = OrderArguments;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: OrderArguments,
    ) -> Result<OrderState, ActorProcessingErr> {
        metrics::gauge!(m::ORDERS_ACTIVE, "status" => args.order.status.as_str()).increment(1.0);
        metrics::gauge!(m::ORDER_ACTORS).increment(1.0);
        Ok(OrderState {
            order: args.order,
            store: args.store,
            listener: args.listener,
        })
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
            OrderMessage::Snapshot(reply) => {
                let _ = reply.send(state.order.clone());
            }
            OrderMessage::Transition(command, reply) => {
                let result = state.transition(command).await;
                let terminal = matches!(&result, Ok(order) if order.status.is_terminal());
                // The caller may have given up; the write stands either way.
                let _ = reply.send(result);
                if terminal {
                    myself.stop(Some("order is terminal".into()));
                }
            }
        }
        Ok(())
    }
}

impl OrderState {
    async fn transition(&mut self, command: TransitionCommand) -> Result<Order, CommandError> {
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

        metrics::counter!(m::ORDER_TRANSITIONS_TOTAL, "status" => target.as_str()).increment(1);
        self.replace(change.order);
        self.listener.order_changed(&self.order, &change.event);
        Ok(self.order.clone())
    }

    /// Swaps in a new committed state, keeping the per-status gauge right.
    fn replace(&mut self, order: Order) {
        if order.status != self.order.status {
            metrics::gauge!(m::ORDERS_ACTIVE, "status" => self.order.status.as_str())
                .decrement(1.0);
            metrics::gauge!(m::ORDERS_ACTIVE, "status" => order.status.as_str()).increment(1.0);
        }
        self.order = order;
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

pub enum SupervisorMessage {
    /// Start the actor of `order` unless it runs already; reply with it.
    Start(Box<Order>, RpcReplyPort<Option<ActorRef<OrderMessage>>>),
}

pub struct SupervisorArguments {
    pub registry: Arc<DashMap<OrderId, ActorRef<OrderMessage>>>,
    pub store: Arc<dyn Store>,
    pub listener: Arc<dyn OrderListener>,
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
            state
                .args
                .registry
                .remove_if(&order_id, |_, actor| actor.get_id() == cell.get_id());
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
        order: Order,
    ) -> Option<ActorRef<OrderMessage>> {
        if let Some(running) = self.args.registry.get(&order.id) {
            return Some(running.clone());
        }
        if order.status.is_terminal() {
            return None;
        }
        let order_id = order.id;
        let args = OrderArguments {
            order,
            store: self.args.store.clone(),
            listener: self.args.listener.clone(),
        };
        match Actor::spawn_linked(None, OrderActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.children.insert(actor.get_id(), order_id);
                self.args.registry.insert(order_id, actor.clone());
                Some(actor)
            }
            Err(error) => {
                tracing::error!(order_id, %error, "Order actor failed to start");
                None
            }
        }
    }
}

/// The gateway's handle on every live order: find, start, command.
#[derive(Clone)]
pub struct Orders {
    registry: Arc<DashMap<OrderId, ActorRef<OrderMessage>>>,
    supervisor: ActorRef<SupervisorMessage>,
    store: Arc<dyn Store>,
}

impl Orders {
    /// Starts the supervisor. Call [`Orders::recover`] next to respawn the
    /// actors of orders that were live at the last stop.
    pub async fn start(
        store: Arc<dyn Store>,
        listener: Arc<dyn OrderListener>,
    ) -> Result<Self, ractor::SpawnErr> {
        let registry = Arc::new(DashMap::new());
        let args = SupervisorArguments {
            registry: registry.clone(),
            store: store.clone(),
            listener,
        };
        let (supervisor, _) = Actor::spawn(None, OrderSupervisor, args).await?;
        Ok(Orders {
            registry,
            supervisor,
            store,
        })
    }

    /// Respawns an actor for every non-terminal order in the store.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let active = self.store.active_orders().await?;
        let count = active.len();
        for order in active {
            self.spawn(order).await;
        }
        Ok(count)
    }

    /// Starts the actor of a freshly placed (or recovered) order.
    pub async fn spawn(&self, order: Order) -> Option<ActorRef<OrderMessage>> {
        let order_id = order.id;
        match self
            .supervisor
            .call(
                |reply| SupervisorMessage::Start(Box::new(order), reply),
                Some(ORDER_CALL_TIMEOUT),
            )
            .await
        {
            Ok(CallResult::Success(actor)) => actor,
            _ => {
                tracing::error!(order_id, "Order supervisor did not answer");
                None
            }
        }
    }

    pub fn live_count(&self) -> usize {
        self.registry.len()
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
            let actor = match self.registry.get(&order_id).map(|a| a.clone()) {
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
                        .remove_if(&order_id, |_, a| a.get_id() == actor.get_id());
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
        self.spawn(order).await.ok_or(CommandError::Unavailable)
    }

    /// The live state of an order, if its actor runs.
    pub async fn snapshot(&self, order_id: OrderId) -> Option<Order> {
        let actor = self.registry.get(&order_id).map(|a| a.clone())?;
        match actor
            .call(OrderMessage::Snapshot, Some(ORDER_CALL_TIMEOUT))
            .await
        {
            Ok(CallResult::Success(order)) => Some(order),
            _ => None,
        }
    }

    /// Stops every order actor (shutdown).
    pub fn stop(&self) {
        self.supervisor.stop_children(None);
        self.supervisor.stop(None);
    }
}
