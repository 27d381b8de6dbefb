//! A small deterministic cluster harness: nodes, each with a "disk" that its writes are
//! applied to (an in-memory store, or any store that can be synced, crashed and recovered:
//! [`TestStore`]), a message queue the test controls,
//! explicit or automatic syncs, crashes that lose unsynced writes, and the crate's checker
//! of Raft's safety properties ([`SafetyChecker`]) run after every event.

// Helpers used by some test modules only.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use synod_consensus::invariants::{SafetyChecker, Violation};
use synod_consensus::{
    Config, ConfigBuilder, Entry, LogIndex, LogStore, MemLogStore, Membership, Message,
    MessageBody, Node, NodeId, Payload, PersistToken, ReadState, Role, Snapshot,
};

/// The ids `1..=n`.
pub fn ids(n: u64) -> Vec<NodeId> {
    (1..=n).map(NodeId::new).collect()
}

/// A store the harness can apply a node's writes to, make durable, crash and recover from
/// what a crash left.
pub trait TestStore: LogStore + Sized {
    /// What a crashed node leaves behind, until it restarts.
    type Down;
    /// Makes every write so far durable. `false` if the store failed: the node must not be
    /// told its writes are durable, and is crashed (fail-stop).
    fn make_durable(&mut self) -> bool;
    /// What survives a crash of the node that holds this store.
    fn after_crash(&self) -> Self::Down;
    /// The store a restarted node recovers from what survived, with the log the node is
    /// built from, or why it cannot.
    fn recover(down: Self::Down) -> Result<(Self, MemLogStore), String>;
}

impl TestStore for MemLogStore {
    type Down = MemLogStore;
    fn make_durable(&mut self) -> bool {
        self.sync();
        true
    }
    fn after_crash(&self) -> MemLogStore {
        let mut store = self.clone();
        store.crash();
        store
    }
    fn recover(down: MemLogStore) -> Result<(MemLogStore, MemLogStore), String> {
        Ok((down.clone(), down))
    }
}

/// What the harness saw of the paths that randomized runs must reach.
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
    /// Stores that failed to sync, so that their node was crashed.
    pub failed_syncs: u64,
    /// Restarts.
    pub restarts: u64,
}

impl Counters {
    /// Snapshots installed from a leader.
    pub fn installs(&self) -> u64 {
        self.snapshots_loaded - self.snapshots_restored
    }
}

/// A cluster of Raft nodes driven by the test.
pub struct Cluster<S: TestStore = MemLogStore> {
    pub ids: Vec<NodeId>,
    pub nodes: BTreeMap<NodeId, Node>,
    /// The disk of each running node: its writes are applied here, synced, crashed.
    pub disks: BTreeMap<NodeId, S>,
    pub down: BTreeMap<NodeId, S::Down>,
    configs: BTreeMap<NodeId, Config>,
    /// Messages in flight, oldest first.
    pub net: VecDeque<Message>,
    /// Directed links that drop messages: (from, to).
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    /// Sync every node's store as soon as it asks.
    pub auto_sync: bool,
    pending_sync: BTreeMap<NodeId, PersistToken>,
    /// The last index each node applied.
    pub applied: BTreeMap<NodeId, LogIndex>,
    /// The commands each node applied, in order (reset to empty by a snapshot restore).
    pub applied_commands: BTreeMap<NodeId, Vec<(LogIndex, Bytes)>>,
    pub reads: BTreeMap<NodeId, Vec<ReadState>>,
    pub checker: SafetyChecker,
    /// Whether to run the checker after every event (on unless a test feeds the nodes
    /// forged messages, whose consequences the checker may rightly call violations).
    pub checking: bool,
    /// The first violation the checker found.
    pub violation: Option<Violation>,
    /// Every message delivered, for tests that look at traffic.
    pub delivered: Vec<Message>,
    pub record_delivered: bool,
    pub counters: Counters,
    /// The first store that could not be recovered after a crash.
    pub store_error: Option<String>,
    /// The indexes of the membership changes some node applied.
    pub membership_applied: BTreeSet<LogIndex>,
    /// Checks each snapshot handed to a state machine; the first complaint is kept in
    /// `snapshot_error`.
    pub snapshot_oracle: Option<SnapshotOracle>,
    pub snapshot_error: Option<String>,
}

/// A check of a snapshot's data.
pub type SnapshotOracle = Box<dyn Fn(&Snapshot) -> Result<(), String>>;

impl Cluster {
    /// `n` voters with `tweak` applied to each node's config builder.
    pub fn new(n: u64, tweak: impl Fn(ConfigBuilder) -> ConfigBuilder) -> Cluster {
        Cluster::with_members(ids(n), Vec::new(), tweak)
    }

    /// Voters and learners.
    pub fn with_members(
        voters: Vec<NodeId>,
        learners: Vec<NodeId>,
        tweak: impl Fn(ConfigBuilder) -> ConfigBuilder,
    ) -> Cluster {
        let membership = Membership::new(voters, learners).unwrap();
        Cluster::with_stores(membership, &[], tweak, |_, m| {
            (MemLogStore::new(m.clone()), MemLogStore::new(m.clone()))
        })
    }

