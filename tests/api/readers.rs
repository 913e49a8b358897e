//! Slow and dead readers: subscribers that stop reading and never close,
//! and subscribers whose process is killed (SIGKILL: no close frame), while
//! a driver streams positions to a watcher that does read. The server must
//! drop the dead ones by itself, its memory must stay bounded, and the
//! reading watcher must keep getting positions on time.
//!
//! CI runs it small; the long run (`benches/load/readers.sh`,
//! benches/README.md) sets `DISPATCHD_READERS_STALLED`,
//! `DISPATCHD_READERS_KILLED` and `DISPATCHD_READERS_SECS`, and points
//! `DISPATCHD_TEST_BIN` at a release build.

use crate::helpers::*;
use futures::StreamExt;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Environment of the re-executed test binary that holds the sockets which
/// are then killed: "<ws url> <order id> <count>"; the token comes in
/// `DISPATCHD_READERS_TOKEN`.
const CHILD: &str = "DISPATCHD_READERS_CHILD";
const CHILD_TEST: &str = "readers::sockets_held_by_a_process_that_is_then_killed";
/// Distinct positions the driver cycles through; each position names the
/// send it came from, for the latency of its arrival.
const POSITIONS: usize = 200;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn position(i: usize) -> (f64, f64) {
    (
        RESTAURANT_1_AT.0 + 0.001 + (i % POSITIONS) as f64 * 0.0001,
        RESTAURANT_1_AT.1,
    )
}

fn position_index(lat: f64) -> usize {
    ((lat - RESTAURANT_1_AT.0 - 0.001) / 0.0001).round() as usize % POSITIONS
}

/// The server's resident memory, from /proc (kB).
fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A subscriber of `order` that reads the snapshot and then never again:
/// a small receive buffer, no pongs, no close.
async fn stalled_reader(address: &str, token: &str, order: i64) -> Option<WsClient> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.set_recv_buffer_size(4096).ok()?;
    let stream = socket.connect(address.parse().ok()?).await.ok()?;
    let url = format!("ws://{address}/ws?token={token}");
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (socket, _) = tokio_tungstenite::client_async(url, stream).await.ok()?;
    let mut ws = WsClient { socket };
    ws.send(json!({ "type": "subscribe", "orderId": order }))
        .await;
    Some(ws)
}

/// Sends positions at `hz` until `stop`, noting when each was sent, and
/// reads its own socket meanwhile (so it answers the server's pings).
async fn drive(
    mut driver: TestDriver,
    hz: u64,
    stop: CancellationToken,
    sent: Arc<Mutex<HashMap<usize, Instant>>>,
    log: Arc<Mutex<Vec<Instant>>>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / hz));
    let mut i = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                sent.lock().unwrap().insert(i % POSITIONS, Instant::now());
                log.lock().unwrap().push(Instant::now());
                driver.move_to(position(i)).await;
                i += 1;
            }
            frame = driver.ws.socket.next() => {
                if frame.is_none() {
                    panic!("the server closed the driver's socket");
                }
            }
        }
    }
}

/// When each position reached the reading watcher, and its latency (ms).
async fn watch(
    mut ws: WsClient,
    stop: CancellationToken,
    sent: Arc<Mutex<HashMap<usize, Instant>>>,
    seen: Arc<Mutex<Vec<(Instant, f64)>>>,
) {
    while !stop.is_cancelled() {
        let Some(m) = ws.next_within(Duration::from_millis(200)).await else {
            continue;
        };
        let Some(lat) = m["location"]["lat"].as_f64() else {
            continue;
        };
        if m["type"] == "driver_location"
            && let Some(at) = sent.lock().unwrap().get(&position_index(lat))
        {
            let now = Instant::now();
            seen.lock()
                .unwrap()
                .push((now, (now - *at).as_secs_f64() * 1000.0));
        }
    }
}

/// Count and p99 of the latencies seen in `from..to`.
fn window(seen: &[(Instant, f64)], from: Instant, to: Instant) -> (usize, f64) {
    let mut latencies: Vec<f64> = seen
        .iter()
        .filter(|(at, _)| (from..to).contains(at))
        .map(|(_, ms)| *ms)
        .collect();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let p99 = match latencies.len() {
        0 => f64::NAN,
        n => latencies[((n as f64 * 0.99).ceil() as usize).max(1) - 1],
    };
    (latencies.len(), p99)
}

