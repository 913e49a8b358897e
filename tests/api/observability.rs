//! The operations kit against the real server: every metric the Grafana
//! dashboard (config/grafana/dispatchd.json) and the Prometheus alerting
//! rules (config/prometheus/alerts.yml) query is one dispatchd exports, so a
//! renamed metric breaks this test instead of a panel or a page at night.

use crate::helpers::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;

const DASHBOARD: &str = include_str!("../../config/grafana/dispatchd.json");
const ALERTS: &str = include_str!("../../config/prometheus/alerts.yml");
const METRIC_NAMES: &str = include_str!("../../actors/src/metrics.rs");

/// Metrics that appear only after a rare event this test does not provoke;
/// each must still be declared in actors/src/metrics.rs.
const RARE: &[&str] = &[
    // A failed store write (tests/api/outage.rs provokes one).
    "dispatch_store_errors_total",
    // No driver can make the click-to-door limit any more.
    "dispatch_hopeless_orders_total",
    // An offer naming two orders, a widened radius, an ETA moved past the
    // threshold: need several orders or minutes of driving.
    "dispatch_bundled_offers_total",
    "dispatch_radius_widenings_total",
    "dispatch_eta_updates_total",
    // The outbox overflowing, a webhook endpoint disabled.
    "dispatch_outbox_dropped_total",
    "dispatch_webhooks_disabled_total",
    // Only with NATS configured (tests/api/events.rs runs one).
    "dispatch_nats_connected",
    "dispatch_nats_publish_failures_total",
    "dispatch_nats_duplicates_total",
    // Slow or closing readers, rate limits, actor failures.
    "dispatch_ws_location_coalesced_total",
    "dispatch_ws_messages_dropped_total",
    "dispatch_ws_closes_total",
    "dispatch_rate_limited_total",
    "dispatch_actor_restarts_total",
];

/// Exported by Prometheus itself for every target, not by dispatchd.
const FROM_PROMETHEUS: &[&str] = &["up"];

/// The scrape, in one place: as Prometheus does it (the metrics token).
async fn scrape(app: &TestApp) -> String {
    app.metrics_text().await
}

