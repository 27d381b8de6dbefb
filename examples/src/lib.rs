//! Reference systems built from Synod's crates.
//!
//! This crate is not published. It wires the library crates into small systems that run as
//! real clusters of processes, and hosts the `synod` command-line program (`src/main.rs`).
//!
//! Systems, each in its own module:
//!
//! 1. Consistent Core ([`consistent_core`]): a Raft-replicated, WAL-backed key-value store like
//!    etcd, speaking the Redis protocol; run a node with `synod node`, a client with `synod kv`,
//!    the whole story with `synod demo` ([`demo`]) and seeded simulations with `synod sim`
//!    ([`simulate`]).
//! 2. A leaderless quorum store like Cassandra or Dynamo ([`leaderless`]): consistency
//!    levels, version vectors and siblings, read repair, hints, anti-entropy, joins and
//!    leaves, and compare-and-set through per-key Paxos; `synod node`, `synod kv`, `synod
//!    demo` and `synod sim` with `--system leaderless`. Beside it, the register store
//!    ([`register`]): one ABD register per key, on a majority of nodes, speaking RESP
//!    (`--system register`).
//! 3. A partitioned transactional store like CockroachDB or Spanner: not built yet.
//! 4. A Multi-Paxos log as a running system: not built yet (the protocol exists in
//!    `synod-consensus`; per-key Paxos runs as the leaderless store's CAS).
//!
//! Shared by every system:
//!
//! - [`runtime`]: the process runtime that runs one node of a system as a process (data
//!   directory, client listener, worker with group commit, ticker, peer transport,
//!   fail-stop); a system plugs in its state machine through [`runtime::Machine`].
//! - [`resp`]: the client protocol, RESP (codec, per-connection command loop, client
//!   connection); a system supplies its command table.
//! - [`systems`]: the table of systems the `synod` program runs (`--system NAME`).

pub mod cli;
pub mod consistent_core;
pub mod demo;
pub mod history_file;
pub mod leaderless;
pub mod output;
pub mod page_file;
pub mod register;
pub mod resp;
pub mod runtime;
pub mod simulate;
pub mod systems;
