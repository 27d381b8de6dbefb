//! A small blocking client for the Consistent Core, used by `synod kv` and tests.
// tidy: driver: connects to nodes (through RESP's client connection) and waits between retries.
//!
//! It is built on RESP's [`Connection`], and adds what is the Consistent Core's: sessions,
//! retries, and moving to another node.
//!
//! [`Client`] talks to any node of a cluster (followers forward to the leader). With a
//! session ([`Client::register`]) a write that fails for any reason a retry can fix (the
//! connection dropped, the node answered `TRYAGAIN` or `UNKNOWN`) is resent, on this node
//! or the next, under the same session and sequence number, so it is applied once: the
//! client side of the Idempotent Receiver pattern. Without a session, a write is resent
//! only when it certainly was not carried out (`TRYAGAIN`, or the command never left);
//! once it may have been applied (an `UNKNOWN` answer, or the connection lost while
//! waiting for the answer) the call fails with [`ClientError::OutcomeUnknown`] instead of
//! risking applying it twice.
//!
//! A write in a session that may have been applied but is still unanswered when the
//! call's time is up fails with [`ClientError::OutcomeUnknown`] too, and the client keeps
//! its session and the write's sequence number: calling it again with the same command
//! resends it under that number, so it is applied at most once, however it went the first
//! time. A different write moves the session on to the next number first (which also
//! tells the cluster the unanswered one is settled, so that it is refused should it reach
//! the log later).

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use super::commands::is_write_command;
use super::server::{HAND_OVER_WAIT, REQUEST_TIMEOUT, SHUTDOWN_DRAIN};

/// The longest a node takes to shut down: requests in flight, the hand-over, the drain,
/// and a margin.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(
    REQUEST_TIMEOUT.as_secs() + HAND_OVER_WAIT.as_secs() + SHUTDOWN_DRAIN.as_secs() + 5,
);
use crate::resp::client::{Connection, Credentials, program_credentials};
use crate::resp::{RespError, Value};

