//! Restaurants and their menus: public browsing (nearest first), admin
//! creation with the staff account, staff edits.

use super::auth::Authenticated;
use super::error::{QueryParams, ValidBody, path_id};
use super::{ApiError, AppState};
use crate::auth;
use actors::domain::geo::distance_km;
use actors::domain::input::{
    MenuItemPatchInput, NewMenuItemInput, NewRestaurantInput, RestaurantPatchInput,
};
use actors::domain::model::{Caller, LatLon, MenuItem, Restaurant, RestaurantId, Role};
use actors::store::RestaurantFilter;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update))
        .routes(routes!(add_menu_item))
        .routes(routes!(update_menu_item))
}

const MAX_LIST_LIMIT: i64 = 100;
const KM_PER_DEGREE_LAT: f64 = 111.0;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// With `lon`: nearest first, within `radiusKm`, each with `distanceKm`.
    #[param(minimum = -90, maximum = 90)]
    lat: Option<f64>,
    #[param(minimum = -180, maximum = 180)]
    lon: Option<f64>,
    #[param(minimum = 0.1, maximum = 500, default = 10)]
    radius_km: Option<f64>,
    #[param(max_length = 50)]
    cuisine: Option<String>,
    open_only: Option<bool>,
    #[param(minimum = 1, maximum = 100, default = 50)]
    limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct RestaurantList {
    restaurants: Vec<Restaurant>,
}

/// Restaurants, nearest first when a point is given (no token needed).
#[utoipa::path(get, path = "/restaurants", tag = "restaurants",
    params(ListQuery),
    responses((status = 200, body = RestaurantList)))]
async fn list(
    State(state): State<AppState>,
    QueryParams(q, mut p): QueryParams<ListQuery>,
) -> Result<Json<RestaurantList>, ApiError> {
    let origin = match (q.lat, q.lon) {
        (None, None) => None,
        (lat, lon) => Some(p.lat_lon("", lat, lon)),
    };
    let radius_km = p.number("radiusKm", q.radius_km.or(Some(10.0)), 0.1, 500.0);
    let limit = p.int("limit", q.limit.or(Some(50)), 1, MAX_LIST_LIMIT);
    let cuisine = p.optional_text("cuisine", &q.cuisine, 50);
    p.finish(|| ())?;

    let filter = RestaurantFilter {
        bounds: origin.map(|o| bounding_box(o, radius_km)),
        cuisine,
        open_only: q.open_only.unwrap_or(false),
    };
    let mut restaurants = state.store.list_restaurants(&filter).await?;
    if let Some(origin) = origin {
        for r in &mut restaurants {
            r.distance_km = Some(round_to(distance_km(origin, r.location), 3));
        }
        restaurants.retain(|r| r.distance_km.is_some_and(|d| d <= radius_km));
        restaurants.sort_by(|a, b| {
            a.distance_km
                .partial_cmp(&b.distance_km)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    }
    restaurants.truncate(limit as usize);
    Ok(Json(RestaurantList { restaurants }))
}

/// A box that contains every point within `radius_km` of `origin`, for the
/// store to prefilter with its (lat, lon) index. Near the poles or the
/// antimeridian it gives up on longitude.
fn bounding_box(origin: LatLon, radius_km: f64) -> (f64, f64, f64, f64) {
    let dlat = radius_km / KM_PER_DEGREE_LAT;
    let cos_lat = origin.lat.to_radians().cos();
    let (min_lat, max_lat) = (
        (origin.lat - dlat).max(-90.0),
        (origin.lat + dlat).min(90.0),
    );
    if cos_lat < 0.01 {
        return (min_lat, max_lat, -180.0, 180.0);
    }
    let dlon = radius_km / (KM_PER_DEGREE_LAT * cos_lat);
    let (min_lon, max_lon) = (origin.lon - dlon, origin.lon + dlon);
    if min_lon < -180.0 || max_lon > 180.0 {
        return (min_lat, max_lat, -180.0, 180.0);
    }
    (min_lat, max_lat, min_lon, max_lon)
}

fn round_to(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

#[derive(Serialize, utoipa::ToSchema)]
struct RestaurantWithMenu {
    restaurant: Restaurant,
    menu: Vec<MenuItem>,
}

/// A restaurant and its menu (no token needed).
#[utoipa::path(get, path = "/restaurants/{id}", tag = "restaurants",
    params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = RestaurantWithMenu)))]
async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RestaurantWithMenu>, ApiError> {
    let id = path_id(&id, "restaurant")?;
    let restaurant = state
        .store
        .restaurant(id)
        .await?
        .ok_or(ApiError::NotFound("restaurant"))?;
    let menu = state.store.menu(id).await?;
    Ok(Json(RestaurantWithMenu { restaurant, menu }))
}

#[derive(Serialize, utoipa::ToSchema)]
struct RestaurantBody {
    restaurant: Restaurant,
}

/// Creates a restaurant with its staff account (admins).
#[utoipa::path(post, path = "/restaurants", tag = "restaurants",
    security(("bearer" = [])),
    request_body = NewRestaurantInput,
    responses(
        (status = 201, body = RestaurantBody),
        (status = 403, description = "FORBIDDEN: admins only"),
        (status = 409, description = "EMAIL_TAKEN: the owner's email"),
        (status = 429, description = "RATE_LIMITED: the password hashers are busy"),
    ))]
