//! The Consistent Core node ([`CoreNode`]) under `synod-sim`: the very node type the real
//! process runs, driven by simulated time, network and disk, with every fault kind of the
//! nemesis (partitions, clogs, loss, duplication, reordering, crashes with torn and lost
//! unsynced writes, pauses, clock jumps and drift within the bound the lease assumes).
//! After every event no node may have stopped and Raft's safety properties must hold
//! (`synod_consensus::invariants`: election safety, leader append-only, log matching,
//! leader completeness, state-machine safety, commit and applied indexes that never go
//! back); each run's client history must be decided linearizable (a history the checker
//! gives up on fails the test), and progress is required after healing.
//!
//! The driver is `synod sim raft-kv`'s ([`raft_kv::simulation`]): synod-sim's generic
//! `ProtocolNode` over the production `WalLogStore` on the simulated disk, recovered from
//! it at every restart; a persistence request becomes a simulated sync, acknowledged only
//! when the simulator reports it done, and the node is handed its simulated monotonic
//! clock with every input. In the main test half the nemesis's crashes land part-way
//! through a node's writes (after a few more storage operations: inside appends,
//! truncations, compactions, snapshot installs, or a restart's recovery), and one node per
//! seed has scripted syncs fail (its incarnation ends and it is rebuilt from its disk). This test gives it its
//! own timing, clients that also compare-and-set and read under the leader's lease (to
//! random nodes, or in every other seed to the leader they last heard of), small
//! Raft batches, a snapshot every 32 applied entries (so that lagging and restarted nodes
//! install snapshots), a hand-over of the leadership every 400 ms of the leader's clock and
//! a membership change every 250 ms of it (of five nodes, learners added, promoted, demoted
//! and removed, three to five voters; of three, a voter demoted to learner and promoted
//! back), and prints how many lease reads were served under a lease and how many snapshots,
//! installs, transfers and membership changes (proposed and committed) the seeds drove.
//! Scenario tests cut off a leader: paused past its lease (its reads stay linearizable),
//! its clock drifting at the bound (they stay linearizable) and beyond it (the checker
//! catches a stale read). A negative control reintroduces a Raft bug, membership changes
//! taken before the last one committed, and Raft's invariant catches it.
//!
//! Watchers (`simulate::watchers`): 2,000 seeds of the same cluster with streams that follow
//! keys through each node's watch hub, move to another node (a crashed one's too) and
//! resume from one past the last revision they were promised, or meet compaction and get
//! the error; `synod_sim::WatchChecker` checks every stream against the six watch
//! guarantees and every replica's revisions against the others'. A hub that skips a
//! revision when a watcher catches up is caught.
//! [`CoreNode`]: synod_examples::consistent_core::node::CoreNode
//!
//!
//! Leases (`simulate::leases`): seeds of the same cluster, its pauses lasting up to four
//! times the shortest lease, with lock holders that grant a lease, take a lock under it,
//! keep it alive, write fenced by their token and now and then pause for two to three TTLs
//! and write with their old token on resuming, and clients that set keys with an expiry.
//! Checked by simulated time after every event: at most one holder of the lock at any
//! instant, no fenced write applied with a stale token, no lease or key ended before its
//! TTL (shortened by the drift bound) and none outliving its leader's bound. A leader that
//! renews every lease on taking over, and a store that does not check fencing tokens, are
//! caught.
//!
//! `SYNOD_SEEDS=<count>` runs more seeds (CI default below), `SYNOD_SEED=<seed>` replays one.

use std::time::Duration;

use synod_examples::simulate::KvClients;
use synod_examples::simulate::leases::{self, LeaseCounts, Leases};
use synod_examples::simulate::raft_kv::{
    self, Activity, CLOCK_DRIFT_PPM_MAX, NodeOptions, RaftKvNode, Request, Tally,
};
use synod_examples::simulate::watchers::{WatchOptions, Watchers};
use synod_sim::seeds::SeedRunner;
use synod_sim::{
    Action, Counter, Coverage, Cut, DelayDistribution, KvInput, KvModel, KvOutput, Linearizability,
    LinkConfig, NemesisConfig, NodeId, RunReport, SimConfig, SimTime, Simulation, Verdict,
    WatchCounts,
};

