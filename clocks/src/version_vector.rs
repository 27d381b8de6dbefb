//! Version vectors: [`VersionVector`], [`Dot`] and [`Causality`].
//!
//! A version vector holds one counter per node: how many events (writes) of that node a
//! replica's state includes. Comparing two vectors tells whether one state includes the
//! other (*happened before*) or neither does (*concurrent*: a conflict to keep as siblings
//! and resolve). Merge is the element-wise maximum. Amazon's Dynamo, Riak and Voldemort
//! use them; Cassandra's counters and many CRDT libraries too.
//!
//! # Representation
//!
//! Entries are kept in a `Vec` sorted by [`NodeId`], without zero counters (a missing node
//! counts zero). Compare and merge are one linear pass over both vectors; nothing is hashed,
//! so iteration order and encodings are deterministic.
//!
//! # Pruning policy
//!
//! Vectors grow with the number of nodes that ever coordinated a write. The only pruning
//! this crate offers is [`VersionVector::prune`], and it is safe by construction: it drops
//! the entry of a node only if that node is **retired** (it will never issue another
//! event, as decided by membership) **and** the entry is covered by a **stable** vector, a
//! vector that every replica's vector is known to descend from (for example the
//! element-wise minimum of the vectors gathered from all replicas). Then, for every vector
//! `other` in the system, the dropped counter was `<= other`'s counter for that node, so
//! removing it can only make a comparison say `Concurrent` instead of `After`, or `Before`
//! instead of `Equal`, until every replica has pruned the same entry. It can never hide a
//! conflict (turn `Concurrent` into an order) nor make an older value look newer. Riak's
//! size- and age-based pruning, which can do both, is deliberately not offered.

use core::cmp::Ordering;
use core::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::time::NodeId;

/// One event of one node: the node and its counter at that event.
///
/// A dot is the identity of a write in a [`Siblings`](crate::Siblings) set, and "vector
/// `v` contains dot `d`" means `v[d.node] >= d.counter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The node that issued the event.
    pub node: NodeId,
    /// The node's counter at the event (starting at 1).
    pub counter: u64,
}

impl fmt::Display for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.node, self.counter)
    }
}

/// How two version vectors (or the states they describe) are related.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Causality {
    /// The first happened before the second: the second includes everything in the first
    /// and more.
    Before,
    /// The first happened after the second.
    After,
    /// Same history.
    Equal,
    /// Neither includes the other: concurrent updates, a conflict.
    Concurrent,
}

/// A counter would pass `u64::MAX`. Only a corrupt or malicious vector can cause this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterOverflow {
    /// The node whose counter is at `u64::MAX`.
    pub node: NodeId,
}

impl fmt::Display for CounterOverflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "version vector counter of {} is at u64::MAX", self.node)
    }
}

impl std::error::Error for CounterOverflow {}

/// A decoded version vector broke the representation's rules.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidVersionVector {
    /// Entries were not in strictly increasing node order (unsorted or duplicated).
    Unsorted {
        /// The first node out of order.
        node: NodeId,
    },
    /// An entry had a zero counter (zero counters are omitted).
    ZeroCounter {
        /// The node with the zero counter.
        node: NodeId,
    },
    /// More entries than [`VersionVector::ENTRIES_MAX`].
    TooLong {
        /// The limit.
        entries_max: usize,
    },
}

impl fmt::Display for InvalidVersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidVersionVector::Unsorted { node } => {
                write!(f, "version vector entries not strictly sorted at {node}")
            }
            InvalidVersionVector::ZeroCounter { node } => {
                write!(f, "version vector entry for {node} has a zero counter")
            }
            InvalidVersionVector::TooLong { entries_max } => {
                write!(f, "version vector has more than {entries_max} entries")
            }
        }
    }
}

impl std::error::Error for InvalidVersionVector {}

/// A version vector: one event counter per node, sorted by node id.
///
/// `PartialOrd` follows causality: `a < b` when `a` happened before `b`, and `a` and `b`
/// are incomparable when concurrent.
///
/// ```
/// use synod_clocks::{Causality, NodeId, VersionVector};
///
/// # fn main() -> Result<(), synod_clocks::CounterOverflow> {
/// let (n1, n2) = (NodeId::new(1), NodeId::new(2));
/// let mut base = VersionVector::new();
/// base.increment(n1)?;                 // {n1: 1}
///
/// let mut left = base.clone();
/// left.increment(n1)?;                 // {n1: 2}
/// let mut right = base.clone();
/// right.increment(n2)?;                // {n1: 1, n2: 1}
///
/// assert_eq!(base.compare(&left), Causality::Before);
/// assert_eq!(left.compare(&right), Causality::Concurrent); // a conflict
///
/// let mut merged = left.clone();
/// merged.merge(&right);                // {n1: 2, n2: 1}
/// assert!(merged.descends(&left) && merged.descends(&right));
/// # Ok(())
/// # }
/// ```
///
/// # Encoding
///
/// With serde, a sequence of `(node, counter)` pairs, strictly sorted by node, without
/// zero counters. Decoding checks all three rules and rejects a vector with more than
/// [`ENTRIES_MAX`](Self::ENTRIES_MAX) entries as soon as it sees one entry too many.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct VersionVector {
    /// Sorted by node, strictly; no zero counters.
    entries: Vec<(NodeId, u64)>,
}

