//! Headline benchmark of synod-partitioning: every figure a ratio against a baseline
//! computed in the same run.
//!
//! Counted (the same in quick and full mode, and on any machine):
//! - `partitioning.join_moved_vs_minimum` and `partitioning.leave_moved_vs_minimum`:
//!   replicas copied by the worst of several joins (and leaves) of tables of 271 x1,
//!   1,024 x3 and 16,384 x3 partitions, over the least any balanced table moves (the new
//!   node's share; the departed node's replicas). Goal: at most 1.05.
//! - `partitioning.imbalance_vs_jump`, `_vs_rendezvous`, `_vs_ring100`: keys per node, max
//!   over mean, 1,024 partitions on 10 nodes against jump consistent hashing, rendezvous
//!   hashing and a ring of 100 points a node over the same keys. With `--features peers`
//!   also `_vs_hashring100` (the `hashring` crate with 100 virtual nodes a node) and
//!   `_vs_mpchash` (multi-probe consistent hashing, the `mpchash` crate).
//! - `partitioning.2pc_messages_vs_minimum` and `partitioning.2pc_persists_vs_minimum`:
//!   a transfer on two participants against the classic protocol's minimum.
//!
//! Timed (each repetition takes many short samples of both sides, interleaved, and keeps
//! their medians; the ratio is the median over repetitions, so a sample in which the thread
//! was descheduled does not count):
//! - `partitioning.lookup_vs_bare_hash`: key to partition to owner, 16,384 partitions x3 on
//!   24 nodes, against `key_hash` alone.
//! - `partitioning.range_lookup_vs_btreemap`: `RangeTable::locate` over about 10,000 ranges
//!   against `BTreeMap::range(..=key).next_back()` over the same starts.
//!
//! `cargo bench -p synod-partitioning --bench partitioning`; `SYNOD_BENCH_QUICK=1` runs
//! fewer repetitions of the timed figures.

mod baselines;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::ops::Bound;
use std::time::Instant;

#[cfg(feature = "peers")]
use baselines::imbalance;
use baselines::two_phase_commit;
use synod_node::NodeId;
use synod_partitioning::{NodeSpec, PartitionTable, RangeTable, key_hash};

/// Keys placed for the imbalance figures.
const KEYS: u64 = 200_000;
/// Lookups in one timed sample (well under a millisecond).
const SAMPLE_OPS: u64 = 10_000;

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ratio(name: &str, value: f64) {
    println!("ratio partitioning.{name} {value:.3}");
}

/// The worst ratio of replicas moved to the least possible, over joins and over leaves.
fn movement() -> (f64, f64) {
    let (mut join_worst, mut leave_worst) = (0.0f64, 0.0f64);
    for (partitions, replication, nodes) in
        [(271u32, 1usize, 7u64), (1_024, 3, 10), (16_384, 3, 24)]
    {
        let specs = (1..=nodes).map(|i| (NodeId::new(i), NodeSpec::new()));
        let mut table = PartitionTable::new(partitions, replication, specs).expect("valid table");
        let slots = partitions as usize * replication;
        // Four joins, then two leaves; a join's least is the new node's share, a leave's
        // the departed node's replicas.
        let changes = (1..=4)
            .map(|step| (true, nodes + step))
            .chain([(false, 2), (false, 5)]);
        for (join, node) in changes {
            let node = NodeId::new(node);
            let (next, moved, least) = if join {
                let (next, moved) = table.join(node, NodeSpec::new()).expect("a new node");
                let least = slots / next.nodes().count();
                (next, moved, least)
            } else {
                let least = table.load(node);
                let (next, moved) = table.leave(node).expect("a member");
                (next, moved, least)
            };
            let r = moved.replicas_added as f64 / least as f64;
            println!(
                "{partitions} partitions x{replication}, {} to {} nodes: {} replicas copied, least {least} ({r:.3})",
                if join { "join" } else { "leave" },
                next.nodes().count(),
                moved.replicas_added
            );
            let worst = if join {
                &mut join_worst
            } else {
                &mut leave_worst
            };
            *worst = worst.max(r);
            table = next;
        }
    }
    (join_worst, leave_worst)
}

fn balance() {
    let nodes = 10;
    let b = baselines::balance(nodes, KEYS);
    ratio("imbalance_vs_jump", b.ours / b.jump);
    ratio("imbalance_vs_rendezvous", b.ours / b.rendezvous);
    ratio("imbalance_vs_ring100", b.ours / b.ring100);
    #[cfg(feature = "peers")]
    peers(nodes, b.ours);
}

