//! Argument parsing and dispatch for the `synod` program.
// tidy: driver: runs what the command line asks for: nodes, clients, log inspection.
//!
//! Each subcommand lives in its own module (`demo`, `consistent_core::tool`, `simulate`);
//! this file parses the command line, finds the system it names (`--system`, in
//! [`crate::systems`]), hands over, and owns the small subcommands (`wal`, `bench`) and
//! what `synod node` does for every system (start it, say where it listens, run).
//! Exit codes: 0 success, 1 a failed check (a damaged log, a lost write, a violation), 2 a
//! usage error or a command that could not run, 4 a checker that gave up (`synod sim`),
//! 141 a closed output pipe.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::runtime::NodeOptions;
use crate::systems::{self, NodeSettings, System};

/// Which system a subcommand runs.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct SystemArg {
    /// The system to run (`synod --help` lists them).
    #[arg(
        long,
        value_name = "NAME",
        default_value = systems::DEFAULT,
        value_parser = systems::parser()
    )]
    pub system: String,
}

/// Synod: distributed-systems patterns you can run.
#[derive(Debug, Parser)]
#[command(
    name = "synod",
    version,
    about = "Synod: the patterns of distributed systems, as clusters you can run and break.",
    long_about = None
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `synod`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a three-node replicated key-value cluster on this machine, kill its leader, and check the history.
    Demo {
        /// The system to run.
        #[command(flatten)]
        system: SystemArg,
        /// How long the workload runs, in seconds.
        #[arg(long, default_value_t = 10)]
        duration_s: u64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 8)]
        clients: u32,
        /// Nodes in the cluster (3 or 5; 2 to 512 for membership, 3 to 8 for twopc, partitions and ranges).
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        /// Keep the data directory after the run.
        #[arg(long)]
        keep_data: bool,
        /// Where to write the checked history for other checkers.
        #[command(flatten)]
        history: crate::history_file::HistoryArgs,
        /// Draw the run as one self-contained HTML page written to FILE: a lane per node
        /// with the leaders seen, the kill and the restart, operations, latency and the
        /// verdict.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
    /// Run one node of a cluster (of the Consistent Core by default: a replicated key-value store speaking RESP).
    ///
    /// Example, one of three nodes:
    /// synod node --id 1 --listen 127.0.0.1:7001 --client 127.0.0.1:6001
    ///   --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 --data-dir /tmp/synod/1
    ///
    /// Then `redis-cli -p 6001 set k v`, or `synod kv --addr 127.0.0.1:6001 get k`.
    /// Restarting on the same --data-dir recovers the node's log and state.
    ///
    /// Without secrets a node runs open (loopback addresses only, unless --insecure-open).
    /// Secured: --password-file (clients authenticate), --peer-secret-file (peers prove the
    /// cluster's secret), and --tls-cert-file, --tls-key-file and --tls-ca-file (TLS on
    /// both ports); all of them together work.
    Node {
        /// The system to run.
        #[command(flatten)]
        system: SystemArg,
        /// This node's id (1, 2, ...).
        #[arg(long)]
        id: u64,
        /// Address to listen on for the other nodes.
        #[arg(long)]
        listen: String,
        /// Address to listen on for RESP clients (redis-cli, synod kv). Default: the
        /// --listen host, with its port minus 1000 (7001 serves clients on 6001).
        #[arg(long)]
        client: Option<String>,
        /// Every member of the cluster, this node included, as `ID=ADDR` (their --listen
        /// addresses), comma-separated.
        #[arg(long)]
        peers: String,
        /// Directory for this node's log and snapshots; it remembers which node and
        /// cluster it belongs to.
        #[arg(long)]
        data_dir: PathBuf,
        /// Entries applied between snapshots of the state; each snapshot lets the log
        /// before it be deleted (default: the system's; the Consistent Core's is 10000).
        #[arg(long, value_name = "N")]
        snapshot_entries: Option<u64>,
        /// Leaderless store: the keys a node's quorum store holds at most (default 10000;
        /// `INFO` shows it). A write of another key past it is refused with an `OOM` error,
        /// not retried.
        #[arg(long, value_name = "N")]
        keys_max: Option<usize>,
        /// File holding the default user's password: clients must authenticate (`AUTH
        /// password`, `redis-cli -a`). Secrets are read from files, never taken on the
        /// command line, where `ps` shows them.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// File of named users, each read-write or read-only (`AUTH user password`, `redis-cli
        /// --user U --pass P`): one `NAME read-write|read-only sha256:SALT:HEX` a line (the
        /// README shows how to make one).
        #[arg(long, value_name = "FILE")]
        users_file: Option<PathBuf>,
        /// File holding the cluster's secret (the same file on every member, at least 16
        /// bytes): peers prove they hold it before anything they send is read.
        #[arg(long, value_name = "FILE")]
        peer_secret_file: Option<PathBuf>,
        /// Listen without a client password or a peer secret on addresses that are not
        /// loopback ones (refused otherwise): for a network where every process that can
        /// reach the node is trusted.
        #[arg(long)]
        insecure_open: bool,
        /// How long a new client connection has to authenticate before it is closed, when a
        /// password is set.
        #[arg(long, value_name = "MS", default_value_t = crate::runtime::auth::AUTH_TIMEOUT_MS)]
        auth_timeout_ms: u64,
        /// TLS on both ports: this node's PEM certificate chain. With --tls-key-file and
        /// --tls-ca-file (all three or none), the client port speaks TLS only (plain-text
        /// clients are refused) and peers authenticate each other with certificates the CA
        /// signed, each naming the host of its --peers address. Without them, both ports are
        /// plain TCP (for a trusted network).
        #[arg(long, value_name = "FILE", requires_all = ["tls_key_file", "tls_ca_file"])]
        tls_cert_file: Option<PathBuf>,
        /// TLS: this node's PEM private key.
        #[arg(long, value_name = "FILE", requires_all = ["tls_cert_file", "tls_ca_file"])]
        tls_key_file: Option<PathBuf>,
        /// TLS: the PEM certificate of the CA that signed every member's certificate.
        #[arg(long, value_name = "FILE", requires_all = ["tls_cert_file", "tls_key_file"])]
        tls_ca_file: Option<PathBuf>,
        /// TLS: clients must present a certificate the CA signed, too.
        #[arg(long, requires = "tls_ca_file")]
        tls_client_auth: bool,
        /// A name for the cluster, the same on every member (as etcd's
        /// `--initial-cluster-token`): nodes of clusters with other names refuse each other.
        /// Without it the cluster is named by its --peers list, which every member must then
        /// give alike; with it a new node can join a running cluster, listing the members and
        /// itself as its --peers (leaderless store; it needs an id above theirs).
        #[arg(long, value_name = "NAME")]
        cluster: Option<String>,
    },
    /// A client for a running cluster (by default of the Consistent Core).
    ///
    /// Commands: put K V, get K, delete K..., cas K EXPECTED NEW, scan PREFIX (LIMIT),
    /// shutdown (stops the one node --addr names, gracefully), or any RESP command (incr K,
    /// mget K..., info). Writes use a session, so a write retried after a lost reply is
    /// applied once.
    Kv {
        /// The system to run.
        #[command(flatten)]
        system: SystemArg,
        /// RESP address of any node (comma-separated to try several).
        #[arg(long, default_value = "127.0.0.1:6001")]
        addr: String,
        /// The level of get and put, by system. Consistent Core: linearizable (the
        /// default), lease or follower. Register store: linearizable, its only one.
        /// Leaderless store: quorum (the default, the level a redis-cli connection starts
        /// at), one or all, each the same key space as redis-cli's SET and GET; or
        /// linearizable, the ABD registers, a key space of its own.
        #[arg(long, value_name = "LEVEL")]
        read: Option<String>,
        /// The user to authenticate as (default: the default user, `AUTH password`).
        #[arg(long)]
        user: Option<String>,
        /// File holding the password to authenticate with (or set SYNOD_PASSWORD; never on
        /// the command line).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Speak TLS to the node (whose certificate must name the host in --addr).
        #[arg(long, requires = "cacert")]
        tls: bool,
        /// With --tls: the PEM certificate of the CA that signed the nodes' certificates.
        #[arg(long, value_name = "FILE", requires = "tls")]
        cacert: Option<PathBuf>,
        /// The command, for example `get key`, `put key value`, or `lock NAME [TTL_MS]` (takes
        /// a lock on a lease, prints its fencing token, releases when stdin closes).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run seeded, deterministic simulations of a reference system with faults.
    #[command(
        long_about = crate::simulate::HELP,
        group(clap::ArgGroup::new("which_seeds").required(true).args(["seed", "seeds"]))
    )]
    Sim {
        /// The simulation to run (default: the one of the --system).
        #[arg(
            value_name = "SIMULATION",
            conflicts_with = "system",
            value_parser = crate::simulate::System::parser()
        )]
        simulation: Option<crate::simulate::System>,
        /// The system whose simulation runs.
        #[command(flatten)]
        system: SystemArg,
        /// The seed of one run, reported in full.
        #[arg(long, value_name = "N")]
        seed: Option<u64>,
        /// Seeds A..B (B excluded) or A..=B, one line each, stopping at the first failure.
        #[arg(long, value_name = "A..B", value_parser = crate::simulate::SeedRange::parse)]
        seeds: Option<crate::simulate::SeedRange>,
        /// Events of the safety phase (faults on) per run.
        #[arg(
            long,
            value_name = "M",
            default_value_t = crate::simulate::EVENTS_DEFAULT,
            value_parser = crate::simulate::parse_events
        )]
        events: u64,
        /// Nodes in the cluster (3 or 5; 2 to 512 for membership, 3 to 8 for twopc, partitions and ranges).
        #[arg(long, default_value_t = 3, value_parser = crate::simulate::parse_nodes)]
        nodes: usize,
        /// Fault kinds: `swarm` (each seed picks a random subset), `all`, `none`, or a list
        /// such as `crash,partition,loss` (of partition, clog, loss, duplicate, reorder,
        /// crash, pause, clock-jump, clock-drift).
        #[arg(
            long,
            value_name = "KINDS",
            default_value = "swarm",
            value_parser = crate::simulate::FaultSelection::parse
        )]
        faults: crate::simulate::FaultSelection,
        /// Also print the last N events of each reported run.
        #[arg(
            long,
            value_name = "N",
            default_value_t = 0,
            value_parser = crate::simulate::parse_trace_lines
        )]
        trace: usize,
        /// Where to write the checked history for other checkers.
        #[command(flatten)]
        history: crate::history_file::HistoryArgs,
        /// Draw the run (with --seed) as one self-contained HTML page written to FILE: a
        /// lane per node with its role and term, faults, messages, operations, latency and
        /// the verdict.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
    /// Inspect a write-ahead log directory.
    Wal {
        /// What to do with the log.
        #[command(subcommand)]
        command: WalCommand,
    },
    /// List the headline benchmarks and how to run them.
    Bench,
}

