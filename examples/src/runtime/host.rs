//! Any `synod_node::Protocol` as a process: the runtime's generic adapter from the node
//! contract to the worker, the peers and the clients.
// tidy: driver: runs the wake-up thread, reads the monotonic clock and talks to peers.
//!
//! A system whose state machine follows the node contract (inputs in with the time, effects
//! out through `poll`, persistence acknowledged by token) needs no [`Machine`] of its own:
//! [`ProtocolHost`] is that machine for any protocol, given a [`HostStore`], the process
//! twin of `synod_sim::ProtocolStore` (how the state machine is recovered from the data
//! directory, how a write is laid out, how it is synced). [`start`] then runs the whole node:
//! the peer transport, the data directory, the worker, the wake-up thread and the client
//! listener, with the system's [`ServeClient`].
//!
//! | Process | Protocol |
//! |---|---|
//! | start ([`start`]) | [`HostStore::recover`] builds the state machine from the data directory (restart is construction) |
//! | a peer's frame ([`PeerHandler`]) | `Input::Message`, decoded with postcard; bytes that do not decode are dropped, as a lost message is |
//! | a client's call ([`Host::call`]) | `Input::Request`, with a `RequestId` of the host's; `Effect::Reply` completes that call's waiter, and only that one |
//! | `Effect::Send` | encoded with postcard and sent on the peers' `TcpTransport` (fail-fast: a message that does not fit is lost, and the protocol resends) |
//! | `Effect::Persist` | [`HostStore::write`]; once the worker's queue runs dry, one [`HostStore::sync`] covers every write since the last, then `Input::Persisted` with the last token (group commit) |
//! | a failed write or sync | the process stops ([`EXIT_FAIL_STOP`](super::EXIT_FAIL_STOP)); it never retries a sync and carries on |
//! | `Effect::WakeAt` | the node's one deadline: a later one replaces it as soon as the input that asked for it is handed in (the host polls the effects after every input, and carries out the rest at the drain); a thread wakes the worker at or after it, and `Input::Wake` is handed in only once the worker's clock has reached the latest deadline asked for, never before |
//! | `Effect::Apply` | [`HostStore::apply`] |
//!
//! The time handed in is the worker's monotonic clock ([`Machine::step`]'s), never going
//! back.
//!
//! Adding a system on the contract is then three things to write and one registration:
//! its state machine (a `Protocol`) with its [`HostStore`], its command table (a
//! [`crate::resp::Commands`] that turns a client's command into a request for
//! [`Host::call`]), its client adapter (what `synod kv` sends), and one entry in
//! [`crate::systems::SYSTEMS`]. The ABD register store ([`crate::register`]) is built so.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use synod_node::{
    Effect, EffectOf, Input, InputOf, NodeId, PersistToken, Protocol, RequestId, Time,
};
use synod_transport::{Completer, Incoming, TcpTransport, WaitOutcome, completion};

use super::process::spawn_vital;
use super::{
    Machine, NodeOptions, PeerHandler, ServeClient, StartError, UpdateQueue, bind_clients,
    data_dir, peers, spawn_listener, stop_on_panic,
};

/// What a system tells [`ProtocolHost`] about its store: how the state machine is built from
/// what the data directory holds, and how its writes are laid out and made durable. The
/// process twin of `synod_sim::ProtocolStore`; a system writes its layout once, against
/// `synod_wal::Storage`, and uses it in both.
pub trait HostStore: Send + 'static {
    /// The state machine this store persists.
    type Protocol: Protocol + Send + 'static;

    /// The first byte of every message this system's nodes send each other, before the
    /// message's postcard encoding. A node drops a message of another version and says so
    /// (once, then at every power of two), so that nodes running two formats of a system's
    /// messages refuse each other rather than misread one as the other: change it whenever
    /// the message type's encoding changes. (Nodes of two versions do not work together:
    /// upgrade a cluster whole.) Versions start high, at 0xC1: messages from before the
    /// version byte began with their enum's variant index, a small number, so they are
    /// refused as another version too.
    const WIRE_VERSION: u8 = 0xC1;

    /// Builds the state machine from what the data directory holds, at the node's start.
    /// Anything the state machine must make durable before it serves it asks for with its
    /// first `Effect::Persist`, carried out (and synced) before the node takes any input.
    ///
    /// # Errors
    ///
    /// A disk error, or damage the store will not repair: the node does not start.
    fn recover(&mut self, boot: HostBoot<'_>) -> io::Result<Self::Protocol>;

    /// Writes `write` after every earlier write, without syncing it.
    ///
    /// # Errors
    ///
    /// A disk error: the process stops (fail-stop).
    fn write(&mut self, write: &<Self::Protocol as Protocol>::Write) -> io::Result<()>;

    /// Makes every write so far durable (one `fdatasync` for many writes).
    ///
    /// # Errors
    ///
    /// A failed sync: the process stops, as the contract's rule 5 says; it is never retried.
    fn sync(&mut self) -> io::Result<()>;

    /// Takes what the state machine hands up with `Effect::Apply`. The default drops it.
    fn apply(&mut self, apply: <Self::Protocol as Protocol>::Apply) {
        let _ = apply;
    }
}

