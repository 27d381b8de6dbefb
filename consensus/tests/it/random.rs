//! Randomized whole-cluster runs on the test harness: random ticks, message loss,
//! duplication and reordering, partitions, delayed syncs, crashes that lose unsynced
//! writes, and restarts, with Raft's safety properties checked after every event and
//! liveness required after healing. Two reintroduced bugs must be caught.
//!
//! `SYNOD_CONSENSUS_SEEDS` sets the number of seeds (default 2000 for CI);
//! `SYNOD_CONSENSUS_SEED` replays one seed.
//!
//! These runs use the crate's own harness rather than synod-sim: they drive the node
//! directly, message by message, which reaches states (a sync delayed past many messages,
//! a duplicate delivered after a crash) with few events.

use std::collections::BTreeMap;

use bytes::Bytes;
use synod_consensus::{Bugs, Entry, LogIndex, NodeId, Payload, Role, SplitMix64};

use crate::harness::Cluster;

/// Which faults a seed enables (swarm testing: each seed a random subset).
#[derive(Clone, Copy, Debug)]
struct Faults {
    loss: bool,
    duplicate: bool,
    reorder: bool,
    crash: bool,
    partition: bool,
}

#[derive(Debug, Default)]
struct Stats {
    events: u64,
    committed: usize,
    acked_writes: usize,
    crashes: u64,
    elections: u64,
}

fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("SYNOD_CONSENSUS_SEED") {
        return vec![seed.parse().expect("SYNOD_CONSENSUS_SEED is a number")];
    }
    let n = std::env::var("SYNOD_CONSENSUS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    (0..n).collect()
}

/// One run. Returns the first safety or liveness violation.
fn run(seed: u64, bugs: Bugs, events: u64) -> Result<Stats, String> {
    let mut rng = SplitMix64::new(seed ^ 0x5eed);
    let buggy = bugs != Bugs::default();
    // Bug hunts use a fixed, hostile setup (stated in each test): no pre-vote and no
    // check-quorum (both make elections rarer), short timeouts for contended elections,
    // one entry per message so that a new leader's old entries travel ahead of its no-op
    // (the window the old-term commit bug needs), and every fault enabled.
    let nodes = if buggy || rng.range(0, 2) == 0 { 3 } else { 5 };
    let faults = if buggy {
        Faults {
            loss: true,
            duplicate: true,
            reorder: true,
            crash: true,
            partition: true,
        }
    } else {
        Faults {
            loss: rng.range(0, 2) == 0,
            duplicate: rng.range(0, 2) == 0,
            reorder: rng.range(0, 2) == 0,
            crash: rng.range(0, 3) != 0,
            partition: rng.range(0, 2) == 0,
        }
    };
    let in_flight = if buggy { 1 } else { rng.range(1, 8) as usize };
    let bytes = if buggy {
        1
    } else {
        [1, 64, 1 << 20][rng.range(0, 3) as usize]
    };
    let pre_vote = !buggy && rng.range(0, 4) != 0;
    let check_quorum = !buggy && rng.range(0, 4) != 0;
    let timeouts = if buggy { 10..13 } else { 10..20 };
    let mut c = Cluster::new(nodes, |b| {
        b.seed(seed.wrapping_mul(31))
            .election_timeout_ticks(timeouts.clone())
            .in_flight_max(in_flight)
            .append_bytes_max(bytes)
            .pre_vote(pre_vote)
            .check_quorum(check_quorum)
            .bugs(bugs)
    });
    // Each node gets its own seed, derived from the run's.
    c.auto_sync = false;
    let ids = c.ids.clone();
    let f = (nodes as usize - 1) / 2;
    let mut stats = Stats::default();
    let mut proposed: BTreeMap<Bytes, (NodeId, LogIndex)> = BTreeMap::new();
    let mut next_value = 0u64;
    for _ in 0..events {
        stats.events += 1;
        let pick = ids[rng.range(0, ids.len() as u64) as usize];
        match rng.range(0, 100) {
            0..=24 => c.tick(pick),
            25..=59 => {
                if c.net.is_empty() {
                    c.tick(pick);
                    continue;
                }
                let at = if faults.reorder {
                    rng.range(0, c.net.len() as u64) as usize
                } else {
                    0
                };
                let msg = c.net.remove(at).expect("index in range");
                if faults.loss && rng.range(0, 10) == 0 {
                    continue;
                }
                if faults.duplicate && rng.range(0, 10) == 0 {
                    c.net.push_back(msg.clone());
                }
                c.deliver(msg);
            }
            60..=74 => c.sync(pick),
            75..=84 => {
                if let Some(leader) = c.leader() {
                    next_value += 1;
                    let value = Bytes::from(format!("v{seed}-{next_value}"));
                    if let Ok(index) = c.node_mut(leader).propose(value.clone()) {
                        proposed.insert(value, (leader, index));
                        c.process(leader);
                    }
                }
            }
            85..=87 if faults.crash => {
                // Bug hunts crash the leader half the time: leaders that die with
                // half-replicated entries make the histories the bugs need.
                let victim = match c.leader() {
                    Some(l) if buggy && rng.range(0, 2) == 0 => l,
                    _ => pick,
                };
                if c.down.len() < f && c.nodes.contains_key(&victim) {
                    c.crash(victim);
                    stats.crashes += 1;
                }
            }
            88..=91 if faults.crash => {
                if let Some(&id) = c.down.keys().next() {
                    c.restart(id);
                }
            }
            92..=93 if faults.partition => {
                c.heal();
                if buggy && let Some(l) = c.leader() {
                    c.isolate(l);
                } else if rng.range(0, 2) == 0 {
                    c.isolate(pick);
                } else {
                    let other = ids[rng.range(0, ids.len() as u64) as usize];
                    c.blocked.insert((pick, other));
                }
            }
            94..=95 => c.heal(),
            _ => c.tick_all(),
        }
        if let Some(v) = &c.violation {
            return Err(format!("seed {seed}: {v}"));
        }
    }
    // Liveness: heal everything; a leader within 10 election timeouts, and a write commits.
    c.heal();
    for id in c.down.keys().copied().collect::<Vec<_>>() {
        c.restart(id);
    }
    c.auto_sync = true;
    c.sync_all();
    let election_ticks_max = 20 * 10;
    let mut leader = None;
    for _ in 0..election_ticks_max {
        c.tick_all();
        c.deliver_all();
        if let Some(l) = c.leader()
            && c.node(l).commit_index() >= c.node(l).last_index()
        {
            leader = Some(l);
            break;
        }
    }
    let Some(leader) = leader else {
        let states: Vec<String> = c
            .nodes
            .values()
            .map(|n| {
                format!(
                    "{} {:?} {} vote {:?} leader {:?} last {} commit {} durable {}",
                    n.id(),
                    n.role(),
                    n.term(),
                    n.vote(),
                    n.leader(),
                    n.last_index(),
                    n.commit_index(),
                    n.durable_index()
                )
            })
            .collect();
        return Err(format!(
            "seed {seed}: no leader within 10 election timeouts of healing: {states:#?}"
        ));
    };
    let value = Bytes::from(format!("final{seed}"));
    let index = c
        .node_mut(leader)
        .propose(value.clone())
        .map_err(|e| format!("seed {seed}: {e}"))?;
    c.process(leader);
    for _ in 0..20 {
        c.tick_all();
        c.deliver_all();
    }
    if c.node(leader).commit_index() < index {
        return Err(format!("seed {seed}: the final write did not commit"));
    }
    if let Some(v) = &c.violation {
        return Err(format!("seed {seed}: {v}"));
    }
    // Client oracle: a write is acknowledged when its leader applied it at the proposed
    // index; every acknowledged write is in the final log, and nothing committed was
    // never proposed. The final leader's log holds every committed entry (Leader
    // Completeness, checked throughout; these runs never compact).
    let committed: BTreeMap<LogIndex, Entry> = c
        .log(leader)
        .into_iter()
        .take_while(|e| e.index <= c.node(leader).commit_index())
        .map(|e| (e.index, e))
        .collect();
    let mut in_log: BTreeMap<&[u8], LogIndex> = BTreeMap::new();
    for (index, entry) in &committed {
        if let Payload::Command(data) = &entry.payload {
            if !data.starts_with(b"final") && !proposed.contains_key(data) {
                return Err(format!("seed {seed}: phantom value at {index}"));
            }
            if in_log.insert(&data[..], *index).is_some() {
                return Err(format!("seed {seed}: a value committed twice"));
            }
        }
    }
    for (value, (_, index)) in &proposed {
        if let Some(entry) = committed.get(index)
            && entry.payload == Payload::Command(value.clone())
        {
            stats.acked_writes += 1;
        }
    }
    stats.committed = committed.len();
    stats.elections = c.nodes.values().map(|n| n.term().get()).max().unwrap_or(0);
    let _ = Role::Leader;
    Ok(stats)
}

