//! Heartbeat failure detectors: a fixed timeout and the phi accrual detector.
//!
//! Both are plain values fed with the times heartbeats arrived (`heartbeat(now)`) and asked
//! about a time (`is_available(now)`, `phi(now)`); neither reads a clock, keeps a timer or
//! sends anything. A caller that wants to act when a peer goes quiet asks
//! [`FixedTimeout::deadline`] or [`PhiAccrual::suspect_at`] when to look again.
//!
//! # Phi accrual
//!
//! Hayashibara, Défago, Yared and Katayama (2004) replace the yes/no of a timeout with a
//! suspicion level that grows the longer a heartbeat is overdue, scaled by how regular the
//! heartbeats have been. The detector keeps the last `window_samples_max` intervals between
//! heartbeats, and their mean `μ` and standard deviation `σ`. For a silence of `t` since the
//! last heartbeat,
//!
//! ```text
//! phi(t) = -log10( P(an interval is longer than t) ) = -log10( 1 - F(t) )
//! ```
//!
//! where `F` is the distribution the intervals are modelled by ([`PhiModel`]):
//!
//! - [`PhiModel::Normal`] (Akka's and the paper's): a normal distribution of mean
//!   `μ + acceptable_pause` and deviation `max(σ, std_deviation_min)`, with `F` computed
//!   by the logistic approximation `F(y) = 1 / (1 + e^(-y (1.5976 + 0.070566 y²)))` of the
//!   standard normal at `y = (t - mean) / deviation`. The minimum deviation keeps a run of
//!   perfectly regular heartbeats from making the detector jump at the first late one; the
//!   acceptable pause is a silence (a garbage-collection pause) forgiven outright.
//! - [`PhiModel::Exponential`] (Cassandra's): `1 - F(t) = e^(-t / μ)`, so
//!   `phi = t / (μ · ln 10) ≈ 0.434 · t / μ`, ignoring `σ`.
//!
//! The threshold is a probability: `phi ≥ 8` means the chance that a live peer's heartbeat
//! is merely this late is at most `10^-8` *under the model*. What that is in mean intervals
//! depends on the model, which is why the same number means different things in different
//! systems:
//!
//! | Threshold 8 under | Declared after a silence of | With `μ` = 1 s |
//! |---|---|---|
//! | exponential (Cassandra) | `8 · ln 10 · μ ≈ 18.4 μ` | 18.4 s |
//! | `phi = t / μ` (chitchat's shortcut) | `8 μ` | 8 s |
//! | normal, `σ = 0.1 μ`, no pause | `μ + 5.2 σ ≈ 1.52 μ` | 1.52 s |
//! | normal, `σ = 0.1 μ`, pause `3 μ` | `4 μ + 5.2 σ ≈ 4.52 μ` | 4.52 s |
//!
//! (`-log10(1 - F(y)) = 8` at `y ≈ 5.2` standard deviations with the logistic
//! approximation; the exact normal tail gives 5.6.) So a
//! normal-model detector with a small deviation is much quicker than its threshold
//! suggests, and the minimum deviation and acceptable pause are what keep it from
//! declaring a peer dead after one slow heartbeat.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use synod_node::Time;

/// A detector that declares a peer unavailable once no heartbeat has arrived for a fixed
/// time: the HeartBeat pattern's plain form.
///
/// ```
/// use std::time::Duration;
/// use synod_membership::FixedTimeout;
/// use synod_node::Time;
///
/// let mut d = FixedTimeout::new(Duration::from_millis(500));
/// assert!(!d.is_available(Time::ZERO), "nothing heard yet");
/// d.heartbeat(Time::from_millis(100));
/// assert!(d.is_available(Time::from_millis(600)));
/// assert!(!d.is_available(Time::from_millis(601)));
/// assert_eq!(d.deadline(), Some(Time::from_millis(600)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedTimeout {
    timeout: Duration,
    last: Option<Time>,
}

impl FixedTimeout {
    /// A detector that forgives `timeout` of silence.
    #[must_use]
    pub fn new(timeout: Duration) -> Self {
        FixedTimeout {
            timeout,
            last: None,
        }
    }

    /// A heartbeat arrived at `now`. A time earlier than the last heartbeat changes nothing.
    pub fn heartbeat(&mut self, now: Time) {
        self.last = Some(self.last.map_or(now, |last| last.max(now)));
    }

    /// Whether a heartbeat arrived at most `timeout` before `now`; false before the first.
    #[must_use]
    pub fn is_available(&self, now: Time) -> bool {
        self.deadline().is_some_and(|deadline| now <= deadline)
    }

    /// The last instant the peer still counts as available, or `None` before the first
    /// heartbeat.
    #[must_use]
    pub fn deadline(&self) -> Option<Time> {
        self.last.map(|last| last + self.timeout)
    }
}