async fn create(
    State(state): State<AppState>,
    who: Authenticated,
    ValidBody { parsed, .. }: ValidBody<NewRestaurantInput>,
) -> Result<(StatusCode, Json<RestaurantBody>), ApiError> {
    who.require(&[Role::Admin])?;
    let new = parsed?;
    let hash = auth::hash_password(new.owner_password.clone()).await?;
    let (restaurant, owner) = state.store.create_restaurant(&new, &hash).await?;
    tracing::info!(
        restaurant_id = restaurant.id,
        owner_id = owner.id,
        "Restaurant created"
    );
    Ok((StatusCode::CREATED, Json(RestaurantBody { restaurant })))
}

/// Staff of this restaurant and admins may change it; others may not.
fn require_staff(who: &Authenticated, restaurant_id: RestaurantId) -> Result<&Caller, ApiError> {
    let caller = who.require(&[Role::Restaurant, Role::Admin])?;
    if caller.role == Role::Restaurant && caller.restaurant_id != Some(restaurant_id) {
        return Err(ApiError::Forbidden(
            "staff may only change their own restaurant".into(),
        ));
    }
    Ok(caller)
}

/// 404 for a restaurant that does not exist, then 403 unless the caller
/// may change it (existence first: admins must learn of a wrong id).
async fn require_staff_of_existing(
    state: &AppState,
    who: &Authenticated,
    id: RestaurantId,
) -> Result<(), ApiError> {
    state
        .store
        .restaurant(id)
        .await?
        .ok_or(ApiError::NotFound("restaurant"))?;
    require_staff(who, id).map(|_| ())
}

/// Opens or closes a restaurant, or changes its preparation time (its
/// staff, admins).
#[utoipa::path(patch, path = "/restaurants/{id}", tag = "restaurants",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)),
    request_body = RestaurantPatchInput,
    responses(
        (status = 200, body = RestaurantBody),
        (status = 403, description = "FORBIDDEN: another restaurant's staff, or not staff"),
    ))]
async fn update(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
    ValidBody { parsed, .. }: ValidBody<RestaurantPatchInput>,
) -> Result<Json<RestaurantBody>, ApiError> {
    who.require(&[Role::Restaurant, Role::Admin])?;
    let id = path_id(&id, "restaurant")?;
    let patch = parsed?;
    require_staff_of_existing(&state, &who, id).await?;
    let restaurant = state
        .store
        .update_restaurant(id, patch)
        .await?
        .ok_or(ApiError::NotFound("restaurant"))?;
    state.engine.orders().forget_restaurant(id);
    Ok(Json(RestaurantBody { restaurant }))
}

#[derive(Serialize, utoipa::ToSchema)]
struct ItemBody {
    item: MenuItem,
}

/// Adds a menu item (its staff, admins).
#[utoipa::path(post, path = "/restaurants/{id}/menu", tag = "restaurants",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)),
    request_body = NewMenuItemInput,
    responses(
        (status = 201, body = ItemBody),
        (status = 403, description = "FORBIDDEN: another restaurant's staff, or not staff"),
        (status = 409, description = "LIMIT_REACHED: the menu is full (`restaurants.max_menu_items`)"),
    ))]
async fn add_menu_item(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
    ValidBody { parsed, .. }: ValidBody<NewMenuItemInput>,
) -> Result<(StatusCode, Json<ItemBody>), ApiError> {
    who.require(&[Role::Restaurant, Role::Admin])?;
    let id = path_id(&id, "restaurant")?;
    let new = parsed?;
    require_staff_of_existing(&state, &who, id).await?;
    let max = state.settings.restaurants.max_menu_items;
    if state.store.menu(id).await?.len() >= max {
        return Err(ApiError::LimitReached(format!(
            "a menu holds at most {max} items"
        )));
    }
    let item = state.store.create_menu_item(id, &new).await?;
    Ok((StatusCode::CREATED, Json(ItemBody { item })))
}

/// Changes a menu item's price or availability (its staff, admins).
#[utoipa::path(patch, path = "/menu-items/{id}", tag = "restaurants",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)),
    request_body = MenuItemPatchInput,
    responses(
        (status = 200, body = ItemBody),
        (status = 403, description = "FORBIDDEN: another restaurant's staff, or not staff"),
    ))]
async fn update_menu_item(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
    ValidBody { parsed, .. }: ValidBody<MenuItemPatchInput>,
) -> Result<Json<ItemBody>, ApiError> {
    who.require(&[Role::Restaurant, Role::Admin])?;
    let id = path_id(&id, "menu item")?;
    let patch = parsed?;
    let item = state
        .store
        .menu_item(id)
        .await?
        .ok_or(ApiError::NotFound("menu item"))?;
    require_staff(&who, item.restaurant_id)?;
    let item = state
        .store
        .update_menu_item(id, patch)
        .await?
        .ok_or(ApiError::NotFound("menu item"))?;
    Ok(Json(ItemBody { item }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounding_box_contains_the_circle() {
        let origin = LatLon {
            lat: 30.27,
            lon: -97.74,
        };
        let (min_lat, max_lat, min_lon, max_lon) = bounding_box(origin, 10.0);
        for (lat, lon) in [
            (min_lat, origin.lon),
            (max_lat, origin.lon),
            (origin.lat, min_lon),
            (origin.lat, max_lon),
        ] {
            let d = distance_km(origin, LatLon { lat, lon });
            assert!(d >= 9.9, "edge at {d} km is inside the radius");
        }
    }

    #[test]
    fn bounding_box_gives_up_on_longitude_across_the_antimeridian() {
        let (_, _, min_lon, max_lon) = bounding_box(
            LatLon {
                lat: 0.0,
                lon: 179.99,
            },
            5.0,
        );
        assert_eq!((min_lon, max_lon), (-180.0, 180.0));
    }
}
