//! Linearizable reads without writing to the log: read index (a quorum round of
//! heartbeats confirms the leadership) and lease reads (a recent round confirms it for a
//! while), and reads forwarded by followers. The heartbeat rounds that confirm both are
//! counted here.
//!
//! Reads are batched on both sides. A leader confirms every read that arrived before a
//! round with that one round. A follower forwards the reads asked between two calls of
//! [`Node::ready`] as one request, named by the first read's id, and the leader's one answer
//! answers them all: the leader's index covers every write committed before the request
//! left, so before any of the reads in it was asked.

use std::collections::{BTreeMap, VecDeque};

use super::{Node, ReadError, Role};
use crate::message::{MessageBody, ReadId};
use crate::types::{LogIndex, NodeId};

/// How many of its latest heartbeat rounds a leader remembers the send tick of: a round
/// confirmed later than that many rounds after it was sent does not extend the lease.
const ROUNDS_REMEMBERED_MAX: usize = 64;

/// The answer to a read-index request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReadState {
    /// The caller's id for the read.
    pub id: ReadId,
    /// Serve the read once the state machine has applied this index; `None` if leadership
    /// could not be confirmed (retry, perhaps at another node).
    pub index: Option<LogIndex>,
}

/// Who asked for a read index: this node's caller, or a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadOrigin {
    Local,
    Remote(NodeId),
}

/// A read index waiting on the leader.
#[derive(Clone, Copy, Debug)]
struct PendingRead {
    id: ReadId,
    origin: ReadOrigin,
    index: LogIndex,
    /// The heartbeat round that must be confirmed by a quorum; 0 until one is assigned.
    round: u64,
}

/// The reads in progress, and the heartbeat rounds that confirm a leader's leadership
/// for them and for its lease.
#[derive(Debug, Default)]
pub(super) struct Reads {
    /// The last heartbeat round sent. Rounds are numbered across terms.
    round: u64,
    /// The tick each of the latest rounds was sent at.
    round_sent_tick: BTreeMap<u64, u64>,
    /// The highest round a quorum answered.
    confirmed_round: u64,
    /// The tick the latest round a quorum answered was sent at: the lease runs from there.
    lease_start_tick: Option<u64>,
    /// Reads on a leader that has not yet committed an entry of its term.
    waiting_commit: VecDeque<PendingRead>,
    /// Reads waiting for a quorum to answer a round sent after they arrived.
    pending: VecDeque<PendingRead>,
    /// Reads asked on a follower since the last batch was forwarded, oldest first.
    unsent: Vec<ReadId>,
    /// Batches of reads forwarded to the leader, by the id of the batch's first read (the
    /// id of the request), with the tick each was sent at.
    forwarded: BTreeMap<ReadId, (u64, Vec<ReadId>)>,
    /// The reads in `unsent` and `forwarded`.
    forwarded_reads: usize,
    /// Answers for this node's caller, handed out in `Ready::reads`.
    answered: Vec<ReadState>,
}

impl Reads {
    /// The reads waiting on this leader.
    fn queued(&self) -> usize {
        self.waiting_commit.len() + self.pending.len()
    }

    /// Whether reads arrived since the last round was sent, and need one of their own.
    pub(super) fn need_round(&self) -> bool {
        self.pending.iter().any(|r| r.round == 0)
    }

    /// Whether there are answers to hand out.
    pub(super) fn has_answers(&self) -> bool {
        !self.answered.is_empty()
    }

