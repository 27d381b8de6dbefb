//! A node of the register store as a process: its store on the data directory, its
//! command table on the client connections, and the runtime's generic host
//! ([`crate::runtime::host`]) for everything else.
// tidy: driver: opens the store's files and serves client connections.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use synod_wal::FileStorage;

use super::commands::{
    self, Action, KEY_BYTES_MAX, StoreRequest, StoreResponse, VALUE_BYTES_MAX, execute, settle,
};
use super::machine::{RegisterLimits, Registers, Request};
use super::store::RegisterLog;
use crate::resp::{Answer, Commands, Context, Order, Outcome, Reply, Resend, Settled, Step, Value};
use crate::runtime::host::{Host, HostBoot, HostSpec, HostStore};
use crate::runtime::{NodeOptions, StartError, data_dir, served};
use crate::systems::{Listening, NodeSettings};

/// The state machine of a node in a process: keys and values are bytes.
pub type StoreNode = Registers<Vec<u8>, Vec<u8>>;

/// The limits of a node: at most 10,000 keys (so a node holds at most that many values of
/// at most [`VALUE_BYTES_MAX`], 640 MiB), 64 operations in flight per key, retransmissions every
/// 100 ms, and an operation given up after 2 s without a majority.
pub const LIMITS: RegisterLimits = RegisterLimits::new(10_000, 64, 100, 2_000);
/// How long a client's request may wait for the node's answer (longer than an operation
/// may take before the node gives it up, so a client hears the node's verdict).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Reads of one connection in flight at once: their replies wait to be written in order,
/// so this times [`VALUE_BYTES_MAX`] bounds what a connection that pipelines reads without
/// reading its replies makes the node hold (8 MiB).
pub const READS_IN_FLIGHT_MAX: usize = 128;
/// The longest frame between peers: a message carrying the longest key and value, and
/// room for its tag and headers.
pub const PEER_FRAME_BYTES_MAX: usize = VALUE_BYTES_MAX + KEY_BYTES_MAX + (64 << 10);
/// The directory inside the data directory that holds the store's log.
pub const STORE_DIR: &str = "registers";
/// The most starts a node may make on one data directory (each takes a generation).
pub const STARTS_MAX: u64 = u64::MAX - 1;

/// The store of a node in a process: [`RegisterLog`] on the data directory's files.
#[derive(Debug, Default)]
pub struct RegisterFiles {
    log: Option<RegisterLog<FileStorage, Vec<u8>, Vec<u8>>>,
}

impl HostStore for RegisterFiles {
    type Protocol = StoreNode;

    /// Opens the log, and takes this start's generation above both the log's last and the
    /// data directory's count of starts ([`data_dir::next_incarnation`], written durably
    /// before the node serves): the count is kept apart from the log, so damage the log
    /// cannot tell from a crash (its last synced record flipped) never makes a start reuse
    /// a generation an earlier one served with.
    fn recover(&mut self, boot: HostBoot<'_>) -> io::Result<StoreNode> {
        let dir = boot.options.data_dir().join(STORE_DIR);
        data_dir::create_dir_durably(&dir)?;
        let (log, mut recovered) = RegisterLog::open(FileStorage::new(dir)?)?;
        let start = data_dir::next_incarnation(boot.options, STARTS_MAX)
            .map_err(|e| io::Error::other(e.to_string()))?;
        // The machine starts at one past what it recovered.
        recovered.generation = recovered.generation.max(start - 1);
        self.log = Some(log);
        Ok(Registers::start(boot.id, boot.members, LIMITS, recovered))
    }

    fn write(&mut self, record: &super::machine::Record<Vec<u8>, Vec<u8>>) -> io::Result<()> {
        self.log_mut()?.append(record)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.log_mut()?.sync()
    }
}

impl RegisterFiles {
    fn log_mut(&mut self) -> io::Result<&mut RegisterLog<FileStorage, Vec<u8>, Vec<u8>>> {
        self.log
            .as_mut()
            .ok_or_else(|| io::Error::other("the store was never opened"))
    }
}

/// The client side of a running node: the register store's command table, served as RESP
/// by the runtime's event loop ([`crate::resp::Resp`]).
#[derive(Debug)]
pub struct Clients {
    host: Arc<Host<RegisterFiles>>,
}