/// What [`HostStore::recover`] builds a state machine from.
#[derive(Debug)]
#[non_exhaustive]
pub struct HostBoot<'a> {
    /// How the node runs: its id, its members, its data directory.
    pub options: &'a NodeOptions,
    /// The node starting.
    pub id: NodeId,
    /// Every member, this node included, in increasing order.
    pub members: Vec<NodeId>,
}

/// Where the reply to one client request goes: a thread waiting on a [`Completer`], or
/// the client event loop's answer for the request's connection. Dropped without a reply
/// (the worker stopped), it tells its waiter so (a dropped [`Completer`] is `Canceled`).
pub struct ReplyTo<R>(Box<dyn FnOnce(R) + Send>);

impl<R> ReplyTo<R> {
    /// Replies with `f`.
    pub fn new(f: impl FnOnce(R) + Send + 'static) -> ReplyTo<R> {
        ReplyTo(Box::new(f))
    }

    /// Gives the reply.
    pub fn send(self, response: R) {
        (self.0)(response);
    }
}

impl<R: Send + 'static> From<Completer<R>> for ReplyTo<R> {
    fn from(completer: Completer<R>) -> ReplyTo<R> {
        ReplyTo::new(move |response| completer.complete(response))
    }
}

impl<R> fmt::Debug for ReplyTo<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplyTo")
    }
}

/// What the worker of a [`ProtocolHost`] is handed.
pub enum HostEvent<P: Protocol> {
    /// A message a peer sent (decoded by the host's [`PeerHandler`]).
    Message {
        /// The sender, as the transport authenticated it.
        from: NodeId,
        /// The message.
        message: P::Message,
    },
    /// A client's request, and where its reply goes.
    Request {
        /// The request.
        request: P::Request,
        /// Given the state machine's reply.
        reply: ReplyTo<P::Response>,
    },
    /// The node's deadline has come, or may have: the worker checks it against its clock.
    Wake,
}

impl<P: Protocol> fmt::Debug for HostEvent<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostEvent::Message { from, .. } => write!(f, "Message from {from}"),
            HostEvent::Request { .. } => f.write_str("Request"),
            HostEvent::Wake => f.write_str("Wake"),
        }
    }
}

/// Where a [`ProtocolHost`] sends a peer's bytes: the transport, in a process.
pub type SendFn = Box<dyn FnMut(NodeId, Bytes) + Send>;

/// The node's one deadline, shared between the worker (which sets it from `WakeAt`) and the
/// wake-up thread (which waits for it).
#[derive(Debug, Default)]
pub struct Deadline {
    at: Mutex<Option<Instant>>,
    changed: Condvar,
}

impl Deadline {
    fn set(&self, at: Instant) {
        *self.at.lock().unwrap_or_else(PoisonError::into_inner) = Some(at);
        self.changed.notify_all();
    }

