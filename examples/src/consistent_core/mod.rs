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
//!   MGET, EXISTS; with the client-session table (*Idempotent Receiver*), all serialized
//!   into snapshots.
//! - [`node`]: [`node::CoreNode`], Raft (*Replicated Log*, *Leader and Followers*,
//!   *High-Water Mark*, *Follower Reads*) plus the state machine, as a sans-I/O state
//!   machine: inputs in, effects out. It runs under `synod-sim` and as a process alike.
//! - [`server`]: the process: *Singular Update Queue* owning the node, *Single-Socket
//!   Channel* / *Request Pipeline* to peers over `synod-transport`, *Write-Ahead Log*,
//!   *Segmented Log* and *Low-Water Mark* via `synod_consensus::WalLogStore` on
//!   `synod-wal`, group commit, the system clock, ticks from a timer.
//! - [`resp`] and [`commands`]: the client protocol, RESP, so `redis-cli` works; the
//!   command table lives in [`commands`].
//! - [`client`]: a small blocking RESP client with sessions and retries, used by
//!   `synod kv` and the tests; [`tool`]: the `synod node` and `synod kv` subcommands.
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
//! ```
//!
//! # What it does not do (yet)
//!
//! No expiry (`SET ... EX` is refused until leases exist), no membership changes from the
//! client protocol, no authentication or TLS, no watches.

pub mod client;
pub mod commands;
pub mod kv;
pub mod node;
pub mod resp;
pub mod server;
pub mod tool;
