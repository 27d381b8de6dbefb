//! The server side of a RESP connection: commands read, run through a system's command
//! table, and their replies written, with bounded buffers.
// tidy: driver: reads and writes a client's connection.
//!
//! [`serve`] runs one connection for any system: the system supplies its [`Commands`]
//! (a per-connection state and what each command does), and the runtime's [`ClientConn`]
//! carries the bytes (with the idle timeout and the connection table). A command the codec
//! refuses is answered with the error and closes the connection (a RESP stream cannot be
//! resynchronised).

use std::io;

use super::{CommandParser, Limits, Value};
use crate::runtime::ClientConn;

/// Replies to a client's pipelined commands are written once this many bytes wait, and a
/// connection's buffers are shrunk back to it after a large request or reply, so that one
/// connection holds about one command and one reply, whatever a client pipelines.
pub const CLIENT_BUFFER_BYTES: usize = 64 << 10;

/// A system's command table, as a RESP connection runs it.
pub trait Commands {
    /// What a connection remembers between commands (its session, its read mode...).
    type Conn: Default;

    /// Runs one command (never empty): its reply, and whether to close the connection
    /// after sending it.
    fn run(&self, conn: &mut Self::Conn, args: &[Vec<u8>]) -> Reply;
}

/// The answer to one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// What the client is sent.
    pub value: Value,
    /// Whether the connection is closed once it is sent.
    pub close: bool,
}

impl Reply {
    /// A reply that leaves the connection open.
    #[must_use]
    pub fn open(value: Value) -> Reply {
        Reply {
            value,
            close: false,
        }
    }

    /// A reply after which the connection is closed.
    #[must_use]
    pub fn close(value: Value) -> Reply {
        Reply { value, close: true }
    }
}

/// Serves RESP on `conn` with `commands` until the client leaves, a reply closes the
/// connection, or the stream is not RESP.
///
/// # Errors
///
/// The I/O error that ended the connection.
pub fn serve<C: Commands>(commands: &C, conn: &mut ClientConn) -> io::Result<()> {
    let limits = Limits::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 16 << 10];
    let mut state = C::Conn::default();
    let mut parser = CommandParser::default();
    loop {
        loop {
            match parser.parse(&buf, &limits) {
                Ok(Some((args, used))) => {
                    buf.drain(..used);
                    if args.is_empty() {
                        continue;
                    }
                    let reply = commands.run(&mut state, &args);
                    reply.value.encode(&mut out);
                    if reply.close {
                        conn.write_all(&out)?;
                        return Ok(());
                    }
                    if out.len() >= CLIENT_BUFFER_BYTES {
                        // A client that pipelines large reads without reading the replies
                        // is held here, instead of making this node hold every reply.
                        conn.write_all(&out)?;
                        out.clear();
                        out.shrink_to(CLIENT_BUFFER_BYTES);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    Value::Error(format!("ERR {e}")).encode(&mut out);
                    conn.write_all(&out)?;
                    return Ok(());
                }
            }
        }
        if !out.is_empty() {
            conn.write_all(&out)?;
            out.clear();
            out.shrink_to(CLIENT_BUFFER_BYTES);
        }
        if buf.is_empty() {
            // Not while a command is part-way in: it would be copied again at every read.
            buf.shrink_to(CLIENT_BUFFER_BYTES);
        }
        // Past the idle timeout (`WouldBlock`), or the connection failed: an error.
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// What a connection refused at the connection limit is sent, as Redis words it.
pub const TOO_MANY_CLIENTS: &[u8] = b"-ERR max number of clients reached\r\n";
