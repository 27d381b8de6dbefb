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

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::completion::{Completer, Completion, WaitOutcome, completion};
use crate::config::{Backoff, Config, Overflow};
use crate::error::{Disconnect, RequestError, SendError};
use crate::frame::{
    Envelope, Frame, FrameDecoder, FrameKind, HEADER_BYTES, MessageKind, begin_frame,
    decode_envelopes_into, finish_frame,
};
use crate::handshake::{self, HANDSHAKE_BYTES_MAX, HandshakeError, Hello, PROTOCOL, Welcome};
use crate::ids::{CorrelationId, NodeId};
use crate::transport::{Incoming, Transport};

/// How many connection events [`TcpTransport::recent_events`] keeps.
pub const EVENTS_RECENT_MAX: usize = 64;
/// How long [`ResponseHandle::wait`] looks for a response before it sleeps.
const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(50);
/// Size of each connection's read buffer.
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

#[derive(Debug, Default)]
struct Counters {
    connections_established: AtomicU64,
    connections_refused: AtomicU64,
    connections_lost: AtomicU64,
    batches_sent: AtomicU64,
    messages_sent: AtomicU64,
    messages_received: AtomicU64,
    late_responses: AtomicU64,
    messages_dropped: AtomicU64,
    writes_handed_over: AtomicU64,
}

