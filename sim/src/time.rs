//! Virtual time: the simulator's clock, in microseconds since the start of a run.

use std::fmt;
use std::time::Duration;

/// An instant of virtual time, in microseconds since the run began.
///
/// The simulator's event queue is ordered by `SimTime` (and a sequence number for ties).
/// A node's own clock reading ([`crate::Context::now`]) is also a `SimTime`, but it may be
/// offset, drift and jump relative to the simulator's true time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SimTime(u64);

impl SimTime {
    /// The start of a run.
    pub const ZERO: SimTime = SimTime(0);
    /// The end of time: used for operations that never returned.
    pub const MAX: SimTime = SimTime(u64::MAX);

    /// The instant `micros` microseconds after the start.
    #[must_use]
    pub const fn from_micros(micros: u64) -> Self {
        SimTime(micros)
    }

    /// Microseconds since the start.
    #[must_use]
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// This instant plus `d`, saturating at [`SimTime::MAX`].
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> SimTime {
        SimTime(self.0.saturating_add(duration_micros(d)))
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    #[must_use]
    pub fn saturating_duration_since(self, earlier: SimTime) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for SimTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// A duration in whole microseconds, saturating at `u64::MAX`.
#[must_use]
pub fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_and_displays() {
        let t = SimTime::from_micros(1_500_000);
        assert_eq!(t.to_string(), "1.500000s");
        assert_eq!(
            t.saturating_add(Duration::from_millis(1)).as_micros(),
            1_501_000
        );
        assert_eq!(
            SimTime::MAX.saturating_add(Duration::from_secs(1)),
            SimTime::MAX
        );
        assert_eq!(SimTime::ZERO.saturating_duration_since(t), Duration::ZERO);
    }
}
