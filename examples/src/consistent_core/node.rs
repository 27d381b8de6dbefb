//! The Consistent Core node as a sans-I/O state machine: Raft plus the key-value store.
//!
//! A [`CoreNode`] owns a `synod_consensus::Node` (Leader and Followers, Replicated Log,
//! High-Water Mark) and the [`KvStore`] its committed entries drive. It follows the node
//! contract ([`synod_node::Protocol`]): inputs (a peer's message, a [`Command`], a wake-up,
//! a persistence acknowledgement) are handed in with the time, and effects come out of
//! `poll` (messages to send, the log's writes to make durable as a `RaftWrite`, replies,
//! the time to wake it, and [`Fatal`] when it cannot go on). It reads no clock, opens no
//! socket and touches no file, so the same node runs under `synod-sim` and inside the
//! real-process driver ([`super::server`]), which owns the threads, the sockets and the
//! write-ahead log.
//!
//! Time is a value: the caller's monotonic clock, read when it hands an input in. Before
//! the node looks at an input it runs Raft's ticks for the time passed since the last one,
//! so nothing it decides (above all whether a lease still holds) rests on a clock that
//! stopped while the process was paused, a sync stalled or the caller's timer was late.
//!
//! The same clock stamps proposals with the replicated time that session expiry runs on
//! (`synod_consensus::session::ReplicatedClock`): the latest replicated time this node has
//! applied, moved on by the time passed on the caller's monotonic clock since. No wall
//! clock enters the node, so a leader whose clock is set minutes ahead cannot expire every
//! session on every replica, and a new leader carries on from where the log left off.
//!
//! Requests are identified by the driver's `RequestId`; every request gets exactly one
//! `Effect::Reply` with it unless the node is dropped first (the caller keeps its own
//! deadline: a message lost on the way to a leader leaves a forwarded read unanswered).
//!
//! The driver may also change the cluster's membership through the leader
//! ([`Command::ProposeMembership`]): one change at a time, each a single voter added or
//! removed (or learners changed), the next refused until the last is committed.
//!
//! Leases and key expiry (`synod_membership::lease`): the lease table lives in the
//! [`KvStore`], changed only by applied entries; the node's `LeaseExpirer` acts only while
//! this node leads. It is promoted when the node is leader in a term it was not promoted
//! in (or after a snapshot replaced the table), starting each lease from its checkpointed
//! remaining TTL plus an election timeout; it is demoted as soon as the node is not leader,
//! before anything else is proposed; and it is fed the lease changes of every entry applied,
//! at the time of the input that applied it. After each drain, the leader proposes the
//! expiries and checkpoints it asks for as ordinary log entries; one the log refuses while
//! the leader hands its leadership over (or while too much is uncommitted) is proposed
//! again at the next drain, so a hand-over that fails delays an expiry by no more than its
//! attempt. A deposed leader therefore
//! never expires a lease: its proposals, in an old term, either do not commit (and are
//! overwritten, applied nowhere) or commit behind exactly the entries that were before
//! them in its log, and each expiry names the renewal it expires, so a keep-alive applied
//! first makes it do nothing. A grant's TTL is raised to the minimum (1.5 times the
//! longest election timeout, [`lease_config`]) by the node that takes the request.
//!
//! Reads come in three modes ([`ReadMode`]): linearizable (Raft's read index: the leader
//! confirms with a quorum that it still leads, then the read is served once this replica
//! has applied that far; a follower asks the leader for the index and serves the read
//! itself), lease (the leader's lease, falling back to a read index when it holds none),
//! and follower reads (Follower Reads: this replica's state as applied, possibly stale: a
//! follower learns of a commit on the leader's next append or heartbeat, or at its next
//! tick when nothing else goes out).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use synod_consensus::session::{ReplicatedClock, SessionEntry, SessionId};
use synod_consensus::{
    LogIndex, Membership, Message, Node, NodeId, Payload, ProposeError, RaftWrite, ReadId,
    ReadWaitList, Role, Term,
};
use synod_node::{Effect, EffectOf, Input, InputOf, Protocol, RequestId, Time};

use synod_membership::lease::{LeaseCommand, LeaseConfig, LeaseExpirer};

use super::kv::{KeyChange, KvCommand, KvQuery, KvReply, KvStore, LogCommand, TxOp};

/// The driver's id for a request, echoed in its reply.
pub type Tag = RequestId;

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReadMode {
    /// Linearizable: confirmed with a quorum (read index).
    Linearizable,
    /// The leader's lease if it holds one, else as `Linearizable`.
    Lease,
    /// This replica's applied state, without asking anyone (may be stale).
    Follower,
}

/// A command's place in a client session: applied once however often it is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionSeq {
    /// The session (from [`Request::Register`]).
    pub session: SessionId,
    /// The request's sequence number in the session, from 1.
    pub seq: u64,
    /// The client holds the replies to every sequence number below this.
    pub ack_below: u64,
}

/// What a client asks of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Request {
    /// A command through the log, in a session or not.
    Write {
        /// The command.
        command: KvCommand,
        /// Its session and sequence number, if any.
        session: Option<SessionSeq>,
    },
    /// Opens a session; the reply is its id as `Int`.
    Register,
    /// Closes a session.
    Unregister(SessionId),
    /// A query.
    Read {
        /// What to read.
        query: KvQuery,
        /// How fresh.
        mode: ReadMode,
    },
}

impl Request {
    /// Whether only the leader can take it (a non-leader answers
    /// [`Response::NotLeader`], and a driver forwards it).
    #[must_use]
    pub fn needs_leader(&self) -> bool {
        !matches!(self, Request::Read { .. })
    }
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Response {
    /// The state machine's answer.
    Kv(KvReply),
    /// This node does not lead; `leader` is the one it knows of.
    NotLeader {
        /// Where to send it.
        leader: Option<u64>,
    },
    /// Certainly not done, and never will be: safe to retry (a proposal refused, or
    /// overwritten by a committed entry; no leader known; too much queued).
    Retry(String),
    /// Perhaps done, perhaps not, perhaps later (a proposal this node lost track of in a
    /// leadership change): retry only within a session, which makes the retry safe.
    Unknown(String),
}

/// What a driver asks of the node: the [`synod_node::Protocol`] request type. Each is
/// answered by one [`Effect::Reply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// A client's request.
    Client(Request),
    /// This node is about to stop: if it leads, hand the leadership to the most
    /// up-to-date other voter, so the cluster need not wait out an election timeout.
    /// Answered `Kv(Ok)` at once.
    HandOver,
    /// Propose the membership: at most one voter added or removed, learners added,
    /// promoted and removed freely. On the leader, the change is appended to the log and
    /// takes effect at once (answered `Kv(Ok)`); it is done once committed, which
    /// [`CoreNode::membership_changes_committed`] counts. Refused (`NotLeader`, or `Retry`
    /// with the reason: an earlier change not yet committed, a change of more than one
    /// voter, a transfer under way, too much uncommitted) as a proposal is.
    ProposeMembership(Membership),
}

/// What the node hands up with [`Effect::Apply`]: it cannot continue (a snapshot that does
/// not decode), and the driver must stop it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fatal(pub String);

/// A summary of the node's state, for `INFO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// This node.
    pub id: u64,
    /// Its role.
    pub role: Role,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// Its term.
    pub term: Term,
    /// The commit index (High-Water Mark) it knows of.
    pub commit: LogIndex,
    /// The index its state machine has applied.
    pub applied: LogIndex,
    /// The last index in its log.
    pub last: LogIndex,
    /// The first index still in its log (above the snapshot: the Low-Water Mark).
    pub first: LogIndex,
    /// Keys in the map.
    pub keys: usize,
    /// The store's revision (see [`super::kv`]).
    pub revision: u64,
    /// Open client sessions.
    pub sessions: usize,
}

/// Applied entries between snapshots, unless configured otherwise.
pub const SNAPSHOT_ENTRIES_DEFAULT: u64 = 10_000;

/// Bytes of applied commands that also trigger a snapshot, whatever their count: the log
/// since the last snapshot (which the node keeps in memory) is bounded by this or by the
/// size of the state, whichever is larger (so a snapshot is not rewritten more often than
/// its own size in new log, and the log's memory is at most the state's, itself bounded
/// by [`STORE_BYTES_MAX`](super::kv::STORE_BYTES_MAX)).
pub const SNAPSHOT_LOG_BYTES_MIN: u64 = 64 << 20;

/// Reads that may wait for this replica to apply their index.
pub const READS_WAITING_MAX: usize = 4096;

