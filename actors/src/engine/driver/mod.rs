//! Drivers: one actor per driver seen online (`actor`), started and
//! watched by the `supervisor`, and reached from outside only through
//! [`Drivers`] (the directory) and [`DriverHandle`] (one driver's actor, as
//! its socket holds it). No caller names a driver message.

mod actor;
mod supervisor;

pub(crate) use actor::DriverMessage;
pub use actor::DriverStatus;
pub(crate) use supervisor::{
    DriverSupervisor, DriverSupervisorArguments, DriverSupervisorMessage, OnRevived,
};

use crate::domain::input::LocationFix;
use crate::domain::model::{Driver, DriverId, DriverLocation};
use crate::engine::geo_actor::PresenceListener;
use crate::engine::order::{OrderFeed, OrderRef};
use crate::engine::outbox::{Outbox, SessionId};
use crate::engine::slot::Slot;
use crate::store::{Store, StoreError};
use crate::wire::Frame;
use dashmap::DashMap;
use ractor::ActorRef;
use ractor::rpc::CallResult;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DRIVER_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a driver's actor could not be had.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("no such driver")]
    NotFound,
    /// Registered, but no admin approved the driver yet: no actor, so no
    /// position in the index and no offers.
    #[error("driver not approved yet")]
    Pending,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The driver supervisor is down or did not answer.
    #[error("driver actor unavailable")]
    Unavailable,
}

/// Which drivers asked to be paused: kept in the store, so that a restart
/// (of the process or of a driver's actor) does not offer orders to a
/// driver who said no more. Read once per driver, when its actor first
/// starts; every change is written through.
#[derive(Clone)]
pub(crate) struct Pauses {
    known: Arc<DashMap<DriverId, bool>>,
    store: Arc<dyn Store>,
}

impl Pauses {
    /// What a new actor of `id` starts with.
    pub(crate) fn get(&self, id: DriverId) -> bool {
        self.known.get(&id).is_some_and(|paused| *paused)
    }

    async fn load(&self, id: DriverId) {
        if self.known.contains_key(&id) {
            return;
        }
        match self.store.driver_paused(id).await {
            Ok(paused) => {
                self.known.entry(id).or_insert(paused);
            }
            Err(error) => {
                tracing::warn!(driver_id = id, %error, "Pause not read; the driver starts available")
            }
        }
    }

    /// Stored before the caller is answered.
    async fn set_durably(&self, id: DriverId, paused: bool) -> Result<(), StoreError> {
        self.store
            .set_driver_paused(id, paused, changed_us())
            .await?;
        self.known.insert(id, paused);
        Ok(())
    }

    /// From the socket, whose actor must not wait: stored in a task. The
    /// time of the change orders writes that land out of order.
    fn set_in_background(&self, id: DriverId, paused: bool) {
        self.known.insert(id, paused);
        let store = self.store.clone();
        let changed = changed_us();
        tokio::spawn(async move {
            if let Err(error) = store.set_driver_paused(id, paused, changed).await {
                tracing::warn!(driver_id = id, %error, "Pause not stored; a restart forgets it");
            }
        });
    }
}

fn changed_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Every driver actor, by driver id, and what the dispatcher needs to know
/// of each without asking it (its profile).
#[derive(Clone)]
pub struct Drivers {
    registry: Arc<DashMap<DriverId, ActorRef<DriverMessage>>>,
    profiles: Arc<DashMap<DriverId, Driver>>,
    supervisor: Slot<DriverSupervisorMessage>,
    store: Arc<dyn Store>,
    pauses: Pauses,
}

impl Drivers {
    pub(crate) fn new(supervisor: Slot<DriverSupervisorMessage>, store: Arc<dyn Store>) -> Drivers {
        Drivers {
            registry: Arc::new(DashMap::new()),
            profiles: Arc::new(DashMap::new()),
            supervisor,
            pauses: Pauses {
                known: Arc::new(DashMap::new()),
                store: store.clone(),
            },
            store,
        }
    }

    /// What the driver supervisor starts each actor with.
    pub(crate) fn pauses(&self) -> Pauses {
        self.pauses.clone()
    }

    /// The map the supervisor keeps current.
    pub(crate) fn registry(&self) -> Arc<DashMap<DriverId, ActorRef<DriverMessage>>> {
        self.registry.clone()
    }

    fn get(&self, id: DriverId) -> Option<ActorRef<DriverMessage>> {
        self.registry.get(&id).map(|a| a.clone())
    }

    pub(crate) fn profile(&self, id: DriverId) -> Option<Driver> {
        self.profiles.get(&id).map(|p| p.clone())
    }

    /// The driver's actor, started if it is not running.
    pub(crate) async fn ensure(&self, profile: Driver) -> Option<ActorRef<DriverMessage>> {
        if let Some(actor) = self.get(profile.id) {
            return Some(actor);
        }
        self.pauses.load(profile.id).await;
        self.profiles.insert(profile.id, profile.clone());
        self.supervisor
            .call(
                |reply| DriverSupervisorMessage::Start(Box::new(profile), reply),
                DRIVER_CALL_TIMEOUT,
            )
            .await
            .flatten()
    }

