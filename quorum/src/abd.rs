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
//! the latest completed update. Both are checked by this crate's fault tests, which run
//! broken variants ([`AbdConfig::without_write_back`], and a
//! [`FlexibleConfig::without_overlap_check`] quorum) and show that the checker catches them.
//!
//! # Driving it
//!
//! [`AbdNode`] is both a replica (it stores one tagged value) and a coordinator (it runs
//! reads and writes for its clients). Call [`AbdNode::read`] or [`AbdNode::write`] to
//! start an operation, [`AbdNode::handle`] for every message, [`AbdNode::tick`]
//! periodically for retransmission and timeouts, then drain [`AbdNode::poll_effect`] and
//! carry the effects out **in order**. Messages addressed to the node itself must be
//! delivered back to it like any other. A [`AbdEffect::Persist`] must be durable before any
//! later effect is carried out: a replica must not acknowledge a value it could forget.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

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
    retry_ticks: u64,
    timeout_ticks: u64,
    write_back: bool,
}

impl AbdConfig {
    /// A register on this start of `node`, whose `incarnation` it has never used before
    /// (see [`Incarnation`]; there is no default, so that a restart cannot forget it),
    /// replicated over `voters` with majority quorums (tolerates `(n - 1) / 2` crashes).
    /// Defaults: 64 operations in flight, retransmit every 2 ticks, give up after 20 ticks.
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
    /// with [`FlexibleConfig::without_overlap_check`] may not, and then the register is not
    /// linearizable (the fault tests use this to show it).
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
            retry_ticks: 2,
            timeout_ticks: 20,
            write_back: true,
        })
    }

    /// Sets the limits: operations in flight on this node, ticks between retransmissions
    /// to silent voters, and ticks before an operation is given up.
    ///
    /// # Errors
    ///
    /// [`AbdConfigError::ZeroLimit`] if any is zero.
    pub fn limits(
        mut self,
        ops_in_flight_max: usize,
        retry_ticks: u64,
        timeout_ticks: u64,
    ) -> Result<Self, AbdConfigError> {
        if ops_in_flight_max == 0 || retry_ticks == 0 || timeout_ticks == 0 {
            return Err(AbdConfigError::ZeroLimit);
        }
        self.ops_in_flight_max = ops_in_flight_max;
        self.retry_ticks = retry_ticks;
        self.timeout_ticks = timeout_ticks;
        Ok(self)
    }

    /// **Broken on purpose**: reads return the largest value they saw without writing it
    /// back to a quorum. Reads are then not linearizable (a later read can return an older
    /// value). Exists so the tests can show that the checker catches it.
    #[must_use]
    pub fn without_write_back(mut self) -> Self {
        self.write_back = false;
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
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// What an [`AbdNode`] wants done, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbdEffect<V> {
    /// Make this replica state durable before carrying out any later effect.
    Persist {
        /// The replica's new tag.
        tag: Tag,
        /// The replica's new value.
        value: Option<V>,
    },
    /// Send `message` to `to` (possibly this node itself).
    Send {
        /// The destination.
        to: NodeId,
        /// The message.
        message: AbdMessage<V>,
    },
    /// A read finished: the value (`None` if the register was never written).
    ReadDone {
        /// The operation.
        op: AbdOpId,
        /// The value read.
        value: Option<V>,
    },
    /// A write finished: the value is stored on a write quorum.
    WriteDone {
        /// The operation.
        op: AbdOpId,
    },
    /// An operation failed.
    Failed {
        /// The operation.
        op: AbdOpId,
        /// Why.
        error: AbdError,
    },
}

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

#[derive(Debug, Clone)]
struct Op<V> {
    is_write: bool,
    /// The value a write will store, until its update phase starts.
    write_value: Option<V>,
    phase: Phase<V>,
    started_tick: u64,
    last_sent_tick: u64,
}

/// One node of an ABD register: a replica and a coordinator. See the [module
/// documentation](self) for how to drive it.
///
/// ```
/// use synod_quorum::{AbdConfig, AbdEffect, AbdNode, Incarnation, NodeId};
///
/// // A single-node register, driven by hand: every message goes back to the node.
/// fn run(node: &mut AbdNode<&'static str>) -> Vec<AbdEffect<&'static str>> {
///     let mut done = Vec::new();
///     while let Some(effect) = node.poll_effect() {
///         match effect {
///             AbdEffect::Send { message, .. } => node.handle(node.config().node(), message),
///             AbdEffect::Persist { .. } => {} // a real node writes and syncs here
///             finished => done.push(finished),
///         }
///     }
///     done
/// }
/// let me = NodeId::new(1);
/// let mut node = AbdNode::new(AbdConfig::majority(me, Incarnation::new(1), [me])?);
/// let write = node.write("hello")?;
/// assert_eq!(run(&mut node), [AbdEffect::WriteDone { op: write }]);
/// let read = node.read()?;
/// assert_eq!(run(&mut node), [AbdEffect::ReadDone { op: read, value: Some("hello") }]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct AbdNode<V> {
    config: AbdConfig,
    tag: Tag,
    value: Option<V>,
    ops: BTreeMap<AbdOpId, Op<V>>,
    next_op: u64,
    tick: u64,
    effects: VecDeque<AbdEffect<V>>,
}

impl<V: Clone> AbdNode<V> {
    /// A node starting for the first time: its replica holds nothing.
    #[must_use]
    pub fn new(config: AbdConfig) -> Self {
        Self::recover(config, Tag::default(), None)
    }

