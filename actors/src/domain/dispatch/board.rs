//! The board: the orders waiting for a driver, and one dispatch round over
//! them, with the clock injected. Store-free and actor-free, so the live
//! Dispatcher and `dispatchd replay` run the very same round:
//!
//! 1. [`Board::plan`] groups the waiting orders into jobs (a bundle of
//!    orders of one restaurant, ready close together, or a single order)
//!    and says which candidates to ask the geo index for: one query per
//!    restaurant, for as many drivers as it has jobs plus the usual
//!    `candidates_per_order`, so a hot spot is not starved by every one of
//!    its orders seeing the same few nearest drivers;
//! 2. the caller asks the index (the live engine through the geo actor, the
//!    replay its own [`crate::domain::geo_index::GeoIndex`]);
//! 3. [`Board::decide`] solves the round ([`super::assign_round`] over jobs)
//!    and marks the chosen orders offered.
//!
//! Times are `DateTime<Utc>` given by the caller: wall time live, simulated
//! time in the replay.

use super::cost::{self, Candidate, OpenOrder, PolicyParams, pairing_cost};
use super::round::{assign_round, widen_radius};
use crate::domain::eta::travel_secs;
use crate::domain::model::{DriverId, LatLon, OrderId, RestaurantId, VehicleType};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};

/// What the board needs to know about an order waiting for a driver.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitingOrder {
    pub order_id: OrderId,
    pub restaurant_id: RestaurantId,
    pub restaurant: LatLon,
    pub dropoff: LatLon,
    pub ready_at: DateTime<Utc>,
    /// When it was placed: click-to-door counts from here.
    pub placed_at: DateTime<Utc>,
}

/// The rules of a round beyond the cost model.
#[derive(Debug, Clone, PartialEq)]
pub struct BoardRules {
    pub search_radius_km: f64,
    pub max_radius_km: f64,
    pub candidates_per_order: usize,
    /// Orders one offer may name (never more than a driver may hold).
    pub max_bundle: usize,
    /// Orders whose food is ready further apart than this are not bundled.
    pub bundle_ready_gap_secs: f64,
    /// A bundle may deliver none of its orders later than this compared with
    /// delivering that order alone.
    pub bundle_max_delay_secs: f64,
    /// Click-to-door an order should never exceed.
    pub max_click_to_door_secs: f64,
    /// Whether no driver may be given an order it cannot deliver within
    /// `max_click_to_door_secs` (the replay: such orders are dropped), or
    /// the maximum only flags (live: the operator decides).
    pub enforce_max_click_to_door: bool,
    /// Peak-aware bundling: after a round that left at least
    /// `peak_unserved_jobs` jobs without a driver, orders ready up to this
    /// far apart may be bundled (food waits; a trip is saved). Not above
    /// `bundle_ready_gap_secs`: off.
    pub peak_bundle_ready_gap_secs: f64,
    /// Jobs a round must leave without a driver for the next round to
    /// bundle with the peak gap (0: never).
    pub peak_unserved_jobs: usize,
    /// At the peak, [`PolicyParams::throughput_weight`] is at least this
    /// (the driver time a job takes per order counts when drivers are
    /// short); 0: the usual weight at the peak too.
    pub peak_throughput_weight: f64,
    /// Rolling horizon: a round plans drivers who will be free soon (their
    /// candidates' `free_in_secs`), but commits only the jobs of drivers
    /// free within this; a job given to a driver free later is a
    /// reservation: it keeps that job from a worse driver now, and the next
    /// round plans it again. Infinite: every pairing is committed.
    pub commit_within_secs: f64,
    /// Batching window: an order alone at its restaurant whose food is
    /// ready later than this window's remainder plus the nearest driver's
    /// arrival is held (not offered) for up to this long after it started
    /// waiting, so that a second order of the restaurant can join it in a
    /// bundle; see [`Board::holds`]. 0: off.
    pub batch_window_secs: f64,
}

impl Default for BoardRules {
    fn default() -> Self {
        BoardRules {
            search_radius_km: 5.0,
            max_radius_km: 15.0,
            candidates_per_order: 8,
            max_bundle: 2,
            bundle_ready_gap_secs: 300.0,
            bundle_max_delay_secs: 600.0,
            max_click_to_door_secs: 90.0 * 60.0,
            enforce_max_click_to_door: false,
            peak_bundle_ready_gap_secs: 600.0,
            peak_unserved_jobs: 20,
            peak_throughput_weight: 0.0,
            commit_within_secs: f64::INFINITY,
            batch_window_secs: 0.0,
        }
    }
}

/// One waiting order on the board, with what the rounds learnt about it.
#[derive(Debug, Clone)]
pub struct BoardEntry {
    pub order: WaitingOrder,
    /// When it started waiting for a driver.
    pub since: DateTime<Utc>,
    pub radius_km: f64,
    /// Drivers who declined it or let its offer expire.
    pub excluded: HashSet<DriverId>,
    /// An offer naming it is outstanding.
    pub offered: bool,
    /// No driver can deliver it within the maximum any more.
    pub hopeless: bool,
    /// More candidates to ask for, after rounds in which every one found
    /// could not take it (a shift ending, too early for the food, too late
    /// for the maximum): the nearest few must not hide the rest for good.
    pub extra_candidates: usize,
}

/// Orders offered to one driver together, in drop-off sequence.
#[derive(Debug, Clone)]
pub struct Job {
    pub orders: Vec<OrderId>,
    pub restaurant: LatLon,
    /// Seconds from pickup to each order's drop-off, in sequence.
    pub drop_offsets_secs: Vec<f64>,
    row: OpenOrder,
}

