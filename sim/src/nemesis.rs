//! The nemesis: a fault schedule drawn from the seed, swarm testing, and coverage counters.
//!
//! At random intervals the nemesis picks one of the fault kinds enabled for this run and
//! applies it (or undoes it: a partition heals, a lossy period ends). With swarm testing
//! ([`NemesisConfig::swarm`], on by default) each seed first enables a random non-empty
//! subset of [`FaultKind`]s and of disk [`CrashMode`]s, with random intensities: a run with
//! only clock jumps and pauses finds different bugs from one drowning in message loss, and
//! across many seeds every combination is tried (Groce et al., "Swarm Testing", 2012).
//!
//! [`Coverage`] counts what actually fired, so a test can assert that every fault kind was
//! exercised rather than merely enabled.

use std::fmt;
use std::time::Duration;

use crate::disk::CrashMode;
use crate::net::PartitionShape;
use crate::rng::{Probability, SimRng};
use crate::time::duration_micros;

/// A kind of fault the nemesis can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FaultKind {
    /// Network partitions of every [`PartitionShape`], and healing them.
    Partition,
    /// A clogged link: messages wait until the clog clears.
    Clog,
    /// A period of message loss on every link.
    Loss,
    /// A period of message duplication on every link.
    Duplicate,
    /// A period without FIFO links and with extra random delay.
    Reorder,
    /// A node crashes (losing unsynced disk writes per its crash mode) and later restarts.
    Crash,
    /// A node pauses (a long GC or SIGSTOP) and later resumes.
    Pause,
    /// A node's clock jumps forward or back.
    ClockJump,
    /// A node's clock starts running fast or slow.
    ClockDrift,
}

impl FaultKind {
    /// Every fault kind.
    pub const ALL: [FaultKind; 9] = [
        FaultKind::Partition,
        FaultKind::Clog,
        FaultKind::Loss,
        FaultKind::Duplicate,
        FaultKind::Reorder,
        FaultKind::Crash,
        FaultKind::Pause,
        FaultKind::ClockJump,
        FaultKind::ClockDrift,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// What the coverage counters count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Counter {
    /// A partition into two halves began.
    PartitionHalves,
    /// A partition isolating one node began.
    PartitionIsolateOne,
    /// A one-way partition began.
    PartitionOneWay,
    /// A bridge partition began.
    PartitionBridge,
    /// A majorities-ring partition began (never on 2 or 3 nodes, where the shape cuts no
    /// link: see [`PartitionShape::cuts_links`]).
    PartitionMajoritiesRing,
    /// A partition healed.
    PartitionHealed,
    /// A link was clogged.
    Clog,
    /// A lossy period began.
    LossPeriod,
    /// A duplicating period began.
    DuplicatePeriod,
    /// A reordering period began.
    ReorderPeriod,
    /// A message was dropped by a cut link.
    MessageCut,
    /// A message was lost.
    MessageLost,
    /// A message was delivered twice.
    MessageDuplicated,
    /// A message overtook an earlier one on the same link.
    MessageReordered,
    /// A node crashed.
    Crash,
    /// A node restarted.
    Restart,
    /// A node crashed with unsynced disk writes or directory changes.
    DiskUnsyncedAtCrash,
    /// A crash tore a write.
    DiskTornWrite,
    /// A crash flipped a bit.
    DiskBitFlip,
    /// A node paused.
    Pause,
    /// A node resumed.
    Resume,
    /// A clock jumped.
    ClockJump,
    /// A clock's drift changed.
    ClockDrift,
    /// A client gave up waiting for a reply (the operation's outcome is unknown).
    ClientTimeout,
}

impl Counter {
    /// Every counter.
    pub const ALL: [Counter; 24] = [
        Counter::PartitionHalves,
        Counter::PartitionIsolateOne,
        Counter::PartitionOneWay,
        Counter::PartitionBridge,
        Counter::PartitionMajoritiesRing,
        Counter::PartitionHealed,
        Counter::Clog,
        Counter::LossPeriod,
        Counter::DuplicatePeriod,
        Counter::ReorderPeriod,
        Counter::MessageCut,
        Counter::MessageLost,
        Counter::MessageDuplicated,
        Counter::MessageReordered,
        Counter::Crash,
        Counter::Restart,
        Counter::DiskUnsyncedAtCrash,
        Counter::DiskTornWrite,
        Counter::DiskBitFlip,
        Counter::Pause,
        Counter::Resume,
        Counter::ClockJump,
        Counter::ClockDrift,
        Counter::ClientTimeout,
    ];

