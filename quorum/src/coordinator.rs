//! A Dynamo-style quorum read/write coordinator for a leaderless store, without I/O.
//!
//! In a leaderless store (Dynamo, Cassandra, ScyllaDB, Riak) every node is a replica of
//! some keys and can coordinate any client's request: it sends the request to the key's
//! replicas and answers the client once as many have answered as the request's
//! [`Consistency`] level requires. A [`Coordinator`] is one such node: it holds its local
//! replica data and runs the reads and writes it coordinates.
//!
//! What it does:
//!
//! - **Consistency levels** per operation: [`Consistency::One`], [`Consistency::Quorum`]
//!   and [`Consistency::All`] of the key's `N` replicas. A level that cannot be met with
//!   the replicas believed alive fails at once with [`StoreError::Unavailable`]; one that
//!   can no longer be met because replicas failed fails with
//!   [`StoreError::QuorumUnreachable`], which says why. Never a silent downgrade.
//! - **Conflict resolution** by a [`Resolver`]: last-write-wins on a timestamp, or version
//!   vectors with siblings returned to the caller.
//! - **Read repair**: after a read, replicas that answered with an older state are sent
//!   the merged one, either before the read returns ([`ReadRepair::Blocking`]: the merged
//!   state is then on enough replicas that the next read at the same level sees it) or
//!   after ([`ReadRepair::Background`]). See [Blocking read repair](#blocking-read-repair).
//! - **Hinted writes**: a write for a replica believed down goes to a fallback node as a
//!   *hint*, which the fallback hands off when the replica is back
//!   ([`StoreRequest::HandOffHints`]). A hint is reported, never counted as an
//!   acknowledgement: a write at `Quorum` needs a quorum of the real replicas.
//! - **Idempotent retries**: a write retried with the same [`RequestId`] is applied once;
//!   the retry gets the first attempt's outcome. Replicas merge states, so duplicated
//!   messages change nothing either.
//! - **A bound on clock drift** for resolvers that order writes by wall-clock time
//!   ([`Resolver::wall_time`], as [`LastWriteWins`](crate::LastWriteWins) does): a state
//!   stamped further ahead of this node's clock than
//!   [`CoordinatorConfig::clock_drift_max_ms`] allows would win its key against every
//!   later write until the clocks caught up, so it is refused, whether it comes from a
//!   client ([`StoreError::TimestampTooFarAhead`]), a replicated write or hint
//!   ([`StoreMessage::WriteRefused`]) or a read answer (which then counts as a failed
//!   replica), and counted ([`CoordinatorStats::timestamps_refused`]).
//! - **Collection**: see [What is kept, and for how long](#what-is-kept-and-for-how-long).
//!
//! Quorum reads and writes are *not* linearizable, even at `Quorum` with `R + W > N`: two
//! reads concurrent with a write can see new then old, and a failed write can still be
//! applied later. For a linearizable register see [`AbdNode`](crate::AbdNode).
//!
//! # Blocking read repair
//!
//! With [`ReadRepair::Blocking`], a read whose answers disagree returns once as many
//! replicas as its consistency level needs are *known to hold* the merged state, whichever
//! replicas they are:
//!
//! - a replica that answered the read with a state that includes the merged one counts at
//!   once (so does this node, which repairs its own replica directly);
//! - a replica that answered with an older state is sent the merged one and counts when it
//!   acknowledges;
//! - a replica whose read answer arrives after the read had enough answers is not ignored:
//!   it counts at once if its state includes the merged one, and is repaired and counts on
//!   its acknowledgement if not.
//!
//! So a repair that is lost, or a repaired replica that fails, does not hold the read
//! until its deadline when other replicas make up the level. The read fails with
//! [`StoreError::QuorumUnreachable`] as soon as too many replicas have failed
//! ([`StoreRequest::NodeFailed`], or down in the [`Placement`]) for the level to be met,
//! and with [`StoreError::TimedOut`] at the read's deadline (counted from the read's start,
//! not from the repair's). An acknowledgement from a replica that was sent no repair does
//! not count it.
//!
//! # What is kept, and for how long
//!
//! - **Replica data**: one state per key, in memory. A key whose state is only a delete
//!   (a *tombstone*, [`Resolver::tombstone`]) is forgotten once the delete is older than
//!   [`CoordinatorConfig::tombstone_grace_ms`] (ten days by default, Cassandra's
//!   `gc_grace_seconds`), at the wake-up it asks for then
//!   ([`CoordinatorStats::tombstones_collected`]). Forgetting it is safe once every replica
//!   has the delete, and the grace period is the bound on how long that may take: a
//!   replica gets it from the write itself, from a hint (hints live no longer than the
//!   grace period, below) or from a read repair. A replica that may have missed it for
//!   longer, partitioned off for more than the grace period with its data, must be emptied
//!   before it rejoins, or it brings the deleted value back; a replica that restarts here
//!   starts empty anyway. A state that holds nothing (a merge of nothing) is never stored.
//! - **Hints** held for other replicas: at most `hints_max`, and each is dropped, not
//!   handed off, once it is older than the grace period
//!   ([`CoordinatorStats::hints_expired`]), as Cassandra's hints live no longer than
//!   `gc_grace_seconds`: handed off later, it could bring back a value whose tombstone the
//!   replicas have already collected. Its age counts from its write's timestamp (for a
//!   resolver that orders writes by time; from when this node stored it otherwise), like a
//!   tombstone's, so a hint of a value expires before the tombstone of a later delete is
//!   collected, however late the hint arrived.
//! - **Operations**: at most `ops_in_flight_max`, each gone once it finishes or times out;
//!   a finished write leaves only its outcome, in a list of the last
//!   `request_ids_remembered_max` (for retries).
//!
//! # Driving it
//!
//! A [`Coordinator`] follows the node contract of `synod-node` ([`Protocol`]): hand it
//! client requests ([`StoreRequest`]: reads, writes, a failed node, a replica back for
//! its hints), messages from its peers and wake-ups with [`Protocol::handle`], each with
//! `now`, the node's monotonic clock; carry out what [`Protocol::poll`] returns: messages
//! to send, one [`StoreResponse`] per request, and one `Effect::WakeAt` for the earliest
//! timeout or collection. It persists nothing: its replica data lives in memory. Its wall
//! clock, for timestamps and grace periods, is `now` offset by
//! [`CoordinatorConfig::wall_clock_at_zero`]. Messages are never addressed to the
//! coordinator itself: its own replica is read and written directly. Every start of a node
//! is built with an [`Incarnation`] it has never used ([`CoordinatorConfig::new`] requires
//! one), so that answers still in the network from before a restart are not counted for
//! its new operations.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use synod_clocks::WallTime;
use synod_node::{Effect, Input, InputOf, Protocol, Time};

use crate::config::{ConfigError, Quorum, Threshold};
use crate::node::{Incarnation, NodeId};
use crate::resolve::{ResolveError, Resolver};
use crate::tracker::{Outcome, QuorumUnreachable, Recorded, ResponseTracker};

/// How many of a key's `N` replicas must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Consistency {
    /// One replica.
    One,
    /// A majority, `floor(N/2) + 1`.
    Quorum,
    /// Every replica.
    All,
}

impl Consistency {
    /// The number of replicas this level needs out of `replicas`.
    #[must_use]
    pub fn required(self, replicas: usize) -> usize {
        match self {
            Self::One => 1.min(replicas),
            Self::Quorum => crate::config::majority_of(replicas),
            Self::All => replicas,
        }
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::One => "ONE",
            Self::Quorum => "QUORUM",
            Self::All => "ALL",
        })
    }
}

/// When a read repairs the replicas that answered with an older state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadRepair {
    /// Before the read returns: the merged state is first held by as many replicas as the
    /// read's consistency level needs (monotonic reads at that level). Any replicas count:
    /// see [Blocking read repair](self#blocking-read-repair).
    Blocking,
    /// After the read returns: repairs are sent and their answers ignored.
    Background,
    /// Never (anti-entropy elsewhere must converge the replicas).
    Off,
}

/// A client's name for a request; a retry reuses it. Unique per coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(u64);

impl RequestId {
    /// The request with this number.
    #[must_use]
    pub const fn new(id: u64) -> Self {
        Self(id)
    }

