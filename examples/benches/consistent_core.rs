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

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use synod_consensus::{Entry, LogIndex, Payload, Term};
use synod_examples::consistent_core::client::Client;
use synod_examples::consistent_core::kv::{KvCommand, LogCommand, PutCondition};
use synod_examples::resp::Value;
use synod_wal::format::record_bytes;

#[path = "support/cluster.rs"]
mod cluster;
use cluster::{Cluster, file_system, p50_us, report};

/// Clients of the throughput figure.
const CLIENTS: usize = 64;
/// Bytes of each value written.
const VALUE_BYTES: usize = 32;
/// Keys per client in the throughput figure (the key space is bounded, as with
/// `redis-benchmark -r`, so that snapshots stay small).
const KEYS_PER_CLIENT: usize = 256;
/// Bytes of one message of the TCP ping-pong baseline.
const PING_BYTES: usize = 64;
/// Size of the pre-written file of the raw baseline.
const RAW_FILE_BYTES: usize = 64 << 20;

struct Plan {
    reps: usize,
    /// Samples per repetition of a latency figure (fdatasync, ping-pong, 1-client SET).
    samples: usize,
    /// How long one repetition of a rate figure runs.
    rep: Duration,
}

fn plan() -> Plan {
    if cluster::quick() {
        Plan {
            reps: 5,
            samples: 200,
            rep: Duration::from_millis(700),
        }
    } else {
        Plan {
            reps: 7,
            samples: 2000,
            rep: Duration::from_secs(3),
        }
    }
}

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

/// A pre-written file (zeros, synced) for the raw baseline.
fn prewritten(dir: &Path) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("raw.bin"))
        .expect("raw baseline file");
    let zeros = vec![0u8; 1 << 20];
    for at in (0..RAW_FILE_BYTES).step_by(zeros.len()) {
        file.write_all_at(&zeros, at as u64).expect("pre-write");
    }
    file.sync_all().expect("sync");
    file
}

/// p50 latency of `pwrite` + `fdatasync` of `bytes`, written round and round the file.
fn raw_fdatasync_p50_us(file: &File, bytes: usize, samples: usize) -> f64 {
    let slots = RAW_FILE_BYTES / bytes;
    let buf = vec![0x5au8; bytes];
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples {
        let start = Instant::now();
        file.write_all_at(&buf, ((i % slots) * bytes) as u64)
            .expect("pwrite");
        file.sync_data().expect("fdatasync");
        times.push(start.elapsed());
    }
    p50_us(&mut times)
}

/// `pwrite` + `fdatasync` of `bytes` at a time, for `duration`: writes per second.
fn raw_fdatasync_rate(file: &File, bytes: usize, duration: Duration) -> f64 {
    let slots = RAW_FILE_BYTES / bytes;
    let buf = vec![0x5au8; bytes];
    let start = Instant::now();
    let mut ops = 0usize;
    while ops < 3 || start.elapsed() < duration {
        file.write_all_at(&buf, ((ops % slots) * bytes) as u64)
            .expect("pwrite");
        file.sync_data().expect("fdatasync");
        ops += 1;
    }
    ops as f64 / start.elapsed().as_secs_f64()
}

/// Runs `f` while one thread per core spins, so that no core idles: on this project's
/// virtual machines the disk's completion interrupt goes to one core, and if that core is
/// idle the guest notices the completed write only at its next timer tick, so a lone
/// `fdatasync` takes about 4 ms instead of about 0.1 ms. That is the guest's wake-up
/// latency, not the disk's; the cluster, busy while it commits, mostly does not pay it.
/// The disk baselines are measured this way (and the idle figure printed beside them).
fn awake<T>(f: impl FnOnce() -> T) -> T {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let stop = Arc::new(AtomicBool::new(false));
    let spinners: Vec<_> = (0..cores)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                // Plain work, not `spin_loop` (a PAUSE loop can make the hypervisor
                // deschedule the virtual CPU, which is what this must prevent).
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            })
        })
        .collect();
    let result = f();
    stop.store(true, Ordering::Relaxed);
    for s in spinners {
        s.join().expect("spinner");
    }
    result
}

/// p50 round trip of a blocking 64-byte ping-pong over loopback TCP (a fresh echo thread
/// and connection per repetition).
fn tcp_rtt_p50_us(samples: usize) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let mut buf = [0u8; PING_BYTES];
        while s.read_exact(&mut buf).is_ok() {
            if s.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut buf = [0x5au8; PING_BYTES];
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        s.write_all(&buf).expect("ping");
        s.read_exact(&mut buf).expect("pong");
        times.push(start.elapsed());
    }
    drop(s);
    echo.join().expect("echo thread");
    p50_us(&mut times)
}

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
    let barrier = Arc::new(Barrier::new(CLIENTS + 1));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (barrier, done, failed) = (barrier.clone(), done.clone(), failed.clone());
            let start_at = start_at.clone();
            let leader = leader.to_string();
            std::thread::spawn(move || {
                let mut client = Client::new(&[leader]).with_timeout(Duration::from_secs(20));
                let value = vec![b'v'; VALUE_BYTES];
                // Connect (and warm the connection's server thread) before the clock runs.
                let _ = client.call(&[b"PING"]);
                barrier.wait();
                let end = start_at
                    .lock()
                    .expect("lock")
                    .expect("set before the start")
                    + duration;
                let mut i = 0;
                while Instant::now() < end {
                    if set(&mut client, &key(c, i), &value) {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    let start = Instant::now();
    *start_at.lock().expect("lock") = Some(start);
    barrier.wait();
    for t in threads {
        t.join().expect("client thread");
    }
    *failures += failed.load(Ordering::Relaxed);
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
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
    let plan = plan();
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
        let f = awake(|| raw_fdatasync_p50_us(&raw, record, plan.samples));
        idle.push(raw_fdatasync_p50_us(&raw, record, plan.samples / 4));
        let r = awake(|| tcp_rtt_p50_us(plan.samples));
        rtt_idle.push(tcp_rtt_p50_us(plan.samples / 4));
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
