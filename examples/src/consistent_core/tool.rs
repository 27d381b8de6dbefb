//! The Consistent Core's parts of the `synod node` and `synod kv` subcommands.
// tidy: driver: runs a node process and a command-line client.
//!
//! `synod node` starts a [`super::server`] ([`start_node`], as the system table names it).
//! `synod kv` is a client: `put`, `get`, `delete`, `cas`, `scan`, `incr`, or any raw
//! RESP command, sent with a session (so a retried write is applied once) to any node,
//! which forwards to the leader; and `lock NAME [TTL_MS]`, the lock recipe on a lease,
//! which prints its fencing token; and `watch PREFIX [--from REV]`, the resumable watch,
//! which prints every change and resumes on another node when its node dies.

use std::process::ExitCode;
use std::time::Duration;

use super::client::Client;
use super::commands::is_write_command;
use super::server::{CoreOptions, start};
use super::watch::PROGRESS_INTERVAL_MS;
use crate::resp::Value;
use crate::resp::client::Connection;
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
    if settings.keys_max.is_some() {
        return Err(StartError::Usage(
            "--keys-max: only the leaderless store takes it".into(),
        ));
    }
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
/// mode (empty: linearizable); `args` the command.
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
        ("scan", 1 | 2) => std::iter::once("SCANPREFIX".to_string())
            .chain(rest.iter().cloned())
            .collect(),
        ("put" | "get" | "delete" | "cas" | "scan", _) => {
            eprintln!("synod kv: wrong arguments for `{verb}`; see `synod kv --help`");
            return ExitCode::from(EXIT_USAGE);
        }
        _ => args.to_vec(),
    };
    if verb.eq_ignore_ascii_case("watch") {
        let from = match rest {
            [_] => Ok(None),
            [_, flag, rev] if flag == "--from" => match rev.parse::<u64>() {
                Ok(r) if r >= 1 => Ok(Some(r)),
                _ => Err(()),
            },
            _ => Err(()),
        };
        return match (rest.first(), from) {
            (Some(prefix), Ok(from)) => watch(&addrs, prefix, from),
            _ => {
                eprintln!("synod kv: usage: synod kv watch PREFIX [--from REVISION]");
                ExitCode::from(EXIT_USAGE)
            }
        };
    }
    if verb.eq_ignore_ascii_case("lock") {
        let ttl_ms = match rest {
            [_] => Ok(LOCK_TTL_MS_DEFAULT),
            [_, ttl] => ttl.parse::<u64>().map_err(|_| ()),
            _ => Err(()),
        };
        return match (rest.first(), ttl_ms) {
            (Some(name), Ok(ttl_ms)) => lock(&addrs, name, ttl_ms),
            _ => {
                eprintln!("synod kv: usage: synod kv lock NAME [TTL_MS]");
                ExitCode::from(EXIT_USAGE)
            }
        };
    }
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
    if !read.is_empty() && !read.eq_ignore_ascii_case("linearizable") {
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

/// The lock recipe's lease TTL unless given, in milliseconds.
pub const LOCK_TTL_MS_DEFAULT: u64 = 5_000;

/// The key a lock named `name` is held under.
#[must_use]
pub fn lock_key(name: &str) -> String {
    format!("lock/{name}")
}

/// `synod kv lock NAME [TTL_MS]`: the lock recipe. Grants a lease of `ttl_ms` (raised to
/// the cluster's minimum), creates `lock/NAME` under it with `SET ... NX LEASE id` (waiting,
/// and keeping its lease alive, while another holds it), prints `token N` where N is the
/// key's create revision (the fencing token: pass it as `SET k v FENCE lock/NAME N`, or
/// `FENCE lock/NAME N` before any other write), then
/// keeps the lease alive every third of its TTL. It releases the lock (revokes the lease)
/// when its standard input closes, or on SIGINT (Ctrl-C) or SIGTERM, and exits 0; a
/// signal while it waits for the lock revokes its lease as well. A second signal before
/// the release is done ends it at once (exit 130), leaving the lock to its lease's
/// expiry. It exits 1 as soon as a keep-alive is refused (the lease expired: someone else
/// may hold the lock now). Killed with SIGKILL, it does not release: the lock goes when
/// its lease expires, within the TTL.
fn lock(addrs: &[String], name: &str, ttl_ms: u64) -> ExitCode {
    use std::io::{BufRead, Write};
    use std::sync::mpsc;

    let key = lock_key(name);
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        eprintln!("synod kv lock: {what}: {e}");
        ExitCode::from(EXIT_UNAVAILABLE)
    };
    // A signal, or standard input closing (later), is the request to release.
    let (release, released) = mpsc::channel::<&'static str>();
    if let Err(e) = release_on_signals(release.clone()) {
        return fail("cannot take SIGINT and SIGTERM", &e);
    }
    let mut client = Client::new(addrs);
    if let Err(e) = client.register() {
        return fail("no session", &e);
    }
    let lease = match client.call(&[b"LEASE", b"GRANT", ttl_ms.to_string().as_bytes()]) {
        Ok(Value::Int(id)) => id.to_string(),
        Ok(other) => return fail("LEASE GRANT", &format!("{other:?}")),
        Err(e) => return fail("LEASE GRANT", &e),
    };
    let granted_ms = match client.call(&[b"LEASE", b"KEEPALIVE", lease.as_bytes()]) {
        Ok(Value::Int(ttl)) => u64::try_from(ttl).unwrap_or(ttl_ms),
        Ok(other) => return fail("LEASE KEEPALIVE", &format!("{other:?}")),
        Err(e) => return fail("LEASE KEEPALIVE", &e),
    };
    let every = Duration::from_millis((granted_ms / 3).max(1));
    let holder = format!("pid {}", std::process::id());
    let keep_alive =
        |client: &mut Client| match client.call(&[b"LEASE", b"KEEPALIVE", lease.as_bytes()]) {
            Ok(Value::Int(_)) => Ok(()),
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e.to_string()),
        };
    let revoke = |client: &mut Client, why: &str| match client.call(&[
        b"LEASE",
        b"REVOKE",
        lease.as_bytes(),
    ]) {
        Ok(Value::Int(_)) => {
            println!("released {key} ({why})");
            let _ = std::io::stdout().flush();
            ExitCode::SUCCESS
        }
        Ok(other) => fail("LEASE REVOKE", &format!("{other:?}")),
        Err(e) => fail("LEASE REVOKE", &e),
    };
    // Acquire: create the key under the lease, or wait for its holder's to go.
    let mut waiting = false;
    loop {
        if let Ok(why) = released.try_recv() {
            return revoke(&mut client, why);
        }
        let set = [
            b"SET".as_slice(),
            key.as_bytes(),
            holder.as_bytes(),
            b"NX",
            b"LEASE",
            lease.as_bytes(),
        ];
        match client.call(&set) {
            Ok(Value::Simple(ok)) if ok == "OK" => break,
            Ok(Value::Nil) => {
                if !waiting {
                    eprintln!("synod kv lock: {key} is held; waiting");
                    waiting = true;
                }
                if let Ok(why) = released.recv_timeout(every) {
                    return revoke(&mut client, why);
                }
                if let Err(e) = keep_alive(&mut client) {
                    return fail("lost the lease while waiting", &e);
                }
            }
            Ok(other) => return fail("SET", &format!("{other:?}")),
            Err(e) => return fail("SET", &e),
        }
    }
    let token = match client.call(&[b"GETREV", key.as_bytes()]) {
        Ok(Value::Array(items)) => match items.get(1) {
            Some(Value::Int(create)) => *create,
            _ => return fail("GETREV", &format!("{items:?}")),
        },
        Ok(other) => return fail("GETREV", &format!("{other:?}")),
        Err(e) => return fail("GETREV", &e),
    };
    println!("token {token}");
    println!(
        "holding {key} with lease {lease} (TTL {granted_ms} ms); close standard input or press Ctrl-C to release"
    );
    let _ = std::io::stdout().flush();
    // Standard input closing (or failing) asks for the release too.
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            if line.is_err() {
                break;
            }
        }
        let _ = release.send("standard input closed");
    });
    loop {
        match released.recv_timeout(every) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(e) = keep_alive(&mut client) {
                    eprintln!("synod kv lock: lost {key}: {e}");
                    return ExitCode::from(EXIT_UNAVAILABLE);
                }
            }
            Ok(why) => return revoke(&mut client, why),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return revoke(&mut client, "standard input closed");
            }
        }
    }
}

