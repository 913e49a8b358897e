//! Cluster mode, drivers connected to any node: real `dispatchd` nodes on
//! one fresh Postgres database and one fresh bucket per test (the helpers
//! of `cluster.rs`). A driver's socket stays on the node it reached; the
//! owner of its region dispatches to it over NATS.

use crate::cluster::{TestCluster, cluster_available, north_of, three_nodes};
use crate::helpers::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// Whether `app`'s geo index lists the driver near `at` now.
async fn indexed(app: &TestApp, admin: &str, driver_id: i64, at: (f64, f64)) -> bool {
    let body = app
        .get(
            &format!(
                "/api/drivers/nearby?lat={}&lon={}&radiusKm=2&limit=500",
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
        .any(|d| d["id"] == driver_id)
}

/// Waits until `app`'s index says `present` of the driver; false after `within`.
async fn until_indexed(
    app: &TestApp,
    admin: &str,
    driver_id: i64,
    at: (f64, f64),
    present: bool,
    within: Duration,
) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        if indexed(app, admin, driver_id, at).await == present {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Three nodes, B holding restaurant 1's region; a driver online on A
/// near restaurant 1, seen in B's index.
async fn driver_on_a_seen_by_b(cluster: &TestCluster) -> (TestApp, TestApp, TestApp, TestDriver) {
    let (b, a, c, admin) = three_nodes(cluster).await;
    let near = north_of(RESTAURANT_1_AT, 0.3);
    let driver = TestDriver::online(&a, "driver1", near).await;
    assert!(
        until_indexed(&b, &admin, driver.id, near, true, Duration::from_secs(5)).await,
        "the driver on A never reached the owner's index"
    );
    (b, a, c, driver)
}

/// An order placed and watched on `watch_on`, confirmed on its owner `b`,
/// offered to `driver` and accepted: its id and the customer's socket.
async fn assigned_and_watched(
    b: &TestApp,
    watch_on: &TestApp,
    driver: &mut TestDriver,
    key: &str,
) -> (i64, WsClient) {
    let customer = watch_on.token("customer1").await;
    let staff = b.token("restaurant1").await;
    let id = watch_on
        .create_with_key(&customer, key, 1)
        .await
        .expect(201)["order"]["id"]
        .as_i64()
        .expect("id");
    let mut watcher = WsClient::connect(watch_on, &customer).await;
    watcher
        .send(json!({ "type": "subscribe", "orderId": id }))
        .await;
    watcher.next_of("snapshot", 5).await;
    // Confirmed on B: B's dispatcher offers it to the driver (on another
    // node), whose socket gets the offer; the accept goes back to B.
    b.act(&staff, id, "confirm").await.expect(200);
    let offer = driver.answer_offer(true, 10).await;
    assert_eq!(offer["orderId"], id, "{offer}");
    assert_eq!(
        driver.ws.next_of("offer_result", 5).await["result"],
        "assigned"
    );
    (id, watcher)
}

#[tokio::test]
async fn a_driver_on_a_node_that_does_not_own_the_region_is_offered_its_order_accepts_there_and_is_watched_from_a_third()
 {
    if !cluster_available().await {
        return;
    }
    let cluster = TestCluster::new(3000)
        .await
        .with("DISPATCH__DISPATCH__ROUND_INTERVAL_MS", "200");
    let (b, a, c, mut driver) = driver_on_a_seen_by_b(&cluster).await;
    assert_eq!(b.metric("dispatch_cluster_remote_drivers").await, 1.0);
    assert!(
        a.metric("dispatch_cluster_geo_messages_total{direction=\"out\",kind=\"position\"}")
            .await
            >= 1.0
    );
    let (id, mut watcher) = assigned_and_watched(&b, &c, &mut driver, "driver-elsewhere").await;
    let customer = c.token("customer1").await;
    let staff = b.token("restaurant1").await;
    let body = a
        .get(&format!("/api/orders/{id}"), Some(&customer))
        .await
        .expect(200);
    assert_eq!(body["order"]["driverId"], driver.id, "{body}");
    // As on one node, the driver's own socket follows the order it carries
    // (through the bus: A does not run it).
    let snapshot = driver.ws.next_of("snapshot", 5).await;
    assert_eq!(snapshot["orderId"], id, "{snapshot}");
    assert_eq!(snapshot["order"]["driverId"], driver.id, "{snapshot}");
    b.act(&staff, id, "start_preparing").await.expect(200);
    driver.ws.next_status("PREPARING", 5).await;
    watcher.next_status("PREPARING", 5).await;
    assert!(
        a.metric("dispatch_cluster_driver_commands_total{kind=\"offer\",result=\"delivered\"}")
            .await
            >= 1.0
    );

    // The driver moves, on A: its positions reach the watcher on C.
    let steps = 4;
    for step in 1..=steps {
        driver
            .move_to(north_of(RESTAURANT_1_AT, 0.3 - 0.05 * step as f64))
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut lats = Vec::new();
    while let Some(m) = watcher.next_within(Duration::from_millis(1500)).await {
        if m["type"] == "driver_location" {
            assert_eq!(m["location"]["driverId"], driver.id, "{m}");
            // The owner computed it, as on one node.
            assert!(m["eta"].is_object(), "{m}");
            lats.push(m["location"]["lat"].as_f64().unwrap_or_default());
        }
    }
    // Every one of them: a driver carrying another node's order is not
    // held to one position a second, as the geo index alone would be.
    let expected: Vec<f64> = (1..=steps)
        .map(|step| north_of(RESTAURANT_1_AT, 0.3 - 0.05 * step as f64).0)
        .collect();
    assert!(
        lats.len() >= expected.len(),
        "positions heard on C: {lats:?}"
    );
    let tail = &lats[lats.len() - expected.len()..];
    for (got, want) in tail.iter().zip(&expected) {
        assert!((got - want).abs() < 1e-9, "{lats:?} vs {expected:?}");
    }
    // A follows the order for the driver's socket, which wants its status
    // updates only: the positions C hears are not sent to A at all (they
    // travel on the order's own positions subject).
    assert_eq!(
        a.metric("dispatch_cluster_order_bus_messages_total{direction=\"in\",kind=\"location\"}")
            .await,
        0.0
    );
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn a_decline_on_the_drivers_node_excludes_it_from_the_order_on_the_owner() {
    if !cluster_available().await {
        return;
    }
    let cluster = TestCluster::new(3000)
        .await
        .with("DISPATCH__DISPATCH__ROUND_INTERVAL_MS", "200");
    let (b, a, _c, mut driver) = driver_on_a_seen_by_b(&cluster).await;
    let customer = b.token("customer1").await;
    let staff = b.token("restaurant1").await;
    let id = b
        .create_with_key(&customer, "declined-elsewhere", 1)
        .await
        .expect(201)["order"]["id"]
        .as_i64()
        .expect("id");
    b.act(&staff, id, "confirm").await.expect(200);
    let offer = driver.ws.next_of("offer", 10).await;
    assert_eq!(offer["orderId"], id, "{offer}");
    let offer_id = offer["offerId"].as_i64().expect("offerId");

    // Declined over REST on A: the owner's answer, as on one node.
    let declined = a
        .post(
            &format!("/api/offers/{offer_id}/decline"),
            Some(&driver.token),
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(declined["ok"], true, "{declined}");
    assert_eq!(
        driver.ws.next_of("offer_result", 5).await["result"],
        "declined"
    );
    // Declined already: the owner no longer knows the offer.
    a.post(
        &format!("/api/offers/{offer_id}/decline"),
        Some(&driver.token),
        json!({}),
    )
    .await
    .expect_error(404, "NOT_FOUND");
    // The driver stays online and available, but is never offered the
    // order again.
    let mut offered_again = false;
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        driver.move_to(north_of(RESTAURANT_1_AT, 0.3)).await;
        if let Some(m) = driver.ws.next_within(Duration::from_millis(400)).await
            && m["type"] == "offer"
        {
            offered_again = true;
        }
    }
    assert!(!offered_again, "offered the declined order again");
    let body = b
        .get(&format!("/api/orders/{id}"), Some(&customer))
        .await
        .expect(200);
    assert!(body["order"]["driverId"].is_null(), "{body}");
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn a_driver_on_another_node_whose_positions_stop_leaves_the_owners_index_and_is_offered_nothing()
 {
    if !cluster_available().await {
        return;
    }
    let cluster = TestCluster::new(3000)
        .await
        .with("DISPATCH__DISPATCH__ROUND_INTERVAL_MS", "200")
        .with("DISPATCH__PRESENCE__TTL_SECS", "2");
    let (b, _a, _c, mut driver) = driver_on_a_seen_by_b(&cluster).await;
    let admin = b.token("admin").await;
    let near = north_of(RESTAURANT_1_AT, 0.3);
    // No more positions (the socket stays open): gone from B's index.
    assert!(
        until_indexed(&b, &admin, driver.id, near, false, Duration::from_secs(8)).await,
        "the silent driver of A is still in B's index"
    );
    assert_eq!(b.metric("dispatch_cluster_remote_drivers").await, 0.0);
    let customer = b.token("customer1").await;
    let staff = b.token("restaurant1").await;
    let id = b
        .create_with_key(&customer, "silent-driver", 1)
        .await
        .expect(201)["order"]["id"]
        .as_i64()
        .expect("id");
    b.act(&staff, id, "confirm").await.expect(200);
    let mut offered = None;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        if let Some(m) = driver.ws.next_within(Duration::from_millis(500)).await
            && m["type"] == "offer"
        {
            offered = Some(m);
        }
    }
    assert!(offered.is_none(), "a silent driver was offered {offered:?}");
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn a_driver_carrying_nothing_of_another_node_sends_it_at_most_one_position_a_second() {
    if !cluster_available().await {
        return;
    }
    let cluster = TestCluster::new(3000).await;
    let (_b, a, _c, mut driver) = driver_on_a_seen_by_b(&cluster).await;
    let sent = "dispatch_cluster_geo_messages_total{direction=\"out\",kind=\"position\"}";
    let skipped = "dispatch_cluster_geo_messages_total{direction=\"skipped\",kind=\"position\"}";
    // Past the first position's second, so the window starts clean.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let sent_before = a.metric(sent).await;
    let skipped_before = a.metric(skipped).await;
    // Ten positions in about a second (10 Hz), none of another node's orders carried.
    let started = Instant::now();
    for step in 1..=10 {
        driver
            .move_to(north_of(RESTAURANT_1_AT, 0.3 - 0.01 * step as f64))
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seconds = started.elapsed().as_secs_f64().ceil();
    let sent_now = a.metric(sent).await - sent_before;
    let skipped_now = a.metric(skipped).await - skipped_before;
    // One message per owning node it reaches (B, and C if C's regions are
    // within the margin) per second at most; the rest skipped.
    assert!(sent_now >= 1.0, "no position went out at all");
    assert!(
        sent_now <= 2.0 * (seconds + 1.0),
        "{sent_now} positions sent in {seconds} s for 10 moves"
    );
    assert!(skipped_now >= 5.0, "{skipped_now} skipped of 10");
    cluster.drop_bucket().await;
}

#[tokio::test]
async fn a_driver_on_another_node_than_its_order_is_not_sent_its_own_positions_nor_are_they_published_for_it()
 {
    if !cluster_available().await {
        return;
    }
    let cluster = TestCluster::new(3000)
        .await
        .with("DISPATCH__DISPATCH__ROUND_INTERVAL_MS", "200");
    let (b, a, _c, mut driver) = driver_on_a_seen_by_b(&cluster).await;
    // The customer watches on the owner, B: nobody on another node wants
    // the order's positions but the driver's own node, for its socket.
    let (id, mut watcher) = assigned_and_watched(&b, &b, &mut driver, "own-positions").await;
    let staff = b.token("restaurant1").await;
    // The driver's socket follows the order through the bus (A does not
    // run it): its status updates reach it.
    driver.ws.next_of("snapshot", 5).await;
    b.act(&staff, id, "start_preparing").await.expect(200);
    driver.ws.next_status("PREPARING", 5).await;
    let published =
        "dispatch_cluster_order_bus_messages_total{direction=\"out\",kind=\"location\"}";
    let published_before = b.metric(published).await;

    let steps = 5;
    for step in 1..=steps {
        driver
            .move_to(north_of(RESTAURANT_1_AT, 0.3 - 0.05 * step as f64))
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The customer on B hears every one of them, from B's own feed.
    let mut heard = 0;
    while let Some(m) = watcher.next_within(Duration::from_millis(1000)).await {
        if m["type"] == "driver_location" {
            heard += 1;
        }
    }
    assert!(heard >= steps, "the customer on B heard {heard} positions");
    // As on one node, the driver is not sent its own positions back, and
    // B published none of them to the bus: nobody elsewhere wanted them.
    while let Some(m) = driver.ws.next_within(Duration::from_millis(500)).await {
        assert_ne!(m["type"], "driver_location", "echoed to the driver: {m}");
    }
    assert_eq!(
        b.metric(published).await - published_before,
        0.0,
        "B published positions only the driver's own node was subscribed to"
    );
    // A status update still reaches the driver's socket.
    b.act(&staff, id, "mark_ready").await.expect(200);
    driver.ws.next_status("READY_FOR_PICKUP", 5).await;

    // A customer on A, the driver's node, now watches too: A, which
    // followed the order's updates only, takes its positions as well.
    let heard_on_a =
        "dispatch_cluster_order_bus_messages_total{direction=\"in\",kind=\"location\"}";
    assert_eq!(a.metric(heard_on_a).await, 0.0);
    let customer = a.token("customer1").await;
    let mut on_a = WsClient::connect(&a, &customer).await;
    on_a.send(json!({ "type": "subscribe", "orderId": id }))
        .await;
    on_a.next_of("snapshot", 5).await;
    for step in 1..=steps {
        driver
            .move_to(north_of(RESTAURANT_1_AT, 0.05 - 0.01 * step as f64))
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut heard = 0;
    while let Some(m) = on_a.next_within(Duration::from_millis(1000)).await {
        if m["type"] == "driver_location" {
            heard += 1;
        }
    }
    assert!(heard >= 1, "the customer on A heard no position");
    // It leaves: A ends the positions' subscription and keeps the
    // updates' one for the driver's socket.
    let unsubscribed = "dispatch_cluster_order_subscriptions_total{op=\"unsubscribe\"}";
    let unsubscribed_before = a.metric(unsubscribed).await;
    on_a.send(json!({ "type": "unsubscribe", "orderId": id }))
        .await;
    let mut ended = false;
    for _ in 0..50 {
        if a.metric(unsubscribed).await - unsubscribed_before == 1.0 {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ended, "A kept the order's positions subscription");
    assert_eq!(a.metric("dispatch_cluster_watched_orders").await, 1.0);
    a.act(&driver.token, id, "pick_up").await.expect(200);
    driver.ws.next_status("PICKED_UP", 5).await;
    cluster.drop_bucket().await;
}
