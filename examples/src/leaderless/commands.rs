//! The leaderless store's command table: RESP commands in, [`Request`]s to the node and RESP
//! replies out. Pure functions, tested without sockets.
//!
//! | Command | Meaning |
//! |---|---|
//! | `PING [msg]` | `PONG` (or `msg`) |
//! | `CONSISTENCY [ONE\|QUORUM\|ALL\|LINEARIZABLE]` | sets (or shows) this connection's level; QUORUM at first |
//! | `GET k` | the key's value at the connection's level: nil, one value, or an array of siblings |
//! | `GETCTX k` | an array: the read's context (a token), then every sibling |
//! | `SET k v [CONTEXT token]` | writes `v`; with a token from `GETCTX`, replaces the siblings it read (resolves them) |
//! | `DEL k [CONTEXT token]` | deletes the key (the siblings the token read) |
//! | `CAS k new` / `CAS k expected new` | Paxos compare-and-set (the key absent / holding `expected`): `[1\|0, value]` |
//! | `CGET k` | a linearizable read of the compare-and-set key space |
//! | `INFO` | the node, its membership view and partition ownership, its voters, whether it was admitted and where its join or leave stands |
//! | `LEAVE` | the node leaves the cluster for good: it tells the members (writes then go to the old and the new replicas), waits for the writes under the old table to end, hands each partition to its new replicas, switches the members' reads to them, then takes no further part (`OK` at once; INFO's `leave:` says `left` when done) |
//! | `QUIT` | closes the connection |
//!
//! At LINEARIZABLE, `GET` and `SET` go to the ABD registers (their own key space) and `DEL`
//! is refused. Keys are at most [`KEY_BYTES_MAX`] bytes and values [`VALUE_BYTES_MAX`].
//! `TRYAGAIN ...` says a request was certainly not carried out, `UNKNOWN ...` that a write
//! may or may not have been stored.

use synod_clocks::VersionVector;
use synod_node::NodeId;
use synod_quorum::Consistency;

use super::machine::{Failure, Info, Request, Response};
use crate::resp::Value;

/// The longest key.
pub const KEY_BYTES_MAX: usize = 1 << 10;
/// The longest value.
pub const VALUE_BYTES_MAX: usize = 64 << 10;
/// The longest context token.
pub const CONTEXT_BYTES_MAX: usize = 16 << 10;

/// A connection's level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Level {
    /// A quorum-store level.
    Store(Consistency),
    /// The ABD registers.
    Linearizable,
    /// QUORUM, the default.
    #[default]
    Quorum,
}

impl Level {
    fn consistency(self) -> Option<Consistency> {
        match self {
            Level::Store(c) => Some(c),
            Level::Quorum => Some(Consistency::Quorum),
            Level::Linearizable => None,
        }
    }

    fn name(self) -> String {
        match self.consistency() {
            Some(c) => c.to_string(),
            None => "LINEARIZABLE".into(),
        }
    }
}

/// What a call's answer is turned into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A value, nil or an array of siblings.
    Get,
    /// The context token, then the siblings.
    GetContext,
    /// `OK`.
    Write,
    /// `[applied, value]`.
    Cas,
    /// A value or nil.
    CasGet,
    /// The INFO text.
    Info,
    /// `OK` once a leave has begun.
    Leave,
    /// `OK` once a removal has begun; a refusal is an `ERR`.
    Remove,
}

/// What to do with one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Answer this.
    Reply(Value),
    /// Answer this and close the connection.
    Close(Value),
    /// Hand this to the node and answer with [`settle`].
    Call(Request, Shape),
}

fn error(text: String) -> Action {
    Action::Reply(Value::Error(text))
}

