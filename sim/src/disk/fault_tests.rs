//! The disk's failure paths against what a real disk does: failed syncs (asynchronous and
//! synchronous) checked by model, with a crash after them; a full disk that still keeps
//! unlinked files; handles to unlinked files.

use std::collections::VecDeque;

use synod_node::Rng;
use synod_wal::{Storage, StorageFile};

use super::*;

fn apply(buf: &mut Vec<u8>, op: &LoggedOp) {
    match op {
        LoggedOp::Write { offset, data } => {
            let end = *offset as usize + data.len();
            if buf.len() < end {
                buf.resize(end, 0);
            }
            buf[*offset as usize..end].copy_from_slice(data);
        }
        LoggedOp::SetLen { len } => buf.resize(*len as usize, 0),
    }
}

fn contents<'a>(ops: impl IntoIterator<Item = &'a (u64, LoggedOp)>) -> Vec<u8> {
    let mut buf = Vec::new();
    for (_, op) in ops {
        apply(&mut buf, op);
    }
    buf
}

/// Writes through both interfaces, asynchronous syncs that complete or fail in the order
/// they were requested, and synchronous `sync_data` calls that succeed or fail, against a
/// model: per file, the operations that stand, and how many of them are durable. A failed
/// sync takes the operations it covered that were not yet durable out of the model. Reads
/// must show every operation that stands; a crash must find the durable ones and then a
/// prefix of the others (none, some or all, as the mode says), and never an operation a
/// failed sync took out.
#[test]
fn failed_and_completed_syncs_match_a_model_through_a_crash() {
    let names = ["a", "b"];
    let (mut failures, mut crashes_after_failure) = (0u32, 0u32);
    for seed in 0..2_000u64 {
        let mut rng = Rng::new(seed);
        let mut d = Disk::new(seed);
        let storage = d.storage();
        let files: Vec<DiskFile> = names.iter().map(|n| storage.create(n).unwrap()).collect();
        storage.sync_dir().unwrap();
        // Per file: every operation that stands, in issue order with its sequence number,
        // and how many of them (a prefix) are durable.
        let mut ops: Vec<Vec<(u64, LoggedOp)>> = vec![Vec::new(), Vec::new()];
        let mut durable = [0usize; 2];
        let mut pending: VecDeque<u64> = VecDeque::new();
        let mut failed = false;
        let mut trace = Vec::new();
        for _ in 0..40 {
            let f = rng.below(2) as usize;
            let seq = d.sync_point();
            match rng.below(8) {
                0 | 1 => {
                    let offset = rng.below(24);
                    let data: Vec<u8> = (0..1 + rng.below(8))
                        .map(|_| rng.below(255) as u8 + 1)
                        .collect();
                    if rng.below(2) == 0 {
                        d.write(names[f], offset, &data).unwrap();
                    } else {
                        synod_wal::storage::write_all_at(&files[f], &data, offset).unwrap();
                    }
                    trace.push(format!(
                        "write {} @{offset} {} (seq {seq})",
                        names[f],
                        data.len()
                    ));
                    ops[f].push((seq, LoggedOp::Write { offset, data }));
                }
                2 => {
                    let len = rng.below(30);
                    if rng.below(2) == 0 {
                        d.set_len(names[f], len).unwrap();
                    } else {
                        files[f].set_len(len).unwrap();
                    }
                    trace.push(format!("set_len {} {len} (seq {seq})", names[f]));
                    ops[f].push((seq, LoggedOp::SetLen { len }));
                }
                3 => {
                    let p = d.sync_point();
                    trace.push(format!("request sync at {p}"));
                    pending.push_back(p);
                }
                4 | 5 => {
                    let Some(p) = pending.pop_front() else {
                        continue;
                    };
                    if rng.below(3) == 0 {
                        trace.push(format!("fail sync at {p}"));
                        d.fail_through(p).unwrap();
                        for i in 0..2 {
                            let d = durable[i];
                            let mut kept = ops[i][..d].to_vec();
                            kept.extend(ops[i][d..].iter().filter(|(s, _)| *s >= p).cloned());
                            ops[i] = kept;
                        }
                        failed = true;
                        failures += 1;
                    } else {
                        trace.push(format!("complete sync at {p}"));
                        d.sync_through(p).unwrap();
                        for i in 0..2 {
                            let covered = ops[i].iter().take_while(|(s, _)| *s < p).count();
                            durable[i] = durable[i].max(covered);
                        }
                    }
                }
                6 => {
                    trace.push(format!("sync_data {}", names[f]));
                    files[f].sync_data().unwrap();
                    durable[f] = ops[f].len();
                }
                _ => {
                    trace.push(format!("failed sync_data {}", names[f]));
                    d.fail_next_sync();
                    files[f].sync_data().expect_err("the queued failure");
                    ops[f].truncate(durable[f]);
                    failed = true;
                    failures += 1;
                }
            }
        }
        for i in 0..2 {
            assert_eq!(
                d.read(names[i]),
                Some(contents(&ops[i])),
                "seed {seed}: reads of {}\n{}",
                names[i],
                trace.join("\n")
            );
        }
        drop(files);
        let mode = [
            CrashMode::DropUnsynced,
            CrashMode::KeepPrefix,
            CrashMode::KeepAll,
        ][rng.below(3) as usize];
        crashes_after_failure += u32::from(failed && mode == CrashMode::KeepPrefix);
        d.crash_outcome(mode);
        for i in 0..2 {
            let got = d.read(names[i]).expect("the files were created durably");
            let allowed: Vec<usize> = match mode {
                CrashMode::DropUnsynced => vec![durable[i]],
                CrashMode::KeepAll => vec![ops[i].len()],
                _ => (durable[i]..=ops[i].len()).collect(),
            };
            assert!(
                allowed.iter().any(|&n| got == contents(&ops[i][..n])),
                "seed {seed}: {} after a {} crash reads {got:?}, not the durable \
                 operations and a prefix of the others\n{}",
                names[i],
                mode.name(),
                trace.join("\n")
            );
        }
    }
    assert!(
        failures > 1_000 && crashes_after_failure > 300,
        "{failures} failed syncs, {crashes_after_failure} keep-prefix crashes after one"
    );
}

