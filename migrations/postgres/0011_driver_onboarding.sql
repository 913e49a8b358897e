-- Drivers who registered themselves wait for an admin's approval before
-- they are offered orders. Drivers that exist already are approved.
ALTER TABLE drivers ADD COLUMN approved_at TIMESTAMPTZ;
UPDATE drivers SET approved_at = created_at;
CREATE INDEX drivers_pending ON drivers (id) WHERE approved_at IS NULL;
