//! Regions: the unit of ownership in a cluster, cells of a fixed
//! latitude/longitude grid (`cluster.region_deg` on a side).
//!
//! A grid rather than H3: a region is two integers, computed with two
//! divisions, named without a lookup table, and needs no new dependency;
//! at one city's latitude its cells are near enough to equal in area.
//! The geo index's border margin is a box of cells around a driver
//! ([`Region::around`]); H3's even neighbour distances would make it
//! rounder, not cheaper (README "Drivers on any node").

use actors::domain::model::LatLon;
use actors::store::GeoBox;

/// One grid cell: `floor(lat / deg)`, `floor(lon / deg)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Region {
    lat: i32,
    lon: i32,
}

impl Region {
    pub fn of(at: LatLon, deg: f64) -> Region {
        Region {
            lat: (at.lat / deg).floor() as i32,
            lon: (at.lon / deg).floor() as i32,
        }
    }

    /// The cells within about `margin_km` of `at` (its own first), a
    /// bounding box of the margin on this grid, at most `max` cells (the
    /// box is shrunk around `at` past that).
    pub fn around(at: LatLon, deg: f64, margin_km: f64, max: usize) -> Vec<Region> {
        let here = Region::of(at, deg);
        let dlat = margin_km / 111.0;
        let dlon = margin_km / (111.0 * at.lat.to_radians().cos().abs().max(0.01));
        // Cells each way, capped so that the box holds at most `max`.
        let side = ((max as f64).sqrt() as i32 - 1).max(0) / 2;
        let span = |d: f64| ((d / deg).ceil() as i32).clamp(0, side);
        let (la, lo) = (span(dlat), span(dlon));
        let mut cells = vec![here];
        for lat in here.lat - la..=here.lat + la {
            for lon in here.lon - lo..=here.lon + lo {
                let cell = Region { lat, lon };
                if cell != here {
                    cells.push(cell);
                }
            }
        }
        cells
    }

    /// The cell as a box of `deg` degrees, widened by a hair so that a
    /// restaurant on an edge is never left out by rounding (the store's
    /// answer is filtered by [`Region::of`] again).
    pub fn area(&self, deg: f64) -> GeoBox {
        let margin = deg * 1e-6;
        GeoBox {
            min_lat: self.lat as f64 * deg - margin,
            max_lat: (self.lat + 1) as f64 * deg + margin,
            min_lon: self.lon as f64 * deg - margin,
            max_lon: (self.lon + 1) as f64 * deg + margin,
        }
    }

    /// The key token, `r<lat>_<lon>` (digits, `-` and `_`: a valid KV key
    /// and NATS subject token).
    pub fn key(&self) -> String {
        format!("r{}_{}", self.lat, self.lon)
    }

    pub fn parse(text: &str) -> Option<Region> {
        let (lat, lon) = text.strip_prefix('r')?.split_once('_')?;
        Some(Region {
            lat: lat.parse().ok()?,
            lon: lon.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "r{}_{}", self.lat, self.lon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_falls_in_the_cell_below_and_left_of_it_and_the_name_round_trips() {
        let capitol = LatLon {
            lat: 30.2747,
            lon: -97.7404,
        };
        let region = Region::of(capitol, 0.05);
        assert_eq!(region.key(), "r605_-1955");
        assert_eq!(Region::parse(&region.key()), Some(region));
        let across = Region::of(
            LatLon {
                lat: 30.2747,
                lon: -97.7501,
            },
            0.05,
        );
        assert_ne!(across, region);
        assert_eq!(Region::parse("r1"), None);
        assert_eq!(Region::parse("x1_2"), None);
        assert_eq!(Region::parse("r1_a"), None);
        // Its box holds the point, and the next cell's box does not.
        let area = region.area(0.05);
        assert!(area.min_lat <= capitol.lat && capitol.lat <= area.max_lat);
        assert!(area.min_lon <= capitol.lon && capitol.lon <= area.max_lon);
        let next = across.area(0.05);
        assert!(capitol.lon > next.max_lon);
    }

    #[test]
    fn the_cells_around_a_point_cover_the_margin_and_stay_bounded() {
        let at = LatLon {
            lat: 30.2686,
            lon: -97.7425,
        };
        let here = Region::of(at, 0.02);
        let cells = Region::around(at, 0.02, 3.0, 49);
        assert_eq!(cells[0], here);
        // 3 km is 0.027 degrees of latitude: two cells each way, so 5 x 5.
        assert_eq!(cells.len(), 25);
        let north = Region::of(
            LatLon {
                lat: at.lat + 0.02,
                lon: at.lon,
            },
            0.02,
        );
        assert!(cells.contains(&north));
        assert_eq!(Region::around(at, 0.02, 100.0, 49).len(), 49);
        assert_eq!(Region::around(at, 0.02, 0.0, 49), vec![here]);
    }
}
