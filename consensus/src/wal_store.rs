//! A durable [`LogStore`] on `synod-wal` (feature `wal`).
// tidy: driver: writes the Raft log and hard state to disk through synod-wal.
//!
//! Two write-ahead logs, each in its own [`Storage`] (directory):
//!
//! - the **entry log**: record `i` is the Raft entry at index `i` (its `postcard`
//!   encoding), so truncating a conflicting suffix is [`Wal::truncate_after`] and
//!   compaction is [`Wal::purge_before`] (the Low-Water Mark);
//! - the **meta log**: hard-state and snapshot records (`postcard`, format version 1 in
//!   the first byte); on opening, the last of each wins.
//!
//! A snapshot's data is not in the log but in a file of its own beside the meta log,
//! `snapshot-<20 digits>.bin` in its directory (synod-wal leaves names it does not make
//! alone), written as `snapshot-<20 digits>.bin.partial`, synced, renamed into place and
//! the directory synced, all before the record that names it (with its length and CRC-32)
//! is written; so its size is bounded by neither the log's record size nor its segment
//! size. Files no record in force names (left by a crash before the record, or the
//! snapshot before the last) are removed on opening. A snapshot with no data is a record
//! alone.
//!
//! The meta log is compacted (the snapshot's record and the hard state appended, older
//! records purged) whenever a snapshot is taken or installed, and once `META_RECORDS_MAX`
//! (1,024) hard-state records have followed the last compaction. That writes two small
//! records and no snapshot data, so it costs one sync of a few hundred bytes however large
//! the state, and the log holds little more than the records since the last compaction.
//!
//! Meta logs written before snapshots had files of their own hold the data in the log
//! itself, as a header record followed by chunks of 256 KiB; one whose chunks did not all
//! reach the log (a crash while it was written) does not count, and the one before it
//! stays in force. They are still read, and their snapshot moves to a file at the first
//! compaction; earlier versions cannot read a meta log this one has written.
//!
//! The meta log is synced before the entry log changes for a snapshot, so opening
//! reconciles the two: entries at or below the snapshot are skipped, and an entry log that
//! ends before the snapshot, or holds another term at its index, is what a crash left of an
//! install (whose snapshot replaces the whole log) before the entry log was emptied: those
//! entries are discarded and the log restarts after the snapshot.
//!
//! [`WalStoreOptions`] sets the segment size of both logs and the longest entry the entry
//! log accepts (which must be at least the Raft [`Config`](crate::Config)'s
//! `entry_bytes_max`: a command is refused before it reaches the log if it is longer).
//!
//! The store is the driver's side of the node's log: the node keeps its log in memory and
//! hands its changes out as [`RaftWrite`]s; [`LogStore::apply`] lays them out on the two
//! logs and [`WalLogStore::sync`] makes them durable, which is what a persist effect asks
//! for. Both logs use [`SyncPolicy::Manual`], so the entries and hard states of many writes
//! are made durable by one sync. A snapshot in a write is the exception: its file and its
//! record are synced within `apply` (before the entries it replaces are purged), in the
//! driver's thread, never while the node handles an input. So is a hard state of a new
//! term (before the entries of that term are written: the kernel may write an entry's
//! pages back before any sync, and a node must never restart in a term below its last
//! entry's); an election or a new leader's first append pays one more `fdatasync` of the
//! small meta log. The store keeps no copy of the
//! entries: [`WalLogStore::open`] reads them back once, into the [`MemLogStore`] the node is
//! built from.
//!
//! Errors: [`LogStore::apply`] cannot fail, so a failed write is remembered and returned by
//! the next [`WalLogStore::sync`]; the caller must then stop the node and never acknowledge
//! the persistence request (the logs are poisoned and refuse more writes until reopened, as
//! synod-wal documents).

use std::{fmt, io};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use synod_wal::storage::{read_full_at, write_all_at};
use synod_wal::{LogIndex as WalIndex, Storage, StorageFile, SyncPolicy, Wal, WalConfig, WalError};

use crate::membership::Membership;
use crate::storage::{
    HardState, LogStore, MemLogStore, RaftWrite, Snapshot, SnapshotMeta, StoreWrite,
};
use crate::types::{Entry, LogIndex};

const META_VERSION: u8 = 1;
const META_RECORDS_MAX: u64 = 1024;
/// Bytes of snapshot data in one chunk record, in meta logs written before snapshots had
/// files of their own (read, no longer written).
const SNAPSHOT_CHUNK_BYTES: usize = 256 << 10;
/// How a snapshot file's name starts; it ends with its id in 20 digits and `.bin`.
const SNAPSHOT_FILE_PREFIX: &str = "snapshot-";
/// What a snapshot file being written is called until it is complete and synced.
const PARTIAL_SUFFIX: &str = ".partial";
/// Bytes an entry's encoding may add to its command (term, index, kind, length).
const ENTRY_ENCODING_BYTES_MAX: usize = 64;
/// Bytes a meta record's encoding may add to a snapshot chunk or header.
const META_ENCODING_BYTES_MAX: usize = 4096;

