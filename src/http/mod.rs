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
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

mod admin;
mod auth;
mod drivers;
pub mod error;
mod health;
mod orders;
mod restaurants;

pub use auth::bearer;
pub use error::ApiError;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub engine: Engine,
    pub tokens: Arc<Tokens>,
    pub settings: Arc<Settings>,
    pub login_limiter: Arc<DefaultKeyedRateLimiter<String>>,
    pub location_limiter: Arc<DefaultKeyedRateLimiter<i64>>,
    pub metrics: PrometheusHandle,
    /// Cancelled on SIGTERM / Ctrl-C: sockets close with 1001.
    pub shutdown: CancellationToken,
    /// Open WebSocket sessions, so shutdown can wait for their close frames.
    pub live_sessions: TaskTracker,
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
        let per_minute =
            NonZeroU32::new(settings.auth.login_attempts_per_minute).unwrap_or(NonZeroU32::MIN);
        let per_second =
            NonZeroU32::new(settings.drivers.location_updates_per_sec).unwrap_or(NonZeroU32::MIN);
        AppState {
            store,
            engine,
            tokens: Arc::new(tokens),
            login_limiter: Arc::new(RateLimiter::keyed(Quota::per_minute(per_minute))),
            location_limiter: Arc::new(RateLimiter::keyed(Quota::per_second(per_second))),
            settings: Arc::new(settings),
            metrics,
            shutdown,
            live_sessions: TaskTracker::new(),
        }
    }
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: AppState) -> Router {
    let body_limit = state.settings.server.body_limit_bytes;
    let api = Router::new()
        .merge(auth::router())
        .merge(restaurants::router())
        .merge(orders::router())
        .merge(drivers::router())
        .merge(admin::router());
    Router::new()
        .nest("/api", api)
        .route("/ws", axum::routing::get(crate::ws::upgrade))
        .merge(crate::web::router())
        .merge(health::router())
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
                .layer(axum::middleware::from_fn(record_metrics)),
        )
        .with_state(state)
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
