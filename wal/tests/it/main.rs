//! Integration tests of synod-wal: real files, crashes through the fault-injecting storage,
//! a model-based property test, damaged and hostile input, and inspection.
//!
//! Environment variables:
//! - `SYNOD_WAL_CRASH_POINTS`: crash points in the sweep (default 12,000).
//! - `SYNOD_WAL_PROPTEST_CASES`: cases of the model-based test (default 256).

mod bad_input;
mod basics;
mod crash;
mod cuts;
mod damage;
mod group;
mod model;
mod races;
mod util;
