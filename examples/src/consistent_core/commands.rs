//! The command table: RESP commands in, [`Request`]s to the node and RESP replies out.
//!
//! Pure functions over a connection's state ([`ConnState`]: its session and read mode),
//! so that the table is tested without sockets. The server calls [`execute`] for each
//! command, runs the [`Action`] it returns, and passes the node's [`Response`] back
//! through [`ConnState::settle`], which turns it into a RESP [`Value`] and moves the
//! session's sequence number on.
//!
//! | Command | Meaning |
//! |---|---|
//! | `PING [msg]` | `PONG` |
//! | `GET k`, `MGET k...`, `EXISTS k...` | reads, in the connection's read mode |
//! | `SET k v [NX\|XX] [EX s\|PX ms\|EXAT unix-s\|PXAT unix-ms\|KEEPTTL\|LEASE id] [FENCE lock token]` | write; the key expires after the time given (as Redis's), keeps its expiry (`KEEPTTL`), or is attached to a lease and deleted with it (`LEASE`, Synod's); without any, a `SET` clears the key's expiry. `EXAT`/`PXAT` are converted to a time to live on the wall clock of the node that receives the command. With `FENCE`, applied only if `lock` exists and was created at revision `token` (the lock's fencing token), else refused with a `FENCED` error |
//! | `EXPIRE k s [NX\|XX\|GT\|LT]`, `PEXPIRE k ms [...]` | sets the key's expiry (`1`), or not (`0`: absent key, condition false; a key without expiry counts as infinite); zero or less deletes the key |
//! | `TTL k`, `PTTL k` | the time left, in seconds (rounded) or milliseconds; `-2` absent key, `-1` no expiry |
//! | `PERSIST k` | removes the key's expiry: `1` if it had one |
//! | `LEASE GRANT ttl_ms` | grants a lease (through the log), answers its id; a TTL under the minimum (1.5 election timeouts) is raised to it |
//! | `LEASE KEEPALIVE id` | restarts the lease's TTL (through the log), answers the TTL in ms; an error once it expired or was revoked |
//! | `LEASE REVOKE id` | removes the lease and deletes its keys; answers how many |
//! | `LEASE TTL id` | the time left on the lease in ms (an estimate from the last renewal or checkpoint), `-2` if there is none |
//! | `DEL k...`, `INCR k`, `INCRBY k n`, `DECR k` | writes |
//! | `FENCE lock token <write>` | any write (`DEL`, `INCR`, `SET`, `EXPIRE`, ...; not `EXEC`: queue `FENCE ...` inside `MULTI` instead), applied only if `lock` exists and was created at revision `token`, else refused with a `FENCED` error and nothing written |
//! | `CAS k expected new` | compare-and-set: `1` if written, `0` if the value differed |
//! | `SCAN cursor [MATCH pattern] [COUNT n] [TYPE string]` | Redis's cursor scan: `[next cursor, [keys...]]`, from cursor `0` until the next cursor is `0`; about `n` keys looked at per call (default 10, at most [`SCAN_COUNT_MAX`](super::kv::SCAN_COUNT_MAX)); a key present for the whole scan is returned at least once, on any node (see [`scan_hash`](super::kv::scan_hash)) |
//! | `SCANPREFIX prefix [limit]` | key-value pairs whose key starts with `prefix`, flat, in key order (default limit 1000) |
//! | `KEYS pattern` | every key matching the glob-style pattern ([`super::pattern`]), in key order |
//! | `DBSIZE` | how many keys the store holds |
//! | `MULTI`, `EXEC`, `DISCARD` | a transaction: commands after `MULTI` are queued (`+QUEUED`; one refused here makes `EXEC` answer `EXECABORT`), and `EXEC` applies them as one log entry, atomically at one revision on every replica, answering each one's reply; at most [`TRANSACTION_COMMANDS_MAX`] commands |
//! | `WATCH k...`, `UNWATCH` | `EXEC` answers nil and applies nothing if a watched key was changed since `WATCH` (its mod revision moved; a key absent at `WATCH`, created and deleted again before `EXEC` counts as unchanged); `EXEC` and `DISCARD` unwatch; at most [`WATCHED_KEYS_MAX`] keys |
//! | `HELLO [2\|3] [AUTH user pass] [SETNAME name]` | switches the connection to RESP2 or RESP3 (replies then use RESP3's null, maps and push frames) and answers the server's details (`NOPROTO` for another version; its `AUTH` is taken by the RESP server before the table sees it, see [`crate::resp::serve`]) |
//! | `AUTH [user] password` | authenticates the connection (answered by the RESP server, for every system: [`crate::resp::serve`]) |
//! | `SUBSCRIBE __keyspace@0__:key...`, `PSUBSCRIBE __keyspace@0__:pattern...` | Redis pub/sub of key events ([`super::watch`]): each channel confirmed `[subscribe, channel, count]`; then `[message, channel, "set <revision>"\|"del <revision>"]` for every change of the key (`[pmessage, pattern, channel, payload]` for a glob-style pattern), as arrays in RESP2 and push frames after `HELLO 3`; from the node's next revision. Other channels are refused (there is no `PUBLISH`) |
//! | `UNSUBSCRIBE [channel...]`, `PUNSUBSCRIBE [pattern...]` | `[unsubscribe, channel, count]` each (none given: every one) |
//! | `WATCHSTREAM KEY k \| PREFIX p [FROM rev]` | the resumable watch: `[watching, id, start]`, then `[event, id, revision, [[set\|del, key, value, create_revision, version]...]]` per revision (never split, in order, none skipped or repeated, from `rev` inclusive), `[progress, id, revision]` (every event up to it delivered), `[cancelled, id, "COMPACTED ..."]`; refused with `COMPACTED <compacted> <current>: ...` if `rev` is no longer in the node's history |
//! | `WATCHSTREAM PROGRESS [id]`, `WATCHSTREAM CANCEL id` | asks for a progress notification (of one stream or all the connection's); cancels a stream (`1`, or `0` if not the connection's) |
//! | `GETREV k` | `[value, create_revision, mod_revision, version, revision]`: the key's value (nil if absent) and revisions (0 if absent), and the store's revision, read together in the connection's read mode |
//! | `INFO` | role, leader, term, commit and applied index, the store's revision |
//! | `CLIENT REGISTER` | opens a session for this connection; its writes are then applied once however often retried (past [`SESSIONS_MAX`](super::kv::SESSIONS_MAX) open sessions it closes the least recently active one that never applied a write, or is refused with a `SESSION` error if all have) |
//! | `CLIENT SESSION id next_seq` | resumes a session on a new connection; resend the unanswered write with it |
//! | `CLIENT UNREGISTER` | closes the session |
//! | `CLIENT INFO` | the session id and next sequence number |
//! | `CLIENT READMODE linearizable\|lease\|follower` | how reads are served (default linearizable) |
//! | `READONLY` / `READWRITE` | follower reads on / off (as Redis Cluster spells it) |
//! | `QUIT` | closes the connection |
//!
//! Two errors say whether a request may be sent again. `TRYAGAIN ...`: it was certainly
//! not carried out (no leader, the node is shutting down...), so resending it is safe.
//! `UNKNOWN ...`: a write that may or may not have been applied (the leader did not answer
//! in time, or lost track of it in a leadership change). Resent in the same session (on
//! this connection, or with `CLIENT SESSION` on another), it is applied at most once; the
//! session's next write that is a different command takes the next sequence number, so it
//! is never mistaken for the unanswered one. Without a session, resending it may apply it
//! twice. Any other answer to a write in a session, an error included (refused by this
//! table or by the state machine), spends its sequence number.

use synod_consensus::session::SessionId;

use synod_membership::lease::{LeaseCommand, LeaseId};

use super::kv::{ExpireCondition, Expiry, KvCommand, KvQuery, KvReply, PutCondition, TxOp};
use super::node::{Info, ReadMode, Request, Response, SessionSeq};
use super::watch::{WatchCall, WatchOwner, check_keyspace};
use crate::resp::Value;
use synod_membership::watch::Filter;

/// Most pairs `SCANPREFIX` returns unless told.
pub const SCAN_LIMIT_DEFAULT: usize = 1000;
/// Keys `SCAN` looks at per call unless told (Redis's default).
pub const SCAN_COUNT_DEFAULT: usize = 10;
/// Commands one transaction may queue.
pub const TRANSACTION_COMMANDS_MAX: usize = 10_000;
/// Keys one connection may watch.
pub const WATCHED_KEYS_MAX: usize = 10_000;

