//! The key-value state machine that the replicated log drives.
//!
//! Every replica applies the same committed commands in the same order to a [`KvStore`],
//! so every replica holds the same map: this is the *state machine* half of the
//! Replicated Log pattern. Commands that change the map ([`KvCommand`]) go through the
//! log; queries ([`KvQuery`]) are answered from a replica's map once it has applied far
//! enough (see the node's read modes).
//!
//! The store also holds the client-session table (Idempotent Receiver, from
//! `synod_consensus::session`), so a command retried with the same session and sequence
//! number is applied once and its saved [`KvReply`] returned again. Both are serialized
//! together into a snapshot ([`KvStore::snapshot`], [`KvStore::restore`]) when the node
//! compacts its log (Low-Water Mark).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use synod_consensus::LogIndex;
use synod_consensus::session::{SessionConfig, SessionEntry, SessionError, SessionId, Sessions};

/// Bytes, as keys and values are stored.
pub type Bytes = Vec<u8>;

/// A condition on a put (Redis `SET ... NX` / `XX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PutCondition {
    /// Always write.
    Always,
    /// Write only if the key does not exist (`NX`).
    IfAbsent,
    /// Write only if the key exists (`XX`).
    IfPresent,
}

/// A command that changes the map: it goes through the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvCommand {
    /// Sets `key` to `value` if `condition` holds. Replies `Ok` or `Nil` (condition failed).
    Put {
        /// The key.
        key: Bytes,
        /// The new value.
        value: Bytes,
        /// When to write.
        condition: PutCondition,
    },
    /// Removes keys. Replies the number removed.
    Delete {
        /// The keys.
        keys: Vec<Bytes>,
    },
    /// Compare-and-set: sets `key` to `new` if its current value is `expected` (`None`:
    /// the key must be absent). Replies `Int(1)` if it wrote, `Int(0)` if not.
    Cas {
        /// The key.
        key: Bytes,
        /// The value it must hold now.
        expected: Option<Bytes>,
        /// The value to write.
        new: Bytes,
    },
    /// Adds `by` to the decimal integer at `key` (absent counts as 0). Replies the new
    /// value, or an error if the value is not an integer or the sum overflows.
    Incr {
        /// The key.
        key: Bytes,
        /// The increment.
        by: i64,
    },
}

/// A query: answered from a replica's applied state, never logged.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvQuery {
    /// The value of a key: `Bulk` or `Nil`.
    Get(Bytes),
    /// The values of several keys: `Values`.
    MGet(Vec<Bytes>),
    /// How many of the keys exist: `Int`.
    Exists(Vec<Bytes>),
    /// Keys starting with `prefix`, in order, at most `limit`: `Pairs`.
    Scan {
        /// The prefix.
        prefix: Bytes,
        /// Most pairs returned.
        limit: usize,
    },
}

/// What a command or query answers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvReply {
    /// Done.
    Ok,
    /// No value (absent key, failed condition).
    Nil,
    /// An integer.
    Int(i64),
    /// One value.
    Bulk(Bytes),
    /// Several values, `None` for an absent key.
    Values(Vec<Option<Bytes>>),
    /// Key-value pairs.
    Pairs(Vec<(Bytes, Bytes)>),
    /// The command failed in a way every replica agrees on (not an integer, unknown
    /// session...).
    Error(String),
}

/// What the node proposes to the log: a session operation or a command in a session, or
/// a command without a session (applied once per proposal, so a blind retry may apply
/// it twice).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogCommand {
    /// Session registration, request or close.
    Session(SessionEntry<KvCommand>),
    /// A command without a session.
    Plain {
        /// The proposer's clock, in milliseconds (moves replicated time forward).
        time: u64,
        /// The command.
        command: KvCommand,
    },
}

impl LogCommand {
    /// The postcard encoding.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("postcard encodes to a Vec")
    }

    /// Decodes [`LogCommand::encode`]'s output; `None` for anything else.
    #[must_use]
    pub fn decode(bytes: &[u8]) -> Option<LogCommand> {
        postcard::from_bytes(bytes).ok()
    }
}