    /// The driver's actor, started on first use (its profile read from the
    /// store the first time, and only for an approved driver).
    pub async fn open(&self, driver_id: DriverId) -> Result<DriverHandle, DriverError> {
        let profile = match self.profile(driver_id) {
            Some(profile) => profile,
            None => {
                match self.store.driver_approved(driver_id).await? {
                    None => return Err(DriverError::NotFound),
                    Some(false) => return Err(DriverError::Pending),
                    Some(true) => {}
                }
                self.store
                    .driver(driver_id)
                    .await?
                    .ok_or(DriverError::NotFound)?
            }
        };
        let actor = self.ensure(profile).await.ok_or(DriverError::Unavailable)?;
        Ok(DriverHandle {
            actor,
            driver_id,
            pauses: self.pauses.clone(),
        })
    }

    /// Opens the driver's actor and gives it this socket: offers and the
    /// updates of its orders go there, and a newer socket of the same
    /// driver replaces it.
    pub async fn attach(
        &self,
        driver_id: DriverId,
        outbox: Arc<Outbox>,
    ) -> Result<DriverHandle, DriverError> {
        let driver = self.open(driver_id).await?;
        if driver
            .actor
            .cast(DriverMessage::AttachSession(outbox))
            .is_err()
        {
            return Err(DriverError::Unavailable);
        }
        Ok(driver)
    }

    fn cast(&self, id: DriverId, message: DriverMessage) {
        if let Some(actor) = self.get(id) {
            let _ = actor.cast(message);
        }
    }

    async fn ask<R: Send + 'static>(
        &self,
        id: DriverId,
        message: impl FnOnce(ractor::RpcReplyPort<R>) -> DriverMessage,
    ) -> Option<R> {
        let actor = self.get(id)?;
        match actor.call(message, Some(DRIVER_CALL_TIMEOUT)).await {
            Ok(CallResult::Success(answer)) => Some(answer),
            _ => None,
        }
    }

    pub async fn status(&self, id: DriverId) -> Option<DriverStatus> {
        self.ask(id, DriverMessage::Status).await
    }

    /// The driver's newest position, if its actor runs and has one.
    pub async fn location(&self, id: DriverId) -> Option<DriverLocation> {
        self.status(id).await.and_then(|s| s.location)
    }

    /// Pause or resume offers, stored first; the setting now in force. A
    /// driver without a running actor gets it when one starts.
    pub async fn set_availability(
        &self,
        id: DriverId,
        available: bool,
    ) -> Result<bool, DriverError> {
        self.pauses.set_durably(id, !available).await?;
        if self.get(id).is_none() {
            return Ok(available);
        }
        self.ask(id, |reply| {
            DriverMessage::SetAvailability(available, Some(reply))
        })
        .await
        .ok_or(DriverError::Unavailable)
    }

    /// Pushes a frame to the driver's socket; false if it has none.
    pub(crate) async fn push(&self, id: DriverId, frame: Frame) -> bool {
        self.ask(id, |reply| DriverMessage::Push(frame, Some(reply)))
            .await
            .unwrap_or(false)
    }

    /// Queues a frame for the driver's socket, if it has one.
    pub(crate) fn tell(&self, id: DriverId, frame: Frame) {
        self.cast(id, DriverMessage::Push(frame, None));
    }

    /// The driver carries this order now (assigned, or recovered so).
    pub(crate) async fn carry(
        &self,
        profile: Driver,
        order: OrderRef,
        feed: Arc<OrderFeed>,
    ) -> bool {
        let order_id = order.order_id();
        match self.ensure(profile).await {
            Some(actor) => actor
                .cast(DriverMessage::Carry {
                    order_id,
                    order,
                    feed,
                })
                .is_ok(),
            None => false,
        }
    }

    /// The driver no longer carries this order (delivered, cancelled, unassigned).
    pub(crate) fn release(&self, id: DriverId, order_id: crate::domain::model::OrderId) {
        self.cast(id, DriverMessage::Release(order_id));
    }

    /// After the geo actor restarted: every driver gives it its entry again.
    pub(crate) fn rejoin_all(&self) {
        for actor in self.registry.iter() {
            let _ = actor.cast(DriverMessage::Rejoin);
        }
    }
}

impl PresenceListener for Drivers {
    fn went_stale(&self, driver_id: DriverId) {
        self.cast(driver_id, DriverMessage::WentStale);
    }
}

/// One driver's actor, as its socket holds it.
#[derive(Clone)]
pub struct DriverHandle {
    actor: ActorRef<DriverMessage>,
    driver_id: DriverId,
    pauses: Pauses,
}

impl DriverHandle {
    pub fn driver_id(&self) -> DriverId {
        self.driver_id
    }

    /// A validated position. False when the actor is gone (it failed and
    /// was replaced): the caller closes the socket so the app reconnects.
    pub fn located(&self, fix: LocationFix, received_at: Instant) -> bool {
        self.actor
            .cast(DriverMessage::Located { fix, received_at })
            .is_ok()
    }

    /// Pause or resume offers, without waiting; false when the actor is gone.
    pub(crate) fn set_availability(&self, available: bool) -> bool {
        self.pauses.set_in_background(self.driver_id, !available);
        self.actor
            .cast(DriverMessage::SetAvailability(available, None))
            .is_ok()
    }

    /// The socket closed.
    pub(crate) fn detach(&self, session_id: SessionId) {
        let _ = self.actor.cast(DriverMessage::DetachSession(session_id));
    }
}
