//! Who may talk to a node: the users its clients authenticate as, and the cluster's secret
//! its peers prove they hold.
// tidy: driver: reads password, users and secret files, and draws from the OS random source.
//!
//! **Clients.** A node given `--password-file` has a *default* user, with that password and
//! every right (Redis's `requirepass`: `AUTH password`); one given `--users-file` has named
//! users, each read-write or read-only (Redis's ACL users: `AUTH user password`). Passwords
//! are kept only as salted SHA-256 digests (one round, as Redis's ACL keeps them) and
//! compared in constant time. One round on purpose: the passwords are meant to be random
//! (the README makes them from 18 random bytes), which a slow hash would not make safer,
//! and a slow hash would cost the client event loop tens of milliseconds per `AUTH`, for
//! anyone who connects to spend. The RESP side of
//! this (the commands, the errors, the delays after a failure) is
//! [`crate::resp::serve`]'s; the client loop ([`super::clients`]) closes a connection that
//! has not authenticated within `auth_timeout_ms` or after [`AUTH_BYTES_MAX`] bytes.
//!
//! The users file has one user a line; blank lines and lines starting with `#` are
//! skipped:
//!
//! ```text
//! # name   rights       password (sha256:SALT:HEX, HEX = SHA-256 of SALT then the password)
//! alice    read-write   sha256:4f1c0e...:9b2e...
//! reports  read-only    sha256:77aa01...:03fd...
//! ```
//!
//! `SALT` is any string without `:` or spaces (16 random bytes written in hex are plenty);
//! `HEX` is the SHA-256 digest, in lowercase hex, of the bytes of `SALT` followed by those of
//! the password. A line can be made with the shell:
//! `salt=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n');
//! printf 'alice read-write sha256:%s:%s\n' "$salt" "$(printf '%s%s' "$salt" "$password" | sha256sum | cut -d' ' -f1)"`.
//!
//! **Peers.** A node given `--peer-secret-file` proves to every peer, and has every peer
//! prove to it, that it holds the secret in that file (the same file on every member),
//! through synod-transport's challenge and response ([`PeerSecret`], HMAC-SHA256 over both
//! sides' fresh challenges from the operating system's random source, both node ids and
//! the cluster id). A peer that cannot is refused at the handshake, before any message it
//! sends is read, and logged with its address.
//!
//! **Open.** A node with neither (a client certificate checked by `--tls-client-auth`
//! counts for clients, [`super::tls`]; for peers only the secret counts, since any
//! certificate the CA signed with a member's name would pass as that member) says so in one
//! line at start, and refuses to listen open
//! on an address that is not a loopback one unless started with `--insecure-open`
//! ([`check_open`]): open is for trying Synod on one machine, or on a network where every
//! process that can reach the node is trusted.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use synod_transport::NodeId;
use synod_transport::handshake::{
    CHALLENGE_BYTES, Challenge, HandshakeError, PeerAuthenticator, Proof,
};

use super::{Connections, NodeOptions, StartError};

/// How long a new client connection has to authenticate, when a password is set, unless
/// configured otherwise ([`NodeOptions::auth_timeout_ms`]); then it is closed.
pub const AUTH_TIMEOUT_MS: u64 = 5_000;
/// Bytes a client connection may send before it has authenticated; past it, it is closed.
/// `AUTH` with a long user name and password is well under a kilobyte.
pub const AUTH_BYTES_MAX: usize = 4 << 10;
/// Failed authentications one connection may make; the reply to the last is sent and the
/// connection closed.
pub const AUTH_FAILURES_MAX: u32 = 5;
/// How long the reply to a connection's first failed authentication is held back; each
/// further failure doubles it, up to [`AUTH_FAILURE_DELAY_MS_MAX`]. The event loop holds
/// the reply on its timer (it never sleeps), and reads nothing more from that connection
/// meanwhile, so a guesser gets one try per delay per connection, and a handful of
/// connections.
pub const AUTH_FAILURE_DELAY_MS: u64 = 100;
/// The longest a failed authentication's reply is held back.
pub const AUTH_FAILURE_DELAY_MS_MAX: u64 = 1_600;
/// The longest password, secret or users file read.
pub const SECRET_FILE_BYTES_MAX: usize = 64 << 10;
/// The shortest cluster secret accepted, in bytes.
pub const PEER_SECRET_BYTES_MIN: usize = 16;
/// Named users in a users file.
pub const USERS_MAX: usize = 1024;
/// The name of the user `AUTH password` authenticates as, as in Redis.
pub const DEFAULT_USER: &str = "default";

