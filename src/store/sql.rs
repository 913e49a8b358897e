// The `Store` implementation shared by both backends. It is compiled twice,
// by `include!` from postgres.rs and sqlite.rs, each of which first defines
// `Db` (the sqlx database type). The SQL below is the common dialect of both:
// `$n` placeholders, RETURNING, ON CONFLICT; types that both map the same
// way (i64, f64, bool, text, timestamps, JSON).
//
// Kept as one source rather than generic code: sqlx's generic bounds across
// databases would bury every query under trait clauses.

use actors::domain::input::{MenuItemPatch, NewMenuItem, NewRestaurant, RestaurantPatch};
use actors::domain::model::*;
use actors::store::*;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{Pool, Row};

use super::map_error;

type DbRow = <Db as sqlx::Database>::Row;

/// The store on one sqlx pool.
#[derive(Clone)]
pub struct SqlStore {
    pub pool: Pool<Db>,
    /// Bumped after every commit that wrote to the event outbox, so its
    /// publishers wake at once instead of polling (`crate::events`).
    pub outbox_signal: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// Cluster mode (Postgres only): fences every order write.
    fencing: Option<std::sync::Arc<dyn super::OrderFencing>>,
}

impl SqlStore {
    pub fn new(pool: Pool<Db>) -> SqlStore {
        SqlStore {
            pool,
            outbox_signal: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
            fencing: None,
        }
    }

    pub fn with_fencing(self, fencing: Option<std::sync::Arc<dyn super::OrderFencing>>) -> SqlStore {
        SqlStore { fencing, ..self }
    }

