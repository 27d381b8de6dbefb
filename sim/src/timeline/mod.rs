//! A run as a picture: the one trace format of every system on the node contract, and a
//! page that draws it.
//!
//! A [`Timeline`] holds what happened in a run, in microseconds from its start: each node's
//! role and term over time, the messages between nodes (with their kinds), commit and
//! snapshot marks, crashes, restarts, pauses and the other faults of the run's
//! [`FaultLog`], the client operations from invocation to completion with their outcomes,
//! and the checker's verdict with the operations behind a violation ([`Culprit`]).
//! [`Timeline::write_html`] draws it as one self-contained HTML page (no network fetches:
//! its styles, data and script are inline): a lane per node coloured by role, fault regions,
//! message arrows filterable by kind, operation bars coloured by outcome, a latency plot
//! with the same fault regions, zoom, pan, hover details and a legend. On a violation the
//! page opens on the culprit, highlighted. The same timeline gives the same page, byte for
//! byte.
//!
//! # Drawing your own system's run
//!
//! A state machine on the node contract, run by [`ProtocolNode`], needs one thing more:
//! [`Describe`], which names its role (and term) and the kind of each of its messages, and
//! may name its commit and snapshot positions. Then the simulation records with
//! [`Recorder::protocol`], and the run's report becomes a page:
//!
//! ```
//! # use std::convert::Infallible;
//! # use synod_node::{EffectOf, InputOf, Protocol, Time};
//! use synod_sim::timeline::{Describe, Recorder, Role, Timeline};
//! use synod_sim::{
//!     Boot, Disk, NodeId, NoClients, ProtocolNode, ProtocolStore, SimConfig, Simulation, Verdict,
//! };
//! # struct Quiet { id: NodeId }
//! # impl Protocol for Quiet {
//! #     type Message = Infallible;
//! #     type Request = ();
//! #     type Response = ();
//! #     type Write = ();
//! #     type Apply = ();
//! #     fn id(&self) -> NodeId { self.id }
//! #     fn handle(&mut self, _now: Time, _input: InputOf<Self>) {}
//! #     fn poll(&mut self) -> Option<EffectOf<Self>> { None }
//! # }
//! # struct Store;
//! # impl ProtocolStore for Store {
//! #     type Protocol = Quiet;
//! #     fn recover(&mut self, boot: Boot<'_>) -> std::io::Result<Quiet> { Ok(Quiet { id: boot.id }) }
//! #     fn write(&mut self, _: &mut Disk, _: &()) -> std::io::Result<()> { Ok(()) }
//! # }
//!
//! impl Describe for Quiet {
//!     fn role(&self) -> Option<Role> {
//!         Some(Role::new("replica", 0))
//!     }
//!
//!     fn message_kind(message: &Infallible) -> &'static str {
//!         match *message {}
//!     }
//! }
//!
//! let config = SimConfig::builder(3).build()?;
//! let report = Simulation::new(config, 7, |_| ProtocolNode::new(Store), NoClients)
//!     .record(Recorder::protocol())
//!     .run();
//! let mut page = Timeline::of_run(&report, &Verdict::Pass, None);
//! page.set_title("three quiet nodes", "seed 7");
//! let mut html = Vec::new();
//! let bytes = page.write_html(&mut html)?;
//! assert_eq!(bytes, html.len() as u64);
//! assert!(String::from_utf8_lossy(&html).contains("three quiet nodes"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A node that is not a [`ProtocolNode`] records with [`Recorder::new`], given how to
//! observe it and name its messages. A run that did not happen under the simulator (a
//! real cluster) is drawn from a timeline built by hand with [`Timeline::new`] and its
//! `push_` methods.
//!
//! # Bounds
//!
//! A recording keeps at most [`TimelineLimits`]' counts of messages, marks and role
//! changes: past a bound it keeps every second one it had and then one in two, four, ...
//! of what comes (a uniform sample), and counts every message by kind. The page draws at
//! most [`OPERATIONS_DRAWN_MAX`] operations one by one (sampled the same way, the culprit
//! and the operations involved always kept) and plots the worst latency of every operation
//! per time slice, so a run of a million events still makes a page of a few megabytes
//! that a browser opens in seconds.

