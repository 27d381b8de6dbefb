//! [`SystemClock`]: the operating system's wall and monotonic clocks.
// tidy: driver: the one reader of the operating system's clocks in the protocol crates.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::physical::PhysicalClock;
use crate::time::{MonoTime, WallTime};

/// The operating system's clocks: `SystemTime` for wall time and `Instant` for monotonic
/// time, which counts from the moment the `SystemClock` was created.
///
/// A wall time before the Unix epoch reads as the epoch.
///
/// ```
/// use synod_clocks::{PhysicalClock, SystemClock, WallTime};
///
/// let clock = SystemClock::new();
/// assert!(clock.wall() > WallTime::from_secs(1_600_000_000)); // after September 2020
/// let a = clock.monotonic();
/// assert!(clock.monotonic() >= a);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose monotonic readings count from now.
    pub fn new() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl PhysicalClock for SystemClock {
    #[inline]
    fn wall(&self) -> WallTime {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => WallTime::from_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            Err(_) => WallTime::UNIX_EPOCH,
        }
    }

    #[inline]
    fn monotonic(&self) -> MonoTime {
        MonoTime::from_nanos(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }
}