/// How a [`PhiAccrual`] detector models the intervals between heartbeats (see the module
/// documentation for the formulas).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhiModel {
    /// A normal distribution of the intervals' mean plus the acceptable pause, and their
    /// deviation but at least the configured minimum (Akka, the original paper).
    Normal,
    /// An exponential distribution of the intervals' mean (Cassandra).
    Exponential,
}

/// The configuration of a [`PhiAccrual`] detector, validated by [`PhiConfig::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct PhiConfig {
    threshold: f64,
    window_samples_max: usize,
    std_deviation_min_ms: u64,
    acceptable_pause_ms: u64,
    first_interval_ms: u64,
    model: PhiModel,
}

/// A [`PhiConfig`] value out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PhiConfigError {
    /// The threshold is not a finite number above zero.
    Threshold,
    /// The window holds no samples.
    Window,
    /// The first interval estimate is zero (a mean of zero makes every silence infinite).
    FirstInterval,
}

impl fmt::Display for PhiConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PhiConfigError::Threshold => f.write_str("phi threshold must be finite and above 0"),
            PhiConfigError::Window => f.write_str("phi window must hold at least one sample"),
            PhiConfigError::FirstInterval => {
                f.write_str("phi first interval estimate must be above 0 ms")
            }
        }
    }
}

impl std::error::Error for PhiConfigError {}

impl PhiConfig {
    /// A normal-model detector that suspects at `threshold`, keeping `window_samples_max`
    /// intervals, with deviation at least `std_deviation_min_ms` and `acceptable_pause_ms`
    /// forgiven. Until the second heartbeat it assumes intervals of `first_interval_ms`
    /// (deviation a quarter of it), so that a peer that sent one heartbeat and fell silent
    /// is still suspected. Akka's defaults are threshold 8, 1,000 samples, 100 ms, 3,000 ms
    /// and the heartbeat interval.
    ///
    /// # Errors
    ///
    /// [`PhiConfigError`] for a threshold that is not finite and positive, an empty window
    /// or a zero first interval.
    pub fn new(
        threshold: f64,
        window_samples_max: usize,
        std_deviation_min_ms: u64,
        acceptable_pause_ms: u64,
        first_interval_ms: u64,
    ) -> Result<Self, PhiConfigError> {
        if !(threshold.is_finite() && threshold > 0.0) {
            return Err(PhiConfigError::Threshold);
        }
        if window_samples_max == 0 {
            return Err(PhiConfigError::Window);
        }
        if first_interval_ms == 0 {
            return Err(PhiConfigError::FirstInterval);
        }
        Ok(PhiConfig {
            threshold,
            window_samples_max,
            std_deviation_min_ms,
            acceptable_pause_ms,
            first_interval_ms,
            model: PhiModel::Normal,
        })
    }

    /// The same configuration with intervals modelled by `model`.
    #[must_use]
    pub fn with_model(mut self, model: PhiModel) -> Self {
        self.model = model;
        self
    }

    /// The threshold at and above which a peer is suspected.
    #[must_use]
    pub fn threshold(&self) -> f64 {
        self.threshold
    }
}

/// The phi accrual failure detector (see the module documentation for the formula).
///
/// ```
/// use synod_membership::{PhiAccrual, PhiConfig};
/// use synod_node::Time;
///
/// let config = PhiConfig::new(8.0, 100, 10, 0, 100)?;
/// let mut d = PhiAccrual::new(config);
/// for beat in 0..20u64 {
///     d.heartbeat(Time::from_millis(beat * 100)); // every 100 ms, like clockwork
/// }
/// let last = Time::from_millis(1_900);
/// assert!(d.phi(Time::from_millis(2_000)) < 1.0, "one interval of silence is normal");
/// assert!(d.is_available(Time::from_millis(2_000)));
/// assert!(!d.is_available(Time::from_millis(2_500)), "five intervals is not");
/// let at = d.suspect_at().expect("heard from it");
/// assert!(at > last && at < Time::from_millis(2_500));
/// # Ok::<(), synod_membership::PhiConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct PhiAccrual {
    config: PhiConfig,
    last: Option<Time>,
    /// The last intervals, in milliseconds (fractions kept), oldest first.
    intervals: VecDeque<f64>,
    sum: f64,
    sum_squares: f64,
}

impl PhiAccrual {
    /// A detector that has heard nothing yet.
    #[must_use]
    pub fn new(config: PhiConfig) -> Self {
        PhiAccrual {
            intervals: VecDeque::with_capacity(config.window_samples_max.min(1_024)),
            config,
            last: None,
            sum: 0.0,
            sum_squares: 0.0,
        }
    }

