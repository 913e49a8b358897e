//! The project's own checker of a solution folder against its instance:
//! every rule of `../shared/mdrp/README.md`, including the ones the public
//! evaluator skips (half service times, one restaurant per bundle, the
//! maximum click-to-door of delivered orders). It reads the files back, so
//! it checks what the evaluator would read, not what the replay meant.

use super::instance::{Instance, Point};
use anyhow::{Context, bail};
use std::collections::HashMap;
use std::path::Path;

/// One parsed line of `solution_info_assignments.txt`.
struct Assignment {
    line: usize,
    assigned: i64,
    pickup: i64,
    courier: usize,
    orders: Vec<usize>,
}

struct Delivered {
    line: usize,
    placed: i64,
    ready: i64,
    pickup: i64,
    dropoff: i64,
    courier: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Start,
    Restaurant(usize),
    Order(usize),
}

struct Step {
    line: usize,
    courier: usize,
    departure: i64,
    origin: Place,
    destination: Place,
}

fn lines(path: &Path) -> anyhow::Result<Vec<(usize, Vec<String>)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .enumerate()
        .skip(1)
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l.split(' ').map(str::to_owned).collect()))
        .collect())
}

fn int(file: &str, line: usize, text: &str) -> anyhow::Result<i64> {
    text.parse()
        .with_context(|| format!("{file}:{line}: {text:?} is not a whole minute"))
}

/// Every rule the solution in `dir` breaks (empty: feasible). An error only
/// when a file cannot be read or parsed at all.
pub fn check_dir(instance: &Instance, dir: &Path) -> anyhow::Result<Vec<String>> {
    let courier_of: HashMap<&str, usize> = instance
        .couriers
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let order_of: HashMap<&str, usize> = instance
        .orders
        .iter()
        .enumerate()
        .map(|(i, o)| (o.name.as_str(), i))
        .collect();
    let restaurant_of: HashMap<&str, usize> = instance
        .restaurants
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();
    let courier = |file: &str, line: usize, name: &str| {
        courier_of
            .get(name)
            .copied()
            .with_context(|| format!("{file}:{line}: unknown courier {name}"))
    };
    let order = |file: &str, line: usize, name: &str| {
        order_of
            .get(name)
            .copied()
            .with_context(|| format!("{file}:{line}: unknown order {name}"))
    };

    let file = "solution_info_assignments.txt";
    let mut assignments = Vec::new();
    for (line, f) in lines(&dir.join(file))? {
        if f.len() < 4 {
            bail!("{file}:{line}: expected assignment_time pickup_time courier order...");
        }
        assignments.push(Assignment {
            line,
            assigned: int(file, line, &f[0])?,
            pickup: int(file, line, &f[1])?,
            courier: courier(file, line, &f[2])?,
            orders: f[3..]
                .iter()
                .map(|o| order(file, line, o))
                .collect::<anyhow::Result<_>>()?,
        });
    }
    let file = "solution_info_orders.txt";
    let mut delivered: HashMap<usize, Delivered> = HashMap::new();
    let mut violations = Vec::new();
    let header =
        std::fs::read_to_string(dir.join(file)).with_context(|| format!("cannot read {file}"))?;
    let header = header.lines().next().unwrap_or_default();
    if header != "order placement_time ready_time pickup_time dropoff_time courier" {
        violations.push(format!(
            "{file}:1: header {header:?} is not the evaluator's"
        ));
    }
    for (line, f) in lines(&dir.join(file))? {
        if f.len() != 6 {
            violations.push(format!(
                "{file}:{line}: {} fields separated by single spaces, expected 6",
                f.len()
            ));
            continue;
        }
        let o = order(file, line, &f[0])?;
        let record = Delivered {
            line,
            placed: int(file, line, &f[1])?,
            ready: int(file, line, &f[2])?,
            pickup: int(file, line, &f[3])?,
            dropoff: int(file, line, &f[4])?,
            courier: courier(file, line, &f[5])?,
        };
        if delivered.insert(o, record).is_some() {
            violations.push(format!("{file}:{line}: order {} delivered twice", f[0]));
        }
    }
    let file = "solution_info_couriers.txt";
    let mut steps = Vec::new();
    for (line, f) in lines(&dir.join(file))? {
        if f.len() != 4 {
            bail!("{file}:{line}: expected courier departure_time origin destination");
        }
        let place = |name: &str| -> anyhow::Result<Place> {
            if name == "0" {
                Ok(Place::Start)
            } else if let Some(r) = restaurant_of.get(name) {
                Ok(Place::Restaurant(*r))
            } else {
                Ok(Place::Order(order(file, line, name)?))
            }
        };
        steps.push(Step {
            line,
            courier: courier(file, line, &f[0])?,
            departure: int(file, line, &f[1])?,
            origin: place(&f[2])?,
            destination: place(&f[3])?,
        });
    }
    check(instance, &assignments, &delivered, &steps, &mut violations);
    Ok(violations)
}

