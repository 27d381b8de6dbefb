//! The physical clock trait and [`ManualClock`], a clock you drive by hand.
//!
//! Everything in this crate that needs the time of day reads it through [`PhysicalClock`].
//! A real process passes [`SystemClock`](crate::SystemClock); tests and the simulator pass a
//! [`ManualClock`], whose owner sets the "true" time and gives the clock an offset, a drift
//! rate, jumps and freezes, so that every node of a simulation sees its own skewed view.

use core::time::Duration;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::time::{Time, WallTime, duration_nanos};

/// A source of wall-clock and monotonic readings.
///
/// Implementations must be cheap to call; a [`HybridClock`](crate::HybridClock) reads the
/// wall clock on every timestamp. Readings are values: the trait says nothing about how they
/// relate to true time, which is exactly what clock-bound wait has to account for.
pub trait PhysicalClock {
    /// The current wall-clock time. May jump backwards or forwards between calls.
    fn wall(&self) -> WallTime;

    /// The current monotonic time. Never smaller than an earlier reading from the same clock.
    fn monotonic(&self) -> Time;
}

impl<C: PhysicalClock + ?Sized> PhysicalClock for &C {
    fn wall(&self) -> WallTime {
        (**self).wall()
    }
    fn monotonic(&self) -> Time {
        (**self).monotonic()
    }
}

impl<C: PhysicalClock + ?Sized> PhysicalClock for Arc<C> {
    fn wall(&self) -> WallTime {
        (**self).wall()
    }
    fn monotonic(&self) -> Time {
        (**self).monotonic()
    }
}

impl<C: PhysicalClock + ?Sized> PhysicalClock for Box<C> {
    fn wall(&self) -> WallTime {
        (**self).wall()
    }
    fn monotonic(&self) -> Time {
        (**self).monotonic()
    }
}

/// The largest drift rate a [`ManualClock`] accepts, in parts per million (either sign).
pub const DRIFT_PPM_MAX: i32 = 500_000;

/// A clock driven by hand: the owner sets true time; the clock reports a skewed view of it.
///
/// The model, all in integer nanoseconds so that a simulation replays exactly:
///
/// - **True time** is what a simulator calls "now"; it only moves forward
///   ([`advance`](Self::advance), [`set_true_time`](Self::set_true_time)).
/// - The clock's **local elapsed time** runs at `1 + drift_ppm / 1_000_000` times the rate of
///   true time, and stops while the clock is [frozen](Self::freeze).
/// - [`monotonic`](PhysicalClock::monotonic) is the local elapsed time, starting at zero.
/// - [`wall`](PhysicalClock::wall) is the local elapsed time plus a wall offset that
///   [`set_wall`](Self::set_wall), [`set_offset_ns`](Self::set_offset_ns),
///   [`jump_forward`](Self::jump_forward) and [`jump_back`](Self::jump_back) change, like
///   an administrator or NTP stepping the clock. Jumps never move the monotonic reading.
///
/// Cloning a `ManualClock` gives another handle to the same clock, so a test can keep one
/// handle and give another to a [`HybridClock`](crate::HybridClock). The state sits behind
/// a lock, uncontended in a single-threaded simulator (about 20 ns per reading), which
/// makes the clock `Send + Sync`.
///
/// ```
/// use std::time::Duration;
/// use synod_clocks::{ManualClock, PhysicalClock, WallTime};
///
/// let clock = ManualClock::new(WallTime::from_secs(1_000));
/// clock.set_drift_ppm(100); // runs 100 ppm fast
/// clock.advance(Duration::from_secs(10));
/// assert_eq!(clock.wall(), WallTime::from_secs(1_010).saturating_add(Duration::from_micros(1_000)));
/// clock.jump_back(Duration::from_secs(5)); // an NTP step
/// assert_eq!(clock.offset_ns(), -4_999_000_000);
/// assert_eq!(clock.monotonic().as_nanos(), 10_001_000_000); // unaffected by the step
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock {
    state: Arc<Mutex<ManualState>>,
}

#[derive(Clone, Copy, Debug)]
struct ManualState {
    /// True time, nanoseconds since the epoch.
    true_ns: u64,
    /// True time at the last change of rate or freeze.
    anchor_true_ns: u64,
    /// Local elapsed time at the anchor.
    anchor_elapsed_ns: u64,
    drift_ppm: i32,
    frozen: bool,
    /// wall = elapsed + wall_offset_ns, clamped to the range of `WallTime`.
    wall_offset_ns: i128,
}

