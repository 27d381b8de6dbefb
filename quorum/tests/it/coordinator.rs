//! The Dynamo-style coordinator, driven step by step: consistency levels, failures, hints,
//! read repair, retries and duplicates.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use synod_clocks::WallTime;
use synod_node::{Effect, Input, Protocol, Time};
use synod_quorum::{
    Consistency, Coordinator, CoordinatorConfig, Incarnation, LastWriteWins, NodeId, Placement,
    ReadRepair, RequestId, ResolveError, Resolver, StoreError, StoreMessage, StoreRequest,
    StoreResponse, WriteReport,
};

/// The wall-clock time of every test's start.
pub const START: WallTime = WallTime::from_secs(1_000);

/// The time between two wake-ups in the tests that let time pass: a tenth of the
/// coordinator's default timeout (1 s).
pub const TICK: Duration = Duration::from_millis(100);

/// The incarnation of every node's first start in these tests.
pub const FIRST: Incarnation = Incarnation::new(1);

pub fn n(id: u64) -> NodeId {
    NodeId::new(id)
}

/// A message on the test network: (from, to, message).
pub type Envelope<S, K = &'static str> = (NodeId, NodeId, StoreMessage<K, S>);

/// What a test sees a coordinator finish: the answer to a read or a write, under the
/// test's name for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEffect<S> {
    /// A write finished.
    WriteDone {
        request: RequestId,
        result: Result<WriteReport, StoreError>,
    },
    /// A read finished.
    ReadDone {
        request: RequestId,
        result: Result<S, StoreError>,
    },
}

/// Nodes of one store, with keys of type `K`, and a network the test controls.
///
/// Every node's `now` is its wall clock as nanoseconds since the Unix epoch (the
/// coordinator's default wall clock), so a test sets the time as a wall-clock reading.
pub struct Cluster<R: Resolver, K = &'static str> {
    pub nodes: BTreeMap<NodeId, Coordinator<K, R>>,
    /// Messages sent and not yet delivered: (from, to, message).
    pub in_flight: Vec<Envelope<R::State, K>>,
    pub done: Vec<(NodeId, StoreEffect<R::State>)>,
    /// Nodes whose incoming messages are dropped.
    pub cut: BTreeSet<NodeId>,
    /// The true time, which every node's clock reads unless it runs ahead.
    pub now: WallTime,
    /// Nodes whose clocks run ahead of the true time, and by how much.
    pub ahead: BTreeMap<NodeId, Duration>,
    /// The test's name for each request handed to a node.
    requests: BTreeMap<synod_node::RequestId, RequestId>,
    requests_started: u64,
}

impl<R: Resolver + Clone, K: Ord + Clone + std::fmt::Debug> Cluster<R, K> {
    pub fn new(ids: &[u64], resolver: R, repair: ReadRepair) -> Self {
        Self::with_config(ids, resolver, |config| config.read_repair(repair))
    }

    /// A cluster whose nodes' configurations are `configure`d from the default.
    pub fn with_config(
        ids: &[u64],
        resolver: R,
        configure: impl Fn(CoordinatorConfig) -> CoordinatorConfig,
    ) -> Self {
        let nodes = ids
            .iter()
            .map(|&id| {
                let config = configure(CoordinatorConfig::new(n(id), FIRST));
                (n(id), Coordinator::new(config, resolver.clone()))
            })
            .collect();
        Self {
            nodes,
            in_flight: Vec::new(),
            done: Vec::new(),
            cut: BTreeSet::new(),
            now: START,
            ahead: BTreeMap::new(),
            requests: BTreeMap::new(),
            requests_started: 0,
        }
    }

    pub fn node(&mut self, id: u64) -> &mut Coordinator<K, R> {
        self.nodes.get_mut(&n(id)).expect("a node of the cluster")
    }

    /// What node `id`'s clock reads.
    pub fn clock(&self, id: u64) -> WallTime {
        self.now
            .saturating_add(self.ahead.get(&n(id)).copied().unwrap_or_default())
    }

    /// Hands node `id` a request, at its clock; returns the test's error if the node
    /// refused it at once (having applied and sent nothing).
    fn request(
        &mut self,
        id: u64,
        test_id: RequestId,
        request: StoreRequest<K, R::Write>,
    ) -> Result<(), StoreError> {
        self.requests_started += 1;
        let handle = synod_node::RequestId(self.requests_started);
        self.requests.insert(handle, test_id);
        let now = Time::from_nanos(self.clock(id).as_nanos());
        self.node(id).handle(
            now,
            Input::Request {
                id: handle,
                request,
            },
        );
        let before = self.done.len();
        self.collect();
        // An error that comes at once, before anything was sent, is the start's refusal.
        if let Some((_, finished)) = self.done.get(before) {
            let error = match finished {
                StoreEffect::WriteDone {
                    result: Err(e),
                    request,
                } if *request == test_id => e,
                StoreEffect::ReadDone {
                    result: Err(e),
                    request,
                } if *request == test_id => e,
                _ => return Ok(()),
            };
            if matches!(
                error,
                StoreError::Unavailable { .. }
                    | StoreError::TooManyInFlight { .. }
                    | StoreError::Resolve(_)
                    | StoreError::TimestampTooFarAhead { .. }
            ) {
                let error = error.clone();
                self.done.remove(before);
                return Err(error);
            }
        }
        Ok(())
    }

    /// Starts a write through node `id`, at its clock.
    pub fn write(
        &mut self,
        id: u64,
        request: RequestId,
        key: K,
        write: R::Write,
        consistency: Consistency,
        placement: &Placement,
    ) -> Result<(), StoreError> {
        let placement = placement.clone();
        let write = StoreRequest::Write {
            request,
            key,
            write,
            consistency,
            placement,
        };
        self.request(id, request, write)
    }

    /// Starts a read through node `id`, at its clock.
    pub fn read(
        &mut self,
        id: u64,
        request: RequestId,
        key: K,
        consistency: Consistency,
        placement: &Placement,
    ) -> Result<(), StoreError> {
        let placement = placement.clone();
        let read = StoreRequest::Read {
            key,
            consistency,
            placement,
        };
        self.request(id, request, read)
    }

    /// Tells node `id` that `node` failed.
    pub fn node_failed(&mut self, id: u64, node: NodeId) {
        self.request(id, RequestId::new(u64::MAX), StoreRequest::NodeFailed(node))
            .expect("taken in");
    }

    /// Asks node `id` to hand its hints for `replica` off.
    pub fn hand_off_hints(&mut self, id: u64, replica: NodeId) {
        self.request(
            id,
            RequestId::new(u64::MAX),
            StoreRequest::HandOffHints(replica),
        )
        .expect("taken in");
    }