const KEYS: u64 = 3;
const SEEDS_CI: u64 = 2000;
/// Applied entries between snapshots.
const SNAPSHOT_ENTRIES: u64 = 32;
/// How often a leader hands its leadership over, on its clock.
const HAND_OVER_EVERY: Duration = Duration::from_millis(400);
/// How often a leader proposes a membership change, on its clock.
const MEMBERSHIP_CHANGE_EVERY: Duration = Duration::from_millis(250);
/// The share of the main test's crashes made part-way through a node's writes.
const MID_WRITE_CRASH_PERCENT: u8 = 50;
/// Scripted failed syncs per seed of the main test, all on one node, this far apart.
const FAILED_SYNCS: u64 = 3;
const FAILED_SYNC_EVERY_MS: u64 = 400;

/// Reads (linearizable or under the lease), writes and compare-and-sets of [`KEYS`] keys,
/// each to a random node (unless told to follow the leader).
fn clients() -> KvClients<RaftKvNode> {
    KvClients::new(KEYS)
        .with_reads(&[Request::Read, Request::LeaseRead])
        .with_cas(Request::cas)
}

/// The cluster of `nodes` nodes under every fault (also the timeline page's broken run).
pub(crate) fn config(nodes: usize) -> SimConfig {
    config_with(nodes, nemesis().build())
}

/// The nemesis of every fault, its clocks drifting within the bound the lease assumes.
fn nemesis() -> synod_sim::NemesisConfigBuilder {
    NemesisConfig::builder().drift_ppm_max(CLOCK_DRIFT_PPM_MAX)
}

fn config_with(nodes: usize, nemesis: NemesisConfig) -> SimConfig {
    SimConfig::builder(nodes)
        .clients(5)
        .safety_time(Duration::from_millis(1500))
        .liveness_time_max(Duration::from_secs(3))
        .client_timeout(Duration::from_millis(400))
        .data_centre()
        .nemesis(nemesis)
        .build()
        .expect("valid config")
}

fn options() -> NodeOptions {
    NodeOptions::default()
        .with_snapshot_entries(SNAPSHOT_ENTRIES)
        .with_hand_overs(Some(HAND_OVER_EVERY))
        .with_membership_changes(Some(MEMBERSHIP_CHANGE_EVERY))
        .with_raft_limits(8, 4096)
        .expect("limits above zero")
}

fn simulation(
    nodes: usize,
    seed: u64,
    clients: KvClients<RaftKvNode>,
    tally: &Tally,
) -> Simulation<RaftKvNode, KvClients<RaftKvNode>> {
    raft_kv::simulation(config(nodes), seed, options(), clients, tally)
}

/// The main test's run: every fault, half the crashes part-way through a node's writes, and
/// [`FAILED_SYNCS`] scripted failed syncs of one node.
fn simulation_under_every_fault(
    nodes: usize,
    seed: u64,
    clients: KvClients<RaftKvNode>,
    tally: &Tally,
) -> Simulation<RaftKvNode, KvClients<RaftKvNode>> {
    let nemesis = nemesis()
        .mid_write_crash_percent(MID_WRITE_CRASH_PERCENT)
        .build();
    let mut sim = raft_kv::simulation(config_with(nodes, nemesis), seed, options(), clients, tally);
    let node = NodeId::new(seed % nodes as u64 + 1);
    for k in 0..FAILED_SYNCS {
        let ms = 200 + k * FAILED_SYNC_EVERY_MS + seed % 97;
        sim = sim.schedule(at(ms), Action::FailNextSync(node));
    }
    sim
}

