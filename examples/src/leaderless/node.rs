//! A node of the leaderless store as a process (`synod node --system leaderless`): its log
//! on the data directory, its command table on the client connections, and the runtime's
//! generic host ([`crate::runtime::host`]) for everything else; and its client
//! (`synod kv --system leaderless`).
//!
//! Its membership is not driven by `synod_membership::net::drive`, the driver for a member
//! on its own: here the `Member` is one part of the node's state machine ([`Leaderless`]),
//! driven by the same runtime host as every other system. Its messages travel on the node's
//! one transport inside the store's (`Message::Member`), its generation is a record of the
//! store's log (recovery reads it with the admission records), and its view changes reach
//! the partition table, the hinted hand-off and the store within the same step, so the
//! whole node, membership included, runs under synod-sim (`synod sim leaderless`).
//! `net::drive` would need a second transport and port per node, a generation file beside
//! the log, and the member's changes handed across threads, out of the simulator's reach.
// tidy: driver: opens the store's files, reads the system clock once at start and serves client connections.

use std::io;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use synod_clocks::WallTime;
use synod_wal::FileStorage;

use super::commands::{
    self, Action, KEY_BYTES_MAX, Level, Shape, VALUE_BYTES_MAX, execute, settle,
};
use super::machine::{Config, Leaderless, Notice, Record, Request, Vv};
use super::store::LeaderlessLog;
use crate::resp::{Answer, Commands, Context, Order, Outcome, Reply, Resend, Settled, Step, Value};
use crate::runtime::host::{Host, HostBoot, HostSpec, HostStore};
use crate::runtime::{NodeOptions, StartError, data_dir, process, served};
use crate::systems::{Listening, NodeSettings};

/// The state machine of a node in a process: version vectors.
pub type StoreNode = Leaderless<Vv>;
type State = <Vv as synod_quorum::Resolver>::State;

/// How long a client's request may wait for the node's answer (longer than the node takes
/// to give an operation up).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Reads of one connection in flight at once.
pub const READS_IN_FLIGHT_MAX: usize = 128;
/// The longest frame between peers: an anti-entropy message of at most its configured
/// bytes of states, or a message carrying the longest key and value with their siblings.
pub const PEER_FRAME_BYTES_MAX: usize = (2 << 20) + KEY_BYTES_MAX + 2 * VALUE_BYTES_MAX;
/// The level of `synod kv --system leaderless` without `--read`: QUORUM, the level every
/// RESP connection starts at (redis-cli's), so that `synod kv` and redis-cli read and write
/// the same key space.
pub const DEFAULT_KV_LEVEL: &str = "quorum";
/// The directory inside the data directory that holds the store's log.
pub const STORE_DIR: &str = "leaderless";
/// The most starts a node may make on one data directory (each takes a generation).
pub const STARTS_MAX: u64 = u64::MAX - 1;

/// The store of a node in a process: [`LeaderlessLog`] on the data directory's files.
#[derive(Debug, Default)]
pub struct LeaderlessFiles {
    log: Option<LeaderlessLog<FileStorage>>,
    /// `--keys-max`, if given ([`Config::keys_max`]).
    keys_max: Option<usize>,
}

impl HostStore for LeaderlessFiles {
    type Protocol = StoreNode;

    /// Opens the log, and takes this start's generation above both the log's last and the
    /// data directory's count of starts ([`data_dir::next_incarnation`]).
    fn recover(&mut self, boot: HostBoot<'_>) -> io::Result<StoreNode> {
        let dir = boot.options.data_dir().join(STORE_DIR);
        data_dir::create_dir_durably(&dir)?;
        let (log, mut recovered) = LeaderlessLog::open(FileStorage::new(dir)?)?;
        let start = data_dir::next_incarnation(boot.options, STARTS_MAX)
            .map_err(|e| io::Error::other(e.to_string()))?;
        recovered.generation = recovered.generation.max(start - 1);
        self.log = Some(log);
        let mut config = Config::new(boot.id, boot.members.iter().copied());
        // The wall clock, for last-write-wins stamps and grace periods: the system clock
        // now, at the worker's monotonic zero (read as it starts, within milliseconds).
        let since_epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        config.wall_clock_at_zero = WallTime::from_nanos(since_epoch.as_nanos() as u64);
        config.seed = since_epoch.as_nanos() as u64 ^ boot.id.get();
        config.sync_bytes_max = 2 << 20;
        if let Some(keys_max) = self.keys_max {
            config.keys_max = keys_max;
        }
        config.check().map_err(io::Error::other)?;
        Ok(Leaderless::start(config, recovered))
    }

    fn write(&mut self, record: &Record<State>) -> io::Result<()> {
        self.log_mut()?.append(record)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.log_mut()?.sync()
    }

    /// A refusal ends the process ([`process::EXIT_REFUSED`]); a notice is logged.
    fn apply(&mut self, notice: Notice) {
        match notice {
            Notice::Refused(why) => process::refused(&why),
            Notice::Waiting(why) | Notice::Incompatible(why) => eprintln!("synod node: {why}"),
        }
    }
}

impl LeaderlessFiles {
    fn log_mut(&mut self) -> io::Result<&mut LeaderlessLog<FileStorage>> {
        self.log
            .as_mut()
            .ok_or_else(|| io::Error::other("the store was never opened"))
    }
}

