//! The leaderless store under `synod-sim` (`synod sim leaderless`): every level in one run,
//! each checked against its promise (see `synod_examples::simulate::leaderless`): ABD and
//! CAS linearizable, no acknowledged QUORUM write lost under version vectors, no stale read
//! at QUORUM, replicas converged after the heal; reads at ONE found stale (the negative
//! control of the stale-read check); and last-write-wins, in the same runs, losing
//! acknowledged writes that version vectors keep.
//!
//! The checks themselves are shown to catch broken histories: a read that misses a completed
//! write at the linearizable levels, two compare-and-sets from nothing both applied, a lost
//! QUORUM write, a stale QUORUM read (and the same read at ONE counted, not failed).
//!
//! `SYNOD_SEEDS=<count>` runs more seeds (CI default below), `SYNOD_SEED=<seed>` replays one.

use std::collections::BTreeMap;
use std::time::Duration;

use synod_examples::leaderless::machine::MOVES_ENUMERATED_MAX;
use synod_examples::leaderless::{Lww, Vv};
use synod_examples::simulate::FaultSelection;
use synod_examples::simulate::leaderless::{
    ABD, CAS, CLIENTS, Checks, LevelHistory, Moves, ONE, QUORUM, run_checked, run_moving,
};
use synod_sim::seeds::SeedRunner;
use synod_sim::{
    ClientId, Counter, Coverage, DelayDistribution, KvInput, KvOutput, LinkConfig, Probability,
    SimConfig, SimTime, Verdict,
};

/// Seeds in CI: each costs about 8 ms of CPU in the dev profile (2026-12-07, from 137 ms
/// before the simulated nodes' logs took small segments), so about 20 s in all.
const SEEDS_CI: u64 = 2000;

/// `synod sim leaderless`'s configuration, with `events` safety-phase events.
fn config(nodes: usize, events: u64, faults: &FaultSelection) -> SimConfig {
    let link = DelayDistribution::uniform(Duration::from_micros(100), Duration::from_millis(2))
        .with_tail(Probability::from_percent(5), Duration::from_millis(20));
    SimConfig::builder(nodes)
        .clients(CLIENTS)
        .safety_time(Duration::from_secs(3600))
        .events_max(events)
        .liveness_time_max(Duration::from_secs(2))
        .client_timeout(Duration::from_millis(100))
        .link(LinkConfig::new(link))
        .nemesis(faults.nemesis())
        .build()
        .expect("valid config")
}

#[test]
fn every_level_keeps_its_promise_under_faults() {
    let runner = SeedRunner::new(
        "synod-examples",
        "leaderless_sim::every_level_keeps_its_promise_under_faults",
    );
    let mut stale_at_one = 0;
    let (mut acknowledged, mut events) = (0, 0);
    let mut coverage = Coverage::default();
    let ran = runner.run(SEEDS_CI, |seed| {
        let nodes = if seed % 4 == 3 { 5 } else { 3 };
        let (summary, checks) =
            run_checked::<Vv>(seed, config(nodes, 6_000, &FaultSelection::Swarm), false);
        stale_at_one += checks.stale[0];
        acknowledged += checks.acknowledged;
        events += summary.events;
        coverage.merge(&summary.coverage);
        match summary.verdict {
            Verdict::Pass => Ok(()),
            other => Err(format!("{nodes} nodes: {other:?}")),
        }
    });
    println!(
        "leaderless under synod-sim: {ran} seeds, {events} events, {acknowledged} QUORUM writes \
         acknowledged, {stale_at_one} stale reads at ONE, 0 violations\ncoverage: {coverage}"
    );
    if !runner.replaying() {
        assert!(ran > 0);
        assert!(
            acknowledged > ran as usize,
            "{acknowledged} QUORUM writes acknowledged in {ran} seeds"
        );
        assert!(
            stale_at_one > 0,
            "no read at ONE was stale in {ran} seeds: the stale-read check finds nothing"
        );
    }
    if ran >= SEEDS_CI {
        assert_eq!(
            coverage.missing(),
            Vec::<Counter>::new(),
            "every fault fired"
        );
    }
}

