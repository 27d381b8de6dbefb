//! Deterministic simulation of distributed state machines, with faults and checkers.

mod check;
mod clock;
mod disk;
mod history;
mod nemesis;
mod net;
mod node;
mod rng;
pub mod seeds;
mod sim;
mod time;
mod trace;

pub use check::{
    HistoryChecker, KvInput, KvModel, KvOutput, LINEARIZABILITY_STEPS_MAX, Linearizability, Model,
    OkInvariant, Verdict,
};
pub use disk::{CrashMode, Disk};
pub use history::{History, HistoryError, OpId, Operation, Outcome};
pub use nemesis::{
    Counter, Coverage, FaultKind, FaultProfile, NemesisConfig, NemesisConfigBuilder,
};
pub use net::{Cut, DelayDistribution, LinkConfig, PartitionShape};
pub use node::{ClientId, Context, Node, NodeId, RequestId, SyncToken, TimerId};
pub use rng::{Probability, SimRng, splitmix64};
pub use sim::{
    CLIENTS_MAX, Completion, ConfigError, Failure, Invocation, NODES_MAX, NoClients, Phase,
    RunReport, SimConfig, SimConfigBuilder, Simulation, View, Workload,
};
pub use time::SimTime;
pub use trace::TraceHasher;