    /// Waits until the deadline is set and has passed, then clears it.
    fn wait(&self) {
        let mut at = self.at.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match *at {
                None => {
                    at = self
                        .changed
                        .wait(at)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        *at = None;
                        return;
                    }
                    at = self
                        .changed
                        .wait_timeout(at, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
    }
}

/// Starts the wake-up thread (`synod-wake`, vital): each time `deadline` passes, `wake`
/// runs (it queues [`HostEvent::Wake`] to the worker).
pub fn spawn_waker(deadline: Arc<Deadline>, wake: impl Fn() + Send + 'static) {
    spawn_vital("synod-wake", move || {
        loop {
            deadline.wait();
            wake();
        }
    });
}

/// Any protocol on the node contract as the worker's [`Machine`]: see the
/// [module documentation](self) for what it does with each input and effect.
pub struct ProtocolHost<St: HostStore> {
    store: St,
    protocol: St::Protocol,
    send: SendFn,
    /// The client waiting for each request handed to the state machine.
    waiters: BTreeMap<RequestId, ReplyTo<<St::Protocol as Protocol>::Response>>,
    requests_started: u64,
    /// The last token written and not yet synced.
    owed: Option<PersistToken>,
    /// Effects polled from the state machine after each input and not yet carried out:
    /// every `WakeAt` is taken up as it is polled, so the deadline checked on the next
    /// event is always the latest asked for; the rest wait for [`Machine::drain`].
    pending: VecDeque<EffectOf<St::Protocol>>,
    /// The latest `WakeAt`, until `Input::Wake` is handed in for it.
    wake_at: Option<Time>,
    /// Shared with the wake-up thread, if there is one.
    deadline: Option<Arc<Deadline>>,
    /// The latest time handed to the state machine.
    now: Time,
}

impl<St: HostStore> fmt::Debug for ProtocolHost<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtocolHost")
            .field("waiters", &self.waiters.len())
            .field("owed", &self.owed)
            .field("wake_at", &self.wake_at)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl<St> ProtocolHost<St>
where
    St: HostStore,
    <St::Protocol as Protocol>::Message: Serialize,
{
    /// A host for `protocol`, persisting through `store` and sending peers' bytes with
    /// `send`. Its first effects (what the state machine asked for as it was built) are
    /// carried out when the worker starts ([`UpdateQueue::spawn`]).
    pub fn new(store: St, protocol: St::Protocol, send: SendFn) -> Self {
        ProtocolHost {
            store,
            protocol,
            send,
            waiters: BTreeMap::new(),
            requests_started: 0,
            owed: None,
            pending: VecDeque::new(),
            wake_at: None,
            deadline: None,
            now: Time::ZERO,
        }
    }

    /// Tells `deadline` (a wake-up thread's) of every `WakeAt` from now on.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Arc<Deadline>) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The state machine.
    pub fn protocol(&self) -> &St::Protocol {
        &self.protocol
    }

    /// The store.
    pub fn store(&self) -> &St {
        &self.store
    }

    /// Client requests handed in and not answered yet.
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// The worker's clock as the state machine sees it: never behind a time it was handed.
    fn clock(&mut self, now: Duration) -> Time {
        let reading = Time::from_nanos(u64::try_from(now.as_nanos()).unwrap_or(u64::MAX));
        self.now = self.now.max(reading);
        self.now
    }

    /// Hands `input` in and polls what it asked for at once: a `WakeAt` replaces the
    /// deadline before the next event is checked against it; the rest is kept for
    /// [`Machine::drain`], in the order it was polled.
    fn handle(&mut self, now: Time, input: InputOf<St::Protocol>) {
        self.protocol.handle(now, input);
        self.poll(now);
    }

    /// Polls every effect the state machine holds (see [`ProtocolHost::handle`]).
    fn poll(&mut self, now: Time) {
        while let Some(effect) = self.protocol.poll() {
            match effect {
                Effect::WakeAt(at) => self.wake_at(now, at),
                effect => self.pending.push_back(effect),
            }
        }
    }

    /// Makes `at` the node's one deadline, replacing any earlier one.
    fn wake_at(&mut self, now: Time, at: Time) {
        self.wake_at = Some(at);
        // `now` was read before this instant, so the thread wakes the worker no earlier
        // than the worker's clock reaches `at` (a time too far off for the clock to reach
        // is never woken for).
        let wake = Instant::now().checked_add(at.saturating_duration_since(now));
        if let (Some(deadline), Some(wake)) = (&self.deadline, wake) {
            deadline.set(wake);
        }
    }
}

impl<St> Machine for ProtocolHost<St>
where
    St: HostStore,
    <St::Protocol as Protocol>::Message: Serialize + Send,
    <St::Protocol as Protocol>::Request: Send,
    <St::Protocol as Protocol>::Response: Send,
    <St::Protocol as Protocol>::Write: Send,
    <St::Protocol as Protocol>::Apply: Send,
{
    type Event = HostEvent<St::Protocol>;
    type Answer = ();

    fn step(&mut self, now: Duration, event: Self::Event) {
        let now = self.clock(now);
        match event {
            HostEvent::Message { from, message } => {
                self.handle(now, Input::Message { from, message });
            }
            HostEvent::Request { request, reply } => {
                self.requests_started += 1;
                let id = RequestId(self.requests_started);
                self.waiters.insert(id, reply);
                self.handle(now, Input::Request { id, request });
            }
            HostEvent::Wake => {}
        }
        // Whatever woke the worker, the deadline is checked against its clock: a wake-up
        // is handed in at or after its time, never before.
        if self.wake_at.is_some_and(|at| at <= now) {
            self.wake_at = None;
            self.handle(now, Input::Wake);
        }
    }

    fn drain(&mut self, now: Duration) -> Result<(), String> {
        let now = self.clock(now);
        // What the state machine asked for before any input (as it was built).
        self.poll(now);
        while let Some(effect) = self.pending.pop_front() {
            match effect {
                Effect::Send { to, message } => {
                    // A message that does not encode is lost, as one the network drops.
                    if let Ok(bytes) = encode_message::<St>(&message) {
                        (self.send)(to, Bytes::from(bytes));
                    }
                }
                Effect::Reply { id, response } => {
                    if let Some(waiter) = self.waiters.remove(&id) {
                        waiter.send(response);
                    }
                }
                Effect::Persist { token, write } => {
                    self.store
                        .write(&write)
                        .map_err(|e| format!("the store's write failed: {e}"))?;
                    self.owed = Some(token);
                }
                Effect::Apply(apply) => self.store.apply(apply),
                Effect::WakeAt(at) => self.wake_at(now, at),
            }
        }
        Ok(())
    }

    fn sync(&mut self, now: Duration) -> Result<bool, String> {
        let Some(token) = self.owed.take() else {
            return Ok(false);
        };
        self.store
            .sync()
            .map_err(|e| format!("the store's sync failed: {e}"))?;
        let now = self.clock(now);
        self.handle(now, Input::Persisted(token));
        self.drain(Duration::from_nanos(now.as_nanos()))?;
        Ok(true)
    }

    fn answer(&mut self) {}
}

/// Encodes a message of `St`'s system as its nodes send it: [`HostStore::WIRE_VERSION`],
/// then the message's postcard encoding.
///
/// # Errors
///
/// The message's type does not encode with postcard.
pub fn encode_message<St: HostStore>(
    message: &<St::Protocol as Protocol>::Message,
) -> postcard::Result<Vec<u8>>
where
    <St::Protocol as Protocol>::Message: Serialize,
{
    postcard::to_extend(message, vec![St::WIRE_VERSION])
}

/// Why a peer's bytes are not a message of the system.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageRefused {
    /// The bytes start with another version of the system's messages (`theirs`) than this
    /// node's (`ours`): the two nodes run different formats.
    Version {
        /// This node's [`HostStore::WIRE_VERSION`].
        ours: u8,
        /// The first byte of the peer's message.
        theirs: u8,
    },
    /// The bytes are empty, or do not decode as a message of this version.
    Malformed,
}

impl fmt::Display for MessageRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageRefused::Version { ours, theirs } => write!(
                f,
                "a peer sent messages of wire version {theirs}, and this node speaks version {ours}: \
                 nodes of two versions do not work together (upgrade every node); its messages \
                 are dropped"
            ),
            MessageRefused::Malformed => f.write_str("a peer's message did not decode; dropped"),
        }
    }
}

