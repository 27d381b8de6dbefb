//! Dotted version vector sets against a model of which writes each client had seen.

use std::collections::BTreeSet;

use proptest::prelude::*;
use synod_clocks::dvv::{SIBLINGS_MAX, WriteError};
use synod_clocks::{NodeId, Siblings, VersionVector};

use crate::{Rng, chance, seeds};

/// One replica of one key, with the model's view: write ids it has seen and, per write,
/// the write ids the writing client had seen (which that write supersedes).
#[derive(Clone)]
struct Replica {
    state: Siblings<u64>,
    seen: BTreeSet<u64>,
}

fn expected(replica: &Replica, superseded: &[BTreeSet<u64>]) -> Vec<u64> {
    let mut dead = BTreeSet::new();
    for w in &replica.seen {
        dead.extend(&superseded[*w as usize]);
    }
    replica.seen.difference(&dead).copied().collect()
}

/// Runs one seeded history of reads, writes and merges and returns (writes, the largest
/// sibling count, the number of replica states that differ from the model). With
/// `server_context`, writes use the server's context instead of the client's, the bug
/// that per-server version vectors without dots have.
fn run(seed: u64, server_context: bool) -> (usize, usize, usize) {
    const REPLICAS: usize = 3;
    let mut max_siblings = 0;
    let mut wrong = 0;
    let mut rng = Rng::new(seed);
    let mut replicas = vec![
        Replica {
            state: Siblings::new(),
            seen: BTreeSet::new()
        };
        REPLICAS
    ];
    let mut superseded: Vec<BTreeSet<u64>> = Vec::new();
    // Contexts held by clients between read and write: (context, seen write ids).
    let mut clients: Vec<(VersionVector, BTreeSet<u64>)> = Vec::new();
    for _ in 0..300 {
        match rng.below(3) {
            0 => {
                let r = rng.below(REPLICAS as u64) as usize;
                clients.push((
                    replicas[r].state.context().clone(),
                    replicas[r].seen.clone(),
                ));
            }
            1 if !clients.is_empty() => {
                // A client writes through any replica with the context it read.
                let (ctx, saw) = clients.swap_remove(rng.below(clients.len() as u64) as usize);
                let r = rng.below(REPLICAS as u64) as usize;
                let ctx = if server_context {
                    replicas[r].state.context().clone()
                } else {
                    ctx
                };
                let id = superseded.len() as u64;
                replicas[r]
                    .state
                    .write(NodeId::new(r as u64 + 1), &ctx, id)
                    .unwrap();
                replicas[r].seen.extend(&saw);
                replicas[r].seen.insert(id);
                superseded.push(saw);
            }
            _ => {
                let (a, b) = (
                    rng.below(REPLICAS as u64) as usize,
                    rng.below(REPLICAS as u64) as usize,
                );
                let other = replicas[b].clone();
                replicas[a].state.merge(&other.state);
                replicas[a].seen.extend(&other.seen);
            }
        }
        for r in &replicas {
            let mut got: Vec<u64> = r.state.values().copied().collect();
            got.sort_unstable();
            wrong += usize::from(got != expected(r, &superseded));
            assert!(
                r.state.context().len() <= REPLICAS,
                "context grew past the number of servers"
            );
            max_siblings = max_siblings.max(got.len());
        }
    }
    (superseded.len(), max_siblings, wrong)
}

#[test]
fn siblings_are_exactly_the_writes_not_superseded_by_a_write_that_saw_them() {
    let runs = seeds(30);
    let (mut writes, mut max_siblings) = (0, 0);
    for seed in 0..runs {
        let (w, m, wrong) = run(seed, false);
        assert_eq!(
            wrong, 0,
            "seed {seed}: a replica's siblings differ from the model"
        );
        writes += w;
        max_siblings = max_siblings.max(m);
    }
    println!(
        "dotted version vectors: {runs} seeds, {writes} writes, at most {max_siblings} siblings, 0 lost or resurrected"
    );
}

#[test]
fn the_model_catches_writes_that_use_the_servers_context() {
    // Using the server's context makes a write discard concurrent siblings its client
    // never saw: lost updates, which the model must flag.
    let wrong: usize = (0..5).map(|seed| run(seed, true).2).sum();
    assert!(wrong > 0, "lost updates went unnoticed");
}

/// The largest number of siblings with dots of one node.
fn siblings_per_node_max(state: &Siblings<u64>) -> usize {
    let mut counts = std::collections::BTreeMap::new();
    for (dot, _) in state.entries() {
        *counts.entry(dot.node).or_insert(0) += 1;
    }
    counts.into_values().max().unwrap_or(0)
}

