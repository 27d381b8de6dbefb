//! Hybrid logical clocks: [`HybridTimestamp`], [`HybridClock`] and [`AtomicHybridClock`].
//!
//! # The timestamp
//!
//! A [`HybridTimestamp`] is a 64-bit *time* plus a [`NodeId`]. The time packs the two parts
//! of a hybrid logical clock (Kulkarni et al., 2014) into one integer, the layout the paper
//! suggests:
//!
//! ```text
//!  63                                           16 15              0
//! +-----------------------------------------------+-----------------+
//! | physical: wall-clock nanoseconds, low 16 bits | logical counter |
//! | cleared (a tick of 65.536 us)                 | (0..=65535)     |
//! +-----------------------------------------------+-----------------+
//! ```
//!
//! So the time, read as an integer, is within 65.536 us (plus the counter) of the wall
//! clock in nanoseconds since the Unix epoch, and comparing times as integers compares
//! (physical, logical) pairs. One word means the lock-free clock needs only one `AtomicU64`.
//!
//! # The algorithm
//!
//! With `last` the last time issued and `pt` the physical reading rounded down to a tick:
//!
//! - local or send event: `next = max(pt, last + 1)`;
//! - receive of time `m`: `next = max(pt, max(last, m) + 1)`, after checking that `m`'s
//!   physical part is at most `offset_max` ahead of the local physical clock.
//!
//! `last + 1` increments the logical counter; when the counter is at 65535, the `+ 1`
//! carries into the physical part: **on logical overflow the timestamp moves to the next
//! physical tick with counter zero**. The clock then runs at most one tick per 65,536
//! events ahead of the highest physical time it has seen, and the physical clock catches
//! up with it. That highest time is the local physical clock's highest reading or a
//! received timestamp's physical part, which the offset check keeps within `offset_max` of
//! the local reading at the time; so after a backward step of the local clock, or a message
//! from a peer that runs ahead, hybrid time is ahead of the local wall clock by that much
//! until the wall clock catches up. That is the price of never going back.
//! Timestamps never repeat and never go back. Only at the very end of the 64-bit space
//! (the year 2554) is there no next timestamp: [`HybridClock::try_now`] returns
//! [`HybridClockError::Exhausted`] there and [`HybridClock::now`] panics.
//!
//! # Encoding (version 1)
//!
//! [`HybridTimestamp::to_bytes`] writes 16 bytes: the 64-bit time, big-endian, then the
//! node id, big-endian. Comparing two encodings as byte strings (`memcmp`, a key-value
//! store's key order) gives the same result as comparing the timestamps. Every 16-byte
//! string decodes. Test vectors:
//!
//! | physical (ns since epoch)        | logical | node | bytes (hex)                          |
//! |----------------------------------|---------|------|--------------------------------------|
//! | 0                                | 0       | 0    | `00000000000000000000000000000000`   |
//! | 0                                | 1       | 1    | `00000000000000010000000000000001`   |
//! | 65,536                           | 0       | 0    | `00000000000100000000000000000000`   |
//! | 1,700,000,000,123,456,789 (stored as 1,700,000,000,123,404,288) | 7 | 3 | `17979cfe3d8500070000000000000003` |
//! | 18,446,744,073,709,486,080       | 65535   | 2^64-1 | `ffffffffffffffffffffffffffffffff` |

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, DecodeError};
use crate::physical::PhysicalClock;
use crate::time::{NodeId, WallTime, duration_nanos};

/// Number of low bits of a hybrid time that hold the logical counter.
pub const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// The length of a physical tick of a hybrid time: 2^16 ns = 65.536 us.
pub const PHYSICAL_TICK: Duration = Duration::from_nanos(1 << LOGICAL_BITS);