    /// Adds a node that is not yet in any configuration (for membership changes), starting
    /// from an empty store with `membership` as its initial view.
    pub fn add_node(
        &mut self,
        id: NodeId,
        membership: Membership,
        tweak: impl Fn(ConfigBuilder) -> ConfigBuilder,
    ) {
        let store = MemLogStore::new(membership);
        self.add_node_with(id, (store.clone(), store), tweak);
    }
}

impl<S: TestStore> Cluster<S> {
    /// A node for every member of `membership` and every id of `others` (nodes outside the
    /// configuration, for membership changes to add), each on the store `store` makes from
    /// the initial membership (with the log the node is built from).
    pub fn with_stores(
        membership: Membership,
        others: &[NodeId],
        tweak: impl Fn(ConfigBuilder) -> ConfigBuilder,
        mut store: impl FnMut(NodeId, &Membership) -> (S, MemLogStore),
    ) -> Cluster<S> {
        let mut all: Vec<NodeId> = membership.members().chain(others.iter().copied()).collect();
        all.sort();
        all.dedup();
        let mut nodes = BTreeMap::new();
        let mut disks = BTreeMap::new();
        let mut configs = BTreeMap::new();
        for id in &all {
            let config = tweak(Config::builder(*id).seed(id.get() * 7919))
                .build()
                .unwrap();
            let (disk, log) = store(*id, &membership);
            nodes.insert(*id, Node::new(config.clone(), log));
            disks.insert(*id, disk);
            configs.insert(*id, config);
        }
        Cluster {
            ids: all.clone(),
            nodes,
            disks,
            down: BTreeMap::new(),
            configs,
            net: VecDeque::new(),
            blocked: BTreeSet::new(),
            auto_sync: true,
            pending_sync: BTreeMap::new(),
            applied: all.iter().map(|id| (*id, LogIndex::ZERO)).collect(),
            applied_commands: all.iter().map(|id| (*id, Vec::new())).collect(),
            reads: BTreeMap::new(),
            checker: SafetyChecker::new(),
            checking: true,
            violation: None,
            delivered: Vec::new(),
            record_delivered: false,
            counters: Counters::default(),
            store_error: None,
            membership_applied: BTreeSet::new(),
            snapshot_oracle: None,
            snapshot_error: None,
        }
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[&id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes.get_mut(&id).unwrap()
    }

    /// Adds node `id` on `store`, outside any configuration until a change adds it.
    pub fn add_node_with(
        &mut self,
        id: NodeId,
        (disk, log): (S, MemLogStore),
        tweak: impl Fn(ConfigBuilder) -> ConfigBuilder,
    ) {
        let config = tweak(Config::builder(id).seed(id.get() * 7919))
            .build()
            .unwrap();
        self.nodes.insert(id, Node::new(config.clone(), log));
        self.disks.insert(id, disk);
        self.configs.insert(id, config);
        self.ids.push(id);
        self.applied.insert(id, LogIndex::ZERO);
        self.applied_commands.insert(id, Vec::new());
    }

    /// The leader with the highest term, if any node is leader.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.role() == Role::Leader)
            .max_by_key(|n| n.term())
            .map(Node::id)
    }

    /// Handles everything `id` wants done.
    pub fn process(&mut self, id: NodeId) {
        let mut guard = 0;
        loop {
            let Some(node) = self.nodes.get_mut(&id) else {
                return;
            };
            if !node.has_ready() {
                break;
            }
            guard += 1;
            assert!(guard < 10_000, "node {id} never runs out of work");
            let ready = node.ready();
            if let Some((token, write)) = ready.persist {
                let disk = self.disks.get_mut(&id).expect("a running node has a disk");
                disk.apply(&write);
                if !self.auto_sync {
                    self.pending_sync.insert(id, token);
                } else if disk.make_durable() {
                    node.persisted(token);
                } else {
                    // Fail-stop: the writes are never acknowledged.
                    self.counters.failed_syncs += 1;
                    self.crash(id);
                    return;
                }
            }
            self.check();
            for msg in ready.messages {
                self.net.push_back(msg);
            }
            if let Some(snapshot) = ready.snapshot {
                self.counters.snapshots_loaded += 1;
                if let Some(oracle) = &self.snapshot_oracle
                    && let Err(e) = oracle(&snapshot)
                {
                    self.snapshot_error
                        .get_or_insert(format!("{id} loaded a bad snapshot: {e}"));
                }
                self.applied.insert(id, snapshot.meta.index);
                self.applied_commands.insert(id, Vec::new());
            }
            for entry in ready.committed {
                let applied = self.applied.get_mut(&id).unwrap();
                assert_eq!(entry.index, applied.next(), "{id} applies in order");
                *applied = entry.index;
                if let Payload::Membership(_) = &entry.payload {
                    self.membership_applied.insert(entry.index);
                }
                if let Payload::Command(data) = &entry.payload {
                    self.applied_commands
                        .get_mut(&id)
                        .unwrap()
                        .push((entry.index, data.clone()));
                }
            }
            self.reads.entry(id).or_default().extend(ready.reads);
        }
        self.check();
    }

