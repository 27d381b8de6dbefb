//! A harness that runs a cluster of `Member`s under synod-sim through `ProtocolNode`, and
//! records what each member handed up (its `MemberEvent`s) and its views at every round.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use synod_membership::{
    Member, MemberConfig, MemberConfigBuilder, MemberEvent, MemberState, MemberWrite, ViewChange,
};
use synod_node::{NodeId, Time};
use synod_sim::{
    Action, Boot, Counter, DelayDistribution, Disk, LinkConfig, NemesisConfig, NoClients,
    ProtocolNode, ProtocolStore, SimConfig, SimTime, Simulation,
};

/// The protocol period of the simulated clusters.
pub const PERIOD_MS: u64 = 100;

/// Builds each member's configuration from the default one for the test.
pub type Configure = Rc<dyn Fn(MemberConfigBuilder) -> MemberConfigBuilder>;

/// The durable generation: one 8-byte record per start; the largest whole record wins.
pub struct Store {
    id: NodeId,
    configure: Configure,
    events: Rc<RefCell<Vec<(NodeId, MemberEvent)>>>,
    told: Rc<RefCell<Vec<(NodeId, NodeId, Time)>>>,
    merges: Rc<RefCell<Vec<(NodeId, Merge)>>>,
}

/// A merge a member handed up ([`ViewChange::Merged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merge {
    pub group: NodeId,
    pub other: NodeId,
    pub winner: NodeId,
    pub at: Time,
}

impl ProtocolStore for Store {
    type Protocol = Member;

    fn recover(&mut self, boot: Boot<'_>) -> io::Result<Member> {
        let last = last_generation(boot.disk);
        let seed = boot.rng.next_u64();
        let builder = MemberConfig::builder(boot.id, seed)
            .seeds([NodeId::new(1), NodeId::new(2)])
            .probe(PERIOD_MS, PERIOD_MS / 2)
            .gossip(PERIOD_MS / 5, 3)
            .push_pull_interval_ms(5 * PERIOD_MS)
            .dead_reap_ms(300 * PERIOD_MS);
        let config = (self.configure)(builder)
            .build()
            .expect("valid test config");
        Ok(Member::start(config, last))
    }

    fn write(&mut self, disk: &mut Disk, write: &MemberWrite) -> io::Result<()> {
        write_generation(disk, write)
    }

    fn apply(&mut self, change: ViewChange) {
        match change {
            ViewChange::Member(event) => self.events.borrow_mut().push((self.id, event)),
            ViewChange::Coordinator { id, at } => self.told.borrow_mut().push((self.id, id, at)),
            ViewChange::Merged {
                group,
                other,
                winner,
                at,
            } => self.merges.borrow_mut().push((
                self.id,
                Merge {
                    group,
                    other,
                    winner,
                    at,
                },
            )),
            _ => {}
        }
    }
}

/// The largest generation a member's disk holds whole: one 8-byte record per start.
pub fn last_generation(disk: &mut Disk) -> u64 {
    let bytes = disk.read("generation").unwrap_or_default();
    bytes
        .chunks_exact(8)
        .map(|r| u64::from_le_bytes(r.try_into().expect("8 bytes")))
        .max()
        .unwrap_or(0)
}

/// Appends a start's generation to the member's disk.
pub fn write_generation(disk: &mut Disk, write: &MemberWrite) -> io::Result<()> {
    disk.append("generation", &write.generation.to_le_bytes())
}

/// What a scenario is: its size, network, scripted faults and length.
pub struct Scenario {
    pub nodes: usize,
    pub seed: u64,
    pub configure: Configure,
    pub link: LinkConfig,
    pub links: Vec<(NodeId, NodeId, LinkConfig)>,
    pub actions: Vec<(Duration, Action)>,
    pub duration: Duration,
    /// The nemesis (off unless set).
    pub nemesis: NemesisConfig,
    /// With a bound: after the safety phase every fault is healed, and the run fails unless
    /// every member is up and all views agree on all members within it.
    pub liveness: Option<Duration>,
}

/// One member's view at a round: the members it believes live (alive or suspected).
pub type Views = Vec<(NodeId, Vec<NodeId>)>;

/// Every member's view at a round, each as a hash of the members it believes live (as
/// [`view_hash`] makes it), so that a run of hundreds of members over hundreds of rounds
/// keeps a few bytes per member and round instead of the whole view.
pub type ViewHashes = Vec<(NodeId, u64)>;

/// The hash of a view (the members believed live, in order) that rounds keep.
pub fn view_hash(live: &[NodeId]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    live.hash(&mut hasher);
    hasher.finish()
}

