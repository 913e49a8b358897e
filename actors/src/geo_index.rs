//! The spatial index of online drivers: where each one is, and which are nearest to a point.
//!
//! An R-tree (rstar) over plain `[lon, lat]` degree points, plus a map from
//! driver id to the entry, so a move removes the old point without searching
//! for it. The tree only orders candidates; every distance handed out is the
//! haversine distance of [`crate::geo::distance_km`], and the degree-space search
//! runs until a lower bound proves nobody farther in degrees can be nearer in
//! kilometres. Pure and synchronous: the `GeoIndex` actor owns one of these.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::f64::consts::FRAC_PI_2;
use std::iter::Peekable;

use rstar::iterators::NearestNeighborDistance2Iterator;
use rstar::{
    AABB, Envelope, PointDistance, RStarInsertionStrategy, RTree, RTreeObject, RTreeParams,
    SelectionFunction,
};

use crate::geo::distance_km;
use crate::model::{DriverId, LatLon};

/// The radius `geo`'s haversine uses (GRS80 mean radius); a unit test keeps
/// the two in step, since the search bounds below are derived from it.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Bounds are widened by this fraction so that rounding in the haversine
/// formula can never make a point test nearer than the bound promised.
const BOUND_SLACK: f64 = 1e-9;

/// What the index knows about one online driver.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriverEntry {
    pub id: DriverId,
    pub at: LatLon,
    /// Willing to take another offer (online and not paused).
    pub available: bool,
    /// Orders currently assigned and not yet delivered.
    pub active_orders: u32,
}

/// A driver found by a query, with its haversine distance from the query point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nearby {
    pub entry: DriverEntry,
    pub distance_km: f64,
}

/// Online drivers by position. Single writer: the owner applies moves in order.
#[derive(Default)]
pub struct GeoIndex {
    tree: RTree<Placed, NodeSizes>,
    /// The entry exactly as it sits in the tree, so removal finds it directly.
    by_id: HashMap<DriverId, DriverEntry>,
}

impl GeoIndex {
    pub fn new() -> GeoIndex {
        GeoIndex::default()
    }

    /// Builds from many entries at once (bulk load), for start-up and benchmarks.
    /// A later entry for the same driver replaces an earlier one; entries off
    /// the map (see [`GeoIndex::upsert`]) are left out.
    pub fn bulk_load(entries: Vec<DriverEntry>) -> GeoIndex {
        let mut by_id = HashMap::with_capacity(entries.len());
        for entry in entries.into_iter().filter(|entry| is_on_the_map(entry.at)) {
            by_id.insert(entry.id, entry);
        }
        let tree = RTree::bulk_load_with_params(by_id.values().copied().map(Placed).collect());
        GeoIndex { tree, by_id }
    }

    /// Inserts or moves a driver / changes its availability or load.
    ///
    /// A position that is not a real coordinate (NaN, infinite, |lat| > 90 or
    /// |lon| > 180) removes the driver instead: it would poison the tree's
    /// bounding boxes, and an old position would offer a driver who is no
    /// longer there. Callers validate input first; this is the last guard.
    pub fn upsert(&mut self, entry: DriverEntry) {
        if !is_on_the_map(entry.at) {
            self.remove(entry.id);
            return;
        }
        match self.by_id.insert(entry.id, entry) {
            Some(old) if old == entry => {}
            // Same place, new availability or load: edit the leaf where it is,
            // which is cheaper than a remove and insert and keeps the tree shape.
            Some(old) if old.at == entry.at => {
                let edited = match self
                    .tree
                    .locate_with_selection_function_mut(DriverAt::of(&old))
                    .next()
                {
                    Some(placed) => {
                        placed.0 = entry;
                        true
                    }
                    None => false,
                };
                if !edited {
                    self.heal_missing_leaf(entry);
                }
            }
            Some(old) => {
                if self
                    .tree
                    .remove_with_selection_function(DriverAt::of(&old))
                    .is_none()
                {
                    self.heal_missing_leaf(entry);
                    return;
                }
                self.tree.insert(Placed(entry));
            }
            None => self.tree.insert(Placed(entry)),
        }
    }

