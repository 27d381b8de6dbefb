//! Synod's `Member` against foca (2.0, SWIM without Lifeguard) on the same simulated
//! network: detection time of a crash, false positives under loss with a slow member, and
//! messages and bytes per member per protocol period as the cluster grows. Both run under
//! synod-sim through `ProtocolNode`, foca behind a small adapter that turns its timers into
//! wake-ups, with the same protocol period (100 ms), probe timeout (50 ms), indirect probes
//! (3), gossip (every 20 ms to 3 members), base suspicion timeout
//! (`4 x max(1, log10 n)` periods) and a periodic exchange with one member every 500 ms.
//!
//! `cargo bench -p synod-membership --features peers --bench peers` (seeds with
//! `SYNOD_SEEDS=<n>`, default 3).

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::num::{NonZeroU8, NonZeroU32, NonZeroUsize};
use std::rc::Rc;
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, OwnedNotification, PostcardCodec, Timer};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};
use synod_membership::{Member, MemberConfig, MemberState, MemberWrite, ViewChange};
use synod_node::{Effect, EffectOf, Input, InputOf, NodeId, Protocol, Time};
use synod_sim::{
    Action, Boot, CrashMode, Cut, DelayDistribution, Disk, LinkConfig, NemesisConfig, NoClients,
    Probability, ProtocolNode, ProtocolStore, SimConfig, SimTime, Simulation,
};

const PERIOD_MS: u64 = 100;

// ---- foca on the node contract ------------------------------------------------------

/// A foca identity: the node id and a renewal count. Foca refuses a member it declared
/// down under the same identity, so a member that learns it was declared down (falsely, or
/// across a partition) rejoins under a renewed one, as foca's own examples do; the larger
/// renewal wins a conflict over the same address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Id {
    node: u64,
    renewals: u32,
}

impl foca::Identity for Id {
    type Addr = u64;

    fn renew(&self) -> Option<Self> {
        Some(Id {
            node: self.node,
            renewals: self.renewals.wrapping_add(1),
        })
    }

    fn addr(&self) -> u64 {
        self.node
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.renewals > adversary.renewals
    }
}

fn id_of(node: NodeId) -> Id {
    Id {
        node: node.get(),
        renewals: 0,
    }
}

/// A member taken down or up by foca, handed up to the store.
#[derive(Debug, Clone, Copy)]
struct FocaChange {
    id: NodeId,
    down: bool,
    at: Time,
}

/// Foca behind `synod-node`'s contract: its messages are bytes, its timers one `WakeAt`.
struct FocaNode {
    id: NodeId,
    foca: Foca<Id, PostcardCodec, SmallRng, foca::NoCustomBroadcast>,
    runtime: AccumulatingRuntime<Id>,
    /// Timers foca asked for, by when they are due (and an order among equal times).
    timers: BTreeMap<(Time, u64), Timer<Id>>,
    timer_seq: u64,
    wake_at: Option<Time>,
    effects: VecDeque<EffectOf<FocaNode>>,
    messages_sent: u64,
    bytes_sent: u64,
}

