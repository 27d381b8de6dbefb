//! Clock-bound wait: an [`IntervalClock`] that returns `[earliest, latest]` around true
//! time, commit-wait and the read-restart check.
//!
//! A physical clock is wrong by some amount; if that amount has a known bound `e`, a
//! reading `t` says true time is in `[t - e, t + e]`. Spanner's TrueTime API returns that
//! interval, and so does AWS ClockBound (from the chrony daemon's error estimate). Two
//! rules then give external consistency (if transaction A commits before B starts, in real
//! time, then A's timestamp is below B's):
//!
//! - **Commit wait**: a transaction takes the commit timestamp `ts = now().latest()` and
//!   does not make its writes visible (nor acknowledge them) until `now().earliest() > ts`,
//!   that is until true time has certainly passed `ts`. Expected wait: about `2e`.
//! - **Read restart** (the alternative CockroachDB uses instead of waiting on writes): a
//!   read at timestamp `r` treats any value with a timestamp in `(r, r + max_offset]` as
//!   *uncertain*, because it may have been committed before the read started on a clock
//!   that runs behind. The read restarts at the value's timestamp (or waits out the
//!   uncertainty with commit-wait).
//!
//! Nothing here sleeps: [`IntervalClock::commit_wait`] returns how long to wait, and a
//! protocol arms a timer for it. [`commit_wait_blocking`](crate::driver::wait::commit_wait_blocking)
//! is the driver helper that sleeps.
//!
//! # Where the error bound comes from
//!
//! An [`ErrorBoundSource`] supplies `e` for each reading. [`FixedErrorBound`] is a
//! configured constant (a deployment that knows its NTP or PTP setup keeps clocks within,
//! say, 250 ms). The Linux kernel reports a live bound, the `maxerror` field of
//! `adjtimex(2)`/`ntp_gettime(3)`, which chrony or ntpd keeps updated and which grows by
//! 500 ppm of elapsed time while the daemon is silent; AWS ClockBound publishes its bound in
//! a shared-memory segment. Reading either needs `libc` and `unsafe` code, which this
//! crate does not use (its dependencies are `serde`, `parking_lot` and `crc32fast`, and
//! `unsafe_code` is denied), so the crate does not call `adjtimex` itself: implement
//! [`ErrorBoundSource`] in your application over `libc::ntp_gettime` (return `None` when
//! the status says the clock is unsynchronised, else `maxerror` microseconds) or over the
//! `clock-bound` client crate, and pass it to [`IntervalClock::new`].

use core::fmt;
use core::time::Duration;

use crate::error::ConfigError;
use crate::hlc::{HybridTimestamp, PHYSICAL_TICK};
use crate::physical::PhysicalClock;
use crate::time::WallTime;

/// A source of the current bound on a physical clock's error, `|reading - true time|`.
pub trait ErrorBoundSource {
    /// The bound that holds for a reading taken now, or `None` if the source cannot vouch
    /// for the clock (for example, the kernel reports it unsynchronised).
    fn error_bound(&self) -> Option<Duration>;
}

impl<B: ErrorBoundSource + ?Sized> ErrorBoundSource for &B {
    fn error_bound(&self) -> Option<Duration> {
        (**self).error_bound()
    }
}

impl<B: ErrorBoundSource + ?Sized> ErrorBoundSource for std::sync::Arc<B> {
    fn error_bound(&self) -> Option<Duration> {
        (**self).error_bound()
    }
}

impl<B: ErrorBoundSource + ?Sized> ErrorBoundSource for Box<B> {
    fn error_bound(&self) -> Option<Duration> {
        (**self).error_bound()
    }
}

/// A configured, constant error bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedErrorBound(Duration);

impl FixedErrorBound {
    /// The largest bound accepted: one day.
    pub const LIMIT: Duration = Duration::from_secs(24 * 60 * 60);

    /// A bound of `bound`. Zero is allowed (a perfect clock, for tests).
    ///
    /// # Errors
    ///
    /// If `bound` is longer than [`Self::LIMIT`].
    pub fn new(bound: Duration) -> Result<Self, ConfigError> {
        if bound > Self::LIMIT {
            return Err(ConfigError::new("error_bound", "must be at most one day"));
        }
        Ok(FixedErrorBound(bound))
    }