/// What a run left behind.
pub struct Outcome {
    /// Every event handed up, in order, with the member that handed it up.
    pub events: Vec<(NodeId, MemberEvent)>,
    /// At each round boundary (every `PERIOD_MS`): the time and every running member's view.
    pub rounds: Vec<(Duration, ViewHashes)>,
    /// Every coordinator change a member was told of: (member, new coordinator, when).
    pub told: Vec<(NodeId, NodeId, Time)>,
    /// Every merge a member handed up, with the member.
    pub merges: Vec<(NodeId, Merge)>,
    /// At each round boundary: every running member's coordinator.
    pub coordinators: Vec<(Duration, Vec<(NodeId, NodeId)>)>,
    /// Every running member's whole view (dead tombstones too) at the last round.
    pub last_known: Views,
    /// The largest number of entries and gossip updates any member held at any round.
    pub known_max: usize,
    pub gossip_max: usize,
    /// Messages and bytes sent by members, summed over the members running at the end.
    pub messages_sent: u64,
    pub bytes_sent: u64,
    /// How many crashes, pauses and partitions the nemesis applied.
    pub crashes: u64,
    pub pauses: u64,
    pub partitions: u64,
    /// The run's trace hash (equal for equal seeds).
    pub trace_hash: u64,
    /// Why the run failed (an invariant, or no agreement within the liveness bound).
    pub failure: Option<String>,
}

impl Scenario {
    pub fn new(nodes: usize, seed: u64) -> Self {
        Scenario {
            nodes,
            seed,
            configure: Rc::new(|b| b),
            link: LinkConfig::new(DelayDistribution::uniform(
                Duration::from_millis(1),
                Duration::from_millis(5),
            )),
            links: Vec::new(),
            actions: Vec::new(),
            duration: Duration::from_secs(10),
            nemesis: NemesisConfig::disabled(),
            liveness: None,
        }
    }

    pub fn configure(
        mut self,
        f: impl Fn(MemberConfigBuilder) -> MemberConfigBuilder + 'static,
    ) -> Self {
        self.configure = Rc::new(f);
        self
    }

    pub fn at(mut self, at: Duration, action: Action) -> Self {
        self.actions.push((at, action));
        self
    }

    pub fn run(self) -> Outcome {
        let mut builder = SimConfig::builder(self.nodes)
            .clients(0)
            .safety_time(self.duration)
            .nemesis(self.nemesis)
            .link(self.link);
        if let Some(bound) = self.liveness {
            builder = builder.liveness_time_max(bound);
        }
        for (from, to, link) in self.links {
            builder = builder.link_between(from, to, link);
        }
        let config = builder.build().expect("valid sim config");
        let events = Rc::new(RefCell::new(Vec::new()));
        let rounds = Rc::new(RefCell::new(Vec::new()));
        let maxima = Rc::new(RefCell::new((0usize, 0usize, 0u64, 0u64)));
        let last_known = Rc::new(RefCell::new(Vec::new()));
        let coordinators = Rc::new(RefCell::new(Vec::new()));
        let observed_coordinators = coordinators.clone();
        let observed_known = last_known.clone();
        let configure = self.configure.clone();
        let factory_events = events.clone();
        let told = Rc::new(RefCell::new(Vec::new()));
        let factory_told = told.clone();
        let merges = Rc::new(RefCell::new(Vec::new()));
        let factory_merges = merges.clone();
        let mut sim = Simulation::new(
            config,
            self.seed,
            move |id| {
                ProtocolNode::new(Store {
                    id,
                    configure: configure.clone(),
                    events: factory_events.clone(),
                    told: factory_told.clone(),
                    merges: factory_merges.clone(),
                })
            },
            NoClients,
        );
        for (at, action) in self.actions {
            sim = sim.schedule(SimTime::from_micros(at.as_micros() as u64), action);
        }
        let observed_rounds = rounds.clone();
        let observed_maxima = maxima.clone();
        let mut next_round = 0u64;
        let mut generations = vec![0u64; self.nodes + 1];
        let sim = sim.invariant(move |view| {
            // Two starts of a member never share a generation, whatever a crash did to the
            // unsynced write of the last one.
            for (id, node) in view.nodes() {
                if let Some(member) = node.protocol() {
                    // The last generation a start of this member took part with: a start
                    // not ready yet (a new one) must have a larger one.
                    let used = &mut generations[id.get() as usize];
                    let reused = if member.is_ready() {
                        member.generation() < *used
                    } else {
                        member.generation() <= *used
                    };
                    if reused {
                        return Err(format!(
                            "{id} starts with generation {} after it used {used}",
                            member.generation()
                        ));
                    }
                    if member.is_ready() {
                        *used = member.generation();
                    }
                }
            }
            let now = view.now().as_micros();
            if now < next_round {
                return Ok(());
            }
            next_round = (now / 1_000 / PERIOD_MS + 1) * PERIOD_MS * 1_000;
            let mut views = Vec::new();
            let mut m = observed_maxima.borrow_mut();
            let (mut messages, mut bytes) = (0, 0);
            let mut known = Vec::new();
            let mut leaders = Vec::new();
            for (id, node) in view.nodes() {
                if view.is_paused(id) {
                    continue;
                }
                let Some(member) = node.protocol() else {
                    continue;
                };
                m.0 = m.0.max(member.known());
                m.1 = m.1.max(member.gossip_queued());
                messages += member.stats().messages_sent;
                bytes += member.stats().bytes_sent;
                if member.is_ready() {
                    views.push((id, view_hash(&member.live_members())));
                    known.push((id, member.members().iter().map(|m| m.id).collect()));
                    leaders.push((id, member.coordinator()));
                }
            }
            *observed_known.borrow_mut() = known;
            observed_coordinators
                .borrow_mut()
                .push((Duration::from_micros(now), leaders));
            m.2 = messages;
            m.3 = bytes;
            observed_rounds
                .borrow_mut()
                .push((Duration::from_micros(now), views));
            Ok(())
        });
        let liveness = self.liveness.is_some();
        let sim = if liveness {
            let everyone: Vec<NodeId> = (1..=self.nodes as u64).map(NodeId::new).collect();
            sim.progress(move |view| {
                everyone.iter().all(|&id| {
                    !view.is_paused(id)
                        && view
                            .node(id)
                            .and_then(|node| node.protocol())
                            .is_some_and(|m| m.is_ready() && m.live_members() == everyone)
                })
            })
        } else {
            sim
        };
        let report = sim.run();
        let failure = report.failure.as_ref().map(|f| format!("{f:?}"));
        assert!(
            liveness || failure.is_none(),
            "seed {}: run failed: {failure:?}",
            self.seed
        );
        let (known_max, gossip_max, messages_sent, bytes_sent) = *maxima.borrow();
        Outcome {
            events: events.take(),
            told: told.take(),
            merges: merges.take(),
            last_known: last_known.take(),
            coordinators: coordinators.take(),
            rounds: rounds.take(),
            known_max,
            gossip_max,
            messages_sent,
            bytes_sent,
            crashes: report.coverage.get(Counter::Crash),
            pauses: report.coverage.get(Counter::Pause),
            partitions: report.coverage.get(Counter::PartitionHealed),
            trace_hash: report.trace_hash,
            failure,
        }
    }
}