/// What an authenticated client may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rights {
    /// Every command.
    ReadWrite,
    /// Every command that changes nothing (each system's command table says which change
    /// something); the others are answered with `NOPERM`.
    ReadOnly,
}

/// A password kept as the SHA-256 digest of a salt followed by the password. Two compare
/// equal in time that does not depend on where their digests differ.
#[derive(Clone)]
pub struct PasswordHash {
    salt: String,
    digest: [u8; 32],
}

impl PartialEq for PasswordHash {
    fn eq(&self, other: &Self) -> bool {
        // Both sides are looked at whole before either answer counts.
        let digests = same(&self.digest, &other.digest);
        digests & (self.salt == other.salt)
    }
}

impl Eq for PasswordHash {}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

impl fmt::Display for PasswordHash {
    /// The users file's form: `sha256:SALT:HEX`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}:", self.salt)?;
        for b in self.digest {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

fn digest(salt: &str, password: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(salt.as_bytes());
    hash.update(password);
    hash.finalize().into()
}

/// Whether two digests are equal, in time that does not depend on where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl PasswordHash {
    /// The hash of `password` with `salt` (no `:` or white space in it).
    ///
    /// # Errors
    ///
    /// If the salt is empty or holds `:` or white space.
    pub fn new(salt: &str, password: &[u8]) -> Result<PasswordHash, String> {
        if salt.is_empty() || salt.contains(|c: char| c == ':' || c.is_whitespace()) {
            return Err("a salt is a non-empty word without `:`".into());
        }
        Ok(PasswordHash {
            salt: salt.to_string(),
            digest: digest(salt, password),
        })
    }

    /// The hash of `password` with a fresh random salt.
    ///
    /// # Errors
    ///
    /// If the operating system's random source fails.
    pub fn with_random_salt(password: &[u8]) -> Result<PasswordHash, String> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| format!("the OS random source failed: {e}"))?;
        PasswordHash::new(&hex(&salt), password)
    }

    /// Reads the users file's form, `sha256:SALT:HEX`.
    ///
    /// # Errors
    ///
    /// What is wrong with it.
    pub fn parse(text: &str) -> Result<PasswordHash, String> {
        let mut parts = text.split(':');
        let (Some("sha256"), Some(salt), Some(hex_digest), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("a password is written sha256:SALT:HEX".into());
        };
        let bytes = unhex(hex_digest).ok_or("HEX is 64 hexadecimal digits")?;
        let digest: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "HEX is 64 hexadecimal digits")?;
        let mut hash = PasswordHash::new(salt, b"")?;
        hash.digest = digest;
        Ok(hash)
    }

    /// Whether `password` is this one (compared in constant time).
    #[must_use]
    pub fn matches(&self, password: &[u8]) -> bool {
        same(&digest(&self.salt, password), &self.digest)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// The users a node's clients authenticate as: an optional default user (every right) and
/// named users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAuth {
    users: BTreeMap<String, (Rights, PasswordHash)>,
    /// Compared against when the user named is unknown, so that an unknown user takes as
    /// long to refuse as a wrong password.
    decoy: PasswordHash,
}

