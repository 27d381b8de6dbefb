//! The ABD register under `synod-sim`: the simulator's network (loss, duplication,
//! reordering, partitions), process faults (crash with disk loss of unsynced writes, pause,
//! restart), clock faults, swarm-tested from each seed, and its linearizability checker.
//!
//! Each simulated node wraps an [`AbdNode`] (one register, key 0 of the simulator's
//! key-value model). The wrapper persists the replica state on the simulated disk and
//! holds back every effect that follows an [`AbdEffect::Persist`] until the disk has synced,
//! as a real driver must. After a restart it recovers the last valid record and starts a
//! new incarnation (drawn from the node's seeded randomness here; a real node would
//! persist a generation).
//!
//! Seeds: `SYNOD_SEEDS=<n>` runs more (the CI default is below), `SYNOD_SEED=<s>` replays
//! one; a failure prints the replay command.

use std::collections::BTreeMap;
use std::time::Duration;

use synod_quorum::{
    AbdConfig, AbdEffect, AbdMessage, AbdNode, AbdOpId, FlexibleConfig, Incarnation, Tag,
};
use synod_sim::seeds::SeedRunner;
use synod_sim::{
    ClientId, Completion, Context, Counter, Coverage, DelayDistribution, Invocation, KvInput,
    KvModel, KvOutput, Linearizability, LinkConfig, Node, NodeId, Probability, RequestId,
    RunReport, SimConfig, SimRng, Simulation, SyncToken, TimerId, Verdict, Workload,
};

