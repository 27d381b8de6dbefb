//! The program's help lists every subcommand, and `synod bench` lists exactly the
//! benchmarks that exist.

use std::process::Command;

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