// The variants' order is the format: new ones go at the end.
#[derive(Serialize, Deserialize)]
enum MetaRecord {
    HardState(HardState),
    /// A whole snapshot in one record (still read; no longer written).
    Snapshot {
        meta: SnapshotMeta,
        data: Vec<u8>,
    },
    /// The start of a snapshot of `bytes` bytes in `chunks` chunk records that follow.
    SnapshotStart {
        meta: SnapshotMeta,
        bytes: u64,
        chunks: u64,
    },
    /// The next chunk of the snapshot being written.
    SnapshotChunk(Vec<u8>),
    /// A snapshot whose data is in a file of its own.
    SnapshotInFile {
        meta: SnapshotMeta,
        file: SnapshotFile,
    },
}

/// A snapshot's data file: its name's id, length and CRC-32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SnapshotFile {
    id: u64,
    bytes: u64,
    crc: u32,
}

impl SnapshotFile {
    fn name(&self) -> String {
        snapshot_file_name(self.id)
    }
}

fn snapshot_file_name(id: u64) -> String {
    format!("{SNAPSHOT_FILE_PREFIX}{id:020}.bin")
}

fn io_err(op: &'static str, file: &str) -> impl FnOnce(io::Error) -> WalStoreError {
    let file = file.to_owned();
    move |source| WalStoreError::Io { op, file, source }
}

/// Writes `data` to the snapshot file `id`: into a partial file, synced, renamed into
/// place, the directory synced. Durable when it returns.
fn write_snapshot_file<S: Storage>(
    storage: &S,
    id: u64,
    data: &[u8],
) -> Result<SnapshotFile, WalStoreError> {
    let name = snapshot_file_name(id);
    let partial = format!("{name}{PARTIAL_SUFFIX}");
    let file = storage
        .create(&partial)
        .map_err(io_err("create", &partial))?;
    write_all_at(&file, data, 0).map_err(io_err("write", &partial))?;
    file.sync_data().map_err(io_err("sync", &partial))?;
    storage
        .rename(&partial, &name)
        .map_err(io_err("rename", &partial))?;
    storage
        .sync_dir()
        .map_err(io_err("sync the directory of", &name))?;
    Ok(SnapshotFile {
        id,
        bytes: data.len() as u64,
        crc: crc32fast::hash(data),
    })
}

/// Reads the snapshot file `file` names, checking its length and checksum.
fn read_snapshot_file<S: Storage>(storage: &S, file: SnapshotFile) -> Result<Bytes, WalStoreError> {
    let name = file.name();
    let handle = storage.open(&name).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            WalStoreError::Corrupt(format!("snapshot file {name} is missing"))
        } else {
            io_err("open", &name)(e)
        }
    })?;
    let len = handle.len().map_err(io_err("stat", &name))?;
    if len != file.bytes {
        return Err(WalStoreError::Corrupt(format!(
            "snapshot file {name} holds {len} bytes, its record says {}",
            file.bytes
        )));
    }
    // The length is the file's own, so this allocates no more than what is on disk.
    let mut data = vec![
        0;
        usize::try_from(len).map_err(|_| {
            WalStoreError::Corrupt(format!("snapshot file {name} is too long to read"))
        })?
    ];
    let read = read_full_at(&handle, &mut data, 0).map_err(io_err("read", &name))?;
    if read != data.len() || crc32fast::hash(&data) != file.crc {
        return Err(WalStoreError::Corrupt(format!(
            "snapshot file {name} fails its checksum"
        )));
    }
    Ok(Bytes::from(data))
}

/// Removes every snapshot file, complete or partial, except `keep`'s.
fn remove_snapshot_files<S: Storage>(
    storage: &S,
    keep: Option<SnapshotFile>,
) -> Result<(), WalStoreError> {
    let keep = keep.map(|f| f.name());
    for name in storage.list().map_err(io_err("list", ""))? {
        if name.starts_with(SNAPSHOT_FILE_PREFIX) && keep.as_ref() != Some(&name) {
            storage.remove(&name).map_err(io_err("remove", &name))?;
        }
    }
    Ok(())
}

/// How a [`WalLogStore`] lays out its logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalStoreOptions {
    segment_bytes_max: u64,
    entry_bytes_max: u64,
    segment_time_fixed: bool,
}

impl Default for WalStoreOptions {
    fn default() -> Self {
        WalStoreOptions {
            segment_bytes_max: 64 << 20,
            entry_bytes_max: crate::config::ENTRY_BYTES_MAX_DEFAULT,
            segment_time_fixed: false,
        }
    }
}

impl WalStoreOptions {
    /// The size of every segment file of both logs (each is pre-written to this size, so an
    /// empty store takes two segments of disk). Default 64 MiB. It must hold the longest
    /// entry and a snapshot chunk: opening fails with [`WalStoreError::Wal`] otherwise.
    #[must_use]
    pub fn segment_bytes_max(mut self, bytes: u64) -> Self {
        self.segment_bytes_max = bytes;
        self
    }

    /// The longest command the entry log accepts; at least the Raft configuration's
    /// `entry_bytes_max` (a longer entry stops the node). Default 1 MiB, as that.
    #[must_use]
    pub fn entry_bytes_max(mut self, bytes: u64) -> Self {
        self.entry_bytes_max = bytes;
        self
    }