/// Seeds of runs with a join and a leave in CI.
const MOVING_SEEDS_CI: u64 = 400;

/// A node joins (its first start, admitted by the members), or one of the first members
/// leaves while the clients work, or both in one run, under every fault: every level keeps
/// its promise, a QUORUM read above all never misses a write acknowledged before it began
/// while partitions move (the writes go to the old replicas and the pending new one, the
/// reads to the old ones until the move is complete).
#[test]
fn every_level_keeps_its_promise_while_a_node_joins_and_one_leaves() {
    let runner = SeedRunner::new(
        "synod-examples",
        "leaderless_sim::every_level_keeps_its_promise_while_a_node_joins_and_one_leaves",
    );
    let (mut joined, mut left, mut acknowledged) = (0, 0, 0);
    let ran = runner.run(MOVING_SEEDS_CI, |seed| {
        let (nodes, moves) = match seed % 3 {
            0 => (
                4,
                Moves {
                    joins: 0,
                    leave_after: Some(20),
                    ..Moves::default()
                },
            ),
            1 => (
                4,
                Moves {
                    joins: 1,
                    leave_after: None,
                    ..Moves::default()
                },
            ),
            _ => (
                5,
                Moves {
                    joins: 1,
                    leave_after: Some(30),
                    ..Moves::default()
                },
            ),
        };
        let config = config(nodes, 6_000, &FaultSelection::Swarm);
        let (summary, checks) = run_moving::<Vv>(seed, config, moves, false);
        let (j, l) = checks.moved();
        joined += usize::from(j);
        left += usize::from(l);
        acknowledged += checks.acknowledged;
        match summary.verdict {
            Verdict::Pass => Ok(()),
            other => Err(format!("{nodes} nodes, {moves:?}: {other:?}")),
        }
    });
    println!(
        "leaderless moving under synod-sim: {ran} seeds, {joined} joined, {left} left, \
         {acknowledged} QUORUM writes acknowledged, 0 violations"
    );
    if !runner.replaying() {
        assert!(
            // A leave is refused when its node is down or starting, and a move may still be
            // under way when the replicas agree: a fifth of the seeds each, at least.
            joined > ran as usize / 5 && left > ran as usize / 5,
            "{joined} joins and {left} leaves done in {ran} seeds"
        );
    }
}

/// Seeds of runs with a removal in CI: about 14 s for 300 on a loaded machine (load 15,
/// 2026-12-07), half of them with the removal done before the replicas agreed.
const REMOVING_SEEDS_CI: u64 = 300;

/// Issue 19: the last of the first members is crashed for good while the clients work,
/// and REMOVENODE of it is sent to node 1 until it is taken (refused while some member
/// holds it alive), under every fault: its partitions are streamed to their new replicas
/// by the surviving ones while the clients go on, and every level keeps its promise, a
/// QUORUM read above all never missing a write acknowledged before it began, through
/// every phase of the removal. A variant that skips the removal's streams (the new
/// replicas switched to without the keys) passed this test's 300 seeds on 2026-12-07 (185
/// removed): anti-entropy and read repair mended the replicas before a read met the gap.
/// The machine's tests of a removal (`leaderless::tests`, every key on every replica of
/// the table without the member, anti-entropy held off) fail on that variant.
#[test]
fn every_level_keeps_its_promise_while_a_member_down_for_good_is_removed() {
    let runner = SeedRunner::new(
        "synod-examples",
        "leaderless_sim::every_level_keeps_its_promise_while_a_member_down_for_good_is_removed",
    );
    let (mut removed, mut acknowledged) = (0, 0);
    let ran = runner.run(REMOVING_SEEDS_CI, |seed| {
        let nodes = if seed % 2 == 0 { 4 } else { 5 };
        let moves = Moves {
            remove_after: Some(20),
            ..Moves::default()
        };
        let config = config(nodes, 6_000, &FaultSelection::Swarm);
        let (summary, checks) = run_moving::<Vv>(seed, config, moves, false);
        removed += usize::from(checks.removed());
        acknowledged += checks.acknowledged;
        match summary.verdict {
            Verdict::Pass => Ok(()),
            other => Err(format!("{nodes} nodes, {moves:?}: {other:?}")),
        }
    });
    println!(
        "leaderless removing under synod-sim: {ran} seeds, {removed} removed, \
         {acknowledged} QUORUM writes acknowledged, 0 violations"
    );
    if !runner.replaying() {
        assert!(
            removed > ran as usize / 3,
            "{removed} removals done in {ran} seeds"
        );
    }
}

