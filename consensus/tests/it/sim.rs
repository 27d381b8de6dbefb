//! A Raft-replicated key-value store under synod-sim: every fault kind of the nemesis
//! (partitions, clogs, loss, duplication, reordering, crashes with torn and lost disk
//! writes, pauses, clock jumps and drift), Raft's safety properties checked after every
//! event, linearizability of the client history checked at the end, and progress required
//! after healing.
//!
//! The node is Raft with a key-value state machine on top ([`KvRaft`], written on the node
//! contract), driven by synod-sim's one generic adapter, [`ProtocolNode`]: nothing here
//! delivers a message, runs a timer or orders a sync. Its store ([`JournalStore`]) keeps
//! the log in memory and journals every `RaftWrite` to the simulated disk as checksummed
//! records; the adapter syncs after the writes of each drain and acknowledges them to Raft
//! once the sync is done. On a restart the journal is replayed up to its torn tail; damage
//! to records a later record proves synced would stop the run (the simulated disk never
//! corrupts synced data).
//!
//! `SYNOD_SEEDS` and `SYNOD_SEED` (synod-sim's seed runner) set the seed count or replay
//! one seed.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use synod_consensus::invariants::SafetyChecker;
use synod_consensus::journal::{JournalWriter, replay};
use synod_consensus::{
    Apply, Broken, Config, Entry, LogIndex, Membership, Message, Node, NodeId, Payload, RaftWrite,
    ReadId, StoreWrite,
};
use synod_node::{Effect, EffectOf, Input, InputOf, Protocol, Time};
use synod_sim::seeds::SeedRunner;
use synod_sim::{
    Boot, ClientId, Completion, Coverage, Disk, FaultKind, Invocation, KvInput, KvModel, KvOutput,
    Linearizability, NemesisConfig, ProtocolNode, ProtocolStore, SimConfig, SimRng, Simulation,
    Verdict, Workload,
};

/// The file of a node's disk that holds its journal.
pub(crate) const JOURNAL: &str = "raft.journal";
/// Raft's tick: elections after 10 to 20 ticks of silence, heartbeats every 2.
const TICK: Duration = Duration::from_millis(5);
const KEYS: u64 = 3;

#[derive(Clone, Debug, Hash, Serialize, Deserialize)]
enum Command {
    Write {
        key: u64,
        value: u64,
    },
    Cas {
        key: u64,
        expect: Option<u64>,
        new: u64,
    },
}

#[derive(Clone, Debug, Hash)]
enum Request {
    Read { key: u64 },
    Command(Command),
}

#[derive(Clone, Debug, Hash)]
enum Response {
    Read(Option<u64>),
    Written,
    Cas(bool),
    Refused,
}

/// A key-value store node: Raft plus the state machine, on the node contract. Requests go
/// to Raft as proposals and read indexes; Raft's effects pass through, except what it
/// applies, which the key-value map takes and answers its clients from.
struct KvRaft {
    raft: Node,
    kv: BTreeMap<u64, u64>,
    applied: LogIndex,
    /// Proposals waiting to apply: index to (request, the exact entry payload).
    proposals: BTreeMap<LogIndex, (synod_node::RequestId, Bytes)>,
    reads: BTreeMap<ReadId, (synod_node::RequestId, u64)>,
    /// Reads confirmed at an index, waiting for the state machine.
    waiting_reads: Vec<(LogIndex, synod_node::RequestId, u64)>,
    next_read: u64,
    /// Drawn at each start, so that the invariant tells a restart from a node that stayed
    /// up; also where this incarnation's read ids start; and where its proposals' unique
    /// prefixes come from.
    incarnation: u64,
    next_op: u64,
    /// Replies decided here, handed out before Raft's next effects.
    replies: VecDeque<EffectOf<KvRaft>>,
}