/// Seeds the correct register runs in CI.
const CORRECT_SEEDS: u64 = 2_000;
/// The broken registers must be caught within this many seeds.
const CATCH_WITHIN: u64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Correct,
    /// Read and write quorums that need not meet: R = W = floor(N/2).
    NoOverlap,
    /// Reads return without writing back.
    NoWriteBack,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Request {
    Read,
    Write(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Response {
    Read(Option<u64>),
    Written,
    /// Refused before doing anything (too many operations in flight).
    Busy,
}

const STATE_FILE: &str = "abd.state";
const RECORD_BYTES: usize = 8 * 4 + 1 + 8 + 8;
const TICK: TimerId = TimerId(0);
const TICK_EVERY: Duration = Duration::from_millis(5);

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn encode(tag: Tag, value: Option<u64>) -> [u8; RECORD_BYTES] {
    let mut r = [0u8; RECORD_BYTES];
    r[0..8].copy_from_slice(&tag.sequence.to_le_bytes());
    r[8..16].copy_from_slice(&tag.writer.map_or(0, NodeId::get).to_le_bytes());
    r[16..24].copy_from_slice(&tag.incarnation.to_le_bytes());
    r[24..32].copy_from_slice(&tag.op.to_le_bytes());
    r[32] = u8::from(value.is_some());
    r[33..41].copy_from_slice(&value.unwrap_or(0).to_le_bytes());
    let sum = fnv(&r[..41]);
    r[41..49].copy_from_slice(&sum.to_le_bytes());
    r
}

fn decode(r: &[u8]) -> Option<(Tag, Option<u64>)> {
    let word = |i: usize| u64::from_le_bytes(r[i..i + 8].try_into().expect("8 bytes"));
    if r.len() != RECORD_BYTES || r[32] > 1 || word(41) != fnv(&r[..41]) {
        return None;
    }
    let tag = Tag {
        sequence: word(0),
        writer: NodeId::try_new(word(8)),
        incarnation: word(16),
        op: word(24),
    };
    Some((tag, (r[32] == 1).then(|| word(33))))
}

/// The newest valid record of the state file. A crash can tear the last append, and later
/// appends then follow the torn bytes, so every byte offset is tried: a record is valid
/// where its checksum matches.
fn recover<B: AsRef<[u8]>>(log: Option<B>) -> (Tag, Option<u64>) {
    let mut state = (Tag::default(), None);
    let Some(log) = log else {
        return state;
    };
    let log = log.as_ref();
    for start in 0..log.len().saturating_sub(RECORD_BYTES - 1) {
        if let Some((tag, value)) = decode(&log[start..start + RECORD_BYTES])
            && tag > state.0
        {
            state = (tag, value);
        }
    }
    state
}

/// Accepts what a simulated disk write returns: nothing, or an `io::Result` (the disk
/// injects no write errors; a failure would be a bug in the test).
trait DiskOk {
    fn ok(self);
}

impl DiskOk for () {
    fn ok(self) {}
}

impl DiskOk for std::io::Result<()> {
    fn ok(self) {
        self.expect("simulated disk write");
    }
}

fn disk_ok(result: impl DiskOk) {
    result.ok();
}

/// One simulated node: an ABD replica and coordinator with a durable replica state.
#[derive(Debug)]
pub struct SimAbd {
    variant: Variant,
    me: NodeId,
    nodes: usize,
    node: Option<AbdNode<u64>>,
    clients: BTreeMap<AbdOpId, RequestId>,
    /// Effects held back until a sync completes, in order, with the sync they wait for.
    held: Vec<(u64, AbdEffect<u64>)>,
    /// The last sync requested, and the last one completed.
    next_sync: u64,
    synced: u64,
}

impl SimAbd {
    pub fn new(variant: Variant, id: NodeId, nodes: usize) -> Self {
        Self {
            variant,
            me: id,
            nodes,
            node: None,
            clients: BTreeMap::new(),
            held: Vec::new(),
            next_sync: 0,
            synced: 0,
        }
    }

    /// The configuration of one start of this node.
    fn config(&self, incarnation: Incarnation) -> AbdConfig {
        let (me, nodes) = (self.me, self.nodes);
        let voters = (1..=nodes as u64).map(NodeId::new);
        let config = match self.variant {
            Variant::NoOverlap => {
                let q = nodes / 2;
                let quorums = FlexibleConfig::without_overlap_check(voters, q, q).unwrap();
                AbdConfig::with_quorums(me, incarnation, quorums).unwrap()
            }
            _ => AbdConfig::majority(me, incarnation, voters).unwrap(),
        }
        .limits(16, 2, 20)
        .unwrap();
        if self.variant == Variant::NoWriteBack {
            config.without_write_back()
        } else {
            config
        }
    }

    /// The replica's tag and value (for the invariant).
    pub fn stored(&self) -> Option<(Tag, Option<u64>)> {
        self.node
            .as_ref()
            .map(|n| (n.replica_state().0, n.replica_state().1.copied()))
    }

    fn drain(&mut self, ctx: &mut Context<'_, Self>) {
        while let Some(effect) = self.node.as_mut().and_then(AbdNode::poll_effect) {
            if let AbdEffect::Persist { tag, value } = effect {
                disk_ok(ctx.disk().append(STATE_FILE, &encode(tag, value)));
                self.next_sync += 1;
                ctx.sync(SyncToken(self.next_sync));
                continue;
            }
            // Anything after a persist waits for its sync, so order is kept.
            if self.next_sync > self.synced {
                self.held.push((self.next_sync, effect));
            } else {
                self.apply(ctx, effect);
            }
        }
    }

    fn apply(&mut self, ctx: &mut Context<'_, Self>, effect: AbdEffect<u64>) {
        match effect {
            AbdEffect::Persist { .. } => unreachable!("handled in drain"),
            AbdEffect::Send { to, message } => ctx.send(to, message),
            AbdEffect::ReadDone { op, value } => {
                if let Some(client) = self.clients.remove(&op) {
                    ctx.reply(client, Response::Read(value));
                }
            }
            AbdEffect::WriteDone { op } => {
                if let Some(client) = self.clients.remove(&op) {
                    ctx.reply(client, Response::Written);
                }
            }
            // A timed-out operation gets no reply: the client records it as unknown.
            AbdEffect::Failed { op, .. } => {
                self.clients.remove(&op);
            }
        }
    }
}

impl Node for SimAbd {
    type Message = AbdMessage<u64>;
    type Request = Request;
    type Response = Response;

    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        let state = recover(ctx.disk().read(STATE_FILE));
        // A fresh incarnation on every start (see the module documentation).
        let incarnation = Incarnation::new(ctx.rng().next_u64());
        self.node = Some(AbdNode::recover(self.config(incarnation), state.0, state.1));
        ctx.set_timer(TICK_EVERY, TICK);
    }

    fn on_message(&mut self, ctx: &mut Context<'_, Self>, from: NodeId, message: AbdMessage<u64>) {
        if let Some(node) = self.node.as_mut() {
            node.handle(from, message);
        }
        self.drain(ctx);
    }

    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, _timer: TimerId) {
        if let Some(node) = self.node.as_mut() {
            node.tick();
        }
        self.drain(ctx);
        ctx.set_timer(TICK_EVERY, TICK);
    }

    fn on_request(&mut self, ctx: &mut Context<'_, Self>, id: RequestId, request: Request) {
        let Some(node) = self.node.as_mut() else {
            return;
        };
        let started = match request {
            Request::Read => node.read(),
            Request::Write(value) => node.write(value),
        };
        match started {
            Ok(op) => {
                self.clients.insert(op, id);
                self.drain(ctx);
            }
            Err(_) => ctx.reply(id, Response::Busy),
        }
    }

    fn on_synced(&mut self, ctx: &mut Context<'_, Self>, token: SyncToken) {
        self.synced = self.synced.max(token.0);
        let ready = self.held.partition_point(|(sync, _)| *sync <= self.synced);
        let released: Vec<AbdEffect<u64>> = self.held.drain(..ready).map(|(_, e)| e).collect();
        for effect in released {
            self.apply(ctx, effect);
        }
    }
}

