//! The Consistent Core node ([`CoreNode`]) under `synod-sim`: the very node type the real
//! process runs, driven by simulated time, network and disk, with every fault kind of the
//! nemesis (partitions, clogs, loss, duplication, reordering, crashes with torn and lost
//! unsynced writes, pauses, clock jumps and drift). Each run's client history is checked
//! for linearizability, and progress is required after healing.
//!
//! The log store journals every write to the simulated disk and replays it on restart; a
//! persistence request becomes a simulated sync, acknowledged only when the simulator
//! reports it done. Compaction is off here (snapshots are tested in the unit tests): the
//! journal has no synchronous sync for the "durable on return" contract of snapshots.
//!
//! `SYNOD_SEEDS=<count>` runs more seeds (CI default below), `SYNOD_SEED=<seed>` replays one.

use std::collections::BTreeMap;
use std::time::Duration;

use synod_consensus::journal::{JournalStore, encode, replay};
use synod_consensus::{Config, Membership, Message, Node, NodeId, PersistToken};
use synod_examples::consistent_core::kv::{KvCommand, KvQuery, KvReply, PutCondition};
use synod_examples::consistent_core::node::{
    CoreNode, Effect, Input, ReadMode, Request, Response, Tag,
};
use synod_sim::seeds::SeedRunner;
use synod_sim::{
    ClientId, Completion, Context, Coverage, DelayDistribution, Invocation, KvInput, KvModel,
    KvOutput, Linearizability, LinkConfig, Probability, RequestId, SimConfig, SimRng, Simulation,
    SyncToken, TimerId, Workload,
};

const JOURNAL: &str = "core.journal";
const TICK: Duration = Duration::from_millis(5);
const KEYS: u64 = 3;
const SEEDS_CI: u64 = 1000;

/// The simulated process: a [`CoreNode`] and the plumbing a real process would have.
struct SimCore {
    id: NodeId,
    nodes: usize,
    core: Option<CoreNode<JournalStore>>,
    requests: BTreeMap<Tag, RequestId>,
    next_tag: Tag,
    syncs: BTreeMap<u64, PersistToken>,
    next_sync: u64,
}

impl SimCore {
    fn new(index: u32, nodes: usize) -> SimCore {
        SimCore {
            id: NodeId::new(u64::from(index) + 1),
            nodes,
            core: None,
            requests: BTreeMap::new(),
            next_tag: 0,
            syncs: BTreeMap::new(),
            next_sync: 0,
        }
    }

    fn input(&mut self, ctx: &mut Context<'_, Self>, input: Input) {
        let core = self.core.as_mut().expect("started");
        let effects = core.handle(input);
        self.run(ctx, effects);
    }

    fn run(&mut self, ctx: &mut Context<'_, Self>, effects: Vec<Effect>) {
        let core = self.core.as_mut().expect("started");
        let ops = core.store_mut().take_written();
        if !ops.is_empty() {
            let mut bytes = Vec::new();
            for op in &ops {
                encode(op, &mut bytes);
            }
            ctx.disk().append(JOURNAL, &bytes).expect("simulated disk");
        }
        for effect in effects {
            match effect {
                Effect::Send(m) => {
                    let to = synod_sim::NodeId::new(u32::try_from(m.to.get() - 1).expect("small"));
                    ctx.send(to, m);
                }
                Effect::Persist(token) => {
                    self.next_sync += 1;
                    self.syncs.insert(self.next_sync, token);
                    ctx.sync(SyncToken(self.next_sync));
                }
                Effect::Reply { tag, response } => {
                    if let Some(id) = self.requests.remove(&tag) {
                        ctx.reply(id, response);
                    }
                }
                Effect::Fatal(why) => panic!("fatal: {why}"),
            }
        }
    }
}

