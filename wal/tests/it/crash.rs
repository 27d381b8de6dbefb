//! The crash-point sweep: random workloads (appends, syncs, roll-overs, truncations, purges)
//! stopped at a random storage operation, crashed in every crash mode, recovered twice, by
//! the default recovery and by the salvaging one.

use std::collections::BTreeMap;

use synod_node::Rng;
use synod_wal::testing::{CrashMode, FaultyStorage};
use synod_wal::{LogIndex, RecoveryMode, SyncPolicy, Wal, WalConfig};

use crate::util::{env_u64, small_config};

fn record(index: u64, epoch: u64, len: usize) -> Vec<u8> {
    let mut p = format!("{index}:{epoch}:").into_bytes();
    while p.len() < len {
        p.push(b'a' + ((index + epoch + p.len() as u64) % 26) as u8);
    }
    p
}

fn parse(payload: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(3, ':');
    let index = parts.next()?.parse().ok()?;
    let epoch = parts.next()?.parse().ok()?;
    Some((index, epoch))
}

/// What the workload knows: what must survive and what may.
#[derive(Default)]
struct Model {
    /// index -> payload of records acknowledged durable and not since truncated or purged:
    /// each must come back unchanged.
    acked: BTreeMap<u64, Vec<u8>>,
    /// index -> payload of every record the log may hold: what it holds as the workload
    /// sees it (appended, not truncated nor purged), and, when a truncation or a purge did
    /// not complete, what it held before. Nothing else may come back: no record a
    /// completed truncation or purge removed, none that was never written.
    log: BTreeMap<u64, Vec<u8>>,
    epoch: u64,
}
#[derive(Default, Debug)]
struct Totals {
    crash_points: u64,
    acknowledged: u64,
    lost: u64,
    corrupt: u64,
    recovered_records: u64,
    resurrected: u64,
    differing_recoveries: u64,
    not_writable_after: u64,
    per_mode: BTreeMap<&'static str, ModeCounts>,
}

/// What the crashes of one mode did, to show that each really fired.
#[derive(Default, Debug)]
struct ModeCounts {
    crashes: u64,
    unsynced_ops: u64,
    ops_lost: u64,
    torn: u64,
    bits_flipped: u64,
    dir_ops_lost: u64,
}

fn config(policy: SyncPolicy, pending_bytes_max: usize, recovery: RecoveryMode) -> WalConfig {
    WalConfig::builder()
        .segment_bytes_max(4096)
        .record_bytes_max(700)
        .pending_bytes_max(pending_bytes_max)
        .spare_segments_max(1)
        .sync_policy(policy)
        .recovery_mode(recovery)
        .build()
        .expect("valid config")
}

/// Runs a workload until it ends or the disk halts. Returns nothing: the model says what
/// was acknowledged.
fn workload(wal: &Wal<FaultyStorage>, rng: &mut Rng, model: &mut Model, steps: u64) {
    for _ in 0..steps {
        let next = wal.next_index().get();
        let roll = rng.below(100);
        let ok = if roll < 55 {
            let n = 1 + rng.below(4);
            let payloads: Vec<Vec<u8>> = (0..n)
                .map(|k| record(next + k, model.epoch, 8 + rng.below(600) as usize))
                .collect();
            // Queued records may be on disk even if the call fails.
            for (k, p) in payloads.iter().enumerate() {
                model.log.insert(next + k as u64, p.clone());
            }
            if rng.below(2) == 0 {
                wal.submit_batch(payloads).is_ok()
            } else {
                wal.append_batch(payloads).is_ok()
            }
        } else if roll < 85 {
            wal.sync().is_ok()
        } else if roll < 93 {
            let first = wal.first_index().get();
            let last = wal.last_index().get();
            let keep = first - 1 + rng.below(last + 2 - first);
            // Records after the cut are no longer owed, whatever happens next; once the cut
            // is made they may not come back.
            model.acked.retain(|&i, _| i <= keep);
            model.epoch += 1;
            let ok = wal.truncate_after(LogIndex::new(keep)).is_ok();
            if ok {
                model.log.retain(|&i, _| i <= keep);
            }
            ok
        } else {
            let last = wal.last_index().get();
            let mark = 1 + rng.below(last + 3);
            model.acked.retain(|&i, _| i >= mark);
            if mark > last + 1 {
                model.epoch += 1;
            }
            let ok = wal.purge_before(LogIndex::new(mark)).is_ok();
            if ok {
                // Whole segments go: what is below the new first index may not come back.
                let first = wal.first_index().get();
                model.log.retain(|&i, _| i >= first);
            }
            ok
        };
        if !ok {
            // A failed call acknowledges nothing.
            return;
        }
        // Whatever is durable now is owed.
        let durable = wal.durable_index().get();
        for (&i, p) in model.log.range(..=durable) {
            model.acked.entry(i).or_insert_with(|| p.clone());
        }
    }
}

