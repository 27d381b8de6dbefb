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
//!
//! # Revisions
//!
//! As in etcd, the store counts its changes: its *revision* (from 0, for an empty store)
//! goes up by one with every applied log entry that changes at least one key, and every
//! key carries the revision that created it (`create_revision`), the revision that last
//! changed it (`mod_revision`) and how many times it was written since it was created
//! (`version`, 1 on creation). A deleted key loses all three; written again, it starts
//! over. An entry that changes nothing (a failed condition, a `DEL` of absent keys, a
//! retried request answered from its session, a session operation) takes no revision, so
//! revisions are dense: every revision from 1 to the current one names the changes of
//! exactly one entry, which [`KvStore::changes`] hands out after each [`KvStore::apply`].
//! Revisions are replicated state, the same on every replica, and kept in snapshots.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;

use super::pattern::Pattern;
use serde::{Deserialize, Serialize};
use synod_consensus::LogIndex;
use synod_consensus::session::{SessionConfig, SessionEntry, SessionError, SessionId, Sessions};
use synod_membership::lease::{
    LeaseApplied, LeaseCommand, LeaseError, LeaseId, LeaseLimits, LeaseTable,
};

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
        #[serde(with = "byte_string")]
        key: Bytes,
        /// The new value.
        #[serde(with = "byte_string")]
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
    /// A put that also sets the key's expiry (Redis `SET ... EX|PX|KEEPTTL`, or Synod's
    /// `SET ... LEASE id`). Replies as [`KvCommand::Put`]. (A plain `Put` clears any
    /// expiry, as Redis's `SET` does.)
    PutExpiring {
        /// The key.
        #[serde(with = "byte_string")]
        key: Bytes,
        /// The new value.
        #[serde(with = "byte_string")]
        value: Bytes,
        /// When to write.
        condition: PutCondition,
        /// The key's expiry after the write.
        expiry: Expiry,
    },
    /// Sets or clears a key's expiry (Redis `EXPIRE`, `PEXPIRE`): `ttl_ms` at most 0
    /// deletes the key. Replies `Int(1)` if done, `Int(0)` if the key is absent or the
    /// condition failed.
    Expire {
        /// The key.
        key: Bytes,
        /// The new time to live, in milliseconds.
        ttl_ms: i64,
        /// When to set it.
        condition: ExpireCondition,
    },
    /// Removes a key's expiry (Redis `PERSIST`): `Int(1)` if it had one, else `Int(0)`.
    Persist {
        /// The key.
        key: Bytes,
    },
    /// A lease operation (see `synod_membership::lease`): a grant replies the lease id,
    /// a keep-alive its TTL in milliseconds, a revoke the number of keys deleted with it;
    /// an absent lease is an error.
    Lease(LeaseCommand),
    /// `command`, applied only if `lock` exists and was created at revision `token` (the
    /// lock recipe's fencing token); otherwise refused with a `FENCED` error.
    Fenced {
        /// The lock key.
        lock: Bytes,
        /// The fencing token: the lock key's create revision when it was acquired.
        token: u64,
        /// The command.
        #[serde(deserialize_with = "nesting::deserialize")]
        command: Box<KvCommand>,
    },
    /// A Redis transaction (`MULTI` ... `EXEC`), applied as one entry, so atomically and
    /// at one revision on every replica: if any `watched` key's mod revision is no longer
    /// the one given (0: absent), nothing is done and the reply is `Nil` (`EXEC`'s null
    /// reply); otherwise each operation runs in order and the reply is `Multi` with each
    /// one's reply (an operation that fails does not undo the others, as in Redis).
    Transaction {
        /// Keys `WATCH`ed, with the mod revision each had then.
        watched: Vec<(Bytes, u64)>,
        /// The queued operations.
        ops: Vec<TxOp>,
    },
}

/// One operation of a [`KvCommand::Transaction`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TxOp {
    /// A command (never a transaction).
    Write(#[serde(deserialize_with = "nesting::deserialize")] KvCommand),
    /// A query, answered from the state the operations before it left.
    Read(KvQuery),
}

/// How deeply commands may nest inside one another when decoded ([`KvCommand::Fenced`]
/// and [`KvCommand::Transaction`] hold commands): a fenced write inside a transaction is 2.
pub const COMMAND_NESTING_MAX: u32 = 4;

/// Serde for a `Vec<u8>` as a byte string, for the fields every write carries (a key, a
/// value). In postcard a byte string is laid out as serde's default for `Vec<u8>` (a
/// sequence of `u8`: the length as a varint, then one byte each), so the bytes are the same
/// either way, old logs and snapshots decode and old nodes read new entries; but the
/// default goes through the serializer once per byte, and this copies the bytes at once.
mod byte_string {
    use std::fmt;

    use serde::{Deserializer, Serialize, Serializer, de};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(Visitor)
    }

    /// A key of a map serialized as a byte string (see [`serialize`]).
    pub(super) struct Key<'a>(pub(super) &'a [u8]);

    impl Serialize for Key<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    struct Visitor;

    impl<'de> de::Visitor<'de> for Visitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        /// What a format without byte strings (JSON: an array of numbers) gives.
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // The hint comes from the input: trusted only up to a bound.
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element::<u8>()? {
                v.push(b);
            }
            Ok(v)
        }
    }
}

/// Decoding of the commands that hold commands, refused past [`COMMAND_NESTING_MAX`]: the
/// types are recursive, and bytes from a peer or the log nesting them a hundred thousand
/// deep would otherwise overflow the decoding thread's stack instead of failing to decode.
mod nesting {
    use std::cell::Cell;

    use serde::{Deserialize, Deserializer, de::Error};

    thread_local! {
        /// How many nested commands this thread is decoding now.
        static DEPTH: Cell<u32> = const { Cell::new(0) };
    }

    /// Leaves one level when dropped, also when decoding fails or unwinds.
    struct Level;

    impl Drop for Level {
        fn drop(&mut self) {
            DEPTH.with(|depth| depth.set(depth.get().saturating_sub(1)));
        }
    }

    /// Deserializes a nested command, or fails past the limit.
    pub(super) fn deserialize<'de, D, T>(deserializer: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        let depth = DEPTH.with(|depth| {
            depth.set(depth.get() + 1);
            depth.get()
        });
        let _level = Level;
        if depth > super::COMMAND_NESTING_MAX {
            return Err(D::Error::custom(format_args!(
                "commands nested more than {} deep",
                super::COMMAND_NESTING_MAX
            )));
        }
        T::deserialize(deserializer)
    }
}

/// A key's expiry after a [`KvCommand::PutExpiring`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Expiry {
    /// Keep what it had (`KEEPTTL`).
    Keep,
    /// Expire `ms` milliseconds after the write is applied, on the leader's clock
    /// (`EX`, `PX`, and `EXAT`/`PXAT` once converted by the node that took the command).
    TtlMs(u64),
    /// Attached to a lease, deleted with it.
    Lease(LeaseId),
}

/// When an [`KvCommand::Expire`] sets the expiry (Redis's `NX`, `XX`, `GT`, `LT`; a key
/// without an expiry counts as an infinite TTL).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpireCondition {
    /// Always.
    Always,
    /// Only if the key has no expiry.
    IfNone,
    /// Only if it has one.
    IfSome,
    /// Only if the new one is later.
    IfGreater,
    /// Only if the new one is sooner.
    IfLess,
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
    /// A key with its revisions, and the store's revision: `Entry`.
    GetRevisions(Bytes),
    /// A key's remaining time to live: `Int`, in milliseconds or rounded to seconds, -2 if
    /// the key is absent, -1 if it does not expire.
    Ttl {
        /// The key.
        key: Bytes,
        /// Milliseconds (`PTTL`) rather than seconds (`TTL`).
        in_ms: bool,
    },
    /// A lease's remaining time to live in milliseconds: `Int`, -2 if there is no such
    /// lease.
    LeaseTtl(LeaseId),
    /// Every key matching a glob-style pattern ([`super::pattern`]), in key order: `Keys`.
    Keys(Bytes),
    /// How many keys the store holds: `Int`.
    DbSize,
    /// Redis's cursor scan: about `count` keys from `cursor` on (0: from the start), those
    /// matching `pattern` if any: `Cursor`, whose `next` is 0 once the scan is over. See
    /// [`scan_hash`].
    ScanCursor {
        /// Where to go on from.
        cursor: u64,
        /// The keys wanted.
        pattern: Option<Bytes>,
        /// How many keys to look at (a hint: keys of one cursor value all come together).
        count: usize,
    },
    /// The mod revision of each key, 0 for an absent one (`WATCH`): `ModRevisions`.
    ModRevisions(Vec<Bytes>),
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
    /// A key's value and revisions (all 0 and no value for an absent key), with the
    /// store's revision when it was read.
    Entry {
        /// The value, `None` if the key is absent.
        value: Option<Bytes>,
        /// The key's revisions.
        revisions: Revisions,
        /// The store's revision.
        revision: u64,
    },
    /// Keys.
    Keys(Vec<Bytes>),
    /// A page of a cursor scan, and the cursor to go on from (0: the scan is over).
    Cursor {
        /// The next cursor.
        next: u64,
        /// The keys of this page.
        keys: Vec<Bytes>,
    },
    /// Each key's mod revision.
    ModRevisions(Vec<u64>),
    /// A transaction's replies, one per operation.
    Multi(Vec<KvReply>),
}

