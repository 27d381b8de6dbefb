//! The ABD register under faults: a small seeded simulation written for these tests.
//!
//! Each seed runs 3 or 5 nodes with one client each over a network that loses, duplicates,
//! delays (and so reorders) messages and partitions the nodes, and crashes and restarts up
//! to `f` nodes at a time (a restarted node recovers the replica state it persisted). Each
//! seed enables a random subset of those faults (swarm testing). The clients' history is
//! checked for linearizability with `lin::check`.
//!
//! `SYNOD_QUORUM_SEEDS` sets the number of seeds for the correct register (default 2000).
//! The broken variants must be caught within the stated number of seeds.

use std::collections::BTreeMap;

use synod_quorum::{
    AbdConfig, AbdEffect, AbdMessage, AbdNode, AbdOpId, FlexibleConfig, NodeId, Tag,
};

use crate::lin::{self, Kind};

/// splitmix64: small, seedable, good enough for schedules.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `permille / 1000`.
    pub fn chance(&mut self, permille: u64) -> bool {
        self.below(1000) < permille
    }
}

/// Which variant of the register runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Correct,
    /// R + W <= N.
    NoOverlap,
    /// Reads skip the write-back phase.
    NoWriteBack,
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    ops_ok: u64,
    ops_unknown: u64,
    reads_failed: u64,
    dropped: u64,
    duplicated: u64,
    partitions: u64,
    crashes: u64,
}

impl Stats {
    fn add(&mut self, o: Stats) {
        self.ops_ok += o.ops_ok;
        self.ops_unknown += o.ops_unknown;
        self.reads_failed += o.reads_failed;
        self.dropped += o.dropped;
        self.duplicated += o.duplicated;
        self.partitions += o.partitions;
        self.crashes += o.crashes;
    }
}

#[derive(Debug)]
enum Event {
    Deliver {
        from: usize,
        to: usize,
        message: AbdMessage<u64>,
    },
    Tick(usize),
    Client(usize),
    Crash(usize),
    Restart(usize),
    Partition(u32),
    Heal,
}

const TICK: u64 = 10;
const TIME_MAX: u64 = 20_000;

struct Sim {
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    configs: Vec<AbdConfig>,
    nodes: Vec<Option<AbdNode<u64>>>,
    disks: Vec<(Tag, Option<u64>)>,
    incarnations: Vec<u64>,
    /// The client's operation in flight on each node, with its history index.
    in_flight: Vec<Option<(AbdOpId, usize)>>,
    history: Vec<Option<lin::Op>>,
    ops_left: u64,
    next_value: u64,
    // Faults enabled for this seed.
    loss_permille: u64,
    dup_permille: u64,
    delay_max: u64,
    crashes_max: usize,
    /// Nodes on side A of a partition (the rest are side B); `None` when healed.
    partition: Option<u32>,
    stats: Stats,
}

