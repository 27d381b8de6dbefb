//! Simulated disks: one per node, on `synod-wal`'s fault-injecting storage.
//!
//! A node writes through [`Disk`] (reachable from [`crate::Context::disk`]). Each disk is a
//! `synod_wal::testing::FaultyStorage`: writes land in the "page cache" at once and are
//! readable immediately, but survive a crash only once a sync has made them durable
//! ([`crate::Context::sync`], completed by [`crate::Node::on_synced`]). When the nemesis
//! crashes a node, the simulator drops the node and crashes its storage with a
//! [`CrashMode`] drawn from the run's enabled modes: unsynced writes are dropped, kept in
//! part, torn (at any byte, a 512-byte or a 4 KiB boundary), reordered by 4 KiB block, or
//! corrupted by a flipped bit, and unsynced creations, renames and removals survive only as
//! a prefix. Synced data is never touched: a correct program that checksums its records
//! recovers from every mode.
//!
//! A sync is asynchronous: it covers exactly the writes issued before it was requested, and
//! makes them durable when it completes, after the configured sync delay; then the
//! simulator calls [`crate::Node::on_synced`]. A crash before completion may lose them.
//! Because the storage syncs whole files, writes issued *after* the request are set aside
//! at the completion: the disk keeps, for every write not yet covered by a sync, the bytes
//! it overwrote; at the completion it undoes the later writes, syncs, and redoes them, so
//! that they stay unsynced. (Directory changes are synced whole at the completion.) A sync
//! that fails ([`crate::Action::FailNextSync`]) drops the writes it covered from the page
//! cache and the disk alike: reads and a later crash both find the files without them.
//!
//! [`Disk::storage`] hands out the same disk as a `synod_wal::Storage` ([`DiskStorage`]):
//! its writes go through the same bookkeeping, and its `sync_data` and `sync_dir` are
//! synchronous (durable when they return), as they are to a real process.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::Arc;

use parking_lot::Mutex;
pub use synod_wal::testing::CrashMode;
use synod_wal::testing::{Fault, FaultyFile, FaultyStorage};
use synod_wal::{Storage, StorageFile};

#[cfg(test)]
mod fault_tests;
mod storage;
#[cfg(test)]
mod wal_tests;

pub use storage::{DiskFile, DiskStorage};

/// The disk's own name for a file (an inode), stable across renames and never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct FileId(u64);

/// A write or length change not yet covered by a completed sync, with what it replaced.
#[derive(Debug, Clone)]
struct Logged {
    seq: u64,
    op: LoggedOp,
    /// The file's length before the op.
    old_len: u64,
    /// The bytes the op overwrote or cut off.
    old: Vec<u8>,
}

#[derive(Debug, Clone)]
enum LoggedOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen { len: u64 },
}

/// What a crash did to a disk, for coverage counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CrashOutcome {
    /// There were unsynced operations when the crash came.
    pub(crate) unsynced: bool,
    pub(crate) torn: bool,
    pub(crate) bit_flipped: bool,
    /// The storage's own account of the crash, for the fault log.
    pub(crate) report: synod_wal::testing::CrashReport,
}

/// A node's disk: a flat directory of named files, with a page cache that a crash partly
/// loses. Files are created by their first write.
///
/// Reads see every write, synced or not (as a real page cache does). Operations return
/// `io::Result`: when the disk is full ([`crate::Action::FillDisk`]) a write or length
/// change that would grow the files fail with `io::ErrorKind::StorageFull` and changes
/// nothing.
///
/// [`Disk::storage`] hands out the same disk as a [`synod_wal::Storage`], for code written
/// against real files (a `synod_wal::Wal`, a production log store).
pub struct Disk {
    state: Arc<Mutex<State>>,
}

/// Everything a disk holds, shared by the [`Disk`] and every [`DiskStorage`] handle.
struct State {
    storage: FaultyStorage,
    /// The files this disk has a handle to, by name.
    names: BTreeMap<String, FileId>,
    /// A handle to every file in `names`, dropped at a crash (they stop working then).
    handles: BTreeMap<FileId, FaultyFile>,
    /// A handle to every file unlinked (removed, renamed over or created over) since the
    /// directory was last synced: the storage keeps such a file, since a crash may bring
    /// its name back, and its bytes count against a full disk as the storage counts them.
    unlinked: Vec<FaultyFile>,
    /// Per file, the writes not yet covered by a completed sync, in issue order.
    log: BTreeMap<FileId, Vec<Logged>>,
    /// The id of the next file opened or created.
    next_id: u64,
    /// The sequence number of the next write.
    next_seq: u64,
    /// The capacity set by [`Disk::fill`], if the disk is full.
    capacity_bytes: Option<u64>,
    /// How many of the next syncs fail ([`crate::Action::FailNextSync`]).
    failing_syncs: u32,
    /// Syncs failed so far, as [`crate::Action::FailNextSync`] asked.
    syncs_failed: u64,
    /// Crashes so far: a [`DiskFile`] opened before the last one has stopped working.
    crashes: u64,
}

