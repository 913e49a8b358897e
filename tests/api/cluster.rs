//! Cluster mode: real `dispatchd` nodes on one fresh Postgres database and
//! one fresh JetStream key-value bucket per test, on the machine's NATS.

use crate::helpers::*;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn cluster_mode_refuses_to_start_on_sqlite_and_says_why() {
    let path = std::env::temp_dir().join(format!(
        "dispatchd-cluster-{}.db",
        uuid::Uuid::new_v4().simple()
    ));
    let output = Command::new(env!("CARGO_BIN_EXE_dispatchd"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(["--database-url", &format!("sqlite:{}", path.display())])
        .env("DISPATCH__AUTH__JWT_SECRET", JWT_SECRET)
        .env("DISPATCH__CLUSTER__NATS_URL", "nats://127.0.0.1:4222")
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .expect("run dispatchd");
    assert!(
        !output.status.success(),
        "started on SQLite in cluster mode"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cluster mode (cluster.nats_url) needs Postgres"),
        "{stderr}"
    );
    // Refused before it listened or touched the file.
    assert!(!String::from_utf8_lossy(&output.stdout).contains("listening on"));
    assert!(!path.exists());
}

/// Cluster mode needs Postgres and NATS: on the SQLite run these tests say
/// so and pass; without NATS they skip unless `DISPATCHD_TEST_NATS=required`.
pub(crate) async fn cluster_available() -> bool {
    if std::env::var("DISPATCHD_TEST_POSTGRES").map_or(true, |url| url.is_empty()) {
        eprintln!("skipped: cluster mode needs Postgres (set DISPATCHD_TEST_POSTGRES)");
        return false;
    }
    if tokio::net::TcpStream::connect(("127.0.0.1", 4222))
        .await
        .is_ok()
    {
        return true;
    }
    if std::env::var("DISPATCHD_TEST_NATS").as_deref() == Ok("required") {
        panic!("DISPATCHD_TEST_NATS=required, but NATS is not on 127.0.0.1:4222");
    }
    eprintln!("skipped: no NATS on 127.0.0.1:4222; .ci/run starts one");
    false
}

/// One test's cluster: a fresh database and a fresh bucket, and its nodes.
pub(crate) struct TestCluster {
    db: TestDb,
    bucket: String,
    env: Vec<(String, String)>,
}

impl TestCluster {
    pub(crate) async fn new(lease_ttl_ms: u64) -> TestCluster {
        let bucket = format!("dispatchd_test_{}", uuid::Uuid::new_v4().simple());
        let env = vec![
            (
                "DISPATCH__CLUSTER__NATS_URL",
                "nats://127.0.0.1:4222".to_string(),
            ),
            ("DISPATCH__CLUSTER__BUCKET", bucket.clone()),
            ("DISPATCH__CLUSTER__LEASE_TTL_MS", lease_ttl_ms.to_string()),
            ("DISPATCH__CLUSTER__RENEW_MS", "500".to_string()),
            ("DISPATCH__CLUSTER__FENCE_MARGIN_MS", "1000".to_string()),
            ("DISPATCH__CLUSTER__REBALANCE_MS", "300".to_string()),
            // Small cells: the demo city's thirty restaurants make several regions.
            ("DISPATCH__CLUSTER__REGION_DEG", "0.02".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        TestCluster {
            db: TestDb::fresh().await,
            bucket,
            env,
        }
    }

    /// Starts a node; the first loads the demo city.
    pub(crate) async fn node(&self, first: bool) -> TestApp {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        TestApp::spawn_on(self.db.clone(), first, &env).await
    }

    /// Starts a node that reaches Postgres through `link` (cut it for a
    /// store outage of this node alone); the first loads the demo city.
    pub(crate) async fn node_through(&self, link: &StoreLink, first: bool) -> TestApp {
        let TestDb::Postgres { name, .. } = &self.db else {
            panic!("cluster mode needs Postgres");
        };
        let url = format!("postgres://postgres@127.0.0.1:{}/{name}", link.port);
        let mut env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        env.push(("DISPATCHD_TEST_URL_OVERRIDE", &url));
        TestApp::spawn_on(self.db.clone(), first, &env).await
    }

    /// One more setting for every node of this cluster.
    pub(crate) fn with(mut self, key: &str, value: &str) -> TestCluster {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The bucket's name, the prefix of the cluster's subjects.
    pub(crate) fn bucket(&self) -> &str {
        &self.bucket
    }

    pub(crate) async fn drop_bucket(&self) {
        if let Ok(client) = async_nats::connect("nats://127.0.0.1:4222").await {
            let _ = async_nats::jetstream::new(client)
                .delete_key_value(&self.bucket)
                .await;
        }
    }
}

/// What one node says of the cluster: its id, and region -> (holder, epoch
/// if it is this node's).
pub(crate) struct Seen {
    pub(crate) node: String,
    pub(crate) regions: Vec<(String, Option<String>, Option<u64>)>,
}

impl Seen {
    pub(crate) fn mine(&self) -> Vec<(String, u64)> {
        self.regions
            .iter()
            .filter_map(|(region, _, epoch)| epoch.map(|e| (region.clone(), e)))
            .collect()
    }
}

pub(crate) async fn seen(app: &TestApp, admin: &str) -> Seen {
    let body = app.get("/api/admin/cluster", Some(admin)).await.expect(200);
    assert_eq!(body["enabled"], true, "{body}");
    Seen {
        node: body["nodeId"].as_str().expect("nodeId").to_string(),
        regions: body["regions"]
            .as_array()
            .expect("regions")
            .iter()
            .map(|r| {
                (
                    r["region"].as_str().expect("region").to_string(),
                    r["node"].as_str().map(String::from),
                    r["epoch"].as_u64(),
                )
            })
            .collect(),
    }
}

/// Waits until the `nodes` between them own every region exactly once,
/// with counts within one of each other; returns what each owns.
async fn settled(nodes: &[&TestApp], admin: &str, within: Duration) -> Vec<Vec<(String, u64)>> {
    let started = Instant::now();
    loop {
        let mut views = Vec::new();
        for node in nodes {
            views.push(seen(node, admin).await);
        }
        let all: BTreeSet<String> = views[0].regions.iter().map(|r| r.0.clone()).collect();
        let owned: Vec<Vec<(String, u64)>> = views.iter().map(Seen::mine).collect();
        let mut union: Vec<String> = owned.iter().flatten().map(|(r, _)| r.clone()).collect();
        union.sort();
        let counts: Vec<usize> = owned.iter().map(Vec::len).collect();
        let even = counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0) <= 1;
        if !all.is_empty() && union == all.iter().cloned().collect::<Vec<_>>() && even {
            return owned;
        }
        assert!(
            started.elapsed() < within,
            "not settled within {within:?}: regions {all:?}, owned {owned:?} by {:?}",
            views.iter().map(|v| &v.node).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn three_nodes_own_every_region_once_spread_evenly_and_are_ready() {
    if !cluster_available().await {
        return;
    }
    let cluster = TestCluster::new(3000).await;
    let a = cluster.node(true).await;
    let b = cluster.node(false).await;
    let c = cluster.node(false).await;
    let admin = a.token("admin").await;
    let owned = settled(&[&a, &b, &c], &admin, Duration::from_secs(15)).await;
    assert!(
        owned.iter().map(Vec::len).sum::<usize>() >= 3,
        "the test needs a region per node: {owned:?}"
    );
    for (node, mine) in [&a, &b, &c].iter().zip(&owned) {
        node.get("/readyz", None).await.expect(200);
        let gauge = node.metric("dispatch_cluster_regions_owned").await;
        assert_eq!(gauge as usize, mine.len());
    }
    // Each node sees the same holder for every region.
    let views = [seen(&a, &admin).await, seen(&b, &admin).await];
    for ((region, holder_a, _), (_, holder_b, _)) in views[0].regions.iter().zip(&views[1].regions)
    {
        assert_eq!(holder_a, holder_b, "{region}");
    }
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn a_killed_nodes_regions_are_owned_again_by_the_others_within_ten_seconds() {
    if !cluster_available().await {
        return;
    }
    let cluster = TestCluster::new(3000).await;
    let a = cluster.node(true).await;
    let mut b = cluster.node(false).await;
    let c = cluster.node(false).await;
    let admin = a.token("admin").await;
    let before = settled(&[&a, &b, &c], &admin, Duration::from_secs(15)).await;
    assert!(!before[1].is_empty(), "b owns nothing: {before:?}");
    b.kill();
    let killed = Instant::now();
    let after = settled(&[&a, &c], &admin, Duration::from_secs(10)).await;
    let took = killed.elapsed();
    eprintln!("regions owned again {} ms after SIGKILL", took.as_millis());
    // Every region of b's has a new epoch: claimed afresh, not inherited.
    for (region, old) in &before[1] {
        let new = after
            .iter()
            .flatten()
            .find(|(r, _)| r == region)
            .expect("owned");
        assert!(new.1 > *old, "{region}: epoch {} after {}", new.1, old);
    }
    let failovers = a.metric("dispatch_cluster_failovers_total").await
        + c.metric("dispatch_cluster_failovers_total").await;
    assert_eq!(failovers as usize, before[1].len());
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn a_node_that_stops_hands_its_regions_over_before_its_leases_could_lapse() {
    if !cluster_available().await {
        return;
    }
    // A long TTL: a region that waited for its lease to lapse would take 8 s.
    let cluster = TestCluster::new(8000).await;
    let a = cluster.node(true).await;
    let mut b = cluster.node(false).await;
    let admin = a.token("admin").await;
    let before = settled(&[&a, &b], &admin, Duration::from_secs(15)).await;
    assert!(!before[1].is_empty(), "b owns nothing: {before:?}");
    assert!(b.terminate().success());
    let stopped = Instant::now();
    settled(&[&a], &admin, Duration::from_secs(3)).await;
    eprintln!(
        "regions handed over {} ms after SIGTERM",
        stopped.elapsed().as_millis()
    );
    assert_eq!(a.metric("dispatch_cluster_failovers_total").await, 0.0);
    a.get("/readyz", None).await.expect(200);
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn a_paused_owner_stops_serving_and_never_uses_its_lapsed_leases_again() {
    if !cluster_available().await {
        return;
    }
    let cluster = TestCluster::new(3000).await;
    let a = cluster.node(true).await;
    let b = cluster.node(false).await;
    let admin = a.token("admin").await;
    let before = settled(&[&a, &b], &admin, Duration::from_secs(15)).await;
    assert!(!before[0].is_empty(), "a owns nothing: {before:?}");
    a.signal("STOP");
    // Past a's leases: b takes every region.
    let during = settled(&[&b], &admin, Duration::from_secs(10)).await;
    a.signal("CONT");
    let old: BTreeSet<u64> = before[0].iter().map(|(_, e)| *e).collect();
    let taken: std::collections::BTreeMap<String, u64> = during[0].iter().cloned().collect();
    // From its first answer on, a serves none of its old leases: what it
    // holds (after rebalancing) it claimed again after b did.
    let resumed = Instant::now();
    while resumed.elapsed() < Duration::from_secs(4) {
        for (region, epoch) in seen(&a, &admin).await.mine() {
            assert!(
                !old.contains(&epoch),
                "{region}: a serves its lapsed lease {epoch}"
            );
            if let Some(b_epoch) = taken.get(&region) {
                assert!(
                    epoch > *b_epoch,
                    "{region}: {epoch} not after b's {b_epoch}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(a.metric("dispatch_cluster_lease_losses_total").await >= old.len() as f64);
    settled(&[&a, &b], &admin, Duration::from_secs(10)).await;
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn a_node_that_cannot_reach_nats_serves_liveness_but_is_not_ready() {
    if std::env::var("DISPATCHD_TEST_POSTGRES").map_or(true, |url| url.is_empty()) {
        eprintln!("skipped: cluster mode needs Postgres (set DISPATCHD_TEST_POSTGRES)");
        return;
    }
    // Nothing listens on port 9: the node starts, holds no lease, and says so.
    let app = TestApp::spawn_with(
        true,
        &[("DISPATCH__CLUSTER__NATS_URL", "nats://127.0.0.1:9")],
    )
    .await;
    app.get("/healthz", None).await.expect(200);
    for _ in 0..10 {
        let ready = app.get("/readyz", None).await;
        ready.expect_error(503, "ENGINE_UNAVAILABLE");
        assert_eq!(ready.fields(), vec!["cluster".to_string()]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let admin = app.token("admin").await;
    let status = app
        .get("/api/admin/cluster", Some(&admin))
        .await
        .expect(200);
    assert_eq!(status["enabled"], true);
    assert!(
        status["regions"]
            .as_array()
            .is_some_and(|r| r.iter().all(|r| r["node"].is_null()))
    );
    let customer = app.token("customer1").await;
    app.get("/api/admin/cluster", Some(&customer))
        .await
        .expect_error(403, "FORBIDDEN");
}

#[tokio::test]
async fn a_single_node_says_cluster_mode_is_off() {
    let app = TestApp::spawn().await;
    let admin = app.token("admin").await;
    let status = app
        .get("/api/admin/cluster", Some(&admin))
        .await
        .expect(200);
    assert_eq!(status, serde_json::json!({ "enabled": false }));
}

/// The region of demo restaurant 1 on the tests' 0.02-degree grid (as
/// `src/cluster/region.rs` names it).
pub(crate) fn restaurant_1_region() -> String {
    let (lat, lon) = RESTAURANT_1_AT;
    format!(
        "r{}_{}",
        (lat / 0.02).floor() as i64,
        (lon / 0.02).floor() as i64
    )
}

/// The node of `nodes` that holds `region`, and the others.
async fn holder_of<'a>(
    nodes: [&'a TestApp; 2],
    admin: &str,
    region: &str,
) -> (&'a TestApp, &'a TestApp) {
    for (i, node) in nodes.iter().enumerate() {
        if seen(node, admin)
            .await
            .mine()
            .iter()
            .any(|(r, _)| r == region)
        {
            return (node, nodes[1 - i]);
        }
    }
    panic!("nobody holds {region}");
}

/// Two nodes; the one holding restaurant 1's region, the other, and an
/// admin's token.
pub(crate) async fn two_nodes(cluster: &TestCluster) -> (TestApp, TestApp, String) {
    let a = cluster.node(true).await;
    let b = cluster.node(false).await;
    owner_first(a, b).await
}

/// Two nodes, each reaching Postgres through its own link: the one holding
/// restaurant 1's region and its link, the other and its link, and an
/// admin's token.
pub(crate) async fn two_nodes_through(
    cluster: &TestCluster,
) -> ((TestApp, StoreLink), (TestApp, StoreLink), String) {
    let (link_a, link_b) = (
        StoreLink::open("127.0.0.1:5432").await,
        StoreLink::open("127.0.0.1:5432").await,
    );
    let a = cluster.node_through(&link_a, true).await;
    let b = cluster.node_through(&link_b, false).await;
    let a_address = a.address.clone();
    let (owner, other, admin) = owner_first(a, b).await;
    if owner.address == a_address {
        ((owner, link_a), (other, link_b), admin)
    } else {
        ((owner, link_b), (other, link_a), admin)
    }
}

/// `a` and `b` once they settled, the holder of restaurant 1's region first.
async fn owner_first(a: TestApp, b: TestApp) -> (TestApp, TestApp, String) {
    let admin = a.token("admin").await;
    settled(&[&a, &b], &admin, Duration::from_secs(15)).await;
    let a_holds = seen(&a, &admin)
        .await
        .mine()
        .iter()
        .any(|(r, _)| *r == restaurant_1_region());
    if a_holds {
        (a, b, admin)
    } else {
        (b, a, admin)
    }
}

/// The `details` of an error answer as (field, message) pairs.
fn details(response: &Response) -> Vec<(String, String)> {
    response.body["details"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|e| {
                    (
                        e["field"].as_str().unwrap_or_default().to_string(),
                        e["message"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn an_order_placed_and_confirmed_through_a_node_that_does_not_serve_its_region_runs_on_its_owner()
 {
    if !cluster_available().await {
        return;
    }
    let cluster = TestCluster::new(3000).await;
    let a = cluster.node(true).await;
    let b = cluster.node(false).await;
    let admin = a.token("admin").await;
    settled(&[&a, &b], &admin, Duration::from_secs(15)).await;
    let region = restaurant_1_region();
    let (owner, other) = holder_of([&a, &b], &admin, &region).await;
    let customer = a.token("customer1").await;
    let staff = a.token("restaurant1").await;

    // Placed through the other node: its store refuses the write (the
    // region is not its own), and it carries the priced order to the owner,
    // which writes it and runs its actor.
    let placed = other
        .create_with_key(&customer, "cross-node-1", 2)
        .await
        .expect(201);
    let id = placed["order"]["id"].as_i64().expect("id");
    // Its idempotency key was claimed in the owner's transaction: a retry
    // through either node replays it, another body is refused.
    for node in [owner, other] {
        let again = node.create_with_key(&customer, "cross-node-1", 2).await;
        assert_eq!(
            again
                .headers
                .get("idempotent-replayed")
                .map(|v| v.as_bytes()),
            Some(&b"true"[..])
        );
        assert_eq!(again.expect(201)["order"]["id"], id);
    }
    other
        .create_with_key(&customer, "cross-node-1", 3)
        .await
        .expect_error(422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(placed["order"]["status"], "PLACED", "{placed}");
    assert_eq!(placed["items"][0]["quantity"], 2, "{placed}");
    assert_eq!(
        other
            .metric("dispatch_cluster_fenced_writes_total{stage=\"node\"}")
            .await,
        1.0
    );
    assert_eq!(owner.metric("dispatch_order_actors").await, 1.0);

    // A watcher on the other node gets the snapshot too (from Postgres;
    // its updates come over the bus), as one on the owner does.
    let mut elsewhere = WsClient::connect(other, &customer).await;
    elsewhere
        .send(serde_json::json!({ "type": "subscribe", "orderId": id }))
        .await;
    assert_eq!(
        elsewhere.next_of("snapshot", 5).await["order"]["status"],
        "PLACED"
    );
    let mut here = WsClient::connect(owner, &customer).await;
    here.send(serde_json::json!({ "type": "subscribe", "orderId": id }))
        .await;
    here.next_of("snapshot", 5).await;

    // Confirmed through the other node: it runs no actor for the order and
    // carries the command over NATS to the owner, which answers.
    let confirmed = other.act(&staff, id, "confirm").await.expect(200);
    assert_eq!(confirmed["order"]["status"], "CONFIRMED", "{confirmed}");
    assert_eq!(confirmed["order"]["version"], 2, "{confirmed}");
    assert_eq!(other.metric("dispatch_order_actors").await, 0.0);
    assert_eq!(
        other
            .metric("dispatch_cluster_forwarded_commands_total{result=\"ok\"}")
            .await,
        2.0
    );
    assert_eq!(
        other
            .metric("dispatch_cluster_forward_duration_seconds_count")
            .await,
        2.0
    );
    eprintln!(
        "two forwarded commands (place, confirm) took {:.1} ms together",
        other
            .metric("dispatch_cluster_forward_duration_seconds_sum")
            .await
            * 1000.0
    );
    assert_eq!(
        owner
            .metric("dispatch_cluster_forwarded_commands_served_total")
            .await,
        2.0
    );
    // The errors are the owner's own, word for word.
    let customer_tries = other.act(&customer, id, "start_preparing").await;
    customer_tries.expect_error(403, "FORBIDDEN");
    assert_eq!(
        customer_tries.body,
        owner.act(&customer, id, "start_preparing").await.body
    );
    let again = other.act(&staff, id, "confirm").await;
    again.expect_error(409, "INVALID_TRANSITION");
    assert_eq!(again.body, owner.act(&staff, id, "confirm").await.body);
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn a_paused_owners_commit_after_its_lease_was_taken_is_refused_by_postgres_itself() {
    if !cluster_available().await {
        return;
    }
    // Both nodes ignore their own clock's fence (a test-only setting):
    // whichever is paused writes with its old epoch when it resumes, and
    // only region_owners in Postgres stands in the way.
    let cluster = TestCluster::new(3000).await.with(
        "DISPATCH__CLUSTER__UNSAFE_SKIP_LOCAL_FENCE_FOR_TESTS",
        "true",
    );
    let a = cluster.node(true).await;
    let b = cluster.node(false).await;
    let admin = a.token("admin").await;
    settled(&[&a, &b], &admin, Duration::from_secs(15)).await;
    let region = restaurant_1_region();
    let (owner, other) = holder_of([&a, &b], &admin, &region).await;
    let customer = a.token("customer1").await;
    let staff = a.token("restaurant1").await;
    let id = owner.place_order(&customer).await["id"]
        .as_i64()
        .expect("id");

    owner.signal("STOP");
    let paused = Instant::now();
    while !seen(other, &admin)
        .await
        .mine()
        .iter()
        .any(|(r, _)| *r == region)
    {
        assert!(
            paused.elapsed() < Duration::from_secs(10),
            "{region} not taken over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The stale owner's confirm waits in its socket while it is paused and
    // runs the moment it resumes, before it hears of the lease it lost. Its
    // order actor still has version 1, as the row does: the version check
    // alone would let it commit.
    let (stale, ()) = tokio::join!(owner.act(&staff, id, "confirm"), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        owner.signal("CONT");
    });
    // Postgres refused its commit; nothing of it was written, so the node
    // carried the command to the region's owner, which confirmed it.
    assert_eq!(
        owner
            .metric("dispatch_cluster_fenced_writes_total{stage=\"database\"}")
            .await,
        1.0
    );
    let confirmed = stale.expect(200);
    assert_eq!(confirmed["order"]["version"], 2, "{confirmed}");
    assert_eq!(
        owner
            .metric("dispatch_cluster_forwarded_commands_total{result=\"ok\"}")
            .await,
        1.0
    );
    assert_eq!(
        other
            .metric("dispatch_cluster_forwarded_commands_served_total")
            .await,
        1.0
    );
    // And only the owner's write is in the order's history.
    let events = other
        .get(&format!("/api/orders/{id}/events"), Some(&admin))
        .await
        .expect(200);
    let confirmations = events.to_string().matches("\"CONFIRMED\"").count();
    assert_eq!(confirmations, 1, "{events}");
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn an_order_runs_on_its_regions_owner_only_and_after_a_sigkill_another_node_serves_it() {
    if !cluster_available().await {
        return;
    }
    let cluster = TestCluster::new(3000).await;
    let (mut owner, b, c, _admin) = three_nodes(&cluster).await;
    let region = restaurant_1_region();
    let customer = owner.token("customer1").await;
    let staff = owner.token("restaurant1").await;
    let id = owner.place_order(&customer).await["id"]
        .as_i64()
        .expect("id");
    owner.act(&staff, id, "confirm").await.expect(200);
    // Only the owner runs the order's actor.
    assert_eq!(owner.metric("dispatch_order_actors").await, 1.0, "owner");
    let nodes = [b, c];
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(node.metric("dispatch_order_actors").await, 0.0, "node {i}");
    }

    owner.kill();
    let killed = Instant::now();
    // Before a survivor claims the region, a command on the order finds no
    // owner on the bus: answered at once, naming the region, nothing changed.
    let early = nodes[0].act(&staff, id, "start_preparing").await;
    early.expect_error(503, "ENGINE_UNAVAILABLE");
    assert_eq!(details(&early)[0], ("region".to_string(), region.clone()));
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "{:?}",
        killed.elapsed()
    );
    // Within the failover target, one of the two others claims the region
    // and loads the order from Postgres by itself, before any command.
    let served_by = loop {
        let mut loaded = None;
        for (i, node) in nodes.iter().enumerate() {
            if node.metric("dispatch_order_actors").await == 1.0 {
                loaded = Some(i);
            }
        }
        if let Some(i) = loaded {
            break i;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "order {id} not loaded again within 10 s of the SIGKILL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "order loaded by another node {} ms after SIGKILL of its owner",
        killed.elapsed().as_millis()
    );
    let new_owner = &nodes[served_by];
    assert_eq!(
        new_owner
            .metric("dispatch_cluster_orders_loaded_total")
            .await,
        1.0
    );
    new_owner
        .act(&staff, id, "start_preparing")
        .await
        .expect(200);
    let order = new_owner
        .get(&format!("/api/orders/{id}"), Some(&customer))
        .await
        .expect(200);
    assert_eq!(order["order"]["status"], "PREPARING", "{order}");
    assert_eq!(order["order"]["version"], 3, "{order}");
    // The survivor that did not claim it runs nothing of it, and carries
    // a command on it to the new owner.
    let other = &nodes[1 - served_by];
    assert_eq!(other.metric("dispatch_order_actors").await, 0.0);
    let ready = other.act(&staff, id, "mark_ready").await.expect(200);
    assert_eq!(ready["order"]["version"], 4, "{ready}");
    assert_eq!(
        other
            .metric("dispatch_cluster_forwarded_commands_total{result=\"ok\"}")
            .await,
        1.0
    );
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn a_paused_owner_stops_its_orders_actors_when_it_resumes_and_the_new_owner_runs_them() {
    if !cluster_available().await {
        return;
    }
    let cluster = TestCluster::new(3000).await;
    let a = cluster.node(true).await;
    let b = cluster.node(false).await;
    let admin = a.token("admin").await;
    settled(&[&a, &b], &admin, Duration::from_secs(15)).await;
    let region = restaurant_1_region();
    let (owner, other) = holder_of([&a, &b], &admin, &region).await;
    let customer = a.token("customer1").await;
    let staff = a.token("restaurant1").await;
    let id = owner.place_order(&customer).await["id"]
        .as_i64()
        .expect("id");
    owner.act(&staff, id, "confirm").await.expect(200);
    assert_eq!(owner.metric("dispatch_order_actors").await, 1.0);

    owner.signal("STOP");
    let paused = Instant::now();
    while other.metric("dispatch_order_actors").await != 1.0 {
        assert!(
            paused.elapsed() < Duration::from_secs(10),
            "order {id} not loaded by the other node"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    owner.signal("CONT");
    let resumed = Instant::now();
    // Its lease lapsed while it slept: on waking it stops the actor.
    while owner.metric("dispatch_order_actors").await != 0.0 {
        assert!(
            resumed.elapsed() < Duration::from_secs(2),
            "the resumed node still runs order {id}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        owner.metric("dispatch_cluster_orders_released_total").await,
        1.0
    );
    other.act(&staff, id, "start_preparing").await.expect(200);
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn a_node_that_stops_hands_its_orders_to_the_new_owner_of_their_region() {
    if !cluster_available().await {
        return;
    }
    // A long TTL: an order that waited for its owner's lease to lapse
    // would not run again for 8 s.
    let cluster = TestCluster::new(8000).await;
    let (mut owner, other, _admin) = two_nodes(&cluster).await;
    let (owner, other) = (&mut owner, &other);
    let customer = other.token("customer1").await;
    let staff = other.token("restaurant1").await;
    let id = owner.place_order(&customer).await["id"]
        .as_i64()
        .expect("id");
    assert!(owner.terminate().success());
    let stopped = Instant::now();
    while other.metric("dispatch_order_actors").await != 1.0 {
        assert!(
            stopped.elapsed() < Duration::from_secs(4),
            "order {id} not handed over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "order running on the new owner {} ms after SIGTERM of the old one",
        stopped.elapsed().as_millis()
    );
    other.act(&staff, id, "confirm").await.expect(200);
    assert_eq!(other.metric("dispatch_cluster_failovers_total").await, 0.0);
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn orders_placed_through_another_node_while_the_owner_leaves_gracefully_are_never_refused() {
    if !cluster_available().await {
        return;
    }
    // Rebalancing every 1.5 s (not 300 ms) keeps the region between owners
    // long enough that an order placed every 10 ms meets the gap: with
    // 300 ms and 50 ms the gap was sometimes missed under load, and the
    // test proved nothing.
    let cluster = TestCluster::new(8000)
        .await
        .with("DISPATCH__ORDERS__PER_CUSTOMER_PER_MINUTE", "100000")
        .with("DISPATCH__CLUSTER__REBALANCE_MS", "1500");
    let (mut owner, other, _admin) = two_nodes(&cluster).await;
    let (owner, other) = (&mut owner, &other);
    let customer = other.token("customer1").await;
    // SIGTERM: the owner hands its regions over and exits, while orders
    // keep arriving through the other node, which must serve each one
    // (forwarded, then its own once it holds the region).
    owner.signal("TERM");
    let started = Instant::now();
    let mut placed = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let answer = other
            .create_with_key(&customer, &format!("during-leave-{placed}"), 1)
            .await;
        assert_eq!(
            answer.status,
            201,
            "order {placed} at {:?} after SIGTERM: {}",
            started.elapsed(),
            answer.body
        );
        placed += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(owner.wait_for_exit(10).success());
    // The hand-over's gap was there and was waited out, not refused.
    assert!(
        other
            .metric("dispatch_cluster_forwarded_commands_total{result=\"waited_for_owner\"}")
            .await
            >= 1.0,
        "no order met the region between owners: the test proved nothing"
    );
    assert_eq!(
        other
            .metric("dispatch_cluster_forwarded_commands_total{result=\"no_owner\"}")
            .await,
        0.0
    );
    assert_eq!(other.metric("dispatch_order_actors").await, placed as f64);
    cluster.drop_bucket().await;
}

/// `at` moved by `north_km` (roughly: 111 km a degree of latitude).
pub(crate) fn north_of(at: (f64, f64), north_km: f64) -> (f64, f64) {
    (at.0 + north_km / 111.0, at.1)
}

/// Three nodes; the one holding restaurant 1's region, and the other two.
pub(crate) async fn three_nodes(cluster: &TestCluster) -> (TestApp, TestApp, TestApp, String) {
    let first = cluster.node(true).await;
    let second = cluster.node(false).await;
    let third = cluster.node(false).await;
    let admin = first.token("admin").await;
    settled(&[&first, &second, &third], &admin, Duration::from_secs(20)).await;
    let region = restaurant_1_region();
    let mut nodes = vec![first, second, third];
    let mut owner = None;
    for (i, node) in nodes.iter().enumerate() {
        if seen(node, &admin)
            .await
            .mine()
            .iter()
            .any(|(r, _)| *r == region)
        {
            owner = Some(i);
        }
    }
    let owner = nodes.remove(owner.expect("someone holds restaurant 1's region"));
    let c = nodes.pop().expect("a third node");
    let a = nodes.pop().expect("a second node");
    (owner, a, c, admin)
}

#[tokio::test]
async fn a_watcher_on_a_node_that_does_not_run_the_order_gets_every_status_change_and_position() {
    if !cluster_available().await {
        return;
    }
    let cluster = TestCluster::new(3000)
        .await
        .with("DISPATCH__DISPATCH__ROUND_INTERVAL_MS", "200");
    // B owns the order's region; A and C do not.
    let (b, a, c, _admin) = three_nodes(&cluster).await;
    let customer = a.token("customer1").await;
    let staff = a.token("restaurant1").await;

    // Placed on A (carried to B), watched from C before anything else.
    let id = a
        .create_with_key(&customer, "watched-across", 1)
        .await
        .expect(201)["order"]["id"]
        .as_i64()
        .expect("id");
    let mut watcher = WsClient::connect(&c, &customer).await;
    watcher
        .send(serde_json::json!({ "type": "subscribe", "orderId": id }))
        .await;
    let snapshot = watcher.next_of("snapshot", 5).await;
    assert_eq!(snapshot["order"]["status"], "PLACED", "{snapshot}");
    assert_eq!(c.metric("dispatch_cluster_watched_orders").await, 1.0);
    assert_eq!(c.metric("dispatch_cluster_remote_watchers").await, 1.0);
    assert_eq!(c.metric("dispatch_order_actors").await, 0.0);

    // A driver on the owner's node, near the restaurant: confirmed on B,
    // the order is offered to it and it accepts.
    let near = north_of(RESTAURANT_1_AT, 0.3);
    let mut driver = TestDriver::online(&b, "driver1", near).await;
    b.act(&staff, id, "confirm").await.expect(200);
    watcher.next_status("CONFIRMED", 5).await;
    let offer = driver.answer_offer(true, 10).await;
    assert_eq!(offer["orderId"], id);
    assert_eq!(
        driver.ws.next_of("offer_result", 5).await["result"],
        "assigned"
    );
    // Assigned: still CONFIRMED, a new version that names the driver.
    let assigned = loop {
        let update = watcher.next_of("order_update", 5).await;
        if update["version"] == 3 {
            break update;
        }
    };
    assert_eq!(assigned["order"]["driverId"], driver.id, "{assigned}");
    // A status change sent to A (not the owner) reaches C's watcher too.
    a.act(&staff, id, "start_preparing").await.expect(200);
    watcher.next_status("PREPARING", 5).await;

    // The driver moves: every position reaches the watcher on C, over the bus.
    let steps = 5;
    for step in 1..=steps {
        driver
            .move_to(north_of(RESTAURANT_1_AT, 0.3 - 0.05 * step as f64))
            .await;
        // Apart, so that none is coalesced away in the watcher's outbox.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let mut lats = Vec::new();
    while let Some(m) = watcher.next_within(Duration::from_millis(1000)).await {
        if m["type"] == "driver_location" {
            assert_eq!(m["orderId"], id, "{m}");
            assert_eq!(m["location"]["driverId"], driver.id, "{m}");
            lats.push(m["location"]["lat"].as_f64().unwrap_or_default());
        }
    }
    let expected: Vec<f64> = (1..=steps)
        .map(|step| north_of(RESTAURANT_1_AT, 0.3 - 0.05 * step as f64).0)
        .collect();
    assert_eq!(lats.len(), expected.len(), "{lats:?}");
    for (got, want) in lats.iter().zip(&expected) {
        assert!((got - want).abs() < 1e-9, "{lats:?} vs {expected:?}");
    }
    assert!(
        c.metric("dispatch_cluster_order_bus_messages_total{direction=\"in\",kind=\"location\"}")
            .await
            >= steps as f64
    );
    assert!(
        b.metric("dispatch_cluster_order_bus_messages_total{direction=\"out\",kind=\"update\"}")
            .await
            >= 3.0
    );
    eprintln!(
        "cross-node fan-out of {} positions: {:.1} ms in all",
        c.metric("dispatch_cluster_fanout_latency_seconds_count{kind=\"location\"}")
            .await,
        c.metric("dispatch_cluster_fanout_latency_seconds_sum{kind=\"location\"}")
            .await
            * 1000.0
    );

    // The watcher leaves: C ends its one subscription to the order.
    watcher
        .send(serde_json::json!({ "type": "unsubscribe", "orderId": id }))
        .await;
    let mut gone = false;
    for _ in 0..50 {
        if c.metric("dispatch_cluster_watched_orders").await == 0.0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "C is still subscribed to the order");
    assert_eq!(
        c.metric("dispatch_cluster_order_subscriptions_total{op=\"unsubscribe\"}")
            .await,
        // Its updates and its positions, each a subscription.
        2.0
    );
    // Nothing of the order reaches C any more, not even to be dropped.
    let heard = "dispatch_cluster_order_bus_messages_total{direction=\"in\"";
    let heard_before = c.metric(heard).await;
    driver.move_to(RESTAURANT_1_AT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    driver.move_to(north_of(RESTAURANT_1_AT, 0.01)).await;
    assert!(
        watcher
            .next_within(Duration::from_millis(700))
            .await
            .is_none(),
        "an unsubscribed watcher heard more"
    );
    assert_eq!(c.metric(heard).await, heard_before);
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn an_owner_publishes_an_orders_positions_only_while_another_node_watches_it() {
    if !cluster_available().await {
        return;
    }
    let cluster = TestCluster::new(3000)
        .await
        .with("DISPATCH__DISPATCH__ROUND_INTERVAL_MS", "200");
    let (owner, other, _admin) = two_nodes(&cluster).await;
    let (owner, other) = (&owner, &other);
    let customer = owner.token("customer1").await;
    let staff = owner.token("restaurant1").await;
    let id = owner
        .create_with_key(&customer, "interest", 1)
        .await
        .expect(201)["order"]["id"]
        .as_i64()
        .expect("id");
    let mut driver = TestDriver::online(owner, "driver1", north_of(RESTAURANT_1_AT, 0.3)).await;
    owner.act(&staff, id, "confirm").await.expect(200);
    assert_eq!(driver.answer_offer(true, 10).await["orderId"], id);
    let published =
        "dispatch_cluster_order_bus_messages_total{direction=\"out\",kind=\"location\"}";
    // Nobody on another node watches: the positions stay on the owner.
    for step in 1..=3 {
        driver
            .move_to(north_of(RESTAURANT_1_AT, 0.3 - 0.05 * step as f64))
            .await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(
        owner.metric("dispatch_location_updates_total").await >= 3.0,
        "the owner took the positions"
    );
    assert_eq!(
        owner.metric(published).await,
        0.0,
        "published unwatched positions"
    );
    assert!(
        owner
            .metric("dispatch_cluster_order_bus_messages_total{direction=\"out\",kind=\"update\"}")
            .await
            >= 1.0,
        "status updates are published whoever watches"
    );

    // A customer on the other node watches: from its snapshot on, every
    // position goes out (the subscribe announced the order first).
    let mut watcher = WsClient::connect(other, &customer).await;
    watcher
        .send(serde_json::json!({ "type": "subscribe", "orderId": id }))
        .await;
    watcher.next_of("snapshot", 5).await;
    assert_eq!(owner.metric("dispatch_cluster_order_interest").await, 1.0);
    for step in 1..=3 {
        driver
            .move_to(north_of(RESTAURANT_1_AT, 0.1 * step as f64))
            .await;
        let heard = watcher.next_of("driver_location", 5).await;
        let lat = heard["location"]["lat"].as_f64().unwrap_or_default();
        assert!(
            (lat - north_of(RESTAURANT_1_AT, 0.1 * step as f64).0).abs() < 1e-9,
            "{heard}"
        );
    }
    assert_eq!(owner.metric(published).await, 3.0);

    // It leaves: once its interest lapses (not renewed), nothing goes out.
    watcher
        .send(serde_json::json!({ "type": "unsubscribe", "orderId": id }))
        .await;
    let lapsed = std::time::Instant::now() + Duration::from_secs(12);
    while owner.metric("dispatch_cluster_order_interest").await != 0.0 {
        assert!(
            std::time::Instant::now() < lapsed,
            "the interest never lapsed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let before = owner.metric(published).await;
    driver.move_to(RESTAURANT_1_AT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    driver.move_to(north_of(RESTAURANT_1_AT, 0.02)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        owner.metric(published).await,
        before,
        "published after the interest lapsed"
    );
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn a_tablet_on_a_node_that_does_not_run_its_restaurants_orders_sees_them_arrive_and_change() {
    if !cluster_available().await {
        return;
    }
    let cluster = TestCluster::new(3000).await;
    let (owner, other, _admin) = two_nodes(&cluster).await;
    let (owner, other) = (&owner, &other);
    let staff = other.token("restaurant1").await;
    let mut tablet = WsClient::connect(other, &staff).await;
    tablet
        .send(serde_json::json!({ "type": "subscribe_restaurant", "restaurantId": 1 }))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Placed on the owner: the tablet on the other node hears it arrive.
    let customer = owner.token("customer1").await;
    let id = owner
        .create_with_key(&customer, "tablet-elsewhere", 1)
        .await
        .expect(201)["order"]["id"]
        .as_i64()
        .expect("id");
    let placed = tablet.next_of("order_update", 5).await;
    assert_eq!(placed["orderId"], id, "{placed}");
    assert_eq!(placed["status"], "PLACED", "{placed}");
    // Confirmed from the tablet's node (carried to the owner): it hears that too, once.
    other.act(&staff, id, "confirm").await.expect(200);
    let confirmed = tablet.next_of("order_update", 5).await;
    assert_eq!(confirmed["status"], "CONFIRMED", "{confirmed}");
    assert!(
        tablet
            .next_within(Duration::from_millis(500))
            .await
            .is_none(),
        "a frame heard twice"
    );
    assert!(
        other
            .metric("dispatch_cluster_restaurant_bus_messages_total{direction=\"in\"}")
            .await
            >= 2.0
    );
    // The owner's own tablets are not sent its frames a second time.
    assert_eq!(
        owner
            .metric("dispatch_cluster_restaurant_bus_messages_total{direction=\"in\"}")
            .await,
        0.0
    );
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn subscribing_on_a_node_that_does_not_run_an_order_answers_bad_ids_as_a_single_node_does() {
    if !cluster_available().await {
        return;
    }
    let cluster = TestCluster::new(3000).await;
    let (owner, other, _admin) = two_nodes(&cluster).await;
    let (owner, other) = (&owner, &other);
    let customer = owner.token("customer1").await;
    let id = owner
        .create_with_key(&customer, "bad-inputs", 1)
        .await
        .expect(201)["order"]["id"]
        .as_i64()
        .expect("id");
    let mut ws = WsClient::connect(other, &customer).await;
    for (order_id, code) in [(id + 1000, "NOT_FOUND"), (0, "VALIDATION_ERROR")] {
        ws.send(serde_json::json!({ "type": "subscribe", "orderId": order_id, "ref": 7 }))
            .await;
        let error = ws.next_of("error", 5).await;
        assert_eq!(error["code"], code, "{error}");
    }
    // Somebody else's order: not found, as on one node; no subscription made.
    let mut stranger = WsClient::connect(other, &owner.token("customer2").await).await;
    stranger
        .send(serde_json::json!({ "type": "subscribe", "orderId": id }))
        .await;
    assert_eq!(stranger.next_of("error", 5).await["code"], "NOT_FOUND");
    assert_eq!(other.metric("dispatch_cluster_watched_orders").await, 0.0);
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn a_nodes_subscription_to_an_order_of_another_node_ends_when_the_order_does() {
    if !cluster_available().await {
        return;
    }
    let cluster = TestCluster::new(3000).await;
    let (owner, other, _admin) = two_nodes(&cluster).await;
    let (owner, other) = (&owner, &other);
    let customer = owner.token("customer1").await;
    let id = owner
        .create_with_key(&customer, "ends-with-order", 1)
        .await
        .expect(201)["order"]["id"]
        .as_i64()
        .expect("id");
    let mut watcher = WsClient::connect(other, &customer).await;
    watcher
        .send(serde_json::json!({ "type": "subscribe", "orderId": id }))
        .await;
    watcher.next_of("snapshot", 5).await;
    assert_eq!(other.metric("dispatch_cluster_watched_orders").await, 1.0);
    // Cancelled through the watcher's node (carried to the owner): the
    // watcher hears it, and its node stops following the order by itself.
    other.act(&customer, id, "cancel").await.expect(200);
    watcher.next_status("CANCELLED", 5).await;
    let mut ended = false;
    for _ in 0..40 {
        if other.metric("dispatch_cluster_watched_orders").await == 0.0 {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ended, "still subscribed to a cancelled order");
    cluster.drop_bucket().await;
}

/// The demo restaurants, one per region of the tests' 0.02-degree grid:
/// (region, restaurant id, one of its menu items, where it is).
async fn one_restaurant_per_region(app: &TestApp) -> Vec<(String, i64, i64, (f64, f64))> {
    let listed = app
        .get("/api/restaurants?limit=100", None)
        .await
        .expect(200);
    let mut per_region = std::collections::BTreeMap::new();
    for restaurant in listed["restaurants"].as_array().expect("restaurants") {
        let (lat, lon) = (
            restaurant["location"]["lat"].as_f64().expect("lat"),
            restaurant["location"]["lon"].as_f64().expect("lon"),
        );
        let region = format!(
            "r{}_{}",
            (lat / 0.02).floor() as i64,
            (lon / 0.02).floor() as i64
        );
        let id = restaurant["id"].as_i64().expect("id");
        per_region.entry(region).or_insert((id, (lat, lon)));
    }
    let mut chosen = Vec::new();
    for (region, (id, at)) in per_region {
        let menu = app
            .get(&format!("/api/restaurants/{id}"), None)
            .await
            .expect(200);
        let item = menu["menu"][0]["id"].as_i64().expect("a menu item");
        chosen.push((region, id, item, at));
    }
    chosen
}

/// Reads `ws` until it has an `order_update` to `status` for each of
/// `ids`, within `secs`; returns every frame read.
async fn statuses_for(ws: &mut WsClient, ids: &[i64], status: &str, secs: u64) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut waiting: BTreeSet<i64> = ids.iter().copied().collect();
    let mut frames = Vec::new();
    while !waiting.is_empty() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(frame) = ws.next_within(left).await else {
            panic!("no order_update to {status} for {waiting:?} within {secs} s; read {frames:?}");
        };
        if frame["type"] == "order_update" && frame["status"] == status {
            if let Some(id) = frame["orderId"].as_i64() {
                waiting.remove(&id);
            }
        }
        frames.push(frame);
    }
    frames
}

use serde_json::Value;

#[tokio::test]
async fn a_watcher_keeps_following_orders_whose_region_its_node_hands_to_a_joining_node() {
    if !cluster_available().await {
        return;
    }
    let cluster = TestCluster::new(3000).await;
    let a = cluster.node(true).await;
    let admin = a.token("admin").await;
    settled(&[&a], &admin, Duration::from_secs(10)).await;
    let customer = a.token("customer1").await;
    // Alone, A runs an order in every region; a customer watches them all on A.
    let mut orders = Vec::new();
    for (region, restaurant, item, at) in one_restaurant_per_region(&a).await {
        // Delivered next door: within every restaurant's radius.
        let mut body = order_body(restaurant, item, 1);
        body["deliveryAddress"]["lat"] = serde_json::json!(at.0 + 0.001);
        body["deliveryAddress"]["lon"] = serde_json::json!(at.1);
        let placed = a
            .post("/api/orders", Some(&customer), body)
            .await
            .expect(201);
        orders.push((
            region,
            restaurant,
            placed["order"]["id"].as_i64().expect("id"),
        ));
    }
    assert!(orders.len() >= 2, "the test needs two regions: {orders:?}");
    let mut watcher = WsClient::connect(&a, &customer).await;
    for (_, _, id) in &orders {
        watcher
            .send(serde_json::json!({ "type": "subscribe", "orderId": id }))
            .await;
        assert_eq!(watcher.next_of("snapshot", 5).await["orderId"], *id);
    }
    assert_eq!(a.metric("dispatch_order_actors").await, orders.len() as f64);

    // B joins: A hands it half the regions, and stops running their orders.
    let b = cluster.node(false).await;
    let owned = settled(&[&a, &b], &admin, Duration::from_secs(15)).await;
    let b_regions: BTreeSet<String> = owned[1].iter().map(|(r, _)| r.clone()).collect();
    let moved: Vec<(i64, i64)> = orders
        .iter()
        .filter(|(region, _, _)| b_regions.contains(region))
        .map(|(_, restaurant, id)| (*restaurant, *id))
        .collect();
    assert!(!moved.is_empty(), "B holds none of {orders:?}");
    let started = Instant::now();
    while b.metric("dispatch_order_actors").await != moved.len() as f64
        || a.metric("dispatch_order_actors").await != (orders.len() - moved.len()) as f64
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "orders {moved:?} not handed to B"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Loading B's regions read their orders only, not A's: every order it
    // read, it started (reading all of them would read A's too).
    let read = b.metric("dispatch_cluster_orders_read_total").await;
    let loaded = b.metric("dispatch_cluster_orders_loaded_total").await;
    assert_eq!(read, loaded, "B read {read} orders to load {loaded}");
    assert!(loaded >= moved.len() as f64, "{loaded}");
    // A's watcher follows the moved orders over the bus now.
    let started = Instant::now();
    while a.metric("dispatch_cluster_watched_orders").await != moved.len() as f64 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "A does not follow {moved:?} over the bus"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        a.metric("dispatch_cluster_watchers_moved_total{to=\"bus\"}")
            .await
            >= moved.len() as f64
    );
    // Each is confirmed by its staff through B, the new owner: the watcher
    // on A hears every one of them, without subscribing again.
    for (restaurant, id) in &moved {
        let staff = a.token(&format!("restaurant{restaurant}")).await;
        b.act(&staff, *id, "confirm").await.expect(200);
    }
    let ids: Vec<i64> = moved.iter().map(|(_, id)| *id).collect();
    statuses_for(&mut watcher, &ids, "CONFIRMED", 10).await;
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn a_node_that_starts_running_an_order_it_watched_over_the_bus_feeds_its_watcher_itself() {
    if !cluster_available().await {
        return;
    }
    // A long TTL: the region moves by the SIGTERMed owner's hand-over.
    let cluster = TestCluster::new(8000).await;
    let (mut owner, other, _admin) = two_nodes(&cluster).await;
    let (owner, other) = (&mut owner, &other);
    let customer = other.token("customer1").await;
    let staff = other.token("restaurant1").await;
    let id = owner.place_order(&customer).await["id"]
        .as_i64()
        .expect("id");
    let mut watcher = WsClient::connect(other, &customer).await;
    watcher
        .send(serde_json::json!({ "type": "subscribe", "orderId": id }))
        .await;
    watcher.next_of("snapshot", 5).await;
    assert_eq!(other.metric("dispatch_cluster_watched_orders").await, 1.0);

    // The owner leaves gracefully: the other node claims the region, runs
    // the order, and its watcher moves from the bus to the order's feed.
    assert!(owner.terminate().success());
    let stopped = Instant::now();
    while other.metric("dispatch_order_actors").await != 1.0
        || other.metric("dispatch_cluster_watched_orders").await != 0.0
    {
        assert!(
            stopped.elapsed() < Duration::from_secs(4),
            "order {id} not run by the other node, or still followed over the bus"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        other
            .metric("dispatch_cluster_watchers_moved_total{to=\"local\"}")
            .await,
        1.0
    );
    // The fresh snapshot from the order's actor, then its next change.
    assert_eq!(watcher.next_of("snapshot", 5).await["orderId"], id);
    other.act(&staff, id, "confirm").await.expect(200);
    watcher.next_status("CONFIRMED", 5).await;
    assert_eq!(other.metric("dispatch_cluster_remote_watchers").await, 0.0);
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn a_node_follows_at_most_max_watched_orders_of_other_nodes_and_an_unsubscribe_frees_one() {
    if !cluster_available().await {
        return;
    }
    let cluster = TestCluster::new(3000)
        .await
        .with("DISPATCH__CLUSTER__MAX_WATCHED_ORDERS", "2");
    let (owner, other, _admin) = two_nodes(&cluster).await;
    let (owner, other) = (&owner, &other);
    let customer = owner.token("customer1").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            owner.place_order(&customer).await["id"]
                .as_i64()
                .expect("id"),
        );
    }
    let mut ws = WsClient::connect(other, &customer).await;
    for id in &ids[..2] {
        ws.send(serde_json::json!({ "type": "subscribe", "orderId": id }))
            .await;
        assert_eq!(ws.next_of("snapshot", 5).await["orderId"], *id);
    }
    // A third order of another node: refused, as documented.
    ws.send(serde_json::json!({ "type": "subscribe", "orderId": ids[2], "ref": 3 }))
        .await;
    let refused = ws.next_of("error", 5).await;
    assert_eq!(refused["code"], "RATE_LIMITED", "{refused}");
    assert_eq!(
        refused["message"], "this node watches 2 orders of other nodes, its limit",
        "{refused}"
    );
    assert_eq!(refused["ref"], 3, "{refused}");
    assert_eq!(other.metric("dispatch_cluster_watched_orders").await, 2.0);
    assert_eq!(
        other
            .metric("dispatch_cluster_order_subscriptions_total{op=\"refused_full\"}")
            .await,
        1.0
    );
    // Unsubscribing from one frees its slot.
    ws.send(serde_json::json!({ "type": "unsubscribe", "orderId": ids[0] }))
        .await;
    let started = Instant::now();
    while other.metric("dispatch_cluster_watched_orders").await != 1.0 {
        assert!(started.elapsed() < Duration::from_secs(3), "slot not freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ws.send(serde_json::json!({ "type": "subscribe", "orderId": ids[2] }))
        .await;
    assert_eq!(ws.next_of("snapshot", 5).await["orderId"], ids[2]);
    assert_eq!(other.metric("dispatch_cluster_watched_orders").await, 2.0);
    cluster.drop_bucket().await;
}

/// A NATS server of the test's own (JetStream, a fresh store directory, an
/// ephemeral port), which it may kill: never the machine's shared one.
struct OwnNats {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl OwnNats {
    async fn start() -> Option<OwnNats> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let dir =
            std::env::temp_dir().join(format!("dispatchd-nats-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).ok()?;
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let nats = OwnNats { child, port, dir };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(nats);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_subscribe_to_an_order_of_another_node_while_nats_is_away_answers_engine_unavailable_in_time()
 {
    if !cluster_available().await {
        return;
    }
    let Some(mut nats) = OwnNats::start().await else {
        if std::env::var("DISPATCHD_TEST_NATS").as_deref() == Ok("required") {
            panic!("could not start a nats-server of the test's own");
        }
        eprintln!("skipped: no nats-server to start");
        return;
    };
    let cluster = TestCluster::new(2000)
        .await
        .with("DISPATCH__CLUSTER__NATS_URL", &nats.url())
        .with("DISPATCH__CLUSTER__WATCH_TIMEOUT_MS", "1500");
    let a = cluster.node(true).await;
    let admin = a.token("admin").await;
    settled(&[&a], &admin, Duration::from_secs(10)).await;
    let customer = a.token("customer1").await;
    let id = a.place_order(&customer).await["id"].as_i64().expect("id");
    let mut ws = WsClient::connect(&a, &customer).await;

    // NATS goes away: the node's leases lapse, it stops running the order,
    // and a subscribe to it now needs the bus, which does not answer.
    nats.kill();
    let started = Instant::now();
    while a.metric("dispatch_order_actors").await != 0.0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the node still runs order {id} without its lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let asked = Instant::now();
    ws.send(serde_json::json!({ "type": "subscribe", "orderId": id, "ref": 9 }))
        .await;
    let answer = ws.next(10).await;
    let took = asked.elapsed();
    eprintln!(
        "subscribe with NATS away answered in {} ms",
        took.as_millis()
    );
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], "ENGINE_UNAVAILABLE", "{answer}");
    assert_eq!(answer["ref"], 9, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("the cluster bus is unavailable")),
        "{answer}"
    );
    assert!(took < Duration::from_millis(1500 + 1500), "{took:?}");
    assert_eq!(
        a.metric("dispatch_cluster_order_subscriptions_total{op=\"failed\"}")
            .await,
        1.0
    );
    assert_eq!(a.metric("dispatch_cluster_watched_orders").await, 0.0);
}

#[tokio::test]
async fn an_unsubscribe_right_after_a_subscribe_to_an_order_of_another_node_leaves_no_subscription()
{
    if !cluster_available().await {
        return;
    }
    let cluster = TestCluster::new(3000).await;
    let (owner, other, _admin) = two_nodes(&cluster).await;
    let (owner, other) = (&owner, &other);
    let customer = owner.token("customer1").await;
    let staff = owner.token("restaurant1").await;
    let id = owner.place_order(&customer).await["id"]
        .as_i64()
        .expect("id");
    // In one write: the unsubscribe reaches the session while its
    // subscribe is still being answered off it (store read, bus).
    let mut ws = WsClient::connect(other, &customer).await;
    {
        use futures::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        for kind in ["subscribe", "unsubscribe"] {
            let text = serde_json::json!({ "type": kind, "orderId": id }).to_string();
            ws.socket
                .feed(Message::Text(text.into()))
                .await
                .expect("feed");
        }
        ws.socket.flush().await.expect("flush");
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(other.metric("dispatch_cluster_watched_orders").await, 0.0);
    assert_eq!(other.metric("dispatch_cluster_remote_watchers").await, 0.0);
    owner.act(&staff, id, "confirm").await.expect(200);
    while let Some(frame) = ws.next_within(Duration::from_millis(700)).await {
        assert_ne!(
            frame["type"], "order_update",
            "heard after unsubscribing: {frame}"
        );
    }
    cluster.drop_bucket().await;
}

/// The per-region load query on the store itself, on both backends (it
/// runs in cluster mode only, on Postgres, but the `Store` trait keeps it
/// on SQLite too): only the non-terminal orders of restaurants inside the
/// boxes.
#[tokio::test]
async fn the_store_reads_the_live_orders_of_the_restaurants_inside_given_boxes_only() {
    use actors::store::GeoBox;
    use dispatchd::store::StoreOptions;
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    let restaurants = one_restaurant_per_region(&app).await;
    assert!(restaurants.len() >= 2);
    let mut placed = Vec::new();
    for (_, restaurant, item, at) in &restaurants[..2] {
        let mut body = order_body(*restaurant, *item, 1);
        body["deliveryAddress"]["lat"] = serde_json::json!(at.0 + 0.001);
        body["deliveryAddress"]["lon"] = serde_json::json!(at.1);
        let order = app
            .post("/api/orders", Some(&customer), body)
            .await
            .expect(201);
        placed.push(order["order"]["id"].as_i64().expect("id"));
    }
    // A cancelled order at the first restaurant is left out.
    let (_, first, item, at) = restaurants[0];
    let mut body = order_body(first, item, 1);
    body["deliveryAddress"]["lat"] = serde_json::json!(at.0 + 0.001);
    body["deliveryAddress"]["lon"] = serde_json::json!(at.1);
    let cancelled = app
        .post("/api/orders", Some(&customer), body)
        .await
        .expect(201)["order"]["id"]
        .as_i64()
        .expect("id");
    app.act(&customer, cancelled, "cancel").await.expect(200);

    let store = dispatchd::store::open(&StoreOptions {
        url: app.db.url(),
        max_connections: 2,
        acquire_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
    })
    .await
    .expect("open the store");
    let around = |at: (f64, f64)| GeoBox {
        min_lat: at.0 - 0.001,
        max_lat: at.0 + 0.001,
        min_lon: at.1 - 0.001,
        max_lon: at.1 + 0.001,
    };
    let ids = |orders: Vec<actors::domain::model::Order>| -> Vec<i64> {
        orders.iter().map(|o| o.id).collect()
    };
    let (first_at, second_at) = (restaurants[0].3, restaurants[1].3);
    let one = store
        .active_orders_within(&[around(first_at)])
        .await
        .expect("read");
    assert_eq!(ids(one), vec![placed[0]]);
    let both = store
        .active_orders_within(&[around(second_at), around(first_at)])
        .await
        .expect("read");
    assert_eq!(ids(both), placed);
    let nowhere = store
        .active_orders_within(&[around((0.0, 0.0))])
        .await
        .expect("read");
    assert!(nowhere.is_empty());
    assert!(
        store
            .active_orders_within(&[])
            .await
            .expect("read")
            .is_empty()
    );
}
