//! Application key-values on the gossip: each member owns versioned key-values that every
//! other live member holds a copy of, spread by scuttlebutt anti-entropy (digests, then
//! deltas of what the other lacks), bounded by the sync message limit.
//!
//! Each owner's key-values form one *state* per start of the owner: its generation (the
//! member's start), the largest version it has handed out (`max_version`; every set or
//! delete takes the next), and the *collection mark* (`gc_version`: tombstones up to it
//! have been collected). A holder's copy of a state up to version `v` holds everything the
//! owner did up to `v`, because a delta carries a state's keys in version order and the
//! holder takes them only in that order, from the version it already has.
//!
//! A deleted key is a tombstone, carried like a value, until every holder has had it for
//! the grace period; then each holder forgets it on its own clock and raises its mark. A
//! holder whose copy is behind someone's mark (it might still hold a key whose tombstone is
//! gone) is sent a *reset*: the whole state, which replaces its copy. A reset goes newest
//! first, in parts if it does not fit, into a staging copy that this member's digests
//! advertise (how far down it has come), so that the next part follows on from any
//! holder at least as new as the first part, however far the collection mark moved since:
//! a key changed or deleted after the first part has its new version above the first
//! part's, carried by the deltas that follow. The staging copy is swapped in whole once it
//! holds every part and has been brought up to its sender's version (so that it is the
//! owner's state at one version), handing up only what differs; until then the old copy
//! is the one read and handed out. A new generation of an owner replaces
//! its old state the same way; a member that renews its generation while running moves
//! its own key-values to the new generation too. A holder drops its copy of a member it
//! declares dead (and so of one it forgets), and a holder that was paused for half the
//! grace period or more drops every copy it holds, since it may have slept through a
//! collection; a copy is taken again from the owner or any holder.
//!
//! A holder cut off from the key-value exchange while alive (its probes still answered)
//! keeps a copy behind the mark, deleted key included. So that it hands that key to no one,
//! every owner tells its *deletion floor* (the version of its newest delete in its current
//! generation) in the header of every message it sends, and every digest carries each
//! owner's floor as its sender knows it. A member takes a whole state (a reset: a first
//! copy, or one replacing the copy held) only if it is of the owner's latest start known
//! and at or above the floor known, swaps a staging copy in only once it is, and hands out
//! no reset from a copy below it. The guarantee: a member that has heard an owner's floor
//! (from the owner, or from any member that has) never takes in, with a copy of that owner,
//! a key the owner deleted at or below it. The owner collects a tombstone only a grace
//! period after the delete, so a member that exchanges any message with the owner, or a
//! digest with a member that heard the floor, within the grace of a delete is never handed
//! the key by a stale holder. What cannot be closed without that news: a member that, for
//! the grace after a delete, hears from neither the owner nor a member that heard its floor
//! (the owner crashed or cut off from it, and every member it exchanges key-values with
//! holding a copy from before the delete) can take such a copy. It drops it when it
//! declares the owner dead, and it is replaced by a reset once a holder past the mark
//! reaches it. The stale holder's own copy is likewise kept until a holder past the mark
//! resets it, and may take plain deltas from another stale holder meanwhile: plain deltas
//! move a copy on from its own version and are not checked against the floor.
//!
//! A key taken from another member that is over this member's own size limits (a peer
//! configured with larger ones) is gone past, counted, and an older value of it dropped:
//! the copy goes on, lacking that key, and is handed out neither as a reset nor in deltas
//! reaching past the first such key, so a member with larger limits takes the key from
//! the owner or a holder that has it. A key that would take a copy past `keys_max` stops
//! the copy below it instead, until the owner's deletes make room; so does a key that would
//! take the bytes held of all others' key-values (copies being taken included) past
//! `held_bytes_max`, until collections or owners gone make room. A reset that replaces a
//! copy held is measured without that copy: the bytes held pass the limit by at most the
//! copy being replaced while the reset is taken, and a new start that fits the limit
//! always replaces the old one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use synod_node::{NodeId, Time};

/// What a holder knows of one owner's key-values: which start of it, up to which version,
/// and up to which version its tombstones are collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Digest {
    /// The owner of the key-values.
    pub owner: NodeId,
    /// The owner's start the key-values belong to (0: none held).
    pub generation: u64,
    /// Every change the owner made up to this version is held.
    pub max_version: u64,
    /// Tombstones up to this version have been collected (the collection mark).
    pub gc_version: u64,
    /// A reset being taken in parts (newest first): the versions above this one, up to
    /// `max_version`, are held; the rest is still to come. 0 when none is.
    pub reset_from: u64,
    /// The owner's *deletion floor* as the sender knows it, at this generation: the newest
    /// version at which the owner deleted a key (or a collection mark, whichever is newer).
    /// A copy below it may still hold a deleted key, so it is never taken as a new copy.
    pub floor: u64,
}

/// One key at one version: its value, or `None` for a deleted key (a tombstone).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyUpdate {
    /// The key.
    pub key: String,
    /// The owner's version of this change.
    pub version: u64,
    /// The value, `None` if the key was deleted.
    pub value: Option<Vec<u8>>,
}

/// What one owner's state has that a holder lacks: its keys above `from`, in version
/// order, complete up to `to`; or with `reset`, a part of the whole state, which replaces
/// the holder's copy once every part is in: the keys in `from + 1..=to`, newest first, the
/// first part starting at the sender's `max_version` and the last ending at `from` 0.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Delta {
    /// The owner.
    pub owner: NodeId,
    /// Its start.
    pub generation: u64,
    /// The whole state, to replace the holder's copy (a new generation, a holder that had
    /// none, or one behind the collection mark).
    pub reset: bool,
    /// The sender's collection mark for the owner.
    pub gc_version: u64,
    /// The version the holder is known to have; with `reset`, where this part ends (0 for
    /// the last).
    pub from: u64,
    /// Everything up to this version is in the delta or superseded.
    pub to: u64,
    /// The keys, in version order (newest first with `reset`).
    pub keys: Vec<KeyUpdate>,
    /// The sender's `max_version`: a reset's first part has `to` at it, and a copy built
    /// from parts is the owner's state at one version once it reaches it.
    pub top: u64,
}

/// A change to another member's key-values in this member's copy, handed to the
/// application with `Effect::Apply` ([`ViewChange::Key`](crate::ViewChange::Key)).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyChange {
    /// The member that owns the key.
    pub owner: NodeId,
    /// The owner's start the key belongs to.
    pub generation: u64,
    /// The key.
    pub key: String,
    /// The owner's version of the change; when the copy is dropped (`value` is `None`
    /// because the owner is gone, restarted or was reset), the version last held.
    pub version: u64,
    /// The new value; `None` when the key was deleted, the copy dropped, or the key's new
    /// value is over this member's limits (see [`MemberStats::kv_refused`]).
    ///
    /// [`MemberStats::kv_refused`]: crate::MemberStats::kv_refused
    pub value: Option<Vec<u8>>,
    /// When this member learnt it (its own `now`).
    pub at: Time,
}

