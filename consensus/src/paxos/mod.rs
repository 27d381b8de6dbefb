//! Paxos: single-decree consensus (proposer, acceptor, learner) with ballots of
//! (round, node id), a Multi-Paxos log and a per-key compare-and-set register, as I/O-free
//! roles and as nodes on the node contract.
//!
//! **Paxos** (Lamport, "Paxos Made Simple") chooses one value among those proposed, and
//! never changes its mind, as long as a majority of acceptors is reachable; any number of
//! proposers may compete. Two phases, each needing a majority of acceptors:
//!
//! 1. *Prepare / promise*: a proposer picks a ballot higher than any it has seen and asks
//!    the acceptors to promise to ignore lower ballots. Each promise carries the
//!    highest-ballot value the acceptor has already accepted, if any.
//! 2. *Accept / accepted*: with a majority of promises, the proposer asks the acceptors to
//!    accept a value in its ballot: the value of the highest-ballot acceptance among the
//!    promises if there is one (that value may already be chosen), its own otherwise. A
//!    value accepted by a majority in one ballot is **chosen**; learners find out by
//!    counting acceptances.
//!
//! Ballots are `(round, node)`: unique per proposer, totally ordered, the same idea as
//! Raft's term (a **Generation Clock**). An acceptor's promise and acceptance must be
//! durable before it answers.
//!
//! Where it is used: Chubby and Spanner (Multi-Paxos per shard), Cassandra's lightweight
//! transactions (a Paxos round per key, for compare-and-set), Megastore, and as the
//! theory behind Raft and Zab. [`register`] builds a per-key compare-and-set register on
//! these rounds, like Cassandra's lightweight transactions; [`multi`] is a Multi-Paxos log
//! with a stable leader that skips phase one and fills gaps with no-ops.
//!
//! # Running it: the nodes
//!
//! A real process runs the roles together, and that is how this module runs them: each
//! variant has a node type that follows the `synod-node` contract ([`synod_node::Protocol`]:
//! `handle(now, input)`, then `poll` for effects), so the driver that runs any Synod state
//! machine runs it, in synod-sim or as a process.
//!
//! | Node | Roles | Client request → reply |
//! |---|---|---|
//! | [`PaxosNode`] | [`Acceptor`], [`Proposer`], [`Learner`] | a value to propose → the value chosen |
//! | [`MultiPaxosNode`] | [`multi::MultiAcceptor`], [`multi::MultiLeader`] (which learns its own slots) | a command → the slot it was chosen in |
//! | [`CasRegisterNode`] | [`register::RegisterAcceptor`] for every key, a [`register::CasCoordinator`] per operation | a [`CasRequest`] → a [`CasReply`] |
//!
//! What they share ([`NodeConfig`]): every node is an acceptor of the cluster; the
//! acceptor's changes are [`synod_node::Effect::Persist`]ed and **nothing leaves a node
//! after a persist until [`synod_node::Input::Persisted`] covers it**: not the acceptor's
//! promises and acceptances, and not the node's own prepare, whose ballot its own acceptor
//! promised first (so a restarted node, built from what it persisted, always starts above
//! every ballot it used). A round that stalls is retried with a higher ballot at a
//! [`synod_node::Effect::WakeAt`] drawn from the configuration's seed, so duelling
//! proposers drift apart. A request the node cannot serve is answered with a
//! [`RequestError`].
//!
//! The role types stay the building blocks: they are where the algorithm is written, each
//! step a method that returns messages, and the place to read it. The nodes add only the
//! wiring: persistence, timers, client requests, and messages to themselves.
//!
//! Three nodes driven by hand: each persist is "written" and acknowledged at once, each
//! message delivered in order.
//!
//! ```
//! use std::collections::VecDeque;
//! use synod_consensus::NodeId;
//! use synod_consensus::paxos::{NodeConfig, PaxosNode};
//! use synod_node::{Effect, Input, Protocol, RequestId, Time};
//!
//! let ids = [1, 2, 3].map(NodeId::new);
//! let mut nodes: Vec<PaxosNode<&str>> = ids
//!     .iter()
//!     .map(|id| NodeConfig::new(*id, ids).map(PaxosNode::new))
//!     .collect::<Result<_, _>>()?;
//! let now = Time::from_millis(1);
//! // A client of node 1 proposes "x".
//! nodes[0].handle(now, Input::Request { id: RequestId(7), request: "x" });
//! let mut disks = vec![Vec::new(); 3];
//! let mut network = VecDeque::new();
//! let mut answers = Vec::new();
//! loop {
//!     for (at, node) in nodes.iter_mut().enumerate() {
//!         while let Some(effect) = node.poll() {
//!             match effect {
//!                 Effect::Persist { token, write } => {
//!                     disks[at].push(write); // a real driver writes and syncs first
//!                     node.handle(now, Input::Persisted(token));
//!                 }
//!                 Effect::Send { to, message } => network.push_back((node.id(), to, message)),
//!                 Effect::Reply { id, response } => answers.push((node.id(), id, response)),
//!                 Effect::Apply(_) | Effect::WakeAt(_) => {}
//!             }
//!         }
//!     }
//!     let Some((from, to, message)) = network.pop_front() else { break };
//!     let at = ids.iter().position(|id| *id == to).expect("a node");
//!     nodes[at].handle(now, Input::Message { from, message });
//! }
//! assert_eq!(answers, [(ids[0], RequestId(7), Ok("x"))]);
//! assert!(nodes.iter().all(|node| node.chosen() == Some(&"x")));
//! // After a crash, node 2 is rebuilt from the last state it persisted.
//! let state = disks[1].last().cloned().expect("node 2 accepted");
//! let node2 = PaxosNode::<&str>::restore(NodeConfig::new(ids[1], ids)?, state);
//! assert_eq!(node2.acceptor_state().accepted.as_ref().map(|(_, v)| *v), Some("x"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The roles
//!
//! Driven directly, the roles return their messages; whoever runs an [`Acceptor`] this way
//! persists [`Acceptor::state`] (a few bytes) before sending the reply it returns.
//!
//! ```
//! use synod_consensus::paxos::{Acceptor, Proposer};
//! use synod_consensus::NodeId;
//!
//! let ids = [1, 2, 3].map(NodeId::new);
//! let mut acceptors: Vec<Acceptor<&str>> = ids.iter().map(|_| Acceptor::new()).collect();
//! let mut proposer = Proposer::new(NodeId::new(1), ids)?;
//! let mut outbox = proposer.propose("x");
//! let mut chosen = None;
//! while let Some((to, request)) = outbox.pop() {
//!     let at = ids.iter().position(|id| *id == to).expect("an acceptor");
//!     // The acceptor answers; its caller persists `acceptors[at].state()` first.
//!     if let Some(reply) = acceptors[at].handle(request) {
//!         let (more, decided) = proposer.handle(to, reply);
//!         outbox.extend(more);
//!         chosen = chosen.or(decided);
//!     }
//! }
//! assert_eq!(chosen, Some("x"));
//! # Ok::<(), synod_consensus::paxos::PaxosError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use synod_quorum::{MajorityConfig, Outcome, Quorum};

