//! The handshake that opens every connection: who is talking, in which cluster.
//!
//! The dialer sends a *hello* frame; the acceptor answers with a *welcome* frame or a
//! *reject* frame and closes. Both sides check what they receive, so a mismatch is refused
//! with a clear [`HandshakeError`] on both ends, never turned into silently misrouted
//! messages. Payloads are postcard-encoded:
//!
//! - hello: `protocol` (varint `u16`, currently 1), `cluster` (varint `u64`), `from` and
//!   `to` (varint `u64`: the dialer and the node it means to reach);
//! - welcome: `cluster`, `node` (the acceptor);
//! - reject: a [`RejectReason`] (varint variant index, then its fields).
//!
//! The logic here does no I/O; [`TcpTransport`](crate::TcpTransport) performs the exchange.
//! What each side makes of the frame it receives is public ([`decode_hello`] and
//! [`check_hello`] for the acceptor, [`decode_answer`] for the dialer), so that the exact
//! code a connection runs on a peer's bytes can be fuzzed and tested without a socket:
//!
//! ```
//! use synod_transport::frame::{FrameDecoder, FrameKind, encode_frame};
//! use synod_transport::handshake::{self, HANDSHAKE_BYTES_MAX};
//! use synod_transport::{ClusterId, NodeId};
//!
//! // Bytes from a dialer that are not a hello are refused, whatever they hold.
//! let mut wire = Vec::new();
//! encode_frame(FrameKind::KeepAlive, &[], HANDSHAKE_BYTES_MAX, &mut wire)?;
//! let mut decoder = FrameDecoder::new(HANDSHAKE_BYTES_MAX);
//! decoder.extend(&wire);
//! let frame = decoder.next_frame()?.expect("a whole frame");
//! assert!(handshake::decode_hello(&frame).is_err());
//! assert!(handshake::decode_answer(&frame, ClusterId(1), NodeId::new(2)).is_err());
//! # Ok::<(), synod_transport::frame::FrameError>(())
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::frame::{Frame, FrameError, FrameKind, encode_frame};
use crate::ids::{ClusterId, NodeId};

/// The handshake protocol version carried in a hello.
pub const PROTOCOL: u16 = 1;
/// Handshake payloads are tiny; anything longer is refused.
pub const HANDSHAKE_BYTES_MAX: usize = 256;

/// The dialer's opening frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The handshake protocol version, [`PROTOCOL`].
    pub protocol: u16,
    /// The dialer's cluster.
    pub cluster: ClusterId,
    /// The dialer.
    pub from: NodeId,
    /// The node the dialer means to reach.
    pub to: NodeId,
}

/// The acceptor's answer when it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The acceptor's cluster.
    pub cluster: ClusterId,
    /// The acceptor.
    pub node: NodeId,
}

/// Why an acceptor refused a connection; sent to the dialer in a reject frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RejectReason {
    /// The two nodes belong to different clusters.
    WrongCluster {
        /// The acceptor's cluster.
        expected: ClusterId,
        /// The dialer's cluster.
        got: ClusterId,
    },
    /// The dialer meant to reach another node (an address now used by someone else).
    WrongNode {
        /// The acceptor.
        expected: NodeId,
        /// The node the dialer meant to reach.
        got: NodeId,
    },
    /// The dialer claims the acceptor's own id.
    SameNode,
    /// The acceptor dials this node itself (it has the higher id and knows the address):
    /// accepting would make a second connection between the pair.
    WrongDirection,
    /// The acceptor is at its `connections_max`.
    ConnectionLimit {
        /// The limit in force.
        max: usize,
    },
    /// The dialer speaks a handshake protocol the acceptor does not.
    UnsupportedProtocol {
        /// The version the dialer sent.
        got: u16,
    },
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::WrongCluster { expected, got } => write!(
                f,
                "wrong cluster id: the acceptor is in {expected}, the dialer in {got}"
            ),
            RejectReason::WrongNode { expected, got } => write!(
                f,
                "wrong node id: the acceptor is {expected}, the dialer meant {got}"
            ),
            RejectReason::SameNode => write!(f, "the dialer claims the acceptor's own node id"),
            RejectReason::WrongDirection => write!(
                f,
                "wrong direction: the acceptor has the higher id and dials this node itself"
            ),
            RejectReason::ConnectionLimit { max } => {
                write!(f, "connection limit of {max} reached")
            }
            RejectReason::UnsupportedProtocol { got } => write!(
                f,
                "unsupported handshake protocol {got} (the acceptor speaks {PROTOCOL})"
            ),
        }
    }
}

