//! The client listener: one thread per connection, a bounded connection table, an idle
//! timeout.
// tidy: driver: accepts connections and runs a thread for each.
//!
//! [`spawn_listener`] accepts clients on the node's client address and serves each on a
//! thread of its own ([`super::CLIENT_THREAD`]) with the system's [`ServeClient`], which
//! reads and writes through a [`ClientConn`]. The listener knows nothing of the protocol
//! spoken: it keeps the [`Connections`] table (at most `client_connections_max`; at the
//! limit, a new connection closes the one that has waited longest for its client), closes
//! a connection that waits on its client for longer than the idle timeout, and catches a
//! panic on a connection's thread, which closes that connection only.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::process::{CLIENT_THREAD, spawn_vital};

/// What serves one client connection: a system's protocol loop (RESP's is
/// [`crate::resp::serve()`]). It returns when the connection is done, or with the I/O
/// error that ended it.
pub trait ServeClient: Send + Sync + 'static {
    /// Serves `conn` until it ends.
    ///
    /// # Errors
    ///
    /// The I/O error that ended the connection (the client went away, or waited past the
    /// idle timeout).
    fn serve(&self, conn: &mut ClientConn) -> io::Result<()>;

    /// How the node names itself in a message about a connection (`synod node 3`).
    fn node_name(&self) -> String;

    /// What a connection refused at the limit is sent before it is closed (in the
    /// protocol's words: RESP's is an error reply).
    fn refusal(&self) -> &'static [u8];
}

/// The client connections, with what each is doing, under a limit.
///
/// At the limit, a new connection closes the one that has waited longest for its client
/// (for the next command, or for more of one), as nginx closes idle keep-alive connections
/// when it runs out: so idle connections can never lock every other client out. Only
/// connections with a request in progress are never closed for another; when all of them
/// are, the new one is refused, as Redis refuses every client past `maxclients`.
#[derive(Debug)]
pub struct Connections {
    limits: ClientLimits,
    open: std::sync::Mutex<ConnectionTable>,
}

#[derive(Debug, Default)]
struct ConnectionTable {
    next_id: u64,
    /// Each open connection: a handle to close it by, and since when it has been waiting
    /// on its client (`None` while the node works on its request).
    by_id: BTreeMap<u64, (TcpStream, Option<Instant>)>,
}

