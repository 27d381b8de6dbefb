//! The register store's state machine: one ABD register per key, as one state machine on
//! the node contract. The same code runs under `synod-sim` and as a process.
//!
//! Attiya, Bar-Noy and Dolev's register is linearizable without a leader: every read and
//! write asks a majority for its newest tagged value, and then stores the newest on a
//! majority (a read writes back what it read). [`synod_quorum::AbdNode`] is that protocol
//! for one register. [`Registers`] runs one per key, created when a key is first asked
//! for (a register nobody wrote holds nothing, as a new one does), at most
//! [`RegisterLimits::keys_max`] of them:
//!
//! - **Durability before acknowledgement** is the register's own: a replica asks for each
//!   newer value to be persisted ([`Record`]) and answers nothing that depends on it until
//!   the driver says the write is synced.
//! - **A generation per start** (the book's *Generation Clock*). Tags must be unique per
//!   write, and a node that restarts could otherwise reuse its numbering. So each start
//!   persists `generation + 1` and serves nothing until that record is synced; a crash
//!   before then means the number was never used, and the next start may pick it again.
//!
//! How records are laid out is the store's business ([`super::store`] in a process).

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;

use serde::{Deserialize, Serialize};
use synod_node::{Effect, EffectOf, Input, InputOf, NodeId, PersistToken, Protocol, Time};
use synod_quorum::{
    AbdConfig, AbdError, AbdMessage, AbdNode, AbdRequest, AbdResponse, AbdWrite, Incarnation, Tag,
};

/// What a client asks a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Request<K, V> {
    /// Read a key.
    Read(K),
    /// Write a value to a key.
    Write(K, V),
}

/// What a node answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Response<V> {
    /// The value read (`None`: never written).
    Read(Option<V>),
    /// The write is stored on a majority.
    Written,
    /// Refused before anything was done: the operation did not and will not take effect
    /// (the node is still starting, has too many operations in flight, or holds
    /// [`RegisterLimits::keys_max`] keys).
    Refused,
    /// The node gave up waiting for a majority: a write may or may not have taken effect.
    GaveUp,
}

/// What nodes send each other: a register's message, with the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Keyed<K, V> {
    /// The key.
    pub key: K,
    /// The message of that key's register.
    pub message: AbdMessage<V>,
}

/// One durable record, what [`Registers`] persists: a key's tagged value, or (no key) a
/// start; both carry the node's generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record<K, V> {
    /// The generation of the start that wrote it.
    pub generation: u64,
    /// The key, or `None` for a start record.
    pub key: Option<K>,
    /// The key's tag.
    pub tag: Tag,
    /// The key's value.
    pub value: Option<V>,
}

/// What a node's records say: its last generation and each key's newest tagged value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered<K, V> {
    /// The highest generation of any record.
    pub generation: u64,
    /// Each key's newest tag and value.
    pub registers: BTreeMap<K, (Tag, Option<V>)>,
}

impl<K, V> Default for Recovered<K, V> {
    fn default() -> Self {
        Recovered {
            generation: 0,
            registers: BTreeMap::new(),
        }
    }
}

impl<K: Ord, V> Recovered<K, V> {
    /// Takes in the next record read, in the order written.
    pub fn take(&mut self, record: Record<K, V>) {
        self.generation = self.generation.max(record.generation);
        if let Some(key) = record.key {
            // A replica persists only newer tags, so the last record of a key is its newest.
            self.registers.insert(key, (record.tag, record.value));
        }
    }
}

/// The limits of a node of the store, and its registers' timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterLimits {
    keys_max: usize,
    ops_in_flight_max: usize,
    retry_interval_ms: u64,
    timeout_ms: u64,
}

impl RegisterLimits {
    /// At most `keys_max` keys; per register, at most `ops_in_flight_max` operations in
    /// flight, retransmitted every `retry_interval_ms` and given up after `timeout_ms`.
    /// Zeros are taken as 1.
    #[must_use]
    pub const fn new(
        keys_max: usize,
        ops_in_flight_max: usize,
        retry_interval_ms: u64,
        timeout_ms: u64,
    ) -> Self {
        const fn at_least_one(n: u64) -> u64 {
            if n == 0 { 1 } else { n }
        }
        RegisterLimits {
            keys_max: at_least_one(keys_max as u64) as usize,
            ops_in_flight_max: at_least_one(ops_in_flight_max as u64) as usize,
            retry_interval_ms: at_least_one(retry_interval_ms),
            timeout_ms: at_least_one(timeout_ms),
        }
    }

