//! The register store's client: `synod kv --system register`.
// tidy: driver: opens connections to nodes.
//!
//! `put K V` and `get K` (or any RESP command) sent to the first node of `--addr` that
//! answers. Any node serves any request (there is no leader), so a node that cannot be
//! reached is skipped for the next; a `TRYAGAIN` answer is tried at the next node too, and
//! `UNKNOWN` (a write that may or may not be stored) is printed as it is: sending the
//! write again is the user's choice.

use std::process::ExitCode;

use crate::resp::Value;
use crate::resp::client::{Connection, address_list};

/// Exit code for a usage error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when no node could answer.
pub const EXIT_UNAVAILABLE: u8 = 1;

/// Sends `command` to each of `addrs` in turn until one answers other than `TRYAGAIN`:
/// that answer, or the last error.
///
/// # Errors
///
/// The last node's error, when none answered.
pub fn call(addrs: &[String], command: &[&[u8]]) -> Result<Value, String> {
    let mut last = String::from("no address given");
    for addr in addrs {
        match Connection::open(addr).and_then(|mut c| c.roundtrip(command)) {
            Ok(Value::Error(e)) if e.starts_with("TRYAGAIN") => last = format!("{addr}: {e}"),
            Ok(value) => return Ok(value),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(last)
}

/// Runs `synod kv --system register`: `addrs` is a comma-separated list of RESP addresses;
/// `read` must be `linearizable` or empty (every read of the register is linearizable);
/// `args` the command.
pub fn run_kv(addrs: &str, read: &str, args: &[String]) -> ExitCode {
    let addrs = address_list(addrs);
    if addrs.is_empty() {
        eprintln!("synod kv: give the address of at least one node with --addr HOST:PORT[,...]");
        return ExitCode::from(EXIT_USAGE);
    }
    if !read.is_empty() && !read.eq_ignore_ascii_case("linearizable") {
        eprintln!("synod kv: --read {read}: the register store's reads are all linearizable");
        return ExitCode::from(EXIT_USAGE);
    }
    let command = match crate::runtime::served::kv_command(args) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("synod kv: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let bytes: Vec<&[u8]> = command.iter().map(String::as_bytes).collect();
    match call(&addrs, &bytes) {
        Ok(Value::Error(e)) => {
            println!("(error) {e}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
        Ok(Value::Bulk(b)) => {
            println!("\"{}\"", String::from_utf8_lossy(&b));
            ExitCode::SUCCESS
        }
        Ok(Value::Nil) => {
            println!("(nil)");
            ExitCode::SUCCESS
        }
        Ok(Value::Simple(s)) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Ok(other) => {
            println!("{other:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("synod kv: {e}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}
