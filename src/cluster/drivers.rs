//! Drivers connected to any node (DESIGN.md "Cluster", subjects): a
//! driver's socket stays on the node it reached, and the owners of the
//! regions around it dispatch to it over NATS.
//!
//! - **`<bucket>.geo.<region>`**: each local driver's entry (position,
//!   availability, load) and its going offline, for the owner of the
//!   region it is in and of the regions within the dispatch radius
//!   (`dispatch.max_radius_km`) of it, and of the regions of the orders of
//!   other nodes it carries. Published once per owning node (on one of its
//!   regions' subjects), never for a region this node serves itself. An
//!   owner subscribes to the subjects of the regions it holds, puts what it
//!   hears in its geo index as remote entries (they expire like local ones
//!   when positions stop) and, for a position of a driver carrying one of
//!   its orders, publishes it to that order's feed exactly as a local
//!   driver's (watchers, ETA, arrivals).
//! - **`<bucket>.driver.<id>.cmd`**: what an owner's dispatcher sends a
//!   driver of another node: offers (request/reply: whether the frame
//!   reached the socket, or `busy` while it holds another live offer), offer
//!   results and errors, an offer's end without a result (its assignment
//!   not written), and which of the owner's orders it carries (announced
//!   again every few seconds). The driver's node subscribes while it
//!   publishes the driver's entry.
//! - An answer to a relayed offer, given on the driver's node (socket or
//!   REST), goes back to the offer's region's command subject
//!   (`commands.rs`), and the owner's dispatcher answers it as for its own
//!   drivers.
//!
//! Bounded: one queue ([`QUEUE`]) and one publisher task for everything
//! this node publishes (full: dropped and counted); at most
//! [`MAX_LINKED`] driver subscriptions, [`MAX_RELAYED`] remembered offers,
//! [`actors::engine::driver::MAX_REMOTE_DRIVERS`] remote drivers.

use super::Cluster;
use super::region::Region;
use actors::domain::model::{Driver, DriverId, DriverLocation, LatLon, OfferId, OrderId};
use actors::engine::dispatcher::{DispatchHandle, OfferError, RemoteOffers, RespondFuture};
use actors::engine::driver::{
    DriverBus, Drivers, MirroredDriver, PushFuture, Pushed, RemoteDriver,
};
use actors::engine::order::Orders;
use actors::engine::outbox::SessionId;
use actors::metrics as m;
use actors::store::Store;
use actors::wire::Frame;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Messages waiting for the publisher task; past it they are dropped.
const QUEUE: usize = 16_384;
/// Room in the queue that positions may not take, so that commands (an
/// offer's result, a carried order) and departures are not crowded out.
const KEPT_FOR_COMMANDS: usize = QUEUE / 4;
/// Local drivers subscribed to their command subject at once.
pub const MAX_LINKED: usize = 20_000;
/// Offers of other nodes remembered for their answers (as long as the
/// dispatcher remembers its own closed offers).
pub const MAX_RELAYED: usize = 10_000;
/// How long the way back of a relayed offer's answer is remembered (a late
/// answer still reaches the offer's node, which says what became of it).
/// The driver holds the offer itself no longer than `offer_timeout`.
const RELAYED_FOR: Duration = Duration::from_secs(600);
/// How long an offer may take to reach the driver's socket.
const PUSH_TIMEOUT: Duration = Duration::from_secs(3);
/// How often an owner announces again which of its orders remote drivers
/// carry (well within the driver node's [`CARRIED_FOR`]).
const ANNOUNCE_EVERY: Duration = Duration::from_secs(3);
/// How long a driver's node sends its positions to the region of an order
/// of another node without that order's owner announcing it again.
const CARRIED_FOR: Duration = Duration::from_secs(10);
/// Cells of the grid looked at around a driver (a square: 21 x 21).
const MAX_CELLS: usize = 441;
/// How long a driver's targets (which nodes to publish to) are reused
/// while it stays in its cell.
const TARGETS_FOR: Duration = Duration::from_millis(1000);
/// At most one position a driver's node sends other nodes' geo indexes in
/// this long, while the driver carries none of their orders: their
/// dispatch rounds (`dispatch.round_interval_ms`, 1 s) read the index no
/// more often, and a driver at 10 Hz would otherwise send each owner
/// around it ten messages a second. A driver carrying another node's
/// order sends every position (its watchers see each one), and a change
/// of availability or of the nodes it reaches goes at once.
const GEO_POSITION_EVERY: Duration = Duration::from_millis(1000);
/// Profiles of remote drivers read from the store at once.
const LOADING_AT_ONCE: usize = 256;

const KIND_POSITION: u8 = 0;
const KIND_AVAILABILITY: u8 = 1;
const KIND_GONE: u8 = 2;
const VERSION: u8 = 1;

/// One message on `geo.<region>`, in a fixed binary layout (positions are
/// the cluster's busiest messages; JSON would cost more than the rest).
#[derive(Debug, Clone, PartialEq)]
struct GeoMessage {
    node: String,
    seq: u64,
    kind: u8,
    driver: MirroredDriver,
}

fn opt(value: Option<f64>) -> f64 {
    value.unwrap_or(f64::NAN)
}

