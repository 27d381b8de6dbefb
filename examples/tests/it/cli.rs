//! The program's help lists every subcommand and every system, each subcommand takes the
//! system to run with `--system` and refuses an unknown one naming the known ones, and
//! `synod bench` lists exactly the benchmarks that exist.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use synod_examples::systems::{DEFAULT, SYSTEMS};

fn synod(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(args)
        .output()
        .expect("the synod binary runs")
}

#[test]
fn help_lists_every_subcommand() {
    let out = synod(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in ["demo", "node", "kv", "sim", "wal", "bench"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(sub)),
            "`{sub}` missing from:\n{help}"
        );
    }
}

/// The `[[bench]]` names declared in a crate's manifest.
fn declared_benches(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_bench = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bench = line == "[[bench]]";
        } else if in_bench && let Some(rest) = line.strip_prefix("name") {
            names.push(
                rest.trim_start_matches([' ', '='])
                    .trim_matches('"')
                    .to_string(),
            );
        }
    }
    names
}

#[test]
fn bench_lists_exactly_the_benchmarks_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let mut declared = Vec::new();
    for dir in std::fs::read_dir(root)
        .expect("workspace root")
        .map(|e| e.expect("entry").path())
    {
        let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let Some(folder) = dir.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        for name in declared_benches(&manifest) {
            declared.push(format!("synod-{folder} {name}"));
        }
    }
    declared.sort();
    let mut listed: Vec<String> = synod_examples::cli::BENCHES
        .iter()
        .map(|b| format!("{} {}", b.package, b.name))
        .collect();
    listed.sort();
    assert_eq!(
        listed, declared,
        "synod bench's list and the manifests' [[bench]] targets differ"
    );

    let out = synod(&["bench"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for b in synod_examples::cli::BENCHES {
        let command = format!("cargo bench -p {} --bench {}", b.package, b.name);
        assert!(text.contains(&command), "`{command}` missing from:\n{text}");
    }
}

#[test]
fn help_lists_every_system_and_each_subcommand_takes_one() {
    let out = synod(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for system in SYSTEMS {
        assert!(
            help.lines()
                .any(|l| l.contains(system.name) && l.contains(system.about)),
            "`{}` missing from:\n{help}",
            system.name
        );
    }
    for sub in ["demo", "node", "kv", "sim"] {
        let out = synod(&[sub, "--help"]);
        assert!(out.status.success(), "synod {sub} --help");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("--system <NAME>") && help.contains(&format!("[default: {DEFAULT}]")),
            "synod {sub} takes no --system:\n{help}"
        );
    }
}

/// `synod node` for `system`: node 1 of a one-node cluster on free ports, its data in `data`.
fn node_args<'a>(system: &'a str, data: &'a str) -> [&'a str; 13] {
    [
        "node",
        "--system",
        system,
        "--id",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--client",
        "127.0.0.1:0",
        "--peers",
        "1=127.0.0.1:0",
        "--data-dir",
        data,
    ]
}

#[test]
fn an_unknown_system_is_refused_with_the_names_of_the_known_ones() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("n1");
    let node = node_args("etcd", data.to_str().expect("a UTF-8 path"));
    let kv = ["kv", "--system", "etcd", "get", "k"];
    let demo = ["demo", "--system", "etcd"];
    let sim = ["sim", "--system", "etcd", "--seed", "1"];
    for args in [&node[..], &kv, &demo, &sim] {
        let out = synod(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("etcd"), "{args:?}: {stderr}");
        for system in SYSTEMS {
            assert!(stderr.contains(system.name), "{args:?}: {stderr}");
        }
    }
    assert!(
        !dir.path().join("n1").exists(),
        "a refused node touched its data directory"
    );
}

/// The trace hash `synod sim` prints for `args`.
fn trace_hash(args: &[&str]) -> String {
    let out = synod(args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{args:?}: {stdout}");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("trace hash"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|| panic!("{args:?} printed no trace hash:\n{stdout}"))
}

#[test]
fn sim_runs_the_simulation_of_the_system_named_or_the_default_one() {
    let by_simulation = trace_hash(&["sim", "raft-kv", "--seed", "5", "--events", "300"]);
    let by_system = trace_hash(&["sim", "--system", DEFAULT, "--seed", "5", "--events", "300"]);
    let by_default = trace_hash(&["sim", "--seed", "5", "--events", "300"]);
    assert_eq!(by_system, by_simulation);
    assert_eq!(by_default, by_simulation);
    // The two ways of naming it are one too many at once.
    let out = synod(&["sim", "register", "--system", DEFAULT, "--seed", "5"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn node_starts_the_system_named() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("n1");
    let mut child = Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(node_args(DEFAULT, data.to_str().expect("a UTF-8 path")))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the synod binary runs");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(60));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("the node said where it listens");
    assert!(
        line.starts_with("synod node 1: peers on 127.0.0.1:") && line.contains("RESP clients on"),
        "{line}"
    );
    assert!(
        data.join("synod-node").is_file(),
        "the node claimed no data directory"
    );
}

#[test]
fn kv_refuses_an_empty_read_level_before_dialing_any_node() {
    // Port 9 (discard) on loopback: nothing listens, so a kv that dialed would fail with a
    // connection error instead of naming the flag.
    for system in ["consistent-core", "leaderless"] {
        let out = synod(&[
            "kv",
            "--system",
            system,
            "--addr",
            "127.0.0.1:9",
            "--read",
            "",
            "get",
            "k",
        ]);
        assert_eq!(out.status.code(), Some(2), "{system}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--read needs a level"), "{system}: {err}");
    }
}
