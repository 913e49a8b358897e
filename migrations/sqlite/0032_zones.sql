-- Service zones (issue 13): GeoJSON areas, and the zone a restaurant
-- delivers inside. Same shape as the Postgres migration of the same number.
CREATE TABLE zones (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,
    -- The GeoJSON geometry (Polygon or MultiPolygon), as validated.
    geometry    TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE restaurant_zones (
    restaurant_id   INTEGER PRIMARY KEY REFERENCES restaurants (id),
    zone_id         INTEGER NOT NULL REFERENCES zones (id) ON DELETE CASCADE
);
