//! The simulator: one seed, virtual time, an event queue, and the two phases of a run.
//!
//! A [`Simulation`] owns the nodes (built by a factory), their disks and clocks, the
//! network, the clients driven by a [`Workload`], the nemesis and the history. [`Simulation::run`]
//! processes events in `(time, sequence number)` order until the run ends:
//!
//! 1. **Safety phase**, until [`SimConfigBuilder::safety_time`] of virtual time has passed
//!    (or [`SimConfigBuilder::events_max`] events): the nemesis injects faults and the
//!    user's invariant ([`Simulation::invariant`]) is checked after every event.
//! 2. **Liveness phase**: every fault is healed (partitions, clogs, loss, duplication,
//!    reordering end; crashed nodes restart; paused nodes resume) and the user's progress
//!    condition ([`Simulation::progress`]) must become true within
//!    [`SimConfigBuilder::liveness_time_max`]. Invariants are still checked.
//!
//! The event queue is a binary heap of small `(time, seq, slot)` keys; event payloads sit in
//! a slab that is reused, so the loop does not allocate per event beyond what messages
//! themselves own.
//!
//! This file is the engine (the event loop, the nodes' calls and effects, the clients); the
//! rest of the simulator is beside it: `config.rs` (the configuration and its builder),
//! `workload.rs` (what clients ask), `faults.rs` (the nemesis's policy, scripted actions
//! and healing) and `report.rs` (what a run reports, and the view invariants see).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::hash::{Hash, Hasher};

use synod_clocks::PhysicalClock;

use crate::clock::{ClockModel, NodeClock};
use crate::disk::Disk;
use crate::fault_log::{FaultLog, FaultSource};
use crate::history::{History, OpId};
use crate::nemesis::{Counter, Coverage, FaultKind, FaultProfile};
use crate::net::{Fate, LinkConfig, Network};
use crate::node::{
    ClientId, Context, Effect, Node, NodeId, RequestId, SyncToken, TimerId, node_at, slot_of,
};
use crate::rng::{SimRng, splitmix64};
use crate::time::SimTime;
use crate::timeline::{Delivery, Recorder};
use crate::trace::TraceHasher;

mod config;
mod faults;
mod report;
mod workload;

pub use config::{CLIENTS_MAX, ConfigError, DURATION_MAX, NODES_MAX, SimConfig, SimConfigBuilder};
pub use faults::Action;
pub use report::{Failure, Phase, RunReport, View};
pub use workload::{Completion, Invocation, NoClients, Workload};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeState {
    Up,
    Paused,
    Crashed,
}

struct Slot<N: Node> {
    node: Option<N>,
    rng: SimRng,
    disk: Disk,
    clock: NodeClock,
    incarnation: u32,
    state: NodeState,
    parked: Vec<Event<N>>,
    /// A crash part-way through the node's writes is armed on its disk: the time the node
    /// stays down once it fires, in microseconds.
    crash_armed_down_us: Option<u64>,
}

enum Event<N: Node> {
    Deliver {
        from: NodeId,
        to: NodeId,
        message: N::Message,
    },
    Timer {
        node: NodeId,
        incarnation: u32,
        timer: TimerId,
    },
    Synced {
        node: NodeId,
        incarnation: u32,
        token: SyncToken,
        point: u64,
    },
    Request {
        node: NodeId,
        id: RequestId,
        request: N::Request,
    },
    Reply {
        id: RequestId,
        response: N::Response,
    },
    ClientTimeout {
        id: RequestId,
    },
    ClientNext {
        client: ClientId,
    },
    Nemesis,
    Restart {
        node: NodeId,
    },
    Resume {
        node: NodeId,
    },
    Scripted(Action),
}

impl<N: Node> fmt::Debug for Event<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Deliver { from, to, message } => write!(f, "deliver {from}->{to} {message:?}"),
            Event::Timer { node, timer, .. } => write!(f, "timer {node} {timer:?}"),
            Event::Synced { node, token, .. } => write!(f, "synced {node} {token:?}"),
            Event::Request { node, id, request } => {
                write!(
                    f,
                    "request {}#{} -> {node} {request:?}",
                    id.client(),
                    id.seq()
                )
            }
            Event::Reply { id, response } => {
                write!(f, "reply {}#{} {response:?}", id.client(), id.seq())
            }
            Event::ClientTimeout { id } => write!(f, "timeout {}#{}", id.client(), id.seq()),
            Event::ClientNext { client } => write!(f, "next {client}"),
            Event::Nemesis => f.write_str("nemesis"),
            Event::Restart { node } => write!(f, "restart {node}"),
            Event::Resume { node } => write!(f, "resume {node}"),
            Event::Scripted(action) => write!(f, "scripted {action:?}"),
        }
    }
}

