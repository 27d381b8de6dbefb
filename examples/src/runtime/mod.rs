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
//! - [`ServeClient`]: how one client connection is served ([`crate::resp::serve()`] for
//!   systems that speak RESP, with the system's command table). The runtime owns the
//!   listener, the connection table and its limits, the idle timeout and the catching of a
//!   panic on a connection's thread.
//!
//! and, if it has peers, a [`PeerHandler`] that queues what they send to the worker.
//!
//! A system whose state machine follows the node contract (`synod_node::Protocol`) writes
//! neither seam: [`host::ProtocolHost`] is the [`Machine`] of any protocol, given a
//! [`host::HostStore`] (the state machine recovered from the data directory, each write
//! laid out and synced), and [`host::start`] runs the whole node. Adding such a system is
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
//! - [`clients`]: the client listener ([`spawn_listener`]): a thread per connection, at
//!   most [`CLIENT_CONNECTIONS_MAX`] (past it a new connection closes the one that has
//!   waited longest for its client), each closed after [`CLIENT_IDLE_TIMEOUT`] waiting on
//!   its client, each thread's stack [`clients::CLIENT_THREAD_STACK_BYTES`] (a connection
//!   whose thread cannot start is refused; the node goes on).
//! - [`worker`]: [`UpdateQueue`], the worker over a `synod_transport::SingularUpdateQueue`
//!   with group commit ([`SYNC_DEFER_EVENTS_MAX`]), and the ticker ([`spawn_ticker`]).
//! - [`peers`]: the `TcpTransport` to the other members, fail-fast, bound before the
//!   state machine exists.
//! - [`process`]: fail-stop: named threads ([`spawn_vital`]), a panic hook that ends the
//!   process with [`EXIT_FAIL_STOP`] when any of the node's threads but a client
//!   connection's panics ([`stop_on_panic`]).
//! - [`stop`]: the graceful stop ([`Stopping`]): new requests refused, those in flight
//!   finished, the system's hand-over, clients given time to leave, a last sync, exit 0.
//!
//! A system's start function is then a short sequence: bind the transport
//! ([`peers::bind`]) and the client address, [`data_dir::claim`] the directory, open the
//! store and build the state machine, [`UpdateQueue::spawn`] it, set the peer handler,
//! [`spawn_ticker`] and [`spawn_listener`]. The Consistent Core's is
//! [`crate::consistent_core::server::start`].
// tidy: driver: the process runtime.

pub mod clients;
pub mod data_dir;
pub mod host;
mod options;
pub mod peers;
pub mod process;
pub mod stop;
pub mod worker;

pub use clients::{ClientConn, ClientLimits, Connections, ServeClient, spawn_listener};
pub use data_dir::IDENTITY_FILE;
pub use options::{
    CLIENT_CONNECTIONS_MAX, CLIENT_IDLE_TIMEOUT, NodeOptions, StartError, TICK_MS_DEFAULT,
};
pub use peers::{PeerHandler, PeerSlot};
pub use process::{
    CLIENT_THREAD, Counted, EXIT_FAIL_STOP, fail_stop, poll_until, spawn_vital, stop_on_panic,
};
pub use stop::{StopSteps, Stopping};
pub use worker::{Machine, QUEUE_EVENTS_MAX, SYNC_DEFER_EVENTS_MAX, UpdateQueue, spawn_ticker};

use std::net::TcpListener;

/// Binds the client address (`--client`).
///
/// # Errors
///
/// [`StartError::Bind`] if it cannot be bound.
pub fn bind_clients(options: &NodeOptions) -> Result<TcpListener, StartError> {
    TcpListener::bind(options.client_addr()).map_err(|error| StartError::Bind {
        what: "--client",
        addr: options.client_addr().to_string(),
        error,
    })
}
