//! Damage on disk and failing disks: bit flips in the durable middle are reported with
//! their location, flips in the unsynced tail are cut off, and failed syncs never
//! acknowledge anything and poison the log until it is reopened.

use synod_wal::testing::{CrashMode, Fault, FaultyStorage};
use synod_wal::{CorruptionKind, LogIndex, RecoveryMode, SyncPolicy, Wal, WalConfig, WalError};

use crate::util::{contents, payload, small_config};

fn config(mode: RecoveryMode) -> WalConfig {
    WalConfig::builder()
        .segment_bytes_max(64 * 1024)
        .record_bytes_max(1024)
        .sync_policy(SyncPolicy::Manual)
        .recovery_mode(mode)
        .build()
        .unwrap()
}

/// A log with three synced batches of 10 records of 100 bytes in one segment.
fn three_batches(seed: u64) -> (FaultyStorage, String) {
    let disk = FaultyStorage::new(seed);
    let (wal, _) = Wal::open(disk.clone(), config(RecoveryMode::TolerateTornTail)).unwrap();
    for batch in 0..3u64 {
        wal.submit_batch((1..=10).map(|k| payload(batch * 10 + k, 100)))
            .unwrap();
        wal.sync().unwrap();
    }
    let segment = disk
        .file_names()
        .into_iter()
        .find(|n| n.ends_with(".wal"))
        .unwrap();
    (disk, segment)
}

/// Offset of record `index` (1-based) in `three_batches`: 48-byte header, 128-byte records.
fn offset_of(index: u64) -> u64 {
    48 + (index - 1) * 128
}

#[test]
fn bit_flips_in_the_durable_middle_are_reported_not_truncated() {
    let mut reported = 0;
    // Every byte of records 1 to 20: their damage is proven by the synced batches after them.
    for index in 1..=20u64 {
        for byte in [0u64, 5, 9, 17, 21, 30, 77, 123] {
            let (disk, segment) = three_batches(index * 1000 + byte);
            let at = offset_of(index) + byte;
            disk.flip_bit(&segment, at, (byte % 8) as u8).unwrap();
            match Wal::open(disk.clone(), config(RecoveryMode::TolerateTornTail)) {
                Err(WalError::Corrupt(c)) => {
                    assert_eq!(c.segment, segment);
                    assert_eq!(c.offset, offset_of(index), "{c}");
                    assert_eq!(c.index, Some(LogIndex::new(index)));
                    assert!(matches!(c.kind, CorruptionKind::BadRecord), "{c}");
                    reported += 1;
                }
                Ok(_) => panic!("a flip in durable record {index} byte {byte} was not reported"),
                Err(e) => panic!("unexpected error {e}"),
            }
            // The strict mode agrees; check() names the place; salvage opens the prefix.
            assert!(matches!(
                Wal::open(disk.clone(), config(RecoveryMode::Strict)),
                Err(WalError::Corrupt(_))
            ));
            let report = synod_wal::check_storage(&disk).unwrap();
            assert!(!report.is_ok());
            assert!(
                report
                    .to_string()
                    .contains(&format!("{segment} at offset {}", offset_of(index))),
                "{report}"
            );
            let (wal, recovery) =
                Wal::open(disk.clone(), config(RecoveryMode::SkipAndReport)).unwrap();
            assert_eq!(wal.last_index(), LogIndex::new(index - 1));
            assert_eq!(
                recovery.corruption.map(|c| c.offset),
                Some(offset_of(index))
            );
        }
    }
    println!("durable-middle bit flips reported with segment and offset: {reported}");
    assert_eq!(reported, 160);
}

