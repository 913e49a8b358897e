//! Orders: one actor per non-terminal order, the only writer of that order
//! (`actor`); their `supervisor`; each live order's audience, shared
//! with the actor of the driver carrying it ([`feed`]); and [`Orders`], the
//! directory every caller goes through. No caller names an order message.

mod actor;
pub mod bus;
pub mod feed;
mod supervisor;

pub use feed::OrderFeed;
pub(crate) use supervisor::{OrderSupervisor, OrderSupervisorArguments, OrderSupervisorMessage};

use crate::domain::lifecycle::{self, Action, Refusal};
use crate::domain::model::*;
use crate::engine::eta_writer::EtaWrites;
use crate::engine::outbox::{Outbox, SessionId};
use crate::engine::slot::Slot;
use crate::store::{NewOrderEvent, Store, StoreError};
use actor::OrderMessage;
use dashmap::DashMap;
use feed::MovedEta;
use ractor::rpc::CallResult;
use ractor::{ActorCell, ActorRef};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

/// Cluster mode: the watchers being moved between an order's local feed
/// and the bus, as (order, session). A session that unsubscribes while it
/// is moved leaves this set, and the move then drops it instead of
/// delivering it. Every move and every unsubscribe takes this lock first,
/// then the feed's or the bus's own.
pub(crate) type Handoff = Arc<Mutex<HashSet<(OrderId, SessionId)>>>;

fn lock_handoff(handoff: &Handoff) -> std::sync::MutexGuard<'_, HashSet<(OrderId, SessionId)>> {
    handoff
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Cluster mode: what a released order actor does with its watchers as
/// it stops: takes them off its feed (recording each in `handoff`, under
/// its lock) and hands them to `follow`, which subscribes them on the bus.
pub(crate) struct ReleasedWatchers {
    pub handoff: Handoff,
    pub follow: Box<dyn FnOnce(Vec<Arc<Outbox>>) + Send>,
}

/// Why a watcher could not follow an order over the bus: the error
/// frame's code and message.
pub type FollowRefused = (&'static str, String);

/// How long a caller waits for an order actor. Longer than any store write
/// may take (the pool's acquire timeout plus the statement), so that a
/// timed-out caller never misses a write that later commits.
pub const ORDER_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A committed change, as listeners hear of it.
pub struct OrderChanged<'a> {
    pub order: &'a Order,
    pub event: &'a NewOrderEvent,
    pub restaurant: &'a RestaurantInfo,
    pub driver: Option<&'a Driver>,
    pub order_ref: &'a OrderRef,
    /// Where the carrying driver publishes its positions.
    pub feed: &'a Arc<OrderFeed>,
}

/// Hears of every durable change to an order, after it committed, and of
/// every order actor that starts (new, recovered or revived). Implementations
/// must not block: they cast to other actors.
pub trait OrderListener: Send + Sync + 'static {
    fn order_changed(&self, change: OrderChanged<'_>);
    fn order_started(&self, _started: OrderChanged<'_>) {}
    /// The order's actor stops here although the order is live: its
    /// region went to another node (cluster mode).
    fn order_released(&self, _order: &Order) {}
}

/// Which orders this node runs: in cluster mode those of the regions it
/// holds (`dispatchd::cluster` implements it); every order without one.
pub trait OrderPartition: Send + Sync + 'static {
    /// Ok when orders of a restaurant at `at` are this node's to run now;
    /// [`StoreError::NotServed`], naming the region and its holder, if not.
    fn check(&self, at: LatLon) -> Result<(), StoreError>;
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

/// The nearest available driver to an order's restaurant, as the
/// dispatcher last saw it: what a waiting order's ETA counts from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NearestDriver {
    pub at: LatLon,
    pub vehicle: VehicleType,
}

/// One order's actor, as the actors that work with it (its driver's, the
/// dispatcher) hold it.
#[derive(Clone)]
pub struct OrderRef {
    actor: ActorRef<OrderMessage>,
    order_id: OrderId,
}

