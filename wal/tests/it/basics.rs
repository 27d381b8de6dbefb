//! Appends, reads, segments, truncation and purges on real files and the simulated disk.

use std::sync::Arc;

use synod_wal::testing::FaultyStorage;
use synod_wal::{FileStorage, LogIndex, ManualClock, SyncPolicy, Wal, WalConfig, WalError};

use crate::util::{contents, payload, small_config};

fn real(
    dir: &std::path::Path,
    policy: SyncPolicy,
) -> (Wal<FileStorage>, synod_wal::RecoveryReport) {
    let config = WalConfig::builder()
        .segment_bytes_max(64 * 1024)
        .record_bytes_max(4096)
        .sync_policy(policy)
        .build()
        .unwrap();
    Wal::open(FileStorage::new(dir).unwrap(), config).unwrap()
}

#[test]
fn append_read_reopen_on_real_files_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, report) = real(dir.path(), SyncPolicy::Always);
    assert_eq!(report.records, 0);
    assert_eq!(wal.next_index(), LogIndex::new(1));
    for i in 1..=500u64 {
        assert_eq!(wal.append(payload(i, 300)).unwrap(), LogIndex::new(i));
    }
    assert_eq!(wal.durable_index(), LogIndex::new(500));
    assert!(
        wal.segment_count() > 2,
        "300-byte records in 64 KiB segments roll over"
    );
    assert_eq!(
        &wal.read(LogIndex::new(77)).unwrap()[..],
        &payload(77, 300)[..]
    );
    drop(wal);
    let (wal, report) = real(dir.path(), SyncPolicy::Always);
    assert_eq!(report.records, 500);
    assert_eq!(report.torn_tail, None);
    let all: Vec<_> = wal
        .range(LogIndex::new(1), LogIndex::new(501))
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(all.len(), 500);
    for (i, b) in all {
        assert_eq!(&b[..], &payload(i.get(), 300)[..]);
    }
    // Appends continue where the log ended.
    assert_eq!(wal.append(payload(501, 10)).unwrap(), LogIndex::new(501));
    let report = synod_wal::check(dir.path()).unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.records, 501);
    let text = report.to_string();
    assert!(text.contains("records: 501"), "{text}");
    let dump = synod_wal::dump(dir.path(), LogIndex::new(499), 10).unwrap();
    assert_eq!(
        dump.records
            .iter()
            .map(|r| r.index.get())
            .collect::<Vec<_>>(),
        vec![499, 500, 501]
    );
    assert!(dump.to_string().contains("record 500:"), "{dump}");
}