/// A file `f` holding `durable`, durably, and the storage it was created through.
fn durable_file(d: &Disk) -> (DiskStorage, DiskFile) {
    let storage = d.storage();
    let f = storage.create("f").unwrap();
    synod_wal::storage::write_all_at(&f, b"durable", 0).unwrap();
    f.sync_data().unwrap();
    storage.sync_dir().unwrap();
    (storage, f)
}

/// After a failed sync the file reads as it was at its last sync, and a crash in any mode
/// must find it so, whether or not a sync of everything on the disk followed (as a node
/// rebuilding its state after the failure waits for): the kernel dropped the failed
/// pages, so the disk holds nothing of them.
#[test]
fn a_crash_after_a_failed_sync_never_brings_back_the_failed_writes() {
    for seed in 0..50 {
        for mode in CrashMode::ALL {
            for sync_everything in [false, true] {
                for synchronous in [false, true] {
                    let mut d = Disk::new(seed);
                    let (_, f) = durable_file(&d);
                    d.append("f", b"-lost").unwrap();
                    d.write("f", 0, b"D").unwrap();
                    synod_wal::storage::write_all_at(&f, b"!", 15).unwrap();
                    if synchronous {
                        d.fail_next_sync();
                        f.sync_data().expect_err("the queued failure");
                    } else {
                        let p = d.sync_point();
                        d.fail_through(p).unwrap();
                    }
                    assert_eq!(d.read("f").as_deref(), Some(&b"durable"[..]));
                    if sync_everything {
                        let all = d.sync_point();
                        d.sync_through(all).unwrap();
                    }
                    drop(f);
                    d.crash_outcome(mode);
                    assert_eq!(
                        d.read("f").as_deref(),
                        Some(&b"durable"[..]),
                        "seed {seed}, {} crash, sync of everything {sync_everything}, \
                         synchronous {synchronous}",
                        mode.name()
                    );
                }
            }
        }
    }
}