use std::fmt::{self, Debug};
use std::hash::Hash;

use synod_node::Protocol;

use crate::check::{Culprit, Verdict};
use crate::fault_log::{Fault, FaultLog};
use crate::history::{History, Outcome};
use crate::node::{Node, NodeId};
use crate::protocol::{ProtocolNode, ProtocolStore};
use crate::sim::RunReport;
use crate::time::SimTime;

mod page;

pub use page::{LATENCY_SLICES, OPERATIONS_DRAWN_MAX};

/// A node's role and term, as a [`Describe`]d state machine names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Role {
    /// The role's name: `leader`, `follower`, `candidate`, `pre-candidate`, `replica`, ...
    /// The page gives the usual names their usual colours, others colours in turn.
    pub name: &'static str,
    /// The term (epoch, ballot, generation) the node is in; 0 where there is none.
    pub term: u64,
}

impl Role {
    /// A role named `name` in `term`.
    #[must_use]
    pub const fn new(name: &'static str, term: u64) -> Self {
        Role { name, term }
    }
}

/// What a state machine on the node contract tells the page of itself: its role and the
/// kind of each message. That is all a system writes to be drawn.
pub trait Describe: Protocol {
    /// The node's role and term now; `None` if it has none to show.
    fn role(&self) -> Option<Role>;

    /// The kind of `message` (`append`, `vote`, ...), for the page's filter and counts.
    fn message_kind(message: &Self::Message) -> &'static str;

    /// The highest position the node knows committed, if it has one (drawn as a mark each
    /// time it moves).
    fn committed(&self) -> Option<u64> {
        None
    }

    /// The position its latest snapshot covers, if it has one (drawn as a mark each time it
    /// moves).
    fn snapshot(&self) -> Option<u64> {
        None
    }
}

/// What a [`Recorder`] sees of a running node after each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observation {
    /// Its role, if it shows one.
    pub role: Option<Role>,
    /// Its commit position, if it has one.
    pub committed: Option<u64>,
    /// Its snapshot position, if it has one.
    pub snapshot: Option<u64>,
}

/// The role name of a crashed node.
pub const ROLE_DOWN: &str = "down";
/// The role name of a node that is up but shows no role (stopped, or not yet started).
pub const ROLE_NONE: &str = "none";

/// How much a recording keeps (see the module documentation, "Bounds").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimelineLimits {
    /// The most messages kept one by one.
    pub messages_max: usize,
    /// The most commit and snapshot marks kept.
    pub marks_max: usize,
    /// The most role changes kept.
    pub roles_max: usize,
}

/// The default limits: 20,000 messages, 5,000 marks, 20,000 role changes.
pub const TIMELINE_LIMITS_DEFAULT: TimelineLimits = TimelineLimits {
    messages_max: 20_000,
    marks_max: 5_000,
    roles_max: 20_000,
};

impl Default for TimelineLimits {
    fn default() -> Self {
        TIMELINE_LIMITS_DEFAULT
    }
}

/// A uniform sample of a stream, at most `max` kept: every `stride`-th item, the stride
/// doubling (and every second kept item dropped) each time the sample fills.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sample<T> {
    kept: Vec<T>,
    max: usize,
    stride: u64,
    seen: u64,
}

impl<T> Sample<T> {
    fn new(max: usize) -> Self {
        Sample {
            kept: Vec::new(),
            max: max.max(2),
            stride: 1,
            seen: 0,
        }
    }

    fn push(&mut self, item: T) {
        let index = self.seen;
        self.seen += 1;
        if !index.is_multiple_of(self.stride) {
            return;
        }
        if self.kept.len() >= self.max {
            let mut i = 0;
            self.kept.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.stride *= 2;
            if !index.is_multiple_of(self.stride) {
                return;
            }
        }
        self.kept.push(item);
    }
}

/// What happened to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// It arrives (or was to arrive) at this time.
    At(SimTime),
    /// The network lost it.
    Lost,
    /// A partition cut it.
    Cut,
}

