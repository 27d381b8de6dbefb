//! [`CasRegisterNode`]: the per-key compare-and-set register on the node contract, one
//! process running a replica (acceptor of every key) and the coordinators of its clients'
//! operations.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;

use serde::{Deserialize, Serialize};
use synod_node::{EffectOf, Input, InputOf, NodeId, Protocol, RequestId, Rng, Time};

use super::gate::{Gate, NodeConfig, RequestError};
use super::register::{CasCoordinator, CasStatus, KeyState, RegisterAcceptor, RegisterMessage};

/// A client's operation on a [`CasRegisterNode`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CasRequest<K, V> {
    /// A linearizable read of `key`.
    Read {
        /// The key.
        key: K,
    },
    /// Write `new` to `key` if it holds `expect` (`None`: the key is absent).
    CompareAndSet {
        /// The key.
        key: K,
        /// The value the key must hold.
        expect: Option<V>,
        /// The value to write.
        new: V,
    },
}

impl<K, V> CasRequest<K, V> {
    /// The key the operation works on.
    pub fn key(&self) -> &K {
        match self {
            CasRequest::Read { key } | CasRequest::CompareAndSet { key, .. } => key,
        }
    }
}

/// The answer to a [`CasRequest`] that finished.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CasReply<V> {
    /// Whether a compare-and-set wrote (always `false` for a read).
    pub applied: bool,
    /// The key's value after the operation (for a read or a failed compare, the current
    /// value).
    pub value: Option<V>,
}

/// What a [`CasRegisterNode`] persists: one key's replica state, replacing the last one
/// written for that key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyWrite<K, V> {
    /// The key.
    pub key: K,
    /// Its whole state on this replica.
    pub state: KeyState<V>,
}

/// The outgoing side of a [`CasRegisterNode`].
type RegisterGate<K, V> =
    Gate<RegisterMessage<K, V>, Result<CasReply<V>, RequestError>, KeyWrite<K, V>, Infallible>;

/// An operation under way, one per key at a time.
#[derive(Clone, Debug)]
struct Running<K, V> {
    id: RequestId,
    coordinator: CasCoordinator<K, V>,
    /// When the operation is retried (or, once it proposed its own write, given up as
    /// unknown) if it has not finished.
    retry_at: Time,
}

/// A node of the per-key Paxos register: a replica of every key and the coordinator of
/// its own clients' reads and compare-and-sets, as one [`synod_node::Protocol`] state
/// machine.
///
/// - A [`CasRequest`] is answered with one [`CasReply`], or [`RequestError::Unknown`]
///   when the node's round was pre-empted after it proposed the write (which may yet take
///   effect), [`RequestError::Busy`] past `requests_max` waiting requests,
///   [`RequestError::KeysFull`] for a new key once the replica holds `keys_max`.
/// - One operation per key runs at a time (later ones on the key wait their turn), so two
///   operations of one node never share a ballot.
/// - The replica's state of a key is persisted ([`KeyWrite`]) whenever it changes, and
///   nothing leaves the node after a persist until [`Input::Persisted`] covers it: not the
///   replica's promises and acceptances, not the coordinator's prepares (whose ballot the
///   node's own replica promised first, so a restarted node starts above it).
/// - A round that stalls is retried with a higher ballot after a delay drawn from the
///   configuration's seed; one that stalls after proposing its own write ends unknown.
///
/// After a crash, build the node with [`CasRegisterNode::restore`] from the last
/// acknowledged [`KeyWrite`] of each key; the operations it ran are gone (their clients
/// time out).
#[derive(Clone, Debug)]
pub struct CasRegisterNode<K, V> {
    config: NodeConfig,
    rng: Rng,
    replica: RegisterAcceptor<K, V>,
    running: BTreeMap<K, Running<K, V>>,
    /// Operations waiting for their key's running one to finish.
    queued: VecDeque<(RequestId, CasRequest<K, V>)>,
    /// The time of the input being handled.
    last_now: Time,
    gate: RegisterGate<K, V>,
}

