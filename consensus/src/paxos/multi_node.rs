//! [`MultiPaxosNode`]: the Multi-Paxos log on the node contract, one process running an
//! acceptor, a would-be leader and a learner together.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use synod_node::{EffectOf, Input, InputOf, NodeId, Protocol, RequestId, Rng, Time};

use super::Ballot;
use super::gate::{Gate, NodeConfig, RequestError};
use super::multi::{LeaderStatus, MultiAcceptor, MultiLeader, MultiMessage, SlotValue};

/// What a [`MultiPaxosNode`] persists: its acceptor's changes, replayed in order by
/// [`MultiPaxosNode::restore`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MultiWrite<V> {
    /// The acceptor promised `ballot` for every slot.
    Promise(Ballot),
    /// The acceptor accepted `value` in `slot` in `ballot` (which it thereby promised).
    Accept {
        /// The slot.
        slot: u64,
        /// The ballot.
        ballot: Ballot,
        /// The value.
        value: SlotValue<V>,
    },
}

/// A node of the Multi-Paxos log: acceptor, would-be leader and learner in one
/// [`synod_node::Protocol`] state machine.
///
/// - A client request appends a command. A node that is not leading runs phase one
///   (after its retry delay if it just lost), takes over, then proposes each command in
///   the next slot with one round trip. The request is answered with the slot once it is
///   chosen there, [`RequestError::Unknown`] if another value was chosen in its slot
///   (the command was not appended; it is compared by value, so an equal command chosen
///   there counts as this one), or [`RequestError::Busy`] past `requests_max` waiting
///   requests. Any node takes requests, so nodes with clients compete for leadership;
///   the seeded retry delays make one of them win for a while.
/// - The acceptor's promise and acceptances are persisted ([`MultiWrite`]), and nothing
///   leaves the node after a persist until [`Input::Persisted`] covers it: not its
///   answers, and not its own prepare, whose ballot it promised first.
/// - The leader tells the others each slot it finds chosen; every node hands the chosen
///   slots up in order with [`synod_node::Effect::Apply`], no-ops included. A node that
///   missed that news finds the slots again the next time it leads (phase one reports
///   them); there is no catch-up otherwise.
/// - With work waiting and no slot chosen for a retry delay (messages lost, a rival
///   leader), the node runs phase one again with a higher ballot.
///
/// After a crash, build the node with [`MultiPaxosNode::restore`] from its acknowledged
/// writes; it hands the log up again from slot 0 as it learns it.
#[derive(Clone, Debug)]
pub struct MultiPaxosNode<V> {
    config: NodeConfig,
    rng: Rng,
    acceptor: MultiAcceptor<V>,
    leader: MultiLeader<V>,
    /// Commands waiting to be proposed.
    queued: VecDeque<(RequestId, V)>,
    /// Commands proposed, by slot, waiting for the slot to be chosen.
    proposed: BTreeMap<u64, (RequestId, V)>,
    /// The next slot to hand up.
    next_apply: u64,
    retry_at: Option<Time>,
    gate: MultiGate<V>,
}

/// The outgoing side of a [`MultiPaxosNode`].
type MultiGate<V> =
    Gate<MultiMessage<V>, Result<u64, RequestError>, MultiWrite<V>, (u64, SlotValue<V>)>;

impl<V: Clone + PartialEq> MultiPaxosNode<V> {
    /// A node whose acceptor holds nothing and at most `slots_max` slots, and whose leader
    /// keeps at most `in_flight_max` slots undecided.
    #[must_use]
    pub fn new(config: NodeConfig, slots_max: usize, in_flight_max: usize) -> MultiPaxosNode<V> {
        MultiPaxosNode::restore(config, slots_max, in_flight_max, [])
    }