use crate::types::NodeId;

mod gate;
pub mod multi;
mod multi_node;
mod node;
pub mod register;
mod register_node;

pub use gate::{NodeConfig, REQUESTS_MAX_DEFAULT, RETRY_TIMEOUT_MS_DEFAULT, RequestError};
pub use multi_node::{MultiPaxosNode, MultiWrite};
pub use node::PaxosNode;
pub use register_node::{CasRegisterNode, CasReply, CasRequest, KeyWrite};

/// A ballot: a round number and the proposer's id, compared in that order. Unique per
/// proposer and totally ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// The round: raised above every ballot the proposer has seen.
    pub round: u64,
    /// The proposer.
    pub node: NodeId,
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b{}.{}", self.round, self.node)
    }
}

/// The messages of single-decree Paxos.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PaxosMessage<V> {
    /// Phase 1a: "promise to ignore ballots below `ballot`".
    Prepare {
        /// The proposer's ballot.
        ballot: Ballot,
    },
    /// Phase 1b.
    Promise {
        /// The ballot answered.
        ballot: Ballot,
        /// Whether the promise is made (`false`: a higher ballot was promised).
        ok: bool,
        /// The highest ballot this acceptor has promised.
        promised: Ballot,
        /// The acceptor's highest-ballot accepted value.
        accepted: Option<(Ballot, V)>,
    },
    /// Phase 2a: "accept `value` in `ballot`".
    Accept {
        /// The proposer's ballot.
        ballot: Ballot,
        /// The value.
        value: V,
    },
    /// Phase 2b, also sent to learners.
    Accepted {
        /// The ballot answered.
        ballot: Ballot,
        /// Whether the value was accepted.
        ok: bool,
        /// The highest ballot this acceptor has promised.
        promised: Ballot,
        /// The value accepted (when `ok`).
        value: Option<V>,
    },
}

