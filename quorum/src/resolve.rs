//! Conflict resolution for the leaderless store: how replicas' versions of a key combine.
//!
//! A leaderless store accepts writes at any replica, so replicas can hold different
//! versions of a key. A [`Resolver`] says what a replica stores for a key (its *state*),
//! how a client's write changes it, and how two replicas' states merge. Merging must be
//! commutative, associative and idempotent, so that repairs, hints and duplicated messages
//! can arrive in any order, any number of times, and every replica still converges.
//!
//! - [`LastWriteWins`]: each write carries a timestamp and the largest wins; a delete is a
//!   write too (a tombstone), and wins a tie. Simple and small (Cassandra and ScyllaDB
//!   resolve every cell this way), but a write stamped by a clock that runs behind silently
//!   loses to an older write stamped by a clock that runs ahead.
//! - [`VersionVectors`]: writes carry the causal context their client read; a write
//!   replaces exactly the values its client saw, and concurrent writes are all kept as
//!   *siblings* and returned to the caller to resolve, as Riak does. Built on
//!   `synod-clocks`' dotted version vector sets ([`Siblings`]).

use std::cmp::Ordering;
use std::fmt;

use synod_clocks::dvv::WriteError;
use synod_clocks::{HybridTimestamp, Siblings, VersionVector, WallTime};

use crate::node::NodeId;

/// Why a replica refused to coordinate a write.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResolveError {
    /// This resolver issues versions from the coordinating replica's own state, so the
    /// coordinator must be a replica of the key.
    NotAReplica {
        /// The coordinator.
        node: NodeId,
    },
    /// The coordinator's version counter for this key is exhausted.
    CounterOverflow {
        /// The coordinator.
        node: NodeId,
    },
    /// The key already holds [`synod_clocks::dvv::SIBLINGS_MAX`] siblings that the write's
    /// context does not cover: read them and write a resolution with that read's context.
    TooManySiblings {
        /// The limit.
        siblings_max: usize,
    },
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAReplica { node } => write!(
                f,
                "node {node} is not a replica of this key and this conflict resolution needs the \
                 coordinator to be one: forward the write to a replica"
            ),
            Self::CounterOverflow { node } => {
                write!(f, "node {node}'s version counter for this key is exhausted")
            }
            Self::TooManySiblings { siblings_max } => write!(
                f,
                "the key has {siblings_max} unresolved siblings: read them and write a \
                 resolution with that read's context"
            ),
        }
    }
}

impl std::error::Error for ResolveError {}

/// A conflict-resolution strategy: what replicas store per key and how it merges.
pub trait Resolver {
    /// What a replica stores for one key. `Default` is "never written".
    type State: Clone + fmt::Debug + PartialEq + Default;
    /// What a client hands the coordinator to write.
    type Write: Clone + fmt::Debug;

    /// Applies a client's write, coordinated by `node`, and returns the state to send to
    /// the replicas. `local` is the coordinator's own state for the key if it is a
    /// replica (and is updated in place); `None` if it is not.
    ///
    /// # Errors
    ///
    /// [`ResolveError`] if this resolver cannot coordinate the write here.
    fn coordinate(
        &self,
        node: NodeId,
        local: Option<&mut Self::State>,
        write: Self::Write,
    ) -> Result<Self::State, ResolveError>;

    /// Merges `other` into `into`. Commutative, associative and idempotent.
    fn merge(&self, into: &mut Self::State, other: &Self::State);

    /// The wall-clock time of the newest write in `state`, for a resolver that orders writes
    /// by wall-clock timestamps; `None` (the default) for one that does not. The
    /// [`Coordinator`](crate::Coordinator) refuses a state whose time is further ahead of
    /// its own clock than its drift bound allows, since such a write would win its key
    /// against every later write until the clocks caught up.
    fn wall_time(&self, state: &Self::State) -> Option<WallTime> {
        let _ = state;
        None
    }

