//! Typed settings: `config/default.toml` (compiled in), then `--config FILE`,
//! then environment variables `DISPATCH__<SECTION>__<KEY>`.
//!
//! Secrets (the JWT key, the database URL's password) are never logged.

use serde::Deserialize;
use std::path::Path;

const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub auth: AuthSettings,
    pub orders: OrderSettings,
    pub presence: PresenceSettings,
    pub dispatch: DispatchSettings,
    pub ws: WsSettings,
    pub breadcrumbs: BreadcrumbSettings,
    pub drivers: DriverSettings,
    pub supervision: SupervisionSettings,
    pub arrivals: ArrivalSettings,
    pub events: EventSettings,
    pub webhooks: WebhookSettings,
    pub metrics: MetricsSettings,
    pub restaurants: RestaurantSettings,
    pub cluster: ClusterSettings,
    pub log: LogSettings,
}

/// Cluster mode (README "Cluster mode"): off while `nats_url` is empty.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterSettings {
    pub nats_url: String,
    /// Empty: a fresh id per process.
    pub node_id: String,
    /// The JetStream key-value bucket of the leases and node heartbeats.
    pub bucket: String,
    pub lease_ttl_ms: u64,
    pub renew_ms: u64,
    pub fence_margin_ms: u64,
    /// The side of a region's grid cell, in degrees of latitude and longitude.
    pub region_deg: f64,
    /// How often a node looks at the membership and the lease table.
    pub rebalance_ms: u64,
    /// A driver's entry goes to the owners of the regions within this many
    /// km of it; 0: `dispatch.max_radius_km`, the widest dispatch looks.
    pub geo_margin_km: f64,
    /// Orders of other nodes this node may follow over the bus at once.
    pub max_watched_orders: usize,
    /// How long a subscription to an order's subject may take before the
    /// `subscribe` is answered ENGINE_UNAVAILABLE.
    pub watch_timeout_ms: u64,
    /// For tests only: write with the last recorded epoch whatever the
    /// local clock says, so only Postgres fences (README "Cluster mode").
    pub unsafe_skip_local_fence_for_tests: bool,
}

impl ClusterSettings {
    pub fn enabled(&self) -> bool {
        !self.nats_url.trim().is_empty()
    }
}

/// A NATS subject token or bucket name: `[A-Za-z0-9_-]+`.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[derive(Debug, Clone, Deserialize)]
pub struct RestaurantSettings {
    /// Menu items per restaurant: the menu is served whole, to anyone.
    pub max_menu_items: usize,
}

/// `GET /metrics` answers an admin's token or this one (for the scraper).
#[derive(Clone, Deserialize)]
pub struct MetricsSettings {
    pub token: String,
}

impl std::fmt::Debug for MetricsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsSettings")
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Shorter secrets are refused outside `--demo`: a guessable HS256 key
/// lets anyone mint an admin token.
pub const MIN_SECRET_BYTES: usize = 32;

/// The largest breadcrumb batch one INSERT can carry on Postgres, with room.
const MAX_BREADCRUMB_BATCH: usize = 5000;
/// The batching window's upper bound: an order held longer than ten
/// minutes for a bundle is an order kept from its customer.
const MAX_BATCH_WINDOW_SECS: u64 = 600;

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub listen: String,
    pub body_limit_bytes: usize,
    pub shutdown_grace_secs: u64,
    pub max_connections: usize,
    pub header_read_timeout_secs: u64,
    pub request_timeout_secs: u64,
    pub max_header_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    pub url: String,
    pub sqlite_path: String,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    pub statement_timeout_ms: u64,
}

