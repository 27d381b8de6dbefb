//! The Raft node: a state machine that does no I/O.
//!
//! See the crate documentation for a guided tour. In short, a [`Node`] takes inputs
//! ([`Node::tick`], [`Node::step`], [`Node::propose`], [`Node::read_index`], or all of them
//! through [`synod_node::Protocol::handle`]) and collects what it wants done;
//! [`Node::ready`] (or [`synod_node::Protocol::poll`]) hands that out; the caller applies
//! the log's writes to its store and makes them durable, acknowledges with
//! [`Node::persisted`], sends the messages and applies the committed entries.
//!
//! # Persistence before use
//!
//! The node keeps its log in memory and records every change to it in the [`RaftWrite`]
//! it hands out next; every change also gets a sequence number. A message whose truth depends on a
//! write (a vote grant, an append acknowledgement, anything carrying a newly raised term)
//! is held inside the node until the caller has acknowledged a [`PersistToken`] covering
//! that write, so it cannot leave too early whatever order the caller does things in. Only
//! a leader's own replication messages (appends, heartbeats, snapshot chunks) leave at
//! once: the leader's term is already durable (it could not have won otherwise), and it
//! counts its own copy of an entry towards the commit only once that copy is durable, so
//! the leader's sync runs in parallel with its followers'. A committed entry is handed out
//! to be applied whether or not this node's own copy is durable yet (it is durable on a
//! majority: the Raft thesis, section 10.2.1), so a leader whose followers' copies commit
//! an entry before its own sync ends answers it then.
//!
//! # Where things are
//!
//! The node is split along its seams, one file each; each part of the state lives with the
//! code that owns it:
//!
//! - this file: the node's state, its construction, what it shows, [`Node::tick`],
//!   [`Node::step`] (which checks a message's term and hands it to its handler) and
//!   [`Node::ready`];
//! - `election`: terms and votes, pre-vote, check-quorum, becoming follower or leader,
//!   leader transfer (`Election`, `Transfer`);
//! - `contract`: [`synod_node::Protocol`] for the node: ticks from the time handed in,
//!   requests and their replies, a ready handed out as effects;
//! - `log`: proposals and every change to the log (`RaftLog`, which records each in the
//!   pending write), and the memberships it holds (`MembershipLog`);
//! - `replication`: log shipping, the leader's side (progress of each follower, appends,
//!   heartbeats, the commit index) and the follower's (accepting or rejecting appends);
//! - `reads`: read index and lease reads ([`Node::read_lease`]), and the heartbeat rounds
//!   that confirm them (`Reads`);
//! - `durability`: persist tokens, and the messages that wait for them (`Durability`);
//! - `snapshot`: compaction, and snapshots sent and received in chunks;
//! - `validate`: what a message from the network must satisfy to be handled at all;
//! - `errors`: why a request was refused.

mod contract;
mod durability;
mod election;
mod errors;
mod log;
mod reads;
mod replication;
mod snapshot;
mod validate;

use std::collections::BTreeMap;

use crate::config::Config;
use crate::membership::Membership;
use crate::message::{AppendResult, Message, MessageBody};
use crate::progress::Progress;
use crate::storage::{MemLogStore, RaftWrite, Snapshot};
use crate::types::{Entry, LogIndex, NodeId, Term};
use synod_node::{PersistToken, Rng};

pub use contract::{Apply, Request, RequestError, Response};
use durability::Durability;
use election::{Election, Transfer};
pub use errors::{CompactError, ProposeError, ReadError, TransferError};
use log::{MembershipLog, RaftLog};
pub use reads::ReadState;
use reads::Reads;
use snapshot::IncomingSnapshot;

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

/// Everything the node wants done, handed out by [`Node::ready`].
///
/// Handle it in this order: persist (if [`Ready::persist`] is set, apply its write to the
/// durable store, sync and call [`Node::persisted`] with its token; the sync may be
/// batched with later readies), send
/// [`Ready::messages`] (they are safe to send at once), restore [`Ready::snapshot`] into the
/// state machine if set, apply [`Ready::committed`] in order, and serve [`Ready::reads`]
/// once their index is applied.
#[derive(Debug, Default)]
pub struct Ready {
    /// Messages to send. Each carries its recipient.
    pub messages: Vec<Message>,
    /// The writes made to the log since the last ready, for the driver to make durable,
    /// with the token to acknowledge once they are (and every earlier one).
    pub persist: Option<(PersistToken, RaftWrite)>,
    /// A snapshot to load into the state machine before applying `committed`: one received
    /// from the leader, or the recovered log's snapshot when the node starts.
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

/// A Raft node. See the module and crate documentation.
#[derive(Debug)]
pub struct Node {
    config: Config,
    /// The log, the hard state and the snapshot, as far as the node wrote them, and the
    /// writes not yet handed out to be persisted.
    log: RaftLog,
    /// Runs the ticks due at the time handed to [`Protocol::handle`](synod_node::Protocol::handle).
    clock: contract::TickClock,
    /// The contract's side: effects not yet polled, and reads asked for by requests.
    contract: contract::Contract,
    /// Draws the election timeouts.
    rng: Rng,

