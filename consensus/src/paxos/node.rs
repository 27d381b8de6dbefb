//! [`PaxosNode`]: single-decree Paxos on the node contract, one process running an
//! acceptor, a proposer and a learner together.

use synod_node::{EffectOf, Input, InputOf, NodeId, Protocol, RequestId, Rng, Time};

use super::gate::{Gate, NodeConfig, RequestError};
use super::{Acceptor, AcceptorState, Learner, PaxosMessage, Proposer};

/// How many ballots a node's learner tracks at once (older ones are forgotten; a value
/// they would have shown chosen is found again by the next round's phase one).
const LEARNER_BALLOTS_MAX: usize = 64;

/// A node of single-decree Paxos: acceptor, proposer and learner in one
/// [`synod_node::Protocol`] state machine.
///
/// - A client request ([`Input::Request`]) proposes a value; every request is answered
///   with the value chosen, which is the first request's value only if this node's
///   proposal won (or [`RequestError::Busy`] past `requests_max` waiting requests).
/// - The acceptor's promise and acceptance are persisted ([`synod_node::Effect::Persist`]
///   of its whole [`AcceptorState`], a few bytes), and nothing leaves the node after a
///   persist until [`Input::Persisted`] covers it: not the acceptor's answers, and not the
///   proposer's prepare, whose ballot the node's own acceptor promised and so made durable.
/// - Acceptances are sent to every node, so each node's learner finds the chosen value
///   and hands it up once with [`synod_node::Effect::Apply`].
/// - A round that has not finished by its deadline is retried with a higher ballot
///   ([`synod_node::Effect::WakeAt`], then [`Input::Wake`]) after a delay drawn from the
///   configuration's seed.
///
/// After a crash, build the node with [`PaxosNode::restore`] from the last acceptor state
/// whose persist was acknowledged; what it had learned and the requests it held are gone
/// (their clients time out and ask again).
#[derive(Clone, Debug)]
pub struct PaxosNode<V> {
    config: NodeConfig,
    rng: Rng,
    acceptor: Acceptor<V>,
    proposer: Proposer<V>,
    learner: Learner<V>,
    chosen: Option<V>,
    /// The requests waiting for the chosen value, at most `requests_max`.
    waiting: Vec<RequestId>,
    /// The value this node proposes: its first request's.
    proposal: Option<V>,
    retry_at: Option<Time>,
    gate: Gate<PaxosMessage<V>, Result<V, RequestError>, AcceptorState<V>, V>,
}

impl<V: Clone + PartialEq> PaxosNode<V> {
    /// A node that has promised and accepted nothing.
    #[must_use]
    pub fn new(config: NodeConfig) -> PaxosNode<V> {
        PaxosNode::restore(
            config,
            AcceptorState {
                promised: None,
                accepted: None,
            },
        )
    }

    /// A node rebuilt after a restart from the last acceptor state it persisted (the
    /// `write` of its latest acknowledged [`synod_node::Effect::Persist`]). Its proposer
    /// starts above the ballot promised, so it never uses a ballot twice.
    #[must_use]
    pub fn restore(config: NodeConfig, state: AcceptorState<V>) -> PaxosNode<V> {
        let nodes = config.nodes().to_vec();
        let mut proposer =
            Proposer::new(config.id(), nodes.iter().copied()).expect("validated by NodeConfig");
        if let Some(promised) = state.promised {
            proposer.observe(promised);
        }
        PaxosNode {
            rng: config.rng(),
            acceptor: Acceptor::restore(state),
            proposer,
            learner: Learner::new(nodes, LEARNER_BALLOTS_MAX).expect("validated by NodeConfig"),
            chosen: None,
            waiting: Vec::new(),
            proposal: None,
            retry_at: None,
            gate: Gate::new(config.id()),
            config,
        }
    }

    /// Makes this node's acceptor leave its accepted value out of its promises, for tests
    /// that must show the checker catches two chosen values.
    #[cfg(feature = "broken")]
    #[must_use]
    pub fn broken_hiding_accepted(mut self) -> PaxosNode<V> {
        self.acceptor.hide_accepted = true;
        self
    }

    /// The value this node knows chosen, if any.
    #[must_use]
    pub fn chosen(&self) -> Option<&V> {
        self.chosen.as_ref()
    }