impl fmt::Debug for Disk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("Disk")
            .field("files", &state.storage.file_names())
            .field("unsynced_ops", &state.storage.unsynced_ops())
            .finish_non_exhaustive()
    }
}

impl Disk {
    /// An empty disk whose crash behaviour is drawn from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Disk {
            state: Arc::new(Mutex::new(State {
                storage: FaultyStorage::new(seed),
                names: BTreeMap::new(),
                handles: BTreeMap::new(),
                unlinked: Vec::new(),
                log: BTreeMap::new(),
                next_id: 0,
                next_seq: 0,
                capacity_bytes: None,
                failing_syncs: 0,
                syncs_failed: 0,
                crashes: 0,
            })),
        }
    }

    /// This disk as a [`synod_wal::Storage`]: a handle (cheap to clone, `Send + Sync`) for
    /// code that writes files through `synod-wal`'s storage traits, such as a
    /// `synod_wal::Wal` or a production log store, so that it runs unchanged on the
    /// simulated disk. See [`DiskStorage`] for what its syncs mean.
    #[must_use]
    pub fn storage(&self) -> DiskStorage {
        DiskStorage::new(Arc::clone(&self.state), String::new())
    }

    /// Like [`Disk::storage`], for the files of one directory: the storage's file `name` is
    /// the disk's file `{dir}/{name}`, and it lists only those. For code that keeps two
    /// logs in directories of their own, such as a store with an entry log and a meta log.
    /// [`Disk::storage`] does not list files in directories.
    ///
    /// # Panics
    ///
    /// If `dir` is empty or contains a `/`.
    #[must_use]
    pub fn storage_in(&self, dir: &str) -> DiskStorage {
        assert!(
            !dir.is_empty() && !dir.contains('/'),
            "a directory name, not a path: {dir:?}"
        );
        DiskStorage::new(Arc::clone(&self.state), format!("{dir}/"))
    }

    /// A copy of the current contents of `file` (including unsynced writes), or `None` if
    /// it does not exist. Meant for recovery in [`crate::Node::on_start`]; a node keeps its
    /// working state in memory.
    #[must_use]
    pub fn read(&self, file: &str) -> Option<Vec<u8>> {
        self.state.lock().storage.contents(file)
    }

    /// The length of `file`, or `None` if it does not exist.
    #[must_use]
    pub fn len(&self, file: &str) -> Option<u64> {
        self.read(file).map(|c| c.len() as u64)
    }

    /// Writes `data` at `offset` in `file`, creating it and zero-filling any gap.
    ///
    /// # Errors
    ///
    /// `StorageFull` if the disk is full and the write would grow the file (nothing is
    /// written then), or the storage's error.
    pub fn write(&mut self, file: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock();
        let id = state.open_or_create(file)?;
        state.write(id, None, offset, data)
    }

    /// Appends `data` to `file`.
    ///
    /// # Errors
    ///
    /// As for [`Disk::write`].
    pub fn append(&mut self, file: &str, data: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock();
        let id = state.open_or_create(file)?;
        let len = state.handles[&id].len()?;
        state.write(id, None, len, data)
    }

    /// Sets the length of `file`, cutting it or extending it with zeros.
    ///
    /// # Errors
    ///
    /// As for [`Disk::write`].
    pub fn set_len(&mut self, file: &str, len: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        let id = state.open_or_create(file)?;
        state.set_len(id, None, len)
    }

    /// Renames `from` to `to` atomically, replacing `to`. Durable after the next sync.
    ///
    /// # Errors
    ///
    /// `NotFound` if `from` does not exist, or the storage's error.
    pub fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        self.state.lock().rename(from, to)
    }

    /// Removes `file`. Until a later sync completes, a crash may bring it back.
    ///
    /// # Errors
    ///
    /// `NotFound` if it does not exist, or the storage's error.
    pub fn remove(&mut self, file: &str) -> io::Result<()> {
        self.state.lock().remove(file)
    }

    /// The names of the existing files, sorted.
    #[must_use]
    pub fn file_names(&self) -> Vec<String> {
        self.state.lock().storage.file_names()
    }

    /// The number of writes and directory changes not yet durable.
    #[must_use]
    pub fn unsynced_ops(&self) -> usize {
        self.state.lock().storage.unsynced_ops()
    }

    /// The point a sync requested now covers: every write issued before it.
    pub(crate) fn sync_point(&self) -> u64 {
        self.state.lock().next_seq
    }

    /// Makes every write issued before `point` durable, and the directory; writes issued
    /// since stay unsynced.
    pub(crate) fn sync_through(&mut self, point: u64) -> io::Result<()> {
        self.state.lock().without_limits(|s| s.sync_through(point))
    }

    /// Makes the next sync of this disk fail, whether it is a [`crate::Context::sync`]
    /// completing or a synchronous sync through [`Disk::storage`].
    pub(crate) fn fail_next_sync(&mut self) {
        self.state.lock().failing_syncs += 1;
    }

    /// Whether the sync completing now must fail, as [`Disk::fail_next_sync`] asked; counts
    /// it as the failed one if so.
    pub(crate) fn take_failed_sync(&mut self) -> bool {
        self.state.lock().take_failed_sync()
    }

    /// Cancels every failure [`Disk::fail_next_sync`] queued that has not happened.
    pub(crate) fn clear_failing_syncs(&mut self) {
        self.state.lock().failing_syncs = 0;
    }

    /// Fills the disk: from now on, a write or length change that would make the files
    /// hold more bytes than they do now fails with `StorageFull`. [`Disk::free`] undoes it.
    ///
    /// The files include those unlinked since the directory was last synced, which the disk
    /// still keeps (a crash may bring them back); the directory sync that lets them go
    /// frees their space.
    pub(crate) fn fill(&mut self) {
        let mut state = self.state.lock();
        state.prune_unlinked();
        let named: u64 = state
            .storage
            .file_names()
            .iter()
            .filter_map(|name| state.storage.contents(name))
            .map(|c| c.len() as u64)
            .sum();
        let unlinked: u64 = state.unlinked.iter().filter_map(|h| h.len().ok()).sum();
        let used = named + unlinked;
        state.capacity_bytes = Some(used);
        state.storage.set_capacity_bytes(state.capacity_bytes);
    }

    /// Removes the limit set by [`Disk::fill`].
    pub(crate) fn free(&mut self) {
        let mut state = self.state.lock();
        state.capacity_bytes = None;
        state.storage.set_capacity_bytes(None);
    }

    /// Whether the disk is full ([`crate::Action::FillDisk`]): writes that would grow its
    /// files fail with `StorageFull`.
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.state.lock().capacity_bytes.is_some()
    }

    /// A failed sync of every write issued before `point`, as Linux may handle a failed
    /// `fsync`: those writes are dropped from the page cache and never reach the disk (the
    /// files read as if they had never been made, and a crash finds them so, in every mode);
    /// writes issued since stay, unsynced, over the older contents (a gap one leaves past
    /// the end of a file reads as zeros). Directory changes are left unsynced.
    pub(crate) fn fail_through(&mut self, point: u64) -> io::Result<()> {
        self.state.lock().without_limits(|s| s.fail_through(point))
    }

    /// After `ops` more mutating operations of the node, every further one fails, as if the
    /// process had died part-way; the next crash lifts it (`None` lifts it now). The
    /// simulator's own bookkeeping of syncs is not counted and never fails.
    pub(crate) fn halt_after(&mut self, ops: Option<u64>) {
        self.state.lock().storage.halt_after(ops);
    }

    /// The node's process exits, as a process does on a disk error it cannot carry on from
    /// (a failed `fsync` of its log): the disk halts now, and the simulator crashes the node
    /// at the end of the event and restarts it after a down time, as a supervisor restarts a
    /// process that exited.
    pub fn exit(&mut self) {
        self.halt_after(Some(0));
    }

    /// How many syncs of this disk have failed so far (asynchronous or synchronous), as
    /// [`crate::Action::FailNextSync`] asked: a store tells a failure the simulator injected
    /// from one of its own by this count.
    #[must_use]
    pub fn syncs_failed(&self) -> u64 {
        self.state.lock().syncs_failed
    }

    /// Whether the disk has halted (a crash part-way through the node's writes that the
    /// nemesis armed ran out of operations, or [`Disk::exit`]): the node's next storage
    /// operation fails, as it would in a process that died at that point. The simulator
    /// crashes a node whose disk halted at the end of the event that made it halt.
    #[must_use]
    pub fn is_halted(&self) -> bool {
        self.state.lock().storage.halt_remaining() == Some(0)
    }

    /// Crashes the disk as the simulator does when it crashes the node: every handle opened
    /// before stops working, and the data no sync covered is treated as `mode` says.
    /// Returns what the crash did. For tests that run code on [`Disk::storage`] outside a
    /// [`crate::Simulation`] (a crash-point sweep of a store, say); a simulation crashes its
    /// nodes' disks itself.
    pub fn crash(&mut self, mode: CrashMode) -> crate::CrashReport {
        self.crash_outcome(mode).report
    }

    /// Crashes the disk: open handles are dropped and unsynced data treated as `mode` says.
    pub(crate) fn crash_outcome(&mut self, mode: CrashMode) -> CrashOutcome {
        let mut state = self.state.lock();
        let before = state.storage.stats();
        let unsynced = state.storage.unsynced_ops() > 0;
        state.names.clear();
        state.handles.clear();
        state.unlinked.clear();
        state.log.clear();
        state.crashes += 1;
        let report = state.storage.crash(mode);
        let after = state.storage.stats();
        CrashOutcome {
            unsynced,
            torn: after.torn_writes > before.torn_writes,
            bit_flipped: after.bits_flipped > before.bits_flipped,
            report,
        }
    }
}

