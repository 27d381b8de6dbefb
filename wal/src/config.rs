//! Configuration: [`WalConfig`] (built and validated once by [`WalConfigBuilder`]),
//! [`SyncPolicy`], [`RecoveryMode`] and the [`Clock`] used to stamp segments.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::format::{RECORD_ALIGN, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, record_bytes};
use crate::{LogIndex, WalError};

/// When appended records are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncPolicy {
    /// Every [`crate::Wal::append`] returns only once its record is durable. Concurrent
    /// appenders share syncs: whoever finds no sync under way writes and syncs everything
    /// pending, in its own thread. No background thread.
    Always,
    /// Group commit by a background thread: it writes and syncs what is pending once
    /// `batch_bytes_max` bytes are pending or the oldest pending record has waited
    /// `batch_delay_us_max` microseconds. [`crate::Wal::append`] waits for the sync that
    /// covers its record; [`crate::Wal::submit`] does not. A writer waiting for its record
    /// asks for a sync at once; the thread then begins it as soon as every writer the last
    /// sync woke is waiting again or has left the log without queueing again (writers that
    /// block on each record come back together; one that left is busy elsewhere, and is not
    /// waited for), or `batch_delay_us_max` after the last sync ended, whichever is first.
    /// [`crate::Wal::sync`], [`crate::Wal::wait_durable`], [`crate::Wal::close`] and a
    /// submitter waiting for room under `pending_bytes_max` begin a sync at once (after the
    /// one under way, if any).
    Group {
        /// The longest a record waits for others to share its sync, in microseconds.
        batch_delay_us_max: u64,
        /// Pending bytes that start a sync without waiting for the delay.
        batch_bytes_max: usize,
    },
    /// Nothing is synced until the caller calls [`crate::Wal::sync`] (or
    /// [`crate::Wal::wait_durable`], which syncs in the caller's thread). No threads at all:
    /// the policy for a deterministic simulator and for callers that batch on their own.
    /// Appended records wait in memory until then; [`crate::Wal::flush`] writes them to
    /// the storage without syncing, for a caller that syncs the storage by other means.
    Manual,
}

impl SyncPolicy {
    /// Group commit with the values to start from: a record waits at most 1 ms
    /// (`batch_delay_us_max: 1_000`) for others to share its sync, and 1 MiB pending
    /// (`batch_bytes_max: 1 << 20`) starts a sync at once.
    ///
    /// Why these: a sync costs a few hundred microseconds to a few milliseconds on an SSD,
    /// so waiting up to 1 ms adds at most about one sync's time to a lone writer's latency,
    /// while many concurrent writers share each sync. 1 MiB is large enough that a busy
    /// log is limited by syncs, not by the size cap, and small enough that a burst does not
    /// hold megabytes of unsynced records. Measure your own disk: raise the delay when
    /// writers are many and each can wait; lower it (or use [`SyncPolicy::Always`], which
    /// also shares syncs among concurrent writers, without waiting) when latency matters
    /// more than syncs per second.
    #[must_use]
    pub const fn group() -> SyncPolicy {
        SyncPolicy::Group {
            batch_delay_us_max: 1_000,
            batch_bytes_max: 1 << 20,
        }
    }
}

/// What opening a log does with damage it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RecoveryMode {
    /// Any damage, a torn tail included, is an error.
    Strict,
    /// A torn tail (a partly written record after the last valid one, with no synced record
    /// after it) is cut off; damage anywhere else is an error naming segment and offset.
    #[default]
    TolerateTornTail,
    /// The log is cut at the first damage of any kind and opens with the valid records
    /// before it; every damage found is reported in the [`crate::RecoveryReport`], and
    /// segments past the cut are renamed `*.corrupt` rather than deleted.
    SkipAndReport,
}

