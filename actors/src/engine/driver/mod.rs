//! Drivers: one actor per driver seen online (`actor`), started and
//! watched by the `supervisor`, and reached from outside only through
//! [`Drivers`] (the directory) and [`DriverHandle`] (one driver's actor, as
//! its socket holds it). No caller names a driver message.

mod actor;
mod supervisor;

pub use actor::DriverStatus;
pub(crate) use actor::{Carried, DriverMessage};
pub(crate) use supervisor::{
    DriverSupervisor, DriverSupervisorArguments, DriverSupervisorMessage, OnRevived,
};

use crate::domain::geo_index::DriverEntry;
use crate::domain::input::LocationFix;
use crate::domain::model::{Driver, DriverId, DriverLocation, LatLon, OfferId, OrderId};
use crate::engine::geo_actor::{Change, Geo, PendingUpsert, PresenceListener};
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
/// Drivers of other nodes one node follows at once (cluster mode); the
/// positions of one more are dropped and counted.
pub const MAX_REMOTE_DRIVERS: usize = 20_000;

/// What a local driver actor tells the cluster of itself (its entry and
/// newest position), so that the owners of the regions around it can
/// dispatch to it. Must not block: it is called from the driver's actor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MirroredDriver {
    pub location: DriverLocation,
    pub available: bool,
    pub active_orders: u32,
    /// A new position (else only availability or load changed).
    pub position: bool,
}

/// A driver of another node, as its node published it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RemoteDriver {
    pub driver: MirroredDriver,
    /// Grows with every message its node publishes: an older or repeated
    /// one (heard on two subjects) is ignored.
    pub seq: u64,
}

/// The newest message taken of a remote driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RemoteSeen {
    seq: u64,
    /// Its newest message said it went offline (the geo actor was told).
    gone: bool,
}

impl RemoteSeen {
    fn new(seq: u64) -> RemoteSeen {
        RemoteSeen { seq, gone: false }
    }

    /// An entry (position, availability) in message `seq`: taken if newer.
    fn entry(&mut self, seq: u64) -> bool {
        if seq <= self.seq {
            return false;
        }
        *self = RemoteSeen::new(seq);
        true
    }

    /// "Gone" in message `seq`: taken if newer than every message taken,
    /// and not gone already.
    fn gone(&mut self, seq: u64) -> bool {
        if seq <= self.seq || self.gone {
            self.seq = self.seq.max(seq);
            return false;
        }
        *self = RemoteSeen { seq, gone: true };
        true
    }
}

/// Whether a remote driver's message was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteTaken {
    Taken,
    /// Older than one already taken, or the same.
    Stale,
    /// This node follows [`MAX_REMOTE_DRIVERS`] already.
    Full,
}

/// What became of an offer pushed to a driver's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Delivered,
    /// No socket to push to (here, or on its node).
    NoSocket,
    /// The driver holds another live offer (of another node, or of the
    /// same dispatcher run), or carries as many orders as it may: leave
    /// it out for this long, as one node's dispatcher leaves out a driver
    /// with an offer outstanding.
    Busy(Duration),
    /// Cluster mode: the driver's node did not answer (`gone`: nobody
    /// subscribes to the driver's commands any more, its node died or
    /// let it go). Leave it out a while instead of trying it every round.
    Unreachable {
        gone: bool,
    },
}

/// How long a dispatcher leaves out a driver whose node did not answer an
/// offer (its next position from a live node brings it back sooner when
/// it was gone: it leaves the index at once).
pub const UNREACHABLE_FOR: Duration = Duration::from_secs(10);

pub type PushFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Pushed> + Send>>;

