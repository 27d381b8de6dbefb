//! The `register` system under `synod-sim`: the store's state machine
//! ([`crate::register::Registers`], one ABD register per key) as nodes of the simulator.
//!
//! The state machine and the store's layout are the ones `synod node --system register`
//! runs as a process: [`RegisterStore`] is the store's log ([`RegisterLog`]: checksummed
//! records, a torn or damaged tail cut at start, each key's newest record taken) on the
//! node's simulated disk, through the disk's `synod_wal::Storage` ([`Disk::storage`]),
//! where a process has its files. `synod-sim`'s generic adapter, [`ProtocolNode`], does the
//! rest (messages, timers, syncs, restarts), as the runtime's host does in a process.
//!
//! Clients ([`KvClients`]) read and write random keys with unique values through random
//! nodes. A request the node refuses outright (still starting, or too many operations in
//! flight) fails; an operation the node gave up on ends unknown, since a write may have
//! reached some replicas. The history is checked with `synod-sim`'s linearizability checker, one key at
//! a time, and after every event an invariant checks that replicas holding the same tag
//! for a key hold the same value.

use std::collections::BTreeMap;
use std::io;

use synod_quorum::AbdMessage;
use synod_quorum::Tag;
use synod_sim::timeline::{Describe, Recorder, Role as TimelineRole};
use synod_sim::{
    Boot, Completion, Disk, DiskStorage, KvOutput, NodeId, ProtocolNode, ProtocolStore, SimConfig,
    Simulation,
};

use super::clients::{Answer, KvClients, KvService};
use super::{RunSummary, progress_after_healing};
use crate::register::store::RegisterLog;
use crate::register::{self, Keyed, RegisterLimits};

/// Keys of the store, `0..KEYS`, each an independent register. More than one keeps the
/// operations per register, and so the checker's search, small.
pub const KEYS: u64 = 3;
/// Clients of the simulated store.
pub const CLIENTS: usize = 6;

/// The shortest log compacted: a few dozen records, so that a run's crashes, torn writes and
/// failed syncs meet the store's compactions.
const COMPACT_BYTES_MIN: u64 = 4 << 10;
/// Operations in flight per register, milliseconds between retransmissions, milliseconds
/// before giving up (before the client's own 100 ms timeout, so the client hears "unknown").
const LIMITS: RegisterLimits = RegisterLimits::new(KEYS as usize, 16, 10, 80);

/// What a client asks a node of the simulated store.
pub type Request = register::Request<u64, u64>;
/// What a node of the simulated store answers.
pub type Response = register::Response<u64>;
/// One node's state machine in the simulation.
pub type Registers = register::Registers<u64, u64>;

/// How a node of the store keeps its records on the simulated disk: the process's log,
/// [`RegisterLog`], on the disk's `synod_wal::Storage`. Its appends are made durable by the
/// adapter's syncs, which cover every write issued before them.
#[derive(Debug, Default)]
pub struct RegisterStore {
    log: Option<RegisterLog<DiskStorage, u64, u64>>,
}

impl ProtocolStore for RegisterStore {
    type Protocol = Registers;

    fn recover(&mut self, boot: Boot<'_>) -> io::Result<Registers> {
        let (log, recovered) = RegisterLog::open_with(boot.disk.storage(), COMPACT_BYTES_MIN)?;
        self.log = Some(log);
        let voters = (1..=boot.nodes as u64).map(NodeId::new);
        Ok(Registers::start(boot.id, voters, LIMITS, recovered))
    }

    fn write(&mut self, _disk: &mut Disk, record: &register::Record<u64, u64>) -> io::Result<()> {
        self.log
            .as_mut()
            .ok_or_else(|| io::Error::other("the store was never opened"))?
            .append(record)
    }
}

/// What the timeline page draws of a node: every node is a replica (ABD has no leader),
/// and its messages by kind.
impl Describe for Registers {
    fn role(&self) -> Option<TimelineRole> {
        Some(TimelineRole::new("replica", 0))
    }

    fn message_kind(message: &Keyed<u64, u64>) -> &'static str {
        match message.message {
            AbdMessage::Query { .. } => "query",
            AbdMessage::QueryReply { .. } => "query-reply",
            AbdMessage::Update { .. } => "update",
            AbdMessage::UpdateAck { .. } => "update-ack",
        }
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
pub(super) fn run(seed: u64, config: SimConfig, record: bool) -> RunSummary {
    let simulation = Simulation::new(
        config,
        seed,
        |_| ProtocolNode::new(RegisterStore::default()),
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
    .progress(progress_after_healing);
    let simulation = if record {
        simulation.record(Recorder::protocol())
    } else {
        simulation
    };
    RunSummary::judged(simulation.run())
}

#[cfg(test)]
mod tests {
    use super::*;

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
