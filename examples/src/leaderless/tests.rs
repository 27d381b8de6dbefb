//! Scenarios of the leaderless store's state machine, stepped by hand: a small network that
//! delivers every message unless a link is cut, persists acknowledged at once, and time
//! moved in steps.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use synod_clocks::{VersionVector, WallTime};
use synod_node::{Effect, Input, NodeId, Protocol, RequestId, Time};
use synod_partitioning::{NodeSpec, PartitionId, PartitionTable};
use synod_quorum::Consistency;

use super::machine::{
    AskId, Config, Failure, Leaderless, Lww, MOVES_ENUMERATED_MAX, Message, Mode, MoveKind,
    MovePhase, Notice, Read, Record, Recovered, Request, Response, Vv, table_of,
};

/// A second process started under a node's id: it is sent a copy of every message to that
/// id, and its messages leave under it; its persists are acknowledged at once.
struct Twin<M: Mode> {
    node: Leaderless<M>,
    wake: Option<Time>,
    notices: Vec<Notice>,
}

/// A cluster of `n` nodes stepped by hand.
struct Cluster<M: Mode> {
    nodes: Vec<Option<Leaderless<M>>>,
    configs: Vec<Config>,
    /// Each node's records, in the order persisted (all acknowledged at once).
    disks: Vec<Vec<Record<M::State>>>,
    wakes: Vec<Option<Time>>,
    net: VecDeque<(NodeId, NodeId, Message<M::State>)>,
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Drops the messages it picks (from, to, message) as a cut link would.
    dropped: fn(NodeId, NodeId, &Message<M::State>) -> bool,
    replies: BTreeMap<RequestId, Response>,
    /// What each node handed up.
    notices: Vec<Vec<Notice>>,
    /// Hand-off bytes in flight from a node to another, by batch: counted when sent, and
    /// until an acknowledgement that skipped nothing is delivered.
    hand_off: BTreeMap<(NodeId, NodeId), BTreeMap<u64, usize>>,
    /// The most hand-off bytes ever in flight from one node to another.
    hand_off_peak: usize,
    /// The most hand-off bytes ever sent from one node to another, resends included.
    hand_off_sent: BTreeMap<(NodeId, NodeId), usize>,
    /// Keys of the states in hand-off batches sent from a node to another, resends
    /// included.
    hand_off_keys: BTreeMap<(NodeId, NodeId), usize>,
    /// Hand-off batches sent by each node, resends included.
    hand_off_batches: BTreeMap<NodeId, usize>,
    /// Every stream ask and answer sent ([`Message::StreamTo`], [`Message::Streamed`]).
    stream_log: Vec<(NodeId, NodeId, Message<M::State>)>,
    /// A node id whose messages are kept here instead of delivered (a peer the test plays).
    capture: Option<NodeId>,
    captured: Vec<(NodeId, Message<M::State>)>,
    /// A second process under the id of a node (its id's messages delivered to both).
    twin: Option<Twin<M>>,
    /// Messages held back instead of delivered (`hold` says which), in the order sent.
    hold: Option<Hold<M>>,
    held: Vec<(NodeId, NodeId, Message<M::State>)>,
    /// The most moves under way at any node after any step; with `slots_checked`, a step
    /// after which a node has more than [`MOVES_ENUMERATED_MAX`] fails the test.
    under_way_peak: usize,
    slots_checked: bool,
    now: Time,
    next_id: u64,
}

/// Which messages (from, to, message) a cluster holds back.
type Hold<M> = Box<dyn Fn(NodeId, NodeId, &Message<<M as synod_quorum::Resolver>::State>) -> bool>;

fn id(n: usize) -> NodeId {
    NodeId::new(n as u64)
}

impl<M: Mode> Cluster<M> {
    /// `n` nodes, node `i`'s wall clock `skew_ms[i]` ahead of true time (negative: behind).
    fn new(n: usize, initial: usize, skew_ms: &[i64]) -> Self {
        Self::with_members(n, &(1..=initial).collect::<Vec<_>>(), skew_ms)
    }

    /// `n` nodes of which `initial` are the cluster's first members (started and settled);
    /// the others are configured to join them.
    fn with_members(n: usize, initial: &[usize], skew_ms: &[i64]) -> Self {
        Self::build(n, initial, skew_ms, |_| {})
    }

    /// [`Cluster::with_members`], each node's configuration changed by `tweak`.
    fn build(n: usize, initial: &[usize], skew_ms: &[i64], tweak: impl Fn(&mut Config)) -> Self {
        let mut cluster = Self::configure(n, initial, skew_ms, tweak);
        for &i in initial {
            cluster.start(i);
        }
        cluster.settle();
        // The first members admit each other.
        cluster.run_for(500);
        cluster
    }

    /// The cluster [`Cluster::build`] makes, with no node started.
    fn configure(
        n: usize,
        initial: &[usize],
        skew_ms: &[i64],
        tweak: impl Fn(&mut Config),
    ) -> Self {
        let members: Vec<NodeId> = initial.iter().map(|&i| id(i)).collect();
        let mut configs = Vec::new();
        for i in 1..=n {
            let mut seeds = members.clone();
            if !seeds.contains(&id(i)) {
                seeds.push(id(i));
            }
            let mut config = Config::new(id(i), seeds);
            let skew = skew_ms.get(i - 1).copied().unwrap_or(0);
            let base = WallTime::from_secs(1_700_000_000);
            config.wall_clock_at_zero = if skew >= 0 {
                base.saturating_add(Duration::from_millis(skew as u64))
            } else {
                WallTime::from_nanos(base.as_nanos() - skew.unsigned_abs() * 1_000_000)
            };
            config.probe_interval_ms = 200;
            config.probe_timeout_ms = 100;
            config.anti_entropy_interval_ms = 100;
            config.partitions = 8;
            // Node i's draws differ from every other node's: `Leaderless::start` seeds its
            // generator with the seed, the generation and the id, so a seed of `i` would
            // cancel the id (every node drawing the same back-offs).
            config.seed = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            tweak(&mut config);
            configs.push(config);
        }
        Cluster {
            nodes: (0..n).map(|_| None).collect(),
            configs,
            disks: vec![Vec::new(); n],
            wakes: vec![None; n],
            net: VecDeque::new(),
            cut: BTreeSet::new(),
            dropped: |_, _, _| false,
            replies: BTreeMap::new(),
            notices: vec![Vec::new(); n],
            hand_off: BTreeMap::new(),
            hand_off_peak: 0,
            hand_off_sent: BTreeMap::new(),
            hand_off_keys: BTreeMap::new(),
            hand_off_batches: BTreeMap::new(),
            stream_log: Vec::new(),
            capture: None,
            captured: Vec::new(),
            twin: None,
            hold: None,
            held: Vec::new(),
            under_way_peak: 0,
            slots_checked: true,
            now: Time::from_secs(1),
            next_id: 0,
        }
    }

    fn start(&mut self, n: usize) {
        let mut recovered = Recovered::default();
        for record in self.disks[n - 1].clone() {
            recovered.take(record);
        }
        let node = Leaderless::start(self.configs[n - 1].clone(), recovered);
        self.nodes[n - 1] = Some(node);
        self.wakes[n - 1] = None;
        self.drain(n);
    }

    /// Starts a second process under node `n`'s id, with `config`, on an empty disk.
    fn start_twin(&mut self, config: Config) {
        let node = Leaderless::start(config, Recovered::default());
        self.twin = Some(Twin {
            node,
            wake: None,
            notices: Vec::new(),
        });
        self.drain_twin();
    }

    fn drain_twin(&mut self) {
        let Some(twin) = self.twin.as_mut() else {
            return;
        };
        let me = twin.node.id();
        loop {
            let mut last = None;
            while let Some(effect) = twin.node.poll() {
                match effect {
                    Effect::Send { to, message } => self.net.push_back((me, to, message)),
                    Effect::Persist { token, .. } => last = Some(token),
                    Effect::WakeAt(at) => twin.wake = Some(at),
                    Effect::Apply(notice) => twin.notices.push(notice),
                    Effect::Reply { .. } => {}
                }
            }
            match last {
                Some(token) => twin.node.handle(self.now, Input::Persisted(token)),
                None => return,
            }
        }
    }

    fn crash(&mut self, n: usize) {
        self.nodes[n - 1] = None;
    }

    fn node(&self, n: usize) -> &Leaderless<M> {
        self.nodes[n - 1].as_ref().expect("running")
    }

    /// Carries out node `n`'s effects; persists are acknowledged at once.
    fn drain(&mut self, n: usize) {
        loop {
            let Some(node) = self.nodes[n - 1].as_mut() else {
                return;
            };
            let mut last = None;
            while let Some(effect) = node.poll() {
                match effect {
                    Effect::Send { to, message } => {
                        if let Some((batch, bytes)) = hand_off_bytes(&message) {
                            let flight = self.hand_off.entry((id(n), to)).or_default();
                            flight.insert(batch, bytes);
                            let total: usize = flight.values().sum();
                            self.hand_off_peak = self.hand_off_peak.max(total);
                            *self.hand_off_sent.entry((id(n), to)).or_default() += bytes;
                        }
                        match &message {
                            Message::HandOff { states, .. } => {
                                *self.hand_off_keys.entry((id(n), to)).or_default() += states.len();
                                *self.hand_off_batches.entry(id(n)).or_default() += 1;
                            }
                            Message::StreamTo { .. } | Message::Streamed { .. } => {
                                self.stream_log.push((id(n), to, message.clone()));
                            }
                            _ => {}
                        }
                        self.net.push_back((id(n), to, message));
                    }
                    Effect::Reply { id, response } => {
                        self.replies.insert(id, response);
                    }
                    Effect::Persist { token, write } => {
                        self.disks[n - 1].push(write);
                        last = Some(token);
                    }
                    Effect::WakeAt(at) => self.wakes[n - 1] = Some(at),
                    Effect::Apply(notice) => self.notices[n - 1].push(notice),
                }
            }
            match last {
                Some(token) => node.handle(self.now, Input::Persisted(token)),
                None => {
                    let under_way = node.moves_under_way();
                    self.under_way_peak = self.under_way_peak.max(under_way);
                    assert!(
                        !self.slots_checked || under_way <= MOVES_ENUMERATED_MAX,
                        "node {n} has {under_way} moves under way at {:?}: {:?}",
                        self.now,
                        node.info()
                    );
                    return;
                }
            }
        }
    }

    /// Delivers every message in flight (and what they cause).
    fn settle(&mut self) {
        let mut budget = 100_000;
        while let Some((from, to, message)) = self.net.pop_front() {
            budget -= 1;
            assert!(budget > 0, "the network never went quiet");
            if self.cut.contains(&(from, to)) || (self.dropped)(from, to, &message) {
                continue;
            }
            if self.capture == Some(to) {
                self.captured.push((from, message));
                continue;
            }
            if self
                .hold
                .as_ref()
                .is_some_and(|hold| hold(from, to, &message))
            {
                self.held.push((from, to, message));
                continue;
            }
            let n = to.get() as usize;
            if let Some(twin) = self.twin.as_mut()
                && twin.node.id() == to
            {
                twin.node.handle(
                    self.now,
                    Input::Message {
                        from,
                        message: message.clone(),
                    },
                );
                self.drain_twin();
            }
            let Some(node) = self.nodes.get_mut(n - 1).and_then(Option::as_mut) else {
                continue;
            };
            if let Message::HandedOff { batch, skipped } = &message
                && skipped.is_empty()
                && let Some(flight) = self.hand_off.get_mut(&(to, from))
            {
                flight.remove(batch);
            }
            node.handle(self.now, Input::Message { from, message });
            self.drain(n);
        }
    }

    /// Starts node `n`, a joiner, and runs until its join is done (up to `ms_max`),
    /// failing the test if it is not.
    fn join(&mut self, n: usize, ms_max: u64) {
        self.start(n);
        for _ in 0..ms_max / 100 {
            self.run_for(100);
            if self.nodes[n - 1]
                .as_ref()
                .is_some_and(|node| node.info().join == Some("joined"))
            {
                return;
            }
        }
        panic!("node {n}'s join: {:?}", self.node(n).info().join);
    }

    /// Moves time on by `ms` in 10 ms steps, waking nodes and delivering messages.
    fn run_for(&mut self, ms: u64) {
        let end = self.now + Duration::from_millis(ms);
        while self.now < end {
            self.now += Duration::from_millis(10);
            if let Some(twin) = self.twin.as_mut()
                && twin.wake.is_some_and(|at| at <= self.now)
            {
                twin.wake = None;
                twin.node.handle(self.now, Input::Wake);
                self.drain_twin();
            }
            for n in 1..=self.nodes.len() {
                if self.wakes[n - 1].is_some_and(|at| at <= self.now)
                    && let Some(node) = self.nodes[n - 1].as_mut()
                {
                    self.wakes[n - 1] = None;
                    node.handle(self.now, Input::Wake);
                    self.drain(n);
                }
            }
            self.settle();
        }
    }