    /// The current term and the vote cast in it (written to the store before use).
    term: Term,
    vote: Option<NodeId>,
    role: Role,
    /// The leader of the current term, if known.
    leader: Option<NodeId>,

    /// The memberships in the log, and the one in effect.
    membership: MembershipLog,

    /// The High-Water Mark.
    commit: LogIndex,
    /// The last index handed out to be applied.
    applied: LogIndex,

    /// Ticks since the node was created: its logical clock.
    ticks: u64,
    /// The election timer and the votes of an election in progress.
    election: Election,
    /// On a leader, ticks since the last heartbeat.
    heartbeat_elapsed: u64,
    /// On a leader, what it knows of each other member's log.
    progress: BTreeMap<NodeId, Progress>,
    /// On a leader, whether the followers' pipelines should be filled at the next ready.
    needs_broadcast: bool,
    transfer: Transfer,

    /// Reads in progress, and the heartbeat rounds that confirm them and the lease.
    reads: Reads,

    /// Writes to the store, and the messages that wait for them to be durable.
    durability: Durability,
    /// Messages that may leave, handed out in the next ready.
    outbox: Vec<Message>,

    /// A snapshot being received from the leader.
    incoming_snapshot: Option<IncomingSnapshot>,
    /// A snapshot for the state machine to load, handed out in the next ready.
    restore: Option<Snapshot>,

    /// How many times the log lost entries from its end (see [`Node::truncations`]).
    truncations: u64,
    /// The index after which the latest of those cut the log.
    truncated_after: Option<LogIndex>,
}

impl Node {
    /// A node whose log is `store`: what its durable store recovered (for a new node, a
    /// [`MemLogStore::new`] with the initial membership). The node keeps it in memory from
    /// then on, and treats all of it as durable. The node starts as a follower; if the log
    /// has a snapshot, the first [`Ready`] hands it out for the state machine to load.
    ///
    /// # Panics
    ///
    /// Panics if the log's term is above [`TERM_MAX`]: the store is corrupt (a store that
    /// reads from disk should refuse such a term when it opens, as `WalLogStore` does).
    pub fn new(config: Config, store: MemLogStore) -> Node {
        let hard = store.hard_state();
        assert!(hard.term <= TERM_MAX, "corrupt store: term {}", hard.term);
        let snapshot = store.snapshot().clone();
        let membership = MembershipLog::from_store(&store);
        let last = store.last_index();
        // The id is mixed in so that nodes given the same seed still draw different
        // timeouts (identical timeouts split every vote).
        let mut rng = Rng::new(config.seed ^ config.id.get().wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let election = Election::new(&config, &mut rng);
        let restore = (snapshot.meta.index > LogIndex::ZERO).then_some(snapshot.clone());
        Node {
            term: hard.term,
            vote: hard.vote,
            role: Role::Follower,
            leader: None,
            membership,
            commit: snapshot.meta.index,
            applied: snapshot.meta.index,
            ticks: 0,
            election,
            heartbeat_elapsed: 0,
            progress: BTreeMap::new(),
            transfer: Transfer::default(),
            needs_broadcast: false,
            reads: Reads::default(),
            durability: Durability::new(last),
            outbox: Vec::new(),
            incoming_snapshot: None,
            restore,
            truncations: 0,
            truncated_after: None,
            rng,
            log: RaftLog::new(store),
            clock: contract::TickClock::default(),
            contract: contract::Contract::default(),
            config,
        }
    }

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
        self.log.last_index()
    }

    /// The highest index known to be durable in this node's log.
    #[must_use]
    pub fn durable_index(&self) -> LogIndex {
        self.durability.durable_index()
    }

    /// The membership in effect (the newest in the log, committed or not).
    #[must_use]
    pub fn membership(&self) -> &Membership {
        self.membership.current()
    }

    /// Ticks since this node last heard from its leader (or, on a leader, since its last
    /// quorum check). A follower read from a node whose figure is large may be stale; see
    /// [`crate::reads`] (Follower Reads).
    #[must_use]
    pub fn ticks_since_leader_contact(&self) -> u64 {
        self.election.elapsed
    }