#[test]
fn core_node_is_linearizable_and_live_under_every_fault() {
    let runner = SeedRunner::new(
        "synod-examples",
        "core_sim::core_node_is_linearizable_and_live_under_every_fault",
    );
    let mut coverage = Coverage::default();
    let mut activity = Activity::default();
    let (mut events, mut ops, mut ok) = (0u64, 0usize, 0usize);
    let seeds = runner.run(SEEDS_CI, |seed| {
        let nodes = if seed % 4 == 3 { 5 } else { 3 };
        let tally = Tally::new();
        // Every other seed, clients send to the leader they last heard of: their lease
        // reads reach a leader; the others' mostly reach followers, which forward them.
        let clients = if seed % 2 == 1 {
            clients().following_the_leader()
        } else {
            clients()
        };
        let report = simulation_under_every_fault(nodes, seed, clients, &tally).run();
        coverage.merge(&report.coverage);
        activity.merge(&tally.get());
        events += report.events;
        ops += report.history.len();
        ok += report.history.ok_count();
        // A run that failed its invariant or progress is a violation, and so is a history
        // the checker could not decide.
        match report.verdict(&mut Linearizability::new(KvModel)) {
            Verdict::Pass => Ok(()),
            Verdict::GaveUp(why) => Err(format!("undecided: {why}")),
            Verdict::Violation(why) => Err(why),
        }
    });
    println!(
        "consistent core under synod-sim: {seeds} seeds, {events} events, {ops} operations ({ok} ok), \
         0 violations, every history decided"
    );
    println!("nodes: {activity}");
    println!("coverage: {coverage}");
    if !runner.replaying() {
        assert!(ok > seeds as usize * 5, "the workload made progress");
    }
    if seeds >= SEEDS_CI {
        assert_eq!(
            coverage.missing(),
            Vec::<Counter>::new(),
            "every fault fired"
        );
        let leased = activity.lease_reads;
        assert!(
            leased > 2 * activity.lease_fallbacks,
            "most lease reads are served under a lease: {activity}"
        );
        assert!(
            activity.compactions > 0 && activity.snapshot_installs > 0 && activity.transfers > 0,
            "snapshots are taken and installed, and leaderships handed over: {activity}"
        );
        assert!(
            activity.membership_committed > 0,
            "membership changes are proposed and committed: {activity}"
        );
        assert!(
            activity.crashes_in_install > 0
                && activity.crashes_in_compaction > 0
                && activity.crashes_in_truncation > 0
                && activity.crashes_in_append > 0
                && activity.crashes_in_recovery > 0,
            "crashes land inside every kind of write, and inside recoveries: {activity}"
        );
        assert!(
            activity.rebuilds_after_failed_sync > 0,
            "failed syncs end incarnations: {activity}"
        );
    }
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let a = simulation(3, 7, clients(), &Tally::new()).run();
    let b = simulation(3, 7, clients(), &Tally::new()).run();
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.history.len(), b.history.len());
}

#[test]
fn the_checker_catches_stale_follower_reads() {
    // Known-bad: every read served from the node's own state, possibly stale.
    let caught = (0..200).find(|&seed| {
        let stale = clients().with_reads(&[Request::FollowerRead]);
        let report = simulation(3, seed, stale, &Tally::new()).run();
        // Caught by the checker itself: not a failed invariant, not a give-up.
        report.failure.is_none()
            && matches!(
                report.verdict(&mut Linearizability::new(KvModel)),
                Verdict::Violation(_)
            )
    });
    println!("stale follower reads caught by the linearizability checker at seed {caught:?}");
    assert!(
        caught.is_some(),
        "follower reads served as linearizable went unnoticed in 200 seeds"
    );
}

/// Seeds of the lease scenarios below, one run each.
const SCENARIO_SEEDS: u64 = 20;

/// When a lease scenario cuts its node off, in virtual milliseconds.
const CUT_AT_MS: u64 = 300;
/// When a lease scenario looks for the leader to cut off and starts its clocks drifting.
const LEADER_AT_MS: u64 = 250;

/// How a lease scenario treats the node it cuts off.
#[derive(Clone, Copy, Debug)]
enum Scenario {
    /// Paused (a process stopped, its clock running on) for 500 ms of its 700 ms cut off.
    Paused,
    /// Its clock runs slow by this many parts per million, and the others' fast by as
    /// many, from shortly before it is cut off.
    Drifting(i32),
}

fn at(ms: u64) -> SimTime {
    SimTime::from_micros(ms * 1000)
}

