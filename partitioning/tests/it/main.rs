//! Integration tests of synod-partitioning, one binary with a module per area.

mod figures;
mod fixed;
mod lock;
mod range;
mod twopc;