/// Why a key-value write was refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KvError {
    /// The key is longer than `key_bytes_max` (or empty).
    Key {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The value is longer than `value_bytes_max`.
    Value {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The member holds `keys_max` keys (tombstones included) and this one is new.
    Full {
        /// The limit.
        limit: usize,
    },
}

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvError::Key { len, limit } => {
                write!(f, "a key of {len} bytes, where 1 to {limit} are allowed")
            }
            KvError::Value { len, limit } => {
                write!(f, "a value of {len} bytes is over the {limit} byte limit")
            }
            KvError::Full { limit } => {
                write!(
                    f,
                    "the member already holds {limit} keys (deleted ones included)"
                )
            }
        }
    }
}

impl std::error::Error for KvError {}

/// The limits and timing of the key-values, from the member's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KvLimits {
    /// The most bytes of others' key-values held in all, copies being taken included.
    pub(crate) held_bytes_max: usize,
    pub(crate) keys_max: usize,
    pub(crate) key_bytes_max: usize,
    pub(crate) value_bytes_max: usize,
    pub(crate) grace_ms: u64,
    /// Broken on purpose: tombstones are collected without moving the collection mark.
    pub(crate) collect_without_mark: bool,
    /// Broken on purpose: deletion floors are ignored (no copy is ever stale).
    pub(crate) ignore_floors: bool,
}

impl KvLimits {
    /// Whether a key taken from another member is over this member's own limits (a peer
    /// with larger limits, or a broken one): it is refused like a write would be, and the
    /// copy goes on past it without it (see [`State::skipped`]).
    fn refuses(&self, update: &KeyUpdate) -> bool {
        update.key.is_empty()
            || update.key.len() > self.key_bytes_max
            || update
                .value
                .as_ref()
                .is_some_and(|v| v.len() > self.value_bytes_max)
    }
}

#[derive(Debug, Clone)]
struct Versioned {
    version: u64,
    value: Option<Vec<u8>>,
    /// For a tombstone: when this holder learnt it (its collection starts from there).
    since: Time,
}

/// One owner's state as a holder keeps it.
#[derive(Debug, Clone, Default)]
struct State {
    generation: u64,
    max_version: u64,
    gc_version: u64,
    keys: BTreeMap<String, Versioned>,
    /// The keys by version, for deltas in version order.
    by_version: BTreeMap<u64, String>,
    /// A staging copy: the versions above this one are held (see [`Digest::reset_from`]).
    reset_from: u64,
    /// The lowest version of a key this copy went past without taking it, because the key
    /// or its value is over this member's limits (0: none). Such a copy is this member's
    /// own: above that version it lacks a change the owner made, so it is handed out
    /// neither as a reset nor in deltas reaching past it.
    skipped: u64,
    /// The bytes of the keys and values held ([`entry_bytes`]).
    bytes: usize,
}

/// What [`State::take_key`] did with a key.
enum Took {
    /// This version or a newer one is held.
    Held,
    /// Over the size limits: gone past, with the older version it dropped.
    Skipped(Option<Versioned>),
    /// Over `keys_max` or the bytes' room: the copy stops below it.
    Full,
    /// Taken, with the version it replaced.
    Put(Option<Versioned>),
}

/// The bytes a key held takes, as counted against `held_bytes_max`: its key and value.
fn entry_bytes(key: &str, value: Option<&Vec<u8>>) -> usize {
    key.len() + value.map_or(0, Vec::len)
}

impl State {
    fn new(generation: u64, gc_version: u64) -> State {
        State {
            generation,
            gc_version,
            ..State::default()
        }
    }

    fn digest(&self, owner: NodeId) -> Digest {
        Digest {
            owner,
            generation: self.generation,
            max_version: self.max_version,
            gc_version: self.gc_version,
            reset_from: self.reset_from,
            floor: self.gc_version,
        }
    }

    /// Sets `key` to `update`'s version and value; returns what it replaced.
    fn put(&mut self, update: KeyUpdate, now: Time) -> Option<Versioned> {
        let key_len = update.key.len();
        self.bytes += entry_bytes(&update.key, update.value.as_ref());
        let old = self.keys.insert(
            update.key.clone(),
            Versioned {
                version: update.version,
                value: update.value,
                since: now,
            },
        );
        self.by_version.insert(update.version, update.key);
        let old = old?;
        self.by_version.remove(&old.version);
        self.bytes -= key_len + old.value.as_ref().map_or(0, Vec::len);
        Some(old)
    }

    /// Goes past `update`, over this member's limits: the copy holds no older version of
    /// its key either (the owner replaced it), and is marked as lacking a change from
    /// `update.version` on. Returns what was dropped.
    fn skip(&mut self, update: &KeyUpdate) -> Option<Versioned> {
        self.skipped = match self.skipped {
            0 => update.version,
            lowest => lowest.min(update.version),
        };
        let old = self.keys.remove(&update.key)?;
        self.by_version.remove(&old.version);
        self.bytes -= entry_bytes(&update.key, old.value.as_ref());
        Some(old)
    }

    /// Removes the key at `version`, if any (a tombstone collected).
    fn remove_version(&mut self, version: u64) -> bool {
        let Some(key) = self.by_version.remove(&version) else {
            return false;
        };
        if let Some(old) = self.keys.remove(&key) {
            self.bytes -= entry_bytes(&key, old.value.as_ref());
        }
        true
    }

    /// Whether taking `update` over `existing` would take this copy past `room` bytes.
    /// Takes one key of a delta or a reset part, as [`State::take`] and [`State::take_down`]
    /// do for each: held already at this version or newer, gone past (over the size limits,
    /// an older version dropped), refused for `keys_max` or `room` (the copy stops below
    /// it), or put. `stats` counts the refusals.
    fn take_key(
        &mut self,
        now: Time,
        update: &KeyUpdate,
        limits: &KvLimits,
        room: usize,
        stats: &mut KvStats,
    ) -> Took {
        let existing = self.keys.get(&update.key);
        if existing.is_some_and(|e| e.version >= update.version) {
            return Took::Held;
        }
        if limits.refuses(update) {
            stats.refused += 1;
            return Took::Skipped(self.skip(update));
        }
        if existing.is_none() && self.keys.len() >= limits.keys_max {
            stats.refused += 1;
            return Took::Full;
        }
        if self.over(update, existing, room) {
            stats.over_bytes += 1;
            return Took::Full;
        }
        Took::Put(self.put(update.clone(), now))
    }

    fn over(&self, update: &KeyUpdate, existing: Option<&Versioned>, room: usize) -> bool {
        let new = entry_bytes(&update.key, update.value.as_ref());
        let old = existing.map_or(0, |e| entry_bytes(&update.key, e.value.as_ref()));
        new > old && self.bytes - old + new > room
    }

