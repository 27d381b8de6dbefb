//! Linearizable reads without writing to the log: read index (a quorum round of
//! heartbeats confirms the leadership) and lease reads (a recent round confirms it for a
//! while), and reads forwarded by followers. The heartbeat rounds that confirm both are
//! counted here.

use super::{Node, ReadError, Role};
use crate::message::{MessageBody, ReadId};
use crate::storage::LogStore;
use crate::types::{LogIndex, NodeId};

/// The answer to a read-index request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's id for the read.
    pub id: ReadId,
    /// Serve the read once the state machine has applied this index; `None` if leadership
    /// could not be confirmed (retry, perhaps at another node).
    pub index: Option<LogIndex>,
}

/// Who asked for a read index: this node's caller, or a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReadOrigin {
    Local,
    Remote(NodeId),
}

#[derive(Clone, Copy, Debug)]
pub(super) struct PendingRead {
    pub(super) id: ReadId,
    pub(super) origin: ReadOrigin,
    pub(super) index: LogIndex,
    /// The heartbeat round that must be confirmed by a quorum; 0 until one is assigned.
    pub(super) round: u64,
}

impl<S: LogStore> Node<S> {
    /// Asks for a linearizable read index. The answer arrives in [`Ready::reads`](super::Ready::reads) once
    /// the leader has confirmed, by a quorum round of heartbeats, that it was still the
    /// leader when the request arrived; the caller serves the read after applying up to
    /// the returned index. On a follower the request is forwarded to the leader; if no
    /// answer comes within the longest election timeout (the request or the answer was
    /// lost, or the leader changed), it is answered with `index: None`. Read ids must not
    /// repeat, even across restarts: a late answer to an earlier read with the same id
    /// would be taken for this one's.
    ///
    /// # Errors
    ///
    /// [`ReadError::NoLeader`] if no leader is known, [`ReadError::Backpressure`] if too
    /// many reads are waiting.
    pub fn read_index(&mut self, id: ReadId) -> Result<(), ReadError> {
        match self.role {
            Role::Leader => {
                if self.reads_waiting_commit.len() + self.reads_pending.len()
                    >= self.config.read_pending_max
                {
                    return Err(ReadError::Backpressure);
                }
                self.add_read(id, ReadOrigin::Local);
                Ok(())
            }
            _ => {
                let leader = self.leader.ok_or(ReadError::NoLeader)?;
                if self.reads_forwarded.len() >= self.config.read_pending_max {
                    return Err(ReadError::Backpressure);
                }
                self.reads_forwarded.insert(id, self.ticks);
                self.send_now(leader, MessageBody::ReadIndex { id });
                Ok(())
            }
        }
    }

    /// A lease read: the index up to which the leader may serve reads right now without a
    /// quorum round, or `None` if it holds no valid lease.
    ///
    /// The assumption, stated plainly: every node's tick rate differs from real time by
    /// so little that over one minimum election timeout no two nodes' tick counts drift
    /// apart by `drift_ticks` (set with
    /// [`ConfigBuilder::lease_reads`](crate::ConfigBuilder::lease_reads)). Under it, the
    /// voters that answered a heartbeat sent at tick `t` will not vote for another leader
    /// before `t + election_timeout_min` (check-quorum makes them ignore elections while
    /// they hear from a leader, and a restarted node ignores them for that long after
    /// starting), so the lease lasts until `t + election_timeout_min - drift_ticks`. If
    /// the assumption fails (a VM paused for seconds, a clock slewed), lease reads can be
    /// stale; [`Node::read_index`] makes no such assumption.
    ///
    /// A leader that has sent a `TimeoutNow` for a leadership transfer takes no more lease
    /// reads for the rest of its term, even once the transfer is abandoned: the target's
    /// election overrides the voters' check-quorum, so a `TimeoutNow` delayed in the
    /// network could elect a new leader inside the old leader's lease.
    #[must_use]
    pub fn read_lease(&self) -> Option<LogIndex> {
        let drift = self.config.lease_drift_ticks?;
        if self.role != Role::Leader
            || self.transfer.is_some()
            || self.transfer_sent
            || self.term_of(self.commit) != Some(self.term)
        {
            return None;
        }
        if self.voters_len() == 1 && self.is_voter() {
            return Some(self.commit);
        }
        let start = self.lease_start_tick?;
        let end = start + self.config.election_timeout_ticks.start - drift;
        (self.ticks < end).then_some(self.commit)
    }

    fn add_read(&mut self, id: ReadId, origin: ReadOrigin) {
        let read = PendingRead {
            id,
            origin,
            index: self.commit,
            round: 0,
        };
        if self.term_of(self.commit) == Some(self.term) {
            if self.voters_len() == 1 && self.is_voter() {
                self.finish_read(read, Some(read.index));
            } else {
                self.reads_pending.push_back(read);
            }
        } else {
            // Until it commits an entry of its own term, a new leader does not know the
            // true commit index.
            self.reads_waiting_commit.push_back(read);
        }
    }

    pub(super) fn start_read_round(&mut self) {
        self.heartbeat_elapsed = 0;
        self.broadcast_heartbeat();
        let round = self.round;
        for read in &mut self.reads_pending {
            if read.round == 0 {
                read.round = round;
            }
        }
    }

    pub(super) fn confirm_round(&mut self, round: u64) {
        if round <= self.confirmed_round {
            return;
        }
        self.confirmed_round = round;
        if let Some(&sent) = self.round_sent_tick.get(&round) {
            self.lease_start_tick = Some(self.lease_start_tick.map_or(sent, |s| s.max(sent)));
        }
        while self
            .reads_pending
            .front()
            .is_some_and(|r| r.round != 0 && r.round <= round)
        {
            if let Some(read) = self.reads_pending.pop_front() {
                self.finish_read(read, Some(read.index));
            }
        }
    }

    pub(super) fn handle_read_index_request(&mut self, from: NodeId, id: ReadId) {
        if self.role != Role::Leader
            || self.reads_waiting_commit.len() + self.reads_pending.len()
                >= self.config.read_pending_max
        {
            self.send_now(from, MessageBody::ReadIndexResponse { id, index: None });
            return;
        }
        self.add_read(id, ReadOrigin::Remote(from));
    }

    /// Answers `None` to forwarded reads the leader has not answered within the longest
    /// election timeout: the request or its answer was lost, or the leader changed (an
    /// answer from an earlier term is dropped), and the caller should retry.
    pub(super) fn expire_forwarded_reads(&mut self) {
        if self.reads_forwarded.is_empty() {
            return;
        }
        let timeout = self.config.election_timeout_ticks.end;
        let ticks = self.ticks;
        let read_states = &mut self.read_states;
        self.reads_forwarded.retain(|id, sent| {
            let keep = ticks - *sent < timeout;
            if !keep {
                read_states.push(ReadState {
                    id: *id,
                    index: None,
                });
            }
            keep
        });
    }

    fn finish_read(&mut self, read: PendingRead, index: Option<LogIndex>) {
        match read.origin {
            ReadOrigin::Local => self.read_states.push(ReadState { id: read.id, index }),
            ReadOrigin::Remote(peer) => {
                self.send_now(peer, MessageBody::ReadIndexResponse { id: read.id, index });
            }
        }
    }

    pub(super) fn fail_reads(&mut self) {
        let reads: Vec<PendingRead> = self
            .reads_waiting_commit
            .drain(..)
            .chain(self.reads_pending.drain(..))
            .collect();
        for read in reads {
            self.finish_read(read, None);
        }
    }
}
