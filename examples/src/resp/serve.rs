//! The server side of RESP on the runtime's event loop: commands parsed, run through a
//! system's command table, handed to the node in batches, and their replies written in
//! order, with bounded buffers.
// tidy: driver: spawns the threads a blocking command runs on.
//!
//! [`Resp`] is the [`ServeClient`] of every system that speaks RESP: the system supplies its
//! [`Commands`] (a per-connection state, what each command does, how a request is handed to
//! its node and how the node's answer becomes a reply). On one connection:
//!
//! - commands are parsed as they arrive; one answered at once ([`Step::Reply`]) is written
//!   as soon as every reply before it is;
//! - a command that needs the node ([`Step::Call`]) takes a slot in the connection's line of
//!   replies, and its request joins the loop's batch, handed to the node once per wake-up
//!   of the loop ([`Commands::submit`]); the node answers through an [`Answer`], which
//!   fills the slot;
//! - calls are pipelined: the next command is parsed and run while earlier calls are in
//!   flight, up to [`ClientLimits::in_flight_max`](crate::runtime::ClientLimits), as long
//!   as they are in the same [`Order::Group`] (reads with reads, writes with writes); a call of another group, or
//!   one that must be alone ([`Order::Alone`]: it changes what later commands mean, as
//!   opening a session does), waits until those in flight are answered, and nothing after
//!   an `Alone` call is parsed until it is answered. So a connection sees its commands take
//!   effect in the order it sent them;
//! - each call has [`Commands::request_timeout`] to be answered, after which it is settled
//!   as [`Outcome::TimedOut`];
//! - values can be pushed to a connection from any thread ([`Pusher`]), at most
//!   [`PUSH_QUEUE_MAX`] values and [`PUSH_QUEUE_BYTES_MAX`] bytes waiting (a value alone may
//!   be larger); past either the connection is sent an error and closed. A
//!   pushed value is written after the replies of every command read before it arrived
//!   (never in the middle of their line), so a RESP2 client that subscribes reads its
//!   confirmation before the first message;
//! - a command the codec refuses is answered with the error and closes the connection (a
//!   RESP stream cannot be resynchronised).
//!
//! # Authentication
//!
//! When the node has users ([`ConnIo::auth`], from `--password-file` and `--users-file`),
//! a connection speaks Redis's authentication, so `redis-cli -a`, `redis-cli --user U
//! --pass P` and Redis client libraries work unchanged:
//!
//! - `AUTH password` (the default user), `AUTH user password`, and `HELLO 2|3 AUTH user
//!   password` (which then runs as `HELLO 2|3`) authenticate; a wrong pair is answered
//!   `-WRONGPASS invalid username-password pair or user is disabled.`;
//! - before a connection has authenticated, every other command but `PING` and `QUIT` is
//!   answered `-NOAUTH Authentication required.` (`HELLO` without `AUTH` with Redis's
//!   `-NOAUTH` text), and the client loop closes the connection once it has been open
//!   `auth_timeout_ms` or sent more than a few KiB;
//! - the reply to a failed attempt is held back, [`AUTH_FAILURE_DELAY_MS`] for the first
//!   and twice as long for each next one, on the event loop's timer (the loop never
//!   sleeps), and nothing more of that connection is read meanwhile; the failure is
//!   counted and logged, and the [`AUTH_FAILURES_MAX`]th closes the connection after its
//!   reply;
//! - a read-only user's command that writes ([`Commands::writes`], each system's table
//!   says which) is answered `-NOPERM User NAME has no permissions to run the 'CMD'
//!   command`, without reaching the table.
//!
//! Without users, `AUTH` is answered with Redis's error for a node without a password, and
//! every command runs.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{CommandParser, Limits, Value};
use crate::runtime::CLIENT_THREAD;
use crate::runtime::auth::{
    AUTH_FAILURE_DELAY_MS, AUTH_FAILURE_DELAY_MS_MAX, AUTH_FAILURES_MAX, Rights,
};
use crate::runtime::clients::{ConnHandle, ConnIo, ServeClient};

/// Values pushed to one connection that may wait to be written; past it the connection is
/// sent an error and closed.
pub const PUSH_QUEUE_MAX: usize = 1024;
/// Bytes (as encoded) of the values pushed to one connection that may wait to be written;
/// past it the connection is sent an error and closed, as past [`PUSH_QUEUE_MAX`] values.
/// A value pushed while nothing waits is taken whatever its size, so one larger than this
/// (a watch event of a revision that wrote several large values) is never refused for
/// ever. Redis's `client-output-buffer-limit` for pub/sub clients is 8 MiB (soft) too.
pub const PUSH_QUEUE_BYTES_MAX: usize = 8 << 20;

/// What a connection refused at the connection limit is sent, as Redis words it.
pub const TOO_MANY_CLIENTS: &[u8] = b"-ERR max number of clients reached\r\n";
/// What a client that speaks plain text to a node whose client port speaks TLS only is told
/// before the connection is closed.
pub const TLS_REQUIRED: &[u8] =
    b"-ERR this port speaks TLS only: connect with TLS (redis-cli --tls --cacert CA_FILE)\r\n";

/// The reply to a command other than `AUTH`, `HELLO`, `PING` and `QUIT` on a connection
/// that has not authenticated, as Redis words it.
pub const NOAUTH: &str = "NOAUTH Authentication required.";
/// The reply to `HELLO` without `AUTH` on a connection that has not authenticated.
pub const NOAUTH_HELLO: &str = "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time";
/// The reply to a wrong user name or password, as Redis words it.
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
/// The reply to `AUTH` on a node without users, as Redis words it.
pub const AUTH_NOT_CONFIGURED: &str = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";

/// What a connection whose pushed values overflowed its queue is sent before it is closed.
pub const PUSH_OVERFLOW: &str =
    "ERR too many pushed messages waiting for this client; the connection is closed";

/// A system's command table, as a RESP connection runs it.
pub trait Commands: Send + Sync + 'static {
    /// What a connection remembers between commands (its session, its read mode...).
    type Conn: Default + Send + 'static;
    /// What a request in flight keeps for its settling (the request, a count it holds).
    type Pending: Send + 'static;
    /// A request to the node.
    type Request: Send + 'static;
    /// The node's answer to a request.
    type Response: Send + 'static;

    /// Runs one command (never empty).
    fn run(&self, conn: &mut Self::Conn, args: &[Vec<u8>], ctx: &Context) -> Step<Self>;

    /// Hands `calls` to the node, all at once; each is answered through its [`Answer`]
    /// (dropping one without answering settles it as [`Outcome::Dropped`]).
    fn submit(&self, calls: &mut Vec<(Self::Request, Answer<Self::Response>)>);

    /// Turns the outcome of a call into its reply, or sends it on again (to the leader,
    /// say) and waits for its answer on `resend`'s [`Answer`].
    fn settle(
        &self,
        conn: &mut Self::Conn,
        pending: Self::Pending,
        outcome: Outcome<Self::Response>,
        resend: Resend<'_, Self::Response>,
    ) -> Settled<Self::Pending>;

    /// How long a call may take before it is settled as [`Outcome::TimedOut`].
    fn request_timeout(&self) -> Duration;

    /// How the node names itself in a message about a connection (`synod node 3`).
    fn node_name(&self) -> String;

    /// Whether the command `args` (never empty) may change anything: a read-only user is
    /// refused it. A table answers for every command it knows, so that no write reaches a
    /// read-only user by being left out; a command it does not know may say `false`.
    fn writes(&self, args: &[Vec<u8>]) -> bool;
}

