//! Integration tests of synod-partitioning, one binary with a module per area.

mod fixed;
mod range;
