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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use crate::check::{HistoryChecker, Verdict};
use synod_clocks::PhysicalClock;

use crate::clock::{ClockModel, NodeClock};
use crate::disk::{CrashMode, Disk};
use crate::fault_log::{FAULT_LOG_ENTRIES_DEFAULT, Fault, FaultLog, FaultSource};
use crate::history::{History, OpId};
use crate::nemesis::{Counter, Coverage, FaultKind, FaultProfile, NemesisConfig};
use crate::net::{Cut, DelayDistribution, Fate, LinkConfig, Network, PartitionShape};
use crate::node::{
    ClientId, Context, Effect, Node, NodeId, RequestId, SyncToken, TimerId, node_at, slot_of,
};
use crate::rng::{Probability, SimRng, splitmix64};
use crate::time::{SimTime, duration_micros};
use crate::trace::TraceHasher;

/// One request a client sends, and how the history records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation<R, I> {
    /// The node the request goes to. A node outside the cluster never receives it: the
    /// request counts as lost (`msg.lost`) and the operation ends unknown at the timeout.
    pub node: NodeId,
    /// The request itself.
    pub request: R,
    /// The operation, as the history records it.
    pub input: I,
}

/// How a response completes an operation in the history.
///
/// Which variant a response maps to is a claim about the protocol, and the checkers trust
/// it: see the crate documentation, "Checking histories".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion<O> {
    /// The operation succeeded with this output.
    Ok(O),
    /// The operation certainly had no effect and never will: only for errors the protocol
    /// guarantees are final (a request refused before it was proposed, "not the leader"
    /// from a node that never accepted it). The linearizability checker leaves it out.
    Fail,
    /// The answer does not say whether the operation took effect, or it may still take
    /// effect later (a timeout inside the cluster, a leader that lost its term with the
    /// entry in its log): recorded as unknown, exactly like a request that got no answer.
    Unknown,
}

/// The clients' behaviour: what they ask for, and what the answers mean.
///
/// Each client has at most one request outstanding. When a client is idle (at the start,
/// and a random think time after each answer or timeout) the simulator calls
/// [`Workload::invoke`]; when the answer arrives it calls [`Workload::complete`]. A request
/// with no answer within [`SimConfigBuilder::client_timeout`] is recorded as unknown.
pub trait Workload<N: Node> {
    /// An operation's input, as recorded in the history.
    type Input: Clone + fmt::Debug;
    /// An operation's output, as recorded in the history.
    type Output: Clone + fmt::Debug;

    /// The next request of `client` in a cluster of `nodes` nodes, or `None` if this
    /// client is done.
    fn invoke(
        &mut self,
        client: ClientId,
        nodes: usize,
        rng: &mut SimRng,
    ) -> Option<Invocation<N::Request, Self::Input>>;

    /// What `response` to the operation `input` means.
    fn complete(
        &mut self,
        client: ClientId,
        input: &Self::Input,
        response: &N::Response,
    ) -> Completion<Self::Output>;
}

/// A fault scheduled by hand with [`Simulation::schedule`], for scenario tests ("isolate
/// node 2 at 100 ms, heal at 300 ms"). Scheduled actions run in the safety phase, alongside
/// the nemesis (disable it with [`NemesisConfig::disabled`] for a pure script); healing at
/// the start of the liveness phase undoes them like any other fault.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// Replace the network's cut links with these.
    Partition(Cut),
    /// Reconnect every link (cuts only; clogs, loss and the rest stay).
    HealPartition,
    /// Hold messages on the link from `from` to `to` for `duration`.
    Clog {
        /// The sending node.
        from: NodeId,
        /// The receiving node.
        to: NodeId,
        /// How long the clog lasts.
        duration: Duration,
    },
    /// Crash a node, treating its unsynced writes as `CrashMode` says. It stays down until
    /// an [`Action::Restart`] or the liveness phase.
    Crash(NodeId, CrashMode),
    /// Restart a crashed node.
    Restart(NodeId),
    /// Pause a node until an [`Action::Resume`] or the liveness phase.
    Pause(NodeId),
    /// Resume a paused node.
    Resume(NodeId),
    /// Step a node's wall clock by this many microseconds (negative: back).
    ClockJump(NodeId, i64),
    /// Set a node's clock drift, in parts per million.
    ClockDrift(NodeId, i32),
    /// The node's next sync to complete fails, as a failed `fsync` can: the writes it
    /// covered are dropped from the page cache and are not durable, and the node gets
    /// [`Node::on_sync_failed`] instead of [`Node::on_synced`].
    FailNextSync(NodeId),
    /// The node's disk is full from now on: its files may hold no more bytes than they
    /// hold now, and a write or length change that would grow them fails with
    /// `io::ErrorKind::StorageFull` (`ENOSPC`) and changes nothing. It lasts until
    /// [`Action::FreeDisk`] or the liveness phase, across restarts.
    FillDisk(NodeId),
    /// Ends [`Action::FillDisk`].
    FreeDisk(NodeId),
}

