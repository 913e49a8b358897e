//! Client input, parsed into values that are valid by construction
//! (CONTRACT.md "Validation").
//!
//! Each `*Input` is the loosely typed shape a client sends (every field
//! optional, so a missing field is reported like a wrong one); its `parse`
//! returns the checked value or every failing field at once.

use crate::domain::model::{DeliveryAddress, LatLon, Role, VehicleType};
use serde::{Deserialize, Serialize};

/// One failing field, named by its JSON path (`deliveryAddress.zip`,
/// `items[2].quantity`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Collects failing fields while a parser walks an input.
#[derive(Debug, Default)]
pub struct Problems {
    failed: Vec<FieldError>,
    /// Fields that already failed for their JSON type: a rule about one of
    /// them (or about anything inside one) has nothing to add.
    wrong_type: Vec<String>,
}

impl Problems {
    /// Starts with the fields whose JSON type was wrong, so that the rules
    /// that follow list every other failing field beside them, and none of
    /// these twice (a wrong type reads as missing to the rules).
    pub fn after_type_errors(errors: Vec<FieldError>) -> Problems {
        Problems {
            wrong_type: errors.iter().map(|e| e.field.clone()).collect(),
            failed: errors,
        }
    }

    fn covered(&self, field: &str) -> bool {
        self.wrong_type.iter().any(|wrong| {
            field == wrong
                || field
                    .strip_prefix(wrong.as_str())
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
    }

    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        let field = field.into();
        if self.covered(&field) {
            return;
        }
        self.failed.push(FieldError {
            field,
            message: message.into(),
        });
    }

    /// Adds every failure of a parser that ran on its own.
    pub fn extend(&mut self, errors: Vec<FieldError>) {
        for error in errors {
            self.add(error.field, error.message);
        }
    }

    /// `value` if no field failed, otherwise every failure.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, Vec<FieldError>> {
        if self.failed.is_empty() {
            Ok(value())
        } else {
            Err(self.failed)
        }
    }

    /// A required field: reports it missing and yields `None`.
    pub fn required<'a, T>(&mut self, field: &str, value: &'a Option<T>) -> Option<&'a T> {
        if value.is_none() {
            self.add(field, "is required");
        }
        value.as_ref()
    }

    /// A string whose length in characters lies in `min..=max`.
    pub fn text(&mut self, field: &str, value: &Option<String>, min: usize, max: usize) -> String {
        match value {
            None if min > 0 => {
                self.add(field, "is required");
                String::new()
            }
            None => String::new(),
            Some(text) => {
                let len = text.chars().count();
                if len < min || len > max {
                    let message = if min == max {
                        format!("must be exactly {min} characters")
                    } else if min == 0 {
                        format!("must be at most {max} characters")
                    } else {
                        format!("must be {min} to {max} characters")
                    };
                    self.add(field, message);
                }
                // Postgres text cannot hold NUL (SQLite can): refuse it
                // here, the same on both, rather than as a 500 on one.
                if text.contains('\0') {
                    self.add(field, "must not contain NUL characters");
                }
                text.clone()
            }
        }
    }

    /// An optional string of at most `max` characters.
    pub fn optional_text(
        &mut self,
        field: &str,
        value: &Option<String>,
        max: usize,
    ) -> Option<String> {
        value.as_ref().map(|_| self.text(field, value, 0, max))
    }

    /// An integer in `min..=max`.
    pub fn int(&mut self, field: &str, value: Option<i64>, min: i64, max: i64) -> i64 {
        match value {
            None => {
                self.add(field, "is required");
                0
            }
            Some(v) if v < min || v > max => {
                self.add(field, format!("must be between {min} and {max}"));
                v
            }
            Some(v) => v,
        }
    }

    /// A finite number in `min..=max`.
    pub fn number(&mut self, field: &str, value: Option<f64>, min: f64, max: f64) -> f64 {
        match value {
            None => {
                self.add(field, "is required");
                0.0
            }
            Some(v) if !v.is_finite() || v < min || v > max => {
                self.add(field, format!("must be a number between {min} and {max}"));
                v
            }
            Some(v) => v,
        }
    }

    /// A latitude/longitude pair under `prefix` (`deliveryAddress.` or ``).
    pub fn lat_lon(&mut self, prefix: &str, lat: Option<f64>, lon: Option<f64>) -> LatLon {
        LatLon {
            lat: self.coordinate(prefix, "lat", lat, 90.0),
            lon: self.coordinate(prefix, "lon", lon, 180.0),
        }
    }

    /// One coordinate within `±limit`. Every driver position comes through
    /// here, so the field's name is only built when it is reported.
    fn coordinate(&mut self, prefix: &str, name: &str, value: Option<f64>, limit: f64) -> f64 {
        match value {
            Some(v) if v.is_finite() && (-limit..=limit).contains(&v) => v,
            _ => self.number(&format!("{prefix}{name}"), value, -limit, limit),
        }
    }

    /// An email address, returned lower-cased.
    pub fn email(&mut self, field: &str, value: &Option<String>) -> String {
        let email = self.text(field, value, 1, 254);
        let lowered = email.trim().to_lowercase();
        if !lowered.is_empty() && !email_address::EmailAddress::is_valid(&lowered) {
            self.add(field, "must be a valid email address");
        }
        lowered
    }
}