/// Most keys a cursor scan looks at in one call, whatever `COUNT` asks.
pub const SCAN_COUNT_MAX: usize = 100_000;

/// Where a key falls in a cursor scan: `synod_partitioning`'s stable key hash (which
/// never changes), halved and plus one, so that it is never 0 (the cursor that starts and
/// ends a scan) and one more than any is still a `u64`. A scan walks keys in this order and a cursor is the value to go on from, so
/// a key present from the first call to the last is returned at least once however the
/// store changes meanwhile, on any replica (keys sharing a value come in one page).
#[must_use]
pub fn scan_hash(key: &[u8]) -> u64 {
    (synod_partitioning::key_hash(key) >> 1) + 1
}

/// A key's revisions, as etcd keeps them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Revisions {
    /// The revision that created the key (since it was last absent).
    pub create: u64,
    /// The revision that last changed it.
    pub modified: u64,
    /// Writes since it was created, 1 for the creating one.
    pub version: u64,
}

/// A key as the map holds it: its bytes, and its first [`KEY_HEAD_BYTES`] as a number,
/// compared first. The order is the bytes' own (a key shorter than the head is padded with
/// zeros, and heads that tie are settled by the bytes), but a search of the map compares
/// numbers and lengths held in its nodes, and looks at a key's bytes (a pointer to follow
/// and a `memcmp`) only when two keys longer than the head share it: a put into a map of
/// 16,384 keys spent most of its search on those pointers.
#[derive(Clone, Debug, PartialEq, Eq)]
struct MapKey {
    head: u128,
    bytes: Bytes,
}

/// Bytes of a key compared as a number before its bytes are ([`MapKey`]).
const KEY_HEAD_BYTES: usize = 16;

impl MapKey {
    fn new(bytes: Bytes) -> MapKey {
        let mut head = [0u8; KEY_HEAD_BYTES];
        let n = bytes.len().min(KEY_HEAD_BYTES);
        head[..n].copy_from_slice(&bytes[..n]);
        MapKey {
            head: u128::from_be_bytes(head),
            bytes,
        }
    }
}

impl Ord for MapKey {
    fn cmp(&self, other: &MapKey) -> Ordering {
        // Heads that differ order their keys as the bytes do: at the first byte where they
        // differ, either both keys have a byte there, or the shorter key's padding (zero) is
        // below the other's byte. Heads that tie: a key that fits in its head is a prefix of
        // the other (every byte of it is in the head), and comes first if shorter; two
        // longer keys differ past the head, if at all.
        self.head.cmp(&other.head).then_with(|| {
            if self.bytes.len().min(other.bytes.len()) <= KEY_HEAD_BYTES {
                self.bytes.len().cmp(&other.bytes.len())
            } else {
                self.bytes[KEY_HEAD_BYTES..].cmp(&other.bytes[KEY_HEAD_BYTES..])
            }
        })
    }
}

impl PartialOrd for MapKey {
    fn partial_cmp(&self, other: &MapKey) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

// A lookup by the bytes alone orders them as `MapKey` does (see `Ord`), as `Borrow` asks.
impl Borrow<[u8]> for MapKey {
    fn borrow(&self) -> &[u8] {
        &self.bytes
    }
}

impl Borrow<Bytes> for MapKey {
    fn borrow(&self) -> &Bytes {
        &self.bytes
    }
}

impl Deref for MapKey {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Serialize for MapKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.bytes)
    }
}

/// A key's value and revisions, as the store holds them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    #[serde(with = "byte_string")]
    value: Bytes,
    revisions: Revisions,
}

/// One key's change by an applied entry: what a watch reports.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyChange {
    /// The key.
    pub key: Bytes,
    /// Its new value, `None` if the entry deleted it.
    pub value: Option<Bytes>,
    /// Its revisions after the change (for a delete: `modified` is the deleting
    /// revision, `create` and `version` are 0).
    pub revisions: Revisions,
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

/// Bytes reserved for a [`LogCommand::encode`] before it starts (a `SET` of a 16-byte key
/// and a 32-byte value is about 60).
const ENCODE_CAPACITY: usize = 128;

impl LogCommand {
    /// The postcard encoding.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        // Room for a small write's whole encoding at once, rather than growing to it.
        postcard::to_extend(self, Vec::with_capacity(ENCODE_CAPACITY))
            .expect("postcard encodes to a Vec")
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

/// How long a session may sit idle before it expires, in milliseconds of replicated time.
pub const SESSION_TIMEOUT_MS: u64 = 10 * 60 * 1000;
/// Unacknowledged replies a session keeps for retries.
pub const SESSION_RESPONSES_MAX: usize = 1024;
/// Open sessions: a registration past it closes the least recently active session that has
/// never applied a write, and is refused with a `SESSION` error only if every open session
/// has (until one closes or expires): a session in use is never closed to make room.
pub const SESSIONS_MAX: usize = 10_000;

/// Limits of the session table: [`SESSION_TIMEOUT_MS`], [`SESSION_RESPONSES_MAX`],
/// [`SESSIONS_MAX`].
pub fn session_config() -> SessionConfig {
    SessionConfig::new(SESSION_TIMEOUT_MS, SESSION_RESPONSES_MAX, SESSIONS_MAX)
        .expect("nonzero limits")
}

/// The most bytes of keys and values the store holds, as etcd's default storage quota: a
/// write that would pass it is refused (deterministically, on every replica, when it is
/// applied), so that filling the store cannot take every replica's memory at once.
pub const STORE_BYTES_MAX: u64 = 2 << 30;

/// The replicated map and session table. (Equal stores hold the same keys, revisions and
/// sessions; the changes of the last entry applied are not compared.)
#[derive(Clone, Debug)]
pub struct KvStore {
    pairs: Pairs,
    sessions: Sessions<KvReply>,
}

impl PartialEq for KvStore {
    fn eq(&self, other: &KvStore) -> bool {
        self.pairs.map == other.pairs.map
            && self.pairs.revision == other.pairs.revision
            && self.pairs.leases == other.pairs.leases
            && self.sessions == other.sessions
    }
}

impl Eq for KvStore {}

/// The map, with its size against the quota.
#[derive(Clone, Debug)]
struct Pairs {
    map: BTreeMap<MapKey, Entry>,
    /// The keys in [`scan_hash`] order, for cursor scans (not in snapshots: rebuilt on
    /// restore).
    by_hash: BTreeSet<(u64, Bytes)>,
    /// The store's revision: applied entries that changed a key.
    revision: u64,
    /// The changes of the entry being applied, or of the last one applied (not in
    /// snapshots).
    changes: Vec<KeyChange>,
    /// The leases, and the keys attached to them (a key with an expiry has a lease of
    /// its own).
    leases: LeaseTable<Bytes>,
    /// What the entry being applied (or the last one) did to the leases, for the
    /// leader's expirer (not in snapshots).
    lease_events: Vec<LeaseApplied<Bytes>>,
    /// Bytes of keys and values in `map` (not in snapshots: recounted on restore).
    bytes: u64,
    /// [`STORE_BYTES_MAX`], or less in tests.
    quota: u64,
}

/// What a snapshot begins with since keys carry revisions; a snapshot without it is of
/// the earlier format (the map of values alone, then the sessions), whose keys are
/// restored at revision 1.
const SNAPSHOT_MAGIC: &[u8; 8] = b"synodkv\x02";

/// What a snapshot begins with since it holds leases; one beginning with
/// [`SNAPSHOT_MAGIC`] is restored with no lease.
const SNAPSHOT_MAGIC_LEASES: &[u8; 8] = b"synodkv\x03";

/// A snapshot's body, after [`SNAPSHOT_MAGIC`].
#[derive(Serialize, Deserialize)]
struct SnapshotV2<M, S> {
    revision: u64,
    map: M,
    sessions: S,
}

/// A snapshot's body, after [`SNAPSHOT_MAGIC_LEASES`].
#[derive(Serialize, Deserialize)]
struct SnapshotV3<M, S, L> {
    revision: u64,
    map: M,
    sessions: S,
    leases: L,
}

/// The map as a snapshot holds it: laid out as serde's default for the `BTreeMap`, its keys
/// written as byte strings at once instead of a byte at a time (see [`byte_string`]).
struct ByteKeyed<'a>(&'a BTreeMap<MapKey, Entry>);

impl Serialize for ByteKeyed<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, e)| (byte_string::Key(&k.bytes), e)))
    }
}

/// The limits of the store's lease table: `synod_membership::lease`'s defaults (every
/// replica applies the same).
#[must_use]
pub fn lease_limits() -> LeaseLimits {
    LeaseLimits::default()
}

/// A snapshot of the earlier format.
#[derive(Deserialize)]
struct SnapshotV1 {
    map: BTreeMap<Bytes, Bytes>,
    sessions: Sessions<KvReply>,
}

