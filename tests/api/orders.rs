use crate::helpers::*;
use serde_json::{Value, json};

#[tokio::test]
async fn customer_places_an_order_priced_by_the_server() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    let menu = app.get("/api/restaurants/1", None).await.expect(200);
    let price = |id: i64| {
        menu["menu"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .unwrap()["priceCents"]
            .as_i64()
            .unwrap()
    };
    let fee = menu["restaurant"]["deliveryFeeCents"].as_i64().unwrap();
    let body = app
        .post(
            "/api/orders",
            Some(&customer),
            json!({
                "restaurantId": 1,
                "items": [
                    { "menuItemId": 1, "quantity": 3, "specialInstructions": "extra salsa" },
                    { "menuItemId": 6, "quantity": 1 }
                ],
                "deliveryAddress": address(),
            }),
        )
        .await
        .expect(201);
    let order = &body["order"];
    let subtotal = price(1) * 3 + price(6);
    // 15%, rounded half up.
    let service = (subtotal * 15 + 50) / 100;
    assert_eq!(order["subtotalCents"], subtotal);
    assert_eq!(order["serviceFeeCents"], service);
    assert_eq!(order["deliveryFeeCents"], fee);
    assert_eq!(order["totalCents"], subtotal + service + fee);
    assert_eq!(order["status"], "PLACED");
    assert_eq!(order["version"], 1);
    assert_eq!(order["driverId"], Value::Null);
    assert_eq!(order["restaurantId"], 1);
    assert!(order["estimatedDeliveryAt"].is_string());
    assert_eq!(body["estimatedDeliveryAt"], order["estimatedDeliveryAt"]);
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["specialInstructions"], "extra salsa");
    assert_eq!(items[0]["unitPriceCents"], price(1));
}

#[tokio::test]
async fn an_invalid_order_lists_every_failing_field() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    let r = app
        .post(
            "/api/orders",
            Some(&customer),
            json!({
                "restaurantId": 0,
                "items": [{ "menuItemId": 0, "quantity": 21, "specialInstructions": "x".repeat(201) }],
                "deliveryAddress": { "street": "", "city": "c".repeat(101), "state": "Texas",
                                     "zip": "7870", "lat": 91, "lon": -181, "instructions": "i".repeat(501) }
            }),
        )
        .await;
    r.expect_error(400, "VALIDATION_ERROR");
    let mut fields = r.fields();
    fields.sort();
    let mut expected = vec![
        "restaurantId",
        "items[0].menuItemId",
        "items[0].quantity",
        "items[0].specialInstructions",
        "deliveryAddress.street",
        "deliveryAddress.city",
        "deliveryAddress.state",
        "deliveryAddress.zip",
        "deliveryAddress.lat",
        "deliveryAddress.lon",
        "deliveryAddress.instructions",
    ];
    expected.sort();
    assert_eq!(fields, expected);

    let r = app
        .post(
            "/api/orders",
            Some(&customer),
            json!({ "restaurantId": 1, "items": [] }),
        )
        .await;
    assert_eq!(r.fields(), ["items", "deliveryAddress"]);
    let many: Vec<Value> = (0..51)
        .map(|_| json!({ "menuItemId": 1, "quantity": 1 }))
        .collect();
    let r = app
        .post(
            "/api/orders",
            Some(&customer),
            json!({ "restaurantId": 1, "items": many, "deliveryAddress": address() }),
        )
        .await;
    assert_eq!(r.fields(), ["items"]);
    let r = app
        .post(
            "/api/orders",
            Some(&customer),
            json!({ "restaurantId": 1, "items": [{ "menuItemId": 1, "quantity": "two" }], "deliveryAddress": address() }),
        )
        .await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(r.fields(), ["items[0].quantity"]);
    app.post_raw("/api/orders", Some(&customer), "{\"restaurantId\": 1,")
        .await
        .expect_error(400, "VALIDATION_ERROR");
    let huge = json!({ "restaurantId": 1, "items": [], "deliveryAddress": { "street": "s".repeat(65 * 1024) } });
    app.post_raw("/api/orders", Some(&customer), huge.to_string())
        .await
        .expect_error(413, "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn wrong_json_types_and_range_errors_are_listed_together() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    let r = app
        .post(
            "/api/orders",
            Some(&customer),
            json!({
                "restaurantId": "one",
                "items": ["a burrito", { "menuItemId": 1, "quantity": "two" }, { "menuItemId": 1, "quantity": 99 }],
                "deliveryAddress": { "street": "1100 Congress Ave", "city": "Austin", "state": "Texas",
                                     "zip": 78701, "lat": "north", "lon": -97.74 }
            }),
        )
        .await;
    r.expect_error(400, "VALIDATION_ERROR");
    let mut fields = r.fields();
    fields.sort();
    let mut expected = vec![
        "restaurantId",
        "items[0]",
        "items[1].quantity",
        "items[2].quantity",
        "deliveryAddress.state",
        "deliveryAddress.zip",
        "deliveryAddress.lat",
    ];
    expected.sort();
    // Each field once: a wrong type is not also reported as missing.
    assert_eq!(fields, expected, "{}", r.body);

    // The same for a query string: every bad parameter, type and range.
    let r = app
        .get(
            "/api/restaurants?lat=north&lon=south&limit=0&openOnly=maybe",
            None,
        )
        .await;
    r.expect_error(400, "VALIDATION_ERROR");
    let mut fields = r.fields();
    fields.sort();
    assert_eq!(fields, ["lat", "limit", "lon", "openOnly"], "{}", r.body);

    // A body that is JSON but not an object is refused as a whole.
    app.post_raw("/api/orders", Some(&customer), "[1, 2]")
        .await
        .expect_error(400, "VALIDATION_ERROR");
    // A wrong role hears 403 before anything about its body.
    let driver = app.token("driver1").await;
    app.post("/api/orders", Some(&driver), json!({ "restaurantId": 0 }))
        .await
        .expect_error(403, "FORBIDDEN");
}