/// Cluster mode: the seam between this node's drivers and those of other
/// nodes (`dispatchd::cluster::drivers` carries it over NATS). Nothing of
/// it may block: the publishing side is a bounded queue.
pub trait DriverBus: Send + Sync + 'static {
    /// A local driver's entry changed (position, availability, load).
    fn moved(&self, driver: MirroredDriver);
    /// A local driver went offline (no position within the presence TTL).
    fn gone(&self, driver_id: DriverId);
    /// Pushes an offer frame to a driver whose socket is on another node;
    /// resolves to what became of it there.
    fn push(&self, driver_id: DriverId, frame: Frame) -> PushFuture;
    /// Queues a frame for a driver on another node, without waiting.
    fn tell(&self, driver_id: DriverId, frame: Frame);
    /// This node's offer to a driver on another node ended without an
    /// `offer_result` (its assignment could not be written): its node
    /// stops holding it, and pushes `frame` (an error) to its socket.
    fn ended(&self, driver_id: DriverId, offer_id: OfferId, frame: Option<Frame>);
    /// The driver, on another node, carries an order of this node now: its
    /// node sends its positions to the order's region (`restaurant_at`).
    fn carry(&self, driver_id: DriverId, order_id: OrderId, restaurant_at: LatLon);
    /// It no longer does.
    fn release(&self, driver_id: DriverId, order_id: OrderId);
}

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
    geo: Geo,
    /// Cluster mode: set once, before any driver connects.
    bus: Arc<std::sync::OnceLock<Arc<dyn DriverBus>>>,
    /// Cluster mode: drivers of other nodes in this node's index, with the
    /// last message taken of each.
    remote: Arc<DashMap<DriverId, RemoteSeen>>,
    /// Cluster mode: each remote driver's next entry for the geo index,
    /// coalesced while the geo actor has not taken it (as a local
    /// driver's: its mailbox holds at most one message per driver).
    remote_pending: Arc<DashMap<DriverId, Arc<PendingUpsert>>>,
    /// Cluster mode: the orders of this node each driver carries, for the
    /// positions that come over the bus (a driver on another node).
    carried: Arc<DashMap<DriverId, std::collections::HashMap<OrderId, Carried>>>,
    /// The socket each driver connected here has now.
    connected: Arc<DashMap<DriverId, Arc<Outbox>>>,
    /// How many times this node's dispatcher started: carried with its
    /// offers, so that a driver's node tells a restart's offer (which
    /// replaces the void one held) from the next offer of the same run.
    dispatcher_starts: Arc<std::sync::atomic::AtomicU64>,
}

impl Drivers {
    pub(crate) fn new(
        supervisor: Slot<DriverSupervisorMessage>,
        store: Arc<dyn Store>,
        geo: Geo,
    ) -> Drivers {
        Drivers {
            registry: Arc::new(DashMap::new()),
            profiles: Arc::new(DashMap::new()),
            geo,
            bus: Arc::default(),
            remote: Arc::default(),
            remote_pending: Arc::default(),
            carried: Arc::default(),
            connected: Arc::default(),
            dispatcher_starts: Arc::default(),
            supervisor,
            pauses: Pauses {
                known: Arc::new(DashMap::new()),
                store: store.clone(),
            },
            store,
        }
    }

    /// Cluster mode: drivers reach other nodes through `bus`. Call it
    /// before any driver connects; a second call is refused (false).
    pub fn link(&self, bus: Arc<dyn DriverBus>) -> bool {
        self.bus.set(bus).is_ok()
    }

    /// What each driver actor mirrors itself to (cluster mode).
    pub(crate) fn bus(&self) -> Arc<std::sync::OnceLock<Arc<dyn DriverBus>>> {
        self.bus.clone()
    }

    /// Whether a profile of the driver is known here (cluster mode: a
    /// remote driver's is read from the store before its entry is taken).
    pub fn knows(&self, id: DriverId) -> bool {
        self.profiles.contains_key(&id)
    }

    /// Remembers a driver's profile (a driver of another node).
    pub fn learn(&self, profile: Driver) {
        self.profiles.entry(profile.id).or_insert(profile);
    }

    /// The driver's socket on this node, if it has one.
    pub fn connected_here(&self, id: DriverId) -> Option<Arc<Outbox>> {
        self.connected.get(&id).map(|outbox| outbox.clone())
    }

