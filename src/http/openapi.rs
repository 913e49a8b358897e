//! The OpenAPI 3.1 document of the REST API, built from the handlers'
//! `#[utoipa::path]` annotations and the types' `ToSchema` derives, and
//! served at `GET /api/openapi.json`.
//!
//! The annotations say what is particular to an operation (its body, its
//! success, the errors only it can give); [`complete`] adds what every
//! operation shares, from the same facts the server acts on: a bearer
//! operation can answer 401, one with a body or a query 400 and 413, one
//! with an id in its path 404, and any of them 408, 500 and 503. Each
//! error response names the codes its status carries, from
//! [`ApiError::examples`].

use super::{ApiError, AppState};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use std::sync::Arc;

/// The document's frame: info, tags and the bearer scheme; the paths come
/// from the routes.
pub fn base() -> utoipa::openapi::OpenApi {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
    let mut doc = utoipa::openapi::OpenApiBuilder::new()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("dispatchd")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The REST API of dispatchd, a real-time dispatch engine for food delivery. \
                     Errors share one body (`Error`); the live protocol is the WebSocket at \
                     `/ws`, described by `/api/asyncapi.json`.",
                ))
                .build(),
        )
        .build();
    doc.components = Some(
        utoipa::openapi::ComponentsBuilder::new()
            .schema_from::<ErrorSchema>()
            .schema_from::<ErrorCode>()
            .schema_from::<actors::domain::input::FieldError>()
            .build(),
    );
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "The token from `POST /api/auth/register` or `POST /api/auth/login`.",
                ))
                .build(),
        ),
    );
    doc
}

/// The error body every failure carries (CONTRACT.md "Errors").
#[derive(utoipa::ToSchema)]
#[schema(as = Error)]
#[allow(dead_code)] // a schema only: `error::ErrorBody` is what is sent
pub struct ErrorSchema {
    /// A sentence for people.
    error: String,
    /// The machine-readable code; see [`ApiError::code`].
    #[schema(value_type = ErrorCode)]
    code: String,
    /// The failing fields (validation), the unavailable items, or the
    /// actors that are down (`/readyz`); empty otherwise.
    details: Vec<actors::domain::input::FieldError>,
}

/// Its schema is made in [`complete`] from [`ApiError::examples`].
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorCode(String);

/// The finished document, as served.
pub fn document() -> Value {
    complete(super::documented_routes().split_for_parts().1)
}

pub fn router(document: utoipa::openapi::OpenApi) -> Router<AppState> {
    let document = Arc::new(complete(document));
    Router::new().route(
        "/api/openapi.json",
        get(move || {
            let document = Arc::clone(&document);
            async move { Json(document.as_ref().clone()) }
        }),
    )
}

/// OpenAPI links: what a client (and schemathesis's stateful phase) can
/// do next with what a creation returned. (operation, status, link name,
/// target operation, target's `id` from the response body.)
const LINKS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "orders_create",
        "201",
        "ReadOrder",
        "orders_show",
        "/order/id",
    ),
    (
        "orders_create",
        "201",
        "OrderHistory",
        "orders_events",
        "/order/id",
    ),
    (
        "orders_create",
        "201",
        "MoveOrder",
        "orders_transition",
        "/order/id",
    ),
    (
        "restaurants_create",
        "201",
        "ReadRestaurant",
        "restaurants_show",
        "/restaurant/id",
    ),
    (
        "restaurants_create",
        "201",
        "ChangeRestaurant",
        "restaurants_update",
        "/restaurant/id",
    ),
    (
        "restaurants_create",
        "201",
        "AddMenuItem",
        "restaurants_add_menu_item",
        "/restaurant/id",
    ),
    (
        "restaurants_add_menu_item",
        "201",
        "ChangeMenuItem",
        "restaurants_update_menu_item",
        "/item/id",
    ),
    ("zones_create", "201", "ReadZone", "zones_show", "/zone/id"),
    (
        "zones_create",
        "201",
        "TestPoint",
        "zones_contains",
        "/zone/id",
    ),
    (
        "zones_create",
        "201",
        "DeleteZone",
        "zones_remove",
        "/zone/id",
    ),
    (
        "webhooks_create",
        "201",
        "ReadWebhook",
        "webhooks_show",
        "/webhook/id",
    ),
    (
        "webhooks_create",
        "201",
        "ChangeWebhook",
        "webhooks_update",
        "/webhook/id",
    ),
    (
        "webhooks_create",
        "201",
        "WebhookDeliveries",
        "webhooks_deliveries",
        "/webhook/id",
    ),
    (
        "webhooks_create",
        "201",
        "DeleteWebhook",
        "webhooks_remove",
        "/webhook/id",
    ),
];

