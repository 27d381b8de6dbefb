//! Dotted version vectors: [`Siblings`], the concurrent values of one key.
//!
//! A plain version vector per value, with one entry per *client*, grows without bound;
//! with one entry per *server*, two clients writing through the same server at the same
//! time overwrite each other (the server cannot tell their writes apart). Dotted version
//! vectors (Preguiça, Baquero, Almeida et al.; used by Riak since 2.0 as "DVVSet") fix
//! both: each stored value carries a [`Dot`], the single event that created it, and the
//! key carries one causal context vector with an entry per server. A write that
//! carries the context its client read discards exactly the values that client saw and
//! keeps the others as siblings.
//!
//! The protocol:
//!
//! 1. A client reads the key: it gets every sibling value and the
//!    [`context`](Siblings::context).
//! 2. It writes through any server, passing that context back:
//!    [`write`](Siblings::write) drops the siblings the context covers, issues a new dot
//!    from the server's counter and stores the value under it.
//! 3. Replicas exchange state with [`merge`](Siblings::merge), which keeps a sibling
//!    unless the other side has already seen and discarded it.
//!
//! # The sibling limit
//!
//! Every collection fed by remote input has a limit, and a set of siblings is fed by
//! clients (writes) and by other replicas (merges and decoded states). The limit is
//! [`SIBLINGS_MAX`] (100, Riak's default `max_siblings`), enforced at two places:
//!
//! - **Writes.** [`write`](Siblings::write) refuses, with
//!   [`WriteError::TooManySiblings`] and without changing anything, a write that would leave
//!   the set with more than [`SIBLINGS_MAX`] siblings after dropping those its context
//!   covers. The way out is to resolve: read the siblings and write a value with the read's
//!   context, which drops every sibling the read returned; a write whose context covers
//!   every sibling always has room. Blind writes (an empty context) to a key in conflict
//!   are the ones that get refused.
//! - **Decoding.** A decoded set holding more than [`SIBLINGS_MAX`] siblings with dots of
//!   one node is rejected ([`InvalidSiblings::TooManySiblings`]).
//!
//! [`merge`](Siblings::merge) never refuses and never drops a value that neither side has
//! discarded: replicas only converge if merge is commutative, associative and idempotent,
//! and a merge that refused or trimmed siblings would be none of these. So a merged set can
//! hold more than [`SIBLINGS_MAX`] siblings in total, but never more than [`SIBLINGS_MAX`]
//! *per coordinating node* when every replica follows the protocol: only node `s` issues
//! dots of `s`, it issues one only when its own set, and so its own dots, fit in the limit,
//! and a merge never adds a dot of `s` that a state descending from a later state of `s`
//! has discarded. A merged set therefore always decodes, and with `n` replicas coordinating
//! writes of a key a read returns at most `n * SIBLINGS_MAX` siblings. Merging states that
//! break the protocol (a corrupt or malicious replica) is not re-checked; such a state is
//! rejected by the decoding check above when it is next sent.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::time::NodeId;
use crate::version_vector::{Dot, VersionVector};

/// The most siblings a [`write`](Siblings::write) may leave in a set, and the most siblings
/// with dots of one node a decoded set may hold: 100, Riak's default `max_siblings`. See
/// [the sibling limit](crate::dvv#the-sibling-limit).
pub const SIBLINGS_MAX: usize = 100;

/// Why [`Siblings::write`] refused a write. Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteError {
    /// The writing node's counter is at `u64::MAX`, so it has no next dot. Only a corrupt
    /// or malicious context can cause this.
    CounterOverflow {
        /// The node that was to issue the dot.
        node: NodeId,
    },
    /// After dropping the siblings the write's context covers, the set still holds
    /// `siblings_max` siblings: the key is in conflict and a write that does not resolve
    /// it is refused. Read the siblings and write with that read's context.
    TooManySiblings {
        /// The limit, [`SIBLINGS_MAX`].
        siblings_max: usize,
    },
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::CounterOverflow { node } => {
                write!(f, "version vector counter of {node} is at u64::MAX")
            }
            WriteError::TooManySiblings { siblings_max } => write!(
                f,
                "write refused: the key already has {siblings_max} siblings its context does \
                 not cover; read them and write with that read's context to resolve them"
            ),
        }
    }
}

impl std::error::Error for WriteError {}

