//! A durable, segmented write-ahead log.
//!
//! `synod-wal` is the storage under Synod's replicated log, and a crate you can use on its
//! own wherever a program must not lose what it acknowledged: append records, learn which
//! index is durable, read them back after a crash.
//!
//! # Patterns
//!
//! From *Patterns of Distributed Systems* (Unmesh Joshi):
//!
//! - **Write-Ahead Log**: every state change is appended as a checksummed record and made
//!   durable before it is acknowledged; state is rebuilt by replaying the log.
//! - **Segmented Log**: the log is a sequence of files named by their first index, so old
//!   data is deleted a whole file at a time.
//! - **Low-Water Mark**: an index below which the log may be discarded, after a snapshot or
//!   a retention period.
//!
//! # What it does not do
//!
//! It stores opaque byte payloads with dense, increasing indexes. It does not interpret
//! them, keep a key index, or replicate anything: that is `synod-consensus`'s job.
//!
//! # Status
//!
//! Under construction (issue 3): the format, the log handle, recovery and the
//! fault-injecting storage land here.
//!
//! # Crate features
//!
//! - `testing`: a fault-injecting storage for testing recovery code (used by `synod-sim`).
//!
//! # Sibling crates
//!
//! `synod-consensus` offers a log store built on this crate; `synod-sim` uses its
//! fault-injecting storage for simulated disks.

mod config;
mod error;
pub mod format;
mod index;
mod inspect;
mod scan;
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;
mod wal;

pub use config::{
    Clock, ManualClock, RecoveryMode, SyncPolicy, SystemClock, WalConfig, WalConfigBuilder,
};
pub use error::{Corruption, CorruptionKind, WalError};
pub use index::LogIndex;
pub use inspect::{
    CheckReport, DumpReport, DumpedRecord, SegmentSummary, check, check_storage, dump, dump_storage,
};
pub use storage::{FileStorage, Storage, StorageFile};
pub use wal::{Records, RecoveryReport, Wal};
