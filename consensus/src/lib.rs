//! Consensus: a Raft replicated log and Paxos, as I/O-free state machines.
//!
//! # Patterns
//!
//! From *Patterns of Distributed Systems* (Unmesh Joshi):
//!
//! - **Leader and Followers**, **HeartBeat**, **Generation Clock** (the term),
//!   **High-Water Mark** (the commit index), **Replicated Log**: Raft.
//! - **Paxos**: single-decree, a per-key register and a Multi-Paxos log.
//! - **Idempotent Receiver**: client sessions registered through the log.
//! - **Follower Reads**: reads served by followers, with read-your-writes.
//!
//! # What it does not do
//!
//! No I/O: the node asks for messages to be sent and entries to be persisted, and is told
//! when they are. The caller owns sockets, files and the clock.
//!
//! # Status
//!
//! Under construction (issue 8).
//!
//! # Crate features
//!
//! - `wal`: a log store backed by `synod-wal`.
//!
//! # Sibling crates
//!
//! `synod-quorum` counts votes and acknowledgements; `synod-clocks` provides generations;
//! `synod-wal` stores the log; `synod-sim` tests it all under faults.