    /// The request's number.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// The coordinator's name for one of its operations, carried by its messages. It carries
/// the coordinator's [`Incarnation`], so that an answer
/// to an operation of an earlier life of the node, delayed in the network while it
/// restarted, is never taken for an answer to the new operation with the same number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StoreOpId {
    incarnation: Incarnation,
    number: u64,
}

/// Where a key lives: its replicas (the preference list), which of them are believed down,
/// and fallback nodes that may hold hints for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    replicas: Threshold,
    down: Vec<NodeId>,
    fallbacks: Vec<NodeId>,
    /// The answers the operation needs, if not its level's count of the replicas.
    required: Option<usize>,
}

impl Placement {
    /// A key replicated on `replicas`, all believed alive, with no fallbacks.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for an empty or duplicated replica list.
    pub fn new(replicas: impl IntoIterator<Item = NodeId>) -> Result<Self, ConfigError> {
        Ok(Self {
            replicas: Threshold::new(replicas, 1)?,
            down: Vec::new(),
            fallbacks: Vec::new(),
            required: None,
        })
    }

    /// The replicas' answers the operation needs, in place of its consistency level's count
    /// of them (clamped to between 1 and the replicas). A store that moves a partition to
    /// new replicas writes to the old ones and the pending new ones together, with the
    /// level's count raised by one for each pending replica, so that the write still meets
    /// the level among the old replicas (and among the new ones): Cassandra's pending
    /// ranges.
    #[must_use]
    pub fn with_required(mut self, required: usize) -> Self {
        self.required = Some(required.clamp(1, self.replicas.voters().len()));
        self
    }

    /// Marks replicas believed down (by a failure detector); other nodes are ignored.
    #[must_use]
    pub fn with_down(mut self, down: impl IntoIterator<Item = NodeId>) -> Self {
        self.down = down
            .into_iter()
            .filter(|n| self.replicas.contains(*n))
            .collect();
        self.down.sort_unstable();
        self.down.dedup();
        self
    }

    /// Nodes, in order of preference, that may hold hints for down replicas; replicas
    /// and duplicates are ignored.
    #[must_use]
    pub fn with_fallbacks(mut self, fallbacks: impl IntoIterator<Item = NodeId>) -> Self {
        for node in fallbacks {
            if !self.replicas.contains(node) && !self.fallbacks.contains(&node) {
                self.fallbacks.push(node);
            }
        }
        self
    }

    /// The replicas, ascending.
    #[must_use]
    pub fn replicas(&self) -> &[NodeId] {
        self.replicas.voters()
    }

    fn is_down(&self, node: NodeId) -> bool {
        self.down.binary_search(&node).is_ok()
    }

    fn alive(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.replicas()
            .iter()
            .copied()
            .filter(|n| !self.is_down(*n))
    }
}

/// Configuration of a [`Coordinator`], validated at construction.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    node: NodeId,
    incarnation: Incarnation,
    ops_in_flight_max: usize,
    timeout_ms: u64,
    hints_max: usize,
    request_ids_remembered_max: usize,
    read_repair: ReadRepair,
    clock_drift_max_ms: u64,
    tombstone_grace_ms: u64,
    wall_clock_at_zero: WallTime,
    track_changes: bool,
}

/// The default [`CoordinatorConfig::clock_drift_max_ms`]: 500 ms, CockroachDB's default
/// bound on the offset between its nodes' clocks.
pub const CLOCK_DRIFT_MAX_MS: u64 = 500;

/// The default [`CoordinatorConfig::tombstone_grace_ms`]: ten days, Cassandra's default
/// `gc_grace_seconds`.
pub const TOMBSTONE_GRACE_MS: u64 = 10 * 24 * 60 * 60 * 1000;

/// The largest drift bound a [`CoordinatorConfig`] accepts: one day, past which the bound
/// would no longer stop a mis-set clock from taking a key.
pub const CLOCK_DRIFT_MAX_LIMIT_MS: u64 = 24 * 60 * 60 * 1000;

impl CoordinatorConfig {
    /// The configuration of this start of node `node`, whose `incarnation` it has never
    /// used before (see [`Incarnation`]; there is no default, so that a restart cannot
    /// forget it). Defaults: 1024 operations in flight, time out after 1 s, at most
    /// 10 000 hints held for other nodes, the last 4096 write request ids remembered for
    /// retries, blocking read repair, timestamps refused more than
    /// [`CLOCK_DRIFT_MAX_MS`] ahead of this node's clock, tombstones and hints kept for
    /// [`TOMBSTONE_GRACE_MS`], and a wall clock that reads the driver's `Time` as time
    /// since the Unix epoch (see [`CoordinatorConfig::wall_clock_at_zero`]).
    ///
    /// The incarnation cannot be left out:
    ///
    /// ```compile_fail,E0061
    /// use synod_quorum::{CoordinatorConfig, NodeId};
    ///
    /// let config = CoordinatorConfig::new(NodeId::new(1));
    /// ```
    #[must_use]
    pub fn new(node: NodeId, incarnation: Incarnation) -> Self {
        Self {
            node,
            incarnation,
            ops_in_flight_max: 1024,
            timeout_ms: 1_000,
            hints_max: 10_000,
            request_ids_remembered_max: 4096,
            read_repair: ReadRepair::Blocking,
            clock_drift_max_ms: CLOCK_DRIFT_MAX_MS,
            tombstone_grace_ms: TOMBSTONE_GRACE_MS,
            wall_clock_at_zero: WallTime::UNIX_EPOCH,
            track_changes: false,
        }
    }

    /// Sets the limits: operations in flight, milliseconds before an operation times out
    /// (on the node's monotonic clock, the `now` its driver hands in), hints
    /// held for other nodes, and write request ids remembered to recognise retries.
    ///
    /// # Errors
    ///
    /// [`StoreConfigError::ZeroLimit`] if a limit is zero.
    pub fn limits(
        mut self,
        ops_in_flight_max: usize,
        timeout_ms: u64,
        hints_max: usize,
        request_ids_remembered_max: usize,
    ) -> Result<Self, StoreConfigError> {
        if ops_in_flight_max == 0
            || timeout_ms == 0
            || hints_max == 0
            || request_ids_remembered_max == 0
        {
            return Err(StoreConfigError::ZeroLimit);
        }
        self.ops_in_flight_max = ops_in_flight_max;
        self.timeout_ms = timeout_ms;
        self.hints_max = hints_max;
        self.request_ids_remembered_max = request_ids_remembered_max;
        Ok(self)
    }

    /// Sets how far ahead of this node's clock, in milliseconds, a write's timestamp may
    /// be (for resolvers that order writes by wall-clock time, [`Resolver::wall_time`]).
    /// A state stamped further ahead is refused: it would otherwise win its key against
    /// every write made before the clocks catch up with it. Set it above the largest offset
    /// between the clocks that stamp writes (clients' clocks too, if they stamp them).
    ///
    /// # Errors
    ///
    /// [`StoreConfigError::ZeroLimit`] for 0, [`StoreConfigError::ClockDriftTooLarge`]
    /// above [`CLOCK_DRIFT_MAX_LIMIT_MS`].
    pub fn clock_drift_max_ms(mut self, clock_drift_max_ms: u64) -> Result<Self, StoreConfigError> {
        if clock_drift_max_ms == 0 {
            return Err(StoreConfigError::ZeroLimit);
        }
        if clock_drift_max_ms > CLOCK_DRIFT_MAX_LIMIT_MS {
            return Err(StoreConfigError::ClockDriftTooLarge { clock_drift_max_ms });
        }
        self.clock_drift_max_ms = clock_drift_max_ms;
        Ok(self)
    }

    /// Sets the grace period, in milliseconds, after which a delete's tombstone is collected
    /// and a hint is dropped: the bound on how long a replica may go without receiving a
    /// write, after which it must be emptied before it rejoins (see [What is kept, and for
    /// how long](Coordinator#what-is-kept-and-for-how-long)).
    ///
    /// # Errors
    ///
    /// [`StoreConfigError::ZeroLimit`] for 0: tombstones must outlive the write that
    /// carries them to the replicas.
    pub fn tombstone_grace_ms(mut self, tombstone_grace_ms: u64) -> Result<Self, StoreConfigError> {
        if tombstone_grace_ms == 0 {
            return Err(StoreConfigError::ZeroLimit);
        }
        self.tombstone_grace_ms = tombstone_grace_ms;
        Ok(self)
    }