fn unopt(value: f64) -> Option<f64> {
    (!value.is_nan()).then_some(value)
}

impl GeoMessage {
    fn encode(&self) -> Vec<u8> {
        let l = &self.driver.location;
        let mut out = Vec::with_capacity(80 + self.node.len());
        out.extend([VERSION, self.kind, u8::from(self.driver.available)]);
        out.extend(self.driver.active_orders.to_le_bytes());
        out.extend(self.seq.to_le_bytes());
        out.extend(l.driver_id.to_le_bytes());
        for value in [l.lat, l.lon, opt(l.heading), opt(l.speed_mps)] {
            out.extend(value.to_le_bytes());
        }
        out.extend(l.timestamp.to_le_bytes());
        out.extend(self.node.as_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<GeoMessage> {
        const FIXED: usize = 3 + 4 + 8 + 8 + 4 * 8 + 8;
        if bytes.len() < FIXED || bytes[0] != VERSION || bytes[1] > KIND_GONE {
            return None;
        }
        let mut at = 3;
        let mut take = |n: usize| {
            let slice = &bytes[at..at + n];
            at += n;
            slice
        };
        let active_orders = u32::from_le_bytes(take(4).try_into().ok()?);
        let seq = u64::from_le_bytes(take(8).try_into().ok()?);
        let driver_id = i64::from_le_bytes(take(8).try_into().ok()?);
        let mut float = || take(8).try_into().ok().map(f64::from_le_bytes);
        let (lat, lon, heading, speed) = (float()?, float()?, float()?, float()?);
        let timestamp = i64::from_le_bytes(take(8).try_into().ok()?);
        let node = std::str::from_utf8(&bytes[FIXED..]).ok()?.to_string();
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
            return None;
        }
        Some(GeoMessage {
            node,
            seq,
            kind: bytes[1],
            driver: MirroredDriver {
                location: DriverLocation {
                    driver_id,
                    lat,
                    lon,
                    heading: unopt(heading),
                    speed_mps: unopt(speed),
                    timestamp,
                },
                available: bytes[2] == 1,
                active_orders,
                position: bytes[1] == KIND_POSITION,
            },
        })
    }

    fn kind_str(&self) -> &'static str {
        match self.kind {
            KIND_POSITION => "position",
            KIND_AVAILABILITY => "availability",
            _ => "gone",
        }
    }
}

/// The driver's node's answer to a relayed offer: `1` delivered, `0` no
/// socket, `busy <ms>` refused (another live offer held, or at its
/// limit).
fn encode_pushed(pushed: Pushed) -> Vec<u8> {
    match pushed {
        Pushed::Delivered => b"1".to_vec(),
        Pushed::NoSocket | Pushed::Unreachable { .. } => b"0".to_vec(),
        Pushed::Busy(busy_for) => format!("busy {}", busy_for.as_millis()).into_bytes(),
    }
}

/// Longest a driver's node may have an owner leave its driver out.
const MAX_BUSY: Duration = Duration::from_secs(600);

fn decode_pushed(payload: &[u8]) -> Pushed {
    match payload {
        b"1" => Pushed::Delivered,
        _ => std::str::from_utf8(payload)
            .ok()
            .and_then(|text| text.strip_prefix("busy "))
            .and_then(|ms| ms.parse::<u64>().ok())
            .map_or(Pushed::NoSocket, |ms| {
                Pushed::Busy(Duration::from_millis(ms).min(MAX_BUSY))
            }),
    }
}

/// What travels on `driver.<id>.cmd` (few a second: JSON).
#[derive(Debug, Serialize, Deserialize)]
enum DriverCommand {
    /// An offer frame for the driver's socket; answered `1` (delivered) or `0`.
    Offer {
        origin: String,
        /// The origin dispatcher's start count (see
        /// `actors::engine::driver::Drivers::dispatcher_starts`); 0 from a
        /// node that does not send it.
        #[serde(default)]
        dispatcher_starts: u64,
        frame: String,
    },
    /// A frame for the socket (an offer's result, an error).
    Tell {
        origin: String,
        frame: String,
    },
    /// The origin's offer ended without a result (its assignment could
    /// not be written): the driver no longer holds it; `frame` (an error)
    /// goes to its socket.
    Ended {
        origin: String,
        offer_id: OfferId,
        frame: Option<String>,
    },
    /// The driver carries this order of the origin node's region.
    Carry {
        origin: String,
        order_id: OrderId,
        region: String,
    },
    Release {
        origin: String,
        order_id: OrderId,
    },
}

impl DriverCommand {
    fn kind(&self) -> &'static str {
        match self {
            DriverCommand::Offer { .. } => "offer",
            DriverCommand::Tell { .. } => "tell",
            DriverCommand::Ended { .. } => "ended",
            DriverCommand::Carry { .. } => "carry",
            DriverCommand::Release { .. } => "release",
        }
    }
}

enum Out {
    Moved(MirroredDriver),
    Gone(DriverId),
    Command(DriverId, DriverCommand),
}

/// The orders of other nodes one local driver carries: the region each is
/// of, when its owner last announced it, and the driver's socket that
/// watches it through the order bus.
type CarriedHere = HashMap<OrderId, (Region, Instant, Option<SessionId>)>;

