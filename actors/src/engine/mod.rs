//! The engine: the actors every request and session reaches, wired
//! together and supervised, behind one handle.
//!
//! ```text
//! RootSupervisor (supervisor.rs: what each child's failure does)
//! ├── GeoActor          geo_actor.rs   the R-trees of online and of available drivers
//! ├── Dispatcher        dispatcher.rs  rounds, offers, accept / decline / expiry
//! ├── OrderSupervisor   order/         one OrderActor per live order, the only writer of it
//! └── DriverSupervisor  driver/        one DriverActor per driver seen online
//! SessionActor          session.rs     one per WebSocket, started by the gateway through Engine
//! ```
//!
//! Outside this module nobody names an actor or a message: the gateway holds
//! [`Engine`] and asks it for [`Orders`], [`Drivers`], [`Geo`] and
//! [`DispatchHandle`], each of which owns its actor's messages. The other
//! files: `listener` turns committed order changes into work for the
//! others, [`feeds`] keeps the restaurant and operator feeds, [`outbox`] is a
//! session's bounded queue, [`breadcrumbs`] writes delivery trails off the
//! hot path, [`eta_writer`] stores moved ETAs the same way, `slot` lets a restarted actor be found, [`config`] holds the
//! tunables.

pub mod breadcrumbs;
pub mod config;
pub mod dispatcher;
pub mod driver;
pub mod eta_writer;
pub mod feeds;
pub mod geo_actor;
mod listener;
pub mod order;
pub mod outbox;
pub mod session;
mod slot;
pub mod supervisor;

use crate::domain::model::Caller;
use crate::store::Store;
use breadcrumbs::BreadcrumbSink;
use config::EngineConfig;
use dispatcher::DispatchHandle;
use driver::{DriverHandle, Drivers, OnRevived};
use feeds::{OpsFeed, RestaurantFeeds};
use geo_actor::Geo;
use listener::EngineListener;
use order::Orders;
use outbox::Outbox;
use ractor::{Actor, ActorRef};
use session::{SessionArguments, SessionHandle, SessionWiring};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use supervisor::{CoreActor, CoreSlots, RootArguments, RootMessage, RootSupervisor};
use tokio_util::sync::CancellationToken;

/// What `/readyz` needs to know of the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Core actors not running right now (restarting, or given up on).
    pub down: Vec<CoreActor>,
    /// Live orders are being read back after the order supervisor restarted.
    pub recovering: bool,
}

impl Health {
    pub fn is_ready(&self) -> bool {
        self.down.is_empty() && !self.recovering
    }
}

/// Every `every`, the orders waiting for a driver recompute their ETA.
fn spawn_eta_refresher(orders: Orders, every: std::time::Duration, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => orders.refresh_waiting_etas(),
            }
        }
    });
}

/// The handle on the running engine, cheap to clone.
#[derive(Clone)]
pub struct Engine {
    store: Arc<dyn Store>,
    orders: Orders,
    drivers: Drivers,
    geo: Geo,
    dispatch: DispatchHandle,
    feeds: Arc<RestaurantFeeds>,
    ops: Arc<OpsFeed>,
    config: Arc<EngineConfig>,
    slots: CoreSlots,
    root: ActorRef<RootMessage>,
    stopping: Arc<AtomicBool>,
    gave_up: CancellationToken,
    recovering: Arc<AtomicBool>,
    /// Stops the engine's own tasks (the operators' view).
    tasks: CancellationToken,
    /// Writes the moved ETAs still queued, once the actors have stopped.
    eta_flush: Arc<std::sync::Mutex<Option<eta_writer::Flush>>>,
}

