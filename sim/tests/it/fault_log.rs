//! The fault log: it agrees with the coverage counters, it is deterministic, and it is
//! bounded.

use synod_sim::{
    Counter, Coverage, Fault, FaultKind, FaultSource, NemesisConfig, SimConfig, SimTime,
};

use crate::faults::{probe_run, probe_run_with};

/// The counters the log's nemesis entries imply.
fn counted(log: &synod_sim::FaultLog) -> Coverage {
    let mut c = Coverage::default();
    for e in log.entries() {
        match &e.fault {
            Fault::PartitionStart { shape, .. } => {
                c.bump(Counter::for_partition(
                    shape.expect("nemesis partitions have a shape"),
                ));
            }
            Fault::PartitionHealed => c.bump(Counter::PartitionHealed),
            Fault::Clog { .. } => c.bump(Counter::Clog),
            Fault::LossStart { .. } => c.bump(Counter::LossPeriod),
            Fault::DuplicateStart { .. } => c.bump(Counter::DuplicatePeriod),
            Fault::ReorderStart { .. } => c.bump(Counter::ReorderPeriod),
            Fault::ClockJump { .. } => c.bump(Counter::ClockJump),
            Fault::ClockDrift { .. } => c.bump(Counter::ClockDrift),
            Fault::Pause { .. } => c.bump(Counter::Pause),
            Fault::Resume { .. } => c.bump(Counter::Resume),
            Fault::Restart { .. } => c.bump(Counter::Restart),
            Fault::Crash { disk, .. } => {
                c.bump(Counter::Crash);
                if disk.unsynced_ops + disk.dir_ops > 0 {
                    c.bump(Counter::DiskUnsyncedAtCrash);
                }
                if disk.torn {
                    c.bump(Counter::DiskTornWrite);
                }
                if disk.bits_flipped > 0 {
                    c.bump(Counter::DiskBitFlip);
                }
            }
            _ => {}
        }
    }
    c
}

/// The counters of faults applied (message fates and client timeouts are not faults the
/// log records).
const APPLIED: [Counter; 18] = [
    Counter::PartitionHalves,
    Counter::PartitionIsolateOne,
    Counter::PartitionOneWay,
    Counter::PartitionBridge,
    Counter::PartitionMajoritiesRing,
    Counter::PartitionHealed,
    Counter::Clog,
    Counter::LossPeriod,
    Counter::DuplicatePeriod,
    Counter::ReorderPeriod,
    Counter::Crash,
    Counter::Restart,
    Counter::DiskUnsyncedAtCrash,
    Counter::DiskTornWrite,
    Counter::DiskBitFlip,
    Counter::Pause,
    Counter::Resume,
    Counter::ClockJump,
];

#[test]
fn the_log_matches_the_coverage_counters_and_is_in_time_order() {
    let mut total = Coverage::default();
    for seed in 0..12 {
        let (report, _) = probe_run(NemesisConfig::default(), seed);
        let log = &report.faults;
        assert_eq!(log.dropped(), 0);
        let from_log = counted(log);
        for c in APPLIED.into_iter().chain([Counter::ClockDrift]) {
            assert_eq!(
                from_log.get(c),
                report.coverage.get(c),
                "seed {seed}: {}",
                c.name()
            );
        }
        let times: Vec<SimTime> = log.entries().map(|e| e.at).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "seed {seed}");
        // The liveness phase begins with one AllHealed entry at the healing time, and
        // everything after it comes from the healing (no more nemesis faults).
        let healed = report
            .healed_at
            .expect("the probe run has a liveness phase");
        let pos = log
            .entries()
            .position(|e| e.fault == Fault::AllHealed)
            .expect("AllHealed is logged");
        assert!(
            log.entries()
                .skip(pos)
                .all(|e| e.source == FaultSource::Heal && e.at == healed)
        );
        assert!(
            log.entries()
                .take(pos)
                .all(|e| e.source == FaultSource::Nemesis)
        );
        total.merge(&report.coverage);
    }
    // The sample exercised every kind of applied fault, so every kind of entry was compared.
    for c in APPLIED {
        assert!(total.get(c) > 0, "{} never fired in the sample", c.name());
    }
}

#[test]
fn same_seed_same_log() {
    for seed in [3, 17, 99] {
        let (a, _) = probe_run(NemesisConfig::default(), seed);
        let (b, _) = probe_run(NemesisConfig::default(), seed);
        assert!(!a.faults.is_empty(), "seed {seed}");
        assert_eq!(a.faults, b.faults, "seed {seed}");
        assert_eq!(a.faults.to_string(), b.faults.to_string());
        assert_eq!(a.trace_hash, b.trace_hash);
    }
    let (a, _) = probe_run(NemesisConfig::default(), 3);
    let (b, _) = probe_run(NemesisConfig::default(), 4);
    assert_ne!(a.faults, b.faults, "different seeds, different schedules");
}

#[test]
fn crashes_record_what_the_disk_lost() {
    let nemesis = NemesisConfig::builder()
        .swarm(false)
        .kinds(&[FaultKind::Crash])
        .crash_modes(&[synod_sim::CrashMode::TearLast])
        .build();
    let mut torn = 0;
    for seed in 0..4 {
        let (report, _) = probe_run(nemesis.clone(), seed);
        for e in report.faults.entries() {
            if let Fault::Crash { mode, disk, .. } = &e.fault {
                assert_eq!(*mode, synod_sim::CrashMode::TearLast);
                assert!(disk.ops_lost <= disk.unsynced_ops);
                if disk.torn {
                    torn += 1;
                    assert!(e.to_string().contains(" torn"), "{e}");
                }
            }
        }
    }
    assert!(torn > 0, "no crash tore a write");
}

#[test]
fn the_cap_keeps_the_newest_entries_and_leaves_the_trace_alone() {
    let build = |cap: Option<usize>| {
        let b = SimConfig::builder(5)
            .clients(0)
            .safety_time(std::time::Duration::from_millis(500))
            .nemesis(NemesisConfig::default());
        match cap {
            Some(c) => b.fault_log_max(c),
            None => b,
        }
        .build()
        .expect("valid")
    };
    let (full, _) = probe_run_with(build(None), 5);
    let (capped, _) = probe_run_with(build(Some(3)), 5);
    let (none, _) = probe_run_with(build(Some(0)), 5);
    assert!(full.faults.len() > 3);
    assert_eq!(capped.faults.len(), 3);
    assert_eq!(capped.faults.dropped(), full.faults.len() as u64 - 3);
    let tail: Vec<_> = full.faults.entries().skip(full.faults.len() - 3).collect();
    assert_eq!(capped.faults.entries().collect::<Vec<_>>(), tail);
    assert!(none.faults.is_empty());
    assert_eq!(none.faults.dropped(), full.faults.len() as u64);
    assert_eq!(full.trace_hash, capped.trace_hash);
    assert_eq!(full.trace_hash, none.trace_hash);
}