/// What to do with one command.
pub enum Step<C: Commands + ?Sized> {
    /// Reply at once (after the replies before it).
    Reply(Reply),
    /// Hand `request` to the node; settle its answer with `pending`.
    Call {
        /// What the node is handed.
        request: C::Request,
        /// What [`Commands::settle`] is given with the answer.
        pending: C::Pending,
        /// Which calls it may be in flight with.
        order: Order,
    },
    /// Run this on a thread of its own (it may block: a graceful shutdown, say) and reply
    /// with what it returns; nothing after it is parsed until then.
    Blocking(Box<dyn FnOnce() -> Reply + Send>),
}

impl<C: Commands + ?Sized> fmt::Debug for Step<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Reply(reply) => f.debug_tuple("Reply").field(reply).finish(),
            Step::Call { order, .. } => f.debug_struct("Call").field("order", order).finish(),
            Step::Blocking(_) => f.write_str("Blocking"),
        }
    }
}

/// Which calls of a connection may be in flight together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// With the others of the same group, up to `in_flight_max` of them (and the
    /// connection's limit): their effects are independent of each other's answers. The
    /// replies of the calls in flight are held until every reply before them is written,
    /// so `in_flight_max` times the largest reply bounds what one connection holds.
    Group {
        /// The group.
        group: u8,
        /// The most calls of the group in flight at once on one connection.
        in_flight_max: usize,
    },
    /// Alone: it waits for every call before it, and nothing after it is run until it is
    /// answered (its answer changes what later commands mean).
    Alone,
}

/// How a call ended, as [`Commands::settle`] is told.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome<R> {
    /// The node's answer.
    Done(R),
    /// The node did not take the request: certainly not carried out.
    NotTaken,
    /// The node took it up and dropped it unanswered: it may have been carried out.
    Dropped,
    /// No answer within [`Commands::request_timeout`]: it may be carried out.
    TimedOut,
}

/// What [`Commands::settle`] decided.
#[derive(Debug)]
pub enum Settled<P> {
    /// The call's reply.
    Reply(Reply),
    /// The call was sent on again (through [`Resend::answer`]): wait for that answer.
    Wait(P),
}

/// The answer to one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// What the client is sent.
    pub value: Value,
    /// Values sent right after it, for a command that answers with several (Redis's
    /// `SUBSCRIBE a b` confirms each channel on its own).
    pub then: Vec<Value>,
    /// Whether the connection is closed once it is sent.
    pub close: bool,
}

impl Reply {
    /// A reply that leaves the connection open.
    #[must_use]
    pub fn open(value: Value) -> Reply {
        Reply {
            value,
            then: Vec::new(),
            close: false,
        }
    }

    /// A reply after which the connection is closed.
    #[must_use]
    pub fn close(value: Value) -> Reply {
        Reply {
            value,
            then: Vec::new(),
            close: true,
        }
    }

    /// A reply of several values, in order (at least one: an empty list is answered with
    /// an empty array), leaving the connection open.
    #[must_use]
    pub fn several(values: Vec<Value>) -> Reply {
        let mut values = values.into_iter();
        Reply {
            value: values.next().unwrap_or(Value::Array(Vec::new())),
            then: values.collect(),
            close: false,
        }
    }
}

/// What is delivered to a RESP connection from other threads.
#[derive(Debug)]
pub enum Delivery<R> {
    /// The outcome of the call in `slot`.
    Answer {
        /// The call's place in the connection's line of replies.
        slot: u64,
        /// How it ended.
        outcome: Outcome<R>,
    },
    /// The reply of the blocking command in `slot`.
    Reply {
        /// The command's place in the connection's line of replies.
        slot: u64,
        /// Its reply.
        reply: Reply,
    },
    /// A value pushed to the connection.
    Push(Value),
    /// Pushed values overflowed the connection's queue.
    Overflow,
    /// A last value pushed, after which the connection is closed.
    Close(Value),
}

/// Where the node's answer to one call goes: back to the loop serving its connection.
/// Dropped unanswered, it settles the call as [`Outcome::Dropped`].
pub struct Answer<R: Send + 'static> {
    handle: ConnHandle<Delivery<R>>,
    slot: u64,
    done: bool,
}

impl<R: Send + 'static> fmt::Debug for Answer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Answer")
            .field("conn", &self.handle.id())
            .field("slot", &self.slot)
            .finish()
    }
}

impl<R: Send + 'static> Answer<R> {
    /// Answers the call.
    pub fn complete(mut self, response: R) {
        self.send(Outcome::Done(response));
    }

    /// Says the node did not take the call (certainly not carried out).
    pub fn refuse(mut self) {
        self.send(Outcome::NotTaken);
    }

    fn send(&mut self, outcome: Outcome<R>) {
        self.done = true;
        self.handle.deliver(Delivery::Answer {
            slot: self.slot,
            outcome,
        });
    }

    /// Drops this answer without settling its call (the call was settled another way).
    pub fn discard(mut self) {
        self.done = true;
    }

    /// Whether the connection that waits for this answer is still open.
    #[must_use]
    pub fn is_wanted(&self) -> bool {
        self.handle.is_open()
    }
}

impl<R: Send + 'static> Drop for Answer<R> {
    fn drop(&mut self) {
        if !self.done {
            self.send(Outcome::Dropped);
        }
    }
}

/// A way for [`Commands::settle`] to send a call on again and wait for its new answer.
#[derive(Debug)]
pub struct Resend<'a, R: Send + 'static> {
    handle: &'a ConnHandle<Delivery<R>>,
    slot: u64,
    others_in_flight: bool,
}

impl<R: Send + 'static> Resend<'_, R> {
    /// Whether other calls of the connection are in flight beside this one (a pipelining
    /// client): sent on again, this call could take effect after a later one.
    #[must_use]
    pub fn others_in_flight(&self) -> bool {
        self.others_in_flight
    }

    /// Where the call's new answer goes (then settle returns [`Settled::Wait`]).
    #[must_use]
    pub fn answer(self) -> Answer<R> {
        Answer {
            handle: self.handle.clone(),
            slot: self.slot,
            done: false,
        }
    }
}

/// What a command sees of its connection besides its state.
#[derive(Debug)]
pub struct Context {
    pusher: Pusher,
}

impl Context {
    /// A way to push values to this connection from any thread (a subscription's
    /// messages, say).
    #[must_use]
    pub fn pusher(&self) -> Pusher {
        self.pusher.clone()
    }
}

/// Pushes values to one connection from any thread, at most [`PUSH_QUEUE_MAX`] values and
/// [`PUSH_QUEUE_BYTES_MAX`] bytes waiting to be written.
#[derive(Clone)]
pub struct Pusher {
    send: Arc<dyn Fn(PushItem) + Send + Sync>,
    open: Arc<dyn Fn() -> bool + Send + Sync>,
    queue: Arc<PushQueue>,
}

enum PushItem {
    Value(Value),
    Overflow,
    Close(Value),
}

