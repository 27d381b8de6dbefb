//! State Watch in the Consistent Core: the node's applied changes fed to a replica's
//! `synod_membership::watch::WatchHub`.
//!
//! Every replica applies the same entries in the same order, so every replica's store
//! reaches the same revisions with the same changes (see [`super::kv`]'s revisions), and a
//! watcher that stopped after revision `r` on one node resumes from `r + 1` on any other.
//! The node hands what it applied out as [`WatchFeed`]s ([`CoreNode::take_watch_feed`]);
//! [`feed`] gives them to a hub: each revision's changes as the hub's events, and a
//! snapshot installed from the leader as a jump, which cancels (with the compacted
//! revision) the watchers that needed the revisions it skipped.
//!
//! # Over RESP
//!
//! [`Watches`] serves a node's hub to its clients (on the node's worker: it does no I/O
//! but push values through each connection's [`Sink`]), in two forms:
//!
//! - **Redis pub/sub**, so that a Redis client library's pub/sub API consumes events
//!   unchanged. The channels are Redis's keyspace notification channels,
//!   `__keyspace@0__:<key>` ([`KEYSPACE_PREFIX`]); `PSUBSCRIBE` takes a glob-style pattern
//!   after the prefix ([`super::pattern`]). Each message's payload is `set <revision>` or
//!   `del <revision>`: Redis's event name, and the revision that made the change. Messages
//!   are RESP2 arrays (`[message, channel, payload]`, `[pmessage, pattern, channel,
//!   payload]`), or RESP3 push frames after `HELLO 3`. A subscription starts at the node's
//!   next revision. A RESP2 connection with subscriptions may only run
//!   [`SUBSCRIBED_COMMANDS`](super::commands::SUBSCRIBED_COMMANDS), as in Redis.
//! - **The resumable stream**, `WATCHSTREAM KEY|PREFIX bytes [FROM revision]` (not
//!   `WATCH`, which is the transactions' key guard): answered `[watching, id, start]`, then
//!   `[event, id, revision, [[set|del, key, value, create_revision, version]...]]` for each
//!   revision with matching changes (one frame per revision: never split),
//!   `[progress, id, revision]` when asked (`WATCHSTREAM PROGRESS [id]`) and every
//!   [`PROGRESS_INTERVAL_MS`], and `[cancelled, id, "COMPACTED ..."]` if it fell so far
//!   behind that the history no longer holds its next revision. A start the history no
//!   longer holds is refused with the error `COMPACTED <compacted> <current>: ...`
//!   ([`compacted_text`]). A client that was told of everything up to `r` (an event's
//!   revision, or a progress notification's) resumes with `FROM r + 1`, on any node.
//!
//! **On a follower.** Every node serves watches from what it has applied itself, so a
//! follower's stream keeps all six guarantees of `synod_membership::watch` but may lag the
//! leader's commits (by its replication delay): it is not a linearizable read, and a
//! stream started "now" on a follower starts at the follower's next revision, which may be
//! older than the leader's. Resuming with `FROM r + 1` on a follower that has not applied
//! `r` yet is fine: the stream waits until it has.
//!
//! **Limits**: [`WATCHERS_PER_CONNECTION_MAX`] watchers (channels, patterns and streams)
//! per connection, [`WATCHERS_MAX`] per node, [`BUFFERED_EVENTS_MAX`] events buffered per
//! watcher, and a history of [`HISTORY_REVISIONS_MAX`] revisions or [`HISTORY_BYTES_MAX`]
//! bytes. A watcher is given more only while its connection's push queue has room for a
//! whole buffer (and is at most half full in bytes); a connection that does not read makes
//! its watchers buffer, then fall behind and catch up from the history, or, once the
//! history has moved past them, be cancelled with the compacted revision: a stream gets
//! `cancelled`, a subscriber the error and a closed connection (as Redis disconnects slow
//! subscribers). Never a gap, and never more queued for a connection than its push queue's
//! limits ([`PUSH_QUEUE_MAX`] values, [`PUSH_QUEUE_BYTES_MAX`] bytes).
//!
//! [`CoreNode::take_watch_feed`]: super::node::CoreNode::take_watch_feed

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use synod_membership::watch::{
    Event, FeedError, Filter, Notification, Revision, WatchConfig, WatchError, WatchHub, WatchId,
};
use synod_node::Time;

use super::kv::KeyChange;
use super::node::WatchFeed;
use super::pattern::Pattern;
use crate::resp::serve::{PUSH_QUEUE_BYTES_MAX, PUSH_QUEUE_MAX};
use crate::resp::{Pusher, Queued, Value};

/// A key change as the hub's event at `revision`.
#[must_use]
pub fn event(revision: u64, change: KeyChange) -> Event {
    Event {
        revision,
        key: change.key.into(),
        value: change.value.map(Into::into),
        create_revision: change.revisions.create,
        version: change.revisions.version,
    }
}

/// Feeds `hub` what the node applied, in order. The first revision fed after the hub was
/// made at the store's revision is the next one; an error means the feed skipped one,
/// which the node never does.
pub fn feed(hub: &mut WatchHub, items: Vec<WatchFeed>) -> Result<(), FeedError> {
    for item in items {
        match item {
            WatchFeed::Changes { revision, changes } => {
                let events = changes.into_iter().map(|c| event(revision, c)).collect();
                hub.apply(revision, events)?;
            }
            WatchFeed::Jump { revision } => hub.reset(revision),
        }
    }
    Ok(())
}