/// The siblings (concurrent values) of one key, with their dots and a causal context: a
/// dotted version vector set.
///
/// ```
/// use synod_clocks::{NodeId, Siblings};
///
/// # fn main() -> Result<(), synod_clocks::dvv::WriteError> {
/// let server = NodeId::new(1);
/// let mut key: Siblings<&str> = Siblings::new();
///
/// // Two clients read the empty key, then both write through the same server.
/// let ctx = key.context().clone();
/// key.write(server, &ctx, "from client A")?;
/// key.write(server, &ctx, "from client B")?;
/// assert_eq!(key.len(), 2); // concurrent: both kept, not overwritten
///
/// // A third client reads both and writes a resolution with that context.
/// let ctx = key.context().clone();
/// key.write(server, &ctx, "resolved")?;
/// assert_eq!(key.values().collect::<Vec<_>>(), [&"resolved"]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "SiblingsRepr<T>")]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub struct Siblings<T> {
    /// Sorted by dot; every dot is in `context`.
    values: Vec<(Dot, T)>,
    context: VersionVector,
}

#[derive(Deserialize)]
struct SiblingsRepr<T> {
    values: Vec<(Dot, T)>,
    context: VersionVector,
}

/// A decoded sibling set broke the representation's rules.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidSiblings {
    /// Siblings were not in strictly increasing dot order.
    Unsorted {
        /// The first dot out of order.
        dot: Dot,
    },
    /// A sibling's dot is not covered by the context.
    DotOutsideContext {
        /// The dot.
        dot: Dot,
    },
    /// More than [`SIBLINGS_MAX`] siblings have dots of one node, which no set built by
    /// this type's writes and merges has.
    TooManySiblings {
        /// The node.
        node: NodeId,
        /// The limit, [`SIBLINGS_MAX`].
        siblings_max: usize,
    },
}

impl fmt::Display for InvalidSiblings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidSiblings::Unsorted { dot } => {
                write!(f, "siblings not strictly sorted at dot {dot}")
            }
            InvalidSiblings::DotOutsideContext { dot } => {
                write!(f, "sibling dot {dot} is not covered by the causal context")
            }
            InvalidSiblings::TooManySiblings { node, siblings_max } => {
                write!(f, "more than {siblings_max} siblings with dots of {node}")
            }
        }
    }
}

impl std::error::Error for InvalidSiblings {}

impl<T> TryFrom<SiblingsRepr<T>> for Siblings<T> {
    type Error = InvalidSiblings;

    /// Checks that siblings are strictly sorted by dot, that every dot is in the context,
    /// and that no node has more than [`SIBLINGS_MAX`] siblings.
    fn try_from(repr: SiblingsRepr<T>) -> Result<Self, Self::Error> {
        // Siblings of one node are adjacent (sorted by node, then counter).
        let mut run = 0;
        for (i, (dot, _)) in repr.values.iter().enumerate() {
            if i > 0 && repr.values[i - 1].0 >= *dot {
                return Err(InvalidSiblings::Unsorted { dot: *dot });
            }
            if dot.counter == 0 || !repr.context.contains(*dot) {
                return Err(InvalidSiblings::DotOutsideContext { dot: *dot });
            }
            run = if i > 0 && repr.values[i - 1].0.node == dot.node {
                run + 1
            } else {
                1
            };
            if run > SIBLINGS_MAX {
                return Err(InvalidSiblings::TooManySiblings {
                    node: dot.node,
                    siblings_max: SIBLINGS_MAX,
                });
            }
        }
        Ok(Siblings {
            values: repr.values,
            context: repr.context,
        })
    }
}

impl<T> Default for Siblings<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Siblings<T> {
    /// A key with no value and an empty context.
    pub const fn new() -> Self {
        Siblings {
            values: Vec::new(),
            context: VersionVector::new(),
        }
    }

    /// The causal context: every write this set has seen, kept or discarded. Clients pass
    /// it back with their next write.
    pub fn context(&self) -> &VersionVector {
        &self.context
    }