    /// Takes a driver off the map. Returns whether it was there.
    pub fn remove(&mut self, id: DriverId) -> bool {
        let Some(old) = self.by_id.remove(&id) else {
            return false;
        };
        let removed = self.tree.remove_with_selection_function(DriverAt::of(&old));
        debug_assert!(removed.is_some(), "the tree holds every mapped driver");
        true
    }

    pub fn get(&self, id: DriverId) -> Option<DriverEntry> {
        self.by_id.get(&id).copied()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Up to `k` drivers that are `available`, hold fewer than `max_active_orders`,
    /// lie within `max_km` (haversine) and for which `exclude(id)` is false,
    /// nearest first by haversine distance (ties by id).
    ///
    /// Exact: the same answer as checking every driver, including near the
    /// poles and across the antimeridian (those just search more of the tree).
    pub fn nearest_available(
        &self,
        at: LatLon,
        k: usize,
        max_km: f64,
        max_active_orders: u32,
        exclude: impl Fn(DriverId) -> bool,
    ) -> Vec<Nearby> {
        let mut best: Vec<Nearby> = Vec::with_capacity(k.min(64));
        // `!(x >= 0)` also turns away NaN.
        if k == 0 || !is_on_the_map(at) || !(max_km >= 0.0) {
            return best;
        }
        // Nobody farther than this can still enter `best`: `max_km` at
        // first, then the k-th best distance once there are k.
        let mut cut_off_km = max_km;
        let mut stop_beyond_degrees_2 = degree_distance_2_beyond(at, cut_off_km);
        for (entry, degrees_2) in self.nearest_in_degrees(at, max_km) {
            if degrees_2 > stop_beyond_degrees_2 {
                break;
            }
            if !entry.available || entry.active_orders >= max_active_orders || exclude(entry.id) {
                continue;
            }
            let found = Nearby {
                entry: *entry,
                distance_km: distance_km(at, entry.at),
            };
            // Equal to the cut-off may still win on id, so only `>` is out.
            if found.distance_km > cut_off_km {
                continue;
            }
            let rank = best.partition_point(|kept| nearest_first(kept, &found) == Ordering::Less);
            if rank >= k {
                continue;
            }
            best.insert(rank, found);
            best.truncate(k);
            if best.len() == k {
                cut_off_km = best[k - 1].distance_km;
                stop_beyond_degrees_2 = degree_distance_2_beyond(at, cut_off_km);
            }
        }
        best
    }

    /// Every driver (available or not) within `radius_km`, nearest first
    /// (ties by id), at most `limit`.
    pub fn within(&self, at: LatLon, radius_km: f64, limit: usize) -> Vec<Nearby> {
        if limit == 0 || !is_on_the_map(at) || !(radius_km >= 0.0) {
            return Vec::new();
        }
        let (first, second) = search_boxes(at, radius_km);
        let mut found: Vec<Nearby> = std::iter::once(first)
            .chain(second)
            .flat_map(|envelope| self.tree.locate_in_envelope(envelope))
            .filter_map(|placed| {
                let distance_km = distance_km(at, placed.0.at);
                (distance_km <= radius_km).then_some(Nearby {
                    entry: placed.0,
                    distance_km,
                })
            })
            .collect();
        // A box holds ~4/π times the circle's drivers; sort only what is kept.
        if found.len() > limit {
            found.select_nth_unstable_by(limit - 1, nearest_first);
            found.truncate(limit);
        }
        found.sort_unstable_by(nearest_first);
        found
    }

    /// Every driver once, in increasing degree-space distance from `at`, with
    /// that distance squared. Longitude differences wrap around the
    /// antimeridian whenever a driver within `reach_km` could lie across it,
    /// so the distance is the one the search bound is proved for.
    fn nearest_in_degrees(&self, at: LatLon, reach_km: f64) -> NearestInDegrees<'_> {
        let query = point_of(at);
        let crosses_antimeridian = match longitude_reach_degrees(at, reach_km) {
            Some(reach) => at.lon.abs() + reach > 180.0,
            None => true,
        };
        // The same query one turn around the globe, on the side where the
        // drivers across the antimeridian are near in raw degrees.
        let mirror = crosses_antimeridian.then(|| {
            let turn = if at.lon >= 0.0 { -360.0 } else { 360.0 };
            [query[0] + turn, query[1]]
        });
        NearestInDegrees {
            direct: self
                .tree
                .nearest_neighbor_iter_with_distance_2(query)
                .peekable(),
            mirrored: mirror.map(|mirror| {
                (
                    mirror,
                    self.tree
                        .nearest_neighbor_iter_with_distance_2(mirror)
                        .peekable(),
                )
            }),
            query,
        }
    }

