//! The process runtime: what every reference system needs to run one node as an
//! operating-system process, whatever its protocol.
//!
//! A system brings a sans-I/O state machine and implements two seams:
//!
//! - [`Machine`]: how the worker steps events into the state machine with the time, hands
//!   out its effects and makes its writes durable. The runtime owns the thread and the
//!   group commit (the *Singular Update Queue*, [`UpdateQueue`]); the system owns what
//!   its effects mean (sending to peers, answering clients) and its store (a Raft log, a
//!   `synod-wal` log of its own, or any store that can sync).
//! - [`ServeClient`]: how the bytes of a client connection are served, without blocking,
//!   on the runtime's event loop ([`crate::resp::Resp`] for systems that speak RESP, with
//!   the system's command table). The runtime owns the listener, the event loop, the
//!   connections and their limits, the idle timeout and the catching of a panic while
//!   serving one connection.
//!
//! and, if it has peers, a [`PeerHandler`] that queues what they send to the worker.
//!
//! A system whose state machine follows the node contract (`synod_node::Protocol`) writes
//! neither seam: [`host::ProtocolHost`] is the [`Machine`] of any protocol, given a
//! [`host::HostStore`] (the state machine recovered from the data directory, each write
//! laid out and synced), and [`host::start`] runs the whole node ([`served`] for one
//! served as RESP: its start, its replies to unanswered calls, `synod kv`'s words). Adding such a system is
//! three things to write (its state machine with its store, its command table, its client
//! adapter) and one entry in [`crate::systems::SYSTEMS`]; the ABD register store,
//! [`crate::register`], is one.
//!
//! What the runtime provides around them:
//!
//! - [`NodeOptions`]: the node's id, addresses, members, data directory, tick and client
//!   limits, checked once; [`StartError`], why a node did not start.
//! - [`data_dir`]: the data directory, claimed with an identity file written durably, so
//!   a node started on another's directory is refused.
//! - [`clients`]: the client event loop ([`spawn_listener`]): one thread serving every
//!   connection, at most [`CLIENT_CONNECTIONS_MAX`] (past it a new connection is refused
//!   with an error), each closed after [`CLIENT_IDLE_TIMEOUT`] waiting on its client, with
//!   bounded buffers and requests in flight per connection; the worker's answers are
//!   delivered back to it ([`ConnHandle`]) and written by it.
//! - [`worker`]: [`UpdateQueue`], the worker thread, which takes every event waiting at
//!   each wake-up and hands out their effects and syncs once for all of them (group
//!   commit, [`SYNC_DEFER_EVENTS_MAX`]; events may be taken up by the thread that has them
//!   while the worker is idle, [`UpdateQueue::run_or_submit_all`]), and the ticker
//!   ([`spawn_ticker`]).
//! - [`deadlines`]: each client connection's one deadline, for the loop.
//! - [`trace`]: timestamps of the steps on a request's path, off unless
//!   `SYNOD_TRACE_STEPS` is set (for measuring where a write's time goes).
//! - [`peers`]: the `TcpTransport` to the other members, fail-fast, bound before the
//!   state machine exists; with `--peer-secret-file`, every peer proves it holds the
//!   cluster's secret at the handshake.
//! - [`auth`]: client users and passwords (`--password-file`, `--users-file`), read-only
//!   or read-write, checked by the RESP side; the cluster's secret ([`auth::PeerSecret`]);
//!   and the open default: a node with neither says so at start and listens open only on
//!   loopback addresses unless given `--insecure-open`.
//! - [`tls`]: TLS on both ports when a node is given certificates: the client port speaks
//!   TLS only, and peers authenticate each other against the cluster's CA.
//! - [`refusals`]: the log of refused peers and wrong passwords, at most
//!   [`refusals::REFUSAL_LINES_PER_INTERVAL_MAX`] lines a second, the rest counted in the
//!   next line written (by the log's own thread once the second is over, if no refusal
//!   comes to carry the count).
//! - [`process`]: fail-stop: named threads ([`spawn_vital`]), a panic hook that ends the
//!   process with [`EXIT_FAIL_STOP`] when any of the node's threads but the client loop
//!   panics ([`stop_on_panic`]; the loop catches a panic serving one connection and closes
//!   that connection).
//! - [`stop`]: the graceful stop ([`Stopping`]): new requests refused, those in flight
//!   finished, the system's hand-over, clients given time to leave, a last sync, exit 0.
//!
//! A system's start function is then a short sequence: bind the transport
//! ([`peers::bind`]) and the client address, [`data_dir::claim`] the directory, open the
//! store and build the state machine, [`UpdateQueue::spawn`] it, set the peer handler,
//! [`spawn_ticker`] and [`spawn_listener`]. The Consistent Core's is
//! [`crate::consistent_core::server::start`].
// tidy: driver: the process runtime.

pub mod auth;
pub mod clients;
pub mod data_dir;
pub mod deadlines;
pub mod host;
mod options;
pub mod peers;
pub mod process;
pub mod refusals;
pub mod served;
pub mod stop;
pub mod tls;
pub mod trace;
pub mod worker;

pub use clients::{
    CLIENT_BUFFER_BYTES_MAX, CLIENT_IN_FLIGHT_MAX, ClientLimits, ConnHandle, ConnIo, Connections,
    ServeClient, spawn_listener,
};
pub use data_dir::IDENTITY_FILE;
pub use options::{
    CLIENT_CONNECTIONS_MAX, CLIENT_IDLE_TIMEOUT, CLUSTER_NAME_BYTES_MAX, NodeOptions, StartError,
    TICK_MS_DEFAULT,
};
pub use peers::{PeerHandler, PeerSlot};
pub use process::{
    CLIENT_THREAD, Counted, EXIT_FAIL_STOP, fail_stop, poll_until, spawn_vital, stop_on_panic,
};
pub use stop::{CallGuard, StopSteps, Stopping};
pub use worker::{Machine, QUEUE_EVENTS_MAX, SYNC_DEFER_EVENTS_MAX, UpdateQueue, spawn_ticker};

use std::net::TcpListener;

/// Connections the kernel completes and queues for the client listener before the node
/// accepts them: past it a client's connection attempt is dropped and retried a second
/// later, so a burst of new clients (a pool dialling at once) needs room (Redis's
/// `tcp-backlog` is 511; the kernel caps it at `net.core.somaxconn`).
pub const CLIENT_LISTEN_BACKLOG: i32 = 1024;

/// Binds the client address (`--client`), with a backlog of [`CLIENT_LISTEN_BACKLOG`].
///
/// # Errors
///
/// [`StartError::Bind`] if it cannot be bound.
pub fn bind_clients(options: &NodeOptions) -> Result<TcpListener, StartError> {
    let failed = |error| StartError::Bind {
        what: "--client",
        addr: options.client_addr().to_string(),
        error,
    };
    let listener = TcpListener::bind(options.client_addr()).map_err(failed)?;
    // Listening again on a listening socket sets its backlog (std's is 128).
    let socket = socket2::Socket::from(listener);
    socket.listen(CLIENT_LISTEN_BACKLOG).map_err(failed)?;
    Ok(socket.into())
}