impl OrderRef {
    fn new(actor: ActorRef<OrderMessage>, order_id: OrderId) -> OrderRef {
        OrderRef { actor, order_id }
    }

    pub fn order_id(&self) -> OrderId {
        self.order_id
    }

    fn same_actor(&self, cell: &ActorCell) -> bool {
        self.actor.get_id() == cell.get_id()
    }

    /// A position moved the estimate past the push threshold.
    pub(crate) fn eta_moved(&self, moved: MovedEta) {
        let _ = self.actor.cast(OrderMessage::EtaMoved(moved));
    }

    /// The carrying driver reached a geofence of the trip's next stop.
    pub(crate) fn arrived(&self, arrival: crate::domain::arrival::Arrival) {
        let _ = self.actor.cast(OrderMessage::Arrived(arrival));
    }

    /// The carrying driver's own socket, subscribed without asking.
    pub(crate) fn attach_driver_session(&self, outbox: Arc<Outbox>) {
        let _ = self.actor.cast(OrderMessage::AttachDriverSession(outbox));
    }

    fn refresh_eta(&self) {
        let _ = self.actor.cast(OrderMessage::RefreshEta);
    }

    fn reannounce(&self, audience: Audience) {
        let _ = self.actor.cast(OrderMessage::Reannounce(audience));
    }

    /// Cluster mode: watchers that followed the order over the bus join
    /// its feed, each with a snapshot, unless it left meanwhile.
    fn adopt_watchers(&self, outboxes: Vec<Arc<Outbox>>, handoff: Handoff) {
        let _ = self
            .actor
            .cast(OrderMessage::AdoptWatchers(outboxes, handoff));
    }
}

/// Who a live order tells of itself again, after that side restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Audience {
    /// The dispatcher: orders waiting for a driver are opened again.
    Dispatcher,
    /// The driver actors: orders with a driver are carried again.
    Driver,
}

/// A running order actor and the feed it shares with its driver's actor.
#[derive(Clone)]
pub(crate) struct OrderEntry {
    order: OrderRef,
    feed: Arc<OrderFeed>,
    /// Where its restaurant is: which region the order belongs to.
    restaurant_at: LatLon,
}

/// What starting an order actor needs besides the shared handles.
pub(crate) struct LiveOrder {
    order: Order,
    restaurant: RestaurantInfo,
    driver: Option<Driver>,
}

/// Why a subscription was not made.
#[derive(Debug, PartialEq, Eq)]
pub enum SubscribeRefused {
    /// The caller may not see it, or it does not exist.
    NotVisible,
    /// The order has no live actor (it is terminal): answer from the store.
    NotLive,
}

/// The handle on every live order: find, start, command, watch.
#[derive(Clone)]
pub struct Orders {
    registry: Arc<DashMap<OrderId, OrderEntry>>,
    orphans: Arc<DashMap<OrderId, Arc<OrderFeed>>>,
    restaurants: Arc<DashMap<RestaurantId, RestaurantInfo>>,
    supervisor: Slot<OrderSupervisorMessage>,
    store: Arc<dyn Store>,
    listener: Arc<dyn OrderListener>,
    eta_writes: EtaWrites,
    /// Set once, before recovery, in cluster mode.
    partition: Arc<std::sync::OnceLock<Arc<dyn OrderPartition>>>,
    /// Cluster mode: where feeds publish for other nodes' watchers, and
    /// where this node's watchers of other nodes' orders are registered.
    bus: Arc<std::sync::OnceLock<Arc<dyn bus::OrderBus>>>,
    /// Cluster mode: watchers on their way between a feed and the bus.
    handoff: Handoff,
}

impl Orders {
    pub(crate) fn new(
        supervisor: Slot<OrderSupervisorMessage>,
        store: Arc<dyn Store>,
        listener: Arc<dyn OrderListener>,
        eta_writes: EtaWrites,
    ) -> Orders {
        Orders {
            eta_writes,
            registry: Arc::new(DashMap::new()),
            orphans: Arc::new(DashMap::new()),
            restaurants: Arc::new(DashMap::new()),
            supervisor,
            store,
            listener,
            partition: Arc::default(),
            bus: Arc::default(),
            handoff: Arc::default(),
        }
    }