impl<K: Ord + Clone, V: Clone + PartialEq> CasRegisterNode<K, V> {
    /// A node whose replica holds nothing, and at most `keys_max` keys.
    #[must_use]
    pub fn new(config: NodeConfig, keys_max: usize) -> CasRegisterNode<K, V> {
        CasRegisterNode::restore(config, keys_max, [])
    }

    /// A node rebuilt after a restart from the last acknowledged [`KeyWrite`] of each key
    /// (a later write of a key replaces an earlier one).
    #[must_use]
    pub fn restore(
        config: NodeConfig,
        keys_max: usize,
        writes: impl IntoIterator<Item = KeyWrite<K, V>>,
    ) -> CasRegisterNode<K, V> {
        let mut replica = RegisterAcceptor::new(keys_max);
        for KeyWrite { key, state } in writes {
            replica.restore(key, state);
        }
        CasRegisterNode {
            rng: config.rng(),
            replica,
            running: BTreeMap::new(),
            queued: VecDeque::new(),
            last_now: Time::ZERO,
            gate: Gate::new(config.id()),
            config,
        }
    }

    /// The committed value of `key` this replica knows (possibly stale).
    #[must_use]
    pub fn committed(&self, key: &K) -> Option<&V> {
        self.replica.committed(key)
    }

    /// The replica's state of `key`.
    #[must_use]
    pub fn key_state(&self, key: &K) -> Option<&KeyState<V>> {
        self.replica.key_state(key)
    }

    fn request(&mut self, now: Time, id: RequestId, request: CasRequest<K, V>) {
        if !self.replica.has_room_for(request.key()) {
            self.gate.reply(id, Err(RequestError::KeysFull));
        } else if self.running.len() + self.queued.len() >= self.config.requests_limit() {
            self.gate.reply(id, Err(RequestError::Busy));
        } else if self.running.contains_key(request.key()) {
            self.queued.push_back((id, request));
        } else {
            self.start(now, id, request);
        }
    }

    fn start(&mut self, now: Time, id: RequestId, request: CasRequest<K, V>) {
        let me = self.config.id();
        let nodes = self.config.nodes().iter().copied();
        let key = request.key().clone();
        let coordinator = match request {
            CasRequest::Read { key } => CasCoordinator::read(me, nodes, key),
            CasRequest::CompareAndSet { key, expect, new } => {
                CasCoordinator::compare_and_set(me, nodes, key, expect, new)
            }
        }
        .expect("validated by NodeConfig");
        let running = Running {
            id,
            coordinator,
            retry_at: now,
        };
        self.running.insert(key.clone(), running);
        self.begin_round(now, &key);
    }

    /// Starts a round of the operation on `key` with a ballot above every ballot this
    /// node's replica promised on the key, and sets its deadline.
    fn begin_round(&mut self, now: Time, key: &K) {
        let floor = self
            .replica
            .key_state(key)
            .and_then(|s| s.promised)
            .map_or(0, |b| b.round);
        let retry_at = self.config.retry_deadline(now, &mut self.rng);
        let Some(running) = self.running.get_mut(key) else {
            return;
        };
        running.retry_at = retry_at;
        let out = running.coordinator.start(floor);
        self.send_all(out);
        self.wake(now);
    }

    /// Sends a coordinator's messages, handing this node's own replica its copy first, so
    /// that its persist holds back the copies to the others.
    fn send_all(&mut self, out: Vec<(NodeId, RegisterMessage<K, V>)>) {
        let me = self.config.id();
        let (mine, others): (Vec<_>, Vec<_>) = out.into_iter().partition(|(to, _)| *to == me);
        for (_, message) in mine {
            self.deliver(me, message);
        }
        for (to, message) in others {
            self.gate.send(to, message);
        }
    }

