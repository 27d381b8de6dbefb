//! Multi-Paxos: a log of slots, each decided by Paxos, with a stable leader that runs phase
//! one once for every slot at once and then only phase two per command.
//!
//! A leader prepares its ballot **for all slots from `from` on** in one round. The
//! promises carry every value each acceptor accepted at or after `from`; for each such
//! slot the leader re-proposes the highest-ballot value, and **fills the gaps** (slots
//! some earlier leader used but whose value no promise reports) with no-ops, so the log
//! has no holes. After that, each new command costs one round trip to a majority: the
//! leader assigns the next slot and sends `Accept` directly. A leader that meets a higher
//! ballot is deposed ([`LeaderStatus::Deposed`]); the caller may prepare again with a
//! higher ballot after a random delay.
//!
//! This is the shape of Chubby's and Spanner's Paxos groups; Raft is, in effect, Multi-Paxos
//! with the leader's log always complete. Acceptors persist their state
//! ([`MultiAcceptor::promised`], [`MultiAcceptor::accepted`]) before answering.
//! [`super::MultiPaxosNode`] runs these roles on the node contract, persistence included.
//!
//! ```
//! use synod_consensus::paxos::multi::{MultiAcceptor, MultiLeader, SlotValue};
//! use synod_consensus::NodeId;
//!
//! let ids = [1, 2, 3].map(NodeId::new);
//! let mut acceptors: Vec<MultiAcceptor<&str>> = ids.iter().map(|_| MultiAcceptor::new(1024)).collect();
//! let mut leader = MultiLeader::new(NodeId::new(1), ids, 64)?;
//! let mut outbox = leader.prepare(0);
//! let mut deliver = |outbox: &mut Vec<_>, leader: &mut MultiLeader<&'static str>| {
//!     while let Some((to, msg)) = outbox.pop() {
//!         let at = ids.iter().position(|id| *id == to).expect("an acceptor");
//!         if let Some(reply) = acceptors[at].handle(msg) {
//!             outbox.extend(leader.handle(to, reply));
//!         }
//!     }
//! };
//! deliver(&mut outbox, &mut leader); // phase one, once
//! let mut outbox = leader.propose("a")?; // then one round trip per command
//! deliver(&mut outbox, &mut leader);
//! let mut outbox = leader.propose("b")?;
//! deliver(&mut outbox, &mut leader);
//! assert_eq!(leader.chosen(0), Some(&SlotValue::Command("a")));
//! assert_eq!(leader.chosen(1), Some(&SlotValue::Command("b")));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use synod_quorum::{MajorityConfig, Outcome, Quorum};

use super::{Ballot, PaxosError};
use crate::types::NodeId;

/// What a slot holds: a command, or a no-op that fills a gap.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SlotValue<V> {
    /// A gap filler.
    Noop,
    /// A command.
    Command(V),
}

/// The messages of Multi-Paxos.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MultiMessage<V> {
    /// Phase 1a for every slot from `from` on.
    Prepare {
        /// The leader's ballot.
        ballot: Ballot,
        /// The first slot the leader does not know chosen.
        from: u64,
    },
    /// Phase 1b.
    Promise {
        /// The ballot answered.
        ballot: Ballot,
        /// Whether the promise is made.
        ok: bool,
        /// The highest ballot promised.
        promised: Ballot,
        /// Every value accepted at or after `from`: (slot, ballot, value).
        accepted: Vec<(u64, Ballot, SlotValue<V>)>,
    },
    /// Phase 2a for one slot.
    Accept {
        /// The leader's ballot.
        ballot: Ballot,
        /// The slot.
        slot: u64,
        /// The value.
        value: SlotValue<V>,
    },
    /// Phase 2b.
    Accepted {
        /// The ballot answered.
        ballot: Ballot,
        /// The slot.
        slot: u64,
        /// Whether it was accepted.
        ok: bool,
        /// The highest ballot promised.
        promised: Ballot,
    },
    /// The leader's news to the other nodes: `slot` is chosen with `value`.
    Chosen {
        /// The slot.
        slot: u64,
        /// Its value.
        value: SlotValue<V>,
    },
}