fn add_links(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for operation in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
    {
        let id = operation["operationId"].as_str().unwrap_or("").to_owned();
        for (from, status, name, to, pointer) in LINKS.iter().filter(|l| l.0 == id) {
            debug_assert_eq!(*from, id);
            let response = &mut operation["responses"][*status];
            if response.is_object() {
                response["links"][*name] = json!({
                    "operationId": to,
                    "parameters": { "id": format!("$response.body#{pointer}") },
                });
            }
        }
    }
}

/// Type aliases (`UserId = i64`) come out as schemas named after the
/// primitive (`i64`) and references to them; a client wants the integer.
pub(super) fn inline_aliases(doc: &mut Value) {
    let Some(schemas) = doc["components"]["schemas"].as_object_mut() else {
        return;
    };
    let aliases: Vec<(String, Value)> = schemas
        .iter()
        .filter(|(name, _)| name.starts_with(|c: char| c.is_ascii_lowercase()))
        .map(|(name, schema)| (format!("#/components/schemas/{name}"), schema.clone()))
        .collect();
    schemas.retain(|name, _| !name.starts_with(|c: char| c.is_ascii_lowercase()));
    fn walk(value: &mut Value, aliases: &[(String, Value)]) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref")
                    && let Some((_, schema)) = aliases.iter().find(|(r, _)| r == target)
                {
                    *value = schema.clone();
                    return;
                }
                map.values_mut().for_each(|v| walk(v, aliases));
            }
            Value::Array(items) => items.iter_mut().for_each(|v| walk(v, aliases)),
            _ => {}
        }
    }
    walk(doc, &aliases);
}

/// Adds the responses every operation shares, and the error codes.
pub fn complete(doc: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(&doc).unwrap_or_else(|_| json!({}));
    let codes: Vec<(u16, &'static str)> = ApiError::examples()
        .iter()
        .map(|e| (e.status_code().as_u16(), e.code()))
        .collect();
    let mut all_codes: Vec<&str> = codes.iter().map(|(_, c)| *c).collect();
    all_codes.dedup();
    doc["components"]["schemas"]["ErrorCode"] = json!({
        "type": "string",
        "enum": all_codes,
        "description": "What went wrong, for programs: the status says how bad, the code says which.",
    });
    inline_aliases(&mut doc);
    let Some(paths) = doc["paths"].as_object_mut() else {
        return doc;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            let Some(operation) = operation.as_object_mut() else {
                continue;
            };
            // utoipa names an operation after its handler; handlers of
            // different resources share names (`list`, `create`).
            let tag = operation["tags"][0].as_str().unwrap_or("api").to_owned();
            let handler = operation["operationId"].as_str().unwrap_or("").to_owned();
            operation.insert("operationId".into(), json!(format!("{tag}_{handler}")));
            // An optional header is absent, never null.
            if let Some(params) = operation
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
            {
                for param in params.iter_mut().filter(|p| p["in"] == "header") {
                    param["schema"]["type"] = json!("string");
                }
            }
            let secured = operation
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|s| !s.is_empty());
            let params = operation
                .get("parameters")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let has_query = params.iter().any(|p| p["in"] == "query");
            let has_path = params.iter().any(|p| p["in"] == "path");
            let has_body = operation.contains_key("requestBody");
            let mut statuses = vec![408, 500, 503];
            if secured {
                statuses.push(401);
            }
            if has_body {
                statuses.extend([400, 413]);
            }
            if has_query {
                statuses.push(400);
            }
            if has_path {
                statuses.push(404);
            }
            let responses = operation
                .entry("responses")
                .or_insert_with(|| json!({}))
                .as_object_mut();
            let Some(responses) = responses else { continue };
            for status in statuses {
                responses
                    .entry(status.to_string())
                    .or_insert_with(|| json!({}));
            }
            for (status, response) in responses.iter_mut() {
                let Ok(status) = status.parse::<u16>() else {
                    continue;
                };
                if status < 400 {
                    continue;
                }
                let mut carried: Vec<&str> = codes
                    .iter()
                    .filter(|(s, _)| *s == status)
                    .map(|(_, c)| *c)
                    .collect();
                carried.dedup();
                if status == 401 && secured {
                    // INVALID_CREDENTIALS is the login's alone.
                    carried.retain(|c| *c == "UNAUTHORIZED");
                }
                let described = response["description"].as_str().unwrap_or_default();
                if described.is_empty() {
                    response["description"] = json!(carried.join(", "));
                }
                response["content"] = json!({
                    "application/json": { "schema": { "$ref": "#/components/schemas/Error" } }
                });
            }
        }
    }
    add_links(&mut doc);
    doc
}

#[cfg(test)]
mod tests {
    //! The limits the document states are the limits the parsers apply:
    //! each string, number and array bound of each body schema is tried at
    //! the bound (accepted) and one past it (refused, naming the field).

