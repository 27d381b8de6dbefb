//! The fault log: every fault a run applied, with its virtual time and details.
//!
//! [`Coverage`](crate::Coverage) says how often each fault fired; the [`FaultLog`] says
//! when and to whom: which nodes a partition cut off, which link a clog held and for how
//! long, how far a clock jumped, what a crash did to the disk. The nemesis and the
//! actions scheduled with [`Simulation::schedule`](crate::Simulation::schedule) both write
//! to it, and [`RunReport::faults`](crate::RunReport::faults) carries it out of the run.
//!
//! The log is built from the run's own deterministic state, so the same seed gives the
//! same log. It is not part of the trace hash: it records decisions the hash already
//! digests. Its memory is bounded by
//! [`SimConfigBuilder::fault_log_max`](crate::SimConfigBuilder::fault_log_max): past the
//! cap the oldest entries are dropped and counted in [`FaultLog::dropped`].

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use crate::disk::CrashMode;
use crate::net::{Cut, PartitionShape};
use crate::node::NodeId;
use crate::rng::Probability;
use crate::time::SimTime;

pub use synod_wal::testing::CrashReport;

/// The default cap of a [`FaultLog`], in entries.
pub const FAULT_LOG_ENTRIES_DEFAULT: usize = 4096;

/// One fault applied to the simulated cluster (or the end of one).
///
/// Printed with [`fmt::Display`] as one short line, e.g. `crash n1 mode=tear-last disk:
/// unsynced_ops=3 lost=1 torn`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// A partition began, replacing any earlier one.
    PartitionStart {
        /// The shape the nemesis drew; `None` for a partition given by hand
        /// ([`Action::Partition`](crate::Action::Partition)).
        shape: Option<PartitionShape>,
        /// The links it cuts.
        cut: Cut,
    },
    /// Every cut link was reconnected.
    PartitionHealed,
    /// A link held its messages for a while.
    Clog {
        /// The sending node.
        from: NodeId,
        /// The receiving node.
        to: NodeId,
        /// How long the clog lasts from now.
        duration: Duration,
    },
    /// A period of extra message loss on every link began.
    LossStart {
        /// The probability that a message is lost.
        probability: Probability,
    },
    /// The lossy period ended.
    LossEnd,
    /// A period of message duplication on every link began.
    DuplicateStart {
        /// The probability that a message is delivered twice.
        probability: Probability,
    },
    /// The duplicating period ended.
    DuplicateEnd,
    /// A period of reordering (links not FIFO, extra random delay) began.
    ReorderStart {
        /// The largest extra delay of a message.
        extra_delay_max: Duration,
    },
    /// The reordering period ended.
    ReorderEnd,
    /// A node's wall clock stepped.
    ClockJump {
        /// The node.
        node: NodeId,
        /// The step in microseconds; negative is back.
        delta_us: i64,
    },
    /// A node's clock drift changed.
    ClockDrift {
        /// The node.
        node: NodeId,
        /// The new drift in parts per million; negative runs slow.
        ppm: i32,
    },
    /// A node paused: it takes no inputs until it resumes.
    Pause {
        /// The node.
        node: NodeId,
    },
    /// A paused node resumed and received the inputs held meanwhile.
    Resume {
        /// The node.
        node: NodeId,
    },
    /// A node crashed: its memory is gone and its disk kept what `mode` and chance let it.
    Crash {
        /// The node.
        node: NodeId,
        /// How unsynced writes were treated.
        mode: CrashMode,
        /// What the crash did to the disk's unsynced state.
        disk: CrashReport,
    },
    /// A node's disk was armed to halt after `ops` more storage operations; the node crashes
    /// at the end of the event in which it halts
    /// ([`NemesisConfigBuilder::mid_write_crash_percent`](crate::NemesisConfigBuilder::mid_write_crash_percent)).
    CrashArmed {
        /// The node.
        node: NodeId,
        /// Storage operations it may still make.
        ops: u64,
    },
    /// A crashed node started again from its surviving disk.
    Restart {
        /// The node.
        node: NodeId,
    },
    /// A node's next sync to complete will fail
    /// ([`Action::FailNextSync`](crate::Action::FailNextSync)).
    FailNextSync {
        /// The node.
        node: NodeId,
    },
    /// A node's disk became full ([`Action::FillDisk`](crate::Action::FillDisk)).
    DiskFull {
        /// The node.
        node: NodeId,
    },
    /// A node's disk had room again ([`Action::FreeDisk`](crate::Action::FreeDisk)).
    DiskFreed {
        /// The node.
        node: NodeId,
    },
    /// The safety phase ended: every network fault, full disk and pending sync failure was
    /// removed. The restarts and resumes this brings follow as their own entries.
    AllHealed,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::PartitionStart { shape, cut } => {
                f.write_str("partition ")?;
                match shape {
                    Some(s) => write!(f, "{s}")?,
                    None => f.write_str("by hand")?,
                }
                write!(f, ": {cut}")
            }
            Fault::PartitionHealed => f.write_str("partition healed"),
            Fault::Clog { from, to, duration } => {
                write!(f, "clog {from}->{to} for {}us", duration.as_micros())
            }
            Fault::LossStart { probability } => {
                write!(f, "loss begins: {}ppm", probability.as_ppm())
            }
            Fault::LossEnd => f.write_str("loss ends"),
            Fault::DuplicateStart { probability } => {
                write!(f, "duplication begins: {}ppm", probability.as_ppm())
            }
            Fault::DuplicateEnd => f.write_str("duplication ends"),
            Fault::ReorderStart { extra_delay_max } => write!(
                f,
                "reordering begins: extra delay up to {}us",
                extra_delay_max.as_micros()
            ),
            Fault::ReorderEnd => f.write_str("reordering ends"),
            Fault::ClockJump { node, delta_us } => {
                write!(f, "clock jump {node} by {delta_us:+}us")
            }
            Fault::ClockDrift { node, ppm } => write!(f, "clock drift {node} {ppm:+}ppm"),
            Fault::Pause { node } => write!(f, "pause {node}"),
            Fault::Resume { node } => write!(f, "resume {node}"),
            Fault::Crash { node, mode, disk } => {
                write!(
                    f,
                    "crash {node} mode={} disk: unsynced_ops={} lost={}",
                    mode.name(),
                    disk.unsynced_ops,
                    disk.ops_lost
                )?;
                if disk.dir_ops > 0 {
                    write!(
                        f,
                        " dir_ops={} dir_lost={}",
                        disk.dir_ops, disk.dir_ops_lost
                    )?;
                }
                if disk.torn {
                    f.write_str(" torn")?;
                }
                if disk.bits_flipped > 0 {
                    write!(f, " bits_flipped={}", disk.bits_flipped)?;
                }
                Ok(())
            }
            Fault::Restart { node } => write!(f, "restart {node}"),
            Fault::CrashArmed { node, ops } => {
                write!(f, "crash {node} after {ops} more storage operations")
            }
            Fault::FailNextSync { node } => write!(f, "next sync fails {node}"),
            Fault::DiskFull { node } => write!(f, "disk full {node}"),
            Fault::DiskFreed { node } => write!(f, "disk freed {node}"),
            Fault::AllHealed => f.write_str("all faults healed (liveness phase)"),
        }
    }
}

