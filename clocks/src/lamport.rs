//! Lamport clocks: [`LamportTimestamp`], [`LamportClock`] and [`AtomicLamportClock`].
//!
//! A Lamport clock is a counter: tick it on every local event, stamp outgoing messages with
//! it, and on receiving a timestamp set it to `max(local, received) + 1`. If event `a`
//! happened before event `b` then `ts(a) < ts(b)`; the converse does not hold, so equal or
//! ordered Lamport timestamps say nothing about concurrency (use a
//! [`VersionVector`](crate::VersionVector) for that).

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// A Lamport timestamp.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct LamportTimestamp(u64);

impl LamportTimestamp {
    /// The timestamp before any event.
    pub const ZERO: LamportTimestamp = LamportTimestamp(0);

    /// A timestamp with this value.
    pub const fn new(value: u64) -> Self {
        LamportTimestamp(value)
    }

    /// The counter value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for LamportTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "L{}", self.0)
    }
}

/// The counter reached `u64::MAX`, so no later timestamp exists. Only a corrupt or
/// malicious received timestamp can cause this; the clock is left unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LamportOverflow;

impl fmt::Display for LamportOverflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lamport clock overflow: no timestamp after u64::MAX")
    }
}

impl std::error::Error for LamportOverflow {}

/// A Lamport clock owned by one thread.
///
/// ```
/// use synod_clocks::{LamportClock, LamportTimestamp};
///
/// # fn main() -> Result<(), synod_clocks::LamportOverflow> {
/// let mut a = LamportClock::new();
/// let mut b = LamportClock::new();
/// let sent = a.tick()?;                 // a sends a message stamped 1
/// b.tick()?;                            // b does something locally: 1
/// let received = b.observe(sent)?;      // b receives a's message: max(1, 1) + 1
/// assert_eq!(received, LamportTimestamp::new(2));
/// assert!(received > sent);
/// # Ok(())
/// # }
/// ```
///
/// A clock is `Clone` but deliberately not `Copy`: a silent copy would be a second clock
/// issuing the same timestamps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LamportClock {
    last: u64,
}

impl LamportClock {
    /// A clock that has issued nothing.
    pub const fn new() -> Self {
        LamportClock { last: 0 }
    }

    /// A clock that continues after `last` (for example, restored from disk).
    pub const fn resume(last: LamportTimestamp) -> Self {
        LamportClock { last: last.0 }
    }

    /// The timestamp of a new local or send event.
    ///
    /// # Errors
    ///
    /// [`LamportOverflow`] if the counter is at `u64::MAX`.
    pub fn tick(&mut self) -> Result<LamportTimestamp, LamportOverflow> {
        self.last = self.last.checked_add(1).ok_or(LamportOverflow)?;
        Ok(LamportTimestamp(self.last))
    }

    /// The timestamp of receiving a message stamped `received`: `max(last, received) + 1`.
    ///
    /// # Errors
    ///
    /// [`LamportOverflow`] if that would exceed `u64::MAX`; the clock is unchanged.
    pub fn observe(
        &mut self,
        received: LamportTimestamp,
    ) -> Result<LamportTimestamp, LamportOverflow> {
        self.last = self
            .last
            .max(received.0)
            .checked_add(1)
            .ok_or(LamportOverflow)?;
        Ok(LamportTimestamp(self.last))
    }

    /// The last timestamp issued.
    pub const fn current(&self) -> LamportTimestamp {
        LamportTimestamp(self.last)
    }
}

/// A Lamport clock shared between threads, lock-free.
///
/// Every timestamp it returns is distinct.
#[derive(Debug, Default)]
pub struct AtomicLamportClock {
    last: AtomicU64,
}

impl AtomicLamportClock {
    /// A clock that has issued nothing.
    pub const fn new() -> Self {
        AtomicLamportClock {
            last: AtomicU64::new(0),
        }
    }

    /// A clock that continues after `last`.
    pub const fn resume(last: LamportTimestamp) -> Self {
        AtomicLamportClock {
            last: AtomicU64::new(last.0),
        }
    }

    /// The timestamp of a new local or send event.
    ///
    /// # Errors
    ///
    /// [`LamportOverflow`] if the counter is at `u64::MAX`.
    pub fn tick(&self) -> Result<LamportTimestamp, LamportOverflow> {
        self.step(|last| last.checked_add(1))
    }

    /// The timestamp of receiving `received`: `max(last, received) + 1`.
    ///
    /// # Errors
    ///
    /// [`LamportOverflow`] if that would exceed `u64::MAX`; the clock is unchanged.
    pub fn observe(&self, received: LamportTimestamp) -> Result<LamportTimestamp, LamportOverflow> {
        self.step(|last| last.max(received.0).checked_add(1))
    }

    fn step(&self, f: impl Fn(u64) -> Option<u64>) -> Result<LamportTimestamp, LamportOverflow> {
        let mut last = self.last.load(Ordering::Acquire);
        loop {
            let next = f(last).ok_or(LamportOverflow)?;
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(LamportTimestamp(next)),
                Err(current) => last = current,
            }
        }
    }

    /// The last timestamp issued by any thread.
    pub fn current(&self) -> LamportTimestamp {
        LamportTimestamp(self.last.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_is_an_error_and_leaves_the_clock_unchanged() {
        let mut c = LamportClock::resume(LamportTimestamp::new(u64::MAX - 1));
        assert_eq!(c.tick(), Ok(LamportTimestamp::new(u64::MAX)));
        assert_eq!(c.tick(), Err(LamportOverflow));
        let mut d = LamportClock::new();
        assert_eq!(
            d.observe(LamportTimestamp::new(u64::MAX)),
            Err(LamportOverflow)
        );
        assert_eq!(d.current(), LamportTimestamp::ZERO);
        let a = AtomicLamportClock::new();
        assert_eq!(
            a.observe(LamportTimestamp::new(u64::MAX)),
            Err(LamportOverflow)
        );
        assert_eq!(
            a.observe(LamportTimestamp::new(5)),
            Ok(LamportTimestamp::new(6))
        );
        assert_eq!(a.tick(), Ok(LamportTimestamp::new(7)));
    }

    #[test]
    fn serde_is_a_plain_integer() {
        let bytes = postcard::to_allocvec(&LamportTimestamp::new(300)).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&300u64).unwrap());
    }
}