impl KvRaft {
    fn apply(&mut self, entry: &Entry) {
        self.applied = entry.index;
        let Payload::Command(data) = &entry.payload else {
            return;
        };
        let Ok((_, command)) = postcard::from_bytes::<((u64, u64), Command)>(data) else {
            return;
        };
        let response = match command {
            Command::Write { key, value } => {
                self.kv.insert(key, value);
                Response::Written
            }
            Command::Cas { key, expect, new } => {
                let ok = self.kv.get(&key).copied() == expect;
                if ok {
                    self.kv.insert(key, new);
                }
                Response::Cas(ok)
            }
        };
        if let Some((id, payload)) = self.proposals.remove(&entry.index)
            && payload == *data
        {
            self.replies.push_back(Effect::Reply { id, response });
        }
    }

    /// Answers the confirmed reads whose index the state machine has reached.
    fn serve_reads(&mut self) {
        let applied = self.applied;
        let (ready, rest): (Vec<_>, Vec<_>) = self
            .waiting_reads
            .drain(..)
            .partition(|(index, _, _)| *index <= applied);
        self.waiting_reads = rest;
        for (_, id, key) in ready {
            let response = Response::Read(self.kv.get(&key).copied());
            self.replies.push_back(Effect::Reply { id, response });
        }
    }

    fn refuse(&mut self, id: synod_node::RequestId) {
        self.replies.push_back(Effect::Reply {
            id,
            response: Response::Refused,
        });
    }
}

impl Protocol for KvRaft {
    type Message = Message;
    type Request = Request;
    type Response = Response;
    type Write = RaftWrite;
    type Apply = ();

    fn id(&self) -> NodeId {
        self.raft.id()
    }

    fn handle(&mut self, now: Time, input: InputOf<Self>) {
        match input {
            Input::Message { from, message } => {
                self.raft.handle(now, Input::Message { from, message });
            }
            Input::Persisted(token) => self.raft.handle(now, Input::Persisted(token)),
            Input::Wake => self.raft.handle(now, Input::Wake),
            Input::Request { id, request } => {
                // Raft's clock first, then the call.
                self.raft.handle(now, Input::Wake);
                match request {
                    Request::Read { key } => {
                        self.next_read += 1;
                        let read = ReadId(self.next_read);
                        if self.raft.read_index(read).is_ok() {
                            self.reads.insert(read, (id, key));
                        } else {
                            self.refuse(id);
                        }
                    }
                    Request::Command(command) => {
                        self.next_op += 1;
                        let op = (self.incarnation, self.next_op);
                        let payload =
                            Bytes::from(postcard::to_stdvec(&(op, command)).expect("encodes"));
                        match self.raft.propose(payload.clone()) {
                            Ok(index) => {
                                self.proposals.insert(index, (id, payload));
                            }
                            Err(_) => self.refuse(id),
                        }
                    }
                }
            }
        }
    }

    fn poll(&mut self) -> Option<EffectOf<Self>> {
        loop {
            if let Some(reply) = self.replies.pop_front() {
                return Some(reply);
            }
            match self.raft.poll()? {
                Effect::Send { to, message } => return Some(Effect::Send { to, message }),
                Effect::Persist { token, write } => return Some(Effect::Persist { token, write }),
                Effect::WakeAt(at) => return Some(Effect::WakeAt(at)),
                Effect::Apply(Apply::Entry(entry)) => {
                    self.apply(&entry);
                    self.serve_reads();
                }
                Effect::Apply(Apply::Read(read)) => {
                    if let Some((id, key)) = self.reads.remove(&read.id) {
                        match read.index {
                            Some(index) => self.waiting_reads.push((index, id, key)),
                            None => self.refuse(id),
                        }
                        self.serve_reads();
                    }
                }
                Effect::Apply(Apply::Snapshot(_)) => {
                    unreachable!("nothing in this test compacts, so no snapshot is handed out")
                }
                // Requests reach Raft through its calls, never as `Input::Request`.
                Effect::Reply { .. } => {}
            }
        }
    }
}

/// A node's store: Raft's log in memory (rebuilt from the journal at each start) and the
/// journal of its writes on the simulated disk.
struct JournalStore {
    setup: Setup,
    journal: JournalWriter,
}