/// Raft plus the key-value store. See the module documentation.
#[derive(Debug)]
pub struct CoreNode {
    raft: Node,
    kv: KvStore,
    proposals: BTreeMap<LogIndex, (Term, Tag)>,
    reads: BTreeMap<u64, (Tag, KvQuery)>,
    read_wait: ReadWaitList<(Tag, KvQuery)>,
    next_read: u64,
    /// Replicated time to stamp on proposals, in milliseconds.
    replicated: ReplicatedClock,
    snapshot_entries: u64,
    /// Bytes of commands applied since the last snapshot (or start).
    applied_bytes: u64,
    /// [`SNAPSHOT_LOG_BYTES_MIN`], unless configured otherwise.
    snapshot_log_bytes_min: u64,
    effects: VecDeque<EffectOf<CoreNode>>,
    /// The wake-up last asked for.
    wake: Option<Time>,
    /// Membership changes this node proposed as leader and has not seen applied, by
    /// index, with the term they were proposed in.
    changes: BTreeMap<LogIndex, Term>,
    /// Membership changes this node proposed and then applied from the log at the index
    /// and term it proposed them with.
    changes_committed: u64,
    /// What watches are fed, if a driver asked for it ([`CoreNode::with_watch_feed`]).
    watch_feed: Option<Vec<WatchFeed>>,
    /// The leader's lease timer: acts only while this node leads, but fed what every
    /// entry applied does to the leases (on every node: a node that takes over counts
    /// each lease's time left from when it applied the entry that recorded it).
    expirer: LeaseExpirer,
    /// The term the expirer was promoted in (`None`: not promoted, or to promote again
    /// after a snapshot replaced the leases).
    expirer_term: Option<Term>,
    /// The time of the input being handled.
    now: Time,
    /// Whether an input has been handled: entries applied before the first (the log
    /// replayed at construction) are taken as applied at its time, not at zero.
    timed: bool,
    /// The expirer's expiries and checkpoints the log refused while this leader handed
    /// over (or was backed up), proposed again at the next drain.
    lease_proposals: Vec<LeaseCommand>,
    /// Deliberately broken: fenced writes applied without their token checked.
    #[cfg(feature = "broken")]
    unchecked_fences: bool,
}

/// Expiries and checkpoints a leader keeps to propose again once its log takes them (see
/// [`CoreNode`]'s lease handling); past it, the expirer's own retry, an election timeout
/// later, is left to propose them.
const LEASE_PROPOSALS_WAITING_MAX: usize = 1_024;

/// The lease configuration of a node whose Raft configuration is `config`: the election
/// timeout is the longest a node draws (the end of `election_timeout_ticks`, in ticks of
/// `tick_interval_us`), so the minimum TTL is 1.5 times that.
#[must_use]
pub fn lease_config(config: &synod_consensus::Config) -> LeaseConfig {
    let ticks = config.election_timeout_ticks().end.max(1);
    let election_timeout_ms = ticks
        .saturating_mul(config.tick_interval_us())
        .div_ceil(1000)
        .max(1);
    LeaseConfig::builder(election_timeout_ms)
        .limits(super::kv::lease_limits())
        .build()
        .expect("an election timeout above zero and the default limits are valid")
}

/// What the node hands a driver's watch hub (`synod_membership::watch::WatchHub`), in the
/// order the state machine changed: see [`CoreNode::take_watch_feed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchFeed {
    /// An applied entry changed these keys, at this revision (one more than the last).
    Changes {
        /// The store's revision after the entry.
        revision: u64,
        /// The keys it changed, in order.
        changes: Vec<KeyChange>,
    },
    /// A snapshot replaced the state, at this revision: the changes since the last one
    /// fed are not known here.
    Jump {
        /// The snapshot's revision.
        revision: u64,
    },
}

impl CoreNode {
    /// A node over `raft` (whose log may hold a snapshot and entries from an earlier run:
    /// the state machine is rebuilt from them), whose Raft ticks last the configuration's
    /// `tick_interval_us` on the caller's monotonic clock, counted from the first input;
    /// snapshots every `snapshot_entries` applied entries (at least 1).
    pub fn new(raft: Node, snapshot_entries: u64) -> CoreNode {
        CoreNode {
            kv: KvStore::new(),
            proposals: BTreeMap::new(),
            reads: BTreeMap::new(),
            read_wait: ReadWaitList::new(READS_WAITING_MAX),
            next_read: 0,
            replicated: ReplicatedClock::new(),
            snapshot_entries: snapshot_entries.max(1),
            applied_bytes: 0,
            snapshot_log_bytes_min: SNAPSHOT_LOG_BYTES_MIN,
            effects: VecDeque::new(),
            wake: None,
            changes: BTreeMap::new(),
            changes_committed: 0,
            watch_feed: None,
            expirer: LeaseExpirer::new(lease_config(raft.config())),
            expirer_term: None,
            now: Time::ZERO,
            timed: false,
            lease_proposals: Vec::new(),
            #[cfg(feature = "broken")]
            unchecked_fences: false,
            raft,
        }
    }

    /// Keeps what the state machine changes for a watch hub, which the driver takes with
    /// [`CoreNode::take_watch_feed`] after each input (until it does, the feed grows).
    #[must_use]
    pub fn with_watch_feed(mut self) -> CoreNode {
        self.watch_feed = Some(Vec::new());
        self
    }

