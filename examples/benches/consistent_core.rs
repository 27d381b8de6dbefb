//! Headline benchmark: a three-node Consistent Core cluster of real `synod node` processes
//! on loopback, with durable write-ahead logs, against the physical limits it sits on,
//! every baseline measured in the same run.
//!
//! Prints one `ratio <name> <value>` line per figure:
//!
//! - `core.latency_1c_vs_floor`: p50 latency of a `SET` sent by one client to the leader
//!   (it returns once the entry is committed: durable on the leader and on a follower),
//!   over the floor: p50 of a raw `pwrite` + `fdatasync` of one such entry's WAL record
//!   into a pre-written file, plus two p50 loopback TCP round trips (a blocking 64-byte
//!   ping-pong: client to leader, leader to follower). Lower is better; the goal is 2.0
//!   at most.
//! - `core.throughput_64c_vs_ceiling`: committed `SET`s per second with 64 clients (one
//!   connection and one blocking request in flight each), over the write-ahead log's
//!   group-commit ceiling: 64 x the raw `pwrite` + `fdatasync` rate at the size of a batch
//!   of 64 such records, the method of synod-wal's `throughput` bench. Higher is better;
//!   the goal is 0.3 at least.
//! - `core.throughput_64c_p16_vs_ceiling`: the same with pipelining clients:
//!   `redis-benchmark -c 64 -P 16 -t set -d 32` against the leader, over the same ceiling
//!   (printed only when `redis-benchmark` is installed; the bench says so when it is not).
//!   The goal is 0.5 at least.
//!
//! Each ratio line carries its baseline's own figures after the ratio.
//!
//! The baselines are measured while one thread per core spins: on an idle virtual machine
//! of this project, a lone `fdatasync` waits for the guest's next timer tick to notice the
//! completed write (about 4 ms instead of about 0.1 ms), and a blocking ping-pong pays a
//! sleeping core's wake-up on every message (up to about 100 us a round trip instead of
//! 20 to 56 us): both are the guest's wake-up latency, not the disk's or the network's.
//! The bench prints the idle figures too, for information.
//!
//! Baseline and cluster repetitions alternate, so that both see the same machine; each
//! figure is printed as median and min-max over the repetitions, and each ratio is the
//! ratio of the medians.
//!
//! The nodes are the `synod` binary cargo builds for this package (`CARGO_BIN_EXE_synod`,
//! set by cargo for benches), with their data directories and the raw baseline file in a
//! temporary directory under Cargo's target directory (`CARGO_TARGET_TMPDIR`), on the
//! same file system as the workspace (not a tmpfs); the bench prints the file system type.
//! Each node runs under a small `sh` watchdog holding a pipe from the bench: when the bench
//! ends, however it ends (a return, a panic, Ctrl-C, even SIGKILL), the pipe closes and
//! the watchdog kills its node with SIGKILL. On a normal exit or a panic the data
//! directories are removed too.
//!
//! `SYNOD_BENCH_QUICK=1` runs five short repetitions and finishes in well under 60
//! seconds; without it, seven longer ones (about a minute and a half on a quiet machine).

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use synod_consensus::{Entry, LogIndex, Payload, Term};
use synod_examples::consistent_core::client::Client;
use synod_examples::consistent_core::kv::{KvCommand, LogCommand, PutCondition};
use synod_examples::resp::Value;
use synod_wal::format::record_bytes;

#[path = "support/baseline.rs"]
mod baseline;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/load.rs"]
mod load;
use baseline::{
    PING_BYTES, awake, prewritten, raw_fdatasync_rate, raw_fdatasync_times, tcp_rtt_times,
};
use cluster::{Cluster, Plan, file_system, p50_us, report};

/// Clients of the throughput figure.
const CLIENTS: usize = 64;
/// Bytes of each value written.
const VALUE_BYTES: usize = 32;
/// Keys per client in the throughput figure (the key space is bounded, as with
/// `redis-benchmark -r`, so that snapshots stay small).
const KEYS_PER_CLIENT: usize = 256;

