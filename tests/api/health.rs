use crate::helpers::*;

#[tokio::test]
async fn health_and_readiness_answer_while_the_store_is_up() {
    let app = TestApp::spawn_with(false, &[]).await;
    let health = app.get("/healthz", None).await.expect(200);
    assert_eq!(health["status"], "ok");
    app.get("/readyz", None).await.expect(200);
}

#[tokio::test]
async fn every_response_carries_a_request_id_echoed_when_given() {
    let app = TestApp::spawn_with(false, &[]).await;
    let generated = app.get("/api/restaurants", None).await;
    let id = generated.headers["x-request-id"].to_str().unwrap();
    assert!(id.len() >= 16, "{id}");
    let echoed = app
        .client
        .get(format!("{}/api/orders/1", app.address))
        .header("X-Request-Id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.status(), 401);
    assert_eq!(echoed.headers()["x-request-id"], "trace-me-123");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let app = TestApp::spawn_with(false, &[]).await;
    app.get("/api/nowhere", None)
        .await
        .expect_error(404, "NOT_FOUND");
    app.request(reqwest::Method::DELETE, "/api/restaurants", None, None)
        .await
        .expect_error(405, "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn metrics_count_requests_orders_and_transitions() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    let staff = app.token("restaurant1").await;
    let id = app.place_order(&customer).await["id"].as_i64().unwrap();
    app.act(&staff, id, "confirm").await.expect(200);
    app.get(&format!("/api/orders/{id}"), Some(&customer))
        .await
        .expect(200);

    assert_eq!(app.metric("dispatch_orders_created_total").await, 1.0);
    assert_eq!(
        app.metric("dispatch_order_transitions_total{status=\"CONFIRMED\"}")
            .await,
        1.0
    );
    assert_eq!(
        app.metric("dispatch_orders_active{status=\"CONFIRMED\"}")
            .await,
        1.0
    );
    assert_eq!(
        app.metric("dispatch_orders_active{status=\"PLACED\"}")
            .await,
        0.0
    );
    let text = app.metrics_text().await;
    assert!(
        text.contains("dispatch_http_requests_total{method=\"GET\",route=\"/api/orders/{id}\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("dispatch_http_request_duration_seconds_bucket{"),
        "no histogram: {text}"
    );
    assert!(text.contains("# HELP dispatch_orders_created_total"));
}

#[tokio::test]
async fn a_plain_get_of_the_socket_endpoint_answers_in_the_error_shape() {
    let app = TestApp::spawn_with(false, &[]).await;
    let r = app.get("/ws", None).await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(r.fields(), ["headers"], "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/json");
    // Half an upgrade (no Sec-WebSocket-Key) is refused the same way.
    let half = app
        .client
        .get(format!("{}/ws", app.address))
        .header("Connection", "upgrade")
        .header("Upgrade", "websocket")
        .send()
        .await
        .unwrap();
    TestApp::read(half)
        .await
        .expect_error(400, "VALIDATION_ERROR");
}

#[tokio::test]
async fn log_lines_written_inside_actors_carry_the_request_id() {
    let log = std::env::temp_dir().join(format!(
        "dispatchd-log-{}.jsonl",
        uuid::Uuid::new_v4().simple()
    ));
    let log_path = log.display().to_string();
    let app = TestApp::spawn_with(
        true,
        &[
            ("DISPATCHD_TEST_STDERR", &log_path),
            ("DISPATCH__LOG__FORMAT", "json"),
            ("DISPATCH__LOG__LEVEL", "info"),
        ],
    )
    .await;
    let customer = app.token("customer1").await;
    let staff = app.token("restaurant1").await;
    let mut driver = TestDriver::online(&app, "driver1", RESTAURANT_1_AT).await;
    let id = app.place_order(&customer).await["id"].as_i64().unwrap();
    let confirm = app
        .client
        .patch(format!("{}/api/orders/{id}/status", app.address))
        .bearer_auth(&staff)
        .header("X-Request-Id", "confirm-trace-42")
        .json(&serde_json::json!({ "action": "confirm" }))
        .send()
        .await
        .unwrap();
    assert_eq!(confirm.status(), 200);

    // An accept over REST goes through the dispatcher to the order actor.
    let offer = driver.ws.next_of("offer", 10).await;
    let accept = app
        .client
        .post(format!(
            "{}/api/offers/{}/accept",
            app.address, offer["offerId"]
        ))
        .bearer_auth(&driver.token)
        .header("X-Request-Id", "accept-trace-7")
        .send()
        .await
        .unwrap();
    assert_eq!(accept.status(), 200);

    // The order actor's lines about the changes, each in its request's span.
    for (event, request_id) in [
        ("STATUS_CHANGED", "confirm-trace-42"),
        ("DRIVER_ASSIGNED", "accept-trace-7"),
    ] {
        let mut found = None;
        for _ in 0..50 {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            found = text
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .find(|line| {
                    line["fields"]["message"] == "Order changed" && line["fields"]["event"] == event
                });
            if found.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let line = found.unwrap_or_else(|| panic!("the order actor logged no {event}"));
        assert_eq!(line["target"], "actors::engine::order::actor", "{line}");
        assert_eq!(line["span"]["request_id"], request_id, "{line}");
    }
    let _ = std::fs::remove_file(&log);
}
