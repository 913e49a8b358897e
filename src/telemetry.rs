//! Logs (tracing, to stderr, text or JSON) and the Prometheus recorder.

use crate::settings::LogSettings;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Installs the log subscriber. `RUST_LOG` wins over `log.level`.
pub fn init_logs(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second init (tests in one process) keeps the first subscriber.
    let _ = if settings.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Latency buckets from 100 µs to 10 s: wide enough for a fan-out hop and a
/// slow store write alike.
const SECONDS_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Installs the global metrics recorder and describes every metric.
pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)?
        .install_recorder()?;
    actors::metrics::describe();
    actors::metrics::describe_realtime();
    metrics::describe_gauge!(
        "process_resident_memory_bytes",
        metrics::Unit::Bytes,
        "Resident memory of the dispatchd process."
    );
    record_process_memory();
    Ok(handle)
}

/// The standard process gauge the capacity tools read: resident memory, from
/// /proc/self/statm (Linux; elsewhere it stays unset).
pub fn record_process_memory() {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return;
    };
    let Some(resident_pages) = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<f64>().ok())
    else {
        return;
    };
    // Every Linux platform dispatchd runs on uses 4 KiB pages.
    metrics::gauge!("process_resident_memory_bytes").set(resident_pages * 4096.0);
}
