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
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const MAX_URL: usize = 2048;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks", post(create).get(list))
        .route("/webhooks/{id}", get(show).patch(update).delete(remove))
        .route("/webhooks/{id}/deliveries", get(deliveries))
        .route(
            "/webhooks/{id}/deliveries/{delivery_id}/replay",
            post(replay),
        )
}

fn admin(state: &AppState, who: &Authenticated) -> Result<Webhooks, ApiError> {
    who.require(&[Role::Admin])?;
    state
        .webhooks
        .clone()
        .ok_or_else(|| ApiError::Internal("webhooks are not running".into()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateInput {
    url: Option<String>,
    event_types: Option<Vec<String>>,
    restaurant_id: Option<i64>,
}

async fn create(
    State(state): State<AppState>,
    who: Authenticated,
    JsonBody { value: input, .. }: JsonBody<CreateInput>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
            Json(json!({ "webhook": webhook, "secret": secret })),
        )),
        Err(Refused::Url(message)) => Err(ApiError::field("url", message)),
        Err(refused @ Refused::TooMany(_)) => Err(ApiError::BadRequest(refused.to_string())),
        Err(Refused::Store(error)) => Err(error.into()),
    }
}

#[derive(Serialize)]
struct WebhookList {
    webhooks: Vec<Webhook>,
}

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

async fn show(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let webhooks = admin(&state, &who)?;
    Ok(Json(json!({ "webhook": find(&webhooks, &id).await? })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateInput {
    enabled: bool,
}

async fn update(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
    JsonBody { value: input, .. }: JsonBody<UpdateInput>,
) -> Result<Json<Value>, ApiError> {
    let webhooks = admin(&state, &who)?;
    let id = find(&webhooks, &id).await?.id;
    let webhook = webhooks
        .set_enabled(id, input.enabled)
        .await?
        .ok_or(ApiError::NotFound("webhook"))?;
    Ok(Json(json!({ "webhook": webhook })))
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryQuery {
    limit: Option<i64>,
    before: Option<i64>,
}

#[derive(Serialize)]
struct DeliveryList {
    deliveries: Vec<Delivery>,
}

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

async fn replay(
    State(state): State<AppState>,
    who: Authenticated,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let webhooks = admin(&state, &who)?;
    let id = find(&webhooks, &id).await?.id;
    let delivery_id = path_id(&delivery_id, "delivery")?;
    let delivery = webhooks
        .replay(id, delivery_id)
        .await?
        .ok_or(ApiError::NotFound("delivery"))?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "delivery": delivery }))))
}
