//! Errors of sending, requesting, and of losing a connection.

use std::fmt;
use std::time::Duration;

use crate::frame::FrameError;
use crate::handshake::HandshakeError;
use crate::ids::NodeId;

/// Why a connection ended (or could not be made).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disconnect {
    /// The peer closed the connection (end of stream).
    PeerClosed,
    /// The stream ended inside a frame: a reset or truncation mid-frame. Nothing of the
    /// partial frame was delivered.
    TruncatedFrame {
        /// Bytes of the unfinished frame that were discarded.
        bytes: usize,
    },
    /// Nothing arrived for `keepalive_timeout_ms`: the peer is dead or silent.
    KeepAliveTimeout {
        /// The bound that passed.
        silent_ms: u64,
    },
    /// A write made no progress for `keepalive_timeout_ms`: the peer stopped reading.
    WriteStalled {
        /// The bound that passed.
        stalled_ms: u64,
    },
    /// No message either way for `idle_timeout_ms` (accepted connections only).
    IdleTimeout {
        /// The bound that passed.
        idle_ms: u64,
    },
    /// The peer sent bytes that are not valid framing; only this connection was closed.
    Protocol(FrameError),
    /// The handshake failed.
    Handshake(HandshakeError),
    /// The [`StreamLayer`](crate::StreamLayer) refused the connection (a TLS handshake
    /// failed: a certificate from another authority, or bytes that are not TLS).
    Layer {
        /// The error kind.
        kind: std::io::ErrorKind,
        /// The layer's explanation.
        message: String,
    },
    /// A socket error.
    Io {
        /// The error kind.
        kind: std::io::ErrorKind,
        /// The error text.
        message: String,
    },
    /// The same peer connected again; the old connection was closed.
    Replaced,
    /// This transport is shutting down.
    Shutdown,
}

impl Disconnect {
    pub(crate) fn layer(err: &std::io::Error) -> Self {
        Disconnect::Layer {
            kind: err.kind(),
            message: err.to_string(),
        }
    }

    pub(crate) fn io(err: &std::io::Error) -> Self {
        Disconnect::Io {
            kind: err.kind(),
            message: err.to_string(),
        }
    }
}

impl fmt::Display for Disconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disconnect::PeerClosed => write!(f, "the peer closed the connection"),
            Disconnect::TruncatedFrame { bytes } => write!(
                f,
                "the connection ended mid-frame; {bytes} bytes of a partial frame discarded"
            ),
            Disconnect::KeepAliveTimeout { silent_ms } => write!(
                f,
                "the peer sent nothing for {silent_ms} ms (keep-alive timeout): dead or silent"
            ),
            Disconnect::WriteStalled { stalled_ms } => write!(
                f,
                "a write made no progress for {stalled_ms} ms: the peer stopped reading"
            ),
            Disconnect::IdleTimeout { idle_ms } => {
                write!(f, "no message for {idle_ms} ms (idle timeout)")
            }
            Disconnect::Protocol(err) => write!(f, "protocol error: {err}"),
            Disconnect::Handshake(err) => write!(f, "{err}"),
            Disconnect::Layer { message, .. } => {
                write!(f, "refused by the stream layer: {message}")
            }
            Disconnect::Io { message, .. } => write!(f, "socket error: {message}"),
            Disconnect::Replaced => write!(f, "replaced by a newer connection from the same peer"),
            Disconnect::Shutdown => write!(f, "the transport is shutting down"),
        }
    }
}

impl std::error::Error for Disconnect {}