impl<N: Node> Event<N> {
    fn hash_into(&self, h: &mut TraceHasher) {
        match self {
            Event::Deliver { from, to, message } => {
                h.write_u8(0);
                from.hash(h);
                to.hash(h);
                message.hash(h);
            }
            Event::Timer {
                node,
                incarnation,
                timer,
            } => {
                h.write_u8(1);
                node.hash(h);
                h.write_u32(*incarnation);
                timer.hash(h);
            }
            Event::Synced {
                node,
                incarnation,
                token,
                point,
            } => {
                h.write_u8(2);
                node.hash(h);
                h.write_u32(*incarnation);
                token.hash(h);
                h.write_u64(*point);
            }
            Event::Request { node, id, request } => {
                h.write_u8(3);
                node.hash(h);
                id.hash(h);
                request.hash(h);
            }
            Event::Reply { id, response } => {
                h.write_u8(4);
                id.hash(h);
                response.hash(h);
            }
            Event::ClientTimeout { id } => {
                h.write_u8(5);
                id.hash(h);
            }
            Event::ClientNext { client } => {
                h.write_u8(6);
                client.hash(h);
            }
            Event::Nemesis => h.write_u8(7),
            Event::Restart { node } => {
                h.write_u8(8);
                node.hash(h);
            }
            Event::Resume { node } => {
                h.write_u8(9);
                node.hash(h);
            }
            Event::Scripted(action) => {
                h.write_u8(10);
                action.hash(h);
            }
        }
    }

