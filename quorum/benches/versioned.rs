//! Headline benchmark: the versioned store against a plain `BTreeMap`, measured in the
//! same run.
//!
//! A store of 100 000 keys with 4 versions each, against a `BTreeMap` of the same keys
//! (one value each, what a store without versions keeps). For each operation it runs 7
//! repetitions (5 with `SYNOD_BENCH_QUICK=1`, and fewer operations each), prints ns per
//! operation as median and min-max for both, and one `ratio` line per figure: the store's
//! median over the baseline's (above 1: the store is slower by that factor). The figures:
//! `get` (latest version) and `get_as_of` (version 1) against `BTreeMap::get`, `scan` (100
//! consecutive keys as of version 2) against `BTreeMap::range`, and `put` (a new version of
//! an existing key) against `BTreeMap::insert` (an overwrite).
//!
//! `cargo bench -p synod-quorum --bench versioned`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use synod_quorum::VersionedStore;

const KEYS: u64 = 100_000;
const VERSIONS: u64 = 4;
/// Odd and coprime with `KEYS`: the key sequence visits every key, in a scattered order.
const STRIDE: u64 = 7_919;

struct Figures {
    name: &'static str,
    store: Vec<f64>,
    baseline: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn min_max(v: &[f64]) -> (f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    (min, max)
}

/// Nanoseconds per operation of `ops` calls of `f`.
fn time(ops: u64, mut f: impl FnMut(u64)) -> f64 {
    let start = Instant::now();
    for i in 0..ops {
        f(i);
    }
    start.elapsed().as_nanos() as f64 / ops as f64
}

fn main() {
    let quick = std::env::var_os("SYNOD_BENCH_QUICK").is_some();
    let (reps, ops) = if quick { (5, 200_000) } else { (7, 2_000_000) };
    println!(
        "versioned store vs BTreeMap: {KEYS} keys x {VERSIONS} versions, {reps} repetitions of {ops} operations{}",
        if quick { " (quick)" } else { "" }
    );

    let mut store = VersionedStore::new();
    let mut baseline = BTreeMap::new();
    for k in 0..KEYS {
        for v in 0..VERSIONS {
            store.put(k, v, k ^ v).expect("fresh version");
        }
        baseline.insert(k, k);
    }
    let key = |i: u64| (i * STRIDE) % KEYS;

    let mut figures = vec![
        Figures {
            name: "get_vs_btreemap",
            store: Vec::new(),
            baseline: Vec::new(),
        },
        Figures {
            name: "get_as_of_vs_btreemap",
            store: Vec::new(),
            baseline: Vec::new(),
        },
        Figures {
            name: "scan_vs_btreemap",
            store: Vec::new(),
            baseline: Vec::new(),
        },
        Figures {
            name: "put_vs_btreemap",
            store: Vec::new(),
            baseline: Vec::new(),
        },
    ];
    let scan_ops = ops / 50;
    for rep in 0..reps {
        // Alternate which side goes first, so neither always runs on a warmer cache.
        let store_first = rep % 2 == 0;
        let pair = |f: &mut Figures, s: &mut dyn FnMut() -> f64, b: &mut dyn FnMut() -> f64| {
            if store_first {
                f.store.push(s());
                f.baseline.push(b());
            } else {
                f.baseline.push(b());
                f.store.push(s());
            }
        };
        let [get, as_of, scan, put] = &mut figures[..] else {
            unreachable!()
        };
        pair(
            get,
            &mut || {
                time(ops, |i| {
                    let _ = black_box(store.latest(&key(i)));
                })
            },
            &mut || {
                time(ops, |i| {
                    let _ = black_box(baseline.get(&key(i)));
                })
            },
        );
        pair(
            as_of,
            &mut || {
                time(ops, |i| {
                    let _ = black_box(store.as_of(&key(i), &1));
                })
            },
            &mut || {
                time(ops, |i| {
                    let _ = black_box(baseline.get(&key(i)));
                })
            },
        );
        pair(
            scan,
            &mut || {
                time(scan_ops, |i| {
                    let k = key(i) % (KEYS - 100);
                    black_box(
                        store
                            .scan_as_of(k..k + 100, &2)
                            .expect("above the mark")
                            .count(),
                    );
                })
            },
            &mut || {
                time(scan_ops, |i| {
                    let k = key(i) % (KEYS - 100);
                    black_box(baseline.range(k..k + 100).count());
                })
            },
        );
        // Puts: each repetition adds one new version to `ops` keys (a fresh copy each time,
        // so the store does not grow across repetitions); the baseline overwrites.
        let mut fresh = store.clone();
        let mut map = baseline.clone();
        pair(
            put,
            &mut || {
                time(ops, |i| {
                    let (k, v) = (key(i), VERSIONS + i / KEYS);
                    {
                        let _ = black_box(fresh.put(k, v, k));
                    };
                })
            },
            &mut || {
                time(ops, |i| {
                    let _ = black_box(map.insert(key(i), i));
                })
            },
        );
    }

    for f in &figures {
        let (s, b) = (median(&f.store), median(&f.baseline));
        let ((s_lo, s_hi), (b_lo, b_hi)) = (min_max(&f.store), min_max(&f.baseline));
        println!(
            "{:34} store {s:8.1} ns/op ({s_lo:.1}-{s_hi:.1})   BTreeMap {b:8.1} ns/op ({b_lo:.1}-{b_hi:.1})",
            f.name
        );
    }
    for f in &figures {
        println!(
            "ratio quorum.versioned_{} {:.2}",
            f.name,
            median(&f.store) / median(&f.baseline)
        );
    }
}
