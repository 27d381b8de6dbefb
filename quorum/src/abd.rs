//! The ABD register: a linearizable read/write register over a quorum, without a leader.
//!
//! Attiya, Bar-Noy and Dolev (1995) showed that a register shared by `n` nodes can be
//! linearizable while tolerating `f < n/2` crashes, with no leader and no consensus. Every
//! stored value carries a [`Tag`] `(sequence, writer)`, and both operations run two phases
//! against a quorum:
//!
//! - **write(v)**: *query* a read quorum for their tags, pick `max.sequence + 1` with this
//!   node as writer, then *update* a write quorum with `(tag, v)`.
//! - **read()**: *query* a read quorum for `(tag, value)` and pick the largest tag, then
//!   **write it back**: *update* a write quorum with that pair before returning it.
//!
//! The write-back is what makes reads linearizable: without it a read can return a value
//! that only a minority holds, and a later read that misses that minority returns the
//! older value (a new-old inversion). The overlap `R + W > N` is what makes each query see
//! the latest completed update. A replica's acknowledgement means the update is durable:
//! acknowledged earlier, a crash can make a quorum forget a completed write. All three are
//! checked by this crate's fault tests, which run deliberately broken variants (behind the
//! off-by-default `broken` feature: `AbdConfig::broken_without_write_back`,
//! `AbdConfig::broken_ack_before_persist`, and a quorum built with
//! `FlexibleConfig::broken_without_overlap_check`) and show that the checker catches them.
//!
//! # Driving it
//!
//! [`AbdNode`] is both a replica (it stores one tagged value) and a coordinator (it runs
//! reads and writes for its clients), and follows the node contract of `synod-node`
//! ([`Protocol`]): hand it client requests ([`AbdRequest`]), messages from its peers,
//! persistence acknowledgements and wake-ups with [`Protocol::handle`], and carry out what
//! [`Protocol::poll`] returns. A replica that takes a newer value asks for it to be made
//! durable with an `Effect::Persist` of an [`AbdWrite`], and holds every answer it gives
//! after that (query replies and update acknowledgements) until `Input::Persisted`
//! covers the write: a replica never acknowledges, nor shows, a value it could forget in a
//! crash. Retransmissions to silent voters and timeouts run on the `now` handed in, with
//! one `Effect::WakeAt` for the earliest. After a restart the node is built again with
//! [`AbdNode::recover`] from the last write made durable and a new [`Incarnation`].
//! `synod_sim::ProtocolNode` runs it under the simulator.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use synod_node::{Effect, EffectOf, Input, InputOf, PersistToken, Protocol, RequestId, Time};

use crate::config::{ConfigError, FlexibleConfig, Quorum, Threshold};
use crate::node::{Incarnation, NodeId};
use crate::tracker::{Outcome, ResponseTracker};

/// The version of a register value: a sequence number, then who wrote it.
///
/// The fields after `sequence` make every write's tag unique, which the register needs:
/// two different values under one tag would let replicas disagree forever. A sequence
/// number alone is not unique (two writers can pick the same one concurrently), nor is
/// `(sequence, writer)`: one node can run two writes at once, and a node that restarts
/// can pick a sequence again after its earlier write reached only a minority. Hence the
/// writer's incarnation (different on every start) and its operation number.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Tag {
    /// Larger is newer.
    pub sequence: u64,
    /// The node that wrote the value; `None` in the initial tag, which no write has.
    pub writer: Option<NodeId>,
    /// The writer's incarnation when it wrote ([`Incarnation::get`]).
    pub incarnation: u64,
    /// The writer's operation number within that incarnation.
    pub op: u64,
}

/// Identifies one operation started on one node. Unique per node, never reused, across
/// restarts too: it carries the node's incarnation, so that a reply to an operation of an
/// earlier life of the node (delayed in the network while it restarted) is never taken for
/// a reply to the new operation that got the same number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AbdOpId {
    incarnation: Incarnation,
    number: u64,
}

