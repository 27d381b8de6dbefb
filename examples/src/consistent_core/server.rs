//! The real-process driver: one Consistent Core node as an operating-system process.
// tidy: driver: owns the threads, sockets, files and clock of a real node.
//!
//! How the book's patterns are wired here:
//!
//! - **Singular Update Queue**: the [`CoreNode`] and everything it owns live on the worker
//!   thread of a `synod_transport::SingularUpdateQueue`. Peer messages (queued by the
//!   transport's reader threads themselves, through its handler), client requests (from
//!   one thread per client connection) and ticks (from a timer thread) are queued to it and
//!   applied one at a time; nothing else touches the node, so it needs no lock.
//! - **Single-Socket Channel, Request Pipeline, Request Batch**: peers talk over one
//!   `TcpTransport` connection per pair. Raft messages are one-way sends, written by the
//!   worker itself when the connection is idle (the transport's fail-fast mode never holds
//!   it longer than `synod_transport::INLINE_WRITE_WAIT`) and batched by the transport's
//!   writer thread when it is busy; a follower forwards a client's write to the leader as a
//!   transport request and waits for its response (many in flight at once).
//!
//! A write thus crosses four threads: the client's connection thread, the leader's worker
//! (which writes the entry to both followers), each follower's worker (reached from its
//! transport reader), and the leader's worker again (reached from its reader), which
//! answers the connection thread.
//! - **Write-Ahead Log, Segmented Log, Low-Water Mark**: the Raft log and hard state live
//!   in `synod_consensus::WalLogStore` (two `synod-wal` logs in the data directory);
//!   snapshots of the key-value state are written to it when the log is compacted.
//! - **Group commit, Request Batch**: while events wait in the queue, the worker only
//!   steps them into the node; once the queue has run dry (or after
//!   [`SYNC_DEFER_EVENTS_MAX`] events) it hands out their effects together: one append per
//!   follower carrying every client's proposal, and one `fdatasync` covering every entry
//!   written meanwhile.
//! - **Request Waiting List**: client requests wait, keyed by a tag, until their entry
//!   commits or their read index is applied (in [`CoreNode`]), and here for their reply
//!   with a deadline.
//! - **Idempotent Receiver**: clients may open a session (`CLIENT REGISTER`); the server
//!   numbers each write in it, so a write retried after a lost reply is applied once.
//!
//! The node fails stop: a log write or sync that fails, a snapshot that does not decode, or
//! a panic on any of its threads but a client connection's ends the process with
//! [`EXIT_FAIL_STOP`], rather than leave a node up that holds its sockets and answers
//! nothing. A panic while serving one client closes that connection only: a client must not
//! be able to stop the node. A client whose request the worker took up and never answered
//! is told the outcome is unknown.
//!
//! The client side speaks RESP on its own address (`--client`): see [`super::resp`] and
//! the command table in [`super`].

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use synod_consensus::{
    Config, Membership, Message, Node, NodeId, PersistToken, Role, WalLogStore, WalStoreOptions,
};
use synod_transport::{
    ClusterId, Completer, Incoming, SingularUpdateQueue, TcpTransport, WaitOutcome, completion,
};
use synod_wal::{FileStorage, Storage, StorageFile};

use super::commands::{Action, ConnState, execute, refusal};
use super::node::{
    CoreNode, Effect, Info, Input, Request, Response, SNAPSHOT_ENTRIES_DEFAULT, Tag,
};
use super::resp::{CommandParser, Limits, Value};

/// Events the worker may step into the node before it hands out their effects and syncs.
pub const SYNC_DEFER_EVENTS_MAX: usize = 256;
/// Requests waiting in the Singular Update Queue.
pub const QUEUE_EVENTS_MAX: usize = 4096;
/// Open client connections, unless configured otherwise
/// ([`NodeOptions::client_connections_max`]). A connection past it closes the one that has
/// waited longest for its client (to send a command, or to take a reply), as nginx closes
/// idle keep-alive connections when it runs out, so idle connections never lock other
/// clients out; it is refused only while every connection has a request in progress.
pub const CLIENT_CONNECTIONS_MAX: usize = 1024;
/// How long a client connection may sit without sending a byte, or without taking a byte
/// of its replies, before the node closes it, unless configured otherwise
/// ([`NodeOptions::client_idle_timeout_ms`]). Redis never closes an idle client by default
/// (its `timeout` is 0) and probes it with TCP keep-alives every 300 s; a node here holds a
/// thread per connection, so the idle one is closed after the same five minutes: long
/// enough that no interactive user or pooled client in use is cut off (pools dial again),
/// short enough that connections of clients gone without a word (a host that crashed,
/// a pool that leaked) do not pile up.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Replies to a client's pipelined commands are written once this many bytes wait, and a
/// connection's buffers are shrunk back to it after a large request or reply, so that one
/// connection holds about one command and one reply, whatever a client pipelines.
pub const CLIENT_BUFFER_BYTES: usize = 64 << 10;
/// How long a client request may take, forwarding and retries included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Election timeout, in ticks (of 50 ms by default: 0.5 to 1 s, as etcd's).
const ELECTION_TICKS: std::ops::Range<u64> = 10..20;
/// How long a node shutting down waits for the leadership it hands over to be taken.
pub const HAND_OVER_WAIT: Duration = Duration::from_secs(3);
/// How long a node shutting down keeps answering `TRYAGAIN` to clients still connected
/// to it (so that they move to another node) before it exits anyway.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);
/// Size of each write-ahead log segment file (two are pre-written when the node starts).
pub const SEGMENT_BYTES: u64 = 8 << 20;
/// The longest command a client may send, once encoded for the log: a longer one is
/// refused with an error before it reaches the log.
pub const COMMAND_BYTES_MAX: u64 = 2 << 20;
/// The longest frame a peer connection carries: the largest peer message is an append
/// holding one command of [`COMMAND_BYTES_MAX`] (`append_bytes_max` never splits an entry,
/// so one entry of any accepted size travels alone), or a follower's forwarded write of one;
/// the rest of this bound is room for their headers. Snapshot chunks are 256 KiB.
pub const PEER_FRAME_BYTES_MAX: usize = COMMAND_BYTES_MAX as usize + (64 << 10);
/// The file in the data directory naming the node and its cluster.
pub const IDENTITY_FILE: &str = "synod-node";

/// Why a node did not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// A command-line value is wrong; the text says which and how.
    Usage(String),
    /// The data directory belongs to another node or cluster.
    ForeignDataDir(String),
    /// An address could not be bound.
    Bind {
        /// What it was for (`--listen` or `--client`).
        what: &'static str,
        /// The address.
        addr: String,
        /// The error.
        error: io::Error,
    },
    /// The data directory could not be read or written.
    DataDir {
        /// The directory.
        dir: PathBuf,
        /// The error.
        error: String,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Usage(m) | StartError::ForeignDataDir(m) => f.write_str(m),
            StartError::Bind { what, addr, error } if error.kind() == io::ErrorKind::AddrInUse => {
                write!(
                    f,
                    "{what} {addr}: the address is already in use (another synod node, or another program?); pick a free port"
                )
            }
            StartError::Bind { what, addr, error } => write!(f, "{what} {addr}: {error}"),
            StartError::DataDir { dir, error } => {
                write!(f, "data directory {}: {error}", dir.display())
            }
        }
    }
}

impl std::error::Error for StartError {}