    /// Stamps new segments with time zero instead of the system clock's reading. The store
    /// never purges segments by age, so the stamp only informs someone inspecting the files;
    /// a deterministic simulation turns it off so that the same seed writes the same
    /// bytes. Default off.
    #[must_use]
    pub fn segment_time_fixed(mut self, fixed: bool) -> Self {
        self.segment_time_fixed = fixed;
        self
    }

    fn wal_config(&self, record_bytes_max: usize) -> Result<WalConfig, WalError> {
        let builder = if self.segment_time_fixed {
            WalConfig::builder().clock(std::sync::Arc::new(synod_wal::ManualClock::new(0)))
        } else {
            WalConfig::builder()
        };
        builder
            .sync_policy(SyncPolicy::Manual)
            .first_index(WalIndex::new(1))
            .segment_bytes_max(self.segment_bytes_max)
            .record_bytes_max(record_bytes_max)
            .pending_bytes_max(record_bytes_max.max(4 << 20))
            .build()
    }
}

/// A snapshot being read back from the meta log, chunk by chunk.
struct PartialSnapshot {
    meta: SnapshotMeta,
    bytes: u64,
    chunks: u64,
    data: Vec<u8>,
    seen: u64,
}

/// Why a WAL-backed store could not be opened or synced.
#[derive(Debug)]
#[non_exhaustive]
pub enum WalStoreError {
    /// The write-ahead log failed.
    Wal(WalError),
    /// A record did not decode, the entry log does not line up with the snapshot, or the
    /// snapshot's file is missing or damaged.
    Corrupt(String),
    /// A snapshot file could not be written, read or removed.
    Io {
        /// What the store was doing.
        op: &'static str,
        /// The file, in the meta log's directory.
        file: String,
        /// The underlying error.
        source: io::Error,
    },
}

impl fmt::Display for WalStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalStoreError::Wal(e) => write!(f, "write-ahead log: {e}"),
            WalStoreError::Corrupt(what) => write!(f, "corrupt raft log: {what}"),
            WalStoreError::Io { op, file, source } => write!(f, "{op} {file}: {source}"),
        }
    }
}

impl std::error::Error for WalStoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WalStoreError::Wal(e) => Some(e),
            WalStoreError::Corrupt(_) => None,
            WalStoreError::Io { source, .. } => Some(source),
        }
    }
}

impl From<WalError> for WalStoreError {
    fn from(e: WalError) -> Self {
        WalStoreError::Wal(e)
    }
}

/// A [`LogStore`] backed by two `synod-wal` logs. See the module documentation.
pub struct WalLogStore<S: Storage> {
    /// The hard state last written.
    hard_state: HardState,
    /// The snapshot in force (its data too, which a meta log rewrite may have to write to a
    /// file of its own).
    snapshot: Snapshot,
    entries: Wal<S>,
    meta: Wal<S>,
    /// The file holding the snapshot in force, if its data is in one: not when it has no
    /// data, when it was read from a meta log of the older format, or when it has just
    /// been taken and is not written yet.
    snapshot_file: Option<SnapshotFile>,
    /// The meta log's next index after its last rewrite: hard-state records written since
    /// then are what `META_RECORDS_MAX` bounds (a snapshot's chunks do not count).
    meta_rewritten: u64,
    failed: Option<WalStoreError>,
    /// Where an entry is encoded before it is copied into a record of its exact length:
    /// kept between appends (its capacity up to about twice the longest entry encoded, so at
    /// most about twice `entry_bytes_max`), so that a record costs
    /// one allocation, where a `Vec` of its own for each encoding and the shared header of
    /// the `Bytes` made of it (a `Vec` with room to spare) cost two.
    scratch: Vec<u8>,
}

impl<S: Storage> fmt::Debug for WalLogStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalLogStore")
            .field("hard_state", &self.hard_state)
            .field("snapshot", &self.snapshot.meta)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

fn encode_meta(record: &MetaRecord) -> Bytes {
    let mut out = vec![META_VERSION];
    out.extend(postcard::to_stdvec(record).expect("postcard encodes to a Vec"));
    Bytes::from(out)
}

fn decode_meta(bytes: &[u8]) -> Result<MetaRecord, WalStoreError> {
    match bytes.split_first() {
        Some((&META_VERSION, rest)) => postcard::from_bytes(rest)
            .map_err(|e| WalStoreError::Corrupt(format!("meta record: {e}"))),
        Some((v, _)) => Err(WalStoreError::Corrupt(format!("meta record version {v}"))),
        None => Err(WalStoreError::Corrupt("empty meta record".into())),
    }
}

