//! The generic adapter, [`ProtocolNode`], seen from inside a state machine: a probe
//! protocol records every input it is handed and the tests check what the contract
//! promises it (group commit acknowledged by the last token, one wake-up never delivered
//! early, time never going back, a failed sync ending the incarnation).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use synod_node::{Effect, EffectOf, Input, InputOf, PersistToken, Protocol, Time};
use synod_sim::{
    Action, Boot, ClientId, Completion, Counter, Disk, Fault, FaultKind, Invocation, NemesisConfig,
    NodeId, ProtocolNode, ProtocolStore, SimConfig, SimRng, SimTime, Simulation, Workload,
};

/// Persists written by each request.
const PERSISTS_PER_REQUEST: u64 = 3;
/// A wake-up asked for and at once replaced by a later one.
const WAKE_REPLACED_AFTER: Duration = Duration::from_millis(3);
const WAKE_AFTER: Duration = Duration::from_millis(7);

/// What the probe saw, across every node and incarnation.
#[derive(Debug, Default)]
struct Seen {
    /// Every `Persisted` token handed in.
    persisted: Vec<PersistToken>,
    /// Replies sent, and requests handed in.
    replies: u64,
    requests: u64,
    /// Wake-ups handed in, and those that came before the time asked for.
    wakes: u64,
    early_wakes: Vec<(Time, Time)>,
    /// A time handed in was before an earlier one of the same incarnation.
    went_back: Vec<(Time, Time)>,
    /// State machines built (first starts, restarts, incarnations ended by failed syncs).
    built: u64,
    /// Persists written to disk.
    written: u64,
    /// Writes that failed because the disk had halted under them.
    halted_writes: u64,
    /// The latest time handed to any state machine.
    latest: Time,
}

struct Probe {
    id: NodeId,
    seen: Rc<RefCell<Seen>>,
    last_now: Time,
    last_token: PersistToken,
    wake_at: Option<Time>,
    waiting: Vec<(PersistToken, synod_node::RequestId)>,
    effects: VecDeque<EffectOf<Probe>>,
}

impl Protocol for Probe {
    type Message = Infallible;
    type Request = ();
    type Response = ();
    type Write = u64;
    type Apply = Infallible;

    fn id(&self) -> NodeId {
        self.id
    }

    fn handle(&mut self, now: Time, input: InputOf<Self>) {
        let seen_rc = Rc::clone(&self.seen);
        let mut seen = seen_rc.borrow_mut();
        if now < self.last_now {
            seen.went_back.push((self.last_now, now));
        }
        self.last_now = now;
        seen.latest = seen.latest.max(now);
        match input {
            Input::Request { id, .. } => {
                seen.requests += 1;
                for _ in 0..PERSISTS_PER_REQUEST {
                    self.last_token = self.last_token.next();
                    let token = self.last_token;
                    self.effects.push_back(Effect::Persist {
                        token,
                        write: token.0,
                    });
                }
                self.waiting.push((self.last_token, id));
            }
            Input::Persisted(token) => {
                seen.persisted.push(token);
                let done = self.waiting.iter().take_while(|(t, _)| *t <= token).count();
                for (_, id) in self.waiting.drain(..done) {
                    self.effects.push_back(Effect::Reply { id, response: () });
                }
            }
            Input::Wake => {
                seen.wakes += 1;
                let asked = self.wake_at.take().expect("a wake-up was asked for");
                if now < asked {
                    seen.early_wakes.push((asked, now));
                }
                self.arm(now);
            }
            Input::Message { message, .. } => match message {},
        }
    }

    fn poll(&mut self) -> Option<EffectOf<Self>> {
        let effect = self.effects.pop_front();
        if let Some(Effect::Reply { .. }) = effect {
            self.seen.borrow_mut().replies += 1;
        }
        effect
    }
}

impl Probe {
    /// Asks for a wake-up, then replaces it with a later one: only the later may come.
    fn arm(&mut self, now: Time) {
        self.effects
            .push_back(Effect::WakeAt(now + WAKE_REPLACED_AFTER));
        let at = now + WAKE_AFTER;
        self.effects.push_back(Effect::WakeAt(at));
        self.wake_at = Some(at);
    }
}

struct ProbeStore(Rc<RefCell<Seen>>);

impl ProtocolStore for ProbeStore {
    type Protocol = Probe;

    fn recover(&mut self, boot: Boot<'_>) -> io::Result<Probe> {
        self.0.borrow_mut().built += 1;
        let mut probe = Probe {
            id: boot.id,
            seen: Rc::clone(&self.0),
            last_now: boot.now,
            last_token: PersistToken::default(),
            wake_at: None,
            waiting: Vec::new(),
            effects: VecDeque::new(),
        };
        probe.arm(boot.now);
        Ok(probe)
    }

    fn write(&mut self, disk: &mut Disk, write: &u64) -> io::Result<()> {
        self.0.borrow_mut().written += 1;
        let result = disk.append("log", &write.to_le_bytes());
        if result.is_err() && disk.is_halted() {
            self.0.borrow_mut().halted_writes += 1;
        }
        result
    }
}

/// Clients that send the probe empty requests.
struct Poke;

impl Workload<ProtocolNode<ProbeStore>> for Poke {
    type Input = ();
    type Output = ();

    fn invoke(
        &mut self,
        _: ClientId,
        nodes: usize,
        rng: &mut SimRng,
    ) -> Option<Invocation<(), ()>> {
        let node = NodeId::new(rng.below(nodes as u64) + 1);
        Some(Invocation {
            node,
            request: (),
            input: (),
        })
    }

    fn complete(&mut self, _: ClientId, _: &(), _: &()) -> Completion<()> {
        Completion::Ok(())
    }
}

