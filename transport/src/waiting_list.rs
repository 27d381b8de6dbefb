//! Request Waiting List: requests waiting for responses, each completed when its own
//! criterion is met (one response, a quorum, an index committed) or expired at its
//! deadline.
//!
//! This is a pure data structure: time is a value the caller passes in (`now`, of any
//! ordered type: an [`Instant`](std::time::Instant) in a real driver, virtual time under
//! simulation), and completions and expiries are returned, not signalled. The caller wakes
//! whoever waits. That keeps it deterministic, so a quorum coordinator built on it runs
//! unchanged in `synod-sim`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::ids::NodeId;

/// Decides when a waiting request is complete, from the responses it receives.
pub trait Criterion {
    /// A response as received.
    type Response;
    /// What a completed request yields.
    type Output;

    /// Records `response` from `from`; returns the output once the criterion is met. Called
    /// at most once per response; a criterion must itself ignore a second response from the
    /// same node if that matters (as [`Quorum`] does).
    fn on_response(&mut self, from: NodeId, response: Self::Response) -> Option<Self::Output>;
}

/// Complete after responses from `needed` distinct nodes; a node answering twice is
/// counted once (its first response is kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quorum<R> {
    needed: usize,
    responses: BTreeMap<NodeId, R>,
}

impl<R> Quorum<R> {
    /// Waits for `needed` distinct responders.
    ///
    /// # Panics
    ///
    /// If `needed` is zero: such a request would be complete before it was sent.
    pub fn new(needed: usize) -> Self {
        assert!(needed > 0, "a quorum needs at least one response");
        Quorum {
            needed,
            responses: BTreeMap::new(),
        }
    }

    /// A majority of `cluster_size` nodes.
    pub fn majority(cluster_size: usize) -> Self {
        Self::new(cluster_size / 2 + 1)
    }

    /// Responses received so far, by node.
    pub fn responses(&self) -> &BTreeMap<NodeId, R> {
        &self.responses
    }
}

impl<R: Clone> Criterion for Quorum<R> {
    type Response = R;
    type Output = BTreeMap<NodeId, R>;

    fn on_response(&mut self, from: NodeId, response: R) -> Option<Self::Output> {
        self.responses.entry(from).or_insert(response);
        (self.responses.len() >= self.needed).then(|| self.responses.clone())
    }
}

/// What happened to a response given to [`WaitingList::on_response`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress<O> {
    /// The request's criterion is met; it has left the list.
    Completed(O),
    /// Recorded; the request still waits.
    Pending,
    /// No such request waits (it completed, expired, or never existed): a late or
    /// duplicate response, ignored.
    Unknown,
}

/// Why a request could not be added.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitError {
    /// `entries_max` requests already wait.
    Full {
        /// The limit.
        max: usize,
    },
    /// A request with this key already waits.
    Duplicate,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::Full { max } => write!(f, "waiting list full ({max} requests)"),
            WaitError::Duplicate => write!(f, "a request with this key already waits"),
        }
    }
}

impl std::error::Error for WaitError {}

#[derive(Debug)]
struct Entry<C, T> {
    criterion: C,
    deadline: T,
}

/// Pending requests keyed by `K`, each with a [`Criterion`] `C` and a deadline of time type
/// `T`.
///
/// ```
/// use synod_transport::{NodeId, Progress, Quorum, WaitingList};
///
/// // A write to three replicas completes on two acknowledgements.
/// let mut list = WaitingList::new(1024);
/// list.insert(7u64, Quorum::majority(3), 100u64)?; // key 7, deadline at t = 100
/// assert_eq!(list.on_response(&7, NodeId::new(1), "ack"), Progress::Pending);
/// assert_eq!(list.on_response(&7, NodeId::new(1), "ack"), Progress::Pending); // duplicate: counted once
/// assert!(matches!(list.on_response(&7, NodeId::new(2), "ack"), Progress::Completed(_)));
/// assert_eq!(list.on_response(&7, NodeId::new(3), "ack"), Progress::Unknown); // late
///
/// // Another request expires: the caller fails it with a timeout.
/// list.insert(8, Quorum::majority(3), 100)?;
/// assert_eq!(list.next_deadline(), Some(100));
/// assert!(list.expire(99).is_empty());
/// let expired = list.expire(100);
/// assert_eq!(expired.len(), 1);
/// assert_eq!(expired[0].0, 8);
/// # Ok::<(), synod_transport::WaitError>(())
/// ```
#[derive(Debug)]
pub struct WaitingList<K, C, T> {
    entries: BTreeMap<K, Entry<C, T>>,
    by_deadline: BTreeSet<(T, K)>,
    entries_max: usize,
}

