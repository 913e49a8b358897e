//! Accounts: register, log in, who am I; and the `Authenticated` extractor
//! every protected handler takes.

use super::error::{JsonBody, ValidBody};
use super::{ApiError, AppState};
use crate::auth::{self, caller};
use actors::domain::input::RegistrationInput;
use actors::domain::model::{Caller, Driver, Role, User};
use actors::metrics as m;
use actors::store::NewUser;
use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(me))
}

/// The caller behind a valid bearer token. Rejects with 401 UNAUTHORIZED.
pub struct Authenticated(pub Caller);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or(ApiError::Unauthorized)?;
        state
            .tokens
            .verify(token)
            .map(Authenticated)
            .ok_or(ApiError::Unauthorized)
    }
}

/// The token of an `Authorization: Bearer ...` header.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

impl Authenticated {
    /// Refuses callers whose role is not among `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<&Caller, ApiError> {
        if roles.contains(&self.0.role) {
            Ok(&self.0)
        } else {
            Err(ApiError::Forbidden(format!(
                "{} may not do this",
                self.0.role
            )))
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct TokenResponse {
    token: String,
    user: User,
}

/// Creates a customer or driver account and logs it in. Drivers wait for
/// an admin's approval before they can go online.
#[utoipa::path(post, path = "/auth/register", tag = "auth",
    request_body = RegistrationInput,
    responses(
        (status = 201, body = TokenResponse),
        (status = 409, description = "EMAIL_TAKEN"),
        (status = 429, description = "RATE_LIMITED: the password hashers are busy"),
    ))]
async fn register(
    State(state): State<AppState>,
    ValidBody { parsed, .. }: ValidBody<RegistrationInput>,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    let registration = parsed?;
    let password_hash = auth::hash_password(registration.password).await?;
    let user = state
        .store
        .create_user(NewUser {
            email: registration.email,
            password_hash,
            name: registration.name,
            role: registration.role,
            vehicle_type: registration.vehicle_type,
            restaurant_id: None,
        })
        .await?;
    let token = issue(&state, caller(user.id, user.role, None))?;
    tracing::info!(user_id = user.id, role = %user.role, "User registered");
    Ok((StatusCode::CREATED, Json(TokenResponse { token, user })))
}

fn issue(state: &AppState, caller: Caller) -> Result<String, ApiError> {
    state
        .tokens
        .issue(&caller)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct LoginInput {
    #[schema(value_type = String, required = true, min_length = 1, max_length = 254)]
    email: Option<String>,
    #[schema(value_type = String, required = true, min_length = 1, max_length = 128)]
    password: Option<String>,
}

/// Exchanges an email and password for a token.
#[utoipa::path(post, path = "/auth/login", tag = "auth",
    request_body = LoginInput,
    responses(
        (status = 200, body = TokenResponse),
        (status = 401, description = "INVALID_CREDENTIALS"),
        (status = 429, description = "RATE_LIMITED: too many failed logins"),
    ))]
async fn login(
    State(state): State<AppState>,
    super::serve::ClientAddr(client): super::serve::ClientAddr,
    JsonBody { value: input, .. }: JsonBody<LoginInput>,
) -> Result<Json<TokenResponse>, ApiError> {
    let mut problems = actors::domain::input::Problems::default();
    let email = problems
        .text("email", &input.email, 1, 254)
        .trim()
        .to_lowercase();
    let password = problems.text("password", &input.password, 1, 128);
    problems.finish(|| ())?;

    // Checked before the password, so a blocked guesser learns nothing;
    // only failures count, so a user who knows the password is never
    // limited by their own logins.
    if let Some(limit) = state.login_limits.blocked(&email, client) {
        metrics::counter!(m::RATE_LIMITED_TOTAL, "limit" => limit).increment(1);
        return Err(ApiError::RateLimited);
    }
    let account = state.store.account_by_email(&email).await?;
    let stored_hash = account.as_ref().map(|a| a.password_hash.clone());
    if !auth::verify_password(password, stored_hash).await? {
        metrics::counter!(m::LOGIN_FAILURES_TOTAL).increment(1);
        state.login_limits.failed(&email, client);
        return Err(ApiError::InvalidCredentials);
    }
    let account = account.ok_or(ApiError::InvalidCredentials)?;
    let token = issue(
        &state,
        caller(account.user.id, account.user.role, account.restaurant_id),
    )?;
    Ok(Json(TokenResponse {
        token,
        user: account.user,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct MeResponse {
    user: User,
    #[serde(skip_serializing_if = "Option::is_none")]
    driver: Option<Driver>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restaurant_id: Option<i64>,
    /// Drivers only: false until an admin approves the driver.
    #[serde(skip_serializing_if = "Option::is_none")]
    approved: Option<bool>,
}

/// The caller's account; for drivers their profile and approval too.
#[utoipa::path(get, path = "/me", tag = "auth",
    security(("bearer" = [])),
    responses((status = 200, body = MeResponse)))]
async fn me(
    State(state): State<AppState>,
    who: Authenticated,
) -> Result<Json<MeResponse>, ApiError> {
    // A valid token for an account that no longer exists is no longer valid.
    let account = state
        .store
        .account_by_id(who.0.user_id)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let (driver, approved) = match account.user.role {
        Role::Driver => (
            state.store.driver(account.user.id).await?,
            state.store.driver_approved(account.user.id).await?,
        ),
        _ => (None, None),
    };
    Ok(Json(MeResponse {
        user: account.user,
        driver,
        restaurant_id: account.restaurant_id,
        approved,
    }))
}