    /// Cluster mode: every feed started from now on publishes to `bus`,
    /// and watchers of orders run elsewhere go through it. Call it before
    /// any order actor starts; a second call is refused (false).
    pub fn publish_to(&self, bus: Arc<dyn bus::OrderBus>) -> bool {
        self.bus.set(bus).is_ok()
    }

    /// The cluster's bus for orders run on other nodes, if any.
    pub fn bus(&self) -> Option<Arc<dyn bus::OrderBus>> {
        self.bus.get().cloned()
    }

    /// Cluster mode: from now on only the orders `partition` says are
    /// this node's get an actor here. Call it before `recover`; a second
    /// call is refused (false).
    pub fn partition_by(&self, partition: Arc<dyn OrderPartition>) -> bool {
        self.partition.set(partition).is_ok()
    }

    /// Whether orders of the restaurant at `at` are run on this node.
    fn check_served(&self, at: LatLon) -> Result<(), StoreError> {
        match self.partition.get() {
            Some(partition) => partition.check(at),
            None => Ok(()),
        }
    }

    /// Whether `order` is run on this node (cluster mode: its region is
    /// this node's); [`StoreError::NotServed`] naming the holder if not.
    pub async fn served_here(&self, order: &Order) -> Result<(), StoreError> {
        if self.partition.get().is_none() {
            return Ok(());
        }
        let restaurant = self.restaurant_info(order.restaurant_id).await?;
        self.check_served(restaurant.location)
    }

    /// Cluster mode: stops the actors of the orders this node no longer
    /// runs (their region went elsewhere); each withdraws from dispatch
    /// and lets its driver go first. Returns how many were told to stop.
    ///
    /// Their local watchers keep following them, over the bus: each is
    /// subscribed to the order's subject, then gets a snapshot read from
    /// the store (the record the new owner loads from), and from then on
    /// what the new owner publishes.
    pub fn release_unserved(&self) -> usize {
        let unserved: Vec<OrderEntry> = self
            .registry
            .iter()
            .filter(|entry| self.check_served(entry.restaurant_at).is_err())
            .map(|entry| entry.clone())
            .collect();
        for entry in &unserved {
            let order_id = entry.order.order_id;
            // Taken by the actor as it stops, after every message before
            // it (a subscription just made included): a subscribe after
            // that finds no actor and follows the order over the bus.
            let watchers = self.bus.get().map(|bus| {
                let orders = self.clone();
                let bus = bus.clone();
                ReleasedWatchers {
                    handoff: self.handoff.clone(),
                    follow: Box::new(move |moved: Vec<Arc<Outbox>>| {
                        metrics::counter!(crate::metrics::CLUSTER_WATCHERS_MOVED_TOTAL, "to" => "bus")
                            .increment(moved.len() as u64);
                        tokio::spawn(async move {
                            let failed = orders.follow_remote(bus, order_id, moved, true, true).await;
                            for (outbox, (code, message)) in failed {
                                outbox.push(crate::wire::error_frame(
                                    code,
                                    &format!(
                                        "order {order_id} went to another node and cannot be followed from here: {message}; subscribe again"
                                    ),
                                    None,
                                ));
                            }
                        });
                    }),
                }
            });
            let _ = entry.order.actor.cast(OrderMessage::Release(watchers));
        }
        unserved.len()
    }

