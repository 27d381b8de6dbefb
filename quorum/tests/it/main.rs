//! Integration tests of synod-quorum, one binary with a module per area.

mod abd;
mod arithmetic;
mod coordinator;
mod sim_abd;
mod skew;
mod versioned;
