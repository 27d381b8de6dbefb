//! A Raft-replicated key-value store under synod-sim: every fault kind of the nemesis
//! (partitions, clogs, loss, duplication, reordering, crashes with torn and lost disk
//! writes, pauses, clock jumps and drift), Raft's safety properties checked after every
//! event, linearizability of the client history checked at the end, and progress required
//! after healing.
//!
//! Each node keeps its log in memory and journals the writes of every persistence request
//! to its simulated disk as checksummed records; a sync request follows each persistence request, and the
//! node acknowledges `persisted` only when the simulator reports the sync done. On a
//! restart the journal is replayed up to its torn tail; damage to records a later record
//! proves synced would stop the run (the simulated disk never corrupts synced data).
//!
//! `SYNOD_SEEDS` and `SYNOD_SEED` (synod-sim's seed runner) set the seed count or replay
//! one seed.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use synod_consensus::invariants::SafetyChecker;
use synod_consensus::journal::{JournalWriter, replay};
use synod_consensus::{
    Broken, Config, Entry, LogIndex, Membership, Message, Node, NodeId, Payload, PersistToken,
    ReadId,
};
use synod_sim::seeds::SeedRunner;
use synod_sim::{
    ClientId, Completion, Context, Coverage, FaultKind, Invocation, KvInput, KvModel, KvOutput,
    Linearizability, NemesisConfig, RequestId, SimConfig, SimRng, Simulation, SyncToken, TimerId,
    Verdict, Workload,
};

const JOURNAL: &str = "raft.journal";
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

/// A key-value store node: Raft plus the state machine.
struct KvNode {
    id: NodeId,
    nodes: usize,
    setup: Setup,
    raft: Option<Node>,
    kv: BTreeMap<u64, u64>,
    applied: LogIndex,
    /// Proposals waiting to apply: index to (request, the exact entry payload).
    proposals: BTreeMap<LogIndex, (RequestId, Bytes)>,
    reads: BTreeMap<ReadId, (RequestId, u64)>,
    /// Reads confirmed at an index, waiting for the state machine.
    waiting_reads: Vec<(LogIndex, RequestId, u64)>,
    next_read: u64,
    /// Persistence tokens waiting for a sync, by the sync's number, with the journal's
    /// length when it was asked for.
    syncs: BTreeMap<u64, (PersistToken, u64)>,
    next_sync: u64,
    journal: JournalWriter,
    /// Drawn at each start, so that the invariant tells a restart from a node that stayed
    /// up; also where this incarnation's read ids start.
    incarnation: u64,
}

impl KvNode {
    fn new(id: NodeId, nodes: usize, setup: Setup) -> KvNode {
        KvNode {
            id,
            nodes,
            setup,
            raft: None,
            kv: BTreeMap::new(),
            applied: LogIndex::ZERO,
            proposals: BTreeMap::new(),
            reads: BTreeMap::new(),
            waiting_reads: Vec::new(),
            next_read: 0,
            syncs: BTreeMap::new(),
            next_sync: 0,
            journal: JournalWriter::new(0),
            incarnation: 0,
        }
    }

    fn membership(&self) -> Membership {
        Membership::new((1..=self.nodes as u64).map(NodeId::new), []).expect("valid")
    }

    fn raft(&mut self) -> &mut Node {
        self.raft.as_mut().expect("started")
    }

    fn drive(&mut self, ctx: &mut Context<'_, Self>) {
        while self.raft().has_ready() {
            let ready = self.raft().ready();
            if let Some((token, write)) = ready.persist {
                let mut bytes = Vec::new();
                self.journal.encode(write.ops(), &mut bytes);
                ctx.disk().append(JOURNAL, &bytes).expect("simulated disk");
                self.next_sync += 1;
                self.syncs
                    .insert(self.next_sync, (token, self.journal.end()));
                ctx.sync(SyncToken(self.next_sync));
            }
            for msg in ready.messages {
                ctx.send(msg.to, msg);
            }
            for entry in ready.committed {
                self.apply(ctx, &entry);
            }
            for read in ready.reads {
                if let Some((req, key)) = self.reads.remove(&read.id) {
                    match read.index {
                        Some(index) => self.waiting_reads.push((index, req, key)),
                        None => ctx.reply(req, Response::Refused),
                    }
                }
            }
            let applied = self.applied;
            let (ready_reads, rest): (Vec<_>, Vec<_>) = self
                .waiting_reads
                .drain(..)
                .partition(|(index, _, _)| *index <= applied);
            self.waiting_reads = rest;
            for (_, req, key) in ready_reads {
                ctx.reply(req, Response::Read(self.kv.get(&key).copied()));
            }
        }
    }

