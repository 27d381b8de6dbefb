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
//! The number of siblings is bounded by the number of writes that were truly concurrent;
//! this type does not cap it (a store that wants a cap resolves siblings on read, for
//! example by the largest [`HybridTimestamp`](crate::HybridTimestamp)).

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::time::NodeId;
use crate::version_vector::{CounterOverflow, Dot, VersionVector};

/// The siblings (concurrent values) of one key, with their dots and a causal context: a
/// dotted version vector set.
///
/// ```
/// use synod_clocks::{NodeId, Siblings};
///
/// # fn main() -> Result<(), synod_clocks::CounterOverflow> {
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
        }
    }
}

impl std::error::Error for InvalidSiblings {}

impl<T> TryFrom<SiblingsRepr<T>> for Siblings<T> {
    type Error = InvalidSiblings;

    fn try_from(repr: SiblingsRepr<T>) -> Result<Self, Self::Error> {
        for (i, (dot, _)) in repr.values.iter().enumerate() {
            if i > 0 && repr.values[i - 1].0 >= *dot {
                return Err(InvalidSiblings::Unsorted { dot: *dot });
            }
            if dot.counter == 0 || !repr.context.contains(*dot) {
                return Err(InvalidSiblings::DotOutsideContext { dot: *dot });
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
    /// # Errors
    ///
    /// [`CounterOverflow`] if `node`'s counter is at `u64::MAX`; nothing is changed.
    pub fn write(
        &mut self,
        node: NodeId,
        context: &VersionVector,
        value: T,
    ) -> Result<Dot, CounterOverflow> {
        let counter = self
            .context
            .get(node)
            .max(context.get(node))
            .checked_add(1)
            .ok_or(CounterOverflow { node })?;
        let dot = Dot { node, counter };
        self.values.retain(|(d, _)| !context.contains(*d));
        self.context.merge(context);
        self.context.add_dot(dot);
        // The new dot is above every dot of `node` here, but dots of larger node ids may
        // follow it.
        let at = self.values.partition_point(|(d, _)| *d < dot);
        self.values.insert(at, (dot, value));
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
