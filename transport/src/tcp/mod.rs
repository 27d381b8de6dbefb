//! The TCP transport: Single-Socket Channels with a writer and a reader thread each, the
//! Request Pipeline and Request Batch on top of them, and the accepting server side.
//!
//! # Threads
//!
//! - one *accept* thread per transport, which checks the connection limit and hands each
//!   socket to a connection thread;
//! - per connection, a *writer* thread (for a dialed connection, the same thread also
//!   dials and reconnects) and a *reader* thread.
//!
//! # Locks
//!
//! Each channel has one mutex (its queue, pending requests and current connection) and two
//! condition variables: one for its writer thread, one for everyone else, so that a
//! completed request does not wake the writer for nothing. No code holds two channel locks at
//! once; the inbound-queue lock may be held while a channel lock is taken briefly, never
//! the other way round.
//!
//! # Files
//!
//! - this file: [`TcpTransport`], the public face, and its limits, events and counters;
//! - `shared.rs`: the state every thread of one transport shares;
//! - `channel.rs`: the Single-Socket Channel to one peer and how senders queue on it;
//! - `outbox.rs`: a channel's encoded outbound queue;
//! - `connection.rs`: accepting, the handshake, dialing, and each connection's writer and
//!   reader loops;
//! - `response.rs`: [`ResponseHandle`], a request in flight as its caller holds it.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

use crate::config::Config;
use crate::error::{BatchSendError, Disconnect, RequestError, SendError};
use crate::frame::MessageKind;
use crate::ids::{CorrelationId, NodeId};
use crate::received::{Received, ReceivedMessage};
use crate::stream::StreamLayer;
use crate::transport::{Incoming, Transport};

mod channel;
mod connection;
mod outbox;
mod response;
mod shared;

use channel::Channel;
use connection::{accept_loop, dial_loop};
pub use response::ResponseHandle;
use shared::{Counters, Handling, IdMap, Shared};

/// How many connection events [`TcpTransport::recent_events`] keeps.
pub const EVENTS_RECENT_MAX: usize = 64;
/// How long [`ResponseHandle::wait`] looks for a response before it sleeps.
const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(50);
/// The room a connection's frame decoder grows to for a read when it has less than half of
/// it (so each read gets at least 32 KiB, most more, plus the room ahead of an unfinished
/// frame).
const READ_CHUNK_BYTES: usize = 64 << 10;
/// The longest one write system call waits for room in a peer connection's socket buffer
/// (its `SO_SNDTIMEO`): so the longest a sender writing on its own thread can be held by a
/// peer that stopped reading. What it could not write, the writer thread finishes.
pub const INLINE_WRITE_WAIT: Duration = Duration::from_millis(1);

/// Handles requests and one-way messages on the connection's reader thread instead of
/// queueing them for [`TcpTransport::recv`]; for a request, the returned bytes are sent back
/// as the response. Set with [`TcpTransport::bind_with_handler`].
///
/// A handler that returns `None` for a request sends nothing back: the caller waits until
/// its deadline and gets [`RequestError::Timeout`]. Return `None` only for one-way messages
/// (whose return value is ignored), or answer a request you refuse with bytes that say so
/// in your protocol, so the caller learns at once.
pub type Handler = Arc<dyn Fn(&Incoming) -> Option<Bytes> + Send + Sync>;

/// Handles the requests and one-way messages of each read of a connection together, on its
/// reader thread, instead of queueing them for [`TcpTransport::recv`]: no thread hand-off
/// and no object per message (the [`Received`] lends each message's bytes, as
/// [`TcpTransport::recv_into`]'s does). Requests are answered through the [`Replies`], which
/// the transport sends together once the handler returns. Set with
/// [`TcpTransport::bind_with_batch_handler`].
///
/// Every message of one call comes from the same peer, in the order it sent them. The
/// handler must be quick, since the connection reads nothing else meanwhile; a request it
/// does not answer waits until its deadline, as with a [`Handler`].
pub type BatchHandler = Arc<dyn Fn(&Received, &mut Replies) + Send + Sync>;

