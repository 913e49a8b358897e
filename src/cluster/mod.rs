//! Cluster mode (DESIGN.md "Cluster", README "Cluster mode"): this node's
//! membership and its region leases, kept in one JetStream key-value
//! bucket on the process's one NATS connection.
//!
//! - `node.<id>`: a heartbeat each node puts every `renew_ms`;
//! - `lease.<region>`: the region's owner, created with compare-and-set
//!   (only if absent or deleted) and renewed by updating at the revision
//!   the owner last wrote. The revision of the claiming write is the
//!   lease's epoch: it only grows, whoever claims next.
//!
//! The bucket's max age is the lease TTL and it keeps one entry per key, so
//! a lease (or heartbeat) nobody renews disappears from the server by
//! itself, on the server's clock; the server 2.9 this runs on has no
//! per-key TTL. A node counts a lease as its own only until its last
//! successful renewal (timed from when the request was sent) plus the TTL
//! less `fence_margin_ms`: past that it stops serving the region, before
//! the server can let anyone else claim it ([`Cluster::owns`] reads the
//! clock on every call; a fence task also drops it and counts the loss).
//!
//! The lease's epoch is also recorded in Postgres (`region_owners`) when a
//! region is claimed, and every order write this node makes carries the
//! epoch it holds the order's region at ([`Cluster`] is the store's
//! `OrderFencing`): the database refuses the commit of a node that no
//! longer holds the region, whatever that node's clock believes.
//!
//! Every node runs the same rebalancing rule ([`plan`]) on what it sees
//! through a watch of the bucket. A graceful stop deletes the node's leases
//! at their revision, so the others claim them at their next rebalance
//! rather than after the TTL.

pub mod commands;
pub mod drivers;
mod plan;
pub mod region;
pub mod restaurants;
pub mod watch;

use actors::domain::model::LatLon;
use actors::metrics as m;
use actors::store::{RestaurantFilter, Store, StoreError};
use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use region::Region;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::{OrderFencing, RegionOwners, WriteFence};

const NODE_PREFIX: &str = "node.";
const LEASE_PREFIX: &str = "lease.";
/// How often the set of regions (those with a restaurant) is read again.
const REGIONS_EVERY: Duration = Duration::from_secs(10);
/// How often the fence looks for leases past their local deadline.
const FENCE_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub node_id: String,
    pub bucket: String,
    pub lease_ttl: Duration,
    pub renew: Duration,
    pub fence_margin: Duration,
    pub region_deg: f64,
    pub rebalance: Duration,
    /// Tests only: fence order writes with the last recorded epoch,
    /// ignoring the local deadline (Postgres is then the only fence).
    pub skip_local_fence: bool,
}