/// A source of wall-clock milliseconds, used only to stamp new segments for
/// retention purges ([`crate::Wal::purge_older_than`]).
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since some fixed epoch (the Unix epoch for [`SystemClock`]).
    fn now_ms(&self) -> u64;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that moves only when told to: for tests and simulation.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    /// A clock reading `now_ms`.
    #[must_use]
    pub fn new(now_ms: u64) -> ManualClock {
        ManualClock {
            now_ms: AtomicU64::new(now_ms),
        }
    }

    /// Sets the reading.
    pub fn set(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// A validated log configuration. Build one with [`WalConfig::builder`].
#[derive(Debug, Clone)]
pub struct WalConfig {
    pub(crate) segment_bytes_max: u64,
    pub(crate) record_bytes_max: usize,
    pub(crate) pending_bytes_max: usize,
    pub(crate) spare_segments_max: usize,
    pub(crate) sync_policy: SyncPolicy,
    pub(crate) recovery_mode: RecoveryMode,
    pub(crate) first_index: LogIndex,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Default for WalConfig {
    fn default() -> WalConfig {
        WalConfig::builder()
            .build()
            .expect("the defaults are valid")
    }
}

impl WalConfig {
    /// A builder with the defaults: 64 MiB segments, records up to 1 MiB, 64 MiB of pending
    /// records, 2 spare segments, [`SyncPolicy::Always`], [`RecoveryMode::TolerateTornTail`],
    /// first index 1, the system clock.
    #[must_use]
    pub fn builder() -> WalConfigBuilder {
        WalConfigBuilder {
            config: WalConfig {
                segment_bytes_max: 64 << 20,
                record_bytes_max: 1 << 20,
                pending_bytes_max: 64 << 20,
                spare_segments_max: 2,
                sync_policy: SyncPolicy::Always,
                recovery_mode: RecoveryMode::TolerateTornTail,
                first_index: LogIndex::new(1),
                clock: Arc::new(SystemClock),
            },
            record_bytes_max_set: false,
        }
    }

    /// The size of every segment file (they are pre-written to this size).
    #[must_use]
    pub fn segment_bytes_max(&self) -> u64 {
        self.segment_bytes_max
    }

    /// The largest payload accepted.
    #[must_use]
    pub fn record_bytes_max(&self) -> usize {
        self.record_bytes_max
    }

    /// The most bytes of appended but not yet written records held in memory.
    #[must_use]
    pub fn pending_bytes_max(&self) -> usize {
        self.pending_bytes_max
    }

    /// How many spare segment files purges keep for reuse.
    #[must_use]
    pub fn spare_segments_max(&self) -> usize {
        self.spare_segments_max
    }

    /// The sync policy.
    #[must_use]
    pub fn sync_policy(&self) -> SyncPolicy {
        self.sync_policy
    }

    /// The recovery mode.
    #[must_use]
    pub fn recovery_mode(&self) -> RecoveryMode {
        self.recovery_mode
    }

    /// The index of the first record of a new, empty log.
    #[must_use]
    pub fn first_index(&self) -> LogIndex {
        self.first_index
    }
}

/// Builds a [`WalConfig`]; [`WalConfigBuilder::build`] validates it.
#[derive(Debug, Clone)]
pub struct WalConfigBuilder {
    config: WalConfig,
    record_bytes_max_set: bool,
}

impl WalConfigBuilder {
    /// The size of each segment file, from 4 KiB to 4 GiB - 1.
    #[must_use]
    pub fn segment_bytes_max(mut self, bytes: u64) -> Self {
        self.config.segment_bytes_max = bytes;
        self
    }

    /// The largest payload, at least 1 byte; a record must fit in an empty segment. The
    /// default, 1 MiB, shrinks to fit when segments are smaller.
    #[must_use]
    pub fn record_bytes_max(mut self, bytes: usize) -> Self {
        self.config.record_bytes_max = bytes;
        self.record_bytes_max_set = true;
        self
    }

    /// The most bytes of records appended but not yet written; at least `record_bytes_max`.
    /// Appenders wait (or, under [`SyncPolicy::Manual`], write without syncing) beyond it.
    #[must_use]
    pub fn pending_bytes_max(mut self, bytes: usize) -> Self {
        self.config.pending_bytes_max = bytes;
        self
    }

    /// How many purged segment files to keep as spares for reuse (0 deletes them). Under
    /// [`SyncPolicy::Group`] with at least 1, a thread of the log keeps one spare pre-written
    /// whenever none is ready, so that roll-overs do not pre-write their segment inline.
    #[must_use]
    pub fn spare_segments_max(mut self, count: usize) -> Self {
        self.config.spare_segments_max = count;
        self
    }

    /// The sync policy.
    #[must_use]
    pub fn sync_policy(mut self, policy: SyncPolicy) -> Self {
        self.config.sync_policy = policy;
        self
    }

    /// The recovery mode.
    #[must_use]
    pub fn recovery_mode(mut self, mode: RecoveryMode) -> Self {
        self.config.recovery_mode = mode;
        self
    }

    /// The index of the first record of a new, empty log, at least 1 (ignored when the log
    /// exists).
    #[must_use]
    pub fn first_index(mut self, index: LogIndex) -> Self {
        self.config.first_index = index;
        self
    }

    /// The clock that stamps new segments (for retention purges).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.config.clock = clock;
        self
    }

    /// The configuration, if valid.
    ///
    /// # Errors
    ///
    /// [`WalError::InvalidConfig`] saying which limit is out of range.
    pub fn build(self) -> Result<WalConfig, WalError> {
        let mut c = self.config;
        if !self.record_bytes_max_set {
            // The default shrinks to fit small segments.
            let room = usize::try_from(c.segment_bytes_max)
                .unwrap_or(usize::MAX)
                .saturating_sub(SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES);
            c.record_bytes_max = c.record_bytes_max.min(room / RECORD_ALIGN * RECORD_ALIGN);
        }
        let bad = |why: String| Err(WalError::InvalidConfig(why));
        if !(4096..=u64::from(u32::MAX)).contains(&c.segment_bytes_max) {
            return bad(format!(
                "segment_bytes_max {} is not within 4096..=4294967295",
                c.segment_bytes_max
            ));
        }
        if c.record_bytes_max == 0 || c.record_bytes_max > u32::MAX as usize / 2 {
            return bad(format!(
                "record_bytes_max {} is not within 1..=2147483647",
                c.record_bytes_max
            ));
        }
        if (SEGMENT_HEADER_BYTES + record_bytes(c.record_bytes_max)) as u64 > c.segment_bytes_max {
            return bad(format!(
                "a record of record_bytes_max {} does not fit in a segment of segment_bytes_max {}",
                c.record_bytes_max, c.segment_bytes_max
            ));
        }
        if c.pending_bytes_max < c.record_bytes_max {
            return bad(format!(
                "pending_bytes_max {} is smaller than record_bytes_max {}",
                c.pending_bytes_max, c.record_bytes_max
            ));
        }
        if c.first_index.get() == 0 {
            return bad("first_index must be at least 1 (index 0 means \"no record\")".to_owned());
        }
        if let SyncPolicy::Group {
            batch_bytes_max,
            batch_delay_us_max,
        } = c.sync_policy
        {
            if batch_bytes_max == 0 {
                return bad("batch_bytes_max must be at least 1".to_owned());
            }
            if batch_delay_us_max > 10_000_000 {
                return bad(format!(
                    "batch_delay_us_max {batch_delay_us_max} is over 10 s"
                ));
            }
        }
        Ok(c)
    }
}
