//! The worker: a Singular Update Queue owning the system's state machine, with group
//! commit, and the ticker that feeds it time.
// tidy: driver: runs the worker and ticker threads and reads the monotonic clock.
//!
//! A system hands its state machine, wrapped in a [`Machine`], to [`UpdateQueue::spawn`].
//! The queue's one worker thread takes events up one at a time and steps each into the
//! machine with the time, read as it is taken up ([`Machine::step`]). While more events
//! wait, their effects pile up in the machine; once the queue has run dry (or after
//! [`SYNC_DEFER_EVENTS_MAX`] events, or an [`Machine::urgent`] event) the worker has the
//! machine hand them out together ([`Machine::drain`]) and sync what they wrote
//! ([`Machine::sync`], until nothing is owed): one message per peer carrying many
//! clients' requests, and one `fdatasync` covering the writes of many events.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use synod_transport::{SingularUpdateQueue, UpdateHandle};

use super::process::{fail_stop, spawn_vital};

/// Events the worker may step into the machine before it hands out their effects and syncs.
pub const SYNC_DEFER_EVENTS_MAX: usize = 256;
/// Events waiting in the Singular Update Queue.
pub const QUEUE_EVENTS_MAX: usize = 4096;

/// A system's state machine as the worker drives it: the seam between the process runtime
/// and a system. Everything it owns lives on the worker thread, so it needs no lock.
///
/// The worker calls, for each event: [`Machine::step`], then (when the queue has run dry,
/// after [`SYNC_DEFER_EVENTS_MAX`] events, or after an urgent one) [`Machine::drain`] and
/// [`Machine::sync`] until it returns `Ok(false)`, then [`Machine::answer`], which the
/// event's submitter receives. An error from `drain` or `sync` stops the process
/// (fail-stop): a system never retries a failed sync and carries on.
pub trait Machine: Send + 'static {
    /// What is queued to the worker: peer messages, client requests, ticks, and whatever
    /// else the system's threads hand it.
    type Event: Send + 'static;
    /// What the submitter of an event gets back once the event has been taken up.
    type Answer: Send + 'static;

    /// Steps `event` into the state machine at time `now` (since the worker started, on
    /// the monotonic clock), without handing out its effects yet.
    fn step(&mut self, now: Duration, event: Self::Event);

    /// Whether `event` needs its effects handed out and synced at once, however many
    /// events wait (the last event before the process exits, say).
    fn urgent(_event: &Self::Event) -> bool {
        false
    }

    /// Hands out every effect that piled up (messages to peers, replies to clients), and
    /// remembers the writes to sync.
    ///
    /// # Errors
    ///
    /// Why the node cannot go on (the process stops).
    fn drain(&mut self, now: Duration) -> Result<(), String>;

    /// Makes the writes remembered so far durable and acknowledges them to the state
    /// machine, handing out what that frees: `Ok(true)` if it synced anything (the worker
    /// calls it again), `Ok(false)` if nothing was owed.
    ///
    /// # Errors
    ///
    /// A failed write or sync (the process stops).
    fn sync(&mut self, now: Duration) -> Result<bool, String>;

    /// What the submitter of the event just taken up receives.
    fn answer(&mut self) -> Self::Answer;
}

/// The worker thread's state: the machine, and what group commit counts.
struct Worker<M> {
    machine: M,
    queued: Arc<AtomicUsize>,
    /// Events stepped in since the effects were last handed out.
    deferred: usize,
    /// The machine's time zero on the monotonic clock: every event is handed to the
    /// machine with the time since, read as the worker takes the event up (see
    /// [`Worker::now`]).
    origin: Instant,
}

impl<M: Machine> Worker<M> {
    /// The machine's time, read now: never earlier, since a machine may check a lease
    /// against it (a time read by the thread that queued an event would be stale by the
    /// wait in the queue, and a tick count kept by the timer thread by every tick it could
    /// not queue).
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn handle(&mut self, event: M::Event) -> M::Answer {
        self.queued.fetch_sub(1, Ordering::AcqRel);
        let urgent = M::urgent(&event);
        let now = self.now();
        self.machine.step(now, event);
        // Request Batch: while more events wait, their effects pile up in the machine, so
        // that one message per peer carries the requests of many clients and one sync
        // covers the writes of many events (group commit).
        self.deferred += 1;
        if urgent
            || self.queued.load(Ordering::Acquire) == 0
            || self.deferred >= SYNC_DEFER_EVENTS_MAX
        {
            self.flush();
        }
        self.machine.answer()
    }

    fn flush(&mut self) {
        self.deferred = 0;
        if let Err(why) = self.machine.drain(self.now()) {
            fail_stop(&why);
        }
        loop {
            match self.machine.sync(self.now()) {
                Ok(true) => {}
                Ok(false) => break,
                Err(why) => fail_stop(&why),
            }
        }
    }
}

/// The queue of events to a system's [`Machine`], and the count of those waiting.
pub struct UpdateQueue<M: Machine> {
    queue: SingularUpdateQueue<Worker<M>, M::Event, M::Answer>,
    queued: Arc<AtomicUsize>,
}

impl<M: Machine> std::fmt::Debug for UpdateQueue<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateQueue")
            .field("queued", &self.queued())
            .finish_non_exhaustive()
    }
}

