//! The log's storage: what the node writes ([`RaftWrite`]), the driver's side of a durable
//! store ([`LogStore`]), and the log in memory ([`MemLogStore`]).
//!
//! The node keeps its log (since the last snapshot), its term and vote and its snapshot in
//! memory, and does no I/O. Every change it makes to them (appending entries, truncating a
//! conflicting suffix, recording its term and vote, taking or installing a snapshot) is
//! also recorded, in order, in a [`RaftWrite`] that it hands out with a persistence token
//! ([`Ready::persist`](crate::Ready::persist), or
//! [`Effect::Persist`](synod_node::Effect::Persist) through the node contract). The driver
//! applies the write to its [`LogStore`], syncs (one sync may cover many writes) and
//! acknowledges the token; the node acts on a write (answers a leader, grants a vote, counts
//! its own copy of an entry) only once it is acknowledged. This is how a write-ahead log
//! batches many appends into one sync.
//!
//! A store that fails to write must remember the failure and report it when the driver
//! next syncs; the driver must then stop the node (fail-stop), never acknowledge the
//! failed write, and build a new node from what the store recovers. Snapshots may be made
//! durable when they are applied (`WalLogStore`, [`MemLogStore`]) or by the next sync,
//! like every other write: the node answers the leader for an installed snapshot only once
//! the driver acknowledges it, and a compaction lost in a crash only means that the node
//! replays its log from the earlier snapshot. A store that makes a snapshot durable when it
//! is applied makes the hard state written before it durable with it: the node applies
//! committed entries before its own copy of them is durable, so it may snapshot an entry of
//! a term its durable hard state has not reached yet, and a node restarted with a term below
//! its snapshot's would take an earlier leader's appends as current (and acknowledge
//! entries it does not hold). The entries the snapshot covers need not be durable: they are
//! committed, so on a majority. For the same reason, a store that makes its writes durable
//! in more than one step (`WalLogStore` keeps the hard state and the entries in two logs)
//! must never leave an entry durable whose term is above the durable hard state's:
//! `WalLogStore` syncs a new term's hard state as it is applied, and its meta log before its
//! entry log.

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

/// One write the node made to its log, in the order it made it. A [`RaftWrite`] is a list
/// of them.
///
/// The variants' order is part of the journal's record format ([`crate::journal`]): new
/// ones go at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreWrite {
    /// Entries appended: the first follows the log's last entry, the rest follow densely.
    Append(Vec<Entry>),
    /// Every entry above the index removed (a conflicting suffix). The index is at least
    /// the snapshot's.
    TruncateAfter(LogIndex),
    /// The term and vote.
    HardState(HardState),
    /// A snapshot taken: it becomes the log's start, the entries it covers go, the entries
    /// above it stay (the Low-Water Mark moves up). Ignored if it is not past the snapshot
    /// in force.
    Compact(Snapshot),
    /// A snapshot received from the leader, which replaces the whole log.
    Install(Snapshot),
}

/// Writes to a Raft log, in the order the node made them, to be made durable by the
/// driver: what an [`Effect::Persist`](synod_node::Effect::Persist) (or
/// [`Ready::persist`](crate::Ready::persist)) carries.
///
/// The node keeps its log in memory and never reads its durable store back while it runs;
/// the store is write-only from the node's side, and read only when the node is built
/// again after a restart. Applying the writes of every persist effect, in token order, to a
/// store that held what the node was built from leaves the store holding exactly what the
/// node holds.
///
/// **Order rule.** The ops are applied in list order, and each sees the log as the ops
/// before it left it. [`RaftWrite::push`] keeps that rule while it coalesces: an append
/// right after an append becomes one append (the entries are dense, so the result is the
/// same), and a hard state right after a hard state replaces it (only the last one
/// matters). Nothing else is merged or reordered: an append, a truncation and another
/// append stay three ops, and a snapshot stays where it was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftWrite {
    ops: Vec<StoreWrite>,
}

impl RaftWrite {
    /// No writes.
    #[must_use]
    pub fn new() -> RaftWrite {
        RaftWrite::default()
    }

    /// The writes, in the order to apply them.
    #[must_use]
    pub fn ops(&self) -> &[StoreWrite] {
        &self.ops
    }

    /// The writes, in the order to apply them.
    #[must_use]
    pub fn into_ops(self) -> Vec<StoreWrite> {
        self.ops
    }

    /// Whether there is nothing to write.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Adds `op` after the writes so far, coalescing it with the last one where the order
    /// rule allows (see the type's documentation).
    pub fn push(&mut self, op: StoreWrite) {
        match (self.ops.last_mut(), op) {
            (Some(StoreWrite::Append(entries)), StoreWrite::Append(more)) => {
                entries.extend(more);
            }
            (Some(StoreWrite::HardState(last)), StoreWrite::HardState(hard_state)) => {
                *last = hard_state;
            }
            (_, op) => self.ops.push(op),
        }
    }

    /// Applies the writes to `store` ([`LogStore::apply`]).
    pub fn apply_to<S: LogStore + ?Sized>(&self, store: &mut S) {
        store.apply(self);
    }
}

impl From<Vec<StoreWrite>> for RaftWrite {
    fn from(ops: Vec<StoreWrite>) -> RaftWrite {
        let mut write = RaftWrite::new();
        for op in ops {
            write.push(op);
        }
        write
    }
}

