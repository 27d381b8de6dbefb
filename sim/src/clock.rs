//! Per-node clocks: each node reads its own clock, which may be offset from true time,
//! drift at some parts per million, and jump.
//!
//! The simulator keeps true time ([`crate::SimTime`] on the event queue); a node sees
//! `local = anchor_local + (true - anchor_true) * (1 + drift)`, with jumps moving
//! `anchor_local`. Timers are set in local time and converted to true time with the
//! current drift, so a fast clock fires its timers early in true time, as a real one does.
//!
//! This layer sits behind the crate-private `ClockModel` trait, meant to be backed by
//! `synod-clocks`' `ManualClock` once that lands.

use std::time::Duration;

use crate::time::{SimTime, duration_micros};

/// The operations the simulator needs from a per-node clock.
pub(crate) trait ClockModel {
    /// The local reading at true time `now`.
    fn local(&self, now: SimTime) -> SimTime;
    /// The true duration that passes while this clock advances by `local`.
    fn true_span(&self, local: Duration) -> Duration;
    /// Moves the clock by `delta_us` (forward or back) at true time `now`.
    fn jump(&mut self, now: SimTime, delta_us: i64);
    /// Sets the drift at true time `now`.
    fn set_drift(&mut self, now: SimTime, drift_ppm: i32);
}

/// A node's clock: an offset from true time, a drift rate and jumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodeClock {
    anchor_true: u64,
    anchor_local: i64,
    drift_ppm: i32,
}

impl NodeClock {
    /// A clock reading `offset_us` ahead of true time (behind if negative), not drifting.
    pub(crate) fn new(offset_us: i64) -> Self {
        NodeClock {
            anchor_true: 0,
            anchor_local: offset_us,
            drift_ppm: 0,
        }
    }

    #[cfg(test)]
    pub(crate) fn drift_ppm(&self) -> i32 {
        self.drift_ppm
    }

    fn local_i64(&self, now: SimTime) -> i64 {
        let elapsed = i128::from(now.as_micros().saturating_sub(self.anchor_true));
        let scaled = elapsed * i128::from(1_000_000 + i64::from(self.drift_ppm)) / 1_000_000;
        let local = i128::from(self.anchor_local) + scaled;
        i64::try_from(local).unwrap_or(i64::MAX)
    }
}

impl ClockModel for NodeClock {
    fn local(&self, now: SimTime) -> SimTime {
        SimTime::from_micros(u64::try_from(self.local_i64(now)).unwrap_or(0))
    }

    fn true_span(&self, local: Duration) -> Duration {
        let rate = 1_000_000 + i128::from(self.drift_ppm);
        let us = i128::from(duration_micros(local));
        // Round up so that a timer never fires before its local deadline.
        let t = (us * 1_000_000 + rate - 1) / rate.max(1);
        Duration::from_micros(u64::try_from(t).unwrap_or(u64::MAX))
    }

    fn jump(&mut self, now: SimTime, delta_us: i64) {
        self.anchor_local = self.local_i64(now).saturating_add(delta_us);
        self.anchor_true = now.as_micros();
    }

    fn set_drift(&mut self, now: SimTime, drift_ppm: i32) {
        // Drift below -100% would run the clock backwards; the nemesis keeps it far smaller.
        let drift_ppm = drift_ppm.clamp(-500_000, 500_000);
        self.anchor_local = self.local_i64(now);
        self.anchor_true = now.as_micros();
        self.drift_ppm = drift_ppm;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_drift_and_jumps() {
        let mut c = NodeClock::new(1_000);
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
    }

    #[test]
    fn timers_on_a_fast_clock_fire_early_in_true_time_but_never_early_locally() {
        let mut c = NodeClock::new(0);
        c.set_drift(SimTime::ZERO, 100_000); // 10% fast
        let span = c.true_span(Duration::from_millis(110));
        assert_eq!(span, Duration::from_millis(100));
        let start = SimTime::from_micros(12_345);
        let fired = start.saturating_add(c.true_span(Duration::from_micros(777)));
        assert!(
            c.local(fired).as_micros() - c.local(start).as_micros() >= 777,
            "fired early"
        );
        assert_eq!(c.drift_ppm(), 100_000);
    }
}