/// A transaction being queued (after `MULTI`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Multi {
    /// The commands queued.
    pub ops: Vec<TxOp>,
    /// A command was refused while queuing: `EXEC` answers `EXECABORT`.
    pub dirty: bool,
}

/// What a connection remembers between commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnState {
    /// The session and its next sequence number.
    pub session: Option<(SessionId, u64)>,
    /// How reads are served.
    pub read_mode: ReadMode,
    /// The session's write answered `UNKNOWN`: the session's sequence number is spent on
    /// it. The same command sent again reuses the number (and is applied at most once);
    /// any other write takes the next one.
    pub unanswered: Option<KvCommand>,
    /// The transaction being queued, after `MULTI`.
    pub multi: Option<Multi>,
    /// Keys `WATCH`ed, with their mod revisions then.
    pub watched: Vec<(Vec<u8>, u64)>,
    /// The RESP version the client speaks: 2, or 3 after `HELLO 3`.
    pub protocol: u8,
    /// The connection as an owner of watchers, once it has subscribed or watched.
    pub watch: Option<WatchOwner>,
}

impl Default for ConnState {
    fn default() -> Self {
        ConnState {
            session: None,
            read_mode: ReadMode::Linearizable,
            unanswered: None,
            multi: None,
            watched: Vec::new(),
            protocol: 2,
            watch: None,
        }
    }
}

/// What the server must do for a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Reply at once.
    Reply(Value),
    /// Reply and close the connection.
    Close(Value),
    /// Run the request through the node; reply with [`ConnState::settle`].
    Call(Request),
    /// Reply with the node's [`Info`], rendered by [`render_info`].
    Info,
    /// Run a watch command on the node's watches ([`super::watch::Watches::call`]), as
    /// this connection (numbered with [`ConnState::watch_owner`]).
    Watch(WatchCall),
    /// Stop the node gracefully: refuse new requests, finish those in flight, hand the
    /// leadership over, make the log durable, and exit (the connection closes without a
    /// reply, as Redis's `SHUTDOWN` does).
    Shutdown,
}

fn err(text: impl Into<String>) -> Action {
    Action::Reply(Value::Error(text.into()))
}

