//! Single-decree Paxos through `PaxosNode`, over a lossy, duplicating, reordering network
//! with crashes that lose unsynced writes: at most one value is ever chosen, across
//! hundreds of seeds; an acceptor that hides its accepted value from promises is caught;
//! no promise leaves a node before its persist is acknowledged.
//!
//! [`Cluster`] is the hand-stepped driver the Multi-Paxos and register tests use too.
//! `SYNOD_PAXOS_SEEDS` sets the seed count (default 2000).

use std::collections::BTreeSet;

use synod_consensus::NodeId;
use synod_consensus::paxos::{
    Acceptor, AcceptorState, Ballot, NodeConfig, PaxosMessage, PaxosNode, RequestError,
};
use synod_node::{Effect, Input, PersistToken, Probability, Protocol, RequestId, Rng, Time};

fn n(id: u64) -> NodeId {
    NodeId::new(id)
}

/// How likely each fault is, per step.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    /// A delivered message is lost instead.
    pub loss: Probability,
    /// A delivered message stays in the network for a second delivery.
    pub duplicate: Probability,
    /// A node crashes (losing unsynced writes) and restarts from its durable ones.
    pub crash: Probability,
    /// A node syncs its unsynced writes and is told so.
    pub sync: Probability,
}

impl Faults {
    /// The faults the seeded sweeps use.
    pub fn storm() -> Faults {
        Faults {
            loss: Probability::from_ppm(100_000),
            duplicate: Probability::from_ppm(50_000),
            crash: Probability::from_ppm(3_000),
            sync: Probability::from_ppm(300_000),
        }
    }

    /// No faults, every write synced at once: for the liveness phase.
    pub fn calm() -> Faults {
        Faults {
            loss: Probability::NEVER,
            duplicate: Probability::NEVER,
            crash: Probability::NEVER,
            sync: Probability::ALWAYS,
        }
    }
}

/// Builds node `id` from the writes its store made durable (oldest first).
pub type Build<P> = Box<dyn FnMut(NodeId, &[<P as Protocol>::Write]) -> P>;

/// A cluster of contract nodes stepped by hand from one seed: a third of the messages in
/// flight delivered per step (picked at random, so reordered), loss, duplication, wake-ups, syncs acknowledged
/// with the last token, crashes that drop unsynced writes and rebuild the node from its
/// durable ones.
pub struct Cluster<P: Protocol> {
    pub rng: Rng,
    nodes: Vec<P>,
    build: Build<P>,
    durable: Vec<Vec<P::Write>>,
    unsynced: Vec<Vec<(PersistToken, P::Write)>>,
    net: Vec<(NodeId, NodeId, P::Message)>,
    wakes: Vec<Option<Time>>,
    /// Every reply: (node, request id, response).
    pub replies: Vec<(NodeId, RequestId, P::Response)>,
    /// The requests answered, to check that none is answered twice.
    answered: BTreeSet<(NodeId, RequestId)>,
    /// Every apply, with the node and its incarnation count at the time.
    pub applied: Vec<(NodeId, u64, P::Apply)>,
    incarnations: Vec<u64>,
    pub crashes: u64,
    pub now: Time,
    pub faults: Faults,
}

