use crate::helpers::*;

#[tokio::test]
async fn an_acknowledged_transition_survives_a_crash_and_the_order_moves_on() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    let staff = app.token("restaurant1").await;
    let id = app.place_order(&customer).await["id"].as_i64().unwrap();
    app.act(&staff, id, "confirm").await.expect(200);

    let app = app.crash_and_restart().await;
    let order = app
        .get(&format!("/api/orders/{id}"), Some(&customer))
        .await
        .expect(200);
    assert_eq!(order["order"]["status"], "CONFIRMED");
    assert_eq!(order["order"]["version"], 2);
    // The recovered actor takes the next command, and history is intact.
    let next = app.act(&staff, id, "start_preparing").await.expect(200);
    assert_eq!(next["order"]["version"], 3);
    let events = app
        .get(&format!("/api/orders/{id}/events"), Some(&customer))
        .await
        .expect(200);
    assert_eq!(events["events"].as_array().unwrap().len(), 3);
    assert!(app.metric("dispatch_order_actors").await >= 1.0);
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly_and_loses_nothing() {
    let mut app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    let id = app.place_order(&customer).await["id"].as_i64().unwrap();
    let status = app.terminate();
    assert!(status.success(), "exit status {status:?}");
    let app = app.crash_and_restart().await;
    let order = app
        .get(&format!("/api/orders/{id}"), Some(&customer))
        .await
        .expect(200);
    assert_eq!(order["order"]["status"], "PLACED");
}

#[tokio::test]
async fn demo_data_is_loaded_once_and_only_when_asked() {
    let app = TestApp::spawn().await;
    let count = |body: serde_json::Value| body["restaurants"].as_array().unwrap().len();
    assert_eq!(
        count(
            app.get("/api/restaurants?limit=100", None)
                .await
                .expect(200)
        ),
        30
    );
    let app = app.crash_and_restart().await;
    assert_eq!(
        count(
            app.get("/api/restaurants?limit=100", None)
                .await
                .expect(200)
        ),
        30
    );
    app.login("driver50@demo.local", DEMO_PASSWORD)
        .await
        .expect(200);
    app.login("restaurant30@demo.local", DEMO_PASSWORD)
        .await
        .expect(200);
    app.login("customer20@demo.local", DEMO_PASSWORD)
        .await
        .expect(200);

    let empty = TestApp::spawn_with(false, &[]).await;
    assert_eq!(
        count(empty.get("/api/restaurants", None).await.expect(200)),
        0
    );
    empty
        .login("admin@demo.local", DEMO_PASSWORD)
        .await
        .expect_error(401, "INVALID_CREDENTIALS");
}

/// What the store promises of every session it opens: on SQLite every
/// commit is synced before it is acknowledged (`synchronous=FULL`, not
/// NORMAL, which can lose the last commits on power failure); on Postgres
/// statements and idle transactions are bounded and dead peers are probed.
#[tokio::test]
async fn every_store_session_syncs_commits_or_bounds_statements() {
    use dispatchd::store::{StoreOptions, postgres, sqlite};
    use std::time::Duration;
    let db = TestDb::fresh().await;
    let options = StoreOptions {
        url: db.url(),
        max_connections: 2,
        acquire_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_millis(1234),
    };
    match &db {
        TestDb::Sqlite { .. } => {
            let store = sqlite::open(&options).await.unwrap();
            let mode: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&store.pool)
                .await
                .unwrap();
            assert_eq!(mode, 2, "PRAGMA synchronous: 2 is FULL");
            store.pool.close().await;
            if let TestDb::Sqlite { path } = &db {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
        }
        TestDb::Postgres { .. } => {
            let store = postgres::open(&options).await.unwrap();
            for (setting, expected) in [
                ("statement_timeout", "1234ms"),
                ("idle_in_transaction_session_timeout", "1234ms"),
                ("tcp_keepalives_idle", "10"),
                ("tcp_keepalives_interval", "5"),
                ("tcp_keepalives_count", "3"),
            ] {
                let value: String =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {setting}")))
                        .fetch_one(&store.pool)
                        .await
                        .unwrap();
                assert_eq!(value, expected, "{setting}");
            }
            // What the idle-transaction bound is for: a transaction whose
            // client went quiet is rolled back by the server, so its write
            // can never commit later.
            let mut conn = store.pool.acquire().await.unwrap();
            sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
            sqlx::query("CREATE TABLE idle_probe (n int)")
                .execute(&mut *conn)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(2000)).await;
            let commit = sqlx::query("COMMIT").execute(&mut *conn).await;
            assert!(commit.is_err(), "an idle transaction committed: {commit:?}");
            drop(conn);
            let probe: Option<String> =
                sqlx::query_scalar("SELECT to_regclass('idle_probe')::text")
                    .fetch_one(&store.pool)
                    .await
                    .unwrap();
            assert_eq!(probe, None, "the idle transaction's table exists");
        }
    }
}