impl JournalStore {
    fn new(setup: Setup) -> JournalStore {
        JournalStore {
            setup,
            journal: JournalWriter::new(0),
        }
    }
}

impl ProtocolStore for JournalStore {
    type Protocol = KvRaft;

    fn recover(&mut self, boot: Boot<'_>) -> io::Result<KvRaft> {
        let id = boot.id;
        let incarnation = boot.rng.next_u64();
        let membership =
            Membership::new((1..=boot.nodes as u64).map(NodeId::new), []).expect("valid");
        let journal = boot.disk.read(JOURNAL).unwrap_or_default();
        let (mem, valid) =
            replay(&journal, &membership).unwrap_or_else(|e| panic!("node {id}: {e}"));
        if valid < journal.len() {
            boot.disk.set_len(JOURNAL, valid as u64)?;
        }
        self.journal = JournalWriter::new(valid as u64);
        let tick_us = u64::try_from(TICK.as_micros()).expect("small");
        let config = Config::builder(id)
            .seed(boot.rng.next_u64())
            .tick_interval_us(tick_us)
            .election_timeout_ticks(10..20)
            .heartbeat_interval_ticks(2)
            .in_flight_max(8)
            .append_bytes_max(4096)
            .pre_vote(!self.setup.crash_storm)
            .check_quorum(!self.setup.crash_storm)
            .broken(self.setup.bugs)
            .build()
            .map_err(io::Error::other)?;
        Ok(KvRaft {
            raft: Node::new(config, mem),
            kv: BTreeMap::new(),
            applied: LogIndex::ZERO,
            proposals: BTreeMap::new(),
            reads: BTreeMap::new(),
            waiting_reads: Vec::new(),
            // Read ids must not repeat across restarts (`Node::read_index`): a late answer
            // to the previous incarnation's read would be taken for a new one's, and serve
            // it at an old index.
            next_read: incarnation >> 1,
            incarnation,
            next_op: 0,
            replies: VecDeque::new(),
        })
    }

    fn write(&mut self, disk: &mut Disk, write: &RaftWrite) -> io::Result<()> {
        journal_append(&mut self.journal, disk, write.ops())
    }
}

/// Appends the store writes `ops` to the journal on `disk`, as records of `journal`.
pub(crate) fn journal_append(
    journal: &mut JournalWriter,
    disk: &mut Disk,
    ops: &[StoreWrite],
) -> io::Result<()> {
    // With nothing unsynced on the disk, the whole journal so far is durable: the records
    // written from now on say so.
    if disk.unsynced_ops() == 0 {
        let end = journal.end();
        journal.synced(end);
    }
    let mut bytes = Vec::new();
    journal.encode(ops, &mut bytes);
    disk.append(JOURNAL, &bytes)
}

#[derive(Default)]
struct KvWorkload {
    next_value: u64,
}

impl Workload<ProtocolNode<JournalStore>> for KvWorkload {
    type Input = KvInput;
    type Output = KvOutput;

    fn invoke(
        &mut self,
        _: ClientId,
        nodes: usize,
        rng: &mut SimRng,
    ) -> Option<Invocation<Request, KvInput>> {
        let node = NodeId::new(rng.below(nodes as u64) + 1);
        let key = rng.below(KEYS);
        self.next_value += 1;
        let value = self.next_value;
        Some(match rng.below(3) {
            0 => Invocation {
                node,
                request: Request::Read { key },
                input: KvInput::Read { key },
            },
            1 => Invocation {
                node,
                request: Request::Command(Command::Write { key, value }),
                input: KvInput::Write { key, value },
            },
            _ => {
                let expect = (rng.below(2) == 0).then(|| value.saturating_sub(rng.below(4) + 1));
                Invocation {
                    node,
                    request: Request::Command(Command::Cas {
                        key,
                        expect,
                        new: value,
                    }),
                    input: KvInput::Cas {
                        key,
                        expect,
                        new: value,
                    },
                }
            }
        })
    }

