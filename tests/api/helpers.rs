//! `TestApp`: the real `dispatchd` binary on an ephemeral port, on a fresh
//! database of its own, with typed helpers for the endpoints.
//!
//! The backend comes from the environment: with `DISPATCHD_TEST_POSTGRES`
//! (an admin URL such as `postgres://postgres@127.0.0.1:5432/postgres`) each
//! test gets a new Postgres database; without it, a temporary SQLite file.
//! Server logs reach the terminal only when `TEST_LOG` is set.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const JWT_SECRET: &str = "integration-tests-secret-0123456789";
/// The bearer token `/metrics` takes from a scraper (`metrics.token`).
pub const METRICS_TOKEN: &str = "integration-tests-metrics-token-0123456789";
pub const DEMO_PASSWORD: &str = "demo-pass";
/// Demo restaurant 1 ("Congress Avenue Tacos") and a customer address 1 km away.
pub const RESTAURANT_1: i64 = 1;
pub const NEAR_LAT: f64 = 30.2747;
pub const NEAR_LON: f64 = -97.7404;

#[derive(Debug, Clone)]
pub enum TestDb {
    Postgres { admin_url: String, name: String },
    Sqlite { path: std::path::PathBuf },
}

impl TestDb {
    pub async fn fresh() -> TestDb {
        match std::env::var("DISPATCHD_TEST_POSTGRES") {
            Ok(admin_url) if !admin_url.is_empty() => {
                let name = format!("dispatchd_test_{}", uuid::Uuid::new_v4().simple());
                let mut admin = connect_admin(&admin_url).await;
                sqlx::Executor::execute(
                    &mut admin,
                    sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
                )
                .await
                .expect("create test database");
                TestDb::Postgres { admin_url, name }
            }
            _ => {
                let dir = std::env::temp_dir().join("dispatchd-tests");
                std::fs::create_dir_all(&dir).expect("temp dir");
                TestDb::Sqlite {
                    path: dir.join(format!("{}.db", uuid::Uuid::new_v4().simple())),
                }
            }
        }
    }

    pub fn url(&self) -> String {
        match self {
            TestDb::Postgres { admin_url, name } => {
                let base = admin_url
                    .rsplit_once('/')
                    .map(|(base, _)| base)
                    .unwrap_or(admin_url);
                format!("{base}/{name}")
            }
            TestDb::Sqlite { path } => format!("sqlite:{}", path.display()),
        }
    }
}

pub async fn connect_admin(admin_url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(admin_url)
        .await
        .expect("connect to Postgres as admin")
}

pub struct TestApp {
    pub address: String,
    pub db: TestDb,
    pub client: reqwest::Client,
    child: Option<Child>,
    env: Vec<(String, String)>,
    demo: bool,
}

