//! Headline benchmark: the cost of a hybrid-clock timestamp against reading the system
//! clock, measured side by side in the same run.
//!
//! Each repetition takes many short samples of every figure, interleaved, and keeps the
//! median sample, so that a sample in which the thread was descheduled (the machine is
//! shared) does not count. The bench prints the median and min-max over repetitions and
//! `ratio clocks.hlc_now_vs_systemtime <value>`: HLC `now()` ns over `SystemTime::now()` ns,
//! the median of the per-repetition ratios (goal: at most 1.5). `SYNOD_BENCH_QUICK=1` runs
//! fewer, shorter repetitions.
//!
//! With `--features peers` it also measures `uhlc` (the hybrid logical clock Zenoh uses)
//! in the same run and prints `ratio clocks.hlc_now_vs_uhlc` (Synod's `HybridClock::now`
//! over uhlc's `new_timestamp`, goal: at most 1.0) and `ratio clocks.atomic_hlc_now_vs_uhlc`
//! (the shared-handle clocks of both: `AtomicHybridClock` against uhlc's `HLC`, which is
//! shared too).

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use synod_clocks::{
    AtomicHybridClock, CachedSystemClock, HybridClock, HybridClockConfig, LamportClock, NodeId,
    PhysicalClock, SystemClock,
};

/// The peers measured beside Synod's clocks (with `--features peers`).
#[cfg(feature = "peers")]
const PEER_NAMES: &[&str] = &["uhlc HLC::new_timestamp()"];
#[cfg(not(feature = "peers"))]
const PEER_NAMES: &[&str] = &[];

/// Nanoseconds per call of `f`, over `iterations` calls.
fn per_call(iterations: u32, f: &mut dyn FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(iterations)
}

fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn print(name: &str, values: &[f64], unit: &str) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(0.0, f64::max);
    println!(
        "{name:<28} median {:>8.3} {unit}  (min {min:.3}, max {max:.3}, {} reps)",
        median(values),
        values.len()
    );
}

fn main() {
    let quick = std::env::var_os("SYNOD_BENCH_QUICK").is_some();
    // Samples of 10,000 calls (well under a millisecond), many per repetition.
    let (reps, samples, iterations) = if quick {
        (7, 60, 10_000)
    } else {
        (21, 200, 10_000)
    };
    let config =
        HybridClockConfig::new(NodeId::new(1), Duration::from_millis(500)).expect("valid config");
    let mut hlc = HybridClock::new(SystemClock::new(), config);
    let atomic = AtomicHybridClock::new(SystemClock::new(), config);
    let system = SystemClock::new();
    let mut lamport = LamportClock::new();

    let names: Vec<&str> = [
        "SystemTime::now()",
        "SystemClock::wall()",
        "HybridClock::now()",
        "AtomicHybridClock::now()",
        "HybridClock<Cached>::now()",
        "LamportClock::tick()",
    ]
    .into_iter()
    .chain(PEER_NAMES.iter().copied())
    .collect();
    let mut figures: Vec<&mut dyn FnMut()> = Vec::new();
    let mut f0 = || {
        black_box(SystemTime::now());
    };
    let mut f1 = || {
        black_box(system.wall());
    };
    let mut f2 = || {
        black_box(hlc.now());
    };
    let mut f3 = || {
        black_box(atomic.now());
    };
    let cached_config = config;
    let mut cached = HybridClock::new(CachedSystemClock::default(), cached_config);
    let mut f5 = || {
        black_box(cached.now());
    };
    let mut f4 = || {
        black_box(lamport.tick().expect("far from overflow"));
    };
    figures.push(&mut f0);
    figures.push(&mut f1);
    figures.push(&mut f2);
    figures.push(&mut f3);
    figures.push(&mut f5);
    figures.push(&mut f4);
    #[cfg(feature = "peers")]
    let uhlc = uhlc::HLCBuilder::new().build();
    #[cfg(feature = "peers")]
    let mut f6 = || {
        black_box(uhlc.new_timestamp());
    };
    #[cfg(feature = "peers")]
    figures.push(&mut f6);

    // Warm up.
    for f in figures.iter_mut() {
        per_call(iterations, *f);
    }
    let mut per_rep: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut ratio_hlc = Vec::new();
    let mut ratio_atomic = Vec::new();
    let mut ratio_cached = Vec::new();
    let mut ratio_uhlc = Vec::new();
    let mut ratio_atomic_uhlc = Vec::new();
    for _ in 0..reps {
        let mut rep_samples: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
        for _ in 0..samples {
            for (i, f) in figures.iter_mut().enumerate() {
                rep_samples[i].push(per_call(iterations, *f));
            }
        }
        let m: Vec<f64> = rep_samples.iter().map(|s| median(s)).collect();
        for (i, v) in m.iter().enumerate() {
            per_rep[i].push(*v);
        }
        ratio_hlc.push(m[2] / m[0]);
        ratio_atomic.push(m[3] / m[0]);
        ratio_cached.push(m[4] / m[0]);
        if let Some(peer) = m.get(6) {
            ratio_uhlc.push(m[2] / peer);
            ratio_atomic_uhlc.push(m[3] / peer);
        }
    }
    println!(
        "synod-clocks headline benchmark ({}; {reps} reps of {samples} samples of {iterations} calls)",
        if quick { "quick" } else { "full" }
    );
    for (name, values) in names.iter().zip(&per_rep) {
        print(name, values, "ns/op");
    }
    print("HLC now / SystemTime::now", &ratio_hlc, "");
    print("atomic HLC / SystemTime::now", &ratio_atomic, "");
    print("cached HLC / SystemTime::now", &ratio_cached, "");
    println!(
        "ratio clocks.hlc_now_vs_systemtime {:.3}",
        median(&ratio_hlc)
    );
    println!(
        "ratio clocks.atomic_hlc_now_vs_systemtime {:.3}",
        median(&ratio_atomic)
    );
    println!(
        "ratio clocks.hlc_cached_clock_now_vs_systemtime {:.3}",
        median(&ratio_cached)
    );
    if !ratio_uhlc.is_empty() {
        print("HLC now / uhlc", &ratio_uhlc, "");
        print("atomic HLC / uhlc", &ratio_atomic_uhlc, "");
        println!("ratio clocks.hlc_now_vs_uhlc {:.3}", median(&ratio_uhlc));
        println!(
            "ratio clocks.atomic_hlc_now_vs_uhlc {:.3}",
            median(&ratio_atomic_uhlc)
        );
    }
}