    /// Syncs `id`'s store and acknowledges its latest persistence request.
    pub fn sync(&mut self, id: NodeId) {
        if let Some(token) = self.pending_sync.remove(&id) {
            let node = self.nodes.get_mut(&id).unwrap();
            if self.disks.get_mut(&id).unwrap().make_durable() {
                node.persisted(token);
                self.process(id);
            } else {
                self.counters.failed_syncs += 1;
                self.crash(id);
            }
        }
    }

    pub fn sync_all(&mut self) {
        for id in self.ids.clone() {
            self.sync(id);
        }
    }

    /// One tick on `id`.
    pub fn tick(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.tick();
            self.process(id);
        }
    }

    pub fn tick_all(&mut self) {
        for id in self.ids.clone() {
            self.tick(id);
        }
    }

    /// Delivers the message at `at` in the queue.
    pub fn deliver_at(&mut self, at: usize) {
        let Some(msg) = self.net.remove(at) else {
            return;
        };
        self.deliver(msg);
    }

    pub fn deliver(&mut self, msg: Message) {
        if self.blocked.contains(&(msg.from, msg.to)) {
            return;
        }
        let to = msg.to;
        if let Some(node) = self.nodes.get_mut(&to) {
            if self.record_delivered {
                self.delivered.push(msg.clone());
            }
            match &msg.body {
                MessageBody::Snapshot { offset, .. } => {
                    self.counters.snapshot_chunks += 1;
                    if *offset > 0 {
                        self.counters.later_chunks += 1;
                    }
                }
                MessageBody::TimeoutNow => self.counters.timeout_nows += 1,
                _ => {}
            }
            node.step(msg);
            self.process(to);
        }
    }

    /// Delivers messages until none are left (syncing as nodes ask, when `auto_sync`).
    pub fn deliver_all(&mut self) {
        let mut guard = 0;
        while let Some(msg) = self.net.pop_front() {
            guard += 1;
            if guard > 1_000_000 - 8 {
                eprintln!("{msg:?}");
            }
            assert!(guard < 1_000_000, "messages never stop");
            self.deliver(msg);
        }
    }

    /// Delivers the messages in flight now, oldest first, and not those they cause: one
    /// network hop, so that a test can keep messages in flight while it does more.
    pub fn deliver_hop(&mut self) {
        for _ in 0..self.net.len() {
            if let Some(msg) = self.net.pop_front() {
                self.deliver(msg);
            }
        }
    }

    /// Drops every message in flight.
    pub fn drop_all(&mut self) {
        self.net.clear();
    }

    /// Makes `id` campaign at once (as a leader transfer would) and runs the election.
    pub fn elect(&mut self, id: NodeId) {
        let term = self.node(id).term();
        let from = self.ids.iter().copied().find(|x| *x != id).unwrap_or(id);
        self.nodes.get_mut(&id).unwrap().step(Message {
            from,
            to: id,
            term,
            body: MessageBody::TimeoutNow,
        });
        self.process(id);
        self.deliver_all();
        assert_eq!(self.node(id).role(), Role::Leader, "{id} should have won");
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

    /// Proposes on `id`, panicking if it is not leader.
    pub fn propose(&mut self, id: NodeId, data: &str) -> LogIndex {
        let index = self
            .node_mut(id)
            .propose(Bytes::copy_from_slice(data.as_bytes()))
            .unwrap();
        self.process(id);
        index
    }

    /// Crashes `id`: it loses everything it did not sync; messages to it are dropped.
    pub fn crash(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.remove(&id) {
            drop(node);
            let down = self
                .disks
                .remove(&id)
                .expect("a running node has a disk")
                .after_crash();
            self.down.insert(id, down);
            self.pending_sync.remove(&id);
            self.checker.crashed(id);
        }
    }

    /// Restarts a crashed node from its durable state.
    pub fn restart(&mut self, id: NodeId) {
        if let Some(down) = self.down.remove(&id) {
            let (disk, log) = match S::recover(down) {
                Ok(recovered) => recovered,
                Err(e) => {
                    self.store_error
                        .get_or_insert(format!("{id} cannot restart: {e}"));
                    return;
                }
            };
            self.counters.restarts += 1;
            let node = Node::new(self.configs[&id].clone(), log);
            self.disks.insert(id, disk);
            if node.applied_index() > LogIndex::ZERO {
                self.counters.snapshots_restored += 1;
            }
            self.applied.insert(id, node.applied_index());
            self.applied_commands.insert(id, Vec::new());
            self.nodes.insert(id, node);
            self.process(id);
        }
    }

    pub fn isolate(&mut self, id: NodeId) {
        for other in self.ids.clone() {
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

    /// Runs the safety checks; the first violation is kept in `violation`.
    pub fn check(&mut self) {
        if !self.checking {
            return;
        }
        if let Err(v) = self.checker.check(self.nodes.values()) {
            self.violation.get_or_insert(v);
        }
    }
}