impl Connections {
    /// An empty table for connections under `limits`.
    #[must_use]
    pub fn new(limits: ClientLimits) -> Connections {
        Connections {
            limits,
            open: std::sync::Mutex::new(ConnectionTable::default()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, ConnectionTable> {
        // The table is consistent after every statement, so a panic on a client's thread
        // (caught there) leaves it usable; a panic elsewhere stops the process.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits `stream`, closing the connection that has waited longest for its client if
    /// the table is full: the new connection's id, or `None` if it is refused.
    fn admit(&self, stream: &TcpStream) -> Option<u64> {
        let handle = stream.try_clone().ok()?;
        let mut table = self.table();
        if table.by_id.len() >= self.limits.connections_max {
            let idlest = table
                .by_id
                .iter()
                .filter_map(|(&id, (_, since))| Some((since.as_ref()?, id)))
                .min()
                .map(|(_, id)| id)?;
            if let Some((evicted, _)) = table.by_id.remove(&idlest) {
                // Its thread's read fails, and the thread ends.
                let _ = evicted.shutdown(std::net::Shutdown::Both);
            }
        }
        table.next_id += 1;
        let id = table.next_id;
        table.by_id.insert(id, (handle, Some(Instant::now())));
        Some(id)
    }

    /// Notes whether connection `id` is waiting on its client.
    fn waiting(&self, id: u64, waiting: bool) {
        if let Some((_, since)) = self.table().by_id.get_mut(&id) {
            *since = waiting.then(Instant::now);
        }
    }

    fn close(&self, id: u64) {
        self.table().by_id.remove(&id);
    }

    /// How many connections are open.
    #[must_use]
    pub fn len(&self) -> usize {
        self.table().by_id.len()
    }

    /// Whether no connection is open.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One client's connection, as a [`ServeClient`] sees it: reads and writes that tell the
/// connection table when the connection waits on its client.
#[derive(Debug)]
pub struct ClientConn {
    id: u64,
    stream: TcpStream,
    connections: Arc<Connections>,
}

impl ClientConn {
    /// Reads what the client sent into `buf`, waiting at most the idle timeout; `Ok(0)` at
    /// the end of the stream. Meanwhile the connection counts as waiting on its client (it
    /// may be closed for a new connection).
    ///
    /// # Errors
    ///
    /// The read's error: the idle timeout passed (`WouldBlock`), or the connection failed.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.connections.waiting(self.id, true);
        let n = loop {
            match self.stream.read(buf) {
                // A read with a timeout returns EINTR when the process is stopped and
                // resumed (SIGSTOP, SIGCONT): the client is still there.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                read => break read,
            }
        };
        self.connections.waiting(self.id, false);
        n
    }

    /// Writes `bytes` to the client; meanwhile the connection counts as waiting on its
    /// client (one that takes none of its replies may be closed for a new connection).
    ///
    /// # Errors
    ///
    /// The write's error: the idle timeout passed, or the connection failed.
    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.connections.waiting(self.id, true);
        let written = self.stream.write_all(bytes);
        self.connections.waiting(self.id, false);
        written
    }
}

/// Limits on the client connections of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// Connections open at once.
    pub connections_max: usize,
    /// How long a connection may wait on its client; `None`: for ever.
    pub idle_timeout: Option<Duration>,
    /// The stack of each connection's thread, in bytes: with `connections_max`, the
    /// address space client threads may reserve.
    pub thread_stack_bytes: usize,
}

/// The stack of a client connection's thread unless configured otherwise: Rust's default
/// for spawned threads.
pub const CLIENT_THREAD_STACK_BYTES: usize = 2 << 20;

/// Starts the acceptor thread (`synod-clients`, vital) serving clients on `listener`
/// with `serve`, under the limits of `connections`, which it keeps.
pub fn spawn_listener<S: ServeClient>(
    listener: TcpListener,
    connections: Arc<Connections>,
    serve: Arc<S>,
) {
    spawn_vital("synod-clients", move || {
        accept(&listener, &serve, &connections);
    });
}

fn accept<S: ServeClient>(listener: &TcpListener, serve: &Arc<S>, connections: &Arc<Connections>) {
    let limits = connections.limits;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else {
            // Out of file descriptors (EMFILE), most likely: every accept fails at once
            // until one is freed, so trying again without a pause spins a core (seen at
            // 100% with `ulimit -n 40` and 60 clients).
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let Some(id) = connections.admit(&stream) else {
            let _ = stream.write_all(serve.refusal());
            continue;
        };
        let serve = Arc::clone(serve);
        let table = Arc::clone(connections);
        let connections = Arc::clone(connections);
        let started = std::thread::Builder::new()
            .name(CLIENT_THREAD.into())
            .stack_size(limits.thread_stack_bytes)
            .spawn(move || {
                // A panic while serving one client (a bug a client's input reaches) closes its
                // connection, as an error does; the process goes on serving the others. The
                // counters it held are released on the way out (`Counted`), and the connection
                // is dropped with the stack: nothing this thread shares is left half changed.
                let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let _ = stream.set_nodelay(true);
                    // A client that sends nothing, or takes none of its replies, for this
                    // long is gone.
                    stream.set_read_timeout(limits.idle_timeout)?;
                    stream.set_write_timeout(limits.idle_timeout)?;
                    let mut conn = ClientConn {
                        id,
                        stream,
                        connections: Arc::clone(&connections),
                    };
                    serve.serve(&mut conn)
                }));
                if served.is_err() {
                    eprintln!(
                        "{}: a client connection's thread panicked; that connection is closed",
                        serve.node_name()
                    );
                }
                connections.close(id);
            });
        if let Err(error) = started {
            // Out of threads, or of memory for a stack: this client is refused (its socket
            // closes with the thread's closure), the others are still served.
            eprintln!("client connection refused: cannot start its thread: {error}");
            table.close(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::poll_until;

    /// A service that is no system: it echoes what it reads, and panics on `panic`.
    struct Echo;

    impl ServeClient for Echo {
        fn serve(&self, conn: &mut ClientConn) -> io::Result<()> {
            let mut buf = [0u8; 64];
            loop {
                let n = conn.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                assert!(
                    !buf[..n].starts_with(b"panic"),
                    "a test made a client's thread panic"
                );
                conn.write_all(&buf[..n])?;
            }
        }

        fn node_name(&self) -> String {
            "echo".into()
        }

        fn refusal(&self) -> &'static [u8] {
            b"full\n"
        }
    }

    fn listen(limits: ClientLimits) -> (std::net::SocketAddr, Arc<Connections>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(Connections::new(limits));
        spawn_listener(listener, Arc::clone(&connections), Arc::new(Echo));
        (addr, connections)
    }

    fn connect(addr: std::net::SocketAddr) -> TcpStream {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream
    }

    /// Sends `b"hi"` and reads it back: whether the connection is served.
    fn echoes(stream: &mut TcpStream) -> bool {
        let mut back = [0u8; 2];
        stream.write_all(b"hi").is_ok() && stream.read_exact(&mut back).is_ok() && &back == b"hi"
    }

    /// Whether the listener closed `stream` (a read returns its end or a reset, not a
    /// timeout).
    fn closed(stream: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        }
    }

