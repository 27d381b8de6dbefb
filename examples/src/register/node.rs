//! A node of the register store as a process: its store on the data directory, its
//! command table on the client connections, and the runtime's generic host
//! ([`crate::runtime::host`]) for everything else.
// tidy: driver: opens the store's files and serves client connections.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use synod_wal::FileStorage;

use super::commands::{Action, KEY_BYTES_MAX, VALUE_BYTES_MAX, execute, settle, unanswered};
use super::machine::{RegisterLimits, Registers};
use super::store::RegisterLog;
use crate::resp::{self, Commands, Reply, Value};
use crate::runtime::host::{self, CallError, Host, HostBoot, HostSpec, HostStore};
use crate::runtime::{ClientConn, NodeOptions, ServeClient, StartError, data_dir};
use crate::systems::{Listening, NodeSettings};

/// The state machine of a node in a process: keys and values are bytes.
pub type StoreNode = Registers<Vec<u8>, Vec<u8>>;

/// The limits of a node: at most 10,000 keys (so a node holds at most that many values of
/// at most [`VALUE_BYTES_MAX`]), 64 operations in flight per key, retransmissions every
/// 100 ms, and an operation given up after 2 s without a majority.
pub const LIMITS: RegisterLimits = RegisterLimits::new(10_000, 64, 100, 2_000);
/// How long a client's request may wait for the node's answer (longer than an operation
/// may take before the node gives it up, so a client hears the node's verdict).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest frame between peers: a message carrying the longest key and value, and
/// room for its tag and headers.
pub const PEER_FRAME_BYTES_MAX: usize = VALUE_BYTES_MAX + KEY_BYTES_MAX + (64 << 10);
/// The directory inside the data directory that holds the store's log.
pub const STORE_DIR: &str = "registers";

/// The store of a node in a process: [`RegisterLog`] on the data directory's files.
#[derive(Debug, Default)]
pub struct RegisterFiles {
    log: Option<RegisterLog<FileStorage, Vec<u8>, Vec<u8>>>,
}

impl HostStore for RegisterFiles {
    type Protocol = StoreNode;

    fn recover(&mut self, boot: HostBoot<'_>) -> io::Result<StoreNode> {
        let dir = boot.options.data_dir().join(STORE_DIR);
        data_dir::create_dir_durably(&dir)?;
        let (log, recovered) = RegisterLog::open(FileStorage::new(dir)?)?;
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

/// The client side of a running node: RESP with the register store's command table.
#[derive(Debug)]
pub struct Clients {
    host: Arc<Host<RegisterFiles>>,
}

impl ServeClient for Clients {
    fn serve(&self, conn: &mut ClientConn) -> io::Result<()> {
        resp::serve(self, conn)
    }

    fn node_name(&self) -> String {
        format!("synod node {} (register)", self.host.id())
    }

    fn refusal(&self) -> &'static [u8] {
        resp::serve::TOO_MANY_CLIENTS
    }
}

impl Commands for Clients {
    type Conn = ();

    fn run(&self, (): &mut (), args: &[Vec<u8>]) -> Reply {
        match execute(args) {
            Action::Reply(value) => Reply::open(value),
            Action::Close(value) => Reply::close(value),
            Action::Info => Reply::open(Value::Bulk(
                format!("node_id:{}\r\nsystem:register\r\n", self.host.id()).into_bytes(),
            )),
            Action::Call(request) => {
                let deadline = Instant::now() + REQUEST_TIMEOUT;
                Reply::open(match self.host.call(request.clone(), deadline) {
                    Ok(response) => settle(&request, response),
                    Err(e @ CallError::NotTaken) => unanswered(&request, false, &e.to_string()),
                    Err(e) => unanswered(&request, true, &e.to_string()),
                })
            }
        }
    }
}

/// What the node keeps in its data directory besides the identity file.
const STATE: &[&str] = &[STORE_DIR];

/// Starts a node of the register store in this process (for `synod node --system
/// register`; see [`crate::systems::StartNode`]). It takes no system settings.
///
/// # Errors
///
/// A [`StartError`] a person can act on.
pub fn start_node(options: &NodeOptions, settings: &NodeSettings) -> Result<Listening, StartError> {
    if settings.snapshot_entries.is_some() {
        return Err(StartError::Usage(
            "--snapshot-entries: the register store keeps no log to snapshot".into(),
        ));
    }
    let spec = HostSpec {
        state: STATE,
        frame_bytes_max: PEER_FRAME_BYTES_MAX,
    };
    let started = host::start(options, spec, RegisterFiles::default(), |host| Clients {
        host,
    })?;
    Ok(Listening {
        peers: started.peers,
        clients: started.clients,
    })
}

/// The store's directory inside `data_dir`.
#[must_use]
pub fn store_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join(STORE_DIR)
}