impl synod_sim::Node for SimCore {
    type Message = Message;
    type Request = Request;
    type Response = Response;

    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        let membership =
            Membership::new((1..=self.nodes as u64).map(NodeId::new), []).expect("valid");
        let journal = ctx.disk().read(JOURNAL).unwrap_or_default();
        let (mem, valid) = replay(&journal, &membership);
        if valid < journal.len() {
            ctx.disk()
                .set_len(JOURNAL, valid as u64)
                .expect("simulated disk");
        }
        let config = Config::builder(self.id)
            .seed(ctx.rng().next_u64())
            .election_timeout_ticks(10..20)
            .heartbeat_interval_ticks(2)
            .in_flight_max(8)
            .append_bytes_max(4096)
            .build()
            .expect("valid config");
        let raft = Node::new(config, JournalStore::new(mem));
        let mut core = CoreNode::new(raft, u64::MAX).with_read_ids_from(ctx.rng().next_u64() >> 1);
        let effects = core.poll();
        self.core = Some(core);
        self.run(ctx, effects);
        ctx.set_timer(TICK, TimerId(0));
    }

    fn on_message(&mut self, ctx: &mut Context<'_, Self>, _: synod_sim::NodeId, msg: Message) {
        self.input(ctx, Input::Peer(msg));
    }

    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, _: TimerId) {
        let now_ms = ctx.now().as_micros() / 1000;
        ctx.set_timer(TICK, TimerId(0));
        self.input(ctx, Input::Tick { now_ms });
    }

    fn on_request(&mut self, ctx: &mut Context<'_, Self>, id: RequestId, request: Request) {
        self.next_tag += 1;
        self.requests.insert(self.next_tag, id);
        let tag = self.next_tag;
        self.input(ctx, Input::Client { tag, request });
    }

    fn on_synced(&mut self, ctx: &mut Context<'_, Self>, token: SyncToken) {
        if let Some(persist) = self.syncs.remove(&token.0) {
            self.input(ctx, Input::Persisted(persist));
        }
    }
}

fn key(k: u64) -> Vec<u8> {
    format!("k{k}").into_bytes()
}

fn value(v: u64) -> Vec<u8> {
    v.to_string().into_bytes()
}

#[derive(Default)]
struct KvWorkload {
    next_value: u64,
    /// Known-bad: serve every read as a follower read (possibly stale), which the checker
    /// must catch.
    follower_reads: bool,
}

impl Workload<SimCore> for KvWorkload {
    type Input = KvInput;
    type Output = KvOutput;

    fn invoke(
        &mut self,
        _: ClientId,
        nodes: usize,
        rng: &mut SimRng,
    ) -> Option<Invocation<Request, KvInput>> {
        let node = synod_sim::NodeId::new(u32::try_from(rng.below(nodes as u64)).expect("small"));
        let k = rng.below(KEYS);
        self.next_value += 1;
        let v = self.next_value;
        Some(match rng.below(3) {
            0 => Invocation {
                node,
                request: Request::Read {
                    query: KvQuery::Get(key(k)),
                    mode: if self.follower_reads {
                        ReadMode::Follower
                    } else if rng.below(2) == 0 {
                        ReadMode::Linearizable
                    } else {
                        ReadMode::Lease
                    },
                },
                input: KvInput::Read { key: k },
            },
            1 => Invocation {
                node,
                request: Request::Write {
                    command: KvCommand::Put {
                        key: key(k),
                        value: value(v),
                        condition: PutCondition::Always,
                    },
                    session: None,
                },
                input: KvInput::Write { key: k, value: v },
            },
            _ => {
                let expect = (rng.below(2) == 0).then(|| v.saturating_sub(rng.below(4) + 1));
                Invocation {
                    node,
                    request: Request::Write {
                        command: KvCommand::Cas {
                            key: key(k),
                            expected: expect.map(value),
                            new: value(v),
                        },
                        session: None,
                    },
                    input: KvInput::Cas {
                        key: k,
                        expect,
                        new: v,
                    },
                }
            }
        })
    }