    /// If `state` holds only a delete (a tombstone), the wall-clock time of that delete: a
    /// replica may forget the key once it is older than the grace period
    /// ([`CoordinatorConfig::tombstone_grace_ms`](crate::CoordinatorConfig::tombstone_grace_ms)).
    /// `None` (the default) if it holds a value, or the resolver has no deletes.
    fn tombstone(&self, state: &Self::State) -> Option<WallTime> {
        let _ = state;
        None
    }

    /// Whether `state` already includes everything in `other` (merging would not change
    /// it). Read repair sends the merged state to replicas for which this is false.
    fn includes(&self, state: &Self::State, other: &Self::State) -> bool {
        let mut merged = state.clone();
        self.merge(&mut merged, other);
        merged == *state
    }
}

/// A last-write-wins timestamp: a total order on writes, read from a wall clock, so that a
/// replica can tell a timestamp from the far future ([`Resolver::wall_time`]).
pub trait Timestamp: Ord + Clone + fmt::Debug {
    /// The wall-clock time the timestamp was taken at.
    fn wall_time(&self) -> WallTime;
}

impl Timestamp for WallTime {
    fn wall_time(&self) -> WallTime {
        *self
    }
}

/// A hybrid timestamp's physical part; the logical counter and node id only break ties.
impl Timestamp for HybridTimestamp {
    fn wall_time(&self) -> WallTime {
        self.physical()
    }
}

/// Last write wins: each write carries a [`Timestamp`] `T` (a [`WallTime`] or a
/// [`HybridTimestamp`]), and the largest timestamp wins.
///
/// A write is `(timestamp, Some(value))`, a delete is `(timestamp, None)`: a *tombstone*,
/// which must be kept and replicated like a value, or a replica that missed the delete
/// would bring the old value back. The state is `Option<(T, Option<V>)>`: the winning
/// write or tombstone, `None` if the key was never written.
///
/// Ties (equal timestamps, which unique timestamps such as hybrid timestamps carrying a
/// node id never produce, but wall-clock ones can) are decided so that every replica picks
/// the same winner whatever order it saw them in: **a delete wins** over a write, as in
/// Cassandra, so a delete is never undone by a write that carries the same timestamp; then
/// the larger value wins over the smaller.
///
/// ```
/// use synod_clocks::WallTime;
/// use synod_quorum::{LastWriteWins, NodeId, Resolver};
///
/// let (early, late) = (WallTime::from_secs(10), WallTime::from_secs(20));
/// let lww = LastWriteWins::new();
/// let mut state = lww.coordinate(NodeId::new(1), None, (late, Some("late")))?;
/// lww.merge(&mut state, &Some((early, Some("early"))));
/// assert_eq!(state, Some((late, Some("late"))));
/// // A delete at the same timestamp wins, whichever a replica hears of first.
/// lww.merge(&mut state, &Some((late, None)));
/// assert_eq!(state, Some((late, None)));
/// lww.merge(&mut state, &Some((late, Some("late"))));
/// assert_eq!(state, Some((late, None)));
/// # Ok::<(), synod_quorum::ResolveError>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct LastWriteWins<T, V> {
    _types: std::marker::PhantomData<fn() -> (T, V)>,
}

impl<T, V> LastWriteWins<T, V> {
    /// The last-write-wins resolver.
    #[must_use]
    pub fn new() -> Self {
        Self {
            _types: std::marker::PhantomData,
        }
    }
}

/// Whether write (or tombstone) `a` wins over `b`: the larger timestamp; at equal
/// timestamps a tombstone, then the larger value. A total order, so merging by it is
/// commutative, associative and idempotent.
fn wins<T: Ord, V: Ord>(a: &(T, Option<V>), b: &(T, Option<V>)) -> bool {
    let at_tie = || match (&a.1, &b.1) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => x.cmp(y),
    };
    a.0.cmp(&b.0).then_with(at_tie) == Ordering::Greater
}