/// The subcommands of `synod wal`.
#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Verify every record and print a summary.
    Check {
        /// The log directory.
        dir: PathBuf,
    },
    /// Print records.
    Dump {
        /// The log directory.
        dir: PathBuf,
        /// First index to print (default: the log's first).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Most records to print.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// The command line's definition: [`Cli`]'s, with the list of systems at the end of
/// `--help`.
#[must_use]
pub fn command() -> clap::Command {
    Cli::command().after_help(systems::listing())
}

/// Parses the process arguments and runs the chosen subcommand.
pub fn main() -> ExitCode {
    match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => run(cli),
        Err(e) => e.exit(),
    }
}

/// The system `arg` names, or the exit status of a usage error saying which part of it
/// (`part`, from the system's entry) is missing.
fn system_for<T>(
    subcommand: &str,
    arg: &SystemArg,
    part: impl FnOnce(&'static System) -> Option<T>,
) -> Result<T, ExitCode> {
    let system = systems::find(&arg.system).map_err(|e| {
        eprintln!("synod {subcommand}: {e}");
        ExitCode::from(EXIT_ERROR)
    })?;
    part(system).ok_or_else(|| {
        eprintln!(
            "synod {subcommand}: the {} system has no `synod {subcommand}` yet",
            system.name
        );
        ExitCode::from(EXIT_ERROR)
    })
}

/// Runs `synod node`: starts a node of the system and runs until the process is killed
/// (or the node stops itself); returns only on a start-up error.
fn node(start: systems::StartNode, options: &NodeOptions, settings: &NodeSettings) -> ExitCode {
    match start(options, settings) {
        Ok(at) => {
            println!(
                "synod node {}: peers on {}, RESP clients on {}, data in {}",
                options.id(),
                at.peers,
                at.clients,
                options.data_dir().display()
            );
            loop {
                std::thread::park();
            }
        }
        Err(e) => {
            eprintln!("synod node: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Demo {
            system,
            duration_s,
            clients,
            nodes,
            keep_data,
            history,
            html,
        } => {
            let history = match history.file() {
                Ok(history) => history,
                Err(e) => {
                    eprintln!("synod demo: {e}");
                    return ExitCode::from(crate::demo::EXIT_USAGE);
                }
            };
            let demo = match system_for("demo", &system, |s| s.demo) {
                Ok(demo) => demo,
                Err(code) => return code,
            };
            let options =
                crate::demo::Options::new(duration_s, clients, nodes, keep_data).map(|o| {
                    let o = match history {
                        Some(file) => o.with_history(file),
                        None => o,
                    };
                    match html {
                        Some(path) => o.with_html(path),
                        None => o,
                    }
                });
            match options {
                Ok(options) => demo(&options),
                Err(e) => {
                    eprintln!("synod demo: {e}");
                    ExitCode::from(crate::demo::EXIT_USAGE)
                }
            }
        }
        Command::Node {
            system,
            id,
            listen,
            client,
            peers,
            data_dir,
            snapshot_entries,
            keys_max,
            password_file,
            users_file,
            peer_secret_file,
            insecure_open,
            auth_timeout_ms,
            tls_cert_file,
            tls_key_file,
            tls_ca_file,
            tls_client_auth,
            cluster,
        } => {
            let start = match system_for("node", &system, |s| s.node) {
                Ok(start) => start,
                Err(code) => return code,
            };
            let tls = match (tls_cert_file, tls_key_file, tls_ca_file) {
                (Some(cert), Some(key), Some(ca)) => Some(crate::runtime::tls::TlsFiles {
                    cert,
                    key,
                    ca,
                    client_auth: tls_client_auth,
                }),
                _ => None,
            };
            let options = NodeOptions::new(id, &listen, client.as_deref(), &peers, &data_dir)
                .and_then(|o| {
                    o.password_file(password_file)
                        .users_file(users_file)
                        .peer_secret_file(peer_secret_file)
                        .insecure_open(insecure_open)
                        .auth_timeout_ms(auth_timeout_ms)
                        .cluster_name(cluster)
                })
                .and_then(|o| match tls {
                    Some(files) => o.with_tls(files),
                    None => Ok(o),
                });
            match options {
                Ok(options) => node(
                    start,
                    &options,
                    &NodeSettings {
                        snapshot_entries,
                        keys_max,
                    },
                ),
                Err(e) => {
                    eprintln!("synod node: {e}");
                    ExitCode::from(EXIT_ERROR)
                }
            }
        }
        Command::Kv {
            system,
            addr,
            read,
            user,
            password_file,
            tls,
            cacert,
            args,
        } => {
            match kv_credentials(user, password_file.as_deref()) {
                Ok(Some(credentials)) => crate::resp::client::set_program_credentials(credentials),
                Ok(None) => {}
                Err(e) => {
                    eprintln!("synod kv: {e}");
                    return ExitCode::from(EXIT_ERROR);
                }
            }
            if let (true, Some(ca)) = (tls, cacert) {
                match crate::runtime::tls::client_config(&ca) {
                    Ok(config) => crate::resp::client::use_tls(config),
                    Err(e) => {
                        eprintln!("synod kv: --cacert {e}");
                        return ExitCode::from(EXIT_ERROR);
                    }
                }
            }
            if read.as_deref().is_some_and(|level| level.trim().is_empty()) {
                eprintln!("synod kv: --read needs a level (leave it out for the system's default)");
                return ExitCode::from(crate::demo::EXIT_USAGE);
            }
            match system_for("kv", &system, |s| s.kv) {
                // Empty: the system's own default level.
                Ok(kv) => kv(&addr, read.as_deref().unwrap_or(""), &args),
                Err(code) => code,
            }
        }
        Command::Sim {
            simulation,
            system,
            seed,
            seeds,
            events,
            nodes,
            faults,
            trace,
            history,
            html,
        } => {
            use crate::simulate::{EXIT_USAGE, Seeds, Settings, run};
            let system = match simulation.map_or_else(|| system_for("sim", &system, |s| s.sim), Ok)
            {
                Ok(system) => system,
                Err(code) => return code,
            };
            let which = match (seed, seeds) {
                (Some(seed), None) => Seeds::One(seed),
                (None, Some(range)) => Seeds::Range(range),
                _ => {
                    eprintln!("synod sim: give exactly one of --seed N and --seeds A..B");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let settings = Settings::new(system, nodes, events, faults)
                .and_then(|s| s.with_trace_lines(trace))
                .map_err(|e| e.to_string())
                .and_then(|s| match history.file() {
                    Ok(Some(file)) => Ok(s.with_history(file)),
                    Ok(None) => Ok(s),
                    Err(e) => Err(e.to_string()),
                })
                .map(|s| match html {
                    Some(path) => s.with_html(path),
                    None => s,
                });
            match settings {
                Ok(settings) => run(which, &settings),
                Err(e) => {
                    eprintln!("synod sim: {e}");
                    ExitCode::from(EXIT_USAGE)
                }
            }
        }
        Command::Wal { command } => wal(command),
        Command::Bench => {
            crate::out!("{}", bench_listing());
            ExitCode::SUCCESS
        }
    }
}

/// The environment variable `synod kv` takes a password from when no `--password-file` is
/// given (as `redis-cli` takes `REDISCLI_AUTH`).
pub const PASSWORD_ENV: &str = "SYNOD_PASSWORD";

/// The credentials `synod kv` authenticates with: the password from `password_file` (its
/// first line) or [`PASSWORD_ENV`], as `user` if given; `None` if there is no password.
fn kv_credentials(
    user: Option<String>,
    password_file: Option<&std::path::Path>,
) -> Result<Option<crate::resp::client::Credentials>, String> {
    let password = match password_file {
        Some(path) => {
            let text = std::fs::read(path)
                .map_err(|e| format!("--password-file {}: {e}", path.display()))?;
            let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
            Some(line.strip_suffix(b"\r").unwrap_or(line).to_vec())
        }
        None => std::env::var_os(PASSWORD_ENV).map(std::ffi::OsString::into_encoded_bytes),
    };
    match (password, user) {
        (Some(password), user) => Ok(Some(crate::resp::client::Credentials { user, password })),
        (None, Some(user)) => Err(format!(
            "--user {user} needs a password: --password-file FILE or {PASSWORD_ENV}"
        )),
        (None, None) => Ok(None),
    }
}

/// A benchmark target of the workspace, as `synod bench` lists it.
#[derive(Debug, Clone, Copy)]
pub struct BenchTarget {
    /// The package, e.g. `synod-wal`.
    pub package: &'static str,
    /// The `[[bench]]` name.
    pub name: &'static str,
    /// What it measures, and against which baseline.
    pub measures: &'static str,
    /// The features it needs (its `required-features`), as `--features` takes them; empty
    /// for none.
    pub features: &'static str,
}

/// Every benchmark in the workspace. A test checks this list against the crates' manifests.
pub const BENCHES: &[BenchTarget] = &[
    BenchTarget {
        package: "synod-wal",
        name: "throughput",
        features: "",
        measures: "synced appends vs raw pwrite+fdatasync; 64-writer group commit vs its ceiling; \
                   recovery scan vs crc32",
    },
    BenchTarget {
        package: "synod-wal",
        name: "peers",
        features: "peers",
        measures: "synced appends beside okaywal 0.3 on the same disk in the same run: 1 and 64 \
                   writers, 256 B and 4 KiB records",
    },
    BenchTarget {
        package: "synod-wal",
        name: "codec",
        features: "",
        measures: "record encode/decode, ns per record (criterion)",
    },
    BenchTarget {
        package: "synod-clocks",
        name: "clocks",
        features: "",
        measures: "hybrid clock now() vs SystemTime::now(), and vs uhlc with --features peers",
    },
    BenchTarget {
        package: "synod-clocks",
        name: "micro",
        features: "",
        measures: "Lamport tick, HLC update, version-vector merge/compare (criterion)",
    },
    BenchTarget {
        package: "synod-transport",
        name: "throughput",
        features: "",
        measures: "request round trip, pipelining and batching vs raw TCP over loopback",
    },
    BenchTarget {
        package: "synod-transport",
        name: "codec",
        features: "",
        measures: "frame encode/decode, ns per frame (criterion)",
    },
    BenchTarget {
        package: "synod-quorum",
        name: "micro",
        features: "",
        measures: "quorum tracker decisions, ns per decision (criterion)",
    },
    BenchTarget {
        package: "synod-quorum",
        name: "versioned",
        features: "",
        measures: "multi-version store put/get/scan vs a plain BTreeMap (criterion)",
    },
    BenchTarget {
        package: "synod-consensus",
        name: "replicated_log",
        features: "",
        measures: "committed writes/s of a three-node Raft group in one process, 1 to 4096 clients, \
                   vs a naive copy, and vs openraft 0.9 in its own benchmark's shape with \
                   --features peers",
    },
    BenchTarget {
        package: "synod-consensus",
        name: "step",
        features: "",
        measures: "Raft step function, ns per message handled (criterion)",
    },
    BenchTarget {
        package: "synod-consensus",
        name: "wal_store",
        features: "wal",
        measures: "the WAL-backed store's synced hard-state writes: the one that compacts the meta \
                   log vs the median, with snapshots of 0 to 64 MiB",
    },
    BenchTarget {
        package: "synod-sim",
        name: "sim",
        features: "",
        measures: "simulated events per second and seeds per second",
    },
    BenchTarget {
        package: "synod-membership",
        name: "peers",
        features: "peers",
        measures: "SWIM with Lifeguard beside foca 2.0 under the same simulated network: detection \
                   periods, false positives under loss, rounds to converge after a heal, messages and \
                   bytes per member per period",
    },
    BenchTarget {
        package: "synod-partitioning",
        name: "partitioning",
        features: "",
        measures: "partitions moved on join and leave vs the least possible; load imbalance vs jump, \
                   rendezvous and ring hashing (and hashring, mpchash with --features peers); lookup \
                   vs the bare hash; range lookup vs BTreeMap::range; 2PC messages and syncs vs the minimum",
    },
    BenchTarget {
        package: "synod-examples",
        name: "consistent_core",
        features: "",
        measures: "three-node cluster of real processes: 1-client SET p50 vs fdatasync + 2 RTT; \
                   64-client SETs/s vs the group-commit ceiling",
    },
    BenchTarget {
        package: "synod-examples",
        name: "core_watch_lease",
        features: "",
        measures: "three-node cluster of real processes: watch delivery p50 and p99 (SET sent to \
                   event read) with 1 and 1,000 watchers, and LEASE KEEPALIVE p50 and 64-client \
                   rate, each vs a plain SET on the same cluster",
    },
    BenchTarget {
        package: "synod-examples",
        name: "core_vs_etcd",
        features: "peers",
        measures: "three-node cluster of real processes beside a three-member etcd 3.4 cluster \
                   (Debian's etcd-server; skipped without it), one load generator for both: \
                   writes/s and linearizable reads/s at 1, 16, 64 and 256 clients, Synod over etcd",
    },
    BenchTarget {
        package: "synod-examples",
        name: "leaderless",
        features: "",
        measures: "the leaderless store, three nodes of real processes: 64-client QUORUM SETs/s and \
                   GETs/s vs the Consistent Core's beside it; 1-client QUORUM SET p50 and p99 vs \
                   fdatasync + 1 RTT; partition replicas moved and keys streamed when a fourth node \
                   joins vs the least",
    },
];

/// The text `synod bench` prints.
pub fn bench_listing() -> String {
    let mut out = String::from(
        "Synod's benchmarks. Headline benchmarks measure their own baseline in the same run and print\n\
         `ratio <name> <value>` lines; results are recorded in BENCHMARKS.md.\n\n",
    );
    for b in BENCHES {
        let features = if b.features.is_empty() {
            String::new()
        } else {
            format!(" --features {}", b.features)
        };
        out.push_str(&format!(
            "  cargo bench -p {} --bench {}{features}\n      {}\n",
            b.package, b.name, b.measures
        ));
    }
    out.push_str(
        "\nSet SYNOD_BENCH_QUICK=1 for a run of under 30 seconds per headline benchmark.\n",
    );
    out
}

/// Exit code of `synod wal check` when the log is damaged.
pub const EXIT_DAMAGED: u8 = 1;

/// Exit code when a command cannot run at all (a missing directory, say).
pub const EXIT_ERROR: u8 = 2;

fn wal(command: WalCommand) -> ExitCode {
    match command {
        WalCommand::Check { dir } => match synod_wal::check(&dir) {
            Ok(report) => {
                crate::out!("{report}");
                if report.is_ok() {
                    ExitCode::SUCCESS
                } else {
                    eprintln!(
                        "synod wal check: {} is damaged (see `corruption` above)",
                        dir.display()
                    );
                    ExitCode::from(EXIT_DAMAGED)
                }
            }
            Err(e) => {
                eprintln!(
                    "synod wal check: cannot read the log in {}: {e}",
                    dir.display()
                );
                ExitCode::from(EXIT_ERROR)
            }
        },
        WalCommand::Dump { dir, from, limit } => {
            match synod_wal::dump(&dir, synod_wal::LogIndex::new(from), limit) {
                Ok(report) => {
                    crate::out!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!(
                        "synod wal dump: cannot read the log in {}: {e}",
                        dir.display()
                    );
                    ExitCode::from(EXIT_ERROR)
                }
            }
        }
    }
}
