//! synod-wal beside okaywal (the `peers` feature): synced appends per second, the two logs
//! on the same disk in the same run, repetitions alternating so that both see the same
//! machine.
//!
//! Prints one `ratio wal.<shape>_vs_okaywal <value>` line per shape (Synod's appends per
//! second over okaywal's commits per second; above 1 means Synod is faster):
//!
//! - `wal.append_1w_256b_vs_okaywal`, `wal.append_1w_4k_vs_okaywal`: one writer, each
//!   record durable before the next is written. Synod: `Wal::append` under
//!   `SyncPolicy::Always`; okaywal: `begin_entry`, `write_chunk`, `commit`.
//! - `wal.group_64w_256b_vs_okaywal`, `wal.group_64w_4k_vs_okaywal`: 64 threads doing the
//!   same at once. Synod under `SyncPolicy::Group`, whose sync thread shares one sync
//!   among the writers waiting; okaywal shares its syncs among concurrent commits itself.
//!
//! Both logs drop what they hold as they go, as a user that checkpoints does: okaywal
//! through `LogVoid`, Synod's log through a thread that purges the segments whose records
//! are all durable (`Wal::purge_before`), which recycles their files as spare segments.
//! Each log is opened once per shape with its defaults (okaywal: `Configuration::default_for`
//! with `LogVoid`, which checkpoints by dropping entries; Synod: `WalConfig`'s defaults,
//! 64 MiB segments and two spare segment files prepared ahead) and warmed up before the
//! repetitions. `cargo bench -p synod-wal --features peers --bench
//! peers`; `SYNOD_BENCH_QUICK=1` for the short run (5 repetitions of 300 ms instead of 7 of
//! 2 s). A filter argument runs only the shapes whose name contains it.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use synod_wal::format::record_bytes;
use synod_wal::{FileStorage, SyncPolicy, Wal, WalConfig};

/// One of the two logs, shared by the writer threads.
#[derive(Clone)]
enum Log {
    Synod(Wal<FileStorage>),
    Okay(okaywal::WriteAheadLog),
}

impl Log {
    fn open(synod: bool, dir: &Path, writers: usize, payload_bytes: usize) -> Log {
        if synod {
            let policy = if writers == 1 {
                SyncPolicy::Always
            } else {
                SyncPolicy::Group {
                    batch_delay_us_max: 1000,
                    batch_bytes_max: writers * record_bytes(payload_bytes),
                }
            };
            let config = WalConfig::builder()
                .sync_policy(policy)
                .build()
                .expect("a valid configuration");
            let storage = FileStorage::new(dir).expect("the bench directory");
            Log::Synod(Wal::open(storage, config).expect("a new log opens").0)
        } else {
            let log = okaywal::Configuration::default_for(dir)
                .open(okaywal::LogVoid)
                .expect("a new okaywal log opens");
            Log::Okay(log)
        }
    }

    /// Appends one record and returns once it is durable.
    fn append(&self, payload: &Bytes) {
        match self {
            Log::Synod(wal) => {
                wal.append(payload.clone()).expect("append");
            }
            Log::Okay(log) => {
                let mut entry = log.begin_entry().expect("begin_entry");
                entry.write_chunk(payload).expect("write_chunk");
                entry.commit().expect("commit");
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Log::Synod(_) => "synod-wal",
            Log::Okay(_) => "okaywal",
        }
    }
}

/// What checkpointing is on Synod's side: okaywal's `LogVoid` lets okaywal drop (and
/// recycle) a log file once it is checkpointed, so Synod's log drops whole segments of
/// durable records as often (`Wal::purge_before`), which turns them into spare files for
/// the next segments instead of pre-writing new ones.
fn checkpoint(wal: &Wal<FileStorage>, stop: &std::sync::atomic::AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        if wal.segment_count() > 1 {
            wal.purge_before(wal.durable_index()).expect("purge");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `writers` threads appending `payload_bytes` records for `duration`: appends per second.
fn rate(log: &Log, writers: usize, payload_bytes: usize, duration: Duration) -> f64 {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checkpointer = match log {
        Log::Synod(wal) => {
            let (wal, stop) = (wal.clone(), Arc::clone(&stop));
            Some(std::thread::spawn(move || checkpoint(&wal, &stop)))
        }
        Log::Okay(_) => None,
    };
    let barrier = Arc::new(Barrier::new(writers + 1));
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Arc::new(parking_lot::Mutex::new(None::<Instant>));
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let log = log.clone();
            let barrier = Arc::clone(&barrier);
            let done = Arc::clone(&done);
            let deadline = Arc::clone(&deadline);
            std::thread::spawn(move || {
                let payload = Bytes::from(vec![0x5au8; payload_bytes]);
                barrier.wait();
                let end = deadline.lock().expect("set before the start");
                let mut n = 0;
                while n == 0 || Instant::now() < end {
                    log.append(&payload);
                    n += 1;
                }
                done.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    let start = Instant::now();
    *deadline.lock() = Some(start + duration);
    barrier.wait();
    for t in threads {
        t.join().expect("a writer thread");
    }
    let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = checkpointer {
        t.join().expect("the checkpointer");
    }
    rate
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let quick = std::env::var("SYNOD_BENCH_QUICK").is_ok_and(|v| v == "1");
    let (reps, rep) = if quick {
        (5, Duration::from_millis(300))
    } else {
        (7, Duration::from_secs(2))
    };
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a bench directory");
    println!(
        "synod-wal beside okaywal 0.3; data in {}; {reps} repetitions of {rep:?}",
        root.path().display()
    );
    for (name, writers, payload) in [
        ("wal.append_1w_256b_vs_okaywal", 1usize, 256usize),
        ("wal.append_1w_4k_vs_okaywal", 1, 4096),
        ("wal.group_64w_256b_vs_okaywal", 64, 256),
        ("wal.group_64w_4k_vs_okaywal", 64, 4096),
    ] {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let logs: Vec<Log> = [true, false]
            .into_iter()
            .map(|synod| {
                let dir = root.path().join(format!("{name}-{synod}"));
                let log = Log::open(synod, &dir, writers, payload);
                // Warm up: first segment files, the page cache, the threads.
                rate(&log, writers, payload, rep / 2);
                log
            })
            .collect();
        let mut rates = [Vec::new(), Vec::new()];
        let mut ratios = Vec::new();
        for _ in 0..reps {
            let synod = rate(&logs[0], writers, payload, rep);
            let okay = rate(&logs[1], writers, payload, rep);
            rates[0].push(synod);
            rates[1].push(okay);
            ratios.push(synod / okay);
        }
        println!("{writers} writers, {payload} B records:");
        for (log, r) in logs.iter().zip(rates.iter()) {
            let (median, min, max) = stats(r.clone());
            println!(
                "  {:<10} median {median:>9.0} appends/s (min {min:.0}, max {max:.0})",
                log.name()
            );
        }
        let (_, lo, hi) = stats(ratios);
        let (s, _, _) = stats(rates[0].clone());
        let (o, _, _) = stats(rates[1].clone());
        println!("  ratio of medians; per-repetition ratios from {lo:.3} to {hi:.3}");
        println!("ratio {name} {:.3}", s / o);
    }
}
