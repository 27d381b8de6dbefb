//! Completion handles: a value produced on one thread and awaited on another.
//!
//! Used by the [Singular Update Queue](crate::SingularUpdateQueue) and the [Request
//! Pipeline](crate::TcpTransport::request). A [`Completer`] dropped without completing
//! wakes its [`Completion`] with [`Canceled`], so a waiter never hangs on a lost producer.
//!
//! A waiter that answers its own caller when it stops waiting (a request refused with
//! "try again" after a timeout) must not have the work done behind its back afterwards.
//! For that the producer calls [`Completer::start`] before it acts, and the waiter waits
//! with [`Completion::wait_or_give_up`]: at the deadline, work not started is given up
//! (`start` then returns `false` and the producer does nothing), and work started is
//! waited for to its end. Exactly one of the two happens, decided under one lock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// The producer dropped its [`Completer`] without a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Canceled;

impl std::fmt::Display for Canceled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the operation was dropped before it completed")
    }
}

impl std::error::Error for Canceled {}

#[derive(Debug)]
enum Slot<T> {
    Waiting,
    /// The producer has begun the work ([`Completer::start`]): it will be completed.
    Started,
    Done(T),
    Canceled,
    Taken,
    /// The waiter gave up before the work started ([`Completion::wait_or_give_up`]).
    GivenUp,
}

impl<T> Slot<T> {
    /// No value or cancellation yet.
    fn is_pending(&self) -> bool {
        matches!(self, Slot::Waiting | Slot::Started)
    }
}

#[derive(Debug)]
struct Inner<T> {
    slot: Mutex<Slot<T>>,
    ready: Condvar,
}

/// A pair of handles: complete the first, wait on the second.
pub fn completion<T>() -> (Completer<T>, Completion<T>) {
    let inner = Arc::new(Inner {
        slot: Mutex::new(Slot::Waiting),
        ready: Condvar::new(),
    });
    (
        Completer {
            inner: Some(Arc::clone(&inner)),
        },
        Completion { inner },
    )
}

/// Sets the value of a [`Completion`], once.
#[derive(Debug)]
pub struct Completer<T> {
    inner: Option<Arc<Inner<T>>>,
}

impl<T> Completer<T> {
    /// Stores the value and wakes the waiter (drops it if the waiter gave up).
    pub fn complete(mut self, value: T) {
        if let Some(inner) = self.inner.take() {
            let mut slot = inner.slot.lock();
            if !matches!(*slot, Slot::GivenUp) {
                *slot = Slot::Done(value);
            }
            inner.ready.notify_all();
        }
    }

    /// Claims the work before doing it: `true` if the waiter still waits, and from then
    /// on a [`Completion::wait_or_give_up`] waits for the value past its deadline (so
    /// complete it promptly); `false` if the waiter gave up, and then the work must not be
    /// done (nobody will hear of it).
    #[must_use]
    pub fn start(&self) -> bool {
        let Some(inner) = &self.inner else {
            return false;
        };
        let mut slot = inner.slot.lock();
        match *slot {
            Slot::Waiting => {
                *slot = Slot::Started;
                true
            }
            Slot::Started => true,
            Slot::GivenUp | Slot::Done(_) | Slot::Canceled | Slot::Taken => false,
        }
    }

    /// Whether the waiter gave the work up ([`Completion::wait_or_give_up`] passed its
    /// deadline before [`Completer::start`]).
    #[must_use]
    pub fn is_given_up(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|inner| matches!(*inner.slot.lock(), Slot::GivenUp))
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            let mut slot = inner.slot.lock();
            if !matches!(*slot, Slot::GivenUp) {
                *slot = Slot::Canceled;
            }
            inner.ready.notify_all();
        }
    }
}

/// Waits for the value of its [`Completer`].
#[derive(Debug)]
pub struct Completion<T> {
    inner: Arc<Inner<T>>,
}

/// The outcome of waiting with a deadline.
#[derive(Debug, PartialEq, Eq)]
pub enum WaitOutcome<T> {
    /// The value.
    Done(T),
    /// The producer was dropped.
    Canceled,
    /// The deadline passed first.
    TimedOut,
}

impl<T> Completion<T> {
    /// Blocks until the value is there.
    ///
    /// # Errors
    ///
    /// [`Canceled`] if the completer was dropped without a value.
    pub fn wait(self) -> Result<T, Canceled> {
        let mut slot = self.inner.slot.lock();
        loop {
            match std::mem::replace(&mut *slot, Slot::Taken) {
                Slot::Done(v) => return Ok(v),
                Slot::Canceled | Slot::Taken | Slot::GivenUp => return Err(Canceled),
                pending @ (Slot::Waiting | Slot::Started) => {
                    *slot = pending;
                    self.inner.ready.wait(&mut slot);
                }
            }
        }
    }

