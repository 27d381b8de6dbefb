//! Key-Range Partitions: sorted, contiguous ranges that cover the key space, split and
//! merge, carry a generation that stale requests are checked against, and scans that
//! resume by key across ranges.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;

use serde::{Deserialize, Serialize};
use synod_node::NodeId;

/// The most ranges a table may hold.
pub const RANGES_MAX: usize = 1 << 20;
/// The longest key a range boundary may be, in bytes.
pub const KEY_BYTES_MAX: usize = 4_096;

/// A range's identity, kept across its splits (the left half keeps it) and merges (the
/// left range's survives).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RangeId(pub u64);

impl fmt::Display for RangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// How many times a range has changed (split, merged, moved): a request that names an
/// older generation was routed with a stale table, as TiKV's region epoch detects.
///
/// Every change gives the ranges it makes a generation above every range it replaces
/// (a split: one above the range split; a merge: one above the larger of the two), so
/// the generation of the range holding any one key only grows. Two versions of ranges
/// from one table's history that overlap are therefore ordered by their generations: the
/// higher is the newer, and equal generations are the same version. [`RangeTable::check`]
/// and [`RangeCache::learn`] rely on this order.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Generation(pub u64);

/// One range: the keys from `start` (included) to `end` (excluded; `None` is past every
/// key), its owner, and its generation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyRange {
    /// The range's identity.
    pub id: RangeId,
    /// The first key in the range.
    pub start: Vec<u8>,
    /// The first key past the range, or `None` for the last range.
    pub end: Option<Vec<u8>>,
    /// Bumped by every change to the range.
    pub generation: Generation,
    /// The node that serves the range.
    pub owner: NodeId,
}

impl KeyRange {
    /// Whether `key` is in the range.
    #[must_use]
    pub fn contains(&self, key: &[u8]) -> bool {
        self.start.as_slice() <= key && self.end.as_deref().is_none_or(|end| key < end)
    }
}

/// Why a range table could not be changed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RangeError {
    /// No range has this id.
    Unknown(RangeId),
    /// A split key that is not strictly inside the range (a range is never empty).
    SplitOutside(RangeId),
    /// The range is the last one: it has no right neighbour to merge with.
    NoNeighbour(RangeId),
    /// The table holds [`RANGES_MAX`] ranges.
    Full,
    /// A split key longer than [`KEY_BYTES_MAX`].
    KeyTooLong(usize),
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeError::Unknown(id) => write!(f, "no range {id}"),
            RangeError::SplitOutside(id) => write!(f, "the split key is not inside {id}"),
            RangeError::NoNeighbour(id) => write!(f, "{id} is the last range"),
            RangeError::Full => write!(f, "the table holds {RANGES_MAX} ranges"),
            RangeError::KeyTooLong(n) => {
                write!(f, "a {n}-byte split key: at most {KEY_BYTES_MAX}")
            }
        }
    }
}

impl std::error::Error for RangeError {}

/// The answer to a request that named an older version of the range than the node has
/// (an older generation, or the key is in another range now): the range that holds the
/// key now. The asker learns it ([`RangeCache::learn`]) and asks its owner.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RangeRedirect {
    /// The range that holds the key now.
    pub current: KeyRange,
}

/// Why [`RangeTable::check`] refused a request.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RangeMiss {
    /// The request was routed with an older version of the range than this node has:
    /// here is the range that holds the key now.
    Redirect(RangeRedirect),
    /// The request names a newer generation than this node's range for the key: this
    /// node is behind (it has not yet applied a split, merge or move). It teaches the
    /// asker nothing; the asker keeps its range and tries again later, or refreshes its
    /// table from a node that is not behind.
    Behind {
        /// The generation the request named.
        asked: Generation,
        /// The generation of this node's range for the key.
        have: Generation,
    },
}