impl<K, C, T> WaitingList<K, C, T>
where
    K: Ord + Clone,
    C: Criterion,
    T: Ord + Copy,
{
    /// An empty list holding at most `entries_max` requests.
    pub fn new(entries_max: usize) -> Self {
        WaitingList {
            entries: BTreeMap::new(),
            by_deadline: BTreeSet::new(),
            entries_max,
        }
    }

    /// Adds a request that waits until `criterion` is met or `deadline` passes.
    ///
    /// # Errors
    ///
    /// [`WaitError::Full`] at `entries_max`, [`WaitError::Duplicate`] if `key` waits.
    pub fn insert(&mut self, key: K, criterion: C, deadline: T) -> Result<(), WaitError> {
        if self.entries.contains_key(&key) {
            return Err(WaitError::Duplicate);
        }
        if self.entries.len() >= self.entries_max {
            return Err(WaitError::Full {
                max: self.entries_max,
            });
        }
        self.by_deadline.insert((deadline, key.clone()));
        self.entries.insert(
            key,
            Entry {
                criterion,
                deadline,
            },
        );
        Ok(())
    }

    /// Gives a response to the request `key`.
    pub fn on_response(
        &mut self,
        key: &K,
        from: NodeId,
        response: C::Response,
    ) -> Progress<C::Output> {
        let Some(entry) = self.entries.get_mut(key) else {
            return Progress::Unknown;
        };
        match entry.criterion.on_response(from, response) {
            None => Progress::Pending,
            Some(output) => {
                self.remove(key);
                Progress::Completed(output)
            }
        }
    }

    /// Removes every request whose deadline is at or before `now` and returns them, oldest
    /// deadline first, for the caller to fail.
    pub fn expire(&mut self, now: T) -> Vec<(K, C)> {
        let mut expired = Vec::new();
        while let Some((deadline, _)) = self.by_deadline.first() {
            if *deadline > now {
                break;
            }
            let (_, key) = self.by_deadline.pop_first().expect("first exists");
            let entry = self.entries.remove(&key).expect("indexes agree");
            expired.push((key, entry.criterion));
        }
        expired
    }

    /// Removes a request (for example one its caller abandoned).
    pub fn remove(&mut self, key: &K) -> Option<C> {
        let entry = self.entries.remove(key)?;
        self.by_deadline.remove(&(entry.deadline, key.clone()));
        Some(entry.criterion)
    }

    /// The earliest deadline: when the caller should next call [`expire`](Self::expire).
    pub fn next_deadline(&self) -> Option<T> {
        self.by_deadline.first().map(|(deadline, _)| *deadline)
    }

    /// Requests waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no request waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether request `key` waits.
    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_duplicates_are_refused() {
        let mut list: WaitingList<u32, Quorum<()>, u64> = WaitingList::new(1);
        list.insert(1, Quorum::new(1), 5).unwrap();
        assert_eq!(list.insert(1, Quorum::new(1), 5), Err(WaitError::Duplicate));
        assert_eq!(
            list.insert(2, Quorum::new(1), 5),
            Err(WaitError::Full { max: 1 })
        );
        assert!(list.remove(&1).is_some());
        assert_eq!(list.next_deadline(), None);
        assert!(list.expire(u64::MAX).is_empty());
    }

    #[test]
    fn expiry_is_in_deadline_order_and_completion_clears_the_deadline() {
        let mut list = WaitingList::new(10);
        list.insert("c", Quorum::new(1), 30u64).unwrap();
        list.insert("a", Quorum::new(1), 10).unwrap();
        list.insert("b", Quorum::new(2), 20).unwrap();
        assert!(matches!(
            list.on_response(&"a", NodeId::new(1), 1),
            Progress::Completed(_)
        ));
        assert_eq!(list.on_response(&"b", NodeId::new(1), 1), Progress::Pending);
        let keys: Vec<_> = list.expire(30).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec!["b", "c"]);
        assert!(list.is_empty());
    }
}
