//! The client side of a node: one event loop serving every client connection, with
//! explicit limits and an idle timeout.
// tidy: driver: accepts and serves client connections on an event loop.
//!
//! [`spawn_listener`] starts one thread ([`super::CLIENT_THREAD`]) that accepts clients on
//! the node's client address and serves all of them on a `mio` event loop: a connection's
//! bytes are read, handed to the system's [`ServeClient`] (which parses the requests, answers
//! what it can at once and batches the rest for the worker), and its replies written by
//! this same thread, in order. The worker answers through each connection's [`ConnHandle`]:
//! its answers are queued to the loop, which the first of them wakes (one wake-up for all
//! the answers of a drain that arrive before the loop runs).
//!
//! The loop knows nothing of the protocol spoken. It keeps the limits ([`ClientLimits`]):
//! at most `connections_max` connections (past it a new one is sent the system's refusal
//! and closed, as Redis does past `maxclients`, gracefully: see below); at most `buffer_bytes_max` of replies
//! waiting to be written on a connection, past which its requests are no longer read (a
//! client that does not read its replies is held back, and only it); requests in flight
//! per connection are the [`ServeClient`]'s to bound, with [`ClientLimits::in_flight_max`].
//! A connection that waits on its client (for a request, or for it to take its replies)
//! longer than the idle timeout is closed. A connection being closed (an error that ends
//! it, `QUIT`, its client gone) is closed once its last replies are written (with TLS,
//! their records and the closing alert too), or [`CLOSE_FLUSH_TIMEOUT`] after it began
//! closing if its client does not take them. Once its replies are written, its sending side
//! is shut and what the client still sends is read and dropped (at most
//! [`CLOSE_DRAIN_BYTES_MAX`]) until the client closes too or that timeout passes: a socket
//! closed with unread bytes resets the connection, and a reset can lose the replies the
//! client has not read yet (requests pipelined after `QUIT`, or past an error that ends
//! the connection). A refused connection (past `connections_max`, or plain text sent to a
//! TLS port) is closed the same way, outside the table of connections: once its refusal is
//! written its sending side is shut and what its client sends is dropped, at most
//! [`REFUSED_DRAIN_BYTES_MAX`] and for at most [`REFUSED_LINGER`], at most
//! [`REFUSED_LINGERING_MAX`] of them at once, so that a client that sent a request before
//! reading still reads why it was refused rather than a reset.
//!
//! When the node has users ([`Connections::with_auth`]), a new connection starts
//! unauthenticated: the [`ServeClient`] checks its credentials (RESP's `AUTH`) against
//! [`ConnIo::auth`] and sets [`ConnIo::authenticated`]; until then the loop closes it once
//! it has been open [`ClientLimits::auth_timeout`] or has sent more than
//! [`ClientLimits::auth_bytes_max`] bytes, whatever the protocol, so connections that never
//! authenticate cannot pile up or make the node buffer for them. A panic while serving one connection closes that
//! connection only; any other panic on the loop stops the process.
//!
//! With TLS on ([`Connections::with_tls`]), every connection speaks TLS, driven without
//! blocking: bytes read go through the session (`read_tls`, `process_new_packets`), replies
//! are encrypted into it and its records written as the socket takes them. A connection
//! whose first byte is not a TLS handshake record is sent [`ServeClient::tls_required`] in
//! plain text and closed; one whose handshake does not finish within
//! [`TLS_HANDSHAKE_TIMEOUT`] or [`TLS_HANDSHAKE_BYTES_MAX`] is closed.
//!
//! Memory: a connection keeps no buffer while it is idle (reads go through one buffer of
//! the loop's, [`READ_CHUNK_BYTES`]; only a request split across reads is kept), so an idle
//! connection costs its socket, its entry in the table and the system's state.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;
use rustls::{ServerConfig, ServerConnection};

use super::auth::{AUTH_BYTES_MAX, AUTH_TIMEOUT_MS, ClientAuth};
use super::deadlines::Deadlines;
use super::process::{CLIENT_THREAD, fail_stop};
use super::tls::{TLS_HANDSHAKE_BYTES_MAX, TLS_HANDSHAKE_TIMEOUT};

/// Bytes the loop reads from a connection at a time (one buffer for all connections).
pub const READ_CHUNK_BYTES: usize = 64 << 10;
/// Replies waiting to be written to one connection past which its requests are no longer
/// read, unless configured otherwise ([`ClientLimits::buffer_bytes_max`]).
pub const CLIENT_BUFFER_BYTES_MAX: usize = 256 << 10;
/// Requests of one connection in flight at once, unless configured otherwise
/// ([`ClientLimits::in_flight_max`]): a client pipelining more has the rest read once
/// earlier ones are answered.
pub const CLIENT_IN_FLIGHT_MAX: usize = 1024;
/// Events the loop takes from the kernel per wake-up.
const EVENTS_PER_POLL: usize = 1024;
/// How long the loop stops accepting when the process is out of file descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);
/// How long a connection that is being closed has to take what is still to be written to it
/// (its last replies, such as the error that closes it, and with TLS the encrypted records
/// and the closing alert): past it the connection is closed with them unsent.
pub const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// The most bytes read and dropped from a client after its connection's last replies were
/// written, while waiting for it to close its side; past it the connection is closed at
/// once (its client keeps sending to a connection that said it is closing).
pub const CLOSE_DRAIN_BYTES_MAX: usize = 1 << 20;

