//! The `register` system: `synod-quorum`'s ABD register as nodes of `synod-sim`.
//!
//! Attiya, Bar-Noy and Dolev's register is linearizable without a leader: every read and
//! write asks a majority for its newest tagged value, and then stores the newest on a
//! majority (a read writes back what it read). [`synod_quorum::AbdNode`] is that protocol
//! for one register, as a state machine on the node contract. [`Registers`] is [`KEYS`] of
//! them (a tiny key-value store, one register per key) as one state machine on the same
//! contract, and [`RegisterStore`] says how its writes are laid out on a simulated disk;
//! `synod-sim`'s generic adapter, [`ProtocolNode`], does the rest (messages, timers, syncs,
//! restarts). It is small enough to read in one sitting:
//!
//! - **Durability before acknowledgement** is the register's own: a replica asks for each
//!   newer value to be persisted and answers nothing that depends on it until the adapter
//!   says the write is synced. The store appends each write as a checksummed record.
//! - **Recovery.** On start the store reads the records up to the first one that is torn or
//!   corrupt, cuts the file there (a crash damages only writes that were never synced, and
//!   nothing was acknowledged on their strength), and takes each key's newest record.
//! - **A generation per start** (the book's *Generation Clock*). Tags must be unique per
//!   write, and a node that restarts could otherwise reuse its numbering. So each start
//!   persists `generation + 1` and serves nothing until that record is synced; a crash
//!   before then means the number was never used, and the next start may pick it again.
//!
//! Clients ([`KvClients`]) read and write random keys with unique values through random
//! nodes. A request the node refuses outright (still starting, or too many operations in
//! flight) fails; an operation the node gave up on ends unknown, since a write may have
//! reached some replicas. The history is checked with `synod-sim`'s linearizability checker, one key at
//! a time, and after every event an invariant checks that replicas holding the same tag
//! for a key hold the same value.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::io;

use synod_node::{Effect, EffectOf, Input, InputOf, PersistToken, Protocol, Time};
use synod_quorum::{
    AbdConfig, AbdError, AbdMessage, AbdNode, AbdRequest, AbdResponse, AbdWrite, Incarnation, Tag,
};
use synod_sim::{
    Boot, Completion, Disk, KvModel, KvOutput, Linearizability, NodeId, ProtocolNode,
    ProtocolStore, SimConfig, Simulation,
};

use super::clients::{Answer, KvClients, KvService};
use super::{RunSummary, progress_after_healing};

/// Keys of the store, `0..KEYS`, each an independent register. More than one keeps the
/// operations per register, and so the checker's search, small.
pub const KEYS: u64 = 3;
/// Clients of the simulated store.
pub const CLIENTS: usize = 6;

/// The file holding a node's records.
const STATE_FILE: &str = "register.state";
/// The key of a start record, which carries only the generation.
const START_RECORD: u64 = u64::MAX;
/// Operations in flight per register, milliseconds between retransmissions, milliseconds
/// before giving up (before the client's own 100 ms timeout, so the client hears "unknown").
const OPS_IN_FLIGHT_MAX: usize = 16;
const RETRY_INTERVAL_MS: u64 = 10;
const TIMEOUT_MS: u64 = 80;

/// What a client asks a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Request {
    /// Read a key.
    Read(u64),
    /// Write a value to a key.
    Write(u64, u64),
}

/// What a node answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Response {
    /// The value read (`None`: never written).
    Read(Option<u64>),
    /// The write is stored on a majority.
    Written,
    /// Refused before anything was done: the operation did not and will not take effect.
    Refused,
    /// The node gave up waiting for a majority: a write may or may not have taken effect.
    GaveUp,
}

/// What nodes send each other: a register's message, with the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Keyed {
    /// The key.
    pub key: u64,
    /// The message of that key's register.
    pub message: AbdMessage<u64>,
}

/// One durable record, what [`Registers`] persists: a key's tagged value, or (key
/// `u64::MAX`) a start; both carry the node's generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Record {
    generation: u64,
    key: u64,
    tag: Tag,
    value: Option<u64>,
}

/// Eight little-endian words (generation, key, the tag's four fields, a has-value flag,
/// the value) and a checksum word over them.
const RECORD_BYTES: usize = 10 * 8;
const CHECKED_BYTES: usize = RECORD_BYTES - 8;