/// The lease scenarios' cluster: 3 nodes with no nemesis, leaders that hand nothing over.
/// More clients than the main test, with a shorter timeout, so that writes that time out
/// are soon followed by others. Links (0.1 to 1 ms, no slow tail) and syncs (50 to 500
/// microseconds) are faster than the main test's, so that a new leader is elected and
/// commits writes within a few milliseconds: a lease that outlasts its bound is still
/// held by the old leader when they do.
fn lease_simulation(
    seed: u64,
    clients: KvClients<RaftKvNode>,
    tally: &Tally,
) -> Simulation<RaftKvNode, KvClients<RaftKvNode>> {
    let config = SimConfig::builder(3)
        .clients(10)
        .safety_time(Duration::from_millis(1500))
        .liveness_time_max(Duration::from_secs(3))
        .client_timeout(Duration::from_millis(100))
        .data_centre()
        .link(LinkConfig::new(DelayDistribution::uniform(
            Duration::from_micros(100),
            Duration::from_millis(1),
        )))
        .sync_delay(DelayDistribution::uniform(
            Duration::from_micros(50),
            Duration::from_micros(500),
        ))
        .nemesis(NemesisConfig::disabled())
        .build()
        .expect("valid config");
    let options = options()
        .with_hand_overs(None)
        .with_membership_changes(None);
    raft_kv::simulation(config, seed, options, clients, tally)
}

/// The node leading at [`LEADER_AT_MS`] in the lease scenarios' cluster with `seed`, found
/// by a run stopped there, before any scheduled fault (its clients spread their reads over
/// the nodes; the election does not wait for them): node 1 if none leads.
fn leader_before_the_cut(seed: u64) -> NodeId {
    let leader = std::rc::Rc::new(std::cell::Cell::new(None));
    let seen = std::rc::Rc::clone(&leader);
    let clients = KvClients::new(KEYS).with_reads(&[Request::LeaseRead]);
    let _stopped = lease_simulation(seed, clients, &Tally::new())
        .invariant(move |view| {
            let leading = view.nodes().find_map(|(id, node)| {
                let raft = raft_kv::raft_of(node)?;
                (raft.role() == synod_consensus::Role::Leader).then_some(id)
            });
            seen.set(leading);
            if view.now() >= at(LEADER_AT_MS) {
                Err("far enough".to_string())
            } else {
                Ok(())
            }
        })
        .run();
    leader.get().unwrap_or(NodeId::new(1))
}

/// A lease scenario: the node leading before the cut ([`leader_before_the_cut`]) is cut
/// off from the others from [`CUT_AT_MS`] to 1 s of virtual time, and [`Scenario`] says
/// what else befalls it. Every read goes to it, under its lease, and every write and
/// compare-and-set to the others, which elect a new leader meanwhile: a read the old
/// leader serves once that leader has committed a write is stale unless its lease has
/// lapsed by then. Returns the node cut off and the run.
fn lease_scenario(
    seed: u64,
    scenario: Scenario,
    tally: &Tally,
) -> (NodeId, RunReport<KvInput, KvOutput>) {
    let node = leader_before_the_cut(seed);
    let others: Vec<NodeId> = (1..=3).map(NodeId::new).filter(|&i| i != node).collect();
    let clients = KvClients::new(KEYS)
        .with_reads(&[Request::LeaseRead])
        .reading_from(node);
    let mut sim = lease_simulation(seed, clients, tally)
        .schedule(
            at(CUT_AT_MS),
            Action::Partition(Cut::groups(3, &[&[node], &others])),
        )
        .schedule(at(1000), Action::HealPartition);
    match scenario {
        Scenario::Paused => {
            sim = sim
                .schedule(at(CUT_AT_MS), Action::Pause(node))
                .schedule(at(800), Action::Resume(node));
        }
        Scenario::Drifting(ppm) => {
            for id in (1..=3).map(NodeId::new) {
                let drift = if id == node { -ppm } else { ppm };
                sim = sim.schedule(at(LEADER_AT_MS), Action::ClockDrift(id, drift));
            }
        }
    }
    (node, sim.run())
}

/// Runs `scenario` over [`SCENARIO_SEEDS`] seeds and returns the runs that were not
/// linearizable or failed otherwise (seed, node cut off, verdict), with what the nodes did.
fn lease_scenarios(scenario: Scenario) -> (Vec<(u64, NodeId, Verdict)>, Activity) {
    let tally = Tally::new();
    let mut failed = Vec::new();
    for seed in 0..SCENARIO_SEEDS {
        let (cut, report) = lease_scenario(seed, scenario, &tally);
        let verdict = report.verdict(&mut Linearizability::new(KvModel));
        if !verdict.is_pass() {
            failed.push((seed, cut, verdict));
        }
    }
    (failed, tally.get())
}