/// The prefix of the pub/sub channels key events are published on: `SUBSCRIBE
/// __keyspace@0__:<key>` follows one key, `PSUBSCRIBE __keyspace@0__:<glob>` the keys a
/// glob-style pattern ([`super::pattern`]) matches (Redis's keyspace notification channels).
pub const KEYSPACE_PREFIX: &[u8] = b"__keyspace@0__:";
/// Watchers (pub/sub channels, patterns and streams together) one connection may have.
pub const WATCHERS_PER_CONNECTION_MAX: usize = 64;
/// Watchers one node serves, over all its connections.
pub const WATCHERS_MAX: usize = 10_000;
/// Events a watcher buffers while its connection is slow: past it, the watcher falls
/// behind and catches up from the node's history (or is cancelled with the compacted
/// revision once the history no longer holds what it needs).
pub const BUFFERED_EVENTS_MAX: usize = 256;
/// Revisions of history a node keeps for watchers to start in the past or catch up.
pub const HISTORY_REVISIONS_MAX: usize = 10_000;
/// Bytes of history a node keeps (keys, values, and 64 bytes an event).
pub const HISTORY_BYTES_MAX: usize = 64 << 20;
/// Time between periodic progress notifications of a stream, in milliseconds.
pub const PROGRESS_INTERVAL_MS: u64 = 10_000;

/// The hub limits a node serves watches under (the constants above).
#[must_use]
pub fn watch_config() -> WatchConfig {
    WatchConfig {
        watchers_max: WATCHERS_MAX,
        watchers_per_owner_max: WATCHERS_PER_CONNECTION_MAX,
        buffered_events_max: BUFFERED_EVENTS_MAX,
        history_revisions_max: HISTORY_REVISIONS_MAX,
        history_bytes_max: HISTORY_BYTES_MAX,
        progress_interval_ms: PROGRESS_INTERVAL_MS,
    }
}

/// A watch command of one connection, as the worker runs it ([`Watches::call`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WatchCall {
    /// `SUBSCRIBE channel...` (each a keyspace channel).
    Subscribe(Vec<Vec<u8>>),
    /// `PSUBSCRIBE pattern...` (each a keyspace pattern).
    PSubscribe(Vec<Vec<u8>>),
    /// `UNSUBSCRIBE [channel...]` (none: every channel).
    Unsubscribe(Vec<Vec<u8>>),
    /// `PUNSUBSCRIBE [pattern...]` (none: every pattern).
    PUnsubscribe(Vec<Vec<u8>>),
    /// `WATCHSTREAM KEY|PREFIX bytes [FROM revision]`.
    Stream {
        /// The keys followed.
        filter: Filter,
        /// The first revision (inclusive); `None`: the node's next one.
        from: Option<Revision>,
    },
    /// `WATCHSTREAM PROGRESS [id]`: a progress notification for one stream, or every
    /// stream of the connection.
    Progress(Option<u64>),
    /// `WATCHSTREAM CANCEL id`.
    Cancel(u64),
}

/// A connection's identity as the owner of watchers, and how many it has (kept by the
/// worker, read by the command table: a RESP2 connection with any is in pub/sub mode).
#[derive(Clone, Debug)]
pub struct WatchOwner {
    id: u64,
    watchers: Arc<AtomicUsize>,
}

impl PartialEq for WatchOwner {
    fn eq(&self, other: &WatchOwner) -> bool {
        self.id == other.id
    }
}

impl Eq for WatchOwner {}

impl WatchOwner {
    /// The owner numbered `id` (unique on the node), with no watchers yet.
    #[must_use]
    pub fn new(id: u64) -> WatchOwner {
        WatchOwner {
            id,
            watchers: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Its number.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its watchers (channels, patterns and streams).
    #[must_use]
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Acquire)
    }
}

/// Where a connection's pushed values go: the runtime's [`Pusher`], or a test's list.
pub trait Sink: Send {
    /// Queues `value`; `false` if the connection is gone (or closing for overflow).
    fn push(&self, value: Value) -> bool;
    /// Queues `value` as the connection's last and closes it.
    fn close_with(&self, value: Value);
    /// Values queued and not yet written, and their bytes.
    fn queued(&self) -> Queued;
    /// Whether the connection is open.
    fn is_open(&self) -> bool;
}

impl Sink for Pusher {
    fn push(&self, value: Value) -> bool {
        Pusher::push(self, value).is_ok()
    }

    fn close_with(&self, value: Value) {
        Pusher::close_with(self, value);
    }

    fn queued(&self) -> Queued {
        Pusher::queued(self)
    }

    fn is_open(&self) -> bool {
        Pusher::is_open(self)
    }
}

#[derive(Clone, Debug)]
enum Kind {
    Channel(Vec<u8>),
    Pattern { raw: Vec<u8>, glob: Pattern },
    Stream,
}

#[derive(Debug)]
struct Owner<S> {
    sink: S,
    protocol: u8,
    count: Arc<AtomicUsize>,
    watchers: BTreeMap<WatchId, Kind>,
}

impl<S> Owner<S> {
    fn find(&self, kind: &Kind) -> Option<WatchId> {
        self.watchers
            .iter()
            .find(|(_, k)| match (k, kind) {
                (Kind::Channel(a), Kind::Channel(b))
                | (Kind::Pattern { raw: a, .. }, Kind::Pattern { raw: b, .. }) => a == b,
                _ => false,
            })
            .map(|(id, _)| *id)
    }

