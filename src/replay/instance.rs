//! One Meal Delivery Routing Problem instance (the Grubhub format of
//! `../shared/mdrp/README.md`): restaurants, orders, couriers and the
//! parameters, read from the tab-separated files of a folder, with the
//! problem's travel rule. Times are whole minutes, places metres.

use anyhow::{Context, bail};
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

#[derive(Debug, Clone)]
pub struct Restaurant {
    pub name: String,
    pub at: Point,
}

#[derive(Debug, Clone)]
pub struct Order {
    pub name: String,
    pub at: Point,
    pub placed: i64,
    /// Index into [`Instance::restaurants`].
    pub restaurant: usize,
    pub ready: i64,
}

#[derive(Debug, Clone)]
pub struct Courier {
    pub name: String,
    pub at: Point,
    pub on: i64,
    pub off: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Parameters {
    pub metres_per_minute: f64,
    pub pickup_service: i64,
    pub dropoff_service: i64,
    pub target_click_to_door: i64,
    pub max_click_to_door: i64,
}

#[derive(Debug, Clone)]
pub struct Instance {
    pub name: String,
    pub restaurants: Vec<Restaurant>,
    pub orders: Vec<Order>,
    pub couriers: Vec<Courier>,
    pub params: Parameters,
}

/// Files larger than this are refused: the largest public instance is a
/// few hundred kilobytes.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

impl Instance {
    /// Reads the instance in `dir`; every malformed line is an error that
    /// names its file and line.
    pub fn read(dir: &Path) -> anyhow::Result<Instance> {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "instance".into());
        let params = read_parameters(&dir.join("instance_parameters.txt"))?;
        let mut restaurants = Vec::new();
        let mut restaurant_index = HashMap::new();
        for (line, fields) in rows(&dir.join("restaurants.txt"), 3)? {
            let at = point(&fields[1..3]).with_context(|| format!("restaurants.txt:{line}"))?;
            if restaurant_index
                .insert(fields[0].clone(), restaurants.len())
                .is_some()
            {
                bail!("restaurants.txt:{line}: restaurant {} twice", fields[0]);
            }
            restaurants.push(Restaurant {
                name: fields[0].clone(),
                at,
            });
        }
        let mut orders = Vec::new();
        let mut names = HashMap::new();
        for (line, fields) in rows(&dir.join("orders.txt"), 6)? {
            let context = || format!("orders.txt:{line}");
            let at = point(&fields[1..3]).with_context(context)?;
            let placed = minutes(&fields[3]).with_context(context)?;
            let Some(&restaurant) = restaurant_index.get(&fields[4]) else {
                bail!("orders.txt:{line}: unknown restaurant {}", fields[4]);
            };
            let ready = minutes(&fields[5]).with_context(context)?;
            if names.insert(fields[0].clone(), ()).is_some() {
                bail!("orders.txt:{line}: order {} twice", fields[0]);
            }
            orders.push(Order {
                name: fields[0].clone(),
                at,
                placed,
                restaurant,
                ready,
            });
        }
        let mut couriers = Vec::new();
        for (line, fields) in rows(&dir.join("couriers.txt"), 5)? {
            let context = || format!("couriers.txt:{line}");
            let at = point(&fields[1..3]).with_context(context)?;
            let on = minutes(&fields[3]).with_context(context)?;
            let off = minutes(&fields[4]).with_context(context)?;
            if off < on {
                bail!("couriers.txt:{line}: off_time before on_time");
            }
            couriers.push(Courier {
                name: fields[0].clone(),
                at,
                on,
                off,
            });
        }
        Ok(Instance {
            name,
            restaurants,
            orders,
            couriers,
            params,
        })
    }

    /// Whole minutes between two points: the problem's rule.
    pub fn travel(&self, a: Point, b: Point) -> i64 {
        let metres = ((a.x - b.x).powi(2) + (a.y - b.y).powi(2)).sqrt();
        (metres / self.params.metres_per_minute).ceil() as i64
    }

    /// The minutes a courier spends at a stop before the pickup or drop-off,
    /// and again after it: half the service time (rounded up, so an odd
    /// service time still gives the whole time between arrival and leaving).
    pub fn half_pickup(&self) -> i64 {
        (self.params.pickup_service + 1) / 2
    }

    pub fn half_dropoff(&self) -> i64 {
        (self.params.dropoff_service + 1) / 2
    }
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > MAX_FILE_BYTES {
        bail!("{} is larger than {MAX_FILE_BYTES} bytes", path.display());
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The data lines (after the header) of a tab-separated file, with their
/// line numbers; each must have at least `fields` fields.
fn rows(path: &Path, fields: usize) -> anyhow::Result<Vec<(usize, Vec<String>)>> {
    let text = read_text(path)?;
    let file = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let file = file.unwrap_or_default();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let parts: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        if parts.len() < fields {
            bail!(
                "{file}:{}: {} fields, expected {fields}",
                i + 1,
                parts.len()
            );
        }
        out.push((i + 1, parts));
    }
    Ok(out)
}

fn number(text: &str) -> anyhow::Result<f64> {
    let value: f64 = text
        .parse()
        .with_context(|| format!("{text:?} is not a number"))?;
    if !value.is_finite() || value.abs() > 1e9 {
        bail!("{text:?} is out of range");
    }
    Ok(value)
}

fn point(fields: &[String]) -> anyhow::Result<Point> {
    Ok(Point {
        x: number(&fields[0])?,
        y: number(&fields[1])?,
    })
}

fn minutes(text: &str) -> anyhow::Result<i64> {
    let value = number(text)?;
    if value.fract() != 0.0 {
        bail!("{text:?} is not a whole minute");
    }
    Ok(value as i64)
}

fn read_parameters(path: &Path) -> anyhow::Result<Parameters> {
    let rows = rows(path, 5)?;
    let Some((line, fields)) = rows.first() else {
        bail!("{}: no parameter line", path.display());
    };
    let context = || format!("instance_parameters.txt:{line}");
    let params = Parameters {
        metres_per_minute: number(&fields[0]).with_context(context)?,
        pickup_service: minutes(&fields[1]).with_context(context)?,
        dropoff_service: minutes(&fields[2]).with_context(context)?,
        target_click_to_door: minutes(&fields[3]).with_context(context)?,
        max_click_to_door: minutes(&fields[4]).with_context(context)?,
    };
    if params.metres_per_minute <= 0.0 || params.pickup_service < 0 || params.dropoff_service < 0 {
        bail!(
            "instance_parameters.txt:{line}: speed must be positive and service times not negative"
        );
    }
    Ok(params)
}
