//! A per-key Paxos register with compare-and-set, in the manner of Cassandra's lightweight
//! transactions (`INSERT ... IF NOT EXISTS`, `UPDATE ... IF value = x`).
//!
//! Each key is its own sequence of Paxos rounds; there is no log and no leader. Every
//! replica is an acceptor that keeps, per key, the highest ballot promised, the value
//! accepted in the highest ballot (possibly not yet known committed), and the latest
//! committed value. An operation, run by any coordinator:
//!
//! 1. **Prepare** a fresh ballot on a majority. The promises carry each replica's accepted
//!    and committed values.
//! 2. If some promise shows an accepted value newer than every committed one, an earlier
//!    operation may have been chosen without being committed: the coordinator **repairs**
//!    it (accepts it again in its own ballot and commits it), then starts over.
//! 3. Otherwise the current value is the newest committed one. A read returns it; a
//!    compare-and-set whose expectation fails returns `false`; one that holds **proposes**
//!    the new value in its ballot and, once a majority accepted it, **commits** it to
//!    every replica and returns `true`.
//!
//! Replicas must persist their per-key state ([`RegisterAcceptor::key_state`]) before they
//! answer. A coordinator pre-empted by a higher ballot reports
//! [`CasStatus::Retry`]; the caller retries after a random delay (from a seed).
//! [`super::CasRegisterNode`] runs these roles on the node contract, persistence and
//! retries included.
//!
//! ```
//! use synod_consensus::paxos::register::{CasCoordinator, CasStatus, RegisterAcceptor};
//! use synod_consensus::NodeId;
//!
//! let ids = [1, 2, 3].map(NodeId::new);
//! let mut replicas: Vec<RegisterAcceptor<u64, &str>> =
//!     ids.iter().map(|_| RegisterAcceptor::new(1000)).collect();
//! // Set key 7 to "a" if it does not exist yet.
//! let mut op = CasCoordinator::compare_and_set(NodeId::new(9), ids, 7, None, "a")?;
//! let mut outbox = op.start(1);
//! let mut status = CasStatus::Pending;
//! while let Some((to, msg)) = outbox.pop() {
//!     let at = ids.iter().position(|id| *id == to).expect("a replica");
//!     if let Some(reply) = replicas[at].handle(msg) {
//!         let (more, now) = op.handle(to, reply);
//!         outbox.extend(more);
//!         status = now;
//!     }
//! }
//! assert_eq!(status, CasStatus::Done { applied: true, value: Some("a") });
//! # Ok::<(), synod_consensus::paxos::PaxosError>(())
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use synod_quorum::{MajorityConfig, Outcome, Quorum};

use super::{Ballot, PaxosError};
use crate::types::NodeId;

/// The messages of the register protocol, for key `K` and values `V`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RegisterMessage<K, V> {
    /// Phase 1a on `key`.
    Prepare {
        /// The key.
        key: K,
        /// The coordinator's ballot.
        ballot: Ballot,
    },
    /// Phase 1b.
    Promise {
        /// The key.
        key: K,
        /// The ballot answered.
        ballot: Ballot,
        /// Whether the promise is made.
        ok: bool,
        /// The highest ballot promised on this key.
        promised: Ballot,
        /// The value accepted in the highest ballot, if any.
        accepted: Option<(Ballot, Option<V>)>,
        /// The latest committed value (`None` inside: the key is absent).
        committed: Option<(Ballot, Option<V>)>,
    },
    /// Phase 2a: accept `value` (`None`: delete) in `ballot`.
    Propose {
        /// The key.
        key: K,
        /// The ballot.
        ballot: Ballot,
        /// The value.
        value: Option<V>,
    },
    /// Phase 2b.
    Accepted {
        /// The key.
        key: K,
        /// The ballot answered.
        ballot: Ballot,
        /// Whether it was accepted.
        ok: bool,
        /// The highest ballot promised on this key.
        promised: Ballot,
    },
    /// The value accepted by a majority in `ballot` is committed.
    Commit {
        /// The key.
        key: K,
        /// The ballot.
        ballot: Ballot,
        /// The value.
        value: Option<V>,
    },
}

/// Messages to send, each with its recipient.
pub type Outbox<K, V> = Vec<(NodeId, RegisterMessage<K, V>)>;

/// What a replica keeps, and must persist, for one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyState<V> {
    /// The highest ballot promised.
    pub promised: Option<Ballot>,
    /// The value accepted in the highest ballot.
    pub accepted: Option<(Ballot, Option<V>)>,
    /// The latest committed value.
    pub committed: Option<(Ballot, Option<V>)>,
}