/// An offer of another node relayed to a driver here.
struct Relayed {
    region: Region,
    /// The node that made it (the driver holds it as that node's).
    origin: String,
    at: Instant,
}

struct Inner {
    client: async_nats::Client,
    bucket: String,
    node: String,
    cluster: Cluster,
    drivers: Drivers,
    dispatch: DispatchHandle,
    store: Arc<dyn Store>,
    /// Where a local driver's socket watches the orders of other nodes it
    /// carries (as on one node, where it is subscribed to them by itself).
    orders: Orders,
    margin_km: f64,
    outgoing: mpsc::Sender<Out>,
    seq: AtomicU64,
    /// Local drivers subscribed to their command subject.
    linked: Mutex<HashMap<DriverId, JoinHandle<()>>>,
    /// Orders of other nodes local drivers carry, by the region they are
    /// of, with when their owner last announced them.
    carried: Mutex<HashMap<DriverId, CarriedHere>>,
    /// Where the answers to offers relayed here go, by offer and driver
    /// (offer ids are unique per node only).
    relayed: Mutex<HashMap<(OfferId, DriverId), Relayed>>,
    /// The longest a driver here holds a relayed offer
    /// (`dispatch.offer_timeout_secs`, whatever the offer's node's clock says).
    offer_timeout: Duration,
    /// One `geo.<region>` subscription task per region held.
    serving: Mutex<BTreeMap<Region, JoinHandle<()>>>,
    loading: Mutex<HashSet<DriverId>>,
}

/// The settings the link works with.
#[derive(Debug, Clone, Copy)]
pub struct LinkSettings {
    /// How far around a driver its entry reaches other owners
    /// (`cluster.geo_margin_km`, by default `dispatch.max_radius_km`).
    pub margin_km: f64,
    /// `dispatch.offer_timeout_secs`: the longest a relayed offer is held.
    pub offer_timeout: Duration,
}

/// This node's side of drivers across nodes, cheap to clone.
#[derive(Clone)]
pub struct DriverLink {
    inner: Arc<Inner>,
}

fn geo_subject(bucket: &str, region: Region) -> String {
    format!("{bucket}.geo.{}", region.key())
}

fn driver_subject(bucket: &str, driver_id: DriverId) -> String {
    format!("{bucket}.driver.{driver_id}.cmd")
}

impl DriverLink {
    /// The link on `client`, with its publisher task and the task that
    /// announces this node's orders carried by remote drivers.
    pub fn start(
        client: async_nats::Client,
        cluster: &Cluster,
        drivers: Drivers,
        dispatch: DispatchHandle,
        store: Arc<dyn Store>,
        orders: Orders,
        settings: LinkSettings,
    ) -> DriverLink {
        let (outgoing, queued) = mpsc::channel(QUEUE);
        let link = DriverLink {
            inner: Arc::new(Inner {
                client,
                bucket: cluster.bucket().to_string(),
                node: cluster.node_id().to_string(),
                cluster: cluster.clone(),
                drivers,
                dispatch,
                store,
                orders,
                margin_km: settings.margin_km,
                outgoing,
                seq: AtomicU64::new(0),
                linked: Mutex::default(),
                carried: Mutex::default(),
                relayed: Mutex::default(),
                offer_timeout: settings.offer_timeout,
                serving: Mutex::default(),
                loading: Mutex::default(),
            }),
        };
        tokio::spawn(link.clone().publish_queued(queued));
        tokio::spawn(link.clone().announce());
        link
    }

    pub fn dispatch(&self) -> &DispatchHandle {
        &self.inner.dispatch
    }

    fn enqueue(&self, out: Out, kind: &'static str) {
        let outgoing = &self.inner.outgoing;
        let room = match out {
            Out::Moved(_) => outgoing.capacity() > KEPT_FOR_COMMANDS,
            _ => outgoing.capacity() > 0,
        };
        if !room || outgoing.try_send(out).is_err() {
            metrics::counter!(m::CLUSTER_DRIVER_BUS_DROPPED_TOTAL, "kind" => kind).increment(1);
        }
    }

    /// Every [`ANNOUNCE_EVERY`]: which of this node's orders remote drivers
    /// carry, to whichever node their socket is on now.
    async fn announce(self) {
        let mut tick = tokio::time::interval(ANNOUNCE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.inner.outgoing.is_closed() {
                return;
            }
            for (driver_id, order_id, at) in self.inner.drivers.carried_elsewhere() {
                self.carry(driver_id, order_id, at);
            }
        }
    }

    async fn publish_queued(self, mut queued: mpsc::Receiver<Out>) {
        let mut publisher = Publisher::default();
        while let Some(out) = queued.recv().await {
            match out {
                Out::Moved(driver) => self.publish_moved(&mut publisher, driver).await,
                Out::Gone(driver_id) => self.publish_gone(&mut publisher, driver_id).await,
                Out::Command(driver_id, command) => {
                    let kind = command.kind();
                    let sent = match serde_json::to_vec(&command) {
                        Ok(body) => self
                            .inner
                            .client
                            .publish(driver_subject(&self.inner.bucket, driver_id), body.into())
                            .await
                            .is_ok(),
                        Err(_) => false,
                    };
                    let result = if sent { "sent" } else { "failed" };
                    metrics::counter!(m::CLUSTER_DRIVER_COMMANDS_TOTAL, "kind" => kind, "result" => result)
                        .increment(1);
                }
            }
        }
    }

