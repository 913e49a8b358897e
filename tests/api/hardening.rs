//! The abuse holes of issue 11, each provoked against the real binary: what
//! a hostile client could do before, and what it gets now.

use crate::helpers::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn invented_http_methods_are_counted_as_other() {
    let app = TestApp::spawn_with(false, &[]).await;
    for i in 0..20 {
        let method = Method::from_bytes(format!("BREW{i}").as_bytes()).unwrap();
        let r = app.request(method, "/api/restaurants", None, None).await;
        assert_eq!(r.status.as_u16(), 405, "{}", r.body);
    }
    let text = app.metrics_text().await;
    assert!(
        !text.contains("BREW"),
        "a client-chosen label leaked: {text}"
    );
    assert!(
        text.contains("dispatch_http_requests_total{method=\"other\",route=\"/api/restaurants\",status=\"405\"} 20"),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_need_an_admin_or_the_metrics_token() {
    let app = TestApp::spawn().await;
    let url = format!("{}/metrics", app.address);
    let anonymous = TestApp::read(app.client.get(&url).send().await.unwrap()).await;
    anonymous.expect_error(401, "UNAUTHORIZED");
    let customer = app.token("customer1").await;
    let r = TestApp::read(
        app.client
            .get(&url)
            .bearer_auth(&customer)
            .send()
            .await
            .unwrap(),
    )
    .await;
    r.expect_error(403, "FORBIDDEN");
    let r = TestApp::read(
        app.client
            .get(&url)
            .bearer_auth("not-the-token")
            .send()
            .await
            .unwrap(),
    )
    .await;
    r.expect_error(401, "UNAUTHORIZED");
    let admin = app.token("admin").await;
    let r = app
        .client
        .get(&url)
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .client
        .get(&url)
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("dispatch_http_requests_total")
    );
}

#[tokio::test]
async fn short_secrets_are_refused_outside_demo() {
    for (secret, metrics_token) in [("x", METRICS_TOKEN), (JWT_SECRET, "short")] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_dispatchd"))
            .args(["serve", "--listen", "127.0.0.1:0", "--database-url"])
            .arg(format!(
                "sqlite:{}/dispatchd-tests/{}.db",
                std::env::temp_dir().display(),
                uuid::Uuid::new_v4().simple()
            ))
            .env("DISPATCH__AUTH__JWT_SECRET", secret)
            .env("DISPATCH__METRICS__TOKEN", metrics_token)
            .env_remove("DATABASE_URL")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run dispatchd");
        let output = exited_within(output, 20);
        assert!(!output.status.success(), "started with a weak secret");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("at least 32 bytes"), "{stderr}");
    }
    // With --demo a short secret is allowed (a laptop, not production).
    let app = TestApp::spawn_with(true, &[("DISPATCH__AUTH__JWT_SECRET", "short")]).await;
    app.get("/healthz", None).await.expect(200);
}

/// The process's output once it exits; kills it and fails after `secs`.
fn exited_within(mut child: std::process::Child, secs: u64) -> std::process::Output {
    for _ in 0..secs * 10 {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().expect("output");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("dispatchd still running after {secs} s");
}

fn forge(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn a_token_of_a_user_that_does_not_exist_is_unauthorized() {
    let app = TestApp::spawn().await;
    let now = jsonwebtoken::get_current_timestamp();
    let ghost = forge(json!({ "sub": "987654", "role": "customer", "iat": now, "exp": now + 600 }));
    app.post("/api/orders", Some(&ghost), order_body(RESTAURANT_1, 1, 1))
        .await
        .expect_error(401, "UNAUTHORIZED");
    let ghost_driver =
        forge(json!({ "sub": "987655", "role": "driver", "iat": now, "exp": now + 600 }));
    app.post(
        "/api/drivers/location",
        Some(&ghost_driver),
        json!({ "lat": NEAR_LAT, "lon": NEAR_LON }),
    )
    .await
    .expect_error(401, "UNAUTHORIZED");
}

#[tokio::test]
async fn a_token_not_yet_valid_is_refused() {
    let app = TestApp::spawn().await;
    let now = jsonwebtoken::get_current_timestamp();
    let future = forge(
        json!({ "sub": "1", "role": "admin", "iat": now, "nbf": now + 3600, "exp": now + 7200 }),
    );
    app.get("/api/orders", Some(&future))
        .await
        .expect_error(401, "UNAUTHORIZED");
    let current = forge(
        json!({ "sub": "1", "role": "admin", "iat": now, "nbf": now - 10, "exp": now + 600 }),
    );
    app.get("/api/orders", Some(&current)).await.expect(200);
}
