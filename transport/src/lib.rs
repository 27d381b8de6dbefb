//! How Synod's nodes talk: length-prefixed frames over one TCP connection per pair of
//! nodes, with requests pipelined and batched, on plain `std` threads without an async
//! runtime.
//!
//! Use it when a fixed set of nodes must exchange ordered messages and request/response
//! pairs with bounded memory, clear errors and no runtime to adopt: the nodes of a
//! replicated log, a quorum store, a gossip cluster. Synod's reference systems run over it;
//! you can use it on its own.
//!
//! # A first example: two nodes over loopback
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use synod_transport::{ClusterId, Config, NodeId, TcpTransport};
//!
//! let cluster = ClusterId(1);
//! // Node 1 answers each request on its connection's reader thread.
//! let node1 = TcpTransport::bind_with_handler(
//!     Config::builder(cluster, NodeId::new(1)).build()?,
//!     "127.0.0.1:0",
//!     |request| {
//!         let mut reply = b"hello, ".to_vec();
//!         reply.extend_from_slice(request.payload());
//!         Some(Bytes::from(reply))
//!     },
//! )?;
//! // Node 2 learns where node 1 listens; having the higher id, it dials.
//! let node2 = TcpTransport::bind(Config::builder(cluster, NodeId::new(2)).build()?, "127.0.0.1:0")?;
//! node2.add_peer(NodeId::new(1), node1.local_addr());
//!
//! let response = node2
//!     .request(NodeId::new(1), Bytes::from_static(b"node 2"), Duration::from_secs(10))?
//!     .wait()?;
//! assert_eq!(&response[..], b"hello, node 2");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The patterns
//!
//! From *Patterns of Distributed Systems* (Unmesh Joshi). The first three live in
//! [`TcpTransport`]; the last two are independent building blocks.
//!
//! ## Single-Socket Channel
//!
//! **What.** One TCP connection per pair of nodes carries everything between them, in both
//! directions, so messages from one node arrive at the other in the order they were sent.
//! Each connection has a writer thread and a reader thread; the channel to a peer owns a
//! bounded outbound queue (`outbound_bytes_max`, `outbound_messages_max`), and a sender
//! that finds it full either waits or fails at once ([`Overflow`]). The node with the higher
//! id dials and reconnects with jittered exponential back-off; a peer that sends nothing
//! (not even the keep-alive frames sent every `keepalive_interval_ms`) for
//! `keepalive_timeout_ms` is declared dead and its connection closed; a write that makes no
//! progress for as long means the peer stopped reading, and is treated the same way.
//!
//! **When.** Whenever the order of messages between two nodes matters (a Raft follower
//! must see appends in order) and a connection per request would cost too much.
//!
//! **Who uses it.** ZooKeeper keeps one connection between each pair of servers for leader
//! election (the higher id dials, as here) and one per follower for replication; Kafka
//! keeps a single connection from each client to each broker and from each follower to each
//! leader. Cassandra's internode messaging and etcd's Raft transport keep a few long-lived
//! connections per peer, one per kind of traffic, each an ordered channel of this kind.
//!
//! The handshake on every connection carries the cluster id and both node ids; a node of
//! another cluster, or one that dialed the wrong address, is refused with a
//! [`handshake::RejectReason`] that both sides see: the dialer's requests fail with it, and
//! the acceptor lists it in [`TcpTransport::recent_events`]. Given a
//! [`handshake::PeerAuthenticator`] ([`ConfigBuilder::authenticator`]), the handshake also
//! has each side prove that it holds the cluster's secret, over fresh challenges from both
//! sides, before any message is read; without one it is the open handshake, for a cluster
//! whose network is trusted.
//!
//! ## Request Pipeline
//!
//! **What.** A node sends further requests without waiting for earlier responses, up to
//! `in_flight_max` per peer; each carries a [`CorrelationId`] and its response is matched by
//! it, whatever order responses come in. Each request has a deadline and fails with
//! [`RequestError::Timeout`] when it passes; when a connection drops, every request pending
//! on it fails at once with [`RequestError::ConnectionLost`], naming the [`Disconnect`]
//! reason, rather than waiting for its deadline.
//!
//! **When.** A leader replicating to followers, a client with many independent requests:
//! wherever round-trip time, not bandwidth, would otherwise limit throughput. One thread
//! can keep a whole window in flight: [`TcpTransport::request_batch`] sends many requests
//! with one lock and, on an idle channel, one frame written by the caller itself; the
//! caller then takes the responses as they complete and refills the window.
//!
//! **Who uses it.** Kafka producers (`max.in.flight.requests.per.connection`), Raft
//! implementations pipelining AppendEntries, HTTP/2 and tarpc (per-request deadlines and a
//! limit on in-flight requests).
//!
//! ```
//! # use std::time::Duration;
//! # use bytes::Bytes;
//! # use synod_transport::{ClusterId, Config, NodeId, TcpTransport};
//! # let echo = TcpTransport::bind_with_handler(
//! #     Config::builder(ClusterId(1), NodeId::new(1)).build()?, "127.0.0.1:0",
//! #     |request| Some(request.payload().clone()))?;
//! # let node2 = TcpTransport::bind(Config::builder(ClusterId(1), NodeId::new(2)).build()?, "127.0.0.1:0")?;
//! # node2.add_peer(NodeId::new(1), echo.local_addr());
//! // Ten requests in flight at once on one connection.
//! let handles: Vec<_> = (0..10u8)
//!     .map(|i| node2.request(NodeId::new(1), Bytes::from(vec![i]), Duration::from_secs(10)))
//!     .collect::<Result<_, _>>()?;
//! for (i, handle) in handles.into_iter().enumerate() {
//!     assert_eq!(handle.wait()?[..], [i as u8]); // each response matches its request
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Request Batch
//!
//! **What.** Small messages queued for the same peer leave together in one frame, up to
//! `batch_bytes_max` bytes. A message on an idle channel is written at once, by the
//! sending thread itself; on a busy channel (other requests in flight, or a message written
//! less than `batch_delay_us_max` ago) the writer thread waits up to `batch_delay_us_max`
//! (default 20 µs) for company before sending a batch that is not full: Nagle's algorithm
//! with a bound. Only the first message of a batch, and the one that fills it, wake the
//! writer thread; the others just join the queue. While one frame is being written the
//! next messages queue up, so batches grow with load. A caller can also form a batch
//! itself: [`TcpTransport::request_batch`] queues many requests at once and writes them as
//! one frame, and [`TcpTransport::send_batch`] does the same for one-way messages. The receiver unpacks the batch and handles each message; the responses
//! it produces while handling one batch leave together too.
//!
//! **When.** Many small messages (heartbeats, votes, small writes) where per-message
//! system-call and header costs dominate; a delay trades latency for fewer, fuller frames.
//!
//! **Who uses it.** Kafka's producer (`batch.size`, `linger.ms`), Raft implementations
//! batching log entries, TigerBeetle batching client requests.
//!
//! ```
//! use bytes::Bytes;
//! use synod_transport::frame::{
//!     begin_frame, decode_envelopes, finish_frame, Envelope, FrameDecoder, FrameKind, MessageKind,
//! };
//! use synod_transport::{CorrelationId, NodeId};
//!
//! // Three envelopes in one frame, as the writer thread builds a batch...
//! let mut wire = Vec::new();
//! let start = begin_frame(&mut wire);
//! for n in 0..3 {
//!     let envelope = Envelope {
//!         correlation: CorrelationId(n),
//!         kind: MessageKind::Request,
//!         from: NodeId::new(2),
//!         to: NodeId::new(1),
//!         payload: Bytes::from(vec![n as u8; 8]),
//!     };
//!     envelope.encode_into(&mut wire);
//! }
//! finish_frame(&mut wire, start, FrameKind::Messages, 64 << 10)?;
//!
//! // ...and unpacked by the receiver.
//! let mut decoder = FrameDecoder::new(64 << 10);
//! decoder.extend(&wire);
//! let frame = decoder.next_frame()?.expect("one whole frame");
//! let envelopes = decode_envelopes(&frame.payload)?;
//! assert_eq!(envelopes.len(), 3);
//! assert_eq!(envelopes[2].correlation, CorrelationId(2));
//! # Ok::<(), synod_transport::frame::FrameError>(())
//! ```
//!
//! ## Singular Update Queue
//!
//! **What.** One worker thread owns a piece of state and applies requests to it one at a
//! time from a bounded queue ([`SingularUpdateQueue`]). Callers on any thread get a
//! completion handle; a full queue pushes back; shutdown either applies or fails every
//! queued request, so no caller is left waiting.
//!
//! **When.** State updated from many threads (connections, timers, clients) whose updates
//! must be ordered: the state needs no lock and each update sees the one before.
//!
//! **Who uses it.** ZooKeeper's request processors, Kafka's controller event queue, etcd's
//! Raft node loop, LMAX's Disruptor; every actor system.
//!
//! ```
//! use synod_transport::{ShutdownMode, SingularUpdateQueue};
//!
//! let queue = SingularUpdateQueue::spawn(128, Vec::new(), |log: &mut Vec<String>, entry: String| {
//!     log.push(entry);
//!     log.len() // the index the entry got
//! })?;
//! let a = queue.submit("x=1".to_string()).expect("open");
//! let b = queue.submit("y=2".to_string()).expect("open");
//! assert_eq!((a.wait(), b.wait()), (Ok(1), Ok(2)));
//! let log = queue.shutdown(ShutdownMode::Drain).state.expect("worker alive");
//! assert_eq!(log, ["x=1", "y=2"]);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! The Singular Update Queue is where a [Single-Socket Channel](#single-socket-channel)
//! delivers: each connection's reader hands requests to the one thread that owns the state,
//! so requests from every peer are applied one at a time, each connection's in order.
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use synod_transport::{ClusterId, Config, NodeId, SingularUpdateQueue, TcpTransport};
//!
//! // The state: a counter that requests add to.
//! let counter = SingularUpdateQueue::spawn(1024, 0u64, |total: &mut u64, add: u64| {
//!     *total += add;
//!     *total
//! })?;
//! let server = TcpTransport::bind_with_handler(
//!     Config::builder(ClusterId(1), NodeId::new(1)).build()?,
//!     "127.0.0.1:0",
//!     move |request| {
//!         let add = u64::from(*request.payload().first()?);
//!         let total = counter.submit(add).ok()?.wait().ok()?;
//!         Some(Bytes::copy_from_slice(&total.to_le_bytes()))
//!     },
//! )?;
//! let client = TcpTransport::bind(Config::builder(ClusterId(1), NodeId::new(2)).build()?, "127.0.0.1:0")?;
//! client.add_peer(NodeId::new(1), server.local_addr());
//! for (add, total) in [(5u8, 5u64), (7, 12)] {
//!     let reply = client.request(NodeId::new(1), Bytes::from(vec![add]), Duration::from_secs(10))?.wait()?;
//!     assert_eq!(reply[..], total.to_le_bytes());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Request Waiting List
//!
//! **What.** Requests waiting for responses, keyed by id, each completed when its own
//! [`Criterion`] is met (a response from one node, a [`Quorum`] of distinct nodes, an
//! index committed) or returned as expired when its deadline passes
//! ([`WaitingList`]). It takes the current time as a value and does no I/O, so it runs
//! unchanged under simulation; a duplicate or late response is never counted twice.
//!
//! **When.** A coordinator that sends one request to several replicas and answers its
//! client once enough have replied; a leader that answers clients once their entry commits.
//!
//! **Who uses it.** Kafka's purgatory (produce requests waiting for `acks=all`), Cassandra's
//! coordinator waiting for a consistency level, etcd's wait registry keyed by request id.
//!
//! ```
//! use synod_transport::{NodeId, Progress, Quorum, WaitingList};
//!
//! let mut waiting = WaitingList::new(1000);
//! waiting.insert("put k", Quorum::majority(5), 250u64)?; // deadline at t = 250 ms
//! for node in 1..=2 {
//!     assert_eq!(waiting.on_response(&"put k", NodeId::new(node), ()), Progress::Pending);
//! }
//! assert!(matches!(waiting.on_response(&"put k", NodeId::new(3), ()), Progress::Completed(_)));
//! assert!(waiting.expire(1_000).is_empty()); // nothing left to expire
//! # Ok::<(), synod_transport::WaitError>(())
//! ```
//!
//! # The wire format
//!
//! Version 1, documented field by field in [`frame`] (the 16-byte frame header with magic,
//! version, kind, length and CRC-32; the postcard-encoded [`frame::Envelope`]) and in
//! [`handshake`] (hello, welcome, reject, and the auth steps). Every frame's length is checked against
//! `frame_bytes_max` before any room is reserved for it, and its checksum before it is
//! used; garbage, an oversize frame or a bad checksum closes that one connection and is
//! reported in [`TcpTransport::recent_events`], while the server goes on serving the rest.
//!
//! # Limits
//!
//! Every queue, batch, frame and count is bounded; [`Config`] lists each limit with its
//! default and meaning: `frame_bytes_max`, `batch_bytes_max`, `batch_delay_us_max`,
//! `outbound_bytes_max`, `outbound_messages_max`, `in_flight_max`, `inbound_messages_max`,
//! `keepalive_interval_ms`, `keepalive_timeout_ms`, `connect_timeout_ms`,
//! `backoff_initial_ms`, `backoff_max_ms`, `connections_max`, `idle_timeout_ms`. Fixed
//! limits: frames of at most 64 MiB ([`frame::FRAME_BYTES_MAX_LIMIT`]); handshake frames
//! of at most 256 bytes ([`handshake::HANDSHAKE_BYTES_MAX`]), so a peer that has not said
//! who it is cannot make this side buffer more; [`EVENTS_RECENT_MAX`] recent connection
//! events; reads of at most 64 KiB per system call, the frames of one read handled as one
//! batch; writes of everything queued for a peer in one system call (messages are encoded
//! into frames as they are queued, so the queue is a byte buffer ready to write); a waiter on a request alone in flight, or sent with
//! [`TcpTransport::request_batch`], looks for its response for up to 50 µs (yielding its
//! core between looks) before it sleeps.
//!
//! # The trait nodes are written against
//!
//! [`Transport`] is deliberately small: send a message, take what arrived, nothing that
//! blocks or names a thread. [`TcpTransport`] implements it and [`InProcessNetwork`] gives
//! an in-process implementation for tests, so one node's code runs over both. (synod-sim
//! does not implement it: a simulated node receives its messages from the simulator as
//! inputs, as the node contract of `synod-node` describes.)
//!
//! # What it does not do
//!
//! No async runtime, no TLS and no cryptography of its own: TLS plugs in underneath through
//! a [`StreamLayer`] (see [`stream`]), and peer authentication is a hook
//! ([`handshake::PeerAuthenticator`]) that a program fills with its MAC and random source;
//! without it the handshake's ids guard against misconfiguration, not attackers. No service discovery (peers' addresses are given with
//! [`TcpTransport::add_peer`]), no retries of requests (a request whose connection dropped
//! may or may not have been processed: retrying safely is the job of an idempotent
//! receiver, in `synod-consensus`), and no delivery guarantee beyond "at most once, in
//! order per pair of nodes".
//!
//! # Main types
//!
//! - [`TcpTransport`], configured by [`Config`]: channels, pipeline, batching, server side;
//!   [`ResponseHandle`] for a request in flight; [`Incoming`] for what arrived, or
//!   [`Received`] for many messages taken at once ([`TcpTransport::recv_into`]), each
//!   payload lent from its frame rather than made into an object of its own; a
//!   [`Handler`] or a [`BatchHandler`] (with [`Replies`]) to handle them on the
//!   connection's reader thread instead.
//! - [`StreamLayer`] and [`Stream`] ([`stream`]): the hook that wraps each connection's
//!   socket (in TLS, for example) before the handshake, set with
//!   [`TcpTransport::bind_layered`].
//! - [`frame`]: the I/O-free codec ([`frame::FrameDecoder`], [`frame::encode_frame`]).
//! - [`SingularUpdateQueue`], [`WaitingList`], [`completion()`] handles.
//! - Errors: [`SendError`], [`RequestError`], [`Disconnect`], [`handshake::HandshakeError`],
//!   [`ConfigError`].
//!
//! # Tests, fuzzing and benchmarks
//!
//! The integration tests (`tests/it`) run real sockets on 127.0.0.1 against misbehaving
//! peers: one that stops reading, one that goes silent, resets and truncations mid-frame,
//! oversize frames, garbage, wrong cluster ids, a full connection limit. `transport/fuzz`
//! holds cargo-fuzz targets for the frame decoder and the handshake, outside the workspace.
//! `cargo bench -p
//! synod-transport --bench throughput` compares the transport with raw TCP measured in the
//! same run, like with like (same message size, window and number of threads; the
//! pipeline figure uses [`TcpTransport::request_batch`] from one thread, as the raw
//! baseline refills its window with one write; the one-way figure sends with
//! [`TcpTransport::send_batch`], and again with one `send` per message), and prints what it compares
//! (`SYNOD_BENCH_QUICK=1` for a run under 30 seconds). No environment variable
//! changes what the tests do.
//!
//! # Crate features
//!
//! None.
//!
//! # Sibling crates
//!
//! Depends only on `synod-node`, for the one [`NodeId`] every Synod crate uses. The
//! reference systems in `synod-examples` run their nodes over [`TcpTransport`];
//! `synod-quorum` and `synod-consensus` keep their own pure logic and are driven over this
//! crate by those systems' process runtimes.

pub mod completion;
mod config;
mod error;
pub mod frame;
pub mod handshake;
mod ids;
mod received;
pub mod stream;
mod tcp;
mod transport;
mod update_queue;
mod waiting_list;

pub use completion::{Canceled, Completer, Completion, WaitOutcome, completion};
pub use config::{Config, ConfigBuilder, ConfigError, Overflow};
pub use error::{BatchSendError, Disconnect, RequestError, SendError};
pub use ids::{ClusterId, CorrelationId, NodeId};
pub use received::{Iter as ReceivedIter, Received, ReceivedMessage, SHARED_FRAME_BYTES_MAX};
pub use stream::{Stream, StreamLayer};
pub use tcp::{
    BatchHandler, ConnectionEvent, EVENTS_RECENT_MAX, Handler, INLINE_WRITE_WAIT, Replies,
    ResponseHandle, Stats, TcpTransport,
};
pub use transport::{InProcessNetwork, InProcessTransport, Incoming, Transport};
pub use update_queue::{
    Shutdown, ShutdownMode, SingularUpdateQueue, SubmitError, UpdateError, UpdateHandle,
};
pub use waiting_list::{Criterion, Progress, Quorum, WaitError, WaitingList};
