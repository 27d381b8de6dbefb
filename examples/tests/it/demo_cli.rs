//! `synod demo` end to end: a short run of a real three-node cluster with its leader
//! killed completes with no acknowledged write lost and a passing linearizability verdict,
//! writes the history it checked for other checkers, and cleans up its directory; a
//! cluster of 4 nodes is refused.

use std::process::Command;

fn synod(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(args)
        .output()
        .expect("the synod binary runs")
}

/// The value of a summary row, e.g. `acknowledged writes lost  0 (of ...)` -> `0`.
fn row<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
}

/// The temporary directory the demo named is gone.
fn assert_directory_removed(stdout: &str) {
    let dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix("data directory "))
        .expect("the directory is named");
    assert!(
        !std::path::Path::new(dir.trim()).exists(),
        "{dir} left behind"
    );
}

#[test]
fn a_short_demo_kills_the_leader_loses_no_acknowledged_write_and_passes() {
    let files = tempfile::tempdir().expect("a temporary directory");
    let history = files.path().join("demo.edn");
    let page = files.path().join("demo.html");
    let out = synod(&[
        "demo",
        "--duration-s",
        "4",
        "--clients",
        "4",
        "--history",
        history.to_str().expect("a UTF-8 path"),
        "--html",
        page.to_str().expect("a UTF-8 path"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let both = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{both}");
    assert_eq!(
        row(&stdout, "acknowledged writes lost"),
        Some("0"),
        "{both}"
    );
    assert_eq!(row(&stdout, "linearizability"), Some("pass"), "{both}");
    for event in [
        "SIGKILL node",
        "elected leader",
        "restart node",
        "caught up",
        "PASS",
    ] {
        assert!(stdout.contains(event), "`{event}` missing:\n{both}");
    }
    let operations: u64 = row(&stdout, "operations")
        .and_then(|n| n.parse().ok())
        .expect("an operation count");
    assert!(operations > 0, "{both}");

    // The history checked (the workload and the final reads), as Jepsen's: an invocation
    // and a completion per operation.
    let checked: usize = stdout
        .lines()
        .find_map(|l| {
            l.split_once("checking ")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("the number of operations checked");
    assert!(
        stdout.contains(&format!("(Jepsen's EDN history): {checked} operations")),
        "{both}"
    );
    let edn = std::fs::read_to_string(&history).expect("the history was written");
    assert_eq!(edn.lines().count(), 2 * checked);
    assert_eq!(edn.matches(":type :invoke,").count(), checked);

    // The page: its size printed, the kill and the restart listed, a leader's and the
    // killed node's lanes, every operation checked, the verdict.
    let html = std::fs::read_to_string(&page).expect("the page was written");
    assert!(
        stdout.contains(&format!(
            "page written to {}: {} bytes",
            page.display(),
            html.len()
        )),
        "{both}"
    );
    for drawn in [
        "SIGKILL node",
        "restart node",
        "\"leader\"",
        "\"down\"",
        &format!("\"opsTotal\":{checked},"),
        "\"verdict\":{\"kind\":\"pass\"",
    ] {
        assert!(html.contains(drawn), "`{drawn}` missing from the page");
    }

    // The temporary directory is gone.
    assert_directory_removed(&stdout);
}

#[test]
fn even_node_counts_and_bad_options_are_refused() {
    for args in [
        &["demo", "--nodes", "4"][..],
        &["demo", "--nodes", "1"],
        &["demo", "--clients", "0"],
    ] {
        let out = synod(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("synod demo: --"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: started anyway");
    }
    let err = String::from_utf8_lossy(&synod(&["demo", "--nodes", "4"]).stderr).into_owned();
    assert!(err.contains("3 or 5"), "{err}");
    // A history file whose format cannot be told, or that cannot be written, is refused
    // before any node starts.
    for (path, expected) in [
        ("h.txt", "cannot tell the history format of h.txt"),
        ("/nonexistent/dir/h.json", "cannot write the history to"),
    ] {
        let out = synod(&["demo", "--history", path]);
        assert_eq!(out.status.code(), Some(2), "{path}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("synod demo: "), "{path}: {err}");
        assert!(err.contains(expected), "{path}: {err}");
        assert!(out.stdout.is_empty(), "{path}: started anyway");
    }
}

#[test]
fn the_leaderless_demo_shows_a_stale_read_at_one_none_at_quorum_hints_and_a_join() {
    let out = synod(&["demo", "--system", "leaderless"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let both = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{both}");
    // The story, in order.
    let mut at = 0;
    for event in [
        "partition: node 3 cut off (SIGSTOP)",
        "hints for node 3",
        "node 3 back alone",
        "read at ONE through node 3:",
        "read at QUORUM through node 3:",
        "heal:",
        "hints delivered after the heal",
        "node 5 joined",
        "PASS",
    ] {
        let found = stdout[at..].find(event);
        assert!(
            found.is_some(),
            "`{event}` missing (or out of order):\n{both}"
        );
        at += found.unwrap_or(0);
    }
    // What each step showed, from its summary rows.
    for check in [
        "a read at ONE is stale",
        "no read at QUORUM is stale",
        "after the heal every read at QUORUM is v2",
        "hints delivered after the heal",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(check))
            .unwrap_or_default();
        assert!(line.trim_end().ends_with("yes"), "{check}: {line}\n{both}");
    }
    let stale: usize = stdout
        .lines()
        .find_map(|l| {
            l.split_once("read at ONE through node 3: ")?
                .1
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .expect("the stale count");
    assert!(stale > 0, "{both}");
    assert_directory_removed(&stdout);
}
