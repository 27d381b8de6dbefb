//! The configuration of a Raft node, validated once when it is built.
//!
//! Times are in ticks, and every timeout is a number of them. A node driven through the
//! node contract runs its ticks itself from the time handed in with each input, one every
//! [`ConfigBuilder::tick_interval_us`] (10 ms by default); a node driven by hand is given
//! [`Node::tick`](crate::Node::tick) at an interval of its caller's choosing.
//! Every queue and in-flight count has a limit here, with its unit last in the name.

use std::fmt;
use std::ops::Range;

use crate::types::NodeId;

/// The default of [`ConfigBuilder::entry_bytes_max`]: 1 MiB.
pub const ENTRY_BYTES_MAX_DEFAULT: u64 = 1 << 20;

/// The default of [`ConfigBuilder::tick_interval_us`]: 10 ms.
pub const TICK_INTERVAL_US_DEFAULT: u64 = 10_000;

/// A validated node configuration. Build one with [`Config::builder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub(crate) id: NodeId,
    pub(crate) election_timeout_ticks: Range<u64>,
    pub(crate) heartbeat_interval_ticks: u64,
    pub(crate) in_flight_max: usize,
    pub(crate) append_bytes_max: u64,
    pub(crate) entry_bytes_max: u64,
    pub(crate) uncommitted_entries_max: u64,
    pub(crate) apply_entries_max: usize,
    pub(crate) read_pending_max: usize,
    pub(crate) snapshot_chunk_bytes_max: u64,
    pub(crate) snapshot_bytes_max: u64,
    pub(crate) pre_vote: bool,
    pub(crate) check_quorum: bool,
    pub(crate) lease_drift_ticks: Option<u64>,
    pub(crate) tick_interval_us: u64,
    pub(crate) seed: u64,
    pub(crate) broken: Broken,
}

/// Deliberately broken behaviour, for tests that must show the checkers catch it; set with
/// [`ConfigBuilder::broken`], which exists only with the crate's `broken` feature (without
/// it, none of these can be switched on and the checks compile away).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Broken {
    /// Commit an entry of an older term once a majority stores it (the Figure 8 bug).
    pub commit_old_term_by_counting: bool,
    /// Grant votes without waiting for the vote to be persisted, and forget it on a crash.
    pub skip_vote_persistence: bool,
    /// Accept a membership change while an earlier one is uncommitted (or before the
    /// leader committed an entry of its term): two single-server changes in a row change
    /// two voters at once, and the old and newest configurations' majorities may not meet.
    pub skip_membership_change_wait: bool,
    /// Hand leadership over without bringing the target up to date first, and grant a
    /// transfer's vote whatever the candidate's log holds.
    pub transfer_without_catch_up: bool,
    /// Take a snapshot chunk at whatever offset it says, appended to what was received
    /// (a duplicated or reordered chunk then corrupts the snapshot).
    pub snapshot_chunks_at_any_offset: bool,
}

impl Config {
    /// The deliberately broken behaviour switched on: always none without the `broken`
    /// feature, so the checks compile away.
    pub(crate) fn broken(&self) -> Broken {
        if cfg!(feature = "broken") {
            self.broken
        } else {
            Broken::default()
        }
    }

    /// A builder with the usual defaults for node `id`.
    #[must_use]
    pub fn builder(id: NodeId) -> ConfigBuilder {
        ConfigBuilder {
            config: Config {
                id,
                election_timeout_ticks: 10..20,
                heartbeat_interval_ticks: 2,
                in_flight_max: 64,
                append_bytes_max: 1 << 20,
                entry_bytes_max: ENTRY_BYTES_MAX_DEFAULT,
                uncommitted_entries_max: 1 << 16,
                apply_entries_max: 4096,
                read_pending_max: 4096,
                snapshot_chunk_bytes_max: 1 << 20,
                snapshot_bytes_max: 1 << 32,
                pre_vote: true,
                check_quorum: true,
                lease_drift_ticks: None,
                tick_interval_us: TICK_INTERVAL_US_DEFAULT,
                seed: id.get(),
                broken: Broken::default(),
            },
        }
    }

    /// This node's id.
    #[must_use]
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The length of one tick, in microseconds, when the node runs its own ticks from the
    /// time handed to [`Protocol::handle`](synod_node::Protocol::handle).
    #[must_use]
    pub fn tick_interval_us(&self) -> u64 {
        self.tick_interval_us
    }

    /// The range the randomized election timeout is drawn from, in ticks (`start`
    /// inclusive, `end` exclusive).
    #[must_use]
    pub fn election_timeout_ticks(&self) -> Range<u64> {
        self.election_timeout_ticks.clone()
    }