fn wrong_args(name: &str) -> Action {
    error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

fn check(key: &[u8], value: Option<&[u8]>) -> Option<Action> {
    if key.len() > KEY_BYTES_MAX {
        return Some(error(format!(
            "ERR the key is {} bytes long; the most is {KEY_BYTES_MAX}",
            key.len()
        )));
    }
    match value {
        Some(v) if v.len() > VALUE_BYTES_MAX => Some(error(format!(
            "ERR the value is {} bytes long; the most is {VALUE_BYTES_MAX}",
            v.len()
        ))),
        _ => None,
    }
}

/// A context as a token: its postcard encoding in hex.
#[must_use]
pub fn context_token(context: &VersionVector) -> String {
    let bytes = postcard::to_stdvec(context).unwrap_or_default();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The context a token stands for.
///
/// # Errors
///
/// A sentence, for a token that is not one.
pub fn parse_context(token: &[u8]) -> Result<VersionVector, String> {
    if token.len() > CONTEXT_BYTES_MAX || !token.len().is_multiple_of(2) {
        return Err("ERR the context is not a token GETCTX gave".into());
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut bytes = Vec::with_capacity(token.len() / 2);
    for pair in token.chunks(2) {
        match (digit(pair[0]), digit(pair[1])) {
            (Some(hi), Some(lo)) => bytes.push(hi << 4 | lo),
            _ => return Err("ERR the context is not a token GETCTX gave".into()),
        }
    }
    postcard::from_bytes(&bytes).map_err(|_| "ERR the context is not a token GETCTX gave".into())
}

/// The commands that change the store: a read-only user is refused them.
pub const WRITE_COMMANDS: [&str; 5] = ["SET", "DEL", "CAS", "LEAVE", "REMOVENODE"];

/// Whether the command `args` changes the store (one of [`WRITE_COMMANDS`]).
#[must_use]
pub fn writes(args: &[Vec<u8>]) -> bool {
    args.first()
        .is_some_and(|name| crate::resp::is_one_of(name, &WRITE_COMMANDS))
}

/// What to do with the command `args` (never empty) on a connection at `level`.
#[must_use]
pub fn execute(level: &mut Level, args: &[Vec<u8>]) -> Action {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    let rest = &args[1..];
    match (name.as_str(), rest) {
        ("PING", []) => Action::Reply(Value::Simple("PONG".into())),
        ("PING", [message]) => Action::Reply(Value::Bulk(message.clone())),
        ("QUIT", _) => Action::Close(Value::Simple("OK".into())),
        ("INFO", _) => Action::Call(Request::Info, Shape::Info),
        ("LEAVE", []) => Action::Call(Request::Leave, Shape::Leave),
        ("LEAVE", _) => wrong_args("leave"),
        ("REMOVENODE", [node]) => match parse_node(node) {
            Some(id) => Action::Call(Request::Remove(id), Shape::Remove),
            None => error(format!(
                "ERR REMOVENODE takes a member's id (3 or n3), not '{}'",
                String::from_utf8_lossy(node)
            )),
        },
        ("REMOVENODE", _) => wrong_args("removenode"),
        ("CONSISTENCY", []) => Action::Reply(Value::Simple(level.name())),
        ("CONSISTENCY", [word]) => {
            *level = match word.to_ascii_uppercase().as_slice() {
                b"ONE" => Level::Store(Consistency::One),
                b"QUORUM" => Level::Store(Consistency::Quorum),
                b"ALL" => Level::Store(Consistency::All),
                b"LINEARIZABLE" => Level::Linearizable,
                _ => return error("ERR CONSISTENCY takes ONE, QUORUM, ALL or LINEARIZABLE".into()),
            };
            Action::Reply(Value::Simple("OK".into()))
        }
        ("GET" | "GETCTX", [key]) => {
            if let Some(bad) = check(key, None) {
                return bad;
            }
            let shape = if name == "GET" {
                Shape::Get
            } else {
                Shape::GetContext
            };
            match level.consistency() {
                Some(level) => Action::Call(
                    Request::Get {
                        key: key.clone(),
                        level,
                    },
                    shape,
                ),
                None if shape == Shape::Get => Action::Call(Request::LinearGet(key.clone()), shape),
                None => error("ERR GETCTX: the linearizable level has no siblings".into()),
            }
        }
        ("SET", [key, value, extra @ ..]) => write(level, key, Some(value.as_slice()), extra),
        ("DEL", [key, extra @ ..]) => write(level, key, None, extra),
        ("CAS", [key, rest @ ..]) if !rest.is_empty() && rest.len() <= 2 => {
            let (expect, new) = match rest {
                [new] => (None, new.clone()),
                [expect, new] => (Some(expect.clone()), new.clone()),
                _ => return wrong_args("cas"),
            };
            if let Some(bad) = check(key, Some(&new)) {
                return bad;
            }
            let request = Request::Cas {
                key: key.clone(),
                expect,
                new,
            };
            Action::Call(request, Shape::Cas)
        }
        ("CGET", [key]) => match check(key, None) {
            Some(bad) => bad,
            None => Action::Call(Request::CasGet(key.clone()), Shape::CasGet),
        },
        ("PING" | "GET" | "GETCTX" | "SET" | "DEL" | "CAS" | "CGET" | "CONSISTENCY", _) => {
            wrong_args(&name.to_ascii_lowercase())
        }
        _ => error(format!(
            "ERR unknown command '{}'; the leaderless store knows GET, GETCTX, SET, DEL, CAS, \
             CGET, CONSISTENCY, PING, INFO, LEAVE, REMOVENODE and QUIT",
            String::from_utf8_lossy(&args[0])
        )),
    }
}

/// A node's id as a command names it: `3` or `n3` (never 0).
fn parse_node(word: &[u8]) -> Option<NodeId> {
    let digits = match word {
        [b'n' | b'N', rest @ ..] => rest,
        all => all,
    };
    let id: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (id > 0).then(|| NodeId::new(id))
}

/// A write of `key` (`SET` with its `value`, or `DEL`), with `extra` its optional
/// `CONTEXT token`.
fn write(level: &Level, key: &[u8], value: Option<&[u8]>, extra: &[Vec<u8>]) -> Action {
    if let Some(bad) = check(key, value) {
        return bad;
    }
    let context = match extra {
        [] => VersionVector::default(),
        [word, token] if word.eq_ignore_ascii_case(b"CONTEXT") => match parse_context(token) {
            Ok(context) => context,
            Err(e) => return error(e),
        },
        _ => return error("ERR syntax: CONTEXT token".into()),
    };
    match (level.consistency(), value) {
        (Some(level), value) => Action::Call(
            Request::Put {
                key: key.to_vec(),
                value: value.map(<[u8]>::to_vec),
                level,
                context,
            },
            Shape::Write,
        ),
        (None, Some(value)) => Action::Call(
            Request::LinearSet(key.to_vec(), value.to_vec()),
            Shape::Write,
        ),
        (None, None) => error("ERR DEL: the linearizable level has no deletes".into()),
    }
}

fn info_text(info: &Info) -> String {
    let mut out = format!(
        "node_id:{}\r\nsystem:leaderless\r\nmode:{}\r\nserving:{}\r\ntable_version:{}\r\n\
         partitions:{}\r\nreplication:{}\r\nkeys:{}\r\nkeys_max:{}\r\nhints:{}\r\n",
        info.id,
        info.mode,
        info.serving,
        info.table_version,
        info.partitions,
        info.replication,
        info.keys,
        info.keys_max,
        info.hints
    );
    let voters: Vec<String> = info.voters.iter().map(ToString::to_string).collect();
    out.push_str(&format!(
        "admitted:{}\r\nvoters:{}\r\nleave:{}\r\njoin:{}\r\nkeys_streamed:{}\r\n\
         bytes_streamed:{}\r\n",
        info.admitted,
        voters.join(","),
        info.leave.unwrap_or("no"),
        info.join.unwrap_or("no"),
        info.keys_streamed,
        info.bytes_streamed
    ));
    for (id, step) in &info.removals {
        out.push_str(&format!("removal:{id} {step}\r\n"));
    }
    let removed: Vec<String> = info.removed.iter().map(ToString::to_string).collect();
    out.push_str(&format!("removed:{}\r\n", removed.join(",")));
    out.push_str(&format!("moves_under_way:{}\r\n", info.moves_under_way));
    if let Some(why) = &info.move_wait {
        out.push_str(&format!("move_wait:{why}\r\n"));
    }
    for m in &info.members {
        out.push_str(&format!(
            "member:{} state={} replicas={} owned={}\r\n",
            m.id, m.state, m.replicas, m.owned
        ));
    }
    out
}

/// The reply to a call of `shape`, given the node's `response`.
#[must_use]
pub fn settle(shape: Shape, response: Response) -> Value {
    match (shape, response) {
        (Shape::Write | Shape::Cas, Response::Failed(Failure::Unknown(why))) => {
            Value::Error(format!("UNKNOWN {why}; the write may or may not be stored"))
        }
        // A removal refused: sent again it is refused again until what it names changes.
        (Shape::Remove, Response::Failed(Failure::Refused(why))) => {
            Value::Error(format!("ERR {why}"))
        }
        // At the key limit: sent again it would be refused again, so not `TRYAGAIN`.
        (_, Response::Failed(Failure::Full(why))) => Value::Error(format!("OOM {why}")),
        // A leave while moves take every slot: sent again once one is done, it begins.
        (_, Response::Failed(Failure::Busy(why))) => Value::Error(format!("BUSY {why}")),
        // Refused, or a read that may be sent again.
        (_, Response::Failed(Failure::Refused(why) | Failure::Unknown(why))) => {
            Value::Error(format!("TRYAGAIN {why}"))
        }
        (Shape::GetContext, Response::Read(read)) => {
            let mut items = vec![Value::Bulk(context_token(&read.context).into_bytes())];
            items.extend(read.values.into_iter().map(Value::Bulk));
            Value::Array(items)
        }
        (_, Response::Read(mut read)) => match read.values.len() {
            0 => Value::Nil,
            1 => Value::Bulk(read.values.remove(0)),
            _ => Value::Array(read.values.into_iter().map(Value::Bulk).collect()),
        },
        (_, Response::LinearRead(value)) => value.map_or(Value::Nil, Value::Bulk),
        (
            _,
            Response::Written { .. }
            | Response::LinearWritten
            | Response::Leaving
            | Response::Removing,
        ) => Value::Simple("OK".into()),
        (Shape::Cas, Response::Cas(reply)) => Value::Array(vec![
            Value::Int(i64::from(reply.applied)),
            reply.value.map_or(Value::Nil, Value::Bulk),
        ]),
        (_, Response::Cas(reply)) => reply.value.map_or(Value::Nil, Value::Bulk),
        (_, Response::Info(info)) => Value::Bulk(info_text(&info).into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leaderless::Read;

    fn args(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn the_level_of_a_connection_decides_where_a_command_goes() {
        let mut level = Level::default();
        let get = |level: Consistency| Request::Get {
            key: b"k".to_vec(),
            level,
        };
        assert_eq!(
            execute(&mut level, &args(&["get", "k"])),
            Action::Call(get(Consistency::Quorum), Shape::Get)
        );
        assert_eq!(
            execute(&mut level, &args(&["CONSISTENCY", "one"])),
            Action::Reply(Value::Simple("OK".into()))
        );
        assert_eq!(
            execute(&mut level, &args(&["GET", "k"])),
            Action::Call(get(Consistency::One), Shape::Get)
        );
        let _ = execute(&mut level, &args(&["CONSISTENCY", "LINEARIZABLE"]));
        assert_eq!(
            execute(&mut level, &args(&["SET", "k", "v"])),
            Action::Call(
                Request::LinearSet(b"k".to_vec(), b"v".to_vec()),
                Shape::Write
            )
        );
        for bad in [
            &["GET"][..],
            &["SET", "k"],
            &["SET", "k", "v", "CONTEXT", "zz"],
            &["DEL", "k"],
            &["CONSISTENCY", "TWO"],
            &["CAS", "k"],
            &["FLUSHALL"],
        ] {
            assert!(
                matches!(
                    execute(&mut level, &args(bad)),
                    Action::Reply(Value::Error(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn removenode_takes_a_members_id_and_its_refusal_is_an_error() {
        let mut level = Level::default();
        for word in ["3", "n3", "N3"] {
            assert_eq!(
                execute(&mut level, &args(&["removenode", word])),
                Action::Call(Request::Remove(NodeId::new(3)), Shape::Remove),
                "{word}"
            );
        }
        for bad in [
            &["REMOVENODE"][..],
            &["REMOVENODE", "0"],
            &["REMOVENODE", "x3"],
        ] {
            assert!(
                matches!(
                    execute(&mut level, &args(bad)),
                    Action::Reply(Value::Error(_))
                ),
                "{bad:?}"
            );
        }
        assert!(writes(&args(&["REMOVENODE", "3"])));
        let refused = Response::Failed(Failure::Refused("node n1 holds node n3 alive".into()));
        assert_eq!(
            settle(Shape::Remove, refused),
            Value::Error("ERR node n1 holds node n3 alive".into())
        );
        assert_eq!(
            settle(Shape::Remove, Response::Removing),
            Value::Simple("OK".into())
        );
    }

    #[test]
    fn a_context_token_comes_back_as_the_context_it_stands_for() {
        let mut context = VersionVector::default();
        context.increment(NodeId::new(3)).expect("room");
        context.increment(NodeId::new(3)).expect("room");
        let token = context_token(&context);
        assert_eq!(parse_context(token.as_bytes()), Ok(context.clone()));
        let mut level = Level::default();
        let set = execute(&mut level, &args(&["SET", "k", "v", "context", &token]));
        assert!(matches!(set, Action::Call(Request::Put { context: c, .. }, _) if c == context));
        let read = Read {
            values: vec![b"a".to_vec(), b"b".to_vec()],
            context,
        };
        assert_eq!(
            settle(Shape::GetContext, Response::Read(read.clone())),
            Value::Array(vec![
                Value::Bulk(token.into_bytes()),
                Value::Bulk(b"a".to_vec()),
                Value::Bulk(b"b".to_vec())
            ])
        );
        assert!(
            matches!(settle(Shape::Get, Response::Read(read)), Value::Array(v) if v.len() == 2)
        );
        let unknown = Response::Failed(Failure::Unknown("x".into()));
        assert!(
            matches!(settle(Shape::Write, unknown.clone()), Value::Error(e) if e.starts_with("UNKNOWN"))
        );
        assert!(
            matches!(settle(Shape::Get, unknown), Value::Error(e) if e.starts_with("TRYAGAIN"))
        );
    }
}
