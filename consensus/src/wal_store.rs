//! A durable [`LogStore`] on `synod-wal` (feature `wal`).
// tidy: driver: writes the Raft log and hard state to disk through synod-wal.
//!
//! Two write-ahead logs, each in its own [`Storage`] (directory):
//!
//! - the **entry log**: record `i` is the Raft entry at index `i` (its `postcard`
//!   encoding), so truncating a conflicting suffix is [`Wal::truncate_after`] and
//!   compaction is [`Wal::purge_before`] (the Low-Water Mark);
//! - the **meta log**: hard-state and snapshot records (`postcard`, format version 1 in
//!   the first byte); on opening, the last of each wins. It is rewritten (the current
//!   snapshot and hard state appended, older records purged) once it holds
//!   `META_RECORDS_MAX` records.
//!
//! Both use [`SyncPolicy::Manual`]: writes made while the node handles an input are
//! buffered, and [`WalLogStore::sync`] makes them durable, which is what a [`Ready`]'s
//! persistence request asks for. The whole log is also kept in memory (a [`MemLogStore`]),
//! so reads never touch the disk; compaction bounds it.
//!
//! Errors: the [`LogStore`] methods cannot fail, so a failed write is remembered and
//! returned by the next [`WalLogStore::sync`]; the caller must then stop the node and never
//! acknowledge the persistence request (the logs are poisoned and refuse more writes until
//! reopened, as synod-wal documents).
//!
//! [`Ready`]: crate::Ready

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use synod_wal::{LogIndex as WalIndex, Storage, SyncPolicy, Wal, WalConfig, WalError};

use crate::membership::Membership;
use crate::storage::{HardState, LogStore, MemLogStore, Snapshot, SnapshotMeta};
use crate::types::{Entry, LogIndex, Term};

const META_VERSION: u8 = 1;
const META_RECORDS_MAX: u64 = 1024;

#[derive(Serialize, Deserialize)]
enum MetaRecord {
    HardState(HardState),
    Snapshot { meta: SnapshotMeta, data: Vec<u8> },
}

/// Why a WAL-backed store could not be opened or synced.
#[derive(Debug)]
#[non_exhaustive]
pub enum WalStoreError {
    /// The write-ahead log failed.
    Wal(WalError),
    /// A record did not decode, or the entry log does not line up with the snapshot.
    Corrupt(String),
}

impl fmt::Display for WalStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalStoreError::Wal(e) => write!(f, "write-ahead log: {e}"),
            WalStoreError::Corrupt(what) => write!(f, "corrupt raft log: {what}"),
        }
    }
}

impl std::error::Error for WalStoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WalStoreError::Wal(e) => Some(e),
            WalStoreError::Corrupt(_) => None,
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
    mem: MemLogStore,
    entries: Wal<S>,
    meta: Wal<S>,
    failed: Option<WalStoreError>,
}

impl<S: Storage> fmt::Debug for WalLogStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalLogStore")
            .field("mem", &self.mem)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