    /// Ticks between two heartbeats from the leader.
    #[must_use]
    pub fn heartbeat_interval_ticks(&self) -> u64 {
        self.heartbeat_interval_ticks
    }

    /// The most append messages in flight to one follower.
    #[must_use]
    pub fn in_flight_max(&self) -> usize {
        self.in_flight_max
    }

    /// The most entry bytes in one append message (one entry is always sent, however big).
    #[must_use]
    pub fn append_bytes_max(&self) -> u64 {
        self.append_bytes_max
    }

    /// The most bytes of one proposed command; see [`ConfigBuilder::entry_bytes_max`].
    #[must_use]
    pub fn entry_bytes_max(&self) -> u64 {
        self.entry_bytes_max
    }

    /// Whether lease reads are enabled, and the clock-drift allowance in ticks.
    #[must_use]
    pub fn lease_drift_ticks(&self) -> Option<u64> {
        self.lease_drift_ticks
    }

    /// The seed of the node's random election timeouts.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }
}

/// Builds a [`Config`]; [`ConfigBuilder::build`] validates it.
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    config: Config,
}

impl ConfigBuilder {
    /// The election timeout is drawn uniformly from `ticks` (end exclusive) each time it is
    /// reset. Default `10..20`.
    #[must_use]
    pub fn election_timeout_ticks(mut self, ticks: Range<u64>) -> Self {
        self.config.election_timeout_ticks = ticks;
        self
    }

    /// Ticks between heartbeats. Default 2. Must be below the election timeout.
    #[must_use]
    pub fn heartbeat_interval_ticks(mut self, ticks: u64) -> Self {
        self.config.heartbeat_interval_ticks = ticks;
        self
    }

    /// The most unacknowledged append messages to one follower (pipelining depth). Default 64.
    #[must_use]
    pub fn in_flight_max(mut self, count: usize) -> Self {
        self.config.in_flight_max = count;
        self
    }

    /// The most entry bytes per append message. Default 1 MiB.
    #[must_use]
    pub fn append_bytes_max(mut self, bytes: u64) -> Self {
        self.config.append_bytes_max = bytes;
        self
    }

    /// The most bytes of one proposed command: a bigger one is refused with
    /// [`ProposeError::TooLarge`](crate::ProposeError::TooLarge) before it reaches the log,
    /// so the log store must be able to hold an entry of this size
    /// (`WalStoreOptions::entry_bytes_max` for the WAL store). Default 1 MiB.
    #[must_use]
    pub fn entry_bytes_max(mut self, bytes: u64) -> Self {
        self.config.entry_bytes_max = bytes;
        self
    }

    /// The most entries a leader holds uncommitted before proposals are refused with
    /// [`ProposeError::Backpressure`](crate::ProposeError::Backpressure). Default 65,536.
    #[must_use]
    pub fn uncommitted_entries_max(mut self, count: u64) -> Self {
        self.config.uncommitted_entries_max = count;
        self
    }

    /// The most committed entries handed out in one [`Ready`](crate::Ready). Default 4096.
    #[must_use]
    pub fn apply_entries_max(mut self, count: usize) -> Self {
        self.config.apply_entries_max = count;
        self
    }

    /// The most read requests waiting for a read index. Default 4096.
    #[must_use]
    pub fn read_pending_max(mut self, count: usize) -> Self {
        self.config.read_pending_max = count;
        self
    }

    /// The most snapshot bytes per snapshot message. Default 1 MiB.
    #[must_use]
    pub fn snapshot_chunk_bytes_max(mut self, bytes: u64) -> Self {
        self.config.snapshot_chunk_bytes_max = bytes;
        self
    }

    /// The largest snapshot a follower accepts from its leader, in bytes: chunks that
    /// would take the snapshot being received past it are dropped, together with what was
    /// received, so a broken or hostile sender cannot make the node buffer without end.
    /// Set it above any snapshot the application takes (the leader cannot send a larger
    /// one). Default 4 GiB.
    #[must_use]
    pub fn snapshot_bytes_max(mut self, bytes: u64) -> Self {
        self.config.snapshot_bytes_max = bytes;
        self
    }

    /// Pre-vote (thesis 9.6): a node first asks whether it could win before it raises its
    /// term, so a node coming back from a partition does not depose a healthy leader.
    /// Default on.
    #[must_use]
    pub fn pre_vote(mut self, on: bool) -> Self {
        self.config.pre_vote = on;
        self
    }

    /// Check-quorum: a leader that has not heard from a majority within an election
    /// timeout steps down, and a follower that heard from its leader within the minimum
    /// election timeout ignores vote requests. Default on; lease reads require it.
    #[must_use]
    pub fn check_quorum(mut self, on: bool) -> Self {
        self.config.check_quorum = on;
        self
    }