/// A hybrid logical clock timestamp: physical time, a logical counter and a node id.
///
/// Ordered by time (physical, then logical), then by node id, so that timestamps from
/// nodes with distinct ids are totally ordered. Small (16 bytes) and `Copy`. See the
/// [module documentation](crate::hlc) for the layout and the byte encoding.
///
/// ```
/// use synod_clocks::{HybridTimestamp, NodeId, WallTime};
///
/// let ts = HybridTimestamp::new(WallTime::from_nanos(3 << 16), 7, NodeId::new(1));
/// assert_eq!(ts.physical(), WallTime::from_nanos(3 << 16));
/// assert_eq!(ts.logical(), 7);
/// assert_eq!(HybridTimestamp::from_bytes(ts.to_bytes()), ts);
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct HybridTimestamp {
    time: u64,
    #[serde(with = "node_or_zero")]
    node: Option<NodeId>,
}

/// A timestamp's node on the wire: the node's number, or 0 for none, as the byte
/// encoding has it.
mod node_or_zero {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::NodeId;

    pub(super) fn serialize<S: Serializer>(node: &Option<NodeId>, s: S) -> Result<S::Ok, S::Error> {
        node.map_or(0, NodeId::get).serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NodeId>, D::Error> {
        u64::deserialize(d).map(NodeId::try_new)
    }
}

impl HybridTimestamp {
    /// The smallest timestamp.
    pub const ZERO: HybridTimestamp = HybridTimestamp {
        time: 0,
        node: None,
    };
    /// The largest timestamp.
    pub const MAX: HybridTimestamp = HybridTimestamp {
        time: u64::MAX,
        node: Some(NodeId::new(u64::MAX)),
    };
    /// Length of the [byte encoding](Self::to_bytes).
    pub const ENCODED_LEN: usize = 16;

    /// A timestamp from its parts. `physical` is rounded down to a [`PHYSICAL_TICK`].
    pub fn new(physical: WallTime, logical: u16, node: impl Into<Option<NodeId>>) -> Self {
        let node = node.into();
        HybridTimestamp {
            time: (physical.as_nanos() & !LOGICAL_MASK) | logical as u64,
            node,
        }
    }

    /// A timestamp from its packed 64-bit time (see the module docs) and a node id.
    pub fn from_time(time: u64, node: impl Into<Option<NodeId>>) -> Self {
        let node = node.into();
        HybridTimestamp { time, node }
    }

    /// The packed 64-bit time: physical nanoseconds with the logical counter in the low
    /// 16 bits. Comparing these integers compares (physical, logical).
    pub const fn time(self) -> u64 {
        self.time
    }

    /// The physical part, a multiple of [`PHYSICAL_TICK`].
    pub const fn physical(self) -> WallTime {
        WallTime::from_nanos(self.time & !LOGICAL_MASK)
    }

    /// The logical counter.
    pub const fn logical(self) -> u16 {
        // Truncation is the point: the counter is the low 16 bits.
        (self.time & LOGICAL_MASK) as u16
    }

    /// The node that issued the timestamp, if its clock had one.
    pub const fn node(self) -> Option<NodeId> {
        self.node
    }

    /// The same time with another node id.
    pub fn with_node(self, node: impl Into<Option<NodeId>>) -> Self {
        let node = node.into();
        HybridTimestamp { node, ..self }
    }

    /// The 16-byte encoding: time then node id, both big-endian. Byte order equals
    /// timestamp order.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.time.to_be_bytes());
        // No node is encoded as 0, which no node can be, and sorts first as `None` does.
        let node = match self.node {
            Some(node) => node.get(),
            None => 0,
        };
        out[8..].copy_from_slice(&node.to_be_bytes());
        out
    }

    /// Decodes the 16-byte encoding. Every 16-byte string is a valid timestamp.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        let mut time = [0u8; 8];
        let mut node = [0u8; 8];
        time.copy_from_slice(&bytes[..8]);
        node.copy_from_slice(&bytes[8..]);
        HybridTimestamp {
            time: u64::from_be_bytes(time),
            node: NodeId::try_new(u64::from_be_bytes(node)),
        }
    }

    /// Decodes the 16-byte encoding from a slice.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Length`] if the slice is not exactly 16 bytes long.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let array: [u8; 16] = bytes.try_into().map_err(|_| DecodeError::Length {
            expected: Self::ENCODED_LEN,
            actual: bytes.len(),
        })?;
        Ok(Self::from_bytes(array))
    }
}