/// Seeds of runs with more movers than move slots in CI: 100 took 17 s on a loaded machine
/// (load 16 on 2 cores, 2026-12-07: about 30 ms of CPU each in the dev profile).
const MANY_MOVERS_SEEDS_CI: u64 = 100;

/// A run of eight nodes, five of them joining (and in half the seeds a first member
/// leaving).
fn many_movers(seed: u64) -> (synod_examples::simulate::RunSummary, Checks) {
    let moves = Moves {
        joins: 5,
        leave_after: (seed % 2 == 1).then_some(25),
        ..Moves::default()
    };
    run_moving::<Vv>(seed, config(8, 8_000, &FaultSelection::Swarm), moves, false)
}

/// Five nodes join the cluster's three first members at once, and in half the runs one of
/// those leaves too: more movers than [`MOVES_ENUMERATED_MAX`] slots (issue 19). Under every
/// fault every level keeps its promise (above all, no QUORUM read misses an acknowledged
/// write). The run ends once the replicas agree after the heal, most often with moves still
/// under way (the machine's tests show every move ending); the seeds in which all ended, and
/// the most moves under way at any node after any event, are printed: more than four only
/// at a node that learned of a move it never granted a slot to (admitted while the move
/// asked), which then refuses to coordinate writes.
#[test]
fn every_level_keeps_its_promise_while_more_nodes_move_than_there_are_slots() {
    let runner = SeedRunner::new(
        "synod-examples",
        "leaderless_sim::every_level_keeps_its_promise_while_more_nodes_move_than_there_are_slots",
    );
    let (mut moved, mut acknowledged, mut peak, mut over) = (0, 0, 0, 0);
    let ran = runner.run(MANY_MOVERS_SEEDS_CI, |seed| {
        let (summary, checks) = many_movers(seed);
        let (joined, left) = checks.moved();
        moved += usize::from(joined && (left || seed % 2 == 0));
        acknowledged += checks.acknowledged;
        peak = peak.max(checks.under_way_peak());
        over += usize::from(checks.under_way_peak() > MOVES_ENUMERATED_MAX);
        match summary.verdict {
            Verdict::Pass => Ok(()),
            other => Err(format!("five joiners: {other:?}")),
        }
    });
    println!(
        "leaderless with five joiners and a leave under synod-sim: {ran} seeds, {moved} with \
         every move done, {acknowledged} QUORUM writes acknowledged, at most {peak} moves under \
         way at a node ({over} seeds above {MOVES_ENUMERATED_MAX}), 0 violations"
    );
    if !runner.replaying() {
        assert!(
            acknowledged > ran as usize,
            "{acknowledged} QUORUM writes acknowledged in {ran} seeds"
        );
    }
}