/// Clients reading and writing unique values through random nodes.
#[derive(Debug, Default)]
pub struct Clients {
    next_value: u64,
}

impl Workload<SimAbd> for Clients {
    type Input = KvInput;
    type Output = KvOutput;

    fn invoke(
        &mut self,
        _client: ClientId,
        nodes: usize,
        rng: &mut SimRng,
    ) -> Option<Invocation<Request, KvInput>> {
        let node = NodeId::new(rng.below(nodes as u64) + 1);
        Some(if rng.below(2) == 0 {
            Invocation {
                node,
                request: Request::Read,
                input: KvInput::Read { key: 0 },
            }
        } else {
            self.next_value += 1;
            Invocation {
                node,
                request: Request::Write(self.next_value),
                input: KvInput::Write {
                    key: 0,
                    value: self.next_value,
                },
            }
        })
    }

    fn complete(&mut self, _: ClientId, _: &KvInput, response: &Response) -> Completion<KvOutput> {
        match response {
            Response::Read(v) => Completion::Ok(KvOutput::Read(*v)),
            Response::Written => Completion::Ok(KvOutput::Written),
            Response::Busy => Completion::Fail,
        }
    }
}

fn simulation(variant: Variant, nodes: usize, seed: u64) -> Simulation<SimAbd, Clients> {
    let config = SimConfig::builder(nodes)
        .clients(6)
        .safety_time(Duration::from_millis(300))
        .liveness_time_max(Duration::from_secs(2))
        .client_timeout(Duration::from_millis(100))
        .link(LinkConfig::new(
            DelayDistribution::uniform(Duration::from_micros(100), Duration::from_millis(2))
                .with_tail(Probability::from_percent(5), Duration::from_millis(20)),
        ))
        .build()
        .expect("valid simulation config");
    Simulation::new(
        config,
        seed,
        move |id| SimAbd::new(variant, id, nodes),
        Clients::default(),
    )
    .invariant(|view| {
        // Replicas holding the same tag hold the same value: tags are unique per write.
        let mut seen: Vec<(Tag, Option<u64>)> = Vec::new();
        for (id, node) in view.nodes() {
            let Some((tag, value)) = node.stored() else {
                continue;
            };
            if let Some((_, other)) = seen.iter().find(|(t, _)| *t == tag)
                && *other != value
            {
                return Err(format!(
                    "{id} holds {value:?} at {tag:?}, another node {other:?}"
                ));
            }
            seen.push((tag, value));
        }
        Ok(())
    })
    .progress(|view| {
        view.healed_at()
            .is_some_and(|t| view.history().ok_invoked_since(t) > 0)
    })
}