impl fmt::Display for HybridTimestamp {
    /// `physical+logical@node`, for example `1700000000.000065536+3@n7`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.node {
            Some(node) => write!(f, "{}+{}@{node}", self.physical(), self.logical()),
            None => write!(f, "{}+{}", self.physical(), self.logical()),
        }
    }
}

/// Configuration of a hybrid clock, validated once by [`HybridClockConfig::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HybridClockConfig {
    node: Option<NodeId>,
    offset_max: Duration,
}

impl HybridClockConfig {
    /// The largest `offset_max` accepted: one day.
    pub const OFFSET_MAX_LIMIT: Duration = Duration::from_secs(24 * 60 * 60);

    /// A configuration for node `node` that rejects received timestamps whose physical part
    /// is more than `offset_max` ahead of the local physical clock. CockroachDB's default
    /// for the same setting is 500 ms. Pass `None` as the node if you do not need
    /// timestamps from different nodes to be distinct.
    ///
    /// # Errors
    ///
    /// If `offset_max` is zero (every message from a clock a nanosecond ahead would be
    /// rejected) or longer than [`Self::OFFSET_MAX_LIMIT`].
    pub fn new(node: impl Into<Option<NodeId>>, offset_max: Duration) -> Result<Self, ConfigError> {
        let node = node.into();
        if offset_max.is_zero() {
            return Err(ConfigError::new("offset_max", "must be greater than zero"));
        }
        if offset_max > Self::OFFSET_MAX_LIMIT {
            return Err(ConfigError::new("offset_max", "must be at most one day"));
        }
        Ok(HybridClockConfig { node, offset_max })
    }

    /// The node id stamped on every timestamp, if any.
    pub fn node(&self) -> Option<NodeId> {
        self.node
    }

    /// The largest accepted lead of a received timestamp over the local physical clock.
    pub fn offset_max(&self) -> Duration {
        self.offset_max
    }
}

/// Why a hybrid clock could not produce a timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HybridClockError {
    /// A received timestamp's physical part is further ahead of the local physical clock
    /// than the configured maximum offset: the sender's clock (or the message) is wrong.
    /// The local clock was not changed; the caller decides whether to drop the message,
    /// alert, or stop.
    TooFarAhead {
        /// The timestamp that was received.
        received: HybridTimestamp,
        /// The local physical reading it was compared with.
        local: WallTime,
        /// The configured maximum offset.
        offset_max: Duration,
    },
    /// The 64-bit time space is used up: the last timestamp is the largest possible.
    Exhausted,
}

impl fmt::Display for HybridClockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HybridClockError::TooFarAhead {
                received,
                local,
                offset_max,
            } => {
                let ahead = received.physical().saturating_duration_since(*local);
                write!(
                    f,
                    "received timestamp {received} is {ahead:?} ahead of the local clock \
                     ({local}), more than the maximum offset {offset_max:?}"
                )
            }
            HybridClockError::Exhausted => write!(
                f,
                "hybrid clock exhausted: no timestamp after the largest one"
            ),
        }
    }
}

impl std::error::Error for HybridClockError {}

/// The time of a local or send event: `max(pt, last + 1)`.
#[inline]
fn send_time(last: u64, physical: WallTime) -> Option<u64> {
    let pt = physical.as_nanos() & !LOGICAL_MASK;
    if pt > last {
        Some(pt)
    } else {
        last.checked_add(1)
    }
}

/// Checks a received timestamp against the local physical clock.
#[inline]
fn check_offset(
    received: HybridTimestamp,
    physical: WallTime,
    offset_max: Duration,
) -> Result<(), HybridClockError> {
    let limit = physical
        .as_nanos()
        .saturating_add(duration_nanos(offset_max));
    if received.physical().as_nanos() > limit {
        return Err(HybridClockError::TooFarAhead {
            received,
            local: physical,
            offset_max,
        });
    }
    Ok(())
}