fn recovered(wal: &Wal<FaultyStorage>) -> Vec<(u64, Vec<u8>)> {
    wal.range(wal.first_index(), wal.next_index())
        .map(|r| {
            let (i, b) = r.expect("a recovered record reads back");
            (i.get(), b.to_vec())
        })
        .collect()
}

fn one_crash_point(seed: u64, mode: CrashMode, totals: &mut Totals) {
    let mut rng = Rng::new(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5eed);
    let disk = FaultyStorage::new(seed);
    let policy = if seed.is_multiple_of(3) {
        SyncPolicy::Always
    } else {
        SyncPolicy::Manual
    };
    // A small pending limit makes Manual appends write through without syncing, so that
    // crashes find several unsynced writes to lose, tear, reorder and flip.
    let pending = if (seed / 6) % 3 == 1 { 1024 } else { 64 * 1024 };
    // A crash damages only what was not synced, so salvaging recovery must find exactly
    // what the default one finds.
    let recovery = if (seed / 18).is_multiple_of(2) {
        RecoveryMode::TolerateTornTail
    } else {
        RecoveryMode::SkipAndReport
    };
    let cfg = config(policy, pending, recovery);
    let mut model = Model::default();
    {
        let (wal, _) = Wal::open(disk.clone(), cfg.clone()).expect("a new log opens");
        // Some history first, then a crash at a random storage operation.
        let warmup = rng.below(20);
        workload(&wal, &mut rng, &mut model, warmup);
        disk.halt_after(Some(rng.below(120)));
        workload(&wal, &mut rng, &mut model, 200);
    }
    let crash = disk.crash(mode);
    totals.crash_points += 1;
    let counts = totals.per_mode.entry(mode.name()).or_default();
    counts.crashes += 1;
    counts.unsynced_ops += crash.unsynced_ops;
    counts.ops_lost += crash.ops_lost;
    counts.torn += u64::from(crash.torn);
    counts.bits_flipped += crash.bits_flipped;
    counts.dir_ops_lost += crash.dir_ops_lost;
    totals.acknowledged += model.acked.len() as u64;
    let (wal, _) = match Wal::open(disk.clone(), cfg.clone()) {
        Ok(w) => w,
        Err(e) => panic!("seed {seed} mode {mode:?}: recovery failed: {e}"),
    };
    let got = recovered(&wal);
    // Every acknowledged record is there, unchanged.
    let map: BTreeMap<u64, &Vec<u8>> = got.iter().map(|(i, p)| (*i, p)).collect();
    for (i, p) in &model.acked {
        if map.get(i) != Some(&p) {
            totals.lost += 1;
            eprintln!("seed {seed} mode {mode:?}: lost acknowledged record {i}");
        }
    }
    // Nothing returned that the log may not hold (never written, or removed by a completed
    // truncation or purge), and no mix of before and after a truncation.
    let mut last_epoch = 0;
    for (i, p) in &got {
        if model.log.get(i) != Some(p) {
            totals.resurrected += 1;
            eprintln!(
                "seed {seed} mode {mode:?} {recovery:?}: returned a record the log may not hold at {i}"
            );
        }
        let ok = parse(p).is_some_and(|(pi, epoch)| {
            let fine = pi == *i && epoch >= last_epoch;
            last_epoch = epoch;
            fine
        });
        if !ok {
            totals.corrupt += 1;
            eprintln!("seed {seed} mode {mode:?}: returned a record that was never written at {i}");
        }
    }
    totals.recovered_records += got.len() as u64;
    drop(wal);
    // Recovering again gives the same log.
    let (wal, _) = Wal::open(disk.clone(), cfg.clone()).expect("second recovery");
    if recovered(&wal) != got {
        totals.differing_recoveries += 1;
        eprintln!("seed {seed} mode {mode:?}: second recovery differs");
    }
    // And the recovered log takes writes that survive the next crash.
    let next = wal.next_index().get();
    let extra = record(next, 999, 40);
    let writable = wal.append(extra.clone()).is_ok() && wal.sync().is_ok();
    drop(wal);
    disk.crash(CrashMode::DropUnsynced);
    let (wal, _) = Wal::open(disk, cfg).expect("third recovery");
    let again = recovered(&wal);
    if !writable
        || again.len() != got.len() + 1
        || again[..got.len()] != got[..]
        || again.last().map(|r| &r.1) != Some(&extra)
    {
        totals.not_writable_after += 1;
        eprintln!("seed {seed} mode {mode:?}: the recovered log did not keep a new record");
    }
}