/// Whether the entry log lines up with the snapshot `snapshot` that the meta log holds:
/// it starts right after the snapshot, or it holds the snapshot's last entry with the
/// snapshot's term (a compaction whose purge had not yet happened, or is partial). It does
/// not if it ends before the snapshot or holds another term there: a snapshot install whose
/// reset of the entry log a crash cut short. Those entries are stale: the snapshot replaces
/// them, and the caller discards them.
///
/// # Errors
///
/// [`WalStoreError::Corrupt`] if the entry log starts past the snapshot (entries between
/// the two are missing) or the entry at the snapshot's index does not decode.
fn reconcile<S: Storage>(entries: &Wal<S>, snapshot: &SnapshotMeta) -> Result<bool, WalStoreError> {
    let (first, next) = (entries.first_index().get(), entries.next_index().get());
    let at = snapshot.index.0;
    if first > at + 1 {
        return Err(WalStoreError::Corrupt(format!(
            "the entry log starts at {first}, past the snapshot at {at}"
        )));
    }
    if first == at + 1 {
        return Ok(true);
    }
    if next <= at {
        return Ok(false);
    }
    let bytes = entries.read(WalIndex::new(at))?;
    let entry: Entry = postcard::from_bytes(&bytes)
        .map_err(|e| WalStoreError::Corrupt(format!("entry {at}: {e}")))?;
    Ok(entry.index == snapshot.index && entry.term == snapshot.term)
}

/// Empties the entry log so that its next entry is `next` (one past a snapshot). Durable
/// when it returns; a crash part-way leaves a log that [`reconcile`] still refuses.
fn reset_entries<S: Storage>(entries: &Wal<S>, next: LogIndex) -> Result<(), WalError> {
    entries.truncate_after(WalIndex::new(entries.first_index().get().saturating_sub(1)))?;
    entries.purge_before(WalIndex::new(next.0))?;
    Ok(())
}

impl<S: Storage> WalLogStore<S> {
    /// Opens (or creates) the store: `entries` and `meta` are the storages of the two
    /// logs; `membership` is the initial configuration, used only if the store is new.
    /// Returns the store and the log it holds (hard state, snapshot and entries), which the
    /// node is built from ([`Node::new`](crate::Node::new)); the store keeps no copy of the
    /// entries.
    ///
    /// # Errors
    ///
    /// [`WalStoreError::Wal`] if a log cannot be opened or read,
    /// [`WalStoreError::Corrupt`] if a record does not decode or the entries do not
    /// follow the snapshot.
    pub fn open(
        entries: S,
        meta: S,
        membership: Membership,
    ) -> Result<(WalLogStore<S>, MemLogStore), WalStoreError> {
        Self::open_with(entries, meta, membership, WalStoreOptions::default())
    }

    /// Like [`open`](Self::open), with the segment size and entry length of `options`.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open); [`WalStoreError::Wal`] also if `options` are out of range
    /// (a segment too small for the longest entry, say).
    pub fn open_with(
        entries: S,
        meta: S,
        membership: Membership,
        options: WalStoreOptions,
    ) -> Result<(WalLogStore<S>, MemLogStore), WalStoreError> {
        let entry_record = usize::try_from(options.entry_bytes_max)
            .unwrap_or(usize::MAX)
            .saturating_add(ENTRY_ENCODING_BYTES_MAX);
        let (entries, _) = Wal::open(entries, options.wal_config(entry_record)?)?;
        let meta_record = SNAPSHOT_CHUNK_BYTES + META_ENCODING_BYTES_MAX;
        let (meta, _) = Wal::open(meta, options.wal_config(meta_record)?)?;
        let mut hard_state = HardState::default();
        let mut snapshot: Option<Snapshot> = None;
        let mut snapshot_file: Option<SnapshotFile> = None;
        let mut partial: Option<PartialSnapshot> = None;
        let valid = |meta: &SnapshotMeta| {
            if meta.membership.is_valid() {
                Ok(())
            } else {
                Err(WalStoreError::Corrupt("snapshot membership".into()))
            }
        };
        for record in meta.range(meta.first_index(), meta.next_index()) {
            let (_, bytes) = record?;
            match decode_meta(&bytes)? {
                MetaRecord::HardState(hs) => {
                    if hs.term > crate::raft::TERM_MAX {
                        return Err(WalStoreError::Corrupt(format!("term {}", hs.term)));
                    }
                    hard_state = hs;
                }
                MetaRecord::Snapshot { meta, data } => {
                    valid(&meta)?;
                    snapshot = Some(Snapshot {
                        meta,
                        data: Bytes::from(data),
                    });
                    snapshot_file = None;
                }
                MetaRecord::SnapshotInFile { meta, file } => {
                    valid(&meta)?;
                    // Its data is read once the last snapshot record is known.
                    snapshot = Some(Snapshot {
                        meta,
                        data: Bytes::new(),
                    });
                    snapshot_file = Some(file);
                    partial = None;
                }
                MetaRecord::SnapshotStart {
                    meta,
                    bytes,
                    chunks,
                } => {
                    valid(&meta)?;
                    // An unfinished snapshot before this one was cut short by a crash.
                    partial = Some(PartialSnapshot {
                        meta,
                        bytes,
                        chunks,
                        data: Vec::new(),
                        seen: 0,
                    });
                }
                MetaRecord::SnapshotChunk(chunk) => {
                    // Purging frees whole segments, so the log may begin with the last
                    // chunks of a snapshot whose start is gone: they count for nothing.
                    let Some(p) = partial.as_mut() else {
                        continue;
                    };
                    if p.seen == p.chunks || (p.data.len() + chunk.len()) as u64 > p.bytes {
                        return Err(WalStoreError::Corrupt(format!(
                            "snapshot at {} has more data than its start announced",
                            p.meta.index
                        )));
                    }
                    p.data.extend_from_slice(&chunk);
                    p.seen += 1;
                }
            }
            if partial
                .as_ref()
                .is_some_and(|p| p.seen == p.chunks && p.data.len() as u64 == p.bytes)
            {
                let p = partial.take().expect("checked above");
                snapshot = Some(Snapshot {
                    meta: p.meta,
                    data: Bytes::from(p.data),
                });
                snapshot_file = None;
            }
        }
        if let (Some(snapshot), Some(file)) = (snapshot.as_mut(), snapshot_file) {
            snapshot.data = read_snapshot_file(meta.storage(), file)?;
        }
        remove_snapshot_files(meta.storage(), snapshot_file)?;
        let mut mem = MemLogStore::new(membership);
        if let Some(snapshot) = snapshot {
            mem.install_snapshot(snapshot);
        }
        mem.set_hard_state(hard_state);
        if !reconcile(&entries, &mem.snapshot().meta)? {
            reset_entries(&entries, mem.first_index())?;
        }
        let from = mem.first_index().0.max(entries.first_index().get());
        for record in entries.range(WalIndex::new(from), entries.next_index()) {
            let (index, bytes) = record?;
            let entry: Entry = postcard::from_bytes(&bytes)
                .map_err(|e| WalStoreError::Corrupt(format!("entry {index}: {e}")))?;
            if entry.index.0 != index.get() || entry.index != mem.last_index().next() {
                return Err(WalStoreError::Corrupt(format!(
                    "entry {} at log position {index}",
                    entry.index
                )));
            }
            mem.append(std::slice::from_ref(&entry));
        }
        mem.sync();
        let meta_rewritten = meta.next_index().get();
        let store = WalLogStore {
            hard_state: mem.hard_state(),
            snapshot: mem.snapshot().clone(),
            entries,
            meta,
            snapshot_file,
            meta_rewritten,
            failed: None,
            scratch: Vec::new(),
        };
        Ok((store, mem))
    }