/// Why a call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// No node could be reached, or the deadline passed; the last error says why.
    Unavailable(String),
    /// The server sent something that is not RESP.
    Protocol(RespError),
    /// A write may or may not have been applied (the node answered `UNKNOWN`, or the
    /// connection was lost before the answer). Without a session it was not resent, since
    /// that could apply it twice: use a session ([`Client::register`]) to have such writes
    /// resent safely. In a session it was resent until the call's time was up; the
    /// session is kept, and the same write called again is applied at most once.
    OutcomeUnknown(String),
    /// The cluster refused the request for a reason a retry will not fix soon (a full
    /// session table, say); the text is its answer.
    Refused(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unavailable(why) => write!(f, "cluster unavailable: {why}"),
            ClientError::Protocol(e) => write!(f, "bad reply from the server: {e}"),
            ClientError::OutcomeUnknown(why) => {
                write!(f, "the write may or may not have been applied: {why}")
            }
            ClientError::Refused(why) => write!(f, "refused by the cluster: {why}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A connection to a cluster. See the module documentation.
#[derive(Debug)]
pub struct Client {
    addrs: Vec<String>,
    current: usize,
    stream: Option<Connection>,
    session: Option<(u64, u64)>,
    /// A write in the session whose outcome is unknown (its call failed after it may have
    /// been applied): the session's sequence number is spent on it. Sent again, it reuses
    /// the number; any other write takes the next one.
    unanswered: Option<Vec<Vec<u8>>>,
    /// How long one call may take, retries included.
    timeout: Duration,
    /// Who to authenticate as; `None`: the program's credentials, if any.
    credentials: Option<Credentials>,
}

impl Client {
    /// A client of the nodes at `addrs` (RESP addresses); connects lazily.
    #[must_use]
    pub fn new(addrs: &[String]) -> Client {
        Client {
            addrs: addrs.to_vec(),
            current: 0,
            stream: None,
            session: None,
            unanswered: None,
            timeout: Duration::from_secs(10),
            credentials: None,
        }
    }

    /// Authenticates every connection with `credentials` (instead of the program's,
    /// [`crate::resp::client::set_program_credentials`]).
    #[must_use]
    pub fn with_credentials(mut self, credentials: Credentials) -> Client {
        self.credentials = Some(credentials);
        self
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
        let credentials = self.credentials.as_ref().or(program_credentials());
        self.stream = Some(Connection::open_as(&addr, credentials)?);
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
        self.send(args)?;
        self.receive()
    }

    fn connection(&mut self) -> io::Result<&mut Connection> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::other("not connected"))
    }

    fn send(&mut self, args: &[&[u8]]) -> io::Result<()> {
        self.connection()?.send(args)
    }

    fn receive(&mut self) -> io::Result<Value> {
        self.connection()?.receive()
    }

    fn drop_connection(&mut self) {
        self.stream = None;
        self.current += 1;
    }

    /// Sends one command and returns the reply, retrying on another node while the
    /// connection fails or the reply is `TRYAGAIN`. A write in a session is also resent
    /// after an `UNKNOWN` reply or a connection lost before the reply, under the same
    /// sequence number, so it is applied once; a write without a session is not (see
    /// [`ClientError::OutcomeUnknown`]). A write in a session that may have been applied
    /// but is unanswered when the timeout passes keeps its sequence number: the same write
    /// called again is resent under it, and applied at most once.
    ///
    /// # Errors
    ///
    /// [`ClientError::Unavailable`] once the timeout passes, the command certainly not
    /// carried out; [`ClientError::OutcomeUnknown`] for a write that may have been applied
    /// (at once without a session, once the timeout passes in one);
    /// [`ClientError::Protocol`] for a reply that is not RESP.
    pub fn call(&mut self, args: &[&[u8]]) -> Result<Value, ClientError> {
        if self.addrs.is_empty() {
            return Err(ClientError::Unavailable("no node address given".into()));
        }
        let is_write = is_write(args);
        if is_write {
            self.move_past_unanswered(args);
        }
        let deadline = Instant::now() + self.timeout;
        let mut last = String::new();
        // Whether an attempt may have been carried out (an `UNKNOWN` answer, or the
        // connection lost after the command was sent).
        let mut maybe_applied = false;
        loop {
            if Instant::now() >= deadline {
                if is_write && maybe_applied {
                    self.unanswered = Some(args.iter().map(|a| a.to_vec()).collect());
                    return Err(ClientError::OutcomeUnknown(format!(
                        "{last}; call the same write again to resend it in its session, applied at most once"
                    )));
                }
                return Err(ClientError::Unavailable(last));
            }
            if let Err(e) = self.connect() {
                last = format!("{}: {e}", self.addrs[self.current % self.addrs.len()]);
                self.drop_connection();
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            if let Err(e) = self.send(args) {
                // Not sent whole: a node never runs half a command.
                last = e.to_string();
                self.drop_connection();
                continue;
            }
            // A write without a session must not be resent once it may have been applied.
            let once = is_write && self.session.is_none();
            match self.receive() {
                Ok(Value::Error(e)) if e.starts_with("UNKNOWN") && once => {
                    return Err(ClientError::OutcomeUnknown(format!(
                        "{e}; not resent: without a session, that could apply it twice"
                    )));
                }
                Ok(Value::Error(e)) if e.starts_with("TRYAGAIN") || e.starts_with("UNKNOWN") => {
                    maybe_applied |= e.starts_with("UNKNOWN");
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
                    self.drop_connection();
                    if is_write && self.session.is_some() {
                        // The write's outcome is unknown: its number is kept for it.
                        self.unanswered = Some(args.iter().map(|a| a.to_vec()).collect());
                    }
                    return Err(ClientError::Protocol(RespError::Malformed(
                        "unparsable reply",
                    )));
                }
                Err(e) if once => {
                    self.drop_connection();
                    return Err(ClientError::OutcomeUnknown(format!(
                        "the connection failed before the answer: {e}; not resent: without a session, that could apply it twice"
                    )));
                }
                Err(e) => {
                    maybe_applied |= is_write;
                    last = e.to_string();
                    self.drop_connection();
                }
            }
        }
    }

    /// Before a write: if another write's outcome is unknown, its sequence number stays
    /// spent on it, so this one takes the next (which also acknowledges the old number, so
    /// that the old write is refused as stale should it reach the log later). The node
    /// learns the number on a fresh connection (`CLIENT SESSION`), whatever it counted on
    /// this one. The same write sent again keeps the number.
    fn move_past_unanswered(&mut self, args: &[&[u8]]) {
        let Some(unanswered) = &self.unanswered else {
            return;
        };
        if same_command(unanswered, args) {
            return;
        }
        if let Some((id, seq)) = self.session {
            self.session = Some((id, seq + 1));
        }
        self.unanswered = None;
        self.stream = None;
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
            (b"CLIENT", b"REGISTER", Value::Int(id)) => {
                self.session = Some((*id as u64, 1));
                self.unanswered = None;
            }
            (b"CLIENT", b"UNREGISTER", _) => {
                self.session = None;
                self.unanswered = None;
            }
            // Any answer to a write but a `SESSION` error spends its number, as the node
            // counts (`TRYAGAIN` and `UNKNOWN` never get here: the write is resent). An
            // unanswered write is answered now, or was moved past. Whether it is a write
            // is asked of the whole command: `LEASE GRANT` is one, `LEASE TTL` is not.
            (_, _, v) if is_write(args) => {
                self.unanswered = None;
                if let Some((id, seq)) = self.session
                    && !matches!(v, Value::Error(e) if e.starts_with("SESSION"))
                {
                    self.session = Some((id, seq + 1));
                }
            }
            _ => {}
        }
    }

    /// Stops the node at the first address gracefully (`SHUTDOWN`: it finishes requests in
    /// flight, hands its leadership over, and exits) and returns once it has closed the
    /// connection; a node already shutting down counts as done. Never retried elsewhere: it
    /// is about that one node.
    ///
    /// # Errors
    ///
    /// [`ClientError::Unavailable`] if the node cannot be reached or refuses (with its
    /// answer); [`ClientError::Protocol`] if it answers something else.
    pub fn shutdown(&mut self) -> Result<(), ClientError> {
        self.stream = None;
        self.current = 0;
        let unavailable = |e: io::Error| ClientError::Unavailable(e.to_string());
        self.connect().map_err(unavailable)?;
        if let Some(stream) = &self.stream {
            // Requests in flight, the hand-over and the clients' drain take a few seconds.
            stream
                .set_read_timeout(SHUTDOWN_WAIT)
                .map_err(unavailable)?;
        }
        let result = match self.roundtrip(&[b"SHUTDOWN"]) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                ) =>
            {
                Ok(())
            }
            Ok(Value::Error(e)) if e.contains("shutting down") => Ok(()),
            Ok(Value::Error(e)) => Err(ClientError::Unavailable(e)),
            Ok(_) => Err(ClientError::Protocol(RespError::Malformed(
                "SHUTDOWN was answered instead of closing the connection",
            ))),
            Err(e) => Err(unavailable(e)),
        };
        self.drop_connection();
        result
    }

    /// Opens a session (closing none: an old one expires by itself), so that writes are applied once however often retried.
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; [`ClientError::Refused`] if the cluster refuses (its session
    /// table is full); or an unexpected reply.
    pub fn register(&mut self) -> Result<u64, ClientError> {
        match self.call(&[b"CLIENT", b"REGISTER"])? {
            Value::Int(id) => Ok(id as u64),
            Value::Error(e) => Err(ClientError::Refused(e)),
            other => Err(ClientError::Unavailable(format!(
                "CLIENT REGISTER answered {other:?}"
            ))),
        }
    }
}

