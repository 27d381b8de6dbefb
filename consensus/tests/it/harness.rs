//! A small deterministic cluster harness: nodes with in-memory stores, a message queue the
//! test controls, explicit or automatic syncs, crashes that lose unsynced writes, and the
//! crate's checker of Raft's safety properties ([`SafetyChecker`]) run after every event.

// Helpers used by some test modules only.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use synod_consensus::invariants::{SafetyChecker, Violation};
use synod_consensus::{
    Config, ConfigBuilder, Entry, LogIndex, LogStore, MemLogStore, Membership, Message,
    MessageBody, Node, NodeId, Payload, PersistToken, ReadState, Role,
};

/// The ids `1..=n`.
pub fn ids(n: u64) -> Vec<NodeId> {
    (1..=n).map(NodeId::new).collect()
}

/// A cluster of Raft nodes driven by the test.
pub struct Cluster {
    pub ids: Vec<NodeId>,
    pub nodes: BTreeMap<NodeId, Node<MemLogStore>>,
    pub down: BTreeMap<NodeId, MemLogStore>,
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
}

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
        let membership = Membership::new(voters.clone(), learners.clone()).unwrap();
        let mut all: Vec<NodeId> = voters.into_iter().chain(learners).collect();
        all.sort();
        let mut nodes = BTreeMap::new();
        let mut configs = BTreeMap::new();
        for id in &all {
            let config = tweak(Config::builder(*id).seed(id.get() * 7919))
                .build()
                .unwrap();
            nodes.insert(
                *id,
                Node::new(config.clone(), MemLogStore::new(membership.clone())),
            );
            configs.insert(*id, config);
        }
        Cluster {
            ids: all.clone(),
            nodes,
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
        }
    }

    pub fn node(&self, id: NodeId) -> &Node<MemLogStore> {
        &self.nodes[&id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node<MemLogStore> {
        self.nodes.get_mut(&id).unwrap()
    }

    /// Adds a node that is not yet in any configuration (for membership changes), starting
    /// from an empty store with `membership` as its initial view.
    pub fn add_node(
        &mut self,
        id: NodeId,
        membership: Membership,
        tweak: impl Fn(ConfigBuilder) -> ConfigBuilder,
    ) {
        let config = tweak(Config::builder(id).seed(id.get() * 7919))
            .build()
            .unwrap();
        self.nodes
            .insert(id, Node::new(config.clone(), MemLogStore::new(membership)));
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
            if let Some(token) = ready.persist {
                if self.auto_sync {
                    node.store_mut().sync();
                    node.persisted(token);
                } else {
                    self.pending_sync.insert(id, token);
                }
            }
            self.check();
            for msg in ready.messages {
                self.net.push_back(msg);
            }
            if let Some(snapshot) = ready.snapshot {
                self.applied.insert(id, snapshot.meta.index);
                self.applied_commands.insert(id, Vec::new());
            }
            for entry in ready.committed {
                let applied = self.applied.get_mut(&id).unwrap();
                assert_eq!(entry.index, applied.next(), "{id} applies in order");
                *applied = entry.index;
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
            node.store_mut().sync();
            node.persisted(token);
            self.process(id);
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
            let mut store = node_into_store(node);
            store.crash();
            self.down.insert(id, store);
            self.pending_sync.remove(&id);
            self.checker.crashed(id);
        }
    }

    /// Restarts a crashed node from its durable state.
    pub fn restart(&mut self, id: NodeId) {
        if let Some(store) = self.down.remove(&id) {
            let node = Node::new(self.configs[&id].clone(), store);
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
        let store = self.node(id).store();
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

fn node_into_store(node: Node<MemLogStore>) -> MemLogStore {
    node.store().clone()
}
