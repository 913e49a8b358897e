//! Webhook endpoints, admins only: `POST/GET /api/webhooks`,
//! `GET/PATCH/DELETE /api/webhooks/{id}`, the delivery log
//! `GET /api/webhooks/{id}/deliveries` and
//! `POST /api/webhooks/{id}/deliveries/{deliveryId}/replay`.

use super::auth::Authenticated;
use super::error::{JsonBody, QueryParams, path_id};
use super::{ApiError, AppState};
use crate::events::store::{Delivery, Webhook};
use crate::events::webhooks::{NewWebhookInput, Refused, Webhooks};
use actors::domain::events::EVENT_TYPES;
use actors::domain::input::FieldError;
use actors::domain::model::Role;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const MAX_URL: usize = 2048;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show, update, remove))
        .routes(routes!(deliveries))
        .routes(routes!(replay))
}

#[derive(Serialize, utoipa::ToSchema)]
struct WebhookBody {
    webhook: Webhook,
}

#[derive(Serialize, utoipa::ToSchema)]
struct CreatedWebhook {
    webhook: Webhook,
    /// The HMAC secret that signs deliveries: shown this once.
    secret: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct DeliveryBody {
    delivery: Delivery,
}

fn admin(state: &AppState, who: &Authenticated) -> Result<Webhooks, ApiError> {
    who.require(&[Role::Admin])?;
    state
        .webhooks
        .clone()
        .ok_or_else(|| ApiError::Internal("webhooks are not running".into()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = NewWebhookInput)]
struct CreateInput {
    /// An `https` URL (or `http` to loopback when allowed), not to a
    /// private address.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 2048)]
    url: Option<String>,
    /// Empty or missing: every type.
    #[schema(max_items = 13)]
    event_types: Option<Vec<String>>,
    /// Only this restaurant's events.
    restaurant_id: Option<i64>,
}

#[utoipa::path(post, path = "/webhooks", tag = "webhooks",
    security(("bearer" = [])),
    request_body = CreateInput,
    responses(
        (status = 201, body = CreatedWebhook),
        (status = 403, description = "FORBIDDEN: admins only"),
    ))]
async fn create(
    State(state): State<AppState>,
    who: Authenticated,
    JsonBody { value: input, .. }: JsonBody<CreateInput>,
) -> Result<(StatusCode, Json<CreatedWebhook>), ApiError> {
    let webhooks = admin(&state, &who)?;
    let mut problems = Vec::new();
    let url = input.url.unwrap_or_default();
    if url.is_empty() || url.len() > MAX_URL {
        problems.push(FieldError {
            field: "url".into(),
            message: format!("must be 1..{MAX_URL} characters"),
        });
    }
    let event_types = input.event_types.unwrap_or_default();
    if event_types.len() > EVENT_TYPES.len() {
        problems.push(FieldError {
            field: "eventTypes".into(),
            message: format!("at most {} entries", EVENT_TYPES.len()),
        });
    }
    for (i, t) in event_types.iter().enumerate() {
        if !EVENT_TYPES.contains(&t.as_str()) {
            problems.push(FieldError {
                field: format!("eventTypes[{i}]"),
                message: format!("must be one of {}", EVENT_TYPES.join(", ")),
            });
        }
    }
    if let Some(id) = input.restaurant_id {
        let exists = id > 0 && state.store.restaurant(id).await?.is_some();
        if !exists {
            problems.push(FieldError {
                field: "restaurantId".into(),
                message: "no such restaurant".into(),
            });
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::Validation(problems));
    }
    let created = webhooks
        .create(NewWebhookInput {
            url,
            event_types,
            restaurant_id: input.restaurant_id,
        })
        .await;
    match created {
        Ok((webhook, secret)) => Ok((
            StatusCode::CREATED,
            Json(CreatedWebhook { webhook, secret }),
        )),
        Err(Refused::Url(message)) => Err(ApiError::field("url", message)),
        Err(refused @ Refused::TooMany(_)) => Err(ApiError::BadRequest(refused.to_string())),
        Err(Refused::Store(error)) => Err(error.into()),
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct WebhookList {
    webhooks: Vec<Webhook>,
}

#[utoipa::path(get, path = "/webhooks", tag = "webhooks",
    security(("bearer" = [])),
    responses(
        (status = 200, body = WebhookList),
        (status = 403, description = "FORBIDDEN: admins only"),
    ))]
