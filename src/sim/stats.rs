//! What the simulator measures, from the client side: counters, latency
//! samples, errors by code, and the reports built from them.
//!
//! Everything here is shared by every simulated party, so counters are
//! atomics and the sample sets sit behind short-held mutexes.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Samples kept per measurement. Past this a reservoir keeps a uniform
/// random subset, so a long run's memory stays bounded (8 bytes a sample)
/// and its percentiles stay unbiased.
const MAX_SAMPLES: usize = 4_000_000;
/// Samples kept for the progress line's window, which is cleared each time.
const MAX_WINDOW: usize = 100_000;

#[derive(Default)]
pub struct Stats {
    pub locations_sent: AtomicU64,
    pub locations_received: AtomicU64,
    pub orders_placed: AtomicU64,
    pub orders_assigned: AtomicU64,
    pub orders_picked_up: AtomicU64,
    pub orders_delivered: AtomicU64,
    /// Orders a driver still carried from an earlier run, and took on.
    pub orders_resumed: AtomicU64,
    pub offers: AtomicU64,
    pub offers_accepted: AtomicU64,
    /// Offers naming more than one order (a bundle).
    pub offers_bundled: AtomicU64,
    /// WebSocket connections open right now.
    pub connections: AtomicI64,
    /// Sockets reopened on another node after their node died.
    pub reconnections: AtomicU64,
    /// Positions from a driver on the customer's own node.
    fanout_ms: Mutex<Samples>,
    /// Positions from a driver on another node (cluster forwarding).
    fanout_cross_node_ms: Mutex<Samples>,
    /// From a customer's socket ending to the snapshots of every order it
    /// re-subscribed to on another node.
    customer_resume_ms: Mutex<Samples>,
    assign_secs: Mutex<Samples>,
    errors: Mutex<BTreeMap<String, ErrorCount>>,
}

struct ErrorCount {
    count: u64,
    /// The first occurrence's detail, so a report can say what went wrong.
    example: String,
}

impl Stats {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn connections_now(&self) -> i64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Counts one error under `code`; `detail` is kept for the first one.
    pub fn error(&self, code: &str, detail: impl FnOnce() -> String) {
        let mut errors = lock(&self.errors);
        match errors.get_mut(code) {
            Some(entry) => entry.count += 1,
            None => {
                errors.insert(
                    code.to_string(),
                    ErrorCount {
                        count: 1,
                        example: detail(),
                    },
                );
            }
        }
    }

    pub fn error_total(&self) -> u64 {
        lock(&self.errors).values().map(|e| e.count).sum()
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        lock(&self.errors)
            .iter()
            .map(|(code, e)| (code.clone(), e.count))
            .collect()
    }

    /// (code, count, first detail), for the human report.
    pub fn error_examples(&self) -> Vec<(String, u64, String)> {
        lock(&self.errors)
            .iter()
            .map(|(code, e)| (code.clone(), e.count, e.example.clone()))
            .collect()
    }

    /// A `driver_location` reached a customer, `latency_ms` after the
    /// driver sent it (`None`: not a fan-out sample); `cross_node` when the
    /// driver's socket is on another node than the customer's.
    pub fn location_received(&self, latency_ms: Option<f64>, cross_node: bool) {
        Self::add(&self.locations_received);
        if let Some(latency_ms) = latency_ms {
            let samples = if cross_node {
                &self.fanout_cross_node_ms
            } else {
                &self.fanout_ms
            };
            lock(samples).record(latency_ms.max(0.0));
        }
    }

    /// A customer had every order it watched back, `ms` after its socket
    /// ended.
    pub fn customer_resumed(&self, ms: f64) {
        lock(&self.customer_resume_ms).record(ms.max(0.0));
    }

    /// A customer first saw a driver on an order, `secs` after it was
    /// confirmed (`None`: the order showed no confirmation time).
    pub fn order_assigned(&self, secs: Option<f64>) {
        Self::add(&self.orders_assigned);
        if let Some(secs) = secs {
            lock(&self.assign_secs).record(secs.max(0.0));
        }
    }

    pub fn fanout(&self) -> Summary {
        lock(&self.fanout_ms).summary()
    }

    pub fn fanout_cross_node(&self) -> Summary {
        lock(&self.fanout_cross_node_ms).summary()
    }

    pub fn customer_resume(&self) -> Summary {
        lock(&self.customer_resume_ms).summary()
    }

    pub fn assignment(&self) -> Summary {
        lock(&self.assign_secs).summary()
    }

    /// Fan-out latency since the last call, same-node and cross-node
    /// together, for the progress line.
    pub fn take_fanout_window(&self) -> Summary {
        let mut window = std::mem::take(&mut lock(&self.fanout_ms).window);
        window.append(&mut lock(&self.fanout_cross_node_ms).window);
        Summary::of(window)
    }
}

/// Poisoning only means another task panicked mid-update of a counter map;
/// the numbers are still worth reporting.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Samples {
    values: Vec<f64>,
    window: Vec<f64>,
    seen: u64,
    /// xorshift state for the reservoir; any non-zero seed will do.
    state: u64,
}

impl Default for Samples {
    fn default() -> Self {
        Samples {
            values: Vec::new(),
            window: Vec::new(),
            seen: 0,
            state: 0x9E37_79B9_7F4A_7C15,
        }
    }
}