    /// Sets this node's wall clock: the wall-clock time at the driver's [`Time::ZERO`].
    ///
    /// The coordinator needs wall-clock time for resolvers that order writes by it: to
    /// refuse a timestamp too far ahead of its clock, and to age tombstones and hints from
    /// their write's timestamp. A state machine reads no clock, and the only time it is
    /// handed is `now`, the node's monotonic clock; so its wall clock is
    /// `wall_clock_at_zero + now`. A driver sets this to the system clock's reading less
    /// the monotonic reading, taken together when it builds the node. That wall clock never
    /// goes back and does not follow steps of the system clock made after the node started
    /// (a restart picks them up). The default, [`WallTime::UNIX_EPOCH`], is for drivers whose
    /// `now` already counts from the Unix epoch (tests, simulations).
    #[must_use]
    pub fn wall_clock_at_zero(mut self, wall_clock_at_zero: WallTime) -> Self {
        self.wall_clock_at_zero = wall_clock_at_zero;
        self
    }

    /// Makes the coordinator note every key whose replica state changes, for
    /// [`Coordinator::take_changed`]: what a driver that keeps the replica data durable
    /// writes after each input (off by default, when nothing is noted).
    #[must_use]
    pub fn track_changes(mut self, on: bool) -> Self {
        self.track_changes = on;
        self
    }

    /// Sets when reads repair stale replicas.
    #[must_use]
    pub fn read_repair(mut self, repair: ReadRepair) -> Self {
        self.read_repair = repair;
        self
    }

    /// This node.
    #[must_use]
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// This start of the node.
    #[must_use]
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }
}

/// Why a [`CoordinatorConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreConfigError {
    /// Every limit must be at least 1.
    ZeroLimit,
    /// The drift bound is above [`CLOCK_DRIFT_MAX_LIMIT_MS`].
    ClockDriftTooLarge {
        /// The bound asked for.
        clock_drift_max_ms: u64,
    },
}

impl fmt::Display for StoreConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroLimit => write!(f, "coordinator limits must be at least 1"),
            Self::ClockDriftTooLarge { clock_drift_max_ms } => write!(
                f,
                "clock_drift_max_ms is {clock_drift_max_ms} ms; at most \
                 {CLOCK_DRIFT_MAX_LIMIT_MS} ms (one day) is accepted"
            ),
        }
    }
}

impl std::error::Error for StoreConfigError {}

/// Why a read or write failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// Fewer replicas are believed alive than the consistency level needs; nothing was
    /// sent. (Cassandra's `UnavailableException`.)
    Unavailable {
        /// The level asked for.
        consistency: Consistency,
        /// Replicas it needs.
        required: usize,
        /// Replicas believed alive.
        alive: usize,
    },
    /// Enough replicas failed that the level can no longer be met; a write may still have
    /// been applied on some replicas.
    QuorumUnreachable {
        /// The level asked for.
        consistency: Consistency,
        /// The counts.
        why: QuorumUnreachable,
    },
    /// The replicas did not answer in time; a write may still have been applied on some.
    /// (Cassandra's `WriteTimeoutException` / `ReadTimeoutException`.)
    TimedOut {
        /// The level asked for.
        consistency: Consistency,
        /// Replicas that answered.
        answered: usize,
        /// Replicas the level needs.
        required: usize,
    },
    /// The coordinator already runs as many operations as its limit allows.
    TooManyInFlight {
        /// The limit.
        ops_in_flight_max: usize,
    },
    /// The conflict resolver could not coordinate the write here.
    Resolve(ResolveError),
    /// The write's timestamp is further ahead of this node's clock than
    /// [`CoordinatorConfig::clock_drift_max_ms`] allows: it would win its key against every
    /// later write until the clocks caught up. Nothing was applied or sent.
    TimestampTooFarAhead {
        /// The write's timestamp, as wall-clock time.
        timestamp: WallTime,
        /// This node's clock.
        now: WallTime,
        /// The bound.
        clock_drift_max_ms: u64,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable {
                consistency,
                required,
                alive,
            } => write!(
                f,
                "cannot achieve consistency level {consistency}: it needs {required} replicas \
                 and only {alive} are alive"
            ),
            Self::QuorumUnreachable { consistency, why } => {
                write!(f, "consistency level {consistency} failed: {why}")
            }
            Self::TimedOut {
                consistency,
                answered,
                required,
            } => write!(
                f,
                "consistency level {consistency} timed out: {answered} of the {required} \
                 required replicas answered"
            ),
            Self::TooManyInFlight { ops_in_flight_max } => write!(
                f,
                "too many operations in flight on this coordinator (limit {ops_in_flight_max})"
            ),
            Self::Resolve(e) => e.fmt(f),
            Self::TimestampTooFarAhead {
                timestamp,
                now,
                clock_drift_max_ms,
            } => {
                let ahead = timestamp.saturating_duration_since(*now).as_millis();
                write!(
                    f,
                    "write refused: its timestamp {timestamp} is {ahead} ms ahead of this \
                     node's clock ({now}), more than clock_drift_max_ms ({clock_drift_max_ms} \
                     ms); is the writer's clock set right?"
                )
            }
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::QuorumUnreachable { why, .. } => Some(why),
            Self::Resolve(e) => Some(e),
            _ => None,
        }
    }
}

/// What a successful write reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteReport {
    /// Replicas that acknowledged, ascending (at least as many as the level needs).
    pub acknowledged: Vec<NodeId>,
    /// Fallback nodes that stored a hint for a down replica (not acknowledgements).
    pub hinted: Vec<NodeId>,
    /// Whether this was a retry of a request already completed: nothing was applied again.
    pub retried: bool,
}

/// What coordinators and replicas send each other. `S` is the resolver's state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StoreMessage<K, S> {
    /// Send me your state of `key`.
    Read {
        /// The coordinator's operation.
        op: StoreOpId,
        /// The key.
        key: K,
    },
    /// A replica's state of the key.
    ReadReply {
        /// The coordinator's operation.
        op: StoreOpId,
        /// The state (default if never written).
        state: S,
    },
    /// Merge `state` into your state of `key` (a write, a read repair or a hint hand-off).
    Write {
        /// The coordinator's operation.
        op: StoreOpId,
        /// The key.
        key: K,
        /// The state to merge.
        state: S,
    },
    /// The replica merged the write.
    WriteAck {
        /// The coordinator's operation.
        op: StoreOpId,
    },
    /// Hold `state` of `key` for `replica`, which is down, and hand it off later.
    Hint {
        /// The coordinator's operation.
        op: StoreOpId,
        /// The replica the hint is for.
        replica: NodeId,
        /// The key.
        key: K,
        /// The state to hand off.
        state: S,
    },
    /// The fallback stored the hint.
    HintAck {
        /// The coordinator's operation.
        op: StoreOpId,
    },
    /// The replica refused the write: its timestamp is further ahead of the replica's clock
    /// than the replica's [`CoordinatorConfig::clock_drift_max_ms`] allows. The coordinator
    /// counts the replica as failed for the operation.
    WriteRefused {
        /// The coordinator's operation.
        op: StoreOpId,
    },
}

/// What a [`Coordinator`] has counted since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CoordinatorStats {
    /// States refused because their timestamp was too far ahead of this node's clock:
    /// client writes, replicated writes, hints and read answers (its own replica's too).
    pub timestamps_refused: u64,
    /// Tombstones forgotten once older than the grace period.
    pub tombstones_collected: u64,
    /// Hints dropped, or refused on arrival, for being older than the grace period.
    pub hints_expired: u64,
}

/// A hint held for a replica: the state to hand off, and the time its age counts from.
#[derive(Debug)]
struct Hint<S> {
    state: S,
    /// See [`hint_since`].
    since: WallTime,
}

/// The time a hint of `state`, stored at `now`, is old from: its write's timestamp if the
/// resolver orders writes by time (then a hint of a value expires no later than the
/// tombstone of a later delete is collected, however late the hint arrived), else `now`.
fn hint_since<R: Resolver>(resolver: &R, state: &R::State, now: WallTime) -> WallTime {
    resolver.wall_time(state).map_or(now, |at| at.min(now))
}

