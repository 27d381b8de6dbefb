//! Configuration of a [`TcpTransport`](crate::TcpTransport): every limit in one value,
//! validated once by [`ConfigBuilder::build`].

use std::fmt;
use std::time::Duration;

use crate::frame::{ENVELOPE_OVERHEAD_BYTES_MAX, FRAME_BYTES_MAX_LIMIT};
use crate::handshake::{Authenticator, PeerAuthenticator};
use crate::ids::{ClusterId, NodeId};

/// What a sender does when a channel's outbound queue (or its in-flight window) is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Wait for room: back-pressure reaches the caller. The wait ends when room frees, the
    /// connection is lost (queued messages are then failed), or the transport shuts down.
    Block,
    /// Return [`SendError::QueueFull`](crate::SendError::QueueFull) at once. A sender that
    /// finds its channel idle still writes its message on its own thread (no hand-off to
    /// the writer thread); a peer that stopped reading holds it at most
    /// [`INLINE_WRITE_WAIT`](crate::INLINE_WRITE_WAIT), once.
    FailFast,
}

/// The validated configuration of a transport. Build it with [`Config::builder`].
///
/// | limit | default | meaning |
/// |---|---|---|
/// | `frame_bytes_max` | 1 MiB | longest frame payload sent or accepted; a longer incoming frame closes the connection |
/// | `batch_bytes_max` | 64 KiB | a batch frame is closed once it holds this many bytes |
/// | `batch_delay_us_max` | 20 | on a busy channel (requests in flight, or a message written that recently), how long the writer waits for more messages before sending a batch that is not full; 0 sends whatever is queued at once. An idle channel's message goes out at once |
/// | `outbound_bytes_max` | 4 MiB | encoded bytes queued per peer and not yet written, the write under way included |
/// | `outbound_messages_max` | 4096 | messages queued per peer |
/// | `overflow` | `Block` | what a sender does when a queue or the in-flight window is full |
/// | `in_flight_max` | 1024 | requests awaiting a response per peer |
/// | `inbound_messages_max` | 4096 | received messages waiting for [`recv`](crate::TcpTransport::recv); when full, readers stop reading (TCP back-pressure) |
/// | `keepalive_interval_ms` | 500 | a keep-alive frame is sent after this long without writing |
/// | `keepalive_timeout_ms` | 3000 | a connection with nothing received for this long is closed as dead |
/// | `connect_timeout_ms` | 1000 | bound on a TCP connect, and on a whole handshake however slowly the peer sends it |
/// | `backoff_initial_ms` / `backoff_max_ms` | 20 / 2000 | reconnect delays, doubled per failure, with jitter |
/// | `connections_max` | 256 | accepted connections at once, handshakes included; 16 more are told so at the handshake, and any beyond those closed at once |
/// | `idle_timeout_ms` | none | an accepted connection with no message either way for this long is closed |
///
/// Besides the limits, a configuration may hold a [`PeerAuthenticator`]
/// ([`ConfigBuilder::authenticator`]): then every connection's handshake proves, both ways,
/// that the two nodes hold the cluster's secret before any message is read. Without one
/// (the default) the handshake is the open one, which names the cluster and nodes only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub(crate) cluster: ClusterId,
    pub(crate) node: NodeId,
    pub(crate) frame_bytes_max: usize,
    pub(crate) batch_bytes_max: usize,
    pub(crate) batch_delay_us_max: u64,
    pub(crate) outbound_bytes_max: usize,
    pub(crate) outbound_messages_max: usize,
    pub(crate) overflow: Overflow,
    pub(crate) in_flight_max: usize,
    pub(crate) inbound_messages_max: usize,
    pub(crate) keepalive_interval_ms: u64,
    pub(crate) keepalive_timeout_ms: u64,
    pub(crate) connect_timeout_ms: u64,
    pub(crate) backoff_initial_ms: u64,
    pub(crate) backoff_max_ms: u64,
    pub(crate) connections_max: usize,
    pub(crate) idle_timeout_ms: Option<u64>,
    pub(crate) seed: u64,
    pub(crate) authenticator: Option<Authenticator>,
}

impl Config {
    /// A builder with the defaults for node `node` of cluster `cluster`.
    pub fn builder(cluster: ClusterId, node: NodeId) -> ConfigBuilder {
        ConfigBuilder {
            config: Config {
                cluster,
                node,
                frame_bytes_max: 1 << 20,
                batch_bytes_max: 64 << 10,
                batch_delay_us_max: 20,
                outbound_bytes_max: 4 << 20,
                outbound_messages_max: 4096,
                overflow: Overflow::Block,
                in_flight_max: 1024,
                inbound_messages_max: 4096,
                keepalive_interval_ms: 500,
                keepalive_timeout_ms: 3000,
                connect_timeout_ms: 1000,
                backoff_initial_ms: 20,
                backoff_max_ms: 2000,
                connections_max: 256,
                idle_timeout_ms: None,
                seed: node.get() ^ 0x5EED_5EED_5EED_5EED,
                authenticator: None,
            },
        }
    }

