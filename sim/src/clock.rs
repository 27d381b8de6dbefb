//! Per-node clocks: each node reads its own clock, which may be offset from true time,
//! drift at some parts per million, and jump.
//!
//! Each node's clock is a `synod_clocks::ManualClock`: the simulator sets its true time to
//! the event's virtual time before every call into the node, and the nemesis gives it an
//! initial offset, changes its drift and steps it forward or back. A node reads the wall
//! reading through [`crate::Context::now`], or takes the clock itself from
//! [`crate::Context::clock`] (to build a hybrid logical clock on it, for example).
//!
//! Timers are set in the node's local time and converted to true time with the clock's
//! current drift, so a fast clock fires its timers early in true time, as a real one does;
//! steps of the wall reading do not move timers (they run on the monotonic clock).

use std::time::Duration;

use synod_clocks::physical::DRIFT_PPM_MAX;
use synod_clocks::{ManualClock, WallTime};

use crate::time::{SimTime, duration_micros};

/// The operations the simulator needs from a per-node clock.
pub(crate) trait ClockModel {
    /// The true duration that passes while this clock's monotonic reading advances by
    /// `local`.
    fn true_span(&self, local: Duration) -> Duration;
    /// Steps the wall reading by `delta_us` (forward or back) at true time `now`.
    fn jump(&self, now: SimTime, delta_us: i64);
    /// Sets the drift at true time `now` (clamped to what the clock accepts).
    fn set_drift(&self, now: SimTime, drift_ppm: i32);
}

/// A node's clock, on `synod_clocks::ManualClock`.
#[derive(Debug, Clone)]
pub(crate) struct NodeClock {
    clock: ManualClock,
}

fn wall_of(t: SimTime) -> WallTime {
    WallTime::from_nanos(t.as_micros().saturating_mul(1_000))
}

impl NodeClock {
    /// A clock reading `offset_us` ahead of true time (behind if negative; readings stop at
    /// zero), not drifting.
    pub(crate) fn new(offset_us: i64) -> Self {
        let clock = ManualClock::new(WallTime::from_nanos(0));
        clock.set_offset_ns(offset_us.saturating_mul(1_000));
        NodeClock { clock }
    }

    /// The underlying clock, with its true time set to `now`.
    pub(crate) fn at(&self, now: SimTime) -> &ManualClock {
        self.clock.set_true_time(wall_of(now));
        &self.clock
    }

    /// The wall reading at true time `now`, in microseconds.
    #[cfg(test)]
    pub(crate) fn local(&self, now: SimTime) -> SimTime {
        use synod_clocks::PhysicalClock;
        SimTime::from_micros(self.at(now).wall().as_nanos() / 1_000)
    }

    #[cfg(test)]
    pub(crate) fn drift_ppm(&self) -> i32 {
        self.clock.drift_ppm()
    }
}

impl ClockModel for NodeClock {
    fn true_span(&self, local: Duration) -> Duration {
        let rate = 1_000_000 + i128::from(self.clock.drift_ppm());
        let us = i128::from(duration_micros(local));
        // Round up so that a timer never fires before its local deadline.
        let t = (us * 1_000_000 + rate - 1) / rate.max(1);
        Duration::from_micros(u64::try_from(t).unwrap_or(u64::MAX))
    }

    fn jump(&self, now: SimTime, delta_us: i64) {
        let clock = self.at(now);
        let d = Duration::from_micros(delta_us.unsigned_abs());
        if delta_us >= 0 {
            clock.jump_forward(d);
        } else {
            clock.jump_back(d);
        }
    }

    fn set_drift(&self, now: SimTime, drift_ppm: i32) {
        self.at(now)
            .set_drift_ppm(drift_ppm.clamp(-DRIFT_PPM_MAX, DRIFT_PPM_MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_drift_and_jumps() {
        let c = NodeClock::new(1_000);
        assert_eq!(c.local(SimTime::from_micros(0)).as_micros(), 1_000);
        assert_eq!(c.local(SimTime::from_micros(500)).as_micros(), 1_500);
        c.set_drift(SimTime::from_micros(1_000_000), 1_000); // 0.1% fast
        assert_eq!(
            c.local(SimTime::from_micros(2_000_000)).as_micros(),
            2_002_000
        );
        c.jump(SimTime::from_micros(2_000_000), -5_000_000);
        // Backwards past zero reads as zero rather than wrapping.
        assert_eq!(c.local(SimTime::from_micros(2_000_000)).as_micros(), 0);
        c.jump(SimTime::from_micros(2_000_000), 10_000_000);
        assert!(c.local(SimTime::from_micros(2_000_000)).as_micros() > 5_000_000);
        let behind = NodeClock::new(-10);
        assert_eq!(behind.local(SimTime::from_micros(5)).as_micros(), 0);
        assert_eq!(behind.local(SimTime::from_micros(15)).as_micros(), 5);
    }

    #[test]
    fn timers_on_a_fast_clock_fire_early_in_true_time_but_never_early_locally() {
        let c = NodeClock::new(0);
        c.set_drift(SimTime::ZERO, 100_000); // 10% fast
        let span = c.true_span(Duration::from_millis(110));
        assert_eq!(span, Duration::from_millis(100));
        let start = SimTime::from_micros(12_345);
        let fired = start.saturating_add(c.true_span(Duration::from_micros(777)));
        let local_start = c.local(start).as_micros();
        assert!(
            c.local(fired).as_micros() - local_start >= 777,
            "fired early"
        );
        assert_eq!(c.drift_ppm(), 100_000);
        c.set_drift(SimTime::from_micros(200_000), 2_000_000);
        assert_eq!(c.drift_ppm(), DRIFT_PPM_MAX);
    }
}
