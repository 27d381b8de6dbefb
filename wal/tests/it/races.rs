//! Races between maintenance (truncation, purges) and writers, made deterministic by a
//! storage that stops inside a directory sync until the test lets it go.
//!
//! While a truncation or purge does its I/O, the log's lock is released. These tests put
//! another writer in exactly that window and check what the writer is told and what the
//! log holds afterwards.

use std::io;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread;
use std::time::Duration;

use parking_lot::Mutex;
use synod_wal::testing::{FaultyFile, FaultyStorage};
use synod_wal::{LogIndex, Storage, SyncPolicy, Wal, WalConfig, WalError};

use crate::util::payload;

/// The log's side of an armed gate: where to say it was reached, and where to wait.
type Armed = (Sender<()>, Receiver<()>);

/// A storage whose next `sync_dir`, once armed, reports that it was reached and waits for
/// the test to release it.
#[derive(Debug, Clone)]
struct Gated {
    disk: FaultyStorage,
    gate: Arc<Mutex<Option<Armed>>>,
}

/// The test's side of an armed gate.
struct GateHandle {
    reached: Receiver<()>,
    release: Sender<()>,
}

impl Gated {
    fn new(seed: u64) -> Gated {
        Gated {
            disk: FaultyStorage::new(seed),
            gate: Arc::new(Mutex::new(None)),
        }
    }

    fn arm(&self) -> GateHandle {
        let (reached_tx, reached) = channel();
        let (release, release_rx) = channel();
        *self.gate.lock() = Some((reached_tx, release_rx));
        GateHandle { reached, release }
    }
}

impl Storage for Gated {
    type File = FaultyFile;
    fn list(&self) -> io::Result<Vec<String>> {
        self.disk.list()
    }
    fn open(&self, name: &str) -> io::Result<FaultyFile> {
        self.disk.open(name)
    }
    fn create(&self, name: &str) -> io::Result<FaultyFile> {
        self.disk.create(name)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.disk.rename(from, to)
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.disk.remove(name)
    }
    fn sync_dir(&self) -> io::Result<()> {
        let armed = self.gate.lock().take();
        if let Some((reached, release)) = armed {
            reached.send(()).expect("the test waits for the gate");
            release.recv().expect("the test releases the gate");
        }
        self.disk.sync_dir()
    }
}

fn config(policy: SyncPolicy, pending_bytes_max: usize) -> WalConfig {
    WalConfig::builder()
        .segment_bytes_max(4096)
        .record_bytes_max(700)
        .pending_bytes_max(pending_bytes_max)
        .spare_segments_max(0)
        .sync_policy(policy)
        .build()
        .expect("valid config")
}

/// How long the test lets a racing thread run before it releases the gate. The outcome
/// asserted does not depend on it: a shorter wait only makes the race less likely to be
/// exercised (the writer then runs after the maintenance, which is also correct).
const RACE_WINDOW: Duration = Duration::from_millis(200);

/// A bound on waits that only a bug makes long (a hang becomes a failure).
const GATE_WAIT: Duration = Duration::from_secs(60);

/// Regression: a record submitted while a truncation had the lock released got an index
/// from before the truncation, and the truncation then reset the next index under it, so
/// the record was written (and read back) at another index than its writer was told.
#[test]
fn a_submit_during_a_truncation_gets_the_index_after_the_cut() {
    let disk = Gated::new(1);
    let (wal, _) = Wal::open(disk.clone(), config(SyncPolicy::Manual, 64 << 10)).expect("opens");
    for i in 1..=10 {
        wal.append(payload(i, 100)).expect("append");
    }
    wal.sync().expect("sync");
    let gate = disk.arm();
    let truncating = {
        let wal = wal.clone();
        thread::spawn(move || wal.truncate_after(LogIndex::new(5)))
    };
    gate.reached
        .recv_timeout(GATE_WAIT)
        .expect("the truncation reaches the directory sync");
    let (done_tx, done) = channel();
    let writer = {
        let wal = wal.clone();
        thread::spawn(move || {
            let index = wal.submit(b"written during the truncation".to_vec());
            let _ = done_tx.send(());
            index
        })
    };
    let _ = done.recv_timeout(RACE_WINDOW);
    gate.release.send(()).expect("release");
    truncating.join().expect("no panic").expect("truncation");
    let index = writer.join().expect("no panic").expect("submit");
    assert_eq!(index, LogIndex::new(6), "the next index after the cut");
    assert_eq!(wal.next_index(), LogIndex::new(7));
    assert_eq!(
        &wal.read(index).expect("read")[..],
        b"written during the truncation"
    );
    wal.sync().expect("sync");
    drop(wal);
    let (wal, _) = Wal::open(disk, config(SyncPolicy::Manual, 64 << 10)).expect("reopens");
    assert_eq!(wal.last_index(), LogIndex::new(6));
    assert_eq!(
        &wal.read(index).expect("read")[..],
        b"written during the truncation"
    );
}

