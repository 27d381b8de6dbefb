//! Data partitioning and distributed transactions.
//!
//! # Patterns
//!
//! From *Patterns of Distributed Systems* (Unmesh Joshi):
//!
//! - **Fixed Partitions** (built): many more partitions than nodes; a key's partition never
//!   changes ([`partition_of`], a stable hash), and a versioned [`PartitionTable`] maps each
//!   partition to an ordered replica list, rebalanced on join and leave with as few copies
//!   as possible; a request routed with a stale table gets a [`Redirect`].
//! - **Key-Range Partitions** (built): a [`RangeTable`] of sorted, contiguous ranges that
//!   split and merge ([`SplitPolicy`] by size or load); each range has a [`Generation`], and
//!   a request naming a stale one gets a [`RangeRedirect`] with the current range; scans
//!   resume by key ([`RangeTable::scan`]), so a split between two pages misses nothing.
//! - **Two-Phase Commit** (built): a [`Coordinator`] whose decision is durable before anyone
//!   hears it, and [`Participant`]s that lock ([`LockManager`], wound-wait or wait-die) and
//!   durably record pending writes before they vote yes, both `synod_node::Protocol` state
//!   machines.
//!
//! # What it does not do
//!
//! No I/O: tables are values, and the coordinator and participants are state machines on
//! `synod-node`'s contract; the caller persists and sends what they ask for.
//!
//! # Sibling crates
//!
//! `synod-node` holds the contract and [`NodeId`]; `synod-sim` runs state machines on it
//! under deterministic simulation.

mod coordinator;
mod fixed;
mod lock;
mod participant;
mod range;
mod txn;
mod txn_node;

pub use coordinator::{
    ATTEMPTS_MAX_DEFAULT, Coordinator, CoordinatorConfig, OPS_MAX, PREPARE_TIMEOUT_MS_DEFAULT,
    RESEND_MS_DEFAULT, TXNS_MAX_DEFAULT,
};
pub use fixed::{
    Lookup, Movement, NODES_MAX, NodeSpec, PARTITIONS_MAX, PartitionId, PartitionTable,
    REPLICATION_MAX, Redirect, TableError, TableVersion, WEIGHT_MAX, Zone, key_hash, partition_of,
};
pub use lock::{Acquire, DeadlockPolicy, LockManager, LockMode};
pub use participant::{
    FINISHED_MAX_DEFAULT, KEYS_LOCKED_MAX_DEFAULT, LOCK_WAIT_MS_DEFAULT, Participant,
    ParticipantConfig, QUERY_AFTER_MS_DEFAULT, WAITING_MAX_DEFAULT,
};
pub use range::{
    Generation, KEY_BYTES_MAX, KeyRange, RANGES_MAX, RangeCache, RangeError, RangeId,
    RangeRedirect, RangeTable, ScanPage, ScanRequest, SplitPolicy,
};
pub use synod_node::NodeId;
pub use txn::{
    CoordinatorRecord, Key, Op, ParticipantRecord, Refusal, TxnId, TxnMessage, TxnOutcome,
    TxnRequest, TxnResponse, TxnWrite, Value, Vote, participant_of,
};
pub use txn_node::TxnNode;