#[test]
fn group_commit_many_writers_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let policy = SyncPolicy::Group {
        batch_delay_us_max: 200,
        batch_bytes_max: 64 * 1024,
    };
    let (wal, _) = real(dir.path(), policy);
    let (tx, heard) = std::sync::mpsc::channel();
    let tx = parking_lot::Mutex::new(tx);
    wal.set_durable_listener(move |i| {
        let _ = tx.lock().send(i.get());
    });
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                for k in 0..50u64 {
                    let i = wal.append(payload(t * 1000 + k, 100)).unwrap();
                    assert!(
                        wal.durable_index() >= i,
                        "append returned before its record was durable"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(wal.last_index(), LogIndex::new(400));
    assert_eq!(wal.durable_index(), LogIndex::new(400));
    // The listener hears of every durable index, in order, up to the last.
    let mut last = 0;
    while last < 400 {
        let i = heard
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the listener hears of index 400");
        assert!(i > last, "durable index went from {last} to {i}");
        last = i;
    }
    // A non-blocking submit becomes durable without anyone waiting on it.
    let i = wal.submit(payload(9, 10)).unwrap();
    wal.wait_durable(i).unwrap();
    assert_eq!(wal.durable_index(), i);
}

#[test]
fn manual_policy_syncs_only_when_asked() {
    let disk = FaultyStorage::new(1);
    let (wal, _) = Wal::open(disk.clone(), small_config(SyncPolicy::Manual)).unwrap();
    let a = wal.append(b"a".to_vec()).unwrap();
    assert_eq!(wal.durable_index(), LogIndex::new(0));
    assert_eq!(
        &wal.read(a).unwrap()[..],
        b"a",
        "a queued record is readable"
    );
    assert_eq!(wal.sync().unwrap(), a);
    let b = wal.submit_batch([b"b".to_vec(), b"c".to_vec()]).unwrap();
    assert_eq!(b, LogIndex::new(3));
    wal.wait_durable(b).unwrap();
    assert_eq!(wal.durable_index(), b);
    assert!(matches!(
        wal.wait_durable(LogIndex::new(9)),
        Err(WalError::OutOfRange { .. })
    ));
}

#[test]
fn flush_writes_queued_records_to_the_storage_without_making_them_durable() {
    use synod_wal::testing::CrashMode;
    for (mode, survives) in [(CrashMode::DropUnsynced, false), (CrashMode::KeepAll, true)] {
        let disk = FaultyStorage::new(2);
        let (wal, _) = Wal::open(disk.clone(), small_config(SyncPolicy::Manual)).unwrap();
        wal.append(b"synced".to_vec()).unwrap();
        wal.sync().unwrap();
        let queued = wal.append(b"flushed".to_vec()).unwrap();
        let unsynced_before = disk.unsynced_ops();
        assert_eq!(wal.flush().unwrap(), queued);
        // The record is in the storage now, unsynced; the log does not call it durable.
        assert!(disk.unsynced_ops() > unsynced_before, "{mode:?}");
        assert_eq!(wal.durable_index(), LogIndex::new(1));
        drop(wal);
        disk.crash(mode);
        let (wal, _) = Wal::open(disk, small_config(SyncPolicy::Manual)).unwrap();
        assert_eq!(
            wal.last_index(),
            LogIndex::new(if survives { 2 } else { 1 })
        );
    }
    // Without the flush, a queued record never reaches the storage: not even a crash that
    // keeps every unsynced write brings it back.
    let disk = FaultyStorage::new(3);
    let (wal, _) = Wal::open(disk.clone(), small_config(SyncPolicy::Manual)).unwrap();
    wal.append(b"queued".to_vec()).unwrap();
    drop(wal);
    disk.crash(CrashMode::KeepAll);
    let (wal, _) = Wal::open(disk, small_config(SyncPolicy::Manual)).unwrap();
    assert_eq!(wal.last_index(), LogIndex::new(0));
}

#[test]
fn truncate_suffix_then_append_replaces_the_tail() {
    let disk = FaultyStorage::new(2);
    let (wal, _) = Wal::open(disk.clone(), small_config(SyncPolicy::Always)).unwrap();
    for i in 1..=100u64 {
        wal.append(payload(i, 50)).unwrap();
    }
    wal.truncate_after(LogIndex::new(60)).unwrap();
    assert_eq!(wal.last_index(), LogIndex::new(60));
    assert!(matches!(
        wal.read(LogIndex::new(61)),
        Err(WalError::OutOfRange { .. })
    ));
    for i in 61..=70u64 {
        wal.append(payload(i + 1000, 50)).unwrap();
    }
    drop(wal);
    let (wal, _) = Wal::open(disk.clone(), small_config(SyncPolicy::Always)).unwrap();
    let got = contents(&wal);
    assert_eq!(got.len(), 70);
    assert_eq!(got[59].1, payload(60, 50));
    assert_eq!(got[60].1, payload(1061, 50));
    // Truncating everything leaves an empty log that continues at the first index.
    wal.truncate_after(LogIndex::new(0)).unwrap();
    assert!(wal.is_empty());
    assert_eq!(wal.append(b"x".to_vec()).unwrap(), LogIndex::new(1));
    drop(wal);
    let (wal, _) = Wal::open(disk, small_config(SyncPolicy::Always)).unwrap();
    assert_eq!(contents(&wal), vec![(1, b"x".to_vec())]);
}

#[test]
fn purge_below_a_snapshot_and_past_the_end() {
    let disk = FaultyStorage::new(3);
    let (wal, _) = Wal::open(disk.clone(), small_config(SyncPolicy::Always)).unwrap();
    for i in 1..=200u64 {
        wal.append(payload(i, 60)).unwrap();
    }
    let segments = wal.segment_count();
    let first = wal.purge_before(LogIndex::new(120)).unwrap();
    assert!(
        first <= LogIndex::new(120) && first > LogIndex::new(1),
        "first {first}"
    );
    assert!(wal.segment_count() < segments);
    assert!(matches!(
        wal.read(LogIndex::new(1)),
        Err(WalError::OutOfRange { .. })
    ));
    assert_eq!(
        &wal.read(LogIndex::new(150)).unwrap()[..],
        &payload(150, 60)[..]
    );
    assert!(
        disk.file_names().iter().any(|n| n.ends_with(".spare")),
        "purged segments are kept as spares"
    );
    drop(wal);
    let (wal, _) = Wal::open(disk.clone(), small_config(SyncPolicy::Always)).unwrap();
    assert_eq!(wal.first_index(), first);
    assert_eq!(wal.last_index(), LogIndex::new(200));
    // Spares are reused for new segments, and old records in them never come back.
    for i in 201..=400u64 {
        wal.append(payload(i, 60)).unwrap();
    }
    // A snapshot past the end: the log empties and continues after it.
    assert_eq!(
        wal.purge_before(LogIndex::new(1000)).unwrap(),
        LogIndex::new(1000)
    );
    assert!(wal.is_empty());
    assert_eq!(wal.append(b"after".to_vec()).unwrap(), LogIndex::new(1000));
    drop(wal);
    let (wal, _) = Wal::open(disk, small_config(SyncPolicy::Always)).unwrap();
    assert_eq!(contents(&wal), vec![(1000, b"after".to_vec())]);
}

#[test]
fn purge_by_retention_uses_the_clock_given() {
    let clock = Arc::new(ManualClock::new(1_000));
    let config = WalConfig::builder()
        .segment_bytes_max(4096)
        .record_bytes_max(1024)
        .clock(clock.clone())
        .build()
        .unwrap();
    let (wal, _) = Wal::open(FaultyStorage::new(4), config).unwrap();
    for i in 1..=300u64 {
        clock.set(1_000 + i * 10);
        wal.append(payload(i, 60)).unwrap();
    }
    let before = wal.first_index();
    // Nothing is older than a day.
    assert_eq!(wal.purge_older_than(4_000, 86_400_000).unwrap(), before);
    // Everything sealed before t=2000 (index ~100) is older than 1 s at t=3000.
    let first = wal.purge_older_than(3_000, 1_000).unwrap();
    assert!(
        first > before && first <= LogIndex::new(101),
        "first {first}"
    );
}

#[test]
fn in_memory_index_costs_at_most_8_bytes_per_record() {
    let disk = FaultyStorage::new(5);
    let config = WalConfig::builder()
        .segment_bytes_max(1 << 20)
        .record_bytes_max(64)
        .sync_policy(SyncPolicy::Manual)
        .build()
        .unwrap();
    let (wal, _) = Wal::open(disk, config).unwrap();
    let records = 100_000u64;
    for chunk in 0..(records / 1000) {
        wal.submit_batch((0..1000).map(|k| payload(chunk * 1000 + k, 8)))
            .unwrap();
        wal.sync().unwrap();
    }
    let bytes = wal.index_bytes();
    let per_record = bytes as f64 / records as f64;
    println!("in-memory index: {bytes} bytes for {records} records = {per_record:.2} bytes/record");
    assert!(per_record <= 8.0, "{per_record} bytes per record");
}

#[test]
fn oversized_records_are_refused_whole() {
    let (wal, _) = Wal::open(FaultyStorage::new(6), small_config(SyncPolicy::Always)).unwrap();
    let err = wal
        .append_batch([vec![1u8; 10], vec![2u8; 5000]])
        .unwrap_err();
    assert!(
        matches!(
            err,
            WalError::RecordTooLarge {
                bytes: 5000,
                max: 1024
            }
        ),
        "{err}"
    );
    assert!(wal.is_empty());
    assert!(WalConfig::builder().segment_bytes_max(100).build().is_err());
    assert!(
        WalConfig::builder()
            .segment_bytes_max(4096)
            .record_bytes_max(8192)
            .build()
            .is_err()
    );
}

#[test]
fn check_and_dump_report_damage_in_real_files() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = real(dir.path(), SyncPolicy::Always);
    for i in 1..=300u64 {
        wal.append(payload(i, 300)).unwrap();
    }
    drop(wal);
    let first = synod_wal::check(dir.path()).unwrap();
    assert!(first.is_ok(), "{first}");
    // Damage a record in the first (closed) segment on disk.
    let name = &first.segments[0].name;
    let path = dir.path().join(name);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[48 + 10 * 328 + 100] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let report = synod_wal::check(dir.path()).unwrap();
    let corruption = report.corruption.clone().expect("damage found");
    assert_eq!(&corruption.segment, name);
    assert_eq!(corruption.offset, 48 + 10 * 328);
    assert_eq!(corruption.index, Some(LogIndex::new(11)));
    assert_eq!(report.records, 10);
    assert!(report.to_string().contains("corruption:"), "{report}");
    let dump = synod_wal::dump(dir.path(), LogIndex::new(1), 100).unwrap();
    assert_eq!(dump.records.len(), 10);
    assert!(dump.corruption.is_some());
    let config = WalConfig::builder()
        .segment_bytes_max(64 * 1024)
        .record_bytes_max(4096)
        .build()
        .unwrap();
    match Wal::open(FileStorage::new(dir.path()).unwrap(), config) {
        Err(WalError::Corrupt(c)) => assert_eq!(c, corruption),
        other => panic!("opened a damaged log: {other:?}"),
    }
    assert!(synod_wal::check(dir.path().join("missing")).is_err());
}