#[test]
fn crash_point_sweep_loses_nothing_acknowledged() {
    let points = env_u64("SYNOD_WAL_CRASH_POINTS", 12_000);
    let mut totals = Totals::default();
    for seed in 0..points {
        let mode = CrashMode::ALL[(seed % CrashMode::ALL.len() as u64) as usize];
        one_crash_point(seed, mode, &mut totals);
    }
    println!(
        "crash sweep: crash points {}, records acknowledged {}, lost {}, corrupt returned {}, removed returned {}, recovered records {}, second recovery differed {}, not writable after {}",
        totals.crash_points,
        totals.acknowledged,
        totals.lost,
        totals.corrupt,
        totals.resurrected,
        totals.recovered_records,
        totals.differing_recoveries,
        totals.not_writable_after
    );
    for (mode, c) in &totals.per_mode {
        println!(
            "  {mode:>13}: crashes {}, unsynced writes at the crash {}, lost {}, torn {}, bits flipped {}, directory changes lost {}",
            c.crashes, c.unsynced_ops, c.ops_lost, c.torn, c.bits_flipped, c.dir_ops_lost
        );
    }
    // Each crash mode really did what it says, or the sweep proves less than it claims.
    let mode = |name: &str| &totals.per_mode[name];
    assert!(mode("drop-unsynced").ops_lost > 0);
    assert!(
        mode("keep-prefix").ops_lost > 0
            && mode("keep-prefix").ops_lost < mode("keep-prefix").unsynced_ops
    );
    assert!(mode("tear-last").torn > 0);
    assert!(mode("reorder").ops_lost > 0);
    assert!(mode("flip-bit").bits_flipped > 0);
    assert_eq!(mode("keep-all").ops_lost, 0);
    assert!(totals.crash_points >= points);
    assert!(
        totals.acknowledged > 0,
        "the sweep acknowledged nothing: it tests nothing"
    );
    assert_eq!(totals.lost, 0, "acknowledged records lost");
    assert_eq!(
        totals.corrupt, 0,
        "records returned that were never written"
    );
    assert_eq!(
        totals.resurrected, 0,
        "records returned that a completed truncation or purge removed"
    );
    assert_eq!(totals.differing_recoveries, 0);
    assert_eq!(totals.not_writable_after, 0);
}

/// Group commit under crashes: writer threads append until the disk halts; every append
/// that returned success must survive the crash, whatever the thread interleaving was.
#[test]
fn group_commit_crashes_lose_nothing_acknowledged() {
    let mut acknowledged_total = 0usize;
    for seed in 0..60u64 {
        let disk = FaultyStorage::new(seed);
        let policy = SyncPolicy::Group {
            batch_delay_us_max: seed % 3 * 50,
            batch_bytes_max: 2048,
        };
        let cfg = config(policy, 64 * 1024, RecoveryMode::TolerateTornTail);
        let (wal, _) = Wal::open(disk.clone(), cfg.clone()).expect("a new log opens");
        disk.halt_after(Some(30 + seed * 7 % 200));
        let writers: Vec<_> = (0..4u64)
            .map(|w| {
                let wal = wal.clone();
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    for k in 0..200u64 {
                        let payload = record(w * 1_000_000 + k, w, 20 + (k as usize * 37) % 300);
                        match wal.append(payload.clone()) {
                            Ok(index) => acked.push((index.get(), payload)),
                            Err(_) => break,
                        }
                    }
                    acked
                })
            })
            .collect();
        let acked: Vec<(u64, Vec<u8>)> = writers
            .into_iter()
            .flat_map(|t| t.join().expect("writer"))
            .collect();
        let durable = wal.durable_index().get();
        assert!(
            acked.iter().all(|(i, _)| *i <= durable),
            "seed {seed}: acknowledged past the durable index"
        );
        drop(wal);
        disk.crash(CrashMode::ALL[(seed % CrashMode::ALL.len() as u64) as usize]);
        let (wal, _) = Wal::open(
            disk,
            config(
                SyncPolicy::Manual,
                64 * 1024,
                RecoveryMode::TolerateTornTail,
            ),
        )
        .expect("recovers");
        for (index, payload) in &acked {
            let got = wal
                .read(LogIndex::new(*index))
                .unwrap_or_else(|e| panic!("seed {seed}: acknowledged record {index} lost: {e}"));
            assert_eq!(
                &got[..],
                &payload[..],
                "seed {seed}: record {index} changed"
            );
        }
        acknowledged_total += acked.len();
    }
    println!("group-commit crashes: 60, acknowledged records {acknowledged_total}, lost 0");
    assert!(acknowledged_total > 0);
}