    /// Writes through node `id`, delivers everything, and returns the write's report;
    /// panics if the write failed.
    pub fn write_acked(
        &mut self,
        id: u64,
        request: RequestId,
        key: K,
        write: R::Write,
        consistency: Consistency,
        placement: &Placement,
    ) -> WriteReport {
        self.write(id, request, key, write, consistency, placement)
            .expect("the write starts");
        self.settle();
        match self.take_done() {
            StoreEffect::WriteDone {
                result: Ok(report), ..
            } => report,
            other => panic!("expected a successful write, got {other:?}"),
        }
    }

    /// Wakes node `id`, at its clock: what is due by then (timeouts, collection) is done.
    pub fn tick(&mut self, id: u64) {
        let now = Time::from_nanos(self.clock(id).as_nanos());
        self.node(id).handle(now, Input::Wake);
    }

    /// Hands node `id` a message from `from`, at its clock.
    pub fn handle(&mut self, id: u64, from: NodeId, message: StoreMessage<K, R::State>) {
        let now = Time::from_nanos(self.clock(id).as_nanos());
        self.node(id).handle(now, Input::Message { from, message });
    }

    /// Moves every node's effects into `in_flight` and `done`.
    pub fn collect(&mut self) {
        for (&id, node) in &mut self.nodes {
            while let Some(effect) = node.poll() {
                match effect {
                    Effect::Send { to, message } => self.in_flight.push((id, to, message)),
                    Effect::Reply {
                        id: handle,
                        response,
                    } => {
                        let request = self
                            .requests
                            .remove(&handle)
                            .expect("a request of the test");
                        let finished = match response {
                            StoreResponse::Written(result) => {
                                StoreEffect::WriteDone { request, result }
                            }
                            StoreResponse::Read(result) => {
                                StoreEffect::ReadDone { request, result }
                            }
                            StoreResponse::Done => continue,
                        };
                        self.done.push((id, finished));
                    }
                    Effect::WakeAt(_) => {}
                    Effect::Persist { write, .. } => match write {},
                    Effect::Apply(never) => match never {},
                }
            }
        }
    }
    /// Delivers everything, including what the deliveries send, until the network is quiet.
    pub fn settle(&mut self) {
        loop {
            self.collect();
            if self.in_flight.is_empty() {
                return;
            }
            for (from, to, message) in std::mem::take(&mut self.in_flight) {
                if !self.cut.contains(&to) {
                    self.handle(to.get(), from, message);
                }
            }
        }
    }

    /// The value of the one finished operation, a successful read; panics otherwise.
    pub fn take_read_ok(&mut self) -> R::State {
        match self.take_done() {
            StoreEffect::ReadDone {
                result: Ok(value), ..
            } => value,
            other => panic!("expected a successful read, got {other:?}"),
        }
    }

    /// The error of the one finished operation, a failed read; panics otherwise.
    pub fn take_read_err(&mut self) -> StoreError {
        match self.take_done() {
            StoreEffect::ReadDone {
                result: Err(err), ..
            } => err,
            other => panic!("expected a failed read, got {other:?}"),
        }
    }

    /// The outcome of the one finished operation; panics if there is not exactly one.
    pub fn take_done(&mut self) -> StoreEffect<R::State> {
        self.collect();
        assert_eq!(
            self.done.len(),
            1,
            "expected one finished operation: {:?}",
            self.done
        );
        self.done.pop().expect("one").1
    }
}

/// The last-write-wins resolver of these tests: wall-clock timestamps and string values.
pub type Lww = LastWriteWins<WallTime, &'static str>;
/// What a last-write-wins replica holds for a key.
pub type LwwState = <Lww as Resolver>::State;

fn lww() -> Lww {
    LastWriteWins::new()
}

/// A last-write-wins write of `value` stamped `at` ms after the epoch (long before [`START`]).
pub fn put(at: u64, value: &'static str) -> <Lww as Resolver>::Write {
    (stamp(at), Some(value))
}

/// A last-write-wins delete stamped `at` ms after the epoch (long before [`START`]).
pub fn delete(at: u64) -> <Lww as Resolver>::Write {
    (stamp(at), None)
}

/// The state of a replica whose newest write is `put(at, value)`.
pub fn holds(at: u64, value: &'static str) -> LwwState {
    Some(put(at, value))
}

/// `at` milliseconds after the epoch.
pub fn stamp(at: u64) -> WallTime {
    WallTime::from_nanos(at * 1_000_000)
}

fn write_ok(effect: StoreEffect<LwwState>) -> WriteReport {
    match effect {
        StoreEffect::WriteDone {
            result: Ok(report), ..
        } => report,
        other => panic!("expected a successful write, got {other:?}"),
    }
}

#[test]
fn levels_that_cannot_be_met_fail_at_once_and_loudly() {
    let mut c = Cluster::new(&[1, 2, 3], lww(), ReadRepair::Blocking);
    let placement = Placement::new([1, 2, 3].map(n))
        .unwrap()
        .with_down([n(2), n(3)]);
    let err = c
        .write(
            1,
            RequestId::new(1),
            "k",
            put(1, "v"),
            Consistency::Quorum,
            &placement,
        )
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::Unavailable {
            consistency: Consistency::Quorum,
            required: 2,
            alive: 1
        }
    );
    assert_eq!(
        err.to_string(),
        "cannot achieve consistency level QUORUM: it needs 2 replicas and only 1 are alive"
    );
    c.collect();
    assert!(
        c.in_flight.is_empty() && c.done.is_empty(),
        "nothing may be sent"
    );
    // ONE is still possible, on the coordinator's own replica.
    c.write(
        1,
        RequestId::new(2),
        "k",
        put(1, "v"),
        Consistency::One,
        &placement,
    )
    .unwrap();
    assert_eq!(write_ok(c.take_done()).acknowledged, [n(1)]);
    // ALL with one replica down is unavailable; a read too.
    let one_down = Placement::new([1, 2, 3].map(n)).unwrap().with_down([n(3)]);
    assert!(matches!(
        c.read(1, RequestId::new(3), "k", Consistency::All, &one_down),
        Err(StoreError::Unavailable {
            required: 3,
            alive: 2,
            ..
        })
    ));
}