    /// The nodes (with one region of each) a driver's entry goes to.
    fn targets(&self, publisher: &mut Publisher, driver: &MirroredDriver) -> Vec<(String, Region)> {
        let id = driver.location.driver_id;
        let cluster = &self.inner.cluster;
        let cell = cluster.region_of(driver.location.at());
        let carried: Vec<Region> = {
            let mut carried = super::lock(&self.inner.carried);
            match carried.get_mut(&id) {
                Some(orders) => {
                    orders.retain(|_, (_, announced, _)| announced.elapsed() < CARRIED_FOR);
                    let regions = orders.values().map(|(region, _, _)| *region).collect();
                    if orders.is_empty() {
                        carried.remove(&id);
                    }
                    regions
                }
                None => Vec::new(),
            }
        };
        if let Some(cached) = publisher.targets.get(&id)
            && cached.cell == cell
            && cached.carried == carried
            && cached.at.elapsed() < TARGETS_FOR
        {
            return cached.regions.clone();
        }
        publisher.refresh_holders(cluster);
        let mut by_node: BTreeMap<String, Region> = BTreeMap::new();
        let around = Region::around(
            driver.location.at(),
            cluster.inner.options.region_deg,
            self.inner.margin_km,
            MAX_CELLS,
        );
        for region in around.iter().chain(&carried) {
            if let Some(node) = publisher.holders.get(region) {
                by_node.entry(node.clone()).or_insert(*region);
            }
        }
        let regions: Vec<(String, Region)> = by_node.into_iter().collect();
        publisher.targets.insert(
            id,
            Targets {
                cell,
                carried,
                regions: regions.clone(),
                at: Instant::now(),
            },
        );
        regions
    }

    async fn publish_moved(&self, publisher: &mut Publisher, driver: MirroredDriver) {
        let id = driver.location.driver_id;
        let targets = self.targets(publisher, &driver);
        let last = publisher.published.remove(&id).unwrap_or_default();
        // Nodes it no longer reaches hear that it left them (a node it
        // still reaches on another of its regions hears nothing of it: the
        // two subjects' messages could pass each other).
        let left: Vec<Region> = last
            .iter()
            .filter(|(node, _)| !targets.iter().any(|(to, _)| to == node))
            .map(|(_, region)| *region)
            .collect();
        if !left.is_empty() {
            self.publish(&left, KIND_GONE, driver, self.next_seq())
                .await;
        }
        if targets.is_empty() {
            return;
        }
        let carries_theirs = publisher
            .targets
            .get(&id)
            .is_some_and(|targets| !targets.carried.is_empty());
        if driver.position
            && !carries_theirs
            && last == targets
            && publisher
                .position_sent_at
                .get(&id)
                .is_some_and(|at| at.elapsed() < GEO_POSITION_EVERY)
        {
            publisher.published.insert(id, last);
            metrics::counter!(m::CLUSTER_GEO_MESSAGES_TOTAL, "direction" => "skipped", "kind" => "position")
                .increment(1);
            return;
        }
        if !self.link(id).await {
            return;
        }
        if driver.position {
            publisher.position_sent_at.insert(id, Instant::now());
        }
        let kind = if driver.position {
            KIND_POSITION
        } else {
            KIND_AVAILABILITY
        };
        let regions: Vec<Region> = targets.iter().map(|(_, region)| *region).collect();
        let seq = self.next_seq();
        publisher.last_seq.insert(id, seq);
        self.publish(&regions, kind, driver, seq).await;
        publisher.published.insert(id, targets);
    }

    async fn publish_gone(&self, publisher: &mut Publisher, driver_id: DriverId) {
        publisher.targets.remove(&driver_id);
        publisher.position_sent_at.remove(&driver_id);
        let last_seq = publisher.last_seq.remove(&driver_id);
        // Offline: nobody offers it anything until its next position. Its
        // command subscription ends whether or not its entry went anywhere
        // last (a driver out of every other node's reach still holds one).
        if let Some(task) = super::lock(&self.inner.linked).remove(&driver_id) {
            task.abort();
        }
        self.linked_gauge();
        let Some(last) = publisher.published.remove(&driver_id) else {
            return;
        };
        let last: Vec<Region> = last.into_iter().map(|(_, region)| region).collect();
        // The "gone" retracts the entry this node sent last, and is
        // numbered just after it: an owner that took a newer entry of the
        // driver since (from the node it reconnected to, a moment after it
        // left this one, while its presence here was still running out)
        // ignores it, however late it comes.
        let seq = last_seq.map_or_else(|| self.next_seq(), |seq| seq + 1);
        let driver = MirroredDriver {
            location: DriverLocation {
                driver_id,
                lat: 0.0,
                lon: 0.0,
                heading: None,
                speed_mps: None,
                timestamp: 0,
            },
            available: false,
            active_orders: 0,
            position: false,
        };
        self.publish(&last, KIND_GONE, driver, seq).await;
    }

