//! The AsyncAPI 3 document of the WebSocket protocol, served at
//! `GET /api/asyncapi.json`: one message per `type` of
//! `actors::wire::ClientMessage` and `ServerMessage`, whose payloads are
//! the `ToSchema` schemas of those same enums (the codec's types), so the
//! document cannot say other than what the socket does.

use super::AppState;
use actors::wire::{ClientMessage, ServerMessage};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    let document = Arc::new(document());
    Router::new().route(
        "/api/asyncapi.json",
        get(move || {
            let document = Arc::clone(&document);
            async move { Json(document.as_ref().clone()) }
        }),
    )
}

/// The variants of a tagged enum's schema, by their `type`.
fn variants(schema: &Value) -> Vec<(String, Value)> {
    schema["oneOf"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|variant| {
            let kind = variant_type(variant)?;
            Some((kind, variant.clone()))
        })
        .collect()
}

/// The `type` a variant's schema fixes: an enum of one, directly or in
/// one of the parts of an `allOf`.
fn variant_type(variant: &Value) -> Option<String> {
    if let Some(kind) = variant["properties"]["type"]["enum"][0].as_str() {
        return Some(kind.to_owned());
    }
    variant["allOf"].as_array()?.iter().find_map(variant_type)
}

pub fn document() -> Value {
    let mut found = vec![
        (
            "ClientMessage".to_owned(),
            <ClientMessage as utoipa::PartialSchema>::schema(),
        ),
        (
            "ServerMessage".to_owned(),
            <ServerMessage as utoipa::PartialSchema>::schema(),
        ),
    ];
    <ClientMessage as ToSchema>::schemas(&mut found);
    <ServerMessage as ToSchema>::schemas(&mut found);
    let mut doc = json!({ "components": { "schemas": {} } });
    for (name, schema) in found {
        doc["components"]["schemas"][name] =
            serde_json::to_value(schema).unwrap_or_else(|_| json!({}));
    }
    super::openapi::inline_aliases(&mut doc);
    let mut schemas = doc["components"]["schemas"].take();
    let client = schemas["ClientMessage"].clone();
    let server = schemas["ServerMessage"].clone();
    // AsyncAPI references components as `#/components/schemas/..`, as
    // OpenAPI does, so the schemas move over as they are.
    if let Some(map) = schemas.as_object_mut() {
        map.remove("ClientMessage");
        map.remove("ServerMessage");
    }
    let mut messages = Map::new();
    let mut channel_messages = Map::new();
    let mut receive = Vec::new();
    let mut send = Vec::new();
    for (direction, schema) in [("client", &client), ("server", &server)] {
        for (kind, payload) in variants(schema) {
            let name = format!("{direction}_{kind}");
            let description = payload["description"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            messages.insert(
                name.clone(),
                json!({
                    "name": kind,
                    "title": kind,
                    "summary": if direction == "client" { "Sent by clients" } else { "Sent by the server" },
                    "description": description,
                    "contentType": "application/json",
                    "payload": payload,
                }),
            );
            channel_messages.insert(
                name.clone(),
                json!({ "$ref": format!("#/components/messages/{name}") }),
            );
            let reference = json!({ "$ref": format!("#/channels/socket/messages/{name}") });
            if direction == "client" {
                receive.push(reference);
            } else {
                send.push(reference);
            }
        }
    }
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "dispatchd WebSocket",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The live protocol of dispatchd (CONTRACT.md \"WebSocket\", README \
                \"WebSocket protocol\"): one socket per client at `/ws`, authenticated with \
                `?token=` or the `Authorization: Bearer` header, JSON text frames each with a \
                `type`. Clients subscribe to orders (customers, restaurants, drivers), to a \
                restaurant (its staff), or to the city (admins); drivers send positions and \
                answer offers. A message may carry `ref`, echoed in an `error` about it.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "engine": {
                "host": "localhost:8080",
                "protocol": "ws",
                "description": "Wherever dispatchd listens (`--listen`); `wss` behind TLS.",
                "security": [{ "$ref": "#/components/securitySchemes/bearer" }],
            }
        },
        "channels": {
            "socket": {
                "address": "/ws",
                "title": "The socket",
                "messages": channel_messages,
                "bindings": {
                    "ws": {
                        "method": "GET",
                        "query": {
                            "type": "object",
                            "properties": {
                                "token": { "type": "string", "description": "The bearer token, for browsers (which cannot set headers on a WebSocket)" }
                            }
                        }
                    }
                }
            }
        },
        "operations": {
            "clientMessages": {
                "action": "receive",
                "title": "What clients send",
                "channel": { "$ref": "#/channels/socket" },
                "messages": receive,
            },
            "serverMessages": {
                "action": "send",
                "title": "What the server sends",
                "channel": { "$ref": "#/channels/socket" },
                "messages": send,
            }
        },
        "components": {
            "schemas": schemas,
            "messages": messages,
            "securitySchemes": {
                "bearer": {
                    "type": "httpApiKey",
                    "name": "token",
                    "in": "query",
                    "description": "The token of `POST /api/auth/login`; or `Authorization: Bearer`.",
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_and_server_message_type_is_a_message() {
        let doc = document();
        let messages = doc["components"]["messages"].as_object().expect("messages");
        for kind in [
            "subscribe",
            "unsubscribe",
            "subscribe_restaurant",
            "location",
            "set_availability",
            "offer_response",
            "ping",
            "subscribe_ops",
            "unsubscribe_ops",
        ] {
            assert!(messages.contains_key(&format!("client_{kind}")), "{kind}");
        }
        for kind in [
            "snapshot",
            "order_update",
            "driver_location",
            "offer",
            "offer_result",
            "pong",
            "error",
            "driver_approaching",
            "driver_arrived",
            "ops",
        ] {
            assert!(messages.contains_key(&format!("server_{kind}")), "{kind}");
        }
        assert_eq!(messages.len(), 19);
    }

    /// The wire is camelCase (`orderId`); a schema that says `order_id`
    /// would send clients looking for a field that never comes.
    #[test]
    fn message_fields_are_camel_case_as_on_the_wire() {
        let doc = document();
        let mut fields = 0;
        for (name, message) in doc["components"]["messages"].as_object().expect("messages") {
            let payload = &message["payload"];
            let parts = payload["allOf"]
                .as_array()
                .cloned()
                .unwrap_or_else(|| vec![payload.clone()]);
            for part in parts {
                for field in part["properties"]
                    .as_object()
                    .into_iter()
                    .flat_map(|p| p.keys())
                {
                    assert!(!field.contains('_'), "{name}.{field}");
                    fields += 1;
                }
            }
        }
        assert!(fields > 40, "{fields} fields");
    }

    /// Every `$ref` in the documents points at something in them.
    #[test]
    fn every_reference_resolves() {
        every_reference_resolves_in(&document());
        every_reference_resolves_in(&crate::http::openapi::document());
    }

    fn every_reference_resolves_in(doc: &Value) {
        fn walk(value: &Value, doc: &Value, seen: &mut usize) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(target)) = map.get("$ref") {
                        let pointer = target.trim_start_matches('#');
                        assert!(doc.pointer(pointer).is_some(), "{target} resolves");
                        *seen += 1;
                    }
                    map.values().for_each(|v| walk(v, doc, seen));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, doc, seen)),
                _ => {}
            }
        }
        let mut seen = 0;
        walk(doc, doc, &mut seen);
        if std::env::var_os("DUMP_DOCUMENTS").is_some() {
            println!("{doc:#}");
        }
        assert!(seen > 40, "{seen} references");
    }
}