#[test]
fn failures_during_an_operation_explain_why_the_level_is_lost() {
    let mut c = Cluster::new(&[1, 2, 3], lww(), ReadRepair::Blocking);
    let placement = Placement::new([1, 2, 3].map(n)).unwrap();
    c.write(
        1,
        RequestId::new(1),
        "k",
        put(1, "v"),
        Consistency::All,
        &placement,
    )
    .unwrap();
    c.node_failed(1, n(3));
    let StoreEffect::WriteDone {
        result: Err(err), ..
    } = c.take_done()
    else {
        panic!("expected a failed write");
    };
    assert!(matches!(err, StoreError::QuorumUnreachable { .. }));
    assert!(
        err.to_string()
            .contains("consistency level ALL failed: quorum can no longer be met: the configuration needs 3 of 3 voters, 1 granted, 1 rejected"),
        "{err}"
    );
}

#[test]
fn a_silent_replica_times_out() {
    let mut c = Cluster::new(&[1, 2, 3], lww(), ReadRepair::Blocking);
    let placement = Placement::new([1, 2, 3].map(n)).unwrap();
    c.read(1, RequestId::new(1), "k", Consistency::Quorum, &placement)
        .unwrap();
    c.collect();
    c.in_flight.clear(); // every request lost
    for _ in 0..10 {
        c.now = c.now.saturating_add(TICK);
        c.tick(1);
    }
    let err = c.take_read_err();
    assert_eq!(
        err,
        StoreError::TimedOut {
            consistency: Consistency::Quorum,
            answered: 1,
            required: 2
        }
    );
}

#[test]
fn hinted_writes_are_reported_never_counted_and_handed_off() {
    let mut c = Cluster::new(&[1, 2, 3, 4], lww(), ReadRepair::Blocking);
    let placement = Placement::new([1, 2, 3].map(n))
        .unwrap()
        .with_down([n(3)])
        .with_fallbacks([n(4)]);
    c.cut.insert(n(3));
    c.write(
        1,
        RequestId::new(1),
        "k",
        put(7, "v"),
        Consistency::Quorum,
        &placement,
    )
    .unwrap();
    c.collect();
    // Deliver only the hint (to n4) and its acknowledgement: not a quorum.
    let (hint, rest): (Vec<_>, Vec<_>) = c.in_flight.drain(..).partition(|(_, to, _)| *to == n(4));
    assert_eq!(hint.len(), 1);
    for (from, to, m) in hint {
        c.handle(to.get(), from, m);
    }
    c.collect();
    for (from, to, m) in std::mem::take(&mut c.in_flight) {
        c.handle(to.get(), from, m);
    }
    c.collect();
    assert!(
        c.done.is_empty(),
        "a hint counted as an acknowledgement: {:?}",
        c.done
    );
    c.in_flight = rest;
    c.settle();
    let report = write_ok(c.take_done());
    assert_eq!(report.acknowledged, [n(1), n(2)]);
    assert_eq!(c.node(4).hints_held(), 1);
    assert_eq!(
        c.node(4).local_state(&"k"),
        None,
        "a hint is not the fallback's data"
    );
    // n3 comes back: n4 hands the hint off.
    c.cut.clear();
    c.hand_off_hints(4, n(3));
    c.settle();
    assert_eq!(c.node(4).hints_held(), 0);
    assert_eq!(c.node(3).local_state(&"k"), Some(&holds(7, "v")));

    // ALL cannot be met with hints.
    assert!(matches!(
        c.write(
            1,
            RequestId::new(2),
            "k",
            put(8, "w"),
            Consistency::All,
            &placement
        ),
        Err(StoreError::Unavailable { .. })
    ));
}

#[test]
fn duplicated_and_late_acknowledgements_count_once() {
    // n4 coordinates for replicas 1..=3 without being one: every acknowledgement is remote.
    let mut c = Cluster::new(&[1, 2, 3, 4], lww(), ReadRepair::Blocking);
    let placement = Placement::new([1, 2, 3].map(n)).unwrap();
    c.write(
        4,
        RequestId::new(1),
        "k",
        put(1, "v"),
        Consistency::Quorum,
        &placement,
    )
    .unwrap();
    c.collect();
    let writes = std::mem::take(&mut c.in_flight);
    // n1 receives the write three times and acknowledges three times.
    let to_n1 = writes
        .iter()
        .find(|(_, to, _)| *to == n(1))
        .unwrap()
        .clone();
    for _ in 0..3 {
        c.handle(1, to_n1.0, to_n1.2.clone());
    }
    c.collect();
    for (from, to, m) in std::mem::take(&mut c.in_flight) {
        c.handle(to.get(), from, m);
    }
    c.collect();
    assert!(
        c.done.is_empty(),
        "one replica's acknowledgements counted more than once"
    );
    // A stranger's acknowledgement does not count either.
    let StoreMessage::Write { op, .. } = to_n1.2 else {
        unreachable!()
    };
    c.handle(4, n(9), StoreMessage::WriteAck { op });
    c.collect();
    assert!(c.done.is_empty());
    c.in_flight = writes
        .into_iter()
        .filter(|(_, to, _)| *to == n(2))
        .collect();
    c.settle();
    assert_eq!(write_ok(c.take_done()).acknowledged, [n(1), n(2)]);
    // A late acknowledgement after the outcome changes nothing.
    c.handle(4, n(3), StoreMessage::WriteAck { op });
    c.collect();
    assert!(c.done.is_empty());
}

/// A grow-only counter: each write adds to the coordinator's own entry, so applying a
/// write twice is visible in the total.
#[derive(Debug, Clone, Copy)]
struct GCounter;

impl Resolver for GCounter {
    type State = BTreeMap<NodeId, u64>;
    type Write = u64;

    fn coordinate(
        &self,
        node: NodeId,
        local: Option<&mut Self::State>,
        add: u64,
    ) -> Result<Self::State, ResolveError> {
        let local = local.ok_or(ResolveError::NotAReplica { node })?;
        *local.entry(node).or_default() += add;
        Ok(local.clone())
    }

    fn merge(&self, into: &mut Self::State, other: &Self::State) {
        for (&node, &count) in other {
            let entry = into.entry(node).or_default();
            *entry = (*entry).max(count);
        }
    }
}

