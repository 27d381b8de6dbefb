//! The fault model seen from inside a node: a probe node that pings its peers, writes and
//! syncs its disk, and records what it observes.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use synod_sim::{
    Action, ClientId, Completion, ConfigError, Context, Counter, CrashMode, Failure, FaultKind,
    Invocation, NemesisConfig, NoClients, Node, NodeId, Outcome, RequestId, SimConfig, SimRng,
    SimTime, Simulation, SyncToken, TimerId, Workload,
};

#[derive(Debug, Default, Clone)]
pub(crate) struct Observed {
    /// Per node: pings received.
    received: Vec<u64>,
    /// Per node: pings sent.
    sent: Vec<u64>,
    /// Per node: bytes known durable (set on sync completion).
    synced: Vec<usize>,
    /// Per node: starts.
    starts: Vec<u64>,
    /// A node saw its clock go backwards.
    clock_went_back: bool,
}

struct Probe {
    seen: Rc<RefCell<Observed>>,
    last_now: SimTime,
    written: usize,
}

impl Node for Probe {
    type Message = u64;
    type Request = ();
    type Response = ();

    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        let len = ctx.disk().read("f").map_or(0, |f| f.len());
        let me = pos(ctx.id());
        let mut seen = self.seen.borrow_mut();
        assert!(len >= seen.synced[me], "restart lost synced bytes");
        seen.starts[me] += 1;
        drop(seen);
        self.written = len;
        self.last_now = ctx.now();
        ctx.set_timer(Duration::from_millis(1), TimerId(0));
    }

    fn on_message(&mut self, ctx: &mut Context<'_, Self>, _from: NodeId, _msg: u64) {
        self.seen.borrow_mut().received[pos(ctx.id())] += 1;
    }

    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, _: TimerId) {
        if ctx.now() < self.last_now {
            self.seen.borrow_mut().clock_went_back = true;
        }
        self.last_now = ctx.now();
        let me = ctx.id();
        for to in ctx.node_ids().filter(|&n| n != me) {
            ctx.send(to, 1);
            self.seen.borrow_mut().sent[pos(me)] += 1;
        }
        ctx.disk().append("f", &[7; 16]).expect("simulated disk");
        self.written += 16;
        ctx.sync(SyncToken(self.written as u64));
        ctx.set_timer(Duration::from_millis(1), TimerId(0));
    }

    fn on_request(&mut self, _: &mut Context<'_, Self>, _: RequestId, _: ()) {}

    fn on_synced(&mut self, ctx: &mut Context<'_, Self>, token: SyncToken) {
        let me = pos(ctx.id());
        let mut seen = self.seen.borrow_mut();
        seen.synced[me] = seen.synced[me].max(token.0 as usize);
    }
}

pub(crate) fn probe_run(
    nemesis: NemesisConfig,
    seed: u64,
) -> (synod_sim::RunReport<(), ()>, Observed) {
    let config = SimConfig::builder(5)
        .clients(0)
        .safety_time(Duration::from_millis(500))
        .nemesis(nemesis)
        .build()
        .expect("valid");
    probe_run_with(config, seed)
}

pub(crate) fn probe_run_with(
    config: SimConfig,
    seed: u64,
) -> (synod_sim::RunReport<(), ()>, Observed) {
    let n = config.nodes();
    let seen = Rc::new(RefCell::new(Observed {
        received: vec![0; n],
        sent: vec![0; n],
        synced: vec![0; n],
        starts: vec![0; n],
        clock_went_back: false,
    }));
    let for_nodes = Rc::clone(&seen);
    let report = Simulation::new(
        config,
        seed,
        move |_| Probe {
            seen: Rc::clone(&for_nodes),
            last_now: SimTime::ZERO,
            written: 0,
        },
        NoClients,
    )
    // A trivially true progress condition: the run heals everything, then ends.
    .progress(|_| true)
    .run();
    let observed = seen.borrow().clone();
    (report, observed)
}