/// A hybrid logical clock owned by one thread (or behind the caller's lock).
///
/// Use this in protocol state machines and the simulator; use [`AtomicHybridClock`] to
/// share one clock between threads without a lock.
///
/// # Restarts
///
/// A clock is monotonic across restarts when it is given the highest timestamp it issued
/// before ([`HybridClock::resume`]); the caller persists that value. A common way to avoid
/// a write per timestamp is to persist a ceiling some way ahead (say a second) and
/// resume from the ceiling after a crash, persisting a new ceiling whenever
/// [`last`](Self::last) approaches the old one.
///
/// ```
/// use std::time::Duration;
/// use synod_clocks::{HybridClock, HybridClockConfig, ManualClock, NodeId, PhysicalClock, WallTime};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let physical = ManualClock::new(WallTime::from_secs(1_000));
/// let config = HybridClockConfig::new(NodeId::new(1), Duration::from_millis(500))?;
/// let mut clock = HybridClock::new(physical.clone(), config);
///
/// let a = clock.now();
/// physical.jump_back(Duration::from_secs(10)); // the wall clock is stepped back...
/// let b = clock.now();
/// assert!(b > a); // ...but hybrid time does not go back.
///
/// // A message from a node whose clock is 2 s ahead is rejected, not absorbed.
/// let far = synod_clocks::HybridTimestamp::new(physical.wall().saturating_add(Duration::from_secs(2)), 0, NodeId::new(2));
/// assert!(clock.update(far).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct HybridClock<C> {
    physical: C,
    config: HybridClockConfig,
    last: u64,
}

impl<C: PhysicalClock> HybridClock<C> {
    /// A clock that has issued nothing yet.
    pub fn new(physical: C, config: HybridClockConfig) -> Self {
        HybridClock {
            physical,
            config,
            last: 0,
        }
    }

    /// A clock that will issue only timestamps after `high_water`, the highest timestamp
    /// the previous incarnation issued (or a persisted ceiling above it).
    ///
    /// `high_water` is trusted. When it comes from disk, check it first (a checksum, and
    /// that it is not further ahead of the physical clock than your ceiling): a corrupt
    /// value far in the future would keep this clock that far ahead of physical time,
    /// and one at the end of the 64-bit space exhausts it ([`now`](Self::now) panics,
    /// [`try_now`](Self::try_now) returns [`HybridClockError::Exhausted`]).
    pub fn resume(physical: C, config: HybridClockConfig, high_water: HybridTimestamp) -> Self {
        HybridClock {
            physical,
            config,
            last: high_water.time(),
        }
    }

    /// A timestamp for a local or send event, greater than every timestamp this clock has
    /// issued or received.
    ///
    /// # Panics
    ///
    /// If the clock is exhausted (see [`try_now`](Self::try_now)), which needs a physical
    /// clock or a resumed high-water mark in the year 2554.
    pub fn now(&mut self) -> HybridTimestamp {
        match self.try_now() {
            Ok(ts) => ts,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`now`](Self::now), but reports exhaustion as an error.
    ///
    /// # Errors
    ///
    /// [`HybridClockError::Exhausted`] if the last timestamp has the largest possible time.
    pub fn try_now(&mut self) -> Result<HybridTimestamp, HybridClockError> {
        let next = send_time(self.last, self.physical.wall()).ok_or(HybridClockError::Exhausted)?;
        self.last = next;
        Ok(HybridTimestamp::from_time(next, self.config.node))
    }

    /// Merges a received timestamp and returns the timestamp of the receive event, which is
    /// greater than both `received` and every timestamp this clock issued before.
    ///
    /// # Errors
    ///
    /// [`HybridClockError::TooFarAhead`] if `received` is more than the configured maximum
    /// offset ahead of the local physical clock; [`HybridClockError::Exhausted`] if no
    /// timestamp is left. On error the clock is unchanged.
    pub fn update(
        &mut self,
        received: HybridTimestamp,
    ) -> Result<HybridTimestamp, HybridClockError> {
        let pt = self.physical.wall();
        check_offset(received, pt, self.config.offset_max)?;
        let next =
            send_time(self.last.max(received.time()), pt).ok_or(HybridClockError::Exhausted)?;
        self.last = next;
        Ok(HybridTimestamp::from_time(next, self.config.node))
    }

    /// The last timestamp issued (the high-water mark to persist for restarts), or
    /// [`HybridTimestamp::ZERO`] with this clock's node id if none was.
    pub fn last(&self) -> HybridTimestamp {
        HybridTimestamp::from_time(self.last, self.config.node)
    }

    /// The configuration.
    pub fn config(&self) -> &HybridClockConfig {
        &self.config
    }

    /// The physical clock this clock reads.
    pub fn physical_clock(&self) -> &C {
        &self.physical
    }
}

/// A hybrid logical clock shared between threads, lock-free: one `AtomicU64` updated with
/// compare-and-swap.
///
/// Semantics are those of [`HybridClock`]; every timestamp returned to any thread is
/// distinct and each thread sees its own timestamps strictly increase.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use synod_clocks::{AtomicHybridClock, HybridClockConfig, NodeId, SystemClock};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = HybridClockConfig::new(NodeId::new(1), Duration::from_millis(500))?;
/// let clock = Arc::new(AtomicHybridClock::new(SystemClock::new(), config));
/// let handles: Vec<_> = (0..2)
///     .map(|_| {
///         let clock = Arc::clone(&clock);
///         std::thread::spawn(move || (0..1000).map(|_| clock.now()).collect::<Vec<_>>())
///     })
///     .collect();
/// let mut all: Vec<_> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
/// all.sort();
/// all.dedup();
/// assert_eq!(all.len(), 2000); // no timestamp was issued twice
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct AtomicHybridClock<C> {
    physical: C,
    config: HybridClockConfig,
    last: AtomicU64,
}

impl<C: PhysicalClock> AtomicHybridClock<C> {
    /// A clock that has issued nothing yet.
    pub fn new(physical: C, config: HybridClockConfig) -> Self {
        Self::resume(physical, config, HybridTimestamp::ZERO)
    }