/// One message between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageRecord {
    /// The sender.
    pub from: NodeId,
    /// The recipient.
    pub to: NodeId,
    /// When it was sent.
    pub sent: SimTime,
    /// What became of it.
    pub delivery: Delivery,
    /// Its kind, an index into the timeline's kinds.
    kind: u16,
}

/// A point event on a node's lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum NodeEventKind {
    /// The process crashed (or was killed).
    Crash,
    /// It started again.
    Restart,
    /// It paused.
    Pause,
    /// It resumed.
    Resume,
    /// Its clock stepped or its drift changed.
    Clock,
    /// A disk fault: a sync made to fail, a full disk, a freed one.
    Disk,
    /// Anything else worth a mark.
    Note,
}

impl NodeEventKind {
    fn name(self) -> &'static str {
        match self {
            NodeEventKind::Crash => "crash",
            NodeEventKind::Restart => "restart",
            NodeEventKind::Pause => "pause",
            NodeEventKind::Resume => "resume",
            NodeEventKind::Clock => "clock",
            NodeEventKind::Disk => "disk",
            NodeEventKind::Note => "note",
        }
    }
}

/// A stretch of time a fault held, shaded on the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RegionKind {
    /// A partition (every lane).
    Partition,
    /// Extra message loss (every lane).
    Loss,
    /// Message duplication (every lane).
    Duplicate,
    /// Reordering (every lane).
    Reorder,
    /// A clogged link (the sender's lane).
    Clog,
    /// A node paused (its lane).
    Paused,
    /// A node down, between a crash and its restart (its lane).
    Down,
}

impl RegionKind {
    fn name(self) -> &'static str {
        match self {
            RegionKind::Partition => "partition",
            RegionKind::Loss => "loss",
            RegionKind::Duplicate => "duplicate",
            RegionKind::Reorder => "reorder",
            RegionKind::Clog => "clog",
            RegionKind::Paused => "paused",
            RegionKind::Down => "down",
        }
    }
}