/// A history crowded with blind writes, so that keys reach the sibling limit: returns
/// (writes accepted, writes refused, the largest sibling count).
fn run_crowded(seed: u64) -> (usize, usize, usize) {
    const REPLICAS: usize = 3;
    let mut rng = Rng::new(seed);
    let mut replicas = vec![
        Replica {
            state: Siblings::new(),
            seen: BTreeSet::new()
        };
        REPLICAS
    ];
    let mut superseded: Vec<BTreeSet<u64>> = Vec::new();
    let mut clients: Vec<(VersionVector, BTreeSet<u64>)> = Vec::new();
    let (mut refused, mut max_siblings) = (0, 0);
    for op in 0..1_500 {
        let r = rng.below(REPLICAS as u64) as usize;
        match rng.below(10) {
            0 => clients.push((
                replicas[r].state.context().clone(),
                replicas[r].seen.clone(),
            )),
            1..=6 => {
                // Mostly blind writes; now and then one with a context read earlier.
                let (ctx, saw) = if chance(&mut rng, 4) && !clients.is_empty() {
                    clients.swap_remove(rng.below(clients.len() as u64) as usize)
                } else {
                    (VersionVector::new(), BTreeSet::new())
                };
                let before = replicas[r].state.clone();
                let id = superseded.len() as u64;
                match replicas[r].state.write(NodeId::new(r as u64 + 1), &ctx, id) {
                    Ok(_) => {
                        replicas[r].seen.extend(&saw);
                        replicas[r].seen.insert(id);
                        superseded.push(saw);
                    }
                    Err(WriteError::TooManySiblings { siblings_max }) => {
                        assert_eq!(siblings_max, SIBLINGS_MAX);
                        let uncovered = before
                            .entries()
                            .iter()
                            .filter(|(d, _)| !ctx.contains(*d))
                            .count();
                        assert!(uncovered >= SIBLINGS_MAX, "refused with room left");
                        assert_eq!(replicas[r].state, before, "a refused write changed the set");
                        refused += 1;
                    }
                    Err(e) => panic!("seed {seed}: {e}"),
                }
            }
            _ => {
                let b = rng.below(REPLICAS as u64) as usize;
                let other = replicas[b].clone();
                replicas[r].state.merge(&other.state);
                replicas[r].seen.extend(&other.seen);
            }
        }
        for rep in &replicas {
            max_siblings = max_siblings.max(rep.state.len());
            assert!(
                siblings_per_node_max(&rep.state) <= SIBLINGS_MAX,
                "seed {seed}: a node has more than {SIBLINGS_MAX} siblings"
            );
        }
        if op % 100 == 99 {
            for rep in &replicas {
                let mut got: Vec<u64> = rep.state.values().copied().collect();
                got.sort_unstable();
                assert_eq!(got, expected(rep, &superseded), "seed {seed}, op {op}");
                // Whatever merges built, a peer can decode it.
                let bytes = postcard::to_allocvec(&rep.state).unwrap();
                assert_eq!(
                    postcard::from_bytes::<Siblings<u64>>(&bytes).unwrap(),
                    rep.state
                );
            }
        }
    }
    (superseded.len(), refused, max_siblings)
}

#[test]
fn the_sibling_limit_refuses_only_unresolving_writes_and_merged_sets_still_decode() {
    let runs = seeds(4);
    let (mut writes, mut refused, mut max_siblings) = (0, 0, 0);
    for seed in 0..runs {
        let (w, f, m) = run_crowded(seed);
        writes += w;
        refused += f;
        max_siblings = max_siblings.max(m);
    }
    println!(
        "sibling limit: {runs} seeds, {writes} writes accepted, {refused} refused at {SIBLINGS_MAX} siblings, \
         at most {max_siblings} siblings after merges, 0 lost, every state decodes"
    );
    assert!(refused > 0, "the limit was never reached");
    assert!(
        max_siblings > SIBLINGS_MAX,
        "no merge combined two full replicas"
    );
}

proptest! {
    #[test]
    fn merge_is_commutative_associative_and_idempotent(ops in prop::collection::vec((0u64..3, 0u64..3, any::<bool>()), 1..40)) {
        // Build three replicas from a random op sequence, then check the merge laws.
        let mut reps: Vec<Siblings<u64>> = vec![Siblings::new(); 3];
        for (i, &(a, b, write)) in ops.iter().enumerate() {
            let (a, b) = (a as usize, b as usize);
            if write {
                let ctx = if i % 2 == 0 { reps[b].context().clone() } else { VersionVector::new() };
                reps[a].write(NodeId::new(a as u64 + 1), &ctx, i as u64).unwrap();
            } else {
                let other = reps[b].clone();
                reps[a].merge(&other);
            }
        }
        let m = |x: &Siblings<u64>, y: &Siblings<u64>| { let mut z = x.clone(); z.merge(y); z };
        let (a, b, c) = (&reps[0], &reps[1], &reps[2]);
        prop_assert_eq!(m(a, b), m(b, a));
        prop_assert_eq!(m(&m(a, b), c), m(a, &m(b, c)));
        prop_assert_eq!(m(a, a), a.clone());
    }
}
