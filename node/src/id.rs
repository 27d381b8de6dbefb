//! Identities: the node a state machine runs on, and the client request a reply answers.

use std::fmt;
use std::num::NonZeroU64;

use serde::{Deserialize, Serialize};

/// The identity of a node: one number, the same in every Synod crate, in the simulator and
/// in a real cluster.
///
/// Nodes are numbered from 1. Zero names no node, and there is no way to build a `NodeId`
/// from it: [`NodeId::new`] panics on 0, [`NodeId::try_new`] returns `None`, and
/// deserializing a zero fails. So no driver adds or subtracts 1 to translate between
/// numberings, and no value reserved for "unset" can be mistaken for a real node. Use
/// `Option<NodeId>` where a node may be absent; it is the same size as a `u64`.
///
/// ```
/// use synod_node::NodeId;
///
/// let n = NodeId::new(3);
/// assert_eq!(n.get(), 3);
/// assert_eq!(n.to_string(), "n3");
/// assert_eq!(NodeId::try_new(0), None);
/// assert_eq!(std::mem::size_of::<Option<NodeId>>(), 8);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(NonZeroU64);

impl NodeId {
    /// The node numbered `id`.
    ///
    /// # Panics
    ///
    /// If `id` is 0. Use [`NodeId::try_new`] for a number that came from outside the
    /// program (a command line, a file, a message).
    #[must_use]
    pub const fn new(id: u64) -> NodeId {
        match NonZeroU64::new(id) {
            Some(id) => NodeId(id),
            None => panic!("node ids start at 1: 0 names no node"),
        }
    }

    /// The node numbered `id`, or `None` if `id` is 0.
    #[must_use]
    pub const fn try_new(id: u64) -> Option<NodeId> {
        match NonZeroU64::new(id) {
            Some(id) => Some(NodeId(id)),
            None => None,
        }
    }

    /// The node's number, at least 1.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0.get()
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

impl From<NodeId> for u64 {
    fn from(id: NodeId) -> u64 {
        id.get()
    }
}

impl From<NonZeroU64> for NodeId {
    fn from(id: NonZeroU64) -> NodeId {
        NodeId(id)
    }
}

/// The driver's name for one client request, handed to the state machine with the request
/// and handed back, unchanged, with the reply.
///
/// The number means nothing to the state machine: the driver chooses it (a simulator counts
/// requests; a server numbers them per connection) and uses it to route the reply. A state
/// machine must not reply twice to one id, nor invent ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_no_node_in_every_constructor() {
        assert_eq!(NodeId::try_new(0), None);
        assert_eq!(NodeId::try_new(u64::MAX).map(NodeId::get), Some(u64::MAX));
        assert!(std::panic::catch_unwind(|| NodeId::new(0)).is_err());
    }

    #[test]
    fn a_zero_from_the_wire_is_refused() {
        let zero = postcard::to_stdvec(&0u64).unwrap();
        assert!(postcard::from_bytes::<NodeId>(&zero).is_err());
        let seven = postcard::to_stdvec(&NodeId::new(7)).unwrap();
        assert_eq!(seven, postcard::to_stdvec(&7u64).unwrap());
        assert_eq!(
            postcard::from_bytes::<NodeId>(&seven).unwrap(),
            NodeId::new(7)
        );
    }
}