/// How a client operation ended, for its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpOutcome {
    /// Completed.
    Ok,
    /// Certainly had no effect.
    Fail,
    /// No answer: it may have taken effect.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct RoleChange {
    node: NodeId,
    at: SimTime,
    role: u16,
    term: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Mark {
    node: NodeId,
    at: SimTime,
    snapshot: bool,
    position: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeEvent {
    node: NodeId,
    at: SimTime,
    kind: NodeEventKind,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Region {
    kind: RegionKind,
    start: SimTime,
    end: SimTime,
    /// The lanes it shades; empty: every lane.
    nodes: Vec<NodeId>,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct OpRecord {
    client: u32,
    invoked: SimTime,
    completed: Option<SimTime>,
    outcome: OpOutcome,
    text: String,
}

/// A run as the page draws it: the one trace format of every system (see the module
/// documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    title: String,
    subtitle: String,
    nodes: usize,
    end: SimTime,
    role_names: Vec<String>,
    roles: Sample<RoleChange>,
    kinds: Vec<String>,
    kind_counts: Vec<u64>,
    messages: Sample<MessageRecord>,
    marks: Sample<Mark>,
    node_events: Vec<NodeEvent>,
    regions: Vec<Region>,
    faults: Vec<(SimTime, String)>,
    faults_dropped: u64,
    operations: Vec<OpRecord>,
    verdict: Option<Verdict>,
    culprit: Option<Culprit>,
}

impl Timeline {
    /// An empty timeline of `nodes` nodes (ids `1..=nodes`) with the default limits.
    #[must_use]
    pub fn new(nodes: usize) -> Self {
        Timeline::with_limits(nodes, TimelineLimits::default())
    }

    /// An empty timeline of `nodes` nodes keeping at most what `limits` say.
    #[must_use]
    pub fn with_limits(nodes: usize, limits: TimelineLimits) -> Self {
        Timeline {
            title: String::from("run"),
            subtitle: String::new(),
            nodes,
            end: SimTime::ZERO,
            role_names: Vec::new(),
            roles: Sample::new(limits.roles_max),
            kinds: Vec::new(),
            kind_counts: Vec::new(),
            messages: Sample::new(limits.messages_max),
            marks: Sample::new(limits.marks_max),
            node_events: Vec::new(),
            regions: Vec::new(),
            faults: Vec::new(),
            faults_dropped: 0,
            operations: Vec::new(),
            verdict: None,
            culprit: None,
        }
    }

    /// The timeline of a simulated run: what [`Simulation::record`](crate::Simulation::record)
    /// recorded (nothing but the nodes' lanes if it did not record), the run's fault log as
    /// regions and marks, its history as operation bars, and `verdict` with `culprit`.
    #[must_use]
    pub fn of_run<I: Debug, O: Debug>(
        report: &RunReport<I, O>,
        verdict: &Verdict,
        culprit: Option<&Culprit>,
    ) -> Timeline {
        let mut timeline = report.recording.clone().unwrap_or_else(|| Timeline::new(0));
        timeline.end = timeline.end.max(report.end_time);
        timeline.push_fault_log(&report.faults);
        timeline.push_history(&report.history);
        timeline.set_verdict(verdict, culprit);
        timeline
    }

    /// Every operation of `history`, in its order, as [`Timeline::push_operation`] takes it:
    /// labelled `input -> output` (`fail` for an operation that failed, `?` for one whose
    /// outcome is unknown). For a history recorded outside the simulator (a real run's) as
    /// well as a simulated run's.
    pub fn push_history<I: Debug, O: Debug>(&mut self, history: &History<I, O>) {
        for op in history.operations() {
            let (outcome, output) = match &op.outcome {
                Outcome::Ok(out) => (OpOutcome::Ok, format!("{out:?}")),
                Outcome::Fail => (OpOutcome::Fail, String::from("fail")),
                Outcome::Unknown | Outcome::Pending => (OpOutcome::Unknown, String::from("?")),
            };
            self.push_operation(
                op.client.get(),
                op.invoked_at,
                op.completed_at,
                outcome,
                format!("{:?} -> {output}", op.input),
            );
        }
    }

    /// Sets the page's title and the line under it.
    pub fn set_title(&mut self, title: &str, subtitle: &str) {
        title.clone_into(&mut self.title);
        subtitle.clone_into(&mut self.subtitle);
    }

    /// Sets the verdict, and the operations behind a violation (history indexes, which
    /// are the order of [`Timeline::push_operation`]).
    pub fn set_verdict(&mut self, verdict: &Verdict, culprit: Option<&Culprit>) {
        self.verdict = Some(verdict.clone());
        self.culprit = culprit.cloned();
    }

    /// Moves the end of the run to `at` if it is later.
    pub fn extend_to(&mut self, at: SimTime) {
        self.end = self.end.max(at);
    }

    /// How many nodes have lanes.
    #[must_use]
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    fn grow(&mut self, node: NodeId, at: SimTime) {
        self.nodes = self
            .nodes
            .max(usize::try_from(node.get()).unwrap_or(usize::MAX));
        self.extend_to(at);
    }

    /// Node `node` took role `name` in `term` at `at` (a crashed node is [`ROLE_DOWN`]).
    pub fn push_role(&mut self, node: NodeId, at: SimTime, name: &str, term: u64) {
        let role = intern(&mut self.role_names, name);
        self.grow(node, at);
        self.roles.push(RoleChange {
            node,
            at,
            role,
            term,
        });
    }

    /// A message of kind `kind` from `from` to `to`, sent at `sent`.
    pub fn push_message(
        &mut self,
        from: NodeId,
        to: NodeId,
        sent: SimTime,
        delivery: Delivery,
        kind: &str,
    ) {
        let kind = intern(&mut self.kinds, kind);
        if self.kind_counts.len() < self.kinds.len() {
            self.kind_counts.resize(self.kinds.len(), 0);
        }
        self.kind_counts[usize::from(kind)] += 1;
        self.grow(from, sent);
        self.grow(to, sent);
        if let Delivery::At(at) = delivery {
            self.extend_to(at);
        }
        self.messages.push(MessageRecord {
            from,
            to,
            sent,
            delivery,
            kind,
        });
    }

    /// Node `node` knew position `position` committed at `at` (`snapshot`: its snapshot
    /// covered it).
    pub fn push_mark(&mut self, node: NodeId, at: SimTime, snapshot: bool, position: u64) {
        self.grow(node, at);
        self.marks.push(Mark {
            node,
            at,
            snapshot,
            position,
        });
    }

    /// A point event on a node's lane.
    pub fn push_node_event(&mut self, node: NodeId, at: SimTime, kind: NodeEventKind, text: &str) {
        self.grow(node, at);
        self.node_events.push(NodeEvent {
            node,
            at,
            kind,
            text: text.to_owned(),
        });
    }

    /// A stretch of time a fault held, on the lanes of `nodes` (none: every lane).
    pub fn push_region(
        &mut self,
        kind: RegionKind,
        start: SimTime,
        end: SimTime,
        nodes: &[NodeId],
        text: &str,
    ) {
        for &node in nodes {
            self.grow(node, start);
        }
        self.extend_to(end);
        self.regions.push(Region {
            kind,
            start,
            end: end.max(start),
            nodes: nodes.to_vec(),
            text: text.to_owned(),
        });
    }

    /// A line of the page's fault list (the run's fault log, or what a real run did).
    pub fn push_fault_line(&mut self, at: SimTime, text: &str) {
        self.extend_to(at);
        self.faults.push((at, text.to_owned()));
    }

    /// A client operation from `invoked` to `completed` (`None`: no answer), described by
    /// `text`. Operations are numbered in the order they are pushed, as a history's are.
    pub fn push_operation(
        &mut self,
        client: u32,
        invoked: SimTime,
        completed: Option<SimTime>,
        outcome: OpOutcome,
        text: String,
    ) {
        self.extend_to(completed.unwrap_or(invoked));
        self.operations.push(OpRecord {
            client,
            invoked,
            completed,
            outcome,
            text,
        });
    }

    fn close_region(
        &mut self,
        open: &mut Vec<OpenRegion>,
        kind: RegionKind,
        node: Option<NodeId>,
        at: SimTime,
    ) {
        if let Some(i) = open.iter().position(|o| o.0 == kind && o.1 == node) {
            let (kind, node, start, text) = open.remove(i);
            let nodes: Vec<NodeId> = node.into_iter().collect();
            self.push_region(kind, start, at, &nodes, &text);
        }
    }

    fn open_region(
        &mut self,
        open: &mut Vec<OpenRegion>,
        kind: RegionKind,
        node: Option<NodeId>,
        at: SimTime,
        text: String,
    ) {
        self.close_region(open, kind, node, at);
        open.push((kind, node, at, text));
    }

    /// Every fault of `log` as a line of the fault list, and as regions and node marks:
    /// partitions, loss, duplication and reordering until they end (or the run does),
    /// clogs for their duration, pauses until the resume, crashes until the restart.
    pub fn push_fault_log(&mut self, log: &FaultLog) {
        self.faults_dropped += log.dropped();
        let end = log
            .entries()
            .map(|e| e.at)
            .max()
            .unwrap_or(SimTime::ZERO)
            .max(self.end);
        // Open regions: every lane's (by kind), and each node's pause and crash.
        let mut open: Vec<OpenRegion> = Vec::new();
        for entry in log.entries() {
            let at = entry.at;
            let text = entry.fault.to_string();
            self.push_fault_line(at, &entry.to_string());
            match &entry.fault {
                Fault::PartitionStart { .. } => {
                    self.open_region(&mut open, RegionKind::Partition, None, at, text);
                }
                Fault::PartitionHealed => {
                    self.close_region(&mut open, RegionKind::Partition, None, at);
                }
                Fault::LossStart { .. } => {
                    self.open_region(&mut open, RegionKind::Loss, None, at, text);
                }
                Fault::LossEnd => {
                    self.close_region(&mut open, RegionKind::Loss, None, at);
                }
                Fault::DuplicateStart { .. } => {
                    self.open_region(&mut open, RegionKind::Duplicate, None, at, text);
                }
                Fault::DuplicateEnd => {
                    self.close_region(&mut open, RegionKind::Duplicate, None, at);
                }
                Fault::ReorderStart { .. } => {
                    self.open_region(&mut open, RegionKind::Reorder, None, at, text);
                }
                Fault::ReorderEnd => {
                    self.close_region(&mut open, RegionKind::Reorder, None, at);
                }
                Fault::Clog { from, duration, .. } => {
                    let until = at.saturating_add(*duration).min(end.max(at));
                    self.push_region(RegionKind::Clog, at, until, &[*from], &text);
                }
                Fault::Pause { node } => {
                    self.push_node_event(*node, at, NodeEventKind::Pause, &text);
                    self.open_region(&mut open, RegionKind::Paused, Some(*node), at, text);
                }
                Fault::Resume { node } => {
                    self.push_node_event(*node, at, NodeEventKind::Resume, &text);
                    self.close_region(&mut open, RegionKind::Paused, Some(*node), at);
                }
                Fault::Crash { node, .. } => {
                    self.push_node_event(*node, at, NodeEventKind::Crash, &text);
                    self.open_region(&mut open, RegionKind::Down, Some(*node), at, text);
                }
                Fault::Restart { node } => {
                    self.push_node_event(*node, at, NodeEventKind::Restart, &text);
                    self.close_region(&mut open, RegionKind::Down, Some(*node), at);
                }
                Fault::ClockJump { node, .. } | Fault::ClockDrift { node, .. } => {
                    self.push_node_event(*node, at, NodeEventKind::Clock, &text);
                }
                Fault::FailNextSync { node }
                | Fault::CrashArmed { node, .. }
                | Fault::DiskFull { node }
                | Fault::DiskFreed { node } => {
                    self.push_node_event(*node, at, NodeEventKind::Disk, &text);
                }
                Fault::AllHealed => {
                    for kind in [
                        RegionKind::Partition,
                        RegionKind::Loss,
                        RegionKind::Duplicate,
                        RegionKind::Reorder,
                    ] {
                        self.close_region(&mut open, kind, None, at);
                    }
                }
            }
        }
        // Whatever is still open lasts to the end of the run.
        let end = end.max(self.end);
        for (kind, node, start, text) in open {
            let nodes: Vec<NodeId> = node.into_iter().collect();
            self.push_region(kind, start, end, &nodes, &text);
        }
    }
}

/// A fault region begun and not yet ended: its kind, node (none: every lane), start, text.
type OpenRegion = (RegionKind, Option<NodeId>, SimTime, String);

/// The index of `name` in `names`, added if new (at most `u16::MAX` names; later ones
/// share the last index).
fn intern(names: &mut Vec<String>, name: &str) -> u16 {
    if let Some(i) = names.iter().position(|n| n == name) {
        return u16::try_from(i).unwrap_or(u16::MAX);
    }
    if names.len() < usize::from(u16::MAX) {
        names.push(name.to_owned());
    }
    u16::try_from(names.len() - 1).unwrap_or(u16::MAX)
}

type Observe<N> = Box<dyn Fn(&N) -> Observation>;
type KindOf<N> = Box<dyn Fn(&<N as Node>::Message) -> &'static str>;

/// Records a simulated run into a [`Timeline`]: after every event each node's role, commit
/// and snapshot position, and every message sent with its fate. Hand it to
/// [`Simulation::record`](crate::Simulation::record); the run's report carries the
/// recording ([`RunReport::recording`]).
pub struct Recorder<N: Node> {
    observe: Observe<N>,
    kind: KindOf<N>,
    /// Each node as last seen: `Some(None)` crashed, `None` not seen yet.
    last: Vec<Option<Option<Observation>>>,
    timeline: Timeline,
}

impl<N: Node> Debug for Recorder<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("timeline", &self.timeline)
            .finish_non_exhaustive()
    }
}

