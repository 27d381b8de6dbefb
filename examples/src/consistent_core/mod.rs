//! Consistent Core: a small, strongly consistent, replicated key-value store, like etcd.
//!
//! # The pattern
//!
//! *Consistent Core* (Patterns of Distributed Systems): a large cluster needs a few facts
//! everyone agrees on (who leads a partition, which nodes are members, who holds a lock),
//! but running consensus across hundreds of nodes is slow. So a small cluster of three or
//! five nodes runs consensus and offers a linearizable key-value store, and the big
//! cluster keeps its metadata there. etcd is Kubernetes' consistent core; ZooKeeper was
//! Hadoop's, HBase's and Kafka's; Consul holds service catalogs; Kafka's KRaft controller
//! quorum replaced ZooKeeper with a Raft log inside Kafka itself.
//!
//! # The pieces, and the book's patterns they use
//!
//! - [`kv`]: the state machine: put, get, delete, compare-and-set, prefix scan, INCR,
//!   MGET, EXISTS, Redis's cursor scan, KEYS ([`pattern`]), DBSIZE and transactions
//!   (MULTI/EXEC with WATCH, one log entry each), with etcd's revisions (the store's, and each key's create and mod
//!   revisions and version); with the client-session table (*Idempotent Receiver*), all serialized
//!   into snapshots.
//! - Leases and key expiry (*Lease*): `synod_membership::lease`'s table in the store
//!   (granted, kept alive, revoked, checkpointed and expired through the log, kept in
//!   snapshots) and its expirer in [`node::CoreNode`] (acting only while the node leads);
//!   `SET ... EX|PX|EXAT|PXAT|KEEPTTL|LEASE`, `EXPIRE`, `TTL`, `PERSIST`, `LEASE ...`, and
//!   fenced writes (`SET ... FENCE lock token`, or `FENCE lock token` before any other
//!   write, refused unless the lock key's create revision is the token).
//! - Watches (*State Watch*, [`watch`]): each node's `synod_membership::watch::WatchHub`
//!   fed what the node applied, served as Redis pub/sub on keyspace channels and as the
//!   resumable `WATCHSTREAM`, on any node.
//! - [`node`]: [`node::CoreNode`], Raft (*Replicated Log*, *Leader and Followers*,
//!   *High-Water Mark*, *Follower Reads*) plus the state machine, as a sans-I/O state
//!   machine: inputs in, effects out. It runs under `synod-sim` and as a process alike.
//! - [`server`]: the node as a process, on the shared process runtime
//!   ([`crate::runtime`], which owns the threads, the client listener, the group commit,
//!   the ticks and fail-stop): what is the Consistent Core's in it, the node as the
//!   *Singular Update Queue*'s state machine, writes forwarded to the leader over
//!   `synod-transport` (*Single-Socket Channel*, *Request Pipeline*, *Request Batch*: a
//!   drain's forwarded writes in one message, answered in one), *Write-Ahead Log*,
//!   *Segmented Log* and *Low-Water Mark* via `synod_consensus::WalLogStore` on
//!   `synod-wal`, and the graceful shutdown.
//! - [`commands`]: the command table of the client protocol, RESP ([`crate::resp`],
//!   shared by every system), so `redis-cli` works.
//! - [`client`]: a small blocking client with sessions and retries on RESP's client
//!   connection, used by `synod kv` and the tests; [`tool`]: the `synod node` and
//!   `synod kv` subcommands.
//!
//! # Running a cluster by hand
//!
//! ```text
//! synod node --id 1 --listen 127.0.0.1:7001 --client 127.0.0.1:6001 \
//!     --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 --data-dir /tmp/synod/1
//! # ... the same for nodes 2 and 3 ...
//! redis-cli -p 6002 set greeting hello      # any node: followers forward to the leader
//! redis-cli -p 6003 get greeting
//! synod kv --addr 127.0.0.1:6001 scan gr
//! synod kv --addr 127.0.0.1:6001 shutdown  # graceful: hands the leadership over, exits 0
//! ```
//!
//! # Limits
//!
//! Every bound is a named constant: a value of at most 1 MiB and a command of at most
//! [`server::COMMAND_BYTES_MAX`] once encoded (refused with an error before it reaches the
//! log); replies of at most [`kv::REPLY_BYTES_MAX`]; at most [`kv::STORE_BYTES_MAX`] of
//! keys and values (writes past it refused alike on every replica); at most
//! [`kv::SESSIONS_MAX`] open sessions (a registration past it closes the least recently
//! active session that has never applied a write, or is refused with a `SESSION` error if
//! every open session has), each expiring after [`kv::SESSION_TIMEOUT_MS`]
//! idle and keeping at most [`kv::SESSION_RESPONSES_MAX`] unacknowledged replies; a snapshot every
//! `--snapshot-entries` entries or [`node::SNAPSHOT_LOG_BYTES_MIN`] of log (or the state's
//! size, if larger); [`QUEUE_EVENTS_MAX`](crate::runtime::QUEUE_EVENTS_MAX) events
//! queued for the node's thread;
//! [`CLIENT_CONNECTIONS_MAX`](crate::runtime::CLIENT_CONNECTIONS_MAX) client connections
//! (past it, a new one is refused with an error), each closed after
//! [`CLIENT_IDLE_TIMEOUT`](crate::runtime::CLIENT_IDLE_TIMEOUT) waiting on its client,
//! holding at most [`CLIENT_BUFFER_BYTES_MAX`](crate::runtime::CLIENT_BUFFER_BYTES_MAX) of
//! replies before its requests stop being read and at most
//! [`CLIENT_IN_FLIGHT_MAX`](crate::runtime::CLIENT_IN_FLIGHT_MAX) pipelined requests in
//! flight ([`server::READS_IN_FLIGHT_MAX`] single-key reads);
//! [`server::REQUEST_TIMEOUT`] per
//! request; peer frames of [`server::PEER_FRAME_BYTES_MAX`]; log segments of
//! [`server::SEGMENT_BYTES`].
//!
//! # How the book's patterns map onto the code
//!
//! | Pattern | Where |
//! |---|---|
//! | Consistent Core | the whole module: three or five nodes serving a linearizable store |
//! | Replicated Log, Leader and Followers, High-Water Mark | `synod_consensus::Node`, driven by [`node::CoreNode`] |
//! | Write-Ahead Log, Segmented Log | `synod_consensus::WalLogStore` on `synod-wal`, opened by [`server::start`] |
//! | Low-Water Mark | [`node::CoreNode`] compacts every [`node::SNAPSHOT_ENTRIES_DEFAULT`] applied entries (or [`node::SNAPSHOT_LOG_BYTES_MIN`] of log) into a [`kv::KvStore`] snapshot |
//! | Idempotent Receiver | [`kv::KvStore`]'s session table; `CLIENT REGISTER` and [`client::Client`] |
//! | Follower Reads | [`node::ReadMode::Follower`] (`READONLY` or `CLIENT READMODE follower`) |
//! | Singular Update Queue | the runtime's worker thread ([`crate::runtime::UpdateQueue`]), owning the node as [`server`] plugs it in |
//! | Request Waiting List | proposals and reads waiting in [`node::CoreNode`]; replies waited for with a deadline in [`server`] |
//! | Single-Socket Channel, Request Pipeline, Request Batch | peers over `synod_transport::TcpTransport` |
//!
//! # How it compares
//!
//! etcd is the closest relative: Raft, a write-ahead log with group commit, snapshots,
//! linearizable reads by read index, leases. ZooKeeper uses its own atomic broadcast (Zab)
//! and serves reads from any server (like [`node::ReadMode::Follower`]), offering `sync`
//! for a fresh read; its sessions are the model for `CLIENT REGISTER`. Consul embeds
//! Raft much as here. Kafka's KRaft controllers keep cluster metadata in a Raft log that
//! brokers replay, the same shape with a different state machine.
//!
//! # How it is tested
//!
//! - Unit tests: the state machine, the command table, the RESP codec (in
//!   [`crate::resp`]: every prefix of a command, malformed and oversize input, 20,000
//!   mutated and random inputs), snapshots
//!   (a follower catching up from one; a restart on a compacted store), a lease read on a
//!   leader whose timer inputs stopped while a new leader committed (refused, not stale);
//!   a node in the test process whose worker drops a write it took up (the client is told
//!   `UNKNOWN`), and one in a child process whose worker panics (the process exits); a
//!   node shutting down refusing forwarded writes; idle client connections closed after
//!   the idle timeout, and closed for a new client at the connection limit (the runtime's
//!   listener, through a Consistent Core node); the identity file written durably (in
//!   [`crate::runtime::data_dir`]: crash tests through `synod-wal`'s fault-injecting
//!   storage).
//! - `tests/it/core_sim.rs`: [`node::CoreNode`] under `synod-sim` through `synod sim raft-kv`'s
//!   driver ([`crate::simulate::raft_kv::simulation`]) with every fault kind, 2,000 seeds by
//!   default (`SYNOD_SEEDS` for more, `SYNOD_SEED` to replay one): after every event no node
//!   stopped and Raft's safety properties held (`synod_consensus::invariants`), each history
//!   checked for linearizability,
//!   progress required after healing; the checker is shown to catch stale follower reads.
//! - `tests/it/core_cluster.rs`: real `synod node` processes on loopback: writes through
//!   every node, the leader killed with SIGKILL, a new leader elected with no
//!   acknowledged write lost, the killed node restarted on its data directory and caught
//!   up, a follower paused with SIGSTOP and resumed, a leader paused past its lease while
//!   the others commit, then asked for a lease read (not stale); a client history recorded across a
//!   leader kill checked for linearizability; bad client input; start-up errors.
//! - The lease sweep (`node.rs`'s tests, `SYNOD_LEASE_SEEDS` seeds, 40 by default): three
//!   nodes in memory on one clock, two lock holders and a key given an expiry every 2 s,
//!   leaders paused for up to 3 s, leaders handed over (every 700 ms in a quarter of the
//!   seeds), holders paused for up to 4 s (past their TTL); it checks that at most one
//!   holder believes it holds the lock at any instant (until its last renewal's start plus
//!   the TTL), that a fenced write is applied only with the newest token, and that a key
//!   with an expiry goes no earlier than its TTL and no later than the bound
//!   `synod_membership::lease` states. It catches holders that believe past their TTL and
//!   the broken expirer that restarts leases at each election.
//! - `tests/it/core_lock.rs`: two `synod kv lock` processes against real nodes: the
//!   first paused with SIGSTOP past its TTL loses the lock to the second, its fenced write
//!   is refused, and resumed it exits with an error; the second releases on closing stdin.
//!   `tests/it/core_redis.rs` also sets keys with `EX` and `PX` and reads `TTL` with
//!   `redis-cli`, and watches a `PX` key go.
//! - [`watch`]'s unit tests: pub/sub messages and stream frames, resumption, progress, a
//!   compacted start refused and a slow connection cancelled with the compacted revision
//!   (never a gap), limits per connection. `tests/it/core_watch.rs`: two `synod kv watch`
//!   processes, one first on the leader and one on a follower, across a SIGKILL of the
//!   leader, each printing every change once, in order. `tests/it/core_redis.rs`:
//!   `redis-cli` subscribing to a key on a follower and to a pattern in RESP3.
//! - `tests/it/core_limits.rs`: the largest command (a 1 MiB value) replicated through the
//!   leader and a follower and read back from every node, one over the limit refused alike
//!   everywhere, and a client pipelining large reads costing a node about one reply of
//!   memory; unit tests show the session numbering staying in step with the client
//!   library across unknown outcomes and refused writes.
//!
//! # What it does not do (yet)
//!
//! No membership changes from the
//! client protocol (authentication and TLS are the runtime's, for every system:
//! [`crate::runtime::auth`], [`crate::runtime::tls`]), no lock against two processes
//! sharing a data directory. A write without a session whose outcome is unknown (answered
//! `UNKNOWN`: see [`commands`]) is not resent by [`client::Client`], which cannot know
//! whether it was applied; register a session to have it resent safely.

pub mod client;
pub mod commands;
mod forward;
pub use forward::{BatchDecodeError, PeerBatch, decode_peer_batch, encode_peer_batch};
pub mod kv;
pub mod node;
pub mod pattern;
pub mod server;
pub mod tool;
pub mod watch;
