//! The HTTP boundary's one error type, its status codes and its body
//! (CONTRACT.md "Errors"), plus the body and query extractors that answer
//! in that shape instead of axum's plain-text rejections.

use actors::domain::input::{FieldError, Parse, Problems};
use actors::domain::lifecycle::Refusal;
use actors::engine::order::CommandError;
use actors::store::StoreError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request failed validation")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    BadRequest(String),
    #[error("missing, malformed or expired token")]
    Unauthorized,
    #[error("wrong email or password")]
    InvalidCredentials,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    InvalidTransition(String),
    #[error("{0}")]
    VersionConflict(String),
    #[error("email already registered")]
    EmailTaken,
    #[error("a request with this idempotency key is still being processed")]
    IdempotencyInProgress,
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("the restaurant is closed")]
    RestaurantClosed,
    #[error("some items are unavailable")]
    ItemUnavailable(Vec<FieldError>),
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    OutOfZone(String),
    #[error("this idempotency key was used with a different request body")]
    IdempotencyKeyReused,
    #[error("too many requests, slow down")]
    RateLimited,
    #[error("the request took too long")]
    RequestTimeout,
    #[error("{0}")]
    LimitReached(String),
    #[error("the store is unavailable; nothing was changed")]
    StoreUnavailable,
    /// Core actors are down (restarting) or live orders are being read
    /// back: `details` names each (`/readyz` only).
    #[error("the engine is not ready")]
    EngineUnavailable(Vec<FieldError>),
    /// Cluster mode: the order's region is not this node's (any more);
    /// `details` name the region and, when known, the node serving it.
    #[error("{}", not_served_message(region, owner.as_deref()))]
    NotServedHere {
        region: String,
        owner: Option<String>,
        details: Vec<FieldError>,
    },
    #[error("internal error")]
    Internal(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: String,
    code: &'a str,
    details: &'a [FieldError],
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::InvalidTransition(_)
            | ApiError::VersionConflict(_)
            | ApiError::EmailTaken
            | ApiError::IdempotencyInProgress
            | ApiError::LimitReached(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RestaurantClosed
            | ApiError::ItemUnavailable(_)
            | ApiError::OutOfRange(_)
            | ApiError::OutOfZone(_)
            | ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::StoreUnavailable
            | ApiError::EngineUnavailable(_)
            | ApiError::NotServedHere { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation(_) | ApiError::BadRequest(_) => "VALIDATION_ERROR",
            ApiError::Unauthorized => "UNAUTHORIZED",
            ApiError::InvalidCredentials => "INVALID_CREDENTIALS",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ApiError::InvalidTransition(_) => "INVALID_TRANSITION",
            ApiError::VersionConflict(_) => "VERSION_CONFLICT",
            ApiError::EmailTaken => "EMAIL_TAKEN",
            ApiError::IdempotencyInProgress => "IDEMPOTENCY_IN_PROGRESS",
            ApiError::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ApiError::RestaurantClosed => "RESTAURANT_CLOSED",
            ApiError::ItemUnavailable(_) => "ITEM_UNAVAILABLE",
            ApiError::OutOfRange(_) => "OUT_OF_RANGE",
            ApiError::OutOfZone(_) => "OUT_OF_ZONE",
            ApiError::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            ApiError::RateLimited => "RATE_LIMITED",
            ApiError::RequestTimeout => "REQUEST_TIMEOUT",
            ApiError::LimitReached(_) => "LIMIT_REACHED",
            ApiError::StoreUnavailable => "STORE_UNAVAILABLE",
            ApiError::EngineUnavailable(_) | ApiError::NotServedHere { .. } => "ENGINE_UNAVAILABLE",
            ApiError::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// One error of each kind, in the order of `code()`: what the
    /// documents list. The match makes a new variant come here too.
    pub fn examples() -> Vec<ApiError> {
        let text = String::new;
        let all = vec![
            ApiError::Validation(Vec::new()),
            ApiError::BadRequest(text()),
            ApiError::Unauthorized,
            ApiError::InvalidCredentials,
            ApiError::Forbidden(text()),
            ApiError::NotFound("route"),
            ApiError::MethodNotAllowed,
            ApiError::InvalidTransition(text()),
            ApiError::VersionConflict(text()),
            ApiError::EmailTaken,
            ApiError::IdempotencyInProgress,
            ApiError::PayloadTooLarge,
            ApiError::RestaurantClosed,
            ApiError::ItemUnavailable(Vec::new()),
            ApiError::OutOfRange(text()),
            ApiError::OutOfZone(text()),
            ApiError::IdempotencyKeyReused,
            ApiError::RateLimited,
            ApiError::RequestTimeout,
            ApiError::LimitReached(text()),
            ApiError::StoreUnavailable,
            ApiError::EngineUnavailable(Vec::new()),
            ApiError::Internal(text()),
        ];
        for example in &all {
            match example {
                ApiError::Validation(_)
                | ApiError::BadRequest(_)
                | ApiError::Unauthorized
                | ApiError::InvalidCredentials
                | ApiError::Forbidden(_)
                | ApiError::NotFound(_)
                | ApiError::MethodNotAllowed
                | ApiError::InvalidTransition(_)
                | ApiError::VersionConflict(_)
                | ApiError::EmailTaken
                | ApiError::IdempotencyInProgress
                | ApiError::PayloadTooLarge
                | ApiError::RestaurantClosed
                | ApiError::ItemUnavailable(_)
                | ApiError::OutOfRange(_)
                | ApiError::OutOfZone(_)
                | ApiError::IdempotencyKeyReused
                | ApiError::RateLimited
                | ApiError::RequestTimeout
                | ApiError::LimitReached(_)
                | ApiError::StoreUnavailable
                | ApiError::EngineUnavailable(_)
                | ApiError::Internal(_) => {}
                // Answered as ENGINE_UNAVAILABLE, listed once above.
                ApiError::NotServedHere { .. } => {}
            }
        }
        all
    }

    /// Cluster mode: the order's region is held by another node (`owner`,
    /// when known) or by none just now.
    pub fn not_served_here(region: String, owner: Option<String>) -> ApiError {
        let mut details = vec![FieldError {
            field: "region".into(),
            message: region.clone(),
        }];
        if let Some(owner) = &owner {
            details.push(FieldError {
                field: "node".into(),
                message: owner.clone(),
            });
        }
        ApiError::NotServedHere {
            region,
            owner,
            details,
        }
    }

    /// A single-field validation failure.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }
}

fn not_served_message(region: &str, owner: Option<&str>) -> String {
    match owner {
        Some(owner) => format!(
            "this node does not serve region {region}, where the order is: node {owner} serves it; nothing was changed"
        ),
        None => format!(
            "this node does not serve region {region}, where the order is, and no node holds it just now; nothing was changed"
        ),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            // The detail stays in the log (with the request id of the
            // enclosing span); the client learns nothing of it.
            tracing::error!(%detail, "Request failed");
        }
        let details = match &self {
            ApiError::Validation(d)
            | ApiError::ItemUnavailable(d)
            | ApiError::EngineUnavailable(d)
            | ApiError::NotServedHere { details: d, .. } => d.as_slice(),
            _ => &[],
        };
        let body = ErrorBody {
            error: self.to_string(),
            code: self.code(),
            details,
        };
        (self.status_code(), axum::Json(body)).into_response()
    }
}

impl From<crate::auth::HashError> for ApiError {
    fn from(error: crate::auth::HashError) -> Self {
        match error {
            crate::auth::HashError::Busy => ApiError::RateLimited,
            crate::auth::HashError::Failed(detail) => ApiError::Internal(detail),
        }
    }
}

impl From<Vec<FieldError>> for ApiError {
    fn from(details: Vec<FieldError>) -> Self {
        ApiError::Validation(details)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "Store unavailable");
                ApiError::StoreUnavailable
            }
            StoreError::Conflict => {
                ApiError::VersionConflict("the order changed meanwhile; reload it".into())
            }
            StoreError::EmailTaken => ApiError::EmailTaken,
            StoreError::UnknownReference => ApiError::Unauthorized,
            StoreError::NotServed { region, owner } => ApiError::not_served_here(region, owner),
            StoreError::Internal(detail) => ApiError::Internal(detail),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::NotVisible => ApiError::NotFound("order"),
            Refusal::Forbidden { .. } => ApiError::Forbidden(refusal.to_string()),
            Refusal::InvalidTransition { .. } | Refusal::NoDriverAssigned => {
                ApiError::InvalidTransition(refusal.to_string())
            }
            Refusal::VersionConflict { .. } => ApiError::VersionConflict(refusal.to_string()),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::Refused(refusal) => refusal.into(),
            CommandError::Store(error) => error.into(),
            CommandError::Unavailable => ApiError::StoreUnavailable,
        }
    }
}