    async fn publish(&self, regions: &[Region], kind: u8, driver: MirroredDriver, seq: u64) {
        let message = GeoMessage {
            node: self.inner.node.clone(),
            seq,
            kind,
            driver,
        };
        let payload = Frame::from(message.encode());
        for region in regions {
            let sent = self
                .inner
                .client
                .publish(geo_subject(&self.inner.bucket, *region), payload.clone())
                .await;
            match sent {
                Ok(()) => metrics::counter!(m::CLUSTER_GEO_MESSAGES_TOTAL, "direction" => "out", "kind" => message.kind_str()).increment(1),
                Err(_) => metrics::counter!(m::CLUSTER_DRIVER_BUS_DROPPED_TOTAL, "kind" => message.kind_str()).increment(1),
            }
        }
    }

    /// The wall clock in microseconds, strictly growing here: a driver
    /// that reconnected to another node is heard from there with larger
    /// numbers than from here (as far as the nodes' clocks agree).
    fn next_seq(&self) -> u64 {
        let now = chrono::Utc::now().timestamp_micros().max(0) as u64;
        let previous = self
            .inner
            .seq
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or_else(|last| last);
        now.max(previous + 1)
    }

    fn linked_gauge(&self) {
        let linked = super::lock(&self.inner.linked).len();
        metrics::gauge!(m::CLUSTER_LINKED_DRIVERS).set(linked as f64);
    }

    /// Subscribes to the driver's command subject unless it is already;
    /// false when this node has as many as it may (its entry then stays
    /// local: no other node could offer it anything).
    async fn link(&self, driver_id: DriverId) -> bool {
        {
            let linked = super::lock(&self.inner.linked);
            if linked.contains_key(&driver_id) {
                return true;
            }
            if linked.len() >= MAX_LINKED {
                return false;
            }
        }
        let subject = driver_subject(&self.inner.bucket, driver_id);
        match self.inner.client.subscribe(subject).await {
            Ok(subscriber) => {
                let task = tokio::spawn(self.clone().follow_driver(driver_id, subscriber));
                super::lock(&self.inner.linked).insert(driver_id, task);
                self.linked_gauge();
                true
            }
            Err(error) => {
                tracing::warn!(driver_id, %error, "Driver's command subject not subscribed; its entry stays on this node");
                false
            }
        }
    }

    /// What owners send one local driver.
    async fn follow_driver(self, driver_id: DriverId, mut subscriber: async_nats::Subscriber) {
        while let Some(message) = subscriber.next().await {
            let Ok(command) = serde_json::from_slice::<DriverCommand>(&message.payload) else {
                metrics::counter!(m::CLUSTER_DRIVER_COMMANDS_TOTAL, "kind" => "unreadable", "result" => "received").increment(1);
                continue;
            };
            let kind = command.kind();
            let me = self.inner.node.as_str();
            let result = match command {
                DriverCommand::Offer {
                    origin,
                    dispatcher_starts,
                    frame,
                } => {
                    let pushed = if origin != me {
                        self.relay_offer(driver_id, origin, dispatcher_starts, frame)
                            .await
                    } else {
                        Pushed::NoSocket
                    };
                    if let Some(reply) = message.reply {
                        let _ = self
                            .inner
                            .client
                            .publish(reply, encode_pushed(pushed).into())
                            .await;
                    }
                    match pushed {
                        Pushed::Delivered => "delivered",
                        Pushed::NoSocket | Pushed::Unreachable { .. } => "undelivered",
                        Pushed::Busy(_) => "busy",
                    }
                }
                DriverCommand::Tell { origin, frame } => {
                    if origin != me {
                        // An offer's result: the driver may hold another.
                        if let Some((offer_id, assigned)) =
                            actors::wire::offer_result_of(frame.as_bytes())
                        {
                            self.inner.drivers.offer_closed_here(
                                driver_id,
                                Some(origin),
                                offer_id,
                                assigned,
                            );
                        }
                        // Waits for the actor: a flood stays in the bounded
                        // subscription (NATS drops past it), not its mailbox.
                        self.inner
                            .drivers
                            .push_here(driver_id, Frame::from(frame.into_bytes()))
                            .await;
                    }
                    "received"
                }
                DriverCommand::Ended {
                    origin,
                    offer_id,
                    frame,
                } => {
                    if origin != me {
                        self.inner.drivers.offer_closed_here(
                            driver_id,
                            Some(origin),
                            offer_id,
                            Vec::new(),
                        );
                        if let Some(frame) = frame {
                            self.inner
                                .drivers
                                .push_here(driver_id, Frame::from(frame.into_bytes()))
                                .await;
                        }
                    }
                    "received"
                }
                DriverCommand::Carry {
                    origin,
                    order_id,
                    region,
                } => {
                    if origin != me
                        && let Some(region) = Region::parse(&region)
                    {
                        self.carried_here(driver_id, order_id, region).await;
                    }
                    "received"
                }
                DriverCommand::Release { origin, order_id } => {
                    if origin != me {
                        let watching = {
                            let mut carried = super::lock(&self.inner.carried);
                            let mut watching = None;
                            if let Some(orders) = carried.get_mut(&driver_id) {
                                watching = orders.remove(&order_id).and_then(|(_, _, s)| s);
                                if orders.is_empty() {
                                    carried.remove(&driver_id);
                                }
                            }
                            watching
                        };
                        if let (Some(bus), Some(session_id)) = (self.inner.orders.bus(), watching) {
                            bus.unwatch(order_id, session_id);
                        }
                        self.inner
                            .drivers
                            .release_elsewhere(driver_id, order_id)
                            .await;
                    }
                    "received"
                }
            };
            metrics::counter!(m::CLUSTER_DRIVER_COMMANDS_TOTAL, "kind" => kind, "result" => result)
                .increment(1);
        }
        // The subscription ended (NATS dropped it): forget it, so that the
        // driver's next position subscribes again instead of leaving the
        // driver deaf to offers.
        super::lock(&self.inner.linked).remove(&driver_id);
        self.linked_gauge();
    }