    #[test]
    fn a_connection_waiting_on_its_client_past_the_idle_timeout_is_closed() {
        let (addr, connections) = listen(ClientLimits {
            connections_max: 4,
            idle_timeout: Some(Duration::from_millis(50)),
            thread_stack_bytes: CLIENT_THREAD_STACK_BYTES,
        });
        let mut stream = connect(addr);
        assert!(echoes(&mut stream));
        assert!(closed(&mut stream), "the idle connection stayed open");
        let deadline = Instant::now() + Duration::from_secs(10);
        assert!(poll_until(deadline, || connections.is_empty()));
    }

    #[test]
    fn at_the_limit_a_new_connection_closes_the_one_that_waited_longest() {
        // The table alone, so that which connection waits since when is the test's choice.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let table = Connections::new(ClientLimits {
            connections_max: 2,
            idle_timeout: None,
            thread_stack_bytes: CLIENT_THREAD_STACK_BYTES,
        });
        let mut clients = Vec::new();
        let mut admit = || {
            clients.push(connect(addr));
            let (served, _) = listener.accept().expect("accept");
            let id = table.admit(&served);
            (served, id)
        };
        let (_a, a) = admit();
        let (_b, b) = admit();
        let (a, b) = (a.expect("room"), b.expect("room"));
        // Both are at work on a request: nothing can be closed for a third.
        table.waiting(a, false);
        table.waiting(b, false);
        assert_eq!(admit().1, None);
        // `b` waits on its client, then `a`: `b` has waited longest and is closed.
        table.waiting(b, true);
        table.waiting(a, true);
        let (_c, c) = admit();
        assert!(c.is_some());
        assert_eq!(table.len(), 2);
        assert!(table.table().by_id.contains_key(&a));
        assert!(!table.table().by_id.contains_key(&b));
        assert!(
            closed(&mut clients[1]),
            "the closed connection's client was not told"
        );
    }

    #[test]
    fn a_panic_serving_one_client_closes_that_connection_only() {
        let (addr, connections) = listen(ClientLimits {
            connections_max: 4,
            idle_timeout: None,
            thread_stack_bytes: CLIENT_THREAD_STACK_BYTES,
        });
        let mut other = connect(addr);
        assert!(echoes(&mut other));
        let mut panicking = connect(addr);
        panicking.write_all(b"panic").expect("write");
        assert!(closed(&mut panicking), "the connection stayed open");
        assert!(echoes(&mut other), "the other connection was closed too");
        let mut new = connect(addr);
        assert!(echoes(&mut new), "a new connection was not served");
        let deadline = Instant::now() + Duration::from_secs(10);
        assert!(
            poll_until(deadline, || connections.len() == 2),
            "{} connections held",
            connections.len()
        );
    }

    #[test]
    fn a_connection_whose_thread_cannot_start_is_refused_and_the_listener_goes_on() {
        // No thread can have a stack this large: every spawn fails, as when the process is
        // out of threads. Before, that stopped the whole node (fail-stop).
        let (addr, connections) = listen(ClientLimits {
            connections_max: 4,
            idle_timeout: None,
            thread_stack_bytes: usize::MAX,
        });
        for _ in 0..3 {
            let mut stream = connect(addr);
            assert!(
                closed(&mut stream),
                "a connection with no thread stayed open"
            );
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        assert!(
            poll_until(deadline, || connections.is_empty()),
            "a refused connection kept its place in the table"
        );
    }
}
