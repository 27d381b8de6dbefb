//! [`LogIndex`]: the position of a record in the log.

use std::fmt;

/// The position of a record in the log.
///
/// Indexes are dense: the record appended after index `i` has index `i + 1`. A log starts
/// at the first index given in its configuration (1 by default) and, after purges, at a
/// later one. This is a newtype rather than a bare `u64` so that an index is never passed
/// where a count or a byte offset is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogIndex(u64);

impl LogIndex {
    /// The index with the given number.
    #[must_use]
    pub const fn new(index: u64) -> LogIndex {
        LogIndex(index)
    }

    /// The number of this index.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The index after this one.
    ///
    /// # Panics
    ///
    /// Panics if this is `u64::MAX`, which a log never reaches.
    #[must_use]
    pub const fn next(self) -> LogIndex {
        match self.0.checked_add(1) {
            Some(n) => LogIndex(n),
            None => panic!("log index overflow"),
        }
    }

    /// The index before this one, or `None` for index 0.
    #[must_use]
    pub const fn prev(self) -> Option<LogIndex> {
        match self.0.checked_sub(1) {
            Some(n) => Some(LogIndex(n)),
            None => None,
        }
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for LogIndex {
    fn from(index: u64) -> LogIndex {
        LogIndex(index)
    }
}

impl From<LogIndex> for u64 {
    fn from(index: LogIndex) -> u64 {
        index.0
    }
}