/// The WAL record of a `SET` as the leader logs it: a plain (sessionless) put of a key
/// like the ones the clients write, in an entry with a realistic index and clock.
fn set_record_bytes() -> (usize, usize) {
    let command = LogCommand::Plain {
        time: 1_790_000_000_000,
        command: KvCommand::Put {
            key: key(CLIENTS - 1, KEYS_PER_CLIENT - 1).into_bytes(),
            value: vec![b'v'; VALUE_BYTES],
            condition: PutCondition::Always,
        },
    };
    let entry = Entry {
        term: Term::new(1),
        index: LogIndex(100_000),
        payload: Payload::Command(Bytes::from(command.encode())),
    };
    let payload = postcard::to_stdvec(&entry).expect("postcard encodes").len();
    (payload, record_bytes(payload))
}

fn key(client: usize, i: usize) -> String {
    format!("key:{client:02}:{:03}", i % KEYS_PER_CLIENT)
}

// ---------------------------------------------------------------------------------------
// Baselines.

fn set(client: &mut Client, key: &str, value: &[u8]) -> bool {
    matches!(
        client.call(&[b"SET", key.as_bytes(), value]),
        Ok(Value::Simple(ref ok)) if ok == "OK"
    )
}

/// p50 latency of `samples` SETs, one at a time, by one client.
fn core_1c_p50_us(client: &mut Client, samples: usize, failures: &mut u64) -> f64 {
    let value = vec![b'v'; VALUE_BYTES];
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples {
        let start = Instant::now();
        if !set(client, &key(CLIENTS, i), &value) {
            *failures += 1;
        }
        times.push(start.elapsed());
    }
    p50_us(&mut times)
}

/// `CLIENTS` clients, each with its own connection, SETting for `duration`: committed
/// SETs per second.
fn core_64c_rate(leader: &str, duration: Duration, failures: &mut u64) -> f64 {
    let value = vec![b'v'; VALUE_BYTES];
    let (run, (), ()) = load::closed_loop(
        CLIENTS,
        duration,
        |_| cluster::connected(leader),
        |client, c, i| set(client, &key(c, i as usize), &value),
        || (),
    );
    *failures += run.failures;
    run.rate
}

/// `redis-benchmark -c 64 -P 16 -t set -d 32` against `leader`, alternating with the
/// ceiling as the other figures do: the medians of its SETs per second and of the
/// ceiling, or `None` if `redis-benchmark` is not installed.
fn redis_benchmark_rate(leader: &str, plan: &Plan, raw: &File, batch: usize) -> Option<(f64, f64)> {
    let (host, port) = leader.rsplit_once(':')?;
    // A few seconds' worth of SETs at the rates seen here.
    let requests = if plan.reps == 5 { 100_000 } else { 400_000 };
    let (mut rates, mut ceilings) = (Vec::new(), Vec::new());
    for _ in 0..plan.reps {
        let out = Command::new("redis-benchmark")
            .args([
                "-h",
                host,
                "-p",
                port,
                "-c",
                &CLIENTS.to_string(),
                "-P",
                "16",
            ])
            .args([
                "-t",
                "set",
                "-d",
                &VALUE_BYTES.to_string(),
                "-r",
                "16384",
                "-q",
            ])
            .args(["-n", &requests.to_string()])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        // `SET: 123456.79 requests per second, p50=...` (after carriage-return progress).
        let rate: f64 = text
            .rsplit("SET: ")
            .next()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        rates.push(rate);
        ceilings.push(awake(|| {
            CLIENTS as f64 * raw_fdatasync_rate(raw, batch, plan.rep)
        }));
    }
    let got = report(
        "core committed SETs, redis-benchmark -c 64 -P 16",
        "writes/s",
        &rates,
    );
    let base = report("ceiling, measured beside it", "writes/s", &ceilings);
    Some((got, base))
}