    /// Takes `delta`'s keys above this copy's version, in order, and moves the version to
    /// `delta.to` if every key fit. Returns each key taken with what it replaced, and
    /// whether it was taken (`false`: over this member's limits, it dropped the older
    /// version held); `stats` counts keys refused for `limits` (see
    /// [`KvLimits::refuses`]): a key over the size limits is gone past, one that would take
    /// the copy past `keys_max`, or past `room` bytes, stops it below.
    fn take(
        &mut self,
        now: Time,
        delta: &Delta,
        limits: &KvLimits,
        room: usize,
        stats: &mut KvStats,
    ) -> Vec<(KeyUpdate, Option<Versioned>, bool)> {
        let mut taken = Vec::new();
        let mut top = self.max_version;
        let mut complete = true;
        let mut last = 0;
        for update in &delta.keys {
            if update.version <= last || update.version > delta.to {
                // Out of order: the sender is broken; take nothing more of it.
                complete = false;
                break;
            }
            last = update.version;
            if update.version <= self.max_version {
                continue;
            }
            match self.take_key(now, update, limits, room, stats) {
                Took::Held => {}
                Took::Skipped(dropped) => {
                    if let Some(dropped) = dropped {
                        taken.push((update.clone(), Some(dropped), false));
                    }
                }
                Took::Full => {
                    complete = false;
                    break;
                }
                Took::Put(replaced) => taken.push((update.clone(), replaced, true)),
            }
            top = update.version;
        }
        self.max_version = if complete { top.max(delta.to) } else { top };
        taken
    }

    /// Takes a part of a reset into this staging copy: `delta`'s keys, newest first, from
    /// `reset_from` (which must be `delta.to`) down; moves `reset_from` down to what is
    /// held, to `delta.from` if every key fit. `stats` counts keys refused for `limits` or
    /// `room`, as [`State::take`] does.
    fn take_down(
        &mut self,
        now: Time,
        delta: &Delta,
        limits: &KvLimits,
        room: usize,
        stats: &mut KvStats,
    ) {
        let mut floor = self.reset_from;
        let mut done = true;
        for update in &delta.keys {
            if update.version > floor || update.version <= delta.from {
                // Out of order: the sender is broken; take nothing more of it.
                done = false;
                break;
            }
            if let Took::Full = self.take_key(now, update, limits, room, stats) {
                done = false;
                break;
            }
            floor = update.version - 1;
        }
        self.reset_from = if done { delta.from } else { floor };
    }

    fn live(&self) -> impl Iterator<Item = (&String, u64, &Vec<u8>)> {
        self.keys
            .iter()
            .filter_map(|(k, v)| v.value.as_ref().map(|value| (k, v.version, value)))
    }
}

/// The key-values a member owns and the copies it holds of others'.
#[derive(Debug)]
pub(crate) struct KvStore {
    me: NodeId,
    limits: KvLimits,
    states: BTreeMap<NodeId, State>,
    /// Resets being taken in parts, each replacing the copy in `states` only once complete
    /// (until then the old copy is the one read and handed out).
    staging: BTreeMap<NodeId, State>,
    /// Every tombstone held, by when it was learnt, for collection.
    tombstones: BTreeSet<(Time, NodeId, u64)>,
    /// Where the next digest starts, for views too large for one message.
    cursor: NodeId,
    /// Keys held, live or tombstones, over all states.
    keys_held: usize,
    /// The newest deletion floor known of each owner, with the generation it belongs to:
    /// this member's own (its newest delete), and others' as their messages, digests and
    /// deltas tell it. Only owners held (members of the view not believed dead) are learnt,
    /// and an owner forgotten is removed, so this is bounded by the view.
    floors: BTreeMap<NodeId, (u64, u64)>,
    /// The bytes of others' copies and of the staging copies ([`State::bytes`] summed),
    /// kept as they change.
    held_bytes: usize,
    pub(crate) stats: KvStats,
}

/// Counters of the key-value exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct KvStats {
    pub(crate) resets_sent: u64,
    pub(crate) resets_taken: u64,
    pub(crate) refused: u64,
    pub(crate) collected: u64,
    pub(crate) stale_refused: u64,
    pub(crate) over_bytes: u64,
}

/// The encoded size of `value`.
pub(crate) fn encoded_len<T: Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Counting bytes cannot fail.
    let _ = postcard::to_io(value, &mut count);
    count.0
}

impl KvStore {
    pub(crate) fn new(me: NodeId, generation: u64, limits: KvLimits) -> KvStore {
        let mut states = BTreeMap::new();
        states.insert(me, State::new(generation, 0));
        KvStore {
            me,
            limits,
            states,
            staging: BTreeMap::new(),
            tombstones: BTreeSet::new(),
            cursor: NodeId::new(1),
            keys_held: 0,
            floors: BTreeMap::new(),
            held_bytes: 0,
            stats: KvStats::default(),
        }
    }

    /// Moves this member's own key-values to `generation` when the member renews its
    /// generation while running: a start below an old one that others still hold takes a
    /// generation above it, and its key-values must too, or the holders would keep the old
    /// start's copy and refuse the new one. The keys are kept; holders take them as a reset.
    pub(crate) fn renew(&mut self, generation: u64) {
        if let Some(own) = self.states.get_mut(&self.me) {
            own.generation = own.generation.max(generation);
            let floor = self.floors.get(&self.me).map_or(0, |&(_, f)| f);
            self.floors.insert(self.me, (own.generation, floor));
        }
    }

    // ---- deletion floors ----------------------------------------------------------------

    /// This member's own deletion floor: the newest version at which it deleted a key in
    /// its current generation (told in every message it sends).
    pub(crate) fn own_floor(&self) -> u64 {
        let generation = self.states.get(&self.me).map_or(0, |s| s.generation);
        self.floor_of(self.me, generation)
    }

    /// The deletion floor known of `owner`'s start `generation` (0 if none is known).
    fn floor_of(&self, owner: NodeId, generation: u64) -> u64 {
        match self.floors.get(&owner) {
            Some(&(g, floor)) if g == generation => floor,
            _ => 0,
        }
    }

    /// Takes in that `owner`'s start `generation` deleted a key at version `floor` (or
    /// collected tombstones up to it). The caller learns only of owners it holds.
    pub(crate) fn learn(&mut self, owner: NodeId, generation: u64, floor: u64) {
        if owner == self.me || generation == 0 {
            return;
        }
        let known = self.floors.entry(owner).or_insert((generation, floor));
        if generation > known.0 {
            *known = (generation, floor);
        } else if generation == known.0 {
            known.1 = known.1.max(floor);
        }
    }

    /// Forgets what is known of `owner`'s deletions (the member is gone from the view).
    pub(crate) fn forget_floor(&mut self, owner: NodeId) {
        if owner != self.me {
            self.floors.remove(&owner);
        }
    }