/// FNV-1a: enough to tell a torn or bit-flipped record from a whole one.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Record {
    fn encode(&self) -> [u8; RECORD_BYTES] {
        let words = [
            self.generation,
            self.key,
            self.tag.sequence,
            self.tag.writer.map_or(0, NodeId::get),
            self.tag.incarnation,
            self.tag.op,
            u64::from(self.value.is_some()),
            self.value.unwrap_or(0),
        ];
        let mut out = [0u8; RECORD_BYTES];
        for (chunk, word) in out.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        let sum = checksum(&out[..CHECKED_BYTES]);
        out[CHECKED_BYTES..].copy_from_slice(&sum.to_le_bytes());
        out
    }

    /// The record in `bytes`, or `None` if it is torn or corrupt.
    fn decode(bytes: &[u8]) -> Option<Record> {
        if bytes.len() != RECORD_BYTES {
            return None;
        }
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        if word(9) != checksum(&bytes[..CHECKED_BYTES]) || word(6) > 1 {
            return None;
        }
        Some(Record {
            generation: word(0),
            key: word(1),
            tag: Tag {
                sequence: word(2),
                writer: NodeId::try_new(word(3)),
                incarnation: word(4),
                op: word(5),
            },
            value: (word(6) == 1).then(|| word(7)),
        })
    }
}

/// What a node's records say: its last generation and each key's newest tagged value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Recovered {
    generation: u64,
    registers: BTreeMap<u64, (Tag, Option<u64>)>,
}

/// Reads records up to the first torn or corrupt one; returns what they say and the
/// length of the good part.
fn recover(file: Option<&[u8]>) -> (Recovered, u64) {
    let mut state = Recovered::default();
    let mut good = 0;
    for chunk in file.unwrap_or_default().chunks(RECORD_BYTES) {
        let Some(record) = Record::decode(chunk) else {
            break;
        };
        state.generation = state.generation.max(record.generation);
        if record.key != START_RECORD {
            // A replica persists only newer tags, so the last record of a key is its newest.
            state
                .registers
                .insert(record.key, (record.tag, record.value));
        }
        good += RECORD_BYTES as u64;
    }
    (state, good)
}

/// One node of the store: a replica and coordinator of every key's register, on the node
/// contract.
///
/// It starts by persisting its generation and serves nothing until that is durable; then
/// each key's [`AbdNode`] runs with the generation as its incarnation. The registers'
/// persists become the store's, with tokens of its own; their wake-ups become one, the
/// earliest.
#[derive(Debug)]
pub struct Registers {
    me: NodeId,
    nodes: usize,
    generation: u64,
    /// The start record's token while it is not durable, and what the disk held.
    starting: Option<(PersistToken, Recovered)>,
    /// One register per key, once running.
    registers: BTreeMap<u64, AbdNode<u64>>,
    /// The last token handed out; each persist not yet acknowledged, with the key and the
    /// register's own token it carries.
    last_token: PersistToken,
    persisting: VecDeque<(PersistToken, u64, PersistToken)>,
    /// Each register's wake-up, and the one asked of the driver.
    wakes: BTreeMap<u64, Time>,
    wake_at: Option<Time>,
    effects: VecDeque<EffectOf<Registers>>,
}

impl Registers {
    /// Node `id` of a store on nodes `1..=nodes`, starting from what its disk held: its
    /// first effect persists the next generation.
    fn start(id: NodeId, nodes: usize, recovered: Recovered) -> Self {
        let generation = recovered.generation + 1;
        let mut node = Registers {
            me: id,
            nodes,
            generation,
            starting: None,
            registers: BTreeMap::new(),
            last_token: PersistToken::default(),
            persisting: VecDeque::new(),
            wakes: BTreeMap::new(),
            wake_at: None,
            effects: VecDeque::new(),
        };
        let token = node.persist(Record {
            generation,
            key: START_RECORD,
            ..Record::default()
        });
        node.starting = Some((token, recovered));
        node
    }

    /// The registers' configuration for this start, whose generation is its incarnation.
    fn config(&self) -> AbdConfig {
        let voters = (1..=self.nodes as u64).map(NodeId::new);
        AbdConfig::majority(self.me, Incarnation::new(self.generation), voters)
            .and_then(|c| c.limits(OPS_IN_FLIGHT_MAX, RETRY_INTERVAL_MS, TIMEOUT_MS))
            .expect("the node is one of the voters, and the limits are above zero")
    }

