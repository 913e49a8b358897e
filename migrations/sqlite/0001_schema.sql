-- dispatchd schema (SQLite, the embedded default; same shape as Postgres). See DESIGN.md "Persistence".

CREATE TABLE restaurants (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    name                TEXT NOT NULL,
    address             TEXT NOT NULL,
    lat                 REAL NOT NULL,
    lon                 REAL NOT NULL,
    cuisine_type        TEXT NOT NULL,
    rating              REAL NOT NULL DEFAULT 0,
    prep_time_minutes   INTEGER NOT NULL,
    delivery_fee_cents  INTEGER NOT NULL CHECK (delivery_fee_cents >= 0),
    delivery_radius_km  REAL NOT NULL,
    is_open             INTEGER NOT NULL DEFAULT 1,
    image_url           TEXT,
    created_at          TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX restaurants_lat_lon ON restaurants (lat, lon);

CREATE TABLE users (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    email           TEXT NOT NULL UNIQUE,
    password_hash   TEXT NOT NULL,
    name            TEXT NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('customer', 'driver', 'restaurant', 'admin')),
    restaurant_id   INTEGER REFERENCES restaurants (id),
    created_at      TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE menu_items (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    restaurant_id   INTEGER NOT NULL REFERENCES restaurants (id),
    name            TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    price_cents     INTEGER NOT NULL CHECK (price_cents > 0),
    category        TEXT NOT NULL,
    is_available    INTEGER NOT NULL DEFAULT 1,
    image_url       TEXT,
    created_at      TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX menu_items_restaurant ON menu_items (restaurant_id);

-- A driver is a user with role 'driver'; this row holds the vehicle.
CREATE TABLE drivers (
    id              INTEGER PRIMARY KEY REFERENCES users (id),
    vehicle_type    TEXT NOT NULL CHECK (vehicle_type IN ('car', 'bike', 'scooter', 'walk')),
    rating          REAL NOT NULL DEFAULT 5,
    photo_url       TEXT,
    created_at      TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE orders (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id             INTEGER NOT NULL REFERENCES users (id),
    restaurant_id           INTEGER NOT NULL REFERENCES restaurants (id),
    driver_id               INTEGER REFERENCES drivers (id),
    status                  TEXT NOT NULL,
    -- Increases by one with every durable change; writers check it.
    version                 INTEGER NOT NULL,
    subtotal_cents          INTEGER NOT NULL,
    delivery_fee_cents      INTEGER NOT NULL,
    service_fee_cents       INTEGER NOT NULL,
    total_cents             INTEGER NOT NULL,
    delivery_street         TEXT NOT NULL,
    delivery_city           TEXT NOT NULL,
    delivery_state          TEXT NOT NULL,
    delivery_zip            TEXT NOT NULL,
    delivery_lat            REAL NOT NULL,
    delivery_lon            REAL NOT NULL,
    delivery_instructions   TEXT,
    estimated_delivery_at   TEXT,
    placed_at               TEXT NOT NULL,
    confirmed_at            TEXT,
    preparing_at            TEXT,
    ready_at                TEXT,
    picked_up_at            TEXT,
    delivered_at            TEXT,
    cancelled_at            TEXT,
    cancel_reason           TEXT
);
CREATE INDEX orders_customer ON orders (customer_id, id DESC);
CREATE INDEX orders_restaurant ON orders (restaurant_id, id DESC);
CREATE INDEX orders_driver ON orders (driver_id, id DESC);
-- Recovery reads only the live orders.
CREATE INDEX orders_active ON orders (id) WHERE status NOT IN ('DELIVERED', 'CANCELLED');

CREATE TABLE order_items (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id                INTEGER NOT NULL REFERENCES orders (id),
    menu_item_id            INTEGER NOT NULL REFERENCES menu_items (id),
    name                    TEXT NOT NULL,
    quantity                INTEGER NOT NULL,
    unit_price_cents        INTEGER NOT NULL,
    special_instructions    TEXT
);
CREATE INDEX order_items_order ON order_items (order_id);

-- Append-only history; seq is the order's version after the event.
CREATE TABLE order_events (
    order_id    INTEGER NOT NULL REFERENCES orders (id),
    seq         INTEGER NOT NULL,
    type        TEXT NOT NULL,
    from_status TEXT,
    to_status   TEXT,
    actor_id    INTEGER,
    actor_role  TEXT,
    at          TEXT NOT NULL,
    data        TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (order_id, seq)
);

CREATE TABLE idempotency_keys (
    user_id         INTEGER NOT NULL REFERENCES users (id),
    key             TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    order_id        INTEGER REFERENCES orders (id),
    -- The first response's body, replayed verbatim.
    response_body   TEXT,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- Breadcrumbs of drivers carrying an order, written in batches.
CREATE TABLE driver_locations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    driver_id   INTEGER NOT NULL REFERENCES drivers (id),
    order_id    INTEGER REFERENCES orders (id),
    lat         REAL NOT NULL,
    lon         REAL NOT NULL,
    heading     REAL,
    speed_mps   REAL,
    recorded_at TEXT NOT NULL
);
CREATE INDEX driver_locations_order ON driver_locations (order_id, recorded_at);
CREATE INDEX driver_locations_driver ON driver_locations (driver_id, recorded_at);