    /// Whether reads asked on a follower wait to be forwarded.
    pub(super) fn has_unsent(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Takes the answers to hand out.
    pub(super) fn take_answers(&mut self) -> Vec<ReadState> {
        std::mem::take(&mut self.answered)
    }

    /// The last heartbeat round sent.
    pub(super) fn round(&self) -> u64 {
        self.round
    }

    /// Starts a new heartbeat round, sent at `tick`, and returns its number.
    pub(super) fn next_round(&mut self, tick: u64) -> u64 {
        self.round += 1;
        self.round_sent_tick.insert(self.round, tick);
        while self.round_sent_tick.len() > ROUNDS_REMEMBERED_MAX {
            self.round_sent_tick.pop_first();
        }
        self.round
    }

    /// Ends the lease and forgets when the rounds sent so far left (on stepping down).
    pub(super) fn end_lease(&mut self) {
        self.lease_start_tick = None;
        self.round_sent_tick.clear();
    }

    /// A new term of leadership: no lease, and no round sent before counts.
    pub(super) fn start_term(&mut self) {
        self.end_lease();
        self.confirmed_round = self.round;
    }

    /// The leader committed an entry of its term at `commit`: the reads that waited for
    /// that wait for a round now, at that index.
    pub(super) fn committed_in_term(&mut self, commit: LogIndex) {
        for mut read in self.waiting_commit.drain(..) {
            read.index = commit;
            self.pending.push_back(read);
        }
    }

    /// Gives the reads that have no round yet the last round sent.
    fn assign_round(&mut self) {
        for read in &mut self.pending {
            if read.round == 0 {
                read.round = self.round;
            }
        }
    }

    /// A quorum answered `round`: extends the lease from the round's send tick, and
    /// returns the reads the round confirms, oldest first.
    fn confirm(&mut self, round: u64) -> Vec<PendingRead> {
        if round <= self.confirmed_round {
            return Vec::new();
        }
        self.confirmed_round = round;
        if let Some(&sent) = self.round_sent_tick.get(&round) {
            self.lease_start_tick = Some(self.lease_start_tick.map_or(sent, |s| s.max(sent)));
        }
        let confirmed = self
            .pending
            .iter()
            .take_while(|r| r.round != 0 && r.round <= round)
            .count();
        self.pending.drain(..confirmed).collect()
    }

    /// Answers every read of the forwarded batch `id`, if it is still waited for.
    fn answer_forwarded(&mut self, id: ReadId, index: Option<LogIndex>) {
        if let Some((_, reads)) = self.forwarded.remove(&id) {
            self.forwarded_reads -= reads.len();
            self.answered
                .extend(reads.into_iter().map(|id| ReadState { id, index }));
        }
    }

    /// Answers `None` to the reads of batches sent at least `timeout_ticks` before `tick`.
    fn expire_forwarded(&mut self, tick: u64, timeout_ticks: u64) {
        let expired: Vec<ReadId> = self
            .forwarded
            .iter()
            .filter(|(_, (sent, _))| tick - *sent >= timeout_ticks)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            self.answer_forwarded(id, None);
        }
    }
}

impl Node {
    /// Asks for a linearizable read index. The answer arrives in
    /// [`Ready::reads`](super::Ready::reads) once the leader has confirmed, by a quorum
    /// round of heartbeats, that it was still the leader when the request arrived; the
    /// caller serves the read after applying up to the returned index. On a follower the
    /// request is forwarded to the leader, in one request with every other read asked
    /// before the next [`Node::ready`]; if no answer comes within the longest election
    /// timeout (the request or the answer was lost, or the leader changed), it is answered
    /// with `index: None`. Read ids must not repeat, even across restarts: a late answer to
    /// an earlier read with the same id would be taken for this one's.
    ///
    /// # Errors
    ///
    /// [`ReadError::NoLeader`] if no leader is known, [`ReadError::Backpressure`] if too
    /// many reads are waiting.
    pub fn read_index(&mut self, id: ReadId) -> Result<(), ReadError> {
        match self.role {
            Role::Leader => {
                if self.reads.queued() >= self.config.read_pending_max {
                    return Err(ReadError::Backpressure);
                }
                self.add_read(id, ReadOrigin::Local);
                Ok(())
            }
            _ => {
                if self.leader.is_none() {
                    return Err(ReadError::NoLeader);
                }
                if self.reads.forwarded_reads >= self.config.read_pending_max {
                    return Err(ReadError::Backpressure);
                }
                // Forwarded with the others asked before the next `ready`.
                self.reads.unsent.push(id);
                self.reads.forwarded_reads += 1;
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
            || self.transfer.to.is_some()
            || self.transfer.tried_in_term
            || self.term_of(self.commit) != Some(self.term)
        {
            return None;
        }
        if self.voters_len() == 1 && self.is_voter() {
            return Some(self.commit);
        }
        let start = self.reads.lease_start_tick?;
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
                self.reads.pending.push_back(read);
            }
        } else {
            // Until it commits an entry of its own term, a new leader does not know the
            // true commit index.
            self.reads.waiting_commit.push_back(read);
        }
    }

