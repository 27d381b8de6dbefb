//! The `partitions` and `ranges` simulations (`synod sim partitions`, `synod sim ranges`)
//! through their drivers: the correct nodes pass under every fault, and each checker
//! catches its deliberately broken variant (a node that trusts the asker's partition
//! table; a scan page that runs past its range's end).

use std::time::Duration;

use synod_examples::simulate::{partitions, ranges};
use synod_sim::{NemesisConfig, SimConfig, Verdict};

/// Three nodes, six clients, the run's faults as `nemesis` says, 3,000 events of them.
fn config(nemesis: NemesisConfig) -> SimConfig {
    SimConfig::builder(3)
        .clients(6)
        .events_max(3_000)
        .safety_time(Duration::from_secs(2))
        .client_timeout(Duration::from_millis(100))
        .nemesis(nemesis)
        .build()
        .expect("valid config")
}

#[test]
fn stale_clients_write_only_to_owners_and_scans_miss_and_repeat_nothing() {
    for seed in 0..4 {
        let run = partitions::simulate(
            seed,
            config(NemesisConfig::default()),
            partitions::Variant::Correct,
        );
        assert_eq!(
            run.verdict,
            Verdict::Pass,
            "partitions seed {seed}: {:?}",
            run.figures
        );
        let run = ranges::simulate(
            seed,
            config(NemesisConfig::default()),
            ranges::Variant::Correct,
        );
        assert_eq!(
            run.verdict,
            Verdict::Pass,
            "ranges seed {seed}: {:?}",
            run.figures
        );
        assert!(!run.figures[1].starts_with("0 scans"), "{:?}", run.figures);
    }
}

/// The first seed below 5 whose run `run` does not pass, and its verdict.
fn first_catch(run: impl Fn(u64) -> Verdict) -> (u64, Verdict) {
    (0..5)
        .map(|seed| (seed, run(seed)))
        .find(|(_, verdict)| *verdict != Verdict::Pass)
        .expect("caught within 5 seeds")
}

#[test]
fn a_node_that_trusts_the_askers_table_is_caught() {
    let (seed, verdict) = first_catch(|seed| {
        partitions::simulate(
            seed,
            config(NemesisConfig::disabled()),
            partitions::Variant::TrustsAskersTable,
        )
        .verdict
    });
    println!("trusting node caught at seed {seed}: {verdict:?}");
    assert!(
        format!("{verdict:?}").contains("took a write of key"),
        "{verdict:?}"
    );
}

#[test]
fn a_scan_page_past_its_range_end_is_caught() {
    let (seed, verdict) = first_catch(|seed| {
        ranges::simulate(
            seed,
            config(NemesisConfig::disabled()),
            ranges::Variant::ScanPastRangeEnd,
        )
        .verdict
    });
    println!("page past its range caught at seed {seed}: {verdict:?}");
    assert!(
        format!("{verdict:?}").contains("a scan missed key"),
        "{verdict:?}"
    );
}
