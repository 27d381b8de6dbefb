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
//!
//! One thread at a time holds the machine. A thread with events at hand (a transport
//! reader's messages of one read) may take them up itself when the machine is idle and no
//! event waits ([`UpdateQueue::run_or_submit_all`]; one event: [`UpdateQueue::run_or_send`]):
//! it steps them in, hands out their effects and syncs once for all of them on its own
//! thread, saving the worker thread's wake-up, and leaves whatever arrived meanwhile to the
//! worker thread. A panic there stops the process, as one on the worker thread does.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use synod_transport::{Completer, Completion, completion};

use super::process::{fail_stop, spawn_vital};

/// Events the worker may step into the machine before it hands out their effects and syncs.
pub const SYNC_DEFER_EVENTS_MAX: usize = 256;
/// Events waiting in the Singular Update Queue.
pub const QUEUE_EVENTS_MAX: usize = 4096;

/// A system's state machine as the worker drives it: the seam between the process runtime
/// and a system. One thread at a time runs it (the worker thread, or one that took an event
/// up itself), so what it owns needs no lock of its own.
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

/// One event in the queue, and who waits for its answer (if anyone does).
type Item<M> = (
    <M as Machine>::Event,
    Option<Completer<<M as Machine>::Answer>>,
);

/// The events waiting, and whether a thread is running the machine.
struct Waiting<M: Machine> {
    events: VecDeque<Item<M>>,
    /// Whether a thread holds the machine (the worker thread, or one that ran an event
    /// itself with [`UpdateQueue::run_or_send`]). While one does, the worker thread takes
    /// no events out; the holder hands whatever arrived meanwhile to it when done.
    running: bool,
}

/// The queue between the node's threads and the worker.
struct Queue<M: Machine> {
    waiting: Mutex<Waiting<M>>,
    /// Signalled when events arrive for the worker thread (it waits on it while the queue
    /// is empty or another thread holds the machine).
    arrived: Condvar,
    /// Signalled when the worker takes events out (submitters wait on it while the queue
    /// is full).
    taken: Condvar,
    /// The machine, locked by the thread `Waiting::running` names: never waited for.
    worker: Mutex<Worker<M>>,
}

/// The worker thread's state: the machine, and what group commit counts.
struct Worker<M: Machine> {
    machine: M,
    /// Events stepped in since the effects were last handed out.
    deferred: usize,
    /// Who waits for the answer of an event stepped in since the effects were last
    /// handed out: answered once they are.
    answers: Vec<Completer<M::Answer>>,
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

    /// Steps in every event of `batch`, taken out of the queue in one go; hands out their
    /// effects and syncs every [`SYNC_DEFER_EVENTS_MAX`] events and after an urgent one.
    fn handle(&mut self, batch: &mut VecDeque<Item<M>>) {
        for (event, answer) in batch.drain(..) {
            let urgent = M::urgent(&event);
            let now = self.now();
            self.machine.step(now, event);
            self.answers.extend(answer);
            // Request Batch: while more events wait, their effects pile up in the machine,
            // so that one message per peer carries the requests of many clients and one
            // sync covers the writes of many events (group commit).
            self.deferred += 1;
            if urgent || self.deferred >= SYNC_DEFER_EVENTS_MAX {
                self.flush();
            }
        }
    }

    /// The queue has run dry: hands out what the events stepped in since the last flush
    /// asked for, and syncs it.
    fn dry(&mut self) {
        if self.deferred > 0 || !self.answers.is_empty() {
            self.flush();
        }
    }

    /// Hands out the effects piled up in the machine, syncs until nothing is owed, then
    /// answers whoever waits on the events stepped in meanwhile.
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
        for answer in std::mem::take(&mut self.answers) {
            answer.complete(self.machine.answer());
        }
    }
}

impl<M: Machine> Queue<M> {
    /// The worker thread: whenever events wait and no other thread holds the machine, it
    /// takes every event waiting, steps them in, and flushes once nothing more arrived
    /// meanwhile; until the process ends.
    fn serve(&self) {
        let mut batch = VecDeque::new();
        let mut waiting = self.waiting.lock();
        loop {
            while waiting.events.is_empty() || waiting.running {
                self.arrived.wait(&mut waiting);
            }
            waiting.running = true;
            super::trace::mark(super::trace::Step::WorkerWoke);
            loop {
                std::mem::swap(&mut waiting.events, &mut batch);
                self.taken.notify_all();
                drop(waiting);
                let mut worker = self.worker.lock();
                worker.handle(&mut batch);
                waiting = self.waiting.lock();
                if waiting.events.is_empty() {
                    drop(waiting);
                    worker.dry();
                    waiting = self.waiting.lock();
                    if waiting.events.is_empty() {
                        break;
                    }
                }
            }
            waiting.running = false;
        }
    }

