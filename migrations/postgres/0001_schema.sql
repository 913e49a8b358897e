-- dispatchd schema (Postgres). See DESIGN.md "Persistence".

CREATE TABLE restaurants (
    id                  BIGSERIAL PRIMARY KEY,
    name                TEXT NOT NULL,
    address             TEXT NOT NULL,
    lat                 DOUBLE PRECISION NOT NULL,
    lon                 DOUBLE PRECISION NOT NULL,
    cuisine_type        TEXT NOT NULL,
    rating              DOUBLE PRECISION NOT NULL DEFAULT 0,
    prep_time_minutes   INTEGER NOT NULL,
    delivery_fee_cents  BIGINT NOT NULL CHECK (delivery_fee_cents >= 0),
    delivery_radius_km  DOUBLE PRECISION NOT NULL,
    is_open             BOOLEAN NOT NULL DEFAULT TRUE,
    image_url           TEXT,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX restaurants_lat_lon ON restaurants (lat, lon);

CREATE TABLE users (
    id              BIGSERIAL PRIMARY KEY,
    email           TEXT NOT NULL UNIQUE,
    password_hash   TEXT NOT NULL,
    name            TEXT NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('customer', 'driver', 'restaurant', 'admin')),
    restaurant_id   BIGINT REFERENCES restaurants (id),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE menu_items (
    id              BIGSERIAL PRIMARY KEY,
    restaurant_id   BIGINT NOT NULL REFERENCES restaurants (id),
    name            TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    price_cents     BIGINT NOT NULL CHECK (price_cents > 0),
    category        TEXT NOT NULL,
    is_available    BOOLEAN NOT NULL DEFAULT TRUE,
    image_url       TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX menu_items_restaurant ON menu_items (restaurant_id);

-- A driver is a user with role 'driver'; this row holds the vehicle.
CREATE TABLE drivers (
    id              BIGINT PRIMARY KEY REFERENCES users (id),
    vehicle_type    TEXT NOT NULL CHECK (vehicle_type IN ('car', 'bike', 'scooter', 'walk')),
    rating          DOUBLE PRECISION NOT NULL DEFAULT 5,
    photo_url       TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id                      BIGSERIAL PRIMARY KEY,
    customer_id             BIGINT NOT NULL REFERENCES users (id),
    restaurant_id           BIGINT NOT NULL REFERENCES restaurants (id),
    driver_id               BIGINT REFERENCES drivers (id),
    status                  TEXT NOT NULL,
    -- Increases by one with every durable change; writers check it.
    version                 BIGINT NOT NULL,
    subtotal_cents          BIGINT NOT NULL,
    delivery_fee_cents      BIGINT NOT NULL,
    service_fee_cents       BIGINT NOT NULL,
    total_cents             BIGINT NOT NULL,
    delivery_street         TEXT NOT NULL,
    delivery_city           TEXT NOT NULL,
    delivery_state          TEXT NOT NULL,
    delivery_zip            TEXT NOT NULL,
    delivery_lat            DOUBLE PRECISION NOT NULL,
    delivery_lon            DOUBLE PRECISION NOT NULL,
    delivery_instructions   TEXT,
    estimated_delivery_at   TIMESTAMPTZ,
    placed_at               TIMESTAMPTZ NOT NULL,
    confirmed_at            TIMESTAMPTZ,
    preparing_at            TIMESTAMPTZ,
    ready_at                TIMESTAMPTZ,
    picked_up_at            TIMESTAMPTZ,
    delivered_at            TIMESTAMPTZ,
    cancelled_at            TIMESTAMPTZ,
    cancel_reason           TEXT
);
CREATE INDEX orders_customer ON orders (customer_id, id DESC);
CREATE INDEX orders_restaurant ON orders (restaurant_id, id DESC);
CREATE INDEX orders_driver ON orders (driver_id, id DESC);
-- Recovery reads only the live orders.
CREATE INDEX orders_active ON orders (id) WHERE status NOT IN ('DELIVERED', 'CANCELLED');

CREATE TABLE order_items (
    id                      BIGSERIAL PRIMARY KEY,
    order_id                BIGINT NOT NULL REFERENCES orders (id),
    menu_item_id            BIGINT NOT NULL REFERENCES menu_items (id),
    name                    TEXT NOT NULL,
    quantity                INTEGER NOT NULL,
    unit_price_cents        BIGINT NOT NULL,
    special_instructions    TEXT
);
CREATE INDEX order_items_order ON order_items (order_id);

-- Append-only history; seq is the order's version after the event.
CREATE TABLE order_events (
    order_id    BIGINT NOT NULL REFERENCES orders (id),
    seq         BIGINT NOT NULL,
    type        TEXT NOT NULL,
    from_status TEXT,
    to_status   TEXT,
    actor_id    BIGINT,
    actor_role  TEXT,
    at          TIMESTAMPTZ NOT NULL,
    data        JSONB NOT NULL DEFAULT '{}',
    PRIMARY KEY (order_id, seq)
);

CREATE TABLE idempotency_keys (
    user_id         BIGINT NOT NULL REFERENCES users (id),
    key             TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    order_id        BIGINT REFERENCES orders (id),
    -- The first response's body, replayed verbatim.
    response_body   TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- Breadcrumbs of drivers carrying an order, written in batches.
CREATE TABLE driver_locations (
    id          BIGSERIAL PRIMARY KEY,
    driver_id   BIGINT NOT NULL REFERENCES drivers (id),
    order_id    BIGINT REFERENCES orders (id),
    lat         DOUBLE PRECISION NOT NULL,
    lon         DOUBLE PRECISION NOT NULL,
    heading     DOUBLE PRECISION,
    speed_mps   DOUBLE PRECISION,
    recorded_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX driver_locations_order ON driver_locations (order_id, recorded_at);
CREATE INDEX driver_locations_driver ON driver_locations (driver_id, recorded_at);
