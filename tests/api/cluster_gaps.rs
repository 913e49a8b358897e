//! Cluster mode, the gaps a second reading found in drivers across nodes:
//! real `dispatchd` nodes on one fresh Postgres database and one fresh
//! bucket per test (the helpers of `cluster.rs`).

use crate::cluster::{
    TestCluster, cluster_available, north_of, seen, three_nodes, two_nodes, two_nodes_through,
};
use crate::helpers::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The driver's entry in `app`'s index near `at`, if it has one.
async fn entry_of(app: &TestApp, admin: &str, driver_id: i64, at: (f64, f64)) -> Option<Value> {
    let body = app
        .get(
            &format!(
                "/api/drivers/nearby?lat={}&lon={}&radiusKm=3&limit=500",
                at.0, at.1
            ),
            Some(admin),
        )
        .await
        .expect(200);
    body["drivers"]
        .as_array()
        .expect("drivers")
        .iter()
        .find(|d| d["id"] == driver_id)
        .cloned()
}

/// Waits until `app`'s index lists the driver near `at`.
async fn until_indexed(app: &TestApp, admin: &str, driver_id: i64, at: (f64, f64)) {
    let started = Instant::now();
    while entry_of(app, admin, driver_id, at).await.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "driver {driver_id} never reached the index of {}",
            app.address
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The demo restaurant in a region `app` holds nearest to `to`: its id,
/// one of its menu items, where it is.
async fn nearest_restaurant_held_by(
    app: &TestApp,
    admin: &str,
    to: (f64, f64),
) -> (i64, i64, (f64, f64)) {
    let held: Vec<String> = seen(app, admin)
        .await
        .mine()
        .into_iter()
        .map(|(region, _)| region)
        .collect();
    let listed = app
        .get("/api/restaurants?limit=100", None)
        .await
        .expect(200);
    let mut best: Option<(f64, i64, (f64, f64))> = None;
    for restaurant in listed["restaurants"].as_array().expect("restaurants") {
        let at = (
            restaurant["location"]["lat"].as_f64().expect("lat"),
            restaurant["location"]["lon"].as_f64().expect("lon"),
        );
        let region = format!(
            "r{}_{}",
            (at.0 / 0.02).floor() as i64,
            (at.1 / 0.02).floor() as i64
        );
        if !held.contains(&region) {
            continue;
        }
        let distance = (at.0 - to.0).hypot((at.1 - to.1) * 0.86);
        if best.is_none_or(|(d, _, _)| distance < d) {
            best = Some((distance, restaurant["id"].as_i64().expect("id"), at));
        }
    }
    let (_, id, at) = best.expect("a restaurant in a region of the node");
    let menu = app
        .get(&format!("/api/restaurants/{id}"), None)
        .await
        .expect(200);
    (id, menu["menu"][0]["id"].as_i64().expect("a menu item"), at)
}

/// Every `offer` the driver's socket gets within `wait`.
async fn offers_within(driver: &mut TestDriver, wait: Duration) -> Vec<Value> {
    let until = tokio::time::Instant::now() + wait;
    let mut offers = Vec::new();
    while let Some(m) = driver
        .ws
        .next_within(until.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        if m["type"] == "offer" {
            offers.push(m);
        }
    }
    offers
}

/// Accepts `offer` on the driver's socket; the `offer_result` it gets.
async fn accept(driver: &mut TestDriver, offer: &Value) -> Value {
    driver
        .ws
        .send(json!({ "type": "offer_response", "offerId": offer["offerId"], "accept": true }))
        .await;
    driver.ws.next_of("offer_result", 5).await
}

#[tokio::test]
async fn a_driver_near_two_owners_holds_one_offer_at_a_time_and_the_other_order_goes_to_another_driver()
 {
    if !cluster_available().await {
        return;
    }
    let cluster = TestCluster::new(3000)
        .await
        .with("DISPATCH__DISPATCH__ROUND_INTERVAL_MS", "200")
        .with("DISPATCH__DISPATCH__MAX_ACTIVE_ORDERS", "1");
    let (b, a, admin) = two_nodes(&cluster).await;
    // Two restaurants near each other, one of each owner's regions, and a
    // driver on A between them: the best driver for both owners' orders.
    let (other, other_item, other_at) =
        nearest_restaurant_held_by(&a, &admin, RESTAURANT_1_AT).await;
    let mid = (
        (RESTAURANT_1_AT.0 + other_at.0) / 2.0,
        (RESTAURANT_1_AT.1 + other_at.1) / 2.0,
    );
    let mut near = TestDriver::online(&a, "driver1", mid).await;
    // A second driver on B, farther from both (2.5 km across the line
    // between them): the next best for both.
    let (dlat, dlon) = (
        other_at.0 - RESTAURANT_1_AT.0,
        (other_at.1 - RESTAURANT_1_AT.1) * 0.86,
    );
    let across = 2.5 / 111.0 / dlat.hypot(dlon);
    let far = (mid.0 - dlon * across, mid.1 + dlat * across / 0.86);
    let mut second = TestDriver::online(&b, "driver2", far).await;
    until_indexed(&b, &admin, near.id, mid).await;
    until_indexed(&a, &admin, second.id, far).await;

    let customer = b.token("customer1").await;
    let first = b
        .create_with_key(&customer, "two-owners-1", 1)
        .await
        .expect(201)["order"]["id"]
        .as_i64()
        .expect("id");
    let next = a
        .post(
            "/api/orders",
            Some(&customer),
            order_body(other, other_item, 1),
        )
        .await
        .expect(201)["order"]["id"]
        .as_i64()
        .expect("id");
    let staff_1 = b.token("restaurant1").await;
    let staff_other = a.token(&format!("restaurant{other}")).await;
    // Both owners dispatch at once.
    let (confirmed_1, confirmed_other) = tokio::join!(
        b.act(&staff_1, first, "confirm"),
        a.act(&staff_other, next, "confirm")
    );
    confirmed_1.expect(200);
    confirmed_other.expect(200);

    // The near driver is offered one order, and never a second while it
    // holds that one (as on one node); the other goes to the second
    // driver within a few rounds.
    let (near_offers, second_offers) = tokio::join!(
        offers_within(&mut near, Duration::from_secs(4)),
        offers_within(&mut second, Duration::from_secs(4))
    );
    assert_eq!(
        near_offers.len(),
        1,
        "the driver near both held two offers at once: {near_offers:?}"
    );
    let held = near_offers[0]["orderId"].as_i64().expect("orderId");
    let left = if held == first { next } else { first };
    let offer_2 = second_offers
        .iter()
        .find(|o| o["orderId"] == left)
        .unwrap_or_else(|| {
            panic!("order {left} never offered to the second driver: {second_offers:?}")
        })
        .clone();
    let busy = a.metric("dispatch_offers_total{result=\"busy\"}").await
        + b.metric("dispatch_offers_total{result=\"busy\"}").await;
    assert!(
        busy >= 1.0,
        "no offer refused as busy: restaurant {other} at {other_at:?}, {near_offers:?}, {second_offers:?}"
    );

    // Both accept: one order each, at max_active_orders 1.
    assert_eq!(
        accept(&mut near, &near_offers[0]).await["result"],
        "assigned"
    );
    assert_eq!(accept(&mut second, &offer_2).await["result"], "assigned");
    for (id, driver) in [(held, near.id), (left, second.id)] {
        let body = a
            .get(&format!("/api/orders/{id}"), Some(&customer))
            .await
            .expect(200);
        assert_eq!(body["order"]["driverId"], driver, "{body}");
    }
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn orders_handed_to_a_joining_node_stay_in_their_remote_drivers_load_throughout() {
    if !cluster_available().await {
        return;
    }
    let cluster = TestCluster::new(8000)
        .await
        .with("DISPATCH__DISPATCH__ROUND_INTERVAL_MS", "200")
        .with("DISPATCH__DISPATCH__MAX_ACTIVE_ORDERS", "20");
    let (b, a, admin, mut driver) = driver_on_a_in_bs_index(&cluster).await;
    let near = near_restaurant_1();
    // One order in each of B's regions, all carried by the driver on A.
    let held: Vec<String> = seen(&b, &admin)
        .await
        .mine()
        .into_iter()
        .map(|(region, _)| region)
        .collect();
    let customer = b.token("customer1").await;
    let listed = b.get("/api/restaurants?limit=100", None).await.expect(200);
    let mut placed = std::collections::BTreeSet::new();
    let mut regions_done = std::collections::BTreeSet::new();
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
        if !held.contains(&region) || !regions_done.insert(region) {
            continue;
        }
        let id = restaurant["id"].as_i64().expect("id");
        let menu = b
            .get(&format!("/api/restaurants/{id}"), None)
            .await
            .expect(200);
        let item = menu["menu"][0]["id"].as_i64().expect("a menu item");
        let order = b
            .post("/api/orders", Some(&customer), order_body(id, item, 1))
            .await
            .expect(201)["order"]["id"]
            .as_i64()
            .expect("id");
        let staff = b.token(&format!("restaurant{id}")).await;
        b.act(&staff, order, "confirm").await.expect(200);
        placed.insert(order);
    }
    let mut carried = std::collections::BTreeSet::new();
    while carried.len() < placed.len() {
        let offer = driver.ws.next_of("offer", 10).await;
        let result = accept(&mut driver, &offer).await;
        assert_eq!(result["result"], "assigned", "{result}");
        carried.insert(offer["orderId"].as_i64().expect("orderId"));
    }
    let n = json!(placed.len());
    let started = Instant::now();
    while entry_of(&a, &admin, driver.id, near)
        .await
        .map(|e| e["activeOrders"].clone())
        != Some(n.clone())
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "A never counted {n} orders"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // C joins: B hands some of its regions (and their orders) to it. The
    // driver's load on A never drops meanwhile.
    let c = cluster.node(false).await;
    let loaded = "dispatch_cluster_orders_loaded_total";
    let started = Instant::now();
    let mut loads = Vec::new();
    let mut after = 0;
    while after < 20 {
        if c.metric(loaded).await >= 1.0 {
            after += 1;
        }
        let entry = entry_of(&a, &admin, driver.id, near).await;
        loads.push(entry.map(|e| e["activeOrders"].clone()));
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "C never loaded an order; loads on A {loads:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        loads.iter().all(|l| l.as_ref() == Some(&n)),
        "the driver's load on A while C took over ({n} carried): {loads:?}"
    );
    cluster.drop_bucket().await;
}

/// A region `owner` of `nodes` holds whose 3 x 3 cells around hold none
/// of `left`'s regions: (owner, left, the third, the region's centre).
async fn out_of_reach_of_one(
    nodes: [&TestApp; 3],
    admin: &str,
) -> Option<(usize, usize, usize, (f64, f64))> {
    let view = seen(nodes[0], admin).await;
    let mut ids = Vec::new();
    for node in nodes {
        ids.push(seen(node, admin).await.node);
    }
    let parse = |region: &str| -> Option<(i64, i64)> {
        let (lat, lon) = region.strip_prefix('r')?.split_once('_')?;
        Some((lat.parse().ok()?, lon.parse().ok()?))
    };
    let held: Vec<((i64, i64), usize)> = view
        .regions
        .iter()
        .filter_map(|(region, holder, _)| {
            let cell = parse(region)?;
            let node = ids.iter().position(|id| Some(id) == holder.as_ref())?;
            Some((cell, node))
        })
        .collect();
    for (cell, owner) in &held {
        for left in (0..3).filter(|n| n != owner) {
            let near_left = held.iter().any(|((lat, lon), node)| {
                *node == left && (lat - cell.0).abs() <= 1 && (lon - cell.1).abs() <= 1
            });
            if !near_left {
                let third = 3 - owner - left;
                let centre = ((cell.0 as f64 + 0.5) * 0.02, (cell.1 as f64 + 0.5) * 0.02);
                return Some((*owner, left, third, centre));
            }
        }
    }
    None
}

#[tokio::test]
async fn a_late_gone_from_a_drivers_previous_node_does_not_take_it_out_of_the_owners_index() {
    if !cluster_available().await {
        return;
    }
    // Entries go to the owners of the 3 x 3 cells around the driver only,
    // so that the node it leaves can be out of reach of its new node (else
    // the new node's positions would renew its presence on the old one,
    // which would never say "gone").
    let cluster = TestCluster::new(3000)
        .await
        .with("DISPATCH__PRESENCE__TTL_SECS", "2")
        .with("DISPATCH__CLUSTER__GEO_MARGIN_KM", "0.1");
    let (first, second, third, admin) = three_nodes(&cluster).await;
    let nodes = [&first, &second, &third];
    let Some((owner, left, next, at)) = out_of_reach_of_one(nodes, &admin).await else {
        eprintln!("skipped: every region has a cell of each node around it");
        cluster.drop_bucket().await;
        return;
    };
    let (b, a, c) = (nodes[owner], nodes[left], nodes[next]);
    let mut driver = TestDriver::online(a, "driver1", at).await;
    until_indexed(b, &admin, driver.id, at).await;
    let gone_in = "dispatch_cluster_geo_messages_total{direction=\"in\",kind=\"gone\"}";
    let gone_before = b.metric(gone_in).await;
    // The driver's socket moves to C just after a position on A (A's
    // presence of it runs out two seconds later, and A says "gone",
    // numbered after its last entry but sent after C's); it keeps sending
    // positions there.
    driver.move_to(at).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (token, id) = (driver.token.clone(), driver.id);
    drop(driver);
    let mut ws = WsClient::connect(c, &token).await;
    let started = Instant::now();
    let mut missing = 0;
    let mut polls = 0;
    let mut sent_at: Option<Instant> = None;
    while started.elapsed() < Duration::from_secs(5) {
        // A position every 1.2 s: enough for B's 2 s presence, and a
        // wrongly taken "gone" shows until the next one.
        if sent_at.is_none_or(|t| t.elapsed() >= Duration::from_millis(1200)) {
            ws.send(json!({ "type": "location", "lat": at.0, "lon": at.1 }))
                .await;
            sent_at = Some(Instant::now());
        }
        polls += 1;
        if entry_of(b, &admin, id, at).await.is_none() {
            missing += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A's "gone" reached B, and changed nothing there.
    assert!(
        b.metric(gone_in).await > gone_before,
        "A never said the driver was gone: A stale {}",
        a.metric("dispatch_drivers_went_stale_total").await,
    );
    assert_eq!(
        missing, 0,
        "the driver was missing from the owner's index {missing} of {polls} times"
    );
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn an_offer_pending_on_a_node_that_is_killed_goes_to_another_driver_and_nothing_is_lost() {
    if !cluster_available().await {
        return;
    }
    let cluster = TestCluster::new(3000)
        .await
        .with("DISPATCH__DISPATCH__ROUND_INTERVAL_MS", "200")
        .with("DISPATCH__DISPATCH__OFFER_TIMEOUT_SECS", "4")
        // The drivers send one position each: they stay in the index
        // however slow the machine.
        .with("DISPATCH__PRESENCE__TTL_SECS", "120");
    let (b, mut a, c, admin) = three_nodes(&cluster).await;
    let near = north_of(RESTAURANT_1_AT, 0.3);
    let far = north_of(RESTAURANT_1_AT, 2.0);
    let mut driver = TestDriver::online(&a, "driver1", near).await;
    let mut other = TestDriver::online(&c, "driver2", far).await;
    until_indexed(&b, &admin, driver.id, near).await;
    until_indexed(&b, &admin, other.id, far).await;
    let customer = b.token("customer1").await;
    let staff = b.token("restaurant1").await;
    let id = b
        .create_with_key(&customer, "killed-mid-offer", 1)
        .await
        .expect(201)["order"]["id"]
        .as_i64()
        .expect("id");
    b.act(&staff, id, "confirm").await.expect(200);
    let offer = driver.ws.next_of("offer", 10).await;
    assert_eq!(offer["orderId"], id, "{offer}");

    // The node holding the driver's socket dies with the offer pending.
    a.kill();
    let killed = Instant::now();
    // The order goes to the other driver, on C, by the offer's timeout
    // (and a round or two).
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut first = None;
    while let Some(m) = other
        .ws
        .next_within(until.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        if m["type"] == "offer" {
            first = Some(m);
            break;
        }
    }
    let Some(offered) = first else {
        panic!(
            "the order was never offered to the driver on C; B's offers {:?}",
            b.metrics_text()
                .await
                .lines()
                .filter(|l| l.starts_with("dispatch_offers_total")
                    || l.starts_with("dispatch_cluster_driver_commands_total{kind=\"offer\""))
                .collect::<Vec<_>>()
        );
    };
    assert_eq!(offered["orderId"], id, "{offered}");
    assert!(
        killed.elapsed() < Duration::from_secs(7),
        "re-offered {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(accept(&mut other, &offered).await["result"], "assigned");

    // The first driver reconnects to C: its old offer is void there, it is
    // not offered the order again, and what it asks of the order is the
    // record (assigned to the other driver).
    let mut ws = WsClient::connect(&c, &driver.token).await;
    ws.send(json!({ "type": "location", "lat": near.0, "lon": near.1 }))
        .await;
    c.post(
        &format!("/api/offers/{}/accept", offer["offerId"]),
        Some(&driver.token),
        json!({}),
    )
    .await
    .expect_error(404, "NOT_FOUND");
    let body = c
        .get(&format!("/api/orders/{id}"), Some(&customer))
        .await
        .expect(200);
    assert_eq!(body["order"]["driverId"], other.id, "{body}");
    assert_eq!(body["order"]["status"], "CONFIRMED", "{body}");
    // The other driver's own socket follows the order it carries, from a
    // snapshot of the record.
    let snapshot = other.ws.next_of("snapshot", 5).await;
    assert_eq!(snapshot["order"]["driverId"], other.id, "{snapshot}");
    // Nothing lost: one assignment in the order's history.
    let events = c
        .get(&format!("/api/orders/{id}/events"), Some(&admin))
        .await
        .expect(200);
    let assigned: Vec<&Value> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "DRIVER_ASSIGNED")
        .collect();
    assert_eq!(assigned.len(), 1, "{events}");
    cluster.drop_bucket().await;
}

/// The resident memory of a process, in kB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_flood_on_the_geo_and_driver_command_subjects_leaves_the_nodes_responsive_and_bounded() {
    if !cluster_available().await {
        return;
    }
    let cluster = TestCluster::new(3000).await;
    let (b, a, _admin, driver) = driver_on_a_in_bs_index(&cluster).await;
    let near = near_restaurant_1();
    let other = b.token("driver2").await;
    let other_id = b.get("/api/me", Some(&other)).await.expect(200)["user"]["id"]
        .as_i64()
        .expect("id");
    let rss_before = (rss_kb(a.pid()), rss_kb(b.pid()));

    // 100,000 messages as fast as a client can publish them: on the
    // driver's command subject (A) valid frames for its socket and
    // garbage; on the geo subject of restaurant 1's region (B) positions
    // of a real driver and garbage.
    let client = async_nats::connect("nats://127.0.0.1:4222")
        .await
        .expect("nats");
    let cmd = format!("{}.driver.{}.cmd", cluster.bucket(), driver.id);
    let geo = format!(
        "{}.geo.{}",
        cluster.bucket(),
        crate::cluster::restaurant_1_region()
    );
    const EACH: usize = 50_000;
    let flood = async {
        for i in 0..EACH {
            let body = if i % 2 == 0 {
                json!({ "Tell": { "origin": "flooder", "frame": "{\"type\":\"pong\"}" } })
                    .to_string()
                    .into_bytes()
            } else {
                format!("garbage {i}").into_bytes()
            };
            client
                .publish(cmd.clone(), body.into())
                .await
                .expect("publish");
            // The geo layout: version, kind, available, load, seq, driver,
            // lat, lon, heading, speed, time, node.
            let mut position = vec![1u8, 0, 1];
            position.extend(0u32.to_le_bytes());
            position.extend((i as u64 + 1).to_le_bytes());
            position.extend(other_id.to_le_bytes());
            for value in [near.0 + (i % 100) as f64 * 1e-5, near.1, f64::NAN, f64::NAN] {
                position.extend(value.to_le_bytes());
            }
            position.extend(0i64.to_le_bytes());
            position.extend(b"flooder");
            let payload = if i % 2 == 0 {
                position
            } else {
                b"garbage".to_vec()
            };
            client
                .publish(geo.clone(), payload.into())
                .await
                .expect("publish");
        }
        client.flush().await.expect("flush");
    };
    // Both nodes answer throughout.
    let probe = async {
        let mut slowest = Duration::ZERO;
        for _ in 0..20 {
            for node in [&a, &b] {
                let asked = Instant::now();
                node.get("/healthz", None).await.expect(200);
                slowest = slowest.max(asked.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        slowest
    };
    let ((), slowest) = tokio::join!(flood, probe);
    assert!(
        slowest < Duration::from_secs(1),
        "a node took {slowest:?} to answer"
    );
    // The nodes work through what their subscriptions hold.
    let taken = "dispatch_cluster_driver_commands_total{kind=";
    let mut last = -1.0;
    let settling = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = a.metric(taken).await + b.metric("dispatch_cluster_geo_messages_total").await;
        if now == last || settling.elapsed() > Duration::from_secs(30) {
            break;
        }
        last = now;
    }
    for node in [&a, &b] {
        let asked = Instant::now();
        node.get("/api/restaurants?limit=5", None).await.expect(200);
        assert!(asked.elapsed() < Duration::from_secs(1));
    }
    let rss_after = (rss_kb(a.pid()), rss_kb(b.pid()));
    for (before, after) in [(rss_before.0, rss_after.0), (rss_before.1, rss_after.1)] {
        assert!(
            after < before + 150_000,
            "resident memory grew from {before} kB to {after} kB"
        );
    }
    // Every message was taken, or the drops were counted.
    let tells = a
        .metric("dispatch_cluster_driver_commands_total{kind=\"tell\",result=\"received\"}")
        .await;
    let unreadable = a
        .metric("dispatch_cluster_driver_commands_total{kind=\"unreadable\"")
        .await;
    let slow_a = a.metric("dispatch_nats_slow_consumer_total").await;
    assert!(
        tells + unreadable >= EACH as f64 || slow_a >= 1.0,
        "A took {tells} + {unreadable} of {EACH} and counted no drop"
    );
    let geo_in = b
        .metric("dispatch_cluster_geo_messages_total{direction=\"in\"")
        .await;
    let slow_b = b.metric("dispatch_nats_slow_consumer_total").await;
    assert!(
        geo_in >= EACH as f64 || slow_b >= 1.0,
        "B took {geo_in} of {EACH} geo messages and counted no drop"
    );
    eprintln!(
        "flood: A took {tells} tells + {unreadable} unreadable, {slow_a} slow-consumer events; B took {geo_in} geo messages, {slow_b} slow-consumer events; RSS {rss_before:?} -> {rss_after:?} kB; slowest /healthz {slowest:?}"
    );
    cluster.drop_bucket().await;
}

/// Where [`driver_on_a_in_bs_index`] puts its driver: 0.3 km north of
/// restaurant 1.
fn near_restaurant_1() -> (f64, f64) {
    north_of(RESTAURANT_1_AT, 0.3)
}

/// Two nodes, B holding restaurant 1's region, and a driver online on A
/// near restaurant 1, in B's index: B, A, an admin's token, the driver.
async fn driver_on_a_in_bs_index(cluster: &TestCluster) -> (TestApp, TestApp, String, TestDriver) {
    let (b, a, admin) = two_nodes(cluster).await;
    let near = near_restaurant_1();
    let driver = TestDriver::online(&a, "driver1", near).await;
    until_indexed(&b, &admin, driver.id, near).await;
    (b, a, admin, driver)
}

/// Kills `node`'s dispatcher (fault injection); it starts again after
/// `supervision.restart_delay_ms`.
async fn kill_dispatcher(node: &TestApp, admin: &str) {
    let killed = node
        .post(
            "/api/admin/faults",
            Some(admin),
            json!({ "actor": "dispatcher" }),
        )
        .await
        .expect(202);
    assert_eq!(killed["killed"], "dispatcher", "{killed}");
}

/// Waits until `/readyz` of `node` answers `status`.
async fn until_ready_is(node: &TestApp, status: u16) {
    let started = Instant::now();
    while node.get("/readyz", None).await.status.as_u16() != status {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "/readyz of {} never answered {status}",
            node.address
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The next `offer` of order `order_id` other than `old`'s on the
/// driver's socket within `wait`, and every frame before it.
async fn new_offer_within(
    driver: &mut TestDriver,
    order_id: i64,
    old: &Value,
    wait: Duration,
) -> (Option<Value>, Vec<Value>) {
    let until = tokio::time::Instant::now() + wait;
    let mut seen = Vec::new();
    while let Some(m) = driver
        .ws
        .next_within(until.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        if m["type"] == "offer" && m["orderId"] == order_id && m["offerId"] != old["offerId"] {
            return (Some(m), seen);
        }
        seen.push(m);
    }
    (None, seen)
}

/// Settings for a driver on A holding an offer of B's: offers last 30 s,
/// far longer than the tests wait for the next one.
fn long_offers(cluster: TestCluster) -> TestCluster {
    cluster
        .with("DISPATCH__DISPATCH__ROUND_INTERVAL_MS", "200")
        .with("DISPATCH__DISPATCH__OFFER_TIMEOUT_SECS", "30")
        .with("DISPATCH__PRESENCE__TTL_SECS", "120")
}

/// An order of restaurant 1 placed and confirmed on its owner `b`, offered
/// to `driver` (on another node): the order's id and the offer.
async fn offered_from(b: &TestApp, driver: &mut TestDriver, key: &str) -> (i64, Value) {
    let customer = b.token("customer1").await;
    let staff = b.token("restaurant1").await;
    let id = b.create_with_key(&customer, key, 1).await.expect(201)["order"]["id"]
        .as_i64()
        .expect("id");
    b.act(&staff, id, "confirm").await.expect(200);
    let offer = driver.ws.next_of("offer", 10).await;
    assert_eq!(offer["orderId"], id, "{offer}");
    (id, offer)
}

#[tokio::test]
async fn a_driver_holding_the_void_offer_of_a_restarted_dispatcher_of_another_node_gets_its_new_offer()
 {
    if !cluster_available().await {
        return;
    }
    let cluster = long_offers(TestCluster::new(3000).await)
        .with("DISPATCH__SUPERVISION__FAULT_INJECTION", "true")
        .with("DISPATCH__SUPERVISION__RESTART_DELAY_MS", "500");
    let (b, a, admin, mut driver) = driver_on_a_in_bs_index(&cluster).await;
    let (id, offer) = offered_from(&b, &mut driver, "restarted-dispatcher").await;

    // B's dispatcher restarts: its offer is void, and the new one offers
    // the order again, to the same driver, whose node holds the old offer
    // (30 s left): the new offer of the same node replaces it.
    kill_dispatcher(&b, &admin).await;
    let killed = Instant::now();
    let (again, _) = new_offer_within(&mut driver, id, &offer, Duration::from_secs(10)).await;
    let Some(again) = again else {
        panic!(
            "no new offer within 10 s of the restart; B's offers refused busy: {}",
            b.metric("dispatch_offers_total{result=\"busy\"}").await
        );
    };
    eprintln!("offered again {:?} after the kill", killed.elapsed());
    assert_eq!(accept(&mut driver, &again).await["result"], "assigned");
    let customer = b.token("customer1").await;
    let body = a
        .get(&format!("/api/orders/{id}"), Some(&customer))
        .await
        .expect(200);
    assert_eq!(body["order"]["driverId"], driver.id, "{body}");
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn an_assignment_its_owner_cannot_write_is_told_to_the_remote_driver_who_is_offered_the_order_again()
 {
    if !cluster_available().await {
        return;
    }
    let cluster = long_offers(TestCluster::new(8000).await)
        .with("DISPATCH__DATABASE__ACQUIRE_TIMEOUT_MS", "700");
    let ((b, b_link), (a, _a_link), admin) = two_nodes_through(&cluster).await;
    let near = north_of(RESTAURANT_1_AT, 0.3);
    let mut driver = TestDriver::online(&a, "driver1", near).await;
    until_indexed(&b, &admin, driver.id, near).await;
    let (id, offer) = offered_from(&b, &mut driver, "unwritten-assignment").await;

    // The owner loses its store; the driver on A accepts.
    b_link.cut();
    driver
        .ws
        .send(json!({ "type": "offer_response", "offerId": offer["offerId"], "accept": true }))
        .await;
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut frames = Vec::new();
    let mut again = None;
    let mut told = None;
    while told.is_none() {
        let Some(m) = driver
            .ws
            .next_within(until.saturating_duration_since(tokio::time::Instant::now()))
            .await
        else {
            break;
        };
        if m["type"] == "error" && m["code"] == "STORE_UNAVAILABLE" {
            told = Some(m.clone());
        } else if m["type"] == "offer" && m["orderId"] == id && m["offerId"] != offer["offerId"] {
            again = Some(m.clone());
        }
        frames.push(m);
    }
    let told = told.unwrap_or_else(|| {
        panic!("the driver's socket was never told the assignment failed: {frames:?}")
    });
    assert_eq!(
        told["message"],
        format!(
            "offer {}: the assignment could not be written; the offer is void",
            offer["offerId"]
        ),
        "{told}"
    );

    // The store returns: the order is offered to the driver again, well
    // before the first offer would have expired on A, and this time it
    // is assigned.
    b_link.restore();
    until_ready_is(&b, 200).await;
    let again = match again {
        Some(again) => again,
        None => new_offer_within(&mut driver, id, &offer, Duration::from_secs(10))
            .await
            .0
            .expect("the order was never offered again"),
    };
    assert_eq!(accept(&mut driver, &again).await["result"], "assigned");
    let customer = b.token("customer1").await;
    let body = b
        .get(&format!("/api/orders/{id}"), Some(&customer))
        .await
        .expect(200);
    assert_eq!(body["order"]["driverId"], driver.id, "{body}");
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn an_answer_carried_to_an_owner_whose_dispatcher_is_down_is_reported_to_the_drivers_socket()
{
    if !cluster_available().await {
        return;
    }
    let cluster = long_offers(TestCluster::new(3000).await)
        .with("DISPATCH__SUPERVISION__FAULT_INJECTION", "true")
        .with("DISPATCH__SUPERVISION__RESTART_DELAY_MS", "3000");
    let (b, _a, admin, mut driver) = driver_on_a_in_bs_index(&cluster).await;
    let (id, offer) = offered_from(&b, &mut driver, "answer-lost").await;

    // B's dispatcher is down when the driver's accept reaches B.
    kill_dispatcher(&b, &admin).await;
    until_ready_is(&b, 503).await;
    driver
        .ws
        .send(json!({ "type": "offer_response", "offerId": offer["offerId"], "accept": true }))
        .await;
    let error = driver.ws.next_of("error", 5).await;
    assert_eq!(error["code"], "ENGINE_UNAVAILABLE", "{error}");
    assert_eq!(
        error["message"],
        format!(
            "offer {}: the dispatcher that made this offer did not take the answer; the offer is void",
            offer["offerId"]
        )
    );

    // Back, the dispatcher offers the order again, and it is assigned.
    let (again, _) = new_offer_within(&mut driver, id, &offer, Duration::from_secs(10)).await;
    let again = again.expect("the order was never offered again");
    assert_eq!(accept(&mut driver, &again).await["result"], "assigned");
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn an_offer_of_another_node_with_the_id_of_the_held_one_is_refused_busy_and_the_held_one_still_answers()
 {
    if !cluster_available().await {
        return;
    }
    let cluster = long_offers(TestCluster::new(3000).await);
    let (b, _a, _admin, mut driver) = driver_on_a_in_bs_index(&cluster).await;
    let (id, offer) = offered_from(&b, &mut driver, "same-offer-id").await;

    // Another node's dispatcher numbers its offers itself: one of its
    // offers to the driver bears the id of B's, held on A.
    let client = async_nats::connect("nats://127.0.0.1:4222")
        .await
        .expect("nats");
    let command = json!({ "Offer": { "origin": "another-node", "frame": offer.to_string() } });
    let reply = client
        .request(
            format!("{}.driver.{}.cmd", cluster.bucket(), driver.id),
            command.to_string().into_bytes().into(),
        )
        .await
        .expect("the driver's node answers");
    let answer = String::from_utf8_lossy(&reply.payload).to_string();
    assert!(
        answer.starts_with("busy "),
        "the other node's offer was taken for the one held: {answer}"
    );
    let (second, _) = new_offer_within(&mut driver, id, &json!({}), Duration::from_secs(1)).await;
    assert!(
        second.is_none(),
        "a second offer reached the socket: {second:?}"
    );

    // B's offer, held, still takes its answer back to B.
    assert_eq!(accept(&mut driver, &offer).await["result"], "assigned");
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn a_second_offer_of_the_same_dispatcher_run_is_refused_busy_and_only_a_restarted_ones_replaces_the_held_one()
 {
    if !cluster_available().await {
        return;
    }
    let cluster = long_offers(TestCluster::new(3000).await);
    let (b, _a, admin, mut driver) = driver_on_a_in_bs_index(&cluster).await;
    let (_, offer) = offered_from(&b, &mut driver, "same-run").await;
    let b_node = crate::cluster::seen(&b, &admin).await.node;

    // B's next offer to the driver, as B's dispatcher would send it while
    // the result of the held one is still on its way (results travel
    // behind positions, offers do not): the held one stands.
    let client = async_nats::connect("nats://127.0.0.1:4222")
        .await
        .expect("nats");
    let mut next = offer.clone();
    next["offerId"] = json!(offer["offerId"].as_i64().expect("offerId") + 1);
    let ask = |starts: u64| {
        let command = json!({ "Offer": {
            "origin": b_node.clone(),
            "dispatcher_starts": starts,
            "frame": next.to_string(),
        } });
        let client = client.clone();
        let subject = format!("{}.driver.{}.cmd", cluster.bucket(), driver.id);
        async move {
            let reply = client
                .request(subject, command.to_string().into_bytes().into())
                .await
                .expect("the driver's node answers");
            String::from_utf8_lossy(&reply.payload).to_string()
        }
    };
    // B's dispatcher started once.
    let answer = ask(1).await;
    assert!(
        answer.starts_with("busy "),
        "a second offer of the same dispatcher run replaced the held one: {answer}"
    );
    // One of B's dispatcher after a restart replaces it.
    assert_eq!(ask(2).await, "1");
    let replaced = driver.ws.next_of("offer", 5).await;
    assert_eq!(replaced["offerId"], next["offerId"], "{replaced}");
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn a_relayed_offer_whose_node_clock_runs_ahead_keeps_the_driver_busy_no_longer_than_an_offer_lasts()
 {
    if !cluster_available().await {
        return;
    }
    let cluster = TestCluster::new(3000)
        .await
        .with("DISPATCH__DISPATCH__ROUND_INTERVAL_MS", "200")
        .with("DISPATCH__DISPATCH__OFFER_TIMEOUT_SECS", "3")
        .with("DISPATCH__PRESENCE__TTL_SECS", "120");
    let (b, _a, _admin, mut driver) = driver_on_a_in_bs_index(&cluster).await;
    let near = near_restaurant_1();

    // A node whose clock is an hour ahead offers the driver something:
    // by its clock the offer expires in an hour.
    let client = async_nats::connect("nats://127.0.0.1:4222")
        .await
        .expect("nats");
    let expires_at = chrono::Utc::now() + chrono::Duration::hours(1);
    let frame = json!({
        "type": "offer",
        "offerId": 7,
        "orderId": 7,
        "orderIds": [7],
        "pickup": { "restaurantId": 1, "name": "far ahead", "lat": near.0, "lon": near.1 },
        "dropoff": { "lat": near.0, "lon": near.1 },
        "dropoffs": [],
        "distanceKm": 0.0,
        "expiresAt": expires_at.to_rfc3339(),
    });
    let command = json!({ "Offer": { "origin": "clock-ahead", "frame": frame.to_string() } });
    let reply = client
        .request(
            format!("{}.driver.{}.cmd", cluster.bucket(), driver.id),
            command.to_string().into_bytes().into(),
        )
        .await
        .expect("the driver's node answers");
    assert_eq!(&reply.payload[..], b"1", "the offer was not delivered");
    let held = Instant::now();

    // B's order is offered to the driver once that hold ends, after at
    // most an offer's timeout (3 s), not an hour (or ten minutes) later.
    let customer = b.token("customer1").await;
    let staff = b.token("restaurant1").await;
    let id = b
        .create_with_key(&customer, "clock-ahead", 1)
        .await
        .expect(201)["order"]["id"]
        .as_i64()
        .expect("id");
    b.act(&staff, id, "confirm").await.expect(200);
    let (offer, _) = new_offer_within(&mut driver, id, &json!({}), Duration::from_secs(10)).await;
    let Some(offer) = offer else {
        panic!(
            "B's order never reached the driver within {:?} of the other offer; B's offers refused busy: {}",
            held.elapsed(),
            b.metric("dispatch_offers_total{result=\"busy\"}").await
        );
    };
    assert!(
        held.elapsed() >= Duration::from_secs(2),
        "offered {:?} after another node's live offer",
        held.elapsed()
    );
    assert_eq!(accept(&mut driver, &offer).await["result"], "assigned");
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn an_order_whose_region_moves_to_its_drivers_node_reaches_the_drivers_socket_once_without_its_own_positions()
 {
    if !cluster_available().await {
        return;
    }
    let cluster = long_offers(TestCluster::new(3000).await);
    let (mut b, a, _admin, mut driver) = driver_on_a_in_bs_index(&cluster).await;
    let (id, offer) = offered_from(&b, &mut driver, "moves-to-driver").await;
    assert_eq!(accept(&mut driver, &offer).await["result"], "assigned");
    // The driver's socket follows B's order over the bus.
    driver.ws.next_of("snapshot", 5).await;
    assert_eq!(a.metric("dispatch_cluster_watched_orders").await, 1.0);

    // B leaves: A, the driver's node, claims restaurant 1's region and runs
    // the order; the socket gets a fresh snapshot from the order's actor.
    assert!(b.terminate().success());
    driver.ws.next_of("snapshot", 10).await;
    let mut off_the_bus = false;
    for _ in 0..50 {
        if a.metric("dispatch_cluster_watched_orders").await == 0.0 {
            off_the_bus = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(off_the_bus, "A still follows its own order over the bus");

    // Each status change reaches the socket once, and its positions never.
    let staff = a.token("restaurant1").await;
    a.act(&staff, id, "start_preparing").await.expect(200);
    for step in 1..=3 {
        driver
            .move_to(north_of(RESTAURANT_1_AT, 0.3 - 0.05 * step as f64))
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut preparing = 0;
    while let Some(m) = driver.ws.next_within(Duration::from_millis(1500)).await {
        assert_ne!(m["type"], "driver_location", "echoed to the driver: {m}");
        if m["type"] == "order_update" && m["status"] == "PREPARING" {
            preparing += 1;
        }
    }
    assert_eq!(
        preparing, 1,
        "PREPARING reached the driver's socket {preparing} times"
    );
    cluster.drop_bucket().await;
}
