//! The log: proposals, and every change to the log and to the membership it holds
//! (appends, truncation).

use std::collections::BTreeMap;
use std::ops::Deref;

use bytes::Bytes;
use synod_quorum::MajorityConfig;

use super::{Node, ProposeError, Role};
use crate::membership::Membership;
use crate::storage::{HardState, MemLogStore, RaftWrite, Snapshot, SnapshotMeta, StoreWrite};
use crate::types::{Entry, LogIndex, Payload, Term};

/// How many bytes of entries a starting node reads from its store at a time, looking for
/// memberships.
const START_SCAN_BYTES_MAX: u64 = 1 << 20;

/// The node's log in memory (everything since its snapshot, its term and vote), and the
/// writes made to it since they were last handed out to be persisted. Every change goes
/// through here, so the two cannot disagree; reads go to the log ([`Deref`]).
#[derive(Debug)]
pub(super) struct RaftLog {
    mem: MemLogStore,
    unpersisted: RaftWrite,
}

impl Deref for RaftLog {
    type Target = MemLogStore;

    fn deref(&self) -> &MemLogStore {
        &self.mem
    }
}

impl RaftLog {
    /// The log `mem`, all of it durable.
    pub(super) fn new(mem: MemLogStore) -> RaftLog {
        RaftLog {
            mem,
            unpersisted: RaftWrite::new(),
        }
    }

    pub(super) fn set_hard_state(&mut self, hard_state: HardState) {
        self.mem.set_hard_state(hard_state);
        self.unpersisted.push(StoreWrite::HardState(hard_state));
    }

    fn append(&mut self, entries: &[Entry]) {
        self.mem.append(entries);
        self.unpersisted.push(StoreWrite::Append(entries.to_vec()));
    }

    fn truncate_after(&mut self, index: LogIndex) {
        self.mem.truncate_after(index);
        self.unpersisted.push(StoreWrite::TruncateAfter(index));
    }

    pub(super) fn compact(&mut self, snapshot: Snapshot) {
        self.mem.compact(snapshot.clone());
        self.unpersisted.push(StoreWrite::Compact(snapshot));
    }

    pub(super) fn install_snapshot(&mut self, snapshot: Snapshot) {
        self.mem.install_snapshot(snapshot.clone());
        self.unpersisted.push(StoreWrite::Install(snapshot));
    }

    /// The writes made since the last call.
    pub(super) fn take_unpersisted(&mut self) -> RaftWrite {
        std::mem::take(&mut self.unpersisted)
    }
}

/// The memberships in the log: the one in effect (the newest, committed or not, in effect
/// from the moment it is appended) and every one above the snapshot, so that the one in
/// effect can be found again when the log is cut.
#[derive(Debug)]
pub(super) struct MembershipLog {
    /// The membership in effect.
    current: Membership,
    /// Its voters, as the quorum that counts votes and acknowledgements.
    voters: MajorityConfig,
    /// The index of the entry that holds it (or of the snapshot, if no entry above does).
    index: LogIndex,
    /// Membership entries above the snapshot, by index.
    above_snapshot: BTreeMap<LogIndex, Membership>,
}

impl MembershipLog {
    /// The memberships in `store`: its snapshot's, and any in its entries.
    pub(super) fn from_store(store: &MemLogStore) -> MembershipLog {
        let mut above_snapshot = BTreeMap::new();
        let mut index = store.first_index();
        let last = store.last_index();
        let mut batch = Vec::new();
        while index <= last {
            batch.clear();
            store.entries(index, last, START_SCAN_BYTES_MAX, &mut batch);
            if batch.is_empty() {
                break;
            }
            for entry in &batch {
                if let Payload::Membership(m) = &entry.payload {
                    above_snapshot.insert(entry.index, m.clone());
                }
            }
            index = batch[batch.len() - 1].index.next();
        }
        let meta = &store.snapshot().meta;
        let mut log = MembershipLog {
            voters: majority(&meta.membership),
            current: meta.membership.clone(),
            index: meta.index,
            above_snapshot,
        };
        log.find_current(meta);
        log
    }

    /// The membership in effect.
    pub(super) fn current(&self) -> &Membership {
        &self.current
    }

    /// The voters of the membership in effect.
    pub(super) fn voters(&self) -> &MajorityConfig {
        &self.voters
    }

    /// The index of the membership in effect.
    pub(super) fn index(&self) -> LogIndex {
        self.index
    }

    /// The membership in effect at `index` (at least the snapshot's, `snapshot`).
    pub(super) fn at(&self, index: LogIndex, snapshot: &SnapshotMeta) -> Membership {
        self.above_snapshot
            .range(..=index)
            .next_back()
            .map_or_else(|| snapshot.membership.clone(), |(_, m)| m.clone())
    }

    /// `membership` was appended at `index`, and is in effect.
    fn appended(&mut self, index: LogIndex, membership: &Membership) {
        self.above_snapshot.insert(index, membership.clone());
        self.current = membership.clone();
        self.voters = majority(membership);
        self.index = index;
    }

    /// The log lost its entries after `index`: the membership in effect is the newest left,
    /// in the entries or in `snapshot`.
    fn cut_after(&mut self, index: LogIndex, snapshot: &SnapshotMeta) {
        if self.index > index {
            self.above_snapshot.split_off(&index.next());
            self.find_current(snapshot);
        }
    }