impl VersionVector {
    /// The most entries a decoded vector may have: 65,536 (1 MiB of entries).
    ///
    /// A vector has one entry per node that ever coordinated a write, so this is a bound
    /// on the nodes of a system, not on its traffic; [`prune`](Self::prune) entries of
    /// retired nodes to stay below it. Only decoding checks it: [`merge`](Self::merge) and
    /// [`increment`](Self::increment) cannot refuse without losing events.
    pub const ENTRIES_MAX: usize = 1 << 16;

    /// The empty vector (every counter zero).
    pub const fn new() -> Self {
        VersionVector {
            entries: Vec::new(),
        }
    }

    /// The counter of `node` (zero if absent).
    pub fn get(&self, node: NodeId) -> u64 {
        match self.entries.binary_search_by_key(&node, |e| e.0) {
            Ok(i) => self.entries[i].1,
            Err(_) => 0,
        }
    }

    /// Records a new event of `node` and returns its dot.
    ///
    /// # Errors
    ///
    /// [`CounterOverflow`] if the counter is at `u64::MAX`; the vector is unchanged.
    pub fn increment(&mut self, node: NodeId) -> Result<Dot, CounterOverflow> {
        match self.entries.binary_search_by_key(&node, |e| e.0) {
            Ok(i) => {
                let c = self.entries[i]
                    .1
                    .checked_add(1)
                    .ok_or(CounterOverflow { node })?;
                self.entries[i].1 = c;
                Ok(Dot { node, counter: c })
            }
            Err(i) => {
                self.entries.insert(i, (node, 1));
                Ok(Dot { node, counter: 1 })
            }
        }
    }

    /// Whether this vector includes the event `dot`.
    pub fn contains(&self, dot: Dot) -> bool {
        self.get(dot.node) >= dot.counter
    }

    /// Raises the counter of `dot.node` to at least `dot.counter`.
    pub fn add_dot(&mut self, dot: Dot) {
        if dot.counter == 0 {
            return;
        }
        match self.entries.binary_search_by_key(&dot.node, |e| e.0) {
            Ok(i) => self.entries[i].1 = self.entries[i].1.max(dot.counter),
            Err(i) => self.entries.insert(i, (dot.node, dot.counter)),
        }
    }

    /// Sets `self` to the element-wise maximum of `self` and `other`.
    pub fn merge(&mut self, other: &VersionVector) {
        if other.entries.is_empty() {
            return;
        }
        // Fast path: same node set, so merge in place.
        if self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|(a, b)| a.0 == b.0)
        {
            for (a, b) in self.entries.iter_mut().zip(&other.entries) {
                a.1 = a.1.max(b.1);
            }
            return;
        }
        let mut out = Vec::with_capacity(self.entries.len() + other.entries.len());
        let (mut i, mut j) = (0, 0);
        let (a, b) = (&self.entries, &other.entries);
        while i < a.len() && j < b.len() {
            match a[i].0.cmp(&b[j].0) {
                Ordering::Less => {
                    out.push(a[i]);
                    i += 1;
                }
                Ordering::Greater => {
                    out.push(b[j]);
                    j += 1;
                }
                Ordering::Equal => {
                    out.push((a[i].0, a[i].1.max(b[j].1)));
                    i += 1;
                    j += 1;
                }
            }
        }
        out.extend_from_slice(&a[i..]);
        out.extend_from_slice(&b[j..]);
        self.entries = out;
    }

    /// The element-wise maximum of `self` and `other`, as a new vector.
    pub fn merged(&self, other: &VersionVector) -> VersionVector {
        let mut out = self.clone();
        out.merge(other);
        out
    }

    /// How `self` relates to `other` causally.
    pub fn compare(&self, other: &VersionVector) -> Causality {
        let (mut less, mut greater) = (false, false);
        let (a, b) = (&self.entries, &other.entries);
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            match a[i].0.cmp(&b[j].0) {
                // A node only `self` has (with a positive counter).
                Ordering::Less => {
                    greater = true;
                    i += 1;
                }
                Ordering::Greater => {
                    less = true;
                    j += 1;
                }
                Ordering::Equal => {
                    match a[i].1.cmp(&b[j].1) {
                        Ordering::Less => less = true,
                        Ordering::Greater => greater = true,
                        Ordering::Equal => {}
                    }
                    i += 1;
                    j += 1;
                }
            }
            if less && greater {
                return Causality::Concurrent;
            }
        }
        greater |= i < a.len();
        less |= j < b.len();
        match (less, greater) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::Before,
            (false, true) => Causality::After,
            (true, true) => Causality::Concurrent,
        }
    }

    /// Whether `self` includes every event of `other` (after or equal).
    pub fn descends(&self, other: &VersionVector) -> bool {
        matches!(self.compare(other), Causality::After | Causality::Equal)
    }

    /// Whether `self` strictly includes `other` (after).
    pub fn dominates(&self, other: &VersionVector) -> bool {
        self.compare(other) == Causality::After
    }

    /// Drops the entries of `retired` nodes that `stable` covers, following the
    /// [pruning policy](crate::version_vector#pruning-policy). Returns how many entries
    /// were dropped.
    pub fn prune(&mut self, retired: &[NodeId], stable: &VersionVector) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|&(node, counter)| !(retired.contains(&node) && stable.get(node) >= counter));
        before - self.entries.len()
    }

    /// The number of nodes with a nonzero counter.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether every counter is zero.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The nonzero entries, sorted by node.
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.entries.iter().copied()
    }
}