/// A map keyed by a `u64` id. Ids are hashed by one multiplication rather than SipHash:
/// correlation ids are chosen by this side, and the node ids a peer can choose are at most
/// `connections_max` live entries, so flooding a bucket gains an attacker nothing.
type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        // Fibonacci hashing: spreads sequential ids over the high bits hashbrown uses.
        self.0 = (self.0 ^ id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

struct Shared {
    config: Config,
    local_addr: SocketAddr,
    started: Instant,
    closing: AtomicBool,
    channels: Mutex<IdMap<NodeId, Arc<Channel>>>,
    inbound: Mutex<VecDeque<Incoming>>,
    inbound_changed: Condvar,
    sockets_accepted: AtomicUsize,
    events: Mutex<VecDeque<ConnectionEvent>>,
    counters: Counters,
    handler: Option<Handler>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    next_connection: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node", &self.config.node)
            .field("local_addr", &self.local_addr)
            .field("handler", &self.handler.is_some())
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn millis(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    fn event(&self, event: ConnectionEvent) {
        let mut events = self.events.lock();
        if events.len() == EVENTS_RECENT_MAX {
            events.pop_front();
        }
        events.push_back(event);
    }

    /// Spawns a thread the transport joins at shutdown; `false` if none could be spawned
    /// (the connection it was for is then not served: its peer sees it close and retries).
    fn spawn(self: &Arc<Self>, name: String, f: impl FnOnce() + Send + 'static) -> bool {
        let mut threads = self.threads.lock();
        threads.retain(|t| !t.is_finished());
        match std::thread::Builder::new().name(name).spawn(f) {
            Ok(handle) => {
                threads.push(handle);
                true
            }
            Err(_) => false,
        }
    }

    fn channel(&self, peer: NodeId) -> Option<Arc<Channel>> {
        self.channels.lock().get(&peer).cloned()
    }

    /// The channel for an accepted connection from `peer`, marked as being attached so
    /// that it is not forgotten before [`Channel::install`] runs.
    fn channel_for_accepted(&self, peer: NodeId) -> Arc<Channel> {
        let mut channels = self.channels.lock();
        let channel = Arc::clone(
            channels
                .entry(peer)
                .or_insert_with(|| Arc::new(Channel::new(peer, None))),
        );
        channel.state.lock().attaching += 1;
        channel
    }

    /// Forgets the channel of a peer that dials this node once its connection is gone, so
    /// that peers that come and go (clients with fresh ids) leave nothing behind.
    fn forget_if_idle(&self, channel: &Channel) {
        if channel.dial.is_some() {
            return;
        }
        let mut channels = self.channels.lock();
        let Some(entry) = channels.get(&channel.peer) else {
            return;
        };
        if !std::ptr::eq(Arc::as_ptr(entry), channel) {
            return;
        }
        let idle = {
            let st = channel.state.lock();
            st.conn.is_none() && st.attaching == 0 && st.pending.is_empty()
        };
        if idle {
            channels.remove(&channel.peer);
        }
    }

    /// Queues received messages for `recv`, waiting while the queue is full (so the reader
    /// stops reading and TCP pushes back on the peer). Gives up if the connection
    /// `connection` of `channel` is gone or the transport closes.
    /// Takes every item of `incoming` either way (the rest are dropped if it gives up).
    fn deliver(
        &self,
        channel: &Channel,
        connection: u64,
        incoming: impl Iterator<Item = Incoming>,
    ) {
        let mut inbound = self.inbound.lock();
        for incoming in incoming {
            while inbound.len() >= self.config.inbound_messages_max {
                if self.is_closing() || !channel.is_current(connection) {
                    return;
                }
                self.inbound_changed.notify_all();
                self.inbound_changed
                    .wait_for(&mut inbound, self.config.keepalive_interval());
            }
            inbound.push_back(incoming);
        }
        drop(inbound);
        self.inbound_changed.notify_all();
    }
}

/// A connection being served.
#[derive(Debug)]
struct Live {
    id: u64,
    stream: Arc<TcpStream>,
    remote: Option<SocketAddr>,
    accepted: bool,
}

/// The rest of a write a sender began on its own thread.
#[derive(Debug)]
struct Unfinished {
    /// The connection it was begun on: only that connection may carry the rest.
    connection: u64,
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    written: usize,
    /// Messages in `buf`.
    messages: u64,
}

/// One envelope about to be queued, with its encoded length.
#[derive(Debug)]
struct Queued {
    envelope: Envelope,
    len: usize,
}

impl Queued {
    fn envelope_bytes(&self) -> usize {
        self.len
    }
}

/// A channel's outbound queue, already encoded: frames back to back in one buffer, ready
/// to be written with one system call. Every frame but the last is finished (header and
/// checksum filled in) when the next one begins; whoever takes the buffer finishes the
/// last one outside the channel lock. Queueing a message copies it into the buffer, which
/// is reused from write to write, so it allocates nothing in the steady state.
#[derive(Debug, Default)]
struct Outbox {
    bytes: Vec<u8>,
    /// Where the last (open) frame begins in `bytes`, if there is one.
    open: Option<usize>,
    /// Frames in `bytes`, the open one included.
    frames: u64,
    /// Messages in `bytes`.
    messages: usize,
    /// Encoded envelope bytes, frame headers excluded: what `outbound_bytes_max` bounds.
    envelope_bytes: usize,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// Appends `queued`, in the open frame if it fits within `batch_bytes_max` (or the
    /// frame is empty), else in a new one.
    fn push(&mut self, queued: &Queued, batch_bytes_max: usize, frame_bytes_max: usize) {
        let open = match self.open {
            Some(start)
                if self.bytes.len() - start - HEADER_BYTES + queued.len > batch_bytes_max =>
            {
                finish_frame(&mut self.bytes, start, FrameKind::Messages, frame_bytes_max)
                    .expect("a frame holds at most batch_bytes_max, or one message");
                None
            }
            open => open,
        };
        if open.is_none() {
            self.open = Some(begin_frame(&mut self.bytes));
            self.frames += 1;
        }
        queued.envelope.encode_into(&mut self.bytes);
        self.messages += 1;
        self.envelope_bytes += queued.len;
    }

    /// Moves the queue into `out` (which must be empty), leaving this outbox empty; returns
    /// where the last, open frame begins in `out` and how many frames and messages it
    /// holds. `None` if the outbox was empty.
    fn take(&mut self, out: &mut Vec<u8>) -> Option<Taken> {
        debug_assert!(out.is_empty());
        let open = self.open.take()?;
        std::mem::swap(&mut self.bytes, out);
        let taken = Taken {
            open,
            frames: self.frames,
            messages: self.messages as u64,
            envelope_bytes: self.envelope_bytes,
        };
        self.frames = 0;
        self.messages = 0;
        self.envelope_bytes = 0;
        Some(taken)
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.open = None;
        self.frames = 0;
        self.messages = 0;
        self.envelope_bytes = 0;
    }
}

/// What [`Outbox::take`] moved out.
#[derive(Clone, Copy, Debug)]
struct Taken {
    open: usize,
    frames: u64,
    messages: u64,
    envelope_bytes: usize,
}

/// A write buffer kept between writes is shrunk back to this many times
/// `batch_bytes_max` (plus headers) if a burst grew it beyond, so that an idle channel
/// does not hold on to up to `outbound_bytes_max` of memory twice.
const SPARE_BATCHES_MAX: usize = 4;

#[derive(Debug)]
struct ChannelState {
    conn: Option<Live>,
    last_error: Option<Disconnect>,
    outbox: Outbox,
    /// The buffer the next taker swaps with the outbox's (empty; absent while a write is
    /// under way).
    spare: Vec<u8>,
    /// Envelope bytes of the write under way: they count against `outbound_bytes_max`
    /// until written, so that queue and write together stay within it.
    writing_bytes: usize,
    /// When the oldest queued message was queued (for `batch_delay_us_max`).
    batch_started: Option<Instant>,
    /// Someone (the writer thread or a sender writing inline) is writing to the socket.
    writing: bool,
    /// A write a sender began on its own thread and could not finish within
    /// [`INLINE_WRITE_WAIT`]: the writer thread writes the rest before anything else.
    unfinished: Option<Unfinished>,
    last_write: Instant,
    pending: IdMap<CorrelationId, Completer<Result<Bytes, RequestError>>>,
    closed: bool,
    /// Accepted connections about to be installed (the channel must not be forgotten).
    attaching: usize,
}

/// The Single-Socket Channel to one peer: its outbound queue, its requests in flight, and
/// its current connection, if any.
#[derive(Debug)]
struct Channel {
    peer: NodeId,
    /// The address this node dials; `None` if the peer dials this node.
    dial: Option<SocketAddr>,
    next_correlation: AtomicU64,
    last_activity_ms: AtomicU64,
    state: Mutex<ChannelState>,
    /// The writer thread waits here: for messages, a keep-alive, or its connection's end.
    work: Condvar,
    /// Senders wait here for room in the queue or the in-flight window; also waiters for a
    /// connection and the dialer between attempts.
    space: Condvar,
}

impl Channel {
    fn new(peer: NodeId, dial: Option<SocketAddr>) -> Self {
        Channel {
            peer,
            dial,
            next_correlation: AtomicU64::new(1),
            last_activity_ms: AtomicU64::new(0),
            state: Mutex::new(ChannelState {
                conn: None,
                last_error: None,
                outbox: Outbox::default(),
                spare: Vec::new(),
                writing_bytes: 0,
                batch_started: None,
                writing: false,
                unfinished: None,
                last_write: Instant::now(),
                pending: IdMap::default(),
                closed: false,
                attaching: 0,
            }),
            work: Condvar::new(),
            space: Condvar::new(),
        }
    }

    fn is_current(&self, connection: u64) -> bool {
        self.state.lock().conn.as_ref().map(|c| c.id) == Some(connection)
    }

    /// Checks a message's size and prepares it for the queue.
    fn encode(
        &self,
        sh: &Shared,
        kind: MessageKind,
        correlation: CorrelationId,
        payload: Bytes,
    ) -> Result<Queued, SendError> {
        let max = sh.config.payload_bytes_max();
        if payload.len() > max {
            return Err(SendError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let envelope = Envelope {
            correlation,
            kind,
            from: sh.config.node,
            to: self.peer,
            payload,
        };
        let len = envelope.encoded_len();
        Ok(Queued { envelope, len })
    }

    /// Waits until the message may be queued (room in the queue and, for a request, in the
    /// in-flight window), honouring the overflow policy.
    fn admit<'a>(
        &'a self,
        sh: &Shared,
        mut st: MutexGuard<'a, ChannelState>,
        bytes: usize,
        request: bool,
    ) -> Result<MutexGuard<'a, ChannelState>, RequestError> {
        let c = &sh.config;
        loop {
            if st.closed || sh.is_closing() {
                return Err(RequestError::Shutdown);
            }
            if st.conn.is_none() && self.dial.is_none() {
                return Err(SendError::NotConnected {
                    peer: self.peer,
                    last: st.last_error.clone(),
                }
                .into());
            }
            let window_full = request && st.pending.len() >= c.in_flight_max;
            let queue_full = st.outbox.messages >= c.outbound_messages_max
                || st.outbox.envelope_bytes + st.writing_bytes + bytes > c.outbound_bytes_max;
            if !window_full && !queue_full {
                return Ok(st);
            }
            if c.overflow == Overflow::FailFast {
                return Err(if window_full {
                    RequestError::InFlightFull {
                        peer: self.peer,
                        max: c.in_flight_max,
                    }
                } else {
                    SendError::QueueFull { peer: self.peer }.into()
                });
            }
            // Whatever this caller queued before must reach the writer before it waits.
            self.work.notify_all();
            self.space.wait(&mut st);
        }
    }

    /// Queues an admitted message and gets it written: by the caller itself when the channel
    /// is idle, otherwise by the writer thread, which batches whatever has queued up.
    fn push<'a>(&'a self, sh: &Shared, mut st: MutexGuard<'a, ChannelState>, queued: Queued) {
        let origin = match queued.envelope.kind {
            MessageKind::Request => Origin::Request,
            MessageKind::Response => Origin::Formed,
            MessageKind::OneWay => Origin::OneWay,
        };
        let wake = self.enqueue(sh, &mut st, queued);
        self.flush(sh, st, origin, wake);
    }

    /// Appends a message to the queue; returns whether the writer thread has news: the
    /// queue was empty (the writer sleeps until a keep-alive falls due), or the batch has
    /// just become full (the writer may be waiting `batch_delay_us_max` for company). Any
    /// other message joins a batch the writer already knows about, so waking it again
    /// would only cost a context switch.
    fn enqueue(&self, sh: &Shared, st: &mut ChannelState, queued: Queued) -> bool {
        let c = &sh.config;
        let was_empty = st.outbox.is_empty();
        let was_full = st.outbox.envelope_bytes >= c.batch_bytes_max;
        st.outbox
            .push(&queued, c.batch_bytes_max, c.frame_bytes_max);
        if was_empty {
            st.batch_started = Some(Instant::now());
        }
        was_empty || (!was_full && st.outbox.envelope_bytes >= c.batch_bytes_max)
    }

    /// Writes the queue on the caller's thread if the channel is idle, else leaves it to
    /// the writer thread (waking it).
    ///
    /// Writing on the caller's thread saves a thread hand-off: it is what makes one request
    /// at a time cost little more than a raw round trip. Idle means nothing is being
    /// written and, for a request, no other request is in flight; for a batch the caller
    /// formed itself (the responses to one read, or [`TcpTransport::request_batch`])
    /// nothing more; for a one-way message, no request in flight and nothing written for
    /// `batch_delay_us_max`. Otherwise the writer thread
    /// takes the queue, waiting up to `batch_delay_us_max` for company (Request Batch), like
    /// Nagle's algorithm with a bound. A full socket buffer holds the caller at most
    /// [`INLINE_WRITE_WAIT`]: the writer thread writes whatever did not fit, so even an
    /// `Overflow::FailFast` caller is never held longer by a peer that stopped reading.
    fn flush<'a>(
        &'a self,
        sh: &Shared,
        mut st: MutexGuard<'a, ChannelState>,
        origin: Origin,
        wake: bool,
    ) {
        let c = &sh.config;
        let idle = !st.writing
            && st.unfinished.is_none()
            && match origin {
                Origin::Request => st.pending.len() <= 1,
                Origin::Formed => true,
                Origin::OneWay => {
                    // Cheapest test first: with others already queued the channel is busy.
                    st.outbox.messages == 1
                        && st.pending.is_empty()
                        && st.last_write.elapsed() >= Duration::from_micros(c.batch_delay_us_max)
                }
            };
        let conn = match &st.conn {
            Some(conn) if idle => (conn.id, Arc::clone(&conn.stream)),
            _ => {
                drop(st);
                if wake {
                    self.work.notify_all();
                }
                return;
            }
        };
        st.writing = true;
        let (mut buf, taken) = Self::take_outbox(&mut st);
        drop(st);
        let messages = Self::finish_taken(sh, &mut buf, taken);
        // A slow reader must not hold the caller either: each write call waits at most
        // INLINE_WRITE_WAIT for room, and no new one starts after it has passed.
        let until = Instant::now() + INLINE_WRITE_WAIT;
        match write_some(&conn.1, &buf, Some(until)) {
            Ok(written) if written < buf.len() => {
                // The socket buffer is full: the writer thread finishes this write.
                let mut st = self.state.lock();
                if st.conn.as_ref().is_some_and(|live| live.id == conn.0) {
                    st.writing = false;
                    st.unfinished = Some(Unfinished {
                        connection: conn.0,
                        buf,
                        written,
                        messages,
                    });
                    drop(st);
                    bump(&sh.counters.writes_handed_over, 1);
                    self.work.notify_all();
                } else {
                    // The connection was lost meanwhile: account for the write as failed.
                    drop(st);
                    let gone = Err(io::ErrorKind::ConnectionAborted.into());
                    self.after_write(sh, conn.0, messages, buf, gone);
                }
            }
            result => self.after_write(sh, conn.0, messages, buf, result.map(drop)),
        }
    }

    /// Takes the whole outbox (in the spare buffer's place) for a write.
    fn take_outbox(st: &mut ChannelState) -> (Vec<u8>, Option<Taken>) {
        let mut buf = std::mem::take(&mut st.spare);
        buf.clear();
        let taken = st.outbox.take(&mut buf);
        st.batch_started = None;
        st.writing_bytes = taken.map_or(0, |t| t.envelope_bytes);
        (buf, taken)
    }

    /// Finishes the last frame of a taken outbox, or makes `buf` a keep-alive frame if
    /// nothing was taken, and counts the frames about to be written; returns how many
    /// messages they hold. Counting before the write means a response can never be seen
    /// before the request that caused it is counted.
    fn finish_taken(sh: &Shared, buf: &mut Vec<u8>, taken: Option<Taken>) -> u64 {
        let max = sh.config.frame_bytes_max;
        let Some(taken) = taken else {
            let start = begin_frame(buf);
            finish_frame(buf, start, FrameKind::KeepAlive, max).expect("an empty frame fits");
            return 0;
        };
        finish_frame(buf, taken.open, FrameKind::Messages, max)
            .expect("a frame holds at most batch_bytes_max, or one message");
        bump(&sh.counters.batches_sent, taken.frames);
        bump(&sh.counters.messages_sent, taken.messages);
        taken.messages
    }

    /// Bookkeeping after a write by either the writer thread or an inline sender; `buf`
    /// becomes the spare buffer again.
    fn after_write(
        &self,
        sh: &Shared,
        connection: u64,
        messages: u64,
        mut buf: Vec<u8>,
        result: io::Result<()>,
    ) {
        buf.clear();
        buf.shrink_to(SPARE_BATCHES_MAX * (sh.config.batch_bytes_max + HEADER_BYTES));
        let mut st = self.state.lock();
        st.spare = buf;
        st.writing = false;
        let freed = std::mem::take(&mut st.writing_bytes) > 0;
        st.last_write = Instant::now();
        let more = !st.outbox.is_empty();
        drop(st);
        if freed {
            // The bytes written no longer count against `outbound_bytes_max`.
            self.space.notify_all();
        }
        if more {
            // Messages queued while this write went on: the writer thread takes them.
            self.work.notify_all();
        }
        match result {
            Ok(()) => {
                if messages > 0 {
                    self.last_activity_ms.store(sh.millis(), Ordering::Relaxed);
                }
            }
            Err(err) => {
                let reason = if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) {
                    Disconnect::WriteStalled {
                        stalled_ms: sh.config.keepalive_timeout_ms,
                    }
                } else {
                    Disconnect::io(&err)
                };
                self.lost(sh, connection, reason);
            }
        }
    }

    fn send(
        &self,
        sh: &Shared,
        kind: MessageKind,
        correlation: CorrelationId,
        payload: Bytes,
    ) -> Result<(), SendError> {
        let queued = self.encode(sh, kind, correlation, payload)?;
        let st = self.state.lock();
        let st = self
            .admit(sh, st, queued.envelope_bytes(), false)
            .map_err(|err| match err {
                RequestError::Send(err) => err,
                _ => SendError::Shutdown,
            })?;
        self.push(sh, st, queued);
        Ok(())
    }

    fn request(
        self: &Arc<Self>,
        sh: &Shared,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<ResponseHandle, RequestError> {
        let deadline = Instant::now() + timeout;
        let id = CorrelationId(self.next_correlation.fetch_add(1, Ordering::Relaxed));
        let queued = self.encode(sh, MessageKind::Request, id, payload)?;
        let (completer, completion) = completion();
        let st = self.state.lock();
        let mut st = self.admit(sh, st, queued.envelope_bytes(), true)?;
        st.pending.insert(id, completer);
        // Alone in flight, the response comes back in about one round trip: worth looking
        // for before sleeping. With others in flight, responses arrive in batches and the
        // waiter is better off asleep.
        let alone = st.pending.len() == 1;
        self.push(sh, st, queued);
        Ok(ResponseHandle {
            channel: Arc::clone(self),
            id,
            completion,
            deadline,
            timeout,
            finished: false,
            spin: alone,
        })
    }

    /// Sends one request per payload, all queued under one lock and written together: by
    /// the caller when the channel is idle, as one frame and one system call (up to
    /// `batch_bytes_max`). Pushes a handle per queued request onto `out`, in order.
    fn request_batch(
        self: &Arc<Self>,
        sh: &Shared,
        payloads: impl IntoIterator<Item = Bytes>,
        timeout: Duration,
        out: &mut Vec<ResponseHandle>,
    ) -> Result<(), RequestError> {
        let deadline = Instant::now() + timeout;
        // Sizes are checked before anything is queued: a payload too large sends nothing.
        let batch = payloads
            .into_iter()
            .map(|payload| self.encode(sh, MessageKind::Request, CorrelationId(0), payload))
            .collect::<Result<Vec<Queued>, SendError>>()?;
        let mut st = self.state.lock();
        let mut wake = false;
        let mut result = Ok(());
        for mut queued in batch {
            let id = CorrelationId(self.next_correlation.fetch_add(1, Ordering::Relaxed));
            queued.envelope.correlation = id;
            queued.len = queued.envelope.encoded_len();
            st = match self.admit(sh, st, queued.envelope_bytes(), true) {
                Ok(admitted) => admitted,
                Err(err) => {
                    // The requests queued so far stay queued (their handles are in `out`).
                    result = Err(err);
                    st = self.state.lock();
                    break;
                }
            };
            let (completer, completion) = completion();
            st.pending.insert(id, completer);
            wake |= self.enqueue(sh, &mut st, queued);
            out.push(ResponseHandle {
                channel: Arc::clone(self),
                id,
                completion,
                deadline,
                timeout,
                finished: false,
                spin: true,
            });
        }
        if st.outbox.is_empty() {
            return result;
        }
        self.flush(sh, st, Origin::Formed, wake);
        result
    }

    /// Ends connection `connection` (if it is still the current one): closes the socket,
    /// fails every pending request and drops the queue, waking everyone who waits.
    fn lost(&self, sh: &Shared, connection: u64, reason: Disconnect) {
        let mut st = self.state.lock();
        if st.conn.as_ref().map(|c| c.id) != Some(connection) {
            return;
        }
        let live = st.conn.take().expect("checked above");
        self.fail_all(sh, &mut st, &reason);
        drop(st);
        self.work.notify_all();
        self.space.notify_all();
        // Wake readers blocked on a full inbound queue so that they notice.
        sh.inbound_changed.notify_all();
        let _ = live.stream.shutdown(Shutdown::Both);
        if live.accepted {
            sh.sockets_accepted.fetch_sub(1, Ordering::AcqRel);
        }
        bump(&sh.counters.connections_lost, 1);
        sh.event(ConnectionEvent {
            peer: Some(self.peer),
            remote: live.remote,
            accepted: live.accepted,
            reason,
        });
        sh.forget_if_idle(self);
    }

    /// Fails pending requests and drops queued messages, recording `reason`.
    fn fail_all(&self, sh: &Shared, st: &mut ChannelState, reason: &Disconnect) {
        st.last_error = Some(reason.clone());
        bump(&sh.counters.messages_dropped, st.outbox.messages as u64);
        st.outbox.clear();
        st.batch_started = None;
        // Half a frame must never reach the next connection.
        if let Some(rest) = st.unfinished.take() {
            bump(&sh.counters.messages_dropped, rest.messages);
            st.writing_bytes = 0;
        }
        for (_, completer) in st.pending.drain() {
            completer.complete(Err(RequestError::ConnectionLost {
                peer: self.peer,
                reason: reason.clone(),
            }));
        }
    }

    /// Makes `stream` this channel's connection, replacing any older one, and returns its id.
    /// `None` if the transport is closing: `close` marks each channel closed under its
    /// lock, so a connection is either installed before (and closed by `close`) or refused.
    fn install(&self, sh: &Shared, stream: &Arc<TcpStream>, accepted: bool) -> Option<u64> {
        let id = sh.next_connection.fetch_add(1, Ordering::Relaxed);
        let old = self.state.lock().conn.as_ref().map(|c| c.id);
        if let Some(old) = old {
            self.lost(sh, old, Disconnect::Replaced);
        }
        let mut st = self.state.lock();
        if accepted {
            st.attaching -= 1;
        }
        if st.closed || sh.is_closing() {
            drop(st);
            sh.forget_if_idle(self);
            return None;
        }
        st.conn = Some(Live {
            id,
            stream: Arc::clone(stream),
            remote: stream.peer_addr().ok(),
            accepted,
        });
        st.last_error = None;
        st.last_write = Instant::now();
        drop(st);
        self.last_activity_ms.store(sh.millis(), Ordering::Relaxed);
        bump(&sh.counters.connections_established, 1);
        self.work.notify_all();
        self.space.notify_all();
        Some(id)
    }

    /// The writer loop of connection `connection`: batches queued messages into frames and
    /// sends keep-alives on a quiet connection. Returns when the connection is gone.
    fn write_loop(&self, sh: &Shared, connection: u64, stream: &TcpStream) {
        let c = &sh.config;
        let batch_delay = Duration::from_micros(c.batch_delay_us_max);
        loop {
            let mut st = self.state.lock();
            // Wait for work: queued messages, or a keep-alive falling due.
            let keepalive = loop {
                if st.conn.as_ref().map(|c| c.id) != Some(connection) {
                    return;
                }
                let due = st.last_write + c.keepalive_interval();
                if !st.writing {
                    if st.unfinished.is_some() {
                        break false;
                    }
                    if !st.outbox.is_empty() {
                        // Request Batch: wait a little for company unless the batch is full.
                        let started = st.batch_started.unwrap_or_else(Instant::now);
                        if st.outbox.envelope_bytes >= c.batch_bytes_max
                            || batch_delay.is_zero()
                            || Instant::now() >= started + batch_delay
                        {
                            break false;
                        }
                        self.work.wait_until(&mut st, started + batch_delay);
                        continue;
                    }
                    if Instant::now() >= due {
                        break true;
                    }
                }
                self.work.wait_until(&mut st, due);
            };
            // A write a sender began comes first, and alone: the outbox after it.
            if let Some(rest) = st.unfinished.take() {
                st.writing = true;
                drop(st);
                let result = write_fully(stream, &rest.buf, rest.written, c.keepalive_timeout());
                self.after_write(sh, rest.connection, rest.messages, rest.buf, result);
                continue;
            }
            // Everything queued goes in one write: the whole outbox, or a keep-alive.
            let (mut buf, taken) = if keepalive {
                let mut buf = std::mem::take(&mut st.spare);
                buf.clear();
                (buf, None)
            } else {
                Self::take_outbox(&mut st)
            };
            st.writing = true;
            drop(st);
            // Room was freed in the queue.
            self.space.notify_all();
            let messages = Self::finish_taken(sh, &mut buf, taken);
            let result = write_fully(stream, &buf, 0, c.keepalive_timeout());
            self.after_write(sh, connection, messages, buf, result);
        }
    }

    /// The reader loop of connection `connection`: decodes frames, completes requests with
    /// their responses and delivers everything else. Returns why the connection ended.
    fn read_loop(
        self: &Arc<Self>,
        sh: &Arc<Shared>,
        connection: u64,
        mut stream: &TcpStream,
        mut decoder: FrameDecoder,
        accepted: bool,
    ) -> Disconnect {
        let c = &sh.config;
        // Wake at least every keep-alive interval to check the silence and idle bounds.
        if let Err(err) = stream.set_read_timeout(Some(c.keepalive_interval())) {
            return Disconnect::io(&err);
        }
        let mut last_received = Instant::now();
        let mut chunk = vec![0; READ_CHUNK_BYTES];
        // Reused for every read: the envelopes of its frames.
        let mut batch = Vec::new();
        loop {
            // Every whole frame buffered (after a read, or right after the handshake) is
            // handled as one batch, so that responses to all of it leave together.
            let failure = loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => {
                        if let Err(reason) = self.on_frame(sh, frame, &mut batch) {
                            break Some(reason);
                        }
                    }
                    Ok(None) => break None,
                    Err(err) => break Some(Disconnect::Protocol(err)),
                }
            };
            // Frames before a bad one were whole and valid: they are handled.
            if !batch.is_empty() {
                self.on_envelopes(sh, connection, &mut batch);
            }
            if let Some(reason) = failure {
                return reason;
            }
            if let (true, Some(idle_ms)) = (accepted, c.idle_timeout_ms) {
                let last = self.last_activity_ms.load(Ordering::Relaxed);
                if sh.millis().saturating_sub(last) >= idle_ms {
                    return Disconnect::IdleTimeout { idle_ms };
                }
            }
            match stream.read(&mut chunk) {
                Ok(0) if decoder.is_mid_frame() => {
                    return Disconnect::TruncatedFrame {
                        bytes: decoder.buffered_bytes(),
                    };
                }
                Ok(0) => return Disconnect::PeerClosed,
                Ok(n) => {
                    last_received = Instant::now();
                    decoder.extend(&chunk[..n]);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if last_received.elapsed() >= c.keepalive_timeout() {
                        return Disconnect::KeepAliveTimeout {
                            silent_ms: c.keepalive_timeout_ms,
                        };
                    }
                }
                Err(err)
                    if decoder.is_mid_frame() && err.kind() == io::ErrorKind::ConnectionReset =>
                {
                    return Disconnect::TruncatedFrame {
                        bytes: decoder.buffered_bytes(),
                    };
                }
                Err(err) => return Disconnect::io(&err),
            }
        }
    }

    /// Checks one frame and adds its envelopes to `batch`.
    fn on_frame(
        &self,
        sh: &Shared,
        frame: Frame,
        batch: &mut Vec<Envelope>,
    ) -> Result<(), Disconnect> {
        match frame.kind {
            FrameKind::KeepAlive => Ok(()),
            FrameKind::Messages => {
                let before = batch.len();
                let n =
                    decode_envelopes_into(&frame.payload, batch).map_err(Disconnect::Protocol)?;
                bump(&sh.counters.messages_received, n as u64);
                self.last_activity_ms.store(sh.millis(), Ordering::Relaxed);
                if batch[before..]
                    .iter()
                    .any(|e| e.from != self.peer || e.to != sh.config.node)
                {
                    // A bad frame's envelopes are not handled; those before it are.
                    batch.truncate(before);
                    return Err(Disconnect::Protocol(crate::frame::FrameError::BadEnvelope));
                }
                Ok(())
            }
            // Handshake frames after the handshake: the peer is confused.
            _ => Err(Disconnect::Protocol(crate::frame::FrameError::BadHandshake)),
        }
    }

    /// Handles the envelopes of the frames of one read: responses complete their requests;
    /// requests and messages go to the handler (whose responses leave together, as one
    /// batch) or to the inbound queue (all at once).
    /// Empties `envelopes`.
    fn on_envelopes(
        self: &Arc<Self>,
        sh: &Arc<Shared>,
        connection: u64,
        envelopes: &mut Vec<Envelope>,
    ) {
        let mut replies = Vec::new();
        // Responses first take their requests out of the pending map, all under one lock;
        // the waiters are woken after it is released.
        let mut completed = Vec::new();
        let responses = envelopes
            .iter()
            .filter(|e| e.kind == MessageKind::Response)
            .count();
        if responses > 0 {
            let mut st = self.state.lock();
            for envelope in envelopes.iter() {
                if envelope.kind == MessageKind::Response {
                    match st.pending.remove(&envelope.correlation) {
                        Some(completer) => completed.push((completer, envelope.payload.clone())),
                        None => bump(&sh.counters.late_responses, 1),
                    }
                }
            }
        }
        if !completed.is_empty() {
            for (completer, payload) in completed {
                completer.complete(Ok(payload));
            }
            self.space.notify_all();
        }
        if responses == envelopes.len() {
            envelopes.clear();
            return;
        }
        let Some(handler) = &sh.handler else {
            // Everything but responses goes to the inbound queue, straight from the batch.
            let incoming = envelopes
                .drain(..)
                .filter(|e| e.kind != MessageKind::Response)
                .map(|e| {
                    let correlation = (e.kind == MessageKind::Request).then_some(e.correlation);
                    Incoming::new(e.from, e.payload, correlation)
                });
            sh.deliver(self, connection, incoming);
            return;
        };
        for envelope in envelopes.drain(..) {
            match envelope.kind {
                MessageKind::Response => {}
                MessageKind::Request | MessageKind::OneWay => {
                    let correlation =
                        (envelope.kind == MessageKind::Request).then_some(envelope.correlation);
                    let incoming = Incoming::new(envelope.from, envelope.payload, correlation);
                    let reply = handler(&incoming);
                    if let (Some(correlation), Some(reply)) = (correlation, reply) {
                        match self.encode(sh, MessageKind::Response, correlation, reply) {
                            Ok(queued) => replies.push(queued),
                            // A reply too large to send: the requester times out.
                            Err(_) => bump(&sh.counters.messages_dropped, 1),
                        }
                    }
                }
            }
        }
        if !replies.is_empty() {
            self.send_many(sh, replies);
        }
    }

    /// Queues several messages and gets them written together.
    fn send_many(&self, sh: &Shared, messages: Vec<Queued>) {
        let mut st = self.state.lock();
        let mut wake = false;
        for queued in messages {
            match self.admit(sh, st, queued.envelope_bytes(), false) {
                Ok(admitted) => st = admitted,
                // The connection is gone or closing: the requester learns it from there.
                Err(_) => return,
            }
            wake |= self.enqueue(sh, &mut st, queued);
        }
        self.flush(sh, st, Origin::Formed, wake);
    }
}

