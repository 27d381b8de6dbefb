//! Quorums and versioned values, as I/O-free state machines.
//!
//! # Patterns
//!
//! From *Patterns of Distributed Systems* (Unmesh Joshi):
//!
//! - **Majority Quorum**: decisions need `floor(n/2) + 1` acknowledgements; joint quorums
//!   for membership changes; flexible read and write quorums.
//! - **Versioned Value**: every write creates a new version; reads are "latest" or "as of".
//!
//! Beyond the book: a Dynamo-style quorum read/write coordinator (consistency levels, read
//! repair, hinted writes) and its linearizable counterpart, the ABD register.
//!
//! # What it does not do
//!
//! No I/O: the coordinator and the register say what to send and decide from the
//! responses they are given; the caller moves the bytes.
//!
//! # Status
//!
//! Under construction (issue 7). Landed: quorum arithmetic ([`Threshold`],
//! [`MajorityConfig`], [`JointConfig`], [`FlexibleConfig`]), the [`ResponseTracker`] and
//! [`Quorum::committed_index`].
//!
//! # Sibling crates
//!
//! `synod-consensus` counts votes and commits with this crate's trackers; `synod-clocks`
//! provides the timestamps and version vectors that order versions.

pub mod abd;
pub mod config;
pub mod coordinator;
mod node;
pub mod resolve;
pub mod tracker;
pub mod versioned;

pub use abd::{AbdConfig, AbdConfigError, AbdEffect, AbdError, AbdMessage, AbdNode, AbdOpId, Tag};
pub use config::{
    ConfigError, FlexibleConfig, JointConfig, MajorityConfig, Quorum, Threshold, majority_of,
};
pub use coordinator::{
    Consistency, Coordinator, CoordinatorConfig, Placement, ReadRepair, RequestId,
    StoreConfigError, StoreEffect, StoreError, StoreMessage, StoreOpId, WriteReport,
};
pub use node::NodeId;
pub use resolve::{LastWriteWins, ResolveError, Resolver, VersionVectors};
pub use tracker::{Outcome, Part, QuorumUnreachable, Recorded, ResponseTracker};
pub use versioned::{GcStats, VersionedError, VersionedStore};
