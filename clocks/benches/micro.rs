//! Criterion micro-benchmarks: Lamport tick, hybrid clock update, and version-vector
//! merge and compare at 3, 16 and 128 entries.

// `criterion_group!` generates a public function without documentation.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use synod_clocks::{
    AtomicLamportClock, HybridClock, HybridClockConfig, HybridTimestamp, LamportClock,
    LamportTimestamp, ManualClock, NodeId, PhysicalClock, SystemClock, VersionVector, WallTime,
};

fn lamport(c: &mut Criterion) {
    let mut clock = LamportClock::new();
    c.bench_function("lamport/tick", |b| {
        b.iter(|| black_box(clock.tick().unwrap()));
    });
    let mut clock = LamportClock::new();
    let mut received = 0u64;
    c.bench_function("lamport/observe", |b| {
        b.iter(|| {
            received += 2;
            black_box(clock.observe(LamportTimestamp::new(received)).unwrap())
        });
    });
    let atomic = AtomicLamportClock::new();
    c.bench_function("lamport/atomic_tick", |b| {
        b.iter(|| black_box(atomic.tick().unwrap()));
    });
}

fn hlc(c: &mut Criterion) {
    let config = HybridClockConfig::new(NodeId::new(1), Duration::from_millis(500)).unwrap();
    let system = SystemClock::new();
    c.bench_function("hlc/baseline_systemtime_now", |b| {
        b.iter(|| black_box(std::time::SystemTime::now()));
    });
    let mut clock = HybridClock::new(system, config);
    c.bench_function("hlc/now_system_clock", |b| {
        b.iter(|| black_box(clock.now()));
    });
    let mut clock = HybridClock::new(system, config);
    let received = HybridTimestamp::new(system.wall(), 3, NodeId::new(2));
    c.bench_function("hlc/update_system_clock", |b| {
        b.iter(|| black_box(clock.update(black_box(received)).unwrap()));
    });
    let manual = ManualClock::new(WallTime::from_secs(1_700_000_000));
    let mut clock = HybridClock::new(manual.clone(), config);
    let received = HybridTimestamp::new(manual.wall(), 3, NodeId::new(2));
    c.bench_function("hlc/update_manual_clock", |b| {
        b.iter(|| black_box(clock.update(black_box(received)).unwrap()));
    });
}

/// Two vectors over the same `n` nodes; `b` has one counter higher (so `a` is before `b`
/// and compare must scan every entry).
fn pair(n: u64) -> (VersionVector, VersionVector) {
    let a: VersionVector = (0..n).map(|i| (NodeId::new(i * 3 + 1), 10 + i)).collect();
    let mut b = a.clone();
    b.increment(NodeId::new((n - 1) * 3 + 1)).unwrap();
    (a, b)
}

fn version_vectors(c: &mut Criterion) {
    let mut group = c.benchmark_group("version_vector");
    for n in [3u64, 16, 128] {
        let (a, b) = pair(n);
        group.bench_with_input(BenchmarkId::new("compare", n), &n, |bench, _| {
            bench.iter(|| black_box(black_box(&a).compare(black_box(&b))));
        });
        let mut acc = a.clone();
        group.bench_with_input(BenchmarkId::new("merge_same_nodes", n), &n, |bench, _| {
            bench.iter(|| acc.merge(black_box(&b)));
        });
        // Disjoint node sets: the merge has to build a new vector.
        let other: VersionVector = (0..n).map(|i| (NodeId::new(i * 3 + 2), 5)).collect();
        group.bench_with_input(
            BenchmarkId::new("merged_disjoint_nodes", n),
            &n,
            |bench, _| bench.iter(|| black_box(black_box(&a).merged(black_box(&other)))),
        );
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = lamport, hlc, version_vectors
}
criterion_main!(benches);
