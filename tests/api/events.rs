//! Events out: the outbox to JetStream (the machine's NATS, and a
//! test-local nats-server that the test stops and starts) and signed
//! webhooks to a real HTTP receiver started by the test.

use crate::helpers::*;
use dispatchd::events::signing;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: i64,
    signature: String,
    body: String,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("webhook body is JSON")
    }
}

/// How a receiver answers.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    Status(u16),
    /// Never answers (holds the request open).
    Hang,
}

/// A webhook receiver on 127.0.0.1:0: answers each request with the next
/// scripted answer (then `otherwise`) and records what it got.
#[derive(Clone)]
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Answer>>>,
    otherwise: Arc<Mutex<Answer>>,
}

impl Receiver {
    async fn start(script: &[Answer], otherwise: Answer) -> Receiver {
        let receiver = Receiver {
            url: String::new(),
            got: Arc::default(),
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            otherwise: Arc::new(Mutex::new(otherwise)),
        };
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let state = state.clone();
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string()
                    };
                    state.got.lock().unwrap().push(Received {
                        id: header("webhook-id"),
                        timestamp: header("webhook-timestamp").parse().unwrap_or(0),
                        signature: header("webhook-signature"),
                        body,
                    });
                    let answer = state
                        .script
                        .lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or(*state.otherwise.lock().unwrap());
                    match answer {
                        Answer::Status(code) => axum::http::StatusCode::from_u16(code).unwrap(),
                        Answer::Hang => {
                            std::future::pending::<()>().await;
                            unreachable!()
                        }
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, ..receiver }
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    fn answer_from_now(&self, answer: Answer) {
        *self.otherwise.lock().unwrap() = answer;
    }

