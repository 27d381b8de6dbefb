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
//! - **Two-Phase Commit** (not built yet): a coordinator with a durable decision log, and
//!   participants that lock and record pending writes.
//!
//! # What it does not do
//!
//! No I/O: tables are values, and the coordinator and participants will be state machines on
//! `synod-node`'s contract; the caller persists and sends what they ask for.
//!
//! # Sibling crates
//!
//! `synod-node` holds the contract and [`NodeId`]; `synod-sim` runs state machines on it
//! under deterministic simulation.

mod fixed;
mod range;

pub use fixed::{
    Lookup, Movement, NODES_MAX, NodeSpec, PARTITIONS_MAX, PartitionId, PartitionTable,
    REPLICATION_MAX, Redirect, TableError, TableVersion, WEIGHT_MAX, Zone, key_hash, partition_of,
};
pub use range::{
    Generation, KEY_BYTES_MAX, KeyRange, RANGES_MAX, RangeCache, RangeError, RangeId,
    RangeRedirect, RangeTable, ScanPage, ScanRequest, SplitPolicy,
};
pub use synod_node::NodeId;