/// Bytes a key and its value count for against the quota.
fn pair_bytes(key: &[u8], value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
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
            pairs: Pairs {
                map: BTreeMap::new(),
                by_hash: BTreeSet::new(),
                revision: 0,
                changes: Vec::new(),
                leases: LeaseTable::new(lease_limits()),
                lease_events: Vec::new(),
                bytes: 0,
                quota: STORE_BYTES_MAX,
            },
            sessions: Sessions::new(session_config()),
        }
    }

    /// An empty store that holds at most `quota` bytes of keys and values (for tests; every
    /// replica must use the same quota).
    #[must_use]
    pub fn with_quota(quota: u64) -> KvStore {
        let mut store = KvStore::new();
        store.pairs.quota = quota;
        store
    }

    /// Bytes of keys and values held.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.pairs.bytes
    }

    /// Number of keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.pairs.map.len()
    }

    /// Whether the map is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pairs.map.is_empty()
    }

    /// Open client sessions.
    #[must_use]
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// The replicated time, in milliseconds: the latest time stamped on an applied entry
    /// (see `synod_consensus::session::ReplicatedClock`).
    #[must_use]
    pub fn replicated_ms(&self) -> u64 {
        self.sessions.now()
    }

    /// The store's revision: how many applied entries changed a key.
    #[must_use]
    pub fn revision(&self) -> u64 {
        self.pairs.revision
    }

    /// The keys the last [`KvStore::apply`] changed, in the order it changed them (a key
    /// changed twice by one entry appears twice), all at revision [`KvStore::revision`];
    /// empty if it changed none (and then the revision did not move).
    #[must_use]
    pub fn changes(&self) -> &[KeyChange] {
        &self.pairs.changes
    }

    /// Takes [`KvStore::changes`] out (moved, not copied: what a node feeds its watchers);
    /// [`KvStore::changes`] is empty after it.
    pub fn take_changes(&mut self) -> Vec<KeyChange> {
        std::mem::take(&mut self.pairs.changes)
    }

    /// Applies a committed log command at `index`. Deterministic: every replica returns
    /// the same reply.
    pub fn apply(&mut self, index: LogIndex, command: LogCommand) -> KvReply {
        self.pairs.changes.clear();
        self.pairs.lease_events.clear();
        let reply = self.apply_entry(index, command);
        if !self.pairs.changes.is_empty() {
            self.pairs.revision += 1;
        }
        reply
    }

    fn apply_entry(&mut self, index: LogIndex, command: LogCommand) -> KvReply {
        match command {
            LogCommand::Plain { time, command } => {
                self.sessions.advance(time);
                self.pairs.apply_command(index.0, time, command)
            }
            LogCommand::Session(SessionEntry::Register { time }) => {
                match self.sessions.register(index, time) {
                    Ok(id) => KvReply::Int(i64::try_from(id.0).unwrap_or(i64::MAX)),
                    Err(e) => KvReply::Error(session_error(&e)),
                }
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
                let pairs = &mut self.pairs;
                match self.sessions.apply(session, seq, ack_below, time, || {
                    pairs.apply_command(index.0, time, command)
                }) {
                    Ok(outcome) => outcome.into_response(),
                    Err(e) => KvReply::Error(session_error(&e)),
                }
            }
        }
    }

    /// The leases and the keys attached to them.
    #[must_use]
    pub fn leases(&self) -> &LeaseTable<Bytes> {
        &self.pairs.leases
    }

    /// What the last [`KvStore::apply`] did to the leases (grants, renewals, removals),
    /// for the leader's `LeaseExpirer`.
    #[must_use]
    pub fn lease_events(&self) -> &[LeaseApplied<Bytes>] {
        &self.pairs.lease_events
    }

    /// Answers a query from the current state at the latest replicated time applied; see
    /// [`KvStore::query_at`].
    #[must_use]
    pub fn query(&self, query: &KvQuery) -> KvReply {
        self.query_at(query, self.replicated_ms())
    }

    /// Answers a query from the current state, with remaining TTLs counted to replicated
    /// time `now_ms` (an estimate any replica gives from the last renewal or checkpoint;
    /// the leader's clock decides when a lease ends); a reply that would be larger than
    /// [`REPLY_BYTES_MAX`] is an error.
    #[must_use]
    pub fn query_at(&self, query: &KvQuery, now_ms: u64) -> KvReply {
        self.pairs.query(query, now_ms)
    }

    /// Whether `session` is open.
    #[must_use]
    pub fn has_session(&self, session: SessionId) -> bool {
        self.sessions.contains(session)
    }

    /// Serializes the map with its revisions and the session table.
    #[must_use]
    pub fn snapshot(&self) -> Vec<u8> {
        let body = SnapshotV3 {
            revision: self.pairs.revision,
            map: ByteKeyed(&self.pairs.map),
            sessions: &self.sessions,
            leases: &self.pairs.leases,
        };
        postcard::to_extend(&body, SNAPSHOT_MAGIC_LEASES.to_vec())
            .expect("postcard encodes to a Vec")
    }

    /// Restores a snapshot made by [`KvStore::snapshot`] (or by the earlier format, whose
    /// keys had no revisions: each is restored as created at revision 1, the store's
    /// revision being 1 if it holds any); `None` if the bytes are not one. Empty bytes
    /// (the initial snapshot of a new log) restore an empty store.
    #[must_use]
    pub fn restore(bytes: &[u8]) -> Option<KvStore> {
        if bytes.is_empty() {
            return Some(KvStore::new());
        }
        type Map = BTreeMap<Bytes, Entry>;
        let current = bytes
            .strip_prefix(SNAPSHOT_MAGIC_LEASES.as_slice())
            .and_then(|body| {
                postcard::from_bytes::<SnapshotV3<Map, Sessions<KvReply>, LeaseTable<Bytes>>>(body)
                    .ok()
            });
        let v2 = || {
            bytes
                .strip_prefix(SNAPSHOT_MAGIC.as_slice())
                .and_then(|body| {
                    postcard::from_bytes::<SnapshotV2<Map, Sessions<KvReply>>>(body).ok()
                })
        };
        let (revision, map, mut sessions, mut leases) = match (current, v2()) {
            (Some(s), _) => (s.revision, s.map, s.sessions, s.leases),
            (None, Some(s)) => (
                s.revision,
                s.map,
                s.sessions,
                LeaseTable::new(lease_limits()),
            ),
            (None, None) => {
                let earlier: SnapshotV1 = postcard::from_bytes(bytes).ok()?;
                let first = Revisions {
                    create: 1,
                    modified: 1,
                    version: 1,
                };
                let map: BTreeMap<Bytes, Entry> = earlier
                    .map
                    .into_iter()
                    .map(|(k, value)| {
                        let revisions = first;
                        (k, Entry { value, revisions })
                    })
                    .collect();
                (
                    u64::from(!map.is_empty()),
                    map,
                    earlier.sessions,
                    LeaseTable::new(lease_limits()),
                )
            }
        };
        leases.set_limits(lease_limits());
        let map: BTreeMap<MapKey, Entry> =
            map.into_iter().map(|(k, e)| (MapKey::new(k), e)).collect();
        if map.values().any(|e| e.revisions.modified > revision) {
            return None;
        }
        sessions.set_config(session_config());
        let bytes = map.iter().map(|(k, e)| pair_bytes(k, &e.value)).sum();
        let by_hash = map
            .keys()
            .map(|k| (scan_hash(k), k.bytes.clone()))
            .collect();
        Some(KvStore {
            pairs: Pairs {
                map,
                by_hash,
                revision,
                changes: Vec::new(),
                leases,
                lease_events: Vec::new(),
                bytes,
                quota: STORE_BYTES_MAX,
            },
            sessions,
        })
    }
}

impl Pairs {
    /// Answers a query at replicated time `now_ms` (see [`KvStore::query_at`]).
    fn query(&self, query: &KvQuery, now_ms: u64) -> KvReply {
        let ms = |n: u64| KvReply::Int(i64::try_from(n).unwrap_or(i64::MAX));
        match query {
            KvQuery::Ttl { key, in_ms } => {
                if !self.map.contains_key(key) {
                    return KvReply::Int(-2);
                }
                let Some(lease) = self.leases.lease_of(key) else {
                    return KvReply::Int(-1);
                };
                let left = self.leases.remaining_ms(lease, now_ms).unwrap_or(0);
                ms(if *in_ms {
                    left
                } else {
                    left.saturating_add(500) / 1000
                })
            }
            KvQuery::LeaseTtl(lease) => match self.leases.remaining_ms(*lease, now_ms) {
                Some(left) => ms(left),
                None => KvReply::Int(-2),
            },
            KvQuery::Get(key) => self.value(key).cloned().map_or(KvReply::Nil, KvReply::Bulk),
            KvQuery::Keys(pattern) => {
                let pattern = Pattern::new(pattern);
                let prefix = pattern.literal_prefix().to_vec();
                let mut bytes = 0usize;
                let mut keys = Vec::new();
                let matching = self
                    .map
                    .range(prefix.clone()..)
                    .map(|(k, _)| k)
                    .take_while(|k| k.starts_with(&prefix))
                    .filter(|k| pattern.matches(k));
                for k in matching {
                    bytes += k.len() + REPLY_ELEMENT_BYTES;
                    if bytes > REPLY_BYTES_MAX {
                        return reply_too_large("use SCAN with MATCH, a page at a time");
                    }
                    keys.push(k.bytes.clone());
                }
                KvReply::Keys(keys)
            }
            KvQuery::DbSize => KvReply::Int(i64::try_from(self.map.len()).unwrap_or(i64::MAX)),
            KvQuery::ScanCursor {
                cursor,
                pattern,
                count,
            } => self.scan_page(*cursor, pattern.as_deref().map(Pattern::new), *count),
            KvQuery::ModRevisions(keys) => KvReply::ModRevisions(
                keys.iter()
                    .map(|k| self.map.get(k).map_or(0, |e| e.revisions.modified))
                    .collect(),
            ),
            KvQuery::GetRevisions(key) => {
                let entry = self.map.get(key);
                KvReply::Entry {
                    value: entry.map(|e| e.value.clone()),
                    revisions: entry.map(|e| e.revisions).unwrap_or_default(),
                    revision: self.revision,
                }
            }
            KvQuery::MGet(keys) => {
                let bytes = keys.iter().fold(0usize, |sum, k| {
                    let len = self.value(k).map_or(0, Vec::len);
                    sum.saturating_add(len + REPLY_ELEMENT_BYTES)
                });
                if bytes > REPLY_BYTES_MAX {
                    return reply_too_large("ask for fewer keys at a time");
                }
                KvReply::Values(keys.iter().map(|k| self.value(k).cloned()).collect())
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
                for (k, entry) in matching {
                    bytes += k.len() + entry.value.len() + REPLY_ELEMENT_BYTES;
                    if bytes > REPLY_BYTES_MAX {
                        return reply_too_large("give SCAN a lower limit or a longer prefix");
                    }
                    pairs.push((k.bytes.clone(), entry.value.clone()));
                }
                KvReply::Pairs(pairs)
            }
        }
    }

