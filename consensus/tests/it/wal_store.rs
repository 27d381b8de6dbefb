//! The WAL-backed log store (feature `wal`): a node's log, hard state and snapshot survive
//! a restart from real files, a snapshot of any size included; a truncated suffix stays
//! truncated; a command longer than the limit is refused before it reaches the log.

use bytes::Bytes;
use synod_consensus::{
    Config, HardState, LogIndex, LogStore, MemLogStore, Membership, Node, NodeId, ProposeError,
    Role, WalLogStore, WalStoreOptions,
};

use process::StoreOps;
use synod_wal::FileStorage;

fn open(dir: &std::path::Path) -> (WalLogStore<FileStorage>, MemLogStore) {
    let membership = Membership::new([NodeId::new(1)], []).unwrap();
    WalLogStore::open(
        FileStorage::new(dir.join("entries")).unwrap(),
        FileStorage::new(dir.join("meta")).unwrap(),
        membership,
    )
    .unwrap()
}

fn drive(node: &mut Node, store: &mut WalLogStore<FileStorage>) -> Vec<LogIndex> {
    let mut applied = Vec::new();
    while node.has_ready() {
        let ready = node.ready();
        if let Some((token, write)) = ready.persist {
            store.apply(&write);
            store.sync().unwrap();
            node.persisted(token);
        }
        applied.extend(ready.committed.iter().map(|e| e.index));
    }
    applied
}

/// Appending entries lays each out in one record of its own length, allocating about once
/// an entry (encoding each into a `Vec` of its own, and a `Bytes` made of it with a shared
/// header, took two: 130 for these 64).
#[test]
fn an_append_allocates_about_once_an_entry() {
    use synod_consensus::{Entry, Payload, RaftWrite, StoreWrite, Term};
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path());
    let batch = |from: u64| {
        let entries = (from..from + 64)
            .map(|i| Entry {
                term: Term::new(1),
                index: LogIndex(i),
                payload: Payload::Command(Bytes::from(vec![7; 59])),
            })
            .collect();
        RaftWrite::from(vec![StoreWrite::Append(entries)])
    };
    // The first batch sets the store's buffers up.
    store.apply(&batch(1));
    let write = batch(65);
    let ((), calls) = crate::alloc::allocations(|| store.apply(&write));
    println!("{calls} allocations to lay out 64 entries");
    assert!(calls <= 64 + 8, "{calls} allocations for 64 entries");
    store.sync().unwrap();
    drop(store);
    let (_, log) = open(dir.path());
    assert_eq!(log.last_index(), LogIndex(128));
}

#[test]
fn a_single_node_recovers_its_log_hard_state_and_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::builder(NodeId::new(1)).build().unwrap();
    let (mut disk, log) = open(dir.path());
    let mut node = Node::new(config.clone(), log);
    for _ in 0..40 {
        node.tick();
        drive(&mut node, &mut disk);
    }
    assert_eq!(node.role(), Role::Leader);
    for i in 0..20 {
        node.propose(Bytes::from(format!("v{i}"))).unwrap();
    }
    drive(&mut node, &mut disk);
    let (term, last) = (node.term(), node.last_index());
    assert_eq!(node.commit_index(), last);
    node.compact(LogIndex(10), Bytes::from_static(b"state at 10"))
        .unwrap();
    drive(&mut node, &mut disk);
    drop((node, disk));

    let (_, store) = open(dir.path());
    assert_eq!(
        store.hard_state(),
        HardState {
            term,
            vote: Some(NodeId::new(1))
        }
    );
    assert_eq!(store.last_index(), last);
    assert_eq!(store.snapshot().meta.index, LogIndex(10));
    assert_eq!(store.snapshot().data, Bytes::from_static(b"state at 10"));
    assert_eq!(store.term(last), Some(term));
    let mut node = Node::new(config, store);
    let ready = node.ready();
    assert_eq!(ready.snapshot.map(|s| s.meta.index), Some(LogIndex(10)));
}

