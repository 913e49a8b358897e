//! The spatial index of online drivers: where each one is, and which are nearest to a point.
//!
//! An R-tree (rstar) over plain `[lon, lat]` degree points, plus a map from
//! driver id to the entry, so a move removes the old point without searching
//! for it. Degrees only narrow the search: every distance handed out, and
//! every order, is the haversine distance of [`crate::domain::geo::distance_km`], and
//! a search stops only when a proven lower bound says nobody left can be
//! nearer. Pure and synchronous: the `GeoIndex` actor owns one of these.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::f64::consts::FRAC_PI_2;

use rstar::{
    AABB, Envelope, RStarInsertionStrategy, RTree, RTreeNode, RTreeObject, RTreeParams,
    SelectionFunction,
};

use crate::domain::geo::distance_km;
use crate::domain::model::{DriverId, LatLon};

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
    /// Exact: the same answer as checking every driver, across the
    /// antimeridian and near the poles too (there it just searches more).
    pub fn nearest_available(
        &self,
        at: LatLon,
        k: usize,
        max_km: f64,
        max_active_orders: u32,
        exclude: impl Fn(DriverId) -> bool,
    ) -> Vec<Nearby> {
        let mut best: Vec<Nearby> = Vec::with_capacity(k.min(64));
        if k == 0 || !is_on_the_map(at) || max_km.is_nan() || max_km < 0.0 {
            return best;
        }
        // Best-first over the tree, ordered by a lower bound of the true
        // distance, so drivers are examined about nearest first and the walk
        // ends as soon as nothing left can beat the k-th best (or `max_km`).
        let mut bound = LowerBound::new(at, max_km);
        let mut pending = BinaryHeap::with_capacity(2 * NodeSizes::MAX_SIZE);
        bound.push_children(&mut pending, self.tree.root().children());
        while let Some(Pending { key, node }) = pending.pop() {
            if key > bound.stop_key {
                break;
            }
            let entry = match node {
                RTreeNode::Parent(parent) => {
                    bound.push_children(&mut pending, parent.children());
                    continue;
                }
                RTreeNode::Leaf(Placed(entry)) => entry,
            };
            if !entry.available || entry.active_orders >= max_active_orders || exclude(entry.id) {
                continue;
            }
            let found = Nearby {
                entry: *entry,
                distance_km: distance_km(at, entry.at),
            };
            // `bound.cut_off_km` is `max_km` or the k-th best so far; equal
            // to the k-th may still win on id, so only `>` is out.
            if found.distance_km > bound.cut_off_km {
                continue;
            }
            let rank = best.partition_point(|kept| nearest_first(kept, &found) == Ordering::Less);
            if rank >= k {
                continue;
            }
            best.insert(rank, found);
            best.truncate(k);
            if best.len() == k {
                bound.tighten(best[k - 1].distance_km);
            }
        }
        best
    }

    /// Every driver (available or not) within `radius_km`, nearest first
    /// (ties by id), at most `limit`.
    pub fn within(&self, at: LatLon, radius_km: f64, limit: usize) -> Vec<Nearby> {
        if limit == 0 || !is_on_the_map(at) || radius_km.is_nan() || radius_km < 0.0 {
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

    /// Puts back a driver the map knew but the tree had lost. That would be a
    /// bug in this file; healing keeps the two consistent in release builds.
    fn heal_missing_leaf(&mut self, entry: DriverEntry) {
        debug_assert!(false, "driver {} was mapped but not in the tree", entry.id);
        tracing::error!(driver_id = entry.id, "Geo index lost a driver; put it back");
        self.tree.insert(Placed(entry));
    }
}

/// Wider nodes than rstar's default (3 to 6): with a million drivers the tree
/// is a few levels shallower, so each query and move touches fewer scattered
/// nodes. Measured on the `geo_index` benchmark, 12 to 32 made moves ~10%,
/// k-nearest ~20% and 1 km radius queries ~30% faster than the default.
struct NodeSizes;

impl RTreeParams for NodeSizes {
    const MIN_SIZE: usize = 12;
    const MAX_SIZE: usize = 32;
    const REINSERTION_COUNT: usize = 8;
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

/// A tree node waiting in the best-first walk, keyed by a lower bound of the
/// distance to anything inside it (see [`LowerBound`]). Smallest key first.
struct Pending<'a> {
    key: f64,
    node: &'a RTreeNode<Placed>,
}

impl PartialEq for Pending<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Pending<'_> {}

impl PartialOrd for Pending<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending<'_> {
    // Reversed: `BinaryHeap` pops its greatest, the walk wants the nearest.
    fn cmp(&self, other: &Self) -> Ordering {
        other.key.total_cmp(&self.key)
    }
}

