//! The web pages dispatchd serves itself (being written): the operator
//! console, the customer tracking page and the restaurant tablet.

use crate::http::AppState;
use axum::Router;

pub fn router() -> Router<AppState> {
    Router::new()
}