    /// The node a node-bound event goes to.
    fn target(&self) -> Option<NodeId> {
        match self {
            Event::Deliver { to, .. } => Some(*to),
            Event::Timer { node, .. }
            | Event::Synced { node, .. }
            | Event::Request { node, .. } => Some(*node),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Client {
    seq: u64,
    waiting: Option<(RequestId, OpId)>,
    done: bool,
}

type Check<N, I, O> = Box<dyn FnMut(&View<'_, N, I, O>) -> Result<(), String>>;
type Progress<N, I, O> = Box<dyn FnMut(&View<'_, N, I, O>) -> bool>;

/// A deterministic simulation of a cluster of `N` nodes under workload `W`.
///
/// See the [crate documentation](crate) for a walk-through.
pub struct Simulation<N: Node, W: Workload<N>> {
    config: SimConfig,
    seed: u64,
    now: SimTime,
    seq: u64,
    heap: BinaryHeap<Reverse<(u64, u64, u32)>>,
    slab: Vec<Option<Event<N>>>,
    free: Vec<u32>,
    slots: Vec<Slot<N>>,
    factory: Box<dyn FnMut(NodeId) -> N>,
    effects: Vec<Effect<N::Message, N::Response>>,
    net: Network,
    net_rng: SimRng,
    nemesis_rng: SimRng,
    client_rng: SimRng,
    disk_rng: SimRng,
    clients: Vec<Client>,
    workload: W,
    history: History<W::Input, W::Output>,
    profile: FaultProfile,
    coverage: Coverage,
    faults: FaultLog,
    hasher: TraceHasher,
    events: u64,
    phase: Phase,
    healed_at: Option<SimTime>,
    invariant: Option<Check<N, W::Input, W::Output>>,
    progress: Option<Progress<N, W::Input, W::Output>>,
    trace: VecDeque<String>,
    recorder: Option<Recorder<N>>,
}

impl<N: Node, W: Workload<N>> fmt::Debug for Simulation<N, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulation")
            .field("seed", &self.seed)
            .field("now", &self.now)
            .field("events", &self.events)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl<N: Node, W: Workload<N>> Simulation<N, W> {
    /// A simulation of `config.nodes()` nodes built by `factory` (called again for each
    /// restart), with clients driven by `workload`, all randomness drawn from `seed`.
    pub fn new(
        config: SimConfig,
        seed: u64,
        factory: impl FnMut(NodeId) -> N + 'static,
        workload: W,
    ) -> Self {
        let mut root = seed;
        let mut derive = || SimRng::new(splitmix64(&mut root));
        let mut nemesis_rng = derive();
        let net_rng = derive();
        let client_rng = derive();
        let disk_rng = derive();
        let mut node_rng = derive();
        let mut disk_seeds = derive();
        let profile = if config.nemesis.enabled() {
            config.nemesis.draw(&mut nemesis_rng)
        } else {
            FaultProfile::none()
        };
        let clock_faults =
            profile.is_enabled(FaultKind::ClockJump) || profile.is_enabled(FaultKind::ClockDrift);
        let slots = (0..config.nodes)
            .map(|_| {
                let offset = if clock_faults {
                    let max = profile.clock_offset_max_us;
                    nemesis_rng.between(0, 2 * max) as i64 - max as i64
                } else {
                    0
                };
                Slot {
                    node: None,
                    rng: node_rng.fork(),
                    disk: Disk::new(disk_seeds.next_u64()),
                    clock: NodeClock::new(offset),
                    incarnation: 0,
                    state: NodeState::Crashed,
                    parked: Vec::new(),
                    crash_armed_down_us: None,
                }
            })
            .collect();
        let clients = vec![
            Client {
                seq: 0,
                waiting: None,
                done: false,
            };
            config.clients
        ];
        let faults = FaultLog::new(config.fault_log_max);
        Simulation {
            net: Network::new(config.nodes, config.link, &config.link_overrides),
            config,
            seed,
            now: SimTime::ZERO,
            seq: 0,
            heap: BinaryHeap::with_capacity(1024),
            slab: Vec::with_capacity(1024),
            free: Vec::with_capacity(1024),
            slots,
            factory: Box::new(factory),
            effects: Vec::with_capacity(64),
            net_rng,
            nemesis_rng,
            client_rng,
            disk_rng,
            clients,
            workload,
            history: History::new(),
            profile,
            coverage: Coverage::default(),
            faults,
            hasher: TraceHasher::new(),
            events: 0,
            phase: Phase::Safety,
            healed_at: None,
            invariant: None,
            progress: None,
            trace: VecDeque::new(),
            recorder: None,
        }
    }

    /// Sets the invariant checked after every event; an `Err` fails the run.
    #[must_use]
    pub fn invariant(
        mut self,
        check: impl FnMut(&View<'_, N, W::Input, W::Output>) -> Result<(), String> + 'static,
    ) -> Self {
        self.invariant = Some(Box::new(check));
        self
    }

    /// Sets the progress condition of the liveness phase. Without one, the run ends with
    /// the safety phase.
    #[must_use]
    pub fn progress(
        mut self,
        condition: impl FnMut(&View<'_, N, W::Input, W::Output>) -> bool + 'static,
    ) -> Self {
        self.progress = Some(Box::new(condition));
        self
    }

    /// Schedules `action` at virtual time `at` (see [`Action`]). Actions for nodes out of
    /// range, and partitions whose [`Cut`](crate::Cut) is for another number of nodes, are ignored.
    #[must_use]
    pub fn schedule(mut self, at: SimTime, action: Action) -> Self {
        self.push(at, Event::Scripted(action));
        self
    }

    /// Records the run for a picture of it: each node's role and marks after every event,
    /// and every message sent (see [`crate::timeline`]). The report carries the recording
    /// ([`RunReport::recording`]). Recording changes nothing in the run.
    #[must_use]
    pub fn record(mut self, recorder: Recorder<N>) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// This run's fault profile.
    #[must_use]
    pub fn profile(&self) -> &FaultProfile {
        &self.profile
    }

    fn push(&mut self, at: SimTime, event: Event<N>) {
        let slot = match self.free.pop() {
            Some(s) => {
                self.slab[s as usize] = Some(event);
                s
            }
            None => {
                self.slab.push(Some(event));
                u32::try_from(self.slab.len() - 1).expect("fewer than 2^32 pending events")
            }
        };
        self.seq += 1;
        self.heap.push(Reverse((at.as_micros(), self.seq, slot)));
    }

    fn after(&self, us: u64) -> SimTime {
        SimTime::from_micros(self.now.as_micros().saturating_add(us))
    }

    /// Runs to the end and reports.
    pub fn run(mut self) -> RunReport<W::Input, W::Output> {
        let failure = self.run_loop();
        self.history.close();
        RunReport {
            seed: self.seed,
            trace_hash: self.hasher.finish(),
            events: self.events,
            end_time: self.now,
            healed_at: self.healed_at,
            profile: self.profile,
            coverage: self.coverage,
            faults: self.faults,
            history: self.history,
            failure,
            trace: self.trace.into_iter().collect(),
            recording: self.recorder.map(Recorder::finish),
        }
    }

    fn run_loop(&mut self) -> Option<Failure> {
        for i in 0..self.config.nodes {
            self.start_node(node_at(i));
        }
        for c in 0..self.config.clients {
            let t = self.client_rng.between(0, self.config.think_time_max_us);
            self.push(
                SimTime::from_micros(t),
                Event::ClientNext {
                    client: ClientId::new(c as u32),
                },
            );
        }
        if self.config.nemesis.enabled() {
            let t = self
                .nemesis_rng
                .between(0, 2 * self.profile.interval_mean_us);
            self.push(SimTime::from_micros(t), Event::Nemesis);
        }
        self.observe();
        let safety_end = SimTime::from_micros(self.config.safety_time_us);
        let mut deadline = SimTime::MAX;
        loop {
            let next_time = self
                .heap
                .peek()
                .map(|Reverse((t, _, _))| SimTime::from_micros(*t));
            if self.phase == Phase::Safety
                && (next_time.is_none_or(|t| t >= safety_end)
                    || self.events >= self.config.events_max)
            {
                // Without a progress condition the run ends with the safety phase.
                self.progress.as_ref()?;
                if next_time.is_some() && self.events < self.config.events_max {
                    self.now = self.now.max(safety_end);
                }
                self.heal();
                deadline = self.after(self.config.liveness_time_max_us);
                match self.check_after_event() {
                    After::Continue => continue,
                    After::Done => return None,
                    After::Fail(f) => return Some(f),
                }
            }
            let Some(Reverse((t, _, slot))) = self.heap.pop() else {
                return Some(self.no_progress(deadline));
            };
            if SimTime::from_micros(t) > deadline {
                self.now = deadline;
                return Some(self.no_progress(deadline));
            }
            let event = self.slab[slot as usize]
                .take()
                .expect("queued slot holds an event");
            self.free.push(slot);
            self.now = SimTime::from_micros(t);
            self.events += 1;
            self.hasher.write_u64(t);
            event.hash_into(&mut self.hasher);
            if self.config.trace_lines_max > 0 {
                if self.trace.len() == self.config.trace_lines_max {
                    self.trace.pop_front();
                }
                self.trace.push_back(format!("{} {event:?}", self.now));
            }
            self.dispatch(event);
            self.observe();
            match self.check_after_event() {
                After::Continue => {}
                After::Done => return None,
                After::Fail(f) => return Some(f),
            }
        }
    }

    /// Hands every node, as it is now, to the recorder, if the run records.
    fn observe(&mut self) {
        if let Some(recorder) = self.recorder.as_mut() {
            let nodes = self
                .slots
                .iter()
                .enumerate()
                .map(|(i, slot)| (node_at(i), slot.node.as_ref()));
            recorder.observe(self.now, nodes);
        }
    }

    fn no_progress(&self, deadline: SimTime) -> Failure {
        Failure::NoProgress {
            healed_at: self.healed_at.unwrap_or(self.now),
            deadline,
        }
    }

    fn view(&self) -> View<'_, N, W::Input, W::Output> {
        View {
            slots: &self.slots,
            history: &self.history,
            now: self.now,
            phase: self.phase,
            healed_at: self.healed_at,
        }
    }

    /// Runs the invariant, and in the liveness phase the progress condition.
    fn check_after_event(&mut self) -> After {
        if let Some(mut inv) = self.invariant.take() {
            let result = inv(&self.view());
            self.invariant = Some(inv);
            if let Err(message) = result {
                return After::Fail(Failure::Invariant {
                    at: self.now,
                    event: self.events,
                    message,
                });
            }
        }
        if self.phase == Phase::Liveness
            && let Some(mut progress) = self.progress.take()
        {
            let met = progress(&self.view());
            self.progress = Some(progress);
            if met {
                return After::Done;
            }
        }
        After::Continue
    }

    fn dispatch(&mut self, event: Event<N>) {
        // A partition also kills messages in flight: check the link again on arrival.
        if let Event::Deliver { from, to, .. } = &event
            && self.net.cut.is_cut(*from, *to)
        {
            self.coverage.bump(Counter::MessageCut);
            return;
        }
        if let Some(node) = event.target() {
            self.deliver_to_node(node, event);
            return;
        }
        match event {
            Event::Reply { id, response } => self.client_reply(id, &response),
            Event::ClientTimeout { id } => {
                let client = &mut self.clients[id.client().get() as usize];
                if let Some((waiting, op)) = client.waiting
                    && waiting == id
                {
                    client.waiting = None;
                    self.history
                        .unknown(op)
                        .expect("a waiting client's operation is pending");
                    self.coverage.bump(Counter::ClientTimeout);
                    self.schedule_client(id.client());
                }
            }
            Event::ClientNext { client } => self.client_next(client),
            Event::Nemesis => self.nemesis(),
            Event::Restart { node } => {
                if self.slots[slot_of(node)].state == NodeState::Crashed {
                    self.restart(node, FaultSource::Nemesis);
                }
            }
            Event::Resume { node } => self.resume(node, FaultSource::Nemesis),
            Event::Scripted(action) => self.scripted(action),
            Event::Deliver { .. }
            | Event::Timer { .. }
            | Event::Synced { .. }
            | Event::Request { .. } => {
                unreachable!("node events are routed above")
            }
        }
    }

    fn deliver_to_node(&mut self, id: NodeId, event: Event<N>) {
        let slot = &mut self.slots[slot_of(id)];
        match slot.state {
            NodeState::Crashed => return,
            NodeState::Paused => {
                slot.parked.push(event);
                return;
            }
            NodeState::Up => {}
        }
        let nodes = self.config.nodes;
        let Some(node) = slot.node.as_mut() else {
            return;
        };
        let clock = slot.clock.at(self.now);
        let local = SimTime::from_micros(clock.wall().as_nanos() / 1_000);
        // What the node reads from its clock is an input too.
        self.hasher.write_u64(local.as_micros());
        let mut ctx = Context {
            id,
            nodes,
            now: local,
            clock,
            rng: &mut slot.rng,
            disk: &mut slot.disk,
            effects: &mut self.effects,
        };
        match event {
            Event::Deliver { from, message, .. } => node.on_message(&mut ctx, from, message),
            Event::Timer {
                incarnation, timer, ..
            } => {
                if incarnation != slot.incarnation {
                    return;
                }
                node.on_timer(&mut ctx, timer);
            }
            Event::Synced {
                incarnation,
                token,
                point,
                ..
            } => {
                if incarnation != slot.incarnation {
                    return;
                }
                // The disk's bookkeeping cannot fail: only a node's own writes meet a full
                // disk, and its capacity is lifted for the sync's undo and redo steps.
                if ctx.disk.take_failed_sync() {
                    ctx.disk
                        .fail_through(point)
                        .expect("simulated disk bookkeeping");
                    node.on_sync_failed(&mut ctx, token);
                } else {
                    ctx.disk
                        .sync_through(point)
                        .expect("simulated disk bookkeeping");
                    node.on_synced(&mut ctx, token);
                }
            }
            Event::Request {
                id: req, request, ..
            } => node.on_request(&mut ctx, req, request),
            _ => unreachable!("only node events reach a node"),
        }
        self.apply_effects(id);
        self.crash_if_halted(id);
    }

    fn start_node(&mut self, id: NodeId) {
        let node = (self.factory)(id);
        let nodes = self.config.nodes;
        let slot = &mut self.slots[slot_of(id)];
        slot.state = NodeState::Up;
        // What survived on the disk is the node's input at a start: hash it (starts are
        // rare, so copying the files here costs little).
        self.hasher.write_u8(TRACE_START);
        id.hash(&mut self.hasher);
        for name in slot.disk.file_names() {
            name.hash(&mut self.hasher);
            slot.disk.read(&name).hash(&mut self.hasher);
        }
        let node = slot.node.insert(node);
        let clock = slot.clock.at(self.now);
        let local = SimTime::from_micros(clock.wall().as_nanos() / 1_000);
        // What the node reads from its clock is an input too.
        self.hasher.write_u64(local.as_micros());
        let mut ctx = Context {
            id,
            nodes,
            now: local,
            clock,
            rng: &mut slot.rng,
            disk: &mut slot.disk,
            effects: &mut self.effects,
        };
        node.on_start(&mut ctx);
        self.apply_effects(id);
        self.crash_if_halted(id);
    }

    fn apply_effects(&mut self, from: NodeId) {
        let mut effects = std::mem::take(&mut self.effects);
        for effect in effects.drain(..) {
            match effect {
                Effect::Send { to, message } => {
                    if slot_of(to) >= self.config.nodes {
                        continue;
                    }
                    let fate = self.net.route(self.now, from, to, &mut self.net_rng);
                    if let Some(recorder) = self.recorder.as_mut() {
                        let delivery = match fate {
                            Fate::Cut => Delivery::Cut,
                            Fate::Lost => Delivery::Lost,
                            Fate::Deliver { at, .. } => Delivery::At(at),
                        };
                        recorder.message(self.now, from, to, &message, delivery);
                        if let Fate::Deliver {
                            duplicate_at: Some(dup),
                            ..
                        } = fate
                        {
                            recorder.message(self.now, from, to, &message, Delivery::At(dup));
                        }
                    }
                    match fate {
                        Fate::Cut => self.coverage.bump(Counter::MessageCut),
                        Fate::Lost => self.coverage.bump(Counter::MessageLost),
                        Fate::Deliver {
                            at,
                            duplicate_at,
                            reordered,
                        } => {
                            if reordered {
                                self.coverage.bump(Counter::MessageReordered);
                            }
                            if let Some(dup) = duplicate_at {
                                self.coverage.bump(Counter::MessageDuplicated);
                                self.push(
                                    dup,
                                    Event::Deliver {
                                        from,
                                        to,
                                        message: message.clone(),
                                    },
                                );
                            }
                            self.push(at, Event::Deliver { from, to, message });
                        }
                    }
                }
                Effect::Timer { after, timer } => {
                    let slot = &self.slots[slot_of(from)];
                    let span = slot.clock.true_span(after);
                    let incarnation = slot.incarnation;
                    let at = self.now.saturating_add(span);
                    self.push(
                        at,
                        Event::Timer {
                            node: from,
                            incarnation,
                            timer,
                        },
                    );
                }
                Effect::Reply { id, response } => {
                    let link = self.config.client_link;
                    if self.link_lost(&link) {
                        self.coverage.bump(Counter::MessageLost);
                        continue;
                    }
                    let delay = link.delay().sample_us(&mut self.net_rng);
                    let at = self.after(delay);
                    self.push(at, Event::Reply { id, response });
                }
                Effect::Sync { token, point } => {
                    let incarnation = self.slots[slot_of(from)].incarnation;
                    let delay = self.config.sync_delay.sample_us(&mut self.disk_rng);
                    let at = self.after(delay);
                    self.push(
                        at,
                        Event::Synced {
                            node: from,
                            incarnation,
                            token,
                            point,
                        },
                    );
                }
            }
        }
        self.effects = effects;
    }

    fn link_lost(&mut self, link: &LinkConfig) -> bool {
        self.net_rng.chance(link.loss()) || self.net_rng.chance(self.net.extra_loss)
    }

    fn schedule_client(&mut self, client: ClientId) {
        let think = self.client_rng.between(0, self.config.think_time_max_us);
        let at = self.after(think);
        self.push(at, Event::ClientNext { client });
    }

    fn client_next(&mut self, client: ClientId) {
        let c = &mut self.clients[client.get() as usize];
        if c.done || c.waiting.is_some() {
            return;
        }
        let Some(inv) = self
            .workload
            .invoke(client, self.config.nodes, &mut self.client_rng)
        else {
            c.done = true;
            return;
        };
        let id = RequestId::new(client, c.seq);
        c.seq += 1;
        let op = self.history.invoke(client, inv.input, self.now);
        c.waiting = Some((id, op));
        let timeout = self.after(self.config.client_timeout_us);
        self.push(timeout, Event::ClientTimeout { id });
        let link = self.config.client_link;
        if slot_of(inv.node) >= self.config.nodes || self.link_lost(&link) {
            self.coverage.bump(Counter::MessageLost);
            return;
        }
        let delay = link.delay().sample_us(&mut self.net_rng);
        let at = self.after(delay);
        self.push(
            at,
            Event::Request {
                node: inv.node,
                id,
                request: inv.request,
            },
        );
    }

    fn client_reply(&mut self, id: RequestId, response: &N::Response) {
        let client = id.client();
        let Some(c) = self.clients.get_mut(client.get() as usize) else {
            return;
        };
        let Some((waiting, op)) = c.waiting else {
            return;
        };
        if waiting != id {
            return;
        }
        c.waiting = None;
        let input = &self.history.operations()[op.index()].input;
        let result = match self.workload.complete(client, input, response) {
            Completion::Ok(out) => self.history.ok(op, out, self.now),
            Completion::Fail => self.history.fail(op, self.now),
            Completion::Unknown => self.history.unknown(op),
        };
        result.expect("a waiting client's operation is pending");
        self.schedule_client(client);
    }
}

/// Tags of what the trace hash records besides events (events use 0 to 10).
const TRACE_START: u8 = 11;
const TRACE_CRASH: u8 = 12;
const TRACE_NEMESIS: u8 = 13;

enum After {
    Continue,
    Done,
    Fail(Failure),
}