    fn complete(
        &mut self,
        _: ClientId,
        input: &KvInput,
        response: &Response,
    ) -> Completion<KvOutput> {
        match (input, response) {
            (KvInput::Read { .. }, Response::Kv(KvReply::Nil)) => {
                Completion::Ok(KvOutput::Read(None))
            }
            (KvInput::Read { .. }, Response::Kv(KvReply::Bulk(b))) => {
                match std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()) {
                    Some(v) => Completion::Ok(KvOutput::Read(Some(v))),
                    None => Completion::Unknown,
                }
            }
            (KvInput::Write { .. }, Response::Kv(KvReply::Ok)) => Completion::Ok(KvOutput::Written),
            (KvInput::Cas { .. }, Response::Kv(KvReply::Int(n))) => {
                Completion::Ok(KvOutput::Cas(*n == 1))
            }
            (_, Response::NotLeader { .. } | Response::Retry(_)) => Completion::Fail,
            _ => Completion::Unknown,
        }
    }
}

fn config(nodes: usize) -> SimConfig {
    SimConfig::builder(nodes)
        .clients(5)
        .safety_time(Duration::from_millis(1500))
        .liveness_time_max(Duration::from_secs(3))
        .client_timeout(Duration::from_millis(400))
        .link(LinkConfig::new(
            DelayDistribution::uniform(Duration::from_micros(100), Duration::from_millis(3))
                .with_tail(Probability::from_percent(2), Duration::from_millis(30)),
        ))
        .client_link(LinkConfig::new(DelayDistribution::uniform(
            Duration::from_micros(10),
            Duration::from_micros(200),
        )))
        .sync_delay(DelayDistribution::uniform(
            Duration::from_micros(100),
            Duration::from_millis(5),
        ))
        .build()
        .expect("valid config")
}

fn simulation(nodes: usize, seed: u64) -> Simulation<SimCore, KvWorkload> {
    simulation_with(nodes, seed, KvWorkload::default())
}

fn simulation_with(
    nodes: usize,
    seed: u64,
    workload: KvWorkload,
) -> Simulation<SimCore, KvWorkload> {
    Simulation::new(
        config(nodes),
        seed,
        move |id| SimCore::new(id.get(), nodes),
        workload,
    )
    .progress(|view| {
        view.healed_at()
            .is_some_and(|t| view.history().ok_invoked_since(t) > 0)
    })
}

#[test]
fn core_node_is_linearizable_and_live_under_every_fault() {
    let runner = SeedRunner::new(
        "synod-examples",
        "core_sim::core_node_is_linearizable_and_live_under_every_fault",
    );
    let mut coverage = Coverage::default();
    let (mut events, mut ops, mut ok, mut gave_up) = (0u64, 0usize, 0usize, 0u64);
    let seeds = runner.run(SEEDS_CI, |seed| {
        let nodes = if seed % 4 == 3 { 5 } else { 3 };
        let report = simulation(nodes, seed).run();
        coverage.merge(&report.coverage);
        events += report.events;
        ops += report.history.len();
        ok += report.history.ok_count();
        if let Some(failure) = &report.failure {
            return Err(format!("{failure}"));
        }
        match report.check(&mut Linearizability::new(KvModel)) {
            Err(why) if why.contains("gave up") => {
                gave_up += 1;
                Ok(())
            }
            other => other,
        }
    });
    println!(
        "consistent core under synod-sim: {seeds} seeds, {events} events, {ops} operations ({ok} ok), \
         0 linearizability violations, checker gave up on {gave_up}"
    );
    println!("coverage: {coverage}");
    if !runner.replaying() {
        assert!(ok > seeds as usize * 5, "the workload made progress");
    }
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let a = simulation(3, 7).run();
    let b = simulation(3, 7).run();
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.history.len(), b.history.len());
}

#[test]
fn the_checker_catches_stale_follower_reads() {
    let caught = (0..200).find(|&seed| {
        let workload = KvWorkload {
            follower_reads: true,
            ..KvWorkload::default()
        };
        let report = simulation_with(3, seed, workload).run();
        matches!(report.check(&mut Linearizability::new(KvModel)), Err(why) if !why.contains("gave up"))
    });
    println!("stale follower reads caught by the linearizability checker at seed {caught:?}");
    assert!(
        caught.is_some(),
        "follower reads served as linearizable went unnoticed in 200 seeds"
    );
}
