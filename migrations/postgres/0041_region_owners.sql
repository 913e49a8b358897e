-- Cluster mode (README "Cluster mode", "The epoch in Postgres"): which node
-- holds each region, at which lease epoch (the JetStream key's revision).
-- Postgres only: SQLite is single-node and never fences.
--
-- A node that claims a region records it here before it serves it; an
-- epoch only moves forward. Every order write a cluster node makes calls
-- dispatchd_check_owner() in its own transaction, so the database refuses
-- the commit of a node that no longer holds the region, whatever that
-- node's clock believes. The row lock it takes (FOR SHARE) makes a claim
-- wait for the writes already checked, and every later write see the claim.
CREATE TABLE region_owners (
    region     TEXT PRIMARY KEY,
    node       TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Records a claim; false (and nothing changed) when an epoch as new or
-- newer is recorded already.
CREATE FUNCTION dispatchd_claim_region(p_region TEXT, p_node TEXT, p_epoch BIGINT)
RETURNS BOOLEAN LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO region_owners AS o (region, node, epoch)
    VALUES (p_region, p_node, p_epoch)
    ON CONFLICT (region) DO UPDATE
        SET node = EXCLUDED.node, epoch = EXCLUDED.epoch, claimed_at = now()
        WHERE o.epoch < EXCLUDED.epoch;
    RETURN FOUND;
END;
$$;

-- Refuses (SQLSTATE DF001, the holder in HINT) unless p_node holds
-- p_region at p_epoch; locks the row until the caller's transaction ends.
CREATE FUNCTION dispatchd_check_owner(p_region TEXT, p_node TEXT, p_epoch BIGINT)
RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
    holder TEXT;
    held_epoch BIGINT;
BEGIN
    SELECT node, epoch INTO holder, held_epoch
      FROM region_owners WHERE region = p_region FOR SHARE;
    IF holder IS DISTINCT FROM p_node OR held_epoch IS DISTINCT FROM p_epoch THEN
        RAISE EXCEPTION 'region % is held by % at epoch %, not by % at epoch %',
            p_region, coalesce(holder, 'no node'), coalesce(held_epoch::text, '-'), p_node, p_epoch
            USING ERRCODE = 'DF001', HINT = coalesce(holder, '');
    END IF;
END;
$$;
