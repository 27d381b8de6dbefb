//! Fail-stop: the node's threads, named and watched, and the exit that ends a node that
//! cannot go on safely.
// tidy: driver: spawns threads, installs a panic hook and exits the process.
//!
//! Every thread of a node is named `synod-…` (the transport's and the update queue's too).
//! [`stop_on_panic`] makes a panic on any of them but a client connection's
//! ([`CLIENT_THREAD`]) end the process with [`EXIT_FAIL_STOP`]; [`spawn_vital`] does the
//! same for a thread that returns when it never should (the ticker, the client acceptor).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The exit status of a node that stopped itself because it cannot go on safely.
pub const EXIT_FAIL_STOP: i32 = 2;

/// The exit status of a node the cluster refused at its first start (its id is a
/// member's already, say): it took no part, and the cluster is unchanged.
pub const EXIT_REFUSED: i32 = 3;

/// Ends the process with [`EXIT_REFUSED`], saying why on standard error.
pub fn refused(why: &str) -> ! {
    eprintln!("synod node: refused by the cluster: {why}");
    std::process::exit(EXIT_REFUSED)
}

/// Every thread of a node is named with this prefix (the transport's and the update
/// queue's too), which is how a panic is known to be the node's.
pub const NODE_THREAD_PREFIX: &str = "synod-";

/// The name of the client event loop's thread (and of a thread a client's blocking command
/// runs on): a panic serving one connection closes that connection (the loop catches it)
/// and does not stop the process.
pub const CLIENT_THREAD: &str = "synod-clients";

/// Ends the process with [`EXIT_FAIL_STOP`], saying why on standard error.
pub fn fail_stop(why: &str) -> ! {
    eprintln!("synod node: stopping: {why}");
    std::process::exit(EXIT_FAIL_STOP)
}

/// Makes a panic on any of the node's threads but the client loop's stop the process
/// (once per process).
///
/// A node whose worker died would otherwise stay up as a zombie: holding its sockets, so
/// clients and peers keep talking to it, answering nothing, its queue filling until every
/// reader thread blocks. A node that lost its transport's accept thread or its ticker would
/// run on half blind. A process that stops is restarted, or replaced, and the cluster goes on
/// without it at once. The client loop is the exception: what one client sends must not stop
/// the node for every client, so the loop catches a panic serving one connection and closes
/// that connection (see [`super::clients`]); one anywhere else on the loop stops the process. Threads of the process that are not the node's (a
/// test harness's, when a node runs in a test) keep the usual behaviour.
pub fn stop_on_panic() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // The standard message first: the thread, the place and the payload.
            previous(info);
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("<unnamed>");
            if name.starts_with(NODE_THREAD_PREFIX) && name != CLIENT_THREAD {
                fail_stop(&format!("thread {name} panicked"));
            }
        }));
    });
}

/// Starts a thread of the node named `name` (which starts with [`NODE_THREAD_PREFIX`]);
/// a node that cannot start one stops.
pub fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    debug_assert!(name.starts_with(NODE_THREAD_PREFIX));
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .unwrap_or_else(|e| fail_stop(&format!("cannot start a thread: {e}")));
}

/// Starts a thread the node cannot run without (the ticker): if it
/// ever returns, the process stops, as when it panics.
pub fn spawn_vital(name: &'static str, f: impl FnOnce() + Send + 'static) {
    spawn(name, move || {
        f();
        fail_stop(&format!("thread {name} ended"));
    });
}

/// Counts one in a counter while it lives: released however its holder ends, a panic too.
#[derive(Debug)]
pub struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    /// Adds one to `counter` until the value is dropped.
    pub fn new(counter: &'a AtomicUsize) -> Counted<'a> {
        // SeqCst pairs with whoever waits for the counter to fall to zero (a shutdown).
        counter.fetch_add(1, Ordering::SeqCst);
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Polls `done` every few milliseconds until it holds or `deadline` passes; returns
/// whether it held.
pub fn poll_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
