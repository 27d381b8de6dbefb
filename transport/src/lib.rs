//! How Synod's nodes talk: framing, single-socket channels, pipelining and batching, on
//! std threads without an async runtime.
//!
//! # Patterns
//!
//! From *Patterns of Distributed Systems* (Unmesh Joshi):
//!
//! - **Single-Socket Channel**: one ordered connection per pair of nodes.
//! - **Request Pipeline**: many requests in flight, matched by correlation id.
//! - **Request Batch**: small messages combined into one frame.
//! - **Singular Update Queue**: one thread owns the state and drains a bounded queue.
//! - **Request Waiting List**: pending requests completed by a criterion or expired.
//!
//! # What it does not do
//!
//! No async runtime, no service discovery, no TLS.
//!
//! # Status
//!
//! Under construction (issue 5).
//!
//! # Sibling crates
//!
//! The reference systems in `synod-examples` run their nodes over this crate; `synod-sim`
//! implements the same transport trait for simulation.