/// How to run one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeOptions {
    id: u64,
    listen: String,
    client: String,
    peers: BTreeMap<u64, String>,
    data_dir: PathBuf,
    tick_ms: u64,
    snapshot_entries: u64,
    client_connections_max: usize,
    client_idle_timeout_ms: u64,
    #[cfg(test)]
    fault: Option<TestFault>,
}

/// A fault a unit test makes the worker commit (compiled into tests only).
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TestFault {
    /// Drop every write's waiter once the write is proposed, as a dying worker does.
    DropWrites,
    /// Panic once a write is proposed.
    PanicOnWrite,
    /// Panic on the client's connection thread when it runs a request on the key `panic`.
    PanicOnClientKey,
}

impl NodeOptions {
    /// Checks and builds the options. `peers` is `ID=ADDR,...` naming every member,
    /// this node included; `client` is where RESP clients connect (default: the
    /// `listen` host with the port minus 1000, so 7001 serves clients on 6001).
    ///
    /// # Errors
    ///
    /// [`StartError::Usage`] with what to fix.
    pub fn new(
        id: u64,
        listen: &str,
        client: Option<&str>,
        peers: &str,
        data_dir: &Path,
    ) -> Result<NodeOptions, StartError> {
        if id == 0 {
            return Err(StartError::Usage("--id must be at least 1".into()));
        }
        let mut map = BTreeMap::new();
        for part in peers.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (pid, addr) = part.split_once('=').ok_or_else(|| {
                StartError::Usage(format!(
                    "--peers: `{part}` is not ID=ADDR (example: --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003)"
                ))
            })?;
            let pid: u64 = pid.trim().parse().ok().filter(|&p| p > 0).ok_or_else(|| {
                StartError::Usage(format!("--peers: `{pid}` is not a node id (1, 2, ...)"))
            })?;
            if map.insert(pid, addr.trim().to_string()).is_some() {
                return Err(StartError::Usage(format!(
                    "--peers: node {pid} is listed twice"
                )));
            }
        }
        if !map.contains_key(&id) {
            return Err(StartError::Usage(format!(
                "--peers does not include this node (--id {id}); list every member, this one too, as ID=ADDR"
            )));
        }
        let client = match client {
            Some(c) => c.to_string(),
            None => {
                let addr = listen
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| {
                        StartError::Usage(format!("--listen {listen} is not an address"))
                    })?;
                let port = addr
                    .port()
                    .checked_sub(1000)
                    .filter(|&p| p > 0)
                    .ok_or_else(|| {
                        StartError::Usage(
                            "--listen port below 1001: give --client explicitly".into(),
                        )
                    })?;
                SocketAddr::new(addr.ip(), port).to_string()
            }
        };
        Ok(NodeOptions {
            id,
            listen: listen.to_string(),
            client,
            peers: map,
            data_dir: data_dir.to_path_buf(),
            tick_ms: 50,
            snapshot_entries: SNAPSHOT_ENTRIES_DEFAULT,
            client_connections_max: CLIENT_CONNECTIONS_MAX,
            client_idle_timeout_ms: CLIENT_IDLE_TIMEOUT.as_millis() as u64,
            #[cfg(test)]
            fault: None,
        })
    }

    /// Sets the tick length (default 50 ms: heartbeats every 2 ticks, elections after 10 to 20 ticks, as etcd's 100 ms and 1 s).
    #[must_use]
    pub fn tick_ms(mut self, tick_ms: u64) -> NodeOptions {
        self.tick_ms = tick_ms.max(1);
        self
    }

    /// Sets how many entries are applied between snapshots (default
    /// [`SNAPSHOT_ENTRIES_DEFAULT`]); each snapshot lets the log before it be deleted.
    #[must_use]
    pub fn snapshot_entries(mut self, entries: u64) -> NodeOptions {
        self.snapshot_entries = entries.max(1);
        self
    }

    /// Sets how many client connections may be open at once (default
    /// [`CLIENT_CONNECTIONS_MAX`], at least 1).
    #[must_use]
    pub fn client_connections_max(mut self, connections: usize) -> NodeOptions {
        self.client_connections_max = connections.max(1);
        self
    }

    /// Sets how long a client connection may wait on its client before it is closed
    /// (default [`CLIENT_IDLE_TIMEOUT`]); 0 never closes one.
    #[must_use]
    pub fn client_idle_timeout_ms(mut self, ms: u64) -> NodeOptions {
        self.client_idle_timeout_ms = ms;
        self
    }

    /// The RESP client address.
    #[must_use]
    pub fn client_addr(&self) -> &str {
        &self.client
    }

    fn cluster_id(&self) -> u64 {
        // FNV-1a over the members, ids and addresses: nodes configured with different
        // clusters (even two clusters numbered 1, 2, 3, on other addresses) refuse each
        // other at the transport handshake.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (id, addr) in &self.peers {
            for b in id.to_le_bytes().iter().chain(addr.as_bytes()).chain(b"\n") {
                h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }

    fn identity(&self) -> String {
        let members: Vec<String> = self.peers.keys().map(u64::to_string).collect();
        format!("node={}\nmembers={}\n", self.id, members.join(","))
    }
}

fn data_err(dir: &Path, error: impl fmt::Display) -> StartError {
    StartError::DataDir {
        dir: dir.to_path_buf(),
        error: error.to_string(),
    }
}

fn check_identity(options: &NodeOptions) -> Result<(), StartError> {
    let dir = &options.data_dir;
    create_dir_durably(dir).map_err(|e| data_err(dir, e))?;
    let storage = FileStorage::new(dir).map_err(|e| data_err(dir, e))?;
    let want = options.identity();
    match read_identity(&storage) {
        Ok(Some(found)) if found == want => Ok(()),
        Ok(Some(found)) => Err(StartError::ForeignDataDir(format!(
            "data directory {} belongs to another node or cluster: it says `{}`, but this node is `{}`; use a fresh --data-dir or the matching --id/--peers",
            dir.display(),
            found.trim().replace('\n', " "),
            want.trim().replace('\n', " ")
        ))),
        Ok(None) => {
            let has_log = dir.join("log").exists();
            if has_log {
                return Err(StartError::ForeignDataDir(format!(
                    "data directory {} holds a log but no {IDENTITY_FILE} file; refusing to guess whose it is",
                    dir.display()
                )));
            }
            write_identity(&storage, &want).map_err(|e| data_err(dir, e))
        }
        Err(e) => Err(data_err(dir, e)),
    }
}

/// The longest identity file read: a node id and a few hundred members.
const IDENTITY_BYTES_MAX: u64 = 64 << 10;

/// The identity file's contents, or `None` if there is none.
fn read_identity(storage: &impl Storage) -> io::Result<Option<String>> {
    let file = match storage.open(IDENTITY_FILE) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.len()?;
    if len > IDENTITY_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{IDENTITY_FILE} is {len} bytes long; an identity is a few lines"),
        ));
    }
    let mut bytes = vec![0; usize::try_from(len).unwrap_or(0)];
    let mut at = 0;
    while at < bytes.len() {
        match file.read_at(&mut bytes[at..], at as u64)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => at += n,
        }
    }
    String::from_utf8(bytes).map(Some).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{IDENTITY_FILE} is not text"),
        )
    })
}

