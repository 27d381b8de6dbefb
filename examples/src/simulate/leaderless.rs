//! The `leaderless` system under `synod-sim`: the store's node
//! ([`crate::leaderless::Leaderless`], version vectors) as nodes of the simulator, each
//! level checked against what it promises.
//!
//! The state machine and its log are the ones a process runs: [`LeaderlessStore`] is the
//! node's `synod_wal::Wal` on the simulated disk. Clients ([`LeaderlessClients`]) work on
//! four key spaces at once, from random nodes, and the run is checked against each
//! level's promise:
//!
//! - **the linearizable level** (ABD registers): reads and writes of its keys are checked
//!   for linearizability;
//! - **CAS** (per-key Paxos): reads and compare-and-sets of its keys, checked for
//!   linearizability;
//! - **QUORUM with version vectors**: clients read a key at QUORUM and write it with the
//!   read's context, a fixed number of writes in all, so that the writes end and the
//!   replicas can converge. After the heal, once every node serves and no such operation
//!   is pending, the run waits until every replica of every key holds the same state
//!   (anti-entropy must bring them together: that is the progress condition), and then
//!   checks that **no acknowledged write is lost**: each is in that final state, or was
//!   replaced by a write whose client had read it (and which itself survived so). A
//!   QUORUM read is also checked never to miss a write acknowledged before it began (or a
//!   write that replaced it): R + W > N;
//! - **ONE**: reads of the same keys at ONE. Their stale reads (missing a write
//!   acknowledged before the read began) are counted and printed, not failed: ONE
//!   promises nothing more, and the count is the negative control that shows the check
//!   finds stale reads where there are some.
//!
//! The same checks take a history recorded outside the simulator, by the clients of real
//! processes ([`LevelHistory`]): the process tests of `tests/it/leaderless_cluster.rs` and
//! `tests/it/leaderless_netns.rs` check theirs with them.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::rc::Rc;

use synod_clocks::VersionVector;
use synod_quorum::{Consistency, Resolver};
use synod_sim::{
    Action, ClientId, Completion, CrashMode, Disk, DiskStorage, History, HistoryChecker,
    HistoryError, Invocation, KvInput, KvModel, KvOutput, Linearizability, NodeId, OpId, Outcome,
    ProtocolNode, ProtocolStore, SimConfig, SimRng, SimTime, Simulation, Verdict, View, Workload,
};

use synod_sim::timeline::{Describe, Recorder, Role as TimelineRole, Timeline};

use super::RunSummary;
use crate::leaderless::store::{LeaderlessLog, LogOptions};
use crate::leaderless::{Config, Failure, Leaderless, Mode, Request, Response, Vv};
use crate::register::RegisterLimits;

/// Keys of each key space.
pub const KEYS: u64 = 3;
/// Clients of the simulated store.
pub const CLIENTS: usize = 6;
/// Writes at QUORUM in a run, in all.
pub const QUORUM_WRITES: u64 = 60;

/// The history's keys: each level's keys start at its base, up to 100 of them (so
/// [`KEYS`] here, and as many as a recorder of real processes' clients needs). The
/// linearizable level's (ABD registers) start here.
pub const ABD: u64 = 0;
/// The compare-and-set keys' base (Paxos per key).
pub const CAS: u64 = 100;
/// The QUORUM keys' base: reads and writes at QUORUM with version vectors.
pub const QUORUM: u64 = 200;
/// The base of reads at ONE: history key `ONE + k` is a read at ONE of QUORUM key
/// `QUORUM + k`.
pub const ONE: u64 = 300;
/// The history key of a [`Request::Leave`] (a run with [`Moves::leave_after`]): no level's
/// key, checked by none.
pub const LEAVE: u64 = 400;

/// The changes of membership of a run (none by default): a node joining at its first start,
/// a node leaving while the clients work, or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moves {
    /// The last `joins` nodes are not the others' configured members: each asks them to
    /// admit it on its first start, and joins the cluster (its share of the partitions
    /// streamed to it) while the clients work; more than
    /// [`MOVES_ENUMERATED_MAX`](crate::leaderless::machine::MOVES_ENUMERATED_MAX) at once
    /// wait for move slots.
    pub joins: usize,
    /// The clients' `n`th operation in all is a [`Request::Leave`] to the last of the
    /// cluster's first members, which hands its partitions off and leaves while the
    /// clients go on.
    pub leave_after: Option<usize>,
    /// The last of the cluster's first members is crashed for good at
    /// [`REMOVED_CRASH_MS`] (crashed again every [`REMOVED_RECRASH_MS`] should the
    /// nemesis restart it, until the liveness phase restarts it), and from the clients'
    /// `n`th operation in all every tenth is a [`Request::Remove`] of it to node 1, refused
    /// until every other member holds it dead; the removal runs while the clients go on.
    pub remove_after: Option<usize>,
    /// Whether the run ends only once every move has ended, besides the replicas agreeing
    /// after the heal: every joiner admitted and joined, the leaver (if its leave was taken)
    /// gone, no move under way or asking for a slot at any node, and no slot held. The
    /// liveness phase (every fault healed, every crashed node restarted) must then reach it
    /// within the configuration's `liveness_time_max`, or the run fails as making no
    /// progress, naming what each node still waits for ([`Checks::unfinished`]).
    pub finish: bool,
}

impl Moves {
    /// The node that leaves, if one does, in a cluster of `nodes`.
    #[must_use]
    pub fn leaver(&self, nodes: usize) -> Option<NodeId> {
        self.leave_after
            .map(|_| NodeId::new(self.first_members(nodes) as u64))
    }

