//! Dispatch end to end: real drivers on real sockets receive offers, accept,
//! decline or let them expire; assignment is durable and reaches watchers.

use crate::helpers::*;
use serde_json::json;
use std::time::Duration;

const FAST_ROUNDS: (&str, &str) = ("DISPATCH__DISPATCH__ROUND_INTERVAL_MS", "200");

/// A point `km` east (negative: west) of restaurant 1.
fn east_of_restaurant(km: f64) -> (f64, f64) {
    let (lat, lon) = RESTAURANT_1_AT;
    (lat, lon + km / (111.32 * lat.to_radians().cos()))
}

#[tokio::test]
async fn the_nearest_available_driver_gets_the_offer_and_accepting_assigns_it() {
    let app = TestApp::spawn_with(true, &[FAST_ROUNDS]).await;
    let mut near = TestDriver::online(&app, "driver1", east_of_restaurant(0.3)).await;
    let mut far = TestDriver::online(&app, "driver2", east_of_restaurant(3.0)).await;
    let customer = app.token("customer1").await;
    let id = app.place_order(&customer).await["id"].as_i64().unwrap();
    let mut watcher = WsClient::connect(&app, &customer).await;
    watcher
        .send(json!({ "type": "subscribe", "orderId": id }))
        .await;
    watcher.next_of("snapshot", 5).await;
    let staff = app.token("restaurant1").await;
    app.act(&staff, id, "confirm").await.expect(200);

    let offer = near.answer_offer(true, 10).await;
    assert_eq!(offer["orderId"], id);
    assert_eq!(offer["pickup"]["restaurantId"], 1);
    assert!(
        (offer["distanceKm"].as_f64().unwrap() - 0.3).abs() < 0.05,
        "{offer}"
    );
    assert!(offer["expiresAt"].is_string());
    assert!(offer["dropoff"]["lat"].is_number());
    let result = near.ws.next_of("offer_result", 5).await;
    assert_eq!(result["result"], "assigned");
    assert_eq!(result["offerId"], offer["offerId"]);

    let update = watcher.next_of("order_update", 5).await; // CONFIRMED
    assert_eq!(update["status"], "CONFIRMED");
    let assigned = watcher.next_of("order_update", 5).await;
    assert_eq!(assigned["order"]["driverId"], near.id);
    let detail = app
        .get(&format!("/api/orders/{id}"), Some(&customer))
        .await
        .expect(200);
    assert_eq!(detail["driver"]["id"], near.id);
    assert!(detail["driver"]["vehicleType"].as_str().is_some());
    assert_eq!(app.metric("dispatch_assign_seconds_count").await, 1.0);
    assert_eq!(
        app.metric("dispatch_offers_total{result=\"assigned\"}")
            .await,
        1.0
    );
    let events = app
        .get(&format!("/api/orders/{id}/events"), Some(&customer))
        .await
        .expect(200);
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    // The driver waits near the restaurant, so arrival events may follow.
    assert_eq!(
        kinds[..3],
        ["ORDER_PLACED", "STATUS_CHANGED", "DRIVER_ASSIGNED"]
    );
    assert!(
        kinds[3..]
            .iter()
            .all(|k| *k == "DRIVER_APPROACHING" || *k == "DRIVER_ARRIVED"),
        "{kinds:?}"
    );
    // The far driver was never offered anything.
    assert!(
        far.ws
            .next_within(Duration::from_millis(500))
            .await
            .is_none()
    );
    // The assigned driver now sees the order, and its socket follows it.
    app.get(&format!("/api/orders/{id}"), Some(&near.token))
        .await
        .expect(200);
    app.act(&staff, id, "start_preparing").await.expect(200);
    let pushed = near.ws.next_status("PREPARING", 5).await;
    assert_eq!(pushed["order"]["driverId"], near.id);
}