/// The peer crates' balance over the same keys.
#[cfg(feature = "peers")]
fn peers(nodes: u64, ours: f64) {
    #[derive(Hash)]
    struct VNode {
        node: u64,
        point: u64,
    }
    let mut hashring = hashring::HashRing::new();
    for node in 0..nodes {
        for point in 0..100 {
            hashring.add(VNode { node, point });
        }
    }
    let hr = imbalance(nodes, KEYS, |k| hashring.get(&k).expect("nodes").node);
    let mpc = mpchash::HashRing::new();
    for node in 0..nodes {
        mpc.add(node);
    }
    let mp = imbalance(nodes, KEYS, |k| *mpc.node(&k).expect("nodes").node());
    println!("peers, same keys: hashring x100 {hr:.3}, mpchash {mp:.3}");
    ratio("imbalance_vs_hashring100", ours / hr);
    ratio("imbalance_vs_mpchash", ours / mp);
}

fn two_phase() {
    let c = two_phase_commit(100);
    println!(
        "two-phase commit, {} participants: {} messages and {} persists per transaction (minimum {} and {})",
        c.participants, c.messages, c.persists, c.messages_min, c.persists_min
    );
    ratio("2pc_messages_vs_minimum", c.messages / c.messages_min);
    ratio("2pc_persists_vs_minimum", c.persists / c.persists_min);
}

/// Nanoseconds per call of `f` over one sample; `f` gets the call's number.
fn sample(offset: u64, f: &mut dyn FnMut(u64)) -> f64 {
    let start = Instant::now();
    for i in offset..offset + SAMPLE_OPS {
        f(i);
    }
    start.elapsed().as_nanos() as f64 / SAMPLE_OPS as f64
}

/// `ours` and `base` sampled in turn; the median ns of each and the median ratio.
fn timed(
    reps: usize,
    samples: usize,
    ours: &mut dyn FnMut(u64),
    base: &mut dyn FnMut(u64),
) -> (f64, f64, f64) {
    let (mut ours_ns, mut base_ns, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    sample(0, ours);
    sample(0, base);
    for rep in 0..reps {
        let (mut o, mut b) = (Vec::new(), Vec::new());
        for s in 0..samples {
            let offset = ((rep * samples + s) as u64) * SAMPLE_OPS;
            o.push(sample(offset, ours));
            b.push(sample(offset, base));
        }
        let (o, b) = (median(&o), median(&b));
        ours_ns.push(o);
        base_ns.push(b);
        ratios.push(o / b);
    }
    (median(&ours_ns), median(&base_ns), median(&ratios))
}

fn lookups(reps: usize, samples: usize) {
    let specs = (1..=24).map(|i| (NodeId::new(i), NodeSpec::new()));
    let table = PartitionTable::new(16_384, 3, specs).expect("valid table");
    let (o, b, r) = timed(
        reps,
        samples,
        &mut |i| {
            black_box(table.owner(table.partition_of(&black_box(i).to_be_bytes())));
        },
        &mut |i| {
            black_box(key_hash(&black_box(i).to_be_bytes()));
        },
    );
    println!("partition lookup {o:.1} ns, bare hash {b:.1} ns");
    ratio("lookup_vs_bare_hash", r);

    let mut ranges = RangeTable::new(NodeId::new(1));
    let mut starts = BTreeMap::new();
    starts.insert(Vec::new(), 0u64);
    for i in 1..10_000u64 {
        let at = (i * 1_000_003).to_be_bytes().to_vec();
        let id = ranges.locate(&at).id;
        if ranges.split(id, &at).is_ok() {
            starts.insert(at, i);
        }
    }
    let probe = |i: u64| black_box(i.wrapping_mul(7_919_000_003)).to_be_bytes();
    let (o, b, r) = timed(
        reps,
        samples,
        &mut |i| {
            black_box(ranges.locate(&probe(i)));
        },
        &mut |i| {
            let key = probe(i);
            let bounds = (Bound::Unbounded, Bound::Included(&key[..]));
            black_box(starts.range::<[u8], _>(bounds).next_back());
        },
    );
    println!(
        "range lookup over {} ranges {o:.1} ns, BTreeMap::range {b:.1} ns",
        ranges.len()
    );
    ratio("range_lookup_vs_btreemap", r);
}

fn main() {
    let quick = std::env::var_os("SYNOD_BENCH_QUICK").is_some();
    let (reps, samples) = if quick { (5, 30) } else { (15, 100) };
    println!(
        "synod-partitioning headline benchmark ({}; timed: {reps} reps of {samples} samples of {SAMPLE_OPS} lookups)",
        if quick { "quick" } else { "full" }
    );
    let (join, leave) = movement();
    ratio("join_moved_vs_minimum", join);
    ratio("leave_moved_vs_minimum", leave);
    balance();
    two_phase();
    lookups(reps, samples);
}