impl AbdOpId {
    /// The operation's number on its node, within its incarnation.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.number
    }

    /// The incarnation of the node that started the operation.
    #[must_use]
    pub const fn incarnation(self) -> Incarnation {
        self.incarnation
    }
}

/// Configuration of an [`AbdNode`], validated at construction.
#[derive(Debug, Clone)]
pub struct AbdConfig {
    node: NodeId,
    incarnation: Incarnation,
    quorums: FlexibleConfig,
    ops_in_flight_max: usize,
    retry_interval_ms: u64,
    timeout_ms: u64,
    broken: Broken,
}

/// The deliberately broken behaviours an [`AbdConfig`] can be switched to, only with the
/// `broken` feature (without it, every flag stays false and every check is `false`).
#[derive(Debug, Clone, Copy, Default)]
struct Broken {
    /// Reads return without writing back.
    no_write_back: bool,
    /// Replicas acknowledge updates before they are durable.
    ack_before_persist: bool,
}

impl AbdConfig {
    /// A register on this start of `node`, whose `incarnation` it has never used before
    /// (see [`Incarnation`]; there is no default, so that a restart cannot forget it),
    /// replicated over `voters` with majority quorums (tolerates `(n - 1) / 2` crashes).
    /// Defaults: 64 operations in flight, retransmit to silent voters every 10 ms, give up
    /// on an operation after 100 ms.
    ///
    /// The incarnation cannot be left out:
    ///
    /// ```compile_fail,E0061
    /// use synod_quorum::{AbdConfig, NodeId};
    ///
    /// let me = NodeId::new(1);
    /// let config = AbdConfig::majority(me, [me]);
    /// ```
    ///
    /// # Errors
    ///
    /// [`AbdConfigError::Quorum`] for an empty or duplicated voter list,
    /// [`AbdConfigError::NotAVoter`] if `node` is not one of the voters.
    pub fn majority(
        node: NodeId,
        incarnation: Incarnation,
        voters: impl IntoIterator<Item = NodeId>,
    ) -> Result<Self, AbdConfigError> {
        let majority = Threshold::majority(voters)?;
        let (n, q) = (majority.len(), majority.needed());
        let quorums = FlexibleConfig::new(majority.voters().iter().copied(), q, q)?;
        debug_assert!(q * 2 > n);
        Self::with_quorums(node, incarnation, quorums)
    }

    /// A register on this start of `node` (a new `incarnation`, as for
    /// [`AbdConfig::majority`]) with explicit read (query) and write (update) quorums.
    ///
    /// A [`FlexibleConfig`] built with [`FlexibleConfig::new`] has `R + W > N`; one built
    /// with `FlexibleConfig::broken_without_overlap_check` (feature `broken`) may not, and
    /// then the register is not linearizable (the fault tests use this to show it).
    ///
    /// # Errors
    ///
    /// [`AbdConfigError::NotAVoter`] if `node` is not one of the voters.
    pub fn with_quorums(
        node: NodeId,
        incarnation: Incarnation,
        quorums: FlexibleConfig,
    ) -> Result<Self, AbdConfigError> {
        if !quorums.read_quorum().contains(node) {
            return Err(AbdConfigError::NotAVoter(node));
        }
        Ok(Self {
            node,
            incarnation,
            quorums,
            ops_in_flight_max: 64,
            retry_interval_ms: 10,
            timeout_ms: 100,
            broken: Broken::default(),
        })
    }