    fn deliver(&mut self, from: NodeId, message: RegisterMessage<K, V>) {
        match message {
            RegisterMessage::Prepare { .. }
            | RegisterMessage::Propose { .. }
            | RegisterMessage::Commit { .. } => self.replicate(from, message),
            RegisterMessage::Promise { ref key, .. }
            | RegisterMessage::Accepted { ref key, .. } => {
                let key = key.clone();
                let Some(running) = self.running.get_mut(&key) else {
                    return;
                };
                let (out, status) = running.coordinator.handle(from, message);
                self.send_all(out);
                self.progress(&key, status);
            }
        }
    }

    /// The replica's side: answer, after persisting what changed.
    fn replicate(&mut self, from: NodeId, message: RegisterMessage<K, V>) {
        let key = match &message {
            RegisterMessage::Prepare { key, .. }
            | RegisterMessage::Propose { key, .. }
            | RegisterMessage::Commit { key, .. } => key.clone(),
            _ => return,
        };
        let before = self.replica.key_state(&key).cloned();
        let answer = self.replica.handle(message);
        if let Some(state) = self.replica.key_state(&key)
            && before.as_ref() != Some(state)
        {
            let state = state.clone();
            self.gate.persist(KeyWrite { key, state });
        }
        if let Some(answer) = answer {
            self.gate.send(from, answer);
        }
    }

    /// Acts on an operation's new status.
    fn progress(&mut self, key: &K, status: CasStatus<V>) {
        let reply = match status {
            CasStatus::Pending | CasStatus::Retry => return,
            CasStatus::Unknown => Err(RequestError::Unknown),
            CasStatus::Done { applied, value } => Ok(CasReply { applied, value }),
        };
        self.finish(key, reply);
    }

    /// Answers the operation on `key` and lets the next one on the key run. A
    /// pre-empted round ([`CasStatus::Retry`]) is not finished: it restarts at its
    /// deadline, which is its random back-off.
    fn finish(&mut self, key: &K, reply: Result<CasReply<V>, RequestError>) {
        let Some(running) = self.running.remove(key) else {
            return;
        };
        self.gate.reply(running.id, reply);
        if let Some(at) = self.queued.iter().position(|(_, r)| r.key() == key) {
            let (id, request) = self.queued.remove(at).expect("found above");
            // The time only seeds the new round's deadline; the node's latest is fine.
            let now = self.last_now;
            self.start(now, id, request);
        }
    }

    fn wake(&mut self, now: Time) {
        if let Some(at) = self.running.values().map(|r| r.retry_at).min() {
            self.gate.wake_at(now, at);
        }
    }

    fn on_wake(&mut self, now: Time) {
        let due: Vec<K> = self
            .running
            .iter()
            .filter(|(_, r)| r.retry_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let gave_up = self
                .running
                .get(&key)
                .is_some_and(|r| r.coordinator.proposed_own_write());
            if gave_up {
                self.finish(&key, Err(RequestError::Unknown));
            } else {
                self.begin_round(now, &key);
            }
        }
        self.wake(now);
    }
}

impl<K: Ord + Clone, V: Clone + PartialEq> Protocol for CasRegisterNode<K, V> {
    type Message = RegisterMessage<K, V>;
    type Request = CasRequest<K, V>;
    type Response = Result<CasReply<V>, RequestError>;
    /// One key's replica state; the latest acknowledged one per key is what a restart
    /// needs.
    type Write = KeyWrite<K, V>;
    /// The register hands nothing up: its values are read through requests.
    type Apply = Infallible;

    fn id(&self) -> NodeId {
        self.config.id()
    }

    fn handle(&mut self, now: Time, input: InputOf<Self>) {
        self.last_now = now;
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
        while let Some(message) = self.gate.next_local() {
            self.deliver(me, message);
        }
    }

    fn poll(&mut self) -> Option<EffectOf<Self>> {
        self.gate.poll()
    }
}