impl std::error::Error for MessageRefused {}

/// Decodes a peer's bytes into a message of `St`'s system, as [`encode_message`] wrote it.
/// Never panics: bytes that are not a message are refused (and dropped by the node, as a
/// lost message is; the protocol resends what matters).
///
/// # Errors
///
/// [`MessageRefused`]: another version, or bytes that do not decode.
pub fn decode_message<St: HostStore>(
    payload: &[u8],
) -> Result<<St::Protocol as Protocol>::Message, MessageRefused>
where
    <St::Protocol as Protocol>::Message: DeserializeOwned,
{
    let (&version, rest) = payload.split_first().ok_or(MessageRefused::Malformed)?;
    if version != St::WIRE_VERSION {
        return Err(MessageRefused::Version {
            ours: St::WIRE_VERSION,
            theirs: version,
        });
    }
    postcard::from_bytes(rest).map_err(|_| MessageRefused::Malformed)
}

/// Why [`Host::call`] has no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// The worker is gone (the node is stopping): the request was not handed in.
    NotTaken,
    /// The worker took the request up and will never answer (it stopped): the request
    /// may or may not have taken effect.
    Dropped,
    /// No answer before the deadline: the request may or may not take effect.
    TimedOut,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CallError::NotTaken => "the node is stopping",
            CallError::Dropped => "the node's worker stopped",
            CallError::TimedOut => "no answer in time",
        })
    }
}

impl std::error::Error for CallError {}

/// A running node of a system on the contract, as its client connections and the peer
/// transport see it: the queue to its worker.
pub struct Host<St: HostStore>
where
    ProtocolHost<St>: Machine,
{
    queue: UpdateQueue<ProtocolHost<St>>,
    id: NodeId,
    /// Peer messages of another wire version dropped so far (said at each power of two).
    other_versions: AtomicU64,
}

impl<St: HostStore> fmt::Debug for Host<St>
where
    ProtocolHost<St>: Machine,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("id", &self.id)
            .field("queue", &self.queue)
            .finish()
    }
}

impl<St> Host<St>
where
    St: HostStore,
    <St::Protocol as Protocol>::Response: Send,
    ProtocolHost<St>: Machine<Event = HostEvent<St::Protocol>, Answer = ()>,
{
    /// This node's id.
    #[must_use]
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Hands `requests` to the state machine together (one wake-up of the worker for all),
    /// each with where its reply goes.
    pub fn submit_all(
        &self,
        requests: impl IntoIterator<
            Item = (
                <St::Protocol as Protocol>::Request,
                ReplyTo<<St::Protocol as Protocol>::Response>,
            ),
        >,
    ) {
        self.queue.submit_all(
            requests
                .into_iter()
                .map(|(request, reply)| HostEvent::Request { request, reply }),
        );
    }

    /// Hands a RESP connection's batch of calls ([`crate::resp::Commands::submit`]) to the
    /// state machine together, each answered with its response.
    pub fn submit_answers(&self, calls: &mut Vec<RespCall<St::Protocol>>)
    where
        <St::Protocol as Protocol>::Response: 'static,
    {
        self.submit_all(calls.drain(..).map(|(request, answer)| {
            (
                request,
                ReplyTo::new(move |response| answer.complete(response)),
            )
        }));
    }

    /// Hands `request` to the state machine and waits, until `deadline` at most, for its
    /// reply.
    ///
    /// # Errors
    ///
    /// [`CallError`]: whether the request may have taken effect.
    pub fn call(
        &self,
        request: <St::Protocol as Protocol>::Request,
        deadline: Instant,
    ) -> Result<<St::Protocol as Protocol>::Response, CallError> {
        let (reply, done) = completion();
        self.queue.send(HostEvent::Request {
            request,
            reply: reply.into(),
        });
        match done.wait_until(deadline) {
            WaitOutcome::Done(response) => Ok(response),
            WaitOutcome::Canceled => Err(CallError::Dropped),
            WaitOutcome::TimedOut => Err(CallError::TimedOut),
        }
    }
}

