//! Time values: wall-clock and monotonic readings as nanosecond newtypes, and node ids.
//!
//! A reading is a value, not a call: protocol code receives a [`WallTime`] or a monotonic
//! [`Time`] as an argument and never asks the operating system for one. Durations are plain
//! [`std::time::Duration`]s.

use core::fmt;
use core::time::Duration;

use serde::{Deserialize, Serialize};

/// Converts a duration to whole nanoseconds, saturating at `u64::MAX` (about 584 years).
pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A wall-clock reading: nanoseconds since the Unix epoch (1970-01-01T00:00:00 UTC), leap
/// seconds ignored as in POSIX time.
///
/// A `u64` of nanoseconds reaches the year 2554. Wall time can jump backwards and forwards
/// when an administrator or NTP steps the clock; use a monotonic [`Time`] to measure intervals and a
/// [`HybridClock`](crate::HybridClock) when you need timestamps that never go back.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct WallTime(u64);

impl WallTime {
    /// The Unix epoch itself.
    pub const UNIX_EPOCH: WallTime = WallTime(0);
    /// The largest representable wall time (in the year 2554).
    pub const MAX: WallTime = WallTime(u64::MAX);

    /// A wall time `nanos` nanoseconds after the Unix epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        WallTime(nanos)
    }

    /// A wall time `secs` seconds after the Unix epoch, saturating at [`WallTime::MAX`].
    pub const fn from_secs(secs: u64) -> Self {
        WallTime(secs.saturating_mul(1_000_000_000))
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// `self + d`, or `None` past [`WallTime::MAX`].
    pub fn checked_add(self, d: Duration) -> Option<Self> {
        u64::try_from(d.as_nanos())
            .ok()
            .and_then(|n| self.0.checked_add(n))
            .map(WallTime)
    }

    /// `self + d`, saturating at [`WallTime::MAX`].
    pub fn saturating_add(self, d: Duration) -> Self {
        WallTime(self.0.saturating_add(duration_nanos(d)))
    }

    /// `self - d`, saturating at the Unix epoch.
    pub fn saturating_sub(self, d: Duration) -> Self {
        WallTime(self.0.saturating_sub(duration_nanos(d)))
    }

    /// The time from `earlier` to `self`, or `None` if `earlier` is later than `self`.
    pub fn duration_since(self, earlier: WallTime) -> Option<Duration> {
        self.0.checked_sub(earlier.0).map(Duration::from_nanos)
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later than `self`.
    pub fn saturating_duration_since(self, earlier: WallTime) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for WallTime {
    /// Seconds since the epoch with nine decimals, for example `1700000000.000000123`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:09}",
            self.0 / 1_000_000_000,
            self.0 % 1_000_000_000
        )
    }
}

/// A monotonic reading: `synod-node`'s [`Time`], nanoseconds on one
/// node's monotonic clock since an origin fixed for the clock's life (for
/// [`SystemClock`](crate::SystemClock), the moment it was created).
///
/// Monotonic time never goes backwards, so it is the right source for timeouts and leases
/// measured on one node. Readings from different clocks or processes are not comparable, and a
/// reading is never sent to another node or written to disk.
pub use synod_node::Time;

/// The identity of a node in clocks and version vectors: `synod-node`'s, the one every Synod
/// crate uses (numbered from 1; zero cannot be built).
pub use synod_node::NodeId;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_time_arithmetic_saturates_and_reports_order() {
        let t = WallTime::from_secs(10);
        assert_eq!(
            t.saturating_add(Duration::from_nanos(5)).as_nanos(),
            10_000_000_005
        );
        assert_eq!(
            t.saturating_sub(Duration::from_secs(11)),
            WallTime::UNIX_EPOCH
        );
        assert_eq!(
            WallTime::MAX.saturating_add(Duration::from_secs(1)),
            WallTime::MAX
        );
        assert_eq!(WallTime::MAX.checked_add(Duration::from_nanos(1)), None);
        assert_eq!(t.duration_since(WallTime::from_secs(11)), None);
        assert_eq!(
            t.duration_since(WallTime::from_secs(9)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            WallTime::from_nanos(1_500_000_001).to_string(),
            "1.500000001"
        );
    }
}