    /// Waits until `n` requests came; panics after `secs`.
    async fn wait_for(&self, n: usize, secs: u64) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "receiver got {} of {n} requests: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Verifies a request as a receiver would (Standard Webhooks), including
/// the timestamp's freshness.
fn assert_signed(secret: &str, got: &Received) {
    assert!(
        signing::verify(
            secret,
            &got.id,
            got.timestamp,
            got.body.as_bytes(),
            &got.signature
        ),
        "bad signature on {got:?}"
    );
    let skew = (chrono::Utc::now().timestamp() - got.timestamp).abs();
    assert!(skew < 300, "timestamp {} is {skew} s off", got.timestamp);
    assert!(!signing::verify(
        secret,
        &got.id,
        got.timestamp,
        format!("{} ", got.body).as_bytes(),
        &got.signature
    ));
}

const HOOK_ENV: [(&str, &str); 3] = [
    ("DISPATCH__WEBHOOKS__ALLOW_PRIVATE", "true"),
    ("DISPATCH__WEBHOOKS__RETRY_BASE_MS", "100"),
    ("DISPATCH__WEBHOOKS__TIMEOUT_MS", "2000"),
];

async fn register(app: &TestApp, admin: &str, body: Value) -> (i64, String) {
    let created = app
        .post("/api/webhooks", Some(admin), body)
        .await
        .expect(201);
    assert_eq!(created["webhook"]["status"], "active");
    assert!(created["webhook"].get("secret").is_none(), "{created}");
    (
        created["webhook"]["id"].as_i64().unwrap(),
        created["secret"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn a_receiver_that_fails_once_gets_the_event_again_with_the_same_id_and_a_valid_signature() {
    let app = TestApp::spawn_with(true, &HOOK_ENV).await;
    let admin = app.token("admin").await;
    let receiver = Receiver::start(&[Answer::Status(500)], Answer::Status(200)).await;
    let (hook, secret) = register(&app, &admin, json!({ "url": receiver.url })).await;
    // Filters: only another restaurant's events, or only confirmations.
    let other = Receiver::start(&[], Answer::Status(200)).await;
    register(&app, &admin, json!({ "url": other.url, "restaurantId": 2 })).await;
    let confirmations = Receiver::start(&[], Answer::Status(200)).await;
    let (_, confirm_secret) = register(
        &app,
        &admin,
        json!({ "url": confirmations.url, "eventTypes": ["order_confirmed"] }),
    )
    .await;

    let customer = app.token("customer1").await;
    let staff = app.token("restaurant1").await;
    let id = app.place_order(&customer).await["id"].as_i64().unwrap();
    app.act(&staff, id, "confirm").await.expect(200);

    let got = receiver.wait_for(3, 20).await;
    assert_eq!(got[0].id, format!("{id}-1"));
    assert_eq!(got[1].id, format!("{id}-1"), "the retry keeps the id");
    assert_eq!(got[2].id, format!("{id}-2"));
    for request in &got {
        assert_signed(&secret, request);
    }
    let placed = got[1].json();
    assert_eq!(placed["type"], "order_placed");
    assert_eq!(placed["id"], format!("{id}-1"));
    assert_eq!(placed["data"]["orderId"], id);
    assert_eq!(placed["data"]["order"]["status"], "PLACED");
    assert_eq!(got[2].json()["type"], "order_confirmed");
    assert_eq!(got[2].json()["data"]["fromStatus"], "PLACED");

    let only = confirmations.wait_for(1, 10).await;
    assert_eq!(only[0].json()["type"], "order_confirmed");
    assert_signed(&confirm_secret, &only[0]);

    // The log, newest first: the placement delivered on its second attempt.
    let log = app
        .get(&format!("/api/webhooks/{hook}/deliveries"), Some(&admin))
        .await
        .expect(200);
    let deliveries = log["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2, "{log}");
    let first = &deliveries[1];
    assert_eq!(first["eventId"], format!("{id}-1"));
    assert_eq!(first["status"], "delivered");
    assert_eq!(first["attempts"], 2);
    assert_eq!(first["lastStatus"], 200);

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.got().len(),
        3,
        "each event delivered once after success"
    );
    assert!(
        other.got().is_empty(),
        "restaurant 2's endpoint got restaurant 1's events"
    );
    assert_eq!(confirmations.got().len(), 1);
    assert!(
        app.metric("dispatch_webhook_attempts_total{result=\"failed\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn an_endpoint_that_keeps_failing_is_disabled_and_a_replay_delivers_the_event() {
    let mut env = HOOK_ENV.to_vec();
    env.push(("DISPATCH__WEBHOOKS__MAX_ATTEMPTS", "3"));
    let app = TestApp::spawn_with(true, &env).await;
    let admin = app.token("admin").await;
    let receiver = Receiver::start(&[], Answer::Status(503)).await;
    let (hook, secret) = register(&app, &admin, json!({ "url": receiver.url })).await;
    let customer = app.token("customer1").await;
    let id = app.place_order(&customer).await["id"].as_i64().unwrap();

    receiver.wait_for(3, 20).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let webhook = loop {
        let body = app
            .get(&format!("/api/webhooks/{hook}"), Some(&admin))
            .await
            .expect(200);
        if body["webhook"]["status"] == "disabled" || Instant::now() > deadline {
            break body["webhook"].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(webhook["status"], "disabled", "{webhook}");
    assert!(
        webhook["disabledReason"]
            .as_str()
            .unwrap()
            .contains("failed 3 times"),
        "{webhook}"
    );
    let log = app
        .get(&format!("/api/webhooks/{hook}/deliveries"), Some(&admin))
        .await
        .expect(200);
    let failed = log["deliveries"][0].clone();
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["attempts"], 3);
    assert_eq!(failed["lastStatus"], 503);

    // A disabled endpoint gets nothing new.
    let staff = app.token("restaurant1").await;
    app.act(&staff, id, "confirm").await.expect(200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.got().len(), 3);

    // The receiver is fixed: enable the endpoint and replay the event.
    receiver.answer_from_now(Answer::Status(204));
    let enabled = app
        .patch(
            &format!("/api/webhooks/{hook}"),
            Some(&admin),
            json!({ "enabled": true }),
        )
        .await
        .expect(200);
    assert_eq!(enabled["webhook"]["status"], "active");
    let delivery = failed["id"].as_i64().unwrap();
    let replayed = app
        .post(
            &format!("/api/webhooks/{hook}/deliveries/{delivery}/replay"),
            Some(&admin),
            json!({}),
        )
        .await
        .expect(202);
    assert_eq!(replayed["delivery"]["eventId"], format!("{id}-1"));
    let got = receiver.wait_for(4, 10).await;
    assert_eq!(got[3].id, format!("{id}-1"));
    assert_signed(&secret, &got[3]);
    app.post(
        &format!("/api/webhooks/{hook}/deliveries/99999/replay"),
        Some(&admin),
        json!({}),
    )
    .await
    .expect_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn a_receiver_that_never_answers_slows_neither_orders_nor_other_endpoints() {
    let app = TestApp::spawn_with(
        true,
        &[
            ("DISPATCH__WEBHOOKS__ALLOW_PRIVATE", "true"),
            ("DISPATCH__WEBHOOKS__TIMEOUT_MS", "30000"),
        ],
    )
    .await;
    let admin = app.token("admin").await;
    let customer = app.token("customer1").await;
    let staff = app.token("restaurant1").await;

    // Transition latency without any endpoint, then with a dead one.
    let mut p99 = Vec::new();
    for with_dead_endpoint in [false, true] {
        let healthy = Receiver::start(&[], Answer::Status(200)).await;
        if with_dead_endpoint {
            let dead = Receiver::start(&[], Answer::Hang).await;
            register(&app, &admin, json!({ "url": dead.url })).await;
            register(&app, &admin, json!({ "url": healthy.url })).await;
        }
        let mut took = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..10 {
            let id = app.place_order(&customer).await["id"].as_i64().unwrap();
            ids.push(id);
            for action in ["confirm", "start_preparing", "mark_ready"] {
                let started = Instant::now();
                app.act(&staff, id, action).await.expect(200);
                took.push(started.elapsed());
            }
        }
        took.sort();
        p99.push(took[took.len() * 99 / 100 - 1]);
        if with_dead_endpoint {
            // The healthy endpoint got all 40 events of this batch while the
            // dead one holds its first. (It may also get events of the first
            // batch that the fan-out had not reached when it was registered.)
            let ours = |got: Vec<Received>| -> Vec<Received> {
                got.into_iter()
                    .filter(|r| {
                        r.id.split_once('-')
                            .and_then(|(order, _)| order.parse::<i64>().ok())
                            .is_some_and(|order| ids.contains(&order))
                    })
                    .collect()
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            let got = loop {
                let got = ours(healthy.got());
                if got.len() >= 40 {
                    break got;
                }
                assert!(
                    Instant::now() < deadline,
                    "the healthy receiver got {} of this batch's 40 events",
                    got.len()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let first = ids[0];
            assert_eq!(got[0].id, format!("{first}-1"));
        }
    }
    println!(
        "transition p99 without a webhook: {:?}, with a receiver that never answers: {:?}",
        p99[0], p99[1]
    );
    assert!(
        p99[1] < Duration::from_secs(2),
        "transitions waited for the dead endpoint: p99 {:?}",
        p99[1]
    );
}

#[tokio::test]
async fn webhook_registration_refuses_bad_input_and_non_admins() {
    let app = TestApp::spawn().await;
    let admin = app.token("admin").await;
    let staff = app.token("restaurant1").await;
    let url = "https://hooks.example.com/dispatch";

    for (body, field) in [
        (json!({ "url": "ftp://example.com/x" }), "url"),
        (json!({ "url": "hooks.example.com" }), "url"),
        (json!({}), "url"),
        (json!({ "url": "http://127.0.0.1:9000/x" }), "url"),
        (json!({ "url": "http://169.254.169.254/latest" }), "url"),
        (json!({ "url": "http://localhost/x" }), "url"),
        (
            json!({ "url": url, "eventTypes": ["order_eaten"] }),
            "eventTypes[0]",
        ),
        (json!({ "url": url, "restaurantId": 999 }), "restaurantId"),
    ] {
        let response = app.post("/api/webhooks", Some(&admin), body.clone()).await;
        response.expect_error(400, "VALIDATION_ERROR");
        assert_eq!(response.fields(), vec![field.to_string()], "{body}");
    }
    app.post(
        "/api/webhooks",
        Some(&admin),
        json!({ "url": url, "extra": 1 }),
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");
    app.post("/api/webhooks", Some(&staff), json!({ "url": url }))
        .await
        .expect_error(403, "FORBIDDEN");
    app.post("/api/webhooks", None, json!({ "url": url }))
        .await
        .expect_error(401, "UNAUTHORIZED");
    app.get("/api/webhooks", Some(&staff))
        .await
        .expect_error(403, "FORBIDDEN");

    let (id, secret) = register(
        &app,
        &admin,
        json!({ "url": url, "eventTypes": ["order_delivered"] }),
    )
    .await;
    assert!(secret.starts_with("whsec_"));
    let list = app.get("/api/webhooks", Some(&admin)).await.expect(200);
    assert_eq!(list["webhooks"][0]["url"], url);
    assert_eq!(
        list["webhooks"][0]["eventTypes"],
        json!(["order_delivered"])
    );
    assert!(list["webhooks"][0].get("secret").is_none());
    app.get(
        &format!("/api/webhooks/{id}/deliveries?limit=0"),
        Some(&admin),
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");
    let deleted = app
        .request(
            Method::DELETE,
            &format!("/api/webhooks/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(deleted.status.as_u16(), 204);
    for path in [
        format!("/api/webhooks/{id}"),
        format!("/api/webhooks/{id}/deliveries"),
        "/api/webhooks/abc".to_string(),
    ] {
        app.get(&path, Some(&admin))
            .await
            .expect_error(404, "NOT_FOUND");
    }
    app.request(
        Method::DELETE,
        &format!("/api/webhooks/{id}"),
        Some(&admin),
        None,
    )
    .await
    .expect_error(404, "NOT_FOUND");
}

// ---- JetStream ----

/// A nats-server of the test's own on a free port, with its own store
/// directory, that the test stops and starts (the machine's NATS is never
/// touched).
struct LocalNats {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl LocalNats {
    fn new() -> LocalNats {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("dispatchd-nats-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        LocalNats {
            port,
            dir,
            child: None,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn start(&mut self) {
        let child = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (apt-get install nats-server)");
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nats-server did not start");
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh stream name and subject prefix, so tests sharing a server never meet.
fn fresh_stream() -> (String, String) {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    (format!("TEST_{tag}"), format!("test.{tag}"))
}

/// The (subject, Nats-Msg-Id, payload) of every message in the stream, in stream order.
async fn stream_messages(nats_url: &str, stream: &str) -> Vec<(String, String, Value)> {
    let Ok(client) = async_nats::connect(nats_url).await else {
        return Vec::new();
    };
    let js = async_nats::jetstream::new(client);
    let Ok(mut stream) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let Ok(info) = stream.info().await else {
        return Vec::new();
    };
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut messages = Vec::new();
    if info.state.messages == 0 {
        return messages;
    }
    for seq in first..=last {
        let message = stream.get_raw_message(seq).await.expect("stream message");
        let id = message
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        let payload = serde_json::from_slice(&message.payload).expect("JSON payload");
        messages.push((message.subject.to_string(), id, payload));
    }
    messages
}

async fn wait_for_stream(
    nats_url: &str,
    stream: &str,
    n: usize,
    secs: u64,
) -> Vec<(String, String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let messages = stream_messages(nats_url, stream).await;
        if messages.len() >= n || Instant::now() > deadline {
            return messages;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn nats_env(url: &str, stream: &str, prefix: &str) -> Vec<(String, String)> {
    vec![
        ("DISPATCH__EVENTS__NATS_URL".into(), url.into()),
        ("DISPATCH__EVENTS__STREAM".into(), stream.into()),
        ("DISPATCH__EVENTS__SUBJECT_PREFIX".into(), prefix.into()),
        ("DISPATCH__EVENTS__PUBLISH_TIMEOUT_MS".into(), "1000".into()),
    ]
}

fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Every event of `order` in the stream, in stream order, and no id twice.
fn assert_once_in_order(messages: &[(String, String, Value)], order: i64, expected: &[&str]) {
    let ids: Vec<&str> = messages.iter().map(|(_, id, _)| id.as_str()).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "an id twice: {ids:?}");
    let of_order: Vec<&str> = messages
        .iter()
        .filter(|(_, _, p)| p["data"]["orderId"] == order)
        .map(|(_, _, p)| p["type"].as_str().unwrap())
        .collect();
    assert_eq!(of_order, expected, "{ids:?}");
    let seqs: Vec<i64> = messages
        .iter()
        .filter(|(_, _, p)| p["data"]["orderId"] == order)
        .map(|(_, _, p)| p["data"]["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=expected.len() as i64).collect::<Vec<_>>());
}

/// NATS is a service of this machine and CI's, not of a newcomer's: without
/// it these tests say so and pass, unless `DISPATCHD_TEST_NATS=required`
/// (set by `.ci/run`) makes its absence a failure.
async fn nats_available(on_4222: bool, binary: bool) -> bool {
    let reachable = !on_4222
        || tokio::net::TcpStream::connect(("127.0.0.1", 4222))
            .await
            .is_ok();
    let binary = !binary
        || Command::new("nats-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
    if reachable && binary {
        return true;
    }
    if std::env::var("DISPATCHD_TEST_NATS").as_deref() == Ok("required") {
        panic!(
            "DISPATCHD_TEST_NATS=required, but NATS is not on 127.0.0.1:4222 or nats-server is not installed"
        );
    }
    eprintln!("skipped: no NATS on 127.0.0.1:4222 (or no nats-server binary); .ci/run starts one");
    false
}

#[tokio::test]
async fn events_reach_jetstream_once_per_id_with_subjects_by_restaurant_order_and_type() {
    if !nats_available(true, false).await {
        return;
    }
    let nats = "nats://127.0.0.1:4222";
    let (stream, prefix) = fresh_stream();
    let env = nats_env(nats, &stream, &prefix);
    let app = TestApp::spawn_with(true, &as_refs(&env)).await;
    let customer = app.token("customer1").await;
    let staff = app.token("restaurant1").await;
    let id = app.place_order(&customer).await["id"].as_i64().unwrap();
    for action in ["confirm", "start_preparing", "mark_ready"] {
        app.act(&staff, id, action).await.expect(200);
    }
    let messages = wait_for_stream(nats, &stream, 4, 20).await;
    assert_once_in_order(
        &messages,
        id,
        &[
            "order_placed",
            "order_confirmed",
            "order_preparing",
            "order_ready_for_pickup",
        ],
    );
    let (subject, msg_id, payload) = &messages[1];
    assert_eq!(subject, &format!("{prefix}.1.{id}.order_confirmed"));
    assert_eq!(msg_id, &format!("{id}-2"));
    assert_eq!(payload["id"], format!("{id}-2"));
    assert_eq!(payload["data"]["order"]["version"], 2);

    // A restart publishes nothing twice.
    let app = app.crash_and_restart().await;
    app.act(&staff, id, "cancel").await.expect(200);
    let messages = wait_for_stream(nats, &stream, 5, 20).await;
    assert_once_in_order(
        &messages,
        id,
        &[
            "order_placed",
            "order_confirmed",
            "order_preparing",
            "order_ready_for_pickup",
            "order_cancelled",
        ],
    );
    assert!(
        app.metric("dispatch_events_published_total{sink=\"nats\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn events_wait_while_nats_is_down_for_a_minute_survive_a_sigkill_and_go_out_in_order() {
    if !nats_available(false, true).await {
        return;
    }
    let mut nats = LocalNats::new();
    let (stream, prefix) = fresh_stream();
    let mut env = nats_env(&nats.url(), &stream, &prefix);
    env.push(("DISPATCH__EVENTS__WARN_ROWS".into(), "1".into()));
    let app = TestApp::spawn_with(true, &as_refs(&env)).await;
    let customer = app.token("customer1").await;
    let staff = app.token("restaurant1").await;

    // NATS is not there yet: the events are committed and wait.
    let id = app.place_order(&customer).await["id"].as_i64().unwrap();
    app.act(&staff, id, "confirm").await.expect(200);
    // Killed between commit and publish.
    let app = app.crash_and_restart().await;
    app.act(&staff, id, "start_preparing").await.expect(200);
    let deadline = Instant::now() + Duration::from_secs(15);
    while app
        .metric("dispatch_outbox_backlog_events{sink=\"nats\"}")
        .await
        < 3.0
    {
        assert!(
            Instant::now() < deadline,
            "the backlog gauge never showed the waiting events"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    nats.start().await;
    let messages = wait_for_stream(&nats.url(), &stream, 3, 30).await;
    assert_once_in_order(
        &messages,
        id,
        &["order_placed", "order_confirmed", "order_preparing"],
    );

    // NATS goes away for a minute (the outage) while orders keep
    // moving, and comes back with its data: everything committed in the
    // minute goes out, once each, in each order's order.
    nats.stop();
    let outage = Duration::from_secs(
        std::env::var("DISPATCHD_TEST_NATS_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    let stopped_at = Instant::now();
    app.act(&staff, id, "mark_ready").await.expect(200);
    app.act(&staff, id, "cancel").await.expect(200);
    let mut during = Vec::new();
    while stopped_at.elapsed() < outage {
        let other = app.place_order(&customer).await["id"].as_i64().unwrap();
        app.act(&staff, other, "confirm").await.expect(200);
        during.push(other);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    // The gauge is refreshed by the publisher's next attempt, so the last
    // orders' events may show a poll later: wait for it, within a bound.
    let committed = (2 + 2 * during.len()) as f64;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut waiting = 0.0;
    while Instant::now() < deadline {
        waiting = app
            .metric("dispatch_outbox_backlog_events{sink=\"nats\"}")
            .await;
        if waiting >= committed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        waiting >= committed,
        "{waiting} events waiting after the outage, for {} orders",
        during.len()
    );
    nats.start().await;
    let expected = 5 + 2 * during.len();
    let messages = wait_for_stream(&nats.url(), &stream, expected, 60).await;
    assert_eq!(messages.len(), expected, "every committed event, once");
    assert_once_in_order(
        &messages,
        id,
        &[
            "order_placed",
            "order_confirmed",
            "order_preparing",
            "order_ready_for_pickup",
            "order_cancelled",
        ],
    );
    for other in during {
        assert_once_in_order(&messages, other, &["order_placed", "order_confirmed"]);
    }
    assert!(wait_for_backlog_drained(&app).await, "the backlog drained");
    assert!(app.metric("dispatch_nats_publish_failures_total").await >= 1.0);
}

/// Whether the NATS backlog gauge reaches 0 within a few seconds (it is
/// refreshed by the publisher, after the stream already holds the events).
async fn wait_for_backlog_drained(app: &TestApp) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if app
            .metric("dispatch_outbox_backlog_events{sink=\"nats\"}")
            .await
            < 1.0
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

// ---- Arrival events ----

fn offset(from: (f64, f64), north_km: f64) -> (f64, f64) {
    (from.0 + north_km / 111.2, from.1)
}

#[tokio::test]
async fn a_drive_into_the_restaurants_radius_gives_one_approaching_and_one_arrived_despite_jitter()
{
    let app = TestApp::spawn_with(
        true,
        &[
            ("DISPATCH__DISPATCH__ROUND_INTERVAL_MS", "200"),
            ("DISPATCH__ARRIVALS__DWELL_MS", "1000"),
            ("DISPATCH__ARRIVALS__APPROACH_SECS", "1"),
            ("DISPATCH__WEBHOOKS__ALLOW_PRIVATE", "true"),
        ],
    )
    .await;
    let admin = app.token("admin").await;
    let receiver = Receiver::start(&[], Answer::Status(200)).await;
    let (_, secret) = register(
        &app,
        &admin,
        json!({ "url": receiver.url, "eventTypes": ["driver_approaching", "driver_arrived"] }),
    )
    .await;
    let customer = app.token("customer1").await;
    let staff = app.token("restaurant1").await;
    let mut tablet = WsClient::connect(&app, &staff).await;
    tablet
        .send(json!({ "type": "subscribe_restaurant", "restaurantId": 1 }))
        .await;

    let mut driver = TestDriver::online(&app, "driver1", offset(RESTAURANT_1_AT, 2.0)).await;
    let id = confirmed_order(&app, &customer).await;
    let offer = driver.answer_offer(true, 10).await;
    assert_eq!(offer["orderId"], id);
    assert_eq!(
        driver.ws.next_of("offer_result", 5).await["result"],
        "assigned"
    );
    let mut watcher = WsClient::connect(&app, &customer).await;
    watcher
        .send(json!({ "type": "subscribe", "orderId": id }))
        .await;
    watcher.next_of("snapshot", 5).await;

    // In from 2 km, jittering around the 50 m radius (never past 100 m).
    for km in [1.5, 1.0, 0.6, 0.45, 0.2, 0.04, 0.07, 0.03, 0.08] {
        driver.move_to(offset(RESTAURANT_1_AT, km)).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for km in [0.02, 0.06, 0.01, 0.3, 0.01] {
        driver.move_to(offset(RESTAURANT_1_AT, km)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut seen = Vec::new();
    while let Some(m) = watcher.next_within(Duration::from_millis(1500)).await {
        if m["type"] == "driver_approaching" || m["type"] == "driver_arrived" {
            assert_eq!(m["orderId"], id);
            assert_eq!(m["stop"], "restaurant");
            seen.push((
                m["type"].as_str().unwrap().to_string(),
                m["distanceM"].as_f64().unwrap(),
            ));
        }
    }
    let kinds: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["driver_approaching", "driver_arrived"], "{seen:?}");
    assert!((440.0..460.0).contains(&seen[0].1), "{seen:?}");
    assert!(seen[1].1 <= 50.0, "{seen:?}");

    let tablet_saw: Vec<Value> = {
        let mut all = Vec::new();
        while let Some(m) = tablet.next_within(Duration::from_millis(300)).await {
            all.push(m);
        }
        all
    };
    assert_eq!(
        tablet_saw
            .iter()
            .filter(|m| m["type"] == "driver_arrived")
            .count(),
        1,
        "{tablet_saw:?}"
    );

    let events = app
        .get(&format!("/api/orders/{id}/events"), Some(&customer))
        .await
        .expect(200);
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| k.starts_with("DRIVER_A") && **k != "DRIVER_ASSIGNED")
            .count(),
        2,
        "{kinds:?}"
    );
    let got = receiver.wait_for(2, 10).await;
    assert_eq!(got[0].json()["type"], "driver_approaching");
    assert_eq!(got[1].json()["type"], "driver_arrived");
    assert_eq!(got[1].json()["data"]["details"]["stop"], "restaurant");
    assert_signed(&secret, &got[1]);
    // The order moves on normally after its arrival events.
    app.act(&staff, id, "start_preparing").await.expect(200);
}

/// The kinds of the order's arrival events in its history.
async fn arrival_kinds(app: &TestApp, token: &str, id: i64) -> Vec<String> {
    let events = app
        .get(&format!("/api/orders/{id}/events"), Some(token))
        .await
        .expect(200);
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .filter(|k| k == "DRIVER_APPROACHING" || k == "DRIVER_ARRIVED")
        .collect()
}

#[tokio::test]
async fn an_arrival_recorded_before_a_restart_is_not_recorded_again_after_it() {
    let env = [
        ("DISPATCH__DISPATCH__ROUND_INTERVAL_MS", "200"),
        ("DISPATCH__ARRIVALS__DWELL_MS", "500"),
        ("DISPATCH__ARRIVALS__APPROACH_SECS", "1"),
    ];
    let app = TestApp::spawn_with(true, &env).await;
    let customer = app.token("customer1").await;
    let mut driver = TestDriver::online(&app, "driver1", offset(RESTAURANT_1_AT, 2.0)).await;
    let id = confirmed_order(&app, &customer).await;
    assert_eq!(driver.answer_offer(true, 10).await["orderId"], id);
    driver.ws.next_of("offer_result", 5).await;
    let drive_in = async |driver: &mut TestDriver| {
        for km in [1.0, 0.3, 0.02] {
            driver.move_to(offset(RESTAURANT_1_AT, km)).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        driver.move_to(offset(RESTAURANT_1_AT, 0.01)).await;
    };
    drive_in(&mut driver).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while arrival_kinds(&app, &customer, id).await.len() < 2 {
        assert!(Instant::now() < deadline, "no arrival before the restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The geofence lives in memory; after a SIGKILL it starts afresh, and
    // the same drive in must find the arrivals already in the history.
    drop(driver);
    let app = app.crash_and_restart().await;
    let mut driver = TestDriver::online(&app, "driver1", offset(RESTAURANT_1_AT, 2.0)).await;
    drive_in(&mut driver).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.metric("dispatch_arrival_repeats_skipped_total").await < 2.0
        && arrival_kinds(&app, &customer, id).await.len() == 2
    {
        assert!(
            Instant::now() < deadline,
            "the arrivals after the restart were never seen"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        arrival_kinds(&app, &customer, id).await,
        ["DRIVER_APPROACHING", "DRIVER_ARRIVED"]
    );
}

#[tokio::test]
async fn a_driver_entering_and_leaving_a_zone_produces_one_event_each() {
    let app = TestApp::spawn_with(true, &[("DISPATCH__WEBHOOKS__ALLOW_PRIVATE", "true")]).await;
    let admin = app.token("admin").await;
    let receiver = Receiver::start(&[], Answer::Status(200)).await;
    let (_, secret) = register(
        &app,
        &admin,
        json!({ "url": receiver.url, "eventTypes": ["driver_entered_zone", "driver_left_zone"] }),
    )
    .await;
    let (lat, lon) = RESTAURANT_1_AT;
    let zone = app
        .post(
            "/api/zones",
            Some(&admin),
            json!({ "name": "around restaurant 1", "geometry": { "type": "Polygon", "coordinates": [[
                [lon - 0.01, lat - 0.01], [lon + 0.01, lat - 0.01], [lon + 0.01, lat + 0.01],
                [lon - 0.01, lat + 0.01], [lon - 0.01, lat - 0.01]
            ]] } }),
        )
        .await
        .expect(201)["zone"]["id"]
        .as_i64()
        .unwrap();

    let mut driver = TestDriver::online(&app, "driver1", offset(RESTAURANT_1_AT, 5.0)).await;
    for km in [3.0, 0.5, 0.2, 0.0, 0.3, 2.0, 4.0] {
        driver.move_to(offset(RESTAURANT_1_AT, km)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = receiver.wait_for(2, 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_now = receiver.got();
    assert_eq!(got_now.len(), 2, "{got_now:?}");
    let (entered, left) = (got[0].json(), got[1].json());
    assert_eq!(entered["type"], "driver_entered_zone");
    assert_eq!(left["type"], "driver_left_zone");
    for event in [&entered, &left] {
        assert_eq!(event["data"]["zoneId"], zone);
        assert_eq!(event["data"]["driverId"], driver.id);
    }
    assert_signed(&secret, &got[0]);
    assert_eq!(app.metric("dispatch_zone_crossings_total").await, 2.0);
}