impl ClusterOptions {
    pub fn from_settings(settings: &crate::settings::ClusterSettings) -> ClusterOptions {
        let node_id = if settings.node_id.is_empty() {
            format!("n{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
        } else {
            settings.node_id.clone()
        };
        ClusterOptions {
            node_id,
            bucket: settings.bucket.clone(),
            lease_ttl: Duration::from_millis(settings.lease_ttl_ms),
            renew: Duration::from_millis(settings.renew_ms),
            fence_margin: Duration::from_millis(settings.fence_margin_ms),
            region_deg: settings.region_deg,
            rebalance: Duration::from_millis(settings.rebalance_ms),
            skip_local_fence: settings.unsafe_skip_local_fence_for_tests,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct LeaseValue {
    node: String,
}

#[derive(Serialize, Deserialize)]
struct NodeValue {
    node: String,
}

/// A lease this node holds.
#[derive(Debug, Clone, Copy)]
struct Held {
    /// The revision this node last wrote (what the next renewal expects).
    revision: u64,
    /// The revision of the claim.
    epoch: u64,
    /// Past this, the region is not served (last renewal + TTL - margin).
    deadline: Instant,
}

/// A key as the watch last saw it, and when.
#[derive(Debug, Clone)]
struct Seen {
    node: String,
    at: Instant,
}

#[derive(Default)]
struct Watched {
    nodes: HashMap<String, Instant>,
    leases: HashMap<Region, Seen>,
}

/// One region as `GET /api/admin/cluster` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionStatus {
    pub region: String,
    /// The node this one sees holding it (None: free, or its lease lapsed).
    pub node: Option<String>,
    /// The lease's epoch, for the regions this node holds.
    pub epoch: Option<u64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub node_id: String,
    pub nodes: Vec<String>,
    pub regions: Vec<RegionStatus>,
}

struct Inner {
    options: ClusterOptions,
    held: Mutex<BTreeMap<Region, Held>>,
    /// The epoch this node last recorded in `region_owners` per region
    /// (what `skip_local_fence` writes with).
    recorded: Mutex<BTreeMap<Region, u64>>,
    watched: Mutex<Watched>,
    regions: Mutex<BTreeSet<Region>>,
    regions_loaded: AtomicBool,
    /// Free regions at the last rebalance (usize::MAX before the first).
    free_at_last_look: AtomicUsize,
    /// Bumped whenever the regions this node serves change, for
    /// [`follow_regions`].
    served_changed: tokio::sync::watch::Sender<u64>,
    /// Forwarded commands, on the NATS connection `start` is given.
    commands: std::sync::OnceLock<commands::Commands>,
    /// Drivers across nodes, once linked.
    drivers: std::sync::OnceLock<drivers::DriverLink>,
}

/// The handle on this node's membership, cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

/// Ends the per-region subscriptions in `serving` of the regions not in
/// `served` (aborting a task drops its subscriber: NATS stops routing the
/// region's messages here); the command and geo subjects share this.
fn drop_unserved(serving: &Mutex<BTreeMap<Region, JoinHandle<()>>>, served: &[Region]) {
    let stale: Vec<JoinHandle<()>> = {
        let mut serving = lock(serving);
        let gone: Vec<Region> = serving
            .keys()
            .filter(|region| !served.contains(region))
            .copied()
            .collect();
        gone.iter().filter_map(|r| serving.remove(r)).collect()
    };
    for task in stale {
        task.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Cluster {
    /// This node's membership, not started: the store is opened with it
    /// as its fencing before [`Cluster::start`] joins.
    pub fn new(options: ClusterOptions) -> Cluster {
        if options.skip_local_fence {
            tracing::warn!(
                "cluster.unsafe_skip_local_fence_for_tests is set: this node writes with lapsed leases and only Postgres fences it; never use it outside tests"
            );
        }
        Cluster {
            inner: Arc::new(Inner {
                options,
                held: Mutex::default(),
                recorded: Mutex::default(),
                watched: Mutex::default(),
                regions: Mutex::default(),
                regions_loaded: AtomicBool::new(false),
                free_at_last_look: AtomicUsize::new(usize::MAX),
                served_changed: tokio::sync::watch::channel(0).0,
                commands: std::sync::OnceLock::new(),
                drivers: std::sync::OnceLock::new(),
            }),
        }
    }

    fn served_changed(&self) {
        self.inner
            .served_changed
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Joins the cluster in the background: opens (or creates) the bucket,
    /// retrying while NATS is away, then heartbeats, claims (recording each
    /// claim in `owners`), renews and rebalances until `shutdown`, when it
    /// hands its leases over. The task ends after that hand-over.
    pub fn start(
        &self,
        client: async_nats::Client,
        store: Arc<dyn Store>,
        owners: Arc<dyn RegionOwners>,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        tracing::info!(node = %self.node_id(), bucket = %self.inner.options.bucket, "Joining the cluster");
        let _ = self
            .inner
            .commands
            .set(commands::Commands::new(client.clone(), self));
        self.served_changed();
        tokio::spawn(self.clone().run(client, store, owners, shutdown))
    }

    /// Drivers connected to any node: call before any driver connects.
    pub fn link_drivers(&self, link: drivers::DriverLink) {
        let _ = self.inner.drivers.set(link);
    }

    /// Drivers across nodes, once linked.
    pub fn driver_link(&self) -> Option<&drivers::DriverLink> {
        self.inner.drivers.get()
    }

    /// Forwarding of commands to other nodes, once the cluster started.
    pub fn commands(&self) -> Option<&commands::Commands> {
        self.inner.commands.get()
    }

    /// The regions this node holds a live lease on now (whatever
    /// `skip_local_fence` says: it only concerns this node's own writes).
    fn leased(&self) -> Vec<Region> {
        let now = Instant::now();
        lock(&self.inner.held)
            .iter()
            .filter(|(_, held)| held.deadline > now)
            .map(|(region, _)| *region)
            .collect()
    }

    /// The key-value bucket's name, which prefixes this cluster's subjects.
    pub fn bucket(&self) -> &str {
        &self.inner.options.bucket
    }

    pub fn node_id(&self) -> &str {
        &self.inner.options.node_id
    }

    /// The region an order of a restaurant at `at` belongs to.
    pub fn region_of(&self, at: LatLon) -> Region {
        Region::of(at, self.inner.options.region_deg)
    }

    /// Whether this node may serve `region` right now: it holds the lease
    /// and its local deadline has not passed.
    pub fn owns(&self, region: Region) -> bool {
        lock(&self.inner.held)
            .get(&region)
            .is_some_and(|held| held.deadline > Instant::now())
    }

    /// The epoch this node serves `region` at right now, if it does.
    fn serving_epoch(&self, region: Region) -> Option<u64> {
        if self.inner.options.skip_local_fence {
            return lock(&self.inner.recorded).get(&region).copied();
        }
        lock(&self.inner.held)
            .get(&region)
            .filter(|held| held.deadline > Instant::now())
            .map(|held| held.epoch)
    }

    /// The node this one last saw holding `region`, if another one.
    pub fn holder_of(&self, region: Region) -> Option<String> {
        let now = Instant::now();
        lock(&self.inner.watched)
            .leases
            .get(&region)
            .filter(|seen| seen.at + self.inner.options.lease_ttl > now)
            .filter(|seen| seen.node != self.node_id())
            .map(|seen| seen.node.clone())
    }

    /// Ready once it holds a lease, or once every region is held (more
    /// nodes than regions); the reason otherwise.
    pub fn readiness(&self) -> Result<(), String> {
        if !lock(&self.inner.held).is_empty() {
            return Ok(());
        }
        if !self.inner.regions_loaded.load(Ordering::Acquire) {
            return Err("joining: the regions are not read yet".into());
        }
        match self.inner.free_at_last_look.load(Ordering::Acquire) {
            0 => Ok(()),
            usize::MAX => Err("joining: no lease claimed yet".into()),
            _ => Err("joining: free regions, none of them claimed yet".into()),
        }
    }

    pub fn status(&self) -> ClusterStatus {
        let now = Instant::now();
        let ttl = self.inner.options.lease_ttl;
        let held = lock(&self.inner.held).clone();
        let watched = lock(&self.inner.watched);
        let mut nodes: BTreeSet<String> = watched
            .nodes
            .iter()
            .filter(|(_, at)| **at + ttl > now)
            .map(|(node, _)| node.clone())
            .collect();
        nodes.insert(self.node_id().to_string());
        let regions = lock(&self.inner.regions)
            .iter()
            .map(|region| {
                let mine = held.get(region).filter(|h| h.deadline > now);
                let node = match mine {
                    Some(_) => Some(self.node_id().to_string()),
                    None => watched
                        .leases
                        .get(region)
                        .filter(|seen| seen.at + ttl > now && seen.node != self.node_id())
                        .map(|seen| seen.node.clone()),
                };
                RegionStatus {
                    region: region.key(),
                    node,
                    epoch: mine.map(|h| h.epoch),
                }
            })
            .collect();
        ClusterStatus {
            node_id: self.node_id().to_string(),
            nodes: nodes.into_iter().collect(),
            regions,
        }
    }

    async fn run(
        self,
        client: async_nats::Client,
        store: Arc<dyn Store>,
        owners: Arc<dyn RegionOwners>,
        shutdown: CancellationToken,
    ) {
        let kv = loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                opened = self.open_bucket(&client) => match opened {
                    Ok(kv) => break kv,
                    Err(error) => {
                        tracing::warn!(%error, "Cluster bucket not opened; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                },
            }
        };
        tokio::spawn(self.clone().watch(kv.clone(), shutdown.clone()));
        tokio::spawn(self.clone().fence(shutdown.clone()));
        let options = self.inner.options.clone();
        let mut renew = tokio::time::interval(options.renew);
        let mut rebalance = tokio::time::interval(options.rebalance);
        let mut regions = tokio::time::interval(REGIONS_EVERY);
        for tick in [&mut renew, &mut rebalance, &mut regions] {
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = renew.tick() => {
                    self.heartbeat(&kv).await;
                    self.renew(&kv).await;
                }
                _ = regions.tick() => self.read_regions(store.as_ref()).await,
                _ = rebalance.tick() => self.rebalance(&kv, owners.as_ref()).await,
            }
        }
        self.leave(&kv).await;
    }

    async fn open_bucket(&self, client: &async_nats::Client) -> anyhow::Result<kv::Store> {
        let options = &self.inner.options;
        let context = jetstream::new(client.clone());
        let store = match context.get_key_value(&options.bucket).await {
            Ok(store) => store,
            Err(_) => {
                // The stream a key-value bucket is, made by hand:
                // `create_key_value` first asks for the account's info,
                // whose answer from a 2.9 server async-nats 0.46 cannot read.
                context
                    .create_stream(jetstream::stream::Config {
                        name: format!("KV_{}", options.bucket),
                        description: Some("dispatchd region leases and node heartbeats".into()),
                        subjects: vec![format!("$KV.{}.>", options.bucket)],
                        max_messages_per_subject: 1,
                        max_age: options.lease_ttl,
                        allow_rollup: true,
                        deny_delete: true,
                        allow_direct: true,
                        discard: jetstream::stream::DiscardPolicy::New,
                        num_replicas: 1,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot create bucket {}: {e}", options.bucket))?;
                context.get_key_value(&options.bucket).await?
            }
        };
        let status = store.status().await?;
        if status.max_age() != options.lease_ttl {
            // The bucket's max age is the TTL every node's leases live by.
            anyhow::bail!(
                "bucket {} has a max age of {:?}, not cluster.lease_ttl_ms ({:?}); every node must use one TTL (delete the bucket to change it)",
                options.bucket,
                status.max_age(),
                options.lease_ttl
            );
        }
        Ok(store)
    }

    /// Keeps [`Watched`] up to date from the bucket (expiry by max age is
    /// not announced: a key not seen renewed within the TTL counts as gone).
    async fn watch(self, kv: kv::Store, shutdown: CancellationToken) {
        loop {
            match kv.watch_with_history(">").await {
                Ok(mut entries) => loop {
                    let next = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        next = entries.next() => next,
                    };
                    match next {
                        Some(Ok(entry)) => self.saw(entry),
                        Some(Err(error)) => {
                            tracing::warn!(%error, "Cluster watch failed; watching again");
                            break;
                        }
                        None => break,
                    }
                },
                Err(error) => tracing::warn!(%error, "Cluster watch not started; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    fn saw(&self, entry: kv::Entry) {
        metrics::counter!(m::CLUSTER_BUS_MESSAGES_TOTAL, "direction" => "in").increment(1);
        let put = entry.operation == kv::Operation::Put;
        let now = Instant::now();
        let mut watched = lock(&self.inner.watched);
        if let Some(node) = entry.key.strip_prefix(NODE_PREFIX) {
            if put {
                watched.nodes.insert(node.to_string(), now);
            } else {
                watched.nodes.remove(node);
            }
        } else if let Some(region) = entry.key.strip_prefix(LEASE_PREFIX).and_then(Region::parse) {
            match serde_json::from_slice::<LeaseValue>(&entry.value) {
                Ok(lease) if put => {
                    watched.leases.insert(
                        region,
                        Seen {
                            node: lease.node,
                            at: now,
                        },
                    );
                }
                _ => {
                    watched.leases.remove(&region);
                }
            }
        }
    }

    /// Drops the leases past their local deadline: they are not renewed in
    /// time, so another node may hold them soon.
    async fn fence(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(FENCE_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            let lapsed: Vec<Region> = {
                let mut held = lock(&self.inner.held);
                let lapsed: Vec<Region> = held
                    .iter()
                    .filter(|(_, h)| h.deadline <= now)
                    .map(|(region, _)| *region)
                    .collect();
                for region in &lapsed {
                    held.remove(region);
                }
                lapsed
            };
            if !lapsed.is_empty() {
                self.served_changed();
            }
            for region in lapsed {
                tracing::warn!(%region, "Lease not renewed in time; region no longer served");
                metrics::counter!(m::CLUSTER_LEASE_LOSSES_TOTAL, "reason" => "expired")
                    .increment(1);
            }
            self.report();
        }
    }

    fn report(&self) {
        let held = lock(&self.inner.held).len();
        metrics::gauge!(m::CLUSTER_REGIONS_OWNED).set(held as f64);
    }

    /// A bounded KV call: never longer than a renewal interval, so one
    /// slow answer does not hold up the next renewals.
    async fn bounded<T, E: std::fmt::Display>(
        &self,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, String> {
        metrics::counter!(m::CLUSTER_BUS_MESSAGES_TOTAL, "direction" => "out").increment(1);
        match tokio::time::timeout(self.inner.options.renew, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    async fn heartbeat(&self, kv: &kv::Store) {
        let key = format!("{NODE_PREFIX}{}", self.node_id());
        let value = serde_json::to_vec(&NodeValue {
            node: self.node_id().to_string(),
        })
        .unwrap_or_default();
        if let Err(error) = self.bounded(kv.put(key, value.into())).await {
            tracing::warn!(%error, "Cluster heartbeat not written");
        }
    }

    fn lease_value(&self) -> Vec<u8> {
        serde_json::to_vec(&LeaseValue {
            node: self.node_id().to_string(),
        })
        .unwrap_or_default()
    }

    fn deadline_from(&self, sent: Instant) -> Instant {
        sent + self.inner.options.lease_ttl - self.inner.options.fence_margin
    }

    async fn renew(&self, kv: &kv::Store) {
        let held: Vec<(Region, Held)> = lock(&self.inner.held)
            .iter()
            .map(|(region, held)| (*region, *held))
            .collect();
        let renewals = held.into_iter().map(|(region, held)| async move {
            let sent = Instant::now();
            let key = format!("{LEASE_PREFIX}{}", region.key());
            let answer = tokio::time::timeout(
                self.inner.options.renew,
                kv.update(&key, self.lease_value().into(), held.revision),
            )
            .await;
            metrics::counter!(m::CLUSTER_BUS_MESSAGES_TOTAL, "direction" => "out").increment(1);
            (region, held, sent, answer)
        });
        for (region, was, sent, answer) in futures::future::join_all(renewals).await {
            match answer {
                Ok(Ok(revision)) => {
                    metrics::counter!(m::CLUSTER_LEASE_RENEWALS_TOTAL, "result" => "ok")
                        .increment(1);
                    let mut held = lock(&self.inner.held);
                    // Unless the fence dropped it meanwhile.
                    if let Some(entry) = held.get_mut(&region)
                        && entry.revision == was.revision
                    {
                        entry.revision = revision;
                        entry.deadline = self.deadline_from(sent);
                    }
                }
                Ok(Err(error)) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    metrics::counter!(m::CLUSTER_LEASE_RENEWALS_TOTAL, "result" => "failed")
                        .increment(1);
                    self.renewal_refused(kv, region, was).await;
                }
                failed => {
                    metrics::counter!(m::CLUSTER_LEASE_RENEWALS_TOTAL, "result" => "failed")
                        .increment(1);
                    let error = match failed {
                        Ok(Err(error)) => error.to_string(),
                        _ => "timed out".into(),
                    };
                    tracing::warn!(%region, %error, "Lease not renewed; retrying until its deadline");
                }
            }
        }
        self.report();
    }

    /// The key moved on without us: either an earlier renewal that timed
    /// out did land (the value is still ours: carry on from it), or the
    /// lease lapsed and another node claimed it.
    async fn renewal_refused(&self, kv: &kv::Store, region: Region, was: Held) {
        let key = format!("{LEASE_PREFIX}{}", region.key());
        let current = self.bounded(kv.entry(key)).await;
        let ours = match &current {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                serde_json::from_slice::<LeaseValue>(&entry.value)
                    .is_ok_and(|lease| lease.node == self.node_id())
                    && entry.revision > was.revision
            }
            _ => false,
        };
        let mut held = lock(&self.inner.held);
        if ours && let (Ok(Some(entry)), Some(mine)) = (&current, held.get_mut(&region)) {
            mine.revision = entry.revision;
            return;
        }
        if held.remove(&region).is_some() {
            drop(held);
            self.served_changed();
            tracing::warn!(%region, "Lease taken by another node; region no longer served");
            metrics::counter!(m::CLUSTER_LEASE_LOSSES_TOTAL, "reason" => "taken").increment(1);
        }
    }

    async fn read_regions(&self, store: &dyn Store) {
        let filter = RestaurantFilter {
            bounds: None,
            cuisine: None,
            open_only: false,
        };
        match store.list_restaurants(&filter).await {
            Ok(restaurants) => {
                let regions: BTreeSet<Region> = restaurants
                    .iter()
                    .map(|r| self.region_of(r.location))
                    .collect();
                metrics::gauge!(m::CLUSTER_REGIONS).set(regions.len() as f64);
                *lock(&self.inner.regions) = regions;
                self.inner.regions_loaded.store(true, Ordering::Release);
            }
            Err(error) => tracing::warn!(%error, "Regions not read; keeping the last ones"),
        }
    }

    async fn rebalance(&self, kv: &kv::Store, owners: &dyn RegionOwners) {
        if !self.inner.regions_loaded.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        let ttl = self.inner.options.lease_ttl;
        let regions = lock(&self.inner.regions).clone();
        let mine: BTreeSet<Region> = lock(&self.inner.held).keys().copied().collect();
        let (counts, free, lapsed_owner) = {
            let mut watched = lock(&self.inner.watched);
            // Nodes killed long ago (a fresh id per process) are forgotten.
            watched.nodes.retain(|_, at| *at + ttl * 10 > now);
            let mut counts: BTreeMap<String, usize> = watched
                .nodes
                .iter()
                .filter(|(_, at)| **at + ttl > now)
                .map(|(node, _)| (node.clone(), 0))
                .collect();
            for seen in watched.leases.values() {
                if seen.at + ttl > now
                    && let Some(count) = counts.get_mut(&seen.node)
                {
                    *count += 1;
                }
            }
            counts.insert(self.node_id().to_string(), mine.len());
            let free: BTreeSet<Region> = regions
                .iter()
                .filter(|region| {
                    !mine.contains(region)
                        && watched
                            .leases
                            .get(region)
                            .is_none_or(|seen| seen.at + ttl <= now)
                })
                .copied()
                .collect();
            // Regions whose last holder stopped renewing: claiming one is a failover.
            let lapsed_owner: BTreeSet<Region> = free
                .iter()
                .filter(|region| watched.leases.contains_key(region))
                .copied()
                .collect();
            (counts, free, lapsed_owner)
        };
        metrics::gauge!(m::CLUSTER_NODES).set(counts.len() as f64);
        self.inner
            .free_at_last_look
            .store(free.len(), Ordering::Release);
        let plan = plan::plan(&plan::View {
            me: self.node_id(),
            regions: &regions,
            counts: &counts,
            mine: &mine,
            free: &free,
        });
        // At once, not one after another: each call is bounded by a renewal
        // interval, and the renewals wait for this.
        futures::future::join_all(plan.release.iter().map(|r| self.hand_over(kv, *r))).await;
        futures::future::join_all(
            plan.claim
                .iter()
                .map(|r| self.claim(kv, owners, *r, lapsed_owner.contains(r))),
        )
        .await;
        self.report();
    }

    /// Claims a free region: the lease first (the compare-and-set decides
    /// between racing nodes), then its epoch in Postgres; served only once
    /// both are done.
    async fn claim(
        &self,
        kv: &kv::Store,
        owners: &dyn RegionOwners,
        region: Region,
        failover: bool,
    ) {
        let sent = Instant::now();
        let key = format!("{LEASE_PREFIX}{}", region.key());
        match tokio::time::timeout(
            self.inner.options.renew,
            kv.create(&key, self.lease_value().into()),
        )
        .await
        {
            Ok(Ok(revision)) => {
                metrics::counter!(m::CLUSTER_BUS_MESSAGES_TOTAL, "direction" => "out").increment(1);
                let recorded = owners
                    .record_claim(&region.key(), self.node_id(), revision as i64)
                    .await;
                if !matches!(recorded, Ok(true)) {
                    // Without the record every write would be refused:
                    // give the lease back rather than hold it idle.
                    let why = match recorded {
                        Ok(_) => "a newer epoch is recorded".to_string(),
                        Err(error) => error.to_string(),
                    };
                    tracing::warn!(%region, epoch = revision, %why, "Region claim not recorded in Postgres; releasing the lease");
                    let _ = self
                        .bounded(kv.delete_expect_revision(&key, Some(revision)))
                        .await;
                    return;
                }
                lock(&self.inner.recorded).insert(region, revision);
                lock(&self.inner.held).insert(
                    region,
                    Held {
                        revision,
                        epoch: revision,
                        deadline: self.deadline_from(sent),
                    },
                );
                let kind = if failover { "failover" } else { "free" };
                metrics::counter!(m::CLUSTER_LEASE_CLAIMS_TOTAL, "kind" => kind).increment(1);
                if failover {
                    metrics::counter!(m::CLUSTER_FAILOVERS_TOTAL).increment(1);
                }
                self.served_changed();
                tracing::info!(%region, epoch = revision, failover, "Region claimed");
            }
            Ok(Err(error)) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                tracing::debug!(%region, "Region held by another node");
            }
            Ok(Err(error)) => tracing::warn!(%region, %error, "Region not claimed"),
            Err(_) => tracing::warn!(%region, "Region claim timed out"),
        }
    }

    /// Stops serving `region`, then deletes its lease at our revision, so
    /// that the next node to claim it starts after we stopped.
    async fn hand_over(&self, kv: &kv::Store, region: Region) {
        let Some(held) = lock(&self.inner.held).remove(&region) else {
            return;
        };
        lock(&self.inner.recorded).remove(&region);
        self.served_changed();
        let key = format!("{LEASE_PREFIX}{}", region.key());
        match self
            .bounded(kv.delete_expect_revision(key, Some(held.revision)))
            .await
        {
            Ok(()) => {
                metrics::counter!(m::CLUSTER_LEASE_HANDOVERS_TOTAL).increment(1);
                tracing::info!(%region, "Region handed over");
            }
            // It lapses within the TTL instead.
            Err(error) => tracing::warn!(%region, %error, "Lease not released; it will lapse"),
        }
    }

    /// Graceful leave: every lease handed over, then the heartbeat deleted.
    async fn leave(&self, kv: &kv::Store) {
        let regions: Vec<Region> = lock(&self.inner.held).keys().copied().collect();
        let count = regions.len();
        futures::future::join_all(regions.into_iter().map(|region| self.hand_over(kv, region)))
            .await;
        let key = format!("{NODE_PREFIX}{}", self.node_id());
        if let Err(error) = self.bounded(kv.delete(key)).await {
            tracing::warn!(%error, "Cluster heartbeat not deleted; it will lapse");
        }
        self.report();
        tracing::info!(regions = count, "Left the cluster");
    }
}

impl OrderFencing for Cluster {
    fn fence_for(&self, at: LatLon) -> Result<WriteFence, StoreError> {
        let region = self.region_of(at);
        match self.serving_epoch(region) {
            Some(epoch) => Ok(WriteFence {
                region: region.key(),
                node: self.node_id().to_string(),
                epoch: epoch as i64,
            }),
            None => {
                metrics::counter!(m::CLUSTER_FENCED_WRITES_TOTAL, "stage" => "node").increment(1);
                Err(StoreError::NotServed {
                    region: region.key(),
                    owner: self.holder_of(region),
                })
            }
        }
    }
}

impl actors::engine::order::OrderPartition for Cluster {
    fn check(&self, at: LatLon) -> Result<(), StoreError> {
        let region = self.region_of(at);
        match self.serving_epoch(region) {
            Some(_) => Ok(()),
            None => Err(StoreError::NotServed {
                region: region.key(),
                owner: self.holder_of(region),
            }),
        }
    }
}

/// Keeps this node's order actors to the regions it serves: whenever they
/// change, the actors of orders in regions it lost or handed over stop
/// (each leaves dispatch first; their local watchers go on following them
/// over the bus), then the live orders of the restaurants of the regions
/// it claimed, and only those, are read from Postgres and started (their
/// watchers here that followed them over the bus move to the new feeds).
/// Runs until `shutdown`.
pub fn follow_regions(
    cluster: &Cluster,
    orders: actors::engine::order::Orders,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let mut changed = cluster.inner.served_changed.subscribe();
    let cluster = cluster.clone();
    tokio::spawn(async move {
        // The regions whose orders are loaded here; a load that failed is
        // tried again every second until it succeeds.
        let mut loaded: BTreeSet<Region> = BTreeSet::new();
        let mut retry = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                next = changed.changed() => if next.is_err() { return },
                _ = tokio::time::sleep(Duration::from_secs(1)), if retry => {}
            }
            changed.mark_unchanged();
            let released = orders.release_unserved();
            if released > 0 {
                metrics::counter!(m::CLUSTER_ORDERS_RELEASED_TOTAL).increment(released as u64);
                tracing::info!(
                    orders = released,
                    "Orders of regions no longer served stopped"
                );
            }
            let leased: BTreeSet<Region> = cluster.leased().into_iter().collect();
            // The commands of regions it holds now are answered here, those
            // of regions it lost no longer (before loading: a command that
            // comes first starts its order's actor itself).
            if let Some(commands) = cluster.commands() {
                let leased: Vec<Region> = leased.iter().copied().collect();
                commands
                    .serve_only(&cluster, &leased, &orders, &store)
                    .await;
            }
            // Drivers of other nodes near them, for their dispatch.
            if let Some(link) = cluster.driver_link() {
                let leased: Vec<Region> = leased.iter().copied().collect();
                link.serve_only(&leased).await;
            }
            loaded.retain(|region| leased.contains(region));
            // Only the regions claimed since the last load are read.
            let claimed: Vec<Region> = leased.difference(&loaded).copied().collect();
            if claimed.is_empty() {
                retry = false;
                continue;
            }
            let started = Instant::now();
            let deg = cluster.inner.options.region_deg;
            let areas: Vec<_> = claimed.iter().map(|region| region.area(deg)).collect();
            match orders.recover_within(&areas).await {
                Ok((read, count)) => {
                    retry = false;
                    loaded.extend(claimed);
                    metrics::counter!(m::CLUSTER_ORDERS_READ_TOTAL).increment(read as u64);
                    metrics::counter!(m::CLUSTER_ORDERS_LOADED_TOTAL).increment(count as u64);
                    tracing::info!(
                        orders = count,
                        read,
                        millis = started.elapsed().as_millis() as u64,
                        "Live orders of claimed regions loaded"
                    );
                }
                // Meanwhile a command on one of those orders starts its
                // actor itself.
                Err(error) => {
                    retry = true;
                    tracing::warn!(%error, "Live orders of claimed regions not loaded; retrying");
                }
            }
        }
    })
}