fn wal_config() -> Result<WalConfig, WalError> {
    WalConfig::builder()
        .sync_policy(SyncPolicy::Manual)
        .first_index(WalIndex::new(1))
        .build()
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

impl<S: Storage> WalLogStore<S> {
    /// Opens (or creates) the store: `entries` and `meta` are the storages of the two
    /// logs; `membership` is the initial configuration, used only if the store is new.
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
    ) -> Result<WalLogStore<S>, WalStoreError> {
        let (entries, _) = Wal::open(entries, wal_config()?)?;
        let (meta, _) = Wal::open(meta, wal_config()?)?;
        let mut hard_state = HardState::default();
        let mut snapshot = None;
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
                    if !meta.membership.is_valid() {
                        return Err(WalStoreError::Corrupt("snapshot membership".into()));
                    }
                    snapshot = Some(Snapshot {
                        meta,
                        data: Bytes::from(data),
                    });
                }
            }
        }
        let mut mem = MemLogStore::new(membership);
        if let Some(snapshot) = snapshot {
            mem.install_snapshot(snapshot);
        }
        mem.set_hard_state(hard_state);
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
        Ok(WalLogStore {
            mem,
            entries,
            meta,
            failed: None,
        })
    }

    /// Makes every write so far durable. Call it when a [`Ready`](crate::Ready) asks for
    /// persistence, then acknowledge with [`Node::persisted`](crate::Node::persisted).
    ///
    /// # Errors
    ///
    /// The first write or sync failure since the store was opened; after one, the node
    /// must be stopped.
    pub fn sync(&mut self) -> Result<(), WalStoreError> {
        if let Some(e) = self.failed.take() {
            let message = e.to_string();
            self.failed = Some(WalStoreError::Corrupt(format!(
                "earlier failure: {message}"
            )));
            return Err(e);
        }
        let _entries_durable = self.entries.sync()?;
        let _meta_durable = self.meta.sync()?;
        self.mem.sync();
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
        let records = self.meta.next_index().get() - self.meta.first_index().get();
        if records >= META_RECORDS_MAX {
            self.rewrite_meta();
        }
    }

    /// Appends the current snapshot and hard state, syncs, and purges what came before.
    fn rewrite_meta(&mut self) {
        let snapshot = self.mem.snapshot().clone();
        let first = self.meta.next_index();
        let records = [
            MetaRecord::Snapshot {
                meta: snapshot.meta,
                data: snapshot.data.to_vec(),
            },
            MetaRecord::HardState(self.mem.hard_state()),
        ];
        let result = self
            .meta
            .submit_batch(records.iter().map(encode_meta))
            .and_then(|_| self.meta.sync())
            .and_then(|_| self.meta.purge_before(first));
        if let Err(e) = result {
            self.fail(e);
        }
    }
}

impl<S: Storage> LogStore for WalLogStore<S> {
    fn hard_state(&self) -> HardState {
        self.mem.hard_state()
    }

    fn set_hard_state(&mut self, hard_state: HardState) {
        self.mem.set_hard_state(hard_state);
        self.write_meta(&MetaRecord::HardState(hard_state));
    }

    fn snapshot(&self) -> &Snapshot {
        self.mem.snapshot()
    }

    fn last_index(&self) -> LogIndex {
        self.mem.last_index()
    }

    fn term(&self, index: LogIndex) -> Option<Term> {
        self.mem.term(index)
    }

    fn entries(&self, lo: LogIndex, hi: LogIndex, bytes_max: u64, out: &mut Vec<Entry>) {
        self.mem.entries(lo, hi, bytes_max, out);
    }

    fn append(&mut self, entries: &[Entry]) {
        self.mem.append(entries);
        let Some(last) = entries.last() else {
            return;
        };
        let encoded = entries
            .iter()
            .map(|e| Bytes::from(postcard::to_stdvec(e).expect("postcard encodes to a Vec")));
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
        self.mem.truncate_after(index);
        if let Err(e) = self.entries.truncate_after(WalIndex::new(index.0)) {
            self.fail(e);
        }
    }

    fn compact(&mut self, snapshot: Snapshot) {
        let mark = snapshot.meta.index.next();
        self.mem.compact(snapshot);
        // The snapshot must be durable before the entries it replaces go.
        self.rewrite_meta();
        if self.failed.is_none()
            && let Err(e) = self.entries.purge_before(WalIndex::new(mark.0))
        {
            self.fail(e);
        }
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) {
        let mark = snapshot.meta.index.next();
        self.mem.install_snapshot(snapshot);
        self.rewrite_meta();
        if self.failed.is_some() {
            return;
        }
        // Remove every entry, then move the next index past the snapshot.
        let keep = WalIndex::new(self.entries.first_index().get().saturating_sub(1));
        let result = self
            .entries
            .truncate_after(keep)
            .and_then(|()| self.entries.purge_before(WalIndex::new(mark.0)));
        if let Err(e) = result {
            self.fail(e);
        }
    }
}