    /// Cuts `a` off from every other node, both ways.
    fn isolate(&mut self, a: usize) {
        for b in 1..=self.nodes.len() {
            if b != a {
                self.cut.insert((id(a), id(b)));
                self.cut.insert((id(b), id(a)));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    fn call(&mut self, n: usize, request: Request) -> Response {
        self.next_id += 1;
        let rid = RequestId(self.next_id);
        let node = self.nodes[n - 1].as_mut().expect("running");
        node.handle(self.now, Input::Request { id: rid, request });
        self.drain(n);
        self.settle();
        for _ in 0..300 {
            if let Some(response) = self.replies.remove(&rid) {
                return response;
            }
            self.run_for(10);
        }
        panic!("request {rid:?} to node {n} was never answered");
    }

    fn put(
        &mut self,
        n: usize,
        key: &str,
        value: &str,
        level: Consistency,
        context: VersionVector,
    ) -> Response {
        let request = Request::Put {
            key: key.as_bytes().to_vec(),
            value: Some(value.as_bytes().to_vec()),
            level,
            context,
        };
        self.call(n, request)
    }

    fn get(&mut self, n: usize, key: &str, level: Consistency) -> Read {
        let request = Request::Get {
            key: key.as_bytes().to_vec(),
            level,
        };
        match self.call(n, request) {
            Response::Read(read) => read,
            other => panic!("a read answered {other:?}"),
        }
    }

    /// Each running node's replica data of every key.
    fn data(&self, n: usize) -> BTreeMap<Vec<u8>, M::State> {
        self.node(n)
            .replica_data()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect()
    }
}

/// A hand-off batch's number and its bytes of states and hints, measured as the leaving
/// node measures them.
fn hand_off_bytes<S: serde::Serialize>(message: &Message<S>) -> Option<(u64, usize)> {
    let Message::HandOff {
        batch,
        states,
        hints,
        ..
    } = message
    else {
        return None;
    };
    let bytes =
        states.iter().map(encoded).sum::<usize>() + hints.iter().map(encoded).sum::<usize>();
    Some((*batch, bytes))
}

fn encoded<T: serde::Serialize>(value: &T) -> usize {
    postcard::to_stdvec(value).map_or(0, |b| b.len())
}

fn values(read: &Read) -> Vec<String> {
    read.values
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

fn written(response: &Response) -> bool {
    matches!(response, Response::Written { .. })
}

const QUORUM: Consistency = Consistency::Quorum;
const ONE: Consistency = Consistency::One;

#[test]
fn a_quorum_write_is_read_back_from_any_node_and_survives_a_restart() {
    let mut c: Cluster<Vv> = Cluster::new(3, 3, &[]);
    let w = c.put(1, "k", "v1", QUORUM, VersionVector::default());
    assert!(written(&w), "{w:?}");
    for n in 1..=3 {
        assert_eq!(values(&c.get(n, "k", QUORUM)), ["v1"]);
    }
    // Every replica persisted it before acknowledging: a restart of all three keeps it.
    for n in 1..=3 {
        c.crash(n);
    }
    for n in 1..=3 {
        c.start(n);
    }
    c.run_for(200);
    assert_eq!(values(&c.get(2, "k", Consistency::All)), ["v1"]);
}

#[test]
fn concurrent_blind_writes_are_siblings_and_a_write_with_their_context_resolves_them() {
    let mut c: Cluster<Vv> = Cluster::new(3, 3, &[]);
    assert!(written(&c.put(
        1,
        "k",
        "a",
        QUORUM,
        VersionVector::default()
    )));
    assert!(written(&c.put(
        2,
        "k",
        "b",
        QUORUM,
        VersionVector::default()
    )));
    let read = c.get(3, "k", QUORUM);
    let mut seen = values(&read);
    seen.sort();
    assert_eq!(seen, ["a", "b"]);
    assert!(written(&c.put(3, "k", "ab", QUORUM, read.context)));
    assert_eq!(values(&c.get(1, "k", QUORUM)), ["ab"]);
}

#[test]
fn a_reply_waits_until_the_coordinators_write_is_durable() {
    let mut c: Cluster<Vv> = Cluster::new(3, 3, &[]);
    let node = c.nodes[0].as_mut().expect("running");
    let request = Request::Put {
        key: b"k".to_vec(),
        value: Some(b"v".to_vec()),
        level: ONE,
        context: VersionVector::default(),
    };
    node.handle(
        c.now,
        Input::Request {
            id: RequestId(99),
            request,
        },
    );
    let mut persisted = None;
    while let Some(effect) = node.poll() {
        match effect {
            Effect::Persist { token, .. } => persisted = Some(token),
            Effect::Reply { .. } => panic!("answered before its write was durable"),
            Effect::Send {
                message: Message::Store(_),
                ..
            } => {
                panic!("replicated before its write was durable")
            }
            _ => {}
        }
    }
    let token = persisted.expect("the write is persisted");
    node.handle(c.now, Input::Persisted(token));
    let mut answered = false;
    while let Some(effect) = node.poll() {
        answered |= matches!(
            effect,
            Effect::Reply {
                id: RequestId(99),
                response: Response::Written { .. }
            }
        );
    }
    assert!(
        answered,
        "a write at ONE is answered once its own replica's copy is durable"
    );
}

/// The lesson of last-write-wins: node 2's clock runs 200 ms behind (inside the drift
/// bound, so nothing is refused). A client writes `first` through node 1, reads it, then
/// writes `second` through node 2 with the read's context. Both are acknowledged at ALL.
fn skewed_sequential_writes<M: Mode>() -> Vec<String> {
    let mut c: Cluster<M> = Cluster::new(3, 3, &[0, -200, 0]);
    let all = Consistency::All;
    assert!(written(&c.put(
        1,
        "k",
        "first",
        all,
        VersionVector::default()
    )));
    let read = c.get(1, "k", all);
    assert_eq!(values(&read), ["first"]);
    c.run_for(50);
    assert!(written(&c.put(2, "k", "second", all, read.context)));
    values(&c.get(3, "k", all))
}

#[test]
fn under_clock_skew_last_write_wins_loses_an_acknowledged_write_and_version_vectors_do_not() {
    assert_eq!(
        skewed_sequential_writes::<Lww>(),
        ["first"],
        "LWW keeps the older write"
    );
    assert_eq!(skewed_sequential_writes::<Vv>(), ["second"]);
}

#[test]
fn a_read_at_one_from_a_cut_off_replica_is_stale_and_quorum_is_not() {
    let mut c: Cluster<Vv> = Cluster::new(3, 3, &[]);
    assert!(written(&c.put(
        1,
        "k",
        "old",
        Consistency::All,
        VersionVector::default()
    )));
    c.isolate(3);
    let context = c.get(1, "k", QUORUM).context;
    assert!(written(&c.put(1, "k", "new", QUORUM, context)));
    assert_eq!(
        values(&c.get(3, "k", ONE)),
        ["old"],
        "ONE reads the cut-off replica"
    );
    assert_eq!(values(&c.get(1, "k", QUORUM)), ["new"]);
}

#[test]
fn after_a_partition_heals_anti_entropy_brings_every_replica_to_the_same_data() {
    let mut c: Cluster<Vv> = Cluster::new(3, 3, &[]);
    c.isolate(3);
    for i in 0..20 {
        let key = format!("k{i}");
        assert!(written(&c.put(
            1 + i % 2,
            &key,
            "v",
            ONE,
            VersionVector::default()
        )));
    }
    assert!(written(&c.put(
        3,
        "only-on-3",
        "x",
        ONE,
        VersionVector::default()
    )));
    assert_ne!(c.data(1), c.data(3));
    c.heal();
    // Read repair is not involved: nothing reads.
    c.run_for(3_000);
    assert_eq!(c.data(1), c.data(2));
    assert_eq!(c.data(1), c.data(3));
    assert_eq!(c.data(1).len(), 21);
    assert!(c.node(3).stats().keys_repaired > 0);
}

#[test]
fn a_write_while_a_replica_is_dead_leaves_a_hint_delivered_after_it_comes_back() {
    // Four nodes, three replicas a partition: a key's fourth node is its fallback.
    let mut c: Cluster<Vv> = Cluster::new(4, 4, &[]);
    c.run_for(1_000);
    // A key one of whose replicas is node 3, coordinated by another replica.
    let key = (0..100)
        .map(|i| format!("k{i}"))
        .find(|k| {
            let r = c.node(1).replicas_of(k.as_bytes());
            r.contains(&id(3)) && r.contains(&id(1))
        })
        .expect("some key");
    c.isolate(3);
    // Long enough for the others to hold node 3 dead.
    c.run_for(10_000);
    assert!(
        c.node(1)
            .info()
            .members
            .iter()
            .any(|m| m.id == id(3) && m.state == "dead")
    );
    let response = c.put(1, &key, "hinted", QUORUM, VersionVector::default());
    assert!(written(&response), "{response:?}");
    // The write finished on its quorum; the fallback's hint comes after.
    c.run_for(100);
    let hints = |c: &Cluster<Vv>| -> usize {
        [1, 2, 4]
            .iter()
            .map(|&n| c.node(n).store().expect("serving").hints_held())
            .sum()
    };
    assert_eq!(hints(&c), 1, "one fallback holds a hint for node 3");
    c.heal();
    c.run_for(10_000);
    let on_3 = c.data(3).get(key.as_bytes()).cloned();
    let read = on_3.map(|s| <Vv as Mode>::read(&s)).unwrap_or_default();
    assert_eq!(values(&read), ["hinted"]);
    assert_eq!(hints(&c), 0, "the hint was handed off and acknowledged");
}

#[test]
fn a_fourth_node_joining_gets_its_share_of_the_partitions_streamed_to_it() {
    let mut c: Cluster<Vv> = Cluster::new(4, 3, &[]);
    for i in 0..40 {
        assert!(written(&c.put(
            1,
            &format!("k{i}"),
            "v",
            QUORUM,
            VersionVector::default()
        )));
    }
    c.start(4);
    c.run_for(5_000);
    let table = c.node(1).table().clone();
    assert_eq!(table, *c.node(4).table(), "every node holds the same table");
    assert!(table.load(id(4)) > 0);
    let data4 = c.data(4);
    for i in 0..40 {
        let key = format!("k{i}");
        let on_4 = table
            .replicas(table.partition_of(key.as_bytes()))
            .contains(&id(4));
        assert_eq!(data4.contains_key(key.as_bytes()), on_4, "{key}");
    }
    // And it coordinates: a QUORUM read through it sees a key it does not replicate.
    assert_eq!(values(&c.get(4, "k0", QUORUM)), ["v"]);
}

/// Once a join is done (every member switched to the table with the joiner), the members
/// drop, durably, the keys of the partitions that moved to it: they no longer count against
/// the key cap, and no member holds a key it does not replicate. Anti-entropy is held off:
/// only the join's own stream brings the keys to the joiner.
#[test]
fn after_a_join_the_members_drop_the_keys_they_no_longer_replicate() {
    let mut c: Cluster<Vv> = Cluster::build(4, &[1, 2, 3], &[], |config| {
        config.anti_entropy_interval_ms = 600_000;
    });
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    for key in &keys {
        assert!(written(&c.put(
            1,
            key,
            "v",
            QUORUM,
            VersionVector::default()
        )));
    }
    let before: usize = (1..=3).map(|n| c.data(n).len()).sum();
    assert_eq!(before, 3 * keys.len(), "every key on its three replicas");
    c.join(4, 10_000);
    c.run_for(500);
    let table = c.node(1).table().clone();
    assert!(table.load(id(4)) > 0);
    let mut dropped = 0;
    for n in 1..=4 {
        assert_eq!(c.node(n).table(), &table, "node {n}'s table");
        let data = c.data(n);
        for key in &keys {
            let replicates = table
                .replicas(table.partition_of(key.as_bytes()))
                .contains(&id(n));
            assert_eq!(
                data.contains_key(key.as_bytes()),
                replicates,
                "node {n}, {key}"
            );
        }
        let stats = c.node(n).stats();
        dropped += stats.keys_dropped;
        assert_eq!(c.node(n).info().keys, data.len());
        // Durably: the drop is on the disk.
        if n <= 3 && stats.keys_dropped > 0 {
            assert!(
                c.disks[n - 1]
                    .iter()
                    .any(|r| matches!(r, Record::Store { state: None, .. })),
                "node {n} dropped keys without recording it"
            );
        }
    }
    let on_4 = c.data(4).len();
    assert!(on_4 > 0);
    assert_eq!(
        dropped as usize, on_4,
        "each key node 4 took, dropped by the member it replaced"
    );
    // Every key still reads back at QUORUM through every node.
    for n in 1..=4 {
        for key in &keys {
            assert_eq!(values(&c.get(n, key, QUORUM)), ["v"], "node {n}, {key}");
        }
    }
}

/// Three first members holding 40 keys (anti-entropy held off, so that only a join's
/// stream brings keys to a joiner), node 4 configured to join, each node's configuration
/// changed by `tweak`.
fn three_holding_forty_keys(tweak: impl Fn(&mut Config)) -> (Cluster<Vv>, Vec<String>) {
    let mut c: Cluster<Vv> = Cluster::build(4, &[1, 2, 3], &[], |config| {
        config.anti_entropy_interval_ms = 600_000;
        tweak(config);
    });
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    put_all(&mut c, &keys, "v");
    (c, keys)
}

/// Runs `c` in 10 ms steps until `done` holds (at most `ms_max`), failing the test if it
/// never does.
fn run_until<M: Mode>(c: &mut Cluster<M>, ms_max: u64, done: impl Fn(&Cluster<M>) -> bool) {
    for _ in 0..ms_max / 10 {
        if done(c) {
            return;
        }
        c.run_for(10);
    }
    assert!(done(c), "not reached in {ms_max} ms");
}

/// The table of `c` (as node 1 reads with it) with node 4 joined.
fn with_node_4<M: Mode>(c: &Cluster<M>) -> PartitionTable {
    let table = c.node(1).table();
    table
        .join(id(4), NodeSpec::default())
        .map_or_else(|_| table.clone(), |(t, _)| t)
}

/// Whether node `n` holds every key of `keys` it replicates in `table`, with its value.
fn holds_its_keys(
    c: &Cluster<Vv>,
    table: &PartitionTable,
    n: usize,
    keys: &[String],
) -> Result<(), String> {
    let data = c.data(n);
    for key in keys {
        let p = table.partition_of(key.as_bytes());
        if !table.replicas(p).contains(&id(n)) {
            continue;
        }
        let read = data.get(key.as_bytes()).map(<Vv as Mode>::read);
        if read.as_ref().map(values) != Some(vec!["v".to_string()]) {
            return Err(format!("node {n} holds {key} as {read:?}"));
        }
    }
    Ok(())
}

/// The outside review of the pending-replica moves (issue 19): a joiner was streamed each
/// partition by every replica of the table without it, so up to three times its data. The
/// join pairs each partition's new replica with the one it replaces, which alone streams
/// it while it is alive: each key the joiner takes reaches it once.
#[test]
fn a_joiner_is_streamed_each_key_once_by_the_replica_it_replaces() {
    let (mut c, keys) = three_holding_forty_keys(|_| {});
    let before = c.node(1).table().clone();
    c.join(4, 10_000);
    let after = c.node(1).table().clone();
    let mut expected: BTreeMap<NodeId, usize> = BTreeMap::new();
    for key in &keys {
        let p = after.partition_of(key.as_bytes());
        let (old, new) = (before.replicas(p), after.replicas(p));
        if !new.contains(&id(4)) {
            continue;
        }
        let replaced: Vec<NodeId> = old.iter().copied().filter(|n| !new.contains(n)).collect();
        assert_eq!(replaced.len(), 1, "{key}: the join replaces one replica");
        *expected.entry(replaced[0]).or_default() += 1;
    }
    let taken: usize = expected.values().sum();
    assert!(taken > 0, "node 4 takes some key");
    let sent: BTreeMap<NodeId, usize> = c
        .hand_off_keys
        .iter()
        .filter(|((_, to), _)| *to == id(4))
        .map(|(&(from, _), &keys)| (from, keys))
        .collect();
    assert_eq!(sent, expected, "keys streamed to node 4, by source");
    let counted: u64 = (1..=3).map(|n| c.node(n).stats().keys_streamed).sum();
    assert_eq!(counted, taken as u64, "Stats::keys_streamed");
    assert_eq!(c.data(4).len(), taken);
    holds_its_keys(&c, &after, 4, &keys).unwrap();
}

/// The same join with node 1's messages to node 4 lost once node 4 is draining: node 4
/// hears nothing from node 1 of the partitions it takes from it for
/// [`Config::stream_silence_ms`], then asks the other replicas of those partitions, and
/// holds every key it takes before it switches.
#[test]
fn a_joiner_asks_the_other_replicas_when_the_one_it_replaces_is_silent() {
    let (mut c, keys) = three_holding_forty_keys(|config| config.stream_silence_ms = 1_000);
    let before = c.node(1).table().clone();
    let after = with_node_4(&c);
    c.start(4);
    run_until(&mut c, 10_000, |c| {
        c.node(4).info().join == Some("draining")
    });
    c.cut.insert((id(1), id(4)));
    run_until(&mut c, 20_000, |c| c.node(4).stats().streams_widened > 0);
    run_until(&mut c, 20_000, |c| {
        c.node(4).info().join == Some("switching")
    });
    assert_eq!(c.node(4).table(), &after);
    assert!(
        (0..after.partitions()).any(|p| {
            let p = PartitionId(p);
            after.replicas(p).contains(&id(4))
                && !after.replicas(p).contains(&id(1))
                && before.replicas(p).contains(&id(1))
        }),
        "node 4 replaces node 1 in some partition"
    );
    holds_its_keys(&c, &after, 4, &keys).unwrap();
    c.heal();
    run_until(&mut c, 20_000, |c| c.node(4).info().join == Some("joined"));
    holds_its_keys(&c, &after, 4, &keys).unwrap();
}

/// The asks of stream node 4 sent to node `to` so far, in order.
fn asks_to<M: Mode>(c: &Cluster<M>, to: usize) -> Vec<(AskId, Vec<u32>)> {
    c.stream_log
        .iter()
        .filter_map(|(from, t, m)| match m {
            Message::StreamTo { ask, partitions } if *from == id(4) && *t == id(to) => {
                Some((*ask, partitions.clone()))
            }
            _ => None,
        })
        .collect()
}

/// The outside review of the pending-replica moves (issue 19): a joiner counted any
/// `Streamed` from a source as the end of its stream, whichever ask it answered. Node 1's
/// stream to node 4 is lost; answers naming another ask (of an earlier start, or a later
/// number) or partitions its ask does not name arrive: none of them counts, and node 4
/// switches only once node 1's keys are on it.
#[test]
fn a_streamed_answering_another_ask_does_not_end_a_joiners_stream() {
    let (mut c, keys) = three_holding_forty_keys(|config| config.stream_silence_ms = 600_000);
    let after = with_node_4(&c);
    c.start(4);
    run_until(&mut c, 10_000, |c| {
        c.node(4).info().join == Some("draining")
    });
    c.cut.insert((id(1), id(4)));
    run_until(&mut c, 10_000, |c| {
        !asks_to(c, 1).is_empty() && !asks_to(c, 2).is_empty()
    });
    let (ask1, partitions1) = asks_to(&c, 1)[0].clone();
    let (ask2, _) = asks_to(&c, 2)[0].clone();
    let stale = [
        (
            1,
            AskId {
                generation: ask1.generation - 1,
                ..ask1
            },
            partitions1.clone(),
        ),
        (
            1,
            AskId {
                number: ask1.number + 100,
                ..ask1
            },
            partitions1.clone(),
        ),
        (2, ask2, partitions1.clone()),
    ];
    for (from, ask, partitions) in stale {
        // Delivered past the cut.
        let message = Message::Streamed { ask, partitions };
        let node = c.nodes[3].as_mut().expect("running");
        node.handle(
            c.now,
            Input::Message {
                from: id(from),
                message,
            },
        );
        c.drain(4);
    }
    c.run_for(2_000);
    assert_eq!(
        c.node(4).info().join,
        Some("streaming"),
        "node 4 waits for node 1"
    );
    assert!(
        holds_its_keys(&c, &after, 4, &keys).is_err(),
        "node 1's keys are not on node 4"
    );
    c.heal();
    run_until(&mut c, 20_000, |c| c.node(4).info().join == Some("joined"));
    holds_its_keys(&c, &after, 4, &keys).unwrap();
}

/// The keys a played receiver got, and each `Streamed` it was sent (ask, partitions).
type Received = (BTreeSet<Vec<u8>>, Vec<(AskId, Vec<u32>)>);

/// Plays node `me`, whose messages `c` captures, receiving a stream: acknowledges every
/// batch, until a source says a stream is done (at most 10 s); the keys of the batches, and
/// each `Streamed` (its ask and partitions).
fn receive_stream(c: &mut Cluster<Vv>, me: usize) -> Received {
    let mut got: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut answered = Vec::new();
    for _ in 0..1_000 {
        for (from, message) in std::mem::take(&mut c.captured) {
            match message {
                Message::HandOff { batch, states, .. } => {
                    got.extend(states.into_iter().map(|(k, _)| k));
                    let ack = Message::HandedOff {
                        batch,
                        skipped: Vec::new(),
                    };
                    c.net.push_back((id(me), from, ack));
                }
                Message::Streamed { ask, partitions } => answered.push((ask, partitions)),
                _ => {}
            }
        }
        if !answered.is_empty() {
            break;
        }
        c.run_for(10);
    }
    (got, answered)
}

/// Writes a new key of partition `p` at QUORUM through node 2 (node 1 holds it), then
/// plays node 5 asking node 1 for `p` again under `ask`: the key, and what node 5 got.
fn a_fresh_key_then_a_second_ask(
    c: &mut Cluster<Vv>,
    table: &PartitionTable,
    p: u32,
    ask: AskId,
) -> (String, Received) {
    let fresh = (0..)
        .map(|i| format!("fresh{i}"))
        .find(|k| table.partition_of(k.as_bytes()).0 == p)
        .expect("a key of the partition");
    assert!(written(&c.put(
        2,
        &fresh,
        "w",
        QUORUM,
        VersionVector::default()
    )));
    assert!(c.data(1).contains_key(fresh.as_bytes()), "node 1 holds it");
    c.net.push_back((
        id(5),
        id(1),
        Message::StreamTo {
            ask,
            partitions: vec![p],
        },
    ));
    c.settle();
    let received = receive_stream(c, 5);
    (fresh, received)
}

/// The ask numbered `number` of generation 1, as the tests that play a receiver send them.
fn ask(number: u64) -> AskId {
    AskId {
        generation: 1,
        number,
    }
}

/// Three nodes holding forty keys, and node 5 (played by the test: its messages captured)
/// having asked node 1, under `ask(1)`, for the partition of the first key: the cluster,
/// the keys, node 1's table and that partition.
fn node_5_asking_for_the_first_keys_partition() -> (Cluster<Vv>, Vec<String>, PartitionTable, u32) {
    let (mut c, keys) = three_holding_forty_keys(|_| {});
    let table = c.node(1).table().clone();
    let p = table.partition_of(keys[0].as_bytes()).0;
    c.capture = Some(id(5));
    c.net.push_back((
        id(5),
        id(1),
        Message::StreamTo {
            ask: ask(1),
            partitions: vec![p],
        },
    ));
    c.settle();
    (c, keys, table, p)
}

/// A source kept what it had streamed whole to a node for ever and never streamed it to
/// that node again: a second removal's pull of a partition (which needs what the source
/// holds now) was answered at once, without the keys written since. The test plays node
/// 5, pulling partition `p` from node 1 twice, a key of `p` written in between: the second
/// stream carries it.
#[test]
fn a_later_pull_of_a_partition_streamed_before_is_streamed_anew() {
    let (mut c, keys, table, p) = node_5_asking_for_the_first_keys_partition();
    let (got, answered) = receive_stream(&mut c, 5);
    assert_eq!(answered, [(ask(1), vec![p])]);
    assert!(got.contains(keys[0].as_bytes()));
    let (fresh, (got, answered)) = a_fresh_key_then_a_second_ask(&mut c, &table, p, ask(2));
    assert_eq!(answered, [(ask(2), vec![p])]);
    assert!(
        got.contains(fresh.as_bytes()),
        "the key written since streamed: {got:?}"
    );
}

/// review15 (item 3): a replica pulling a removed member's partitions holds one ask of a
/// source at a time; a second pull from that source (another removal) asked for its own
/// partitions only, replacing the first pull's ask there, and the answer to it ended every
/// pull from the source: the first was reported done without its partitions. The test
/// plays node 9, both removals' source (node 2 drives them): the ask out names both
/// pulls' partitions, and a pull is reported done only once its partitions were streamed.
#[test]
fn a_pull_is_done_only_once_its_own_partitions_were_streamed() {
    let mut c: Cluster<Vv> = Cluster::new(3, 3, &[]);
    c.capture = Some(id(9));
    // Node 1 holds the removals of nodes 7 and 8 under way (a node takes pulls only of
    // removals it holds), driven by node 2, whose answers are held here.
    for gone in [7, 8] {
        let told = Message::Move {
            id: id(gone),
            kind: MoveKind::Remove,
            phase: MovePhase::Pending,
        };
        c.net.push_back((id(2), id(1), told));
    }
    c.settle();
    c.hold = Some(Box::new(|_, to, m| {
        to == id(2) && matches!(m, Message::Pulled { .. })
    }));
    let pull = |gone: usize, p: u32| Message::Pull {
        id: id(gone),
        sources: vec![(id(9), vec![p])],
    };
    c.net.push_back((id(2), id(1), pull(7, 1)));
    c.settle();
    c.net.push_back((id(2), id(1), pull(8, 2)));
    c.settle();
    let asks: Vec<(AskId, Vec<u32>)> = c
        .captured
        .iter()
        .filter_map(|(_, m)| match m {
            Message::StreamTo { ask, partitions } => Some((*ask, partitions.clone())),
            _ => None,
        })
        .collect();
    let (ask, partitions) = asks.last().cloned().expect("node 1 asked node 9");
    c.captured.clear();
    // Node 9 streamed what the ask out names.
    let streamed = Message::Streamed {
        ask,
        partitions: partitions.clone(),
    };
    c.net.push_back((id(9), id(1), streamed));
    c.settle();
    let pulled: Vec<(NodeId, u32)> = c
        .held
        .iter()
        .filter_map(|(_, _, m)| match m {
            Message::Pulled { id: gone } => Some((*gone, if *gone == id(7) { 1 } else { 2 })),
            _ => None,
        })
        .collect();
    for (gone, p) in &pulled {
        assert!(
            partitions.contains(p),
            "node {gone}'s pull (partition {p}) reported done, only {partitions:?} streamed"
        );
    }
    assert_eq!(
        partitions,
        [1, 2],
        "the ask out names both pulls' partitions"
    );
    assert_eq!(pulled.len(), 2, "both pulls done: {pulled:?}");
}

/// The outside review of the pending-replica moves (issue 19): a source ignored a new ask
/// while a stream to the same joiner ran, so the new ask's partitions were never sent.
/// The test plays joiner 5: it asks node 1 for partition 0, then, with the first batch
/// unacknowledged, for partitions 1 and 2; node 1 streams those whole and answers the
/// second ask.
#[test]
fn a_new_ask_while_a_stream_runs_is_streamed_and_answered() {
    let (mut c, keys) = three_holding_forty_keys(|config| {
        config.hand_off_batch_bytes_max = 1;
        config.hand_off_batches_in_flight_max = 1;
    });
    c.capture = Some(id(5));
    let first = AskId {
        generation: 1,
        number: 1,
    };
    let second = AskId {
        generation: 1,
        number: 2,
    };
    let ask = |ask, partitions: Vec<u32>| Message::StreamTo { ask, partitions };
    c.net.push_back((id(5), id(1), ask(first, vec![0])));
    c.settle();
    assert_eq!(c.captured.len(), 1, "one batch in flight");
    c.net.push_back((id(5), id(1), ask(second, vec![1, 2])));
    c.settle();
    let (got, answered) = receive_stream(&mut c, 5);
    assert_eq!(answered, [(second, vec![1, 2])]);
    let table = c.node(1).table().clone();
    for key in &keys {
        let p = table.partition_of(key.as_bytes()).0;
        if p == 1 || p == 2 {
            assert!(
                got.contains(key.as_bytes()),
                "{key} of partition {p} streamed"
            );
        }
    }
    assert!(
        keys.iter()
            .any(|k| matches!(table.partition_of(k.as_bytes()).0, 1 | 2)),
        "partitions 1 and 2 hold keys"
    );
}

#[test]
fn cas_and_the_linearizable_level_run_on_their_own_key_spaces() {
    let mut c: Cluster<Vv> = Cluster::new(3, 3, &[]);
    let k = b"k".to_vec();
    let set = |new: &str, expect: Option<&str>| Request::Cas {
        key: k.clone(),
        expect: expect.map(|e| e.as_bytes().to_vec()),
        new: new.as_bytes().to_vec(),
    };
    let applied = |r: Response| match r {
        Response::Cas(reply) => reply.applied,
        other => panic!("{other:?}"),
    };
    assert!(applied(c.call(1, set("a", None))));
    assert!(
        !applied(c.call(2, set("b", None))),
        "the key is no longer absent"
    );
    assert!(applied(c.call(3, set("b", Some("a")))));
    assert_eq!(
        c.call(1, Request::CasGet(k.clone())),
        Response::Cas(synod_consensus::paxos::CasReply {
            applied: false,
            value: Some(b"b".to_vec())
        })
    );
    assert_eq!(
        c.call(2, Request::LinearSet(k.clone(), b"x".to_vec())),
        Response::LinearWritten
    );
    assert_eq!(
        c.call(3, Request::LinearGet(k.clone())),
        Response::LinearRead(Some(b"x".to_vec()))
    );
    assert!(
        c.get(1, "k", QUORUM).values.is_empty(),
        "the quorum store's k is another key"
    );
}

#[test]
fn a_node_that_does_not_replicate_a_key_forwards_its_write_to_one_that_does() {
    let mut c: Cluster<Vv> = Cluster::new(5, 5, &[]);
    c.run_for(2_000);
    // With five nodes each key has three replicas: two nodes coordinate none of its writes
    // under version vectors, and forward them.
    let table = c.node(1).table().clone();
    let key = "forwarded";
    let replicas = table.replicas(table.partition_of(key.as_bytes())).to_vec();
    let outsiders: Vec<usize> = (1..=5).filter(|&n| !replicas.contains(&id(n))).collect();
    assert_eq!(outsiders.len(), 2, "replicas {replicas:?}");
    let first = c.put(outsiders[0], key, "a", QUORUM, VersionVector::default());
    assert!(written(&first), "{first:?}");
    let read = c.get(outsiders[1], key, QUORUM);
    assert_eq!(values(&read), ["a"]);
    // A write with the context of that read replaces the value, through the other node.
    let second = c.put(outsiders[1], key, "b", QUORUM, read.context);
    assert!(written(&second), "{second:?}");
    assert_eq!(
        values(&c.get(replicas[0].get() as usize, key, QUORUM)),
        ["b"]
    );
    // The replica forwarded to crashes before anyone holds it dead: the forward is given
    // up, its outcome unknown.
    c.crash(replicas[0].get() as usize);
    match c.put(outsiders[0], key, "c", ONE, VersionVector::default()) {
        Response::Failed(Failure::Unknown(_)) => {}
        other => panic!("a forward to a crashed replica answered {other:?}"),
    }
    // No replica alive to forward to: refused.
    for &r in &replicas {
        c.crash(r.get() as usize);
    }
    c.run_for(10_000);
    match c.put(outsiders[0], key, "d", ONE, VersionVector::default()) {
        Response::Failed(Failure::Refused(_)) => {}
        other => panic!("a write with no replica alive answered {other:?}"),
    }
}

/// The refusal node `n` handed up, if any.
fn refusal<M: Mode>(c: &Cluster<M>, n: usize) -> Option<String> {
    c.notices[n - 1].iter().find_map(|notice| match notice {
        Notice::Refused(why) => Some(why.clone()),
        Notice::Waiting(_) | Notice::Incompatible(_) => None,
    })
}

/// Each member's view of the others: id, generation, incarnation and state.
fn views<M: Mode>(c: &Cluster<M>, nodes: &[usize]) -> Vec<Vec<(NodeId, u64, u64, String)>> {
    nodes
        .iter()
        .map(|&n| {
            c.node(n)
                .member()
                .members()
                .into_iter()
                .map(|m| (m.id, m.generation, m.incarnation, format!("{:?}", m.state)))
                .collect()
        })
        .collect()
}

#[test]
fn a_new_node_under_an_id_in_use_is_refused_and_the_cluster_is_unchanged() {
    let mut c: Cluster<Vv> = Cluster::new(3, 3, &[]);
    for i in 0..10 {
        let key = format!("k{i}");
        assert!(written(&c.put(
            1,
            &key,
            "v",
            QUORUM,
            VersionVector::default()
        )));
    }
    // Node 2 loses its data directory and comes back under its old id: a new node whose id
    // the members know.
    c.crash(2);
    c.disks[1].clear();
    c.run_for(3_000);
    assert_eq!(c.node(1).info().members[1].state, "dead");
    let before = (
        views(&c, &[1, 3]),
        c.node(1).table().clone(),
        c.data(1),
        c.data(3),
    );
    c.start(2);
    c.run_for(2_000);
    let why = refusal(&c, 2).expect("node 2 is refused");
    assert!(why.contains("already in use"), "{why}");
    assert!(c.node(2).is_admitting(), "a refused node is never admitted");
    assert!(!c.node(2).serving());
    assert!(
        !c.disks[1]
            .iter()
            .any(|r| matches!(r, Record::Admitted { .. } | Record::Member(_))),
        "a refused node records no admission and starts no member"
    );
    // The members' views (generations and incarnations), table and data are as they were.
    let after = (
        views(&c, &[1, 3]),
        c.node(1).table().clone(),
        c.data(1),
        c.data(3),
    );
    assert_eq!(before, after);
    // And the refused node serves nothing.
    let get = Request::Get {
        key: b"k0".to_vec(),
        level: QUORUM,
    };
    assert!(matches!(
        c.call(2, get),
        Response::Failed(Failure::Refused(_))
    ));
}

#[test]
fn a_node_joining_below_a_members_id_is_refused_with_the_ids_it_needs() {
    let mut c: Cluster<Vv> = Cluster::with_members(4, &[2, 3, 4], &[]);
    let table = c.node(2).table().clone();
    c.start(1);
    c.run_for(2_000);
    let why = refusal(&c, 1).expect("node 1 is refused");
    assert!(
        why.contains("below members n2, n3, n4") && why.contains("n5 or more"),
        "{why}"
    );
    for n in 2..=4 {
        assert_eq!(c.node(n).table(), &table, "node {n}'s table");
        let members: Vec<NodeId> = c.node(n).info().members.iter().map(|m| m.id).collect();
        assert_eq!(members, [id(2), id(3), id(4)], "node {n} knows no node 1");
    }
}

#[test]
fn joiners_take_the_clusters_voters_and_send_cas_and_linearizable_requests_to_them() {
    let mut c: Cluster<Vv> = Cluster::new(5, 3, &[]);
    c.start(4);
    c.run_for(2_000);
    // Node 5 is told of node 4 as well (a longer list than the first members').
    c.configs[4].members.push(id(4));
    c.configs[4].members.sort_unstable();
    c.start(5);
    c.run_for(3_000);
    let voters = vec![id(1), id(2), id(3)];
    for n in 1..=5 {
        let info = c.node(n).info();
        assert!(info.admitted, "node {n}");
        assert_eq!(info.voters, voters, "node {n}'s voters");
        assert_eq!(c.node(n).is_voter(), n <= 3, "node {n}");
        assert_eq!(c.node(n).table(), c.node(1).table(), "node {n}'s table");
    }
    let cas = |expect: Option<&str>, new: &str| Request::Cas {
        key: b"c".to_vec(),
        expect: expect.map(|e| e.as_bytes().to_vec()),
        new: new.as_bytes().to_vec(),
    };
    for n in [4, 5] {
        match c.call(n, cas(None, "x")) {
            Response::Failed(Failure::Refused(why)) => {
                assert!(
                    why.contains("not a voter") && why.contains("n1, n2, n3"),
                    "{why}"
                );
            }
            other => panic!("CAS through joiner {n}: {other:?}"),
        }
        let linear = Request::LinearSet(b"l".to_vec(), b"v".to_vec());
        assert!(matches!(
            c.call(n, linear),
            Response::Failed(Failure::Refused(_))
        ));
    }
    assert!(matches!(c.call(1, cas(None, "x")), Response::Cas(_)));
    // The joiners coordinate the quorum store as any member does.
    assert!(written(&c.put(
        5,
        "q",
        "v",
        QUORUM,
        VersionVector::default()
    )));
    assert_eq!(values(&c.get(4, "q", QUORUM)), ["v"]);
}

/// Four members with anti-entropy held off (a key reaches a new replica only if a leave's
/// hand-off takes it there), and 40 keys written at QUORUM through node 1.
fn four_holding_forty_keys() -> (Cluster<Vv>, Vec<String>) {
    let mut c: Cluster<Vv> = Cluster::build(4, &[1, 2, 3, 4], &[], |config| {
        config.anti_entropy_interval_ms = 600_000;
    });
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    put_all(&mut c, &keys, "v");
    (c, keys)
}

/// Writes `value` to each of `keys` at QUORUM through node 1, each acknowledged.
fn put_all(c: &mut Cluster<Vv>, keys: &[String], value: &str) {
    for key in keys {
        assert!(
            written(&c.put(1, key, value, QUORUM, VersionVector::default())),
            "{key}"
        );
    }
}

#[test]
fn a_node_that_leaves_hands_its_partitions_to_their_new_replicas_first() {
    // Anti-entropy is held off, so that a node that becomes a replica of a partition when
    // node 4 leaves has its keys only if node 4 handed them to it.
    let (mut c, keys) = four_holding_forty_keys();
    let before = c.node(1).table().clone();
    assert!(before.load(id(4)) > 0);
    let leave = c.call(4, Request::Leave);
    assert_eq!(leave, Response::Leaving);
    let mut left = false;
    for _ in 0..100 {
        c.run_for(100);
        if c.node(4).info().leave == Some("left") {
            left = true;
            break;
        }
    }
    assert!(left, "node 4's leave: {:?}", c.node(4).info().leave);
    c.crash(4);
    // Every other node holds the table without node 4, and every key is on each of its new
    // replicas.
    let table = c.node(1).table().clone();
    assert_eq!(table.load(id(4)), 0);
    for n in 1..=3 {
        assert_eq!(c.node(n).table(), &table, "node {n}'s table");
        assert_eq!(c.node(n).info().members[3].state, "left");
    }
    for key in &keys {
        for &r in table.replicas(table.partition_of(key.as_bytes())) {
            let n = r.get() as usize;
            assert!(c.data(n).contains_key(key.as_bytes()), "{key} on node {n}");
        }
        assert_eq!(values(&c.get(2, key, QUORUM)), ["v"], "{key}");
    }
}

/// From the outside review (review8): an id that left the cluster for good is not
/// given to a new node, also after the members restarted (their `Record::Left` of it is
/// durable). Before, admission looked only at membership's view and the dead held in
/// memory, which a restart empties, so a new node under the departed id was admitted
/// and served while every member kept it out of its table.
#[test]
fn a_new_node_under_an_id_that_left_is_refused_after_the_members_restart() {
    let mut c: Cluster<Vv> = Cluster::build(4, &[1, 2, 3, 4], &[], |_| {});
    assert_eq!(c.call(4, Request::Leave), Response::Leaving);
    let mut left = false;
    for _ in 0..100 {
        c.run_for(100);
        if c.node(4).info().leave == Some("left") {
            left = true;
            break;
        }
    }
    assert!(left, "node 4's leave: {:?}", c.node(4).info().leave);
    c.crash(4);
    for n in 1..=3 {
        c.crash(n);
    }
    for n in 1..=3 {
        c.start(n);
    }
    c.run_for(2_000);
    // A new node 4: its data directory is empty.
    c.disks[3].clear();
    c.start(4);
    c.run_for(3_000);
    assert!(
        refusal(&c, 4).is_some_and(|why| why.contains("in use")),
        "a new node under the departed id 4: admitted {}, notices {:?}",
        c.node(4).info().admitted,
        c.notices[3]
    );
}

/// From the outside review (review8): a node that crashes after it began to leave (its
/// `Record::Left` durable, the members told) and restarts finishes its leave: it hands
/// its partitions to their new replicas, as it would have had it not crashed. Before, it
/// was refused at its restart ("left the cluster for good") and its keys never reached
/// the replicas that took its place.
#[test]
fn a_node_that_crashes_while_leaving_hands_its_partitions_off_after_its_restart() {
    let (mut c, keys) = four_holding_forty_keys();
    assert_eq!(c.call(4, Request::Leave), Response::Leaving);
    c.run_for(50);
    c.crash(4);
    c.start(4);
    for _ in 0..100 {
        c.run_for(100);
    }
    let table = c.node(1).table().clone();
    assert_eq!(table.load(id(4)), 0);
    for key in &keys {
        for &r in table.replicas(table.partition_of(key.as_bytes())) {
            let n = r.get() as usize;
            assert!(
                c.data(n).contains_key(key.as_bytes()),
                "{key} on node {n}; node 4 refused: {:?}",
                c.notices[3]
            );
        }
    }
    assert_eq!(c.node(4).info().leave, Some("left"));
    assert!(
        c.disks[3].contains(&Record::Left { id: id(4) }),
        "node 4 recorded that it left only once its hand-off was done"
    );
    // A restart after the leave is done is refused.
    c.crash(4);
    c.start(4);
    assert!(refusal(&c, 4).is_some_and(|why| why.contains("left the cluster for good")));
}

/// Runs the cluster until node `n`'s leave is done (at most `ms`); whether it is.
fn until_left<M: Mode>(c: &mut Cluster<M>, n: usize, ms: u64) -> bool {
    for _ in 0..ms / 100 {
        if c.node(n).info().leave == Some("left") {
            return true;
        }
        c.run_for(100);
    }
    c.node(n).info().leave == Some("left")
}

/// The outside review (review8): a leaving node copied all its data into batches at once
/// and resent every batch every 500 ms. Now a stream to each replica holds at most
/// `hand_off_batches_in_flight_max` batches of at most `hand_off_batch_bytes_max` bytes
/// unacknowledged; the harness counts the bytes in flight from node 4 to each replica at
/// every step.
#[test]
fn a_hand_off_larger_than_its_in_flight_limit_completes_within_the_limit() {
    const BATCH: usize = 400;
    const IN_FLIGHT: usize = 2;
    let mut c: Cluster<Vv> = Cluster::build(4, &[1, 2, 3, 4], &[], |config| {
        config.anti_entropy_interval_ms = 600_000;
        config.hand_off_batch_bytes_max = BATCH;
        config.hand_off_batches_in_flight_max = IN_FLIGHT;
    });
    let keys: Vec<String> = (0..120).map(|i| format!("key-{i:03}")).collect();
    let value = "v".repeat(40);
    put_all(&mut c, &keys, &value);
    assert_eq!(c.call(4, Request::Leave), Response::Leaving);
    assert!(
        until_left(&mut c, 4, 20_000),
        "{:?}",
        c.node(4).info().leave
    );
    let limit = IN_FLIGHT * BATCH;
    assert!(c.hand_off_peak > 0, "node 4 handed something off");
    assert!(
        c.hand_off_peak <= limit,
        "{} bytes in flight to one replica, the limit {limit}",
        c.hand_off_peak
    );
    let most = c.hand_off_sent.values().copied().max().unwrap_or(0);
    assert!(most > 4 * limit, "one replica was sent {most} bytes");
    // The table with the leave made is built once for the hand-off, not once a batch (as
    // it was until the review of issue 19): a few times for the move, whatever its batches.
    let batches = c.hand_off_batches[&id(4)];
    assert!(batches > 20, "{batches} batches");
    assert!(
        c.node(4).stats().tables_built < 10,
        "node 4 built its tables {} times for {batches} batches",
        c.node(4).stats().tables_built
    );
    let table = c.node(1).table().clone();
    for key in &keys {
        for &r in table.replicas(table.partition_of(key.as_bytes())) {
            let n = r.get() as usize;
            assert!(c.data(n).contains_key(key.as_bytes()), "{key} on node {n}");
        }
    }
}

/// The outside review of the pending-replica moves (issue 19): a replica refused a moved
/// state stamped too far ahead of its clock (skipped, resent), so a move stalled for as
/// long as the skew lasted. Node 3's clock runs ten minutes behind; under last-write-wins
/// every key node 4 hands it is stamped that far ahead of it. It takes them as node 4 held
/// them, and the leave ends; a QUORUM read through a node whose clock is right reads them.
#[test]
fn a_leave_goes_on_past_a_replica_whose_clock_runs_behind() {
    let mut c: Cluster<Lww> = Cluster::build(4, &[1, 2, 3, 4], &[0, 0, -600_000, 0], |config| {
        config.anti_entropy_interval_ms = 600_000;
    });
    let before = c.node(1).table().clone();
    let after = before.leave_in_place(id(4)).expect("three stay").0;
    // Keys that node 3 replicates only once node 4 has left.
    let keys: Vec<String> = (0..200)
        .map(|i| format!("k{i}"))
        .filter(|k| {
            let p = before.partition_of(k.as_bytes());
            !before.replicas(p).contains(&id(3)) && after.replicas(p).contains(&id(3))
        })
        .take(5)
        .collect();
    assert!(!keys.is_empty(), "some key moves to node 3");
    for key in &keys {
        let w = c.put(1, key, "v", Consistency::All, VersionVector::default());
        assert!(written(&w), "{w:?}");
    }
    assert_eq!(c.call(4, Request::Leave), Response::Leaving);
    assert!(
        until_left(&mut c, 4, 20_000),
        "{:?}",
        c.node(4).info().leave
    );
    for key in &keys {
        assert!(c.data(3).contains_key(key.as_bytes()), "{key} on node 3");
        c.isolate(2);
        assert_eq!(values(&c.get(1, key, QUORUM)), ["v"], "{key}");
        c.heal();
    }
}

/// A leave changes only the partitions the leaver held, each taking one new replica in its
/// place: the leaver hands off only its own keys, so a replica moved between two members
/// that stay (as synod-partitioning's balanced `leave` may move one) would be left empty,
/// and a QUORUM read there could miss an acknowledged write until anti-entropy. Checked
/// for the tables of every cluster of 4 to 9 members (64 partitions, 3 replicas) with each
/// member leaving.
#[test]
fn a_leave_changes_only_the_partitions_the_leaver_held() {
    let mut chains = 0;
    for members in 4..=9usize {
        let known: BTreeSet<NodeId> = (1..=members).map(id).collect();
        let config = Config::new(id(1), known.iter().copied());
        let before = table_of(&config, &known, &BTreeSet::new());
        for leaver in 1..=members {
            let left = BTreeSet::from([id(leaver)]);
            let after = table_of(&config, &known, &left);
            for p in 0..before.partitions() {
                let p = PartitionId(p);
                let (old, new) = (before.replicas(p), after.replicas(p));
                if !old.contains(&id(leaver)) {
                    assert_eq!(old, new, "{members} members, n{leaver} leaves: {p:?}");
                    continue;
                }
                let gained: Vec<_> = new.iter().filter(|n| !old.contains(n)).collect();
                let lost: Vec<_> = old.iter().filter(|n| !new.contains(n)).collect();
                assert_eq!(lost, [&id(leaver)], "{members} members, n{leaver}: {p:?}");
                assert_eq!(gained.len(), 1, "{members} members, n{leaver}: {p:?}");
            }
            // What the balanced leave would have done: count its moves between stayers.
            let balanced = before.leave(id(leaver)).expect("enough stay").0;
            chains += (0..before.partitions())
                .map(PartitionId)
                .filter(|&p| {
                    let set = |t: &PartitionTable| t.replicas(p).iter().copied().collect();
                    let old: BTreeSet<NodeId> = set(&before);
                    !old.contains(&id(leaver)) && old != set(&balanced)
                })
                .count();
        }
    }
    // The case this guards against happens with the balanced leave.
    assert!(
        chains > 0,
        "the balanced leave moved no replica between stayers"
    );
}

/// The outside review (review8): the hints a leaving node held for a replica held dead
/// were lost with it. Node 4 holds a hint for node 3 (cut off) as it leaves: it hands it
/// to a live replica of the key, which delivers it when node 3 is back (anti-entropy is
/// held off, so nothing else brings node 3 the write). A leave waits for a member held
/// dead for [`Config::move_dead_wait_ms`] (it may be cut off from the leaver only, and
/// serve clients): 5 s here, so that node 4 leaves while node 3 is still cut off.
#[test]
fn a_leaving_nodes_hints_for_a_dead_replica_are_delivered_after_it_is_back() {
    let mut c: Cluster<Vv> = Cluster::build(4, &[1, 2, 3, 4], &[], |config| {
        config.anti_entropy_interval_ms = 600_000;
        config.move_dead_wait_ms = Some(5_000);
    });
    let table = c.node(1).table().clone();
    let key = (0..200)
        .map(|i| format!("k{i}"))
        .find(|k| {
            let r = table.replicas(table.partition_of(k.as_bytes()));
            r.contains(&id(1)) && r.contains(&id(3)) && !r.contains(&id(4))
        })
        .expect("some key");
    c.isolate(3);
    c.run_for(10_000);
    assert_eq!(c.node(1).info().members[2].state, "dead");
    let w = c.put(1, &key, "hinted", QUORUM, VersionVector::default());
    assert!(written(&w), "{w:?}");
    c.run_for(100);
    assert_eq!(c.node(4).store().expect("serving").hints_held(), 1);
    assert_eq!(c.call(4, Request::Leave), Response::Leaving);
    assert!(
        until_left(&mut c, 4, 20_000),
        "{:?}",
        c.node(4).info().leave
    );
    c.crash(4);
    c.heal();
    c.run_for(10_000);
    let on_3 = c.data(3).get(key.as_bytes()).cloned();
    let read = on_3.map(|s| <Vv as Mode>::read(&s)).unwrap_or_default();
    assert_eq!(values(&read), ["hinted"], "the hint reached node 3");
}

/// The outside review (review8): a leave rebuilt the table from scratch, moving more
/// replicas than the leaver's. Now only the leaver's replicas move.
#[test]
fn a_leave_moves_only_the_leavers_replicas() {
    let mut c: Cluster<Vv> = Cluster::build(5, &[1, 2, 3, 4, 5], &[], |config| {
        config.partitions = 64;
    });
    c.run_for(2_000);
    let before = c.node(1).table().clone();
    assert_eq!(c.call(3, Request::Leave), Response::Leaving);
    assert!(
        until_left(&mut c, 3, 20_000),
        "{:?}",
        c.node(3).info().leave
    );
    let after = c.node(1).table().clone();
    let moved: usize = (0..before.partitions())
        .map(|p| {
            let p = PartitionId(p);
            let old = before.replicas(p);
            after
                .replicas(p)
                .iter()
                .filter(|n| !old.contains(n))
                .count()
        })
        .sum();
    assert_eq!(moved, before.load(id(3)), "replicas moved against node 3's");
    for n in [2, 4, 5] {
        assert_eq!(c.node(n).table(), &after, "node {n}'s table");
    }
}

/// The outside review (review8): two processes started at once under one new id could
/// both be admitted (each found the id free at a majority before either was seen in
/// membership). Now a member grants a new id to the first start that asks (by its random
/// nonce) and tells the other it is claimed; two majorities share a member, so one start
/// at most is admitted, and the other is refused once the first is seen running.
#[test]
fn two_first_starts_under_one_id_are_not_both_admitted() {
    let mut c: Cluster<Vv> = Cluster::new(4, 3, &[]);
    c.start(4);
    let mut other = c.configs[3].clone();
    other.seed = 99;
    c.start_twin(other);
    c.run_for(3_000);
    let twin = c.twin.as_ref().expect("a twin");
    let refused = |notices: &[Notice]| {
        notices
            .iter()
            .any(|n| matches!(n, Notice::Refused(why) if why.contains("already in use")))
    };
    let first = (!c.node(4).is_admitting(), refused(&c.notices[3]));
    let second = (!twin.node.is_admitting(), refused(&twin.notices));
    assert!(
        first == (true, false) && second == (false, true)
            || first == (false, true) && second == (true, false),
        "(admitted, refused as in use): the first start {first:?}, the second {second:?}"
    );
}

/// The outside review (review8): a new node whose id is below every member's reaches none
/// of them (it dials only lower ids, and they do not know its address) and waited for
/// ever. Now it gives up after `admit_unreachable_ms` and says why.
#[test]
fn a_joiner_below_every_members_id_that_reaches_none_gives_up_and_says_why() {
    let mut c: Cluster<Vv> = Cluster::build(4, &[2, 3, 4], &[], |config| {
        config.admit_unreachable_ms = 3_000;
    });
    // Nothing reaches node 1 or leaves it, as on a real network.
    c.isolate(1);
    c.start(1);
    c.run_for(2_000);
    assert_eq!(refusal(&c, 1), None, "not before the limit");
    c.run_for(2_000);
    let why = refusal(&c, 1).expect("node 1 gives up");
    assert!(
        why.contains("below every member's") && why.contains("n5 or more"),
        "{why}"
    );
}

/// Issue 19: a configured member that never ran was never declared dead (membership probed
/// only members it had heard from), so the writes to its replicas were never hinted. Now
/// membership declares a seed dead after its pings go unanswered; the member is held dead
/// and its writes hinted, and once it starts it is admitted (never having been seen, its
/// id is not in use), taken in alive and handed its hints.
#[test]
fn a_configured_member_that_never_ran_is_held_dead_and_hinted_until_it_starts() {
    // Four configured members, of which three start: a key's fourth node is its fallback.
    let mut c: Cluster<Vv> = Cluster::configure(4, &[1, 2, 3, 4], &[], |_| {});
    for n in [1, 2, 4] {
        c.start(n);
    }
    c.settle();
    let state = |c: &Cluster<Vv>, of: usize| {
        let info = c.node(1).info();
        info.members
            .iter()
            .find(|m| m.id == id(of))
            .expect("in the table")
            .state
    };
    // Not heard from, and not yet past its pings (5 periods of 200 ms): unseen, never alive.
    c.run_for(200);
    assert_eq!(state(&c, 3), "unseen");
    c.run_for(3_000);
    assert!(!c.node(1).is_admitting(), "three of four admitted node 1");
    assert_eq!(state(&c, 2), "alive");
    assert_eq!(state(&c, 3), "dead");
    let key = (0..100)
        .map(|i| format!("k{i}"))
        .find(|k| {
            let r = c.node(1).replicas_of(k.as_bytes());
            r.contains(&id(3)) && r.contains(&id(1))
        })
        .expect("some key");
    let response = c.put(1, &key, "hinted", QUORUM, VersionVector::default());
    assert!(written(&response), "{response:?}");
    c.run_for(100);
    let hints = |c: &Cluster<Vv>| -> usize {
        [1, 2, 4]
            .iter()
            .map(|&n| c.node(n).store().expect("serving").hints_held())
            .sum()
    };
    assert_eq!(hints(&c), 1, "one fallback holds a hint for node 3");
    // It starts late: admitted, alive, and handed its hint.
    c.start(3);
    c.run_for(5_000);
    assert!(!c.node(3).is_admitting(), "node 3 admitted");
    assert!(
        !c.notices[2].iter().any(|n| matches!(n, Notice::Refused(_))),
        "{:?}",
        c.notices[2]
    );
    assert_eq!(state(&c, 3), "alive");
    let on_3 = c.data(3).get(key.as_bytes()).cloned();
    let read = on_3.map(|s| <Vv as Mode>::read(&s)).unwrap_or_default();
    assert_eq!(values(&read), ["hinted"]);
    assert_eq!(hints(&c), 0, "the hint was handed off and acknowledged");
}

/// Issue 19: membership's messages rode inside the store's without membership's version
/// byte, so a node running another version would misread them. Now they carry it: a
/// message of another version is refused, counted and said (naming both versions) without
/// a panic, as are empty, oversized and malformed ones, and the node goes on serving.
#[test]
fn a_membership_message_of_another_version_is_refused_naming_both_versions() {
    use super::machine::MemberBytes;
    use synod_membership::{Body, WIRE_VERSION};
    let mut c: Cluster<Vv> = Cluster::new(3, 3, &[]);
    c.run_for(1_000);
    let message = synod_membership::Message {
        generation: 1,
        incarnation: 0,
        joined: 1,
        group: id(2),
        group_size: 3,
        merged_from: None,
        kv_floor: 0,
        body: Body::Gossip,
        updates: Vec::new(),
    };
    let mut other_version = message.encode();
    other_version[0] = WIRE_VERSION.wrapping_add(1);
    let mut malformed = message.encode();
    malformed.truncate(3);
    let oversized = vec![WIRE_VERSION; 1 << 20];
    for bytes in [other_version, Vec::new(), malformed, oversized] {
        let node = c.nodes[0].as_mut().expect("running");
        let now = c.now;
        node.handle(
            now,
            Input::Message {
                from: id(2),
                message: Message::Member(MemberBytes(bytes)),
            },
        );
        c.drain(1);
    }
    assert_eq!(c.node(1).stats().member_messages_refused, 4);
    let said: Vec<&String> = c.notices[0]
        .iter()
        .filter_map(|n| match n {
            Notice::Incompatible(why) => Some(why),
            _ => None,
        })
        .collect();
    // Said at the first, second and fourth refusal.
    assert_eq!(said.len(), 3, "{said:?}");
    let versions = format!(
        "version {}, expected {WIRE_VERSION}",
        WIRE_VERSION.wrapping_add(1)
    );
    assert!(
        said[0].contains(&versions) && said[0].contains("n2"),
        "{}",
        said[0]
    );
    // The node goes on: a write through it is taken, and membership still works.
    let response = c.put(1, "after", "v", QUORUM, VersionVector::default());
    assert!(written(&response), "{response:?}");
    c.run_for(1_000);
    let info = c.node(1).info();
    assert!(info.members.iter().all(|m| m.state == "alive"), "{info:?}");
}

/// Issue 19: a write of a new key past the key limit was refused as a `Refused`, which
/// RESP says as `TRYAGAIN`, so a client retried it until its timeout. Now it is
/// [`Failure::Full`], naming the node and its limit, said as `OOM`, which no client
/// retries; a key already held is still written.
#[test]
fn a_new_key_past_the_key_limit_is_refused_as_full_naming_the_limit() {
    use crate::leaderless::commands::{Shape, settle};
    use crate::resp::Value;
    let mut c: Cluster<Vv> = Cluster::build(3, &[1, 2, 3], &[], |config| config.keys_max = 3);
    c.run_for(1_000);
    for k in ["a", "b", "c"] {
        let response = c.put(1, k, "v", QUORUM, VersionVector::default());
        assert!(written(&response), "{k}: {response:?}");
    }
    let refused = c.put(1, "d", "v", QUORUM, VersionVector::default());
    let Response::Failed(Failure::Full(why)) = &refused else {
        panic!("a fourth key answered {refused:?}");
    };
    assert!(
        why.contains("n1 holds 3 keys") && why.contains("--keys-max"),
        "{why}"
    );
    match settle(Shape::Write, refused.clone()) {
        Value::Error(e) => assert!(e.starts_with("OOM ") && e.contains("keys_max"), "{e}"),
        other => panic!("settled as {other:?}"),
    }
    // A key it holds is written as ever, and INFO shows the limit.
    let again = c.put(1, "a", "w", QUORUM, VersionVector::default());
    assert!(written(&again), "{again:?}");
    assert_eq!(c.node(1).info().keys_max, 3);
}

/// Node 3 cut off while node 4 joins (a move waits for it [`Config::move_dead_wait_ms`],
/// 2 s here, then goes on without it), then restarted from its disk, reaching only the
/// member that gave node 4 its replica of `key` (returned: `dropped`). Anti-entropy is
/// held off.
fn a_join_past_a_member_held_dead() -> (Cluster<Vv>, String, usize) {
    let mut c: Cluster<Vv> = Cluster::build(4, &[1, 2, 3], &[], |config| {
        config.anti_entropy_interval_ms = 600_000;
        config.move_dead_wait_ms = Some(2_000);
    });
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    for key in &keys {
        assert!(written(&c.put(
            1,
            key,
            "old",
            QUORUM,
            VersionVector::default()
        )));
    }
    c.isolate(3);
    c.run_for(5_000);
    assert_eq!(c.node(1).info().members[2].state, "dead");
    c.join(4, 30_000);
    c.run_for(1_000);
    let table = c.node(1).table().clone();
    // A key whose new replicas are node 4, node 3 and one of nodes 1 and 2: the other
    // (`dropped`) gave its replica to node 4.
    let (key, dropped) = keys
        .iter()
        .find_map(|k| {
            let r = table.replicas(table.partition_of(k.as_bytes()));
            if !(r.contains(&id(4)) && r.contains(&id(3))) {
                return None;
            }
            let dropped = if r.contains(&id(1)) { 2 } else { 1 };
            Some((k.clone(), dropped))
        })
        .expect("some key moved from node 1 or 2 to node 4");
    assert!(
        !c.data(dropped).contains_key(key.as_bytes()),
        "node {dropped} dropped {key}"
    );
    (c, key, dropped)
}

/// Node 3 restarts (it recorded no phase of the join) and reaches node `dropped` again,
/// nobody else yet.
fn restart_reaching_only(c: &mut Cluster<Vv>, dropped: usize) {
    c.crash(3);
    c.cut.remove(&(id(3), id(dropped)));
    c.cut.remove(&(id(dropped), id(3)));
    c.start(3);
}

/// The outside review (review13): a join goes on without a member held dead for
/// [`Config::move_dead_wait_ms`], so that member is left two phases behind (it never
/// noted Pending; the others are Done). A QUORUM write of a moved key is acknowledged by
/// the new replicas {4, the old one that kept it} only. Node 3, back, coordinates a QUORUM
/// read with the table without node 4: it meets itself (the old value) and the member
/// that dropped the key (nothing), and misses the acknowledged write.
#[test]
#[ignore = "review13's finding: with move_dead_wait_ms bounded (opt-in; the default waits for ever), a member \
            skipped as dead comes back two phases behind and coordinates with the old table \
            (machine.rs waited_for); fix: such a member learns the moves before it coordinates, and a \
            replica refuses requests for partitions it replicates in none of its tables"]
fn a_member_held_dead_through_a_join_reads_with_the_old_table_and_misses_a_quorum_write() {
    let (mut c, key, dropped) = a_join_past_a_member_held_dead();
    let w = c.put(4, &key, "new", QUORUM, VersionVector::default());
    assert!(written(&w), "{w:?}");
    restart_reaching_only(&mut c, dropped);
    let read = c.get(3, &key, QUORUM);
    assert_eq!(
        values(&read),
        ["new"],
        "node 3 read {key} with the table without node 4 and missed a QUORUM write"
    );
}

/// The outside review (review13): the same member, back, coordinates a QUORUM write with
/// the table without node 4: it is acknowledged by itself and by the member that no
/// longer replicates the key, so a QUORUM read through node 4 (node 3 cut off again)
/// meets only the new replicas that missed it.
#[test]
#[ignore = "review13's finding: with move_dead_wait_ms bounded (opt-in; the default waits for ever), a member \
            skipped as dead comes back two phases behind and coordinates with the old table \
            (machine.rs waited_for); fix: such a member learns the moves before it coordinates, and a \
            replica refuses requests for partitions it replicates in none of its tables"]
fn a_member_held_dead_through_a_join_writes_with_the_old_table_and_a_quorum_read_misses_it() {
    let (mut c, key, dropped) = a_join_past_a_member_held_dead();
    restart_reaching_only(&mut c, dropped);
    let w = c.put(3, &key, "new", QUORUM, VersionVector::default());
    assert!(written(&w), "{w:?}");
    c.isolate(3);
    let read = c.get(4, &key, QUORUM);
    assert_eq!(
        values(&read),
        ["new"],
        "node 3 wrote {key} with the table without node 4; a QUORUM read missed it"
    );
}

// ----- removing a member down for good (REMOVENODE) -----

const ALL: Consistency = Consistency::All;

/// Runs the cluster until node `driver`'s removal of node `gone` is done (at most `ms`);
/// whether it is.
fn until_removed<M: Mode>(c: &mut Cluster<M>, driver: usize, gone: usize, ms: u64) -> bool {
    let done = |c: &Cluster<M>| {
        c.node(driver)
            .info()
            .removals
            .contains(&(id(gone), "removed"))
    };
    for _ in 0..ms / 100 {
        if done(c) {
            return true;
        }
        c.run_for(100);
    }
    done(c)
}

/// Crashes node `n` for good and runs until every running node holds it dead.
fn kill_for_good<M: Mode>(c: &mut Cluster<M>, n: usize) {
    c.crash(n);
    for _ in 0..100 {
        c.run_for(100);
        let held_dead = (1..=c.nodes.len())
            .filter(|&m| m != n && c.nodes[m - 1].is_some())
            .all(|m| {
                let info = c.node(m).info();
                info.members
                    .iter()
                    .find(|v| v.id == id(n))
                    .is_none_or(|v| v.state == "dead")
            });
        if held_dead {
            return;
        }
    }
    panic!("node {n} was never held dead by every running node");
}

/// Every member `nodes` holds the same table, without `gone`, and each of `keys` is on
/// every replica of its partition in it, with `value`.
fn assert_on_every_replica_without(c: &Cluster<Vv>, nodes: &[usize], gone: usize, keys: &[String]) {
    let table = c.node(nodes[0]).table().clone();
    assert_eq!(table.load(id(gone)), 0, "node {gone} is out of the table");
    for &n in nodes {
        assert_eq!(c.node(n).table(), &table, "node {n}'s table");
        let info = c.node(n).info();
        assert!(
            info.members.iter().all(|m| m.id != id(gone)),
            "node {n} forgot node {gone}: {:?}",
            info.members
        );
        assert_eq!(info.removed, [id(gone)], "node {n}");
    }
    for key in keys {
        let replicas = table.replicas(table.partition_of(key.as_bytes()));
        assert_eq!(replicas.len(), 3, "{key}: replication 3");
        for &r in replicas {
            let n = r.get() as usize;
            assert!(c.data(n).contains_key(key.as_bytes()), "{key} on node {n}");
        }
    }
}

/// Issue 19: a member down for good is removed by an operator (REMOVENODE at another
/// member): its partitions are streamed to their new replicas by the surviving ones (anti-
/// entropy is held off, so only that stream brings them), every key is on three live
/// replicas afterwards, every member forgets it, and a later join proceeds (it waits for
/// every member, and before the removal waited for the dead one for ever: see
/// `a_join_waits_for_a_member_down_for_good_until_it_is_removed`).
#[test]
fn a_member_down_for_good_is_removed_and_its_keys_reach_their_new_replicas() {
    let mut c: Cluster<Vv> = Cluster::build(5, &[1, 2, 3, 4], &[], |config| {
        config.anti_entropy_interval_ms = 600_000;
    });
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    put_all(&mut c, &keys, "v");
    assert!(c.node(1).table().load(id(4)) > 0);
    kill_for_good(&mut c, 4);
    assert_eq!(c.call(2, Request::Remove(id(4))), Response::Removing);
    assert!(
        until_removed(&mut c, 2, 4, 30_000),
        "{:?}",
        c.node(2).info().removals
    );
    assert_on_every_replica_without(&c, &[1, 2, 3], 4, &keys);
    for key in &keys {
        assert_eq!(values(&c.get(3, key, QUORUM)), ["v"], "{key}");
    }
    // Removed for good: a second removal, and a new node under its id, are refused.
    let again = c.call(1, Request::Remove(id(4)));
    assert!(
        matches!(&again, Response::Failed(Failure::Refused(why)) if why.contains("removed")),
        "{again:?}"
    );
    c.join(5, 30_000);
    assert!(c.node(1).table().load(id(5)) > 0);
    for key in &keys {
        assert_eq!(values(&c.get(5, key, QUORUM)), ["v"], "{key}");
    }
}

/// Issue 19: a join waits for every member, a dead one too (Cassandra's consistent range
/// movement), so with a member down for good it waits for ever; once the member is removed
/// it goes on, both moves end, and every key is on its replicas of the final table.
#[test]
fn a_join_waits_for_a_member_down_for_good_until_it_is_removed() {
    let mut c: Cluster<Vv> = Cluster::build(5, &[1, 2, 3, 4], &[], |config| {
        config.anti_entropy_interval_ms = 600_000;
    });
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    put_all(&mut c, &keys, "v");
    kill_for_good(&mut c, 4);
    c.start(5);
    c.run_for(10_000);
    // It asks every member for a move slot, node 4 too, and waits for its answer.
    assert_eq!(
        c.node(5).info().join,
        Some("asking-for-slot"),
        "the join waits for node 4"
    );
    assert_eq!(c.call(1, Request::Remove(id(4))), Response::Removing);
    assert!(until_removed(&mut c, 1, 4, 30_000));
    for _ in 0..300 {
        if c.node(5).info().join == Some("joined") {
            break;
        }
        c.run_for(100);
    }
    assert_eq!(c.node(5).info().join, Some("joined"));
    c.run_for(2_000);
    assert_on_every_replica_without(&c, &[1, 2, 3, 5], 4, &keys);
}

/// A joiner (node 4) crashes for good once its join reached `phase` at some member
/// (`draining`: Pending everywhere, nothing streamed; `switching`: Switched at some
/// members, which read with the table with it): writes at ALL fail (node 4 is a replica in
/// some table a write meets), then REMOVENODE 4 takes every member to a table without it,
/// and writes at ALL succeed again, every earlier QUORUM write still read.
fn a_joiner_killed_for_good_is_removed(at: &str) {
    let mut c: Cluster<Vv> = Cluster::build(4, &[1, 2, 3], &[], |config| {
        config.anti_entropy_interval_ms = 600_000;
    });
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    put_all(&mut c, &keys, "v");
    c.start(4);
    // Pending everywhere: draining. Switched on nodes 1 and 2 only: node 3 never hears of
    // the switch.
    c.dropped = |from, to, message| {
        from == id(4)
            && to == id(3)
            && matches!(
                message,
                Message::Move {
                    phase: MovePhase::Switched,
                    ..
                }
            )
    };
    let mut reached = false;
    for _ in 0..1_000 {
        c.run_for(10);
        if c.node(4).info().join == Some(at) {
            reached = true;
            break;
        }
    }
    assert!(reached, "node 4's join never reached {at}");
    if at == "switching" {
        assert!(
            c.node(1).table().load(id(4)) > 0,
            "node 1 reads with node 4"
        );
        assert_eq!(c.node(3).table().load(id(4)), 0, "node 3 does not");
    }
    c.crash(4);
    kill_for_good(&mut c, 4);
    // Node 4 is a replica, in some table a write meets, of most partitions.
    let probes: Vec<String> = (0..16).map(|i| format!("probe{i}")).collect();
    let stuck = probes
        .iter()
        .filter(|k| !written(&c.put(1, k, "all", ALL, VersionVector::default())))
        .count();
    assert!(stuck > 0, "a write at ALL meets node 4's table");
    assert_eq!(c.call(2, Request::Remove(id(4))), Response::Removing);
    assert!(until_removed(&mut c, 2, 4, 30_000));
    assert_on_every_replica_without(&c, &[1, 2, 3], 4, &keys);
    for key in keys.iter().chain(&probes) {
        let w = c.put(3, key, "all", ALL, VersionVector::default());
        assert!(written(&w), "{key} at ALL: {w:?}");
    }
    for key in &keys {
        // A blind write: a sibling of the value written before.
        assert_eq!(values(&c.get(1, key, QUORUM)), ["v", "all"], "{key}");
    }
}

#[test]
fn a_joiner_killed_for_good_while_pending_is_removed_and_writes_at_all_succeed_again() {
    a_joiner_killed_for_good_is_removed("draining");
}

#[test]
fn a_joiner_killed_for_good_while_switched_is_removed_and_writes_at_all_succeed_again() {
    a_joiner_killed_for_good_is_removed("switching");
}

/// REMOVENODE is refused for a member some member holds alive (node 1 hears neither from
/// node 3 nor, through membership, from node 2, so it holds both dead; node 2 still hears
/// from node 3, which may serve clients with its table), for a member the node taking
/// the command holds alive, for an unknown id, for the node itself, and by a node cut off
/// from every other member (none answers it); nothing is recorded and the table is
/// unchanged.
#[test]
fn a_removal_is_refused_unless_every_other_member_holds_the_member_dead() {
    let mut c: Cluster<Vv> = Cluster::new(3, 3, &[]);
    let table = c.node(1).table().clone();
    let refused = |c: &mut Cluster<Vv>, n: usize, gone: u64, words: &str| {
        let answer = c.call(n, Request::Remove(NodeId::new(gone)));
        assert!(
            matches!(&answer, Response::Failed(Failure::Refused(why)) if why.contains(words)),
            "REMOVENODE {gone} at {n}: {answer:?}"
        );
    };
    refused(&mut c, 1, 2, "holds node n2 alive");
    refused(&mut c, 1, 9, "not a member");
    refused(&mut c, 1, 1, "cannot remove itself");
    c.dropped = |from, to, message| {
        let (a, b) = (from.get().min(to.get()), from.get().max(to.get()));
        (a, b) == (1, 3) || ((a, b) == (1, 2) && matches!(message, Message::Member(_)))
    };
    c.run_for(5_000);
    let state = |c: &Cluster<Vv>, n: usize, of: usize| c.node(n).info().members[of - 1].state;
    assert_eq!((state(&c, 1, 2), state(&c, 1, 3)), ("dead", "dead"));
    assert_eq!(state(&c, 2, 3), "alive");
    refused(&mut c, 1, 3, "member n2 holds node n3 alive");
    // Node 1 cut off from both: nobody answers it.
    c.isolate(1);
    refused(&mut c, 1, 3, "did not answer");
    assert_eq!(c.node(1).info().removals, []);
    for n in 1..=3 {
        assert_eq!(c.node(n).table(), &table, "node {n}");
        assert!(
            !c.disks[n - 1]
                .iter()
                .any(|r| matches!(r, Record::Removing { .. })),
            "node {n} recorded nothing"
        );
    }
}

/// A removed member that comes back (its data directory intact) is told by the members
/// that it was removed: its process is refused (it ends), its restart is refused from its
/// own records, and the members take nothing from it meanwhile.
#[test]
fn a_removed_member_that_comes_back_is_refused() {
    let mut c: Cluster<Vv> = Cluster::build(4, &[1, 2, 3, 4], &[], |config| {
        config.anti_entropy_interval_ms = 600_000;
    });
    kill_for_good(&mut c, 4);
    assert_eq!(c.call(1, Request::Remove(id(4))), Response::Removing);
    assert!(until_removed(&mut c, 1, 4, 30_000));
    c.start(4);
    c.run_for(3_000);
    assert!(
        refusal(&c, 4).is_some_and(|why| why.contains("was removed")),
        "{:?}",
        c.notices[3]
    );
    assert!(c.node(4).is_gone());
    let table = c.node(1).table().clone();
    assert_eq!(table.load(id(4)), 0);
    c.notices[3].clear();
    c.crash(4);
    c.start(4);
    assert!(refusal(&c, 4).is_some_and(|why| why.contains("was removed")));
    // A new process under the id, its data directory empty, is refused too.
    c.crash(4);
    c.disks[3].clear();
    c.notices[3].clear();
    c.start(4);
    c.run_for(3_000);
    assert!(refusal(&c, 4).is_some(), "{:?}", c.notices[3]);
    assert_eq!(c.node(1).table(), &table);
}

/// The member driving a removal crashes once it is recorded, and resumes it after its
/// restart, as a leaver resumes its leave.
#[test]
fn a_removal_resumes_after_its_driver_restarts() {
    let mut c: Cluster<Vv> = Cluster::build(4, &[1, 2, 3, 4], &[], |config| {
        config.anti_entropy_interval_ms = 600_000;
    });
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    put_all(&mut c, &keys, "v");
    kill_for_good(&mut c, 4);
    assert_eq!(c.call(3, Request::Remove(id(4))), Response::Removing);
    c.crash(3);
    c.run_for(1_000);
    c.start(3);
    assert!(
        until_removed(&mut c, 3, 4, 30_000),
        "{:?}",
        c.node(3).info().removals
    );
    assert_on_every_replica_without(&c, &[1, 2, 3], 4, &keys);
}

/// review15: the member driving a removal (node 2, removing node 5) dies for good once
/// every member noted the removal Pending. Nobody else could finish it: REMOVENODE 5 at
/// another member was refused ("being removed already"), and removing the driver itself
/// left node 5's removal Pending on every member for ever (node 5 in the table every member
/// reads with, every write meeting two tables). Now REMOVENODE 5 at node 1 takes the
/// removal over; it waits for node 2 (down for good too, and, as any member, waited for),
/// so node 2 is removed as well, and both removals end on every member, every key still
/// read at QUORUM (each was on a third replica).
#[test]
fn a_removal_whose_driver_dies_for_good_is_finished_by_another_member() {
    let mut c: Cluster<Vv> = Cluster::build(5, &[1, 2, 3, 4, 5], &[], |config| {
        config.anti_entropy_interval_ms = 600_000;
    });
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    put_all(&mut c, &keys, "v");
    kill_for_good(&mut c, 5);
    assert_eq!(c.call(2, Request::Remove(id(5))), Response::Removing);
    // Every other member notes the removal Pending (node 5 is held a removal there).
    let mut noted = false;
    for _ in 0..100 {
        c.run_for(10);
        noted = [1, 3, 4].iter().all(|&n| {
            c.disks[n - 1].iter().any(|r| {
                matches!(r, Record::Move { id: gone, kind: MoveKind::Remove, .. } if *gone == id(5))
            })
        });
        if noted {
            break;
        }
    }
    assert!(noted, "nodes 1, 3 and 4 noted node 5's removal");
    // The driver dies for good.
    kill_for_good(&mut c, 2);
    assert_eq!(c.call(1, Request::Remove(id(5))), Response::Removing);
    assert!(
        c.disks[0]
            .iter()
            .any(|r| matches!(r, Record::Removing { id: gone } if *gone == id(5))),
        "node 1 recorded that it drives node 5's removal"
    );
    // Node 1 drives it now, and refuses to take it over twice.
    let again = c.call(1, Request::Remove(id(5)));
    assert!(
        matches!(&again, Response::Failed(Failure::Refused(why)) if why.contains("by node n1")),
        "{again:?}"
    );
    assert_eq!(c.call(1, Request::Remove(id(2))), Response::Removing);
    assert!(until_removed(&mut c, 1, 2, 30_000), "node 2's removal");
    assert!(until_removed(&mut c, 1, 5, 30_000), "node 5's removal");
    c.run_for(1_000);
    for n in [1, 3, 4] {
        let info = c.node(n).info();
        assert_eq!(info.removed, [id(2), id(5)], "node {n}");
        assert_eq!(info.moves_under_way, 0, "node {n}");
        assert_eq!(c.node(n).table(), c.node(1).table(), "node {n}'s table");
    }
    for key in &keys {
        assert_eq!(values(&c.get(3, key, QUORUM)), ["v"], "{key}");
    }
}

/// Two members drive one removal at once: node 2's removal of node 5 is taken over by
/// node 1 while node 2 is only cut off (held dead), then node 2 is back and both drive it
/// to the end. Each step is idempotent (a phase noted is never undone, each driver moves
/// it on only once what that phase needs is true), so they end with one table, node 5
/// removed everywhere and every key on each of its three replicas.
#[test]
fn a_removal_taken_over_while_its_driver_is_cut_off_ends_with_both_driving() {
    let mut c: Cluster<Vv> = Cluster::build(5, &[1, 2, 3, 4, 5], &[], |config| {
        config.anti_entropy_interval_ms = 600_000;
    });
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    put_all(&mut c, &keys, "v");
    kill_for_good(&mut c, 5);
    assert_eq!(c.call(2, Request::Remove(id(5))), Response::Removing);
    c.run_for(50);
    c.isolate(2);
    c.run_for(3_000);
    assert_eq!(c.call(1, Request::Remove(id(5))), Response::Removing);
    c.run_for(1_000);
    c.heal();
    assert!(until_removed(&mut c, 1, 5, 30_000), "node 1's drive");
    assert!(until_removed(&mut c, 2, 5, 30_000), "node 2's drive");
    c.run_for(1_000);
    assert_on_every_replica_without(&c, &[1, 2, 3, 4], 5, &keys);
    for key in &keys {
        assert_eq!(values(&c.get(4, key, QUORUM)), ["v"], "{key}");
    }
}

/// Each of `keys` held by some node of `survivors` before, with the final replicas (in
/// node 1's table) holding it, where those are not all of them.
fn keys_short_of_their_replicas(
    c: &Cluster<Vv>,
    keys: &[String],
    survivors: &[usize],
) -> Vec<(String, Vec<usize>, Vec<usize>)> {
    let table = c.node(1).table().clone();
    keys.iter()
        .filter_map(|key| {
            let replicas: Vec<usize> = table
                .replicas(table.partition_of(key.as_bytes()))
                .iter()
                .map(|r| r.get() as usize)
                .collect();
            let on: Vec<usize> = replicas
                .iter()
                .copied()
                .filter(|&n| c.data(n).contains_key(key.as_bytes()))
                .collect();
            let held = survivors
                .iter()
                .any(|&n| c.data(n).contains_key(key.as_bytes()));
            (held && on.len() < replicas.len()).then(|| (key.clone(), replicas, on))
        })
        .collect()
}

/// Regression (review15): a join (node 5) and the removal of a member down for good (node
/// 4) under way at once. The removal's receivers are the replicas of the tables the driver
/// may read with once it switches, worked out when its streams begin, while node 5's join
/// is still Pending there or not begun: node 5 is no receiver. Node 5 streamed only the
/// partitions it took in the table with node 4 (the removal Pending where it worked that
/// out), so once both moves were made, node 4's leave of the table gave node 5 partitions
/// nobody streamed to it: it served them as a replica without their keys. A joiner now
/// takes every partition it replicates in a table with its join made, the other moves made
/// or not, streamed by every replica of the base table when another move is under way.
#[test]
fn a_join_under_way_through_a_removal_is_streamed_every_partition_it_takes() {
    let mut c: Cluster<Vv> = Cluster::build(5, &[1, 2, 3, 4], &[], |config| {
        config.anti_entropy_interval_ms = 600_000;
    });
    let keys: Vec<String> = (0..80).map(|i| format!("k{i}")).collect();
    put_all(&mut c, &keys, "v");
    kill_for_good(&mut c, 4);
    c.start(5);
    c.run_for(3_000);
    // It asks every member for a move slot, node 4 too, and waits for its answer.
    assert_eq!(
        c.node(5).info().join,
        Some("asking-for-slot"),
        "the join waits for node 4"
    );
    // The removal's receivers do not say they were streamed until node 5 has joined.
    c.dropped = |_, _, message| matches!(message, Message::Pulled { .. });
    assert_eq!(c.call(1, Request::Remove(id(4))), Response::Removing);
    for _ in 0..300 {
        if c.node(5).info().join == Some("joined") {
            break;
        }
        c.run_for(100);
    }
    assert_eq!(c.node(5).info().join, Some("joined"));
    c.dropped = |_, _, _| false;
    assert!(until_removed(&mut c, 1, 4, 30_000), "node 4's removal");
    c.run_for(2_000);
    for n in [2, 3, 5] {
        assert_eq!(c.node(n).table(), c.node(1).table(), "node {n}'s table");
    }
    let short = keys_short_of_their_replicas(&c, &keys, &[1, 2, 3]);
    assert!(
        short.is_empty(),
        "keys missing on some of their replicas (key, replicas, holders): {short:?}"
    );
}

/// Runs the cluster until each of `joiners` has joined and each of `leavers` has left (at
/// most `ms`), failing the test with where each stands if not.
fn until_moved<M: Mode>(c: &mut Cluster<M>, joiners: &[usize], leavers: &[usize], ms: u64) {
    let done = |c: &Cluster<M>| {
        joiners
            .iter()
            .all(|&n| c.node(n).info().join == Some("joined"))
            && leavers
                .iter()
                .all(|&n| c.node(n).info().leave == Some("left"))
    };
    for _ in 0..ms / 100 {
        if done(c) {
            return;
        }
        c.run_for(100);
    }
    let stands: Vec<String> = joiners
        .iter()
        .chain(leavers)
        .map(|&n| {
            let info = c.node(n).info();
            format!(
                "node {n}: {:?} {:?} {:?}",
                info.join, info.leave, info.move_wait
            )
        })
        .collect();
    assert!(done(c), "{stands:?}");
}

/// Whether node `n` said that its join waited for a move slot, refused by `by`.
fn waited_for_a_slot<M: Mode>(c: &Cluster<M>, n: usize, by: Option<usize>) -> bool {
    let by = by.map(|b| format!("node {} has", id(b)));
    c.notices[n - 1].iter().any(|notice| {
        matches!(notice, Notice::Waiting(why)
            if why.starts_with("join: waiting for a move slot: ")
                && by.as_ref().is_none_or(|by| why.contains(by.as_str())))
    })
}

/// Every running node of `nodes` holds the same table, with no move under way, and every
/// one of `keys` reads back `value` at QUORUM through each.
fn settled_with(c: &mut Cluster<Vv>, nodes: &[usize], keys: &[String], value: &str) {
    let table = c.node(nodes[0]).table().clone();
    for &n in nodes {
        assert_eq!(c.node(n).table(), &table, "node {n}'s table");
        let info = c.node(n).info();
        assert_eq!(info.moves_under_way, 0, "node {n}");
        assert_eq!(info.move_wait, None, "node {n}");
    }
    for &n in nodes {
        for key in keys {
            assert_eq!(values(&c.get(n, key, QUORUM)), [value], "node {n}, {key}");
        }
    }
}

/// Six joiners and a leave of node 3 started at once, in a cluster of nodes 1 to 3 holding
/// `keys`; `broken`: the variant whose moves take no slots.
fn seven_movers_at_once(broken: bool) -> (Cluster<Vv>, Vec<String>) {
    let mut c: Cluster<Vv> = Cluster::build(9, &[1, 2, 3], &[], |config| {
        #[cfg(feature = "broken")]
        {
            config.broken_moves_without_slots = broken;
        }
        let _ = (config, broken);
    });
    c.slots_checked = !broken;
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    put_all(&mut c, &keys, "v");
    for n in 4..=9 {
        c.start(n);
    }
    assert_eq!(c.call(3, Request::Leave), Response::Leaving);
    (c, keys)
}

/// Issue 19: with more than [`MOVES_ENUMERATED_MAX`] moves under way at once, a write met
/// its level in the tables of the first four only, so a QUORUM read could miss it. Six
/// joiners and a leave started at once now take move slots: no node ever has more than
/// four moves under way (the cluster checks it after every step), the others wait for a
/// slot and say so, and every move ends, every key still read at QUORUM through every node.
#[test]
fn six_joiners_and_a_leave_at_once_never_put_more_than_four_moves_under_way() {
    let (mut c, keys) = seven_movers_at_once(false);
    let joiners: Vec<usize> = (4..=9).collect();
    until_moved(&mut c, &joiners, &[3], 120_000);
    assert!(c.under_way_peak >= 2, "{} at most", c.under_way_peak);
    assert!(
        joiners.iter().any(|&n| waited_for_a_slot(&c, n, None)),
        "seven movers and no joiner waited for a slot"
    );
    c.crash(3);
    let staying = [1, 2, 4, 5, 6, 7, 8, 9];
    settled_with(&mut c, &staying, &keys, "v");
    assert_eq!(c.node(1).table().load(id(3)), 0);
    for n in joiners {
        assert!(c.node(1).table().load(id(n)) > 0, "node {n} in the table");
    }
}

/// Issue 19: five joiners ask five members for slots at once, and each member hears a
/// different joiner last, so it grants the other four and refuses that one: every joiner
/// holds four grants and is refused one. Each withdraws its grants and asks again after a
/// random wait, so they do not wait on each other for ever; all join, with never more than
/// four moves under way anywhere. The members never ask the movers about the slots they
/// hold here (`permit_query_ms` past the run), so only the withdrawals free them.
#[test]
fn five_movers_each_refused_by_a_different_member_withdraw_and_all_join() {
    let mut c: Cluster<Vv> = Cluster::build(10, &[1, 2, 3, 4, 5], &[], |config| {
        config.permit_query_ms = 600_000;
    });
    c.hold = Some(Box::new(|_, _, m| matches!(m, Message::Permit { .. })));
    for n in 6..=10 {
        c.start(n);
    }
    let asked = |c: &Cluster<Vv>| -> BTreeSet<(NodeId, NodeId)> {
        c.held
            .iter()
            .filter(|(_, to, _)| to.get() <= 5)
            .map(|(from, to, _)| (*from, *to))
            .collect()
    };
    for _ in 0..100 {
        if asked(&c).len() == 25 {
            break;
        }
        c.run_for(100);
    }
    assert_eq!(asked(&c).len(), 25, "every joiner asked every member");
    // Each joiner's first request to each member; member `m` hears joiner `m + 5` last.
    c.hold = None;
    let mut first: BTreeMap<(NodeId, NodeId), Message<_>> = BTreeMap::new();
    for (from, to, message) in std::mem::take(&mut c.held) {
        first.entry((from, to)).or_insert(message);
    }
    for m in 1..=5 {
        let last = m + 5;
        for j in (6..=10).filter(|&j| j != last).chain([last]) {
            let message = first.remove(&(id(j), id(m))).expect("asked");
            c.net.push_back((id(j), id(m), message));
        }
    }
    c.settle();
    for j in 6..=10 {
        assert!(
            waited_for_a_slot(&c, j, Some(j - 5)),
            "node {j}: {:?}",
            c.notices[j - 1]
        );
        assert_eq!(c.node(j).info().join, Some("waiting-for-slot"), "node {j}");
    }
    let joiners: Vec<usize> = (6..=10).collect();
    until_moved(&mut c, &joiners, &[], 120_000);
    for n in 1..=10 {
        assert_eq!(c.node(n).info().moves_under_way, 0, "node {n}");
    }
}

/// Issue 19: `LEAVE` while a node holds every move slot is refused with what holds them
/// (`BUSY`); one accepted while another member's slots are full waits for a slot, saying
/// why in INFO, and a joiner refused by it waits and says so (its process prints it on
/// stderr). Once the joins stream, everything ends.
#[test]
fn a_leave_while_four_moves_hold_the_slots_is_refused_or_waits_saying_why() {
    let mut c: Cluster<Vv> = Cluster::build(7, &[1, 2, 3], &[], |_| {});
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    put_all(&mut c, &keys, "v");
    // The joins stall before their keys move, and node 1 does not hear node 7 ask.
    c.hold = Some(Box::new(|from, to, m| {
        matches!(m, Message::StreamTo { .. })
            || (matches!(m, Message::Permit { .. }) && from == id(7) && to == id(1))
    }));
    for n in 4..=7 {
        c.start(n);
    }
    for _ in 0..100 {
        if (4..=6).all(|n| c.node(n).info().join == Some("streaming")) {
            break;
        }
        c.run_for(100);
    }
    for n in 4..=6 {
        assert_eq!(c.node(n).info().join, Some("streaming"), "node {n}");
    }
    assert_eq!(c.node(7).info().join, Some("asking-for-slot"));
    // Node 2 holds four slots (nodes 4 to 6 under way, node 7 granted): its LEAVE is
    // refused, naming them.
    let busy = c.call(2, Request::Leave);
    let Response::Failed(Failure::Busy(why)) = &busy else {
        panic!("LEAVE at node 2 answered {busy:?}");
    };
    assert_eq!(
        why,
        "node n2 has 4 moves under way or starting (n4 join pending, n5 join pending, n6 join \
         pending, n7 join starting); try LEAVE again when one is done"
    );
    match super::commands::settle(super::commands::Shape::Leave, busy.clone()) {
        crate::resp::Value::Error(e) => assert!(e.starts_with("BUSY node n2 has 4"), "{e}"),
        other => panic!("settled as {other:?}"),
    }
    assert_eq!(
        c.node(2).info().leave,
        None,
        "a refused LEAVE leaves no trace"
    );
    // Node 1 holds three: its LEAVE is taken, and waits for a slot at node 2.
    assert_eq!(c.call(1, Request::Leave), Response::Leaving);
    let info = c.node(1).info();
    assert_eq!(info.leave, Some("waiting-for-slot"));
    let why = info.move_wait.expect("why it waits");
    assert!(
        why.starts_with("node n2 has 4 moves under way or starting"),
        "{why}"
    );
    // Node 7's request reaches node 1, which now holds four (its own leave among them).
    c.hold = Some(Box::new(|_, _, m| matches!(m, Message::StreamTo { .. })));
    let held = std::mem::take(&mut c.held);
    let (to_1, streams): (Vec<_>, Vec<_>) = held
        .into_iter()
        .partition(|(from, to, _)| *from == id(7) && *to == id(1));
    c.held = streams;
    c.net.extend(to_1);
    c.settle();
    assert!(waited_for_a_slot(&c, 7, Some(1)), "{:?}", c.notices[6]);
    assert_eq!(c.node(7).info().join, Some("waiting-for-slot"));
    assert!(
        c.node(7)
            .info()
            .move_wait
            .is_some_and(|w| w.contains("n1 leave starting")),
        "{:?}",
        c.node(7).info()
    );
    // The joins stream: every move ends.
    c.hold = None;
    let held = std::mem::take(&mut c.held);
    c.net.extend(held);
    until_moved(&mut c, &[4, 5, 6, 7], &[1], 120_000);
    c.crash(1);
    settled_with(&mut c, &[2, 3, 4, 5, 6, 7], &keys, "v");
}

/// The check of the test above catches the variant whose moves take no slots (the code
/// before issue 19's fix): the seven moves are under way at once. (Two of its joins then
/// never end: their streams stall, so the test runs a fixed time.)
#[cfg(feature = "broken")]
#[test]
fn without_move_slots_seven_movers_are_under_way_at_once() {
    let (mut c, _) = seven_movers_at_once(true);
    c.run_for(20_000);
    assert!(
        c.under_way_peak > MOVES_ENUMERATED_MAX,
        "{} moves under way at most",
        c.under_way_peak
    );
}

// ----- review17: an outside review of move slots and join streams (issue 19) -----

/// Regression (review17): two joins under way at once (nodes 4 and 5, both granted slots;
/// 64 partitions, the default), anti-entropy held off so that only the moves' streams bring
/// keys to the joiners. A joiner worked out the partitions it takes, and who streams them,
/// once, as its drain ended, with the other move at its phase there then: node 5 did so
/// while node 4's join was still pending at it, so it was streamed its share of the table
/// of nodes 1, 2, 3 and 5. Tables are built by joining members in id order (table_of), so
/// in the final table (nodes 1 to 5) node 5's share is carved from the table with node 4 in
/// it: 16 of its partitions were ones it was never streamed. A key written at QUORUM before
/// the joins (on `x` and on the member that gives its replica up, one link cut) was then on
/// one of its three final replicas: a QUORUM read through the other old replica `y`, cut
/// from `x`, met `y` and node 5 and missed the acknowledged write. A joiner now works its
/// streams out again whenever a move changes.
#[test]
fn review17_two_joins_at_once_are_streamed_every_partition_they_take() {
    let mut c: Cluster<Vv> = Cluster::build(5, &[1, 2, 3], &[], |config| {
        config.anti_entropy_interval_ms = 600_000;
        config.partitions = 64;
    });
    let config = c.configs[0].clone();
    let set = |nodes: &[usize]| -> BTreeSet<NodeId> { nodes.iter().map(|&n| id(n)).collect() };
    let last = table_of(&config, &set(&[1, 2, 3, 4, 5]), &BTreeSet::new());
    let alone = table_of(&config, &set(&[1, 2, 3, 5]), &BTreeSet::new());
    // A key node 5 replicates in the final table and not in the table of its join alone,
    // whose other final replicas are first members.
    let (key, x, y) = (0..1_000)
        .find_map(|i| {
            let key = format!("x{i}");
            let p = last.partition_of(key.as_bytes());
            let r: Vec<usize> = last.replicas(p).iter().map(|n| n.get() as usize).collect();
            let others: Vec<usize> = r.iter().copied().filter(|&n| n != 5).collect();
            let fits = r.contains(&5)
                && !alone.replicas(p).contains(&id(5))
                && others.iter().all(|&n| n <= 3);
            fits.then(|| (key, others[0], others[1]))
        })
        .expect("node 5 replicates some partition only in the final table");
    // Written at QUORUM on `x` and the first member that is not a final replica.
    c.cut.insert((id(x), id(y)));
    let w = c.put(x, &key, "acked", QUORUM, VersionVector::default());
    assert!(written(&w), "{w:?}");
    c.heal();
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    put_all(&mut c, &keys, "v");
    c.start(4);
    c.start(5);
    until_moved(&mut c, &[4, 5], &[], 60_000);
    c.run_for(1_000);
    for n in 1..=5 {
        assert_eq!(c.node(n).table(), &last, "node {n}'s table");
    }
    let short = keys_short_of_their_replicas(&c, &keys, &[1, 2, 3]);
    c.cut.insert((id(x), id(y)));
    c.cut.insert((id(y), id(x)));
    let read = c.get(y, &key, QUORUM);
    assert_eq!(
        values(&read),
        ["acked"],
        "a QUORUM read through node {y} (cut from node {x}) missed {key}, written at QUORUM \
         before the joins; keys node 5 replicates and was never streamed (key, replicas, \
         holders): {short:?}"
    );
}

/// review17: a node admitted with a stale view of the moves. Node 5 starts and asks to be
/// admitted while node 4 has not begun its join; the members' answers to it are delayed in
/// the network (held here). Node 5 runs nothing but admission meanwhile, so no member knows
/// it and node 4's join asks it for no slot and waits for it in no phase: it ends (Done,
/// writes to the table with node 4 alone, node 4's old replica dropping the keys it gave
/// up). A key is written at QUORUM then, on node 4 and the other kept replica `a` (the link
/// to `b` cut). The answers from before the join arrive: two (half of the four members node
/// 5 is configured with, itself among them) admit node 5, with the moves they carried
/// (none), and node 5 serves at once (machine.rs admit, 4900-4927). A client's QUORUM read
/// reaches it before any member has told it the moves: placed with the table without node
/// 4, cut from `a`, it meets `b` and the replica node 4 replaced, and misses the
/// acknowledged write. (Answers sent while the join was pending do the same: they say
/// Pending, and the join ends without node 5.) Regression: a node admitted on its first
/// start that is not a voter now serves only once as many members as admitted it told it
/// the moves since they knew it (until then it answers that it is starting, and the client
/// asks again); it failed before (node 5 read without the acknowledged write).
#[test]
fn review17_a_node_admitted_with_a_stale_answer_reads_with_the_table_of_before_a_join() {
    let mut c: Cluster<Vv> = Cluster::build(5, &[1, 2, 3], &[], |config| {
        config.anti_entropy_interval_ms = 600_000;
    });
    let config = c.configs[0].clone();
    let set = |nodes: &[usize]| -> BTreeSet<NodeId> { nodes.iter().map(|&n| id(n)).collect() };
    let with_4 = table_of(&config, &set(&[1, 2, 3, 4]), &BTreeSet::new());
    // A key node 4 takes: its other new replicas `a` and `b`.
    let (key, a, b) = (0..1_000)
        .find_map(|i| {
            let key = format!("x{i}");
            let r: Vec<usize> = with_4
                .replicas(with_4.partition_of(key.as_bytes()))
                .iter()
                .map(|n| n.get() as usize)
                .collect();
            let kept: Vec<usize> = r.iter().copied().filter(|&n| n != 4).collect();
            r.contains(&4).then(|| (key, kept[0], kept[1]))
        })
        .expect("node 4 takes some partition");
    c.hold = Some(Box::new(|_, to, m| {
        to == id(5) && matches!(m, Message::Admission { .. })
    }));
    c.start(5);
    c.run_for(300);
    // Node 5 counts itself among the configured members (four): two answers admit it.
    let stale = c.held.len();
    assert!(stale >= 2, "the members answered node 5");
    assert!(c.node(5).is_admitting());
    c.join(4, 30_000);
    c.run_for(1_000);
    for n in 1..=4 {
        assert_eq!(c.node(n).table(), &with_4, "node {n}'s table");
        assert_eq!(c.node(n).info().moves_under_way, 0, "node {n}");
    }
    c.cut.insert((id(4), id(b)));
    let w = c.put(4, &key, "acked", QUORUM, VersionVector::default());
    assert!(written(&w), "{w:?}");
    c.heal();
    // The answers from before the join arrive; the later ones are still delayed.
    let answers: Vec<_> = c.held.drain(..).take(stale).collect();
    c.hold = None;
    c.cut.insert((id(5), id(a)));
    c.cut.insert((id(a), id(5)));
    for (from, to, answer) in answers {
        assert_eq!(to, id(5));
        let node = c.nodes[4].as_mut().expect("running");
        node.handle(
            c.now,
            Input::Message {
                from,
                message: answer,
            },
        );
        c.drain(5);
    }
    assert!(
        !c.node(5).is_admitting(),
        "admitted by the answers from before the join"
    );
    // A client's read, before anything else reaches node 5; asked again while node 5 says
    // it is starting.
    let mut answered = None;
    for _ in 0..30 {
        c.next_id += 1;
        let rid = RequestId(c.next_id);
        let request = Request::Get {
            key: key.as_bytes().to_vec(),
            level: QUORUM,
        };
        let node = c.nodes[4].as_mut().expect("running");
        node.handle(c.now, Input::Request { id: rid, request });
        c.drain(5);
        c.settle();
        c.run_for(1_000);
        match c.replies.remove(&rid) {
            Some(Response::Read(read)) => {
                answered = Some(read);
                break;
            }
            Some(Response::Failed(Failure::Refused(why))) if why.contains("starting") => {}
            other => panic!("node 5 answered the read {other:?}"),
        }
    }
    let read = answered.expect("node 5 served a read within 30 s");
    assert_eq!(
        values(&read),
        ["acked"],
        "node 5 read {key} with the table without node 4 (cut from node {a}) and missed a \
         QUORUM write acknowledged by nodes 4 and {a}"
    );
}

/// Regression (review17): a join (node 5) and a leave (node 3) under way at once, in a
/// cluster of nodes 1 to 4 (anti-entropy held off). The leaver worked out where each of
/// its partitions goes once, as its drain ended (with the join pending there), so a
/// partition in which node 5 takes node 3's place in the final table (leave_in_place from
/// the table with node 5) is handed, among others, to `x`, which takes node 3's place in
/// the table without node 5. The hand-off is delayed in the network until node 5's join is
/// done. `x` then replicates that partition in none of its tables (node 5's join made, the
/// leave made or not) and skips its keys (merge_states); the leaver resent them every
/// `leave_retry_ms`, for ever: the leave never ended, and its move slot was held at every
/// member. A leaver now works its hand-off out again whenever a move changes, and no
/// longer hands `x` that partition once the join is done.
#[test]
fn review17_a_leave_whose_hand_off_outlives_a_join_under_way_ends() {
    let mut c: Cluster<Vv> = Cluster::build(5, &[1, 2, 3, 4], &[], |config| {
        config.anti_entropy_interval_ms = 600_000;
        config.partitions = 64;
    });
    let config = c.configs[0].clone();
    let set = |nodes: &[usize]| -> BTreeSet<NodeId> { nodes.iter().map(|&n| id(n)).collect() };
    let joined = table_of(&config, &set(&[1, 2, 3, 4, 5]), &BTreeSet::new());
    let last = table_of(&config, &set(&[1, 2, 3, 4, 5]), &set(&[3]));
    let left = table_of(&config, &set(&[1, 2, 3, 4]), &set(&[3]));
    // A partition node 5 takes in node 3's place in the final table, and `x` in the table
    // without node 5.
    let (key, x) = (0..1_000)
        .find_map(|i| {
            let key = format!("x{i}");
            let p = last.partition_of(key.as_bytes());
            let fits = last.replicas(p).contains(&id(5))
                && joined.replicas(p).contains(&id(3))
                && !joined.replicas(p).contains(&id(5));
            let x = left
                .replicas(p)
                .iter()
                .find(|n| !joined.replicas(p).contains(n))
                .map(|n| n.get() as usize);
            fits.then(|| (key, x.expect("some node takes node 3's place")))
        })
        .expect("node 5 takes node 3's place in some partition");
    let w = c.put(3, &key, "acked", QUORUM, VersionVector::default());
    assert!(written(&w), "{w:?}");
    c.start(5);
    run_until(&mut c, 10_000, |c| {
        c.node(5).info().join == Some("draining")
    });
    // Node 3's hand-off is delayed until node 5 has joined (but to node 5, which with the
    // leave under way is streamed by every base replica, node 3 among them).
    c.hold = Some(Box::new(|from, to, m| {
        from == id(3) && to != id(5) && matches!(m, Message::HandOff { .. })
    }));
    assert_eq!(c.call(3, Request::Leave), Response::Leaving);
    run_until(&mut c, 20_000, |c| c.node(5).info().join == Some("joined"));
    assert_eq!(c.node(3).info().leave, Some("handing-off"));
    assert!(
        c.held.iter().any(|(_, to, _)| *to == id(x)),
        "node 3 hands {key}'s partition to node {x}"
    );
    // From now on, count node `x`'s answers that skip keys.
    let skips = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let counted = skips.clone();
    c.hold = Some(Box::new(move |from, _, m| {
        if from == id(x) && matches!(m, Message::HandedOff { skipped, .. } if !skipped.is_empty()) {
            counted.set(counted.get() + 1);
        }
        false
    }));
    let held = std::mem::take(&mut c.held);
    c.net.extend(held);
    c.run_for(20_000);
    assert_eq!(
        c.node(3).info().leave,
        Some("left"),
        "node 3's leave after 20 s; node {x} skipped keys of its hand-off {} times",
        skips.get()
    );
}

/// Regression (review17): a member granted a move slot to whoever asked (on_permit checked
/// only that the sender had not left), durably, and dropped it only on the asker's word.
/// Four requests from ids no member has ever seen (a misconfigured process, or one of
/// another cluster) filled node 1's four slots: its questions to them went unanswered,
/// REMOVENODE refuses an unknown id, and the grants were on its disk, so a minute later
/// (and after any restart) node 1 still refused every LEAVE as BUSY and every joiner a
/// slot. A slot now goes only to a member the node has heard of.
#[test]
fn review17_slots_asked_by_nodes_no_member_knows_are_not_held_for_ever() {
    let mut c: Cluster<Vv> = Cluster::new(3, 3, &[]);
    for stranger in 9..=12 {
        let round = super::machine::PermitRound {
            generation: 1,
            number: 1,
        };
        let ask = Message::Permit {
            round,
            kind: MoveKind::Join,
        };
        c.net.push_back((id(stranger), id(1), ask));
    }
    c.settle();
    c.run_for(60_000);
    let leave = c.call(1, Request::Leave);
    assert_eq!(
        leave,
        Response::Leaving,
        "node 1 holds its slots for nodes no member knows"
    );
}

/// Runs the cluster until `nodes` all say every move they know of has ended
/// ([`Leaderless::moves_ended`]), for at most `ms`; whether they did.
fn until_moves_ended<M: Mode>(c: &mut Cluster<M>, nodes: &[usize], ms: u64) -> bool {
    for _ in 0..ms / 100 {
        if nodes.iter().all(|&n| c.node(n).moves_ended()) {
            return true;
        }
        c.run_for(100);
    }
    nodes.iter().all(|&n| c.node(n).moves_ended())
}

/// Issue 19 (live21, found by the simulation's wait for every move to end, seed 1 of five
/// joiners and a leave): a mover that recorded its move done, and crashed before every
/// member had noted it done, took its move as finished on its restart without telling the
/// members again, so a member that had not heard kept the move switched, under way, for
/// ever (holding one of its four move slots, and writing to both tables). Node 4's telling
/// node 2 that its join is done is lost until node 4 has crashed; restarted, it tells node 2
/// again, and every move ends everywhere.
#[test]
fn a_mover_that_crashes_after_recording_its_move_done_tells_the_members_again() {
    let (mut c, _) = three_holding_forty_keys(|_| {});
    c.dropped = |from, to, message| {
        from == id(4)
            && to == id(2)
            && matches!(
                message,
                Message::Move {
                    phase: MovePhase::Done,
                    ..
                }
            )
    };
    c.start(4);
    let done = Record::Move {
        id: id(4),
        kind: MoveKind::Join,
        phase: MovePhase::Done,
    };
    run_until(&mut c, 20_000, |c| c.disks[3].contains(&done));
    c.run_for(1_000);
    assert_eq!(c.node(2).info().moves_under_way, 1, "node 2 never heard");
    c.crash(4);
    c.dropped = |_, _, _| false;
    c.start(4);
    assert!(
        until_moves_ended(&mut c, &[1, 2, 3, 4], 10_000),
        "node 2: {:?}; node 4: {:?}",
        c.node(2).info(),
        c.node(4).info()
    );
    assert_eq!(c.node(4).info().join, Some("joined"));
    assert_eq!(c.node(2).table(), c.node(4).table());
}

/// Regression (review19): a second ask that arrived while the first stream to the same
/// receiver was still under way (a batch not yet acknowledged) was answered from the
/// partitions that stream had sent already (`on_stream_to` skipped them): a key written
/// since was not streamed, and the receiver took the answer as its second pull's. A new
/// ask now streams what the source holds then. The test plays node 5: it asks
/// node 1 for partition `p`, leaves the batch unacknowledged, a key of `p` is written at
/// QUORUM (node 1 holds it), then it asks again under a new ask (its second pull's).
#[test]
fn review19_a_later_pull_while_the_first_stream_is_under_way_is_streamed_anew() {
    let (mut c, _, table, p) = node_5_asking_for_the_first_keys_partition();
    assert!(
        c.captured
            .iter()
            .any(|(_, m)| matches!(m, Message::HandOff { partition, .. } if *partition == p)),
        "node 1 streams partition {p}, its batch unacknowledged"
    );
    c.captured.clear();
    let (fresh, (got, answered)) = a_fresh_key_then_a_second_ask(&mut c, &table, p, ask(2));
    assert_eq!(answered, [(ask(2), vec![p])]);
    assert!(
        got.contains(fresh.as_bytes()),
        "the key written since the first ask streamed for the second: {:?}",
        got.iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect::<Vec<_>>()
    );
}

/// review19: a removal (of node 5, down for good) whose streams begin while a leave
/// (node 4's) is under way: the removal's receivers pull from every replica of node 5's
/// partitions in the tables a write meets, the leaver among them. With `asks_held`, the
/// leaver's hand-off ends, it leaves and its process stops (as the README says to) before
/// it was asked to stream to a receiver. Whether node 5's removal ended within 30 s, and
/// the asks of a stream sent to node 4 after it stopped.
fn a_removal_through_a_leave(asks_held: bool) -> (bool, usize) {
    let mut c: Cluster<Vv> = Cluster::build(5, &[1, 2, 3, 4, 5], &[], |config| {
        config.anti_entropy_interval_ms = 600_000;
    });
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    put_all(&mut c, &keys, "v");
    kill_for_good(&mut c, 5);
    assert_eq!(c.call(1, Request::Remove(id(5))), Response::Removing);
    // Node 4's hand-off held back until the removal's streams begin.
    c.hold = Some(Box::new(move |from, to, m| {
        (from == id(4) && matches!(m, Message::HandOff { .. }))
            || (asks_held && to == id(4) && matches!(m, Message::StreamTo { .. }))
    }));
    assert_eq!(c.call(4, Request::Leave), Response::Leaving);
    run_until(&mut c, 20_000, |c| {
        c.stream_log
            .iter()
            .any(|(_, to, m)| *to == id(4) && matches!(m, Message::StreamTo { .. }))
    });
    assert_eq!(c.node(4).info().leave, Some("handing-off"));
    // The leave goes on (its hand-off delivered).
    c.hold = Some(Box::new(move |_, to, m| {
        asks_held && to == id(4) && matches!(m, Message::StreamTo { .. })
    }));
    let held: Vec<_> = std::mem::take(&mut c.held)
        .into_iter()
        .filter(|(_, _, m)| matches!(m, Message::HandOff { .. }))
        .collect();
    c.net.extend(held);
    run_until(&mut c, 20_000, |c| c.node(4).info().leave == Some("left"));
    // Left: its process is stopped.
    c.crash(4);
    c.hold = None;
    let asked_before = c.stream_log.len();
    let removed = until_removed(&mut c, 1, 5, 30_000);
    let asks_of_4 = c.stream_log[asked_before..]
        .iter()
        .filter(|(_, to, m)| *to == id(4) && matches!(m, Message::StreamTo { .. }))
        .count();
    (removed, asks_of_4)
}

/// Regression (review19): see [`a_removal_through_a_leave`]; the pull from the leaver
/// waited for it for ever (`step_pulls` counted as gone only members being removed or held
/// dead past the opt-in `move_dead_wait_ms`, and a member that left cannot be removed), so
/// node 5's removal never ended. A receiver now asks the leaver's part of its pull of the
/// other replicas of those partitions once the leave is done.
#[test]
fn review19_a_removal_through_a_leave_ends_once_the_leaver_has_left() {
    let (removed, asks_of_4) = a_removal_through_a_leave(true);
    assert!(
        removed,
        "node 5's removal after 30 s; {asks_of_4} asks of a stream sent to node 4 (left) since"
    );
}

/// The control of [`review19_a_removal_through_a_leave_ends_once_the_leaver_has_left`]:
/// the leaver is asked, and streams, before it leaves; the removal ends.
#[test]
fn a_removal_through_a_leave_ends_when_the_leaver_streamed_before_it_left() {
    let (removed, asks_of_4) = a_removal_through_a_leave(false);
    assert!(removed, "{asks_of_4} asks of node 4 since it left");
}

/// Regression (pulls22): a node took a [`Message::Pull`] for any id from anyone, keeping a
/// pull (and asking its sources to stream) for each, so a confused peer's ids grew what it
/// keeps without bound. Node 1 is sent pulls of 40 ids no member is being removed under,
/// from a member and from a node no member knows: it takes none (no source is asked to
/// stream), counts each refusal and says why.
#[test]
fn pulls_of_removals_a_node_does_not_hold_are_refused() {
    let (mut c, _) = three_holding_forty_keys(|_| {});
    let asks_before = c.stream_log.len();
    for i in 0..40 {
        let from = if i % 2 == 0 { id(2) } else { id(9) };
        let message = Message::Pull {
            id: id(100 + i),
            sources: vec![(id(3), vec![0, 1]), (id(2), vec![2])],
        };
        c.net.push_back((from, id(1), message));
    }
    c.settle();
    c.run_for(3_000);
    let asks: Vec<_> = c.stream_log[asks_before..]
        .iter()
        .filter(|(from, _, m)| *from == id(1) && matches!(m, Message::StreamTo { .. }))
        .collect();
    assert!(
        asks.is_empty(),
        "node 1 took pulls it holds no removal of: {asks:?}"
    );
    assert_eq!(c.node(1).stats().pulls_refused, 40);
    let said = c.notices[0]
        .iter()
        .any(|n| matches!(n, Notice::Waiting(why) if why.contains("holds no removal of node")));
    assert!(said, "node 1 said why: {:?}", c.notices[0]);
}

/// Regression (pulls22, from seed 371 of the `broken` variant, "the write of 50 was
/// refused ..., yet its value was read or kept"): a write forwarded to a replica
/// ([`Message::Forward`]) and refused there was told to its client as refused, though the
/// network may deliver the forward twice and the replica coordinates the second copy once
/// what refused the first has passed. Here node `r`, the key's first replica, has its one
/// operation slot held by a write of its own (its messages held back), refuses the first
/// copy, and carries out the second once its slot is free: the value is read back at
/// QUORUM, so the client must not have been told the write was refused.
#[test]
fn a_forwarded_write_refused_by_its_replica_is_an_unknown_outcome() {
    let mut c: Cluster<Vv> = Cluster::build(4, &[1, 2, 3, 4], &[], |config| {
        config.anti_entropy_interval_ms = 600_000;
        config.ops_in_flight_max = 1;
    });
    let table = c.node(1).table().clone();
    let replicas = |key: &str| table.replicas(table.partition_of(key.as_bytes())).to_vec();
    let key = (0..1_000)
        .map(|i| format!("f{i}"))
        .find(|k| !replicas(k).contains(&id(1)))
        .expect("a key node 1 does not replicate");
    let r = replicas(&key)[0];
    let busy = (0..1_000)
        .map(|i| format!("b{i}"))
        .find(|k| replicas(k).contains(&r))
        .expect("a key r replicates");
    // r's write of `busy` stays in flight: its messages to the other replicas are held.
    c.hold = Some(Box::new(move |from, _, m| {
        (from == r && matches!(m, Message::Store(_))) || matches!(m, Message::Forward { .. })
    }));
    let write = |key: &str| Request::Put {
        key: key.as_bytes().to_vec(),
        value: Some(b"v".to_vec()),
        level: QUORUM,
        context: VersionVector::default(),
    };
    let r_index = r.get() as usize;
    c.next_id += 1;
    let node = c.nodes[r_index - 1].as_mut().expect("running");
    node.handle(
        c.now,
        Input::Request {
            id: RequestId(c.next_id),
            request: write(&busy),
        },
    );
    c.drain(r_index);
    c.settle();
    // The client's write at node 1, forwarded to r; the forward is held, then delivered twice.
    c.next_id += 1;
    let client = RequestId(c.next_id);
    let node = c.nodes[0].as_mut().expect("running");
    node.handle(
        c.now,
        Input::Request {
            id: client,
            request: write(&key),
        },
    );
    c.drain(1);
    c.settle();
    let forwards: Vec<_> = c
        .held
        .iter()
        .filter(|(_, _, m)| matches!(m, Message::Forward { .. }))
        .cloned()
        .collect();
    assert_eq!(forwards.len(), 1, "node 1 forwarded the write once");
    c.held
        .retain(|(_, _, m)| !matches!(m, Message::Forward { .. }));
    c.hold = Some(Box::new(move |from, _, m| {
        from == r && matches!(m, Message::Store(_))
    }));
    c.net.push_back(forwards[0].clone());
    c.settle();
    let told = c
        .replies
        .remove(&client)
        .expect("node 1 answered its client");
    // r's slot is free again, and the network delivers the forward's second copy.
    c.hold = None;
    c.net.extend(std::mem::take(&mut c.held));
    c.settle();
    c.net.push_back(forwards[0].clone());
    c.settle();
    c.run_for(100);
    let read = c.get(2, &key, QUORUM);
    assert_eq!(values(&read), ["v"], "the second copy was carried out");
    assert!(
        matches!(&told, Response::Failed(Failure::Unknown(why)) if why.contains("refused it")),
        "node 1's client was told {told:?} of a write that was carried out"
    );
}

/// Regression (pulls22): a node told a removed member that it was removed once for every
/// message it got from it, so a removed node still sending (its membership probing, its
/// clients' writes) was answered message for message. Now at most once a retry interval:
/// 50 messages at once from removed node 4 get one answer, and one more once the interval
/// has passed.
#[test]
fn a_removed_member_is_told_so_at_most_once_a_retry_interval() {
    let mut c: Cluster<Vv> = Cluster::build(4, &[1, 2, 3, 4], &[], |config| {
        config.anti_entropy_interval_ms = 600_000;
    });
    kill_for_good(&mut c, 4);
    assert_eq!(c.call(1, Request::Remove(id(4))), Response::Removing);
    assert!(until_removed(&mut c, 1, 4, 30_000), "node 4 removed");
    c.capture = Some(id(4));
    let told = |c: &Cluster<Vv>| {
        c.captured
            .iter()
            .filter(|(from, m)| *from == id(1) && matches!(m, Message::Moves { .. }))
            .count()
    };
    let digest = Message::Digest {
        partition: 0,
        digest: 0,
        answer: false,
    };
    for _ in 0..50 {
        c.net.push_back((id(4), id(1), digest.clone()));
    }
    c.settle();
    assert_eq!(
        told(&c),
        1,
        "node 1 told removed node 4 once for 50 messages"
    );
    let retry = c.configs[0].leave_retry_ms;
    c.run_for(retry + 10);
    c.net.push_back((id(4), id(1), digest));
    c.settle();
    assert_eq!(told(&c), 2, "and again once the retry interval passed");
}

// ----- review21's findings -----

/// Whether node `n`'s replica of `key` holds `value`.
fn r21_holds(c: &Cluster<Vv>, n: usize, key: &str, value: &str) -> bool {
    c.node(n)
        .replica_data()
        .find(|(k, _)| k.as_slice() == key.as_bytes())
        .is_some_and(|(_, s)| Vv::read(s).values.contains(&value.as_bytes().to_vec()))
}

/// The leaver of [`r21_leave_through_a_removal`] (read by its `dropped` filters).
static R21_LEAVER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Of the partitions `leaver` and `gone` both replicate in the table of `voters` (with
/// `partitions` partitions), the replicas of the final table (both out) that hold a write
/// acknowledged by every base replica but `leaver` once the removal's receivers (worked out
/// with the leave pending: the table without `gone` alone) have pulled and `leaver`, which
/// missed it and handed off before its own pull, has left: (partition, final replicas,
/// holders).
fn r21_holders(
    voters: &[usize],
    partitions: u32,
    leaver: usize,
    gone: usize,
) -> Vec<(u32, Vec<NodeId>, Vec<NodeId>)> {
    let mut config = Config::new(id(1), voters.iter().map(|&v| id(v)));
    config.partitions = partitions;
    let known: BTreeSet<NodeId> = voters.iter().map(|&v| id(v)).collect();
    let base = table_of(&config, &known, &BTreeSet::new());
    let after = table_of(&config, &known, &BTreeSet::from([id(gone)]));
    let last = table_of(&config, &known, &BTreeSet::from([id(gone), id(leaver)]));
    let mut found = Vec::new();
    for p in 0..partitions {
        let partition = PartitionId(p);
        let b = base.replicas(partition);
        if !(b.contains(&id(gone)) && b.contains(&id(leaver))) {
            continue;
        }
        let had: BTreeSet<NodeId> = b
            .iter()
            .chain(after.replicas(partition))
            .copied()
            .filter(|&n| n != id(gone) && n != id(leaver))
            .collect();
        let last_replicas = last.replicas(partition).to_vec();
        let holders = last_replicas
            .iter()
            .copied()
            .filter(|n| had.contains(n))
            .collect();
        found.push((p, last_replicas, holders));
    }
    found
}

/// Acknowledged keys short of a replica of the final table: key, replicas, holders.
type R21Short = Vec<(String, Vec<NodeId>, Vec<NodeId>)>;

/// review21: a removal of a member down for good (`gone`) and a leave (`leaver`) under way
/// at once. The removal's receivers are the replicas of the table its driver (node 1)
/// reads with when its pulls begin (machine.rs removal_pulls, `table_after`): the leave is
/// still Pending there, so they are the leaver and the replicas the table without `gone`
/// alone gives its place. The leaver hands its keys off (worked out with `gone` in the
/// table) before its own pull is done, then leaves, and the driver drops it from the
/// receivers (machine.rs step_removal, `is_gone_member`, since 31c0496): what it was to pull
/// (a write acknowledged by `gone` and a third replica while the leaver missed it) reaches
/// neither the replica that takes the leaver's place nor the one the final table gives
/// `gone`'s place, which nobody streams. Returns the acknowledged keys short of a replica
/// of the final table.
fn r21_leave_through_a_removal() -> (Cluster<Vv>, R21Short) {
    use std::sync::atomic::Ordering;
    // The configuration whose gap is worst: a partition whose final replicas hold such a
    // write on fewer than a quorum if any, else on fewer than all.
    let mut chosen = None;
    'search: for below in [true, false] {
        for n in [6usize, 7, 8] {
            let voters: Vec<usize> = (1..=n).collect();
            for partitions in [8u32, 16, 32] {
                for leaver in 2..=n {
                    for gone in 2..=n {
                        if gone == leaver {
                            continue;
                        }
                        let gaps: Vec<u32> = r21_holders(&voters, partitions, leaver, gone)
                            .into_iter()
                            .filter(|(_, r, h)| {
                                if below {
                                    h.len() * 2 <= r.len()
                                } else {
                                    h.len() < r.len()
                                }
                            })
                            .map(|(p, ..)| p)
                            .collect();
                        if !gaps.is_empty() {
                            chosen = Some((voters, partitions, leaver, gone, gaps, below));
                            break 'search;
                        }
                    }
                }
            }
        }
    }
    let (voters, partitions, leaver, gone, gaps, below) =
        chosen.expect("some configuration shows the gap");
    R21_LEAVER.store(leaver as u64, Ordering::SeqCst);
    let mut c: Cluster<Vv> = Cluster::build(voters.len(), &voters, &[], |config| {
        config.anti_entropy_interval_ms = 600_000;
        config.partitions = partitions;
    });
    // The leaver misses the writes (its membership still hears from it: no hint is held).
    c.dropped = |_, to, message| {
        to.get() == R21_LEAVER.load(Ordering::SeqCst)
            && matches!(message, Message::Store(_) | Message::Forward { .. })
    };
    let table = c.node(1).table().clone();
    let mut keys = Vec::new();
    for i in 0..400 {
        let key = format!("k{i}");
        let p = table.partition_of(key.as_bytes());
        if gaps.contains(&p.0) && written(&c.put(1, &key, "v", QUORUM, VersionVector::default())) {
            keys.push(key);
        }
        if keys.len() >= 8 {
            break;
        }
    }
    assert!(!keys.is_empty(), "no write acknowledged");
    c.dropped = |_, _, _| false;
    kill_for_good(&mut c, gone);
    assert_eq!(c.call(1, Request::Remove(id(gone))), Response::Removing);
    // The leaver's pulls are slow: its asks are lost until it has left.
    c.dropped = |from, _, message| {
        from.get() == R21_LEAVER.load(Ordering::SeqCst)
            && matches!(message, Message::StreamTo { .. })
    };
    assert_eq!(c.call(leaver, Request::Leave), Response::Leaving);
    assert!(
        until_left(&mut c, leaver, 30_000),
        "the leave: {:?}",
        c.node(leaver).info().leave
    );
    c.dropped = |_, _, _| false;
    assert!(
        until_removed(&mut c, 1, gone, 30_000),
        "the removal: {:?}",
        c.node(1).info().removals
    );
    c.run_for(2_000);
    let last = c.node(1).table().clone();
    let mut short = Vec::new();
    for key in &keys {
        let replicas = last.replicas(last.partition_of(key.as_bytes())).to_vec();
        let on: Vec<NodeId> = replicas
            .iter()
            .copied()
            .filter(|r| r21_holds(&c, r.get() as usize, key, "v"))
            .collect();
        if on.len() < replicas.len() {
            short.push((key.clone(), replicas, on));
        }
    }
    println!(
        "voters {voters:?}, {partitions} partitions, leaver {leaver}, removed {gone}, partitions {gaps:?} \
         (below a quorum: {below}); keys {keys:?}; short {short:?}"
    );
    (c, short)
}

#[test]
#[ignore = "review21's finding: a removal's receivers are fixed from the driver's read table when its pulls begin \
            (machine.rs removal_pulls); with a receiver that leaves before its pull is done, what it was to \
            pull reaches neither its replacement nor the final table's replica in the removed member's \
            place. 31c0496 dropped such a receiver and lost acknowledged QUORUM writes; the driver now \
            waits for it again (Pulling in step_removal), so the removal stays streaming for ever instead \
            (liveness): the fix is receivers worked out again from the tables in force"]
fn review21_a_leave_through_a_removal_keeps_every_acknowledged_write_on_a_quorum() {
    let (mut c, short) = r21_leave_through_a_removal();
    // A QUORUM read by a quorum of the final replicas that hold no copy (the holders cut
    // off) misses the write.
    let mut missed = Vec::new();
    for (key, replicas, holders) in &short {
        if holders.len() * 2 > replicas.len() {
            continue;
        }
        for h in holders {
            c.isolate(h.get() as usize);
        }
        let at = replicas
            .iter()
            .find(|r| !holders.contains(r))
            .expect("a replica short of it");
        let read = values(&c.get(at.get() as usize, key, QUORUM));
        c.heal();
        if read != ["v"] {
            missed.push((key.clone(), *at, read));
        }
    }
    let below_quorum: Vec<_> = short
        .iter()
        .filter(|(_, replicas, holders)| holders.len() * 2 <= replicas.len())
        .collect();
    assert!(
        below_quorum.is_empty() && missed.is_empty(),
        "acknowledged QUORUM writes held by fewer than a quorum of the final table's replicas \
         (key, replicas, holders): {below_quorum:?}; QUORUM reads that missed them, the \
         holders cut off (key, at, read): {missed:?}"
    );
}

/// review21: a node's [`Message::Move`] is taken from any sender, for any id (machine.rs
/// on_move, note_move): a node no member knows (a process of another cluster given this
/// one's addresses, or one refused admission) that sends it makes the members place
/// partitions on an id nobody runs, and tells a member that it is removed, which ends it
/// for good. A slot is granted only to a member a node knows (machine.rs on_permit), and a
/// pull is taken only from one (on_pull); a move's phase should be too.
#[test]
fn review21_a_move_from_a_node_no_member_knows_changes_nothing() {
    let mut c: Cluster<Vv> = Cluster::new(3, 3, &[]);
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    put_all(&mut c, &keys, "v");
    let table = c.node(1).table().clone();
    let stranger = id(9);
    let forged = [
        (
            id(1),
            Message::Move {
                id: id(8),
                kind: MoveKind::Join,
                phase: MovePhase::Done,
            },
        ),
        (
            id(2),
            Message::Move {
                id: id(2),
                kind: MoveKind::Remove,
                phase: MovePhase::Pending,
            },
        ),
    ];
    for (to, message) in forged {
        c.net.push_back((stranger, to, message));
    }
    c.settle();
    c.run_for(1_000);
    assert_eq!(
        c.node(1).table().load(id(8)),
        0,
        "node 1 placed partitions on node 8, which no member runs, on a stranger's word"
    );
    assert!(
        !c.node(2).is_gone() && c.node(2).serving(),
        "node 2 ended on a stranger's word: {:?}",
        c.notices[1]
    );
    assert_eq!(c.node(1).table(), &table);
    for key in &keys {
        assert_eq!(values(&c.get(1, key, QUORUM)), ["v"], "{key}");
    }
}

/// review21: a [`Message::StreamTo`] is taken from any sender (machine.rs on_stream_to): a
/// node no member knows that asks for every partition is streamed every key, and since it
/// never acknowledges a batch, the batches are resent to it for as long as it is not held
/// dead (which membership never does for a node it does not know), one stream kept for
/// each id that asks.
#[test]
#[ignore = "review21's finding: Message::StreamTo is taken from any sender (machine.rs on_stream_to): a stranger \
            is streamed keys, resent for ever, a stream kept for each id that asks. A guard on known members \
            was tried and not kept: three stream tests ask as a node the cluster does not know (id 5) and \
            must be moved to a known joiner first"]
fn review21_a_stream_asked_by_a_node_no_member_knows_is_not_sent() {
    let mut c: Cluster<Vv> = Cluster::new(3, 3, &[]);
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    put_all(&mut c, &keys, "v");
    let ask = AskId {
        generation: 1,
        number: 1,
    };
    c.net.push_back((
        id(9),
        id(1),
        Message::StreamTo {
            ask,
            partitions: (0..8).collect(),
        },
    ));
    c.settle();
    c.run_for(5_000);
    let sent = c.hand_off_sent.get(&(id(1), id(9))).copied().unwrap_or(0);
    assert_eq!(
        sent, 0,
        "node 1 streamed {sent} bytes of its keys to node 9, which no member knows"
    );
}

/// review21: a member that drives a removal may LEAVE while the removal is under way
/// (machine.rs start_leave checks its own move only): once its leave is done its operator
/// stops it (README: "leave:left once done (stop the process then)"), and a restart is
/// refused, so nobody drives the removal any more: every member holds it under way for
/// ever (writes of the removed member's partitions meet both tables, ALL fails there), until
/// an operator who knows to do so sends REMOVENODE again elsewhere. Either the leave is
/// refused while the node drives a removal, or the removal ends without it.
#[test]
fn review21_a_removal_whose_driver_leaves_ends() {
    let mut c: Cluster<Vv> = Cluster::build(5, &[1, 2, 3, 4, 5], &[], |config| {
        config.anti_entropy_interval_ms = 600_000;
    });
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    put_all(&mut c, &keys, "v");
    kill_for_good(&mut c, 5);
    // The removal's receivers are slow to say they were streamed.
    c.dropped = |_, _, message| matches!(message, Message::Pulled { .. });
    assert_eq!(c.call(4, Request::Remove(id(5))), Response::Removing);
    c.run_for(3_000);
    assert_eq!(c.node(4).info().removals, [(id(5), "streaming")]);
    if c.call(4, Request::Leave) == Response::Leaving {
        assert!(
            until_left(&mut c, 4, 30_000),
            "node 4's leave: {:?}",
            c.node(4).info().leave
        );
        // Its operator stops it once it has left.
        c.crash(4);
    }
    c.dropped = |_, _, _| false;
    for _ in 0..600 {
        if [1, 2, 3].iter().all(|&n| c.node(n).moves_under_way() == 0) {
            break;
        }
        c.run_for(100);
    }
    for n in [1, 2, 3] {
        assert_eq!(
            c.node(n).moves_under_way(),
            0,
            "node {n} still holds node 5's removal under way: {:?}",
            c.node(n).info().removed
        );
    }
}

/// review21: a join (node 5) and the removal of node 4, down for good, under way at once,
/// the removal's receivers slow to ask their sources until the join is done (their asks
/// lost). The removal's pulls were worked out once, as its drain ended, with the join
/// pending (machine.rs removal_pulls); the join, done meanwhile, took partitions from a
/// receiver, which then skips every key its sources stream of them (it replicates them in
/// none of its tables: machine.rs merge_states), and they resend them for ever: that
/// receiver's pull, and so the removal, never ends once faults stop. (Found first in a
/// random interleaving of two joins, a leave and a removal with no fault for its last
/// minute.)
#[test]
#[ignore = "review21's finding: a removal's pulls are worked out once (machine.rs:4272 \
            removal_pulls); a join done meanwhile takes partitions from a receiver, which skips \
            their keys for ever (machine.rs:4685 merge_states), and the removal never ends"]
fn review21_a_removal_ends_though_a_join_done_meanwhile_took_a_receivers_partitions() {
    let mut c: Cluster<Vv> = Cluster::build(5, &[1, 2, 3, 4], &[], |config| {
        config.anti_entropy_interval_ms = 600_000;
    });
    let keys: Vec<String> = (0..80).map(|i| format!("k{i}")).collect();
    put_all(&mut c, &keys, "v");
    kill_for_good(&mut c, 4);
    c.start(5);
    c.run_for(3_000);
    assert_eq!(c.node(5).info().join, Some("asking-for-slot"));
    // Every ask but the joiner's is lost until the join is done.
    c.dropped = |from, _, message| from != id(5) && matches!(message, Message::StreamTo { .. });
    assert_eq!(c.call(1, Request::Remove(id(4))), Response::Removing);
    for _ in 0..300 {
        if c.node(5).info().join == Some("joined") {
            break;
        }
        c.run_for(100);
    }
    assert_eq!(c.node(5).info().join, Some("joined"));
    c.dropped = |_, _, _| false;
    assert!(
        until_removed(&mut c, 1, 4, 60_000),
        "node 4's removal never ends: {:?}",
        c.node(1).info().removals
    );
}
