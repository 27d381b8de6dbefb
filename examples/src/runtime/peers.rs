//! The transport to the other nodes: one `TcpTransport`, configured for a node's one
//! worker thread, and the handler that hands what peers send to the system once it runs.
// tidy: driver: binds the peer socket and resolves peer addresses.
//!
//! The transport is bound before the system's state machine exists (so that a node whose
//! address is taken fails before it touches its data directory); until the system sets its
//! [`PeerHandler`] in the [`PeerSlot`], what peers send is given to the system's
//! `starting` function, which may answer it (a request, or a one-way message the system
//! answers with messages of its own) or drop it (the protocol resends what matters).

use std::net::ToSocketAddrs;
use std::sync::{Arc, OnceLock, Weak};

use bytes::Bytes;
use synod_transport::{ClusterId, ConfigBuilder, Handler, Incoming, NodeId, TcpTransport};

use super::{NodeOptions, StartError, auth};

/// What a system does with what its peers send, on the transport's reader threads (it
/// should only queue it to the worker): the response to a request, if it answers at once.
pub trait PeerHandler: Send + Sync + 'static {
    /// Handles one incoming message or request; `Some` answers a request at once.
    fn on_peer(&self, incoming: &Incoming) -> Option<Bytes>;
}

/// Where a system puts its [`PeerHandler`] once it can take what peers send.
#[derive(Debug)]
pub struct PeerSlot<H>(Arc<OnceLock<Arc<H>>>);

impl<H> PeerSlot<H> {
    /// From now on, what peers send goes to `handler` (once; a second call is ignored).
    pub fn set(&self, handler: Arc<H>) {
        let _ = self.0.set(handler);
    }
}

/// The peer transport's configuration for a node: fail-fast, with frames of at most
/// `frame_bytes_max` (the system's largest peer message and its headers).
///
/// # Errors
///
/// The transport's, for values it refuses.
pub fn transport_config(
    cluster: u64,
    id: u64,
    frame_bytes_max: usize,
) -> Result<synod_transport::Config, synod_transport::ConfigError> {
    transport_builder(cluster, id, frame_bytes_max).build()
}

/// [`transport_config`] before it is built, to add to it (a peer authenticator).
pub fn transport_builder(cluster: u64, id: u64, frame_bytes_max: usize) -> ConfigBuilder {
    synod_transport::Config::builder(ClusterId(cluster), NodeId::new(id))
        // The node's one thread sends the protocol's messages: it must never wait on a slow
        // or stopped peer (a SIGSTOPped follower would stall a Raft leader until
        // check-quorum deposed it). A message that does not fit is dropped, and the
        // protocol resends what matters.
        .overflow(synod_transport::Overflow::FailFast)
        // The largest message must fit in one frame: one that does not is refused by the
        // transport every time it is resent, and the protocol stalls there.
        .frame_bytes_max(frame_bytes_max)
        .outbound_bytes_max(2 * frame_bytes_max)
        // A peer back from a partition or a restart is dialled again within half a second
        // (the default backs off to 2 s), inside one election timeout.
        .backoff_max_ms(500)
}

/// Binds the node's peer address and adds every other member as a peer; what peers send
/// goes to the handler set in the returned slot, and until then to `starting`, which
/// returns what to send back: a request's response (the first of them; none leaves the
/// request to time out), or messages to the sender of a one-way message. This is the first thing every system's start does, so it is also where a
/// node checks what it leaves open ([`auth::check_open`]) and reads the cluster's secret:
/// with `--peer-secret-file`, every connection's handshake has both peers prove they hold
/// it ([`auth::PeerSecret`]) before anything a peer sends reaches the handler.
///
/// # Errors
///
/// [`StartError::Bind`] if `--listen` cannot be bound, [`StartError::Usage`] for a peer
/// address that does not resolve, a configuration the transport refuses, a secret file
/// that cannot be used, or an open node on an address that is not a loopback one.
pub fn bind<H: PeerHandler>(
    options: &NodeOptions,
    frame_bytes_max: usize,
    starting: impl Fn(&Incoming) -> Vec<Bytes> + Send + Sync + 'static,
) -> Result<(Arc<TcpTransport>, PeerSlot<H>), StartError> {
    auth::check_open(options)?;
    let mut builder = transport_builder(options.cluster_id(), options.id(), frame_bytes_max);
    if let Some(secret) = auth::PeerSecret::load(options)? {
        builder = builder.authenticator(secret);
    }
    let config = builder
        .build()
        .map_err(|e| StartError::Usage(format!("transport configuration: {e}")))?;
    let slot: Arc<OnceLock<Arc<H>>> = Arc::new(OnceLock::new());
    // The transport, for the answers `starting` gives to one-way messages: set once bound
    // (weak, as the transport holds this handler).
    let bound: Arc<OnceLock<Weak<TcpTransport>>> = Arc::new(OnceLock::new());
    let handler: Handler = Arc::new({
        let (slot, bound) = (Arc::clone(&slot), Arc::clone(&bound));
        move |incoming: &Incoming| {
            if let Some(handler) = slot.get() {
                return handler.on_peer(incoming);
            }
            let answers = starting(incoming);
            if incoming.is_request() {
                return answers.into_iter().next();
            }
            if let Some(transport) = bound.get().and_then(Weak::upgrade) {
                for answer in answers {
                    let _ = transport.send(incoming.from(), answer);
                }
            }
            None
        }
    });
    let transport = match options.tls() {
        // Every peer connection is TLS, authenticated both ways, before the handshake.
        Some(tls) => {
            TcpTransport::bind_layered(config, options.listen_addr(), tls.peers(), Some(handler))
        }
        None => TcpTransport::bind_with_handler(config, options.listen_addr(), move |incoming| {
            handler(incoming)
        }),
    };
    let transport = Arc::new(transport.map_err(|error| StartError::Bind {
        what: "--listen",
        addr: options.listen_addr().to_string(),
        error,
    })?);
    let _ = bound.set(Arc::downgrade(&transport));
    Ok((transport, PeerSlot(slot)))
}

/// Tells `transport` where every other member listens.
///
/// # Errors
///
/// [`StartError::Usage`] for an address that does not resolve.
pub fn add_peers(options: &NodeOptions, transport: &TcpTransport) -> Result<(), StartError> {
    for (&id, addr) in options.peers() {
        if id == options.id() {
            continue;
        }
        let resolved = addr
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                StartError::Usage(format!(
                    "--peers: node {id}'s address `{addr}` does not resolve"
                ))
            })?;
        transport.add_peer(NodeId::new(id), resolved);
    }
    Ok(())
}