    /// Whether the driver's socket is on another node, as far as this one
    /// knows (its positions come over the bus).
    pub fn is_remote(&self, id: DriverId) -> bool {
        self.remote.contains_key(&id)
    }

    /// Cluster mode: a message of a driver of another node, for this
    /// node's geo index and, for a position, for the orders of this node
    /// that it carries (their watchers, ETA and arrivals, as if it were
    /// connected here).
    pub fn remote_located(&self, remote: RemoteDriver) -> RemoteTaken {
        let driver = remote.driver;
        let id = driver.location.driver_id;
        match self.remote.get_mut(&id) {
            Some(mut last) => {
                if !last.entry(remote.seq) {
                    return RemoteTaken::Stale;
                }
            }
            None => {
                // Only a position brings a driver into the index: an
                // availability change of one this node does not follow
                // would leave an id here that nothing ever sweeps.
                if !driver.position {
                    return RemoteTaken::Stale;
                }
                if self.remote.len() >= MAX_REMOTE_DRIVERS {
                    metrics::counter!(crate::metrics::CLUSTER_REMOTE_DRIVERS_REFUSED_TOTAL)
                        .increment(1);
                    return RemoteTaken::Full;
                }
                self.remote.insert(id, RemoteSeen::new(remote.seq));
                metrics::gauge!(crate::metrics::CLUSTER_REMOTE_DRIVERS)
                    .set(self.remote.len() as f64);
            }
        }
        let entry = DriverEntry {
            id,
            at: driver.location.at(),
            available: driver.available,
            active_orders: driver.active_orders,
        };
        let pending = self
            .remote_pending
            .entry(id)
            .or_insert_with(|| Arc::new(PendingUpsert::default()))
            .clone();
        let change = if driver.position {
            Change::Position
        } else {
            Change::Availability
        };
        if pending.put(entry, change) && !self.geo.remote(&pending) {
            // No geo actor to take it: do not leave the slot looking told.
            pending.take();
        }
        if driver.position
            && let Some(carried) = self.carried.get(&id)
        {
            for order in carried.values() {
                order.publish(driver.location, Instant::now());
            }
        }
        RemoteTaken::Taken
    }

    /// Cluster mode: a driver of another node went offline there (or out
    /// of this node's reach), in its node's message `seq`. Ignored when a
    /// newer message of the driver was taken already (it reconnected to
    /// another node, whose entry is newer than its old node's late
    /// "gone"), and told the geo actor once however many come.
    pub fn remote_gone(&self, id: DriverId, seq: u64) -> RemoteTaken {
        let taken = self
            .remote
            .get_mut(&id)
            .is_some_and(|mut last| last.gone(seq));
        if !taken {
            return RemoteTaken::Stale;
        }
        self.geo.remote_gone(id);
        RemoteTaken::Taken
    }

    /// Cluster mode: an order of another node this node's driver carries
    /// (it counts in the driver's load); renewed by its owner every few
    /// seconds, forgotten when not.
    /// Waits until the driver's actor took it, so that what the bus brings
    /// queues in its bounded subscription, not in the actor's mailbox.
    pub async fn carry_elsewhere(&self, id: DriverId, order_id: OrderId) {
        self.ask(id, |reply| DriverMessage::CarryElsewhere(order_id, reply))
            .await;
    }

    pub async fn release_elsewhere(&self, id: DriverId, order_id: OrderId) {
        self.ask(id, |reply| DriverMessage::ReleaseElsewhere(order_id, reply))
            .await;
    }