    /// The sibling values, in dot order.
    pub fn values(&self) -> impl Iterator<Item = &T> + '_ {
        self.values.iter().map(|(_, v)| v)
    }

    /// The siblings with their dots, in dot order.
    pub fn entries(&self) -> &[(Dot, T)] {
        &self.values
    }

    /// The number of siblings.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there is no value.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Writes `value` through server `node` on behalf of a client that read `context`.
    /// Drops every sibling the context covers and returns the new value's dot.
    ///
    /// `node` must be the server that owns this replica of the key: only it issues dots
    /// with its id.
    ///
    /// The context is trusted, as in every dotted-version-vector store: it deletes every
    /// sibling it claims to cover, and the new dot is numbered above both this replica's
    /// counter for `node` and the context's (so a replica that lost its state never
    /// reissues a dot a client has seen). A context forged with a counter near `u64::MAX`
    /// for `node` therefore exhausts `node`'s counter for this key; hand contexts to
    /// clients you do not trust only with an integrity check (a MAC) of your own.
    ///
    /// # Errors
    ///
    /// Nothing is changed on error.
    ///
    /// - [`WriteError::TooManySiblings`] if, after dropping the siblings `context` covers,
    ///   the set still holds [`SIBLINGS_MAX`] siblings (see
    ///   [the sibling limit](crate::dvv#the-sibling-limit)); a write whose context covers
    ///   every sibling (a resolution written after reading them all) always has room.
    /// - [`WriteError::CounterOverflow`] if `node`'s counter is at `u64::MAX`.
    pub fn write(
        &mut self,
        node: NodeId,
        context: &VersionVector,
        value: T,
    ) -> Result<Dot, WriteError> {
        let kept = self
            .values
            .iter()
            .filter(|(d, _)| !context.contains(*d))
            .count();
        if kept >= SIBLINGS_MAX {
            return Err(WriteError::TooManySiblings {
                siblings_max: SIBLINGS_MAX,
            });
        }
        let counter = self
            .context
            .get(node)
            .max(context.get(node))
            .checked_add(1)
            .ok_or(WriteError::CounterOverflow { node })?;
        let dot = Dot { node, counter };
        self.values.retain(|(d, _)| !context.contains(*d));
        self.context.merge(context);
        self.context.add_dot(dot);
        // The new dot is above every dot of `node` here, but dots of larger node ids may
        // follow it.
        let at = self.values.partition_point(|(d, _)| *d < dot);
        self.values.insert(at, (dot, value));
        debug_assert!(self.values.len() <= SIBLINGS_MAX);
        Ok(dot)
    }

    /// Drops the siblings that `context` covers, without writing (a delete that leaves
    /// the context, so later merges do not bring the values back).
    pub fn discard(&mut self, context: &VersionVector) {
        self.values.retain(|(d, _)| !context.contains(*d));
        self.context.merge(context);
    }
}