/// Writes the identity file durably: under a temporary name, synced, renamed into place,
/// and the directory synced. Without the last, a crash could lose the rename while the log
/// written next survives, and the node would then refuse its own directory (a log but no
/// identity) on every start. A crash at any point leaves the file whole or absent.
fn write_identity(storage: &impl Storage, identity: &str) -> io::Result<()> {
    let tmp = format!("{IDENTITY_FILE}.tmp");
    let file = storage.create(&tmp)?;
    let mut at = 0;
    while at < identity.len() {
        match file.write_at(&identity.as_bytes()[at..], at as u64)? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => at += n,
        }
    }
    file.sync_data()?;
    storage.rename(&tmp, IDENTITY_FILE)?;
    storage.sync_dir()
}

/// Creates `dir` and its missing parents, and syncs each new directory's entry in its
/// parent, so that a crash cannot lose the directory holding a log that was synced.
fn create_dir_durably(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        missing.push(path);
        at = path.parent();
    }
    std::fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        let parent = created.parent().filter(|p| !p.as_os_str().is_empty());
        std::fs::File::open(parent.unwrap_or(Path::new(".")))?.sync_all()?;
    }
    Ok(())
}

type Store = WalLogStore<FileStorage>;

/// Who waits for a reply.
enum Waiter {
    Local(Completer<Response>),
    Remote(Incoming),
}

enum Event {
    Peer(Message),
    Client(Request, Waiter),
    Tick,
    Info,
    /// Hand the leadership over (the node is shutting down).
    HandOver,
    /// Make everything durable now (the node is about to exit).
    Stop,
}

struct Worker {
    node: CoreNode<Store>,
    transport: Arc<TcpTransport>,
    waiters: BTreeMap<Tag, Waiter>,
    next_tag: Tag,
    owed: Option<PersistToken>,
    deferred: usize,
    queued: Arc<AtomicUsize>,
    /// Forwarded requests not answered yet (see [`Shared::on_peer`]).
    forwarded: Arc<AtomicUsize>,
    /// The node's time zero on the monotonic clock: every input is handed to the node
    /// with the time since, read as the worker takes the input up (see [`Worker::now`]).
    origin: Instant,
    #[cfg(test)]
    fault: Option<TestFault>,
}

impl Worker {
    /// The node's time, read now: never earlier, since the node checks a lease against it
    /// (a time read by the thread that queued an event would be stale by the wait in the
    /// queue, and a tick count kept by the timer thread by every tick it could not queue).
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn handle(&mut self, event: Event) -> Info {
        self.queued.fetch_sub(1, Ordering::AcqRel);
        let stop = matches!(event, Event::Stop);
        let now = self.now();
        match event {
            Event::Peer(message) => self.node.step(now, Input::Peer(message)),
            Event::Client(request, waiter) => {
                #[cfg(test)]
                let write = matches!(request, Request::Write { .. });
                self.next_tag += 1;
                let tag = self.next_tag;
                self.waiters.insert(tag, waiter);
                self.node.step(now, Input::Client { tag, request });
                #[cfg(test)]
                if write {
                    self.commit_fault(tag);
                }
            }
            Event::Tick => self.node.step(now, Input::Tick),
            Event::Info | Event::Stop => {}
            Event::HandOver => self.node.step(now, Input::HandOver),
        }
        // Request Batch: while more events wait, their effects pile up in the node, so
        // that one append per follower carries the proposals of many clients and one
        // sync covers the entries of many appends (group commit).
        self.deferred += 1;
        if stop
            || self.queued.load(Ordering::Acquire) == 0
            || self.deferred >= SYNC_DEFER_EVENTS_MAX
        {
            let effects = self.node.poll();
            self.run(effects);
            self.flush();
        }
        self.node.info()
    }

    #[cfg(test)]
    fn commit_fault(&mut self, tag: Tag) {
        match self.fault {
            Some(TestFault::DropWrites) => drop(self.waiters.remove(&tag)),
            Some(TestFault::PanicOnWrite) => panic!("a test made the worker panic"),
            Some(TestFault::PanicOnClientKey) | None => {}
        }
    }

    /// Carries out effects: answers first, so that a client is not kept waiting while the
    /// worker tells the followers of a new commit index (the answers depend only on what
    /// is committed or durable already, never on those messages), then messages to peers.
    fn run(&mut self, effects: Vec<Effect>) {
        let mut sends = Vec::new();
        for effect in effects {
            match effect {
                Effect::Send(m) => sends.push(m),
                Effect::Persist(token) => self.owed = Some(token),
                Effect::Reply { tag, response } => match self.waiters.remove(&tag) {
                    Some(Waiter::Local(c)) => c.complete(response),
                    Some(Waiter::Remote(incoming)) => {
                        let bytes = postcard::to_stdvec(&response).expect("encodes");
                        let _ = self.transport.respond(&incoming, Bytes::from(bytes));
                        self.forwarded.fetch_sub(1, Ordering::SeqCst);
                    }
                    None => {}
                },
                Effect::Fatal(why) => fail_stop(&why),
            }
        }
        for m in sends {
            let to = m.to;
            // Lost messages are Raft's business: it resends.
            let _ = self.transport.send(to, Bytes::from(m.encode()));
        }
    }

    fn flush(&mut self) {
        self.deferred = 0;
        while let Some(token) = self.owed.take() {
            if let Err(e) = self.node.store_mut().sync() {
                fail_stop(&format!("the write-ahead log failed: {e}"));
            }
            let effects = self.node.handle(self.now(), Input::Persisted(token));
            self.run(effects);
        }
    }
}

/// The exit status of a node that stopped itself because it cannot go on safely.
pub const EXIT_FAIL_STOP: i32 = 2;

fn fail_stop(why: &str) -> ! {
    eprintln!("synod node: stopping: {why}");
    std::process::exit(EXIT_FAIL_STOP)
}

/// Every thread of a node is named with this prefix (the transport's and the update
/// queue's too), which is how a panic is known to be the node's.
const NODE_THREAD_PREFIX: &str = "synod-";

/// The name of each client connection's thread: a panic there closes the connection (the
/// thread catches it) and does not stop the process.
const CLIENT_THREAD: &str = "synod-client";

/// Makes a panic on any of the node's threads but a client connection's stop the process
/// (once per process).
///
/// A node whose worker died would otherwise stay up as a zombie: holding its sockets, so
/// clients and peers keep talking to it, answering nothing, its queue filling until every
/// reader thread blocks. A node that lost its transport's accept thread or its ticker would
/// run on half blind. A process that stops is restarted, or replaced, and the cluster goes on
/// without it at once. A client connection's thread is the exception: what one client sends
/// must not stop the node for every client, so the thread catches the panic and closes its
/// connection (see `accept_clients`). Threads of the process that are not the node's (a test
/// harness's, when a node runs in a test) keep the usual behaviour.
fn stop_on_panic() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // The standard message first: the thread, the place and the payload.
            previous(info);
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("<unnamed>");
            if name.starts_with(NODE_THREAD_PREFIX) && name != CLIENT_THREAD {
                fail_stop(&format!("thread {name} panicked"));
            }
        }));
    });
}

type Queue = SingularUpdateQueue<Worker, Event, Info>;

struct Shared {
    queue: Queue,
    queued: Arc<AtomicUsize>,
    transport: Arc<TcpTransport>,
    id: u64,
    stopping: AtomicBool,
    connections: Connections,
    /// How long a connection may wait on its client; `None`: for ever.
    client_idle_timeout: Option<Duration>,
    /// Client requests being run (by [`Shared::call`]).
    calls: AtomicUsize,
    /// Requests forwarded by followers that the worker has not answered yet.
    forwarded: Arc<AtomicUsize>,
    #[cfg(test)]
    fault: Option<TestFault>,
}

