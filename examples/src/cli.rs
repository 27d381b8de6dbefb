//! Argument parsing and dispatch for the `synod` program.
//!
//! Every subcommand is listed from the start so that `synod --help` shows the whole
//! program. A subcommand whose system has not been built yet prints which piece of work
//! it waits for and exits with [`EXIT_NOT_READY`]; none of them pretends to work.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code of a subcommand whose system does not exist yet.
pub const EXIT_NOT_READY: u8 = 3;

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
        /// How long the workload runs, in seconds.
        #[arg(long, default_value_t = 10)]
        duration_s: u64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 8)]
        clients: u32,
        /// Nodes in the cluster (3 or 5).
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        /// Keep the data directory after the run.
        #[arg(long)]
        keep_data: bool,
    },
    /// Run one node of a Consistent Core cluster.
    Node {
        /// This node's id.
        #[arg(long)]
        id: u64,
        /// Address to listen on for peers and clients.
        #[arg(long)]
        listen: String,
        /// Every member of the cluster, as `ID=ADDR`, comma-separated.
        #[arg(long)]
        peers: String,
        /// Directory for this node's log and snapshots.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// A client for a running Consistent Core cluster.
    Kv {
        /// Address of any node.
        #[arg(long, default_value = "127.0.0.1:7001")]
        addr: String,
        /// The command, for example `get key` or `set key value`.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run seeded, deterministic simulations of a reference system with faults.
    Sim {
        /// The system to simulate.
        system: String,
        /// The seed of one run.
        #[arg(long)]
        seed: Option<u64>,
        /// A range of seeds `A..B`, stopping at the first failure.
        #[arg(long)]
        seeds: Option<String>,
        /// Events to simulate per run.
        #[arg(long)]
        events: Option<u64>,
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

/// Parses the process arguments and runs the chosen subcommand.
pub fn main() -> ExitCode {
    run(Cli::parse())
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Demo { .. } => not_ready(
            "synod demo",
            "the Consistent Core reference system (issues 9 and 10)",
        ),
        Command::Node { .. } => not_ready(
            "synod node",
            "the Consistent Core reference system (issue 9)",
        ),
        Command::Kv { .. } => {
            not_ready("synod kv", "the Consistent Core reference system (issue 9)")
        }
        Command::Sim { .. } => not_ready(
            "synod sim",
            "the simulator and a simulated reference system (issues 6 and 10)",
        ),
        Command::Wal { command } => wal(command),
        Command::Bench => not_ready("synod bench", "the headline benchmarks (issues 3 to 8)"),
    }
}

/// Exit code of `synod wal check` when the log is damaged.
pub const EXIT_DAMAGED: u8 = 1;

/// Exit code when a command cannot run at all (a missing directory, say).
pub const EXIT_ERROR: u8 = 2;

fn wal(command: WalCommand) -> ExitCode {
    match command {
        WalCommand::Check { dir } => match synod_wal::check(&dir) {
            Ok(report) => {
                print!("{report}");
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
                    print!("{report}");
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

fn not_ready(what: &str, needs: &str) -> ExitCode {
    eprintln!("{what}: not built yet. It needs {needs}, which has not landed.");
    eprintln!("See README.md for what works today.");
    ExitCode::from(EXIT_NOT_READY)
}