    /// The cluster's first members in a cluster of `nodes`: nodes 1 to this.
    #[must_use]
    pub fn first_members(&self, nodes: usize) -> usize {
        nodes.saturating_sub(self.joins).max(1)
    }

    /// The node removed, if one is, in a cluster of `nodes`.
    #[must_use]
    pub fn removed(&self, nodes: usize) -> Option<NodeId> {
        self.remove_after
            .map(|_| NodeId::new(self.first_members(nodes) as u64))
    }
}

/// When the node a run removes ([`Moves::remove_after`]) is crashed, in milliseconds.
pub const REMOVED_CRASH_MS: u64 = 200;
/// How often it is crashed again, should the nemesis have restarted it.
pub const REMOVED_RECRASH_MS: u64 = 50;
/// Until when it is crashed again (past any run's safety phase).
const REMOVED_UNTIL_MS: u64 = 30_000;

/// How a simulated node's log is kept: compacted from 64 records (so runs meet
/// compactions), in segments of 64 KiB rather than a process's 8 MiB (each segment is
/// written out whole when created, and the simulated disk copies and hashes every byte at
/// each crash: 8 MiB segments made restarts most of a run's time), records up to 16 KiB
/// (the simulation's keys and values are 16 and 8 bytes).
const LOG: LogOptions = LogOptions {
    compact_records_min: 64,
    segment_bytes: 64 << 10,
    record_bytes_max: 16 << 10,
    fixed_time: true,
};

/// The state machine of a simulated node in conflict mode `M`.
pub type Node<M = Vv> = Leaderless<M>;

/// A simulated node's configuration: fast timers for a simulation of a few seconds. With
/// [`Moves::joins`], the last nodes join: the first members are configured without them, and
/// each joiner with the first members and itself.
fn config(id: NodeId, nodes: usize, seed: u64, moves: Moves) -> Config {
    let first = moves.first_members(nodes) as u64;
    let members = (1..=first).chain((id.get() > first).then_some(id.get()));
    let mut config = Config::new(id, members.map(NodeId::new));
    config.partitions = 8;
    config.timeout_ms = 80;
    // With a join or a leave, anti-entropy is slow, so that no replica is brought up to
    // date by it before the move's own stream: a read the move leaves stale stays so.
    config.anti_entropy_interval_ms = if moves == Moves::default() { 20 } else { 400 };
    config.probe_interval_ms = 100;
    config.probe_timeout_ms = 50;
    config.gossip_interval_ms = 20;
    config.push_pull_interval_ms = 500;
    config.abd = RegisterLimits::new(64, 16, 10, 80);
    config.cas_retry_ms = 10;
    // A joiner restarted before it was admitted asks under a new nonce: the grant to the
    // one before lapses within the run.
    config.admit_claim_ms = 300;
    config.seed = seed;
    config
}

/// How a node keeps its records on the simulated disk: the process's log,
/// [`LeaderlessLog`], on the disk's `synod_wal::Storage`, written out at each write and made
/// durable by the adapter's syncs.
#[derive(Debug)]
pub struct LeaderlessStore<M = Vv> {
    log: Option<LeaderlessLog<DiskStorage>>,
    moves: Moves,
    _mode: std::marker::PhantomData<fn() -> M>,
}

impl<M> Default for LeaderlessStore<M> {
    fn default() -> Self {
        LeaderlessStore::with_moves(Moves::default())
    }
}

impl<M> LeaderlessStore<M> {
    /// The store of a node of a run with `moves`.
    #[must_use]
    pub fn with_moves(moves: Moves) -> Self {
        LeaderlessStore {
            log: None,
            moves,
            _mode: std::marker::PhantomData,
        }
    }
}

impl<M: Mode> ProtocolStore for LeaderlessStore<M> {
    type Protocol = Node<M>;

    fn recover(&mut self, boot: synod_sim::Boot<'_>) -> io::Result<Node<M>> {
        let (log, recovered) = LeaderlessLog::open_with(boot.disk.storage(), LOG)?;
        self.log = Some(log);
        let seed = boot.rng.next_u64();
        Ok(Leaderless::start(
            config(boot.id, boot.nodes, seed, self.moves),
            recovered,
        ))
    }

    fn write(
        &mut self,
        _disk: &mut Disk,
        record: &crate::leaderless::Record<<M as Resolver>::State>,
    ) -> io::Result<()> {
        let log = self
            .log
            .as_mut()
            .ok_or_else(|| io::Error::other("the store was never opened"))?;
        log.append(record)?;
        log.flush()
    }
}

impl<M: Mode> Describe for Leaderless<M> {
    fn role(&self) -> Option<TimelineRole> {
        Some(TimelineRole::new("replica", 0))
    }

    fn message_kind(message: &crate::leaderless::Message<<M as Resolver>::State>) -> &'static str {
        use crate::leaderless::Message;
        match message {
            Message::Member(_) => "membership",
            Message::Store(_) => "store",
            Message::Abd(_) => "abd",
            Message::Cas(_) => "paxos",
            Message::Digest { .. } => "digest",
            Message::States { .. } => "states",
            Message::Forward { .. } | Message::Forwarded { .. } => "forward",
            Message::Admit { .. } | Message::Admission { .. } => "admission",
            Message::Move { .. }
            | Message::MoveNoted { .. }
            | Message::Moves { .. }
            | Message::AskMoves => "move",
            Message::StreamTo { .. } | Message::Streamed { .. } => "stream",
            Message::RemoveCheck { .. }
            | Message::RemoveChecked { .. }
            | Message::Pull { .. }
            | Message::Pulled { .. } => "removal",
            Message::HandOff { .. } | Message::HandedOff { .. } => "hand-off",
            Message::Permit { .. }
            | Message::Permitted { .. }
            | Message::Withdraw { .. }
            | Message::PermitHeld { .. } => "permit",
        }
    }
}