    /// Each key's replica tag and value (nothing until the node is serving).
    pub fn stored(&self) -> impl Iterator<Item = (u64, Tag, Option<u64>)> + '_ {
        self.registers.iter().map(|(&key, abd)| {
            let (tag, value) = abd.replica_state();
            (key, tag, value.copied())
        })
    }

    fn persist(&mut self, write: Record) -> PersistToken {
        self.last_token = self.last_token.next();
        self.effects.push_back(Effect::Persist {
            token: self.last_token,
            write,
        });
        self.last_token
    }

    /// Hands `input` to `key`'s register and carries its effects over as this node's.
    fn hand_register(&mut self, now: Time, key: u64, input: InputOf<AbdNode<u64>>) {
        let Some(abd) = self.registers.get_mut(&key) else {
            return;
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
                    message: Keyed { key, message },
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
                        key,
                        tag,
                        value,
                    });
                    self.persisting.push_back((ours, key, token));
                }
                Effect::WakeAt(at) => {
                    self.wakes.insert(key, at);
                }
                Effect::Apply(never) => match never {},
            }
        }
    }

    /// Every persist up to `token` is durable: the start, and each register's writes.
    fn on_persisted(&mut self, now: Time, token: PersistToken) {
        if let Some((start, _)) = &self.starting
            && *start <= token
        {
            let (_, recovered) = self.starting.take().expect("starting");
            let config = self.config();
            for key in 0..KEYS {
                let (tag, value) = recovered.registers.get(&key).copied().unwrap_or_default();
                let abd = AbdNode::recover(config.clone(), tag, value);
                self.registers.insert(key, abd);
            }
        }
        let mut durable: BTreeMap<u64, PersistToken> = BTreeMap::new();
        while let Some(&(ours, key, theirs)) = self.persisting.front()
            && ours <= token
        {
            durable.insert(key, theirs);
            self.persisting.pop_front();
        }
        for (key, theirs) in durable {
            self.hand_register(now, key, Input::Persisted(theirs));
        }
    }
}

impl Protocol for Registers {
    type Message = Keyed;
    type Request = Request;
    type Response = Response;
    type Write = Record;
    type Apply = Infallible;

    fn id(&self) -> NodeId {
        self.me
    }