/// What a [`Coordinator`] is asked: the request type of its [`Protocol`] implementation.
/// Each is answered with one [`StoreResponse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreRequest<K, W> {
    /// Write `write` to `key` at level `consistency`, answered with
    /// [`StoreResponse::Written`]. A retry with the `request` of a write still in flight is
    /// absorbed by it (both are answered with its outcome); a retry of a completed write
    /// gets its outcome again, marked [`WriteReport::retried`]. Fails at once, having
    /// applied and sent nothing, with [`StoreError::Unavailable`],
    /// [`StoreError::TooManyInFlight`], [`StoreError::Resolve`] or
    /// [`StoreError::TimestampTooFarAhead`].
    Write {
        /// The client's name for the write, which a retry reuses.
        request: RequestId,
        /// The key.
        key: K,
        /// What to write, in the resolver's terms.
        write: W,
        /// How many replicas must acknowledge.
        consistency: Consistency,
        /// Where the key lives.
        placement: Placement,
    },
    /// Read `key` at level `consistency`, answered with [`StoreResponse::Read`]: the merged
    /// state of the replicas that answered (for version vectors, every sibling, with the
    /// context to write back). This node's own replica counts as failed if its state is
    /// stamped too far ahead of its clock (as any replica's answer does). Fails at once,
    /// having sent nothing, with [`StoreError::Unavailable`] or
    /// [`StoreError::TooManyInFlight`].
    Read {
        /// The key.
        key: K,
        /// How many replicas must answer.
        consistency: Consistency,
        /// Where the key lives.
        placement: Placement,
    },
    /// `node` failed (a failure detector's verdict, a refused connection): operations
    /// waiting on it count it as failed, and fail at once if their level can no longer be
    /// met. Answered with [`StoreResponse::Done`].
    NodeFailed(NodeId),
    /// `replica` is back: send it the hints held for it. Each hint is dropped once the
    /// replica acknowledges it; unacknowledged hints stay for the next hand-off. Hints
    /// older than the grace period are not sent (they are dropped). Answered with
    /// [`StoreResponse::Done`] at once.
    HandOffHints(NodeId),
}

/// What a [`Coordinator`] answers: the response type of its [`Protocol`] implementation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreResponse<S> {
    /// The outcome of a [`StoreRequest::Write`].
    Written(Result<WriteReport, StoreError>),
    /// The outcome of a [`StoreRequest::Read`].
    Read(Result<S, StoreError>),
    /// A [`StoreRequest::NodeFailed`] or [`StoreRequest::HandOffHints`] was taken in.
    Done,
}

/// An effect of a [`Coordinator`]: it persists nothing (its replica data lives in memory)
/// and hands nothing up.
type StoreEffect<K, S> = Effect<StoreMessage<K, S>, StoreResponse<S>, Infallible, Infallible>;

#[derive(Debug)]
enum OpKind<S> {
    Write {
        /// Fallbacks sent a hint; only their acknowledgements are reported.
        hint_holders: Vec<NodeId>,
        /// Fallbacks that acknowledged a hint, ascending.
        hinted: Vec<NodeId>,
    },
    Read {
        /// Each answering replica's state.
        answers: BTreeMap<NodeId, S>,
    },
    /// A blocking read repair: waiting for enough replicas to hold `merged`. The tracker
    /// grants a replica once it is known to hold `merged` and rejects one that failed.
    Repair {
        merged: S,
        /// Replicas sent `merged`, ascending: only their acknowledgements count.
        repairing: Vec<NodeId>,
    },
    /// A hint being handed off to `replica`: the state sent.
    HandOff { replica: NodeId, sent: S },
}

#[derive(Debug)]
struct Op<K, S> {
    /// A write's request id (none for a read or a hint hand-off).
    request: Option<RequestId>,
    /// The driver's requests the outcome answers (a write and its retries).
    reply_to: Vec<synod_node::RequestId>,
    key: K,
    consistency: Consistency,
    tracker: ResponseTracker<Threshold>,
    kind: OpKind<S>,
    started: Time,
}

/// One node of a leaderless store: a replica of its keys and a coordinator of requests.
/// See the [module documentation](self).
///
/// ```
/// use synod_clocks::WallTime;
/// use synod_node::{Effect, Input, Protocol, RequestId, Time};
/// use synod_quorum::{
///     Consistency, Coordinator, CoordinatorConfig, Incarnation, LastWriteWins, NodeId,
///     Placement, StoreRequest, StoreResponse,
/// };
///
/// // Three nodes; node 1 coordinates a QUORUM write and then a QUORUM read of "k".
/// let ids = [1, 2, 3].map(NodeId::new);
/// let mut nodes: Vec<_> = ids
///     .iter()
///     .map(|&id| {
///         let config = CoordinatorConfig::new(id, Incarnation::new(1));
///         Coordinator::new(config, LastWriteWins::<WallTime, &str>::new())
///     })
///     .collect();
/// let placement = Placement::new(ids)?;
/// // Every node's clock: `now` counts from the Unix epoch (the default wall clock).
/// let now = Time::from_secs(1_700_000_000);
/// let stamp = WallTime::from_secs(1_700_000_000);
/// let write = StoreRequest::Write {
///     request: synod_quorum::RequestId::new(1), // the client's name, for retries
///     key: "k",
///     write: (stamp, Some("v1")),
///     consistency: Consistency::Quorum,
///     placement: placement.clone(),
/// };
/// nodes[0].handle(now, Input::Request { id: RequestId(1), request: write });
/// let read = StoreRequest::Read { key: "k", consistency: Consistency::Quorum, placement };
/// nodes[0].handle(now, Input::Request { id: RequestId(2), request: read });
///
/// // A perfect network: deliver every message until nothing is left.
/// let mut done = Vec::new();
/// loop {
///     let mut sent = Vec::new();
///     for (i, node) in nodes.iter_mut().enumerate() {
///         while let Some(effect) = node.poll() {
///             match effect {
///                 Effect::Send { to, message } => sent.push((ids[i], to, message)),
///                 Effect::Reply { response, .. } => done.push(response),
///                 _ => {}
///             }
///         }
///     }
///     if sent.is_empty() {
///         break;
///     }
///     for (from, to, message) in sent {
///         nodes[(to.get() - 1) as usize].handle(now, Input::Message { from, message });
///     }
/// }
/// assert!(matches!(&done[0], StoreResponse::Written(Ok(_))));
/// assert!(matches!(&done[1], StoreResponse::Read(Ok(Some((_, Some("v1")))))));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Coordinator<K, R: Resolver> {
    config: CoordinatorConfig,
    resolver: R,
    data: BTreeMap<K, R::State>,
    /// The keys of `data` whose state is a tombstone, by the delete's time: collection
    /// takes the oldest first and never walks the live keys.
    tombstones: BTreeSet<(WallTime, K)>,
    /// Hints held for other replicas: replica -> key -> hint.
    hints: BTreeMap<NodeId, BTreeMap<K, Hint<R::State>>>,
    /// Every hint in `hints`, by the time it was stored: expiry takes the oldest first.
    hints_by_age: BTreeSet<(WallTime, NodeId, K)>,
    ops: BTreeMap<StoreOpId, Op<K, R::State>>,
    /// Write requests in flight, to recognise a retry that arrives before the outcome.
    writes_in_flight: BTreeMap<RequestId, StoreOpId>,
    /// Outcomes of recent writes, for retries; bounded, oldest forgotten first.
    write_outcomes: BTreeMap<RequestId, Result<WriteReport, StoreError>>,
    write_outcome_order: VecDeque<RequestId>,
    next_op: u64,
    /// The wake-up last asked for.
    wake_at: Option<Time>,
    effects: VecDeque<StoreEffect<K, R::State>>,
    stats: CoordinatorStats,
    /// Keys whose replica state changed since [`Coordinator::take_changed`] was last
    /// called (only with [`CoordinatorConfig::track_changes`]): at most one entry a key.
    changed: BTreeSet<K>,
}

impl<K: Ord + Clone, R: Resolver> Coordinator<K, R> {
    /// A node with no data.
    pub fn new(config: CoordinatorConfig, resolver: R) -> Self {
        Self {
            config,
            resolver,
            data: BTreeMap::new(),
            tombstones: BTreeSet::new(),
            hints: BTreeMap::new(),
            hints_by_age: BTreeSet::new(),
            ops: BTreeMap::new(),
            writes_in_flight: BTreeMap::new(),
            write_outcomes: BTreeMap::new(),
            write_outcome_order: VecDeque::new(),
            next_op: 0,
            wake_at: None,
            effects: VecDeque::new(),
            stats: CoordinatorStats::default(),
            changed: BTreeSet::new(),
        }
    }