    /// Whether a copy of `owner`'s start `generation` up to `version` is older than what
    /// this member knows of the owner: of an earlier start, or below its deletion floor, so
    /// that it may hold a key since deleted (its tombstone perhaps collected everywhere).
    /// Such a copy is never taken as a new copy, nor handed out as one.
    fn stale(&self, owner: NodeId, generation: u64, version: u64) -> bool {
        !self.limits.ignore_floors
            && self
                .floors
                .get(&owner)
                .is_some_and(|&(g, floor)| g > generation || (g == generation && version < floor))
    }

    /// The digest of the copy of `owner` this member works on, with the deletion floor it
    /// knows.
    fn digest_with_floor(&self, owner: NodeId, state: &State) -> Digest {
        let mut d = state.digest(owner);
        d.floor = d.floor.max(self.floor_of(owner, state.generation));
        d
    }

    pub(crate) fn keys_held(&self) -> usize {
        self.keys_held
    }

    /// The bytes of others' key-values held, copies being taken included (counted against
    /// `held_bytes_max`).
    pub(crate) fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// [`KvStore::held_bytes`] counted again from every copy, to check the running count.
    fn recount_bytes(&self) -> usize {
        let held: usize = self
            .states
            .iter()
            .filter(|&(&owner, _)| owner != self.me)
            .map(|(_, s)| s.bytes)
            .sum();
        held + self.staging.values().map(|s| s.bytes).sum::<usize>()
    }

    pub(crate) fn owners(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.states.keys().copied()
    }

    pub(crate) fn digest_of(&self, owner: NodeId) -> Option<Digest> {
        self.states
            .get(&owner)
            .map(|s| self.digest_with_floor(owner, s))
    }

    pub(crate) fn get(&self, owner: NodeId, key: &str) -> Option<&[u8]> {
        self.states.get(&owner)?.keys.get(key)?.value.as_deref()
    }

    pub(crate) fn iter(&self, owner: NodeId) -> impl Iterator<Item = (&str, &[u8])> {
        self.states
            .get(&owner)
            .into_iter()
            .flat_map(|s| s.live().map(|(k, _, v)| (k.as_str(), v.as_slice())))
    }

    // ---- the owner's writes -------------------------------------------------------------

    /// Sets (`Some`) or deletes (`None`) one of this member's own keys; returns the new
    /// version. Deleting a key that is not set does nothing and returns the current one.
    pub(crate) fn write(
        &mut self,
        now: Time,
        key: String,
        value: Option<Vec<u8>>,
    ) -> Result<u64, KvError> {
        let l = self.limits;
        if key.is_empty() || key.len() > l.key_bytes_max {
            return Err(KvError::Key {
                len: key.len(),
                limit: l.key_bytes_max,
            });
        }
        if let Some(v) = &value
            && v.len() > l.value_bytes_max
        {
            return Err(KvError::Value {
                len: v.len(),
                limit: l.value_bytes_max,
            });
        }
        let me = self.me;
        let Some(state) = self.states.get_mut(&me) else {
            return Err(KvError::Full { limit: 0 });
        };
        let held = state.keys.get(&key);
        if value.is_none() && held.is_none_or(|v| v.value.is_none()) {
            return Ok(state.max_version);
        }
        if held.is_none() && state.keys.len() >= l.keys_max {
            return Err(KvError::Full { limit: l.keys_max });
        }
        state.max_version += 1;
        let version = state.max_version;
        let new = held.is_none();
        let tombstone = value.is_none();
        let replaced = state.put(
            KeyUpdate {
                key,
                version,
                value,
            },
            now,
        );
        if new {
            self.keys_held += 1;
        }
        if let Some(old) = replaced.filter(|o| o.value.is_none()) {
            self.tombstones.remove(&(old.since, me, old.version));
        }
        if tombstone {
            self.tombstones.insert((now, me, version));
            let generation = state.generation;
            self.floors.insert(me, (generation, version));
        }
        Ok(version)
    }

    // ---- time ---------------------------------------------------------------------------

    /// When the oldest tombstone is due for collection.
    pub(crate) fn next_collection(&self) -> Option<Time> {
        self.tombstones
            .first()
            .map(|&(since, _, _)| since + Duration::from_millis(self.limits.grace_ms))
    }

    /// Collects the tombstones held for the grace period.
    pub(crate) fn collect(&mut self, now: Time) {
        let grace = Duration::from_millis(self.limits.grace_ms);
        while let Some(&(since, owner, version)) = self.tombstones.first()
            && since + grace <= now
        {
            self.tombstones.remove(&(since, owner, version));
            self.collect_one(owner, version);
        }
        debug_assert_eq!(self.held_bytes, self.recount_bytes());
    }

    fn collect_one(&mut self, owner: NodeId, version: u64) {
        let Some(state) = self.states.get_mut(&owner) else {
            return;
        };
        let before = state.bytes;
        if !state.remove_version(version) {
            return;
        }
        if owner != self.me {
            self.held_bytes -= before - state.bytes;
        }
        self.keys_held -= 1;
        self.stats.collected += 1;
        if !self.limits.collect_without_mark {
            state.gc_version = state.gc_version.max(version);
        }
    }

    /// Drops the copy of `owner`'s key-values (never this member's own), handing up each
    /// live key as gone.
    pub(crate) fn drop_owner(&mut self, owner: NodeId, now: Time, out: &mut Vec<KeyChange>) {
        if owner == self.me {
            return;
        }
        if let Some(staged) = self.staging.remove(&owner) {
            self.held_bytes -= staged.bytes;
        }
        let Some(state) = self.states.remove(&owner) else {
            return;
        };
        self.held_bytes -= state.bytes;
        self.forget_state(owner, &state, now, out);
    }

    /// Drops every copy of others' key-values (after a pause long enough to have slept
    /// through a collection).
    pub(crate) fn drop_others(&mut self, now: Time, out: &mut Vec<KeyChange>) {
        let others: Vec<NodeId> = self
            .states
            .keys()
            .copied()
            .filter(|&o| o != self.me)
            .collect();
        for owner in others {
            self.drop_owner(owner, now, out);
        }
        // Resets under way of owners of which no copy is held yet.
        for staged in std::mem::take(&mut self.staging).into_values() {
            self.held_bytes -= staged.bytes;
        }
        debug_assert_eq!(self.held_bytes, self.recount_bytes());
    }

    fn forget_state(&mut self, owner: NodeId, state: &State, now: Time, out: &mut Vec<KeyChange>) {
        for (key, v) in &state.keys {
            self.keys_held -= 1;
            match &v.value {
                Some(_) => out.push(KeyChange {
                    owner,
                    generation: state.generation,
                    key: key.clone(),
                    version: v.version,
                    value: None,
                    at: now,
                }),
                None => {
                    self.tombstones.remove(&(v.since, owner, v.version));
                }
            }
        }
    }

    // ---- the exchange ---------------------------------------------------------------------

