//! The baselines and counters shared by the `partitioning` bench and the crate's `figures`
//! tests (which assert the goals the bench only reports): jump, rendezvous and ring
//! hashing written here, keys per node as max over mean, and a transfer's two-phase commit
//! run to the end on one thread, counting its messages and persists.

use std::collections::{BTreeMap, VecDeque};

use synod_node::{Effect, Input, NodeId, Protocol, RequestId, Time};
use synod_partitioning::{
    Coordinator, CoordinatorConfig, NodeSpec, Op, Participant, ParticipantConfig, PartitionTable,
    TxnNode, TxnRequest, key_hash, participant_of,
};

/// The key numbered `i`: its eight big-endian bytes.
pub fn key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

/// Max over mean of the keys each of `nodes` nodes gets, over keys `0..keys`.
pub fn imbalance(nodes: u64, keys: u64, mut place: impl FnMut(&[u8]) -> u64) -> f64 {
    let mut counts = vec![0u64; nodes as usize];
    for i in 0..keys {
        counts[place(&key(i)) as usize] += 1;
    }
    let max = *counts.iter().max().expect("at least one node") as f64;
    max / (keys as f64 / nodes as f64)
}

/// Jump consistent hashing (Lamping and Veach): the bucket of hash `h` among `buckets`.
pub fn jump(mut h: u64, buckets: u64) -> u64 {
    let (mut b, mut j) = (-1i64, 0i64);
    while j < buckets as i64 {
        b = j;
        h = h.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((h >> 33) + 1) as f64)) as i64;
    }
    b as u64
}

/// Rendezvous (highest random weight) hashing: the node of `0..nodes` whose hash with
/// the key is highest.
pub fn rendezvous(k: &[u8], nodes: u64) -> u64 {
    let mut bytes = k.to_vec();
    let len = bytes.len();
    (0..nodes)
        .max_by_key(|&n| {
            bytes.truncate(len);
            bytes.extend_from_slice(&n.to_be_bytes());
            key_hash(&bytes)
        })
        .expect("at least one node")
}

/// A consistent-hash ring with `vnodes` points for each of `nodes` nodes.
pub fn ring(nodes: u64, vnodes: u64) -> BTreeMap<u64, u64> {
    let mut points = BTreeMap::new();
    for n in 0..nodes {
        for v in 0..vnodes {
            points.insert(key_hash(format!("node-{n}-{v}").as_bytes()), n);
        }
    }
    points
}

/// The node of `k` on a ring: the first point at or after its hash, wrapping.
pub fn on_ring(points: &BTreeMap<u64, u64>, k: &[u8]) -> u64 {
    let h = key_hash(k);
    *points
        .range(h..)
        .next()
        .or_else(|| points.iter().next())
        .expect("a ring with points")
        .1
}

/// Keys per node, max over mean, of fixed partitions and of each baseline over the same keys.
pub struct Balance {
    /// 1,024 fixed partitions, one replica each.
    pub ours: f64,
    /// Jump consistent hashing.
    pub jump: f64,
    /// Rendezvous hashing.
    pub rendezvous: f64,
    /// A ring of 3 points a node.
    pub ring3: f64,
    /// A ring of 100 points a node.
    pub ring100: f64,
}

/// Places keys `0..keys` on `nodes` nodes by each scheme, and prints the line of figures.
pub fn balance(nodes: u64, keys: u64) -> Balance {
    let specs = (1..=nodes).map(|i| (NodeId::new(i), NodeSpec::new()));
    let table = PartitionTable::new(1_024, 1, specs).expect("valid table");
    let ring3 = ring(nodes, 3);
    let ring100 = ring(nodes, 100);
    let b = Balance {
        ours: imbalance(nodes, keys, |k| {
            table.owner(table.partition_of(k)).get() - 1
        }),
        jump: imbalance(nodes, keys, |k| jump(key_hash(k), nodes)),
        rendezvous: imbalance(nodes, keys, |k| rendezvous(k, nodes)),
        ring3: imbalance(nodes, keys, |k| on_ring(&ring3, k)),
        ring100: imbalance(nodes, keys, |k| on_ring(&ring100, k)),
    };
    println!(
        "keys per node, max over mean, {keys} keys on {nodes} nodes: fixed partitions (1,024) {:.3}, jump {:.3}, rendezvous {:.3}, ring x3 {:.3}, ring x100 {:.3}",
        b.ours, b.jump, b.rendezvous, b.ring3, b.ring100
    );
    b
}

/// What two-phase commit cost per transaction, and the classic protocol's minimum.
pub struct TwoPhaseCounts {
    /// Participants of each transaction.
    pub participants: u64,
    /// Messages sent per transaction.
    pub messages: f64,
    /// Persists (synced writes) per transaction, the coordinator's one epoch record per
    /// start left out.
    pub persists: f64,
    /// Prepare, vote, decision and acknowledgement per participant.
    pub messages_min: f64,
    /// Each participant's prepare and commit, and the decision.
    pub persists_min: f64,
}

/// Runs `txns` transfers between two keys on two participants, one at a time, every
/// message delivered and every persist acknowledged at once, and counts what they cost.
pub fn two_phase_commit(txns: u64) -> TwoPhaseCounts {
    let parts = [NodeId::new(2), NodeId::new(3)];
    let mut nodes = vec![TxnNode::Coordinator(Coordinator::new(
        CoordinatorConfig::new(NodeId::new(1), parts.to_vec()),
    ))];
    for p in parts {
        nodes.push(TxnNode::Participant(Participant::new(
            ParticipantConfig::new(p),
        )));
    }
    let (a, b) = (0..)
        .map(|k| (k, k + 1))
        .find(|&(a, b)| participant_of(a, &parts) != participant_of(b, &parts))
        .expect("two keys on different participants");
    let (mut messages, mut persists, mut replies) = (0u64, 0u64, 0u64);
    let now = Time::from_millis(1);
    for i in 0..txns {
        let ops = vec![Op::Add(a, -1), Op::Add(b, 1)];
        nodes[0].handle(
            now,
            Input::Request {
                id: RequestId(i),
                request: TxnRequest { ops },
            },
        );
        let mut inbox = VecDeque::new();
        loop {
            let mut busy = false;
            for node in &mut nodes {
                let mut synced = None;
                while let Some(effect) = node.poll() {
                    match effect {
                        Effect::Send { to, message } => {
                            messages += 1;
                            inbox.push_back((node.id(), to, message));
                        }
                        Effect::Persist { token, .. } => {
                            persists += 1;
                            synced = Some(token);
                        }
                        Effect::Reply { .. } => replies += 1,
                        Effect::Apply(_) | Effect::WakeAt(_) => {}
                    }
                }
                if let Some(token) = synced {
                    node.handle(now, Input::Persisted(token));
                    busy = true;
                }
            }
            if let Some((from, to, message)) = inbox.pop_front() {
                nodes[(to.get() - 1) as usize].handle(now, Input::Message { from, message });
            } else if !busy {
                break;
            }
        }
    }
    assert_eq!(replies, txns, "every transaction answered");
    let p = parts.len() as f64;
    TwoPhaseCounts {
        participants: parts.len() as u64,
        messages: messages as f64 / txns as f64,
        // The coordinator's epoch record is written once per start, not per transaction.
        persists: (persists - 1) as f64 / txns as f64,
        messages_min: 4.0 * p,
        persists_min: 2.0 * p + 1.0,
    }
}