    /// A local driver carries an order of another node (announced again):
    /// it counts in the driver's load, its positions go to the order's
    /// region, and the driver's socket watches the order through the bus
    /// (again after a reconnection).
    async fn carried_here(&self, driver_id: DriverId, order_id: OrderId, region: Region) {
        let socket = self.inner.drivers.connected_here(driver_id);
        let watch = {
            let mut carried = super::lock(&self.inner.carried);
            let entry = carried
                .entry(driver_id)
                .or_default()
                .entry(order_id)
                .or_insert((region, Instant::now(), None));
            entry.0 = region;
            entry.1 = Instant::now();
            match &socket {
                Some(outbox) if entry.2 != Some(outbox.session_id) => {
                    entry.2 = Some(outbox.session_id);
                    true
                }
                _ => false,
            }
        };
        self.inner
            .drivers
            .carry_elsewhere(driver_id, order_id)
            .await;
        if let (true, Some(bus), Some(outbox)) = (watch, self.inner.orders.bus(), socket) {
            let orders = self.inner.orders.clone();
            let link = self.clone();
            tokio::spawn(async move {
                let failed = orders
                    .follow_remote(bus, order_id, vec![outbox], false, false)
                    .await;
                if let Some((_, (code, error))) = failed.into_iter().next() {
                    tracing::debug!(driver_id, order_id, code, %error, "Driver's socket not watching its order of another node; the next announcement tries again");
                    let mut carried = super::lock(&link.inner.carried);
                    if let Some(entry) = carried
                        .get_mut(&driver_id)
                        .and_then(|o| o.get_mut(&order_id))
                    {
                        entry.2 = None;
                    }
                }
            });
        }
    }

    /// Pushes `origin`'s offer to the local driver's socket, remembering
    /// where its answer goes; what became of it (refused while the driver
    /// holds another live offer or is at its order limit; one of the same
    /// node's dispatcher before a restart is replaced).
    async fn relay_offer(
        &self,
        driver_id: DriverId,
        origin: String,
        dispatcher_starts: u64,
        frame: String,
    ) -> Pushed {
        let Some(seen) = actors::wire::offer_of(frame.as_bytes()) else {
            return Pushed::NoSocket;
        };
        let (offer_id, pickup) = (seen.offer_id, seen.pickup);
        // Its dispatcher's wall clock, as an instant here, never later than
        // an offer made here now would expire: a wild clock cannot keep
        // the driver busy longer than one offer.
        let left = (seen.expires_at - chrono::Utc::now())
            .to_std()
            .unwrap_or_default()
            .min(self.inner.offer_timeout);
        let expires = Instant::now() + left;
        let key = (offer_id, driver_id);
        // Remembered before the socket has it (its answer may come at
        // once); what it replaced is put back if the driver refuses it
        // (another node's offer of the same id, held now, keeps its way).
        let replaced = {
            let mut relayed = super::lock(&self.inner.relayed);
            if relayed.len() >= MAX_RELAYED {
                relayed.retain(|_, r| r.at.elapsed() < RELAYED_FOR);
            }
            if relayed.len() >= MAX_RELAYED {
                return Pushed::NoSocket;
            }
            let replaced = relayed.insert(
                key,
                Relayed {
                    region: self.inner.cluster.region_of(pickup),
                    origin: origin.clone(),
                    at: Instant::now(),
                },
            );
            metrics::gauge!(m::CLUSTER_RELAYED_OFFERS).set(relayed.len() as f64);
            replaced
        };
        let pushed = self
            .inner
            .drivers
            .offer_here(
                driver_id,
                Some(origin),
                dispatcher_starts,
                offer_id,
                expires,
                Frame::from(frame.into_bytes()),
            )
            .await;
        if pushed != Pushed::Delivered {
            let mut relayed = super::lock(&self.inner.relayed);
            match replaced {
                Some(earlier) => relayed.insert(key, earlier),
                None => relayed.remove(&key),
            };
        }
        pushed
    }

    /// Subscribes to the `geo.<region>` subjects of `served` and drops the
    /// others'.
    pub async fn serve_only(&self, served: &[Region]) {
        super::drop_unserved(&self.inner.serving, served);
        for region in served {
            if super::lock(&self.inner.serving).contains_key(region) {
                continue;
            }
            match self
                .inner
                .client
                .subscribe(geo_subject(&self.inner.bucket, *region))
                .await
            {
                Ok(subscriber) => {
                    let task = tokio::spawn(self.clone().hear(subscriber));
                    super::lock(&self.inner.serving).insert(*region, task);
                }
                Err(error) => {
                    tracing::warn!(%region, %error, "Region's geo subject not subscribed; drivers of other nodes are not offered its orders")
                }
            }
        }
    }

