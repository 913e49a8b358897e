//! The WebSocket protocol itself: authentication, close codes, errors,
//! keepalive, subscriptions and their authorisation.

use crate::helpers::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn an_unauthenticated_socket_is_closed_with_4001() {
    let app = TestApp::spawn_with(false, &[]).await;
    for token in ["", "garbage", "eyJhbGciOiJIUzI1NiJ9.e30.x"] {
        let mut ws = WsClient::connect(&app, token).await;
        assert_eq!(ws.ended(5).await, Ended::Closed(4001), "token {token:?}");
    }
}

#[tokio::test]
async fn a_token_in_the_authorization_header_is_accepted() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let app = TestApp::spawn().await;
    let token = app.token("customer1").await;
    let mut request = format!("{}/ws", app.address.replacen("http", "ws", 1))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut ws = WsClient { socket };
    ws.send(json!({ "type": "ping", "id": 7 })).await;
    assert_eq!(ws.next(5).await, json!({ "type": "pong", "id": 7 }));
}

#[tokio::test]
async fn a_frame_over_the_limit_is_closed_with_1009() {
    let app = TestApp::spawn().await;
    let token = app.token("customer1").await;
    let mut ws = WsClient::connect(&app, &token).await;
    let big = json!({ "type": "ping", "id": "x".repeat(5000) });
    ws.send(big).await;
    assert_eq!(ws.ended(5).await, Ended::Closed(1009));
}

#[tokio::test]
async fn bad_messages_get_errors_and_ten_in_a_row_close_with_1008() {
    let app = TestApp::spawn().await;
    let token = app.token("customer1").await;
    let mut ws = WsClient::connect(&app, &token).await;
    for bad in ["not json", "[]", r#"{"type":"dance"}"#] {
        ws.send_text(bad.into()).await;
        let error = ws.next(5).await;
        assert_eq!(error["type"], "error");
        assert_eq!(error["code"], "BAD_MESSAGE", "{bad}");
    }
    ws.send(json!({ "type": "subscribe", "orderId": "seven", "ref": "r-1" }))
        .await;
    let invalid = ws.next(5).await;
    assert_eq!(invalid["code"], "VALIDATION_ERROR");
    assert_eq!(invalid["ref"], "r-1");
    // A good message resets the count.
    ws.send(json!({ "type": "ping" })).await;
    assert_eq!(ws.next(5).await["type"], "pong");
    for _ in 0..9 {
        ws.send_text("{".into()).await;
        assert_eq!(ws.next(5).await["code"], "BAD_MESSAGE");
    }
    ws.send(json!({ "type": "ping" })).await;
    assert_eq!(
        ws.next(5).await["type"],
        "pong",
        "nine bad messages must not close the socket"
    );
    for _ in 0..10 {
        ws.send_text("{".into()).await;
    }
    assert_eq!(ws.ended(5).await, Ended::Closed(1008));
}

#[tokio::test]
async fn too_many_messages_are_rate_limited_and_the_socket_stays_open() {
    let app = TestApp::spawn_with(true, &[("DISPATCH__WS__MESSAGES_PER_SEC", "5")]).await;
    let token = app.token("customer1").await;
    let mut ws = WsClient::connect(&app, &token).await;
    for i in 0..30 {
        ws.send(json!({ "type": "ping", "id": i })).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    while let Some(m) = ws.next_within(Duration::from_millis(500)).await {
        match m["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") if m["code"] == "RATE_LIMITED" => limited += 1,
            _ => {}
        }
    }
    assert_eq!(pongs + limited, 30);
    assert!(limited >= 15, "only {limited} limited");
    tokio::time::sleep(Duration::from_secs(1)).await;
    ws.send(json!({ "type": "ping", "id": "later" })).await;
    assert_eq!(ws.next(5).await["id"], "later");
}

#[tokio::test]
async fn only_drivers_may_send_locations_and_bad_positions_are_refused() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    let mut ws = WsClient::connect(&app, &customer).await;
    ws.send(json!({ "type": "location", "lat": 30.0, "lon": -97.0 }))
        .await;
    assert_eq!(ws.next(5).await["code"], "FORBIDDEN");
    ws.send(json!({ "type": "set_availability", "available": false }))
        .await;
    assert_eq!(ws.next(5).await["code"], "FORBIDDEN");

    let driver = app.token("driver1").await;
    let mut ws = WsClient::connect(&app, &driver).await;
    ws.send(json!({ "type": "location", "lat": 91.0, "lon": -97.0, "heading": 400 }))
        .await;
    let error = ws.next(5).await;
    assert_eq!(error["code"], "VALIDATION_ERROR");
    assert!(error["message"].as_str().unwrap().contains("lat"));
    assert!(error["message"].as_str().unwrap().contains("heading"));
}

