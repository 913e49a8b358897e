//! Live tracking: positions reach only the watchers of the driver's order,
//! every update is accounted for, slow readers are cut off, presence expires.

use crate::helpers::*;
use serde_json::{Value, json};
use std::time::Duration;

const FAST_ROUNDS: (&str, &str) = ("DISPATCH__DISPATCH__ROUND_INTERVAL_MS", "200");

fn offset(from: (f64, f64), north_km: f64, east_km: f64) -> (f64, f64) {
    (
        from.0 + north_km / 111.2,
        from.1 + east_km / (111.32 * from.0.to_radians().cos()),
    )
}

/// An order of `customer` assigned to `driver` (who must be the only
/// available driver near restaurant 1).
async fn assigned(app: &TestApp, customer: &str, driver: &mut TestDriver) -> i64 {
    let id = confirmed_order(app, customer).await;
    let offer = driver.answer_offer(true, 10).await;
    assert_eq!(offer["orderId"], id);
    assert_eq!(
        driver.ws.next_of("offer_result", 5).await["result"],
        "assigned"
    );
    id
}

/// Waits until the driver's actor has taken on `orders` orders (the index
/// hears it from the actor once it carries them).
async fn until_carrying(app: &TestApp, driver: &TestDriver, at: (f64, f64), orders: u64) {
    let admin = app.token("admin").await;
    let nearby = format!("/api/drivers/nearby?lat={}&lon={}&radiusKm=5", at.0, at.1);
    for _ in 0..100 {
        let body = app.get(&nearby, Some(&admin)).await.expect(200);
        let carrying = body["drivers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|d| d["id"] == driver.id && d["activeOrders"] == orders);
        if carrying {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("driver {} never carried {orders} orders", driver.id);
}

/// (order, driver) of every driver_location until the socket goes quiet.
async fn locations_seen(ws: &mut WsClient) -> Vec<(i64, i64)> {
    let mut seen = Vec::new();
    while let Some(m) = ws.next_within(Duration::from_millis(700)).await {
        if m["type"] == "driver_location" {
            seen.push((
                m["orderId"].as_i64().unwrap(),
                m["location"]["driverId"].as_i64().unwrap(),
            ));
        }
    }
    seen
}

/// Every message until the socket goes quiet.
async fn drain(ws: &mut WsClient) -> Vec<Value> {
    let mut messages = Vec::new();
    while let Some(m) = ws.next_within(Duration::from_millis(500)).await {
        messages.push(m);
    }
    messages
}

async fn watch(app: &TestApp, token: &str, order_id: i64) -> WsClient {
    let mut ws = WsClient::connect(app, token).await;
    ws.send(json!({ "type": "subscribe", "orderId": order_id }))
        .await;
    ws.next_of("snapshot", 5).await;
    ws
}

#[tokio::test]
async fn each_customer_sees_only_its_own_drivers_positions() {
    let app = TestApp::spawn_with(true, &[FAST_ROUNDS]).await;
    let alice = app.token("customer1").await;
    let bob = app.token("customer2").await;
    let mut d1 = TestDriver::online(&app, "driver1", offset(RESTAURANT_1_AT, 0.2, 0.0)).await;
    let alice_order = assigned(&app, &alice, &mut d1).await;
    let mut d2 = TestDriver::online(&app, "driver2", offset(RESTAURANT_1_AT, -0.2, 0.0)).await;
    let bob_order = assigned(&app, &bob, &mut d2).await;
    let mut alice_ws = watch(&app, &alice, alice_order).await;
    let mut bob_ws = watch(&app, &bob, bob_order).await;

    for step in 1..=5 {
        d1.move_to(offset(RESTAURANT_1_AT, 0.2 + 0.1 * step as f64, 0.0))
            .await;
        d2.move_to(offset(RESTAURANT_1_AT, -0.2 - 0.1 * step as f64, 0.0))
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alice_saw = locations_seen(&mut alice_ws).await;
    let bob_saw = locations_seen(&mut bob_ws).await;
    assert!(!alice_saw.is_empty() && !bob_saw.is_empty());
    assert!(
        alice_saw
            .iter()
            .all(|&(o, d)| o == alice_order && d == d1.id),
        "{alice_saw:?}"
    );
    assert!(
        bob_saw.iter().all(|&(o, d)| o == bob_order && d == d2.id),
        "{bob_saw:?}"
    );
    // A customer of neither order, subscribed to nothing, hears nothing.
    let mut carol = WsClient::connect(&app, &app.token("customer3").await).await;
    d1.move_to(RESTAURANT_1_AT).await;
    assert!(
        carol
            .next_within(Duration::from_millis(500))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_location_carries_the_eta_which_follows_the_driver_and_counts_from_it_after_pickup() {
    let app = TestApp::spawn_with(
        true,
        &[
            FAST_ROUNDS,
            ("DISPATCH__DISPATCH__ETA_PUSH_THRESHOLD_SECS", "1"),
        ],
    )
    .await;
    let customer = app.token("customer1").await;
    let staff = app.token("restaurant1").await;
    let mut driver = TestDriver::online(&app, "driver1", offset(RESTAURANT_1_AT, 0.1, 0.0)).await;
    let id = assigned(&app, &customer, &mut driver).await;
    for action in ["start_preparing", "mark_ready"] {
        app.act(&staff, id, action).await.expect(200);
    }
    let mut ws = watch(&app, &customer, id).await;

    let eta_at = |m: &Value| {
        chrono::DateTime::parse_from_rfc3339(m["eta"]["estimatedDeliveryAt"].as_str().unwrap())
            .unwrap()
    };
    driver.move_to(offset(RESTAURANT_1_AT, 0.5, 0.0)).await;
    let near = ws.next_of("driver_location", 5).await;
    drain(&mut ws).await;
    driver.move_to(offset(RESTAURANT_1_AT, 8.0, 0.0)).await;
    // The moved estimate is stored and pushed as an order_update, beside
    // the position that moved it.
    let after_move = drain(&mut ws).await;
    let far = after_move
        .iter()
        .find(|m| m["type"] == "driver_location")
        .expect("a driver_location")
        .clone();
    let update = after_move
        .iter()
        .find(|m| m["type"] == "order_update")
        .expect("an order_update");
    assert!(
        eta_at(&far) > eta_at(&near),
        "farther driver, later delivery: {near} {far}"
    );
    assert_eq!(
        update["eta"]["estimatedDeliveryAt"],
        far["eta"]["estimatedDeliveryAt"]
    );
    let stored = app
        .get(&format!("/api/orders/{id}"), Some(&customer))
        .await
        .expect(200);
    assert_eq!(
        stored["order"]["estimatedDeliveryAt"],
        far["eta"]["estimatedDeliveryAt"]
    );
    assert_eq!(stored["driverLocation"]["driverId"], driver.id);

    driver.move_to(RESTAURANT_1_AT).await;
    ws.next_of("driver_location", 5).await;
    app.act(&driver.token, id, "pick_up").await.expect(200);
    // At the customer's door the estimate is now.
    driver.move_to((NEAR_LAT, NEAR_LON)).await;
    let there = ws.next_of("driver_location", 5).await;
    let left = there["eta"]["secondsRemaining"].as_i64().unwrap();
    assert!(left <= 2, "{there}");
    app.act(&driver.token, id, "deliver").await.expect(200);
    // The door position may have pushed one more estimate first.
    let delivered = loop {
        let update = ws.next_of("order_update", 5).await;
        if update["status"] != "PICKED_UP" {
            break update;
        }
    };
    assert_eq!(delivered["status"], "DELIVERED");
    assert_eq!(delivered["eta"], Value::Null);
}

#[tokio::test]
async fn presence_expires_and_a_new_position_brings_the_driver_back() {
    let app = TestApp::spawn_with(true, &[("DISPATCH__PRESENCE__TTL_SECS", "1")]).await;
    let admin = app.token("admin").await;
    let driver = app.token("driver1").await;
    let at = RESTAURANT_1_AT;
    let nearby = format!("/api/drivers/nearby?lat={}&lon={}&radiusKm=1", at.0, at.1);
    app.post(
        "/api/drivers/location",
        Some(&driver),
        json!({ "lat": at.0, "lon": at.1, "heading": 90, "speedMps": 4 }),
    )
    .await
    .expect(200);
    let count = |body: Value| body["drivers"].as_array().unwrap().len();
    let mut present = false;
    for _ in 0..20 {
        if count(app.get(&nearby, Some(&admin)).await.expect(200)) == 1 {
            present = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(present, "driver never indexed");
    let listed = app.get(&nearby, Some(&admin)).await.expect(200);
    let entry = &listed["drivers"][0];
    assert_eq!(entry["activeOrders"], 0);
    assert!(entry["distanceKm"].as_f64().unwrap() < 0.01);
    // REST-only drivers have no socket for offers: online, not available.
    assert_eq!(entry["available"], false);

    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(count(app.get(&nearby, Some(&admin)).await.expect(200)), 0);
    app.post(
        "/api/drivers/location",
        Some(&driver),
        json!({ "lat": at.0, "lon": at.1 }),
    )
    .await
    .expect(200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(count(app.get(&nearby, Some(&admin)).await.expect(200)), 1);
    assert!(app.metric("dispatch_drivers_went_stale_total").await >= 1.0);
}

#[tokio::test]
async fn driver_rest_endpoints_check_roles_and_inputs() {
    let app = TestApp::spawn_with(
        true,
        &[("DISPATCH__DRIVERS__LOCATION_UPDATES_PER_SEC", "2")],
    )
    .await;
    let customer = app.token("customer1").await;
    let driver = app.token("driver1").await;
    let admin = app.token("admin").await;
    app.post(
        "/api/drivers/location",
        Some(&customer),
        json!({ "lat": 30.0, "lon": -97.0 }),
    )
    .await
    .expect_error(403, "FORBIDDEN");
    let r = app
        .post(
            "/api/drivers/location",
            Some(&driver),
            json!({ "lat": 95, "speedMps": -1 }),
        )
        .await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(r.fields(), ["lat", "lon", "speedMps"]);
    let mut limited = 0;
    for _ in 0..6 {
        let r = app
            .post(
                "/api/drivers/location",
                Some(&driver),
                json!({ "lat": 30.0, "lon": -97.0 }),
            )
            .await;
        if r.status == 429 {
            r.expect_error(429, "RATE_LIMITED");
            limited += 1;
        }
    }
    assert!(limited >= 3, "{limited}");

    assert_eq!(
        put(&app, &driver, json!({ "available": false }))
            .await
            .expect(200)["available"],
        false
    );
    assert_eq!(
        put(&app, &driver, json!({ "available": true }))
            .await
            .expect(200)["available"],
        true
    );
    put(&app, &driver, json!({}))
        .await
        .expect_error(400, "VALIDATION_ERROR");
    put(&app, &driver, json!({ "available": "yes" }))
        .await
        .expect_error(400, "VALIDATION_ERROR");
    put(&app, &customer, json!({ "available": true }))
        .await
        .expect_error(403, "FORBIDDEN");

    app.get("/api/drivers/nearby?lat=30&lon=-97", Some(&driver))
        .await
        .expect_error(403, "FORBIDDEN");
    let r = app.get("/api/drivers/nearby?lat=30", Some(&admin)).await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(r.fields(), ["lon"]);
    let r = app
        .get(
            "/api/drivers/nearby?lat=30&lon=-97&radiusKm=0&limit=0",
            Some(&admin),
        )
        .await;
    assert_eq!(r.fields(), ["radiusKm", "limit"]);
}

#[tokio::test]
async fn ten_thousand_updates_are_each_delivered_or_coalesced_and_counted() {
    const UPDATES: usize = 10_000;
    let app = TestApp::spawn_with(
        true,
        &[FAST_ROUNDS, ("DISPATCH__WS__MESSAGES_PER_SEC", "100000")],
    )
    .await;
    let customer = app.token("customer1").await;
    let mut driver = TestDriver::online(&app, "driver1", offset(RESTAURANT_1_AT, 0.1, 0.0)).await;
    let id = assigned(&app, &customer, &mut driver).await;
    let mut ws = watch(&app, &customer, id).await;
    let coalesced_before = app.metric("dispatch_ws_location_coalesced_total").await;

    let reader = tokio::spawn(async move {
        let mut received = 0usize;
        while let Some(m) = ws.next_within(Duration::from_secs(3)).await {
            if m["type"] == "driver_location" {
                received += 1;
            }
        }
        received
    });
    for i in 0..UPDATES {
        let north = (i % 1000) as f64 * 0.001;
        driver.move_to(offset(RESTAURANT_1_AT, north, 0.0)).await;
    }
    let received = reader.await.unwrap();
    let coalesced = app.metric("dispatch_ws_location_coalesced_total").await - coalesced_before;
    let dropped = app.metric("dispatch_ws_messages_dropped_total").await;
    assert_eq!(dropped, 0.0);
    assert_eq!(
        received + coalesced as usize,
        UPDATES,
        "received {received} + coalesced {coalesced} != sent {UPDATES}"
    );
    assert!(
        app.metric("dispatch_location_updates_total{source=\"ws\"}")
            .await
            >= UPDATES as f64
    );
    assert!(app.metric("dispatch_fanout_latency_seconds_count").await >= received as f64);
}

#[tokio::test]
async fn a_reader_that_never_reads_is_closed_with_1013_and_others_are_unaffected() {
    let app = TestApp::spawn_with(
        true,
        &[
            ("DISPATCH__WS__OUTBOUND_QUEUE", "16"),
            ("DISPATCH__WS__MESSAGES_PER_SEC", "100000"),
            ("DISPATCH__WS__SEND_TIMEOUT_SECS", "10"),
        ],
    )
    .await;
    let customer = app.token("customer1").await;
    let id = app.place_order(&customer).await["id"].as_i64().unwrap();
    let mut healthy = watch(&app, &customer, id).await;

    // A client with a tiny receive buffer that subscribes again and again
    // (each answer is a full snapshot) and never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let address = app.address.trim_start_matches("http://").to_string();
    let stream = socket.connect(address.parse().unwrap()).await.unwrap();
    let url = format!("ws://{address}/ws?token={customer}");
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (socket, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let mut stalled = WsClient { socket };
    // Each answer is a ~1 KB snapshot; the kernel buffers a few MB of them
    // before the server's writer blocks and its queue of 16 overflows.
    let subscribe = json!({ "type": "subscribe", "orderId": id }).to_string();
    for round in 0..400 {
        for _ in 0..100 {
            stalled.send_text(subscribe.clone()).await;
        }
        if app.metric("dispatch_ws_slow_reader_closes_total").await >= 1.0 {
            break;
        }
        assert!(round < 399, "the stalled reader was never cut off");
    }
    assert_eq!(
        app.metric("dispatch_ws_slow_reader_closes_total").await,
        1.0
    );
    // The stalled client now drains and finds the 1013 close at the end.
    assert_eq!(stalled.ended(15).await, Ended::Closed(1013));
    // The healthy watcher still gets its updates.
    let staff = app.token("restaurant1").await;
    app.act(&staff, id, "confirm").await.expect(200);
    assert_eq!(
        healthy.next_of("order_update", 5).await["status"],
        "CONFIRMED"
    );
}

async fn put(app: &TestApp, token: &str, body: Value) -> Response {
    app.request(
        reqwest::Method::PUT,
        "/api/drivers/me/availability",
        Some(token),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn breadcrumbs_of_a_carried_order_are_stored_at_most_once_per_interval() {
    for (every_ms, stored) in [("0", 5.0), ("60000", 1.0)] {
        let app = TestApp::spawn_with(
            true,
            &[
                FAST_ROUNDS,
                ("DISPATCH__BREADCRUMBS__EVERY_MS", every_ms),
                ("DISPATCH__BREADCRUMBS__FLUSH_MS", "50"),
            ],
        )
        .await;
        let customer = app.token("customer1").await;
        let mut driver = TestDriver::online(&app, "driver1", RESTAURANT_1_AT).await;
        let id = assigned(&app, &customer, &mut driver).await;
        let mut ws = watch(&app, &customer, id).await;
        until_carrying(&app, &driver, RESTAURANT_1_AT, 1).await;
        // Positions before the order was carried are not a delivery's trail.
        let written = || app.metric("dispatch_breadcrumbs_written_total");
        assert_eq!(written().await, 0.0);
        for step in 1..=5 {
            driver
                .move_to(offset(RESTAURANT_1_AT, 0.1 * f64::from(step), 0.0))
                .await;
            ws.next_of("driver_location", 5).await;
        }
        for _ in 0..40 {
            if written().await >= stored {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A few flushes later, still no more than the interval allows.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(written().await, stored, "every_ms = {every_ms}");
    }
}

#[tokio::test]
async fn a_cancelled_order_hears_no_more_of_its_former_driver() {
    let app = TestApp::spawn_with(true, &[FAST_ROUNDS]).await;
    let customer = app.token("customer1").await;
    let admin = app.token("admin").await;
    let mut driver = TestDriver::online(&app, "driver1", RESTAURANT_1_AT).await;
    let id = assigned(&app, &customer, &mut driver).await;
    let mut ws = watch(&app, &customer, id).await;
    until_carrying(&app, &driver, RESTAURANT_1_AT, 1).await;
    driver.move_to(offset(RESTAURANT_1_AT, 0.2, 0.0)).await;
    ws.next_of("driver_location", 5).await;

    app.act(&admin, id, "cancel").await.expect(200);
    assert_eq!(ws.next_of("order_update", 5).await["status"], "CANCELLED");
    for step in 1..=3 {
        driver
            .move_to(offset(RESTAURANT_1_AT, 0.2 + 0.1 * f64::from(step), 0.0))
            .await;
    }
    assert_eq!(locations_seen(&mut ws).await, vec![]);
}

fn store_options(app: &TestApp) -> dispatchd::store::StoreOptions {
    dispatchd::store::StoreOptions {
        url: app.db.url(),
        max_connections: 2,
        acquire_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(30),
    }
}

fn at_ms(value: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(value.as_str().expect("a timestamp"))
        .expect("RFC 3339")
        .timestamp_millis()
}

#[tokio::test]
async fn a_graceful_stop_writes_every_queued_breadcrumb_and_eta() {
    // Nothing would be written before the stop: the writers wait ten minutes.
    let mut app = TestApp::spawn_with(
        true,
        &[
            FAST_ROUNDS,
            ("DISPATCH__BREADCRUMBS__EVERY_MS", "0"),
            ("DISPATCH__BREADCRUMBS__FLUSH_MS", "600000"),
            ("DISPATCH__BREADCRUMBS__BATCH", "7"),
            ("DISPATCH__DISPATCH__ETA_WRITE_EVERY_MS", "600000"),
        ],
    )
    .await;
    let customer = app.token("customer1").await;
    let mut driver = TestDriver::online(&app, "driver1", RESTAURANT_1_AT).await;
    let id = assigned(&app, &customer, &mut driver).await;
    let mut ws = watch(&app, &customer, id).await;
    until_carrying(&app, &driver, RESTAURANT_1_AT, 1).await;
    // Twenty positions, driving away: the ETA moves past the threshold.
    let mut pushed_eta = Value::Null;
    for step in 1..=20 {
        driver
            .move_to(offset(RESTAURANT_1_AT, 0.4 * f64::from(step), 0.0))
            .await;
        loop {
            let m = ws.next(5).await;
            if m["type"] == "order_update" {
                pushed_eta = m["eta"]["estimatedDeliveryAt"].clone();
            }
            if m["type"] == "driver_location" {
                break;
            }
        }
    }
    // The last push may trail its position by a moment.
    while let Some(m) = ws.next_within(Duration::from_millis(500)).await {
        if m["type"] == "order_update" {
            pushed_eta = m["eta"]["estimatedDeliveryAt"].clone();
        }
    }
    assert!(
        pushed_eta.is_string(),
        "the ETA never moved past the threshold"
    );
    assert_eq!(app.metric("dispatch_breadcrumbs_written_total").await, 14.0);

    let status = app.terminate();
    assert_eq!(status.code(), Some(0));
    let store = dispatchd::store::open(&store_options(&app)).await.unwrap();
    let order = store.order(id).await.unwrap().unwrap();
    assert_eq!(
        order.estimated_delivery_at.map(|at| at.timestamp_millis()),
        Some(at_ms(&pushed_eta)),
        "the pushed ETA was stored before exit"
    );
    drop(store);
    let crumbs: i64 = match &app.db {
        TestDb::Sqlite { .. } => {
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect(&app.db.url())
                .await
                .unwrap();
            sqlx::query_scalar("SELECT COUNT(*) FROM driver_locations WHERE order_id = $1")
                .bind(id)
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
        TestDb::Postgres { .. } => {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&app.db.url()).await.unwrap();
            sqlx::query_scalar("SELECT COUNT(*) FROM driver_locations WHERE order_id = $1")
                .bind(id)
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
    };
    assert_eq!(crumbs, 20, "every queued breadcrumb was written");
}

#[tokio::test]
async fn a_late_eta_never_overwrites_the_estimate_of_a_newer_change() {
    let mut app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    let staff = app.token("restaurant1").await;
    let id = app.place_order(&customer).await["id"].as_i64().unwrap();
    let confirmed = app.act(&staff, id, "confirm").await.expect(200);
    assert_eq!(confirmed["order"]["version"], 2);
    assert_eq!(app.terminate().code(), Some(0));

    let store = dispatchd::store::open(&store_options(&app)).await.unwrap();
    let before = store.order(id).await.unwrap().unwrap();
    let late = chrono::Utc::now() + chrono::Duration::hours(3);
    // Computed for version 1, written after version 2 committed: refused.
    assert!(!store.set_estimated_delivery(id, 1, late).await.unwrap());
    let after = store.order(id).await.unwrap().unwrap();
    assert_eq!(after.estimated_delivery_at, before.estimated_delivery_at);
    assert_eq!(after.version, 2);
    // For the version the order is at, it applies, and is no new version.
    assert!(store.set_estimated_delivery(id, 2, late).await.unwrap());
    let after = store.order(id).await.unwrap().unwrap();
    assert_eq!(
        after.estimated_delivery_at.map(|at| at.timestamp_millis()),
        Some(late.timestamp_millis())
    );
    assert_eq!(after.version, 2);
}

/// The next ETA push (an `order_update` at `version`) whose seconds
/// remaining satisfy `wanted`; panics after `secs`.
async fn eta_push(
    ws: &mut WsClient,
    version: i64,
    secs: u64,
    wanted: impl Fn(i64) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(m) = ws.next_within(left).await else {
            panic!("no ETA push within {secs} s");
        };
        if m["type"] == "order_update"
            && m["version"] == version
            && m["eta"]["secondsRemaining"].as_i64().is_some_and(&wanted)
        {
            return m;
        }
    }
}

#[tokio::test]
async fn a_waiting_orders_eta_moves_with_the_clock_and_with_the_nearest_driver() {
    let app = TestApp::spawn_with(
        true,
        &[
            FAST_ROUNDS,
            ("DISPATCH__DISPATCH__ETA_REFRESH_MS", "200"),
            ("DISPATCH__DISPATCH__ETA_PUSH_THRESHOLD_SECS", "1"),
        ],
    )
    .await;
    let customer = app.token("customer1").await;
    let staff = app.token("restaurant1").await;
    let id = confirmed_order(&app, &customer).await;
    app.act(&staff, id, "start_preparing").await.expect(200);
    app.act(&staff, id, "mark_ready").await.expect(200);
    let mut ws = WsClient::connect(&app, &customer).await;
    ws.send(json!({ "type": "subscribe", "orderId": id })).await;
    let snapshot = ws.next_of("snapshot", 5).await;
    let first = at_ms(&snapshot["eta"]["estimatedDeliveryAt"]);

    // The food is ready and nobody is coming: the estimate slides with the
    // clock instead of counting down to zero.
    let slid = eta_push(&mut ws, 4, 5, |_| true).await;
    assert!(
        at_ms(&slid["eta"]["estimatedDeliveryAt"]) > first + 1000,
        "{slid}"
    );
    assert_eq!(slid["status"], "READY_FOR_PICKUP");

    // The nearest available driver is 8 km away: the estimate counts from
    // it (about 25 minutes to the restaurant, 3 to the customer).
    let mut far = TestDriver::online(&app, "driver1", offset(RESTAURANT_1_AT, 8.0, 0.0)).await;
    eta_push(&mut ws, 4, 10, |secs| secs > 1500).await;
    // It declines; a driver at the restaurant comes online: minutes again.
    far.answer_offer(false, 10).await;
    let _near = TestDriver::online(&app, "driver2", RESTAURANT_1_AT).await;
    eta_push(&mut ws, 4, 10, |secs| secs < 600).await;
    // The stored estimate follows too (written in the background).
    tokio::time::sleep(Duration::from_millis(800)).await;
    let stored = app
        .get(&format!("/api/orders/{id}"), Some(&customer))
        .await
        .expect(200);
    assert!(
        stored["eta"]["secondsRemaining"].as_i64().unwrap() < 600,
        "{stored}"
    );
}