/// How long `synod kv watch` waits for anything from its node (events, or the progress
/// notification the node sends every [`PROGRESS_INTERVAL_MS`]) before it takes the node
/// for lost and resumes on another.
pub const WATCH_SILENCE_MAX: Duration = Duration::from_millis(3 * PROGRESS_INTERVAL_MS);
/// How long `synod kv watch` tries the nodes, one after another, before it gives up.
pub const WATCH_RECONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// `synod kv watch PREFIX [--from REV]`: the resumable watch (`WATCHSTREAM PREFIX`). Prints
/// `<revision> set <key> <value>` or `<revision> del <key>` for each change, in revision
/// order; when its node dies (or falls silent), resumes on another from one past the last
/// revision it was told of (an event's, or a progress notification's), so no event is
/// missed or printed twice. Exits 1 if the revision it needs is compacted everywhere it
/// tries, or no node answers for [`WATCH_RECONNECT_TIMEOUT`].
fn watch(addrs: &[String], prefix: &str, from: Option<u64>) -> ExitCode {
    use std::io::Write;
    use std::time::Instant;

    let mut next = from;
    let mut which = 0;
    let mut since = Instant::now();
    loop {
        if since.elapsed() > WATCH_RECONNECT_TIMEOUT {
            eprintln!(
                "synod kv watch: no node answered for {} s; giving up",
                WATCH_RECONNECT_TIMEOUT.as_secs()
            );
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
        let addr = &addrs[which % addrs.len()];
        which += 1;
        let Ok(mut conn) = Connection::open(addr) else {
            if which % addrs.len() == 0 {
                std::thread::sleep(Duration::from_millis(200));
            }
            continue;
        };
        let _ = conn.set_read_timeout(WATCH_SILENCE_MAX);
        let from_text = next.map(|n| n.to_string());
        let mut command: Vec<&[u8]> = vec![b"WATCHSTREAM", b"PREFIX", prefix.as_bytes()];
        if let Some(f) = &from_text {
            command.extend([b"FROM".as_slice(), f.as_bytes()]);
        }
        match conn.roundtrip(&command) {
            Ok(Value::Array(items))
                if items.first() == Some(&Value::Bulk(b"watching".to_vec())) =>
            {
                if let Some(Value::Int(start)) = items.get(2) {
                    next = u64::try_from(*start).ok();
                    eprintln!("# watching '{prefix}' from revision {start} on {addr}");
                }
            }
            Ok(Value::Error(e)) if e.starts_with("COMPACTED") => {
                eprintln!("synod kv watch: {e}");
                return ExitCode::from(EXIT_UNAVAILABLE);
            }
            Ok(_) | Err(_) => {
                if which % addrs.len() == 0 {
                    std::thread::sleep(Duration::from_millis(200));
                }
                continue;
            }
        }
        since = Instant::now();
        loop {
            let frame = match conn.receive() {
                Ok(Value::Array(items) | Value::Push(items)) => items,
                Ok(_) => continue,
                Err(e) => {
                    eprintln!(
                        "# lost {addr} ({e}); resuming from revision {} on another node",
                        next.unwrap_or(1)
                    );
                    break;
                }
            };
            let kind = match frame.first() {
                Some(Value::Bulk(k)) => k.as_slice(),
                _ => continue,
            };
            let number = |i: usize| match frame.get(i) {
                Some(Value::Int(n)) => u64::try_from(*n).ok(),
                _ => None,
            };
            match kind {
                b"event" => {
                    let Some(revision) = number(2) else { continue };
                    if let Some(Value::Array(changes)) = frame.get(3) {
                        let mut out = std::io::stdout().lock();
                        for change in changes {
                            let Value::Array(c) = change else { continue };
                            let text = |i: usize| match c.get(i) {
                                Some(Value::Bulk(b)) => String::from_utf8_lossy(b).into_owned(),
                                _ => String::new(),
                            };
                            if text(0) == "set" {
                                let _ = writeln!(out, "{revision} set {} {}", text(1), text(2));
                            } else {
                                let _ = writeln!(out, "{revision} del {}", text(1));
                            }
                        }
                        let _ = out.flush();
                    }
                    next = Some(revision + 1);
                }
                b"progress" => {
                    if let Some(revision) = number(2) {
                        next = Some(next.unwrap_or(1).max(revision + 1));
                    }
                }
                b"cancelled" => {
                    let why = match frame.get(2) {
                        Some(Value::Bulk(b)) => String::from_utf8_lossy(b).into_owned(),
                        _ => String::new(),
                    };
                    eprintln!("synod kv watch: cancelled: {why}");
                    return ExitCode::from(EXIT_UNAVAILABLE);
                }
                _ => {}
            }
        }
    }
}

/// Exit status of `synod kv lock` ended by a second signal before it could release.
const EXIT_SECOND_SIGNAL: i32 = 130;

/// Sends to `release` on the first SIGINT or SIGTERM (from a thread that waits for them);
/// a second one ends the process at once with [`EXIT_SECOND_SIGNAL`], for a release stuck
/// on a cluster that does not answer.
fn release_on_signals(release: std::sync::mpsc::Sender<&'static str>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("lock-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                seen += 1;
                if seen > 1 {
                    eprintln!("synod kv lock: a second signal; exiting without releasing");
                    std::process::exit(EXIT_SECOND_SIGNAL);
                }
                let _ = release.send(if signal == SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                });
            }
        })?;
    Ok(())
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
        Value::Nil | Value::Null => println!("{pad}(nil)"),
        Value::Boolean(b) => println!("{pad}({b})"),
        Value::Array(items) | Value::Push(items) if items.is_empty() => {
            println!("{pad}(empty array)");
        }
        Value::Array(items) | Value::Push(items) => {
            for item in items {
                print_value(item, depth + 1);
            }
        }
        Value::Map(pairs) => {
            for (k, v) in pairs {
                print_value(k, depth + 1);
                print_value(v, depth + 2);
            }
        }
    }
}