/// One simulated node.
pub type LeaderlessNode<M = Vv> = ProtocolNode<LeaderlessStore<M>>;

fn key_bytes(space: u64, key: u64) -> Vec<u8> {
    let mut bytes = space.to_be_bytes().to_vec();
    bytes.extend_from_slice(&key.to_be_bytes());
    bytes
}

fn value_of(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// What the clients saw beyond the history: the values of each read at QUORUM and ONE (the
/// history holds one), and the values each QUORUM write's context had read.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// A client's `n`th operation's values read.
    reads: BTreeMap<(ClientId, usize), Vec<u64>>,
    /// Each QUORUM write's value, and the values its context had read.
    saw: BTreeMap<u64, Vec<u64>>,
    /// Each QUORUM key's state on every replica once they agreed after the heal.
    final_values: Option<BTreeMap<u64, Vec<u64>>>,
    /// Once they agreed: whether the joiners were in the table and whether the leaver had left.
    moved: (bool, bool),
    /// Once they agreed: whether node 1 held the node removed out of its table.
    removed: bool,
    /// The most moves under way at any node after any event.
    under_way_peak: usize,
    /// In a run that waits for every move to end ([`Moves::finish`]): what each node still
    /// waited for when last looked at (at most every [`UNFINISHED_EVERY_MS`] of the liveness
    /// phase), and when that was; `None` once every move ended.
    unfinished: Option<(SimTime, String)>,
    /// How long after the heal every move had ended, in such a run.
    finished_after: Option<std::time::Duration>,
}

/// How often a run that waits for every move to end says what is still under way.
const UNFINISHED_EVERY_MS: u64 = 100;

/// The clients: linearizable reads and writes, CAS reads and compare-and-sets, QUORUM reads
/// and writes with contexts, ONE reads, each a seventh of the operations (QUORUM writes up
/// to [`QUORUM_WRITES`]).
#[derive(Debug)]
pub struct LeaderlessClients {
    last_value: u64,
    quorum_writes: u64,
    /// The run's changes of membership, and the clients' operations so far in all.
    moves: Moves,
    total: usize,
    /// Each client's operations so far.
    ops: BTreeMap<ClientId, usize>,
    /// Each client's last QUORUM read of a key: its context and values.
    last_read: BTreeMap<(ClientId, u64), (VersionVector, Vec<u64>)>,
    seen: Rc<RefCell<Seen>>,
}

impl LeaderlessClients {
    fn new(seen: Rc<RefCell<Seen>>, moves: Moves) -> Self {
        LeaderlessClients {
            last_value: 0,
            quorum_writes: 0,
            moves,
            total: 0,
            ops: BTreeMap::new(),
            last_read: BTreeMap::new(),
            seen,
        }
    }
}

impl<M: Mode> Workload<LeaderlessNode<M>> for LeaderlessClients {
    type Input = KvInput;
    type Output = KvOutput;

    fn invoke(
        &mut self,
        client: ClientId,
        nodes: usize,
        rng: &mut SimRng,
    ) -> Option<Invocation<Request, KvInput>> {
        let node = NodeId::new(rng.below(nodes as u64) + 1);
        let key = rng.below(KEYS);
        *self.ops.entry(client).or_default() += 1;
        self.total += 1;
        if let Some(leaver) = self.moves.leaver(nodes)
            && self.moves.leave_after == Some(self.total)
        {
            return Some(Invocation {
                node: leaver,
                request: Request::Leave,
                input: KvInput::Read { key: LEAVE },
            });
        }
        if let Some(removed) = self.moves.removed(nodes)
            && self
                .moves
                .remove_after
                .is_some_and(|n| self.total >= n && (self.total - n).is_multiple_of(10))
        {
            return Some(Invocation {
                node: NodeId::new(1),
                request: Request::Remove(removed),
                input: KvInput::Read { key: LEAVE },
            });
        }
        let mut kind = rng.below(7);
        if kind == 5 && self.quorum_writes >= QUORUM_WRITES {
            kind = 4;
        }
        let (request, input) = match kind {
            0 => (
                Request::LinearGet(key_bytes(ABD, key)),
                KvInput::Read { key: ABD + key },
            ),
            1 => {
                self.last_value += 1;
                let value = self.last_value;
                let request = Request::LinearSet(key_bytes(ABD, key), value.to_be_bytes().to_vec());
                (
                    request,
                    KvInput::Write {
                        key: ABD + key,
                        value,
                    },
                )
            }
            2 => (
                Request::CasGet(key_bytes(CAS, key)),
                KvInput::Read { key: CAS + key },
            ),
            3 => {
                self.last_value += 1;
                let new = self.last_value;
                let expect = (rng.below(2) == 0).then(|| new.saturating_sub(rng.below(4) + 1));
                let request = Request::Cas {
                    key: key_bytes(CAS, key),
                    expect: expect.map(|e| e.to_be_bytes().to_vec()),
                    new: new.to_be_bytes().to_vec(),
                };
                (
                    request,
                    KvInput::Cas {
                        key: CAS + key,
                        expect,
                        new,
                    },
                )
            }
            4 => (
                Request::Get {
                    key: key_bytes(QUORUM, key),
                    level: Consistency::Quorum,
                },
                KvInput::Read { key: QUORUM + key },
            ),
            5 => {
                self.last_value += 1;
                self.quorum_writes += 1;
                let value = self.last_value;
                let (context, saw) = self
                    .last_read
                    .get(&(client, key))
                    .cloned()
                    .unwrap_or_default();
                self.seen.borrow_mut().saw.insert(value, saw);
                let request = Request::Put {
                    key: key_bytes(QUORUM, key),
                    value: Some(value.to_be_bytes().to_vec()),
                    level: Consistency::Quorum,
                    context,
                };
                (
                    request,
                    KvInput::Write {
                        key: QUORUM + key,
                        value,
                    },
                )
            }
            _ => (
                Request::Get {
                    key: key_bytes(QUORUM, key),
                    level: Consistency::One,
                },
                KvInput::Read { key: ONE + key },
            ),
        };
        Some(Invocation {
            node,
            request,
            input,
        })
    }