    /// This node's cluster.
    pub fn cluster(&self) -> ClusterId {
        self.cluster
    }
    /// This node.
    pub fn node(&self) -> NodeId {
        self.node
    }
    /// Longest frame payload sent or accepted.
    pub fn frame_bytes_max(&self) -> usize {
        self.frame_bytes_max
    }
    /// Bytes at which a batch frame is closed.
    pub fn batch_bytes_max(&self) -> usize {
        self.batch_bytes_max
    }
    /// Longest wait for more messages before sending a batch that is not full.
    pub fn batch_delay_us_max(&self) -> u64 {
        self.batch_delay_us_max
    }
    /// Encoded bytes queued per peer.
    pub fn outbound_bytes_max(&self) -> usize {
        self.outbound_bytes_max
    }
    /// Messages queued per peer.
    pub fn outbound_messages_max(&self) -> usize {
        self.outbound_messages_max
    }
    /// What a sender does when full.
    pub fn overflow(&self) -> Overflow {
        self.overflow
    }
    /// Requests awaiting a response per peer.
    pub fn in_flight_max(&self) -> usize {
        self.in_flight_max
    }
    /// Received messages waiting to be taken.
    pub fn inbound_messages_max(&self) -> usize {
        self.inbound_messages_max
    }
    /// Interval of keep-alive frames on a quiet connection.
    pub fn keepalive_interval_ms(&self) -> u64 {
        self.keepalive_interval_ms
    }
    /// Silence after which a peer is declared dead.
    pub fn keepalive_timeout_ms(&self) -> u64 {
        self.keepalive_timeout_ms
    }
    /// Bound on connecting and on the handshake.
    pub fn connect_timeout_ms(&self) -> u64 {
        self.connect_timeout_ms
    }
    /// First reconnect delay.
    pub fn backoff_initial_ms(&self) -> u64 {
        self.backoff_initial_ms
    }
    /// Longest reconnect delay.
    pub fn backoff_max_ms(&self) -> u64 {
        self.backoff_max_ms
    }
    /// Accepted connections at once.
    pub fn connections_max(&self) -> usize {
        self.connections_max
    }
    /// Idle time after which an accepted connection is closed, if any.
    pub fn idle_timeout_ms(&self) -> Option<u64> {
        self.idle_timeout_ms
    }
    /// Whether peers must prove they hold the cluster's secret
    /// ([`ConfigBuilder::authenticator`]).
    pub fn authenticates(&self) -> bool {
        self.authenticator.is_some()
    }
    pub(crate) fn peer_authenticator(&self) -> Option<&dyn PeerAuthenticator> {
        self.authenticator.as_ref().map(|a| &*a.0)
    }
    /// The largest payload one message may carry: it must fit in one frame and in the
    /// outbound queue.
    pub fn payload_bytes_max(&self) -> usize {
        self.frame_bytes_max.min(self.outbound_bytes_max) - ENVELOPE_OVERHEAD_BYTES_MAX
    }

    pub(crate) fn keepalive_interval(&self) -> Duration {
        Duration::from_millis(self.keepalive_interval_ms)
    }
    pub(crate) fn keepalive_timeout(&self) -> Duration {
        Duration::from_millis(self.keepalive_timeout_ms)
    }
    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

/// Builds a [`Config`]; see its table for each limit.
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    config: Config,
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.config.$name = value;
            self
        }
    };
}

impl ConfigBuilder {
    setter!(
        /// Longest frame payload, at most 64 MiB.
        frame_bytes_max: usize
    );
    setter!(
        /// Bytes at which a batch frame is closed; at most `frame_bytes_max`.
        batch_bytes_max: usize
    );
    setter!(
        /// Longest wait for more messages before sending a batch that is not full.
        batch_delay_us_max: u64
    );
    setter!(
        /// Encoded bytes queued per peer.
        outbound_bytes_max: usize
    );
    setter!(
        /// Messages queued per peer.
        outbound_messages_max: usize
    );
    setter!(
        /// What a sender does when a queue or the in-flight window is full.
        overflow: Overflow
    );
    setter!(
        /// Requests awaiting a response per peer.
        in_flight_max: usize
    );
    setter!(
        /// Received messages waiting to be taken.
        inbound_messages_max: usize
    );
    setter!(
        /// Interval of keep-alive frames on a quiet connection.
        keepalive_interval_ms: u64
    );
    setter!(
        /// Silence after which a peer is declared dead; more than the interval.
        keepalive_timeout_ms: u64
    );
    setter!(
        /// Bound on connecting and on the handshake.
        connect_timeout_ms: u64
    );
    setter!(
        /// First reconnect delay.
        backoff_initial_ms: u64
    );
    setter!(
        /// Longest reconnect delay.
        backoff_max_ms: u64
    );
    setter!(
        /// Accepted connections at once.
        connections_max: usize
    );
    setter!(
        /// Seed of the reconnect jitter.
        seed: u64
    );

    /// Requires every peer to prove, at the handshake, that it holds the cluster's secret,
    /// and proves it to them, with `authenticator` (keyed with the same secret on every
    /// member); see [`crate::handshake`] for the exchange. Without it, the open handshake.
    pub fn authenticator(mut self, authenticator: std::sync::Arc<dyn PeerAuthenticator>) -> Self {
        self.config.authenticator = Some(Authenticator(authenticator));
        self
    }