/// A Multi-Paxos acceptor: one promise for all slots, one accepted value per slot.
#[derive(Clone, Debug)]
pub struct MultiAcceptor<V> {
    promised: Option<Ballot>,
    accepted: BTreeMap<u64, (Ballot, SlotValue<V>)>,
    slots_max: usize,
}

impl<V: Clone> MultiAcceptor<V> {
    /// An acceptor holding at most `slots_max` accepted slots (accepts beyond it are
    /// refused; a real system truncates chosen slots below a snapshot).
    #[must_use]
    pub fn new(slots_max: usize) -> MultiAcceptor<V> {
        MultiAcceptor {
            promised: None,
            accepted: BTreeMap::new(),
            slots_max,
        }
    }

    /// An acceptor rebuilt after a restart from what it persisted: its promise and its
    /// accepted values (an acceptance also promises its ballot).
    #[must_use]
    pub fn restore(
        slots_max: usize,
        promised: Option<Ballot>,
        accepted: impl IntoIterator<Item = (u64, Ballot, SlotValue<V>)>,
    ) -> MultiAcceptor<V> {
        let mut acceptor = MultiAcceptor::new(slots_max);
        acceptor.promised = promised;
        for (slot, ballot, value) in accepted {
            acceptor.promised = acceptor.promised.max(Some(ballot));
            acceptor.accepted.insert(slot, (ballot, value));
        }
        acceptor
    }

    /// The ballot promised (persist it before answering).
    #[must_use]
    pub fn promised(&self) -> Option<Ballot> {
        self.promised
    }

    /// The values accepted, by slot (persist them before answering).
    #[must_use]
    pub fn accepted(&self) -> &BTreeMap<u64, (Ballot, SlotValue<V>)> {
        &self.accepted
    }

    /// Handles a request; returns the reply.
    pub fn handle(&mut self, msg: MultiMessage<V>) -> Option<MultiMessage<V>> {
        match msg {
            MultiMessage::Prepare { ballot, from } => {
                let ok = self.promised.is_none_or(|p| ballot > p);
                if ok {
                    self.promised = Some(ballot);
                }
                let accepted = if ok {
                    self.accepted
                        .range(from..)
                        .map(|(s, (b, v))| (*s, *b, v.clone()))
                        .collect()
                } else {
                    Vec::new()
                };
                Some(MultiMessage::Promise {
                    ballot,
                    ok,
                    promised: self.promised.unwrap_or(ballot),
                    accepted,
                })
            }
            MultiMessage::Accept {
                ballot,
                slot,
                value,
            } => {
                let room =
                    self.accepted.contains_key(&slot) || self.accepted.len() < self.slots_max;
                let ok = room && self.promised.is_none_or(|p| ballot >= p);
                if ok {
                    self.promised = Some(ballot);
                    self.accepted.insert(slot, (ballot, value));
                }
                Some(MultiMessage::Accepted {
                    ballot,
                    slot,
                    ok,
                    promised: self.promised.unwrap_or(ballot),
                })
            }
            _ => None,
        }
    }
}

/// Where a leader stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaderStatus {
    /// Not leading; call [`MultiLeader::prepare`].
    Idle,
    /// Phase one under way.
    Preparing,
    /// Phase one done: proposals go straight to phase two.
    Leading,
    /// A higher ballot was seen; prepare again (after a random delay) to compete.
    Deposed,
}

/// Why a proposal was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MultiProposeError {
    /// Not leading (phase one not done, or deposed).
    NotLeading(LeaderStatus),
    /// `in_flight_max` slots are still undecided.
    Backpressure,
}

impl fmt::Display for MultiProposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MultiProposeError::NotLeading(s) => write!(f, "not leading ({s:?})"),
            MultiProposeError::Backpressure => write!(f, "too many undecided slots"),
        }
    }
}

impl std::error::Error for MultiProposeError {}

