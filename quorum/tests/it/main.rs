//! Integration tests of synod-quorum, one binary with a module per area.

mod abd;
mod arithmetic;
mod coordinator;
mod lww;
mod sim_abd;
mod skew;
mod versioned;