impl PartialOrd for VersionVector {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.compare(other) {
            Causality::Before => Some(Ordering::Less),
            Causality::After => Some(Ordering::Greater),
            Causality::Equal => Some(Ordering::Equal),
            Causality::Concurrent => None,
        }
    }
}

/// Checks that `(node, counter)` may follow `previous` in a vector of `len` entries.
fn check_entry(
    previous: Option<NodeId>,
    len: usize,
    (node, counter): (NodeId, u64),
) -> Result<(), InvalidVersionVector> {
    if len >= VersionVector::ENTRIES_MAX {
        return Err(InvalidVersionVector::TooLong {
            entries_max: VersionVector::ENTRIES_MAX,
        });
    }
    if counter == 0 {
        return Err(InvalidVersionVector::ZeroCounter { node });
    }
    if previous.is_some_and(|p| p >= node) {
        return Err(InvalidVersionVector::Unsorted { node });
    }
    Ok(())
}

impl TryFrom<Vec<(NodeId, u64)>> for VersionVector {
    type Error = InvalidVersionVector;

    /// Checks that entries are strictly sorted by node, have no zero counter and number
    /// at most [`VersionVector::ENTRIES_MAX`].
    fn try_from(entries: Vec<(NodeId, u64)>) -> Result<Self, Self::Error> {
        for (i, &entry) in entries.iter().enumerate() {
            check_entry(i.checked_sub(1).map(|p| entries[p].0), i, entry)?;
        }
        Ok(VersionVector { entries })
    }
}

impl Serialize for VersionVector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(&self.entries)
    }
}

impl<'de> Deserialize<'de> for VersionVector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;

        impl<'de> Visitor<'de> for Entries {
            type Value = VersionVector;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "at most {} (node, counter) pairs sorted by node",
                    VersionVector::ENTRIES_MAX
                )
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<VersionVector, A::Error> {
                // The length prefix is remote input too: reserve no more than the limit.
                let reserve = seq.size_hint().unwrap_or(0).min(VersionVector::ENTRIES_MAX);
                let mut entries: Vec<(NodeId, u64)> = Vec::with_capacity(reserve);
                while let Some(entry) = seq.next_element::<(NodeId, u64)>()? {
                    check_entry(entries.last().map(|e| e.0), entries.len(), entry)
                        .map_err(de::Error::custom)?;
                    entries.push(entry);
                }
                Ok(VersionVector { entries })
            }
        }

        deserializer.deserialize_seq(Entries)
    }
}

impl From<VersionVector> for Vec<(NodeId, u64)> {
    fn from(v: VersionVector) -> Self {
        v.entries
    }
}

impl FromIterator<(NodeId, u64)> for VersionVector {
    /// Builds a vector from entries in any order; a node given twice keeps the larger
    /// counter, and zero counters are dropped.
    fn from_iter<I: IntoIterator<Item = (NodeId, u64)>>(iter: I) -> Self {
        let mut v = VersionVector::new();
        for (node, counter) in iter {
            v.add_dot(Dot { node, counter });
        }
        v
    }
}

