//! The engine's tunables, as the actors see them (the process maps its
//! settings file onto this).

use crate::domain::dispatch::{BoardRules, PolicyParams};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// No position for this long: the driver is offline and leaves the index.
    pub presence_ttl: Duration,
    pub round_interval: Duration,
    pub offer_timeout: Duration,
    pub search_radius_km: f64,
    pub max_radius_km: f64,
    pub max_active_orders: u32,
    pub road_factor: f64,
    /// A stored ETA is rewritten and pushed only when it moves by more.
    pub eta_push_threshold: Duration,
    /// How often an order waiting for a driver recomputes its estimate.
    pub eta_refresh: Duration,
    /// How often moved estimates are written to the store (newest per order).
    pub eta_write_every: Duration,
    /// Frames a session may have waiting before its reader counts as slow.
    pub outbound_queue: usize,
    /// How many candidates the dispatcher asks the index for per order.
    pub candidates_per_order: usize,
    /// Orders one offer may name (bundles of one restaurant); capped by
    /// `max_active_orders`. 1: no bundling.
    pub max_bundle: usize,
    /// Orders whose food is ready further apart than this are not bundled.
    pub bundle_ready_gap: Duration,
    /// No order of a bundle may arrive later than this against going alone.
    pub bundle_max_delay: Duration,
    /// Peak-aware bundling: the ready gap after a round that left at least
    /// `peak_unserved_jobs` jobs without a driver (0 jobs: never).
    pub peak_bundle_ready_gap: Duration,
    pub peak_unserved_jobs: usize,
    /// A driver who would wait at the restaurant longer than this is not
    /// committed yet (None: commit at once).
    pub commit_ahead: Option<Duration>,
    /// Orders no driver can deliver within this are flagged hopeless.
    pub max_click_to_door: Duration,
    /// Cost per second of slack before an order's latest pickup (only where
    /// the maximum is enforced: the replay).
    pub slack_weight: f64,
    /// Cost per second of driver time per order of a job (throughput), and
    /// at least this at the peak.
    pub throughput_weight: f64,
    pub peak_throughput_weight: f64,
    /// Rolling horizon: drivers free within `plan_ahead` are planned (where
    /// the caller knows when a busy driver will be free: the replay), and
    /// only the jobs of drivers free within `commit_within` are committed
    /// (None: all).
    pub plan_ahead: Duration,
    pub commit_within: Option<Duration>,
    /// Batching window: an order alone at its restaurant, far from ready,
    /// is held up to this long for a second one to bundle with (None: off).
    pub batch_window: Option<Duration>,
    /// A core actor that fails more often than this within
    /// `restart_window` is not started again: the engine stops, and the
    /// process exits non-zero for its own supervisor to restart.
    pub max_restarts: usize,
    pub restart_window: Duration,
    /// How long the supervisor waits before starting a failed core actor
    /// again (doubled for each earlier failure in the window).
    pub restart_delay: Duration,
    /// Arrival events (geofences around the next stop); `None`: off.
    pub arrivals: Option<crate::domain::arrival::ArrivalRules>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            presence_ttl: Duration::from_secs(30),
            round_interval: Duration::from_millis(1000),
            offer_timeout: Duration::from_secs(30),
            search_radius_km: 5.0,
            max_radius_km: 15.0,
            max_active_orders: 2,
            road_factor: crate::domain::eta::DEFAULT_ROAD_FACTOR,
            eta_push_threshold: Duration::from_secs(60),
            eta_refresh: Duration::from_secs(5),
            eta_write_every: Duration::from_millis(500),
            outbound_queue: 256,
            candidates_per_order: 8,
            max_bundle: 2,
            bundle_ready_gap: Duration::from_secs(300),
            bundle_max_delay: Duration::from_secs(600),
            peak_bundle_ready_gap: Duration::from_secs(600),
            peak_unserved_jobs: 20,
            commit_ahead: None,
            max_click_to_door: Duration::from_secs(90 * 60),
            slack_weight: 0.25,
            throughput_weight: 0.0,
            peak_throughput_weight: 0.0,
            plan_ahead: Duration::from_secs(120),
            commit_within: None,
            batch_window: None,
            max_restarts: 5,
            restart_window: Duration::from_secs(60),
            restart_delay: Duration::from_millis(100),
            arrivals: Some(crate::domain::arrival::ArrivalRules::default()),
        }
    }
}

impl EngineConfig {
    /// The dispatch board's rules (live: the maximum click-to-door flags,
    /// it does not refuse).
    pub fn board_rules(&self) -> BoardRules {
        BoardRules {
            search_radius_km: self.search_radius_km,
            max_radius_km: self.max_radius_km,
            candidates_per_order: self.candidates_per_order,
            max_bundle: self.max_bundle.min(self.max_active_orders as usize).max(1),
            bundle_ready_gap_secs: self.bundle_ready_gap.as_secs_f64(),
            bundle_max_delay_secs: self.bundle_max_delay.as_secs_f64(),
            peak_bundle_ready_gap_secs: self.peak_bundle_ready_gap.as_secs_f64(),
            peak_unserved_jobs: self.peak_unserved_jobs,
            max_click_to_door_secs: self.max_click_to_door.as_secs_f64(),
            enforce_max_click_to_door: false,
            peak_throughput_weight: self.peak_throughput_weight,
            commit_within_secs: self
                .commit_within
                .map_or(f64::INFINITY, |within| within.as_secs_f64()),
            batch_window_secs: self.batch_window.map_or(0.0, |w| w.as_secs_f64()),
        }
    }

    /// The cost model's parameters.
    pub fn policy_params(&self) -> PolicyParams {
        PolicyParams {
            road_factor: self.road_factor,
            max_active_orders: self.max_active_orders,
            commit_ahead_secs: self
                .commit_ahead
                .map_or(f64::INFINITY, |window| window.as_secs_f64()),
            slack_weight: self.slack_weight,
            throughput_weight: self.throughput_weight,
            ..PolicyParams::default()
        }
    }
}