impl<T: Clone> Siblings<T> {
    /// Merges another replica's state of the same key: keeps each sibling that both sides
    /// have, or that one side has and the other has not seen yet.
    ///
    /// Never refuses and never drops a sibling neither side discarded, so the result may
    /// hold more than [`SIBLINGS_MAX`] siblings in total (at most [`SIBLINGS_MAX`] per
    /// coordinating node for states that follow the protocol; see
    /// [the sibling limit](crate::dvv#the-sibling-limit)).
    pub fn merge(&mut self, other: &Siblings<T>) {
        let mut out = Vec::with_capacity(self.values.len() + other.values.len());
        let (a, b) = (&self.values, &other.values);
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let take_a = j >= b.len() || (i < a.len() && a[i].0 < b[j].0);
            let take_b = i >= a.len() || (j < b.len() && b[j].0 < a[i].0);
            if take_a {
                if !other.context.contains(a[i].0) {
                    out.push(a[i].clone());
                }
                i += 1;
            } else if take_b {
                if !self.context.contains(b[j].0) {
                    out.push(b[j].clone());
                }
                j += 1;
            } else {
                // The same dot on both sides is the same write.
                out.push(a[i].clone());
                i += 1;
                j += 1;
            }
        }
        self.values = out;
        self.context.merge(&other.context);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_unseen_and_drops_discarded_siblings() {
        let (s1, s2) = (NodeId::new(1), NodeId::new(2));
        let mut a: Siblings<u32> = Siblings::new();
        a.write(s1, &VersionVector::new(), 1).unwrap();
        let mut b = a.clone();
        // On b, a client that saw value 1 overwrites it; on a, another client adds a
        // concurrent value.
        let ctx = b.context().clone();
        b.write(s2, &ctx, 2).unwrap();
        a.write(s1, &VersionVector::new(), 3).unwrap();
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab.values().copied().collect::<Vec<_>>(), vec![3, 2]);
    }

    fn dot(node: u64, counter: u64) -> Dot {
        Dot {
            node: NodeId::new(node),
            counter,
        }
    }

    #[test]
    fn a_write_past_the_limit_is_refused_and_changes_nothing() {
        let (s1, s2) = (NodeId::new(1), NodeId::new(2));
        let mut key: Siblings<usize> = Siblings::new();
        let blind = VersionVector::new();
        for i in 0..SIBLINGS_MAX {
            key.write(s1, &blind, i).unwrap();
        }
        assert_eq!(key.len(), SIBLINGS_MAX);
        let before = key.clone();
        let err = key.write(s1, &blind, 999).unwrap_err();
        assert_eq!(
            err,
            WriteError::TooManySiblings {
                siblings_max: SIBLINGS_MAX
            }
        );
        assert!(err.to_string().contains("resolve"), "{err}");
        assert_eq!(key, before, "a refused write changed the set");
        // Through another server too: the limit is on the set.
        assert!(key.write(s2, &blind, 999).is_err());
        assert_eq!(key, before);
        // A write that covers one sibling makes room for itself.
        let one = [(NodeId::new(1), 1)].into_iter().collect::<VersionVector>();
        key.write(s2, &one, 1000).unwrap();
        assert_eq!(key.len(), SIBLINGS_MAX);
        // A resolution with the read's context replaces them all.
        let ctx = key.context().clone();
        key.write(s1, &ctx, 0).unwrap();
        assert_eq!(key.values().collect::<Vec<_>>(), [&0]);
    }

    #[test]
    fn merged_sets_may_exceed_the_limit_in_total_and_still_decode() {
        // Two servers each take SIBLINGS_MAX blind writes; the merge keeps all of them
        // (dropping any would lose a write and break convergence).
        let mut a: Siblings<u64> = Siblings::new();
        let mut b: Siblings<u64> = Siblings::new();
        for i in 0..SIBLINGS_MAX as u64 {
            a.write(NodeId::new(1), &VersionVector::new(), i).unwrap();
            b.write(NodeId::new(2), &VersionVector::new(), 1_000 + i)
                .unwrap();
        }
        a.merge(&b);
        assert_eq!(a.len(), 2 * SIBLINGS_MAX);
        let bytes = postcard::to_allocvec(&a).unwrap();
        assert_eq!(postcard::from_bytes::<Siblings<u64>>(&bytes).unwrap(), a);
        // But a write that resolves nothing is refused.
        assert!(a.write(NodeId::new(1), &VersionVector::new(), 7).is_err());
    }

    #[test]
    fn decoding_rejects_more_than_the_limit_from_one_node() {
        let n = SIBLINGS_MAX as u64;
        let context: VersionVector = [(NodeId::new(1), n + 1), (NodeId::new(2), n)]
            .into_iter()
            .collect();
        let at_limit: Vec<(Dot, u8)> = (1..=n).map(|c| (dot(1, c), 0)).collect();
        let bytes = postcard::to_allocvec(&(&at_limit, &context)).unwrap();
        assert_eq!(
            postcard::from_bytes::<Siblings<u8>>(&bytes).unwrap().len(),
            SIBLINGS_MAX
        );
        let mut over = at_limit.clone();
        over.push((dot(1, n + 1), 0));
        // Other nodes' siblings do not count towards node 1's.
        over.extend((1..=n).map(|c| (dot(2, c), 0)));
        let bytes = postcard::to_allocvec(&(&over, &context)).unwrap();
        assert!(postcard::from_bytes::<Siblings<u8>>(&bytes).is_err());
        assert_eq!(
            Siblings::try_from(SiblingsRepr {
                values: over,
                context
            }),
            Err(InvalidSiblings::TooManySiblings {
                node: NodeId::new(1),
                siblings_max: SIBLINGS_MAX
            })
        );
    }

    #[test]
    fn decoding_rejects_unsorted_duplicate_and_zero_dots() {
        let context: VersionVector = [(NodeId::new(1), 5)].into_iter().collect();
        let decode = |values: Vec<(Dot, u8)>| {
            Siblings::try_from(SiblingsRepr {
                values,
                context: context.clone(),
            })
        };
        assert_eq!(
            decode(vec![(dot(1, 3), 0), (dot(1, 2), 0)]),
            Err(InvalidSiblings::Unsorted { dot: dot(1, 2) })
        );
        assert_eq!(
            decode(vec![(dot(1, 3), 0), (dot(1, 3), 1)]),
            Err(InvalidSiblings::Unsorted { dot: dot(1, 3) })
        );
        assert_eq!(
            decode(vec![(dot(1, 0), 0)]),
            Err(InvalidSiblings::DotOutsideContext { dot: dot(1, 0) })
        );
        assert_eq!(
            decode(vec![(dot(1, 2), 0), (dot(1, 5), 0)]).map(|s| s.len()),
            Ok(2)
        );
    }

    #[test]
    fn decoding_rejects_dots_outside_the_context() {
        let mut a: Siblings<u8> = Siblings::new();
        a.write(NodeId::new(1), &VersionVector::new(), 7).unwrap();
        let bytes = postcard::to_allocvec(&a).unwrap();
        assert_eq!(postcard::from_bytes::<Siblings<u8>>(&bytes).unwrap(), a);
        let bad = (
            vec![(
                Dot {
                    node: NodeId::new(1),
                    counter: 2,
                },
                7u8,
            )],
            VersionVector::new(),
        );
        let bytes = postcard::to_allocvec(&bad).unwrap();
        assert!(postcard::from_bytes::<Siblings<u8>>(&bytes).is_err());
    }
}