    /// A node restarting with the durable replica state of a previous run (the last
    /// [`AbdEffect::Persist`] carried out), configured with an incarnation it has never
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
            tick: 0,
            effects: VecDeque::new(),
        }
    }

    /// Starts a read. Its result arrives as [`AbdEffect::ReadDone`] or
    /// [`AbdEffect::Failed`].
    ///
    /// # Errors
    ///
    /// [`AbdError::TooManyInFlight`] at the limit of operations in flight.
    pub fn read(&mut self) -> Result<AbdOpId, AbdError> {
        self.start(false, None)
    }

    /// Starts a write of `value`. Its result arrives as [`AbdEffect::WriteDone`] or
    /// [`AbdEffect::Failed`].
    ///
    /// # Errors
    ///
    /// [`AbdError::TooManyInFlight`] at the limit of operations in flight.
    pub fn write(&mut self, value: V) -> Result<AbdOpId, AbdError> {
        self.start(true, Some(value))
    }

    fn start(&mut self, is_write: bool, write_value: Option<V>) -> Result<AbdOpId, AbdError> {
        if self.ops.len() >= self.config.ops_in_flight_max {
            return Err(AbdError::TooManyInFlight {
                ops_in_flight_max: self.config.ops_in_flight_max,
            });
        }
        let id = AbdOpId {
            incarnation: self.config.incarnation,
            number: self.next_op,
        };
        self.next_op += 1;
        let op = Op {
            is_write,
            write_value,
            phase: Phase::Query {
                tracker: ResponseTracker::new(self.config.quorums.read_quorum().clone()),
                best: (Tag::default(), None),
            },
            started_tick: self.tick,
            last_sent_tick: self.tick,
        };
        self.ops.insert(id, op);
        self.send_phase(id, false);
        Ok(id)
    }

    /// Sends the current phase's message of `id` to every voter that has not answered
    /// (all voters when the phase starts).
    fn send_phase(&mut self, id: AbdOpId, retransmit: bool) {
        let Some(op) = self.ops.get_mut(&id) else {
            return;
        };
        op.last_sent_tick = self.tick;
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
            self.effects.push_back(AbdEffect::Send {
                to,
                message: message.clone(),
            });
        }
    }

    /// Handles a message from `from`. Replies, duplicates and replies to finished or
    /// unknown operations are handled safely: a voter is counted once per phase.
    pub fn handle(&mut self, from: NodeId, message: AbdMessage<V>) {
        match message {
            AbdMessage::Query { op } => {
                self.effects.push_back(AbdEffect::Send {
                    to: from,
                    message: AbdMessage::QueryReply {
                        op,
                        tag: self.tag,
                        value: self.value.clone(),
                    },
                });
            }
            AbdMessage::Update { op, tag, value } => {
                if tag > self.tag {
                    self.tag = tag;
                    self.value = value;
                    self.effects.push_back(AbdEffect::Persist {
                        tag,
                        value: self.value.clone(),
                    });
                }
                self.effects.push_back(AbdEffect::Send {
                    to: from,
                    message: AbdMessage::UpdateAck { op },
                });
            }
            AbdMessage::QueryReply { op, tag, value } => self.on_query_reply(from, op, tag, value),
            AbdMessage::UpdateAck { op } => self.on_update_ack(from, op),
        }
    }

    fn on_query_reply(&mut self, from: NodeId, id: AbdOpId, tag: Tag, value: Option<V>) {
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
        let (tag, value) = if op.is_write {
            // The sequence comes from the network: a buggy replica can send the largest.
            let Some(sequence) = best_tag.sequence.checked_add(1) else {
                self.ops.remove(&id);
                self.effects.push_back(AbdEffect::Failed {
                    op: id,
                    error: AbdError::SequenceExhausted { op: id },
                });
                return;
            };
            let tag = Tag {
                sequence,
                writer: Some(self.config.node),
                incarnation: self.config.incarnation.get(),
                op: id.number,
            };
            (tag, op.write_value.take())
        } else if !self.config.write_back {
            self.ops.remove(&id);
            self.effects.push_back(AbdEffect::ReadDone {
                op: id,
                value: best_value,
            });
            return;
        } else {
            (best_tag, best_value)
        };
        op.phase = Phase::Update {
            tracker: ResponseTracker::new(self.config.quorums.write_quorum().clone()),
            tag,
            value,
        };
        self.send_phase(id, false);
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
        let is_write = op.is_write;
        self.ops.remove(&id);
        self.effects.push_back(if is_write {
            AbdEffect::WriteDone { op: id }
        } else {
            AbdEffect::ReadDone { op: id, value }
        });
    }

    /// Advances time by one tick: retransmits to silent voters every `retry_ticks` and
    /// fails operations older than `timeout_ticks`.
    pub fn tick(&mut self) {
        self.tick += 1;
        let ids: Vec<AbdOpId> = self.ops.keys().copied().collect();
        for id in ids {
            let op = &self.ops[&id];
            if self.tick - op.started_tick >= self.config.timeout_ticks {
                self.ops.remove(&id);
                self.effects.push_back(AbdEffect::Failed {
                    op: id,
                    error: AbdError::TimedOut { op: id },
                });
            } else if self.tick - op.last_sent_tick >= self.config.retry_ticks {
                self.send_phase(id, true);
            }
        }
    }

    /// The next effect to carry out, in order.
    pub fn poll_effect(&mut self) -> Option<AbdEffect<V>> {
        self.effects.pop_front()
    }

    /// The replica's current tag and value.
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