    /// Cluster mode: the orders of this node carried by drivers whose
    /// socket is not here (or not known here), with where each order's
    /// restaurant is, for their owner to announce again.
    pub fn carried_elsewhere(&self) -> Vec<(DriverId, OrderId, LatLon)> {
        self.carried
            .iter()
            .filter(|entry| !self.connected.contains_key(entry.key()))
            .flat_map(|entry| {
                let id = *entry.key();
                entry
                    .value()
                    .iter()
                    .map(|(order_id, carried)| (id, *order_id, carried.restaurant_at()))
                    .collect::<Vec<_>>()
            })
            .collect()
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
            connected: self.connected.clone(),
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
            .cast(DriverMessage::AttachSession(outbox.clone()))
            .is_err()
        {
            return Err(DriverError::Unavailable);
        }
        self.connected.insert(driver_id, outbox);
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

    /// Pushes an offer to the driver's socket, on this node or (cluster
    /// mode) on the node its positions come from.
    pub(crate) async fn offer(
        &self,
        id: DriverId,
        offer_id: OfferId,
        expires: Instant,
        frame: Frame,
    ) -> Pushed {
        match self
            .offer_here(
                id,
                None,
                self.dispatcher_starts(),
                offer_id,
                expires,
                frame.clone(),
            )
            .await
        {
            Pushed::NoSocket => {}
            pushed => return pushed,
        }
        match self.bus.get() {
            Some(bus) if self.is_remote(id) => {
                let pushed = bus.push(id, frame).await;
                if pushed == (Pushed::Unreachable { gone: true }) {
                    // Its node died (or dropped it): out of the index now,
                    // not when its presence runs out.
                    self.geo.remote_gone(id);
                }
                pushed
            }
            _ => Pushed::NoSocket,
        }
    }

    /// Pushes an offer of `origin`'s dispatcher (None: this node's), made
    /// after its `dispatcher_starts`-th start, to the driver's socket on
    /// this node, unless the driver holds another live offer or is at its
    /// order limit (one of the same node's dispatcher before a restart is
    /// replaced).
    pub async fn offer_here(
        &self,
        id: DriverId,
        origin: Option<String>,
        dispatcher_starts: u64,
        offer_id: OfferId,
        expires: Instant,
        frame: Frame,
    ) -> Pushed {
        self.ask(id, |reply| DriverMessage::Offer {
            origin,
            dispatcher_starts,
            offer_id,
            expires,
            frame,
            reply,
        })
        .await
        .unwrap_or(Pushed::NoSocket)
    }

    /// The driver's offer `offer_id` of `origin`'s dispatcher (None: this
    /// node's) ended (its result told): it may hold another; the orders
    /// it won (`assigned`) count in its load from now on.
    pub fn offer_closed_here(
        &self,
        id: DriverId,
        origin: Option<String>,
        offer_id: OfferId,
        assigned: Vec<OrderId>,
    ) {
        self.cast(
            id,
            DriverMessage::OfferClosed {
                origin,
                offer_id,
                assigned,
            },
        );
    }

    /// This node's offer ended without a result to tell (its assignment
    /// could not be written): the driver no longer holds it, here or on
    /// its node, and its socket gets `frame` (an error), wherever it is.
    pub(crate) fn offer_ended(&self, id: DriverId, offer_id: OfferId, frame: Option<Frame>) {
        if let Some(bus) = self.bus.get()
            && self.is_remote(id)
            && !self.connected.contains_key(&id)
        {
            bus.ended(id, offer_id, frame.clone());
        }
        if let Some(frame) = frame {
            self.tell_here(id, frame);
        }
        self.offer_closed_here(id, None, offer_id, Vec::new());
    }

    /// How many times this node's dispatcher has started.
    pub fn dispatcher_starts(&self) -> u64 {
        self.dispatcher_starts
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// This node's dispatcher started again: its earlier offers are void,
    /// and no driver here holds one any more.
    pub(crate) fn offers_void(&self) {
        self.dispatcher_starts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        for actor in self.registry.iter() {
            let _ = actor.cast(DriverMessage::OffersVoid);
        }
    }

    /// Pushes a frame to the driver's socket on this node and waits until
    /// its actor took it; false if it has none here (cluster mode: what
    /// the bus brings waits its turn, so a flood of it queues in the
    /// bounded subscription, not in the actor's mailbox).
    pub async fn push_here(&self, id: DriverId, frame: Frame) -> bool {
        self.ask(id, |reply| DriverMessage::Push(frame, Some(reply)))
            .await
            .unwrap_or(false)
    }

    /// Queues a frame for the driver's socket, if it has one, here or on
    /// its node.
    pub(crate) fn tell(&self, id: DriverId, frame: Frame) {
        if let Some(bus) = self.bus.get()
            && self.is_remote(id)
            && !self.connected.contains_key(&id)
        {
            bus.tell(id, frame.clone());
        }
        self.tell_here(id, frame);
    }

    /// Queues a frame for the driver's socket on this node, if it has one.
    pub fn tell_here(&self, id: DriverId, frame: Frame) {
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
        if let Some(bus) = self.bus.get() {
            // Its positions may come over the bus (its socket elsewhere, now
            // or after a reconnection): they reach the order from here.
            self.carried.entry(profile.id).or_default().insert(
                order_id,
                Carried {
                    order: order.clone(),
                    feed: feed.clone(),
                },
            );
            // Not connected here: its node, if any, hears of it now (and
            // again every few seconds, `carried_elsewhere`).
            if !self.connected.contains_key(&profile.id) {
                bus.carry(profile.id, order_id, feed.restaurant_at());
            }
        }
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
    pub(crate) fn release(&self, id: DriverId, order_id: OrderId) {
        self.cast(id, DriverMessage::Release(order_id));
        if let Some(bus) = self.bus.get() {
            let carried = self.carried.remove_if_mut(&id, |_, orders| {
                orders.remove(&order_id);
                orders.is_empty()
            });
            drop(carried);
            bus.release(id, order_id);
        }
    }

    /// Cluster mode: this node's order went to another node with its
    /// region, live. The driver keeps it in its load here, and its node
    /// (if another) hears no release: the new owner announces the order
    /// in a moment, and a release meanwhile would let the driver be
    /// offered another order it has no room for.
    pub(crate) fn handed_over(&self, id: DriverId, order_id: OrderId) {
        self.cast(id, DriverMessage::HandedOver(order_id));
        let carried = self.carried.remove_if_mut(&id, |_, orders| {
            orders.remove(&order_id);
            orders.is_empty()
        });
        drop(carried);
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
        self.remote_pending.remove(&driver_id);
        if self.remote.remove(&driver_id).is_some() {
            metrics::gauge!(crate::metrics::CLUSTER_REMOTE_DRIVERS).set(self.remote.len() as f64);
        }
    }
}

/// One driver's actor, as its socket holds it.
#[derive(Clone)]
pub struct DriverHandle {
    actor: ActorRef<DriverMessage>,
    driver_id: DriverId,
    pauses: Pauses,
    connected: Arc<DashMap<DriverId, Arc<Outbox>>>,
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
        self.connected
            .remove_if(&self.driver_id, |_, outbox| outbox.session_id == session_id);
        let _ = self.actor.cast(DriverMessage::DetachSession(session_id));
    }
}

#[cfg(test)]
mod tests {
    use super::RemoteSeen;

    #[test]
    fn a_late_gone_older_than_the_drivers_newest_entry_is_ignored() {
        // The driver's entry from its new node (seq 200, that node's
        // clock) was taken; its old node's "gone" (seq 100) comes late.
        let mut seen = RemoteSeen::new(200);
        assert!(!seen.gone(100), "a late gone took the driver out");
        assert_eq!(seen, RemoteSeen::new(200));
        // Older or repeated entries are ignored as before.
        assert!(!seen.entry(150));
        assert!(!seen.entry(200));
        // A newer gone is taken, once: a flood of them tells the geo
        // actor one time.
        assert!(seen.gone(300));
        assert!(!seen.gone(301));
        assert!(!seen.gone(302));
        // A gone older than it changes nothing; a newer entry brings the
        // driver back.
        assert!(!seen.entry(250));
        assert!(seen.entry(400));
        assert!(!seen.gone(399));
        assert!(seen.gone(401));
    }
}