#[derive(Clone, Deserialize)]
pub struct AuthSettings {
    pub jwt_secret: String,
    pub token_ttl_secs: u64,
    pub login_failures_per_minute: u32,
    pub login_failures_per_client_per_minute: u32,
    pub login_failures_per_email_per_minute: u32,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("jwt_secret", &"<redacted>")
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("login_failures_per_minute", &self.login_failures_per_minute)
            .field(
                "login_failures_per_client_per_minute",
                &self.login_failures_per_client_per_minute,
            )
            .field(
                "login_failures_per_email_per_minute",
                &self.login_failures_per_email_per_minute,
            )
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct OrderSettings {
    pub idempotency_retention_hours: u64,
    pub per_customer_per_minute: u32,
    pub placed_expiry_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PresenceSettings {
    pub ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DispatchSettings {
    pub round_interval_ms: u64,
    pub offer_timeout_secs: u64,
    pub search_radius_km: f64,
    pub max_radius_km: f64,
    pub max_active_orders: u32,
    pub road_factor: f64,
    pub eta_push_threshold_secs: u64,
    pub candidates_per_order: usize,
    pub eta_refresh_ms: u64,
    pub eta_write_every_ms: u64,
    pub max_bundle: usize,
    pub bundle_ready_gap_secs: u64,
    pub bundle_max_delay_secs: u64,
    pub peak_bundle_ready_gap_secs: u64,
    pub peak_unserved_jobs: usize,
    /// 0: commit a driver at once, however long it would wait for the food.
    pub commit_ahead_secs: u64,
    pub max_click_to_door_mins: u64,
    pub slack_weight: f64,
    pub throughput_weight: f64,
    pub peak_throughput_weight: f64,
    pub plan_ahead_secs: u64,
    /// 0: every pairing a round makes is committed.
    pub commit_within_secs: u64,
    /// 0: no batching window (every order is offered as soon as it can be).
    pub batch_window_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WsSettings {
    pub max_frame_bytes: usize,
    pub outbound_queue: usize,
    pub read_buffer_bytes: usize,
    pub write_buffer_bytes: usize,
    pub messages_per_sec: u32,
    pub ping_interval_secs: u64,
    pub idle_timeout_secs: u64,
    pub send_timeout_secs: u64,
    pub max_sockets_per_user: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BreadcrumbSettings {
    pub queue: usize,
    pub batch: usize,
    pub flush_ms: u64,
    pub every_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DriverSettings {
    pub location_updates_per_sec: u32,
    pub proximity_km: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SupervisionSettings {
    pub max_restarts: usize,
    pub restart_window_secs: u64,
    pub restart_delay_ms: u64,
    /// Lets admins kill a core actor (`POST /api/admin/faults`), for drills
    /// and tests; off in production.
    pub fault_injection: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ArrivalSettings {
    pub enabled: bool,
    pub approach_m: f64,
    pub approach_secs: u64,
    pub arrive_m: f64,
    pub dwell_ms: u64,
    pub leave_m: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventSettings {
    pub nats_url: String,
    pub stream: String,
    pub subject_prefix: String,
    pub duplicate_window_secs: u64,
    pub publish_timeout_ms: u64,
    pub batch: i64,
    pub poll_ms: u64,
    pub max_age_secs: u64,
    pub max_rows: i64,
    pub warn_rows: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WebhookSettings {
    pub timeout_ms: u64,
    pub retry_base_ms: u64,
    pub retry_max_secs: u64,
    pub max_attempts: i32,
    pub max_endpoints: usize,
    pub max_pending: i64,
    pub allow_private: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    pub format: String,
    pub level: String,
}

impl Settings {
    /// Loads the layered settings, then checks them.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Settings> {
        Self::load_from(file, config::Environment::with_prefix("DISPATCH"))
    }

    /// The defaults with `text` (a `--config` file's TOML) over them, checked;
    /// no environment. For the config fuzz target and tests.
    pub fn from_toml(text: &str) -> anyhow::Result<Settings> {
        let file = config::File::from_str(text, config::FileFormat::Toml);
        plain_keys(&file, "the config file", Keys::Nested)?;
        let settings: Settings = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
            .add_source(file)
            .build()?
            .try_deserialize()?;
        settings.check()?;
        Ok(settings)
    }

    fn load_from(file: Option<&Path>, env: config::Environment) -> anyhow::Result<Settings> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(file) = file {
            let file = config::File::from(file).required(true);
            plain_keys(&file, "the config file", Keys::Nested)?;
            builder = builder.add_source(file);
        }
        let env = env.prefix_separator("__").separator("__").try_parsing(true);
        plain_keys(&env, "the environment", Keys::Dotted)?;
        let settings: Settings = builder.add_source(env).build()?.try_deserialize()?;
        settings.check()?;
        Ok(settings)
    }

    /// Rejects values that would make the engine misbehave rather than fail.
    fn check(&self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if self.server.body_limit_bytes < 1024 {
            problems.push("server.body_limit_bytes must be at least 1024");
        }
        if self.server.max_connections == 0
            || self.server.header_read_timeout_secs == 0
            || self.server.request_timeout_secs == 0
        {
            problems.push("server.max_connections, header_read_timeout_secs and request_timeout_secs must be positive");
        }
        if self.server.max_header_bytes < 8192 {
            problems.push("server.max_header_bytes must be at least 8192");
        }
        if self.database.max_connections == 0 {
            problems.push("database.max_connections must be at least 1");
        }
        if self.database.acquire_timeout_ms == 0 || self.database.statement_timeout_ms == 0 {
            problems.push(
                "database.acquire_timeout_ms and database.statement_timeout_ms must be positive",
            );
        }
        if self.auth.token_ttl_secs == 0 {
            problems.push("auth.token_ttl_secs must be positive");
        }
        if self.auth.login_failures_per_minute == 0
            || self.auth.login_failures_per_client_per_minute == 0
            || self.auth.login_failures_per_email_per_minute == 0
        {
            problems.push("auth.login_failures_per_minute, login_failures_per_client_per_minute and login_failures_per_email_per_minute must be at least 1");
        }
        if self.orders.per_customer_per_minute == 0 || self.orders.placed_expiry_secs == 0 {
            problems.push(
                "orders.per_customer_per_minute and orders.placed_expiry_secs must be positive",
            );
        }
        if self.orders.idempotency_retention_hours < 24 {
            problems.push("orders.idempotency_retention_hours must be at least 24 (CONTRACT.md)");
        }
        if self.ws.max_frame_bytes < 256 || self.ws.outbound_queue == 0 {
            problems.push("ws.max_frame_bytes must be at least 256 and ws.outbound_queue positive");
        }
        if self.drivers.proximity_km.is_nan() || self.drivers.proximity_km <= 0.0 {
            problems.push("drivers.proximity_km must be positive");
        }
        if self.restaurants.max_menu_items == 0 {
            problems.push("restaurants.max_menu_items must be at least 1");
        }
        if self.ws.max_sockets_per_user == 0 {
            problems.push("ws.max_sockets_per_user must be at least 1");
        }
        if self.ws.messages_per_sec == 0 || self.drivers.location_updates_per_sec == 0 {
            problems
                .push("ws.messages_per_sec and drivers.location_updates_per_sec must be positive");
        }
        if self.ws.ping_interval_secs == 0
            || self.ws.idle_timeout_secs <= self.ws.ping_interval_secs
        {
            problems.push(
                "ws.idle_timeout_secs must exceed ws.ping_interval_secs, which must be positive",
            );
        }
        if self.ws.read_buffer_bytes < 1024 || self.ws.send_timeout_secs == 0 {
            problems.push(
                "ws.read_buffer_bytes must be at least 1024 and ws.send_timeout_secs positive",
            );
        }
        // Seven parameters a row; Postgres takes at most 65,535 per statement.
        if self.breadcrumbs.batch > MAX_BREADCRUMB_BATCH {
            problems.push("breadcrumbs.batch must be at most 5000");
        }
        if self.breadcrumbs.queue == 0
            || self.breadcrumbs.batch == 0
            || self.breadcrumbs.flush_ms == 0
        {
            problems.push("breadcrumbs.queue, batch and flush_ms must be positive");
        }
        if self.presence.ttl_secs == 0
            || self.dispatch.round_interval_ms == 0
            || self.dispatch.offer_timeout_secs == 0
        {
            problems.push("presence.ttl_secs, dispatch.round_interval_ms and dispatch.offer_timeout_secs must be positive");
        }
        if self.dispatch.max_active_orders == 0
            || self.dispatch.candidates_per_order == 0
            || self.dispatch.max_bundle == 0
            || self.dispatch.max_click_to_door_mins == 0
        {
            problems.push(
                "dispatch.max_active_orders, candidates_per_order, max_bundle and max_click_to_door_mins must be positive",
            );
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            problems.push("log.format must be \"text\" or \"json\"");
        }
        if !(self.dispatch.slack_weight >= 0.0 && self.dispatch.slack_weight <= 100.0) {
            problems.push("dispatch.slack_weight must be between 0 and 100");
        }
        if !(self.dispatch.throughput_weight >= 0.0
            && self.dispatch.throughput_weight <= 100.0
            && self.dispatch.peak_throughput_weight >= 0.0
            && self.dispatch.peak_throughput_weight <= 100.0)
        {
            problems.push(
                "dispatch.throughput_weight and peak_throughput_weight must be between 0 and 100",
            );
        }
        if self.dispatch.plan_ahead_secs > 3600
            || self.dispatch.commit_within_secs > self.dispatch.plan_ahead_secs
        {
            problems.push(
                "dispatch.plan_ahead_secs must be at most 3600 and commit_within_secs at most plan_ahead_secs",
            );
        }
        if self.dispatch.bundle_ready_gap_secs > 3600
            || self.dispatch.peak_bundle_ready_gap_secs > 3600
            || self.dispatch.peak_unserved_jobs > 1_000_000
        {
            problems.push(
                "dispatch.bundle_ready_gap_secs and peak_bundle_ready_gap_secs must be at most 3600, peak_unserved_jobs at most 1000000",
            );
        }
        if self.dispatch.batch_window_secs > MAX_BATCH_WINDOW_SECS {
            problems.push("dispatch.batch_window_secs must be at most 600");
        }
        if !(self.dispatch.road_factor >= 1.0
            && self.dispatch.max_radius_km >= self.dispatch.search_radius_km)
        {
            problems
                .push("dispatch.road_factor must be >= 1 and max_radius_km >= search_radius_km");
        }
        if self.supervision.restart_window_secs == 0 {
            problems.push("supervision.restart_window_secs must be at least 1");
        }
        if self.supervision.restart_delay_ms > 60_000 {
            problems.push("supervision.restart_delay_ms must be at most 60000");
        }
        if self.dispatch.eta_refresh_ms < 100 || self.dispatch.eta_write_every_ms == 0 {
            problems.push(
                "dispatch.eta_refresh_ms must be at least 100 and dispatch.eta_write_every_ms positive",
            );
        }
        let a = &self.arrivals;
        if !(a.arrive_m > 0.0 && a.leave_m >= a.arrive_m && a.approach_m >= a.arrive_m) {
            problems.push("arrivals: need 0 < arrive_m <= leave_m and arrive_m <= approach_m");
        }
        let events = &self.events;
        let token_ok = |t: &str| {
            !t.is_empty()
                && t.split('.').all(|part| {
                    !part.is_empty()
                        && part
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                })
        };
        if !token_ok(&events.subject_prefix)
            || events.stream.is_empty()
            || !events
                .stream
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            problems.push("events.subject_prefix must be dot-separated tokens of [A-Za-z0-9_-] and events.stream one such token");
        }
        if events.batch < 1
            || events.poll_ms == 0
            || events.publish_timeout_ms == 0
            || events.max_rows < 1
            || events.max_age_secs == 0
            || events.duplicate_window_secs == 0
        {
            problems.push("events.batch, poll_ms, publish_timeout_ms, max_rows, max_age_secs and duplicate_window_secs must be positive");
        }
        let cluster = &self.cluster;
        if !cluster.node_id.is_empty() && !is_token(&cluster.node_id) || cluster.node_id.len() > 64
        {
            problems.push("cluster.node_id must be at most 64 characters of [A-Za-z0-9_-]");
        }
        if !is_token(&cluster.bucket) {
            problems.push("cluster.bucket must be one token of [A-Za-z0-9_-]");
        }
        // A lease must outlive two missed renewals and the fencing margin,
        // and the margin must cover a stalled store write's start.
        if cluster.lease_ttl_ms < 1000
            || cluster.renew_ms == 0
            || cluster.fence_margin_ms < 200
            || cluster.renew_ms * 2 + cluster.fence_margin_ms > cluster.lease_ttl_ms
        {
            problems.push("cluster: need lease_ttl_ms >= 1000, fence_margin_ms >= 200 and 2 * renew_ms + fence_margin_ms <= lease_ttl_ms");
        }
        if !(cluster.region_deg >= 0.001 && cluster.region_deg <= 10.0) {
            problems.push("cluster.region_deg must be between 0.001 and 10");
        }
        if cluster.rebalance_ms == 0 {
            problems.push("cluster.rebalance_ms must be positive");
        }
        if !(cluster.geo_margin_km >= 0.0 && cluster.geo_margin_km <= 100.0) {
            problems.push("cluster.geo_margin_km must be between 0 and 100");
        }
        if !(1..=1_000_000).contains(&cluster.max_watched_orders) {
            problems.push("cluster.max_watched_orders must be between 1 and 1000000");
        }
        if !(100..=60_000).contains(&cluster.watch_timeout_ms) {
            problems.push("cluster.watch_timeout_ms must be between 100 and 60000");
        }
        let events_url = self.events.nats_url.trim();
        if cluster.enabled() && !events_url.is_empty() && events_url != cluster.nats_url.trim() {
            problems.push("events.nats_url and cluster.nats_url must be the same server when both are set (the process has one NATS connection)");
        }
        let hooks = &self.webhooks;
        if hooks.timeout_ms == 0
            || hooks.retry_base_ms == 0
            || hooks.max_attempts < 1
            || hooks.max_pending < 1
            || hooks.retry_max_secs == 0
        {
            problems.push("webhooks.timeout_ms, retry_base_ms, retry_max_secs, max_attempts and max_pending must be positive");
        }
        if problems.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("invalid settings: {}", problems.join("; "))
        }
    }

    /// Refuses secrets an attacker could guess, unless this is a demo on
    /// a laptop. An empty JWT secret means a random key per process, and an
    /// empty metrics token means admins only: both are safe.
    pub fn check_secrets(&self, demo: bool) -> anyhow::Result<()> {
        if demo {
            return Ok(());
        }
        for (key, value) in [
            ("auth.jwt_secret", &self.auth.jwt_secret),
            ("metrics.token", &self.metrics.token),
        ] {
            if !value.is_empty() && value.len() < MIN_SECRET_BYTES {
                anyhow::bail!(
                    "{key} must be at least {MIN_SECRET_BYTES} bytes (it is {}); generate one with `openssl rand -hex 32`",
                    value.len()
                );
            }
        }
        Ok(())
    }

    /// The engine's view of these settings.
    pub fn engine(&self) -> actors::engine::config::EngineConfig {
        use std::time::Duration;
        actors::engine::config::EngineConfig {
            presence_ttl: Duration::from_secs(self.presence.ttl_secs),
            round_interval: Duration::from_millis(self.dispatch.round_interval_ms),
            offer_timeout: Duration::from_secs(self.dispatch.offer_timeout_secs),
            search_radius_km: self.dispatch.search_radius_km,
            max_radius_km: self.dispatch.max_radius_km,
            max_active_orders: self.dispatch.max_active_orders,
            road_factor: self.dispatch.road_factor,
            eta_push_threshold: Duration::from_secs(self.dispatch.eta_push_threshold_secs),
            eta_refresh: Duration::from_millis(self.dispatch.eta_refresh_ms),
            eta_write_every: Duration::from_millis(self.dispatch.eta_write_every_ms),
            outbound_queue: self.ws.outbound_queue,
            candidates_per_order: self.dispatch.candidates_per_order,
            max_bundle: self.dispatch.max_bundle,
            bundle_ready_gap: Duration::from_secs(self.dispatch.bundle_ready_gap_secs),
            bundle_max_delay: Duration::from_secs(self.dispatch.bundle_max_delay_secs),
            peak_bundle_ready_gap: Duration::from_secs(self.dispatch.peak_bundle_ready_gap_secs),
            peak_unserved_jobs: self.dispatch.peak_unserved_jobs,
            commit_ahead: (self.dispatch.commit_ahead_secs > 0)
                .then(|| Duration::from_secs(self.dispatch.commit_ahead_secs)),
            max_click_to_door: Duration::from_secs(self.dispatch.max_click_to_door_mins * 60),
            slack_weight: self.dispatch.slack_weight,
            throughput_weight: self.dispatch.throughput_weight,
            peak_throughput_weight: self.dispatch.peak_throughput_weight,
            plan_ahead: Duration::from_secs(self.dispatch.plan_ahead_secs),
            commit_within: (self.dispatch.commit_within_secs > 0)
                .then(|| Duration::from_secs(self.dispatch.commit_within_secs)),
            batch_window: (self.dispatch.batch_window_secs > 0)
                .then(|| Duration::from_secs(self.dispatch.batch_window_secs)),
            max_restarts: self.supervision.max_restarts,
            restart_window: Duration::from_secs(self.supervision.restart_window_secs),
            restart_delay: Duration::from_millis(self.supervision.restart_delay_ms),
            arrivals: self
                .arrivals
                .enabled
                .then(|| actors::domain::arrival::ArrivalRules {
                    approach_m: self.arrivals.approach_m,
                    approach_secs: self.arrivals.approach_secs as f64,
                    arrive_m: self.arrivals.arrive_m,
                    dwell: Duration::from_millis(self.arrivals.dwell_ms),
                    leave_m: self.arrivals.leave_m,
                }),
        }
    }

    /// The NATS server the process connects to, if any: the cluster's, else
    /// the events stream's (checked to be the same when both are set).
    pub fn nats_url(&self) -> Option<&str> {
        [self.cluster.nats_url.trim(), self.events.nats_url.trim()]
            .into_iter()
            .find(|url| !url.is_empty())
    }

    /// Cluster mode needs the shared record: refuses a SQLite URL.
    pub fn check_cluster_store(&self, database_url: &str) -> anyhow::Result<()> {
        if self.cluster.enabled() && !database_url.starts_with("postgres") {
            anyhow::bail!(
                "cluster mode (cluster.nats_url) needs Postgres, the record every node shares; \
                 the database URL is not postgres://... (SQLite is single-node only)"
            );
        }
        Ok(())
    }

    /// The database URL: `--database-url`, else `DATABASE_URL`, else
    /// `database.url`, else the embedded SQLite file.
    pub fn database_url(&self, flag: Option<&str>) -> String {
        let env = std::env::var("DATABASE_URL").ok();
        [
            flag.map(str::to_string),
            env,
            Some(self.database.url.clone()),
        ]
        .into_iter()
        .flatten()
        .find(|url| !url.trim().is_empty())
        .unwrap_or_else(|| format!("sqlite:{}", self.database.sqlite_path))
    }
}

/// Refuses a key that is not a plain setting name before the `config`
/// crate sees it: that crate reads `[N]` in a key as an array index, so the
/// 17-byte file `'U[55555556]'='='` made it build an array of 55 million
/// entries (5 GB, 7 s; found by the `config` fuzz target). No setting needs
/// more than letters, digits and `_`. `Keys::Dotted` is the environment's:
/// its source joins `SECTION__KEY` into `section.key` itself.
fn plain_keys(source: &dyn config::Source, origin: &str, keys: Keys) -> anyhow::Result<()> {
    fn walk(
        table: &config::Map<String, config::Value>,
        prefix: &str,
        origin: &str,
        keys: Keys,
    ) -> anyhow::Result<()> {
        for (key, value) in table {
            let plain = !key.is_empty()
                && key.split('.').all(|part| {
                    !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                });
            if !plain || (key.contains('.') && keys == Keys::Nested) {
                anyhow::bail!(
                    "{origin}: `{prefix}{key}` is not a setting name (letters, digits and _ only)"
                );
            }
            if let config::ValueKind::Table(inner) = &value.kind {
                walk(inner, &format!("{prefix}{key}."), origin, keys)?;
            }
        }
        Ok(())
    }
    walk(&source.collect()?, "", origin, keys)
}

/// How a source names its settings: tables of plain keys (a TOML file), or
/// flat dotted paths (the environment).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keys {
    Nested,
    Dotted,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> config::Environment {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        config::Environment::with_prefix("DISPATCH").source(Some(map))
    }

    /// The `config` fuzz target's out-of-memory input (5 GB before the fix).
    #[test]
    fn a_key_that_is_not_a_setting_name_is_refused_before_it_is_expanded() {
        let started = std::time::Instant::now();
        let error = Settings::from_toml("'U[55555556]'='='")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`U[55555556]` is not a setting name"),
            "{error}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        for text in ["[server]\n'listen[3]' = 'x'", "\"a.b\" = 1", "'' = 1"] {
            assert!(Settings::from_toml(text).is_err(), "{text}");
        }
        // Dotted keys are tables in TOML, and a normal file still loads.
        let s = Settings::from_toml("server.listen = '127.0.0.1:9999'\n[presence]\nttl_secs = 7")
            .unwrap();
        assert_eq!(s.server.listen, "127.0.0.1:9999");
        assert_eq!(s.presence.ttl_secs, 7);
        let error = Settings::load_from(
            None,
            env(&[("DISPATCH__WS__OUTBOUND_QUEUE[99999999]", "1")]),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("the environment"), "{error}");
    }

    #[test]
    fn defaults_match_the_contract() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.server.listen, "127.0.0.1:8080");
        assert_eq!(s.server.body_limit_bytes, 64 * 1024);
        assert_eq!(s.presence.ttl_secs, 30);
        assert_eq!(s.dispatch.round_interval_ms, 1000);
        assert_eq!(s.dispatch.offer_timeout_secs, 30);
        assert_eq!(s.dispatch.max_active_orders, 2);
        assert_eq!(s.dispatch.batch_window_secs, 120);
        assert_eq!(s.ws.max_frame_bytes, 4096);
        assert_eq!(s.ws.outbound_queue, 256);
    }

    #[test]
    fn environment_overrides_defaults() {
        let s = Settings::load_from(
            None,
            env(&[
                ("DISPATCH__SERVER__LISTEN", "0.0.0.0:9000"),
                ("DISPATCH__PRESENCE__TTL_SECS", "5"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.listen, "0.0.0.0:9000");
        assert_eq!(s.presence.ttl_secs, 5);
    }

    #[test]
    fn nonsense_values_are_refused() {
        let err = Settings::load_from(
            None,
            env(&[("DISPATCH__ORDERS__IDEMPOTENCY_RETENTION_HOURS", "1")]),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("idempotency_retention_hours"),
            "{err}"
        );
        assert!(
            Settings::load_from(None, env(&[("DISPATCH__WS__OUTBOUND_QUEUE", "many")])).is_err()
        );
    }

    #[test]
    fn realtime_and_dispatch_values_that_would_misbehave_are_refused() {
        for (key, value, named) in [
            ("DISPATCH__WS__MESSAGES_PER_SEC", "0", "ws.messages_per_sec"),
            (
                "DISPATCH__WS__IDLE_TIMEOUT_SECS",
                "5",
                "ws.idle_timeout_secs",
            ),
            (
                "DISPATCH__WS__READ_BUFFER_BYTES",
                "10",
                "ws.read_buffer_bytes",
            ),
            ("DISPATCH__BREADCRUMBS__QUEUE", "0", "breadcrumbs.queue"),
            ("DISPATCH__BREADCRUMBS__BATCH", "9000", "breadcrumbs.batch"),
            (
                "DISPATCH__SERVER__MAX_HEADER_BYTES",
                "1000",
                "server.max_header_bytes",
            ),
            (
                "DISPATCH__WS__MAX_SOCKETS_PER_USER",
                "0",
                "ws.max_sockets_per_user",
            ),
            ("DISPATCH__PRESENCE__TTL_SECS", "0", "presence.ttl_secs"),
            (
                "DISPATCH__DISPATCH__MAX_ACTIVE_ORDERS",
                "0",
                "dispatch.max_active_orders",
            ),
            (
                "DISPATCH__DISPATCH__ROAD_FACTOR",
                "0.5",
                "dispatch.road_factor",
            ),
            (
                "DISPATCH__DRIVERS__LOCATION_UPDATES_PER_SEC",
                "0",
                "drivers.location_updates_per_sec",
            ),
            ("DISPATCH__LOG__FORMAT", "xml", "log.format"),
            (
                "DISPATCH__DISPATCH__ETA_REFRESH_MS",
                "50",
                "dispatch.eta_refresh_ms",
            ),
            ("DISPATCH__DISPATCH__MAX_BUNDLE", "0", "max_bundle"),
            (
                "DISPATCH__DISPATCH__MAX_CLICK_TO_DOOR_MINS",
                "0",
                "max_click_to_door_mins",
            ),
            (
                "DISPATCH__DISPATCH__SLACK_WEIGHT",
                "-1",
                "dispatch.slack_weight",
            ),
            (
                "DISPATCH__DISPATCH__PEAK_THROUGHPUT_WEIGHT",
                "-1",
                "dispatch.throughput_weight and peak_throughput_weight",
            ),
            (
                "DISPATCH__DISPATCH__PLAN_AHEAD_SECS",
                "86400",
                "dispatch.plan_ahead_secs",
            ),
            (
                "DISPATCH__DISPATCH__COMMIT_WITHIN_SECS",
                "601",
                "commit_within_secs at most plan_ahead_secs",
            ),
            (
                "DISPATCH__DISPATCH__PEAK_BUNDLE_READY_GAP_SECS",
                "86400",
                "peak_bundle_ready_gap_secs must be at most 3600",
            ),
            (
                "DISPATCH__DISPATCH__PEAK_UNSERVED_JOBS",
                "99999999",
                "peak_unserved_jobs at most 1000000",
            ),
            (
                "DISPATCH__DISPATCH__BATCH_WINDOW_SECS",
                "601",
                "dispatch.batch_window_secs must be at most 600",
            ),
            (
                "DISPATCH__DRIVERS__PROXIMITY_KM",
                "0",
                "drivers.proximity_km",
            ),
            (
                "DISPATCH__RESTAURANTS__MAX_MENU_ITEMS",
                "0",
                "restaurants.max_menu_items",
            ),
            ("DISPATCH__WEBHOOKS__TIMEOUT_MS", "0", "webhooks.timeout_ms"),
            (
                "DISPATCH__EVENTS__SUBJECT_PREFIX",
                "a..b",
                "events.subject_prefix",
            ),
            ("DISPATCH__EVENTS__STREAM", "a.b", "events.subject_prefix"),
            ("DISPATCH__EVENTS__BATCH", "0", "events.batch"),
            ("DISPATCH__CLUSTER__NODE_ID", "a.b", "cluster.node_id"),
            ("DISPATCH__CLUSTER__BUCKET", "a b", "cluster.bucket"),
            ("DISPATCH__CLUSTER__LEASE_TTL_MS", "500", "cluster: need"),
            ("DISPATCH__CLUSTER__RENEW_MS", "3000", "cluster: need"),
            ("DISPATCH__CLUSTER__FENCE_MARGIN_MS", "0", "cluster: need"),
            ("DISPATCH__CLUSTER__REGION_DEG", "0", "cluster.region_deg"),
            (
                "DISPATCH__CLUSTER__REBALANCE_MS",
                "0",
                "cluster.rebalance_ms",
            ),
            (
                "DISPATCH__CLUSTER__GEO_MARGIN_KM",
                "-1",
                "cluster.geo_margin_km",
            ),
            (
                "DISPATCH__CLUSTER__MAX_WATCHED_ORDERS",
                "0",
                "cluster.max_watched_orders",
            ),
            (
                "DISPATCH__CLUSTER__WATCH_TIMEOUT_MS",
                "50",
                "cluster.watch_timeout_ms",
            ),
            ("DISPATCH__ARRIVALS__LEAVE_M", "10", "arrivals"),
            (
                "DISPATCH__WEBHOOKS__MAX_ATTEMPTS",
                "0",
                "webhooks.timeout_ms",
            ),
            (
                "DISPATCH__SUPERVISION__RESTART_WINDOW_SECS",
                "0",
                "supervision.restart_window_secs",
            ),
            (
                "DISPATCH__SUPERVISION__RESTART_DELAY_MS",
                "600000",
                "supervision.restart_delay_ms",
            ),
        ] {
            let err = Settings::load_from(None, env(&[(key, value)])).unwrap_err();
            assert!(err.to_string().contains(named), "{key}={value}: {err}");
        }
        assert!(
            Settings::load_from(
                None,
                env(&[("DISPATCH__DISPATCH__SEARCH_RADIUS_KM", "far")])
            )
            .is_err()
        );
        let err = Settings::load_from(None, env(&[("DISPATCH__BREADCRUMBS__EVERY_MS", "often")]))
            .unwrap_err();
        assert!(err.to_string().contains("every_ms"), "{err}");
        let err = Settings::load_from(None, env(&[("DISPATCH__SUPERVISION__MAX_RESTARTS", "-1")]))
            .unwrap_err();
        assert!(err.to_string().contains("max_restarts"), "{err}");
    }

    #[test]
    fn a_config_file_layers_over_the_defaults_and_is_checked() {
        let s = Settings::from_toml("[server]\nlisten = \"0.0.0.0:9\"").unwrap();
        assert_eq!(s.server.listen, "0.0.0.0:9");
        assert_eq!(s.ws.outbound_queue, 256);
        let err = Settings::from_toml("[ws]\nmax_frame_bytes = 1").unwrap_err();
        assert!(err.to_string().contains("max_frame_bytes"), "{err}");
        assert!(Settings::from_toml("[[[").is_err());
    }

    #[test]
    fn cluster_mode_is_off_by_default_and_needs_postgres() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert!(!s.cluster.enabled());
        assert_eq!(s.nats_url(), None);
        assert_eq!(s.cluster.max_watched_orders, 10_000);
        assert_eq!(s.cluster.watch_timeout_ms, 5000);
        s.check_cluster_store("sqlite:var/x.db").unwrap();
        let s = Settings::load_from(
            None,
            env(&[("DISPATCH__CLUSTER__NATS_URL", "nats://127.0.0.1:4222")]),
        )
        .unwrap();
        assert!(s.cluster.enabled());
        assert_eq!(s.nats_url(), Some("nats://127.0.0.1:4222"));
        let err = s.check_cluster_store("sqlite:var/x.db").unwrap_err();
        assert!(err.to_string().contains("needs Postgres"), "{err}");
        s.check_cluster_store("postgres://db/x").unwrap();
        let err = Settings::load_from(
            None,
            env(&[
                ("DISPATCH__CLUSTER__NATS_URL", "nats://127.0.0.1:4222"),
                ("DISPATCH__EVENTS__NATS_URL", "nats://10.0.0.1:4222"),
            ]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("same server"), "{err}");
    }

    #[test]
    fn secrets_are_not_printed() {
        let s = Settings::load_from(
            None,
            env(&[("DISPATCH__AUTH__JWT_SECRET", "hunter2hunter2")]),
        )
        .unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