    /// Sets the limits: operations in flight on this node, milliseconds between
    /// retransmissions to silent voters, and milliseconds before an operation is given up
    /// (both on the node's monotonic clock, the `now` its driver hands in).
    ///
    /// # Errors
    ///
    /// [`AbdConfigError::ZeroLimit`] if any is zero.
    pub fn limits(
        mut self,
        ops_in_flight_max: usize,
        retry_interval_ms: u64,
        timeout_ms: u64,
    ) -> Result<Self, AbdConfigError> {
        if ops_in_flight_max == 0 || retry_interval_ms == 0 || timeout_ms == 0 {
            return Err(AbdConfigError::ZeroLimit);
        }
        self.ops_in_flight_max = ops_in_flight_max;
        self.retry_interval_ms = retry_interval_ms;
        self.timeout_ms = timeout_ms;
        Ok(self)
    }

    /// **Broken on purpose** (feature `broken`): reads return the largest value they saw
    /// without writing it back to a quorum. Reads are then not linearizable (a later read
    /// can return an older value). Exists so the tests can show that the checker catches it.
    #[cfg(feature = "broken")]
    #[must_use]
    pub fn broken_without_write_back(mut self) -> Self {
        self.broken.no_write_back = true;
        self
    }

    /// **Broken on purpose** (feature `broken`): a replica acknowledges an update as soon as
    /// it takes it, before the write is durable. A crash that loses unsynced writes on a
    /// write quorum then forgets a completed write, and a later read returns an older value.
    /// Exists so the tests can show that the checker catches it.
    #[cfg(feature = "broken")]
    #[must_use]
    pub fn broken_ack_before_persist(mut self) -> Self {
        self.broken.ack_before_persist = true;
        self
    }

    /// Whether reads skip their write-back (only ever with the `broken` feature).
    fn skips_write_back(&self) -> bool {
        cfg!(feature = "broken") && self.broken.no_write_back
    }

    /// Whether updates are acknowledged before they are durable (only ever with the
    /// `broken` feature).
    fn acks_before_persist(&self) -> bool {
        cfg!(feature = "broken") && self.broken.ack_before_persist
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

    /// The read (query) and write (update) quorums.
    #[must_use]
    pub fn quorums(&self) -> &FlexibleConfig {
        &self.quorums
    }
}

/// Why an [`AbdConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AbdConfigError {
    /// The quorum configuration was refused.
    Quorum(ConfigError),
    /// The node running the register must be one of its voters.
    NotAVoter(NodeId),
    /// A limit of zero would stop the register from doing anything.
    ZeroLimit,
}

impl From<ConfigError> for AbdConfigError {
    fn from(e: ConfigError) -> Self {
        Self::Quorum(e)
    }
}

impl fmt::Display for AbdConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Quorum(e) => write!(f, "ABD register quorums: {e}"),
            Self::NotAVoter(node) => write!(f, "node {node} runs the register but is not a voter"),
            Self::ZeroLimit => write!(f, "ABD register limits must be at least 1"),
        }
    }
}

impl std::error::Error for AbdConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Quorum(e) => Some(e),
            _ => None,
        }
    }
}

/// What ABD nodes send each other.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AbdMessage<V> {
    /// Phase one: what is your tag (and value)?
    Query {
        /// The coordinator's operation.
        op: AbdOpId,
    },
    /// The answer to a query.
    QueryReply {
        /// The coordinator's operation.
        op: AbdOpId,
        /// The replica's tag.
        tag: Tag,
        /// The replica's value (`None` if never written).
        value: Option<V>,
    },
    /// Phase two: store this tagged value if it is newer than yours.
    Update {
        /// The coordinator's operation.
        op: AbdOpId,
        /// The tag to store.
        tag: Tag,
        /// The value to store.
        value: Option<V>,
    },
    /// The replica now holds a tag at least as new as the update's.
    UpdateAck {
        /// The coordinator's operation.
        op: AbdOpId,
    },
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AbdError {
    /// This node already has as many operations in flight as its limit allows.
    TooManyInFlight {
        /// The limit.
        ops_in_flight_max: usize,
    },
    /// No quorum answered in time. For a write, the value may or may not have been
    /// stored: the outcome is unknown.
    TimedOut {
        /// The operation.
        op: AbdOpId,
    },
    /// A write found the register's sequence number at `u64::MAX` (only a corrupt or
    /// malicious replica can have put it there) and cannot order itself after it. Nothing
    /// was stored.
    SequenceExhausted {
        /// The operation.
        op: AbdOpId,
    },
}