/// How long a refused connection (past `connections_max`, or plain text sent to a TLS
/// port) is kept once its refusal is written and its sending side shut, for its client to
/// read the refusal and close: what the client sends meanwhile is read and dropped. Past
/// it, the connection is closed.
pub const REFUSED_LINGER: Duration = Duration::from_secs(2);

/// The most bytes read and dropped from a refused connection while it lingers; past it,
/// the connection is closed at once.
pub const REFUSED_DRAIN_BYTES_MAX: usize = 64 << 10;

/// Refused connections lingering at once ([`REFUSED_LINGER`]); a refusal past it closes
/// the one refused longest ago (its client has had the most time to read why).
pub const REFUSED_LINGERING_MAX: usize = 256;

/// Takes from the front of `queue`, kept in the order of its times, the id of every entry
/// whose time has come by `now`.
fn take_due(queue: &mut VecDeque<(Instant, u64)>, now: Instant) -> Vec<u64> {
    let mut due = Vec::new();
    while let Some(&(t, id)) = queue.front() {
        if t > now {
            break;
        }
        queue.pop_front();
        due.push(id);
    }
    due
}

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Connection ids start here (tokens below are the listener's and the waker's).
const FIRST_CONN: u64 = 2;

/// What serves the client connections of a node: a system's protocol (RESP's is
/// [`crate::resp::serve::Resp`]), driven by the event loop.
///
/// Every method runs on the loop's thread and must not block: what needs the worker is
/// batched (in [`ServeClient::Batch`]) and handed over by [`ServeClient::submit`] once per
/// wake-up of the loop; the worker's answers come back as [`ServeClient::Delivery`]s through
/// the connection's [`ConnHandle`].
pub trait ServeClient: Send + Sync + 'static {
    /// What a connection keeps (its parser, its requests in flight, its session...).
    type Conn: Send + 'static;
    /// What is delivered to a connection from another thread (an answer, a pushed value).
    type Delivery: Send + 'static;
    /// What the loop collects for the worker while it serves its connections.
    type Batch: Default + Send + 'static;

    /// A new connection, reachable from other threads through `handle`.
    fn open(&self, handle: ConnHandle<Self::Delivery>) -> Self::Conn;

    /// Takes what it can from `io.input` (the bytes received and not used yet) and
    /// writes what it can answer to `io.output`, collecting work for the worker in
    /// `batch`. Called after bytes arrive, after a delivery, after replies are written.
    fn progress(&self, conn: &mut Self::Conn, io: &mut ConnIo<'_>, batch: &mut Self::Batch);

    /// Takes `delivery` (then [`ServeClient::progress`] is called).
    fn deliver(
        &self,
        conn: &mut Self::Conn,
        delivery: Self::Delivery,
        io: &mut ConnIo<'_>,
        batch: &mut Self::Batch,
    );

    /// `io.deadline` (set by the other methods) has passed.
    fn expire(&self, conn: &mut Self::Conn, io: &mut ConnIo<'_>, batch: &mut Self::Batch);

    /// The connection is closed (its requests in flight will not be answered to it).
    fn closed(&self, conn: &mut Self::Conn) {
        let _ = conn;
    }

    /// Hands what the loop collected to the worker, at once for every connection.
    fn submit(&self, batch: &mut Self::Batch);

    /// How the node names itself in a message about a connection (`synod node 3`).
    fn node_name(&self) -> String;

    /// What a connection refused at the limit is sent before it is closed (in the
    /// protocol's words: RESP's is an error reply).
    fn refusal(&self) -> &'static [u8];

    /// What a connection that sends plain text to a TLS-only port is sent, in plain text,
    /// before it is closed.
    fn tls_required(&self) -> &'static [u8];
}

/// One connection's bytes and state, as a [`ServeClient`] sees them on each call.
#[derive(Debug)]
pub struct ConnIo<'a> {
    /// Bytes received and not used yet: a [`ServeClient`] removes what it uses.
    pub input: &'a mut Vec<u8>,
    /// Bytes to write to the client, in order.
    pub output: &'a mut Vec<u8>,
    /// The limits the connection runs under.
    pub limits: &'a ClientLimits,
    /// Set to close the connection once `output` is written.
    pub close: bool,
    /// Whether the connection has work in progress (requests in flight): while it does, it
    /// is not waiting on its client, and the idle timeout does not run.
    pub busy: bool,
    /// When to call [`ServeClient::expire`] (a request's timeout).
    pub deadline: Option<Instant>,
    /// The users clients authenticate as; `None`: the node asks for no authentication.
    pub auth: Option<&'a ClientAuth>,
    /// Whether the connection has authenticated (always, when the node has no users): set
    /// by the [`ServeClient`] once the client's credentials hold.
    pub authenticated: bool,
}

