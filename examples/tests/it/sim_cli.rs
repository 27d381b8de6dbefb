//! `synod sim`: a seed names a run exactly (same seed, same trace hash), ranges of seeds
//! pass, fault kinds can be chosen, and bad arguments get a clear error and a non-zero exit.

use std::process::{Command, Output};

use synod_examples::simulate::EXIT_USAGE;

fn synod(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(args)
        .output()
        .expect("the synod binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The value of the report line starting with `label`.
fn field(report: &str, label: &str) -> String {
    report
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{report}"))
        .trim()
        .to_owned()
}

/// The lines of the schedule: after the `schedule` heading, up to `coverage`.
fn schedule_lines(report: &str) -> Vec<String> {
    report
        .lines()
        .skip_while(|l| !l.starts_with("schedule"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(str::to_owned)
        .collect()
}

/// The coverage lines, joined.
fn coverage_of(report: &str) -> String {
    report
        .lines()
        .skip_while(|l| !l.starts_with("coverage"))
        .take_while(|l| l.starts_with("coverage") || l.starts_with("            "))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The count of `name` in coverage text (0 if it did not fire).
fn coverage_count(coverage: &str, name: &str) -> usize {
    coverage
        .split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        .map_or(0, |n| n.parse().expect("a count"))
}

#[test]
fn one_seed_passes_and_replays_to_the_same_trace_hash() {
    let first = synod(&["sim", "register", "--seed", "7"]);
    let report = stdout(&first);
    assert_eq!(first.status.code(), Some(0), "{report}{}", stderr(&first));
    assert!(field(&report, "verdict").starts_with("pass"), "{report}");
    assert!(field(&report, "faults").starts_with("kinds=["), "{report}");
    let hash = field(&report, "trace hash");
    assert!(hash.starts_with("0x") && hash.len() == 18, "{hash}");

    let again = synod(&["sim", "register", "--seed", "7"]);
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(field(&stdout(&again), "trace hash"), hash);
    // The whole report is a function of the seed, not only the hash.
    assert_eq!(stdout(&again), report);

    let other = synod(&["sim", "register", "--seed", "8"]);
    assert_ne!(field(&stdout(&other), "trace hash"), hash, "seeds 7 and 8");
}

#[test]
fn raft_kv_passes_and_replays_to_the_same_trace_hash() {
    let run = || synod(&["sim", "raft-kv", "--seed", "7"]);
    let (first, again) = (run(), run());
    let report = stdout(&first);
    assert_eq!(first.status.code(), Some(0), "{report}{}", stderr(&first));
    assert!(field(&report, "verdict").starts_with("pass"), "{report}");
    assert_eq!(stdout(&again), report);

    let out = synod(&["sim", "raft-kv", "--seeds", "0..4", "--nodes", "5"]);
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{report}{}", stderr(&out));
    assert!(report.contains("all 4 seeds of 0..4 passed"), "{report}");
}

/// The number after `label` in `text` (`label 4.2` gives 4.2).
fn number_after(text: &str, label: &str) -> f64 {
    let (_, rest) = text
        .split_once(label)
        .unwrap_or_else(|| panic!("no `{label}` in:\n{text}"));
    rest.split_whitespace()
        .next()
        .and_then(|w| w.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("no number after `{label}` in:\n{text}"))
}

#[test]
fn membership_passes_prints_its_figures_and_replays() {
    let run = || {
        synod(&[
            "sim",
            "membership",
            "--nodes",
            "8",
            "--seed",
            "2",
            "--faults",
            "crash",
        ])
    };
    let (first, again) = (run(), run());
    let report = stdout(&first);
    assert_eq!(first.status.code(), Some(0), "{report}{}", stderr(&first));
    assert!(field(&report, "verdict").starts_with("pass"), "{report}");
    assert_eq!(stdout(&again), report);
    // Crashes were detected, first by one member and then by all, and the views agreed
    // after the heal.
    let first_dead = field(&report, "figures");
    let first_mean = number_after(&first_dead, "held dead: mean");
    let all_mean = number_after(&report, "every live member: mean");
    assert!(
        first_mean > 0.0 && all_mean >= first_mean,
        "{first_mean} {all_mean}:\n{report}"
    );
    assert!(number_after(&report, "views agreed:") >= 0.0, "{report}");

    // More members, every fault kind the seed picks, a range of seeds.
    let out = synod(&["sim", "membership", "--nodes", "32", "--seeds", "0..3"]);
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{report}{}", stderr(&out));
    assert!(report.contains("all 3 seeds of 0..3 passed"), "{report}");

    let out = synod(&["sim", "membership", "--nodes", "1", "--seed", "1"]);
    assert_eq!(out.status.code(), Some(i32::from(EXIT_USAGE)));
    assert!(stderr(&out).contains("2 to 512 nodes"), "{}", stderr(&out));
}

#[test]
fn a_range_of_seeds_passes_on_three_and_five_nodes() {
    for nodes in ["3", "5"] {
        let out = synod(&[
            "sim", "register", "--seeds", "0..6", "--nodes", nodes, "--events", "5000",
        ]);
        let report = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "{report}{}", stderr(&out));
        let seeds: Vec<&str> = report.lines().filter(|l| l.starts_with("seed ")).collect();
        assert_eq!(seeds.len(), 6, "{report}");
        assert!(seeds.iter().all(|l| l.contains(" pass ")), "{report}");
        assert!(report.contains("all 6 seeds of 0..6 passed"), "{report}");
    }
}

#[test]
fn chosen_fault_kinds_are_the_ones_enabled() {
    let out = synod(&[
        "sim",
        "register",
        "--seed",
        "3",
        "--faults",
        "crash,partition,loss",
    ]);
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{report}{}", stderr(&out));
    assert!(
        field(&report, "faults").starts_with("kinds=[Partition, Loss, Crash]"),
        "{report}"
    );
    // The schedule lists each fault with its time and details: seed 3 with these kinds
    // both partitions and crashes.
    let schedule = schedule_lines(&report);
    assert!(
        schedule
            .iter()
            .any(|l| l.contains("s  partition ") && l.contains("<->")),
        "a partition with its cut links: {report}"
    );
    assert!(
        schedule
            .iter()
            .any(|l| l.contains("s  crash n") && l.contains(" mode=") && l.contains(" disk: ")),
        "a crash with its mode and disk effects: {report}"
    );
    assert!(
        schedule.iter().any(|l| l.contains("s  restart n")),
        "{report}"
    );
    assert!(
        !schedule
            .iter()
            .any(|l| l.contains("clock jump") || l.contains("pause")),
        "only the chosen kinds: {report}"
    );
    // The schedule agrees with the coverage counters.
    let count = |needle: &str| schedule.iter().filter(|l| l.contains(needle)).count();
    let coverage = coverage_of(&report);
    assert_eq!(
        count("s  crash n"),
        coverage_count(&coverage, "node.crash"),
        "{report}"
    );
    assert_eq!(
        count("s  restart n"),
        coverage_count(&coverage, "node.restart"),
        "{report}"
    );
    assert_eq!(
        count("s  partition healed"),
        coverage_count(&coverage, "partition.healed"),
        "{report}"
    );

    let calm = stdout(&synod(&[
        "sim", "register", "--seed", "3", "--faults", "none",
    ]));
    assert_eq!(field(&calm, "coverage"), "nothing fired", "{calm}");
    let calm_schedule = schedule_lines(&calm);
    assert_eq!(calm_schedule.len(), 1, "{calm}");
    assert!(
        calm_schedule[0].ends_with("s  all faults healed (liveness phase)"),
        "only the healing: {calm}"
    );
}

#[test]
fn bad_arguments_get_a_clear_error_and_a_non_zero_exit() {
    let cases: &[(&[&str], &str)] = &[
        (&["sim", "paxos", "--seed", "1"], "invalid value 'paxos'"),
        (
            &["sim", "register", "--seeds", "5..x"],
            "is not a seed range",
        ),
        (&["sim", "register", "--seeds", "9..3"], "between 1 and"),
        (&["sim", "register", "--seeds", "10"], "is not a seed range"),
        (
            &["sim", "register", "--seed", "1", "--events", "0"],
            "0 events",
        ),
        (
            &["sim", "register", "--seed", "1", "--nodes", "4"],
            "3 or 5 nodes",
        ),
        (
            &["sim", "register", "--seed", "1", "--faults", "crash,meteor"],
            "`meteor` is not a fault kind",
        ),
        (&["sim", "register"], "--seed"),
        (
            &["sim", "register", "--seed", "1", "--seeds", "0..2"],
            "cannot be used with",
        ),
        (
            &["sim", "register", "--seeds", "0..2", "--history", "h.edn"],
            "--seed",
        ),
        (
            &["sim", "register", "--seed", "1", "--history", "h.txt"],
            "cannot tell the history format of h.txt",
        ),
        (
            &[
                "sim",
                "register",
                "--seed",
                "1",
                "--history",
                "/nonexistent/dir/h.edn",
            ],
            "cannot write the history to /nonexistent/dir/h.edn",
        ),
        (
            &[
                "sim",
                "register",
                "--seed",
                "1",
                "--history",
                "h",
                "--history-format",
                "elle",
            ],
            "jepsen or porcupine",
        ),
    ];
    for (args, expected) in cases {
        let out = synod(args);
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(i32::from(EXIT_USAGE)),
            "{args:?}: {err}"
        );
        assert!(
            err.contains(expected),
            "{args:?}: expected `{expected}` in:\n{err}"
        );
        assert!(stdout(&out).is_empty(), "{args:?} ran anyway");
    }
}

#[test]
fn help_explains_systems_faults_and_exit_codes() {
    let out = synod(&["sim", "--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    for needle in [
        "register",
        "raft-kv",
        "--seeds",
        "--faults",
        "clock-jump",
        "--history",
        "Jepsen's EDN history",
        "porcupine's operations",
        "Exit status",
    ] {
        assert!(help.contains(needle), "`{needle}` missing from:\n{help}");
    }
}

#[test]
fn a_run_writes_its_history_for_other_checkers() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let run = |file: &str, format: Option<&str>| {
        let path = dir.path().join(file);
        let mut args = vec!["sim", "raft-kv", "--seed", "7", "--history"];
        args.push(path.to_str().expect("a UTF-8 path"));
        if let Some(format) = format {
            args.extend(["--history-format", format]);
        }
        let out = synod(&args);
        let report = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "{report}{}", stderr(&out));
        let written = std::fs::read_to_string(&path).expect("the history was written");
        (report, written)
    };
    // The report's counts: `history     N operations: A ok, B failed, C unknown`.
    let counts = |report: &str| -> Vec<usize> {
        field(report, "history")
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect()
    };

    // Jepsen's: an invocation and a completion per operation, one map per line, in order.
    let (report, edn) = run("run.edn", None);
    let [ops, ok, failed, unknown] = counts(&report)[..] else {
        panic!("no counts in {report}")
    };
    assert!(
        report.contains(&format!("(Jepsen's EDN history): {ops} operations")),
        "{report}"
    );
    assert_eq!(edn.lines().count(), 2 * ops);
    for (i, line) in edn.lines().enumerate() {
        assert!(line.starts_with(&format!("{{:index {i}, :time ")), "{line}");
    }
    let typed = |t: &str| edn.matches(&format!(":type :{t},")).count();
    assert_eq!(typed("invoke"), ops);
    assert_eq!(typed("info"), unknown);
    // Failures, and compare-and-sets that did not apply (none here: no CAS in the workload).
    assert_eq!((typed("ok"), typed("fail")), (ok, failed));

    // porcupine's: one object per operation that did not fail.
    let (report, json) = run("run.json", None);
    assert!(report.contains("(porcupine's JSON operations)"), "{report}");
    assert_eq!(json.matches(r#"{"ClientId": "#).count(), ops - failed);
    assert_eq!(
        json.matches(r#""Output": null, "Return": 9223372036854775807}"#)
            .count(),
        unknown
    );
    // The same, named by --history-format whatever the extension.
    let (_, named) = run("run.txt", Some("porcupine"));
    assert_eq!(named, json);
}

/// The number that opens the report's line ending in `label` (a figure of its own line).
fn figure(report: &str, label: &str) -> f64 {
    let line = report
        .lines()
        .find(|l| l.trim_end().ends_with(label))
        .unwrap_or_else(|| panic!("no line ending in `{label}` in:\n{report}"));
    let line = line.strip_prefix("figures").unwrap_or(line);
    number_after(line, "")
}

/// Seed 1 draws loss, crashes, pauses and clock drift; with prepare and lock-wait timeouts
/// shorter than the network's slow tail it made no progress after the heal (8
/// transactions committed, everything else aborted attempt after attempt), so the run
/// checks that transactions commit after the heal, nothing is left in doubt, and every
/// audit sees the bank's total.
#[test]
fn twopc_passes_prints_its_schedule_figures_and_replays() {
    let run = || synod(&["sim", "twopc", "--seed", "1"]);
    let (first, again) = (run(), run());
    let report = stdout(&first);
    assert_eq!(first.status.code(), Some(0), "{report}{}", stderr(&first));
    assert!(field(&report, "verdict").starts_with("pass"), "{report}");
    assert_eq!(stdout(&again), report, "the same seed, the same run");
    let schedule = schedule_lines(&report);
    for fault in ["crash", "loss begins", "pause"] {
        assert!(schedule.iter().any(|l| l.contains(fault)), "{report}");
    }
    assert!(
        figure(&report, "committed after the heal") > 0.0,
        "{report}"
    );
    let committed = number_after(&field(&report, "figures"), "");
    assert!(committed > 0.0, "transactions committed:\n{report}");
    let line = report
        .lines()
        .find(|l| l.contains(" audits, "))
        .unwrap_or_else(|| panic!("no audits in:\n{report}"));
    assert!(
        number_after(line, "") > 0.0,
        "no audit committed:\n{report}"
    );
    assert_eq!(
        number_after(line, "audits,"),
        0.0,
        "an audit off the total:\n{report}"
    );

    let out = synod(&["sim", "twopc", "--seeds", "0..3", "--nodes", "4"]);
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{report}{}", stderr(&out));
    assert!(report.contains("all 3 seeds of 0..3 passed"), "{report}");

    let out = synod(&["sim", "twopc", "--nodes", "9", "--seed", "1"]);
    assert_eq!(out.status.code(), Some(i32::from(EXIT_USAGE)));
    assert!(stderr(&out).contains("3 to 8 nodes"), "{}", stderr(&out));
}

/// Clients with stale partition tables and range caches: each run prints its schedule, its
/// figures and a passing verdict, and `--help` lists both simulations.
#[test]
fn partitions_and_ranges_pass_and_print_their_schedule() {
    for (system, figure) in [
        ("partitions", "writes taken, each by its key's owner;"),
        ("ranges", "keys returned, none missed or repeated"),
    ] {
        let out = synod(&["sim", system, "--seed", "1"]);
        let report = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "{report}{}", stderr(&out));
        assert!(field(&report, "verdict").starts_with("pass"), "{report}");
        assert!(!schedule_lines(&report).is_empty(), "{report}");
        assert!(report.contains(figure), "{report}");
    }
    let help = stdout(&synod(&["sim", "--help"]));
    assert!(
        help.contains("  partitions ") && help.contains("  ranges "),
        "{help}"
    );
}