    /// The hard state last written.
    #[must_use]
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The snapshot in force: the last one written.
    #[must_use]
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Makes every write so far durable. Call it when a persist effect's write has been
    /// applied, then acknowledge its token.
    ///
    /// # Errors
    ///
    /// The first write or sync failure since the store was opened; after one, the node
    /// must be stopped.
    pub fn sync(&mut self) -> Result<(), WalStoreError> {
        self.check_failed()?;
        // The meta log first: a hard state is never behind the entries written after it.
        let _meta_durable = self.meta.sync()?;
        let _entries_durable = self.entries.sync()?;
        Ok(())
    }

    /// The write failure remembered since opening, if any, without syncing: what a driver
    /// that syncs on another thread ([`WalLogStore::syncer`]) checks before it asks for a
    /// sync of the writes applied so far (a failed write must not be acknowledged however
    /// the sync that follows it ends).
    ///
    /// # Errors
    ///
    /// As [`sync`](Self::sync), for the writes.
    pub fn written(&mut self) -> Result<(), WalStoreError> {
        self.check_failed()
    }

    /// A handle that makes the writes applied to this store durable from another thread,
    /// while this store takes more ([`WalSyncer`]).
    #[must_use]
    pub fn syncer(&self) -> WalSyncer<S> {
        WalSyncer {
            entries: self.entries.clone(),
            meta: self.meta.clone(),
        }
    }

    /// Writes every write applied so far to the storage without syncing it, for a driver
    /// whose sync comes by other means: a simulated disk's sync of everything written
    /// before it was asked for (synod-sim's `ProtocolNode` does this). The writes are
    /// durable once that sync completes.
    ///
    /// # Errors
    ///
    /// As [`sync`](Self::sync), for the writes.
    pub fn flush(&mut self) -> Result<(), WalStoreError> {
        self.check_failed()?;
        let _entries_written = self.entries.flush()?;
        let _meta_written = self.meta.flush()?;
        Ok(())
    }

    /// The write failure remembered since opening, if any (reported once as it is, then as
    /// an earlier failure).
    fn check_failed(&mut self) -> Result<(), WalStoreError> {
        if let Some(e) = self.failed.take() {
            let message = e.to_string();
            self.failed = Some(WalStoreError::Corrupt(format!(
                "earlier failure: {message}"
            )));
            return Err(e);
        }
        Ok(())
    }

    fn fail(&mut self, e: impl Into<WalStoreError>) {
        if self.failed.is_none() {
            self.failed = Some(e.into());
        }
    }

    fn write_meta(&mut self, record: &MetaRecord) {
        if let Err(e) = self.meta.submit(encode_meta(record)) {
            self.fail(e);
            return;
        }
        if self.meta.next_index().get() - self.meta_rewritten >= META_RECORDS_MAX {
            self.rewrite_meta();
        }
    }

