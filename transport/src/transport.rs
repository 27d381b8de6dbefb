//! The small [`Transport`] trait that Synod's nodes are written against, and an in-process
//! implementation for tests.
//!
//! The trait is message-oriented and has no threads or blocking in its signature: a node
//! sends messages and, when its driver tells it to, takes what arrived. That is all a
//! protocol state machine needs from a network, so the same node code runs over
//! [`TcpTransport`](crate::TcpTransport), over [`InProcessNetwork`] in a test, and over the
//! simulator's network in `synod-sim`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::error::SendError;
use crate::ids::{CorrelationId, NodeId};

/// What a node needs from a network.
///
/// Delivery is at most once and, between one pair of nodes, in order; a message may be
/// lost (for example when a connection drops). Nothing here blocks.
pub trait Transport {
    /// The node this endpoint belongs to.
    fn local_id(&self) -> NodeId;

    /// Queues a one-way message to `to`.
    ///
    /// # Errors
    ///
    /// A [`SendError`] when the message cannot be queued; it was not sent.
    fn send(&mut self, to: NodeId, payload: Bytes) -> Result<(), SendError>;

    /// The next message that arrived, if any.
    fn try_recv(&mut self) -> Option<Incoming>;
}

/// A message that arrived: who sent it, its bytes, and for a request the correlation id
/// to answer it with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    from: NodeId,
    payload: Bytes,
    correlation: Option<CorrelationId>,
    /// Whether the handler is handed more messages of the same read right after this one.
    more: bool,
}

impl Incoming {
    /// A one-way message (as a simulator or a test delivers it).
    pub fn message(from: NodeId, payload: Bytes) -> Self {
        Incoming {
            from,
            payload,
            correlation: None,
            more: false,
        }
    }

    pub(crate) fn new(from: NodeId, payload: Bytes, correlation: Option<CorrelationId>) -> Self {
        Incoming {
            from,
            payload,
            correlation,
            more: false,
        }
    }

    /// The same message, saying whether more of the same read follow it.
    pub(crate) fn with_more(mut self, more: bool) -> Self {
        self.more = more;
        self
    }

    /// The sender.
    pub fn from(&self) -> NodeId {
        self.from
    }

    /// The application's bytes.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Takes the bytes.
    pub fn into_payload(self) -> Bytes {
        self.payload
    }

    /// The correlation id to respond with, for a request; `None` for a one-way message.
    pub fn correlation(&self) -> Option<CorrelationId> {
        self.correlation
    }

    /// Whether the sender waits for a response.
    pub fn is_request(&self) -> bool {
        self.correlation.is_some()
    }

    /// Whether a handler ([`TcpTransport::bind_with_handler`](crate::TcpTransport)) is
    /// handed more messages right after this one, from the same read of the same
    /// connection, on the same thread: a handler may then hold work back until the last
    /// (one sync for every entry of the read, say). `false` for the last message of a read,
    /// and for every message taken from an inbound queue.
    pub fn more_follow(&self) -> bool {
        self.more
    }
}

#[derive(Debug, Default)]
struct Hub {
    inboxes: BTreeMap<NodeId, VecDeque<Incoming>>,
    /// Pairs `(from, to)` whose messages are dropped.
    cut: std::collections::BTreeSet<(NodeId, NodeId)>,
}

/// An in-process network of [`InProcessTransport`] endpoints, for tests: messages go
/// straight into the receiver's bounded inbox, in order. Links can be cut and healed.
///
/// ```
/// use bytes::Bytes;
/// use synod_transport::{InProcessNetwork, NodeId, Transport};
///
/// let net = InProcessNetwork::new(16);
/// let mut a = net.endpoint(NodeId::new(1));
/// let mut b = net.endpoint(NodeId::new(2));
/// a.send(NodeId::new(2), Bytes::from_static(b"ping"))?;
/// let got = b.try_recv().expect("delivered");
/// assert_eq!((got.from(), &got.payload()[..]), (NodeId::new(1), &b"ping"[..]));
/// # Ok::<(), synod_transport::SendError>(())
/// ```
#[derive(Clone, Debug)]
pub struct InProcessNetwork {
    hub: Arc<Mutex<Hub>>,
    inbox_messages_max: usize,
}

impl InProcessNetwork {
    /// A network whose inboxes hold at most `inbox_messages_max` messages each.
    ///
    /// # Panics
    ///
    /// If `inbox_messages_max` is zero.
    pub fn new(inbox_messages_max: usize) -> Self {
        assert!(
            inbox_messages_max > 0,
            "inbox_messages_max must be at least 1"
        );
        InProcessNetwork {
            hub: Arc::new(Mutex::new(Hub::default())),
            inbox_messages_max,
        }
    }

    /// The endpoint of node `node`, created on first use.
    pub fn endpoint(&self, node: NodeId) -> InProcessTransport {
        self.hub.lock().inboxes.entry(node).or_default();
        InProcessTransport {
            node,
            network: self.clone(),
        }
    }

    /// Drops messages from `from` to `to` until [`heal`](Self::heal).
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.hub.lock().cut.insert((from, to));
    }

    /// Restores every cut link.
    pub fn heal(&self) {
        self.hub.lock().cut.clear();
    }
}

/// One node's endpoint on an [`InProcessNetwork`].
#[derive(Debug)]
pub struct InProcessTransport {
    node: NodeId,
    network: InProcessNetwork,
}

impl Transport for InProcessTransport {
    fn local_id(&self) -> NodeId {
        self.node
    }

    fn send(&mut self, to: NodeId, payload: Bytes) -> Result<(), SendError> {
        let mut hub = self.network.hub.lock();
        if hub.cut.contains(&(self.node, to)) {
            return Ok(());
        }
        let inbox = hub.inboxes.get_mut(&to).ok_or(SendError::UnknownPeer(to))?;
        if inbox.len() >= self.network.inbox_messages_max {
            return Err(SendError::QueueFull { peer: to });
        }
        inbox.push_back(Incoming::message(self.node, payload));
        Ok(())
    }

    fn try_recv(&mut self) -> Option<Incoming> {
        self.network
            .hub
            .lock()
            .inboxes
            .get_mut(&self.node)
            .and_then(VecDeque::pop_front)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_inbox_unknown_peer_and_cut_links() {
        let net = InProcessNetwork::new(2);
        let mut a = net.endpoint(NodeId::new(1));
        let mut b = net.endpoint(NodeId::new(2));
        let m = || Bytes::from_static(b"m");
        assert_eq!(
            a.send(NodeId::new(9), m()),
            Err(SendError::UnknownPeer(NodeId::new(9)))
        );
        a.send(NodeId::new(2), m()).unwrap();
        a.send(NodeId::new(2), m()).unwrap();
        assert_eq!(
            a.send(NodeId::new(2), m()),
            Err(SendError::QueueFull {
                peer: NodeId::new(2)
            })
        );
        assert!(b.try_recv().is_some() && b.try_recv().is_some() && b.try_recv().is_none());
        net.cut(NodeId::new(1), NodeId::new(2));
        a.send(NodeId::new(2), m()).unwrap();
        assert!(b.try_recv().is_none());
        net.heal();
        b.send(NodeId::new(1), m()).unwrap();
        assert_eq!(a.try_recv().map(|i| i.from()), Some(NodeId::new(2)));
    }
}