    /// A short, stable name for reports.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Counter::PartitionHalves => "partition.halves",
            Counter::PartitionIsolateOne => "partition.isolate_one",
            Counter::PartitionOneWay => "partition.one_way",
            Counter::PartitionBridge => "partition.bridge",
            Counter::PartitionMajoritiesRing => "partition.majorities_ring",
            Counter::PartitionHealed => "partition.healed",
            Counter::Clog => "net.clog",
            Counter::LossPeriod => "net.loss_period",
            Counter::DuplicatePeriod => "net.duplicate_period",
            Counter::ReorderPeriod => "net.reorder_period",
            Counter::MessageCut => "msg.cut",
            Counter::MessageLost => "msg.lost",
            Counter::MessageDuplicated => "msg.duplicated",
            Counter::MessageReordered => "msg.reordered",
            Counter::Crash => "node.crash",
            Counter::Restart => "node.restart",
            Counter::DiskUnsyncedAtCrash => "disk.unsynced_at_crash",
            Counter::DiskTornWrite => "disk.torn_write",
            Counter::DiskBitFlip => "disk.bit_flip",
            Counter::Pause => "node.pause",
            Counter::Resume => "node.resume",
            Counter::ClockJump => "clock.jump",
            Counter::ClockDrift => "clock.drift",
            Counter::ClientTimeout => "client.timeout",
        }
    }

    /// The counter for the start of a partition of `shape`.
    #[must_use]
    pub const fn for_partition(shape: PartitionShape) -> Counter {
        match shape {
            PartitionShape::Halves => Counter::PartitionHalves,
            PartitionShape::IsolateOne => Counter::PartitionIsolateOne,
            PartitionShape::OneWay => Counter::PartitionOneWay,
            PartitionShape::Bridge => Counter::PartitionBridge,
            PartitionShape::MajoritiesRing => Counter::PartitionMajoritiesRing,
        }
    }
}

/// How often each fault fired in a run (or, merged, in many runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Coverage {
    counts: [u64; Counter::ALL.len()],
}

impl Coverage {
    /// Adds one to `counter`.
    pub fn bump(&mut self, counter: Counter) {
        self.counts[counter as usize] += 1;
    }

    /// How often `counter` fired.
    #[must_use]
    pub fn get(&self, counter: Counter) -> u64 {
        self.counts[counter as usize]
    }

    /// Adds every count of `other` to this one.
    pub fn merge(&mut self, other: &Coverage) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
    }

    /// The counters that never fired.
    #[must_use]
    pub fn missing(&self) -> Vec<Counter> {
        Counter::ALL
            .into_iter()
            .filter(|&c| self.get(c) == 0)
            .collect()
    }
}

impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in Counter::ALL.into_iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}={}", c.name(), self.get(c))?;
        }
        Ok(())
    }
}

/// The nemesis's configuration: which faults may be drawn and how hard.
///
/// Built with [`NemesisConfig::builder`]; the defaults suit a cluster of 3 to 7 nodes with
/// millisecond timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NemesisConfig {
    enabled: bool,
    swarm: bool,
    kinds: Vec<FaultKind>,
    crash_modes: Vec<CrashMode>,
    interval_mean_us: u64,
    crashed_nodes_max: Option<usize>,
    down_time_max_us: u64,
    pause_time_max_us: u64,
    clog_time_max_us: u64,
    clock_offset_max_us: u64,
    clock_jump_max_us: u64,
    drift_ppm_max: u32,
    loss_max: Probability,
    duplicate_max: Probability,
    reorder_delay_max_us: u64,
    mid_write_crash_percent: u8,
}