async fn list(
    State(state): State<AppState>,
    who: Authenticated,
) -> Result<Json<WebhookList>, ApiError> {
    let webhooks = admin(&state, &who)?;
    Ok(Json(WebhookList {
        webhooks: webhooks.store().webhooks().await?,
    }))
}

async fn find(webhooks: &Webhooks, raw: &str) -> Result<Webhook, ApiError> {
    let id = path_id(raw, "webhook")?;
    webhooks
        .store()
        .webhook(id)
        .await?
        .ok_or(ApiError::NotFound("webhook"))
}

#[utoipa::path(get, path = "/webhooks/{id}", tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)),
    responses(
        (status = 200, body = WebhookBody),
        (status = 403, description = "FORBIDDEN: admins only"),
    ))]
async fn show(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<WebhookBody>, ApiError> {
    let webhooks = admin(&state, &who)?;
    Ok(Json(WebhookBody {
        webhook: find(&webhooks, &id).await?,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = WebhookPatchInput)]
struct UpdateInput {
    enabled: bool,
}

/// Enables or disables a webhook (enabling one that failed clears its reason).
#[utoipa::path(patch, path = "/webhooks/{id}", tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)),
    request_body = UpdateInput,
    responses(
        (status = 200, body = WebhookBody),
        (status = 403, description = "FORBIDDEN: admins only"),
    ))]
async fn update(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
    JsonBody { value: input, .. }: JsonBody<UpdateInput>,
) -> Result<Json<WebhookBody>, ApiError> {
    let webhooks = admin(&state, &who)?;
    let id = find(&webhooks, &id).await?.id;
    let webhook = webhooks
        .set_enabled(id, input.enabled)
        .await?
        .ok_or(ApiError::NotFound("webhook"))?;
    Ok(Json(WebhookBody { webhook }))
}

#[utoipa::path(delete, path = "/webhooks/{id}", tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "FORBIDDEN: admins only"),
    ))]
async fn remove(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let webhooks = admin(&state, &who)?;
    let id = path_id(&id, "webhook")?;
    if webhooks.delete(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("webhook"))
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeliveryQuery {
    #[param(minimum = 1, maximum = 200, default = 50)]
    limit: Option<i64>,
    /// Deliveries with ids below this one (the next page).
    before: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct DeliveryList {
    deliveries: Vec<Delivery>,
}

/// A webhook's delivery log, newest first.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1), DeliveryQuery),
    responses(
        (status = 200, body = DeliveryList),
        (status = 403, description = "FORBIDDEN: admins only"),
    ))]
async fn deliveries(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
    QueryParams(query, mut problems): QueryParams<DeliveryQuery>,
) -> Result<Json<DeliveryList>, ApiError> {
    let webhooks = admin(&state, &who)?;
    let limit = problems.int("limit", query.limit.or(Some(50)), 1, 200);
    problems.finish(|| ())?;
    let id = find(&webhooks, &id).await?.id;
    Ok(Json(DeliveryList {
        deliveries: webhooks.store().deliveries(id, query.before, limit).await?,
    }))
}

/// Sends a delivery again, as a new delivery.
#[utoipa::path(post, path = "/webhooks/{id}/deliveries/{delivery_id}/replay", tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1), ("delivery_id" = i64, Path, minimum = 1)),
    responses(
        (status = 202, body = DeliveryBody),
        (status = 403, description = "FORBIDDEN: admins only"),
    ))]
async fn replay(
    State(state): State<AppState>,
    who: Authenticated,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<DeliveryBody>), ApiError> {
    let webhooks = admin(&state, &who)?;
    let id = find(&webhooks, &id).await?.id;
    let delivery_id = path_id(&delivery_id, "delivery")?;
    let delivery = webhooks
        .replay(id, delivery_id)
        .await?
        .ok_or(ApiError::NotFound("delivery"))?;
    Ok((StatusCode::ACCEPTED, Json(DeliveryBody { delivery })))
}