#[test]
fn lease_reads_stay_linearizable_when_a_cut_off_leader_is_paused_past_its_lease() {
    // The cut-off leader is paused for 500 ms (ten times its lease, five times the longest
    // election timeout) while the others elect a leader and take writes. Its clock runs on
    // through the pause, so on resuming it runs the ticks of the time passed before it
    // looks at the lease reads queued for it: the lease has lapsed. A driver that counted
    // delivered timer expiries instead (one on resuming) served them from the lease.
    let (failed, activity) = lease_scenarios(Scenario::Paused);
    println!("paused leader: {activity}");
    assert!(
        activity.lease_reads > 0,
        "no lease read was served: {activity}"
    );
    assert!(failed.is_empty(), "{failed:?}");
}

#[test]
fn lease_reads_stay_linearizable_when_clocks_drift_at_the_bound() {
    // The cut-off node's clock runs slow and the others' fast, as far as the bound the
    // lease is configured for, each way: the worst case the lease's margin allows for.
    let ppm = i32::try_from(CLOCK_DRIFT_PPM_MAX).expect("small");
    let (failed, activity) = lease_scenarios(Scenario::Drifting(ppm));
    println!("drift at the bound: {activity}");
    assert!(
        activity.lease_reads > 0,
        "no lease read was served: {activity}"
    );
    assert!(failed.is_empty(), "{failed:?}");
}

/// Seeds the negative control below may run, one run each; it stops at the first caught.
/// When this was written the first was seed 0, and 50 of seeds 0..60 were caught (none
/// with the lease off), so ten seeds leave the test little chance of missing every one
/// should the runs change.
const NEGATIVE_SEEDS: u64 = 10;

#[test]
fn the_checker_catches_stale_lease_reads_when_clocks_drift_beyond_the_bound() {
    // Known-bad: the same scenario with the clocks drifting 50% each way, five times the
    // bound the lease is configured for. A slow leader's lease outlasts the fast
    // followers' election timeouts, and a read served under it misses a write the new
    // leader committed: stale, caught by the linearizability checker itself (not by an
    // invariant, and not given up on).
    let caught = (0..NEGATIVE_SEEDS).find_map(|seed| {
        let (cut, report) = lease_scenario(seed, Scenario::Drifting(500_000), &Tally::new());
        let verdict = report.verdict(&mut Linearizability::new(KvModel));
        let by_checker = report.failure.is_none() && matches!(verdict, Verdict::Violation(_));
        by_checker.then_some((seed, cut, verdict))
    });
    println!("stale lease reads caught by the linearizability checker: {caught:?}");
    assert!(
        caught.is_some(),
        "lease reads under a drift beyond the bound went unnoticed in {NEGATIVE_SEEDS} seeds"
    );
}

/// Seeds the membership negative control below may run, of five nodes each; it stops at
/// the first caught. When this was written 35 of seeds 0..1000 were caught (none without the
/// bug; the first was seed 102, seed 7 once the simulated disks' draws changed, seed 30
/// once each of a leader's two changes was handed in and drained on its own, through the node
/// contract, and seed 21 once the nodes ran through synod-sim's ProtocolNode on the
/// WAL-backed store), so three hundred seeds leave the test little chance of missing every
/// one should the runs change.
const MEMBERSHIP_NEGATIVE_SEEDS: u64 = 300;
/// How often the negative control's leaders propose a change (twice in a row), on their
/// clock: often enough that a fault falls between two changes now and then.
const MEMBERSHIP_NEGATIVE_EVERY: Duration = Duration::from_millis(20);