/// The most storage operations a crash part-way through a node's writes lets the node make
/// first ([`NemesisConfigBuilder::mid_write_crash_percent`]): enough to land anywhere in a
/// snapshot's or a compaction's sequence of writes, renames and syncs.
pub const MID_WRITE_OPS_MAX: u64 = 24;

impl Default for NemesisConfig {
    fn default() -> Self {
        NemesisConfig {
            enabled: true,
            swarm: true,
            kinds: FaultKind::ALL.to_vec(),
            crash_modes: CrashMode::ALL.to_vec(),
            interval_mean_us: 10_000,
            crashed_nodes_max: None,
            down_time_max_us: 200_000,
            pause_time_max_us: 200_000,
            clog_time_max_us: 100_000,
            clock_offset_max_us: 50_000,
            clock_jump_max_us: 1_000_000,
            drift_ppm_max: 100_000,
            loss_max: Probability::from_percent(20),
            duplicate_max: Probability::from_percent(20),
            reorder_delay_max_us: 20_000,
            mid_write_crash_percent: 0,
        }
    }
}

impl NemesisConfig {
    /// A builder starting from the defaults.
    #[must_use]
    pub fn builder() -> NemesisConfigBuilder {
        NemesisConfigBuilder {
            config: NemesisConfig::default(),
        }
    }

    /// A nemesis that injects nothing.
    #[must_use]
    pub fn disabled() -> Self {
        NemesisConfig {
            enabled: false,
            ..NemesisConfig::default()
        }
    }

    /// Whether any fault is injected.
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.enabled && !self.kinds.is_empty()
    }

    /// Whether each seed enables a random subset of the fault kinds.
    #[must_use]
    pub fn swarm(&self) -> bool {
        self.swarm
    }

    /// The most nodes down (crashed or paused) at once; `None` means a minority.
    #[must_use]
    pub fn crashed_nodes_max(&self) -> Option<usize> {
        self.crashed_nodes_max
    }

    /// Every duration setting with its builder name, in microseconds, for validation.
    pub(crate) fn durations_us(&self) -> [(&'static str, u64); 7] {
        [
            ("nemesis interval_mean", self.interval_mean_us),
            ("nemesis down_time_max", self.down_time_max_us),
            ("nemesis pause_time_max", self.pause_time_max_us),
            ("nemesis clog_time_max", self.clog_time_max_us),
            ("nemesis clock_offset_max", self.clock_offset_max_us),
            ("nemesis clock_jump_max", self.clock_jump_max_us),
            ("nemesis reorder_delay_max", self.reorder_delay_max_us),
        ]
    }

    /// Draws this run's fault profile.
    pub(crate) fn draw(&self, rng: &mut SimRng) -> FaultProfile {
        let mut enabled = [false; FaultKind::ALL.len()];
        let mut crash_modes: Vec<CrashMode>;
        let intensity = |max: u64, rng: &mut SimRng| -> u64 {
            if self.swarm {
                rng.between(max / 10, max)
            } else {
                max
            }
        };
        if self.swarm {
            // Each kind on with probability 1/2, and at least one.
            for k in &self.kinds {
                enabled[k.index()] = rng.below(2) == 0;
            }
            if !enabled.iter().any(|&e| e)
                && let Some(k) = rng.pick(&self.kinds)
            {
                enabled[k.index()] = true;
            }
            crash_modes = self
                .crash_modes
                .iter()
                .copied()
                .filter(|_| rng.below(2) == 0)
                .collect();
            if crash_modes.is_empty()
                && let Some(&m) = rng.pick(&self.crash_modes)
            {
                crash_modes.push(m);
            }
        } else {
            for k in &self.kinds {
                enabled[k.index()] = true;
            }
            crash_modes = self.crash_modes.clone();
        }
        if crash_modes.is_empty() {
            crash_modes.push(CrashMode::DropUnsynced);
        }
        let interval_mean_us = intensity(self.interval_mean_us * 2, rng).max(1);
        FaultProfile {
            enabled,
            crash_modes,
            interval_mean_us,
            loss: Probability::from_ppm(intensity(u64::from(self.loss_max.as_ppm()), rng) as u32),
            duplicate: Probability::from_ppm(
                intensity(u64::from(self.duplicate_max.as_ppm()), rng) as u32,
            ),
            reorder_delay_us: intensity(self.reorder_delay_max_us, rng),
            down_time_max_us: self.down_time_max_us,
            pause_time_max_us: self.pause_time_max_us,
            clog_time_max_us: self.clog_time_max_us,
            clock_offset_max_us: self.clock_offset_max_us,
            clock_jump_max_us: self.clock_jump_max_us,
            drift_ppm_max: self.drift_ppm_max,
            mid_write_crash_percent: self.mid_write_crash_percent,
        }
    }
}

