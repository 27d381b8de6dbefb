//! The identity of a node: [`NodeId`].
//!
//! Quorums count nodes, so they need a name for one. `synod-clocks` is adding its own
//! `NodeId` (for hybrid timestamps and version vectors) with the same interface (`new`,
//! `get`, ordered, `Display` as `n7`); once it lands this module becomes a re-export of it,
//! so that the whole project has one node identity. Until then it lives here. The caller
//! chooses the numbers (a configured id, a hash of an address); this crate only compares
//! them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The identity of a node (a replica, a voter, an acceptor).
///
/// A newtype rather than a bare `u64` so that an id is never passed where an index or a
/// count is expected. Ordered, so that collections of ids iterate deterministically. The
/// default is node 0.
///
/// ```
/// use synod_quorum::NodeId;
///
/// let n = NodeId::new(7);
/// assert_eq!(n.get(), 7);
/// assert_eq!(n.to_string(), "n7");
/// assert!(NodeId::new(1) < n);
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(u64);

impl NodeId {
    /// The node with this number.
    #[must_use]
    pub const fn new(id: u64) -> Self {
        Self(id)
    }

    /// The number of this node.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}