    fn complete(
        &mut self,
        client: ClientId,
        input: &KvInput,
        response: &Response,
    ) -> Completion<KvOutput> {
        let n = self.ops.get(&client).copied().unwrap_or_default();
        match (input, response) {
            (_, Response::Failed(Failure::Unknown(_))) => Completion::Unknown,
            (KvInput::Read { key }, Response::Read(read)) => {
                let values: Vec<u64> = read.values.iter().filter_map(|v| value_of(v)).collect();
                if (QUORUM..ONE).contains(key) {
                    let entry = (read.context.clone(), values.clone());
                    self.last_read.insert((client, key - QUORUM), entry);
                }
                let first = values.first().copied();
                self.seen.borrow_mut().reads.insert((client, n), values);
                Completion::Ok(KvOutput::Read(first))
            }
            (_, Response::LinearRead(value)) => {
                Completion::Ok(KvOutput::Read(value.as_deref().and_then(value_of)))
            }
            (KvInput::Read { .. }, Response::Cas(reply)) => {
                Completion::Ok(KvOutput::Read(reply.value.as_deref().and_then(value_of)))
            }
            (_, Response::Cas(reply)) => Completion::Ok(KvOutput::Cas(reply.applied)),
            (_, Response::Written { .. } | Response::LinearWritten) => {
                Completion::Ok(KvOutput::Written)
            }
            (_, Response::Leaving | Response::Removing) => Completion::Ok(KvOutput::Read(None)),
            // Refused (certainly not carried out), or an answer of another kind.
            _ => Completion::Fail,
        }
    }
}

/// Each QUORUM key's values on every replica, if all replicas of every key hold the same
/// state and every node serves (but one that left the cluster or was refused by it).
fn agreed<M: Mode>(
    view: &View<'_, LeaderlessNode<M>, KvInput, KvOutput>,
) -> Option<BTreeMap<u64, Vec<u64>>> {
    let mut nodes = BTreeMap::new();
    for (id, node) in view.nodes() {
        if node.protocol().is_some_and(Leaderless::is_gone) {
            continue;
        }
        let protocol = node.protocol().filter(|p| p.serving())?;
        nodes.insert(id, protocol);
    }
    let (_, first) = nodes.iter().next()?;
    let mut values = BTreeMap::new();
    for key in 0..KEYS {
        let bytes = key_bytes(QUORUM, key);
        let mut state: Option<Option<&<M as Resolver>::State>> = None;
        for replica in first.replicas_of(&bytes) {
            let held = nodes.get(replica)?.store()?.local_state(&bytes);
            match state {
                None => state = Some(held),
                Some(s) if s != held => return None,
                Some(_) => {}
            }
        }
        let read = state.flatten().map(M::read);
        let vals = read
            .map(|r| r.values.iter().filter_map(|v| value_of(v)).collect())
            .unwrap_or_default();
        values.insert(key, vals);
    }
    Some(values)
}

/// The run's joiners that are neither in node 1's table nor refused by the cluster (a
/// joiner is refused if one above it was admitted first: members dial only lower ids).
fn joiners_outside<M: Mode>(
    moves: Moves,
    view: &View<'_, LeaderlessNode<M>, KvInput, KvOutput>,
) -> Vec<NodeId> {
    let nodes = view.nodes().count();
    let first = view.node(NodeId::new(1)).and_then(ProtocolNode::protocol);
    (moves.first_members(nodes) + 1..=nodes)
        .map(|j| NodeId::new(j as u64))
        .filter(|&j| {
            let gone = view
                .node(j)
                .and_then(ProtocolNode::protocol)
                .is_some_and(Leaderless::is_gone);
            !gone && first.is_none_or(|p| p.table().load(j) == 0)
        })
        .collect()
}

/// Whether every move of the run has ended ([`Moves::finish`]): every joiner in node 1's
/// table or refused, and at every node that takes part, its own move done, none under way
/// and no slot held ([`Leaderless::moves_ended`]).
fn moves_ended<M: Mode>(
    moves: Moves,
    view: &View<'_, LeaderlessNode<M>, KvInput, KvOutput>,
) -> bool {
    joiners_outside(moves, view).is_empty()
        && view.nodes().all(|(_, node)| {
            node.protocol()
                .is_some_and(|p| p.is_gone() || (!p.is_admitting() && p.moves_ended()))
        })
}

/// What each node still waits for in a run whose moves have not all ended.
fn unfinished<M: Mode>(
    moves: Moves,
    view: &View<'_, LeaderlessNode<M>, KvInput, KvOutput>,
) -> String {
    let mut out = Vec::new();
    let outside = joiners_outside(moves, view);
    if !outside.is_empty() {
        out.push(format!("not in node 1's table: {outside:?}"));
    }
    for (id, node) in view.nodes() {
        let Some(p) = node.protocol() else {
            out.push(format!("node {id}: down"));
            continue;
        };
        if p.is_gone() {
            if p.is_admitting() {
                out.push(format!("node {id}: refused"));
            }
            continue;
        }
        if !p.is_admitting() && p.moves_ended() {
            continue;
        }
        let info = p.info();
        let mut line = format!("node {id}:");
        if !info.admitted {
            line.push_str(" admitting");
        }
        if let Some(join) = info.join {
            line.push_str(&format!(" join {join}"));
        }
        if let Some(leave) = info.leave {
            line.push_str(&format!(" leave {leave}"));
        }
        for (removed, step) in &info.removals {
            line.push_str(&format!(" removal of {removed} {step}"));
        }
        line.push_str(&format!(" under way {}", info.moves_under_way));
        if let Some(why) = info.move_wait {
            line.push_str(&format!(" (waiting: {why})"));
        }
        out.push(line);
    }
    out.join("; ")
}