    /// A node whose replica holds `data`, what a driver kept durable for it (see
    /// [`CoordinatorConfig::track_changes`]); a key's later state replaces an earlier one,
    /// and a state that holds nothing is not kept. Restored keys are not noted as changed.
    pub fn restore(
        config: CoordinatorConfig,
        resolver: R,
        data: impl IntoIterator<Item = (K, R::State)>,
    ) -> Self {
        let mut node = Self::new(config, resolver);
        for (key, state) in data {
            node.update_local(key, |_, local| *local = state);
        }
        node.changed.clear();
        node
    }

    /// Merges `state` into this replica's state of `key`, as a replicated write does:
    /// for a driver's own repairs (anti-entropy, a partition streamed to a new replica).
    /// Returns whether the replica's state changed. A state stamped too far ahead of this
    /// node's clock at `now` is refused (and counted), as a replicated write is.
    pub fn merge_replica(&mut self, now: Time, key: K, state: &R::State) -> bool {
        let wall = self.wall(now);
        if self.too_far_ahead(wall, state).is_some() {
            return false;
        }
        let before = self.data.get(&key).cloned();
        self.merge_local(key.clone(), state);
        before.as_ref() != self.data.get(&key)
    }

    /// Merges `state` into this replica's state of `key` as a partition moving to this
    /// replica does (another replica's hand-off or stream of its data): as
    /// [`Coordinator::merge_replica`], but whatever the state's timestamp. The drift bound
    /// guards a write as it is coordinated, replicated or repaired; the state moved was taken
    /// by the replica that sends it, under its own clock's bound, and refusing it here would
    /// hold the move for as long as this node's clock runs behind. Held, a state stamped
    /// ahead of this node's clock counts as this replica's failure in the reads this node
    /// coordinates ([`StoreRequest::Read`]) until its clock catches up with the stamp, and
    /// wins its key against the writes this node coordinates meanwhile, as it does on the
    /// replica that sent it. Returns whether the replica's state changed.
    pub fn merge_moved(&mut self, key: K, state: &R::State) -> bool {
        let before = self.data.get(&key).cloned();
        self.merge_local(key.clone(), state);
        before.as_ref() != self.data.get(&key)
    }

    /// Drops this replica's state of `key`, for a driver whose node no longer replicates it
    /// (its partition moved to other replicas, which hold it): returns whether a state was
    /// held. The key is noted as changed (see [`Coordinator::take_changed`]).
    pub fn drop_replica(&mut self, key: &K) -> bool {
        let Some(state) = self.data.remove(key) else {
            return false;
        };
        if let Some(at) = self.resolver.tombstone(&state) {
            self.tombstones.remove(&(at, key.clone()));
        }
        if self.config.track_changes {
            self.changed.insert(key.clone());
        }
        true
    }

