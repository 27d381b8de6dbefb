//! Raft nodes stepped by hand on synod-sim's `Stepper`, each run by the simulator's one
//! generic adapter, `ProtocolNode`: the test delivers the messages it chooses (changed,
//! duplicated or forged, if it likes), moves each node's clock a tick at a time, completes
//! syncs when it says, calls a node's own methods between two steps, and crashes and
//! restarts nodes. Raft's safety properties are checked after every step
//! ([`SafetyChecker`]). Scripted tests and the randomized runs of `random.rs` (which draw
//! each step from a seed) drive the same cluster.
//!
//! A node's store ([`RaftStore`]) hands each `RaftWrite` to a [`RaftDisk`], which lays it
//! out on the node's simulated disk and rebuilds the log from what a crash left: by default
//! a [`Journal`] (the log in memory, every write journaled); `random.rs` adds a broken
//! journal and the production `WalLogStore`. What the nodes apply is kept in one
//! [`Observed`] shared by the stores, across restarts.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use synod_consensus::invariants::{SafetyChecker, Violation};
use synod_consensus::journal::{JournalWriter, replay};
use synod_consensus::{
    Apply, Config, ConfigBuilder, Entry, LogIndex, MemLogStore, Membership, Message, MessageBody,
    Node, NodeId, Payload, RaftWrite, ReadState, Request, RequestError, Response, Role, Snapshot,
    StoreWrite,
};
use synod_sim::{Boot, CrashMode, Disk, Envelope, ProtocolNode, ProtocolStore, Stepper};

use crate::sim::journal_append;

/// One tick of Raft's clock (its default interval): what [`Cluster::tick`] moves a node's
/// clock by.
pub const TICK: Duration = Duration::from_millis(10);

/// A change to every node's configuration.
pub type Tweak = Rc<dyn Fn(ConfigBuilder) -> ConfigBuilder>;

/// A check of a snapshot's data.
pub type SnapshotOracle = Box<dyn Fn(&Snapshot) -> Result<(), String>>;

/// The ids `1..=n`.
pub fn ids(n: u64) -> Vec<NodeId> {
    (1..=n).map(NodeId::new).collect()
}

/// How a node's writes reach its simulated disk, and how its log is rebuilt from what the
/// disk kept.
pub trait RaftDisk: 'static {
    /// The log node `id` starts from what `disk` holds (the initial `membership` on an
    /// empty disk); the disk is set up to take the writes that follow.
    fn recover(
        &mut self,
        id: NodeId,
        disk: &mut Disk,
        membership: &Membership,
    ) -> io::Result<MemLogStore>;
    /// Lays `write` out on `disk`, for the sync that follows to make durable.
    fn write(&mut self, disk: &mut Disk, write: &RaftWrite) -> io::Result<()>;
}

/// The default [`RaftDisk`]: the log in memory, rebuilt at each start from the journal of
/// its writes.
pub struct Journal(JournalWriter);

impl Default for Journal {
    fn default() -> Self {
        Journal(JournalWriter::new(0))
    }
}

impl RaftDisk for Journal {
    fn recover(
        &mut self,
        _: NodeId,
        disk: &mut Disk,
        membership: &Membership,
    ) -> io::Result<MemLogStore> {
        let journal = disk.read(crate::sim::JOURNAL).unwrap_or_default();
        let (log, valid) = replay(&journal, membership).map_err(io::Error::other)?;
        disk.set_len(crate::sim::JOURNAL, valid as u64)?;
        self.0 = JournalWriter::new(valid as u64);
        Ok(log)
    }

    fn write(&mut self, disk: &mut Disk, write: &RaftWrite) -> io::Result<()> {
        self.append(disk, write.ops())
    }
}

impl Journal {
    /// Appends the store writes `ops` to the journal on `disk`.
    pub fn append(&mut self, disk: &mut Disk, ops: &[StoreWrite]) -> io::Result<()> {
        journal_append(&mut self.0, disk, ops)
    }
}

/// What the randomized runs count of the paths they must reach.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// Snapshots handed to a state machine, and those of them a restarted node loaded
    /// from its own store (the rest came from a leader).
    pub snapshots_loaded: u64,
    pub snapshots_restored: u64,
    /// Snapshot messages delivered, and those that were not a snapshot's first chunk.
    pub snapshot_chunks: u64,
    pub later_chunks: u64,
    /// `TimeoutNow` messages delivered (a leader handing over).
    pub timeout_nows: u64,
    /// Nodes stopped by a store that failed a write, and so crashed.
    pub failed_stores: u64,
    /// Restarts.
    pub restarts: u64,
}

