//! `dispatchd sim --server URL1,URL2`: the simulator's side of a cluster,
//! against real server processes. Cross-node delivery needs the cluster's
//! forwarding; what is tested here is what the simulator owns: the node
//! list is checked before anything starts, and clients whose node dies
//! reconnect to another one.

use crate::helpers::*;
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Runs `dispatchd sim` with `args` to its end: (exit success, stderr).
async fn sim_refusal(args: &[&str]) -> (bool, String) {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatchd"))
        .arg("sim")
        .args(args)
        .args(["--duration", "2"])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the simulator did not stop by itself")
        .expect("run dispatchd sim");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A local URL where nothing listens (a port just given up).
fn nobody_listening() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn a_node_list_with_a_bad_or_dead_node_is_refused_naming_that_node() {
    let app = TestApp::spawn().await;
    let dead = nobody_listening();
    let cases = [
        (
            format!("{},{dead}", app.address),
            format!("nothing answers at {dead}"),
        ),
        (
            format!("{dead},{}", app.address),
            format!("nothing answers at {dead}"),
        ),
        (
            format!("{},ftp://127.0.0.1:21", app.address),
            "\"ftp://127.0.0.1:21\" must be an http:// URL".to_string(),
        ),
        (
            format!("{},,{}", app.address, app.address),
            "has an empty entry".to_string(),
        ),
        (
            format!("{},{}/", app.address, app.address),
            format!("names {} twice", app.address),
        ),
    ];
    for (server, expected) in &cases {
        let (ok, stderr) = sim_refusal(&["--server", server]).await;
        assert!(!ok, "--server {server} was accepted:\n{stderr}");
        assert!(
            stderr.contains(expected.as_str()),
            "--server {server}: {stderr}"
        );
        // Refused before anything started.
        assert!(!stderr.contains("sim: setting up"), "{stderr}");
    }
}

/// What a node dying mid-run may cost the simulator: sockets that end,
/// frames that do not go out, requests that cannot reach it, and the
/// orders that node's engine held (a second, independent node on the same
/// database does not take those over; the cluster does).
const DEAD_NODE_ERRORS: &[&str] = &[
    "WS_DROPPED",
    "WS_SEND_FAILED",
    "CONNECT_FAILED",
    "HTTP_FAILED",
    "TIMEOUT",
];

#[tokio::test]
async fn clients_of_a_node_killed_mid_run_reconnect_to_another_node() {
    if std::env::var("DISPATCHD_TEST_POSTGRES").map_or(true, |url| url.is_empty()) {
        eprintln!("skipped: two nodes on one database need Postgres (set DISPATCHD_TEST_POSTGRES)");
        return;
    }
    // Two ordinary nodes on one database: the first loads the demo city.
    let db = TestDb::fresh().await;
    let fast = [("DISPATCH__DISPATCH__ROUND_INTERVAL_MS", "200")];
    let mut a = TestApp::spawn_on(db.clone(), true, &fast).await;
    let b = TestApp::spawn_on(db, false, &fast).await;
    let mut sim = tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatchd"))
        .args(["sim", "--server", &format!("{},{}", a.address, b.address)])
        .args(["--drivers", "6", "--customers", "4", "--order-rate", "2"])
        .args(["--location-hz", "2", "--duration", "12", "--json"])
        .args(["--restaurants", "4", "--kitchen-secs", "0.4"])
        .args(["--time-scale", "100", "--dropoff-km", "1.5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start dispatchd sim");
    let mut stderr = BufReader::new(sim.stderr.take().expect("stderr")).lines();
    let mut log = String::new();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = stderr.next_line().await {
            log.push_str(&line);
            log.push('\n');
            if line.starts_with("sim: ready") {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(ready, Ok(true)),
        "the simulator did not get ready:\n{log}"
    );
    // Long enough for orders to be under way on both nodes.
    tokio::time::sleep(Duration::from_secs(4)).await;
    // 6 drivers, 4 customers and 4 restaurants, round-robin over two nodes.
    let on_a = a.metric("dispatch_ws_connections").await;
    let on_b = b.metric("dispatch_ws_connections").await;
    assert_eq!((on_a, on_b), (7.0, 7.0), "sockets per node\n{log}");
    a.kill();
    let rest = tokio::spawn(async move {
        let mut rest = String::new();
        while let Ok(Some(line)) = stderr.next_line().await {
            rest.push_str(&line);
            rest.push('\n');
        }
        rest
    });
    let output = tokio::time::timeout(Duration::from_secs(40), sim.wait_with_output())
        .await
        .expect("the simulator did not stop by itself")
        .expect("run dispatchd sim");
    log.push_str(&rest.await.unwrap_or_default());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "sim failed:\n{stdout}\n{log}");
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}):\n{stdout}\n{log}"));

    // Every party of the dead node, once: the next node took each.
    assert_eq!(report["reconnections"], 7, "{stdout}");
    let errors = report["errors"].as_object().expect("errors");
    let unexpected: Vec<&String> = errors
        .keys()
        .filter(|code| !DEAD_NODE_ERRORS.contains(&code.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected errors {unexpected:?}:\n{stdout}"
    );
    // Every party of the dead node found a home: none was left without a
    // socket at the end.
    assert_eq!(
        report["connections"],
        report["drivers"].as_u64().unwrap_or(0)
            + report["customers"].as_u64().unwrap_or(0)
            + report["restaurants"].as_u64().unwrap_or(0),
        "{stdout}"
    );
    assert!(report["fanoutCrossNodeLatencyMs"].is_object(), "{report}");
    // Customers of the dead node watching orders re-subscribed on the
    // other node and had their snapshots (two customers were on it, each
    // with an order or two under way at two orders a second).
    assert!(
        report["customerResumeMs"]["samples"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{report}"
    );
    // The reconnected parties kept working on the surviving node.
    assert!(
        report["locationUpdatesSent"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{report}"
    );
}

#[tokio::test]
async fn with_one_node_the_report_has_no_cluster_figures() {
    let app = TestApp::spawn().await;
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatchd"))
        .args(["sim", "--server", &app.address])
        .args([
            "--drivers",
            "2",
            "--customers",
            "2",
            "--duration",
            "2",
            "--json",
        ])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the simulator did not stop by itself")
        .expect("run dispatchd sim");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "sim failed:\n{stdout}");
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}):\n{stdout}"));
    for key in [
        "reconnections",
        "fanoutCrossNodeLatencyMs",
        "customerResumeMs",
    ] {
        assert!(
            report.get(key).is_none(),
            "{key} in a one-node report: {report}"
        );
    }
    assert!(stdout.contains("fan-out latency (ms)"), "{stdout}");
    assert!(!stdout.contains("reconnections"), "{stdout}");
}
