//! The OpenAPI document (`GET /api/openapi.json`): it lists every route the
//! server has, and every route it lists is one the server answers.

use crate::helpers::TestApp;
use reqwest::Method;
use serde_json::Value;

const FAULTS: (&str, &str) = ("DISPATCH__SUPERVISION__FAULT_INJECTION", "true");

fn operations(doc: &Value) -> Vec<(Method, String, Value)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            found.push((method, path.clone(), operation.clone()));
        }
    }
    found
}

#[tokio::test]
async fn every_documented_operation_is_a_route_the_server_answers() {
    let app = TestApp::spawn_with(true, &[FAULTS]).await;
    let doc = app.get("/api/openapi.json", None).await.expect(200);
    assert_eq!(doc["openapi"], "3.1.0");
    let operations = operations(&doc);
    assert!(
        operations.len() >= 38,
        "only {} operations",
        operations.len()
    );
    for (method, path, operation) in operations {
        let concrete = path.replace("{id}", "1").replace("{delivery_id}", "1");
        let body = operation.get("requestBody").map(|_| serde_json::json!({}));
        let response = app.request(method.clone(), &concrete, None, body).await;
        // An unknown route is 404 NOT_FOUND "route not found"; a known path
        // with the wrong method 405.
        assert_ne!(response.status, 405, "{method} {path} is not routed");
        assert_ne!(
            response.body["error"], "route not found",
            "{method} {path} is not routed"
        );
        // What it answered is among the statuses the document gives it.
        let status = response.status.as_u16().to_string();
        assert!(
            operation["responses"].get(&status).is_some(),
            "{method} {path} answered {status}, which its operation does not list: {}",
            response.body
        );
    }
}

#[tokio::test]
async fn every_operation_has_a_unique_id_and_bearer_operations_document_401() {
    let app = TestApp::spawn().await;
    let doc = app.get("/api/openapi.json", None).await.expect(200);
    let mut ids = Vec::new();
    for (method, path, operation) in operations(&doc) {
        let id = operation["operationId"]
            .as_str()
            .expect("operationId")
            .to_owned();
        assert!(!ids.contains(&id), "{id} twice");
        ids.push(id);
        if operation.get("security").is_some() {
            let unauthorized = &operation["responses"]["401"];
            assert_eq!(
                unauthorized["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/Error",
                "{method} {path}"
            );
        }
    }
    let codes = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("codes");
    for code in [
        "VALIDATION_ERROR",
        "IDEMPOTENCY_KEY_REUSED",
        "STORE_UNAVAILABLE",
    ] {
        assert!(codes.contains(&Value::from(code)), "{code}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // Each link leads to an operation that exists and takes an `id`.
    let mut links = 0;
    for (_, _, operation) in operations(&doc) {
        for response in operation["responses"]
            .as_object()
            .expect("responses")
            .values()
        {
            for link in response["links"]
                .as_object()
                .into_iter()
                .flat_map(|l| l.values())
            {
                let target = link["operationId"].as_str().expect("operationId");
                assert!(ids.iter().any(|id| id == target), "link to {target}");
                assert!(link["parameters"]["id"].is_string(), "{link}");
                links += 1;
            }
        }
    }
    assert!(links >= 10, "{links} links");
}

/// The link schemathesis follows most: the id in a created order's body
/// reads that order back.
#[tokio::test]
async fn a_created_orders_link_reads_it_back() {
    let app = TestApp::spawn().await;
    let doc = app.get("/api/openapi.json", None).await.expect(200);
    let link = &doc["paths"]["/api/orders"]["post"]["responses"]["201"]["links"]["ReadOrder"];
    assert_eq!(link["operationId"], "orders_show");
    let pointer = link["parameters"]["id"]
        .as_str()
        .and_then(|p| p.strip_prefix("$response.body#"))
        .expect("a body pointer");
    let token = app.token("customer1").await;
    let placed = app
        .post(
            "/api/orders",
            Some(&token),
            crate::helpers::order_body(crate::helpers::RESTAURANT_1, 1, 2),
        )
        .await
        .expect(201);
    let id = placed.pointer(pointer).and_then(Value::as_i64).expect("id");
    let read = app
        .get(&format!("/api/orders/{id}"), Some(&token))
        .await
        .expect(200);
    assert_eq!(read["order"]["id"], id);
}

/// The other direction: a REST route can only be added with its
/// documentation (`OpenApiRouter::routes(routes!(handler))`); a plain
/// `.route(` in a resource file would escape the document.
#[test]
fn resource_routers_add_routes_only_with_their_documentation() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).expect("src/http") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // mod.rs adds /ws and the pages; openapi.rs and asyncapi.rs the
        // documents themselves.
        if ["mod.rs", "openapi.rs", "asyncapi.rs"].contains(&name) {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("source");
        assert!(
            !source.contains(".route("),
            "{name} adds a route without documenting it; use .routes(routes!(handler))"
        );
        checked += usize::from(source.contains("routes!("));
    }
    assert!(checked >= 8, "only {checked} resource routers found");
}

#[tokio::test]
async fn the_asyncapi_document_is_served_with_every_socket_message() {
    let app = TestApp::spawn().await;
    let doc = app.get("/api/asyncapi.json", None).await.expect(200);
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["channels"]["socket"]["address"], "/ws");
    let received = doc["operations"]["clientMessages"]["messages"]
        .as_array()
        .expect("client messages");
    let sent = doc["operations"]["serverMessages"]["messages"]
        .as_array()
        .expect("server messages");
    assert_eq!((received.len(), sent.len()), (9, 10));
    let offer = &doc["components"]["messages"]["server_offer"]["payload"];
    assert!(offer["properties"]["expiresAt"].is_object(), "{offer}");
}

/// The reference page works offline: it and its script come from the
/// engine, and the script reads only the engine's documents.
#[tokio::test]
async fn the_api_reference_page_is_served_from_the_engine_alone() {
    let app = TestApp::spawn().await;
    let page = app.get("/api/reference", None).await;
    assert_eq!(page.status, 200);
    let html = page.body.as_str().expect("html");
    assert!(html.contains("/assets/api.js"), "{html}");
    let script = app.get("/assets/api.js", None).await;
    assert_eq!(script.status, 200);
    let js = script.body.as_str().expect("js");
    assert!(js.contains("/api/openapi.json") && js.contains("/api/asyncapi.json"));
    for text in [html, js] {
        assert!(
            !text.contains("https://") && !text.contains("http://"),
            "loads nothing from outside"
        );
    }
}