    /// A heartbeat arrived at `now`. The first one only starts the clock; each later one
    /// adds the interval since the previous to the window (dropping the oldest when full).
    /// A time earlier than the last heartbeat changes nothing.
    pub fn heartbeat(&mut self, now: Time) {
        match self.last {
            None => self.last = Some(now),
            Some(last) if now < last => {}
            Some(last) => {
                let interval = now.saturating_duration_since(last).as_secs_f64() * 1_000.0;
                if self.intervals.len() == self.config.window_samples_max
                    && let Some(old) = self.intervals.pop_front()
                {
                    self.sum -= old;
                    self.sum_squares -= old * old;
                }
                self.intervals.push_back(interval);
                self.sum += interval;
                self.sum_squares += interval * interval;
                self.last = Some(now);
            }
        }
    }

    /// How many intervals the window holds.
    #[must_use]
    pub fn samples(&self) -> usize {
        self.intervals.len()
    }

    /// The mean and standard deviation of the intervals in the window, in milliseconds;
    /// before the second heartbeat, the configured first interval and a quarter of it.
    #[must_use]
    pub fn mean_and_deviation_ms(&self) -> (f64, f64) {
        if self.intervals.is_empty() {
            let first = self.config.first_interval_ms as f64;
            return (first, first / 4.0);
        }
        let n = self.intervals.len() as f64;
        let mean = self.sum / n;
        // Rounding can make the running variance slightly negative; it is never below 0.
        let variance = (self.sum_squares / n - mean * mean).max(0.0);
        (mean, variance.sqrt())
    }

    /// The suspicion level at `now`: 0 when a heartbeat just arrived, growing with the
    /// silence, `f64::INFINITY` when the model gives the silence no chance at all. Zero
    /// before the first heartbeat (use [`PhiAccrual::is_available`], which says no).
    #[must_use]
    pub fn phi(&self, now: Time) -> f64 {
        let Some(last) = self.last else {
            return 0.0;
        };
        let silence = now.saturating_duration_since(last).as_secs_f64() * 1_000.0;
        let (mean, deviation) = self.mean_and_deviation_ms();
        match self.config.model {
            PhiModel::Normal => {
                let mean = mean + self.config.acceptable_pause_ms as f64;
                let deviation = deviation.max(self.config.std_deviation_min_ms as f64);
                normal_phi(silence, mean, deviation)
            }
            PhiModel::Exponential => {
                if mean <= 0.0 {
                    return f64::INFINITY;
                }
                silence / (mean * std::f64::consts::LN_10)
            }
        }
    }

    /// Whether the peer counts as available at `now`: heard from at least once, and phi
    /// below the threshold.
    #[must_use]
    pub fn is_available(&self, now: Time) -> bool {
        self.last.is_some() && self.phi(now) < self.config.threshold
    }

    /// The first instant (to the millisecond) at which phi reaches the threshold if no
    /// heartbeat arrives before, or `None` before the first heartbeat. A caller wakes then
    /// to look again.
    #[must_use]
    pub fn suspect_at(&self) -> Option<Time> {
        let last = self.last?;
        // phi grows with the silence: search for the crossing, doubling then bisecting.
        let crosses = |ms: u64| self.phi(last + Duration::from_millis(ms)) >= self.config.threshold;
        let mut high = 1u64;
        while !crosses(high) {
            if high >= u64::MAX / 4 {
                return Some(Time::MAX);
            }
            high *= 2;
        }
        let mut low = high / 2;
        while low + 1 < high {
            let mid = low + (high - low) / 2;
            if crosses(mid) {
                high = mid;
            } else {
                low = mid;
            }
        }
        Some(last + Duration::from_millis(high))
    }
}