impl<P: Protocol> Cluster<P>
where
    P::Message: Clone,
{
    pub fn new(seed: u64, size: u64, faults: Faults, mut build: Build<P>) -> Cluster<P> {
        let nodes: Vec<P> = (1..=size).map(|id| build(n(id), &[])).collect();
        let count = nodes.len();
        Cluster {
            rng: Rng::new(seed),
            nodes,
            build,
            durable: (0..count).map(|_| Vec::new()).collect(),
            unsynced: (0..count).map(|_| Vec::new()).collect(),
            net: Vec::new(),
            wakes: vec![None; count],
            replies: Vec::new(),
            answered: BTreeSet::new(),
            applied: Vec::new(),
            incarnations: vec![0; count],
            crashes: 0,
            now: Time::from_millis(1),
            faults,
        }
    }

    pub fn node(&self, id: NodeId) -> &P {
        &self.nodes[(id.get() - 1) as usize]
    }

    /// How many times node `id` crashed.
    pub fn incarnation(&self, id: NodeId) -> u64 {
        self.incarnations[(id.get() - 1) as usize]
    }

    pub fn in_flight(&self) -> usize {
        self.net.len()
    }

    /// Hands `input` to node `id` and drains its effects.
    pub fn input(&mut self, id: NodeId, input: Input<P::Message, P::Request>) {
        let at = (id.get() - 1) as usize;
        self.nodes[at].handle(self.now, input);
        while let Some(effect) = self.nodes[at].poll() {
            match effect {
                Effect::Send { to, message } => {
                    assert_ne!(to, id, "a node never sends to itself");
                    self.net.push((id, to, message));
                }
                Effect::Reply {
                    id: request,
                    response,
                } => {
                    assert!(
                        self.answered.insert((id, request)),
                        "{id} answered request {request:?} twice"
                    );
                    self.replies.push((id, request, response));
                }
                Effect::Persist { token, write } => self.unsynced[at].push((token, write)),
                Effect::Apply(apply) => self.applied.push((id, self.incarnations[at], apply)),
                Effect::WakeAt(time) => self.wakes[at] = Some(time),
            }
        }
    }

    pub fn request(&mut self, id: NodeId, request_id: RequestId, request: P::Request) {
        self.input(
            id,
            Input::Request {
                id: request_id,
                request,
            },
        );
    }

    /// One step: time moves 1 ms; due wake-ups; maybe a sync, a crash; some messages.
    pub fn step(&mut self) {
        self.now = self.now.saturating_add(std::time::Duration::from_millis(1));
        for at in 0..self.nodes.len() {
            if self.wakes[at].is_some_and(|t| t <= self.now) {
                self.wakes[at] = None;
                self.input(n(at as u64 + 1), Input::Wake);
            }
        }
        for at in 0..self.nodes.len() {
            if !self.unsynced[at].is_empty() && self.rng.chance(self.faults.sync) {
                self.sync(at);
            }
        }
        if self.rng.chance(self.faults.crash) {
            let at = self.rng.below(self.nodes.len() as u64) as usize;
            self.crash(at);
        }
        // About a third of the messages in flight arrive each step, in random order: a
        // message takes a few steps, and a busy network does not slow every round down.
        for _ in 0..self.net.len().div_ceil(3) {
            if self.net.is_empty() {
                break;
            }
            let at = self.rng.below(self.net.len() as u64) as usize;
            let (from, to, message) = self.net.swap_remove(at);
            if self.rng.chance(self.faults.loss) {
                continue;
            }
            if self.rng.chance(self.faults.duplicate) {
                self.net.push((from, to, message.clone()));
            }
            self.input(to, Input::Message { from, message });
        }
    }

    fn sync(&mut self, at: usize) {
        let writes = std::mem::take(&mut self.unsynced[at]);
        let last = writes.last().map(|(token, _)| *token);
        self.durable[at].extend(writes.into_iter().map(|(_, write)| write));
        if let Some(token) = last {
            self.input(n(at as u64 + 1), Input::Persisted(token));
        }
    }

    /// Crashes node `at`: its unsynced writes, its wake-up and its volatile state are
    /// lost; it is rebuilt from its durable writes.
    pub fn crash(&mut self, at: usize) {
        self.crashes += 1;
        self.unsynced[at].clear();
        self.wakes[at] = None;
        self.incarnations[at] += 1;
        self.nodes[at] = (self.build)(n(at as u64 + 1), &self.durable[at]);
    }

    /// Steps until `done` holds or `steps_max` steps have passed; returns whether it held.
    pub fn run_until(&mut self, steps_max: u64, mut done: impl FnMut(&Self) -> bool) -> bool {
        for _ in 0..steps_max {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }
}

fn config(id: NodeId, size: u64, seed: u64) -> NodeConfig {
    NodeConfig::new(id, (1..=size).map(n))
        .unwrap()
        .retry_timeout_ms(40)
        .seed(seed ^ id.get())
}

/// A cluster of `PaxosNode`s; with `broken`, node 1's acceptor hides accepted values.
fn cluster(seed: u64, size: u64, faults: Faults, broken: bool) -> Cluster<PaxosNode<u64>> {
    Cluster::new(
        seed,
        size,
        faults,
        Box::new(move |id, durable: &[AcceptorState<u64>]| {
            let node = match durable.last() {
                Some(state) => PaxosNode::restore(config(id, size, seed), state.clone()),
                None => PaxosNode::new(config(id, size, seed)),
            };
            if broken && id == n(1) {
                node.broken_hiding_accepted()
            } else {
                node
            }
        }),
    )
}

/// Every value some node handed up or answered as chosen.
fn chosen(c: &Cluster<PaxosNode<u64>>) -> BTreeSet<u64> {
    let applied = c.applied.iter().map(|(_, _, v)| *v);
    let replied = c.replies.iter().filter_map(|(_, _, r)| r.ok());
    applied.chain(replied).collect()
}

/// One run: 3 or 5 nodes, 2 or 3 of them proposing their own value at random times, a
/// storm of faults for 3000 steps, then calm until every proposer that did not crash
/// is answered. Returns the value chosen and the crashes, or an error at the first
/// second value.
fn run(seed: u64, broken: bool) -> Result<(Option<u64>, u64), String> {
    let mut rng = Rng::new(seed);
    let size = if rng.below(2) == 0 { 3 } else { 5 };
    let mut c = cluster(seed, size, Faults::storm(), broken);
    let proposers = rng.between(2, 3);
    let mut starts: Vec<(u64, NodeId)> = (0..proposers)
        .map(|_| (rng.below(20), n(rng.between(1, size))))
        .collect();
    starts.sort();
    // The incarnation of each node that took a request, when it took it.
    let mut holders = Vec::new();
    for step in 0..3000u64 {
        for (p, (at, node)) in starts.iter().enumerate() {
            if *at == step {
                c.request(*node, RequestId(p as u64), 1000 + p as u64);
                holders.push((*node, c.incarnation(*node)));
            }
        }
        c.step();
        let values = chosen(&c);
        if values.len() > 1 {
            return Err(format!("seed {seed}: two values chosen: {values:?}"));
        }
    }
    // Calm: a node that still holds a request (a crash loses it) retries until a value
    // is chosen.
    c.faults = Faults::calm();
    c.run_until(2000, |c| !chosen(c).is_empty() && c.in_flight() == 0);
    let values = chosen(&c);
    if values.len() > 1 {
        return Err(format!("seed {seed}: two values chosen: {values:?}"));
    }
    let lost = holders.iter().all(|(node, at)| c.incarnation(*node) > *at);
    if values.is_empty() && !lost {
        return Err(format!(
            "seed {seed}: a node kept its request and nothing was chosen"
        ));
    }
    Ok((values.into_iter().next(), c.crashes))
}

fn seeds(default: u64) -> u64 {
    std::env::var("SYNOD_PAXOS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn duelling_proposers_choose_at_most_one_value() {
    let seeds = seeds(2000);
    let (mut decided, mut crashes, mut undecided) = (0, 0, Vec::new());
    for seed in 0..seeds {
        let (value, crashed) = run(seed, false).unwrap();
        decided += u64::from(value.is_some());
        if value.is_none() {
            undecided.push(seed);
        }
        crashes += crashed;
    }
    println!(
        "paxos nodes: {seeds} seeds, {decided} decided (not: {undecided:?}, every request lost \
         in a crash), {crashes} crashes, 0 with two values chosen"
    );
    assert!(decided * 10 > seeds * 9, "most runs decide: {decided}");
}

#[test]
fn an_acceptor_hiding_its_accepted_value_is_caught() {
    let caught = (0..2000).find(|&seed| run(seed, true).is_err());
    let seed = caught.expect("caught within 2000 seeds");
    println!(
        "broken acceptor caught at seed {seed}: {}",
        run(seed, true).unwrap_err()
    );
}

#[test]
fn a_restored_acceptor_keeps_its_promise() {
    let mut a: Acceptor<u64> = Acceptor::new();
    let b = |round| Ballot { round, node: n(9) };
    a.handle(PaxosMessage::Prepare { ballot: b(5) });
    let mut restored = Acceptor::restore(a.state().clone());
    let reply = restored.handle(PaxosMessage::Accept {
        ballot: b(4),
        value: 1,
    });
    assert!(matches!(
        reply,
        Some(PaxosMessage::Accepted { ok: false, .. })
    ));
}

/// Drains `node`'s effects.
fn effects(node: &mut PaxosNode<u64>) -> Vec<synod_node::EffectOf<PaxosNode<u64>>> {
    std::iter::from_fn(|| node.poll()).collect()
}

/// Hands `node` a `prepare` from node 1, twice, with a wake-up and (if given) a client
/// request between, and checks the rule every Paxos node keeps: the promise's persist is
/// all that leaves (with a wake-up) until it is acknowledged, and the promise to node 1
/// leaves once it is. Returns the persisted write, for the caller to check.
pub fn promise_waits_for_its_persist<P>(
    node: &mut P,
    prepare: &P::Message,
    request: Option<P::Request>,
    is_promise_ok: impl Fn(&P::Message) -> bool,
) -> P::Write
where
    P: Protocol,
    P::Message: Clone + std::fmt::Debug,
    P::Request: std::fmt::Debug,
    P::Response: std::fmt::Debug,
    P::Write: Clone + std::fmt::Debug,
    P::Apply: std::fmt::Debug,
{
    let now = Time::from_millis(1);
    let from = n(1);
    let drain = |node: &mut P| std::iter::from_fn(|| node.poll()).collect::<Vec<_>>();
    node.handle(
        now,
        Input::Message {
            from,
            message: prepare.clone(),
        },
    );
    let out = drain(node);
    let [Effect::Persist { token, write }] = out.as_slice() else {
        panic!("a persist and nothing else: {out:?}");
    };
    let (token, write) = (*token, write.clone());
    // Unacknowledged, nothing leaves: not after a wake-up, a retried prepare, or a request.
    node.handle(now, Input::Wake);
    node.handle(
        now,
        Input::Message {
            from,
            message: prepare.clone(),
        },
    );
    if let Some(request) = request {
        node.handle(
            now,
            Input::Request {
                id: RequestId(1),
                request,
            },
        );
    }
    let out = drain(node);
    assert!(
        out.iter()
            .all(|e| matches!(e, Effect::Persist { .. } | Effect::WakeAt(_))),
        "{out:?}"
    );
    node.handle(now, Input::Persisted(token));
    let out = drain(node);
    assert!(
        out.iter().any(
            |e| matches!(e, Effect::Send { to, message } if *to == from && is_promise_ok(message))
        ),
        "the promise leaves once durable: {out:?}"
    );
    write
}

#[test]
fn a_promise_is_not_sent_before_its_persist_is_acknowledged() {
    let mut node = PaxosNode::<u64>::new(config(n(2), 3, 1));
    let ballot = Ballot {
        round: 1,
        node: n(1),
    };
    let write =
        promise_waits_for_its_persist(&mut node, &PaxosMessage::Prepare { ballot }, Some(7), |m| {
            matches!(m, PaxosMessage::Promise { ok: true, .. })
        });
    assert_eq!(write.promised, Some(ballot));
}

#[test]
fn a_restarted_node_never_proposes_a_ballot_it_used_before() {
    // Node 1 proposes; its prepare must not leave before its own promise of the ballot
    // is durable, or a crash could make it use the ballot again for another value.
    let now = Time::from_millis(1);
    let mut node = PaxosNode::<u64>::new(config(n(1), 3, 1));
    node.handle(
        now,
        Input::Request {
            id: RequestId(1),
            request: 10,
        },
    );
    let out = effects(&mut node);
    assert!(
        !out.iter().any(|e| matches!(e, Effect::Send { .. })),
        "no prepare before the node's own promise is durable: {out:?}"
    );
    let Some((token, state)) = out.iter().find_map(|e| match e {
        Effect::Persist { token, write } => Some((*token, write.clone())),
        _ => None,
    }) else {
        panic!("the node persists its own promise: {out:?}");
    };
    node.handle(now, Input::Persisted(token));
    let sent: Vec<Ballot> = effects(&mut node)
        .into_iter()
        .filter_map(|e| match e {
            Effect::Send {
                message: PaxosMessage::Prepare { ballot },
                ..
            } => Some(ballot),
            _ => None,
        })
        .collect();
    assert_eq!(sent.len(), 2, "prepares to both peers");
    let mut restarted = PaxosNode::<u64>::restore(config(n(1), 3, 1), state);
    restarted.handle(
        now,
        Input::Request {
            id: RequestId(2),
            request: 20,
        },
    );
    assert!(
        restarted.ballot() > sent[0],
        "{:?} after {:?}",
        restarted.ballot(),
        sent[0]
    );
}

#[test]
fn a_busy_node_refuses_requests_past_its_limit() {
    let now = Time::from_millis(1);
    let mut node = PaxosNode::<u64>::new(config(n(1), 3, 1).requests_max(1));
    node.handle(
        now,
        Input::Request {
            id: RequestId(1),
            request: 10,
        },
    );
    node.handle(
        now,
        Input::Request {
            id: RequestId(2),
            request: 20,
        },
    );
    let out = effects(&mut node);
    let token = out.iter().find_map(|e| match e {
        Effect::Persist { token, .. } => Some(*token),
        _ => None,
    });
    node.handle(now, Input::Persisted(token.unwrap()));
    let replies: Vec<_> = effects(&mut node)
        .into_iter()
        .filter_map(|e| match e {
            Effect::Reply { id, response } => Some((id, response)),
            _ => None,
        })
        .collect();
    assert_eq!(replies, [(RequestId(2), Err(RequestError::Busy))]);
}