/// One series of the server's metrics; retried, since the server is busy
/// with thousands of sockets when it is asked.
async fn scrape(app: &TestApp, series: &str) -> f64 {
    let client = reqwest::Client::new();
    for _ in 0..10 {
        if let Ok(r) = client
            .get(format!("{}/metrics", app.address))
            .bearer_auth(METRICS_TOKEN)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            && let Ok(text) = r.text().await
        {
            return text
                .lines()
                .filter(|l| l.starts_with(series))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("GET /metrics failed ten times");
}

const CUSTOMER_SOCKETS: &str = "dispatch_ws_connections{role=\"customer\"}";

// Threads of its own for the driver and the watcher, so that opening
// thousands of sockets in this process does not delay them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_and_killed_readers_are_dropped_memory_stays_bounded_and_a_reader_keeps_its_pace() {
    let stalled_n = env_number("DISPATCHD_READERS_STALLED", 150);
    let killed_n = env_number("DISPATCHD_READERS_KILLED", 100);
    let secs = env_number("DISPATCHD_READERS_SECS", 6) as u64;
    let cap = (stalled_n + killed_n + 16).to_string();
    let app = TestApp::spawn_with(
        true,
        &[
            ("DISPATCH__DISPATCH__ROUND_INTERVAL_MS", "200"),
            ("DISPATCH__WS__MESSAGES_PER_SEC", "1000"),
            ("DISPATCH__WS__MAX_SOCKETS_PER_USER", &cap),
            ("DISPATCH__WS__PING_INTERVAL_SECS", "1"),
            ("DISPATCH__WS__IDLE_TIMEOUT_SECS", "3"),
            ("DISPATCH__WS__SEND_TIMEOUT_SECS", "2"),
        ],
    )
    .await;
    let pid = app.pid();
    let address = app.address.trim_start_matches("http://").to_string();
    let customer = app.token("customer1").await;
    let mut driver = TestDriver::online(&app, "driver1", position(0)).await;
    let order = confirmed_order(&app, &customer).await;
    assert_eq!(driver.answer_offer(true, 10).await["orderId"], order);
    assert_eq!(
        driver.ws.next_of("offer_result", 5).await["result"],
        "assigned"
    );
    let mut watcher = WsClient::connect(&app, &customer).await;
    watcher
        .send(json!({ "type": "subscribe", "orderId": order }))
        .await;
    watcher.next_of("snapshot", 5).await;

    // The driver streams and the watcher reads from here to the end.
    let stop = CancellationToken::new();
    let sent = Arc::new(Mutex::new(HashMap::new()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::new(Mutex::new(Vec::new()));
    let driving = tokio::spawn(drive(driver, 20, stop.clone(), sent.clone(), log.clone()));
    let watching = tokio::spawn(watch(watcher, stop.clone(), sent.clone(), seen.clone()));
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = rss_kb(pid);
    let sockets_before = scrape(&app, CUSTOMER_SOCKETS).await;
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kb(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // The readers that stop: in this process, never polled again.
    let opening = Instant::now();
    let stalled: Vec<WsClient> = futures::stream::iter(0..stalled_n)
        .map(|_| stalled_reader(&address, &customer, order))
        .buffer_unordered(64)
        .filter_map(|ws| async { ws })
        .collect()
        .await;
    // The readers that vanish: another process opens them and is killed.
    let mut holder = std::process::Command::new(std::env::current_exe().unwrap())
        .args([CHILD_TEST, "--exact", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(
            CHILD,
            format!(
                "{} {order} {killed_n}",
                app.address.replacen("http", "ws", 1)
            ),
        )
        .env("DISPATCHD_READERS_TOKEN", &customer)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the holding process");
    let out = holder.stdout.take().unwrap();
    let holding = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            // libtest's "test ... " may begin the same line.
            .find_map(|l| l.rsplit_once("holding ")?.1.parse::<usize>().ok())
    })
    .await
    .unwrap()
    .expect("the holding process opened no sockets");
    let opened = scrape(&app, CUSTOMER_SOCKETS).await;
    let rss_all_open = rss_kb(pid);
    holder.kill().unwrap();
    holder.wait().unwrap();
    let killed_at = Instant::now();

    // Until every stalled and killed socket was dropped by the server, and
    // then `secs` more of positions.
    let mut left = f64::MAX;
    for _ in 0..(secs * 10 + 100) {
        left = scrape(&app, CUSTOMER_SOCKETS).await;
        if left <= sockets_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dropped_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let end = Instant::now();
    stop.cancel();
    driving.await.unwrap();
    watching.await.unwrap();
    sampler.abort();
    let rss_after = rss_kb(pid);
    let peak = peak.load(Ordering::Relaxed);
    let dead_closes = scrape(&app, "dispatch_ws_closes_total{code=\"1001\"}").await;
    let seen = seen.lock().unwrap().clone();
    let (n_before, p99_before) = window(&seen, t0, opening);
    let (n_opening, p99_opening) = window(&seen, opening, killed_at);
    let (n_dying, p99_dying) = window(&seen, killed_at, dropped_at);
    let (n_after, p99_after) = window(&seen, dropped_at, end);
    let log = log.lock().unwrap().clone();
    let sent_in =
        |from: Instant, to: Instant| log.iter().filter(|at| (from..to).contains(*at)).count();
    let sent_opening = sent_in(opening, killed_at);
    let (sent_dying, sent_after) = (sent_in(killed_at, dropped_at), sent_in(dropped_at, end));
    let connected = stalled.len();
    println!(
        "readers: {connected} stalled + {holding} killed sockets ({opened} customer sockets open), \
         opened in {:.1} s, all dropped {:.1} s after the kill ({dead_closes} closed as dead); \
         RSS {} MB before, {} MB all open, {} MB peak, {} MB after ({:.1} kB per socket at peak); \
         watcher positions received/sent, p99: {n_before}/{}, {p99_before:.1} ms before; \
         {n_opening}/{sent_opening}, {p99_opening:.1} ms while opening; \
         {n_dying}/{sent_dying}, {p99_dying:.1} ms until all were dropped; \
         {n_after}/{sent_after}, {p99_after:.1} ms after",
        killed_at.duration_since(opening).as_secs_f64(),
        dropped_at.duration_since(killed_at).as_secs_f64(),
        rss_before / 1024,
        rss_all_open / 1024,
        peak / 1024,
        rss_after / 1024,
        peak.saturating_sub(rss_before) as f64 / (connected + holding).max(1) as f64,
        sent_in(t0, opening),
    );
    drop(stalled);

    assert_eq!(connected, stalled_n, "some stalled readers never connected");
    assert_eq!(holding, killed_n);
    assert!(
        left <= sockets_before,
        "{left} customer sockets still open, {sockets_before} before"
    );
    // Each stalled reader stopped answering pings: the server gave up on it.
    assert!(
        dead_closes >= stalled_n as f64,
        "{dead_closes} closed as dead"
    );
    // Bounded: a socket costs its buffers, not what was sent to it.
    let budget_kb = 20 * 1024 + 64 * (stalled_n + killed_n) as u64;
    assert!(
        peak.saturating_sub(rss_before) < budget_kb,
        "RSS grew {} kB for {} sockets",
        peak - rss_before,
        stalled_n + killed_n
    );
    // The reading watcher kept its pace all along: about every position
    // sent arrived (some may be coalesced while the machine is busy
    // opening sockets), none waited for the dead.
    assert!(
        (n_opening + n_dying) * 10 >= (sent_opening + sent_dying) * 6,
        "the watcher got {} of {} positions while readers stalled and died",
        n_opening + n_dying,
        sent_opening + sent_dying
    );
    assert!(
        n_after * 10 >= sent_after * 6,
        "the watcher got {n_after} of {sent_after} positions afterwards"
    );
    assert!(
        p99_opening.max(p99_dying) < 1000.0,
        "fan-out p99 {p99_opening:.1} ms, {p99_dying:.1} ms"
    );
}

/// Not a test of its own: the process the test above starts and kills.
/// It opens the sockets, subscribes them, says so, and waits to die.
#[tokio::test]
#[ignore = "started by the stalled-and-killed readers test"]
async fn sockets_held_by_a_process_that_is_then_killed() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let token = std::env::var("DISPATCHD_READERS_TOKEN").unwrap();
    let mut parts = spec.split(' ');
    let (url, order, count) = (
        parts.next().unwrap().to_string(),
        parts.next().unwrap().parse::<i64>().unwrap(),
        parts.next().unwrap().parse::<usize>().unwrap(),
    );
    let held: Vec<_> = futures::stream::iter(0..count)
        .map(|_| {
            let url = format!("{url}/ws?token={token}");
            async move {
                let (socket, _) = tokio_tungstenite::connect_async(url).await.ok()?;
                let mut ws = WsClient { socket };
                ws.send(json!({ "type": "subscribe", "orderId": order }))
                    .await;
                ws.next_of("snapshot", 10).await;
                Some(ws)
            }
        })
        .buffer_unordered(64)
        .filter_map(|ws| async { ws })
        .collect()
        .await;
    println!("holding {}", held.len());
    tokio::time::sleep(Duration::from_secs(600)).await;
}
