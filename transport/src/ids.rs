//! Identities that cross the wire: nodes, clusters and request correlation ids.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The identity of a node: `synod-node`'s, the one every Synod crate uses (numbered from 1;
/// a zero on the wire is refused). Unique within a cluster; a node keeps it across restarts.
///
/// When two nodes both know each other's address, the node with the **higher** id dials
/// (see [`TcpTransport`](crate::TcpTransport)), so that a pair of nodes has one connection.
pub use synod_node::NodeId;

/// The identity of a cluster. Checked at the handshake so that a node of one cluster never
/// talks to a node of another (for example after an address was reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterId(pub u64);

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cluster {}", self.0)
    }
}

/// Matches a response to its request on one connection (the Request Pipeline's key).
///
/// Assigned by the sender of a request, unique among its requests in flight to one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CorrelationId(pub u64);

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}