    fn publish_count(&self) {
        self.count.store(self.watchers.len(), Ordering::Release);
    }
}

/// One node's watches served over RESP: its [`WatchHub`], fed what the node applied, and
/// the connections' channels, patterns and streams on it. Runs on the node's worker; does
/// no I/O but pushing values to connections through their [`Sink`].
#[derive(Debug)]
pub struct Watches<S> {
    hub: WatchHub,
    /// Which owner each watcher is.
    owner_of: BTreeMap<WatchId, u64>,
    owners: BTreeMap<u64, Owner<S>>,
    /// A subscriber's messages of one revision that its connection's push queue had no
    /// room for, pushed first at the next [`Watches::deliver`]: a revision that changes
    /// more keys than the queue holds reaches a subscriber that keeps up in parts,
    /// instead of overflowing its queue. At most one revision's messages per watcher.
    unsent: BTreeMap<WatchId, VecDeque<Value>>,
}

/// Whether a watcher may be given more from the hub: its connection's push queue has room
/// for a whole buffer of messages ([`BUFFERED_EVENTS_MAX`]) and is at most half full in
/// bytes.
fn has_room(queued: Queued) -> bool {
    queued.values + BUFFERED_EVENTS_MAX <= PUSH_QUEUE_MAX
        && queued.bytes <= PUSH_QUEUE_BYTES_MAX / 2
}

/// Takes the front of `queue` if `take` says so.
fn take_front_if(queue: &mut VecDeque<Value>, take: impl FnOnce(&Value) -> bool) -> Option<Value> {
    if take(queue.front()?) {
        queue.pop_front()
    } else {
        None
    }
}

/// A frame pushed to (or answered on) a connection: a RESP3 push frame, or the array a
/// RESP2 subscriber reads.
fn frame(protocol: u8, items: Vec<Value>) -> Value {
    shape(protocol, Value::Push(items))
}

fn shape(protocol: u8, value: Value) -> Value {
    if protocol == 3 {
        value.into_resp3()
    } else {
        value.into_resp2()
    }
}

fn bulk(bytes: impl Into<Vec<u8>>) -> Value {
    Value::Bulk(bytes.into())
}

