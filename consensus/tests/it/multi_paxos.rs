//! Multi-Paxos through `MultiPaxosNode`, with clients at two nodes that compete for
//! leadership, under loss, duplication, reordering and crashes that lose unsynced writes:
//! no slot is ever handed up with two values, no command is chosen twice, every answered
//! request is in the log at its slot, and a final leader fills every gap so the log has
//! no holes. A leader that ignores the values its promises report is caught.
//!
//! `SYNOD_MULTI_PAXOS_SEEDS` sets the seed count (default 300).

use std::collections::{BTreeMap, BTreeSet};

use synod_consensus::NodeId;
use synod_consensus::paxos::Ballot;
use synod_consensus::paxos::multi::MultiMessage;
use synod_consensus::paxos::multi::SlotValue;
use synod_consensus::paxos::{MultiPaxosNode, MultiWrite, NodeConfig};
use synod_node::{RequestId, Rng};

use crate::paxos::{Cluster, Faults, promise_waits_for_its_persist};

fn n(id: u64) -> NodeId {
    NodeId::new(id)
}

type Node = MultiPaxosNode<u64>;

fn cluster(seed: u64, size: u64, broken: bool) -> Cluster<Node> {
    Cluster::new(
        seed,
        size,
        Faults::storm(),
        Box::new(move |id, durable: &[MultiWrite<u64>]| {
            let config = NodeConfig::new(id, (1..=size).map(n))
                .unwrap()
                .retry_timeout_ms(60)
                .seed(seed ^ id.get());
            let node = MultiPaxosNode::restore(config, 4096, 8, durable.iter().cloned());
            if broken && id == n(2) {
                node.broken_ignoring_reports()
            } else {
                node
            }
        }),
    )
}

/// What the nodes handed up, checked as it comes: one value per slot, each command once.
#[derive(Default)]
struct Log {
    slots: BTreeMap<u64, SlotValue<u64>>,
    commands: BTreeSet<u64>,
    /// How many of the cluster's applies are checked.
    checked: usize,
}

impl Log {
    fn check(&mut self, c: &Cluster<Node>, seed: u64) -> Result<(), String> {
        for (node, _, (slot, value)) in &c.applied[self.checked..] {
            match self.slots.get(slot) {
                Some(v) if v != value => {
                    return Err(format!(
                        "seed {seed}: slot {slot} chosen as {v:?} and, at {node}, {value:?}"
                    ));
                }
                Some(_) => {}
                None => {
                    if let SlotValue::Command(command) = value
                        && !self.commands.insert(*command)
                    {
                        return Err(format!("seed {seed}: command {command} chosen twice"));
                    }
                    self.slots.insert(*slot, value.clone());
                }
            }
        }
        self.checked = c.applied.len();
        Ok(())
    }
}

/// One run; returns how many slots were chosen, and crashes.
fn run(seed: u64, broken: bool) -> Result<(usize, u64), String> {
    let mut rng = Rng::new(seed);
    let size = if rng.below(2) == 0 { 3 } else { 5 };
    let mut c = cluster(seed, size, broken);
    // Commands are numbered from 1 and sent to node 1 or 2; request id = command.
    let mut next_command = 0u64;
    let mut log = Log::default();
    for _ in 0..3000u64 {
        if rng.below(8) == 0 {
            next_command += 1;
            let node = n(rng.between(1, 2));
            c.request(node, RequestId(next_command), next_command);
        }
        c.step();
        log.check(&c, seed)?;
    }
    // Calm: a last command at node 3, which leads and so fills every hole below it.
    c.faults = Faults::calm();
    let last = next_command + 1;
    c.request(n(3), RequestId(last), last);
    let answered = c.run_until(20_000, |c| {
        c.replies.iter().any(|(_, id, _)| *id == RequestId(last))
    });
    if !answered {
        return Err(format!("seed {seed}: the last command was not answered"));
    }
    // Let the news of the last slots (and the other nodes' last commands) arrive.
    if !c.run_until(20_000, |c| c.in_flight() == 0) {
        return Err(format!("seed {seed}: the network never went quiet"));
    }
    log.check(&c, seed)?;
    let log = log.slots;
    let node = c.node(n(3));
    if let Some(max) = log.keys().next_back() {
        for slot in 0..=*max {
            match (node.chosen(slot), log.get(&slot)) {
                (None, _) => return Err(format!("seed {seed}: hole at slot {slot}")),
                (Some(v), Some(s)) if v != s => {
                    return Err(format!("seed {seed}: slot {slot} changed"));
                }
                _ => {}
            }
        }
    }
    // Every request answered with a slot holds its command there.
    for (_, id, response) in &c.replies {
        if let Ok(slot) = response
            && log.get(slot) != Some(&SlotValue::Command(id.0))
        {
            return Err(format!(
                "seed {seed}: command {} answered at slot {slot}, which holds {:?}",
                id.0,
                log.get(slot)
            ));
        }
    }
    Ok((log.len(), c.crashes))
}

#[test]
fn competing_leaders_never_choose_two_values_for_a_slot() {
    let seeds: u64 = std::env::var("SYNOD_MULTI_PAXOS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let (mut slots, mut crashes) = (0, 0);
    for seed in 0..seeds {
        let (chosen, crashed) = run(seed, false).unwrap();
        slots += chosen;
        crashes += crashed;
    }
    println!(
        "multi-paxos nodes: {seeds} seeds, {slots} slots chosen, {crashes} crashes, 0 conflicts, 0 holes"
    );
    assert!(slots > seeds as usize * 10, "the leaders made progress");
}

#[test]
fn a_leader_ignoring_promised_values_is_caught() {
    let caught = (0..500).find(|&seed| run(seed, true).is_err());
    let seed = caught.expect("caught within 500 seeds");
    println!(
        "broken leader caught at seed {seed}: {}",
        run(seed, true).unwrap_err()
    );
}

#[test]
fn a_promise_is_not_sent_before_its_persist_is_acknowledged() {
    let config = NodeConfig::new(n(2), [1, 2, 3].map(n)).unwrap();
    let mut node: Node = MultiPaxosNode::new(config, 64, 8);
    let ballot = Ballot {
        round: 1,
        node: n(1),
    };
    let write = promise_waits_for_its_persist(
        &mut node,
        &MultiMessage::Prepare { ballot, from: 0 },
        None,
        |m| matches!(m, MultiMessage::Promise { ok: true, .. }),
    );
    assert_eq!(write, MultiWrite::Promise(ballot));
}
