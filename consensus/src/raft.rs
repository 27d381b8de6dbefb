//! The Raft node: a state machine that does no I/O.
//!
//! See the crate documentation for a guided tour. In short, a [`Node`] takes inputs
//! ([`Node::tick`], [`Node::step`], [`Node::propose`], [`Node::read_index`]) and collects
//! what it wants done; [`Node::ready`] hands that out as a [`Ready`]; the caller makes the
//! store durable, acknowledges with [`Node::persisted`], sends the messages and applies the
//! committed entries.
//!
//! # Persistence before use
//!
//! Every write to the store gets a sequence number. A message whose truth depends on a
//! write (a vote grant, an append acknowledgement, anything carrying a newly raised term)
//! is held inside the node until the caller has acknowledged a [`PersistToken`] covering
//! that write, so it cannot leave too early whatever order the caller does things in. Only
//! a leader's own replication messages (appends, heartbeats, snapshot chunks) leave at
//! once: the leader's term is already durable (it could not have won otherwise), and it
//! counts its own copy of an entry towards the commit only once that copy is durable, so
//! the leader's sync runs in parallel with its followers'.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use bytes::Bytes;
use synod_quorum::{MajorityConfig, Outcome, Quorum};

use crate::config::Config;
use crate::membership::{Membership, MembershipError};
use crate::message::{AppendResult, Message, MessageBody, ReadId};
use crate::progress::{Progress, ProgressState};
use crate::rng::SplitMix64;
use crate::storage::{HardState, LogStore, Snapshot, SnapshotMeta};
use crate::types::{Entry, LogIndex, NodeId, Payload, Term, next_term};

/// The highest term a node accepts from the network (2^63): more elections than could
/// ever happen, with room for the node's own elections after it.
pub const TERM_MAX: Term = Term::new(1 << 63);

/// The highest log index a node accepts from the network (2^63): more entries than any log
/// could ever hold, with room for the node's own appends and index arithmetic after it.
pub const INDEX_MAX: LogIndex = LogIndex(1 << 63);

/// The role a node plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks whether it could win an election, without raising its term.
    PreCandidate,
    /// Campaigns in a new term.
    Candidate,
    /// Leads its term: the only node that appends new entries.
    Leader,
}

/// Acknowledges a persistence request: hand it back to [`Node::persisted`] once everything
/// written to the store before the [`Ready`] that carried it is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PersistToken(u64);

/// The answer to a read-index request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's id for the read.
    pub id: ReadId,
    /// Serve the read once the state machine has applied this index; `None` if leadership
    /// could not be confirmed (retry, perhaps at another node).
    pub index: Option<LogIndex>,
}

/// Everything the node wants done, handed out by [`Node::ready`].
///
/// Handle it in this order: persist (if [`Ready::persist`] is set, make the store durable
/// and call [`Node::persisted`]; this may be batched with later readies), send
/// [`Ready::messages`] (they are safe to send at once), restore [`Ready::snapshot`] into the
/// state machine if set, apply [`Ready::committed`] in order, and serve [`Ready::reads`]
/// once their index is applied.
#[derive(Debug, Default)]
pub struct Ready {
    /// Messages to send. Each carries its recipient.
    pub messages: Vec<Message>,
    /// Set when the store has writes that are not yet acknowledged as durable.
    pub persist: Option<PersistToken>,
    /// A snapshot to load into the state machine before applying `committed`: one received
    /// from the leader, or the store's snapshot when the node starts.
    pub snapshot: Option<Snapshot>,
    /// Committed entries to apply, in log order, continuing exactly where the previous
    /// ready (or `snapshot`) left off.
    pub committed: Vec<Entry>,
    /// Confirmed read indexes.
    pub reads: Vec<ReadState>,
}

impl Ready {
    /// Whether there is nothing to do.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.persist.is_none()
            && self.snapshot.is_none()
            && self.committed.is_empty()
            && self.reads.is_empty()
    }
}

/// Why a proposal was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProposeError {
    /// Only the leader accepts proposals; `leader` is the leader this node knows of, if any.
    NotLeader {
        /// Where to retry.
        leader: Option<NodeId>,
    },
    /// The leader is handing over to another node.
    TransferInProgress,
    /// Too many entries are uncommitted (`uncommitted_entries_max`); retry later.
    Backpressure,
    /// A membership change is still uncommitted, or the leader has not yet committed an
    /// entry of its term.
    MembershipChangePending,
    /// The new membership is not acceptable.
    Membership(MembershipError),
    /// The command is longer than the configured `entry_bytes_max`.
    TooLarge {
        /// The command's length.
        bytes: u64,
        /// The limit.
        max: u64,
    },
}

impl fmt::Display for ProposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProposeError::NotLeader { leader: Some(l) } => {
                write!(f, "not the leader; the leader is {l}")
            }
            ProposeError::NotLeader { leader: None } => {
                write!(f, "not the leader; no leader is known")
            }
            ProposeError::TransferInProgress => write!(f, "leadership transfer in progress"),
            ProposeError::Backpressure => write!(f, "too many uncommitted entries"),
            ProposeError::MembershipChangePending => {
                write!(f, "a membership change is still in progress")
            }
            ProposeError::Membership(e) => write!(f, "membership change refused: {e}"),
            ProposeError::TooLarge { bytes, max } => write!(
                f,
                "a command of {bytes} bytes is longer than entry_bytes_max ({max} bytes)"
            ),
        }
    }
}

impl std::error::Error for ProposeError {}

/// Why a read request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadError {
    /// No leader is known to forward the read to.
    NoLeader,
    /// Too many reads are waiting (`read_pending_max`).
    Backpressure,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::NoLeader => write!(f, "no leader known"),
            ReadError::Backpressure => write!(f, "too many reads waiting"),
        }
    }
}

impl std::error::Error for ReadError {}

/// Why a leadership transfer was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferError {
    /// Only the leader can transfer leadership.
    NotLeader,
    /// The target is not a voter other than this node.
    NotAVoter(NodeId),
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::NotLeader => write!(f, "only the leader can transfer leadership"),
            TransferError::NotAVoter(id) => write!(f, "{id} is not another voter"),
        }
    }
}

impl std::error::Error for TransferError {}

/// Why the log could not be compacted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompactError {
    /// The snapshot index is above what has been applied.
    NotApplied {
        /// The requested index.
        index: LogIndex,
        /// The applied index.
        applied: LogIndex,
    },
    /// The index is already compacted.
    AlreadyCompacted(LogIndex),
}

impl fmt::Display for CompactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompactError::NotApplied { index, applied } => write!(
                f,
                "cannot snapshot at {index}: only {applied} has been applied"
            ),
            CompactError::AlreadyCompacted(index) => write!(f, "{index} is already compacted"),
        }
    }
}