impl Sim {
    fn new(seed: u64, variant: Variant) -> Self {
        let mut rng = Rng::new(seed);
        let n = if rng.chance(500) { 3 } else { 5 };
        let voters: Vec<NodeId> = (0..n).map(NodeId::new).collect();
        let configs: Vec<AbdConfig> = voters
            .iter()
            .map(|&me| {
                let config = match variant {
                    Variant::NoOverlap => {
                        // R = W = floor(n/2): R + W <= N.
                        let q = (n / 2) as usize;
                        let quorums =
                            FlexibleConfig::without_overlap_check(voters.iter().copied(), q, q)
                                .unwrap();
                        AbdConfig::with_quorums(me, quorums).unwrap()
                    }
                    _ => AbdConfig::majority(me, voters.iter().copied()).unwrap(),
                };
                let config = config.limits(4, 2, 30).unwrap();
                if variant == Variant::NoWriteBack {
                    config.without_write_back()
                } else {
                    config
                }
            })
            .collect();
        // Swarm testing: each fault kind is on for about half the seeds.
        let loss_permille = if rng.chance(500) { rng.below(200) } else { 0 };
        let dup_permille = if rng.chance(500) { rng.below(200) } else { 0 };
        let delay_max = if rng.chance(500) {
            1 + rng.below(60)
        } else {
            3
        };
        let crashes_max = if rng.chance(500) {
            (n as usize - 1) / 2
        } else {
            0
        };
        let partitions = rng.chance(500);
        let mut sim = Self {
            rng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes: configs
                .iter()
                .map(|c| Some(AbdNode::new(c.clone())))
                .collect(),
            configs,
            disks: vec![(Tag::default(), None); n as usize],
            incarnations: vec![0; n as usize],
            in_flight: vec![None; n as usize],
            history: Vec::new(),
            ops_left: 40,
            next_value: 1,
            loss_permille,
            dup_permille,
            delay_max,
            crashes_max,
            partition: None,
            stats: Stats::default(),
        };
        for i in 0..n as usize {
            let t = sim.rng.below(TICK);
            sim.schedule(t, Event::Tick(i));
            let t = sim.rng.below(50);
            sim.schedule(t, Event::Client(i));
            if sim.crashes_max > 0 {
                let t = sim.rng.below(TIME_MAX / 2);
                sim.schedule(t, Event::Crash(i));
            }
        }
        if partitions {
            for _ in 0..3 {
                let t = sim.rng.below(TIME_MAX / 2);
                let side = 1 + sim.rng.below((1 << n) - 2) as u32;
                sim.schedule(t, Event::Partition(side));
                let heal = t + 50 + sim.rng.below(1000);
                sim.schedule(heal, Event::Heal);
            }
        }
        sim
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), event);
    }

    fn crashed(&self) -> usize {
        self.nodes.iter().filter(|n| n.is_none()).count()
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        match self.partition {
            Some(side) => (side >> a) & 1 == (side >> b) & 1,
            None => true,
        }
    }

    fn send(&mut self, from: usize, to: usize, message: AbdMessage<u64>) {
        if from == to {
            self.schedule(self.now, Event::Deliver { from, to, message });
            return;
        }
        if !self.connected(from, to) || self.rng.chance(self.loss_permille) {
            self.stats.dropped += 1;
            return;
        }
        if self.rng.chance(self.dup_permille) {
            self.stats.duplicated += 1;
            let at = self.now + 1 + self.rng.below(self.delay_max * 3);
            self.schedule(
                at,
                Event::Deliver {
                    from,
                    to,
                    message: message.clone(),
                },
            );
        }
        let at = self.now + 1 + self.rng.below(self.delay_max);
        self.schedule(at, Event::Deliver { from, to, message });
    }

    fn drain(&mut self, i: usize) {
        while let Some(effect) = self.nodes[i].as_mut().and_then(AbdNode::poll_effect) {
            match effect {
                // Persisted before any later effect is carried out.
                AbdEffect::Persist { tag, value } => self.disks[i] = (tag, value),
                AbdEffect::Send { to, message } => self.send(i, to.get() as usize, message),
                AbdEffect::ReadDone { op, value } => self.complete(i, op, Some(value)),
                AbdEffect::WriteDone { op } => self.complete(i, op, None),
                AbdEffect::Failed { op, .. } => self.give_up(i, op),
            }
        }
    }

    fn complete(&mut self, i: usize, op: AbdOpId, read: Option<Option<u64>>) {
        let (id, index) = self.in_flight[i].take().expect("an operation in flight");
        assert_eq!(id, op);
        let entry = self.history[index].as_mut().expect("recorded");
        entry.completed = Some(self.now);
        if let Some(value) = read {
            entry.kind = Kind::Read(value);
        }
        self.stats.ops_ok += 1;
        let think = 1 + self.rng.below(60);
        self.schedule(self.now + think, Event::Client(i));
    }

    /// The operation timed out or its node crashed: a write's outcome is unknown, a read
    /// is left out.
    fn give_up(&mut self, i: usize, op: AbdOpId) {
        let (id, index) = self.in_flight[i].take().expect("an operation in flight");
        assert_eq!(id, op);
        self.forget(index);
        let think = 1 + self.rng.below(60);
        self.schedule(self.now + think, Event::Client(i));
    }

    fn forget(&mut self, index: usize) {
        match self.history[index].map(|op| op.kind) {
            Some(Kind::Write(_)) => self.stats.ops_unknown += 1,
            Some(Kind::Read(_)) => {
                self.history[index] = None;
                self.stats.reads_failed += 1;
            }
            None => {}
        }
    }

    fn run(mut self) -> (Vec<lin::Op>, Stats) {
        while let Some(((at, _), event)) = self.queue.pop_first() {
            if at > TIME_MAX {
                break;
            }
            self.now = at;
            match event {
                Event::Deliver { from, to, message } => {
                    if let Some(node) = self.nodes[to].as_mut() {
                        node.handle(NodeId::new(from as u64), message);
                        self.drain(to);
                    }
                }
                Event::Tick(i) => {
                    if let Some(node) = self.nodes[i].as_mut() {
                        node.tick();
                        self.drain(i);
                    }
                    self.schedule(self.now + TICK, Event::Tick(i));
                }
                Event::Client(i) => {
                    if self.ops_left == 0 || self.in_flight[i].is_some() {
                        continue;
                    }
                    let Some(node) = self.nodes[i].as_mut() else {
                        continue; // crashed: the client tries again after the restart
                    };
                    self.ops_left -= 1;
                    let (op, kind) = if self.rng.chance(500) {
                        (node.read().unwrap(), Kind::Read(None))
                    } else {
                        let v = self.next_value;
                        self.next_value += 1;
                        (node.write(v).unwrap(), Kind::Write(v))
                    };
                    self.history.push(Some(lin::Op {
                        invoked: self.now,
                        completed: None,
                        kind,
                    }));
                    self.in_flight[i] = Some((op, self.history.len() - 1));
                    self.drain(i);
                }
                Event::Crash(i) => {
                    if self.crashed() >= self.crashes_max || self.nodes[i].is_none() {
                        continue;
                    }
                    self.stats.crashes += 1;
                    self.nodes[i] = None;
                    if let Some((_, index)) = self.in_flight[i].take() {
                        self.forget(index);
                    }
                    let back = self.now + 20 + self.rng.below(2000);
                    self.schedule(back, Event::Restart(i));
                    let again = back + self.rng.below(TIME_MAX / 2);
                    self.schedule(again, Event::Crash(i));
                }
                Event::Restart(i) => {
                    let (tag, value) = self.disks[i];
                    self.incarnations[i] += 1;
                    let incarnation = self.incarnations[i];
                    self.nodes[i] = Some(AbdNode::recover(
                        self.configs[i].clone(),
                        incarnation,
                        tag,
                        value,
                    ));
                    self.schedule(self.now + 1, Event::Client(i));
                }
                Event::Partition(side) => {
                    self.stats.partitions += 1;
                    self.partition = Some(side);
                }
                Event::Heal => self.partition = None,
            }
        }
        // Operations still in flight at the end: unknown writes, dropped reads.
        for i in 0..self.in_flight.len() {
            if let Some((_, index)) = self.in_flight[i].take() {
                self.forget(index);
            }
        }
        (self.history.into_iter().flatten().collect(), self.stats)
    }
}