/// Where node `id` sits in a test's per-node tables.
fn pos(id: NodeId) -> usize {
    (id.get() - 1) as usize
}

fn only(kinds: &[FaultKind]) -> NemesisConfig {
    NemesisConfig::builder().swarm(false).kinds(kinds).build()
}

#[test]
fn without_faults_every_message_arrives_and_nothing_fires() {
    let (report, seen) = probe_run(NemesisConfig::disabled(), 1);
    assert_eq!(report.failure, None);
    assert_eq!(report.coverage, synod_sim::Coverage::default());
    let sent: u64 = seen.sent.iter().sum();
    let received: u64 = seen.received.iter().sum();
    // Messages still in flight when the run ends are at most one tick's worth plus the tail.
    assert!(
        sent > 1000 && sent - received < 100,
        "sent {sent} received {received}"
    );
    assert_eq!(seen.starts, vec![1; 5]);
}

#[test]
fn partitions_of_every_shape_cut_messages_and_heal() {
    let mut coverage = synod_sim::Coverage::default();
    for seed in 0..10 {
        let (report, _) = probe_run(only(&[FaultKind::Partition]), seed);
        coverage.merge(&report.coverage);
        assert_eq!(report.coverage.get(Counter::Crash), 0);
        assert_eq!(report.coverage.get(Counter::MessageLost), 0);
    }
    for c in [
        Counter::PartitionHalves,
        Counter::PartitionIsolateOne,
        Counter::PartitionOneWay,
        Counter::PartitionBridge,
        Counter::PartitionMajoritiesRing,
        Counter::PartitionHealed,
        Counter::MessageCut,
    ] {
        assert!(coverage.get(c) > 0, "{} never fired", c.name());
    }
}

#[test]
fn a_shape_that_cuts_no_link_is_not_counted_as_a_partition() {
    // On 3 nodes a majorities ring cuts nothing (each node's two ring neighbours are all
    // the others): the nemesis draws it but must neither count nor log a partition.
    let mut coverage = synod_sim::Coverage::default();
    let mut starts = 0;
    for seed in 0..10 {
        let config = SimConfig::builder(3)
            .clients(0)
            .safety_time(Duration::from_millis(500))
            .nemesis(only(&[FaultKind::Partition]))
            .build()
            .expect("valid");
        let (report, _) = probe_run_with(config, seed);
        coverage.merge(&report.coverage);
        for e in report.faults.entries() {
            if let synod_sim::Fault::PartitionStart { shape, cut } = &e.fault {
                assert!(cut.any(), "seed {seed}: {shape:?} started but cut no link");
                starts += 1;
            }
        }
    }
    assert_eq!(
        coverage.get(Counter::PartitionMajoritiesRing),
        0,
        "{coverage}"
    );
    assert!(!synod_sim::PartitionShape::MajoritiesRing.cuts_links(3));
    for c in [
        Counter::PartitionHalves,
        Counter::PartitionIsolateOne,
        Counter::PartitionOneWay,
        Counter::PartitionBridge,
        Counter::PartitionHealed,
        Counter::MessageCut,
    ] {
        assert!(coverage.get(c) > 0, "{} never fired", c.name());
    }
    assert!(starts > 0);
}

#[test]
fn crashes_keep_synced_data_and_restart_through_on_start() {
    let mut lost = 0;
    for mode in CrashMode::ALL {
        let nemesis = NemesisConfig::builder()
            .swarm(false)
            .kinds(&[FaultKind::Crash])
            .crash_modes(&[mode])
            .build();
        let (report, seen) = probe_run(nemesis, 3);
        let crashes = report.coverage.get(Counter::Crash);
        assert!(crashes > 0, "{mode:?}");
        let starts: u64 = seen.starts.iter().sum();
        assert_eq!(starts, 5 + report.coverage.get(Counter::Restart));
        assert_eq!(
            report.coverage.get(Counter::Restart),
            crashes,
            "all restart by the end"
        );
        lost += report.coverage.get(Counter::DiskUnsyncedAtCrash);
    }
    assert!(lost > 0);
}