/// A Multi-Paxos leader (distinguished proposer and learner of its own proposals).
///
/// It keeps every slot it learned chosen ([`MultiLeader::chosen_slots`]) for as long as it
/// lives: the log has no snapshots or truncation yet, so its memory grows with the log
/// (the acceptor's undecided slots are bounded by `slots_max`; the chosen ones are not).
#[derive(Clone, Debug)]
pub struct MultiLeader<V> {
    id: NodeId,
    acceptors: MajorityConfig,
    round: u64,
    ballot: Ballot,
    status: LeaderStatus,
    from: u64,
    promises: BTreeMap<NodeId, bool>,
    /// Highest-ballot value reported per slot during phase one.
    reported: BTreeMap<u64, (Ballot, SlotValue<V>)>,
    /// Slots proposed in this ballot and not yet chosen: value and acceptances.
    pending: BTreeMap<u64, (SlotValue<V>, BTreeMap<NodeId, bool>)>,
    chosen: BTreeMap<u64, SlotValue<V>>,
    next_slot: u64,
    in_flight_max: usize,
    /// Test-only: ignore the values reported in promises (a known-bad leader).
    ignore_reports: bool,
}

impl<V: Clone> MultiLeader<V> {
    /// A would-be leader `id` over `acceptors`, with at most `in_flight_max` undecided
    /// slots at once.
    ///
    /// # Errors
    ///
    /// [`PaxosError::Acceptors`] if the set is empty or has duplicates.
    pub fn new(
        id: NodeId,
        acceptors: impl IntoIterator<Item = NodeId>,
        in_flight_max: usize,
    ) -> Result<MultiLeader<V>, PaxosError> {
        Ok(MultiLeader {
            id,
            acceptors: MajorityConfig::new(acceptors).map_err(|_| PaxosError::Acceptors)?,
            round: 0,
            ballot: Ballot { round: 0, node: id },
            status: LeaderStatus::Idle,
            from: 0,
            promises: BTreeMap::new(),
            reported: BTreeMap::new(),
            pending: BTreeMap::new(),
            chosen: BTreeMap::new(),
            next_slot: 0,
            in_flight_max: in_flight_max.max(1),
            ignore_reports: false,
        })
    }

    /// A broken leader that ignores the values its promises report, for tests that must
    /// show the checker catches a slot chosen twice.
    #[cfg(feature = "broken")]
    #[must_use]
    pub fn broken_ignoring_reports(mut self) -> MultiLeader<V> {
        self.ignore_reports = true;
        self
    }

    /// The leader's status.
    #[must_use]
    pub fn status(&self) -> LeaderStatus {
        self.status
    }

    /// The value chosen in `slot`, if this leader knows it.
    #[must_use]
    pub fn chosen(&self, slot: u64) -> Option<&SlotValue<V>> {
        self.chosen.get(&slot)
    }

    /// The slot the next proposal takes.
    #[must_use]
    pub fn next_slot(&self) -> u64 {
        self.next_slot
    }

    /// Whether a slot this leader proposed in its ballot is still undecided.
    #[must_use]
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Every slot this leader knows chosen.
    #[must_use]
    pub fn chosen_slots(&self) -> &BTreeMap<u64, SlotValue<V>> {
        &self.chosen
    }

    /// Records a slot chosen elsewhere (learned from another leader's log), so that phase
    /// one can start after it.
    pub fn learn(&mut self, slot: u64, value: SlotValue<V>) {
        self.chosen.insert(slot, value);
    }

    fn first_unchosen(&self) -> u64 {
        let mut slot = 0;
        while self.chosen.contains_key(&slot) {
            slot += 1;
        }
        slot
    }

    fn broadcast(&self, msg: &MultiMessage<V>) -> Vec<(NodeId, MultiMessage<V>)> {
        self.acceptors
            .voters()
            .iter()
            .map(|a| (*a, msg.clone()))
            .collect()
    }

    /// Starts phase one with a ballot above `round_floor` and every ballot seen, for all
    /// slots from the first this leader does not know chosen.
    pub fn prepare(&mut self, round_floor: u64) -> Vec<(NodeId, MultiMessage<V>)> {
        self.round = self.round.max(round_floor).max(self.ballot.round) + 1;
        self.ballot = Ballot {
            round: self.round,
            node: self.id,
        };
        self.status = LeaderStatus::Preparing;
        self.from = self.first_unchosen();
        self.promises.clear();
        self.reported.clear();
        self.pending.clear();
        self.broadcast(&MultiMessage::Prepare {
            ballot: self.ballot,
            from: self.from,
        })
    }