impl ConnIo<'_> {
    /// Whether the replies waiting to be written have reached the limit: a server stops
    /// taking requests of this connection until they are written.
    #[must_use]
    pub fn output_full(&self) -> bool {
        self.output.len() >= self.limits.buffer_bytes_max
    }
}

/// What is delivered to the loop from other threads, with the connection it is for.
struct Inbox<D> {
    queue: Mutex<Vec<(u64, D)>>,
    /// Whether the loop has been woken and not yet taken the queue.
    woken: AtomicBool,
    waker: Waker,
}

impl<D> Inbox<D> {
    fn deliver(&self, conn: u64, delivery: D) {
        self.queue.lock().push((conn, delivery));
        if !self.woken.swap(true, Ordering::AcqRel) {
            // The loop runs on: it finds this when it next takes the queue.
            let _ = self.waker.wake();
        }
    }
}

/// A way to reach one connection from another thread: what is delivered goes to the
/// loop, which hands it to [`ServeClient::deliver`] (or drops it, if the connection has
/// closed meanwhile).
pub struct ConnHandle<D> {
    inbox: Arc<Inbox<D>>,
    conn: u64,
    open: Arc<AtomicBool>,
    peer: Option<SocketAddr>,
}

impl<D> Clone for ConnHandle<D> {
    fn clone(&self) -> Self {
        ConnHandle {
            inbox: Arc::clone(&self.inbox),
            conn: self.conn,
            open: Arc::clone(&self.open),
            peer: self.peer,
        }
    }
}

impl<D: Send> std::fmt::Debug for ConnHandle<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnHandle")
            .field("conn", &self.conn)
            .field("open", &self.is_open())
            .finish()
    }
}

impl<D: Send> ConnHandle<D> {
    /// Delivers `delivery` to the connection, waking the loop if it sleeps.
    pub fn deliver(&self, delivery: D) {
        if self.is_open() {
            self.inbox.deliver(self.conn, delivery);
        }
    }

    /// Whether the connection is still open.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// The connection's number, unique in the node's process.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.conn
    }

    /// The client's address, if the socket knew it.
    #[must_use]
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }
}

/// A handle that reaches no loop, for tests that drive a [`ServeClient`] by hand (what is
/// delivered to it is never taken).
#[cfg(test)]
pub(crate) fn detached_handle<D>() -> ConnHandle<D> {
    let poll = Poll::new().expect("an event queue");
    let waker = Waker::new(poll.registry(), WAKER).expect("a waker");
    ConnHandle {
        inbox: Arc::new(Inbox {
            queue: Mutex::new(Vec::new()),
            woken: AtomicBool::new(false),
            waker,
        }),
        conn: FIRST_CONN,
        open: Arc::new(AtomicBool::new(true)),
        peer: None,
    }
}

