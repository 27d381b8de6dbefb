//! Deterministic simulation of distributed state machines, with faults and checkers.
//!
//! In the manner of FoundationDB's simulator and TigerBeetle's VOPR: many nodes run in one
//! thread from one seed, over a simulated network, disks and clocks that misbehave on a
//! schedule drawn from that seed. The same seed gives the same run, byte for byte.
//!
//! # What it does not do
//!
//! It runs I/O-free state machines only; code that opens sockets or reads the OS clock
//! cannot be simulated.
//!
//! # Status
//!
//! Under construction (issue 6).
//!
//! # Sibling crates
//!
//! Uses `synod-wal`'s fault-injecting storage for disks and `synod-clocks`' manual clock.