fn main() {
    let plan = Plan::new();
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temporary directory");
    let (payload, record) = set_record_bytes();
    let batch = CLIENTS * record;
    println!(
        "synod consistent_core benchmark: 3 nodes of {}; data in {} ({}); {} reps",
        env!("CARGO_BIN_EXE_synod"),
        root.path().display(),
        file_system(root.path()),
        plan.reps
    );
    println!(
        "a SET of a {VALUE_BYTES} B value is a {payload} B entry, a {record} B WAL record; \
         a group-commit batch of {CLIENTS} is {batch} B"
    );
    let raw = prewritten(root.path());
    let mut cluster = Cluster::start(root.path(), 3);
    let leader = cluster.wait_leader();
    println!("leader: {leader}");

    let mut one = Client::new(std::slice::from_ref(&leader)).with_timeout(Duration::from_secs(20));
    // Warm up: connections, server threads, the page cache, the log's first segment.
    let mut failures = 0u64;
    core_1c_p50_us(&mut one, plan.samples / 4, &mut failures);
    core_64c_rate(&leader, plan.rep / 2, &mut failures);
    failures = 0;

    let (mut fsync, mut idle, mut rtt, mut rtt_idle) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut floor, mut lat, mut ceiling, mut rate) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..plan.reps {
        let f = p50_us(&mut awake(|| {
            raw_fdatasync_times(&raw, record, plan.samples)
        }));
        idle.push(p50_us(&mut raw_fdatasync_times(
            &raw,
            record,
            plan.samples / 4,
        )));
        let r = p50_us(&mut awake(|| tcp_rtt_times(plan.samples)));
        rtt_idle.push(p50_us(&mut tcp_rtt_times(plan.samples / 4)));
        fsync.push(f);
        rtt.push(r);
        floor.push(f + 2.0 * r);
        lat.push(core_1c_p50_us(&mut one, plan.samples, &mut failures));
        ceiling.push(awake(|| {
            CLIENTS as f64 * raw_fdatasync_rate(&raw, batch, plan.rep)
        }));
        rate.push(core_64c_rate(&leader, plan.rep, &mut failures));
        cluster.check_running();
    }

    let fsync_p50 = report(
        &format!("baseline pwrite+fdatasync {record} B p50, every core kept awake"),
        "us",
        &fsync,
    );
    report(
        "(for information: the same with no core kept awake, p50)",
        "us",
        &idle,
    );
    let rtt_p50 = report(
        &format!("baseline loopback TCP ping-pong {PING_BYTES} B RTT p50, every core kept awake"),
        "us",
        &rtt,
    );
    report(
        "(for information: the same with no core kept awake, p50)",
        "us",
        &rtt_idle,
    );
    let base = report("floor = fdatasync + 2 RTT", "us", &floor);
    let got = report("core SET latency, 1 client, p50", "us", &lat);
    println!(
        "ratio core.latency_1c_vs_floor {:.3} (SET p50 {got:.1} us; floor {base:.1} us = fdatasync {fsync_p50:.1} + 2 x ping-pong {rtt_p50:.1})",
        got / base
    );

    let base = report(
        &format!("ceiling {CLIENTS} x pwrite+fdatasync of {batch} B, every core kept awake"),
        "writes/s",
        &ceiling,
    );
    let got = report(
        &format!("core committed SETs, {CLIENTS} clients"),
        "writes/s",
        &rate,
    );
    println!(
        "ratio core.throughput_64c_vs_ceiling {:.3} ({got:.0} SETs/s; ceiling {base:.0}/s = {CLIENTS} x fdatasync rate at {batch} B)",
        got / base
    );
    match redis_benchmark_rate(&leader, &plan, &raw, batch) {
        Some((got, base)) => println!(
            "ratio core.throughput_64c_p16_vs_ceiling {:.3} ({got:.0} SETs/s by redis-benchmark -c {CLIENTS} -P 16; ceiling {base:.0}/s)",
            got / base
        ),
        None => println!(
            "redis-benchmark is not installed: core.throughput_64c_p16_vs_ceiling not measured"
        ),
    }
    if failures > 0 {
        println!("warning: {failures} SETs failed or were refused during the measurements");
    }
}