/// How many client connections are open: what a graceful stop waits on.
pub struct Connections {
    limits: ClientLimits,
    open: AtomicUsize,
    auth: Option<Arc<ClientAuth>>,
    tls: Option<Arc<ServerConfig>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("limits", &self.limits)
            .field("open", &self.len())
            .field("auth", &self.auth.is_some())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Connections {
    /// An empty table for connections under `limits`.
    #[must_use]
    pub fn new(limits: ClientLimits) -> Connections {
        Connections {
            limits,
            open: AtomicUsize::new(0),
            auth: None,
            tls: None,
        }
    }

    /// Clients must authenticate as one of `auth`'s users (if `Some`) before anything else.
    #[must_use]
    pub fn with_auth(mut self, auth: Option<Arc<ClientAuth>>) -> Connections {
        self.auth = auth;
        self
    }

    /// Every connection speaks TLS with `config`, and only TLS.
    #[must_use]
    pub fn with_tls(mut self, config: Arc<ServerConfig>) -> Connections {
        self.tls = Some(config);
        self
    }

    /// How many connections are open.
    #[must_use]
    pub fn len(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Whether no connection is open.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The limits the connections run under.
    #[must_use]
    pub fn limits(&self) -> ClientLimits {
        self.limits
    }
}

/// Limits on the client connections of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// Connections open at once; past it a new one is refused.
    pub connections_max: usize,
    /// How long a connection may wait on its client; `None`: for ever.
    pub idle_timeout: Option<Duration>,
    /// Replies waiting to be written to one connection past which its requests are no
    /// longer read.
    pub buffer_bytes_max: usize,
    /// Requests of one connection in flight at once.
    pub in_flight_max: usize,
    /// How long a connection may stay open without authenticating, when the node has users.
    pub auth_timeout: Duration,
    /// Bytes a connection may send before it has authenticated, when the node has users.
    pub auth_bytes_max: usize,
}

impl ClientLimits {
    /// The limits unless configured otherwise: `connections_max` connections, the rest at
    /// their defaults.
    #[must_use]
    pub fn with_connections(connections_max: usize, idle_timeout: Option<Duration>) -> Self {
        ClientLimits {
            connections_max,
            idle_timeout,
            buffer_bytes_max: CLIENT_BUFFER_BYTES_MAX,
            in_flight_max: CLIENT_IN_FLIGHT_MAX,
            auth_timeout: Duration::from_millis(AUTH_TIMEOUT_MS),
            auth_bytes_max: AUTH_BYTES_MAX,
        }
    }
}

/// One connection as the loop keeps it.
struct Conn<S: ServeClient> {
    stream: TcpStream,
    /// The TLS session, when TLS is on.
    tls: Option<Box<ServerConnection>>,
    /// While the TLS handshake runs: when it must have finished, and the bytes received.
    handshake: Option<(Instant, usize)>,
    /// The connection sent plain text to a TLS port.
    not_tls: bool,
    state: S::Conn,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Bytes of `output` already written.
    written: usize,
    /// The socket may have bytes to read (edge-triggered: set by an event, cleared when a
    /// read would block).
    readable: bool,
    /// The socket may take bytes (likewise).
    writable: bool,
    /// The client closed its side: nothing more to read.
    eof: bool,
    /// An event said the client's side is closed or failed: read until a read returns 0 or
    /// fails, a short read included (its end raises no further event).
    read_closed: bool,
    close: bool,
    busy: bool,
    deadline: Option<Instant>,
    /// When a connection that is being closed is closed whatever is left to write (set when
    /// it starts closing).
    close_by: Option<Instant>,
    /// The TLS closing alert (`close_notify`) has been queued.
    close_notified: bool,
    /// Bytes read and dropped since the sending side was shut (`None`: not shut yet).
    drained: Option<usize>,
    /// Since when the connection waits on its client.
    idle_since: Instant,
    open: Arc<AtomicBool>,
    authenticated: bool,
    /// Bytes read while the connection was not authenticated.
    unauthenticated_bytes: usize,
}

/// The event loop's state.
struct Loop<S: ServeClient> {
    serve: Arc<S>,
    listener: TcpListener,
    poll: Poll,
    inbox: Arc<Inbox<S::Delivery>>,
    conns: BTreeMap<u64, Conn<S>>,
    next_id: u64,
    connections: Arc<Connections>,
    limits: ClientLimits,
    tls: Option<Arc<ServerConfig>>,
    batch: S::Batch,
    chunk: Vec<u8>,
    /// Each connection's next deadline ([`Conn::next_deadline`]), earliest first.
    deadlines: Deadlines<u64, Instant>,
    /// No accepting before this (out of file descriptors).
    accept_paused_until: Option<Instant>,
    next_idle_scan: Instant,
    auth: Option<Arc<ClientAuth>>,
    /// When each connection accepted unauthenticated must have authenticated, in the order
    /// accepted (one timeout for all, so the earliest is first).
    auth_deadlines: VecDeque<(Instant, u64)>,
    /// Refused connections lingering until their client closes ([`REFUSED_LINGER`]).
    refused: BTreeMap<u64, Refused>,
    /// When each lingering refused connection is closed, earliest (refused first) first.
    refused_until: VecDeque<(Instant, u64)>,
}

/// A refused connection: its refusal written and its sending side shut, what its client
/// still sends read and dropped until it closes.
struct Refused {
    stream: TcpStream,
    /// Bytes read and dropped.
    drained: usize,
}

/// Starts the client thread ([`CLIENT_THREAD`], vital), serving clients on `listener`
/// with `serve` under the limits of `connections`, which it keeps.
///
/// # Errors
///
/// If the event loop cannot be set up (no `epoll`, out of file descriptors).
pub fn spawn_listener<S: ServeClient>(
    listener: std::net::TcpListener,
    connections: Arc<Connections>,
    serve: Arc<S>,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    let limits = connections.limits;
    let auth = connections.auth.clone();
    let tls = connections.tls.clone();
    let mut event_loop = Loop {
        serve,
        listener,
        poll,
        inbox: Arc::new(Inbox {
            queue: Mutex::new(Vec::new()),
            woken: AtomicBool::new(false),
            waker,
        }),
        conns: BTreeMap::new(),
        next_id: FIRST_CONN,
        connections,
        limits,
        tls,
        batch: S::Batch::default(),
        chunk: vec![0; READ_CHUNK_BYTES],
        deadlines: Deadlines::default(),
        accept_paused_until: None,
        next_idle_scan: Instant::now(),
        auth,
        auth_deadlines: VecDeque::new(),
        refused: BTreeMap::new(),
        refused_until: VecDeque::new(),
    };
    std::thread::Builder::new()
        .name(CLIENT_THREAD.into())
        .spawn(move || {
            // A panic serving one connection is caught where it is served; one elsewhere on
            // the loop leaves no client served: the process stops.
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| event_loop.run()));
            match run {
                Ok(Err(e)) => fail_stop(&format!("the client event loop failed: {e}")),
                _ => fail_stop(&format!("thread {CLIENT_THREAD} ended")),
            }
        })?;
    Ok(())
}

