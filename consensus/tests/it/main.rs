//! Integration tests of synod-consensus: one binary, one module per area.

mod alloc;
mod contract;
mod decoders;
mod early_apply;
mod features;
mod invariants;
mod multi_paxos;
mod paxos;
mod raft_paper;
mod random;
mod register;
mod replication;
mod robustness;
mod sessions;
mod sim;
mod stepped;
#[cfg(feature = "wal")]
mod wal_store;
#[cfg(feature = "wal")]
mod wal_store_sim;