    /// A clock that will issue only timestamps after `high_water` (see
    /// [`HybridClock::resume`]).
    pub fn resume(physical: C, config: HybridClockConfig, high_water: HybridTimestamp) -> Self {
        AtomicHybridClock {
            physical,
            config,
            last: AtomicU64::new(high_water.time()),
        }
    }

    /// A timestamp for a local or send event; see [`HybridClock::now`].
    ///
    /// # Panics
    ///
    /// If the clock is exhausted (the year 2554; see [`HybridClock::try_now`]).
    pub fn now(&self) -> HybridTimestamp {
        match self.try_now() {
            Ok(ts) => ts,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`now`](Self::now), but reports exhaustion as an error.
    ///
    /// # Errors
    ///
    /// [`HybridClockError::Exhausted`] if the last timestamp has the largest possible time.
    pub fn try_now(&self) -> Result<HybridTimestamp, HybridClockError> {
        let pt = self.physical.wall();
        self.advance(|last| send_time(last, pt))
    }

    /// Merges a received timestamp; see [`HybridClock::update`].
    ///
    /// # Errors
    ///
    /// As [`HybridClock::update`]; on error the clock is unchanged.
    pub fn update(&self, received: HybridTimestamp) -> Result<HybridTimestamp, HybridClockError> {
        let pt = self.physical.wall();
        check_offset(received, pt, self.config.offset_max)?;
        self.advance(|last| send_time(last.max(received.time()), pt))
    }

    fn advance(
        &self,
        step: impl Fn(u64) -> Option<u64>,
    ) -> Result<HybridTimestamp, HybridClockError> {
        let mut last = self.last.load(Ordering::Acquire);
        loop {
            let next = step(last).ok_or(HybridClockError::Exhausted)?;
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(HybridTimestamp::from_time(next, self.config.node)),
                Err(current) => last = current,
            }
        }
    }

    /// The last timestamp issued by any thread (the high-water mark to persist).
    pub fn last(&self) -> HybridTimestamp {
        HybridTimestamp::from_time(self.last.load(Ordering::Acquire), self.config.node)
    }

    /// The configuration.
    pub fn config(&self) -> &HybridClockConfig {
        &self.config
    }

