//! One closed-loop load generator for every system a bench drives: N clients, each on
//! its own thread with its own connection, each with one blocking request in flight at a
//! time. Included by a bench with `#[path]`.

// Each bench uses part of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What one run of [`closed_loop`] did.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Requests answered as asked, per second of the run.
    pub rate: f64,
    /// Requests answered as asked.
    pub done: u64,
    /// Requests that failed or were answered otherwise.
    pub failures: u64,
}

/// Runs `clients` clients for `duration`: each connects with `connect(client)` before the
/// clock starts (if one cannot, the run panics with its error once the others are done:
/// the bench cannot measure without it), then calls `request(&mut connection, client, i)` for i = 0, 1, 2, ... until the time is
/// up, one at a time; `request` returns whether the answer was the one asked for.
///
/// `probe` is called just before the clock starts (every client connected) and again once
/// every client is done, and both its answers are returned with the run: the CPU time the
/// servers have used, say, so that the difference is what the run cost them.
pub fn closed_loop<C, T>(
    clients: usize,
    duration: Duration,
    connect: impl Fn(usize) -> Result<C, String> + Sync,
    request: impl Fn(&mut C, usize, u64) -> bool + Sync,
    probe: impl Fn() -> T,
) -> (Run, T, T) {
    let request = |connection: &mut C, c, i| Some(request(connection, c, i));
    closed_loop_until(clients, duration, connect, request, probe)
}

/// [`closed_loop`] in which a client may also end before the time is up: `request`
/// returns `None` (no request made) when the client is done, for a run of a fixed number
/// of requests (`duration` then bounds it).
pub fn closed_loop_until<C, T>(
    clients: usize,
    duration: Duration,
    connect: impl Fn(usize) -> Result<C, String> + Sync,
    request: impl Fn(&mut C, usize, u64) -> Option<bool> + Sync,
    probe: impl Fn() -> T,
) -> (Run, T, T) {
    // Every client connected; then the clock started.
    let (connected, go) = (Barrier::new(clients + 1), Barrier::new(clients + 1));
    let start_at = OnceLock::<Instant>::new();
    let done = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let refused = Mutex::new(None::<String>);
    let (start, before) = std::thread::scope(|scope| {
        for c in 0..clients {
            let (connected, go) = (&connected, &go);
            let (start_at, done, failed, refused) = (&start_at, &done, &failed, &refused);
            let (connect, request) = (&connect, &request);
            std::thread::Builder::new()
                .name(format!("client {c}"))
                .stack_size(256 << 10)
                .spawn_scoped(scope, move || {
                    let connection = connect(c);
                    connected.wait();
                    go.wait();
                    let mut connection = match connection {
                        Ok(connection) => connection,
                        Err(e) => {
                            *refused.lock().expect("lock") = Some(format!("client {c}: {e}"));
                            return;
                        }
                    };
                    let end = *start_at.get().expect("set before the barrier") + duration;
                    let mut i = 0;
                    while Instant::now() < end {
                        match request(&mut connection, c, i) {
                            Some(true) => done.fetch_add(1, Ordering::Relaxed),
                            Some(false) => failed.fetch_add(1, Ordering::Relaxed),
                            None => break,
                        };
                        i += 1;
                    }
                })
                .expect("client thread");
        }
        connected.wait();
        let before = probe();
        let start = *start_at.get_or_init(Instant::now);
        go.wait();
        (start, before)
    });
    let elapsed = start.elapsed();
    let after = probe();
    if let Some(e) = refused.into_inner().expect("lock") {
        panic!("a client could not connect: {e}");
    }
    let done = done.load(Ordering::Relaxed);
    let run = Run {
        rate: done as f64 / elapsed.as_secs_f64(),
        done,
        failures: failed.load(Ordering::Relaxed),
    };
    (run, before, after)
}
