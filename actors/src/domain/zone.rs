//! Service zones: areas drawn by an admin as GeoJSON polygons, parsed and
//! checked here, and an index that answers which zones hold a point
//! through an R-tree of their bounding boxes, so a lookup never scans every
//! zone.
//!
//! A point on a zone's edge is inside it; a point in a hole is not.

use super::input::FieldError;
use super::model::LatLon;
use geo::{BoundingRect, Coord, Intersects, LineString, MultiPolygon, Point, Polygon, Validation};
use rstar::RTree;
use rstar::primitives::{GeomWithData, Rectangle};
use serde_json::Value;

/// More vertices than this in one zone is refused (the body limit bounds it too).
pub const MAX_VERTICES: usize = 10_000;

/// Parses a GeoJSON `Polygon` or `MultiPolygon` geometry (coordinates
/// `[lon, lat]`, rings closed), refusing any that is not a valid area:
/// fewer than four positions in a ring, an open ring, coordinates out of
/// range, self-intersections, holes outside their shell.
pub fn parse_geojson(field: &str, geometry: &Value) -> Result<MultiPolygon<f64>, Vec<FieldError>> {
    let problem = |path: String, message: &str| {
        vec![FieldError {
            field: path,
            message: message.to_string(),
        }]
    };
    let kind = geometry["type"].as_str().unwrap_or("");
    let coordinates = &geometry["coordinates"];
    let polygons: Vec<(String, &Value)> = match kind {
        "Polygon" => vec![(format!("{field}.coordinates"), coordinates)],
        "MultiPolygon" => match coordinates.as_array() {
            Some(list) if !list.is_empty() => list
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("{field}.coordinates[{i}]"), p))
                .collect(),
            _ => {
                return Err(problem(
                    format!("{field}.coordinates"),
                    "must be a non-empty array of polygons",
                ));
            }
        },
        _ => {
            return Err(problem(
                format!("{field}.type"),
                "must be \"Polygon\" or \"MultiPolygon\"",
            ));
        }
    };
    let mut vertices = 0;
    let mut parsed = Vec::with_capacity(polygons.len());
    for (path, rings) in polygons {
        let Some(rings) = rings.as_array().filter(|r| !r.is_empty()) else {
            return Err(problem(path, "must be a non-empty array of rings"));
        };
        let mut lines = Vec::with_capacity(rings.len());
        for (r, ring) in rings.iter().enumerate() {
            let ring_path = format!("{path}[{r}]");
            let Some(positions) = ring.as_array() else {
                return Err(problem(
                    ring_path,
                    "must be an array of [lon, lat] positions",
                ));
            };
            if positions.len() < 4 {
                return Err(problem(
                    ring_path,
                    "a ring needs at least 4 positions (closed)",
                ));
            }
            vertices += positions.len();
            if vertices > MAX_VERTICES {
                return Err(problem(field.to_string(), "too many vertices"));
            }
            let mut coords = Vec::with_capacity(positions.len());
            for (p, position) in positions.iter().enumerate() {
                let xy = position.as_array().and_then(|xy| match xy.as_slice() {
                    [x, y, ..] => Some((x.as_f64()?, y.as_f64()?)),
                    _ => None,
                });
                match xy {
                    Some((lon, lat))
                        if lon.is_finite()
                            && lat.is_finite()
                            && (-180.0..=180.0).contains(&lon)
                            && (-90.0..=90.0).contains(&lat) =>
                    {
                        coords.push(Coord { x: lon, y: lat })
                    }
                    _ => {
                        return Err(problem(
                            format!("{ring_path}[{p}]"),
                            "must be [lon, lat] within range",
                        ));
                    }
                }
            }
            if coords.first() != coords.last() {
                return Err(problem(ring_path, "a ring must end where it starts"));
            }
            lines.push(LineString::new(coords));
        }
        let exterior = lines.remove(0);
        let polygon = Polygon::new(exterior, lines);
        if let Err(error) = polygon.check_validation() {
            return Err(problem(path, &format!("not a valid polygon: {error}")));
        }
        parsed.push(polygon);
    }
    let area = MultiPolygon::new(parsed);
    if let Err(error) = area.check_validation() {
        return Err(problem(
            format!("{field}.coordinates"),
            &format!("not a valid multipolygon: {error}"),
        ));
    }
    Ok(area)
}

/// Whether `at` is inside `area` (its edge included, its holes excluded).
pub fn covers(area: &MultiPolygon<f64>, at: LatLon) -> bool {
    area.intersects(&Point::new(at.lon, at.lat))
}

/// One indexed zone.
#[derive(Debug, Clone)]
pub struct Zone {
    pub id: i64,
    pub area: MultiPolygon<f64>,
}

/// Zones by bounding box: candidates from the R-tree, then the exact test.
#[derive(Default)]
pub struct ZoneIndex {
    tree: RTree<GeomWithData<Rectangle<[f64; 2]>, usize>>,
    zones: Vec<Zone>,
}

