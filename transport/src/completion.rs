//! Completion handles: a value produced on one thread and awaited on another.
//!
//! Used by the [Singular Update Queue](crate::SingularUpdateQueue) and the [Request
//! Pipeline](crate::TcpTransport::request). A [`Completer`] dropped without completing
//! wakes its [`Completion`] with [`Canceled`], so a waiter never hangs on a lost producer.

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
    Done(T),
    Canceled,
    Taken,
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
    /// Stores the value and wakes the waiter.
    pub fn complete(mut self, value: T) {
        if let Some(inner) = self.inner.take() {
            *inner.slot.lock() = Slot::Done(value);
            inner.ready.notify_all();
        }
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            *inner.slot.lock() = Slot::Canceled;
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
                Slot::Canceled | Slot::Taken => return Err(Canceled),
                Slot::Waiting => {
                    *slot = Slot::Waiting;
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
                Slot::Canceled | Slot::Taken => return WaitOutcome::Canceled,
                Slot::Waiting => {
                    *slot = Slot::Waiting;
                    if self.inner.ready.wait_until(&mut slot, deadline).timed_out()
                        && matches!(*slot, Slot::Waiting)
                    {
                        return WaitOutcome::TimedOut;
                    }
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
            Slot::Canceled | Slot::Taken => WaitOutcome::Canceled,
            Slot::Waiting => {
                *slot = Slot::Waiting;
                WaitOutcome::TimedOut
            }
        }
    }

    /// Whether the value (or cancellation) has arrived.
    pub fn is_ready(&self) -> bool {
        !matches!(*self.inner.slot.lock(), Slot::Waiting)
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
}
