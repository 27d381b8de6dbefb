//! The identity of a node, [`NodeId`] (shared with `synod-clocks`), and of one of its
//! starts, [`Incarnation`].
//!
//! Quorums count nodes, so they need a name for one. The project has one node identity,
//! defined by `synod-clocks` (hybrid timestamps and version vectors carry it too) and
//! re-exported here so that users of this crate, such as `synod-consensus`, need not depend
//! on `synod-clocks` for it. It is a newtype over `u64` (`NodeId::new(7)`, `get()`,
//! ordered, shown as `n7`): the caller chooses the numbers and this crate only compares
//! them.
//!
//! A node that restarts keeps its [`NodeId`] but forgets what it was doing, while answers
//! to its earlier operations may still be in the network. The protocols here name their
//! operations by the node's [`Incarnation`] and a counter, so those answers are never taken
//! for answers to new operations.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use synod_clocks::NodeId;

/// Which start of a node this is: a number the node has never used before.
///
/// The [`Coordinator`](crate::Coordinator) and the [`AbdNode`](crate::AbdNode) name every
/// operation by their incarnation and a counter that starts at 0 on every start. A node
/// that restarts with the incarnation of an earlier life hands out the same operation
/// names again, and a reply delayed in the network from before the restart is then counted
/// for the new operation of the same name: a read can miss a completed write, or take
/// another key's state. So every start needs a new incarnation, which is why it is a
/// required argument of both configurations and this type has no default.
///
/// Where it comes from: a counter persisted (and synced) before the node serves, such as a
/// `synod_clocks::Generation` kept in a `synod_clocks::GenerationStore`
/// (`Incarnation::from(generation)`), or a number that cannot repeat in practice (a random
/// 64-bit value, or the wall clock in nanoseconds at start on a machine whose clock never
/// goes back).
///
/// ```
/// use synod_clocks::Generation;
/// use synod_quorum::Incarnation;
///
/// let restarted = Generation::new(7).next().expect("not exhausted");
/// assert_eq!(Incarnation::from(restarted), Incarnation::new(8));
/// ```
///
/// It cannot be left out or defaulted:
///
/// ```compile_fail
/// let forgotten: synod_quorum::Incarnation = Default::default();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Incarnation(u64);

impl Incarnation {
    /// The incarnation with this number.
    #[must_use]
    pub const fn new(number: u64) -> Self {
        Self(number)
    }

    /// Its number.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<synod_clocks::Generation> for Incarnation {
    fn from(generation: synod_clocks::Generation) -> Self {
        Self(generation.get())
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "incarnation {}", self.0)
    }
}
