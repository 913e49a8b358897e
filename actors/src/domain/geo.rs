//! Great-circle distance, the one distance every part of dispatchd uses.

use crate::domain::model::LatLon;
use geo::{Distance, Haversine, Point};

/// Haversine distance in kilometres.
pub fn distance_km(a: LatLon, b: LatLon) -> f64 {
    Haversine.distance(Point::new(a.lon, a.lat), Point::new(b.lon, b.lat)) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_between_known_points() {
        // Austin Capitol to UT Tower, about 1.27 km.
        let capitol = LatLon {
            lat: 30.2747,
            lon: -97.7404,
        };
        let tower = LatLon {
            lat: 30.2862,
            lon: -97.7394,
        };
        let d = distance_km(capitol, tower);
        assert!((d - 1.28).abs() < 0.02, "{d}");
        assert_eq!(distance_km(capitol, capitol), 0.0);
    }

    #[test]
    fn distance_is_symmetric_across_the_antimeridian() {
        let west = LatLon {
            lat: 0.0,
            lon: 179.9,
        };
        let east = LatLon {
            lat: 0.0,
            lon: -179.9,
        };
        let d = distance_km(west, east);
        assert!((d - 22.24).abs() < 0.05, "{d}");
        assert_eq!(d, distance_km(east, west));
    }
}