/// Who queued a message, which decides whether the caller may write it itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// One request.
    Request,
    /// A batch the caller formed: the responses to one read, or a request batch.
    Formed,
    /// One one-way message.
    OneWay,
}

/// A request in flight: wait on it for the response.
///
/// Dropping the handle abandons the request and frees its place in the in-flight window; a
/// response arriving later is counted in [`Stats::late_responses`] and discarded.
#[derive(Debug)]
pub struct ResponseHandle {
    channel: Arc<Channel>,
    id: CorrelationId,
    completion: Completion<Result<Bytes, RequestError>>,
    deadline: Instant,
    timeout: Duration,
    finished: bool,
    spin: bool,
}

impl ResponseHandle {
    /// The request's correlation id.
    pub fn correlation(&self) -> CorrelationId {
        self.id
    }

    /// Blocks until the response arrives, the deadline passes or the connection is lost.
    ///
    /// # Errors
    ///
    /// [`RequestError::Timeout`] after the deadline; [`RequestError::ConnectionLost`] as soon
    /// as the connection drops, with reason [`Disconnect::Shutdown`] when it drops because
    /// this transport shuts down while the request is in flight (see
    /// [`TcpTransport::shutdown`]); [`RequestError::Shutdown`] if the request was abandoned
    /// without an answer by a transport already shut down.
    pub fn wait(mut self) -> Result<Bytes, RequestError> {
        self.finished = true;
        // A response often arrives within tens of microseconds: look for it a little while
        // before sleeping, since waking a sleeping thread costs about as much again.
        let spin_until = Instant::now()
            + if self.spin {
                SPIN_BEFORE_SLEEP
            } else {
                Duration::ZERO
            };
        while !self.completion.is_ready() && Instant::now() < spin_until.min(self.deadline) {
            std::thread::yield_now();
        }
        match self.completion.wait_until(self.deadline) {
            WaitOutcome::Done(result) => result,
            WaitOutcome::Canceled => Err(RequestError::Shutdown),
            WaitOutcome::TimedOut => {
                self.forget();
                // The response may have raced the deadline; if so, take it.
                match self.completion.try_take() {
                    WaitOutcome::Done(result) => result,
                    _ => Err(RequestError::Timeout {
                        peer: self.channel.peer,
                        after: self.timeout,
                    }),
                }
            }
        }
    }

