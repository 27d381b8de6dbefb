//! The log store: the narrow trait the Raft node needs from its storage, and an in-memory
//! implementation.
//!
//! The node owns its store and writes to it as part of handling an input (appending entries,
//! truncating a conflicting suffix, recording its term and vote). Those writes need not be
//! durable when they return: the node then asks, in its [`Ready`](crate::Ready), for
//! everything written so far to be made durable, and only acts on it (answers a leader,
//! grants a vote, counts its own copy of an entry) once the caller acknowledges with
//! [`Node::persisted`](crate::Node::persisted). This is how a write-ahead log batches many
//! appends into one sync.
//!
//! A store that fails to write must remember the failure and report it when the caller
//! next syncs; the caller must then stop the node (fail-stop) and never acknowledge the
//! failed write. Snapshots ([`LogStore::compact`], [`LogStore::install_snapshot`]) may be
//! made durable when the call returns (`WalLogStore` does) or by the next sync, like every
//! other write: the node answers the leader for an installed snapshot only once the caller
//! acknowledges the sync that follows it, and a compaction lost in a crash only means that
//! the node replays its log from the earlier snapshot.

use bytes::Bytes;
use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::membership::Membership;
use crate::types::{Entry, LogIndex, NodeId, Term};

/// The state a node must persist before it uses it: its current term and its vote in that
/// term.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HardState {
    /// The current term.
    pub term: Term,
    /// The candidate voted for in `term`, if any.
    pub vote: Option<NodeId>,
}

/// What a snapshot covers: everything up to `index` (whose entry had `term`), and the
/// configuration in effect there.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last log index the snapshot includes.
    pub index: LogIndex,
    /// The term of the entry at `index`.
    pub term: Term,
    /// The membership in effect at `index`.
    pub membership: Membership,
}

/// A snapshot of the application's state machine, with its metadata. The data is opaque
/// to the node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Snapshot {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The application's serialized state at `meta.index`.
    pub data: Bytes,
}

/// The storage a Raft node needs: a log of entries above a snapshot, and the hard state.
///
/// The log is the entries `first_index()..=last_index()`, where `first_index()` is one
/// past the snapshot's index; a fresh store has an empty snapshot at index 0 that carries
/// the initial membership. Reads of positions outside that range return `None` or nothing;
/// they never panic.
pub trait LogStore {
    /// The term and vote last written.
    fn hard_state(&self) -> HardState;

    /// Records the term and vote (made durable by the caller's next sync).
    fn set_hard_state(&mut self, hard_state: HardState);

    /// The latest snapshot (data and metadata).
    fn snapshot(&self) -> &Snapshot;

    /// The index of the last entry, or the snapshot's index if there is none above it.
    fn last_index(&self) -> LogIndex;

    /// The term of the entry at `index`: the snapshot's term at the snapshot's index, and
    /// `None` below it (compacted) or above `last_index()`.
    fn term(&self, index: LogIndex) -> Option<Term>;

    /// Appends the entries with indexes `lo..=hi` that fit in `bytes_max` (at least one if
    /// any exists) to `out`. Positions outside the log are skipped.
    fn entries(&self, lo: LogIndex, hi: LogIndex, bytes_max: u64, out: &mut Vec<Entry>);

    /// Appends entries; the first has index `last_index() + 1` and the rest follow densely.
    fn append(&mut self, entries: &[Entry]);

    /// Removes every entry above `index` (a conflicting suffix). `index` is at least the
    /// snapshot's index.
    fn truncate_after(&mut self, index: LogIndex);

    /// Takes `snapshot` as the new snapshot and removes the entries it covers (the
    /// Low-Water Mark moves up). Entries above it stay.
    fn compact(&mut self, snapshot: Snapshot);

    /// Replaces the whole log by `snapshot`, received from the leader.
    fn install_snapshot(&mut self, snapshot: Snapshot);

    /// The first index still in the log.
    fn first_index(&self) -> LogIndex {
        self.snapshot().meta.index.next()
    }
}

