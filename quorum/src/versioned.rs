//! Versioned Value: an ordered multi-version store.
//!
//! Every write of a key creates a new version instead of overwriting: the store keeps the
//! pairs `(key, version) -> value` in key order and, within a key, version order. A read
//! asks for the latest version or for the newest version *as of* a given version, which is
//! how a multi-version concurrency control (MVCC) store gives a transaction a consistent
//! snapshot while later writes go on. Deletes are versions too (tombstones), so that a
//! snapshot taken before a delete still sees the value.
//!
//! Versions are any `Ord` values the caller chooses: a counter, a log index, a
//! `synod_clocks::HybridTimestamp`. Old versions are garbage-collected below a mark
//! ([`VersionedStore::collect_garbage`]): reads as of the mark or later are unchanged by it,
//! and reads as of an earlier version are refused with an error rather than answered wrongly.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt;
use std::ops::RangeBounds;

/// Why a versioned read or write was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VersionedError<Ver> {
    /// The key already has a value (or tombstone) at this version; versions are immutable.
    VersionExists {
        /// The version written twice.
        version: Ver,
    },
    /// The version is below the garbage-collection mark: the versions needed to answer
    /// (or that a write there would hide) may have been removed.
    BelowGcMark {
        /// The version asked for.
        version: Ver,
        /// The current mark.
        mark: Ver,
    },
}

impl<Ver: fmt::Debug> fmt::Display for VersionedError<Ver> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::VersionExists { version } => {
                write!(f, "version {version:?} of this key already exists")
            }
            Self::BelowGcMark { version, mark } => write!(
                f,
                "version {version:?} is below the garbage-collection mark {mark:?}: \
                 older versions have been removed"
            ),
        }
    }
}

impl<Ver: fmt::Debug> std::error::Error for VersionedError<Ver> {}

/// What [`VersionedStore::collect_garbage`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GcStats {
    /// Versions (values and tombstones) removed.
    pub versions_removed: usize,
    /// Keys that had no visible version left and were removed entirely.
    pub keys_removed: usize,
}

/// One key's versions, `None` for a delete. The newest is kept inline, so that reading
/// the latest version (or any version at or after it) follows no further pointer, and a
/// key with one version allocates nothing besides its map entry.
#[derive(Debug, Clone)]
struct History<Ver, V> {
    /// Older versions, ascending, all below `newest`.
    older: Vec<(Ver, Option<V>)>,
    newest: (Ver, Option<V>),
}

impl<Ver: Ord, V> History<Ver, V> {
    fn new(version: Ver, value: Option<V>) -> Self {
        Self {
            older: Vec::new(),
            newest: (version, value),
        }
    }

    /// Adds a version; gives it back if the key already has it.
    fn insert(&mut self, version: Ver, value: Option<V>) -> Result<(), Ver> {
        if version > self.newest.0 {
            // Appending in version order is the common case.
            let previous = std::mem::replace(&mut self.newest, (version, value));
            self.older.push(previous);
            return Ok(());
        }
        if version == self.newest.0 {
            return Err(version);
        }
        match self.older.binary_search_by(|(v, _)| v.cmp(&version)) {
            Ok(_) => Err(version),
            Err(slot) => {
                self.older.insert(slot, (version, value));
                Ok(())
            }
        }
    }

    /// The newest entry at or below `version`, if it holds a value.
    fn visible(&self, version: &Ver) -> Option<(&Ver, &V)> {
        let (ver, value) = if self.newest.0 <= *version {
            &self.newest
        } else {
            let upto = self.older.partition_point(|(v, _)| v <= version);
            self.older.get(upto.checked_sub(1)?)?
        };
        Some((ver, value.as_ref()?))
    }

    fn iter(&self) -> impl Iterator<Item = &(Ver, Option<V>)> {
        self.older.iter().chain(std::iter::once(&self.newest))
    }

