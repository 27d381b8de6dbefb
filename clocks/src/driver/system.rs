//! [`SystemClock`]: the operating system's wall and monotonic clocks.
// tidy: driver: the one reader of the operating system's clocks in the protocol crates.

use core::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::ConfigError;
use crate::physical::PhysicalClock;
use crate::time::{Time, WallTime, duration_nanos};

/// Reads the operating system's wall clock in nanoseconds since the epoch.
#[inline]
fn read_wall() -> u64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        // 64-bit arithmetic rather than `as_nanos()`'s 128-bit: this is on the path of
        // every hybrid timestamp.
        Ok(d) => d
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos())),
        Err(_) => 0,
    }
}

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
        WallTime::from_nanos(read_wall())
    }

    #[inline]
    fn monotonic(&self) -> Time {
        Time::from_nanos(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }
}

/// The operating system's clocks, with the wall clock read at most once per
/// `resync_interval` and extrapolated with the monotonic clock in between.
///
/// Converting a `SystemTime` into nanoseconds costs about as much as a third of reading it
/// (std's `duration_since`), while an `Instant` difference is nearly free; on a hot path
/// (a hybrid timestamp per request) this clock is about a third cheaper than
/// [`SystemClock`]. The price: a step of the system clock (an administrator, or NTP
/// stepping instead of slewing) becomes visible only at the next resynchronisation, up to
/// `resync_interval` later, and between resynchronisations the reading follows the
/// monotonic clock's rate (on Linux both clocks are slewed alike by NTP, so the two rates
/// agree). Add `resync_interval` times the clocks' largest rate difference to an error
/// bound used for clock-bound wait; with the default of one millisecond that is well under
/// a microsecond.
///
/// ```
/// use std::time::Duration;
/// use synod_clocks::{CachedSystemClock, PhysicalClock, SystemClock};
///
/// # fn main() -> Result<(), synod_clocks::ConfigError> {
/// let cached = CachedSystemClock::new(Duration::from_millis(1))?;
/// let exact = SystemClock::new();
/// let skew = cached.wall().as_nanos().abs_diff(exact.wall().as_nanos());
/// assert!(skew < 1_000_000_000); // within a second, even on a loaded machine
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct CachedSystemClock {
    origin: Instant,
    resync_ns: u64,
    /// Wall time minus monotonic time, in nanoseconds.
    offset_ns: AtomicI64,
    /// The monotonic time at which to read the wall clock again.
    next_sync_ns: AtomicU64,
}

impl CachedSystemClock {
    /// The default resynchronisation interval: one millisecond.
    pub const RESYNC_DEFAULT: Duration = Duration::from_millis(1);
    /// The longest resynchronisation interval accepted: one second.
    pub const RESYNC_MAX: Duration = Duration::from_secs(1);

    /// A clock that reads the wall clock at most once per `resync_interval`.
    ///
    /// # Errors
    ///
    /// If `resync_interval` is longer than [`Self::RESYNC_MAX`].
    pub fn new(resync_interval: Duration) -> Result<Self, ConfigError> {
        if resync_interval > Self::RESYNC_MAX {
            return Err(ConfigError::new(
                "resync_interval",
                "must be at most one second",
            ));
        }
        let clock = CachedSystemClock {
            origin: Instant::now(),
            resync_ns: duration_nanos(resync_interval),
            offset_ns: AtomicI64::new(0),
            next_sync_ns: AtomicU64::new(0),
        };
        clock.resync();
        Ok(clock)
    }

    #[inline]
    fn mono_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Reads the wall clock and re-anchors the extrapolation. Racing threads may both do
    /// it; each stores a valid offset, so the race is harmless.
    #[cold]
    fn resync(&self) -> i64 {
        let wall = read_wall();
        let mono = self.mono_ns();
        let offset = i64::try_from(i128::from(wall) - i128::from(mono)).unwrap_or(i64::MAX);
        self.offset_ns.store(offset, Ordering::Relaxed);
        self.next_sync_ns
            .store(mono.saturating_add(self.resync_ns), Ordering::Relaxed);
        offset
    }
}

impl Default for CachedSystemClock {
    fn default() -> Self {
        Self::new(Self::RESYNC_DEFAULT).expect("the default interval is valid")
    }
}

impl PhysicalClock for CachedSystemClock {
    #[inline]
    fn wall(&self) -> WallTime {
        let mono = self.mono_ns();
        let offset = if mono >= self.next_sync_ns.load(Ordering::Relaxed) {
            self.resync()
        } else {
            self.offset_ns.load(Ordering::Relaxed)
        };
        let wall = i128::from(mono) + i128::from(offset);
        WallTime::from_nanos(u64::try_from(wall.max(0)).unwrap_or(u64::MAX))
    }

    #[inline]
    fn monotonic(&self) -> Time {
        Time::from_nanos(self.mono_ns())
    }
}
