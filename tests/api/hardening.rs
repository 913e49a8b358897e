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

/// Reads what the server sends on `socket` until it closes; `None` if it
/// is still open after `secs`.
async fn read_until_closed(socket: &mut tokio::net::TcpStream, secs: u64) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&seen).into()),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

fn host_port(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_string()
}

#[tokio::test]
async fn silent_and_half_sent_request_heads_are_cut_off() {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn_with(
        false,
        &[("DISPATCH__SERVER__HEADER_READ_TIMEOUT_SECS", "1")],
    )
    .await;
    let mut silent = tokio::net::TcpStream::connect(host_port(&app))
        .await
        .unwrap();
    let mut half = tokio::net::TcpStream::connect(host_port(&app))
        .await
        .unwrap();
    half.write_all(b"GET /api/restaurants HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    assert!(
        read_until_closed(&mut silent, 5).await.is_some(),
        "silent socket kept open"
    );
    assert!(
        read_until_closed(&mut half, 5).await.is_some(),
        "half a header kept open"
    );
    // A client that keeps its socket idle after a response is closed too.
    let mut idle = tokio::net::TcpStream::connect(host_port(&app))
        .await
        .unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answered = read_until_closed(&mut idle, 5)
        .await
        .expect("idle keep-alive kept open");
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
}

#[tokio::test]
async fn a_body_that_never_finishes_is_answered_408() {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn_with(false, &[("DISPATCH__SERVER__REQUEST_TIMEOUT_SECS", "1")]).await;
    let mut socket = tokio::net::TcpStream::connect(host_port(&app))
        .await
        .unwrap();
    socket
        .write_all(b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\":")
        .await
        .unwrap();
    let answer = read_until_closed(&mut socket, 6)
        .await
        .expect("still waiting for the body");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("REQUEST_TIMEOUT"), "{answer}");
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once() {
    let app = TestApp::spawn_with(false, &[("DISPATCH__SERVER__MAX_CONNECTIONS", "4")]).await;
    let mut sockets = Vec::new();
    for _ in 0..8 {
        sockets.push(
            tokio::net::TcpStream::connect(host_port(&app))
                .await
                .unwrap(),
        );
    }
    let mut refused = 0;
    for socket in &mut sockets {
        if read_until_closed(socket, 1).await.is_some() {
            refused += 1;
        }
    }
    // Four fit (one of them may be the test client's pooled connection).
    assert!(refused >= 4, "only {refused} of 8 refused");
    drop(sockets);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(app.metric("dispatch_http_connections_refused_total").await >= 4.0);
}