impl fmt::Display for VersionVector {
    /// `{n1:3, n7:1}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (node, counter)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{node}:{counter}")?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv(entries: &[(u64, u64)]) -> VersionVector {
        entries.iter().map(|&(n, c)| (NodeId::new(n), c)).collect()
    }

    #[test]
    fn compare_covers_every_case() {
        assert_eq!(vv(&[]).compare(&vv(&[])), Causality::Equal);
        assert_eq!(
            vv(&[(1, 1)]).compare(&vv(&[(1, 1), (2, 1)])),
            Causality::Before
        );
        assert_eq!(
            vv(&[(1, 2), (2, 1)]).compare(&vv(&[(1, 1)])),
            Causality::After
        );
        assert_eq!(vv(&[(1, 2)]).compare(&vv(&[(2, 1)])), Causality::Concurrent);
        assert_eq!(
            vv(&[(1, 2), (3, 1)]).compare(&vv(&[(1, 3)])),
            Causality::Concurrent
        );
        assert!(vv(&[(1, 1)]) < vv(&[(1, 2)]));
        assert_eq!(vv(&[(1, 2)]).partial_cmp(&vv(&[(2, 1)])), None);
    }

    #[test]
    fn decoding_rejects_unsorted_duplicate_and_zero_entries() {
        let n = NodeId::new;
        assert!(VersionVector::try_from(vec![(n(2), 1), (n(1), 1)]).is_err());
        assert!(VersionVector::try_from(vec![(n(1), 1), (n(1), 2)]).is_err());
        assert_eq!(
            VersionVector::try_from(vec![(n(1), 0)]),
            Err(InvalidVersionVector::ZeroCounter { node: n(1) })
        );
        let bytes = postcard::to_allocvec(&vec![(n(2), 1u64), (n(1), 1u64)]).unwrap();
        assert!(postcard::from_bytes::<VersionVector>(&bytes).is_err());
        let bytes = postcard::to_allocvec(&vec![(n(1), 1u64), (n(1), 1u64)]).unwrap();
        assert!(postcard::from_bytes::<VersionVector>(&bytes).is_err());
        let bytes = postcard::to_allocvec(&vec![(n(1), 0u64)]).unwrap();
        assert!(postcard::from_bytes::<VersionVector>(&bytes).is_err());
        // The encoding is that of the sorted pairs.
        let pairs = vec![(n(1), 4u64), (n(9), 2u64)];
        assert_eq!(
            postcard::to_allocvec(&vv(&[(9, 2), (1, 4)])).unwrap(),
            postcard::to_allocvec(&pairs).unwrap()
        );
        let good = vv(&[(1, 4), (9, 2)]);
        let bytes = postcard::to_allocvec(&good).unwrap();
        assert_eq!(postcard::from_bytes::<VersionVector>(&bytes).unwrap(), good);
    }

    #[test]
    fn decoding_rejects_more_than_entries_max() {
        let max = VersionVector::ENTRIES_MAX as u64;
        let at_limit: Vec<(NodeId, u64)> = (1..=max).map(|n| (NodeId::new(n), 1)).collect();
        let bytes = postcard::to_allocvec(&at_limit).unwrap();
        let v = postcard::from_bytes::<VersionVector>(&bytes).unwrap();
        assert_eq!(v.len(), VersionVector::ENTRIES_MAX);
        let mut over = at_limit;
        over.push((NodeId::new(max + 1), 1));
        let bytes = postcard::to_allocvec(&over).unwrap();
        assert!(postcard::from_bytes::<VersionVector>(&bytes).is_err());
        assert_eq!(
            VersionVector::try_from(over),
            Err(InvalidVersionVector::TooLong {
                entries_max: VersionVector::ENTRIES_MAX
            })
        );
        // A length prefix claiming 2^60 entries, with nothing behind it: an error, not an
        // allocation of the claimed size.
        let mut lying = Vec::new();
        let mut len: u64 = 1 << 60;
        while len >= 0x80 {
            lying.push((len as u8) | 0x80);
            len >>= 7;
        }
        lying.push(len as u8);
        assert!(postcard::from_bytes::<VersionVector>(&lying).is_err());
    }

    #[test]
    fn increment_overflow_is_an_error() {
        let mut v = vv(&[(1, u64::MAX)]);
        assert_eq!(
            v.increment(NodeId::new(1)),
            Err(CounterOverflow {
                node: NodeId::new(1)
            })
        );
        assert_eq!(v.get(NodeId::new(1)), u64::MAX);
    }

    #[test]
    fn prune_drops_only_retired_and_stable_entries() {
        let mut v = vv(&[(1, 5), (2, 3), (3, 7)]);
        let stable = vv(&[(1, 5), (2, 2), (3, 7)]);
        let dropped = v.prune(&[NodeId::new(1), NodeId::new(2)], &stable);
        assert_eq!(dropped, 1);
        assert_eq!(v, vv(&[(2, 3), (3, 7)]));
    }
}
