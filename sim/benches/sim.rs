//! The simulator's headline benchmark: simulated events per second of wall time on the
//! register workload, and seeds per second for a 3-node run of 10,000 events, against the
//! bare cost of the event queue they sit on (a binary heap push and pop per event, plus
//! the trace hash).
//!
//! `cargo bench -p synod-sim --bench sim`; `SYNOD_BENCH_QUICK=1` for a run under 30 s.
//! Prints median and min-max of each figure over the repetitions and one machine-readable
//! line per figure (`figure ...`, `ratio ...`).

#[path = "../tests/it/register_impl.rs"]
mod register_impl;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::Hasher;
use std::hint::black_box;
use std::time::{Duration, Instant};

use register_impl::{RegisterNode, RegisterWorkload, Variant};
use synod_sim::{SimConfig, SimRng, Simulation, TraceHasher};

fn quick() -> bool {
    std::env::var_os("SYNOD_BENCH_QUICK").is_some()
}

/// Baseline: push and pop `n` events through a binary heap of `(time, seq, slot)` keys
/// holding about 1,000 pending events, hashing each popped key. Returns operations per
/// second (one push plus one pop each).
fn heap_ops_per_s(n: u64) -> f64 {
    let mut rng = SimRng::new(1);
    let mut heap = BinaryHeap::with_capacity(2048);
    let mut now = 0u64;
    for seq in 0..1000u64 {
        heap.push(Reverse((rng.below(1000), seq, seq as u32)));
    }
    let mut hasher = TraceHasher::new();
    let start = Instant::now();
    for seq in 1000..1000 + n {
        let Reverse((t, s, slot)) = heap.pop().expect("non-empty");
        now = now.max(t);
        hasher.write_u64(t ^ s);
        heap.push(Reverse((now + rng.below(1000), seq, slot)));
    }
    black_box(hasher.finish());
    n as f64 / start.elapsed().as_secs_f64()
}

fn register_config(events_max: Option<u64>) -> SimConfig {
    let b = SimConfig::builder(3)
        .clients(6)
        .client_timeout(Duration::from_millis(100));
    match events_max {
        Some(n) => b.safety_time(Duration::from_secs(3_600)).events_max(n),
        None => b.safety_time(Duration::from_millis(500)),
    }
    .build()
    .expect("valid config")
}

fn register_run(seed: u64, config: SimConfig) -> u64 {
    let report = Simulation::new(
        config,
        seed,
        |id| RegisterNode::new(Variant::Correct, id, 3),
        RegisterWorkload::default(),
    )
    .run();
    report.events
}

/// Simulated events per second over `seeds` register runs of 500 ms of virtual time.
fn register_events_per_s(first_seed: u64, seeds: u64) -> f64 {
    let start = Instant::now();
    let mut events = 0;
    for seed in first_seed..first_seed + seeds {
        events += register_run(seed, register_config(None));
    }
    events as f64 / start.elapsed().as_secs_f64()
}

/// Seeds per second for 3-node register runs of exactly 10,000 events.
fn seeds_per_s(first_seed: u64, seeds: u64) -> f64 {
    let start = Instant::now();
    for seed in first_seed..first_seed + seeds {
        let events = register_run(seed, register_config(Some(10_000)));
        assert_eq!(events, 10_000);
    }
    seeds as f64 / start.elapsed().as_secs_f64()
}

fn summary(name: &str, unit: &str, mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let median = xs[xs.len() / 2];
    println!(
        "{name}: median {median:.0} {unit} (min {:.0}, max {:.0}, {} repetitions)",
        xs[0],
        xs[xs.len() - 1],
        xs.len()
    );
    median
}

fn main() {
    let (reps, heap_n, reg_seeds, k_seeds) = if quick() {
        (5, 2_000_000, 20, 20)
    } else {
        (9, 20_000_000, 200, 200)
    };
    let heap: Vec<f64> = (0..reps).map(|_| heap_ops_per_s(heap_n)).collect();
    let events: Vec<f64> = (0..reps)
        .map(|r| register_events_per_s(r * reg_seeds, reg_seeds))
        .collect();
    let seeds: Vec<f64> = (0..reps)
        .map(|r| seeds_per_s(r * k_seeds, k_seeds))
        .collect();
    let heap = summary("baseline: heap push+pop+hash", "ops/s", heap);
    let events = summary("register workload", "simulated events/s", events);
    let seeds = summary("3-node register, 10,000 events per seed", "seeds/s", seeds);
    println!("figure sim.register_events_per_s {events:.0}");
    println!("figure sim.seeds_per_s_3_nodes_10k_events {seeds:.1}");
    println!("figure sim.baseline_heap_ops_per_s {heap:.0}");
    println!("ratio sim.register_events_vs_heap_ops {:.3}", events / heap);
    println!(
        "ratio sim.seed_10k_events_vs_heap_ops {:.3}",
        seeds * 10_000.0 / heap
    );
}