impl State {
    fn new_id(&mut self) -> FileId {
        let id = FileId(self.next_id);
        self.next_id += 1;
        id
    }

    /// The id of the existing file `name`, giving it one (and a handle) on first use.
    fn open(&mut self, name: &str) -> io::Result<FileId> {
        if let Some(&id) = self.names.get(name) {
            return Ok(id);
        }
        let handle = self.storage.open(name)?;
        let id = self.new_id();
        self.names.insert(name.to_owned(), id);
        self.handles.insert(id, handle);
        Ok(id)
    }

    fn open_or_create(&mut self, name: &str) -> io::Result<FileId> {
        match self.open(name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.create(name),
            other => other,
        }
    }

    /// Creates an empty file `name`, replacing any file of that name.
    fn create(&mut self, name: &str) -> io::Result<FileId> {
        self.hold(name)?;
        let handle = self.storage.create(name)?;
        self.forget(name);
        let id = self.new_id();
        self.names.insert(name.to_owned(), id);
        self.handles.insert(id, handle);
        Ok(id)
    }

    /// Gives the existing file `name` a handle, if the disk has none yet, before an
    /// operation unlinks it, so that [`State::forget`] can keep it in `unlinked`.
    fn hold(&mut self, name: &str) -> io::Result<()> {
        match self.open(name) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Drops the name `name` and, with it, the bookkeeping of its file: an unlinked file's
    /// writes no longer matter to a crash once the directory is synced, and every completed
    /// sync syncs the directory. (An open [`DiskFile`] on it keeps working, unlogged, until
    /// that directory sync.) The disk keeps its handle in `unlinked` until then.
    fn forget(&mut self, name: &str) {
        if let Some(id) = self.names.remove(name) {
            if let Some(handle) = self.handles.remove(&id) {
                self.unlinked.push(handle);
            }
            self.log.remove(&id);
        }
    }

    /// Lets go of the handles to unlinked files that the storage no longer keeps (a
    /// directory sync made their unlinking durable).
    fn prune_unlinked(&mut self) {
        self.unlinked.retain(|h| h.len().is_ok());
    }

    /// Writes through the disk's bookkeeping: `handle` if given (a [`DiskFile`]'s own),
    /// else the disk's handle to `id`. A file the disk no longer names is written as is.
    fn write(
        &mut self,
        id: FileId,
        handle: Option<&FaultyFile>,
        offset: u64,
        data: &[u8],
    ) -> io::Result<()> {
        let Some(handle) = handle.or_else(|| self.handles.get(&id)) else {
            return Err(io::ErrorKind::NotFound.into());
        };
        let old_len = handle.len()?;
        let old = read_range(
            handle,
            offset,
            offset.saturating_add(data.len() as u64).min(old_len),
        )?;
        write_all(handle, offset, data)?;
        self.record(
            id,
            LoggedOp::Write {
                offset,
                data: data.to_vec(),
            },
            old_len,
            old,
        );
        Ok(())
    }

    /// Sets a file's length through the disk's bookkeeping, as [`State::write`] writes.
    fn set_len(&mut self, id: FileId, handle: Option<&FaultyFile>, len: u64) -> io::Result<()> {
        let Some(handle) = handle.or_else(|| self.handles.get(&id)) else {
            return Err(io::ErrorKind::NotFound.into());
        };
        let old_len = handle.len()?;
        let old = read_range(handle, len, old_len)?;
        handle.set_len(len)?;
        self.record(id, LoggedOp::SetLen { len }, old_len, old);
        Ok(())
    }

    fn record(&mut self, id: FileId, op: LoggedOp, old_len: u64, old: Vec<u8>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if !self.handles.contains_key(&id) {
            return; // unlinked: nothing to set aside at a sync
        }
        self.log.entry(id).or_default().push(Logged {
            seq,
            op,
            old_len,
            old,
        });
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        self.hold(to)?;
        self.storage.rename(from, to)?;
        let moved = self.names.remove(from);
        self.forget(to);
        if let Some(id) = moved {
            self.names.insert(to.to_owned(), id);
        }
        Ok(())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.hold(name)?;
        self.storage.remove(name)?;
        self.forget(name);
        Ok(())
    }

    fn take_failed_sync(&mut self) -> bool {
        if self.failing_syncs == 0 {
            return false;
        }
        self.syncs_failed += 1;
        self.failing_syncs -= 1;
        true
    }

    /// Runs `f` with the capacity limit lifted: the undo and redo steps of a sync are the
    /// simulator's bookkeeping, not the node's writes, and must not fail for space.
    fn without_capacity<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        self.storage.set_capacity_bytes(None);
        let out = f(self);
        self.storage.set_capacity_bytes(self.capacity_bytes);
        out
    }