    fn complete(&mut self, _: ClientId, _: &KvInput, response: &Response) -> Completion<KvOutput> {
        match response {
            Response::Read(v) => Completion::Ok(KvOutput::Read(*v)),
            Response::Written => Completion::Ok(KvOutput::Written),
            Response::Cas(ok) => Completion::Ok(KvOutput::Cas(*ok)),
            Response::Refused => Completion::Fail,
        }
    }
}

/// How a simulation is set up: the normal run, or a storm of quick crashes for catching a
/// reintroduced bug.
#[derive(Clone, Copy, Debug, Default)]
struct Setup {
    bugs: Broken,
    /// Crashes every few milliseconds with restarts faster than an election timeout, plus
    /// duplicated and reordered messages, and neither pre-vote nor check-quorum (both keep a
    /// restarted node from voting again in the term it forgot).
    crash_storm: bool,
}

fn config(nodes: usize, setup: Setup) -> SimConfig {
    let builder = SimConfig::builder(nodes);
    let builder = if setup.crash_storm {
        builder.nemesis(
            NemesisConfig::builder()
                .swarm(false)
                .kinds(&[FaultKind::Crash, FaultKind::Duplicate, FaultKind::Reorder])
                .interval_mean(Duration::from_millis(5))
                .down_time_max(Duration::from_millis(10))
                .build(),
        )
    } else {
        builder
    };
    builder
        .clients(5)
        .safety_time(Duration::from_millis(1500))
        .liveness_time_max(Duration::from_secs(3))
        .client_timeout(Duration::from_millis(400))
        .data_centre()
        .trace_lines_max(if std::env::var_os("SYNOD_DEBUG").is_some() {
            60
        } else {
            0
        })
        .build()
        .expect("valid config")
}

/// Per node: the incarnation last seen.
type Seen = BTreeMap<u64, u64>;

type KvNode = ProtocolNode<JournalStore>;

fn simulation(nodes: usize, seed: u64) -> Simulation<KvNode, KvWorkload> {
    simulation_with(nodes, seed, Setup::default())
}

fn simulation_with(nodes: usize, seed: u64, setup: Setup) -> Simulation<KvNode, KvWorkload> {
    let mut checker = SafetyChecker::new();
    let mut seen: Seen = BTreeMap::new();
    Simulation::new(
        config(nodes, setup),
        seed,
        move |_| ProtocolNode::new(JournalStore::new(setup)),
        KvWorkload::default(),
    )
    .invariant(move |view| {
        for (id, node) in view.nodes() {
            if let Some(kv) = node.protocol()
                && seen.insert(id.get(), kv.incarnation) != Some(kv.incarnation)
            {
                checker.crashed(kv.raft.id());
            }
        }
        // The checker walks the nodes more than once, so it takes an iterator it can clone.
        let result = checker.check(
            (1..=nodes as u64)
                .filter_map(|i| view.node(NodeId::new(i)))
                .filter_map(|node| node.protocol().map(|kv| &kv.raft)),
        );
        if result.is_err() && std::env::var_os("SYNOD_DEBUG").is_some() {
            for (id, node) in view.nodes() {
                if let Some(r) = node.protocol().map(|kv| &kv.raft) {
                    let mut log = Vec::new();
                    let st = r.log();
                    st.entries(st.first_index(), st.last_index(), u64::MAX, &mut log);
                    let log: Vec<(u64, u64)> =
                        log.iter().map(|e| (e.index.0, e.term.get())).collect();
                    eprintln!(
                        "{id}: {:?} {} vote {:?} commit {} durable {} hs {:?} log {log:?}",
                        r.role(),
                        r.term(),
                        r.vote(),
                        r.commit_index(),
                        r.durable_index(),
                        st.hard_state(),
                    );
                } else {
                    eprintln!("{id}: down");
                }
            }
        }
        result.map_err(|v| v.to_string())
    })
    .progress(|view| {
        view.healed_at()
            .is_some_and(|t| view.history().ok_invoked_since(t) > 0)
    })
}