/// The responses a [`BatchHandler`] gives to requests of its batch, sent together to their
/// peer once the handler returns.
#[derive(Debug, Default)]
pub struct Replies {
    replies: Vec<(CorrelationId, Bytes)>,
}

impl Replies {
    /// Answers `request`, a message of the batch being handled, with `payload`.
    ///
    /// # Errors
    ///
    /// [`SendError::NotARequest`] for a one-way message. A response too large to send is
    /// dropped when the batch's responses are queued (the requester then times out), and
    /// counted in [`Stats::messages_dropped`].
    pub fn respond(
        &mut self,
        request: &ReceivedMessage<'_>,
        payload: Bytes,
    ) -> Result<(), SendError> {
        let correlation = request.correlation().ok_or(SendError::NotARequest)?;
        self.replies.push((correlation, payload));
        Ok(())
    }

    /// How many responses were given.
    pub fn len(&self) -> usize {
        self.replies.len()
    }

    /// Whether none was given.
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    pub(super) fn take(&mut self) -> Vec<(CorrelationId, Bytes)> {
        std::mem::take(&mut self.replies)
    }
}

/// Something that happened to a connection: why it ended or was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionEvent {
    /// The peer, when known (after its hello).
    pub peer: Option<NodeId>,
    /// The remote address.
    pub remote: Option<SocketAddr>,
    /// Whether this side accepted (rather than dialed) the connection.
    pub accepted: bool,
    /// What happened.
    pub reason: Disconnect,
}

/// Counters of a transport since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections that completed a handshake, either side.
    pub connections_established: u64,
    /// Connections refused or closed during the handshake (limit, wrong ids, garbage).
    pub connections_refused: u64,
    /// Established connections that ended.
    pub connections_lost: u64,
    /// Messages frames handed to the socket (each a batch of one or more envelopes).
    pub batches_sent: u64,
    /// Envelopes handed to the socket.
    pub messages_sent: u64,
    /// Envelopes received.
    pub messages_received: u64,
    /// Responses that arrived after their request timed out or was dropped.
    pub late_responses: u64,
    /// Queued messages discarded because their connection was lost.
    pub messages_dropped: u64,
    /// Writes a sender began on its own thread and the writer thread finished, because
    /// the peer's socket buffer was full (see [`INLINE_WRITE_WAIT`]).
    pub writes_handed_over: u64,
}

/// A node's TCP transport: Single-Socket Channels to its peers, the Request Pipeline and
/// Request Batch over them, and a listener for peers that dial this node.
///
/// # Who dials whom
///
/// For each pair of nodes there is one connection. When a node learns a peer's address with
/// [`add_peer`](Self::add_peer) and its own id is **higher**, it dials that peer and keeps
/// the connection up, reconnecting with jittered exponential back-off. Otherwise it waits
/// for the peer to dial. This is ZooKeeper's rule for its election connections; it also lets
/// clients with high ids reach servers that do not know their addresses. A hello from a peer
/// this node dials itself is refused as
/// [`RejectReason::WrongDirection`](crate::handshake::RejectReason::WrongDirection).
///
/// # Delivery
///
/// Messages to one peer are written in the order they were queued, on one connection, and
/// delivered in that order. When a connection is lost, its queued messages are dropped and
/// its pending requests fail at once with [`RequestError::ConnectionLost`]: delivery is at
/// most once, and a request whose connection was lost may or may not have been processed.
#[derive(Debug)]
pub struct TcpTransport {
    shared: Arc<Shared>,
}

impl TcpTransport {
    /// Binds a listener on `addr` (port 0 picks a free port) and starts accepting peers.
    /// Received requests and messages are queued for [`recv`](Self::recv).
    ///
    /// # Errors
    ///
    /// If the address cannot be bound.
    pub fn bind(config: Config, addr: impl ToSocketAddrs) -> io::Result<Self> {
        Self::start(config, addr, None, None)
    }