impl<T, V> Resolver for LastWriteWins<T, V>
where
    T: Timestamp,
    V: Ord + Clone + fmt::Debug,
{
    type State = Option<(T, Option<V>)>;
    type Write = (T, Option<V>);

    fn coordinate(
        &self,
        _node: NodeId,
        local: Option<&mut Self::State>,
        write: Self::Write,
    ) -> Result<Self::State, ResolveError> {
        let state = Some(write);
        if let Some(local) = local {
            self.merge(local, &state);
        }
        Ok(state)
    }

    fn merge(&self, into: &mut Self::State, other: &Self::State) {
        if let Some(incoming) = other
            && into.as_ref().is_none_or(|current| wins(incoming, current))
        {
            *into = Some(incoming.clone());
        }
    }

    fn wall_time(&self, state: &Self::State) -> Option<WallTime> {
        state.as_ref().map(|(at, _)| at.wall_time())
    }

    fn tombstone(&self, state: &Self::State) -> Option<WallTime> {
        match state {
            Some((at, None)) => Some(at.wall_time()),
            _ => None,
        }
    }
}

/// Version vectors with siblings: a replica keeps, per key, every value no write has yet
/// replaced, as a dotted version vector set ([`Siblings`]).
///
/// A write is `(context, value)`: the [`Siblings::context`] of the client's last read of
/// the key (an empty [`VersionVector`] for a blind write). It replaces the siblings that
/// context covers and nothing else, whatever the clocks say. Reads return the merged
/// [`Siblings`]: one value when there was no conflict, several when writes were concurrent,
/// for the caller to resolve and write back with the read's context.
///
/// The coordinator of a write must be a replica of the key: it issues the new version's
/// dot from its own state ([`ResolveError::NotAReplica`] otherwise).
///
/// ```
/// use synod_clocks::VersionVector;
/// use synod_quorum::{NodeId, Resolver, VersionVectors};
///
/// let vv = VersionVectors::new();
/// let (a, b) = (NodeId::new(1), NodeId::new(2));
/// // Two clients write blind (empty context) through different replicas.
/// let mut at_a = Default::default();
/// let mut at_b = Default::default();
/// vv.coordinate(a, Some(&mut at_a), (VersionVector::new(), "x"))?;
/// vv.coordinate(b, Some(&mut at_b), (VersionVector::new(), "y"))?;
/// vv.merge(&mut at_a, &at_b);
/// assert_eq!(at_a.values().collect::<Vec<_>>(), [&"x", &"y"]); // siblings
/// // A client that read both writes a resolution with that context: one value again.
/// let context = at_a.context().clone();
/// vv.coordinate(a, Some(&mut at_a), (context, "x+y"))?;
/// assert_eq!(at_a.values().collect::<Vec<_>>(), [&"x+y"]);
/// # Ok::<(), synod_quorum::ResolveError>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct VersionVectors<V> {
    _value: std::marker::PhantomData<fn() -> V>,
}

impl<V> VersionVectors<V> {
    /// The version-vector resolver.
    #[must_use]
    pub fn new() -> Self {
        Self {
            _value: std::marker::PhantomData,
        }
    }
}

impl<V: Clone + fmt::Debug + PartialEq> Resolver for VersionVectors<V> {
    type State = Siblings<V>;
    type Write = (VersionVector, V);

    fn coordinate(
        &self,
        node: NodeId,
        local: Option<&mut Self::State>,
        (context, value): Self::Write,
    ) -> Result<Self::State, ResolveError> {
        let local = local.ok_or(ResolveError::NotAReplica { node })?;
        local.write(node, &context, value).map_err(|e| match e {
            WriteError::TooManySiblings { siblings_max } => {
                ResolveError::TooManySiblings { siblings_max }
            }
            _ => ResolveError::CounterOverflow { node },
        })?;
        // The whole set goes to the replicas, not just the new value: a replica that
        // receives this dot then also learns every older dot of this coordinator, which is
        // what makes a context that covers the dot mean "saw those values".
        Ok(local.clone())
    }

    fn merge(&self, into: &mut Self::State, other: &Self::State) {
        into.merge(other);
    }
}