    fn apply(&mut self, ctx: &mut Context<'_, Self>, entry: &Entry) {
        self.applied = entry.index;
        let Payload::Command(data) = &entry.payload else {
            return;
        };
        let Ok((_, command)) = postcard::from_bytes::<(u64, Command)>(data) else {
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
        if let Some((req, payload)) = self.proposals.remove(&entry.index)
            && payload == *data
        {
            ctx.reply(req, response);
        }
    }
}

impl synod_sim::Node for KvNode {
    type Message = Message;
    type Request = Request;
    type Response = Response;

    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        self.incarnation = ctx.rng().next_u64();
        // Read ids must not repeat across restarts (`Node::read_index`): a late answer to
        // the previous incarnation's read would be taken for a new one's, and serve it at
        // an old index.
        self.next_read = self.incarnation >> 1;
        let membership = self.membership();
        let journal = ctx.disk().read(JOURNAL).unwrap_or_default();
        let (mem, valid) =
            replay(&journal, &membership).unwrap_or_else(|e| panic!("node {}: {e}", self.id));
        if valid < journal.len() {
            ctx.disk()
                .set_len(JOURNAL, valid as u64)
                .expect("simulated disk");
        }
        self.journal = JournalWriter::new(valid as u64);
        let seed = ctx.rng().next_u64();
        let config = Config::builder(self.id)
            .seed(seed)
            .election_timeout_ticks(10..20)
            .heartbeat_interval_ticks(2)
            .in_flight_max(8)
            .append_bytes_max(4096)
            .pre_vote(!self.setup.crash_storm)
            .check_quorum(!self.setup.crash_storm)
            .broken(self.setup.bugs)
            .build()
            .expect("valid config");
        self.raft = Some(Node::new(config, mem));
        ctx.set_timer(TICK, TimerId(0));
        self.drive(ctx);
    }

    fn on_message(&mut self, ctx: &mut Context<'_, Self>, _: NodeId, msg: Message) {
        self.raft().step(msg);
        self.drive(ctx);
    }

    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, _: TimerId) {
        self.raft().tick();
        ctx.set_timer(TICK, TimerId(0));
        self.drive(ctx);
    }

    fn on_request(&mut self, ctx: &mut Context<'_, Self>, id: RequestId, request: Request) {
        match request {
            Request::Read { key } => {
                self.next_read += 1;
                let read = ReadId(self.next_read);
                if self.raft().read_index(read).is_ok() {
                    self.reads.insert(read, (id, key));
                } else {
                    ctx.reply(id, Response::Refused);
                }
            }
            Request::Command(command) => {
                let op = ctx.rng().next_u64();
                let payload = Bytes::from(postcard::to_stdvec(&(op, command)).expect("encodes"));
                match self.raft().propose(payload.clone()) {
                    Ok(index) => {
                        self.proposals.insert(index, (id, payload));
                    }
                    Err(_) => ctx.reply(id, Response::Refused),
                }
            }
        }
        self.drive(ctx);
    }

    fn on_synced(&mut self, ctx: &mut Context<'_, Self>, token: SyncToken) {
        if let Some((persist, len)) = self.syncs.remove(&token.0) {
            self.journal.synced(len);
            self.raft().persisted(persist);
            self.drive(ctx);
        }
    }
}

#[derive(Default)]
struct KvWorkload {
    next_value: u64,
}

impl Workload<KvNode> for KvWorkload {
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

fn simulation(nodes: usize, seed: u64) -> Simulation<KvNode, KvWorkload> {
    simulation_with(nodes, seed, Setup::default())
}

fn simulation_with(nodes: usize, seed: u64, setup: Setup) -> Simulation<KvNode, KvWorkload> {
    let mut checker = SafetyChecker::new();
    let mut seen: Seen = BTreeMap::new();
    Simulation::new(
        config(nodes, setup),
        seed,
        move |id| KvNode::new(id, nodes, setup),
        KvWorkload::default(),
    )
    .invariant(move |view| {
        for (id, node) in view.nodes() {
            if let Some(raft) = node.raft.as_ref()
                && seen.insert(id.get(), node.incarnation) != Some(node.incarnation)
            {
                checker.crashed(raft.id());
            }
        }
        // The checker walks the nodes more than once, so it takes an iterator it can clone.
        let result = checker.check(
            (1..=nodes as u64)
                .filter_map(|i| view.node(NodeId::new(i)))
                .filter_map(|node| node.raft.as_ref()),
        );
        if result.is_err() && std::env::var_os("SYNOD_DEBUG").is_some() {
            for (id, node) in view.nodes() {
                if let Some(r) = node.raft.as_ref() {
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