    /// The bound.
    pub fn get(&self) -> Duration {
        self.0
    }
}

impl ErrorBoundSource for FixedErrorBound {
    fn error_bound(&self) -> Option<Duration> {
        Some(self.0)
    }
}

/// Why an interval clock could not answer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClockBoundError {
    /// The error-bound source cannot vouch for the clock, so no interval is known to
    /// contain true time. Do not commit or serve reads that depend on time.
    Unsynchronized,
}

impl fmt::Display for ClockBoundError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClockBoundError::Unsynchronized => {
                write!(
                    f,
                    "clock error bound unknown: the clock is not synchronised"
                )
            }
        }
    }
}

impl std::error::Error for ClockBoundError {}

/// An interval `[earliest, latest]` that contains true time, if the error bound holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimeInterval {
    earliest: WallTime,
    latest: WallTime,
}

impl TimeInterval {
    /// The interval `[reading - bound, reading + bound]`, saturating at the ends of time.
    pub fn around(reading: WallTime, bound: Duration) -> Self {
        TimeInterval {
            earliest: reading.saturating_sub(bound),
            latest: reading.saturating_add(bound),
        }
    }

    /// The earliest true time can be.
    pub fn earliest(&self) -> WallTime {
        self.earliest
    }

    /// The latest true time can be. A commit timestamp chosen now is `latest()`.
    pub fn latest(&self) -> WallTime {
        self.latest
    }

    /// Whether `t` may be true time.
    pub fn contains(&self, t: WallTime) -> bool {
        self.earliest <= t && t <= self.latest
    }

    /// Whether true time has certainly passed `t` (`earliest > t`); TrueTime's `after(t)`.
    pub fn is_after(&self, t: WallTime) -> bool {
        self.earliest > t
    }

    /// Whether true time is certainly before `t` (`latest < t`); TrueTime's `before(t)`.
    pub fn is_before(&self, t: WallTime) -> bool {
        self.latest < t
    }

    /// How long, on this clock, until [`is_after(t)`](Self::is_after) holds: zero if it
    /// already does, else `t - earliest + 1 ns`. Re-check after waiting: the clock may have
    /// been stepped meanwhile.
    pub fn wait_until_after(&self, t: WallTime) -> Duration {
        if self.is_after(t) {
            Duration::ZERO
        } else {
            t.saturating_duration_since(self.earliest) + Duration::from_nanos(1)
        }
    }
}

/// A physical clock plus an error bound: TrueTime's interface.
///
/// ```
/// use std::time::Duration;
/// use synod_clocks::clock_bound::{FixedErrorBound, IntervalClock};
/// use synod_clocks::{ManualClock, WallTime};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let physical = ManualClock::new(WallTime::from_secs(1_000));
/// let clock = IntervalClock::new(physical.clone(), FixedErrorBound::new(Duration::from_millis(5))?);
///
/// let commit_ts = clock.now()?.latest();          // 1000.005
/// let wait = clock.commit_wait(commit_ts)?;       // until earliest > 1000.005
/// assert_eq!(wait, Duration::from_millis(10) + Duration::from_nanos(1));
/// physical.advance(wait);                         // a real node arms a timer instead
/// assert_eq!(clock.commit_wait(commit_ts)?, Duration::ZERO); // now make the writes visible
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct IntervalClock<C, B> {
    clock: C,
    bound: B,
}

impl<C: PhysicalClock, B: ErrorBoundSource> IntervalClock<C, B> {
    /// An interval clock reading `clock` with error bounds from `bound`.
    pub fn new(clock: C, bound: B) -> Self {
        IntervalClock { clock, bound }
    }

    /// The interval that contains true time now.
    ///
    /// # Errors
    ///
    /// [`ClockBoundError::Unsynchronized`] if the bound source cannot vouch for the clock.
    pub fn now(&self) -> Result<TimeInterval, ClockBoundError> {
        let bound = self
            .bound
            .error_bound()
            .ok_or(ClockBoundError::Unsynchronized)?;
        Ok(TimeInterval::around(self.clock.wall(), bound))
    }

