//! A small deterministic cluster harness: nodes with in-memory stores, a message queue the
//! test controls, explicit or automatic syncs, crashes that lose unsynced writes, and a
//! checker of Raft's safety properties run after every event.

// Helpers used by some test modules only.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use synod_consensus::{
    Config, ConfigBuilder, Entry, LogIndex, LogStore, MemLogStore, Membership, Message,
    MessageBody, Node, NodeId, Payload, PersistToken, ReadState, Role, Term,
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
    pub checker: Checker,
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
            checker: Checker::default(),
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
            // The checker learns the new commit index before anything is applied.
            self.check();
            for msg in ready.messages {
                self.net.push_back(msg);
            }
            if let Some(snapshot) = ready.snapshot {
                self.applied.insert(id, snapshot.meta.index);
                self.applied_commands.insert(id, Vec::new());
            }
            for entry in ready.committed {
                self.checker.on_apply(id, &entry);
                let applied = self.applied.get_mut(&id).unwrap();
                if entry.index != applied.next() {
                    self.checker
                        .fail(format!("{id} applied {} after {}", entry.index, applied));
                }
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
            self.checker.on_crash(id);
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

    /// Runs the safety checks; the first violation is kept in `checker.violation`.
    pub fn check(&mut self) {
        let nodes: Vec<&Node<MemLogStore>> = self.nodes.values().collect();
        self.checker.check(&nodes);
    }
}

fn node_into_store(node: Node<MemLogStore>) -> MemLogStore {
    node.store().clone()
}

/// Raft's safety properties, checked across the whole cluster after every event.
#[derive(Default)]
pub struct Checker {
    /// The leader of each term seen so far (election safety).
    leaders: BTreeMap<Term, NodeId>,
    /// Every committed entry, by index (committed entries never change; state-machine
    /// safety).
    committed: BTreeMap<LogIndex, Entry>,
    /// The term in which each committed entry was committed.
    committed_in: BTreeMap<LogIndex, Term>,
    /// Per node: the last term, commit and applied seen (monotonic while it is up).
    last_seen: BTreeMap<NodeId, (Term, LogIndex)>,
    pub violation: Option<String>,
    pub checks: u64,
}

impl Checker {
    pub fn fail(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(what);
        }
    }

    pub fn on_crash(&mut self, id: NodeId) {
        self.last_seen.remove(&id);
    }

    pub fn on_apply(&mut self, id: NodeId, entry: &Entry) {
        match self.committed.get(&entry.index) {
            Some(c) if c != entry => self.fail(format!(
                "state-machine safety: {id} applied {:?} at {} but {:?} was committed there",
                entry.payload, entry.index, c.payload
            )),
            Some(_) => {}
            None => self.fail(format!(
                "{id} applied {} before it was known committed",
                entry.index
            )),
        }
    }

    pub fn check<S: LogStore>(&mut self, nodes: &[&Node<S>]) {
        self.checks += 1;
        // Log matching: an (index, term) pair identifies the entry and its whole prefix.
        let mut by_position: BTreeMap<(LogIndex, Term), (&Payload, Option<Term>)> = BTreeMap::new();
        let mut logs = Vec::new();
        for node in nodes {
            let store = node.store();
            let mut entries = Vec::new();
            store.entries(
                store.first_index(),
                store.last_index(),
                u64::MAX,
                &mut entries,
            );
            logs.push((node.id(), entries));
        }
        for (id, entries) in &logs {
            let node = nodes.iter().find(|n| n.id() == *id).unwrap();
            for entry in entries {
                let prev_term = node.store().term(entry.index.prev());
                match by_position.get(&(entry.index, entry.term)) {
                    Some((payload, prev)) => {
                        if *payload != &entry.payload
                            || (prev.is_some() && prev_term.is_some() && *prev != prev_term)
                        {
                            self.fail(format!(
                                "log matching: two different entries at {} in {}",
                                entry.index, entry.term
                            ));
                        }
                    }
                    None => {
                        by_position.insert((entry.index, entry.term), (&entry.payload, prev_term));
                    }
                }
            }
        }
        for node in nodes {
            let id = node.id();
            // Election safety: at most one leader per term.
            if node.role() == Role::Leader {
                match self.leaders.get(&node.term()) {
                    Some(other) if *other != id => self.fail(format!(
                        "election safety: {other} and {id} both led {}",
                        node.term()
                    )),
                    Some(_) => {}
                    None => {
                        self.leaders.insert(node.term(), id);
                        // Leader completeness: a new leader holds every entry committed in
                        // an earlier term (terms are not ordered in real time: a leader of
                        // an old term may win late, thanks to delayed votes, and rightly
                        // lack entries a later term committed).
                        let store = node.store();
                        for (index, entry) in &self.committed {
                            if *index < store.first_index()
                                || self
                                    .committed_in
                                    .get(index)
                                    .is_none_or(|t| *t >= node.term())
                            {
                                continue;
                            }
                            if store.term(*index) != Some(entry.term) {
                                self.violation.get_or_insert(format!(
                                    "leader completeness: {id} leads {} without entry {} committed in {}",
                                    node.term(),
                                    index,
                                    self.committed_in[index]
                                ));
                            }
                        }
                    }
                }
            }
            // Monotonic term and commit while up.
            let seen = (node.term(), node.commit_index());
            if let Some(prev) = self.last_seen.get(&id)
                && (seen.0 < prev.0 || seen.1 < prev.1)
            {
                self.fail(format!("{id} went back from {prev:?} to {seen:?}"));
            }
            self.last_seen.insert(id, seen);
        }
        // Committed entries never change.
        for (id, entries) in &logs {
            let node = nodes.iter().find(|n| n.id() == *id).unwrap();
            for entry in entries
                .iter()
                .take_while(|e| e.index <= node.commit_index())
            {
                match self.committed.get(&entry.index) {
                    Some(c) if c != entry => {
                        let what = format!(
                            "committed entry changed at {}: {:?} in {} then {:?} in {} (on {id})",
                            entry.index, c.payload, c.term, entry.payload, entry.term
                        );
                        self.fail(what);
                    }
                    Some(_) => {}
                    None => {
                        self.committed.insert(entry.index, entry.clone());
                        // The first node to show an entry committed is the leader that
                        // committed it: its term is the entry's commit term.
                        self.committed_in.insert(entry.index, node.term());
                    }
                }
            }
        }
    }

    pub fn committed_len(&self) -> usize {
        self.committed.len()
    }

    pub fn committed(&self) -> &BTreeMap<LogIndex, Entry> {
        &self.committed
    }
}
