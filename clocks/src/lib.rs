//! Clocks for distributed systems: Lamport, hybrid logical, clock-bound and generation
//! clocks, and version vectors.
//!
//! # Status
//!
//! Under construction (issue 4): the guided tour is still being written.

pub mod driver;
pub mod dvv;
mod error;
pub mod generation;
pub mod hlc;
pub mod lamport;
pub mod physical;
pub mod time;
pub mod version_vector;

pub use driver::system::{CachedSystemClock, SystemClock};
pub use dvv::Siblings;
pub use error::{ConfigError, DecodeError};
pub use generation::{Generation, Incoming};
pub use hlc::{
    AtomicHybridClock, HybridClock, HybridClockConfig, HybridClockError, HybridTimestamp,
};
pub use lamport::{AtomicLamportClock, LamportClock, LamportOverflow, LamportTimestamp};
pub use physical::{ManualClock, PhysicalClock};
pub use time::{MonoTime, NodeId, WallTime};
pub use version_vector::{Causality, CounterOverflow, Dot, VersionVector};
pub mod clock_bound;
pub use clock_bound::{ErrorBoundSource, FixedErrorBound, IntervalClock, TimeInterval};
pub use driver::generation_store::{GenerationStore, GenerationStoreError};
