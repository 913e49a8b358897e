//! The rebalancing rule, as a pure function of one node's view: every node
//! runs it on what it sees, and the leases' compare-and-set settles races.
//!
//! With R regions over N live nodes, a node holds at most ceil(R / N): past
//! that it hands the extra ones over; below it, it claims free ones. When
//! nothing is free but a node holds fewer than floor(R / N), a node above
//! floor hands one over. Counts end within one of each other.

use super::region::Region;
use std::collections::{BTreeMap, BTreeSet};

/// What one node sees.
pub struct View<'a> {
    pub me: &'a str,
    /// Every region there is.
    pub regions: &'a BTreeSet<Region>,
    /// Live nodes (with `me`) and how many leases each holds.
    pub counts: &'a BTreeMap<String, usize>,
    /// The regions this node holds.
    pub mine: &'a BTreeSet<Region>,
    /// Regions no live lease holds.
    pub free: &'a BTreeSet<Region>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub claim: Vec<Region>,
    pub release: Vec<Region>,
}

pub fn plan(view: &View<'_>) -> Plan {
    let nodes = view.counts.len().max(1);
    let total = view.regions.len();
    let floor = total / nodes;
    let ceil = total.div_ceil(nodes);
    let mine = view.mine.len();
    let mut plan = Plan::default();
    if mine > ceil {
        plan.release = view.mine.iter().rev().take(mine - ceil).copied().collect();
    } else if mine < ceil && !view.free.is_empty() {
        // Nodes start at different places in the free list, so that two
        // nodes claiming at once mostly ask for different regions.
        let mut free: Vec<Region> = view.free.iter().copied().collect();
        free.sort_by_key(|region| spread(view.me, region));
        plan.claim = free.into_iter().take(ceil - mine).collect();
    } else if view.free.is_empty()
        && mine > floor
        && view.counts.values().any(|&count| count < floor)
    {
        plan.release = view.mine.iter().next_back().copied().into_iter().collect();
    }
    plan
}

/// A stable per-node order of regions (FNV-1a of node and region).
fn spread(node: &str, region: &Region) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node.bytes().chain(region.key().into_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions(n: i32) -> BTreeSet<Region> {
        (0..n)
            .map(|i| Region::parse(&format!("r{i}_0")).unwrap())
            .collect()
    }

    /// Runs every node's plan in turn, applying claims of free regions
    /// only (the compare-and-set), until nothing changes.
    fn settle(
        nodes: &[&str],
        all: &BTreeSet<Region>,
        held: &mut BTreeMap<String, BTreeSet<Region>>,
    ) {
        for _round in 0..50 {
            let mut changed = false;
            for node in nodes {
                let counts: BTreeMap<String, usize> = nodes
                    .iter()
                    .map(|n| (n.to_string(), held.get(*n).map_or(0, |h| h.len())))
                    .collect();
                let taken: BTreeSet<Region> = held.values().flatten().copied().collect();
                let free: BTreeSet<Region> = all.difference(&taken).copied().collect();
                let mine = held.get(*node).cloned().unwrap_or_default();
                let plan = plan(&View {
                    me: node,
                    regions: all,
                    counts: &counts,
                    mine: &mine,
                    free: &free,
                });
                let entry = held.entry(node.to_string()).or_default();
                for region in &plan.release {
                    changed |= entry.remove(region);
                }
                for region in plan.claim {
                    if free.contains(&region) {
                        changed |= entry.insert(region);
                    }
                }
            }
            if !changed {
                return;
            }
        }
        panic!("did not settle: {held:?}");
    }

    #[test]
    fn regions_end_spread_within_one_over_the_live_nodes_after_joins_and_leaves() {
        let all = regions(10);
        let mut held = BTreeMap::new();
        settle(&["a"], &all, &mut held);
        assert_eq!(held["a"].len(), 10);
        settle(&["a", "b"], &all, &mut held);
        assert_eq!((held["a"].len(), held["b"].len()), (5, 5));
        settle(&["a", "b", "c"], &all, &mut held);
        let mut counts: Vec<usize> = held.values().map(|h| h.len()).collect();
        counts.sort();
        assert_eq!(counts, vec![3, 3, 4]);
        // b leaves: its regions become free and the others take them.
        held.remove("b");
        settle(&["a", "c"], &all, &mut held);
        assert_eq!((held["a"].len(), held["c"].len()), (5, 5));
        let union: BTreeSet<Region> = held.values().flatten().copied().collect();
        assert_eq!(union, all);
    }

    #[test]
    fn fewer_regions_than_nodes_leaves_some_nodes_without_one() {
        let all = regions(2);
        let mut held = BTreeMap::new();
        settle(&["a", "b", "c"], &all, &mut held);
        let owned: usize = held.values().map(|h| h.len()).sum();
        assert_eq!(owned, 2);
        assert!(held.values().all(|h| h.len() <= 1));
    }
}