impl ZoneIndex {
    pub fn new(zones: Vec<Zone>) -> ZoneIndex {
        let boxes = zones
            .iter()
            .enumerate()
            .filter_map(|(i, zone)| {
                let rect = zone.area.bounding_rect()?;
                Some(GeomWithData::new(
                    Rectangle::from_corners(
                        [rect.min().x, rect.min().y],
                        [rect.max().x, rect.max().y],
                    ),
                    i,
                ))
            })
            .collect();
        ZoneIndex {
            tree: RTree::bulk_load(boxes),
            zones,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    pub fn get(&self, id: i64) -> Option<&Zone> {
        self.zones.iter().find(|z| z.id == id)
    }

    /// The ids of the zones holding `at`, ascending.
    pub fn containing(&self, at: LatLon) -> Vec<i64> {
        let point = [at.lon, at.lat];
        let mut ids: Vec<i64> = self
            .tree
            .locate_all_at_point(point)
            .map(|hit| &self.zones[hit.data])
            .filter(|zone| covers(&zone.area, at))
            .map(|zone| zone.id)
            .collect();
        ids.sort_unstable();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(lat: f64, lon: f64) -> LatLon {
        LatLon { lat, lon }
    }

    /// A 1 x 1 degree square at (0, 0) with a hole in its middle.
    fn square_with_hole() -> Value {
        json!({
            "type": "Polygon",
            "coordinates": [
                [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]],
                [[0.4, 0.4], [0.6, 0.4], [0.6, 0.6], [0.4, 0.6], [0.4, 0.4]]
            ]
        })
    }

    #[test]
    fn inside_outside_edge_and_hole() {
        let area = parse_geojson("polygon", &square_with_hole()).unwrap();
        assert!(covers(&area, at(0.2, 0.2)));
        assert!(!covers(&area, at(1.5, 0.2)));
        assert!(covers(&area, at(0.0, 0.5)), "on the edge is inside");
        assert!(covers(&area, at(1.0, 1.0)), "a corner is inside");
        assert!(!covers(&area, at(0.5, 0.5)), "in the hole is outside");
        assert!(
            covers(&area, at(0.4, 0.5)),
            "the hole's edge is the zone's edge"
        );
    }

    #[test]
    fn invalid_polygons_name_the_field() {
        let cases = [
            (
                json!({ "type": "Point", "coordinates": [0, 0] }),
                "polygon.type",
            ),
            (
                json!({ "type": "Polygon", "coordinates": [] }),
                "polygon.coordinates",
            ),
            (
                json!({ "type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]] }),
                "polygon.coordinates[0]",
            ),
            (
                json!({ "type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]] }),
                "polygon.coordinates[0]",
            ),
            (
                json!({ "type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]], "x"] }),
                "polygon.coordinates[1]",
            ),
            (
                json!({ "type": "Polygon", "coordinates": [[[0, 0], [200, 0], [1, 1], [0, 0]]] }),
                "polygon.coordinates[0][1]",
            ),
            // A bow tie crosses itself.
            (
                json!({ "type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]] }),
                "polygon.coordinates",
            ),
            // A hole outside its shell.
            (
                json!({ "type": "Polygon", "coordinates": [
                [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]],
                [[2, 2], [3, 2], [3, 3], [2, 3], [2, 2]]
            ] }),
                "polygon.coordinates",
            ),
            (
                json!({ "type": "MultiPolygon", "coordinates": [] }),
                "polygon.coordinates",
            ),
        ];
        for (geometry, field) in cases {
            let errors = parse_geojson("polygon", &geometry).unwrap_err();
            assert_eq!(errors[0].field, field, "{geometry}: {errors:?}");
        }
    }

    #[test]
    fn the_index_finds_exactly_the_zones_holding_a_point() {
        let square = |x: f64, y: f64, size: f64| json!({ "type": "Polygon", "coordinates": [[[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]] });
        let zones: Vec<Zone> = (0..100)
            .map(|i| Zone {
                id: i,
                area: parse_geojson("p", &square((i % 10) as f64, (i / 10) as f64, 1.5)).unwrap(),
            })
            .collect();
        let index = ZoneIndex::new(zones.clone());
        for (lat, lon) in [(0.5, 0.5), (1.2, 1.2), (9.9, 9.9), (5.0, 3.25), (-1.0, 0.0)] {
            let brute: Vec<i64> = zones
                .iter()
                .filter(|z| covers(&z.area, at(lat, lon)))
                .map(|z| z.id)
                .collect();
            assert_eq!(index.containing(at(lat, lon)), brute, "({lat}, {lon})");
        }
        assert_eq!(index.containing(at(1.2, 1.2)), vec![0, 1, 10, 11]);
    }
}