impl fmt::Display for AbdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyInFlight { ops_in_flight_max } => write!(
                f,
                "too many register operations in flight (limit {ops_in_flight_max})"
            ),
            Self::TimedOut { op } => write!(
                f,
                "register operation {} timed out before a quorum answered; a write may or may not have taken effect",
                op.number
            ),
            Self::SequenceExhausted { op } => write!(
                f,
                "register write {} failed: the register's sequence number is exhausted \
                 (u64::MAX, which only a corrupt replica can hold); nothing was stored",
                op.number
            ),
        }
    }
}

impl std::error::Error for AbdError {}

/// What a client asks an [`AbdNode`]: the request type of its [`Protocol`] implementation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AbdRequest<V> {
    /// Read the register.
    Read,
    /// Write this value.
    Write(V),
}

/// What an [`AbdNode`] answers a client: the response type of its [`Protocol`]
/// implementation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AbdResponse<V> {
    /// A read finished: the value (`None` if the register was never written).
    Read(Option<V>),
    /// A write finished: the value is stored on a write quorum.
    Written,
    /// The operation failed; [`AbdError`] says whether it may still take effect.
    Failed(AbdError),
}

/// What an [`AbdNode`] asks its driver to make durable (the [`Protocol`]'s write type):
/// the replica's new tag and value. The last one written is the replica's state, what
/// [`AbdNode::recover`] is built from after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AbdWrite<V> {
    /// The replica's new tag.
    pub tag: Tag,
    /// The replica's new value.
    pub value: Option<V>,
}

/// Replies a replica holds back while its state is not yet durable (answers to queries and
/// updates that arrive while a write is being made durable). Past it, further replies are
/// dropped, as a lost message would be: their senders retransmit.
pub const ABD_HELD_REPLIES_MAX: usize = 4_096;

#[derive(Debug, Clone)]
enum Phase<V> {
    /// Collecting tags; `best` is the largest seen so far.
    Query {
        tracker: ResponseTracker<Threshold>,
        best: (Tag, Option<V>),
    },
    /// Storing `(tag, value)` on a write quorum.
    Update {
        tracker: ResponseTracker<Threshold>,
        tag: Tag,
        value: Option<V>,
    },
}

/// An effect of an [`AbdNode`] (`EffectOf<AbdNode<V>>`, spelled out so that it needs no
/// bound on `V`).
type AbdEffect<V> = Effect<AbdMessage<V>, AbdResponse<V>, AbdWrite<V>, Infallible>;

#[derive(Debug, Clone)]
struct Op<V> {
    /// The client request the operation answers.
    client: RequestId,
    is_write: bool,
    /// The value a write will store, until its update phase starts.
    write_value: Option<V>,
    phase: Phase<V>,
    started: Time,
    last_sent: Time,
}

