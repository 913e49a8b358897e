//! Acknowledged = durable, under SIGKILL at load: workers drive orders
//! through their lifecycle (placed with idempotency keys, confirmed,
//! prepared, ready, or cancelled) and log every acknowledged change, while
//! the server is killed at random moments and started again on the same
//! store. Afterwards every acknowledged change must be there with its
//! status and version, no key may have made two orders, and every live
//! order must take its next step.
//!
//! CI runs a few kills; the long run (benches/README.md) sets
//! `DISPATCHD_CRASH_KILLS`, `DISPATCHD_CRASH_WORKERS` and
//! `DISPATCHD_CRASH_UP_MS` (the mean time the server is up between kills).

use crate::helpers::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// What a worker was told about an order, and whether a change of it was
/// in flight (sent, not answered) when the server died.
#[derive(Debug, Clone)]
struct Acked {
    customer: String,
    status: String,
    version: i64,
    in_flight: Option<&'static str>,
}

#[derive(Default)]
struct Ledger {
    orders: Mutex<HashMap<i64, Acked>>,
    /// Idempotency key -> the order its (possibly retried) creation named.
    keys: Mutex<HashMap<String, i64>>,
    acknowledged: std::sync::atomic::AtomicU64,
}

struct Server {
    address: RwLock<String>,
    http: reqwest::Client,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address.read().unwrap())
    }

    /// One call; `None` when the server was not there to answer (killed,
    /// starting) or answered 503.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.ok()?;
        (status != 503).then_some((status, body))
    }
}

const STEPS: [(&str, &str); 3] = [
    ("confirm", "CONFIRMED"),
    ("start_preparing", "PREPARING"),
    ("mark_ready", "READY_FOR_PICKUP"),
];

