//! The engine's root supervisor: parent of the four core actors, and the
//! one place that decides what each one's failure does.
//!
//! | child | on failure |
//! |---|---|
//! | geo actor | started again with an empty index; every driver actor gives it its entry again at once |
//! | dispatcher | started again; every order waiting for a driver is opened again by its actor (offers made before are void) |
//! | order supervisor | started again (its order actors died with it); every live order is read back from the store, and each new actor adopts its predecessor's watchers with a fresh snapshot |
//! | driver supervisor | started again (its driver actors died with it); every order with a driver hands itself to a new driver actor, and drivers' sockets reconnect |
//!
//! A restart waits `restart_delay` (doubled for each earlier failure in the
//! window, at most 5 s). Each is logged and counted
//! (`dispatch_actor_restarts_total`), and `/readyz` answers 503 while a core
//! actor is down. A child that fails
//! more than `max_restarts` times within `restart_window` is a crash loop:
//! the supervisor gives up, stops the engine, and the process exits
//! non-zero so that its own supervisor (systemd, Kubernetes) starts it
//! afresh from the store.

use crate::engine::breadcrumbs::BreadcrumbSink;
use crate::engine::config::EngineConfig;
use crate::engine::dispatcher::{DispatchMessage, Dispatcher, DispatcherArguments};
use crate::engine::driver::{
    DriverSupervisor, DriverSupervisorArguments, DriverSupervisorMessage, Drivers, OnRevived,
};
use crate::engine::geo_actor::{Geo, GeoActor, GeoArguments, GeoMessage};
use crate::engine::order::{Audience, OrderSupervisor, OrderSupervisorMessage, Orders};
use crate::engine::slot::Slot;
use crate::metrics as m;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The children of the root supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CoreActor {
    Geo,
    Dispatcher,
    OrderSupervisor,
    DriverSupervisor,
}

impl CoreActor {
    pub const ALL: [CoreActor; 4] = [
        CoreActor::Geo,
        CoreActor::Dispatcher,
        CoreActor::OrderSupervisor,
        CoreActor::DriverSupervisor,
    ];