    /// Every key this replica holds a state for (tombstones included), in key order.
    pub fn replica_data(&self) -> impl Iterator<Item = (&K, &R::State)> + '_ {
        self.data.iter()
    }

    /// The keys whose replica state changed (written, merged, repaired, collected) since
    /// the last call, in key order; empty unless [`CoordinatorConfig::track_changes`] is
    /// on. A key's state now is [`Coordinator::local_state`] (`None`: no longer held).
    pub fn take_changed(&mut self) -> BTreeSet<K> {
        std::mem::take(&mut self.changed)
    }

    /// The wall-clock time of `state` if it is further ahead of `now` than the drift bound
    /// allows; such a state is refused (and counted).
    fn too_far_ahead(&mut self, now: WallTime, state: &R::State) -> Option<WallTime> {
        let bound = Duration::from_millis(self.config.clock_drift_max_ms);
        let at = self.resolver.wall_time(state)?;
        if at <= now.saturating_add(bound) {
            return None;
        }
        self.stats.timestamps_refused += 1;
        Some(at)
    }

    /// Holds `state` of `key` as a hint for `replica` (merged into the hint held, if any),
    /// at `now` on this node's wall clock: `false` if it is not held, because its timestamp
    /// is too far ahead, it is already past the grace period, or `hints_max` are held.
    fn hold(&mut self, now: WallTime, replica: NodeId, key: K, state: R::State) -> bool {
        if self.too_far_ahead(now, &state).is_some() {
            return false;
        }
        if self.past_grace(hint_since(&self.resolver, &state, now), now) {
            self.stats.hints_expired += 1;
            return false;
        }
        if let Some(held) = self.hints.get_mut(&replica).and_then(|h| h.get_mut(&key)) {
            let before = held.state.clone();
            self.resolver.merge(&mut held.state, &state);
            let since = hint_since(&self.resolver, &held.state, now);
            if held.state != before && since != held.since {
                let old = std::mem::replace(&mut held.since, since);
                self.hints_by_age.remove(&(old, replica, key.clone()));
                self.hints_by_age.insert((since, replica, key));
            }
            true
        } else if self.hints_by_age.len() < self.config.hints_max {
            // The replica's entry is made only here, so a refused hint leaves none.
            let since = hint_since(&self.resolver, &state, now);
            self.hints_by_age.insert((since, replica, key.clone()));
            let hint = Hint { state, since };
            self.hints.entry(replica).or_default().insert(key, hint);
            true
        } else {
            false
        }
    }

    /// Holds `state` of `key` as a hint for `replica`, handed off when it is back as any
    /// hint is (a driver's own transfer of hints, such as a node that leaves handing its
    /// hints to another): `false` if it is not held, because its timestamp is too far
    /// ahead of this node's clock, it is already past the grace period, or
    /// `hints_max` hints are held.
    pub fn hold_hint(&mut self, now: Time, replica: NodeId, key: K, state: R::State) -> bool {
        let wall = self.wall(now);
        self.hold(wall, replica, key, state)
    }

    /// The hints held for other replicas: each replica, key and state, by replica then key.
    pub fn hints(&self) -> impl Iterator<Item = (NodeId, &K, &R::State)> + '_ {
        self.hints
            .iter()
            .flat_map(|(&replica, held)| held.iter().map(move |(k, h)| (replica, k, &h.state)))
    }

    fn me(&self) -> NodeId {
        self.config.node
    }

    /// Checks the level against the replicas believed alive and the in-flight limit, and
    /// builds the tracker with down replicas already counted as failed.
    fn admit(
        &self,
        consistency: Consistency,
        placement: &Placement,
    ) -> Result<ResponseTracker<Threshold>, StoreError> {
        let n = placement.replicas().len();
        let required = placement
            .required
            .unwrap_or_else(|| consistency.required(n));
        let alive = placement.alive().count();
        if alive < required {
            return Err(StoreError::Unavailable {
                consistency,
                required,
                alive,
            });
        }
        if self.ops.len() >= self.config.ops_in_flight_max {
            return Err(StoreError::TooManyInFlight {
                ops_in_flight_max: self.config.ops_in_flight_max,
            });
        }
        let quorum = Threshold::new(placement.replicas().iter().copied(), required)
            .expect("1 <= required <= replicas");
        let mut tracker = ResponseTracker::new(quorum);
        for &down in &placement.down {
            tracker.record(down, false);
        }
        Ok(tracker)
    }

    fn new_op(&mut self) -> StoreOpId {
        let id = StoreOpId {
            incarnation: self.config.incarnation,
            number: self.next_op,
        };
        self.next_op += 1;
        id
    }

    /// Starts a write (see [`StoreRequest::Write`]) answering the driver's request
    /// `reply_to`, at `now` (`wall` on this node's wall clock).
    #[allow(clippy::too_many_arguments)] // the fields of a write request, unpacked
    fn write(
        &mut self,
        now: Time,
        wall: WallTime,
        reply_to: synod_node::RequestId,
        request: RequestId,
        key: K,
        write: R::Write,
        consistency: Consistency,
        placement: &Placement,
    ) -> Result<(), StoreError> {
        if let Some(id) = self.writes_in_flight.get(&request) {
            if let Some(op) = self.ops.get_mut(id) {
                op.reply_to.push(reply_to);
            }
            return Ok(());
        }
        if let Some(outcome) = self.write_outcomes.get(&request) {
            let result = outcome.clone().map(|report| WriteReport {
                retried: true,
                ..report
            });
            self.reply(reply_to, StoreResponse::Written(result));
            return Ok(());
        }
        let mut tracker = self.admit(consistency, placement)?;
        let me = self.me();
        let is_replica = placement.replicas.contains(me) && !placement.is_down(me);
        // Coordinated on a copy of the local state, which replaces it only once the write
        // is admitted.
        let mut local = is_replica.then(|| self.data.get(&key).cloned().unwrap_or_default());
        let state = self
            .resolver
            .coordinate(me, local.as_mut(), write)
            .map_err(StoreError::Resolve)?;
        if let Some(timestamp) = self.too_far_ahead(wall, &state) {
            return Err(StoreError::TimestampTooFarAhead {
                timestamp,
                now: wall,
                clock_drift_max_ms: self.config.clock_drift_max_ms,
            });
        }
        if let Some(local) = local {
            self.update_local(key.clone(), |_, state| *state = local);
            tracker.record(me, true);
        }
        let id = self.new_op();
        for to in placement.alive().filter(|&n| n != me) {
            self.send(
                to,
                StoreMessage::Write {
                    op: id,
                    key: key.clone(),
                    state: state.clone(),
                },
            );
        }
        // One fallback per down replica, in preference order.
        let mut fallbacks = placement.fallbacks.iter().copied().filter(|&n| n != me);
        let mut hint_holders = Vec::new();
        for &replica in &placement.down {
            if let Some(to) = fallbacks.next() {
                hint_holders.push(to);
                self.send(
                    to,
                    StoreMessage::Hint {
                        op: id,
                        replica,
                        key: key.clone(),
                        state: state.clone(),
                    },
                );
            }
        }
        self.writes_in_flight.insert(request, id);
        let op = Op {
            request: Some(request),
            reply_to: vec![reply_to],
            key,
            consistency,
            tracker,
            kind: OpKind::Write {
                hint_holders,
                hinted: Vec::new(),
            },
            started: now,
        };
        self.ops.insert(id, op);
        self.check(id);
        Ok(())
    }

    /// Starts a read (see [`StoreRequest::Read`]) answering the driver's request
    /// `reply_to`, at `now` (`wall` on this node's wall clock).
    fn read(
        &mut self,
        now: Time,
        wall: WallTime,
        reply_to: synod_node::RequestId,
        key: K,
        consistency: Consistency,
        placement: &Placement,
    ) -> Result<(), StoreError> {
        let mut tracker = self.admit(consistency, placement)?;
        let me = self.me();
        let mut answers = BTreeMap::new();
        if placement.replicas.contains(me) && !placement.is_down(me) {
            let state = self.data.get(&key).cloned().unwrap_or_default();
            let refused = self.too_far_ahead(wall, &state).is_some();
            tracker.record(me, !refused);
            if !refused {
                answers.insert(me, state);
            }
        }
        let id = self.new_op();
        for to in placement.alive().filter(|&n| n != me) {
            self.send(
                to,
                StoreMessage::Read {
                    op: id,
                    key: key.clone(),
                },
            );
        }
        let op = Op {
            request: None,
            reply_to: vec![reply_to],
            key,
            consistency,
            tracker,
            kind: OpKind::Read { answers },
            started: now,
        };
        self.ops.insert(id, op);
        self.check(id);
        Ok(())
    }

    /// Handles a message from `from`, at `now` on this node's wall clock. Duplicates, late
    /// answers and answers from nodes that are not replicas of the key are harmless: each
    /// replica counts once. A state stamped too far ahead of `now` is refused and counted:
    /// a write or hint is not applied (a write is answered
    /// [`StoreMessage::WriteRefused`]), and a read answer counts its replica as failed.
    fn on_message(&mut self, now: WallTime, from: NodeId, message: StoreMessage<K, R::State>) {
        match message {
            StoreMessage::Read { op, key } => {
                let state = self.data.get(&key).cloned().unwrap_or_default();
                self.send(from, StoreMessage::ReadReply { op, state });
            }
            StoreMessage::Write { op, key, state } => {
                if self.too_far_ahead(now, &state).is_some() {
                    self.send(from, StoreMessage::WriteRefused { op });
                    return;
                }
                self.merge_local(key, &state);
                self.send(from, StoreMessage::WriteAck { op });
            }
            StoreMessage::Hint {
                op,
                replica,
                key,
                state,
            } => {
                // Not held (too far ahead, too old, or full): no acknowledgement, so the
                // coordinator does not report a hint.
                if self.hold(now, replica, key, state) {
                    self.send(from, StoreMessage::HintAck { op });
                }
            }
            StoreMessage::ReadReply { op, state } => {
                let reading = self
                    .ops
                    .get(&op)
                    .is_some_and(|o| matches!(o.kind, OpKind::Read { .. } | OpKind::Repair { .. }));
                if !reading {
                    return;
                }
                if self.too_far_ahead(now, &state).is_some() {
                    self.replica_failed(op, from);
                    return;
                }
                let Some(o) = self.ops.get_mut(&op) else {
                    return;
                };
                match &mut o.kind {
                    OpKind::Read { answers } => {
                        // Each replica's first answer only.
                        let counted = o.tracker.record(from, true) == Recorded::Counted;
                        if counted {
                            answers.insert(from, state);
                            self.check(op);
                        }
                    }
                    OpKind::Repair { merged, repairing } => {
                        // A replica that had not answered when the read had enough answers:
                        // it counts at once if it holds the result, after a repair if not.
                        if !o.tracker.quorum().contains(from)
                            || o.tracker.response(from).is_some()
                            || repairing.binary_search(&from).is_ok()
                        {
                            return;
                        }
                        if self.resolver.includes(&state, merged) {
                            o.tracker.record(from, true);
                            self.check(op);
                        } else {
                            let at = repairing.binary_search(&from).unwrap_err();
                            repairing.insert(at, from);
                            let message = StoreMessage::Write {
                                op,
                                key: o.key.clone(),
                                state: merged.clone(),
                            };
                            self.send(from, message);
                        }
                    }
                    _ => {}
                }
            }
            StoreMessage::WriteAck { op } => {
                let Some(o) = self.ops.get_mut(&op) else {
                    return;
                };
                // A write acknowledgement answers a write, a repair or a hand-off; for a
                // read still collecting states it would count a replica without its state,
                // and for a repair, one that was never sent the result.
                match &o.kind {
                    OpKind::Read { .. } => return,
                    OpKind::Repair { repairing, .. } if repairing.binary_search(&from).is_err() => {
                        return;
                    }
                    _ => {}
                }
                if o.tracker.record(from, true) == Recorded::Counted {
                    self.check(op);
                }
            }
            StoreMessage::WriteRefused { op } => {
                // Only from a replica sent the write: a read's replicas were sent none, and
                // a repair's only the ones it is repairing.
                match self.ops.get(&op).map(|o| &o.kind) {
                    None | Some(OpKind::Read { .. }) => {}
                    Some(OpKind::Repair { repairing, .. })
                        if repairing.binary_search(&from).is_err() => {}
                    Some(_) => self.replica_failed(op, from),
                }
            }
            StoreMessage::HintAck { op } => {
                if let Some(Op {
                    kind:
                        OpKind::Write {
                            hint_holders,
                            hinted,
                        },
                    ..
                }) = self.ops.get_mut(&op)
                    && hint_holders.contains(&from)
                    && !hinted.contains(&from)
                {
                    hinted.push(from);
                    hinted.sort_unstable();
                }
            }
        }
    }

    fn send(&mut self, to: NodeId, message: StoreMessage<K, R::State>) {
        self.effects.push_back(Effect::Send { to, message });
    }

    fn reply(&mut self, id: synod_node::RequestId, response: StoreResponse<R::State>) {
        self.effects.push_back(Effect::Reply { id, response });
    }

    /// Answers every driver request `op` answers.
    fn reply_all(
        &mut self,
        reply_to: Vec<synod_node::RequestId>,
        response: StoreResponse<R::State>,
    ) {
        for id in reply_to {
            self.reply(id, response.clone());
        }
    }

    fn merge_local(&mut self, key: K, state: &R::State) {
        self.update_local(key, |resolver, local| resolver.merge(local, state));
    }

    /// Changes this replica's state of `key` with `update`, keeping the tombstone index in
    /// step. A key whose state ends up holding nothing is not kept.
    fn update_local(&mut self, key: K, update: impl FnOnce(&R, &mut R::State)) {
        let mut state = self.data.remove(&key).unwrap_or_default();
        let before = self.resolver.tombstone(&state);
        let was = self.config.track_changes.then(|| state.clone());
        update(&self.resolver, &mut state);
        let after = self.resolver.tombstone(&state);
        if before != after {
            if let Some(at) = before {
                self.tombstones.remove(&(at, key.clone()));
            }
            if let Some(at) = after {
                self.tombstones.insert((at, key.clone()));
            }
        }
        if was.is_some_and(|was| was != state) {
            self.changed.insert(key.clone());
        }
        if state != R::State::default() {
            self.data.insert(key, state);
        }
    }

    /// `node` failed: see [`StoreRequest::NodeFailed`].
    fn node_failed(&mut self, node: NodeId) {
        let ids: Vec<StoreOpId> = self.ops.keys().copied().collect();
        for id in ids {
            self.replica_failed(id, node);
        }
    }

    /// Counts `node` as failed for operation `id` (if it has not answered yet), and decides
    /// the operation if that settles it.
    fn replica_failed(&mut self, id: StoreOpId, node: NodeId) {
        if let Some(op) = self.ops.get_mut(&id)
            && op.tracker.record(node, false) == Recorded::Counted
        {
            self.check(id);
        }
    }

    /// Decides operation `id` if its responses allow.
    fn check(&mut self, id: StoreOpId) {
        let Some(op) = self.ops.get(&id) else {
            return;
        };
        match op.tracker.outcome() {
            Outcome::Pending => {}
            Outcome::Lost(why) => {
                let consistency = op.consistency;
                self.finish(id, Err(StoreError::QuorumUnreachable { consistency, why }));
            }
            Outcome::Won => self.won(id),
        }
    }

    fn won(&mut self, id: StoreOpId) {
        let op = self.ops.get_mut(&id).expect("checked");
        match &mut op.kind {
            OpKind::Write { .. } | OpKind::Repair { .. } | OpKind::HandOff { .. } => {
                self.finish(id, Ok(()));
            }
            OpKind::Read { answers } => {
                let answers = std::mem::take(answers);
                let mut merged = R::State::default();
                for state in answers.values() {
                    self.resolver.merge(&mut merged, state);
                }
                let me = self.me();
                let stale: Vec<NodeId> = answers
                    .iter()
                    .filter(|(_, s)| !self.resolver.includes(s, &merged))
                    .map(|(&n, _)| n)
                    .collect();
                let op = self.ops.get_mut(&id).expect("checked");
                let repair = self.config.read_repair;
                // Our own replica is repaired directly.
                let key = op.key.clone();
                let mut repair_tracker = ResponseTracker::new(op.tracker.quorum().clone());
                // Replicas that failed (or were down) stay failed: they cannot count.
                for node in op.tracker.rejected() {
                    repair_tracker.record(node, false);
                }
                for (&node, _) in answers.iter().filter(|(n, _)| !stale.contains(n)) {
                    repair_tracker.record(node, true);
                }
                if stale.contains(&me) {
                    self.merge_local(key.clone(), &merged);
                    repair_tracker.record(me, true);
                }
                if repair != ReadRepair::Off {
                    for &to in stale.iter().filter(|&&n| n != me) {
                        self.send(
                            to,
                            StoreMessage::Write {
                                op: id,
                                key: key.clone(),
                                state: merged.clone(),
                            },
                        );
                    }
                }
                let op = self.ops.get_mut(&id).expect("checked");
                if repair == ReadRepair::Blocking && repair_tracker.outcome() != Outcome::Won {
                    // Wait until enough replicas hold the merged state: the repaired ones
                    // when they acknowledge, and those whose read answers are still to come.
                    // Not lost yet: the replicas that answered the read are a quorum and
                    // none of them has failed.
                    let repairing = stale.into_iter().filter(|&n| n != me).collect();
                    op.tracker = repair_tracker;
                    op.kind = OpKind::Repair { merged, repairing };
                    return;
                }
                let reply_to = std::mem::take(&mut op.reply_to);
                self.ops.remove(&id);
                self.reply_all(reply_to, StoreResponse::Read(Ok(merged)));
            }
        }
    }

    /// Ends operation `id` with `result` and reports it.
    fn finish(&mut self, id: StoreOpId, result: Result<(), StoreError>) {
        let op = self.ops.remove(&id).expect("finishing a live operation");
        match op.kind {
            OpKind::Write { hinted, .. } => {
                let result = result.map(|()| WriteReport {
                    acknowledged: op.tracker.granted().collect(),
                    hinted,
                    retried: false,
                });
                if let Some(request) = op.request {
                    self.writes_in_flight.remove(&request);
                    self.remember(request, result.clone());
                }
                self.reply_all(op.reply_to, StoreResponse::Written(result));
            }
            OpKind::Read { .. } => {
                let result = result.map(|()| unreachable!("a won read is finished by `won`"));
                self.reply_all(op.reply_to, StoreResponse::Read(result));
            }
            OpKind::Repair { merged, .. } => {
                self.reply_all(op.reply_to, StoreResponse::Read(result.map(|()| merged)));
            }
            OpKind::HandOff { replica, sent } => {
                // Drop the hint only if it did not grow since it was sent.
                let unchanged = self
                    .hints
                    .get(&replica)
                    .and_then(|for_replica| for_replica.get(&op.key))
                    .is_some_and(|hint| hint.state == sent);
                if result.is_ok() && unchanged {
                    self.drop_hint(replica, &op.key);
                }
            }
        }
    }

    fn remember(&mut self, request: RequestId, outcome: Result<WriteReport, StoreError>) {
        if self.write_outcome_order.len() >= self.config.request_ids_remembered_max
            && let Some(oldest) = self.write_outcome_order.pop_front()
        {
            self.write_outcomes.remove(&oldest);
        }
        self.write_outcomes.insert(request, outcome);
        self.write_outcome_order.push_back(request);
    }

    /// Forgets the hint held for `replica` under `key`.
    fn drop_hint(&mut self, replica: NodeId, key: &K) {
        let Some(for_replica) = self.hints.get_mut(&replica) else {
            return;
        };
        if let Some(hint) = for_replica.remove(key) {
            self.hints_by_age
                .remove(&(hint.since, replica, key.clone()));
        }
        if for_replica.is_empty() {
            self.hints.remove(&replica);
        }
    }

    /// Whether something stored at `since` is older than the grace period at `now`.
    fn past_grace(&self, since: WallTime, now: WallTime) -> bool {
        since.saturating_add(Duration::from_millis(self.config.tombstone_grace_ms)) <= now
    }

    /// Runs what time decides, at `now` (`wall` on this node's wall clock): operations
    /// older than the timeout fail with [`StoreError::TimedOut`], and tombstones and hints
    /// older than the grace period are collected (see [What is kept, and for how
    /// long](self#what-is-kept-and-for-how-long)).
    fn on_time(&mut self, now: Time, wall: WallTime) {
        while let Some((at, _)) = self.tombstones.first()
            && self.past_grace(*at, wall)
        {
            let (_, key) = self.tombstones.pop_first().expect("the first exists");
            self.data.remove(&key);
            if self.config.track_changes {
                self.changed.insert(key);
            }
            self.stats.tombstones_collected += 1;
        }
        while let Some((since, _, _)) = self.hints_by_age.first()
            && self.past_grace(*since, wall)
        {
            let (_, replica, key) = self.hints_by_age.pop_first().expect("the first exists");
            self.drop_hint(replica, &key);
            self.stats.hints_expired += 1;
        }
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let expired: Vec<StoreOpId> = self
            .ops
            .iter()
            .filter(|(_, op)| op.started + timeout <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            let op = &self.ops[&id];
            let error = StoreError::TimedOut {
                consistency: op.consistency,
                answered: op.tracker.granted().count(),
                required: op.tracker.quorum().needed(),
            };
            self.finish(id, Err(error));
        }
    }

    /// The earliest time something is due (an operation's deadline, a tombstone or hint
    /// past its grace period); asks to be woken then if that changed.
    fn ask_wake(&mut self) {
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let grace = Duration::from_millis(self.config.tombstone_grace_ms);
        let zero = self.config.wall_clock_at_zero;
        // A wall-clock instant as this node's `Time` (never before its epoch).
        let at = |wall: WallTime| {
            Time::ZERO + wall.saturating_add(grace).saturating_duration_since(zero)
        };
        let earliest = [
            self.ops.values().map(|op| op.started + timeout).min(),
            self.tombstones.first().map(|(since, _)| at(*since)),
            self.hints_by_age.first().map(|(since, _, _)| at(*since)),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(at) = earliest
            && self.wake_at != Some(at)
        {
            self.wake_at = Some(at);
            self.effects.push_back(Effect::WakeAt(at));
        }
    }

    /// This node's wall clock at `now`.
    fn wall(&self, now: Time) -> WallTime {
        self.config
            .wall_clock_at_zero
            .saturating_add(now.since_epoch())
    }

    /// Sends the hints held for `replica` to it: see [`StoreRequest::HandOffHints`].
    fn hand_off_hints(&mut self, now: Time, wall: WallTime, replica: NodeId) {
        let Some(for_replica) = self.hints.get(&replica) else {
            return;
        };
        let room = self.config.ops_in_flight_max.saturating_sub(self.ops.len());
        let batch: Vec<(K, R::State)> = for_replica
            .iter()
            .filter(|(_, hint)| !self.past_grace(hint.since, wall))
            .take(room)
            .map(|(k, hint)| (k.clone(), hint.state.clone()))
            .collect();
        for (key, state) in batch {
            let id = self.new_op();
            let quorum = Threshold::new([replica], 1).expect("one voter, threshold one");
            self.send(
                replica,
                StoreMessage::Write {
                    op: id,
                    key: key.clone(),
                    state: state.clone(),
                },
            );
            self.ops.insert(
                id,
                Op {
                    request: None,
                    reply_to: Vec::new(),
                    key,
                    consistency: Consistency::One,
                    tracker: ResponseTracker::new(quorum),
                    kind: OpKind::HandOff {
                        replica,
                        sent: state,
                    },
                    started: now,
                },
            );
        }
    }

    /// This replica's state of `key`; `None` if it never stored anything for it.
    pub fn local_state(&self, key: &K) -> Option<&R::State> {
        self.data.get(key)
    }

    /// What this node has counted since it started.
    #[must_use]
    pub fn stats(&self) -> &CoordinatorStats {
        &self.stats
    }

    /// Hints held for other replicas.
    #[must_use]
    pub fn hints_held(&self) -> usize {
        self.hints_by_age.len()
    }

    /// Write request ids whose outcome is remembered for retries.
    #[must_use]
    pub fn request_ids_remembered(&self) -> usize {
        self.write_outcomes.len()
    }

    /// Keys this replica holds a state for, tombstones included.
    #[must_use]
    pub fn keys_held(&self) -> usize {
        self.data.len()
    }

    /// Keys whose state is a tombstone, waiting for their grace period to end.
    #[must_use]
    pub fn tombstones_held(&self) -> usize {
        self.tombstones.len()
    }

    /// Operations in flight.
    #[must_use]
    pub fn ops_in_flight(&self) -> usize {
        self.ops.len()
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }
}