/// The most bytes a query's reply may hold, counting [`REPLY_ELEMENT_BYTES`] for each
/// value or pair besides its own bytes: a larger one is refused with an error instead of
/// being built (`MGET` of the same 1 MiB key 4096 times would otherwise take 4 GiB on the
/// node's one thread, and `SCAN` with a large limit the whole store).
pub const REPLY_BYTES_MAX: usize = 32 << 20;
/// What each value or pair of a reply counts for against [`REPLY_BYTES_MAX`] besides its
/// bytes (the memory of its allocation and of its RESP header).
pub const REPLY_ELEMENT_BYTES: usize = 64;

fn reply_too_large(what: &str) -> KvReply {
    KvReply::Error(format!(
        "ERR the reply would be larger than {REPLY_BYTES_MAX} bytes; {what}"
    ))
}

/// Limits of the session table, in milliseconds of replicated time and counts.
pub fn session_config() -> SessionConfig {
    SessionConfig::new(10 * 60 * 1000, 1024, 10_000).expect("nonzero limits")
}

/// The replicated map and session table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvStore {
    map: BTreeMap<Bytes, Bytes>,
    sessions: Sessions<KvReply>,
}

impl Default for KvStore {
    fn default() -> Self {
        Self::new()
    }
}

impl KvStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> KvStore {
        KvStore {
            map: BTreeMap::new(),
            sessions: Sessions::new(session_config()),
        }
    }

    /// Number of keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the map is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Open client sessions.
    #[must_use]
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Applies a committed log command at `index`. Deterministic: every replica returns
    /// the same reply.
    pub fn apply(&mut self, index: LogIndex, command: LogCommand) -> KvReply {
        match command {
            LogCommand::Plain { time, command } => {
                self.sessions.advance(time);
                apply_command(&mut self.map, command)
            }
            LogCommand::Session(SessionEntry::Register { time }) => {
                let id = self.sessions.register(index, time);
                KvReply::Int(i64::try_from(id.0).unwrap_or(i64::MAX))
            }
            LogCommand::Session(SessionEntry::Unregister { session, time }) => {
                self.sessions.unregister(session, time);
                KvReply::Ok
            }
            LogCommand::Session(SessionEntry::Request {
                session,
                seq,
                ack_below,
                time,
                command,
            }) => {
                let map = &mut self.map;
                match self.sessions.apply(session, seq, ack_below, time, || {
                    apply_command(map, command)
                }) {
                    Ok(outcome) => outcome.into_response(),
                    Err(e) => KvReply::Error(session_error(&e)),
                }
            }
        }
    }

    /// Answers a query from the current state; a reply that would be larger than
    /// [`REPLY_BYTES_MAX`] is an error.
    #[must_use]
    pub fn query(&self, query: &KvQuery) -> KvReply {
        match query {
            KvQuery::Get(key) => self
                .map
                .get(key)
                .cloned()
                .map_or(KvReply::Nil, KvReply::Bulk),
            KvQuery::MGet(keys) => {
                let bytes = keys.iter().fold(0usize, |sum, k| {
                    let len = self.map.get(k).map_or(0, Vec::len);
                    sum.saturating_add(len + REPLY_ELEMENT_BYTES)
                });
                if bytes > REPLY_BYTES_MAX {
                    return reply_too_large("ask for fewer keys at a time");
                }
                KvReply::Values(keys.iter().map(|k| self.map.get(k).cloned()).collect())
            }
            KvQuery::Exists(keys) => {
                let n = keys.iter().filter(|k| self.map.contains_key(*k)).count();
                KvReply::Int(i64::try_from(n).unwrap_or(i64::MAX))
            }
            KvQuery::Scan { prefix, limit } => {
                let mut bytes = 0usize;
                let mut pairs = Vec::new();
                let matching = self
                    .map
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .take(*limit);
                for (k, v) in matching {
                    bytes += k.len() + v.len() + REPLY_ELEMENT_BYTES;
                    if bytes > REPLY_BYTES_MAX {
                        return reply_too_large("give SCAN a lower limit or a longer prefix");
                    }
                    pairs.push((k.clone(), v.clone()));
                }
                KvReply::Pairs(pairs)
            }
        }
    }

    /// Whether `session` is open.
    #[must_use]
    pub fn has_session(&self, session: SessionId) -> bool {
        self.sessions.contains(session)
    }

    /// Serializes the map and the session table.
    #[must_use]
    pub fn snapshot(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("postcard encodes to a Vec")
    }

    /// Restores a snapshot made by [`KvStore::snapshot`]; `None` if the bytes are not one.
    /// Empty bytes (the initial snapshot of a new log) restore an empty store.
    #[must_use]
    pub fn restore(bytes: &[u8]) -> Option<KvStore> {
        if bytes.is_empty() {
            return Some(KvStore::new());
        }
        let mut store: KvStore = postcard::from_bytes(bytes).ok()?;
        store.sessions.set_config(session_config());
        Some(store)
    }
}

