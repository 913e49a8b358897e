//! Service zones: GeoJSON areas, a restaurant limited to one, and orders
//! inside, outside, on the edge and in a hole.

use crate::helpers::*;
use reqwest::Method;
use serde_json::{Value, json};

/// A square around restaurant 1 and its customers, with a hole.
fn zone_geometry() -> Value {
    json!({
        "type": "Polygon",
        "coordinates": [
            [[-97.76, 30.26], [-97.73, 30.26], [-97.73, 30.28], [-97.76, 30.28], [-97.76, 30.26]],
            [[-97.745, 30.270], [-97.742, 30.270], [-97.742, 30.272], [-97.745, 30.272], [-97.745, 30.270]]
        ]
    })
}

fn order_to(lat: f64, lon: f64) -> Value {
    let mut body = order_body(RESTAURANT_1, 1, 1);
    body["deliveryAddress"]["lat"] = json!(lat);
    body["deliveryAddress"]["lon"] = json!(lon);
    body
}

#[tokio::test]
async fn a_restaurant_limited_to_a_zone_takes_orders_inside_and_on_its_edge_but_not_outside_or_in_a_hole()
 {
    let app = TestApp::spawn().await;
    let admin = app.token("admin").await;
    let customer = app.token("customer1").await;
    let created = app
        .post(
            "/api/zones",
            Some(&admin),
            json!({ "name": "Downtown", "geometry": zone_geometry() }),
        )
        .await
        .expect(201);
    let zone = created["zone"]["id"].as_i64().unwrap();
    app.request(
        Method::PUT,
        "/api/restaurants/1/zone",
        Some(&admin),
        Some(json!({ "zoneId": zone })),
    )
    .await
    .expect(200);
    let listed = app.get("/api/zones", Some(&admin)).await.expect(200);
    assert_eq!(listed["zones"][0]["restaurantIds"], json!([1]));
    assert_eq!(listed["zones"][0]["geometry"], zone_geometry());

    // Inside, and on the north edge: placed.
    for (lat, lon) in [(NEAR_LAT, NEAR_LON), (30.28, -97.74)] {
        app.post("/api/orders", Some(&customer), order_to(lat, lon))
            .await
            .expect(201);
    }
    // Outside (but within the delivery radius), and in the hole: refused.
    for (lat, lon) in [(30.29, -97.74), (30.271, -97.7435)] {
        let refused = app
            .post("/api/orders", Some(&customer), order_to(lat, lon))
            .await;
        refused.expect_error(422, "OUT_OF_ZONE");
    }
    let edge = app
        .post(
            &format!("/api/zones/{zone}/contains"),
            Some(&admin),
            json!({ "lat": 30.26, "lon": -97.75 }),
        )
        .await
        .expect(200);
    assert_eq!(edge["inside"], true);

    // Another restaurant is not limited.
    let mut elsewhere = order_to(30.29, -97.74);
    elsewhere["restaurantId"] = json!(2);
    elsewhere["items"][0]["menuItemId"] =
        json!(app.get("/api/restaurants/2", None).await.expect(200)["menu"][0]["id"].clone());
    let other = app.post("/api/orders", Some(&customer), elsewhere).await;
    assert_ne!(other.code(), "OUT_OF_ZONE", "{}", other.body);

    // Lifting the limit, or deleting the zone, lets the order through.
    app.request(
        Method::PUT,
        "/api/restaurants/1/zone",
        Some(&admin),
        Some(json!({ "zoneId": null })),
    )
    .await
    .expect(200);
    app.post("/api/orders", Some(&customer), order_to(30.29, -97.74))
        .await
        .expect(201);
    app.request(
        Method::PUT,
        "/api/restaurants/1/zone",
        Some(&admin),
        Some(json!({ "zoneId": zone })),
    )
    .await
    .expect(200);
    let deleted = app
        .request(
            Method::DELETE,
            &format!("/api/zones/{zone}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(deleted.status.as_u16(), 204);
    app.post("/api/orders", Some(&customer), order_to(30.29, -97.74))
        .await
        .expect(201);

    // The limit survives a restart (it is in the store).
    let zone = app
        .post(
            "/api/zones",
            Some(&admin),
            json!({ "name": "Again", "geometry": zone_geometry() }),
        )
        .await
        .expect(201)["zone"]["id"]
        .as_i64()
        .unwrap();
    app.request(
        Method::PUT,
        "/api/restaurants/1/zone",
        Some(&admin),
        Some(json!({ "zoneId": zone })),
    )
    .await
    .expect(200);
    let app = app.crash_and_restart().await;
    app.post("/api/orders", Some(&customer), order_to(30.29, -97.74))
        .await
        .expect_error(422, "OUT_OF_ZONE");
}

#[tokio::test]
async fn invalid_zones_are_answered_400_naming_the_field() {
    let app = TestApp::spawn().await;
    let admin = app.token("admin").await;
    let staff = app.token("restaurant1").await;
    let square = [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]];
    for (body, field) in [
        (json!({ "geometry": zone_geometry() }), "name"),
        (json!({ "name": "x" }), "geometry.type"),
        (
            json!({ "name": "x", "geometry": { "type": "Point", "coordinates": [0, 0] } }),
            "geometry.type",
        ),
        (
            json!({ "name": "x", "geometry": { "type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]] } }),
            "geometry.coordinates[0]",
        ),
        (
            json!({ "name": "x", "geometry": { "type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]] } }),
            "geometry.coordinates[0]",
        ),
        (
            json!({ "name": "x", "geometry": { "type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]] } }),
            "geometry.coordinates",
        ),
        (
            json!({ "name": "x", "geometry": { "type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 91], [0, 0]]] } }),
            "geometry.coordinates[0][2]",
        ),
        (
            json!({ "name": "x", "geometry": { "type": "MultiPolygon", "coordinates": [[square], [square]] } }),
            "geometry.coordinates",
        ),
    ] {
        let response = app.post("/api/zones", Some(&admin), body.clone()).await;
        response.expect_error(400, "VALIDATION_ERROR");
        assert_eq!(response.fields(), vec![field.to_string()], "{body}");
    }
    app.post(
        "/api/zones",
        Some(&staff),
        json!({ "name": "x", "geometry": zone_geometry() }),
    )
    .await
    .expect_error(403, "FORBIDDEN");
    app.request(
        Method::PUT,
        "/api/restaurants/1/zone",
        Some(&admin),
        Some(json!({ "zoneId": 99 })),
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");
    app.request(
        Method::PUT,
        "/api/restaurants/999/zone",
        Some(&admin),
        Some(json!({ "zoneId": null })),
    )
    .await
    .expect_error(404, "NOT_FOUND");
    app.get("/api/zones/77", Some(&admin))
        .await
        .expect_error(404, "NOT_FOUND");
    // A GeoJSON Feature is taken for its geometry.
    app.post(
        "/api/zones",
        Some(&admin),
        json!({ "name": "feature", "geometry": { "type": "Feature", "properties": {}, "geometry": zone_geometry() } }),
    )
    .await
    .expect(201);
}