    /// A node rebuilt after a restart from its acknowledged writes, oldest first. Its
    /// leader starts above the ballot promised, so it never uses a ballot twice.
    #[must_use]
    pub fn restore(
        config: NodeConfig,
        slots_max: usize,
        in_flight_max: usize,
        writes: impl IntoIterator<Item = MultiWrite<V>>,
    ) -> MultiPaxosNode<V> {
        let mut promised = None;
        let mut accepted = Vec::new();
        for write in writes {
            match write {
                MultiWrite::Promise(ballot) => promised = promised.max(Some(ballot)),
                MultiWrite::Accept {
                    slot,
                    ballot,
                    value,
                } => accepted.push((slot, ballot, value)),
            }
        }
        let nodes = config.nodes().iter().copied();
        MultiPaxosNode {
            rng: config.rng(),
            acceptor: MultiAcceptor::restore(slots_max, promised, accepted),
            leader: MultiLeader::new(config.id(), nodes, in_flight_max)
                .expect("validated by NodeConfig"),
            queued: VecDeque::new(),
            proposed: BTreeMap::new(),
            next_apply: 0,
            retry_at: None,
            gate: Gate::new(config.id()),
            config,
        }
    }

    /// Makes this node's leader ignore the values its promises report, for tests that
    /// must show the checker catches a slot chosen twice.
    #[cfg(feature = "broken")]
    #[must_use]
    pub fn broken_ignoring_reports(mut self) -> MultiPaxosNode<V> {
        self.leader = self.leader.broken_ignoring_reports();
        self
    }

    /// The value this node knows chosen in `slot`.
    #[must_use]
    pub fn chosen(&self, slot: u64) -> Option<&SlotValue<V>> {
        self.leader.chosen(slot)
    }

    /// Where this node's leader stands.
    #[must_use]
    pub fn status(&self) -> LeaderStatus {
        self.leader.status()
    }

    fn request(&mut self, now: Time, id: RequestId, command: V) {
        if self.queued.len() + self.proposed.len() >= self.config.requests_limit() {
            self.gate.reply(id, Err(RequestError::Busy));
            return;
        }
        self.queued.push_back((id, command));
        match self.leader.status() {
            LeaderStatus::Leading => self.pump(now),
            LeaderStatus::Idle => self.prepare(now),
            // Phase one is under way, or the node just lost it: the deadline retries.
            LeaderStatus::Preparing | LeaderStatus::Deposed => {
                if self.retry_at.is_none() {
                    self.set_deadline(now);
                }
            }
        }
    }

    /// Runs phase one with a ballot above every ballot this node's acceptor promised.
    fn prepare(&mut self, now: Time) {
        let floor = self.acceptor.promised().map_or(0, |b| b.round);
        let out = self.leader.prepare(floor);
        self.send_all(out);
        self.set_deadline(now);
    }

    fn set_deadline(&mut self, now: Time) {
        let at = self.config.retry_deadline(now, &mut self.rng);
        self.retry_at = Some(at);
        self.gate.wake_at(now, at);
    }

    /// Proposes queued commands while leading and below the in-flight limit.
    fn pump(&mut self, now: Time) {
        while self.leader.status() == LeaderStatus::Leading
            && let Some((id, command)) = self.queued.pop_front()
        {
            let slot = self.leader.next_slot();
            match self.leader.propose(command.clone()) {
                Ok(out) => {
                    self.proposed.insert(slot, (id, command));
                    self.send_all(out);
                    if self.retry_at.is_none() {
                        self.set_deadline(now);
                    }
                }
                Err(_) => {
                    self.queued.push_front((id, command));
                    break;
                }
            }
        }
    }

    /// Sends the leader's messages, handing this node's own acceptor its copy first, so
    /// that its persist holds back the copies to the others.
    fn send_all(&mut self, out: Vec<(NodeId, MultiMessage<V>)>) {
        let me = self.config.id();
        let (mine, others): (Vec<_>, Vec<_>) = out.into_iter().partition(|(to, _)| *to == me);
        for (_, message) in mine {
            self.deliver(me, message);
        }
        for (to, message) in others {
            self.gate.send(to, message);
        }
    }

