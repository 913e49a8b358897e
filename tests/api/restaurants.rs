use crate::helpers::*;
use serde_json::{Value, json};

fn ids(body: &Value) -> Vec<i64> {
    body["restaurants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn restaurants_are_listed_nearest_first_within_the_radius() {
    let app = TestApp::spawn().await;
    let body = app
        .get(
            &format!("/api/restaurants?lat={NEAR_LAT}&lon={NEAR_LON}&radiusKm=3"),
            None,
        )
        .await
        .expect(200);
    let list = body["restaurants"].as_array().unwrap();
    assert!(list.len() >= 5, "{body}");
    let distances: Vec<f64> = list
        .iter()
        .map(|r| r["distanceKm"].as_f64().unwrap())
        .collect();
    assert!(distances.windows(2).all(|w| w[0] <= w[1]), "{distances:?}");
    assert!(distances.iter().all(|d| *d <= 3.0));
    // The Domain (about 14 km north) is outside 3 km but inside 20 km.
    assert!(!ids(&body).contains(&18));
    let wide = app
        .get(
            &format!("/api/restaurants?lat={NEAR_LAT}&lon={NEAR_LON}&radiusKm=20&limit=100"),
            None,
        )
        .await
        .expect(200);
    assert!(ids(&wide).contains(&18));
}

#[tokio::test]
async fn restaurants_filter_by_cuisine_open_and_limit() {
    let app = TestApp::spawn().await;
    let body = app
        .get("/api/restaurants?cuisine=japanese", None)
        .await
        .expect(200);
    let list = body["restaurants"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{body}");
    assert!(list.iter().all(|r| r["cuisineType"] == "Japanese"));
    assert!(list.iter().all(|r| r.get("distanceKm").is_none()));

    let staff = app.token("restaurant9").await;
    app.request(
        reqwest::Method::PATCH,
        "/api/restaurants/9",
        Some(&staff),
        Some(json!({ "isOpen": false })),
    )
    .await
    .expect(200);
    let open = app
        .get("/api/restaurants?cuisine=Japanese&openOnly=true", None)
        .await
        .expect(200);
    assert_eq!(open["restaurants"].as_array().unwrap().len(), 2);

    let limited = app.get("/api/restaurants?limit=4", None).await.expect(200);
    assert_eq!(ids(&limited), [1, 2, 3, 4]);
}

#[tokio::test]
async fn bad_listing_queries_name_the_parameter() {
    let app = TestApp::spawn().await;
    let r = app.get("/api/restaurants?lat=30.2", None).await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(r.fields(), ["lon"]);
    let r = app.get("/api/restaurants?lat=95&lon=-200", None).await;
    assert_eq!(r.fields(), ["lat", "lon"]);
    let r = app.get("/api/restaurants?radiusKm=far", None).await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(r.fields(), ["radiusKm"]);
    let r = app.get("/api/restaurants?limit=0", None).await;
    assert_eq!(r.fields(), ["limit"]);
    let r = app.get("/api/restaurants?limit=1000", None).await;
    assert_eq!(r.fields(), ["limit"]);
}

#[tokio::test]
async fn a_restaurant_comes_with_its_menu() {
    let app = TestApp::spawn().await;
    let body = app.get("/api/restaurants/1", None).await.expect(200);
    assert_eq!(body["restaurant"]["name"], "Congress Avenue Tacos");
    let menu = body["menu"].as_array().unwrap();
    assert_eq!(menu.len(), 8);
    assert!(
        menu.iter()
            .all(|i| i["restaurantId"] == 1 && i["priceCents"].as_i64().unwrap() > 0)
    );
    app.get("/api/restaurants/999", None)
        .await
        .expect_error(404, "NOT_FOUND");
    app.get("/api/restaurants/abc", None)
        .await
        .expect_error(404, "NOT_FOUND");
    app.get("/api/restaurants/-1", None)
        .await
        .expect_error(404, "NOT_FOUND");
}

fn new_restaurant(owner_email: &str) -> Value {
    json!({
        "name": "Test Kitchen",
        "address": "1 Test St, Austin, TX 78701",
        "location": { "lat": 30.27, "lon": -97.74 },
        "cuisineType": "Fusion",
        "prepTimeMinutes": 12,
        "deliveryFeeCents": 250,
        "owner": { "email": owner_email, "password": "owner-pass-1", "name": "Owner" }
    })
}

#[tokio::test]
async fn admin_creates_a_restaurant_whose_owner_can_run_it() {
    let app = TestApp::spawn().await;
    let admin = app.token("admin").await;
    let body = app
        .post(
            "/api/restaurants",
            Some(&admin),
            new_restaurant("owner@kitchen.test"),
        )
        .await
        .expect(201);
    let id = body["restaurant"]["id"].as_i64().unwrap();
    assert_eq!(body["restaurant"]["deliveryRadiusKm"], 10.0);
    assert_eq!(body["restaurant"]["isOpen"], true);

    let owner = app
        .login("owner@kitchen.test", "owner-pass-1")
        .await
        .expect(200);
    let owner = owner["token"].as_str().unwrap();
    assert_eq!(
        app.get("/api/me", Some(owner)).await.expect(200)["restaurantId"],
        id
    );
    let item = app
        .post(
            &format!("/api/restaurants/{id}/menu"),
            Some(owner),
            json!({ "name": "Bao", "description": "Pork belly", "priceCents": 650, "category": "Starters" }),
        )
        .await
        .expect(201);
    assert_eq!(item["item"]["restaurantId"], id);
    assert_eq!(item["item"]["isAvailable"], true);

    app.post(
        "/api/restaurants",
        Some(&admin),
        new_restaurant("OWNER@kitchen.test"),
    )
    .await
    .expect_error(409, "EMAIL_TAKEN");
}

#[tokio::test]
async fn only_admins_create_restaurants_and_bad_fields_are_listed() {
    let app = TestApp::spawn().await;
    for who in ["customer1", "driver1", "restaurant1"] {
        let token = app.token(who).await;
        app.post("/api/restaurants", Some(&token), new_restaurant("x@y.test"))
            .await
            .expect_error(403, "FORBIDDEN");
    }
    app.post("/api/restaurants", None, new_restaurant("x@y.test"))
        .await
        .expect_error(401, "UNAUTHORIZED");
    let admin = app.token("admin").await;
    let r = app
        .post(
            "/api/restaurants",
            Some(&admin),
            json!({ "name": "", "location": { "lat": 100, "lon": 0 }, "cuisineType": "X",
                    "prepTimeMinutes": 0, "deliveryFeeCents": -5,
                    "owner": { "email": "bad", "password": "short", "name": "" } }),
        )
        .await;
    r.expect_error(400, "VALIDATION_ERROR");
    for field in [
        "location.lat",
        "name",
        "address",
        "prepTimeMinutes",
        "deliveryFeeCents",
        "owner.email",
        "owner.password",
        "owner.name",
    ] {
        assert!(
            r.fields().contains(&field.to_string()),
            "{field} missing from {:?}",
            r.fields()
        );
    }
}

#[tokio::test]
async fn staff_change_only_their_own_restaurant() {
    let app = TestApp::spawn().await;
    let staff = app.token("restaurant2").await;
    let body = app
        .patch(
            "/api/restaurants/2",
            Some(&staff),
            json!({ "isOpen": false, "prepTimeMinutes": 40 }),
        )
        .await
        .expect(200);
    assert_eq!(body["restaurant"]["isOpen"], false);
    assert_eq!(body["restaurant"]["prepTimeMinutes"], 40);

    app.patch(
        "/api/restaurants/3",
        Some(&staff),
        json!({ "isOpen": false }),
    )
    .await
    .expect_error(403, "FORBIDDEN");
    let customer = app.token("customer1").await;
    app.patch(
        "/api/restaurants/2",
        Some(&customer),
        json!({ "isOpen": true }),
    )
    .await
    .expect_error(403, "FORBIDDEN");
    let admin = app.token("admin").await;
    app.patch(
        "/api/restaurants/3",
        Some(&admin),
        json!({ "isOpen": false }),
    )
    .await
    .expect(200);
    app.patch(
        "/api/restaurants/999",
        Some(&admin),
        json!({ "isOpen": false }),
    )
    .await
    .expect_error(404, "NOT_FOUND");
    let r = app
        .patch(
            "/api/restaurants/2",
            Some(&staff),
            json!({ "prepTimeMinutes": 0 }),
        )
        .await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(r.fields(), ["prepTimeMinutes"]);
    let r = app
        .patch(
            "/api/restaurants/2",
            Some(&staff),
            json!({ "isOpen": "yes" }),
        )
        .await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(r.fields(), ["isOpen"]);
}

#[tokio::test]
async fn menu_items_are_added_and_changed_by_their_staff_only() {
    let app = TestApp::spawn().await;
    let staff = app.token("restaurant1").await;
    let other = app.token("restaurant2").await;
    let item =
        json!({ "name": "Churros", "description": "", "priceCents": 499, "category": "Desserts" });
    app.post("/api/restaurants/1/menu", Some(&other), item.clone())
        .await
        .expect_error(403, "FORBIDDEN");
    app.post(
        "/api/restaurants/999/menu",
        Some(&app.token("admin").await),
        item.clone(),
    )
    .await
    .expect_error(404, "NOT_FOUND");
    let r = app
        .post(
            "/api/restaurants/1/menu",
            Some(&staff),
            json!({ "priceCents": 0 }),
        )
        .await;
    r.expect_error(400, "VALIDATION_ERROR");
    assert_eq!(r.fields(), ["name", "priceCents", "category"]);

    // Menu item 1 belongs to restaurant 1.
    let changed = app
        .patch(
            "/api/menu-items/1",
            Some(&staff),
            json!({ "isAvailable": false, "priceCents": 425 }),
        )
        .await
        .expect(200);
    assert_eq!(changed["item"]["isAvailable"], false);
    assert_eq!(changed["item"]["priceCents"], 425);
    app.patch(
        "/api/menu-items/1",
        Some(&other),
        json!({ "isAvailable": true }),
    )
    .await
    .expect_error(403, "FORBIDDEN");
    app.patch(
        "/api/menu-items/99999",
        Some(&staff),
        json!({ "isAvailable": true }),
    )
    .await
    .expect_error(404, "NOT_FOUND");
    let r = app
        .patch(
            "/api/menu-items/1",
            Some(&staff),
            json!({ "priceCents": -1 }),
        )
        .await;
    assert_eq!(r.fields(), ["priceCents"]);
}
