//! `dispatchd replay` end to end: the real binary replays an instance in
//! the public benchmark's format, writes the solution files, and the
//! project's checker (`--check`) finds every rule kept. The CI case writes
//! its own small instance; the shared Grubhub instances are replayed when
//! `../shared/mdrp/` is there.

use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join("dispatchd-tests")
        .join(format!("{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Runs `dispatchd replay`; returns (success, stdout, stderr).
fn replay(instance: &Path, out: &Path) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_dispatchd"))
        .args(["replay", "--json", "--check", "--mdrp"])
        .arg(instance)
        .arg("--out")
        .arg(out)
        .output()
        .expect("dispatchd runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn last_json(stdout: &str) -> Value {
    let line = stdout.lines().last().expect("some output");
    serde_json::from_str(line).expect("the last line is JSON")
}

/// A small city in the benchmark's format: four restaurants, 48 orders over
/// two hours (pairs placed together at one restaurant, with nearby
/// customers, to be bundled), six couriers, and one customer 40 km out whom
/// nobody can reach within 90 minutes.
fn write_small_instance(dir: &Path) {
    let restaurants = [(2000, 2000), (6000, 2000), (2000, 6000), (6000, 6000)];
    let mut text = String::from("restaurant\tx\ty\n");
    for (i, (x, y)) in restaurants.iter().enumerate() {
        let _ = writeln!(text, "r{}\t{x}\t{y}", i + 1);
    }
    std::fs::write(dir.join("restaurants.txt"), text).expect("written");
    let mut text = String::from("order\tx\ty\tplacement_time\trestaurant\tready_time\n");
    for i in 0..48 {
        let r = (i / 2) % 4;
        let (rx, ry) = restaurants[r];
        let placed = 600 + (i / 2) as i64 * 5;
        let (x, y) = (rx + 500 + (i % 2) as i64 * 300, ry + 800);
        let _ = writeln!(
            text,
            "o{}\t{x}\t{y}\t{placed}\tr{}\t{}",
            i + 1,
            r + 1,
            placed + 12
        );
    }
    let _ = writeln!(text, "o49\t42000\t2000\t650\tr1\t660");
    std::fs::write(dir.join("orders.txt"), text).expect("written");
    let mut text = String::from("courier\tx\ty\ton_time\toff_time\n");
    for c in 0..6 {
        let _ = writeln!(text, "c{}\t{}\t4000\t590\t780", c + 1, 1000 + c * 1000);
    }
    std::fs::write(dir.join("couriers.txt"), text).expect("written");
    std::fs::write(
        dir.join("instance_parameters.txt"),
        "meters_per_minute\tpickup service minutes\tdropoff service minutes\ttarget click-to-door\tmaximum click-to-door\tpay per order\tguaranteed pay per hour\n320\t4\t4\t40\t90\t10\t15\n",
    )
    .expect("written");
    std::fs::write(dir.join("instance_characteristics.txt"), "none\n").expect("written");
}

#[test]
fn a_small_instance_replays_feasibly_with_bundles_and_drops_the_hopeless_order() {
    let dir = scratch("small-instance");
    write_small_instance(&dir);
    let out = dir.join("solution");
    let (ok, stdout, stderr) = replay(&dir, &out);
    assert!(ok, "replay failed: {stderr}\n{stdout}");
    assert!(stdout.contains("check: feasible"), "{stdout}");
    let report = last_json(&stdout);
    assert_eq!(
        report["instance"],
        dir.file_name().unwrap().to_str().unwrap()
    );
    assert_eq!(report["orders"], 49);
    assert_eq!(report["delivered"], 48, "{report}");
    assert_eq!(report["hopeless"], 1, "{report}");
    assert!(report["clickToDoorMin"]["max"].as_f64().unwrap() <= 90.0);
    assert!(report["clickToDoorMin"]["mean"].as_f64().unwrap() > 0.0);
    assert!(report["readyToPickupMin"]["mean"].is_number());
    assert!(report["overTargetShare"].is_number());
    assert!(report["wallSecs"].is_number());
    assert!(
        report["ordersPerBundle"].as_f64().unwrap() > 1.0,
        "pairs of one restaurant should be bundled: {report}"
    );
    let assignments =
        std::fs::read_to_string(out.join("solution_info_assignments.txt")).expect("written");
    assert!(
        assignments
            .lines()
            .skip(1)
            .any(|l| l.split(' ').count() > 4)
    );
    assert!(!assignments.contains("o49"));
    let orders = std::fs::read_to_string(out.join("solution_info_orders.txt")).expect("written");
    assert_eq!(
        orders.lines().next(),
        Some("order placement_time ready_time pickup_time dropoff_time courier")
    );
    let moves = std::fs::read_to_string(out.join("solution_info_couriers.txt")).expect("written");
    assert!(
        moves
            .lines()
            .nth(1)
            .is_some_and(|l| l.split(' ').nth(2) == Some("0"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_or_malformed_instance_is_a_clear_error() {
    let dir = scratch("bad-instance");
    let (ok, _, stderr) = replay(&dir.join("absent"), &dir.join("out"));
    assert!(!ok);
    assert!(stderr.contains("cannot read"), "{stderr}");

    write_small_instance(&dir);
    std::fs::write(
        dir.join("orders.txt"),
        "order\tx\ty\tplacement_time\trestaurant\tready_time\no1\t1\t2\tsoon\tr1\t5\n",
    )
    .expect("written");
    let (ok, _, stderr) = replay(&dir, &dir.join("out"));
    assert!(!ok);
    assert!(stderr.contains("orders.txt:2"), "{stderr}");
    std::fs::write(
        dir.join("orders.txt"),
        "order\tx\ty\tplacement_time\trestaurant\tready_time\no1\t1\t2\t5\tr9\t5\n",
    )
    .expect("written");
    let (ok, _, stderr) = replay(&dir, &dir.join("out"));
    assert!(!ok);
    assert!(stderr.contains("unknown restaurant"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shared Grubhub instances, when present (they are not part of the
/// repository): the smallest two are replayed and checked here; all eight
/// are measured with release builds (benches/README.md).
#[test]
fn the_shared_benchmark_instances_replay_feasibly() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/mdrp");
    if !shared.is_dir() {
        eprintln!(
            "skipping: {} is absent (the Grubhub MDRP instances live outside the repository)",
            shared.display()
        );
        return;
    }
    for name in ["1o50t100s1p100", "1r50t100s2p100"] {
        let instance = shared.join(name);
        if !instance.is_dir() {
            eprintln!("skipping {name}: not in {}", shared.display());
            continue;
        }
        let out = scratch(name);
        let (ok, stdout, stderr) = replay(&instance, &out);
        assert!(ok, "{name}: {stderr}\n{stdout}");
        let report = last_json(&stdout);
        assert!(report["clickToDoorMin"]["max"].as_f64().unwrap() <= 90.0);
        assert!(report["delivered"].as_u64().unwrap() > 200, "{report}");
        let _ = std::fs::remove_dir_all(&out);
    }
}
