//! The `register` system: `synod-quorum`'s ABD register as nodes of `synod-sim`.
//!
//! Attiya, Bar-Noy and Dolev's register is linearizable without a leader: every read and
//! write asks a majority for its newest tagged value, and then stores the newest on a
//! majority (a read writes back what it read). [`synod_quorum::AbdNode`] is that protocol
//! for one register, as a state machine without I/O. [`RegisterNode`] is the driver that
//! runs [`KEYS`] of them (a tiny key-value store, one register per key) in the simulator,
//! and is small enough to read in one sitting. It does what a real driver must, minus
//! sockets:
//!
//! - **Durability before acknowledgement.** An [`AbdEffect::Persist`] is appended to the
//!   node's disk as a checksummed record, followed by a sync; every effect that comes after
//!   it waits until the sync completes. A replica must never acknowledge a value it could
//!   forget in a crash.
//! - **Recovery.** On start the node reads its records up to the first one that is torn or
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
use std::time::Duration;

use synod_quorum::{AbdConfig, AbdEffect, AbdMessage, AbdNode, AbdOpId, Incarnation, Tag};
use synod_sim::{
    Completion, Context, KvModel, KvOutput, Linearizability, Node, NodeId, RequestId, SimConfig,
    Simulation, SyncToken, TimerId,
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
/// The node's one timer: it drives retransmissions and timeouts.
const TICK: TimerId = TimerId(0);
const TICK_EVERY: Duration = Duration::from_millis(5);
/// Operations in flight per register, ticks between retransmissions, ticks before giving
/// up (80 ms: before the client's own 100 ms timeout, so the client hears "unknown").
const OPS_IN_FLIGHT_MAX: usize = 16;
const RETRY_TICKS: u64 = 2;
const TIMEOUT_TICKS: u64 = 16;

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

/// One durable record: a key's tagged value, or (key [`START_RECORD`]) a start; both
/// carry the node's generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Record {
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

/// Where a node is in its life.
#[derive(Debug)]
enum Phase {
    /// Built; [`Node::on_start`] not called yet.
    New,
    /// Waiting for this start's generation record to be durable.
    Starting {
        recovered: Recovered,
        sync: SyncToken,
    },
    /// Serving.
    Running,
    /// A disk operation failed: the node stops rather than risk acknowledging what it
    /// could not store (fail-stop). The simulator injects no I/O errors today, so this is
    /// not reached there.
    Halted,
}

/// One simulated node: a replica and coordinator of every key's register, with their
/// state on the simulated disk.
#[derive(Debug)]
pub struct RegisterNode {
    me: NodeId,
    nodes: usize,
    phase: Phase,
    generation: u64,
    /// One register per key, once running.
    registers: BTreeMap<u64, AbdNode<u64>>,
    /// Which client request each running operation answers.
    clients: BTreeMap<(u64, AbdOpId), RequestId>,
    /// Effects waiting for a sync, in order, each with its key and the sync it waits for.
    held: VecDeque<(SyncToken, u64, AbdEffect<u64>)>,
    syncs_requested: u64,
    syncs_done: u64,
}

impl RegisterNode {
    /// Node `id` of a store replicated on nodes `1..=nodes` with majority quorums.
    ///
    /// # Panics
    ///
    /// If `id` is above `nodes`.
    #[must_use]
    pub fn new(id: NodeId, nodes: usize) -> Self {
        assert!(id.get() <= nodes as u64, "node {id} of {nodes}");
        RegisterNode {
            me: id,
            nodes,
            phase: Phase::New,
            generation: 0,
            registers: BTreeMap::new(),
            clients: BTreeMap::new(),
            held: VecDeque::new(),
            syncs_requested: 0,
            syncs_done: 0,
        }
    }

    /// The registers' configuration for this start, whose generation is its incarnation.
    fn config(&self) -> AbdConfig {
        let voters = (1..=self.nodes as u64).map(NodeId::new);
        AbdConfig::majority(self.me, Incarnation::new(self.generation), voters)
            .and_then(|c| c.limits(OPS_IN_FLIGHT_MAX, RETRY_TICKS, TIMEOUT_TICKS))
            .expect("the node is one of the voters, and the limits are above zero")
    }

    /// Each key's replica tag and value (nothing until the node is serving).
    pub fn stored(&self) -> impl Iterator<Item = (u64, Tag, Option<u64>)> + '_ {
        self.registers.iter().map(|(&key, abd)| {
            let (tag, value) = abd.replica_state();
            (key, tag, value.copied())
        })
    }

    /// Appends `record` and asks for a sync; returns the sync's token, or `None` (and
    /// halts) if the disk failed.
    fn persist(&mut self, ctx: &mut Context<'_, Self>, record: Record) -> Option<SyncToken> {
        if ctx.disk().append(STATE_FILE, &record.encode()).is_err() {
            self.phase = Phase::Halted;
            self.registers.clear();
            return None;
        }
        self.syncs_requested += 1;
        let token = SyncToken(self.syncs_requested);
        ctx.sync(token);
        Some(token)
    }

    /// Carries out the effects of `key`'s register in order, holding back everything that
    /// follows a persist until its sync completes.
    fn drain(&mut self, ctx: &mut Context<'_, Self>, key: u64) {
        while let Some(effect) = self.registers.get_mut(&key).and_then(AbdNode::poll_effect) {
            if let AbdEffect::Persist { tag, value } = effect {
                let generation = self.generation;
                let record = Record {
                    generation,
                    key,
                    tag,
                    value,
                };
                self.persist(ctx, record);
            } else if self.syncs_requested > self.syncs_done {
                let sync = SyncToken(self.syncs_requested);
                self.held.push_back((sync, key, effect));
            } else {
                self.apply(ctx, key, effect);
            }
        }
    }

    fn apply(&mut self, ctx: &mut Context<'_, Self>, key: u64, effect: AbdEffect<u64>) {
        let (op, response) = match effect {
            AbdEffect::Send { to, message } => {
                ctx.send(to, Keyed { key, message });
                return;
            }
            AbdEffect::Persist { .. } => unreachable!("persists are carried out by drain"),
            AbdEffect::ReadDone { op, value } => (op, Response::Read(value)),
            AbdEffect::WriteDone { op } => (op, Response::Written),
            AbdEffect::Failed { op, .. } => (op, Response::GaveUp),
        };
        if let Some(request) = self.clients.remove(&(key, op)) {
            ctx.reply(request, response);
        }
    }
}

