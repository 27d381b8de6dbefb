//! The program's help lists every subcommand, and subcommands that are not built yet say so
//! and exit non-zero instead of pretending.

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

#[test]
fn demo_is_not_built_yet_and_says_so() {
    let out = synod(&["demo"]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(synod_examples::cli::EXIT_NOT_READY))
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not built yet"), "{err}");
}