/// Builds a [`NemesisConfig`].
#[derive(Debug, Clone)]
pub struct NemesisConfigBuilder {
    config: NemesisConfig,
}

impl NemesisConfigBuilder {
    /// Whether each seed enables a random subset of the allowed kinds (default true).
    #[must_use]
    pub fn swarm(mut self, on: bool) -> Self {
        self.config.swarm = on;
        self
    }

    /// The fault kinds allowed (default all).
    #[must_use]
    pub fn kinds(mut self, kinds: &[FaultKind]) -> Self {
        self.config.kinds = kinds.to_vec();
        self
    }

    /// The disk crash modes allowed (default all).
    #[must_use]
    pub fn crash_modes(mut self, modes: &[CrashMode]) -> Self {
        self.config.crash_modes = modes.to_vec();
        self
    }

    /// The mean time between nemesis actions (default 10 ms; swarm varies it per seed).
    #[must_use]
    pub fn interval_mean(mut self, d: Duration) -> Self {
        self.config.interval_mean_us = duration_micros(d);
        self
    }

    /// The most nodes crashed or paused at once (default: a minority).
    #[must_use]
    pub fn crashed_nodes_max(mut self, n: usize) -> Self {
        self.config.crashed_nodes_max = Some(n);
        self
    }

    /// The longest a crashed node stays down (default 200 ms).
    #[must_use]
    pub fn down_time_max(mut self, d: Duration) -> Self {
        self.config.down_time_max_us = duration_micros(d);
        self
    }

    /// The longest pause (default 200 ms).
    #[must_use]
    pub fn pause_time_max(mut self, d: Duration) -> Self {
        self.config.pause_time_max_us = duration_micros(d);
        self
    }

    /// The longest clog (default 100 ms).
    #[must_use]
    pub fn clog_time_max(mut self, d: Duration) -> Self {
        self.config.clog_time_max_us = duration_micros(d);
        self
    }

    /// The largest initial clock offset, either way (default 50 ms).
    #[must_use]
    pub fn clock_offset_max(mut self, d: Duration) -> Self {
        self.config.clock_offset_max_us = duration_micros(d);
        self
    }

    /// The largest clock jump, either way (default 1 s).
    #[must_use]
    pub fn clock_jump_max(mut self, d: Duration) -> Self {
        self.config.clock_jump_max_us = duration_micros(d);
        self
    }

    /// The largest clock drift, either way, in parts per million (default 100,000: 10%).
    #[must_use]
    pub fn drift_ppm_max(mut self, ppm: u32) -> Self {
        self.config.drift_ppm_max = ppm.min(500_000);
        self
    }

    /// The highest loss probability of a lossy period (default 20%).
    #[must_use]
    pub fn loss_max(mut self, p: Probability) -> Self {
        self.config.loss_max = p;
        self
    }

    /// The highest duplication probability of a duplicating period (default 20%).
    #[must_use]
    pub fn duplicate_max(mut self, p: Probability) -> Self {
        self.config.duplicate_max = p;
        self
    }

    /// The largest extra delay of a reordering period (default 20 ms).
    #[must_use]
    pub fn reorder_delay_max(mut self, d: Duration) -> Self {
        self.config.reorder_delay_max_us = duration_micros(d);
        self
    }