impl<K: Ord + Clone, R: Resolver> Protocol for Coordinator<K, R> {
    type Message = StoreMessage<K, R::State>;
    type Request = StoreRequest<K, R::Write>;
    type Response = StoreResponse<R::State>;
    type Write = Infallible;
    type Apply = Infallible;

    fn id(&self) -> NodeId {
        self.config.node
    }

    fn handle(&mut self, now: Time, input: InputOf<Self>) {
        let wall = self.wall(now);
        match input {
            Input::Message { from, message } => self.on_message(wall, from, message),
            Input::Request { id, request } => match request {
                StoreRequest::Write {
                    request,
                    key,
                    write,
                    consistency,
                    placement,
                } => {
                    let started =
                        self.write(now, wall, id, request, key, write, consistency, &placement);
                    if let Err(error) = started {
                        self.reply(id, StoreResponse::Written(Err(error)));
                    }
                }
                StoreRequest::Read {
                    key,
                    consistency,
                    placement,
                } => {
                    if let Err(error) = self.read(now, wall, id, key, consistency, &placement) {
                        self.reply(id, StoreResponse::Read(Err(error)));
                    }
                }
                StoreRequest::NodeFailed(node) => {
                    self.reply(id, StoreResponse::Done);
                    self.node_failed(node);
                }
                StoreRequest::HandOffHints(replica) => {
                    self.reply(id, StoreResponse::Done);
                    self.hand_off_hints(now, wall, replica);
                }
            },
            // The coordinator persists nothing.
            Input::Persisted(_) => {}
            Input::Wake => self.wake_at = None,
        }
        self.on_time(now, wall);
        self.ask_wake();
    }