/// The durable store of a Raft log, on the driver's side: it takes the node's
/// [`RaftWrite`]s in order and makes them durable when asked.
///
/// The node never calls it: it hands its writes out with a [`PersistToken`](synod_node::PersistToken),
/// the driver applies them ([`LogStore::apply`]), syncs ([`LogStore::sync`], possibly once
/// for the writes of many tokens) and acknowledges the last token covered. At restart the
/// store's own constructor returns what it recovered, a [`MemLogStore`] the node is built
/// from ([`Node::new`](crate::Node::new)).
pub trait LogStore {
    /// Why a sync failed.
    type Error;

    /// Applies `write`, in order after every write applied before. The writes need not be
    /// durable until the next [`sync`](LogStore::sync). A store that fails to write
    /// remembers the failure and returns it from the next sync.
    fn apply(&mut self, write: &RaftWrite);

    /// Makes every write applied so far durable.
    ///
    /// # Errors
    ///
    /// The store's failure to write or sync: the node's writes are then not durable, the
    /// driver must never acknowledge them, and must stop the node and rebuild it from what
    /// the store recovers (fail-stop).
    fn sync(&mut self) -> Result<(), Self::Error>;
}

/// A Raft log in memory: the log a [`Node`](crate::Node) keeps (everything since its
/// snapshot), what a durable store recovers at restart, and, as a [`LogStore`], a "disk"
/// for tests and simulation with an explicit durability point: [`MemLogStore::sync`] makes
/// everything written so far durable, and [`MemLogStore::crash`] throws away what was not,
/// as a power failure would. Snapshots (compacted or installed) are durable as soon as they
/// are written, and with them the hard state written before them (see the module
/// documentation).
///
/// The log is the entries `first_index()..=last_index()`, where `first_index()` is one past
/// the snapshot's index; a new store has an empty snapshot at index 0 that carries the
/// initial membership. Reads of positions outside that range return `None` or nothing;
/// they never panic.
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

impl MemLogStore {
    /// The term and vote last written.
    #[must_use]
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Records the term and vote.
    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    /// The latest snapshot (data and metadata).
    #[must_use]
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The index of the last entry, or the snapshot's index if there is none above it.
    #[must_use]
    pub fn last_index(&self) -> LogIndex {
        self.snapshot.meta.index.plus(self.entries.len() as u64)
    }

    /// The first index still in the log: one past the snapshot's.
    #[must_use]
    pub fn first_index(&self) -> LogIndex {
        self.snapshot.meta.index.next()
    }

    /// The term of the entry at `index`: the snapshot's term at the snapshot's index, and
    /// `None` below it (compacted) or above `last_index()`.
    #[must_use]
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot.meta.index {
            return Some(self.snapshot.meta.term);
        }
        self.offset(index).map(|at| self.entries[at].term)
    }

    /// Appends the entries with indexes `lo..=hi` that fit in `bytes_max` (at least one if
    /// any exists) to `out`. Positions outside the log are skipped.
    pub fn entries(&self, lo: LogIndex, hi: LogIndex, bytes_max: u64, out: &mut Vec<Entry>) {
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

    /// Appends entries; the first has index `last_index() + 1` and the rest follow densely.
    ///
    /// # Panics
    ///
    /// If they do not.
    pub fn append(&mut self, entries: &[Entry]) {
        for entry in entries {
            assert_eq!(
                entry.index,
                self.last_index().next(),
                "log store: append must be dense"
            );
            self.entries.push_back(entry.clone());
        }
    }

    /// Removes every entry above `index` (a conflicting suffix).
    ///
    /// # Panics
    ///
    /// If `index` is below the snapshot's index.
    pub fn truncate_after(&mut self, index: LogIndex) {
        assert!(
            index >= self.snapshot.meta.index,
            "log store: truncating into the snapshot"
        );
        let keep = usize::try_from(index.0 - self.snapshot.meta.index.0).unwrap_or(usize::MAX);
        self.entries.truncate(keep);
        self.durable_len = self.durable_len.min(self.entries.len());
    }

    /// Takes `snapshot` as the new snapshot and removes the entries it covers (the
    /// Low-Water Mark moves up); entries above it stay. Nothing changes if it is not past
    /// the snapshot in force.
    pub fn compact(&mut self, snapshot: Snapshot) {
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
        self.durable_hard_state = self.hard_state;
    }

    /// Replaces the whole log by `snapshot`, received from the leader.
    pub fn install_snapshot(&mut self, snapshot: Snapshot) {
        self.entries.clear();
        self.durable_len = 0;
        self.snapshot = snapshot;
        self.durable_hard_state = self.hard_state;
    }

    /// Makes one write, as [`LogStore::apply`] does for each op of a [`RaftWrite`].
    pub fn write(&mut self, op: &StoreWrite) {
        match op {
            StoreWrite::Append(entries) => self.append(entries),
            StoreWrite::TruncateAfter(index) => self.truncate_after(*index),
            StoreWrite::HardState(hard_state) => self.set_hard_state(*hard_state),
            StoreWrite::Compact(snapshot) => self.compact(snapshot.clone()),
            StoreWrite::Install(snapshot) => self.install_snapshot(snapshot.clone()),
        }
    }
}

impl LogStore for MemLogStore {
    type Error = std::convert::Infallible;

    fn apply(&mut self, write: &RaftWrite) {
        for op in write.ops() {
            self.write(op);
        }
    }

    fn sync(&mut self) -> Result<(), std::convert::Infallible> {
        MemLogStore::sync(self);
        Ok(())
    }
}
