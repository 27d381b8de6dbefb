//! Members under the simulator's nemesis: random crashes, restarts, pauses, partitions,
//! clogs, loss, duplication, reordering and clock faults, then a healed network in which
//! every view must agree on every member.

use std::time::Duration;

use synod_sim::{CrashMode, FaultKind, NemesisConfig};

use crate::cluster::{Scenario, ms};

fn swarm(seed: u64) -> Scenario {
    let nemesis = NemesisConfig::builder()
        .kinds(&FaultKind::ALL)
        // The test's store keeps the generation in whole 8-byte records with no checksum:
        // only the crash modes that lose or tear bytes, none that flip them.
        .crash_modes(&[
            CrashMode::DropUnsynced,
            CrashMode::KeepPrefix,
            CrashMode::TearLast,
        ])
        .interval_mean(Duration::from_millis(700))
        .down_time_max(Duration::from_secs(5))
        .pause_time_max(Duration::from_secs(3))
        .build();
    // More members for a longer hunt: SYNOD_MEMBERSHIP_NODES=<n>.
    let nodes = std::env::var("SYNOD_MEMBERSHIP_NODES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let mut scenario = Scenario::new(nodes, seed);
    scenario.nemesis = nemesis;
    scenario.duration = ms(20_000);
    // Within 50 protocol periods of the heal (crashed members restart then), long before
    // dead members are forgotten (30 s): the views agree by re-announce and refutation,
    // not by forgetting.
    scenario.liveness = Some(ms(5_000));
    scenario
}

#[test]
fn views_agree_after_random_faults_heal() {
    let seeds: u64 = std::env::var("SYNOD_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let mut failed = Vec::new();
    let (mut crashes, mut pauses, mut partitions) = (0, 0, 0);
    for seed in 0..seeds {
        let out = swarm(seed).run();
        crashes += out.crashes;
        pauses += out.pauses;
        partitions += out.partitions;
        if let Some(failure) = out.failure {
            failed.push(format!("seed {seed}: {failure}"));
        }
    }
    println!("{seeds} seeds: {crashes} crashes, {pauses} pauses, {partitions} partitions healed");
    assert!(
        crashes > 0 && pauses > 0 && partitions > 0,
        "the nemesis did not fire"
    );
    assert!(
        failed.is_empty(),
        "{} of {seeds} seeds failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn the_same_seed_gives_the_same_run() {
    for seed in 0..3 {
        let (a, b) = (swarm(seed).run(), swarm(seed).run());
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}");
        assert_eq!(a.events, b.events, "seed {seed}");
    }
}

#[test]
fn the_swarm_catches_both_broken_members() {
    type Break = fn(synod_membership::MemberConfigBuilder) -> synod_membership::MemberConfigBuilder;
    let variants: [(&str, Break); 2] = [
        ("no refutation", |b| b.broken_without_refutation()),
        ("no push-pull", |b| b.broken_without_push_pull()),
    ];
    for (name, broken) in variants {
        let caught = (0..20).find(|&seed| swarm(seed).configure(broken).run().failure.is_some());
        println!("{name}: caught at seed {caught:?}");
        assert!(caught.is_some(), "{name}: not caught in 20 seeds");
    }
}