/// Counts one in `counter` while it lives: released however its holder ends, a panic too.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(counter: &'a AtomicUsize) -> Counted<'a> {
        // SeqCst pairs with `shutdown`, which reads the counters.
        counter.fetch_add(1, Ordering::SeqCst);
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Polls `done` every few milliseconds until it holds or `deadline` passes; returns
/// whether it held.
fn poll_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Shared {
    fn submit(&self, event: Event) -> Option<synod_transport::UpdateHandle<Info>> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        match self.queue.submit(event) {
            Ok(h) => Some(h),
            Err(_) => {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                None
            }
        }
    }

    /// Queues a peer's message or forwarded request (on the transport's reader thread);
    /// returns an immediate answer only for a request that cannot be decoded, or that
    /// reaches a node shutting down. Raft's messages that cannot be decoded are dropped, as
    /// lost ones are.
    fn on_peer(&self, incoming: &Incoming) -> Option<Bytes> {
        if incoming.is_request() {
            let Ok(request) = postcard::from_bytes::<Request>(incoming.payload()) else {
                let reply = Response::Retry("undecodable forwarded request".into());
                return Some(Bytes::from(postcard::to_stdvec(&reply).expect("encodes")));
            };
            // A node shutting down takes no new work from followers either: it might exit
            // before the write commits, and the follower could only call it unknown. Refused,
            // it is certainly not done, and the follower retries it at the next leader.
            // SeqCst pairs with `shutdown`, as for `calls`: either it waits for this
            // request, or this request sees it stopping.
            self.forwarded.fetch_add(1, Ordering::SeqCst);
            if self.stopping.load(Ordering::SeqCst)
                || self
                    .submit(Event::Client(request, Waiter::Remote(incoming.clone())))
                    .is_none()
            {
                self.forwarded.fetch_sub(1, Ordering::SeqCst);
                let reply = shutting_down(self.id);
                return Some(Bytes::from(postcard::to_stdvec(&reply).expect("encodes")));
            }
        } else if let Ok(message) = Message::decode(incoming.payload()) {
            let _ = self.submit(Event::Peer(message));
        }
        None
    }

    /// Stops the node gracefully (a client sent `SHUTDOWN`): new requests are refused
    /// with `TRYAGAIN`, those in flight finish, the leadership is handed over, clients
    /// still connected get up to [`SHUTDOWN_DRAIN`] to move on, everything is made durable,
    /// and the process exits with status 0. Returns only if a shutdown is already under way.
    fn shutdown(&self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        let id = self.id;
        eprintln!("synod node {id}: shutting down (a client asked): finishing requests in flight");
        poll_until(Instant::now() + REQUEST_TIMEOUT, || {
            self.calls.load(Ordering::SeqCst) == 0 && self.forwarded.load(Ordering::SeqCst) == 0
        });
        let leads = |info: Option<Info>| info.is_some_and(|i| i.role == Role::Leader);
        if leads(self.info()) {
            if let Some(handle) = self.submit(Event::HandOver) {
                let _ = handle.wait();
            }
            // Handed over once another node leads; a node that lost its quorum meanwhile
            // steps down without a successor.
            let successor = |info: &Option<Info>| {
                info.as_ref()
                    .and_then(|i| i.leader)
                    .filter(|&leader| leader != id)
            };
            let mut last = None;
            poll_until(Instant::now() + HAND_OVER_WAIT, || {
                last = self.info();
                successor(&last).is_some()
            });
            match (successor(&last), leads(last)) {
                (Some(to), _) => eprintln!("synod node {id}: leadership handed over to node {to}"),
                (None, true) => eprintln!(
                    "synod node {id}: no other node took the leadership in time; the cluster will elect one"
                ),
                (None, false) => eprintln!(
                    "synod node {id}: stepped down; no other node leads (is a majority up?)"
                ),
            }
        }
        // The connection that asked is the one left when every other client has gone.
        poll_until(Instant::now() + SHUTDOWN_DRAIN, || {
            self.connections.len() <= 1
        });
        if let Some(handle) = self.submit(Event::Stop) {
            let _ = handle.wait();
        }
        eprintln!("synod node {id}: stopped");
        std::process::exit(0)
    }

    fn info(&self) -> Option<Info> {
        self.submit(Event::Info)?.wait().ok()
    }

    /// Runs a request to its end: at this node, forwarded to the leader, retried while
    /// it is certain it was not applied, until [`REQUEST_TIMEOUT`].
    fn call(&self, request: &Request) -> Response {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let mut last = String::from("no leader");
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return shutting_down(self.id);
            }
            let (completer, done) = completion();
            if self
                .submit(Event::Client(request.clone(), Waiter::Local(completer)))
                .is_none()
            {
                return shutting_down(self.id);
            }
            let response = match done.wait_until(deadline) {
                WaitOutcome::Done(r) => r,
                // The worker dropped the request: it took it up (it may have proposed
                // it) and then died, or the process is going down.
                WaitOutcome::Canceled => {
                    return unknown(request, "the node's worker stopped".into());
                }
                WaitOutcome::TimedOut => {
                    return unknown(request, format!("timed out ({last})"));
                }
            };
            match response {
                Response::Kv(_) => return response,
                Response::Unknown(why) => return unknown(request, why),
                Response::NotLeader { leader: Some(l) } if l != self.id => {
                    match self.forward(l, request, deadline) {
                        Response::Kv(r) => return Response::Kv(r),
                        Response::NotLeader { .. } => {
                            last = format!("node {l} no longer leads");
                        }
                        Response::Retry(why) => last = why,
                        Response::Unknown(why) => return unknown(request, why),
                    }
                }
                Response::NotLeader { .. } => last = "no leader known".into(),
                Response::Retry(why) => last = why,
            }
            if Instant::now() >= deadline {
                return Response::Retry(format!("timed out: {last}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `request` to the leader and waits for its answer: `Retry` if it could not be
    /// sent (the transport refused it at once: not connected, queue full), `Unknown` if it
    /// was sent and no answer came.
    fn forward(&self, leader: u64, request: &Request, deadline: Instant) -> Response {
        let bytes = postcard::to_stdvec(request).expect("encodes");
        let timeout = deadline.saturating_duration_since(Instant::now());
        let failed =
            |e: &dyn fmt::Display| format!("forwarding to the leader, node {leader}, failed: {e}");
        let handle = match self
            .transport
            .request(NodeId::new(leader), Bytes::from(bytes), timeout)
        {
            Ok(handle) => handle,
            Err(e) => return Response::Retry(failed(&e)),
        };
        match handle.wait() {
            Ok(reply) => postcard::from_bytes(&reply)
                .unwrap_or_else(|e| Response::Unknown(failed(&format!("undecodable reply: {e}")))),
            Err(e) => Response::Unknown(failed(&e)),
        }
    }
}

/// A running node.
#[derive(Debug)]
pub struct Server {
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    #[cfg(test)]
    shared: Arc<Shared>,
}

impl Server {
    /// Where RESP clients connect.
    #[must_use]
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// Where peers connect.
    #[must_use]
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Starts the node's threads and returns once it listens; the node runs until the
/// process exits.
///
/// The node fails stop: a panic on any of its threads (all named `synod-…`) but a client
/// connection's, or the end of one it cannot run without, stops the process with
/// [`EXIT_FAIL_STOP`] and a message naming the thread, as a failed log write does. A panic
/// while serving a client closes that client's connection only. (This installs a panic
/// hook, once; a panic on another thread of the process keeps the usual behaviour.)
///
/// # Errors
///
/// A [`StartError`] a person can act on.
pub fn start(options: &NodeOptions) -> Result<Server, StartError> {
    stop_on_panic();
    let transport_config = transport_config(options.cluster_id(), options.id)
        .map_err(|e| StartError::Usage(format!("transport configuration: {e}")))?;
    let bind = |what, addr: &str, error| StartError::Bind {
        what,
        addr: addr.to_string(),
        error,
    };
    // Peers' messages go straight from the transport's reader threads into the update
    // queue, once it exists; until then they are dropped, and Raft resends. A write a
    // follower forwards meanwhile (it still takes this restarting node for its leader) is
    // answered at once as not done, rather than left to time out with an unknown outcome.
    let node_queue: Arc<OnceLock<Arc<Shared>>> = Arc::new(OnceLock::new());
    let transport = Arc::new(
        TcpTransport::bind_with_handler(transport_config, options.listen.as_str(), {
            let node_queue = Arc::clone(&node_queue);
            let id = options.id;
            move |incoming| match node_queue.get() {
                Some(shared) => shared.on_peer(incoming),
                None if incoming.is_request() => {
                    let reply = Response::Retry(format!("node {id} is starting"));
                    Some(Bytes::from(postcard::to_stdvec(&reply).expect("encodes")))
                }
                None => None,
            }
        })
        .map_err(|e| bind("--listen", &options.listen, e))?,
    );
    let listener = TcpListener::bind(options.client.as_str())
        .map_err(|e| bind("--client", &options.client, e))?;
    // Only once both addresses are ours does the data directory get touched.
    check_identity(options)?;
    let dir = &options.data_dir;
    let voters = options.peers.keys().map(|&id| NodeId::new(id));
    let membership =
        Membership::new(voters, []).map_err(|e| StartError::Usage(format!("--peers: {e}")))?;
    let storage = |name: &str| {
        let path = dir.join("log").join(name);
        create_dir_durably(&path).map_err(|e| data_err(dir, e))?;
        FileStorage::new(path).map_err(|e| data_err(dir, e))
    };
    let store_options = WalStoreOptions::default()
        .segment_bytes_max(SEGMENT_BYTES)
        .entry_bytes_max(COMMAND_BYTES_MAX);
    let store = WalLogStore::open_with(
        storage("entries")?,
        storage("meta")?,
        membership,
        store_options,
    )
    .map_err(|e| data_err(dir, e))?;
    let config = Config::builder(NodeId::new(options.id))
        .election_timeout_ticks(ELECTION_TICKS)
        .heartbeat_interval_ticks(2)
        .append_bytes_max(256 << 10)
        .entry_bytes_max(COMMAND_BYTES_MAX)
        .snapshot_chunk_bytes_max(256 << 10)
        // Lease reads (`CLIENT READMODE lease`) assume the nodes' tick rates drift apart
        // by less than 3 ticks (150 ms) over one election timeout.
        .lease_reads(3)
        .seed(options.id ^ options.cluster_id())
        .build()
        .map_err(|e| StartError::Usage(format!("raft configuration: {e}")))?;
    // Read ids must never repeat across restarts: start this incarnation's at the wall clock.
    let read_id_base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 2));
    let origin = Instant::now();
    let tick = Duration::from_millis(options.tick_ms);
    let mut node = CoreNode::new(Node::new(config, store), tick, options.snapshot_entries)
        .with_read_ids_from(read_id_base);

    for (&id, addr) in &options.peers {
        if id == options.id {
            continue;
        }
        let resolved = addr
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                StartError::Usage(format!(
                    "--peers: node {id}'s address `{addr}` does not resolve"
                ))
            })?;
        transport.add_peer(NodeId::new(id), resolved);
    }

    let queued = Arc::new(AtomicUsize::new(0));
    let forwarded = Arc::new(AtomicUsize::new(0));
    let mut worker = Worker {
        node: {
            // Load the snapshot and replay the committed log before taking requests.
            let effects = node.poll();
            for e in &effects {
                if let Effect::Fatal(why) = e {
                    return Err(data_err(dir, why));
                }
            }
            node
        },
        transport: Arc::clone(&transport),
        waiters: BTreeMap::new(),
        next_tag: 0,
        owed: None,
        deferred: 0,
        queued: Arc::clone(&queued),
        forwarded: Arc::clone(&forwarded),
        origin,
        #[cfg(test)]
        fault: options.fault,
    };
    worker.flush();
    let queue = SingularUpdateQueue::spawn(QUEUE_EVENTS_MAX, worker, Worker::handle)
        .map_err(|e| StartError::Usage(format!("cannot start the node thread: {e}")))?;
    let shared = Arc::new(Shared {
        queue,
        queued,
        transport: Arc::clone(&transport),
        id: options.id,
        stopping: AtomicBool::new(false),
        connections: Connections::new(options.client_connections_max),
        client_idle_timeout: (options.client_idle_timeout_ms > 0)
            .then(|| Duration::from_millis(options.client_idle_timeout_ms)),
        calls: AtomicUsize::new(0),
        forwarded,
        #[cfg(test)]
        fault: options.fault,
    });
    let _ = node_queue.set(Arc::clone(&shared));
    let client_addr = listener
        .local_addr()
        .map_err(|e| bind("--client", &options.client, e))?;
    let peer_addr = transport.local_addr();

    spawn_vital("synod-tick", {
        let shared = Arc::clone(&shared);
        let tick = Duration::from_millis(options.tick_ms);
        move || {
            let mut next = Instant::now() + tick;
            loop {
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                next += tick;
                if Instant::now() > next + tick * 10 {
                    next = Instant::now() + tick; // fell far behind (paused): do not burst
                }
                // A busy queue skips tick events, not time: every event the worker takes
                // up hands the node the time, and the node runs the ticks it brings.
                if shared.queued.load(Ordering::Acquire) < QUEUE_EVENTS_MAX / 2 {
                    let _ = shared.submit(Event::Tick);
                }
            }
        }
    });
    spawn_vital("synod-clients", {
        let shared = Arc::clone(&shared);
        move || accept_clients(&shared, &listener)
    });
    Ok(Server {
        client_addr,
        peer_addr,
        #[cfg(test)]
        shared,
    })
}