#[test]
fn paused_nodes_receive_nothing_until_they_resume() {
    let n = 3;
    let config = SimConfig::builder(n)
        .clients(0)
        .safety_time(Duration::from_millis(500))
        .nemesis(only(&[FaultKind::Pause]))
        .build()
        .expect("valid");
    let seen = Rc::new(RefCell::new(Observed {
        received: vec![0; n],
        sent: vec![0; n],
        synced: vec![0; n],
        starts: vec![0; n],
        clock_went_back: false,
    }));
    let for_nodes = Rc::clone(&seen);
    let for_check = Rc::clone(&seen);
    let mut at_pause: Vec<Option<u64>> = vec![None; n];
    let report = Simulation::new(
        config,
        5,
        move |_| Probe {
            seen: Rc::clone(&for_nodes),
            last_now: SimTime::ZERO,
            written: 0,
        },
        NoClients,
    )
    .invariant(move |view| {
        let seen = for_check.borrow();
        for (i, slot) in at_pause.iter_mut().enumerate() {
            let paused = view.is_paused(NodeId::new(i as u64 + 1));
            match (*slot, paused) {
                (None, true) => {
                    *slot = Some(seen.received[i]);
                }
                (Some(count), true) if count != seen.received[i] => {
                    return Err(format!("paused node {i} handled a message"));
                }
                (Some(_), false) => *slot = None,
                _ => {}
            }
        }
        Ok(())
    })
    .progress(|_| true)
    .run();
    assert_eq!(report.failure, None);
    assert!(report.coverage.get(Counter::Pause) > 0);
    assert_eq!(
        report.coverage.get(Counter::Pause),
        report.coverage.get(Counter::Resume)
    );
}

#[test]
fn clock_jumps_are_visible_to_nodes() {
    let went_back = (0..5).any(|seed| {
        probe_run(only(&[FaultKind::ClockJump]), seed)
            .1
            .clock_went_back
    });
    assert!(went_back);
    let (_, seen) = probe_run(NemesisConfig::disabled(), 0);
    assert!(!seen.clock_went_back);
}

#[test]
fn a_failing_invariant_stops_the_run_at_its_event() {
    let config = SimConfig::builder(3)
        .clients(0)
        .safety_time(Duration::from_millis(100))
        .nemesis(NemesisConfig::disabled())
        .build()
        .expect("valid");
    let seen = Rc::new(RefCell::new(Observed {
        received: vec![0; 3],
        sent: vec![0; 3],
        synced: vec![0; 3],
        starts: vec![0; 3],
        clock_went_back: false,
    }));
    let for_nodes = Rc::clone(&seen);
    let for_check = Rc::clone(&seen);
    let report = Simulation::new(
        config,
        1,
        move |_| Probe {
            seen: Rc::clone(&for_nodes),
            last_now: SimTime::ZERO,
            written: 0,
        },
        NoClients,
    )
    .invariant(move |_| {
        let received: u64 = for_check.borrow().received.iter().sum();
        if received >= 10 {
            Err(format!("{received} messages received"))
        } else {
            Ok(())
        }
    })
    .run();
    match report.failure {
        Some(Failure::Invariant { event, message, .. }) => {
            assert_eq!(message, "10 messages received");
            assert_eq!(event, report.events, "the run stops at the failing event");
        }
        other => panic!("expected an invariant failure, got {other:?}"),
    }
}

