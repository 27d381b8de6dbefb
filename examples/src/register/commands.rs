//! The register store's command table: RESP commands in, [`Request`]s to the node and RESP
//! replies out. Pure functions, tested without sockets.
//!
//! | Command | Meaning |
//! |---|---|
//! | `PING [msg]` | `PONG` (or `msg`) |
//! | `GET k` | the key's value, read from a majority (and written back to one), or nil |
//! | `SET k v` | `OK` once the value is stored on a majority; no options |
//! | `INFO` | `node_id:N` |
//! | `QUIT` | closes the connection |
//!
//! Keys are at most [`KEY_BYTES_MAX`] bytes and values [`VALUE_BYTES_MAX`]. Two errors say
//! whether a request may be sent again: `TRYAGAIN ...` when it was certainly not carried
//! out (the node is starting, or has too many operations in flight), `UNKNOWN ...` when a
//! write may or may not have been stored (no majority answered in time). A read that gets
//! no majority in time answers `TRYAGAIN`: the value it may have written back was already
//! stored by a write, so reading again is always safe.

use super::machine::{Request, Response};
use crate::resp::Value;

/// The longest key.
pub const KEY_BYTES_MAX: usize = 1 << 10;
/// The longest value: 64 KiB, so that a node's values, at most
/// [`RegisterLimits::keys_max`](super::RegisterLimits::keys_max) of them, stay under 640 MiB
/// (each register keeps its value in memory).
pub const VALUE_BYTES_MAX: usize = 64 << 10;

/// A request to the store, as the node's state machine takes it.
pub type StoreRequest = Request<Vec<u8>, Vec<u8>>;
/// The node's answer.
pub type StoreResponse = Response<Vec<u8>>;

/// What to do with one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Answer this.
    Reply(Value),
    /// Answer this and close the connection.
    Close(Value),
    /// Answer with the node's id.
    Info,
    /// Hand this to the node and answer with [`settle`] of its response.
    Call(StoreRequest),
}

fn wrong_args(name: &str) -> Action {
    Action::Reply(Value::Error(format!(
        "ERR wrong number of arguments for '{name}' command"
    )))
}

/// The commands that change the store: a read-only user is refused them.
pub const WRITE_COMMANDS: [&str; 1] = ["SET"];

/// Whether the command `args` changes the store (one of [`WRITE_COMMANDS`]).
#[must_use]
pub fn writes(args: &[Vec<u8>]) -> bool {
    args.first()
        .is_some_and(|name| crate::resp::is_one_of(name, &WRITE_COMMANDS))
}

/// What to do with the command `args` (never empty).
#[must_use]
pub fn execute(args: &[Vec<u8>]) -> Action {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    let rest = &args[1..];
    match (name.as_str(), rest) {
        ("PING", []) => Action::Reply(Value::Simple("PONG".into())),
        ("PING", [message]) => Action::Reply(Value::Bulk(message.clone())),
        ("QUIT", _) => Action::Close(Value::Simple("OK".into())),
        ("INFO", _) => Action::Info,
        ("GET", [key]) => match check_key(key) {
            Some(error) => Action::Reply(error),
            None => Action::Call(Request::Read(key.clone())),
        },
        ("SET", [key, value]) => match check_key(key) {
            Some(error) => Action::Reply(error),
            None if value.len() > VALUE_BYTES_MAX => Action::Reply(Value::Error(format!(
                "ERR the value is {} bytes long; the most is {VALUE_BYTES_MAX}",
                value.len()
            ))),
            None => Action::Call(Request::Write(key.clone(), value.clone())),
        },
        ("SET", [_, _, ..]) => Action::Reply(Value::Error(
            "ERR SET takes no options in the register store".into(),
        )),
        ("PING" | "GET" | "SET", _) => wrong_args(&name.to_ascii_lowercase()),
        _ => Action::Reply(Value::Error(format!(
            "ERR unknown command '{}'; the register store knows GET, SET, PING, INFO and QUIT",
            String::from_utf8_lossy(&args[0])
        ))),
    }
}

fn check_key(key: &[u8]) -> Option<Value> {
    (key.len() > KEY_BYTES_MAX).then(|| {
        Value::Error(format!(
            "ERR the key is {} bytes long; the most is {KEY_BYTES_MAX}",
            key.len()
        ))
    })
}

/// The reply to `request`, given the node's `response`.
#[must_use]
pub fn settle(request: &StoreRequest, response: StoreResponse) -> Value {
    match (request, response) {
        (_, Response::Read(Some(value))) => Value::Bulk(value),
        (_, Response::Read(None)) => Value::Nil,
        (_, Response::Written) => Value::Simple("OK".into()),
        (_, Response::Refused) => {
            Value::Error("TRYAGAIN the node is starting or busy; nothing was done".into())
        }
        (Request::Read(_), Response::GaveUp) => {
            Value::Error("TRYAGAIN no majority answered in time".into())
        }
        (Request::Write(..), Response::GaveUp) => Value::Error(
            "UNKNOWN no majority answered in time; the write may or may not be stored".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn commands_become_requests_and_bad_ones_errors() {
        let get = Request::Read(b"k".to_vec());
        assert_eq!(execute(&args(&["get", "k"])), Action::Call(get));
        let set = Request::Write(b"k".to_vec(), b"v".to_vec());
        assert_eq!(execute(&args(&["SET", "k", "v"])), Action::Call(set));
        assert_eq!(
            execute(&args(&["PING"])),
            Action::Reply(Value::Simple("PONG".into()))
        );
        for bad in [
            &["GET"][..],
            &["SET", "k"],
            &["SET", "k", "v", "NX"],
            &["DEL", "k"],
        ] {
            assert!(
                matches!(execute(&args(bad)), Action::Reply(Value::Error(_))),
                "{bad:?}"
            );
        }
        let long_key = vec![b'k'; KEY_BYTES_MAX + 1];
        let command = vec![b"GET".to_vec(), long_key];
        assert!(matches!(execute(&command), Action::Reply(Value::Error(_))));
        let long_value = vec![b'v'; VALUE_BYTES_MAX + 1];
        let command = vec![b"SET".to_vec(), b"k".to_vec(), long_value];
        assert!(matches!(execute(&command), Action::Reply(Value::Error(_))));
    }

    #[test]
    fn a_write_without_an_answer_is_unknown_and_a_read_may_be_tried_again() {
        let read = Request::Read(b"k".to_vec());
        let write = Request::Write(b"k".to_vec(), b"v".to_vec());
        let error = |v: Value| match v {
            Value::Error(e) => e.split(' ').next().map(str::to_string),
            _ => None,
        };
        assert_eq!(
            error(settle(&write, Response::GaveUp)).as_deref(),
            Some("UNKNOWN")
        );
        assert_eq!(
            error(settle(&read, Response::GaveUp)).as_deref(),
            Some("TRYAGAIN")
        );
        assert_eq!(
            error(settle(&write, Response::Refused)).as_deref(),
            Some("TRYAGAIN")
        );
        assert_eq!(settle(&read, Response::Read(None)), Value::Nil);
        assert_eq!(
            settle(&read, Response::Read(Some(b"v".to_vec()))),
            Value::Bulk(b"v".to_vec())
        );
        assert_eq!(
            settle(&write, Response::Written),
            Value::Simple("OK".into())
        );
    }
}