impl<V> Default for KeyState<V> {
    fn default() -> Self {
        KeyState {
            promised: None,
            accepted: None,
            committed: None,
        }
    }
}

/// One replica of the register: an acceptor per key.
#[derive(Clone, Debug)]
pub struct RegisterAcceptor<K, V> {
    keys: BTreeMap<K, KeyState<V>>,
    keys_max: usize,
}

impl<K: Ord + Clone, V: Clone> RegisterAcceptor<K, V> {
    /// A replica holding at most `keys_max` keys (requests for new keys beyond it are
    /// refused).
    #[must_use]
    pub fn new(keys_max: usize) -> RegisterAcceptor<K, V> {
        RegisterAcceptor {
            keys: BTreeMap::new(),
            keys_max,
        }
    }

    /// The state of `key`, to persist after a [`RegisterAcceptor::handle`] that touched it.
    #[must_use]
    pub fn key_state(&self, key: &K) -> Option<&KeyState<V>> {
        self.keys.get(key)
    }

    /// The committed value of `key` this replica knows (possibly stale: a linearizable
    /// read goes through [`CasCoordinator::read`]).
    #[must_use]
    pub fn committed(&self, key: &K) -> Option<&V> {
        self.keys
            .get(key)
            .and_then(|s| s.committed.as_ref())
            .and_then(|(_, v)| v.as_ref())
    }

    /// Whether this replica would take part in a round on `key`: it holds the key, or has
    /// room for one more.
    #[must_use]
    pub fn has_room_for(&self, key: &K) -> bool {
        self.keys.contains_key(key) || self.keys.len() < self.keys_max
    }

    /// Restores a key's persisted state after a restart.
    pub fn restore(&mut self, key: K, state: KeyState<V>) {
        self.keys.insert(key, state);
    }

    /// Handles a request; returns the reply, if any.
    pub fn handle(&mut self, msg: RegisterMessage<K, V>) -> Option<RegisterMessage<K, V>> {
        let key = match &msg {
            RegisterMessage::Prepare { key, .. }
            | RegisterMessage::Propose { key, .. }
            | RegisterMessage::Commit { key, .. } => key.clone(),
            _ => return None,
        };
        if !self.keys.contains_key(&key) && self.keys.len() >= self.keys_max {
            return None;
        }
        let state = self.keys.entry(key.clone()).or_default();
        match msg {
            RegisterMessage::Prepare { ballot, .. } => {
                let ok = state.promised.is_none_or(|p| ballot > p);
                if ok {
                    state.promised = Some(ballot);
                }
                Some(RegisterMessage::Promise {
                    key,
                    ballot,
                    ok,
                    promised: state.promised.unwrap_or(ballot),
                    accepted: state.accepted.clone(),
                    committed: state.committed.clone(),
                })
            }
            RegisterMessage::Propose { ballot, value, .. } => {
                let ok = state.promised.is_none_or(|p| ballot >= p);
                if ok {
                    state.promised = Some(ballot);
                    state.accepted = Some((ballot, value));
                }
                Some(RegisterMessage::Accepted {
                    key,
                    ballot,
                    ok,
                    promised: state.promised.unwrap_or(ballot),
                })
            }
            RegisterMessage::Commit { ballot, value, .. } => {
                if state.committed.as_ref().is_none_or(|(b, _)| ballot > *b) {
                    state.committed = Some((ballot, value));
                }
                None
            }
            _ => None,
        }
    }
}

/// Where an operation stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasStatus<V> {
    /// Waiting for replies.
    Pending,
    /// Pre-empted by a higher ballot (or a majority refused) before its own value was
    /// proposed: nothing was written; call [`CasCoordinator::start`] again after a random
    /// delay.
    Retry,
    /// Pre-empted after proposing its own value: the write may yet be chosen (a later
    /// operation would then finish it). Retrying blindly could misreport it, so the
    /// outcome is unknown to the caller, like a timeout.
    Unknown,
    /// Finished: whether the write was applied, and the value the key holds after the
    /// operation (for a read or a failed compare, the current value).
    Done {
        /// Whether the compare-and-set wrote.
        applied: bool,
        /// The key's value after the operation.
        value: Option<V>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Preparing,
    /// Re-proposing an unfinished earlier value; then start over.
    Repairing,
    /// Proposing our own value.
    Proposing,
    Finished,
}

/// What the operation does once it knows the current value.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Op<V> {
    Read,
    CompareAndSet { expect: Option<V>, new: Option<V> },
}