impl<St> PeerHandler for Host<St>
where
    St: HostStore,
    <St::Protocol as Protocol>::Message: DeserializeOwned,
    ProtocolHost<St>: Machine<Event = HostEvent<St::Protocol>, Answer = ()>,
    Host<St>: Send + Sync,
{
    /// Queues a peer's message to the worker; a request (the contract has none between
    /// peers) and bytes that do not decode are dropped.
    fn on_peer(&self, incoming: &Incoming) -> Option<Bytes> {
        if incoming.is_request() {
            return None;
        }
        let from = incoming.from();
        let message = match decode_message::<St>(incoming.payload()) {
            Ok(message) => message,
            Err(refused @ MessageRefused::Version { .. }) => {
                let seen = self.other_versions.fetch_add(1, Ordering::Relaxed) + 1;
                if seen.is_power_of_two() {
                    eprintln!(
                        "synod node {}: from {from}: {refused} ({seen} so far)",
                        self.id
                    );
                }
                return None;
            }
            Err(MessageRefused::Malformed) => return None,
        };
        self.queue.send(HostEvent::Message { from, message });
        None
    }
}

/// A RESP connection's call to a hosted state machine, with where its answer goes (what
/// [`crate::resp::Commands::submit`] is handed).
pub type RespCall<P> = (
    <P as Protocol>::Request,
    crate::resp::Answer<<P as Protocol>::Response>,
);

/// How [`start`] runs a system on the contract, beside the runtime's [`NodeOptions`].
#[derive(Debug, Clone, Copy)]
pub struct HostSpec<'a> {
    /// The names of what the system keeps in the data directory (for
    /// [`data_dir::claim`]: a directory holding any of them but no identity is refused).
    pub state: &'a [&'a str],
    /// The longest frame a peer connection carries: the system's largest message and its
    /// headers.
    pub frame_bytes_max: usize,
}

/// A node started by [`start`].
pub struct Started<St: HostStore>
where
    ProtocolHost<St>: Machine,
{
    /// Where peers connect.
    pub peers: SocketAddr,
    /// Where clients connect.
    pub clients: SocketAddr,
    /// The node, as its clients reach it.
    pub host: Arc<Host<St>>,
}

impl<St: HostStore> fmt::Debug for Started<St>
where
    ProtocolHost<St>: Machine,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Started")
            .field("peers", &self.peers)
            .field("clients", &self.clients)
            .finish_non_exhaustive()
    }
}