impl Counters {
    /// Snapshots installed from a leader.
    pub fn installs(&self) -> u64 {
        self.snapshots_loaded - self.snapshots_restored
    }
}

/// What the nodes handed up to their state machines, shared by every store of a cluster
/// and kept across restarts.
#[derive(Default)]
pub struct Observed {
    pub counters: Counters,
    /// The last index each node applied since it started.
    pub applied: BTreeMap<NodeId, LogIndex>,
    /// The commands each node applied since it started (or restored a snapshot), in order.
    pub applied_commands: BTreeMap<NodeId, Vec<(LogIndex, Bytes)>>,
    /// Reads each node answered through `Node::read_index`, over its whole life.
    pub reads: BTreeMap<NodeId, Vec<ReadState>>,
    /// The indexes of the membership changes some node applied.
    pub membership_applied: BTreeSet<LogIndex>,
    /// Checks each snapshot handed to a state machine; the first complaint is kept in
    /// `snapshot_error`.
    pub snapshot_oracle: Option<SnapshotOracle>,
    pub snapshot_error: Option<String>,
    /// The first store that could not be recovered after a crash.
    pub store_error: Option<String>,
}

/// A node's store: its [`RaftDisk`], and where what it applies is recorded.
pub struct RaftStore<D> {
    id: NodeId,
    tweak: Tweak,
    membership: Membership,
    disk: D,
    observed: Rc<RefCell<Observed>>,
}

impl<D> RaftStore<D> {
    /// The node's disk layer.
    pub fn disk(&self) -> &D {
        &self.disk
    }
}

impl<D: RaftDisk> ProtocolStore for RaftStore<D> {
    type Protocol = Node;

    fn recover(&mut self, boot: Boot<'_>) -> io::Result<Node> {
        let id = self.id;
        let log = match self.disk.recover(id, boot.disk, &self.membership) {
            Ok(log) => log,
            Err(e) => {
                self.observed
                    .borrow_mut()
                    .store_error
                    .get_or_insert(format!("{id} cannot restart: {e}"));
                return Err(e);
            }
        };
        let config = (self.tweak)(Config::builder(id).seed(id.get() * 7919))
            .build()
            .map_err(io::Error::other)?;
        let node = Node::new(config, log);
        let mut observed = self.observed.borrow_mut();
        observed.applied.insert(id, node.applied_index());
        observed.applied_commands.insert(id, Vec::new());
        if node.applied_index() > LogIndex::ZERO {
            observed.counters.snapshots_restored += 1;
        }
        Ok(node)
    }

    fn write(&mut self, disk: &mut Disk, write: &RaftWrite) -> io::Result<()> {
        self.disk.write(disk, write)
    }

    fn apply(&mut self, apply: Apply) {
        let id = self.id;
        let observed = &mut *self.observed.borrow_mut();
        match apply {
            Apply::Snapshot(snapshot) => {
                observed.counters.snapshots_loaded += 1;
                if let Some(oracle) = &observed.snapshot_oracle
                    && let Err(e) = oracle(&snapshot)
                {
                    observed
                        .snapshot_error
                        .get_or_insert(format!("{id} loaded a bad snapshot: {e}"));
                }
                observed.applied.insert(id, snapshot.meta.index);
                observed.applied_commands.insert(id, Vec::new());
            }
            Apply::Entry(entry) => {
                let applied = observed.applied.entry(id).or_default();
                assert_eq!(entry.index, applied.next(), "{id} applies in order");
                *applied = entry.index;
                match entry.payload {
                    Payload::Membership(_) => {
                        observed.membership_applied.insert(entry.index);
                    }
                    Payload::Command(data) => observed
                        .applied_commands
                        .entry(id)
                        .or_default()
                        .push((entry.index, data)),
                    Payload::Noop => {}
                }
            }
            Apply::Read(read) => observed.reads.entry(id).or_default().push(read),
        }
    }
}

type RaftNode<D> = ProtocolNode<RaftStore<D>>;

