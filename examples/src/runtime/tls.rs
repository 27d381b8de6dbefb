//! TLS for a node's connections, with rustls (its `ring` crypto): the certificates a node
//! loads ([`TlsFiles`], [`NodeTls`]), the peer side as a [`StreamLayer`] of the transport
//! ([`PeerTls`]), and the client side's configuration, which the client event loop
//! (`clients.rs`) drives without blocking.
// tidy: driver: reads certificate files and runs TLS handshakes on sockets.
//!
//! # What is checked
//!
//! - **Peers** authenticate each other: each presents its certificate and verifies the
//!   other's against the cluster's CA (`--tls-ca-file`); the dialer also checks that the
//!   certificate names the host it dialed (the host part of the member's address in
//!   `--peers`: an IP address or a DNS name in the certificate's subject alternative
//!   names). A peer whose certificate another authority signed, or that speaks no TLS, is
//!   refused before the transport's handshake: nothing it sends reaches a state machine.
//!   The refusal is logged with the peer's address.
//! - **Which member**: a member's certificate also names its node id, as the DNS name
//!   `node-ID.synod` ([`node_name`]) among its subject alternative names, and each side
//!   checks it: the dialer that the node it dialed answered, the acceptor that the id the
//!   dialer claims in its hello is the one its certificate names ([`Stream::check_peer`]).
//!   So a member cannot speak as another with its own certificate; a mismatch is refused
//!   and logged with the address. A certificate valid for every node id (a wildcard
//!   `*.synod`) is refused as naming none. A node checks at start that its own certificate
//!   names it.
//! - **Clients**: the client port speaks TLS only; a client that sends plain text is told so
//!   in plain RESP and closed. With `--tls-client-auth`, a client must present a
//!   certificate the CA signed as well.
//!
//! # Limits
//!
//! A handshake must finish within [`TLS_HANDSHAKE_BYTES_MAX`] bytes received, on either
//! port, and in time: on the client port within [`TLS_HANDSHAKE_TIMEOUT`]; between peers by
//! the transport's one deadline for the whole handshake (`connect_timeout_ms` from the
//! accept or the connect), however slowly the peer sends it. Bytes that are not TLS end that
//! connection only.
//!
//! # Threads
//!
//! The transport reads a peer connection on one thread and writes it from others.
//! A peer connection's stream keeps the TLS session under a lock held only while bytes are encrypted or
//! decrypted, never while waiting on the socket: the reader reads the socket unlocked, then
//! decrypts under the lock; a writer encrypts under the lock and writes the records out
//! after it (under a second lock, which keeps records in order on the wire).

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig};
use synod_transport::{NodeId, Stream, StreamLayer};

use super::refusals::REFUSALS;

/// How long a TLS handshake may take on the client port before the connection is closed
/// (between peers, the transport's handshake deadline bounds it).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes a connection may send during its TLS handshake (a hello and a certificate chain
/// take a few KiB) before it is closed.
pub const TLS_HANDSHAKE_BYTES_MAX: usize = 64 << 10;
/// Plaintext a peer connection encrypts per write call.
const WRITE_CHUNK_BYTES: usize = 64 << 10;
/// Bytes read from a peer socket at a time.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// The certificate files of a node: its certificate chain and key, and the CA that signed
/// every member's certificate (and, with `client_auth`, every client's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain of this node (`--tls-cert-file`).
    pub cert: PathBuf,
    /// PEM private key (`--tls-key-file`).
    pub key: PathBuf,
    /// PEM certificate of the cluster's CA (`--tls-ca-file`).
    pub ca: PathBuf,
    /// Clients must present a certificate the CA signed (`--tls-client-auth`).
    pub client_auth: bool,
}

/// A node's loaded TLS: the client port's server configuration and the peer layer.
#[derive(Clone)]
pub struct NodeTls {
    files: TlsFiles,
    clients: Arc<ServerConfig>,
    peers: Arc<PeerTls>,
}

impl fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl PartialEq for NodeTls {
    fn eq(&self, other: &Self) -> bool {
        self.files == other.files
    }
}

impl Eq for NodeTls {}

