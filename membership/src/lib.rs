//! Cluster membership: failure detection, gossip, emergent leader, leases and watches.
//!
//! # Patterns
//!
//! From *Patterns of Distributed Systems* (Unmesh Joshi):
//!
//! - **HeartBeat** (for failure detection): [`FixedTimeout`] and the phi accrual detector
//!   [`PhiAccrual`], plain values fed with heartbeat times and asked about a time.
//! - **Gossip Dissemination**: versioned state exchanged with a few random peers (not yet).
//! - **Emergent Leader**: the oldest live member coordinates, without an election (not yet).
//! - **Lease**: a time-bound grant with fencing tokens (not yet).
//! - **State Watch**: change notifications that resume from a log index (not yet).
//!
//! # What it does not do
//!
//! No I/O: every detector and protocol takes time and messages as values, and reads no
//! clock.
//!
//! # Sibling crates
//!
//! `synod-node` holds the contract (`Time`, `NodeId`, `Rng`) this crate is written on.

mod detector;

pub use detector::{FixedTimeout, PhiAccrual, PhiConfig, PhiConfigError, PhiModel};