    /// In cluster mode, checks inside `tx` that this node holds the region
    /// of `restaurant_id`'s orders (`check_fence`, per backend); nothing
    /// to do on a single node.
    async fn fence(
        &self,
        tx: &mut sqlx::Transaction<'_, Db>,
        restaurant_id: RestaurantId,
    ) -> StoreResult<()> {
        let Some(fencing) = &self.fencing else {
            return Ok(());
        };
        // Read in the write's transaction: the region is where the
        // restaurant is now.
        let row = sqlx::query("SELECT lat, lon FROM restaurants WHERE id = $1")
            .bind(restaurant_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(map_error)?
            .ok_or(StoreError::UnknownReference)?;
        let at = LatLon {
            lat: row.try_get("lat").map_err(map_error)?,
            lon: row.try_get("lon").map_err(map_error)?,
        };
        check_fence(tx, &fencing.fence_for(at)?).await
    }

    fn outbox_written(&self) {
        self.outbox_signal.send_modify(|n| *n = n.wrapping_add(1));
    }
}

macro_rules! restaurant_columns {
    () => {
        "id, name, address, lat, lon, cuisine_type, rating, prep_time_minutes, \
     delivery_fee_cents, delivery_radius_km, is_open, image_url"
    };
}

macro_rules! menu_columns {
    () => {
        "id, restaurant_id, name, description, price_cents, category, is_available, image_url"
    };
}

macro_rules! order_columns {
    () => {
        "id, customer_id, restaurant_id, driver_id, status, version, subtotal_cents, \
     delivery_fee_cents, service_fee_cents, total_cents, delivery_street, delivery_city, delivery_state, \
     delivery_zip, delivery_lat, delivery_lon, delivery_instructions, estimated_delivery_at, placed_at, \
     confirmed_at, preparing_at, ready_at, picked_up_at, delivered_at, cancelled_at, cancel_reason"
    };
}

macro_rules! account_columns {
    () => {
        "id, email, name, role, password_hash, restaurant_id"
    };
}

fn driver_from(row: &DbRow) -> StoreResult<Driver> {
    let vehicle: String = row.try_get("vehicle_type").map_err(map_error)?;
    Ok(Driver {
        id: row.try_get("id").map_err(map_error)?,
        name: row.try_get("name").map_err(map_error)?,
        vehicle_type: vehicle.parse().map_err(|()| corrupt("vehicle type", &vehicle))?,
        rating: row.try_get("rating").map_err(map_error)?,
        photo_url: row.try_get("photo_url").map_err(map_error)?,
    })
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Internal(format!("unexpected {what} in store: {value:?}"))
}

fn restaurant_from(row: &DbRow) -> Result<Restaurant, sqlx::Error> {
    Ok(Restaurant {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        address: row.try_get("address")?,
        location: LatLon {
            lat: row.try_get("lat")?,
            lon: row.try_get("lon")?,
        },
        cuisine_type: row.try_get("cuisine_type")?,
        rating: row.try_get("rating")?,
        prep_time_minutes: row.try_get("prep_time_minutes")?,
        delivery_fee_cents: row.try_get("delivery_fee_cents")?,
        delivery_radius_km: row.try_get("delivery_radius_km")?,
        is_open: row.try_get("is_open")?,
        image_url: row.try_get("image_url")?,
        distance_km: None,
    })
}

fn menu_item_from(row: &DbRow) -> Result<MenuItem, sqlx::Error> {
    Ok(MenuItem {
        id: row.try_get("id")?,
        restaurant_id: row.try_get("restaurant_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        price_cents: row.try_get("price_cents")?,
        category: row.try_get("category")?,
        is_available: row.try_get("is_available")?,
        image_url: row.try_get("image_url")?,
    })
}

fn order_from(row: &DbRow) -> StoreResult<Order> {
    let status: String = row.try_get("status").map_err(map_error)?;
    let status = status.parse().map_err(|()| corrupt("order status", &status))?;
    let order = (|| -> Result<Order, sqlx::Error> {
        Ok(Order {
            id: row.try_get("id")?,
            customer_id: row.try_get("customer_id")?,
            restaurant_id: row.try_get("restaurant_id")?,
            driver_id: row.try_get("driver_id")?,
            status,
            version: row.try_get("version")?,
            subtotal_cents: row.try_get("subtotal_cents")?,
            delivery_fee_cents: row.try_get("delivery_fee_cents")?,
            service_fee_cents: row.try_get("service_fee_cents")?,
            total_cents: row.try_get("total_cents")?,
            delivery_address: DeliveryAddress {
                street: row.try_get("delivery_street")?,
                city: row.try_get("delivery_city")?,
                state: row.try_get("delivery_state")?,
                zip: row.try_get("delivery_zip")?,
                lat: row.try_get("delivery_lat")?,
                lon: row.try_get("delivery_lon")?,
                instructions: row.try_get("delivery_instructions")?,
            },
            estimated_delivery_at: row.try_get("estimated_delivery_at")?,
            placed_at: row.try_get("placed_at")?,
            confirmed_at: row.try_get("confirmed_at")?,
            preparing_at: row.try_get("preparing_at")?,
            ready_at: row.try_get("ready_at")?,
            picked_up_at: row.try_get("picked_up_at")?,
            delivered_at: row.try_get("delivered_at")?,
            cancelled_at: row.try_get("cancelled_at")?,
            cancel_reason: row.try_get("cancel_reason")?,
        })
    })();
    order.map_err(map_error)
}

fn account_from(row: &DbRow) -> StoreResult<Account> {
    let role: String = row.try_get("role").map_err(map_error)?;
    Ok(Account {
        user: User {
            id: row.try_get("id").map_err(map_error)?,
            email: row.try_get("email").map_err(map_error)?,
            name: row.try_get("name").map_err(map_error)?,
            role: role.parse().map_err(|()| corrupt("role", &role))?,
        },
        password_hash: row.try_get("password_hash").map_err(map_error)?,
        restaurant_id: row.try_get("restaurant_id").map_err(map_error)?,
    })
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

/// Inserts a user (and a driver's vehicle row) inside `tx`.
async fn insert_user(
    tx: &mut sqlx::Transaction<'_, Db>,
    user: &NewUser,
) -> StoreResult<User> {
    let inserted = sqlx::query(
        "INSERT INTO users (email, password_hash, name, role, restaurant_id) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(&user.email)
    .bind(&user.password_hash)
    .bind(&user.name)
    .bind(user.role.as_str())
    .bind(user.restaurant_id)
    .fetch_one(&mut **tx)
    .await;
    let id: i64 = match inserted {
        Ok(row) => row.try_get("id").map_err(map_error)?,
        Err(e) if is_unique_violation(&e) => return Err(StoreError::EmailTaken),
        Err(e) => return Err(map_error(e)),
    };
    if let Some(vehicle) = user.vehicle_type {
        sqlx::query("INSERT INTO drivers (id, vehicle_type) VALUES ($1, $2)")
            .bind(id)
            .bind(vehicle.as_str())
            .execute(&mut **tx)
            .await
            .map_err(map_error)?;
    }
    Ok(User {
        id,
        email: user.email.clone(),
        name: user.name.clone(),
        role: user.role,
    })
}

/// Appends an order event to its history and to the event outbox, inside
/// the transaction that commits it: an event goes out if and only if its
/// change committed.
async fn insert_event(
    tx: &mut sqlx::Transaction<'_, Db>,
    order: &Order,
    seq: i64,
    event: &NewOrderEvent,
) -> StoreResult<()> {
    let order_id = order.id;
    sqlx::query(
        "INSERT INTO order_events (order_id, seq, type, from_status, to_status, actor_id, actor_role, at, data) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(order_id)
    .bind(seq)
    .bind(event.kind.as_str())
    .bind(event.from_status.map(OrderStatus::as_str))
    .bind(event.to_status.map(OrderStatus::as_str))
    .bind(event.actor_id)
    .bind(event.actor_role.map(Role::as_str))
    .bind(event.at)
    .bind(Json(&event.data))
    .execute(&mut **tx)
    .await
    .map_err(map_error)?;
    let out = actors::domain::events::outbound(
        order,
        seq,
        &actors::domain::events::EventFacts {
            kind: event.kind,
            from_status: event.from_status,
            to_status: event.to_status,
            actor_id: event.actor_id,
            actor_role: event.actor_role,
            at: event.at,
            data: &event.data,
        },
    );
    sqlx::query(
        "INSERT INTO event_outbox (event_id, order_id, restaurant_id, type, payload, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&out.id)
    .bind(out.order_id)
    .bind(out.restaurant_id)
    .bind(out.event_type)
    .bind(&out.payload)
    .bind(Utc::now())
    .execute(&mut **tx)
    .await
    .map_err(map_error)?;
    Ok(())
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> StoreResult<()> {
        // Touch a real table: on SQLite a bare SELECT 1 never reads the file.
        sqlx::query("SELECT COUNT(*) FROM restaurants WHERE id = 0")
            .fetch_one(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(())
    }

    async fn count_users(&self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await
            .map_err(map_error)?;
        row.try_get("n").map_err(map_error)
    }

    async fn create_user(&self, user: NewUser) -> StoreResult<User> {
        let mut tx = self.pool.begin().await.map_err(map_error)?;
        let created = insert_user(&mut tx, &user).await?;
        tx.commit().await.map_err(map_error)?;
        Ok(created)
    }

    async fn account_by_email(&self, email: &str) -> StoreResult<Option<Account>> {
        let sql = concat!("SELECT ", account_columns!(), " FROM users WHERE email = $1");
        let row = sqlx::query(sql)
            .bind(email)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        row.as_ref().map(account_from).transpose()
    }

    async fn account_by_id(&self, id: UserId) -> StoreResult<Option<Account>> {
        let sql = concat!("SELECT ", account_columns!(), " FROM users WHERE id = $1");
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        row.as_ref().map(account_from).transpose()
    }

    async fn driver(&self, id: DriverId) -> StoreResult<Option<Driver>> {
        let row = sqlx::query(
            "SELECT d.id, u.name, d.vehicle_type, d.rating, d.photo_url \
             FROM drivers d JOIN users u ON u.id = d.id WHERE d.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        row.as_ref().map(driver_from).transpose()
    }

    async fn driver_approved(&self, id: DriverId) -> StoreResult<Option<bool>> {
        let row = sqlx::query("SELECT approved_at IS NOT NULL AS approved FROM drivers WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        row.map(|row| row.try_get("approved")).transpose().map_err(map_error)
    }

    async fn approve_driver(&self, id: DriverId, at: DateTime<Utc>) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE drivers SET approved_at = COALESCE(approved_at, $2) WHERE id = $1",
        )
        .bind(id)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(map_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn pending_drivers(&self, limit: i64) -> StoreResult<Vec<Driver>> {
        let rows = sqlx::query(
            "SELECT d.id, u.name, d.vehicle_type, d.rating, d.photo_url \
             FROM drivers d JOIN users u ON u.id = d.id WHERE d.approved_at IS NULL \
             ORDER BY d.id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?;
        rows.iter().map(driver_from).collect()
    }

    async fn list_restaurants(&self, filter: &RestaurantFilter) -> StoreResult<Vec<Restaurant>> {
        let (min_lat, max_lat, min_lon, max_lon) = filter.bounds.unwrap_or((-90.0, 90.0, -180.0, 180.0));
        let sql = concat!("SELECT ", restaurant_columns!(), " FROM restaurants \
             WHERE lat BETWEEN $1 AND $2 AND lon BETWEEN $3 AND $4 \
               AND ($5 IS NULL OR LOWER(cuisine_type) = LOWER($5)) \
               AND (is_open OR NOT $6) \
             ORDER BY id");
        let rows = sqlx::query(sql)
            .bind(min_lat)
            .bind(max_lat)
            .bind(min_lon)
            .bind(max_lon)
            .bind(filter.cuisine.as_deref())
            .bind(filter.open_only)
            .fetch_all(&self.pool)
            .await
            .map_err(map_error)?;
        rows.iter().map(|r| restaurant_from(r).map_err(map_error)).collect()
    }

    async fn restaurant(&self, id: RestaurantId) -> StoreResult<Option<Restaurant>> {
        let sql = concat!("SELECT ", restaurant_columns!(), " FROM restaurants WHERE id = $1");
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        row.as_ref().map(restaurant_from).transpose().map_err(map_error)
    }

    async fn create_restaurant(
        &self,
        r: &NewRestaurant,
        owner_password_hash: &str,
    ) -> StoreResult<(Restaurant, User)> {
        let mut tx = self.pool.begin().await.map_err(map_error)?;
        let sql = concat!("INSERT INTO restaurants (name, address, lat, lon, cuisine_type, rating, prep_time_minutes, \
               delivery_fee_cents, delivery_radius_km, is_open, image_url) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING ", restaurant_columns!());
        let row = sqlx::query(sql)
            .bind(&r.name)
            .bind(&r.address)
            .bind(r.location.lat)
            .bind(r.location.lon)
            .bind(&r.cuisine_type)
            .bind(r.rating)
            .bind(r.prep_time_minutes)
            .bind(r.delivery_fee_cents)
            .bind(r.delivery_radius_km)
            .bind(r.is_open)
            .bind(r.image_url.as_deref())
            .fetch_one(&mut *tx)
            .await
            .map_err(map_error)?;
        let restaurant = restaurant_from(&row).map_err(map_error)?;
        let owner = insert_user(
            &mut tx,
            &NewUser {
                email: r.owner_email.clone(),
                password_hash: owner_password_hash.to_string(),
                name: r.owner_name.clone(),
                role: Role::Restaurant,
                vehicle_type: None,
                restaurant_id: Some(restaurant.id),
            },
        )
        .await?;
        tx.commit().await.map_err(map_error)?;
        Ok((restaurant, owner))
    }

    async fn update_restaurant(
        &self,
        id: RestaurantId,
        patch: RestaurantPatch,
    ) -> StoreResult<Option<Restaurant>> {
        let sql = concat!("UPDATE restaurants SET is_open = COALESCE($2, is_open), \
               prep_time_minutes = COALESCE($3, prep_time_minutes) \
             WHERE id = $1 RETURNING ", restaurant_columns!());
        let row = sqlx::query(sql)
            .bind(id)
            .bind(patch.is_open)
            .bind(patch.prep_time_minutes)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        row.as_ref().map(restaurant_from).transpose().map_err(map_error)
    }

    async fn menu(&self, restaurant_id: RestaurantId) -> StoreResult<Vec<MenuItem>> {
        let sql = concat!("SELECT ", menu_columns!(), " FROM menu_items WHERE restaurant_id = $1 ORDER BY category, id");
        let rows = sqlx::query(sql)
            .bind(restaurant_id)
            .fetch_all(&self.pool)
            .await
            .map_err(map_error)?;
        rows.iter().map(|r| menu_item_from(r).map_err(map_error)).collect()
    }

    async fn menu_item(&self, id: MenuItemId) -> StoreResult<Option<MenuItem>> {
        let sql = concat!("SELECT ", menu_columns!(), " FROM menu_items WHERE id = $1");
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        row.as_ref().map(menu_item_from).transpose().map_err(map_error)
    }

    async fn create_menu_item(
        &self,
        restaurant_id: RestaurantId,
        item: &NewMenuItem,
    ) -> StoreResult<MenuItem> {
        let sql = concat!("INSERT INTO menu_items (restaurant_id, name, description, price_cents, category, is_available, image_url) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ", menu_columns!());
        let row = sqlx::query(sql)
            .bind(restaurant_id)
            .bind(&item.name)
            .bind(&item.description)
            .bind(item.price_cents)
            .bind(&item.category)
            .bind(item.is_available)
            .bind(item.image_url.as_deref())
            .fetch_one(&self.pool)
            .await
            .map_err(map_error)?;
        menu_item_from(&row).map_err(map_error)
    }

    async fn update_menu_item(
        &self,
        id: MenuItemId,
        patch: MenuItemPatch,
    ) -> StoreResult<Option<MenuItem>> {
        let sql = concat!("UPDATE menu_items SET is_available = COALESCE($2, is_available), \
               price_cents = COALESCE($3, price_cents) \
             WHERE id = $1 RETURNING ", menu_columns!());
        let row = sqlx::query(sql)
            .bind(id)
            .bind(patch.is_available)
            .bind(patch.price_cents)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        row.as_ref().map(menu_item_from).transpose().map_err(map_error)
    }

    async fn place_order(
        &self,
        draft: OrderDraft,
        idempotency: Option<IdempotencyKey>,
    ) -> StoreResult<PlaceOutcome> {
        let mut tx = self.pool.begin().await.map_err(map_error)?;

        // Claim the idempotency key first. A concurrent duplicate blocks on
        // the primary key until this transaction ends, then finds the row.
        if let Some(idem) = &idempotency {
            let claimed = sqlx::query(
                "INSERT INTO idempotency_keys (user_id, key, request_hash, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, key) DO NOTHING",
            )
            .bind(draft.customer_id)
            .bind(&idem.key)
            .bind(&idem.request_hash)
            .bind(draft.placed_at)
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
            if claimed.rows_affected() == 0 {
                tx.rollback().await.map_err(map_error)?;
                let seen = self.idempotent_response(draft.customer_id, &idem.key).await?;
                return Ok(seen.map_or(PlaceOutcome::InProgress, |record| {
                    record.outcome_for(&idem.request_hash)
                }));
            }
        }

        // After the key: a replay needs no fence, any node answers it.
        self.fence(&mut tx, draft.order.restaurant_id).await?;
        let a = &draft.order.delivery_address;
        let sql = concat!("INSERT INTO orders (customer_id, restaurant_id, status, version, subtotal_cents, delivery_fee_cents, \
               service_fee_cents, total_cents, delivery_street, delivery_city, delivery_state, delivery_zip, \
               delivery_lat, delivery_lon, delivery_instructions, estimated_delivery_at, placed_at) \
             VALUES ($1, $2, $3, 1, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             RETURNING ", order_columns!());
        let row = sqlx::query(sql)
            .bind(draft.customer_id)
            .bind(draft.order.restaurant_id)
            .bind(OrderStatus::Placed.as_str())
            .bind(draft.subtotal_cents)
            .bind(draft.delivery_fee_cents)
            .bind(draft.service_fee_cents)
            .bind(draft.total_cents)
            .bind(&a.street)
            .bind(&a.city)
            .bind(&a.state)
            .bind(&a.zip)
            .bind(a.lat)
            .bind(a.lon)
            .bind(a.instructions.as_deref())
            .bind(draft.estimated_delivery_at)
            .bind(draft.placed_at)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_error)?;
        let order = order_from(&row)?;

        let mut items = Vec::with_capacity(draft.lines.len());
        for line in &draft.lines {
            let row = sqlx::query(
                "INSERT INTO order_items (order_id, menu_item_id, name, quantity, unit_price_cents, special_instructions) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(order.id)
            .bind(line.menu_item_id)
            .bind(&line.name)
            .bind(line.quantity)
            .bind(line.unit_price_cents)
            .bind(line.special_instructions.as_deref())
            .fetch_one(&mut *tx)
            .await
            .map_err(map_error)?;
            items.push(OrderItem {
                id: row.try_get("id").map_err(map_error)?,
                order_id: order.id,
                menu_item_id: line.menu_item_id,
                name: line.name.clone(),
                quantity: line.quantity,
                unit_price_cents: line.unit_price_cents,
                special_instructions: line.special_instructions.clone(),
            });
        }

        let event = NewOrderEvent::placed(&order);
        insert_event(&mut tx, &order, 1, &event).await?;

        let placed = PlacedOrder {
            estimated_delivery_at: order.estimated_delivery_at,
            order,
            items,
        };
        if let Some(idem) = &idempotency {
            let body = serde_json::to_string(&placed).map_err(|e| StoreError::Internal(e.to_string()))?;
            sqlx::query(
                "UPDATE idempotency_keys SET order_id = $3, response_body = $4 WHERE user_id = $1 AND key = $2",
            )
            .bind(draft.customer_id)
            .bind(&idem.key)
            .bind(placed.order.id)
            .bind(body)
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
        }
        tx.commit().await.map_err(map_error)?;
        self.outbox_written();
        Ok(PlaceOutcome::Created(Box::new(placed)))
    }

    async fn idempotent_response(
        &self,
        user_id: UserId,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        let row = sqlx::query(
            "SELECT response_body, request_hash FROM idempotency_keys WHERE user_id = $1 AND key = $2",
        )
        .bind(user_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_error)?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(IdempotencyRecord {
            request_hash: row.try_get("request_hash").map_err(map_error)?,
            // An empty body is a claim whose request has not finished.
            response_body: row
                .try_get::<Option<String>, _>("response_body")
                .map_err(map_error)?
                .filter(|body| !body.is_empty()),
        }))
    }

    async fn order(&self, id: OrderId) -> StoreResult<Option<Order>> {
        let sql = concat!("SELECT ", order_columns!(), " FROM orders WHERE id = $1");
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        row.as_ref().map(order_from).transpose()
    }

    async fn order_items(&self, id: OrderId) -> StoreResult<Vec<OrderItem>> {
        let rows = sqlx::query(
            "SELECT id, order_id, menu_item_id, name, quantity, unit_price_cents, special_instructions \
             FROM order_items WHERE order_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?;
        rows.iter()
            .map(|row| {
                Ok(OrderItem {
                    id: row.try_get("id")?,
                    order_id: row.try_get("order_id")?,
                    menu_item_id: row.try_get("menu_item_id")?,
                    name: row.try_get("name")?,
                    quantity: row.try_get("quantity")?,
                    unit_price_cents: row.try_get("unit_price_cents")?,
                    special_instructions: row.try_get("special_instructions")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(map_error)
    }

    async fn order_events(&self, id: OrderId) -> StoreResult<Vec<OrderEvent>> {
        let rows = sqlx::query(
            "SELECT seq, type, from_status, to_status, actor_id, actor_role, at, data \
             FROM order_events WHERE order_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let kind: String = row.try_get("type").map_err(map_error)?;
            let from: Option<String> = row.try_get("from_status").map_err(map_error)?;
            let to: Option<String> = row.try_get("to_status").map_err(map_error)?;
            let role: Option<String> = row.try_get("actor_role").map_err(map_error)?;
            let status = |s: Option<String>| -> StoreResult<Option<OrderStatus>> {
                s.map(|s| s.parse().map_err(|()| corrupt("status", &s))).transpose()
            };
            let Json(data): Json<serde_json::Value> = row.try_get("data").map_err(map_error)?;
            events.push(OrderEvent {
                seq: row.try_get("seq").map_err(map_error)?,
                kind: kind.parse().map_err(|()| corrupt("event type", &kind))?,
                from_status: status(from)?,
                to_status: status(to)?,
                actor_id: row.try_get("actor_id").map_err(map_error)?,
                actor_role: role
                    .map(|r| r.parse().map_err(|()| corrupt("role", &r)))
                    .transpose()?,
                at: row.try_get("at").map_err(map_error)?,
                data,
            });
        }
        Ok(events)
    }

    async fn list_orders(&self, query: OrderQuery) -> StoreResult<Vec<Order>> {
        macro_rules! listing {
            ($scope:literal) => {
                concat!(
                    "SELECT ", order_columns!(), " FROM orders WHERE ", $scope,
                    " AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
                )
            };
        }
        let (sql, scope_id) = match query.scope {
            OrderScope::Customer(id) => (listing!("customer_id = $1"), id),
            OrderScope::Restaurant(id) => (listing!("restaurant_id = $1"), id),
            OrderScope::Driver(id) => (listing!("driver_id = $1"), id),
            OrderScope::All => (listing!("$1 = $1"), 0),
        };
        let rows = sqlx::query(sql)
            .bind(scope_id)
            .bind(query.status.map(OrderStatus::as_str))
            .bind(query.before)
            .bind(query.limit)
            .fetch_all(&self.pool)
            .await
            .map_err(map_error)?;
        rows.iter().map(order_from).collect()
    }

    async fn active_orders(&self) -> StoreResult<Vec<Order>> {
        let sql = concat!("SELECT ", order_columns!(), " FROM orders WHERE status NOT IN ('DELIVERED', 'CANCELLED') ORDER BY id");
        let rows = sqlx::query(sql)
            .fetch_all(&self.pool)
            .await
            .map_err(map_error)?;
        rows.iter().map(order_from).collect()
    }

    async fn active_orders_within(&self, areas: &[GeoBox]) -> StoreResult<Vec<Order>> {
        // A few regions per claim; chunked all the same, well inside
        // SQLite's placeholder limit.
        let mut orders = std::collections::BTreeMap::new();
        for chunk in areas.chunks(100) {
            let mut builder = sqlx::QueryBuilder::<Db>::new(concat!(
                "SELECT ", order_columns!(), " FROM orders WHERE status NOT IN ('DELIVERED', 'CANCELLED') ",
                "AND restaurant_id IN (SELECT id FROM restaurants WHERE "
            ));
            for (i, area) in chunk.iter().enumerate() {
                if i > 0 {
                    builder.push(" OR ");
                }
                builder
                    .push("(lat BETWEEN ")
                    .push_bind(area.min_lat)
                    .push(" AND ")
                    .push_bind(area.max_lat)
                    .push(" AND lon BETWEEN ")
                    .push_bind(area.min_lon)
                    .push(" AND ")
                    .push_bind(area.max_lon)
                    .push(")");
            }
            builder.push(") ORDER BY id");
            let query = builder.build();
            let rows = query.fetch_all(&self.pool).await.map_err(map_error)?;
            for row in &rows {
                let order = order_from(row)?;
                orders.insert(order.id, order);
            }
        }
        Ok(orders.into_values().collect())
    }

    async fn apply_change(&self, change: &OrderChange) -> StoreResult<()> {
        let o = &change.order;
        let mut tx = self.pool.begin().await.map_err(map_error)?;
        self.fence(&mut tx, o.restaurant_id).await?;
        let updated = sqlx::query(
            "UPDATE orders SET status = $3, version = $4, driver_id = $5, estimated_delivery_at = $6, \
               confirmed_at = $7, preparing_at = $8, ready_at = $9, picked_up_at = $10, delivered_at = $11, \
               cancelled_at = $12, cancel_reason = $13 \
             WHERE id = $1 AND version = $2",
        )
        .bind(o.id)
        .bind(change.from_version)
        .bind(o.status.as_str())
        .bind(o.version)
        .bind(o.driver_id)
        .bind(o.estimated_delivery_at)
        .bind(o.confirmed_at)
        .bind(o.preparing_at)
        .bind(o.ready_at)
        .bind(o.picked_up_at)
        .bind(o.delivered_at)
        .bind(o.cancelled_at)
        .bind(o.cancel_reason.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(map_error)?;
        if updated.rows_affected() != 1 {
            tx.rollback().await.map_err(map_error)?;
            return Err(StoreError::Conflict);
        }
        insert_event(&mut tx, o, o.version, &change.event).await?;
        tx.commit().await.map_err(map_error)?;
        self.outbox_written();
        Ok(())
    }

    async fn set_estimated_delivery(
        &self,
        order_id: OrderId,
        version: i64,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE orders SET estimated_delivery_at = $3 WHERE id = $1 AND version = $2",
        )
        .bind(order_id)
        .bind(version)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(map_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_driver_paused(
        &self,
        driver_id: DriverId,
        paused: bool,
        changed_us: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE drivers SET paused = $2, paused_changed_us = $3 \
             WHERE id = $1 AND paused_changed_us < $3",
        )
        .bind(driver_id)
        .bind(paused)
        .bind(changed_us)
        .execute(&self.pool)
        .await
        .map_err(map_error)?;
        Ok(())
    }

    async fn driver_paused(&self, driver_id: DriverId) -> StoreResult<bool> {
        let paused: Option<bool> = sqlx::query_scalar("SELECT paused FROM drivers WHERE id = $1")
            .bind(driver_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(paused.unwrap_or(false))
    }

    async fn exclude_driver(
        &self,
        order_id: OrderId,
        driver_id: DriverId,
        reason: ExclusionReason,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO offer_exclusions (order_id, driver_id, reason, excluded_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (order_id, driver_id) DO NOTHING",
        )
        .bind(order_id)
        .bind(driver_id)
        .bind(reason.as_str())
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(map_error)?;
        Ok(())
    }

    async fn excluded_drivers(&self, order_id: OrderId) -> StoreResult<Vec<DriverId>> {
        sqlx::query_scalar("SELECT driver_id FROM offer_exclusions WHERE order_id = $1")
            .bind(order_id)
            .fetch_all(&self.pool)
            .await
            .map_err(map_error)
    }

    async fn insert_breadcrumbs(&self, crumbs: &[Breadcrumb]) -> StoreResult<u64> {
        // One statement per batch: the breadcrumb writer sends a few
        // hundred at a time, well inside both backends' parameter limits.
        let mut builder = sqlx::QueryBuilder::<Db>::new(
            "INSERT INTO driver_locations (driver_id, order_id, lat, lon, heading, speed_mps, recorded_at) ",
        );
        builder.push_values(crumbs, |mut row, c| {
            row.push_bind(c.driver_id)
                .push_bind(c.order_id)
                .push_bind(c.lat)
                .push_bind(c.lon)
                .push_bind(c.heading)
                .push_bind(c.speed_mps)
                .push_bind(c.recorded_at);
        });
        let done = builder.build().execute(&self.pool).await.map_err(map_error)?;
        Ok(done.rows_affected())
    }

    async fn stale_placed_orders(
        &self,
        cutoff: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<(OrderId, i64)>> {
        let rows = sqlx::query(
            "SELECT id, version FROM orders WHERE status = 'PLACED' AND placed_at < $1 ORDER BY id LIMIT $2",
        )
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(map_error)?;
        rows.iter()
            .map(|row| Ok((row.try_get("id")?, row.try_get("version")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(map_error)
    }

    async fn purge_idempotency_keys(&self, cutoff: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(done.rows_affected())
    }
}