impl Node for RegisterNode {
    type Message = Keyed;
    type Request = Request;
    type Response = Response;

    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        let file = ctx.disk().read(STATE_FILE);
        let (recovered, good) = recover(file.as_deref());
        if file.is_some_and(|f| f.len() as u64 != good)
            && ctx.disk().set_len(STATE_FILE, good).is_err()
        {
            self.phase = Phase::Halted;
            return;
        }
        let start = Record {
            generation: recovered.generation + 1,
            key: START_RECORD,
            ..Record::default()
        };
        if let Some(sync) = self.persist(ctx, start) {
            self.generation = start.generation;
            self.phase = Phase::Starting { recovered, sync };
        }
        ctx.set_timer(TICK_EVERY, TICK);
    }

    fn on_synced(&mut self, ctx: &mut Context<'_, Self>, token: SyncToken) {
        // A sync covers every write issued before it, so later tokens cover earlier ones.
        self.syncs_done = self.syncs_done.max(token.0);
        if let Phase::Starting { recovered, sync } = &mut self.phase
            && *sync <= token
        {
            let recovered = std::mem::take(recovered);
            let config = self.config();
            for key in 0..KEYS {
                let (tag, value) = recovered.registers.get(&key).copied().unwrap_or_default();
                let abd = AbdNode::recover(config.clone(), tag, value);
                self.registers.insert(key, abd);
            }
            self.phase = Phase::Running;
        }
        while let Some((sync, _, _)) = self.held.front()
            && *sync <= token
        {
            let (_, key, effect) = self.held.pop_front().expect("front exists");
            self.apply(ctx, key, effect);
        }
    }

    fn on_message(&mut self, ctx: &mut Context<'_, Self>, from: NodeId, keyed: Keyed) {
        // Before the node runs (and for keys it does not have) a message is dropped; its
        // sender retransmits.
        if let Some(abd) = self.registers.get_mut(&keyed.key) {
            abd.handle(from, keyed.message);
            self.drain(ctx, keyed.key);
        }
    }

    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, _: TimerId) {
        for key in 0..KEYS {
            if let Some(abd) = self.registers.get_mut(&key) {
                abd.tick();
                self.drain(ctx, key);
            }
        }
        if !matches!(self.phase, Phase::Halted) {
            ctx.set_timer(TICK_EVERY, TICK);
        }
    }

    fn on_request(&mut self, ctx: &mut Context<'_, Self>, id: RequestId, request: Request) {
        let key = match request {
            Request::Read(key) | Request::Write(key, _) => key,
        };
        let Some(abd) = self.registers.get_mut(&key) else {
            ctx.reply(id, Response::Refused);
            return;
        };
        let started = match request {
            Request::Read(_) => abd.read(),
            Request::Write(_, value) => abd.write(value),
        };
        match started {
            Ok(op) => {
                self.clients.insert((key, op), id);
                self.drain(ctx, key);
            }
            Err(_) => ctx.reply(id, Response::Refused),
        }
    }
}

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
    let nodes = config.nodes();
    let report = Simulation::new(
        config,
        seed,
        move |id| RegisterNode::new(id, nodes),
        KvClients::new(KEYS),
    )
    .invariant(move |view| {
        same_tag_same_value(
            view.nodes()
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