#[tokio::test]
async fn subscriptions_follow_the_rules_for_reading_an_order() {
    let app = TestApp::spawn().await;
    let owner = app.token("customer1").await;
    let id = app.place_order(&owner).await["id"].as_i64().unwrap();

    for stranger in ["customer2", "restaurant2", "driver1"] {
        let token = app.token(stranger).await;
        let mut ws = WsClient::connect(&app, &token).await;
        ws.send(json!({ "type": "subscribe", "orderId": id })).await;
        assert_eq!(ws.next(5).await["code"], "NOT_FOUND", "{stranger}");
    }
    for allowed in ["customer1", "restaurant1", "admin"] {
        let token = app.token(allowed).await;
        let mut ws = WsClient::connect(&app, &token).await;
        ws.send(json!({ "type": "subscribe", "orderId": id })).await;
        let snapshot = ws.next(5).await;
        assert_eq!(snapshot["type"], "snapshot", "{allowed}: {snapshot}");
        assert_eq!(snapshot["orderId"], id);
        assert_eq!(snapshot["order"]["status"], "PLACED");
    }
    let mut ws = WsClient::connect(&app, &owner).await;
    ws.send(json!({ "type": "subscribe", "orderId": 999999 }))
        .await;
    assert_eq!(ws.next(5).await["code"], "NOT_FOUND");
    ws.send(json!({ "type": "subscribe_restaurant", "restaurantId": 1 }))
        .await;
    assert_eq!(ws.next(5).await["code"], "FORBIDDEN");
    let staff2 = app.token("restaurant2").await;
    let mut ws = WsClient::connect(&app, &staff2).await;
    ws.send(json!({ "type": "subscribe_restaurant", "restaurantId": 1 }))
        .await;
    assert_eq!(ws.next(5).await["code"], "FORBIDDEN");
}

#[tokio::test]
async fn watchers_see_every_transition_and_tablets_see_new_orders() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    let staff = app.token("restaurant1").await;
    let mut tablet = WsClient::connect(&app, &staff).await;
    tablet
        .send(json!({ "type": "subscribe_restaurant", "restaurantId": 1 }))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let id = app.place_order(&customer).await["id"].as_i64().unwrap();
    let placed = tablet.next_of("order_update", 5).await;
    assert_eq!(placed["orderId"], id);
    assert_eq!(placed["status"], "PLACED");

    let mut watcher = WsClient::connect(&app, &customer).await;
    watcher
        .send(json!({ "type": "subscribe", "orderId": id }))
        .await;
    assert_eq!(watcher.next(5).await["type"], "snapshot");
    for (action, status, version) in [
        ("confirm", "CONFIRMED", 2),
        ("start_preparing", "PREPARING", 3),
    ] {
        app.act(&staff, id, action).await.expect(200);
        let update = watcher.next_of("order_update", 5).await;
        assert_eq!(update["status"], status);
        assert_eq!(update["version"], version);
        assert_eq!(update["order"]["status"], status);
        assert!(update["eta"]["estimatedDeliveryAt"].is_string());
    }
    // After unsubscribe, nothing more arrives.
    watcher
        .send(json!({ "type": "unsubscribe", "orderId": id }))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.act(&staff, id, "mark_ready").await.expect(200);
    assert!(
        watcher
            .next_within(Duration::from_millis(500))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_resubscribe_after_a_dropped_connection_restores_the_full_state() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    let staff = app.token("restaurant1").await;
    let id = app.place_order(&customer).await["id"].as_i64().unwrap();
    let mut ws = WsClient::connect(&app, &customer).await;
    ws.send(json!({ "type": "subscribe", "orderId": id })).await;
    ws.next_of("snapshot", 5).await;
    drop(ws);
    // Missed while away.
    app.act(&staff, id, "confirm").await.expect(200);
    app.act(&staff, id, "start_preparing").await.expect(200);
    let mut ws = WsClient::connect(&app, &customer).await;
    ws.send(json!({ "type": "subscribe", "orderId": id })).await;
    let snapshot = ws.next_of("snapshot", 5).await;
    assert_eq!(snapshot["order"]["status"], "PREPARING");
    assert_eq!(snapshot["order"]["version"], 3);
    assert!(snapshot["order"]["confirmedAt"].is_string());
    // A terminal order still answers with its final state.
    app.act(&staff, id, "cancel").await.expect(200);
    ws.next_of("order_update", 5).await;
    let mut late = WsClient::connect(&app, &customer).await;
    late.send(json!({ "type": "subscribe", "orderId": id }))
        .await;
    let snapshot = late.next_of("snapshot", 5).await;
    assert_eq!(snapshot["order"]["status"], "CANCELLED");
    assert_eq!(snapshot["eta"], serde_json::Value::Null);
}

