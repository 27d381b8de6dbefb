//! The register store: a leaderless key-value store of ABD registers, one per key,
//! replicated on a majority, speaking RESP. The second system on the runtime, and the
//! first written only as what a system on the node contract has to write:
//!
//! - its state machine, [`machine::Registers`] (on `synod_node::Protocol`), and its store
//!   layout, [`store::RegisterLog`] (written against `synod_wal::Storage`);
//! - its commands, [`commands`] (GET and SET over RESP), served by [`node`];
//! - its client adapter, [`client`] (`synod kv --system register`);
//! - one entry in [`crate::systems::SYSTEMS`].
//!
//! The runtime's generic host ([`crate::runtime::host`]) runs it as a process (`synod node
//! --system register`): peers, clients, the worker with group commit, the wake-up thread.
//! The same state machine runs under `synod-sim` through its generic adapter
//! (`synod sim register`, [`crate::simulate`]).
//!
//! Every read and write reaches a majority, so the store answers while a majority of its
//! nodes is up, and a node that was killed comes back with every value it had
//! acknowledged (each is synced before the node answers on its strength).

pub mod client;
pub mod commands;
pub mod machine;
pub mod node;
pub mod store;

pub use machine::{Keyed, Record, Recovered, RegisterLimits, Registers, Request, Response};
