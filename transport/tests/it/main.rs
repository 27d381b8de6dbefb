//! Integration tests of synod-transport: the codec under random chunkings, the decoders
//! under random and damaged input, and real TCP connections on 127.0.0.1 (port 0) under
//! faults: peers that stop reading or answering, drop or reset connections mid-frame, send
//! oversize or truncated frames, or claim another sender.
//!
//! Nothing here sleeps in place of a condition: tests wait on conditions with deadlines
//! (`support::wait_for`), and no test asserts a duration.

mod auth;
mod codec;
mod decoders;
mod faults;
mod layer;
mod server;
mod support;
mod tcp;
mod waiting;
