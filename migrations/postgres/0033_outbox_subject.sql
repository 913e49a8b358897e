-- Events that are not an order's (a driver entering or leaving a zone)
-- carry their own subject tail, after the prefix. Same as SQLite.
ALTER TABLE event_outbox ADD COLUMN subject TEXT;