/// A [`LogStore`] in memory, with an explicit durability point for tests and simulation:
/// [`MemLogStore::sync`] makes everything written so far durable, and
/// [`MemLogStore::crash`] throws away what was not, as a power failure would.
#[derive(Clone, Debug)]
pub struct MemLogStore {
    hard_state: HardState,
    snapshot: Snapshot,
    entries: VecDeque<Entry>,
    durable_hard_state: HardState,
    /// How many of `entries` (from the front) are durable.
    durable_len: usize,
}

impl MemLogStore {
    /// An empty store for a new cluster whose initial configuration is `membership`.
    #[must_use]
    pub fn new(membership: Membership) -> MemLogStore {
        MemLogStore {
            hard_state: HardState::default(),
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: LogIndex::ZERO,
                    term: Term::ZERO,
                    membership,
                },
                data: Bytes::new(),
            },
            entries: VecDeque::new(),
            durable_hard_state: HardState::default(),
            durable_len: 0,
        }
    }

    /// Makes everything written so far durable.
    pub fn sync(&mut self) {
        self.durable_hard_state = self.hard_state;
        self.durable_len = self.entries.len();
    }

    /// Loses everything written since the last [`sync`](MemLogStore::sync), as a crash
    /// of the machine would.
    pub fn crash(&mut self) {
        self.hard_state = self.durable_hard_state;
        self.entries.truncate(self.durable_len);
    }

    /// The hard state as of the last sync.
    #[must_use]
    pub fn durable_hard_state(&self) -> HardState {
        self.durable_hard_state
    }

    fn offset(&self, index: LogIndex) -> Option<usize> {
        let first = self.snapshot.meta.index.0 + 1;
        if index.0 < first {
            return None;
        }
        let at = usize::try_from(index.0 - first).ok()?;
        (at < self.entries.len()).then_some(at)
    }
}

impl LogStore for MemLogStore {
    fn hard_state(&self) -> HardState {
        self.hard_state
    }

    fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    fn last_index(&self) -> LogIndex {
        self.snapshot.meta.index.plus(self.entries.len() as u64)
    }

    fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot.meta.index {
            return Some(self.snapshot.meta.term);
        }
        self.offset(index).map(|at| self.entries[at].term)
    }

    fn entries(&self, lo: LogIndex, hi: LogIndex, bytes_max: u64, out: &mut Vec<Entry>) {
        let lo = lo.max(self.first_index());
        let hi = hi.min(self.last_index());
        let mut bytes = 0u64;
        let mut index = lo;
        let start = out.len();
        while index <= hi {
            let Some(at) = self.offset(index) else { break };
            let entry = &self.entries[at];
            bytes += entry.size_bytes();
            if bytes > bytes_max && out.len() > start {
                break;
            }
            out.push(entry.clone());
            index = index.next();
        }
    }

    fn append(&mut self, entries: &[Entry]) {
        for entry in entries {
            assert_eq!(
                entry.index,
                self.last_index().next(),
                "log store: append must be dense"
            );
            self.entries.push_back(entry.clone());
        }
    }

    fn truncate_after(&mut self, index: LogIndex) {
        assert!(
            index >= self.snapshot.meta.index,
            "log store: truncating into the snapshot"
        );
        let keep = usize::try_from(index.0 - self.snapshot.meta.index.0).unwrap_or(usize::MAX);
        self.entries.truncate(keep);
        self.durable_len = self.durable_len.min(self.entries.len());
    }

    fn compact(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        if index <= self.snapshot.meta.index {
            return;
        }
        let drop = usize::try_from(index.0 - self.snapshot.meta.index.0)
            .unwrap_or(usize::MAX)
            .min(self.entries.len());
        self.entries.drain(..drop);
        self.durable_len = self.durable_len.saturating_sub(drop);
        self.snapshot = snapshot;
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) {
        self.entries.clear();
        self.durable_len = 0;
        self.snapshot = snapshot;
    }
}