impl NodeTls {
    /// Loads `files` for node `id`, whose members listen at `peers` (the host of each
    /// address is the name its certificate must carry).
    ///
    /// # Errors
    ///
    /// What is wrong with which file, in words.
    pub fn load(files: TlsFiles, id: u64, peers: &BTreeMap<u64, String>) -> Result<Self, String> {
        let provider = provider();
        let chain = certificates(&files.cert)?;
        names_node(&chain[0], id).map_err(|e| format!("{}: {e}", files.cert.display()))?;
        let key = private_key(&files.key)?;
        let roots = Arc::new(root_store(&files.ca)?);
        let verifier = |what: &str| {
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|e| format!("{what}: the CA in {}: {e}", files.ca.display()))
        };
        let server = |verify: bool| -> Result<ServerConfig, String> {
            let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?;
            let builder = if verify {
                builder.with_client_cert_verifier(verifier("client certificates")?)
            } else {
                builder.with_no_client_auth()
            };
            let mut config = builder
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(|e| {
                    format!(
                        "{} and {} do not make a certificate and its key: {e}",
                        files.cert.display(),
                        files.key.display()
                    )
                })?;
            // No client resumes a session here; tickets would only cost a round of writes.
            config.send_tls13_tickets = 0;
            Ok(config)
        };
        let clients = Arc::new(server(files.client_auth)?);
        let accept = Arc::new(server(true)?);
        let dial = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(Arc::clone(&roots))
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("{}: {e}", files.cert.display()))?;
        let mut names = BTreeMap::new();
        for (&member, addr) in peers {
            let host = host_of(addr);
            let name = ServerName::try_from(host.to_string())
                .map_err(|_| format!("--peers: `{host}` (node {member}) is not a host name"))?;
            names.insert(member, name);
        }
        Ok(NodeTls {
            files,
            clients,
            peers: Arc::new(PeerTls {
                node: id,
                accept,
                dial: Arc::new(dial),
                names,
                refused: Arc::new(AtomicU64::new(0)),
            }),
        })
    }

    /// The client port's TLS configuration.
    #[must_use]
    pub fn clients(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.clients)
    }

    /// The peer transport's layer.
    #[must_use]
    pub fn peers(&self) -> Arc<PeerTls> {
        Arc::clone(&self.peers)
    }

    /// The files it was loaded from.
    #[must_use]
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

/// The name a member's certificate carries for its node id `id`, as a DNS name among its
/// subject alternative names: `node-ID.synod`.
#[must_use]
pub fn node_name(id: u64) -> String {
    format!("node-{id}.synod")
}

/// Whether `cert` names node `id` ([`node_name`]) and not every node (a wildcard).
///
/// # Errors
///
/// What it names instead, in words.
fn names_node(cert: &CertificateDer<'_>, id: u64) -> Result<(), String> {
    let parsed =
        ParsedCertificate::try_from(cert).map_err(|e| format!("not a certificate: {e}"))?;
    let valid_for = |name: String| {
        ServerName::try_from(name)
            .is_ok_and(|n| rustls::client::verify_server_name(&parsed, &n).is_ok())
    };
    if !valid_for(node_name(id)) {
        return Err(format!(
            "the certificate does not name node {id} (`DNS:{}` among its subject alternative names)",
            node_name(id)
        ));
    }
    // No node is called this: a certificate valid for it is valid for every node id.
    if valid_for("node-any.synod".to_string()) {
        return Err("the certificate names every node (a wildcard), not one".into());
    }
    Ok(())
}

/// The host part of `host:port` (brackets of an IPv6 address removed).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The one crypto provider: ring, which builds with a C compiler alone.
fn provider() -> Arc<CryptoProvider> {
    // Deprecated since rustls 0.23.48 for lacking post-quantum key exchange, which only the
    // aws-lc-rs provider has, and that one needs cmake and an assembler to build.
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("{}: no PEM private key: {e}", path.display()))
}

/// The CA certificates in `path`, as the only roots trusted.
pub(crate) fn root_store(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

/// A client configuration trusting the CA in `ca` (for `synod kv --tls --cacert`).
///
/// # Errors
///
/// What is wrong with the file.
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, String> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(root_store(ca)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Sets both of `socket`'s timeouts to the time left until `deadline`.
///
/// # Errors
///
/// `TimedOut` once the deadline has passed.
fn time_left(socket: &TcpStream, deadline: Instant) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the TLS handshake took too long",
        ));
    }
    socket.set_read_timeout(Some(left))?;
    socket.set_write_timeout(Some(left))
}