/// A failed `sync_data` of a file whose name was removed (the disk no longer logs its
/// writes) drops its unsynced writes all the same, and a crash that brings the name back
/// finds the file as it was at its last sync.
#[test]
fn a_failed_sync_of_a_removed_file_drops_its_writes() {
    for seed in 0..50 {
        for mode in CrashMode::ALL {
            let mut d = Disk::new(seed);
            let (storage, f) = durable_file(&d);
            storage.remove("f").unwrap();
            synod_wal::storage::write_all_at(&f, b"-lost", 7).unwrap();
            d.fail_next_sync();
            f.sync_data().expect_err("the queued failure");
            let mut buf = [0u8; 16];
            let n = f.read_at(&mut buf, 0).unwrap();
            assert_eq!(&buf[..n], b"durable", "what the handle reads");
            drop(f);
            d.crash_outcome(mode);
            if let Some(back) = d.read("f") {
                assert_eq!(back, b"durable", "seed {seed}, {} crash", mode.name());
            }
        }
    }
}

/// The storage counts every file it keeps against a full disk, including one whose
/// removal, replacement by a rename or re-creation is not yet durable: `Disk::fill` counts
/// them too, so an overwrite still needs no space, and the space comes back once the
/// directory sync lets the file go.
#[test]
fn a_full_disk_counts_the_unlinked_files_it_still_keeps() {
    for how in ["remove", "rename over", "create over"] {
        for crash_first in [false, true] {
            let mut d = Disk::new(21);
            let storage = d.storage();
            d.append("old", &[7u8; 100]).unwrap();
            d.append("f", b"12345678").unwrap();
            let p = d.sync_point();
            d.sync_through(p).unwrap();
            if crash_first {
                // The disk has no handle to "old" after a crash until something opens it.
                d.crash_outcome(CrashMode::DropUnsynced);
            }
            match how {
                "remove" => d.remove("old").unwrap(),
                "rename over" => d.rename("f", "old").unwrap(),
                _ => drop(storage.create("old").unwrap()),
            }
            let name = if how == "rename over" { "old" } else { "f" };
            d.fill();
            let ctx = format!("{how}, crash first {crash_first}");
            d.write(name, 0, b"ab")
                .unwrap_or_else(|e| panic!("{ctx}: an overwrite needs no space: {e}"));
            let err = d.append(name, b"9").expect_err("full");
            assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{ctx}");
            let p = d.sync_point();
            d.sync_through(p).unwrap();
            d.append(name, &[1u8; 100])
                .unwrap_or_else(|e| panic!("{ctx}: the unlinked file's space is free: {e}"));
            assert_eq!(d.len(name), Some(108), "{ctx}");
        }
    }
}

/// A handle keeps working after its file is renamed, and after its name is removed until
/// the directory sync that makes the removal durable; then every operation fails with the
/// documented `Unsupported`, not with the error of a handle from before a crash. A crash
/// stops it with the crash's error.
#[test]
fn a_handle_to_a_removed_file_works_until_the_removal_is_durable() {
    let mut d = Disk::new(22);
    let storage = d.storage();
    let f = storage.create("f").unwrap();
    synod_wal::storage::write_all_at(&f, b"data", 0).unwrap();
    storage.rename("f", "g").unwrap();
    storage.sync_dir().unwrap();
    synod_wal::storage::write_all_at(&f, b"more", 4).expect("after a rename");
    assert_eq!(d.read("g").as_deref(), Some(&b"datamore"[..]));
    storage.remove("g").unwrap();
    synod_wal::storage::write_all_at(&f, b"!", 8).expect("before the directory sync");
    let mut buf = [0u8; 9];
    assert_eq!(f.read_at(&mut buf, 0).unwrap(), 9);
    storage.sync_dir().unwrap();
    let mut buf = [0u8; 4];
    let errors = [
        f.len().map(drop),
        f.read_at(&mut buf, 0).map(drop),
        f.write_at(b"x", 0).map(drop),
        f.set_len(0),
        f.sync_data(),
    ];
    for e in errors {
        let e = e.expect_err("the disk forgot the file");
        assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{e}");
    }
    // A handle from before a crash fails with the crash's error, whatever became of it.
    let h = storage.create("h").unwrap();
    storage.remove("h").unwrap();
    storage.sync_dir().unwrap();
    d.crash_outcome(CrashMode::KeepAll);
    for stale in [&f, &h] {
        let e = stale.len().expect_err("stopped at the crash");
        assert_ne!(e.kind(), io::ErrorKind::Unsupported, "{e}");
    }
}