    /// Puts back a driver the map knew but the tree had lost. That would be a
    /// bug in this file; healing keeps the two consistent in release builds.
    fn heal_missing_leaf(&mut self, entry: DriverEntry) {
        debug_assert!(false, "driver {} was mapped but not in the tree", entry.id);
        self.tree.insert(Placed(entry));
    }
}

struct NodeSizes;

impl RTreeParams for NodeSizes {
    const MIN_SIZE: usize = 3;
    const MAX_SIZE: usize = 6;
    const REINSERTION_COUNT: usize = 2;
    type DefaultInsertionStrategy = RStarInsertionStrategy;
}

/// A driver as stored in the tree, keyed at `[lon, lat]` in degrees.
#[derive(Debug, Clone, Copy)]
struct Placed(DriverEntry);

fn point_of(at: LatLon) -> [f64; 2] {
    [at.lon, at.lat]
}

impl RTreeObject for Placed {
    type Envelope = AABB<[f64; 2]>;

    fn envelope(&self) -> AABB<[f64; 2]> {
        AABB::from_point(point_of(self.0.at))
    }
}

impl PointDistance for Placed {
    fn distance_2(&self, point: &[f64; 2]) -> f64 {
        let d_lon = self.0.at.lon - point[0];
        let d_lat = self.0.at.lat - point[1];
        d_lon * d_lon + d_lat * d_lat
    }

    // A point has no extent, so the envelope pre-check of the default
    // implementations would only compute the same distance twice.
    fn contains_point(&self, point: &[f64; 2]) -> bool {
        point_of(self.0.at) == *point
    }

    fn distance_2_if_less_or_equal(&self, point: &[f64; 2], max_distance_2: f64) -> Option<f64> {
        let distance_2 = self.distance_2(point);
        (distance_2 <= max_distance_2).then_some(distance_2)
    }
}

/// Selects one driver's leaf: descend only into boxes holding its point,
/// match on id (positions may be shared).
struct DriverAt {
    point: [f64; 2],
    id: DriverId,
}

impl DriverAt {
    fn of(entry: &DriverEntry) -> DriverAt {
        DriverAt {
            point: point_of(entry.at),
            id: entry.id,
        }
    }
}

impl SelectionFunction<Placed> for DriverAt {
    fn should_unpack_parent(&self, envelope: &AABB<[f64; 2]>) -> bool {
        envelope.contains_point(&self.point)
    }

    fn should_unpack_leaf(&self, leaf: &Placed) -> bool {
        leaf.0.id == self.id
    }
}

/// Merges the nearest-neighbour walks from the query and from its mirror one
/// turn away. Each driver is yielded once, by the walk that sees it nearer,
/// so the merged order is the order of wrapped degree distance.
struct NearestInDegrees<'a> {
    query: [f64; 2],
    direct: Peekable<NearestNeighborDistance2Iterator<'a, Placed>>,
    mirrored: Option<(
        [f64; 2],
        Peekable<NearestNeighborDistance2Iterator<'a, Placed>>,
    )>,
}

