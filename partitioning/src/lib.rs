//! Data partitioning and distributed transactions.
//!
//! # Patterns
//!
//! From *Patterns of Distributed Systems* (Unmesh Joshi):
//!
//! - **Fixed Partitions**: many more partitions than nodes; key to partition never changes.
//! - **Key-Range Partitions**: sorted, contiguous ranges that split as they grow.
//! - **Two-Phase Commit**: a coordinator with a durable decision log, and participants
//!   that lock and record pending writes.
//!
//! # What it does not do
//!
//! No I/O: the coordinator and participants are state machines; the caller persists and
//! sends what they ask for.
//!
//! # Status
//!
//! Not started: no issue has been planned for this crate yet. It holds no types, and the
//! patterns above are not implemented. Nothing here pretends otherwise.
//!
//! # Sibling crates
//!
//! `synod-clocks` provides hybrid timestamps for MVCC and clock-bound wait.