/// The progress condition: after the heal, no QUORUM-space operation pending, and every
/// replica in agreement (kept as the final state); with [`Moves::finish`], every move ended
/// too.
fn converged<M: Mode>(
    seen: &Rc<RefCell<Seen>>,
    moves: Moves,
    view: &View<'_, LeaderlessNode<M>, KvInput, KvOutput>,
) -> bool {
    if view.healed_at().is_none() {
        return false;
    }
    if moves.finish {
        let mut s = seen.borrow_mut();
        if s.finished_after.is_none() {
            if !moves_ended(moves, view) {
                let every = SimTime::from_micros(UNFINISHED_EVERY_MS * 1_000);
                let due = s.unfinished.as_ref().is_none_or(|(at, _)| {
                    view.now().as_micros() >= at.as_micros() + every.as_micros()
                });
                if due {
                    s.unfinished = Some((view.now(), unfinished(moves, view)));
                }
                return false;
            }
            let healed = view.healed_at().unwrap_or(view.now());
            s.finished_after = Some(view.now().saturating_duration_since(healed));
            s.unfinished = None;
        }
    }
    let pending = view.history().operations().iter().any(|op| {
        matches!(op.outcome, Outcome::Pending)
            && matches!(op.input, KvInput::Read { key } | KvInput::Write { key, .. } if key >= QUORUM)
    });
    if pending {
        return false;
    }
    match agreed(view) {
        Some(values) => {
            let nodes = view.nodes().count();
            let first = view.node(NodeId::new(1)).and_then(ProtocolNode::protocol);
            let joiners = moves.first_members(nodes) + 1..=nodes;
            let joined = moves.joins > 0
                && first.is_some_and(|p| {
                    joiners
                        .clone()
                        .all(|j| p.table().load(NodeId::new(j as u64)) > 0)
                });
            let left = moves.leaver(nodes).is_some_and(|leaver| {
                view.node(leaver)
                    .and_then(ProtocolNode::protocol)
                    .is_some_and(Leaderless::is_gone)
            });
            let removed = moves
                .removed(nodes)
                .is_some_and(|r| first.is_some_and(|p| p.info().removed.contains(&r)));
            let mut seen = seen.borrow_mut();
            seen.final_values = Some(values);
            seen.moved = (joined, left);
            seen.removed = removed;
            true
        }
        None => false,
    }
}

/// The checks of one run: see the [module documentation](self).
#[derive(Debug)]
pub struct Checks {
    seen: Rc<RefCell<Seen>>,
    /// Stale reads found at ONE and at QUORUM.
    pub stale: [usize; 2],
    /// Acknowledged QUORUM writes.
    pub acknowledged: usize,
}

impl Checks {
    /// Whether the run's joiners had joined the table and its leaver had left once the
    /// replicas agreed (both false if they never did).
    #[must_use]
    pub fn moved(&self) -> (bool, bool) {
        self.seen.borrow().moved
    }

    /// Whether the run's removal was done at node 1 once the replicas agreed.
    #[must_use]
    pub fn removed(&self) -> bool {
        self.seen.borrow().removed
    }

    /// In a run that waits for every move to end ([`Moves::finish`]): what each node still
    /// waited for when last looked at, if some move had not ended when the run ended.
    #[must_use]
    pub fn unfinished(&self) -> Option<String> {
        self.seen
            .borrow()
            .unfinished
            .as_ref()
            .map(|(at, why)| format!("at {at}: {why}"))
    }

    /// In a run that waits for every move to end: how long after the heal every move had
    /// ended, if it did.
    #[must_use]
    pub fn moves_ended_after_heal(&self) -> Option<std::time::Duration> {
        self.seen.borrow().finished_after
    }

    /// The most moves under way at any node after any event of the run (at most
    /// [`MOVES_ENUMERATED_MAX`](crate::leaderless::machine::MOVES_ENUMERATED_MAX) but at a
    /// node that learned of a move it granted no slot
    /// to, or in the broken variant).
    #[must_use]
    pub fn under_way_peak(&self) -> usize {
        self.seen.borrow().under_way_peak
    }
}

fn key_of(input: &KvInput) -> u64 {
    match *input {
        KvInput::Read { key } | KvInput::Write { key, .. } | KvInput::Cas { key, .. } => key,
    }
}

/// The linearizable levels' operations only.
fn linearizable_part(history: &History<KvInput, KvOutput>) -> History<KvInput, KvOutput> {
    let mut part = History::new();
    for op in history.operations() {
        if key_of(&op.input) >= QUORUM {
            continue;
        }
        let id = part.invoke(op.client, op.input, op.invoked_at);
        let _ = match (&op.outcome, op.completed_at) {
            (Outcome::Ok(output), Some(at)) => part.ok(id, *output, at),
            (Outcome::Fail, Some(at)) => part.fail(id, at),
            _ => part.unknown(id),
        };
    }
    part.close();
    part
}

/// Each operation of `history` with its number among its client's (from 1), the key of
/// [`Seen::reads`].
fn numbered(
    history: &History<KvInput, KvOutput>,
) -> impl Iterator<Item = (usize, &synod_sim::Operation<KvInput, KvOutput>)> {
    let mut nth: BTreeMap<ClientId, usize> = BTreeMap::new();
    history.operations().iter().map(move |op| {
        let n = nth.entry(op.client).or_default();
        *n += 1;
        (*n, op)
    })
}