    pub(super) fn start_read_round(&mut self) {
        self.heartbeat_elapsed = 0;
        self.broadcast_heartbeat();
        self.reads.assign_round();
    }

    /// A quorum answered heartbeat `round`: answers the reads it confirms.
    pub(super) fn confirm_round(&mut self, round: u64) {
        for read in self.reads.confirm(round) {
            self.finish_read(read, Some(read.index));
        }
    }

    /// The leader's answer to a read this node forwarded.
    pub(super) fn handle_read_index_response(&mut self, id: ReadId, index: Option<LogIndex>) {
        // Only answers to reads this node forwarded and has not yet given up on.
        self.reads.answer_forwarded(id, index);
    }

    pub(super) fn handle_read_index_request(&mut self, from: NodeId, id: ReadId) {
        if self.role != Role::Leader || self.reads.queued() >= self.config.read_pending_max {
            self.send_now(from, MessageBody::ReadIndexResponse { id, index: None });
            return;
        }
        self.add_read(id, ReadOrigin::Remote(from));
    }

    /// Forwards the reads asked since the last call to the leader, as one request named by
    /// the first read's id; answers them `None` if this node knows no leader to ask any
    /// more (or has become the leader: it was not when they were asked).
    pub(super) fn forward_reads(&mut self) {
        if self.reads.unsent.is_empty() {
            return;
        }
        let reads = std::mem::take(&mut self.reads.unsent);
        let id = reads[0];
        if self.reads.forwarded.contains_key(&id) {
            // A caller reused a read id: the older batch is not left counted for ever.
            self.reads.answer_forwarded(id, None);
        }
        self.reads.forwarded.insert(id, (self.ticks, reads));
        match self.leader.filter(|_| self.role != Role::Leader) {
            Some(leader) => self.send_now(leader, MessageBody::ReadIndex { id }),
            None => self.reads.answer_forwarded(id, None),
        }
    }

    /// Answers `None` to forwarded reads the leader has not answered within the longest
    /// election timeout: the request or its answer was lost, or the leader changed (an
    /// answer from an earlier term is dropped), and the caller should retry.
    pub(super) fn expire_forwarded_reads(&mut self) {
        self.reads
            .expire_forwarded(self.ticks, self.config.election_timeout_ticks.end);
    }

    fn finish_read(&mut self, read: PendingRead, index: Option<LogIndex>) {
        match read.origin {
            ReadOrigin::Local => self.reads.answered.push(ReadState { id: read.id, index }),
            ReadOrigin::Remote(peer) => {
                if let Some(at) = index {
                    // The follower serves the read once it has applied `at`: it learns
                    // the commit index that far before the answer, not at the next tick.
                    if let Some(pr) = self.progress.get_mut(&peer) {
                        pr.commit_wanted = pr.commit_wanted.max(at);
                    }
                    self.send_commit(peer, false);
                }
                self.send_now(peer, MessageBody::ReadIndexResponse { id: read.id, index });
            }
        }
    }

    /// Answers `None` to every read waiting on this node, which is no longer (or not yet)
    /// a leader that can confirm them.
    pub(super) fn fail_reads(&mut self) {
        let reads: Vec<PendingRead> = self
            .reads
            .waiting_commit
            .drain(..)
            .chain(self.reads.pending.drain(..))
            .collect();
        for read in reads {
            self.finish_read(read, None);
        }
    }
}