#[tokio::test]
async fn a_decline_moves_the_offer_to_the_next_driver() {
    let app = TestApp::spawn_with(true, &[FAST_ROUNDS]).await;
    let mut first = TestDriver::online(&app, "driver1", east_of_restaurant(0.2)).await;
    let mut second = TestDriver::online(&app, "driver2", east_of_restaurant(1.0)).await;
    let customer = app.token("customer1").await;
    let id = confirmed_order(&app, &customer).await;
    let declined = first.answer_offer(false, 10).await;
    assert_eq!(
        first.ws.next_of("offer_result", 5).await["result"],
        "declined"
    );
    let offer = second.ws.next_of("offer", 10).await;
    assert_eq!(offer["orderId"], id);
    // The decliner is not asked again for this order.
    assert!(
        first
            .ws
            .next_within(Duration::from_millis(600))
            .await
            .is_none()
    );
    // A REST accept by the wrong driver is refused; by the right one it assigns.
    app.post(
        &format!("/api/offers/{}/accept", offer["offerId"]),
        Some(&first.token),
        json!({}),
    )
    .await
    .expect_error(404, "NOT_FOUND");
    let accepted = app
        .post(
            &format!("/api/offers/{}/accept", offer["offerId"]),
            Some(&second.token),
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(accepted["order"]["driverId"], second.id);
    app.post(
        &format!("/api/offers/{}/decline", declined["offerId"]),
        Some(&first.token),
        json!({}),
    )
    .await
    .expect_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn an_expired_offer_moves_to_the_next_driver_and_a_late_accept_finds_it_taken() {
    let app = TestApp::spawn_with(
        true,
        &[FAST_ROUNDS, ("DISPATCH__DISPATCH__OFFER_TIMEOUT_SECS", "1")],
    )
    .await;
    let mut slow = TestDriver::online(&app, "driver1", east_of_restaurant(0.2)).await;
    let mut quick = TestDriver::online(&app, "driver2", east_of_restaurant(1.0)).await;
    let customer = app.token("customer1").await;
    let id = confirmed_order(&app, &customer).await;
    let missed = slow.ws.next_of("offer", 10).await;
    assert_eq!(
        slow.ws.next_of("offer_result", 5).await["result"],
        "expired"
    );
    let offer = quick.answer_offer(true, 10).await;
    assert_eq!(offer["orderId"], id);
    assert_eq!(
        quick.ws.next_of("offer_result", 5).await["result"],
        "assigned"
    );
    // Both drivers tried to take the order: only one has it.
    slow.ws
        .send(json!({ "type": "offer_response", "offerId": missed["offerId"], "accept": true }))
        .await;
    let late = slow.ws.next_of("offer_result", 5).await;
    assert_eq!(late["result"], "taken");
    app.post(
        &format!("/api/offers/{}/accept", missed["offerId"]),
        Some(&slow.token),
        json!({}),
    )
    .await
    .expect_error(409, "INVALID_TRANSITION");
    let order = app
        .get(&format!("/api/orders/{id}"), Some(&customer))
        .await
        .expect(200);
    assert_eq!(order["order"]["driverId"], quick.id);
}

#[tokio::test]
async fn a_round_pairs_two_orders_and_two_drivers_optimally_not_greedily() {
    let app = TestApp::spawn_with(true, &[("DISPATCH__DISPATCH__ROUND_INTERVAL_MS", "2000")]).await;
    // On one east-west line: restaurant 1 at 0 km, restaurant 3 about 0.3 km
    // east. Greedy would hand restaurant 1's order to the driver nearest it
    // and leave the far driver for the other; the optimum crosses them.
    let (r3_lat, r3_lon) = (30.2671, -97.7392);
    let near_both = (
        (RESTAURANT_1_AT.0 + r3_lat) / 2.0,
        RESTAURANT_1_AT.1 + 0.4 * (r3_lon - RESTAURANT_1_AT.1),
    );
    let west = east_of_restaurant(-1.0);
    let mut x = TestDriver::online(&app, "driver1", near_both).await;
    let mut y = TestDriver::online(&app, "driver2", west).await;
    for driver in [&x, &y] {
        app.request(
            reqwest::Method::PUT,
            "/api/drivers/me/availability",
            Some(&driver.token),
            Some(json!({ "available": false })),
        )
        .await
        .expect(200);
    }
    let customer = app.token("customer1").await;
    let at_1 = confirmed_order(&app, &customer).await;
    let at_3 = app
        .post("/api/orders", Some(&customer), order_body(3, 17, 1))
        .await
        .expect(201)["order"]["id"]
        .as_i64()
        .unwrap();
    let staff3 = app.token("restaurant3").await;
    app.act(&staff3, at_3, "confirm").await.expect(200);
    for driver in [&x, &y] {
        app.request(
            reqwest::Method::PUT,
            "/api/drivers/me/availability",
            Some(&driver.token),
            Some(json!({ "available": true })),
        )
        .await
        .expect(200);
    }
    let x_offer = x.ws.next_of("offer", 10).await;
    let y_offer = y.ws.next_of("offer", 10).await;
    assert_eq!(
        y_offer["orderId"], at_1,
        "the west driver should take restaurant 1's order"
    );
    assert_eq!(
        x_offer["orderId"], at_3,
        "the middle driver should take restaurant 3's order"
    );
}

#[tokio::test]
async fn paused_stale_far_and_full_drivers_are_never_offered() {
    let app = TestApp::spawn_with(
        true,
        &[
            FAST_ROUNDS,
            ("DISPATCH__DISPATCH__MAX_ACTIVE_ORDERS", "1"),
            ("DISPATCH__PRESENCE__TTL_SECS", "2"),
        ],
    )
    .await;
    let customer = app.token("customer1").await;
    // `full` takes a first order and is at its limit of one.
    let mut full = TestDriver::online(&app, "driver1", east_of_restaurant(0.1)).await;
    let first = confirmed_order(&app, &customer).await;
    assert_eq!(full.answer_offer(true, 10).await["orderId"], first);
    full.ws.next_of("offer_result", 5).await;

    let mut paused = TestDriver::online(&app, "driver2", east_of_restaurant(0.2)).await;
    paused
        .ws
        .send(json!({ "type": "set_availability", "available": false }))
        .await;
    let mut far = TestDriver::online(&app, "driver3", east_of_restaurant(20.0)).await;
    // `stale` reports once over REST and then goes quiet past the TTL.
    let stale = app.token("driver4").await;
    let mut stale_ws = WsClient::connect(&app, &stale).await;
    let at = east_of_restaurant(0.3);
    app.post(
        "/api/drivers/location",
        Some(&stale),
        json!({ "lat": at.0, "lon": at.1 }),
    )
    .await
    .expect(200);
    let mut good = TestDriver::online(&app, "driver5", east_of_restaurant(2.0)).await;
    // Keep the good one fresh while the stale one expires.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        good.move_to(east_of_restaurant(2.0)).await;
        far.move_to(east_of_restaurant(20.0)).await;
        paused.move_to(east_of_restaurant(0.2)).await;
        full.move_to(east_of_restaurant(0.1)).await;
    }
    let second = confirmed_order(&app, &customer).await;
    let offer = good.ws.next_of("offer", 10).await;
    assert_eq!(offer["orderId"], second);
    for (name, ws) in [
        ("full", &mut full.ws),
        ("paused", &mut paused.ws),
        ("far", &mut far.ws),
        ("stale", &mut stale_ws),
    ] {
        while let Some(m) = ws.next_within(Duration::from_millis(300)).await {
            assert_ne!(m["type"], "offer", "{name} driver got an offer: {m}");
        }
    }
}

#[tokio::test]
async fn cancelling_an_assigned_order_frees_its_driver() {
    let app = TestApp::spawn_with(
        true,
        &[FAST_ROUNDS, ("DISPATCH__DISPATCH__MAX_ACTIVE_ORDERS", "1")],
    )
    .await;
    let customer = app.token("customer1").await;
    let mut driver = TestDriver::online(&app, "driver1", east_of_restaurant(0.2)).await;
    let id = confirmed_order(&app, &customer).await;
    driver.answer_offer(true, 10).await;
    driver.ws.next_of("offer_result", 5).await;

    let admin = app.token("admin").await;
    app.act(&admin, id, "cancel").await.expect(200);
    let update = driver.ws.next_status("CANCELLED", 5).await;
    assert!(update["order"]["cancelledAt"].is_string());
    let events = app
        .get(&format!("/api/orders/{id}/events"), Some(&admin))
        .await
        .expect(200);
    let last = events["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["type"], "DRIVER_UNASSIGNED");
    assert_eq!(last["data"]["driverId"], driver.id);
    // Free again: the next order is offered to the same driver.
    let next = confirmed_order(&app, &customer).await;
    assert_eq!(driver.ws.next_of("offer", 10).await["orderId"], next);
}

#[tokio::test]
async fn after_a_restart_a_confirmed_unassigned_order_is_offered_again() {
    let app = TestApp::spawn_with(true, &[FAST_ROUNDS]).await;
    let customer = app.token("customer1").await;
    let id = confirmed_order(&app, &customer).await;
    let mut before = TestDriver::online(&app, "driver1", east_of_restaurant(0.2)).await;
    let void = before.ws.next_of("offer", 10).await;
    let app = app.crash_and_restart().await;
    // The offer made before the crash is void.
    app.post(
        &format!("/api/offers/{}/accept", void["offerId"]),
        Some(&before.token),
        json!({}),
    )
    .await
    .expect_error(404, "NOT_FOUND");
    let mut driver = TestDriver::online(&app, "driver1", east_of_restaurant(0.2)).await;
    let offer = driver.answer_offer(true, 10).await;
    assert_eq!(offer["orderId"], id);
    assert_ne!(offer["offerId"], void["offerId"]);
    assert_eq!(
        driver.ws.next_of("offer_result", 5).await["result"],
        "assigned"
    );
}

#[tokio::test]
async fn offer_endpoints_check_role_and_ids() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    app.post("/api/offers/1/accept", Some(&customer), json!({}))
        .await
        .expect_error(403, "FORBIDDEN");
    let driver = app.token("driver1").await;
    app.post("/api/offers/123/accept", Some(&driver), json!({}))
        .await
        .expect_error(404, "NOT_FOUND");
    app.post("/api/offers/abc/decline", Some(&driver), json!({}))
        .await
        .expect_error(404, "NOT_FOUND");
    app.post("/api/offers/1/accept", None, json!({}))
        .await
        .expect_error(401, "UNAUTHORIZED");
}

/// Reads the socket for `wait`; panics if an offer arrives.
async fn no_offer_within(driver: &mut TestDriver, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match driver.ws.next_within(left).await {
            Some(m) if m["type"] == "offer" => panic!("driver {} was offered {m}", driver.id),
            Some(_) => continue,
            None => return,
        }
    }
}