    /// The match index the leader knows for `peer`, or `None` if this node is not the
    /// leader or `peer` is not a member.
    #[must_use]
    pub fn match_index(&self, peer: NodeId) -> Option<LogIndex> {
        if self.role != Role::Leader {
            return None;
        }
        if peer == self.config.id {
            return Some(self.durability.durable_index());
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

    /// The node's log as it holds it in memory (possibly not yet durable): the snapshot,
    /// the entries since, the term and vote.
    #[must_use]
    pub fn log(&self) -> &MemLogStore {
        &self.log
    }

    /// Whether [`Node::ready`] has something to hand out.
    #[must_use]
    pub fn has_ready(&self) -> bool {
        !self.outbox.is_empty()
            || self.needs_broadcast
            || self.durability.has_unrequested()
            || self.restore.is_some()
            || self.reads.has_answers()
            || self.reads.has_unsent()
            || self.reads.need_round()
            || self.applied < self.commit
    }

    /// Advances the node's logical clock by one tick: drives election timeouts, heartbeats
    /// and check-quorum.
    pub fn tick(&mut self) {
        self.ticks += 1;
        self.election.elapsed += 1;
        self.expire_forwarded_reads();
        if self.role == Role::Leader {
            self.heartbeat_elapsed += 1;
            if self.election.elapsed >= self.config.election_timeout_ticks.start {
                self.election.elapsed = 0;
                self.transfer.to = None;
                if self.config.check_quorum && !self.quorum_active() {
                    self.become_follower(self.term, None);
                    return;
                }
            }
            if self.heartbeat_elapsed >= self.config.heartbeat_interval_ticks {
                self.heartbeat_elapsed = 0;
                self.broadcast_heartbeat();
            }
            // A commit index no append carried since: followers apply it within a tick.
            let peers: Vec<NodeId> = self.progress.keys().copied().collect();
            for peer in peers {
                self.send_commit(peer, true);
            }
        } else if self.election.elapsed >= self.election.timeout && self.is_voter() {
            self.campaign(false);
        }
    }

    /// Handles a message from another node. Messages that are malformed (a term above
    /// [`TERM_MAX`], an index above [`INDEX_MAX`], entries that do not follow on), stale or
    /// not for this node are ignored; none can make the node panic.
    pub fn step(&mut self, msg: Message) {
        if msg.to != self.config.id || msg.from == self.config.id || !validate::valid(&msg) {
            return;
        }
        if self.check_term(&msg) {
            self.dispatch(msg);
        }
    }

    /// Raft's rule for terms: a message of a later term makes this node a follower in that
    /// term (except a pre-vote, and a vote request while it hears from a leader); one of an
    /// earlier term is answered so that its sender learns of the newer term, and dropped.
    /// Returns whether to handle the message.
    fn check_term(&mut self, msg: &Message) -> bool {
        if msg.term > self.term {
            match &msg.body {
                // A pre-vote neither raises the receiver's term nor the candidate's.
                MessageBody::PreVote { .. } | MessageBody::PreVoteResponse { granted: true } => {}
                MessageBody::Vote { transfer, .. } if !transfer && self.in_lease() => {
                    // A follower that hears from a live leader ignores disruptive
                    // elections (check-quorum); the leader will step down by itself if it
                    // has really lost its quorum.
                    return false;
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
            return false;
        }
        true
    }

    /// Hands a message of the current term to its handler.
    fn dispatch(&mut self, msg: Message) {
        let from = msg.from;
        let term = msg.term;
        match msg.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => self.handle_pre_vote(from, term, last_index, last_term),
            MessageBody::PreVoteResponse { granted } => {
                self.handle_pre_vote_response(from, term, granted);
            }
            MessageBody::Vote {
                last_index,
                last_term,
                transfer,
            } => self.handle_vote(from, last_index, last_term, transfer),
            MessageBody::VoteResponse { granted } => self.handle_vote_response(from, granted),
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
                self.handle_heartbeat(from, commit, round);
            }
            MessageBody::HeartbeatResponse { round, last_index } => {
                self.handle_heartbeat_response(from, round, last_index);
            }
            MessageBody::ReadIndex { id } => self.handle_read_index_request(from, id),
            MessageBody::ReadIndexResponse { id, index } => {
                self.handle_read_index_response(id, index);
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
            MessageBody::TimeoutNow => self.handle_timeout_now(),
        }
    }

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
        if self.role == Role::Leader && self.reads.need_round() {
            self.start_read_round();
        }
        self.forward_reads();
        let persist = self
            .durability
            .request(self.log.last_index())
            .map(|token| (token, self.log.take_unpersisted()));
        let snapshot = self.restore.take();
        // Committed entries are applied whether or not this node's own copy is durable yet:
        // a committed entry is durable on a majority, so no crash of this node can take it
        // from the cluster (its state machine, in memory, goes with the crash). A leader
        // whose followers' copies committed an entry before its own sync ended answers it
        // at once.
        let hi = self.commit.min(LogIndex(
            self.applied
                .0
                .saturating_add(self.config.apply_entries_max as u64),
        ));
        let mut committed = Vec::new();
        if hi > self.applied {
            self.log
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
            reads: self.reads.take_answers(),
        }
    }
}
