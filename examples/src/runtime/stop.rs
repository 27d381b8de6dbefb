//! A graceful stop: new requests refused, those in flight finished, clients given time to
//! leave, everything made durable, and the process ended with status 0.
// tidy: driver: waits on the clock and exits the process.
//!
//! A system keeps one [`Stopping`]: each client call counts itself in flight
//! ([`Stopping::call`]) and then checks [`Stopping::is_stopping`], so that a stop either
//! waits for the call or the call sees the stop (both sides use `SeqCst`). What is the
//! system's in a stop (handing a leadership over, its own requests in flight, the worker's
//! last sync) comes in as [`StopSteps`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::clients::Connections;
use super::process::poll_until;

/// Whether a node is stopping, and the client calls it waits for.
#[derive(Debug, Default)]
pub struct Stopping {
    stopping: AtomicBool,
    calls: Arc<AtomicUsize>,
}

/// One client call in flight, counted by its [`Stopping`] while the value lives (released
/// however its holder ends: answered, or its connection closed).
#[derive(Debug)]
pub struct CallGuard(Arc<AtomicUsize>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a system does during [`Stopping::stop`], in this order.
#[derive(Clone, Copy)]
pub struct StopSteps<'a> {
    /// How long to wait for the calls in flight (and `idle`).
    pub in_flight_wait: Duration,
    /// Whether the system's own work in flight is done (requests peers sent it, say).
    pub idle: &'a dyn Fn() -> bool,
    /// Run once nothing is in flight (or `in_flight_wait` passed): hand a leadership over.
    pub hand_over: &'a dyn Fn(),
    /// How long clients still connected get to leave (they are told to go elsewhere).
    pub drain_wait: Duration,
    /// Run last, before the process exits: make everything durable.
    pub make_durable: &'a dyn Fn(),
}

impl std::fmt::Debug for StopSteps<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopSteps")
            .field("in_flight_wait", &self.in_flight_wait)
            .field("drain_wait", &self.drain_wait)
            .finish_non_exhaustive()
    }
}

impl Stopping {
    /// Counts a client call in flight while the value lives. Check [`Stopping::is_stopping`]
    /// after taking it: then either the stop waits for the call, or the call sees the stop.
    pub fn call(&self) -> CallGuard {
        // SeqCst pairs with the stop, which waits for the count to fall to zero.
        self.calls.fetch_add(1, Ordering::SeqCst);
        CallGuard(Arc::clone(&self.calls))
    }

    /// Whether a stop has begun.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Client calls in flight.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Marks the node stopping without running a stop (a test's way in).
    #[cfg(test)]
    pub(crate) fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Stops the node `name` (`synod node 3`) gracefully: from now on
    /// [`Stopping::is_stopping`] holds, so new requests are refused; the calls in flight and
    /// the system's own work finish (for up to `in_flight_wait`); the system hands over
    /// what it must; clients still connected (the one that asked aside) get up to
    /// `drain_wait` to leave; the system makes everything durable; and the process exits
    /// with status 0. Returns only if a stop is already under way.
    pub fn stop(&self, name: &str, connections: &Connections, steps: StopSteps<'_>) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        eprintln!("{name}: shutting down (a client asked): finishing requests in flight");
        poll_until(Instant::now() + steps.in_flight_wait, || {
            self.calls() == 0 && (steps.idle)()
        });
        (steps.hand_over)();
        // The connection that asked is the one left when every other client has gone.
        poll_until(Instant::now() + steps.drain_wait, || connections.len() <= 1);
        (steps.make_durable)();
        eprintln!("{name}: stopped");
        std::process::exit(0)
    }
}