/// Opening a log in a function that returns `WalError` needs no error mapping: the
/// storage's `io::Error` converts, and names what failed.
fn open_with_question_marks(
    dir: &std::path::Path,
) -> Result<(Wal<FileStorage>, synod_wal::RecoveryReport), WalError> {
    let config = WalConfig::builder()
        .sync_policy(SyncPolicy::group())
        .build()?;
    let storage = FileStorage::new(dir)?;
    Wal::open(storage, config)
}

#[test]
fn the_recommended_group_policy_is_a_valid_configuration_and_a_missing_directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open_with_question_marks(dir.path()).unwrap();
    let i = wal.append(payload(1, 100)).unwrap();
    assert!(wal.durable_index() >= i);
    drop(wal);

    // A path under a regular file cannot be a log directory.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let err = open_with_question_marks(&file.join("log")).unwrap_err();
    assert!(matches!(err, WalError::Io { .. }), "{err:?}");
    assert!(err.to_string().starts_with("wal: storage: "), "{err}");
}

/// A log on a fresh faulty disk (`seed`) under group commit that keeps one spare segment:
/// the disk, the configuration and the log.
fn spare_log(
    seed: u64,
    segment_bytes_max: u64,
    record_bytes_max: usize,
    batch_bytes_max: usize,
) -> (FaultyStorage, WalConfig, Wal<FaultyStorage>) {
    let disk = FaultyStorage::new(seed);
    let config = WalConfig::builder()
        .segment_bytes_max(segment_bytes_max)
        .record_bytes_max(record_bytes_max)
        .spare_segments_max(1)
        .sync_policy(SyncPolicy::Group {
            batch_delay_us_max: 100,
            batch_bytes_max,
        })
        .build()
        .unwrap();
    let (wal, _) = Wal::open(disk.clone(), config.clone()).unwrap();
    (disk, config, wal)
}

