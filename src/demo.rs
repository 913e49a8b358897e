//! Demo data (CONTRACT.md "Demo data"): a city's worth of restaurants with
//! menus, and the demo accounts, loaded only into an empty store.
//!
//! The city is Austin, Texas: restaurants spread from Downtown to the
//! Domain, customers' addresses in between. Every account's password is
//! `demo-pass`.

use crate::auth;
use actors::domain::input::{NewMenuItem, NewRestaurant};
use actors::domain::model::{LatLon, Role, VehicleType};
use actors::store::{NewUser, Store};

pub const PASSWORD: &str = "demo-pass";
pub const CUSTOMERS: usize = 20;
pub const DRIVERS: usize = 50;

/// The city centre (Texas Capitol), where the simulator and pages look first.
pub const CITY_CENTER: LatLon = LatLon {
    lat: 30.2747,
    lon: -97.7404,
};

struct Place {
    name: &'static str,
    cuisine: &'static str,
    address: &'static str,
    lat: f64,
    lon: f64,
}

const fn place(
    name: &'static str,
    cuisine: &'static str,
    address: &'static str,
    lat: f64,
    lon: f64,
) -> Place {
    Place {
        name,
        cuisine,
        address,
        lat,
        lon,
    }
}

const RESTAURANTS: [Place; 30] = [
    place(
        "Congress Avenue Tacos",
        "Mexican",
        "600 Congress Ave, Austin, TX 78701",
        30.2686,
        -97.7425,
    ),
    place(
        "Rainey Street Smokehouse",
        "BBQ",
        "80 Rainey St, Austin, TX 78701",
        30.2589,
        -97.7385,
    ),
    place(
        "Sixth Street Slice",
        "Pizza",
        "400 E 6th St, Austin, TX 78701",
        30.2671,
        -97.7392,
    ),
    place(
        "Lady Bird Pho",
        "Vietnamese",
        "1100 S Lamar Blvd, Austin, TX 78704",
        30.2546,
        -97.7637,
    ),
    place(
        "South Congress Burger Co.",
        "Burgers",
        "1500 S Congress Ave, Austin, TX 78704",
        30.2486,
        -97.7500,
    ),
    place(
        "Zilker Poke Bar",
        "Hawaiian",
        "2000 Barton Springs Rd, Austin, TX 78704",
        30.2640,
        -97.7680,
    ),
    place(
        "East Cesar Chavez Pupuseria",
        "Salvadoran",
        "1700 E Cesar Chavez St, Austin, TX 78702",
        30.2563,
        -97.7250,
    ),
    place(
        "Mueller Curry House",
        "Indian",
        "1900 Aldrich St, Austin, TX 78723",
        30.2988,
        -97.7058,
    ),
    place(
        "Hyde Park Noodle Shop",
        "Japanese",
        "4300 Duval St, Austin, TX 78751",
        30.3062,
        -97.7270,
    ),
    place(
        "Guadalupe Falafel",
        "Mediterranean",
        "2300 Guadalupe St, Austin, TX 78705",
        30.2870,
        -97.7420,
    ),
    place(
        "West Campus Wok",
        "Chinese",
        "2500 Rio Grande St, Austin, TX 78705",
        30.2895,
        -97.7455,
    ),
    place(
        "Clarksville Trattoria",
        "Italian",
        "1200 W Lynn St, Austin, TX 78703",
        30.2830,
        -97.7610,
    ),
    place(
        "Tarrytown Sushi",
        "Japanese",
        "2400 Exposition Blvd, Austin, TX 78703",
        30.2960,
        -97.7680,
    ),
    place(
        "Burnet Road Diner",
        "American",
        "5000 Burnet Rd, Austin, TX 78756",
        30.3220,
        -97.7390,
    ),
    place(
        "Allandale Thai Kitchen",
        "Thai",
        "6500 Burnet Rd, Austin, TX 78757",
        30.3380,
        -97.7390,
    ),
    place(
        "North Loop Vegan Bowls",
        "Vegan",
        "100 E North Loop Blvd, Austin, TX 78751",
        30.3185,
        -97.7210,
    ),
    place(
        "Crestview Wings",
        "American",
        "7900 Burnet Rd, Austin, TX 78757",
        30.3510,
        -97.7330,
    ),
    place(
        "Domain Steak & Greens",
        "Steakhouse",
        "11600 Century Oaks Ter, Austin, TX 78758",
        30.4020,
        -97.7250,
    ),
    place(
        "Windsor Park Kebab",
        "Middle Eastern",
        "5400 Berkman Dr, Austin, TX 78723",
        30.3150,
        -97.6990,
    ),
    place(
        "Cherrywood Bagels",
        "Breakfast",
        "2900 Manor Rd, Austin, TX 78722",
        30.2850,
        -97.7150,
    ),
    place(
        "Holly Street Ramen",
        "Japanese",
        "2100 Holly St, Austin, TX 78702",
        30.2530,
        -97.7270,
    ),
    place(
        "Bouldin Creek Cafe Bites",
        "Vegetarian",
        "1900 S 1st St, Austin, TX 78704",
        30.2470,
        -97.7550,
    ),
    place(
        "St. Elmo Brewery Kitchen",
        "American",
        "440 E St Elmo Rd, Austin, TX 78745",
        30.2170,
        -97.7580,
    ),
    place(
        "Montopolis Taqueria",
        "Mexican",
        "6500 E Riverside Dr, Austin, TX 78741",
        30.2350,
        -97.6990,
    ),
    place(
        "Riverside Dumplings",
        "Chinese",
        "1900 E Riverside Dr, Austin, TX 78741",
        30.2400,
        -97.7280,
    ),
    place(
        "Travis Heights Crepes",
        "French",
        "1000 S Congress Ave, Austin, TX 78704",
        30.2530,
        -97.7470,
    ),
    place(
        "Seaholm Seafood Shack",
        "Seafood",
        "800 W Cesar Chavez St, Austin, TX 78701",
        30.2670,
        -97.7530,
    ),
    place(
        "Brentwood Korean BBQ",
        "Korean",
        "6000 N Lamar Blvd, Austin, TX 78752",
        30.3290,
        -97.7270,
    ),
    place(
        "Pease Park Salads",
        "Healthy",
        "1100 Kingsbury St, Austin, TX 78703",
        30.2850,
        -97.7530,
    ),
    place(
        "Cesar Chavez Empanadas",
        "Argentinian",
        "300 W 2nd St, Austin, TX 78701",
        30.2645,
        -97.7460,
    ),
];