    /// The most keys a node holds: a request for another is refused, and a peer's message
    /// about one dropped.
    #[must_use]
    pub const fn keys_max(&self) -> usize {
        self.keys_max
    }
}

/// An effect of a [`Registers`].
type StoreEffect<K, V> = Effect<Keyed<K, V>, Response<V>, Record<K, V>, Infallible>;

/// One node of the store: a replica and coordinator of every key's register, on the node
/// contract.
///
/// It starts by persisting its generation and serves nothing until that is durable; then
/// each key's [`AbdNode`] runs with the generation as its incarnation. The registers'
/// persists become the store's, with tokens of its own; their wake-ups become one, the
/// earliest.
#[derive(Debug)]
pub struct Registers<K, V> {
    me: NodeId,
    voters: Vec<NodeId>,
    limits: RegisterLimits,
    generation: u64,
    /// The start record's token while it is not durable, and what the disk held.
    starting: Option<(PersistToken, Recovered<K, V>)>,
    /// The registers' configuration, once the node serves.
    config: Option<AbdConfig>,
    /// One register per key, once running.
    registers: BTreeMap<K, AbdNode<V>>,
    /// The last token handed out; each persist not yet acknowledged, with the key and the
    /// register's own token it carries.
    last_token: PersistToken,
    persisting: VecDeque<(PersistToken, K, PersistToken)>,
    /// Each register's wake-up, and the one asked of the driver.
    wakes: BTreeMap<K, Time>,
    wake_at: Option<Time>,
    effects: VecDeque<StoreEffect<K, V>>,
}

impl<K: Ord + Clone, V: Clone> Registers<K, V> {
    /// Node `id` of a store whose voters are `voters` (`id` among them), starting from what
    /// its disk held: its first effect persists the next generation.
    #[must_use]
    pub fn start(
        id: NodeId,
        voters: impl IntoIterator<Item = NodeId>,
        limits: RegisterLimits,
        recovered: Recovered<K, V>,
    ) -> Self {
        let generation = recovered.generation + 1;
        let mut node = Registers {
            me: id,
            voters: voters.into_iter().collect(),
            limits,
            generation,
            starting: None,
            config: None,
            registers: BTreeMap::new(),
            last_token: PersistToken::default(),
            persisting: VecDeque::new(),
            wakes: BTreeMap::new(),
            wake_at: None,
            effects: VecDeque::new(),
        };
        let token = node.persist(Record {
            generation,
            key: None,
            tag: Tag::default(),
            value: None,
        });
        node.starting = Some((token, recovered));
        node
    }

    /// Whether the node serves (its start record is durable).
    #[must_use]
    pub fn serving(&self) -> bool {
        self.config.is_some()
    }