/// A JSON body, parsed with every field of the wrong type listed in the
/// error, and kept raw too (the idempotency check hashes what the client
/// sent). For inputs with rules of their own, use [`ValidBody`].
pub struct JsonBody<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let raw = read_body(req, state).await?;
        let (value, wrong_types) = parse_json(&raw)?;
        if !wrong_types.is_empty() {
            return Err(ApiError::Validation(wrong_types));
        }
        Ok(JsonBody { value, raw })
    }
}

/// A JSON body checked by its input's rules: the failure lists every
/// failing field, those of the wrong JSON type and those out of range
/// together (CONTRACT.md "Validation"). Only a body that is not JSON at all
/// is refused here; `parsed` waits for the handler, so that a caller who
/// may not do this at all hears 403 before any 400 about the body.
pub struct ValidBody<T: Parse> {
    pub parsed: Result<T::Output, ApiError>,
    pub raw: Bytes,
}

impl<S, T> FromRequest<S> for ValidBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Parse,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let raw = read_body(req, state).await?;
        let (input, wrong_types) = parse_json::<T>(&raw)?;
        let mut problems = Problems::after_type_errors(wrong_types);
        let parsed = match input.parse() {
            Ok(value) => problems.finish(|| value),
            Err(failed) => {
                problems.extend(failed);
                problems.finish(|| unreachable!("a parser that failed reported why"))
            }
        };
        Ok(ValidBody {
            parsed: parsed.map_err(ApiError::Validation),
            raw,
        })
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest(format!(
                "could not read the request body: {}",
                rejection.body_text()
            ))
        }
    })
}