/// A cluster of Raft nodes on a [`Stepper`], checked after every step.
pub struct Cluster<D: RaftDisk = Journal> {
    pub stepper: Stepper<RaftNode<D>>,
    pub checker: SafetyChecker,
    /// Whether to run the checker after every step (on unless a test feeds the nodes
    /// forged messages, whose consequences the checker may rightly call violations).
    pub checking: bool,
    /// The first violation the checker found.
    pub violation: Option<Violation>,
    /// Directed links that drop messages: (from, to).
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    /// Every message delivered while `record_delivered` is on.
    pub delivered: Vec<Message>,
    pub record_delivered: bool,
    observed: Rc<RefCell<Observed>>,
}

impl Cluster {
    /// `n` voters with `tweak` applied to each node's configuration.
    pub fn new(n: u64, tweak: impl Fn(ConfigBuilder) -> ConfigBuilder + 'static) -> Cluster {
        Cluster::with_members(ids(n), Vec::new(), &[], tweak)
    }

    /// Voters and learners, and nodes outside the configuration (for membership changes to
    /// add) that start with it as their view.
    pub fn with_members(
        voters: Vec<NodeId>,
        learners: Vec<NodeId>,
        others: &[NodeId],
        tweak: impl Fn(ConfigBuilder) -> ConfigBuilder + 'static,
    ) -> Cluster {
        let membership = Membership::new(voters, learners).expect("a valid membership");
        Cluster::with_disks(membership, others, tweak, |_| Journal::default())
    }
}

impl<D: RaftDisk> Cluster<D> {
    /// A node for every member of `membership` and every id of `others`, numbered `1..=n`
    /// with no gap, each on the disk layer `disk` makes for it.
    pub fn with_disks(
        membership: Membership,
        others: &[NodeId],
        tweak: impl Fn(ConfigBuilder) -> ConfigBuilder + 'static,
        mut disk: impl FnMut(NodeId) -> D + 'static,
    ) -> Cluster<D> {
        let n = membership
            .members()
            .chain(others.iter().copied())
            .map(NodeId::get)
            .max()
            .expect("at least one node");
        let tweak: Tweak = Rc::new(tweak);
        let observed = Rc::new(RefCell::new(Observed::default()));
        let shared = Rc::clone(&observed);
        let stepper = Stepper::new(n as usize, 0, move |id| {
            ProtocolNode::new(RaftStore {
                id,
                tweak: Rc::clone(&tweak),
                membership: membership.clone(),
                disk: disk(id),
                observed: Rc::clone(&shared),
            })
        });
        let mut cluster = Cluster {
            stepper,
            checker: SafetyChecker::new(),
            checking: true,
            violation: None,
            blocked: BTreeSet::new(),
            delivered: Vec::new(),
            record_delivered: false,
            observed,
        };
        cluster.check();
        cluster
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.stepper.ids().collect()
    }

    /// The Raft node `id`.
    ///
    /// # Panics
    ///
    /// If it is down.
    pub fn node(&self, id: NodeId) -> &Node {
        self.try_node(id).unwrap_or_else(|| panic!("{id} is down"))
    }

    /// The Raft node `id`, if it runs.
    pub fn try_node(&self, id: NodeId) -> Option<&Node> {
        self.stepper.node(id).and_then(ProtocolNode::protocol)
    }