impl std::error::Error for CompactError {}

/// Who asked for a read index: this node's caller, or a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadOrigin {
    Local,
    Remote(NodeId),
}

#[derive(Clone, Copy, Debug)]
struct PendingRead {
    id: ReadId,
    origin: ReadOrigin,
    index: LogIndex,
    /// The heartbeat round that must be confirmed by a quorum; 0 until one is assigned.
    round: u64,
}

/// A snapshot being received in chunks.
#[derive(Debug)]
struct IncomingSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// A Raft node over the log store `S`. See the module and crate documentation.
#[derive(Debug)]
pub struct Node<S: LogStore> {
    config: Config,
    store: S,
    rng: SplitMix64,

    term: Term,
    vote: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,

    membership: Membership,
    /// The voters of `membership`, as the quorum that counts votes and acknowledgements.
    voters: MajorityConfig,
    membership_index: LogIndex,
    /// Membership entries above the snapshot, by index.
    membership_log: BTreeMap<LogIndex, Membership>,

    commit: LogIndex,
    applied: LogIndex,

    ticks: u64,
    election_elapsed: u64,
    heartbeat_elapsed: u64,
    election_timeout: u64,
    /// Vote requests are ignored until this tick after a start (the lease a crashed
    /// follower must still honour).
    lease_guard_until_tick: u64,

    votes: BTreeMap<NodeId, bool>,
    self_vote_seq: u64,

    progress: BTreeMap<NodeId, Progress>,
    transfer: Option<(NodeId, u64)>,
    /// Set once this leader has sent a `TimeoutNow` in its term: no more lease reads in it.
    transfer_sent: bool,
    needs_broadcast: bool,

    round: u64,
    round_sent_tick: BTreeMap<u64, u64>,
    confirmed_round: u64,
    lease_start_tick: Option<u64>,
    reads_waiting_commit: VecDeque<PendingRead>,
    reads_pending: VecDeque<PendingRead>,
    /// Reads forwarded to the leader, with the tick each was sent at.
    reads_forwarded: BTreeMap<ReadId, u64>,
    read_states: Vec<ReadState>,

    write_seq: u64,
    requested_seq: u64,
    durable_seq: u64,
    marks: VecDeque<(u64, LogIndex)>,
    durable_index: LogIndex,
    held: VecDeque<(u64, Message)>,
    outbox: Vec<Message>,

    incoming_snapshot: Option<IncomingSnapshot>,
    restore: Option<Snapshot>,

    /// How many times the log lost entries from its end (see [`Node::truncations`]).
    truncations: u64,
    /// The index after which the latest of those cut the log.
    truncated_after: Option<LogIndex>,
}

impl<S: LogStore> Node<S> {
    /// A node over `store`, which must hold only durable state (a new store, or one
    /// recovered after a restart). The node starts as a follower; if the store has a
    /// snapshot, the first [`Ready`] hands it out for the state machine to load.
    ///
    /// # Panics
    ///
    /// Panics if the store's term is above [`TERM_MAX`]: the store is corrupt (a store
    /// that reads from disk should refuse such a term when it opens, as
    /// `WalLogStore` does).
    pub fn new(config: Config, store: S) -> Node<S> {
        let hard = store.hard_state();
        assert!(hard.term <= TERM_MAX, "corrupt store: term {}", hard.term);
        let snapshot = store.snapshot().clone();
        let mut membership_log = BTreeMap::new();
        let mut index = store.first_index();
        let last = store.last_index();
        let mut batch = Vec::new();
        while index <= last {
            batch.clear();
            store.entries(index, last, 1 << 20, &mut batch);
            if batch.is_empty() {
                break;
            }
            for entry in &batch {
                if let Payload::Membership(m) = &entry.payload {
                    membership_log.insert(entry.index, m.clone());
                }
            }
            index = batch[batch.len() - 1].index.next();
        }
        let (membership_index, membership) = match membership_log.iter().next_back() {
            Some((i, m)) => (*i, m.clone()),
            None => (snapshot.meta.index, snapshot.meta.membership.clone()),
        };
        // The id is mixed in so that nodes given the same seed still draw different
        // timeouts (identical timeouts split every vote).
        let mut rng =
            SplitMix64::new(config.seed ^ config.id.get().wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let election_timeout = rng.range(
            config.election_timeout_ticks.start,
            config.election_timeout_ticks.end,
        );
        let lease_guard_until_tick = if config.check_quorum {
            config.election_timeout_ticks.start
        } else {
            0
        };
        let restore = (snapshot.meta.index > LogIndex::ZERO).then_some(snapshot.clone());
        let voters = majority(&membership);
        Node {
            voters,
            term: hard.term,
            vote: hard.vote,
            role: Role::Follower,
            leader: None,
            membership,
            membership_index,
            membership_log,
            commit: snapshot.meta.index,
            applied: snapshot.meta.index,
            ticks: 0,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            election_timeout,
            lease_guard_until_tick,
            votes: BTreeMap::new(),
            self_vote_seq: 0,
            progress: BTreeMap::new(),
            transfer: None,
            transfer_sent: false,
            needs_broadcast: false,
            round: 0,
            round_sent_tick: BTreeMap::new(),
            confirmed_round: 0,
            lease_start_tick: None,
            reads_waiting_commit: VecDeque::new(),
            reads_pending: VecDeque::new(),
            reads_forwarded: BTreeMap::new(),
            read_states: Vec::new(),
            write_seq: 0,
            requested_seq: 0,
            durable_seq: 0,
            marks: VecDeque::new(),
            durable_index: last,
            held: VecDeque::new(),
            outbox: Vec::new(),
            incoming_snapshot: None,
            restore,
            truncations: 0,
            truncated_after: None,
            rng,
            store,
            config,
        }
    }

    // ----- Observers -------------------------------------------------------------------

    /// This node's id.
    #[must_use]
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current term (possibly not yet durable).
    #[must_use]
    pub fn term(&self) -> Term {
        self.term
    }

    /// The vote cast in the current term.
    #[must_use]
    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }

    /// The current role.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    /// The leader this node knows of in its current term.
    #[must_use]
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The commit index (the High-Water Mark).
    #[must_use]
    pub fn commit_index(&self) -> LogIndex {
        self.commit
    }

    /// The last index handed out for applying.
    #[must_use]
    pub fn applied_index(&self) -> LogIndex {
        self.applied
    }

    /// The index of the last entry in the log (possibly not yet durable).
    #[must_use]
    pub fn last_index(&self) -> LogIndex {
        self.store.last_index()
    }

