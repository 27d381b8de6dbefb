//! Cluster membership: failure detection, gossip, emergent leader, leases and watches.
//!
//! # Patterns
//!
//! From *Patterns of Distributed Systems* (Unmesh Joshi):
//!
//! - **HeartBeat** (for failure detection): fixed-timeout and phi-accrual detectors.
//! - **Gossip Dissemination**: versioned state exchanged with a few random peers.
//! - **Emergent Leader**: the oldest live member coordinates, without an election.
//! - **Lease**: a time-bound grant with fencing tokens.
//! - **State Watch**: change notifications that resume from a log index.
//!
//! # What it does not do
//!
//! No I/O: every protocol is a state machine that takes time and messages as values.
//!
//! # Status
//!
//! Not started: no issue has been planned for this crate yet. It holds no types, and the
//! patterns above are not implemented. Nothing here pretends otherwise.
//!
//! # Sibling crates
//!
//! `synod-clocks` provides the generations and timestamps this crate will use.