    /// The running nodes.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> + Clone {
        self.stepper.nodes().filter_map(|(_, n)| n.protocol())
    }

    /// Whether `id` is down (crashed and not restarted).
    pub fn is_down(&self, id: NodeId) -> bool {
        self.stepper.node(id).is_none()
    }

    /// The nodes that are down, lowest first.
    pub fn down(&self) -> Vec<NodeId> {
        self.stepper.ids().filter(|id| self.is_down(*id)).collect()
    }

    /// Calls `f` on the Raft node `id` between two steps (one of its own methods, outside
    /// the node contract) and carries out what it left to do.
    ///
    /// # Panics
    ///
    /// If the node is down.
    pub fn call<R>(&mut self, id: NodeId, f: impl FnOnce(&mut Node) -> R) -> R {
        let out = self
            .stepper
            .with_node(id, |node, ctx| node.with_protocol(ctx, f))
            .flatten()
            .unwrap_or_else(|| panic!("{id} is down"));
        self.check();
        out
    }

    /// What the nodes handed up (see [`Observed`]).
    pub fn observed(&self) -> std::cell::RefMut<'_, Observed> {
        self.observed.borrow_mut()
    }

    /// The reads `id` answered through `Node::read_index`.
    pub fn reads(&self, id: NodeId) -> Vec<ReadState> {
        self.observed().reads.get(&id).cloned().unwrap_or_default()
    }

    /// The last index `id` applied.
    pub fn applied(&self, id: NodeId) -> LogIndex {
        self.observed()
            .applied
            .get(&id)
            .copied()
            .unwrap_or_default()
    }

    /// The commands `id` applied since it started (or restored a snapshot).
    pub fn applied_commands(&self, id: NodeId) -> Vec<(LogIndex, Bytes)> {
        self.observed()
            .applied_commands
            .get(&id)
            .cloned()
            .unwrap_or_default()
    }

    /// The leader with the highest term, if any node is leader.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes()
            .filter(|n| n.role() == Role::Leader)
            .max_by_key(|n| n.term())
            .map(Node::id)
    }

    /// Runs the safety checks; the first violation is kept in `violation`.
    pub fn check(&mut self) {
        if !self.checking {
            return;
        }
        let nodes = self.stepper.nodes().filter_map(|(_, n)| n.protocol());
        if let Err(v) = self.checker.check(nodes) {
            self.violation.get_or_insert(v);
        }
    }

    /// One tick of `id`'s clock.
    pub fn tick(&mut self, id: NodeId) {
        self.stepper.elapse(id, TICK);
        self.check();
    }

    pub fn tick_all(&mut self) {
        for id in self.ids() {
            self.tick(id);
        }
    }

    /// The messages in flight, oldest first.
    pub fn net(&self) -> impl Iterator<Item = &Message> {
        self.stepper.in_flight().iter().map(|e| &e.message)
    }

    /// How many messages are in flight.
    pub fn in_flight(&self) -> usize {
        self.stepper.in_flight().len()
    }

    /// Takes the message at `at` off the network.
    pub fn take(&mut self, at: usize) -> Option<Message> {
        self.stepper.take(at).map(|e| e.message)
    }

    /// Puts `message` on the network, last in flight.
    pub fn send(&mut self, message: Message) {
        self.stepper.send(Envelope {
            from: message.from,
            to: message.to,
            message,
        });
    }

    /// Keeps in flight only the messages `keep` says, in order; drops the rest.
    pub fn retain(&mut self, mut keep: impl FnMut(&Message) -> bool) {
        for message in self.take_all() {
            if keep(&message) {
                self.send(message);
            }
        }
    }

    /// Takes every message in flight off the network.
    pub fn take_all(&mut self) -> Vec<Message> {
        self.stepper
            .take_all()
            .into_iter()
            .map(|e| e.message)
            .collect()
    }

    /// Delivers `message` to `message.to`, unless the link is blocked: one off the
    /// network, or one the test forged.
    pub fn deliver(&mut self, message: Message) {
        if self.blocked.contains(&(message.from, message.to)) {
            return;
        }
        if !self.is_down(message.to) {
            if self.record_delivered {
                self.delivered.push(message.clone());
            }
            let counters = &mut self.observed.borrow_mut().counters;
            match &message.body {
                MessageBody::Snapshot { offset, .. } => {
                    counters.snapshot_chunks += 1;
                    if *offset > 0 {
                        counters.later_chunks += 1;
                    }
                }
                MessageBody::TimeoutNow => counters.timeout_nows += 1,
                _ => {}
            }
        }
        self.stepper.deliver(Envelope {
            from: message.from,
            to: message.to,
            message,
        });
        self.check();
    }

    /// Delivers messages until none are left.
    pub fn deliver_all(&mut self) {
        let mut delivered = 0u64;
        while let Some(envelope) = self.stepper.take(0) {
            delivered += 1;
            assert!(delivered < synod_sim::DELIVERIES_MAX, "messages never stop");
            self.deliver(envelope.message);
        }
    }

    /// Delivers the messages in flight now, oldest first, and not those they cause: one
    /// network hop, so that a test can keep messages in flight while it does more.
    pub fn deliver_hop(&mut self) {
        for message in self.take_all() {
            self.deliver(message);
        }
    }

    /// Drops every message in flight.
    pub fn drop_all(&mut self) {
        self.stepper.take_all();
    }

    /// Makes `id` campaign at once (as a leader transfer would) and runs the election.
    pub fn elect(&mut self, id: NodeId) {
        self.timeout_now(id);
        self.deliver_all();
        assert_eq!(self.node(id).role(), Role::Leader, "{id} should have won");
    }

    /// Hands `id` a `TimeoutNow` (as a leader transfer would): it campaigns at once.
    pub fn timeout_now(&mut self, id: NodeId) {
        let from = self.ids().into_iter().find(|x| *x != id).unwrap_or(id);
        let term = self.node(id).term();
        self.stepper.deliver(Envelope {
            from,
            to: id,
            message: Message {
                from,
                to: id,
                term,
                body: MessageBody::TimeoutNow,
            },
        });
        self.check();
    }

    /// Ticks every node until one is leader, delivering messages as they go.
    pub fn run_until_leader(&mut self, ticks_max: u64) -> Option<NodeId> {
        for _ in 0..ticks_max {
            self.tick_all();
            self.deliver_all();
            if let Some(l) = self.leader() {
                return Some(l);
            }
        }
        None
    }

    /// Proposes `data` on `id` as a client's request: the index it was appended at, or why
    /// it was refused.
    pub fn try_propose(&mut self, id: NodeId, data: &str) -> Result<LogIndex, RequestError> {
        let request = Request::Propose(Bytes::copy_from_slice(data.as_bytes()));
        let handle = self.stepper.request(id, request).expect("the node is up");
        self.check();
        let replies = self.stepper.take_replies();
        let (_, response) = replies
            .into_iter()
            .find(|(h, _)| *h == handle)
            .expect("a proposal is answered at once");
        match response? {
            Response::Proposed(index) => Ok(index),
            other => panic!("a proposal answered {other:?}"),
        }
    }

    /// Proposes on `id`, panicking if it is not leader.
    pub fn propose(&mut self, id: NodeId, data: &str) -> LogIndex {
        self.try_propose(id, data).expect("proposed")
    }

    /// Whether syncs complete as soon as nodes ask (on at the start).
    pub fn set_auto_sync(&mut self, on: bool) {
        self.stepper.set_auto_sync(on);
    }

    /// Completes `id`'s syncs.
    pub fn sync(&mut self, id: NodeId) {
        self.stepper.sync(id);
        self.check();
    }

    pub fn sync_all(&mut self) {
        for id in self.ids() {
            self.sync(id);
        }
    }

    /// Crashes `id`: it loses everything it did not sync.
    pub fn crash(&mut self, id: NodeId) {
        self.crash_in(id, CrashMode::DropUnsynced);
    }

    /// Crashes `id`, its disk keeping what `mode` says of its unsynced writes.
    pub fn crash_in(&mut self, id: NodeId, mode: CrashMode) {
        if self.stepper.crash(id, mode).is_some() {
            self.checker.crashed(id);
        }
    }

    /// Restarts a crashed node from what its disk kept; a node its store cannot rebuild
    /// stays stopped, and the store's error is kept in [`Observed::store_error`].
    pub fn try_restart(&mut self, id: NodeId) {
        if self.is_down(id) {
            self.stepper.restart(id);
            self.observed().counters.restarts += 1;
            self.check();
        }
    }

    /// Restarts a crashed node from what its disk kept.
    ///
    /// # Panics
    ///
    /// If its store cannot rebuild it.
    pub fn restart(&mut self, id: NodeId) {
        self.try_restart(id);
        assert!(self.try_node(id).is_some(), "{id} restarts");
    }

    pub fn isolate(&mut self, id: NodeId) {
        for other in self.ids() {
            if other != id {
                self.blocked.insert((id, other));
                self.blocked.insert((other, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// The entries of `id`'s log.
    pub fn log(&self, id: NodeId) -> Vec<Entry> {
        let store = self.node(id).log();
        let mut out = Vec::new();
        store.entries(store.first_index(), store.last_index(), u64::MAX, &mut out);
        out
    }

    /// (index, term) of every entry of `id`'s log.
    pub fn log_terms(&self, id: NodeId) -> Vec<(u64, u64)> {
        self.log(id)
            .iter()
            .map(|e| (e.index.0, e.term.get()))
            .collect()
    }
}