    /// As [`State::without_capacity`], and without counting towards a halt: the
    /// simulator's sync bookkeeping is not an operation of the node.
    fn without_limits<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        let halt = self.storage.halt_remaining();
        self.storage.halt_after(None);
        let out = self.without_capacity(f);
        self.storage.halt_after(halt);
        out
    }

    fn sync_through(&mut self, point: u64) -> io::Result<()> {
        let ids: Vec<FileId> = self.log.keys().copied().collect();
        for id in ids {
            let handle = &self.handles[&id];
            let ops = self.log.get_mut(&id).expect("listed above");
            let covered = ops.iter().take_while(|o| o.seq < point).count();
            if covered == 0 {
                continue;
            }
            let late = ops.split_off(covered);
            // Set the later writes aside, sync, and put them back: they stay unsynced.
            for o in late.iter().rev() {
                undo(handle, o)?;
            }
            handle.sync_data()?;
            for o in &late {
                redo(handle, &o.op)?;
            }
            *ops = late;
            if ops.is_empty() {
                self.log.remove(&id);
            }
        }
        self.storage.sync_dir()?;
        self.prune_unlinked();
        Ok(())
    }

    fn fail_through(&mut self, point: u64) -> io::Result<()> {
        let ids: Vec<FileId> = self.log.keys().copied().collect();
        for id in ids {
            let handle = &self.handles[&id];
            let ops = self.log.get_mut(&id).expect("listed above");
            let covered = ops.iter().take_while(|o| o.seq < point).count();
            if covered == 0 {
                continue;
            }
            let mut late = ops.split_off(covered);
            for o in late.iter().rev().chain(ops.iter().rev()) {
                undo(handle, o)?;
            }
            // The file now reads as it was at its last sync, and so must a crash find it:
            // the kernel dropped the failed pages, so the disk holds nothing of them. Sync
            // this state, or the storage would keep the failed writes, and their undoing,
            // as unsynced operations that a crash may apply in part.
            handle.sync_data()?;
            // Put the later writes back on what is left, noting afresh what each one
            // overwrites, so that a later sync sets them aside correctly.
            for o in &mut late {
                let old_len = handle.len()?;
                let (from, to) = match o.op {
                    LoggedOp::Write { offset, ref data } => (
                        offset,
                        offset.saturating_add(data.len() as u64).min(old_len),
                    ),
                    LoggedOp::SetLen { len } => (len, old_len),
                };
                o.old = read_range(handle, from, to)?;
                o.old_len = old_len;
                redo(handle, &o.op)?;
            }
            *ops = late;
            if ops.is_empty() {
                self.log.remove(&id);
            }
        }
        Ok(())
    }

    /// A synchronous sync of one file (`StorageFile::sync_data` through a [`DiskStorage`]):
    /// every write to it so far is durable when it returns. If a failure is queued, it fails
    /// instead, as [`Disk::fail_through`] fails a sync: the file's unsynced writes are
    /// dropped from the page cache.
    fn sync_file(&mut self, id: FileId, handle: &FaultyFile) -> io::Result<()> {
        if self.take_failed_sync() {
            if let Some(ops) = self.log.remove(&id) {
                self.without_capacity(|_| ops.iter().rev().try_for_each(|o| undo(handle, o)))?;
                // Durably, as in `fail_through`: a crash finds what reads now see.
                handle.sync_data()?;
            } else if !self.handles.contains_key(&id) {
                // An unlinked file, whose writes the disk does not log: the storage's own
                // failed sync drops them from its cache and its unsynced operations alike.
                // (A handle that stopped working fails before the fault fires: clear it.)
                self.storage.inject(Fault::SyncError);
                let dropped = handle.sync_data();
                self.storage.clear_faults();
                debug_assert!(dropped.is_err(), "the injected failure fired");
            }
            return Err(io::Error::other(
                "simulated fsync failure: the file's unsynced writes are lost",
            ));
        }
        handle.sync_data()?;
        self.log.remove(&id);
        Ok(())
    }

    /// A synchronous sync of the directory (`Storage::sync_dir` through a
    /// [`DiskStorage`]); a queued failure fails it, leaving the changes unsynced.
    fn sync_dir(&mut self) -> io::Result<()> {
        if self.take_failed_sync() {
            return Err(io::Error::other(
                "simulated fsync failure of the directory: its changes are not durable",
            ));
        }
        self.storage.sync_dir()?;
        self.prune_unlinked();
        Ok(())
    }
}