/// Whether `args` is the command `sent`: the same words, the command's name in any case.
fn same_command(sent: &[Vec<u8>], args: &[&[u8]]) -> bool {
    sent.len() == args.len()
        && sent.iter().zip(args).enumerate().all(|(i, (a, b))| {
            if i == 0 {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        })
}

fn is_write(args: &[&[u8]]) -> bool {
    is_write_command(args)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::consistent_core::commands::{Action, ConnState, execute, refusal};
    use crate::consistent_core::kv::{KvQuery, KvReply, KvStore, LogCommand};
    use crate::consistent_core::node::{Request, Response};
    use crate::resp::{Limits, parse_command};
    use synod_consensus::LogIndex;
    use synod_consensus::session::SessionEntry;

    type Script = dyn Fn(usize, &str) -> Option<Value> + Send + Sync;

    /// A stand-in server on loopback: each connection gets its own answerer from
    /// `per_connection`, called with every command it reads; an answer of `None` closes the
    /// connection without a reply.
    fn serve<F>(per_connection: impl Fn() -> F + Send + 'static) -> String
    where
        F: FnMut(&[Vec<u8>]) -> Option<Value> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut answer = per_connection();
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Ok(Some((args, used))) = parse_command(&buf, &Limits::default()) {
                            buf.drain(..used);
                            let Some(reply) = answer(&args) else {
                                return;
                            };
                            let mut out = Vec::new();
                            reply.encode(&mut out);
                            if stream.write_all(&out).is_err() {
                                return;
                            }
                        }
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        addr
    }

    /// A command's words, joined by spaces.
    fn text(args: &[Vec<u8>]) -> String {
        args.iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A stand-in node on loopback: it records every command it reads (as words joined by
    /// spaces) and answers the `n`th with `script(n, command)`, or closes the connection
    /// without an answer when the script says `None`.
    fn fake_node(script: Arc<Script>) -> (String, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let addr = serve(move || {
            let (log, script) = (Arc::clone(&log), Arc::clone(&script));
            move |args: &[Vec<u8>]| {
                let command = text(args);
                let n = {
                    let mut log = log.lock().expect("lock");
                    log.push(command.clone());
                    log.len() - 1
                };
                script(n, &command)
            }
        });
        (addr, seen)
    }

    /// How [`mini_node`] serves a command.
    enum Serve {
        /// Runs it and answers.
        Answer,
        /// Runs it, then closes the connection without answering (a reply lost on the way).
        Drop,
        /// Answers this without running it (a node with no leader, say).
        Refuse(Value),
    }

    /// A one-node cluster in this process, made of the real command table and state
    /// machine: each connection has its own [`ConnState`], every request is applied to (a
    /// read: answered from) one [`KvStore`] at once. `script(n, command)` says how to serve the `n`th command.
    fn mini_node(
        script: impl Fn(usize, &str) -> Serve + Send + Sync + 'static,
    ) -> (String, Arc<Mutex<KvStore>>) {
        let store = Arc::new(Mutex::new(KvStore::new()));
        let index = Arc::new(Mutex::new(0u64));
        let script = Arc::new(script);
        let (node_store, count) = (Arc::clone(&store), Arc::new(Mutex::new(0usize)));
        let addr = serve(move || {
            let (store, index, count, script) = (
                Arc::clone(&node_store),
                Arc::clone(&index),
                Arc::clone(&count),
                Arc::clone(&script),
            );
            let mut conn = ConnState::default();
            move |args: &[Vec<u8>]| {
                let n = {
                    let mut count = count.lock().expect("lock");
                    *count += 1;
                    *count - 1
                };
                let serve = script(n, &text(args));
                if let Serve::Refuse(answer) = serve {
                    return Some(answer);
                }
                let reply = match execute(&mut conn, args) {
                    Action::Reply(v) | Action::Close(v) => v,
                    Action::Call(request @ Request::Read { .. }) => {
                        let Request::Read { query, .. } = &request else {
                            unreachable!("matched above")
                        };
                        let reply = store.lock().expect("lock").query(query);
                        conn.settle(&request, Response::Kv(reply))
                    }
                    Action::Call(request) => {
                        let mut index = index.lock().expect("lock");
                        *index += 1;
                        let reply = store
                            .lock()
                            .expect("lock")
                            .apply(LogIndex(*index), logged(&request));
                        conn.settle(&request, Response::Kv(reply))
                    }
                    other => panic!("not served here: {other:?}"),
                };
                (!matches!(serve, Serve::Drop)).then_some(reply)
            }
        });
        (addr, store)
    }

    /// What a node proposes for a request (as `CoreNode` does).
    fn logged(request: &Request) -> LogCommand {
        match request {
            Request::Register => LogCommand::Session(SessionEntry::Register { time: 1 }),
            Request::Unregister(session) => LogCommand::Session(SessionEntry::Unregister {
                session: *session,
                time: 1,
            }),
            Request::Write {
                command,
                session: Some(s),
            } => LogCommand::Session(SessionEntry::Request {
                session: s.session,
                seq: s.seq,
                ack_below: s.ack_below,
                time: 1,
                command: command.clone(),
            }),
            Request::Write {
                command,
                session: None,
            } => LogCommand::Plain {
                time: 1,
                command: command.clone(),
            },
            Request::Read { .. } => panic!("a write"),
        }
    }

    #[test]
    fn a_write_refused_by_the_command_table_does_not_put_client_and_node_out_of_step() {
        // The second INCR is applied, but its answer is lost with the connection: the
        // client resends it, resuming its session on a new connection, and it must be
        // answered from the session table, not applied again.
        let incrs = Arc::new(Mutex::new(0));
        let (addr, store) = mini_node(move |_, command| {
            if command == "INCR n" {
                let mut incrs = incrs.lock().expect("lock");
                *incrs += 1;
                if *incrs == 2 {
                    return Serve::Drop;
                }
            }
            Serve::Answer
        });
        let mut c = client(&addr);
        c.register().expect("registered");
        assert_eq!(c.call(&[b"INCR", b"n"]).expect("answered"), Value::Int(1));
        // Refused before it reaches the node: the session's numbering must stay in step.
        let refused = c.call(&[b"INCRBY", b"n", b"x"]).expect("answered");
        assert!(matches!(refused, Value::Error(_)), "{refused:?}");
        let refused = c
            .call(&[b"SET", b"n", b"1", b"EX", b"0"])
            .expect("answered");
        assert!(matches!(refused, Value::Error(_)), "{refused:?}");
        assert_eq!(c.call(&[b"INCR", b"n"]).expect("answered"), Value::Int(2));
        assert_eq!(
            store
                .lock()
                .expect("lock")
                .query(&KvQuery::Get(b"n".to_vec())),
            KvReply::Bulk(b"2".to_vec()),
            "the INCR whose answer was lost was applied once"
        );
    }

    #[test]
    fn lease_and_fenced_writes_are_counted_so_a_resumed_session_resends_with_the_right_number() {
        use std::sync::atomic::Ordering;
        // The SET's answer is lost with the connection: resent on a new connection under
        // the session's count, which must include the LEASE and FENCE writes before it
        // (counted short, the SET took the number of an acknowledged write and was refused
        // with a SESSION error).
        let dropped = std::sync::atomic::AtomicBool::new(false);
        let (addr, store) = mini_node(move |_, command| {
            if command == "SET k v LEASE 1" && !dropped.swap(true, Ordering::SeqCst) {
                Serve::Drop
            } else {
                Serve::Answer
            }
        });
        let mut c = client(&addr);
        c.register().expect("registered");
        assert_eq!(
            c.call(&[b"LEASE", b"GRANT", b"60000"]).expect("answered"),
            Value::Int(1)
        );
        let ttl = c.call(&[b"LEASE", b"KEEPALIVE", b"1"]).expect("answered");
        assert!(matches!(ttl, Value::Int(_)), "{ttl:?}");
        assert!(matches!(
            c.call(&[b"LEASE", b"TTL", b"1"]).expect("answered"),
            Value::Int(_)
        ));
        assert_eq!(
            c.call(&[b"SET", b"lock", b"me", b"NX"]).expect("answered"),
            Value::Simple("OK".into())
        );
        let fenced = c
            .call(&[b"FENCE", b"lock", b"9", b"DEL", b"lock"])
            .expect("answered");
        assert!(
            matches!(&fenced, Value::Error(e) if e.starts_with("FENCED")),
            "{fenced:?}"
        );
        assert_eq!(
            c.call(&[b"SET", b"k", b"v", b"LEASE", b"1"])
                .expect("answered"),
            Value::Simple("OK".into())
        );
        assert_eq!(
            store
                .lock()
                .expect("lock")
                .query(&KvQuery::Get(b"k".to_vec())),
            KvReply::Bulk(b"v".to_vec())
        );
    }

    /// What a node answers for a write whose outcome is unknown.
    fn unknown() -> Value {
        refusal(Response::Unknown(
            "timed out; the outcome is unknown".into(),
        ))
    }

    fn client(addr: &str) -> Client {
        Client::new(&[addr.to_string()]).with_timeout(Duration::from_secs(20))
    }

    fn seen(log: &Mutex<Vec<String>>) -> Vec<String> {
        log.lock().expect("lock").clone()
    }

    #[test]
    fn a_client_without_addresses_says_so() {
        let result = Client::new(&[]).call(&[b"GET", b"k"]);
        assert!(
            matches!(&result, Err(ClientError::Unavailable(why)) if why.contains("no node address")),
            "{result:?}"
        );
    }

    #[test]
    fn without_a_session_a_write_that_may_have_been_applied_is_not_resent() {
        // The node answers that the outcome is unknown (it may have been applied).
        let (addr, log) = fake_node(Arc::new(|n, _: &str| {
            Some(if n == 0 { unknown() } else { Value::Int(1) })
        }));
        let result = client(&addr).call(&[b"INCR", b"n"]);
        assert!(
            matches!(result, Err(ClientError::OutcomeUnknown(_))),
            "{result:?}"
        );
        assert_eq!(seen(&log), ["INCR n"], "sent once");

        // The connection is lost after the node read the write, before its answer.
        let (addr, log) = fake_node(Arc::new(|n, _: &str| (n > 0).then_some(Value::Int(1))));
        let result = client(&addr).call(&[b"INCR", b"n"]);
        assert!(
            matches!(result, Err(ClientError::OutcomeUnknown(_))),
            "{result:?}"
        );
        assert_eq!(seen(&log), ["INCR n"], "sent once");

        // A read is safe to repeat: resent after a lost connection.
        let (addr, log) = fake_node(Arc::new(|n, _: &str| {
            (n > 0).then(|| Value::Bulk(b"1".to_vec()))
        }));
        let result = client(&addr).call(&[b"GET", b"n"]);
        assert_eq!(result.expect("answered"), Value::Bulk(b"1".to_vec()));
        assert_eq!(seen(&log), ["GET n", "GET n"]);
    }

    #[test]
    fn in_a_session_a_write_that_may_have_been_applied_is_resent_with_its_number() {
        // An UNKNOWN answer, then the connection lost before the answer: the same write is
        // resent each time, the second time on a new connection resuming the session.
        let (addr, log) = fake_node(Arc::new(|n, command: &str| match (n, command) {
            (_, "CLIENT REGISTER") => Some(Value::Int(7)),
            (_, "CLIENT SESSION 7 1") => Some(Value::Simple("OK".into())),
            (1, _) => Some(unknown()),
            (2, _) => None,
            _ => Some(Value::Int(1)),
        }));
        let mut c = client(&addr);
        assert_eq!(c.register().expect("registered"), 7);
        assert_eq!(c.call(&[b"INCR", b"n"]).expect("answered"), Value::Int(1));
        assert_eq!(
            seen(&log),
            [
                "CLIENT REGISTER",
                "INCR n",
                "INCR n",
                "CLIENT SESSION 7 1",
                "INCR n"
            ]
        );
    }

    /// A stand-in node that runs `write` once and loses its answer with the connection,
    /// then answers `TRYAGAIN` to every write until `up`: longer than a client's timeout.
    fn node_down_after_applying(
        write: &'static str,
        up: &Arc<std::sync::atomic::AtomicBool>,
    ) -> (String, Arc<Mutex<KvStore>>) {
        use std::sync::atomic::Ordering;
        let (up, applied) = (Arc::clone(up), Arc::new(Mutex::new(false)));
        mini_node(move |_, command| {
            let mut applied = applied.lock().expect("lock");
            if command == write && !*applied {
                *applied = true;
                return Serve::Drop;
            }
            let words: Vec<&[u8]> = command.split(' ').map(str::as_bytes).collect();
            if *applied && !up.load(Ordering::SeqCst) && is_write(&words) {
                return Serve::Refuse(refusal(Response::Retry("no leader".into())));
            }
            Serve::Answer
        })
    }

    fn get(store: &Mutex<KvStore>, key: &str) -> KvReply {
        store
            .lock()
            .expect("lock")
            .query(&KvQuery::Get(key.as_bytes().to_vec()))
    }

    #[test]
    fn a_session_write_unanswered_past_the_timeout_keeps_its_session_and_its_retry_is_applied_once()
    {
        use std::sync::atomic::{AtomicBool, Ordering};
        let up = Arc::new(AtomicBool::new(false));
        let (addr, store) = node_down_after_applying("INCR n", &up);
        let mut c = Client::new(&[addr]).with_timeout(Duration::from_millis(300));
        let session = c.register().expect("registered");
        // Applied, the answer lost, and the node unavailable until the call gives up.
        let first = c.call(&[b"INCR", b"n"]);
        up.store(true, Ordering::SeqCst);
        // The natural retry: the same write again, on the same client.
        let retry = c.call(&[b"INCR", b"n"]);
        assert_eq!(
            get(&store, "n"),
            KvReply::Bulk(b"1".to_vec()),
            "applied once"
        );
        assert!(
            matches!(&first, Err(ClientError::OutcomeUnknown(why)) if why.contains("again")),
            "{first:?}"
        );
        assert_eq!(c.session(), Some(session), "the session is kept");
        assert_eq!(retry.expect("answered"), Value::Int(1), "the saved answer");
        // The session goes on.
        assert_eq!(c.call(&[b"INCR", b"n"]).expect("answered"), Value::Int(2));
        assert_eq!(get(&store, "n"), KvReply::Bulk(b"2".to_vec()));
    }

    #[test]
    fn after_a_session_write_of_unknown_outcome_a_different_write_takes_the_next_number() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let up = Arc::new(AtomicBool::new(false));
        let (addr, store) = node_down_after_applying("SET a 1", &up);
        let mut c = Client::new(&[addr]).with_timeout(Duration::from_millis(300));
        c.register().expect("registered");
        let first = c.call(&[b"SET", b"a", b"1"]);
        assert!(
            matches!(first, Err(ClientError::OutcomeUnknown(_))),
            "{first:?}"
        );
        up.store(true, Ordering::SeqCst);
        // Under SET's number, INCR would be answered with SET's saved reply and not run.
        assert_eq!(c.call(&[b"INCR", b"b"]).expect("answered"), Value::Int(1));
        assert_eq!(get(&store, "b"), KvReply::Bulk(b"1".to_vec()));
        assert_eq!(c.call(&[b"INCR", b"b"]).expect("answered"), Value::Int(2));
    }

    #[test]
    fn a_registration_the_cluster_refuses_is_an_error_that_says_why() {
        let full = "SESSION the session table is full (10000 sessions are open)";
        let (addr, _) = fake_node(Arc::new(move |_, _: &str| Some(Value::Error(full.into()))));
        let result = client(&addr).register();
        assert!(
            matches!(&result, Err(ClientError::Refused(why)) if why == full),
            "{result:?}"
        );
    }
}