/// The peer transport's configuration: fail-fast, with frames for the largest peer message.
fn transport_config(
    cluster: u64,
    id: u64,
) -> Result<synod_transport::Config, synod_transport::ConfigError> {
    synod_transport::Config::builder(ClusterId(cluster), NodeId::new(id))
        // The node's one thread sends Raft messages: it must never wait on a slow or
        // stopped peer (a SIGSTOPped follower would stall the leader until check-quorum
        // deposed it). A message that does not fit is dropped, and Raft resends what matters.
        .overflow(synod_transport::Overflow::FailFast)
        // An append carrying the longest command must fit in one frame: one that does not
        // is refused by the transport every time Raft resends it, and the log stalls there.
        .frame_bytes_max(PEER_FRAME_BYTES_MAX)
        .outbound_bytes_max(2 * PEER_FRAME_BYTES_MAX)
        // A peer back from a partition or a restart is dialled again within half a second
        // (the default backs off to 2 s), inside one election timeout.
        .backoff_max_ms(500)
        .build()
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    debug_assert!(name.starts_with(NODE_THREAD_PREFIX));
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .unwrap_or_else(|e| fail_stop(&format!("cannot start a thread: {e}")));
}

/// Starts a thread the node cannot run without (the ticker, the client acceptor): if it
/// ever returns, the process stops, as when it panics.
fn spawn_vital(name: &'static str, f: impl FnOnce() + Send + 'static) {
    spawn(name, move || {
        f();
        fail_stop(&format!("thread {name} ended"));
    });
}