    /// Whether the outcome is already there (`wait` would not block).
    pub fn is_ready(&self) -> bool {
        self.completion.is_ready()
    }

    fn forget(&self) {
        let removed = self.channel.state.lock().pending.remove(&self.id);
        if removed.is_some() {
            // Dropping the completer only marks our own completion canceled; wake senders
            // waiting for a place in the in-flight window.
            drop(removed);
            self.channel.space.notify_all();
        }
    }
}

impl Drop for ResponseHandle {
    fn drop(&mut self) {
        if !self.finished {
            self.forget();
        }
    }
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
        Self::start(config, addr, None)
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
        Self::start(config, addr, Some(Arc::new(handler)))
    }

    fn start(
        config: Config,
        addr: impl ToSocketAddrs,
        handler: Option<Handler>,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            local_addr,
            started: Instant::now(),
            closing: AtomicBool::new(false),
            channels: Mutex::new(IdMap::default()),
            inbound: Mutex::new(VecDeque::new()),
            inbound_changed: Condvar::new(),
            sockets_accepted: AtomicUsize::new(0),
            events: Mutex::new(VecDeque::new()),
            counters: Counters::default(),
            handler,
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
    /// See [`SendError`]; with [`Overflow::Block`] this waits while the queue is full.
    pub fn send(&self, to: NodeId, payload: Bytes) -> Result<(), SendError> {
        let channel = self.channel_for(to)?;
        channel.send(&self.shared, MessageKind::OneWay, CorrelationId(0), payload)
    }

    /// Sends a request to `to` and returns a handle to wait on for the response, which must
    /// arrive within `timeout`. Many requests may be in flight at once (the Request
    /// Pipeline), up to `in_flight_max` per peer.
    ///
    /// # Errors
    ///
    /// See [`RequestError`]; with [`Overflow::Block`] this waits while the in-flight window
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
    /// [`Overflow::FailFast`] the window or queue is full) stops the batch there: the
    /// requests before it are sent and their handles are in `out`, the rest are not.
    /// With [`Overflow::Block`] this waits while the in-flight window or the queue is
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
        let deadline = Instant::now() + timeout;
        let sh = &self.shared;
        let mut inbound = sh.inbound.lock();
        loop {
            if let Some(incoming) = inbound.pop_front() {
                drop(inbound);
                sh.inbound_changed.notify_all();
                return Some(incoming);
            }
            if sh.is_closing()
                || sh
                    .inbound_changed
                    .wait_until(&mut inbound, deadline)
                    .timed_out()
            {
                let incoming = inbound.pop_front();
                if incoming.is_some() {
                    drop(inbound);
                    sh.inbound_changed.notify_all();
                }
                return incoming;
            }
        }
    }

    /// Moves up to `max` received requests and messages into `out`, waiting at most
    /// `timeout` for the first; returns how many were moved. Cheaper per message than
    /// [`recv`](Self::recv) when many arrive.
    pub fn recv_batch(&self, out: &mut Vec<Incoming>, max: usize, timeout: Duration) -> usize {
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
        let n = inbound.len().min(max);
        out.extend(inbound.drain(..n));
        drop(inbound);
        if n > 0 {
            sh.inbound_changed.notify_all();
        }
        n
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

fn accept_loop(sh: &Arc<Shared>, listener: &TcpListener) {
    for stream in listener.incoming() {
        if sh.is_closing() {
            return;
        }
        let Ok(stream) = stream else {
            // Accept errors (out of descriptors, a connection reset before accept) concern
            // one connection; keep serving the others.
            continue;
        };
        let remote = stream.peer_addr().ok();
        let over = sh.sockets_accepted.fetch_add(1, Ordering::AcqRel) >= sh.config.connections_max;
        let sh2 = Arc::clone(sh);
        let spawned = sh.spawn(format!("synod-conn-{}", sh.config.node.get()), move || {
            serve_accepted(&sh2, stream, remote, over);
        });
        if !spawned {
            sh.sockets_accepted.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn refuse(sh: &Shared, remote: Option<SocketAddr>, peer: Option<NodeId>, reason: Disconnect) {
    bump(&sh.counters.connections_refused, 1);
    sh.sockets_accepted.fetch_sub(1, Ordering::AcqRel);
    sh.event(ConnectionEvent {
        peer,
        remote,
        accepted: true,
        reason,
    });
}

/// Reads one handshake frame, leaving any bytes after it in the decoder.
fn read_handshake_frame(
    stream: &mut &TcpStream,
    decoder: &mut FrameDecoder,
) -> Result<Frame, HandshakeError> {
    let mut chunk = [0; 512];
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => return Ok(frame),
            Ok(None) => {}
            Err(err) => return Err(HandshakeError::Malformed(err)),
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(HandshakeError::Incomplete),
            Ok(n) => decoder.extend(&chunk[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(HandshakeError::Incomplete),
        }
    }
}

/// Handshake frames are small: before a peer is known, it cannot make this side buffer more.
/// After the handshake the limit is raised to `frame_bytes_max`.
fn handshake_decoder() -> FrameDecoder {
    FrameDecoder::new(HANDSHAKE_BYTES_MAX)
}

fn serve_accepted(
    sh: &Arc<Shared>,
    stream: TcpStream,
    remote: Option<SocketAddr>,
    over_limit: bool,
) {
    let timeout = Some(sh.config.connect_timeout());
    if stream.set_read_timeout(timeout).is_err() || stream.set_write_timeout(timeout).is_err() {
        refuse(sh, remote, None, Disconnect::PeerClosed);
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut decoder = handshake_decoder();
    let hello = read_handshake_frame(&mut &stream, &mut decoder)
        .and_then(|frame| handshake::decode_hello(&frame));
    let hello = match hello {
        Ok(hello) => hello,
        Err(err) => {
            let reason = match err {
                HandshakeError::Malformed(frame) => Disconnect::Protocol(frame),
                other => Disconnect::Handshake(other),
            };
            let _ = stream.shutdown(Shutdown::Both);
            refuse(sh, remote, None, reason);
            return;
        }
    };
    let dials = sh.channel(hello.from).is_some_and(|c| c.dial.is_some());
    let at_limit = over_limit.then_some(sh.config.connections_max);
    if let Err(reason) =
        handshake::check_hello(&hello, sh.config.cluster, sh.config.node, dials, at_limit)
    {
        let mut out = Vec::new();
        handshake::encode(FrameKind::Reject, &reason, &mut out);
        let _ = (&stream).write_all(&out);
        let _ = stream.shutdown(Shutdown::Write);
        refuse(
            sh,
            remote,
            Some(hello.from),
            Disconnect::Handshake(HandshakeError::Refused(reason)),
        );
        return;
    }
    let mut out = Vec::new();
    let welcome = Welcome {
        cluster: sh.config.cluster,
        node: sh.config.node,
    };
    handshake::encode(FrameKind::Welcome, &welcome, &mut out);
    if let Err(err) = (&stream).write_all(&out) {
        refuse(sh, remote, Some(hello.from), Disconnect::io(&err));
        return;
    }
    let channel = sh.channel_for_accepted(hello.from);
    run_connection(sh, &channel, stream, decoder, true);
}

/// Serves an established connection: spawns its reader and runs its writer on this thread
/// until the connection is lost.
fn run_connection(
    sh: &Arc<Shared>,
    channel: &Arc<Channel>,
    stream: TcpStream,
    mut decoder: FrameDecoder,
    accepted: bool,
) {
    decoder.set_frame_bytes_max(sh.config.frame_bytes_max);
    // One write call waits at most INLINE_WRITE_WAIT for room; the writer thread keeps
    // trying, and writes that make no progress for the keep-alive bound mean the peer
    // stopped reading.
    let _ = stream.set_write_timeout(Some(INLINE_WRITE_WAIT.min(sh.config.keepalive_timeout())));
    let _ = stream.set_nodelay(true);
    let stream = Arc::new(stream);
    let Some(id) = channel.install(sh, &stream, accepted) else {
        if accepted {
            sh.sockets_accepted.fetch_sub(1, Ordering::AcqRel);
        }
        return;
    };
    let (sh2, channel2, stream2) = (Arc::clone(sh), Arc::clone(channel), Arc::clone(&stream));
    let spawned = sh.spawn(
        format!("synod-read-{}-{}", sh.config.node.get(), channel.peer.get()),
        move || {
            let reason = channel2.read_loop(&sh2, id, &stream2, decoder, accepted);
            channel2.lost(&sh2, id, reason);
        },
    );
    if !spawned {
        let err = io::Error::other("no thread for the connection's reader");
        channel.lost(sh, id, Disconnect::io(&err));
        return;
    }
    channel.write_loop(sh, id, &stream);
}

/// Writes as much of `buf` as the socket takes before one write waits
/// [`INLINE_WRITE_WAIT`] for room, or (with `until`) before that time; returns how many
/// bytes that was. Without `until`, a peer that reads slowly but steadily keeps the caller
/// here until the whole buffer is written.
fn write_some(mut stream: &TcpStream, buf: &[u8], until: Option<Instant>) -> io::Result<usize> {
    let mut written = 0;
    while written < buf.len() {
        match stream.write(&buf[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                written += n;
                if until.is_some_and(|until| Instant::now() >= until) {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Writes `buf` from byte `from` on, failing with `TimedOut` once no byte has been taken
/// for `stall`.
fn write_fully(stream: &TcpStream, buf: &[u8], from: usize, stall: Duration) -> io::Result<()> {
    let mut written = from;
    let mut progress = Instant::now();
    loop {
        let n = write_some(stream, &buf[written..], None)?;
        written += n;
        if written == buf.len() {
            return Ok(());
        }
        let now = Instant::now();
        if n > 0 {
            progress = now;
        } else if now >= progress + stall {
            return Err(io::ErrorKind::TimedOut.into());
        }
    }
}

/// Dials `addr` and performs the dialer's side of the handshake.
fn dial(
    sh: &Shared,
    peer: NodeId,
    addr: SocketAddr,
) -> Result<(TcpStream, FrameDecoder), Disconnect> {
    let c = &sh.config;
    let stream =
        TcpStream::connect_timeout(&addr, c.connect_timeout()).map_err(|e| Disconnect::io(&e))?;
    stream
        .set_read_timeout(Some(c.connect_timeout()))
        .map_err(|e| Disconnect::io(&e))?;
    stream
        .set_write_timeout(Some(c.connect_timeout()))
        .map_err(|e| Disconnect::io(&e))?;
    let hello = Hello {
        protocol: PROTOCOL,
        cluster: c.cluster,
        from: c.node,
        to: peer,
    };
    let mut out = Vec::new();
    handshake::encode(FrameKind::Hello, &hello, &mut out);
    (&stream).write_all(&out).map_err(|e| Disconnect::io(&e))?;
    let mut decoder = handshake_decoder();
    let frame = read_handshake_frame(&mut &stream, &mut decoder).map_err(Disconnect::Handshake)?;
    handshake::decode_answer(&frame, c.cluster, peer).map_err(Disconnect::Handshake)?;
    Ok((stream, decoder))
}

/// Keeps a dialed channel connected: dial, serve until lost, back off, dial again.
fn dial_loop(sh: &Arc<Shared>, channel: &Arc<Channel>, addr: SocketAddr) {
    let c = &sh.config;
    let mut backoff = Backoff::new(
        c.backoff_initial_ms,
        c.backoff_max_ms,
        c.seed ^ channel.peer.get().rotate_left(17),
    );
    while !sh.is_closing() {
        match dial(sh, channel.peer, addr) {
            Ok((stream, decoder)) => {
                backoff.reset();
                run_connection(sh, channel, stream, decoder, false);
            }
            Err(reason) => {
                if matches!(reason, Disconnect::Handshake(_)) {
                    bump(&sh.counters.connections_refused, 1);
                }
                let mut st = channel.state.lock();
                // Messages queued while connecting cannot go anywhere: fail them now
                // rather than let them wait an unknown time.
                channel.fail_all(sh, &mut st, &reason);
                drop(st);
                channel.space.notify_all();
                sh.event(ConnectionEvent {
                    peer: Some(channel.peer),
                    remote: Some(addr),
                    accepted: false,
                    reason,
                });
            }
        }
        let until = Instant::now() + backoff.next_delay();
        let mut st = channel.state.lock();
        while !st.closed && !sh.is_closing() {
            if channel.space.wait_until(&mut st, until).timed_out() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameDecoder;

    fn queued(n: u64, len: usize) -> Queued {
        let envelope = Envelope {
            correlation: CorrelationId(n),
            kind: MessageKind::OneWay,
            from: NodeId::new(2),
            to: NodeId::new(1),
            payload: Bytes::from(vec![n as u8; len]),
        };
        let len = envelope.encoded_len();
        Queued { envelope, len }
    }

    #[test]
    fn the_outbox_lays_out_whole_frames_within_the_batch_limit_in_order() {
        let batch_bytes_max = 100;
        let mut outbox = Outbox::default();
        // 10-byte payloads (15-byte envelopes), one larger than a batch, then small again.
        let lens = [10, 10, 10, 10, 10, 10, 10, 300, 10, 10];
        for (n, &len) in lens.iter().enumerate() {
            outbox.push(&queued(n as u64, len), batch_bytes_max, 1 << 20);
        }
        assert_eq!(outbox.messages, lens.len());
        let mut buf = Vec::new();
        let taken = outbox.take(&mut buf).expect("not empty");
        assert!(outbox.is_empty() && outbox.bytes.is_empty());
        assert_eq!(outbox.take(&mut Vec::new()).map(|t| t.messages), None);
        finish_frame(&mut buf, taken.open, FrameKind::Messages, 1 << 20).unwrap();
        let mut decoder = FrameDecoder::new(1 << 20);
        decoder.extend(&buf);
        let mut envelopes = Vec::new();
        let mut frames = 0;
        while let Some(frame) = decoder.next_frame().unwrap() {
            frames += 1;
            let before = envelopes.len();
            decode_envelopes_into(&frame.payload, &mut envelopes).unwrap();
            assert!(
                frame.payload.len() <= batch_bytes_max || envelopes.len() - before == 1,
                "a frame over the batch limit holds one message"
            );
        }
        // 6 small envelopes fill a frame (90 bytes), the 7th starts another, the large one
        // has its own, and the last two share one.
        assert_eq!(frames, 4);
        assert_eq!(taken.frames, 4);
        assert_eq!(taken.messages, lens.len() as u64);
        let got: Vec<(u64, usize)> = envelopes
            .iter()
            .map(|e| (e.correlation.0, e.payload.len()))
            .collect();
        let want: Vec<(u64, usize)> = lens
            .iter()
            .enumerate()
            .map(|(n, &l)| (n as u64, l))
            .collect();
        assert_eq!(got, want);
        // Cleared after a lost connection: nothing is left to write.
        outbox.push(&queued(1, 10), batch_bytes_max, 1 << 20);
        outbox.clear();
        assert!(outbox.is_empty() && outbox.take(&mut Vec::new()).is_none());
    }
}
