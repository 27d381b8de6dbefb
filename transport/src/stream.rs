//! The hook for wrapping each peer connection's socket, so that something this crate does
//! not implement (TLS, above all) can run underneath the transport's framing:
//! [`StreamLayer`], which turns a freshly connected socket into a [`Stream`].
//!
//! This crate depends on no TLS library; a program that wants encrypted, mutually
//! authenticated peer connections implements [`StreamLayer`] with one (Synod's `synod`
//! program does, with rustls) and binds its transport with
//! [`TcpTransport::bind_layered`](crate::TcpTransport::bind_layered).
//!
//! # When the layer runs
//!
//! On every socket, before the transport's own handshake: [`StreamLayer::accepted`] on the
//! connection's own thread (never the accepting one, so a slow peer delays no other), and
//! [`StreamLayer::dialed`] on the dialing thread. Both are given the connection's handshake
//! deadline (`connect_timeout_ms` from the accept or the connect), which bounds the layer's
//! handshake and the transport's together: a layer must end its own (a TLS handshake) by it
//! however slowly the peer sends, setting the socket's timeouts to the time left before each
//! read and write rather than waiting a whole timeout per read, and should bound its bytes.
//! A layer that refuses a peer returns an error: the socket is closed, the transport's
//! handshake never starts, and the refusal is counted and listed in
//! [`TcpTransport::recent_events`](crate::TcpTransport::recent_events) as
//! [`Disconnect::Layer`](crate::Disconnect::Layer) with the peer's address.
//!
//! A layer that learns who its peer is (a TLS client certificate) ties that to the id the
//! peer claims in its hello with [`Stream::check_peer`], which the accepting side calls
//! before it answers the hello: a peer refused there is closed and listed the same way.
//!
//! # How the transport uses a stream
//!
//! A connection's reader thread calls [`Stream::read`] while other threads call
//! [`Stream::write`], so a stream is shared (`&self`) and must be correct under that: one
//! reader at a time and one writer at a time, the two concurrently. The socket under it
//! ([`Stream::socket`]) is used for timeouts, `TCP_NODELAY`, the peer's address and
//! `shutdown`; its write timeout is short ([`INLINE_WRITE_WAIT`](crate::INLINE_WRITE_WAIT)),
//! so a write may fail with `WouldBlock` or `TimedOut` when the peer's buffer is full.
//! After such a failure, the transport's next write on the stream always starts with the
//! same bytes (as OpenSSL asks of `SSL_write`): a layer that has already encrypted them
//! may finish sending those instead of encrypting them again.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use crate::ids::NodeId;

/// A connection's bytes, as the transport reads and writes them: the socket itself, or a
/// layer (TLS) over it. See the [module documentation](self) for how it is used.
pub trait Stream: fmt::Debug + Send + Sync + 'static {
    /// Reads plaintext bytes into `buf`, as [`Read::read`]: `Ok(0)` at the end of the
    /// stream, `WouldBlock` or `TimedOut` after the socket's read timeout.
    ///
    /// # Errors
    ///
    /// The socket's, or the layer's for bytes it refuses (`InvalidData`).
    fn read(&self, buf: &mut [u8]) -> io::Result<usize>;

    /// Writes a prefix of `buf`, as [`Write::write`]: the bytes counted are on their way
    /// (nothing of them is left for a later call to push out).
    ///
    /// # Errors
    ///
    /// The socket's; after `WouldBlock` or `TimedOut` the next call starts with the same
    /// bytes.
    fn write(&self, buf: &[u8]) -> io::Result<usize>;

    /// The socket under the stream.
    fn socket(&self) -> &TcpStream;

    /// Whether the peer this stream authenticated may be node `claimed`, the id in its
    /// hello; the accepting side asks before it answers the hello. The default, for a
    /// stream that does not know who its peer is, lets any id in.
    ///
    /// # Errors
    ///
    /// Why not: the connection is closed, and listed as
    /// [`Disconnect::Layer`](crate::Disconnect::Layer) with the peer's address.
    fn check_peer(&self, claimed: NodeId) -> io::Result<()> {
        let _ = claimed;
        Ok(())
    }
}

impl Stream for TcpStream {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        Read::read(&mut &*self, buf)
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        Write::write(&mut &*self, buf)
    }

    fn socket(&self) -> &TcpStream {
        self
    }
}

/// Turns each connected peer socket into the [`Stream`] the transport speaks over: a TLS
/// session, for example, whose handshake runs here. Returning an error refuses the
/// connection.
pub trait StreamLayer: fmt::Debug + Send + Sync + 'static {
    /// A peer connected to this node from `remote`; the whole handshake, this layer's
    /// included, must end by `deadline`.
    ///
    /// # Errors
    ///
    /// Any: the connection is refused and closed.
    fn accepted(
        &self,
        socket: TcpStream,
        remote: Option<SocketAddr>,
        deadline: Instant,
    ) -> io::Result<Box<dyn Stream>>;

    /// This node dialed `peer` at `addr`; the whole handshake, this layer's included, must
    /// end by `deadline`.
    ///
    /// # Errors
    ///
    /// Any: the connection is closed, and dialed again after the back-off.
    fn dialed(
        &self,
        socket: TcpStream,
        peer: NodeId,
        addr: SocketAddr,
        deadline: Instant,
    ) -> io::Result<Box<dyn Stream>>;
}

/// Writes the whole of `buf`, retrying interrupted writes.
pub(crate) fn write_all(stream: &dyn Stream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match stream.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