    /// How long to wait before a transaction with commit timestamp `ts` may make its
    /// writes visible: zero once `earliest > ts`. Call again after waiting.
    ///
    /// # Errors
    ///
    /// As [`now`](Self::now).
    pub fn commit_wait(&self, ts: WallTime) -> Result<Duration, ClockBoundError> {
        Ok(self.now()?.wait_until_after(ts))
    }

    /// The uncertainty window of a read starting now: read at the clock's reading, with
    /// uncertainty twice the error bound (two clocks each within the bound of true time
    /// are within twice the bound of each other).
    ///
    /// # Errors
    ///
    /// As [`now`](Self::now).
    pub fn read_window(&self) -> Result<UncertaintyWindow, ClockBoundError> {
        let bound = self
            .bound
            .error_bound()
            .ok_or(ClockBoundError::Unsynchronized)?;
        Ok(UncertaintyWindow::new(
            self.clock.wall(),
            bound.saturating_mul(2),
        ))
    }

    /// For a read that found a value in its uncertainty window
    /// ([`ReadCheck::Uncertain`]): how long until the value's timestamp is certainly in
    /// the past. After that wait a read at a fresh timestamp sees the value without
    /// ambiguity; this is the waiting alternative to restarting at once.
    ///
    /// # Errors
    ///
    /// As [`now`](Self::now).
    pub fn read_wait(&self, value: WallTime) -> Result<Duration, ClockBoundError> {
        self.commit_wait(value)
    }

    /// [`commit_wait`](Self::commit_wait) for a hybrid-clock commit timestamp: how long
    /// until true time is certainly past every instant `ts` may stand for, the whole
    /// [`PHYSICAL_TICK`] its physical part names.
    ///
    /// # Errors
    ///
    /// As [`now`](Self::now).
    pub fn commit_wait_hybrid(&self, ts: HybridTimestamp) -> Result<Duration, ClockBoundError> {
        let end_of_tick = ts
            .physical()
            .saturating_add(PHYSICAL_TICK - Duration::from_nanos(1));
        self.commit_wait(end_of_tick)
    }

    /// The physical clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The error-bound source.
    pub fn bound_source(&self) -> &B {
        &self.bound
    }
}

/// What a read must do about a value it found, from [`UncertaintyWindow::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadCheck {
    /// The value's timestamp is at or below the read timestamp: it is in the snapshot.
    Visible,
    /// The value's timestamp is above the read timestamp but inside the uncertainty
    /// window: it may have been committed before the read started. Restart the read at a
    /// timestamp at least the value's ([`UncertaintyWindow::restart_at`]), or wait until
    /// the clock is certainly past the value ([`IntervalClock::commit_wait`]) and read again.
    Uncertain,
    /// The value's timestamp is beyond the window: it was certainly committed after the
    /// read started, so it is not in the snapshot.
    Invisible,
}

/// A read timestamp and its uncertainty limit (CockroachDB's uncertainty interval).
///
/// The limit is the read's start time plus the maximum offset between any two clocks;
/// it stays fixed across restarts, so a read restarts at most as many times as there are
/// values in the window.
///
/// ```
/// use std::time::Duration;
/// use synod_clocks::clock_bound::{ReadCheck, UncertaintyWindow};
/// use synod_clocks::WallTime;
///
/// let w = UncertaintyWindow::new(WallTime::from_secs(100), Duration::from_millis(250));
/// assert_eq!(w.check(WallTime::from_secs(99)), ReadCheck::Visible);
/// let v = WallTime::from_nanos(100_100_000_000);
/// assert_eq!(w.check(v), ReadCheck::Uncertain);   // 100 ms later: might precede us
/// assert_eq!(w.check(WallTime::from_secs(101)), ReadCheck::Invisible);
/// let w = w.restart_at(v);
/// assert_eq!(w.check(v), ReadCheck::Visible);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UncertaintyWindow {
    read: WallTime,
    limit: WallTime,
}

