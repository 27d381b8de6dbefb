//! Cuts stay made: a truncation interrupted by a crash never brings back records that an
//! earlier truncation removed, at any storage operation and under every crash mode.

use synod_wal::testing::{CrashMode, FaultyStorage};
use synod_wal::{LogIndex, RecoveryMode, SyncPolicy, Wal, WalConfig};

use crate::util::contents;

fn record(round: &str, index: u64) -> Vec<u8> {
    format!("{round} {index}: {}", "x".repeat(90)).into_bytes()
}

/// Storage operations the second truncation makes, at most (it makes fewer than 20).
const HALT_OPS_MAX: u64 = 40;

#[test]
fn an_interrupted_truncation_never_brings_back_what_an_earlier_cut_removed() {
    interrupted_truncations(RecoveryMode::TolerateTornTail);
}

/// The salvaging recovery, which opens whatever valid prefix there is, must not take
/// records a cut removed for part of it.
#[test]
fn an_interrupted_truncation_never_brings_back_what_an_earlier_cut_removed_when_salvaging() {
    interrupted_truncations(RecoveryMode::SkipAndReport);
}

fn config(recovery: RecoveryMode) -> WalConfig {
    WalConfig::builder()
        .segment_bytes_max(4096)
        .record_bytes_max(1024)
        .sync_policy(SyncPolicy::Manual)
        .recovery_mode(recovery)
        .build()
        .expect("valid config")
}

fn interrupted_truncations(recovery: RecoveryMode) {
    let mut interrupted = 0;
    for mode in CrashMode::ALL {
        for halt in 0..=HALT_OPS_MAX {
            let disk = FaultyStorage::new(halt);
            let (wal, _) = Wal::open(disk.clone(), config(recovery)).expect("open");
            // Records 1..=10 in one segment, then a completed cut after 5: records 6..=10
            // stay in that segment's bytes.
            for i in 1..=10 {
                wal.append(record("first", i)).expect("append");
            }
            wal.sync().expect("sync");
            wal.truncate_after(LogIndex::new(5)).expect("first cut");
            for i in 6..=7 {
                wal.append(record("second", i)).expect("append");
            }
            wal.sync().expect("sync");
            // A second cut, below the first, stopped after `halt` storage operations.
            disk.halt_after(Some(halt));
            if wal.truncate_after(LogIndex::new(3)).is_err() {
                interrupted += 1;
            }
            drop(wal);
            disk.crash(mode);
            let (wal, _) = Wal::open(disk.clone(), config(recovery))
                .unwrap_or_else(|e| panic!("{mode:?}, halt {halt}: open: {e}"));
            let got = contents(&wal);
            // The log before the second cut, or a prefix of it down to the cut.
            let before: Vec<(u64, Vec<u8>)> = (1..=5)
                .map(|i| (i, record("first", i)))
                .chain((6..=7).map(|i| (i, record("second", i))))
                .collect();
            assert!(
                got.len() >= 3 && before.starts_with(&got),
                "{mode:?}, halt {halt}: recovered {:?}",
                got.iter()
                    .map(|(i, p)| format!("{i}={}", String::from_utf8_lossy(&p[..12])))
                    .collect::<Vec<_>>()
            );
        }
    }
    // The halts really fell inside the second truncation.
    assert!(interrupted >= 5 * CrashMode::ALL.len(), "{interrupted}");
}