/// One worker: orders, one after another, each driven to READY_FOR_PICKUP
/// (every fifth cancelled by its customer instead), until `stop`.
async fn worker(
    n: usize,
    server: Arc<Server>,
    ledger: Arc<Ledger>,
    customers: Arc<Vec<(String, String)>>,
    staff: String,
    stop: Arc<AtomicBool>,
) {
    let mut round = 0usize;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let (customer, token) = &customers[(n + round) % customers.len()];
        let key = format!("crash-{n}-{round}");
        // Retried with the same key until answered: a creation the kill
        // cut off is replayed, never made twice.
        let order = loop {
            match server
                .call(
                    reqwest::Method::POST,
                    "/api/orders",
                    token,
                    Some(&key),
                    Some(order_body(RESTAURANT_1, 1, 1)),
                )
                .await
            {
                Some((201, body)) => break body["order"].clone(),
                Some((status, body)) => panic!("order creation answered {status}: {body}"),
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let id = order["id"].as_i64().unwrap();
        ledger.keys.lock().unwrap().insert(key, id);
        ledger.orders.lock().unwrap().insert(
            id,
            Acked {
                customer: customer.clone(),
                status: "PLACED".into(),
                version: order["version"].as_i64().unwrap(),
                in_flight: None,
            },
        );
        ledger.acknowledged.fetch_add(1, Ordering::Relaxed);
        let steps: &[(&str, &str)] = if round % 5 == 0 {
            &[("cancel", "CANCELLED")]
        } else {
            &STEPS
        };
        for (action, target) in steps {
            let actor = if *action == "cancel" { token } else { &staff };
            advance(&server, &ledger, id, actor, action, target).await;
            if stop.load(Ordering::Relaxed) {
                return;
            }
        }
    }
}

/// Takes one step of order `id`, at the version last acknowledged; when the
/// server dies meanwhile, reads the order back to learn whether it
/// happened (a commit can beat the kill, its answer cannot).
async fn advance(
    server: &Server,
    ledger: &Ledger,
    id: i64,
    token: &str,
    action: &'static str,
    target: &str,
) {
    loop {
        let version = {
            let mut orders = ledger.orders.lock().unwrap();
            let acked = orders.get_mut(&id).unwrap();
            acked.in_flight = Some(action);
            acked.version
        };
        let body = json!({ "action": action, "expectedVersion": version });
        match server
            .call(
                reqwest::Method::PATCH,
                &format!("/api/orders/{id}/status"),
                token,
                None,
                Some(body),
            )
            .await
        {
            Some((200, body)) => return record(ledger, id, &body["order"]),
            Some((409, body)) if body["code"] == "VERSION_CONFLICT" => {
                // The unanswered try before this one committed: read it back.
                let (_, now) = read_back(server, id, token).await;
                assert_eq!(
                    now["version"].as_i64(),
                    Some(version + 1),
                    "order {id}: {now}"
                );
                assert_eq!(now["status"], target, "order {id}: {now}");
                return record(ledger, id, &now);
            }
            Some((status, body)) => panic!("{action} of order {id} answered {status}: {body}"),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn record(ledger: &Ledger, id: i64, order: &Value) {
    let mut orders = ledger.orders.lock().unwrap();
    let acked = orders.get_mut(&id).unwrap();
    acked.status = order["status"].as_str().unwrap().to_string();
    acked.version = order["version"].as_i64().unwrap();
    acked.in_flight = None;
    ledger.acknowledged.fetch_add(1, Ordering::Relaxed);
}

async fn read_back(server: &Server, id: i64, token: &str) -> (u16, Value) {
    loop {
        if let Some((status, body)) = server
            .call(
                reqwest::Method::GET,
                &format!("/api/orders/{id}"),
                token,
                None,
                None,
            )
            .await
        {
            return (status, body["order"].clone());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test]
async fn every_acknowledged_change_survives_sigkills_at_load() {
    let kills = env_number("DISPATCHD_CRASH_KILLS", 4);
    let workers = env_number("DISPATCHD_CRASH_WORKERS", 12);
    let up_ms = env_number("DISPATCHD_CRASH_UP_MS", 750) as u64;
    let mut app = TestApp::spawn_with(
        true,
        &[("DISPATCH__ORDERS__PER_CUSTOMER_PER_MINUTE", "1000000")],
    )
    .await;
    let mut customers = Vec::new();
    for i in 1..=20 {
        let account = format!("customer{i}");
        customers.push((account.clone(), app.token(&account).await));
    }
    let tokens: HashMap<String, String> = customers.iter().cloned().collect();
    let staff = app.token("restaurant1").await;
    let admin = app.token("admin").await;
    let server = Arc::new(Server {
        address: RwLock::new(app.address.clone()),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
    });
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let customers = Arc::new(customers);
    let tasks: Vec<_> = (0..workers)
        .map(|n| {
            tokio::spawn(worker(
                n,
                server.clone(),
                ledger.clone(),
                customers.clone(),
                staff.clone(),
                stop.clone(),
            ))
        })
        .collect();

    let started = Instant::now();
    for kill in 0..kills {
        // Up for half to one and a half times `up_ms`, spread by a fixed
        // sequence so that kills land in every phase of a request.
        let pause = up_ms / 2 + (kill as u64 * 7919) % up_ms.max(1);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        app = app.crash_and_restart().await;
        *server.address.write().unwrap() = app.address.clone();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a worker failed");
    }
    let elapsed = started.elapsed();
    // The last word: one more kill, so what is checked is what the store kept.
    let app = app.crash_and_restart().await;
    *server.address.write().unwrap() = app.address.clone();

    let orders = ledger.orders.lock().unwrap().clone();
    let mut lost = Vec::new();
    for (id, acked) in &orders {
        let (status, now) = read_back(&server, *id, &tokens[&acked.customer]).await;
        let version = now["version"].as_i64().unwrap_or(0);
        let kept = status == 200
            && (version == acked.version && now["status"] == acked.status.as_str()
                || acked.in_flight.is_some() && version == acked.version + 1);
        if !kept {
            lost.push(format!(
                "order {id}: acknowledged {acked:?}, stored ({status}) {now}"
            ));
        }
    }

    // Every key made exactly one order: the store holds as many orders as
    // there were keys, and each key replays the order it named.
    let keys = ledger.keys.lock().unwrap().clone();
    let mut stored = 0;
    let mut before: Option<i64> = None;
    loop {
        let page = match before {
            Some(id) => format!("/api/orders?limit=100&before={id}"),
            None => "/api/orders?limit=100".into(),
        };
        let (_, body) = server
            .call(reqwest::Method::GET, &page, &admin, None, None)
            .await
            .expect("list orders");
        let listed = body["orders"].as_array().unwrap().clone();
        stored += listed.len();
        match listed.last() {
            Some(last) => before = last["id"].as_i64(),
            None => break,
        }
    }
    let duplicates = stored as i64 - keys.len() as i64;

    // Every live order goes on after the restart.
    let mut stuck = Vec::new();
    for (id, acked) in orders
        .iter()
        .filter(|(_, a)| a.status != "CANCELLED" && a.status != "READY_FOR_PICKUP")
        .take(50)
    {
        let (_, now) = read_back(&server, *id, &tokens[&acked.customer]).await;
        let next = STEPS
            .iter()
            .position(|(_, s)| now["status"] == *s)
            .map_or(0, |i| i + 1);
        if let Some((action, _)) = STEPS.get(next) {
            let r = app.act(&staff, *id, action).await;
            if r.status != 200 {
                stuck.push(format!(
                    "order {id}: {action} answered {} {}",
                    r.status, r.body
                ));
            }
        }
    }

    let acknowledged = ledger.acknowledged.load(Ordering::Relaxed);
    println!(
        "crash test: {kills} kills in {:.1} s, {workers} workers, {} orders, {acknowledged} acknowledged changes checked, {} lost, {duplicates} duplicates, {} stuck",
        elapsed.as_secs_f64(),
        orders.len(),
        lost.len(),
        stuck.len()
    );
    assert!(
        lost.is_empty(),
        "lost acknowledged changes:\n{}",
        lost.join("\n")
    );
    assert_eq!(
        duplicates,
        0,
        "{stored} orders stored for {} keys",
        keys.len()
    );
    assert!(
        stuck.is_empty(),
        "live orders that did not go on:\n{}",
        stuck.join("\n")
    );
    assert!(acknowledged > 0);
}