/// Who applied a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultSource {
    /// The nemesis drew it from the seed (or it followed from one the nemesis drew: the
    /// restart after a crash, the resume after a pause).
    Nemesis,
    /// An action scheduled by hand with [`Simulation::schedule`](crate::Simulation::schedule).
    Scripted,
    /// The start of the liveness phase, which heals everything.
    Heal,
}

/// One entry of a [`FaultLog`]: a fault, when it was applied and by whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultEntry {
    /// The virtual time it was applied.
    pub at: SimTime,
    /// Who applied it.
    pub source: FaultSource,
    /// The fault.
    pub fault: Fault,
}

impl fmt::Display for FaultEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}  {}", self.at, self.fault)?;
        if self.source == FaultSource::Scripted {
            f.write_str(" (scripted)")?;
        }
        Ok(())
    }
}

/// The faults a run applied, in order, bounded in memory.
///
/// Holds at most [`FaultLog::capacity`] entries; when a new one would exceed it, the
/// oldest is dropped and counted in [`FaultLog::dropped`], so the entries kept are always
/// the most recent ones, those closest to a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultLog {
    entries: VecDeque<FaultEntry>,
    capacity: usize,
    dropped: u64,
}

impl FaultLog {
    /// An empty log that keeps at most `capacity` entries (0: keeps none, counts all).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        FaultLog {
            entries: VecDeque::new(),
            capacity,
            dropped: 0,
        }
    }

    /// Appends an entry, dropping the oldest one if the log is full.
    pub fn push(&mut self, at: SimTime, source: FaultSource, fault: Fault) {
        if self.capacity == 0 {
            self.dropped += 1;
            return;
        }
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
            self.dropped += 1;
        }
        self.entries.push_back(FaultEntry { at, source, fault });
    }

    /// The entries kept, oldest first.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = &FaultEntry> + '_ {
        self.entries.iter()
    }

    /// How many entries are kept.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is kept.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most entries kept.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many entries (the oldest) were dropped to respect the capacity.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