    /// A page of a cursor scan (see [`scan_hash`]): whole runs of keys sharing a hash,
    /// from `cursor` on, until `count` keys (at least one run) or [`REPLY_BYTES_MAX`] are
    /// reached.
    fn scan_page(&self, cursor: u64, pattern: Option<Pattern>, count: usize) -> KvReply {
        let count = count.clamp(1, SCAN_COUNT_MAX);
        let mut keys = Vec::new();
        let (mut looked, mut bytes) = (0usize, 0usize);
        let mut last: Option<u64> = None;
        for (hash, key) in self.by_hash.range((cursor.max(1), Vec::new())..) {
            if last != Some(*hash) && (looked >= count || bytes > REPLY_BYTES_MAX / 2) {
                // The run of `last` is whole: go on from here next time.
                return KvReply::Cursor { next: *hash, keys };
            }
            last = Some(*hash);
            looked += 1;
            if pattern.as_ref().is_none_or(|p| p.matches(key)) {
                bytes += key.len() + REPLY_ELEMENT_BYTES;
                keys.push(key.clone());
            }
        }
        KvReply::Cursor { next: 0, keys }
    }

    /// Applies a transaction's operations if no watched key changed.
    fn transaction(
        &mut self,
        (index, time): (u64, u64),
        watched: Vec<(Bytes, u64)>,
        ops: Vec<TxOp>,
    ) -> KvReply {
        let changed = watched
            .iter()
            .any(|(k, rev)| self.map.get(k).map_or(0, |e| e.revisions.modified) != *rev);
        if changed {
            return KvReply::Nil;
        }
        let replies = ops
            .into_iter()
            .map(|op| match op {
                TxOp::Write(KvCommand::Transaction { .. }) => {
                    KvReply::Error("ERR MULTI calls can not be nested".into())
                }
                TxOp::Write(command) => self.apply_command(index, time, command),
                TxOp::Read(query) => self.query(&query, time),
            })
            .collect();
        KvReply::Multi(replies)
    }

    fn value(&self, key: &[u8]) -> Option<&Bytes> {
        self.map.get(key).map(|e| &e.value)
    }

    /// Puts `value` at `key` if the store stays within its quota, at the revision of the
    /// entry being applied.
    fn insert(&mut self, key: Bytes, value: Bytes) -> Result<(), KvReply> {
        self.insert_if(key, value, |_, _, _| Ok(()))
    }

    /// Sets `key` to `value` if `check` passes (given the key, told whether it is there,
    /// and given the leases to look at) and the quota has room, looking the key up once
    /// (a new key twice). The key moves into the change it makes ([`Pairs::changes`]'s
    /// last), or into the map if it is new.
    fn insert_if(
        &mut self,
        key: Bytes,
        value: Bytes,
        check: impl FnOnce(&Bytes, bool, &LeaseTable<Bytes>) -> Result<(), KvReply>,
    ) -> Result<(), KvReply> {
        let Pairs {
            map,
            by_hash,
            revision,
            changes,
            leases,
            bytes: total,
            quota,
            ..
        } = self;
        let key = MapKey::new(key);
        let old = map.get_mut(&key);
        check(&key.bytes, old.is_some(), leases)?;
        let old_bytes = old.as_ref().map_or(0, |e| pair_bytes(&key, &e.value));
        let bytes = *total - old_bytes + pair_bytes(&key, &value);
        if bytes > *quota && bytes > *total {
            return Err(KvReply::Error(format!(
                "ERR the store is full: it holds at most {quota} bytes of keys and values; delete keys to make room"
            )));
        }
        let at = *revision + 1;
        let revisions = match &old {
            Some(e) => Revisions {
                create: e.revisions.create,
                modified: at,
                version: e.revisions.version + 1,
            },
            None => Revisions {
                create: at,
                modified: at,
                version: 1,
            },
        };
        *total = bytes;
        let changed = Some(value.clone());
        let entry = Entry { value, revisions };
        let key = match old {
            Some(old) => {
                *old = entry;
                key.bytes
            }
            None => {
                by_hash.insert((scan_hash(&key), key.bytes.clone()));
                let copy = key.bytes.clone();
                map.insert(key, entry);
                copy
            }
        };
        changes.push(KeyChange {
            key,
            value: changed,
            revisions,
        });
        Ok(())
    }

    /// Removes `key` at the revision of the entry being applied; whether it was there.
    fn remove(&mut self, key: &[u8]) -> bool {
        let Some(entry) = self.map.remove(key) else {
            return false;
        };
        self.by_hash.remove(&(scan_hash(key), key.to_vec()));
        self.bytes -= pair_bytes(key, &entry.value);
        self.changes.push(KeyChange {
            key: key.to_vec(),
            value: None,
            revisions: Revisions {
                create: 0,
                modified: self.revision + 1,
                version: 0,
            },
        });
        true
    }

    /// Removes `key` and its expiry; whether it was there.
    fn delete(&mut self, key: &[u8]) -> bool {
        if !self.remove(key) {
            return false;
        }
        if let Some(dropped) = self.leases.detach(&key.to_vec()) {
            self.lease_events.push(dropped);
        }
        true
    }

    /// Records what the lease table did, deleting the keys of a lease that went.
    fn lease_event(&mut self, event: LeaseApplied<Bytes>) {
        if let LeaseApplied::Removed { keys, .. } = &event {
            for key in keys {
                self.remove(key);
            }
        }
        self.lease_events.push(event);
    }

    /// Puts `value` at `key` with `expiry` (`None`: no expiry), at entry `index` and
    /// replicated time `time`, if `condition` holds and the expiry can be set.
    fn put(
        &mut self,
        (index, time): (u64, u64),
        key: Bytes,
        value: Bytes,
        condition: PutCondition,
        expiry: Option<Expiry>,
    ) -> KvReply {
        // The key is looked up once, for the condition, the expiry and the write.
        let check = |key: &Bytes, exists: bool, leases: &LeaseTable<Bytes>| {
            let write = match condition {
                PutCondition::Always => true,
                PutCondition::IfAbsent => !exists,
                PutCondition::IfPresent => exists,
            };
            if !write {
                return Err(KvReply::Nil);
            }
            // Checked before anything changes: a refused expiry writes nothing.
            match expiry {
                Some(Expiry::TtlMs(ttl_ms)) => leases.can_grant_for_key(key, ttl_ms),
                Some(Expiry::Lease(lease)) => leases.can_attach(key, lease),
                Some(Expiry::Keep) | None => Ok(()),
            }
            .map_err(|e| lease_error(&e))
        };
        if let Err(refused) = self.insert_if(key, value, check) {
            return refused;
        }
        // The key, moved into the change just made.
        let key = &self.changes.last().expect("a put made a change").key;
        let events = match expiry {
            None => self.leases.detach(key).into_iter().collect(),
            Some(Expiry::Keep) => Vec::new(),
            Some(Expiry::TtlMs(ttl_ms)) => {
                let key = key.clone();
                match self.leases.grant_for_key(index, time, key, ttl_ms) {
                    Ok((granted, dropped)) => dropped.into_iter().chain([granted]).collect(),
                    Err(e) => return lease_error(&e),
                }
            }
            Some(Expiry::Lease(lease)) => match self.leases.attach(key.clone(), lease) {
                Ok(dropped) => dropped.into_iter().collect(),
                Err(e) => return lease_error(&e),
            },
        };
        self.lease_events.extend(events);
        KvReply::Ok
    }

    fn expire(
        &mut self,
        (index, time): (u64, u64),
        key: Bytes,
        ttl_ms: i64,
        condition: ExpireCondition,
    ) -> KvReply {
        if !self.map.contains_key(&key) {
            return KvReply::Int(0);
        }
        let current = self
            .leases
            .lease_of(&key)
            .and_then(|lease| self.leases.remaining_ms(lease, time));
        let new = u64::try_from(ttl_ms).unwrap_or(0);
        let set = match condition {
            ExpireCondition::Always => true,
            ExpireCondition::IfNone => current.is_none(),
            ExpireCondition::IfSome => current.is_some(),
            ExpireCondition::IfGreater => current.is_some_and(|c| new > c),
            ExpireCondition::IfLess => current.is_none_or(|c| new < c),
        };
        if !set {
            return KvReply::Int(0);
        }
        if ttl_ms <= 0 {
            self.delete(&key);
            return KvReply::Int(1);
        }
        match self.leases.grant_for_key(index, time, key, new) {
            Ok((granted, dropped)) => {
                self.lease_events
                    .extend(dropped.into_iter().chain([granted]));
                KvReply::Int(1)
            }
            Err(e) => lease_error(&e),
        }
    }