    /// The digest of the states held, from the cursor on, as many as fit in `budget` bytes:
    /// `(lo, hi, digests)`, where owners in `lo..=hi` that are not named are not held.
    pub(crate) fn digest(&mut self, budget: usize) -> (NodeId, NodeId, Vec<Digest>) {
        let lo = self.cursor;
        let mut hi = NodeId::new(u64::MAX);
        let mut out = Vec::new();
        let mut used = 0;
        let owners: BTreeSet<NodeId> = self
            .states
            .range(lo..)
            .chain(self.staging.range(lo..))
            .map(|(&owner, _)| owner)
            .collect();
        for (owner, state) in owners
            .into_iter()
            .filter_map(|o| Some((o, self.current(o)?)))
        {
            let d = self.digest_with_floor(owner, state);
            let bytes = encoded_len(&d);
            // At least one digest goes, so that the cursor always moves on.
            if used + bytes > budget && !out.is_empty() {
                hi = NodeId::new(owner.get() - 1);
                break;
            }
            used += bytes;
            out.push(d);
        }
        self.cursor = if hi.get() == u64::MAX {
            NodeId::new(1)
        } else {
            NodeId::new(hi.get() + 1)
        };
        (lo, hi, out)
    }

    /// Whether a holder at `theirs` needs a reset from `mine`: another start, or behind
    /// this copy's collection mark without having been reset past it.
    fn needs_reset(mine: &State, theirs: &Digest) -> bool {
        theirs.generation < mine.generation
            || (theirs.max_version < mine.gc_version && theirs.gc_version < mine.gc_version)
    }

    /// Whether a copy at `theirs` has something this copy (`mine`, if any) lacks.
    fn is_ahead(mine: Option<&State>, theirs: &Digest) -> bool {
        match mine {
            None => theirs.generation > 0,
            Some(m) => {
                theirs.generation > m.generation
                    || (theirs.generation == m.generation
                        && (theirs.max_version > m.max_version || Self::needs_reset_d(m, theirs)))
            }
        }
    }

    fn needs_reset_d(mine: &State, theirs: &Digest) -> bool {
        mine.max_version < theirs.gc_version && mine.gc_version < theirs.gc_version
    }

    /// Answers a digest covering `lo..=hi` from a member: the deltas it lacks, as many as
    /// fit in `budget` bytes, and the digests of the states it holds newer, for it to send
    /// back. `holds` says which owners may be held (members of the view not believed dead).
    pub(crate) fn answer(
        &mut self,
        lo: NodeId,
        hi: NodeId,
        theirs: &[Digest],
        budget: usize,
        holds: impl Fn(NodeId) -> bool,
    ) -> (Vec<Delta>, Vec<Digest>) {
        let mut wants = Vec::new();
        let mut asked: BTreeMap<NodeId, Digest> = BTreeMap::new();
        for d in theirs.iter().filter(|d| lo <= d.owner && d.owner <= hi) {
            if holds(d.owner) {
                self.learn(d.owner, d.generation, d.floor.max(d.gc_version));
            }
            let mine = self.current(d.owner);
            // A copy older than what is known of the owner is not asked for: it would
            // be refused.
            let stale = mine.is_none() && self.stale(d.owner, d.generation, d.max_version);
            if d.owner != self.me && holds(d.owner) && !stale && Self::is_ahead(mine, d) {
                wants.push(mine.map_or(
                    Digest {
                        owner: d.owner,
                        generation: 0,
                        max_version: 0,
                        gc_version: 0,
                        reset_from: 0,
                        floor: 0,
                    },
                    |m| self.digest_with_floor(d.owner, m),
                ));
            }
            asked.insert(d.owner, *d);
        }
        // Owners held in the range that the other did not name: it has none of them.
        if lo <= hi {
            for (&owner, _) in self.states.range(lo..=hi) {
                asked.entry(owner).or_insert(Digest {
                    owner,
                    generation: 0,
                    max_version: 0,
                    gc_version: 0,
                    reset_from: 0,
                    floor: 0,
                });
            }
        }
        let asked: Vec<Digest> = asked.into_values().collect();
        let wants_bytes: usize = wants.iter().map(encoded_len).sum();
        let deltas = self.deltas(&asked, budget.saturating_sub(wants_bytes));
        (deltas, wants)
    }

    /// The deltas for a holder at `theirs`, as many as fit in `budget` bytes. A holder
    /// that needs a reset is sent the state newest first; one taking a reset in parts is
    /// sent the next part, from a copy at least as new as the reset's first part, whatever
    /// the collection mark did since (a key deleted after the first part has its tombstone
    /// above it, carried by the deltas that follow the reset, or the mark passes the first
    /// part and the reset starts again). An owner of which not even one key fits is skipped.
    ///
    /// A copy that this member knows to be older than its owner's deletion floor is never
    /// sent as a reset: it may hold a deleted key (see [`KvStore::apply`]).
    pub(crate) fn deltas(&mut self, theirs: &[Digest], mut budget: usize) -> Vec<Delta> {
        let mut out = Vec::new();
        for d in theirs {
            if self.states.contains_key(&d.owner) {
                self.learn(d.owner, d.generation, d.floor.max(d.gc_version));
            }
            let Some(mine) = self.states.get(&d.owner) else {
                continue;
            };
            if d.generation > mine.generation {
                continue;
            }
            let fresh = Self::needs_reset(mine, d);
            let resume = !fresh && d.reset_from > 0;
            if resume && d.max_version > mine.max_version {
                // This copy is older than the reset's first part: it cannot go on with it.
                continue;
            }
            if !fresh && !resume && d.max_version >= mine.max_version {
                continue;
            }
            let reset = fresh || resume;
            if reset && self.stale(d.owner, mine.generation, mine.max_version) {
                continue;
            }
            // A copy that went past a key over this member's limits is whole only below it.
            let whole = match mine.skipped {
                0 => mine.max_version,
                skipped => skipped - 1,
            };
            if (reset && mine.skipped > 0) || (!reset && d.max_version >= whole) {
                continue;
            }
            let mut delta = Delta {
                owner: d.owner,
                generation: mine.generation,
                reset,
                gc_version: mine.gc_version,
                from: if reset { 0 } else { d.max_version },
                to: if resume { d.reset_from } else { whole },
                keys: Vec::new(),
                top: whole,
            };
            let mut used = encoded_len(&delta);
            if used > budget {
                break;
            }
            let versions: Box<dyn Iterator<Item = (&u64, &String)>> = if reset {
                Box::new(mine.by_version.range(..=delta.to).rev())
            } else {
                Box::new(mine.by_version.range(delta.from + 1..=delta.to))
            };
            let mut full = false;
            for (&version, key) in versions {
                let Some(v) = mine.keys.get(key) else {
                    continue;
                };
                let update = KeyUpdate {
                    key: key.clone(),
                    version,
                    value: v.value.clone(),
                };
                let bytes = encoded_len(&update) + 2;
                if used + bytes > budget {
                    if reset {
                        delta.from = version;
                    } else {
                        delta.to = version - 1;
                    }
                    full = true;
                    break;
                }
                used += bytes;
                delta.keys.push(update);
            }
            if delta.keys.is_empty() && full {
                // Not even one key fits: others may.
                continue;
            }
            budget -= used.min(budget);
            if fresh {
                self.stats.resets_sent += 1;
            }
            out.push(delta);
            if full {
                break;
            }
        }
        out
    }