#[test]
fn the_checkers_catch_membership_changes_made_before_the_last_one_committed() {
    // Known-bad: a leader takes a membership change while the one before is uncommitted,
    // and its timer asks for two in a row. Two voters removed or demoted at once leave the
    // old and the newest configurations with majorities that need not meet: two leaders
    // of a term, or a leader without a committed entry (Raft's invariant fails the run).
    let broken = synod_consensus::Broken {
        skip_membership_change_wait: true,
        ..synod_consensus::Broken::default()
    };
    let options = options()
        .with_membership_changes(Some(MEMBERSHIP_NEGATIVE_EVERY))
        .broken(broken);
    let caught = (0..MEMBERSHIP_NEGATIVE_SEEDS).find_map(|seed| {
        let report = raft_kv::simulation(config(5), seed, options, clients(), &Tally::new()).run();
        match report.verdict(&mut Linearizability::new(KvModel)) {
            Verdict::Violation(why) => Some((seed, why)),
            Verdict::Pass | Verdict::GaveUp(_) => None,
        }
    });
    println!("membership changes before the last committed caught: {caught:?}");
    assert!(
        caught.is_some(),
        "the change-wait bug went unnoticed in {MEMBERSHIP_NEGATIVE_SEEDS} seeds"
    );
}

/// Seeds of the watch test (about 13 s of one core: 6.6 ms of CPU a seed, measured on a
/// loaded two-core machine, where 3,000 seeds passed; more with `SYNOD_SEEDS`).
const WATCH_SEEDS_CI: u64 = 2000;

fn watched(
    seed: u64,
    nodes: usize,
    watch: WatchOptions,
) -> (RunReport<KvInput, KvOutput>, Watchers) {
    let watchers = Watchers::new(watch);
    let clients = if seed % 2 == 1 {
        clients().following_the_leader()
    } else {
        clients()
    };
    let report = raft_kv::simulation_watched(
        config(nodes),
        seed,
        options(),
        clients,
        &Tally::new(),
        &watchers,
    )
    .run();
    (report, watchers)
}

#[test]
fn watchers_resuming_on_any_node_keep_the_six_guarantees_under_every_fault() {
    let runner = SeedRunner::new(
        "synod-examples",
        "core_sim::watchers_resuming_on_any_node_keep_the_six_guarantees_under_every_fault",
    );
    let mut total = WatchCounts::default();
    let seeds = runner.run(WATCH_SEEDS_CI, |seed| {
        let nodes = if seed % 4 == 3 { 5 } else { 3 };
        let (report, watchers) = watched(seed, nodes, WatchOptions::default());
        let c = watchers.counts();
        total.events += c.events;
        total.batches += c.batches;
        total.progress += c.progress;
        total.compacted += c.compacted;
        total.resumed += c.resumed;
        match report.failure {
            Some(why) => Err(why.to_string()),
            None => Ok(()),
        }
    });
    println!("watchers under synod-sim: {seeds} seeds, {total:?}, 0 violations");
    if !runner.replaying() {
        assert!(total.events > seeds * 10, "watchers were delivered events");
        assert!(total.resumed > seeds, "watchers resumed on other nodes");
        assert!(
            total.compacted > 0,
            "some starts met compaction and got the error"
        );
        assert!(
            total.progress > seeds,
            "progress notifications were checked"
        );
    }
}

#[test]
fn the_watch_checker_catches_a_hub_that_skips_an_event() {
    // Known-bad: a watcher catching up from a hub's history (it resumed in the past, or
    // fell behind) skips the first revision it needs.
    let broken = WatchOptions {
        broken_skipping: true,
        ..WatchOptions::default()
    };
    let caught = (0..100).find_map(|seed| {
        let (report, _) = watched(seed, 3, broken);
        let why = report.failure?.to_string();
        why.contains("watch").then_some((seed, why))
    });
    println!("the skipping hub caught: {caught:?}");
    assert!(
        caught.is_some(),
        "the skipping hub went unnoticed in 100 seeds"
    );
}

/// Seeds of the lease test in CI (about 32 s of one core: 16 ms of CPU a seed, measured
/// on a loaded two-core machine; 5,000 seeds passed locally; more with `SYNOD_SEEDS`).
const LEASE_SEEDS_CI: u64 = 2000;
/// The longest pause of the lease test's nemesis: four times the shortest lease (1.5
/// election timeouts of 100 ms).
const LEASE_PAUSE_MAX: Duration = Duration::from_millis(600);

