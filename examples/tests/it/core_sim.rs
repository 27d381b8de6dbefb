//! The Consistent Core node ([`CoreNode`]) under `synod-sim`: the very node type the real
//! process runs, driven by simulated time, network and disk, with every fault kind of the
//! nemesis (partitions, clogs, loss, duplication, reordering, crashes with torn and lost
//! unsynced writes, pauses, clock jumps and drift). After every event no node may have
//! stopped and Raft's safety properties must hold (`synod_consensus::invariants`: election
//! safety, leader append-only, log matching, leader completeness, state-machine safety,
//! commit and applied indexes that never go back); each run's client history is checked
//! for linearizability, and progress is required after healing.
//!
//! The driver is `synod sim raft-kv`'s ([`raft_kv::simulation`]): the log store journals
//! every write to the simulated disk and replays it on restart, and a persistence request
//! becomes a simulated sync, acknowledged only when the simulator reports it done. This test
//! gives it its own timing, clients that also compare-and-set and read under the leader's
//! lease, small Raft batches, and no snapshots (see [`NodeOptions::without_snapshots`]).
//!
//! [`CoreNode`]: synod_examples::consistent_core::node::CoreNode
//!
//! `SYNOD_SEEDS=<count>` runs more seeds (CI default below), `SYNOD_SEED=<seed>` replays one.

use std::time::Duration;

use synod_examples::simulate::KvClients;
use synod_examples::simulate::raft_kv::{self, NodeOptions, RaftKvNode, Request};
use synod_sim::seeds::SeedRunner;
use synod_sim::{Counter, Coverage, KvModel, Linearizability, SimConfig, Simulation, Verdict};

const KEYS: u64 = 3;
const SEEDS_CI: u64 = 2000;

/// Reads (linearizable or under the lease), writes and compare-and-sets of [`KEYS`] keys,
/// each to a random node.
fn clients() -> KvClients<RaftKvNode> {
    KvClients::new(KEYS)
        .with_reads(&[Request::Read, Request::LeaseRead])
        .with_cas(Request::cas)
}

fn config(nodes: usize) -> SimConfig {
    SimConfig::builder(nodes)
        .clients(5)
        .safety_time(Duration::from_millis(1500))
        .liveness_time_max(Duration::from_secs(3))
        .client_timeout(Duration::from_millis(400))
        .data_centre()
        .build()
        .expect("valid config")
}

fn simulation(
    nodes: usize,
    seed: u64,
    clients: KvClients<RaftKvNode>,
) -> Simulation<RaftKvNode, KvClients<RaftKvNode>> {
    let options = NodeOptions::default()
        .without_snapshots()
        .with_raft_limits(8, 4096)
        .expect("limits above zero");
    raft_kv::simulation(config(nodes), seed, options, clients)
}

#[test]
fn core_node_is_linearizable_and_live_under_every_fault() {
    let runner = SeedRunner::new(
        "synod-examples",
        "core_sim::core_node_is_linearizable_and_live_under_every_fault",
    );
    let mut coverage = Coverage::default();
    let (mut events, mut ops, mut ok) = (0u64, 0usize, 0usize);
    let (mut linearizable, mut gave_up) = (0u64, 0u64);
    let seeds = runner.run(SEEDS_CI, |seed| {
        let nodes = if seed % 4 == 3 { 5 } else { 3 };
        let report = simulation(nodes, seed, clients()).run();
        coverage.merge(&report.coverage);
        events += report.events;
        ops += report.history.len();
        ok += report.history.ok_count();
        // A run that failed its invariant or progress is a violation; a checker that gave
        // up decided nothing, so the seed is counted apart, never as linearizable.
        match report.verdict(&mut Linearizability::new(KvModel)) {
            Verdict::Pass => linearizable += 1,
            Verdict::GaveUp(_) => gave_up += 1,
            Verdict::Violation(why) => return Err(why),
        }
        Ok(())
    });
    println!(
        "consistent core under synod-sim: {seeds} seeds, {events} events, {ops} operations ({ok} ok), \
         0 violations: {linearizable} seeds linearizable, the checker gave up on {gave_up}"
    );
    println!("coverage: {coverage}");
    if !runner.replaying() {
        assert!(ok > seeds as usize * 5, "the workload made progress");
    }
    if seeds >= SEEDS_CI {
        assert_eq!(
            coverage.missing(),
            Vec::<Counter>::new(),
            "every fault fired"
        );
    }
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let a = simulation(3, 7, clients()).run();
    let b = simulation(3, 7, clients()).run();
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.history.len(), b.history.len());
}

#[test]
fn the_checker_catches_stale_follower_reads() {
    // Known-bad: every read served from the node's own state, possibly stale.
    let caught = (0..200).find(|&seed| {
        let stale = clients().with_reads(&[Request::FollowerRead]);
        let report = simulation(3, seed, stale).run();
        // Caught by the checker itself: not a failed invariant, not a give-up.
        report.failure.is_none()
            && matches!(
                report.verdict(&mut Linearizability::new(KvModel)),
                Verdict::Violation(_)
            )
    });
    println!("stale follower reads caught by the linearizability checker at seed {caught:?}");
    assert!(
        caught.is_some(),
        "follower reads served as linearizable went unnoticed in 200 seeds"
    );
}