impl Engine {
    /// Starts the supervision tree. Call `orders().recover()` next to bring
    /// back the orders that were live at the last stop.
    pub async fn start(
        store: Arc<dyn Store>,
        breadcrumbs: BreadcrumbSink,
        config: EngineConfig,
    ) -> anyhow::Result<Engine> {
        let config = Arc::new(config);
        let slots = CoreSlots::new();
        let geo = Geo::new(slots.geo.clone());
        let drivers = Drivers::new(slots.drivers.clone(), store.clone(), geo.clone());
        let dispatch = DispatchHandle::new(slots.dispatcher.clone());
        let feeds = Arc::new(RestaurantFeeds::default());
        let listener = Arc::new(EngineListener {
            feeds: feeds.clone(),
            drivers: drivers.clone(),
            dispatch: dispatch.clone(),
        });
        let (eta_writes, eta_flush) = eta_writer::start(store.clone(), config.eta_write_every);
        let orders = Orders::new(slots.orders.clone(), store.clone(), listener, eta_writes);
        let on_driver_revived: Arc<OnRevived> = Arc::new(OnceLock::new());
        let revived_orders = orders.clone();
        let _ = on_driver_revived.set(Arc::new(move |driver_id| {
            revived_orders.reannounce_carried_by(driver_id)
        }));
        let stopping = Arc::new(AtomicBool::new(false));
        let gave_up = CancellationToken::new();
        let recovering = Arc::new(AtomicBool::new(false));
        let (root, _) = Actor::spawn(
            None,
            RootSupervisor,
            RootArguments {
                slots: slots.clone(),
                config: config.clone(),
                geo: geo.clone(),
                orders: orders.clone(),
                drivers: drivers.clone(),
                breadcrumbs,
                on_driver_revived,
                stopping: stopping.clone(),
                gave_up: gave_up.clone(),
                recovering: recovering.clone(),
            },
        )
        .await?;
        let ops = Arc::new(OpsFeed::default());
        let tasks = CancellationToken::new();
        spawn_eta_refresher(orders.clone(), config.eta_refresh, tasks.clone());
        feeds::spawn_ops_reporter(
            ops.clone(),
            geo.clone(),
            dispatch.clone(),
            config.presence_ttl,
            tasks.clone(),
        );
        Ok(Engine {
            store,
            orders,
            drivers,
            geo,
            dispatch,
            feeds,
            ops,
            config,
            slots,
            root,
            stopping,
            gave_up,
            recovering,
            tasks,
            eta_flush: Arc::new(std::sync::Mutex::new(Some(eta_flush))),
        })
    }

    pub fn orders(&self) -> &Orders {
        &self.orders
    }

    pub fn drivers(&self) -> &Drivers {
        &self.drivers
    }

    /// The restaurants' feeds (tablets), for cluster mode's bus.
    pub fn restaurant_feeds(&self) -> &Arc<RestaurantFeeds> {
        &self.feeds
    }

    pub fn geo(&self) -> &Geo {
        &self.geo
    }

    pub fn dispatch(&self) -> &DispatchHandle {
        &self.dispatch
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Starts the session actor of a new WebSocket connection; a driver's
    /// comes with its actor, already holding the socket's outbox.
    pub async fn open_session(
        &self,
        caller: Caller,
        outbox: Arc<Outbox>,
        driver: Option<DriverHandle>,
    ) -> Result<SessionHandle, ractor::SpawnErr> {
        SessionHandle::start(SessionArguments {
            caller,
            outbox,
            wiring: SessionWiring {
                orders: self.orders.clone(),
                feeds: self.feeds.clone(),
                ops: self.ops.clone(),
                dispatch: self.dispatch.clone(),
                store: self.store.clone(),
            },
            driver,
        })
        .await
    }

    pub fn health(&self) -> Health {
        Health {
            down: CoreActor::ALL
                .into_iter()
                .filter(|actor| !self.slots.is_up(*actor))
                .collect(),
            recovering: self.recovering.load(Ordering::Acquire),
        }
    }

    /// Kills a core actor as a crash would (fault injection for operators'
    /// drills and the supervision tests); false if it was not running.
    pub fn fail(&self, actor: CoreActor) -> bool {
        match self.slots.cell(actor) {
            Some(cell) => {
                tracing::warn!(actor = actor.as_str(), "Killing a core actor on request");
                cell.kill();
                true
            }
            None => false,
        }
    }

    /// Resolves when the supervisor gave up on a core actor that kept
    /// failing: the engine has stopped and the process should exit non-zero.
    pub async fn gave_up(&self) {
        self.gave_up.cancelled().await
    }

    /// Stops every actor (shutdown).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.tasks.cancel();
        self.root.stop(Some("engine stopping".into()));
    }

    /// After [`Engine::stop`]: writes the moved ETAs still queued. False if
    /// that took longer than `within`.
    pub async fn flush_writes(&self, within: std::time::Duration) -> bool {
        let flush = self
            .eta_flush
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        match flush {
            Some(flush) => flush.flush(within).await,
            None => true,
        }
    }
}