/// Coordinates one read or compare-and-set on one key. I/O-free: it returns messages to
/// send and takes the replies.
///
/// Its ballot is its node's id with a round above the floor [`CasCoordinator::start`] is
/// given, so two coordinators that one node runs at once on one key, started from the same
/// floor, use the same ballot, and Paxos needs every ballot to belong to one proposer: run
/// at most one operation per key per node at a time, as
/// [`CasRegisterNode`](super::CasRegisterNode) does, or start each above every round the
/// other used.
#[derive(Clone, Debug)]
pub struct CasCoordinator<K, V> {
    id: NodeId,
    replicas: MajorityConfig,
    key: K,
    op: Op<V>,
    round: u64,
    ballot: Ballot,
    step: Step,
    promises: BTreeMap<NodeId, bool>,
    newest_accepted: Option<(Ballot, Option<V>)>,
    newest_committed: Option<(Ballot, Option<V>)>,
    accepts: BTreeMap<NodeId, bool>,
    proposal: Option<Option<V>>,
    /// The final status once finished, repeated for late replies.
    outcome: CasStatus<V>,
}

impl<K: Clone, V: Clone + PartialEq> CasCoordinator<K, V> {
    fn new(
        id: NodeId,
        replicas: impl IntoIterator<Item = NodeId>,
        key: K,
        op: Op<V>,
    ) -> Result<CasCoordinator<K, V>, PaxosError> {
        Ok(CasCoordinator {
            id,
            replicas: MajorityConfig::new(replicas).map_err(|_| PaxosError::Acceptors)?,
            key,
            op,
            round: 0,
            ballot: Ballot { round: 0, node: id },
            step: Step::Finished,
            promises: BTreeMap::new(),
            newest_accepted: None,
            newest_committed: None,
            accepts: BTreeMap::new(),
            proposal: None,
            outcome: CasStatus::Retry,
        })
    }

    /// A compare-and-set: write `new` if the key holds `expect` (`None`: absent).
    ///
    /// # Errors
    ///
    /// [`PaxosError::Acceptors`] if the replica set is empty or has duplicates.
    pub fn compare_and_set(
        id: NodeId,
        replicas: impl IntoIterator<Item = NodeId>,
        key: K,
        expect: Option<V>,
        new: V,
    ) -> Result<CasCoordinator<K, V>, PaxosError> {
        CasCoordinator::new(
            id,
            replicas,
            key,
            Op::CompareAndSet {
                expect,
                new: Some(new),
            },
        )
    }

    /// A linearizable read (a Paxos round that writes nothing new, but finishes any
    /// half-done write it finds).
    ///
    /// # Errors
    ///
    /// [`PaxosError::Acceptors`] if the replica set is empty or has duplicates.
    pub fn read(
        id: NodeId,
        replicas: impl IntoIterator<Item = NodeId>,
        key: K,
    ) -> Result<CasCoordinator<K, V>, PaxosError> {
        CasCoordinator::new(id, replicas, key, Op::Read)
    }

    /// Starts (or restarts) with a ballot above `round_floor` and above every ballot seen.
    /// Returns the prepare messages.
    pub fn start(&mut self, round_floor: u64) -> Vec<(NodeId, RegisterMessage<K, V>)> {
        self.round = self.round.max(round_floor).max(self.ballot.round) + 1;
        self.ballot = Ballot {
            round: self.round,
            node: self.id,
        };
        self.step = Step::Preparing;
        self.promises.clear();
        self.accepts.clear();
        self.newest_accepted = None;
        self.newest_committed = None;
        self.proposal = None;
        let (key, ballot) = (self.key.clone(), self.ballot);
        self.replicas
            .voters()
            .iter()
            .map(|r| {
                (
                    *r,
                    RegisterMessage::Prepare {
                        key: key.clone(),
                        ballot,
                    },
                )
            })
            .collect()
    }

    /// Whether this operation proposed its own write in its latest ballot: restarting it
    /// then could misreport a write that was chosen, so a stalled one ends
    /// [`CasStatus::Unknown`] instead.
    #[must_use]
    pub fn proposed_own_write(&self) -> bool {
        self.step == Step::Proposing || self.outcome == CasStatus::Unknown
    }

    /// The key this operation works on.
    #[must_use]
    pub fn key(&self) -> &K {
        &self.key
    }

    fn broadcast(&self, msg: &RegisterMessage<K, V>) -> Vec<(NodeId, RegisterMessage<K, V>)> {
        self.replicas
            .voters()
            .iter()
            .map(|r| (*r, msg.clone()))
            .collect()
    }