/// Every sample name in a Prometheus text scrape (`x_bucket`, `x_sum`,
/// `x_count` for a histogram `x`).
fn exported_names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The metric names a PromQL expression reads: identifiers starting with
/// `dispatch_` or `process_`, plus the Prometheus-side ones it names.
fn metric_names_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while !rest.is_empty() {
        let start = rest
            .find(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            .unwrap_or(rest.len());
        rest = &rest[start..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let word = &rest[..end];
        // Quoted label values are not metric names; skip past them.
        let quoted = expr[..expr.len() - rest.len()].ends_with('"');
        if !quoted
            && (word.starts_with("dispatch_")
                || word.starts_with("process_")
                || FROM_PROMETHEUS.contains(&word))
        {
            names.push(word.to_owned());
        }
        rest = &rest[end..];
    }
    names
}

/// Every PromQL string of the dashboard: panel targets' `expr`, and the
/// variables' `query`/`definition`.
fn dashboard_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) if s.contains('(') => out.push(s.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// The rules file kept simple enough to read line by line: each rule is a
/// `- alert:` with exactly one single-line `expr:`, and a severity.
fn alert_exprs(yaml: &str) -> Vec<(String, String)> {
    assert!(
        yaml.lines().any(|l| l.trim_end() == "groups:"),
        "no groups: in alerts.yml"
    );
    let mut rules: Vec<(String, Option<String>, bool)> = Vec::new();
    for line in yaml.lines() {
        assert!(!line.contains('\t'), "a tab in alerts.yml: {line:?}");
        let line = line.trim();
        if let Some(name) = line.strip_prefix("- alert:") {
            rules.push((name.trim().to_owned(), None, false));
        } else if let Some(expr) = line.strip_prefix("expr:") {
            let rule = rules.last_mut().expect("an expr: before any alert:");
            assert!(rule.1.is_none(), "{}: two expr: lines", rule.0);
            let expr = expr.trim();
            assert!(
                !expr.is_empty() && expr != "|" && expr != ">",
                "{}: expr must stay on one line",
                rule.0
            );
            rule.1 = Some(expr.to_owned());
        } else if line.starts_with("severity:") {
            rules.last_mut().expect("a severity: before any alert:").2 = true;
        }
    }
    rules
        .into_iter()
        .map(|(name, expr, severity)| {
            assert!(severity, "{name}: no severity label");
            (
                name.clone(),
                expr.unwrap_or_else(|| panic!("{name}: no expr")),
            )
        })
        .collect()
}

/// Brackets that do not pair up are the likeliest typo in a hand-edited expression.
fn assert_balanced(what: &str, expr: &str) {
    let mut open = Vec::new();
    let mut quoted = false;
    for c in expr.chars() {
        match c {
            '"' => quoted = !quoted,
            _ if quoted => {}
            '(' | '{' | '[' => open.push(c),
            ')' | '}' | ']' => {
                let want = match c {
                    ')' => '(',
                    '}' => '{',
                    _ => '[',
                };
                assert_eq!(open.pop(), Some(want), "{what}: unbalanced {expr}");
            }
            _ => {}
        }
    }
    assert!(open.is_empty() && !quoted, "{what}: unbalanced {expr}");
}

/// Drives a little of everything the dashboard shows: a driver socket and
/// positions, an order through confirmation to an assigned driver watched
/// by its customer, a refused transition, a failed login, a webhook attempt.
async fn drive_traffic(app: &TestApp) {
    let admin = app.token("admin").await;
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    app.post(
        "/api/webhooks",
        Some(&admin),
        json!({ "url": format!("http://127.0.0.1:{closed_port}/hook") }),
    )
    .await
    .expect(201);
    app.login("customer1@example.com", "not the password").await;

    let (lat, lon) = RESTAURANT_1_AT;
    let mut driver = TestDriver::online(app, "driver1", (lat, lon + 0.003)).await;
    let customer = app.token("customer1").await;
    let id = app.place_order(&customer).await["id"].as_i64().unwrap();
    let mut watcher = WsClient::connect(app, &customer).await;
    watcher
        .send(json!({ "type": "subscribe", "orderId": id }))
        .await;
    watcher.next_of("snapshot", 5).await;
    let staff = app.token("restaurant1").await;
    app.act(&staff, id, "confirm").await.expect(200);
    // Confirming twice is refused by the lifecycle (counted by reason).
    app.act(&staff, id, "confirm")
        .await
        .expect_error(409, "INVALID_TRANSITION");
    driver.answer_offer(true, 10).await;
    driver.ws.next_of("offer_result", 5).await;
    driver.move_to((lat, lon + 0.002)).await;
    watcher.next_of("driver_location", 5).await;
    app.post(
        "/api/drivers/location",
        Some(&driver.token),
        json!({ "lat": lat, "lon": lon + 0.001 }),
    )
    .await
    .expect(200);
    watcher.next_of("driver_location", 5).await;
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_query_is_exported() {
    let app = TestApp::spawn_with(
        true,
        &[
            ("DISPATCH__DISPATCH__ROUND_INTERVAL_MS", "200"),
            ("DISPATCH__WEBHOOKS__ALLOW_PRIVATE", "true"),
            ("DISPATCH__WEBHOOKS__RETRY_BASE_MS", "100"),
        ],
    )
    .await;
    drive_traffic(&app).await;

    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() > 10));
    let mut exprs: Vec<(String, String)> = Vec::new();
    let mut from_dashboard = Vec::new();
    dashboard_exprs(&dashboard, &mut from_dashboard);
    exprs.extend(
        from_dashboard
            .into_iter()
            .map(|e| ("dashboard".to_owned(), e)),
    );
    let alerts = alert_exprs(ALERTS);
    assert!(alerts.len() >= 6, "{alerts:?}");
    exprs.extend(alerts);

    let mut used = BTreeSet::new();
    for (what, expr) in &exprs {
        assert_balanced(what, expr);
        let names = metric_names_in(expr);
        assert!(!names.is_empty(), "{what}: names no metric: {expr}");
        used.extend(names);
    }
    for rare in RARE {
        assert!(
            METRIC_NAMES.contains(&format!("\"{rare}\"")),
            "{rare} is allowed as rare but actors/src/metrics.rs does not declare it"
        );
    }

    // Some gauges (the outbox backlog) are set by a 5 s upkeep tick.
    let mut missing = Vec::new();
    for _ in 0..40 {
        let exported = exported_names(&scrape(&app).await);
        missing = used
            .iter()
            .filter(|name| !exported.contains(*name))
            .filter(|name| !FROM_PROMETHEUS.contains(&name.as_str()))
            .filter(|name| {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name);
                !RARE.contains(&base)
            })
            .cloned()
            .collect();
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(missing.is_empty(), "queried but not exported: {missing:?}");
    // The check is not vacuous: the core of the dashboard is there.
    for name in [
        "dispatch_fanout_latency_seconds_bucket",
        "dispatch_round_duration_seconds_bucket",
        "dispatch_offers_total",
        "dispatch_orders_active",
        "dispatch_ws_connections",
        "process_resident_memory_bytes",
        "dispatch_outbox_backlog_events",
        "dispatch_webhook_attempts_total",
        "dispatch_core_actors_down",
    ] {
        assert!(used.contains(name), "the dashboard or alerts lost {name}");
    }
}

#[test]
fn the_name_parser_finds_metrics_and_skips_label_values() {
    assert_eq!(
        metric_names_in(
            r#"histogram_quantile(0.99, sum by (le) (rate(dispatch_fanout_latency_seconds_bucket{job="dispatch_x"}[5m]))) > 0 and up == 0"#
        ),
        vec!["dispatch_fanout_latency_seconds_bucket", "up"]
    );
    assert_eq!(
        exported_names("# TYPE a counter\na_total{x=\"1\"} 2\nb 1\n"),
        BTreeSet::from(["a_total".to_owned(), "b".to_owned()])
    );
}