    /// The log's start moved to a snapshot at `index`: the memberships at or below it are
    /// in the snapshot now. The one in effect does not change.
    pub(super) fn compacted_to(&mut self, index: LogIndex) {
        self.above_snapshot = self.above_snapshot.split_off(&index.next());
    }

    /// The log's start moved to `snapshot`, and the one in effect is found again (the
    /// snapshot's, unless an entry kept after it holds a newer one).
    pub(super) fn compacted_to_snapshot(&mut self, snapshot: &SnapshotMeta) {
        self.compacted_to(snapshot.index);
        self.find_current(snapshot);
    }

    /// The whole log was replaced by `snapshot`.
    pub(super) fn replaced_by_snapshot(&mut self, snapshot: &SnapshotMeta) {
        self.above_snapshot.clear();
        self.current = snapshot.membership.clone();
        self.voters = majority(&self.current);
        self.index = snapshot.index;
    }

    /// Makes the newest membership above the snapshot the one in effect, or `snapshot`'s
    /// if there is none.
    fn find_current(&mut self, snapshot: &SnapshotMeta) {
        let (index, membership) = match self.above_snapshot.iter().next_back() {
            Some((i, m)) => (*i, m.clone()),
            None => (snapshot.index, snapshot.membership.clone()),
        };
        self.index = index;
        self.voters = majority(&membership);
        self.current = membership;
    }
}

/// The quorum of a membership's voters.
fn majority(membership: &Membership) -> MajorityConfig {
    MajorityConfig::new(membership.voters().iter().copied())
        .expect("a membership has at least one voter")
}

impl Node {
    pub(super) fn term_of(&self, index: LogIndex) -> Option<Term> {
        self.log.term(index)
    }

    pub(super) fn last_entry(&self) -> (LogIndex, Term) {
        let last = self.log.last_index();
        (last, self.term_of(last).unwrap_or(Term::ZERO))
    }

    /// Proposes a command. On the leader, appends it and returns its index; the command is
    /// applied once that index is handed out in
    /// [`Ready::committed`](super::Ready::committed) with this node's term (if another
    /// entry turns up at that index, the proposal was lost with a leadership change and
    /// may be retried).
    ///
    /// # Errors
    ///
    /// [`ProposeError::NotLeader`] with the known leader on a non-leader;
    /// [`ProposeError::TransferInProgress`] and [`ProposeError::Backpressure`] when the
    /// leader cannot take it now; [`ProposeError::TooLarge`] (on any node) for a command
    /// longer than the configured `entry_bytes_max`.
    pub fn propose(&mut self, data: Bytes) -> Result<LogIndex, ProposeError> {
        let (bytes, max) = (data.len() as u64, self.config.entry_bytes_max);
        if bytes > max {
            return Err(ProposeError::TooLarge { bytes, max });
        }
        self.check_can_propose()?;
        Ok(self.append_local(Payload::Command(data)))
    }

    /// Proposes a new membership: at most one voter added or removed; learners freely.
    ///
    /// # Errors
    ///
    /// As [`Node::propose`], and [`ProposeError::MembershipChangePending`] while an earlier
    /// change is uncommitted or before the leader has committed an entry of its term.
    pub fn propose_membership(&mut self, next: Membership) -> Result<LogIndex, ProposeError> {
        self.check_can_propose()?;
        if (self.membership.index() > self.commit || self.term_of(self.commit) != Some(self.term))
            && !self.config.broken().skip_membership_change_wait
        {
            return Err(ProposeError::MembershipChangePending);
        }
        self.membership
            .current()
            .check_change(&next)
            .map_err(ProposeError::Membership)?;
        Ok(self.append_local(Payload::Membership(next)))
    }

    fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transfer.to.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        if self.log.last_index().0 - self.commit.0 >= self.config.uncommitted_entries_max {
            return Err(ProposeError::Backpressure);
        }
        Ok(())
    }

    pub(super) fn append_local(&mut self, payload: Payload) -> LogIndex {
        let index = self.log.last_index().next();
        let entry = Entry {
            term: self.term,
            index,
            payload,
        };
        self.append_entries(std::slice::from_ref(&entry));
        self.needs_broadcast = true;
        index
    }

    pub(super) fn append_entries(&mut self, entries: &[Entry]) {
        if entries.is_empty() {
            return;
        }
        self.log.append(entries);
        self.durability.wrote();
        let mut changed = false;
        for entry in entries {
            if let Payload::Membership(m) = &entry.payload {
                self.membership.appended(entry.index, m);
                changed = true;
            }
        }
        if changed && self.role == Role::Leader {
            self.sync_progress();
        }
    }

    pub(super) fn truncate_after(&mut self, index: LogIndex) {
        assert!(
            index >= self.commit,
            "truncating committed entries ({index} < commit {})",
            self.commit
        );
        self.log.truncate_after(index);
        self.durability.wrote();
        self.truncations += 1;
        self.truncated_after = Some(index);
        self.durability.cut_after(index);
        self.membership.cut_after(index, &self.log.snapshot().meta);
    }
}