    /// Like [`bind`](Self::bind), but requests and messages are handed to `handler` on the
    /// connection's reader thread, and a request's response is what the handler returns.
    /// This saves a thread hand-off per request; the handler must be quick, since the
    /// connection reads nothing else meanwhile.
    ///
    /// # Errors
    ///
    /// If the address cannot be bound.
    pub fn bind_with_handler(
        config: Config,
        addr: impl ToSocketAddrs,
        handler: impl Fn(&Incoming) -> Option<Bytes> + Send + Sync + 'static,
    ) -> io::Result<Self> {
        let handler: Handler = Arc::new(handler);
        Self::start(config, addr, Some(Handling::Each(handler)), None)
    }

    /// Like [`bind`](Self::bind), but the requests and one-way messages of each read of a
    /// connection are handed to `handler` together, on the connection's reader thread (see
    /// [`BatchHandler`]): the cheapest way to take a stream of messages, with neither a
    /// thread hand-off nor an object per message.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use std::sync::atomic::{AtomicU64, Ordering};
    /// # use std::time::{Duration, Instant};
    /// # use bytes::Bytes;
    /// # use synod_transport::{ClusterId, Config, NodeId, TcpTransport};
    /// let total = Arc::new(AtomicU64::new(0));
    /// let node1 = TcpTransport::bind_with_batch_handler(
    ///     Config::builder(ClusterId(1), NodeId::new(1)).build()?,
    ///     "127.0.0.1:0",
    ///     {
    ///         let total = Arc::clone(&total);
    ///         move |received, replies| {
    ///             for message in received {
    ///                 if message.is_request() {
    ///                     let _ = replies.respond(&message, Bytes::from_static(b"ok"));
    ///                 } else {
    ///                     total.fetch_add(u64::from(message.payload()[0]), Ordering::Relaxed);
    ///                 }
    ///             }
    ///         }
    ///     },
    /// )?;
    /// let node2 = TcpTransport::bind(Config::builder(ClusterId(1), NodeId::new(2)).build()?, "127.0.0.1:0")?;
    /// node2.add_peer(NodeId::new(1), node1.local_addr());
    /// node2.send_batch(NodeId::new(1), (1..=10u8).map(|i| [i]))?;
    /// let answer = node2.request(NodeId::new(1), Bytes::from_static(b"?"), Duration::from_secs(10))?;
    /// assert_eq!(&answer.wait()?[..], b"ok");
    /// // The request went after the ten messages, on the same connection.
    /// assert_eq!(total.load(Ordering::Relaxed), 55);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// If the address cannot be bound.
    pub fn bind_with_batch_handler(
        config: Config,
        addr: impl ToSocketAddrs,
        handler: impl Fn(&Received, &mut Replies) + Send + Sync + 'static,
    ) -> io::Result<Self> {
        let handler: BatchHandler = Arc::new(handler);
        Self::start(config, addr, Some(Handling::Batch(handler)), None)
    }

    /// Like [`bind`](Self::bind) or (with a `handler`)
    /// [`bind_with_handler`](Self::bind_with_handler), but every connection, accepted or
    /// dialed, first passes through `layer` (a TLS session, for example), and the transport
    /// speaks over the [`Stream`](crate::Stream) it returns. See [`crate::stream`].
    ///
    /// # Errors
    ///
    /// If the address cannot be bound.
    pub fn bind_layered(
        config: Config,
        addr: impl ToSocketAddrs,
        layer: Arc<dyn StreamLayer>,
        handler: Option<Handler>,
    ) -> io::Result<Self> {
        Self::start(config, addr, handler.map(Handling::Each), Some(layer))
    }