    /// Removes what no read at or after `mark` can see; returns how many versions went
    /// and whether the key has none left.
    fn collect_garbage(&mut self, mark: &Ver) -> (usize, bool) {
        if self.newest.0 < *mark {
            // Everything older is superseded by `newest`, which is what the mark sees.
            let removed = self.older.len();
            self.older = Vec::new();
            return if self.newest.1.is_none() {
                (removed + 1, true)
            } else {
                (removed, false)
            };
        }
        // Only `older` holds versions below the mark: older[..below]. A version exactly
        // at the mark is always kept, so that a later write at the mark is still refused
        // as a duplicate rather than silently rewriting what a read at the mark saw.
        let below = self.older.partition_point(|(v, _)| v < mark);
        if below == 0 {
            return (0, false);
        }
        let next = self.older.get(below).map_or(&self.newest.0, |(v, _)| v);
        // The newest version below the mark is what a read as of the mark sees, unless a
        // version at the mark supersedes it or it is a delete.
        let keep_from = if next == mark || self.older[below - 1].1.is_none() {
            below
        } else {
            below - 1
        };
        self.older.drain(..keep_from);
        (keep_from, false)
    }
}

/// An ordered multi-version key-value store: `(key, version) -> value`.
///
/// Keys are in a `BTreeMap`; each key keeps its newest version inline and older ones in a
/// small sorted vector (most keys have few live versions). A latest read is one map
/// lookup, an as-of read adds a binary search when it needs an older version, and scans
/// walk keys in order.
///
/// ```
/// use synod_quorum::VersionedStore;
///
/// let mut store = VersionedStore::new();
/// store.put("k", 10u64, "a")?;
/// store.put("k", 20, "b")?;
/// store.delete("k", 30)?;
/// assert_eq!(store.latest("k"), None); // deleted at 30
/// assert_eq!(store.as_of("k", &25)?, Some((&20, &"b")));
/// assert_eq!(store.as_of("k", &15)?, Some((&10, &"a")));
/// assert_eq!(store.as_of("k", &5)?, None); // did not exist yet
///
/// // Garbage-collect below 25: version 20 stays (it is what a read as of 25 sees).
/// store.collect_garbage(25);
/// assert_eq!(store.as_of("k", &25)?, Some((&20, &"b")));
/// assert!(store.as_of("k", &15).is_err());
/// # Ok::<(), synod_quorum::VersionedError<u64>>(())
/// ```
#[derive(Debug, Clone)]
pub struct VersionedStore<K, V, Ver> {
    keys: BTreeMap<K, History<Ver, V>>,
    versions: usize,
    gc_mark: Option<Ver>,
}

impl<K, V, Ver> Default for VersionedStore<K, V, Ver> {
    fn default() -> Self {
        Self {
            keys: BTreeMap::new(),
            versions: 0,
            gc_mark: None,
        }
    }
}

impl<K: Ord, V, Ver: Ord + Clone> VersionedStore<K, V, Ver> {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `value` as `key`'s version `version`.
    ///
    /// Versions need not arrive in order (a replica may learn an older write late), but
    /// each `(key, version)` is written once.
    ///
    /// # Errors
    ///
    /// [`VersionedError::VersionExists`] if the key already has this version;
    /// [`VersionedError::BelowGcMark`] if `version` is below the garbage-collection mark.
    pub fn put(&mut self, key: K, version: Ver, value: V) -> Result<(), VersionedError<Ver>> {
        self.insert(key, version, Some(value))
    }

    /// Deletes `key` as of `version`: writes a tombstone, so that reads as of earlier
    /// versions still see the old value.
    ///
    /// # Errors
    ///
    /// As for [`VersionedStore::put`].
    pub fn delete(&mut self, key: K, version: Ver) -> Result<(), VersionedError<Ver>> {
        self.insert(key, version, None)
    }

    fn insert(
        &mut self,
        key: K,
        version: Ver,
        value: Option<V>,
    ) -> Result<(), VersionedError<Ver>> {
        self.check_mark(&version)?;
        match self.keys.entry(key) {
            Entry::Vacant(slot) => {
                slot.insert(History::new(version, value));
            }
            Entry::Occupied(mut slot) => slot
                .get_mut()
                .insert(version, value)
                .map_err(|version| VersionedError::VersionExists { version })?,
        }
        self.versions += 1;
        Ok(())
    }