impl FocaNode {
    fn new(id: NodeId, nodes: usize, seed: u64, now: Time) -> Self {
        let size = NonZeroU32::new(nodes as u32).expect("nodes");
        let mut config = foca::Config::new_lan(size);
        let period = Duration::from_millis(PERIOD_MS);
        config.probe_period = period;
        config.probe_rtt = period / 2;
        config.num_indirect_probes = NonZeroUsize::new(3).expect("3");
        config.suspect_to_down_after = period.mul_f64(4.0 * (nodes as f64).log10().max(1.0));
        config.remove_down_after = Some(period * 300);
        config.periodic_gossip = Some(foca::PeriodicParams {
            frequency: period / 5,
            num_members: NonZeroUsize::new(3).expect("3"),
        });
        config.periodic_announce = Some(foca::PeriodicParams {
            frequency: period * 5,
            num_members: NonZeroUsize::new(1).expect("1"),
        });
        config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: period * 10,
            num_members: NonZeroUsize::new(1).expect("1"),
        });
        // The same retransmissions as Synod's (`retransmit_mult 4 x ceil(log10(n + 1))`).
        let retransmits = 4 * ((nodes + 1) as f64).log10().ceil() as u8;
        config.max_transmissions = NonZeroU8::new(retransmits.max(1)).expect("nonzero");
        let foca = Foca::new(
            id_of(id),
            config,
            SmallRng::seed_from_u64(seed),
            PostcardCodec,
        );
        let mut node = FocaNode {
            id,
            foca,
            runtime: AccumulatingRuntime::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            wake_at: None,
            effects: VecDeque::new(),
            messages_sent: 0,
            bytes_sent: 0,
        };
        // Join through the same seeds as Synod's members.
        for seed in [1, 2] {
            if seed != id.get() {
                node.foca
                    .announce(id_of(NodeId::new(seed)), &mut node.runtime)
                    .expect("announce");
            }
        }
        node.drain(now);
        node
    }

    /// Turns what foca asked of its runtime into effects.
    fn drain(&mut self, now: Time) {
        while let Some((to, data)) = self.runtime.to_send() {
            self.messages_sent += 1;
            self.bytes_sent += data.len() as u64;
            self.effects.push_back(Effect::Send {
                to: NodeId::new(to.node),
                message: data.to_vec(),
            });
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timer_seq += 1;
            self.timers.insert((now + after, self.timer_seq), timer);
        }
        while let Some(notification) = self.runtime.to_notify() {
            let change = match notification {
                OwnedNotification::MemberUp(id) => Some((id, false)),
                OwnedNotification::MemberDown(id) => Some((id, true)),
                _ => None,
            };
            if let Some((id, down)) = change {
                self.effects.push_back(Effect::Apply(FocaChange {
                    id: NodeId::new(id.node),
                    down,
                    at: now,
                }));
            }
        }
        let next = self.timers.keys().next().map(|&(at, _)| at);
        if let Some(at) = next
            && next != self.wake_at
        {
            self.wake_at = next;
            self.effects.push_back(Effect::WakeAt(at));
        }
    }
}

impl FocaNode {
    /// How many members it holds live (alive or suspected), itself included, each counted
    /// once whatever identities of it foca holds.
    fn live(&self) -> usize {
        let mut nodes: Vec<u64> = self.foca.iter_members().map(|m| m.id().node).collect();
        nodes.push(self.id.get());
        nodes.sort_unstable();
        nodes.dedup();
        nodes.len()
    }
}

impl Protocol for FocaNode {
    type Message = Vec<u8>;
    type Request = ();
    type Response = ();
    type Write = ();
    type Apply = FocaChange;

    fn id(&self) -> NodeId {
        self.id
    }

    fn handle(&mut self, now: Time, input: InputOf<Self>) {
        match input {
            Input::Message { message, .. } => {
                // Foca refuses what it cannot use (a stale probe, say): not a failure here.
                let _ = self.foca.handle_data(&message, &mut self.runtime);
            }
            Input::Wake => {
                self.wake_at = None;
                while let Some(entry) = self.timers.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let timer = entry.remove();
                    let _ = self.foca.handle_timer(timer, &mut self.runtime);
                }
            }
            _ => {}
        }
        self.drain(now);
    }

    fn poll(&mut self) -> Option<EffectOf<Self>> {
        self.effects.pop_front()
    }
}

// ---- stores and runs ------------------------------------------------------------------

/// Who declared whom dead (or suspected) and when, in either system.
#[derive(Default)]
struct Record {
    /// (observer, member, when, dead: true / suspected: false).
    downs: Vec<(NodeId, NodeId, Time, bool)>,
}

type Shared = Rc<RefCell<Record>>;

struct SynodStore {
    id: NodeId,
    lifeguard: bool,
    record: Shared,
}

impl ProtocolStore for SynodStore {
    type Protocol = Member;

