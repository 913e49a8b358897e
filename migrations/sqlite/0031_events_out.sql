-- Events out (issue 13): the transactional outbox and webhook endpoints.
-- Same shape as the Postgres migration of the same number.

-- One row per order event, written in the transaction that commits the
-- event. Each sink marks its own column when it has taken the row; a row
-- both sinks took is deleted. `id` orders the rows; one order's events are
-- committed one after another by its actor, so its ids increase.
CREATE TABLE event_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    -- `<orderId>-<seq>`: the consumers' de-duplication id.
    event_id        TEXT NOT NULL UNIQUE,
    order_id        INTEGER NOT NULL,
    restaurant_id   INTEGER NOT NULL,
    -- The external type (`order_confirmed`, ...), also the subject's last token.
    type            TEXT NOT NULL,
    -- The JSON envelope, sent verbatim to NATS and to webhooks.
    payload         TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    published_at    TEXT,
    fanned_out_at   TEXT
);
CREATE INDEX event_outbox_unpublished ON event_outbox (id) WHERE published_at IS NULL;
CREATE INDEX event_outbox_not_fanned_out ON event_outbox (id) WHERE fanned_out_at IS NULL;

CREATE TABLE webhooks (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    url             TEXT NOT NULL,
    -- JSON array of external event types; empty means every type.
    event_types     TEXT NOT NULL,
    restaurant_id   INTEGER REFERENCES restaurants (id),
    -- `whsec_<base64>` (Standard Webhooks); shown to the admin once, at creation.
    secret          TEXT NOT NULL,
    enabled         INTEGER NOT NULL DEFAULT 1,
    disabled_reason TEXT,
    created_at      TEXT NOT NULL
);

-- One row per event per endpoint: the delivery log, and its queue.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id      INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    -- pending | delivered | failed
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    delivered_at    TEXT
);
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (webhook_id, id);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (webhook_id, id) WHERE status = 'pending';