    /// Compacts the meta log: appends the snapshot in force and the hard state, syncs, and
    /// purges what came before. The snapshot's data goes to a file of its own first, if it
    /// is not in one yet (a snapshot just taken or installed, or one read from a meta log of
    /// the older format); otherwise this writes two small records.
    fn rewrite_meta(&mut self) {
        if self.failed.is_some() {
            return;
        }
        if let Err(e) = self.try_rewrite_meta() {
            self.fail(e);
        }
    }

    fn try_rewrite_meta(&mut self) -> Result<(), WalStoreError> {
        let snapshot = &self.snapshot;
        let replaced = self.snapshot_file;
        if self.snapshot_file.is_none() && !snapshot.data.is_empty() {
            // The meta log's next index names the file: it only grows, and a file named by
            // an index whose record a crash lost was removed at opening.
            let id = self.meta.next_index().get();
            let file = write_snapshot_file(self.meta.storage(), id, &snapshot.data)?;
            self.snapshot_file = Some(file);
        }
        let record = match self.snapshot_file {
            Some(file) => MetaRecord::SnapshotInFile {
                meta: snapshot.meta.clone(),
                file,
            },
            None => MetaRecord::SnapshotStart {
                meta: snapshot.meta.clone(),
                bytes: 0,
                chunks: 0,
            },
        };
        let first = self.meta.next_index();
        self.meta.submit(encode_meta(&record))?;
        self.meta
            .submit(encode_meta(&MetaRecord::HardState(self.hard_state)))?;
        self.meta.sync()?;
        self.meta.purge_before(first)?;
        self.meta_rewritten = self.meta.next_index().get();
        // No record in force names the file of the snapshot replaced any more.
        if let Some(old) = replaced
            && Some(old) != self.snapshot_file
        {
            let name = old.name();
            self.meta
                .storage()
                .remove(&name)
                .map_err(io_err("remove", &name))?;
        }
        Ok(())
    }
}

/// Makes a [`WalLogStore`]'s writes durable from a thread that does not hold the store, so
/// that the store takes more writes (the node goes on) while the disk syncs: the Raft
/// thesis' leader writing its log in parallel with replication (section 10.2.1). Clones
/// share the store's logs.
///
/// [`WalSyncer::sync`] makes durable every write the store applied before the call began:
/// write the records still queued, then `fdatasync`, the meta log first and the entry log
/// second, as [`WalLogStore::sync`] does (the store's logs serialize a sync with the
/// store's own writes, truncations and purges). Before asking for a sync of a persist
/// effect's write, check [`WalLogStore::written`]: a write the store failed to lay out is
/// remembered there, not here. A failed sync poisons the logs: the driver must stop the
/// node, as after a failed [`WalLogStore::sync`].
pub struct WalSyncer<S: Storage> {
    entries: Wal<S>,
    meta: Wal<S>,
}

impl<S: Storage> Clone for WalSyncer<S> {
    fn clone(&self) -> Self {
        WalSyncer {
            entries: self.entries.clone(),
            meta: self.meta.clone(),
        }
    }
}

impl<S: Storage> fmt::Debug for WalSyncer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalSyncer").finish_non_exhaustive()
    }
}

impl<S: Storage> WalSyncer<S> {
    /// Makes every write the store applied before this call durable.
    ///
    /// # Errors
    ///
    /// The write or sync failure of either log (the logs are poisoned from then on).
    pub fn sync(&self) -> Result<(), WalStoreError> {
        // The meta log first, as `WalLogStore::sync` does (a new term's hard state is
        // durable already: `apply` syncs it before the entries that follow it).
        sync_to_end(&self.meta)?;
        sync_to_end(&self.entries)?;
        Ok(())
    }
}

/// Syncs `wal` up to its last record. A truncation on the store's thread between the
/// reading of that index and the wait (the node stepped down and cut its log) makes the
/// wait find its index gone: that is no failure, and the sync is tried again to the new end
/// (the records cut are not the node's any more; every record kept before the cut is
/// covered).
fn sync_to_end<S: Storage>(wal: &Wal<S>) -> Result<(), WalError> {
    loop {
        match wal.sync() {
            Ok(_) => return Ok(()),
            Err(WalError::OutOfRange { .. }) if wal.poisoned().is_none() => {}
            Err(e) => return Err(e),
        }
    }
}

impl<S: Storage> WalLogStore<S> {
    /// A hard state of a new term is made durable here, before any entry written after it:
    /// the two logs are synced one after the other, and a crash between their syncs must
    /// not keep an entry of a term above the durable hard state's (the node would restart
    /// in a term below its last entry's and could vote, or lead, in a term it has already
    /// seen a leader of). A vote within the same term needs no such order: the sync that
    /// precedes its acknowledgement covers it.
    fn set_hard_state(&mut self, hard_state: HardState) {
        let new_term = hard_state.term > self.hard_state.term;
        self.hard_state = hard_state;
        self.write_meta(&MetaRecord::HardState(hard_state));
        if new_term
            && self.failed.is_none()
            && let Err(e) = sync_to_end(&self.meta)
        {
            self.fail(e);
        }
    }