/// One node of an ABD register: a replica and a coordinator, on the node contract
/// ([`Protocol`]). See the [module documentation](self) for how to drive it.
///
/// ```
/// use synod_node::{Effect, Input, Protocol, RequestId, Time};
/// use synod_quorum::{AbdConfig, AbdNode, AbdRequest, AbdResponse, Incarnation, NodeId};
///
/// // A single-node register, driven by hand: each write is "durable" at once.
/// fn run(node: &mut AbdNode<&'static str>, id: u64, request: AbdRequest<&'static str>)
///     -> Vec<AbdResponse<&'static str>>
/// {
///     let now = Time::from_millis(1);
///     node.handle(now, Input::Request { id: RequestId(id), request });
///     let mut replies = Vec::new();
///     while let Some(effect) = node.poll() {
///         match effect {
///             // A real driver writes and syncs here, and acknowledges after the sync.
///             Effect::Persist { token, .. } => node.handle(now, Input::Persisted(token)),
///             Effect::Reply { response, .. } => replies.push(response),
///             _ => {}
///         }
///     }
///     replies
/// }
/// let me = NodeId::new(1);
/// let mut node = AbdNode::new(AbdConfig::majority(me, Incarnation::new(1), [me])?);
/// assert_eq!(run(&mut node, 1, AbdRequest::Write("hello")), [AbdResponse::Written]);
/// assert_eq!(run(&mut node, 2, AbdRequest::Read), [AbdResponse::Read(Some("hello"))]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct AbdNode<V> {
    config: AbdConfig,
    tag: Tag,
    value: Option<V>,
    ops: BTreeMap<AbdOpId, Op<V>>,
    next_op: u64,
    /// The last persist token handed out, and the last acknowledged.
    last_token: PersistToken,
    durable: PersistToken,
    /// Replies to peers waiting for the persist they depend on, in order.
    held: VecDeque<(PersistToken, NodeId, AbdMessage<V>)>,
    /// Messages this node sent itself, handled before the current input returns.
    loopback: VecDeque<AbdMessage<V>>,
    /// The wake-up last asked for.
    wake_at: Option<Time>,
    effects: VecDeque<AbdEffect<V>>,
}

impl<V: Clone> AbdNode<V> {
    /// A node starting for the first time: its replica holds nothing.
    #[must_use]
    pub fn new(config: AbdConfig) -> Self {
        Self::recover(config, Tag::default(), None)
    }

    /// A node restarting with the durable replica state of a previous run (the last
    /// [`AbdWrite`] its driver made durable), configured with an incarnation it has never
    /// used before ([`AbdConfig::incarnation`]). Reusing an incarnation can give two writes
    /// the same [`Tag`], and lets a reply delayed in the network from the earlier life be
    /// counted for a new operation with the same [`AbdOpId`] (a read could then miss a
    /// completed write).
    #[must_use]
    pub fn recover(config: AbdConfig, tag: Tag, value: Option<V>) -> Self {
        Self {
            config,
            tag,
            value,
            ops: BTreeMap::new(),
            next_op: 0,
            last_token: PersistToken::default(),
            durable: PersistToken::default(),
            held: VecDeque::new(),
            loopback: VecDeque::new(),
            wake_at: None,
            effects: VecDeque::new(),
        }
    }

    fn start(&mut self, now: Time, client: RequestId, request: AbdRequest<V>) {
        if self.ops.len() >= self.config.ops_in_flight_max {
            let error = AbdError::TooManyInFlight {
                ops_in_flight_max: self.config.ops_in_flight_max,
            };
            self.reply(client, AbdResponse::Failed(error));
            return;
        }
        let id = AbdOpId {
            incarnation: self.config.incarnation,
            number: self.next_op,
        };
        self.next_op += 1;
        let (is_write, write_value) = match request {
            AbdRequest::Read => (false, None),
            AbdRequest::Write(value) => (true, Some(value)),
        };
        let op = Op {
            client,
            is_write,
            write_value,
            phase: Phase::Query {
                tracker: ResponseTracker::new(self.config.quorums.read_quorum().clone()),
                best: (Tag::default(), None),
            },
            started: now,
            last_sent: now,
        };
        self.ops.insert(id, op);
        self.send_phase(now, id, false);
    }

    fn reply(&mut self, id: RequestId, response: AbdResponse<V>) {
        self.effects.push_back(Effect::Reply { id, response });
    }

    /// Sends `message` to `to`; to this node itself, it is handled before the current
    /// input returns (the contract sends nothing to the sender itself).
    fn send(&mut self, to: NodeId, message: AbdMessage<V>) {
        if to == self.config.node {
            self.loopback.push_back(message);
        } else {
            self.effects.push_back(Effect::Send { to, message });
        }
    }

