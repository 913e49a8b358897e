//! The engine's tunables, as the actors see them (the process maps its
//! settings file onto this).

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
    /// Frames a session may have waiting before its reader counts as slow.
    pub outbound_queue: usize,
    /// How many candidates the dispatcher asks the index for per order.
    pub candidates_per_order: usize,
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
            outbound_queue: 256,
            candidates_per_order: 8,
            max_restarts: 5,
            restart_window: Duration::from_secs(60),
            restart_delay: Duration::from_millis(100),
            arrivals: Some(crate::domain::arrival::ArrivalRules::default()),
        }
    }
}