impl fmt::Display for RangeMiss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeMiss::Redirect(r) => write!(
                f,
                "stale range: the key is in {} at generation {}",
                r.current.id, r.current.generation.0
            ),
            RangeMiss::Behind { asked, have } => write!(
                f,
                "this node is behind: generation {} asked, {} here",
                asked.0, have.0
            ),
        }
    }
}

impl std::error::Error for RangeMiss {}

/// Sorted, contiguous ranges covering every key, each with an owner and a generation.
///
/// The table starts as one range of every key. [`RangeTable::split`] cuts a range in two at
/// a key (the left half keeps the id), [`RangeTable::merge`] joins a range with its right
/// neighbour, [`RangeTable::move_range`] gives a range to another node; each bumps the
/// generation of the ranges it changes. [`RangeTable::check`] is what a node runs on every
/// request: the request names the range and generation its sender's table had, and gets a
/// [`RangeMiss`] unless both are current.
///
/// Invariants, asserted after every change: the first range starts at the empty key, each
/// range ends where the next starts, the last has no end, and no range is empty.
///
/// A table serializes with serde, and deserializing one checks these invariants (and the
/// limits), so a table that came from another node can be used without a panic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RangeTableWire")]
pub struct RangeTable {
    /// Ranges by their start key.
    ranges: BTreeMap<Vec<u8>, KeyRange>,
    ids: BTreeMap<RangeId, Vec<u8>>,
    next_id: u64,
}

impl RangeTable {
    /// One range of every key, owned by `owner`.
    #[must_use]
    pub fn new(owner: NodeId) -> RangeTable {
        let first = KeyRange {
            id: RangeId(1),
            start: Vec::new(),
            end: None,
            generation: Generation(1),
            owner,
        };
        RangeTable {
            ranges: BTreeMap::from([(Vec::new(), first)]),
            ids: BTreeMap::from([(RangeId(1), Vec::new())]),
            next_id: 2,
        }
    }

    /// How many ranges the table holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Always false: a table covers every key with at least one range.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The ranges in key order.
    pub fn ranges(&self) -> impl Iterator<Item = &KeyRange> {
        self.ranges.values()
    }

    /// The range with id `id`.
    #[must_use]
    pub fn get(&self, id: RangeId) -> Option<&KeyRange> {
        self.ids.get(&id).map(|start| &self.ranges[start])
    }

    /// The one range that holds `key`.
    #[must_use]
    pub fn locate(&self, key: &[u8]) -> &KeyRange {
        self.ranges
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .map(|(_, r)| r)
            .expect("the first range starts at the empty key")
    }

    /// What a node with this table answers a request for `key` that its sender routed to
    /// range `id` at `generation` (the sender's range for `key`): the range, if both are
    /// current and it holds the key.
    ///
    /// # Errors
    ///
    /// [`RangeMiss::Behind`] if `generation` is above this table's range for `key`: the
    /// sender's range is a newer version than this table has (the generation of the range
    /// holding a key only grows, see [`Generation`]), so this node is behind and must not
    /// teach its older range. Otherwise [`RangeMiss::Redirect`] with the range that holds
    /// `key` now.
    pub fn check(
        &self,
        key: &[u8],
        id: RangeId,
        generation: Generation,
    ) -> Result<&KeyRange, RangeMiss> {
        let range = self.locate(key);
        if range.id == id && range.generation == generation {
            Ok(range)
        } else if generation > range.generation {
            Err(RangeMiss::Behind {
                asked: generation,
                have: range.generation,
            })
        } else {
            Err(RangeMiss::Redirect(RangeRedirect {
                current: range.clone(),
            }))
        }
    }

