//! Integration tests of synod-quorum, one binary with a module per area.

mod arithmetic;
mod versioned;