/// Regression: a waiter on a written but unsynced record that a truncation removed looped
/// forever holding the log's lock (nothing was left to sync, and its index was never
/// reached). It must get an error instead, and the log must stay usable.
#[test]
fn a_waiter_on_a_record_truncated_under_it_gets_an_error() {
    let disk = Gated::new(2);
    // A pending limit of one record makes each submit write the previous one out unsynced.
    let (wal, _) = Wal::open(disk.clone(), config(SyncPolicy::Manual, 700)).expect("opens");
    for i in 1..=5 {
        wal.append(payload(i, 100)).expect("append");
    }
    wal.sync().expect("sync");
    for i in 6..=12 {
        wal.submit(payload(i, 600)).expect("submit");
    }
    assert!(wal.durable_index() < LogIndex::new(11));
    let gate = disk.arm();
    let truncating = {
        let wal = wal.clone();
        thread::spawn(move || wal.truncate_after(LogIndex::new(5)))
    };
    gate.reached
        .recv_timeout(GATE_WAIT)
        .expect("the truncation reaches the directory sync");
    let (done_tx, done) = channel();
    let waiter = {
        let wal = wal.clone();
        thread::spawn(move || {
            let r = wal.wait_durable(LogIndex::new(10));
            let _ = done_tx.send(());
            r
        })
    };
    let _ = done.recv_timeout(RACE_WINDOW);
    gate.release.send(()).expect("release");
    truncating.join().expect("no panic").expect("truncation");
    let r = waiter.join().expect("no panic");
    assert!(matches!(r, Err(WalError::OutOfRange { .. })), "{r:?}");
    assert_eq!(
        wal.append(b"after".to_vec()).expect("append"),
        LogIndex::new(6)
    );
    assert_eq!(wal.sync().expect("sync"), LogIndex::new(6));
}

/// Regression: under group commit, a writer waiting while a purge held the log busy was
/// never synced: the group-commit thread, finding the log busy, slept until the next
/// append woke it, and the purge's end did not.
#[test]
fn group_commit_resumes_after_a_purge_that_held_the_log() {
    let disk = Gated::new(4);
    let cfg = config(
        SyncPolicy::Group {
            batch_delay_us_max: 100,
            batch_bytes_max: 1 << 20,
        },
        64 << 10,
    );
    let (wal, _) = Wal::open(disk.clone(), cfg.clone()).expect("opens");
    for i in 1..=40 {
        wal.append(payload(i, 300)).expect("append");
    }
    assert!(wal.segment_count() > 2);
    let gate = disk.arm();
    let purging = {
        let wal = wal.clone();
        thread::spawn(move || wal.purge_before(LogIndex::new(20)))
    };
    gate.reached
        .recv_timeout(GATE_WAIT)
        .expect("the purge reaches the directory sync");
    let (done_tx, done) = channel();
    let writer = {
        let wal = wal.clone();
        thread::spawn(move || {
            let r = wal.append(b"during the purge".to_vec());
            let _ = done_tx.send(());
            r
        })
    };
    let early = done.recv_timeout(RACE_WINDOW).is_ok();
    gate.release.send(()).expect("release");
    purging.join().expect("no panic").expect("purge");
    // A hang here is the bug; a generous bound turns it into a failure.
    if !early {
        done.recv_timeout(GATE_WAIT)
            .expect("the writer is released by a sync after the purge");
    }
    assert_eq!(
        writer.join().expect("no panic").expect("append"),
        LogIndex::new(41)
    );
    assert_eq!(wal.durable_index(), LogIndex::new(41));
}

/// Regression: the durable listener filtered out every index at or below the highest it had
/// heard, so after a truncation it never heard of the new records that reached those
/// indexes: a pipelining caller waiting for that news stalled.
#[test]
fn the_listener_hears_of_records_that_replace_truncated_ones() {
    let disk = FaultyStorage::new(5);
    let (wal, _) = Wal::open(disk, config(SyncPolicy::Manual, 64 << 10)).expect("opens");
    let heard = Arc::new(Mutex::new(Vec::new()));
    let h = Arc::clone(&heard);
    wal.set_durable_listener(move |i| h.lock().push(i.get()));
    for i in 1..=10 {
        wal.submit(payload(i, 100)).expect("submit");
    }
    wal.sync().expect("sync");
    wal.truncate_after(LogIndex::new(5)).expect("truncate");
    for i in 6..=8 {
        wal.submit(payload(i + 100, 100)).expect("submit");
    }
    wal.sync().expect("sync");
    assert_eq!(*heard.lock(), vec![10, 8]);
}