#[tokio::test]
async fn only_customers_place_orders() {
    let app = TestApp::spawn().await;
    for who in ["driver1", "restaurant1", "admin"] {
        let token = app.token(who).await;
        app.post("/api/orders", Some(&token), order_body(1, 1, 1))
            .await
            .expect_error(403, "FORBIDDEN");
    }
    app.post("/api/orders", None, order_body(1, 1, 1))
        .await
        .expect_error(401, "UNAUTHORIZED");
}

#[tokio::test]
async fn orders_are_refused_for_unknown_closed_far_or_unavailable_things() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    app.post("/api/orders", Some(&customer), order_body(999, 1, 1))
        .await
        .expect_error(404, "NOT_FOUND");

    let staff = app.token("restaurant2").await;
    app.patch(
        "/api/restaurants/2",
        Some(&staff),
        json!({ "isOpen": false }),
    )
    .await
    .expect(200);
    app.post("/api/orders", Some(&customer), order_body(2, 9, 1))
        .await
        .expect_error(422, "RESTAURANT_CLOSED");

    let mut far = order_body(1, 1, 1);
    far["deliveryAddress"]["lat"] = json!(30.60); // ~37 km north
    app.post("/api/orders", Some(&customer), far)
        .await
        .expect_error(422, "OUT_OF_RANGE");

    let staff1 = app.token("restaurant1").await;
    app.patch(
        "/api/menu-items/2",
        Some(&staff1),
        json!({ "isAvailable": false }),
    )
    .await
    .expect(200);
    let r = app
        .post(
            "/api/orders",
            Some(&customer),
            json!({ "restaurantId": 1, "items": [
                { "menuItemId": 1, "quantity": 1 },
                { "menuItemId": 2, "quantity": 1 },
                { "menuItemId": 20, "quantity": 1 }
            ], "deliveryAddress": address() }),
        )
        .await;
    r.expect_error(422, "ITEM_UNAVAILABLE");
    // Item 2 is unavailable; item 20 belongs to another restaurant.
    assert_eq!(r.fields(), ["items[1].menuItemId", "items[2].menuItemId"]);
}