    /// Steps `events` in on the calling thread, which has set `running`, and flushes once
    /// for all of them if nothing arrived meanwhile (what did is left to the worker thread,
    /// which flushes their effects with its own); then gives the machine up.
    fn run_here(&self, events: Vec<M::Event>) {
        // A panic here is the worker's, whichever thread it runs on: the process stops, as
        // when the worker thread panics (no one would run the machine again).
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut worker = self.worker.lock();
            worker.handle(&mut events.into_iter().map(|event| (event, None)).collect());
            if self.waiting.lock().events.is_empty() {
                worker.dry();
            }
        }));
        if ran.is_err() {
            let thread = std::thread::current();
            fail_stop(&format!(
                "the worker panicked (on thread {})",
                thread.name().unwrap_or("<unnamed>")
            ));
        }
        self.release();
    }

    /// Gives the machine up, and wakes the worker thread for what arrived meanwhile.
    fn release(&self) {
        let mut waiting = self.waiting.lock();
        waiting.running = false;
        if !waiting.events.is_empty() {
            self.arrived.notify_one();
        }
    }
}

/// The queue of events to a system's [`Machine`], and its one worker thread.
pub struct UpdateQueue<M: Machine> {
    queue: Arc<Queue<M>>,
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
    /// starts the worker thread (`synod-update-queue`), which runs the machine from then on
    /// (but for the events other threads take up themselves, [`UpdateQueue::run_or_send`]).
    ///
    /// # Errors
    ///
    /// If the thread cannot be started.
    pub fn spawn(machine: M) -> std::io::Result<UpdateQueue<M>> {
        let mut worker = Worker {
            machine,
            deferred: 0,
            answers: Vec::new(),
            origin: Instant::now(),
        };
        worker.flush();
        let queue = Arc::new(Queue {
            waiting: Mutex::new(Waiting {
                events: VecDeque::new(),
                running: false,
            }),
            arrived: Condvar::new(),
            taken: Condvar::new(),
            worker: Mutex::new(worker),
        });
        let shared = Arc::clone(&queue);
        std::thread::Builder::new()
            .name("synod-update-queue".into())
            .spawn(move || {
                shared.serve();
                fail_stop("thread synod-update-queue ended");
            })?;
        Ok(UpdateQueue { queue })
    }

    /// Queues `events`, waiting while the queue is full, with no one waiting for their
    /// answers: one lock and at most one wake-up of the worker for all of them.
    pub fn submit_all(&self, events: impl IntoIterator<Item = M::Event>) {
        self.queue_items(events.into_iter().map(|event| (event, None)));
    }

    /// Queues `items`, waiting while the queue is full, and wakes the worker thread if it
    /// waits for them.
    fn queue_items(&self, items: impl IntoIterator<Item = Item<M>>) {
        let mut waiting = self.queue.waiting.lock();
        while waiting.events.len() >= QUEUE_EVENTS_MAX {
            self.queue.taken.wait(&mut waiting);
        }
        let was_empty = waiting.events.is_empty();
        waiting.events.extend(items);
        super::trace::mark(super::trace::Step::Queued);
        // The worker waits only on an empty queue, or while another thread holds the
        // machine (which wakes it, when done, for what arrived meanwhile).
        if was_empty && !waiting.running && !waiting.events.is_empty() {
            self.queue.arrived.notify_one();
        }
    }

    /// Steps `event` in on the calling thread if no thread holds the machine and no event
    /// waits, and hands out its effects and syncs what it owes there too, saving the worker
    /// thread's wake-up; otherwise queues it as [`UpdateQueue::send`] does. Events that
    /// arrive meanwhile are left to the worker thread (this thread runs one event, never
    /// more).
    ///
    /// For events the caller knows are quick to take up and owe no sync as a rule (a
    /// peer's acknowledgement, not its entries to write): the calling thread is busy for
    /// the whole round, syncs included. A panic in the round stops the process, whichever
    /// thread ran it.
    pub fn run_or_send(&self, event: M::Event) {
        self.run_or_submit_all(vec![event]);
    }

    /// Steps `events` in on the calling thread, in order, if no thread holds the machine and
    /// no event waits, and hands out their effects and syncs what they owe there, once for
    /// all of them; otherwise queues them as [`UpdateQueue::submit_all`] does. As
    /// [`UpdateQueue::run_or_send`], for a batch: a transport reader's messages of one read
    /// (a follower's appends, synced together; what arrives during the sync waits in the
    /// socket and is read, and synced, together next).
    pub fn run_or_submit_all(&self, events: Vec<M::Event>) {
        if events.is_empty() {
            return;
        }
        {
            let mut waiting = self.queue.waiting.lock();
            if waiting.running || !waiting.events.is_empty() {
                drop(waiting);
                self.submit_all(events);
                return;
            }
            waiting.running = true;
        }
        super::trace::mark(super::trace::Step::Queued);
        self.queue.run_here(events);
    }