    fn deliver(&mut self, from: NodeId, message: MultiMessage<V>) {
        match message {
            MultiMessage::Prepare { .. } | MultiMessage::Accept { .. } => {
                self.accept(from, message);
            }
            MultiMessage::Promise { .. } => {
                let out = self.leader.handle(from, message);
                self.send_all(out);
            }
            MultiMessage::Accepted { slot, .. } => {
                let known = self.leader.chosen(slot).is_some();
                let out = self.leader.handle(from, message);
                self.send_all(out);
                if !known && let Some(value) = self.leader.chosen(slot).cloned() {
                    for to in self.config.nodes().to_vec() {
                        if to != self.config.id() {
                            let value = value.clone();
                            self.gate.send(to, MultiMessage::Chosen { slot, value });
                        }
                    }
                }
            }
            MultiMessage::Chosen { slot, value } => {
                if self.leader.chosen(slot).is_none() {
                    self.leader.learn(slot, value);
                }
            }
        }
    }

    /// The acceptor's side: answer, after persisting what changed.
    fn accept(&mut self, from: NodeId, message: MultiMessage<V>) {
        let promised = self.acceptor.promised();
        let Some(answer) = self.acceptor.handle(message) else {
            return;
        };
        match &answer {
            MultiMessage::Accepted {
                slot,
                ok: true,
                ballot,
                ..
            } => {
                let value = self.acceptor.accepted()[slot].1.clone();
                self.gate.persist(MultiWrite::Accept {
                    slot: *slot,
                    ballot: *ballot,
                    value,
                });
            }
            _ => {
                if let Some(ballot) = self.acceptor.promised()
                    && promised != Some(ballot)
                {
                    self.gate.persist(MultiWrite::Promise(ballot));
                }
            }
        }
        self.gate.send(from, answer);
    }

    /// Hands up the chosen slots in order and answers the requests whose slot is decided.
    fn advance(&mut self, now: Time) {
        let mut progressed = false;
        while let Some(value) = self.leader.chosen(self.next_apply).cloned() {
            let slot = self.next_apply;
            self.next_apply += 1;
            progressed = true;
            if let Some((id, command)) = self.proposed.remove(&slot) {
                let reply = if value == SlotValue::Command(command) {
                    Ok(slot)
                } else {
                    Err(RequestError::Unknown)
                };
                self.gate.reply(id, reply);
            }
            self.gate.apply((slot, value));
        }
        if progressed {
            self.retry_at = None;
            if !self.queued.is_empty() || !self.proposed.is_empty() {
                self.set_deadline(now);
            }
        }
    }

    fn on_wake(&mut self, now: Time) {
        let Some(at) = self.retry_at else {
            return;
        };
        if now < at {
            self.gate.wake_at(now, at);
            return;
        }
        self.retry_at = None;
        let stalled = self.leader.status() != LeaderStatus::Leading || self.leader.has_pending();
        if (!self.queued.is_empty() || !self.proposed.is_empty()) && stalled {
            self.prepare(now);
        }
    }
}

impl<V: Clone + PartialEq> Protocol for MultiPaxosNode<V> {
    type Message = MultiMessage<V>;
    /// A command to append.
    type Request = V;
    /// The slot the command was chosen in.
    type Response = Result<u64, RequestError>;
    /// One change of the acceptor; a restart replays them all.
    type Write = MultiWrite<V>;
    /// A chosen slot, handed up in slot order.
    type Apply = (u64, SlotValue<V>);

    fn id(&self) -> NodeId {
        self.config.id()
    }

    fn handle(&mut self, now: Time, input: InputOf<Self>) {
        match input {
            Input::Message { from, message } => {
                if self.config.is_peer(from) {
                    self.deliver(from, message);
                }
            }
            Input::Request { id, request } => self.request(now, id, request),
            Input::Persisted(token) => self.gate.persisted(token),
            Input::Wake => self.on_wake(now),
        }
        let me = self.config.id();
        loop {
            while let Some(message) = self.gate.next_local() {
                self.deliver(me, message);
            }
            // A take-over or a decided slot makes room for queued commands.
            self.pump(now);
            if !self.gate.has_local() {
                break;
            }
        }
        self.advance(now);
    }

    fn poll(&mut self) -> Option<EffectOf<Self>> {
        self.gate.poll()
    }
}