    fn apply_command(&mut self, index: u64, time: u64, command: KvCommand) -> KvReply {
        match command {
            KvCommand::Put {
                key,
                value,
                condition,
            } => self.put((index, time), key, value, condition, None),
            KvCommand::PutExpiring {
                key,
                value,
                condition,
                expiry,
            } => self.put((index, time), key, value, condition, Some(expiry)),
            KvCommand::Expire {
                key,
                ttl_ms,
                condition,
            } => self.expire((index, time), key, ttl_ms, condition),
            KvCommand::Persist { key } => {
                if !self.map.contains_key(&key) || self.leases.lease_of(&key).is_none() {
                    return KvReply::Int(0);
                }
                if let Some(dropped) = self.leases.detach(&key) {
                    self.lease_events.push(dropped);
                }
                KvReply::Int(1)
            }
            KvCommand::Lease(command) => {
                let applied = self.leases.apply(index, time, &command);
                let reply = match &applied {
                    LeaseApplied::Granted { lease, .. } => {
                        KvReply::Int(i64::try_from(lease.0).unwrap_or(i64::MAX))
                    }
                    LeaseApplied::Renewed { ttl_ms, .. } => {
                        KvReply::Int(i64::try_from(*ttl_ms).unwrap_or(i64::MAX))
                    }
                    LeaseApplied::Removed { keys, .. } => {
                        KvReply::Int(i64::try_from(keys.len()).unwrap_or(i64::MAX))
                    }
                    LeaseApplied::Checkpointed(_) | LeaseApplied::Stale => KvReply::Ok,
                    LeaseApplied::Refused(e) => lease_error(e),
                };
                self.lease_event(applied);
                reply
            }
            KvCommand::Fenced {
                lock,
                token,
                command,
            } => {
                let lock_name = String::from_utf8_lossy(&lock);
                match self.map.get(&lock) {
                    Some(entry) if entry.revisions.create == token => {
                        self.apply_command(index, time, *command)
                    }
                    Some(entry) => KvReply::Error(format!(
                        "FENCED the fencing token {token} is stale: lock '{lock_name}' is held with token {}",
                        entry.revisions.create
                    )),
                    None => KvReply::Error(format!(
                        "FENCED the fencing token {token} is stale: lock '{lock_name}' is not held"
                    )),
                }
            }
            KvCommand::Transaction { watched, ops } => {
                self.transaction((index, time), watched, ops)
            }
            KvCommand::Delete { keys } => {
                let mut n = 0i64;
                for key in &keys {
                    if self.delete(key) {
                        n = n.saturating_add(1);
                    }
                }
                KvReply::Int(n)
            }
            KvCommand::Cas { key, expected, new } => {
                if self.value(&key) != expected.as_ref() {
                    return KvReply::Int(0);
                }
                match self.insert(key, new) {
                    Ok(()) => KvReply::Int(1),
                    Err(full) => full,
                }
            }
            KvCommand::Incr { key, by } => {
                let current = match self.value(&key) {
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
                let Some(n) = current.checked_add(by) else {
                    return KvReply::Error("ERR increment or decrement would overflow".into());
                };
                match self.insert(key, n.to_string().into_bytes()) {
                    Ok(()) => KvReply::Int(n),
                    Err(full) => full,
                }
            }
        }
    }
}

fn lease_error(e: &LeaseError) -> KvReply {
    KvReply::Error(format!("ERR {e}"))
}

fn session_error(e: &SessionError) -> String {
    match e {
        SessionError::UnknownSession(_) => format!("SESSION {e}; register a new one"),
        SessionError::TableFull { .. } => format!(
            "SESSION {e} (CLIENT UNREGISTER closes one; one idle for {} s expires)",
            SESSION_TIMEOUT_MS / 1000
        ),
        _ => format!("SESSION {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys of 0 to 40 bytes drawn from a few byte values (zero among them, so that a
    /// key's zero padding meets real zeros), many sharing long prefixes.
    fn some_keys(seed: u64, n: usize) -> Vec<Bytes> {
        let mut rng = synod_node::Rng::new(seed);
        (0..n)
            .map(|_| {
                let len = usize::try_from(rng.below(41)).expect("small");
                (0..len)
                    .map(|_| *rng.pick(&[0u8, 1, b'k', 0xff]).expect("not empty"))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn map_keys_order_as_their_bytes_do() {
        for seed in 0..20 {
            let keys = some_keys(seed, 120);
            for a in &keys {
                for b in &keys {
                    let (ka, kb) = (MapKey::new(a.clone()), MapKey::new(b.clone()));
                    assert_eq!(ka.cmp(&kb), a.cmp(b), "{a:?} against {b:?}");
                    assert_eq!(ka == kb, a == b);
                }
            }
        }
        // The edges: a key that is another's prefix, padding against a real zero, a
        // difference past the head.
        let cases: [(&[u8], &[u8]); 4] = [
            (b"ab", b"ab\0"),
            (b"", b"\0"),
            (b"0123456789abcdefX", b"0123456789abcdefY"),
            (b"0123456789abcdef", b"0123456789abcdef\0"),
        ];
        for (a, b) in cases {
            assert_eq!(
                MapKey::new(a.to_vec()).cmp(&MapKey::new(b.to_vec())),
                Ordering::Less,
                "{a:?} against {b:?}"
            );
        }
    }

    #[test]
    fn the_map_finds_and_orders_keys_as_a_map_of_their_bytes() {
        let keys = some_keys(7, 2_000);
        let mut store = KvStore::new();
        let mut plain: BTreeMap<Bytes, Bytes> = BTreeMap::new();
        for (i, key) in keys.iter().enumerate() {
            let value = i.to_string().into_bytes();
            store.apply(
                LogIndex(i as u64 + 1),
                LogCommand::Plain {
                    time: 1,
                    command: KvCommand::Put {
                        key: key.clone(),
                        value: value.clone(),
                        condition: PutCondition::Always,
                    },
                },
            );
            plain.insert(key.clone(), value);
        }
        assert_eq!(store.len(), plain.len());
        let in_order: Vec<&Bytes> = store.pairs.map.keys().map(|k| &k.bytes).collect();
        assert_eq!(in_order, plain.keys().collect::<Vec<_>>());
        for (key, value) in &plain {
            assert_eq!(
                store.query(&KvQuery::Get(key.clone())),
                KvReply::Bulk(value.clone())
            );
        }
        assert_eq!(store.query(&KvQuery::Get(b"absent".to_vec())), KvReply::Nil);
    }

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

    fn revisions_of(kv: &KvStore, key: &str) -> (Option<Bytes>, Revisions, u64) {
        match kv.query(&KvQuery::GetRevisions(key.into())) {
            KvReply::Entry {
                value,
                revisions,
                revision,
            } => (value, revisions, revision),
            other => panic!("{other:?}"),
        }
    }

    fn revs(create: u64, modified: u64, version: u64) -> Revisions {
        Revisions {
            create,
            modified,
            version,
        }
    }

    #[test]
    fn commands_nested_past_the_limit_fail_to_decode_instead_of_overflowing_the_stack() {
        let inner = KvCommand::Delete { keys: Vec::new() };
        let fenced = KvCommand::Fenced {
            lock: b"l".to_vec(),
            token: 1,
            command: Box::new(inner.clone()),
        };
        let plain = |command| LogCommand::Plain { time: 0, command }.encode();
        // A fenced command's bytes are its own prefix followed by the command it holds.
        let (flat, once) = (plain(inner), plain(fenced.clone()));
        let head = &flat[..2];
        let prefix = &once[2..once.len() - (flat.len() - 2)];
        let mut deep = head.to_vec();
        for _ in 0..200_000 {
            deep.extend_from_slice(prefix);
        }
        deep.extend_from_slice(&flat[2..]);
        assert_eq!(LogCommand::decode(&deep), None);

        // Within the limit (a fenced write inside a transaction) decodes as it was.
        let transaction = LogCommand::Plain {
            time: 0,
            command: KvCommand::Transaction {
                watched: Vec::new(),
                ops: vec![TxOp::Write(fenced)],
            },
        };
        assert_eq!(LogCommand::decode(&transaction.encode()), Some(transaction));
    }

    #[test]
    fn every_entry_that_changes_a_key_takes_the_next_revision_and_nothing_else_does() {
        let plain = |command| LogCommand::Plain { time: 1, command };
        let mut kv = KvStore::new();
        assert_eq!(kv.revision(), 0);
        kv.apply(LogIndex(1), put("a", "1"));
        assert_eq!(
            revisions_of(&kv, "a"),
            (Some(b"1".to_vec()), revs(1, 1, 1), 1)
        );
        kv.apply(LogIndex(2), put("b", "2"));
        kv.apply(LogIndex(3), put("a", "3"));
        assert_eq!(
            revisions_of(&kv, "a"),
            (Some(b"3".to_vec()), revs(1, 3, 2), 3)
        );
        assert_eq!(
            kv.changes(),
            [KeyChange {
                key: b"a".to_vec(),
                value: Some(b"3".to_vec()),
                revisions: revs(1, 3, 2)
            }]
        );
        // Entries that change nothing take no revision and report no change.
        let unchanged = [
            plain(KvCommand::Delete {
                keys: vec![b"none".to_vec()],
            }),
            plain(KvCommand::Cas {
                key: b"a".to_vec(),
                expected: Some(b"x".to_vec()),
                new: b"y".to_vec(),
            }),
            plain(KvCommand::Put {
                key: b"a".to_vec(),
                value: b"y".to_vec(),
                condition: PutCondition::IfAbsent,
            }),
            plain(KvCommand::Incr {
                key: b"a".to_vec(),
                by: i64::MAX,
            }),
            LogCommand::Session(SessionEntry::Register { time: 1 }),
        ];
        for (i, command) in unchanged.into_iter().enumerate() {
            kv.apply(LogIndex(4 + i as u64), command);
            assert_eq!(kv.revision(), 3, "entry {i}");
            assert!(kv.changes().is_empty(), "entry {i}");
        }
        // One entry deleting two keys: one revision, two changes.
        kv.apply(
            LogIndex(10),
            plain(KvCommand::Delete {
                keys: vec![b"a".to_vec(), b"b".to_vec(), b"a".to_vec()],
            }),
        );
        assert_eq!(kv.revision(), 4);
        let deleted: Vec<_> = kv
            .changes()
            .iter()
            .map(|c| (c.key.clone(), c.value.clone(), c.revisions))
            .collect();
        assert_eq!(
            deleted,
            [
                (b"a".to_vec(), None, revs(0, 4, 0)),
                (b"b".to_vec(), None, revs(0, 4, 0))
            ]
        );
        assert_eq!(revisions_of(&kv, "a"), (None, revs(0, 0, 0), 4));
        // Created again, a key starts over.
        kv.apply(LogIndex(11), put("a", "5"));
        assert_eq!(
            revisions_of(&kv, "a"),
            (Some(b"5".to_vec()), revs(5, 5, 1), 5)
        );
        // A retried request applies once, so it takes one revision (the session is the one
        // registered at index 8 above).
        let incr = first_incr(SessionId(8), 2, 1);
        kv.apply(LogIndex(12), incr.clone());
        kv.apply(LogIndex(13), incr);
        assert_eq!(kv.revision(), 6);
        assert!(kv.changes().is_empty());
        // Revisions survive a snapshot.
        let restored = KvStore::restore(&kv.snapshot()).expect("restores");
        assert_eq!(restored.revision(), 6);
        assert_eq!(revisions_of(&restored, "a"), revisions_of(&kv, "a"));
        assert_eq!(restored, kv);
    }

    fn plain(command: KvCommand) -> LogCommand {
        LogCommand::Plain { time: 1, command }
    }

    /// A session's first request (sequence 1, nothing acknowledged below it): add `by` to
    /// key `n`, at replicated time `time`.
    fn first_incr(session: SessionId, time: u64, by: i64) -> LogCommand {
        LogCommand::Session(SessionEntry::Request {
            session,
            seq: 1,
            ack_below: 1,
            time,
            command: KvCommand::Incr {
                key: b"n".to_vec(),
                by,
            },
        })
    }

    #[test]
    fn a_transaction_applies_as_one_revision_unless_a_watched_key_changed() {
        let mut kv = KvStore::new();
        kv.apply(LogIndex(1), put("a", "1"));
        let watched_at =
            |kv: &KvStore, key: &str| match kv.query(&KvQuery::ModRevisions(vec![key.into()])) {
                KvReply::ModRevisions(r) => r[0],
                other => panic!("{other:?}"),
            };
        let tx = |watched: Vec<(Bytes, u64)>| {
            plain(KvCommand::Transaction {
                watched,
                ops: vec![
                    TxOp::Write(KvCommand::Incr {
                        key: b"a".to_vec(),
                        by: 1,
                    }),
                    TxOp::Read(KvQuery::Get(b"a".to_vec())),
                    TxOp::Write(KvCommand::Incr {
                        key: b"b".to_vec(),
                        by: 5,
                    }),
                    // Overflows: an error in its place, the others not undone.
                    TxOp::Write(KvCommand::Incr {
                        key: b"b".to_vec(),
                        by: i64::MAX,
                    }),
                ],
            })
        };
        let a = watched_at(&kv, "a");
        assert_eq!((a, watched_at(&kv, "b")), (1, 0));
        let reply = kv.apply(
            LogIndex(2),
            tx(vec![(b"a".to_vec(), a), (b"b".to_vec(), 0)]),
        );
        let KvReply::Multi(replies) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(
            replies[..3],
            [
                KvReply::Int(2),
                KvReply::Bulk(b"2".to_vec()),
                KvReply::Int(5)
            ]
        );
        assert!(
            matches!(&replies[3], KvReply::Error(e) if e.contains("overflow")),
            "{replies:?}"
        );
        // Every change at one revision, one entry's worth.
        assert_eq!(kv.revision(), 2);
        assert_eq!(kv.changes().len(), 2);
        assert!(kv.changes().iter().all(|c| c.revisions.modified == 2));
        // A watched key changed since: nothing applied, a nil reply, no revision.
        let stale = tx(vec![(b"a".to_vec(), a)]);
        assert_eq!(kv.apply(LogIndex(3), stale), KvReply::Nil);
        assert_eq!(kv.revision(), 2);
        assert_eq!(
            kv.query(&KvQuery::Get(b"a".to_vec())),
            KvReply::Bulk(b"2".to_vec())
        );
        // A watched key that was absent and is now present has changed too.
        kv.apply(LogIndex(4), put("c", "1"));
        assert_eq!(
            kv.apply(LogIndex(5), tx(vec![(b"c".to_vec(), 0)])),
            KvReply::Nil
        );
        // A transaction survives a snapshot's round trip as any entry's effects do.
        let restored = KvStore::restore(&kv.snapshot()).expect("restores");
        assert_eq!(restored, kv);
    }

    #[test]
    fn keys_and_dbsize() {
        let mut kv = KvStore::new();
        for (i, k) in ["user:1", "user:22", "uxer:3", "other"].iter().enumerate() {
            kv.apply(LogIndex(i as u64 + 1), put(k, "v"));
        }
        assert_eq!(
            kv.query(&KvQuery::Keys(b"user:*".to_vec())),
            KvReply::Keys(vec![b"user:1".to_vec(), b"user:22".to_vec()])
        );
        assert_eq!(
            kv.query(&KvQuery::Keys(b"u?er:[0-9]".to_vec())),
            KvReply::Keys(vec![b"user:1".to_vec(), b"uxer:3".to_vec()])
        );
        assert_eq!(kv.query(&KvQuery::DbSize), KvReply::Int(4));
    }

    proptest::proptest! {
        #[test]
        fn a_cursor_scan_returns_every_key_present_throughout_while_the_store_changes(
            initial in proptest::collection::btree_set(0u16..400, 0..120),
            churn in proptest::collection::vec((0u16..400, proptest::bool::ANY), 0..200),
            count in 1usize..20,
        ) {
            let mut kv = KvStore::new();
            let mut index = 0;
            let mut apply = |kv: &mut KvStore, command| {
                index += 1;
                kv.apply(LogIndex(index), plain(command));
            };
            for k in &initial {
                apply(&mut kv, KvCommand::Put { key: format!("k{k}").into_bytes(), value: b"v".to_vec(), condition: PutCondition::Always });
            }
            let mut churn = churn.into_iter();
            let mut touched = BTreeSet::new();
            let mut seen = BTreeSet::new();
            let mut cursor = 0;
            for calls in 0.. {
                proptest::prop_assert!(calls < 10_000, "the scan never ended");
                let page = kv.query(&KvQuery::ScanCursor { cursor, pattern: None, count });
                let KvReply::Cursor { next, keys } = page else { panic!("{page:?}") };
                seen.extend(keys);
                // Some keys come and go between calls.
                for (k, add) in churn.by_ref().take(3) {
                    let key = format!("k{k}").into_bytes();
                    touched.insert(key.clone());
                    let command = if add {
                        KvCommand::Put { key, value: b"v".to_vec(), condition: PutCondition::Always }
                    } else {
                        KvCommand::Delete { keys: vec![key] }
                    };
                    apply(&mut kv, command);
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            for k in &initial {
                let key = format!("k{k}").into_bytes();
                if !touched.contains(&key) {
                    proptest::prop_assert!(seen.contains(&key), "{:?} was present throughout but not returned", String::from_utf8_lossy(&key));
                }
            }
        }
    }

    #[test]
    fn writes_past_the_quota_are_refused_alike_everywhere_and_deletes_make_room() {
        let plain = |command| LogCommand::Plain { time: 1, command };
        let set = |k: &str, v: &str| {
            plain(KvCommand::Put {
                key: k.into(),
                value: v.into(),
                condition: PutCondition::Always,
            })
        };
        let mut kv = KvStore::with_quota(10);
        assert_eq!(kv.apply(LogIndex(1), set("a", "1234")), KvReply::Ok); // 5 bytes
        assert_eq!(kv.apply(LogIndex(2), set("b", "123")), KvReply::Ok); // 9
        let full = kv.apply(LogIndex(3), set("c", "12"));
        assert!(
            matches!(&full, KvReply::Error(e) if e.starts_with("ERR the store is full")),
            "{full:?}"
        );
        assert_eq!(kv.query(&KvQuery::Get("c".into())), KvReply::Nil);
        // Overwriting with a value no longer is within the quota; a counter too.
        assert_eq!(kv.apply(LogIndex(4), set("a", "4321")), KvReply::Ok);
        let incr = plain(KvCommand::Incr {
            key: "b".into(),
            by: 1,
        });
        assert_eq!(kv.apply(LogIndex(5), incr), KvReply::Int(124));
        assert_eq!(kv.bytes(), 9);
        // A delete frees room; a restored snapshot counts the same bytes.
        let delete = plain(KvCommand::Delete {
            keys: vec!["a".into()],
        });
        assert_eq!(kv.apply(LogIndex(6), delete), KvReply::Int(1));
        assert_eq!(kv.apply(LogIndex(7), set("c", "12")), KvReply::Ok);
        let restored = KvStore::restore(&kv.snapshot()).expect("restores");
        assert_eq!(restored.bytes(), kv.bytes());
        assert_eq!(kv.bytes(), 7);
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
        let incr = first_incr(SessionId(1), 2, 1);
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

    #[test]
    fn a_flood_of_unused_registrations_locks_no_one_out_and_closes_no_session_in_use() {
        let mut kv = KvStore::new();
        let register = || LogCommand::Session(SessionEntry::Register { time: 1 });
        assert_eq!(kv.apply(LogIndex(1), register()), KvReply::Int(1));
        let incr = first_incr(SessionId(1), 1, 1);
        assert_eq!(kv.apply(LogIndex(2), incr.clone()), KvReply::Int(1));
        // Another client registers in a loop, past the limit, and never uses a session.
        let flood = SESSIONS_MAX as i64 + 99;
        for i in 0..flood {
            assert_eq!(
                kv.apply(LogIndex(i as u64 + 3), register()),
                KvReply::Int(i + 3)
            );
        }
        assert_eq!(kv.sessions(), SESSIONS_MAX);
        // A new client can still register, at once.
        let fresh = flood + 3;
        assert_eq!(
            kv.apply(LogIndex(fresh as u64), register()),
            KvReply::Int(fresh)
        );
        // The first client's retry is still answered from its session, not applied again.
        assert_eq!(kv.apply(LogIndex(20_000), incr), KvReply::Int(1));
        assert_eq!(
            kv.query(&KvQuery::Get(b"n".to_vec())),
            KvReply::Bulk(b"1".to_vec())
        );
    }

    #[test]
    fn a_snapshot_of_an_earlier_version_restores_sessions_that_still_dedupe_and_expire() {
        // Written by the store before sessions were indexed by activity: keys k = v and
        // n = 5; session 1 (active at 3 s, its request 1 answered 5) and session 2 (active
        // at 2 s); replicated time 4 s.
        let earlier = [
            0x02, 0x01, 0x6b, 0x01, 0x76, 0x01, 0x6e, 0x01, 0x35, 0xa0, 0x1f, 0x02, 0x01, 0xb8,
            0x17, 0x01, 0x01, 0x01, 0x02, 0x0a, 0x02, 0xd0, 0x0f, 0x01, 0x00,
        ];
        let mut kv = KvStore::restore(&earlier).expect("restores");
        assert_eq!((kv.len(), kv.sessions(), kv.replicated_ms()), (2, 2, 4_000));
        // Its keys had no revisions: each is taken as created at revision 1.
        assert_eq!(kv.revision(), 1);
        assert_eq!(
            kv.query(&KvQuery::GetRevisions(b"k".to_vec())),
            KvReply::Entry {
                value: Some(b"v".to_vec()),
                revisions: Revisions {
                    create: 1,
                    modified: 1,
                    version: 1
                },
                revision: 1
            }
        );
        assert_eq!(KvStore::restore(&kv.snapshot()), Some(kv.clone()));
        let retry = first_incr(SessionId(1), 5_000, 5);
        assert_eq!(kv.apply(LogIndex(5), retry), KvReply::Int(5));
        assert_eq!(
            kv.query(&KvQuery::Get(b"n".to_vec())),
            KvReply::Bulk(b"5".to_vec())
        );
        // Session 2 idles past the timeout; session 1, active at 5 s, does not yet.
        let later = LogCommand::Plain {
            time: 2_000 + SESSION_TIMEOUT_MS + 1,
            command: KvCommand::Delete { keys: vec![] },
        };
        kv.apply(LogIndex(6), later);
        assert!(kv.has_session(SessionId(1)) && !kv.has_session(SessionId(2)));
    }

    /// A store applying commands at increasing indexes, at replicated time `time`.
    struct Applier {
        kv: KvStore,
        index: u64,
        time: u64,
    }

    impl Applier {
        fn new() -> Applier {
            Applier {
                kv: KvStore::new(),
                index: 0,
                time: 1,
            }
        }

        fn apply(&mut self, command: KvCommand) -> KvReply {
            self.index += 1;
            let time = self.time;
            self.kv
                .apply(LogIndex(self.index), LogCommand::Plain { time, command })
        }

        fn ttl_ms(&self, key: &str) -> KvReply {
            let query = KvQuery::Ttl {
                key: key.into(),
                in_ms: true,
            };
            self.kv.query_at(&query, self.time)
        }

        fn get(&self, key: &str) -> KvReply {
            self.kv.query(&KvQuery::Get(key.into()))
        }
    }

    fn put_expiring(key: &str, expiry: Expiry) -> KvCommand {
        KvCommand::PutExpiring {
            key: key.into(),
            value: b"v".to_vec(),
            condition: PutCondition::Always,
            expiry,
        }
    }

    fn expire(key: &str, ttl_ms: i64, condition: ExpireCondition) -> KvCommand {
        KvCommand::Expire {
            key: key.into(),
            ttl_ms,
            condition,
        }
    }

    #[test]
    fn a_keys_expiry_is_set_kept_cleared_and_reported_as_redis_does() {
        let mut s = Applier::new();
        assert_eq!(
            s.apply(put_expiring("k", Expiry::TtlMs(10_000))),
            KvReply::Ok
        );
        assert_eq!(s.ttl_ms("k"), KvReply::Int(10_000));
        s.time += 2_500;
        assert_eq!(s.ttl_ms("k"), KvReply::Int(7_500));
        assert_eq!(
            s.kv.query_at(
                &KvQuery::Ttl {
                    key: b"k".to_vec(),
                    in_ms: false
                },
                s.time
            ),
            KvReply::Int(8),
            "rounded to seconds"
        );
        assert_eq!(s.ttl_ms("absent"), KvReply::Int(-2));
        // KEEPTTL keeps it, INCR keeps it, a plain SET clears it (and its lease goes).
        assert_eq!(s.apply(put_expiring("k", Expiry::Keep)), KvReply::Ok);
        assert_eq!(s.ttl_ms("k"), KvReply::Int(7_500));
        assert_eq!(s.kv.leases().len(), 1);
        assert_eq!(
            s.apply(KvCommand::Put {
                key: b"k".to_vec(),
                value: b"1".to_vec(),
                condition: PutCondition::Always
            }),
            KvReply::Ok
        );
        assert_eq!(s.ttl_ms("k"), KvReply::Int(-1));
        assert!(s.kv.leases().is_empty());
        // EXPIRE's conditions, a key without an expiry counting as infinite.
        assert_eq!(
            s.apply(expire("k", 5_000, ExpireCondition::IfSome)),
            KvReply::Int(0)
        );
        assert_eq!(
            s.apply(expire("k", 5_000, ExpireCondition::IfGreater)),
            KvReply::Int(0)
        );
        assert_eq!(
            s.apply(expire("k", 5_000, ExpireCondition::IfLess)),
            KvReply::Int(1)
        );
        assert_eq!(
            s.apply(expire("k", 9_000, ExpireCondition::IfNone)),
            KvReply::Int(0)
        );
        assert_eq!(
            s.apply(expire("k", 9_000, ExpireCondition::IfGreater)),
            KvReply::Int(1)
        );
        assert_eq!(
            s.apply(expire("k", 1_000, ExpireCondition::IfLess)),
            KvReply::Int(1)
        );
        assert_eq!(s.ttl_ms("k"), KvReply::Int(1_000));
        assert_eq!(
            s.kv.leases().len(),
            1,
            "one lease for the key, replaced each time"
        );
        assert_eq!(
            s.apply(expire("absent", 1_000, ExpireCondition::Always)),
            KvReply::Int(0)
        );
        // PERSIST clears it, once.
        assert_eq!(
            s.apply(KvCommand::Persist { key: b"k".to_vec() }),
            KvReply::Int(1)
        );
        assert_eq!(
            s.apply(KvCommand::Persist { key: b"k".to_vec() }),
            KvReply::Int(0)
        );
        assert_eq!(s.ttl_ms("k"), KvReply::Int(-1));
        // A TTL of zero or less deletes the key, as a delete does (a revision, a change).
        let revision = s.kv.revision();
        assert_eq!(
            s.apply(expire("k", 0, ExpireCondition::Always)),
            KvReply::Int(1)
        );
        assert_eq!(s.get("k"), KvReply::Nil);
        assert_eq!(s.kv.revision(), revision + 1);
        // DEL takes a key's expiry with it.
        s.apply(put_expiring("d", Expiry::TtlMs(10_000)));
        s.apply(KvCommand::Delete {
            keys: vec![b"d".to_vec()],
        });
        assert!(s.kv.leases().is_empty());
    }

    #[test]
    fn an_expiry_from_the_leader_deletes_the_key_and_a_stale_one_does_nothing() {
        let mut s = Applier::new();
        s.apply(put_expiring("k", Expiry::TtlMs(1_000)));
        let (lease, l) = s.kv.leases().iter().next().expect("the key's lease");
        let renewal = l.renewal;
        // An expiry of another renewal (the key was given a new TTL since) does nothing.
        let stale = KvCommand::Lease(LeaseCommand::Expire {
            lease,
            renewal: renewal + 7,
        });
        assert_eq!(s.apply(stale), KvReply::Ok);
        assert_eq!(s.get("k"), KvReply::Bulk(b"v".to_vec()));
        let revision = s.kv.revision();
        let due = KvCommand::Lease(LeaseCommand::Expire { lease, renewal });
        assert_eq!(s.apply(due), KvReply::Int(1));
        assert_eq!(s.get("k"), KvReply::Nil);
        assert_eq!(s.kv.revision(), revision + 1, "the deletion is a revision");
        assert_eq!(s.kv.changes().len(), 1);
        assert!(matches!(
            s.kv.lease_events(),
            [LeaseApplied::Removed { expired: true, .. }]
        ));
    }

    #[test]
    fn keys_on_a_lease_go_with_it_and_a_fenced_write_needs_the_locks_create_revision() {
        let mut s = Applier::new();
        let grant = |ttl_ms| KvCommand::Lease(LeaseCommand::Grant { ttl_ms });
        assert_eq!(s.apply(grant(5_000)), KvReply::Int(1));
        let lease = LeaseId(1);
        // The lock: a key created under the lease; its create revision is the token.
        let lock = KvCommand::PutExpiring {
            key: b"lock/a".to_vec(),
            value: b"me".to_vec(),
            condition: PutCondition::IfAbsent,
            expiry: Expiry::Lease(lease),
        };
        assert_eq!(s.apply(lock.clone()), KvReply::Ok);
        let KvReply::Entry { revisions, .. } =
            s.kv.query(&KvQuery::GetRevisions(b"lock/a".to_vec()))
        else {
            panic!("an entry")
        };
        let token = revisions.create;
        assert_eq!(s.apply(lock.clone()), KvReply::Nil, "held: NX fails");
        let fenced = |token| KvCommand::Fenced {
            lock: b"lock/a".to_vec(),
            token,
            command: Box::new(KvCommand::Put {
                key: b"data".to_vec(),
                value: format!("by {token}").into_bytes(),
                condition: PutCondition::Always,
            }),
        };
        assert_eq!(s.apply(fenced(token)), KvReply::Ok);
        assert!(matches!(s.apply(fenced(token + 1)), KvReply::Error(e) if e.starts_with("FENCED")));
        // A keep-alive answers the TTL; a lease on a key's own lease or absent is refused.
        assert_eq!(
            s.apply(KvCommand::Lease(LeaseCommand::KeepAlive { lease })),
            KvReply::Int(5_000)
        );
        assert!(
            matches!(s.apply(put_expiring("x", Expiry::Lease(LeaseId(9)))), KvReply::Error(e) if e.contains("not found"))
        );
        assert_eq!(s.get("x"), KvReply::Nil, "a refused expiry writes nothing");
        // The lease is revoked: its key goes, and the old token is refused from then on,
        // even once the lock is taken again (at a new create revision).
        assert_eq!(
            s.apply(KvCommand::Lease(LeaseCommand::Revoke { lease })),
            KvReply::Int(1)
        );
        assert_eq!(s.get("lock/a"), KvReply::Nil);
        assert!(matches!(s.apply(fenced(token)), KvReply::Error(e) if e.contains("not held")));
        assert_eq!(s.apply(grant(5_000)), KvReply::Int(2));
        let relock = KvCommand::PutExpiring {
            key: b"lock/a".to_vec(),
            value: b"you".to_vec(),
            condition: PutCondition::IfAbsent,
            expiry: Expiry::Lease(LeaseId(2)),
        };
        assert_eq!(s.apply(relock), KvReply::Ok);
        assert!(
            matches!(s.apply(fenced(token)), KvReply::Error(e) if e.contains("is held with token"))
        );
        assert_eq!(
            s.get("data"),
            KvReply::Bulk(format!("by {token}").into_bytes())
        );
        assert!(matches!(
            s.apply(KvCommand::Lease(LeaseCommand::KeepAlive { lease })),
            KvReply::Error(e) if e.contains("not found")
        ));
    }

    /// The byte strings of writes and snapshots are laid out byte for byte as serde's
    /// default for `Vec<u8>` was (logs, snapshots and peers of before read them, and they
    /// read ours), lengths of one and of two varint bytes alike.
    #[test]
    fn byte_strings_are_laid_out_as_the_default_for_vec_u8_was() {
        /// Serde's default for `Vec<u8>`: what `KvCommand::Put` and `Entry` derived before.
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        enum DefaultCommand {
            Put {
                key: Vec<u8>,
                value: Vec<u8>,
                condition: PutCondition,
            },
        }
        #[derive(Serialize)]
        struct DefaultEntry<'a> {
            value: &'a Vec<u8>,
            revisions: Revisions,
        }
        for len in [0, 1, 127, 128, 300] {
            let (key, value) = (vec![b'k'; len], vec![0xA5; len + 3]);
            let default = DefaultCommand::Put {
                key: key.clone(),
                value: value.clone(),
                condition: PutCondition::IfAbsent,
            };
            let ours = KvCommand::Put {
                key,
                value,
                condition: PutCondition::IfAbsent,
            };
            let bytes = postcard::to_stdvec(&default).expect("encodes");
            assert_eq!(postcard::to_stdvec(&ours).expect("encodes"), bytes, "{len}");
            assert_eq!(postcard::from_bytes::<KvCommand>(&bytes), Ok(ours.clone()));
            let plain = LogCommand::Plain {
                time: 9,
                command: ours,
            };
            assert_eq!(LogCommand::decode(&plain.encode()), Some(plain));
        }
        let mut s = Applier::new();
        for (k, v) in [
            ("a", "x"),
            ("bb", "yy"),
            (&"k".repeat(200), &"v".repeat(300)),
        ] {
            s.apply(KvCommand::Put {
                key: k.as_bytes().to_vec(),
                value: v.as_bytes().to_vec(),
                condition: PutCondition::Always,
            });
        }
        let default: BTreeMap<&Vec<u8>, DefaultEntry<'_>> =
            s.kv.pairs
                .map
                .iter()
                .map(|(k, e)| {
                    let entry = DefaultEntry {
                        value: &e.value,
                        revisions: e.revisions,
                    };
                    (&k.bytes, entry)
                })
                .collect();
        let body = SnapshotV3 {
            revision: s.kv.pairs.revision,
            map: default,
            sessions: &s.kv.sessions,
            leases: &s.kv.pairs.leases,
        };
        let earlier = postcard::to_extend(&body, SNAPSHOT_MAGIC_LEASES.to_vec()).expect("encodes");
        assert_eq!(s.kv.snapshot(), earlier);
        assert_eq!(KvStore::restore(&earlier).as_ref(), Some(&s.kv));
    }

    #[test]
    fn leases_and_expiries_survive_a_snapshot_and_the_earlier_format_restores_without_them() {
        let mut s = Applier::new();
        s.apply(KvCommand::Lease(LeaseCommand::Grant { ttl_ms: 5_000 }));
        s.apply(put_expiring("a", Expiry::Lease(LeaseId(1))));
        s.apply(put_expiring("b", Expiry::TtlMs(3_000)));
        let restored = KvStore::restore(&s.kv.snapshot()).expect("restores");
        assert_eq!(restored, s.kv);
        assert_eq!(restored.leases().lease_of(&b"a".to_vec()), Some(LeaseId(1)));
        assert_eq!(
            restored.query(&KvQuery::Ttl {
                key: b"b".to_vec(),
                in_ms: true
            }),
            KvReply::Int(3_000)
        );
        // A snapshot written before leases (revisions, no leases) restores with none.
        let body = SnapshotV2 {
            revision: s.kv.pairs.revision,
            map: &s.kv.pairs.map,
            sessions: &s.kv.sessions,
        };
        let earlier = postcard::to_extend(&body, SNAPSHOT_MAGIC.to_vec()).expect("encodes");
        let restored = KvStore::restore(&earlier).expect("restores");
        assert!(restored.leases().is_empty());
        assert_eq!(restored.len(), 2);
        assert_eq!(
            restored.query(&KvQuery::Ttl {
                key: b"b".to_vec(),
                in_ms: true
            }),
            KvReply::Int(-1)
        );
    }

    /// `SET k v LEASE id` on a lease that already holds its most keys is refused and
    /// writes nothing: no value, no new revision (a refused expiry writes nothing).
    #[test]
    fn review4_a_set_refused_for_a_full_lease_still_writes_the_value() {
        let mut s = Applier::new();
        let granted = s.apply(KvCommand::Lease(LeaseCommand::Grant { ttl_ms: 60_000 }));
        assert_eq!(granted, KvReply::Int(1));
        let max = lease_limits().keys_per_lease_max;
        for i in 0..max {
            let key = format!("k{i}");
            assert_eq!(
                s.apply(put_expiring(&key, Expiry::Lease(LeaseId(1)))),
                KvReply::Ok
            );
        }
        let revision = s.kv.revision();
        let reply = s.apply(put_expiring("extra", Expiry::Lease(LeaseId(1))));
        assert!(matches!(reply, KvReply::Error(_)), "{reply:?}");
        assert_eq!(s.get("extra"), KvReply::Nil, "refused, yet written");
        assert_eq!(s.kv.revision(), revision, "refused, yet the revision moved");
    }
}
