//! RESP, the Redis serialization protocol: the client protocol of every reference system.
//!
//! Speaking RESP means `redis-cli`, `redis-benchmark` and any language's Redis client work
//! against a cluster unchanged. The protocol is shared; what the commands mean is each
//! system's:
//!
//! - [`codec`] (re-exported here): commands parsed from bytes, replies encoded and parsed,
//!   every length checked against [`Limits`] first. No I/O.
//! - [`mod@serve`]: the server side, [`Resp`], run by the process runtime's client event
//!   loop: commands parsed, handed to the node in batches and answered in order, values
//!   pushed; a system supplies its command table as a [`Commands`] (the Consistent Core's
//!   is [`crate::consistent_core::commands`]).
//! - [`client`]: one blocking [`client::Connection`] to a server, under
//!   [`client::reply_limits`]; a system's client library is built on it.

pub mod client;
pub mod codec;
pub mod serve;

pub use codec::{CommandParser, Limits, Parsed, RespError, Value, parse_command};
pub use serve::{
    Answer, Commands, Context, Delivery, Order, Outcome, PushError, Pusher, Queued, Reply, Resend,
    Resp, Settled, Step,
};

/// Whether `name` (a command's name as sent) is one of `names`, in any case.
#[must_use]
pub fn is_one_of(name: &[u8], names: &[&str]) -> bool {
    names
        .iter()
        .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
}