    /// Cluster mode: follows `order_id`, which another node runs, for
    /// `outboxes` over the bus. Each is subscribed first; then the order is
    /// read from the store (the record every node shares), so the snapshot
    /// shows every change committed before the first frame this node can
    /// hear; frames heard meanwhile are held and follow it. `tracked`:
    /// these watchers are in the handoff set (moved off this node's feed
    /// of the order, or subscribing: [`Orders::expect_follow`]), and one
    /// that unsubscribed meanwhile is dropped. Without `positions` (the
    /// carrying driver's own socket) they hear no `driver_location` frames
    /// ([`bus::OrderBus::watch`]). Returns those that could not follow it,
    /// with why.
    pub async fn follow_remote(
        &self,
        bus: Arc<dyn bus::OrderBus>,
        order_id: OrderId,
        outboxes: Vec<Arc<Outbox>>,
        tracked: bool,
        positions: bool,
    ) -> Vec<(Arc<Outbox>, FollowRefused)> {
        let refused = |error: bus::WatchRefused| match error {
            bus::WatchRefused::Full(_) => ("RATE_LIMITED", error.to_string()),
            bus::WatchRefused::Unavailable(_) => ("ENGINE_UNAVAILABLE", error.to_string()),
        };
        let mut failed = Vec::new();
        let mut watching = Vec::new();
        for outbox in outboxes {
            let session_id = outbox.session_id;
            let watched = bus.watch(order_id, outbox.clone(), positions).await;
            if tracked && !lock_handoff(&self.handoff).remove(&(order_id, session_id)) {
                // It unsubscribed meanwhile.
                if watched.is_ok() {
                    bus.unwatch(order_id, session_id);
                }
                continue;
            }
            match watched {
                Ok(()) => watching.push(outbox),
                Err(error) => failed.push((outbox, refused(error))),
            }
        }
        if watching.is_empty() {
            return failed;
        }
        let order = match self.store.order(order_id).await {
            Ok(Some(order)) => order,
            Ok(None) | Err(_) => {
                for outbox in watching {
                    bus.unwatch(order_id, outbox.session_id);
                    let why = ("STORE_UNAVAILABLE", "the store is unavailable".to_string());
                    failed.push((outbox, why));
                }
                return failed;
            }
        };
        let driver = match order.driver_id {
            Some(id) => self.store.driver(id).await.ok().flatten(),
            None => None,
        };
        let snapshot = crate::wire::ServerMessage::Snapshot {
            order_id,
            order: &order,
            driver: driver.as_ref(),
            driver_location: None,
            eta: None,
        }
        .encode();
        for outbox in &watching {
            bus.ready(order_id, outbox.session_id, snapshot.clone(), order.version);
            // Nothing more will be published of it.
            if order.status.is_terminal() {
                bus.unwatch(order_id, outbox.session_id);
            }
        }
        // Started here meanwhile (this node claimed its region): its
        // watchers move on to its feed.
        if let Some(entry) = self.registry.get(&order_id).map(|e| e.clone()) {
            self.adopt_from_bus(&entry);
        }
        failed
    }

    /// Cluster mode: a session's subscribe to `order_id` is answered off
    /// the session (a store read, maybe a subscription on the bus); an
    /// unsubscribe meanwhile cancels it, so that the subscription is not
    /// made after the session left. Nothing without a bus.
    pub fn expect_follow(&self, order_id: OrderId, session_id: SessionId) {
        if self.bus.get().is_some() {
            lock_handoff(&self.handoff).insert((order_id, session_id));
        }
    }

    /// The subscribe [`Orders::expect_follow`] announced was answered
    /// without the bus.
    pub fn forget_follow(&self, order_id: OrderId, session_id: SessionId) {
        if self.bus.get().is_some() {
            lock_handoff(&self.handoff).remove(&(order_id, session_id));
        }
    }

    /// Cluster mode: this node runs `entry`'s order now; the local
    /// watchers that followed it over the bus move to its feed (each gets
    /// a snapshot from its actor) and the bus subscription ends.
    fn adopt_from_bus(&self, entry: &OrderEntry) {
        let Some(bus) = self.bus.get() else {
            return;
        };
        let order_id = entry.order.order_id;
        let outboxes = {
            let mut moving = lock_handoff(&self.handoff);
            let outboxes = bus.take_watchers(order_id);
            for outbox in &outboxes {
                moving.insert((order_id, outbox.session_id));
            }
            outboxes
        };
        if outboxes.is_empty() {
            return;
        }
        metrics::counter!(crate::metrics::CLUSTER_WATCHERS_MOVED_TOTAL, "to" => "local")
            .increment(outboxes.len() as u64);
        entry.order.adopt_watchers(outboxes, self.handoff.clone());
    }