#[test]
fn raft_kv_is_safe_and_linearizable_under_every_fault() {
    let runner = SeedRunner::new(
        "synod-consensus",
        "sim::raft_kv_is_safe_and_linearizable_under_every_fault",
    );
    let mut coverage = Coverage::default();
    let (mut events, mut ops, mut ok, mut gave_up) = (0u64, 0usize, 0usize, 0u64);
    let seeds = runner.run(100, |seed| {
        let nodes = if seed % 4 == 3 { 5 } else { 3 };
        let report = simulation(nodes, seed).run();
        coverage.merge(&report.coverage);
        events += report.events;
        ops += report.history.len();
        ok += report.history.ok_count();
        // A checker that gave up decided nothing: that fails the seed like a violation, so
        // a history too tangled to check can never pass as linearizable.
        match report.verdict(&mut Linearizability::new(KvModel)) {
            Verdict::Pass => Ok(()),
            Verdict::Violation(why) => Err(why),
            Verdict::GaveUp(why) => {
                gave_up += 1;
                Err(format!("checker gave up: {why}"))
            }
        }
    });
    println!(
        "raft kv under synod-sim: {seeds} seeds, {events} events, {ops} operations ({ok} ok), \
         0 safety violations, 0 linearizability violations, checker gave up on {gave_up}"
    );
    println!("coverage: {coverage}");
    if !runner.replaying() {
        assert!(ok > seeds as usize * 5, "the workload made progress");
    }
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let a = simulation(3, 11).run();
    let b = simulation(3, 11).run();
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.events, b.events);
}

/// One seed of the crash storm: `Err` if the invariants or the linearizability checker
/// found a violation (a checker that gave up counts as no catch).
fn storm_seed(seed: u64, bugs: Broken) -> Result<(), String> {
    let setup = Setup {
        bugs,
        crash_storm: true,
    };
    let report = simulation_with(3, seed, setup).run();
    match report.verdict(&mut Linearizability::new(KvModel)) {
        Verdict::Violation(why) => Err(why),
        Verdict::Pass | Verdict::GaveUp(_) => Ok(()),
    }
}

/// The control for the test below: the same crash storm without the bug finds nothing, so
/// a catch there is the bug's doing. 200 seeds (CI default); `SYNOD_SEEDS` sets it.
#[test]
fn the_crash_storm_finds_nothing_without_the_bug() {
    let runner = SeedRunner::new(
        "synod-consensus",
        "sim::the_crash_storm_finds_nothing_without_the_bug",
    );
    let seeds = runner.run(200, |seed| storm_seed(seed, Broken::default()));
    println!("synod-sim crash storm without the bug: {seeds} seeds, 0 violations");
}

/// The vote-persistence bug under synod-sim. With the default faults a crashed node stays
/// down longer than an election timeout and pre-vote and check-quorum keep a restarted
/// node out of the term it forgot, so the bug hides; the crash storm restarts nodes within
/// 10 ms (an election timeout is 50-100 ms), crashes one every 5 ms on average, duplicates
/// and reorders messages, and turns both safeguards off. Seed budget: 200 (CI default);
/// `SYNOD_SEEDS` sets it.
#[test]
fn reintroduced_bug_not_persisting_the_vote_is_caught_under_synod_sim() {
    let runner = SeedRunner::new(
        "synod-consensus",
        "sim::reintroduced_bug_not_persisting_the_vote_is_caught_under_synod_sim",
    );
    let bugs = Broken {
        skip_vote_persistence: true,
        ..Broken::default()
    };
    let caught = runner.find_failure(200, |seed| storm_seed(seed, bugs));
    let (seed, why, tried) = caught.expect("the vote-persistence bug is caught within 200 seeds");
    println!(
        "synod-sim crash storm: vote-persistence bug caught at seed {seed} after {tried} seeds: {why}"
    );
    // A node that votes twice in a term elects two leaders in it: the catch must be that,
    // not something else the storm shook loose (this test once passed on stale reads that
    // came from read ids reused across restarts, a bug of this driver).
    assert!(why.contains("election safety"), "{why}");
}