    /// The copy of `owner`'s key-values the exchange works on: a reset being taken, or
    /// the copy held.
    fn current(&self, owner: NodeId) -> Option<&State> {
        self.staging.get(&owner).or_else(|| self.states.get(&owner))
    }

    /// Takes in a delta from another member; `holds` says whether the owner may be held.
    /// Hands up every change to a live key. A reset replacing a copy held is taken into a
    /// staging copy, which replaces the held one only once complete, so that a reset in
    /// parts hands up only what differs, never a live key as gone on the way.
    ///
    /// A reset (a new copy, or one replacing the copy held) older than the owner's newest
    /// deletion floor this member knows is refused (`stale_refused`), and a staging copy
    /// is swapped in only once it is at least as new as that floor: a holder cut off from
    /// the exchange while its owner deleted a key and collected the tombstone still holds
    /// the key, and a member taking its copy would bring the key back. The owner's own
    /// state is never older than its floor, so what the owner sends (`sender`) is not
    /// checked: a floor told too high by a broken member keeps this member from taking
    /// copies from other holders, never from the owner.
    pub(crate) fn apply(
        &mut self,
        now: Time,
        sender: NodeId,
        delta: Delta,
        holds: bool,
        out: &mut Vec<KeyChange>,
    ) {
        self.take_delta(now, sender, delta, holds, out);
        debug_assert_eq!(self.held_bytes, self.recount_bytes());
    }

    fn take_delta(
        &mut self,
        now: Time,
        sender: NodeId,
        delta: Delta,
        holds: bool,
        out: &mut Vec<KeyChange>,
    ) {
        let owner = delta.owner;
        if owner == self.me || !holds || delta.generation == 0 {
            return;
        }
        self.learn(owner, delta.generation, delta.gc_version);
        let stale = |kv: &KvStore, generation, version| {
            sender != owner && kv.stale(owner, generation, version)
        };
        let limits = self.limits;
        // What one copy may hold: the limit less what every other copy holds.
        let held = self.held_bytes();
        let room = |s: &State| {
            limits
                .held_bytes_max
                .saturating_sub(held.saturating_sub(s.bytes))
        };
        // What a staging copy may hold: as `room`, but the copy it will replace does not
        // count (held bytes pass the limit by at most that copy while the reset is taken;
        // counting it would keep a new start that fits from ever replacing the old one).
        let replacing = self.states.get(&owner).map_or(0, |s| s.bytes);
        let staging_room = |s: &State| {
            limits
                .held_bytes_max
                .saturating_sub(held.saturating_sub(s.bytes).saturating_sub(replacing))
        };
        if delta.reset {
            let resumes = self.staging.get(&owner).is_some_and(|s| {
                s.generation == delta.generation && s.reset_from > 0 && delta.to == s.reset_from
            });
            if !resumes {
                if delta.to != delta.top {
                    // A later part of a reset not begun here.
                    return;
                }
                let replace = match self.current(owner) {
                    None => true,
                    Some(h) => {
                        h.generation < delta.generation
                            || (h.generation == delta.generation
                                && h.max_version < delta.gc_version
                                && h.gc_version < delta.gc_version)
                    }
                };
                if !replace {
                    // A reset this copy does not need.
                    return;
                }
                if stale(self, delta.generation, delta.top) {
                    self.stats.stale_refused += 1;
                    return;
                }
                let mut fresh = State::new(delta.generation, delta.gc_version);
                fresh.max_version = delta.to;
                fresh.reset_from = delta.to;
                if let Some(old) = self.staging.insert(owner, fresh) {
                    self.held_bytes -= old.bytes;
                }
            }
            let Some(staged) = self.staging.get_mut(&owner) else {
                return;
            };
            staged.gc_version = staged.gc_version.max(delta.gc_version);
            let before = staged.bytes;
            staged.take_down(now, &delta, &limits, staging_room(staged), &mut self.stats);
            self.held_bytes = self.held_bytes - before + staged.bytes;
            let (generation, version) = (staged.generation, staged.max_version);
            if staged.reset_from == 0 && version >= delta.top && !stale(self, generation, version) {
                self.swap(owner, now, out);
            }
            return;
        }
        // The parts of a reset, taken at different times, make the owner's state at one
        // version once a delta brings the staging copy up to its sender's version.
        if let Some(staged) = self.staging.get_mut(&owner)
            && staged.reset_from == 0
            && staged.generation == delta.generation
        {
            if delta.from > staged.max_version {
                return;
            }
            let before = staged.bytes;
            staged.take(now, &delta, &limits, staging_room(staged), &mut self.stats);
            self.held_bytes = self.held_bytes - before + staged.bytes;
            let (generation, version) = (staged.generation, staged.max_version);
            if version >= delta.top && !stale(self, generation, version) {
                self.swap(owner, now, out);
            }
            return;
        }
        let Some(state) = self.states.get_mut(&owner) else {
            return;
        };
        if state.generation != delta.generation || delta.from > state.max_version {
            // A part that would leave a gap.
            return;
        }
        let generation = state.generation;
        let before = state.bytes;
        let taken = state.take(now, &delta, &limits, room(state), &mut self.stats);
        self.held_bytes = self.held_bytes - before + state.bytes;
        for (update, replaced, took) in taken {
            if !took {
                // A key over this member's limits replaced the version held: it is gone.
                if let Some(old) = replaced {
                    self.keys_held -= 1;
                    match old.value {
                        None => {
                            self.tombstones.remove(&(old.since, owner, old.version));
                        }
                        Some(_) => out.push(KeyChange {
                            owner,
                            generation,
                            key: update.key,
                            version: update.version,
                            value: None,
                            at: now,
                        }),
                    }
                }
                continue;
            }
            let was_live = match &replaced {
                None => {
                    self.keys_held += 1;
                    false
                }
                Some(old) if old.value.is_none() => {
                    self.tombstones.remove(&(old.since, owner, old.version));
                    false
                }
                Some(_) => true,
            };
            if update.value.is_none() {
                self.tombstones.insert((now, owner, update.version));
            }
            if update.value.is_some() || was_live {
                out.push(KeyChange {
                    owner,
                    generation,
                    key: update.key,
                    version: update.version,
                    value: update.value,
                    at: now,
                });
            }
        }
    }