impl Samples {
    fn record(&mut self, value: f64) {
        self.seen += 1;
        if self.values.len() < MAX_SAMPLES {
            self.values.push(value);
        } else {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let slot = self.state % self.seen;
            if let Some(kept) = self.values.get_mut(slot as usize) {
                *kept = value;
            }
        }
        if self.window.len() < MAX_WINDOW {
            self.window.push(value);
        }
    }

    fn summary(&self) -> Summary {
        let mut summary = Summary::of(self.values.clone());
        summary.count = self.seen;
        summary
    }
}

/// Percentiles of a sample set; `None` when there were no samples.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub count: u64,
    sorted: Vec<f64>,
}

impl Summary {
    fn of(mut values: Vec<f64>) -> Summary {
        values.sort_by(f64::total_cmp);
        Summary {
            count: values.len() as u64,
            sorted: values,
        }
    }

    /// Nearest-rank percentile, `q` in [0, 1].
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.sorted.len();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.sorted.get(rank - 1).copied()
    }

    pub fn max(&self) -> Option<f64> {
        self.sorted.last().copied()
    }
}

/// Rounds for the report: microsecond-level precision is noise here.
pub fn round3(value: Option<f64>) -> Option<f64> {
    value.map(|v| (v * 1000.0).round() / 1000.0)
}

/// `fanoutLatencyMs` in the JSON report.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencyReport {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
    pub samples: u64,
}

impl From<&Summary> for LatencyReport {
    fn from(s: &Summary) -> Self {
        LatencyReport {
            p50: round3(s.quantile(0.5)),
            p99: round3(s.quantile(0.99)),
            p999: round3(s.quantile(0.999)),
            max: round3(s.max()),
            samples: s.count,
        }
    }
}

/// `assignSecs` in the JSON report.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignReport {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub samples: u64,
}

impl From<&Summary> for AssignReport {
    fn from(s: &Summary) -> Self {
        AssignReport {
            p50: round3(s.quantile(0.5)),
            p99: round3(s.quantile(0.99)),
            max: round3(s.max()),
            samples: s.count,
        }
    }
}

/// The city run's result: the last line of stdout with `--json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CityReport {
    pub server: String,
    pub duration_secs: f64,
    pub drivers: usize,
    pub customers: usize,
    pub restaurants: usize,
    pub location_updates_sent: u64,
    pub location_updates_sent_per_sec: f64,
    pub location_updates_received: u64,
    /// Received (fan-out at customers) per second.
    pub location_updates_per_sec: f64,
    /// Same-node positions only when there are several nodes.
    pub fanout_latency_ms: LatencyReport,
    /// With several nodes: positions whose driver is on another node than
    /// the customer (absent with one node, so that report is unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fanout_cross_node_latency_ms: Option<LatencyReport>,
    pub orders_placed: u64,
    pub orders_assigned: u64,
    pub orders_picked_up: u64,
    pub orders_delivered: u64,
    /// Of those picked up or delivered: orders left by an earlier run.
    pub orders_resumed: u64,
    pub assign_secs: AssignReport,
    pub offers: u64,
    pub offers_accepted: u64,
    pub offers_bundled: u64,
    pub errors: BTreeMap<String, u64>,
    /// WebSocket connections open when the run ended.
    pub connections: i64,
    /// With several nodes: sockets reopened on another node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnections: Option<u64>,
    /// With several nodes: per reconnected customer, from its socket
    /// ending to the snapshots of the orders it re-subscribed to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_resume_ms: Option<LatencyReport>,
}

/// The connection-capacity run's result.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdleReport {
    pub server: String,
    pub duration_secs: f64,
    pub connections_requested: usize,
    pub connections_held: i64,
    pub connections: i64,
    pub server_rss_bytes_before: Option<u64>,
    pub server_rss_bytes_after: Option<u64>,
    pub bytes_per_connection: Option<f64>,
    pub errors: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Summary::of((1..=1000).rev().map(f64::from).collect());
        assert_eq!(s.quantile(0.5), Some(500.0));
        assert_eq!(s.quantile(0.99), Some(990.0));
        assert_eq!(s.quantile(0.999), Some(999.0));
        assert_eq!(s.max(), Some(1000.0));
        assert_eq!(Summary::of(vec![]).quantile(0.5), None);
        assert_eq!(Summary::of(vec![7.0]).quantile(0.999), Some(7.0));
    }

    #[test]
    fn the_reservoir_keeps_memory_bounded_and_counts_everything() {
        let mut samples = Samples {
            values: vec![0.0; MAX_SAMPLES],
            seen: MAX_SAMPLES as u64,
            ..Samples::default()
        };
        for _ in 0..1000 {
            samples.record(1.0);
        }
        assert_eq!(samples.values.len(), MAX_SAMPLES);
        assert_eq!(samples.summary().count, MAX_SAMPLES as u64 + 1000);
    }

    #[test]
    fn errors_are_counted_by_code_with_the_first_detail() {
        let stats = Stats::default();
        stats.error("RATE_LIMITED", || "first".into());
        stats.error("RATE_LIMITED", || "second".into());
        stats.error("CONNECT_FAILED", || "refused".into());
        assert_eq!(stats.error_total(), 3);
        assert_eq!(stats.errors()["RATE_LIMITED"], 2);
        let examples = stats.error_examples();
        assert!(examples.contains(&("RATE_LIMITED".into(), 2, "first".into())));
    }
}