#[tokio::test]
async fn sockets_close_with_1001_on_shutdown() {
    let mut app = TestApp::spawn().await;
    let token = app.token("customer1").await;
    let mut ws = WsClient::connect(&app, &token).await;
    ws.send(json!({ "type": "ping" })).await;
    ws.next(5).await;
    let status = app.terminate();
    assert!(status.success());
    assert_eq!(ws.ended(5).await, Ended::Closed(1001));
}

#[tokio::test]
async fn admins_watch_the_whole_city_and_others_may_not() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    let mut ws = WsClient::connect(&app, &customer).await;
    ws.send(json!({ "type": "subscribe_ops" })).await;
    assert_eq!(ws.next(5).await["code"], "FORBIDDEN");

    let driver = TestDriver::online(&app, "driver7", RESTAURANT_1_AT).await;
    let admin = app.token("admin").await;
    let mut ops = WsClient::connect(&app, &admin).await;
    ops.send(json!({ "type": "subscribe_ops" })).await;
    let view = ops.next_of("ops", 5).await;
    let drivers = view["drivers"].as_array().unwrap();
    let seen = drivers
        .iter()
        .find(|d| d["id"] == driver.id)
        .expect("driver on the map");
    assert_eq!(seen["state"], "available");
    assert!((seen["lat"].as_f64().unwrap() - RESTAURANT_1_AT.0).abs() < 1e-6);
    assert!(view["waiting"].is_array());
    assert!(view["positionsPerSec"].is_number());
    // Views keep coming, about once a second.
    ops.next_of("ops", 5).await;
}

#[tokio::test]
async fn a_tablet_hears_every_change_of_its_restaurants_orders_on_one_subscription() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    let staff = app.token("restaurant1").await;
    let mut tablet = WsClient::connect(&app, &staff).await;
    tablet
        .send(json!({ "type": "subscribe_restaurant", "restaurantId": 1 }))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut driver = TestDriver::online(&app, "driver1", RESTAURANT_1_AT).await;

    let id = app.place_order(&customer).await["id"].as_i64().unwrap();
    let placed = tablet.next_status("PLACED", 5).await;
    assert_eq!(placed["orderId"], id);
    assert!(placed["eta"]["estimatedDeliveryAt"].is_string(), "{placed}");
    app.act(&staff, id, "confirm").await.expect(200);
    assert_eq!(tablet.next_status("CONFIRMED", 5).await["version"], 2);

    // The driver accepts: the tablet is told who is coming, unasked.
    driver.answer_offer(true, 10).await;
    let assigned = tablet.next_status("CONFIRMED", 10).await;
    assert_eq!(assigned["version"], 3);
    assert_eq!(assigned["order"]["driverId"], driver.id);

    for (who, action, status) in [
        (&staff, "start_preparing", "PREPARING"),
        (&staff, "mark_ready", "READY_FOR_PICKUP"),
        (&driver.token, "pick_up", "PICKED_UP"),
        (&driver.token, "deliver", "DELIVERED"),
    ] {
        app.act(who, id, action).await.expect(200);
        let update = tablet.next_status(status, 5).await;
        assert_eq!(update["orderId"], id);
    }
    // Another restaurant's tablet hears nothing of it.
    let other = app.token("restaurant2").await;
    let mut elsewhere = WsClient::connect(&app, &other).await;
    elsewhere
        .send(json!({ "type": "subscribe_restaurant", "restaurantId": 2 }))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = app.place_order(&customer).await["id"].as_i64().unwrap();
    app.act(&staff, second, "cancel").await.expect(200);
    assert_eq!(tablet.next_status("CANCELLED", 5).await["orderId"], second);
    assert!(
        elsewhere
            .next_within(Duration::from_millis(500))
            .await
            .is_none()
    );
}