    /// The acceptor's state (what the latest persist wrote, durable or not).
    #[must_use]
    pub fn acceptor_state(&self) -> &AcceptorState<V> {
        self.acceptor.state()
    }

    /// The ballot of this node's latest proposal.
    #[must_use]
    pub fn ballot(&self) -> super::Ballot {
        self.proposer.ballot()
    }

    fn request(&mut self, now: Time, id: RequestId, value: V) {
        if let Some(chosen) = &self.chosen {
            let chosen = chosen.clone();
            self.gate.reply(id, Ok(chosen));
        } else if self.waiting.len() >= self.config.requests_limit() {
            self.gate.reply(id, Err(RequestError::Busy));
        } else {
            self.waiting.push(id);
            if self.proposal.is_none() {
                self.proposal = Some(value);
                self.propose(now);
            }
        }
    }

    /// Starts a round with a ballot above every ballot seen, and sets its deadline.
    fn propose(&mut self, now: Time) {
        let Some(value) = self.proposal.clone() else {
            return;
        };
        let out = self.proposer.propose(value);
        self.send_all(out);
        let at = self.config.retry_deadline(now, &mut self.rng);
        self.retry_at = Some(at);
        self.gate.wake_at(now, at);
    }

    /// Sends the proposer's messages, handing this node's own acceptor its copy first:
    /// the acceptor's persist then holds back the copies to the others, so no prepare
    /// leaves before its ballot is durable here.
    fn send_all(&mut self, out: Vec<(NodeId, PaxosMessage<V>)>) {
        let me = self.config.id();
        let (mine, others): (Vec<_>, Vec<_>) = out.into_iter().partition(|(to, _)| *to == me);
        for (_, message) in mine {
            self.deliver(me, message);
        }
        for (to, message) in others {
            self.gate.send(to, message);
        }
    }

    fn deliver(&mut self, from: NodeId, message: PaxosMessage<V>) {
        match message {
            PaxosMessage::Prepare { .. } | PaxosMessage::Accept { .. } => {
                let before = self.acceptor.state().clone();
                let Some(answer) = self.acceptor.handle(message) else {
                    return;
                };
                if *self.acceptor.state() != before {
                    self.gate.persist(self.acceptor.state().clone());
                }
                if matches!(answer, PaxosMessage::Accepted { ok: true, .. }) {
                    // Every node learns; the proposer among them counts it too.
                    for to in self.config.nodes().to_vec() {
                        self.gate.send(to, answer.clone());
                    }
                } else {
                    self.gate.send(from, answer);
                }
            }
            PaxosMessage::Promise { .. } => {
                let (out, decided) = self.proposer.handle(from, message);
                self.send_all(out);
                if let Some(value) = decided {
                    self.learn(value);
                }
            }
            PaxosMessage::Accepted { .. } => {
                let learned = self.learner.handle(from, &message);
                let (out, decided) = self.proposer.handle(from, message);
                self.send_all(out);
                if let Some(value) = decided.or(learned) {
                    self.learn(value);
                }
            }
        }
    }

    /// The value is chosen: hand it up and answer every waiting request.
    fn learn(&mut self, value: V) {
        if self.chosen.is_some() {
            return;
        }
        self.chosen = Some(value.clone());
        self.retry_at = None;
        self.gate.apply(value.clone());
        for id in std::mem::take(&mut self.waiting) {
            self.gate.reply(id, Ok(value.clone()));
        }
    }
}

impl<V: Clone + PartialEq> Protocol for PaxosNode<V> {
    type Message = PaxosMessage<V>;
    /// The value to propose.
    type Request = V;
    /// The value chosen.
    type Response = Result<V, RequestError>;
    /// The acceptor's whole state; the latest acknowledged one is what a restart needs.
    type Write = AcceptorState<V>;
    /// The chosen value, handed up once when this node learns it.
    type Apply = V;

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
            Input::Wake => {
                if let Some(at) = self.retry_at {
                    if now >= at {
                        self.propose(now);
                    } else {
                        self.gate.wake_at(now, at);
                    }
                }
            }
        }
        let me = self.config.id();
        while let Some(message) = self.gate.next_local() {
            self.deliver(me, message);
        }
    }

    fn poll(&mut self) -> Option<EffectOf<Self>> {
        self.gate.poll()
    }
}
