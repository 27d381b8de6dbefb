//! Singular Update Queue: one worker thread owns the state and applies requests to it one
//! at a time, from a bounded queue.
//!
//! Callers on any thread submit a request and get a completion handle; the worker applies
//! requests in the order they were queued, so the state needs no lock and every update
//! sees the one before it. A full queue pushes back on callers (they wait, or are refused
//! at once with [`try_submit`](SingularUpdateQueue::try_submit)). Shutdown is orderly:
//! either every queued request is applied first ([`ShutdownMode::Drain`]) or every queued
//! request is failed with [`UpdateError::ShutDown`] ([`ShutdownMode::Abort`]); none is left
//! without an answer.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::completion::{Completer, Completion, WaitOutcome, completion};

/// Why a submitted request was not applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpdateError {
    /// The queue shut down (in [`ShutdownMode::Abort`]) before the request was applied.
    ShutDown,
    /// The worker died (the handler panicked) before applying the request.
    WorkerDied,
    /// The wait's deadline passed; the request may still be applied later.
    TimedOut,
}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateError::ShutDown => write!(f, "the update queue shut down before the request ran"),
            UpdateError::WorkerDied => write!(f, "the update queue's worker died"),
            UpdateError::TimedOut => write!(f, "no result before the deadline"),
        }
    }
}

impl std::error::Error for UpdateError {}

/// A request refused at submission; the request is handed back.
#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError<R> {
    /// The queue is full (from [`SingularUpdateQueue::try_submit`] only).
    Full(R),
    /// The queue is shutting down.
    ShutDown(R),
}

impl<R> fmt::Display for SubmitError<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Full(_) => write!(f, "the update queue is full"),
            SubmitError::ShutDown(_) => write!(f, "the update queue is shutting down"),
        }
    }
}

impl<R: fmt::Debug> std::error::Error for SubmitError<R> {}

/// How [`SingularUpdateQueue::shutdown`] treats requests still queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Apply every queued request, then stop.
    Drain,
    /// Fail every queued request with [`UpdateError::ShutDown`]; the one being applied
    /// completes.
    Abort,
}

/// What a shutdown did.
#[derive(Debug, PartialEq, Eq)]
pub struct Shutdown<S> {
    /// The state, as the worker left it (`None` if the worker died).
    pub state: Option<S>,
    /// Requests that were queued at shutdown and failed with [`UpdateError::ShutDown`].
    pub failed: usize,
}

/// Waits for the result of one submitted request.
#[derive(Debug)]
pub struct UpdateHandle<T> {
    completion: Completion<Result<T, UpdateError>>,
}

impl<T> UpdateHandle<T> {
    /// Blocks until the request was applied (or failed).
    ///
    /// # Errors
    ///
    /// [`UpdateError::ShutDown`] or [`UpdateError::WorkerDied`].
    pub fn wait(self) -> Result<T, UpdateError> {
        self.completion
            .wait()
            .unwrap_or(Err(UpdateError::WorkerDied))
    }

    /// Blocks at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait), and [`UpdateError::TimedOut`] after the timeout.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<T, UpdateError> {
        match self.completion.wait_until(Instant::now() + timeout) {
            WaitOutcome::Done(result) => result,
            WaitOutcome::Canceled => Err(UpdateError::WorkerDied),
            WaitOutcome::TimedOut => Err(UpdateError::TimedOut),
        }
    }
}

struct Queue<R, T> {
    items: VecDeque<(R, Completer<Result<T, UpdateError>>)>,
    closing: Option<ShutdownMode>,
}

struct Inner<R, T> {
    queue: Mutex<Queue<R, T>>,
    changed: Condvar,
    capacity: usize,
}

/// A bounded queue drained by one worker thread that owns a state `S`, applying requests
/// `R` to produce results `T`.
///
/// ```
/// use synod_transport::{ShutdownMode, SingularUpdateQueue};
///
/// // The worker owns a counter; callers on any thread add to it.
/// let queue = SingularUpdateQueue::spawn(64, 0u64, |total: &mut u64, add: u64| {
///     *total += add;
///     *total
/// })?;
/// let handles: Vec<_> = (1..=10).map(|n| queue.submit(n).expect("open")).collect();
/// let results: Vec<u64> = handles.into_iter().map(|h| h.wait().expect("applied")).collect();
/// assert_eq!(results.last(), Some(&55));
/// let done = queue.shutdown(ShutdownMode::Drain);
/// assert_eq!((done.state, done.failed), (Some(55), 0));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct SingularUpdateQueue<S, R, T> {
    inner: Arc<Inner<R, T>>,
    worker: Option<JoinHandle<S>>,
}

