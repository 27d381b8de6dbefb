//! Clocks for distributed systems: Lamport, hybrid logical, clock-bound and generation
//! clocks, and version vectors.
//!
//! # Patterns
//!
//! From *Patterns of Distributed Systems* (Unmesh Joshi):
//!
//! - **Lamport Clock**: an integer that orders causally related events.
//! - **Hybrid Clock**: physical time plus a logical counter, monotonic even when the
//!   physical clock goes backwards.
//! - **Clock-Bound Wait**: an interval `[earliest, latest]` around true time, with
//!   commit-wait and read-restart.
//! - **Generation Clock**: a durable, monotonically increasing epoch.
//! - **Version Vector**: one counter per node, to tell "happened before" from "concurrent".
//!
//! # What it does not do
//!
//! It does not synchronise clocks (that is NTP's or PTP's job) and does not decide what a
//! protocol does with a rejected timestamp: it reports, the caller chooses.
//!
//! # Status
//!
//! Under construction (issue 4).
//!
//! # Sibling crates
//!
//! `synod-consensus` uses generations as terms; `synod-quorum` uses hybrid timestamps and
//! version vectors to order versions.