#[test]
fn a_retried_write_is_applied_once() {
    let mut c = Cluster::new(&[1, 2, 3], GCounter, ReadRepair::Blocking);
    let placement = Placement::new([1, 2, 3].map(n)).unwrap();
    let request = RequestId::new(42);
    c.write(1, request, "hits", 5, Consistency::Quorum, &placement)
        .unwrap();
    // Retried while in flight: absorbed, and answered with the first attempt's outcome.
    c.write(1, request, "hits", 5, Consistency::Quorum, &placement)
        .unwrap();
    c.settle();
    let (_, retry) = c.done.pop().expect("the retry is answered");
    let StoreEffect::WriteDone {
        result: Ok(first), ..
    } = c.take_done()
    else {
        panic!("write failed");
    };
    assert_eq!(
        retry,
        StoreEffect::WriteDone {
            request,
            result: Ok(first.clone())
        }
    );
    assert!(!first.retried);
    // Retried after completion (the client missed the answer): the same outcome, marked.
    c.write(1, request, "hits", 5, Consistency::Quorum, &placement)
        .unwrap();
    c.settle();
    let StoreEffect::WriteDone {
        result: Ok(again), ..
    } = c.take_done()
    else {
        panic!("retry failed");
    };
    assert!(again.retried);
    assert_eq!(again.acknowledged, first.acknowledged);
    // The count is 5, not 10 or 15, on every replica.
    for id in 1..=3 {
        let total: u64 = c.node(id).local_state(&"hits").unwrap().values().sum();
        assert_eq!(total, 5, "replica n{id}");
    }
    // A non-replica cannot coordinate a counter write: it says so.
    let mut other = Cluster::new(&[4], GCounter, ReadRepair::Blocking);
    assert!(matches!(
        other.write(
            4,
            RequestId::new(1),
            "hits",
            1,
            Consistency::One,
            &placement
        ),
        Err(StoreError::Resolve(ResolveError::NotAReplica { .. }))
    ));
}

#[test]
fn a_delete_wins_a_tie_with_a_write_on_every_replica() {
    // While the network is split, one client writes "k" through n1 and another deletes it
    // through n3, both stamped 5. A read at ALL through n2 merges the two: the delete must
    // win (as in Cassandra), and the read repairs it onto n1, so no replica keeps the value.
    let mut c = Cluster::new(&[1, 2, 3], lww(), ReadRepair::Blocking);
    let placement = Placement::new([1, 2, 3].map(n)).unwrap();
    for (node, write, cut) in [(1, put(5, "v"), [2, 3]), (3, delete(5), [1, 2])] {
        c.cut.extend(cut.map(n));
        c.write_acked(
            node,
            RequestId::new(node),
            "k",
            write,
            Consistency::One,
            &placement,
        );
        c.cut.clear();
    }
    c.read(2, RequestId::new(9), "k", Consistency::All, &placement)
        .unwrap();
    c.settle();
    assert_eq!(
        c.take_read_ok(),
        Some(delete(5)),
        "the write beat the delete"
    );
    for id in 1..=3 {
        assert_eq!(
            c.node(id).local_state(&"k"),
            Some(&Some(delete(5))),
            "n{id}"
        );
    }
}

