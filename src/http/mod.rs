//! The HTTP gateway: shared state, one `router()` merging a router per
//! resource, and the layers every request passes (request id, tracing,
//! metrics, body limit).
//!
//! Request and response types stay private to their resource file; the
//! records themselves come from `actors::domain::model`.

use crate::auth::Tokens;
use crate::settings::Settings;
use actors::engine::Engine;
use actors::store::Store;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::HeaderName;
use axum::middleware::Next;
use axum::response::Response;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use throttle::FailureLimiter;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

mod admin;
pub mod asyncapi;
mod auth;
mod drivers;
pub mod error;
mod health;
pub mod openapi;
pub(crate) mod orders;
mod restaurants;
pub mod serve;
pub mod throttle;
#[cfg(test)]
mod typescript;
mod webhooks;
mod zones;

pub use auth::bearer;
pub use error::ApiError;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub engine: Engine,
    pub tokens: Arc<Tokens>,
    pub settings: Arc<Settings>,
    pub login_limits: Arc<LoginLimits>,
    pub location_limiter: Arc<DefaultKeyedRateLimiter<i64>>,
    /// Open WebSockets per user (`ws.max_sockets_per_user`).
    pub sockets_per_user: Arc<dashmap::DashMap<i64, usize>>,
    /// New orders per customer (`orders.per_customer_per_minute`).
    pub order_limiter: Arc<DefaultKeyedRateLimiter<i64>>,
    pub metrics: PrometheusHandle,
    /// Cancelled on SIGTERM / Ctrl-C: sockets close with 1001.
    pub shutdown: CancellationToken,
    /// Open WebSocket sessions, so shutdown can wait for their close frames.
    pub live_sessions: TaskTracker,
    /// Idempotency keys of order creations running now.
    pub keys_in_flight: Arc<orders::KeysInFlight>,
    /// The webhook sink (`crate::events`), set by `with_webhooks`.
    pub webhooks: Option<crate::events::webhooks::Webhooks>,
    /// Service zones, set by `with_zones`.
    pub zones: Option<crate::zones::Zones>,
    /// This node's membership in cluster mode, set by `with_cluster`.
    pub cluster: Option<crate::cluster::Cluster>,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        engine: Engine,
        tokens: Tokens,
        settings: Settings,
        metrics: PrometheusHandle,
        shutdown: CancellationToken,
    ) -> AppState {
        let per_second =
            NonZeroU32::new(settings.drivers.location_updates_per_sec).unwrap_or(NonZeroU32::MIN);
        AppState {
            store,
            engine,
            tokens: Arc::new(tokens),
            login_limits: Arc::new(LoginLimits::new(&settings.auth)),
            sockets_per_user: Arc::new(dashmap::DashMap::new()),
            location_limiter: Arc::new(RateLimiter::keyed(Quota::per_second(per_second))),
            order_limiter: Arc::new(RateLimiter::keyed(Quota::per_minute(
                NonZeroU32::new(settings.orders.per_customer_per_minute).unwrap_or(NonZeroU32::MIN),
            ))),
            settings: Arc::new(settings),
            metrics,
            shutdown,
            live_sessions: TaskTracker::new(),
            keys_in_flight: Arc::default(),
            webhooks: None,
            zones: None,
            cluster: None,
        }
    }

    pub fn with_zones(mut self, zones: crate::zones::Zones) -> AppState {
        self.zones = Some(zones);
        self
    }

    pub fn with_cluster(mut self, cluster: crate::cluster::Cluster) -> AppState {
        self.cluster = Some(cluster);
        self
    }

    pub fn with_webhooks(mut self, webhooks: crate::events::webhooks::Webhooks) -> AppState {
        self.webhooks = Some(webhooks);
        self
    }
}

/// Failed logins, counted three ways (each per minute): per email from one
/// client address, so a guesser locks only itself out of an account; per
/// client address over all emails, so one client cannot spray accounts;
/// and per email from anywhere, a higher ceiling against guessing from
/// many addresses.
pub struct LoginLimits {
    pub per_email_and_client: FailureLimiter<(String, IpAddr)>,
    pub per_client: FailureLimiter<IpAddr>,
    pub per_email: FailureLimiter<String>,
}

