//! Two-phase commit under `synod-sim`, through the driver `synod sim twopc` runs
//! (`synod_examples::simulate::twopc`): the coordinator crashed just before and just after
//! every event of a run (alone, and with a prepared participant), the participants too,
//! random runs drawing every fault of the simulator, a workload built to deadlock, and each
//! broken variant caught.
//!
//! Seeds: `SYNOD_SEEDS=<n>` runs more (the CI default is below), `SYNOD_SEED=<s>` replays
//! one; a failure prints the replay command.

use std::time::Duration;

use synod_examples::simulate::twopc::{
    CORRECT, Setup, Timeouts, Variant, atomic, bank, crash_sweep, fast_links, policy_of,
    random_run, simulation,
};
use synod_partitioning::DeadlockPolicy;
use synod_sim::seeds::SeedRunner;
use synod_sim::{Counter, Coverage, NemesisConfig, SimConfig};

#[test]
fn the_coordinator_crashed_at_every_step_leaves_no_mixed_outcome() {
    let runner = SeedRunner::new(
        "synod-examples",
        "sim_twopc::the_coordinator_crashed_at_every_step_leaves_no_mixed_outcome",
    );
    let (mut points, mut committed) = (0, 0);
    let seeds = runner.run(2, |seed| {
        for nodes in [&[1][..], &[1, 3]] {
            // Alone, then with a prepared participant crashed at the same moment.
            let (p, c) = crash_sweep(CORRECT, nodes, seed)?;
            points += p;
            committed += c;
        }
        Ok(())
    });
    println!(
        "coordinator crash sweep: {seeds} seeds, {points} crash points, {committed} transactions committed, 0 mixed, every in-doubt one resolved"
    );
    assert!(points > seeds * 100 && committed > 0);
}

#[test]
fn a_participant_crashed_at_every_step_leaves_no_mixed_outcome() {
    let runner = SeedRunner::new(
        "synod-examples",
        "sim_twopc::a_participant_crashed_at_every_step_leaves_no_mixed_outcome",
    );
    let mut points = 0;
    let seeds = runner.run(2, |seed| {
        for nodes in [&[2][..], &[2, 3]] {
            points += crash_sweep(CORRECT, nodes, seed)?.0;
        }
        Ok(())
    });
    println!("participant crash sweep: {seeds} seeds, {points} crash points, 0 mixed");
}

const RANDOM: Setup = Setup {
    nodes: 4,
    coordinators: 1,
    variant: Variant::Correct,
    policy: DeadlockPolicy::WoundWait,
    timeouts: Timeouts::FAST,
};
#[test]
fn bank_transfers_keep_their_total_under_every_fault() {
    let runner = SeedRunner::new(
        "synod-examples",
        "sim_twopc::bank_transfers_keep_their_total_under_every_fault",
    );
    let (mut committed, mut aborted, mut events) = (0, 0, 0);
    let mut coverage = Coverage::default();
    let seeds = runner.run(150, |seed| {
        // Wound-wait on even seeds, wait-die on odd ones.
        let policy = policy_of(seed);
        let run = random_run(Setup { policy, ..RANDOM }, seed);
        committed += run.tally.borrow().committed;
        aborted += run.tally.borrow().aborted;
        events += run.report.events;
        coverage.merge(&run.report.coverage);
        run.verdict()
    });
    println!(
        "2pc bank: {seeds} seeds, {events} events, {committed} committed, {aborted} aborted; 0 mixed outcomes, every audit saw the total"
    );
    println!("coverage: {coverage}");
    if !runner.replaying() {
        assert!(
            committed > seeds * 10,
            "the bank made progress: {committed}"
        );
        for counter in [
            Counter::Crash,
            Counter::Restart,
            Counter::DiskUnsyncedAtCrash,
        ] {
            assert!(coverage.get(counter) > 0, "{counter:?} never fired");
        }
    }
}

/// Transfers both ways between two accounts on two participants, from two coordinators:
/// two transactions each prepared on one participant wait for each other on the other.
/// The timeouts are too long to fire in a run, so only the deadlock policy breaks these
/// deadlocks (with wounding switched off, wound-wait stalls at the second seed; wait-die
/// without its deaths at grant time stalled at seed 2, and 300 seeds of each pass).
#[test]
fn a_deadlock_prone_workload_progresses_under_wound_wait_and_wait_die() {
    for policy in [DeadlockPolicy::WoundWait, DeadlockPolicy::WaitDie] {
        // Two coordinators: their prepares reach the two participants in either order.
        let setup = Setup {
            nodes: 4,
            coordinators: 2,
            variant: Variant::Correct,
            policy,
            timeouts: Timeouts::PATIENT,
        };
        for seed in 0..30 {
            let config = fast_links(SimConfig::builder(setup.nodes))
                .clients(6)
                .safety_time(Duration::from_millis(400))
                .client_timeout(Duration::from_secs(2))
                .nemesis(NemesisConfig::disabled())
                .build()
                .expect("valid config");
            let (bank, tally) = bank(setup, 10, true);
            let (sim, shared) = simulation(setup, seed, config, bank, &[]);
            let report = sim.run();
            assert!(
                report.failure.is_none(),
                "{policy:?} seed {seed}: {:?}",
                report.failure
            );
            atomic(&shared.borrow().outcomes).expect("no mixed outcome");
            let (committed, aborted) = (tally.borrow().committed, tally.borrow().aborted);
            // Every client's transfers commit, each after at most a few retries.
            assert_eq!((committed, aborted), (60, 0), "{policy:?} seed {seed}");
        }
    }
}

fn first_catch(
    setup: Setup,
    within: u64,
    run: impl Fn(Setup, u64) -> Result<(), String>,
) -> (u64, String) {
    for seed in 0..within {
        if let Err(e) = run(setup, seed) {
            return (seed, e);
        }
    }
    panic!("{:?} not caught within {within} seeds", setup.variant);
}

#[test]
fn a_coordinator_that_sends_before_its_decision_is_durable_is_caught() {
    let setup = Setup {
        variant: Variant::SendBeforeDurable,
        ..CORRECT
    };
    let (seed, why) = first_catch(setup, 5, |s, seed| {
        crash_sweep(s, &[1, 3], seed).map(|_| ())
    });
    println!("send-before-durable coordinator caught at seed {seed}: {why}");
}

#[test]
fn a_participant_that_aborts_after_voting_yes_is_caught() {
    let setup = Setup {
        variant: Variant::AbortAfterYes,
        ..CORRECT
    };
    let (seed, why) = first_catch(setup, 5, |s, seed| crash_sweep(s, &[3], seed).map(|_| ()));
    println!("abort-after-yes participant caught at seed {seed}: {why}");
}