#[test]
fn random_runs_keep_every_safety_property_and_recover() {
    let seeds = seeds();
    let mut totals = Stats::default();
    for &seed in &seeds {
        match run(seed, Bugs::default(), 3000) {
            Ok(stats) => {
                totals.events += stats.events;
                totals.committed += stats.committed;
                totals.acked_writes += stats.acked_writes;
                totals.crashes += stats.crashes;
                totals.elections += stats.elections;
            }
            Err(e) => panic!(
                "{e}\nreplay: SYNOD_CONSENSUS_SEED=<seed> cargo test -p synod-consensus --test it random_runs"
            ),
        }
    }
    println!(
        "random runs: {} seeds, {} events, {} committed entries, {} acknowledged writes kept, \
         {} crashes, {} terms, 0 violations",
        seeds.len(),
        totals.events,
        totals.committed,
        totals.acked_writes,
        totals.crashes,
        totals.elections
    );
    assert!(totals.committed > seeds.len(), "the runs made progress");
    assert!(totals.crashes > 0, "crashes were injected");
}

/// Runs seeds with `bugs` until a violation; returns how many seeds it took.
fn seeds_to_catch(bugs: Bugs, seeds_max: u64) -> Option<(u64, String)> {
    for seed in 0..seeds_max {
        let outcome = std::panic::catch_unwind(|| run(seed, bugs, 3000));
        match outcome {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Some((seed + 1, e)),
            Err(_) => return Some((seed + 1, "panic".to_string())),
        }
    }
    None
}

#[test]
fn reintroduced_bug_committing_an_old_term_entry_by_counting_is_caught() {
    let bugs = Bugs {
        commit_old_term_by_counting: true,
        ..Bugs::default()
    };
    // Measured: first caught at seed 160 (3 nodes, the hostile setup above).
    let (seeds, what) = seeds_to_catch(bugs, 300).expect("caught within 300 seeds");
    println!("old-term commit bug caught after {seeds} seeds: {what}");
}

#[test]
fn reintroduced_bug_not_persisting_the_vote_is_caught() {
    let bugs = Bugs {
        skip_vote_persistence: true,
        ..Bugs::default()
    };
    let (seeds, what) = seeds_to_catch(bugs, 300).expect("caught within 300 seeds");
    println!("vote persistence bug caught after {seeds} seeds: {what}");
}