#[test]
fn a_truncated_suffix_stays_truncated_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path());
    let entry = |i: u64, t: u64| synod_consensus::Entry {
        term: synod_consensus::Term::new(t),
        index: LogIndex(i),
        payload: synod_consensus::Payload::Command(Bytes::from(format!("{i}/{t}"))),
    };
    store.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
    store.sync().unwrap();
    store.truncate_after(LogIndex(1));
    store.append(&[entry(2, 2)]);
    store.sync().unwrap();
    drop(store);
    let (_, store) = open(dir.path());
    assert_eq!(store.last_index(), LogIndex(2));
    assert_eq!(store.term(LogIndex(2)), Some(synod_consensus::Term::new(2)));
}

#[test]
fn a_snapshot_many_times_the_record_and_segment_size_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalStoreOptions::default()
        .segment_bytes_max(1 << 20)
        .entry_bytes_max(64 << 10);
    let open_small = || {
        WalLogStore::open_with(
            FileStorage::new(dir.path().join("entries")).unwrap(),
            FileStorage::new(dir.path().join("meta")).unwrap(),
            Membership::new([NodeId::new(1)], []).unwrap(),
            options,
        )
        .unwrap()
    };
    let config = Config::builder(NodeId::new(1))
        .entry_bytes_max(64 << 10)
        .build()
        .unwrap();
    let (mut disk, log) = open_small();
    let mut node = Node::new(config.clone(), log);
    for _ in 0..40 {
        node.tick();
        drive(&mut node, &mut disk);
    }
    assert_eq!(node.role(), Role::Leader);
    // A command at the limit is stored; one byte more is refused before the log.
    node.propose(Bytes::from(vec![7u8; 64 << 10])).unwrap();
    assert_eq!(
        node.propose(Bytes::from(vec![7u8; (64 << 10) + 1])),
        Err(ProposeError::TooLarge {
            bytes: (64 << 10) + 1,
            max: 64 << 10
        })
    );
    for i in 0..20 {
        node.propose(Bytes::from(format!("v{i}"))).unwrap();
    }
    drive(&mut node, &mut disk);
    // 5 MiB of state: five segments, twenty snapshot chunks.
    let state: Vec<u8> = (0..5u32 << 20).map(|i| (i % 251) as u8).collect();
    node.compact(LogIndex(10), Bytes::from(state.clone()))
        .unwrap();
    drive(&mut node, &mut disk);
    let last = node.last_index();
    drop((node, disk));

    let (mut disk, store) = open_small();
    assert_eq!(store.snapshot().meta.index, LogIndex(10));
    assert!(
        store.snapshot().data == state,
        "the snapshot came back different"
    );
    assert_eq!(store.last_index(), last);
    // A second snapshot replaces the first, and hard-state writes after it do not rewrite it.
    let mut node = Node::new(config, store);
    for _ in 0..40 {
        node.tick();
        drive(&mut node, &mut disk);
    }
    assert!(node.applied_index() >= LogIndex(20));
    let smaller = Bytes::from(vec![1u8; 300 << 10]);
    node.compact(LogIndex(20), smaller.clone()).unwrap();
    drive(&mut node, &mut disk);
    drop((node, disk));
    let (_, store) = open_small();
    assert_eq!(store.snapshot().meta.index, LogIndex(20));
    assert_eq!(store.snapshot().data, smaller);
}

/// Two disks (the entry log's and the meta log's) whose mutating operations draw on one
/// shared budget: once it is spent, every further one fails, as if the process had died
/// there. With `synod_wal::testing::FaultyStorage` underneath, a test crashes the store at
/// any single write, sync, creation, rename or removal of either log.
pub mod process {
    use std::io;

    use synod_consensus::{Entry, HardState, LogIndex, LogStore, RaftWrite, Snapshot, StoreWrite};

    /// The writes a node makes, one at a time, on any store: for tests that write to a
    /// store directly rather than through a node.
    pub trait StoreOps: LogStore {
        fn write_one(&mut self, op: StoreWrite) {
            self.apply(&RaftWrite::from(vec![op]));
        }
        fn set_hard_state(&mut self, hard_state: HardState) {
            self.write_one(StoreWrite::HardState(hard_state));
        }
        fn append(&mut self, entries: &[Entry]) {
            self.write_one(StoreWrite::Append(entries.to_vec()));
        }
        fn truncate_after(&mut self, index: LogIndex) {
            self.write_one(StoreWrite::TruncateAfter(index));
        }
        fn compact(&mut self, snapshot: Snapshot) {
            self.write_one(StoreWrite::Compact(snapshot));
        }
        fn install_snapshot(&mut self, snapshot: Snapshot) {
            self.write_one(StoreWrite::Install(snapshot));
        }
    }