    /// Enables lease reads, assuming every node's tick rate differs from real time by less
    /// than `drift_ticks` ticks over one minimum election timeout. See
    /// [`Node::read_lease`](crate::Node::read_lease). Default off.
    #[must_use]
    pub fn lease_reads(mut self, drift_ticks: u64) -> Self {
        self.config.lease_drift_ticks = Some(drift_ticks);
        self
    }

    /// The seed of the node's randomized election timeouts (mixed with the node id, so
    /// nodes given the same seed still time out differently). Default: the node id.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Reintroduces known bugs, for tests that show the checkers catch them. Only with the
    /// `broken` feature; never in a node that serves data.
    #[cfg(feature = "broken")]
    #[must_use]
    pub fn broken(mut self, broken: Broken) -> Self {
        self.config.broken = broken;
        self
    }

    /// The length of one tick, in microseconds (default [`TICK_INTERVAL_US_DEFAULT`], 10 ms),
    /// for a node driven through the node contract: [`Protocol::handle`](synod_node::Protocol::handle)
    /// runs the ticks that have passed by the time it is handed. A node driven by
    /// [`Node::tick`](crate::Node::tick) ignores it.
    #[must_use]
    pub fn tick_interval_us(mut self, micros: u64) -> Self {
        self.config.tick_interval_us = micros;
        self
    }

    /// Validates and returns the configuration.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first setting that is out of range.
    pub fn build(self) -> Result<Config, ConfigError> {
        let c = self.config;
        if c.heartbeat_interval_ticks == 0 {
            return Err(ConfigError::HeartbeatIntervalZero);
        }
        if c.election_timeout_ticks.start <= c.heartbeat_interval_ticks
            || c.election_timeout_ticks.end <= c.election_timeout_ticks.start
        {
            return Err(ConfigError::ElectionTimeout {
                start: c.election_timeout_ticks.start,
                end: c.election_timeout_ticks.end,
                heartbeat_interval_ticks: c.heartbeat_interval_ticks,
            });
        }
        for (name, value) in [
            ("in_flight_max", c.in_flight_max as u64),
            ("append_bytes_max", c.append_bytes_max),
            ("entry_bytes_max", c.entry_bytes_max),
            ("uncommitted_entries_max", c.uncommitted_entries_max),
            ("apply_entries_max", c.apply_entries_max as u64),
            ("read_pending_max", c.read_pending_max as u64),
            ("snapshot_chunk_bytes_max", c.snapshot_chunk_bytes_max),
            ("snapshot_bytes_max", c.snapshot_bytes_max),
            ("tick_interval_us", c.tick_interval_us),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if let Some(drift) = c.lease_drift_ticks {
            if !c.check_quorum {
                return Err(ConfigError::LeaseNeedsCheckQuorum);
            }
            if drift >= c.election_timeout_ticks.start {
                return Err(ConfigError::LeaseDriftTooLarge {
                    drift_ticks: drift,
                    election_timeout_ticks_min: c.election_timeout_ticks.start,
                });
            }
        }
        Ok(c)
    }
}

/// Why a configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `heartbeat_interval_ticks` is zero.
    HeartbeatIntervalZero,
    /// The election timeout range is empty or not above the heartbeat interval.
    ElectionTimeout {
        /// The range's start.
        start: u64,
        /// The range's end (exclusive).
        end: u64,
        /// The heartbeat interval it must exceed.
        heartbeat_interval_ticks: u64,
    },
    /// A limit that must be at least 1 is zero.
    Zero(&'static str),
    /// Lease reads rely on followers ignoring elections while they hear from a leader.
    LeaseNeedsCheckQuorum,
    /// The drift allowance leaves no lease.
    LeaseDriftTooLarge {
        /// The drift allowance.
        drift_ticks: u64,
        /// The minimum election timeout it must stay below.
        election_timeout_ticks_min: u64,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::HeartbeatIntervalZero => {
                write!(f, "heartbeat_interval_ticks must be at least 1")
            }
            ConfigError::ElectionTimeout {
                start,
                end,
                heartbeat_interval_ticks,
            } => write!(
                f,
                "election_timeout_ticks {start}..{end} must be non-empty and start above \
                 heartbeat_interval_ticks ({heartbeat_interval_ticks})"
            ),
            ConfigError::Zero(name) => write!(f, "{name} must be at least 1"),
            ConfigError::LeaseNeedsCheckQuorum => {
                write!(f, "lease reads require check_quorum")
            }
            ConfigError::LeaseDriftTooLarge {
                drift_ticks,
                election_timeout_ticks_min,
            } => write!(
                f,
                "lease drift allowance ({drift_ticks} ticks) must be below the minimum \
                 election timeout ({election_timeout_ticks_min} ticks)"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}