    /// Splits range `id` at `at`: it keeps `start..at`, and a new range (returned) gets
    /// `at..end`, with the same owner. Both get the next generation.
    ///
    /// # Errors
    ///
    /// [`RangeError::Unknown`], [`RangeError::SplitOutside`] if `at` is not strictly inside
    /// the range, [`RangeError::Full`], [`RangeError::KeyTooLong`].
    pub fn split(&mut self, id: RangeId, at: &[u8]) -> Result<RangeId, RangeError> {
        if at.len() > KEY_BYTES_MAX {
            return Err(RangeError::KeyTooLong(at.len()));
        }
        let start = self.ids.get(&id).ok_or(RangeError::Unknown(id))?.clone();
        let range = self.ranges.get_mut(&start).expect("indexed");
        if !(range.start.as_slice() < at && range.contains(at)) {
            return Err(RangeError::SplitOutside(id));
        }
        if self.ranges.len() >= RANGES_MAX {
            return Err(RangeError::Full);
        }
        let range = self.ranges.get_mut(&start).expect("indexed");
        let generation = Generation(range.generation.0 + 1);
        let right = KeyRange {
            id: RangeId(self.next_id),
            start: at.to_vec(),
            end: range.end.take(),
            generation,
            owner: range.owner,
        };
        range.end = Some(at.to_vec());
        range.generation = generation;
        self.next_id += 1;
        let right_id = right.id;
        self.ids.insert(right_id, at.to_vec());
        self.ranges.insert(at.to_vec(), right);
        self.assert_valid();
        Ok(right_id)
    }

    /// Merges range `id` with its right neighbour, which it absorbs: `id` then covers both,
    /// keeps its owner, and gets a generation above both. Returns the absorbed range's id.
    ///
    /// # Errors
    ///
    /// [`RangeError::Unknown`], [`RangeError::NoNeighbour`] for the last range.
    pub fn merge(&mut self, id: RangeId) -> Result<RangeId, RangeError> {
        let start = self.ids.get(&id).ok_or(RangeError::Unknown(id))?.clone();
        let end = self.ranges[&start]
            .end
            .clone()
            .ok_or(RangeError::NoNeighbour(id))?;
        let right = self.ranges.remove(&end).expect("contiguous");
        self.ids.remove(&right.id);
        let left = self.ranges.get_mut(&start).expect("indexed");
        left.end = right.end;
        left.generation = Generation(left.generation.0.max(right.generation.0) + 1);
        self.assert_valid();
        Ok(right.id)
    }

    /// Gives range `id` to `owner`, with the next generation.
    ///
    /// # Errors
    ///
    /// [`RangeError::Unknown`].
    pub fn move_range(&mut self, id: RangeId, owner: NodeId) -> Result<(), RangeError> {
        let start = self.ids.get(&id).ok_or(RangeError::Unknown(id))?;
        let range = self.ranges.get_mut(start).expect("indexed");
        range.owner = owner;
        range.generation.0 += 1;
        Ok(())
    }

    /// Serves one page of a scan on the node that holds this table and `data` (its keys and
    /// values): the entries of `data` from `request.from`, at most `limit_max` (at least
    /// one), up to `request.end`, and not past the end of the range that holds
    /// `request.from`. The page says where the next one starts, so a client resumes from a
    /// key, never from a range: a split or merge between two pages cannot make it miss or
    /// repeat a key.
    ///
    /// # Errors
    ///
    /// A [`RangeMiss`] if the request named a stale range, or a newer one than this table
    /// has (see [`RangeTable::check`]).
    pub fn scan<V: Clone>(
        &self,
        data: &BTreeMap<Vec<u8>, V>,
        request: &ScanRequest,
        limit_max: usize,
    ) -> Result<ScanPage<V>, RangeMiss> {
        let range = self.check(&request.from, request.range, request.generation)?;
        // The page stops at whichever comes first: the scan's end or the range's.
        let stop = match (&request.end, &range.end) {
            (Some(a), Some(b)) => Some(a.min(b).clone()),
            (Some(a), None) => Some(a.clone()),
            (None, b) => b.clone(),
        };
        if stop.as_ref().is_some_and(|stop| *stop <= request.from) {
            // An empty scan (its end at or before its start): nothing, and over.
            return Ok(ScanPage {
                entries: Vec::new(),
                next: None,
            });
        }
        let upper = stop
            .as_deref()
            .map_or(Bound::Unbounded, Bound::Excluded::<&[u8]>);
        let mut entries = Vec::new();
        let mut next = stop.clone();
        for (key, value) in data.range::<[u8], _>((Bound::Included(request.from.as_slice()), upper))
        {
            if entries.len() == limit_max.max(1) {
                next = Some(key.clone());
                break;
            }
            entries.push((key.clone(), value.clone()));
        }
        // The scan is over when the page reached its end and that end is the scan's.
        if next.is_some() && next == request.end {
            next = None;
        }
        Ok(ScanPage { entries, next })
    }

