//! Raft nodes stepped by hand on synod-sim's `Stepper`, each run by the simulator's one
//! generic adapter, `ProtocolNode`: the test delivers the messages it chooses (changed, if
//! it likes), moves each node's clock a tick at a time, completes syncs when it says, and
//! crashes and restarts nodes between two steps. Raft's safety properties are checked after
//! every step ([`SafetyChecker`]).
//!
//! A node's store ([`JournalStore`]) keeps its log in memory and journals every
//! `RaftWrite` to the node's simulated disk; a crash loses what was not synced, and a
//! restarted node is rebuilt from the journal.

use std::collections::BTreeSet;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use synod_consensus::invariants::{SafetyChecker, Violation};
use synod_consensus::journal::{JournalWriter, replay};
use synod_consensus::{
    Apply, Config, ConfigBuilder, Entry, LogIndex, Membership, Message, Node, NodeId, Payload,
    RaftWrite, Request, RequestError, Response, Role,
};
use synod_sim::{Boot, CrashMode, Disk, Envelope, ProtocolNode, ProtocolStore, Stepper};

use crate::sim::{JOURNAL, journal_append};

/// One tick of Raft's clock (its default interval): what [`Cluster::tick`] moves a node's
/// clock by.
pub const TICK: Duration = Duration::from_millis(10);

/// A change to every node's configuration.
pub type Tweak = Rc<dyn Fn(ConfigBuilder) -> ConfigBuilder>;

/// A node's store: the journal of its writes on the simulated disk, and the commands it
/// applied since it started.
pub struct JournalStore {
    tweak: Tweak,
    journal: JournalWriter,
    applied: Vec<(LogIndex, Bytes)>,
}

impl ProtocolStore for JournalStore {
    type Protocol = Node;

    fn recover(&mut self, boot: Boot<'_>) -> io::Result<Node> {
        let membership =
            Membership::new((1..=boot.nodes as u64).map(NodeId::new), []).expect("voters");
        let journal = boot.disk.read(JOURNAL).unwrap_or_default();
        let (log, valid) = replay(&journal, &membership).map_err(io::Error::other)?;
        boot.disk.set_len(JOURNAL, valid as u64)?;
        self.journal = JournalWriter::new(valid as u64);
        let config = (self.tweak)(Config::builder(boot.id).seed(boot.id.get() * 7919))
            .build()
            .map_err(io::Error::other)?;
        // The node asks to be woken at once, which starts its clock at its start.
        Ok(Node::new(config, log))
    }

    fn write(&mut self, disk: &mut Disk, write: &RaftWrite) -> io::Result<()> {
        journal_append(&mut self.journal, disk, write)
    }

    fn apply(&mut self, apply: Apply) {
        match apply {
            Apply::Entry(Entry {
                index,
                payload: Payload::Command(data),
                ..
            }) => self.applied.push((index, data)),
            Apply::Snapshot(_) => self.applied.clear(),
            Apply::Entry(_) | Apply::Read(_) => {}
        }
    }
}

type RaftNode = ProtocolNode<JournalStore>;

/// A cluster of Raft nodes `1..=n` on a [`Stepper`], checked after every step.
pub struct Cluster {
    pub stepper: Stepper<RaftNode>,
    checker: SafetyChecker,
    /// The first violation the checker found.
    pub violation: Option<Violation>,
    /// Directed links that drop messages: (from, to).
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    /// Every message delivered while `record_delivered` is on.
    pub delivered: Vec<Message>,
    pub record_delivered: bool,
}

impl Cluster {
    /// `n` voters with `tweak` applied to each node's configuration.
    pub fn new(n: usize, tweak: impl Fn(ConfigBuilder) -> ConfigBuilder + 'static) -> Cluster {
        let tweak: Tweak = Rc::new(tweak);
        let stepper = Stepper::new(n, 0, move |_| {
            ProtocolNode::new(JournalStore {
                tweak: Rc::clone(&tweak),
                journal: JournalWriter::new(0),
                applied: Vec::new(),
            })
        });
        let mut cluster = Cluster {
            stepper,
            checker: SafetyChecker::new(),
            violation: None,
            blocked: BTreeSet::new(),
            delivered: Vec::new(),
            record_delivered: false,
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
        self.stepper
            .node(id)
            .and_then(ProtocolNode::protocol)
            .unwrap_or_else(|| panic!("{id} is down"))
    }

    /// The commands `id` applied since it started.
    pub fn applied_commands(&self, id: NodeId) -> Vec<(LogIndex, Bytes)> {
        self.stepper
            .node(id)
            .map(|n| n.store().applied.clone())
            .unwrap_or_default()
    }

    /// The leader with the highest term, if any node is leader.
    pub fn leader(&self) -> Option<NodeId> {
        self.stepper
            .nodes()
            .filter_map(|(_, n)| n.protocol())
            .filter(|n| n.role() == Role::Leader)
            .max_by_key(|n| n.term())
            .map(Node::id)
    }

    /// Runs the safety checks; the first violation is kept in `violation`.
    pub fn check(&mut self) {
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
        if self.record_delivered {
            self.delivered.push(message.clone());
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
        self.deliver(Message {
            from,
            to: id,
            term,
            body: synod_consensus::MessageBody::TimeoutNow,
        });
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

    /// Proposes `data` on `id`: the index it was appended at, or why it was refused.
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

    /// Crashes `id`: it loses everything it did not sync.
    pub fn crash(&mut self, id: NodeId) {
        if self.stepper.crash(id, CrashMode::DropUnsynced).is_some() {
            self.checker.crashed(id);
        }
    }

    /// Restarts a crashed node from what its disk kept.
    pub fn restart(&mut self, id: NodeId) {
        self.stepper.restart(id);
        assert!(self.stepper.node(id).is_some(), "{id} restarts");
        self.check();
    }

    pub fn isolate(&mut self, id: NodeId) {
        isolate(&mut self.blocked, self.stepper.ids(), id);
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// The entries of `id`'s log.
    pub fn log(&self, id: NodeId) -> Vec<Entry> {
        entries(self.node(id))
    }

    /// (index, term) of every entry of `id`'s log.
    pub fn log_terms(&self, id: NodeId) -> Vec<(u64, u64)> {
        index_terms(&self.log(id))
    }
}

/// Blocks every link between `id` and the other nodes of `ids`, both ways.
pub fn isolate(
    blocked: &mut BTreeSet<(NodeId, NodeId)>,
    ids: impl IntoIterator<Item = NodeId>,
    id: NodeId,
) {
    for other in ids {
        if other != id {
            blocked.insert((id, other));
            blocked.insert((other, id));
        }
    }
}

/// The entries of `node`'s log.
pub fn entries(node: &Node) -> Vec<Entry> {
    let store = node.log();
    let mut out = Vec::new();
    store.entries(store.first_index(), store.last_index(), u64::MAX, &mut out);
    out
}

/// (index, term) of each entry.
pub fn index_terms(entries: &[Entry]) -> Vec<(u64, u64)> {
    entries.iter().map(|e| (e.index.0, e.term.get())).collect()
}
