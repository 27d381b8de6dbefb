//! Integration tests of `synod-sim`: the checkers against known histories, the simulator's
//! determinism and fault coverage, and a replicated register run under faults.

mod checker_model;
mod checkers;
mod determinism;
mod durable_register;
mod export;
mod fault_log;
mod faults;
mod protocol;
mod register;
mod register_impl;
mod regression;