#[test]
fn last_write_wins_loses_acknowledged_writes_that_version_vectors_keep() {
    let faults = FaultSelection::parse("clock-drift,clock-jump,loss").expect("kinds");
    let (mut lww_lost, mut vv_lost) = (0, 0);
    for seed in 0..6 {
        let lost = |verdict: &Verdict| matches!(verdict, Verdict::Violation(why) if why.contains("is lost"));
        let (lww, _) = run_checked::<Lww>(seed, config(3, 4_000, &faults), false);
        let (vv, _) = run_checked::<Vv>(seed, config(3, 4_000, &faults), false);
        lww_lost += usize::from(lost(&lww.verdict));
        vv_lost += usize::from(lost(&vv.verdict));
        assert_eq!(vv.verdict, Verdict::Pass, "seed {seed}: version vectors");
    }
    assert!(
        lww_lost > 0,
        "last-write-wins lost no acknowledged write in 6 seeds"
    );
    assert_eq!(vv_lost, 0);
}

fn at(micros: u64) -> SimTime {
    SimTime::from_micros(micros)
}

/// The verdict of `history` (with `ABD` or `CAS` as `base`): a write of 1 acknowledged,
/// then, strictly after it, a read by another client answered `read`.
fn read_after_write(base: u64, read: Option<u64>) -> Verdict {
    let mut h = LevelHistory::new();
    let (a, b) = (ClientId::new(0), ClientId::new(1));
    let w = h.invoke(
        a,
        KvInput::Write {
            key: base,
            value: 1,
        },
        at(0),
    );
    h.ok(w, KvOutput::Written, at(10)).expect("recorded");
    let r = h.invoke(b, KvInput::Read { key: base }, at(20));
    h.ok(r, KvOutput::Read(read), at(30)).expect("recorded");
    h.check().verdict
}

#[test]
fn the_linearizable_levels_check_catches_a_read_that_misses_a_completed_write() {
    for base in [ABD, CAS] {
        assert_eq!(read_after_write(base, Some(1)), Verdict::Pass, "key {base}");
        assert!(
            matches!(read_after_write(base, None), Verdict::Violation(why) if why.contains("linearizable levels")),
            "key {base}"
        );
    }
    // Two compare-and-sets from an absent key, one after the other, both applied: only
    // one can have been.
    let mut h = LevelHistory::new();
    for (client, value) in [(0, 1), (1, 2)] {
        let input = KvInput::Cas {
            key: CAS,
            expect: None,
            new: value,
        };
        let op = h.invoke(ClientId::new(client), input, at(value * 100));
        h.ok(op, KvOutput::Cas(true), at(value * 100 + 10))
            .expect("recorded");
    }
    assert!(matches!(h.check().verdict, Verdict::Violation(_)));
}

/// A QUORUM history: client 0 writes 1 (acknowledged), client 1 writes 2 with a context
/// that read `saw` (acknowledged), and the replicas end holding `end`.
fn quorum_writes(
    saw: Vec<u64>,
    end: Vec<u64>,
) -> synod_examples::simulate::leaderless::LevelVerdict {
    let mut h = LevelHistory::new();
    for (client, value) in [(0u32, 1u64), (1, 2)] {
        let op = h.invoke(
            ClientId::new(client),
            KvInput::Write { key: QUORUM, value },
            at(value * 100),
        );
        h.ok(op, KvOutput::Written, at(value * 100 + 10))
            .expect("recorded");
    }
    h.wrote(1, Vec::new());
    h.wrote(2, saw);
    h.final_values(BTreeMap::from([(0, end)]));
    h.check()
}

#[test]
fn the_quorum_check_catches_a_lost_write_and_not_one_replaced_by_a_write_that_read_it() {
    // Both kept as siblings; or 1 replaced by 2, whose context had read it.
    assert_eq!(quorum_writes(Vec::new(), vec![1, 2]).verdict, Verdict::Pass);
    let replaced = quorum_writes(vec![1], vec![2]);
    assert_eq!(replaced.verdict, Verdict::Pass);
    assert_eq!(replaced.acknowledged, 2);
    // 1 gone, and 2 had not read it: lost (last-write-wins does this).
    let lost = quorum_writes(Vec::new(), vec![2]);
    assert!(
        matches!(&lost.verdict, Verdict::Violation(why) if why.contains("write of 1 to key 0 is lost")),
        "{lost:?}"
    );
}

