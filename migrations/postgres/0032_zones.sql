-- Service zones (issue 13): GeoJSON areas, and the zone a restaurant
-- delivers inside. Same shape as the SQLite migration of the same number.
CREATE TABLE zones (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL,
    -- The GeoJSON geometry (Polygon or MultiPolygon), as validated.
    geometry    TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE restaurant_zones (
    restaurant_id   BIGINT PRIMARY KEY REFERENCES restaurants (id),
    zone_id         BIGINT NOT NULL REFERENCES zones (id) ON DELETE CASCADE
);