fn int(n: u64) -> Value {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The text of a watch refused or cancelled for compaction: `COMPACTED <compacted>
/// <current>: ...`, the revisions first so that a client can read them.
#[must_use]
pub fn compacted_text(compacted: Revision, current: Revision) -> String {
    format!(
        "COMPACTED {compacted} {current}: revisions up to {compacted} are compacted on this node (its revision is {current}); read the state again and watch from after it"
    )
}

fn error_text(error: &WatchError) -> String {
    match error {
        WatchError::Compacted { compacted, current } => compacted_text(*compacted, *current),
        WatchError::OwnerFull { max } => format!("ERR at most {max} watchers per connection"),
        WatchError::HubFull { max } => format!("ERR at most {max} watchers on this node"),
    }
}

/// The payload of a key event on a keyspace channel: `set <revision>` or `del
/// <revision>`.
fn payload(event: &Event) -> Vec<u8> {
    let op = if event.value.is_some() { "set" } else { "del" };
    format!("{op} {}", event.revision).into_bytes()
}

fn channel(key: &[u8]) -> Vec<u8> {
    [KEYSPACE_PREFIX, key].concat()
}

impl<S: Sink> Watches<S> {
    /// Watches over a store at `revision`, under `config`.
    #[must_use]
    pub fn new(config: WatchConfig, revision: Revision) -> Watches<S> {
        Watches {
            hub: WatchHub::new(config, revision),
            owner_of: BTreeMap::new(),
            owners: BTreeMap::new(),
            unsent: BTreeMap::new(),
        }
    }

    /// The hub.
    #[must_use]
    pub fn hub(&self) -> &WatchHub {
        &self.hub
    }

    /// Runs one connection's watch command; the values answer it, in order (already in
    /// the connection's protocol). `sink` is where the connection's events go.
    pub fn call(
        &mut self,
        owner: &WatchOwner,
        sink: S,
        protocol: u8,
        call: WatchCall,
    ) -> Vec<Value> {
        let entry = self.owners.entry(owner.id).or_insert_with(|| Owner {
            sink,
            protocol,
            count: Arc::clone(&owner.watchers),
            watchers: BTreeMap::new(),
        });
        entry.protocol = protocol;
        let values = match call {
            WatchCall::Subscribe(channels) => self.subscribe(owner.id, channels, false),
            WatchCall::PSubscribe(patterns) => self.subscribe(owner.id, patterns, true),
            WatchCall::Unsubscribe(channels) => self.unsubscribe(owner.id, &channels, false),
            WatchCall::PUnsubscribe(patterns) => self.unsubscribe(owner.id, &patterns, true),
            WatchCall::Stream { filter, from } => {
                let start = from.unwrap_or(self.hub.revision() + 1);
                match self.hub.watch(owner.id, filter, from) {
                    Ok(id) => {
                        self.add(owner.id, id, Kind::Stream);
                        vec![shape(
                            protocol,
                            Value::Array(vec![bulk("watching"), int(id.0), int(start)]),
                        )]
                    }
                    Err(e) => vec![Value::Error(error_text(&e))],
                }
            }
            WatchCall::Progress(which) => {
                let streams: Vec<WatchId> = self.owners[&owner.id]
                    .watchers
                    .iter()
                    .filter(|(id, k)| matches!(k, Kind::Stream) && which.is_none_or(|w| w == id.0))
                    .map(|(id, _)| *id)
                    .collect();
                if streams.is_empty() {
                    vec![Value::Error(
                        "ERR no such watch stream on this connection".into(),
                    )]
                } else {
                    for id in streams {
                        self.hub.request_progress(id);
                    }
                    vec![Value::Simple("OK".into())]
                }
            }
            WatchCall::Cancel(id) => {
                let id = WatchId(id);
                let mine = self.owners[&owner.id]
                    .watchers
                    .get(&id)
                    .is_some_and(|k| matches!(k, Kind::Stream));
                if mine {
                    self.remove(owner.id, id);
                }
                vec![int(u64::from(mine))]
            }
        };
        self.tidy_owner(owner.id);
        values
    }

    fn add(&mut self, owner: u64, id: WatchId, kind: Kind) {
        self.owner_of.insert(id, owner);
        if let Some(o) = self.owners.get_mut(&owner) {
            o.watchers.insert(id, kind);
            o.publish_count();
        }
    }

    fn remove(&mut self, owner: u64, id: WatchId) {
        self.hub.cancel(id);
        self.owner_of.remove(&id);
        self.unsent.remove(&id);
        if let Some(o) = self.owners.get_mut(&owner) {
            o.watchers.remove(&id);
            o.publish_count();
        }
    }

    /// Forgets an owner with no watchers (its sink too).
    fn tidy_owner(&mut self, owner: u64) {
        if self
            .owners
            .get(&owner)
            .is_some_and(|o| o.watchers.is_empty())
        {
            self.owners.remove(&owner);
        }
    }

    /// Cancels every watcher of `owner` and forgets it (its connection closed).
    fn drop_owner(&mut self, owner: u64) {
        if let Some(o) = self.owners.remove(&owner) {
            for id in o.watchers.keys() {
                self.hub.cancel(*id);
                self.owner_of.remove(id);
                self.unsent.remove(id);
            }
            o.count.store(0, Ordering::Release);
        }
    }

    fn subscribe(&mut self, owner: u64, names: Vec<Vec<u8>>, patterns: bool) -> Vec<Value> {
        let protocol = self.owners[&owner].protocol;
        let verb = if patterns { "psubscribe" } else { "subscribe" };
        let mut values = Vec::new();
        for name in names {
            let Some(rest) = name.strip_prefix(KEYSPACE_PREFIX) else {
                values.push(Value::Error(not_keyspace(&name)));
                break;
            };
            let kind = if patterns {
                Kind::Pattern {
                    glob: Pattern::new(rest),
                    raw: name.clone(),
                }
            } else {
                Kind::Channel(name.clone())
            };
            if self.owners[&owner].find(&kind).is_none() {
                let filter = match &kind {
                    Kind::Pattern { glob, .. } => {
                        Filter::Prefix(glob.literal_prefix().to_vec().into())
                    }
                    _ => Filter::Key(rest.to_vec().into()),
                };
                match self.hub.watch(owner, filter, None) {
                    Ok(id) => self.add(owner, id, kind),
                    Err(e) => {
                        values.push(Value::Error(error_text(&e)));
                        break;
                    }
                }
            }
            let count = self.owners[&owner].watchers.len() as u64;
            values.push(frame(protocol, vec![bulk(verb), bulk(name), int(count)]));
        }
        values
    }

    fn unsubscribe(&mut self, owner: u64, names: &[Vec<u8>], patterns: bool) -> Vec<Value> {
        let protocol = self.owners[&owner].protocol;
        let verb = if patterns {
            "punsubscribe"
        } else {
            "unsubscribe"
        };
        let names: Vec<Vec<u8>> = if names.is_empty() {
            self.owners[&owner]
                .watchers
                .values()
                .filter_map(|k| match k {
                    Kind::Channel(c) if !patterns => Some(c.clone()),
                    Kind::Pattern { raw, .. } if patterns => Some(raw.clone()),
                    _ => None,
                })
                .collect()
        } else {
            names.to_vec()
        };
        if names.is_empty() {
            let count = self.owners[&owner].watchers.len() as u64;
            return vec![frame(protocol, vec![bulk(verb), Value::Nil, int(count)])];
        }
        let mut values = Vec::new();
        for name in names {
            let kind = if patterns {
                Kind::Pattern {
                    glob: Pattern::new(b""),
                    raw: name.clone(),
                }
            } else {
                Kind::Channel(name.clone())
            };
            if let Some(id) = self.owners[&owner].find(&kind) {
                self.remove(owner, id);
            }
            let count = self.owners[&owner].watchers.len() as u64;
            values.push(frame(protocol, vec![bulk(verb), bulk(name), int(count)]));
        }
        values
    }

    /// Feeds the hub what the node applied, in order. A gap (which the node never
    /// leaves) is taken as a jump: the watchers that needed the revisions skipped are
    /// cancelled with the compacted revision rather than given a gap.
    pub fn feed(&mut self, items: Vec<WatchFeed>) {
        for item in items {
            match item {
                WatchFeed::Changes { revision, changes } => {
                    if revision <= self.hub.revision() {
                        continue;
                    }
                    if revision > self.hub.revision() + 1 {
                        self.hub.reset(revision - 1);
                    }
                    let events = changes.into_iter().map(|c| event(revision, c)).collect();
                    // In order, each event at its revision: the hub takes it.
                    let _ = self.hub.apply(revision, events);
                }
                WatchFeed::Jump { revision } => self.hub.reset(revision),
            }
        }
    }

    /// Marks periodic progress notifications due, and forgets the watchers of
    /// connections that closed.
    pub fn wake(&mut self, now: Time) {
        self.hub.wake(now);
        let closed: Vec<u64> = self
            .owners
            .iter()
            .filter(|(_, o)| !o.sink.is_open())
            .map(|(id, _)| *id)
            .collect();
        for owner in closed {
            self.drop_owner(owner);
        }
    }

    /// Pushes every watcher's notifications to its connection, as far as the connection's
    /// push queue has room for a watcher's buffer (and is at most half full in bytes); a
    /// watcher of a slow connection waits (buffering, then falling behind) until the next
    /// call. Nothing is pushed that does not fit in the queue ([`Queued::fits`]), so a
    /// connection that keeps up is never closed for overflow: the messages of a revision too
    /// many or too large for the room left wait beside the queue and go first next time.
    pub fn deliver(&mut self) {
        let ready: BTreeSet<WatchId> = self
            .unsent
            .keys()
            .copied()
            .chain(self.hub.ready())
            .collect();
        for id in ready {
            let Some(&owner) = self.owner_of.get(&id) else {
                self.hub.cancel(id);
                self.unsent.remove(&id);
                continue;
            };
            if !self.owners.get(&owner).is_some_and(|o| o.sink.is_open()) {
                self.drop_owner(owner);
                continue;
            }
            while let Some(o) = self.owners.get(&owner) {
                if let Some(unsent) = self.unsent.get_mut(&id) {
                    while let Some(value) =
                        take_front_if(unsent, |v| o.sink.queued().fits(v.encoded_len()))
                    {
                        o.sink.push(value);
                    }
                    if !unsent.is_empty() {
                        break;
                    }
                    self.unsent.remove(&id);
                }
                if !has_room(o.sink.queued()) {
                    break;
                }
                let Some(notification) = self.hub.poll(id) else {
                    break;
                };
                let Some(kind) = o.watchers.get(&id).cloned() else {
                    break;
                };
                let protocol = o.protocol;
                match notification {
                    Notification::Events(events) => {
                        let mut frames = event_frames(protocol, id, &kind, &events)
                            .into_iter()
                            .peekable();
                        while let Some(value) =
                            frames.next_if(|v| o.sink.queued().fits(v.encoded_len()))
                        {
                            if !o.sink.push(value) {
                                break;
                            }
                        }
                        let rest: VecDeque<Value> = frames.collect();
                        if !rest.is_empty() {
                            self.unsent.insert(id, rest);
                        }
                    }
                    Notification::Progress(revision) => {
                        if matches!(kind, Kind::Stream) {
                            o.sink.push(frame(
                                protocol,
                                vec![bulk("progress"), int(id.0), int(revision)],
                            ));
                        }
                    }
                    Notification::Cancelled(error) => {
                        let text = error_text(&error);
                        if matches!(kind, Kind::Stream) {
                            o.sink.push(frame(
                                protocol,
                                vec![bulk("cancelled"), int(id.0), bulk(text)],
                            ));
                            self.remove(owner, id);
                            self.tidy_owner(owner);
                        } else {
                            // A subscriber too slow to be served without a gap is
                            // disconnected, as Redis disconnects slow subscribers.
                            o.sink.close_with(Value::Error(text));
                            self.drop_owner(owner);
                        }
                        break;
                    }
                }
            }
        }
    }
}

fn not_keyspace(name: &[u8]) -> String {
    format!(
        "ERR Synod publishes key events only, on channels {}<key> (got '{}')",
        String::from_utf8_lossy(KEYSPACE_PREFIX),
        String::from_utf8_lossy(name)
    )
}

/// Whether `name` is a keyspace channel or pattern ([`KEYSPACE_PREFIX`]); the error
/// otherwise.
///
/// # Errors
///
/// The text of the error a client is answered with.
pub fn check_keyspace(name: &[u8]) -> Result<(), String> {
    if name.starts_with(KEYSPACE_PREFIX) {
        Ok(())
    } else {
        Err(not_keyspace(name))
    }
}

/// The frames of a watcher's events: a channel's or pattern's messages, one per event, or
/// a stream's, one per revision (never split).
fn event_frames(protocol: u8, id: WatchId, kind: &Kind, events: &[Event]) -> Vec<Value> {
    match kind {
        Kind::Channel(name) => events
            .iter()
            .map(|e| {
                frame(
                    protocol,
                    vec![bulk("message"), bulk(name.clone()), bulk(payload(e))],
                )
            })
            .collect(),
        Kind::Pattern { raw, glob } => events
            .iter()
            .filter(|e| glob.matches(&e.key))
            .map(|e| {
                frame(
                    protocol,
                    vec![
                        bulk("pmessage"),
                        bulk(raw.clone()),
                        bulk(channel(&e.key)),
                        bulk(payload(e)),
                    ],
                )
            })
            .collect(),
        Kind::Stream => {
            let mut frames = Vec::new();
            let mut rest = events;
            while let Some(first) = rest.first() {
                let n = rest
                    .iter()
                    .take_while(|e| e.revision == first.revision)
                    .count();
                let (these, after) = rest.split_at(n);
                let items = these
                    .iter()
                    .map(|e| {
                        Value::Array(vec![
                            bulk(if e.value.is_some() { "set" } else { "del" }),
                            bulk(e.key.to_vec()),
                            e.value.as_ref().map_or(Value::Nil, |v| bulk(v.to_vec())),
                            int(e.create_revision),
                            int(e.version),
                        ])
                    })
                    .collect();
                frames.push(frame(
                    protocol,
                    vec![
                        bulk("event"),
                        int(id.0),
                        int(first.revision),
                        Value::Array(items),
                    ],
                ));
                rest = after;
            }
            frames
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::consistent_core::kv::Revisions;

    /// A connection as the worker sees it: what was pushed, and whether it closed.
    #[derive(Clone, Debug, Default)]
    struct List(Arc<Mutex<(Vec<Value>, bool, usize)>>);

    impl List {
        fn take(&self) -> Vec<Value> {
            std::mem::take(&mut self.0.lock().expect("lock").0)
        }
        fn closed(&self) -> bool {
            self.0.lock().expect("lock").1
        }
        /// Pretends `n` values wait unwritten (a client that does not read).
        fn stall(&self, n: usize) {
            self.0.lock().expect("lock").2 = n;
        }
    }

    impl Sink for List {
        fn push(&self, value: Value) -> bool {
            let mut l = self.0.lock().expect("lock");
            if l.1 {
                return false;
            }
            l.0.push(value);
            true
        }
        fn close_with(&self, value: Value) {
            let mut l = self.0.lock().expect("lock");
            l.0.push(value);
            l.1 = true;
        }
        /// The values pushed and not yet taken (and their bytes), and as many more values as
        /// [`List::stall`] says.
        fn queued(&self) -> Queued {
            let l = self.0.lock().expect("lock");
            Queued {
                values: l.0.len() + l.2,
                bytes: l.0.iter().map(Value::encoded_len).sum(),
            }
        }
        fn is_open(&self) -> bool {
            !self.0.lock().expect("lock").1
        }
    }

    fn set(revision: u64, key: &str, value: &str) -> WatchFeed {
        WatchFeed::Changes {
            revision,
            changes: vec![KeyChange {
                key: key.as_bytes().to_vec(),
                value: Some(value.as_bytes().to_vec()),
                revisions: Revisions {
                    create: revision,
                    modified: revision,
                    version: 1,
                },
            }],
        }
    }

    fn b(s: &str) -> Value {
        Value::Bulk(s.as_bytes().to_vec())
    }

    fn arr(items: Vec<Value>) -> Value {
        Value::Array(items)
    }

    #[test]
    fn keyspace_channels_and_patterns_get_redis_messages_carrying_the_revision() {
        let mut w: Watches<List> = Watches::new(watch_config(), 0);
        let (conn, owner) = (List::default(), WatchOwner::new(1));
        let reply = w.call(
            &owner,
            conn.clone(),
            2,
            WatchCall::Subscribe(vec![
                b"__keyspace@0__:a".to_vec(),
                b"__keyspace@0__:b".to_vec(),
            ]),
        );
        assert_eq!(
            reply,
            [
                arr(vec![b("subscribe"), b("__keyspace@0__:a"), Value::Int(1)]),
                arr(vec![b("subscribe"), b("__keyspace@0__:b"), Value::Int(2)]),
            ]
        );
        let reply = w.call(
            &owner,
            conn.clone(),
            2,
            WatchCall::PSubscribe(vec![b"__keyspace@0__:a*".to_vec()]),
        );
        assert_eq!(
            reply,
            [arr(vec![
                b("psubscribe"),
                b("__keyspace@0__:a*"),
                Value::Int(3)
            ])]
        );
        assert_eq!(owner.watchers(), 3);
        w.feed(vec![set(1, "a", "x"), set(2, "ab", "y"), set(3, "c", "z")]);
        w.feed(vec![WatchFeed::Changes {
            revision: 4,
            changes: vec![KeyChange {
                key: b"b".to_vec(),
                value: None,
                revisions: Revisions::default(),
            }],
        }]);
        w.deliver();
        let pushed = conn.take();
        assert_eq!(
            pushed,
            [
                arr(vec![b("message"), b("__keyspace@0__:a"), b("set 1")]),
                arr(vec![b("message"), b("__keyspace@0__:b"), b("del 4")]),
                arr(vec![
                    b("pmessage"),
                    b("__keyspace@0__:a*"),
                    b("__keyspace@0__:a"),
                    b("set 1")
                ]),
                arr(vec![
                    b("pmessage"),
                    b("__keyspace@0__:a*"),
                    b("__keyspace@0__:ab"),
                    b("set 2")
                ]),
            ]
        );
        // Unsubscribing from everything leaves the connection without watchers.
        let reply = w.call(&owner, conn.clone(), 2, WatchCall::Unsubscribe(vec![]));
        assert_eq!(reply.len(), 2);
        assert_eq!(
            w.call(&owner, conn.clone(), 2, WatchCall::PUnsubscribe(vec![])),
            [arr(vec![
                b("punsubscribe"),
                b("__keyspace@0__:a*"),
                Value::Int(0)
            ])]
        );
        assert_eq!(owner.watchers(), 0);
        assert!(w.hub().is_empty());
        // RESP3: push frames.
        let reply = w.call(
            &owner,
            conn.clone(),
            3,
            WatchCall::Subscribe(vec![b"__keyspace@0__:a".to_vec()]),
        );
        assert_eq!(
            reply,
            [Value::Push(vec![
                b("subscribe"),
                b("__keyspace@0__:a"),
                Value::Int(1)
            ])]
        );
        w.feed(vec![set(5, "a", "w")]);
        w.deliver();
        assert_eq!(
            conn.take(),
            [Value::Push(vec![
                b("message"),
                b("__keyspace@0__:a"),
                b("set 5")
            ])]
        );
    }

    #[test]
    fn a_stream_resumes_from_a_revision_gets_progress_and_a_compacted_start_is_refused() {
        let config = WatchConfig {
            history_revisions_max: 3,
            ..watch_config()
        };
        let mut w: Watches<List> = Watches::new(config, 0);
        let (conn, owner) = (List::default(), WatchOwner::new(7));
        for r in 1..=5 {
            w.feed(vec![set(r, &format!("k{r}"), "v")]);
        }
        // History holds 3 to 5: a start at 2 is refused with the compacted revision.
        let refused = w.call(
            &owner,
            conn.clone(),
            2,
            WatchCall::Stream {
                filter: Filter::Prefix("k".into()),
                from: Some(2),
            },
        );
        assert_eq!(refused.len(), 1);
        assert!(
            matches!(&refused[0], Value::Error(e) if e.starts_with("COMPACTED 2 5:")),
            "{refused:?}"
        );
        let reply = w.call(
            &owner,
            conn.clone(),
            2,
            WatchCall::Stream {
                filter: Filter::Prefix("k".into()),
                from: Some(4),
            },
        );
        let id = match &reply[..] {
            [Value::Array(items)] if items[0] == b("watching") && items[2] == Value::Int(4) => {
                items[1].clone()
            }
            other => panic!("{other:?}"),
        };
        w.deliver();
        let entry = |r: i64| {
            arr(vec![
                b("set"),
                b(&format!("k{r}")),
                b("v"),
                Value::Int(r),
                Value::Int(1),
            ])
        };
        assert_eq!(
            conn.take(),
            [
                arr(vec![
                    b("event"),
                    id.clone(),
                    Value::Int(4),
                    arr(vec![entry(4)])
                ]),
                arr(vec![
                    b("event"),
                    id.clone(),
                    Value::Int(5),
                    arr(vec![entry(5)])
                ]),
            ]
        );
        assert_eq!(
            w.call(&owner, conn.clone(), 2, WatchCall::Progress(None)),
            [Value::Simple("OK".into())]
        );
        w.deliver();
        assert_eq!(
            conn.take(),
            [arr(vec![b("progress"), id.clone(), Value::Int(5)])]
        );
        // Periodically too.
        w.wake(Time::from_millis(0));
        w.wake(Time::from_millis(PROGRESS_INTERVAL_MS));
        w.deliver();
        assert_eq!(
            conn.take(),
            [arr(vec![b("progress"), id.clone(), Value::Int(5)])]
        );
        let Value::Int(n) = id else { panic!() };
        assert_eq!(
            w.call(
                &owner,
                conn.clone(),
                2,
                WatchCall::Cancel(u64::try_from(n).unwrap())
            ),
            [Value::Int(1)]
        );
        assert_eq!(owner.watchers(), 0);
    }

    #[test]
    fn a_slow_connection_gets_the_compacted_error_never_a_gap() {
        let config = WatchConfig {
            buffered_events_max: 2,
            history_revisions_max: 4,
            ..watch_config()
        };
        let mut w: Watches<List> = Watches::new(config, 0);
        let (stream_conn, pubsub_conn) = (List::default(), List::default());
        let (a, b_owner) = (WatchOwner::new(1), WatchOwner::new(2));
        w.call(
            &a,
            stream_conn.clone(),
            3,
            WatchCall::Stream {
                filter: Filter::Prefix("".into()),
                from: None,
            },
        );
        w.call(
            &b_owner,
            pubsub_conn.clone(),
            2,
            WatchCall::PSubscribe(vec![b"__keyspace@0__:*".to_vec()]),
        );
        // Neither client reads: their push queues are full, so nothing is pushed, the
        // buffers fill and the history moves past what they need.
        stream_conn.stall(PUSH_QUEUE_MAX);
        pubsub_conn.stall(PUSH_QUEUE_MAX);
        for r in 1..=10 {
            w.feed(vec![set(r, "k", "v")]);
            w.deliver();
        }
        assert!(stream_conn.take().is_empty());
        stream_conn.stall(0);
        pubsub_conn.stall(0);
        w.deliver();
        let pushed = stream_conn.take();
        // The two buffered revisions, then the error with the compacted revision.
        assert_eq!(pushed.len(), 3, "{pushed:?}");
        assert!(
            matches!(&pushed[2], Value::Push(items) if items[0] == b("cancelled")
                && matches!(&items[2], Value::Bulk(t) if t.starts_with(b"COMPACTED 6 10:"))),
            "{pushed:?}"
        );
        assert_eq!(a.watchers(), 0);
        // The subscriber is told and disconnected, as Redis disconnects slow ones.
        let pushed = pubsub_conn.take();
        assert!(
            matches!(pushed.last(), Some(Value::Error(e)) if e.starts_with("COMPACTED 6 10:")),
            "{pushed:?}"
        );
        assert!(pubsub_conn.closed());
        assert!(w.hub().is_empty());
    }

    #[test]
    fn a_closed_connection_loses_its_watchers_and_limits_hold_per_connection() {
        let mut w: Watches<List> = Watches::new(watch_config(), 0);
        let (conn, owner) = (List::default(), WatchOwner::new(1));
        let channels: Vec<Vec<u8>> = (0..=WATCHERS_PER_CONNECTION_MAX)
            .map(|i| format!("__keyspace@0__:k{i}").into_bytes())
            .collect();
        let reply = w.call(&owner, conn.clone(), 2, WatchCall::Subscribe(channels));
        assert_eq!(reply.len(), WATCHERS_PER_CONNECTION_MAX + 1);
        assert!(
            matches!(reply.last(), Some(Value::Error(e)) if e.contains("at most 64 watchers per connection")),
            "{:?}",
            reply.last()
        );
        assert_eq!(owner.watchers(), WATCHERS_PER_CONNECTION_MAX);
        conn.close_with(Value::Nil);
        w.wake(Time::from_millis(1));
        assert!(w.hub().is_empty());
        assert_eq!(owner.watchers(), 0);
        // Only keyspace channels.
        assert!(check_keyspace(b"news").is_err());
        assert!(check_keyspace(b"__keyspace@0__:k").is_ok());
    }
    #[test]
    fn a_revision_larger_than_the_push_queue_reaches_a_subscriber_that_keeps_up_in_parts() {
        // One revision changing 1,100 keys (a MULTI of 1,100 SETs) is 1,100 messages for a
        // pattern subscriber: more than its push queue holds, though it has nothing queued.
        // It gets them all, once each, in parts no larger than the queue, and stays open.
        let mut w: Watches<List> = Watches::new(watch_config(), 0);
        let (conn, owner) = (List::default(), WatchOwner::new(1));
        w.call(
            &owner,
            conn.clone(),
            2,
            WatchCall::PSubscribe(vec![b"__keyspace@0__:k*".to_vec()]),
        );
        conn.take();
        let keys = 1_100;
        let changes = (0..keys)
            .map(|i| KeyChange {
                key: format!("k{i}").into_bytes(),
                value: Some(b"v".to_vec()),
                revisions: Revisions {
                    create: 1,
                    modified: 1,
                    version: 1,
                },
            })
            .collect();
        w.feed(vec![WatchFeed::Changes {
            revision: 1,
            changes,
        }]);
        let mut channels = Vec::new();
        for _ in 0..3 {
            w.deliver();
            let pushed = conn.take();
            assert!(pushed.len() <= PUSH_QUEUE_MAX, "{} at once", pushed.len());
            channels.extend(pushed.iter().map(|v| match v {
                Value::Array(items) | Value::Push(items) => match &items[2] {
                    Value::Bulk(channel) => channel.clone(),
                    other => panic!("not a channel: {other:?}"),
                },
                other => panic!("not a message: {other:?}"),
            }));
        }
        assert!(!conn.closed(), "the subscriber was disconnected");
        let distinct: BTreeSet<_> = channels.iter().cloned().collect();
        assert_eq!(channels.len(), keys, "every key's message, once");
        assert_eq!(distinct.len(), keys, "every key's message, once");
        assert!(
            distinct.contains(b"__keyspace@0__:k1099".as_slice()),
            "{distinct:?}"
        );
    }

    #[test]
    fn a_stream_of_large_values_is_paced_by_the_push_queues_bytes_and_stays_open() {
        // 40 revisions of a 512 KiB value each: 20 MiB of events, where the push queue
        // holds 8 MiB. A client that reads now and then gets every revision, once, in
        // order, with never more than the queue's bytes (and one frame) waiting for it, and
        // is never disconnected for it.
        let mut w: Watches<List> = Watches::new(watch_config(), 0);
        let (conn, owner) = (List::default(), WatchOwner::new(1));
        w.call(
            &owner,
            conn.clone(),
            3,
            WatchCall::Stream {
                filter: Filter::Prefix("big".into()),
                from: None,
            },
        );
        conn.take();
        let value = "v".repeat(512 << 10);
        let revisions = 40;
        for r in 1..=revisions {
            w.feed(vec![set(r, "big", &value)]);
        }
        let mut seen = Vec::new();
        for _ in 0..revisions {
            w.deliver();
            let waiting = conn.queued();
            assert!(
                waiting.bytes <= PUSH_QUEUE_BYTES_MAX,
                "{} bytes pushed and unread",
                waiting.bytes
            );
            // The client reads what waits.
            for frame in conn.take() {
                match frame {
                    Value::Push(items) if items[0] == b("event") => seen.push(items[2].clone()),
                    other => panic!("not an event: {other:?}"),
                }
            }
            assert!(!conn.closed(), "the stream's connection was closed");
            if seen.len() == revisions as usize {
                break;
            }
        }
        let want: Vec<Value> = (1..=revisions)
            .map(|r| Value::Int(i64::try_from(r).expect("small")))
            .collect();
        assert_eq!(seen, want, "every revision once, in order");
    }
}