/// Starts a node of a system on the contract in this process: binds the peer and client
/// addresses, claims the data directory, recovers the state machine through `store`, makes
/// what it asks for at start durable, and starts the worker, the wake-up thread and the
/// client listener, whose connections `serve` (given the running node) serves. The node
/// runs until the process exits; it fails stop, as every node of the runtime does.
///
/// # Errors
///
/// A [`StartError`] a person can act on.
pub fn start<St, C>(
    options: &NodeOptions,
    spec: HostSpec<'_>,
    mut store: St,
    serve: impl FnOnce(Arc<Host<St>>) -> C,
) -> Result<Started<St>, StartError>
where
    St: HostStore,
    <St::Protocol as Protocol>::Message: Serialize + DeserializeOwned + Send,
    <St::Protocol as Protocol>::Request: Send,
    <St::Protocol as Protocol>::Response: Send,
    <St::Protocol as Protocol>::Write: Send,
    <St::Protocol as Protocol>::Apply: Send,
    C: ServeClient,
{
    stop_on_panic();
    // Until the worker runs, what peers send is dropped; the protocol resends.
    let (transport, peer_slot) =
        peers::bind::<Host<St>>(options, spec.frame_bytes_max, |_| Vec::new())?;
    let listener = bind_clients(options)?;
    let connections = super::auth::client_connections(options)?;
    // Only once both addresses are ours does the data directory get touched.
    data_dir::claim(options, spec.state)?;
    let id = NodeId::new(options.id());
    let members = options.peers().keys().map(|&m| NodeId::new(m)).collect();
    let boot = HostBoot {
        options,
        id,
        members,
    };
    let protocol = store
        .recover(boot)
        .map_err(|e| data_dir::data_err(options.data_dir(), e))?;
    peers::add_peers(options, &transport)?;
    let deadline = Arc::new(Deadline::default());
    let send: SendFn = {
        let transport: Arc<TcpTransport> = Arc::clone(&transport);
        // Lost messages are the protocol's business: it resends.
        Box::new(move |to, bytes| drop(transport.send(to, bytes)))
    };
    let machine = ProtocolHost::new(store, protocol, send).with_deadline(Arc::clone(&deadline));
    let queue = UpdateQueue::spawn(machine)
        .map_err(|e| StartError::Usage(format!("cannot start the node thread: {e}")))?;
    let host = Arc::new(Host {
        queue,
        id,
        other_versions: AtomicU64::new(0),
    });
    peer_slot.set(Arc::clone(&host));
    spawn_waker(deadline, {
        let host = Arc::clone(&host);
        move || host.queue.submit_unless_busy(HostEvent::Wake)
    });
    let clients = listener.local_addr().map_err(|error| StartError::Bind {
        what: "--client",
        addr: options.client_addr().to_string(),
        error,
    })?;
    spawn_listener(listener, connections, Arc::new(serve(Arc::clone(&host)))).map_err(|error| {
        StartError::Bind {
            what: "--client",
            addr: options.client_addr().to_string(),
            error,
        }
    })?;
    Ok(Started {
        peers: transport.local_addr(),
        clients,
        host,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use serde::Deserialize;

    use super::*;
    use crate::runtime::poll_until;

    /// What the toy state machine is asked.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Ask {
        /// Persist this value and answer it once durable.
        Write(u64),
        /// Answer this at once.
        Echo(u64),
        /// Send this to node 2.
        Send(u64),
        /// Ask for a wake-up at this time (milliseconds).
        WakeAt(u64),
        /// How many wake-ups were handed in.
        Woken,
        /// How many wake-ups were handed in before the time asked for.
        Early,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct Note(u64);

    /// A toy state machine on the contract that records what it is handed.
    #[derive(Debug, Default)]
    struct Toy {
        last_token: PersistToken,
        waiting: VecDeque<(PersistToken, RequestId, u64)>,
        effects: VecDeque<EffectOf<Toy>>,
        /// Every `Persisted` handed in.
        persisted: Vec<PersistToken>,
        /// The time of every `Wake`, with the deadline it was asked for.
        wakes: Vec<(Time, Option<Time>)>,
        asked_wake: Option<Time>,
        /// Messages received.
        received: Vec<(NodeId, Note)>,
    }

    impl Protocol for Toy {
        type Message = Note;
        type Request = Ask;
        type Response = u64;
        type Write = u64;
        type Apply = std::convert::Infallible;

        fn id(&self) -> NodeId {
            NodeId::new(1)
        }

        fn handle(&mut self, now: Time, input: InputOf<Self>) {
            match input {
                Input::Request { id, request } => match request {
                    Ask::Write(v) => {
                        self.last_token = self.last_token.next();
                        self.waiting.push_back((self.last_token, id, v));
                        let token = self.last_token;
                        self.effects.push_back(Effect::Persist { token, write: v });
                    }
                    Ask::Echo(v) => self.effects.push_back(Effect::Reply { id, response: v }),
                    Ask::Send(v) => {
                        let to = NodeId::new(2);
                        self.effects.push_back(Effect::Send {
                            to,
                            message: Note(v),
                        });
                        self.effects.push_back(Effect::Reply { id, response: v });
                    }
                    Ask::WakeAt(ms) => {
                        self.asked_wake = Some(Time::from_millis(ms));
                        self.effects
                            .push_back(Effect::WakeAt(Time::from_millis(ms)));
                        self.effects.push_back(Effect::Reply { id, response: ms });
                    }
                    Ask::Woken => {
                        let response = self.wakes.len() as u64;
                        self.effects.push_back(Effect::Reply { id, response });
                    }
                    Ask::Early => {
                        let early = self.wakes.iter().filter(|(at, asked)| Some(*at) < *asked);
                        let response = early.count() as u64;
                        self.effects.push_back(Effect::Reply { id, response });
                    }
                },
                Input::Persisted(token) => {
                    self.persisted.push(token);
                    while let Some(&(t, id, v)) = self.waiting.front()
                        && t <= token
                    {
                        self.waiting.pop_front();
                        self.effects.push_back(Effect::Reply { id, response: v });
                    }
                }
                Input::Wake => self.wakes.push((now, self.asked_wake)),
                Input::Message { from, message } => self.received.push((from, message)),
            }
        }

        fn poll(&mut self) -> Option<EffectOf<Self>> {
            self.effects.pop_front()
        }
    }

    /// A store in memory that counts its syncs and can be told to fail them.
    #[derive(Debug, Default)]
    struct Memory {
        written: Vec<u64>,
        /// How many of `written` each sync covered.
        synced: Vec<usize>,
        fail_sync: bool,
    }

    impl HostStore for Memory {
        type Protocol = Toy;

        fn recover(&mut self, _boot: HostBoot<'_>) -> io::Result<Toy> {
            Ok(Toy::default())
        }

        fn write(&mut self, write: &u64) -> io::Result<()> {
            self.written.push(*write);
            Ok(())
        }

        fn sync(&mut self) -> io::Result<()> {
            if self.fail_sync {
                return Err(io::Error::other("the disk is gone"));
            }
            self.synced.push(self.written.len());
            Ok(())
        }
    }

    type Sent = Arc<Mutex<Vec<(NodeId, Bytes)>>>;

    fn host() -> (ProtocolHost<Memory>, Sent) {
        let sent: Sent = Arc::default();
        let send: SendFn = {
            let sent = Arc::clone(&sent);
            Box::new(move |to, bytes| sent.lock().expect("unpoisoned").push((to, bytes)))
        };
        (
            ProtocolHost::new(Memory::default(), Toy::default(), send),
            sent,
        )
    }

    fn ask(
        host: &mut ProtocolHost<Memory>,
        at_ms: u64,
        ask: Ask,
    ) -> synod_transport::Completion<u64> {
        let (reply, done) = completion();
        host.step(
            Duration::from_millis(at_ms),
            HostEvent::Request {
                request: ask,
                reply: reply.into(),
            },
        );
        done
    }

    fn answered(done: &synod_transport::Completion<u64>) -> Option<u64> {
        match done.try_take() {
            WaitOutcome::Done(v) => Some(v),
            _ => None,
        }
    }

    #[test]
    fn persisted_is_handed_in_only_after_the_sync_with_the_last_token_it_covers() {
        let (mut host, _) = host();
        let a = ask(&mut host, 1, Ask::Write(10));
        let b = ask(&mut host, 1, Ask::Write(11));
        host.drain(Duration::from_millis(1)).expect("drained");
        // Both are written, neither is synced: nothing is acknowledged, nothing answered.
        assert_eq!(host.store().written, [10, 11]);
        assert!(host.store().synced.is_empty());
        assert!(host.protocol().persisted.is_empty());
        assert_eq!((answered(&a), answered(&b)), (None, None));
        // One sync covers both and acknowledges the last token.
        assert_eq!(host.sync(Duration::from_millis(2)), Ok(true));
        assert_eq!(host.store().synced, [2]);
        assert_eq!(host.protocol().persisted, [PersistToken(2)]);
        assert_eq!((answered(&a), answered(&b)), (Some(10), Some(11)));
        // Nothing more is owed.
        assert_eq!(host.sync(Duration::from_millis(3)), Ok(false));
        assert_eq!(host.store().synced, [2]);
    }

    #[test]
    fn a_failed_sync_is_an_error_and_acknowledges_nothing() {
        let (mut host, _) = host();
        host.store.fail_sync = true;
        let a = ask(&mut host, 1, Ask::Write(10));
        host.drain(Duration::from_millis(1)).expect("drained");
        let stopped = host.sync(Duration::from_millis(2));
        assert!(stopped.is_err(), "{stopped:?}");
        assert!(host.protocol().persisted.is_empty());
        assert_eq!(answered(&a), None);
    }

    /// Set in the child process of [`a_failed_sync_stops_the_process`].
    const FAILED_SYNC_ENV: &str = "SYNOD_TEST_HOST_FAILED_SYNC";

    /// The child of [`a_failed_sync_stops_the_process`]: a host on the worker whose store
    /// fails every sync, asked for a write. Exits 0 (and says what it saw) only if the
    /// process outlived the failed sync for 10 s.
    #[test]
    #[ignore = "run in a child process by a_failed_sync_stops_the_process"]
    fn child_host_whose_sync_fails() {
        if std::env::var_os(FAILED_SYNC_ENV).is_none() {
            return;
        }
        let (mut host, _) = host();
        host.store.fail_sync = true;
        let queue = UpdateQueue::spawn(host).expect("the worker starts");
        let (reply, done) = completion();
        queue.send(HostEvent::Request {
            request: Ask::Write(10),
            reply: reply.into(),
        });
        let acknowledged = poll_until(Instant::now() + Duration::from_secs(10), || {
            answered(&done).is_some()
        });
        eprintln!("the process outlived the failed sync; acknowledged: {acknowledged}");
    }

    #[test]
    fn a_failed_sync_stops_the_process() {
        let exe = std::env::current_exe().expect("the test binary");
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "runtime::host::tests::child_host_whose_sync_fails",
                "--ignored",
                "--nocapture",
            ])
            .env(FAILED_SYNC_ENV, "1")
            .output()
            .expect("the child runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(crate::runtime::EXIT_FAIL_STOP),
            "{stderr}"
        );
        assert!(
            stderr.contains("synod node: stopping: the store's sync failed: the disk is gone"),
            "{stderr}"
        );
    }

    #[test]
    fn each_reply_completes_the_call_it_answers() {
        let (mut host, sent) = host();
        let write = ask(&mut host, 1, Ask::Write(7));
        let echo = ask(&mut host, 1, Ask::Echo(8));
        let send = ask(&mut host, 1, Ask::Send(9));
        host.drain(Duration::from_millis(1)).expect("drained");
        // The echo and the send are answered at once, the write only after its sync.
        assert_eq!(
            (answered(&echo), answered(&send), answered(&write)),
            (Some(8), Some(9), None)
        );
        assert_eq!(host.waiting(), 1);
        host.sync(Duration::from_millis(1)).expect("synced");
        assert_eq!(answered(&write), Some(7));
        assert_eq!(host.waiting(), 0);
        // The message went to node 2, encoded with postcard.
        let sent = sent.lock().expect("unpoisoned");
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, NodeId::new(2));
        assert_eq!(decode_message::<Memory>(&sent[0].1), Ok(Note(9)));
    }

    #[test]
    fn a_wake_up_is_never_handed_in_before_its_time() {
        let (host, _) = host();
        // With a wake-up thread's deadline, which nothing waits on here.
        let mut host = host.with_deadline(Arc::new(Deadline::default()));
        let _ = ask(&mut host, 1, Ask::WakeAt(50));
        host.drain(Duration::from_millis(1)).expect("drained");
        // Events before the deadline (a wake-up thread early, or any other event) hand in
        // no wake-up.
        host.step(Duration::from_millis(10), HostEvent::Wake);
        host.step(Duration::from_millis(49), HostEvent::Wake);
        let _ = ask(&mut host, 49, Ask::Echo(1));
        assert!(host.protocol().wakes.is_empty());
        // At the deadline, one; and none again until the next is asked for.
        host.step(Duration::from_millis(50), HostEvent::Wake);
        host.step(Duration::from_millis(60), HostEvent::Wake);
        assert_eq!(
            host.protocol().wakes,
            [(Time::from_millis(50), Some(Time::from_millis(50)))]
        );
        // A later WakeAt replaces an earlier one: only the last counts.
        let _ = ask(&mut host, 61, Ask::WakeAt(70));
        let _ = ask(&mut host, 61, Ask::WakeAt(90));
        host.drain(Duration::from_millis(61)).expect("drained");
        host.step(Duration::from_millis(80), HostEvent::Wake);
        assert_eq!(host.protocol().wakes.len(), 1);
        // A wake-up too far off for any clock is asked for without a panic, and never comes.
        let far = ask(&mut host, 61, Ask::WakeAt(u64::MAX));
        host.drain(Duration::from_millis(61)).expect("drained");
        assert_eq!(answered(&far), Some(u64::MAX));
        host.step(Duration::from_millis(80), HostEvent::Wake);
        assert_eq!(host.protocol().wakes.len(), 1);
        let _ = ask(&mut host, 81, Ask::WakeAt(90));
        host.drain(Duration::from_millis(81)).expect("drained");
        // A clock read that goes back is not handed in: the time never goes back.
        host.step(Duration::from_millis(5), HostEvent::Wake);
        host.step(Duration::from_millis(95), HostEvent::Wake);
        assert_eq!(host.protocol().wakes.len(), 2);
        assert_eq!(host.protocol().wakes[1].0, Time::from_millis(95));
    }

    #[test]
    fn a_wake_at_replaced_by_a_later_one_in_the_same_batch_is_not_handed_in_early() {
        let (mut host, _) = host();
        let _ = ask(&mut host, 1, Ask::WakeAt(50));
        host.drain(Duration::from_millis(1)).expect("drained");
        // Two events in one batch (no drain between them, as the worker steps events
        // while more wait): the first replaces the wake-up at 50 ms by one at 100 ms ...
        let _ = ask(&mut host, 40, Ask::WakeAt(100));
        // ... and the second is taken up past the old deadline.
        host.step(Duration::from_millis(60), HostEvent::Wake);
        let _ = ask(&mut host, 70, Ask::Echo(1));
        assert_eq!(
            host.protocol().wakes,
            [],
            "Wake handed in before the 100 ms the last WakeAt asked for"
        );
        // The new deadline is kept: at 100 ms, still in the same batch, the wake-up comes.
        host.step(Duration::from_millis(100), HostEvent::Wake);
        assert_eq!(
            host.protocol().wakes,
            [(Time::from_millis(100), Some(Time::from_millis(100)))]
        );
        // A wake-up asked for while a Wake is handled (no drain between) is kept too.
        let _ = ask(&mut host, 101, Ask::WakeAt(120));
        host.step(Duration::from_millis(110), HostEvent::Wake);
        host.step(Duration::from_millis(120), HostEvent::Wake);
        assert_eq!(host.protocol().wakes.len(), 2);
        assert_eq!(host.protocol().wakes[1].0, Time::from_millis(120));
    }

    #[test]
    fn the_wake_up_thread_wakes_the_worker_at_or_after_the_deadline() {
        let deadline = Arc::new(Deadline::default());
        let (host, _) = host();
        let host = host.with_deadline(Arc::clone(&deadline));
        let queue = Arc::new(UpdateQueue::spawn(host).expect("the worker starts"));
        spawn_waker(deadline, {
            let queue = Arc::clone(&queue);
            move || queue.submit_unless_busy(HostEvent::Wake)
        });
        let call = |request: Ask| {
            let (reply, done) = completion();
            queue.send(HostEvent::Request {
                request,
                reply: reply.into(),
            });
            done.wait().ok()
        };
        // A wake-up 30 ms after the worker started, asked for with nothing else to come:
        // only the wake-up thread can hand it in.
        assert_eq!(call(Ask::WakeAt(30)), Some(30));
        let woken = poll_until(Instant::now() + Duration::from_secs(10), || {
            call(Ask::Woken) == Some(1)
        });
        assert!(woken, "the wake-up was never handed in");
        assert_eq!(call(Ask::Early), Some(0), "a wake-up came before its time");
    }

    #[test]
    fn bytes_that_are_no_message_are_refused() {
        assert_eq!(
            decode_message::<Memory>(&[]),
            Err(MessageRefused::Malformed)
        );
        let version = Memory::WIRE_VERSION;
        assert_eq!(
            decode_message::<Memory>(&[version, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Err(MessageRefused::Malformed)
        );
        let good = encode_message::<Memory>(&Note(3)).expect("encodes");
        assert_eq!(good[0], version);
        assert_eq!(decode_message::<Memory>(&good), Ok(Note(3)));
        // The same message without the version byte (as a node from before it sent them),
        // or under another version, is refused naming both versions: never misread.
        let unversioned = postcard::to_stdvec(&Note(3)).expect("encodes");
        assert_eq!(
            decode_message::<Memory>(&unversioned),
            Err(MessageRefused::Version {
                ours: version,
                theirs: 3
            })
        );
        let mut other = good.clone();
        other[0] = version.wrapping_add(1);
        let refused = decode_message::<Memory>(&other).expect_err("another version");
        let said = refused.to_string();
        assert!(
            said.contains(&format!("wire version {}", version.wrapping_add(1)))
                && said.contains(&format!("speaks version {version}")),
            "{said}"
        );
    }
}
