//! Every query string the API parses: the first byte picks the endpoint,
//! the rest is the query. Each goes through the real `QueryParams`
//! extractor (form_urlencoded, then serde_urlencoded through
//! serde_path_to_error, dropping each parameter of the wrong type) and then
//! the handler's own range checks, and a refusal is rendered as the handler
//! would answer it.
//!
//! The four query types are private to their handler files, so they are
//! mirrored here field for field (same names, same serde attributes): keep
//! them in step with `src/http/{restaurants,orders,drivers,webhooks}.rs`.
#![no_main]

use actors::domain::input::Problems;
use axum::extract::FromRequestParts;
use axum::response::IntoResponse;
use dispatchd::http::error::{ApiError, QueryParams};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use std::future::Future;
use std::task::{Context, Poll, Waker};

/// `GET /api/restaurants`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RestaurantQuery {
    lat: Option<f64>,
    lon: Option<f64>,
    radius_km: Option<f64>,
    cuisine: Option<String>,
    open_only: Option<bool>,
    limit: Option<i64>,
}

/// `GET /api/orders`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderQuery {
    status: Option<String>,
    limit: Option<i64>,
    before: Option<i64>,
}

/// `GET /api/drivers/nearby`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NearbyQuery {
    lat: Option<f64>,
    lon: Option<f64>,
    radius_km: Option<f64>,
    limit: Option<i64>,
}

/// `GET /api/webhooks/{id}/deliveries`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryQuery {
    limit: Option<i64>,
    before: Option<i64>,
}

/// The extractor has no await point that can wait: one poll must finish
/// it (a `Pending` here would be a hang in the server).
fn extract<T: serde::de::DeserializeOwned>(
    parts: &mut axum::http::request::Parts,
) -> Result<(T, Problems), ApiError> {
    let mut future = std::pin::pin!(QueryParams::<T>::from_request_parts(parts, &()));
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result.map(|QueryParams(q, p)| (q, p)),
        Poll::Pending => panic!("the query extractor waited"),
    }
}

fn checks(which: u8, parts: &mut axum::http::request::Parts) -> Result<(), ApiError> {
    match which % 4 {
        0 => {
            let (q, mut p) = extract::<RestaurantQuery>(parts)?;
            if q.lat.is_some() || q.lon.is_some() {
                p.lat_lon("", q.lat, q.lon);
            }
            p.number("radiusKm", q.radius_km.or(Some(10.0)), 0.1, 500.0);
            p.int("limit", q.limit.or(Some(50)), 1, 100);
            p.optional_text("cuisine", &q.cuisine, 50);
            let _ = q.open_only;
            p.finish(|| ())?;
        }
        1 => {
            let (q, mut p) = extract::<OrderQuery>(parts)?;
            if let Some(status) = q.status.as_deref()
                && status.parse::<actors::domain::model::OrderStatus>().is_err()
            {
                p.add("status", "must be one of the statuses");
            }
            p.int("limit", q.limit.or(Some(50)), 1, 100);
            if let Some(before) = q.before {
                p.int("before", Some(before), 1, i64::MAX);
            }
            p.finish(|| ())?;
        }
        2 => {
            let (q, mut p) = extract::<NearbyQuery>(parts)?;
            p.lat_lon("", q.lat, q.lon);
            p.number("radiusKm", q.radius_km.or(Some(5.0)), 0.01, 100.0);
            p.int("limit", q.limit.or(Some(20)), 1, 500);
            p.finish(|| ())?;
        }
        _ => {
            let (q, mut p) = extract::<DeliveryQuery>(parts)?;
            p.int("limit", q.limit.or(Some(50)), 1, 100);
            if let Some(before) = q.before {
                p.int("before", Some(before), 1, i64::MAX);
            }
            p.finish(|| ())?;
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, query)) = data.split_first() else {
        return;
    };
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    // hyper hands the handlers only what parses as a request target.
    let Ok(request) = axum::http::Request::builder()
        .uri(format!("/api/x?{query}"))
        .body(())
    else {
        return;
    };
    let (mut parts, ()) = request.into_parts();
    if let Err(refused) = checks(which, &mut parts) {
        let response = refused.into_response();
        assert!(
            response.status().is_client_error(),
            "a query was answered {}",
            response.status()
        );
    }
});