async fn availability(app: &TestApp, token: &str, available: bool) -> serde_json::Value {
    app.request(
        reqwest::Method::PUT,
        "/api/drivers/me/availability",
        Some(token),
        Some(json!({ "available": available })),
    )
    .await
    .expect(200)
}

#[tokio::test]
async fn a_paused_driver_stays_paused_across_a_restart() {
    let app = TestApp::spawn_with(true, &[FAST_ROUNDS]).await;
    let driver = TestDriver::online(&app, "driver1", RESTAURANT_1_AT).await;
    assert_eq!(
        availability(&app, &driver.token, false).await["available"],
        false
    );
    // Paused over the socket too, by another driver.
    let mut other = TestDriver::online(&app, "driver2", RESTAURANT_1_AT).await;
    other
        .ws
        .send(json!({ "type": "set_availability", "available": false }))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop((driver, other));

    let app = app.crash_and_restart().await;
    let customer = app.token("customer1").await;
    let mut paused = TestDriver::online(&app, "driver1", RESTAURANT_1_AT).await;
    let mut also_paused = TestDriver::online(&app, "driver2", RESTAURANT_1_AT).await;
    let id = confirmed_order(&app, &customer).await;
    no_offer_within(&mut paused, Duration::from_secs(2)).await;
    no_offer_within(&mut also_paused, Duration::from_millis(200)).await;
    // Resuming is remembered the same way, and the offer comes.
    availability(&app, &paused.token, true).await;
    assert_eq!(paused.answer_offer(false, 10).await["orderId"], id);
}