    fn start(
        config: Config,
        addr: impl ToSocketAddrs,
        handler: Option<Handling>,
        layer: Option<Arc<dyn StreamLayer>>,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            local_addr,
            started: Instant::now(),
            closing: AtomicBool::new(false),
            channels: Mutex::new(IdMap::default()),
            inbound: Mutex::new(Received::new()),
            inbound_changed: Condvar::new(),
            sockets_accepted: AtomicUsize::new(0),
            events: Mutex::new(VecDeque::new()),
            counters: Counters::default(),
            handler,
            layer,
            threads: Mutex::new(Vec::new()),
            next_connection: AtomicU64::new(1),
        });
        let sh = Arc::clone(&shared);
        shared.spawn(
            format!("synod-accept-{}", shared.config.node.get()),
            move || accept_loop(&sh, &listener),
        );
        Ok(TcpTransport { shared })
    }

    /// This node.
    pub fn node(&self) -> NodeId {
        self.shared.config.node
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Tells this node where `peer` listens. If this node's id is higher, it starts dialing
    /// the peer now and keeps the connection up; otherwise the address is noted and the
    /// peer is expected to dial. Adding a known peer again does nothing.
    pub fn add_peer(&self, peer: NodeId, addr: SocketAddr) {
        let sh = &self.shared;
        let dials = sh.config.node > peer;
        let channel = {
            let mut channels = sh.channels.lock();
            if channels.contains_key(&peer) {
                return;
            }
            let channel = Arc::new(Channel::new(peer, dials.then_some(addr)));
            channels.insert(peer, Arc::clone(&channel));
            channel
        };
        if dials {
            let sh2 = Arc::clone(sh);
            sh.spawn(
                format!("synod-dial-{}-{}", sh.config.node.get(), peer.get()),
                move || {
                    dial_loop(&sh2, &channel, addr);
                },
            );
        }
    }

    /// Sends a one-way message to `to`.
    ///
    /// # Errors
    ///
    /// See [`SendError`]; with [`Overflow::Block`](crate::Overflow::Block) this waits while the queue is full.
    pub fn send(&self, to: NodeId, payload: Bytes) -> Result<(), SendError> {
        let channel = self.channel_for(to)?;
        channel.send(&self.shared, MessageKind::OneWay, CorrelationId(0), payload)
    }

    /// Sends one one-way message to `to` per payload, in order, as [`send`](Self::send)
    /// would one at a time, but under one lock: the messages are queued together and, if
    /// they fill at least one frame (`batch_bytes_max`) and nothing else is being written
    /// to `to`, written by the calling thread in one system call, without waking the
    /// writer thread; a smaller batch joins the writer thread's batching as `send`'s
    /// messages do. A sender with many messages for one peer at hand (the appends of one
    /// round of a replicated log, say) pays one lock and one lookup for all of them, where
    /// `send` in a loop pays them per message. The messages are encoded before the lock is
    /// taken, into one buffer of the calling thread's as large as the encoded batch (about
    /// the payloads' size), freed when the call returns. The payloads are copied, so any
    /// bytes do (`Bytes`, `Vec<u8>`, slices of one buffer): nothing is kept of them.
    ///
    /// Returns how many messages were queued (all of them). An empty batch queues and
    /// writes nothing and returns `Ok(0)` (to a node that is not a peer, or once the
    /// transport is shutting down, it fails as `send` would).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send), with the number of messages queued before the error
    /// ([`BatchSendError::queued`](crate::BatchSendError)). A payload too large fails the
    /// whole call before anything is queued (`queued` 0). Any other error (the peer is not
    /// connected, the transport closes, or with
    /// [`Overflow::FailFast`](crate::Overflow::FailFast) the queue is full) stops the
    /// batch there: the first `queued` messages are queued and go out, the rest do not.
    pub fn send_batch(
        &self,
        to: NodeId,
        payloads: impl IntoIterator<Item = impl AsRef<[u8]>>,
    ) -> Result<usize, BatchSendError> {
        let channel = self.channel_for(to)?;
        channel.send_batch(&self.shared, payloads)
    }

    /// Sends a request to `to` and returns a handle to wait on for the response, which must
    /// arrive within `timeout`. Many requests may be in flight at once (the Request
    /// Pipeline), up to `in_flight_max` per peer.
    ///
    /// # Errors
    ///
    /// See [`RequestError`]; with [`Overflow::Block`](crate::Overflow::Block) this waits while the in-flight window
    /// or the queue is full.
    pub fn request(
        &self,
        to: NodeId,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<ResponseHandle, RequestError> {
        let channel = self.channel_for(to)?;
        channel.request(&self.shared, payload, timeout)
    }

    /// Sends one request to `to` per payload, in order, each due within `timeout`, and
    /// pushes a handle per request onto `out` (which is not cleared first).
    ///
    /// This is the Request Pipeline driven by one thread: the requests are queued under
    /// one lock and, if nothing else is being written to `to`, written by the calling
    /// thread as one frame in one system call, without waking the writer thread or
    /// waiting `batch_delay_us_max`. A caller keeping a window of requests in flight
    /// refills it with one call per batch of responses taken (see the example).
    /// [`request`](Self::request) in a loop costs a lock per request and leaves batching
    /// to the writer thread.
    ///
    /// # Errors
    ///
    /// See [`RequestError`]. A payload too large fails the whole call before anything is
    /// sent. Any other error (the connection is lost, the transport closes, or with
    /// [`Overflow::FailFast`](crate::Overflow::FailFast) the window or queue is full) stops the batch there: the
    /// requests before it are sent and their handles are in `out`, the rest are not.
    /// With [`Overflow::Block`](crate::Overflow::Block) this waits while the in-flight window or the queue is
    /// full, after handing what it queued so far to the writer thread.
    ///
    /// # Example
    ///
    /// ```
    /// # use std::collections::VecDeque;
    /// # use std::time::Duration;
    /// # use bytes::Bytes;
    /// # use synod_transport::{ClusterId, Config, NodeId, TcpTransport};
    /// # let server = TcpTransport::bind_with_handler(
    /// #     Config::builder(ClusterId(1), NodeId::new(1)).build()?, "127.0.0.1:0",
    /// #     |request| Some(request.payload().clone()))?;
    /// # let client = TcpTransport::bind(Config::builder(ClusterId(1), NodeId::new(2)).build()?, "127.0.0.1:0")?;
    /// # client.add_peer(NodeId::new(1), server.local_addr());
    /// # assert!(client.wait_connected(NodeId::new(1), Duration::from_secs(10)));
    /// // Keep up to 16 requests in flight from this one thread; 100 in all.
    /// let (window, total) = (16, 100u32);
    /// let (mut sent, mut done) = (0u32, 0u32);
    /// let mut in_flight = VecDeque::new();
    /// let mut fresh = Vec::new();
    /// while done < total {
    ///     let room = (window - in_flight.len()).min((total - sent) as usize);
    ///     let payloads = (sent..sent + room as u32).map(|i| Bytes::from(i.to_le_bytes().to_vec()));
    ///     client.request_batch(NodeId::new(1), payloads, Duration::from_secs(10), &mut fresh)?;
    ///     sent += room as u32;
    ///     in_flight.extend(fresh.drain(..));
    ///     // Wait for the oldest, then take every response already there.
    ///     loop {
    ///         let handle: synod_transport::ResponseHandle = in_flight.pop_front().unwrap();
    ///         assert_eq!(handle.wait()?[..], done.to_le_bytes()); // in order
    ///         done += 1;
    ///         if !in_flight.front().is_some_and(|h| h.is_ready()) {
    ///             break;
    ///         }
    ///     }
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn request_batch(
        &self,
        to: NodeId,
        payloads: impl IntoIterator<Item = Bytes>,
        timeout: Duration,
        out: &mut Vec<ResponseHandle>,
    ) -> Result<(), RequestError> {
        let channel = self.channel_for(to)?;
        channel.request_batch(&self.shared, payloads, timeout, out)
    }

    /// Sends `payload` as the response to `request`, which must be a request received by
    /// this transport.
    ///
    /// # Errors
    ///
    /// See [`SendError`]; [`SendError::NotARequest`] for a one-way message.
    pub fn respond(&self, request: &Incoming, payload: Bytes) -> Result<(), SendError> {
        let Some(correlation) = request.correlation() else {
            return Err(SendError::NotARequest);
        };
        let channel = self.channel_for(request.from())?;
        channel.send(&self.shared, MessageKind::Response, correlation, payload)
    }

    fn channel_for(&self, peer: NodeId) -> Result<Arc<Channel>, SendError> {
        if self.shared.is_closing() {
            return Err(SendError::Shutdown);
        }
        self.shared
            .channel(peer)
            .ok_or(SendError::NotConnected { peer, last: None })
    }

    /// The next received request or message, waiting at most `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Incoming> {
        let mut inbound = self.wait_inbound(timeout);
        let incoming = inbound.pop_front();
        drop(inbound);
        if incoming.is_some() {
            self.shared.inbound_changed.notify_all();
        }
        incoming
    }

    /// Moves up to `max` received requests and messages into `out`, waiting at most
    /// `timeout` for the first; returns how many were moved. Cheaper per message than
    /// [`recv`](Self::recv) when many arrive (one lock for all); cheaper still is
    /// [`recv_into`](Self::recv_into), which makes no [`Incoming`] per message.
    pub fn recv_batch(&self, out: &mut Vec<Incoming>, max: usize, timeout: Duration) -> usize {
        let mut inbound = self.wait_inbound(timeout);
        let n = inbound.len().min(max);
        out.reserve(n);
        out.extend(std::iter::from_fn(|| inbound.pop_front()).take(n));
        drop(inbound);
        if n > 0 {
            self.shared.inbound_changed.notify_all();
        }
        n
    }

    /// Moves up to `max` received requests and messages to the end of `out`, waiting at most
    /// `timeout` for the first; returns how many were moved. The cheapest way to take many:
    /// [`Received`] keeps each frame's payload once and lends each message's bytes, so no
    /// object, allocation or reference count is made per message; and into an empty `out`
    /// (cleared and reused from call to call), taking everything that waits trades buffers
    /// with the queue rather than moving each message.
    pub fn recv_into(&self, out: &mut Received, max: usize, timeout: Duration) -> usize {
        let mut inbound = self.wait_inbound(timeout);
        let n = inbound.len().min(max);
        inbound.move_front_into(out, n);
        drop(inbound);
        if n > 0 {
            self.shared.inbound_changed.notify_all();
        }
        n
    }

    /// The inbound queue, locked, once it holds a message or `timeout` has passed (or the
    /// transport closes).
    fn wait_inbound(&self, timeout: Duration) -> parking_lot::MutexGuard<'_, Received> {
        let deadline = Instant::now() + timeout;
        let sh = &self.shared;
        let mut inbound = sh.inbound.lock();
        while inbound.is_empty() && !sh.is_closing() {
            if sh
                .inbound_changed
                .wait_until(&mut inbound, deadline)
                .timed_out()
            {
                break;
            }
        }
        inbound
    }

    /// The next received request or message, if one is waiting.
    pub fn try_recv(&self) -> Option<Incoming> {
        let incoming = self.shared.inbound.lock().pop_front();
        if incoming.is_some() {
            self.shared.inbound_changed.notify_all();
        }
        incoming
    }

    /// The peers this node has a channel to: those given to [`add_peer`](Self::add_peer),
    /// and those that dialed this node and are connected. Sorted by id.
    pub fn peers(&self) -> Vec<NodeId> {
        let mut peers: Vec<NodeId> = self.shared.channels.lock().keys().copied().collect();
        peers.sort_unstable();
        peers
    }

    /// Whether a connection to `peer` is up now.
    pub fn is_connected(&self, peer: NodeId) -> bool {
        self.shared
            .channel(peer)
            .is_some_and(|c| c.state.lock().conn.is_some())
    }

    /// Waits until a connection to `peer` is up, at most `timeout`; returns whether it is.
    pub fn wait_connected(&self, peer: NodeId, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            // The channel of a peer that dials this node appears with its first connection.
            if let Some(channel) = self.shared.channel(peer) {
                let mut st = channel.state.lock();
                while st.conn.is_none() {
                    if channel.space.wait_until(&mut st, deadline).timed_out() {
                        return st.conn.is_some();
                    }
                }
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            let mut inbound = self.shared.inbound.lock();
            let wait = (deadline - Instant::now()).min(Duration::from_millis(5));
            self.shared.inbound_changed.wait_for(&mut inbound, wait);
        }
    }

    /// Why the last connection to `peer` ended, if it did and none replaced it yet.
    pub fn last_error(&self, peer: NodeId) -> Option<Disconnect> {
        self.shared
            .channel(peer)
            .and_then(|c| c.state.lock().last_error.clone())
    }

    /// Encoded bytes queued for `peer` and not yet written, those of a write under way
    /// included (bounded by `outbound_bytes_max`).
    pub fn outbound_queued_bytes(&self, peer: NodeId) -> usize {
        self.shared.channel(peer).map_or(0, |c| {
            let st = c.state.lock();
            st.outbox.envelope_bytes + st.writing_bytes
        })
    }

    /// Requests to `peer` awaiting a response (bounded by `in_flight_max`).
    pub fn in_flight(&self, peer: NodeId) -> usize {
        self.shared
            .channel(peer)
            .map_or(0, |c| c.state.lock().pending.len())
    }

    /// The last [`EVENTS_RECENT_MAX`] connection events, oldest first: refused handshakes,
    /// protocol errors, lost connections, each with its reason.
    pub fn recent_events(&self) -> Vec<ConnectionEvent> {
        self.shared.events.lock().iter().cloned().collect()
    }

    /// Counters since the transport started.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            connections_established: get(&c.connections_established),
            connections_refused: get(&c.connections_refused),
            connections_lost: get(&c.connections_lost),
            batches_sent: get(&c.batches_sent),
            messages_sent: get(&c.messages_sent),
            messages_received: get(&c.messages_received),
            late_responses: get(&c.late_responses),
            messages_dropped: get(&c.messages_dropped),
            writes_handed_over: get(&c.writes_handed_over),
        }
    }

    /// Closes every connection, fails every pending request with
    /// [`RequestError::ConnectionLost`] (reason [`Disconnect::Shutdown`]) and joins the
    /// transport's threads. Dropping the transport does the same.
    pub fn shutdown(self) {
        drop(self);
    }

    fn close(&self) {
        let sh = &self.shared;
        if sh.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        let channels: Vec<Arc<Channel>> = sh.channels.lock().values().cloned().collect();
        for channel in channels {
            let current = {
                let mut st = channel.state.lock();
                st.closed = true;
                st.conn.as_ref().map(|c| c.id)
            };
            match current {
                Some(id) => channel.lost(sh, id, Disconnect::Shutdown),
                None => {
                    let mut st = channel.state.lock();
                    channel.fail_all(sh, &mut st, &Disconnect::Shutdown);
                }
            }
            channel.work.notify_all();
            channel.space.notify_all();
        }
        sh.inbound_changed.notify_all();
        // Wake the accept thread, blocked in accept().
        let _ = TcpStream::connect_timeout(&sh.local_addr, sh.config.connect_timeout());
        loop {
            let threads: Vec<JoinHandle<()>> = std::mem::take(&mut *sh.threads.lock());
            if threads.is_empty() {
                break;
            }
            for thread in threads {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.close();
    }
}

impl Transport for TcpTransport {
    fn local_id(&self) -> NodeId {
        self.node()
    }

    fn send(&mut self, to: NodeId, payload: Bytes) -> Result<(), SendError> {
        TcpTransport::send(self, to, payload)
    }

    fn try_recv(&mut self) -> Option<Incoming> {
        TcpTransport::try_recv(self)
    }
}