impl<'a> Iterator for NearestInDegrees<'a> {
    type Item = (&'a DriverEntry, f64);

    fn next(&mut self) -> Option<Self::Item> {
        let Some((mirror, mirrored)) = &mut self.mirrored else {
            return self.direct.next().map(|(placed, d2)| (&placed.0, d2));
        };
        loop {
            let take_direct = match (self.direct.peek(), mirrored.peek()) {
                (None, None) => return None,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((_, direct_2)), Some((_, mirrored_2))) => direct_2 <= mirrored_2,
            };
            if take_direct {
                let (placed, direct_2) = self.direct.next()?;
                if direct_2 <= placed.distance_2(mirror) {
                    return Some((&placed.0, direct_2));
                }
            } else {
                let (placed, mirrored_2) = mirrored.next()?;
                if mirrored_2 < placed.distance_2(&self.query) {
                    return Some((&placed.0, mirrored_2));
                }
            }
        }
    }
}

fn is_on_the_map(at: LatLon) -> bool {
    // `contains` is false for NaN, so this also rejects non-finite values.
    (-90.0..=90.0).contains(&at.lat) && (-180.0..=180.0).contains(&at.lon)
}

/// Nearest first; equal distances by id, so every query has one right answer.
fn nearest_first(a: &Nearby, b: &Nearby) -> Ordering {
    a.distance_km
        .total_cmp(&b.distance_km)
        .then(a.entry.id.cmp(&b.entry.id))
}

/// The central angle (radians) that `km` can span, rounded up slightly.
fn angular_reach(km: f64) -> f64 {
    km / EARTH_RADIUS_KM * (1.0 + BOUND_SLACK)
}

/// The squared degree-space distance beyond which every driver is provably
/// farther than `km` from `at`.
///
/// Why it holds: along any path, arc length is ∫√(dφ² + cos²φ dλ²), which is
/// at least c·√(Δφ² + Δλ²) when |φ| stays where cos φ ≥ c (Minkowski's
/// inequality; Δλ wrapped). A great circle of length L ≤ B from `at` never
/// leaves |φ| ≤ |φ₀| + B. So a driver at degree distance d with c·d > B
/// cannot have L ≤ B: it is strictly farther. Within B of a pole c is 0 and
/// no degree distance proves anything, so the search runs to the end.
fn degree_distance_2_beyond(at: LatLon, km: f64) -> f64 {
    let reach = angular_reach(km);
    let widest_latitude = at.lat.abs().to_radians() + reach;
    if widest_latitude >= FRAC_PI_2 {
        return f64::INFINITY;
    }
    let degrees = (reach / widest_latitude.cos()).to_degrees();
    degrees * degrees
}

/// How far in longitude (degrees) a point within `km` of `at` can be, or
/// `None` when the circle reaches a pole and so spans every longitude.
/// Spherical geometry: the circle's widest meridian offset is
/// asin(sin B / cos φ₀), reached off the query's own parallel.
fn longitude_reach_degrees(at: LatLon, km: f64) -> Option<f64> {
    let reach = angular_reach(km);
    let latitude = at.lat.abs().to_radians();
    if latitude + reach >= FRAC_PI_2 {
        return None;
    }
    let degrees = (reach.sin() / latitude.cos()).min(1.0).asin().to_degrees();
    // The margin in `reach` is relative; this covers rounding in asin itself.
    Some(degrees * (1.0 + BOUND_SLACK) + 1e-12)
}

