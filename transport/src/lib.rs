//! How Synod's nodes talk: framing, single-socket channels, pipelining and batching, on
//! std threads without an async runtime.
//!
//! (Guided tour below; written last.)

pub mod completion;
mod config;
mod error;
pub mod frame;
pub mod handshake;
mod ids;
mod tcp;
mod transport;
mod update_queue;
mod waiting_list;

pub use completion::{Canceled, Completer, Completion, WaitOutcome, completion};
pub use config::{Config, ConfigBuilder, ConfigError, Overflow};
pub use error::{Disconnect, RequestError, SendError};
pub use ids::{ClusterId, CorrelationId, NodeId};
pub use tcp::{ConnectionEvent, EVENTS_RECENT_MAX, Handler, ResponseHandle, Stats, TcpTransport};
pub use transport::{InProcessNetwork, InProcessTransport, Incoming, Transport};
pub use update_queue::{
    Shutdown, ShutdownMode, SingularUpdateQueue, SubmitError, UpdateError, UpdateHandle,
};
pub use waiting_list::{Criterion, Progress, Quorum, WaitError, WaitingList};