/// One candidate search: up to `k` available drivers within `max_km` of
/// `at`, none in `exclude`.
#[derive(Debug, Clone)]
pub struct Query {
    pub at: LatLon,
    pub max_km: f64,
    pub k: usize,
    pub exclude: HashSet<DriverId>,
}

/// What [`Board::plan`] found: the jobs, the queries to answer, and the
/// orders that just turned hopeless.
#[derive(Debug, Default)]
pub struct Plan {
    pub jobs: Vec<Job>,
    pub queries: Vec<Query>,
    /// The jobs of each query, in candidate order.
    groups: Vec<Vec<usize>>,
    /// The extra candidates each query asked for.
    extra: Vec<usize>,
    pub hopeless: Vec<OrderId>,
    /// The round's clock, for [`Board::decide`].
    now: DateTime<Utc>,
}

impl Plan {
    /// The orders whose jobs query `query` serves.
    pub fn orders_of_query(&self, query: usize) -> impl Iterator<Item = OrderId> + '_ {
        self.groups
            .get(query)
            .into_iter()
            .flatten()
            .flat_map(|&job| self.jobs[job].orders.iter().copied())
    }
}

/// What a round decided.
#[derive(Debug, Default)]
pub struct Decision {
    pub assignments: Vec<Assignment>,
    /// Orders whose search radius grew because their restaurant found nobody.
    pub widened: usize,
    /// Jobs planned for a driver not free yet (beyond
    /// [`BoardRules::commit_within_secs`]): not offered, planned again.
    pub reserved: usize,
    /// Orders held back by the batching window this round (not offered,
    /// planned again next round): see [`Board::holds`].
    pub held: Vec<OrderId>,
}

/// A job the round gives to a driver.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub orders: Vec<OrderId>,
    pub driver: Candidate,
    /// The round's cost of this pairing, in seconds.
    pub cost: f64,
    /// Seconds from pickup to each order's drop-off, in sequence.
    pub drop_offsets_secs: Vec<f64>,
}

/// The orders waiting for a driver.
#[derive(Debug, Clone)]
pub struct Board {
    entries: HashMap<OrderId, BoardEntry>,
    pub rules: BoardRules,
    pub params: PolicyParams,
    /// Jobs the last round left without a driver.
    unserved: usize,
}

/// Hard cap on one restaurant's query, whatever its queue: beyond this many
/// drivers per round the solver's work, not the search, is the limit.
const MAX_QUERY_K: usize = 4096;

/// A bundle made only because of the peak gap must leave at least this
/// long between its earliest pickup (the later food) and its latest one
/// (the earlier order's deadline): a driver has to get there, and a bundle
/// no one can reach in time would lose the order that could go alone.
const PEAK_BUNDLE_MIN_SLACK_SECS: f64 = 600.0;

fn secs_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 1000.0
}

impl Board {
    pub fn new(rules: BoardRules, params: PolicyParams) -> Board {
        Board {
            entries: HashMap::new(),
            rules,
            params,
            unserved: 0,
        }
    }

    /// Whether the last round left so many jobs without a driver that this
    /// one bundles with the peak gap.
    pub fn at_peak(&self) -> bool {
        self.rules.peak_unserved_jobs > 0 && self.unserved >= self.rules.peak_unserved_jobs
    }

    /// Jobs the last round left without a driver.
    pub fn unserved(&self) -> usize {
        self.unserved
    }

    /// The order waits for a driver from `now` (again a no-op if it already does).
    pub fn open(&mut self, order: WaitingOrder, now: DateTime<Utc>) {
        let radius_km = self.rules.search_radius_km;
        self.entries
            .entry(order.order_id)
            .or_insert_with(|| BoardEntry {
                order,
                since: now,
                radius_km,
                excluded: HashSet::new(),
                offered: false,
                hopeless: false,
                extra_candidates: 0,
            });
    }

    /// The kitchen moved the order's food-ready time (it started preparing,
    /// or marked the food ready): later rounds plan with the new time.
    pub fn ready_at(&mut self, order_id: OrderId, ready_at: DateTime<Utc>) {
        if let Some(entry) = self.entries.get_mut(&order_id) {
            entry.order.ready_at = ready_at;
        }
    }

    /// Takes an order off the board (assigned, cancelled, dropped).
    pub fn withdraw(&mut self, order_id: OrderId) -> Option<BoardEntry> {
        self.entries.remove(&order_id)
    }

    pub fn get(&self, order_id: OrderId) -> Option<&BoardEntry> {
        self.entries.get(&order_id)
    }

    pub fn entries(&self) -> impl Iterator<Item = &BoardEntry> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// An offer naming `order_id` ended without an assignment; a decline or
    /// an expiry (`exclude`) keeps that driver away from the order.
    pub fn offer_ended(&mut self, order_id: OrderId, driver_id: DriverId, exclude: bool) {
        if let Some(entry) = self.entries.get_mut(&order_id) {
            entry.offered = false;
            if exclude {
                entry.excluded.insert(driver_id);
            }
        }
    }

    /// Seconds of driving between two points by the default vehicle.
    fn leg_secs(&self, a: LatLon, b: LatLon) -> f64 {
        travel_secs(a, b, VehicleType::default(), self.params.road_factor)
    }