/// The client side of a running node: the command table, served as RESP by the runtime's
/// event loop ([`crate::resp::Resp`]).
#[derive(Debug)]
pub struct Clients {
    host: Arc<Host<LeaderlessFiles>>,
}

impl Commands for Clients {
    type Conn = Level;
    type Pending = Shape;
    type Request = Request;
    type Response = super::machine::Response;

    fn run(&self, level: &mut Level, args: &[Vec<u8>], _ctx: &Context) -> Step<Self> {
        match execute(level, args) {
            Action::Reply(value) => Step::Reply(Reply::open(value)),
            Action::Close(value) => Step::Reply(Reply::close(value)),
            Action::Call(request, shape) => {
                let order = match shape {
                    Shape::Get | Shape::GetContext | Shape::CasGet => Order::Group {
                        group: 0,
                        in_flight_max: READS_IN_FLIGHT_MAX,
                    },
                    Shape::Write | Shape::Cas => Order::Group {
                        group: 1,
                        in_flight_max: usize::MAX,
                    },
                    Shape::Info | Shape::Leave | Shape::Remove => Order::Alone,
                };
                Step::Call {
                    request,
                    pending: shape,
                    order,
                }
            }
        }
    }

    fn submit(&self, calls: &mut Vec<(Request, Answer<super::machine::Response>)>) {
        self.host.submit_answers(calls);
    }

    fn settle(
        &self,
        _level: &mut Level,
        shape: Shape,
        outcome: Outcome<super::machine::Response>,
        _resend: Resend<'_, super::machine::Response>,
    ) -> Settled<Shape> {
        let writes = matches!(shape, Shape::Write | Shape::Cas);
        Settled::Reply(Reply::open(served::outcome_reply(
            outcome,
            writes,
            |response| settle(shape, response),
        )))
    }

    fn request_timeout(&self) -> Duration {
        REQUEST_TIMEOUT
    }

    fn node_name(&self) -> String {
        format!("synod node {} (leaderless)", self.host.id())
    }

    fn writes(&self, args: &[Vec<u8>]) -> bool {
        commands::writes(args)
    }
}

/// What the node keeps in its data directory besides the identity file.
const STATE: &[&str] = &[STORE_DIR, data_dir::INCARNATION_FILE];

/// Starts a node of the leaderless store in this process (for `synod node --system
/// leaderless`; see [`crate::systems::StartNode`]). It takes `--keys-max`
/// ([`Config::keys_max`]).
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
        "leaderless",
        options,
        settings,
        spec,
        LeaderlessFiles {
            log: None,
            keys_max: settings.keys_max,
        },
        |host| Clients { host },
    )
}

/// Runs `synod kv --system leaderless`: `put K V`, `get K`, or any RESP command, sent to
/// the first node of `addrs` that answers other than `TRYAGAIN`. `read` is the connection's
/// consistency level for `get` and `put` (`one`, `quorum`, `all`, `linearizable`; empty:
/// [`DEFAULT_KV_LEVEL`], as a RESP connection starts at).
pub fn run_kv(addrs: &str, read: &str, args: &[String]) -> ExitCode {
    let read = if read.is_empty() {
        DEFAULT_KV_LEVEL
    } else {
        read
    };
    let level = match read.to_ascii_lowercase().as_str() {
        "one" | "quorum" | "all" | "linearizable" => read.to_ascii_uppercase(),
        _ => {
            eprintln!(
                "synod kv: --read {read}: the leaderless store's levels are one, quorum, all, linearizable"
            );
            return ExitCode::from(crate::register::client::EXIT_USAGE);
        }
    };
    let addrs = crate::resp::client::address_list(addrs);
    let command = match served::kv_command(args) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("synod kv: {e}");
            return ExitCode::from(crate::register::client::EXIT_USAGE);
        }
    };
    let mut last = String::from("no address given");
    for addr in &addrs {
        let answer = crate::resp::client::Connection::open(addr).and_then(|mut c| {
            if matches!(command[0].as_str(), "SET" | "GET") {
                c.roundtrip(&[b"CONSISTENCY", level.as_bytes()])?;
            }
            let bytes: Vec<&[u8]> = command.iter().map(String::as_bytes).collect();
            c.roundtrip(&bytes)
        });
        match answer {
            Ok(Value::Error(e)) if e.starts_with("TRYAGAIN") => last = format!("{addr}: {e}"),
            Ok(Value::Error(e)) => {
                crate::outln!("(error) {e}");
                return ExitCode::from(crate::register::client::EXIT_UNAVAILABLE);
            }
            Ok(value) => {
                crate::outln!("{}", show(&value));
                return ExitCode::SUCCESS;
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    eprintln!("synod kv: {last}");
    ExitCode::from(crate::register::client::EXIT_UNAVAILABLE)
}

fn show(value: &Value) -> String {
    match value {
        Value::Bulk(b) => format!("\"{}\"", String::from_utf8_lossy(b)),
        Value::Nil => "(nil)".into(),
        Value::Simple(s) => s.clone(),
        Value::Int(i) => format!("(integer) {i}"),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{}) {}", i + 1, show(v)))
            .collect::<Vec<_>>()
            .join("\n"),
        other => format!("{other:?}"),
    }
}
