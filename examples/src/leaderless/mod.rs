//! The leaderless store: a Dynamo-style key-value store like Cassandra and Riak, built from
//! Synod's crates. Any node coordinates a request; members find each other through seeds
//! and gossip (synod-membership); keys live on fixed partitions (synod-partitioning) with
//! three replicas by default; reads and writes run at ONE, QUORUM or ALL per request, with
//! version vectors and siblings or last-write-wins (synod-quorum's coordinator), read
//! repair, hinted handoff and anti-entropy; a linearizable level runs ABD registers
//! (synod-quorum) and compare-and-set runs per-key Paxos (synod-consensus).
//!
//! What a system on the node contract writes:
//!
//! - its state machine, [`machine::Leaderless`] (on `synod_node::Protocol`), and its store
//!   layout, [`store::LeaderlessLog`] (a `synod_wal::Wal`, written against
//!   `synod_wal::Storage`);
//! - its commands, [`commands`] (RESP), served by [`node`], which also holds its client
//!   adapter (`synod kv --system leaderless`);
//! - one entry in [`crate::systems::SYSTEMS`] (with the simulation, [`crate::simulate`]).
//!
//! # What each level promises
//!
//! - **ONE**: a write is acknowledged by one replica, a read answers from one: a read may
//!   be stale (it may miss any acknowledged write), and an acknowledged write survives only
//!   as long as that replica's copy does until the others have it.
//! - **QUORUM** (and ALL): with version vectors, no acknowledged write is lost: each is in
//!   the merged state of the replicas, or was replaced by a write whose client had read it.
//!   Not linearizable: two reads concurrent with a write can see new then old, and a write
//!   that failed may still be applied later.
//! - **Last-write-wins** at any level keeps one value a key, the one with the largest
//!   timestamp: a write stamped by a clock that runs behind loses to an older write, so an
//!   acknowledged write can be lost (version vectors keep it).
//! - **The linearizable level** (ABD) and **CAS** (Paxos): linearizable per key.

pub mod commands;
pub mod machine;
pub mod node;
pub mod store;

pub use machine::{
    Config, Failure, Info, Key, Leaderless, Lww, Message, Mode, MoveKind, MovePhase, Notice, Read,
    Record, Recovered, Request, Response, Value, Vv,
};

#[cfg(test)]
mod tests;