/// A handshake that failed, on either side.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// This side (the acceptor) refused the dialer, and told it why.
    Refused(RejectReason),
    /// The other side (the acceptor) refused this dialer, for the reason given.
    RejectedByPeer(RejectReason),
    /// The acceptor answered but is not who this dialer expected.
    UnexpectedPeer {
        /// The cluster and node this side expected.
        expected: (ClusterId, NodeId),
        /// The cluster and node that answered.
        got: (ClusterId, NodeId),
    },
    /// The bytes received are not a handshake.
    Malformed(FrameError),
    /// The peer did not complete the handshake in time or closed the connection.
    Incomplete,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Refused(reason) => write!(f, "handshake refused: {reason}"),
            HandshakeError::RejectedByPeer(reason) => {
                write!(f, "handshake rejected by the peer: {reason}")
            }
            HandshakeError::UnexpectedPeer { expected, got } => write!(
                f,
                "handshake answered by {} in {}, expected {} in {}",
                got.1, got.0, expected.1, expected.0
            ),
            HandshakeError::Malformed(err) => write!(f, "malformed handshake: {err}"),
            HandshakeError::Incomplete => {
                write!(f, "handshake not completed: the peer closed or timed out")
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

/// Encodes a handshake frame (hello, welcome or reject) into `out`.
pub(crate) fn encode<T: Serialize>(kind: FrameKind, value: &T, out: &mut Vec<u8>) {
    let payload = postcard::to_allocvec(value).expect("handshake values serialize");
    encode_frame(kind, &payload, HANDSHAKE_BYTES_MAX, out).expect("handshake payloads are small");
}

/// Decodes a handshake payload.
fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, HandshakeError> {
    postcard::from_bytes(payload).map_err(|_| malformed())
}

fn malformed() -> HandshakeError {
    HandshakeError::Malformed(FrameError::BadHandshake)
}

/// The acceptor's reading of the first frame a dialer sends (read with a
/// [`FrameDecoder`](crate::frame::FrameDecoder) limited to [`HANDSHAKE_BYTES_MAX`]): the
/// hello it carries. Whether to accept that hello is [`check_hello`]'s decision.
///
/// # Errors
///
/// [`HandshakeError::Malformed`] for a frame of another kind, a payload over
/// [`HANDSHAKE_BYTES_MAX`], or one that does not decode as a [`Hello`].
pub fn decode_hello(frame: &Frame) -> Result<Hello, HandshakeError> {
    if frame.kind != FrameKind::Hello || frame.payload.len() > HANDSHAKE_BYTES_MAX {
        return Err(malformed());
    }
    decode(&frame.payload)
}

/// The dialer's reading of the acceptor's answer to a hello sent to node `peer` of
/// `cluster`: the welcome, if the acceptor is that node.
///
/// # Errors
///
/// [`HandshakeError::RejectedByPeer`] for a reject frame, with its reason;
/// [`HandshakeError::UnexpectedPeer`] for a welcome from another cluster or node;
/// [`HandshakeError::Malformed`] for a frame of another kind, or a payload that does not
/// decode.
pub fn decode_answer(
    frame: &Frame,
    cluster: ClusterId,
    peer: NodeId,
) -> Result<Welcome, HandshakeError> {
    if frame.payload.len() > HANDSHAKE_BYTES_MAX {
        return Err(malformed());
    }
    match frame.kind {
        FrameKind::Welcome => {
            let welcome: Welcome = decode(&frame.payload)?;
            if welcome.cluster != cluster || welcome.node != peer {
                return Err(HandshakeError::UnexpectedPeer {
                    expected: (cluster, peer),
                    got: (welcome.cluster, welcome.node),
                });
            }
            Ok(welcome)
        }
        FrameKind::Reject => Err(HandshakeError::RejectedByPeer(decode(&frame.payload)?)),
        _ => Err(malformed()),
    }
}

/// The acceptor's decision on a hello from a peer: this node is `node` of `cluster`;
/// `dials` says whether it dials `hello.from` itself; `at_limit` gives the connection limit
/// when it is reached.
///
/// # Errors
///
/// The [`RejectReason`] to send back.
pub fn check_hello(
    hello: &Hello,
    cluster: ClusterId,
    node: NodeId,
    dials: bool,
    at_limit: Option<usize>,
) -> Result<(), RejectReason> {
    if hello.protocol != PROTOCOL {
        return Err(RejectReason::UnsupportedProtocol {
            got: hello.protocol,
        });
    }
    if hello.cluster != cluster {
        return Err(RejectReason::WrongCluster {
            expected: cluster,
            got: hello.cluster,
        });
    }
    if hello.to != node {
        return Err(RejectReason::WrongNode {
            expected: node,
            got: hello.to,
        });
    }
    if hello.from == node {
        return Err(RejectReason::SameNode);
    }
    if dials {
        return Err(RejectReason::WrongDirection);
    }
    if let Some(max) = at_limit {
        return Err(RejectReason::ConnectionLimit { max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            protocol: PROTOCOL,
            cluster: ClusterId(7),
            from: NodeId::new(2),
            to: NodeId::new(1),
        }
    }

    #[test]
    fn acceptor_checks_each_field() {
        let (c, n) = (ClusterId(7), NodeId::new(1));
        assert_eq!(check_hello(&hello(), c, n, false, None), Ok(()));
        assert_eq!(
            check_hello(&hello(), ClusterId(8), n, false, None),
            Err(RejectReason::WrongCluster {
                expected: ClusterId(8),
                got: ClusterId(7)
            })
        );
        assert!(matches!(
            check_hello(&hello(), c, NodeId::new(3), false, None),
            Err(RejectReason::WrongNode { .. })
        ));
        assert_eq!(
            check_hello(&hello(), c, NodeId::new(2), false, None),
            Err(RejectReason::WrongNode {
                expected: NodeId::new(2),
                got: NodeId::new(1)
            })
        );
        let mut same = hello();
        same.from = NodeId::new(1);
        assert_eq!(
            check_hello(&same, c, n, false, None),
            Err(RejectReason::SameNode)
        );
        assert_eq!(
            check_hello(&hello(), c, n, true, None),
            Err(RejectReason::WrongDirection)
        );
        assert_eq!(
            check_hello(&hello(), c, n, false, Some(4)),
            Err(RejectReason::ConnectionLimit { max: 4 })
        );
        let mut old = hello();
        old.protocol = 9;
        assert!(matches!(
            check_hello(&old, c, n, false, None),
            Err(RejectReason::UnsupportedProtocol { got: 9 })
        ));
    }

    #[test]
    fn reasons_read_clearly() {
        let text = RejectReason::WrongCluster {
            expected: ClusterId(1),
            got: ClusterId(2),
        }
        .to_string();
        assert_eq!(
            text,
            "wrong cluster id: the acceptor is in cluster 1, the dialer in cluster 2"
        );
    }
}
