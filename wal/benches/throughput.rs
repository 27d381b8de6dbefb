//! Headline benchmark: the log against the disk it sits on, baselines measured in the same run.
//!
//! Prints one `ratio <name> <value>` line per figure:
//!
//! - `wal.append_1w_4k_vs_fdatasync`: synced 4 KiB appends per second with one writer,
//!   over raw `pwrite` + `fdatasync` of 4 KiB into a pre-written file.
//! - `wal.group_64w_128b_vs_ceiling`, `wal.group_64w_4k_vs_ceiling`: 64 writer threads
//!   appending with group commit, over the ceiling 64 x the raw `pwrite` + `fdatasync` rate
//!   at the size of a 64-record batch.
//! - `wal.recovery_scan_vs_crc`: bytes per second of the recovery scan (`synod_wal::check`,
//!   the scan `Wal::open` runs, without the syncs and the copy of the last, unproven
//!   batch that open adds) over crc32fast bytes per second on the same bytes in memory. The
//!   scan reads whole segments, pre-written zeros included, while the figure counts only
//!   the records' bytes.
//!
//! `SYNOD_BENCH_QUICK=1` runs fewer, shorter repetitions (under 30 s). Files go to a
//! temporary directory under Cargo's target directory, on the same file system as the
//! workspace (not a tmpfs).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use synod_wal::format::record_bytes;
use synod_wal::{FileStorage, SyncPolicy, Wal, WalConfig};

struct Plan {
    reps: usize,
    /// How long one repetition of a rate measurement runs.
    rep: Duration,
    segment_bytes: u64,
    recovery_bytes: u64,
}

fn plan() -> Plan {
    if std::env::var("SYNOD_BENCH_QUICK").is_ok_and(|v| v == "1") {
        Plan {
            reps: 5,
            rep: Duration::from_millis(300),
            segment_bytes: 16 << 20,
            recovery_bytes: 32 << 20,
        }
    } else {
        Plan {
            reps: 7,
            rep: Duration::from_secs(2),
            segment_bytes: 256 << 20,
            recovery_bytes: 256 << 20,
        }
    }
}

/// Median, min and max of per-repetition rates.
fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn report(label: &str, unit: &str, v: &[f64]) -> f64 {
    let (median, min, max) = stats(v.to_vec());
    println!(
        "{label}: median {median:.0} {unit} (min {min:.0}, max {max:.0}, {} reps)",
        v.len()
    );
    median
}

/// A pre-written file (64 MiB of zeros, synced) for the raw baseline.
fn prewritten(dir: &Path) -> std::fs::File {
    let path = dir.join("raw.bin");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let total = 64usize << 20;
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < total {
        let n = zeros.len().min(total - at);
        file.write_all_at(&zeros[..n], at as u64).unwrap();
        at += n;
    }
    file.sync_all().unwrap();
    file
}

/// Raw `pwrite` + `fdatasync` of `bytes` at a time into the pre-written file, written round
/// and round: writes per second over `duration`.
fn raw_fdatasync_rate(file: &std::fs::File, bytes: usize, duration: Duration) -> f64 {
    let slots = (64usize << 20) / bytes;
    let buf = vec![0x5au8; bytes];
    let start = Instant::now();
    let mut ops = 0usize;
    while ops < 3 || start.elapsed() < duration {
        file.write_all_at(&buf, ((ops % slots) * bytes) as u64)
            .unwrap();
        file.sync_data().unwrap();
        ops += 1;
    }
    ops as f64 / start.elapsed().as_secs_f64()
}

fn open_log(dir: &Path, policy: SyncPolicy, segment_bytes: u64) -> Wal<FileStorage> {
    let config = WalConfig::builder()
        .segment_bytes_max(segment_bytes)
        .record_bytes_max(64 * 1024)
        .sync_policy(policy)
        .build()
        .unwrap();
    Wal::open(FileStorage::new(dir).unwrap(), config).unwrap().0
}

/// One writer, synced 4 KiB appends: appends per second.
fn wal_single_rate(root: &Path, plan: &Plan) -> f64 {
    let dir = tempfile::tempdir_in(root).unwrap();
    let wal = open_log(dir.path(), SyncPolicy::Always, plan.segment_bytes);
    let payload = bytes::Bytes::from(vec![0x5au8; 4096]);
    let start = Instant::now();
    let mut ops = 0usize;
    while ops < 3 || start.elapsed() < plan.rep {
        wal.append(payload.clone()).unwrap();
        ops += 1;
    }
    ops as f64 / start.elapsed().as_secs_f64()
}