    fn propose(&mut self, value: Option<V>) -> Vec<(NodeId, RegisterMessage<K, V>)> {
        self.proposal = Some(value.clone());
        self.accepts.clear();
        self.broadcast(&RegisterMessage::Propose {
            key: self.key.clone(),
            ballot: self.ballot,
            value,
        })
    }

    /// Handles a reply from replica `from`.
    pub fn handle(
        &mut self,
        from: NodeId,
        msg: RegisterMessage<K, V>,
    ) -> (Outbox<K, V>, CasStatus<V>) {
        if !self.replicas.contains(from) {
            return (Vec::new(), self.status());
        }
        match msg {
            RegisterMessage::Promise {
                ballot,
                ok,
                promised,
                accepted,
                committed,
                ..
            } => {
                self.round = self.round.max(promised.round);
                if ballot != self.ballot || self.step != Step::Preparing {
                    return (Vec::new(), self.status());
                }
                self.promises.entry(from).or_insert(ok);
                if ok {
                    if let Some((b, v)) = accepted
                        && self.newest_accepted.as_ref().is_none_or(|(n, _)| b > *n)
                    {
                        self.newest_accepted = Some((b, v));
                    }
                    if let Some((b, v)) = committed
                        && self.newest_committed.as_ref().is_none_or(|(n, _)| b > *n)
                    {
                        self.newest_committed = Some((b, v));
                    }
                }
                let promises = &self.promises;
                match self.replicas.tally(|r| promises.get(&r).copied()) {
                    Outcome::Won => self.after_prepare(),
                    Outcome::Lost(_) => (Vec::new(), self.finish(CasStatus::Retry)),
                    Outcome::Pending => (Vec::new(), CasStatus::Pending),
                }
            }
            RegisterMessage::Accepted {
                ballot,
                ok,
                promised,
                ..
            } => {
                self.round = self.round.max(promised.round);
                if ballot != self.ballot || !matches!(self.step, Step::Repairing | Step::Proposing)
                {
                    return (Vec::new(), self.status());
                }
                self.accepts.entry(from).or_insert(ok);
                let accepts = &self.accepts;
                match self.replicas.tally(|r| accepts.get(&r).copied()) {
                    Outcome::Won => {
                        let value = self.proposal.clone().expect("a proposal is out");
                        let commit = self.broadcast(&RegisterMessage::Commit {
                            key: self.key.clone(),
                            ballot: self.ballot,
                            value: value.clone(),
                        });
                        if self.step == Step::Repairing {
                            // The unfinished write is now committed: start over, with a
                            // higher ballot, to read past it.
                            let mut out = commit;
                            out.extend(self.start(self.round));
                            (out, CasStatus::Pending)
                        } else {
                            let done = self.finish(CasStatus::Done {
                                applied: true,
                                value,
                            });
                            (commit, done)
                        }
                    }
                    Outcome::Lost(_) => {
                        let status = if self.step == Step::Proposing {
                            CasStatus::Unknown
                        } else {
                            CasStatus::Retry
                        };
                        (Vec::new(), self.finish(status))
                    }
                    Outcome::Pending => (Vec::new(), CasStatus::Pending),
                }
            }
            _ => (Vec::new(), self.status()),
        }
    }

    fn status(&self) -> CasStatus<V> {
        match self.step {
            Step::Finished => self.outcome.clone(),
            _ => CasStatus::Pending,
        }
    }

    /// Ends the operation with `status`, which later replies repeat.
    fn finish(&mut self, status: CasStatus<V>) -> CasStatus<V> {
        self.step = Step::Finished;
        self.outcome = status.clone();
        status
    }

    fn after_prepare(&mut self) -> (Outbox<K, V>, CasStatus<V>) {
        let committed_ballot = self.newest_committed.as_ref().map(|(b, _)| *b);
        if let Some((b, v)) = self.newest_accepted.clone()
            && committed_ballot.is_none_or(|c| b > c)
        {
            // A value accepted after the last known commit may have been chosen: finish it.
            self.step = Step::Repairing;
            let out = self.propose(v);
            return (out, CasStatus::Pending);
        }
        let current = self.newest_committed.clone().and_then(|(_, v)| v);
        match self.op.clone() {
            Op::Read => {
                let done = self.finish(CasStatus::Done {
                    applied: false,
                    value: current,
                });
                (Vec::new(), done)
            }
            Op::CompareAndSet { expect, new } => {
                if current == expect {
                    self.step = Step::Proposing;
                    let out = self.propose(new);
                    (out, CasStatus::Pending)
                } else {
                    let done = self.finish(CasStatus::Done {
                        applied: false,
                        value: current,
                    });
                    (Vec::new(), done)
                }
            }
        }
    }
}