    /// Sends a replica's answer to `to`, once every write made so far is durable: the
    /// answer may reveal or acknowledge a state the replica could otherwise forget.
    fn answer(&mut self, to: NodeId, message: AbdMessage<V>) {
        if self.last_token <= self.durable {
            self.send(to, message);
        } else if self.held.len() < ABD_HELD_REPLIES_MAX {
            self.held.push_back((self.last_token, to, message));
        }
    }

    /// Sends the current phase's message of `id` to every voter that has not answered
    /// (all voters when the phase starts).
    fn send_phase(&mut self, now: Time, id: AbdOpId, retransmit: bool) {
        let Some(op) = self.ops.get_mut(&id) else {
            return;
        };
        op.last_sent = now;
        let (targets, message): (Vec<NodeId>, AbdMessage<V>) = match &op.phase {
            Phase::Query { tracker, .. } => (
                tracker.outstanding().collect(),
                AbdMessage::Query { op: id },
            ),
            Phase::Update {
                tracker,
                tag,
                value,
            } => (
                tracker.outstanding().collect(),
                AbdMessage::Update {
                    op: id,
                    tag: *tag,
                    value: value.clone(),
                },
            ),
        };
        debug_assert!(retransmit || !targets.is_empty());
        for to in targets {
            self.send(to, message.clone());
        }
    }

    /// Handles a message from `from`. Replies, duplicates and replies to finished or
    /// unknown operations are handled safely: a voter is counted once per phase.
    fn on_message(&mut self, now: Time, from: NodeId, message: AbdMessage<V>) {
        match message {
            AbdMessage::Query { op } => {
                let reply = AbdMessage::QueryReply {
                    op,
                    tag: self.tag,
                    value: self.value.clone(),
                };
                self.answer(from, reply);
            }
            AbdMessage::Update { op, tag, value } => {
                if tag > self.tag {
                    self.tag = tag;
                    self.value = value;
                    self.last_token = self.last_token.next();
                    let write = AbdWrite {
                        tag,
                        value: self.value.clone(),
                    };
                    self.effects.push_back(Effect::Persist {
                        token: self.last_token,
                        write,
                    });
                }
                if self.config.acks_before_persist() {
                    self.send(from, AbdMessage::UpdateAck { op });
                } else {
                    self.answer(from, AbdMessage::UpdateAck { op });
                }
            }
            AbdMessage::QueryReply { op, tag, value } => {
                self.on_query_reply(now, from, op, tag, value);
            }
            AbdMessage::UpdateAck { op } => self.on_update_ack(from, op),
        }
    }

    fn on_query_reply(&mut self, now: Time, from: NodeId, id: AbdOpId, tag: Tag, value: Option<V>) {
        let Some(op) = self.ops.get_mut(&id) else {
            return;
        };
        let Phase::Query { tracker, best } = &mut op.phase else {
            return; // a late reply to a phase already decided
        };
        if tracker.record(from, true) != crate::tracker::Recorded::Counted {
            return;
        }
        if tag > best.0 {
            *best = (tag, value);
        }
        if tracker.outcome() != Outcome::Won {
            return;
        }
        let (best_tag, best_value) = std::mem::take(best);
        let client = op.client;
        let (tag, value) = if op.is_write {
            // The sequence comes from the network: a buggy replica can send the largest.
            let Some(sequence) = best_tag.sequence.checked_add(1) else {
                self.ops.remove(&id);
                let error = AbdError::SequenceExhausted { op: id };
                self.reply(client, AbdResponse::Failed(error));
                return;
            };
            let tag = Tag {
                sequence,
                writer: Some(self.config.node),
                incarnation: self.config.incarnation.get(),
                op: id.number,
            };
            (tag, op.write_value.take())
        } else if self.config.skips_write_back() {
            self.ops.remove(&id);
            self.reply(client, AbdResponse::Read(best_value));
            return;
        } else {
            (best_tag, best_value)
        };
        op.phase = Phase::Update {
            tracker: ResponseTracker::new(self.config.quorums.write_quorum().clone()),
            tag,
            value,
        };
        self.send_phase(now, id, false);
    }

