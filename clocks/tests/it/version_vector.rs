//! Version vectors: the algebra (proptest) and causality against a simulated history.

use proptest::prelude::*;
use synod_clocks::{Causality, NodeId, VersionVector};

use crate::{Rng, seeds};

fn vv() -> impl Strategy<Value = VersionVector> {
    prop::collection::vec((1u64..7, 1u64..4), 0..6).prop_map(|entries| {
        entries
            .into_iter()
            .map(|(n, c)| (NodeId::new(n), c))
            .collect()
    })
}

fn flip(c: Causality) -> Causality {
    match c {
        Causality::Before => Causality::After,
        Causality::After => Causality::Before,
        other => other,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn merge_is_commutative_associative_and_idempotent(a in vv(), b in vv(), c in vv()) {
        prop_assert_eq!(a.merged(&b), b.merged(&a));
        prop_assert_eq!(a.merged(&b).merged(&c), a.merged(&b.merged(&c)));
        prop_assert_eq!(a.merged(&a), a.clone());
    }

    #[test]
    fn compare_agrees_with_merge(a in vv(), b in vv()) {
        let m = a.merged(&b);
        let expected = match (m == b, m == a) {
            (true, true) => Causality::Equal,
            (true, false) => Causality::Before,
            (false, true) => Causality::After,
            (false, false) => Causality::Concurrent,
        };
        prop_assert_eq!(a.compare(&b), expected);
        prop_assert_eq!(b.compare(&a), flip(expected));
        prop_assert!(m.descends(&a) && m.descends(&b));
        prop_assert_eq!(a.descends(&b), matches!(expected, Causality::After | Causality::Equal));
        prop_assert_eq!(a.dominates(&b), expected == Causality::After);
    }

    #[test]
    fn representation_stays_sorted_and_round_trips(a in vv(), b in vv()) {
        let m = a.merged(&b);
        let entries: Vec<_> = m.iter().collect();
        prop_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        prop_assert!(entries.iter().all(|e| e.1 > 0));
        let bytes = postcard::to_allocvec(&m).unwrap();
        prop_assert_eq!(postcard::from_bytes::<VersionVector>(&bytes).unwrap(), m);
    }

    #[test]
    fn pruning_never_orders_concurrent_vectors_nor_reverses_order(
        a in vv(), b in vv(), retired in prop::collection::vec(1u64..7, 0..3)
    ) {
        // The stable vector: what both have seen (element-wise minimum).
        let stable: VersionVector = a
            .iter()
            .map(|(n, c)| (n, c.min(b.get(n))))
            .collect();
        let retired: Vec<NodeId> = retired.into_iter().map(NodeId::new).collect();
        let before = a.compare(&b);
        let mut pruned = a.clone();
        pruned.prune(&retired, &stable);
        let after = pruned.compare(&b);
        prop_assert!(pruning_allowed(before, after), "{:?} became {:?}", before, after);
    }
}

/// Whether pruning may turn comparison `before` into `after`: at worst a false conflict
/// or a false "before", never an order that hides a conflict or the pruned vector's own
/// events.
fn pruning_allowed(before: Causality, after: Causality) -> bool {
    match before {
        Causality::Concurrent => after == Causality::Concurrent,
        Causality::Before => after == Causality::Before,
        Causality::Equal => matches!(after, Causality::Equal | Causality::Before),
        Causality::After => matches!(after, Causality::After | Causality::Concurrent),
    }
}

#[test]
fn the_pruning_check_catches_pruning_without_a_stable_vector() {
    // Known-bad: dropping retired nodes' entries whatever the stable vector says turns a
    // conflict into an order.
    let n = NodeId::new;
    let a: VersionVector = [(n(1), 2), (n(2), 1)].into_iter().collect();
    let b: VersionVector = [(n(1), 1), (n(2), 2)].into_iter().collect();
    let naive: VersionVector = a.iter().filter(|e| e.0 != n(1)).collect();
    assert!(!pruning_allowed(a.compare(&b), naive.compare(&b)));
    // The real prune keeps the entry: the stable vector (the minimum) does not cover it.
    let stable: VersionVector = [(n(1), 1), (n(2), 1)].into_iter().collect();
    let mut pruned = a.clone();
    assert_eq!(pruned.prune(&[n(1)], &stable), 0);
    assert!(pruning_allowed(a.compare(&b), pruned.compare(&b)));
}

/// A bit set of event ids: an event's causal history.
#[derive(Clone)]
struct History(Vec<u64>);

impl History {
    fn new(n: usize) -> Self {
        History(vec![0; n.div_ceil(64)])
    }
    fn insert(&mut self, e: usize) {
        self.0[e / 64] |= 1 << (e % 64);
    }
    fn contains(&self, e: usize) -> bool {
        self.0[e / 64] & (1 << (e % 64)) != 0
    }
    fn union(&mut self, other: &History) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }
}