    use super::*;
    use crate::http::error::parse_json;
    use actors::domain::input::*;

    type Parser = fn(&Value) -> Vec<String>;

    fn failing<T: serde::de::DeserializeOwned + Parse>(body: &Value) -> Vec<String> {
        let raw = serde_json::to_vec(body).expect("json");
        match parse_json::<T>(&raw) {
            Err(_) => vec!["<body>".into()],
            Ok((input, wrong)) => {
                let mut fields: Vec<String> = wrong.into_iter().map(|w| w.field).collect();
                if let Err(failed) = input.parse() {
                    fields.extend(failed.into_iter().map(|f| f.field));
                }
                fields
            }
        }
    }

    fn bodies() -> Vec<(&'static str, Parser, Value)> {
        vec![
            (
                "NewOrderInput",
                failing::<NewOrderInput>,
                json!({"restaurantId": 1,
                       "items": [{"menuItemId": 1, "quantity": 1, "specialInstructions": "x"}],
                       "deliveryAddress": {"street": "1 Main", "city": "Austin", "state": "TX",
                           "zip": "78701", "lat": 30.2, "lon": -97.7, "instructions": "door"}}),
            ),
            (
                "RegistrationInput",
                failing::<RegistrationInput>,
                json!({"email": "a@b.co", "password": "password1", "name": "A",
                       "role": "driver", "vehicleType": "car"}),
            ),
            (
                "NewRestaurantInput",
                failing::<NewRestaurantInput>,
                json!({"name": "R", "address": "A", "location": {"lat": 30, "lon": -97},
                       "cuisineType": "x", "rating": 4, "prepTimeMinutes": 20,
                       "deliveryFeeCents": 100, "deliveryRadiusKm": 5, "isOpen": true,
                       "imageUrl": "u",
                       "owner": {"email": "o@b.co", "password": "password1", "name": "O"}}),
            ),
            (
                "RestaurantPatchInput",
                failing::<RestaurantPatchInput>,
                json!({"isOpen": true, "prepTimeMinutes": 20}),
            ),
            (
                "NewMenuItemInput",
                failing::<NewMenuItemInput>,
                json!({"name": "n", "description": "d", "priceCents": 100, "category": "c",
                       "isAvailable": true, "imageUrl": "u"}),
            ),
            (
                "MenuItemPatchInput",
                failing::<MenuItemPatchInput>,
                json!({"isAvailable": true, "priceCents": 100}),
            ),
            (
                "LocationInput",
                failing::<LocationInput>,
                json!({"lat": 1, "lon": 1, "heading": 0, "speedMps": 1, "timestamp": 1}),
            ),
        ]
    }

