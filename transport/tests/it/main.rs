//! Integration tests of synod-transport: the codec under random chunkings, the decoders
//! under random and damaged input, and real TCP connections on 127.0.0.1 (port 0) under
//! the faults listed in `reliability.md`.
//!
//! Nothing here sleeps in place of a condition: tests wait on conditions with deadlines
//! (`support::wait_for`), and no test asserts a duration.

mod codec;
mod decoders;
mod faults;
mod server;
mod support;
mod tcp;
mod waiting;