/// A crash that tears the only record of a newly rolled segment leaves that segment with no
/// whole record. Recovery then starts the next segment at the same index, under the same
/// name: the log must hold it once, or a later purge takes the stale entry for an empty
/// segment below the mark and discards the file that is now the live one, with its synced
/// records.
#[test]
fn a_torn_tail_in_a_segment_without_a_whole_record_loses_nothing_at_a_later_purge() {
    let config = small_config(SyncPolicy::Manual);
    let mut hit = 0;
    for seed in 0..200 {
        let disk = FaultyStorage::new(seed);
        let (wal, _) = Wal::open(disk.clone(), config.clone()).expect("open");
        for i in 1..=3 {
            wal.append(record(i, 0, 1000)).expect("append");
        }
        wal.sync().expect("sync");
        // The fourth record rolls the log over to a new segment, where it stays unsynced.
        wal.append(record(4, 0, 1000)).expect("append");
        wal.flush().expect("flush");
        assert_eq!(wal.segment_count(), 2);
        drop(wal);
        disk.crash(CrashMode::TearLast);
        let (wal, report) = Wal::open(disk.clone(), config.clone()).expect("reopen");
        if report.torn_tail.is_none() || report.next_index.get() != 4 {
            continue; // the tear left nothing of the record: no torn tail to recover from
        }
        hit += 1;
        let files = disk
            .file_names()
            .iter()
            .filter(|n| n.ends_with(".wal"))
            .count();
        assert_eq!(
            wal.segment_count(),
            files,
            "seed {seed}: one entry per segment file"
        );
        for i in 4..=5 {
            wal.append(record(i, 1, 100)).expect("append");
        }
        wal.sync().expect("sync");
        wal.purge_before(LogIndex::new(4)).expect("purge");
        drop(wal);
        let (wal, _) = Wal::open(disk, config.clone()).expect("reopen after the purge");
        assert_eq!(
            wal.next_index(),
            LogIndex::new(6),
            "seed {seed}: synced records lost"
        );
        assert_eq!(
            &wal.read(LogIndex::new(5)).expect("read")[..],
            &record(5, 1, 100)[..]
        );
    }
    assert!(hit > 20, "only {hit} seeds tore the record");
}

/// Recovery makes the records that no later record proves synced safe before it builds on
/// them (after a failed sync they may sit in pages that were never written). A crash in the
/// middle of that, under every crash mode, must not cost a record that had been synced: a
/// synced record is never written again in place, where a torn or flipped write would
/// damage it.
#[test]
fn a_crash_while_recovery_secures_the_last_batch_never_loses_a_synced_record() {
    let config = small_config(SyncPolicy::Manual);
    let mut halted = 0;
    for seed in 0..40u64 {
        for mode in CrashMode::ALL {
            for halt in 0..8u64 {
                let disk = FaultyStorage::new(seed * 1000 + halt);
                let (wal, _) = Wal::open(disk.clone(), config.clone()).expect("open");
                let written: Vec<Vec<u8>> = (1..=4)
                    .map(|i| record(i, seed, 40 + 90 * i as usize))
                    .collect();
                wal.append_batch(written.clone()).expect("append");
                wal.sync().expect("sync");
                drop(wal); // the process stops: every record is synced, none proven by a later one
                disk.halt_after(Some(halt));
                if Wal::open(disk.clone(), config.clone()).is_err() {
                    halted += 1;
                }
                disk.crash(mode);
                let (wal, _) = Wal::open(disk.clone(), config.clone()).unwrap_or_else(|e| {
                    panic!("seed {seed} {mode:?} halt {halt}: recovery failed: {e}")
                });
                for (k, p) in written.iter().enumerate() {
                    let index = LogIndex::new(k as u64 + 1);
                    let got = wal.read(index).unwrap_or_else(|e| {
                        panic!("seed {seed} {mode:?} halt {halt}: synced record {index} lost: {e}")
                    });
                    assert_eq!(&got[..], &p[..], "seed {seed} {mode:?} halt {halt}");
                }
            }
        }
    }
    assert!(
        halted > 100,
        "only {halted} recoveries were stopped part-way"
    );
}
