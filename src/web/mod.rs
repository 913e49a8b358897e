//! The web pages dispatchd serves itself: the operator console (`/`), the
//! customer tracking page (`/track/{orderId}`) and the restaurant tablet
//! (`/restaurant`), the API reference (`/api/reference`), with their CSS and JavaScript modules under `/assets/`.
//!
//! The pages are plain HTML, CSS and ES modules embedded in the binary, so
//! running the engine needs no build step and no Node. They talk to the
//! engine only through the public API of CONTRACT.md (REST, `/ws`,
//! `/metrics`), exactly like any other client; nothing here reads the store.

use crate::http::{ApiError, AppState};
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

const CONSOLE_PAGE: &str = include_str!("static/console.html");
const TRACK_PAGE: &str = include_str!("static/track.html");
const RESTAURANT_PAGE: &str = include_str!("static/restaurant.html");
const API_PAGE: &str = include_str!("static/api.html");

/// Everything under `/assets/`: name, content type, body.
const ASSETS: [(&str, &str, &str); 8] = [
    ("app.css", CSS, include_str!("static/app.css")),
    ("common.js", JS, include_str!("static/common.js")),
    ("map.js", JS, include_str!("static/map.js")),
    ("console.js", JS, include_str!("static/console.js")),
    ("track.js", JS, include_str!("static/track.js")),
    ("restaurant.js", JS, include_str!("static/restaurant.js")),
    ("api.js", JS, include_str!("static/api.js")),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("static/favicon.svg"),
    ),
];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { page(CONSOLE_PAGE) }))
        // The order id is read by the page's script; the server serves the
        // same page for any id and the API answers whether it exists.
        .route("/track/{order_id}", get(|| async { page(TRACK_PAGE) }))
        .route("/restaurant", get(|| async { page(RESTAURANT_PAGE) }))
        // The API reference, from the engine's own documents (no CDN).
        .route("/api/reference", get(|| async { page(API_PAGE) }))
        .route("/assets/{file}", get(asset))
}

/// Pages load only their own scripts, styles and sockets, and may not be
/// framed by another site (clickjacking the console's buttons).
const PAGE_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

fn page(body: &'static str) -> Response {
    let mut response = embedded(HTML, body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .map(|(_, content_type, body)| embedded(content_type, body))
        .ok_or(ApiError::NotFound("asset"))
}

/// An embedded file. `no-cache` lets browsers keep a copy but revalidate it,
/// so a page never runs against an older script after an upgrade.
fn embedded(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn is_known_asset(name: &str) -> bool {
        ASSETS.iter().any(|(known, _, _)| *known == name)
    }

    #[tokio::test]
    async fn assets_are_served_with_their_content_type_and_no_cache() {
        let response = asset(Path("console.js".to_owned())).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], JS);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
        let response = asset(Path("app.css".to_owned())).await.unwrap();
        assert_eq!(response.headers()[header::CONTENT_TYPE], CSS);
    }

    #[tokio::test]
    async fn an_unknown_asset_is_the_usual_not_found_error() {
        for name in ["nope.js", "../mod.rs", ""] {
            let error = asset(Path(name.to_owned())).await.unwrap_err();
            assert!(matches!(error, ApiError::NotFound("asset")), "{name}");
        }
    }

    /// Every `/assets/NAME` a page links and every `./NAME` a module imports
    /// is embedded: a typo would otherwise show up only in a browser.
    #[test]
    fn every_referenced_asset_is_embedded() {
        let sources = [CONSOLE_PAGE, TRACK_PAGE, RESTAURANT_PAGE]
            .into_iter()
            .chain(ASSETS.iter().map(|(_, _, body)| *body));
        let mut checked = 0;
        for source in sources {
            for marker in ["/assets/", "from './"] {
                for (at, _) in source.match_indices(marker) {
                    let rest = &source[at + marker.len()..];
                    let end = rest.find(['"', '\'']).unwrap_or(rest.len());
                    let name = &rest[..end];
                    assert!(
                        is_known_asset(name),
                        "`{name}` is referenced but not embedded"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked >= 10, "only {checked} references found");
    }
}