    fn check_mark(&self, version: &Ver) -> Result<(), VersionedError<Ver>> {
        match &self.gc_mark {
            Some(mark) if version < mark => Err(VersionedError::BelowGcMark {
                version: version.clone(),
                mark: mark.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// The newest version of `key` and its value; `None` if the key was never written or
    /// its newest version is a delete.
    pub fn latest<Q>(&self, key: &Q) -> Option<(&Ver, &V)>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let (version, value) = &self.keys.get(key)?.newest;
        Some((version, value.as_ref()?))
    }

    /// The newest version of `key` at or below `version`, and its value: what a snapshot
    /// taken at `version` sees. `None` if the key did not exist then (or was deleted).
    ///
    /// # Errors
    ///
    /// [`VersionedError::BelowGcMark`] if `version` is below the garbage-collection mark.
    pub fn as_of<Q>(
        &self,
        key: &Q,
        version: &Ver,
    ) -> Result<Option<(&Ver, &V)>, VersionedError<Ver>>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.check_mark(version)?;
        Ok(self.keys.get(key).and_then(|h| h.visible(version)))
    }

    /// Every stored version of `key`, oldest first, with `None` for deletes.
    pub fn history<Q>(&self, key: &Q) -> impl Iterator<Item = (&Ver, Option<&V>)>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.keys
            .get(key)
            .into_iter()
            .flat_map(History::iter)
            .map(|(version, value)| (version, value.as_ref()))
    }

    /// The keys in `range`, in key order, each with the version and value a snapshot at
    /// `version` sees; keys that did not exist then are skipped.
    ///
    /// # Errors
    ///
    /// [`VersionedError::BelowGcMark`] if `version` is below the garbage-collection mark.
    pub fn scan_as_of<'a, Q, R>(
        &'a self,
        range: R,
        version: &'a Ver,
    ) -> Result<impl Iterator<Item = (&'a K, &'a Ver, &'a V)> + 'a, VersionedError<Ver>>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized + 'a,
        R: RangeBounds<Q> + 'a,
    {
        self.check_mark(version)?;
        Ok(self
            .keys
            .range(range)
            .filter_map(move |(key, h)| h.visible(version).map(|(ver, value)| (key, ver, value))))
    }

    /// The keys in `range`, in key order, each with its latest version and value; deleted
    /// keys are skipped.
    pub fn scan_latest<'a, Q, R>(
        &'a self,
        range: R,
    ) -> impl Iterator<Item = (&'a K, &'a Ver, &'a V)> + 'a
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized + 'a,
        R: RangeBounds<Q> + 'a,
    {
        self.keys.range(range).filter_map(|(key, h)| {
            let (version, value) = &h.newest;
            Some((key, version, value.as_ref()?))
        })
    }

    /// Removes the versions that no read as of `mark` or later can see: for each key, every
    /// version below `mark` except the newest one, and that one too if it is a delete or a
    /// version at exactly `mark` supersedes it. Afterwards reads as of versions below
    /// `mark` are refused. A mark lower than the current one is ignored (the mark never
    /// goes back).
    pub fn collect_garbage(&mut self, mark: Ver) -> GcStats {
        if self
            .gc_mark
            .as_ref()
            .is_some_and(|current| mark <= *current)
        {
            return GcStats::default();
        }
        let mut stats = GcStats::default();
        self.keys.retain(|_, history| {
            let (removed, empty) = history.collect_garbage(&mark);
            stats.versions_removed += removed;
            stats.keys_removed += usize::from(empty);
            !empty
        });
        self.versions -= stats.versions_removed;
        self.gc_mark = Some(mark);
        stats
    }

    /// The garbage-collection mark: reads as of earlier versions are refused.
    #[must_use]
    pub fn gc_mark(&self) -> Option<&Ver> {
        self.gc_mark.as_ref()
    }

    /// The number of keys with at least one stored version (values or tombstones).
    #[must_use]
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The number of stored versions (values and tombstones) over all keys.
    #[must_use]
    pub fn version_count(&self) -> usize {
        self.versions
    }
}
