//! The Consistent Core's parts of the `synod node` and `synod kv` subcommands.
// tidy: driver: runs a node process and a command-line client.
//!
//! `synod node` starts a [`super::server`] ([`start_node`], as the system table names it).
//! `synod kv` is a client: `put`, `get`, `delete`, `cas`, `scan`, `incr`, or any raw
//! RESP command, sent with a session (so a retried write is applied once) to any node,
//! which forwards to the leader.

use std::process::ExitCode;

use super::client::Client;
use super::commands::is_write_command;
use super::server::{CoreOptions, start};
use crate::resp::Value;
use crate::runtime::{NodeOptions, StartError};
use crate::systems::{Listening, NodeSettings};

/// Exit code for a usage error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the cluster could not answer.
pub const EXIT_UNAVAILABLE: u8 = 1;

/// Starts a node of the Consistent Core for `synod node` (see
/// [`crate::systems::StartNode`]).
///
/// # Errors
///
/// As [`start`].
pub fn start_node(options: &NodeOptions, settings: &NodeSettings) -> Result<Listening, StartError> {
    let core = match settings.snapshot_entries {
        Some(entries) => CoreOptions::default().snapshot_entries(entries),
        None => CoreOptions::default(),
    };
    let server = start(options, &core)?;
    Ok(Listening {
        peers: server.peer_addr(),
        clients: server.client_addr(),
    })
}

/// Runs `synod kv`: `addrs` is a comma-separated list of RESP addresses; `read` the read
/// mode; `args` the command.
pub fn run_kv(addrs: &str, read: &str, args: &[String]) -> ExitCode {
    let addrs: Vec<String> = addrs
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect();
    if addrs.is_empty() {
        eprintln!("synod kv: give the address of at least one node with --addr HOST:PORT[,...]");
        return ExitCode::from(EXIT_USAGE);
    }
    let Some((verb, rest)) = args.split_first() else {
        eprintln!(
            "synod kv: give a command: put K V, get K, delete K, cas K EXPECTED NEW, scan PREFIX [LIMIT], incr K, or any RESP command"
        );
        return ExitCode::from(EXIT_USAGE);
    };
    let command: Vec<String> = match (verb.to_ascii_lowercase().as_str(), rest.len()) {
        ("put", 2) => vec!["SET".into(), rest[0].clone(), rest[1].clone()],
        ("get", 1) => vec!["GET".into(), rest[0].clone()],
        ("delete", n) if n >= 1 => std::iter::once("DEL".to_string())
            .chain(rest.iter().cloned())
            .collect(),
        ("cas", 3) => vec![
            "CAS".into(),
            rest[0].clone(),
            rest[1].clone(),
            rest[2].clone(),
        ],
        ("scan", 1 | 2) => std::iter::once("SCAN".to_string())
            .chain(rest.iter().cloned())
            .collect(),
        ("put" | "get" | "delete" | "cas" | "scan", _) => {
            eprintln!("synod kv: wrong arguments for `{verb}`; see `synod kv --help`");
            return ExitCode::from(EXIT_USAGE);
        }
        _ => args.to_vec(),
    };
    let mut client = Client::new(&addrs);
    if command[0].eq_ignore_ascii_case("shutdown") {
        if addrs.len() != 1 || command.len() != 1 {
            eprintln!(
                "synod kv: shutdown stops one node: give only its address (--addr HOST:PORT) and no arguments"
            );
            return ExitCode::from(EXIT_USAGE);
        }
        return match client.shutdown() {
            Ok(()) => {
                println!("OK: the node at {} has shut down", addrs[0]);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("synod kv: shutdown of {}: {e}", addrs[0]);
                ExitCode::from(EXIT_UNAVAILABLE)
            }
        };
    }
    if !read.eq_ignore_ascii_case("linearizable") {
        match client.call(&[b"CLIENT", b"READMODE", read.as_bytes()]) {
            Ok(Value::Error(e)) => {
                eprintln!("synod kv: --read {read}: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("synod kv: {e}");
                return ExitCode::from(EXIT_UNAVAILABLE);
            }
        }
    }
    if is_write_command(&command)
        && let Err(e) = client.register()
    {
        eprintln!("synod kv: {e}");
        return ExitCode::from(EXIT_UNAVAILABLE);
    }
    let bytes: Vec<&[u8]> = command.iter().map(String::as_bytes).collect();
    match client.call(&bytes) {
        Ok(value) => {
            let failed = matches!(value, Value::Error(_));
            print_value(&value, 0);
            if failed {
                ExitCode::from(EXIT_UNAVAILABLE)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("synod kv: {e}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}

fn print_value(value: &Value, depth: usize) {
    let pad = "  ".repeat(depth);
    match value {
        Value::Simple(s) => println!("{pad}{s}"),
        Value::Error(e) => println!("{pad}(error) {e}"),
        Value::Int(n) => println!("{pad}(integer) {n}"),
        Value::Bulk(b) if b.contains(&b'\n') => {
            print!("{}", String::from_utf8_lossy(b).replace('\r', ""));
        }
        Value::Bulk(b) => println!("{pad}\"{}\"", String::from_utf8_lossy(b)),
        Value::Nil => println!("{pad}(nil)"),
        Value::Array(items) if items.is_empty() => println!("{pad}(empty array)"),
        Value::Array(items) => {
            for item in items {
                print_value(item, depth + 1);
            }
        }
    }
}