impl Commands for Clients {
    type Conn = ();
    type Pending = StoreRequest;
    type Request = StoreRequest;
    type Response = StoreResponse;

    fn run(&self, (): &mut (), args: &[Vec<u8>], _ctx: &Context) -> Step<Self> {
        match execute(args) {
            Action::Reply(value) => Step::Reply(Reply::open(value)),
            Action::Close(value) => Step::Reply(Reply::close(value)),
            Action::Info => Step::Reply(Reply::open(Value::Bulk(
                format!("node_id:{}\r\nsystem:register\r\n", self.host.id()).into_bytes(),
            ))),
            Action::Call(request) => {
                // Reads in flight together, writes together: a read pipelined after a
                // write of the same connection sees it.
                let order = match request {
                    Request::Read(_) => Order::Group {
                        group: 0,
                        in_flight_max: READS_IN_FLIGHT_MAX,
                    },
                    Request::Write(..) => Order::Group {
                        group: 1,
                        in_flight_max: usize::MAX,
                    },
                };
                Step::Call {
                    request: request.clone(),
                    pending: request,
                    order,
                }
            }
        }
    }

    fn submit(&self, calls: &mut Vec<(StoreRequest, Answer<StoreResponse>)>) {
        self.host.submit_answers(calls);
    }

    fn settle(
        &self,
        (): &mut (),
        request: StoreRequest,
        outcome: Outcome<StoreResponse>,
        _resend: Resend<'_, StoreResponse>,
    ) -> Settled<StoreRequest> {
        let writes = matches!(request, Request::Write(..));
        Settled::Reply(Reply::open(served::outcome_reply(
            outcome,
            writes,
            |response| settle(&request, response),
        )))
    }

    fn request_timeout(&self) -> Duration {
        REQUEST_TIMEOUT
    }

    fn node_name(&self) -> String {
        format!("synod node {} (register)", self.host.id())
    }

    fn writes(&self, args: &[Vec<u8>]) -> bool {
        commands::writes(args)
    }
}

/// What the node keeps in its data directory besides the identity file.
const STATE: &[&str] = &[STORE_DIR, data_dir::INCARNATION_FILE];

/// Starts a node of the register store in this process (for `synod node --system
/// register`; see [`crate::systems::StartNode`]). It takes no system settings.
///
/// # Errors
///
/// A [`StartError`] a person can act on.
pub fn start_node(options: &NodeOptions, settings: &NodeSettings) -> Result<Listening, StartError> {
    let spec = HostSpec {
        state: STATE,
        frame_bytes_max: PEER_FRAME_BYTES_MAX,
    };
    served::start_resp_node(
        "register",
        options,
        settings,
        spec,
        RegisterFiles::default(),
        |host| Clients { host },
    )
}