    /// Replaces the copy of `owner`'s key-values with the complete staging copy, handing up
    /// only what differs: keys changed or deleted, and live keys the new copy lacks.
    fn swap(&mut self, owner: NodeId, now: Time, out: &mut Vec<KeyChange>) {
        let Some(new) = self.staging.remove(&owner) else {
            return;
        };
        let generation = new.generation;
        let old = self.states.insert(owner, new).unwrap_or_default();
        self.held_bytes -= old.bytes;
        if old.generation > 0 {
            self.stats.resets_taken += 1;
        }
        for v in old.keys.values() {
            self.keys_held -= 1;
            if v.value.is_none() {
                self.tombstones.remove(&(v.since, owner, v.version));
            }
        }
        let new = &self.states[&owner];
        for (key, v) in &new.keys {
            self.keys_held += 1;
            if v.value.is_none() {
                self.tombstones.insert((v.since, owner, v.version));
            }
            let before = old.keys.get(key);
            let unchanged = before.is_some_and(|b| b.version == v.version && b.value == v.value);
            let was_live = before.is_some_and(|b| b.value.is_some());
            if !unchanged && (v.value.is_some() || was_live) {
                out.push(KeyChange {
                    owner,
                    generation,
                    key: key.clone(),
                    version: v.version,
                    value: v.value.clone(),
                    at: now,
                });
            }
        }
        for (key, v) in &old.keys {
            if v.value.is_some() && !new.keys.contains_key(key) {
                out.push(KeyChange {
                    owner,
                    generation: old.generation,
                    key: key.clone(),
                    version: v.version,
                    value: None,
                    at: now,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> KvLimits {
        KvLimits {
            held_bytes_max: 1 << 20,
            keys_max: 16,
            key_bytes_max: 16,
            value_bytes_max: 16,
            grace_ms: 1_000,
            collect_without_mark: false,
            ignore_floors: false,
        }
    }

    fn update(key: &str, version: u64) -> KeyUpdate {
        KeyUpdate {
            key: key.into(),
            version,
            value: Some(b"v".to_vec()),
        }
    }

    fn reset(owner: NodeId, top: u64, keys: Vec<KeyUpdate>) -> Delta {
        Delta {
            owner,
            generation: 1,
            reset: true,
            gc_version: 0,
            from: 0,
            to: top,
            keys,
            top,
        }
    }

    fn zero(owner: NodeId) -> Digest {
        Digest {
            owner,
            generation: 0,
            max_version: 0,
            gc_version: 0,
            reset_from: 0,
            floor: 0,
        }
    }

    /// A member that knows the owner deleted a key at version 5 takes no copy up to
    /// version 3 (which may still hold that key), and takes one up to version 5.
    #[test]
    fn a_copy_older_than_the_known_deletion_floor_is_refused() {
        let (me, owner) = (NodeId::new(1), NodeId::new(2));
        let mut kv = KvStore::new(me, 1, limits());
        kv.learn(owner, 1, 5);
        let mut out = Vec::new();
        let stale = reset(owner, 3, vec![update("doomed", 3), update("a", 1)]);
        kv.apply(Time::ZERO, NodeId::new(9), stale, true, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(kv.digest_of(owner), None);
        assert_eq!(kv.stats.stale_refused, 1);
        let current = reset(owner, 5, vec![update("b", 4), update("a", 1)]);
        kv.apply(Time::ZERO, NodeId::new(9), current, true, &mut out);
        assert_eq!(kv.get(owner, "a"), Some(b"v".as_slice()));
        assert_eq!(kv.get(owner, "doomed"), None);
        assert_eq!(
            kv.digest_of(owner).map(|d| (d.max_version, d.floor)),
            Some((5, 5))
        );
        // A copy of an earlier start than the one known is refused too.
        let mut kv = KvStore::new(me, 1, limits());
        kv.learn(owner, 2, 0);
        kv.apply(
            Time::ZERO,
            NodeId::new(9),
            reset(owner, 3, vec![update("a", 3)]),
            true,
            &mut out,
        );
        assert_eq!(kv.digest_of(owner), None);
    }

    /// A floor told too high (a broken member's digest) keeps a member from taking the
    /// owner's key-values from other holders, never from the owner itself.
    #[test]
    fn a_floor_told_too_high_keeps_no_copy_from_coming_from_the_owner() {
        let (me, owner, other) = (NodeId::new(1), NodeId::new(2), NodeId::new(3));
        let mut kv = KvStore::new(me, 1, limits());
        kv.learn(owner, 1, u64::MAX);
        let mut out = Vec::new();
        kv.apply(
            Time::ZERO,
            other,
            reset(owner, 3, vec![update("a", 3)]),
            true,
            &mut out,
        );
        assert_eq!(kv.get(owner, "a"), None);
        kv.apply(
            Time::ZERO,
            owner,
            reset(owner, 3, vec![update("a", 3)]),
            true,
            &mut out,
        );
        assert_eq!(kv.get(owner, "a"), Some(b"v".as_slice()));
    }

    /// A reset in parts from another holder whose floor moves on meanwhile is swapped in
    /// only once deltas have brought it up to the new floor.
    #[test]
    fn a_staging_copy_below_a_floor_that_moved_waits_for_deltas() {
        let (me, owner, other) = (NodeId::new(1), NodeId::new(2), NodeId::new(3));
        let mut kv = KvStore::new(me, 1, limits());
        kv.learn(owner, 1, 5);
        let mut out = Vec::new();
        let mut first = reset(owner, 5, vec![update("e", 5)]);
        first.from = 4;
        kv.apply(Time::ZERO, other, first, true, &mut out);
        kv.learn(owner, 1, 7);
        let mut last = reset(owner, 5, vec![update("d", 4), update("a", 1)]);
        last.to = 4;
        kv.apply(Time::ZERO, other, last, true, &mut out);
        assert_eq!(kv.get(owner, "a"), None, "swapped in below the floor");
        let staged = kv.digest(1_000).2;
        assert_eq!(
            staged
                .iter()
                .find(|d| d.owner == owner)
                .map(|d| (d.max_version, d.reset_from)),
            Some((5, 0))
        );
        let on = Delta {
            owner,
            generation: 1,
            reset: false,
            gc_version: 0,
            from: 5,
            to: 7,
            keys: vec![update("f", 6), update("g", 7)],
            top: 7,
        };
        kv.apply(Time::ZERO, other, on, true, &mut out);
        assert_eq!(kv.get(owner, "a"), Some(b"v".as_slice()));
        assert_eq!(kv.get(owner, "g"), Some(b"v".as_slice()));
    }

    /// A holder that learns its copy is older than the owner's deletion floor hands it out
    /// to no member holding none, though it still answers with plain deltas, which carry
    /// every change above the asker's version.
    #[test]
    fn a_holder_hands_out_no_copy_older_than_the_known_deletion_floor() {
        let (me, owner) = (NodeId::new(1), NodeId::new(2));
        let mut kv = KvStore::new(me, 1, limits());
        let mut out = Vec::new();
        kv.apply(
            Time::ZERO,
            NodeId::new(9),
            reset(owner, 3, vec![update("doomed", 3), update("a", 1)]),
            true,
            &mut out,
        );
        assert_eq!(kv.get(owner, "doomed"), Some(b"v".as_slice()));
        assert_eq!(
            kv.deltas(&[zero(owner)], 1_000).len(),
            1,
            "handed out while current"
        );
        kv.learn(owner, 1, 5);
        assert!(
            kv.deltas(&[zero(owner)], 1_000).is_empty(),
            "a stale copy handed out"
        );
        let behind = Digest {
            generation: 1,
            max_version: 1,
            ..zero(owner)
        };
        let plain = kv.deltas(&[behind], 1_000);
        assert_eq!(plain.len(), 1);
        assert!(!plain[0].reset);
        assert_eq!(plain[0].keys, vec![update("doomed", 3)]);
    }

    /// review9: a copy of an owner's new start (a restart or a renewal seen while the old
    /// start's copy is still held) is taken into a staging copy. When the room given to it
    /// counted the old copy it is to replace, with `held_bytes_max` above either copy but
    /// below both, the new start's copy fitted the limit and yet was never swapped in: the
    /// reset stopped below its first key over the room every round, and the member kept
    /// handing up the old start's values for good (no collection nor owner gone made room).
    #[test]
    fn a_new_start_that_fits_the_held_bytes_limit_replaces_the_old_one() {
        let (me, owner) = (NodeId::new(1), NodeId::new(2));
        // One largest key and value (2 bytes) fits, as the builder requires.
        let small = KvLimits {
            held_bytes_max: 6,
            key_bytes_max: 1,
            value_bytes_max: 1,
            ..limits()
        };
        let mut kv = KvStore::new(me, 1, small);
        let mut out = Vec::new();
        // The old start's copy: "a" and "b", 4 bytes of the 6.
        kv.apply(
            Time::ZERO,
            owner,
            reset(owner, 2, vec![update("b", 2), update("a", 1)]),
            true,
            &mut out,
        );
        assert_eq!(kv.get(owner, "a"), Some(b"v".as_slice()));
        assert_eq!(kv.held_bytes(), 4);
        // The owner starts again (generation 2) and sets "c" and "d": 4 bytes, within 6.
        let mut theirs = KvStore::new(owner, 2, limits());
        for key in ["c", "d"] {
            theirs
                .write(Time::ZERO, key.into(), Some(b"v".to_vec()))
                .expect("within the limits");
        }
        // Many rounds of the exchange with the owner itself.
        for _ in 0..50 {
            let (lo, hi, digests) = kv.digest(1_000);
            let (deltas, _) = theirs.answer(lo, hi, &digests, 1_000, |_| true);
            for delta in deltas {
                kv.apply(Time::ZERO, owner, delta, true, &mut out);
            }
        }
        assert!(kv.held_bytes() <= 6);
        assert_eq!(
            kv.digest_of(owner).map(|d| d.generation),
            Some(2),
            "the new start's copy (4 bytes, limit 6) never replaced the old one: \
             the member still hands up a={:?}, c={:?}, stats {:?}",
            kv.get(owner, "a"),
            kv.get(owner, "c"),
            kv.stats,
        );
        assert_eq!(kv.get(owner, "a"), None);
        assert_eq!(kv.get(owner, "c"), Some(b"v".as_slice()));
    }

    /// The bytes counted for a copy follow every way a key enters or leaves it: taken,
    /// replaced, deleted, gone past for being over the limits, collected, and the copy
    /// swapped in or dropped.
    #[test]
    fn the_bytes_held_follow_every_change_to_a_copy() {
        let (me, owner) = (NodeId::new(1), NodeId::new(2));
        let mut kv = KvStore::new(me, 1, limits());
        let recount = |kv: &KvStore| -> usize {
            kv.states
                .iter()
                .filter(|&(&o, _)| o != me)
                .chain(kv.staging.iter())
                .flat_map(|(_, s)| s.keys.iter())
                .map(|(k, v)| entry_bytes(k, v.value.as_ref()))
                .sum()
        };
        let mut out = Vec::new();
        let value = |key: &str, version, len: usize| KeyUpdate {
            key: key.into(),
            version,
            value: Some(vec![1; len]),
        };
        kv.apply(
            Time::ZERO,
            NodeId::new(9),
            reset(owner, 2, vec![value("b", 2, 5), value("a", 1, 3)]),
            true,
            &mut out,
        );
        assert_eq!(kv.held_bytes(), 2 + 5 + 3);
        let delta = |from, to, keys| Delta {
            owner,
            generation: 1,
            reset: false,
            gc_version: 0,
            from,
            to,
            keys,
            top: to,
        };
        let gone = KeyUpdate {
            key: "b".into(),
            version: 4,
            value: None,
        };
        // "a" grows, "b" is deleted, "c" is over the value limit (16) and gone past.
        let changes = vec![
            value("a", 3, 10),
            gone,
            value("c", 5, 17),
            value("a", 6, 17),
        ];
        kv.apply(
            Time::ZERO,
            NodeId::new(9),
            delta(2, 6, changes),
            true,
            &mut out,
        );
        assert_eq!(kv.held_bytes(), recount(&kv));
        assert_eq!(
            kv.held_bytes(),
            1,
            "a dropped for its new value, b a tombstone"
        );
        kv.collect(Time::ZERO + Duration::from_millis(5_000));
        assert_eq!(kv.held_bytes(), 0);
        assert_eq!(kv.held_bytes(), recount(&kv));
        kv.apply(
            Time::ZERO,
            NodeId::new(9),
            delta(6, 7, vec![value("d", 7, 4)]),
            true,
            &mut out,
        );
        assert_eq!(kv.held_bytes(), 5);
        kv.drop_owner(owner, Time::ZERO, &mut out);
        assert_eq!(kv.held_bytes(), 0);
    }

    /// The first part of a reset of an owner of which nothing is held yet: staged, not
    /// readable, and advertised; dropping every copy drops it too.
    #[test]
    fn dropping_every_copy_drops_a_reset_under_way_of_an_owner_not_held_yet() {
        let (me, owner) = (NodeId::new(1), NodeId::new(2));
        let mut kv = KvStore::new(me, 1, limits());
        let part = Delta {
            owner,
            generation: 1,
            reset: true,
            gc_version: 0,
            from: 3,
            to: 5,
            keys: vec![update("e", 5), update("d", 4)],
            top: 5,
        };
        let mut out = Vec::new();
        kv.apply(Time::ZERO, NodeId::new(9), part, true, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(kv.get(owner, "e"), None, "a staged part is not readable");
        let staged = kv.digest(1_000).2;
        assert_eq!(
            staged
                .iter()
                .find(|d| d.owner == owner)
                .map(|d| d.reset_from),
            Some(3)
        );
        kv.drop_others(Time::ZERO, &mut out);
        let (_, _, after) = kv.digest(1_000);
        assert!(after.iter().all(|d| d.owner != owner), "{after:?}");
    }
}
