//! `synod demo` end to end: a short run of a real three-node cluster with its leader
//! killed completes with no acknowledged write lost and a passing linearizability verdict,
//! and cleans up its directory; a cluster of 4 nodes is refused.

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

#[test]
fn a_short_demo_kills_the_leader_loses_no_acknowledged_write_and_passes() {
    let out = synod(&["demo", "--duration-s", "4", "--clients", "4"]);
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

    // The temporary directory is gone.
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
}