    /// This start's generation.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Each key's replica tag and value (nothing until the node is serving).
    pub fn stored(&self) -> impl Iterator<Item = (&K, Tag, Option<&V>)> + '_ {
        self.registers.iter().map(|(key, abd)| {
            let (tag, value) = abd.replica_state();
            (key, tag, value)
        })
    }

    fn persist(&mut self, write: Record<K, V>) -> PersistToken {
        self.last_token = self.last_token.next();
        self.effects.push_back(Effect::Persist {
            token: self.last_token,
            write,
        });
        self.last_token
    }

    /// `key`'s register, created if the node serves and has room for it.
    fn register(&mut self, key: &K) -> Option<&mut AbdNode<V>> {
        let config = self.config.as_ref()?;
        if !self.registers.contains_key(key) && self.registers.len() < self.limits.keys_max {
            self.registers
                .insert(key.clone(), AbdNode::new(config.clone()));
        }
        self.registers.get_mut(key)
    }

    /// Hands `input` to `key`'s register and carries its effects over as this node's.
    fn hand_register(&mut self, now: Time, key: &K, input: InputOf<AbdNode<V>>) -> bool {
        let Some(abd) = self.register(key) else {
            return false;
        };
        abd.handle(now, input);
        let mut effects = Vec::new();
        while let Some(effect) = abd.poll() {
            effects.push(effect);
        }
        for effect in effects {
            match effect {
                Effect::Send { to, message } => self.effects.push_back(Effect::Send {
                    to,
                    message: Keyed {
                        key: key.clone(),
                        message,
                    },
                }),
                Effect::Reply { id, response } => {
                    let response = match response {
                        AbdResponse::Read(value) => Response::Read(value),
                        AbdResponse::Written => Response::Written,
                        AbdResponse::Failed(AbdError::TimedOut { .. }) => Response::GaveUp,
                        AbdResponse::Failed(_) => Response::Refused,
                    };
                    self.effects.push_back(Effect::Reply { id, response });
                }
                Effect::Persist { token, write } => {
                    let AbdWrite { tag, value } = write;
                    let generation = self.generation;
                    let ours = self.persist(Record {
                        generation,
                        key: Some(key.clone()),
                        tag,
                        value,
                    });
                    self.persisting.push_back((ours, key.clone(), token));
                }
                Effect::WakeAt(at) => {
                    self.wakes.insert(key.clone(), at);
                }
                Effect::Apply(never) => match never {},
            }
        }
        true
    }

    /// Every persist up to `token` is durable: the start, and each register's writes.
    fn on_persisted(&mut self, now: Time, token: PersistToken) {
        if let Some((start, _)) = &self.starting
            && *start <= token
        {
            let (_, recovered) = self.starting.take().expect("starting");
            let voters = self.voters.iter().copied();
            let config = AbdConfig::majority(self.me, Incarnation::new(self.generation), voters)
                .and_then(|c| {
                    c.limits(
                        self.limits.ops_in_flight_max,
                        self.limits.retry_interval_ms,
                        self.limits.timeout_ms,
                    )
                })
                .expect("the node is one of the voters, and the limits are above zero");
            for (key, (tag, value)) in recovered.registers {
                let abd = AbdNode::recover(config.clone(), tag, value);
                self.registers.insert(key, abd);
            }
            self.config = Some(config);
        }
        let mut durable: BTreeMap<K, PersistToken> = BTreeMap::new();
        while let Some((ours, _, _)) = self.persisting.front()
            && *ours <= token
        {
            let (_, key, theirs) = self.persisting.pop_front().expect("front");
            durable.insert(key, theirs);
        }
        for (key, theirs) in durable {
            self.hand_register(now, &key, Input::Persisted(theirs));
        }
    }
}

impl<K: Ord + Clone, V: Clone> Protocol for Registers<K, V> {
    type Message = Keyed<K, V>;
    type Request = Request<K, V>;
    type Response = Response<V>;
    type Write = Record<K, V>;
    type Apply = Infallible;

    fn id(&self) -> NodeId {
        self.me
    }

    fn handle(&mut self, now: Time, input: InputOf<Self>) {
        match input {
            // Before the node serves (and for keys past its limit) a message is dropped;
            // its sender retransmits.
            Input::Message { from, message } => {
                let Keyed { key, message } = message;
                self.hand_register(now, &key, Input::Message { from, message });
            }
            Input::Request { id, request } => {
                let (key, request) = match request {
                    Request::Read(key) => (key, AbdRequest::Read),
                    Request::Write(key, value) => (key, AbdRequest::Write(value)),
                };
                if !self.hand_register(now, &key, Input::Request { id, request }) {
                    let response = Response::Refused;
                    self.effects.push_back(Effect::Reply { id, response });
                }
            }
            Input::Persisted(token) => self.on_persisted(now, token),
            Input::Wake => {
                self.wake_at = None;
                let due: Vec<K> = self
                    .wakes
                    .iter()
                    .filter(|&(_, &at)| at <= now)
                    .map(|(key, _)| key.clone())
                    .collect();
                for key in due {
                    self.wakes.remove(&key);
                    self.hand_register(now, &key, Input::Wake);
                }
            }
        }
        let earliest = self.wakes.values().min().copied();
        if let Some(at) = earliest
            && self.wake_at != Some(at)
        {
            self.wake_at = Some(at);
            self.effects.push_back(Effect::WakeAt(at));
        }
    }

    fn poll(&mut self) -> Option<EffectOf<Self>> {
        self.effects.pop_front()
    }
}
