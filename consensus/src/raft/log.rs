//! The log: proposals, and every change to the log and to the membership it holds
//! (appends, truncation).

use bytes::Bytes;

use super::{Node, ProposeError, Role, majority};
use crate::membership::Membership;
use crate::storage::LogStore;
use crate::types::{Entry, LogIndex, Payload, Term};

impl<S: LogStore> Node<S> {
    pub(super) fn term_of(&self, index: LogIndex) -> Option<Term> {
        self.store.term(index)
    }

    pub(super) fn last_entry(&self) -> (LogIndex, Term) {
        let last = self.store.last_index();
        (last, self.term_of(last).unwrap_or(Term::ZERO))
    }

    /// Proposes a command. On the leader, appends it and returns its index; the command is
    /// applied once that index is handed out in [`Ready::committed`](super::Ready::committed) with this node's term
    /// (if another entry turns up at that index, the proposal was lost with a leadership
    /// change and may be retried).
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
        if self.membership_index > self.commit || self.term_of(self.commit) != Some(self.term) {
            return Err(ProposeError::MembershipChangePending);
        }
        self.membership
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
        if self.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        if self.store.last_index().0 - self.commit.0 >= self.config.uncommitted_entries_max {
            return Err(ProposeError::Backpressure);
        }
        Ok(())
    }

    pub(super) fn append_local(&mut self, payload: Payload) -> LogIndex {
        let index = self.store.last_index().next();
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
        self.store.append(entries);
        self.write_seq += 1;
        let mut changed = false;
        for entry in entries {
            if let Payload::Membership(m) = &entry.payload {
                self.membership_log.insert(entry.index, m.clone());
                self.membership = m.clone();
                self.voters = majority(m);
                self.membership_index = entry.index;
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
        self.store.truncate_after(index);
        self.write_seq += 1;
        self.truncations += 1;
        self.truncated_after = Some(index);
        self.durable_index = self.durable_index.min(index);
        for mark in &mut self.marks {
            mark.1 = mark.1.min(index);
        }
        if self.membership_index > index {
            self.membership_log = {
                let mut kept = std::mem::take(&mut self.membership_log);
                kept.split_off(&index.next());
                kept
            };
            let (i, m) = match self.membership_log.iter().next_back() {
                Some((i, m)) => (*i, m.clone()),
                None => {
                    let meta = &self.store.snapshot().meta;
                    (meta.index, meta.membership.clone())
                }
            };
            self.membership_index = i;
            self.voters = majority(&m);
            self.membership = m;
        }
    }
}
