//! Reference systems built from Synod's crates.
//!
//! This crate is not published. It wires the library crates into small systems that run as
//! real clusters of processes, and hosts the `synod` command-line program (`src/main.rs`).
//!
//! Planned systems, each in its own module as it lands:
//!
//! 1. Consistent Core: a Raft-replicated, WAL-backed key-value store like etcd.
//! 2. A leaderless quorum store like Cassandra or Dynamo.
//! 3. A partitioned transactional store like CockroachDB or Spanner.
//! 4. A per-key Paxos register and a Multi-Paxos log.
//!
//! None of them exists yet; [`cli`] says so plainly when asked to run one.

pub mod cli;
pub mod consistent_core;
pub mod demo;
pub mod simulate;