/// An input that checks itself into a valid value, for the gateway's
/// extractor that merges these rules' failures with wrong JSON types.
pub trait Parse {
    type Output;
    fn parse(&self) -> Result<Self::Output, Vec<FieldError>>;
}

macro_rules! parse_inputs {
    ($($input:ty => $output:ty),* $(,)?) => {
        $(impl Parse for $input {
            type Output = $output;
            fn parse(&self) -> Result<$output, Vec<FieldError>> {
                // The inherent method of the same name.
                <$input>::parse(self)
            }
        })*
    };
}

parse_inputs! {
    NewOrderInput => NewOrder,
    RegistrationInput => Registration,
    NewRestaurantInput => NewRestaurant,
    RestaurantPatchInput => RestaurantPatch,
    NewMenuItemInput => NewMenuItem,
    MenuItemPatchInput => MenuItemPatch,
    LocationInput => LocationFix,
}

/// `^\d{5}(-\d{4})?$`
fn is_zip(zip: &str) -> bool {
    let bytes = zip.as_bytes();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    match bytes.len() {
        5 => digits(bytes),
        10 => digits(&bytes[..5]) && bytes[5] == b'-' && digits(&bytes[6..]),
        _ => false,
    }
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddressInput {
    #[schema(value_type = String, required = true, min_length = 1, max_length = 200)]
    pub street: Option<String>,
    #[schema(value_type = String, required = true, min_length = 1, max_length = 100)]
    pub city: Option<String>,
    #[schema(value_type = String, required = true, min_length = 2, max_length = 2)]
    pub state: Option<String>,
    #[schema(value_type = String, required = true, min_length = 5, max_length = 10, pattern = r"^\d{5}(-\d{4})?$")]
    pub zip: Option<String>,
    #[schema(value_type = f64, required = true, minimum = -90, maximum = 90)]
    pub lat: Option<f64>,
    #[schema(value_type = f64, required = true, minimum = -180, maximum = 180)]
    pub lon: Option<f64>,
    #[schema(max_length = 500)]
    pub instructions: Option<String>,
}

impl AddressInput {
    fn parse_into(&self, p: &mut Problems, prefix: &str) -> DeliveryAddress {
        let f = |name: &str| format!("{prefix}{name}");
        let zip = p.text(&f("zip"), &self.zip, 1, 10);
        if self.zip.is_some() && !is_zip(&zip) {
            p.add(
                f("zip"),
                "must be 5 digits, optionally followed by -4 digits",
            );
        }
        let at = p.lat_lon(prefix, self.lat, self.lon);
        DeliveryAddress {
            street: p.text(&f("street"), &self.street, 1, 200),
            city: p.text(&f("city"), &self.city, 1, 100),
            state: p.text(&f("state"), &self.state, 2, 2),
            zip,
            lat: at.lat,
            lon: at.lon,
            instructions: p.optional_text(&f("instructions"), &self.instructions, 500),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderLineInput {
    #[schema(value_type = i64, required = true, minimum = 1)]
    pub menu_item_id: Option<i64>,
    #[schema(value_type = i64, required = true, minimum = 1, maximum = 20)]
    pub quantity: Option<i64>,
    #[schema(max_length = 200)]
    pub special_instructions: Option<String>,
}

/// The example is an order the demo city accepts (`serve --demo`), so a
/// client trying the document gets a 201.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "restaurantId": 1,
    "items": [{ "menuItemId": 1, "quantity": 2 }],
    "deliveryAddress": {
        "street": "1100 Congress Ave", "city": "Austin", "state": "TX", "zip": "78701",
        "lat": 30.2747, "lon": -97.7404
    }
}))]
pub struct NewOrderInput {
    #[schema(value_type = i64, required = true, minimum = 1)]
    pub restaurant_id: Option<i64>,
    #[schema(value_type = Vec<OrderLineInput>, required = true, min_items = 1, max_items = 50)]
    pub items: Option<Vec<OrderLineInput>>,
    #[schema(value_type = AddressInput, required = true)]
    pub delivery_address: Option<AddressInput>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderLine {
    pub menu_item_id: i64,
    pub quantity: i32,
    pub special_instructions: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewOrder {
    pub restaurant_id: i64,
    pub lines: Vec<OrderLine>,
    pub delivery_address: DeliveryAddress,
}

pub const MAX_ORDER_LINES: usize = 50;
pub const MAX_QUANTITY: i64 = 20;

impl NewOrderInput {
    pub fn parse(&self) -> Result<NewOrder, Vec<FieldError>> {
        let mut p = Problems::default();
        let restaurant_id = p.int("restaurantId", self.restaurant_id, 1, i64::MAX);
        let mut lines = Vec::new();
        match &self.items {
            None => p.add("items", "is required"),
            Some(items) if items.is_empty() || items.len() > MAX_ORDER_LINES => {
                p.add("items", format!("must have 1 to {MAX_ORDER_LINES} entries"))
            }
            Some(items) => {
                for (i, line) in items.iter().enumerate() {
                    let f = |name: &str| format!("items[{i}].{name}");
                    lines.push(OrderLine {
                        menu_item_id: p.int(&f("menuItemId"), line.menu_item_id, 1, i64::MAX),
                        quantity: p.int(&f("quantity"), line.quantity, 1, MAX_QUANTITY) as i32,
                        special_instructions: p.optional_text(
                            &f("specialInstructions"),
                            &line.special_instructions,
                            200,
                        ),
                    });
                }
            }
        }
        let delivery_address = match &self.delivery_address {
            None => {
                p.add("deliveryAddress", "is required");
                None
            }
            Some(address) => Some(address.parse_into(&mut p, "deliveryAddress.")),
        };
        p.finish(|| NewOrder {
            restaurant_id,
            lines,
            // Present: a missing address was reported above.
            delivery_address: delivery_address.unwrap_or_else(|| unreachable!()),
        })
    }
}

/// The roles one may register as (staff accounts come with their
/// restaurant; admins are made by operators).
#[derive(utoipa::ToSchema)]
#[schema(as = RegistrationRole)]
#[allow(dead_code)]
enum RegistrationRole {
    #[schema(rename = "customer")]
    Customer,
    #[schema(rename = "driver")]
    Driver,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationInput {
    #[schema(value_type = String, required = true, min_length = 1, max_length = 254, format = Email)]
    pub email: Option<String>,
    #[schema(value_type = String, required = true, min_length = 8, max_length = 128)]
    pub password: Option<String>,
    #[schema(value_type = String, required = true, min_length = 1, max_length = 100)]
    pub name: Option<String>,
    #[schema(value_type = RegistrationRole, required = true)]
    pub role: Option<String>,
    #[schema(value_type = Option<VehicleType>)]
    pub vehicle_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub email: String,
    pub password: String,
    pub name: String,
    pub role: Role,
    /// Set for drivers only.
    pub vehicle_type: Option<VehicleType>,
}

impl RegistrationInput {
    pub fn parse(&self) -> Result<Registration, Vec<FieldError>> {
        let mut p = Problems::default();
        let email = p.email("email", &self.email);
        let password = p.text("password", &self.password, 8, 128);
        let name = p.text("name", &self.name, 1, 100);
        let role = match self.role.as_deref() {
            None => {
                p.add("role", "is required");
                Role::Customer
            }
            Some("customer") => Role::Customer,
            Some("driver") => Role::Driver,
            Some(_) => {
                p.add("role", "must be customer or driver");
                Role::Customer
            }
        };
        let vehicle_type = match self.vehicle_type.as_deref().map(str::parse::<VehicleType>) {
            None => VehicleType::Car,
            Some(Ok(vehicle)) => vehicle,
            Some(Err(())) => {
                p.add("vehicleType", "must be car, bike, scooter or walk");
                VehicleType::Car
            }
        };
        p.finish(|| Registration {
            email,
            password,
            name,
            role,
            vehicle_type: (role == Role::Driver).then_some(vehicle_type),
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OwnerInput {
    #[schema(value_type = String, required = true, min_length = 1, max_length = 254, format = Email)]
    pub email: Option<String>,
    #[schema(value_type = String, required = true, min_length = 8, max_length = 128)]
    pub password: Option<String>,
    #[schema(value_type = String, required = true, min_length = 1, max_length = 100)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewRestaurantInput {
    #[schema(value_type = String, required = true, min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[schema(value_type = String, required = true, min_length = 1, max_length = 300)]
    pub address: Option<String>,
    #[schema(value_type = LatLonInput, required = true)]
    pub location: Option<LatLonInput>,
    #[schema(value_type = String, required = true, min_length = 1, max_length = 50)]
    pub cuisine_type: Option<String>,
    #[schema(minimum = 0, maximum = 5)]
    pub rating: Option<f64>,
    #[schema(minimum = 1, maximum = 240, default = 20)]
    pub prep_time_minutes: Option<i64>,
    #[schema(minimum = 0, maximum = 1000000, default = 0)]
    pub delivery_fee_cents: Option<i64>,
    #[schema(minimum = 0.1, maximum = 100, default = 10)]
    pub delivery_radius_km: Option<f64>,
    #[schema(default = true)]
    pub is_open: Option<bool>,
    #[schema(max_length = 500)]
    pub image_url: Option<String>,
    #[schema(value_type = OwnerInput, required = true)]
    pub owner: Option<OwnerInput>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
pub struct LatLonInput {
    #[schema(value_type = f64, required = true, minimum = -90, maximum = 90)]
    pub lat: Option<f64>,
    #[schema(value_type = f64, required = true, minimum = -180, maximum = 180)]
    pub lon: Option<f64>,
}

/// A restaurant as an admin creates it, with the staff account that runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRestaurant {
    pub name: String,
    pub address: String,
    pub location: LatLon,
    pub cuisine_type: String,
    pub rating: f64,
    pub prep_time_minutes: i32,
    pub delivery_fee_cents: i64,
    pub delivery_radius_km: f64,
    pub is_open: bool,
    pub image_url: Option<String>,
    pub owner_email: String,
    pub owner_password: String,
    pub owner_name: String,
}

pub const DEFAULT_DELIVERY_RADIUS_KM: f64 = 10.0;
pub const MAX_PREP_TIME_MINUTES: i64 = 240;
pub const MAX_PRICE_CENTS: i64 = 1_000_000;

impl NewRestaurantInput {
    pub fn parse(&self) -> Result<NewRestaurant, Vec<FieldError>> {
        let mut p = Problems::default();
        let location = match self.location {
            None => {
                p.add("location", "is required");
                LatLon { lat: 0.0, lon: 0.0 }
            }
            Some(at) => p.lat_lon("location.", at.lat, at.lon),
        };
        let rating = match self.rating {
            None => 0.0,
            Some(r) => p.number("rating", Some(r), 0.0, 5.0),
        };
        let delivery_radius_km = match self.delivery_radius_km {
            None => DEFAULT_DELIVERY_RADIUS_KM,
            Some(r) => p.number("deliveryRadiusKm", Some(r), 0.1, 100.0),
        };
        let owner = self.owner.clone().unwrap_or_default();
        if self.owner.is_none() {
            p.add("owner", "is required");
        }
        let name = p.text("name", &self.name, 1, 200);
        let address = p.text("address", &self.address, 1, 300);
        let cuisine_type = p.text("cuisineType", &self.cuisine_type, 1, 50);
        let prep_time_minutes = p.int(
            "prepTimeMinutes",
            self.prep_time_minutes.or(Some(20)),
            1,
            MAX_PREP_TIME_MINUTES,
        ) as i32;
        let delivery_fee_cents = p.int(
            "deliveryFeeCents",
            self.delivery_fee_cents.or(Some(0)),
            0,
            MAX_PRICE_CENTS,
        );
        let image_url = p.optional_text("imageUrl", &self.image_url, 500);
        let (owner_email, owner_password, owner_name) = if self.owner.is_some() {
            (
                p.email("owner.email", &owner.email),
                p.text("owner.password", &owner.password, 8, 128),
                p.text("owner.name", &owner.name, 1, 100),
            )
        } else {
            Default::default()
        };
        p.finish(|| NewRestaurant {
            name,
            address,
            location,
            cuisine_type,
            rating,
            prep_time_minutes,
            delivery_fee_cents,
            delivery_radius_km,
            is_open: self.is_open.unwrap_or(true),
            image_url,
            owner_email,
            owner_password,
            owner_name,
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestaurantPatchInput {
    pub is_open: Option<bool>,
    #[schema(minimum = 1, maximum = 240)]
    pub prep_time_minutes: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestaurantPatch {
    pub is_open: Option<bool>,
    pub prep_time_minutes: Option<i32>,
}

impl RestaurantPatchInput {
    pub fn parse(&self) -> Result<RestaurantPatch, Vec<FieldError>> {
        let mut p = Problems::default();
        let prep_time_minutes = self
            .prep_time_minutes
            .map(|m| p.int("prepTimeMinutes", Some(m), 1, MAX_PREP_TIME_MINUTES) as i32);
        p.finish(|| RestaurantPatch {
            is_open: self.is_open,
            prep_time_minutes,
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewMenuItemInput {
    #[schema(value_type = String, required = true, min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[schema(value_type = String, required = true, min_length = 0, max_length = 1000)]
    pub description: Option<String>,
    #[schema(value_type = i64, required = true, minimum = 1, maximum = 1000000)]
    pub price_cents: Option<i64>,
    #[schema(value_type = String, required = true, min_length = 1, max_length = 100)]
    pub category: Option<String>,
    #[schema(default = true)]
    pub is_available: Option<bool>,
    #[schema(max_length = 500)]
    pub image_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewMenuItem {
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    pub category: String,
    pub is_available: bool,
    pub image_url: Option<String>,
}

impl NewMenuItemInput {
    pub fn parse(&self) -> Result<NewMenuItem, Vec<FieldError>> {
        Problems::default().finish_with(|p| NewMenuItem {
            name: p.text("name", &self.name, 1, 200),
            description: p.text("description", &self.description, 0, 1000),
            price_cents: p.int("priceCents", self.price_cents, 1, MAX_PRICE_CENTS),
            category: p.text("category", &self.category, 1, 100),
            is_available: self.is_available.unwrap_or(true),
            image_url: p.optional_text("imageUrl", &self.image_url, 500),
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MenuItemPatchInput {
    pub is_available: Option<bool>,
    #[schema(minimum = 1, maximum = 1000000)]
    pub price_cents: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MenuItemPatch {
    pub is_available: Option<bool>,
    pub price_cents: Option<i64>,
}

impl MenuItemPatchInput {
    pub fn parse(&self) -> Result<MenuItemPatch, Vec<FieldError>> {
        Problems::default().finish_with(|p| MenuItemPatch {
            is_available: self.is_available,
            price_cents: self
                .price_cents
                .map(|c| p.int("priceCents", Some(c), 1, MAX_PRICE_CENTS)),
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocationInput {
    #[schema(value_type = f64, required = true, minimum = -90, maximum = 90)]
    pub lat: Option<f64>,
    #[schema(value_type = f64, required = true, minimum = -180, maximum = 180)]
    pub lon: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, exclusive_maximum = 360)]
    pub heading: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 100)]
    pub speed_mps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub timestamp: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocationFix {
    pub at: LatLon,
    pub heading: Option<f64>,
    pub speed_mps: Option<f64>,
    /// When the device took the fix (ms since the epoch), if it said.
    pub timestamp: Option<i64>,
}

impl LocationInput {
    pub fn parse(&self) -> Result<LocationFix, Vec<FieldError>> {
        Problems::default().finish_with(|p| LocationFix {
            at: p.lat_lon("", self.lat, self.lon),
            heading: self.heading.inspect(|h| {
                if !(h.is_finite() && (0.0..360.0).contains(h)) {
                    p.add("heading", "must be at least 0 and below 360");
                }
            }),
            speed_mps: self
                .speed_mps
                .map(|s| p.number("speedMps", Some(s), 0.0, 100.0)),
            timestamp: self
                .timestamp
                .map(|t| p.int("timestamp", Some(t), 1, i64::MAX)),
        })
    }
}

impl Problems {
    /// Runs a parser that records into `self`, then finishes.
    pub fn finish_with<T>(
        mut self,
        parse: impl FnOnce(&mut Problems) -> T,
    ) -> Result<T, Vec<FieldError>> {
        let value = parse(&mut self);
        self.finish(|| value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(errors: Vec<FieldError>) -> Vec<String> {
        errors.into_iter().map(|e| e.field).collect()
    }

    fn good_address() -> AddressInput {
        AddressInput {
            street: Some("1 Congress Ave".into()),
            city: Some("Austin".into()),
            state: Some("TX".into()),
            zip: Some("78701".into()),
            lat: Some(30.26),
            lon: Some(-97.74),
            instructions: None,
        }
    }

    fn good_order() -> NewOrderInput {
        NewOrderInput {
            restaurant_id: Some(1),
            items: Some(vec![OrderLineInput {
                menu_item_id: Some(3),
                quantity: Some(2),
                special_instructions: Some("no onions".into()),
            }]),
            delivery_address: Some(good_address()),
        }
    }

    #[test]
    fn a_good_order_parses() {
        let order = good_order().parse().unwrap();
        assert_eq!(order.restaurant_id, 1);
        assert_eq!(order.lines[0].quantity, 2);
        assert_eq!(order.delivery_address.zip, "78701");
    }

    #[test]
    fn zip_codes_follow_the_us_pattern() {
        for good in ["78701", "78701-1234"] {
            assert!(is_zip(good), "{good}");
        }
        for bad in [
            "",
            "7870",
            "787011",
            "78701-123",
            "78701 1234",
            "abcde",
            "78701-12345",
            "٧٨٧٠١",
        ] {
            assert!(!is_zip(bad), "{bad}");
        }
    }

    #[test]
    fn every_failing_field_of_an_order_is_reported() {
        let mut input = good_order();
        input.restaurant_id = Some(0);
        input.items = Some(vec![
            OrderLineInput {
                menu_item_id: Some(-1),
                quantity: Some(21),
                special_instructions: Some("x".repeat(201)),
            },
            OrderLineInput::default(),
        ]);
        input.delivery_address = Some(AddressInput {
            street: Some(String::new()),
            city: Some("c".repeat(101)),
            state: Some("Texas".into()),
            zip: Some("1234".into()),
            lat: Some(91.0),
            lon: Some(-181.0),
            instructions: Some("i".repeat(501)),
        });
        let got = fields(input.parse().unwrap_err());
        for expected in [
            "restaurantId",
            "items[0].menuItemId",
            "items[0].quantity",
            "items[0].specialInstructions",
            "items[1].menuItemId",
            "items[1].quantity",
            "deliveryAddress.street",
            "deliveryAddress.city",
            "deliveryAddress.state",
            "deliveryAddress.zip",
            "deliveryAddress.lat",
            "deliveryAddress.lon",
            "deliveryAddress.instructions",
        ] {
            assert!(
                got.contains(&expected.to_string()),
                "missing {expected} in {got:?}"
            );
        }
    }

    #[test]
    fn item_count_is_bounded() {
        let mut input = good_order();
        input.items = Some(vec![]);
        assert_eq!(fields(input.parse().unwrap_err()), ["items"]);
        let line = good_order().items.unwrap().remove(0);
        input.items = Some(vec![line; MAX_ORDER_LINES + 1]);
        assert_eq!(fields(input.parse().unwrap_err()), ["items"]);
    }

    #[test]
    fn missing_fields_are_reported_as_required() {
        let got = fields(NewOrderInput::default().parse().unwrap_err());
        assert_eq!(got, ["restaurantId", "items", "deliveryAddress"]);
    }

    #[test]
    fn registration_lowercases_email_and_checks_every_field() {
        let ok = RegistrationInput {
            email: Some("Ann@Example.COM".into()),
            password: Some("long enough".into()),
            name: Some("Ann".into()),
            role: Some("driver".into()),
            vehicle_type: Some("bike".into()),
        }
        .parse()
        .unwrap();
        assert_eq!(ok.email, "ann@example.com");
        assert_eq!(ok.vehicle_type, Some(VehicleType::Bike));

        let bad = RegistrationInput {
            email: Some("not-an-email".into()),
            password: Some("short".into()),
            name: Some(String::new()),
            role: Some("admin".into()),
            vehicle_type: Some("rocket".into()),
        };
        assert_eq!(
            fields(bad.parse().unwrap_err()),
            ["email", "password", "name", "role", "vehicleType"]
        );
    }

    #[test]
    fn customers_have_no_vehicle() {
        let customer = RegistrationInput {
            email: Some("c@example.com".into()),
            password: Some("12345678".into()),
            name: Some("C".into()),
            role: Some("customer".into()),
            vehicle_type: None,
        };
        assert_eq!(customer.parse().unwrap().vehicle_type, None);
    }

    #[test]
    fn location_rules() {
        let fix = LocationInput {
            lat: Some(30.0),
            lon: Some(-97.0),
            heading: Some(359.9),
            speed_mps: Some(0.0),
            timestamp: None,
        };
        assert!(fix.parse().is_ok());
        let bad = LocationInput {
            lat: Some(f64::NAN),
            lon: None,
            heading: Some(360.0),
            speed_mps: Some(100.5),
            timestamp: None,
        };
        assert_eq!(
            fields(bad.parse().unwrap_err()),
            ["lat", "lon", "heading", "speedMps"]
        );
    }

    #[test]
    fn restaurant_needs_an_owner_and_sane_numbers() {
        let input = NewRestaurantInput {
            name: Some("Taco Town".into()),
            address: Some("1 St".into()),
            location: Some(LatLonInput {
                lat: Some(30.0),
                lon: Some(-97.0),
            }),
            cuisine_type: Some("Mexican".into()),
            prep_time_minutes: Some(0),
            delivery_fee_cents: Some(-1),
            ..Default::default()
        };
        assert_eq!(
            fields(input.parse().unwrap_err()),
            ["owner", "prepTimeMinutes", "deliveryFeeCents"]
        );
    }

    #[test]
    fn menu_item_price_must_be_positive() {
        let input = NewMenuItemInput {
            name: Some("Taco".into()),
            price_cents: Some(0),
            category: Some("Mains".into()),
            ..Default::default()
        };
        assert_eq!(fields(input.parse().unwrap_err()), ["priceCents"]);
        let patch = MenuItemPatchInput {
            is_available: Some(false),
            price_cents: Some(MAX_PRICE_CENTS + 1),
        };
        assert_eq!(fields(patch.parse().unwrap_err()), ["priceCents"]);
    }
}