    /// Proposes a command in the next slot (phase two only).
    ///
    /// # Errors
    ///
    /// [`MultiProposeError::NotLeading`] unless phase one is done;
    /// [`MultiProposeError::Backpressure`] with `in_flight_max` slots undecided.
    pub fn propose(
        &mut self,
        value: V,
    ) -> Result<Vec<(NodeId, MultiMessage<V>)>, MultiProposeError> {
        if self.status != LeaderStatus::Leading {
            return Err(MultiProposeError::NotLeading(self.status));
        }
        if self.pending.len() >= self.in_flight_max {
            return Err(MultiProposeError::Backpressure);
        }
        let slot = self.next_slot;
        self.next_slot += 1;
        Ok(self.accept(slot, SlotValue::Command(value)))
    }

    fn accept(&mut self, slot: u64, value: SlotValue<V>) -> Vec<(NodeId, MultiMessage<V>)> {
        self.pending.insert(slot, (value.clone(), BTreeMap::new()));
        self.broadcast(&MultiMessage::Accept {
            ballot: self.ballot,
            slot,
            value,
        })
    }

    /// Handles a reply from acceptor `from`; returns messages to send.
    pub fn handle(&mut self, from: NodeId, msg: MultiMessage<V>) -> Vec<(NodeId, MultiMessage<V>)> {
        if !self.acceptors.contains(from) {
            return Vec::new();
        }
        match msg {
            MultiMessage::Promise {
                ballot,
                ok,
                promised,
                accepted,
            } => {
                self.observe(promised);
                if ballot != self.ballot || self.status != LeaderStatus::Preparing {
                    return Vec::new();
                }
                self.promises.entry(from).or_insert(ok);
                if ok && !(cfg!(feature = "broken") && self.ignore_reports) {
                    for (slot, b, v) in accepted {
                        if slot >= self.from
                            && self.reported.get(&slot).is_none_or(|(best, _)| b > *best)
                        {
                            self.reported.insert(slot, (b, v));
                        }
                    }
                }
                let promises = &self.promises;
                match self.acceptors.tally(|a| promises.get(&a).copied()) {
                    Outcome::Won => self.take_over(),
                    Outcome::Lost(_) => {
                        self.status = LeaderStatus::Deposed;
                        Vec::new()
                    }
                    Outcome::Pending => Vec::new(),
                }
            }
            MultiMessage::Accepted {
                ballot,
                slot,
                ok,
                promised,
            } => {
                self.observe(promised);
                if ballot != self.ballot {
                    return Vec::new();
                }
                let Some((value, votes)) = self.pending.get_mut(&slot) else {
                    return Vec::new();
                };
                votes.entry(from).or_insert(ok);
                match self.acceptors.tally(|a| votes.get(&a).copied()) {
                    Outcome::Won => {
                        let value = value.clone();
                        self.pending.remove(&slot);
                        self.chosen.insert(slot, value);
                    }
                    Outcome::Lost(_) => self.status = LeaderStatus::Deposed,
                    Outcome::Pending => {}
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn observe(&mut self, promised: Ballot) {
        self.round = self.round.max(promised.round);
        if promised > self.ballot && self.status != LeaderStatus::Idle {
            self.status = LeaderStatus::Deposed;
        }
    }

    /// Phase one won: re-propose every reported value, fill gaps with no-ops, lead.
    fn take_over(&mut self) -> Vec<(NodeId, MultiMessage<V>)> {
        self.status = LeaderStatus::Leading;
        let end = self
            .reported
            .keys()
            .next_back()
            .map_or(self.from, |last| last + 1)
            .max(self.first_unchosen());
        let mut out = Vec::new();
        for slot in self.from..end {
            if self.chosen.contains_key(&slot) {
                continue;
            }
            let value = self
                .reported
                .remove(&slot)
                .map_or(SlotValue::Noop, |(_, v)| v);
            out.extend(self.accept(slot, value));
        }
        self.next_slot = end.max(self.chosen.keys().next_back().map_or(0, |s| s + 1));
        out
    }
}