    fn append(&mut self, entries: &[Entry]) {
        let Some(last) = entries.last() else {
            return;
        };
        let scratch = &mut self.scratch;
        let encoded = entries.iter().map(|e| {
            scratch.clear();
            let buf =
                postcard::to_extend(e, std::mem::take(scratch)).expect("postcard encodes to a Vec");
            let record = Bytes::copy_from_slice(&buf);
            *scratch = buf;
            record
        });
        match self.entries.submit_batch(encoded) {
            Ok(index) if index.get() == last.index.0 => {}
            Ok(index) => self.fail(WalStoreError::Corrupt(format!(
                "entry {} written at log position {index}",
                last.index
            ))),
            Err(e) => self.fail(e),
        }
    }

    fn truncate_after(&mut self, index: LogIndex) {
        if let Err(e) = self.entries.truncate_after(WalIndex::new(index.0)) {
            self.fail(e);
        }
    }

    fn compact(&mut self, snapshot: &Snapshot) {
        if snapshot.meta.index <= self.snapshot.meta.index {
            return; // not past the snapshot in force: nothing changes
        }
        let mark = snapshot.meta.index.next();
        self.snapshot = snapshot.clone();
        self.snapshot_file = None;
        // The snapshot must be durable before the entries it replaces go.
        self.rewrite_meta();
        if self.failed.is_none()
            && let Err(e) = self.entries.purge_before(WalIndex::new(mark.0))
        {
            self.fail(e);
        }
    }

    fn install_snapshot(&mut self, snapshot: &Snapshot) {
        let mark = snapshot.meta.index.next();
        self.snapshot = snapshot.clone();
        self.snapshot_file = None;
        self.rewrite_meta();
        if self.failed.is_some() {
            return;
        }
        // Remove every entry, then move the next index past the snapshot. A crash before
        // this is done leaves entries that do not follow the snapshot: opening discards them.
        if let Err(e) = reset_entries(&self.entries, mark) {
            self.fail(e);
        }
    }
}

impl<S: Storage> LogStore for WalLogStore<S> {
    type Error = WalStoreError;

    /// Lays the writes out on the two logs, in order: entries and truncations go to the
    /// entry log, hard states to the meta log, and a snapshot (taken or installed) is
    /// written to its file, synced and recorded in the meta log before the entries it
    /// replaces are purged, all within this call; so is a hard state of a new term synced
    /// before the entries after it are written (a crash must not keep an entry of a term
    /// the durable hard state has not reached). The rest is durable at the next
    /// [`sync`](LogStore::sync). A failure is remembered and returned by the next sync.
    fn apply(&mut self, write: &RaftWrite) {
        for op in write.ops() {
            if self.failed.is_some() {
                return;
            }
            match op {
                StoreWrite::Append(entries) => self.append(entries),
                StoreWrite::TruncateAfter(index) => self.truncate_after(*index),
                StoreWrite::HardState(hard_state) => self.set_hard_state(*hard_state),
                StoreWrite::Compact(snapshot) => self.compact(snapshot),
                StoreWrite::Install(snapshot) => self.install_snapshot(snapshot),
            }
        }
    }

    fn sync(&mut self) -> Result<(), WalStoreError> {
        WalLogStore::sync(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NodeId;
    use crate::types::Term;
    use synod_wal::FileStorage;

    fn meta_at(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            index: LogIndex(index),
            term: Term::new(1),
            membership: Membership::new([NodeId::new(1)], []).expect("one voter"),
        }
    }

    /// Writes `records` as the meta log of a store in `dir`, then opens the store.
    fn open_with_meta(
        dir: &std::path::Path,
        records: &[MetaRecord],
    ) -> Result<WalLogStore<FileStorage>, WalStoreError> {
        let options = WalStoreOptions::default().segment_bytes_max(4 << 20);
        let storage = |name: &str| FileStorage::new(dir.join(name)).expect("storage");
        let config = options.wal_config(SNAPSHOT_CHUNK_BYTES + META_ENCODING_BYTES_MAX)?;
        let (meta, _) = Wal::open(storage("meta"), config)?;
        meta.submit_batch(records.iter().map(encode_meta))?;
        meta.sync()?;
        drop(meta);
        let membership = Membership::new([NodeId::new(1)], []).expect("one voter");
        WalLogStore::open_with(storage("entries"), storage("meta"), membership, options)
            .map(|(store, _)| store)
    }

    fn start(index: u64, bytes: u64, chunks: u64) -> MetaRecord {
        MetaRecord::SnapshotStart {
            meta: meta_at(index),
            bytes,
            chunks,
        }
    }

    fn snapshot_files(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("meta"))
            .expect("meta directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(SNAPSHOT_FILE_PREFIX))
            .collect();
        names.sort();
        names
    }

    /// A store in `dir` with a snapshot of `data` at 2, closed; and its snapshot file.
    fn with_snapshot_file(dir: &std::path::Path, data: &'static [u8]) -> String {
        let mut store = open_with_meta(dir, &[]).expect("opens");
        store.compact(&Snapshot {
            meta: meta_at(2),
            data: Bytes::from_static(data),
        });
        store.sync().expect("synced");
        drop(store);
        let files = snapshot_files(dir);
        assert_eq!(files.len(), 1, "{files:?}");
        files[0].clone()
    }

    #[test]
    fn a_snapshot_in_the_older_format_moves_to_a_file_at_the_next_compaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let chunk = |b: &[u8]| MetaRecord::SnapshotChunk(b.to_vec());
        let mut store = open_with_meta(dir.path(), &[start(5, 6, 2), chunk(b"abc"), chunk(b"def")])
            .expect("opens");
        assert_eq!(store.snapshot().data, Bytes::from_static(b"abcdef"));
        assert!(snapshot_files(dir.path()).is_empty());
        for term in 1..=META_RECORDS_MAX {
            store.set_hard_state(HardState {
                term: Term::new(term),
                vote: None,
            });
        }
        store.sync().expect("synced");
        assert_eq!(snapshot_files(dir.path()).len(), 1);
        drop(store);
        let store = open_with_meta(dir.path(), &[]).expect("reopens");
        assert_eq!(store.snapshot().meta.index, LogIndex(5));
        assert_eq!(store.snapshot().data, Bytes::from_static(b"abcdef"));
        assert_eq!(store.hard_state().term, Term::new(META_RECORDS_MAX));
    }