/// Lower bounds, in degree space, of the haversine distance from the query.
///
/// Why they hold: along any path, arc length is ∫√(dφ² + cos²φ dλ²), which
/// is at least √(Δφ² + c²·Δλ²) when cos φ ≥ c all along the path (Minkowski's
/// inequality; Δλ the longitude difference wrapped across the antimeridian).
/// A great circle of length L ≤ B from the query never leaves
/// |φ| ≤ |φ₀| + B, so with c = cos(|φ₀| + B) every driver has
/// L > B or L ≥ √(Δφ² + c²·Δλ²). Hence a key (that sum of squares, for the
/// nearest corner of a box) above B² proves everything in the box is farther
/// than B. Near a pole c is 0 and only latitude prunes: slower, still exact.
struct LowerBound {
    at: LatLon,
    /// Beyond this no driver can enter the answer: `max_km`, then the k-th best.
    cut_off_km: f64,
    /// Keys above this are farther than `cut_off_km`.
    stop_key: f64,
    /// c² for the current cut-off.
    lon_weight: f64,
}

impl LowerBound {
    fn new(at: LatLon, max_km: f64) -> LowerBound {
        let mut bound = LowerBound {
            at,
            cut_off_km: max_km,
            stop_key: f64::INFINITY,
            lon_weight: 0.0,
        };
        bound.tighten(max_km);
        bound
    }

    /// Applies a smaller cut-off. Keys already computed with the older, smaller
    /// c stay valid (only weaker), and a child's key never drops below its
    /// parent's, so the walk stays best-first.
    fn tighten(&mut self, cut_off_km: f64) {
        let reach = angular_reach(cut_off_km);
        let widest_latitude = (self.at.lat.abs().to_radians() + reach).min(FRAC_PI_2);
        let c = widest_latitude.cos().max(0.0);
        self.cut_off_km = cut_off_km;
        self.stop_key = reach.to_degrees() * reach.to_degrees();
        self.lon_weight = c * c;
    }

    fn key(&self, d_lat: f64, d_lon: f64) -> f64 {
        d_lat * d_lat + self.lon_weight * d_lon * d_lon
    }

    fn key_of_box(&self, envelope: &AABB<[f64; 2]>) -> f64 {
        let ([west, south], [east, north]) = (envelope.lower(), envelope.upper());
        let d_lat = gap(self.at.lat, south, north);
        // The query seen from one turn either side too, for boxes across
        // the antimeridian.
        let d_lon = gap(self.at.lon, west, east)
            .min(gap(self.at.lon - 360.0, west, east))
            .min(gap(self.at.lon + 360.0, west, east));
        self.key(d_lat, d_lon)
    }

    fn key_of_point(&self, at: LatLon) -> f64 {
        let d_lon = (at.lon - self.at.lon).abs();
        self.key(at.lat - self.at.lat, d_lon.min(360.0 - d_lon))
    }

    /// Queues the children that could still hold an answer.
    fn push_children<'a>(
        &self,
        pending: &mut BinaryHeap<Pending<'a>>,
        children: &'a [RTreeNode<Placed>],
    ) {
        for node in children {
            let key = match node {
                RTreeNode::Parent(parent) => self.key_of_box(&parent.envelope()),
                RTreeNode::Leaf(placed) => self.key_of_point(placed.0.at),
            };
            if key <= self.stop_key {
                pending.push(Pending { key, node });
            }
        }
    }
}

/// Distance from `x` to the interval [`low`, `high`] on one axis.
fn gap(x: f64, low: f64, high: f64) -> f64 {
    (low - x).max(x - high).max(0.0)
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
        // No radius limit at all still answers, in the same order.
        assert_eq!(
            ids(&index.nearest_available(at, 3, f64::INFINITY, 1, |_| false)),
            vec![3, 2, 1]
        );
        assert_eq!(ids(&index.within(at, f64::INFINITY, 10)), vec![3, 2, 1]);
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
