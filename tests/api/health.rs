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