    #[test]
    fn a_missing_short_or_damaged_snapshot_file_is_an_error_naming_it() {
        type Damage = fn(&std::path::Path);
        let cases: [(Damage, &str); 3] = [
            (|p| std::fs::remove_file(p).expect("removed"), "is missing"),
            (
                |p| std::fs::write(p, b"stat").expect("written"),
                "holds 4 bytes",
            ),
            (
                |p| std::fs::write(p, b"STATE").expect("written"),
                "fails its checksum",
            ),
        ];
        for (damage, what) in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            let name = with_snapshot_file(dir.path(), b"state");
            damage(&dir.path().join("meta").join(&name));
            let result = open_with_meta(dir.path(), &[]);
            assert!(
                matches!(&result, Err(WalStoreError::Corrupt(why))
                    if why.contains(what) && why.contains(&name)),
                "{:?}",
                result.err()
            );
        }
    }

    #[test]
    fn snapshot_files_no_record_names_are_removed_on_opening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let name = with_snapshot_file(dir.path(), b"state");
        let meta = dir.path().join("meta");
        // What a crash before the record of a newer snapshot leaves, or before a rename.
        let orphan = snapshot_file_name(99);
        std::fs::write(meta.join(&orphan), b"newer").expect("written");
        std::fs::write(meta.join(format!("{orphan}{PARTIAL_SUFFIX}")), b"new").expect("written");
        let store = open_with_meta(dir.path(), &[]).expect("opens");
        assert_eq!(store.snapshot().data, Bytes::from_static(b"state"));
        assert_eq!(snapshot_files(dir.path()), [name]);
    }

    #[test]
    fn a_snapshot_cut_short_by_a_crash_leaves_the_one_before_in_force() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_with_meta(
            dir.path(),
            &[
                start(5, 6, 2),
                MetaRecord::SnapshotChunk(b"abc".to_vec()),
                MetaRecord::SnapshotChunk(b"def".to_vec()),
                // The next snapshot's writer crashed after one of its three chunks.
                start(9, 9, 3),
                MetaRecord::SnapshotChunk(b"ghi".to_vec()),
            ],
        )
        .expect("opens");
        assert_eq!(store.snapshot().meta.index, LogIndex(5));
        assert_eq!(store.snapshot().data, Bytes::from_static(b"abcdef"));
    }

    #[test]
    fn chunks_whose_start_was_purged_count_for_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_with_meta(
            dir.path(),
            &[
                MetaRecord::SnapshotChunk(b"old".to_vec()),
                start(7, 2, 1),
                MetaRecord::SnapshotChunk(b"ok".to_vec()),
            ],
        )
        .expect("opens");
        assert_eq!(store.snapshot().meta.index, LogIndex(7));
        assert_eq!(store.snapshot().data, Bytes::from_static(b"ok"));
    }

    #[test]
    fn an_entry_log_that_starts_past_the_snapshot_is_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = WalStoreOptions::default()
            .segment_bytes_max(4 << 20)
            .wal_config(1024)
            .expect("valid");
        let (entries, _) = Wal::open(
            FileStorage::new(dir.path().join("entries")).expect("storage"),
            config,
        )
        .expect("opens");
        entries.purge_before(WalIndex::new(20)).expect("purges");
        drop(entries);
        let result = open_with_meta(dir.path(), &[start(7, 0, 0)]);
        assert!(
            matches!(&result, Err(WalStoreError::Corrupt(why)) if why.contains("starts at 20")),
            "{:?}",
            result.err()
        );
    }

    #[test]
    fn a_snapshot_with_more_data_than_announced_is_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let result = open_with_meta(
            dir.path(),
            &[
                start(7, 2, 1),
                MetaRecord::SnapshotChunk(b"toolong".to_vec()),
            ],
        );
        assert!(
            matches!(&result, Err(WalStoreError::Corrupt(why)) if why.contains("more data")),
            "{:?}",
            result.err()
        );
    }
}
