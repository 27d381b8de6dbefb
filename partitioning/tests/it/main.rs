//! Integration tests of synod-partitioning, one binary with a module per area.

mod fixed;
mod range;
mod sim_twopc;
mod twopc;