impl ClientAuth {
    /// Users from a default password (if any) and the text of a users file (if any).
    ///
    /// # Errors
    ///
    /// What is wrong, with the line: a malformed line, a user named twice, no user at all.
    pub fn new(default_password: Option<&[u8]>, users: Option<&str>) -> Result<ClientAuth, String> {
        let mut table = BTreeMap::new();
        if let Some(password) = default_password {
            table.insert(
                DEFAULT_USER.to_string(),
                (Rights::ReadWrite, PasswordHash::with_random_salt(password)?),
            );
        }
        for (n, line) in users.unwrap_or_default().lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |e: String| format!("line {}: {e}", n + 1);
            let words: Vec<&str> = line.split_whitespace().collect();
            let [name, rights, password] = words[..] else {
                return Err(at(
                    "a user is `NAME read-write|read-only sha256:SALT:HEX`".into()
                ));
            };
            let rights = match rights {
                "read-write" => Rights::ReadWrite,
                "read-only" => Rights::ReadOnly,
                other => {
                    return Err(at(format!(
                        "rights are read-write or read-only, not `{other}`"
                    )));
                }
            };
            let password = PasswordHash::parse(password).map_err(at)?;
            if table.insert(name.to_string(), (rights, password)).is_some() {
                return Err(at(format!(
                    "user `{name}` is defined twice (the default user's password comes from --password-file)"
                )));
            }
            if table.len() > USERS_MAX {
                return Err(at(format!("more than {USERS_MAX} users")));
            }
        }
        if table.is_empty() {
            return Err("no user: the users file names none".into());
        }
        Ok(ClientAuth {
            users: table,
            decoy: PasswordHash::with_random_salt(b"")?,
        })
    }

    /// The user `user` (the default user if `None`) with `password`, and its rights; `None`
    /// for an unknown user or a wrong password (which take the same time).
    #[must_use]
    pub fn authenticate(&self, user: Option<&[u8]>, password: &[u8]) -> Option<(String, Rights)> {
        let name = user.map_or(DEFAULT_USER.as_bytes(), |u| u);
        let found = std::str::from_utf8(name)
            .ok()
            .and_then(|n| self.users.get_key_value(n));
        match found {
            Some((name, (rights, hash))) if hash.matches(password) => Some((name.clone(), *rights)),
            Some(_) => None,
            None => {
                let _ = self.decoy.matches(password);
                None
            }
        }
    }

    /// The users `options` name (`--password-file`, `--users-file`), read from their files;
    /// `None` if neither is given (clients are not asked to authenticate).
    ///
    /// # Errors
    ///
    /// [`StartError::Usage`] naming the file and what is wrong with it.
    pub fn load(options: &NodeOptions) -> Result<Option<Arc<ClientAuth>>, StartError> {
        if options.password_file_path().is_none() && options.users_file_path().is_none() {
            return Ok(None);
        }
        let password = match options.password_file_path() {
            Some(path) => Some(read_secret(path, "--password-file")?),
            None => None,
        };
        let users = match options.users_file_path() {
            Some(path) => {
                let bytes = read_file(path, "--users-file")?;
                Some(String::from_utf8(bytes).map_err(|_| {
                    StartError::Usage(format!("--users-file {}: not UTF-8 text", path.display()))
                })?)
            }
            None => None,
        };
        ClientAuth::new(password.as_deref(), users.as_deref())
            .map(|a| Some(Arc::new(a)))
            .map_err(|e| match options.users_file_path() {
                Some(file) => StartError::Usage(format!("--users-file {}: {e}", file.display())),
                None => StartError::Usage(format!("--password-file: {e}")),
            })
    }
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, StartError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| StartError::Usage(format!("{what} {}: {e}", path.display())))?;
    if meta.len() > SECRET_FILE_BYTES_MAX as u64 {
        return Err(StartError::Usage(format!(
            "{what} {}: longer than {SECRET_FILE_BYTES_MAX} bytes",
            path.display()
        )));
    }
    std::fs::read(path).map_err(|e| StartError::Usage(format!("{what} {}: {e}", path.display())))
}

/// A password or secret file's contents: its bytes without one trailing line end.
fn read_secret(path: &Path, what: &str) -> Result<Vec<u8>, StartError> {
    let mut bytes = read_file(path, what)?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(StartError::Usage(format!(
            "{what} {}: empty",
            path.display()
        )));
    }
    Ok(bytes)
}

/// The cluster's secret, proved to peers with HMAC-SHA256: synod-transport's
/// [`PeerAuthenticator`] for `synod node`.
pub struct PeerSecret {
    key: Vec<u8>,
    node: u64,
}