impl fmt::Debug for Pusher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pusher")
            .field("queued", &*self.queue.queued.lock())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct PushQueue {
    /// Values pushed and not yet taken into the connection's output.
    queued: parking_lot::Mutex<Queued>,
    overflowed: AtomicBool,
}

/// What waits in a connection's push queue: values pushed and not yet taken into its
/// output, and their bytes as encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Queued {
    /// Values waiting.
    pub values: usize,
    /// Their bytes, as encoded ([`Value::encoded_len`]).
    pub bytes: usize,
}

impl Queued {
    /// Whether a value of `bytes` (encoded) may join these without overflowing the queue:
    /// fewer than [`PUSH_QUEUE_MAX`] values wait, and its bytes fit under
    /// [`PUSH_QUEUE_BYTES_MAX`] with theirs (or nothing waits).
    #[must_use]
    pub fn fits(self, bytes: usize) -> bool {
        self.values < PUSH_QUEUE_MAX
            && (self.values == 0 || self.bytes.saturating_add(bytes) <= PUSH_QUEUE_BYTES_MAX)
    }
}

/// Why a value could not be pushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushError {
    /// The connection is closed.
    Closed,
    /// [`PUSH_QUEUE_MAX`] values wait already, or the value's bytes would take those waiting
    /// past [`PUSH_QUEUE_BYTES_MAX`]: the connection is sent an error and closed.
    Overflow,
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PushError::Closed => "the connection is closed",
            PushError::Overflow => "the connection's push queue is full; it is being closed",
        })
    }
}

impl std::error::Error for PushError {}

impl Pusher {
    /// Queues `value` to be written to the connection (between two replies).
    ///
    /// # Errors
    ///
    /// [`PushError::Closed`] once the connection has closed; [`PushError::Overflow`] if
    /// the value does not fit in the queue ([`Queued::fits`]: [`PUSH_QUEUE_MAX`] values, or
    /// [`PUSH_QUEUE_BYTES_MAX`] bytes, wait already), and the connection is then closed with
    /// an error: a client that does not keep up loses its subscription, never the node its
    /// memory.
    pub fn push(&self, value: Value) -> Result<(), PushError> {
        if !(self.open)() || self.queue.overflowed.load(Ordering::Acquire) {
            return Err(PushError::Closed);
        }
        let bytes = value.encoded_len();
        let taken = {
            let mut queued = self.queue.queued.lock();
            let fits = queued.fits(bytes);
            if fits {
                queued.values += 1;
                queued.bytes += bytes;
            }
            fits
        };
        if !taken {
            if !self.queue.overflowed.swap(true, Ordering::AcqRel) {
                (self.send)(PushItem::Overflow);
            }
            return Err(PushError::Overflow);
        }
        (self.send)(PushItem::Value(value));
        Ok(())
    }

    /// Whether the connection is still open.
    #[must_use]
    pub fn is_open(&self) -> bool {
        (self.open)() && !self.queue.overflowed.load(Ordering::Acquire)
    }

    /// Values pushed and not yet taken into the connection's output, and their bytes: a
    /// pusher that pushes only what [`Queued::fits`] never has its connection closed for
    /// overflow (the queue only shrinks meanwhile, unless another thread pushes too).
    #[must_use]
    pub fn queued(&self) -> Queued {
        *self.queue.queued.lock()
    }

    /// Pushes `value` as the connection's last (after what was pushed before it) and
    /// closes it: a subscriber that cannot be served any longer is told why.
    pub fn close_with(&self, value: Value) {
        if self.is_open() && !self.queue.overflowed.swap(true, Ordering::AcqRel) {
            (self.send)(PushItem::Close(value));
        }
    }
}

/// RESP served with a system's command table: the [`ServeClient`] of every RESP system.
#[derive(Debug)]
pub struct Resp<C> {
    commands: C,
    limits: Limits,
}

impl<C: Commands> Resp<C> {
    /// RESP with `commands`, under the codec's default [`Limits`].
    pub fn new(commands: C) -> Resp<C> {
        Resp {
            commands,
            limits: Limits::default(),
        }
    }

    /// The command table.
    pub fn commands(&self) -> &C {
        &self.commands
    }
}

/// One place in a connection's line of replies.
enum Slot<P> {
    /// A call in flight (`pending` is out while its settle runs).
    Waiting {
        pending: Option<P>,
        deadline: Option<Instant>,
    },
    /// Its reply, to be written once every reply before it is.
    Ready(Reply),
    /// A reply held back until `until` (a failed authentication's).
    Delayed {
        reply: Option<Reply>,
        until: Instant,
    },
}

/// A RESP connection's state.
pub struct RespConn<C: Commands> {
    state: C::Conn,
    parser: CommandParser,
    handle: ConnHandle<Delivery<C::Response>>,
    context: Context,
    push_queue: Arc<PushQueue>,
    /// The line of replies, oldest first; the first is number `first_slot`.
    slots: VecDeque<Slot<C::Pending>>,
    first_slot: u64,
    /// Calls in flight, and their order.
    in_flight: usize,
    order: Option<Order>,
    /// A call run but not yet handed to the node: it waits for those in flight.
    held: Option<(C::Request, C::Pending, Order)>,
    /// Values pushed, waiting for room in the output, each with the number of the first
    /// slot that was not yet in the line when it arrived: it is written once every reply
    /// before that slot is.
    pushed: VecDeque<(u64, Value)>,
    /// A value pushed as the last: once the pushes before it are written, it is, and the
    /// connection closes.
    last_push: Option<(u64, Value)>,
    /// A reply closes the connection: nothing more is parsed.
    closing: bool,
    /// Who the connection authenticated as, when the node has users.
    user: Option<(String, Rights)>,
    /// Failed authentications on this connection.
    auth_failures: u32,
}

