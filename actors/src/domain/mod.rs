//! The pure core: records, rules and policies, with no actors and no I/O.

pub mod arrival;
pub mod dispatch;
pub mod eta;
pub mod events;
pub mod geo;
pub mod geo_index;
pub mod input;
pub mod lifecycle;
pub mod model;
pub mod pricing;
pub mod quote;
pub mod zone;