/// More wrong fields than this in one body are not worth listing.
const MAX_TYPE_ERRORS: usize = 50;

/// Parses JSON into `T`, listing every field of the wrong JSON type
/// (`items[0].quantity`) instead of stopping at the first: each one found
/// is blanked (null, then `{}` for a required object) and the parse tried
/// again. Every input's fields are optional, so a blanked field reads as
/// missing and its rules stay quiet about it ([`Problems::after_type_errors`]).
pub fn parse_json<T: DeserializeOwned>(raw: &[u8]) -> Result<(T, Vec<FieldError>), ApiError> {
    let mut value: serde_json::Value = serde_json::from_slice(raw)
        .map_err(|error| ApiError::BadRequest(format!("malformed JSON body: {error}")))?;
    let mut wrong = Vec::<FieldError>::new();
    for _ in 0..MAX_TYPE_ERRORS {
        let error = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(parsed) => return Ok((parsed, wrong)),
            Err(error) => error,
        };
        let segments: Vec<Segment> = error.path().iter().cloned().collect();
        let field = error.path().to_string();
        let message = error.into_inner().to_string();
        if segments.is_empty() {
            // The body as a whole is of the wrong shape (an array, a
            // number), or a field the rules cannot blank is missing.
            return Err(if wrong.is_empty() {
                ApiError::BadRequest(format!("the body must be a JSON object: {message}"))
            } else {
                ApiError::Validation(wrong)
            });
        }
        if !wrong.iter().any(|w| w.field == field) {
            wrong.push(FieldError { field, message });
        }
        if !blank(&mut value, &segments) {
            return Err(ApiError::Validation(wrong));
        }
    }
    Err(ApiError::Validation(wrong))
}

/// Replaces the value at `path` with the next thing to try in its place:
/// null, then an empty object. False when there is nothing left to try.
fn blank(value: &mut serde_json::Value, path: &[Segment]) -> bool {
    let mut at = value;
    for segment in path {
        let next = match segment {
            Segment::Map { key } => at.get_mut(key.as_str()),
            Segment::Seq { index } => at.get_mut(*index),
            _ => None,
        };
        match next {
            Some(next) => at = next,
            None => return false,
        }
    }
    match at {
        serde_json::Value::Null => {
            *at = serde_json::Value::Object(Default::default());
            true
        }
        serde_json::Value::Object(map) if map.is_empty() => false,
        _ => {
            *at = serde_json::Value::Null;
            true
        }
    }
}

/// A query string, parsed with every parameter of the wrong type named; the
/// handler's range checks continue on the same [`Problems`].
pub struct QueryParams<T>(pub T, pub Problems);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let mut wrong = Vec::<FieldError>::new();
        // Each pass drops the parameter that failed, so every bad one is
        // named; there are at most as many passes as parameters.
        loop {
            let encoded = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&pairs)
                .finish();
            let deserializer =
                serde_urlencoded::Deserializer::new(form_urlencoded::parse(encoded.as_bytes()));
            let error = match serde_path_to_error::deserialize::<_, T>(deserializer) {
                Ok(parsed) => return Ok(QueryParams(parsed, Problems::after_type_errors(wrong))),
                Err(error) => error,
            };
            let field = error.path().to_string();
            let message = error.into_inner().to_string();
            let before = pairs.len();
            pairs.retain(|(key, _)| *key != field);
            wrong.push(FieldError { field, message });
            if pairs.len() == before {
                return Err(ApiError::Validation(wrong));
            }
        }
    }
}

/// A numeric id from the path; anything else is a 404, as for an id that
/// does not exist.
pub fn path_id(raw: &str, what: &'static str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or(ApiError::NotFound(what))
}