    /// The highest index known to be durable in this node's log.
    #[must_use]
    pub fn durable_index(&self) -> LogIndex {
        self.durable_index
    }

    /// The membership in effect (the newest in the log, committed or not).
    #[must_use]
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Ticks since this node last heard from its leader (or, on a leader, since its last
    /// quorum check). A follower read from a node whose figure is large may be stale; see
    /// [`crate::reads`] (Follower Reads).
    #[must_use]
    pub fn ticks_since_leader_contact(&self) -> u64 {
        self.election_elapsed
    }

    /// The match index the leader knows for `peer`, or `None` if this node is not the
    /// leader or `peer` is not a member.
    #[must_use]
    pub fn match_index(&self, peer: NodeId) -> Option<LogIndex> {
        if self.role != Role::Leader {
            return None;
        }
        if peer == self.config.id {
            return Some(self.durable_index);
        }
        self.progress.get(&peer).map(|p| p.match_index)
    }

    /// How many times since it was created this node has cut entries off the end of its
    /// log: a suffix that conflicted with its leader's log, or the whole log replaced by a
    /// snapshot from the leader. Otherwise a node only appends at the end of its log and
    /// compacts at its start, so an observer that mirrors the log (an invariant checker such
    /// as [`invariants::SafetyChecker`](crate::invariants::SafetyChecker), a change feed)
    /// need only read what lies past the last index it saw, unless this count has moved;
    /// [`Node::truncated_after`] then says from where to read again.
    #[must_use]
    pub fn truncations(&self) -> u64 {
        self.truncations
    }

    /// The index after which the latest cut counted by [`Node::truncations`] discarded the
    /// log (for a snapshot from the leader, the snapshot's index), or `None` if the log has
    /// not been cut since the node was created.
    #[must_use]
    pub fn truncated_after(&self) -> Option<LogIndex> {
        self.truncated_after
    }

    /// The log store.
    #[must_use]
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The log store, mutably: for making it durable (for example
    /// [`MemLogStore::sync`](crate::MemLogStore::sync)) and nothing else. Writing entries
    /// through it behind the node's back breaks the node.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Whether [`Node::ready`] has something to hand out.
    #[must_use]
    pub fn has_ready(&self) -> bool {
        !self.outbox.is_empty()
            || self.needs_broadcast
            || self.write_seq > self.requested_seq
            || self.restore.is_some()
            || !self.read_states.is_empty()
            || self.reads_pending.iter().any(|r| r.round == 0)
            || self.applied < self.commit.min(self.durable_index)
    }

    // ----- Inputs ----------------------------------------------------------------------

    /// Advances the node's logical clock by one tick: drives election timeouts, heartbeats
    /// and check-quorum.
    pub fn tick(&mut self) {
        self.ticks += 1;
        self.election_elapsed += 1;
        self.expire_forwarded_reads();
        if self.role == Role::Leader {
            self.heartbeat_elapsed += 1;
            if self.election_elapsed >= self.config.election_timeout_ticks.start {
                self.election_elapsed = 0;
                self.transfer = None;
                if self.config.check_quorum && !self.quorum_active() {
                    self.become_follower(self.term, None);
                    return;
                }
            }
            if self.heartbeat_elapsed >= self.config.heartbeat_interval_ticks {
                self.heartbeat_elapsed = 0;
                self.broadcast_heartbeat();
            }
        } else if self.election_elapsed >= self.election_timeout && self.is_voter() {
            self.campaign(false);
        }
    }

    /// Handles a message from another node. Messages that are malformed (a term above
    /// [`TERM_MAX`], an index above [`INDEX_MAX`], entries that do not follow on), stale or
    /// not for this node are ignored; none can make the node panic.
    pub fn step(&mut self, msg: Message) {
        if msg.to != self.config.id || msg.from == self.config.id || !self.valid(&msg) {
            return;
        }
        if msg.term > self.term {
            match &msg.body {
                // A pre-vote neither raises the receiver's term nor the candidate's.
                MessageBody::PreVote { .. } | MessageBody::PreVoteResponse { granted: true } => {}
                MessageBody::Vote { transfer, .. } if !transfer && self.in_lease() => {
                    // A follower that hears from a live leader ignores disruptive
                    // elections (check-quorum); the leader will step down by itself if it
                    // has really lost its quorum.
                    return;
                }
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Snapshot { .. } => {
                    self.become_follower(msg.term, Some(msg.from));
                }
                _ => self.become_follower(msg.term, None),
            }
        } else if msg.term < self.term {
            match &msg.body {
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Snapshot { .. } => {
                    // Tell a deposed leader about the newer term so that it steps down.
                    self.send(
                        msg.from,
                        MessageBody::AppendResponse {
                            result: AppendResult::Accepted {
                                match_index: LogIndex::ZERO,
                            },
                        },
                    );
                }
                MessageBody::PreVote { .. } => {
                    self.send(msg.from, MessageBody::PreVoteResponse { granted: false });
                }
                MessageBody::Vote { .. } => {
                    self.send(msg.from, MessageBody::VoteResponse { granted: false });
                }
                _ => {}
            }
            return;
        }
        let from = msg.from;
        let term = msg.term;
        match msg.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => self.handle_pre_vote(from, term, last_index, last_term),
            MessageBody::PreVoteResponse { granted } => {
                if self.role == Role::PreCandidate
                    && (term == next_term(self.term) || (!granted && term == self.term))
                {
                    self.votes.insert(from, granted);
                    self.tally_votes();
                }
            }
            MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => self.handle_vote(from, last_index, last_term),
            MessageBody::VoteResponse { granted } => {
                if self.role == Role::Candidate {
                    self.votes.insert(from, granted);
                    self.tally_votes();
                }
            }
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                self.follow(from);
                self.handle_append(from, prev_index, prev_term, entries, commit);
            }
            MessageBody::AppendResponse { result } => self.handle_append_response(from, result),
            MessageBody::Heartbeat { commit, round } => {
                self.follow(from);
                let commit = commit.min(self.store.last_index());
                if commit > self.commit {
                    self.commit = commit;
                }
                let last_index = self.store.last_index();
                self.send(from, MessageBody::HeartbeatResponse { round, last_index });
            }
            MessageBody::HeartbeatResponse { round, last_index } => {
                self.handle_heartbeat_response(from, round, last_index);
            }
            MessageBody::ReadIndex { id } => self.handle_read_index_request(from, id),
            MessageBody::ReadIndexResponse { id, index } => {
                // Only answers to reads this node forwarded and has not yet given up on.
                if self.reads_forwarded.remove(&id).is_some() {
                    self.read_states.push(ReadState { id, index });
                }
            }
            MessageBody::Snapshot {
                meta,
                offset,
                data,
                done,
            } => {
                self.follow(from);
                self.handle_snapshot(from, meta, offset, &data, done);
            }
            MessageBody::SnapshotResponse {
                index,
                next_offset,
                done,
            } => self.handle_snapshot_response(from, index, next_offset, done),
            MessageBody::TimeoutNow => {
                if self.role != Role::Leader && self.is_voter() {
                    self.campaign_now(true);
                }
            }
        }
    }