    /// Close accepted connections idle (no message either way) for this long.
    pub fn idle_timeout_ms(mut self, value: u64) -> Self {
        self.config.idle_timeout_ms = Some(value);
        self
    }

    /// Checks every limit and returns the configuration.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first limit that is out of range.
    pub fn build(self) -> Result<Config, ConfigError> {
        let c = self.config;
        let err = |what: &'static str, why: &'static str| Err(ConfigError { what, why });
        if c.frame_bytes_max <= ENVELOPE_OVERHEAD_BYTES_MAX
            || c.frame_bytes_max > FRAME_BYTES_MAX_LIMIT
        {
            return err("frame_bytes_max", "must be between 51 bytes and 64 MiB");
        }
        if c.batch_bytes_max == 0 || c.batch_bytes_max > c.frame_bytes_max {
            return err("batch_bytes_max", "must be between 1 and frame_bytes_max");
        }
        if c.batch_delay_us_max > 1_000_000 {
            return err("batch_delay_us_max", "must be at most one second");
        }
        if c.outbound_bytes_max <= ENVELOPE_OVERHEAD_BYTES_MAX {
            return err(
                "outbound_bytes_max",
                "must exceed the envelope overhead (50 bytes)",
            );
        }
        if c.outbound_messages_max == 0 {
            return err("outbound_messages_max", "must be at least 1");
        }
        if c.in_flight_max == 0 {
            return err("in_flight_max", "must be at least 1");
        }
        if c.inbound_messages_max == 0 {
            return err("inbound_messages_max", "must be at least 1");
        }
        if c.keepalive_interval_ms == 0 {
            return err("keepalive_interval_ms", "must be at least 1");
        }
        if c.keepalive_timeout_ms <= c.keepalive_interval_ms {
            return err("keepalive_timeout_ms", "must exceed keepalive_interval_ms");
        }
        if c.connect_timeout_ms == 0 {
            return err("connect_timeout_ms", "must be at least 1");
        }
        if c.backoff_initial_ms == 0 || c.backoff_max_ms < c.backoff_initial_ms {
            return err(
                "backoff_initial_ms",
                "must be at least 1 and at most backoff_max_ms",
            );
        }
        if c.connections_max == 0 {
            return err("connections_max", "must be at least 1");
        }
        if c.idle_timeout_ms == Some(0) {
            return err("idle_timeout_ms", "must be at least 1");
        }
        Ok(c)
    }
}

/// A configuration value out of range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    what: &'static str,
    why: &'static str,
}

impl ConfigError {
    /// The name of the offending setting.
    pub fn setting(&self) -> &'static str {
        self.what
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid transport configuration: {} {}",
            self.what, self.why
        )
    }
}

impl std::error::Error for ConfigError {}

/// Reconnect delays: exponential from `initial` to `max`, each drawn uniformly from its
/// upper half ("equal jitter") so that nodes restarted together do not reconnect in step.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    initial_ms: u64,
    max_ms: u64,
    current_ms: u64,
    rng: synod_node::Rng,
}

impl Backoff {
    pub(crate) fn new(initial_ms: u64, max_ms: u64, seed: u64) -> Self {
        Backoff {
            initial_ms,
            max_ms,
            current_ms: initial_ms,
            rng: synod_node::Rng::new(seed),
        }
    }

    /// The next delay, and doubles the ceiling for the one after.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.current_ms;
        self.current_ms = (self.current_ms.saturating_mul(2)).min(self.max_ms);
        let half = ceiling / 2;
        let jitter = self.rng.between(0, ceiling - half);
        Duration::from_millis(half + jitter)
    }

    /// Back to the first delay, after a connection succeeded.
    pub(crate) fn reset(&mut self) {
        self.current_ms = self.initial_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_limits_are_named() {
        let b = Config::builder(ClusterId(1), NodeId::new(1));
        assert!(b.clone().build().is_ok());
        let e = b.clone().batch_bytes_max(2 << 20).build().unwrap_err();
        assert_eq!(e.setting(), "batch_bytes_max");
        let e = b
            .clone()
            .keepalive_timeout_ms(100)
            .keepalive_interval_ms(100)
            .build()
            .unwrap_err();
        assert_eq!(e.setting(), "keepalive_timeout_ms");
        let e = b.clone().in_flight_max(0).build().unwrap_err();
        assert_eq!(e.setting(), "in_flight_max");
        let e = b.frame_bytes_max(128 << 20).build().unwrap_err();
        assert_eq!(e.setting(), "frame_bytes_max");
    }

    #[test]
    fn backoff_grows_within_jittered_bounds_and_resets() {
        let mut b = Backoff::new(10, 80, 42);
        let mut ceilings = vec![10, 20, 40, 80, 80];
        for ceiling in ceilings.drain(..) {
            let d = b.next_delay().as_millis() as u64;
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d} outside [{}, {ceiling}]",
                ceiling / 2
            );
        }
        b.reset();
        assert!(b.next_delay().as_millis() <= 10);
    }
}