impl<N: Node> Recorder<N> {
    /// A recorder that sees a node through `observe` and names its messages with `kind`.
    pub fn new(
        observe: impl Fn(&N) -> Observation + 'static,
        kind: impl Fn(&N::Message) -> &'static str + 'static,
    ) -> Self {
        Recorder {
            observe: Box::new(observe),
            kind: Box::new(kind),
            last: Vec::new(),
            timeline: Timeline::new(0),
        }
    }

    /// The same recorder keeping at most what `limits` say.
    #[must_use]
    pub fn limits(mut self, limits: TimelineLimits) -> Self {
        self.timeline = Timeline::with_limits(self.timeline.nodes, limits);
        self
    }

    /// After an event: each node as it is now (`None`: crashed).
    pub(crate) fn observe<'a>(
        &mut self,
        now: SimTime,
        nodes: impl Iterator<Item = (NodeId, Option<&'a N>)>,
    ) where
        N: 'a,
    {
        for (id, node) in nodes {
            let slot = usize::try_from(id.get() - 1).unwrap_or(usize::MAX);
            if self.last.len() <= slot {
                self.last.resize(slot + 1, None);
                self.timeline.grow(id, now);
            }
            let state = node.map(|n| (self.observe)(n));
            let before = self.last[slot];
            if before == Some(state) {
                continue;
            }
            self.last[slot] = Some(state);
            let Some(seen) = state else {
                self.timeline.push_role(id, now, ROLE_DOWN, 0);
                continue;
            };
            let was = before.flatten().unwrap_or_default();
            if before.flatten().is_none() || seen.role != was.role {
                match seen.role {
                    Some(role) => self.timeline.push_role(id, now, role.name, role.term),
                    None => self.timeline.push_role(id, now, ROLE_NONE, 0),
                }
            }
            if let Some(c) = seen.committed
                && seen.committed > was.committed
            {
                self.timeline.push_mark(id, now, false, c);
            }
            if let Some(s) = seen.snapshot
                && seen.snapshot > was.snapshot
            {
                self.timeline.push_mark(id, now, true, s);
            }
        }
        self.timeline.extend_to(now);
    }