    /// The changes since the last call, in order (empty unless
    /// [`CoreNode::with_watch_feed`]).
    pub fn take_watch_feed(&mut self) -> Vec<WatchFeed> {
        self.watch_feed
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Also snapshots once `bytes` of commands (or as many as the state holds, if more)
    /// were applied since the last snapshot, whatever their count (default
    /// [`SNAPSHOT_LOG_BYTES_MIN`]).
    #[must_use]
    pub fn with_snapshot_log_bytes(mut self, bytes: u64) -> CoreNode {
        self.snapshot_log_bytes_min = bytes.max(1);
        self
    }

    /// Starts this incarnation's read ids at `base`. Raft requires read ids that never
    /// repeat, even across restarts (a late answer to a read of an earlier incarnation would
    /// otherwise be taken for a new read's), so a driver passes a value that grows from one
    /// start to the next or a random one. The real process counts its starts on the data
    /// directory in a durable file and puts the count in the high bits (see
    /// [`READ_ID_SEQUENCE_BITS`](super::server::READ_ID_SEQUENCE_BITS)), so no wall clock
    /// stepped back can make it repeat; the simulators draw a base from the node's seeded
    /// generator.
    #[must_use]
    pub fn with_read_ids_from(mut self, base: u64) -> CoreNode {
        self.next_read = base;
        self
    }

    /// The Raft node.
    pub fn raft(&self) -> &Node {
        &self.raft
    }

    /// The state machine.
    pub fn kv(&self) -> &KvStore {
        &self.kv
    }

    /// The node's state in brief.
    pub fn info(&self) -> Info {
        Info {
            id: self.raft.id().get(),
            role: self.raft.role(),
            leader: self.raft.leader().map(NodeId::get),
            term: self.raft.term(),
            commit: self.raft.commit_index(),
            applied: self.raft.applied_index(),
            last: self.raft.last_index(),
            first: self.raft.log().first_index(),
            keys: self.kv.len(),
            revision: self.kv.revision(),
            sessions: self.kv.sessions(),
        }
    }

    /// How many membership changes this node proposed (through
    /// [`Command::ProposeMembership`]) and then applied as committed, in
    /// this incarnation. A change the node lost track of (overwritten after a leadership
    /// change, or below a snapshot installed from another leader) is not counted, even if
    /// another leader's log committed it.
    #[must_use]
    pub fn membership_changes_committed(&self) -> u64 {
        self.changes_committed
    }

    fn propose_membership(&mut self, id: Tag, next: Membership) {
        let response = match self.raft.propose_membership(next) {
            Ok(index) => {
                self.changes.insert(index, self.raft.term());
                Response::Kv(KvReply::Ok)
            }
            Err(ProposeError::NotLeader { leader }) => Response::NotLeader {
                leader: leader.map(NodeId::get),
            },
            Err(e) => Response::Retry(e.to_string()),
        };
        self.reply(id, response);
    }

    fn hand_over(&mut self) {
        let me = self.raft.id();
        let best = self
            .raft
            .membership()
            .voters()
            .iter()
            .copied()
            .filter(|&v| v != me)
            .max_by_key(|&v| self.raft.match_index(v).unwrap_or_default());
        if let Some(to) = best {
            // Refused only on a non-leader, which has nothing to hand over.
            let _ = self.raft.transfer_leadership(to);
        }
    }

    /// Deliberately broken: a new leader restarts every lease at its full TTL instead of
    /// its checkpointed remaining one (`LeaseExpirer::broken_renew_on_election`), so
    /// elections renew leases for ever. Only for the test that shows its checker catches it.
    #[cfg(feature = "broken")]
    #[must_use]
    pub fn broken_lease_renewal_on_election(mut self) -> CoreNode {
        let config = self.expirer.config().clone();
        self.expirer = LeaseExpirer::new(config).broken_renew_on_election();
        self
    }

    /// The lease configuration (from Raft's election timeout).
    #[must_use]
    pub fn lease_config(&self) -> &LeaseConfig {
        self.expirer.config()
    }

    /// Whether this node's lease expirer acts (it leads).
    #[must_use]
    pub fn expires_leases(&self) -> bool {
        self.expirer.is_leading()
    }

    /// Answers a query, remaining TTLs counted to this node's replicated time.
    fn answer(&self, query: &KvQuery) -> KvReply {
        self.kv.query_at(query, self.replicated.now())
    }

    /// Runs the lease expirer after the log was applied: promoted when this node starts
    /// leading (a new term, or leases replaced by a snapshot), demoted as soon as it does
    /// not, and while it leads, its expiries and checkpoints proposed. Returns whether it
    /// proposed anything.
    fn step_leases(&mut self) -> bool {
        let now = self.now;
        if self.raft.role() != Role::Leader {
            if self.expirer.is_leading() {
                self.expirer.demote();
            }
            self.expirer_term = None;
            self.lease_proposals.clear();
            return false;
        }
        if self.expirer_term != Some(self.raft.term()) {
            self.expirer.promote(now, self.kv.leases());
            self.expirer_term = Some(self.raft.term());
            self.lease_proposals.clear();
        }
        let mut commands = std::mem::take(&mut self.lease_proposals);
        commands.extend(self.expirer.expired(now));
        commands.extend(self.expirer.checkpoint(now));
        let mut proposed = false;
        for command in commands {
            let entry = LogCommand::Plain {
                time: self.replicated.now(),
                command: KvCommand::Lease(command.clone()),
            };
            match self.raft.propose(Bytes::from(entry.encode())) {
                Ok(_) => proposed = true,
                // Refused while this leader hands over, or while too much is uncommitted:
                // proposed again at the next drain (the expirer would retry an expiry only
                // an election timeout later).
                Err(ProposeError::TransferInProgress | ProposeError::Backpressure)
                    if self.lease_proposals.len() < LEASE_PROPOSALS_WAITING_MAX =>
                {
                    self.lease_proposals.push(command);
                }
                // Not leading any more (the successor's expirer takes over), or a limit:
                // the expirer proposes again later.
                Err(_) => {}
            }
        }
        proposed
    }

    fn reply(&mut self, id: Tag, response: Response) {
        self.effects.push_back(Effect::Reply { id, response });
    }

    fn client(&mut self, tag: Tag, mut request: Request) {
        let time = self.replicated.now();
        if let Request::Write { command, .. } = &mut request {
            // Raised to the minimum here, so the log holds what every replica applies.
            let config = self.expirer.config();
            if let Err(e) = raise_grants(command, &|ttl_ms| config.grant_ttl_ms(ttl_ms)) {
                return self.reply(tag, Response::Kv(KvReply::Error(format!("ERR {e}"))));
            }
        }
        let command = match request {
            Request::Read { query, mode } => return self.read(tag, query, mode),
            Request::Write { command, session } => match session {
                None => LogCommand::Plain { time, command },
                Some(s) => LogCommand::Session(SessionEntry::Request {
                    session: s.session,
                    seq: s.seq,
                    ack_below: s.ack_below,
                    time,
                    command,
                }),
            },
            Request::Register => LogCommand::Session(SessionEntry::Register { time }),
            Request::Unregister(session) => {
                LogCommand::Session(SessionEntry::Unregister { session, time })
            }
        };
        match self.raft.propose(Bytes::from(command.encode())) {
            Ok(index) => {
                // An earlier proposal at this index was lost with a leadership change.
                // (It may still commit through another leader's log: the outcome is unknown.)
                if let Some((_, lost)) = self.proposals.insert(index, (self.raft.term(), tag)) {
                    self.reply(lost, unknown_response());
                }
            }
            Err(ProposeError::NotLeader { leader }) => self.reply(
                tag,
                Response::NotLeader {
                    leader: leader.map(NodeId::get),
                },
            ),
            // Refused on any node, now and on every retry: a definite error.
            Err(ProposeError::TooLarge { bytes, max }) => {
                let why = format!(
                    "ERR the command is too large: {bytes} bytes once encoded, at most {max}"
                );
                self.reply(tag, Response::Kv(KvReply::Error(why)));
            }
            Err(e) => self.reply(tag, Response::Retry(e.to_string())),
        }
    }

    fn read(&mut self, tag: Tag, query: KvQuery, mode: ReadMode) {
        match mode {
            ReadMode::Follower => {
                let reply = self.answer(&query);
                self.reply(tag, Response::Kv(reply));
            }
            ReadMode::Lease if self.raft.read_lease().is_some() => {
                let index = self.raft.read_lease().unwrap_or_default();
                self.wait_applied(index, tag, query);
            }
            ReadMode::Lease | ReadMode::Linearizable => {
                self.next_read = self.next_read.wrapping_add(1);
                match self.raft.read_index(ReadId(self.next_read)) {
                    Ok(()) => {
                        self.reads.insert(self.next_read, (tag, query));
                    }
                    Err(e) => self.reply(tag, Response::Retry(e.to_string())),
                }
            }
        }
    }

    fn wait_applied(&mut self, index: LogIndex, tag: Tag, query: KvQuery) {
        match self
            .read_wait
            .wait(index, self.raft.applied_index(), (tag, query))
        {
            Ok(Some((tag, query))) => {
                let reply = self.answer(&query);
                self.reply(tag, Response::Kv(reply));
            }
            Ok(None) => {}
            Err(e) => self.reply(tag, Response::Retry(e.to_string())),
        }
    }

    fn drain(&mut self) {
        while self.raft.has_ready() {
            let ready = self.raft.ready();
            if let Some((token, write)) = ready.persist {
                self.effects.push_back(Effect::Persist { token, write });
            }
            self.effects
                .extend(ready.messages.into_iter().map(|message| Effect::Send {
                    to: message.to,
                    message,
                }));
            if let Some(snapshot) = ready.snapshot {
                match KvStore::restore(&snapshot.data) {
                    Some(kv) => {
                        self.kv = kv;
                        if let Some(feed) = &mut self.watch_feed {
                            feed.push(WatchFeed::Jump {
                                revision: self.kv.revision(),
                            });
                        }
                        // The leases were replaced: their time left counts from now, and
                        // a leader's expirer starts again.
                        self.expirer.restored(self.now, self.kv.leases());
                        self.expirer_term = None;
                    }
                    None => {
                        self.effects.push_back(Effect::Apply(Fatal(format!(
                            "the snapshot at index {} does not decode",
                            snapshot.meta.index
                        ))));
                        return;
                    }
                }
                let rest = self.proposals.split_off(&snapshot.meta.index.next());
                for (_, (_, tag)) in std::mem::replace(&mut self.proposals, rest) {
                    self.reply(tag, unknown_response());
                }
                self.changes = self.changes.split_off(&snapshot.meta.index.next());
            }
            let mut applied = None;
            for entry in ready.committed {
                applied = Some(entry.index);
                let reply = match entry.payload {
                    Payload::Command(bytes) => {
                        self.applied_bytes += bytes.len() as u64;
                        match LogCommand::decode(&bytes) {
                            Some(command) => {
                                let reply = self.apply_command(entry.index, command);
                                for event in self.kv.lease_events() {
                                    self.expirer.applied(self.now, event);
                                }
                                reply
                            }
                            None => KvReply::Error("ERR undecodable log entry".into()),
                        }
                    }
                    Payload::Membership(_) => {
                        if self.changes.get(&entry.index) == Some(&entry.term) {
                            self.changes_committed += 1;
                        }
                        KvReply::Ok
                    }
                    Payload::Noop => KvReply::Ok,
                };
                // Changes at or below this index are settled, committed or overwritten.
                while self
                    .changes
                    .first_key_value()
                    .is_some_and(|(&index, _)| index <= entry.index)
                {
                    self.changes.pop_first();
                }
                // Proposals at or below this index are settled: ours if the term matches.
                // (Taken from the front one at a time: a split per entry would build a new
                // tree for the proposals still waiting, each time.)
                while let Some(first) = self.proposals.first_entry()
                    && *first.key() <= entry.index
                {
                    let (index, (term, tag)) = first.remove_entry();
                    if index == entry.index && term == entry.term {
                        self.reply(tag, Response::Kv(reply.clone()));
                    } else {
                        self.reply(tag, lost_response());
                    }
                }
            }
            for read in ready.reads {
                let Some((tag, query)) = self.reads.remove(&read.id.0) else {
                    continue;
                };
                match read.index {
                    Some(index) => self.wait_applied(index, tag, query),
                    None => self.reply(
                        tag,
                        Response::Retry("leadership not confirmed; retry".into()),
                    ),
                }
            }
            let applied_now = self.raft.applied_index();
            for (tag, query) in self.read_wait.applied(applied_now) {
                let reply = self.answer(&query);
                self.reply(tag, Response::Kv(reply));
            }
            if let Some(index) = applied {
                self.maybe_compact(index);
            }
        }
        // The next proposal is stamped no earlier than what this replica has applied.
        self.replicated.observe(self.kv.replicated_ms());
        if self.raft.role() != Role::Leader
            && !self.reads.is_empty()
            && self.raft.leader().is_none()
        {
            // Reads waiting for a confirmation that will not come from this node.
            for (_, (tag, _)) in std::mem::take(&mut self.reads) {
                self.reply(tag, Response::Retry("no leader; retry".into()));
            }
        }
    }

    /// Asks to be woken for Raft's next tick, if that moved.
    fn ask_wake(&mut self) {
        if let Some(at) = self.raft.next_tick()
            && self.wake != Some(at)
        {
            self.wake = Some(at);
            self.effects.push_back(Effect::WakeAt(at));
        }
    }

    /// Deliberately broken: every fenced write is applied as if its token were current
    /// (the fence is taken off each command before the store applies it), so a paused
    /// former lock holder's write goes through. Only for the test that shows its checker
    /// catches it.
    #[cfg(feature = "broken")]
    #[must_use]
    pub fn broken_unchecked_fences(mut self) -> CoreNode {
        self.unchecked_fences = true;
        self
    }

    /// Applies a committed command to the store, and feeds watches what it changed.
    fn apply_command(&mut self, index: LogIndex, command: LogCommand) -> KvReply {
        #[cfg(feature = "broken")]
        let command = if self.unchecked_fences {
            unfenced(command)
        } else {
            command
        };
        let reply = self.kv.apply(index, command);
        if let Some(feed) = &mut self.watch_feed
            && !self.kv.changes().is_empty()
        {
            feed.push(WatchFeed::Changes {
                revision: self.kv.revision(),
                changes: self.kv.take_changes(),
            });
        }
        reply
    }

    fn maybe_compact(&mut self, applied: LogIndex) {
        let snapshot_index = self.raft.log().snapshot().meta.index;
        let entries = applied.0.saturating_sub(snapshot_index.0) >= self.snapshot_entries;
        let bytes = self.applied_bytes >= self.snapshot_log_bytes_min.max(self.kv.bytes());
        if (entries || bytes) && applied > snapshot_index {
            // Cannot fail: `applied` is applied and above the snapshot.
            let _ = self.raft.compact(applied, Bytes::from(self.kv.snapshot()));
            self.applied_bytes = 0;
        }
    }
}

/// The Consistent Core node on the node contract.
///
/// Every input first runs Raft's ticks due at `now` (the caller's monotonic clock read when
/// it hands the input in: a lease read is answered against it, so it must not be read
/// earlier, before a wait in a queue, say). A driver with several inputs waiting may hand
/// them all in and then drain once, so that the proposals of many clients leave in one
/// append message per follower, and their entries are made durable by one persist effect.
/// Drain once right after construction: it loads the log's snapshot and replays the
/// committed entries.
impl Protocol for CoreNode {
    type Message = Message;
    type Request = Command;
    type Response = Response;
    type Write = RaftWrite;
    type Apply = Fatal;