#[test]
fn a_progress_condition_that_never_holds_fails_the_liveness_phase() {
    let config = SimConfig::builder(3)
        .clients(0)
        .safety_time(Duration::from_millis(50))
        .liveness_time_max(Duration::from_millis(200))
        .build()
        .expect("valid");
    let seen = Rc::new(RefCell::new(Observed {
        received: vec![0; 3],
        sent: vec![0; 3],
        synced: vec![0; 3],
        starts: vec![0; 3],
        clock_went_back: false,
    }));
    let report = Simulation::new(
        config,
        2,
        move |_| Probe {
            seen: Rc::clone(&seen),
            last_now: SimTime::ZERO,
            written: 0,
        },
        NoClients,
    )
    .progress(|_| false)
    .run();
    let healed_at = report.healed_at.expect("the liveness phase began");
    assert_eq!(healed_at, SimTime::from_micros(50_000));
    assert_eq!(
        report.failure,
        Some(Failure::NoProgress {
            healed_at,
            deadline: SimTime::from_micros(250_000)
        })
    );
    assert!(
        report
            .failure
            .expect("failed")
            .to_string()
            .contains("no progress")
    );
}

#[test]
fn invalid_configurations_are_refused() {
    assert_eq!(
        SimConfig::builder(0).build().err(),
        Some(ConfigError::Nodes(0))
    );
    assert_eq!(
        SimConfig::builder(3).clients(1_000_000).build().err(),
        Some(ConfigError::Clients(1_000_000))
    );
    assert_eq!(
        SimConfig::builder(3)
            .client_timeout(Duration::ZERO)
            .build()
            .err(),
        Some(ConfigError::ZeroDuration("client_timeout"))
    );
    // Durations that would overflow the simulator's arithmetic are refused up front, with
    // the setting named, rather than panicking in the middle of a run.
    let huge = Duration::MAX;
    let too_long = |config: Result<SimConfig, ConfigError>, what: &str| match config {
        Err(ConfigError::TooLong { what: w, value }) => {
            assert_eq!(w, what);
            assert!(value > synod_sim::DURATION_MAX);
        }
        other => panic!("{what}: expected TooLong, got {other:?}"),
    };
    too_long(
        SimConfig::builder(3).safety_time(huge).build(),
        "safety_time",
    );
    too_long(
        SimConfig::builder(3)
            .link(synod_sim::LinkConfig::new(
                synod_sim::DelayDistribution::uniform(Duration::ZERO, Duration::from_millis(1))
                    .with_tail(synod_sim::Probability::from_percent(1), huge),
            ))
            .build(),
        "link delay",
    );
    too_long(
        SimConfig::builder(3)
            .nemesis(NemesisConfig::builder().clock_jump_max(huge).build())
            .build(),
        "nemesis clock_jump_max",
    );
    too_long(
        SimConfig::builder(3)
            .nemesis(NemesisConfig::builder().interval_mean(huge).build())
            .build(),
        "nemesis interval_mean",
    );
    let err = SimConfig::builder(3)
        .think_time_max(huge)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("think_time_max"), "{err}");
    // At the limit a run works (no overflow in doubling or summing the settings).
    let at_limit = SimConfig::builder(3)
        .safety_time(Duration::from_millis(20))
        .nemesis(
            NemesisConfig::builder()
                .clock_jump_max(synod_sim::DURATION_MAX)
                .clock_offset_max(synod_sim::DURATION_MAX)
                .interval_mean(Duration::from_millis(1))
                .build(),
        )
        .build()
        .expect("at the limit");
    for seed in 0..20 {
        let (report, _) = probe_run_with(at_limit.clone(), seed);
        assert_eq!(report.failure, None);
    }
}