/// Why a message could not be queued for sending.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The outbound queue is full and the overflow policy is `FailFast`.
    QueueFull {
        /// The peer.
        peer: NodeId,
    },
    /// The payload is larger than one message may be.
    TooLarge {
        /// The payload length.
        len: usize,
        /// The limit ([`Config::payload_bytes_max`](crate::Config::payload_bytes_max)).
        max: usize,
    },
    /// No connection to the peer now, and none is being made from this side (the peer
    /// dials this node, or its address is unknown).
    NotConnected {
        /// The peer.
        peer: NodeId,
        /// Why the last connection ended, if there was one.
        last: Option<Disconnect>,
    },
    /// The connection was lost while the message waited in the queue.
    ConnectionLost {
        /// The peer.
        peer: NodeId,
        /// Why.
        reason: Disconnect,
    },
    /// No such peer (in-process transport).
    UnknownPeer(NodeId),
    /// A response to something that is not a request (a one-way message has no
    /// correlation id to answer).
    NotARequest,
    /// The transport is shut down.
    Shutdown,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::QueueFull { peer } => write!(f, "outbound queue to {peer} is full"),
            SendError::TooLarge { len, max } => {
                write!(f, "payload of {len} bytes exceeds the limit of {max} bytes")
            }
            SendError::NotConnected { peer, last: None } => write!(f, "not connected to {peer}"),
            SendError::NotConnected {
                peer,
                last: Some(why),
            } => write!(f, "not connected to {peer} (last connection: {why})"),
            SendError::ConnectionLost { peer, reason } => {
                write!(f, "connection to {peer} lost: {reason}")
            }
            SendError::UnknownPeer(peer) => write!(f, "unknown peer {peer}"),
            SendError::NotARequest => write!(f, "only a request can be responded to"),
            SendError::Shutdown => write!(f, "the transport is shut down"),
        }
    }
}

impl std::error::Error for SendError {}

/// Why [`TcpTransport::send_batch`](crate::TcpTransport::send_batch) stopped part-way:
/// the error, and how many of the batch's messages were queued before it. Those, the first
/// `queued` payloads of the batch, go out in order as if the call had been made with them
/// alone; the rest were not queued and will not be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchSendError {
    /// How many payloads, from the start of the batch, were queued (0 when a payload too
    /// large, an unknown peer or a closed transport refused the whole batch).
    pub queued: usize,
    /// Why the payload after those was not queued.
    pub error: SendError,
}

impl fmt::Display for BatchSendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (the first {} messages of the batch were queued, the rest not)",
            self.error, self.queued
        )
    }
}

impl std::error::Error for BatchSendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<SendError> for BatchSendError {
    /// An error that refused the whole batch: nothing was queued.
    fn from(error: SendError) -> Self {
        BatchSendError { queued: 0, error }
    }
}

/// Why a request got no response.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// The request could not be sent.
    Send(SendError),
    /// `in_flight_max` requests are already waiting and the overflow policy is `FailFast`.
    InFlightFull {
        /// The peer.
        peer: NodeId,
        /// The limit.
        max: usize,
    },
    /// The deadline passed without a response.
    Timeout {
        /// The peer.
        peer: NodeId,
        /// The time allowed.
        after: Duration,
    },
    /// The connection was lost before the response arrived; the request may or may not
    /// have been processed by the peer.
    ConnectionLost {
        /// The peer.
        peer: NodeId,
        /// Why.
        reason: Disconnect,
    },
    /// The transport shut down.
    Shutdown,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Send(err) => write!(f, "request not sent: {err}"),
            RequestError::InFlightFull { peer, max } => {
                write!(f, "{max} requests already in flight to {peer}")
            }
            RequestError::Timeout { peer, after } => {
                write!(f, "no response from {peer} within {after:?}")
            }
            RequestError::ConnectionLost { peer, reason } => {
                write!(f, "connection to {peer} lost before the response: {reason}")
            }
            RequestError::Shutdown => write!(f, "the transport shut down"),
        }
    }
}

impl std::error::Error for RequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RequestError::Send(err) => Some(err),
            RequestError::ConnectionLost { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

impl From<SendError> for RequestError {
    fn from(err: SendError) -> Self {
        match err {
            SendError::ConnectionLost { peer, reason } => {
                RequestError::ConnectionLost { peer, reason }
            }
            SendError::Shutdown => RequestError::Shutdown,
            other => RequestError::Send(other),
        }
    }
}