/// What an acceptor must persist before it replies.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AcceptorState<V> {
    /// The highest ballot promised.
    pub promised: Option<Ballot>,
    /// The highest-ballot value accepted.
    pub accepted: Option<(Ballot, V)>,
}

/// A Paxos acceptor. Persist [`Acceptor::state`] after each [`Acceptor::handle`] that
/// changed it, before sending the reply.
#[derive(Clone, Debug)]
pub struct Acceptor<V> {
    state: AcceptorState<V>,
    /// Test-only: forget accepted values in promises (a known-bad acceptor).
    hide_accepted: bool,
}

impl<V: Clone> Default for Acceptor<V> {
    fn default() -> Self {
        Acceptor::new()
    }
}

impl<V: Clone> Acceptor<V> {
    /// An acceptor that has promised and accepted nothing.
    #[must_use]
    pub fn new() -> Acceptor<V> {
        Acceptor {
            state: AcceptorState {
                promised: None,
                accepted: None,
            },
            hide_accepted: false,
        }
    }

    /// An acceptor restored from its persisted state.
    #[must_use]
    pub fn restore(state: AcceptorState<V>) -> Acceptor<V> {
        Acceptor {
            state,
            hide_accepted: false,
        }
    }

    /// A broken acceptor that leaves its accepted value out of promises, for tests that
    /// must show the checker catches two chosen values.
    #[cfg(feature = "broken")]
    #[must_use]
    pub fn broken_hiding_accepted() -> Acceptor<V> {
        Acceptor {
            hide_accepted: true,
            ..Acceptor::new()
        }
    }

    /// The state to persist.
    #[must_use]
    pub fn state(&self) -> &AcceptorState<V> {
        &self.state
    }

    /// Handles a prepare or accept request; returns the reply (`None` for other
    /// messages).
    pub fn handle(&mut self, msg: PaxosMessage<V>) -> Option<PaxosMessage<V>> {
        match msg {
            PaxosMessage::Prepare { ballot } => {
                let ok = self.state.promised.is_none_or(|p| ballot > p);
                if ok {
                    self.state.promised = Some(ballot);
                }
                let accepted = if cfg!(feature = "broken") && self.hide_accepted {
                    None
                } else {
                    self.state.accepted.clone()
                };
                Some(PaxosMessage::Promise {
                    ballot,
                    ok,
                    promised: self.state.promised.unwrap_or(ballot),
                    accepted,
                })
            }
            PaxosMessage::Accept { ballot, value } => {
                let ok = self.state.promised.is_none_or(|p| ballot >= p);
                if ok {
                    self.state.promised = Some(ballot);
                    self.state.accepted = Some((ballot, value.clone()));
                }
                Some(PaxosMessage::Accepted {
                    ballot,
                    ok,
                    promised: self.state.promised.unwrap_or(ballot),
                    value: ok.then_some(value),
                })
            }
            _ => None,
        }
    }
}

/// Why a proposer could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PaxosError {
    /// No acceptors, or the same acceptor twice.
    Acceptors,
    /// A node's configuration names it, but not among the cluster's nodes.
    NotMember(NodeId),
}

impl fmt::Display for PaxosError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PaxosError::Acceptors => write!(f, "acceptors must be a non-empty set"),
            PaxosError::NotMember(id) => write!(f, "node {id} is not one of the cluster's nodes"),
        }
    }
}