    /// Drivers of other nodes, for this node's index and orders.
    async fn hear(self, mut subscriber: async_nats::Subscriber) {
        while let Some(message) = subscriber.next().await {
            let Some(geo) = GeoMessage::decode(&message.payload) else {
                metrics::counter!(m::CLUSTER_GEO_MESSAGES_TOTAL, "direction" => "in", "kind" => "unreadable").increment(1);
                continue;
            };
            if geo.node == self.inner.node {
                continue;
            }
            metrics::counter!(m::CLUSTER_GEO_MESSAGES_TOTAL, "direction" => "in", "kind" => geo.kind_str()).increment(1);
            let id = geo.driver.location.driver_id;
            if geo.kind == KIND_GONE {
                self.inner.drivers.remote_gone(id, geo.seq);
                continue;
            }
            let remote = RemoteDriver {
                driver: geo.driver,
                seq: geo.seq,
            };
            if self.inner.drivers.knows(id) {
                self.inner.drivers.remote_located(remote);
            } else {
                self.load_then(remote);
            }
        }
    }

    /// A driver first heard of: its profile (vehicle, for dispatch and
    /// the assignment) is read from the store before its entry is taken.
    fn load_then(&self, remote: RemoteDriver) {
        let id = remote.driver.location.driver_id;
        {
            let mut loading = super::lock(&self.inner.loading);
            // Its next message tries again.
            if loading.len() >= LOADING_AT_ONCE || !loading.insert(id) {
                return;
            }
        }
        let link = self.clone();
        tokio::spawn(async move {
            let profile: Option<Driver> = match link.inner.store.driver(id).await {
                Ok(profile) => profile,
                Err(error) => {
                    tracing::warn!(driver_id = id, %error, "Remote driver's profile not read");
                    None
                }
            };
            if let Some(profile) = profile {
                link.inner.drivers.learn(profile);
                link.inner.drivers.remote_located(remote);
            }
            super::lock(&link.inner.loading).remove(&id);
        });
    }
}

/// The publisher task's own memory.
#[derive(Default)]
struct Publisher {
    /// Regions (with a restaurant) held by another node, by holder; read
    /// again at most every [`TARGETS_FOR`].
    holders: HashMap<Region, String>,
    holders_at: Option<Instant>,
    targets: HashMap<DriverId, Targets>,
    /// Where each driver's entry went last (node, and region subject).
    published: HashMap<DriverId, Vec<(String, Region)>>,
    /// When each driver's last position went out (see [`GEO_POSITION_EVERY`]).
    position_sent_at: HashMap<DriverId, Instant>,
    /// The sequence number of each driver's last entry sent (its "gone"
    /// follows it).
    last_seq: HashMap<DriverId, u64>,
}

struct Targets {
    cell: Region,
    carried: Vec<Region>,
    regions: Vec<(String, Region)>,
    at: Instant,
}

impl Publisher {
    fn refresh_holders(&mut self, cluster: &Cluster) {
        if self.holders_at.is_some_and(|at| at.elapsed() < TARGETS_FOR) {
            return;
        }
        let regions: Vec<Region> = super::lock(&cluster.inner.regions)
            .iter()
            .copied()
            .collect();
        self.holders = regions
            .into_iter()
            .filter(|region| !cluster.owns(*region))
            .filter_map(|region| cluster.holder_of(region).map(|node| (region, node)))
            .collect();
        self.holders_at = Some(Instant::now());
        // Drivers gone without a word (their actor stopped) are forgotten
        // with their cache entry after a while.
        self.targets
            .retain(|_, targets| targets.at.elapsed() < TARGETS_FOR * 60);
        self.position_sent_at
            .retain(|_, at| at.elapsed() < TARGETS_FOR * 60);
        let published = &self.published;
        self.last_seq.retain(|id, _| published.contains_key(id));
    }
}

impl DriverBus for DriverLink {
    fn moved(&self, driver: MirroredDriver) {
        self.enqueue(Out::Moved(driver), "position");
    }

    fn gone(&self, driver_id: DriverId) {
        self.enqueue(Out::Gone(driver_id), "gone");
    }

    fn push(&self, driver_id: DriverId, frame: Frame) -> PushFuture {
        let link = self.clone();
        Box::pin(async move {
            let command = DriverCommand::Offer {
                origin: link.inner.node.clone(),
                dispatcher_starts: link.inner.drivers.dispatcher_starts(),
                frame: String::from_utf8_lossy(&frame).into_owned(),
            };
            let Ok(body) = serde_json::to_vec(&command) else {
                return Pushed::NoSocket;
            };
            let asked = link
                .inner
                .client
                .send_request(
                    driver_subject(&link.inner.bucket, driver_id),
                    async_nats::Request::new()
                        .payload(body.into())
                        .timeout(Some(PUSH_TIMEOUT)),
                )
                .await;
            let (pushed, result) = match asked {
                Ok(reply) => match decode_pushed(&reply.payload) {
                    Pushed::Delivered => (Pushed::Delivered, "delivered"),
                    Pushed::Busy(busy_for) => (Pushed::Busy(busy_for), "busy"),
                    Pushed::NoSocket | Pushed::Unreachable { .. } => {
                        (Pushed::NoSocket, "undelivered")
                    }
                },
                Err(error) => match error.kind() {
                    async_nats::RequestErrorKind::NoResponders => {
                        (Pushed::Unreachable { gone: true }, "no_node")
                    }
                    async_nats::RequestErrorKind::TimedOut => {
                        (Pushed::Unreachable { gone: false }, "timed_out")
                    }
                    async_nats::RequestErrorKind::Other => (Pushed::NoSocket, "failed"),
                },
            };
            metrics::counter!(m::CLUSTER_DRIVER_COMMANDS_TOTAL, "kind" => "offer", "result" => result)
                .increment(1);
            pushed
        })
    }

