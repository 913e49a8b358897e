use crate::helpers::*;

async fn count_orders(app: &TestApp, token: &str) -> usize {
    app.get("/api/orders", Some(token)).await.expect(200)["orders"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_replay_returns_the_first_response_and_makes_no_second_order() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    let first = app.create_with_key(&customer, "key-1", 2).await;
    assert_eq!(first.status, 201);
    assert!(first.headers.get("idempotent-replayed").is_none());
    // The restaurant changes its mind meanwhile: the replay still stands.
    let staff = app.token("restaurant1").await;
    app.act(
        &staff,
        first.body["order"]["id"].as_i64().unwrap(),
        "confirm",
    )
    .await
    .expect(200);
    let again = app.create_with_key(&customer, "key-1", 2).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body, first.body);
    assert_eq!(count_orders(&app, &customer).await, 1);
}

#[tokio::test]
async fn the_same_key_with_a_different_body_is_refused() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    assert_eq!(app.create_with_key(&customer, "key-2", 1).await.status, 201);
    app.create_with_key(&customer, "key-2", 3)
        .await
        .expect_error(422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(count_orders(&app, &customer).await, 1);
}

#[tokio::test]
async fn keys_belong_to_one_customer() {
    let app = TestApp::spawn().await;
    let c1 = app.token("customer1").await;
    let c2 = app.token("customer2").await;
    let a = app.create_with_key(&c1, "shared-key", 1).await.expect(201);
    let b = app.create_with_key(&c2, "shared-key", 1).await.expect(201);
    assert_ne!(a["order"]["id"], b["order"]["id"]);
}

#[tokio::test]
async fn ten_concurrent_duplicates_make_exactly_one_order() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    let attempts = (0..10).map(|_| app.create_with_key(&customer, "burst", 2));
    let results = futures::future::join_all(attempts).await;
    // Each duplicate either replays the first response or, if it came while
    // the first was still running, is told so (and would retry).
    let (answered, in_progress): (Vec<_>, Vec<_>) = results.iter().partition(|r| r.status == 201);
    for r in &in_progress {
        r.expect_error(409, "IDEMPOTENCY_IN_PROGRESS");
    }
    let ids: std::collections::HashSet<_> = answered
        .iter()
        .map(|r| r.body["order"]["id"].clone())
        .collect();
    assert_eq!(ids.len(), 1);
    let fresh = answered
        .iter()
        .filter(|r| !r.headers.contains_key("idempotent-replayed"))
        .count();
    assert_eq!(fresh, 1, "exactly one response is the first");
    assert_eq!(count_orders(&app, &customer).await, 1);
    // Once the first has finished, every retry replays it.
    let retry = app.create_with_key(&customer, "burst", 2).await;
    assert_eq!(retry.status, 201);
    assert_eq!(retry.headers["idempotent-replayed"], "true");
}

#[tokio::test]
async fn a_duplicate_while_the_first_is_still_running_is_told_it_is_in_progress() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    // The first request's write waits behind another writer of the store.
    let lock = StoreWriteLock::take(&app).await;
    let (first, (duplicate, other_body)) =
        tokio::join!(app.create_with_key(&customer, "slow", 2), async {
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
            let duplicate = app.create_with_key(&customer, "slow", 2).await;
            let other_body = app.create_with_key(&customer, "slow", 5).await;
            lock.release().await;
            (duplicate, other_body)
        });
    duplicate.expect_error(409, "IDEMPOTENCY_IN_PROGRESS");
    other_body.expect_error(422, "IDEMPOTENCY_KEY_REUSED");
    let first = first.expect(201);
    let again = app.create_with_key(&customer, "slow", 2).await;
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body, first);
    assert_eq!(count_orders(&app, &customer).await, 1);
    assert_eq!(
        app.metric("dispatch_idempotency_in_progress_total").await,
        2.0
    );
}

#[tokio::test]
async fn a_replay_after_a_restart_returns_the_same_order() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    let first = app
        .create_with_key(&customer, "survives", 1)
        .await
        .expect(201);
    let app = app.crash_and_restart().await;
    let again = app.create_with_key(&customer, "survives", 1).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body, first);
    assert_eq!(count_orders(&app, &customer).await, 1);
}

#[tokio::test]
async fn the_legacy_header_name_works_and_bad_keys_are_refused() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    let send = |header: &'static str, key: String| {
        app.client
            .post(format!("{}/api/orders", app.address))
            .bearer_auth(&customer)
            .header(header, key)
            .json(&order_body(RESTAURANT_1, 1, 1))
            .send()
    };
    let first = TestApp::read(send("X-Idempotency-Key", "legacy".into()).await.unwrap()).await;
    assert_eq!(first.status, 201);
    let second = TestApp::read(send("Idempotency-Key", "legacy".into()).await.unwrap()).await;
    assert_eq!(second.headers["idempotent-replayed"], "true");
    let long = TestApp::read(send("Idempotency-Key", "k".repeat(256)).await.unwrap()).await;
    long.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(long.fields(), ["Idempotency-Key"]);
}