fn session_error(e: &SessionError) -> String {
    match e {
        SessionError::UnknownSession(_) => format!("SESSION {e}; register a new one"),
        _ => format!("SESSION {e}"),
    }
}

fn apply_command(map: &mut BTreeMap<Bytes, Bytes>, command: KvCommand) -> KvReply {
    match command {
        KvCommand::Put {
            key,
            value,
            condition,
        } => {
            let exists = map.contains_key(&key);
            let write = match condition {
                PutCondition::Always => true,
                PutCondition::IfAbsent => !exists,
                PutCondition::IfPresent => exists,
            };
            if write {
                map.insert(key, value);
                KvReply::Ok
            } else {
                KvReply::Nil
            }
        }
        KvCommand::Delete { keys } => {
            let n = keys.iter().filter(|k| map.remove(*k).is_some()).count();
            KvReply::Int(i64::try_from(n).unwrap_or(i64::MAX))
        }
        KvCommand::Cas { key, expected, new } => {
            if map.get(&key) == expected.as_ref() {
                map.insert(key, new);
                KvReply::Int(1)
            } else {
                KvReply::Int(0)
            }
        }
        KvCommand::Incr { key, by } => {
            let current = match map.get(&key) {
                None => 0,
                Some(v) => match std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                {
                    Some(n) => n,
                    None => {
                        return KvReply::Error(
                            "ERR value is not an integer or out of range".into(),
                        );
                    }
                },
            };
            match current.checked_add(by) {
                Some(n) => {
                    map.insert(key, n.to_string().into_bytes());
                    KvReply::Int(n)
                }
                None => KvReply::Error("ERR increment or decrement would overflow".into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> LogCommand {
        LogCommand::Plain {
            time: 1,
            command: KvCommand::Put {
                key: k.into(),
                value: v.into(),
                condition: PutCondition::Always,
            },
        }
    }

    #[test]
    fn commands_and_queries() {
        let mut kv = KvStore::new();
        assert_eq!(kv.apply(LogIndex(1), put("a/1", "x")), KvReply::Ok);
        assert_eq!(kv.apply(LogIndex(2), put("a/2", "y")), KvReply::Ok);
        assert_eq!(kv.apply(LogIndex(3), put("b", "5")), KvReply::Ok);
        let scan = kv.query(&KvQuery::Scan {
            prefix: b"a/".to_vec(),
            limit: 10,
        });
        assert_eq!(
            scan,
            KvReply::Pairs(vec![
                (b"a/1".to_vec(), b"x".to_vec()),
                (b"a/2".to_vec(), b"y".to_vec())
            ])
        );
        let incr = LogCommand::Plain {
            time: 2,
            command: KvCommand::Incr {
                key: b"b".to_vec(),
                by: 1,
            },
        };
        assert_eq!(kv.apply(LogIndex(4), incr.clone()), KvReply::Int(6));
        let not_int = LogCommand::Plain {
            time: 2,
            command: KvCommand::Incr {
                key: b"a/1".to_vec(),
                by: 1,
            },
        };
        assert!(matches!(kv.apply(LogIndex(5), not_int), KvReply::Error(_)));
        let cas = |expected: Option<&str>, new: &str| LogCommand::Plain {
            time: 3,
            command: KvCommand::Cas {
                key: b"b".to_vec(),
                expected: expected.map(Into::into),
                new: new.into(),
            },
        };
        assert_eq!(kv.apply(LogIndex(6), cas(Some("5"), "9")), KvReply::Int(0));
        assert_eq!(kv.apply(LogIndex(7), cas(Some("6"), "9")), KvReply::Int(1));
        assert_eq!(kv.apply(LogIndex(8), cas(None, "1")), KvReply::Int(0));
        assert_eq!(
            kv.query(&KvQuery::MGet(vec![b"b".to_vec(), b"zz".to_vec()])),
            KvReply::Values(vec![Some(b"9".to_vec()), None])
        );
        assert_eq!(
            kv.query(&KvQuery::Exists(vec![b"b".to_vec(), b"zz".to_vec()])),
            KvReply::Int(1)
        );
        let nx = LogCommand::Plain {
            time: 3,
            command: KvCommand::Put {
                key: b"b".to_vec(),
                value: b"0".to_vec(),
                condition: PutCondition::IfAbsent,
            },
        };
        assert_eq!(kv.apply(LogIndex(9), nx), KvReply::Nil);
        let del = LogCommand::Plain {
            time: 3,
            command: KvCommand::Delete {
                keys: vec![b"b".to_vec(), b"b".to_vec(), b"q".to_vec()],
            },
        };
        assert_eq!(kv.apply(LogIndex(10), del), KvReply::Int(1));
    }

    #[test]
    fn a_reply_larger_than_the_bound_is_refused_before_it_is_built() {
        let mut kv = KvStore::new();
        let value = vec![b'v'; 1 << 20];
        for i in 0..40 {
            let command = LogCommand::Plain {
                time: 1,
                command: KvCommand::Put {
                    key: format!("big/{i:02}").into_bytes(),
                    value: value.clone(),
                    condition: PutCondition::Always,
                },
            };
            kv.apply(LogIndex(i + 1), command);
        }
        // The same 1 MiB key 40 times, and 40 keys of 1 MiB: over 32 MiB either way.
        let mget = kv.query(&KvQuery::MGet(vec![b"big/00".to_vec(); 40]));
        assert!(
            matches!(&mget, KvReply::Error(e) if e.contains("larger than")),
            "MGET answered {} bytes",
            match &mget {
                KvReply::Values(v) => v.iter().flatten().map(Vec::len).sum::<usize>(),
                _ => 0,
            }
        );
        let scan = |limit| {
            kv.query(&KvQuery::Scan {
                prefix: b"big/".to_vec(),
                limit,
            })
        };
        assert!(matches!(scan(40), KvReply::Error(e) if e.contains("larger than")));
        // Within the bound, answered as before.
        assert!(matches!(scan(20), KvReply::Pairs(p) if p.len() == 20));
        let mget = kv.query(&KvQuery::MGet(vec![b"big/00".to_vec(), b"none".to_vec()]));
        assert_eq!(mget, KvReply::Values(vec![Some(value), None]));
    }

    #[test]
    fn a_retried_request_is_applied_once_and_survives_a_snapshot() {
        let mut kv = KvStore::new();
        let reg = LogCommand::Session(SessionEntry::Register { time: 1 });
        assert_eq!(kv.apply(LogIndex(1), reg), KvReply::Int(1));
        let incr = LogCommand::Session(SessionEntry::Request {
            session: SessionId(1),
            seq: 1,
            ack_below: 1,
            time: 2,
            command: KvCommand::Incr {
                key: b"n".to_vec(),
                by: 1,
            },
        });
        assert_eq!(kv.apply(LogIndex(2), incr.clone()), KvReply::Int(1));
        let mut restored = KvStore::restore(&kv.snapshot()).expect("snapshot decodes");
        assert_eq!(restored, kv);
        assert_eq!(restored.apply(LogIndex(3), incr), KvReply::Int(1));
        assert_eq!(
            restored.query(&KvQuery::Get(b"n".to_vec())),
            KvReply::Bulk(b"1".to_vec())
        );
        assert!(KvStore::restore(b"\xff\xff\xff garbage").is_none());
    }
}
