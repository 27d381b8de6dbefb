//! Time as a value: the instant a driver hands to a state machine with every input.

use std::fmt;
use std::ops::{Add, AddAssign};
use std::time::Duration;

/// An instant on a node's monotonic clock, in nanoseconds since an epoch its driver chose.
///
/// A state machine never reads a clock: its driver reads one (a real process its monotonic
/// clock, the simulator the node's virtual clock, with whatever offset and drift the run
/// gave it) and passes the reading with each input. Within one incarnation of a node the
/// times it is handed never go backwards. The epoch means nothing across nodes or across
/// restarts, so a `Time` is never sent to another node or written to disk: what crosses
/// those boundaries is a duration or a wall-clock timestamp (`synod_clocks::WallTime`,
/// `synod_clocks::HybridTimestamp`).
///
/// Arithmetic saturates: `Time::MAX + d` is `Time::MAX`, and the duration since a later
/// time is zero, so no input can make a state machine overflow.
///
/// ```
/// use std::time::Duration;
/// use synod_node::Time;
///
/// let t = Time::from_millis(1_500);
/// assert_eq!(t + Duration::from_millis(500), Time::from_secs(2));
/// assert_eq!(Time::from_secs(2).saturating_duration_since(t), Duration::from_millis(500));
/// assert_eq!(t.saturating_duration_since(Time::from_secs(2)), Duration::ZERO);
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    /// The driver's epoch.
    pub const ZERO: Time = Time(0);
    /// The last representable instant, about 584 years after the epoch.
    pub const MAX: Time = Time(u64::MAX);

    /// `nanos` nanoseconds after the epoch.
    #[must_use]
    pub const fn from_nanos(nanos: u64) -> Time {
        Time(nanos)
    }

    /// `micros` microseconds after the epoch (saturating).
    #[must_use]
    pub const fn from_micros(micros: u64) -> Time {
        Time(micros.saturating_mul(1_000))
    }

    /// `millis` milliseconds after the epoch (saturating).
    #[must_use]
    pub const fn from_millis(millis: u64) -> Time {
        Time(millis.saturating_mul(1_000_000))
    }

    /// `secs` seconds after the epoch (saturating).
    #[must_use]
    pub const fn from_secs(secs: u64) -> Time {
        Time(secs.saturating_mul(1_000_000_000))
    }

    /// Nanoseconds since the epoch.
    #[must_use]
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Whole milliseconds since the epoch.
    #[must_use]
    pub const fn as_millis(self) -> u64 {
        self.0 / 1_000_000
    }

    /// The time since the epoch.
    #[must_use]
    pub const fn since_epoch(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// `self + d`, or `None` past [`Time::MAX`].
    #[must_use]
    pub fn checked_add(self, d: Duration) -> Option<Time> {
        let nanos = u64::try_from(d.as_nanos()).ok()?;
        self.0.checked_add(nanos).map(Time)
    }

    /// `self + d`, at most [`Time::MAX`].
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Time {
        self.checked_add(d).unwrap_or(Time::MAX)
    }

    /// `self - d`, at least [`Time::ZERO`].
    #[must_use]
    pub fn saturating_sub(self, d: Duration) -> Time {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Time(self.0.saturating_sub(nanos))
    }

    /// How long after `earlier` this is; zero if `earlier` is later.
    #[must_use]
    pub const fn saturating_duration_since(self, earlier: Time) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;

    /// Saturating, as [`Time::saturating_add`].
    fn add(self, d: Duration) -> Time {
        self.saturating_add(d)
    }
}

impl AddAssign<Duration> for Time {
    fn add_assign(&mut self, d: Duration) {
        *self = self.saturating_add(d);
    }
}

impl fmt::Debug for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Time {
    /// Seconds since the epoch with microsecond precision: `t+12.000345s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0 / 1_000_000_000;
        let micros = (self.0 % 1_000_000_000) / 1_000;
        write!(f, "t+{secs}.{micros:06}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_at_both_ends() {
        assert_eq!(Time::MAX + Duration::from_nanos(1), Time::MAX);
        assert_eq!(Time::MAX.checked_add(Duration::from_nanos(1)), None);
        assert_eq!(Time::ZERO.checked_add(Duration::MAX), None);
        assert_eq!(
            Time::ZERO.saturating_sub(Duration::from_secs(1)),
            Time::ZERO
        );
        assert_eq!(Time::from_secs(u64::MAX), Time::MAX);
        assert_eq!(
            Time::from_secs(1).saturating_duration_since(Time::from_secs(2)),
            Duration::ZERO
        );
        let mut t = Time::from_micros(5);
        t += Duration::from_nanos(1);
        assert_eq!(t.as_nanos(), 5_001);
    }

    #[test]
    fn display_shows_seconds_and_micros() {
        assert_eq!(Time::from_nanos(12_000_345_999).to_string(), "t+12.000345s");
        assert_eq!(Time::ZERO.to_string(), "t+0.000000s");
    }
}
