//! The counted figures of BENCHMARKS.md, with their goals asserted: load imbalance against
//! jump, rendezvous and ring hashing computed in the same run, and two-phase commit's
//! messages and persists per transaction against the protocol's minimum. The
//! `partitioning` bench prints the same figures (and the timed ones) as `ratio` lines;
//! both take their baselines from one module.

#[path = "../../benches/baselines/mod.rs"]
mod baselines;

use baselines::{balance, two_phase_commit};

#[test]
fn load_imbalance_against_jump_rendezvous_and_ring_hashing() {
    let b = balance(10, 200_000);
    // Goal: within 5% of jump hashing's balance, and better than a ring of 100 points a node.
    assert!(b.ours / b.jump <= 1.05, "{} vs {}", b.ours, b.jump);
    assert!(b.ours < b.ring100 && b.ring100 < b.ring3);
}

#[test]
fn two_phase_commit_messages_and_persists_per_transaction_against_the_minimum() {
    let c = two_phase_commit(100);
    println!(
        "two-phase commit, {} participants: {} messages and {} persists per transaction (minimum {} and {})",
        c.participants, c.messages, c.persists, c.messages_min, c.persists_min
    );
    assert_eq!(c.messages, c.messages_min);
    // One more: the coordinator's end record, written lazily (nothing waits for it).
    assert_eq!(c.persists, c.persists_min + 1.0);
}
