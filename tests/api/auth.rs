use crate::helpers::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn customer_registers_and_gets_a_token_for_their_account() {
    let app = TestApp::spawn_with(false, &[]).await;
    let body = app
        .post(
            "/api/auth/register",
            None,
            json!({ "email": "Ann.Lee@Example.COM", "password": "password123", "name": "Ann", "role": "customer" }),
        )
        .await
        .expect(201);
    assert_eq!(body["user"]["email"], "ann.lee@example.com");
    assert_eq!(body["user"]["role"], "customer");
    let token = body["token"].as_str().unwrap();
    let me = app.get("/api/me", Some(token)).await.expect(200);
    assert_eq!(me["user"]["id"], body["user"]["id"]);
    assert!(me.get("driver").is_none());
}

#[tokio::test]
async fn driver_registers_with_a_vehicle_and_sees_it_in_me() {
    let app = TestApp::spawn_with(false, &[]).await;
    let body = app
        .post(
            "/api/auth/register",
            None,
            json!({ "email": "d@example.com", "password": "password123", "name": "Dee", "role": "driver", "vehicleType": "bike" }),
        )
        .await
        .expect(201);
    let me = app.get("/api/me", body["token"].as_str()).await.expect(200);
    assert_eq!(me["driver"]["vehicleType"], "bike");
    assert_eq!(me["driver"]["name"], "Dee");
}

#[tokio::test]
async fn registration_reports_every_invalid_field() {
    let app = TestApp::spawn_with(false, &[]).await;
    let r = app
        .post(
            "/api/auth/register",
            None,
            json!({ "email": "nope", "password": "short", "name": "", "role": "admin", "vehicleType": "jet" }),
        )
        .await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(
        r.fields(),
        ["email", "password", "name", "role", "vehicleType"]
    );

    let r = app.post("/api/auth/register", None, json!({})).await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(r.fields(), ["email", "password", "name", "role"]);

    let long = "x".repeat(129);
    let r = app
        .post(
            "/api/auth/register",
            None,
            json!({ "email": "a@b.co", "password": long, "name": "n".repeat(101), "role": "customer" }),
        )
        .await;
    assert_eq!(r.fields(), ["password", "name"]);
}

#[tokio::test]
async fn registering_a_taken_email_in_any_case_is_a_conflict() {
    let app = TestApp::spawn_with(false, &[]).await;
    let body = json!({ "email": "same@example.com", "password": "password123", "name": "A", "role": "customer" });
    app.post("/api/auth/register", None, body).await.expect(201);
    let again = json!({ "email": "SAME@example.com", "password": "password456", "name": "B", "role": "driver" });
    app.post("/api/auth/register", None, again)
        .await
        .expect_error(409, "EMAIL_TAKEN");
}

#[tokio::test]
async fn login_accepts_the_right_password_only() {
    let app = TestApp::spawn().await;
    let ok = app
        .login("CUSTOMER1@demo.local", DEMO_PASSWORD)
        .await
        .expect(200);
    assert_eq!(ok["user"]["email"], "customer1@demo.local");
    app.login("customer1@demo.local", "wrong-pass")
        .await
        .expect_error(401, "INVALID_CREDENTIALS");
    app.login("nobody@demo.local", DEMO_PASSWORD)
        .await
        .expect_error(401, "INVALID_CREDENTIALS");
    let r = app
        .post("/api/auth/login", None, json!({ "email": "" }))
        .await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(r.fields(), ["email", "password"]);
}

/// A client bound to another loopback address: another client, as the
/// server's per-address limits see it.
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(ip))
        .build()
        .unwrap()
}

async fn login_from(
    app: &TestApp,
    client: &reqwest::Client,
    email: &str,
    password: &str,
) -> Response {
    let request = client
        .post(format!("{}/api/auth/login", app.address))
        .json(&json!({ "email": email, "password": password }));
    TestApp::read(request.send().await.unwrap()).await
}