    fn recover(&mut self, boot: Boot<'_>) -> io::Result<Member> {
        let config = MemberConfig::builder(boot.id, boot.rng.next_u64())
            .seeds([NodeId::new(1), NodeId::new(2)])
            .probe(PERIOD_MS, PERIOD_MS / 2)
            .gossip(PERIOD_MS / 5, 3)
            .push_pull_interval_ms(5 * PERIOD_MS)
            .dead_reap_ms(300 * PERIOD_MS)
            .lifeguard(self.lifeguard, 8)
            .build()
            .expect("valid config");
        Ok(Member::start(config, 0))
    }

    fn write(&mut self, disk: &mut Disk, write: &MemberWrite) -> io::Result<()> {
        disk.append("generation", &write.generation.to_le_bytes())
    }

    fn apply(&mut self, change: ViewChange) {
        if let ViewChange::Member(event) = change
            && let Some(state @ (MemberState::Suspect | MemberState::Dead)) = event.state
        {
            self.record.borrow_mut().downs.push((
                self.id,
                event.id,
                event.at,
                state == MemberState::Dead,
            ));
        }
    }
}

struct FocaStore {
    id: NodeId,
    nodes: usize,
    record: Shared,
}

impl ProtocolStore for FocaStore {
    type Protocol = FocaNode;

    fn recover(&mut self, boot: Boot<'_>) -> io::Result<FocaNode> {
        Ok(FocaNode::new(
            boot.id,
            self.nodes,
            boot.rng.next_u64(),
            boot.now,
        ))
    }

    fn write(&mut self, _disk: &mut Disk, _write: &()) -> io::Result<()> {
        Ok(())
    }

    fn apply(&mut self, change: FocaChange) {
        if change.down {
            self.record
                .borrow_mut()
                .downs
                .push((self.id, change.id, change.at, true));
        }
    }
}

/// The system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Synod { lifeguard: bool },
    Foca,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Synod { lifeguard: true } => "synod (lifeguard)",
            System::Synod { lifeguard: false } => "synod (plain SWIM)",
            System::Foca => "foca 2.0",
        }
    }
}

/// A run's network, faults and length.
struct Run {
    nodes: usize,
    seed: u64,
    link: LinkConfig,
    links: Vec<(NodeId, NodeId, LinkConfig)>,
    actions: Vec<(Duration, Action)>,
    duration: Duration,
    /// From when messages and bytes are counted (the steady state).
    count_from: Duration,
}

/// What a run left: who declared whom down, messages and bytes sent per member per period
/// after `count_from`, and the first round from which every member held every member live
/// to the end.
struct Outcome {
    record: Record,
    messages: f64,
    bytes: f64,
    whole_since: Option<Duration>,
}

/// What a run counts of one member: messages and bytes it sent, and how many members it
/// holds live, itself included.
type Counters = (u64, u64, usize);

fn link(min_ms: u64, max_ms: u64, loss_percent: u32) -> LinkConfig {
    LinkConfig::new(DelayDistribution::uniform(
        Duration::from_millis(min_ms),
        Duration::from_millis(max_ms),
    ))
    .with_loss(Probability::from_percent(loss_percent))
}

