//! Store outages: writes answer 503 STORE_UNAVAILABLE and change nothing,
//! readiness reports it, and the engine recovers when the store returns.
//! On Postgres the link to the database is cut; on SQLite another process
//! holds the write lock.

use crate::helpers::*;

use std::time::Duration;

const FAST_TIMEOUT: [(&str, &str); 1] = [("DISPATCH__DATABASE__ACQUIRE_TIMEOUT_MS", "700")];

async fn wait_for_status(app: &TestApp, path: &str, status: u16) {
    for _ in 0..100 {
        if app.get(path, None).await.status == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never answered {status}");
}

#[tokio::test]
async fn writes_answer_503_during_a_store_outage_and_the_engine_recovers() {
    if std::env::var("DISPATCHD_TEST_POSTGRES").is_ok_and(|v| !v.is_empty()) {
        postgres_outage().await
    } else {
        sqlite_outage().await
    }
}

/// A transition and an order creation both answer 503 STORE_UNAVAILABLE.
async fn writes_are_refused(app: &TestApp, customer: &str, staff: &str, id: i64) {
    app.act(staff, id, "confirm")
        .await
        .expect_error(503, "STORE_UNAVAILABLE");
    app.post(
        "/api/orders",
        Some(customer),
        order_body(RESTAURANT_1, 1, 1),
    )
    .await
    .expect_error(503, "STORE_UNAVAILABLE");
}

async fn postgres_outage() {
    let link = StoreLink::open("127.0.0.1:5432").await;
    let app = TestApp::spawn_through(&link, &FAST_TIMEOUT).await;
    let customer = app.token("customer1").await;
    let staff = app.token("restaurant1").await;
    let id = app.place_order(&customer).await["id"].as_i64().unwrap();

    link.cut();
    writes_are_refused(&app, &customer, &staff, id).await;
    app.get("/readyz", None)
        .await
        .expect_error(503, "STORE_UNAVAILABLE");
    app.get("/healthz", None).await.expect(200);

    link.restore();
    wait_for_status(&app, "/readyz", 200).await;
    // The refused confirm changed nothing: the order is still PLACED at v1,
    // and the same command now goes through.
    let order = app
        .get(&format!("/api/orders/{id}"), Some(&customer))
        .await
        .expect(200);
    assert_eq!(order["order"]["status"], "PLACED");
    assert_eq!(order["order"]["version"], 1);
    let confirmed = app.act(&staff, id, "confirm").await.expect(200);
    assert_eq!(confirmed["order"]["version"], 2);
    assert_eq!(
        app.get("/api/orders", Some(&customer)).await.expect(200)["orders"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

async fn sqlite_outage() {
    use sqlx::Connection;
    let app = TestApp::spawn_with(true, &FAST_TIMEOUT).await;
    let customer = app.token("customer1").await;
    let staff = app.token("restaurant1").await;
    let id = app.place_order(&customer).await["id"].as_i64().unwrap();

    // Another process takes SQLite's single write lock and keeps it.
    let mut holder = sqlx::SqliteConnection::connect(&app.db.url())
        .await
        .unwrap();
    sqlx::Executor::execute(&mut holder, "BEGIN IMMEDIATE")
        .await
        .unwrap();
    sqlx::Executor::execute(
        &mut holder,
        "UPDATE restaurants SET rating = rating WHERE id = 1",
    )
    .await
    .unwrap();
    writes_are_refused(&app, &customer, &staff, id).await;
    sqlx::Executor::execute(&mut holder, "ROLLBACK")
        .await
        .unwrap();
    drop(holder);

    let order = app
        .get(&format!("/api/orders/{id}"), Some(&customer))
        .await
        .expect(200);
    assert_eq!(order["order"]["status"], "PLACED");
    assert_eq!(order["order"]["version"], 1);
    app.act(&staff, id, "confirm").await.expect(200);
}

/// Positions are not store writes: while the store is out (the link cut on
/// Postgres, the write lock taken on SQLite), a driver's positions still
/// reach the watcher of its order, on time, while its `pick_up` is refused
/// with 503; afterwards the same `pick_up` goes through, without a restart.
#[tokio::test]
async fn positions_reach_watchers_during_a_store_outage_while_writes_are_refused() {
    let postgres = std::env::var("DISPATCHD_TEST_POSTGRES").is_ok_and(|v| !v.is_empty());
    let env = [
        FAST_TIMEOUT[0],
        ("DISPATCH__DISPATCH__ROUND_INTERVAL_MS", "200"),
    ];
    let link = match postgres {
        true => Some(StoreLink::open("127.0.0.1:5432").await),
        false => None,
    };
    let app = match &link {
        Some(link) => TestApp::spawn_through(link, &env).await,
        None => TestApp::spawn_with(true, &env).await,
    };
    let customer = app.token("customer1").await;
    let mut driver = TestDriver::online(&app, "driver1", RESTAURANT_1_AT).await;
    let id = confirmed_order(&app, &customer).await;
    assert_eq!(driver.answer_offer(true, 10).await["orderId"], id);
    assert_eq!(
        driver.ws.next_of("offer_result", 5).await["result"],
        "assigned"
    );
    let staff = app.token("restaurant1").await;
    for step in ["start_preparing", "mark_ready"] {
        app.act(&staff, id, step).await.expect(200);
    }
    let mut watcher = WsClient::connect(&app, &customer).await;
    watcher
        .send(serde_json::json!({ "type": "subscribe", "orderId": id }))
        .await;
    watcher.next_of("snapshot", 5).await;

    let lock = match &link {
        Some(link) => {
            link.cut();
            None
        }
        None => Some(StoreWriteLock::take(&app).await),
    };
    app.act(&driver.token, id, "pick_up")
        .await
        .expect_error(503, "STORE_UNAVAILABLE");
    let mut slowest = Duration::ZERO;
    for i in 1..=20 {
        let lat = RESTAURANT_1_AT.0 + i as f64 * 0.00002;
        let sent = std::time::Instant::now();
        driver.move_to((lat, RESTAURANT_1_AT.1)).await;
        let got = watcher.next_of("driver_location", 2).await;
        slowest = slowest.max(sent.elapsed());
        let got_lat = got["location"]["lat"].as_f64().unwrap();
        assert!((got_lat - lat).abs() < 1e-6, "position {i}: {got}");
    }
    assert!(
        slowest < Duration::from_millis(500),
        "slowest position during the outage took {slowest:?}"
    );

    match (&link, lock) {
        (Some(link), _) => link.restore(),
        (None, Some(lock)) => lock.release().await,
        (None, None) => unreachable!("SQLite holds the lock"),
    }
    wait_for_status(&app, "/readyz", 200).await;
    let picked = app.act(&driver.token, id, "pick_up").await.expect(200);
    assert_eq!(picked["order"]["status"], "PICKED_UP");
}

/// A write stuck behind a lock is aborted by Postgres's statement_timeout,
/// answered 503 STORE_UNAVAILABLE (a canceled statement is the store being
/// unable, not a bug: it was a 500), and does not commit when the lock goes.
/// SQLite's writes behind its lock are the outage test's.
#[tokio::test]
async fn a_write_stuck_behind_a_lock_is_aborted_answered_503_and_never_commits() {
    if std::env::var("DISPATCHD_TEST_POSTGRES").map_or(true, |v| v.is_empty()) {
        println!("skipped: Postgres only");
        return;
    }
    let app =
        TestApp::spawn_with(true, &[("DISPATCH__DATABASE__STATEMENT_TIMEOUT_MS", "500")]).await;
    let customer = app.token("customer1").await;
    let staff = app.token("restaurant1").await;
    let id = app.place_order(&customer).await["id"].as_i64().unwrap();
    let lock = StoreWriteLock::take(&app).await;
    let started = std::time::Instant::now();
    let (refused, ()) = tokio::join!(
        async {
            let refused = app.act(&staff, id, "confirm").await;
            (refused, started.elapsed())
        },
        async {
            // Without a statement timeout the write waits for this, and
            // commits.
            tokio::time::sleep(Duration::from_secs(3)).await;
            lock.release().await;
        }
    );
    let (refused, took) = refused;
    refused.expect_error(503, "STORE_UNAVAILABLE");
    assert!(
        took < Duration::from_millis(2500),
        "answered after {took:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let order = app
        .get(&format!("/api/orders/{id}"), Some(&customer))
        .await
        .expect(200);
    assert_eq!(order["order"]["version"], 1, "{order}");
    assert_eq!(order["order"]["status"], "PLACED");
    app.act(&staff, id, "confirm").await.expect(200);
}

/// An accepted offer whose assignment cannot be written is void: the
/// driver's socket is told so (`STORE_UNAVAILABLE`), and once the store is
/// back the order is offered to it again and assigned.
#[tokio::test]
async fn an_accept_the_store_cannot_record_is_told_on_the_drivers_socket_and_offered_again() {
    let postgres = std::env::var("DISPATCHD_TEST_POSTGRES").is_ok_and(|v| !v.is_empty());
    let env = [
        FAST_TIMEOUT[0],
        ("DISPATCH__DISPATCH__ROUND_INTERVAL_MS", "200"),
    ];
    let link = match postgres {
        true => Some(StoreLink::open("127.0.0.1:5432").await),
        false => None,
    };
    let app = match &link {
        Some(link) => TestApp::spawn_through(link, &env).await,
        None => TestApp::spawn_with(true, &env).await,
    };
    let customer = app.token("customer1").await;
    let mut driver = TestDriver::online(&app, "driver1", RESTAURANT_1_AT).await;
    let id = confirmed_order(&app, &customer).await;
    let offer = driver.ws.next_of("offer", 10).await;
    assert_eq!(offer["orderId"], id, "{offer}");

    let lock = match &link {
        Some(link) => {
            link.cut();
            None
        }
        None => Some(StoreWriteLock::take(&app).await),
    };
    driver
        .ws
        .send(serde_json::json!({ "type": "offer_response", "offerId": offer["offerId"], "accept": true }))
        .await;
    let told = driver.ws.next_of("error", 10).await;
    assert_eq!(told["code"], "STORE_UNAVAILABLE", "{told}");
    assert_eq!(
        told["message"],
        format!(
            "offer {}: the assignment could not be written; the offer is void",
            offer["offerId"]
        ),
        "{told}"
    );

    match (&link, lock) {
        (Some(link), _) => link.restore(),
        (None, Some(lock)) => lock.release().await,
        (None, None) => unreachable!("SQLite holds the lock"),
    }
    wait_for_status(&app, "/readyz", 200).await;
    let again = driver.answer_offer(true, 10).await;
    assert_eq!(again["orderId"], id, "{again}");
    assert_eq!(
        driver.ws.next_of("offer_result", 5).await["result"],
        "assigned"
    );
}