/// The values of every completed read at QUORUM or ONE: the siblings recorded
/// ([`LevelHistory::read`]), else the one value of its output ([`LevelHistory::ok`]).
fn quorum_reads(
    history: &History<KvInput, KvOutput>,
    seen: &Seen,
) -> BTreeMap<(ClientId, usize), Vec<u64>> {
    let mut reads = BTreeMap::new();
    for (n, op) in numbered(history) {
        let (KvInput::Read { key }, Outcome::Ok(output)) = (op.input, &op.outcome) else {
            continue;
        };
        if key < QUORUM {
            continue;
        }
        let values = match (seen.reads.get(&(op.client, n)), output) {
            (Some(values), _) => values.clone(),
            (None, KvOutput::Read(value)) => value.iter().copied().collect(),
            (None, _) => continue,
        };
        reads.insert((op.client, n), values);
    }
    reads
}

/// A linearizable level's read (ABD or CGET) recorded with more than one value: a register
/// holds one, so siblings are a violation whatever the first of them is.
fn linearizable_siblings(history: &History<KvInput, KvOutput>, seen: &Seen) -> Option<String> {
    numbered(history).find_map(|(n, op)| {
        let KvInput::Read { key } = op.input else {
            return None;
        };
        let values = seen.reads.get(&(op.client, n))?;
        (key < QUORUM && values.len() > 1).then(|| {
            format!(
                "a read of linearizable key {key} by {:?} answered {} values {values:?}: a \
                 register holds one",
                op.client,
                values.len()
            )
        })
    })
}

/// The QUORUM level's checks of `history`, with what the clients saw: no acknowledged write
/// lost (if the final state is known), no QUORUM read stale. Counts into `stale` and
/// `acknowledged`.
fn check_quorum(
    history: &History<KvInput, KvOutput>,
    seen: &Seen,
    stale: &mut [usize; 2],
    acknowledged: &mut usize,
) -> Result<(), String> {
    // The values `values` hold, and every value they replaced: each write's context had
    // read the values it replaced, transitively. A write is kept in `values` if it is
    // among these (itself, or replaced by a write that is, replacement by replacement).
    // One walk per set of values, never one per pair of write and read: histories of
    // thousands of writes, each replacing the one before, stay linear per read.
    let replaced = |values: &[u64]| -> BTreeSet<u64> {
        let mut out: BTreeSet<u64> = values.iter().copied().collect();
        let mut todo: Vec<u64> = values.to_vec();
        while let Some(x) = todo.pop() {
            for &old in seen.saw.get(&x).into_iter().flatten() {
                if out.insert(old) {
                    todo.push(old);
                }
            }
        }
        out
    };
    // Every QUORUM and ONE read's values: its siblings as recorded, or, for a read recorded
    // with its output only (`LevelHistory::ok`), the one value the output names; a read
    // recorded either way is checked.
    let reads = quorum_reads(history, seen);
    let mut acked: Vec<(u64, u64, SimTime)> = Vec::new();
    // Writes the store refused (certainly not carried out): their values must never be read
    // nor kept, and so never count as replacing anything. (A replica's refusal of a
    // forwarded write reaches the client as an unknown outcome: the forward may have been
    // duplicated and its second copy carried out, which seed 371 of the `broken` variant
    // showed as a refused write read back.)
    let mut refused: BTreeSet<u64> = BTreeSet::new();
    for op in history.operations() {
        match (op.input, &op.outcome, op.completed_at) {
            (KvInput::Write { key, value }, Outcome::Ok(_), Some(at))
                if (QUORUM..ONE).contains(&key) =>
            {
                acked.push((key - QUORUM, value, at));
            }
            (KvInput::Write { key, value }, Outcome::Fail, _) if key >= QUORUM => {
                refused.insert(value);
            }
            _ => {}
        }
    }
    *acknowledged = acked.len();
    let took_effect = seen
        .final_values
        .iter()
        .flat_map(|f| f.values())
        .chain(seen.reads.values())
        .chain(reads.values())
        .flatten()
        .find(|v| refused.contains(v));
    if let Some(value) = took_effect {
        return Err(format!(
            "the write of {value} was refused (nothing done, its client was told), yet its \
             value was read or kept"
        ));
    }
    // Every acknowledged write is in the final state, or was replaced by one that is
    // (replacement by replacement).
    if let Some(final_values) = &seen.final_values {
        let kept: BTreeMap<u64, BTreeSet<u64>> = final_values
            .iter()
            .map(|(&key, values)| (key, replaced(values)))
            .collect();
        for &(key, value, _) in &acked {
            if !kept.get(&key).is_some_and(|kept| kept.contains(&value)) {
                return Err(format!(
                    "the acknowledged QUORUM write of {value} to key {key} is lost: the \
                     replicas agree on {:?}, and no write that read it survived",
                    final_values.get(&key)
                ));
            }
        }
    }
    // Stale reads: a read that misses a write acknowledged before it began, and every
    // write that replaced it.
    for (n, op) in numbered(history) {
        let KvInput::Read { key } = op.input else {
            continue;
        };
        let (level, key) = match key {
            k if (QUORUM..ONE).contains(&k) => (1, k - QUORUM),
            k if (ONE..LEAVE).contains(&k) => (0, k - ONE),
            _ => continue,
        };
        let Some(values) = reads.get(&(op.client, n)) else {
            continue;
        };
        let kept = replaced(values);
        let is_stale = acked
            .iter()
            .any(|&(k, value, at)| k == key && at < op.invoked_at && !kept.contains(&value));
        if is_stale {
            stale[level] += 1;
        }
    }
    if stale[1] > 0 {
        return Err(format!(
            "{} QUORUM reads missed a write acknowledged before they began",
            stale[1]
        ));
    }
    Ok(())
}