    fn assert_valid(&self) {
        let mut expect_start: Option<&[u8]> = Some(&[]);
        for (start, range) in &self.ranges {
            assert_eq!(start, &range.start, "indexed by start");
            assert_eq!(Some(start.as_slice()), expect_start, "contiguous");
            if let Some(end) = &range.end {
                assert!(start < end, "no empty range");
            }
            expect_start = range.end.as_deref();
        }
        assert_eq!(expect_start, None, "the last range has no end");
        assert_eq!(self.ids.len(), self.ranges.len());
    }
}

/// A [`RangeTable`] as it arrives, before it is checked.
#[derive(Deserialize)]
struct RangeTableWire {
    ranges: BTreeMap<Vec<u8>, KeyRange>,
    ids: BTreeMap<RangeId, Vec<u8>>,
    next_id: u64,
}

/// Why a range table that arrived was refused: its ranges do not cover every key exactly
/// once, an index disagrees with them, or a limit is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeTableWireError;

impl fmt::Display for RangeTableWireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a valid range table")
    }
}

impl std::error::Error for RangeTableWireError {}

impl TryFrom<RangeTableWire> for RangeTable {
    type Error = RangeTableWireError;

    fn try_from(w: RangeTableWire) -> Result<RangeTable, RangeTableWireError> {
        let bad = RangeTableWireError;
        if w.ranges.is_empty() || w.ranges.len() > RANGES_MAX || w.ids.len() != w.ranges.len() {
            return Err(bad);
        }
        let mut expect_start: Option<&[u8]> = Some(&[]);
        for (start, range) in &w.ranges {
            if start != &range.start
                || Some(start.as_slice()) != expect_start
                || start.len() > KEY_BYTES_MAX
                || range.end.as_ref().is_some_and(|end| end <= start)
                || w.ids.get(&range.id) != Some(start)
                || range.id.0 >= w.next_id
            {
                return Err(bad);
            }
            expect_start = range.end.as_deref();
        }
        if expect_start.is_some() {
            return Err(bad);
        }
        Ok(RangeTable {
            ranges: w.ranges,
            ids: w.ids,
            next_id: w.next_id,
        })
    }
}

/// One page of a range scan, as a client sends it: from `from` to `end` (`None`: every key
/// after), to the range and generation its table names for `from`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScanRequest {
    /// The range the client's table has for `from`.
    pub range: RangeId,
    /// That range's generation in the client's table.
    pub generation: Generation,
    /// The first key of the page.
    pub from: Vec<u8>,
    /// The end of the whole scan (excluded).
    pub end: Option<Vec<u8>>,
}

/// One page of a range scan.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScanPage<V> {
    /// Keys and values in key order.
    pub entries: Vec<(Vec<u8>, V)>,
    /// Where the next page starts, or `None` when the scan is over.
    pub next: Option<Vec<u8>>,
}

/// A client's cache of ranges, learned from redirects: possibly stale, possibly with gaps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeCache {
    ranges: BTreeMap<Vec<u8>, KeyRange>,
}