fn accept_clients(shared: &Arc<Shared>, listener: &TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else {
            // Out of file descriptors (EMFILE), most likely: every accept fails at once
            // until one is freed, so trying again without a pause spins a core (seen at
            // 100% with `ulimit -n 40` and 60 clients).
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let Some(id) = shared.connections.admit(&stream) else {
            let _ = stream.write_all(b"-ERR max number of clients reached\r\n");
            continue;
        };
        let shared = Arc::clone(shared);
        spawn(CLIENT_THREAD, move || {
            // A panic while serving one client (a bug a client's input reaches) closes its
            // connection, as an error does; the process goes on serving the others. The
            // counters it held are released on the way out (`Counted`), and the connection
            // is dropped with the stack: nothing this thread shares is left half changed.
            let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                serve_client(&shared, id, stream)
            }));
            if served.is_err() {
                eprintln!(
                    "synod node {}: a client connection's thread panicked; that connection is closed",
                    shared.id
                );
            }
            shared.connections.close(id);
        });
    }
}

/// The client connections, with what each is doing, for [`CLIENT_CONNECTIONS_MAX`].
///
/// At the limit, a new connection closes the one that has waited longest for its client
/// (for the next command, or for more of one), as nginx closes idle keep-alive connections
/// when it runs out: so idle connections can never lock every other client out. Only
/// connections with a request in progress are never closed for another; when all of them
/// are, the new one is refused, as Redis refuses every client past `maxclients`.
struct Connections {
    max: usize,
    open: std::sync::Mutex<ConnectionTable>,
}

#[derive(Default)]
struct ConnectionTable {
    next_id: u64,
    /// Each open connection: a handle to close it by, and since when it has been waiting
    /// on its client (`None` while the node works on its request).
    by_id: BTreeMap<u64, (TcpStream, Option<Instant>)>,
}