/// A workload that sends nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoClients;

impl<N: Node> Workload<N> for NoClients {
    type Input = ();
    type Output = ();

    fn invoke(
        &mut self,
        _: ClientId,
        _: usize,
        _: &mut SimRng,
    ) -> Option<Invocation<N::Request, ()>> {
        None
    }

    fn complete(&mut self, _: ClientId, _: &(), _: &N::Response) -> Completion<()> {
        Completion::Fail
    }
}

/// An invalid [`SimConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The node count is 0 or above [`NODES_MAX`].
    Nodes(usize),
    /// The client count is above [`CLIENTS_MAX`].
    Clients(usize),
    /// A duration that must be positive is zero.
    ZeroDuration(&'static str),
    /// [`SimConfigBuilder::link_between`] names a node outside the cluster.
    LinkNode(NodeId),
    /// A duration (or delay bound) is above [`DURATION_MAX`].
    TooLong {
        /// The setting, as named by its builder method.
        what: &'static str,
        /// The value given.
        value: Duration,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Nodes(n) => write!(f, "node count {n} is not in 1..={NODES_MAX}"),
            ConfigError::Clients(n) => write!(f, "client count {n} is above {CLIENTS_MAX}"),
            ConfigError::ZeroDuration(what) => write!(f, "{what} must be positive"),
            ConfigError::LinkNode(id) => write!(f, "link_between names {id}, not in the cluster"),
            ConfigError::TooLong { what, value } => {
                write!(
                    f,
                    "{what} of {value:?} is above the limit of {DURATION_MAX:?}"
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// The most nodes a simulation may have.
pub const NODES_MAX: usize = 256;
/// The most clients a simulation may have.
pub const CLIENTS_MAX: usize = 4096;
/// The longest duration any setting of a simulation may have (a million seconds of virtual
/// time, about 11.6 days): far beyond any useful run, and small enough that sums and
/// doublings of settings never overflow.
pub const DURATION_MAX: Duration = Duration::from_secs(1_000_000);

/// A simulation's configuration, validated once by [`SimConfigBuilder::build`].
#[derive(Debug, Clone)]
pub struct SimConfig {
    nodes: usize,
    clients: usize,
    safety_time_us: u64,
    events_max: u64,
    liveness_time_max_us: u64,
    client_timeout_us: u64,
    think_time_max_us: u64,
    link: LinkConfig,
    link_overrides: Vec<(NodeId, NodeId, LinkConfig)>,
    client_link: LinkConfig,
    sync_delay: DelayDistribution,
    nemesis: NemesisConfig,
    trace_lines_max: usize,
    fault_log_max: usize,
}

impl SimConfig {
    /// A builder for `nodes` nodes, with defaults for everything else.
    #[must_use]
    pub fn builder(nodes: usize) -> SimConfigBuilder {
        SimConfigBuilder {
            config: SimConfig {
                nodes,
                clients: 3,
                safety_time_us: 1_000_000,
                events_max: u64::MAX,
                liveness_time_max_us: 2_000_000,
                client_timeout_us: 100_000,
                think_time_max_us: 1_000,
                link: LinkConfig::default(),
                link_overrides: Vec::new(),
                client_link: LinkConfig::default(),
                sync_delay: DelayDistribution::uniform(
                    Duration::from_micros(100),
                    Duration::from_millis(2),
                ),
                nemesis: NemesisConfig::default(),
                trace_lines_max: 0,
                fault_log_max: FAULT_LOG_ENTRIES_DEFAULT,
            },
        }
    }

    /// The number of nodes.
    #[must_use]
    pub fn nodes(&self) -> usize {
        self.nodes
    }
}

/// Builds a [`SimConfig`].
#[derive(Debug, Clone)]
pub struct SimConfigBuilder {
    config: SimConfig,
}

impl SimConfigBuilder {
    /// The number of clients (default 3).
    #[must_use]
    pub fn clients(mut self, n: usize) -> Self {
        self.config.clients = n;
        self
    }

    /// How long the safety phase lasts in virtual time (default 1 s).
    #[must_use]
    pub fn safety_time(mut self, d: Duration) -> Self {
        self.config.safety_time_us = duration_micros(d);
        self
    }

    /// The most events the safety phase processes (default unlimited).
    #[must_use]
    pub fn events_max(mut self, n: u64) -> Self {
        self.config.events_max = n;
        self
    }

    /// How long after healing the progress condition may take (default 2 s).
    #[must_use]
    pub fn liveness_time_max(mut self, d: Duration) -> Self {
        self.config.liveness_time_max_us = duration_micros(d);
        self
    }

    /// How long a client waits for an answer before recording the operation as unknown
    /// (default 100 ms).
    #[must_use]
    pub fn client_timeout(mut self, d: Duration) -> Self {
        self.config.client_timeout_us = duration_micros(d);
        self
    }

    /// The longest pause of a client between operations (default 1 ms).
    #[must_use]
    pub fn think_time_max(mut self, d: Duration) -> Self {
        self.config.think_time_max_us = duration_micros(d);
        self
    }

    /// Every node-to-node link's behaviour without faults (default [`LinkConfig::default`]),
    /// except the links given their own with [`SimConfigBuilder::link_between`].
    #[must_use]
    pub fn link(mut self, link: LinkConfig) -> Self {
        self.config.link = link;
        self
    }

    /// The link from `from` to `to` (one direction) behaves as `link` instead: a slow or
    /// lossy path, a remote data centre. A later call for the same link replaces an
    /// earlier one.
    #[must_use]
    pub fn link_between(mut self, from: NodeId, to: NodeId, link: LinkConfig) -> Self {
        self.config
            .link_overrides
            .retain(|&(f, t, _)| (f, t) != (from, to));
        self.config.link_overrides.push((from, to, link));
        self
    }

    /// The client-to-node links (default [`LinkConfig::default`]). Partitions do not
    /// apply to them; loss does.
    #[must_use]
    pub fn client_link(mut self, link: LinkConfig) -> Self {
        self.config.client_link = link;
        self
    }

    /// How long a disk sync takes (default 100 microseconds to 2 ms).
    #[must_use]
    pub fn sync_delay(mut self, delay: DelayDistribution) -> Self {
        self.config.sync_delay = delay;
        self
    }

    /// Links and disks of one data centre, as the project's simulations use them: node links
    /// of 0.1 to 3 ms with 2% of messages taking up to 30 ms more, client links of 10 to
    /// 200 microseconds, syncs of 0.1 to 5 ms. Sets [`link`](Self::link),
    /// [`client_link`](Self::client_link) and [`sync_delay`](Self::sync_delay).
    #[must_use]
    pub fn data_centre(self) -> Self {
        self.link(LinkConfig::new(
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
    }

    /// The nemesis (default [`NemesisConfig::default`]: every fault, swarm testing).
    #[must_use]
    pub fn nemesis(mut self, nemesis: NemesisConfig) -> Self {
        self.config.nemesis = nemesis;
        self
    }

    /// Keep the last `lines` processed events as text in the report (default 0: none).
    #[must_use]
    pub fn trace_lines_max(mut self, lines: usize) -> Self {
        self.config.trace_lines_max = lines;
        self
    }

    /// Keep at most `entries` faults in [`RunReport::faults`] (default
    /// [`FAULT_LOG_ENTRIES_DEFAULT`], 4096; 0 keeps none). Past the cap the oldest entries
    /// are dropped and counted. An entry is a few dozen bytes, plus `nodes * nodes` bytes
    /// for a partition's cut.
    #[must_use]
    pub fn fault_log_max(mut self, entries: usize) -> Self {
        self.config.fault_log_max = entries;
        self
    }

    /// The configuration.
    ///
    /// # Errors
    ///
    /// If the node count is not in `1..=NODES_MAX`, a link given with
    /// [`SimConfigBuilder::link_between`] names a node outside the cluster, the client
    /// count is above `CLIENTS_MAX`, the safety time, liveness bound or client timeout is
    /// zero, or any duration (including delay bounds of the links and disks, and the nemesis's
    /// settings) is above [`DURATION_MAX`].
    pub fn build(self) -> Result<SimConfig, ConfigError> {
        let c = self.config;
        let limit = duration_micros(DURATION_MAX);
        let durations = [
            ("safety_time", c.safety_time_us),
            ("liveness_time_max", c.liveness_time_max_us),
            ("client_timeout", c.client_timeout_us),
            ("think_time_max", c.think_time_max_us),
            ("link delay", c.link.delay().bound_us()),
            ("client_link delay", c.client_link.delay().bound_us()),
            ("sync_delay", c.sync_delay.bound_us()),
        ];
        let overrides = c
            .link_overrides
            .iter()
            .map(|(_, _, link)| ("link_between delay", link.delay().bound_us()));
        for (what, us) in durations
            .into_iter()
            .chain(overrides)
            .chain(c.nemesis.durations_us())
        {
            if us > limit {
                return Err(ConfigError::TooLong {
                    what,
                    value: Duration::from_micros(us),
                });
            }
        }
        if c.nodes == 0 || c.nodes > NODES_MAX {
            return Err(ConfigError::Nodes(c.nodes));
        }
        if let Some(&(from, to, _)) = c
            .link_overrides
            .iter()
            .find(|(f, t, _)| slot_of(*f) >= c.nodes || slot_of(*t) >= c.nodes)
        {
            let outside = if slot_of(from) >= c.nodes { from } else { to };
            return Err(ConfigError::LinkNode(outside));
        }
        if c.clients > CLIENTS_MAX {
            return Err(ConfigError::Clients(c.clients));
        }
        if c.safety_time_us == 0 {
            return Err(ConfigError::ZeroDuration("safety_time"));
        }
        if c.liveness_time_max_us == 0 {
            return Err(ConfigError::ZeroDuration("liveness_time_max"));
        }
        if c.client_timeout_us == 0 {
            return Err(ConfigError::ZeroDuration("client_timeout"));
        }
        Ok(c)
    }
}

/// The phase a run is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Faults on, invariants checked after every event.
    Safety,
    /// Faults healed, progress required within a bound.
    Liveness,
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The invariant returned an error after an event.
    Invariant {
        /// The virtual time of the event.
        at: SimTime,
        /// The event's number in the run (from 1).
        event: u64,
        /// The invariant's message.
        message: String,
    },
    /// The progress condition did not hold within the bound after healing.
    NoProgress {
        /// When the faults were healed.
        healed_at: SimTime,
        /// The bound that passed.
        deadline: SimTime,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Invariant { at, event, message } => {
                write!(f, "invariant violated at {at} (event {event}): {message}")
            }
            Failure::NoProgress {
                healed_at,
                deadline,
            } => write!(
                f,
                "no progress: faults healed at {healed_at}, progress condition still false at {deadline}"
            ),
        }
    }
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct RunReport<I, O> {
    /// The run's seed.
    pub seed: u64,
    /// The digest of the run: every processed event with its time and payload, the clock
    /// readings and disk contents nodes were given, crashes and the nemesis's choices.
    /// Equal seeds give equal hashes.
    pub trace_hash: u64,
    /// How many events were processed.
    pub events: u64,
    /// The virtual time when the run ended.
    pub end_time: SimTime,
    /// When the liveness phase began, if it did.
    pub healed_at: Option<SimTime>,
    /// The faults enabled in this run.
    pub profile: FaultProfile,
    /// What fired.
    pub coverage: Coverage,
    /// Every fault applied, in order, with its virtual time and details: the run's fault
    /// schedule (bounded by [`SimConfigBuilder::fault_log_max`]). Not part of the trace
    /// hash.
    pub faults: FaultLog,
    /// The client operations.
    pub history: History<I, O>,
    /// Why the run failed, if it did.
    pub failure: Option<Failure>,
    /// The last processed events as text, if [`SimConfigBuilder::trace_lines_max`] asked
    /// for them.
    pub trace: Vec<String>,
}

impl<I, O> RunReport<I, O> {
    /// The verdict on this run: a [`Verdict::Violation`] if the run failed (an invariant
    /// or the progress condition), otherwise what `checker` says of the history, with the
    /// checker's name in front of the reason. Unlike [`RunReport::check`], it keeps
    /// [`Verdict::GaveUp`] apart from a violation.
    pub fn verdict(&self, checker: &mut dyn HistoryChecker<I, O>) -> Verdict {
        if let Some(f) = &self.failure {
            return Verdict::Violation(f.to_string());
        }
        match checker.check_history(&self.history) {
            Verdict::Pass => Verdict::Pass,
            Verdict::Violation(why) => Verdict::Violation(format!("{}: {why}", checker.name())),
            Verdict::GaveUp(why) => Verdict::GaveUp(format!("{}: {why}", checker.name())),
        }
    }

    /// Ok if the run did not fail and `checker` passes its history; otherwise the reason.
    /// A checker that gave up is an error too (its text contains "gave up"); use
    /// [`RunReport::verdict`] to tell it from a violation.
    ///
    /// # Errors
    ///
    /// The run's [`Failure`], or the checker's verdict if it is not a pass.
    pub fn check(&self, checker: &mut dyn HistoryChecker<I, O>) -> Result<(), String> {
        if let Some(f) = &self.failure {
            return Err(f.to_string());
        }
        match checker.check_history(&self.history) {
            Verdict::Pass => Ok(()),
            v => Err(format!("{}: {v}", checker.name())),
        }
    }
}

/// What invariants and progress conditions can see: the nodes, the history, the time.
pub struct View<'a, N: Node, I, O> {
    slots: &'a [Slot<N>],
    history: &'a History<I, O>,
    now: SimTime,
    phase: Phase,
    healed_at: Option<SimTime>,
}

impl<N: Node, I, O> fmt::Debug for View<'_, N, I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("View")
            .field("now", &self.now)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl<'a, N: Node, I, O> View<'a, N, I, O> {
    /// Node `id`, or `None` if it is crashed (or out of range).
    #[must_use]
    pub fn node(&self, id: NodeId) -> Option<&'a N> {
        self.slots.get(slot_of(id)).and_then(|s| s.node.as_ref())
    }

    /// Every node that is not crashed, with its id.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &'a N)> + 'a {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.node.as_ref().map(|n| (node_at(i), n)))
    }

    /// Node `id`'s disk (crashed nodes keep theirs).
    #[must_use]
    pub fn disk(&self, id: NodeId) -> Option<&'a Disk> {
        self.slots.get(slot_of(id)).map(|s| &s.disk)
    }

    /// Whether node `id` is paused.
    #[must_use]
    pub fn is_paused(&self, id: NodeId) -> bool {
        self.slots
            .get(slot_of(id))
            .is_some_and(|s| s.state == NodeState::Paused)
    }

    /// The history so far.
    #[must_use]
    pub fn history(&self) -> &'a History<I, O> {
        self.history
    }

    /// True virtual time.
    #[must_use]
    pub fn now(&self) -> SimTime {
        self.now
    }

    /// The current phase.
    #[must_use]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// When the faults were healed (the liveness phase began), if they were.
    #[must_use]
    pub fn healed_at(&self) -> Option<SimTime> {
        self.healed_at
    }
}

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
    /// How many of the next sync completions fail ([`Action::FailNextSync`]).
    failing_syncs: u32,
    state: NodeState,
    parked: Vec<Event<N>>,
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
                    failing_syncs: 0,
                    state: NodeState::Crashed,
                    parked: Vec::new(),
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
    /// range, and partitions whose [`Cut`] is for another number of nodes, are ignored.
    #[must_use]
    pub fn schedule(mut self, at: SimTime, action: Action) -> Self {
        self.push(at, Event::Scripted(action));
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
            match self.check_after_event() {
                After::Continue => {}
                After::Done => return None,
                After::Fail(f) => return Some(f),
            }
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
                if slot.failing_syncs > 0 {
                    slot.failing_syncs -= 1;
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
    }

    fn apply_effects(&mut self, from: NodeId) {
        let mut effects = std::mem::take(&mut self.effects);
        for effect in effects.drain(..) {
            match effect {
                Effect::Send { to, message } => {
                    if slot_of(to) >= self.config.nodes {
                        continue;
                    }
                    match self.net.route(self.now, from, to, &mut self.net_rng) {
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

    fn down_nodes(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.state != NodeState::Up)
            .count()
    }

    fn random_up_node(&mut self) -> Option<NodeId> {
        let up: Vec<NodeId> = (0..self.config.nodes)
            .filter(|&i| self.slots[i].state == NodeState::Up)
            .map(node_at)
            .collect();
        self.nemesis_rng.pick(&up).copied()
    }

    fn nemesis(&mut self) {
        if self.phase != Phase::Safety {
            return;
        }
        let kinds = self.profile.kinds();
        let kind = self.nemesis_rng.pick(&kinds).copied();
        self.hasher.write_u8(TRACE_NEMESIS);
        kind.hash(&mut self.hasher);
        let n = self.config.nodes;
        let down_max = self
            .config
            .nemesis
            .crashed_nodes_max()
            .unwrap_or((n - 1) / 2);
        match kind {
            Some(FaultKind::Partition) => {
                if self.net.cut.any() {
                    self.net.cut = Cut::none(n);
                    self.coverage.bump(Counter::PartitionHealed);
                    self.log(FaultSource::Nemesis, Fault::PartitionHealed);
                } else if n >= 2 {
                    let shape = *self
                        .nemesis_rng
                        .pick(&PartitionShape::ALL)
                        .expect("non-empty");
                    let cut = Cut::draw(shape, n, &mut self.nemesis_rng);
                    // A shape that cuts no link on this many nodes (a majorities ring on
                    // 2 or 3, a bridge on 2) is no partition: the draw is kept (the run's
                    // random draws do not depend on it) but nothing is counted or logged.
                    if cut.any() {
                        self.net.cut = cut.clone();
                        self.coverage.bump(Counter::for_partition(shape));
                        self.log(
                            FaultSource::Nemesis,
                            Fault::PartitionStart {
                                shape: Some(shape),
                                cut,
                            },
                        );
                    }
                }
            }
            Some(FaultKind::Clog) if n >= 2 => {
                let a = self.nemesis_rng.below(n as u64) as u32;
                let b = (a + 1 + self.nemesis_rng.below(n as u64 - 1) as u32) % n as u32;
                let clog = self.nemesis_rng.between(1, self.profile.clog_time_max_us);
                let until = self.after(clog);
                let link = self.net.link_mut(node_at(a as usize), node_at(b as usize));
                link.clogged_until = link.clogged_until.max(until);
                self.coverage.bump(Counter::Clog);
                self.log(
                    FaultSource::Nemesis,
                    Fault::Clog {
                        from: node_at(a as usize),
                        to: node_at(b as usize),
                        duration: Duration::from_micros(clog),
                    },
                );
            }
            Some(FaultKind::Loss) => {
                if self.net.extra_loss == Probability::NEVER {
                    self.net.extra_loss = self.profile.loss;
                    self.coverage.bump(Counter::LossPeriod);
                    let probability = self.profile.loss;
                    self.log(FaultSource::Nemesis, Fault::LossStart { probability });
                } else {
                    self.net.extra_loss = Probability::NEVER;
                    self.log(FaultSource::Nemesis, Fault::LossEnd);
                }
            }
            Some(FaultKind::Duplicate) => {
                if self.net.extra_duplicate == Probability::NEVER {
                    self.net.extra_duplicate = self.profile.duplicate;
                    self.coverage.bump(Counter::DuplicatePeriod);
                    let probability = self.profile.duplicate;
                    self.log(FaultSource::Nemesis, Fault::DuplicateStart { probability });
                } else {
                    self.net.extra_duplicate = Probability::NEVER;
                    self.log(FaultSource::Nemesis, Fault::DuplicateEnd);
                }
            }
            Some(FaultKind::Reorder) => {
                if self.net.reorder_extra_us.is_none() {
                    let extra_us = self.profile.reorder_delay_us.max(1);
                    self.net.reorder_extra_us = Some(extra_us);
                    self.coverage.bump(Counter::ReorderPeriod);
                    self.log(
                        FaultSource::Nemesis,
                        Fault::ReorderStart {
                            extra_delay_max: Duration::from_micros(extra_us),
                        },
                    );
                } else {
                    self.net.reorder_extra_us = None;
                    self.log(FaultSource::Nemesis, Fault::ReorderEnd);
                }
            }
            Some(FaultKind::Crash) if self.down_nodes() < down_max => {
                // Half the time, aim at a node with unsynced writes: crashes matter most
                // then, and a random instant often misses the short window.
                let exposed: Vec<NodeId> = (0..n)
                    .filter(|&i| {
                        self.slots[i].state == NodeState::Up
                            && self.slots[i].disk.unsynced_ops() > 0
                    })
                    .map(node_at)
                    .collect();
                let target = if !exposed.is_empty() && self.nemesis_rng.below(2) == 0 {
                    self.nemesis_rng.pick(&exposed).copied()
                } else {
                    self.random_up_node()
                };
                if let Some(id) = target {
                    self.crash(id, FaultSource::Nemesis);
                    let down = self.nemesis_rng.between(1, self.profile.down_time_max_us);
                    let at = self.after(down);
                    self.push(at, Event::Restart { node: id });
                }
            }
            Some(FaultKind::Pause) if self.down_nodes() < down_max => {
                if let Some(id) = self.random_up_node() {
                    self.slots[slot_of(id)].state = NodeState::Paused;
                    self.coverage.bump(Counter::Pause);
                    self.log(FaultSource::Nemesis, Fault::Pause { node: id });
                    let pause = self.nemesis_rng.between(1, self.profile.pause_time_max_us);
                    let at = self.after(pause);
                    self.push(at, Event::Resume { node: id });
                }
            }
            Some(FaultKind::ClockJump) => {
                let id = self.nemesis_rng.below(n as u64) as usize;
                let max = self.profile.clock_jump_max_us;
                let delta = self.nemesis_rng.between(0, 2 * max) as i64 - max as i64;
                self.slots[id].clock.jump(self.now, delta);
                self.coverage.bump(Counter::ClockJump);
                self.log(
                    FaultSource::Nemesis,
                    Fault::ClockJump {
                        node: node_at(id),
                        delta_us: delta,
                    },
                );
            }
            Some(FaultKind::ClockDrift) => {
                let id = self.nemesis_rng.below(n as u64) as usize;
                let max = u64::from(self.profile.drift_ppm_max);
                let drift = self.nemesis_rng.between(0, 2 * max) as i64 - max as i64;
                let ppm = i32::try_from(drift).unwrap_or(0);
                self.slots[id].clock.set_drift(self.now, ppm);
                self.coverage.bump(Counter::ClockDrift);
                self.log(
                    FaultSource::Nemesis,
                    Fault::ClockDrift {
                        node: node_at(id),
                        ppm,
                    },
                );
            }
            _ => {}
        }
        let next = self
            .nemesis_rng
            .between(1, 2 * self.profile.interval_mean_us);
        let at = self.after(next);
        self.push(at, Event::Nemesis);
    }

    fn crash(&mut self, id: NodeId, source: FaultSource) {
        let mode = self
            .disk_rng
            .pick(&self.profile.crash_modes)
            .copied()
            .unwrap_or(CrashMode::DropUnsynced);
        self.crash_with(id, mode, source);
    }

    /// Appends to the fault log at the current time.
    fn log(&mut self, source: FaultSource, fault: Fault) {
        self.faults.push(self.now, source, fault);
    }

    fn restart(&mut self, id: NodeId, source: FaultSource) {
        self.coverage.bump(Counter::Restart);
        self.log(source, Fault::Restart { node: id });
        self.start_node(id);
    }

    fn crash_with(&mut self, id: NodeId, mode: CrashMode, source: FaultSource) {
        let slot = &mut self.slots[slot_of(id)];
        slot.node = None;
        slot.state = NodeState::Crashed;
        slot.incarnation += 1;
        slot.parked.clear();
        let outcome = slot.disk.crash(mode);
        self.hasher.write_u8(TRACE_CRASH);
        id.hash(&mut self.hasher);
        mode.hash(&mut self.hasher);
        self.hasher.write_u8(
            u8::from(outcome.unsynced)
                | u8::from(outcome.torn) << 1
                | u8::from(outcome.bit_flipped) << 2,
        );
        self.coverage.bump(Counter::Crash);
        if outcome.unsynced {
            self.coverage.bump(Counter::DiskUnsyncedAtCrash);
        }
        if outcome.torn {
            self.coverage.bump(Counter::DiskTornWrite);
        }
        if outcome.bit_flipped {
            self.coverage.bump(Counter::DiskBitFlip);
        }
        self.log(
            source,
            Fault::Crash {
                node: id,
                mode,
                disk: outcome.report,
            },
        );
    }

    fn resume(&mut self, id: NodeId, source: FaultSource) {
        let slot = &mut self.slots[slot_of(id)];
        if slot.state != NodeState::Paused {
            return;
        }
        slot.state = NodeState::Up;
        self.coverage.bump(Counter::Resume);
        let parked = std::mem::take(&mut self.slots[slot_of(id)].parked);
        self.faults
            .push(self.now, source, Fault::Resume { node: id });
        for event in parked {
            self.push(self.now, event);
        }
    }

    fn scripted(&mut self, action: Action) {
        if self.phase != Phase::Safety {
            return;
        }
        const S: FaultSource = FaultSource::Scripted;
        let n = self.config.nodes;
        let valid = |id: NodeId| slot_of(id) < n;
        match action {
            Action::Partition(cut) => {
                if cut.nodes() == n {
                    self.net.cut = cut.clone();
                    self.log(S, Fault::PartitionStart { shape: None, cut });
                }
            }
            Action::HealPartition => {
                self.net.cut = Cut::none(n);
                self.log(S, Fault::PartitionHealed);
            }
            Action::Clog { from, to, duration } => {
                if valid(from) && valid(to) {
                    let until = self.now.saturating_add(duration);
                    let link = self.net.link_mut(from, to);
                    link.clogged_until = link.clogged_until.max(until);
                    self.coverage.bump(Counter::Clog);
                    self.log(S, Fault::Clog { from, to, duration });
                }
            }
            Action::Crash(id, mode) => {
                if valid(id) && self.slots[slot_of(id)].state != NodeState::Crashed {
                    self.crash_with(id, mode, S);
                }
            }
            Action::Restart(id) => {
                if valid(id) && self.slots[slot_of(id)].state == NodeState::Crashed {
                    self.restart(id, S);
                }
            }
            Action::Pause(id) => {
                if valid(id) && self.slots[slot_of(id)].state == NodeState::Up {
                    self.slots[slot_of(id)].state = NodeState::Paused;
                    self.coverage.bump(Counter::Pause);
                    self.log(S, Fault::Pause { node: id });
                }
            }
            Action::Resume(id) => {
                if valid(id) {
                    self.resume(id, S);
                }
            }
            Action::ClockJump(id, delta_us) => {
                if valid(id) {
                    self.slots[slot_of(id)].clock.jump(self.now, delta_us);
                    self.coverage.bump(Counter::ClockJump);
                    self.log(S, Fault::ClockJump { node: id, delta_us });
                }
            }
            Action::ClockDrift(id, ppm) => {
                if valid(id) {
                    self.slots[slot_of(id)].clock.set_drift(self.now, ppm);
                    self.coverage.bump(Counter::ClockDrift);
                    self.log(S, Fault::ClockDrift { node: id, ppm });
                }
            }
            Action::FailNextSync(id) => {
                if valid(id) {
                    self.slots[slot_of(id)].failing_syncs += 1;
                    self.log(S, Fault::FailNextSync { node: id });
                }
            }
            Action::FillDisk(id) => {
                if valid(id) {
                    self.slots[slot_of(id)].disk.fill();
                    self.log(S, Fault::DiskFull { node: id });
                }
            }
            Action::FreeDisk(id) => {
                if valid(id) {
                    self.slots[slot_of(id)].disk.free();
                    self.log(S, Fault::DiskFreed { node: id });
                }
            }
        }
    }

    /// Ends every fault and starts the liveness phase.
    fn heal(&mut self) {
        self.phase = Phase::Liveness;
        self.healed_at = Some(self.now);
        self.net.heal(self.now);
        self.log(FaultSource::Heal, Fault::AllHealed);
        for i in 0..self.config.nodes {
            let id = node_at(i);
            self.slots[i].failing_syncs = 0;
            self.slots[i].disk.free();
            match self.slots[i].state {
                NodeState::Crashed => self.restart(id, FaultSource::Heal),
                NodeState::Paused => self.resume(id, FaultSource::Heal),
                NodeState::Up => {}
            }
        }
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