#[tokio::test]
async fn an_order_is_visible_to_its_customer_its_restaurant_and_admins_only() {
    let app = TestApp::spawn().await;
    let owner = app.token("customer1").await;
    let order = app.place_order(&owner).await;
    let path = format!("/api/orders/{}", order["id"]);

    let body = app.get(&path, Some(&owner)).await.expect(200);
    assert_eq!(body["order"]["id"], order["id"]);
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    assert_eq!(body["driver"], Value::Null);
    assert_eq!(body["driverLocation"], Value::Null);
    assert!(body["eta"]["estimatedDeliveryAt"].is_string());
    assert!(body["eta"]["secondsRemaining"].as_i64().unwrap() > 0);

    for allowed in ["restaurant1", "admin"] {
        app.get(&path, Some(&app.token(allowed).await))
            .await
            .expect(200);
    }
    // Strangers get 404, not 403: the order's existence is not revealed.
    for stranger in ["customer2", "restaurant2", "driver1"] {
        let token = app.token(stranger).await;
        app.get(&path, Some(&token))
            .await
            .expect_error(404, "NOT_FOUND");
        app.get(&format!("{path}/events"), Some(&token))
            .await
            .expect_error(404, "NOT_FOUND");
    }
    app.get("/api/orders/987654", Some(&owner))
        .await
        .expect_error(404, "NOT_FOUND");
    app.get("/api/orders/xyz", Some(&owner))
        .await
        .expect_error(404, "NOT_FOUND");
    app.get(&path, None).await.expect_error(401, "UNAUTHORIZED");
}

fn order_ids(body: &Value) -> Vec<i64> {
    body["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn each_role_lists_its_own_orders_newest_first_with_pagination() {
    let app = TestApp::spawn().await;
    let c1 = app.token("customer1").await;
    let c2 = app.token("customer2").await;
    let a = app.place_order(&c1).await["id"].as_i64().unwrap();
    let b = app.place_order(&c2).await["id"].as_i64().unwrap();
    let c = app.place_order(&c1).await["id"].as_i64().unwrap();
    let other_restaurant = app
        .post("/api/orders", Some(&c1), order_body(3, 17, 1))
        .await
        .expect(201)["order"]["id"]
        .as_i64()
        .unwrap();

    assert_eq!(
        order_ids(&app.get("/api/orders", Some(&c1)).await.expect(200)),
        [other_restaurant, c, a]
    );
    assert_eq!(
        order_ids(&app.get("/api/orders", Some(&c2)).await.expect(200)),
        [b]
    );
    let staff = app.token("restaurant1").await;
    assert_eq!(
        order_ids(&app.get("/api/orders", Some(&staff)).await.expect(200)),
        [c, b, a]
    );
    let admin = app.token("admin").await;
    assert_eq!(
        order_ids(&app.get("/api/orders", Some(&admin)).await.expect(200)),
        [other_restaurant, c, b, a]
    );
    let driver = app.token("driver1").await;
    assert!(order_ids(&app.get("/api/orders", Some(&driver)).await.expect(200)).is_empty());

    let page1 = app
        .get("/api/orders?limit=2", Some(&admin))
        .await
        .expect(200);
    assert_eq!(order_ids(&page1), [other_restaurant, c]);
    let page2 = app
        .get(&format!("/api/orders?limit=2&before={c}"), Some(&admin))
        .await
        .expect(200);
    assert_eq!(order_ids(&page2), [b, a]);

    app.act(&staff, a, "confirm").await.expect(200);
    let confirmed = app
        .get("/api/orders?status=CONFIRMED", Some(&admin))
        .await
        .expect(200);
    assert_eq!(order_ids(&confirmed), [a]);

    let r = app
        .get("/api/orders?status=LOST&limit=0&before=-4", Some(&admin))
        .await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(r.fields(), ["status", "limit", "before"]);
    let r = app.get("/api/orders?limit=many", Some(&admin)).await;
    assert_eq!(r.fields(), ["limit"]);
}

#[tokio::test]
async fn events_tell_the_history_in_order() {
    let app = TestApp::spawn().await;
    let customer = app.token("customer1").await;
    let staff = app.token("restaurant1").await;
    let id = app.place_order(&customer).await["id"].as_i64().unwrap();
    app.act(&staff, id, "confirm").await.expect(200);
    app.act(&staff, id, "start_preparing").await.expect(200);
    let events = app
        .get(&format!("/api/orders/{id}/events"), Some(&customer))
        .await
        .expect(200);
    let events = events["events"].as_array().unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(events[0]["type"], "ORDER_PLACED");
    assert_eq!(events[0]["toStatus"], "PLACED");
    assert_eq!(events[0]["actorRole"], "customer");
    assert_eq!(events[1]["type"], "STATUS_CHANGED");
    assert_eq!(events[1]["fromStatus"], "PLACED");
    assert_eq!(events[1]["toStatus"], "CONFIRMED");
    assert_eq!(events[1]["actorRole"], "restaurant");
    assert_eq!(events[2]["toStatus"], "PREPARING");
    assert!(
        events
            .iter()
            .all(|e| e["at"].is_string() && e["data"].is_object())
    );
}
