//! The client side of RESP: one blocking connection to a server, commands sent and
//! replies read under limits.
// tidy: driver: opens sockets.
//!
//! [`Connection`] knows RESP and nothing of what the commands mean: a system's client
//! (the Consistent Core's [`crate::consistent_core::client::Client`], with its sessions and
//! retries) is built on it.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::{Limits, Value};

/// How long [`Connection::open`] waits for the server to accept.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a read waits for a reply unless set otherwise
/// ([`Connection::set_read_timeout`]).
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The limits the client reads replies under ([`Value::parse`]): bulk strings of at most
/// 1 MiB (as values are), and up to 2^20 elements in an array (a long `SCAN` or `MGET`).
#[must_use]
pub fn reply_limits() -> Limits {
    Limits {
        args_max: 1 << 20,
        ..Limits::default()
    }
}

/// The addresses in `list`, comma-separated as `--addr` takes them (`HOST:PORT,...`),
/// blanks dropped.
#[must_use]
pub fn address_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect()
}

/// Encodes a command as clients send it: an array of bulk strings.
#[must_use]
pub fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    Value::Array(args.iter().map(|a| Value::Bulk(a.to_vec())).collect()).encode(&mut out);
    out
}

/// Who a client authenticates as: a user (the default user if `None`) and its password.
///
/// It has no `==`: a derived one would stop at the first byte of the password that differs,
/// and nothing needs to compare two (tidy's rule 5 keeps it so).
#[derive(Clone)]
pub struct Credentials {
    /// The user; `None` for the default user (`AUTH password`).
    pub user: Option<String>,
    /// The password.
    pub password: Vec<u8>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The credentials of this program, set once at start (by `synod kv --user
/// --password-file`, or `synod demo`): every [`Connection::open`] authenticates with them.
static PROGRAM_CREDENTIALS: OnceLock<Credentials> = OnceLock::new();

/// Sets the credentials every [`Connection::open`] of this program authenticates with
/// (once; a second call is ignored).
pub fn set_program_credentials(credentials: Credentials) {
    let _ = PROGRAM_CREDENTIALS.set(credentials);
}

/// The credentials set with [`set_program_credentials`], if any.
#[must_use]
pub fn program_credentials() -> Option<&'static Credentials> {
    PROGRAM_CREDENTIALS.get()
}

/// The TLS every [`Connection`] of this process speaks, once set ([`use_tls`]).
static TLS: OnceLock<Arc<ClientConfig>> = OnceLock::new();

/// Makes every [`Connection`] opened from now on speak TLS with `config` (`synod kv
/// --tls`); the server's certificate must name the host connected to. A second call is
/// ignored.
pub fn use_tls(config: Arc<ClientConfig>) {
    let _ = TLS.set(config);
}

/// A connection's bytes: plain, or TLS.
#[derive(Debug)]
enum Wire {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Wire {
    fn socket(&self) -> &TcpStream {
        match self {
            Wire::Plain(s) => s,
            Wire::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(s) => s.read(buf),
            Wire::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(s) => s.write(buf),
            Wire::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Wire::Plain(s) => s.flush(),
            Wire::Tls(s) => s.flush(),
        }
    }
}

/// One connection to a RESP server.
#[derive(Debug)]
pub struct Connection {
    stream: Wire,
    /// Bytes received and not yet parsed into a reply.
    buf: Vec<u8>,
}

impl Connection {
    /// Connects to `addr` (waiting at most [`CONNECT_TIMEOUT`]) and authenticates with the
    /// program's credentials, if it has any ([`set_program_credentials`]); replies are
    /// waited for at most [`READ_TIMEOUT`].
    ///
    /// # Errors
    ///
    /// If `addr` does not resolve, the connection fails, or the credentials are refused.
    pub fn open(addr: &str) -> io::Result<Connection> {
        Connection::open_as(addr, program_credentials())
    }

    /// Like [`Connection::open`], authenticating with `credentials` (if `Some`).
    ///
    /// # Errors
    ///
    /// If `addr` does not resolve, the connection fails, or the server refuses the
    /// credentials (`PermissionDenied`, with its reply).
    pub fn open_as(addr: &str, credentials: Option<&Credentials>) -> io::Result<Connection> {
        let mut connection = Connection::connect(addr)?;
        if let Some(c) = credentials {
            let reply = match &c.user {
                Some(user) => connection.roundtrip(&[b"AUTH", user.as_bytes(), &c.password])?,
                None => connection.roundtrip(&[b"AUTH", &c.password])?,
            };
            if let Value::Error(e) = reply {
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, e));
            }
        }
        Ok(connection)
    }

    fn connect(addr: &str) -> io::Result<Connection> {
        let sock = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other(format!("{addr} does not resolve")))?;
        let stream = TcpStream::connect_timeout(&sock, CONNECT_TIMEOUT)?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        let _ = stream.set_nodelay(true);
        let stream = match TLS.get() {
            None => Wire::Plain(stream),
            Some(config) => {
                let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
                let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let session =
                    ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
                Wire::Tls(Box::new(StreamOwned::new(session, stream)))
            }
        };
        Ok(Connection {
            stream,
            buf: Vec::new(),
        })
    }

    /// Sets how long a read waits for a reply.
    ///
    /// # Errors
    ///
    /// The socket's.
    pub fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.stream.socket().set_read_timeout(Some(timeout))
    }

    /// Sends one command, whole or not at all as far as a server can tell (a server never
    /// runs half a command).
    ///
    /// # Errors
    ///
    /// The write's.
    pub fn send(&mut self, args: &[&[u8]]) -> io::Result<()> {
        self.stream.write_all(&encode_command(args))?;
        self.stream.flush()
    }

    /// Reads the next reply.
    ///
    /// # Errors
    ///
    /// `InvalidData` for bytes that are not RESP (or past [`reply_limits`]),
    /// `UnexpectedEof` if the server closed the connection, or the read's error.
    pub fn receive(&mut self) -> io::Result<Value> {
        let limits = reply_limits();
        // Large reads: a reply is checked for completeness after each one, so a large
        // reply of many small values costs a walk over them per read.
        let mut chunk = vec![0u8; 256 << 10];
        loop {
            match Value::parse(&self.buf, &limits) {
                Ok(Some((value, used))) => {
                    self.buf.drain(..used);
                    return Ok(value);
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the node closed the connection",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends one command and reads its reply.
    ///
    /// # Errors
    ///
    /// As [`Connection::send`] and [`Connection::receive`].
    pub fn roundtrip(&mut self, args: &[&[u8]]) -> io::Result<Value> {
        self.send(args)?;
        self.receive()
    }
}