impl<S: ServeClient> Loop<S> {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        let mut touched: Vec<u64> = Vec::new();
        loop {
            let timeout = self.timeout();
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            touched.clear();
            for event in &events {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {
                        super::trace::mark(super::trace::Step::AnswerTaken);
                        self.inbox.woken.store(false, Ordering::Release);
                        let delivered = std::mem::take(&mut *self.inbox.queue.lock());
                        for (id, delivery) in delivered {
                            if self.deliver(id, delivery) {
                                touched.push(id);
                            }
                        }
                    }
                    Token(token) => {
                        let id = token as u64;
                        if let Some(conn) = self.conns.get_mut(&id) {
                            if event.is_readable() || event.is_read_closed() || event.is_error() {
                                conn.readable = true;
                            }
                            if event.is_read_closed() || event.is_error() {
                                conn.read_closed = true;
                            }
                            if event.is_writable() || event.is_write_closed() || event.is_error() {
                                conn.writable = true;
                            }
                            touched.push(id);
                        } else if self.refused.contains_key(&id) {
                            self.drain_refused(id);
                        }
                    }
                }
            }
            if self
                .accept_paused_until
                .is_some_and(|t| Instant::now() >= t)
            {
                self.accept_paused_until = None;
                self.accept();
            }
            self.expire(&mut touched);
            self.expire_unauthenticated();
            self.expire_refused();
            touched.sort_unstable();
            touched.dedup();
            for &id in &touched {
                self.drive(id);
            }
            self.serve.submit(&mut self.batch);
            self.scan_idle();
        }
    }

    /// How long the loop may sleep: until the next deadline, idle scan or accept.
    fn timeout(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let mut until = self.deadlines.earliest();
        if self.limits.idle_timeout.is_some() && !self.conns.is_empty() {
            until = Some(until.map_or(self.next_idle_scan, |t| t.min(self.next_idle_scan)));
        }
        if let Some(t) = self.accept_paused_until {
            until = Some(until.map_or(t, |u| u.min(t)));
        }
        if let Some(&(t, _)) = self.auth_deadlines.front() {
            until = Some(until.map_or(t, |u| u.min(t)));
        }
        if let Some(&(t, _)) = self.refused_until.front() {
            until = Some(until.map_or(t, |u| u.min(t)));
        }
        until.map(|t| t.saturating_duration_since(now))
    }

    fn accept(&mut self) {
        if self.accept_paused_until.is_some() {
            return;
        }
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(_) => {
                    // Out of file descriptors (EMFILE), most likely: every accept fails at
                    // once until one is freed; try again in a while rather than spin.
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    return;
                }
            };
            if self.conns.len() >= self.limits.connections_max {
                // Past the limit: told why, and closed once its client has read it.
                self.refuse(stream, self.serve.refusal());
                continue;
            }
            let _ = stream.set_nodelay(true);
            let Some(id) = self.register_new(&mut stream, Interest::READABLE | Interest::WRITABLE)
            else {
                continue;
            };
            let open = Arc::new(AtomicBool::new(true));
            let handle = ConnHandle {
                inbox: Arc::clone(&self.inbox),
                conn: id,
                open: Arc::clone(&open),
                peer: Some(peer),
            };
            let tls = match &self.tls {
                Some(config) => match ServerConnection::new(Arc::clone(config)) {
                    Ok(session) => Some(Box::new(session)),
                    Err(_) => continue,
                },
                None => None,
            };
            let handshake = tls.as_ref().map(|_| {
                let until = Instant::now() + TLS_HANDSHAKE_TIMEOUT;
                self.deadlines.set(id, Some(until));
                (until, 0)
            });
            let serve = Arc::clone(&self.serve);
            let Ok(state) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve.open(handle)))
            else {
                continue;
            };
            self.conns.insert(
                id,
                Conn {
                    stream,
                    tls,
                    handshake,
                    not_tls: false,
                    state,
                    input: Vec::new(),
                    output: Vec::new(),
                    written: 0,
                    readable: false,
                    writable: true,
                    eof: false,
                    read_closed: false,
                    close: false,
                    close_by: None,
                    close_notified: false,
                    drained: None,
                    busy: false,
                    deadline: None,
                    idle_since: Instant::now(),
                    open,
                    authenticated: self.auth.is_none(),
                    unauthenticated_bytes: 0,
                },
            );
            if self.auth.is_some() {
                self.auth_deadlines
                    .push_back((Instant::now() + self.limits.auth_timeout, id));
            }
            self.connections.open.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Hands `delivery` to connection `id`: whether it is still open.
    fn deliver(&mut self, id: u64, delivery: S::Delivery) -> bool {
        let serve = Arc::clone(&self.serve);
        self.with_conn(id, |conn, io, batch| {
            serve.deliver(conn, delivery, io, batch);
        })
    }

    /// Calls `f` with connection `id`'s state and bytes, catching a panic (which closes
    /// the connection): whether the connection is still open.
    fn with_conn(
        &mut self,
        id: u64,
        f: impl FnOnce(&mut S::Conn, &mut ConnIo<'_>, &mut S::Batch),
    ) -> bool {
        let Some(conn) = self.conns.get_mut(&id) else {
            return false;
        };
        let limits = self.limits;
        let batch = &mut self.batch;
        let mut io = ConnIo {
            input: &mut conn.input,
            output: &mut conn.output,
            limits: &limits,
            close: conn.close,
            busy: conn.busy,
            deadline: conn.deadline,
            auth: self.auth.as_deref(),
            authenticated: conn.authenticated,
        };
        let state = &mut conn.state;
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            f(state, &mut io, batch);
        }));
        let (close, busy, deadline, authenticated) =
            (io.close, io.busy, io.deadline, io.authenticated);
        if served.is_err() {
            eprintln!(
                "{}: serving a client connection panicked; that connection is closed",
                self.serve.node_name()
            );
            self.close(id);
            return false;
        }
        conn.close = close;
        conn.authenticated = authenticated;
        if conn.busy && !busy {
            conn.idle_since = Instant::now();
        }
        conn.busy = busy;
        if deadline != conn.deadline {
            conn.deadline = deadline;
            self.deadlines.set(id, conn.next_deadline());
        }
        true
    }

    /// Calls [`ServeClient::expire`] for every connection whose deadline has passed.
    fn expire(&mut self, touched: &mut Vec<u64>) {
        let now = Instant::now();
        while let Some(id) = self.deadlines.pop_due(now) {
            let handshake_over = self
                .conns
                .get(&id)
                .is_some_and(|c| c.handshake.is_some_and(|(d, _)| d <= now));
            let flush_over = self
                .conns
                .get(&id)
                .is_some_and(|c| c.close_by.is_some_and(|d| d <= now));
            if handshake_over || flush_over {
                self.close(id);
                continue;
            }
            let due = self
                .conns
                .get(&id)
                .is_some_and(|c| c.deadline.is_some_and(|d| d <= now));
            if due {
                let serve = Arc::clone(&self.serve);
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.deadline = None;
                }
                if self.with_conn(id, |conn, io, batch| serve.expire(conn, io, batch)) {
                    touched.push(id);
                }
            }
            // Its deadline fired (and was cleared): the next one, if any (a handshake
            // that has finished, say, leaves its request's).
            if let Some(conn) = self.conns.get(&id) {
                self.deadlines.set(id, conn.next_deadline());
            }
        }
    }

    /// Reads, serves and writes connection `id` until it can do no more without waiting.
    fn drive(&mut self, id: u64) {
        let serve = Arc::clone(&self.serve);
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            let mut moved = false;
            // TLS records waiting go first (the handshake's, or replies already encrypted).
            if conn.writable && conn.tls.as_ref().is_some_and(|t| t.wants_write()) {
                match conn.flush_tls() {
                    Ok(()) => moved = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.writable = false,
                    Err(_) => {
                        self.close(id);
                        return;
                    }
                }
            }
            // Write what is waiting first: it may free room to serve more.
            if conn.writable && conn.written < conn.output.len() {
                let at = conn.written;
                match conn.write_plain(at) {
                    Ok(0) => {
                        self.close(id);
                        return;
                    }
                    Ok(n) => {
                        super::trace::mark(super::trace::Step::ReplyWritten);
                        conn.written += n;
                        moved = true;
                        conn.idle_since = Instant::now();
                        if conn.written == conn.output.len() {
                            conn.output.clear();
                            conn.written = 0;
                            release(&mut conn.output);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.writable = false,
                    Err(_) => {
                        self.close(id);
                        return;
                    }
                }
            }
            if conn.close {
                if conn.close_by.is_none() {
                    conn.close_by = Some(Instant::now() + CLOSE_FLUSH_TIMEOUT);
                    self.deadlines.set(id, conn.next_deadline());
                }
                if conn.written == conn.output.len() {
                    if !conn.close_notified
                        && let Some(tls) = conn.tls.as_mut()
                    {
                        // The client reads the end of the session, not a cut connection.
                        tls.send_close_notify();
                        conn.close_notified = true;
                        moved = true;
                    } else if !conn.tls.as_ref().is_some_and(|t| t.wants_write()) {
                        // Everything written, the TLS records too: only now is it closed
                        // (the socket not taking them yet is no reason to drop them), once
                        // its client has closed its side too.
                        if conn.eof || !conn.drain(&mut self.chunk) {
                            self.close(id);
                        }
                        return;
                    }
                }
                if moved {
                    continue;
                }
                return;
            }
            let pending = conn.output.len() - conn.written;
            let room = pending < self.limits.buffer_bytes_max;
            if conn.readable && !conn.eof && room && conn.input.len() < READ_CHUNK_BYTES * 64 {
                match conn.read_plain(&mut self.chunk) {
                    Ok(0) => {
                        conn.eof = true;
                        moved = true;
                    }
                    Ok(n) => {
                        super::trace::mark(super::trace::Step::RequestRead);
                        conn.input.extend_from_slice(&self.chunk[..n]);
                        if conn.tls.is_none() && !conn.read_closed && n < self.chunk.len() {
                            // A plain socket that filled less than the buffer has been
                            // emptied: bytes arriving after this read raise a new
                            // (edge-triggered) event, so reading again to hear it would
                            // block only costs a system call per request. Not once the
                            // client's end has come (the event said so): an end that
                            // arrived with the last bytes raised its event with them, and
                            // only a read that returns 0 finds it.
                            conn.readable = false;
                        }
                        conn.idle_since = Instant::now();
                        if !conn.authenticated {
                            conn.unauthenticated_bytes += n;
                        }
                        moved = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        conn.readable = false;
                        // What was read may have made TLS records to send (the handshake's):
                        // go round again to write them.
                        if conn.writable && conn.tls.as_ref().is_some_and(|t| t.wants_write()) {
                            moved = true;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => moved = true,
                    Err(_) => {
                        if conn.not_tls {
                            // Told why in words it reads, and closed once its client has
                            // read it.
                            if let Some(stream) = self.close_keeping_socket(id) {
                                self.refuse(stream, serve.tls_required());
                            }
                        } else {
                            self.close(id);
                        }
                        return;
                    }
                }
            }
            let before = (self.conn_sizes(id), self.conns.get(&id).map(|c| c.busy));
            if !self.with_conn(id, |conn, io, batch| serve.progress(conn, io, batch)) {
                return;
            }
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            if !conn.authenticated
                && conn.unauthenticated_bytes > self.limits.auth_bytes_max
                && !conn.close
            {
                // Served what it sent (an AUTH among it counts), and still not
                // authenticated: no more is read from it.
                self.close(id);
                return;
            }
            if ((conn.input.len(), conn.output.len()), Some(conn.busy)) != before {
                moved = true;
            }
            if conn.eof && !conn.busy && conn.written == conn.output.len() {
                // The client is gone and nothing is left to answer it: closed once what is
                // written has gone out (TLS records may wait for the socket).
                conn.close = true;
                continue;
            }
            if !moved {
                if conn.input.is_empty() {
                    release(&mut conn.input);
                }
                return;
            }
        }
    }

    fn conn_sizes(&self, id: u64) -> (usize, usize) {
        self.conns
            .get(&id)
            .map_or((0, 0), |c| (c.input.len(), c.output.len()))
    }

    fn close(&mut self, id: u64) {
        drop(self.close_keeping_socket(id));
    }

    /// Closes connection `id` as [`close`](Self::close) does, but returns its socket, no
    /// longer registered, instead of closing it.
    fn close_keeping_socket(&mut self, id: u64) -> Option<TcpStream> {
        let mut conn = self.conns.remove(&id)?;
        self.deadlines.set(id, None);
        conn.open.store(false, Ordering::Release);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let serve = Arc::clone(&self.serve);
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            serve.closed(&mut conn.state);
        }));
        self.connections.open.fetch_sub(1, Ordering::AcqRel);
        Some(conn.stream)
    }

    /// Registers `stream` with the poll for `interest` under a new id (served connections
    /// and refused ones draw from the one counter, so their tokens never collide): the id,
    /// or `None` if the registration failed.
    fn register_new(&mut self, stream: &mut TcpStream, interest: Interest) -> Option<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let token = Token(usize::try_from(id).unwrap_or(usize::MAX));
        self.poll
            .registry()
            .register(stream, token, interest)
            .ok()
            .map(|()| id)
    }

    /// Writes `words` (the refusal) to a connection that is not served, shuts its sending
    /// side and keeps it, outside the table of connections, until its client closes: what
    /// the client sends meanwhile is read and dropped. Closing it at once with bytes unread
    /// would make the kernel reset the connection, and a client that sent a request before
    /// reading could get the reset instead of the refusal.
    fn refuse(&mut self, mut stream: TcpStream, words: &[u8]) {
        // The socket is new or has had nothing written: its buffer takes the few bytes of
        // a refusal (a failed write only loses the explanation).
        let _ = stream.write(words);
        if stream.shutdown(std::net::Shutdown::Write).is_err() {
            return;
        }
        let Some(id) = self.register_new(&mut stream, Interest::READABLE) else {
            return;
        };
        // The queue holds every lingering connection (and some closed since): bounding it
        // bounds them.
        while self.refused_until.len() >= REFUSED_LINGERING_MAX {
            let Some((_, oldest)) = self.refused_until.pop_front() else {
                break;
            };
            self.close_refused(oldest);
        }
        self.refused.insert(id, Refused { stream, drained: 0 });
        self.refused_until
            .push_back((Instant::now() + REFUSED_LINGER, id));
        // What arrived before the registration is read now.
        self.drain_refused(id);
    }

    /// Reads and drops what refused connection `id`'s client sent; closes the connection
    /// once the client has closed, the socket failed or it sent more than
    /// [`REFUSED_DRAIN_BYTES_MAX`].
    fn drain_refused(&mut self, id: u64) {
        let Some(refused) = self.refused.get_mut(&id) else {
            return;
        };
        let done = loop {
            match refused.stream.read(&mut self.chunk) {
                Ok(0) => break true,
                Ok(n) => {
                    refused.drained += n;
                    if refused.drained > REFUSED_DRAIN_BYTES_MAX {
                        break true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        if done {
            self.close_refused(id);
        }
    }

    fn close_refused(&mut self, id: u64) {
        if let Some(mut refused) = self.refused.remove(&id) {
            let _ = self.poll.registry().deregister(&mut refused.stream);
        }
    }

    /// Closes every refused connection whose [`REFUSED_LINGER`] has passed.
    fn expire_refused(&mut self) {
        for id in take_due(&mut self.refused_until, Instant::now()) {
            self.close_refused(id);
        }
    }

    /// Closes every connection still unauthenticated at its authentication deadline.
    fn expire_unauthenticated(&mut self) {
        for id in take_due(&mut self.auth_deadlines, Instant::now()) {
            if self.conns.get(&id).is_some_and(|c| !c.authenticated) {
                self.close(id);
            }
        }
    }

    /// Closes every connection that has waited on its client past the idle timeout.
    fn scan_idle(&mut self) {
        let Some(timeout) = self.limits.idle_timeout else {
            return;
        };
        let now = Instant::now();
        if now < self.next_idle_scan {
            return;
        }
        self.next_idle_scan =
            now + (timeout / 4).clamp(Duration::from_millis(5), Duration::from_secs(1));
        let idle: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.busy && now.saturating_duration_since(c.idle_since) > timeout)
            .map(|(&id, _)| id)
            .collect();
        for id in idle {
            self.close(id);
        }
    }
}

impl<S: ServeClient> Conn<S> {
    /// When the loop must next look at the connection: the earliest of its TLS
    /// handshake's end, its close's and its [`ServeClient`]'s deadline.
    fn next_deadline(&self) -> Option<Instant> {
        [self.handshake.map(|(t, _)| t), self.close_by, self.deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// Writes the TLS records waiting until none is left (`Ok`) or the socket is full
    /// (`WouldBlock`).
    fn flush_tls(&mut self) -> io::Result<()> {
        let Some(tls) = &mut self.tls else {
            return Ok(());
        };
        while tls.wants_write() {
            match tls.write_tls(&mut self.stream) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes part of the replies from byte `at` on: to the socket, or encrypted into the
    /// TLS session (whose records then go out as the socket takes them).
    fn write_plain(&mut self, at: usize) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else {
            return write_some(&mut self.stream, &self.output[at..]);
        };
        // The session buffers a bounded amount (rustls's limit): past it, it takes nothing
        // until its records are written.
        let n = tls.writer().write(&self.output[at..])?;
        match self.flush_tls() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => self.writable = false,
            Err(e) => return Err(e),
        }
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Shuts the sending side (once) and reads and drops what the client sends until it
    /// closes: `true` while it has not closed yet and may still (wait for it, up to the
    /// connection's `close_by`), `false` once it has closed, or the socket failed, or it
    /// sent more than [`CLOSE_DRAIN_BYTES_MAX`] since (close now).
    fn drain(&mut self, chunk: &mut [u8]) -> bool {
        let drained = match self.drained {
            Some(drained) => drained,
            None => {
                if self.stream.shutdown(std::net::Shutdown::Write).is_err() {
                    return false;
                }
                0
            }
        };
        let mut drained = drained;
        let open = loop {
            match self.stream.read(chunk) {
                Ok(0) => break false,
                Ok(n) => {
                    drained += n;
                    if drained > CLOSE_DRAIN_BYTES_MAX {
                        break false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    break true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break false,
            }
        };
        self.drained = Some(drained);
        open
    }

    /// Reads request bytes: from the socket, or decrypted from the TLS session (running
    /// its handshake first, within its limits).
    fn read_plain(&mut self, chunk: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else {
            return self.stream.read(chunk);
        };
        loop {
            match tls.reader().read(chunk) {
                // Ok(0): the client closed the session.
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if self.handshake.is_some_and(|(_, received)| received == 0) {
                // A TLS connection begins with a handshake record (content type 22).
                let mut first = [0; 1];
                if self.stream.peek(&mut first)? == 1 && first[0] != 0x16 {
                    self.not_tls = true;
                    return Err(io::ErrorKind::InvalidData.into());
                }
            }
            let n = tls.read_tls(&mut self.stream)?;
            if n == 0 {
                return Ok(0);
            }
            if let Some((_, received)) = &mut self.handshake {
                *received += n;
                if *received > TLS_HANDSHAKE_BYTES_MAX {
                    return Err(io::ErrorKind::InvalidData.into());
                }
            }
            if tls.process_new_packets().is_err() {
                // An alert says why, if the client still listens.
                let _ = tls.write_tls(&mut self.stream);
                return Err(io::ErrorKind::InvalidData.into());
            }
            if !tls.is_handshaking() {
                self.handshake = None;
            }
        }
    }
}

/// Writes part of `bytes`, retrying an interrupted write.
fn write_some(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
    loop {
        match stream.write(bytes) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            written => return written,
        }
    }
}

/// Frees an empty buffer that grew large (a large request or reply), so that an idle
/// connection holds no memory for it.
fn release(buf: &mut Vec<u8>) {
    if buf.is_empty() && buf.capacity() > 4096 {
        *buf = Vec::new();
    }
}