/// Every level's check of `history` with what the clients saw (see the [module
/// documentation](self)), counting into `stale` and `acknowledged`.
fn check_levels(
    history: &History<KvInput, KvOutput>,
    seen: &Seen,
    stale: &mut [usize; 2],
    acknowledged: &mut usize,
) -> Verdict {
    if let Some(why) = linearizable_siblings(history, seen) {
        return Verdict::Violation(format!("the linearizable levels (ABD, CAS): {why}"));
    }
    let part = linearizable_part(history);
    match Linearizability::new(KvModel).check_history(&part) {
        Verdict::Pass => {}
        Verdict::Violation(why) => {
            return Verdict::Violation(format!("the linearizable levels (ABD, CAS): {why}"));
        }
        gave_up => return gave_up,
    }
    match check_quorum(history, seen, stale, acknowledged) {
        Ok(()) => Verdict::Pass,
        Err(why) => Verdict::Violation(why),
    }
}

impl HistoryChecker<KvInput, KvOutput> for Checks {
    fn name(&self) -> &str {
        "leaderless levels"
    }

    fn check_history(&mut self, history: &History<KvInput, KvOutput>) -> Verdict {
        let seen = self.seen.borrow();
        check_levels(history, &seen, &mut self.stale, &mut self.acknowledged)
    }
}

/// A history of the store's levels recorded outside the simulator, by clients of real
/// processes, and checked by the simulation's checks ([`LevelHistory::check`]). Times are
/// the recorder's own (say, microseconds since the test began on one monotonic clock): an
/// operation is invoked before its request is sent, and completed after its answer came.
///
/// Keys are numbered per level from its base ([`ABD`], [`CAS`], [`QUORUM`], [`ONE`]),
/// values are unique numbers. An ABD read or write at LINEARIZABLE, a CGET or CAS, is
/// recorded as a read, write or compare-and-set of its key; a QUORUM read with all its
/// siblings ([`LevelHistory::read`]), a QUORUM write with the values its context had read
/// ([`LevelHistory::wrote`]); and once the clients are done, each QUORUM key's merged
/// state ([`LevelHistory::final_values`]).
#[derive(Debug, Default, Clone)]
pub struct LevelHistory {
    history: History<KvInput, KvOutput>,
    seen: Seen,
    /// Each client's operations so far, and each operation's number among its client's.
    ops: BTreeMap<ClientId, usize>,
    nth: Vec<usize>,
}

/// What [`LevelHistory::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelVerdict {
    /// The verdict: the first level that broke its promise, or a pass.
    pub verdict: Verdict,
    /// Stale reads found at ONE (allowed) and at QUORUM.
    pub stale: [usize; 2],
    /// Acknowledged QUORUM writes.
    pub acknowledged: usize,
}

impl LevelHistory {
    /// An empty history.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `client` invoked `input` at `at`.
    pub fn invoke(&mut self, client: ClientId, input: KvInput, at: SimTime) -> OpId {
        let n = self.ops.entry(client).or_default();
        *n += 1;
        self.nth.push(*n);
        self.history.invoke(client, input, at)
    }

    /// Records that `op` completed at `at` with `output`.
    ///
    /// # Errors
    ///
    /// The history's: `op` is not pending, or `at` is before its invocation.
    pub fn ok(&mut self, op: OpId, output: KvOutput, at: SimTime) -> Result<(), HistoryError> {
        self.history.ok(op, output, at)
    }

    /// Records that read `op` completed at `at` with `values`, every sibling: at QUORUM or
    /// ONE, each is checked; at a linearizable level (ABD, CGET), more than one value is a
    /// violation (a register holds one). A QUORUM or ONE read recorded with
    /// [`LevelHistory::ok`] instead is checked with the one value its output names.
    ///
    /// # Errors
    ///
    /// As [`LevelHistory::ok`].
    pub fn read(&mut self, op: OpId, values: Vec<u64>, at: SimTime) -> Result<(), HistoryError> {
        let first = values.first().copied();
        self.history.ok(op, KvOutput::Read(first), at)?;
        let client = self.history.operations()[op.index()].client;
        let n = self.nth[op.index()];
        self.seen.reads.insert((client, n), values);
        Ok(())
    }

    /// Records that the QUORUM write of `value` was sent with a context that had read
    /// `saw` (whatever its outcome).
    pub fn wrote(&mut self, value: u64, saw: Vec<u64>) {
        self.seen.saw.insert(value, saw);
    }

    /// Records that `op` certainly did not take effect.
    ///
    /// # Errors
    ///
    /// As [`LevelHistory::ok`].
    pub fn fail(&mut self, op: OpId, at: SimTime) -> Result<(), HistoryError> {
        self.history.fail(op, at)
    }

    /// Records that `op`'s outcome is unknown.
    ///
    /// # Errors
    ///
    /// The history's: `op` is not pending.
    pub fn unknown(&mut self, op: OpId) -> Result<(), HistoryError> {
        self.history.unknown(op)
    }

    /// Records each QUORUM key's (numbered from 0) merged state once the clients are done:
    /// the values every replica holds.
    pub fn final_values(&mut self, values: BTreeMap<u64, Vec<u64>>) {
        self.seen.final_values = Some(values);
    }

    /// The history so far.
    #[must_use]
    pub fn history(&self) -> &History<KvInput, KvOutput> {
        &self.history
    }