    /// The name in logs, metrics labels and `/readyz`.
    pub fn as_str(self) -> &'static str {
        match self {
            CoreActor::Geo => "geo",
            CoreActor::Dispatcher => "dispatcher",
            CoreActor::OrderSupervisor => "order_supervisor",
            CoreActor::DriverSupervisor => "driver_supervisor",
        }
    }

    pub fn parse(name: &str) -> Option<CoreActor> {
        CoreActor::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// Where each core actor can be found, whichever incarnation it is.
#[derive(Clone)]
pub(crate) struct CoreSlots {
    pub geo: Slot<GeoMessage>,
    pub dispatcher: Slot<DispatchMessage>,
    pub orders: Slot<OrderSupervisorMessage>,
    pub drivers: Slot<DriverSupervisorMessage>,
}

impl CoreSlots {
    pub(crate) fn new() -> CoreSlots {
        CoreSlots {
            geo: Slot::empty(),
            dispatcher: Slot::empty(),
            orders: Slot::empty(),
            drivers: Slot::empty(),
        }
    }

    pub(crate) fn is_up(&self, actor: CoreActor) -> bool {
        match actor {
            CoreActor::Geo => self.geo.is_up(),
            CoreActor::Dispatcher => self.dispatcher.is_up(),
            CoreActor::OrderSupervisor => self.orders.is_up(),
            CoreActor::DriverSupervisor => self.drivers.is_up(),
        }
    }

    pub(crate) fn cell(&self, actor: CoreActor) -> Option<ActorCell> {
        match actor {
            CoreActor::Geo => self.geo.get().map(|a| a.get_cell()),
            CoreActor::Dispatcher => self.dispatcher.get().map(|a| a.get_cell()),
            CoreActor::OrderSupervisor => self.orders.get().map(|a| a.get_cell()),
            CoreActor::DriverSupervisor => self.drivers.get().map(|a| a.get_cell()),
        }
    }

    fn clear(&self, actor: CoreActor, cell: &ActorCell) {
        match actor {
            CoreActor::Geo => self.geo.clear(cell),
            CoreActor::Dispatcher => self.dispatcher.clear(cell),
            CoreActor::OrderSupervisor => self.orders.clear(cell),
            CoreActor::DriverSupervisor => self.drivers.clear(cell),
        }
    }
}

/// Everything the root needs to start (and start again) its children.
pub(crate) struct RootArguments {
    pub slots: CoreSlots,
    pub config: Arc<EngineConfig>,
    pub geo: Geo,
    pub orders: Orders,
    pub drivers: Drivers,
    pub breadcrumbs: BreadcrumbSink,
    pub on_driver_revived: Arc<OnRevived>,
    /// Set while the engine stops on purpose: children ending then are
    /// not failures.
    pub stopping: Arc<AtomicBool>,
    /// Cancelled when the supervisor gives up on a crash loop.
    pub gave_up: CancellationToken,
    /// Set while the order supervisor's orders are being read back.
    pub recovering: Arc<AtomicBool>,
}

pub(crate) enum RootMessage {
    /// The backoff after a failure is over: start this child again.
    Restart(CoreActor),
}

pub(crate) struct RootSupervisor;

pub(crate) struct RootState {
    args: RootArguments,
    children: HashMap<ActorId, CoreActor>,
    failures: HashMap<CoreActor, VecDeque<Instant>>,
}

impl Actor for RootSupervisor {
    type Msg = RootMessage;
    type State = RootState;
    type Arguments = RootArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RootArguments,
    ) -> Result<RootState, ActorProcessingErr> {
        let mut state = RootState {
            args,
            children: HashMap::new(),
            failures: HashMap::new(),
        };
        // In dependency order: drivers and orders reach the geo actor and
        // the dispatcher through their slots, which fill as we go.
        for actor in CoreActor::ALL {
            state.spawn(&myself, actor).await?;
        }
        metrics::gauge!(m::CORE_ACTORS_DOWN).set(0.0);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: RootMessage,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RootMessage::Restart(actor) => {
                if state.args.stopping.load(Ordering::Acquire) {
                    return Ok(());
                }
                if let Err(error) = state.spawn(&myself, actor).await {
                    tracing::error!(actor = actor.as_str(), %error, "Core actor did not start again; stopping the engine");
                    state.args.gave_up.cancel();
                    myself.stop(Some(format!("{} did not start", actor.as_str())));
                    return Ok(());
                }
                tracing::info!(actor = actor.as_str(), "Core actor started again");
                metrics::counter!(m::ACTOR_RESTARTS_TOTAL, "actor" => actor.as_str()).increment(1);
                metrics::gauge!(m::CORE_ACTORS_DOWN).decrement(1.0);
                state.rebuild_after_restart(actor);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match &event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.clone().unwrap_or_else(|| "stopped".to_owned()))
            }
            SupervisionEvent::ActorFailed(cell, error) => (cell, error.to_string()),
            _ => return Ok(()),
        };
        let Some(actor) = state.children.remove(&cell.get_id()) else {
            return Ok(());
        };
        state.args.slots.clear(actor, cell);
        if state.args.stopping.load(Ordering::Acquire) {
            return Ok(());
        }
        // A core actor never ends on its own while the engine runs: a stop
        // is as much a failure as a panic.
        metrics::gauge!(m::CORE_ACTORS_DOWN).increment(1.0);
        if state.crash_looping(actor) {
            tracing::error!(
                actor = actor.as_str(),
                error = %why,
                max_restarts = state.args.config.max_restarts,
                window_secs = state.args.config.restart_window.as_secs(),
                "Core actor keeps failing; stopping the engine"
            );
            state.args.gave_up.cancel();
            myself.stop(Some(format!("{} keeps failing", actor.as_str())));
            return Ok(());
        }
        let delay = state.backoff(actor);
        tracing::error!(
            actor = actor.as_str(),
            error = %why,
            restart_in_ms = delay.as_millis() as u64,
            "Core actor failed; starting it again"
        );
        myself.send_after(delay, move || RootMessage::Restart(actor));
        Ok(())
    }
}