impl RangeCache {
    /// A cache that knows every range of `table` (a snapshot of it).
    #[must_use]
    pub fn from_table(table: &RangeTable) -> RangeCache {
        RangeCache {
            ranges: table.ranges.clone(),
        }
    }

    /// The cached range that holds `key`, if the cache has one.
    #[must_use]
    pub fn locate(&self, key: &[u8]) -> Option<&KeyRange> {
        self.ranges
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .map(|(_, r)| r)
            .filter(|r| r.contains(key))
    }

    /// Learns `range` (from a redirect): it replaces every cached range it overlaps,
    /// unless one of them is newer. Returns whether it was learned.
    ///
    /// Overlapping ranges are ordered by generation (see [`Generation`]): a cached range
    /// with a higher generation than `range` that shares a key with it is a newer version,
    /// so `range` came from a delayed redirect or from a node that is behind, and the cache
    /// keeps what it has and learns nothing (not even the part of `range` that overlaps
    /// only older ranges). Equal generations are the same version, and `range` replaces
    /// it. A redirect from a node that is up to date is never refused: its range is at
    /// least as new as every version of it.
    pub fn learn(&mut self, range: KeyRange) -> bool {
        let overlapping: Vec<&KeyRange> = self
            .ranges
            .values()
            .filter(|r| {
                let starts_before_end = range.end.as_ref().is_none_or(|e| &r.start < e);
                let ends_after_start = r.end.as_ref().is_none_or(|e| e > &range.start);
                starts_before_end && ends_after_start
            })
            .collect();
        if overlapping.iter().any(|r| r.generation > range.generation) {
            return false;
        }
        let starts: Vec<Vec<u8>> = overlapping.iter().map(|r| r.start.clone()).collect();
        for start in starts {
            self.ranges.remove(&start);
        }
        self.ranges.insert(range.start.clone(), range);
        true
    }

    /// Forgets every range (after a redirect the cache cannot place, the client fetches a
    /// fresh table).
    pub fn clear(&mut self) {
        self.ranges.clear();
    }
}

/// When a range is split or merged, by size or by load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitPolicy {
    /// Split a range holding more than this many bytes (CockroachDB: 512 MiB).
    pub split_bytes_max: u64,
    /// Split a range serving more than this many requests a second (CockroachDB: 2,500).
    pub split_load_per_s_max: u64,
    /// Merge two neighbours whose sizes add up to less than this many bytes, and whose
    /// loads add up to less than half the split load.
    pub merge_bytes_below: u64,
}

impl SplitPolicy {
    /// Whether a range of `bytes` serving `load_per_s` requests a second should split.
    #[must_use]
    pub fn should_split(&self, bytes: u64, load_per_s: u64) -> bool {
        bytes > self.split_bytes_max || load_per_s > self.split_load_per_s_max
    }

    /// Whether two neighbours of these sizes and loads should merge (never so large that
    /// the merged range would split again at once).
    #[must_use]
    pub fn should_merge(&self, bytes: (u64, u64), load_per_s: (u64, u64)) -> bool {
        let bytes = bytes.0.saturating_add(bytes.1);
        let load = load_per_s.0.saturating_add(load_per_s.1);
        bytes < self.merge_bytes_below.min(self.split_bytes_max)
            && load < self.split_load_per_s_max / 2
    }

    /// Where to split a range holding `entries` (keys in order, each with its size or its
    /// load): the first key at which the total before it reaches half, so both halves
    /// carry about the same; `None` if no key but the first could split it.
    pub fn split_key<'a>(
        entries: impl IntoIterator<Item = (&'a [u8], u64)> + Clone,
    ) -> Option<Vec<u8>> {
        let total: u64 = entries.clone().into_iter().map(|(_, w)| w).sum();
        let mut before = 0u64;
        let mut first = true;
        for (key, weight) in entries {
            if !first && before.saturating_mul(2) >= total {
                return Some(key.to_vec());
            }
            first = false;
            before = before.saturating_add(weight);
        }
        None
    }
}