fn verdict(report: &RunReport<KvInput, KvOutput>) -> Result<(), String> {
    report.check(&mut Linearizability::new(KvModel))
}

#[test]
fn abd_is_linearizable_in_every_simulated_history() {
    let runner = SeedRunner::new(
        "synod-quorum",
        "sim_abd::abd_is_linearizable_in_every_simulated_history",
    );
    let mut coverage = Coverage::default();
    let (mut ops, mut ok, mut unknown, mut events) = (0usize, 0usize, 0usize, 0u64);
    let seeds = runner.run(CORRECT_SEEDS, |seed| {
        // Three nodes for most seeds (f = 1), five for every fourth (f = 2).
        let nodes = if seed % 4 == 3 { 5 } else { 3 };
        let report = simulation(Variant::Correct, nodes, seed).run();
        coverage.merge(&report.coverage);
        ops += report.history.len();
        ok += report.history.ok_count();
        unknown += report.history.unknown_count();
        events += report.events;
        verdict(&report)
    });
    println!(
        "synod-sim abd: {seeds} seeds linearizable, {events} events, {ops} operations ({ok} ok, {unknown} unknown)"
    );
    println!("coverage: {coverage}");
    if !runner.replaying() {
        assert!(ops > seeds as usize * 10, "the workload ran");
        // Most operations succeed through the faults, not only the one progress needs.
        assert!(
            ok > seeds as usize * 20,
            "the register made progress: {ok} ok"
        );
        assert_eq!(
            coverage.missing(),
            Vec::<Counter>::new(),
            "every fault fired"
        );
    }
}

/// Runs seeds of a broken `variant` on `nodes` nodes until the checker rejects a history;
/// the same seed must pass with the correct register.
fn catch(variant: Variant, nodes: usize, test: &str) {
    let runner = SeedRunner::new("synod-quorum", test);
    let Some((seed, why, tried)) = runner.find_failure(CATCH_WITHIN, |seed| {
        // Only the checker's violation counts as a catch: a checker that gave up decided
        // nothing, and a failed run (invariant, progress) is another matter.
        let report = simulation(variant, nodes, seed).run();
        match report.verdict(&mut Linearizability::new(KvModel)) {
            Verdict::Violation(why) if report.failure.is_none() => Err(why),
            Verdict::Violation(_) | Verdict::Pass | Verdict::GaveUp(_) => Ok(()),
        }
    }) else {
        panic!("{variant:?} on {nodes} nodes not caught within {CATCH_WITHIN} seeds");
    };
    println!(
        "synod-sim abd {variant:?} on {nodes} nodes: caught after {tried} seeds (seed {seed}): {why}"
    );
    // The same seed passes with the correct register.
    assert_eq!(
        verdict(&simulation(Variant::Correct, nodes, seed).run()),
        Ok(())
    );
}

#[test]
fn abd_without_overlapping_quorums_is_caught() {
    catch(
        Variant::NoOverlap,
        3,
        "sim_abd::abd_without_overlapping_quorums_is_caught",
    );
}

/// Five nodes with R = W = 2: a read quorum can miss every node of the last write's quorum.
#[test]
fn abd_without_overlapping_quorums_on_five_nodes_is_caught() {
    catch(
        Variant::NoOverlap,
        5,
        "sim_abd::abd_without_overlapping_quorums_on_five_nodes_is_caught",
    );
}

#[test]
fn abd_without_read_write_back_is_caught() {
    catch(
        Variant::NoWriteBack,
        3,
        "sim_abd::abd_without_read_write_back_is_caught",
    );
}

#[test]
fn abd_without_read_write_back_on_five_nodes_is_caught() {
    catch(
        Variant::NoWriteBack,
        5,
        "sim_abd::abd_without_read_write_back_on_five_nodes_is_caught",
    );
}
