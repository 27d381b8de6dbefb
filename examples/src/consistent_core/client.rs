//! A small blocking RESP client for the Consistent Core, used by `synod kv` and tests.
// tidy: driver: opens sockets.
//!
//! [`Client`] talks to any node of a cluster (followers forward to the leader). With a
//! session ([`Client::register`]) a write that fails for any reason a retry can fix (the
//! connection dropped, the node answered `TRYAGAIN`) is resent, on this node or the next,
//! under the same session and sequence number, so it is applied once: the client side of
//! the Idempotent Receiver pattern.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::resp::{Limits, RespError, Value};

/// Why a call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// No node could be reached, or the deadline passed; the last error says why.
    Unavailable(String),
    /// The server sent something that is not RESP.
    Protocol(RespError),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unavailable(why) => write!(f, "cluster unavailable: {why}"),
            ClientError::Protocol(e) => write!(f, "bad reply from the server: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A connection to a cluster. See the module documentation.
#[derive(Debug)]
pub struct Client {
    addrs: Vec<String>,
    current: usize,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    session: Option<(u64, u64)>,
    /// A write in the session went unanswered: its sequence number is spent, so the next
    /// write opens a new session first.
    reregister: bool,
    /// How long one call may take, retries included.
    timeout: Duration,
}

fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    Value::Array(args.iter().map(|a| Value::Bulk(a.to_vec())).collect()).encode(&mut out);
    out
}

impl Client {
    /// A client of the nodes at `addrs` (RESP addresses); connects lazily.
    #[must_use]
    pub fn new(addrs: &[String]) -> Client {
        Client {
            addrs: addrs.to_vec(),
            current: 0,
            stream: None,
            buf: Vec::new(),
            session: None,
            reregister: false,
            timeout: Duration::from_secs(10),
        }
    }

    /// Sets how long one call may take, retries included.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The session id, once registered.
    #[must_use]
    pub fn session(&self) -> Option<u64> {
        self.session.map(|(id, _)| id)
    }

    fn connect(&mut self) -> io::Result<()> {
        if self.stream.is_some() {
            return Ok(());
        }
        let addr = self
            .addrs
            .get(self.current % self.addrs.len().max(1))
            .cloned();
        let addr = addr.ok_or_else(|| io::Error::other("no addresses"))?;
        let sock = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other(format!("{addr} does not resolve")))?;
        let stream = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let _ = stream.set_nodelay(true);
        self.stream = Some(stream);
        self.buf.clear();
        if let Some((id, seq)) = self.session {
            let reply = self.roundtrip(&[
                b"CLIENT",
                b"SESSION",
                id.to_string().as_bytes(),
                seq.to_string().as_bytes(),
            ])?;
            if let Value::Error(e) = reply {
                return Err(io::Error::other(e));
            }
        }
        Ok(())
    }

    fn roundtrip(&mut self, args: &[&[u8]]) -> io::Result<Value> {
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| io::Error::other("not connected"))?;
        stream.write_all(&encode(args))?;
        let limits = Limits {
            args_max: 1 << 20,
            ..Limits::default()
        };
        let mut chunk = [0u8; 16 << 10];
        loop {
            match Value::parse(&self.buf, &limits) {
                Ok(Some((value, used))) => {
                    self.buf.drain(..used);
                    return Ok(value);
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the node closed the connection",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn drop_connection(&mut self) {
        self.stream = None;
        self.current += 1;
    }

    /// Sends one command and returns the reply, retrying on another node while the
    /// connection fails or the reply is `TRYAGAIN`. Without a session, a write whose
    /// connection failed may be applied twice; with one, it is applied once. A write that
    /// fails for good (the timeout passed) may or may not have been applied; the next
    /// write then opens a new session, since the old sequence number is spent.
    ///
    /// # Errors
    ///
    /// [`ClientError::Unavailable`] once the timeout passes.
    pub fn call(&mut self, args: &[&[u8]]) -> Result<Value, ClientError> {
        let is_write = is_write(args);
        if is_write && self.reregister {
            self.reregister = false;
            self.register()?;
        }
        let deadline = Instant::now() + self.timeout;
        let mut last = String::new();
        loop {
            if Instant::now() >= deadline {
                if is_write && self.session.is_some() {
                    // The write's outcome is unknown; its number must not be reused for
                    // another command.
                    self.session = None;
                    self.reregister = true;
                }
                return Err(ClientError::Unavailable(last));
            }
            if let Err(e) = self.connect() {
                last = format!("{}: {e}", self.addrs[self.current % self.addrs.len()]);
                self.drop_connection();
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            match self.roundtrip(args) {
                Ok(Value::Error(e)) if e.starts_with("TRYAGAIN") => {
                    if e.contains("shutting down") {
                        // That node is going away: the next one, at once.
                        self.drop_connection();
                    } else {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    last = e;
                }
                Ok(value) => {
                    self.after(args, &value);
                    return Ok(value);
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    return Err(ClientError::Protocol(RespError::Malformed(
                        "unparsable reply",
                    )));
                }
                Err(e) => {
                    last = e.to_string();
                    self.drop_connection();
                }
            }
        }
    }

    fn after(&mut self, args: &[&[u8]], value: &Value) {
        let name = args
            .first()
            .map(|a| a.to_ascii_uppercase())
            .unwrap_or_default();
        let sub = args
            .get(1)
            .map(|a| a.to_ascii_uppercase())
            .unwrap_or_default();
        match (name.as_slice(), sub.as_slice(), value) {
            (b"CLIENT", b"REGISTER", Value::Int(id)) => self.session = Some((*id as u64, 1)),
            (b"CLIENT", b"UNREGISTER", _) => self.session = None,
            (b"SET" | b"DEL" | b"INCR" | b"DECR" | b"INCRBY" | b"CAS", _, v) => {
                if let Some((id, seq)) = self.session
                    && !matches!(v, Value::Error(e) if e.starts_with("SESSION"))
                {
                    self.session = Some((id, seq + 1));
                }
            }
            _ => {}
        }
    }

    /// Opens a session (closing none: an old one expires by itself), so that writes are applied once however often retried.
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; or an unexpected reply.
    pub fn register(&mut self) -> Result<u64, ClientError> {
        match self.call(&[b"CLIENT", b"REGISTER"])? {
            Value::Int(id) => Ok(id as u64),
            other => Err(ClientError::Unavailable(format!(
                "CLIENT REGISTER answered {other:?}"
            ))),
        }
    }
}

fn is_write(args: &[&[u8]]) -> bool {
    let name = args
        .first()
        .map(|a| a.to_ascii_uppercase())
        .unwrap_or_default();
    matches!(
        name.as_slice(),
        b"SET" | b"DEL" | b"INCR" | b"DECR" | b"INCRBY" | b"CAS"
    )
}