impl<S, R, T> fmt::Debug for SingularUpdateQueue<S, R, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SingularUpdateQueue")
            .field("capacity", &self.inner.capacity)
            .field("queued", &self.inner.queue.lock().items.len())
            .finish()
    }
}

impl<S, R, T> SingularUpdateQueue<S, R, T>
where
    S: Send + 'static,
    R: Send + 'static,
    T: Send + 'static,
{
    /// Starts the worker thread, which owns `state` and applies `handler` to each request.
    /// At most `capacity` requests wait in the queue.
    ///
    /// # Errors
    ///
    /// If the thread cannot be spawned.
    ///
    /// # Panics
    ///
    /// If `capacity` is zero.
    pub fn spawn(
        capacity: usize,
        state: S,
        mut handler: impl FnMut(&mut S, R) -> T + Send + 'static,
    ) -> std::io::Result<Self> {
        assert!(capacity > 0, "capacity must be at least 1");
        let inner = Arc::new(Inner {
            queue: Mutex::new(Queue {
                items: VecDeque::with_capacity(capacity),
                closing: None,
            }),
            changed: Condvar::new(),
            capacity,
        });
        let worker_inner = Arc::clone(&inner);
        let worker = std::thread::Builder::new()
            .name("synod-update-queue".into())
            .spawn(move || {
                let mut state = state;
                loop {
                    let mut queue = worker_inner.queue.lock();
                    let next = loop {
                        if queue.closing == Some(ShutdownMode::Abort) {
                            break None;
                        }
                        if let Some(item) = queue.items.pop_front() {
                            break Some(item);
                        }
                        if queue.closing == Some(ShutdownMode::Drain) {
                            break None;
                        }
                        worker_inner.changed.wait(&mut queue);
                    };
                    drop(queue);
                    // Room was freed, or the worker is leaving.
                    worker_inner.changed.notify_all();
                    let Some((request, completer)) = next else {
                        return state;
                    };
                    completer.complete(Ok(handler(&mut state, request)));
                }
            })?;
        Ok(SingularUpdateQueue {
            inner,
            worker: Some(worker),
        })
    }

    /// Queues `request`, waiting while the queue is full.
    ///
    /// # Errors
    ///
    /// [`SubmitError::ShutDown`] if the queue is shutting down.
    pub fn submit(&self, request: R) -> Result<UpdateHandle<T>, SubmitError<R>> {
        self.enqueue(request, true)
    }

    /// Queues `request` if there is room now.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] if the queue is full, [`SubmitError::ShutDown`] if it is
    /// shutting down.
    pub fn try_submit(&self, request: R) -> Result<UpdateHandle<T>, SubmitError<R>> {
        self.enqueue(request, false)
    }

    fn enqueue(&self, request: R, block: bool) -> Result<UpdateHandle<T>, SubmitError<R>> {
        let mut queue = self.inner.queue.lock();
        loop {
            if queue.closing.is_some() {
                return Err(SubmitError::ShutDown(request));
            }
            if queue.items.len() < self.inner.capacity {
                break;
            }
            if !block {
                return Err(SubmitError::Full(request));
            }
            self.inner.changed.wait(&mut queue);
        }
        let (completer, completion) = completion();
        queue.items.push_back((request, completer));
        drop(queue);
        self.inner.changed.notify_all();
        Ok(UpdateHandle { completion })
    }

    /// Requests waiting to be applied.
    pub fn len(&self) -> usize {
        self.inner.queue.lock().items.len()
    }

    /// Whether no request is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops the queue: new submissions are refused, queued requests are applied or failed
    /// according to `mode`, and the worker's state is returned.
    pub fn shutdown(mut self, mode: ShutdownMode) -> Shutdown<S> {
        self.stop(mode)
    }

    fn stop(&mut self, mode: ShutdownMode) -> Shutdown<S> {
        let failed = {
            let mut queue = self.inner.queue.lock();
            queue.closing = Some(mode);
            let mut failed = 0;
            if mode == ShutdownMode::Abort {
                for (_, completer) in queue.items.drain(..) {
                    completer.complete(Err(UpdateError::ShutDown));
                    failed += 1;
                }
            }
            failed
        };
        self.inner.changed.notify_all();
        let state = self.worker.take().and_then(|worker| worker.join().ok());
        // A worker that died left requests behind: fail them so no caller hangs.
        let mut failed = failed;
        for (_, completer) in self.inner.queue.lock().items.drain(..) {
            completer.complete(Err(UpdateError::WorkerDied));
            failed += 1;
        }
        Shutdown { state, failed }
    }
}