/// Degree boxes that together hold every point within `km` of `at`: one box,
/// or two when the circle crosses the antimeridian (one either side).
fn search_boxes(at: LatLon, km: f64) -> (AABB<[f64; 2]>, Option<AABB<[f64; 2]>>) {
    let lat_reach = angular_reach(km).to_degrees() + 1e-12;
    let south = (at.lat - lat_reach).max(-90.0);
    let north = (at.lat + lat_reach).min(90.0);
    let whole_band = AABB::from_corners([-180.0, south], [180.0, north]);
    let Some(lon_reach) = longitude_reach_degrees(at, km) else {
        return (whole_band, None);
    };
    if lon_reach >= 180.0 {
        return (whole_band, None);
    }
    let (west, east) = (at.lon - lon_reach, at.lon + lon_reach);
    // lon_reach < 180, so at most one side wraps and the two boxes are disjoint.
    if west < -180.0 {
        (
            AABB::from_corners([west + 360.0, south], [180.0, north]),
            Some(AABB::from_corners([-180.0, south], [east, north])),
        )
    } else if east > 180.0 {
        (
            AABB::from_corners([west, south], [180.0, north]),
            Some(AABB::from_corners([-180.0, south], [east - 360.0, north])),
        )
    } else {
        (AABB::from_corners([west, south], [east, north]), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::HashSet;

    const AUSTIN: LatLon = LatLon {
        lat: 30.27,
        lon: -97.74,
    };

    fn driver(id: DriverId, lat: f64, lon: f64) -> DriverEntry {
        DriverEntry {
            id,
            at: LatLon { lat, lon },
            available: true,
            active_orders: 0,
        }
    }

    fn ids(found: &[Nearby]) -> Vec<DriverId> {
        found.iter().map(|nearby| nearby.entry.id).collect()
    }

    fn brute_force_nearest(
        entries: &[DriverEntry],
        at: LatLon,
        k: usize,
        max_km: f64,
        max_active_orders: u32,
        exclude: impl Fn(DriverId) -> bool,
    ) -> Vec<Nearby> {
        let mut all: Vec<Nearby> = entries
            .iter()
            .filter(|e| e.available && e.active_orders < max_active_orders && !exclude(e.id))
            .map(|e| Nearby {
                entry: *e,
                distance_km: distance_km(at, e.at),
            })
            .filter(|nearby| nearby.distance_km <= max_km)
            .collect();
        all.sort_by(nearest_first);
        all.truncate(k);
        all
    }

    fn brute_force_within(
        entries: &[DriverEntry],
        at: LatLon,
        radius_km: f64,
        limit: usize,
    ) -> Vec<Nearby> {
        let mut all: Vec<Nearby> = entries
            .iter()
            .map(|e| Nearby {
                entry: *e,
                distance_km: distance_km(at, e.at),
            })
            .filter(|nearby| nearby.distance_km <= radius_km)
            .collect();
        all.sort_by(nearest_first);
        all.truncate(limit);
        all
    }

    /// Drivers scattered around `centre`, up to `lat_spread` and `lon_spread`
    /// degrees away, with a mix of availability and load; longitudes wrap
    /// into [-180, 180].
    fn scatter(
        rng: &mut StdRng,
        first_id: DriverId,
        count: usize,
        centre: LatLon,
        (lat_spread, lon_spread): (f64, f64),
    ) -> Vec<DriverEntry> {
        (0..count)
            .map(|i| {
                let mut lon = centre.lon + rng.random_range(-lon_spread..lon_spread);
                if lon > 180.0 {
                    lon -= 360.0;
                } else if lon < -180.0 {
                    lon += 360.0;
                }
                DriverEntry {
                    id: first_id + i as DriverId,
                    at: LatLon {
                        lat: (centre.lat + rng.random_range(-lat_spread..lat_spread))
                            .clamp(-90.0, 90.0),
                        lon,
                    },
                    available: rng.random_bool(0.8),
                    active_orders: rng.random_range(0..3),
                }
            })
            .collect()
    }

    #[test]
    fn earth_radius_matches_the_haversine_in_geo() {
        let one_degree = distance_km(LatLon { lat: 0.0, lon: 0.0 }, LatLon { lat: 0.0, lon: 1.0 });
        let expected = EARTH_RADIUS_KM * 1.0f64.to_radians();
        assert!(
            (one_degree - expected).abs() < 1e-9,
            "{one_degree} vs {expected}"
        );
    }

    #[test]
    fn upsert_get_move_and_remove_keep_len_and_positions() {
        let mut index = GeoIndex::new();
        assert!(index.is_empty());
        index.upsert(driver(1, 30.27, -97.74));
        index.upsert(driver(2, 30.28, -97.75));
        assert_eq!(index.len(), 2);
        assert_eq!(index.get(1), Some(driver(1, 30.27, -97.74)));

        // A move replaces the point: found at the new place, not the old.
        index.upsert(driver(1, 30.30, -97.70));
        assert_eq!(index.len(), 2);
        assert_eq!(index.get(1).map(|e| e.at.lat), Some(30.30));
        assert!(index.within(AUSTIN, 0.1, 10).is_empty());
        assert_eq!(
            ids(&index.within(
                LatLon {
                    lat: 30.30,
                    lon: -97.70
                },
                0.1,
                10
            )),
            vec![1]
        );

        // Same place, new load: edited in place and visible to queries.
        index.upsert(DriverEntry {
            active_orders: 2,
            ..driver(1, 30.30, -97.70)
        });
        assert_eq!(index.get(1).map(|e| e.active_orders), Some(2));
        let near = LatLon {
            lat: 30.30,
            lon: -97.70,
        };
        assert_eq!(index.within(near, 0.1, 10)[0].entry.active_orders, 2);

        assert!(index.remove(1));
        assert!(!index.remove(1));
        assert_eq!(index.get(1), None);
        assert_eq!(index.len(), 1);
        assert!(index.within(near, 0.1, 10).is_empty());
        assert_eq!(index.tree.size(), index.len());
    }

    #[test]
    fn a_position_off_the_map_takes_the_driver_off_the_index() {
        let mut index = GeoIndex::new();
        index.upsert(driver(1, 30.27, -97.74));
        index.upsert(driver(1, f64::NAN, -97.74));
        assert_eq!(index.get(1), None);
        index.upsert(driver(2, 91.0, 0.0));
        index.upsert(driver(3, 0.0, f64::INFINITY));
        assert!(index.is_empty());
        assert_eq!(index.tree.size(), 0);
    }

    #[test]
    fn bulk_load_keeps_the_last_entry_per_driver() {
        let index = GeoIndex::bulk_load(vec![
            driver(1, 30.27, -97.74),
            driver(2, 30.28, -97.74),
            driver(1, 30.29, -97.74),
            driver(3, f64::NAN, 0.0),
        ]);
        assert_eq!(index.len(), 2);
        assert_eq!(index.tree.size(), 2);
        assert_eq!(index.get(1).map(|e| e.at.lat), Some(30.29));
    }

    #[test]
    fn unavailable_full_and_excluded_drivers_are_never_offered() {
        let index = GeoIndex::bulk_load(vec![
            DriverEntry {
                available: false,
                ..driver(1, 30.2701, -97.74)
            },
            DriverEntry {
                active_orders: 2,
                ..driver(2, 30.2702, -97.74)
            },
            driver(3, 30.2703, -97.74),
            driver(4, 30.2704, -97.74),
            DriverEntry {
                active_orders: 1,
                ..driver(5, 30.2705, -97.74)
            },
        ]);
        let found = index.nearest_available(AUSTIN, 10, 5.0, 2, |id| id == 3);
        assert_eq!(ids(&found), vec![4, 5]);
        // `within` is for maps and monitoring: it shows everyone.
        assert_eq!(ids(&index.within(AUSTIN, 5.0, 10)), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn drivers_beyond_the_radius_are_never_returned() {
        let index = GeoIndex::bulk_load(vec![
            driver(1, 30.27 + 0.0089, -97.74), // about 0.99 km north
            driver(2, 30.27 + 0.0091, -97.74), // about 1.01 km north
            driver(3, 30.27, -97.74 + 0.0105), // about 1.01 km east
        ]);
        assert_eq!(
            ids(&index.nearest_available(AUSTIN, 10, 1.0, 1, |_| false)),
            vec![1]
        );
        assert_eq!(ids(&index.within(AUSTIN, 1.0, 10)), vec![1]);
        assert!(
            index
                .nearest_available(AUSTIN, 10, -1.0, 1, |_| false)
                .is_empty()
        );
        assert!(
            index
                .nearest_available(AUSTIN, 10, f64::NAN, 1, |_| false)
                .is_empty()
        );
        assert!(
            index
                .nearest_available(AUSTIN, 0, 5.0, 1, |_| false)
                .is_empty()
        );
    }

    #[test]
    fn results_come_nearest_first_by_kilometres_not_degrees() {
        // At lat 60 a degree of longitude is half a degree of latitude, so the
        // driver farther away in degrees (east) is the nearer one on the ground.
        let at = LatLon {
            lat: 60.0,
            lon: 10.0,
        };
        let index = GeoIndex::bulk_load(vec![
            driver(1, 60.0 + 0.010, 10.0), // 1.11 km north, 0.010 degrees
            driver(2, 60.0, 10.0 + 0.016), // 0.89 km east, 0.016 degrees
            driver(3, 60.0 + 0.005, 10.0), // 0.56 km north
        ]);
        let found = index.nearest_available(at, 2, 5.0, 1, |_| false);
        assert_eq!(ids(&found), vec![3, 2]);
        assert!(found[0].distance_km < found[1].distance_km);
        assert_eq!(ids(&index.within(at, 5.0, 10)), vec![3, 2, 1]);
        assert_eq!(ids(&index.within(at, 5.0, 2)), vec![3, 2]);
    }

    #[test]
    fn nearest_available_matches_brute_force_in_a_city_at_lat_60_and_across_the_antimeridian() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut entries = scatter(&mut rng, 0, 3000, AUSTIN, (0.2, 0.2));
        entries.extend(scatter(
            &mut rng,
            10_000,
            2000,
            LatLon {
                lat: 60.0,
                lon: 25.0,
            },
            (0.3, 0.3),
        ));
        entries.extend(scatter(
            &mut rng,
            20_000,
            2000,
            LatLon {
                lat: -17.0,
                lon: 180.0,
            },
            (0.3, 0.3),
        ));
        entries.extend(scatter(
            &mut rng,
            30_000,
            300,
            LatLon {
                lat: 89.95,
                lon: 0.0,
            },
            (0.05, 180.0),
        ));
        let index = GeoIndex::bulk_load(entries.clone());
        let excluded: HashSet<DriverId> = (0..40_000).filter(|id| id % 13 == 0).collect();
        let centres = [
            AUSTIN,
            LatLon {
                lat: 60.0,
                lon: 25.0,
            },
            LatLon {
                lat: -17.0,
                lon: 179.95,
            },
            LatLon {
                lat: -17.0,
                lon: -179.98,
            },
            LatLon {
                lat: 89.97,
                lon: 45.0,
            },
        ];
        for _ in 0..300 {
            let centre = centres[rng.random_range(0..centres.len())];
            let at = LatLon {
                lat: (centre.lat + rng.random_range(-0.25..0.25)).clamp(-90.0, 90.0),
                lon: (centre.lon + rng.random_range(-0.25..0.25)).clamp(-180.0, 180.0),
            };
            let k = rng.random_range(1..30);
            let max_km = rng.random_range(0.5..40.0);
            let max_active_orders = rng.random_range(1..4);
            let skip = |id: DriverId| excluded.contains(&id);
            let expected = brute_force_nearest(&entries, at, k, max_km, max_active_orders, skip);
            let found = index.nearest_available(at, k, max_km, max_active_orders, skip);
            assert_eq!(found, expected, "at {at:?}, k {k}, max_km {max_km}");
        }
    }

    #[test]
    fn within_matches_brute_force_in_a_city_at_lat_60_and_near_the_poles() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut entries = scatter(&mut rng, 0, 3000, AUSTIN, (0.2, 0.2));
        entries.extend(scatter(
            &mut rng,
            10_000,
            2000,
            LatLon {
                lat: 60.0,
                lon: 25.0,
            },
            (0.3, 0.3),
        ));
        entries.extend(scatter(
            &mut rng,
            20_000,
            2000,
            LatLon {
                lat: 0.0,
                lon: -180.0,
            },
            (0.3, 0.3),
        ));
        entries.extend(scatter(
            &mut rng,
            30_000,
            300,
            LatLon {
                lat: -89.95,
                lon: 0.0,
            },
            (0.05, 180.0),
        ));
        let index = GeoIndex::bulk_load(entries.clone());
        let centres = [
            AUSTIN,
            LatLon {
                lat: 60.0,
                lon: 25.0,
            },
            LatLon {
                lat: 0.0,
                lon: 179.9,
            },
            LatLon {
                lat: 0.0,
                lon: -179.9,
            },
            LatLon {
                lat: -89.97,
                lon: 0.0,
            },
        ];
        for _ in 0..300 {
            let centre = centres[rng.random_range(0..centres.len())];
            let at = LatLon {
                lat: (centre.lat + rng.random_range(-0.1..0.1)).clamp(-90.0, 90.0),
                lon: (centre.lon + rng.random_range(-0.1..0.1)).clamp(-180.0, 180.0),
            };
            let radius_km = rng.random_range(0.1..30.0);
            let limit = if rng.random_bool(0.5) { usize::MAX } else { 25 };
            let expected = brute_force_within(&entries, at, radius_km, limit);
            let found = index.within(at, radius_km, limit);
            assert_eq!(found, expected, "at {at:?}, radius {radius_km}");
        }
    }

    #[test]
    fn many_moves_and_removals_answer_like_brute_force() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut index = GeoIndex::new();
        let mut truth: HashMap<DriverId, DriverEntry> = HashMap::new();
        for entry in scatter(&mut rng, 0, 2000, AUSTIN, (0.2, 0.2)) {
            index.upsert(entry);
            truth.insert(entry.id, entry);
        }
        for _ in 0..20_000 {
            let id = rng.random_range(0..2200);
            match rng.random_range(0..10) {
                0 => assert_eq!(index.remove(id), truth.remove(&id).is_some()),
                1 => {
                    // Same place, new availability and load.
                    if let Some(old) = truth.get(&id).copied() {
                        let changed = DriverEntry {
                            available: !old.available,
                            active_orders: rng.random_range(0..3),
                            ..old
                        };
                        index.upsert(changed);
                        truth.insert(id, changed);
                    }
                }
                _ => {
                    let base = truth.get(&id).map_or(AUSTIN, |old| old.at);
                    let moved = DriverEntry {
                        id,
                        at: LatLon {
                            lat: base.lat + rng.random_range(-0.002..0.002),
                            lon: base.lon + rng.random_range(-0.002..0.002),
                        },
                        available: rng.random_bool(0.8),
                        active_orders: rng.random_range(0..3),
                    };
                    index.upsert(moved);
                    truth.insert(id, moved);
                }
            }
        }
        assert_eq!(index.len(), truth.len());
        assert_eq!(index.tree.size(), truth.len());
        let entries: Vec<DriverEntry> = truth.values().copied().collect();
        for _ in 0..100 {
            let at = LatLon {
                lat: AUSTIN.lat + rng.random_range(-0.2..0.2),
                lon: AUSTIN.lon + rng.random_range(-0.2..0.2),
            };
            assert_eq!(
                index.nearest_available(at, 10, 5.0, 2, |_| false),
                brute_force_nearest(&entries, at, 10, 5.0, 2, |_| false)
            );
            assert_eq!(
                index.within(at, 2.0, usize::MAX),
                brute_force_within(&entries, at, 2.0, usize::MAX)
            );
        }
    }

    #[test]
    fn within_finds_drivers_across_the_antimeridian() {
        let index = GeoIndex::bulk_load(vec![
            driver(1, 0.0, 179.99),  // 1.1 km west of the query
            driver(2, 0.0, -179.98), // 2.2 km east, across the line
            driver(3, 0.0, 179.90),  // 11 km west
            driver(4, 0.0, -179.90), // 11 km east
        ]);
        let at = LatLon {
            lat: 0.0,
            lon: 180.0,
        };
        assert_eq!(ids(&index.within(at, 5.0, 10)), vec![1, 2]);
        let at = LatLon {
            lat: 0.0,
            lon: -179.99,
        };
        assert_eq!(ids(&index.within(at, 5.0, 10)), vec![2, 1]);
        assert_eq!(ids(&index.within(at, 15.0, 10)), vec![2, 1, 4, 3]);
        assert_eq!(
            ids(&index.nearest_available(at, 3, 15.0, 1, |_| false)),
            vec![2, 1, 4]
        );
    }
}
