//! A replay's solution: the bundles, deliveries and courier moves, the three
//! files the public evaluator reads (format in `../shared/mdrp/README.md`),
//! and the metrics of the table.

use super::instance::Instance;
use anyhow::Context;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// Where a move starts or ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The courier's start point.
    Start,
    Restaurant(usize),
    /// An order's drop-off point.
    Order(usize),
}

/// One courier trip to a restaurant and its drop-offs.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    pub assigned: i64,
    pub pickup: i64,
    pub courier: usize,
    /// In drop-off sequence.
    pub orders: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub order: usize,
    pub pickup: i64,
    pub dropoff: i64,
    pub courier: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    pub courier: usize,
    pub departure: i64,
    pub origin: Stop,
    pub destination: Stop,
}

#[derive(Debug, Clone, Default)]
pub struct Solution {
    pub bundles: Vec<Bundle>,
    pub deliveries: Vec<Delivery>,
    /// Each courier's moves contiguous and in the order they happen.
    pub moves: Vec<Move>,
}

/// The metrics of one replay (units of the instance: minutes).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub instance: String,
    pub orders: usize,
    pub delivered: usize,
    pub click_to_door_min: Spread,
    pub ready_to_pickup_min: Mean,
    /// Delivered after the target, or not delivered, of all orders.
    pub over_target_share: f64,
    pub orders_per_bundle: f64,
    /// Orders flagged hopeless (no courier could deliver them within the
    /// maximum) and left undelivered.
    pub hopeless: usize,
    pub couriers_used: usize,
    pub wall_secs: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    pub mean: f64,
    pub p90: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Mean {
    pub mean: f64,
}

fn name_of(instance: &Instance, stop: Stop) -> &str {
    match stop {
        Stop::Start => "0",
        Stop::Restaurant(r) => &instance.restaurants[r].name,
        Stop::Order(o) => &instance.orders[o].name,
    }
}

impl Solution {
    /// Writes the three solution files into `dir` (created if missing).
    pub fn write(&self, instance: &Instance, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut text = String::from("assignment_time pickup_time courier orders\n");
        for b in &self.bundles {
            let _ = write!(
                text,
                "{} {} {}",
                b.assigned, b.pickup, instance.couriers[b.courier].name
            );
            for o in &b.orders {
                let _ = write!(text, " {}", instance.orders[*o].name);
            }
            text.push('\n');
        }
        write_file(&dir.join("solution_info_assignments.txt"), &text)?;

        let mut text =
            String::from("order placement_time ready_time pickup_time dropoff_time courier\n");
        for d in &self.deliveries {
            let order = &instance.orders[d.order];
            let _ = writeln!(
                text,
                "{} {} {} {} {} {}",
                order.name,
                order.placed,
                order.ready,
                d.pickup,
                d.dropoff,
                instance.couriers[d.courier].name
            );
        }
        write_file(&dir.join("solution_info_orders.txt"), &text)?;

        let mut text = String::from("courier departure_time origin destination\n");
        for m in &self.moves {
            let _ = writeln!(
                text,
                "{} {} {} {}",
                instance.couriers[m.courier].name,
                m.departure,
                name_of(instance, m.origin),
                name_of(instance, m.destination)
            );
        }
        write_file(&dir.join("solution_info_couriers.txt"), &text)
    }

    /// The table's metrics.
    pub fn report(&self, instance: &Instance, hopeless: usize, wall_secs: f64) -> Report {
        let mut click: Vec<i64> = self
            .deliveries
            .iter()
            .map(|d| d.dropoff - instance.orders[d.order].placed)
            .collect();
        click.sort_unstable();
        let delivered = click.len();
        let mean = |values: &mut dyn Iterator<Item = i64>, n: usize| {
            if n == 0 {
                0.0
            } else {
                values.sum::<i64>() as f64 / n as f64
            }
        };
        let p90 = if delivered == 0 {
            0.0
        } else {
            // Nearest rank.
            click[((0.9 * delivered as f64).ceil() as usize).clamp(1, delivered) - 1] as f64
        };
        let target = instance.params.target_click_to_door;
        let late =
            click.iter().filter(|c| **c > target).count() + instance.orders.len() - delivered;
        let mut couriers: Vec<usize> = self.bundles.iter().map(|b| b.courier).collect();
        couriers.sort_unstable();
        couriers.dedup();
        Report {
            instance: instance.name.clone(),
            orders: instance.orders.len(),
            delivered,
            click_to_door_min: Spread {
                mean: mean(&mut click.iter().copied(), delivered),
                p90,
                max: click.last().copied().unwrap_or(0) as f64,
            },
            ready_to_pickup_min: Mean {
                mean: mean(
                    &mut self
                        .deliveries
                        .iter()
                        .map(|d| d.pickup - instance.orders[d.order].ready),
                    delivered,
                ),
            },
            over_target_share: if instance.orders.is_empty() {
                0.0
            } else {
                late as f64 / instance.orders.len() as f64
            },
            orders_per_bundle: if self.bundles.is_empty() {
                0.0
            } else {
                delivered as f64 / self.bundles.len() as f64
            },
            hopeless,
            couriers_used: couriers.len(),
            wall_secs,
        }
    }
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