#[tokio::test]
async fn a_driver_who_declined_an_order_is_not_offered_it_again_after_a_restart() {
    let app = TestApp::spawn_with(true, &[FAST_ROUNDS]).await;
    let customer = app.token("customer1").await;
    let mut driver = TestDriver::online(&app, "driver1", RESTAURANT_1_AT).await;
    let id = confirmed_order(&app, &customer).await;
    assert_eq!(driver.answer_offer(false, 10).await["orderId"], id);
    assert_eq!(
        driver.ws.next_of("offer_result", 5).await["result"],
        "declined"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(driver);

    let app = app.crash_and_restart().await;
    let mut declined = TestDriver::online(&app, "driver1", RESTAURANT_1_AT).await;
    no_offer_within(&mut declined, Duration::from_secs(2)).await;
    // Someone else still gets it.
    let mut other = TestDriver::online(&app, "driver2", RESTAURANT_1_AT).await;
    assert_eq!(other.answer_offer(true, 10).await["orderId"], id);
}

/// Two confirmed orders of restaurant 1, ready together, while `drivers`
/// are paused; then the drivers come back. Returns the two order ids.
async fn two_orders_while_paused(app: &TestApp, drivers: &[&TestDriver]) -> (i64, i64) {
    for driver in drivers {
        app.request(
            reqwest::Method::PUT,
            "/api/drivers/me/availability",
            Some(&driver.token),
            Some(json!({ "available": false })),
        )
        .await
        .expect(200);
    }
    let customer = app.token("customer1").await;
    let first = confirmed_order(app, &customer).await;
    let second = confirmed_order(app, &customer).await;
    for driver in drivers {
        app.request(
            reqwest::Method::PUT,
            "/api/drivers/me/availability",
            Some(&driver.token),
            Some(json!({ "available": true })),
        )
        .await
        .expect(200);
    }
    (first, second)
}

#[tokio::test]
async fn two_orders_of_one_restaurant_ready_together_are_one_offer_accepted_whole() {
    let app = TestApp::spawn_with(true, &[FAST_ROUNDS]).await;
    let mut driver = TestDriver::online(&app, "driver1", east_of_restaurant(0.3)).await;
    let (first, second) = two_orders_while_paused(&app, &[&driver]).await;

    let offer = driver.answer_offer(true, 10).await;
    assert_eq!(offer["orderIds"], json!([first, second]), "{offer}");
    assert_eq!(offer["orderId"], first);
    let dropoffs = offer["dropoffs"].as_array().expect("dropoffs");
    assert_eq!(dropoffs.len(), 2);
    assert_eq!(dropoffs[1]["orderId"], second);
    assert!(dropoffs[1]["lat"].is_number());
    let result = driver.ws.next_of("offer_result", 5).await;
    assert_eq!(result["result"], "assigned");
    assert_eq!(result["orderIds"], json!([first, second]));
    let customer = app.token("customer1").await;
    for id in [first, second] {
        let detail = app
            .get(&format!("/api/orders/{id}"), Some(&customer))
            .await
            .expect(200);
        assert_eq!(detail["driver"]["id"], driver.id, "order {id}");
    }
    assert_eq!(app.metric("dispatch_bundled_offers_total").await, 1.0);
    // One offer, not two.
    assert_eq!(
        app.metric("dispatch_offers_total{result=\"sent\"}").await,
        1.0
    );
}

#[tokio::test]
async fn a_declined_bundle_moves_whole_to_the_next_driver() {
    let app = TestApp::spawn_with(true, &[FAST_ROUNDS]).await;
    let mut near = TestDriver::online(&app, "driver1", east_of_restaurant(0.2)).await;
    let mut next = TestDriver::online(&app, "driver2", east_of_restaurant(1.0)).await;
    let (first, second) = two_orders_while_paused(&app, &[&near, &next]).await;

    let declined = near.answer_offer(false, 10).await;
    assert_eq!(declined["orderIds"], json!([first, second]), "{declined}");
    let result = near.ws.next_of("offer_result", 5).await;
    assert_eq!(result["result"], "declined");
    let offer = next.answer_offer(true, 10).await;
    assert_eq!(offer["orderIds"], json!([first, second]), "{offer}");
    assert_eq!(
        next.ws.next_of("offer_result", 5).await["result"],
        "assigned"
    );
    // The decliner is never offered either order again.
    assert!(
        near.ws
            .next_within(Duration::from_millis(600))
            .await
            .is_none_or(|m| m["type"] != "offer")
    );
}

/// A point `north_km` north and `east_km` east of restaurant 1.
fn from_restaurant(north_km: f64, east_km: f64) -> (f64, f64) {
    let (lat, lon) = RESTAURANT_1_AT;
    (
        lat + north_km / 111.2,
        lon + east_km / (111.32 * lat.to_radians().cos()),
    )
}

/// Great-circle kilometres between two points.
fn km_between(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (
        a.0.to_radians(),
        a.1.to_radians(),
        b.0.to_radians(),
        b.1.to_radians(),
    );
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6371.0088 * h.sqrt().asin()
}

/// The ETA of a `driver_location` frame, in milliseconds since the epoch.
fn eta_ms(frame: &serde_json::Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(frame["eta"]["estimatedDeliveryAt"].as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

#[tokio::test]
async fn each_order_of_an_accepted_bundle_has_an_eta_through_the_drop_offs_before_it() {
    let app = TestApp::spawn_with(true, &[FAST_ROUNDS]).await;
    let customer = app.token("customer1").await;
    let staff = app.token("restaurant1").await;
    let mut driver = TestDriver::online(&app, "driver1", east_of_restaurant(0.3)).await;
    app.request(
        reqwest::Method::PUT,
        "/api/drivers/me/availability",
        Some(&driver.token),
        Some(json!({ "available": false })),
    )
    .await
    .expect(200);
    // Two doors 1.5 km from the restaurant, one east and one north: alone,
    // either is as far as the other; in one bundle the second is 2.1 km
    // further on.
    let mut door_of = std::collections::HashMap::new();
    for door in [from_restaurant(0.0, 1.5), from_restaurant(1.5, 0.0)] {
        let mut body = order_body(RESTAURANT_1, 1, 2);
        body["deliveryAddress"]["lat"] = json!(door.0);
        body["deliveryAddress"]["lon"] = json!(door.1);
        let placed = app
            .post("/api/orders", Some(&customer), body)
            .await
            .expect(201);
        let id = placed["order"]["id"].as_i64().unwrap();
        app.act(&staff, id, "confirm").await.expect(200);
        door_of.insert(id, door);
    }
    // A confirmation reaches the dispatcher after its 200: both orders must
    // wait on its board before the driver is free, or a round may offer
    // the first alone (seen on Postgres under load).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.metric("dispatch_dispatchable_orders").await < 2.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the two confirmed orders never both waited for a driver"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.request(
        reqwest::Method::PUT,
        "/api/drivers/me/availability",
        Some(&driver.token),
        Some(json!({ "available": true })),
    )
    .await
    .expect(200);

    let offer = driver.answer_offer(true, 10).await;
    let sequence: Vec<i64> = offer["orderIds"]
        .as_array()
        .expect("orderIds")
        .iter()
        .map(|id| id.as_i64().unwrap())
        .collect();
    assert_eq!(sequence.len(), 2, "one bundle: {offer}");
    let (first, second) = (sequence[0], sequence[1]);
    assert_eq!(
        driver.ws.next_of("offer_result", 5).await["result"],
        "assigned"
    );
    let mut watch_first = WsClient::connect(&app, &customer).await;
    let mut watch_second = WsClient::connect(&app, &customer).await;
    for (ws, id) in [(&mut watch_first, first), (&mut watch_second, second)] {
        ws.send(json!({ "type": "subscribe", "orderId": id })).await;
        ws.next_of("snapshot", 5).await;
    }
    for id in [first, second] {
        for action in ["start_preparing", "mark_ready"] {
            app.act(&staff, id, action).await.expect(200);
        }
    }

    // At the restaurant with the food ready: the second order's delivery
    // comes after the first's and the drive between the two doors. The
    // first's ETA is the drive to its door, which gives the driver's
    // seconds per kilometre (whatever its vehicle).
    driver.move_to(RESTAURANT_1_AT).await;
    let to_first = watch_first.next_of("driver_location", 5).await;
    let to_second = watch_second.next_of("driver_location", 5).await;
    let secs_per_km = to_first["eta"]["secondsRemaining"].as_f64().unwrap()
        / km_between(RESTAURANT_1_AT, door_of[&first]);
    let between = secs_per_km * km_between(door_of[&first], door_of[&second]);
    let gap_secs = (eta_ms(&to_second) - eta_ms(&to_first)) as f64 / 1000.0;
    assert!(
        (gap_secs - between).abs() < 5.0,
        "the second ETA is {gap_secs} s after the first, the doors {between} s apart"
    );

    // Both picked up, the first delivered: from back at the restaurant
    // the second goes straight to its own door.
    for id in [first, second] {
        app.act(&driver.token, id, "pick_up").await.expect(200);
    }
    driver.move_to(door_of[&first]).await;
    watch_second.next_of("driver_location", 5).await;
    app.act(&driver.token, first, "deliver").await.expect(200);
    // The driver actor hears of the delivery from the listener.
    tokio::time::sleep(Duration::from_millis(300)).await;
    driver.move_to(RESTAURANT_1_AT).await;
    let straight = watch_second.next_of("driver_location", 5).await;
    let left = straight["eta"]["secondsRemaining"].as_f64().unwrap();
    let direct = secs_per_km * km_between(RESTAURANT_1_AT, door_of[&second]);
    assert!(
        (left - direct).abs() < 5.0,
        "{left} s left, {direct} s straight to the door: {straight}"
    );
}

/// The batching window on (the tests' servers run without it).
const BATCH_WINDOW: (&str, &str) = ("DISPATCH__DISPATCH__BATCH_WINDOW_SECS", "120");

#[tokio::test]
async fn a_lone_order_is_held_by_the_batching_window_and_bundled_with_the_next_of_its_restaurant() {
    let app = TestApp::spawn_with(true, &[FAST_ROUNDS, BATCH_WINDOW]).await;
    let mut driver = TestDriver::online(&app, "driver1", east_of_restaurant(0.3)).await;
    let customer = app.token("customer1").await;
    // Restaurant 1's food takes 15 minutes; the driver is a minute away.
    let first = confirmed_order(&app, &customer).await;
    no_offer_within(&mut driver, Duration::from_secs(2)).await;
    assert_eq!(app.metric("dispatch_batch_held_orders").await, 1.0);
    // A second order of the restaurant, within the window: one offer.
    let second = confirmed_order(&app, &customer).await;
    let offer = driver.answer_offer(true, 10).await;
    assert_eq!(offer["orderIds"], json!([first, second]), "{offer}");
    let result = driver.ws.next_of("offer_result", 5).await;
    assert_eq!(result["result"], "assigned");
    assert_eq!(result["orderIds"], json!([first, second]));
    assert_eq!(app.metric("dispatch_bundled_offers_total").await, 1.0);
    assert_eq!(
        app.metric("dispatch_offers_total{result=\"sent\"}").await,
        1.0
    );
}

#[tokio::test]
async fn a_held_order_is_offered_as_soon_as_its_food_is_ready() {
    let app = TestApp::spawn_with(true, &[FAST_ROUNDS, BATCH_WINDOW]).await;
    let mut driver = TestDriver::online(&app, "driver1", east_of_restaurant(0.3)).await;
    let customer = app.token("customer1").await;
    let id = confirmed_order(&app, &customer).await;
    no_offer_within(&mut driver, Duration::from_secs(2)).await;
    // The kitchen says the food is ready: no reason to hold it any more
    // (the window would otherwise hold it for two minutes).
    let staff = app.token("restaurant1").await;
    app.act(&staff, id, "start_preparing").await.expect(200);
    app.act(&staff, id, "mark_ready").await.expect(200);
    let offer = driver.answer_offer(true, 5).await;
    assert_eq!(offer["orderIds"], json!([id]), "{offer}");
}