/// A simulated history: every event's version vector and causal history.
fn simulate_history(seed: u64, nodes: usize, events_max: usize) -> Vec<(VersionVector, History)> {
    let mut rng = Rng::new(seed);
    let mut clocks = vec![VersionVector::new(); nodes];
    let mut histories = vec![History::new(events_max); nodes];
    // In-flight messages: (destination, vector, history).
    let mut network: Vec<(usize, VersionVector, History)> = Vec::new();
    let mut events: Vec<(VersionVector, History)> = Vec::new();
    while events.len() < events_max {
        let node = rng.below(nodes as u64) as usize;
        let id = events.len();
        match rng.below(3) {
            0 if !network.is_empty() => {
                let i = rng.below(network.len() as u64) as usize;
                let (to, v, h) = network.swap_remove(i);
                clocks[to].merge(&v);
                histories[to].union(&h);
                clocks[to].increment(NodeId::new(to as u64 + 1)).unwrap();
                histories[to].insert(id);
                events.push((clocks[to].clone(), histories[to].clone()));
                continue;
            }
            1 => {
                clocks[node]
                    .increment(NodeId::new(node as u64 + 1))
                    .unwrap();
                histories[node].insert(id);
                let to = rng.below(nodes as u64) as usize;
                network.push((to, clocks[node].clone(), histories[node].clone()));
            }
            _ => {
                clocks[node]
                    .increment(NodeId::new(node as u64 + 1))
                    .unwrap();
                histories[node].insert(id);
            }
        }
        events.push((clocks[node].clone(), histories[node].clone()));
    }
    events
}

/// Compares every pair of events with `compare` and the ground truth; returns
/// (pairs, concurrent pairs, mismatches).
fn check_history(
    events: &[(VersionVector, History)],
    compare: impl Fn(&VersionVector, &VersionVector) -> Causality,
) -> (u64, u64, u64) {
    let (mut pairs, mut concurrent, mut mismatches) = (0, 0, 0);
    for (i, (vi, hi)) in events.iter().enumerate() {
        for (j, (vj, hj)) in events.iter().enumerate() {
            let truth = match (hj.contains(i), hi.contains(j)) {
                _ if i == j => Causality::Equal,
                (true, false) => Causality::Before,
                (false, true) => Causality::After,
                (false, false) => Causality::Concurrent,
                (true, true) => unreachable!("a cycle in the history"),
            };
            pairs += 1;
            concurrent += u64::from(truth == Causality::Concurrent);
            mismatches += u64::from(compare(vi, vj) != truth);
        }
    }
    (pairs, concurrent, mismatches)
}

#[test]
fn causality_matches_the_ground_truth_of_simulated_histories() {
    let runs = seeds(20);
    let (mut pairs, mut concurrent) = (0, 0);
    for seed in 0..runs {
        let events = simulate_history(seed, 5, 300);
        let (p, c, mismatches) = check_history(&events, VersionVector::compare);
        assert_eq!(mismatches, 0, "seed {seed}");
        pairs += p;
        concurrent += c;
    }
    println!(
        "version vectors: {runs} histories, {pairs} event pairs checked ({concurrent} concurrent), 0 mismatches"
    );
}

#[test]
fn the_history_check_catches_a_scalar_clock_posing_as_a_vector() {
    // Comparing the sums of the counters is what a Lamport clock can do: it orders every
    // pair, so it must get concurrent pairs wrong.
    let scalar = |a: &VersionVector, b: &VersionVector| {
        let (x, y) = (
            a.iter().map(|e| e.1).sum::<u64>(),
            b.iter().map(|e| e.1).sum::<u64>(),
        );
        match x.cmp(&y) {
            core::cmp::Ordering::Less => Causality::Before,
            core::cmp::Ordering::Greater => Causality::After,
            core::cmp::Ordering::Equal => Causality::Equal,
        }
    };
    let events = simulate_history(1, 5, 300);
    let (_, concurrent, mismatches) = check_history(&events, scalar);
    assert!(
        concurrent > 0 && mismatches >= concurrent,
        "{mismatches} mismatches"
    );
}