impl fmt::Debug for PeerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerSecret")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl PeerSecret {
    /// A secret for node `node` (named in its log lines).
    ///
    /// # Errors
    ///
    /// If the secret is shorter than [`PEER_SECRET_BYTES_MIN`], or the operating system's
    /// random source does not work.
    pub fn new(secret: &[u8], node: u64) -> Result<PeerSecret, String> {
        if secret.len() < PEER_SECRET_BYTES_MIN {
            return Err(format!(
                "the secret is {} bytes; at least {PEER_SECRET_BYTES_MIN} (32 random bytes are good: head -c 32 /dev/urandom | base64)",
                secret.len()
            ));
        }
        let mut probe = [0u8; CHALLENGE_BYTES];
        getrandom::fill(&mut probe).map_err(|e| format!("the OS random source failed: {e}"))?;
        Ok(PeerSecret {
            key: secret.to_vec(),
            node,
        })
    }

    /// The secret `--peer-secret-file` names, if it is given.
    ///
    /// # Errors
    ///
    /// [`StartError::Usage`] naming the file and what is wrong with it.
    pub fn load(options: &NodeOptions) -> Result<Option<Arc<PeerSecret>>, StartError> {
        let Some(path) = options.peer_secret_file_path() else {
            return Ok(None);
        };
        let secret = read_secret(path, "--peer-secret-file")?;
        PeerSecret::new(&secret, options.id())
            .map(|s| Some(Arc::new(s)))
            .map_err(|e| StartError::Usage(format!("--peer-secret-file {}: {e}", path.display())))
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length: this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length")
    }
}

impl PeerAuthenticator for PeerSecret {
    fn challenge(&self) -> Challenge {
        let mut bytes = [0u8; CHALLENGE_BYTES];
        if let Err(e) = getrandom::fill(&mut bytes) {
            // Without fresh challenges a recorded handshake could be replayed: stop.
            super::fail_stop(&format!("the OS random source failed: {e}"));
        }
        Challenge(bytes)
    }

    fn prove(&self, transcript: &[u8]) -> Proof {
        let mut mac = self.mac();
        mac.update(transcript);
        Proof(mac.finalize().into_bytes().into())
    }

    fn verify(&self, transcript: &[u8], proof: &Proof) -> bool {
        let mut mac = self.mac();
        mac.update(transcript);
        mac.verify_slice(&proof.0).is_ok()
    }

    fn refused(&self, remote: Option<SocketAddr>, peer: NodeId, why: &HandshakeError) {
        let at = remote.map_or_else(|| "an unknown address".to_string(), |a| a.to_string());
        super::refusals::REFUSALS.log(&format!(
            "synod node {}: refused a connection from {at} claiming to be node {}: {why}",
            self.node,
            peer.get()
        ));
    }
}

/// The client connection table of a node started with `options`: its limits, the users its
/// clients authenticate as, and TLS when on ([`NodeOptions::with_tls`]).
///
/// # Errors
///
/// [`StartError::Usage`] if the password or users file cannot be used.
pub fn client_connections(options: &NodeOptions) -> Result<Arc<Connections>, StartError> {
    let connections =
        Connections::new(options.client_limits()).with_auth(ClientAuth::load(options)?);
    Ok(Arc::new(match options.tls() {
        Some(tls) => connections.with_tls(tls.clients()),
        None => connections,
    }))
}

fn is_loopback(addr: &str) -> bool {
    addr.to_socket_addrs()
        .map(|mut all| all.all(|a| a.ip().is_loopback()))
        .unwrap_or(false)
}

