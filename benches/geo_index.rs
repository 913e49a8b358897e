//! Benchmarks of the geo index's hot paths with a million drivers in one city:
//! a driver moving, the dispatcher's k-nearest query, and a 1 km radius query.

use std::hint::black_box;

use actors::domain::geo_index::{DriverEntry, GeoIndex};
use actors::domain::model::LatLon;
use criterion::{Criterion, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DRIVERS: usize = 1_000_000;
const CENTRE: LatLon = LatLon {
    lat: 30.27,
    lon: -97.74,
};
/// Half the side of the ~40 km x 40 km square: 20 km north-south in degrees
/// of latitude, and the same ground distance east-west at this latitude.
const HALF_SIDE_LAT: f64 = 0.18;
const HALF_SIDE_LON: f64 = 0.208;
/// Precomputed inputs, cycled, so the timed loops measure the index and not
/// the random number generator.
const SAMPLES: usize = 1 << 16;

fn random_point(rng: &mut StdRng) -> LatLon {
    LatLon {
        lat: CENTRE.lat + rng.random_range(-HALF_SIDE_LAT..HALF_SIDE_LAT),
        lon: CENTRE.lon + rng.random_range(-HALF_SIDE_LON..HALF_SIDE_LON),
    }
}

/// One city's drivers: ~20% unavailable, loads 0 to 2 (2 is full at the
/// dispatcher's limit), ids unrelated to position.
fn city(rng: &mut StdRng) -> Vec<DriverEntry> {
    (0..DRIVERS)
        .map(|id| DriverEntry {
            id: id as i64,
            at: random_point(rng),
            available: rng.random_bool(0.8),
            active_orders: rng.random_range(0..3),
        })
        .collect()
}

fn geo_index(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(42);
    let drivers = city(&mut rng);
    let mut index = GeoIndex::bulk_load(drivers.clone());
    let queries: Vec<LatLon> = (0..SAMPLES).map(|_| random_point(&mut rng)).collect();
    // A location update lands up to ~70 m from the driver's last position.
    let steps: Vec<(f64, f64)> = (0..SAMPLES)
        .map(|_| {
            (
                rng.random_range(-0.0005..0.0005),
                rng.random_range(-0.0005..0.0005),
            )
        })
        .collect();

    let mut next_move = 0usize;
    c.bench_function("move", |b| {
        b.iter(|| {
            // Walk the drivers in id order, which is random in space, as
            // updates from a whole fleet would be.
            let driver = drivers[next_move % DRIVERS];
            let (d_lat, d_lon) = steps[next_move % SAMPLES];
            next_move += 1;
            index.upsert(DriverEntry {
                at: LatLon {
                    lat: driver.at.lat + d_lat,
                    lon: driver.at.lon + d_lon,
                },
                ..driver
            });
        })
    });

    // The queries run on the tree as the moves left it, not as bulk-loaded,
    // which is the shape a live index has.
    let mut next_query = 0usize;
    c.bench_function("nearest_available_k10", |b| {
        b.iter(|| {
            let at = queries[next_query % SAMPLES];
            next_query += 1;
            black_box(index.nearest_available(at, 10, 5.0, 2, |_| false))
        })
    });

    let mut next_query = 0usize;
    c.bench_function("within_1km", |b| {
        b.iter(|| {
            let at = queries[next_query % SAMPLES];
            next_query += 1;
            // A map view's worth of the ~2,000 drivers inside 1 km here.
            black_box(index.within(at, 1.0, 100))
        })
    });
}

/// The busy city that made the geo actor keep a second tree: 20,000 drivers
/// of whom 5% may take an offer. A dispatch query for 8 available drivers
/// within 5 km, on the tree of every driver (skipping the busy ones) and on
/// the tree of available drivers only (what `GeoMessage::Candidates` walks).
fn busy_city(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(7);
    let near = |rng: &mut StdRng| LatLon {
        lat: CENTRE.lat + rng.random_range(-0.09..0.09),
        lon: CENTRE.lon + rng.random_range(-0.1..0.1),
    };
    let drivers: Vec<DriverEntry> = (0..20_000)
        .map(|id| DriverEntry {
            id,
            at: near(&mut rng),
            available: rng.random_bool(0.05),
            active_orders: rng.random_range(0..2),
        })
        .collect();
    let everyone = GeoIndex::bulk_load(drivers.clone());
    let available = GeoIndex::bulk_load(drivers.into_iter().filter(|d| d.available).collect());
    let queries: Vec<LatLon> = (0..SAMPLES).map(|_| near(&mut rng)).collect();
    for (name, index) in [
        ("busy_city_k8_every_driver", &everyone),
        ("busy_city_k8_available_only", &available),
    ] {
        let mut next_query = 0usize;
        c.bench_function(name, |b| {
            b.iter(|| {
                let at = queries[next_query % SAMPLES];
                next_query += 1;
                black_box(index.nearest_available(at, 8, 5.0, 2, |_| false))
            })
        });
    }
}

criterion_group!(benches, geo_index, busy_city);
criterion_main!(benches);