    impl<S: LogStore> StoreOps for S {}
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use synod_wal::testing::{FaultyFile, FaultyStorage};
    use synod_wal::{Storage, StorageFile};

    #[derive(Clone, Debug)]
    pub struct Halting {
        pub disk: FaultyStorage,
        left: Arc<AtomicU64>,
    }

    #[derive(Debug)]
    pub struct HaltingFile {
        file: FaultyFile,
        left: Arc<AtomicU64>,
    }

    fn spend(left: &AtomicU64) -> io::Result<()> {
        left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .map(drop)
            .map_err(|_| io::Error::other("the process has died"))
    }

    /// The two disks of one process, sharing `budget` operations (`u64::MAX`: no limit).
    pub fn pair(
        disks: &(FaultyStorage, FaultyStorage),
        budget: u64,
    ) -> (Halting, Halting, Arc<AtomicU64>) {
        let left = Arc::new(AtomicU64::new(budget));
        let halting = |disk: &FaultyStorage| Halting {
            disk: disk.clone(),
            left: Arc::clone(&left),
        };
        (halting(&disks.0), halting(&disks.1), left)
    }

    impl Storage for Halting {
        type File = HaltingFile;
        fn list(&self) -> io::Result<Vec<String>> {
            self.disk.list()
        }
        fn open(&self, name: &str) -> io::Result<HaltingFile> {
            Ok(HaltingFile {
                file: self.disk.open(name)?,
                left: Arc::clone(&self.left),
            })
        }
        fn create(&self, name: &str) -> io::Result<HaltingFile> {
            spend(&self.left)?;
            Ok(HaltingFile {
                file: self.disk.create(name)?,
                left: Arc::clone(&self.left),
            })
        }
        fn rename(&self, from: &str, to: &str) -> io::Result<()> {
            spend(&self.left)?;
            self.disk.rename(from, to)
        }
        fn remove(&self, name: &str) -> io::Result<()> {
            spend(&self.left)?;
            self.disk.remove(name)
        }
        fn sync_dir(&self) -> io::Result<()> {
            spend(&self.left)?;
            self.disk.sync_dir()
        }
    }

    impl StorageFile for HaltingFile {
        fn len(&self) -> io::Result<u64> {
            self.file.len()
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            self.file.read_at(buf, offset)
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
            spend(&self.left)?;
            self.file.write_at(buf, offset)
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            spend(&self.left)?;
            self.file.set_len(len)
        }
        fn sync_data(&self) -> io::Result<()> {
            spend(&self.left)?;
            self.file.sync_data()
        }
    }
}

mod crash {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use bytes::Bytes;
    use synod_consensus::{
        Entry, HardState, LogIndex, MemLogStore, Membership, NodeId, Payload, Snapshot,
        SnapshotMeta, Term, WalLogStore, WalStoreOptions,
    };
    use synod_wal::testing::{CrashMode, FaultyStorage};

    use super::process::{Halting, StoreOps, pair};

    type Disks = (FaultyStorage, FaultyStorage);

    fn open_on(
        disks: &Disks,
        budget: u64,
    ) -> Result<(WalLogStore<Halting>, MemLogStore, Arc<AtomicU64>), synod_consensus::WalStoreError>
    {
        let (entries, meta, left) = pair(disks, budget);
        let options = WalStoreOptions::default()
            .segment_bytes_max(512 << 10)
            .entry_bytes_max(1 << 10);
        let membership = Membership::new([NodeId::new(1)], []).unwrap();
        WalLogStore::open_with(entries, meta, membership, options).map(|(s, log)| (s, log, left))
    }

    fn open(disks: &Disks) -> WalLogStore<Halting> {
        open_on(disks, u64::MAX).expect("the store opens").0
    }