#[test]
fn bit_flips_in_a_closed_segment_are_reported() {
    let disk = FaultyStorage::new(7);
    let (wal, _) = Wal::open(disk.clone(), small_config(SyncPolicy::Always)).unwrap();
    for i in 1..=60u64 {
        wal.append(payload(i, 100)).unwrap();
    }
    drop(wal);
    let first = disk
        .file_names()
        .into_iter()
        .find(|n| n.ends_with(".wal"))
        .unwrap();
    // The last record of the first (closed) segment: no later record in it vouches for it.
    let records_in_first = (4096 - 48) / 128;
    let at = 48 + (records_in_first - 1) * 128 + 30;
    disk.flip_bit(&first, at, 3).unwrap();
    match Wal::open(disk.clone(), small_config(SyncPolicy::Always)) {
        Err(WalError::Corrupt(c)) => {
            assert_eq!(c.segment, first);
            assert_eq!(c.index, Some(LogIndex::new(records_in_first)));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn bit_flips_in_the_unsynced_tail_are_cut_off() {
    for (k, flip_index) in [21u64, 22, 25, 30].into_iter().enumerate() {
        let disk = FaultyStorage::new(100 + k as u64);
        let (wal, _) = Wal::open(disk.clone(), config(RecoveryMode::TolerateTornTail)).unwrap();
        wal.submit_batch((1..=20).map(|i| payload(i, 100))).unwrap();
        wal.sync().unwrap();
        // The next batch is written but its sync never happens (the process dies).
        wal.submit_batch((21..=30).map(|i| payload(i, 100)))
            .unwrap();
        disk.halt_after(Some(1));
        assert!(wal.sync().is_err());
        drop(wal);
        disk.crash(CrashMode::KeepAll);
        let segment = disk
            .file_names()
            .into_iter()
            .find(|n| n.ends_with(".wal"))
            .unwrap();
        disk.flip_bit(&segment, offset_of(flip_index) + 40, 1)
            .unwrap();
        let (wal, report) =
            Wal::open(disk.clone(), config(RecoveryMode::TolerateTornTail)).unwrap();
        assert_eq!(
            wal.last_index(),
            LogIndex::new(flip_index - 1),
            "cut at the flipped unsynced record"
        );
        assert_eq!(
            report.torn_tail.map(|(_, o)| o),
            Some(offset_of(flip_index))
        );
        // Strict refuses the torn tail instead.
        drop(wal);
        let disk2 = disk.clone();
        assert!(
            Wal::open(disk2, config(RecoveryMode::Strict)).is_ok(),
            "the tail was cut on the first open"
        );
    }
}

#[test]
fn a_failed_sync_acknowledges_nothing_and_poisons_the_log() {
    for policy in [
        SyncPolicy::Always,
        SyncPolicy::Manual,
        SyncPolicy::Group {
            batch_delay_us_max: 0,
            batch_bytes_max: 1,
        },
    ] {
        for crash in [
            None,
            Some(CrashMode::KeepAll),
            Some(CrashMode::DropUnsynced),
            Some(CrashMode::TearLast),
        ] {
            let disk = FaultyStorage::new(9);
            let (wal, _) = Wal::open(disk.clone(), small_config(policy)).unwrap();
            for i in 1..=5u64 {
                wal.append(payload(i, 50)).unwrap();
            }
            wal.sync().unwrap();
            let heard = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let h = heard.clone();
            wal.set_durable_listener(move |i| {
                h.store(i.get(), std::sync::atomic::Ordering::SeqCst);
            });
            disk.inject(Fault::SyncError);
            let batch: Vec<Vec<u8>> = (6..=9).map(|i| payload(i, 50)).collect();
            let result = if policy == SyncPolicy::Manual {
                wal.submit_batch(batch).unwrap();
                wal.sync().map(|_| ())
            } else {
                wal.append_batch(batch).map(|_| ())
            };
            assert!(
                result.is_err(),
                "{policy:?}: the failed sync was reported as success"
            );
            assert_eq!(
                wal.durable_index(),
                LogIndex::new(5),
                "{policy:?}: durable index moved past a failed sync"
            );
            assert!(
                heard.load(std::sync::atomic::Ordering::SeqCst) <= 5,
                "the listener heard of a failed batch"
            );
            // No retry until success: the log refuses writes until reopened.
            assert!(matches!(
                wal.append(b"more".to_vec()),
                Err(WalError::Poisoned { .. })
            ));
            assert!(matches!(wal.sync(), Err(WalError::Poisoned { .. })));
            assert!(matches!(
                wal.truncate_after(LogIndex::new(3)),
                Err(WalError::Poisoned { .. })
            ));
            assert!(wal.poisoned().is_some());
            drop(wal);
            if let Some(mode) = crash {
                disk.crash(mode);
            }
            let (wal, _) = Wal::open(disk.clone(), small_config(policy)).unwrap();
            let got = contents(&wal);
            // All there or all gone.
            assert!(
                got.len() == 5 || got.len() == 9,
                "{policy:?} {crash:?}: {} records",
                got.len()
            );
            assert_eq!(
                got[..5].iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
                (1..=5).map(|i| payload(i, 50)).collect::<Vec<_>>()
            );
            wal.append(b"after reopen".to_vec()).unwrap();
            wal.sync().unwrap();
        }
    }
}

#[test]
fn no_space_and_write_errors_poison_short_writes_do_not() {
    // Short writes are completed by the log.
    let disk = FaultyStorage::new(11);
    let (wal, _) = Wal::open(disk.clone(), small_config(SyncPolicy::Always)).unwrap();
    for i in 1..=30u64 {
        disk.inject(Fault::ShortWrite);
        wal.append(payload(i, 200)).unwrap();
    }
    drop(wal);
    disk.crash(CrashMode::DropUnsynced);
    let (wal, _) = Wal::open(disk.clone(), small_config(SyncPolicy::Always)).unwrap();
    assert_eq!(contents(&wal).len(), 30);
    // A full disk: the append fails, nothing is acknowledged, the log is poisoned.
    let used: u64 = disk
        .file_names()
        .iter()
        .map(|n| disk.contents(n).unwrap().len() as u64)
        .sum();
    disk.set_capacity_bytes(Some(used));
    let mut appended = 0;
    let err = loop {
        match wal.append(payload(100 + appended, 200)) {
            Ok(_) => appended += 1,
            Err(e) => break e,
        }
        assert!(appended < 100, "the disk never filled");
    };
    assert!(matches!(err, WalError::Io { .. }), "{err}");
    assert!(
        err.to_string().contains("pre-write") || err.to_string().contains("write"),
        "{err}"
    );
    assert!(matches!(
        wal.append(b"x".to_vec()),
        Err(WalError::Poisoned { .. })
    ));
    drop(wal);
    disk.set_capacity_bytes(None);
    disk.crash(CrashMode::TearLast);
    let (wal, _) = Wal::open(disk.clone(), small_config(SyncPolicy::Always)).unwrap();
    assert_eq!(contents(&wal).len() as u64, 30 + appended);
    // A plain write error too.
    disk.inject(Fault::WriteError);
    assert!(wal.append(b"y".to_vec()).is_err());
    assert!(matches!(
        wal.append(b"z".to_vec()),
        Err(WalError::Poisoned { .. })
    ));
}

/// Records of a torn batch that reached the disk past a gap are cut off, and must never come
/// back: appends after recovery go to a new segment, so a new record that happens to fit
/// the gap exactly cannot make the old ones after it valid again.
#[test]
fn stale_records_past_a_gap_never_come_back() {
    use synod_wal::format::{self, FLAG_BASE, SegmentHeader, encode_record};
    let header = SegmentHeader {
        first: LogIndex::new(1),
        generation: 1,
        created_ms: 0,
        flags: FLAG_BASE,
    };
    let mut bytes = header.encode().to_vec();
    for i in 1..=10u64 {
        // Nothing was durable when these were written: lag = index.
        encode_record(
            &mut bytes,
            LogIndex::new(i),
            format::tag_of(1),
            i as u32,
            &[i as u8; 40],
        );
    }
    // Record 5 never reached the disk; 6 to 10 did (reordered blocks of one unsynced write).
    let at = 48 + 4 * 64;
    bytes[at..at + 64].fill(0);
    bytes.resize(8192, 0);
    let disk = FaultyStorage::new(3);
    disk.put_durable(&format::segment_name(LogIndex::new(1)), &bytes);
    let config = WalConfig::builder()
        .segment_bytes_max(8192)
        .sync_policy(SyncPolicy::Always)
        .build()
        .unwrap();
    let (wal, report) = Wal::open(disk.clone(), config.clone()).unwrap();
    assert_eq!(wal.last_index(), LogIndex::new(4));
    assert!(report.torn_tail.is_some());
    // A new record 5 of exactly the old one's size.
    assert_eq!(wal.append(vec![0xee; 40]).unwrap(), LogIndex::new(5));
    drop(wal);
    disk.crash(CrashMode::DropUnsynced);
    let (wal, _) = Wal::open(disk, config).unwrap();
    assert_eq!(
        wal.last_index(),
        LogIndex::new(5),
        "stale records 6 to 10 came back"
    );
    assert_eq!(&wal.read(LogIndex::new(5)).unwrap()[..], &[0xee; 40][..]);
}

/// Regression: after a failed fsync, Linux file systems keep the unwritten pages readable
/// but clean, so a reopened log read the failed batch back, and its own sync at open wrote
/// nothing: it reported records durable that a power loss then took. Open now writes the
/// records no durable mark proves synced again before its sync.
#[test]
fn a_reopen_after_a_failed_sync_makes_what_it_reports_durable_really_durable() {
    for policy in [SyncPolicy::Always, SyncPolicy::Manual] {
        let disk = FaultyStorage::new(11);
        let (wal, _) = Wal::open(disk.clone(), small_config(policy)).unwrap();
        for i in 1..=5u64 {
            wal.append(payload(i, 50)).unwrap();
        }
        wal.sync().unwrap();
        disk.inject(Fault::SyncErrorKeepsCache);
        wal.submit_batch((6..=9).map(|i| payload(i, 50))).unwrap();
        assert!(wal.sync().is_err(), "{policy:?}: the failed sync succeeded");
        assert_eq!(wal.durable_index(), LogIndex::new(5));
        drop(wal);
        // A restart without a crash: the failed batch is still in the cache.
        let (wal, _) = Wal::open(disk.clone(), small_config(policy)).unwrap();
        let reported = wal.durable_index();
        let before = contents(&wal);
        drop(wal);
        disk.crash(CrashMode::DropUnsynced);
        let (wal, _) = Wal::open(disk.clone(), small_config(policy)).unwrap();
        let after = contents(&wal);
        let owed: Vec<_> = before
            .iter()
            .filter(|(i, _)| *i <= reported.get())
            .cloned()
            .collect();
        assert_eq!(
            &after[..owed.len().min(after.len())],
            &owed[..],
            "{policy:?}: records reported durable at the reopen were lost"
        );
        assert!(after.len() >= owed.len(), "{policy:?}: lost records");
    }
}

/// Salvaging a log whose cut segment (the record of a truncation) has a damaged header: the
/// segment before it must still end where the cut was made, whatever its bytes hold after
/// that, so the records the truncation removed never come back.
#[test]
fn salvage_never_brings_back_what_a_cut_removed_when_the_cut_segments_header_is_damaged() {
    for byte in [0u64, 9, 13, 17, 25, 33, 41] {
        let disk = FaultyStorage::new(byte);
        let (wal, _) = Wal::open(disk.clone(), config(RecoveryMode::TolerateTornTail)).unwrap();
        wal.submit_batch((1..=20).map(|i| payload(i, 100))).unwrap();
        wal.sync().unwrap();
        wal.truncate_after(LogIndex::new(10)).unwrap();
        wal.submit_batch((11..=12).map(|i| payload(i + 1000, 100)))
            .unwrap();
        wal.sync().unwrap();
        drop(wal);
        let cut = format!("{:020}.wal", 11);
        assert!(disk.file_names().contains(&cut), "{:?}", disk.file_names());
        disk.flip_bit(&cut, byte, 3).unwrap();
        let (wal, report) = Wal::open(disk.clone(), config(RecoveryMode::SkipAndReport)).unwrap();
        assert!(report.corruption.is_some(), "byte {byte}: {report}");
        let got = contents(&wal);
        let expected: Vec<(u64, Vec<u8>)> = (1..=10)
            .map(|i| (i, payload(i, 100)))
            .chain((11..=12).map(|i| (i, payload(i + 1000, 100))))
            .collect();
        assert!(
            expected.starts_with(&got),
            "byte {byte}: salvage returned records a cut removed: {:?}",
            got.iter().map(|(i, _)| *i).collect::<Vec<_>>()
        );
    }
}

/// A log large enough that recovery scans its segments on several threads: damage in two
/// closed segments is reported where the first one is, as a scan in order finds it, and
/// salvage keeps exactly the records before it.
#[test]
fn a_large_log_scanned_in_parallel_reports_the_first_damage() {
    const SEGMENT: u64 = 4 << 20;
    const RECORD: usize = 32 * 1024;
    let config = |mode| {
        WalConfig::builder()
            .segment_bytes_max(SEGMENT)
            .record_bytes_max(RECORD)
            .spare_segments_max(0)
            .sync_policy(SyncPolicy::Manual)
            .recovery_mode(mode)
            .build()
            .unwrap()
    };
    let frame = synod_wal::format::record_bytes(RECORD) as u64;
    let per_segment = (SEGMENT - 48) / frame;
    let batches = 6 * per_segment / 4 + 1;
    let disk = FaultyStorage::new(11);
    {
        let (wal, _) = Wal::open(disk.clone(), config(RecoveryMode::TolerateTornTail)).unwrap();
        // Six full segments and a few records in a seventh: 24 MiB and more, which is
        // scanned in parallel.
        for batch in 0..batches {
            wal.submit_batch((1..=4).map(|k| payload(batch * 4 + k, RECORD)))
                .unwrap();
            wal.sync().unwrap();
        }
    }
    let segments: Vec<String> = disk
        .file_names()
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .collect();
    assert_eq!(segments.len(), 7, "{segments:?}");
    let clean = synod_wal::check_storage(&disk).unwrap();
    assert!(clean.is_ok(), "{clean}");
    assert_eq!(clean.records, 4 * batches);
    // Damage the third record of the third segment and the first of the fifth.
    let (third, fifth) = (&segments[2], &segments[4]);
    disk.flip_bit(third, 48 + 2 * frame + 100, 1).unwrap();
    disk.flip_bit(fifth, 48 + 200, 4).unwrap();
    let first_bad = 2 * per_segment + 3;
    for _ in 0..3 {
        match Wal::open(disk.clone(), config(RecoveryMode::TolerateTornTail)) {
            Err(WalError::Corrupt(c)) => {
                assert_eq!(&c.segment, third, "{c}");
                assert_eq!(c.offset, 48 + 2 * frame, "{c}");
                assert_eq!(c.index, Some(LogIndex::new(first_bad)), "{c}");
            }
            other => panic!("expected the damage in {third}, got {other:?}"),
        }
        let report = synod_wal::check_storage(&disk).unwrap();
        assert_eq!(report.records, first_bad - 1, "{report}");
        assert_eq!(report.unchecked, segments[3..].to_vec(), "{report}");
    }
    let (wal, recovery) = Wal::open(disk.clone(), config(RecoveryMode::SkipAndReport)).unwrap();
    assert_eq!(wal.last_index(), LogIndex::new(first_bad - 1));
    assert_eq!(recovery.corruption.map(|c| c.segment), Some(third.clone()));
    let kept = contents(&wal);
    assert_eq!(kept.len() as u64, first_bad - 1);
    assert!(
        kept.iter().all(|(i, bytes)| *bytes == payload(*i, RECORD)),
        "every record before the damage reads back whole"
    );
}