impl LoginLimits {
    fn new(auth: &crate::settings::AuthSettings) -> LoginLimits {
        let minute = Duration::from_secs(60);
        LoginLimits {
            per_email_and_client: FailureLimiter::new(auth.login_failures_per_minute, minute),
            per_client: FailureLimiter::new(auth.login_failures_per_client_per_minute, minute),
            per_email: FailureLimiter::new(auth.login_failures_per_email_per_minute, minute),
        }
    }

    /// Which limit, if any, refuses another try of `email` from `client`.
    pub fn blocked(&self, email: &str, client: IpAddr) -> Option<&'static str> {
        if self.per_client.is_blocked(&client) {
            Some("login_client")
        } else if self.per_email.is_blocked(&email.to_owned()) {
            Some("login_email")
        } else if self
            .per_email_and_client
            .is_blocked(&(email.to_owned(), client))
        {
            Some("login")
        } else {
            None
        }
    }

    pub fn failed(&self, email: &str, client: IpAddr) {
        self.per_client.failed(client);
        self.per_email.failed(email.to_owned());
        self.per_email_and_client.failed((email.to_owned(), client));
    }

    /// Forgets windows that are over (from the housekeeping task), and says
    /// how many keys are left, so a map that only grows shows on /metrics.
    pub fn trim(&self) {
        self.per_client.trim();
        self.per_email.trim();
        self.per_email_and_client.trim();
        let keys = self.per_client.len() + self.per_email.len() + self.per_email_and_client.len();
        metrics::gauge!(actors::metrics::LOGIN_LIMITER_KEYS).set(keys as f64);
    }
}

/// Every REST route, each with its OpenAPI operation: a route can only be
/// added here with its documentation (`routes!` takes the handler's
/// `#[utoipa::path]`), so the document cannot miss one.
fn documented_routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    let api = utoipa_axum::router::OpenApiRouter::new()
        .merge(auth::router())
        .merge(restaurants::router())
        .merge(orders::router())
        .merge(drivers::router())
        .merge(admin::router())
        .merge(webhooks::router())
        .merge(zones::router());
    utoipa_axum::router::OpenApiRouter::with_openapi(openapi::base())
        .nest("/api", api)
        .merge(health::router())
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: AppState) -> Router {
    let body_limit = state.settings.server.body_limit_bytes;
    let request_timeout =
        std::time::Duration::from_secs(state.settings.server.request_timeout_secs);
    let (documented, document) = documented_routes().split_for_parts();
    Router::new()
        .merge(documented)
        .merge(openapi::router(document))
        .merge(asyncapi::router())
        .route("/ws", axum::routing::get(crate::ws::upgrade))
        .merge(crate::web::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            // Top to bottom: outermost first. The id is set before the span
            // is made, so every log line of the request carries it.
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(X_REQUEST_ID.clone(), MakeRequestUuid))
                .layer(PropagateRequestIdLayer::new(X_REQUEST_ID.clone()))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
                    let request_id = req
                        .headers()
                        .get(&X_REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", request_id, method = %req.method(), path = %req.uri().path())
                }))
                .layer(axum::middleware::from_fn(record_metrics))
                .layer(axum::middleware::from_fn(security_headers))
                .layer(axum::middleware::from_fn_with_state(
                    request_timeout,
                    bound_request_time,
                )),
        )
        .with_state(state)
}

/// A request (its body included) that is not answered in time is 408:
/// a client trickling its body holds no handler for long.
async fn bound_request_time(
    axum::extract::State(limit): axum::extract::State<std::time::Duration>,
    req: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!(actors::metrics::HTTP_REQUEST_TIMEOUTS_TOTAL).increment(1);
            axum::response::IntoResponse::into_response(ApiError::RequestTimeout)
        }
    }
}

/// Headers every response carries: no MIME sniffing, no referrer leaking
/// order ids to other sites. Pages add their CSP (`web`).
async fn security_headers(req: Request, next: Next) -> Response {
    use axum::http::{HeaderValue, header};
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Counts every request and its latency by route template and status.
async fn record_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", status),
    ];
    metrics::counter!(actors::metrics::HTTP_REQUESTS_TOTAL, &labels).increment(1);
    metrics::histogram!(actors::metrics::HTTP_REQUEST_DURATION_SECONDS, &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The method as a metrics label: the standard ones by name, anything a
/// client invented as `other`, so no client can grow the label set.
fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "CONNECT" => "CONNECT",
        _ => "other",
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