impl<S, R, T> Drop for SingularUpdateQueue<S, R, T> {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            self.inner.queue.lock().closing = Some(ShutdownMode::Drain);
            self.inner.changed.notify_all();
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_in_order_and_pushes_back_when_full() {
        // The worker waits on a gate so that the queue fills up.
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let worker_gate = Arc::clone(&gate);
        let queue =
            SingularUpdateQueue::spawn(2, Vec::new(), move |seen: &mut Vec<u32>, n: u32| {
                let (open, cv) = &*worker_gate;
                let mut open = open.lock();
                while !*open {
                    cv.wait(&mut open);
                }
                seen.push(n);
                seen.len()
            })
            .unwrap();
        let first = queue.submit(0).unwrap();
        // The worker may or may not have taken request 0 yet; fill until refused.
        let mut handles = vec![first];
        let mut n = 1;
        loop {
            match queue.try_submit(n) {
                Ok(h) => handles.push(h),
                Err(SubmitError::Full(back)) => {
                    assert_eq!(back, n);
                    break;
                }
                Err(other) => panic!("unexpected {other:?}"),
            }
            n += 1;
        }
        assert!(handles.len() <= 3, "capacity 2 plus the one being applied");
        {
            let (open, cv) = &*gate;
            *open.lock() = true;
            cv.notify_all();
        }
        let results: Vec<usize> = handles.into_iter().map(|h| h.wait().unwrap()).collect();
        assert_eq!(results, (1..=results.len()).collect::<Vec<_>>());
        let done = queue.shutdown(ShutdownMode::Drain);
        assert_eq!(done.state.unwrap(), (0..n).collect::<Vec<_>>());
    }

    #[test]
    fn abort_fails_every_queued_request_and_drain_applies_them() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let worker_gate = Arc::clone(&gate);
        let queue = SingularUpdateQueue::spawn(100, 0u32, move |count: &mut u32, ()| {
            let (open, cv) = &*worker_gate;
            let mut open = open.lock();
            while !*open {
                cv.wait(&mut open);
            }
            *count += 1;
        })
        .unwrap();
        let handles: Vec<_> = (0..10).map(|_| queue.submit(()).unwrap()).collect();
        // Open the gate from another thread once shutdown has failed the queued requests.
        let opener = {
            let gate = Arc::clone(&gate);
            std::thread::spawn(move || {
                let (open, cv) = &*gate;
                *open.lock() = true;
                cv.notify_all();
            })
        };
        let done = queue.shutdown(ShutdownMode::Abort);
        opener.join().unwrap();
        let ok = handles
            .into_iter()
            .filter(|h| h.wait_timeout(Duration::from_secs(10)).is_ok())
            .count();
        // Every request was either applied or failed, and the counts agree.
        assert_eq!(ok as u32, done.state.unwrap());
        assert_eq!(ok + done.failed, 10);

        let queue =
            SingularUpdateQueue::spawn(100, 0u32, |count: &mut u32, ()| *count += 1).unwrap();
        let handles: Vec<_> = (0..10).map(|_| queue.submit(()).unwrap()).collect();
        let done = queue.shutdown(ShutdownMode::Drain);
        assert_eq!((done.state, done.failed), (Some(10), 0));
        assert!(handles.into_iter().all(|h| h.wait().is_ok()));
    }
}