impl RootState {
    async fn spawn(
        &mut self,
        myself: &ActorRef<RootMessage>,
        actor: CoreActor,
    ) -> Result<(), ActorProcessingErr> {
        let supervisor = myself.get_cell();
        let args = &self.args;
        let cell = match actor {
            CoreActor::Geo => {
                let (geo, _) = Actor::spawn_linked(
                    None,
                    GeoActor,
                    GeoArguments {
                        presence_ttl: args.config.presence_ttl,
                        presence: Arc::new(args.drivers.clone()),
                    },
                    supervisor,
                )
                .await?;
                args.slots.geo.fill(geo.clone());
                geo.get_cell()
            }
            CoreActor::Dispatcher => {
                let (dispatcher, _) = Actor::spawn_linked(
                    None,
                    Dispatcher,
                    DispatcherArguments {
                        orders: args.orders.clone(),
                        drivers: args.drivers.clone(),
                        geo: args.geo.clone(),
                        config: args.config.clone(),
                    },
                    supervisor,
                )
                .await?;
                args.slots.dispatcher.fill(dispatcher.clone());
                dispatcher.get_cell()
            }
            CoreActor::OrderSupervisor => {
                let (orders, _) = Actor::spawn_linked(
                    None,
                    OrderSupervisor,
                    args.orders.supervisor_arguments(args.config.clone()),
                    supervisor,
                )
                .await?;
                args.slots.orders.fill(orders.clone());
                orders.get_cell()
            }
            CoreActor::DriverSupervisor => {
                let (drivers, _) = Actor::spawn_linked(
                    None,
                    DriverSupervisor,
                    DriverSupervisorArguments {
                        registry: args.drivers.registry(),
                        geo: args.geo.clone(),
                        breadcrumbs: args.breadcrumbs.clone(),
                        config: args.config.clone(),
                        on_revived: args.on_driver_revived.clone(),
                        pauses: args.drivers.pauses(),
                        bus: args.drivers.bus(),
                    },
                    supervisor,
                )
                .await?;
                args.slots.drivers.fill(drivers.clone());
                drivers.get_cell()
            }
        };
        self.children.insert(cell.get_id(), actor);
        Ok(())
    }

    /// Records a failure; true when there were too many in the window.
    fn crash_looping(&mut self, actor: CoreActor) -> bool {
        let window = self.args.config.restart_window;
        let now = Instant::now();
        let failures = self.failures.entry(actor).or_default();
        failures.push_back(now);
        while failures
            .front()
            .is_some_and(|at| now.duration_since(*at) > window)
        {
            failures.pop_front();
        }
        failures.len() > self.args.config.max_restarts
    }

    /// How long to wait before starting `actor` again: the base delay,
    /// doubled for each earlier failure in the window, at most 5 s, so a
    /// crash loop does not spin while it lasts.
    fn backoff(&self, actor: CoreActor) -> Duration {
        let earlier = self
            .failures
            .get(&actor)
            .map_or(0, |f| f.len().saturating_sub(1));
        let factor = 1u32 << earlier.min(16);
        (self.args.config.restart_delay * factor).min(Duration::from_secs(5))
    }

    /// Gives a restarted child back the soft state its predecessor had.
    fn rebuild_after_restart(&self, actor: CoreActor) {
        match actor {
            CoreActor::Geo => self.args.drivers.rejoin_all(),
            CoreActor::Dispatcher => self.args.orders.reannounce(Audience::Dispatcher),
            CoreActor::DriverSupervisor => self.args.orders.reannounce(Audience::Driver),
            CoreActor::OrderSupervisor => {
                let orders = self.args.orders.clone();
                let recovering = self.args.recovering.clone();
                recovering.store(true, Ordering::Release);
                // Off this actor: reading every live order is a store read,
                // retried until the store answers.
                tokio::spawn(async move {
                    let mut pause = Duration::from_millis(200);
                    loop {
                        match orders.recover().await {
                            Ok(count) => {
                                tracing::info!(
                                    orders = count,
                                    "Live orders recovered after a restart"
                                );
                                break;
                            }
                            Err(error) => {
                                tracing::warn!(%error, "Live orders not recovered yet; retrying");
                                tokio::time::sleep(pause).await;
                                pause = (pause * 2).min(Duration::from_secs(5));
                            }
                        }
                    }
                    recovering.store(false, Ordering::Release);
                });
            }
        }
    }
}
