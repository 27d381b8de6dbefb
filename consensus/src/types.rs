//! Identities and positions shared by every protocol in the crate: node ids, terms, log
//! indexes, and the entries of the replicated log.
//!
//! Each is a newtype over `u64` so that the compiler keeps a term apart from an index and an
//! index apart from a count. The first index of a log is 1; `LogIndex::ZERO` means "before
//! the first entry", and `Term::ZERO` is the term of that imaginary entry.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The identity of a node: the project's one node id, defined in `synod-clocks` and
/// re-exported by `synod-quorum`, whose vote and commit counting the node uses.
pub use synod_quorum::NodeId;

/// A Raft term: the **Generation Clock** of the book, `synod-clocks`' [`Generation`]
/// (`Term::new(5)`, `get()`, shown as `g5`).
///
/// Terms only grow. A node persists its current term before it uses it (to vote or to
/// answer a leader), rejects any message of a lower term, and steps down when it sees a
/// higher one.
///
/// [`Generation`]: synod_clocks::Generation
pub use synod_clocks::Generation as Term;

/// The term after `term`.
///
/// # Panics
///
/// Panics at `u64::MAX`, which one election at a time cannot reach.
pub(crate) fn next_term(term: Term) -> Term {
    term.next().expect("term overflow")
}

/// A position in the replicated log. The first entry has index 1.
///
/// Build one with [`LogIndex::new`] (or `LogIndex(n)`) and read it with [`LogIndex::get`]
/// (or `.0`), the same names `synod_wal::LogIndex` uses. With the `wal` feature the two
/// convert into each other with `From`: `WalLogStore` keeps the entry at Raft index `i` in
/// the WAL record at index `i`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogIndex(pub u64);

impl LogIndex {
    /// The position before the first entry.
    pub const ZERO: LogIndex = LogIndex(0);

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

    /// The next position.
    ///
    /// # Panics
    ///
    /// Panics on overflow, which a log cannot reach.
    #[must_use]
    pub fn next(self) -> LogIndex {
        LogIndex(self.0.checked_add(1).expect("log index overflow"))
    }

    /// The previous position, saturating at zero.
    #[must_use]
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }

    /// This index moved forward by `count` entries.
    ///
    /// # Panics
    ///
    /// Panics on overflow, which a log cannot reach.
    #[must_use]
    pub fn plus(self, count: u64) -> LogIndex {
        LogIndex(self.0.checked_add(count).expect("log index overflow"))
    }
}

#[cfg(feature = "wal")]
impl From<synod_wal::LogIndex> for LogIndex {
    fn from(index: synod_wal::LogIndex) -> LogIndex {
        LogIndex(index.get())
    }
}

#[cfg(feature = "wal")]
impl From<LogIndex> for synod_wal::LogIndex {
    fn from(index: LogIndex) -> synod_wal::LogIndex {
        synod_wal::LogIndex::new(index.0)
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i{}", self.0)
    }
}

/// What an entry of the replicated log carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Payload {
    /// The empty entry every new leader appends at the start of its term, so that it can
    /// commit (and so learn the commit index of) everything before it.
    Noop,
    /// An application command, opaque to the protocol.
    Command(Bytes),
    /// A new cluster configuration, in effect on every node from the moment the entry is
    /// appended to its log (not when it commits).
    Membership(crate::membership::Membership),
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: LogIndex,
    /// What the entry carries.
    pub payload: Payload,
}

impl Entry {
    /// The bytes this entry counts for in flow control (`append_bytes_max`): its payload
    /// plus a fixed overhead for the header.
    #[must_use]
    pub fn size_bytes(&self) -> u64 {
        const HEADER_BYTES: u64 = 24;
        let payload = match &self.payload {
            Payload::Noop => 0,
            Payload::Command(data) => data.len() as u64,
            Payload::Membership(m) => 8 * (m.voters().len() + m.learners().len()) as u64,
        };
        HEADER_BYTES + payload
    }
}