impl<C: Commands> fmt::Debug for RespConn<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RespConn")
            .field("slots", &self.slots.len())
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl<C: Commands> ServeClient for Resp<C> {
    type Conn = RespConn<C>;
    type Delivery = Delivery<C::Response>;
    type Batch = Vec<(C::Request, Answer<C::Response>)>;

    fn open(&self, handle: ConnHandle<Self::Delivery>) -> RespConn<C> {
        let push_queue = Arc::new(PushQueue::default());
        let pusher = {
            let send_handle = handle.clone();
            let open_handle = handle.clone();
            Pusher {
                send: Arc::new(move |item| {
                    send_handle.deliver(match item {
                        PushItem::Value(v) => Delivery::Push(v),
                        PushItem::Overflow => Delivery::Overflow,
                        PushItem::Close(v) => Delivery::Close(v),
                    });
                }),
                open: Arc::new(move || open_handle.is_open()),
                queue: Arc::clone(&push_queue),
            }
        };
        RespConn {
            state: C::Conn::default(),
            parser: CommandParser::default(),
            handle,
            context: Context { pusher },
            push_queue,
            slots: VecDeque::new(),
            first_slot: 0,
            in_flight: 0,
            order: None,
            held: None,
            pushed: VecDeque::new(),
            last_push: None,
            closing: false,
            user: None,
            auth_failures: 0,
        }
    }

    fn progress(&self, conn: &mut RespConn<C>, io: &mut ConnIo<'_>, batch: &mut Self::Batch) {
        let mut used = 0;
        loop {
            conn.write_ready(io);
            if conn.closing || io.close {
                break;
            }
            if let Some((request, pending, order)) = conn.held.take() {
                if !conn.may_start(order, io) {
                    conn.held = Some((request, pending, order));
                    break;
                }
                conn.start(&self.commands, request, pending, order, batch);
            }
            if conn.in_flight >= io.limits.in_flight_max
                || io.output_full()
                || (conn.order == Some(Order::Alone) && conn.in_flight > 0)
            {
                break;
            }
            let args = match conn.parser.parse(&io.input[used..], &self.limits) {
                Ok(Some((args, n))) => {
                    used += n;
                    args
                }
                Ok(None) => break,
                Err(e) => {
                    conn.push_reply(Reply::close(Value::Error(format!("ERR {e}"))));
                    continue;
                }
            };
            if args.is_empty() {
                continue;
            }
            let Some(args) = self.gate(conn, args, io) else {
                continue;
            };
            match self.commands.run(&mut conn.state, &args, &conn.context) {
                Step::Reply(reply) => conn.push_reply(reply),
                Step::Call {
                    request,
                    pending,
                    order,
                } => {
                    if conn.may_start(order, io) {
                        conn.start(&self.commands, request, pending, order, batch);
                    } else {
                        conn.held = Some((request, pending, order));
                    }
                }
                Step::Blocking(work) => {
                    let slot = conn.first_slot + conn.slots.len() as u64;
                    conn.slots.push_back(Slot::Waiting {
                        pending: None,
                        deadline: None,
                    });
                    conn.in_flight += 1;
                    conn.order = Some(Order::Alone);
                    let handle = conn.handle.clone();
                    let spawned = std::thread::Builder::new()
                        .name(CLIENT_THREAD.into())
                        .spawn(move || {
                            // A panic here fails this command and closes its connection only.
                            let reply =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                                    .unwrap_or_else(|_| {
                                        Reply::close(Value::Error("ERR the command failed".into()))
                                    });
                            handle.deliver(Delivery::Reply { slot, reply });
                        });
                    if spawned.is_err() {
                        conn.fill(
                            slot,
                            Reply::open(Value::Error(
                                "TRYAGAIN the node cannot start a thread for this command".into(),
                            )),
                        );
                    }
                }
            }
        }
        io.input.drain(..used);
        conn.write_pushed(io);
        conn.report(io);
    }

    fn deliver(
        &self,
        conn: &mut RespConn<C>,
        delivery: Self::Delivery,
        io: &mut ConnIo<'_>,
        _batch: &mut Self::Batch,
    ) {
        match delivery {
            Delivery::Answer { slot, outcome } => conn.settle(&self.commands, slot, outcome),
            Delivery::Reply { slot, reply } => conn.fill(slot, reply),
            Delivery::Push(value) => {
                let boundary = conn.next_slot();
                conn.pushed.push_back((boundary, value));
            }
            Delivery::Close(value) => {
                conn.last_push = Some((conn.next_slot(), value));
            }
            Delivery::Overflow => {
                // The client is not keeping up: it is told, and closed.
                conn.closing = true;
                conn.write_ready(io);
                Value::Error(PUSH_OVERFLOW.into()).encode(io.output);
                io.close = true;
            }
        }
        conn.write_ready(io);
        conn.write_pushed(io);
        conn.report(io);
    }

    fn expire(&self, conn: &mut RespConn<C>, io: &mut ConnIo<'_>, _batch: &mut Self::Batch) {
        let now = Instant::now();
        let released: Vec<u64> = conn
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, Slot::Delayed { until, .. } if *until <= now))
            .map(|(i, _)| conn.first_slot + i as u64)
            .collect();
        for slot in released {
            if let Some(Slot::Delayed { reply, .. }) = conn.slot_mut(slot)
                && let Some(reply) = reply.take()
            {
                conn.fill(slot, reply);
            }
        }
        let due: Vec<u64> = conn
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                matches!(s, Slot::Waiting { deadline: Some(d), pending: Some(_) } if *d <= now)
            })
            .map(|(i, _)| conn.first_slot + i as u64)
            .collect();
        for slot in due {
            if let Some(Slot::Waiting { deadline, .. }) = conn.slot_mut(slot) {
                *deadline = None;
            }
            conn.settle(&self.commands, slot, Outcome::TimedOut);
        }
        conn.write_ready(io);
        conn.report(io);
    }

    fn submit(&self, batch: &mut Self::Batch) {
        if !batch.is_empty() {
            self.commands.submit(batch);
            batch.clear();
        }
    }

    fn node_name(&self) -> String {
        self.commands.node_name()
    }

    fn refusal(&self) -> &'static [u8] {
        TOO_MANY_CLIENTS
    }

    fn tls_required(&self) -> &'static [u8] {
        TLS_REQUIRED
    }
}

impl<C: Commands> Resp<C> {
    /// Checks `args` against the connection's authentication: the command to run, or
    /// `None` if it was answered here (`AUTH`, a refusal).
    fn gate(
        &self,
        conn: &mut RespConn<C>,
        mut args: Vec<Vec<u8>>,
        io: &mut ConnIo<'_>,
    ) -> Option<Vec<Vec<u8>>> {
        let name = args[0].to_ascii_uppercase();
        if name == b"AUTH" {
            let (user, password) = match &args[1..] {
                [password] => (None, password),
                [user, password] => (Some(user.as_slice()), password),
                _ => {
                    conn.push_reply(error("ERR wrong number of arguments for 'auth' command"));
                    return None;
                }
            };
            if self.authenticate(conn, user, password, io) {
                conn.push_reply(Reply::open(Value::Simple("OK".into())));
            }
            return None;
        }
        if name == b"HELLO" {
            // `HELLO protover [AUTH user pass] [SETNAME name]`: the credentials are taken out
            // here, and the rest is the table's.
            let at = args
                .iter()
                .skip(2)
                .position(|a| a.eq_ignore_ascii_case(b"AUTH"))
                .map(|i| i + 2);
            if let Some(at) = at {
                let (Some(user), Some(password)) = (args.get(at + 1), args.get(at + 2)) else {
                    conn.push_reply(error("ERR syntax error in HELLO option"));
                    return None;
                };
                let (user, password) = (user.clone(), password.clone());
                if !self.authenticate(conn, Some(&user), &password, io) {
                    return None;
                }
                args.drain(at..at + 3);
            }
        }
        if io.auth.is_none() {
            return Some(args);
        }
        if !io.authenticated {
            return match name.as_slice() {
                b"PING" | b"QUIT" => Some(args),
                b"HELLO" => {
                    conn.push_reply(error(NOAUTH_HELLO));
                    None
                }
                _ => {
                    conn.push_reply(error(NOAUTH));
                    None
                }
            };
        }
        if let Some((user, Rights::ReadOnly)) = &conn.user
            && self.commands.writes(&args)
        {
            conn.push_reply(error(&format!(
                "NOPERM User {user} has no permissions to run the '{}' command",
                String::from_utf8_lossy(&args[0]).to_ascii_lowercase()
            )));
            return None;
        }
        Some(args)
    }

