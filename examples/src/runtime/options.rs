//! How to run one node of any system: [`NodeOptions`], and [`StartError`], why a node did
//! not start.
// tidy: driver: resolves the addresses it is given.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::auth::AUTH_TIMEOUT_MS;
use super::clients::ClientLimits;
use super::tls::{NodeTls, TlsFiles};

/// Open client connections, unless configured otherwise
/// ([`NodeOptions::client_connections_max`]); past it a new connection is sent an error and
/// closed, as Redis does past `maxclients` (whose default this is). Connections share one
/// event loop: an idle one costs its socket and a few hundred bytes, no thread.
pub const CLIENT_CONNECTIONS_MAX: usize = 10_000;
/// How long a client connection may sit without sending a byte, or without taking a byte
/// of its replies, before the node closes it, unless configured otherwise
/// ([`NodeOptions::client_idle_timeout_ms`]). Redis never closes an idle client by default
/// (its `timeout` is 0) and probes it with TCP keep-alives every 300 s; here the idle one is
/// closed after the same five minutes: long enough that no interactive user or pooled
/// client in use is cut off (pools dial again), short enough that connections of clients
/// gone without a word (a host that crashed, a pool that leaked) do not pile up against
/// the connection limit.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// The tick length unless configured otherwise ([`NodeOptions::tick_ms`]).
pub const TICK_MS_DEFAULT: u64 = 50;

/// The longest cluster name `--cluster` takes, in bytes.
pub const CLUSTER_NAME_BYTES_MAX: usize = 255;

/// Why a node did not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// A command-line value is wrong; the text says which and how.
    Usage(String),
    /// The data directory belongs to another node or cluster.
    ForeignDataDir(String),
    /// An address could not be bound.
    Bind {
        /// What it was for (`--listen` or `--client`).
        what: &'static str,
        /// The address.
        addr: String,
        /// The error.
        error: io::Error,
    },
    /// The data directory could not be read or written.
    DataDir {
        /// The directory.
        dir: PathBuf,
        /// The error.
        error: String,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Usage(m) | StartError::ForeignDataDir(m) => f.write_str(m),
            StartError::Bind { what, addr, error } if error.kind() == io::ErrorKind::AddrInUse => {
                write!(
                    f,
                    "{what} {addr}: the address is already in use (another synod node, or another program?); pick a free port"
                )
            }
            StartError::Bind { what, addr, error } => write!(f, "{what} {addr}: {error}"),
            StartError::DataDir { dir, error } => {
                write!(f, "data directory {}: {error}", dir.display())
            }
        }
    }
}

impl std::error::Error for StartError {}

/// How to run one node, whatever the system: its identity, addresses, cluster, data
/// directory, tick, client limits, and who may talk to it (passwords, the peer secret). A system's own settings come alongside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeOptions {
    id: u64,
    listen: String,
    client: String,
    peers: BTreeMap<u64, String>,
    data_dir: PathBuf,
    tick_ms: u64,
    client_connections_max: usize,
    client_idle_timeout_ms: u64,
    password_file: Option<PathBuf>,
    users_file: Option<PathBuf>,
    peer_secret_file: Option<PathBuf>,
    insecure_open: bool,
    auth_timeout_ms: u64,
    tls: Option<NodeTls>,
    /// The cluster's name, if one was given (see [`NodeOptions::cluster_name`]).
    cluster_name: Option<String>,
}