/// (name, description, price in cents, category)
type Dish = (&'static str, &'static str, i64, &'static str);

fn menu_for(cuisine: &str) -> &'static [Dish] {
    match cuisine {
        "Mexican" | "Salvadoran" | "Argentinian" => &[
            (
                "Al Pastor Taco",
                "Marinated pork, pineapple, onion, cilantro",
                399,
                "Tacos",
            ),
            (
                "Barbacoa Taco",
                "Slow-braised beef, salsa verde",
                449,
                "Tacos",
            ),
            (
                "Chicken Tinga Bowl",
                "Rice, black beans, pico, crema",
                1199,
                "Bowls",
            ),
            (
                "Pupusa Revuelta",
                "Pork, bean and cheese, with curtido",
                549,
                "Mains",
            ),
            ("Beef Empanada", "Baked, with chimichurri", 425, "Mains"),
            ("Chips & Queso", "Warm queso with fresh chips", 699, "Sides"),
            ("Elote", "Grilled corn, cotija, chile", 599, "Sides"),
            ("Horchata", "Cinnamon rice drink, 16 oz", 399, "Drinks"),
        ],
        "BBQ" | "Steakhouse" | "Korean" => &[
            (
                "Brisket Plate",
                "Half pound of brisket, two sides",
                2199,
                "Plates",
            ),
            (
                "Pulled Pork Sandwich",
                "With slaw and pickles",
                1299,
                "Sandwiches",
            ),
            ("Pork Ribs", "Half rack, dry rub", 2399, "Plates"),
            ("Ribeye 12 oz", "Grilled, herb butter", 3899, "Mains"),
            (
                "Bulgogi Platter",
                "Marinated beef, rice, banchan",
                2299,
                "Mains",
            ),
            ("Mac & Cheese", "Three-cheese, baked", 599, "Sides"),
            ("Potato Salad", "Mustard style", 499, "Sides"),
            ("Sweet Tea", "32 oz", 299, "Drinks"),
        ],
        "Pizza" | "Italian" => &[
            ("Margherita", "Tomato, mozzarella, basil", 1499, "Pizza"),
            ("Pepperoni", "Cup-and-char pepperoni", 1699, "Pizza"),
            (
                "Spaghetti Carbonara",
                "Guanciale, egg, pecorino",
                1799,
                "Pasta",
            ),
            ("Lasagna", "Beef ragu, bechamel", 1899, "Pasta"),
            ("Caesar Salad", "Romaine, parmesan, croutons", 999, "Salads"),
            ("Garlic Knots", "Six, with marinara", 699, "Sides"),
            ("Tiramisu", "Espresso, mascarpone", 799, "Desserts"),
            ("San Pellegrino", "500 ml", 349, "Drinks"),
        ],
        "Vietnamese" | "Thai" | "Chinese" => &[
            ("Pho Tai", "Rare beef, rice noodles, broth", 1399, "Soups"),
            (
                "Pad Thai",
                "Rice noodles, tamarind, peanuts",
                1399,
                "Noodles",
            ),
            (
                "Green Curry",
                "Chicken, Thai eggplant, basil",
                1499,
                "Curries",
            ),
            (
                "Kung Pao Chicken",
                "Peanuts, chiles, Sichuan pepper",
                1449,
                "Mains",
            ),
            (
                "Pork Dumplings",
                "Eight, with black vinegar",
                999,
                "Starters",
            ),
            (
                "Spring Rolls",
                "Shrimp, herbs, peanut sauce",
                799,
                "Starters",
            ),
            ("Jasmine Rice", "Steamed", 299, "Sides"),
            ("Thai Iced Tea", "Sweetened, with milk", 449, "Drinks"),
        ],
        "Japanese" | "Hawaiian" | "Seafood" => &[
            ("Tonkotsu Ramen", "Pork broth, chashu, egg", 1599, "Ramen"),
            ("Salmon Poke Bowl", "Rice, avocado, ponzu", 1599, "Bowls"),
            ("Spicy Tuna Roll", "Eight pieces", 1099, "Sushi"),
            (
                "Fish Tacos",
                "Grilled cod, cabbage, lime crema",
                1399,
                "Mains",
            ),
            ("Chicken Karaage", "Fried chicken, kewpie", 899, "Starters"),
            ("Edamame", "Sea salt", 499, "Starters"),
            ("Miso Soup", "Tofu, wakame", 399, "Sides"),
            ("Matcha Lemonade", "16 oz", 499, "Drinks"),
        ],
        "Indian" | "Mediterranean" | "Middle Eastern" => &[
            ("Chicken Tikka Masala", "With basmati rice", 1699, "Curries"),
            ("Chana Masala", "Chickpeas, tomato, spices", 1399, "Curries"),
            ("Falafel Wrap", "Tahini, pickles, tomato", 1099, "Wraps"),
            (
                "Lamb Kebab Plate",
                "Rice, salad, garlic sauce",
                1899,
                "Plates",
            ),
            ("Hummus & Pita", "Olive oil, paprika", 799, "Starters"),
            ("Garlic Naan", "From the tandoor", 399, "Sides"),
            ("Baklava", "Two pieces", 599, "Desserts"),
            ("Mango Lassi", "16 oz", 499, "Drinks"),
        ],
        _ => &[
            (
                "Classic Cheeseburger",
                "Cheddar, lettuce, tomato, pickles",
                1299,
                "Burgers",
            ),
            ("Buffalo Wings", "Ten, with blue cheese", 1399, "Mains"),
            (
                "Grain Bowl",
                "Quinoa, roasted vegetables, tahini",
                1299,
                "Bowls",
            ),
            ("Avocado Toast", "Sourdough, chili flakes", 999, "Breakfast"),
            ("Everything Bagel", "With cream cheese", 499, "Breakfast"),
            ("Sweet Potato Fries", "Chipotle mayo", 599, "Sides"),
            ("Chocolate Chip Cookie", "Baked daily", 349, "Desserts"),
            ("Cold Brew", "16 oz", 449, "Drinks"),
        ],
    }
}

