//! Drivers: the only code in this crate that touches the operating system.
//!
//! [`system`] reads the system clocks, [`generation_store`] writes generations to disk and
//! [`wait`] sleeps the calling thread. Everything else in the crate is pure logic that
//! takes time as a value.

pub mod generation_store;
pub mod system;
pub mod wait;