impl std::error::Error for PaxosError {}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Preparing,
    Accepting,
    Chosen,
}

/// A Paxos proposer: drives one ballot at a time towards a chosen value.
///
/// Call [`Proposer::propose`] to start (and again, with the same value, to retry with a
/// higher ballot after a timeout or a rejection: pick the retry delay at random, from a
/// seed, so that duelling proposers stop pre-empting each other); feed every reply to
/// [`Proposer::handle`], which returns messages to send and, once known, the chosen value.
#[derive(Clone, Debug)]
pub struct Proposer<V> {
    id: NodeId,
    acceptors: MajorityConfig,
    highest_seen: u64,
    ballot: Ballot,
    phase: Phase,
    value: Option<V>,
    promises: BTreeMap<NodeId, bool>,
    best_accepted: Option<(Ballot, V)>,
    accepts: BTreeMap<NodeId, bool>,
    chosen: Option<V>,
}

impl<V: Clone> Proposer<V> {
    /// A proposer `id` working with `acceptors`.
    ///
    /// # Errors
    ///
    /// [`PaxosError::Acceptors`] if the set is empty or has duplicates.
    pub fn new(
        id: NodeId,
        acceptors: impl IntoIterator<Item = NodeId>,
    ) -> Result<Proposer<V>, PaxosError> {
        let acceptors = MajorityConfig::new(acceptors).map_err(|_| PaxosError::Acceptors)?;
        Ok(Proposer {
            id,
            acceptors,
            highest_seen: 0,
            ballot: Ballot { round: 0, node: id },
            phase: Phase::Idle,
            value: None,
            promises: BTreeMap::new(),
            best_accepted: None,
            accepts: BTreeMap::new(),
            chosen: None,
        })
    }

    /// The value known chosen, if any.
    #[must_use]
    pub fn chosen(&self) -> Option<&V> {
        self.chosen.as_ref()
    }

    /// The current ballot.
    #[must_use]
    pub fn ballot(&self) -> Ballot {
        self.ballot
    }

    /// Records that `ballot` exists, so that the next ballot this proposer picks is above
    /// it. A restarted node calls it with the ballot its acceptor promised, which is at
    /// least every ballot the node proposed before the crash.
    pub fn observe(&mut self, ballot: Ballot) {
        self.highest_seen = self.highest_seen.max(ballot.round);
    }

    /// Starts (or restarts) phase 1 with a ballot above every ballot seen, proposing
    /// `value` unless an acceptor reports an earlier one. Returns the prepare messages.
    pub fn propose(&mut self, value: V) -> Vec<(NodeId, PaxosMessage<V>)> {
        if self.chosen.is_some() {
            return Vec::new();
        }
        self.highest_seen = self.highest_seen.max(self.ballot.round) + 1;
        self.ballot = Ballot {
            round: self.highest_seen,
            node: self.id,
        };
        self.phase = Phase::Preparing;
        self.value = Some(value);
        self.promises.clear();
        self.accepts.clear();
        self.best_accepted = None;
        let ballot = self.ballot;
        self.acceptors
            .voters()
            .iter()
            .map(|a| (*a, PaxosMessage::Prepare { ballot }))
            .collect()
    }