/// 64 writers, each appending and waiting for durability: appends per second.
fn wal_group_rate(root: &Path, plan: &Plan, payload_bytes: usize) -> f64 {
    let writers = 64;
    let dir = tempfile::tempdir_in(root).unwrap();
    let policy = SyncPolicy::Group {
        batch_delay_us_max: 1000,
        batch_bytes_max: writers * record_bytes(payload_bytes),
    };
    let wal = open_log(dir.path(), policy, plan.segment_bytes);
    let barrier = Arc::new(Barrier::new(writers + 1));
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Arc::new(parking_lot::Mutex::new(None::<Instant>));
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let wal = wal.clone();
            let barrier = Arc::clone(&barrier);
            let done = Arc::clone(&done);
            let deadline = Arc::clone(&deadline);
            std::thread::spawn(move || {
                let payload = bytes::Bytes::from(vec![0x5au8; payload_bytes]);
                barrier.wait();
                let end = deadline.lock().expect("set before the start");
                while Instant::now() < end {
                    wal.append(payload.clone()).unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let start = Instant::now();
    *deadline.lock() = Some(start + plan.rep);
    barrier.wait();
    for t in threads {
        t.join().unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Recovery: bytes per second of the recovery scan (`synod_wal::check`, the scan `Wal::open`
/// runs, without the syncs that open adds) over a log of 4 KiB records, and crc32fast bytes
/// per second over the same bytes in memory.
fn recovery_rates(root: &Path, plan: &Plan) -> (Vec<f64>, Vec<f64>) {
    let dir = tempfile::tempdir_in(root).unwrap();
    let segment = 64u64 << 20;
    {
        let wal = open_log(dir.path(), SyncPolicy::Manual, segment);
        let payload = bytes::Bytes::from((0..4096u32).map(|i| (i * 7) as u8).collect::<Vec<u8>>());
        let count = plan.recovery_bytes / record_bytes(4096) as u64;
        for chunk in 0..count / 256 {
            let _ = chunk;
            wal.submit_batch(std::iter::repeat_n(payload.clone(), 256))
                .unwrap();
            wal.sync().unwrap();
        }
        wal.close().unwrap();
    }
    let report = synod_wal::check(dir.path()).unwrap();
    let used = report.bytes_used;
    // The same bytes in memory, for the checksum baseline.
    let mut data = Vec::new();
    for s in &report.segments {
        let bytes = std::fs::read(dir.path().join(&s.name)).unwrap();
        data.extend_from_slice(&bytes[..s.bytes_used as usize]);
    }
    let mut scan = Vec::new();
    let mut crc = Vec::new();
    let config = WalConfig::builder()
        .segment_bytes_max(segment)
        .record_bytes_max(64 * 1024)
        .sync_policy(SyncPolicy::Manual)
        .build()
        .unwrap();
    // Open once, as a restart would: it syncs, and writes the unproven last batch again.
    let (wal, r) = Wal::open(FileStorage::new(dir.path()).unwrap(), config).unwrap();
    assert_eq!(r.records, report.records);
    drop(wal);
    for _ in 0..plan.reps {
        let start = Instant::now();
        let r = synod_wal::check(dir.path()).unwrap();
        scan.push(used as f64 / start.elapsed().as_secs_f64());
        assert_eq!(r.records, report.records);
        let start = Instant::now();
        let h = crc32fast::hash(&data);
        crc.push(data.len() as f64 / start.elapsed().as_secs_f64());
        std::hint::black_box(h);
    }
    (scan, crc)
}

fn main() {
    let plan = plan();
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    println!(
        "synod-wal throughput benchmark; data in {}",
        root.path().display()
    );
    let raw_file = prewritten(root.path());

    // Baseline and component repetitions alternate, so that both see the same machine.
    // One writer, 4 KiB.
    let (mut raw, mut wal) = (Vec::new(), Vec::new());
    for _ in 0..plan.reps {
        raw.push(raw_fdatasync_rate(&raw_file, 4096, plan.rep));
        wal.push(wal_single_rate(root.path(), &plan));
    }
    let base = report("baseline pwrite+fdatasync 4 KiB", "writes/s", &raw);
    let got = report(
        "wal append 1 writer 4 KiB (SyncPolicy::Always)",
        "appends/s",
        &wal,
    );
    println!("ratio wal.append_1w_4k_vs_fdatasync {:.3}", got / base);

    // 64 writers, group commit.
    for (name, payload) in [
        ("wal.group_64w_128b_vs_ceiling", 128usize),
        ("wal.group_64w_4k_vs_ceiling", 4096),
    ] {
        let batch = 64 * record_bytes(payload);
        let (mut ceiling, mut wal) = (Vec::new(), Vec::new());
        for _ in 0..plan.reps {
            ceiling.push(64.0 * raw_fdatasync_rate(&raw_file, batch, plan.rep));
            wal.push(wal_group_rate(root.path(), &plan, payload));
        }
        let base = report(
            &format!("ceiling 64 x pwrite+fdatasync of {batch} B"),
            "appends/s",
            &ceiling,
        );
        let got = report(
            &format!("wal append 64 writers {payload} B (SyncPolicy::Group)"),
            "appends/s",
            &wal,
        );
        println!("ratio {name} {:.3}", got / base);
    }

    // Recovery scan.
    let (scan, crc) = recovery_rates(root.path(), &plan);
    let base = report("baseline crc32fast over the log's bytes", "bytes/s", &crc);
    let got = report("wal recovery scan (check)", "bytes/s", &scan);
    println!("ratio wal.recovery_scan_vs_crc {:.3}", got / base);
}