    /// Seconds from pickup to each drop-off of `sequence`.
    fn drop_offsets(&self, restaurant: LatLon, sequence: &[&BoardEntry]) -> Vec<f64> {
        let service = self.params.dropoff_service_secs;
        let mut at = restaurant;
        let mut clock = self.params.pickup_service_secs;
        let mut offsets = Vec::with_capacity(sequence.len());
        for (i, entry) in sequence.iter().enumerate() {
            if i > 0 {
                clock += service;
            }
            clock += self.leg_secs(at, entry.order.dropoff) + service;
            offsets.push(clock);
            at = entry.order.dropoff;
        }
        offsets
    }

    /// The latest pickup (seconds from now) that delivers every order of the
    /// sequence within the maximum.
    fn latest_pickup(&self, now: DateTime<Utc>, sequence: &[&BoardEntry], offsets: &[f64]) -> f64 {
        sequence
            .iter()
            .zip(offsets)
            .map(|(e, offset)| {
                secs_between(now, e.order.placed_at) + self.rules.max_click_to_door_secs - offset
            })
            .fold(f64::INFINITY, f64::min)
    }

    /// Groups the waiting orders into jobs and says what to ask the index;
    /// `busy` drivers (an offer outstanding) are left out of every query.
    /// Orders that no driver could deliver within the maximum any more are
    /// flagged hopeless (once), and left out when the maximum is enforced.
    pub fn plan(&mut self, now: DateTime<Utc>, busy: &HashSet<DriverId>) -> Plan {
        let mut plan = Plan {
            now,
            ..Plan::default()
        };
        // Even a driver at the restaurant right now would be too late.
        let pickup_service = self.params.pickup_service_secs;
        let mut newly_hopeless = Vec::new();
        for entry in self.entries.values() {
            if entry.offered || entry.hopeless {
                continue;
            }
            let offsets = self.drop_offsets(entry.order.restaurant, &[entry]);
            let latest = self.latest_pickup(now, &[entry], &offsets);
            let earliest = secs_between(now, entry.order.ready_at).max(pickup_service);
            if earliest > latest {
                newly_hopeless.push(entry.order.order_id);
            }
        }
        for id in &newly_hopeless {
            if let Some(entry) = self.entries.get_mut(id) {
                entry.hopeless = true;
            }
        }
        plan.hopeless = newly_hopeless;

        // Waiting orders by restaurant, each restaurant's by ready time
        // (ties by id, so a round is deterministic).
        let enforce = self.rules.enforce_max_click_to_door;
        let mut by_restaurant: BTreeMap<RestaurantId, Vec<&BoardEntry>> = BTreeMap::new();
        for entry in self.entries.values() {
            if entry.offered || (enforce && entry.hopeless) {
                continue;
            }
            by_restaurant
                .entry(entry.order.restaurant_id)
                .or_default()
                .push(entry);
        }
        for waiting in by_restaurant.values_mut() {
            waiting.sort_by(|a, b| {
                a.order
                    .ready_at
                    .cmp(&b.order.ready_at)
                    .then(a.order.order_id.cmp(&b.order.order_id))
            });
            let first_job = plan.jobs.len();
            for sequence in self.bundles(now, waiting) {
                plan.jobs.push(self.job(now, &sequence));
            }
            let members: Vec<usize> = (first_job..plan.jobs.len()).collect();
            let mut exclude: HashSet<DriverId> = busy.clone();
            let mut max_km: f64 = 0.0;
            let mut extra = 0;
            for entry in waiting.iter() {
                exclude.extend(entry.excluded.iter().copied());
                max_km = max_km.max(entry.radius_km);
                extra = extra.max(entry.extra_candidates);
            }
            plan.queries.push(Query {
                at: waiting[0].order.restaurant,
                max_km,
                k: (self.rules.candidates_per_order + extra + members.len() - 1).min(MAX_QUERY_K),
                exclude,
            });
            plan.extra.push(extra);
            plan.groups.push(members);
        }
        plan
    }