    /// Handles a reply from acceptor `from`. Returns messages to send and the chosen value
    /// once a majority accepted it.
    pub fn handle(
        &mut self,
        from: NodeId,
        msg: PaxosMessage<V>,
    ) -> (Vec<(NodeId, PaxosMessage<V>)>, Option<V>) {
        if !self.acceptors.contains(from) {
            return (Vec::new(), None);
        }
        match msg {
            PaxosMessage::Promise {
                ballot,
                ok,
                promised,
                accepted,
            } => {
                self.highest_seen = self.highest_seen.max(promised.round);
                if ballot != self.ballot || self.phase != Phase::Preparing {
                    return (Vec::new(), None);
                }
                self.promises.entry(from).or_insert(ok);
                if ok
                    && let Some((b, v)) = accepted
                    && self
                        .best_accepted
                        .as_ref()
                        .is_none_or(|(best, _)| b > *best)
                {
                    self.best_accepted = Some((b, v));
                }
                let promises = &self.promises;
                match self.acceptors.tally(|a| promises.get(&a).copied()) {
                    Outcome::Won => {
                        self.phase = Phase::Accepting;
                        let value = match &self.best_accepted {
                            Some((_, v)) => v.clone(),
                            None => self.value.clone().expect("proposing a value"),
                        };
                        self.value = Some(value.clone());
                        let ballot = self.ballot;
                        let out = self
                            .acceptors
                            .voters()
                            .iter()
                            .map(|a| {
                                (
                                    *a,
                                    PaxosMessage::Accept {
                                        ballot,
                                        value: value.clone(),
                                    },
                                )
                            })
                            .collect();
                        (out, None)
                    }
                    Outcome::Lost(_) => {
                        self.phase = Phase::Idle;
                        (Vec::new(), None)
                    }
                    Outcome::Pending => (Vec::new(), None),
                }
            }
            PaxosMessage::Accepted {
                ballot,
                ok,
                promised,
                ..
            } => {
                self.highest_seen = self.highest_seen.max(promised.round);
                if ballot != self.ballot || self.phase != Phase::Accepting {
                    return (Vec::new(), None);
                }
                self.accepts.entry(from).or_insert(ok);
                let accepts = &self.accepts;
                match self.acceptors.tally(|a| accepts.get(&a).copied()) {
                    Outcome::Won => {
                        self.phase = Phase::Chosen;
                        self.chosen.clone_from(&self.value);
                        (Vec::new(), self.chosen.clone())
                    }
                    Outcome::Lost(_) => {
                        self.phase = Phase::Idle;
                        (Vec::new(), None)
                    }
                    Outcome::Pending => (Vec::new(), None),
                }
            }
            _ => (Vec::new(), None),
        }
    }
}

/// A Paxos learner: learns the chosen value by counting acceptances per ballot.
#[derive(Clone, Debug)]
pub struct Learner<V> {
    acceptors: MajorityConfig,
    /// For each ballot, who accepted (and the value, the same for every acceptor in one
    /// ballot).
    accepted: BTreeMap<Ballot, (V, BTreeMap<NodeId, bool>)>,
    chosen: Option<V>,
    ballots_max: usize,
}

impl<V: Clone> Learner<V> {
    /// A learner of `acceptors`' decisions, tracking at most `ballots_max` ballots at
    /// once (the oldest are forgotten).
    ///
    /// # Errors
    ///
    /// [`PaxosError::Acceptors`] if the set is empty or has duplicates.
    pub fn new(
        acceptors: impl IntoIterator<Item = NodeId>,
        ballots_max: usize,
    ) -> Result<Learner<V>, PaxosError> {
        Ok(Learner {
            acceptors: MajorityConfig::new(acceptors).map_err(|_| PaxosError::Acceptors)?,
            accepted: BTreeMap::new(),
            chosen: None,
            ballots_max: ballots_max.max(1),
        })
    }

    /// Records an acceptance; returns the chosen value once a majority accepted in one
    /// ballot.
    pub fn handle(&mut self, from: NodeId, msg: &PaxosMessage<V>) -> Option<V> {
        if let Some(v) = &self.chosen {
            return Some(v.clone());
        }
        let PaxosMessage::Accepted {
            ballot,
            ok: true,
            value: Some(value),
            ..
        } = msg
        else {
            return None;
        };
        if !self.acceptors.contains(from) {
            return None;
        }
        let (_, who) = self
            .accepted
            .entry(*ballot)
            .or_insert_with(|| (value.clone(), BTreeMap::new()));
        who.insert(from, true);
        let won = self.acceptors.tally(|a| who.get(&a).copied()) == Outcome::Won;
        if won {
            self.chosen = Some(value.clone());
        }
        while self.accepted.len() > self.ballots_max {
            self.accepted.pop_first();
        }
        self.chosen.clone()
    }

    /// The chosen value, once learned.
    #[must_use]
    pub fn chosen(&self) -> Option<&V> {
        self.chosen.as_ref()
    }
}
