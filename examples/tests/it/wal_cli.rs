//! `synod wal check` and `synod wal dump` against logs these tests write, healthy and damaged.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};

use synod_wal::{FileStorage, LogIndex, Wal, WalConfig};

fn synod(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(args)
        .output()
        .expect("the synod binary runs")
}

/// Writes `records` synced records of 200 bytes each across several small segments.
fn write_log(dir: &Path, records: u32) {
    let config = WalConfig::builder()
        .segment_bytes_max(8 * 1024)
        .build()
        .expect("valid config");
    let (wal, _) = Wal::open(FileStorage::new(dir).expect("log dir"), config).expect("open log");
    wal.append_batch((0..records).map(|i| format!("record {i:04} ").repeat(16).into_bytes()))
        .expect("append");
    assert_eq!(wal.last_index(), LogIndex::new(u64::from(records)));
}

fn segments(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("log dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wal"))
        .collect();
    names.sort();
    names
}

#[test]
fn check_reports_a_healthy_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), 120);
    let out = synod(&["wal", "check", dir.path().to_str().expect("utf-8 path")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("records: 120"), "{stdout}");
    assert!(stdout.contains("first index: 1"), "{stdout}");
    assert!(stdout.contains("last index: 120"), "{stdout}");
    assert!(stdout.contains("corruption: none"), "{stdout}");
}

#[test]
fn check_reports_a_bit_flip_in_a_closed_segment_with_its_location() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), 120);
    let names = segments(dir.path());
    assert!(names.len() >= 3, "expected several segments, got {names:?}");
    // Damage the middle of the first (closed, durable) segment: valid records follow it.
    let victim = dir.path().join(&names[0]);
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&victim)
        .expect("segment");
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, 2000).expect("read");
    file.write_all_at(&[byte[0] ^ 0x10], 2000).expect("write");
    file.sync_all().expect("sync");

    let out = synod(&["wal", "check", dir.path().to_str().expect("utf-8 path")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(i32::from(synod_examples::cli::EXIT_DAMAGED)),
        "{stdout}"
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("corruption:"))
        .expect("a corruption line");
    assert!(line != "corruption: none", "{stdout}");
    assert!(
        line.contains(&names[0]),
        "the report names the damaged segment: {line}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("is damaged"));
}

#[test]
fn dump_prints_records_from_an_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), 50);
    let out = synod(&[
        "wal",
        "dump",
        dir.path().to_str().expect("utf-8 path"),
        "--from",
        "10",
        "--limit",
        "3",
    ]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].trim_start().starts_with("10 "), "{stdout}");
    assert!(lines[0].contains("record 0009"), "{stdout}");
    assert!(lines[2].trim_start().starts_with("12 "), "{stdout}");
}

#[test]
fn check_of_a_missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-log");
    let out = synod(&["wal", "check", missing.to_str().expect("utf-8 path")]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(synod_examples::cli::EXIT_ERROR))
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read the log"), "{err}");
}

/// A reader that stops early (`synod wal dump DIR | head -1`) ends the program quietly
/// with the status of a process killed by SIGPIPE, not with a panic.
#[test]
fn dump_into_a_closed_pipe_exits_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let dir = tempfile::tempdir().expect("tempdir");
    // Far more output than a pipe buffers (64 KiB): about 1,500 lines of 100 bytes.
    write_log(dir.path(), 1500);
    let mut child = Command::new(env!("CARGO_BIN_EXE_synod"))
        .args([
            "wal",
            "dump",
            dir.path().to_str().expect("utf-8 path"),
            "--limit",
            "1500",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the synod binary runs");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut first)
        .expect("a first line");
    assert!(first.trim_start().starts_with("1 "), "{first}");
    // The reader is dropped here: the program's next write finds the pipe closed.
    let out = child.wait_with_output().expect("the program ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        out.status.code(),
        Some(synod_examples::output::EXIT_BROKEN_PIPE),
        "{stderr}"
    );
}