    /// What the order supervisor is started with.
    pub(crate) fn supervisor_arguments(
        &self,
        config: Arc<crate::engine::config::EngineConfig>,
    ) -> OrderSupervisorArguments {
        let orders = self.clone();
        OrderSupervisorArguments {
            registry: self.registry.clone(),
            orphans: self.orphans.clone(),
            store: self.store.clone(),
            listener: self.listener.clone(),
            config,
            eta_writes: self.eta_writes.clone(),
            bus: self.bus.clone(),
            revive: Arc::new(move |order_id| {
                let orders = orders.clone();
                tokio::spawn(async move {
                    match orders.store.order(order_id).await {
                        Ok(Some(order)) => {
                            if let Err(error) = orders.spawn(order).await {
                                tracing::warn!(order_id, %error, "Order not revived; the next command will");
                            }
                        }
                        Ok(None) => {}
                        Err(error) => {
                            tracing::warn!(order_id, %error, "Order not revived; the next command will")
                        }
                    }
                });
            }),
        }
    }

    /// Starts an actor for every non-terminal order in the store that has
    /// none (at start, after the order supervisor restarted, and in cluster
    /// mode whenever this node claims regions: only those it runs).
    /// Returns how many it started.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let active = self.store.active_orders().await?;
        self.start_all(active).await
    }

    /// Cluster mode: starts an actor for every non-terminal order of the
    /// restaurants inside `areas` (the regions this node just claimed)
    /// that has none, reading only those orders. Returns how many it read
    /// and how many it started.
    pub async fn recover_within(
        &self,
        areas: &[crate::store::GeoBox],
    ) -> Result<(usize, usize), StoreError> {
        if areas.is_empty() {
            return Ok((0, 0));
        }
        let active = self.store.active_orders_within(areas).await?;
        let read = active.len();
        Ok((read, self.start_all(active).await?))
    }

    async fn start_all(&self, active: Vec<Order>) -> Result<usize, StoreError> {
        let mut count = 0;
        for order in active {
            if self.registry.contains_key(&order.id) {
                continue;
            }
            match self.spawn(order).await {
                Ok(_) => count += 1,
                Err(StoreError::NotServed { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(count)
    }

    /// Every live order tells `audience` of itself again.
    pub(crate) fn reannounce(&self, audience: Audience) {
        for entry in self.registry.iter() {
            entry.order.reannounce(audience);
        }
    }

    /// Every live order without a driver recomputes its ETA (a periodic
    /// chore of the engine; orders with a driver follow its positions).
    pub(crate) fn refresh_waiting_etas(&self) {
        for entry in self.registry.iter() {
            if entry.feed.driver_id().is_none() {
                entry.order.refresh_eta();
            }
        }
    }

    /// The dispatcher's sighting of the nearest available driver to a
    /// waiting order.
    pub(crate) fn driver_near(&self, order_id: OrderId, nearest: Option<NearestDriver>) {
        if let Some(actor) = self.actor(order_id) {
            let _ = actor.cast(OrderMessage::DriverNear(nearest));
        }
    }

    /// The drivers the store remembers as excluded from an order. A store
    /// error is logged and answers none: dispatch goes on rather than stall.
    pub(crate) async fn excluded_drivers(&self, order_id: OrderId) -> Vec<DriverId> {
        match self.store.excluded_drivers(order_id).await {
            Ok(drivers) => drivers,
            Err(error) => {
                tracing::warn!(order_id, %error, "Exclusions not read; dispatching without them");
                Vec::new()
            }
        }
    }

    /// Records, in the background, that `driver_id` is not to be offered
    /// the order again (one small write per decline or expiry).
    pub(crate) fn exclude_driver(
        &self,
        order_id: OrderId,
        driver_id: DriverId,
        reason: crate::store::ExclusionReason,
    ) {
        let store = self.store.clone();
        tokio::spawn(
            async move {
                if let Err(error) = store.exclude_driver(order_id, driver_id, reason, now()).await {
                    tracing::warn!(order_id, driver_id, %error, "Exclusion not stored; a restart forgets it");
                }
            }
            .in_current_span(),
        );
    }

    /// The orders `driver_id` carries tell it so again (its actor was
    /// started afresh after a failure).
    pub(crate) fn reannounce_carried_by(&self, driver_id: DriverId) {
        for entry in self.registry.iter() {
            if entry.feed.driver_id() == Some(driver_id) {
                entry.order.reannounce(Audience::Driver);
            }
        }
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
    async fn spawn(&self, order: Order) -> Result<Option<OrderEntry>, StoreError> {
        let restaurant = self.restaurant_info(order.restaurant_id).await?;
        self.check_served(restaurant.location)?;
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
        let started = self
            .supervisor
            .call(
                |reply| OrderSupervisorMessage::Start(Box::new(live), reply),
                ORDER_CALL_TIMEOUT,
            )
            .await;
        match started {
            Some(entry) => {
                if let Some(entry) = &entry {
                    self.adopt_from_bus(entry);
                }
                Ok(entry)
            }
            None => {
                tracing::error!(order_id, "Order supervisor did not answer");
                Ok(None)
            }
        }
    }

    /// Starts the actor of a just-placed order and tells the listeners (the
    /// restaurant's tablets hear of it from here).
    pub async fn placed(&self, order: &Order) -> Result<(), StoreError> {
        let Some(live) = self.spawn(order.clone()).await? else {
            return Ok(());
        };
        let restaurant = self.restaurant_info(order.restaurant_id).await?;
        self.listener.order_changed(OrderChanged {
            order,
            event: &NewOrderEvent::placed(order),
            restaurant: &restaurant,
            driver: None,
            order_ref: &live.order,
            feed: &live.feed,
        });
        Ok(())
    }

    fn actor(&self, order_id: OrderId) -> Option<ActorRef<OrderMessage>> {
        self.registry
            .get(&order_id)
            .map(|live| live.order.actor.clone())
    }

    /// Whether the order has a running actor.
    pub fn is_live(&self, order_id: OrderId) -> bool {
        self.registry.contains_key(&order_id)
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
        let Some(bus) = self.bus.get() else {
            if let Some(actor) = self.actor(order_id) {
                let _ = actor.cast(OrderMessage::Unsubscribe(session_id));
            }
            return;
        };
        // Cluster mode: the watcher may be on the order's feed, on the bus
        // (an order run elsewhere), or moving between them; under the
        // handoff lock, so that no move puts it back after this.
        let feed = self.registry.get(&order_id).map(|entry| entry.feed.clone());
        let mut moving = lock_handoff(&self.handoff);
        moving.remove(&(order_id, session_id));
        if let Some(feed) = feed {
            feed.unsubscribe(session_id);
        }
        bus.unwatch(order_id, session_id);
    }

    /// Assigns `driver` to the order (an accepted offer).
    pub(crate) async fn assign(
        &self,
        order_id: OrderId,
        driver: Driver,
        offer_id: OfferId,
        drops_before: Vec<(OrderId, LatLon)>,
    ) -> Result<Order, CommandError> {
        let actor = self.actor(order_id).ok_or(Refusal::NotVisible)?;
        match actor
            .call(
                |reply| OrderMessage::Assign {
                    driver,
                    offer_id,
                    drops_before,
                    span: tracing::Span::current(),
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
                    |reply| {
                        OrderMessage::Transition(command.clone(), tracing::Span::current(), reply)
                    },
                    Some(ORDER_CALL_TIMEOUT),
                )
                .await;
            match asked {
                Ok(CallResult::Success(result)) => return result,
                Ok(CallResult::Timeout) => return Err(CommandError::Unavailable),
                Ok(CallResult::SenderError) | Err(_) => {
                    let cell = actor.get_cell();
                    self.registry
                        .remove_if(&order_id, |_, live| live.order.same_actor(&cell));
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
            .map(|live| live.order.actor)
            .ok_or(CommandError::Unavailable)
    }
}