/// `-log10(1 - F(t))` for a normal distribution, by the logistic approximation of its CDF.
fn normal_phi(t: f64, mean: f64, deviation: f64) -> f64 {
    if deviation <= 0.0 {
        return if t > mean { f64::INFINITY } else { 0.0 };
    }
    let y = (t - mean) / deviation;
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    // 1 - F = e / (1 + e). For large y, e underflows to 0: phi is infinite.
    let tail = if t > mean {
        e / (1.0 + e)
    } else {
        1.0 - 1.0 / (1.0 + e)
    };
    if tail <= 0.0 {
        f64::INFINITY
    } else {
        (-tail.log10()).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(v: u64) -> Time {
        Time::from_millis(v)
    }

    #[test]
    fn fixed_timeout_counts_from_the_latest_heartbeat() {
        let mut d = FixedTimeout::new(Duration::from_millis(100));
        assert_eq!(d.deadline(), None);
        d.heartbeat(ms(50));
        d.heartbeat(ms(20)); // late, out of order: ignored
        assert_eq!(d.deadline(), Some(ms(150)));
        assert!(d.is_available(ms(150)));
        assert!(!d.is_available(ms(151)));
        d.heartbeat(ms(200));
        assert!(d.is_available(ms(300)));
    }

    #[test]
    fn config_rejects_values_out_of_range() {
        assert_eq!(
            PhiConfig::new(0.0, 10, 1, 0, 100),
            Err(PhiConfigError::Threshold)
        );
        assert_eq!(
            PhiConfig::new(f64::NAN, 10, 1, 0, 100),
            Err(PhiConfigError::Threshold)
        );
        assert_eq!(
            PhiConfig::new(8.0, 0, 1, 0, 100),
            Err(PhiConfigError::Window)
        );
        assert_eq!(
            PhiConfig::new(8.0, 10, 1, 0, 0),
            Err(PhiConfigError::FirstInterval)
        );
    }

    /// How long after the last of eleven heartbeats a second apart `config` suspects.
    fn silence_before_suspicion(config: PhiConfig) -> Duration {
        let mut d = PhiAccrual::new(config);
        for beat in 0..=10u64 {
            d.heartbeat(ms(beat * 1_000));
        }
        d.suspect_at()
            .expect("heard from it")
            .saturating_duration_since(ms(10_000))
    }

    #[test]
    fn threshold_eight_in_mean_intervals_matches_the_table() {
        // Exponential: 8 * ln 10 = 18.42 mean intervals.
        let exponential = PhiConfig::new(8.0, 100, 0, 0, 1_000)
            .unwrap()
            .with_model(PhiModel::Exponential);
        assert_eq!(silence_before_suspicion(exponential).as_millis(), 18_421);
        // Normal, deviation 100 ms (the minimum), mean 1 s, no pause: about 1.52 s.
        let normal = PhiConfig::new(8.0, 100, 100, 0, 1_000).unwrap();
        let after = silence_before_suspicion(normal);
        assert!((1_515..1_530).contains(&after.as_millis()), "{after:?}");
        // The acceptable pause adds to the mean.
        let paused = PhiConfig::new(8.0, 100, 100, 3_000, 1_000).unwrap();
        let after = silence_before_suspicion(paused);
        assert!((4_515..4_530).contains(&after.as_millis()), "{after:?}");
    }

    #[test]
    fn nothing_heard_is_not_available_and_one_heartbeat_uses_the_first_estimate() {
        let d = PhiAccrual::new(PhiConfig::new(8.0, 10, 10, 0, 100).unwrap());
        assert!(!d.is_available(ms(0)));
        assert_eq!(d.suspect_at(), None);
        let mut d = d;
        d.heartbeat(ms(1_000));
        assert!(d.is_available(ms(1_100)));
        assert!(!d.is_available(ms(10_000)));
    }

    #[test]
    fn the_window_forgets_old_intervals() {
        let mut d = PhiAccrual::new(PhiConfig::new(8.0, 4, 1, 0, 100).unwrap());
        for beat in 0..10u64 {
            d.heartbeat(ms(beat * 1_000)); // slow at first
        }
        let mut t = 9_000;
        for _ in 0..4 {
            t += 10; // then fast: only these four remain
            d.heartbeat(ms(t));
        }
        assert_eq!(d.samples(), 4);
        let (mean, deviation) = d.mean_and_deviation_ms();
        assert!((mean - 10.0).abs() < 1e-6 && deviation < 1e-3);
    }

    proptest! {
        /// Phi never decreases as the silence grows, is never negative or NaN, and the
        /// detector's availability agrees with `suspect_at`.
        #[test]
        fn phi_grows_with_silence(
            intervals in prop::collection::vec(1u64..5_000, 1..50),
            min_dev in 0u64..500,
            pause in 0u64..2_000,
            exponential in any::<bool>(),
            probes in prop::collection::vec(0u64..100_000, 1..20),
        ) {
            let mut config = PhiConfig::new(8.0, 32, min_dev, pause, 1_000).unwrap();
            if exponential {
                config = config.with_model(PhiModel::Exponential);
            }
            let mut d = PhiAccrual::new(config);
            let mut t = 0;
            d.heartbeat(ms(t));
            for i in &intervals {
                t += i;
                d.heartbeat(ms(t));
            }
            let mut probes = probes;
            probes.sort_unstable();
            let mut previous = 0.0;
            for p in probes {
                let phi = d.phi(ms(t + p));
                prop_assert!(phi >= 0.0 && !phi.is_nan());
                prop_assert!(phi >= previous - 1e-9, "phi fell from {previous} to {phi}");
                previous = phi;
            }
            let at = d.suspect_at().unwrap();
            prop_assert!(!d.is_available(at));
            prop_assert!(d.is_available(at.saturating_sub(Duration::from_millis(1))) || at == ms(t + 1));
        }
    }
}