/// Checks what `options` leave open: refuses to listen open (no client password, or no
/// peer secret) on an address that is not a loopback one unless `--insecure-open` is given,
/// and says in one line on standard error what runs open. A client certificate checked by
/// `--tls-client-auth` counts as a client's authentication; for peers only the secret
/// counts. TLS checks that a peer's certificate was signed by the CA given and names the
/// member it claims to be (`node-ID.synod`), but a certificate names a node id, not a
/// cluster: a CA that signs for more than one cluster (an organisation's, or one reused for
/// a test cluster) makes node 2 of any of them pass as node 2 of this one, and so does a
/// certificate signed by mistake. The secret is this cluster's alone, so mutual TLS without
/// it still counts as open to peers.
///
/// # Errors
///
/// [`StartError::Usage`] saying what to set.
pub fn check_open(options: &NodeOptions) -> Result<(), StartError> {
    let tls = options.tls().map(super::tls::NodeTls::files);
    let clients_open = options.password_file_path().is_none()
        && options.users_file_path().is_none()
        && !tls.is_some_and(|f| f.client_auth);
    let peers_open = options.peer_secret_file_path().is_none();
    if !options.is_insecure_open() {
        if clients_open && !is_loopback(options.client_addr()) {
            return Err(StartError::Usage(format!(
                "--client {} is not a loopback address, and no client password is set: anyone who reaches it could read and write every key. Give --password-file, --users-file or --tls-client-auth, or --insecure-open to run open on purpose",
                options.client_addr()
            )));
        }
        if peers_open && !is_loopback(options.listen_addr()) {
            return Err(StartError::Usage(format!(
                "--listen {} is not a loopback address, and no --peer-secret-file is set: anyone who reaches it (with TLS on, anyone holding a certificate the CA signed with a member's name) could speak as a member. Give --peer-secret-file (the same file on every member), or --insecure-open to run open on purpose",
                options.listen_addr()
            )));
        }
    }
    let open: Vec<&str> = [
        (
            clients_open,
            "clients need no password (--password-file, --users-file)",
        ),
        (peers_open, "peers prove no secret (--peer-secret-file)"),
    ]
    .into_iter()
    .filter_map(|(open, what)| open.then_some(what))
    .collect();
    if !open.is_empty() {
        eprintln!(
            "synod node {}: warning: running open: {}; fine on one machine or a trusted network only",
            options.id(),
            open.join(", and ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &str, rights: &str, password: &str) -> String {
        let hash = PasswordHash::new("s4lt", password.as_bytes()).expect("a salt");
        format!("{name} {rights} {hash}\n")
    }

    #[test]
    fn users_authenticate_with_their_password_only_and_get_their_rights() {
        let text = format!(
            "# users\n\n{}{}",
            line("alice", "read-write", "wonderland"),
            line("bob", "read-only", "builder")
        );
        let auth = ClientAuth::new(Some(b"topsecret"), Some(&text)).expect("valid");
        assert_eq!(
            auth.authenticate(None, b"topsecret"),
            Some((DEFAULT_USER.into(), Rights::ReadWrite))
        );
        assert_eq!(
            auth.authenticate(Some(b"alice"), b"wonderland"),
            Some(("alice".into(), Rights::ReadWrite))
        );
        assert_eq!(
            auth.authenticate(Some(b"bob"), b"builder"),
            Some(("bob".into(), Rights::ReadOnly))
        );
        assert_eq!(auth.authenticate(Some(b"bob"), b"wonderland"), None);
        assert_eq!(auth.authenticate(None, b"topsecre"), None);
        assert_eq!(auth.authenticate(Some(b"carol"), b"builder"), None);
        assert_eq!(auth.authenticate(Some(&[0xFF, 0xFE]), b"x"), None);
        // The form written is the form read.
        let hash = PasswordHash::new("abc", b"pw").expect("a salt");
        assert_eq!(PasswordHash::parse(&hash.to_string()), Ok(hash));
    }

    #[test]
    fn a_bad_users_file_is_refused_with_its_line() {
        for (text, says) in [
            ("alice read-write", "line 1"),
            ("alice admin sha256:s:00", "rights"),
            ("alice read-only md5:x:y", "sha256:SALT:HEX"),
            ("alice read-only sha256:s:abcd", "64 hexadecimal"),
            ("alice read-only sha256:s:zz", "64 hexadecimal"),
        ] {
            let err = ClientAuth::new(None, Some(text)).expect_err(text);
            assert!(err.contains(says), "{text}: {err}");
        }
        let twice = format!(
            "{}{}",
            line("a", "read-only", "x"),
            line("a", "read-write", "y")
        );
        assert!(ClientAuth::new(None, Some(&twice)).is_err());
        assert!(ClientAuth::new(None, Some("# nobody\n")).is_err());
    }

    #[test]
    fn peers_prove_the_secret_with_hmac_sha256() {
        let a = PeerSecret::new(b"0123456789abcdef", 1).expect("long enough");
        let b = PeerSecret::new(b"0123456789abcdef", 2).expect("long enough");
        let c = PeerSecret::new(b"0123456789abcdeF", 3).expect("long enough");
        assert!(PeerSecret::new(b"short", 1).is_err());
        assert_ne!(a.challenge(), a.challenge());
        let proof = a.prove(b"transcript");
        assert!(b.verify(b"transcript", &proof));
        assert!(!b.verify(b"transcripT", &proof));
        assert!(!c.verify(b"transcript", &proof));
    }
}