/// The name of the spare segment on `disk`, if there is one.
fn spare_of(disk: &FaultyStorage) -> Option<String> {
    disk.file_names()
        .into_iter()
        .find(|n| n.ends_with(".spare"))
}

/// Under group commit a thread of its own pre-writes a spare segment, a chunk at a time,
/// while appends go on: the spare comes out whole (zeros, the segment's length), appends
/// made meanwhile are all durable, and the next roll-over takes the spare.
#[test]
fn a_whole_spare_is_prepared_while_appends_go_on() {
    const SEGMENT: u64 = 3 << 20;
    let (disk, config, wal) = spare_log(21, SEGMENT, 64 * 1024, 64 * 1024);
    let spare = || spare_of(&disk);
    // Appends while the spare is being prepared.
    let mut next = 1u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let name = loop {
        wal.append(payload(next, 1000)).unwrap();
        next += 1;
        if let Some(name) = spare() {
            break name;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no spare after {next} appends"
        );
    };
    let bytes = disk.contents(&name).unwrap();
    assert_eq!(bytes.len() as u64, SEGMENT, "{name}");
    assert!(bytes.iter().all(|&b| b == 0), "{name} is all zeros");
    assert!(
        !disk.file_names().iter().any(|n| n.ends_with(".tmp")),
        "nothing left half prepared"
    );
    // Roll over into it: 64 KiB records, more than a segment's worth.
    let before = wal.segment_count();
    let big = |i: u64| payload(i, 60 * 1024);
    let first_big = next;
    while wal.segment_count() == before {
        wal.append(big(next)).unwrap();
        next += 1;
    }
    assert!(
        !disk.file_names().contains(&name),
        "the roll-over took the spare {name}"
    );
    drop(wal);
    let (wal, _) = Wal::open(disk.clone(), config).unwrap();
    assert_eq!(wal.last_index(), LogIndex::new(next - 1));
    for (i, bytes) in contents(&wal) {
        let want = if i < first_big {
            payload(i, 1000)
        } else {
            big(i)
        };
        assert_eq!(bytes, want, "record {i}");
    }
}

