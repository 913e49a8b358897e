//! Arrival events (geofences around a trip's next stop): `driver_approaching`
//! once the driver is within a distance or a travel time of it, and
//! `driver_arrived` once it has stayed within a smaller radius for a few
//! seconds. Each fires at most once per stop, so GPS jitter around either
//! radius cannot make them flap: leaving the arrival radius before the
//! dwell time is up restarts the wait only past a wider leave radius.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArrivalRules {
    /// `driver_approaching` within this many metres...
    pub approach_m: f64,
    /// ...or this many seconds of travel.
    pub approach_secs: f64,
    /// `driver_arrived` after `dwell` within this many metres...
    pub arrive_m: f64,
    pub dwell: Duration,
    /// ...without going farther than this in between.
    pub leave_m: f64,
}

impl Default for ArrivalRules {
    fn default() -> Self {
        ArrivalRules {
            approach_m: 500.0,
            approach_secs: 120.0,
            arrive_m: 50.0,
            dwell: Duration::from_secs(5),
            leave_m: 100.0,
        }
    }
}

/// Which stop of the trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stop {
    Restaurant,
    Dropoff,
}

impl Stop {
    pub fn as_str(self) -> &'static str {
        match self {
            Stop::Restaurant => "restaurant",
            Stop::Dropoff => "dropoff",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArrivalKind {
    Approaching,
    Arrived,
}

impl ArrivalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ArrivalKind::Approaching => "driver_approaching",
            ArrivalKind::Arrived => "driver_arrived",
        }
    }
}

/// One detected arrival event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    pub kind: ArrivalKind,
    pub stop: Stop,
    pub distance_m: f64,
}

/// The detector for one stop.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrivalWatch {
    pub stop: Stop,
    approached: bool,
    arrived: bool,
    /// Since when the driver has been within the arrival radius (and not
    /// past the leave radius since).
    inside_since: Option<Instant>,
}

impl ArrivalWatch {
    pub fn new(stop: Stop) -> ArrivalWatch {
        ArrivalWatch {
            stop,
            approached: false,
            arrived: false,
            inside_since: None,
        }
    }

    /// A position `distance_m` from the stop, `travel_secs` of travel away,
    /// seen at `now`: the events it completes (approaching comes first
    /// when both do).
    pub fn observe(
        &mut self,
        rules: &ArrivalRules,
        distance_m: f64,
        travel_secs: f64,
        now: Instant,
    ) -> Vec<Arrival> {
        let mut events = Vec::new();
        if self.arrived || !distance_m.is_finite() {
            return events;
        }
        let event = |kind| Arrival {
            kind,
            stop: self.stop,
            distance_m,
        };
        if !self.approached
            && (distance_m <= rules.approach_m
                || travel_secs <= rules.approach_secs
                || distance_m <= rules.arrive_m)
        {
            self.approached = true;
            events.push(event(ArrivalKind::Approaching));
        }
        if distance_m <= rules.arrive_m {
            let since = *self.inside_since.get_or_insert(now);
            if now.duration_since(since) >= rules.dwell {
                self.arrived = true;
                events.push(event(ArrivalKind::Arrived));
            }
        } else if distance_m > rules.leave_m {
            self.inside_since = None;
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(events: &[Arrival]) -> Vec<ArrivalKind> {
        events.iter().map(|e| e.kind).collect()
    }

    #[test]
    fn a_drive_past_and_into_the_radius_gives_one_of_each_despite_jitter() {
        let rules = ArrivalRules::default();
        let mut watch = ArrivalWatch::new(Stop::Dropoff);
        let start = Instant::now();
        let mut all = Vec::new();
        // Far away, then closing in, then jittering around the arrival
        // radius (45..70 m) before settling inside it.
        let path: [(f64, u64); 12] = [
            (3000.0, 0),
            (1500.0, 1),
            (600.0, 2),
            (450.0, 3),
            (200.0, 4),
            (45.0, 5),
            (70.0, 6),
            (48.0, 7),
            (65.0, 8),
            (30.0, 9),
            (20.0, 10),
            (25.0, 11),
        ];
        for (distance, secs) in path {
            let events = watch.observe(&rules, distance, 1000.0, start + Duration::from_secs(secs));
            all.extend(events);
        }
        assert_eq!(
            kinds(&all),
            vec![ArrivalKind::Approaching, ArrivalKind::Arrived]
        );
        assert_eq!(all[0].distance_m, 450.0);
        // Arrived 5 s after first entering at 5 s: jitter to 70 m did not restart the wait.
        assert_eq!(all[1].distance_m, 20.0, "{all:?}");
        // Nothing more, wherever the driver goes.
        for (i, distance) in [10.0, 900.0, 10.0].into_iter().enumerate() {
            let later = start + Duration::from_secs(20 + i as u64 * 10);
            assert!(watch.observe(&rules, distance, 0.0, later).is_empty());
        }
    }

    #[test]
    fn leaving_past_the_leave_radius_restarts_the_dwell() {
        let rules = ArrivalRules::default();
        let mut watch = ArrivalWatch::new(Stop::Restaurant);
        let t = Instant::now();
        assert_eq!(
            kinds(&watch.observe(&rules, 40.0, 10.0, t)),
            vec![ArrivalKind::Approaching]
        );
        assert!(
            watch
                .observe(&rules, 150.0, 30.0, t + Duration::from_secs(3))
                .is_empty()
        );
        assert!(
            watch
                .observe(&rules, 40.0, 10.0, t + Duration::from_secs(6))
                .is_empty()
        );
        assert!(
            watch
                .observe(&rules, 40.0, 10.0, t + Duration::from_secs(10))
                .is_empty()
        );
        assert_eq!(
            kinds(&watch.observe(&rules, 40.0, 10.0, t + Duration::from_secs(11))),
            vec![ArrivalKind::Arrived]
        );
    }

    #[test]
    fn approaching_also_fires_on_travel_time() {
        let rules = ArrivalRules::default();
        let mut watch = ArrivalWatch::new(Stop::Restaurant);
        let t = Instant::now();
        assert!(watch.observe(&rules, 2000.0, 300.0, t).is_empty());
        assert_eq!(
            kinds(&watch.observe(&rules, 1900.0, 90.0, t)),
            vec![ArrivalKind::Approaching]
        );
        assert!(watch.observe(&rules, f64::NAN, 0.0, t).is_empty());
    }
}