fn seeds() -> u64 {
    std::env::var("SYNOD_QUORUM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
}

#[test]
fn abd_is_linearizable_under_faults() {
    let seeds = seeds();
    let mut total = Stats::default();
    for seed in 0..seeds {
        let (history, stats) = Sim::new(seed, Variant::Correct).run();
        if let Err(e) = lin::check(&history) {
            panic!(
                "seed {seed}: ABD history not linearizable: {e}\nreplay: SYNOD_QUORUM_SEEDS={} cargo test -p synod-quorum abd_is_linearizable",
                seed + 1
            );
        }
        total.add(stats);
    }
    println!(
        "abd: {seeds} seeds linearizable; ops ok {}, writes unknown {}, reads failed {}; \
         messages dropped {}, duplicated {}; partitions {}; crashes {}",
        total.ops_ok,
        total.ops_unknown,
        total.reads_failed,
        total.dropped,
        total.duplicated,
        total.partitions,
        total.crashes
    );
    // Every fault kind fired, and the register made progress through them.
    assert!(total.dropped > 0 && total.duplicated > 0 && total.partitions > 0 && total.crashes > 0);
    assert!(total.ops_ok > seeds * 20, "too little progress: {total:?}");
}

/// Runs seeds of a broken variant until the checker rejects one; returns how many it took.
fn seeds_to_catch(variant: Variant, limit: u64) -> Option<u64> {
    (0..limit).find_map(|seed| {
        let (history, _) = Sim::new(seed, variant).run();
        lin::check(&history).is_err().then_some(seed + 1)
    })
}

#[test]
fn broken_quorums_without_overlap_are_caught() {
    let caught = seeds_to_catch(Variant::NoOverlap, 200);
    println!("abd with R + W <= N: first non-linearizable history after {caught:?} seeds");
    assert!(caught.is_some(), "R + W <= N was not caught in 200 seeds");
}

#[test]
fn broken_reads_without_write_back_are_caught() {
    let caught = seeds_to_catch(Variant::NoWriteBack, 2000);
    println!("abd without read write-back: first non-linearizable history after {caught:?} seeds");
    assert!(
        caught.is_some(),
        "missing write-back was not caught in 2000 seeds"
    );
}

/// Drains `node`'s effects, persisting nothing (this test does not crash nodes).
fn effects(node: &mut AbdNode<u64>) -> Vec<AbdEffect<u64>> {
    std::iter::from_fn(|| node.poll_effect())
        .filter(|e| !matches!(e, AbdEffect::Persist { .. }))
        .collect()
}

/// The reply `replica` gives to the first message `coordinator` sent it.
fn reply_of(
    replica: &mut AbdNode<u64>,
    from: NodeId,
    sent: &[AbdEffect<u64>],
    to: NodeId,
) -> AbdMessage<u64> {
    let message = sent
        .iter()
        .find_map(|e| match e {
            AbdEffect::Send { to: t, message } if *t == to => Some(message.clone()),
            _ => None,
        })
        .expect("a message to the replica");
    replica.handle(from, message);
    match effects(replica).pop() {
        Some(AbdEffect::Send { message, .. }) => message,
        other => panic!("expected a reply, got {other:?}"),
    }
}

#[test]
fn duplicated_and_late_replies_are_counted_once() {
    let voters = [0, 1, 2].map(NodeId::new);
    let mut nodes: Vec<AbdNode<u64>> = voters
        .iter()
        .map(|&me| AbdNode::new(AbdConfig::majority(me, voters).unwrap()))
        .collect();
    let [n0, n1, n2] = voters;
    let op = nodes[0].write(5).unwrap();
    let queries = effects(&mut nodes[0]);
    assert_eq!(queries.len(), 3, "a query to every voter");
    // n1's reply arrives three times: still one of the two replies a majority needs.
    let reply = reply_of(&mut nodes[1], n0, &queries, n1);
    for _ in 0..3 {
        nodes[0].handle(n1, reply.clone());
    }
    assert_eq!(
        effects(&mut nodes[0]),
        vec![],
        "a duplicated reply completed the phase"
    );
    let reply = reply_of(&mut nodes[2], n0, &queries, n2);
    nodes[0].handle(n2, reply);
    let updates = effects(&mut nodes[0]);
    assert_eq!(updates.len(), 3, "the update phase starts: {updates:?}");
    // A late query reply (from n0 itself) after the phase ended is ignored.
    let late = reply_of(&mut nodes[0].clone(), n0, &queries, n0);
    nodes[0].handle(n0, late);
    assert_eq!(effects(&mut nodes[0]), vec![]);
    // n1's acknowledgement, duplicated, is one acknowledgement.
    let ack = reply_of(&mut nodes[1], n0, &updates, n1);
    nodes[0].handle(n1, ack.clone());
    nodes[0].handle(n1, ack);
    assert_eq!(effects(&mut nodes[0]), vec![]);
    let ack = reply_of(&mut nodes[2], n0, &updates, n2);
    nodes[0].handle(n2, ack.clone());
    assert_eq!(effects(&mut nodes[0]), vec![AbdEffect::WriteDone { op }]);
    // An acknowledgement for a finished operation changes nothing.
    nodes[0].handle(n2, ack);
    assert_eq!(effects(&mut nodes[0]), vec![]);
    let (tag, value) = nodes[1].replica_state();
    assert_eq!((tag.sequence, tag.writer, value), (1, n0, Some(&5)));
}

#[test]
fn a_silent_quorum_times_out_and_the_limit_refuses_more() {
    let voters = [0, 1, 2].map(NodeId::new);
    let config = AbdConfig::majority(voters[0], voters)
        .unwrap()
        .limits(1, 2, 5)
        .unwrap();
    let mut node: AbdNode<u64> = AbdNode::new(config);
    let op = node.read().unwrap();
    assert!(matches!(
        node.write(1),
        Err(synod_quorum::AbdError::TooManyInFlight {
            ops_in_flight_max: 1
        })
    ));
    let mut resent = 0;
    let mut failed = None;
    for _ in 0..5 {
        node.tick();
        for effect in effects(&mut node) {
            match effect {
                AbdEffect::Send { .. } => resent += 1,
                AbdEffect::Failed { op, error } => failed = Some((op, error)),
                other => panic!("{other:?}"),
            }
        }
    }
    assert!(resent >= 3, "silent voters were not retried");
    let (failed_op, error) = failed.expect("timed out");
    assert_eq!(failed_op, op);
    assert!(error.to_string().contains("timed out"), "{error}");
    assert_eq!(node.ops_in_flight(), 0);
}