    /// Queues `event`, waiting while the queue is full, with no one waiting for its answer.
    pub fn send(&self, event: M::Event) {
        self.submit_all(std::iter::once(event));
    }

    /// Queues `event`, waiting while the queue is full: a handle to its answer, given once
    /// its effects have been handed out and synced, or `None` if the worker is gone.
    pub fn submit(&self, event: M::Event) -> Option<Completion<M::Answer>> {
        let (completer, completion) = completion();
        self.queue_items([(event, Some(completer))]);
        Some(completion)
    }

    /// Queues `event` unless the queue is at least half full (a tick: a busy queue skips
    /// tick events, not time, since every event the worker takes up hands the machine
    /// the time).
    pub fn submit_unless_busy(&self, event: M::Event) {
        if self.queued() < QUEUE_EVENTS_MAX / 2 {
            self.send(event);
        }
    }

    /// Events waiting.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.queue.waiting.lock().events.len()
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

    /// The event on which a [`Counter`] panics.
    const PANICS: u64 = u64::MAX - 1;

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
        /// For tests of a running queue: each event stepped in, with the thread that did.
        stepped_by: Arc<Mutex<Vec<(u64, std::thread::ThreadId)>>>,
        /// The same: each event synced.
        synced: Arc<Mutex<Vec<u64>>>,
    }

    impl Machine for Counter {
        type Event = u64;
        type Answer = usize;

        fn step(&mut self, now: Duration, event: u64) {
            assert_ne!(event, PANICS, "the machine panics on this event");
            self.stepped_by
                .lock()
                .push((event, std::thread::current().id()));
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
            self.synced.lock().extend(&self.unsynced);
            self.syncs.push(std::mem::take(&mut self.unsynced));
            Ok(true)
        }

        fn answer(&mut self) -> usize {
            self.syncs.len()
        }
    }

    fn worker() -> Worker<Counter> {
        Worker {
            machine: Counter::default(),
            deferred: 0,
            answers: Vec::new(),
            origin: Instant::now(),
        }
    }

    fn batch(events: impl IntoIterator<Item = u64>) -> VecDeque<Item<Counter>> {
        events.into_iter().map(|e| (e, None)).collect()
    }

    #[test]
    fn events_taken_up_together_are_synced_together_once_the_queue_runs_dry() {
        let mut w = worker();
        w.handle(&mut batch([1, 2]));
        // More arrived meanwhile: nothing is synced yet.
        w.handle(&mut batch([3]));
        assert!(w.machine.syncs.is_empty());
        w.dry();
        assert_eq!(w.machine.syncs, [vec![1, 2, 3]]);
        // Times never go back.
        assert!(w.machine.times.windows(2).all(|t| t[0] <= t[1]));
    }

    #[test]
    fn a_full_queue_is_synced_every_sync_defer_events_max_events() {
        let events = SYNC_DEFER_EVENTS_MAX as u64 * 2 + 1;
        let mut w = worker();
        w.handle(&mut batch(0..events));
        let sizes: Vec<usize> = w.machine.syncs.iter().map(Vec::len).collect();
        assert_eq!(sizes, [SYNC_DEFER_EVENTS_MAX, SYNC_DEFER_EVENTS_MAX]);
        assert_eq!(w.machine.pending.len(), 1);
    }

    #[test]
    fn an_urgent_event_is_synced_at_once_however_many_wait() {
        let mut w = worker();
        w.handle(&mut batch([7, u64::MAX, 8]));
        assert_eq!(w.machine.syncs, [vec![7, u64::MAX]]);
    }

    #[test]
    fn an_answer_is_given_once_its_event_is_handed_out_and_synced() {
        let mut w = worker();
        let (completer, answer) = completion();
        let mut events = batch([1]);
        events.push_back((2, Some(completer)));
        w.handle(&mut events);
        assert!(!answer.is_ready(), "answered before its sync");
        w.dry();
        assert_eq!(answer.wait(), Ok(1));
    }

    #[test]
    fn the_queue_answers_each_event_once_the_worker_has_taken_it_up() {
        let queue = UpdateQueue::spawn(Counter::default()).expect("the worker starts");
        queue.submit_all(0..50);
        let handles: Vec<_> = (50..100)
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

    /// A queue of a [`Counter`], and what its machine steps in and syncs.
    type Watched = (
        UpdateQueue<Counter>,
        Arc<Mutex<Vec<(u64, std::thread::ThreadId)>>>,
        Arc<Mutex<Vec<u64>>>,
    );

    fn watched_queue() -> Watched {
        let counter = Counter::default();
        let (stepped_by, synced) = (Arc::clone(&counter.stepped_by), Arc::clone(&counter.synced));
        let queue = UpdateQueue::spawn(counter).expect("the worker starts");
        (queue, stepped_by, synced)
    }

    #[test]
    fn an_event_run_or_sent_to_an_idle_queue_is_taken_up_and_synced_on_the_calling_thread() {
        let (queue, stepped_by, synced) = watched_queue();
        queue.run_or_send(7);
        // Done before the call returned, on this thread: no wake-up of the worker.
        assert_eq!(*stepped_by.lock(), [(7, std::thread::current().id())]);
        assert_eq!(*synced.lock(), [7]);
        // The worker thread still takes up what is queued.
        let answer = queue.submit(8).expect("queued").wait().expect("answered");
        assert_eq!(answer, 2, "two syncs");
        let by = stepped_by.lock();
        assert_eq!(by[1].0, 8);
        assert_ne!(by[1].1, std::thread::current().id());
    }

    #[test]
    fn events_run_together_on_an_idle_queue_are_stepped_in_order_and_synced_once() {
        let (queue, stepped_by, synced) = watched_queue();
        queue.run_or_submit_all(vec![2, 3, 4]);
        // Done before the call returned, on this thread, in order.
        let me = std::thread::current().id();
        assert_eq!(*stepped_by.lock(), [(2, me), (3, me), (4, me)]);
        assert_eq!(*synced.lock(), [2, 3, 4]);
        // One sync for the three: the worker thread's sync of the next event is the second.
        let syncs = queue.submit(5).expect("queued").wait().expect("answered");
        assert_eq!(syncs, 2);
        assert_eq!(*synced.lock(), [2, 3, 4, 5]);
    }

    #[test]
    fn events_run_together_while_the_machine_is_held_are_left_to_the_worker_thread() {
        let (queue, stepped_by, synced) = watched_queue();
        queue.queue.waiting.lock().running = true;
        queue.run_or_submit_all(vec![7, 8]);
        assert!(stepped_by.lock().is_empty(), "taken up while held");
        assert_eq!(queue.queued(), 2);
        queue.queue.release();
        let deadline = Instant::now() + Duration::from_secs(10);
        assert!(super::super::poll_until(deadline, || synced.lock().len() == 2));
        assert_eq!(*synced.lock(), [7, 8]);
        assert!(
            stepped_by
                .lock()
                .iter()
                .all(|(_, t)| *t != std::thread::current().id())
        );
    }

    #[test]
    fn an_event_run_or_sent_while_the_machine_is_held_is_left_to_the_worker_thread() {
        let (queue, stepped_by, synced) = watched_queue();
        // As if another thread held the machine.
        queue.queue.waiting.lock().running = true;
        queue.run_or_send(7);
        queue.send(8);
        assert!(
            stepped_by.lock().is_empty(),
            "taken up while the machine was held"
        );
        assert_eq!(queue.queued(), 2);
        // The holder gives the machine up: the worker thread takes up both.
        queue.queue.release();
        let deadline = Instant::now() + Duration::from_secs(10);
        assert!(super::super::poll_until(deadline, || synced.lock().len() == 2));
        let by = stepped_by.lock();
        assert_eq!(by.iter().map(|(e, _)| *e).collect::<Vec<_>>(), [7, 8]);
        assert!(by.iter().all(|(_, t)| *t != std::thread::current().id()));
    }

    /// Set in the child process of [`a_panic_taking_up_an_event_on_another_thread_stops_the_process`].
    const CHILD_ENV: &str = "SYNOD_TEST_PANIC_RUN_HERE";

    /// The child of [`a_panic_taking_up_an_event_on_another_thread_stops_the_process`].
    #[test]
    #[ignore = "run in a child process by a_panic_taking_up_an_event_on_another_thread_stops_the_process"]
    fn child_queue_whose_machine_panics_on_another_thread() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        let (queue, _, _) = watched_queue();
        // A thread the panic hook does not know (it is not installed here either).
        std::thread::Builder::new()
            .name("not-a-node-thread".into())
            .spawn(move || queue.run_or_send(PANICS))
            .expect("spawned")
            .join()
            .ok();
        eprintln!("the process outlived its machine");
    }

    /// The machine may be left half-stepped by a panic: no thread may run it again, so the
    /// process stops whichever thread was taking an event up.
    #[test]
    fn a_panic_taking_up_an_event_on_another_thread_stops_the_process() {
        let exe = std::env::current_exe().expect("the test binary");
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "runtime::worker::tests::child_queue_whose_machine_panics_on_another_thread",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_ENV, "1")
            .output()
            .expect("the child runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(super::super::EXIT_FAIL_STOP),
            "{stderr}"
        );
        assert!(
            stderr.contains(
                "synod node: stopping: the worker panicked (on thread not-a-node-thread)"
            ),
            "{stderr}"
        );
    }
}
