//! The physical limits the benchmarks of real clusters measure in the same run, as their
//! baselines: a raw `pwrite` + `fdatasync` into a pre-written file, and a blocking TCP
//! ping-pong over loopback, each measured while every core is kept awake ([`awake`]).
//! Included by each bench with `#[path]` (benches are separate crates).

// Each bench uses part of it.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Bytes of one message of the TCP ping-pong baseline.
pub const PING_BYTES: usize = 64;
/// Size of the pre-written file of the raw disk baseline.
pub const RAW_FILE_BYTES: usize = 64 << 20;

/// A pre-written file (zeros, synced) for the raw disk baseline, in `dir`.
pub fn prewritten(dir: &Path) -> File {
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

/// `samples` timings of a `pwrite` + `fdatasync` of `bytes`, written round and round the
/// pre-written `file`.
pub fn raw_fdatasync_times(file: &File, bytes: usize, samples: usize) -> Vec<Duration> {
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
    times
}

/// `pwrite` + `fdatasync` of `bytes` at a time, for `duration`: writes per second.
pub fn raw_fdatasync_rate(file: &File, bytes: usize, duration: Duration) -> f64 {
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
/// latency, not the disk's; a cluster, busy while it commits, mostly does not pay it.
/// The baselines are measured this way (and the benches print the idle figure beside them).
pub fn awake<T>(f: impl FnOnce() -> T) -> T {
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

/// `samples` round trips of a blocking [`PING_BYTES`]-byte ping-pong over loopback TCP (a
/// fresh echo thread and connection per call).
pub fn tcp_rtt_times(samples: usize) -> Vec<Duration> {
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
    times
}
