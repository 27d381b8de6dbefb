//! Sleeping helpers for clock-bound wait.
// tidy: driver: sleeps the calling thread until an interval clock is past a timestamp.
//!
//! Protocol code asks [`IntervalClock::commit_wait`] how long to wait and arms a timer; a
//! thread-per-request server can call [`commit_wait_blocking`] instead.

use std::fmt;
use std::time::{Duration, Instant};

use crate::clock_bound::{ClockBoundError, ErrorBoundSource, IntervalClock};
use crate::physical::PhysicalClock;
use crate::time::WallTime;

/// Why [`commit_wait_blocking`] gave up.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommitWaitError {
    /// The interval clock could not answer.
    Clock(ClockBoundError),
    /// Waiting would exceed `wait_max` (the clock may be stuck, or stepped far back).
    TimedOut {
        /// How long the helper had slept.
        waited: Duration,
        /// How much longer the clock said to wait.
        remaining: Duration,
    },
}

impl fmt::Display for CommitWaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommitWaitError::Clock(e) => write!(f, "commit wait: {e}"),
            CommitWaitError::TimedOut { waited, remaining } => {
                write!(
                    f,
                    "commit wait gave up after {waited:?} with {remaining:?} still to wait"
                )
            }
        }
    }
}

impl std::error::Error for CommitWaitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CommitWaitError::Clock(e) => Some(e),
            CommitWaitError::TimedOut { .. } => None,
        }
    }
}

/// Sleeps until `clock` is certainly past `ts` (its `earliest` is above `ts`), re-checking
/// after every sleep, and returns how long it slept in total.
///
/// # Errors
///
/// [`CommitWaitError::TimedOut`] if the total wait would pass `wait_max`, and
/// [`CommitWaitError::Clock`] if the clock loses synchronisation.
///
/// ```
/// use std::time::Duration;
/// use synod_clocks::driver::wait::commit_wait_blocking;
/// use synod_clocks::{FixedErrorBound, IntervalClock, SystemClock};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let clock = IntervalClock::new(SystemClock::new(), FixedErrorBound::new(Duration::from_micros(200))?);
/// let ts = clock.now()?.latest();
/// commit_wait_blocking(&clock, ts, Duration::from_secs(1))?;
/// assert!(clock.now()?.is_after(ts));
/// # Ok(())
/// # }
/// ```
pub fn commit_wait_blocking<C: PhysicalClock, B: ErrorBoundSource>(
    clock: &IntervalClock<C, B>,
    ts: WallTime,
    wait_max: Duration,
) -> Result<Duration, CommitWaitError> {
    let start = Instant::now();
    loop {
        let remaining = clock.commit_wait(ts).map_err(CommitWaitError::Clock)?;
        let waited = start.elapsed();
        if remaining.is_zero() {
            return Ok(waited);
        }
        if waited + remaining > wait_max {
            return Err(CommitWaitError::TimedOut { waited, remaining });
        }
        std::thread::sleep(remaining);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock_bound::FixedErrorBound;
    use crate::{ErrorBoundSource, ManualClock};

    #[test]
    fn gives_up_instead_of_sleeping_past_the_limit() {
        let wall = ManualClock::new(WallTime::from_secs(10));
        wall.freeze();
        let clock = IntervalClock::new(
            wall,
            FixedErrorBound::new(Duration::from_millis(5)).unwrap(),
        );
        let ts = clock.now().unwrap().latest();
        // Ten milliseconds to wait, one allowed: an error at once, without sleeping.
        let err = commit_wait_blocking(&clock, ts, Duration::from_millis(1)).unwrap_err();
        assert!(
            matches!(err, CommitWaitError::TimedOut { remaining, .. } if remaining > Duration::from_millis(10)),
            "{err}"
        );
        // Already past: returns at once.
        let past = WallTime::from_secs(1);
        assert!(commit_wait_blocking(&clock, past, Duration::ZERO).is_ok());
    }

    #[test]
    fn reports_an_unsynchronised_clock() {
        struct Unsynced;
        impl ErrorBoundSource for Unsynced {
            fn error_bound(&self) -> Option<Duration> {
                None
            }
        }
        let clock = IntervalClock::new(ManualClock::new(WallTime::from_secs(1)), Unsynced);
        let err =
            commit_wait_blocking(&clock, WallTime::UNIX_EPOCH, Duration::from_secs(1)).unwrap_err();
        assert_eq!(err, CommitWaitError::Clock(ClockBoundError::Unsynchronized));
    }
}