    /// Proposes a command. On the leader, appends it and returns its index; the command is
    /// applied once that index is handed out in [`Ready::committed`] with this node's term
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

    /// Asks for a linearizable read index. The answer arrives in [`Ready::reads`] once
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

    /// Hands leadership to `to`: the leader stops taking proposals, brings `to` up to date
    /// and tells it to campaign at once. Abandoned after an election timeout.
    ///
    /// # Errors
    ///
    /// [`TransferError::NotLeader`] or [`TransferError::NotAVoter`].
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader);
        }
        if to == self.config.id || !self.membership.is_voter(to) {
            return Err(TransferError::NotAVoter(to));
        }
        self.transfer = Some((to, self.ticks));
        self.election_elapsed = 0;
        let caught_up = self
            .progress
            .get(&to)
            .is_some_and(|p| p.match_index == self.store.last_index());
        if caught_up {
            self.transfer_sent = true;
            self.send_now(to, MessageBody::TimeoutNow);
        } else {
            self.send_append(to, true);
        }
        Ok(())
    }

    /// Takes a snapshot at `index` (at most the applied index) with the state machine's
    /// serialized state, and purges the log up to it (the Low-Water Mark moves).
    ///
    /// # Errors
    ///
    /// [`CompactError::NotApplied`] above the applied index,
    /// [`CompactError::AlreadyCompacted`] at or below the current snapshot.
    pub fn compact(&mut self, index: LogIndex, data: Bytes) -> Result<(), CompactError> {
        if index > self.applied {
            return Err(CompactError::NotApplied {
                index,
                applied: self.applied,
            });
        }
        let snapshot_index = self.store.snapshot().meta.index;
        if index <= snapshot_index {
            return Err(CompactError::AlreadyCompacted(index));
        }
        let term = self
            .term_of(index)
            .ok_or(CompactError::AlreadyCompacted(index))?;
        let membership = self.membership_log.range(..=index).next_back().map_or_else(
            || self.store.snapshot().meta.membership.clone(),
            |(_, m)| m.clone(),
        );
        self.store.compact(Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                membership,
            },
            data,
        });
        self.membership_log = self.membership_log.split_off(&index.next());
        Ok(())
    }

    // ----- Output ----------------------------------------------------------------------

    /// Takes everything the node wants done. See [`Ready`] for the order to handle it in.
    pub fn ready(&mut self) -> Ready {
        if self.needs_broadcast {
            self.needs_broadcast = false;
            if self.role == Role::Leader {
                let peers: Vec<NodeId> = self.progress.keys().copied().collect();
                for peer in peers {
                    self.send_appends(peer);
                }
            }
        }
        if self.role == Role::Leader && self.reads_pending.iter().any(|r| r.round == 0) {
            self.start_read_round();
        }
        let persist = (self.write_seq > self.requested_seq).then(|| {
            self.requested_seq = self.write_seq;
            self.marks
                .push_back((self.write_seq, self.store.last_index()));
            PersistToken(self.write_seq)
        });
        let snapshot = self.restore.take();
        let hi = self.commit.min(self.durable_index).min(LogIndex(
            self.applied
                .0
                .saturating_add(self.config.apply_entries_max as u64),
        ));
        let mut committed = Vec::new();
        if hi > self.applied {
            self.store
                .entries(self.applied.next(), hi, u64::MAX, &mut committed);
            assert_eq!(
                committed.last().map(|e| e.index),
                Some(hi),
                "committed entries must be in the log"
            );
            self.applied = hi;
        }
        Ready {
            messages: std::mem::take(&mut self.outbox),
            persist,
            snapshot,
            committed,
            reads: std::mem::take(&mut self.read_states),
        }
    }

    /// Acknowledges that everything written to the store before the [`Ready`] that
    /// carried `token` is durable. Releases the messages that waited for it and lets the
    /// leader count its own copy of those entries.
    ///
    /// # Panics
    ///
    /// Panics if `token` was not handed out by this node.
    pub fn persisted(&mut self, token: PersistToken) {
        assert!(
            token.0 <= self.requested_seq,
            "persisted: token {} was never handed out",
            token.0
        );
        if token.0 <= self.durable_seq {
            return;
        }
        self.durable_seq = token.0;
        while let Some(&(seq, index)) = self.marks.front() {
            if seq > token.0 {
                break;
            }
            self.marks.pop_front();
            self.durable_index = self.durable_index.max(index);
        }
        while self.held.front().is_some_and(|(seq, _)| *seq <= token.0) {
            if let Some((_, msg)) = self.held.pop_front() {
                self.outbox.push(msg);
            }
        }
        if self.role == Role::Leader && self.maybe_commit() {
            self.needs_broadcast = true;
        } else if self.role == Role::Candidate {
            self.tally_votes();
        }
    }

    // ----- Elections -------------------------------------------------------------------

    fn is_voter(&self) -> bool {
        self.membership.is_voter(self.config.id)
    }

    fn voters_len(&self) -> usize {
        self.membership.voters().len()
    }

    fn in_lease(&self) -> bool {
        if !self.config.check_quorum {
            return false;
        }
        if self.ticks < self.lease_guard_until_tick {
            return true;
        }
        self.leader.is_some() && self.election_elapsed < self.config.election_timeout_ticks.start
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.election_timeout = self.rng.range(
            self.config.election_timeout_ticks.start,
            self.config.election_timeout_ticks.end,
        );
    }

    fn campaign(&mut self, transfer: bool) {
        if self.config.pre_vote && !transfer {
            self.role = Role::PreCandidate;
            self.leader = None;
            self.votes.clear();
            self.reset_election_timer();
            self.fail_reads();
            self.votes.insert(self.config.id, true);
            let (last_index, last_term) = self.last_entry();
            let ask = next_term(self.term);
            for voter in self.other_voters() {
                self.outbox.push(Message {
                    from: self.config.id,
                    to: voter,
                    term: ask,
                    body: MessageBody::PreVote {
                        last_index,
                        last_term,
                    },
                });
            }
            self.tally_votes();
        } else {
            self.campaign_now(transfer);
        }
    }

    fn campaign_now(&mut self, transfer: bool) {
        let term = next_term(self.term);
        self.set_term(term, Some(self.config.id));
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.reset_election_timer();
        self.fail_reads();
        self.self_vote_seq = self.write_seq;
        let (last_index, last_term) = self.last_entry();
        for voter in self.other_voters() {
            self.send(
                voter,
                MessageBody::Vote {
                    last_index,
                    last_term,
                    transfer,
                },
            );
        }
        self.tally_votes();
    }

    fn tally_votes(&mut self) {
        // A candidate counts its own vote only once it is durable, so that a crash cannot
        // leave it leader of a term it has forgotten.
        let self_durable = self.role == Role::PreCandidate
            || self.durable_seq >= self.self_vote_seq
            || self.config.bugs.skip_vote_persistence;
        let id = self.config.id;
        let outcome = self.voters.tally(|voter| {
            if voter == id {
                self_durable.then_some(true)
            } else {
                self.votes.get(&voter).copied()
            }
        });
        match outcome {
            Outcome::Won => match self.role {
                Role::PreCandidate => self.campaign_now(false),
                Role::Candidate => self.become_leader(),
                _ => {}
            },
            Outcome::Lost(_) => self.become_follower(self.term, None),
            Outcome::Pending => {}
        }
    }

    fn handle_pre_vote(&mut self, from: NodeId, term: Term, last_index: LogIndex, last_term: Term) {
        let granted =
            term > self.term && !self.in_lease() && self.log_up_to_date(last_index, last_term);
        let reply_term = if granted { term } else { self.term };
        self.outbox.push(Message {
            from: self.config.id,
            to: from,
            term: reply_term,
            body: MessageBody::PreVoteResponse { granted },
        });
    }

    fn handle_vote(&mut self, from: NodeId, last_index: LogIndex, last_term: Term) {
        let can_vote = self.vote.is_none_or(|v| v == from) && self.leader.is_none();
        let granted = can_vote && self.log_up_to_date(last_index, last_term);
        if granted {
            self.reset_election_timer();
            if self.vote != Some(from) {
                self.set_term(self.term, Some(from));
            }
        }
        if self.config.bugs.skip_vote_persistence {
            self.send_now(from, MessageBody::VoteResponse { granted });
        } else {
            self.send(from, MessageBody::VoteResponse { granted });
        }
    }

    /// Raft's up-to-date check: a candidate's log must end in a later term, or the same
    /// term and at least as far, for this node to vote for it.
    fn log_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        let (our_index, our_term) = self.last_entry();
        (last_term, last_index) >= (our_term, our_index)
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term || self.role != Role::Follower {
            self.reset_election_timer();
        }
        if term > self.term {
            self.set_term(term, None);
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.progress.clear();
        self.transfer = None;
        self.lease_start_tick = None;
        self.round_sent_tick.clear();
        self.fail_reads();
    }

    /// Hears from the leader of the current term.
    fn follow(&mut self, leader: NodeId) {
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(leader));
        }
        self.leader = Some(leader);
        self.election_elapsed = 0;
    }

    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.votes.clear();
        self.transfer = None;
        self.transfer_sent = false;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.lease_start_tick = None;
        self.round_sent_tick.clear();
        self.confirmed_round = self.round;
        self.progress.clear();
        self.sync_progress();
        // The no-op lets the new leader commit, and so learn the commit index of,
        // everything its predecessors left uncommitted (the paper's section 8).
        self.append_local(Payload::Noop);
        self.needs_broadcast = true;
    }

    fn sync_progress(&mut self) {
        let next = self.store.last_index().next();
        let ticks = self.ticks;
        let members: Vec<NodeId> = self.membership.members().collect();
        self.progress.retain(|id, _| members.contains(id));
        for id in members {
            if id != self.config.id {
                self.progress
                    .entry(id)
                    .or_insert_with(|| Progress::new(next, ticks));
            }
        }
    }

    fn quorum_active(&mut self) -> bool {
        let id = self.config.id;
        let progress = &self.progress;
        let active = self.voters.tally(|voter| {
            Some(voter == id || progress.get(&voter).is_some_and(|p| p.recent_active))
        });
        for p in self.progress.values_mut() {
            p.recent_active = false;
        }
        active == Outcome::Won
    }

    // ----- Log -------------------------------------------------------------------------

    fn term_of(&self, index: LogIndex) -> Option<Term> {
        self.store.term(index)
    }

    fn last_entry(&self) -> (LogIndex, Term) {
        let last = self.store.last_index();
        (last, self.term_of(last).unwrap_or(Term::ZERO))
    }

    fn other_voters(&self) -> Vec<NodeId> {
        self.membership
            .voters()
            .iter()
            .copied()
            .filter(|v| *v != self.config.id)
            .collect()
    }

    fn set_term(&mut self, term: Term, vote: Option<NodeId>) {
        self.term = term;
        self.vote = vote;
        let stored_vote = if self.config.bugs.skip_vote_persistence {
            None
        } else {
            vote
        };
        self.store.set_hard_state(HardState {
            term,
            vote: stored_vote,
        });
        self.write_seq += 1;
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

    fn append_local(&mut self, payload: Payload) -> LogIndex {
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

    fn append_entries(&mut self, entries: &[Entry]) {
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

    fn truncate_after(&mut self, index: LogIndex) {
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

    // ----- Replication: leader ---------------------------------------------------------

    /// Sends `peer` what it lacks, within flow control. Returns whether it sent anything.
    fn send_append(&mut self, peer: NodeId, allow_empty: bool) -> bool {
        let last = self.store.last_index();
        let commit = self.commit;
        let Some(pr) = self.progress.get(&peer) else {
            return false;
        };
        match pr.state {
            ProgressState::Snapshot { .. } | ProgressState::Probe { paused: true } => return false,
            ProgressState::Replicate if pr.in_flight.len() >= self.config.in_flight_max => {
                return false;
            }
            _ => {}
        }
        let next = pr.next_index;
        let prev_index = next.prev();
        let Some(prev_term) = self.term_of(prev_index) else {
            self.start_snapshot(peer);
            return true;
        };
        let mut entries = Vec::new();
        if next <= last {
            self.store
                .entries(next, last, self.config.append_bytes_max, &mut entries);
            if entries.is_empty() {
                // The entries were compacted between the term lookup and now.
                self.start_snapshot(peer);
                return true;
            }
        }
        let probing = matches!(pr.state, ProgressState::Probe { .. });
        if entries.is_empty() && !allow_empty && !probing {
            return false;
        }
        let msg_last = prev_index.plus(entries.len() as u64);
        let pr = self
            .progress
            .get_mut(&peer)
            .expect("progress checked above");
        pr.commit_sent = pr.commit_sent.max(commit.min(msg_last));
        match pr.state {
            ProgressState::Probe { .. } => pr.state = ProgressState::Probe { paused: true },
            ProgressState::Replicate if !entries.is_empty() => {
                pr.next_index = msg_last.next();
                pr.in_flight.push_back(msg_last);
            }
            _ => {}
        }
        let sent_entries = !entries.is_empty();
        self.send_now(
            peer,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            },
        );
        sent_entries || probing || allow_empty
    }

    /// Fills the follower's pipeline; if there was nothing to send, tells it about a
    /// commit index it has not heard of yet.
    fn send_appends(&mut self, peer: NodeId) {
        let mut sent = false;
        while self.send_append(peer, false) {
            sent = true;
            let pipelined = self
                .progress
                .get(&peer)
                .is_some_and(|p| p.state == ProgressState::Replicate);
            if !pipelined {
                break;
            }
        }
        if !sent {
            self.send_commit(peer);
        }
    }

    /// An empty append at the follower's match index, carrying the commit index: it
    /// cannot be rejected, whatever else is in flight.
    fn send_commit(&mut self, peer: NodeId) {
        let commit = self.commit;
        let Some(pr) = self.progress.get(&peer) else {
            return;
        };
        let target = commit.min(pr.match_index);
        if pr.state != ProgressState::Replicate || pr.commit_sent >= target {
            return;
        }
        let prev_index = pr.match_index;
        let Some(prev_term) = self.term_of(prev_index) else {
            return;
        };
        if let Some(pr) = self.progress.get_mut(&peer) {
            pr.commit_sent = target;
        }
        self.send_now(
            peer,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries: Vec::new(),
                commit,
            },
        );
    }

    fn handle_append_response(&mut self, from: NodeId, result: AppendResult) {
        if self.role != Role::Leader {
            return;
        }
        let ticks = self.ticks;
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        match result {
            AppendResult::Accepted { match_index } => {
                if match_index > self.store.last_index() {
                    return;
                }
                let advanced = pr.accept(match_index, ticks);
                match pr.state {
                    ProgressState::Probe { .. } => {
                        pr.state = ProgressState::Replicate;
                        pr.next_index = pr.match_index.next();
                        pr.in_flight.clear();
                    }
                    ProgressState::Snapshot { index, .. } if pr.match_index >= index => {
                        pr.probe(pr.match_index.next());
                    }
                    _ => {}
                }
                if advanced && self.maybe_commit() {
                    self.needs_broadcast = true;
                }
                self.send_appends(from);
                self.maybe_send_timeout_now(from);
            }
            AppendResult::Rejected {
                rejected_prev,
                hint_index,
                hint_term,
            } => {
                let stale = match pr.state {
                    ProgressState::Replicate => rejected_prev <= pr.match_index,
                    ProgressState::Probe { .. } => rejected_prev != pr.next_index.prev(),
                    ProgressState::Snapshot { .. } => true,
                };
                if stale {
                    return;
                }
                // Fast backtracking: skip back over the follower's whole conflicting term
                // at once, to the last index where the leader's term is no later than the
                // follower's, instead of one entry per round trip.
                let mut k = hint_index.min(rejected_prev.prev());
                let floor = self.store.snapshot().meta.index;
                while k > floor {
                    match self.store.term(k) {
                        Some(t) if t > hint_term => k = k.prev(),
                        _ => break,
                    }
                }
                let pr = self
                    .progress
                    .get_mut(&from)
                    .expect("progress checked above");
                let next = k.next().min(rejected_prev).max(pr.match_index.next());
                pr.probe(next);
                if next > rejected_prev {
                    // The follower rejects what it already acknowledged: it is broken or
                    // lost its disk. Retry at the next heartbeat rather than in a tight loop.
                    pr.state = ProgressState::Probe { paused: true };
                } else {
                    self.send_append(from, false);
                }
            }
        }
    }

    fn maybe_send_timeout_now(&mut self, peer: NodeId) {
        if let Some((to, _)) = self.transfer {
            let caught_up = self
                .progress
                .get(&peer)
                .is_some_and(|p| p.match_index == self.store.last_index());
            if to == peer && caught_up {
                self.transfer_sent = true;
                self.send_now(peer, MessageBody::TimeoutNow);
            }
        }
    }

    /// Advances the commit index to the highest index stored durably on a majority of
    /// voters, if that entry is of the leader's own term. Returns whether it moved.
    fn maybe_commit(&mut self) -> bool {
        let id = self.config.id;
        let durable = self.durable_index;
        let progress = &self.progress;
        let candidate = self
            .voters
            .committed_index(|voter| {
                if voter == id {
                    Some(durable)
                } else {
                    progress.get(&voter).map(|p| p.match_index)
                }
            })
            .unwrap_or(LogIndex::ZERO);
        if candidate <= self.commit {
            return false;
        }
        // Figure 8 of the paper: an entry of an earlier term stored on a majority can
        // still be overwritten, so only an entry of the current term commits by counting;
        // earlier ones commit with it.
        let own_term = self.term_of(candidate) == Some(self.term);
        if !own_term && !self.config.bugs.commit_old_term_by_counting {
            return false;
        }
        self.commit = candidate;
        self.on_commit_advanced();
        true
    }

    fn on_commit_advanced(&mut self) {
        if self.term_of(self.commit) == Some(self.term) {
            let waiting: Vec<PendingRead> = self.reads_waiting_commit.drain(..).collect();
            for mut read in waiting {
                read.index = self.commit;
                self.reads_pending.push_back(read);
            }
        }
        if self.role == Role::Leader && !self.is_voter() && self.commit >= self.membership_index {
            // A leader removed from the voters leads until the change commits, then steps
            // down (thesis, section 4.2.2).
            self.become_follower(self.term, None);
        }
    }

    fn broadcast_heartbeat(&mut self) {
        self.round += 1;
        let round = self.round;
        self.round_sent_tick.insert(round, self.ticks);
        while self.round_sent_tick.len() > 64 {
            self.round_sent_tick.pop_first();
        }
        let ticks = self.ticks;
        let stall_ticks = self.config.election_timeout_ticks.start;
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for peer in peers {
            let pr = self.progress.get_mut(&peer).expect("peer listed above");
            let commit = self.commit.min(pr.match_index);
            let mut resend_snapshot = false;
            match &mut pr.state {
                ProgressState::Probe { paused } => *paused = false,
                ProgressState::Replicate => {
                    // The last append of a burst may have been lost: nothing would then
                    // trigger a rejection, so fall back to probing after a quiet spell.
                    if !pr.in_flight.is_empty() && ticks - pr.progress_tick >= stall_ticks {
                        let next = pr.match_index.next();
                        pr.probe(next);
                        pr.progress_tick = ticks;
                    }
                }
                ProgressState::Snapshot { acked, .. } => {
                    resend_snapshot = !*acked;
                    *acked = false;
                }
            }
            pr.heartbeat_sent(round);
            self.send_now(peer, MessageBody::Heartbeat { commit, round });
            if resend_snapshot {
                self.send_snapshot_chunk(peer);
            } else {
                self.send_append(peer, false);
            }
        }
        // Only a leader that is itself the one voter confirms a round alone: a leader
        // being removed, whose new configuration's one voter is another node, must hear
        // from that node (which may already have elected itself under it).
        if self.voters_len() == 1 && self.is_voter() {
            self.confirm_round(round);
        }
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, round: u64, last_index: LogIndex) {
        if self.role != Role::Leader {
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.acked_round = pr.acked_round.max(round);
        if let ProgressState::Probe { paused } = &mut pr.state {
            *paused = false;
        } else if pr.heartbeat_answered(round, last_index) {
            // Appends streamed before the heartbeat are missing from the follower's log
            // (it restarted, or the link dropped them): start again from what it has.
            pr.probe(last_index.next());
        }
        let needs_more = pr.match_index < self.store.last_index();
        let id = self.config.id;
        let own = self.round;
        let progress = &self.progress;
        let confirmed = self
            .voters
            .committed_index(|voter| {
                if voter == id {
                    Some(own)
                } else {
                    progress.get(&voter).map(|p| p.acked_round)
                }
            })
            .unwrap_or(0);
        self.confirm_round(confirmed);
        if needs_more {
            self.send_append(from, false);
        }
    }

    fn confirm_round(&mut self, round: u64) {
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

    // ----- Replication: follower -------------------------------------------------------

    fn handle_append(
        &mut self,
        from: NodeId,
        mut prev_index: LogIndex,
        mut prev_term: Term,
        mut entries: Vec<Entry>,
        leader_commit: LogIndex,
    ) {
        let msg_last = prev_index.plus(entries.len() as u64);
        if prev_index < self.commit {
            // Entries up to the commit index are known to match the leader's.
            if msg_last <= self.commit {
                self.send(
                    from,
                    MessageBody::AppendResponse {
                        result: AppendResult::Accepted {
                            match_index: msg_last,
                        },
                    },
                );
                return;
            }
            let skip = usize::try_from(self.commit.0 - prev_index.0).unwrap_or(usize::MAX);
            entries.drain(..skip.min(entries.len()));
            prev_index = self.commit;
            prev_term = self.term_of(prev_index).unwrap_or(Term::ZERO);
        }
        match self.term_of(prev_index) {
            Some(t) if t == prev_term => {}
            _ => {
                let last = self.store.last_index();
                let mut hint_index = prev_index.min(last);
                while hint_index > self.commit {
                    match self.term_of(hint_index) {
                        Some(t) if t > prev_term => hint_index = hint_index.prev(),
                        _ => break,
                    }
                }
                let hint_term = self.term_of(hint_index).unwrap_or(Term::ZERO);
                self.send(
                    from,
                    MessageBody::AppendResponse {
                        result: AppendResult::Rejected {
                            rejected_prev: prev_index,
                            hint_index,
                            hint_term,
                        },
                    },
                );
                return;
            }
        }
        // Find the first entry we do not already hold; truncate a conflicting suffix.
        let last = self.store.last_index();
        let mut start = entries.len();
        for (at, entry) in entries.iter().enumerate() {
            if entry.index > last {
                start = at;
                break;
            }
            if self.term_of(entry.index) != Some(entry.term) {
                if entry.index <= self.commit {
                    // A leader that contradicts a committed entry is broken; refuse.
                    return;
                }
                self.truncate_after(entry.index.prev());
                start = at;
                break;
            }
        }
        self.append_entries(&entries[start..]);
        let new_commit = leader_commit.min(msg_last);
        if new_commit > self.commit {
            self.commit = new_commit;
        }
        self.send(
            from,
            MessageBody::AppendResponse {
                result: AppendResult::Accepted {
                    match_index: msg_last,
                },
            },
        );
    }

    // ----- Snapshots -------------------------------------------------------------------

    fn start_snapshot(&mut self, peer: NodeId) {
        let index = self.store.snapshot().meta.index;
        if let Some(pr) = self.progress.get_mut(&peer) {
            pr.state = ProgressState::Snapshot {
                index,
                offset: 0,
                acked: true,
            };
            pr.in_flight.clear();
        }
        self.send_snapshot_chunk(peer);
    }

    fn send_snapshot_chunk(&mut self, peer: NodeId) {
        let snapshot = self.store.snapshot();
        let Some(pr) = self.progress.get_mut(&peer) else {
            return;
        };
        let ProgressState::Snapshot { index, offset, .. } = pr.state else {
            return;
        };
        let (index, offset) = if index == snapshot.meta.index {
            (index, offset)
        } else {
            (snapshot.meta.index, 0)
        };
        pr.state = ProgressState::Snapshot {
            index,
            offset,
            acked: true,
        };
        let len = snapshot.data.len() as u64;
        let start = offset.min(len);
        let end = (start + self.config.snapshot_chunk_bytes_max).min(len);
        let (Ok(start_at), Ok(end_at)) = (usize::try_from(start), usize::try_from(end)) else {
            return;
        };
        let data = snapshot.data.slice(start_at..end_at);
        let meta = snapshot.meta.clone();
        self.send_now(
            peer,
            MessageBody::Snapshot {
                meta,
                offset: start,
                data,
                done: end == len,
            },
        );
    }

    fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        index: LogIndex,
        next_offset: u64,
        done: bool,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let ticks = self.ticks;
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        let ProgressState::Snapshot { index: sending, .. } = pr.state else {
            return;
        };
        if sending != index {
            return;
        }
        if done {
            pr.accept(index, ticks);
            pr.probe(index.next());
            if self.maybe_commit() {
                self.needs_broadcast = true;
            }
            self.send_append(from, false);
        } else {
            pr.state = ProgressState::Snapshot {
                index,
                offset: next_offset,
                acked: true,
            };
            self.send_snapshot_chunk(from);
        }
    }

    fn handle_snapshot(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: &[u8],
        done: bool,
    ) {
        let index = meta.index;
        if index <= self.commit {
            self.incoming_snapshot = None;
            self.send(
                from,
                MessageBody::SnapshotResponse {
                    index,
                    next_offset: 0,
                    done: true,
                },
            );
            return;
        }
        if self
            .incoming_snapshot
            .as_ref()
            .is_none_or(|s| s.meta != meta)
        {
            if offset != 0 {
                self.send(
                    from,
                    MessageBody::SnapshotResponse {
                        index,
                        next_offset: 0,
                        done: false,
                    },
                );
                return;
            }
            self.incoming_snapshot = Some(IncomingSnapshot {
                meta,
                data: Vec::new(),
            });
        }
        let incoming = self
            .incoming_snapshot
            .as_mut()
            .expect("incoming snapshot set above");
        let have = incoming.data.len() as u64;
        if have.saturating_add(data.len() as u64) > self.config.snapshot_bytes_max {
            self.incoming_snapshot = None;
            return;
        }
        if offset != have {
            self.send(
                from,
                MessageBody::SnapshotResponse {
                    index,
                    next_offset: have,
                    done: false,
                },
            );
            return;
        }
        incoming.data.extend_from_slice(data);
        let next_offset = incoming.data.len() as u64;
        if !done {
            self.send(
                from,
                MessageBody::SnapshotResponse {
                    index,
                    next_offset,
                    done: false,
                },
            );
            return;
        }
        let incoming = self
            .incoming_snapshot
            .take()
            .expect("incoming snapshot set above");
        let snapshot = Snapshot {
            meta: incoming.meta,
            data: Bytes::from(incoming.data),
        };
        if self.term_of(index) == Some(snapshot.meta.term) {
            // The log holds the snapshot's last entry, so it matches the leader's up to
            // there: keep what follows (figure 13, step 6). Those entries may already have
            // been acknowledged, with the acknowledgement still on its way to the leader,
            // which will count them; throwing them away would lose committed entries.
            self.store.compact(snapshot.clone());
            self.write_seq += 1;
            self.commit = index;
            self.applied = index;
            self.durable_index = self.durable_index.max(index);
            self.membership_log = self.membership_log.split_off(&index.next());
            let (i, m) = match self.membership_log.iter().next_back() {
                Some((i, m)) => (*i, m.clone()),
                None => (index, snapshot.meta.membership.clone()),
            };
            self.membership_index = i;
            self.voters = majority(&m);
            self.membership = m;
        } else {
            self.store.install_snapshot(snapshot.clone());
            self.write_seq += 1;
            self.truncations += 1;
            self.truncated_after = Some(index);
            self.commit = index;
            self.applied = index;
            self.durable_index = index;
            for mark in &mut self.marks {
                mark.1 = mark.1.min(index);
            }
            self.membership_log.clear();
            self.membership = snapshot.meta.membership.clone();
            self.voters = majority(&self.membership);
            self.membership_index = index;
        }
        self.restore = Some(snapshot);
        self.send(
            from,
            MessageBody::SnapshotResponse {
                index,
                next_offset,
                done: true,
            },
        );
    }

    // ----- Reads -----------------------------------------------------------------------

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

    fn start_read_round(&mut self) {
        self.heartbeat_elapsed = 0;
        self.broadcast_heartbeat();
        let round = self.round;
        for read in &mut self.reads_pending {
            if read.round == 0 {
                read.round = round;
            }
        }
    }

    fn handle_read_index_request(&mut self, from: NodeId, id: ReadId) {
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
    fn expire_forwarded_reads(&mut self) {
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

    fn fail_reads(&mut self) {
        let reads: Vec<PendingRead> = self
            .reads_waiting_commit
            .drain(..)
            .chain(self.reads_pending.drain(..))
            .collect();
        for read in reads {
            self.finish_read(read, None);
        }
    }

    // ----- Messages --------------------------------------------------------------------

    /// Queues a message that must wait until every store write made so far is durable.
    fn send(&mut self, to: NodeId, body: MessageBody) {
        let msg = Message {
            from: self.config.id,
            to,
            term: self.term,
            body,
        };
        if self.write_seq > self.durable_seq {
            self.held.push_back((self.write_seq, msg));
        } else {
            self.outbox.push(msg);
        }
    }

    /// Queues a message that may leave at once.
    fn send_now(&mut self, to: NodeId, body: MessageBody) {
        self.outbox.push(Message {
            from: self.config.id,
            to,
            term: self.term,
            body,
        });
    }

    /// Checks what a message from the network claims before trusting it.
    fn valid(&self, msg: &Message) -> bool {
        // Terms grow by one per election and indexes by one per entry: one near `u64::MAX`
        // is corruption or malice, and adopting it would leave no room for the next
        // elections, or overflow the first index computed from it.
        let index_ok = |index: LogIndex| index <= INDEX_MAX;
        if msg.term > TERM_MAX {
            return false;
        }
        match &msg.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            }
            | MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => index_ok(*last_index) && *last_term <= TERM_MAX,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                if !index_ok(*prev_index) || !index_ok(*commit) || *prev_term > msg.term {
                    return false;
                }
                let mut index = *prev_index;
                let mut term = *prev_term;
                for e in entries {
                    // No overflow: `index` is at most `INDEX_MAX` here.
                    index = LogIndex(index.0 + 1);
                    if !index_ok(index) || e.index != index || e.term < term || e.term > msg.term {
                        return false;
                    }
                    if let Payload::Membership(m) = &e.payload
                        && !m.is_valid()
                    {
                        return false;
                    }
                    term = e.term;
                }
                true
            }
            MessageBody::AppendResponse {
                result: AppendResult::Accepted { match_index },
            } => index_ok(*match_index),
            MessageBody::AppendResponse {
                result:
                    AppendResult::Rejected {
                        rejected_prev,
                        hint_index,
                        hint_term,
                    },
            } => index_ok(*rejected_prev) && index_ok(*hint_index) && *hint_term <= TERM_MAX,
            MessageBody::Heartbeat { commit: index, .. }
            | MessageBody::HeartbeatResponse {
                last_index: index, ..
            }
            | MessageBody::ReadIndexResponse {
                index: Some(index), ..
            }
            | MessageBody::SnapshotResponse { index, .. } => index_ok(*index),
            // The snapshot ends with an entry of the sender's log, as an append's entries.
            MessageBody::Snapshot { meta, .. } => {
                index_ok(meta.index) && meta.term <= msg.term && meta.membership.is_valid()
            }
            MessageBody::PreVoteResponse { .. }
            | MessageBody::VoteResponse { .. }
            | MessageBody::ReadIndex { .. }
            | MessageBody::ReadIndexResponse { index: None, .. }
            | MessageBody::TimeoutNow => true,
        }
    }
}

/// The quorum of a membership's voters.
fn majority(membership: &Membership) -> MajorityConfig {
    MajorityConfig::new(membership.voters().iter().copied())
        .expect("a membership has at least one voter")
}