/// A cluster of `ids` whose tombstones and hints live for `grace_ms`.
fn with_grace<K: Ord + Clone + std::fmt::Debug>(ids: &[u64], grace_ms: u64) -> Cluster<Lww, K> {
    Cluster::with_config(ids, lww(), |config| {
        config.tombstone_grace_ms(grace_ms).expect("above zero")
    })
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

#[test]
fn a_tombstone_is_collected_after_its_grace_period_and_a_value_never() {
    let mut c = with_grace(&[1, 2, 3], 1_000);
    let placement = Placement::new([1, 2, 3].map(n)).unwrap();
    let all = Consistency::All;
    let at = c.now;
    c.write_acked(
        1,
        RequestId::new(1),
        "kept",
        (at, Some("v")),
        all,
        &placement,
    );
    c.write_acked(
        1,
        RequestId::new(2),
        "gone",
        (at, Some("v")),
        all,
        &placement,
    );
    let deleted = at.saturating_add(ms(1));
    c.write_acked(
        2,
        RequestId::new(3),
        "gone",
        (deleted, None),
        all,
        &placement,
    );
    for id in 1..=3 {
        assert_eq!(
            (c.node(id).keys_held(), c.node(id).tombstones_held()),
            (2, 1)
        );
    }
    // A millisecond before the grace period ends: kept.
    c.now = deleted.saturating_add(ms(999));
    for id in 1..=3 {
        c.tick(id);
        assert_eq!(
            c.node(id).local_state(&"gone"),
            Some(&Some((deleted, None)))
        );
    }
    // At its end: collected, on every replica; the value, as old, stays.
    c.now = deleted.saturating_add(ms(1_000));
    for id in 1..=3 {
        c.tick(id);
        let node = c.node(id);
        assert_eq!(node.local_state(&"gone"), None, "n{id}");
        assert_eq!((node.keys_held(), node.tombstones_held()), (1, 0), "n{id}");
        assert_eq!(node.stats().tombstones_collected, 1);
        assert_eq!(node.local_state(&"kept"), Some(&Some((at, Some("v")))));
    }
    // A write over a tombstone takes it out of the collection.
    let again = c.now;
    c.write_acked(3, RequestId::new(4), "kept", (again, None), all, &placement);
    c.write_acked(
        3,
        RequestId::new(5),
        "kept",
        (again.saturating_add(ms(1)), Some("w")),
        all,
        &placement,
    );
    c.now = again.saturating_add(ms(5_000));
    for id in 1..=3 {
        c.tick(id);
        assert_eq!(c.node(id).keys_held(), 1, "n{id} collected a live value");
        assert_eq!(c.node(id).tombstones_held(), 0);
    }
}

#[test]
fn a_hint_older_than_the_grace_period_is_dropped_not_handed_off() {
    let mut c = with_grace(&[1, 2, 3, 4], 1_000);
    let placement = Placement::new([1, 2, 3].map(n))
        .unwrap()
        .with_down([n(3)])
        .with_fallbacks([n(4)]);
    c.cut.insert(n(3));
    let at = c.now;
    c.write_acked(
        1,
        RequestId::new(1),
        "k",
        (at, Some("v")),
        Consistency::Quorum,
        &placement,
    );
    assert_eq!(c.node(4).hints_held(), 1);
    // n3 is back after the grace period: the hint is not handed off, and is dropped.
    c.cut.clear();
    c.now = at.saturating_add(ms(1_000));
    c.hand_off_hints(4, n(3));
    c.collect();
    assert!(c.in_flight.is_empty(), "an expired hint was handed off");
    c.tick(4);
    assert_eq!(c.node(4).hints_held(), 0);
    assert_eq!(c.node(4).stats().hints_expired, 1);
    assert_eq!(c.node(3).local_state(&"k"), None);

    // A hint that reaches the fallback only after the grace period is not stored.
    c.cut.insert(n(3));
    let at = c.now;
    c.write(
        1,
        RequestId::new(2),
        "k",
        (at, Some("w")),
        Consistency::Quorum,
        &placement,
    )
    .unwrap();
    c.collect();
    let (hint, rest): (Vec<_>, Vec<_>) = c.in_flight.drain(..).partition(|(_, to, _)| *to == n(4));
    c.in_flight = rest;
    c.settle();
    c.now = at.saturating_add(ms(1_000));
    for (from, _, message) in hint {
        c.handle(4, from, message);
    }
    c.collect();
    assert!(c.in_flight.is_empty(), "a late hint was acknowledged");
    assert_eq!(c.node(4).hints_held(), 0);
    assert_eq!(c.node(4).stats().hints_expired, 2);
}

#[test]
fn a_write_of_nothing_stores_nothing() {
    // A replicated write whose state is empty (a merge of nothing) leaves no entry behind,
    // whatever key it names: keys from the network must not grow the replica's map.
    let mut c: Cluster<Lww, u64> = with_grace(&[1, 2, 3], 1_000);
    let placement = Placement::new([1, 2, 3].map(n)).unwrap();
    c.write(
        1,
        RequestId::new(1),
        0,
        put(1, "v"),
        Consistency::Quorum,
        &placement,
    )
    .unwrap();
    c.collect();
    let Some((_, _, StoreMessage::Write { op, .. })) = c.in_flight.first().cloned() else {
        panic!("expected a write");
    };
    for key in 1..=1_000 {
        c.handle(
            2,
            n(1),
            StoreMessage::Write {
                op,
                key,
                state: None,
            },
        );
    }
    assert_eq!(c.node(2).keys_held(), 0);
}

/// Thirty simulated seconds of writes, each key deleted ten writes later, with a replica
/// down for good halfway through (its fallback holding hints for it), a grace period of one
/// second, and every node ticking every 100 ms: every entry count stays within what the
/// grace period and the limits allow, however long the run.
#[test]
fn replica_data_hints_and_operations_stay_bounded_over_a_long_run() {
    const GRACE_MS: u64 = 1_000;
    const STEP_MS: u64 = 10;
    const ROUNDS: u64 = 3_000;
    const LIVE: u64 = 10;
    const TICK_EVERY: u64 = 10;
    const REMEMBERED: usize = 64;
    let mut c: Cluster<Lww, u64> = Cluster::with_config(&[1, 2, 3, 4], lww(), |config| {
        let config = config.tombstone_grace_ms(GRACE_MS).expect("above zero");
        config
            .limits(1024, 10, 10_000, REMEMBERED)
            .expect("above zero")
    });
    let healthy = Placement::new([1, 2, 3].map(n)).unwrap();
    let n3_down = healthy.clone().with_down([n(3)]).with_fallbacks([n(4)]);
    let (mut keys_peak, mut hints_peak) = (0, 0);
    for round in 0..ROUNDS {
        c.now = c.now.saturating_add(ms(STEP_MS));
        let placement = if round < ROUNDS / 2 {
            &healthy
        } else {
            c.cut.insert(n(3));
            &n3_down
        };
        let through = 1 + round % 2;
        let write = (c.clock(through), Some("v"));
        let quorum = Consistency::Quorum;
        c.write_acked(
            through,
            RequestId::new(2 * round),
            round,
            write,
            quorum,
            placement,
        );
        if let Some(key) = round.checked_sub(LIVE) {
            let delete = (c.clock(through), None);
            c.write_acked(
                through,
                RequestId::new(2 * round + 1),
                key,
                delete,
                quorum,
                placement,
            );
        }
        if round % TICK_EVERY == 0 {
            for id in 1..=4 {
                c.tick(id);
            }
        }
        for id in 1..=3 {
            keys_peak = keys_peak.max(c.node(id).keys_held());
        }
        hints_peak = hints_peak.max(c.node(4).hints_held());
    }
    // Live keys, plus tombstones younger than the grace period or a tick interval more.
    let deletes_per_grace = (GRACE_MS / STEP_MS) as usize;
    let keys_bound = LIVE as usize + deletes_per_grace + TICK_EVERY as usize + 1;
    // Two hinted writes a round (the write and the delete), for as long.
    let hints_bound = 2 * (deletes_per_grace + TICK_EVERY as usize + 1);
    let writes = 2 * ROUNDS - LIVE;
    let collected = c.node(1).stats().tombstones_collected;
    let expired = c.node(4).stats().hints_expired;
    println!(
        "coordinator long run: {writes} writes over {} s, grace {GRACE_MS} ms: at most \
         {keys_peak} keys held by a replica (bound {keys_bound}), {hints_peak} hints held \
         (bound {hints_bound}); n1 collected {collected} tombstones, n4 dropped {expired} \
         expired hints",
        ROUNDS * STEP_MS / 1_000,
    );
    assert!(
        keys_peak <= keys_bound,
        "{keys_peak} keys held, bound {keys_bound}"
    );
    assert!(
        hints_peak <= hints_bound,
        "{hints_peak} hints held, bound {hints_bound}"
    );
    assert!(expired > 0 && collected > 0);
    for id in 1..=4 {
        let node = c.node(id);
        assert_eq!(node.ops_in_flight(), 0, "n{id}");
        assert!(node.request_ids_remembered() <= REMEMBERED, "n{id}");
    }
}

/// Writes "old" everywhere, then "new" with n3 cut off, so n3 is stale.
fn stale_n3(repair: ReadRepair) -> Cluster<Lww> {
    let mut c = Cluster::new(&[1, 2, 3], lww(), repair);
    let placement = Placement::new([1, 2, 3].map(n)).unwrap();
    c.write_acked(
        1,
        RequestId::new(1),
        "k",
        put(1, "old"),
        Consistency::All,
        &placement,
    );
    c.cut.insert(n(3));
    c.write_acked(
        1,
        RequestId::new(2),
        "k",
        put(2, "new"),
        Consistency::Quorum,
        &placement,
    );
    c.cut.clear();
    assert_eq!(c.node(3).local_state(&"k"), Some(&holds(1, "old")));
    c
}

#[test]
fn blocking_read_repair_answers_only_once_a_quorum_holds_the_result() {
    let mut c = stale_n3(ReadRepair::Blocking);
    let placement = Placement::new([1, 2, 3].map(n)).unwrap();
    // n2 coordinates; n2 is fresh, n3 stale, n1 silent.
    c.read(2, RequestId::new(3), "k", Consistency::Quorum, &placement)
        .unwrap();
    c.collect();
    c.in_flight.retain(|(_, to, _)| *to == n(3));
    // Deliver the read to n3 and its stale answer back.
    for _ in 0..2 {
        for (from, to, m) in std::mem::take(&mut c.in_flight) {
            c.handle(to.get(), from, m);
        }
        c.collect();
    }
    assert!(
        c.done.is_empty(),
        "answered before the repair was acknowledged"
    );
    assert_eq!(c.in_flight.len(), 1, "one repair, to n3");
    c.settle();
    let value = c.take_read_ok();
    assert_eq!(value, holds(2, "new"));
    assert_eq!(c.node(3).local_state(&"k"), Some(&holds(2, "new")));
}

/// A message of a last-write-wins store.
type LwwEnvelope = Envelope<LwwState>;

/// n2 coordinates a QUORUM read of [`stale_n3`]'s key and hears n3's stale answer first:
/// the read has its two answers, n2 holds the merged state, and the repair goes to n3. The
/// read to n1, which holds the merged state too, is still undelivered. Returns the repair.
fn read_with_repair_to_n3(
    c: &mut Cluster<Lww>,
    placement: &Placement,
) -> (LwwEnvelope, LwwEnvelope) {
    c.read(2, RequestId::new(3), "k", Consistency::Quorum, placement)
        .unwrap();
    c.collect();
    let read_to_n1 = c
        .in_flight
        .iter()
        .position(|(_, to, _)| *to == n(1))
        .map(|i| c.in_flight.remove(i))
        .expect("a read to n1");
    for _ in 0..2 {
        for (from, to, m) in std::mem::take(&mut c.in_flight) {
            c.handle(to.get(), from, m);
        }
        c.collect();
    }
    assert!(c.done.is_empty(), "answered before the repair");
    assert_eq!(c.in_flight.len(), 1, "one repair, to n3");
    let repair = c.in_flight.pop().expect("one");
    assert_eq!(repair.1, n(3));
    assert!(matches!(repair.2, StoreMessage::Write { .. }));
    (read_to_n1, repair)
}

/// Delivers `read` to its replica and the answer back to the coordinator.
fn deliver_round_trip(c: &mut Cluster<Lww>, read: LwwEnvelope) {
    c.in_flight.push(read);
    for _ in 0..2 {
        for (from, to, m) in std::mem::take(&mut c.in_flight) {
            c.handle(to.get(), from, m);
        }
        c.collect();
    }
}

#[test]
fn blocking_read_repair_completes_on_a_late_fresh_answer_when_the_repair_is_lost() {
    let mut c = stale_n3(ReadRepair::Blocking);
    let placement = Placement::new([1, 2, 3].map(n)).unwrap();
    let (read_to_n1, lost_repair) = read_with_repair_to_n3(&mut c, &placement);
    // An acknowledgement from n1, which was sent no repair, does not count it.
    let StoreMessage::Write { op, .. } = lost_repair.2 else {
        panic!("expected a repair");
    };
    c.handle(2, n(1), StoreMessage::WriteAck { op });
    c.collect();
    assert!(c.done.is_empty(), "a stray acknowledgement counted n1");
    // The repair to n3 is never acknowledged; n1 answers late with the merged state, so
    // n1 and n2 make the quorum. No tick has passed: the read must not wait for the
    // deadline.
    deliver_round_trip(&mut c, read_to_n1);
    let value = c.take_read_ok();
    assert_eq!(value, holds(2, "new"));
    assert_eq!(c.node(2).ops_in_flight(), 0);
    assert!(c.in_flight.is_empty(), "n1 needed no repair");
}

#[test]
fn blocking_read_repair_completes_on_a_late_fresh_answer_when_the_repaired_replica_fails() {
    let mut c = stale_n3(ReadRepair::Blocking);
    let placement = Placement::new([1, 2, 3].map(n)).unwrap();
    let (read_to_n1, _lost_repair) = read_with_repair_to_n3(&mut c, &placement);
    c.node_failed(2, n(3));
    c.collect();
    assert!(
        c.done.is_empty(),
        "n1 can still make the quorum: {:?}",
        c.done
    );
    deliver_round_trip(&mut c, read_to_n1);
    let value = c.take_read_ok();
    assert_eq!(value, holds(2, "new"));
}

#[test]
fn blocking_read_repair_repairs_a_late_stale_answer_and_counts_its_acknowledgement() {
    // "old" everywhere, then "new" on n2 alone: n1 and n3 are both stale.
    let mut c = Cluster::new(&[1, 2, 3], lww(), ReadRepair::Blocking);
    let placement = Placement::new([1, 2, 3].map(n)).unwrap();
    for (request, value, level) in [(1, "old", Consistency::All), (2, "new", Consistency::One)] {
        if value == "new" {
            c.cut.extend([n(1), n(3)]);
        }
        c.write_acked(
            2,
            RequestId::new(request),
            "k",
            put(request, value),
            level,
            &placement,
        );
    }
    c.cut.clear();
    let (read_to_n1, _lost_repair) = read_with_repair_to_n3(&mut c, &placement);
    c.node_failed(2, n(3));
    // n1 answers late with the old state: the read needs it, so n1 is repaired too and
    // counts once it acknowledges.
    deliver_round_trip(&mut c, read_to_n1);
    assert!(c.done.is_empty(), "answered before n1 held the result");
    assert_eq!(c.in_flight.len(), 1, "one repair, to n1");
    assert_eq!(c.in_flight[0].1, n(1));
    c.settle();
    let value = c.take_read_ok();
    assert_eq!(value, holds(2, "new"));
    assert_eq!(c.node(1).local_state(&"k"), Some(&holds(2, "new")));
}

#[test]
fn blocking_read_repair_with_nothing_more_to_hear_times_out_at_the_deadline() {
    let mut c = stale_n3(ReadRepair::Blocking);
    let placement = Placement::new([1, 2, 3].map(n)).unwrap();
    // Both the late read to n1 and the repair to n3 are lost.
    let _lost = read_with_repair_to_n3(&mut c, &placement);
    for _ in 0..9 {
        c.now = c.now.saturating_add(TICK);
        c.tick(2);
    }
    c.collect();
    assert!(
        c.done.is_empty(),
        "failed before the deadline: {:?}",
        c.done
    );
    c.now = c.now.saturating_add(TICK);
    c.tick(2);
    let err = c.take_read_err();
    assert_eq!(
        err,
        StoreError::TimedOut {
            consistency: Consistency::Quorum,
            answered: 1,
            required: 2
        }
    );
}

#[test]
fn blocking_read_repair_fails_at_once_when_no_quorum_can_hold_the_result() {
    // n1 failed before the read had its answers, then the repaired n3 fails: only n2
    // can hold the result, and the read fails at once, not at the deadline.
    let mut c = stale_n3(ReadRepair::Blocking);
    let placement = Placement::new([1, 2, 3].map(n)).unwrap();
    c.read(2, RequestId::new(3), "k", Consistency::Quorum, &placement)
        .unwrap();
    c.node_failed(2, n(1));
    c.collect();
    c.in_flight.retain(|(_, to, _)| *to == n(3));
    for _ in 0..2 {
        for (from, to, m) in std::mem::take(&mut c.in_flight) {
            c.handle(to.get(), from, m);
        }
        c.collect();
    }
    assert!(c.done.is_empty(), "answered before the repair");
    c.node_failed(2, n(3));
    let err = c.take_read_err();
    assert!(matches!(err, StoreError::QuorumUnreachable { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("needs 2 of 3 voters, 1 granted, 2 rejected"),
        "{err}"
    );

    // The same with n1 believed down from the start.
    let mut c = stale_n3(ReadRepair::Blocking);
    let placement = Placement::new([1, 2, 3].map(n)).unwrap().with_down([n(1)]);
    c.read(2, RequestId::new(3), "k", Consistency::Quorum, &placement)
        .unwrap();
    c.collect();
    for _ in 0..2 {
        for (from, to, m) in std::mem::take(&mut c.in_flight) {
            c.handle(to.get(), from, m);
        }
        c.collect();
    }
    assert!(c.done.is_empty(), "answered before the repair");
    c.node_failed(2, n(3));
    assert!(matches!(
        c.take_done(),
        StoreEffect::ReadDone {
            result: Err(StoreError::QuorumUnreachable { .. }),
            ..
        }
    ));
}

#[test]
fn background_read_repair_answers_at_once_and_repairs_after() {
    let mut c = stale_n3(ReadRepair::Background);
    let placement = Placement::new([1, 2, 3].map(n)).unwrap();
    c.read(2, RequestId::new(3), "k", Consistency::Quorum, &placement)
        .unwrap();
    c.collect();
    c.in_flight.retain(|(_, to, _)| *to == n(3));
    for _ in 0..2 {
        for (from, to, m) in std::mem::take(&mut c.in_flight) {
            c.handle(to.get(), from, m);
        }
        c.collect();
    }
    let StoreEffect::ReadDone {
        result: Ok(value), ..
    } = c.done.pop().unwrap().1
    else {
        panic!("read failed");
    };
    assert_eq!(value, holds(2, "new"));
    assert_eq!(
        c.node(3).local_state(&"k"),
        Some(&holds(1, "old")),
        "not yet repaired"
    );
    c.settle();
    assert_eq!(c.node(3).local_state(&"k"), Some(&holds(2, "new")));
}

#[test]
fn stray_messages_are_not_counted() {
    let mut c = Cluster::new(&[1, 2, 3, 4], lww(), ReadRepair::Blocking);
    let placement = Placement::new([1, 2, 3].map(n)).unwrap();
    // n4 reads (not a replica): a write acknowledgement is not a read answer.
    c.read(4, RequestId::new(1), "k", Consistency::Quorum, &placement)
        .unwrap();
    c.collect();
    let reads = std::mem::take(&mut c.in_flight);
    let StoreMessage::Read { op, .. } = reads[0].2.clone() else {
        panic!("expected a read");
    };
    c.handle(4, n(1), StoreMessage::WriteAck { op });
    c.handle(4, n(2), StoreMessage::WriteAck { op });
    c.collect();
    assert!(
        c.done.is_empty(),
        "acknowledgements answered a read: {:?}",
        c.done
    );
    c.in_flight = reads;
    c.settle();
    assert!(matches!(
        c.take_done(),
        StoreEffect::ReadDone {
            result: Ok(None),
            ..
        }
    ));

    // A hint acknowledgement from a node that was sent no hint is not reported.
    c.write(
        4,
        RequestId::new(2),
        "k",
        put(1, "v"),
        Consistency::Quorum,
        &placement,
    )
    .unwrap();
    c.collect();
    let StoreMessage::Write { op, .. } = c.in_flight[0].2.clone() else {
        panic!("expected a write");
    };
    c.handle(4, n(9), StoreMessage::HintAck { op });
    c.settle();
    let report = write_ok(c.take_done());
    assert_eq!(report.hinted, Vec::<NodeId>::new());
}

/// Increments through random coordinators, retried with the same request id while in
/// flight and after completion, over a network that reorders, duplicates and drops
/// messages, with timeouts. Every replica's count stays at most the number of distinct
/// requests, every acknowledged write names distinct replicas, and once the network is
/// healed and the replicas merged the count is exactly the number of distinct requests:
/// nothing applied twice, nothing lost.
#[test]
fn retries_duplicates_and_reordering_never_apply_a_write_twice() {
    let seeds = 300;
    let (mut acked, mut retries, mut duplicates, mut dropped, mut failed) = (0, 0, 0, 0, 0);
    for seed in 0..seeds {
        let mut rng = synod_node::Rng::new(seed * 7 + 1);
        let mut c = Cluster::new(&[1, 2, 3], GCounter, ReadRepair::Background);
        let placement = Placement::new([1, 2, 3].map(n)).unwrap();
        let mut issued: Vec<(u64, RequestId)> = Vec::new();
        for step in 0..200u64 {
            match rng.next_u64() % 10 {
                // A new increment, or a retry of an earlier one at the same coordinator.
                0 | 1 => {
                    let (node, request) = if issued.is_empty() || rng.next_u64().is_multiple_of(2) {
                        let request = RequestId::new(seed * 1000 + step);
                        let node = 1 + rng.next_u64() % 3;
                        issued.push((node, request));
                        (node, request)
                    } else {
                        retries += 1;
                        issued[(rng.next_u64() % issued.len() as u64) as usize]
                    };
                    let _ = c.write(node, request, "n", 1, Consistency::Quorum, &placement);
                }
                2 => {
                    c.now = c.now.saturating_add(TICK);
                    for id in 1..=3 {
                        c.tick(id);
                    }
                }
                _ => {
                    c.collect();
                    if c.in_flight.is_empty() {
                        continue;
                    }
                    let i = (rng.next_u64() % c.in_flight.len() as u64) as usize;
                    let (from, to, message) = c.in_flight.swap_remove(i);
                    match rng.next_u64() % 10 {
                        0 => dropped += 1,
                        1 => {
                            duplicates += 1;
                            c.in_flight.push((from, to, message.clone()));
                            c.handle(to.get(), from, message);
                        }
                        _ => c.handle(to.get(), from, message),
                    }
                }
            }
        }
        let distinct = issued.len() as u64;
        c.settle();
        for (_, effect) in std::mem::take(&mut c.done) {
            match effect {
                StoreEffect::WriteDone {
                    result: Ok(report), ..
                } => {
                    acked += 1;
                    let mut replicas = report.acknowledged.clone();
                    replicas.dedup();
                    assert_eq!(
                        replicas, report.acknowledged,
                        "seed {seed}: a replica counted twice"
                    );
                    assert!(report.acknowledged.len() >= 2, "seed {seed}: {report:?}");
                }
                StoreEffect::WriteDone { result: Err(_), .. } => failed += 1,
                other => panic!("seed {seed}: unexpected {other:?}"),
            }
        }
        let mut merged = BTreeMap::new();
        for id in 1..=3 {
            let state = c.node(id).local_state(&"n").cloned().unwrap_or_default();
            let total: u64 = state.values().sum();
            assert!(
                total <= distinct,
                "seed {seed}: n{id} counts {total} of {distinct}"
            );
            GCounter.merge(&mut merged, &state);
        }
        assert_eq!(merged.values().sum::<u64>(), distinct, "seed {seed}");
    }
    println!(
        "coordinator: {seeds} seeds; {acked} writes acknowledged, {failed} failed or timed out, \
         {retries} retries, {duplicates} duplicated and {dropped} dropped messages; \
         0 writes applied twice, 0 lost"
    );
    assert!(retries > 0 && duplicates > 0 && dropped > 0 && acked > 0 && failed > 0);
}

#[test]
fn a_reply_to_an_operation_of_an_earlier_incarnation_is_not_counted() {
    // n1 reads "a"; n2's answer (the state of "a") is delayed in the network while n1
    // restarts. The new n1 reads "b", and its first operation gets the same number as
    // the old read. Counting the delayed answer would return "a"'s value for "b" and
    // read-repair it into "b" on the other replicas.
    let mut c = Cluster::new(&[1, 2, 3], lww(), ReadRepair::Blocking);
    let placement = Placement::new([1, 2, 3].map(n)).unwrap();
    c.write_acked(
        2,
        RequestId::new(1),
        "a",
        put(5, "value of a"),
        Consistency::All,
        &placement,
    );
    c.read(1, RequestId::new(2), "a", Consistency::Quorum, &placement)
        .unwrap();
    c.collect();
    let to_n2 = c
        .in_flight
        .iter()
        .find(|(_, to, _)| *to == n(2))
        .expect("a read to n2")
        .2
        .clone();
    c.in_flight.clear();
    c.handle(2, n(1), to_n2);
    c.collect();
    let delayed = c.in_flight.pop().expect("n2's answer");
    assert!(matches!(delayed.2, StoreMessage::ReadReply { .. }));

    // n1 restarts: a new incarnation (its replica data is gone with its memory).
    let config =
        CoordinatorConfig::new(n(1), Incarnation::new(2)).read_repair(ReadRepair::Blocking);
    c.nodes.insert(n(1), Coordinator::new(config, lww()));
    c.read(1, RequestId::new(3), "b", Consistency::Quorum, &placement)
        .unwrap();
    c.in_flight.insert(0, delayed);
    c.settle();
    assert!(
        matches!(
            c.take_done(),
            StoreEffect::ReadDone {
                result: Ok(None),
                ..
            }
        ),
        "another key's value was returned"
    );
    for id in [1, 2, 3] {
        assert_eq!(
            c.node(id).local_state(&"b").copied().flatten(),
            None,
            "n{id} holds another key's value under \"b\""
        );
    }
}

/// The coordinator asks to be woken when its next operation times out and when its next
/// tombstone is due for collection, and reads its wall clock as `now` past its epoch.
#[test]
fn the_coordinator_asks_to_be_woken_when_something_is_due() {
    let grace_ms = 60_000;
    // `now` counts from this node's start; its wall clock read START then.
    let config = CoordinatorConfig::new(n(1), FIRST)
        .tombstone_grace_ms(grace_ms)
        .unwrap()
        .wall_clock_at_zero(START);
    let mut node = Coordinator::new(config, lww());
    let placement = Placement::new([1, 2, 3].map(n)).unwrap();
    let wakes = |node: &mut Coordinator<&'static str, Lww>| {
        std::iter::from_fn(|| node.poll())
            .filter_map(|effect| match effect {
                Effect::WakeAt(at) => Some(at),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    // A delete stamped 5 s after START, handed in 5 s after the start: its tombstone is
    // collected a grace period after its timestamp; the write times out after 1 s.
    let now = Time::from_secs(5);
    let deleted = START.saturating_add(Duration::from_secs(5));
    let write = StoreRequest::Write {
        request: RequestId::new(1),
        key: "k",
        write: (deleted, None),
        consistency: Consistency::Quorum,
        placement: placement.clone(),
    };
    let id = synod_node::RequestId(1);
    node.handle(now, Input::Request { id, request: write });
    assert_eq!(wakes(&mut node), [now + Duration::from_secs(1)]);
    node.handle(now + Duration::from_secs(1), Input::Wake);
    let collect_at = now + Duration::from_millis(grace_ms);
    assert_eq!(
        wakes(&mut node),
        [collect_at],
        "the timeout passed; the tombstone waits"
    );
    assert_eq!(node.tombstones_held(), 1);
    node.handle(collect_at, Input::Wake);
    assert_eq!(node.tombstones_held(), 0);
    // The wall clock is START + now: a write stamped 100 ms past it is taken, one 2 s past
    // it is refused (the drift bound is 500 ms).
    let wall = START.saturating_add(Duration::from_secs(65));
    let mut refused = Vec::new();
    for (number, ahead_ms) in [(2, 100), (3, 2_000)] {
        let write = StoreRequest::Write {
            request: RequestId::new(number),
            key: "k",
            write: (
                wall.saturating_add(Duration::from_millis(ahead_ms)),
                Some("v"),
            ),
            consistency: Consistency::One,
            placement: placement.clone(),
        };
        let id = synod_node::RequestId(number);
        node.handle(collect_at, Input::Request { id, request: write });
        refused.push(std::iter::from_fn(|| node.poll()).any(|effect| {
            matches!(
                effect,
                Effect::Reply {
                    response: StoreResponse::Written(Err(StoreError::TimestampTooFarAhead { .. })),
                    ..
                }
            )
        }));
    }
    assert_eq!(refused, [false, true]);
}