impl ManualState {
    fn elapsed_ns(&self) -> u64 {
        if self.frozen {
            return self.anchor_elapsed_ns;
        }
        // Invariant: true time never moves behind the anchor.
        let dt = u128::from(self.true_ns - self.anchor_true_ns);
        let rate = u128::try_from(1_000_000_i64 + i64::from(self.drift_ppm))
            .expect("drift is validated to keep the rate positive");
        let scaled = u64::try_from(dt * rate / 1_000_000).unwrap_or(u64::MAX);
        self.anchor_elapsed_ns.saturating_add(scaled)
    }

    fn wall_ns(&self) -> u64 {
        let wall = i128::from(self.elapsed_ns()) + self.wall_offset_ns;
        u64::try_from(wall.clamp(0, i128::from(u64::MAX))).expect("clamped")
    }

    /// Moves the anchor to now, so that a change of rate or freeze applies from now on.
    fn rebase(&mut self) {
        self.anchor_elapsed_ns = self.elapsed_ns();
        self.anchor_true_ns = self.true_ns;
    }
}

impl ManualClock {
    /// A clock whose true time and wall reading both start at `start`, with no drift.
    /// Its monotonic reading starts at zero.
    pub fn new(start: WallTime) -> Self {
        ManualClock {
            state: Arc::new(Mutex::new(ManualState {
                true_ns: start.as_nanos(),
                anchor_true_ns: start.as_nanos(),
                anchor_elapsed_ns: 0,
                drift_ppm: 0,
                frozen: false,
                wall_offset_ns: i128::from(start.as_nanos()),
            })),
        }
    }

    /// True time: what the simulator calls now, independent of this clock's errors.
    pub fn true_time(&self) -> WallTime {
        WallTime::from_nanos(self.state.lock().true_ns)
    }

    /// Moves true time forward by `d` (saturating in the year 2554).
    pub fn advance(&self, d: Duration) {
        let mut s = self.state.lock();
        s.true_ns = s.true_ns.saturating_add(duration_nanos(d));
    }

    /// Sets true time to `t`. Setting it to the current true time is a no-op.
    ///
    /// # Panics
    ///
    /// If `t` is earlier than the current true time: true time never goes back (make the
    /// clock's reading go back with [`jump_back`](Self::jump_back) instead).
    pub fn set_true_time(&self, t: WallTime) {
        let mut s = self.state.lock();
        assert!(
            t.as_nanos() >= s.true_ns,
            "true time cannot go back: {t} is before {}",
            WallTime::from_nanos(s.true_ns)
        );
        s.true_ns = t.as_nanos();
    }

    /// Steps the wall reading so that it reads `t` now (like `settimeofday`). The
    /// monotonic reading is unaffected.
    pub fn set_wall(&self, t: WallTime) {
        let mut s = self.state.lock();
        s.wall_offset_ns = i128::from(t.as_nanos()) - i128::from(s.elapsed_ns());
    }

    /// Steps the wall reading forward by `d`.
    pub fn jump_forward(&self, d: Duration) {
        let mut s = self.state.lock();
        s.wall_offset_ns += i128::from(duration_nanos(d));
    }

    /// Steps the wall reading back by `d` (readings stop at the epoch).
    pub fn jump_back(&self, d: Duration) {
        let mut s = self.state.lock();
        s.wall_offset_ns -= i128::from(duration_nanos(d));
    }

    /// The clock's current error: wall reading minus true time, in nanoseconds
    /// (saturating at the range of `i64`, about 292 years).
    pub fn offset_ns(&self) -> i64 {
        let s = self.state.lock();
        let off = i128::from(s.wall_ns()) - i128::from(s.true_ns);
        i64::try_from(off.clamp(i128::from(i64::MIN), i128::from(i64::MAX))).expect("clamped")
    }

    /// Steps the wall reading so that it is `offset_ns` nanoseconds ahead of true time
    /// (behind, if negative). Drift then moves the offset further as time passes.
    pub fn set_offset_ns(&self, offset_ns: i64) {
        let mut s = self.state.lock();
        let target = i128::from(s.true_ns) + i128::from(offset_ns);
        s.wall_offset_ns = target - i128::from(s.elapsed_ns());
    }

    /// The drift rate in parts per million: positive runs fast, negative runs slow.
    pub fn drift_ppm(&self) -> i32 {
        self.state.lock().drift_ppm
    }