/// Runs `conn`'s handshake on the blocking `socket` by `deadline` (each read and write
/// waits only for the time left, so a peer sending a byte now and then cannot stretch it)
/// and within [`TLS_HANDSHAKE_BYTES_MAX`].
///
/// # Errors
///
/// The socket's, `TimedOut` past the deadline, or `InvalidData` for what TLS refused (the
/// reason in the text).
pub fn handshake(
    conn: &mut Connection,
    mut socket: &TcpStream,
    deadline: Instant,
) -> io::Result<()> {
    let mut received = 0;
    while conn.is_handshaking() {
        time_left(socket, deadline)?;
        if conn.wants_write() {
            conn.write_tls(&mut socket)?;
            continue;
        }
        let n = conn.read_tls(&mut socket).map_err(|e| match e.kind() {
            // The read waited for the time left: the deadline passed.
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                io::Error::new(io::ErrorKind::TimedOut, "the TLS handshake took too long")
            }
            _ => e,
        })?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed during the TLS handshake",
            ));
        }
        received += n;
        if received > TLS_HANDSHAKE_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the TLS handshake sent more than {TLS_HANDSHAKE_BYTES_MAX} bytes"),
            ));
        }
        if let Err(e) = conn.process_new_packets() {
            // Tell the peer why (an alert), if it still listens.
            let _ = conn.write_tls(&mut socket);
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
    }
    while conn.wants_write() {
        time_left(socket, deadline)?;
        conn.write_tls(&mut socket)?;
    }
    Ok(())
}

/// The peer transport's TLS layer: mutual authentication against the cluster's CA.
pub struct PeerTls {
    node: u64,
    accept: Arc<ServerConfig>,
    dial: Arc<ClientConfig>,
    /// The name each member's certificate must carry.
    names: BTreeMap<u64, ServerName<'static>>,
    refused: Arc<AtomicU64>,
}

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerTls")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl PeerTls {
    /// Peer connections this node refused at the TLS handshake.
    #[must_use]
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl StreamLayer for PeerTls {
    fn accepted(
        &self,
        socket: TcpStream,
        remote: Option<SocketAddr>,
        deadline: Instant,
    ) -> io::Result<Box<dyn Stream>> {
        let session =
            rustls::ServerConnection::new(Arc::clone(&self.accept)).map_err(io::Error::other)?;
        let mut conn = Connection::Server(session);
        if let Err(e) = handshake(&mut conn, &socket, deadline) {
            self.refuse(remote, &format!("TLS: {e}"));
            return Err(e);
        }
        let mut stream = PeerStream::new(socket, conn);
        stream.checked_by = Some((Arc::clone(&self.refused), self.node, remote));
        Ok(Box::new(stream))
    }

    fn dialed(
        &self,
        socket: TcpStream,
        peer: NodeId,
        addr: SocketAddr,
        deadline: Instant,
    ) -> io::Result<Box<dyn Stream>> {
        let name = self.names.get(&peer.get()).cloned().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("node {peer} is not a member"),
            )
        })?;
        let session =
            ClientConnection::new(Arc::clone(&self.dial), name).map_err(io::Error::other)?;
        let mut conn = Connection::Client(session);
        handshake(&mut conn, &socket, deadline)?;
        // The host checked, the node too: another member's certificate is not this one's.
        let named = conn
            .peer_certificates()
            .and_then(<[_]>::first)
            .ok_or_else(|| "no certificate".to_string())
            .and_then(|cert| names_node(cert, peer.get()));
        if let Err(why) = named {
            let why = format!("dialed node {}: {why}", peer.get());
            self.refuse(Some(addr), &why);
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
        }
        Ok(Box::new(PeerStream::new(socket, conn)))
    }
}

impl PeerTls {
    /// Counts and logs a refused peer connection.
    fn refuse(&self, remote: Option<SocketAddr>, why: &str) {
        refused(&self.refused, self.node, remote, why);
    }
}