#[tokio::test]
async fn failed_logins_lock_the_guesser_out_but_not_the_user() {
    let app =
        TestApp::spawn_with(true, &[("DISPATCH__AUTH__LOGIN_FAILURES_PER_MINUTE", "3")]).await;
    // Successes never count.
    for _ in 0..5 {
        app.login("customer2@demo.local", DEMO_PASSWORD)
            .await
            .expect(200);
    }
    // The same email in other spellings shares one counter.
    for email in [
        "customer2@demo.local",
        " CUSTOMER2@demo.local ",
        "Customer2@Demo.Local",
    ] {
        app.login(email, "wrong-pass")
            .await
            .expect_error(401, "INVALID_CREDENTIALS");
    }
    // The guesser's client is refused, even with the right password...
    app.login("customer2@demo.local", DEMO_PASSWORD)
        .await
        .expect_error(429, "RATE_LIMITED");
    // ...while the user, on another address, signs in.
    let user = client_from([127, 0, 0, 2]);
    login_from(&app, &user, "customer2@demo.local", DEMO_PASSWORD)
        .await
        .expect(200);
    // Another account is not affected for the guesser either.
    app.login("customer3@demo.local", DEMO_PASSWORD)
        .await
        .expect(200);
    assert_eq!(
        app.metric("dispatch_rate_limited_total{limit=\"login\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn one_client_cannot_try_many_accounts() {
    let app = TestApp::spawn_with(
        true,
        &[("DISPATCH__AUTH__LOGIN_FAILURES_PER_CLIENT_PER_MINUTE", "5")],
    )
    .await;
    let sprayer = client_from([127, 0, 0, 3]);
    for i in 1..=5 {
        login_from(
            &app,
            &sprayer,
            &format!("customer{i}@demo.local"),
            "guess-1",
        )
        .await
        .expect_error(401, "INVALID_CREDENTIALS");
    }
    login_from(&app, &sprayer, "customer6@demo.local", "guess-1")
        .await
        .expect_error(429, "RATE_LIMITED");
    // Other clients go on.
    app.login("customer6@demo.local", "guess-1")
        .await
        .expect_error(401, "INVALID_CREDENTIALS");
    app.login("customer6@demo.local", DEMO_PASSWORD)
        .await
        .expect(200);
}

#[tokio::test]
async fn an_email_guessed_from_many_addresses_hits_its_ceiling() {
    let app = TestApp::spawn_with(
        true,
        &[("DISPATCH__AUTH__LOGIN_FAILURES_PER_EMAIL_PER_MINUTE", "4")],
    )
    .await;
    for i in 0..4u8 {
        let guesser = client_from([127, 0, 1, 10 + i]);
        login_from(&app, &guesser, "customer4@demo.local", "guess-2")
            .await
            .expect_error(401, "INVALID_CREDENTIALS");
    }
    let another = client_from([127, 0, 1, 99]);
    login_from(&app, &another, "customer4@demo.local", "guess-2")
        .await
        .expect_error(429, "RATE_LIMITED");
}

#[tokio::test]
async fn protected_routes_refuse_missing_malformed_foreign_and_expired_tokens() {
    let app = TestApp::spawn_with(false, &[]).await;
    app.get("/api/me", None)
        .await
        .expect_error(401, "UNAUTHORIZED");
    app.get("/api/me", Some("garbage"))
        .await
        .expect_error(401, "UNAUTHORIZED");

    let now = jsonwebtoken::get_current_timestamp();
    let forge = |secret: &str, exp: u64| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({ "sub": "1", "role": "admin", "iat": now, "exp": exp }),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let foreign = forge("someone-elses-secret", now + 600);
    app.get("/api/orders", Some(&foreign))
        .await
        .expect_error(401, "UNAUTHORIZED");
    let expired = forge(JWT_SECRET, now - 600);
    app.get("/api/orders", Some(&expired))
        .await
        .expect_error(401, "UNAUTHORIZED");
    // The same claims, signed with our secret and unexpired, are accepted.
    let valid = forge(JWT_SECRET, now + 600);
    app.get("/api/orders", Some(&valid)).await.expect(200);
}

#[tokio::test]
async fn restaurant_staff_see_their_restaurant_in_me() {
    let app = TestApp::spawn().await;
    let token = app.token("restaurant3").await;
    let me = app.get("/api/me", Some(&token)).await.expect(200);
    assert_eq!(me["restaurantId"], 3);
    assert_eq!(me["user"]["role"], "restaurant");
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_refused_in_the_error_shape() {
    let app = TestApp::spawn_with(false, &[]).await;
    app.post_raw("/api/auth/register", None, "{not json")
        .await
        .expect_error(400, "VALIDATION_ERROR");
    app.post_raw("/api/auth/register", None, "[]")
        .await
        .expect_error(400, "VALIDATION_ERROR");
    let r = app
        .post_raw("/api/auth/register", None, r#"{"email": 5}"#)
        .await;
    r.expect_error(400, "VALIDATION_ERROR");
    // The wrong type and the missing fields, all in one answer.
    assert_eq!(r.fields(), ["email", "password", "name", "role"]);
    assert!(
        r.body["details"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("invalid type")),
        "{}",
        r.body
    );
    let huge = format!(r#"{{"email":"{}"}}"#, "a".repeat(70 * 1024));
    app.post_raw("/api/auth/register", None, huge)
        .await
        .expect_error(413, "PAYLOAD_TOO_LARGE");
}

/// The limiter's memory of failures is trimmed by the server's housekeeping:
/// the keys of a window that ended are forgotten (about a minute plus one
/// upkeep tick), so a spray of made-up emails does not grow the process.
#[tokio::test]
async fn the_login_limits_forget_windows_that_ended() {
    let app = TestApp::spawn().await;
    for email in [
        "nobody1@demo.local",
        "nobody2@demo.local",
        "nobody3@demo.local",
    ] {
        app.login(email, "wrong-pass")
            .await
            .expect_error(401, "INVALID_CREDENTIALS");
    }
    // One client address, three emails, three (email, client) pairs.
    let remembered = wait_for_limiter_keys(&app, 7.0, Duration::from_secs(15)).await;
    assert_eq!(remembered, 7.0, "keys remembered after three failures");
    let left = wait_for_limiter_keys(&app, 0.0, Duration::from_secs(90)).await;
    assert_eq!(left, 0.0, "keys of an ended window were never trimmed");
}

async fn wait_for_limiter_keys(app: &TestApp, want: f64, within: Duration) -> f64 {
    let deadline = std::time::Instant::now() + within;
    loop {
        let text = app.metrics_text().await;
        let keys = text
            .lines()
            .find(|l| l.starts_with("dispatch_login_limiter_keys "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        if keys == Some(want) || std::time::Instant::now() > deadline {
            return keys.unwrap_or(f64::NAN);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