impl Connections {
    fn new(max: usize) -> Connections {
        Connections {
            max,
            open: std::sync::Mutex::new(ConnectionTable::default()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, ConnectionTable> {
        // The table is consistent after every statement, so a panic on a client's thread
        // (caught there) leaves it usable; a panic elsewhere stops the process.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits `stream`, closing the connection that has waited longest for its client if
    /// the table is full: the new connection's id, or `None` if it is refused.
    fn admit(&self, stream: &TcpStream) -> Option<u64> {
        let handle = stream.try_clone().ok()?;
        let mut table = self.table();
        if table.by_id.len() >= self.max {
            let idlest = table
                .by_id
                .iter()
                .filter_map(|(&id, (_, since))| Some((since.as_ref()?, id)))
                .min()
                .map(|(_, id)| id)?;
            if let Some((evicted, _)) = table.by_id.remove(&idlest) {
                // Its thread's read fails, and the thread ends.
                let _ = evicted.shutdown(std::net::Shutdown::Both);
            }
        }
        table.next_id += 1;
        let id = table.next_id;
        table.by_id.insert(id, (handle, Some(Instant::now())));
        Some(id)
    }

    /// Notes whether connection `id` is waiting on its client.
    fn waiting(&self, id: u64, waiting: bool) {
        if let Some((_, since)) = self.table().by_id.get_mut(&id) {
            *since = waiting.then(Instant::now);
        }
    }

    fn close(&self, id: u64) {
        self.table().by_id.remove(&id);
    }

    fn len(&self) -> usize {
        self.table().by_id.len()
    }
}

fn serve_client(shared: &Shared, id: u64, mut stream: TcpStream) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    // A client that sends nothing, or takes none of its replies, for this long is gone.
    stream.set_read_timeout(shared.client_idle_timeout)?;
    stream.set_write_timeout(shared.client_idle_timeout)?;
    let limits = Limits::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 16 << 10];
    let mut conn = ConnState::default();
    let mut parser = CommandParser::default();
    loop {
        loop {
            match parser.parse(&buf, &limits) {
                Ok(Some((args, used))) => {
                    buf.drain(..used);
                    if args.is_empty() {
                        continue;
                    }
                    let (value, close) = run_command(shared, &mut conn, &args);
                    value.encode(&mut out);
                    if close {
                        send(shared, id, &mut stream, &out)?;
                        return Ok(());
                    }
                    if out.len() >= CLIENT_BUFFER_BYTES {
                        // A client that pipelines large reads without reading the replies
                        // is held here, instead of making this node hold every reply.
                        send(shared, id, &mut stream, &out)?;
                        out.clear();
                        out.shrink_to(CLIENT_BUFFER_BYTES);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    Value::Error(format!("ERR {e}")).encode(&mut out);
                    send(shared, id, &mut stream, &out)?;
                    return Ok(());
                }
            }
        }
        if !out.is_empty() {
            send(shared, id, &mut stream, &out)?;
            out.clear();
            out.shrink_to(CLIENT_BUFFER_BYTES);
        }
        if buf.is_empty() {
            // Not while a command is part-way in: it would be copied again at every read.
            buf.shrink_to(CLIENT_BUFFER_BYTES);
        }
        shared.connections.waiting(id, true);
        let n = loop {
            match stream.read(&mut chunk) {
                // A read with a timeout returns EINTR when the process is stopped and
                // resumed (SIGSTOP, SIGCONT): the client is still there.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Past the idle timeout (`WouldBlock`), or the connection failed.
                read => break read?,
            }
        };
        shared.connections.waiting(id, false);
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Writes `bytes` to the client; meanwhile the connection counts as waiting on its client
/// (one that takes none of its replies may be closed for a new connection).
fn send(shared: &Shared, id: u64, stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    shared.connections.waiting(id, true);
    let written = stream.write_all(bytes);
    shared.connections.waiting(id, false);
    written
}

fn run_command(shared: &Shared, conn: &mut ConnState, args: &[Vec<u8>]) -> (Value, bool) {
    match execute(conn, args) {
        Action::Reply(v) => (v, false),
        Action::Close(v) => (v, true),
        Action::Info => match shared.info() {
            Some(info) => (
                Value::Bulk(super::commands::render_info(&info).into_bytes()),
                false,
            ),
            None => (refusal(shutting_down(shared.id)), true),
        },
        Action::Call(request) => {
            // SeqCst pairs with `shutdown`: either it sees this call, or this call sees it.
            let call = Counted::new(&shared.calls);
            #[cfg(test)]
            if shared.fault == Some(TestFault::PanicOnClientKey)
                && args.get(1).is_some_and(|key| key == b"panic")
            {
                panic!("a test made a client's thread panic");
            }
            let response = if shared.stopping.load(Ordering::SeqCst) {
                shutting_down(shared.id)
            } else {
                shared.call(&request)
            };
            drop(call);
            // A client of a node that is shutting down is sent on its way.
            let close = shared.stopping.load(Ordering::SeqCst);
            (conn.settle(&request, response), close)
        }
        Action::Shutdown => {
            shared.shutdown();
            // Another client's shutdown is under way.
            (refusal(shutting_down(shared.id)), true)
        }
    }
}

/// The answer to a request whose outcome is unknown: `Unknown` for a write (resending it
/// may apply it twice, unless in a session), `Retry` for anything that is safe to repeat (a
/// read, or opening or closing a session).
fn unknown(request: &Request, why: String) -> Response {
    match request {
        Request::Write { .. } if why.contains("unknown") => Response::Unknown(why),
        Request::Write { .. } => Response::Unknown(format!("{why}; the outcome is unknown")),
        Request::Read { .. } | Request::Register | Request::Unregister(_) => Response::Retry(why),
    }
}

/// The answer to a request that reaches a node shutting down: certainly not done.
fn shutting_down(id: u64) -> Response {
    Response::Retry(format!(
        "node {id} is shutting down; send requests to another node"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consistent_core::kv::KvReply;
    use crate::consistent_core::resp::Limits;

    /// A one-node cluster running in this process on free ports, committing `fault`. The
    /// node outlives the test (nothing stops a node but the process's end); idle, it
    /// writes nothing more to its directory.
    fn one_node(fault: Option<TestFault>) -> (Server, tempfile::TempDir) {
        let (server, dir, _) = one_node_with(fault, |o| o);
        (server, dir)
    }

    /// [`one_node`] with `options` changed, and the options it was started with.
    fn one_node_with(
        fault: Option<TestFault>,
        change: impl FnOnce(NodeOptions) -> NodeOptions,
    ) -> (Server, tempfile::TempDir, NodeOptions) {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = NodeOptions::new(
            1,
            "127.0.0.1:0",
            Some("127.0.0.1:0"),
            "1=127.0.0.1:0",
            dir.path(),
        )
        .expect("valid options");
        let mut options = change(options);
        options.fault = fault;
        let server = start(&options).expect("the node starts");
        (server, dir, options)
    }

    fn connect(server: &Server) -> TcpStream {
        let stream = TcpStream::connect(server.client_addr()).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        stream
    }

    /// Reads one reply, or `None` if the connection closed (or timed out) first.
    fn read_reply(stream: &mut TcpStream) -> Option<Value> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Ok(Some((value, _))) = Value::parse(&buf, &Limits::default()) {
                return Some(value);
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    #[test]
    fn a_write_the_worker_dropped_after_taking_it_up_is_answered_unknown_not_tryagain() {
        let (server, _dir) = one_node(Some(TestFault::DropWrites));
        let mut stream = connect(&server);
        stream.write_all(b"SET k v\r\n").expect("write");
        let reply = read_reply(&mut stream);
        // The worker had proposed it: it may be applied. TRYAGAIN would have the client
        // library resend it, and apply it twice.
        assert!(
            matches!(&reply, Some(Value::Error(e)) if e.starts_with("UNKNOWN ")),
            "{reply:?}"
        );
    }

    #[test]
    fn the_identity_file_survives_a_crash_once_written_and_a_crash_while_writing_leaves_it_whole_or_absent()
     {
        use synod_wal::testing::{CrashMode, FaultyStorage};
        let identity = "node=1\nmembers=1,2,3\n";
        for mode in CrashMode::ALL {
            let disk = FaultyStorage::new(7);
            write_identity(&disk, identity).expect("written");
            disk.crash(mode);
            let found = read_identity(&disk).expect("readable");
            assert_eq!(found.as_deref(), Some(identity), "{mode:?}");
        }
        // The process dies after each of the writing's storage operations in turn.
        for ops in 0..8 {
            for mode in CrashMode::ALL {
                let disk = FaultyStorage::new(ops);
                disk.halt_after(Some(ops));
                let written = write_identity(&disk, identity);
                disk.crash(mode);
                let found = read_identity(&disk).expect("readable");
                match written {
                    Ok(()) => assert_eq!(found.as_deref(), Some(identity), "{ops} {mode:?}"),
                    Err(_) => assert!(
                        found.is_none() || found.as_deref() == Some(identity),
                        "{ops} {mode:?}: {found:?}"
                    ),
                }
            }
        }
    }

    #[test]
    fn a_node_shutting_down_refuses_writes_forwarded_by_followers() {
        let (server, _dir, options) = one_node_with(None, |o| o);
        // A follower, as the transport sees one: node 2 of the same cluster.
        let config = transport_config(options.cluster_id(), 2).expect("valid");
        let follower = TcpTransport::bind(config, "127.0.0.1:0").expect("bind");
        follower.add_peer(NodeId::new(1), server.peer_addr());
        let forward = |key: &str| -> Option<Response> {
            let request = Request::Write {
                command: KvCommand::Put {
                    key: key.into(),
                    value: b"v".to_vec(),
                    condition: PutCondition::Always,
                },
                session: None,
            };
            let payload = Bytes::from(postcard::to_stdvec(&request).expect("encodes"));
            let to = NodeId::new(1);
            let reply = follower.request(to, payload, REQUEST_TIMEOUT).ok()?.wait();
            postcard::from_bytes(&reply.ok()?).ok()
        };
        // Once it leads (and the follower is connected), the node takes forwarded writes.
        let deadline = Instant::now() + Duration::from_secs(30);
        assert!(
            poll_until(deadline, || forward("before")
                == Some(Response::Kv(KvReply::Ok))),
            "no forwarded write was taken"
        );
        // Shutting down (SHUTDOWN sets this, then waits for what is in flight, hands over
        // the leadership and lets clients leave), it takes none.
        server.shared.stopping.store(true, Ordering::SeqCst);
        assert_eq!(forward("during"), Some(shutting_down(1)));
        let keys = server.shared.info().expect("the worker answers").keys;
        assert_eq!(keys, 1, "the refused write was applied");
    }

    /// Whether the node closed `stream`: a read returns its end (or a reset) within the
    /// stream's read timeout, rather than timing out.
    fn closed_by_node(stream: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        loop {
            match stream.read(&mut byte) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return !matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    );
                }
            }
        }
    }

    fn ping(stream: &mut TcpStream) -> Option<Value> {
        stream.write_all(b"PING\r\n").ok()?;
        read_reply(stream)
    }

    #[test]
    fn a_client_connection_idle_past_the_timeout_is_closed() {
        let (server, _dir, _) = one_node_with(None, |o| o.client_idle_timeout_ms(50));
        let mut stream = connect(&server);
        assert_eq!(ping(&mut stream), Some(Value::Simple("PONG".into())));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        assert!(
            closed_by_node(&mut stream),
            "the idle connection stayed open"
        );
    }

    #[test]
    fn idle_connections_at_the_limit_make_room_for_a_new_client() {
        let (server, _dir, _) = one_node_with(None, |o| o.client_connections_max(2));
        let mut idle: Vec<TcpStream> = (0..2).map(|_| connect(&server)).collect();
        for stream in &mut idle {
            assert_eq!(ping(stream), Some(Value::Simple("PONG".into())));
        }
        // Both sit idle: a new client is served (once the node has seen them wait), and
        // one of them is closed for it.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut new = None;
        assert!(
            poll_until(deadline, || {
                let mut stream = connect(&server);
                let served = ping(&mut stream) == Some(Value::Simple("PONG".into()));
                new = served.then_some(stream);
                served
            }),
            "a new client was locked out by two idle ones"
        );
        let answered: Vec<bool> = idle
            .iter_mut()
            .map(|s| ping(s) == Some(Value::Simple("PONG".into())))
            .collect();
        assert_eq!(answered.iter().filter(|&&a| a).count(), 1, "{answered:?}");
        let mut new = new.expect("served");
        assert_eq!(ping(&mut new), Some(Value::Simple("PONG".into())));
    }

    /// Set in the child process that [`a_panic_on_the_worker_stops_the_process`] runs.
    const CHILD_ENV: &str = "SYNOD_TEST_PANICKING_NODE";

    /// The child of [`a_panic_on_the_worker_stops_the_process`]: a node whose worker panics
    /// while it holds a write. Returns (exit status 0) only if the process outlived the
    /// panic for 10 s.
    #[test]
    #[ignore = "run in a child process by a_panic_on_the_worker_stops_the_process"]
    fn child_node_whose_worker_panics() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        let (server, _dir) = one_node(Some(TestFault::PanicOnWrite));
        let mut stream = connect(&server);
        stream.write_all(b"SET k v\r\n").expect("write");
        let reply = read_reply(&mut stream);
        eprintln!("the client's reply: {reply:?}");
        poll_until(Instant::now() + Duration::from_secs(10), || false);
        eprintln!("the process outlived its worker");
    }

    /// Runs the ignored test `child` of this module in a child process with `env` set: its
    /// exit status and standard error.
    fn run_child(child: &str, env: &str) -> (Option<i32>, String) {
        let exe = std::env::current_exe().expect("the test binary");
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                &format!("consistent_core::server::tests::{child}"),
                "--ignored",
                "--nocapture",
            ])
            .env(env, "1")
            .output()
            .expect("the child runs");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stderr)
    }

    #[test]
    fn a_panic_on_the_worker_stops_the_process() {
        let (status, stderr) = run_child("child_node_whose_worker_panics", CHILD_ENV);
        assert_eq!(status, Some(EXIT_FAIL_STOP), "{stderr}");
        assert!(
            stderr.contains("synod node: stopping: thread synod-update-queue panicked"),
            "{stderr}"
        );
    }

    /// Set in the child process that [`a_panic_on_a_client_thread_closes_that_connection_only`]
    /// runs.
    const CLIENT_PANIC_ENV: &str = "SYNOD_TEST_PANICKING_CLIENT";

    /// The child of [`a_panic_on_a_client_thread_closes_that_connection_only`]: a node whose
    /// thread serving one client panics, checked to serve other clients afterwards (in a
    /// child process, as a node that stops on it ends the process).
    #[test]
    #[ignore = "run in a child process by a_panic_on_a_client_thread_closes_that_connection_only"]
    fn child_node_whose_client_thread_panics() {
        if std::env::var_os(CLIENT_PANIC_ENV).is_none() {
            return;
        }
        let (server, _dir) = one_node(Some(TestFault::PanicOnClientKey));
        let mut other = connect(&server);
        other.write_all(b"SET k v\r\n").expect("write");
        assert_eq!(read_reply(&mut other), Some(Value::Simple("OK".into())));
        let mut panicking = connect(&server);
        panicking.write_all(b"GET panic\r\n").expect("write");
        assert!(closed_by_node(&mut panicking), "the connection stayed open");
        // The node goes on serving the client connected before, and a new one.
        other.write_all(b"GET k\r\n").expect("write");
        assert_eq!(read_reply(&mut other), Some(Value::Bulk(b"v".to_vec())));
        let mut new = connect(&server);
        new.write_all(b"SET k w\r\n").expect("write");
        assert_eq!(read_reply(&mut new), Some(Value::Simple("OK".into())));
        // The panicking thread released its call and its connection: a shutdown would not
        // wait for it, and it takes no room from other clients.
        let shared = &server.shared;
        let released = poll_until(Instant::now() + Duration::from_secs(10), || {
            shared.calls.load(Ordering::SeqCst) == 0 && shared.connections.len() == 2
        });
        assert!(
            released,
            "{} calls and {} connections held",
            shared.calls.load(Ordering::SeqCst),
            shared.connections.len()
        );
        eprintln!("the node served its other clients after a client thread panicked");
    }

    #[test]
    fn a_panic_on_a_client_thread_closes_that_connection_only() {
        let (status, stderr) = run_child("child_node_whose_client_thread_panics", CLIENT_PANIC_ENV);
        assert_eq!(status, Some(0), "{stderr}");
        assert!(
            stderr.contains("the node served its other clients after a client thread panicked"),
            "{stderr}"
        );
    }

    use crate::consistent_core::kv::{KvCommand, LogCommand, PutCondition};
    use crate::consistent_core::node::SessionSeq;
    use synod_consensus::session::{SessionEntry, SessionId};
    use synod_consensus::{Entry, LogIndex, MessageBody, Payload, Term};

    /// The longest `SET` the node accepts: its log encoding is [`COMMAND_BYTES_MAX`] long
    /// (or a byte short, where a length's varint grows).
    fn largest_put() -> KvCommand {
        let mut value_bytes = COMMAND_BYTES_MAX as usize;
        loop {
            let command = KvCommand::Put {
                key: b"k".to_vec(),
                value: vec![b'v'; value_bytes],
                condition: PutCondition::Always,
            };
            let encoded = LogCommand::Session(SessionEntry::Request {
                session: SessionId(u64::MAX),
                seq: u64::MAX,
                ack_below: u64::MAX,
                time: u64::MAX,
                command: command.clone(),
            })
            .encode()
            .len() as u64;
            if encoded <= COMMAND_BYTES_MAX {
                return command;
            }
            value_bytes -= usize::try_from(encoded - COMMAND_BYTES_MAX).expect("small");
        }
    }

    #[test]
    fn the_largest_command_fits_in_one_peer_message_both_as_an_append_and_forwarded() {
        let config = transport_config(u64::MAX, u64::MAX).expect("valid");
        let payload_max = config.payload_bytes_max();
        let command = largest_put();
        let session = Some(SessionSeq {
            session: SessionId(u64::MAX),
            seq: u64::MAX,
            ack_below: u64::MAX,
        });
        let entry = LogCommand::Session(SessionEntry::Request {
            session: SessionId(u64::MAX),
            seq: u64::MAX,
            ack_below: u64::MAX,
            time: u64::MAX,
            command: command.clone(),
        })
        .encode();
        // Within a varint's width of the limit.
        assert!((COMMAND_BYTES_MAX - 4..=COMMAND_BYTES_MAX).contains(&(entry.len() as u64)));
        let big = u64::MAX >> 1;
        let append = Message {
            from: NodeId::new(big),
            to: NodeId::new(big),
            term: Term::new(big),
            body: MessageBody::Append {
                prev_index: LogIndex(big),
                prev_term: Term::new(big),
                entries: vec![Entry {
                    term: Term::new(big),
                    index: LogIndex(big),
                    payload: Payload::Command(Bytes::from(entry)),
                }],
                commit: LogIndex(big),
            },
        }
        .encode();
        assert!(
            append.len() <= payload_max,
            "an append of the longest command is {} bytes; the transport carries {payload_max}",
            append.len()
        );
        let forwarded = postcard::to_stdvec(&Request::Write { command, session }).expect("encodes");
        assert!(
            forwarded.len() <= payload_max,
            "the longest forwarded write is {} bytes; the transport carries {payload_max}",
            forwarded.len()
        );
    }
}