    /// Checks `user` (the default user if `None`) and `password`: whether they hold. A
    /// refusal is answered here: at once on a node without users, held back on one with.
    fn authenticate(
        &self,
        conn: &mut RespConn<C>,
        user: Option<&[u8]>,
        password: &[u8],
        io: &mut ConnIo<'_>,
    ) -> bool {
        let Some(auth) = io.auth else {
            conn.push_reply(error(AUTH_NOT_CONFIGURED));
            return false;
        };
        if let Some(found) = auth.authenticate(user, password) {
            conn.user = Some(found);
            io.authenticated = true;
            return true;
        }
        conn.auth_failures += 1;
        let failures = conn.auth_failures;
        let last = failures >= AUTH_FAILURES_MAX;
        crate::runtime::refusals::REFUSALS.log(&format!(
            "{}: client {}: wrong password for user '{}' (failed attempt {failures} of {AUTH_FAILURES_MAX} on this connection{})",
            self.commands.node_name(),
            conn.handle
                .peer_addr()
                .map_or_else(|| "?".to_string(), |a| a.to_string()),
            loggable(user.unwrap_or(crate::runtime::auth::DEFAULT_USER.as_bytes())),
            if last { "; closing it" } else { "" }
        ));
        let delay_ms = AUTH_FAILURE_DELAY_MS
            .saturating_mul(1 << (failures - 1).min(16))
            .min(AUTH_FAILURE_DELAY_MS_MAX);
        let value = Value::Error(WRONGPASS.into());
        let reply = if last {
            Reply::close(value)
        } else {
            Reply::open(value)
        };
        conn.hold(reply, Instant::now() + Duration::from_millis(delay_ms));
        false
    }
}

/// An error reply that leaves the connection open.
fn error(text: &str) -> Reply {
    Reply::open(Value::Error(text.into()))
}

impl<C: Commands> RespConn<C> {
    /// Adds `reply` to the line, written no sooner than `until`; nothing after it is run
    /// until then.
    fn hold(&mut self, reply: Reply, until: Instant) {
        self.slots.push_back(Slot::Delayed {
            reply: Some(reply),
            until,
        });
        self.in_flight += 1;
        self.order = Some(Order::Alone);
    }

    /// Whether a call in `order` may be handed to the node now.
    fn may_start(&self, order: Order, io: &ConnIo<'_>) -> bool {
        if self.in_flight == 0 {
            return true;
        }
        match (order, self.order) {
            (
                Order::Group {
                    group,
                    in_flight_max,
                },
                Some(Order::Group { group: now, .. }),
            ) => {
                group == now
                    && self.in_flight < in_flight_max
                    && self.in_flight < io.limits.in_flight_max
            }
            _ => false,
        }
    }

    fn slot_mut(&mut self, slot: u64) -> Option<&mut Slot<C::Pending>> {
        let index = usize::try_from(slot.checked_sub(self.first_slot)?).ok()?;
        self.slots.get_mut(index)
    }

    /// Hands a call to the node (through the loop's batch).
    fn start(
        &mut self,
        commands: &C,
        request: C::Request,
        pending: C::Pending,
        order: Order,
        batch: &mut Vec<(C::Request, Answer<C::Response>)>,
    ) {
        let slot = self.first_slot + self.slots.len() as u64;
        self.slots.push_back(Slot::Waiting {
            pending: Some(pending),
            deadline: Instant::now().checked_add(commands.request_timeout()),
        });
        self.in_flight += 1;
        self.order = Some(order);
        batch.push((
            request,
            Answer {
                handle: self.handle.clone(),
                slot,
                done: false,
            },
        ));
    }

    /// Adds a reply to the line, after the replies before it.
    fn push_reply(&mut self, reply: Reply) {
        if reply.close {
            self.closing = true;
        }
        self.slots.push_back(Slot::Ready(reply));
    }

    /// Settles the call in `slot` with `outcome`.
    fn settle(&mut self, commands: &C, slot: u64, outcome: Outcome<C::Response>) {
        let handle = self.handle.clone();
        let Some(Slot::Waiting { pending, .. }) = self.slot_mut(slot) else {
            // Settled already (it timed out, say): a late answer is dropped.
            return;
        };
        let Some(taken) = pending.take() else {
            return;
        };
        let resend = Resend {
            handle: &handle,
            slot,
            // A later call answered already was handed on too: it counts.
            others_in_flight: self.in_flight > 1 || slot + 1 < self.next_slot(),
        };
        match commands.settle(&mut self.state, taken, outcome, resend) {
            Settled::Reply(reply) => self.fill(slot, reply),
            Settled::Wait(again) => {
                if let Some(Slot::Waiting { pending, .. }) = self.slot_mut(slot) {
                    *pending = Some(again);
                }
            }
        }
    }

    /// Fills the call in `slot` with its reply.
    fn fill(&mut self, slot: u64, reply: Reply) {
        let Some(place) = self.slot_mut(slot) else {
            return;
        };
        if !matches!(place, Slot::Waiting { .. } | Slot::Delayed { .. }) {
            return;
        }
        let close = reply.close;
        *place = Slot::Ready(reply);
        if close {
            self.closing = true;
        }
        self.in_flight -= 1;
        if self.in_flight == 0 {
            self.order = None;
        }
    }

    /// The number the next slot in the line will take.
    fn next_slot(&self) -> u64 {
        self.first_slot + self.slots.len() as u64
    }

    /// Writes the replies at the front of the line that are ready, each after the pushed
    /// values that arrived before its command was read.
    fn write_ready(&mut self, io: &mut ConnIo<'_>) {
        loop {
            self.write_pushed(io);
            if io.close {
                return;
            }
            let Some(Slot::Ready(_)) = self.slots.front() else {
                return;
            };
            let Some(Slot::Ready(reply)) = self.slots.pop_front() else {
                return;
            };
            self.first_slot += 1;
            reply.value.encode(io.output);
            for value in reply.then {
                value.encode(io.output);
            }
            if reply.close {
                io.close = true;
                self.closing = true;
                self.slots.clear();
                return;
            }
        }
    }

    /// Writes, while there is room, the pushed values whose turn has come (every reply
    /// before them written), then a last push once everything before it is out.
    fn write_pushed(&mut self, io: &mut ConnIo<'_>) {
        while !io.close && !io.output_full() {
            match self.pushed.front() {
                Some((boundary, _)) if *boundary <= self.first_slot => {}
                _ => break,
            }
            let Some((_, value)) = self.pushed.pop_front() else {
                break;
            };
            let before = io.output.len();
            value.encode(io.output);
            let mut queued = self.push_queue.queued.lock();
            queued.values = queued.values.saturating_sub(1);
            queued.bytes = queued.bytes.saturating_sub(io.output.len() - before);
        }
        if !io.close
            && self.pushed.is_empty()
            && self
                .last_push
                .as_ref()
                .is_some_and(|(boundary, _)| *boundary <= self.first_slot)
            && let Some((_, value)) = self.last_push.take()
        {
            value.encode(io.output);
            io.close = true;
            self.closing = true;
        }
    }

    /// Tells the loop whether work is in progress and when the next call times out.
    fn report(&self, io: &mut ConnIo<'_>) {
        io.busy = !self.slots.is_empty() || self.held.is_some();
        io.deadline = self
            .slots
            .iter()
            .filter_map(|s| match s {
                Slot::Waiting {
                    deadline: Some(d),
                    pending: Some(_),
                } => Some(*d),
                Slot::Delayed {
                    until,
                    reply: Some(_),
                } => Some(*until),
                _ => None,
            })
            .min();
    }
}

