-- What a driver was told survives a restart (issue 15): a paused driver
-- stays paused, and a driver who declined an order (or let its offer
-- expire) is not offered it again.

-- `paused_changed_us` (microseconds since the epoch of the change) orders
-- writes that may land out of order: an older change never overwrites a
-- newer one.
ALTER TABLE drivers ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
ALTER TABLE drivers ADD COLUMN paused_changed_us INTEGER NOT NULL DEFAULT 0;

CREATE TABLE offer_exclusions (
    order_id    INTEGER NOT NULL REFERENCES orders (id),
    driver_id   INTEGER NOT NULL REFERENCES drivers (id),
    reason      TEXT NOT NULL CHECK (reason IN ('declined', 'expired')),
    excluded_at TEXT NOT NULL,
    PRIMARY KEY (order_id, driver_id)
);
