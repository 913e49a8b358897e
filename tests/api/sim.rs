//! `dispatchd sim` end to end: the built binary simulates a small city
//! against a real server and reports, on its last stdout line, orders that
//! went all the way to the door.

use crate::helpers::TestApp;
use serde_json::Value;
use std::time::Duration;

#[tokio::test]
async fn the_simulator_delivers_orders_and_measures_fan_out_without_errors() {
    let app = TestApp::spawn_with(true, &[("DISPATCH__DISPATCH__ROUND_INTERVAL_MS", "200")]).await;
    // A compact, fast city so that orders finish inside 12 s: six
    // restaurants near the centre, short kitchens, short drives, and
    // driving and cooking at 1000x real time (10 to 25 minutes of prep
    // take 0.6 to 1.5 s).
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatchd"))
        .args(["sim", "--server", &app.address])
        .args(["--drivers", "10", "--customers", "5", "--order-rate", "2"])
        .args(["--location-hz", "2", "--duration", "12", "--json"])
        .args(["--restaurants", "6", "--kitchen-secs", "0.4"])
        .args(["--time-scale", "1000", "--dropoff-km", "1.5"])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(40), run)
        .await
        .expect("the simulator did not stop by itself")
        .expect("run dispatchd sim");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "sim failed:\n{stdout}\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    let report: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}):\n{stdout}\n{stderr}"));

    let count = |key: &str| {
        report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} missing: {report}"))
    };
    assert!(count("ordersPlaced") > 0, "{report}");
    assert!(count("ordersDelivered") > 0, "{report}");
    assert!(count("locationUpdatesReceived") > 0, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{stdout}");
    assert!(
        report["fanoutLatencyMs"]["p99"].as_f64().is_some(),
        "{report}"
    );
    assert!(report["assignSecs"]["p50"].as_f64().is_some(), "{report}");
    assert!(
        report["durationSecs"].as_f64().is_some_and(|d| d >= 12.0),
        "{report}"
    );
}

#[tokio::test]
async fn the_simulator_stops_placing_orders_at_max_orders() {
    let app = TestApp::spawn().await;
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatchd"))
        .args(["sim", "--server", &app.address])
        .args(["--drivers", "2", "--customers", "2", "--order-rate", "50"])
        .args(["--max-orders", "3", "--duration", "2", "--json"])
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
    // 50 a second for 2 s would be about 100 without the cap.
    assert_eq!(report["ordersPlaced"], 3, "{report}");
}

#[tokio::test]
async fn a_bad_max_orders_is_refused_before_anything_starts() {
    for bad in ["-1", "many"] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatchd"))
            .args(["sim", "--server", "http://127.0.0.1:9"])
            .arg(format!("--max-orders={bad}"))
            .output()
            .await
            .expect("run dispatchd sim");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("--max-orders"), "{bad}: {stderr}");
    }
}