/// Loads the demo city into an empty store. Returns false (and loads
/// nothing) when the store already has users.
pub async fn load(store: &dyn Store) -> anyhow::Result<bool> {
    if store.count_users().await? > 0 {
        return Ok(false);
    }
    // One hash for every demo account: hashing is deliberately slow, and
    // these accounts share a published password anyway.
    let hash = auth::hash_password(PASSWORD.to_string()).await?;

    store
        .create_user(NewUser {
            email: "admin@demo.local".into(),
            password_hash: hash.clone(),
            name: "Demo Admin".into(),
            role: Role::Admin,
            vehicle_type: None,
            restaurant_id: None,
        })
        .await?;

    for (i, place) in RESTAURANTS.iter().enumerate() {
        let number = i + 1;
        let restaurant = NewRestaurant {
            name: place.name.into(),
            address: place.address.into(),
            location: LatLon {
                lat: place.lat,
                lon: place.lon,
            },
            cuisine_type: place.cuisine.into(),
            rating: 3.8 + (number % 12) as f64 / 10.0,
            prep_time_minutes: 10 + (number % 4) as i32 * 5,
            delivery_fee_cents: [199, 299, 399, 0][number % 4],
            delivery_radius_km: 10.0,
            is_open: true,
            image_url: None,
            owner_email: format!("restaurant{number}@demo.local"),
            owner_password: PASSWORD.into(),
            owner_name: format!("{} staff", place.name),
        };
        let (created, _) = store.create_restaurant(&restaurant, &hash).await?;
        for (name, description, price_cents, category) in menu_for(place.cuisine) {
            store
                .create_menu_item(
                    created.id,
                    &NewMenuItem {
                        name: (*name).into(),
                        description: (*description).into(),
                        price_cents: *price_cents,
                        category: (*category).into(),
                        is_available: true,
                        image_url: None,
                    },
                )
                .await?;
        }
    }

    for number in 1..=CUSTOMERS {
        store
            .create_user(NewUser {
                email: format!("customer{number}@demo.local"),
                password_hash: hash.clone(),
                name: format!("Customer {number}"),
                role: Role::Customer,
                vehicle_type: None,
                restaurant_id: None,
            })
            .await?;
    }
    const VEHICLES: [VehicleType; 4] = [
        VehicleType::Car,
        VehicleType::Bike,
        VehicleType::Scooter,
        VehicleType::Car,
    ];
    for number in 1..=DRIVERS {
        let driver = store
            .create_user(NewUser {
                email: format!("driver{number}@demo.local"),
                password_hash: hash.clone(),
                name: format!("Driver {number}"),
                role: Role::Driver,
                vehicle_type: Some(VEHICLES[number % VEHICLES.len()]),
                restaurant_id: None,
            })
            .await?;
        // The demo's drivers are on duty from the start.
        store.approve_driver(driver.id, chrono::Utc::now()).await?;
    }
    Ok(true)
}

pub fn restaurant_count() -> usize {
    RESTAURANTS.len()
}