impl<M: Machine> UpdateQueue<M> {
    /// Hands out what `machine` holds already (what it recovered at start), syncs it, and
    /// starts the worker thread (`synod-update-queue`), which owns the machine from then on.
    ///
    /// # Errors
    ///
    /// If the thread cannot be started.
    pub fn spawn(machine: M) -> std::io::Result<UpdateQueue<M>> {
        let queued = Arc::new(AtomicUsize::new(0));
        let mut worker = Worker {
            machine,
            queued: Arc::clone(&queued),
            deferred: 0,
            origin: Instant::now(),
        };
        worker.flush();
        let queue = SingularUpdateQueue::spawn(QUEUE_EVENTS_MAX, worker, Worker::handle)?;
        Ok(UpdateQueue { queue, queued })
    }

    /// Queues `event`, waiting while the queue is full: a handle to its answer, or `None`
    /// if the worker is gone.
    pub fn submit(&self, event: M::Event) -> Option<UpdateHandle<M::Answer>> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        match self.queue.submit(event) {
            Ok(h) => Some(h),
            Err(_) => {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                None
            }
        }
    }

    /// Queues `event` unless the queue is at least half full (a tick: a busy queue skips
    /// tick events, not time, since every event the worker takes up hands the machine
    /// the time).
    pub fn submit_unless_busy(&self, event: M::Event) {
        if self.queued() < QUEUE_EVENTS_MAX / 2 {
            let _ = self.submit(event);
        }
    }

    /// Events waiting.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

/// Starts the ticker thread (`synod-tick`, vital), which calls `tick` every `period`; after
/// a long stall (the process was paused) it carries on from now rather than burst.
pub fn spawn_ticker(period: Duration, tick: impl Fn() + Send + 'static) {
    spawn_vital("synod-tick", move || {
        let mut next = Instant::now() + period;
        loop {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            next += period;
            if Instant::now() > next + period * 10 {
                next = Instant::now() + period; // fell far behind (paused): do not burst
            }
            tick();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A machine with no leader and no log, as a leaderless store's might be: each event
    /// is a write of one value, handed out as a reply once synced.
    #[derive(Default)]
    struct Counter {
        /// Writes stepped in and not yet handed out.
        pending: Vec<u64>,
        /// Writes handed out, waiting for a sync.
        unsynced: Vec<u64>,
        /// Each sync, with the writes it covered.
        syncs: Vec<Vec<u64>>,
        /// Times given to `step`, in order.
        times: Vec<Duration>,
    }

    impl Machine for Counter {
        type Event = u64;
        type Answer = usize;

        fn step(&mut self, now: Duration, event: u64) {
            self.times.push(now);
            self.pending.push(event);
        }

        fn urgent(event: &u64) -> bool {
            *event == u64::MAX
        }

        fn drain(&mut self, _now: Duration) -> Result<(), String> {
            self.unsynced.append(&mut self.pending);
            Ok(())
        }

        fn sync(&mut self, _now: Duration) -> Result<bool, String> {
            if self.unsynced.is_empty() {
                return Ok(false);
            }
            self.syncs.push(std::mem::take(&mut self.unsynced));
            Ok(true)
        }

        fn answer(&mut self) -> usize {
            self.syncs.len()
        }
    }

    /// A worker whose queue holds `waiting` events (as the submitters counted them).
    fn worker(waiting: usize) -> Worker<Counter> {
        Worker {
            machine: Counter::default(),
            queued: Arc::new(AtomicUsize::new(waiting)),
            deferred: 0,
            origin: Instant::now(),
        }
    }

    #[test]
    fn events_taken_up_while_others_wait_are_synced_together_once_the_queue_runs_dry() {
        let mut w = worker(3);
        assert_eq!(w.handle(1), 0);
        assert_eq!(w.handle(2), 0);
        // The queue has run dry: one sync covers all three.
        assert_eq!(w.handle(3), 1);
        assert_eq!(w.machine.syncs, [vec![1, 2, 3]]);
        // Times never go back.
        assert!(w.machine.times.windows(2).all(|t| t[0] <= t[1]));
    }

    #[test]
    fn a_full_queue_is_synced_every_sync_defer_events_max_events() {
        let events = SYNC_DEFER_EVENTS_MAX as u64 * 2 + 1;
        let mut w = worker(events as usize + 10);
        for event in 0..events {
            w.handle(event);
        }
        let sizes: Vec<usize> = w.machine.syncs.iter().map(Vec::len).collect();
        assert_eq!(sizes, [SYNC_DEFER_EVENTS_MAX, SYNC_DEFER_EVENTS_MAX]);
        assert_eq!(w.machine.pending.len(), 1);
    }

    #[test]
    fn an_urgent_event_is_synced_at_once_however_many_wait() {
        let mut w = worker(10);
        w.handle(7);
        assert_eq!(w.handle(u64::MAX), 1);
        assert_eq!(w.machine.syncs, [vec![7, u64::MAX]]);
    }

    #[test]
    fn the_queue_answers_each_event_once_the_worker_has_taken_it_up() {
        let queue = UpdateQueue::spawn(Counter::default()).expect("the worker starts");
        let handles: Vec<_> = (0..100)
            .map(|event| queue.submit(event).expect("queued"))
            .collect();
        let answers: Vec<usize> = handles
            .into_iter()
            .map(|h| h.wait().expect("answered"))
            .collect();
        // Every event was synced by the time it was answered, in fewer syncs than events
        // whenever events waited for each other.
        assert!(answers.windows(2).all(|a| a[0] <= a[1]), "{answers:?}");
        assert!(
            answers
                .last()
                .is_some_and(|&syncs| (1..=100).contains(&syncs))
        );
        assert_eq!(queue.queued(), 0);
    }
}