fn check(
    instance: &Instance,
    assignments: &[Assignment],
    delivered: &HashMap<usize, Delivered>,
    steps: &[Step],
    violations: &mut Vec<String>,
) {
    let a_file = "solution_info_assignments.txt";
    let o_file = "solution_info_orders.txt";
    let c_file = "solution_info_couriers.txt";
    let half_p = instance.half_pickup();
    let half_d = instance.half_dropoff();
    let max = instance.params.max_click_to_door;
    let mut v = |text: String| violations.push(text);

    // Assignments: each order at most once, not before placement, one
    // restaurant per bundle, pickup not before any ready time nor after
    // the off-time, and the orders file agreeing.
    let mut assigned_in: HashMap<usize, usize> = HashMap::new();
    for (i, a) in assignments.iter().enumerate() {
        let duty = &instance.couriers[a.courier];
        let restaurant = instance.orders[a.orders[0]].restaurant;
        if a.pickup > duty.off {
            v(format!(
                "{a_file}:{}: pickup {} after the courier's off-time {}",
                a.line, a.pickup, duty.off
            ));
        }
        if a.assigned < duty.on {
            v(format!(
                "{a_file}:{}: assigned at {} before the courier's on-time {}",
                a.line, a.assigned, duty.on
            ));
        }
        for &o in &a.orders {
            let order = &instance.orders[o];
            if assigned_in.insert(o, i).is_some() {
                v(format!(
                    "{a_file}:{}: order {} assigned twice",
                    a.line, order.name
                ));
            }
            if a.assigned < order.placed {
                v(format!(
                    "{a_file}:{}: order {} assigned at {} before its placement {}",
                    a.line, order.name, a.assigned, order.placed
                ));
            }
            if order.restaurant != restaurant {
                v(format!("{a_file}:{}: bundle mixes restaurants", a.line));
            }
            if a.pickup < order.ready {
                v(format!(
                    "{a_file}:{}: pickup {} before order {} is ready at {}",
                    a.line, a.pickup, order.name, order.ready
                ));
            }
            match delivered.get(&o) {
                None => v(format!(
                    "{a_file}:{}: order {} assigned but not in {o_file}",
                    a.line, order.name
                )),
                Some(d) => {
                    if d.pickup != a.pickup || d.courier != a.courier {
                        v(format!(
                            "{o_file}:{}: order {} pickup/courier disagree with {a_file}:{}",
                            d.line, order.name, a.line
                        ));
                    }
                }
            }
        }
    }
    for (o, d) in delivered {
        let order = &instance.orders[*o];
        if !assigned_in.contains_key(o) {
            v(format!(
                "{o_file}:{}: order {} delivered without an assignment",
                d.line, order.name
            ));
        }
        if d.placed != order.placed || d.ready != order.ready {
            v(format!(
                "{o_file}:{}: order {} placement/ready times are not the instance's",
                d.line, order.name
            ));
        }
        if d.dropoff - order.placed > max {
            v(format!(
                "{o_file}:{}: order {} click-to-door {} over the maximum {max}",
                d.line,
                order.name,
                d.dropoff - order.placed
            ));
        }
        if d.dropoff < d.pickup {
            v(format!(
                "{o_file}:{}: order {} dropped off before its pickup",
                d.line, order.name
            ));
        }
    }

    // Moves: contiguous per courier, continuous in space and time, and
    // matching the courier's bundles in sequence.
    let mut bundles_of: HashMap<usize, Vec<&Assignment>> = HashMap::new();
    for a in assignments {
        bundles_of.entry(a.courier).or_default().push(a);
    }
    for list in bundles_of.values_mut() {
        list.sort_by_key(|a| (a.pickup, a.line));
    }
    let mut seen_couriers = std::collections::HashSet::new();
    let mut i = 0;
    while i < steps.len() {
        let c = steps[i].courier;
        let j = i + steps[i..].iter().take_while(|s| s.courier == c).count();
        if !seen_couriers.insert(c) {
            v(format!(
                "{c_file}:{}: courier {}'s moves are not contiguous",
                steps[i].line, instance.couriers[c].name
            ));
        }
        check_courier(
            instance,
            c,
            &steps[i..j],
            bundles_of.get(&c).map_or(&[][..], Vec::as_slice),
            delivered,
            &mut v,
            half_p,
            half_d,
        );
        i = j;
    }
    for (c, list) in &bundles_of {
        if !seen_couriers.contains(c) && !list.is_empty() {
            v(format!(
                "{a_file}:{}: courier {} has bundles but no moves",
                list[0].line, instance.couriers[*c].name
            ));
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check_courier(
    instance: &Instance,
    c: usize,
    steps: &[Step],
    bundles: &[&Assignment],
    delivered: &HashMap<usize, Delivered>,
    v: &mut impl FnMut(String),
    half_p: i64,
    half_d: i64,
) {
    let c_file = "solution_info_couriers.txt";
    let duty = &instance.couriers[c];
    let name = &duty.name;
    // Where the courier is and when it may leave.
    let mut place = Place::Start;
    let mut at: Point = duty.at;
    let mut may_leave = duty.on;
    let mut last_dropoff: Option<i64> = None;
    let mut bundle = 0usize;
    let mut position_in_bundle: Option<usize> = None;
    for s in steps {
        if s.origin != place {
            v(format!(
                "{c_file}:{}: courier {name} leaves from {:?} but is at {:?}",
                s.line, s.origin, place
            ));
        }
        if s.departure < may_leave {
            v(format!(
                "{c_file}:{}: courier {name} departs at {} before it may leave at {may_leave}",
                s.line, s.departure
            ));
        }
        let arrival = |to: Point| s.departure + instance.travel(at, to);
        match s.destination {
            Place::Start => v(format!(
                "{c_file}:{}: a move back to the start point",
                s.line
            )),
            Place::Restaurant(r) => {
                if let Some(k) = position_in_bundle
                    && k < bundles[bundle - 1].orders.len()
                {
                    v(format!(
                        "{c_file}:{}: courier {name} goes to a restaurant before finishing its bundle",
                        s.line
                    ));
                }
                let Some(a) = bundles.get(bundle) else {
                    v(format!(
                        "{c_file}:{}: courier {name} goes to a restaurant without a bundle",
                        s.line
                    ));
                    return;
                };
                if instance.orders[a.orders[0]].restaurant != r {
                    v(format!(
                        "{c_file}:{}: courier {name} goes to the wrong restaurant for its bundle",
                        s.line
                    ));
                }
                if s.departure < a.assigned {
                    v(format!(
                        "{c_file}:{}: courier {name} leaves for a bundle before it was assigned",
                        s.line
                    ));
                }
                let there = instance.restaurants[r].at;
                if a.pickup < arrival(there) + half_p {
                    v(format!(
                        "{c_file}:{}: pickup {} less than half a service time after arrival {}",
                        s.line,
                        a.pickup,
                        arrival(there)
                    ));
                }
                at = there;
                may_leave = a.pickup + half_p;
                bundle += 1;
                position_in_bundle = Some(0);
                last_dropoff = None;
            }
            Place::Order(o) => {
                let (Some(k), Some(a)) = (
                    position_in_bundle,
                    bundle.checked_sub(1).and_then(|b| bundles.get(b)),
                ) else {
                    v(format!(
                        "{c_file}:{}: courier {name} drives to a customer before any pickup",
                        s.line
                    ));
                    return;
                };
                if a.orders.get(k) != Some(&o) {
                    v(format!(
                        "{c_file}:{}: drop-off {} out of the bundle's sequence",
                        s.line, instance.orders[o].name
                    ));
                }
                let there = instance.orders[o].at;
                let Some(d) = delivered.get(&o) else {
                    v(format!(
                        "{c_file}:{}: drives to order {} which is not delivered",
                        s.line, instance.orders[o].name
                    ));
                    return;
                };
                if d.courier != c {
                    v(format!(
                        "{c_file}:{}: order {} delivered by another courier",
                        s.line, instance.orders[o].name
                    ));
                }
                if d.dropoff < arrival(there) + half_d {
                    v(format!(
                        "{c_file}:{}: drop-off {} less than half a service time after arrival {}",
                        s.line,
                        d.dropoff,
                        arrival(there)
                    ));
                }
                if let Some(prev) = last_dropoff
                    && d.dropoff - prev < instance.params.dropoff_service
                {
                    v(format!(
                        "{c_file}:{}: drop-offs {prev} and {} less than a service time apart",
                        s.line, d.dropoff
                    ));
                }
                at = there;
                may_leave = d.dropoff + half_d;
                last_dropoff = Some(d.dropoff);
                position_in_bundle = Some(k + 1);
            }
        }
        place = s.destination;
    }
    if let Some(k) = position_in_bundle
        && bundle > 0
        && k < bundles[bundle - 1].orders.len()
    {
        v(format!(
            "{c_file}: courier {name}'s last bundle is not finished"
        ));
    }
    if bundle < bundles.len() {
        v(format!(
            "{c_file}: courier {name} never goes to {} of its bundles",
            bundles.len() - bundle
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::instance::{Courier, Order, Parameters, Restaurant};
    use crate::replay::solution::{Bundle, Delivery, Move, Solution, Stop};

    /// Two restaurants 640 m apart (2 minutes at 320 m/min), three orders,
    /// one courier at the first restaurant.
    fn instance() -> Instance {
        let p = |x: f64| Point { x, y: 0.0 };
        let order = |name: &str, x: f64, restaurant: usize| Order {
            name: name.into(),
            at: p(x),
            placed: 0,
            restaurant,
            ready: 10,
        };
        Instance {
            name: "tiny".into(),
            restaurants: vec![
                Restaurant {
                    name: "r1".into(),
                    at: p(0.0),
                },
                Restaurant {
                    name: "r2".into(),
                    at: p(640.0),
                },
            ],
            orders: vec![
                order("o1", 320.0, 0),
                order("o2", 960.0, 0),
                order("o3", 960.0, 1),
            ],
            couriers: vec![Courier {
                name: "c1".into(),
                at: p(0.0),
                on: 0,
                off: 100,
            }],
            params: Parameters {
                metres_per_minute: 320.0,
                pickup_service: 4,
                dropoff_service: 4,
                target_click_to_door: 40,
                max_click_to_door: 90,
            },
        }
    }

    /// o1 and o2 bundled: pickup at 10 (arrived 0 + 2), leave 12, o1 at 13
    /// (+2 = 15), leave 17, o2 at 19 (+2 = 21).
    fn feasible() -> Solution {
        Solution {
            bundles: vec![Bundle {
                assigned: 0,
                pickup: 10,
                courier: 0,
                orders: vec![0, 1],
            }],
            deliveries: vec![
                Delivery {
                    order: 0,
                    pickup: 10,
                    dropoff: 15,
                    courier: 0,
                },
                Delivery {
                    order: 1,
                    pickup: 10,
                    dropoff: 21,
                    courier: 0,
                },
            ],
            moves: vec![
                Move {
                    courier: 0,
                    departure: 0,
                    origin: Stop::Start,
                    destination: Stop::Restaurant(0),
                },
                Move {
                    courier: 0,
                    departure: 12,
                    origin: Stop::Restaurant(0),
                    destination: Stop::Order(0),
                },
                Move {
                    courier: 0,
                    departure: 17,
                    origin: Stop::Order(0),
                    destination: Stop::Order(1),
                },
            ],
        }
    }

    fn violations(solution: &Solution) -> Vec<String> {
        let instance = instance();
        let dir = std::env::temp_dir().join(format!(
            "dispatchd-check-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        solution.write(&instance, &dir).expect("written");
        let found = check_dir(&instance, &dir).expect("readable");
        let _ = std::fs::remove_dir_all(&dir);
        found
    }

    #[test]
    fn a_feasible_bundle_passes() {
        assert_eq!(violations(&feasible()), Vec::<String>::new());
    }

    #[test]
    fn each_broken_rule_is_reported() {
        type Breakage = Box<dyn Fn(&mut Solution)>;
        let cases: Vec<(&str, Breakage)> = vec![
            (
                "pickup before ready",
                Box::new(|s| {
                    s.bundles[0].pickup = 9;
                    s.deliveries.iter_mut().for_each(|d| d.pickup = 9);
                }),
            ),
            (
                "half pickup service",
                Box::new(|s| {
                    // Arrival at 2 if it leaves at 0; leaving at 9 arrives 11,
                    // so a pickup at 10 skips the half service time.
                    s.moves[0].departure = 9;
                }),
            ),
            (
                "half drop-off service",
                Box::new(|s| s.deliveries[0].dropoff = 14),
            ),
            (
                "drop-offs a service apart",
                Box::new(|s| {
                    s.moves[2].departure = 15;
                    s.deliveries[1].dropoff = 18;
                }),
            ),
            (
                "one restaurant per bundle",
                Box::new(|s| {
                    s.bundles[0].orders[1] = 2;
                    s.deliveries[1].order = 2;
                    s.moves[2].destination = Stop::Order(2);
                }),
            ),
            (
                "the maximum click-to-door",
                Box::new(|s| {
                    s.deliveries[1].dropoff = 91;
                }),
            ),
            (
                "assigned before placement",
                Box::new(|s| s.bundles[0].assigned = -1),
            ),
            (
                "assigned twice",
                Box::new(|s| {
                    s.bundles.push(Bundle {
                        assigned: 30,
                        pickup: 40,
                        courier: 0,
                        orders: vec![0],
                    });
                }),
            ),
            (
                "pickup after off-time",
                Box::new(|s| {
                    s.bundles[0].pickup = 101;
                    s.deliveries.iter_mut().for_each(|d| d.pickup = 101);
                }),
            ),
            (
                "moves not continuous",
                Box::new(|s| s.moves[2].origin = Stop::Restaurant(0)),
            ),
            (
                "delivered without assignment",
                Box::new(|s| {
                    s.deliveries.push(Delivery {
                        order: 2,
                        pickup: 10,
                        dropoff: 30,
                        courier: 0,
                    });
                }),
            ),
        ];
        for (rule, break_it) in cases {
            let mut s = feasible();
            break_it(&mut s);
            assert!(!violations(&s).is_empty(), "{rule} went unnoticed");
        }
    }
}