#[test]
fn a_scripted_scenario_runs_at_its_times() {
    use synod_sim::Cut;
    let n = 3;
    let config = SimConfig::builder(n)
        .clients(0)
        .safety_time(Duration::from_millis(500))
        .nemesis(NemesisConfig::disabled())
        .build()
        .expect("valid");
    let seen = Rc::new(RefCell::new(Observed {
        received: vec![0; n],
        sent: vec![0; n],
        synced: vec![0; n],
        starts: vec![0; n],
        clock_went_back: false,
    }));
    let for_nodes = Rc::clone(&seen);
    let for_check = Rc::clone(&seen);
    let ids: Vec<NodeId> = (1..=3).map(NodeId::new).collect();
    let ms = |m: u64| SimTime::from_micros(m * 1_000);
    let mut isolated_count = None;
    let report = Simulation::new(
        config,
        9,
        move |_| Probe {
            seen: Rc::clone(&for_nodes),
            last_now: SimTime::ZERO,
            written: 0,
        },
        NoClients,
    )
    .schedule(
        ms(100),
        Action::Partition(Cut::groups(n, &[&ids[..1], &ids[1..]])),
    )
    .schedule(ms(200), Action::HealPartition)
    .schedule(ms(300), Action::Crash(ids[1], CrashMode::DropUnsynced))
    .schedule(ms(350), Action::Restart(ids[1]))
    .schedule(ms(400), Action::Pause(ids[2]))
    .schedule(ms(450), Action::Resume(ids[2]))
    .schedule(ms(460), Action::ClockJump(ids[0], -1_000_000))
    .invariant(move |view| {
        // While isolated, node 1 hears nothing, not even messages already in flight.
        let received = for_check.borrow().received[0];
        if view.now() >= ms(100) && view.now() < ms(200) {
            match isolated_count {
                None => isolated_count = Some(received),
                Some(c) if c != received => return Err("isolated node 1 got a message".into()),
                Some(_) => {}
            }
        }
        Ok(())
    })
    .run();
    assert_eq!(report.failure, None);
    let c = &report.coverage;
    assert!(c.get(Counter::MessageCut) > 100);
    assert_eq!(
        [
            c.get(Counter::Crash),
            c.get(Counter::Restart),
            c.get(Counter::Pause),
            c.get(Counter::Resume)
        ],
        [1, 1, 1, 1]
    );
    let log: Vec<String> = report.faults.entries().map(ToString::to_string).collect();
    assert_eq!(
        log,
        [
            "0.100000s  partition by hand: n1<->n2 n1<->n3 (scripted)",
            "0.200000s  partition healed (scripted)",
            "0.300000s  crash n2 mode=drop-unsynced disk: unsynced_ops=1 lost=1 (scripted)",
            "0.350000s  restart n2 (scripted)",
            "0.400000s  pause n3 (scripted)",
            "0.450000s  resume n3 (scripted)",
            "0.460000s  clock jump n1 by -1000000us (scripted)",
        ],
        "the fault log lists the script"
    );
    let seen = seen.borrow();
    assert_eq!(seen.starts, vec![1, 2, 1]);
    assert!(
        seen.clock_went_back,
        "the scripted jump moved node 1's clock back"
    );
}

/// A node that does nothing, for tests that need a run but no behaviour.
pub struct Quiet;

impl Node for Quiet {
    type Message = ();
    type Request = u64;
    type Response = u64;

