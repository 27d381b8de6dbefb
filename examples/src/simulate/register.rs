//! The `register` system under `synod-sim`: the store's state machine
//! ([`crate::register::Registers`], one ABD register per key) as nodes of the simulator.
//!
//! The state machine is the one `synod node --system register` runs as a process; here
//! [`RegisterStore`] lays its records out on a simulated disk and `synod-sim`'s generic
//! adapter, [`ProtocolNode`], does the rest (messages, timers, syncs, restarts). The store
//! appends each write as a checksummed record; on start it reads the records up to the
//! first one that is torn or corrupt, cuts the file there (a crash damages only writes that
//! were never synced, and nothing was acknowledged on their strength), and takes each key's
//! newest record.
//!
//! Clients ([`KvClients`]) read and write random keys with unique values through random
//! nodes. A request the node refuses outright (still starting, or too many operations in
//! flight) fails; an operation the node gave up on ends unknown, since a write may have
//! reached some replicas. The history is checked with `synod-sim`'s linearizability checker, one key at
//! a time, and after every event an invariant checks that replicas holding the same tag
//! for a key hold the same value.

use std::collections::BTreeMap;
use std::io;

use synod_quorum::Tag;
use synod_sim::{
    Boot, Completion, Disk, KvModel, KvOutput, Linearizability, NodeId, ProtocolNode,
    ProtocolStore, SimConfig, Simulation,
};

use super::clients::{Answer, KvClients, KvService};
use super::{RunSummary, progress_after_healing};
use crate::register::{self, RegisterLimits};

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
const LIMITS: RegisterLimits = RegisterLimits::new(KEYS as usize, 16, 10, 80);

/// What a client asks a node of the simulated store.
pub type Request = register::Request<u64, u64>;
/// What a node of the simulated store answers.
pub type Response = register::Response<u64>;
/// One durable record of the simulated store.
pub type Record = register::Record<u64, u64>;
/// One node's state machine in the simulation.
pub type Registers = register::Registers<u64, u64>;
type Recovered = register::Recovered<u64, u64>;

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

/// A record's bytes on the simulated disk.
fn encode(record: &Record) -> [u8; RECORD_BYTES] {
    let words = [
        record.generation,
        record.key.unwrap_or(START_RECORD),
        record.tag.sequence,
        record.tag.writer.map_or(0, NodeId::get),
        record.tag.incarnation,
        record.tag.op,
        u64::from(record.value.is_some()),
        record.value.unwrap_or(0),
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
        key: Some(word(1)).filter(|&key| key != START_RECORD),
        tag: Tag {
            sequence: word(2),
            writer: NodeId::try_new(word(3)),
            incarnation: word(4),
            op: word(5),
        },
        value: (word(6) == 1).then(|| word(7)),
    })
}

/// Reads records up to the first torn or corrupt one; returns what they say and the
/// length of the good part.
fn recover(file: Option<&[u8]>) -> (Recovered, u64) {
    let mut state = Recovered::default();
    let mut good = 0;
    for chunk in file.unwrap_or_default().chunks(RECORD_BYTES) {
        let Some(record) = decode(chunk) else {
            break;
        };
        state.take(record);
        good += RECORD_BYTES as u64;
    }
    (state, good)
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
        let voters = (1..=boot.nodes as u64).map(NodeId::new);
        Ok(Registers::start(boot.id, voters, LIMITS, recovered))
    }

    fn write(&mut self, disk: &mut Disk, record: &Record) -> io::Result<()> {
        disk.append(STATE_FILE, &encode(record))
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
        Answer::new(match response {
            Response::Read(value) => Completion::Ok(KvOutput::Read(*value)),
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
                .flat_map(|(id, node)| {
                    node.stored()
                        .map(move |(&key, tag, value)| (id, (key, tag, value.copied())))
                }),
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
            key: Some(key),
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
        let bytes = encode(&r);
        assert_eq!(decode(&bytes), Some(r));
        assert_eq!(decode(&bytes[..RECORD_BYTES - 1]), None);
        for bit in 0..RECORD_BYTES * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(decode(&flipped), None, "bit {bit}");
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
            key: None,
            tag: Tag::default(),
            value: None,
        };
        let mut file = Vec::new();
        for r in [a, b, c, start] {
            file.extend_from_slice(&encode(&r));
        }
        let whole = file.len() as u64;
        let (state, good) = recover(Some(&file));
        assert_eq!((state.generation, good), (3, whole));
        assert_eq!(state.registers[&0], (c.tag, c.value));
        assert_eq!(state.registers[&1], (b.tag, b.value));
        file.extend_from_slice(&encode(&a)[..10]); // a torn append
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