impl Outcome {
    /// When member `observer` first handed up `state` for `id` at or after `after`.
    pub fn first(
        &self,
        observer: NodeId,
        id: NodeId,
        state: MemberState,
        after: Duration,
    ) -> Option<Duration> {
        self.events
            .iter()
            .filter(|(o, e)| *o == observer && e.id == id && e.state == Some(state))
            .map(|(_, e)| e.at.since_epoch())
            .find(|&at| at >= after)
    }

    /// Every time any member handed up `Dead` for a member in `live`, after `after`.
    pub fn deaths_of(&self, live: &[NodeId], after: Duration) -> usize {
        self.events
            .iter()
            .filter(|(_, e)| {
                e.state == Some(MemberState::Dead)
                    && live.contains(&e.id)
                    && e.at.since_epoch() >= after
            })
            .count()
    }

    /// The coordinators the members of `group` name at the last round at or before `at`.
    pub fn coordinators_of(&self, group: &[NodeId], at: Duration) -> Vec<NodeId> {
        let Some((_, round)) = self.coordinators.iter().rev().find(|(t, _)| *t <= at) else {
            return Vec::new();
        };
        let mut named: Vec<NodeId> = round
            .iter()
            .filter(|(member, _)| group.contains(member))
            .map(|&(_, coordinator)| coordinator)
            .collect();
        named.sort_unstable();
        named.dedup();
        named
    }

    /// The first round at or after `after` from which every view equals `expected` (for
    /// every member in it) until the end.
    pub fn agreed_from(&self, expected: &[NodeId], after: Duration) -> Option<Duration> {
        let mut since = None;
        let hash = view_hash(expected);
        for (at, views) in &self.rounds {
            if *at < after {
                continue;
            }
            // Views are in id order (the simulator's node order).
            let agree = expected.iter().all(|id| {
                views
                    .binary_search_by_key(id, |&(v, _)| v)
                    .is_ok_and(|i| views[i].1 == hash)
            });
            match (agree, since) {
                (true, None) => since = Some(*at),
                (false, _) => since = None,
                _ => {}
            }
        }
        since
    }
}

/// Node `i` (from 1).
pub fn n(i: u64) -> NodeId {
    NodeId::new(i)
}

/// `ms` milliseconds.
pub fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Protocol periods in `d`.
pub fn periods(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0 / PERIOD_MS as f64
}

/// The mean and 99th percentile of `xs`.
pub fn mean_p99(xs: &mut [f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    xs.sort_by(f64::total_cmp);
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let at = ((xs.len() as f64 * 0.99).ceil() as usize).clamp(1, xs.len()) - 1;
    (mean, xs[at])
}