    fn on_start(&mut self, _: &mut Context<'_, Self>) {}
    fn on_message(&mut self, _: &mut Context<'_, Self>, _: NodeId, _: ()) {}
    fn on_timer(&mut self, _: &mut Context<'_, Self>, _: TimerId) {}
    fn on_request(&mut self, ctx: &mut Context<'_, Self>, id: RequestId, request: u64) {
        ctx.reply(id, request);
    }
}

/// Clients whose answers the workload maps to each kind of completion in turn.
struct Mapping(u64);

impl Workload<Quiet> for Mapping {
    type Input = u64;
    type Output = u64;

    fn invoke(&mut self, _: ClientId, _: usize, _: &mut SimRng) -> Option<Invocation<u64, u64>> {
        self.0 += 1;
        (self.0 <= 30).then_some(Invocation {
            node: NodeId::new(1),
            request: self.0,
            input: self.0,
        })
    }

    fn complete(&mut self, _: ClientId, _: &u64, response: &u64) -> Completion<u64> {
        match response % 3 {
            0 => Completion::Ok(*response),
            1 => Completion::Fail,
            _ => Completion::Unknown,
        }
    }
}

#[test]
fn a_workload_can_record_an_answer_as_unknown() {
    let config = SimConfig::builder(1)
        .clients(1)
        .nemesis(NemesisConfig::disabled())
        .build()
        .expect("valid");
    let report = Simulation::new(config, 3, |_| Quiet, Mapping(0)).run();
    let ops = report.history.operations();
    assert_eq!(
        ops.len(),
        30,
        "every request was answered and the next one sent"
    );
    for op in ops {
        match op.input % 3 {
            0 => assert_eq!(op.outcome, Outcome::Ok(op.input)),
            1 => assert_eq!(op.outcome, Outcome::Fail),
            _ => {
                assert_eq!(op.outcome, Outcome::Unknown);
                assert_eq!(op.completed_at, None, "an unknown operation has no end");
            }
        }
    }
}

/// Nodes that send every other node their clock reading every millisecond, and record the
/// delay of each message they receive, by link.
struct Stamper {
    delays: Rc<RefCell<Vec<(NodeId, NodeId, u64)>>>,
}

impl Node for Stamper {
    type Message = u64;
    type Request = ();
    type Response = ();

    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        ctx.set_timer(Duration::from_millis(1), TimerId(0));
    }

    fn on_message(&mut self, ctx: &mut Context<'_, Self>, from: NodeId, sent: u64) {
        let delay = ctx.now().as_micros() - sent;
        self.delays.borrow_mut().push((from, ctx.id(), delay));
    }

    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, _: TimerId) {
        let me = ctx.id();
        for to in ctx.node_ids().filter(|&n| n != me) {
            ctx.send(to, ctx.now().as_micros());
        }
        ctx.set_timer(Duration::from_millis(1), TimerId(0));
    }

    fn on_request(&mut self, _: &mut Context<'_, Self>, _: RequestId, _: ()) {}
}

#[test]
fn one_link_can_have_its_own_delays() {
    use synod_sim::{DelayDistribution, LinkConfig};
    let fast = LinkConfig::new(DelayDistribution::uniform(
        Duration::from_micros(100),
        Duration::from_millis(2),
    ));
    let slow = LinkConfig::new(DelayDistribution::uniform(
        Duration::from_millis(40),
        Duration::from_millis(60),
    ));
    let (n1, n2) = (NodeId::new(1), NodeId::new(2));
    let n3 = NodeId::new(3);
    let config = SimConfig::builder(3)
        .clients(0)
        .safety_time(Duration::from_millis(200))
        .nemesis(NemesisConfig::disabled())
        .link(fast)
        .link_between(n1, n2, slow)
        .build()
        .expect("valid");
    let delays = Rc::new(RefCell::new(Vec::new()));
    let for_nodes = Rc::clone(&delays);
    let report = Simulation::new(
        config,
        5,
        move |_| Stamper {
            delays: Rc::clone(&for_nodes),
        },
        NoClients,
    )
    .run();
    assert_eq!(report.failure, None);
    let delays = delays.borrow();
    let on = |from, to| -> Vec<u64> {
        delays
            .iter()
            .filter(|&&(f, t, _)| (f, t) == (from, to))
            .map(|&(_, _, d)| d)
            .collect()
    };
    let slow_link = on(n1, n2);
    assert!(slow_link.len() > 100, "{}", slow_link.len());
    assert!(
        slow_link.iter().all(|&d| (40_000..=60_000).contains(&d)),
        "{slow_link:?}"
    );
    // The other direction, and every other link, keep the default.
    for (from, to) in [(n2, n1), (n1, n3), (n3, n2)] {
        let fast_link = on(from, to);
        assert!(fast_link.len() > 100);
        assert!(
            fast_link.iter().all(|&d| d <= 2_000),
            "{from}->{to}: {fast_link:?}"
        );
    }
    // A link naming a node outside the cluster is refused.
    assert_eq!(
        SimConfig::builder(3)
            .link_between(n1, NodeId::new(4), slow)
            .build()
            .err(),
        Some(ConfigError::LinkNode(NodeId::new(4)))
    );
}

#[derive(Debug, Default)]
struct JournalSeen {
    /// Tokens of syncs that failed, with whether the record they covered was still on disk.
    failed: Vec<(u64, bool)>,
    synced: u64,
    /// Appends refused for lack of space, and when.
    full: Vec<SimTime>,
    appended_after_full: u64,
}

/// A node appending an 8-byte record every millisecond and syncing after each.
struct Journal {
    seen: Rc<RefCell<JournalSeen>>,
    next: u64,
}

impl Node for Journal {
    type Message = ();
    type Request = ();
    type Response = ();

    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        ctx.set_timer(Duration::from_millis(1), TimerId(0));
    }

    fn on_message(&mut self, _: &mut Context<'_, Self>, _: NodeId, _: ()) {}

    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, _: TimerId) {
        self.next += 1;
        match ctx.disk().append("j", &self.next.to_le_bytes()) {
            Ok(()) => {
                let mut seen = self.seen.borrow_mut();
                if !seen.full.is_empty() {
                    seen.appended_after_full += 1;
                }
                drop(seen);
                ctx.sync(SyncToken(self.next));
            }
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::StorageFull);
                self.seen.borrow_mut().full.push(ctx.now());
            }
        }
        ctx.set_timer(Duration::from_millis(1), TimerId(0));
    }

    fn on_request(&mut self, _: &mut Context<'_, Self>, _: RequestId, _: ()) {}

    fn on_synced(&mut self, _: &mut Context<'_, Self>, _: SyncToken) {
        self.seen.borrow_mut().synced += 1;
    }

    fn on_sync_failed(&mut self, ctx: &mut Context<'_, Self>, token: SyncToken) {
        let log = ctx.disk().read("j").unwrap_or_default();
        let still_there = log
            .chunks_exact(8)
            .any(|r| u64::from_le_bytes(r.try_into().expect("8 bytes")) == token.0);
        self.seen.borrow_mut().failed.push((token.0, still_there));
    }
}

