//! Criterion micro-benchmarks: nanoseconds per quorum decision and per versioned-store
//! operation, each next to a plain baseline.
//!
//! `cargo bench -p synod-quorum --bench micro`. The headline ratios (store against
//! `BTreeMap`) come from the `versioned` bench, which prints `ratio` lines.

// `criterion_group!` generates a public function without documentation.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use synod_quorum::{JointConfig, MajorityConfig, NodeId, Quorum, ResponseTracker, VersionedStore};

fn ids(range: std::ops::Range<u64>) -> Vec<NodeId> {
    range.map(NodeId::new).collect()
}

fn tracker(c: &mut Criterion) {
    let five = MajorityConfig::new(ids(0..5)).unwrap();
    c.bench_function("tracker/majority5_record_until_won", |b| {
        let mut t = ResponseTracker::new(five.clone());
        b.iter(|| {
            t.reset();
            for n in 0..3 {
                t.record(NodeId::new(n), true);
                black_box(t.outcome());
            }
        });
    });
    let joint = JointConfig::joint(
        MajorityConfig::new(ids(0..5)).unwrap(),
        MajorityConfig::new(ids(3..8)).unwrap(),
    );
    c.bench_function("tracker/joint5+5_record_until_won", |b| {
        let mut t = ResponseTracker::new(joint.clone());
        b.iter(|| {
            t.reset();
            for n in 0..6 {
                t.record(NodeId::new(n), true);
                black_box(t.outcome());
            }
        });
    });
    let acked: Vec<u64> = (0..5).map(|i| 100 + i * 7 % 5).collect();
    c.bench_function("commit_index/majority5", |b| {
        b.iter(|| black_box(five.committed_index(|n| Some(acked[n.get() as usize]))));
    });
    let acked8: Vec<u64> = (0..8).map(|i| 100 + i * 7 % 8).collect();
    c.bench_function("commit_index/joint5+5", |b| {
        b.iter(|| black_box(joint.committed_index(|n| Some(acked8[n.get() as usize]))));
    });
}

const KEYS: u64 = 10_000;
const VERSIONS: u64 = 4;

fn versioned(c: &mut Criterion) {
    let mut store = VersionedStore::new();
    let mut baseline = BTreeMap::new();
    for k in 0..KEYS {
        for v in 0..VERSIONS {
            store.put(k, v, k ^ v).unwrap();
        }
        baseline.insert(k, k);
    }
    let mut key = 0u64;
    c.bench_function("versioned/get_latest", |b| {
        b.iter(|| {
            key = (key + 7919) % KEYS;
            black_box(store.latest(&key));
        });
    });
    c.bench_function("versioned/get_as_of", |b| {
        b.iter(|| {
            key = (key + 7919) % KEYS;
            black_box(store.as_of(&key, &1).unwrap());
        });
    });
    c.bench_function("baseline_btreemap/get", |b| {
        b.iter(|| {
            key = (key + 7919) % KEYS;
            black_box(baseline.get(&key));
        });
    });
    c.bench_function("versioned/scan_100_as_of", |b| {
        b.iter(|| {
            key = (key + 7919) % (KEYS - 100);
            black_box(store.scan_as_of(key..key + 100, &2).unwrap().count());
        });
    });
    c.bench_function("baseline_btreemap/scan_100", |b| {
        b.iter(|| {
            key = (key + 7919) % (KEYS - 100);
            black_box(baseline.range(key..key + 100).count());
        });
    });
    c.bench_function("versioned/put_new_version", |b| {
        let mut store = store.clone();
        let mut i = 0u64;
        b.iter(|| {
            // Every put is a new version: keys in turn, the version rising each round.
            let (key, version) = (i % KEYS, VERSIONS + i / KEYS);
            i += 1;
            black_box(store.put(key, version, key).ok());
        });
    });
    c.bench_function("baseline_btreemap/insert", |b| {
        let mut map = baseline.clone();
        b.iter(|| {
            key = (key + 7919) % KEYS;
            black_box(map.insert(key, key));
        });
    });
}

criterion_group!(benches, tracker, versioned);
criterion_main!(benches);
