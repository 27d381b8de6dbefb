//! Follower Reads: serving reads from any replica, and waiting until it is fresh enough.
//!
//! A replica's state machine may lag its leader's. Three ways to read, strongest first:
//!
//! - **Read index** ([`Node::read_index`](crate::Node::read_index)): linearizable. The
//!   leader notes its commit index, confirms with a quorum round of heartbeats that it is
//!   still the leader, and the read is served once the replica has applied up to that
//!   index. Works on followers too: the follower asks the leader for the index and waits
//!   for its own state machine (etcd's and TiKV's follower read).
//! - **Lease read** ([`Node::read_lease`](crate::Node::read_lease)): the leader skips the
//!   quorum round while its lease holds, under a stated clock-drift bound.
//! - **Read-your-writes on a follower**: a client remembers the highest index it has seen
//!   (the index of its last write, or of its last read); any replica that has applied that
//!   index may serve its next read. Not linearizable across clients, but no client ever
//!   sees its own history go backwards (ZooKeeper's `sync`-less reads, MongoDB's causal
//!   sessions).
//!
//! [`ReadWaitList`] is the piece all three share: reads parked until the state machine
//! reaches an index. A lagging follower is detectable: it has a large
//! [`Node::ticks_since_leader_contact`](crate::Node::ticks_since_leader_contact), or a
//! large gap between its commit and applied indexes.

use std::collections::BTreeMap;
use std::fmt;

use crate::types::LogIndex;

/// Reads waiting until the state machine has applied their index (a Request Waiting List
/// keyed by log index), with a bound on how many may wait.
///
/// ```
/// use synod_consensus::{LogIndex, ReadWaitList};
///
/// let mut reads = ReadWaitList::new(100);
/// // The client last wrote at index 7; this replica has applied 5: the read waits.
/// assert_eq!(reads.wait(LogIndex(7), LogIndex(5), "get x")?, None);
/// // Already applied: served at once.
/// assert_eq!(reads.wait(LogIndex(3), LogIndex(5), "get y")?, Some("get y"));
/// // The state machine reaches 7: the first read is released.
/// assert_eq!(reads.applied(LogIndex(7)), vec!["get x"]);
/// # Ok::<(), synod_consensus::ReadWaitError>(())
/// ```
#[derive(Debug)]
pub struct ReadWaitList<T> {
    waiting: BTreeMap<(LogIndex, u64), T>,
    seq: u64,
    len_max: usize,
}

/// Why a read could not wait.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadWaitError {
    /// `len_max` reads are already waiting.
    Full {
        /// The bound.
        len_max: usize,
    },
}

impl fmt::Display for ReadWaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadWaitError::Full { len_max } => {
                write!(f, "{len_max} reads are already waiting")
            }
        }
    }
}

impl std::error::Error for ReadWaitError {}

impl<T> ReadWaitList<T> {
    /// An empty list that holds at most `len_max` reads.
    #[must_use]
    pub fn new(len_max: usize) -> ReadWaitList<T> {
        ReadWaitList {
            waiting: BTreeMap::new(),
            seq: 0,
            len_max,
        }
    }

    /// Parks `read` until `index` is applied, or returns it at once if `applied` already
    /// covers it.
    ///
    /// # Errors
    ///
    /// [`ReadWaitError::Full`] if `len_max` reads are waiting.
    pub fn wait(
        &mut self,
        index: LogIndex,
        applied: LogIndex,
        read: T,
    ) -> Result<Option<T>, ReadWaitError> {
        if index <= applied {
            return Ok(Some(read));
        }
        if self.waiting.len() >= self.len_max {
            return Err(ReadWaitError::Full {
                len_max: self.len_max,
            });
        }
        self.seq += 1;
        self.waiting.insert((index, self.seq), read);
        Ok(None)
    }

    /// The state machine has applied up to `applied`: returns the reads that may now be
    /// served, in index order (and arrival order within an index).
    pub fn applied(&mut self, applied: LogIndex) -> Vec<T> {
        let rest = self.waiting.split_off(&(applied.next(), 0));
        let ready = std::mem::replace(&mut self.waiting, rest);
        ready.into_values().collect()
    }

    /// Removes every waiting read (for example when the replica shuts down).
    pub fn drain(&mut self) -> Vec<T> {
        std::mem::take(&mut self.waiting).into_values().collect()
    }

    /// How many reads wait.
    #[must_use]
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether no read waits.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}