/// The lease simulation: `nodes` nodes under every fault, pauses up to
/// [`LEASE_PAUSE_MAX`], clocks drifting within the bound, four lock holders and four
/// clients setting expiring keys, with the main test's node options and `options`' changes.
fn leased(
    seed: u64,
    nodes: usize,
    options: NodeOptions,
) -> (RunReport<leases::LeaseOp, raft_kv::LeaseReply>, LeaseCounts) {
    let nemesis = nemesis().pause_time_max(LEASE_PAUSE_MAX).build();
    let config = SimConfig::builder(nodes)
        .clients(8)
        .safety_time(Duration::from_millis(1500))
        .liveness_time_max(Duration::from_secs(3))
        .client_timeout(Duration::from_millis(400))
        .think_time_max(Duration::from_millis(5))
        .data_centre()
        .nemesis(nemesis)
        .build()
        .expect("valid config");
    let lease_config = options.lease_config();
    let world = Leases::new(&lease_config, CLOCK_DRIFT_PPM_MAX);
    let report = leases::simulation(
        config,
        seed,
        options,
        &world,
        lease_config.ttl_ms_min(),
        &Tally::new(),
    )
    .run();
    (report, world.counts())
}

/// The lease simulation over its seeds. Its first strict run over 100 seeds found seed 71:
/// a lease ended 50 ms before its TTL, because a checkpoint was capped by the replicated
/// time since the grant, and the grant was stamped by a leader whose replicated clock
/// lagged the next leader's by some 260 ms (it had just started); see
/// `synod_membership::lease`'s Time.
#[test]
fn leases_keep_one_lock_holder_refuse_stale_tokens_and_end_within_their_bounds() {
    let runner = SeedRunner::new(
        "synod-examples",
        "core_sim::leases_keep_one_lock_holder_refuse_stale_tokens_and_end_within_their_bounds",
    );
    let mut total = LeaseCounts::default();
    let seeds = runner.run(LEASE_SEEDS_CI, |seed| {
        let nodes = if seed % 4 == 3 { 5 } else { 3 };
        let (report, counts) = leased(seed, nodes, options());
        total.merge(&counts);
        match report.failure {
            Some(why) => Err(why.to_string()),
            None => Ok(()),
        }
    });
    println!("leases under synod-sim: {seeds} seeds, {total}, 0 violations");
    if !runner.replaying() {
        assert!(total.acquired > seeds, "locks were taken: {total}");
        assert!(total.pauses > 0, "holders paused: {total}");
        assert!(
            total.fenced_applied > seeds && total.fenced_refused > 0,
            "fenced writes were applied, and stale ones refused: {total}"
        );
        assert!(
            total.ended > seeds && total.ends_checked > 0,
            "leases and keys ended, under a leader's bound: {total}"
        );
    }
}

/// Seeds the lease negative controls below may run; each stops at the first caught.
const LEASE_NEGATIVE_SEEDS: u64 = 100;

/// The first seed of `0..LEASE_NEGATIVE_SEEDS` whose run `options` fails with a violation
/// that mentions `what`, with the violation.
fn lease_caught(options: NodeOptions, what: &str) -> Option<(u64, String)> {
    (0..LEASE_NEGATIVE_SEEDS).find_map(|seed| {
        let (report, _) = leased(seed, 3, options);
        let why = report.failure?.to_string();
        why.contains(what).then_some((seed, why))
    })
}

#[test]
fn the_lease_checker_catches_leases_renewed_by_elections() {
    // Known-bad: a new leader restarts every lease at its full TTL, whatever the last
    // checkpoint recorded, so leaders changing keep a lease nobody renews.
    let caught = lease_caught(
        options().broken_lease_renewal_on_election(),
        "still holds lease",
    );
    println!("leases renewed by elections caught: {caught:?}");
    assert!(
        caught.is_some(),
        "leases renewed by elections went unnoticed in {LEASE_NEGATIVE_SEEDS} seeds"
    );
}

#[test]
fn the_fencing_checker_catches_a_store_that_does_not_check_tokens() {
    // Known-bad: fenced writes applied whatever their token, so a holder resuming from a
    // pause past its lease writes over its successor's.
    let caught = lease_caught(options().broken_unchecked_fences(), "was applied while");
    println!("unchecked fencing tokens caught: {caught:?}");
    assert!(
        caught.is_some(),
        "unchecked fencing tokens went unnoticed in {LEASE_NEGATIVE_SEEDS} seeds"
    );
}
