use crate::helpers::*;
use serde_json::{Value, json};

async fn order_at(app: &TestApp, customer: &str, steps: &[&str]) -> i64 {
    let staff = app.token("restaurant1").await;
    let id = app.place_order(customer).await["id"].as_i64().unwrap();
    for step in steps {
        app.act(&staff, id, step).await.expect(200);
    }
    id
}

#[tokio::test]
async fn staff_move_an_order_through_the_kitchen_with_timestamps_and_versions() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    let staff = app.token("restaurant1").await;
    let id = app.place_order(&customer).await["id"].as_i64().unwrap();
    let mut version = 1;
    for (action, status, stamp) in [
        ("confirm", "CONFIRMED", "confirmedAt"),
        ("start_preparing", "PREPARING", "preparingAt"),
        ("mark_ready", "READY_FOR_PICKUP", "readyAt"),
    ] {
        let order = app.act(&staff, id, action).await.expect(200)["order"].clone();
        version += 1;
        assert_eq!(order["status"], status);
        assert_eq!(order["version"], version);
        assert!(order[stamp].is_string(), "{stamp} not set: {order}");
    }
    let seen = app
        .get(&format!("/api/orders/{id}"), Some(&customer))
        .await
        .expect(200);
    assert_eq!(seen["order"]["status"], "READY_FOR_PICKUP");
    assert_eq!(seen["order"]["version"], 4);
}

#[tokio::test]
async fn admin_may_take_every_kitchen_action_and_cancel_late() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    let admin = app.token("admin").await;
    let id = app.place_order(&customer).await["id"].as_i64().unwrap();
    for action in ["confirm", "start_preparing", "mark_ready"] {
        app.act(&admin, id, action).await.expect(200);
    }
    // pick_up needs an assigned driver, even for an admin.
    let r = app.act(&admin, id, "pick_up").await;
    r.expect_error(409, "INVALID_TRANSITION");
    assert!(r.body["error"].as_str().unwrap().contains("driver"));
    let cancelled = app
        .patch(
            &format!("/api/orders/{id}/status"),
            Some(&admin),
            json!({ "action": "cancel", "reason": "kitchen fire" }),
        )
        .await
        .expect(200);
    assert_eq!(cancelled["order"]["status"], "CANCELLED");
    assert_eq!(cancelled["order"]["cancelReason"], "kitchen fire");
    assert!(cancelled["order"]["cancelledAt"].is_string());
}

#[tokio::test]
async fn a_customer_may_cancel_only_before_the_restaurant_confirms() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    let placed = order_at(&app, &customer, &[]).await;
    let order = app.act(&customer, placed, "cancel").await.expect(200);
    assert_eq!(order["order"]["status"], "CANCELLED");

    let confirmed = order_at(&app, &customer, &["confirm"]).await;
    app.act(&customer, confirmed, "cancel")
        .await
        .expect_error(409, "INVALID_TRANSITION");
    for action in [
        "confirm",
        "start_preparing",
        "mark_ready",
        "pick_up",
        "deliver",
    ] {
        app.act(&customer, confirmed, action)
            .await
            .expect_error(403, "FORBIDDEN");
    }
}

#[tokio::test]
async fn staff_may_cancel_until_pickup_and_strangers_see_nothing() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    let staff = app.token("restaurant1").await;
    let ready = order_at(
        &app,
        &customer,
        &["confirm", "start_preparing", "mark_ready"],
    )
    .await;
    for (who, status, code) in [
        ("restaurant2", 404, "NOT_FOUND"),
        ("customer2", 404, "NOT_FOUND"),
        ("driver1", 404, "NOT_FOUND"),
    ] {
        let token = app.token(who).await;
        app.act(&token, ready, "cancel")
            .await
            .expect_error(status, code);
    }
    app.act(&staff, ready, "pick_up")
        .await
        .expect_error(403, "FORBIDDEN");
    app.act(&staff, ready, "deliver")
        .await
        .expect_error(403, "FORBIDDEN");
    app.act(&staff, ready, "confirm")
        .await
        .expect_error(409, "INVALID_TRANSITION");
    app.act(&staff, ready, "cancel").await.expect(200);
    // Terminal: nothing moves it any more, whoever asks.
    app.act(&staff, ready, "cancel")
        .await
        .expect_error(409, "INVALID_TRANSITION");
    let admin = app.token("admin").await;
    app.act(&admin, ready, "confirm")
        .await
        .expect_error(409, "INVALID_TRANSITION");
    app.act(&customer, ready, "cancel")
        .await
        .expect_error(409, "INVALID_TRANSITION");
    app.act(&app.token("customer2").await, ready, "cancel")
        .await
        .expect_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn bad_transition_requests_are_validation_errors() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    let staff = app.token("restaurant1").await;
    let id = order_at(&app, &customer, &[]).await;
    let path = format!("/api/orders/{id}/status");
    let r = app
        .patch(&path, Some(&staff), json!({ "action": "teleport" }))
        .await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(r.fields(), ["action"]);
    let r = app.patch(&path, Some(&staff), json!({})).await;
    assert_eq!(r.fields(), ["action"]);
    let r = app
        .patch(
            &path,
            Some(&staff),
            json!({ "action": "cancel", "expectedVersion": 0, "reason": "r".repeat(501) }),
        )
        .await;
    assert_eq!(r.fields(), ["expectedVersion", "reason"]);
    let r = app.patch(&path, Some(&staff), json!({ "action": 7 })).await;
    assert_eq!(r.fields(), ["action"]);
    app.patch(
        "/api/orders/999999/status",
        Some(&staff),
        json!({ "action": "confirm" }),
    )
    .await
    .expect_error(404, "NOT_FOUND");
    app.patch(&path, None, json!({ "action": "confirm" }))
        .await
        .expect_error(401, "UNAUTHORIZED");
    // Nothing above changed the order.
    let order = app
        .get(&format!("/api/orders/{id}"), Some(&customer))
        .await
        .expect(200);
    assert_eq!(order["order"]["version"], 1);
}

#[tokio::test]
async fn a_stale_expected_version_is_a_conflict_and_a_current_one_succeeds() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    let staff = app.token("restaurant1").await;
    let id = order_at(&app, &customer, &["confirm"]).await;
    let path = format!("/api/orders/{id}/status");
    app.patch(
        &path,
        Some(&staff),
        json!({ "action": "start_preparing", "expectedVersion": 1 }),
    )
    .await
    .expect_error(409, "VERSION_CONFLICT");
    let ok = app
        .patch(
            &path,
            Some(&staff),
            json!({ "action": "start_preparing", "expectedVersion": 2 }),
        )
        .await
        .expect(200);
    assert_eq!(ok["order"]["version"], 3);
}

#[tokio::test]
async fn concurrent_commands_on_one_order_are_serialised_by_its_actor() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    let staff = app.token("restaurant1").await;
    let id = order_at(&app, &customer, &[]).await;
    let attempts = (0..10).map(|_| app.act(&staff, id, "confirm"));
    let results: Vec<_> = futures::future::join_all(attempts).await;
    let ok = results.iter().filter(|r| r.status == 200).count();
    let conflicts = results
        .iter()
        .filter(|r| r.status == 409 && r.code() == "INVALID_TRANSITION")
        .count();
    assert_eq!((ok, conflicts), (1, 9));
    let events = app
        .get(&format!("/api/orders/{id}/events"), Some(&customer))
        .await
        .expect(200);
    let confirmations: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["toStatus"] == "CONFIRMED")
        .collect();
    assert_eq!(confirmations.len(), 1);
}