    /// Splits one restaurant's waiting orders (by ready time) into drop-off
    /// sequences: each order starts a bundle, and takes the next ones whose
    /// food is ready within the gap while no order of it is delayed by more
    /// than `bundle_max_delay_secs` against going alone. At the peak
    /// ([`Board::at_peak`]) the gap is `peak_bundle_ready_gap_secs`, for
    /// bundles that still leave a driver time to reach them.
    fn bundles<'a>(
        &self,
        now: DateTime<Utc>,
        waiting: &[&'a BoardEntry],
    ) -> Vec<Vec<&'a BoardEntry>> {
        let gap_limit = if self.at_peak() {
            self.rules
                .peak_bundle_ready_gap_secs
                .max(self.rules.bundle_ready_gap_secs)
        } else {
            self.rules.bundle_ready_gap_secs
        };
        let mut taken = vec![false; waiting.len()];
        let mut sequences = Vec::new();
        for i in 0..waiting.len() {
            if taken[i] {
                continue;
            }
            taken[i] = true;
            let mut sequence = vec![waiting[i]];
            for j in i + 1..waiting.len() {
                if sequence.len() >= self.rules.max_bundle {
                    break;
                }
                if taken[j] {
                    continue;
                }
                let gap = secs_between(waiting[i].order.ready_at, waiting[j].order.ready_at);
                if gap > gap_limit {
                    break;
                }
                if let Some(better) = self.best_sequence(&sequence, waiting[j]) {
                    if gap > self.rules.bundle_ready_gap_secs && !self.reachable(now, &better) {
                        continue;
                    }
                    sequence = better;
                    taken[j] = true;
                }
            }
            sequences.push(sequence);
        }
        sequences
    }

    /// Whether a driver could still pick `sequence` up with
    /// [`PEAK_BUNDLE_MIN_SLACK_SECS`] to spare before its latest pickup.
    fn reachable(&self, now: DateTime<Utc>, sequence: &[&BoardEntry]) -> bool {
        let offsets = self.drop_offsets(sequence[0].order.restaurant, sequence);
        let latest = self.latest_pickup(now, sequence, &offsets);
        let earliest = sequence
            .iter()
            .map(|e| secs_between(now, e.order.ready_at))
            .fold(self.params.pickup_service_secs, f64::max);
        earliest + PEAK_BUNDLE_MIN_SLACK_SECS <= latest
    }

    /// `sequence` with `extra` inserted where the drop-offs finish soonest in
    /// total, if no order is then delayed too much against going alone.
    fn best_sequence<'a>(
        &self,
        sequence: &[&'a BoardEntry],
        extra: &'a BoardEntry,
    ) -> Option<Vec<&'a BoardEntry>> {
        let restaurant = extra.order.restaurant;
        let mut best: Option<(f64, Vec<&'a BoardEntry>)> = None;
        // From the end: on a tie the food ready first is dropped first.
        for at in (0..=sequence.len()).rev() {
            let mut candidate = sequence.to_vec();
            candidate.insert(at, extra);
            let offsets = self.drop_offsets(restaurant, &candidate);
            let fits = candidate.iter().zip(&offsets).all(|(e, offset)| {
                let alone = self.drop_offsets(restaurant, &[*e])[0];
                offset - alone <= self.rules.bundle_max_delay_secs
            });
            let total: f64 = offsets.iter().sum();
            if fits && best.as_ref().is_none_or(|(t, _)| total < *t) {
                best = Some((total, candidate));
            }
        }
        best.map(|(_, s)| s)
    }

    fn job(&self, now: DateTime<Utc>, sequence: &[&BoardEntry]) -> Job {
        let restaurant = sequence[0].order.restaurant;
        let offsets = self.drop_offsets(restaurant, sequence);
        let ready_in_secs = sequence
            .iter()
            .map(|e| secs_between(now, e.order.ready_at))
            .fold(f64::NEG_INFINITY, f64::max);
        let latest_pickup_secs = if self.rules.enforce_max_click_to_door {
            self.latest_pickup(now, sequence, &offsets)
        } else {
            f64::INFINITY
        };
        Job {
            orders: sequence.iter().map(|e| e.order.order_id).collect(),
            restaurant,
            row: OpenOrder {
                order_id: sequence[0].order.order_id,
                restaurant,
                dropoff: sequence[0].order.dropoff,
                ready_in_secs,
                latest_pickup_secs,
                trip_secs: offsets.last().copied().unwrap_or(0.0)
                    + self.params.dropoff_service_secs,
                orders: sequence.len() as u32,
            },
            drop_offsets_secs: offsets,
        }
    }

    /// Solves the round given the index's `answers` to `plan.queries` (in
    /// order, nearest first), and marks the orders of each assignment
    /// offered. A restaurant whose query found nobody widens its radius.
    ///
    /// Job `i` of a restaurant is given candidates `i .. i + k` of its
    /// answer: the nearest drivers go to the earliest food, and every job
    /// still has `k` to choose from without the round growing with the
    /// square of the queue.
    pub fn decide(&mut self, plan: Plan, answers: Vec<Vec<Candidate>>) -> Decision {
        let mut widened = 0;
        let base_k = self.rules.candidates_per_order.max(1);
        let mut candidates: Vec<Vec<Candidate>> = vec![Vec::new(); plan.jobs.len()];
        for (g, (members, answer)) in plan.groups.iter().zip(&answers).enumerate() {
            let k = base_k + plan.extra.get(g).copied().unwrap_or(0);
            if answer.is_empty() {
                for &j in members {
                    for id in &plan.jobs[j].orders {
                        if let Some(entry) = self.entries.get_mut(id)
                            && let Some(wider) = widen_radius(
                                entry.radius_km,
                                self.rules.search_radius_km,
                                self.rules.max_radius_km,
                            )
                        {
                            entry.radius_km = wider;
                            widened += 1;
                        }
                    }
                }
                continue;
            }
            for (rank, &j) in members.iter().enumerate() {
                let start = rank.min(answer.len().saturating_sub(k));
                let end = (start + k).min(answer.len());
                candidates[j] = answer[start..end]
                    .iter()
                    .filter(|c| {
                        plan.jobs[j].orders.len() as u32 + c.active_orders
                            <= self.params.max_active_orders
                    })
                    .copied()
                    .collect();
                let usable = candidates[j]
                    .iter()
                    .any(|c| pairing_cost(&plan.jobs[j].row, c, &self.params).is_finite());
                if !usable {
                    let searched_all = answer.len() < plan.queries[g].k;
                    for id in &plan.jobs[j].orders {
                        let Some(entry) = self.entries.get_mut(id) else {
                            continue;
                        };
                        entry.extra_candidates =
                            (entry.extra_candidates * 2).max(base_k).min(MAX_QUERY_K);
                        if searched_all
                            && let Some(wider) = widen_radius(
                                entry.radius_km,
                                self.rules.search_radius_km,
                                self.rules.max_radius_km,
                            )
                        {
                            entry.radius_km = wider;
                            widened += 1;
                        }
                    }
                }
            }
        }
        // The batching window: a restaurant's only order, far from ready,
        // sits out this round (it is neither solved nor counted unserved).
        let mut held = Vec::new();
        let mut sits_out = vec![false; plan.jobs.len()];
        for members in &plan.groups {
            let [j] = members[..] else {
                continue;
            };
            let [order_id] = plan.jobs[j].orders[..] else {
                continue;
            };
            let restaurant = plan.jobs[j].restaurant;
            let nearest = candidates[j]
                .iter()
                .map(|c| self.arrival_secs(c, restaurant))
                .fold(f64::INFINITY, f64::min);
            if self.holds(plan.now, order_id, nearest) {
                held.push(order_id);
                sits_out[j] = true;
            }
        }
        let active: Vec<usize> = (0..plan.jobs.len()).filter(|&j| !sits_out[j]).collect();
        let rows: Vec<OpenOrder> = active.iter().map(|&j| plan.jobs[j].row.clone()).collect();
        let solved: Vec<Vec<Candidate>> = active
            .iter()
            .map(|&j| std::mem::take(&mut candidates[j]))
            .collect();
        let params = self.round_params();
        let pairings = assign_round(&rows, &solved, &params);
        self.unserved = rows.len().saturating_sub(pairings.len());
        let mut assignments = Vec::with_capacity(pairings.len());
        let mut reserved = 0;
        for pairing in pairings {
            let Some(a) = rows.iter().position(|r| r.order_id == pairing.order_id) else {
                continue;
            };
            let j = active[a];
            let Some(driver) = solved[a]
                .iter()
                .find(|c| c.driver_id == pairing.driver_id)
                .copied()
            else {
                continue;
            };
            if driver.free_in_secs > self.rules.commit_within_secs {
                reserved += 1;
                continue;
            }
            let job = &plan.jobs[j];
            for id in &job.orders {
                if let Some(entry) = self.entries.get_mut(id) {
                    entry.offered = true;
                }
            }
            assignments.push(Assignment {
                orders: job.orders.clone(),
                driver,
                cost: pairing.cost,
                drop_offsets_secs: job.drop_offsets_secs.clone(),
            });
        }
        Decision {
            assignments,
            widened,
            reserved,
            held,
        }
    }

    /// Seconds until `driver` could pick up at `restaurant` (food aside).
    fn arrival_secs(&self, driver: &Candidate, restaurant: LatLon) -> f64 {
        cost::reach_secs(driver, restaurant, &self.params) + self.params.pickup_service_secs
    }

    /// Whether the batching window holds `order_id` this round, given the
    /// seconds until its restaurant's nearest candidate driver could pick
    /// up (`nearest_arrival_secs`; infinite: nobody found, not held). An
    /// order is held while it waited less than `batch_window_secs`, and its
    /// food will be ready later than the window's remainder plus that
    /// arrival: offered at the window's end, the nearest driver would still
    /// wait for the food, so holding costs it nothing and gives a second
    /// order of its restaurant time to join it. Never an order that holding
    /// would make miss its latest pickup for the maximum click-to-door (a
    /// hopeless one among them). The caller holds only an order alone at
    /// its restaurant: with a second there, the round bundles them.
    pub fn holds(&self, now: DateTime<Utc>, order_id: OrderId, nearest_arrival_secs: f64) -> bool {
        let window = self.rules.batch_window_secs;
        let Some(entry) = self.entries.get(&order_id) else {
            return false;
        };
        if window <= 0.0 || entry.hopeless || !nearest_arrival_secs.is_finite() {
            return false;
        }
        let remaining = window - secs_between(entry.since, now);
        if remaining <= 0.0 {
            return false;
        }
        let ready_in = secs_between(now, entry.order.ready_at);
        let offered_at_the_end = remaining + nearest_arrival_secs;
        let offsets = self.drop_offsets(entry.order.restaurant, &[entry]);
        let latest = self.latest_pickup(now, &[entry], &offsets);
        ready_in > offered_at_the_end && ready_in <= latest
    }

    /// The cost model of this round: at the peak, with the peak's
    /// throughput weight.
    fn round_params(&self) -> PolicyParams {
        let mut params = self.params.clone();
        if self.at_peak() {
            params.throughput_weight = params
                .throughput_weight
                .max(self.rules.peak_throughput_weight);
        }
        params
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::dispatch::fixtures::{driver, east};
    use chrono::Duration;

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + Duration::minutes(minute)
    }

    fn waiting(id: OrderId, restaurant_id: RestaurantId, km: f64, ready: i64) -> WaitingOrder {
        WaitingOrder {
            order_id: id,
            restaurant_id,
            restaurant: east(km),
            dropoff: east(km + 1.0),
            ready_at: at(ready),
            placed_at: at(0),
        }
    }

    fn board() -> Board {
        Board::new(BoardRules::default(), PolicyParams::default())
    }

    /// The index's answer to a query, from a fixed fleet (nearest first).
    fn answer(query: &Query, fleet: &[Candidate]) -> Vec<Candidate> {
        let mut found: Vec<Candidate> = fleet
            .iter()
            .filter(|c| !query.exclude.contains(&c.driver_id))
            .filter(|c| crate::domain::geo::distance_km(c.at, query.at) <= query.max_km)
            .copied()
            .collect();
        found.sort_by(|a, b| {
            crate::domain::geo::distance_km(a.at, query.at)
                .total_cmp(&crate::domain::geo::distance_km(b.at, query.at))
        });
        found.truncate(query.k);
        found
    }

    fn round(board: &mut Board, now: DateTime<Utc>, fleet: &[Candidate]) -> Vec<Assignment> {
        let plan = board.plan(now, &HashSet::new());
        let answers = plan.queries.iter().map(|q| answer(q, fleet)).collect();
        board.decide(plan, answers).assignments
    }

    #[test]
    fn two_orders_of_one_restaurant_ready_together_are_one_offer() {
        let mut b = board();
        b.open(waiting(1, 7, 0.0, 10), at(0));
        let mut second = waiting(2, 7, 0.0, 11);
        second.dropoff = east(1.5);
        b.open(second, at(0));
        let fleet = [driver(1, east(0.5)), driver(2, east(0.6))];
        let done = round(&mut b, at(9), &fleet);
        assert_eq!(done.len(), 1, "{done:?}");
        assert_eq!(done[0].orders.len(), 2);
        assert_eq!(done[0].driver.driver_id, 1);
        assert!(b.get(1).is_some_and(|e| e.offered) && b.get(2).is_some_and(|e| e.offered));
        // Each drop-off counts the ones before it.
        assert!(done[0].drop_offsets_secs[1] > done[0].drop_offsets_secs[0]);
    }

    #[test]
    fn orders_of_different_restaurants_or_far_apart_in_time_are_offered_alone() {
        let mut b = board();
        b.open(waiting(1, 7, 0.0, 10), at(0));
        b.open(waiting(2, 8, 0.0, 10), at(0));
        b.open(waiting(3, 7, 0.0, 30), at(0));
        let fleet = [
            driver(1, east(0.5)),
            driver(2, east(0.6)),
            driver(3, east(0.7)),
        ];
        let done = round(&mut b, at(9), &fleet);
        assert_eq!(done.len(), 3, "{done:?}");
        assert!(done.iter().all(|a| a.orders.len() == 1));
    }

    /// A board whose last round left two jobs without a driver (at `now`
    /// minus a minute, nobody near): the peak, with `peak_unserved_jobs` 2.
    fn board_at_peak(orders: &[WaitingOrder], now: i64) -> Board {
        let rules = BoardRules {
            peak_unserved_jobs: 2,
            ..BoardRules::default()
        };
        let mut b = Board::new(rules, PolicyParams::default());
        for o in orders {
            b.open(o.clone(), at(0));
        }
        assert!(round(&mut b, at(now - 1), &[]).is_empty());
        assert!(b.at_peak(), "{} unserved", b.unserved());
        b
    }

    #[test]
    fn at_the_peak_orders_ready_further_apart_are_bundled_to_save_a_trip() {
        // Ready 8 minutes apart: past the usual 5-minute gap.
        let orders = [waiting(1, 7, 0.0, 10), waiting(2, 7, 0.0, 18)];
        let fleet = [driver(1, east(0.5)), driver(2, east(0.6))];
        // Drivers to spare: each order goes alone.
        let mut calm = board();
        for o in &orders {
            calm.open(o.clone(), at(0));
        }
        let done = round(&mut calm, at(2), &fleet);
        assert_eq!(done.len(), 2, "{done:?}");
        assert!(done.iter().all(|a| a.orders.len() == 1));
        // The last round left jobs without a driver: one driver takes both.
        let mut b = board_at_peak(&orders, 2);
        let done = round(&mut b, at(2), &fleet);
        assert_eq!(done.len(), 1, "{done:?}");
        assert_eq!(done[0].orders.len(), 2);
        // The round served everyone: the peak is over.
        assert!(!b.at_peak());
    }

    #[test]
    fn a_peak_bundle_no_driver_could_reach_in_time_is_not_made() {
        // Order 1 (placed at 0) must be picked up within about 15 minutes
        // of minute 72; order 2's food is ready in 9: too tight to bundle.
        let orders = [waiting(1, 7, 0.0, 75), waiting(2, 7, 0.0, 81)];
        let mut b = board_at_peak(&orders, 72);
        let fleet = [driver(1, east(0.5)), driver(2, east(0.6))];
        let done = round(&mut b, at(72), &fleet);
        assert_eq!(done.len(), 2, "{done:?}");
        assert!(done.iter().all(|a| a.orders.len() == 1));
    }

    #[test]
    fn a_bundle_that_delays_an_order_too_much_is_not_made() {
        let mut b = board();
        // 8 km out in opposite directions: whoever goes second waits long.
        let mut east_bound = waiting(1, 7, 0.0, 10);
        east_bound.dropoff = east(8.0);
        let mut far = waiting(2, 7, 0.0, 10);
        far.dropoff = east(-8.0);
        b.open(east_bound, at(0));
        b.open(far, at(0));
        let fleet = [driver(1, east(0.5)), driver(2, east(0.6))];
        let done = round(&mut b, at(9), &fleet);
        assert_eq!(done.len(), 2);
        assert!(done.iter().all(|a| a.orders.len() == 1));
    }

    #[test]
    fn a_hot_spot_gets_a_driver_for_every_order_in_one_round() {
        let rules = BoardRules {
            max_bundle: 1,
            ..BoardRules::default()
        };
        let mut b = Board::new(rules, PolicyParams::default());
        for id in 0..200 {
            b.open(waiting(id, 7, 0.0, 0), at(0));
        }
        let fleet: Vec<Candidate> = (0..200)
            .map(|d| driver(d, east(0.001 * d as f64)))
            .collect();
        let done = round(&mut b, at(1), &fleet);
        assert_eq!(done.len(), 200);
    }

    #[test]
    fn a_thousand_orders_at_one_restaurant_with_a_thousand_drivers_beside_it_go_in_two_rounds() {
        use crate::domain::geo_index::{DriverEntry, GeoIndex};
        let mut b = board();
        for id in 0..1000 {
            b.open(waiting(id, 7, 0.0, 0), at(0));
        }
        let mut index = GeoIndex::bulk_load(
            (0..1000)
                .map(|d| DriverEntry {
                    id: d,
                    at: east(0.0005 * d as f64),
                    available: true,
                    active_orders: 0,
                })
                .collect(),
        );
        let mut assigned = 0;
        for minute in 1..=2 {
            let plan = b.plan(at(minute), &HashSet::new());
            let answers = plan
                .queries
                .iter()
                .map(|q| {
                    index
                        .nearest_available(q.at, q.k, q.max_km, 2, |id| q.exclude.contains(&id))
                        .into_iter()
                        .map(|n| driver(n.entry.id, n.entry.at))
                        .collect()
                })
                .collect();
            for a in b.decide(plan, answers).assignments {
                assigned += a.orders.len();
                index.remove(a.driver.driver_id);
                for id in &a.orders {
                    b.withdraw(*id);
                }
            }
        }
        assert_eq!(assigned, 1000);
        assert!(b.is_empty());
    }

    #[test]
    fn an_order_no_one_can_deliver_in_time_is_flagged_once_and_dropped_when_enforced() {
        let rules = BoardRules {
            enforce_max_click_to_door: true,
            ..BoardRules::default()
        };
        let mut b = Board::new(rules, PolicyParams::default());
        b.open(waiting(1, 7, 0.0, 10), at(0));
        let fleet = [driver(1, east(0.5))];
        let plan = b.plan(at(95), &HashSet::new());
        assert_eq!(plan.hopeless, vec![1]);
        assert!(plan.jobs.is_empty());
        assert!(b.plan(at(96), &HashSet::new()).hopeless.is_empty());
        assert!(round(&mut b, at(97), &fleet).is_empty());
        // Not enforced (live): flagged, and still dispatched.
        let mut live = board();
        live.open(waiting(1, 7, 0.0, 10), at(0));
        let plan = live.plan(at(95), &HashSet::new());
        assert_eq!(plan.hopeless, vec![1]);
        let answers = plan.queries.iter().map(|q| answer(q, &fleet)).collect();
        assert_eq!(live.decide(plan, answers).assignments.len(), 1);
    }

    #[test]
    fn when_the_nearest_drivers_cannot_take_it_the_next_round_asks_for_more() {
        let mut b = board();
        b.open(waiting(1, 7, 0.0, 0), at(0));
        // Eight near drivers whose shifts end before they could pick up,
        // and one further out who can.
        let mut fleet: Vec<Candidate> = (0..8)
            .map(|d| Candidate {
                off_in_secs: 0.0,
                ..driver(d, east(0.1 + 0.01 * d as f64))
            })
            .collect();
        fleet.push(driver(99, east(2.0)));
        assert!(round(&mut b, at(1), &fleet).is_empty());
        assert!(b.get(1).is_some_and(|e| e.extra_candidates > 0));
        let done = round(&mut b, at(2), &fleet);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].driver.driver_id, 99);
    }

    #[test]
    fn a_driver_free_soon_is_planned_but_committed_only_once_free_within_the_window() {
        let rules = BoardRules {
            commit_within_secs: 120.0,
            ..BoardRules::default()
        };
        let mut b = Board::new(rules, PolicyParams::default());
        b.open(waiting(1, 7, 0.0, 10), at(0));
        // At the restaurant in 5 minutes, against 6 km away now.
        let soon = |secs| Candidate {
            free_in_secs: secs,
            ..driver(1, east(0.1))
        };
        let far = driver(2, east(6.0));
        let done = round(&mut b, at(5), &[soon(300.0), far]);
        // The soon-free driver keeps the order from the far one, uncommitted.
        assert!(done.is_empty(), "{done:?}");
        assert!(b.get(1).is_some_and(|e| !e.offered));
        let plan = b.plan(at(6), &HashSet::new());
        let answers = plan
            .queries
            .iter()
            .map(|q| answer(q, &[soon(240.0), far]))
            .collect();
        assert_eq!(b.decide(plan, answers).reserved, 1);
        // Free within the window: committed.
        let done = round(&mut b, at(8), &[soon(60.0), far]);
        assert_eq!(done.len(), 1, "{done:?}");
        assert_eq!(done[0].driver.driver_id, 1);
        assert!(b.get(1).is_some_and(|e| e.offered));
        // Without a window (the default), the busy driver is committed at once.
        let mut eager = board();
        eager.open(waiting(1, 7, 0.0, 10), at(0));
        let done = round(&mut eager, at(5), &[soon(300.0), far]);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].driver.driver_id, 1);
    }

    #[test]
    fn at_the_peak_the_throughput_weight_prefers_the_job_that_frees_the_driver_sooner() {
        // One driver, two orders of two restaurants, ready now: the first a
        // long trip (12 km out), the second a short one (1 km out) at a
        // restaurant a little further from the driver.
        let mut long = waiting(1, 7, 0.0, 0);
        long.dropoff = east(12.0);
        let mut short = waiting(2, 8, 0.3, 0);
        short.dropoff = east(-0.7);
        let fleet = [driver(1, east(0.0))];
        let rules = BoardRules {
            peak_unserved_jobs: 1,
            peak_throughput_weight: 1.0,
            ..BoardRules::default()
        };
        let mut calm = Board::new(rules.clone(), PolicyParams::default());
        calm.open(long.clone(), at(0));
        calm.open(short.clone(), at(0));
        // Nearest first while not at the peak (no round left anyone out yet).
        let done = round(&mut calm, at(1), &fleet);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].orders, vec![1]);
        // The round left one job without a driver: the next is at the peak.
        assert!(calm.at_peak());
        let mut b = Board::new(rules, PolicyParams::default());
        b.open(long, at(0));
        b.open(short, at(0));
        assert!(round(&mut b, at(0), &[]).is_empty());
        assert!(b.at_peak());
        let done = round(&mut b, at(1), &fleet);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].orders, vec![2]);
    }

    /// A board with a two-minute batching window.
    fn batching() -> Board {
        let rules = BoardRules {
            batch_window_secs: 120.0,
            ..BoardRules::default()
        };
        Board::new(rules, PolicyParams::default())
    }

    /// One round at `now`: what was offered, and what the window held.
    fn batching_round(
        board: &mut Board,
        now: DateTime<Utc>,
        fleet: &[Candidate],
    ) -> (Vec<Assignment>, Vec<OrderId>) {
        let plan = board.plan(now, &HashSet::new());
        let answers = plan.queries.iter().map(|q| answer(q, fleet)).collect();
        let decision = board.decide(plan, answers);
        (decision.assignments, decision.held)
    }

    #[test]
    fn an_order_alone_at_its_restaurant_and_far_from_ready_is_held_by_the_window() {
        // Ready in 20 minutes; the nearest driver is about 1.5 minutes away.
        let fleet = [driver(1, east(0.5))];
        let mut b = batching();
        b.open(waiting(1, 7, 0.0, 20), at(0));
        let (done, held) = batching_round(&mut b, at(0), &fleet);
        assert!(done.is_empty(), "{done:?}");
        assert_eq!(held, vec![1]);
        assert!(b.get(1).is_some_and(|e| !e.offered));
        // Held rounds are not rounds that left a job without a driver.
        assert_eq!(b.unserved(), 0);
        // A minute later, still within the window: held again.
        let (done, held) = batching_round(&mut b, at(1), &fleet);
        assert!(done.is_empty() && held == vec![1], "{done:?} {held:?}");
        // With the window off, offered at once.
        let mut eager = board();
        eager.open(waiting(1, 7, 0.0, 20), at(0));
        let (done, held) = batching_round(&mut eager, at(0), &fleet);
        assert_eq!(done.len(), 1, "{done:?}");
        assert!(held.is_empty());
    }

    #[test]
    fn the_window_holds_no_order_whose_food_would_wait_for_it() {
        // Ready in 3 minutes: the window's 2 plus the driver's 1.5 is later.
        let mut b = batching();
        b.open(waiting(1, 7, 0.0, 3), at(0));
        let (done, held) = batching_round(&mut b, at(0), &[driver(1, east(0.5))]);
        assert_eq!(done.len(), 1, "{done:?}");
        assert!(held.is_empty());
        // Ready in 15, but the nearest driver is 14 minutes out (4.5 km).
        let mut b = batching();
        b.open(waiting(1, 7, 0.0, 15), at(0));
        let (done, held) = batching_round(&mut b, at(0), &[driver(1, east(4.5))]);
        assert_eq!(done.len(), 1, "{done:?}");
        assert!(held.is_empty());
    }

    #[test]
    fn the_window_holds_no_order_with_a_second_of_its_restaurant_waiting() {
        let fleet = [driver(1, east(0.5)), driver(2, east(0.6))];
        let mut b = batching();
        b.open(waiting(1, 7, 0.0, 20), at(0));
        let (_, held) = batching_round(&mut b, at(0), &fleet);
        assert_eq!(held, vec![1]);
        // The second order comes within the window: one offer for both.
        b.open(waiting(2, 7, 0.0, 21), at(1));
        let (done, held) = batching_round(&mut b, at(1), &fleet);
        assert!(held.is_empty(), "{held:?}");
        assert_eq!(done.len(), 1, "{done:?}");
        assert_eq!(done[0].orders.len(), 2);
    }

    #[test]
    fn the_window_never_holds_an_order_past_its_end() {
        let fleet = [driver(1, east(0.5))];
        let mut b = batching();
        b.open(waiting(1, 7, 0.0, 20), at(0));
        let (_, held) = batching_round(&mut b, at(1), &fleet);
        assert_eq!(held, vec![1]);
        // Three minutes after it started waiting: the two are over.
        let (done, held) = batching_round(&mut b, at(3), &fleet);
        assert!(held.is_empty(), "{held:?}");
        assert_eq!(done.len(), 1, "{done:?}");
    }

    #[test]
    fn the_window_never_holds_an_order_that_would_then_be_late() {
        // Placed at 0, ready at 100: past the 90-minute maximum already
        // (flagged hopeless; live, still dispatched at once).
        let mut b = batching();
        b.open(waiting(1, 7, 0.0, 100), at(0));
        let (done, held) = batching_round(&mut b, at(1), &[driver(1, east(0.5))]);
        assert!(held.is_empty(), "{held:?}");
        assert_eq!(done.len(), 1, "{done:?}");
        assert!(b.get(1).is_some_and(|e| e.hopeless));
    }

    #[test]
    fn a_restaurant_that_finds_nobody_widens_and_a_declined_driver_is_excluded() {
        let mut b = board();
        b.open(waiting(1, 7, 0.0, 0), at(0));
        let fleet = [driver(1, east(7.0))];
        assert!(round(&mut b, at(1), &fleet).is_empty());
        assert_eq!(b.get(1).map(|e| e.radius_km), Some(10.0));
        let done = round(&mut b, at(2), &fleet);
        assert_eq!(done.len(), 1);
        b.offer_ended(1, 1, true);
        assert!(round(&mut b, at(3), &fleet).is_empty());
    }
}