    /// Blocks until the value is there or `deadline` passes.
    pub fn wait_until(&self, deadline: Instant) -> WaitOutcome<T> {
        let mut slot = self.inner.slot.lock();
        loop {
            match std::mem::replace(&mut *slot, Slot::Taken) {
                Slot::Done(v) => return WaitOutcome::Done(v),
                Slot::Canceled | Slot::Taken | Slot::GivenUp => return WaitOutcome::Canceled,
                pending @ (Slot::Waiting | Slot::Started) => {
                    *slot = pending;
                    if self.inner.ready.wait_until(&mut slot, deadline).timed_out()
                        && slot.is_pending()
                    {
                        return WaitOutcome::TimedOut;
                    }
                }
            }
        }
    }

    /// Blocks until the value is there or `deadline` passes; at the deadline, gives the
    /// work up unless the producer has [started](Completer::start) it, and waits on for
    /// the value if it has. `TimedOut` therefore means the work was not and will not be
    /// done (its producer's `start` returns `false`), so the waiter may answer as if it
    /// never asked; a later call returns `Canceled`.
    pub fn wait_or_give_up(&self, deadline: Instant) -> WaitOutcome<T> {
        let mut slot = self.inner.slot.lock();
        loop {
            match std::mem::replace(&mut *slot, Slot::Taken) {
                Slot::Done(v) => return WaitOutcome::Done(v),
                Slot::Canceled | Slot::Taken | Slot::GivenUp => return WaitOutcome::Canceled,
                Slot::Waiting if Instant::now() >= deadline => {
                    *slot = Slot::GivenUp;
                    return WaitOutcome::TimedOut;
                }
                Slot::Waiting => {
                    *slot = Slot::Waiting;
                    let _ = self.inner.ready.wait_until(&mut slot, deadline);
                }
                Slot::Started => {
                    *slot = Slot::Started;
                    self.inner.ready.wait(&mut slot);
                }
            }
        }
    }

    /// Blocks for at most `timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> WaitOutcome<T> {
        self.wait_until(Instant::now() + timeout)
    }

    /// The value if it is already there, without blocking.
    pub fn try_take(&self) -> WaitOutcome<T> {
        let mut slot = self.inner.slot.lock();
        match std::mem::replace(&mut *slot, Slot::Taken) {
            Slot::Done(v) => WaitOutcome::Done(v),
            Slot::Canceled | Slot::Taken | Slot::GivenUp => WaitOutcome::Canceled,
            pending @ (Slot::Waiting | Slot::Started) => {
                *slot = pending;
                WaitOutcome::TimedOut
            }
        }
    }

    /// Whether the value (or cancellation) has arrived.
    pub fn is_ready(&self) -> bool {
        !self.inner.slot.lock().is_pending()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_crosses_threads_and_drop_cancels() {
        let (tx, rx) = completion();
        let t = std::thread::spawn(move || tx.complete(5));
        assert_eq!(rx.wait(), Ok(5));
        t.join().unwrap();

        let (tx, rx) = completion::<u8>();
        drop(tx);
        assert_eq!(rx.wait(), Err(Canceled));

        let (_tx, rx) = completion::<u8>();
        assert_eq!(rx.try_take(), WaitOutcome::TimedOut);
        assert_eq!(
            rx.wait_until(Instant::now()),
            WaitOutcome::TimedOut,
            "a passed deadline times out at once"
        );
    }

    #[test]
    fn work_not_started_by_the_deadline_is_given_up_and_never_done() {
        let (tx, rx) = completion::<u8>();
        assert!(!tx.is_given_up());
        assert_eq!(rx.wait_or_give_up(Instant::now()), WaitOutcome::TimedOut);
        assert!(tx.is_given_up());
        // The producer comes to it late: it must not do the work, and its value (were it
        // to complete anyway) reaches nobody.
        assert!(!tx.start(), "work given up was started");
        tx.complete(1);
        assert_eq!(rx.try_take(), WaitOutcome::Canceled);
    }

    #[test]
    fn work_started_before_the_deadline_is_waited_for_past_it() {
        let (tx, rx) = completion::<u8>();
        assert!(tx.start());
        assert!(tx.start(), "starting twice is still started");
        let t = std::thread::spawn(move || {
            // Completed only once the waiter's deadline has passed.
            std::thread::sleep(Duration::from_millis(50));
            tx.complete(7);
        });
        assert_eq!(rx.wait_or_give_up(Instant::now()), WaitOutcome::Done(7));
        t.join().unwrap();

        let (tx, rx) = completion::<u8>();
        assert!(tx.start());
        drop(tx);
        assert_eq!(rx.wait_or_give_up(Instant::now()), WaitOutcome::Canceled);
    }

    #[test]
    fn a_value_before_the_deadline_is_taken_whether_or_not_started() {
        let (tx, rx) = completion::<u8>();
        tx.complete(3);
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(rx.wait_or_give_up(far), WaitOutcome::Done(3));
    }
}