fn write_all(file: &FaultyFile, offset: u64, data: &[u8]) -> io::Result<()> {
    let mut done = 0usize;
    while done < data.len() {
        match file.write_at(&data[done..], offset + done as u64)? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => done += n,
        }
    }
    Ok(())
}

/// The bytes of `file` in `[from, to)` (empty if `to <= from`).
fn read_range(file: &FaultyFile, from: u64, to: u64) -> io::Result<Vec<u8>> {
    let len = usize::try_from(to.saturating_sub(from)).unwrap_or(0);
    let mut buf = vec![0u8; len];
    let mut done = 0usize;
    while done < len {
        match file.read_at(&mut buf[done..], from + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    buf.truncate(done);
    Ok(buf)
}

fn undo(file: &FaultyFile, o: &Logged) -> io::Result<()> {
    match o.op {
        LoggedOp::Write { offset, .. } => {
            write_all(file, offset, &o.old)?;
            if file.len()? != o.old_len {
                file.set_len(o.old_len)?;
            }
        }
        LoggedOp::SetLen { len } => {
            file.set_len(o.old_len)?;
            write_all(file, len, &o.old)?;
        }
    }
    Ok(())
}

fn redo(file: &FaultyFile, op: &LoggedOp) -> io::Result<()> {
    match op {
        LoggedOp::Write { offset, data } => write_all(file, *offset, data),
        LoggedOp::SetLen { len } => file.set_len(*len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_with_synced_and_unsynced(seed: u64) -> Disk {
        let mut d = Disk::new(seed);
        d.append("log", b"synced--").expect("append");
        let p = d.sync_point();
        d.sync_through(p).expect("sync");
        d.append("log", b"unsynced1").expect("append");
        d.append("log", b"unsynced2").expect("append");
        d
    }

    #[test]
    fn reads_see_unsynced_writes_and_sync_makes_them_durable() {
        let mut d = disk_with_synced_and_unsynced(1);
        assert_eq!(
            d.read("log").as_deref(),
            Some(&b"synced--unsynced1unsynced2"[..])
        );
        assert_eq!(d.unsynced_ops(), 2);
        let p = d.sync_point();
        d.sync_through(p).expect("sync");
        assert_eq!(d.unsynced_ops(), 0);
        let out = d.crash_outcome(CrashMode::DropUnsynced);
        assert!(!out.unsynced);
        assert_eq!(
            d.read("log").as_deref(),
            Some(&b"synced--unsynced1unsynced2"[..])
        );
        // Handles are reopened after a crash.
        d.append("log", b"!").expect("append after crash");
        assert_eq!(d.len("log"), Some(27));
    }

    #[test]
    fn a_sync_covers_exactly_the_writes_issued_before_it() {
        for mode in CrashMode::ALL {
            let mut d = Disk::new(3);
            d.append("f", b"aaaa").expect("append");
            let p = d.sync_point();
            d.write("f", 1, b"bb").expect("overwrite");
            d.append("f", b"cc").expect("append");
            d.set_len("f", 5).expect("cut");
            d.append("g", b"other").expect("another file");
            assert_eq!(d.read("f").as_deref(), Some(&b"abbac"[..]));
            d.sync_through(p).expect("sync");
            // Reads still see everything; the later writes are still unsynced.
            assert_eq!(d.read("f").as_deref(), Some(&b"abbac"[..]));
            // Three on `f`, one on `g` (whose creation the directory sync made durable).
            assert_eq!(d.unsynced_ops(), 4);
            d.crash_outcome(mode);
            let f = d.read("f").expect("f survives");
            assert!(f.starts_with(b"a") && f.len() <= 6, "{mode:?}: {f:?}");
            if mode == CrashMode::DropUnsynced {
                assert_eq!(f, b"aaaa");
                assert_eq!(d.read("g").as_deref(), Some(&b""[..]));
            }
        }
        // A second sync then covers the rest.
        let mut d = Disk::new(4);
        d.append("f", b"aaaa").expect("append");
        let p1 = d.sync_point();
        d.write("f", 1, b"bb").expect("overwrite");
        let p2 = d.sync_point();
        d.sync_through(p1).expect("sync");
        d.sync_through(p2).expect("sync");
        d.crash_outcome(CrashMode::DropUnsynced);
        assert_eq!(d.read("f").as_deref(), Some(&b"abba"[..]));
    }

    #[test]
    fn every_crash_mode_keeps_synced_data() {
        for seed in 0..100 {
            for mode in CrashMode::ALL {
                let mut d = disk_with_synced_and_unsynced(seed);
                let out = d.crash_outcome(mode);
                assert!(out.unsynced);
                let got = d.read("log").expect("file exists");
                assert!(got.starts_with(b"synced--"), "{mode:?} {seed}: {got:?}");
                assert!(got.len() <= b"synced--unsynced1unsynced2".len());
                assert_eq!(d.unsynced_ops(), 0);
                if mode == CrashMode::DropUnsynced {
                    assert_eq!(got, b"synced--");
                }
            }
        }
    }

    #[test]
    fn tear_and_flip_really_happen() {
        let (mut torn, mut flipped) = (0, 0);
        for seed in 0..100 {
            torn += u32::from(
                disk_with_synced_and_unsynced(seed)
                    .crash_outcome(CrashMode::TearLast)
                    .torn,
            );
            flipped += u32::from(
                disk_with_synced_and_unsynced(seed)
                    .crash_outcome(CrashMode::FlipBit)
                    .bit_flipped,
            );
        }
        assert!(torn > 10 && flipped > 10, "torn {torn} flipped {flipped}");
    }

    #[test]
    fn a_failed_sync_drops_the_writes_it_covered_and_keeps_later_ones() {
        for mode in CrashMode::ALL {
            let mut d = Disk::new(7);
            d.append("f", b"durable-").expect("append");
            let p0 = d.sync_point();
            d.sync_through(p0).expect("sync");
            d.append("f", b"lost").expect("append");
            d.write("f", 0, b"D").expect("overwrite");
            let p = d.sync_point();
            d.write("f", 1, b"U").expect("later overwrite");
            d.append("f", b"late").expect("later append");
            d.fail_through(p).expect("bookkeeping");
            // The covered writes are gone; the later ones stay, over the older contents.
            assert_eq!(d.read("f").as_deref(), Some(&b"dUrable-\0\0\0\0late"[..]));
            // A later sync makes exactly the later writes durable.
            let p2 = d.sync_point();
            d.sync_through(p2).expect("sync");
            d.crash_outcome(mode);
            assert_eq!(
                d.read("f").as_deref(),
                Some(&b"dUrable-\0\0\0\0late"[..]),
                "{mode:?}"
            );
        }
        // Without a later sync, the failed writes are not durable.
        let mut d = Disk::new(8);
        d.append("f", b"aaaa").expect("append");
        let p = d.sync_point();
        d.fail_through(p).expect("bookkeeping");
        assert_eq!(d.read("f").as_deref(), Some(&b""[..]));
        d.crash_outcome(CrashMode::DropUnsynced);
        // (Nor is the file's creation: the directory was not synced either.)
        assert_eq!(d.read("f"), None);
    }

    #[test]
    fn a_full_disk_refuses_growth_but_not_overwrites() {
        let mut d = Disk::new(9);
        d.append("f", b"12345678").expect("append");
        let p = d.sync_point();
        d.fill();
        assert!(d.is_full());
        let err = d.append("f", b"9").expect_err("full");
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(
            d.read("f").as_deref(),
            Some(&b"12345678"[..]),
            "nothing written"
        );
        d.write("f", 0, b"ab").expect("an overwrite needs no space");
        // A later write set aside during a sync does not count against the space.
        d.sync_through(p).expect("sync while full");
        d.set_len("f", 4).expect("shrinking frees space");
        d.append("f", b"xy").expect("room again");
        d.free();
        d.append("f", b"more").expect("freed");
        assert_eq!(d.read("f").as_deref(), Some(&b"ab34xymore"[..]));
    }

    #[test]
    fn unsynced_removal_may_come_back_and_rename_is_atomic() {
        let mut back = 0;
        for seed in 0..50 {
            let mut d = Disk::new(seed);
            d.append("old", b"x").expect("append");
            let p = d.sync_point();
            d.sync_through(p).expect("sync");
            d.remove("old").expect("remove");
            assert_eq!(d.read("old"), None);
            d.crash_outcome(CrashMode::KeepPrefix);
            back += u32::from(d.read("old").is_some());
        }
        assert!(back > 0 && back < 50);
        let mut d = Disk::new(1);
        d.append("tmp", b"new").expect("append");
        d.rename("tmp", "state").expect("rename");
        let p = d.sync_point();
        d.sync_through(p).expect("sync");
        d.crash_outcome(CrashMode::DropUnsynced);
        assert_eq!(d.read("state").as_deref(), Some(&b"new"[..]));
        assert_eq!(d.file_names(), vec!["state".to_owned()]);
    }

    #[test]
    fn writes_through_the_storage_are_set_aside_by_an_earlier_asynchronous_sync() {
        let mut d = Disk::new(11);
        let storage = d.storage();
        let f = storage.create("f").expect("create");
        synod_wal::storage::write_all_at(&f, b"early", 0).expect("write");
        let p = d.sync_point();
        synod_wal::storage::write_all_at(&f, b"-late", 5).expect("write");
        d.append("g", b"named").expect("the named API too");
        d.sync_through(p).expect("sync");
        assert_eq!(d.read("f").as_deref(), Some(&b"early-late"[..]));
        d.crash_outcome(CrashMode::DropUnsynced);
        assert_eq!(d.read("f").as_deref(), Some(&b"early"[..]));
        assert_eq!(d.read("g").as_deref(), Some(&b""[..]));
        // A handle from before the crash stops working.
        let mut buf = [0u8; 1];
        assert!(f.read_at(&mut buf, 0).is_err() && f.write_at(b"x", 0).is_err());
    }

    #[test]
    fn sync_data_and_sync_dir_make_data_durable_at_once() {
        let d = Disk::new(12);
        let storage = d.storage();
        let f = storage.create("snap.tmp").expect("create");
        synod_wal::storage::write_all_at(&f, b"snapshot", 0).expect("write");
        f.sync_data().expect("sync");
        storage.rename("snap.tmp", "snap").expect("rename");
        // Still the same file under its new name, and still logged.
        synod_wal::storage::write_all_at(&f, b"!", 8).expect("write after rename");
        storage.sync_dir().expect("sync dir");
        let mut d = d;
        assert_eq!(d.unsynced_ops(), 1);
        d.crash_outcome(CrashMode::DropUnsynced);
        assert_eq!(d.read("snap").as_deref(), Some(&b"snapshot"[..]));
        assert_eq!(d.file_names(), vec!["snap".to_owned()]);
    }

    #[test]
    fn a_queued_sync_failure_reaches_sync_data_and_sync_dir_as_an_error() {
        let mut d = Disk::new(13);
        let storage = d.storage();
        let f = storage.create("f").expect("create");
        storage.sync_dir().expect("sync dir");
        synod_wal::storage::write_all_at(&f, b"durable", 0).expect("write");
        f.sync_data().expect("sync");
        synod_wal::storage::write_all_at(&f, b"-lost", 7).expect("write");
        d.fail_next_sync();
        f.sync_data().expect_err("the queued failure");
        // The failed sync dropped the file's unsynced writes from the page cache.
        assert_eq!(d.read("f").as_deref(), Some(&b"durable"[..]));
        storage.create("g").expect("create");
        d.fail_next_sync();
        storage.sync_dir().expect_err("the queued failure");
        d.crash_outcome(CrashMode::DropUnsynced);
        assert_eq!(d.read("f").as_deref(), Some(&b"durable"[..]));
        assert_eq!(
            d.read("g"),
            None,
            "a failed directory sync made nothing durable"
        );
        // One failure each: the next syncs succeed.
        assert!(!d.take_failed_sync());
    }

    #[test]
    fn a_full_disk_refuses_growth_through_the_storage() {
        let mut d = Disk::new(14);
        let storage = d.storage();
        let f = storage.create("f").expect("create");
        synod_wal::storage::write_all_at(&f, b"1234", 0).expect("write");
        d.fill();
        let err = f.write_at(b"5", 4).expect_err("full");
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        f.write_at(b"ab", 0).expect("an overwrite needs no space");
        assert_eq!(d.read("f").as_deref(), Some(&b"ab34"[..]));
    }

    #[test]
    fn a_storage_in_a_directory_sees_only_its_own_files() {
        let d = Disk::new(15);
        let (root, a, b) = (d.storage(), d.storage_in("a"), d.storage_in("b"));
        for (storage, name) in [(&root, "top"), (&a, "x"), (&b, "x")] {
            let f = storage.create(name).expect("create");
            synod_wal::storage::write_all_at(&f, name.as_bytes(), 0).expect("write");
        }
        a.rename("x", "y").expect("rename inside a");
        assert_eq!(root.list().expect("list"), vec!["top".to_owned()]);
        assert_eq!(a.list().expect("list"), vec!["y".to_owned()]);
        assert_eq!(b.list().expect("list"), vec!["x".to_owned()]);
        assert_eq!(d.read("a/y").as_deref(), Some(&b"x"[..]));
        b.remove("x").expect("remove");
        assert_eq!(d.file_names(), vec!["a/y".to_owned(), "top".to_owned()]);
    }
}