/// Issue 20: under steady load the group-commit thread is never idle, and it prepared spare
/// segments only when idle, so each roll-over pre-wrote its new segment inline while every
/// writer waited. The spare is now prepared by a thread of its own: here the group-commit
/// thread is held (in the durable listener) right after a roll-over took the spare made at
/// open, and a new spare appears all the same; the next roll-over takes it. Failed before:
/// no spare appeared while the group-commit thread was held.
#[test]
fn a_spare_is_prepared_while_the_group_commit_thread_is_busy() {
    const SEGMENT: u64 = 64 * 1024;
    let (disk, config, wal) = spare_log(22, SEGMENT, 1024, 1 << 20);
    let spare = || spare_of(&disk);
    let wait = std::time::Duration::from_secs(60);
    let until_spare = || {
        let deadline = std::time::Instant::now() + wait;
        loop {
            if let Some(name) = spare() {
                break name;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no spare prepared within {wait:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    };
    let first_spare = until_spare();
    // The listener holds the group-commit thread once the first roll-over's batch is
    // durable, until the test lets it go.
    let (held_tx, held) = std::sync::mpsc::channel::<()>();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let hold = parking_lot::Mutex::new(Some((held_tx, go_rx)));
    wal.set_durable_listener(move |_| {
        if let Some((held_tx, go_rx)) = hold.lock().take() {
            held_tx.send(()).expect("the test listens");
            go_rx.recv().expect("the test lets the listener go");
        }
    });
    // 100 records of 1000 bytes (a segment holds 63): one batch rolls over once, and 40
    // more once again.
    let batch = |from: u64, n: u64| (from..from + n).map(|i| payload(i, 1000));
    wal.submit_batch(batch(1, 100)).unwrap();
    held.recv_timeout(wait).expect("the listener holds");
    assert_eq!(wal.segment_count(), 2, "one roll-over");
    assert!(
        !disk.file_names().contains(&first_spare),
        "the roll-over took the spare made at open"
    );
    // The group-commit thread is held: another thread prepares the next spare.
    let second_spare = until_spare();
    go.send(()).expect("the listener waits");
    wal.append_batch(batch(101, 40)).unwrap();
    assert_eq!(wal.segment_count(), 3, "a second roll-over");
    assert!(
        !disk.file_names().contains(&second_spare),
        "the second roll-over took the spare prepared meanwhile"
    );
    drop(wal);
    let (wal, _) = Wal::open(disk.clone(), config).unwrap();
    let want: Vec<(u64, Vec<u8>)> = (1..=140).map(|i| (i, payload(i, 1000))).collect();
    assert_eq!(contents(&wal), want);
}