    /// The physical clock this clock reads.
    pub fn physical_clock(&self) -> &C {
        &self.physical
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    fn config() -> HybridClockConfig {
        HybridClockConfig::new(NodeId::new(1), Duration::from_millis(500)).unwrap()
    }

    #[test]
    fn follows_physical_time_and_counts_when_it_stalls() {
        let pc = ManualClock::new(WallTime::from_secs(100));
        let mut c = HybridClock::new(pc.clone(), config());
        let a = c.now();
        assert_eq!(
            a.physical(),
            WallTime::from_secs(100).saturating_sub(Duration::from_nanos(100_000_000_000 % 65_536))
        );
        assert_eq!(a.logical(), 0);
        let b = c.now();
        assert_eq!((b.physical(), b.logical()), (a.physical(), 1));
        pc.advance(Duration::from_millis(1));
        let d = c.now();
        assert_eq!(d.logical(), 0);
        assert!(d.physical() > b.physical());
    }

    #[test]
    fn logical_overflow_carries_into_the_next_tick() {
        let pc = ManualClock::new(WallTime::from_secs(100));
        let start = HybridTimestamp::new(WallTime::from_secs(100), u16::MAX, NodeId::new(1));
        let mut c = HybridClock::resume(pc, config(), start);
        let next = c.now();
        assert_eq!(next.logical(), 0);
        assert_eq!(
            next.physical(),
            start.physical().saturating_add(PHYSICAL_TICK)
        );
    }

    #[test]
    fn exhaustion_is_an_error_not_a_repeat() {
        let pc = ManualClock::new(WallTime::MAX);
        let mut c = HybridClock::resume(pc, config(), HybridTimestamp::MAX);
        assert_eq!(c.try_now(), Err(HybridClockError::Exhausted));
        let a = AtomicHybridClock::resume(
            ManualClock::new(WallTime::MAX),
            config(),
            HybridTimestamp::MAX,
        );
        assert_eq!(a.try_now(), Err(HybridClockError::Exhausted));
    }

    #[test]
    fn config_rejects_zero_and_huge_offsets() {
        assert!(HybridClockConfig::new(None, Duration::ZERO).is_err());
        assert!(HybridClockConfig::new(None, Duration::from_secs(86_401)).is_err());
        let e = HybridClockConfig::new(None, Duration::ZERO).unwrap_err();
        assert_eq!(e.field(), "offset_max");
        assert_eq!(e.reason(), "must be greater than zero");
        assert!(e.to_string().contains("offset_max"));
    }

    #[test]
    fn rejected_update_leaves_the_clock_unchanged_and_says_why() {
        let pc = ManualClock::new(WallTime::from_secs(100));
        let mut c = HybridClock::new(pc, config());
        let before = c.now();
        let far = HybridTimestamp::new(WallTime::from_secs(101), 0, NodeId::new(2));
        let err = c.update(far).unwrap_err();
        assert!(matches!(err, HybridClockError::TooFarAhead { .. }));
        assert!(
            err.to_string().contains("ahead of the local clock"),
            "{err}"
        );
        assert_eq!(c.last(), before);
        // Just inside the bound is accepted.
        let near = HybridTimestamp::new(WallTime::from_nanos(100_400_000_000), 9, NodeId::new(2));
        let after = c.update(near).unwrap();
        assert!(after > near && after > before);
    }

    #[test]
    fn encoding_test_vectors() {
        let hex = |b: [u8; 16]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let v = |p: u64, l: u16, n: u64| {
            hex(HybridTimestamp::new(WallTime::from_nanos(p), l, NodeId::try_new(n)).to_bytes())
        };
        assert_eq!(v(0, 0, 0), "00000000000000000000000000000000");
        assert_eq!(v(0, 1, 1), "00000000000000010000000000000001");
        assert_eq!(v(65_536, 0, 0), "00000000000100000000000000000000");
        assert_eq!(
            v(1_700_000_000_123_456_789, 7, 3),
            "17979cfe3d8500070000000000000003"
        );
        assert_eq!(
            v(u64::MAX, u16::MAX, u64::MAX),
            "ffffffffffffffffffffffffffffffff"
        );
        assert_eq!(
            HybridTimestamp::new(WallTime::from_nanos(1_700_000_000_123_456_789), 0, None)
                .physical(),
            WallTime::from_nanos(1_700_000_000_123_404_288)
        );
        assert_eq!(
            HybridTimestamp::decode(&[0; 15]),
            Err(DecodeError::Length {
                expected: 16,
                actual: 15
            })
        );
    }
}