/// The store's directory inside `data_dir`.
#[must_use]
pub fn store_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join(STORE_DIR)
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use bytes::Bytes;
    use synod_node::NodeId;
    use synod_quorum::{AbdMessage, Tag};
    use synod_transport::TcpTransport;

    use super::*;
    use crate::register::Keyed;
    use crate::resp::client::Connection;
    use crate::runtime::peers::transport_config;

    type Message = Keyed<Vec<u8>, Vec<u8>>;

    #[test]
    fn a_start_never_reuses_a_generation_even_when_the_log_lost_its_start_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = NodeOptions::new(
            1,
            "127.0.0.1:0",
            Some("127.0.0.1:0"),
            "1=127.0.0.1:0",
            dir.path(),
        )
        .expect("valid options");
        let start = || {
            let mut files = RegisterFiles::default();
            let boot = HostBoot {
                options: &options,
                id: NodeId::new(1),
                members: vec![NodeId::new(1)],
            };
            let node = files.recover(boot).expect("starts");
            (files, node.generation())
        };
        // A first start writes its start record and syncs it.
        let (mut files, first) = start();
        assert_eq!(first, 1);
        let record = crate::register::Record {
            generation: first,
            key: None,
            tag: Tag::default(),
            value: None,
        };
        files.write(&record).expect("written");
        files.sync().expect("synced");
        drop(files);
        // The log then loses it (its last synced record, damaged, is cut as a torn tail
        // would be): the next start still takes a generation above the first's.
        let log = store_dir(dir.path()).join(crate::register::store::LOG_FILE);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .and_then(|f| f.set_len(3))
            .expect("cut");
        let (_, second) = start();
        assert!(second > first, "generation {second} after {first}");
        let (_, third) = start();
        assert!(third > second, "generation {third} after {second}");
    }

    #[test]
    fn the_longest_key_and_value_fit_in_one_peer_frame() {
        let config = transport_config(u64::MAX, u64::MAX, PEER_FRAME_BYTES_MAX).expect("valid");
        let big = u64::MAX >> 1;
        let tag = Tag {
            sequence: big,
            writer: Some(NodeId::new(big)),
            incarnation: big,
            op: big,
        };
        let op = postcard::from_bytes(&postcard::to_stdvec(&(big, big)).expect("encodes"))
            .expect("an operation id is an incarnation and a number");
        let update = Message {
            key: vec![0xff; KEY_BYTES_MAX],
            message: AbdMessage::Update {
                op,
                tag,
                value: Some(vec![0xff; VALUE_BYTES_MAX]),
            },
        };
        let bytes =
            crate::runtime::host::encode_message::<RegisterFiles>(&update).expect("encodes");
        assert!(
            bytes.len() <= config.payload_bytes_max(),
            "{} bytes; a frame carries {}",
            bytes.len(),
            config.payload_bytes_max()
        );
    }

    #[test]
    fn a_peers_frame_that_is_no_message_is_dropped_and_the_node_goes_on() {
        // Node 1 is real; node 2 is this test, on a transport of its own.
        let fake_addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let dir = tempfile::tempdir().expect("tempdir");
        let peers = format!("1=127.0.0.1:0,2={fake_addr}");
        let options = NodeOptions::new(1, "127.0.0.1:0", Some("127.0.0.1:0"), &peers, dir.path())
            .expect("valid options");
        let config =
            transport_config(options.cluster_id(), 2, PEER_FRAME_BYTES_MAX).expect("valid");
        // Every message node 1 sends is answered with a frame whose payload is garbage, and
        // then with the answer of a replica that holds nothing.
        let fake: Arc<OnceLock<Arc<TcpTransport>>> = Arc::default();
        let queries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let handler = {
            let (fake, queries) = (Arc::clone(&fake), Arc::clone(&queries));
            move |incoming: &synod_transport::Incoming| {
                let fake = fake.get()?;
                let to = NodeId::new(1);
                let _ = fake.send(to, Bytes::from_static(&[0xff; 40]));
                let message: Message =
                    crate::runtime::host::decode_message::<RegisterFiles>(incoming.payload())
                        .ok()?;
                let answer = match message.message {
                    AbdMessage::Query { op } => {
                        queries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        AbdMessage::QueryReply {
                            op,
                            tag: Tag::default(),
                            value: None,
                        }
                    }
                    AbdMessage::Update { op, .. } => AbdMessage::UpdateAck { op },
                    _ => return None,
                };
                let reply = Message {
                    key: message.key,
                    message: answer,
                };
                let bytes =
                    crate::runtime::host::encode_message::<RegisterFiles>(&reply).expect("encodes");
                let _ = fake.send(to, Bytes::from(bytes));
                None
            }
        };
        let transport =
            Arc::new(TcpTransport::bind_with_handler(config, fake_addr, handler).expect("bind"));
        let _ = fake.set(Arc::clone(&transport));
        let node = start_node(&options, &NodeSettings::default()).expect("the node starts");
        transport.add_peer(NodeId::new(1), node.peers);
        // A read needs both nodes (a majority of two): it is answered only if node 1 took
        // the fake's answer in after the garbage before it.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let read = crate::runtime::poll_until(deadline, || {
            Connection::open(&node.clients.to_string())
                .and_then(|mut c| c.roundtrip(&[b"GET", b"k"]))
                .is_ok_and(|v| v == Value::Nil)
        });
        assert!(read, "no read was answered");
        assert!(queries.load(std::sync::atomic::Ordering::SeqCst) > 0);
    }
}