fn simulate<S, F, C>(run: &Run, factory: F, counters: C) -> (u64, u64, Option<Duration>)
where
    S: ProtocolStore + 'static,
    F: FnMut(NodeId) -> ProtocolNode<S> + 'static,
    C: Fn(&S::Protocol) -> Counters + 'static,
    <S::Protocol as Protocol>::Message: Clone + std::fmt::Debug + std::hash::Hash,
    <S::Protocol as Protocol>::Request: Clone + std::fmt::Debug + std::hash::Hash,
    <S::Protocol as Protocol>::Response: Clone + std::fmt::Debug + std::hash::Hash,
{
    let mut builder = SimConfig::builder(run.nodes)
        .clients(0)
        .safety_time(run.duration)
        .nemesis(NemesisConfig::disabled())
        .link(run.link);
    for &(from, to, link) in &run.links {
        builder = builder.link_between(from, to, link);
    }
    let config = builder.build().expect("valid sim config");
    let mut sim = Simulation::new(config, run.seed, factory, NoClients);
    for (at, action) in &run.actions {
        sim = sim.schedule(SimTime::from_micros(at.as_micros() as u64), action.clone());
    }
    let counted = Rc::new(RefCell::new((0u64, 0u64, 0u64, 0u64)));
    let observed = counted.clone();
    let whole_since = Rc::new(RefCell::new(None));
    let observed_whole = whole_since.clone();
    let nodes = run.nodes;
    let from_us = run.count_from.as_micros() as u64;
    let mut next_round = 0u64;
    let sim = sim.invariant(move |view| {
        let t = view.now().as_micros();
        if t < next_round {
            return Ok(());
        }
        next_round = (t / (PERIOD_MS * 1_000) + 1) * PERIOD_MS * 1_000;
        let (mut messages, mut bytes, mut whole) = (0, 0, true);
        for (_, node) in view.nodes() {
            match node.protocol() {
                Some(p) => {
                    let (m, b, live) = counters(p);
                    messages += m;
                    bytes += b;
                    whole &= live == nodes;
                }
                None => whole = false,
            }
        }
        let mut since = observed_whole.borrow_mut();
        match (whole, *since) {
            (true, None) => *since = Some(Duration::from_micros(t)),
            (false, _) => *since = None,
            _ => {}
        }
        let mut c = observed.borrow_mut();
        if t < from_us {
            (c.0, c.1) = (messages, bytes);
        }
        (c.2, c.3) = (messages, bytes);
        Ok(())
    });
    let report = sim.run();
    assert!(report.failure.is_none(), "{:?}", report.failure);
    let c = *counted.borrow();
    let whole = *whole_since.borrow();
    (c.2 - c.0, c.3 - c.1, whole)
}

fn run(system: System, run: &Run) -> Outcome {
    let record: Shared = Rc::default();
    let (messages, bytes, whole_since) = match system {
        System::Synod { lifeguard } => {
            let record = record.clone();
            simulate(
                run,
                move |id| {
                    ProtocolNode::new(SynodStore {
                        id,
                        lifeguard,
                        record: record.clone(),
                    })
                },
                |m: &Member| {
                    let stats = m.stats();
                    (
                        stats.messages_sent,
                        stats.bytes_sent,
                        m.live_members().len(),
                    )
                },
            )
        }
        System::Foca => {
            let (record, nodes) = (record.clone(), run.nodes);
            simulate(
                run,
                move |id| {
                    ProtocolNode::new(FocaStore {
                        id,
                        nodes,
                        record: record.clone(),
                    })
                },
                |f: &FocaNode| (f.messages_sent, f.bytes_sent, f.live()),
            )
        }
    };
    let periods = (run.duration - run.count_from).as_millis() as f64 / PERIOD_MS as f64;
    let per = periods * run.nodes as f64;
    Outcome {
        record: Rc::try_unwrap(record)
            .map(RefCell::into_inner)
            .unwrap_or_default(),
        messages: messages as f64 / per,
        bytes: bytes as f64 / per,
        whole_since,
    }
}

