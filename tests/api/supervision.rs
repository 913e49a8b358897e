//! The supervision tree, provoked for real: each core actor is killed
//! through the fault-injection endpoint of a running binary, `/readyz`
//! reports it while it is down, and the engine works again once it is back,
//! with the soft state it had rebuilt. A crash loop stops the process with a
//! non-zero status.

use crate::helpers::*;
use serde_json::{Value, json};
use std::time::Duration;

const FAULTS: (&str, &str) = ("DISPATCH__SUPERVISION__FAULT_INJECTION", "true");
const FAST_ROUNDS: (&str, &str) = ("DISPATCH__DISPATCH__ROUND_INTERVAL_MS", "200");
/// Long enough to see the actor down, short enough for a test.
const SLOW_RESTART: (&str, &str) = ("DISPATCH__SUPERVISION__RESTART_DELAY_MS", "1500");

async fn kill(app: &TestApp, actor: &str) -> Response {
    let admin = app.token("admin").await;
    app.post("/api/admin/faults", Some(&admin), json!({ "actor": actor }))
        .await
}

/// Waits until `/readyz` answers `status`; returns its body.
async fn readiness(app: &TestApp, status: u16) -> Value {
    for _ in 0..200 {
        let r = app.get("/readyz", None).await;
        if r.status.as_u16() == status {
            return r.body;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("/readyz never answered {status}");
}

async fn killed_and_back(app: &TestApp, actor: &str) {
    assert_eq!(kill(app, actor).await.expect(202)["killed"], actor);
    let down = readiness(app, 503).await;
    assert_eq!(down["code"], "ENGINE_UNAVAILABLE", "{down}");
    assert!(
        down["details"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["field"] == format!("actors.{actor}")),
        "{down}"
    );
    readiness(app, 200).await;
    assert_eq!(
        app.metric(&format!(
            "dispatch_actor_restarts_total{{actor=\"{actor}\"}}"
        ))
        .await,
        1.0
    );
}

#[tokio::test]
async fn a_killed_dispatcher_is_started_again_and_reopens_the_waiting_orders() {
    let app = TestApp::spawn_with(true, &[FAULTS, FAST_ROUNDS, SLOW_RESTART]).await;
    let mut driver = TestDriver::online(&app, "driver1", RESTAURANT_1_AT).await;
    assert_eq!(
        kill(&app, "dispatcher").await.expect(202)["killed"],
        "dispatcher"
    );
    let down = readiness(&app, 503).await;
    assert_eq!(down["code"], "ENGINE_UNAVAILABLE");
    assert!(down["error"].is_string());
    assert_eq!(down["details"][0]["field"], "actors.dispatcher", "{down}");
    // Confirmed while nobody dispatches: the new dispatcher must hear of it.
    let customer = app.token("customer1").await;
    let id = confirmed_order(&app, &customer).await;
    readiness(&app, 200).await;
    let offer = driver.answer_offer(true, 10).await;
    assert_eq!(offer["orderId"], id);
    assert_eq!(
        driver.ws.next_of("offer_result", 5).await["result"],
        "assigned"
    );
    assert_eq!(
        app.metric("dispatch_actor_restarts_total{actor=\"dispatcher\"}")
            .await,
        1.0
    );
    assert_eq!(app.metric("dispatch_core_actors_down").await, 0.0);
}

#[tokio::test]
async fn an_answer_on_the_socket_that_the_dispatcher_never_took_is_reported_and_the_order_offered_again()
 {
    let restart = ("DISPATCH__SUPERVISION__RESTART_DELAY_MS", "3000");
    let app = TestApp::spawn_with(true, &[FAULTS, FAST_ROUNDS, restart]).await;
    let mut driver = TestDriver::online(&app, "driver1", RESTAURANT_1_AT).await;
    let customer = app.token("customer1").await;
    let id = confirmed_order(&app, &customer).await;
    let offer = driver.ws.next_of("offer", 10).await;
    assert_eq!(offer["orderId"], id, "{offer}");

    // The dispatcher is down when the driver's accept comes: the socket
    // hears that the answer was not taken, not silence.
    assert_eq!(
        kill(&app, "dispatcher").await.expect(202)["killed"],
        "dispatcher"
    );
    readiness(&app, 503).await;
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
    readiness(&app, 200).await;
    let again = driver.answer_offer(true, 10).await;
    assert_eq!(again["orderId"], id, "{again}");
    assert_ne!(again["offerId"], offer["offerId"], "{again}");
    assert_eq!(
        driver.ws.next_of("offer_result", 5).await["result"],
        "assigned"
    );
}

#[tokio::test]
async fn a_killed_geo_index_is_rebuilt_from_the_drivers_without_a_new_position() {
    let app = TestApp::spawn_with(true, &[FAULTS, FAST_ROUNDS, SLOW_RESTART]).await;
    let mut driver = TestDriver::online(&app, "driver1", RESTAURANT_1_AT).await;
    killed_and_back(&app, "geo").await;
    // The driver sent nothing since: it rejoined the new index by itself.
    driver.wait_until_indexed(&app, RESTAURANT_1_AT).await;
    let customer = app.token("customer1").await;
    let id = confirmed_order(&app, &customer).await;
    assert_eq!(driver.answer_offer(true, 10).await["orderId"], id);
}

#[tokio::test]
async fn a_killed_order_supervisor_brings_every_live_order_back_to_its_watchers() {
    let app = TestApp::spawn_with(true, &[FAULTS, SLOW_RESTART]).await;
    let customer = app.token("customer1").await;
    let staff = app.token("restaurant1").await;
    let id = app.place_order(&customer).await["id"].as_i64().unwrap();
    let mut watcher = WsClient::connect(&app, &customer).await;
    watcher
        .send(json!({ "type": "subscribe", "orderId": id }))
        .await;
    watcher.next_of("snapshot", 5).await;

    killed_and_back(&app, "order_supervisor").await;
    // The new actor adopted the watchers: a fresh snapshot, then updates,
    // without the customer subscribing again.
    let again = watcher.next_of("snapshot", 5).await;
    assert_eq!(again["order"]["status"], "PLACED");
    let confirmed = app.act(&staff, id, "confirm").await.expect(200);
    assert_eq!(confirmed["order"]["version"], 2);
    assert_eq!(watcher.next_status("CONFIRMED", 5).await["version"], 2);
}

#[tokio::test]
async fn a_killed_driver_supervisor_hands_each_carried_order_to_a_new_driver_actor() {
    let app = TestApp::spawn_with(true, &[FAULTS, FAST_ROUNDS, SLOW_RESTART]).await;
    let mut driver = TestDriver::online(&app, "driver1", RESTAURANT_1_AT).await;
    let customer = app.token("customer1").await;
    let id = confirmed_order(&app, &customer).await;
    assert_eq!(driver.answer_offer(true, 10).await["orderId"], id);
    driver.ws.next_of("offer_result", 5).await;
    let mut watcher = WsClient::connect(&app, &customer).await;
    watcher
        .send(json!({ "type": "subscribe", "orderId": id }))
        .await;
    watcher.next_of("snapshot", 5).await;

    killed_and_back(&app, "driver_supervisor").await;
    // The old socket held the dead actor: its next position closes it with
    // 1012, and the app reconnects to the new one.
    driver.move_to((NEAR_LAT, NEAR_LON)).await;
    assert_eq!(driver.ws.ended(5).await, Ended::Closed(1012));
    driver.ws = WsClient::connect(&app, &driver.token).await;
    driver.move_to((NEAR_LAT, NEAR_LON)).await;
    let seen = watcher.next_of("driver_location", 5).await;
    assert_eq!(seen["location"]["driverId"], driver.id);
}

#[tokio::test]
async fn a_core_actor_that_keeps_failing_stops_the_process_with_a_failure_status() {
    let mut app = TestApp::spawn_with(
        true,
        &[
            FAULTS,
            SLOW_RESTART,
            ("DISPATCH__SUPERVISION__MAX_RESTARTS", "1"),
        ],
    )
    .await;
    killed_and_back(&app, "dispatcher").await;
    kill(&app, "dispatcher").await.expect(202);
    let status = app.wait_for_exit(10);
    assert_eq!(status.code(), Some(1), "{status:?}");
}

#[tokio::test]
async fn fault_injection_is_off_by_default_admin_only_and_checks_its_input() {
    let app = TestApp::spawn_with(true, &[FAULTS]).await;
    let customer = app.token("customer1").await;
    app.post(
        "/api/admin/faults",
        Some(&customer),
        json!({ "actor": "geo" }),
    )
    .await
    .expect_error(403, "FORBIDDEN");
    let admin = app.token("admin").await;
    for body in [
        json!({ "actor": "nobody" }),
        json!({}),
        json!({ "actor": 3 }),
    ] {
        let r = app.post("/api/admin/faults", Some(&admin), body).await;
        r.expect_error(400, "VALIDATION_ERROR");
    }
    app.get("/readyz", None).await.expect(200);

    let off = TestApp::spawn().await;
    let admin = off.token("admin").await;
    off.post("/api/admin/faults", Some(&admin), json!({ "actor": "geo" }))
        .await
        .expect_error(404, "NOT_FOUND");
    off.get("/readyz", None).await.expect(200);
}