/// Counts in `count` and logs (within the refusal log's rate) a peer connection node `node`
/// refused.
fn refused(count: &AtomicU64, node: u64, remote: Option<SocketAddr>, why: &str) {
    let n = count.fetch_add(1, Ordering::Relaxed) + 1;
    let from = remote.map_or_else(|| "an unknown address".into(), |a| a.to_string());
    REFUSALS.log(&format!(
        "synod node {node}: refused a peer connection from {from} ({n} so far): {why}"
    ));
}

/// A peer connection's TLS session over its socket, read by one thread and written by
/// others (see the module documentation).
struct PeerStream {
    socket: TcpStream,
    /// On the accepting side: where refusals are counted, this node, and the peer's address,
    /// for [`Stream::check_peer`].
    checked_by: Option<(Arc<AtomicU64>, u64, Option<SocketAddr>)>,
    session: Mutex<Session>,
    out: Mutex<Outgoing>,
    /// The reader's buffer for bytes from the socket.
    chunk: Mutex<Vec<u8>>,
}

struct Session {
    conn: Connection,
    /// Bytes read from the socket that TLS has not taken yet.
    raw: Vec<u8>,
}

/// Records of the write under way: encrypted, not all on the wire yet.
struct Outgoing {
    wire: Vec<u8>,
    sent: usize,
    /// Plaintext bytes they hold, reported once they are all sent.
    plain: usize,
}

impl fmt::Debug for PeerStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerStream")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl PeerStream {
    fn new(socket: TcpStream, conn: Connection) -> Self {
        PeerStream {
            socket,
            checked_by: None,
            session: Mutex::new(Session {
                conn,
                raw: Vec::new(),
            }),
            out: Mutex::new(Outgoing {
                wire: Vec::new(),
                sent: 0,
                plain: 0,
            }),
            chunk: Mutex::new(vec![0; READ_CHUNK_BYTES]),
        }
    }
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Stream for PeerStream {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            {
                let mut session = self.session.lock();
                let Session { conn, raw } = &mut *session;
                loop {
                    match conn.reader().read(buf) {
                        // Ok(0): the peer closed the session.
                        Ok(n) => return Ok(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                    if raw.is_empty() {
                        break;
                    }
                    let used = conn.read_tls(&mut raw.as_slice())?;
                    if used == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "TLS takes no more bytes",
                        ));
                    }
                    raw.drain(..used);
                    conn.process_new_packets().map_err(invalid)?;
                }
            }
            // Wait for the socket without the session's lock: writers go on meanwhile.
            let mut chunk = self.chunk.lock();
            let n = Read::read(&mut &self.socket, &mut chunk)?;
            if n == 0 {
                return Ok(0);
            }
            self.session.lock().raw.extend_from_slice(&chunk[..n]);
        }
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut out = self.out.lock();
        if out.wire.is_empty() {
            let mut session = self.session.lock();
            let n = session
                .conn
                .writer()
                .write(&buf[..buf.len().min(WRITE_CHUNK_BYTES)])?;
            // Records the reader queued (an alert, a key update) come first, in order.
            while session.conn.wants_write() {
                session.conn.write_tls(&mut out.wire)?;
            }
            out.plain = n;
            out.sent = 0;
        }
        // After WouldBlock the transport calls again with the same bytes: these records
        // already hold them.
        while out.sent < out.wire.len() {
            let at = out.sent;
            match Write::write(&mut &self.socket, &out.wire[at..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => out.sent += k,
                Err(e) => return Err(e),
            }
        }
        out.wire.clear();
        out.sent = 0;
        Ok(std::mem::take(&mut out.plain))
    }

    fn socket(&self) -> &TcpStream {
        &self.socket
    }

    fn check_peer(&self, claimed: NodeId) -> io::Result<()> {
        let Some((count, node, remote)) = &self.checked_by else {
            return Ok(());
        };
        let session = self.session.lock();
        let named = session
            .conn
            .peer_certificates()
            .and_then(<[_]>::first)
            .ok_or_else(|| "no certificate".to_string())
            .and_then(|cert| names_node(cert, claimed.get()));
        drop(session);
        named.map_err(|why| {
            let why = format!("it claims to be node {}, but {why}", claimed.get());
            refused(count, *node, *remote, &why);
            io::Error::new(io::ErrorKind::PermissionDenied, why)
        })
    }
}