#[test]
fn scripted_io_errors_reach_the_node() {
    let config = SimConfig::builder(1)
        .clients(0)
        .safety_time(Duration::from_millis(60))
        .nemesis(NemesisConfig::disabled())
        .build()
        .expect("valid");
    let seen = Rc::new(RefCell::new(JournalSeen::default()));
    let for_node = Rc::clone(&seen);
    let ms = |n: u64| SimTime::from_micros(n * 1_000);
    let n1 = NodeId::new(1);
    let report = Simulation::new(
        config,
        4,
        move |_| Journal {
            seen: Rc::clone(&for_node),
            next: 0,
        },
        NoClients,
    )
    .schedule(ms(10), Action::FailNextSync(n1))
    .schedule(ms(20), Action::FillDisk(n1))
    .schedule(ms(30), Action::FreeDisk(n1))
    .run();
    assert_eq!(report.failure, None);
    let seen = seen.borrow();
    // One sync failed, and the record it covered was gone from the disk when the node
    // heard of it; every other sync succeeded.
    assert_eq!(seen.failed.len(), 1, "{:?}", seen.failed);
    assert!(
        !seen.failed[0].1,
        "the failed sync's record is still readable"
    );
    assert!(seen.synced > 40, "{}", seen.synced);
    // The disk was full from 20 ms to 30 ms, and only then.
    assert!(seen.full.len() >= 8, "{:?}", seen.full);
    assert!(
        seen.full.iter().all(|&t| t >= ms(20) && t < ms(31)),
        "{:?}",
        seen.full
    );
    assert!(
        seen.appended_after_full > 20,
        "{}",
        seen.appended_after_full
    );
}
