//! Consensus: a Raft replicated log and Paxos, as I/O-free state machines.
//!
//! # Status
//!
//! Under construction (issue 8): the Raft node (elections with pre-vote and check-quorum,
//! replication with flow control, commitment, persistence acknowledgements, read index,
//! lease reads, snapshots, single-server membership changes, leader transfer) is here and
//! tested against the paper's rules; the guided tour, sessions and Paxos are coming.

mod config;
pub mod membership;
mod message;
pub mod paxos;
mod progress;
mod raft;
pub mod reads;
mod rng;
pub mod session;
mod storage;
mod types;
#[cfg(feature = "wal")]
pub mod wal_store;

pub use config::{Bugs, Config, ConfigBuilder, ConfigError};
pub use membership::{Membership, MembershipError};
pub use message::{AppendResult, DecodeError, Message, MessageBody, ReadId, WIRE_VERSION};
pub use raft::{
    CompactError, Node, PersistToken, ProposeError, ReadError, ReadState, Ready, Role,
    TransferError,
};
pub use reads::{ReadWaitError, ReadWaitList};
pub use rng::SplitMix64;
pub use storage::{HardState, LogStore, MemLogStore, Snapshot, SnapshotMeta};
pub use types::{Entry, LogIndex, NodeId, Payload, Term};
#[cfg(feature = "wal")]
pub use wal_store::{WalLogStore, WalStoreError};