fn mean_p99(xs: &mut [f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    xs.sort_by(f64::total_cmp);
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let at = ((xs.len() as f64 * 0.99).ceil() as usize).clamp(1, xs.len()) - 1;
    (mean, xs[at])
}

fn periods(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0 / PERIOD_MS as f64
}

// ---- the figures ----------------------------------------------------------------------

/// Where in a protocol period a run's crash falls: spread over the period by the seed, the
/// same for both systems. A crash at a whole number of periods would favour whichever system
/// starts its probes in step with the clock (foca's members start theirs together, as they
/// connect, so a crash at 3 s lands just before their probes; Synod's start at a random
/// point of the period), rather than the detector.
fn crash_offset(seed: u64) -> Duration {
    let mut x = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    Duration::from_micros(x % (PERIOD_MS * 1_000))
}

/// What `detection` found: periods from the crash until every live member declared the
/// member dead (mean and p99 over the runs), until the first did (mean), and how many runs
/// left some member never declaring it.
struct Detection {
    every: f64,
    every_p99: f64,
    first: f64,
    missed: u64,
}

/// A member crashes at 3 s and a point of the period set by the run (`4 x seeds` runs, the
/// crashed member and the point the same for both systems).
fn detection(system: System, nodes: usize, seeds: u64) -> Detection {
    let mut every = Vec::new();
    let mut first = Vec::new();
    let mut missed = 0;
    for seed in 0..4 * seeds {
        let crash_at = Duration::from_secs(3) + crash_offset(seed);
        let victim = NodeId::new(3 + seed % 5);
        let r = Run {
            nodes,
            seed,
            link: link(1, 5, 0),
            links: Vec::new(),
            actions: vec![(crash_at, Action::Crash(victim, CrashMode::DropUnsynced))],
            duration: Duration::from_secs(12),
            count_from: Duration::from_secs(1),
        };
        let out = run(system, &r);
        let crash = Time::from_micros(crash_at.as_micros() as u64);
        let declared = |observer: Option<NodeId>| {
            out.record
                .downs
                .iter()
                .filter(|&&(o, id, at, dead)| {
                    observer.is_none_or(|x| x == o) && id == victim && dead && at >= crash
                })
                .map(|&(_, _, at, _)| at)
                .min()
        };
        if let Some(at) = declared(None) {
            first.push(periods(at.saturating_duration_since(crash)));
        }
        let mut latest = None;
        for observer in (1..=nodes as u64).map(NodeId::new).filter(|&o| o != victim) {
            match declared(Some(observer)) {
                Some(at) => latest = Some(latest.map_or(at, |l: Time| l.max(at))),
                None => {
                    latest = None;
                    missed += 1;
                    break;
                }
            }
        }
        if let Some(at) = latest {
            every.push(periods(at.saturating_duration_since(crash)));
        }
    }
    let (mean, p99) = mean_p99(&mut every);
    Detection {
        every: mean,
        every_p99: p99,
        first: mean_p99(&mut first).0,
        missed,
    }
}

/// 16 members for 600 periods, 5% loss everywhere, member 16 slow (links 20-70 ms) and
/// stalled 450 ms every 1.5 s: how many times a healthy member was declared dead.
fn false_positives(system: System, seeds: u64) -> usize {
    let nodes = 16u64;
    let slow = NodeId::new(nodes);
    let mut total = 0;
    for seed in 0..seeds {
        let mut links = Vec::new();
        for other in (1..nodes).map(NodeId::new) {
            links.push((slow, other, link(20, 70, 5)));
            links.push((other, slow, link(20, 70, 5)));
        }
        let mut actions = Vec::new();
        let mut t = 2_000;
        while t < 60_000 {
            actions.push((Duration::from_millis(t), Action::Pause(slow)));
            actions.push((Duration::from_millis(t + 450), Action::Resume(slow)));
            t += 1_500;
        }
        let r = Run {
            nodes: nodes as usize,
            seed,
            link: link(1, 5, 5),
            links,
            actions,
            duration: Duration::from_secs(60),
            count_from: Duration::from_secs(1),
        };
        let out = run(system, &r);
        total += out
            .record
            .downs
            .iter()
            .filter(|&&(_, id, _, dead)| dead && id != slow)
            .count();
    }
    total
}

/// Messages and bytes per member per period, steady state (from 5 s to 15 s), no faults.
fn cost(system: System, nodes: usize) -> (f64, f64) {
    let r = Run {
        nodes,
        seed: 1,
        link: link(1, 5, 0),
        links: Vec::new(),
        actions: Vec::new(),
        duration: Duration::from_secs(15),
        count_from: Duration::from_secs(5),
    };
    let out = run(system, &r);
    (out.messages, out.bytes)
}

/// The members cut into halves at 3 s for 5 s: rounds from the heal until every member
/// holds every member live again (and keeps holding it), mean and max over the seeds.
fn convergence(system: System, nodes: usize, seeds: u64) -> (f64, f64) {
    let (cut_at, heal_at) = (Duration::from_secs(3), Duration::from_secs(8));
    let mut rounds = Vec::new();
    for seed in 0..seeds {
        let ids: Vec<NodeId> = (1..=nodes as u64).map(NodeId::new).collect();
        let (left, right) = ids.split_at(nodes / 2);
        let r = Run {
            nodes,
            seed,
            link: link(1, 5, 0),
            links: Vec::new(),
            actions: vec![
                (
                    cut_at,
                    Action::Partition(Cut::groups(nodes, &[left, right])),
                ),
                (heal_at, Action::HealPartition),
            ],
            duration: Duration::from_secs(25),
            count_from: Duration::from_secs(1),
        };
        let out = run(system, &r);
        let Some(since) = out.whole_since else {
            rounds.push(f64::INFINITY);
            continue;
        };
        rounds.push(periods(since.saturating_sub(heal_at)));
    }
    let (mean, _) = mean_p99(&mut rounds);
    (mean, rounds.last().copied().unwrap_or(f64::NAN))
}

fn main() {
    let seeds: u64 = std::env::var("SYNOD_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let systems = [
        System::Synod { lifeguard: true },
        System::Synod { lifeguard: false },
        System::Foca,
    ];
    println!("same network for all: links 1-5 ms, period {PERIOD_MS} ms, {seeds} seeds");
    for nodes in [8, 32, 128] {
        let mut figures = Vec::new();
        for system in systems {
            let d = detection(system, nodes, seeds);
            println!(
                "detection, n {nodes:>3}: {:<20} dead at every member after {:.2} periods (p99 {:.1}), at the first after {:.2}; runs with a member never declaring it: {}",
                system.name(),
                d.every,
                d.every_p99,
                d.first,
                d.missed
            );
            figures.push(d);
        }
        println!(
            "detection, n {nodes:>3}: synod (lifeguard) / foca = {:.2} at every member, {:.2} at the first",
            figures[0].every / figures[2].every,
            figures[0].first / figures[2].first
        );
    }
    let mut fp = Vec::new();
    for system in systems {
        let count = false_positives(system, seeds);
        println!(
            "false positives, 16 members, 5% loss, one slow and stalling member, {seeds} x 600 periods: {:<20} healthy members declared dead {count} times",
            system.name()
        );
        fp.push(count);
    }
    println!(
        "false positives: synod (lifeguard) {} vs foca {}",
        fp[0], fp[2]
    );
    for nodes in [8, 32, 128] {
        let log2 = (nodes as f64).log2();
        let synod = convergence(System::Synod { lifeguard: true }, nodes, seeds);
        let foca = convergence(System::Foca, nodes, seeds);
        println!(
            "convergence after a 5 s partition of halves heals, n {nodes:>3}: synod {:.1} rounds (max {:.1}), foca {:.1} (max {:.1}); log2 n = {log2:.0}; synod / log2 n = {:.2}, foca / log2 n = {:.2}",
            synod.0,
            synod.1,
            foca.0,
            foca.1,
            synod.1 / log2,
            foca.1 / log2
        );
    }
    for nodes in [8, 32, 128] {
        let synod = cost(System::Synod { lifeguard: true }, nodes);
        let foca = cost(System::Foca, nodes);
        println!(
            "cost, n {nodes:>3}: per member per period: synod {:.2} messages / {:.0} bytes, foca {:.2} / {:.0}; ratio {:.2} / {:.2}",
            synod.0,
            synod.1,
            foca.0,
            foca.1,
            synod.0 / foca.0,
            synod.1 / foca.1
        );
    }
}