    fn id(&self) -> NodeId {
        self.raft.id()
    }

    fn handle(&mut self, now: Time, input: InputOf<Self>) {
        // Raft's clock first: a lease is checked against the time of the read, never
        // against a count of the wake-ups that happened to arrive before it.
        self.raft.advance(now);
        self.replicated.tick(now.as_millis());
        self.now = now;
        if !self.timed {
            // The leases replayed at construction were applied before the node knew the
            // time: their time left counts from now.
            self.timed = true;
            self.expirer.restored(now, self.kv.leases());
        }
        match input {
            Input::Message { from, message } => {
                self.raft.handle(now, Input::Message { from, message });
            }
            Input::Wake => {}
            Input::Persisted(token) => self.raft.persisted(token),
            Input::Request { id, request } => match request {
                Command::Client(request) => self.client(id, request),
                Command::HandOver => {
                    self.hand_over();
                    self.reply(id, Response::Kv(KvReply::Ok));
                }
                Command::ProposeMembership(next) => self.propose_membership(id, next),
            },
        }
    }

    fn poll(&mut self) -> Option<EffectOf<Self>> {
        if self.effects.is_empty() {
            self.drain();
            if self.step_leases() {
                self.drain();
            }
            self.ask_wake();
        }
        self.effects.pop_front()
    }
}

fn lost_response() -> Response {
    Response::Retry("the proposal was lost in a leadership change; retry".into())
}

fn unknown_response() -> Response {
    Response::Unknown("the proposal's fate is unknown after a leadership change".into())
}

/// `command` with every fence taken off (the broken variant that checks no token).
#[cfg(feature = "broken")]
fn unfenced(command: LogCommand) -> LogCommand {
    fn strip(command: KvCommand) -> KvCommand {
        match command {
            KvCommand::Fenced { command, .. } => strip(*command),
            KvCommand::Transaction { watched, ops } => KvCommand::Transaction {
                watched,
                ops: ops
                    .into_iter()
                    .map(|op| match op {
                        TxOp::Write(command) => TxOp::Write(strip(command)),
                        read @ TxOp::Read(_) => read,
                    })
                    .collect(),
            },
            other => other,
        }
    }
    match command {
        LogCommand::Plain { time, command } => LogCommand::Plain {
            time,
            command: strip(command),
        },
        LogCommand::Session(SessionEntry::Request {
            session,
            seq,
            ack_below,
            time,
            command,
        }) => LogCommand::Session(SessionEntry::Request {
            session,
            seq,
            ack_below,
            time,
            command: strip(command),
        }),
        other => other,
    }
}

/// Gives every lease grant in `command` the TTL `grant` allows (the minimum raised to),
/// however the grant is wrapped: behind a `FENCE`, or among a transaction's operations.
fn raise_grants<E>(
    command: &mut KvCommand,
    grant: &impl Fn(u64) -> Result<u64, E>,
) -> Result<(), E> {
    match command {
        KvCommand::Lease(LeaseCommand::Grant { ttl_ms }) => *ttl_ms = grant(*ttl_ms)?,
        KvCommand::Fenced { command, .. } => raise_grants(command, grant)?,
        KvCommand::Transaction { ops, .. } => {
            for op in ops {
                if let TxOp::Write(command) = op {
                    raise_grants(command, grant)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consistent_core::kv::PutCondition;
    use std::time::Duration;

    use synod_consensus::{Config, LogStore, MemLogStore, Membership};
    use synod_node::PersistToken;

    const TICK: Duration = Duration::from_millis(50);

    fn tick_us() -> u64 {
        u64::try_from(TICK.as_micros()).expect("small")
    }

    /// A cluster in memory: messages delivered at once unless the sender or recipient is
    /// cut off, every persistence request synced at once unless the node's syncs are
    /// stalled (then its writes are applied to its disk and synced only when the test
    /// releases them, while its messages go on: a process whose sync thread is slow); one
    /// clock for every node, which each node reads with its own offset.
    struct Cluster {
        nodes: Vec<CoreNode>,
        /// Each node's "disk": its writes are applied here and synced at once.
        disks: Vec<MemLogStore>,
        cut: Option<usize>,
        /// Nodes whose syncs wait for [`Cluster::release_syncs`].
        stalled: Vec<bool>,
        /// For each node, the last token of the writes applied and not synced yet.
        unsynced: Vec<Option<PersistToken>>,
        replies: Vec<(Tag, Response)>,
        now: Duration,
        offsets: Vec<Duration>,
    }

    impl Cluster {
        fn new(n: u64, snapshot_entries: u64) -> Cluster {
            Cluster::with_config(n, snapshot_entries, |c| c)
        }

        fn with_config(
            n: u64,
            snapshot_entries: u64,
            config: impl Fn(synod_consensus::ConfigBuilder) -> synod_consensus::ConfigBuilder,
        ) -> Cluster {
            let membership = Membership::new((1..=n).map(NodeId::new), []).expect("valid");
            let nodes = (1..=n)
                .map(|id| {
                    let config =
                        config(Config::builder(NodeId::new(id)).tick_interval_us(tick_us()))
                            .build()
                            .expect("valid");
                    let raft = Node::new(config, MemLogStore::new(membership.clone()));
                    CoreNode::new(raft, snapshot_entries)
                })
                .collect();
            Cluster {
                nodes,
                disks: vec![MemLogStore::new(membership); usize::try_from(n).expect("small")],
                cut: None,
                stalled: vec![false; usize::try_from(n).expect("small")],
                unsynced: vec![None; usize::try_from(n).expect("small")],
                replies: Vec::new(),
                now: Duration::ZERO,
                offsets: vec![Duration::ZERO; usize::try_from(n).expect("small")],
            }
        }

        fn run(&mut self, at: usize, input: InputOf<CoreNode>) {
            let mut queue = vec![(at, input)];
            while let Some((at, input)) = queue.pop() {
                let now = time(self.now + self.offsets[at]);
                self.nodes[at].handle(now, input);
                let from = self.nodes[at].id();
                for effect in drain(&mut self.nodes[at]) {
                    match effect {
                        Effect::Send { to, message } => {
                            let to = usize::try_from(to.get() - 1).expect("small");
                            if self.cut != Some(to) && self.cut != Some(at) {
                                queue.insert(0, (to, Input::Message { from, message }));
                            }
                        }
                        Effect::Persist { token, write } => {
                            self.disks[at].apply(&write);
                            if self.stalled[at] {
                                self.unsynced[at] = Some(token);
                            } else {
                                self.disks[at].sync();
                                self.unsynced[at] = None;
                                queue.push((at, Input::Persisted(token)));
                            }
                        }
                        Effect::Reply { id, response } => self.replies.push((id, response)),
                        Effect::Apply(Fatal(why)) => panic!("{why}"),
                        Effect::WakeAt(_) => {}
                    }
                }
            }
        }

        /// Syncs what node `at` wrote while its syncs were stalled, acknowledges it, and
        /// lets its syncs run at once again.
        fn release_syncs(&mut self, at: usize) {
            self.stalled[at] = false;
            if let Some(token) = self.unsynced[at].take() {
                self.disks[at].sync();
                self.run(at, Input::Persisted(token));
            }
        }

        /// Node `at` crashes (its disk loses what was not synced) and restarts from its
        /// disk, cut off from the others until the test says otherwise.
        fn crash_and_restart(&mut self, at: usize) {
            self.disks[at].crash();
            self.stalled[at] = false;
            self.unsynced[at] = None;
            let config = Config::builder(self.nodes[at].id())
                .tick_interval_us(tick_us())
                .build()
                .expect("valid");
            self.nodes[at] = CoreNode::new(Node::new(config, self.disks[at].clone()), 1_000_000);
            self.cut = Some(at);
            self.run(at, Input::Wake);
        }

        /// Asks node `at` for `command` as request `id`; its reply, if one came.
        fn command(&mut self, at: usize, id: u64, command: Command) -> Option<Response> {
            let id = RequestId(id);
            self.run(
                at,
                Input::Request {
                    id,
                    request: command,
                },
            );
            let i = self.replies.iter().position(|(t, _)| *t == id)?;
            Some(self.replies.remove(i).1)
        }

        fn tick_all(&mut self, ticks: usize) {
            self.tick_all_but(None, ticks);
        }

        /// Moves the clock on by `ticks` ticks, handing a timer input to every node
        /// except `withheld` at each.
        fn tick_all_but(&mut self, withheld: Option<usize>, ticks: usize) {
            for _ in 0..ticks {
                self.now += TICK;
                for i in (0..self.nodes.len()).filter(|&i| Some(i) != withheld) {
                    self.run(i, Input::Wake);
                }
            }
        }

        fn client(&mut self, at: usize, tag: u64, request: Request) -> Option<Response> {
            self.command(at, tag, Command::Client(request))
        }

        fn leader(&self) -> usize {
            self.nodes
                .iter()
                .position(|n| n.raft().role() == Role::Leader)
                .expect("a leader")
        }

        fn leader_other_than(&self, old: usize) -> usize {
            (0..self.nodes.len())
                .find(|&i| i != old && self.nodes[i].raft().role() == Role::Leader)
                .expect("a new leader")
        }
    }

    /// Everything `node` hands out until it has nothing more.
    fn drain(node: &mut CoreNode) -> Vec<EffectOf<CoreNode>> {
        std::iter::from_fn(|| node.poll()).collect()
    }

    fn time(d: Duration) -> Time {
        Time::from_nanos(u64::try_from(d.as_nanos()).expect("small"))
    }

    fn ms(time: Duration) -> u64 {
        u64::try_from(time.as_millis()).expect("small")
    }

    fn put(key: &str, value: &str) -> Request {
        Request::Write {
            command: KvCommand::Put {
                key: key.into(),
                value: value.into(),
                condition: PutCondition::Always,
            },
            session: None,
        }
    }

    fn lease_get(key: &str) -> Request {
        Request::Read {
            query: KvQuery::Get(key.into()),
            mode: ReadMode::Lease,
        }
    }

    /// Hands the leadership to node `to` (an index), through Raft's leader transfer.
    fn hand_to(cluster: &mut Cluster, to: usize) {
        let from = cluster.leader();
        if from != to {
            let to_id = NodeId::new(u64::try_from(to).expect("small") + 1);
            cluster.nodes[from]
                .raft
                .transfer_leadership(to_id)
                .expect("the leader hands over");
            cluster.tick_all(20);
        }
        assert_eq!(cluster.leader(), to);
    }

    #[test]
    fn replicated_time_follows_time_elapsed_whatever_the_leaders_clocks_read() {
        const MINUTE: Duration = Duration::from_secs(60);
        let mut cluster = Cluster::new(3, 1_000_000);
        // Node 2's clock reads 15 minutes ahead of node 1's, node 3's 15 minutes behind.
        cluster.offsets = vec![15 * MINUTE, 30 * MINUTE, Duration::ZERO];
        cluster.tick_all(40);
        // A session opened under the node whose clock is furthest behind.
        hand_to(&mut cluster, 2);
        let Some(Response::Kv(KvReply::Int(id))) = cluster.client(2, 1, Request::Register) else {
            panic!("registered")
        };
        let session = SessionId(u64::try_from(id).expect("an id"));
        let (mut seq, mut last) = (0u64, [0u64; 3]);
        // Every node leads in turn, the one 30 minutes ahead first, for 30 s each, while the
        // client writes every 10 s (the session would expire after 10 minutes idle).
        for leader in [1, 0, 2, 1] {
            hand_to(&mut cluster, leader);
            for _ in 0..3 {
                cluster.tick_all(200);
                seq += 1;
                let incr = Request::Write {
                    command: KvCommand::Incr {
                        key: b"n".to_vec(),
                        by: 1,
                    },
                    session: Some(SessionSeq {
                        session,
                        seq,
                        ack_below: seq,
                    }),
                };
                let reply = cluster.client(leader, 1 + seq, incr);
                let want = Response::Kv(KvReply::Int(i64::try_from(seq).expect("small")));
                assert_eq!(reply, Some(want), "node {} leads", leader + 1);
                // Replicated time never goes back, never runs ahead of the time elapsed (the
                // cluster started at replicated time 0), and follows it closely.
                let elapsed_ms = ms(cluster.now);
                for (i, node) in cluster.nodes.iter().enumerate() {
                    let replicated_ms = node.kv().replicated_ms();
                    assert!(
                        (last[i]..=elapsed_ms).contains(&replicated_ms),
                        "node {} reads {replicated_ms} ms (before: {}) after {elapsed_ms} ms",
                        i + 1,
                        last[i]
                    );
                    last[i] = replicated_ms;
                }
                let lag_ms = elapsed_ms - cluster.nodes[leader].kv().replicated_ms();
                assert!(lag_ms <= 1_000, "replicated time {lag_ms} ms behind");
            }
        }
    }

    #[test]
    fn a_lease_read_is_checked_against_the_time_it_arrives_at_not_the_ticks_delivered() {
        let mut cluster = Cluster::with_config(3, 1000, |c| c.lease_reads(3));
        cluster.tick_all(40);
        let old = cluster.leader();
        let put_ok = cluster.client(old, 1, put("k", "old"));
        assert_eq!(put_ok, Some(Response::Kv(KvReply::Ok)));
        cluster.tick_all(4); // a heartbeat round: the lease starts
        // Cut off, the leader still answers from its lease at once: no quorum round.
        cluster.cut = Some(old);
        assert_eq!(
            cluster.client(old, 2, lease_get("k")),
            Some(Response::Kv(KvReply::Bulk(b"old".to_vec()))),
            "a lease read within the lease"
        );
        // The old leader's timer inputs stop (a paused process, a stalled sync, a starved
        // ticker) while the others elect a leader and commit a write.
        cluster.tick_all_but(Some(old), 40);
        let new = cluster.leader_other_than(old);
        let put_new = cluster.client(new, 3, put("k", "new"));
        assert_eq!(put_new, Some(Response::Kv(KvReply::Ok)));
        // The first thing the old leader hears of is a lease read, at the current time.
        let answer = cluster.client(old, 4, lease_get("k"));
        assert_ne!(
            answer,
            Some(Response::Kv(KvReply::Bulk(b"old".to_vec()))),
            "a stale read from a lapsed lease"
        );
        assert_ne!(cluster.nodes[old].raft().role(), Role::Leader);
        // Back in touch, the old leader serves the new value.
        cluster.cut = None;
        cluster.tick_all(40);
        let answer = cluster.client(old, 5, lease_get("k"));
        assert_eq!(answer, Some(Response::Kv(KvReply::Bulk(b"new".to_vec()))));
    }

    #[test]
    fn a_membership_change_commits_and_a_second_one_waits_for_it() {
        let mut cluster = Cluster::new(3, 1000);
        cluster.tick_all(40);
        let leader = cluster.leader();
        let follower = (leader + 1) % 3;
        let id = |i: usize| NodeId::new(u64::try_from(i).expect("small") + 1);
        let voters = |skip: Option<usize>| (0..3).filter(move |&i| Some(i) != skip).map(id);
        let demoted = Membership::new(voters(Some(follower)), [id(follower)]).expect("valid");
        let change = |m: &Membership| Command::ProposeMembership(m.clone());
        // Only the leader takes a change.
        let refused = cluster.command(follower, 1, change(&demoted));
        assert_eq!(
            refused,
            Some(Response::NotLeader {
                leader: Some(id(leader).get())
            })
        );
        // Cut off, the leader keeps the change uncommitted until the cut heals.
        cluster.cut = Some(leader);
        let accepted = cluster.command(leader, 2, change(&demoted));
        assert_eq!(accepted, Some(Response::Kv(KvReply::Ok)));
        // A second change while the first is uncommitted is refused.
        let restored = Membership::new(voters(None), []).expect("valid");
        assert_eq!(
            cluster.command(leader, 3, change(&restored)),
            Some(Response::Retry(
                ProposeError::MembershipChangePending.to_string()
            ))
        );
        cluster.cut = None;
        cluster.tick_all(4);
        for node in &cluster.nodes {
            assert_eq!(node.raft().membership(), &demoted);
            assert!(node.raft().commit_index() >= node.raft().last_index());
        }
        assert_eq!(cluster.nodes[leader].membership_changes_committed(), 1);
        // Once it committed, the next change is taken: the learner is promoted back.
        let accepted = cluster.command(leader, 4, change(&restored));
        assert_eq!(
            accepted,
            Some(Response::Kv(KvReply::Ok)),
            "the first change committed"
        );
        cluster.tick_all(4);
        assert_eq!(cluster.nodes[leader].membership_changes_committed(), 2);
        for node in &cluster.nodes {
            assert_eq!(node.raft().membership(), &restored);
        }
        // The cluster still commits writes.
        assert_eq!(
            cluster.client(leader, 1, put("k", "v")),
            Some(Response::Kv(KvReply::Ok))
        );
    }

    #[test]
    fn a_follower_cut_off_during_compaction_catches_up_from_a_snapshot() {
        let mut cluster = Cluster::new(3, 10);
        cluster.tick_all(40);
        let leader = cluster.leader();
        let lagging = (leader + 1) % 3;
        cluster.cut = Some(lagging);
        for i in 0..50 {
            cluster.run(
                leader,
                Input::Request {
                    id: RequestId(i),
                    request: Command::Client(put(&format!("k{i}"), &format!("v{i}"))),
                },
            );
            cluster.tick_all(1);
        }
        let acked = cluster
            .replies
            .iter()
            .filter(|(_, r)| *r == Response::Kv(KvReply::Ok))
            .count();
        assert_eq!(acked, 50);
        // The leader compacted its log past what the lagging follower has.
        let first = cluster.nodes[leader].info().first;
        assert!(
            first.0 > cluster.nodes[lagging].info().last.0 + 1,
            "{first}"
        );
        cluster.cut = None;
        cluster.tick_all(40);
        let caught_up = &cluster.nodes[lagging];
        assert_eq!(caught_up.kv().len(), 50);
        assert_eq!(
            caught_up.kv().query(&KvQuery::Get(b"k49".to_vec())),
            KvReply::Bulk(b"v49".to_vec())
        );
    }

    #[test]
    fn a_log_of_large_commands_is_compacted_before_its_entry_count_says_so() {
        let mut cluster = Cluster::new(1, 1_000_000);
        let node = cluster.nodes.remove(0).with_snapshot_log_bytes(8 << 10);
        cluster.nodes.push(node);
        cluster.tick_all(40);
        let value = "v".repeat(1024);
        let write = |cluster: &mut Cluster, tag: u64, key: String| {
            cluster.run(
                0,
                Input::Request {
                    id: RequestId(tag),
                    request: Command::Client(put(&key, &value)),
                },
            );
        };
        // Four keys overwritten 40 times: a state of 4 KiB, 40 KiB of log.
        for i in 0..40 {
            write(&mut cluster, i, format!("k{}", i % 4));
        }
        let info = cluster.nodes[0].info();
        assert!(
            info.first.0 > 32,
            "the log was not compacted by size: {info:?}"
        );
        // New keys only: the log since the last snapshot may grow as large as the state,
        // no larger, so a snapshot costs no more than the log it replaces.
        for i in 40..100 {
            write(&mut cluster, i, format!("new{i}"));
        }
        let node = &cluster.nodes[0];
        let log_bytes = node.applied_bytes;
        assert!(
            log_bytes <= node.kv().bytes() + 2048,
            "{log_bytes} bytes of log since the snapshot, {} of state",
            node.kv().bytes()
        );
        assert_eq!(node.kv().len(), 64);
    }

    #[test]
    fn a_node_restarted_on_its_compacted_store_rebuilds_its_state() {
        let mut cluster = Cluster::new(1, 10);
        cluster.tick_all(40);
        for i in 0..25 {
            cluster.run(
                0,
                Input::Request {
                    id: RequestId(i),
                    request: Command::Client(put(&format!("k{i}"), "x")),
                },
            );
        }
        let old = cluster.nodes.remove(0);
        assert!(old.info().first.0 > 1, "compacted");
        let mut disk = cluster.disks.remove(0);
        disk.crash();
        assert!(
            disk.snapshot().meta.index.0 > 1,
            "the disk holds the snapshot"
        );
        let config = Config::builder(NodeId::new(1))
            .tick_interval_us(tick_us())
            .build()
            .expect("valid");
        let mut restarted = CoreNode::new(Node::new(config, disk.clone()), 10);
        fn drive(node: &mut CoreNode, disk: &mut MemLogStore, now: Duration) {
            let mut effects = drain(node);
            while let Some(effect) = effects.pop() {
                if let Effect::Persist { token, write } = effect {
                    disk.apply(&write);
                    disk.sync();
                    node.handle(time(now), Input::Persisted(token));
                    effects.extend(drain(node));
                }
            }
        }
        drive(&mut restarted, &mut disk, Duration::ZERO);
        // The snapshot is loaded at once; entries above it replay once committed again.
        assert!(restarted.kv().len() >= 10, "the snapshot is loaded");
        for t in 1..=40 {
            let now = TICK * t;
            restarted.handle(time(now), Input::Wake);
            drive(&mut restarted, &mut disk, now);
        }
        assert_eq!(restarted.kv().len(), 25);
    }

    fn linearizable_get(key: &str) -> Request {
        Request::Read {
            query: KvQuery::Get(key.into()),
            mode: ReadMode::Linearizable,
        }
    }

    /// The Raft thesis' leader writes its log in parallel with replication (10.2.1): a
    /// commit needs a majority of durable copies, which both followers' are before the
    /// leader's own sync ends. What the process driver relies on to sync on a thread of its
    /// own while its node takes acknowledgements in.
    #[test]
    fn a_write_commits_on_both_followers_copies_while_the_leaders_own_sync_is_outstanding() {
        let mut cluster = Cluster::new(3, 1_000_000);
        cluster.tick_all(40);
        let leader = cluster.leader();
        cluster.stalled[leader] = true;
        assert_eq!(
            cluster.client(leader, 1, put("k", "v")),
            Some(Response::Kv(KvReply::Ok))
        );
        // Answered with the leader's own copy not durable: a crash now would lose it there.
        assert!(cluster.unsynced[leader].is_some(), "the leader synced");
        let mut crashed = cluster.disks[leader].clone();
        crashed.crash();
        assert!(crashed.last_index() < cluster.nodes[leader].raft().last_index());
        assert_eq!(
            cluster.nodes[leader]
                .kv()
                .query(&KvQuery::Get(b"k".to_vec())),
            KvReply::Bulk(b"v".to_vec())
        );
    }

    /// The leader's copy counts only once durable: with one follower's copy and its own
    /// unsynced, a write waits for the leader's sync.
    #[test]
    fn a_write_held_by_one_follower_waits_for_the_leaders_own_sync() {
        let mut cluster = Cluster::new(3, 1_000_000);
        cluster.tick_all(40);
        let leader = cluster.leader();
        cluster.cut = Some((leader + 1) % 3);
        cluster.stalled[leader] = true;
        assert_eq!(cluster.client(leader, 1, put("k", "v")), None);
        cluster.release_syncs(leader);
        let reply = cluster.replies.iter().find(|(tag, _)| *tag == RequestId(1));
        assert_eq!(reply.map(|(_, r)| r), Some(&Response::Kv(KvReply::Ok)));
    }

    /// A leader that acknowledged writes on its followers' copies and crashed before its
    /// own sync lost them from its disk, not from the cluster: the next leader serves them,
    /// and the old one, restarted, gets them back.
    #[test]
    fn a_leader_that_crashes_before_its_own_sync_loses_no_acknowledged_write() {
        let mut cluster = Cluster::new(3, 1_000_000);
        cluster.tick_all(40);
        let leader = cluster.leader();
        cluster.stalled[leader] = true;
        for (tag, key) in [(1, "a"), (2, "b")] {
            assert_eq!(
                cluster.client(leader, tag, put(key, "v")),
                Some(Response::Kv(KvReply::Ok))
            );
        }
        let acknowledged = cluster.nodes[leader].raft().commit_index();
        cluster.crash_and_restart(leader);
        assert!(
            cluster.nodes[leader].raft().last_index() < acknowledged,
            "the crash lost the leader's unsynced copy"
        );
        cluster.tick_all_but(Some(leader), 40);
        let next = cluster.leader_other_than(leader);
        for (tag, key) in [(3, "a"), (4, "b")] {
            assert_eq!(
                cluster.client(next, tag, linearizable_get(key)),
                Some(Response::Kv(KvReply::Bulk(b"v".to_vec())))
            );
        }
        cluster.cut = None;
        cluster.tick_all(40);
        for key in ["a", "b"] {
            assert_eq!(
                cluster.nodes[leader].kv().query(&KvQuery::Get(key.into())),
                KvReply::Bulk(b"v".to_vec()),
                "the restarted node caught up"
            );
        }
    }

    fn write(command: KvCommand) -> Request {
        Request::Write {
            command,
            session: None,
        }
    }

    fn present(node: &CoreNode, key: &str) -> bool {
        node.kv().query(&KvQuery::Get(key.into())) != KvReply::Nil
    }

    #[test]
    fn a_key_expires_through_the_leader_on_every_replica_and_never_before_its_ttl() {
        use crate::consistent_core::kv::Expiry;
        let mut cluster = Cluster::new(3, 1_000_000);
        cluster.tick_all(40);
        let leader = cluster.leader();
        let set = write(KvCommand::PutExpiring {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            condition: PutCondition::Always,
            expiry: Expiry::TtlMs(2_000),
        });
        assert_eq!(
            cluster.client(leader, 1, set),
            Some(Response::Kv(KvReply::Ok))
        );
        let start = cluster.now;
        while cluster.nodes.iter().any(|n| present(n, "k")) {
            // Followers learn the expiry's commit on the leader's next message or tick.
            assert!(
                cluster.now - start < Duration::from_secs(2) + TICK,
                "still on node {} past its TTL and a tick",
                1 + cluster
                    .nodes
                    .iter()
                    .position(|n| present(n, "k"))
                    .unwrap_or(9)
            );
            cluster.tick_all(1);
            assert!(
                cluster.now - start < Duration::from_secs(10),
                "never expired"
            );
        }
        // Within an expiry tick and a commit of the TTL.
        let took = cluster.now - start;
        assert!(took <= Duration::from_millis(2_200), "{took:?}");
        // Only the leader's expirer acts.
        for (i, node) in cluster.nodes.iter().enumerate() {
            assert_eq!(node.expires_leases(), i == leader);
        }
    }

    #[test]
    fn a_leader_paused_past_a_lease_revokes_nothing_when_it_wakes() {
        use crate::consistent_core::kv::Expiry;
        use synod_membership::lease::LeaseId;
        let mut cluster = Cluster::new(3, 1_000_000);
        cluster.tick_all(40);
        let old = cluster.leader();
        let grant = write(KvCommand::Lease(LeaseCommand::Grant { ttl_ms: 10 }));
        // Raised to the minimum TTL, 1.5 election timeouts (20 ticks of 50 ms).
        assert_eq!(
            cluster.client(old, 1, grant),
            Some(Response::Kv(KvReply::Int(1)))
        );
        let keep_alive = || {
            write(KvCommand::Lease(LeaseCommand::KeepAlive {
                lease: LeaseId(1),
            }))
        };
        assert_eq!(
            cluster.client(old, 2, keep_alive()),
            Some(Response::Kv(KvReply::Int(1_500)))
        );
        let lock = write(KvCommand::PutExpiring {
            key: b"lock".to_vec(),
            value: b"me".to_vec(),
            condition: PutCondition::IfAbsent,
            expiry: Expiry::Lease(LeaseId(1)),
        });
        assert_eq!(
            cluster.client(old, 3, lock),
            Some(Response::Kv(KvReply::Ok))
        );
        // The leader stops (a paused process: no inputs at all) for 6 s, four TTLs, while
        // the others elect a leader and the holder keeps its lease alive there.
        cluster.cut = Some(old);
        for round in 0..12 {
            cluster.tick_all_but(Some(old), 10);
            if let Some(new) =
                (0..3).find(|&i| i != old && cluster.nodes[i].raft().role() == Role::Leader)
            {
                let renewed = cluster.client(new, 10 + round, keep_alive());
                assert_eq!(renewed, Some(Response::Kv(KvReply::Int(1_500))));
            }
        }
        // It wakes still believing it leads, with every deadline it knew of long past.
        cluster.cut = None;
        assert_eq!(cluster.nodes[old].raft().role(), Role::Leader);
        cluster.tick_all(1);
        let new = cluster.leader_other_than(old);
        for round in 0..4 {
            cluster.tick_all(10);
            cluster.client(new, 30 + round, keep_alive());
        }
        for (i, node) in cluster.nodes.iter().enumerate() {
            assert!(present(node, "lock"), "node {} lost the lock", i + 1);
            assert!(node.kv().leases().get(LeaseId(1)).is_some());
        }
        assert!(!cluster.nodes[old].expires_leases());
    }

    /// A lock holder of the lease sweep, on the cluster's one clock.
    #[derive(Debug, Default)]
    struct Holder {
        lease: Option<u64>,
        /// The token and the end of what it believes: the start of its last successful
        /// renewal plus the TTL.
        holding: Option<(u64, Duration)>,
        /// Its last successful renewal's start.
        renewed: Duration,
        paused_until: Duration,
        next_keep_alive: Duration,
    }

    /// What the sweep found wrong, if anything.
    #[derive(Debug, Default)]
    struct SweepFindings {
        two_holders: Option<String>,
        stale_write: Option<String>,
        early_expiry: Option<String>,
        late_expiry: Option<String>,
    }

    const SWEEP_TTL: Duration = Duration::from_millis(1_500);

    /// One seed of the lease sweep: three nodes, two lock holders and a key given an expiry
    /// every 2 s, with leaders paused (no inputs at all) for up to 3 s, leaders handed over,
    /// holders paused for up to 4 s (longer than their lease), for 40 s of simulated time.
    /// Checks that at most one holder believes it holds the lock at any instant (until its
    /// last renewal's start plus the TTL), that a fenced write is applied only with the
    /// newest token, and that a key with an expiry goes no earlier than its TTL and no
    /// later than the stated bound.
    fn lease_sweep(seed: u64, broken: bool, hand_overs_only: bool) -> SweepFindings {
        lease_sweep_believing(seed, broken, hand_overs_only, SWEEP_TTL)
    }

    /// [`lease_sweep`] with holders that believe they hold the lock for `belief` after the
    /// start of their last renewal (the TTL, unless a test breaks them).
    fn lease_sweep_believing(
        seed: u64,
        broken: bool,
        hand_overs_only: bool,
        belief: Duration,
    ) -> SweepFindings {
        use crate::consistent_core::kv::Expiry;
        use synod_node::{Probability, Rng};
        let mut rng = Rng::new(seed);
        let mut cluster = Cluster::new(3, 50);
        if broken {
            #[cfg(feature = "broken")]
            {
                cluster.nodes = std::mem::take(&mut cluster.nodes)
                    .into_iter()
                    .map(CoreNode::broken_lease_renewal_on_election)
                    .collect();
            }
        }
        cluster.tick_all(40);
        let mut found = SweepFindings::default();
        let mut holders: Vec<Holder> = (0..2).map(|_| Holder::default()).collect();
        let mut max_token = 0u64;
        let mut tag = 100u64;
        let mut paused: Option<(usize, Duration)> = None;
        // Keys with an expiry: (key, set at, TTL, term when set, seen on each node).
        let mut ttl_keys: Vec<(String, Duration, Duration, u64, [bool; 3])> = Vec::new();
        let et = Duration::from_millis(cluster.nodes[0].lease_config().election_timeout_ms());
        let checkpoint =
            Duration::from_millis(cluster.nodes[0].lease_config().checkpoint_interval_ms());
        let end = cluster.now + Duration::from_secs(40);
        while cluster.now < end {
            // Faults: with `hand_overs_only`, a hand-over every 700 ms and nothing else.
            if hand_overs_only {
                if cluster.now.as_millis() % 700 < 50 {
                    let leader = cluster.leader();
                    let to = NodeId::new(u64::try_from((leader + 1) % 3).expect("small") + 1);
                    let _ = cluster.nodes[leader].raft.transfer_leadership(to);
                }
            } else {
                match paused {
                    Some((node, until)) if cluster.now >= until => {
                        cluster.cut = None;
                        paused = None;
                        let _ = node;
                    }
                    None if rng.chance(Probability::from_ppm(5_000)) => {
                        if let Some(leader) =
                            (0..3).find(|&i| cluster.nodes[i].raft().role() == Role::Leader)
                        {
                            let ms = 500 + rng.below(2_500);
                            cluster.cut = Some(leader);
                            paused = Some((leader, cluster.now + Duration::from_millis(ms)));
                        }
                    }
                    None if rng.chance(Probability::from_ppm(5_000)) => {
                        if let Some(leader) =
                            (0..3).find(|&i| cluster.nodes[i].raft().role() == Role::Leader)
                        {
                            let to =
                                (leader + 1 + usize::try_from(rng.below(2)).expect("small")) % 3;
                            let to_id = NodeId::new(u64::try_from(to).expect("small") + 1);
                            let _ = cluster.nodes[leader].raft.transfer_leadership(to_id);
                        }
                    }
                    _ => {}
                }
            }
            cluster.tick_all_but(paused.map(|(n, _)| n), 1);
            let now = cluster.now;
            let Some(leader) = (0..3).find(|&i| {
                Some(i) != paused.map(|(n, _)| n) && cluster.nodes[i].raft().role() == Role::Leader
            }) else {
                continue;
            };
            let mut call = |cluster: &mut Cluster, command: KvCommand| {
                tag += 1;
                cluster.client(leader, tag, write(command))
            };
            // Holders.
            for (h, holder) in holders.iter_mut().enumerate() {
                if now < holder.paused_until {
                    continue;
                }
                if rng.chance(Probability::from_ppm(3_000)) {
                    holder.paused_until = now + Duration::from_millis(1_000 + rng.below(3_000));
                    continue;
                }
                match (holder.lease, holder.holding) {
                    (None, _) => {
                        let grant = KvCommand::Lease(LeaseCommand::Grant { ttl_ms: 1_500 });
                        if let Some(Response::Kv(KvReply::Int(id))) = call(&mut cluster, grant) {
                            holder.lease = u64::try_from(id).ok();
                            holder.renewed = now;
                            holder.next_keep_alive = now + SWEEP_TTL / 3;
                        }
                    }
                    (Some(lease), None) => {
                        let set = KvCommand::PutExpiring {
                            key: b"lock".to_vec(),
                            value: format!("holder {h}").into_bytes(),
                            condition: PutCondition::IfAbsent,
                            expiry: Expiry::Lease(synod_membership::lease::LeaseId(lease)),
                        };
                        if call(&mut cluster, set) == Some(Response::Kv(KvReply::Ok)) {
                            let KvReply::Entry { revisions, .. } = cluster.nodes[leader]
                                .kv()
                                .query(&KvQuery::GetRevisions(b"lock".to_vec()))
                            else {
                                unreachable!()
                            };
                            let token = revisions.create;
                            max_token = max_token.max(token);
                            holder.holding = Some((token, holder.renewed + belief));
                        }
                    }
                    (Some(_), Some((token, _))) => {
                        // A fenced write with its token (after a pause, a stale one).
                        let fenced = KvCommand::Fenced {
                            lock: b"lock".to_vec(),
                            token,
                            command: Box::new(KvCommand::Put {
                                key: b"data".to_vec(),
                                value: token.to_string().into_bytes(),
                                condition: PutCondition::Always,
                            }),
                        };
                        if call(&mut cluster, fenced) == Some(Response::Kv(KvReply::Ok))
                            && token != max_token
                            && found.stale_write.is_none()
                        {
                            found.stale_write = Some(format!(
                                "at {now:?} a write with token {token} applied after token {max_token} was issued"
                            ));
                        }
                    }
                }
                if let Some(lease) = holder.lease
                    && now >= holder.next_keep_alive
                {
                    holder.next_keep_alive = now + SWEEP_TTL / 3;
                    let keep = KvCommand::Lease(LeaseCommand::KeepAlive {
                        lease: synod_membership::lease::LeaseId(lease),
                    });
                    match call(&mut cluster, keep) {
                        Some(Response::Kv(KvReply::Int(_))) => {
                            holder.renewed = now;
                            if let Some((token, _)) = holder.holding {
                                holder.holding = Some((token, now + belief));
                            }
                        }
                        Some(Response::Kv(KvReply::Error(_))) => *holder = Holder::default(),
                        _ => {}
                    }
                }
                if holder.holding.is_some_and(|(_, until)| now >= until) {
                    holder.holding = None; // it knows its belief has run out
                    holder.lease = None;
                }
            }
            let believing: Vec<String> = holders
                .iter()
                .enumerate()
                .filter_map(|(i, h)| {
                    h.holding
                        .filter(|&(_, until)| now < until)
                        .map(|(t, until)| format!("holder {i} (token {t}, until {until:?})"))
                })
                .collect();
            if believing.len() > 1 && found.two_holders.is_none() {
                found.two_holders = Some(format!("at {now:?}: {believing:?}"));
            }
            // Keys with an expiry, one every 2 s.
            if ttl_keys.len() < 20 && now.as_millis() % 2_000 < 50 {
                let key = format!("ttl/{}", ttl_keys.len());
                let set = KvCommand::PutExpiring {
                    key: key.clone().into_bytes(),
                    value: b"v".to_vec(),
                    condition: PutCondition::Always,
                    expiry: Expiry::TtlMs(1_000),
                };
                if call(&mut cluster, set) == Some(Response::Kv(KvReply::Ok)) {
                    let term = cluster.nodes[leader].raft().term().get();
                    ttl_keys.push((key, now, Duration::from_millis(1_000), term, [false; 3]));
                }
            }
            let term = cluster.nodes[leader].raft().term().get();
            for (key, set_at, ttl, set_term, seen) in &mut ttl_keys {
                for (i, node) in cluster.nodes.iter().enumerate() {
                    let here = present(node, key);
                    if seen[i] && !here && now < *set_at + *ttl && found.early_expiry.is_none() {
                        found.early_expiry = Some(format!(
                            "{key} gone on node {} at {now:?}, set at {set_at:?}",
                            i + 1
                        ));
                    }
                    seen[i] |= here;
                }
                // The bound: the TTL, an election timeout of grace, and for each change of
                // leader the age of the last checkpoint the new leader had (a hand-over:
                // an interval and a few ticks; else two intervals and an election); and
                // the expiry tick and a commit.
                let changes = u32::try_from(term - *set_term).unwrap_or(u32::MAX);
                let per_change = if hand_overs_only {
                    checkpoint + Duration::from_millis(150)
                } else {
                    checkpoint * 2 + et * 2
                };
                let bound = *ttl + et + per_change * changes + Duration::from_millis(200);
                if now > *set_at + bound
                    && present(&cluster.nodes[leader], key)
                    && found.late_expiry.is_none()
                {
                    found.late_expiry = Some(format!(
                        "{key} still there at {now:?}, set at {set_at:?}, bound {bound:?}"
                    ));
                }
            }
        }
        found
    }

    #[test]
    fn lease_sweep_one_holder_no_stale_fenced_write_and_expiry_within_its_bound() {
        let seeds: u64 = std::env::var("SYNOD_LEASE_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(40);
        for seed in 0..seeds {
            let found = lease_sweep(seed, false, seed % 4 == 3);
            assert!(
                found.two_holders.is_none()
                    && found.stale_write.is_none()
                    && found.early_expiry.is_none()
                    && found.late_expiry.is_none(),
                "seed {seed}: {found:?}"
            );
        }
    }

    #[test]
    fn lease_sweep_catches_two_holders_when_a_holder_believes_past_its_ttl() {
        let caught = (0..40).any(|seed| {
            lease_sweep_believing(seed, false, false, SWEEP_TTL * 3)
                .two_holders
                .is_some()
        });
        assert!(caught, "holders believing three TTLs were never caught");
    }

    #[cfg(feature = "broken")]
    #[test]
    fn lease_sweep_catches_leases_renewed_by_elections() {
        // Where leaders change every 700 ms, a lease restarted by each new leader outlives
        // the bound; the correct expirer, checkpointing every 500 ms, stays within it.
        let caught = (0..4).any(|seed| lease_sweep(seed, true, true).late_expiry.is_some());
        assert!(caught, "the broken expirer was never caught");
    }

    /// A lease grant behind a `FENCE` is raised to the minimum TTL (1.5 election timeouts)
    /// as a plain one is: only a top-level grant was, so `FENCE lock 1 LEASE GRANT 10`
    /// granted a 10 ms lease.
    #[test]
    fn a_fenced_lease_grant_is_raised_to_the_minimum_ttl() {
        use crate::consistent_core::commands::{Action, ConnState, execute};
        use synod_membership::lease::LeaseId;
        let mut cluster = Cluster::new(3, 1_000_000);
        cluster.tick_all(40);
        let leader = cluster.leader();
        let parse = |line: &str| {
            let args: Vec<Vec<u8>> = line.split(' ').map(|s| s.as_bytes().to_vec()).collect();
            match execute(&mut ConnState::default(), &args) {
                Action::Call(request) => request,
                other => panic!("{line}: {other:?}"),
            }
        };
        // The lock, created at revision 1: its token is 1.
        assert_eq!(
            cluster.client(leader, 1, parse("SET lock me")),
            Some(Response::Kv(KvReply::Ok))
        );
        // A plain grant of 10 ms is raised to 1 500 ms (lease 1).
        assert_eq!(
            cluster.client(leader, 2, parse("LEASE GRANT 10")),
            Some(Response::Kv(KvReply::Int(1)))
        );
        // The same grant behind a FENCE (lease 2).
        assert_eq!(
            cluster.client(leader, 3, parse("FENCE lock 1 LEASE GRANT 10")),
            Some(Response::Kv(KvReply::Int(2)))
        );
        let keep_alive = |lease| {
            write(KvCommand::Lease(LeaseCommand::KeepAlive {
                lease: LeaseId(lease),
            }))
        };
        assert_eq!(
            cluster.client(leader, 4, keep_alive(1)),
            Some(Response::Kv(KvReply::Int(1_500)))
        );
        assert_eq!(
            cluster.client(leader, 5, keep_alive(2)),
            Some(Response::Kv(KvReply::Int(1_500))),
            "a fenced LEASE GRANT 10 was granted below the cluster's minimum TTL"
        );
    }

    /// The grants among a transaction's operations, and behind a fence inside one, are
    /// raised too; a TTL past the maximum refuses the whole command.
    #[test]
    fn grants_inside_a_transaction_are_raised_to_the_minimum_ttl() {
        use synod_membership::lease::LeaseCommand::Grant;
        let grant = |ttl_ms| KvCommand::Lease(Grant { ttl_ms });
        let mut command = KvCommand::Transaction {
            watched: Vec::new(),
            ops: vec![
                TxOp::Write(grant(10)),
                TxOp::Write(KvCommand::Fenced {
                    lock: b"lock".to_vec(),
                    token: 1,
                    command: Box::new(grant(20)),
                }),
            ],
        };
        let minimum = |ttl_ms: u64| {
            if ttl_ms > 100 {
                Err(ttl_ms)
            } else {
                Ok(ttl_ms.max(50))
            }
        };
        assert_eq!(raise_grants(&mut command, &minimum), Ok(()));
        let KvCommand::Transaction { ops, .. } = &command else {
            unreachable!()
        };
        assert_eq!(ops[0], TxOp::Write(grant(50)));
        assert_eq!(
            ops[1],
            TxOp::Write(KvCommand::Fenced {
                lock: b"lock".to_vec(),
                token: 1,
                command: Box::new(grant(50)),
            })
        );
        let mut too_long = KvCommand::Fenced {
            lock: b"lock".to_vec(),
            token: 1,
            command: Box::new(grant(101)),
        };
        assert_eq!(raise_grants(&mut too_long, &minimum), Err(101));
    }
}