    /// A message sent at `now`.
    pub(crate) fn message(
        &mut self,
        now: SimTime,
        from: NodeId,
        to: NodeId,
        message: &N::Message,
        delivery: Delivery,
    ) {
        let kind = (self.kind)(message);
        self.timeline.push_message(from, to, now, delivery, kind);
    }

    /// The recording.
    pub(crate) fn finish(self) -> Timeline {
        self.timeline
    }
}

impl<S> Recorder<ProtocolNode<S>>
where
    S: ProtocolStore + 'static,
    S::Protocol: Describe,
    <S::Protocol as Protocol>::Message: Clone + Debug + Hash,
    <S::Protocol as Protocol>::Request: Clone + Debug + Hash,
    <S::Protocol as Protocol>::Response: Clone + Debug + Hash,
{
    /// The recorder of a state machine on the node contract: its [`Describe`] says
    /// everything.
    #[must_use]
    pub fn protocol() -> Self {
        Recorder::new(
            |node: &ProtocolNode<S>| match node.protocol() {
                Some(p) => Observation {
                    role: p.role(),
                    committed: p.committed(),
                    snapshot: p.snapshot(),
                },
                None => Observation::default(),
            },
            S::Protocol::message_kind,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_stays_bounded_and_uniform() {
        let mut s = Sample::new(10);
        for i in 0..1000u64 {
            s.push(i);
        }
        assert!(s.kept.len() <= 10 && s.kept.len() >= 5, "{}", s.kept.len());
        // Every kept item is a multiple of the stride: evenly spread over the stream.
        assert!(s.kept.iter().all(|i| i % s.stride == 0));
        assert_eq!(s.kept[0], 0);
        assert!(*s.kept.last().expect("kept") >= 1000 - 2 * s.stride);
    }

    #[test]
    fn intern_reuses_names() {
        let mut names = Vec::new();
        assert_eq!(intern(&mut names, "leader"), 0);
        assert_eq!(intern(&mut names, "follower"), 1);
        assert_eq!(intern(&mut names, "leader"), 0);
    }
}