impl Default for FaultLog {
    fn default() -> Self {
        FaultLog::new(FAULT_LOG_ENTRIES_DEFAULT)
    }
}

impl fmt::Display for FaultLog {
    /// One line per entry; a first line saying how many were dropped, if any.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dropped > 0 {
            writeln!(f, "({} earlier faults not kept)", self.dropped)?;
        }
        for e in &self.entries {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_entries_and_counts_the_dropped() {
        let mut log = FaultLog::new(2);
        for i in 0..5u32 {
            log.push(
                SimTime::from_micros(u64::from(i)),
                FaultSource::Nemesis,
                Fault::Pause {
                    node: NodeId::new(u64::from(i) + 1),
                },
            );
        }
        assert_eq!(log.len(), 2);
        assert_eq!(log.dropped(), 3);
        let kept: Vec<_> = log.entries().map(|e| e.at.as_micros()).collect();
        assert_eq!(kept, vec![3, 4]);
        assert!(log.to_string().starts_with("(3 earlier faults not kept)\n"));
        let mut none = FaultLog::new(0);
        none.push(SimTime::ZERO, FaultSource::Heal, Fault::AllHealed);
        assert!(none.is_empty());
        assert_eq!(none.dropped(), 1);
    }

    #[test]
    fn entries_display_their_details() {
        let crash = FaultEntry {
            at: SimTime::from_micros(1_500_000),
            source: FaultSource::Scripted,
            fault: Fault::Crash {
                node: NodeId::new(1),
                mode: CrashMode::TearLast,
                disk: CrashReport {
                    unsynced_ops: 3,
                    ops_lost: 1,
                    torn: true,
                    ..CrashReport::default()
                },
            },
        };
        assert_eq!(
            crash.to_string(),
            "1.500000s  crash n1 mode=tear-last disk: unsynced_ops=3 lost=1 torn (scripted)"
        );
        let mut cut = Cut::none(3);
        cut.cut_both(NodeId::new(1), NodeId::new(2));
        cut.cut_one_way(NodeId::new(3), NodeId::new(1));
        let p = Fault::PartitionStart {
            shape: Some(PartitionShape::OneWay),
            cut,
        };
        assert_eq!(p.to_string(), "partition one-way: n1<->n2 n3->n1");
        assert_eq!(
            Fault::ClockJump {
                node: NodeId::new(2),
                delta_us: -5
            }
            .to_string(),
            "clock jump n2 by -5us"
        );
    }
}