impl NodeOptions {
    /// Checks and builds the options. `peers` is `ID=ADDR,...` naming every member,
    /// this node included; `client` is where clients connect (default: the
    /// `listen` host with the port minus 1000, so 7001 serves clients on 6001).
    ///
    /// # Errors
    ///
    /// [`StartError::Usage`] with what to fix.
    pub fn new(
        id: u64,
        listen: &str,
        client: Option<&str>,
        peers: &str,
        data_dir: &Path,
    ) -> Result<NodeOptions, StartError> {
        if id == 0 {
            return Err(StartError::Usage("--id must be at least 1".into()));
        }
        let mut map = BTreeMap::new();
        for part in peers.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (pid, addr) = part.split_once('=').ok_or_else(|| {
                StartError::Usage(format!(
                    "--peers: `{part}` is not ID=ADDR (example: --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003)"
                ))
            })?;
            let pid: u64 = pid.trim().parse().ok().filter(|&p| p > 0).ok_or_else(|| {
                StartError::Usage(format!("--peers: `{pid}` is not a node id (1, 2, ...)"))
            })?;
            if map.insert(pid, addr.trim().to_string()).is_some() {
                return Err(StartError::Usage(format!(
                    "--peers: node {pid} is listed twice"
                )));
            }
        }
        if !map.contains_key(&id) {
            return Err(StartError::Usage(format!(
                "--peers does not include this node (--id {id}); list every member, this one too, as ID=ADDR"
            )));
        }
        let client = match client {
            Some(c) => c.to_string(),
            None => {
                let addr = listen
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| {
                        StartError::Usage(format!("--listen {listen} is not an address"))
                    })?;
                let port = addr
                    .port()
                    .checked_sub(1000)
                    .filter(|&p| p > 0)
                    .ok_or_else(|| {
                        StartError::Usage(
                            "--listen port below 1001: give --client explicitly".into(),
                        )
                    })?;
                SocketAddr::new(addr.ip(), port).to_string()
            }
        };
        Ok(NodeOptions {
            id,
            listen: listen.to_string(),
            client,
            peers: map,
            data_dir: data_dir.to_path_buf(),
            tick_ms: TICK_MS_DEFAULT,
            client_connections_max: CLIENT_CONNECTIONS_MAX,
            client_idle_timeout_ms: CLIENT_IDLE_TIMEOUT.as_millis() as u64,
            password_file: None,
            users_file: None,
            peer_secret_file: None,
            insecure_open: false,
            auth_timeout_ms: AUTH_TIMEOUT_MS,
            tls: None,
            cluster_name: None,
        })
    }

    /// Names the cluster, as etcd's `--initial-cluster-token` does: the cluster id
    /// ([`NodeOptions::cluster_id`]) is then drawn from the name instead of from the
    /// `--peers` list, so a node that joins a running cluster with one more peer than its
    /// members were started with is one of them. `None` keeps the id drawn from the peers.
    ///
    /// # Errors
    ///
    /// [`StartError::Usage`] if the name is empty or longer than [`CLUSTER_NAME_BYTES_MAX`].
    pub fn cluster_name(mut self, name: Option<String>) -> Result<NodeOptions, StartError> {
        if let Some(name) = &name
            && (name.is_empty() || name.len() > CLUSTER_NAME_BYTES_MAX)
        {
            return Err(StartError::Usage(format!(
                "--cluster must be 1 to {CLUSTER_NAME_BYTES_MAX} bytes, not {}",
                name.len()
            )));
        }
        self.cluster_name = name;
        Ok(self)
    }

    /// Sets the tick length (default [`TICK_MS_DEFAULT`], at least 1 ms).
    #[must_use]
    pub fn tick_ms(mut self, tick_ms: u64) -> NodeOptions {
        self.tick_ms = tick_ms.max(1);
        self
    }

    /// Sets how many client connections may be open at once (default
    /// [`CLIENT_CONNECTIONS_MAX`], at least 1).
    #[must_use]
    pub fn client_connections_max(mut self, connections: usize) -> NodeOptions {
        self.client_connections_max = connections.max(1);
        self
    }

    /// Sets how long a client connection may wait on its client before it is closed
    /// (default [`CLIENT_IDLE_TIMEOUT`]); 0 never closes one.
    #[must_use]
    pub fn client_idle_timeout_ms(mut self, ms: u64) -> NodeOptions {
        self.client_idle_timeout_ms = ms;
        self
    }

    /// Sets the file holding the default user's password (`AUTH password`): clients must
    /// authenticate ([`super::auth`]).
    #[must_use]
    pub fn password_file(mut self, path: Option<PathBuf>) -> NodeOptions {
        self.password_file = path;
        self
    }

    /// Sets the file of named users, read-write or read-only (`AUTH user password`); its
    /// format is in [`super::auth`].
    #[must_use]
    pub fn users_file(mut self, path: Option<PathBuf>) -> NodeOptions {
        self.users_file = path;
        self
    }

    /// Sets the file holding the cluster's secret, the same on every member: peers prove
    /// they hold it at the handshake ([`super::auth::PeerSecret`]).
    #[must_use]
    pub fn peer_secret_file(mut self, path: Option<PathBuf>) -> NodeOptions {
        self.peer_secret_file = path;
        self
    }

    /// Lets a node without a client password or a peer secret listen on an address that is
    /// not a loopback one ([`super::auth::check_open`]).
    #[must_use]
    pub fn insecure_open(mut self, open: bool) -> NodeOptions {
        self.insecure_open = open;
        self
    }

    /// Sets how long a client connection has to authenticate before it is closed (default
    /// [`AUTH_TIMEOUT_MS`], at least 1 ms).
    #[must_use]
    pub fn auth_timeout_ms(mut self, ms: u64) -> NodeOptions {
        self.auth_timeout_ms = ms.max(1);
        self
    }

    /// The default user's password file, if any.
    #[must_use]
    pub fn password_file_path(&self) -> Option<&Path> {
        self.password_file.as_deref()
    }

    /// The users file, if any.
    #[must_use]
    pub fn users_file_path(&self) -> Option<&Path> {
        self.users_file.as_deref()
    }

    /// The cluster's secret file, if any.
    #[must_use]
    pub fn peer_secret_file_path(&self) -> Option<&Path> {
        self.peer_secret_file.as_deref()
    }

    /// Whether the node may listen open on an address that is not a loopback one.
    #[must_use]
    pub fn is_insecure_open(&self) -> bool {
        self.insecure_open
    }

    /// Turns TLS on for both ports with the certificates in `files`: the client port speaks
    /// TLS only, and peers authenticate each other with certificates of the CA in
    /// `files.ca` (see [`super::tls`]). Every member must be given the same CA.
    ///
    /// # Errors
    ///
    /// [`StartError::Usage`] naming the file that cannot be used, and why.
    pub fn with_tls(mut self, files: TlsFiles) -> Result<NodeOptions, StartError> {
        let tls = NodeTls::load(files, self.id, &self.peers)
            .map_err(|e| StartError::Usage(format!("TLS: {e}")))?;
        self.tls = Some(tls);
        Ok(self)
    }

    /// The node's TLS, when on.
    #[must_use]
    pub fn tls(&self) -> Option<&NodeTls> {
        self.tls.as_ref()
    }

    /// This node's id.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The client address.
    #[must_use]
    pub fn client_addr(&self) -> &str {
        &self.client
    }

    /// The address peers connect to.
    #[must_use]
    pub fn listen_addr(&self) -> &str {
        &self.listen
    }

    /// Every member, this node included, with its peer address.
    #[must_use]
    pub fn peers(&self) -> &BTreeMap<u64, String> {
        &self.peers
    }

    /// The data directory.
    #[must_use]
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The tick length.
    #[must_use]
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }

    /// The limits on client connections.
    #[must_use]
    pub fn client_limits(&self) -> ClientLimits {
        ClientLimits {
            auth_timeout: Duration::from_millis(self.auth_timeout_ms),
            ..ClientLimits::with_connections(
                self.client_connections_max,
                (self.client_idle_timeout_ms > 0)
                    .then(|| Duration::from_millis(self.client_idle_timeout_ms)),
            )
        }
    }

    /// A number naming the cluster: nodes configured with different clusters refuse each
    /// other at the transport handshake. Drawn from the cluster's name if it was given
    /// ([`NodeOptions::cluster_name`]), else from the `--peers` list.
    #[must_use]
    pub fn cluster_id(&self) -> u64 {
        // FNV-1a over the name, or over the members, ids and addresses: nodes configured
        // with different clusters (even two clusters numbered 1, 2, 3, on other addresses)
        // refuse each other at the transport handshake. A tag byte first keeps a name from
        // ever hashing as a peer list does.
        let fnv = |h: u64, b: u8| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        let start: u64 = 0xcbf2_9ce4_8422_2325;
        match &self.cluster_name {
            Some(name) => std::iter::once(b'N').chain(name.bytes()).fold(start, fnv),
            None => self.peers.iter().fold(start, |h, (id, addr)| {
                id.to_le_bytes()
                    .into_iter()
                    .chain(addr.bytes())
                    .chain(*b"\n")
                    .fold(h, fnv)
            }),
        }
    }

    /// What the identity file of this node's data directory says.
    pub(crate) fn identity(&self) -> String {
        let members: Vec<String> = self.peers.keys().map(u64::to_string).collect();
        format!("node={}\nmembers={}\n", self.id, members.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(id: u64, peers: &str) -> NodeOptions {
        NodeOptions::new(id, "127.0.0.1:7001", None, peers, Path::new("/tmp/x")).expect("valid")
    }

    const THREE: &str = "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003";
    const FOUR: &str = "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003,4=127.0.0.1:7004";

    #[test]
    fn without_a_name_the_peer_list_names_the_cluster() {
        assert_eq!(
            options(1, THREE).cluster_id(),
            options(2, THREE).cluster_id()
        );
        // A node listing one more peer is of another cluster, and is refused.
        assert_ne!(
            options(1, THREE).cluster_id(),
            options(4, FOUR).cluster_id()
        );
    }

    #[test]
    fn a_named_cluster_takes_a_joiner_with_a_longer_peer_list_and_no_other_name() {
        let named = |id, peers, name: &str| {
            options(id, peers)
                .cluster_name(Some(name.to_string()))
                .expect("a valid name")
                .cluster_id()
        };
        assert_eq!(named(1, THREE, "ll"), named(4, FOUR, "ll"));
        assert_ne!(named(1, THREE, "ll"), named(1, THREE, "other"));
        assert_ne!(named(1, THREE, "ll"), options(1, THREE).cluster_id());
    }

    #[test]
    fn an_empty_or_overlong_cluster_name_is_a_usage_error() {
        for name in [String::new(), "x".repeat(CLUSTER_NAME_BYTES_MAX + 1)] {
            match options(1, THREE).cluster_name(Some(name)) {
                Err(StartError::Usage(why)) => assert!(why.contains("--cluster"), "{why}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