    /// The schema behind a property: through `$ref` and `oneOf [null, $ref]`.
    fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
        let schema = schema["oneOf"]
            .as_array()
            .and_then(|alts| alts.iter().find(|a| a["type"] != "null"))
            .unwrap_or(schema);
        match schema["$ref"].as_str() {
            Some(r) => {
                let name = r.trim_start_matches("#/components/schemas/");
                resolve(doc, &doc["components"]["schemas"][name])
            }
            None => schema,
        }
    }

    /// Every (field path, JSON pointer, bound, value at it, value past it).
    fn bounds(
        doc: &Value,
        schema: &Value,
        field: &str,
        pointer: &str,
        value: &Value,
        out: &mut Vec<(String, String, String, Value, Value)>,
    ) {
        let schema = resolve(doc, schema);
        if let Some(properties) = schema["properties"].as_object() {
            for (name, property) in properties {
                let path = if field.is_empty() {
                    name.clone()
                } else {
                    format!("{field}.{name}")
                };
                if let Some(inner) = value.get(name) {
                    bounds(
                        doc,
                        property,
                        &path,
                        &format!("{pointer}/{name}"),
                        inner,
                        out,
                    );
                }
            }
            return;
        }
        let mut add = |bound: &str, at: Value, past: Value| {
            out.push((field.into(), pointer.into(), bound.into(), at, past));
        };
        let is_integer = schema["type"] == "integer"
            || schema["type"]
                .as_array()
                .is_some_and(|t| t.contains(&json!("integer")));
        let step = if is_integer { 1.0 } else { 0.001 };
        let number = |n: f64| {
            if is_integer {
                json!(n as i64)
            } else {
                json!(n)
            }
        };
        if schema.get("pattern").is_none() && schema.get("format").is_none() {
            if let Some(max) = schema["maxLength"].as_u64() {
                add(
                    "maxLength",
                    json!("a".repeat(max as usize)),
                    json!("a".repeat(max as usize + 1)),
                );
            }
            if let Some(min) = schema["minLength"].as_u64().filter(|m| *m > 0) {
                add(
                    "minLength",
                    json!("a".repeat(min as usize)),
                    json!("a".repeat(min as usize - 1)),
                );
            }
        }
        if let Some(max) = schema["maximum"].as_f64() {
            add("maximum", number(max), number(max + step));
        }
        if let Some(min) = schema["minimum"].as_f64() {
            add("minimum", number(min), number(min - step));
        }
        if let Some(max) = schema["exclusiveMaximum"].as_f64() {
            add("exclusiveMaximum", number(max - step), number(max));
        }
        if let Some(items) = value.as_array() {
            let first = items.first().cloned().unwrap_or(Value::Null);
            if let Some(max) = schema["maxItems"].as_u64() {
                add(
                    "maxItems",
                    json!(vec![first.clone(); max as usize]),
                    json!(vec![first.clone(); max as usize + 1]),
                );
            }
            if let Some(min) = schema["minItems"].as_u64().filter(|m| *m > 0) {
                add(
                    "minItems",
                    json!(vec![first.clone(); min as usize]),
                    json!(vec![first.clone(); min as usize - 1]),
                );
            }
            bounds(
                doc,
                &schema["items"],
                &format!("{field}[0]"),
                &format!("{pointer}/0"),
                &first,
                out,
            );
        }
    }

    #[test]
    fn every_body_limit_in_the_document_is_the_one_the_parser_applies() {
        let doc = document();
        let mut tried = 0;
        for (name, parser, example) in bodies() {
            assert_eq!(
                parser(&example),
                Vec::<String>::new(),
                "{name}'s example is valid"
            );
            let schema = &doc["components"]["schemas"][name];
            assert!(schema.is_object(), "{name} is in the document");
            let mut found = Vec::new();
            bounds(&doc, schema, "", "", &example, &mut found);
            for (field, pointer, bound, at, past) in found {
                let mut body = example.clone();
                *body.pointer_mut(&pointer).expect("pointer") = at;
                let failed = parser(&body);
                assert!(
                    !failed.contains(&field),
                    "{name}.{field} at its {bound} is refused: {failed:?}"
                );
                *body.pointer_mut(&pointer).expect("pointer") = past;
                let failed = parser(&body);
                assert!(
                    failed.contains(&field),
                    "{name}.{field} past its {bound} is accepted: {failed:?}"
                );
                tried += 1;
            }
        }
        assert!(tried >= 50, "only {tried} bounds tried");
    }

    #[test]
    fn the_named_limits_are_the_documented_ones() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["NewOrderInput"]["properties"]["items"]["maxItems"],
            MAX_ORDER_LINES
        );
        assert_eq!(
            schemas["OrderLineInput"]["properties"]["quantity"]["maximum"],
            MAX_QUANTITY
        );
        assert_eq!(
            schemas["NewMenuItemInput"]["properties"]["priceCents"]["maximum"],
            MAX_PRICE_CENTS
        );
        assert_eq!(
            schemas["NewRestaurantInput"]["properties"]["prepTimeMinutes"]["maximum"],
            MAX_PREP_TIME_MINUTES
        );
        assert_eq!(
            schemas["NewRestaurantInput"]["properties"]["deliveryRadiusKm"]["default"],
            DEFAULT_DELIVERY_RADIUS_KM
        );
        assert_eq!(
            schemas["NewWebhookInput"]["properties"]["eventTypes"]["maxItems"],
            actors::domain::events::EVENT_TYPES.len()
        );
        let key = doc["paths"]["/api/orders"]["post"]["parameters"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "Idempotency-Key"))
            .expect("Idempotency-Key");
        assert_eq!(
            key["schema"]["maxLength"],
            crate::http::orders::MAX_IDEMPOTENCY_KEY_LEN
        );
    }

    /// utoipa-axum merges schemas by name: two resources' private
    /// `CreateInput`s would leave one operation with the other's body.
    #[test]
    fn each_operation_has_its_own_body_schema() {
        let doc = document();
        let body = |path: &str| {
            let reference =
                doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
                    ["$ref"]
                    .as_str()
                    .unwrap_or_default()
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            doc["components"]["schemas"][reference]["properties"].clone()
        };
        assert!(body("/api/zones")["geometry"].is_object());
        assert!(body("/api/webhooks")["url"].is_object());
        assert!(body("/api/orders")["deliveryAddress"].is_object());
        assert!(body("/api/restaurants")["owner"].is_object());
    }

    #[test]
    fn every_error_code_is_listed() {
        let doc = document();
        let codes = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for error in ApiError::examples() {
            assert!(codes.contains(&json!(error.code())), "{}", error.code());
        }
        assert_eq!(codes.len(), 22);
    }
}