    fn on_update_ack(&mut self, from: NodeId, id: AbdOpId) {
        let Some(op) = self.ops.get_mut(&id) else {
            return;
        };
        let Phase::Update { tracker, value, .. } = &mut op.phase else {
            return;
        };
        if tracker.record(from, true) != crate::tracker::Recorded::Counted
            || tracker.outcome() != Outcome::Won
        {
            return;
        }
        let value = value.take();
        let (client, is_write) = (op.client, op.is_write);
        self.ops.remove(&id);
        let response = if is_write {
            AbdResponse::Written
        } else {
            AbdResponse::Read(value)
        };
        self.reply(client, response);
    }

    /// Every write up to `token` is durable: the answers that waited for it go out.
    fn on_persisted(&mut self, token: PersistToken) {
        self.durable = self.durable.max(token.min(self.last_token));
        while let Some((waits_for, _, _)) = self.held.front()
            && *waits_for <= self.durable
        {
            let (_, to, message) = self.held.pop_front().expect("front exists");
            self.send(to, message);
        }
    }

    /// Fails operations older than the timeout and retransmits to silent voters.
    fn on_time(&mut self, now: Time) {
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let retry = Duration::from_millis(self.config.retry_interval_ms);
        let ids: Vec<AbdOpId> = self.ops.keys().copied().collect();
        for id in ids {
            let op = &self.ops[&id];
            if op.started + timeout <= now {
                let client = op.client;
                self.ops.remove(&id);
                let error = AbdError::TimedOut { op: id };
                self.reply(client, AbdResponse::Failed(error));
            } else if op.last_sent + retry <= now {
                self.send_phase(now, id, true);
            }
        }
    }

    /// Asks to be woken at the earliest retransmission or timeout, if that changed.
    fn ask_wake(&mut self) {
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let retry = Duration::from_millis(self.config.retry_interval_ms);
        let earliest = self
            .ops
            .values()
            .map(|op| (op.started + timeout).min(op.last_sent + retry))
            .min();
        if let Some(at) = earliest
            && self.wake_at != Some(at)
        {
            self.wake_at = Some(at);
            self.effects.push_back(Effect::WakeAt(at));
        }
    }

    /// The replica's current tag and value (not necessarily durable yet).
    #[must_use]
    pub fn replica_state(&self) -> (Tag, Option<&V>) {
        (self.tag, self.value.as_ref())
    }

    /// Operations in flight on this node.
    #[must_use]
    pub fn ops_in_flight(&self) -> usize {
        self.ops.len()
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &AbdConfig {
        &self.config
    }
}

impl<V: Clone> Protocol for AbdNode<V> {
    type Message = AbdMessage<V>;
    type Request = AbdRequest<V>;
    type Response = AbdResponse<V>;
    type Write = AbdWrite<V>;
    type Apply = Infallible;

    fn id(&self) -> NodeId {
        self.config.node
    }

    fn handle(&mut self, now: Time, input: InputOf<Self>) {
        match input {
            Input::Message { from, message } => self.on_message(now, from, message),
            Input::Request { id, request } => self.start(now, id, request),
            Input::Persisted(token) => self.on_persisted(token),
            Input::Wake => self.wake_at = None,
        }
        // What this node sent itself (its own replica's answers, and what they start).
        while let Some(message) = self.loopback.pop_front() {
            self.on_message(now, self.config.node, message);
        }
        self.on_time(now);
        while let Some(message) = self.loopback.pop_front() {
            self.on_message(now, self.config.node, message);
        }
        self.ask_wake();
    }

    fn poll(&mut self) -> Option<EffectOf<Self>> {
        self.effects.pop_front()
    }
}