    fn tell(&self, driver_id: DriverId, frame: Frame) {
        let command = DriverCommand::Tell {
            origin: self.inner.node.clone(),
            frame: String::from_utf8_lossy(&frame).into_owned(),
        };
        self.enqueue(Out::Command(driver_id, command), "tell");
    }

    fn ended(&self, driver_id: DriverId, offer_id: OfferId, frame: Option<Frame>) {
        let command = DriverCommand::Ended {
            origin: self.inner.node.clone(),
            offer_id,
            frame: frame.map(|frame| String::from_utf8_lossy(&frame).into_owned()),
        };
        self.enqueue(Out::Command(driver_id, command), "ended");
    }

    fn carry(&self, driver_id: DriverId, order_id: OrderId, restaurant_at: LatLon) {
        let command = DriverCommand::Carry {
            origin: self.inner.node.clone(),
            order_id,
            region: self.inner.cluster.region_of(restaurant_at).key(),
        };
        self.enqueue(Out::Command(driver_id, command), "carry");
    }

    fn release(&self, driver_id: DriverId, order_id: OrderId) {
        let command = DriverCommand::Release {
            origin: self.inner.node.clone(),
            order_id,
        };
        self.enqueue(Out::Command(driver_id, command), "release");
    }
}

impl RemoteOffers for DriverLink {
    fn respond(
        &self,
        offer_id: OfferId,
        driver_id: DriverId,
        accept: bool,
        on_socket: bool,
    ) -> Option<RespondFuture> {
        let (region, origin) = super::lock(&self.inner.relayed)
            .get(&(offer_id, driver_id))
            .map(|relayed| (relayed.region, relayed.origin.clone()))?;
        let link = self.clone();
        Some(Box::pin(async move {
            let outcome = match link.inner.cluster.commands() {
                Some(commands) => {
                    commands
                        .forward_respond(&region.key(), offer_id, driver_id, accept, on_socket)
                        .await
                }
                None => Err(super::commands::ForwardError::Failed(
                    "the cluster has not started".into(),
                )),
            };
            let void = match &outcome {
                Err(error) => {
                    tracing::warn!(offer_id, driver_id, %error, "Offer's answer not carried to its node");
                    Some("the node that made this offer did not answer; the offer is void")
                }
                // From the socket, the owner answers only whether its
                // dispatcher took the answer (the outcome comes as frames).
                Ok(Err(OfferError::Unavailable)) if on_socket => {
                    tracing::warn!(
                        offer_id,
                        driver_id,
                        "Offer's answer not taken by its node's dispatcher"
                    );
                    Some(actors::engine::dispatcher::ANSWER_NOT_TAKEN)
                }
                Ok(_) => None,
            };
            let result = match outcome {
                Ok(result) => result,
                Err(_) => Err(OfferError::Unavailable),
            };
            if let Some(message) = void {
                // Nothing more will come of it: the driver no longer holds it.
                link.inner
                    .drivers
                    .offer_closed_here(driver_id, Some(origin), offer_id, Vec::new());
                if on_socket {
                    // Named: another offer may reach the socket first.
                    let frame = actors::wire::error_frame(
                        "ENGINE_UNAVAILABLE",
                        &format!("offer {offer_id}: {message}"),
                        None,
                    );
                    link.inner.drivers.tell_here(driver_id, frame);
                }
            }
            let label = if result.is_ok() { "ok" } else { "refused" };
            metrics::counter!(m::CLUSTER_DRIVER_COMMANDS_TOTAL, "kind" => "respond", "result" => label)
                .increment(1);
            result
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_geo_message_round_trips_and_garbage_is_refused() {
        let message = GeoMessage {
            node: "n1f0c".into(),
            seq: 42,
            kind: KIND_POSITION,
            driver: MirroredDriver {
                location: DriverLocation {
                    driver_id: 7,
                    lat: 30.27,
                    lon: -97.74,
                    heading: Some(90.0),
                    speed_mps: None,
                    timestamp: 1_700_000_000_000,
                },
                available: true,
                active_orders: 1,
                position: true,
            },
        };
        let bytes = message.encode();
        assert_eq!(GeoMessage::decode(&bytes), Some(message));
        assert_eq!(GeoMessage::decode(&bytes[..20]), None);
        let mut wrong = bytes.clone();
        wrong[0] = 9;
        assert_eq!(GeoMessage::decode(&wrong), None);
        assert_eq!(GeoMessage::decode(b""), None);
    }
}