/// The longest part of a client's user name a log line shows.
const LOGGED_NAME_MAX: usize = 64;

/// A name a client sent, as a log line may show it: bytes outside printable ASCII escaped
/// (a name holding a line feed cannot forge a line of the log) and cut at
/// [`LOGGED_NAME_MAX`] bytes.
fn loggable(name: &[u8]) -> String {
    let shown = &name[..name.len().min(LOGGED_NAME_MAX)];
    let mut out = shown.escape_ascii().to_string();
    if shown.len() < name.len() {
        out.push_str(&format!("... ({} bytes)", name.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Mutex;

    use super::*;
    use crate::runtime::auth::ClientAuth;
    use crate::runtime::clients::detached_handle;
    use crate::runtime::{ClientLimits, Connections, spawn_listener};

    /// A toy node: `GET x` and `SET x` are calls answered with `X` (reads and writes in
    /// two groups), `HOLD x` a call it never answers by itself, `SUB` hands the test a
    /// pusher. Each batch is answered at once, in reverse order.
    struct Toy {
        batches: Mutex<Vec<Vec<String>>>,
        held: Mutex<Vec<Answer<String>>>,
        pushers: Mutex<Vec<Pusher>>,
        /// What each settle was told of the connection's other calls, in settle order.
        others: Mutex<Vec<bool>>,
        timeout: Duration,
    }

    impl Commands for Toy {
        type Conn = ();
        type Pending = ();
        type Request = String;
        type Response = String;

        fn run(&self, (): &mut (), args: &[Vec<u8>], ctx: &Context) -> Step<Self> {
            let word = |i: usize| String::from_utf8_lossy(&args[i]).into_owned();
            let call = |group| Step::Call {
                request: word(1),
                pending: (),
                order: Order::Group {
                    group,
                    in_flight_max: 100,
                },
            };
            match word(0).as_str() {
                "GET" => call(0),
                "SET" => call(1),
                "HOLD" => Step::Call {
                    request: format!("hold {}", word(1)),
                    pending: (),
                    order: Order::Alone,
                },
                "SUB" => {
                    self.pushers.lock().expect("lock").push(ctx.pusher());
                    Step::Reply(Reply::open(Value::Simple("OK".into())))
                }
                // A last reply of N bytes, after which the connection is closed.
                "BYE" => Step::Reply(Reply::close(Value::Bulk(vec![
                    b'v';
                    word(1).parse().unwrap_or(0)
                ]))),
                _ => Step::Reply(Reply::open(Value::Error("ERR unknown".into()))),
            }
        }

        fn submit(&self, calls: &mut Vec<(String, Answer<String>)>) {
            let names = calls.iter().map(|(r, _)| r.clone()).collect();
            self.batches.lock().expect("lock").push(names);
            for (request, answer) in calls.drain(..).rev() {
                if request.starts_with("hold") {
                    self.held.lock().expect("lock").push(answer);
                } else {
                    answer.complete(request.to_uppercase());
                }
            }
        }

        fn settle(
            &self,
            (): &mut (),
            (): (),
            outcome: Outcome<String>,
            resend: Resend<'_, String>,
        ) -> Settled<()> {
            self.others
                .lock()
                .expect("lock")
                .push(resend.others_in_flight());
            Settled::Reply(Reply::open(match outcome {
                Outcome::Done(r) => Value::Bulk(r.into_bytes()),
                other => Value::Error(format!("ERR {other:?}")),
            }))
        }

        fn request_timeout(&self) -> Duration {
            self.timeout
        }

        fn node_name(&self) -> String {
            "toy".into()
        }

        fn writes(&self, args: &[Vec<u8>]) -> bool {
            args[0].eq_ignore_ascii_case(b"SET")
        }
    }

    fn serve(timeout: Duration) -> (TcpStream, Arc<Resp<Toy>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let resp = Arc::new(Resp::new(Toy {
            batches: Mutex::default(),
            held: Mutex::default(),
            pushers: Mutex::default(),
            others: Mutex::default(),
            timeout,
        }));
        let limits = ClientLimits::with_connections(4, None);
        spawn_listener(
            listener,
            Arc::new(Connections::new(limits)),
            Arc::clone(&resp),
        )
        .expect("the loop starts");
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        (stream, resp)
    }

    /// The next reply, or `None` once the connection has closed.
    fn reply(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Value> {
        let mut chunk = [0u8; 1 << 16];
        loop {
            if let Ok(Some((value, used))) = Value::parse(buf, &Limits::default()) {
                buf.drain(..used);
                return Some(value);
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn bulk(s: &str) -> Option<Value> {
        Some(Value::Bulk(s.as_bytes().to_vec()))
    }

    fn toy() -> Resp<Toy> {
        Resp::new(Toy {
            batches: Mutex::default(),
            held: Mutex::default(),
            pushers: Mutex::default(),
            others: Mutex::default(),
            timeout: Duration::from_secs(30),
        })
    }

    /// What the loop keeps of one connection between calls: bytes not used yet, whether it
    /// authenticated, its timer.
    #[derive(Default)]
    struct Kept {
        input: Vec<u8>,
        authenticated: bool,
        deadline: Option<Instant>,
    }

    /// Runs `bytes` through a connection by hand, as the loop would after a read (calling
    /// the timer first if it is due): what it wrote, and the requests it handed on.
    fn feed(
        resp: &Resp<Toy>,
        conn: &mut RespConn<Toy>,
        kept: &mut Kept,
        auth: &ClientAuth,
        bytes: &[u8],
    ) -> (String, Vec<String>) {
        let limits = ClientLimits::with_connections(4, None);
        kept.input.extend_from_slice(bytes);
        let (mut output, mut batch) = (Vec::new(), Vec::new());
        let mut io = ConnIo {
            input: &mut kept.input,
            output: &mut output,
            limits: &limits,
            close: false,
            busy: false,
            deadline: kept.deadline,
            auth: Some(auth),
            authenticated: kept.authenticated,
        };
        if io.deadline.is_some_and(|d| d <= Instant::now()) {
            resp.expire(conn, &mut io, &mut batch);
        }
        resp.progress(conn, &mut io, &mut batch);
        kept.authenticated = io.authenticated;
        kept.deadline = io.deadline;
        let requests = batch
            .drain(..)
            .map(|(request, answer)| {
                answer.discard();
                request
            })
            .collect();
        (String::from_utf8_lossy(&output).into_owned(), requests)
    }

    /// From the outside review (review8): a call settled after a later call of its
    /// connection was answered is told another call is beside it: that later call was
    /// handed to the node and may have taken effect, so this one, sent on again, could
    /// take effect after it. The toy answers a batch in reverse order, so the second SET
    /// is answered (and settled) before the first.
    #[test]
    fn a_call_answered_after_a_later_one_of_its_connection_sees_it_beside() {
        let (mut stream, resp) = serve(Duration::from_secs(30));
        stream.write_all(b"SET a\r\nSET b\r\n").expect("write");
        let mut buf = Vec::new();
        assert_eq!(reply(&mut stream, &mut buf), bulk("A"));
        assert_eq!(reply(&mut stream, &mut buf), bulk("B"));
        let batches = resp.commands.batches.lock().expect("lock").clone();
        assert_eq!(batches, vec![vec!["a".to_string(), "b".to_string()]]);
        // Settled b first (a in flight), then a (b handed on before it, answered already).
        assert_eq!(
            *resp.commands.others.lock().expect("lock"),
            vec![true, true]
        );
    }

    #[test]
    fn a_user_name_in_a_log_line_is_escaped_and_cut() {
        assert_eq!(loggable(b"bob"), "bob");
        // A line feed cannot start a forged line; nor can other control bytes or quotes.
        assert_eq!(
            loggable(b"x\nsynod node 1: accepted"),
            "x\\nsynod node 1: accepted"
        );
        assert_eq!(loggable(b"a'\x1b[2J"), "a\\'\\x1b[2J");
        let long = loggable(&[b'a'; 1_000]);
        assert_eq!(
            long,
            format!("{}... (1000 bytes)", "a".repeat(LOGGED_NAME_MAX))
        );
    }

    #[test]
    fn a_failed_auth_is_answered_only_when_its_timer_is_due_and_holds_back_what_follows() {
        let resp = toy();
        let auth = ClientAuth::new(Some(b"secret"), None).expect("users");
        let mut conn = resp.open(detached_handle());
        let mut kept = Kept::default();
        let (out, calls) = feed(
            &resp,
            &mut conn,
            &mut kept,
            &auth,
            b"AUTH wrong\r\nAUTH secret\r\nGET a\r\n",
        );
        // Nothing is written, and nothing after the failed AUTH runs: the reply waits for
        // the loop's timer.
        assert_eq!((out.as_str(), calls.len()), ("", 0));
        assert!(!kept.authenticated);
        let due = kept.deadline.expect("a timer is set for the reply");
        // The loop calls back once the timer is due (here: the test waits for it).
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let (out, calls) = feed(&resp, &mut conn, &mut kept, &auth, b"");
        assert_eq!(out, format!("-{WRONGPASS}\r\n+OK\r\n"));
        assert_eq!(calls, ["a"]);
        assert!(kept.authenticated, "authenticated by the second AUTH");
    }

    #[test]
    fn before_authenticating_only_auth_ping_and_quit_run_and_a_reader_cannot_write() {
        let resp = toy();
        let hash = crate::runtime::auth::PasswordHash::new("s", b"ro").expect("a salt");
        let auth = ClientAuth::new(Some(b"secret"), Some(&format!("bob read-only {hash}")))
            .expect("users");
        let mut conn = resp.open(detached_handle());
        let mut kept = Kept::default();
        let (out, calls) = feed(
            &resp,
            &mut conn,
            &mut kept,
            &auth,
            b"GET a\r\nSET b\r\nHELLO 3\r\nPING\r\n",
        );
        let refused = format!("-{NOAUTH}\r\n-{NOAUTH}\r\n-{NOAUTH_HELLO}\r\n");
        // The toy table answers PING as a command it does not know: it reached the table.
        assert_eq!(out, format!("{refused}-ERR unknown\r\n"));
        assert!(calls.is_empty());
        let (out, calls) = feed(
            &resp,
            &mut conn,
            &mut kept,
            &auth,
            b"AUTH bob ro\r\nSET b\r\nGET a\r\n",
        );
        assert_eq!(
            out,
            "+OK\r\n-NOPERM User bob has no permissions to run the 'set' command\r\n"
        );
        assert_eq!(calls, ["a"]);
        // HELLO's AUTH is taken out before the table sees the rest.
        let mut conn = resp.open(detached_handle());
        let mut kept = Kept::default();
        let (out, _) = feed(
            &resp,
            &mut conn,
            &mut kept,
            &auth,
            b"HELLO 3 AUTH default secret\r\n",
        );
        assert_eq!(out, "-ERR unknown\r\n");
        assert!(kept.authenticated);
    }

    #[test]
    fn pipelined_calls_of_one_group_go_to_the_node_together_and_are_answered_in_order() {
        let (mut stream, resp) = serve(Duration::from_secs(30));
        stream
            .write_all(b"GET a\r\nGET b\r\nGET c\r\nSET d\r\nGET e\r\n")
            .expect("write");
        let mut buf = Vec::new();
        for expected in ["A", "B", "C", "D", "E"] {
            assert_eq!(reply(&mut stream, &mut buf), bulk(expected));
        }
        // The node answered each batch in reverse: the replies are in order all the same.
        // The write waited for the reads before it, and the read after it for the write.
        let batches = resp.commands().batches.lock().expect("lock").clone();
        assert_eq!(batches, [vec!["a", "b", "c"], vec!["d"], vec!["e"]]);
    }

    #[test]
    fn a_call_not_answered_in_time_is_settled_as_timed_out_and_its_late_answer_dropped() {
        let (mut stream, resp) = serve(Duration::from_millis(50));
        let mut buf = Vec::new();
        stream.write_all(b"HOLD x\r\n").expect("write");
        assert_eq!(
            reply(&mut stream, &mut buf),
            Some(Value::Error("ERR TimedOut".into()))
        );
        // The node answers late: the answer is dropped, the connection goes on.
        for answer in resp.commands().held.lock().expect("lock").drain(..) {
            answer.complete("late".into());
        }
        stream.write_all(b"GET y\r\n").expect("write");
        assert_eq!(reply(&mut stream, &mut buf), bulk("Y"));
    }

    #[test]
    fn pushed_values_reach_the_connection_and_a_full_push_queue_closes_it_with_an_error() {
        let (mut stream, resp) = serve(Duration::from_secs(30));
        let mut buf = Vec::new();
        stream.write_all(b"SUB\r\n").expect("write");
        assert_eq!(
            reply(&mut stream, &mut buf),
            Some(Value::Simple("OK".into()))
        );
        let pusher = resp.commands().pushers.lock().expect("lock")[0].clone();
        pusher.push(Value::Bulk(b"m1".to_vec())).expect("pushed");
        pusher.push(Value::Bulk(b"m2".to_vec())).expect("pushed");
        assert_eq!(reply(&mut stream, &mut buf), bulk("m1"));
        assert_eq!(reply(&mut stream, &mut buf), bulk("m2"));
        // The client stops reading: its buffers fill, then the push queue.
        let value = Value::Bulk(vec![b'v'; 16 << 10]);
        let mut pushed = 0;
        let overflow = loop {
            match pusher.push(value.clone()) {
                Ok(()) => pushed += 1,
                Err(e) => break e,
            }
            assert!(pushed < 100_000, "the push queue never filled");
        };
        assert_eq!(overflow, PushError::Overflow);
        // The client gets what was written before, then the error, then the end.
        let mut last = None;
        while let Some(value) = reply(&mut stream, &mut buf) {
            last = Some(value);
        }
        assert_eq!(last, Some(Value::Error(PUSH_OVERFLOW.into())));
        assert_eq!(pusher.push(Value::Nil), Err(PushError::Closed));
        assert!(!pusher.is_open());
    }

    #[test]
    fn a_connection_that_does_not_read_holds_at_most_the_push_queues_bytes() {
        // Nothing is ever taken from this connection's queue (its loop does not run).
        let resp = toy();
        let conn = resp.open(detached_handle());
        let pusher = conn.context.pusher();
        let value = Value::Bulk(vec![b'v'; 64 << 10]);
        let mut taken = 0;
        let overflow = loop {
            match pusher.push(value.clone()) {
                Ok(()) => taken += 1,
                Err(e) => break e,
            }
            assert!(taken <= PUSH_QUEUE_MAX, "the push queue never filled");
        };
        assert_eq!(overflow, PushError::Overflow);
        assert_eq!(taken, PUSH_QUEUE_BYTES_MAX / value.encoded_len());
        assert!(pusher.queued().bytes <= PUSH_QUEUE_BYTES_MAX);
        assert_eq!(pusher.push(Value::Nil), Err(PushError::Closed));
        assert!(!pusher.is_open());
        // A value larger than the whole limit is taken when nothing waits, and then
        // nothing more is.
        let conn = resp.open(detached_handle());
        let pusher = conn.context.pusher();
        let huge = Value::Bulk(vec![b'v'; PUSH_QUEUE_BYTES_MAX]);
        assert_eq!(pusher.push(huge), Ok(()));
        assert_eq!(pusher.push(Value::Nil), Err(PushError::Overflow));
    }

    /// Node 1's TLS files, made with rcgen in `dir`: a CA and a certificate for 127.0.0.1 and
    /// `node-1.synod` that it signed.
    fn tls_files(dir: &std::path::Path) -> crate::runtime::tls::TlsFiles {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).expect("CA");
        let key = KeyPair::generate().expect("key");
        let names = vec!["127.0.0.1".to_string(), crate::runtime::tls::node_name(1)];
        let cert = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &ca, &ca_key)
            .expect("certificate");
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("written");
            path
        };
        crate::runtime::tls::TlsFiles {
            ca: write("ca.pem", ca.pem()),
            cert: write("cert.pem", cert.pem()),
            key: write("key.pem", key.serialize_pem()),
            client_auth: false,
        }
    }

    /// A client refused by the node (`words`, then the node's end) that sends a request
    /// before it reads: once the refusal has arrived it sends more, which the node reads
    /// and drops instead of resetting the connection, and reads the refusal whole.
    fn refused_after_sending(stream: TcpStream, request: &[u8], words: &[u8]) {
        let mut stream = stream;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        stream.write_all(request).expect("a request before reading");
        // The refusal has arrived (and the node has, at the latest now, done with the
        // socket what it does with a refused one).
        let mut first = [0u8; 1];
        assert_eq!(stream.peek(&mut first).expect("the refusal arrives"), 1);
        // More requests: a socket closed with bytes unread was reset, and writing to it
        // fails (or its reset reaches the client before the refusal was read).
        let more = request.repeat((16 << 10) / request.len().max(1));
        stream
            .write_all(&more)
            .expect("the node reads what is sent after the refusal");
        let mut said = Vec::new();
        stream
            .read_to_end(&mut said)
            .expect("the refusal, then the end, without a reset");
        assert_eq!(
            String::from_utf8_lossy(&said),
            String::from_utf8_lossy(words)
        );
    }

    #[test]
    fn a_client_refused_past_the_connection_limit_reads_why_though_it_sent_requests_first() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        spawn_listener(
            listener,
            Arc::new(Connections::new(ClientLimits::with_connections(2, None))),
            Arc::new(toy()),
        )
        .expect("the loop starts");
        // Two connections served (a round trip each proves the loop took them).
        let mut served = Vec::new();
        for _ in 0..2 {
            let mut stream = TcpStream::connect(addr).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            stream.write_all(b"GET a\r\n").expect("GET");
            let mut buf = Vec::new();
            assert_eq!(reply(&mut stream, &mut buf), bulk("A"));
            served.push(stream);
        }
        // Each next one is refused, though it sends requests before reading.
        for _ in 0..3 {
            let stream = TcpStream::connect(addr).expect("connect");
            refused_after_sending(stream, b"GET a\r\n", TOO_MANY_CLIENTS);
        }
        // The two are still served.
        for stream in &mut served {
            stream.write_all(b"GET b\r\n").expect("GET");
            let mut buf = Vec::new();
            assert_eq!(reply(stream, &mut buf), bulk("B"));
        }
    }

    #[test]
    fn a_client_speaking_plain_text_to_a_tls_port_reads_why_though_it_sent_requests_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = tls_files(dir.path());
        let peers = [(1, "127.0.0.1:1".to_string())].into_iter().collect();
        let tls = crate::runtime::tls::NodeTls::load(files, 1, &peers).expect("TLS");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        spawn_listener(
            listener,
            Arc::new(
                Connections::new(ClientLimits::with_connections(4, None)).with_tls(tls.clients()),
            ),
            Arc::new(toy()),
        )
        .expect("the loop starts");
        // More than the connection limit, one after the other: a refused one holds no
        // place among the connections.
        for _ in 0..6 {
            let stream = TcpStream::connect(addr).expect("connect");
            refused_after_sending(stream, b"GET a\r\n", TLS_REQUIRED);
        }
    }

    #[test]
    fn a_tls_connection_is_closed_only_once_its_last_reply_has_gone_out() {
        use rustls::pki_types::ServerName;
        use socket2::{Domain, Socket, Type};
        let dir = tempfile::tempdir().expect("tempdir");
        let files = tls_files(dir.path());
        let peers = [(1, "127.0.0.1:1".to_string())].into_iter().collect();
        let tls = crate::runtime::tls::NodeTls::load(files.clone(), 1, &peers).expect("TLS");
        let client = crate::runtime::tls::client_config(&files.ca).expect("client TLS");
        // A listener whose sockets (the accepted ones inherit it) have a small send buffer:
        // the node's last records wait for room there, as they do for any slow client.
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        socket.set_send_buffer_size(4 << 10).expect("SO_SNDBUF");
        let addr: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
        socket.bind(&addr.into()).expect("bind");
        socket.listen(16).expect("listen");
        let listener: TcpListener = socket.into();
        let addr = listener.local_addr().expect("address");
        let resp = Arc::new(toy());
        let limits = ClientLimits::with_connections(4, None);
        spawn_listener(
            listener,
            Arc::new(Connections::new(limits).with_tls(tls.clients())),
            resp,
        )
        .expect("the loop starts");
        // Last replies smaller and larger than what the loop encrypts at a time (rustls
        // holds 64 KiB), the socket of each full before the client reads anything.
        for size in (1..=8).map(|i| i * (16 << 10)) {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
            socket.set_recv_buffer_size(4 << 10).expect("SO_RCVBUF");
            socket.connect(&addr.into()).expect("connect");
            let stream: TcpStream = socket.into();
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            let name = ServerName::try_from("127.0.0.1").expect("name");
            let session =
                rustls::ClientConnection::new(Arc::clone(&client), name).expect("session");
            let mut tls = rustls::StreamOwned::new(session, stream);
            tls.write_all(format!("BYE {size}\r\n").as_bytes())
                .expect("sent");
            tls.flush().expect("sent");
            // The client's pace: it reads only once the node has long filled the sockets.
            std::thread::sleep(Duration::from_millis(300));
            let mut got = Vec::new();
            let mut chunk = [0u8; 16 << 10];
            loop {
                match tls.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                }
            }
            let mut want = Vec::new();
            Value::Bulk(vec![b'v'; size]).encode(&mut want);
            assert_eq!(
                got.len(),
                want.len(),
                "a last reply of {size} bytes: {} bytes arrived",
                got.len()
            );
            assert_eq!(got, want);
        }
    }
}