#[tokio::test]
async fn pages_and_api_carry_security_headers_and_huge_heads_are_refused() {
    let app = TestApp::spawn_with(false, &[]).await;
    let page = app
        .client
        .get(format!("{}/", app.address))
        .send()
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let api = app.get("/api/restaurants", None).await;
    assert_eq!(api.headers["x-content-type-options"], "nosniff");
    assert_eq!(api.headers["referrer-policy"], "no-referrer");
    let error = app.get("/api/nowhere", None).await;
    assert_eq!(error.headers["x-content-type-options"], "nosniff");

    let huge = "a".repeat(200 * 1024);
    let r = app
        .client
        .get(format!("{}/api/restaurants", app.address))
        .header("X-Padding", huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
}

#[tokio::test]
async fn a_customer_cannot_place_orders_without_limit_but_replays_are_free() {
    let app =
        TestApp::spawn_with(true, &[("DISPATCH__ORDERS__PER_CUSTOMER_PER_MINUTE", "3")]).await;
    let customer = app.token("customer5").await;
    let keyed = |key: &str| {
        app.client
            .post(format!("{}/api/orders", app.address))
            .bearer_auth(&customer)
            .header("Idempotency-Key", key)
            .json(&order_body(RESTAURANT_1, 1, 1))
    };
    TestApp::read(keyed("first").send().await.unwrap())
        .await
        .expect(201);
    for _ in 0..2 {
        app.place_order(&customer).await;
    }
    app.post(
        "/api/orders",
        Some(&customer),
        order_body(RESTAURANT_1, 1, 1),
    )
    .await
    .expect_error(429, "RATE_LIMITED");
    // A retry of an order already placed is answered from its record.
    let replay = TestApp::read(keyed("first").send().await.unwrap()).await;
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    // Another customer is not affected.
    let other = app.token("customer6").await;
    app.place_order(&other).await;
    assert_eq!(
        app.metric("dispatch_rate_limited_total{limit=\"orders\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn orders_left_placed_expire_and_confirmed_ones_do_not() {
    let app = TestApp::spawn_with(true, &[("DISPATCH__ORDERS__PLACED_EXPIRY_SECS", "2")]).await;
    let customer = app.token("customer7").await;
    let staff = app.token("restaurant1").await;
    let left = app.place_order(&customer).await["id"].as_i64().unwrap();
    let confirmed = app.place_order(&customer).await["id"].as_i64().unwrap();
    app.act(&staff, confirmed, "confirm").await.expect(200);
    let mut status = String::new();
    for _ in 0..100 {
        let order = app
            .get(&format!("/api/orders/{left}"), Some(&customer))
            .await
            .expect(200);
        status = order["order"]["status"].as_str().unwrap().to_string();
        if status == "CANCELLED" {
            assert_eq!(
                order["order"]["cancelReason"],
                "expired: not confirmed in time"
            );
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, "CANCELLED", "a PLACED order outlived its expiry");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let kept = app
        .get(&format!("/api/orders/{confirmed}"), Some(&customer))
        .await
        .expect(200);
    assert_eq!(kept["order"]["status"], "CONFIRMED");
    assert_eq!(app.metric("dispatch_orders_expired_total").await, 1.0);
}

#[tokio::test]
async fn a_socket_is_closed_with_4001_when_its_token_expires() {
    let app = TestApp::spawn().await;
    let now = jsonwebtoken::get_current_timestamp();
    let admin = app.token("admin").await;
    let admin_id = app.get("/api/me", Some(&admin)).await.expect(200)["user"]["id"].clone();
    let short =
        forge(json!({ "sub": admin_id.to_string(), "role": "admin", "iat": now, "exp": now + 2 }));
    let mut ws = WsClient::connect(&app, &short).await;
    ws.send(json!({ "type": "ping", "id": 1 })).await;
    assert_eq!(ws.next_of("pong", 2).await["id"], 1);
    assert_eq!(ws.ended(8).await, Ended::Closed(4001));
}

#[tokio::test]
async fn one_user_may_open_only_so_many_sockets() {
    let app = TestApp::spawn_with(true, &[("DISPATCH__WS__MAX_SOCKETS_PER_USER", "3")]).await;
    let customer = app.token("customer8").await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(WsClient::connect(&app, &customer).await);
    }
    let url = format!(
        "{}/ws?token={customer}",
        app.address.replacen("http", "ws", 1)
    );
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429)
        }
        other => panic!("a fourth socket was not refused: {:?}", other.map(|_| ())),
    }
    // Another user is not affected, and a closed socket frees its seat.
    let other = app.token("customer9").await;
    WsClient::connect(&app, &other).await;
    let mut first = open.remove(0);
    first.socket.close(None).await.unwrap();
    drop(first);
    let mut reopened = None;
    for _ in 0..50 {
        if let Ok((socket, _)) = tokio_tungstenite::connect_async(&url).await {
            reopened = Some(socket);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        reopened.is_some(),
        "the seat of a closed socket was not freed"
    );
}

#[tokio::test]
async fn a_self_registered_driver_gets_no_orders_until_an_admin_approves_it() {
    let app = TestApp::spawn().await;
    let registered = app
        .post(
            "/api/auth/register",
            None,
            json!({ "email": "new.driver@example.com", "password": "password123", "name": "Newt", "role": "driver" }),
        )
        .await
        .expect(201);
    let token = registered["token"].as_str().unwrap().to_string();
    let id = registered["user"]["id"].as_i64().unwrap();
    let me = app.get("/api/me", Some(&token)).await.expect(200);
    assert_eq!(me["approved"], false);

    // Pending: no position taken, no socket, never in the index.
    app.post(
        "/api/drivers/location",
        Some(&token),
        json!({ "lat": RESTAURANT_1_AT.0, "lon": RESTAURANT_1_AT.1 }),
    )
    .await
    .expect_error(403, "FORBIDDEN");
    let mut ws = WsClient::connect(&app, &token).await;
    assert_eq!(ws.ended(5).await, Ended::Closed(4003));
    let customer = app.token("customer10").await;
    let order = confirmed_order(&app, &customer).await;

    let admin = app.token("admin").await;
    let pending = app
        .get("/api/drivers/pending", Some(&admin))
        .await
        .expect(200);
    assert!(
        pending["drivers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == id)
    );
    app.post(
        &format!("/api/drivers/{id}/approve"),
        Some(&customer),
        json!({}),
    )
    .await
    .expect_error(403, "FORBIDDEN");
    app.post("/api/drivers/999999/approve", Some(&admin), json!({}))
        .await
        .expect_error(404, "NOT_FOUND");
    app.post(
        &format!("/api/drivers/{id}/approve"),
        Some(&admin),
        json!({}),
    )
    .await
    .expect(200);
    let pending = app
        .get("/api/drivers/pending", Some(&admin))
        .await
        .expect(200);
    assert!(
        !pending["drivers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == id)
    );
    assert_eq!(
        app.get("/api/me", Some(&token)).await.expect(200)["approved"],
        true
    );

    // Approved: the same token goes online and is offered the order.
    let mut ws = WsClient::connect(&app, &token).await;
    ws.send(json!({ "type": "location", "lat": RESTAURANT_1_AT.0, "lon": RESTAURANT_1_AT.1 }))
        .await;
    let offer = ws.next_of("offer", 15).await;
    assert_eq!(offer["orderId"], order);
}

#[tokio::test]
async fn a_pick_up_far_from_the_restaurant_is_flagged_and_a_delivery_at_the_door_is_not() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer11").await;
    let staff = app.token("restaurant1").await;
    let mut driver = TestDriver::online(&app, "driver7", RESTAURANT_1_AT).await;
    let order = confirmed_order(&app, &customer).await;
    driver.answer_offer(true, 15).await;
    driver.ws.next_of("offer_result", 5).await;
    app.act(&staff, order, "start_preparing").await.expect(200);
    app.act(&staff, order, "mark_ready").await.expect(200);

    let far = (30.50, -97.90);
    driver.move_to(far).await;
    driver.wait_until_indexed(&app, far).await;
    app.act(&driver.token, order, "pick_up").await.expect(200);
    let door = (NEAR_LAT, NEAR_LON);
    driver.move_to(door).await;
    driver.wait_until_indexed(&app, door).await;
    app.act(&driver.token, order, "deliver").await.expect(200);

    assert_eq!(
        app.metric("dispatch_driver_events_flagged_total{action=\"pick_up\",reason=\"far\"}")
            .await,
        1.0
    );
    assert_eq!(
        app.metric("dispatch_driver_events_flagged_total{action=\"deliver\"")
            .await,
        0.0
    );
}

#[tokio::test]
async fn a_menu_cannot_grow_past_its_cap() {
    // The demo menu's size, from a first server; the second caps it two higher.
    let items = TestApp::spawn()
        .await
        .get("/api/restaurants/2", None)
        .await
        .expect(200)["menu"]
        .as_array()
        .unwrap()
        .len();
    let cap = (items + 2).to_string();
    let app = TestApp::spawn_with(true, &[("DISPATCH__RESTAURANTS__MAX_MENU_ITEMS", &cap)]).await;
    let staff_again = app.token("restaurant2").await;
    let item =
        json!({ "name": "Extra", "description": "", "priceCents": 100, "category": "Sides" });
    for _ in 0..2 {
        app.post("/api/restaurants/2/menu", Some(&staff_again), item.clone())
            .await
            .expect(201);
    }
    app.post("/api/restaurants/2/menu", Some(&staff_again), item)
        .await
        .expect_error(409, "LIMIT_REACHED");
}

#[tokio::test]
async fn subscribing_to_made_up_orders_is_rate_limited() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer12").await;
    let mut ws = WsClient::connect(&app, &customer).await;
    for id in 0..20 {
        ws.send(json!({ "type": "subscribe", "orderId": 900_000 + id }))
            .await;
    }
    let mut not_found = 0;
    let mut limited = 0;
    for _ in 0..20 {
        let reply = ws.next_of("error", 5).await;
        match reply["code"].as_str().unwrap() {
            "NOT_FOUND" => not_found += 1,
            "RATE_LIMITED" => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(not_found <= 10, "{not_found} store reads in a burst");
    assert!(limited >= 10, "only {limited} refused");
    // Still usable: a ping is answered.
    ws.send(json!({ "type": "ping", "id": 7 })).await;
    assert_eq!(ws.next_of("pong", 5).await["id"], 7);
}

#[tokio::test]
async fn nul_characters_are_refused_on_every_backend() {
    let app = TestApp::spawn().await;
    let r = app
        .post(
            "/api/auth/register",
            None,
            json!({ "email": "nul@example.com", "password": "password123", "name": "a\u{0}b", "role": "customer" }),
        )
        .await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(r.fields(), ["name"]);
    let customer = app.token("customer13").await;
    let mut body = order_body(RESTAURANT_1, 1, 1);
    body["deliveryAddress"]["street"] = json!("1100 Congress\u{0} Ave");
    let r = app.post("/api/orders", Some(&customer), body).await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(r.fields(), ["deliveryAddress.street"]);
}