    /// The share of the nemesis's crashes, in percent, made part-way through the node's
    /// writes rather than between events (default 0): the node's disk halts after 0 to
    /// [`MID_WRITE_OPS_MAX`] more storage operations, the operation that meets the halt
    /// fails as in a process dying at that point, and the simulator crashes the node at the
    /// end of that event (in a crash mode drawn as for any crash) and restarts it later.
    /// Until then the node counts as down. Values above 100 are taken as 100.
    #[must_use]
    pub fn mid_write_crash_percent(mut self, percent: u8) -> Self {
        self.config.mid_write_crash_percent = percent.min(100);
        self
    }

    /// The configuration. Empty lists mean "nothing of that kind", and the drift is
    /// clamped to 500,000 ppm here; durations are checked against
    /// [`crate::DURATION_MAX`] when the configuration is given to a simulation
    /// ([`crate::SimConfigBuilder::build`]).
    #[must_use]
    pub fn build(self) -> NemesisConfig {
        self.config
    }
}

/// One run's faults: the enabled kinds and their intensities, drawn from the seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultProfile {
    enabled: [bool; FaultKind::ALL.len()],
    pub(crate) crash_modes: Vec<CrashMode>,
    pub(crate) interval_mean_us: u64,
    pub(crate) loss: Probability,
    pub(crate) duplicate: Probability,
    pub(crate) reorder_delay_us: u64,
    pub(crate) down_time_max_us: u64,
    pub(crate) pause_time_max_us: u64,
    pub(crate) clog_time_max_us: u64,
    pub(crate) clock_offset_max_us: u64,
    pub(crate) clock_jump_max_us: u64,
    pub(crate) drift_ppm_max: u32,
    pub(crate) mid_write_crash_percent: u8,
}

impl FaultProfile {
    /// A profile with nothing enabled.
    pub(crate) fn none() -> Self {
        let mut p = NemesisConfig::disabled().draw(&mut SimRng::new(0));
        p.enabled = [false; FaultKind::ALL.len()];
        p
    }

    /// Whether `kind` is enabled in this run.
    #[must_use]
    pub fn is_enabled(&self, kind: FaultKind) -> bool {
        self.enabled[kind.index()]
    }

    /// The enabled fault kinds.
    #[must_use]
    pub fn kinds(&self) -> Vec<FaultKind> {
        FaultKind::ALL
            .into_iter()
            .filter(|&k| self.is_enabled(k))
            .collect()
    }

    /// The disk crash modes enabled in this run.
    #[must_use]
    pub fn crash_modes(&self) -> &[CrashMode] {
        &self.crash_modes
    }
}

impl fmt::Display for FaultProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kinds={:?} crash_modes=[", self.kinds())?;
        for (i, m) in self.crash_modes.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(m.name())?;
        }
        write!(
            f,
            "] interval_mean={}us loss={}ppm dup={}ppm",
            self.interval_mean_us,
            self.loss.as_ppm(),
            self.duplicate.as_ppm()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swarm_enables_varied_non_empty_subsets() {
        let config = NemesisConfig::default();
        let mut rng = SimRng::new(1);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let p = config.draw(&mut rng);
            assert!(!p.kinds().is_empty());
            assert!(!p.crash_modes().is_empty());
            seen.insert(p.kinds());
        }
        assert!(seen.len() > 50, "{}", seen.len());
    }

    #[test]
    fn without_swarm_everything_allowed_is_enabled() {
        let config = NemesisConfig::builder()
            .swarm(false)
            .kinds(&[FaultKind::Crash, FaultKind::Loss])
            .build();
        let p = config.draw(&mut SimRng::new(2));
        assert_eq!(p.kinds(), vec![FaultKind::Loss, FaultKind::Crash]);
        assert!(!FaultProfile::none().is_enabled(FaultKind::Crash));
    }

    #[test]
    fn coverage_counts_merges_and_reports_missing() {
        let mut a = Coverage::default();
        a.bump(Counter::Crash);
        let mut b = Coverage::default();
        b.bump(Counter::Crash);
        b.bump(Counter::Pause);
        a.merge(&b);
        assert_eq!(a.get(Counter::Crash), 2);
        assert_eq!(a.get(Counter::Pause), 1);
        assert!(a.missing().contains(&Counter::ClockJump));
        assert!(!a.missing().contains(&Counter::Pause));
        assert!(a.to_string().contains("node.crash=2"));
    }
}