fn simulation(
    seed: u64,
    nemesis: NemesisConfig,
) -> (
    Simulation<ProtocolNode<ProbeStore>, Poke>,
    Rc<RefCell<Seen>>,
) {
    let config = SimConfig::builder(3)
        .clients(4)
        .safety_time(Duration::from_millis(300))
        .nemesis(nemesis)
        .build()
        .expect("valid config");
    let seen = Rc::new(RefCell::new(Seen::default()));
    let store = Rc::clone(&seen);
    let sim = Simulation::new(
        config,
        seed,
        move |_| ProtocolNode::new(ProbeStore(Rc::clone(&store))),
        Poke,
    );
    (sim, seen)
}

#[test]
fn one_sync_covers_every_persist_of_a_drain_and_is_acknowledged_by_the_last_token() {
    let (sim, seen) = simulation(1, NemesisConfig::disabled());
    let report = sim.run();
    let seen = seen.borrow();
    assert!(seen.requests > 20, "the clients ran: {seen:?}");
    assert_eq!(seen.written, seen.requests * PERSISTS_PER_REQUEST);
    // Every acknowledgement names the last persist of a request: the three writes of one
    // drain went to disk under one sync.
    assert!(!seen.persisted.is_empty());
    for token in &seen.persisted {
        assert_eq!(
            token.0 % PERSISTS_PER_REQUEST,
            0,
            "{token} acknowledged alone"
        );
    }
    assert!(seen.replies > 0 && seen.replies <= seen.requests);
    assert!(report.history.ok_count() > 0);
}

#[test]
fn wake_is_never_early_and_time_never_goes_back_under_clock_faults() {
    let nemesis = NemesisConfig::builder()
        .kinds(&[
            FaultKind::ClockJump,
            FaultKind::ClockDrift,
            FaultKind::Pause,
            FaultKind::Crash,
        ])
        .build();
    let (mut jumps, mut wakes) = (0, 0);
    for seed in 0..20 {
        let (sim, seen) = simulation(seed, nemesis.clone());
        let report = sim.run();
        jumps += report.coverage.get(Counter::ClockJump);
        let seen = seen.borrow();
        assert!(seen.wakes > 0, "seed {seed}: never woken");
        wakes += seen.wakes;
        assert_eq!(seen.early_wakes, [], "seed {seed}: woken early");
        assert_eq!(seen.went_back, [], "seed {seed}: time went back");
    }
    assert!(jumps > 0, "the clocks jumped");
    assert!(wakes > 20 * 20, "woken {wakes} times");
}

#[test]
fn a_failed_sync_ends_the_incarnation_and_rebuilds_the_state_machine_from_disk() {
    let node = NodeId::new(1);
    let (sim, seen) = simulation(3, NemesisConfig::disabled());
    let sim = sim.schedule(SimTime::from_micros(100_000), Action::FailNextSync(node));
    let (unfailed, unfailed_seen) = simulation(3, NemesisConfig::disabled());
    sim.run();
    unfailed.run();
    // Three first starts, and one more state machine for node 1 after its failed sync.
    assert_eq!(unfailed_seen.borrow().built, 3);
    assert_eq!(seen.borrow().built, 4);
}

#[test]
fn a_step_of_the_wall_clock_does_not_move_the_time_a_state_machine_is_handed() {
    // `now` is the node's monotonic clock: a 60 s step of its wall clock (an NTP step) in a
    // run of well under 10 s of virtual time must not make every timeout fire at once.
    let (sim, seen) = simulation(3, NemesisConfig::disabled());
    sim.schedule(
        SimTime::from_micros(100_000),
        Action::ClockJump(NodeId::new(1), 60_000_000),
    )
    .run();
    let latest = seen.borrow().latest;
    assert!(
        latest > Time::ZERO,
        "the state machine was never handed a time"
    );
    assert!(
        latest < Time::from_secs(10),
        "now leapt to {latest:?} with the wall clock"
    );
}

/// The nemesis's crashes part-way through a node's writes: the disk halts after a few more
/// storage operations, the write that meets the halt fails, and the simulator crashes the
/// node at the end of that event and restarts it later; the run goes on without a failure.
#[test]
fn a_crash_armed_part_way_through_the_writes_fires_inside_a_write_and_the_node_restarts() {
    const SEEDS: u64 = 20;
    let (mut armed, mut crashes, mut restarts, mut halted_writes) = (0, 0, 0, 0);
    for seed in 0..SEEDS {
        let nemesis = NemesisConfig::builder()
            .swarm(false)
            .kinds(&[FaultKind::Crash])
            .crashed_nodes_max(1)
            .mid_write_crash_percent(100)
            .build();
        let (sim, seen) = simulation(seed, nemesis);
        let report = sim.run();
        assert!(
            report.failure.is_none(),
            "seed {seed}: {:?}",
            report.failure
        );
        for entry in report.faults.entries() {
            match entry.fault {
                Fault::CrashArmed { .. } => armed += 1,
                Fault::Crash { .. } => crashes += 1,
                Fault::Restart { .. } => restarts += 1,
                _ => {}
            }
        }
        halted_writes += seen.borrow().halted_writes;
    }
    println!(
        "mid-write crashes: {armed} armed, {crashes} crashes, {restarts} restarts, \
         {halted_writes} writes stopped by them"
    );
    assert!(
        armed > 0 && halted_writes > 0,
        "{armed} armed, {halted_writes} writes stopped"
    );
    // Only armed crashes are enabled; each that fired crashed its node, which restarted
    // (but for the last crash of a run, which may end with its node still down).
    assert!(
        crashes > 0 && crashes <= armed,
        "{crashes} crashes of {armed} armed"
    );
    assert!(
        restarts <= crashes && restarts + SEEDS >= crashes,
        "{restarts} restarts after {crashes} crashes"
    );
}