    /// Sets the drift rate from now on, in parts per million.
    ///
    /// # Panics
    ///
    /// If `ppm` is outside `-DRIFT_PPM_MAX..=DRIFT_PPM_MAX` ([`DRIFT_PPM_MAX`]); a real
    /// oscillator drifts by tens of ppm.
    pub fn set_drift_ppm(&self, ppm: i32) {
        assert!(
            (-DRIFT_PPM_MAX..=DRIFT_PPM_MAX).contains(&ppm),
            "drift {ppm} ppm is outside ±{DRIFT_PPM_MAX} ppm"
        );
        let mut s = self.state.lock();
        s.rebase();
        s.drift_ppm = ppm;
    }

    /// Stops the clock: both readings stay where they are while true time moves on, as
    /// when a virtual machine's clock source stalls.
    pub fn freeze(&self) {
        let mut s = self.state.lock();
        if !s.frozen {
            s.rebase();
            s.frozen = true;
        }
    }

    /// Restarts a frozen clock from the reading it stopped at.
    pub fn unfreeze(&self) {
        let mut s = self.state.lock();
        if s.frozen {
            s.anchor_true_ns = s.true_ns;
            s.frozen = false;
        }
    }

    /// Whether the clock is frozen.
    pub fn is_frozen(&self) -> bool {
        self.state.lock().frozen
    }
}

impl PhysicalClock for ManualClock {
    fn wall(&self) -> WallTime {
        WallTime::from_nanos(self.state.lock().wall_ns())
    }

    fn monotonic(&self) -> Time {
        Time::from_nanos(self.state.lock().elapsed_ns())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_true_time_without_skew() {
        let c = ManualClock::new(WallTime::from_secs(100));
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.wall(), WallTime::from_nanos(101_500_000_000));
        assert_eq!(c.monotonic(), Time::from_nanos(1_500_000_000));
        assert_eq!(c.offset_ns(), 0);
        c.set_true_time(WallTime::from_secs(200));
        assert_eq!(c.wall(), WallTime::from_secs(200));
    }

    #[test]
    fn drift_accumulates_and_changes_only_from_now_on() {
        let c = ManualClock::new(WallTime::from_secs(0));
        c.set_drift_ppm(-50);
        c.advance(Duration::from_secs(1000));
        assert_eq!(c.offset_ns(), -50_000_000);
        c.set_drift_ppm(0);
        c.advance(Duration::from_secs(1000));
        assert_eq!(c.offset_ns(), -50_000_000);
        assert_eq!(c.monotonic().as_nanos(), 1_999_950_000_000);
    }

    #[test]
    fn jumps_move_wall_but_not_monotonic() {
        let c = ManualClock::new(WallTime::from_secs(10));
        c.jump_back(Duration::from_secs(20));
        assert_eq!(c.wall(), WallTime::UNIX_EPOCH, "readings stop at the epoch");
        c.jump_forward(Duration::from_secs(15));
        assert_eq!(c.wall(), WallTime::from_secs(5));
        assert_eq!(c.monotonic(), Time::ZERO);
        c.set_wall(WallTime::from_secs(42));
        assert_eq!(c.wall(), WallTime::from_secs(42));
        c.set_offset_ns(7);
        assert_eq!(c.wall().as_nanos(), 10_000_000_007);
    }

    #[test]
    fn freeze_holds_both_readings_and_resumes_from_them() {
        let c = ManualClock::new(WallTime::from_secs(10));
        c.advance(Duration::from_secs(1));
        c.freeze();
        c.advance(Duration::from_secs(5));
        assert!(c.is_frozen());
        assert_eq!(c.wall(), WallTime::from_secs(11));
        assert_eq!(c.monotonic().as_nanos(), 1_000_000_000);
        c.unfreeze();
        c.advance(Duration::from_secs(1));
        assert_eq!(c.wall(), WallTime::from_secs(12));
        assert_eq!(c.offset_ns(), -5_000_000_000);
    }

    #[test]
    fn clones_share_the_clock() {
        let a = ManualClock::new(WallTime::from_secs(1));
        let b = a.clone();
        a.advance(Duration::from_secs(1));
        assert_eq!(b.wall(), WallTime::from_secs(2));
    }

    #[test]
    #[should_panic(expected = "true time cannot go back")]
    fn true_time_never_goes_back() {
        let c = ManualClock::new(WallTime::from_secs(10));
        c.set_true_time(WallTime::from_secs(9));
    }
}