    fn poll(&mut self) -> Option<StoreEffect<K, R::State>> {
        self.effects.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::LastWriteWins;

    #[test]
    fn changes_are_noted_once_per_key_and_a_restored_replica_holds_its_data() {
        type Lww = LastWriteWins<WallTime, u64>;
        let me = NodeId::new(1);
        let config = CoordinatorConfig::new(me, Incarnation::new(1))
            .tombstone_grace_ms(10_000)
            .unwrap()
            .track_changes(true);
        let mut node = Coordinator::new(config.clone(), Lww::new());
        let now = Time::from_secs(10);
        let stamp = |s: u64| WallTime::from_secs(s);
        let write = |key: u64, at: u64, value: Option<u64>| StoreRequest::Write {
            request: RequestId::new(key * 100 + at),
            key,
            write: (stamp(at), value),
            consistency: Consistency::One,
            placement: Placement::new([me]).unwrap(),
        };
        node.handle(
            now,
            Input::Request {
                id: synod_node::RequestId(1),
                request: write(1, 5, Some(7)),
            },
        );
        node.handle(
            now,
            Input::Request {
                id: synod_node::RequestId(2),
                request: write(2, 5, None),
            },
        );
        assert_eq!(
            node.take_changed().into_iter().collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(node.take_changed().is_empty());
        // Merging what the replica already holds changes nothing, and notes nothing.
        assert!(!node.merge_replica(now, 1, &Some((stamp(5), Some(7)))));
        assert!(node.take_changed().is_empty());
        assert!(node.merge_replica(now, 1, &Some((stamp(6), Some(8)))));
        assert_eq!(node.take_changed().into_iter().collect::<Vec<_>>(), vec![1]);
        // A state stamped past the drift bound is refused.
        assert!(!node.merge_replica(now, 3, &Some((stamp(3_600), Some(1)))));
        // Restored: the same data, nothing noted; the tombstone is collected after its
        // grace period, and that is noted.
        let data: Vec<_> = node.replica_data().map(|(k, s)| (*k, *s)).collect();
        let mut restored = Coordinator::restore(config, Lww::new(), data);
        assert_eq!(restored.local_state(&1), Some(&Some((stamp(6), Some(8)))));
        assert_eq!(restored.tombstones_held(), 1);
        assert!(restored.take_changed().is_empty());
        restored.handle(Time::from_secs(16), Input::Wake);
        assert_eq!(
            restored.take_changed().into_iter().collect::<Vec<_>>(),
            vec![2]
        );
        assert_eq!(restored.local_state(&2), None);
    }

    #[test]
    fn hints_refused_when_full_leave_nothing_behind() {
        let config = CoordinatorConfig::new(NodeId::new(1), Incarnation::new(1))
            .limits(8, 10, 1, 8)
            .unwrap();
        let mut node = Coordinator::new(config, LastWriteWins::<WallTime, u64>::new());
        let hint = |replica: u64, key: u64| StoreMessage::Hint {
            op: StoreOpId {
                incarnation: Incarnation::new(1),
                number: key,
            },
            replica: NodeId::new(replica),
            key,
            state: Some((WallTime::from_nanos(1), Some(1))),
        };
        let now = Time::from_secs(1);
        let from = NodeId::new(2);
        node.handle(
            now,
            Input::Message {
                from,
                message: hint(3, 0),
            },
        );
        assert_eq!(node.hints_held(), 1);
        // Full: hints for other replicas, each a different node id from the network, are
        // refused and must not leave an empty entry per replica behind.
        for replica in 100..1100 {
            node.handle(
                now,
                Input::Message {
                    from,
                    message: hint(replica, 1),
                },
            );
        }
        assert_eq!(node.hints_held(), 1);
        assert_eq!(node.hints.len(), 1, "an empty entry per refused replica");
    }
}