    fn handle(&mut self, now: Time, input: InputOf<Self>) {
        match input {
            // Before the node runs (and for keys it does not have) a message is dropped;
            // its sender retransmits.
            Input::Message { from, message } => {
                let Keyed { key, message } = message;
                self.hand_register(now, key, Input::Message { from, message });
            }
            Input::Request { id, request } => {
                let (key, request) = match request {
                    Request::Read(key) => (key, AbdRequest::Read),
                    Request::Write(key, value) => (key, AbdRequest::Write(value)),
                };
                if self.registers.contains_key(&key) {
                    self.hand_register(now, key, Input::Request { id, request });
                } else {
                    let response = Response::Refused;
                    self.effects.push_back(Effect::Reply { id, response });
                }
            }
            Input::Persisted(token) => self.on_persisted(now, token),
            Input::Wake => {
                self.wake_at = None;
                let due: Vec<u64> = self
                    .wakes
                    .iter()
                    .filter(|&(_, &at)| at <= now)
                    .map(|(&key, _)| key)
                    .collect();
                for key in due {
                    self.wakes.remove(&key);
                    self.hand_register(now, key, Input::Wake);
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

/// How a node of the store keeps its records on the simulated disk.
#[derive(Debug, Default)]
pub struct RegisterStore;

impl ProtocolStore for RegisterStore {
    type Protocol = Registers;

    fn recover(&mut self, boot: Boot<'_>) -> io::Result<Registers> {
        let file = boot.disk.read(STATE_FILE);
        let (recovered, good) = recover(file.as_deref());
        if file.is_some_and(|f| f.len() as u64 != good) {
            boot.disk.set_len(STATE_FILE, good)?;
        }
        Ok(Registers::start(boot.id, boot.nodes, recovered))
    }

    fn write(&mut self, disk: &mut Disk, record: &Record) -> io::Result<()> {
        disk.append(STATE_FILE, &record.encode())
    }
}

/// One simulated node of the store.
pub type RegisterNode = ProtocolNode<RegisterStore>;

impl KvService for RegisterNode {
    fn read(key: u64) -> Request {
        Request::Read(key)
    }

    fn write(key: u64, value: u64) -> Request {
        Request::Write(key, value)
    }

    fn answer(response: &Response) -> Answer {
        Answer::new(match *response {
            Response::Read(value) => Completion::Ok(KvOutput::Read(value)),
            Response::Written => Completion::Ok(KvOutput::Written),
            Response::Refused => Completion::Fail,
            Response::GaveUp => Completion::Unknown,
        })
    }
}

/// Replicas that hold the same tag for a key hold the same value (each write's tag is
/// unique).
fn same_tag_same_value(
    stored: impl Iterator<Item = (NodeId, (u64, Tag, Option<u64>))>,
) -> Result<(), String> {
    let mut seen: BTreeMap<(u64, Tag), (NodeId, Option<u64>)> = BTreeMap::new();
    for (id, (key, tag, value)) in stored {
        match seen.get(&(key, tag)) {
            Some(&(other, theirs)) if theirs != value => {
                return Err(format!(
                    "key {key}: {id} holds {value:?} and {other} holds {theirs:?} under the same tag {tag:?}"
                ));
            }
            _ => {
                seen.insert((key, tag), (id, value));
            }
        }
    }
    Ok(())
}

/// Runs the store once with `seed`.
pub(super) fn run(seed: u64, config: SimConfig) -> RunSummary {
    let report = Simulation::new(
        config,
        seed,
        |_| ProtocolNode::new(RegisterStore),
        KvClients::new(KEYS),
    )
    .invariant(move |view| {
        same_tag_same_value(
            view.nodes()
                .filter_map(|(id, node)| Some((id, node.protocol()?)))
                .flat_map(|(id, node)| node.stored().map(move |s| (id, s))),
        )
    })
    .progress(progress_after_healing)
    .run();
    let verdict = report.verdict(&mut Linearizability::new(KvModel));
    RunSummary::new(report, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(generation: u64, key: u64, value: Option<u64>) -> Record {
        Record {
            generation,
            key,
            tag: Tag {
                sequence: generation + 10,
                writer: Some(NodeId::new(2)),
                incarnation: generation,
                op: 5,
            },
            value,
        }
    }

    #[test]
    fn records_round_trip_and_damage_is_detected() {
        let r = record(3, 1, Some(77));
        let bytes = r.encode();
        assert_eq!(Record::decode(&bytes), Some(r));
        assert_eq!(Record::decode(&bytes[..RECORD_BYTES - 1]), None);
        for bit in 0..RECORD_BYTES * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(Record::decode(&flipped), None, "bit {bit}");
        }
    }

    #[test]
    fn recovery_takes_each_keys_last_record_and_stops_at_the_first_bad_one() {
        let (a, b, c) = (
            record(1, 0, Some(4)),
            record(1, 1, None),
            record(2, 0, Some(9)),
        );
        let start = Record {
            generation: 3,
            key: START_RECORD,
            ..Record::default()
        };
        let mut file = Vec::new();
        for r in [a, b, c, start] {
            file.extend_from_slice(&r.encode());
        }
        let whole = file.len() as u64;
        let (state, good) = recover(Some(&file));
        assert_eq!((state.generation, good), (3, whole));
        assert_eq!(state.registers[&0], (c.tag, c.value));
        assert_eq!(state.registers[&1], (b.tag, b.value));
        file.extend_from_slice(&a.encode()[..10]); // a torn append
        assert_eq!(recover(Some(&file)), (state, whole));
        file[2 * RECORD_BYTES + 3] ^= 0x10; // damage to the third record
        let (state, good) = recover(Some(&file));
        assert_eq!((state.generation, good), (1, 2 * RECORD_BYTES as u64));
        assert_eq!(state.registers[&0], (a.tag, a.value));
        assert_eq!(recover(None), (Recovered::default(), 0));
    }

    #[test]
    fn the_invariant_rejects_two_values_under_one_tag_of_a_key() {
        let tag = Tag::default();
        let n = NodeId::new;
        let ok = [
            (n(1), (0, tag, Some(1))),
            (n(2), (0, tag, Some(1))),
            (n(3), (1, tag, None)),
        ];
        assert!(same_tag_same_value(ok.into_iter()).is_ok());
        let bad = [(n(1), (0, tag, Some(1))), (n(2), (0, tag, Some(2)))];
        assert!(same_tag_same_value(bad.into_iter()).is_err());
    }
}