/// A history in which a write of 1 (at QUORUM) is acknowledged, then a read of the key at
/// level `base` is invoked: the history and the read's operation, to be completed.
fn acknowledged_write_then_read(base: u64) -> (LevelHistory, synod_sim::OpId) {
    let mut h = LevelHistory::new();
    let w = h.invoke(
        ClientId::new(0),
        KvInput::Write {
            key: QUORUM,
            value: 1,
        },
        at(0),
    );
    h.ok(w, KvOutput::Written, at(10)).expect("recorded");
    h.wrote(1, Vec::new());
    let r = h.invoke(ClientId::new(1), KvInput::Read { key: base }, at(20));
    (h, r)
}

#[test]
fn a_stale_read_fails_at_quorum_and_is_counted_at_one() {
    // A write of 1 acknowledged, then a read (at `base`) that found nothing, or found it.
    let history = |base: u64, found: Vec<u64>| {
        let (mut h, r) = acknowledged_write_then_read(base);
        h.read(r, found, at(30)).expect("recorded");
        h.check()
    };
    let fresh = history(QUORUM, vec![1]);
    assert_eq!((fresh.verdict, fresh.stale), (Verdict::Pass, [0, 0]));
    let stale = history(QUORUM, Vec::new());
    assert!(
        matches!(&stale.verdict, Verdict::Violation(why) if why.contains("QUORUM reads missed")),
        "{stale:?}"
    );
    let at_one = history(ONE, Vec::new());
    assert_eq!((at_one.verdict, at_one.stale), (Verdict::Pass, [1, 0]));
}

/// Issue 19: the QUORUM check skipped a QUORUM or ONE read recorded with `ok` (its output
/// only) instead of `read`, so a stale one passed. Now it is checked with the one value
/// its output names.
#[test]
fn a_stale_read_recorded_with_its_output_only_is_caught() {
    let history = |base: u64, found: Option<u64>| {
        let (mut h, r) = acknowledged_write_then_read(base);
        h.ok(r, KvOutput::Read(found), at(30)).expect("recorded");
        h.check()
    };
    let fresh = history(QUORUM, Some(1));
    assert_eq!((fresh.verdict, fresh.stale), (Verdict::Pass, [0, 0]));
    let stale = history(QUORUM, None);
    assert!(
        matches!(&stale.verdict, Verdict::Violation(why) if why.contains("QUORUM reads missed")),
        "{stale:?}"
    );
    let at_one = history(ONE, None);
    assert_eq!((at_one.verdict, at_one.stale), (Verdict::Pass, [1, 0]));
}

/// Issue 19: a linearizable read recorded with its siblings was checked by its first value
/// only, so a read answering the value written and one never written passed. A register
/// holds one value: siblings are a violation.
#[test]
fn a_linearizable_read_with_siblings_is_a_violation() {
    for base in [ABD, CAS] {
        let read = |values: Vec<u64>| {
            let mut h = LevelHistory::new();
            let w = h.invoke(
                ClientId::new(0),
                KvInput::Write {
                    key: base,
                    value: 1,
                },
                at(0),
            );
            h.ok(w, KvOutput::Written, at(10)).expect("recorded");
            let r = h.invoke(ClientId::new(1), KvInput::Read { key: base }, at(20));
            h.read(r, values, at(30)).expect("recorded");
            h.check().verdict
        };
        assert_eq!(read(vec![1]), Verdict::Pass, "key {base}");
        let siblings = read(vec![1, 7]);
        assert!(
            matches!(&siblings, Verdict::Violation(why) if why.contains("2 values")),
            "key {base}: {siblings:?}"
        );
    }
}