impl UncertaintyWindow {
    /// A read at `read` (the local clock's reading at the read's start) with uncertainty
    /// `max_offset` (the largest difference between any two clocks in the cluster; twice
    /// the error bound of an interval clock).
    pub fn new(read: WallTime, max_offset: Duration) -> Self {
        UncertaintyWindow {
            read,
            limit: read.saturating_add(max_offset),
        }
    }

    /// The read timestamp.
    pub fn read(&self) -> WallTime {
        self.read
    }

    /// The uncertainty limit: values above it are certainly later than the read.
    pub fn limit(&self) -> WallTime {
        self.limit
    }

    /// Classifies a value's commit timestamp.
    pub fn check(&self, value: WallTime) -> ReadCheck {
        if value <= self.read {
            ReadCheck::Visible
        } else if value <= self.limit {
            ReadCheck::Uncertain
        } else {
            ReadCheck::Invisible
        }
    }

    /// The window of a read restarted at `value` (if that is later): same limit.
    pub fn restart_at(self, value: WallTime) -> Self {
        UncertaintyWindow {
            read: self.read.max(value).min(self.limit),
            limit: self.limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    struct Unsynced;
    impl ErrorBoundSource for Unsynced {
        fn error_bound(&self) -> Option<Duration> {
            None
        }
    }

    #[test]
    fn unsynchronised_source_is_an_error() {
        let c = IntervalClock::new(ManualClock::new(WallTime::from_secs(1)), Unsynced);
        assert_eq!(c.now(), Err(ClockBoundError::Unsynchronized));
        assert_eq!(
            c.commit_wait(WallTime::from_secs(1)),
            Err(ClockBoundError::Unsynchronized)
        );
    }

    #[test]
    fn read_window_spans_twice_the_bound_and_read_wait_waits_out_a_value() {
        let wall = ManualClock::new(WallTime::from_secs(100));
        let clock = IntervalClock::new(
            wall.clone(),
            FixedErrorBound::new(Duration::from_millis(5)).unwrap(),
        );
        let w = clock.read_window().unwrap();
        assert_eq!(w.read(), WallTime::from_secs(100));
        assert_eq!(w.limit(), WallTime::from_nanos(100_010_000_000));
        let value = WallTime::from_nanos(100_004_000_000);
        assert_eq!(w.check(value), ReadCheck::Uncertain);
        let wait = clock.read_wait(value).unwrap();
        assert_eq!(wait, Duration::from_millis(9) + Duration::from_nanos(1));
        wall.advance(wait);
        assert!(clock.now().unwrap().is_after(value));
        assert_eq!(
            clock.read_window().unwrap().check(value),
            ReadCheck::Visible
        );
    }

    #[test]
    fn commit_wait_on_a_hybrid_timestamp_covers_its_whole_tick() {
        let wall = ManualClock::new(WallTime::from_nanos(10 << 16));
        let clock = IntervalClock::new(wall.clone(), FixedErrorBound::new(Duration::ZERO).unwrap());
        let ts = HybridTimestamp::new(WallTime::from_nanos(10 << 16), 5, None);
        // Earliest must pass the last nanosecond of the tick: 65,536 ns from its start.
        assert_eq!(clock.commit_wait_hybrid(ts), Ok(PHYSICAL_TICK));
        wall.advance(PHYSICAL_TICK);
        assert_eq!(clock.commit_wait_hybrid(ts), Ok(Duration::ZERO));
    }

    #[test]
    fn interval_saturates_and_answers_before_and_after() {
        let i = TimeInterval::around(WallTime::from_nanos(5), Duration::from_nanos(10));
        assert_eq!(i.earliest(), WallTime::UNIX_EPOCH);
        assert_eq!(i.latest(), WallTime::from_nanos(15));
        assert!(i.contains(WallTime::from_nanos(15)) && !i.contains(WallTime::from_nanos(16)));
        assert!(i.is_before(WallTime::from_nanos(16)) && !i.is_after(WallTime::UNIX_EPOCH));
        assert_eq!(
            i.wait_until_after(WallTime::from_nanos(3)),
            Duration::from_nanos(4)
        );
        assert!(FixedErrorBound::new(Duration::from_secs(86_401)).is_err());
    }
}