    /// Checks the history as a simulation's run is checked (pending operations count as
    /// unknown): ABD and CAS keys linearizable, no acknowledged QUORUM write lost (if
    /// [`LevelHistory::final_values`] was given), no stale read at QUORUM; stale reads at
    /// ONE counted.
    #[must_use]
    pub fn check(&self) -> LevelVerdict {
        let mut history = self.history.clone();
        history.close();
        let (mut stale, mut acknowledged) = ([0, 0], 0);
        let verdict = check_levels(&history, &self.seen, &mut stale, &mut acknowledged);
        LevelVerdict {
            verdict,
            stale,
            acknowledged,
        }
    }
}

/// Runs the store once with `seed`.
pub(super) fn run(seed: u64, config: SimConfig, record: bool) -> RunSummary {
    let (summary, _) = run_checked::<Vv>(seed, config, record);
    summary
}

/// Runs the store in conflict mode `M` once with `seed`, as [`run_checked`] does, and no
/// changes of membership.
pub fn run_checked<M: Mode + 'static>(
    seed: u64,
    config: SimConfig,
    record: bool,
) -> (RunSummary, Checks) {
    run_moving::<M>(seed, config, Moves::default(), record)
}

/// Runs the store in conflict mode `M` once with `seed` and the changes of membership
/// `moves`, and returns the checks' counts with the summary.
/// With `record`, the run is also drawn ([`RunSummary::timeline`]).
pub fn run_moving<M: Mode + 'static>(
    seed: u64,
    config: SimConfig,
    moves: Moves,
    record: bool,
) -> (RunSummary, Checks) {
    let nodes = config.nodes();
    let seen = Rc::new(RefCell::new(Seen::default()));
    let progress_seen = Rc::clone(&seen);
    let peak_seen = Rc::clone(&seen);
    let simulation = Simulation::new(
        config,
        seed,
        move |_| ProtocolNode::new(LeaderlessStore::<M>::with_moves(moves)),
        LeaderlessClients::new(Rc::clone(&seen), moves),
    )
    .progress(move |view| converged::<M>(&progress_seen, moves, view))
    .invariant(move |view| {
        let under_way = view
            .nodes()
            .filter_map(|(_, node)| node.protocol().map(Leaderless::moves_under_way))
            .max()
            .unwrap_or(0);
        let mut seen = peak_seen.borrow_mut();
        seen.under_way_peak = seen.under_way_peak.max(under_way);
        Ok(())
    });
    // The node removed is crashed for good (again whenever the nemesis restarted it) until
    // the liveness phase.
    let simulation = match moves.removed(nodes) {
        Some(removed) => (0..)
            .map(|i| REMOVED_CRASH_MS + i * REMOVED_RECRASH_MS)
            .take_while(|&ms| ms < REMOVED_UNTIL_MS)
            .fold(simulation, |simulation, ms| {
                let at = SimTime::from_micros(ms * 1_000);
                simulation.schedule(at, Action::Crash(removed, CrashMode::DropUnsynced))
            }),
        None => simulation,
    };
    let simulation = if record {
        simulation.record(Recorder::protocol())
    } else {
        simulation
    };
    let mut report = simulation.run();
    let mut checks = Checks {
        seen,
        stale: [0, 0],
        acknowledged: 0,
    };
    let verdict = report.verdict(&mut checks);
    let timeline = report
        .recording
        .is_some()
        .then(|| Timeline::of_run(&report, &verdict, None));
    let history = std::mem::take(&mut report.history);
    let mut summary = RunSummary::of_report(report, verdict, history);
    summary.timeline = timeline;
    summary.figures = vec![format!(
        "QUORUM writes acknowledged: {}; stale reads at ONE: {} (allowed), at QUORUM: {}",
        checks.acknowledged, checks.stale[0], checks.stale[1]
    )];
    summary.passed = "ABD and CAS linearizable, no acknowledged QUORUM write lost, no stale QUORUM read, replicas converged after healing";
    (summary, checks)
}

#[cfg(test)]
mod review9 {
    use super::*;

    fn at(micros: u64) -> SimTime {
        SimTime::from_micros(micros)
    }

    /// review9: a QUORUM write the store refused (`TRYAGAIN`: certainly not carried out,
    /// recorded with [`LevelHistory::fail`]) whose value the replicas end up holding, in
    /// place of an acknowledged write its context had read. The acknowledged write of 1
    /// is gone and the only write that "replaced" it never happened, so the history breaks
    /// two promises (a refused write took effect; an acknowledged one was lost), yet the
    /// check counts a refused write's context as a replacement like any other's, and passes.
    #[test]
    fn a_refused_quorum_write_cannot_replace_an_acknowledged_one() {
        let mut h = LevelHistory::new();
        let w1 = h.invoke(
            ClientId::new(0),
            KvInput::Write {
                key: QUORUM,
                value: 1,
            },
            at(0),
        );
        h.ok(w1, KvOutput::Written, at(10)).expect("recorded");
        h.wrote(1, Vec::new());
        let w2 = h.invoke(
            ClientId::new(1),
            KvInput::Write {
                key: QUORUM,
                value: 2,
            },
            at(20),
        );
        h.wrote(2, vec![1]);
        h.fail(w2, at(30)).expect("recorded");
        // A read after both sees only the refused write's value.
        let r = h.invoke(ClientId::new(2), KvInput::Read { key: QUORUM }, at(40));
        h.read(r, vec![2], at(50)).expect("recorded");
        h.final_values(BTreeMap::from([(0, vec![2])]));
        let found = h.check();
        assert!(
            matches!(found.verdict, Verdict::Violation(_)),
            "a refused write's value read and kept in place of an acknowledged write: {found:?}"
        );
    }
}