pub struct Response {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Response {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    /// The `field`s named in an error's `details`.
    pub fn fields(&self) -> Vec<String> {
        self.body["details"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter_map(|e| e["field"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        self.body
    }

    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        assert_eq!(self.code(), code, "unexpected code; body: {}", self.body);
        assert!(
            self.body["error"].is_string(),
            "error message missing: {}",
            self.body
        );
        assert!(
            self.body["details"].is_array(),
            "details missing: {}",
            self.body
        );
    }
}

/// The binary under test: cargo's build of this checkout, or the one
/// `DISPATCHD_TEST_BIN` names (the long runs point it at a release build).
pub fn server_binary() -> std::ffi::OsString {
    std::env::var_os("DISPATCHD_TEST_BIN")
        .filter(|path| !path.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_dispatchd").into())
}

impl TestApp {
    /// A server with the demo city and accounts loaded.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(true, &[]).await
    }

    pub async fn spawn_with(demo: bool, env: &[(&str, &str)]) -> TestApp {
        Self::launch(TestDb::fresh().await, owned(env), demo).await
    }

    /// Another node on an existing database (cluster tests).
    pub async fn spawn_on(db: TestDb, demo: bool, env: &[(&str, &str)]) -> TestApp {
        Self::launch(db, owned(env), demo).await
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`) to the server process.
    pub fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .expect("server running")
            .id()
            .to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server on `db` and waits until it is ready.
    async fn launch(db: TestDb, env: Vec<(String, String)>, demo: bool) -> TestApp {
        let mut app = TestApp {
            address: String::new(),
            db,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
            child: None,
            env,
            demo,
        };
        app.start();
        app.ready().await
    }

    /// Starts the server process and waits for its `listening on` line.
    fn start(&mut self) {
        let url = self
            .env
            .iter()
            .find(|(k, _)| k == "DISPATCHD_TEST_URL_OVERRIDE")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| self.db.url());
        let mut command = Command::new(server_binary());
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--database-url", &url])
            .env("DISPATCH__AUTH__JWT_SECRET", JWT_SECRET)
            .env("DISPATCH__METRICS__TOKEN", METRICS_TOKEN)
            .env("DISPATCH__LOG__LEVEL", "warn,dispatchd=info")
            // The batching window (120 s by default) would hold every lone
            // order of a test for two minutes; the tests of the window set
            // it again in their own environment.
            .env("DISPATCH__DISPATCH__BATCH_WINDOW_SECS", "0")
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if let Some(path) = self.stderr_file() {
                Stdio::from(std::fs::File::create(path).expect("create the log file"))
            } else if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        if self.demo {
            command.arg("--demo");
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start dispatchd");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines
            .next()
            .expect("dispatchd printed nothing")
            .expect("read stdout");
        let address = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .to_string();
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.address = address;
        self.child = Some(child);
    }

    /// Where the server's log goes, when the test asked for it with the
    /// `DISPATCHD_TEST_STDERR` entry of its environment.
    fn stderr_file(&self) -> Option<String> {
        self.env
            .iter()
            .find(|(k, _)| k == "DISPATCHD_TEST_STDERR")
            .map(|(_, v)| v.clone())
    }

    /// Waits until the server answers (demo data and recovery are done).
    pub async fn ready(self) -> TestApp {
        for _ in 0..300 {
            if let Ok(r) = self
                .client
                .get(format!("{}/healthz", self.address))
                .send()
                .await
                && r.status() == StatusCode::OK
            {
                return self;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("dispatchd did not become ready");
    }

    /// Kills the server without a clean shutdown (SIGKILL) and starts it
    /// again on the same database.
    pub async fn crash_and_restart(mut self) -> TestApp {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.start();
        self.ready().await
    }

    /// The server's process id (its memory is read from /proc).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Waits for the server to exit by itself; panics after `secs`.
    pub fn wait_for_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        for _ in 0..secs * 20 {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        panic!("dispatchd did not exit within {secs} s");
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        let pid = child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        for _ in 0..200 {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        panic!("dispatchd did not exit within 10 s of SIGTERM");
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut request = self
            .client
            .request(method, format!("{}{}", self.address, path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Self::read(request.send().await.expect("request failed")).await
    }

    pub async fn read(response: reqwest::Response) -> Response {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("read body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Response {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Response {
        self.request(Method::POST, path, token, Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> Response {
        self.request(Method::PATCH, path, token, Some(body)).await
    }

    /// A raw body, for malformed JSON and size limits.
    pub async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        let mut request = self
            .client
            .post(format!("{}{}", self.address, path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Self::read(request.send().await.expect("request failed")).await
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post(
            "/api/auth/login",
            None,
            json!({ "email": email, "password": password }),
        )
        .await
    }

    /// The token of a demo account (`admin`, `customer1`, `driver3`, `restaurant1`...).
    pub async fn token(&self, account: &str) -> String {
        let body = self
            .login(&format!("{account}@demo.local"), DEMO_PASSWORD)
            .await
            .expect(200);
        body["token"].as_str().expect("token").to_string()
    }

    /// Places an order at demo restaurant 1 as `token`; returns the order.
    pub async fn place_order(&self, token: &str) -> Value {
        self.post("/api/orders", Some(token), order_body(RESTAURANT_1, 1, 2))
            .await
            .expect(201)["order"]
            .clone()
    }

    /// Places an order of `quantity` items at demo restaurant 1 with an
    /// idempotency key; returns the answer as it came.
    pub async fn create_with_key(&self, token: &str, key: &str, quantity: i64) -> Response {
        let response = self
            .client
            .post(format!("{}/api/orders", self.address))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(&order_body(RESTAURANT_1, 1, quantity))
            .send()
            .await
            .expect("request");
        TestApp::read(response).await
    }

    pub async fn act(&self, token: &str, order_id: i64, action: &str) -> Response {
        self.patch(
            &format!("/api/orders/{order_id}/status"),
            Some(token),
            json!({ "action": action }),
        )
        .await
    }

    /// The Prometheus text, fetched as a scraper would (with the metrics token).
    pub async fn metrics_text(&self) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.address))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .expect("metrics");
        assert_eq!(response.status(), StatusCode::OK, "GET /metrics");
        response.text().await.expect("metrics body")
    }

    pub async fn metric(&self, line_prefix: &str) -> f64 {
        let text = self.metrics_text().await;
        text.lines()
            .filter(|l| l.starts_with(line_prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let TestDb::Sqlite { path } = &self.db {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
    }
}

pub fn address() -> Value {
    json!({
        "street": "1100 Congress Ave",
        "city": "Austin",
        "state": "TX",
        "zip": "78701",
        "lat": NEAR_LAT,
        "lon": NEAR_LON,
    })
}

pub fn order_body(restaurant_id: i64, menu_item_id: i64, quantity: i64) -> Value {
    json!({
        "restaurantId": restaurant_id,
        "items": [{ "menuItemId": menu_item_id, "quantity": quantity }],
        "deliveryAddress": address(),
    })
}

/// A TCP proxy in front of Postgres that a test can cut and restore, to play
/// a store outage the way production sees one: connections reset, new ones
/// refused at the handshake.
pub struct StoreLink {
    pub port: u16,
    up: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl StoreLink {
    pub async fn open(target: &str) -> StoreLink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let (up, _) = tokio::sync::watch::channel(true);
        let up = std::sync::Arc::new(up);
        let target = target.to_string();
        let link = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !*link.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut state = link.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = state.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        StoreLink { port, up }
    }

    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl TestApp {
    /// Like `spawn`, but the server reaches Postgres through `link`.
    pub async fn spawn_through(link: &StoreLink, env: &[(&str, &str)]) -> TestApp {
        let db = TestDb::fresh().await;
        let TestDb::Postgres { name, .. } = &db else {
            panic!("spawn_through needs Postgres");
        };
        let url = format!("postgres://postgres@127.0.0.1:{}/{name}", link.port);
        let mut env = owned(env);
        env.push(("DISPATCHD_TEST_URL_OVERRIDE".into(), url));
        Self::launch(db, env, true).await
    }
}

fn owned(env: &[(&str, &str)]) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A real WebSocket client of `/ws`.
pub struct WsClient {
    pub socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

/// How a socket ended, as the client saw it.
#[derive(Debug, PartialEq)]
pub enum Ended {
    Closed(u16),
    Dropped,
}

impl WsClient {
    pub async fn connect(app: &TestApp, token: &str) -> WsClient {
        let url = format!("{}/ws?token={token}", app.address.replacen("http", "ws", 1));
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connect");
        WsClient { socket }
    }

    pub async fn send(&mut self, message: Value) {
        self.send_text(message.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        use futures::SinkExt;
        self.socket
            .send(tokio_tungstenite::tungstenite::Message::Text(text.into()))
            .await
            .expect("websocket send");
    }

    /// The next JSON message, skipping pings; panics after `secs`.
    pub async fn next(&mut self, secs: u64) -> Value {
        match self.next_within(Duration::from_secs(secs)).await {
            Some(value) => value,
            None => panic!("no message within {secs} s"),
        }
    }

    pub async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()??;
            match frame.ok()? {
                Message::Text(text) => return serde_json::from_str(&text).ok(),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// The next message of `kind`, skipping others; panics after `secs`.
    pub async fn next_of(&mut self, kind: &str, secs: u64) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Some(m) if m["type"] == kind => return m,
                Some(_) => continue,
                None => panic!("no {kind} within {secs} s"),
            }
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn ended(&mut self, secs: u64) -> Ended {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => panic!("socket still open after {secs} s"),
                Ok(None) | Ok(Some(Err(_))) => return Ended::Dropped,
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Ended::Closed(frame.map(|f| u16::from(f.code)).unwrap_or(1005));
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

/// A driver: its token, id, and socket, standing at `at` (lat, lon).
pub struct TestDriver {
    pub token: String,
    pub id: i64,
    pub ws: WsClient,
}

impl TestDriver {
    pub async fn online(app: &TestApp, account: &str, at: (f64, f64)) -> TestDriver {
        let token = app.token(account).await;
        let id = app.get("/api/me", Some(&token)).await.expect(200)["user"]["id"]
            .as_i64()
            .unwrap();
        let mut ws = WsClient::connect(app, &token).await;
        ws.send(json!({ "type": "location", "lat": at.0, "lon": at.1 }))
            .await;
        let mut driver = TestDriver { token, id, ws };
        driver.wait_until_indexed(app, at).await;
        driver
    }

    pub async fn move_to(&mut self, at: (f64, f64)) {
        self.ws
            .send(json!({ "type": "location", "lat": at.0, "lon": at.1, "speedMps": 8.0 }))
            .await;
    }

    /// Polls `nearby` until this driver shows up near `at`.
    pub async fn wait_until_indexed(&mut self, app: &TestApp, at: (f64, f64)) {
        let admin = app.token("admin").await;
        for _ in 0..100 {
            let body = app
                .get(
                    &format!(
                        "/api/drivers/nearby?lat={}&lon={}&radiusKm=1&limit=500",
                        at.0, at.1
                    ),
                    Some(&admin),
                )
                .await
                .expect(200);
            if body["drivers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["id"] == self.id)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("driver {} never appeared in the index", self.id);
    }

    /// Waits for an offer, and answers it.
    pub async fn answer_offer(&mut self, accept: bool, secs: u64) -> Value {
        let offer = self.ws.next_of("offer", secs).await;
        self.ws
            .send(
                json!({ "type": "offer_response", "offerId": offer["offerId"], "accept": accept }),
            )
            .await;
        offer
    }
}

/// Demo restaurant 1's position.
pub const RESTAURANT_1_AT: (f64, f64) = (30.2686, -97.7425);

/// Places an order at restaurant 1 as `customer` and has its staff confirm
/// it (it becomes dispatchable). Returns the order id.
pub async fn confirmed_order(app: &TestApp, customer: &str) -> i64 {
    let id = app.place_order(customer).await["id"].as_i64().unwrap();
    let staff = app.token("restaurant1").await;
    app.act(&staff, id, "confirm").await.expect(200);
    id
}

impl WsClient {
    /// The next `order_update` with `status`, skipping others (ETA pushes
    /// repeat the current status); panics after `secs`.
    pub async fn next_status(&mut self, status: &str, secs: u64) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Some(m) if m["type"] == "order_update" && m["status"] == status => return m,
                Some(_) => continue,
                None => panic!("no order_update to {status} within {secs} s"),
            }
        }
    }
}

/// Another client of the test's database holding its write lock (SQLite) or
/// the `orders` table (Postgres), so that the server's writes wait.
pub enum StoreWriteLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl StoreWriteLock {
    pub async fn take(app: &TestApp) -> StoreWriteLock {
        use sqlx::{Connection, Executor};
        match &app.db {
            TestDb::Sqlite { .. } => {
                let mut c = sqlx::SqliteConnection::connect(&app.db.url())
                    .await
                    .unwrap();
                c.execute("BEGIN IMMEDIATE").await.unwrap();
                c.execute("UPDATE restaurants SET rating = rating WHERE id = 1")
                    .await
                    .unwrap();
                StoreWriteLock::Sqlite(c)
            }
            TestDb::Postgres { .. } => {
                let mut c = sqlx::PgConnection::connect(&app.db.url()).await.unwrap();
                c.execute("BEGIN").await.unwrap();
                c.execute("LOCK TABLE orders IN EXCLUSIVE MODE")
                    .await
                    .unwrap();
                StoreWriteLock::Postgres(c)
            }
        }
    }

    pub async fn release(self) {
        use sqlx::Executor;
        match self {
            StoreWriteLock::Sqlite(mut c) => c.execute("ROLLBACK").await.map(|_| ()),
            StoreWriteLock::Postgres(mut c) => c.execute("ROLLBACK").await.map(|_| ()),
        }
        .unwrap();
    }
}