    /// What the store on `disks` recovers when it opens.
    fn recovered(disks: &Disks) -> MemLogStore {
        open_on(disks, u64::MAX).expect("the store opens").1
    }

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index: LogIndex(index),
            term: Term::new(term),
            payload: Payload::Command(Bytes::from(format!("{index}/{term}"))),
        }
    }

    fn snapshot(index: u64, term: u64) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                index: LogIndex(index),
                term: Term::new(term),
                membership: Membership::new([NodeId::new(1)], []).unwrap(),
            },
            data: Bytes::from(format!("state at {index}/{term}").repeat(100)),
        }
    }

    fn read(store: &MemLogStore, index: u64) -> Option<Entry> {
        let mut out = Vec::new();
        store.entries(LogIndex(index), LogIndex(index), u64::MAX, &mut out);
        out.pop()
    }

    /// The entries `first..=last` of the store, all of them, in order.
    fn contents(store: &MemLogStore) -> Vec<Entry> {
        let mut out = Vec::new();
        store.entries(store.first_index(), store.last_index(), u64::MAX, &mut out);
        out
    }

    fn hard_state(term: u64) -> HardState {
        HardState {
            term: Term::new(term),
            vote: Some(NodeId::new(1)),
        }
    }

    /// A store holding entries `1..=last` of term 1, a snapshot at 3 and hard state term 1,
    /// all synced.
    fn durable_store(seed: u64, last: u64) -> (Disks, HardState) {
        let disks = (FaultyStorage::new(seed), FaultyStorage::new(seed ^ 0x5eed));
        let mut store = open(&disks);
        let hard_state = hard_state(1);
        store.set_hard_state(hard_state);
        let entries: Vec<Entry> = (1..=last).map(|i| entry(i, 1)).collect();
        store.append(&entries);
        store.sync().unwrap();
        store.compact(snapshot(3, 1));
        store.sync().unwrap();
        (disks, hard_state)
    }

    fn crash(disks: &Disks, mode: CrashMode) {
        disks.0.crash(mode);
        disks.1.crash(mode);
    }

    /// After reopening, the store can append the entry after its last, sync, and read it
    /// back from another reopening.
    fn appends_after_reopening(disks: &Disks) {
        let (mut store, log, _) = open_on(disks, u64::MAX).expect("the store opens");
        let next = log.last_index().next();
        let new = entry(next.0, 7);
        store.append(std::slice::from_ref(&new));
        store.sync().expect("an append after the reopening syncs");
        drop(store);
        let store = recovered(disks);
        assert_eq!(store.last_index(), next);
        assert_eq!(read(&store, next.0), Some(new));
    }

    /// A driver that syncs on a thread of its own (`WalSyncer`) while the store takes more
    /// writes: every write applied before the sync began is durable after it (entries and
    /// hard state), a write applied after it is not until the next, and a failed sync there
    /// is an error, after which the store refuses to sync.
    #[test]
    fn a_syncer_on_another_thread_makes_durable_what_was_applied_before_it_began() {
        let (disks, _) = durable_store(11, 6);
        let mut store = open(&disks);
        store.set_hard_state(hard_state(2));
        store.append(&[entry(7, 2), entry(8, 2)]);
        store.written().expect("laid out");
        let syncer = store.syncer();
        std::thread::spawn(move || syncer.sync())
            .join()
            .expect("the sync thread")
            .expect("synced");
        // Applied after the sync: not durable.
        store.append(&[entry(9, 2)]);
        drop(store);
        crash(&disks, CrashMode::DropUnsynced);
        let log = recovered(&disks);
        assert_eq!(log.last_index(), LogIndex(8));
        assert_eq!(read(&log, 8), Some(entry(8, 2)));
        assert_eq!(log.hard_state(), hard_state(2));

        let mut store = open(&disks);
        store.append(&[entry(9, 2)]);
        let syncer = store.syncer();
        disks.0.halt_after(Some(0));
        let failed = std::thread::spawn(move || syncer.sync())
            .join()
            .expect("the sync thread");
        assert!(
            failed.is_err(),
            "a failed write and sync reported as synced"
        );
        disks.0.halt_after(None);
        assert!(
            store.sync().is_err(),
            "the store syncs on after a failed sync"
        );
    }

    /// A crash after the meta log holds an installed snapshot but before the entry log was
    /// reset: the entry log ends before the snapshot (a gap) or holds a stale suffix of
    /// another term. Opening discards the entries and the log restarts after the snapshot.
    #[test]
    fn a_crash_between_a_snapshots_meta_and_the_entry_reset_leaves_a_working_store() {
        // (entries before the install, snapshot index): a gap behind 8, a stale suffix past it.
        for (last, at) in [(5, 8), (12, 8)] {
            let (disks, _) = durable_store(1, last);
            let mut store = open(&disks);
            // Only the meta log's operations go through: the entry log's disk refuses every one.
            disks.0.halt_after(Some(0));
            store.install_snapshot(snapshot(at, 2));
            drop(store);
            crash(&disks, CrashMode::DropUnsynced);
            let store = recovered(&disks);
            assert_eq!(store.snapshot(), &snapshot(at, 2), "entries to {last}");
            assert_eq!(store.last_index(), LogIndex(at), "entries to {last}");
            drop(store);
            appends_after_reopening(&disks);
        }
    }

    /// A store of [`durable_store`] (seed `seed`, entries 1 to 6 of term 1) that has since
    /// taken the hard state of term 2 and entry 7 of term 2, with no sync asked for.
    fn term_two_and_its_entry(seed: u64) -> (Disks, WalLogStore<Halting>) {
        let (disks, _) = durable_store(seed, 6);
        let mut store = open(&disks);
        store.set_hard_state(hard_state(2));
        store.append(&[entry(7, 2)]);
        (disks, store)
    }

    /// Review (review20): a node that takes a new term from a leader's append writes the
    /// term (a hard state, to the meta log) before the entries of that term (to the entry
    /// log), and `WalLogStore::sync` (and `WalSyncer::sync`, through `sync_to_end`) makes
    /// the entry log durable first and the meta log second (consensus/src/wal_store.rs:585,
    /// wal_store.rs:750). A crash between the two fdatasyncs (here: the meta log's disk
    /// refuses its sync, and then the machine crashes) keeps the entries of term 2 and the
    /// hard state of term 1, and the node is rebuilt with a term below its last entry's
    /// (`Node::new` takes the hard state's term as it is): the state the early-apply tests
    /// (early_apply.rs) count as wrong for a snapshot, here by the plain order of a sync.
    /// Syncing the meta log first would keep the term at least that of every durable entry
    /// (for `WalSyncer`, whose store takes writes meanwhile, only if the entries it then
    /// syncs stop at the last one applied before the meta log's sync began: a later entry
    /// may be of a term whose hard state that sync did not take).
    #[test]
    fn a_crash_between_the_two_logs_syncs_keeps_no_entry_of_a_term_above_the_hard_states() {
        let (disks, mut store) = term_two_and_its_entry(21);
        // The meta log's disk refuses every sync from now on (before the change, the entry
        // log's sync went through first and the meta log's failed; now the new term's hard
        // state was synced as it was applied, and this sync fails or finds nothing new).
        disks.1.halt_after(Some(0));
        let _ = store.sync();
        drop(store);
        disks.1.halt_after(None);
        crash(&disks, CrashMode::DropUnsynced);
        let log = recovered(&disks);
        let last = log.last_index();
        let last_term = log.term(last).expect("the last entry's term");
        assert!(
            log.hard_state().term >= last_term,
            "restarted in {} with entry {last} of {last_term} durable",
            log.hard_state().term
        );
    }

    /// A hard state of a new term is durable as soon as the store applies it, before the
    /// entries that follow it are written: a `WalSyncer` syncing on another thread while
    /// the store takes more could otherwise sync the meta log before the new term's hard
    /// state reaches it and the entry log after that term's entries do, and a crash then
    /// keeps an entry of a term above the durable hard state's. Here nothing is synced
    /// after the hard state and the entry are applied (before, the crash restarted the
    /// node in term 1).
    #[test]
    fn a_new_terms_hard_state_is_durable_as_soon_as_it_is_applied() {
        let (disks, store) = term_two_and_its_entry(22);
        drop(store);
        crash(&disks, CrashMode::DropUnsynced);
        let log = recovered(&disks);
        assert_eq!(
            log.hard_state().term,
            Term::new(2),
            "the new term is durable"
        );
        assert_eq!(log.last_index(), LogIndex(6), "the entry was never synced");
    }

    /// A compaction whose purge of the entry log a crash cut short keeps every entry after
    /// the snapshot: they follow it (same term at its index).
    #[test]
    fn a_crash_before_a_compactions_purge_keeps_the_entries_after_the_snapshot() {
        let (disks, _) = durable_store(2, 12);
        let mut store = open(&disks);
        disks.0.halt_after(Some(0));
        store.compact(snapshot(8, 1));
        drop(store);
        crash(&disks, CrashMode::DropUnsynced);
        let store = recovered(&disks);
        assert_eq!(store.snapshot().meta.index, LogIndex(8));
        assert_eq!(
            contents(&store),
            (9..=12).map(|i| entry(i, 1)).collect::<Vec<_>>()
        );
    }

    /// A store prepared for a sweep: its disks, the store open on them, and the shared
    /// budget of storage operations its process has left.
    type Prepared = (Disks, WalLogStore<Halting>, Arc<AtomicU64>);

    /// Crashes `act` at each of its storage operations in turn, in every crash mode, on a
    /// store `prepare` made; then the store must open, pass `check` (told whether `act`
    /// had returned with its writes synced), take an append and read it back. Returns the
    /// crash points tried.
    fn sweep(
        prepare: impl Fn(u64) -> Prepared,
        act: impl Fn(&mut WalLogStore<Halting>),
        check: impl Fn(&MemLogStore, bool, &str),
    ) -> u64 {
        // How many operations `act` takes.
        let (_, mut store, left) = prepare(0);
        let before = left.load(Ordering::SeqCst);
        act(&mut store);
        store.sync().expect("no crash, no failure");
        let ops = before - left.load(Ordering::SeqCst);
        assert!(ops >= 2, "{ops} operations");
        let mut points = 0;
        for point in 0..=ops {
            for (m, &mode) in CrashMode::ALL.iter().enumerate() {
                let why = format!("crash at operation {point} of {ops}, {}", mode.name());
                let (disks, mut store, left) = prepare(1 + 10 * point + m as u64);
                left.store(point, Ordering::SeqCst);
                act(&mut store);
                let done = store.sync().is_ok();
                drop(store);
                crash(&disks, mode);
                let store = match open_on(&disks, u64::MAX) {
                    Ok((_, log, _)) => log,
                    Err(e) => panic!("{why}: the store does not open: {e}"),
                };
                check(&store, done, &why);
                drop(store);
                appends_after_reopening(&disks);
                points += 1;
            }
        }
        points
    }

    /// A crash at every storage operation of a snapshot install, in every crash mode: the
    /// store opens, holds either the old state (snapshot at 3, the synced entries) or the
    /// installed snapshot with nothing after it, never loses the hard state, and takes the
    /// next append.
    #[test]
    fn a_crash_at_any_point_of_a_snapshot_install_leaves_a_consistent_store() {
        let mut points = 0;
        // A gap behind the snapshot, and a stale suffix past it.
        for (last, at) in [(5u64, 8u64), (12, 8)] {
            points += sweep(
                |seed| {
                    let (disks, _) = durable_store(seed, last);
                    let (store, _, left) = open_on(&disks, u64::MAX).unwrap();
                    (disks, store, left)
                },
                |store| store.install_snapshot(snapshot(at, 2)),
                |store, done, why| {
                    assert_eq!(store.hard_state(), hard_state(1), "{why}");
                    if store.snapshot().meta.index == LogIndex(at) {
                        assert_eq!(store.snapshot(), &snapshot(at, 2), "{why}");
                        assert_eq!(store.last_index(), LogIndex(at), "{why}");
                    } else {
                        assert!(!done, "{why}: an install that returned was lost");
                        assert_eq!(store.snapshot(), &snapshot(3, 1), "{why}");
                        let old: Vec<Entry> = (4..=last).map(|i| entry(i, 1)).collect();
                        assert_eq!(contents(store), old, "{why}");
                    }
                },
            );
        }
        eprintln!("snapshot install: {points} crash points");
    }

    /// A crash at every storage operation of a compaction (the snapshot's file written and
    /// renamed into place, the meta log compacted, the entries purged, the replaced file
    /// removed): the store holds the old snapshot or the new one, every entry after it, and
    /// the hard state.
    #[test]
    fn a_crash_at_any_point_of_a_compaction_leaves_a_consistent_store() {
        let points = sweep(
            |seed| {
                let (disks, _) = durable_store(seed, 12);
                let (store, _, left) = open_on(&disks, u64::MAX).unwrap();
                (disks, store, left)
            },
            |store| store.compact(snapshot(8, 1)),
            |store, done, why| {
                assert_eq!(store.hard_state(), hard_state(1), "{why}");
                let at = store.snapshot().meta.index.0;
                if at == 8 {
                    assert_eq!(store.snapshot(), &snapshot(8, 1), "{why}");
                } else {
                    assert!(!done, "{why}: a compaction that returned was lost");
                    assert_eq!(store.snapshot(), &snapshot(3, 1), "{why}");
                }
                let kept: Vec<Entry> = (at + 1..=12).map(|i| entry(i, 1)).collect();
                assert_eq!(contents(store), kept, "{why}");
            },
        );
        eprintln!("compaction: {points} crash points");
    }

    /// A crash at every storage operation of the hard-state write that compacts the meta
    /// log, once the log has rolled over to a second segment (so the compaction removes
    /// the first): the store holds the snapshot, its entries, and the hard state
    /// acknowledged before (or the new one).
    #[test]
    fn a_crash_at_any_point_of_a_meta_log_compaction_leaves_a_consistent_store() {
        let segments = |disk: &FaultyStorage| {
            disk.file_names()
                .iter()
                .filter(|n| n.ends_with(".wal"))
                .count()
        };
        let last = std::cell::Cell::new(0);
        let points = sweep(
            |seed| {
                let (disks, _) = durable_store(seed, 12);
                let (mut store, _, left) = open_on(&disks, u64::MAX).unwrap();
                // Every 1,024th hard-state write after opening compacts the meta log: stop
                // just before one, once the log spans two segments.
                let mut term = 1;
                // (Synced now and then, so that the log rolls over between compactions:
                // one that rolled it over would remove the first segment at once.)
                while term % 1024 != 0 || segments(&disks.1) < 2 {
                    term += 1;
                    store.set_hard_state(hard_state(term));
                    if term % 8 == 0 {
                        store.sync().unwrap();
                    }
                }
                store.sync().unwrap();
                last.set(term);
                (disks, store, left)
            },
            |store| store.set_hard_state(hard_state(last.get() + 1)),
            |store, done, why| {
                let term = store.hard_state().term.get();
                // The new hard state may survive unsynced; once synced it must.
                assert!(
                    term == last.get() + 1 || (term == last.get() && !done),
                    "{why}: hard state {:?} after {}",
                    store.hard_state(),
                    last.get()
                );
                assert_eq!(store.hard_state(), hard_state(term), "{why}");
                assert_eq!(store.snapshot(), &snapshot(3, 1), "{why}");
                let kept: Vec<Entry> = (4..=12).map(|i| entry(i, 1)).collect();
                assert_eq!(contents(store), kept, "{why}");
            },
        );
        eprintln!("meta log compaction: {points} crash points");
    }

    /// The meta log's compaction every 1,024 hard-state writes writes the hard state, not
    /// the snapshot again: no synced hard-state write costs more than a few kilobytes,
    /// whatever the state's size.
    #[test]
    fn a_hard_state_write_never_rewrites_the_snapshot() {
        let disks = (FaultyStorage::new(5), FaultyStorage::new(6));
        let mut store = open(&disks);
        store.append(&(1..=4).map(|i| entry(i, 1)).collect::<Vec<_>>());
        store.sync().unwrap();
        let state = Bytes::from(vec![7u8; 2 << 20]);
        store.compact(Snapshot {
            data: state.clone(),
            ..snapshot(4, 1)
        });
        store.sync().unwrap();
        let written = || disks.0.stats().bytes_written + disks.1.stats().bytes_written;
        let mut most = 0;
        for term in 1..=2100 {
            let before = written();
            store.set_hard_state(hard_state(term));
            store.sync().unwrap();
            most = most.max(written() - before);
        }
        assert!(most < 16 << 10, "a hard-state write wrote {most} bytes");
        drop(store);
        let store = recovered(&disks);
        assert_eq!(store.hard_state(), hard_state(2100));
        assert_eq!(store.snapshot().data, state);
    }
}

#[test]
fn a_raft_index_and_a_wal_index_convert_into_each_other_unchanged() {
    let raft = LogIndex::new(42);
    assert_eq!(raft.get(), 42);
    assert_eq!(raft, LogIndex(42));
    let wal: synod_wal::LogIndex = raft.into();
    assert_eq!(wal, synod_wal::LogIndex::new(42));
    assert_eq!(LogIndex::from(wal), raft);
    assert_eq!(
        LogIndex::from(synod_wal::LogIndex::new(u64::MAX)).get(),
        u64::MAX
    );
}