fn arity(name: &str) -> Action {
    err(format!(
        "ERR wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    ))
}

fn parse_i64(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// `SHUTDOWN [NOSAVE|SAVE] [NOW] [FORCE]`: the modifiers change nothing here (every
/// acknowledged write is already durable, and the node never waits long), so they are
/// accepted; `ABORT` is not (nothing can be called off).
fn shutdown(modifiers: &[Vec<u8>]) -> Action {
    for m in modifiers {
        match String::from_utf8_lossy(m).to_ascii_uppercase().as_str() {
            "NOSAVE" | "SAVE" | "NOW" | "FORCE" => {}
            "ABORT" => {
                return err("ERR SHUTDOWN ABORT is not supported: no shutdown can be called off");
            }
            other => {
                return err(format!(
                    "ERR syntax error: SHUTDOWN does not take `{other}`"
                ));
            }
        }
    }
    Action::Shutdown
}

/// The commands that change the store (numbered in a session), besides `LEASE`'s writes
/// (see [`is_write_command`]).
pub const WRITE_COMMANDS: [&str; 10] = [
    "SET", "DEL", "INCR", "DECR", "INCRBY", "CAS", "EXPIRE", "PEXPIRE", "PERSIST", "EXEC",
];

/// Whether a command changes the store, so that a session numbers it: one of
/// [`WRITE_COMMANDS`], `LEASE` with any subcommand but `TTL`, or `FENCE` with a command.
pub fn is_write_command<A: AsRef<[u8]>>(args: &[A]) -> bool {
    let Some(name) = args.first().map(AsRef::as_ref) else {
        return false;
    };
    if name.eq_ignore_ascii_case(b"FENCE") {
        return args.len() > 3;
    }
    if name.eq_ignore_ascii_case(b"LEASE") {
        return args
            .get(1)
            .is_some_and(|sub| !sub.as_ref().eq_ignore_ascii_case(b"TTL"));
    }
    crate::resp::is_one_of(name, &WRITE_COMMANDS)
}

/// Whether a read-only user is refused the command `args`: a write
/// ([`is_write_command`]), or `SHUTDOWN`.
#[must_use]
pub fn writes(args: &[Vec<u8>]) -> bool {
    is_write_command(args)
        || args
            .first()
            .is_some_and(|name| name.eq_ignore_ascii_case(b"SHUTDOWN"))
}

/// Decides what to do with one command, without a wall clock (`SET ... EXAT|PXAT` is
/// refused); see [`execute_at`].
pub fn execute(conn: &mut ConnState, args: &[Vec<u8>]) -> Action {
    execute_at(conn, args, None)
}

/// Decides what to do with one command. `wall_ms` is the wall clock of the node that
/// received it, in milliseconds since the Unix epoch: `SET ... EXAT|PXAT` is converted to
/// a time to live against it here, so the log carries only durations (a node whose wall
/// clock is off converts wrongly, by as much as it is off; the leader's expiry runs on its
/// monotonic clock).
pub fn execute_at(conn: &mut ConnState, args: &[Vec<u8>], wall_ms: Option<u64>) -> Action {
    if conn.subscribed() && conn.protocol == 2 {
        // A RESP2 subscriber reads pushed messages as replies: as in Redis, it may only
        // change its subscriptions until it has none.
        return subscribed_context(conn, args);
    }
    let action = match &conn.multi {
        Some(_) if !is_transaction_command(args) => queue(conn, args, wall_ms),
        _ => dispatch(conn, args, wall_ms),
    };
    if let (Action::Reply(_), Some((session, seq))) = (&action, conn.session)
        && is_write_command(args)
    {
        // A write answered here (refused for its syntax or arity, or queued in a
        // transaction) spends its sequence number, as one refused by the state machine
        // does: a client moves its count on after any answer but `TRYAGAIN`, `UNKNOWN` and
        // `SESSION` errors, and cannot tell the two refusals apart (`INCRBY k x` and
        // `INCR` of a non-number say the same). Were the two counts out of step, a write
        // resent on a new connection (`CLIENT SESSION` with the client's count) would
        // carry another number than the one it was applied under, and be applied twice.
        conn.session = Some((session, seq + 1));
        conn.unanswered = None;
    }
    action
}

/// The commands a RESP2 connection with watchers may run.
pub const SUBSCRIBED_COMMANDS: [&str; 7] = [
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "UNSUBSCRIBE",
    "PUNSUBSCRIBE",
    "WATCHSTREAM",
    "PING",
    "QUIT",
];

/// A command of a RESP2 connection with watchers: one of [`SUBSCRIBED_COMMANDS`] (`PING`
/// answered `[pong, message]`, as Redis does there), or an error.
fn subscribed_context(conn: &mut ConnState, args: &[Vec<u8>]) -> Action {
    let name = String::from_utf8_lossy(args.first().map(Vec::as_slice).unwrap_or_default())
        .to_ascii_uppercase();
    match (name.as_str(), &args[1..]) {
        ("PING", [] | [_]) => Action::Reply(Value::Array(vec![
            Value::Bulk(b"pong".to_vec()),
            Value::Bulk(args.get(1).cloned().unwrap_or_default()),
        ])),
        (n, _) if SUBSCRIBED_COMMANDS.contains(&n) => dispatch(conn, args, None),
        _ => err(format!(
            "ERR Can't execute '{}': only (P)SUBSCRIBE / (P)UNSUBSCRIBE / WATCHSTREAM / PING / QUIT are allowed in this context",
            name.to_ascii_lowercase()
        )),
    }
}

/// `WATCHSTREAM KEY|PREFIX bytes [FROM revision]`, `WATCHSTREAM PROGRESS [id]`,
/// `WATCHSTREAM CANCEL id`.
fn watch_stream(rest: &[Vec<u8>]) -> Action {
    let usage = || {
        err(
            "ERR usage: WATCHSTREAM KEY|PREFIX <bytes> [FROM <revision>] | WATCHSTREAM PROGRESS [id] | WATCHSTREAM CANCEL <id>",
        )
    };
    let number = |arg: &Vec<u8>| parse_i64(arg).and_then(|n| u64::try_from(n).ok());
    let Some((sub, rest)) = rest.split_first() else {
        return usage();
    };
    let sub = String::from_utf8_lossy(sub).to_ascii_uppercase();
    match (sub.as_str(), rest) {
        ("KEY" | "PREFIX", [bytes, options @ ..]) => {
            let filter = if sub == "KEY" {
                Filter::Key(bytes.clone().into())
            } else {
                Filter::Prefix(bytes.clone().into())
            };
            let from = match options {
                [] => None,
                [from, revision] if from.eq_ignore_ascii_case(b"FROM") => match number(revision) {
                    Some(r) if r >= 1 => Some(r),
                    _ => return err("ERR FROM takes a revision, from 1"),
                },
                _ => return usage(),
            };
            Action::Watch(WatchCall::Stream { filter, from })
        }
        ("PROGRESS", []) => Action::Watch(WatchCall::Progress(None)),
        ("PROGRESS", [id]) => match number(id) {
            Some(id) => Action::Watch(WatchCall::Progress(Some(id))),
            None => usage(),
        },
        ("CANCEL", [id]) => match number(id) {
            Some(id) => Action::Watch(WatchCall::Cancel(id)),
            None => usage(),
        },
        _ => usage(),
    }
}

/// `SUBSCRIBE`/`PSUBSCRIBE` of keyspace channels or patterns.
fn subscribe(names: &[Vec<u8>], patterns: bool) -> Action {
    if let Some(e) = names.iter().find_map(|n| check_keyspace(n).err()) {
        return err(e);
    }
    Action::Watch(if patterns {
        WatchCall::PSubscribe(names.to_vec())
    } else {
        WatchCall::Subscribe(names.to_vec())
    })
}

/// The commands a connection in `MULTI` runs at once rather than queues.
fn is_transaction_command(args: &[Vec<u8>]) -> bool {
    let name = args.first().map(Vec::as_slice).unwrap_or_default();
    crate::resp::is_one_of(
        name,
        &["EXEC", "DISCARD", "MULTI", "WATCH", "QUIT", "UNWATCH"],
    )
}

/// Queues a command of a transaction: `QUEUED`, or its error (which makes `EXEC` fail).
fn queue(conn: &mut ConnState, args: &[Vec<u8>], wall_ms: Option<u64>) -> Action {
    // Parsed on a connection of its own, so that nothing of this one's session moves.
    let mut scratch = ConnState {
        read_mode: conn.read_mode,
        ..ConnState::default()
    };
    let op = match dispatch(&mut scratch, args, wall_ms) {
        Action::Call(Request::Write { command, .. }) => Ok(TxOp::Write(command)),
        Action::Call(Request::Read { query, .. }) => Ok(TxOp::Read(query)),
        Action::Reply(Value::Error(e)) => Err(e),
        _ => Err(format!(
            "ERR Command not allowed inside a transaction: '{}'",
            String::from_utf8_lossy(&args[0]).to_ascii_lowercase()
        )),
    };
    let Some(multi) = conn.multi.as_mut() else {
        return err("ERR not in a transaction");
    };
    match op {
        Ok(_) if multi.ops.len() >= TRANSACTION_COMMANDS_MAX => {
            multi.dirty = true;
            err(format!(
                "ERR a transaction holds at most {TRANSACTION_COMMANDS_MAX} commands"
            ))
        }
        Ok(op) => {
            multi.ops.push(op);
            Action::Reply(Value::Simple("QUEUED".into()))
        }
        Err(e) => {
            multi.dirty = true;
            err(e)
        }
    }
}

/// `EXEC`: the queued commands as one write, unless one was refused.
fn exec(conn: &mut ConnState) -> Action {
    let Some(multi) = conn.multi.take() else {
        return err("ERR EXEC without MULTI");
    };
    let watched = std::mem::take(&mut conn.watched);
    if multi.dirty {
        return err("EXECABORT Transaction discarded because of previous errors.");
    }
    write(
        conn,
        KvCommand::Transaction {
            watched,
            ops: multi.ops,
        },
    )
}

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]`.
fn scan(conn: &ConnState, cursor: &[u8], options: &[Vec<u8>]) -> Action {
    let Some(cursor) = std::str::from_utf8(cursor)
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return err("ERR invalid cursor");
    };
    let (mut pattern, mut count) = (None, SCAN_COUNT_DEFAULT);
    let mut strings = true;
    let mut options = options.iter();
    while let Some(option) = options.next() {
        let Some(value) = options.next() else {
            return err("ERR syntax error");
        };
        match String::from_utf8_lossy(option)
            .to_ascii_uppercase()
            .as_str()
        {
            "MATCH" => pattern = Some(value.clone()),
            "COUNT" => match parse_i64(value).and_then(|n| usize::try_from(n).ok()) {
                Some(n) if n > 0 => count = n,
                _ => return err("ERR value is not an integer or out of range"),
            },
            // Every value is a string.
            "TYPE" => strings = value.eq_ignore_ascii_case(b"string"),
            _ => return err("ERR syntax error"),
        }
    }
    if !strings {
        return Action::Reply(Value::Array(vec![
            Value::Bulk(b"0".to_vec()),
            Value::Array(Vec::new()),
        ]));
    }
    Action::Call(Request::Read {
        query: KvQuery::ScanCursor {
            cursor,
            pattern,
            count,
        },
        mode: conn.read_mode,
    })
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
fn hello(conn: &mut ConnState, rest: &[Vec<u8>]) -> Action {
    if conn.subscribed() {
        return err(
            "ERR HELLO is not allowed while the connection has watchers; unsubscribe first",
        );
    }
    let protocol = match rest.first() {
        None => conn.protocol,
        Some(v) => match parse_i64(v) {
            Some(2) => 2,
            Some(3) => 3,
            _ => return err("NOPROTO unsupported protocol version"),
        },
    };
    let mut options = rest.iter().skip(1);
    while let Some(option) = options.next() {
        match String::from_utf8_lossy(option)
            .to_ascii_uppercase()
            .as_str()
        {
            "AUTH" => {
                // The RESP server takes HELLO's AUTH out before the table runs it.
                return err("ERR HELLO's AUTH is checked by the RESP server, not here");
            }
            "SETNAME" if options.next().is_some() => {}
            _ => return err("ERR syntax error in HELLO option"),
        }
    }
    conn.protocol = protocol;
    let text = |s: &str| Value::Bulk(s.as_bytes().to_vec());
    Action::Reply(Value::Map(vec![
        (text("server"), text("synod")),
        (text("version"), text(env!("CARGO_PKG_VERSION"))),
        (text("proto"), Value::Int(i64::from(protocol))),
        (text("id"), Value::Int(0)),
        (text("mode"), text("standalone")),
        (text("role"), text("master")),
        (text("modules"), Value::Array(Vec::new())),
    ]))
}

fn dispatch(conn: &mut ConnState, args: &[Vec<u8>], wall_ms: Option<u64>) -> Action {
    let Some((name, rest)) = args.split_first() else {
        return err("ERR empty command");
    };
    let name = String::from_utf8_lossy(name).to_ascii_uppercase();
    let read = |query| {
        Action::Call(Request::Read {
            query,
            mode: conn.read_mode,
        })
    };
    match (name.as_str(), rest) {
        ("PING", []) => Action::Reply(Value::Simple("PONG".into())),
        ("PING", [msg]) => Action::Reply(Value::Bulk(msg.clone())),
        ("QUIT", _) => Action::Close(Value::Simple("OK".into())),
        // Asked by redis-cli and redis-benchmark on connecting: nothing to report.
        ("COMMAND" | "CONFIG", _) => Action::Reply(Value::Array(Vec::new())),
        ("INFO", _) => Action::Info,
        ("SHUTDOWN", modifiers) => shutdown(modifiers),
        ("READONLY", []) => {
            conn.read_mode = ReadMode::Follower;
            Action::Reply(Value::Simple("OK".into()))
        }
        ("READWRITE", []) => {
            conn.read_mode = ReadMode::Linearizable;
            Action::Reply(Value::Simple("OK".into()))
        }
        ("GET", [k]) => read(KvQuery::Get(k.clone())),
        ("GETREV", [k]) => read(KvQuery::GetRevisions(k.clone())),
        ("MGET", keys) if !keys.is_empty() => read(KvQuery::MGet(keys.to_vec())),
        ("EXISTS", keys) if !keys.is_empty() => read(KvQuery::Exists(keys.to_vec())),
        ("SCANPREFIX", [prefix]) => read(KvQuery::Scan {
            prefix: prefix.clone(),
            limit: SCAN_LIMIT_DEFAULT,
        }),
        ("SCANPREFIX", [prefix, limit]) => {
            match parse_i64(limit).and_then(|l| usize::try_from(l).ok()) {
                Some(limit) => read(KvQuery::Scan {
                    prefix: prefix.clone(),
                    limit,
                }),
                None => err("ERR SCANPREFIX limit must be a non-negative integer"),
            }
        }
        ("SCAN", [cursor, options @ ..]) => scan(conn, cursor, options),
        ("KEYS", [pattern]) => read(KvQuery::Keys(pattern.clone())),
        ("DBSIZE", []) => read(KvQuery::DbSize),
        ("MULTI", []) => {
            if conn.multi.is_some() {
                return err("ERR MULTI calls can not be nested");
            }
            conn.multi = Some(Multi::default());
            Action::Reply(Value::Simple("OK".into()))
        }
        ("EXEC", []) => exec(conn),
        ("DISCARD", []) => {
            if conn.multi.take().is_none() {
                return err("ERR DISCARD without MULTI");
            }
            conn.watched.clear();
            Action::Reply(Value::Simple("OK".into()))
        }
        ("WATCH", keys) if !keys.is_empty() => {
            if conn.multi.is_some() {
                return err("ERR WATCH inside MULTI is not allowed");
            }
            if conn.watched.len() + keys.len() > WATCHED_KEYS_MAX {
                return err(format!(
                    "ERR a connection watches at most {WATCHED_KEYS_MAX} keys"
                ));
            }
            read(KvQuery::ModRevisions(keys.to_vec()))
        }
        ("UNWATCH", []) => {
            conn.watched.clear();
            Action::Reply(Value::Simple("OK".into()))
        }
        ("HELLO", rest) => hello(conn, rest),
        ("SUBSCRIBE", names) if !names.is_empty() => subscribe(names, false),
        ("PSUBSCRIBE", names) if !names.is_empty() => subscribe(names, true),
        ("UNSUBSCRIBE", names) => Action::Watch(WatchCall::Unsubscribe(names.to_vec())),
        ("PUNSUBSCRIBE", names) => Action::Watch(WatchCall::PUnsubscribe(names.to_vec())),
        ("WATCHSTREAM", rest) => watch_stream(rest),
        ("SET", [k, v, options @ ..]) => match set(k, v, options, wall_ms) {
            Ok(command) => write(conn, command),
            Err(e) => e,
        },
        ("EXPIRE" | "PEXPIRE", [k, n, options @ ..]) => {
            let scale = if name == "EXPIRE" { 1000 } else { 1 };
            let Some(ttl_ms) = parse_i64(n).and_then(|n| n.checked_mul(scale)) else {
                return err(format!(
                    "ERR invalid expire time in '{}' command",
                    name.to_ascii_lowercase()
                ));
            };
            let condition = match options {
                [] => ExpireCondition::Always,
                [option] => match String::from_utf8_lossy(option)
                    .to_ascii_uppercase()
                    .as_str()
                {
                    "NX" => ExpireCondition::IfNone,
                    "XX" => ExpireCondition::IfSome,
                    "GT" => ExpireCondition::IfGreater,
                    "LT" => ExpireCondition::IfLess,
                    other => return err(format!("ERR Unsupported option {other}")),
                },
                _ => {
                    return err(
                        "ERR NX and XX, GT or LT options at the same time are not compatible",
                    );
                }
            };
            write(
                conn,
                KvCommand::Expire {
                    key: k.clone(),
                    ttl_ms,
                    condition,
                },
            )
        }
        ("TTL" | "PTTL", [k]) => read(KvQuery::Ttl {
            key: k.clone(),
            in_ms: name == "PTTL",
        }),
        ("PERSIST", [k]) => write(conn, KvCommand::Persist { key: k.clone() }),
        ("LEASE", [sub, rest @ ..]) => {
            let sub = String::from_utf8_lossy(sub).to_ascii_uppercase();
            let number = |arg: &Vec<u8>| parse_i64(arg).and_then(|n| u64::try_from(n).ok());
            match (sub.as_str(), rest) {
                ("GRANT", [ttl]) => match number(ttl) {
                    Some(ttl_ms) => write(conn, KvCommand::Lease(LeaseCommand::Grant { ttl_ms })),
                    None => err("ERR LEASE GRANT takes a TTL in milliseconds"),
                },
                ("KEEPALIVE", [id]) => match number(id) {
                    Some(id) => write(
                        conn,
                        KvCommand::Lease(LeaseCommand::KeepAlive { lease: LeaseId(id) }),
                    ),
                    None => err("ERR a lease id is a non-negative integer"),
                },
                ("REVOKE", [id]) => match number(id) {
                    Some(id) => write(
                        conn,
                        KvCommand::Lease(LeaseCommand::Revoke { lease: LeaseId(id) }),
                    ),
                    None => err("ERR a lease id is a non-negative integer"),
                },
                ("TTL", [id]) => match number(id) {
                    Some(id) => read(KvQuery::LeaseTtl(LeaseId(id))),
                    None => err("ERR a lease id is a non-negative integer"),
                },
                _ => err(
                    "ERR usage: LEASE GRANT <ttl ms> | LEASE KEEPALIVE <id> | LEASE REVOKE <id> | LEASE TTL <id>",
                ),
            }
        }
        ("DEL", keys) if !keys.is_empty() => write(
            conn,
            KvCommand::Delete {
                keys: keys.to_vec(),
            },
        ),
        ("INCR", [k]) => write(
            conn,
            KvCommand::Incr {
                key: k.clone(),
                by: 1,
            },
        ),
        ("DECR", [k]) => write(
            conn,
            KvCommand::Incr {
                key: k.clone(),
                by: -1,
            },
        ),
        ("INCRBY", [k, by]) => match parse_i64(by) {
            Some(by) => write(conn, KvCommand::Incr { key: k.clone(), by }),
            None => err("ERR value is not an integer or out of range"),
        },
        ("CAS", [k, expected, new]) => write(
            conn,
            KvCommand::Cas {
                key: k.clone(),
                expected: Some(expected.clone()),
                new: new.clone(),
            },
        ),
        ("CLIENT", [sub, rest @ ..]) => client(
            conn,
            &String::from_utf8_lossy(sub).to_ascii_uppercase(),
            rest,
        ),
        ("FENCE", [lock, token, inner @ ..]) if !inner.is_empty() => {
            fence(conn, lock, token, inner, wall_ms)
        }
        (
            "PING" | "GET" | "GETREV" | "MGET" | "EXISTS" | "SCAN" | "SCANPREFIX" | "KEYS"
            | "DBSIZE" | "MULTI" | "EXEC" | "DISCARD" | "WATCH" | "UNWATCH" | "SET" | "DEL"
            | "INCR" | "EXPIRE" | "PEXPIRE" | "TTL" | "PTTL" | "PERSIST" | "LEASE" | "DECR"
            | "INCRBY" | "CAS" | "CLIENT" | "READONLY" | "READWRITE" | "FENCE" | "SUBSCRIBE"
            | "PSUBSCRIBE",
            _,
        ) => arity(&name),
        _ => err(format!(
            "ERR unknown command '{}', with args beginning with: {}",
            name.to_ascii_lowercase(),
            rest.iter()
                .take(3)
                .map(|a| format!("'{}'", String::from_utf8_lossy(a)))
                .collect::<Vec<_>>()
                .join(" ")
        )),
    }
}

/// `SET k v [NX|XX] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL|LEASE id] [FENCE lock token]`.
fn set(k: &[u8], v: &[u8], options: &[Vec<u8>], wall_ms: Option<u64>) -> Result<KvCommand, Action> {
    let mut condition = PutCondition::Always;
    let mut expiry = None;
    let mut fence = None;
    let mut options = options.iter();
    let invalid = || err("ERR invalid expire time in 'set' command");
    while let Some(option) = options.next() {
        let option = String::from_utf8_lossy(option).to_ascii_uppercase();
        let mut number = || options.next().and_then(|n| parse_i64(n));
        match option.as_str() {
            "NX" if condition == PutCondition::Always => condition = PutCondition::IfAbsent,
            "XX" if condition == PutCondition::Always => condition = PutCondition::IfPresent,
            "EX" | "PX" | "EXAT" | "PXAT" if expiry.is_none() => {
                let n = number().ok_or_else(|| err("ERR syntax error"))?;
                if n <= 0 {
                    return Err(invalid());
                }
                let scale = if option.starts_with("EX") { 1000 } else { 1 };
                let ms = n.checked_mul(scale).ok_or_else(invalid)?;
                let ttl_ms = if option.ends_with("AT") {
                    let Some(wall_ms) = wall_ms else {
                        return Err(err("ERR EXAT and PXAT need the node's wall clock"));
                    };
                    // A time already past expires the key at once (after 1 ms).
                    u64::try_from(ms)
                        .unwrap_or(0)
                        .saturating_sub(wall_ms)
                        .max(1)
                } else {
                    u64::try_from(ms).map_err(|_| invalid())?
                };
                expiry = Some(Expiry::TtlMs(ttl_ms));
            }
            "KEEPTTL" if expiry.is_none() => expiry = Some(Expiry::Keep),
            "LEASE" if expiry.is_none() => {
                let id = number()
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| err("ERR SET ... LEASE takes a lease id"))?;
                expiry = Some(Expiry::Lease(LeaseId(id)));
            }
            "FENCE" if fence.is_none() => {
                let lock = options
                    .next()
                    .cloned()
                    .ok_or_else(|| err("ERR SET ... FENCE takes a lock key and a token"))?;
                let token = options
                    .next()
                    .and_then(|n| parse_i64(n))
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| err("ERR SET ... FENCE takes a lock key and a token"))?;
                fence = Some((lock, token));
            }
            "GET" => return Err(err("ERR SET ... GET is not supported")),
            _ => return Err(err("ERR syntax error")),
        }
    }
    let (key, value) = (k.to_vec(), v.to_vec());
    let command = match expiry {
        None => KvCommand::Put {
            key,
            value,
            condition,
        },
        Some(expiry) => KvCommand::PutExpiring {
            key,
            value,
            condition,
            expiry,
        },
    };
    Ok(match fence {
        None => command,
        Some((lock, token)) => KvCommand::Fenced {
            lock,
            token,
            command: Box::new(command),
        },
    })
}

/// `FENCE lock token <write...>`: the write, applied only if `lock` exists and was created
/// at revision `token` (see [`KvCommand::Fenced`]). Any write but a transaction's `EXEC`
/// (queue `FENCE ...` inside `MULTI` instead) and another `FENCE` may be fenced.
fn fence(
    conn: &mut ConnState,
    lock: &[u8],
    token: &[u8],
    inner: &[Vec<u8>],
    wall_ms: Option<u64>,
) -> Action {
    let Some(token) = parse_i64(token).and_then(|n| u64::try_from(n).ok()) else {
        return err("ERR FENCE takes a lock key, a token (a non-negative integer) and a write");
    };
    let name = inner.first().map(Vec::as_slice).unwrap_or_default();
    if !is_write_command(inner)
        || name.eq_ignore_ascii_case(b"EXEC")
        || name.eq_ignore_ascii_case(b"FENCE")
    {
        return err(format!(
            "ERR FENCE fences a write (SET, DEL, INCR, DECR, INCRBY, CAS, EXPIRE, PEXPIRE, PERSIST, LEASE), not '{}'",
            String::from_utf8_lossy(name).to_ascii_lowercase()
        ));
    }
    // The write is parsed on a connection of its own, as a queued one is, so that only
    // the fenced command takes a sequence number from this one's session.
    let mut scratch = ConnState {
        read_mode: conn.read_mode,
        ..ConnState::default()
    };
    match dispatch(&mut scratch, inner, wall_ms) {
        Action::Call(Request::Write { command, .. }) => write(
            conn,
            KvCommand::Fenced {
                lock: lock.to_vec(),
                token,
                command: Box::new(command),
            },
        ),
        other => other,
    }
}

/// A write, numbered in the connection's session if it has one.
fn write(conn: &mut ConnState, command: KvCommand) -> Action {
    if let Some((session, seq)) = conn.session
        && conn.unanswered.as_ref().is_some_and(|c| *c != command)
    {
        // The number belongs to a write whose outcome is unknown: reused for another
        // command, the session table would answer it with that write's saved reply (if it
        // was applied) and never apply it. The next number also acknowledges the old one,
        // so that it is refused as stale if it ever reaches the log again.
        conn.session = Some((session, seq + 1));
        conn.unanswered = None;
    }
    Action::Call(Request::Write {
        command,
        session: conn.session.map(|(session, seq)| SessionSeq {
            session,
            seq,
            ack_below: seq,
        }),
    })
}

fn client(conn: &mut ConnState, sub: &str, rest: &[Vec<u8>]) -> Action {
    match (sub, rest) {
        ("REGISTER", []) => Action::Call(Request::Register),
        ("UNREGISTER", []) => match conn.session {
            Some((session, _)) => Action::Call(Request::Unregister(session)),
            None => err("ERR no session on this connection"),
        },
        ("SESSION", [id, seq]) => {
            match (
                parse_i64(id).and_then(|i| u64::try_from(i).ok()),
                parse_i64(seq),
            ) {
                (Some(id), Some(seq)) if seq >= 1 => {
                    conn.session = Some((SessionId(id), seq as u64));
                    conn.unanswered = None;
                    Action::Reply(Value::Simple("OK".into()))
                }
                _ => err("ERR usage: CLIENT SESSION <id> <next sequence number, from 1>"),
            }
        }
        ("INFO", []) => Action::Reply(match conn.session {
            Some((id, seq)) => Value::Bulk(format!("session={} next_seq={seq}", id.0).into_bytes()),
            None => Value::Bulk(b"session=none".to_vec()),
        }),
        ("READMODE", [mode]) => {
            let mode = match String::from_utf8_lossy(mode).to_ascii_lowercase().as_str() {
                "linearizable" => ReadMode::Linearizable,
                "lease" => ReadMode::Lease,
                "follower" => ReadMode::Follower,
                _ => return err("ERR read mode must be linearizable, lease or follower"),
            };
            conn.read_mode = mode;
            Action::Reply(Value::Simple("OK".into()))
        }
        ("SETNAME" | "SETINFO", _) => Action::Reply(Value::Simple("OK".into())),
        _ => {
            err("ERR unknown CLIENT subcommand; try REGISTER, SESSION, UNREGISTER, INFO, READMODE")
        }
    }
}

impl ConnState {
    /// Whether the connection has watchers (channels, patterns or streams).
    #[must_use]
    pub fn subscribed(&self) -> bool {
        self.watch.as_ref().is_some_and(|w| w.watchers() > 0)
    }

    /// The connection as an owner of watchers, numbered with `next` the first time.
    pub fn watch_owner(&mut self, next: impl FnOnce() -> u64) -> WatchOwner {
        self.watch
            .get_or_insert_with(|| WatchOwner::new(next()))
            .clone()
    }

    /// Turns the node's answer to `request` into a reply, and moves the session on
    /// when the request took effect (or remembers a write whose outcome is unknown).
    pub fn settle(&mut self, request: &Request, response: Response) -> Value {
        let reply = match response {
            Response::Kv(reply) => reply,
            not_done => {
                if let (
                    Response::Unknown(_),
                    Request::Write {
                        command,
                        session: Some(_),
                    },
                ) = (&not_done, request)
                {
                    self.unanswered = Some(command.clone());
                }
                return refusal(not_done);
            }
        };
        match request {
            Request::Register => {
                if let KvReply::Int(id) = reply {
                    self.session = Some((SessionId(id as u64), 1));
                    self.unanswered = None;
                }
            }
            Request::Unregister(_) => {
                self.session = None;
                self.unanswered = None;
            }
            Request::Write {
                session: Some(s), ..
            } => {
                if !matches!(&reply, KvReply::Error(e) if e.starts_with("SESSION")) {
                    self.session = Some((s.session, s.seq + 1));
                    self.unanswered = None;
                }
            }
            Request::Read {
                query: KvQuery::ModRevisions(keys),
                ..
            } => {
                if let KvReply::ModRevisions(revisions) = reply {
                    self.watched
                        .extend(keys.iter().cloned().zip(revisions.iter().copied()));
                    return Value::Simple("OK".into());
                }
            }
            Request::Write { .. } | Request::Read { .. } => {}
        }
        to_value(reply)
    }

    /// A reply as this connection's protocol reads it (RESP3's types after `HELLO 3`).
    #[must_use]
    pub fn shape(&self, value: Value) -> Value {
        if self.protocol == 3 {
            value.into_resp3()
        } else {
            value.into_resp2()
        }
    }
}

/// The reply to a request the node did not (or may not have) run: `TRYAGAIN` for one
/// certainly not run, which clients retry (on another node if the text says this one is
/// shutting down); `UNKNOWN` for a write that may have been applied, which only a client
/// with a session may resend (see the module documentation).
pub fn refusal(response: Response) -> Value {
    match response {
        Response::Kv(reply) => to_value(reply),
        Response::NotLeader { .. } => Value::Error("TRYAGAIN no leader; retry".into()),
        Response::Retry(why) => Value::Error(format!("TRYAGAIN {why}")),
        Response::Unknown(why) => Value::Error(format!(
            "UNKNOWN {why}; it may have been applied (resent in its session, at most once)"
        )),
    }
}

/// A state-machine reply as RESP.
pub fn to_value(reply: KvReply) -> Value {
    match reply {
        KvReply::Ok => Value::Simple("OK".into()),
        KvReply::Nil => Value::Nil,
        KvReply::Int(n) => Value::Int(n),
        KvReply::Bulk(b) => Value::Bulk(b),
        KvReply::Values(vs) => Value::Array(
            vs.into_iter()
                .map(|v| v.map_or(Value::Nil, Value::Bulk))
                .collect(),
        ),
        KvReply::Pairs(ps) => Value::Array(
            ps.into_iter()
                .flat_map(|(k, v)| [Value::Bulk(k), Value::Bulk(v)])
                .collect(),
        ),
        KvReply::Entry {
            value,
            revisions,
            revision,
        } => {
            let int = |n: u64| Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
            Value::Array(vec![
                value.map_or(Value::Nil, Value::Bulk),
                int(revisions.create),
                int(revisions.modified),
                int(revisions.version),
                int(revision),
            ])
        }
        KvReply::Keys(keys) => Value::Array(keys.into_iter().map(Value::Bulk).collect()),
        KvReply::Cursor { next, keys } => Value::Array(vec![
            Value::Bulk(next.to_string().into_bytes()),
            Value::Array(keys.into_iter().map(Value::Bulk).collect()),
        ]),
        KvReply::ModRevisions(revisions) => Value::Array(
            revisions
                .into_iter()
                .map(|r| Value::Int(i64::try_from(r).unwrap_or(i64::MAX)))
                .collect(),
        ),
        KvReply::Multi(replies) => Value::Array(replies.into_iter().map(to_value).collect()),
        KvReply::Error(e)
            if e.starts_with("ERR") || e.starts_with("SESSION") || e.starts_with("FENCED") =>
        {
            Value::Error(e)
        }
        KvReply::Error(e) => Value::Error(format!("ERR {e}")),
    }
}

/// `INFO`'s text, in Redis' `field:value` lines.
pub fn render_info(info: &Info) -> String {
    let role = format!("{:?}", info.role).to_ascii_lowercase();
    let leader = info
        .leader
        .map_or_else(|| "none".to_string(), |l| l.to_string());
    format!(
        "# Consistent Core\r\nnode_id:{}\r\nrole:{role}\r\nleader:{leader}\r\nterm:{}\r\ncommit_index:{}\r\napplied_index:{}\r\nlast_index:{}\r\nfirst_index:{}\r\nkeys:{}\r\nrevision:{}\r\nsessions:{}\r\n",
        info.id,
        info.term.get(),
        info.commit.0,
        info.applied.0,
        info.last.0,
        info.first.0,
        info.keys,
        info.revision,
        info.sessions
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consistent_core::kv::{KvStore, LogCommand};
    use synod_consensus::LogIndex;
    use synod_consensus::session::SessionEntry;

    fn args(line: &str) -> Vec<Vec<u8>> {
        line.split(' ').map(|w| w.as_bytes().to_vec()).collect()
    }

    fn is_error(action: &Action, starts: &str) -> bool {
        matches!(action, Action::Reply(Value::Error(e)) if e.starts_with(starts))
    }

    #[test]
    fn shutdown_takes_redis_modifiers_but_not_abort() {
        let mut conn = ConnState::default();
        for line in ["SHUTDOWN", "shutdown NOSAVE", "SHUTDOWN SAVE NOW FORCE"] {
            assert!(
                matches!(execute(&mut conn, &args(line)), Action::Shutdown),
                "{line}"
            );
        }
        assert!(is_error(
            &execute(&mut conn, &args("SHUTDOWN ABORT")),
            "ERR SHUTDOWN ABORT is not supported"
        ));
        assert!(is_error(
            &execute(&mut conn, &args("SHUTDOWN LATER")),
            "ERR syntax error"
        ));
    }

    fn reply(action: &Action) -> &Value {
        match action {
            Action::Reply(v) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_transaction_is_queued_and_sent_as_one_write_with_its_watched_keys() {
        let mut store = KvStore::new();
        let mut conn = ConnState::default();
        store.apply(LogIndex(1), logged(&request_of(&mut conn, "SET a 1")));
        // WATCH reads the key's mod revision, and remembers it once answered.
        let watch = request_of(&mut conn, "WATCH a");
        let Request::Read { query, .. } = &watch else {
            panic!("{watch:?}")
        };
        let answer = conn.settle(&watch, Response::Kv(store.query(query)));
        assert_eq!(answer, Value::Simple("OK".into()));
        assert_eq!(conn.watched, [(b"a".to_vec(), 1)]);
        assert_eq!(
            execute(&mut conn, &args("MULTI")),
            Action::Reply(Value::Simple("OK".into()))
        );
        assert!(is_error(
            &execute(&mut conn, &args("MULTI")),
            "ERR MULTI calls can not be nested"
        ));
        assert!(is_error(
            &execute(&mut conn, &args("WATCH b")),
            "ERR WATCH inside MULTI"
        ));
        for line in ["INCR a", "GET a", "SET b x"] {
            assert_eq!(
                reply(&execute(&mut conn, &args(line))),
                &Value::Simple("QUEUED".into())
            );
        }
        let exec = request_of(&mut conn, "EXEC");
        assert!(conn.multi.is_none() && conn.watched.is_empty());
        let reply = store.apply(LogIndex(2), logged(&exec));
        assert_eq!(
            conn.settle(&exec, Response::Kv(reply)),
            Value::Array(vec![
                Value::Int(2),
                Value::Bulk(b"2".to_vec()),
                Value::Simple("OK".into())
            ])
        );
        // The same transaction again, watching a key that changed since: a nil reply.
        let watch = request_of(&mut conn, "WATCH a");
        let Request::Read { query, .. } = &watch else {
            panic!()
        };
        conn.settle(&watch, Response::Kv(store.query(query)));
        store.apply(
            LogIndex(3),
            logged(&request_of(&mut ConnState::default(), "SET a 9")),
        );
        execute(&mut conn, &args("MULTI"));
        execute(&mut conn, &args("INCR a"));
        let exec = request_of(&mut conn, "EXEC");
        let reply = store.apply(LogIndex(4), logged(&exec));
        assert_eq!(conn.settle(&exec, Response::Kv(reply)), Value::Nil);
        assert_eq!(
            store.query(&KvQuery::Get(b"a".to_vec())),
            KvReply::Bulk(b"9".to_vec())
        );
    }

    #[test]
    fn a_transaction_with_a_refused_command_is_discarded_at_exec() {
        let mut conn = ConnState::default();
        assert!(is_error(
            &execute(&mut conn, &args("EXEC")),
            "ERR EXEC without MULTI"
        ));
        assert!(is_error(
            &execute(&mut conn, &args("DISCARD")),
            "ERR DISCARD without MULTI"
        ));
        execute(&mut conn, &args("MULTI"));
        assert!(is_error(
            &execute(&mut conn, &args("INCRBY k x")),
            "ERR value"
        ));
        assert!(is_error(
            &execute(&mut conn, &args("SHUTDOWN")),
            "ERR Command not allowed"
        ));
        assert!(is_error(&execute(&mut conn, &args("EXEC")), "EXECABORT"));
        // DISCARD drops what was queued; the connection is as before.
        execute(&mut conn, &args("MULTI"));
        execute(&mut conn, &args("SET k v"));
        assert_eq!(
            reply(&execute(&mut conn, &args("DISCARD"))),
            &Value::Simple("OK".into())
        );
        assert!(matches!(
            execute(&mut conn, &args("GET k")),
            Action::Call(_)
        ));
    }

    #[test]
    fn queued_writes_spend_their_session_numbers_as_the_client_counts_them() {
        let mut conn = ConnState {
            session: Some((SessionId(3), 5)),
            ..ConnState::default()
        };
        execute(&mut conn, &args("MULTI"));
        execute(&mut conn, &args("SET a 1"));
        execute(&mut conn, &args("GET a"));
        execute(&mut conn, &args("DEL a"));
        // Two writes queued and answered: the transaction's write is the third number.
        let Action::Call(Request::Write {
            session: Some(s), ..
        }) = execute(&mut conn, &args("EXEC"))
        else {
            panic!("a session write")
        };
        assert_eq!(s.seq, 7);
    }

    #[test]
    fn hello_switches_the_protocol_and_scan_takes_redis_options() {
        let mut conn = ConnState::default();
        let hello = execute(&mut conn, &args("HELLO 3"));
        let Value::Map(fields) = reply(&hello) else {
            panic!("{hello:?}")
        };
        assert!(fields.contains(&(Value::Bulk(b"proto".to_vec()), Value::Int(3))));
        assert_eq!(conn.protocol, 3);
        assert_eq!(conn.shape(Value::Nil), Value::Null);
        assert!(is_error(&execute(&mut conn, &args("HELLO 4")), "NOPROTO"));
        assert!(is_error(
            &execute(&mut conn, &args("HELLO 3 AUTH u p")),
            "ERR HELLO's AUTH"
        ));
        assert_eq!(conn.protocol, 3);
        execute(&mut conn, &args("HELLO 2"));
        assert_eq!(conn.shape(Value::Map(vec![])), Value::Array(vec![]));
        let Action::Call(Request::Read { query, .. }) =
            execute(&mut conn, &args("SCAN 42 MATCH a* COUNT 7"))
        else {
            panic!()
        };
        assert_eq!(
            query,
            KvQuery::ScanCursor {
                cursor: 42,
                pattern: Some(b"a*".to_vec()),
                count: 7
            }
        );
        assert!(is_error(
            &execute(&mut conn, &args("SCAN x")),
            "ERR invalid cursor"
        ));
        assert!(is_error(
            &execute(&mut conn, &args("SCAN 0 COUNT 0")),
            "ERR value"
        ));
        assert!(is_error(
            &execute(&mut conn, &args("SCAN 0 MATCH")),
            "ERR syntax"
        ));
        assert_eq!(
            reply(&execute(&mut conn, &args("SCAN 0 TYPE hash"))),
            &Value::Array(vec![Value::Bulk(b"0".to_vec()), Value::Array(vec![])])
        );
    }

    #[test]
    fn bad_commands_get_errors_and_leave_the_connection_usable() {
        let mut conn = ConnState::default();
        assert!(is_error(
            &execute(&mut conn, &args("FLUSHALL")),
            "ERR unknown command"
        ));
        assert!(is_error(
            &execute(&mut conn, &args("GET")),
            "ERR wrong number"
        ));
        assert!(is_error(
            &execute(&mut conn, &args("GET a b")),
            "ERR wrong number"
        ));
        assert!(is_error(
            &execute(&mut conn, &args("SET k v EX 0")),
            "ERR invalid expire time"
        ));
        assert!(is_error(
            &execute(&mut conn, &args("SET k v NX XX")),
            "ERR syntax"
        ));
        assert!(is_error(
            &execute(&mut conn, &args("INCRBY k x")),
            "ERR value"
        ));
        assert!(is_error(
            &execute(&mut conn, &args("CLIENT FOO")),
            "ERR unknown CLIENT"
        ));
        assert_eq!(
            execute(&mut conn, &args("PING")),
            Action::Reply(Value::Simple("PONG".into()))
        );
    }

    /// The request a command makes.
    fn request_of(conn: &mut ConnState, line: &str) -> Request {
        match execute(conn, &args(line)) {
            Action::Call(request) => request,
            other => panic!("{line}: {other:?}"),
        }
    }

    /// What the node proposes for a write request (as `CoreNode` does).
    fn logged(request: &Request) -> LogCommand {
        let Request::Write { command, session } = request else {
            panic!("a write")
        };
        match session {
            Some(s) => LogCommand::Session(SessionEntry::Request {
                session: s.session,
                seq: s.seq,
                ack_below: s.ack_below,
                time: 1,
                command: command.clone(),
            }),
            None => LogCommand::Plain {
                time: 1,
                command: command.clone(),
            },
        }
    }

    #[test]
    fn after_an_unknown_outcome_the_next_different_write_is_applied_and_a_resend_is_not() {
        let mut store = KvStore::new();
        let mut conn = ConnState::default();
        let Action::Call(register) = execute(&mut conn, &args("CLIENT REGISTER")) else {
            panic!("a call")
        };
        let reply = store.apply(
            LogIndex(1),
            LogCommand::Session(SessionEntry::Register { time: 1 }),
        );
        conn.settle(&register, Response::Kv(reply));
        // SET a 1 is applied, but the answer never reaches the client's node in time.
        let Action::Call(set_a) = execute(&mut conn, &args("SET a 1")) else {
            panic!("a call")
        };
        store.apply(LogIndex(2), logged(&set_a));
        let unknown = conn.settle(&set_a, Response::Unknown("timed out".into()));
        assert!(
            matches!(&unknown, Value::Error(e) if e.starts_with("UNKNOWN")),
            "an unknown outcome is not TRYAGAIN (which says resending is safe): {unknown:?}"
        );
        // The client resends it: answered from the session table, not applied again.
        let Action::Call(again) = execute(&mut conn, &args("SET a 1")) else {
            panic!("a call")
        };
        assert_eq!(logged(&again), logged(&set_a), "the same number");
        let Action::Call(incr) = execute(&mut conn, &args("INCR a")) else {
            panic!("a call")
        };
        let reply = store.apply(LogIndex(3), logged(&incr));
        assert_eq!(
            reply,
            KvReply::Int(2),
            "INCR applied, not taken for SET a 1"
        );
        conn.settle(&incr, Response::Kv(reply));
        // A different write after an unknown outcome: it must not reuse the spent number.
        let Action::Call(set_b) = execute(&mut conn, &args("SET b 2")) else {
            panic!("a call")
        };
        store.apply(LogIndex(4), logged(&set_b));
        conn.settle(&set_b, Response::Unknown("timed out".into()));
        let Action::Call(set_c) = execute(&mut conn, &args("SET c 3")) else {
            panic!("a call")
        };
        let reply = store.apply(LogIndex(5), logged(&set_c));
        conn.settle(&set_c, Response::Kv(reply));
        assert_eq!(
            store.query(&KvQuery::Get(b"c".to_vec())),
            KvReply::Bulk(b"3".to_vec()),
            "SET c 3 was acknowledged, so it must be applied"
        );
        // SET b 2, should it reach the log again later, is refused as stale.
        assert!(matches!(
            store.apply(LogIndex(6), logged(&set_b)),
            KvReply::Error(e) if e.starts_with("SESSION")
        ));
        // A refusal that is certainly not done leaves the number free for any command.
        let Action::Call(set_d) = execute(&mut conn, &args("SET d 4")) else {
            panic!("a call")
        };
        conn.settle(&set_d, Response::Retry("no leader".into()));
        let Action::Call(set_e) = execute(&mut conn, &args("SET e 5")) else {
            panic!("a call")
        };
        let (
            LogCommand::Session(SessionEntry::Request { seq: d, .. }),
            LogCommand::Session(SessionEntry::Request { seq: e, .. }),
        ) = (logged(&set_d), logged(&set_e))
        else {
            panic!("session writes")
        };
        assert_eq!(d, e);
    }

    #[test]
    fn session_writes_are_numbered_and_move_on_when_answered() {
        let mut conn = ConnState::default();
        let Action::Call(register) = execute(&mut conn, &args("CLIENT REGISTER")) else {
            panic!("a call")
        };
        let v = conn.settle(&register, Response::Kv(KvReply::Int(7)));
        assert_eq!(v, Value::Int(7));
        let Action::Call(set) = execute(&mut conn, &args("SET k v")) else {
            panic!("a call")
        };
        let Request::Write {
            session: Some(s), ..
        } = &set
        else {
            panic!("a session write")
        };
        assert_eq!((s.session, s.seq), (SessionId(7), 1));
        // A timeout leaves the number as it is: the retry reuses it.
        conn.settle(&set, Response::Retry("timed out".into()));
        assert_eq!(conn.session, Some((SessionId(7), 1)));
        conn.settle(&set, Response::Kv(KvReply::Ok));
        assert_eq!(conn.session, Some((SessionId(7), 2)));
    }

    fn call(action: Action) -> Request {
        match action {
            Action::Call(request) => request,
            other => panic!("not a call: {other:?}"),
        }
    }

    fn command(action: Action) -> KvCommand {
        match call(action) {
            Request::Write { command, .. } => command,
            other => panic!("not a write: {other:?}"),
        }
    }

    #[test]
    fn expiry_options_leases_and_fences_parse_to_their_commands() {
        let mut conn = ConnState::default();
        let put = |expiry| KvCommand::PutExpiring {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            condition: PutCondition::Always,
            expiry,
        };
        let mut at = |line: &str, wall_ms| command(execute_at(&mut conn, &args(line), wall_ms));
        assert_eq!(at("SET k v EX 10", None), put(Expiry::TtlMs(10_000)));
        assert_eq!(at("set k v px 250", None), put(Expiry::TtlMs(250)));
        // EXAT and PXAT become a time to live on the receiving node's wall clock.
        assert_eq!(
            at("SET k v EXAT 1000", Some(990_500)),
            put(Expiry::TtlMs(9_500))
        );
        assert_eq!(
            at("SET k v PXAT 990000", Some(990_500)),
            put(Expiry::TtlMs(1)),
            "a time already past expires the key at once"
        );
        assert_eq!(at("SET k v KEEPTTL", None), put(Expiry::Keep));
        assert_eq!(at("SET k v LEASE 7", None), put(Expiry::Lease(LeaseId(7))));
        assert_eq!(
            at("SET k v NX LEASE 7 FENCE lock/a 12", None),
            KvCommand::Fenced {
                lock: b"lock/a".to_vec(),
                token: 12,
                command: Box::new(KvCommand::PutExpiring {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                    condition: PutCondition::IfAbsent,
                    expiry: Expiry::Lease(LeaseId(7)),
                }),
            }
        );
        assert_eq!(
            at("PEXPIRE k 1500 GT", None),
            KvCommand::Expire {
                key: b"k".to_vec(),
                ttl_ms: 1_500,
                condition: ExpireCondition::IfGreater,
            }
        );
        assert_eq!(
            at("EXPIRE k -1", None),
            KvCommand::Expire {
                key: b"k".to_vec(),
                ttl_ms: -1_000,
                condition: ExpireCondition::Always,
            }
        );
        assert_eq!(
            at("PERSIST k", None),
            KvCommand::Persist { key: b"k".to_vec() }
        );
        assert_eq!(
            at("LEASE GRANT 5000", None),
            KvCommand::Lease(LeaseCommand::Grant { ttl_ms: 5_000 })
        );
        assert_eq!(
            at("lease keepalive 3", None),
            KvCommand::Lease(LeaseCommand::KeepAlive { lease: LeaseId(3) })
        );
        assert_eq!(
            call(execute(&mut conn, &args("PTTL k"))),
            Request::Read {
                query: KvQuery::Ttl {
                    key: b"k".to_vec(),
                    in_ms: true
                },
                mode: ReadMode::Linearizable
            }
        );
        for (line, error) in [
            ("SET k v EXAT 10", "ERR EXAT and PXAT need"),
            ("SET k v EX 10 PX 10", "ERR syntax"),
            ("SET k v EX -5", "ERR invalid expire time"),
            ("SET k v EX", "ERR syntax"),
            ("SET k v FENCE lock", "ERR SET ... FENCE"),
            ("EXPIRE k 10 NX XX", "ERR NX and XX"),
            ("EXPIRE k 10 SOON", "ERR Unsupported option"),
            ("EXPIRE k x", "ERR invalid expire time"),
            ("LEASE GRANT soon", "ERR LEASE GRANT"),
            ("LEASE STEAL 1", "ERR usage: LEASE"),
            ("TTL", "ERR wrong number"),
        ] {
            assert!(is_error(&execute(&mut conn, &args(line)), error), "{line}");
        }
        // Which commands a session numbers: LEASE's writes, not its TTL read.
        assert!(is_write_command(&args("LEASE KEEPALIVE 3")));
        assert!(is_write_command(&args("pexpire k 5")));
        assert!(!is_write_command(&args("LEASE TTL 3")));
        assert!(!is_write_command(&args("TTL k")));
    }

    #[test]
    fn fence_guards_every_write_and_a_stale_token_changes_nothing() {
        let mut store = KvStore::new();
        let mut conn = ConnState::default();
        let mut index = 0;
        let mut run = |store: &mut KvStore, line: &str| {
            index += 1;
            store.apply(LogIndex(index), logged(&request_of(&mut conn, line)))
        };
        run(&mut store, "SET lock me"); // created at revision 1: the token
        run(&mut store, "SET a 1");
        run(&mut store, "SET n 5");
        // The holder's token: its writes are applied.
        assert_eq!(run(&mut store, "FENCE lock 1 INCR n"), KvReply::Int(6));
        assert_eq!(run(&mut store, "fence lock 1 INCRBY n 4"), KvReply::Int(10));
        // A stale token (the lock was created again at a later revision): refused, and
        // neither the key nor the store's revision moves.
        run(&mut store, "DEL lock");
        run(&mut store, "SET lock you");
        let before = store.query(&KvQuery::GetRevisions(b"n".to_vec()));
        for line in [
            "FENCE lock 1 DEL a n",
            "FENCE lock 1 INCR n",
            "FENCE lock 1 DECR n",
            "FENCE lock 1 EXPIRE a 10",
            "FENCE lock 1 PERSIST a",
            "FENCE lock 1 CAS a 1 2",
            "FENCE lock 1 SET a 2",
        ] {
            assert!(
                matches!(run(&mut store, line), KvReply::Error(e) if e.starts_with("FENCED")),
                "{line}"
            );
        }
        assert_eq!(
            store.query(&KvQuery::GetRevisions(b"n".to_vec())),
            before,
            "a refused fenced write changes nothing"
        );
        assert_eq!(
            store.query(&KvQuery::Get(b"a".to_vec())),
            KvReply::Bulk(b"1".to_vec())
        );
        // The new holder's token (the lock's create revision now) deletes.
        let KvReply::Entry { revisions, .. } =
            store.query(&KvQuery::GetRevisions(b"lock".to_vec()))
        else {
            panic!("an entry")
        };
        let line = format!("FENCE lock {} DEL a n", revisions.create);
        assert_eq!(run(&mut store, &line), KvReply::Int(2));
        // What FENCE does not take: reads, transactions, itself, a missing write.
        for (line, error) in [
            ("FENCE lock 1 GET a", "ERR FENCE fences a write"),
            ("FENCE lock 1 EXEC", "ERR FENCE fences a write"),
            (
                "FENCE lock 1 FENCE lock 1 DEL a",
                "ERR FENCE fences a write",
            ),
            ("FENCE lock x DEL a", "ERR FENCE takes"),
            ("FENCE lock 1", "ERR wrong number"),
            ("FENCE lock 1 INCR", "ERR wrong number"),
        ] {
            assert!(is_error(&execute(&mut conn, &args(line)), error), "{line}");
        }
        // A session numbers a fenced write once, as the client library counts it.
        assert!(is_write_command(&args("FENCE lock 1 DEL a")));
        assert!(!is_write_command(&args("FENCE lock 1")));
        // Inside MULTI, a fenced write is queued as one operation.
        assert_eq!(
            reply(&execute(&mut conn, &args("MULTI"))),
            &Value::Simple("OK".into())
        );
        assert_eq!(
            reply(&execute(&mut conn, &args("FENCE lock 1 INCR n"))),
            &Value::Simple("QUEUED".into())
        );
        let KvCommand::Transaction { ops, .. } = command(execute(&mut conn, &args("EXEC"))) else {
            panic!("a transaction")
        };
        assert!(matches!(
            &ops[..],
            [TxOp::Write(KvCommand::Fenced { token: 1, .. })]
        ));
    }
}
