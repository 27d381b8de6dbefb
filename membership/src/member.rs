//! The `Member` state machine: SWIM failure detection with Lifeguard, gossip piggybacked on
//! probes, push-pull sync, on the node contract.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use synod_node::{
    Effect, EffectOf, Input, InputOf, NodeId, PersistToken, Protocol, RequestId, Rng, Time,
};

use crate::config::MemberConfig;
use crate::kv::{Digest, KeyChange, KvError, KvStore};
use crate::wire::{
    Body, MemberState, Message, UPDATE_BYTES_MAX, Update, beyond_reach, update_bytes, view_hash,
};

/// What a [`Member`] makes durable: the generation of its current start, written once per
/// start before it sends anything, and again should the member have to take a new
/// generation while it runs (see [`MemberStats::renewals`]). The driver keeps the largest
/// written and hands it to the next [`Member::start`]. Everything else a member knows is
/// volatile and relearnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberWrite {
    /// The generation this start uses.
    pub generation: u64,
}

/// What a client may ask a [`Member`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemberRequest {
    /// The member's view: every member it knows, itself included.
    Members,
    /// Leave the cluster for good (this start): tell every live member, then take no
    /// further part. The others mark it dead at once, without a suspicion, and forget it
    /// after `dead_reap_ms`; a later start (a new generation) joins again.
    Leave,
    /// Set one of this member's own keys, which every other live member comes to hold
    /// (answered with [`MemberResponse::Written`], or [`MemberResponse::Refused`] past a
    /// limit). Key-values belong to this start: the next start begins with none.
    Set {
        /// The key (1 to `key_bytes_max` bytes).
        key: String,
        /// The value (at most `value_bytes_max` bytes).
        value: Vec<u8>,
    },
    /// Delete one of this member's own keys: a tombstone spreads as a value does, and is
    /// collected after the grace period.
    Delete {
        /// The key.
        key: String,
    },
}

/// The answer to a [`MemberRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemberResponse {
    /// The view, ordered by id.
    Members(Vec<MemberInfo>),
    /// The member has told the others it leaves, and takes no further part.
    Left,
    /// A `Set` or `Delete` took effect at this version of the member's key-values (a
    /// `Delete` of a key that is not set changes nothing and names the current version).
    Written {
        /// The version.
        version: u64,
    },
    /// A `Set` or `Delete` was refused; nothing changed.
    Refused(KvError),
}

/// One member as another sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemberInfo {
    /// The member.
    pub id: NodeId,
    /// Its start.
    pub generation: u64,
    /// Its liveness version within that start.
    pub incarnation: u64,
    /// What is believed of it.
    pub state: MemberState,
}

/// A change in a member's view, handed to the application with `Effect::Apply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemberEvent {
    /// The member that changed.
    pub id: NodeId,
    /// Its generation after the change.
    pub generation: u64,
    /// Its new state; `None` when a dead member is forgotten.
    pub state: Option<MemberState>,
    /// When this member learnt it (its own `now`).
    pub at: Time,
}

/// What a [`Member`] hands to the application with `Effect::Apply`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ViewChange {
    /// A member's state changed in this member's view.
    Member(MemberEvent),
    /// The coordinator (the emergent leader) is now `id` in this member's view: a member
    /// that coordinates learns it here, and so does every member of a group that merged
    /// into another after a partition.
    Coordinator {
        /// The new coordinator.
        id: NodeId,
        /// When this member learnt it (its own `now`).
        at: Time,
    },
    /// This member's group met another group, which had formed apart from it (during a
    /// partition, or from members that started apart), and the two merged: the smaller
    /// into the larger, a tie into the group whose coordinator joined first. Handed up
    /// once on each side, to every member that learns of the merge, so that an application
    /// can reconcile what the two groups did apart.
    Merged {
        /// The coordinator of the group this member was in.
        group: NodeId,
        /// The coordinator of the other group.
        other: NodeId,
        /// The coordinator of the merged group: `group` if this member's group won (it
        /// keeps its coordinator), `other` if it merged into the other.
        winner: NodeId,
        /// When this member learnt it (its own `now`).
        at: Time,
    },
    /// Another member's key changed in this member's copy: set, deleted, or gone with the
    /// copy (the owner declared dead, forgotten or restarted, or the copy reset).
    Key(KeyChange),
}

/// Counters of what a member did, for tests and figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberStats {
    /// Messages sent.
    pub messages_sent: u64,
    /// Bytes of the messages sent, encoded.
    pub bytes_sent: u64,
    /// Probes that got no acknowledgement, direct or indirect, in their period.
    pub probes_failed: u64,
    /// Times this member refuted a suspicion or death of itself.
    pub refutations: u64,
    /// Times this member took a new generation while it ran, because a peer said something
    /// of it that no incarnation of its current generation could beat: a suspicion at the
    /// largest incarnation, or anything at a generation it never had (a lie or damage,
    /// since each start persists its generation before using it).
    pub renewals: u64,
    /// Updates about new members dropped because the view was full.
    pub members_full: u64,
    /// Messages dropped: from this member's own id, before it was ready, or from an
    /// earlier start of their sender.
    pub messages_dropped: u64,
    /// Times this member's group merged into another ([`ViewChange::Merged`] with
    /// another winner).
    pub merges_lost: u64,
    /// Claims ignored because their generation was further ahead of the one this member
    /// knows (for itself, its own) than [`GENERATION_STEP_MAX`](crate::GENERATION_STEP_MAX)
    /// starts could take it (unless their member said it of itself), and entries replaced
    /// because their member's own message showed such a claim had been taken in before this
    /// member knew better.
    pub generations_refused: u64,
    /// Seeds this start never heard from that it declared dead after
    /// [`unseen_seed_probes`](crate::MemberConfigBuilder::unseen_seed_probes) unanswered
    /// pings.
    pub seeds_unseen_dead: u64,
    /// Key-value resets sent: whole states sent to members behind a collection mark, on
    /// another start of the owner, or holding none of it.
    pub kv_resets_sent: u64,
    /// Copies of key-values this member replaced with a reset.
    pub kv_resets_taken: u64,
    /// Keys of others refused: because the key or its value is over this member's own
    /// limits (the copy goes on past it without it, dropping an older value of the key,
    /// and is handed out to no one from that version on), or because their owner's copy
    /// held `keys_max` keys (the copy stops below it until there is room).
    pub kv_refused: u64,
    /// Tombstones collected after the grace period.
    pub kv_collected: u64,
    /// Copies of others' key-values refused because they were older than the owner's
    /// deletion floor known here (they may hold a deleted key): see
    /// [`MemberConfig`](crate::MemberConfig) and the crate's guide to key-values.
    pub kv_stale_refused: u64,
    /// Keys of others not taken because they would take the bytes held of others'
    /// key-values past `held_bytes_max` (the copy stops below the key until there is
    /// room; see [`MemberConfigBuilder::held_bytes_max`](crate::MemberConfigBuilder::held_bytes_max)).
    pub kv_over_bytes: u64,
    /// Times this member dropped every copy of others' key-values because it had been
    /// paused for half the tombstone grace or more.
    pub kv_pauses: u64,
    /// Push-pulls offered to this member ([`Body::SyncOffer`]) that it answered with
    /// nothing, its view hashing the same as the offerer's.
    pub syncs_matched: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    generation: u64,
    incarnation: u64,
    state: MemberState,
    joined: u64,
    /// Its group, its count of it, and the group it merged from ([`Update::group`]).
    group: NodeId,
    group_size: u32,
    merged_from: Option<NodeId>,
    /// When this member's view of it last changed.
    changed_at: Time,
    /// With `state == Suspect`: the members that suspect it, the first included.
    confirmers: BTreeSet<NodeId>,
}

impl Entry {
    fn precedence(&self) -> (u64, u64, MemberState) {
        (self.generation, self.incarnation, self.state)
    }
}

/// What the view is searched by on every input, kept beside it so that no input costs a
/// pass over every member: the dead count, the suspects (for their timeouts), the dead by
/// when they died (for reaping and eviction), and the live by join order (the coordinator).
///
/// For groups, over the members not dead that have a join stamp: how many are in each
/// group, each group's members by age (for a succession), the members coordinating a group
/// of their own and believed alive (rival coordinators after a partition), and the members
/// that came from a merged group, by the group they left and by the group they joined.
#[derive(Debug, Default, PartialEq, Eq)]
struct Index {
    dead: usize,
    suspects: BTreeSet<NodeId>,
    tombstones: BTreeSet<(Time, NodeId)>,
    ranks: BTreeSet<((u64, NodeId), NodeId)>,
    groups: BTreeMap<NodeId, u32>,
    by_group: BTreeSet<(NodeId, (u64, NodeId), NodeId)>,
    claimants: BTreeSet<NodeId>,
    merged_out: BTreeSet<(NodeId, NodeId)>,
    merged_in: BTreeSet<(NodeId, NodeId, NodeId)>,
}

/// What a group claims in a merge: its size as its coordinator said, and the coordinator's
/// age ([`rank`]).
type Claim = (u32, (u64, NodeId));

/// The order of age among members: by join stamp, one not stamped yet counting as the
/// youngest, then by id.
fn rank(joined: u64, id: NodeId) -> (u64, NodeId) {
    (if joined == 0 { u64::MAX } else { joined }, id)
}

impl Index {
    fn add(&mut self, id: NodeId, e: &Entry) {
        match e.state {
            MemberState::Alive => {}
            MemberState::Suspect => {
                self.suspects.insert(id);
            }
            MemberState::Dead => {
                self.dead += 1;
                self.tombstones.insert((e.changed_at, id));
                return;
            }
        }
        self.ranks.insert((rank(e.joined, id), id));
        if e.joined != 0 {
            *self.groups.entry(e.group).or_default() += 1;
            self.by_group.insert((e.group, rank(e.joined, id), id));
            if e.group == id && e.state == MemberState::Alive {
                self.claimants.insert(id);
            }
            if let Some(from) = e.merged_from {
                self.merged_out.insert((from, id));
                self.merged_in.insert((e.group, from, id));
            }
        }
    }

    fn remove(&mut self, id: NodeId, e: &Entry) {
        match e.state {
            MemberState::Alive => {}
            MemberState::Suspect => {
                self.suspects.remove(&id);
            }
            MemberState::Dead => {
                self.dead -= 1;
                self.tombstones.remove(&(e.changed_at, id));
                return;
            }
        }
        self.ranks.remove(&(rank(e.joined, id), id));
        if e.joined != 0 {
            if let Some(count) = self.groups.get_mut(&e.group) {
                *count -= 1;
                if *count == 0 {
                    self.groups.remove(&e.group);
                }
            }
            self.by_group.remove(&(e.group, rank(e.joined, id), id));
            self.claimants.remove(&id);
            if let Some(from) = e.merged_from {
                self.merged_out.remove(&(from, id));
                self.merged_in.remove(&(e.group, from, id));
            }
        }
    }
}

/// The updates waiting to be gossiped, one per member, each with how many times it was
/// sent, ordered by that count so that a message takes the least sent first without
/// sorting the queue.
#[derive(Debug, Default)]
struct GossipQueue {
    entries: BTreeMap<NodeId, (Update, u32)>,
    by_transmits: BTreeSet<(u32, NodeId)>,
}

impl GossipQueue {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn remove(&mut self, id: NodeId) {
        if let Some((_, transmits)) = self.entries.remove(&id) {
            self.by_transmits.remove(&(transmits, id));
        }
    }

    /// Queues `update`, replacing any earlier one about the same member; when `max` are
    /// queued, the update sent most often (it has done the most of its work) makes room.
    fn push(&mut self, update: Update, max: usize) {
        self.remove(update.id);
        if self.entries.len() >= max
            && let Some(&(_, worst)) = self.by_transmits.last()
        {
            self.remove(worst);
        }
        self.entries.insert(update.id, (update, 0));
        self.by_transmits.insert((0, update.id));
    }

    /// Takes the least sent updates, in order, while they fit in `budget` bytes, counting
    /// a send for each and dropping those sent `limit` times.
    fn take(&mut self, mut budget: usize, limit: u32, out: &mut Vec<Update>) {
        let mut taken = Vec::new();
        for &(transmits, id) in &self.by_transmits {
            let Some(&(update, _)) = self.entries.get(&id) else {
                continue;
            };
            let bytes = update_bytes(&update);
            if bytes > budget {
                // The message is full: stop rather than look through the whole queue for
                // a smaller update.
                break;
            }
            budget -= bytes;
            out.push(update);
            taken.push((transmits, id));
        }
        for (transmits, id) in taken {
            self.by_transmits.remove(&(transmits, id));
            if transmits + 1 >= limit {
                self.entries.remove(&id);
            } else {
                self.by_transmits.insert((transmits + 1, id));
                if let Some(entry) = self.entries.get_mut(&id) {
                    entry.1 = transmits + 1;
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Probe {
    target: NodeId,
    generation: u64,
    seq: u64,
    /// When to ask others to probe indirectly, if no ack came.
    indirect_at: Time,
    indirect_sent: bool,
    acked: bool,
    nacks_expected: u32,
    nacks: u32,
}

#[derive(Debug, Clone, Copy)]
struct Relay {
    origin: NodeId,
    origin_seq: u64,
    target: NodeId,
    nack_at: Time,
}

/// A cluster member: SWIM's failure detector with Lifeguard's refinements, infection-style
/// gossip piggybacked on its probes, and a periodic push-pull sync, as a state machine on
/// `synod-node`'s contract ([`Protocol`]).
///
/// See the crate documentation for the protocol and a driven example. The calls:
///
/// 1. [`Member::start`] with the configuration and the generation the last start made
///    durable (0 if none). The first effect is the `Persist` of the new generation; the
///    member sends nothing until `Input::Persisted` acknowledges it.
/// 2. `handle` messages, `Wake`s and [`MemberRequest`]s with `now`; drain `poll`: sends,
///    replies, one `WakeAt`, and a [`MemberEvent`] `Apply` for every change of its view.
#[derive(Debug)]
pub struct Member {
    config: MemberConfig,
    generation: u64,
    incarnation: u64,
    joined: u64,
    /// The coordinator of the group this member is in (itself until it has a join stamp).
    group: NodeId,
    /// The group this member's group merged from, if it did since it joined it.
    merged_from: Option<NodeId>,
    /// The group size this member last gossiped while coordinating.
    announced: u32,
    /// The merges this member handed up, as `(group, other, winner)`, and when.
    merges_told: BTreeMap<(NodeId, NodeId, NodeId), Time>,
    coordinator: Option<NodeId>,
    persist: PersistToken,
    ready: bool,
    /// A new `(generation, incarnation)` whose generation is being made durable while the
    /// member runs (see `renew`).
    renewing: Option<(u64, u64)>,
    /// Left the cluster: inputs other than requests are dropped, nothing is sent.
    left: bool,
    rng: Rng,
    members: BTreeMap<NodeId, Entry>,
    index: Index,
    gossip: GossipQueue,
    awareness: u32,
    probe_order: Vec<NodeId>,
    probe_cursor: usize,
    next_probe_at: Time,
    probe: Option<Probe>,
    seq: u64,
    relays: BTreeMap<u64, Relay>,
    next_sync_at: Time,
    next_gossip_at: Time,
    sync_cursor: usize,
    /// The seeds this start has not heard from yet, each with the pings sent to it
    /// unanswered (past `unseen_seed_probes`: declared dead, no more pings); a seed leaves
    /// once it is in the view.
    unseen: BTreeMap<NodeId, u32>,
    /// The key-values this member owns and its copies of others'.
    kv: KvStore,
    next_kv_at: Time,
    /// The time of the last input, to tell a pause.
    last_input_at: Option<Time>,
    effects: VecDeque<EffectOf<Member>>,
    wake_at: Option<Time>,
    /// Inputs handled (for the debug builds' index check).
    inputs: u64,
    stats: MemberStats,
}

impl Member {
    /// A new start of the member configured by `config`, after a start that made
    /// `last_generation` durable (0 if it never started). Its first effect asks to persist
    /// `last_generation + 1`; until that is acknowledged it sends nothing, and drops every
    /// message and wake-up.
    ///
    /// A [`MemberRequest`] is answered at once, before the acknowledgement as after: the
    /// view then holds only this member, and a `Leave` only stops it. That is safe because
    /// an answer goes to the local client and never to a peer, so no other member can act
    /// on a generation that a crash before the persist would let the next start reuse;
    /// [`Member::is_ready`] tells a client whether the generation it sees is durable.
    #[must_use]
    pub fn start(config: MemberConfig, last_generation: u64) -> Member {
        let generation = last_generation.saturating_add(1);
        let id = config.id;
        let unseen = config.seeds.iter().map(|&s| (s, 0)).collect();
        let persist = PersistToken::default().next();
        let mut effects = VecDeque::new();
        effects.push_back(Effect::Persist {
            token: persist,
            write: MemberWrite { generation },
        });
        Member {
            rng: Rng::new(config.rng_seed ^ generation.rotate_left(32)),
            kv: KvStore::new(id, generation, config.kv_limits()),
            next_kv_at: Time::MAX,
            last_input_at: None,
            config,
            generation,
            incarnation: 0,
            joined: 0,
            group: id,
            merged_from: None,
            announced: 0,
            merges_told: BTreeMap::new(),
            coordinator: None,
            persist,
            ready: false,
            renewing: None,
            left: false,
            members: BTreeMap::new(),
            index: Index::default(),
            gossip: GossipQueue::default(),
            awareness: 0,
            probe_order: Vec::new(),
            probe_cursor: 0,
            next_probe_at: Time::MAX,
            probe: None,
            seq: 0,
            relays: BTreeMap::new(),
            next_sync_at: Time::MAX,
            next_gossip_at: Time::MAX,
            sync_cursor: 0,
            unseen,
            effects,
            wake_at: None,
            inputs: 0,
            stats: MemberStats::default(),
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &MemberConfig {
        &self.config
    }

    /// This start's generation.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// This member's incarnation: raised each time it refutes a suspicion of itself.
    #[must_use]
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Whether the generation is durable and the member takes part.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Lifeguard's local health score, from 0 (healthy) to `awareness_max - 1`: probe
    /// interval and timeout are multiplied by one more than it.
    #[must_use]
    pub fn awareness(&self) -> u32 {
        self.awareness
    }

    /// What this member believes of `id` (itself: alive).
    #[must_use]
    pub fn state_of(&self, id: NodeId) -> Option<MemberState> {
        if id == self.config.id {
            return Some(MemberState::Alive);
        }
        self.members.get(&id).map(|e| e.state)
    }

    /// The view: every member known, itself included, ordered by id.
    #[must_use]
    pub fn members(&self) -> Vec<MemberInfo> {
        let mut out: Vec<MemberInfo> = self
            .members
            .iter()
            .map(|(&id, e)| MemberInfo {
                id,
                generation: e.generation,
                incarnation: e.incarnation,
                state: e.state,
            })
            .collect();
        let me = MemberInfo {
            id: self.config.id,
            generation: self.generation,
            incarnation: self.incarnation,
            state: MemberState::Alive,
        };
        let at = out.partition_point(|m| m.id < me.id);
        out.insert(at, me);
        out
    }

    /// The members believed alive or suspected (not dead), itself included, ordered by id.
    #[must_use]
    pub fn live_members(&self) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, e)| e.state != MemberState::Dead)
            .map(|(&id, _)| id)
            .collect();
        let at = out.partition_point(|&id| id < self.config.id);
        out.insert(at, self.config.id);
        out
    }

    /// This start's join stamp (0 until it has set it; see [`Update::joined`]).
    #[must_use]
    pub fn joined(&self) -> u64 {
        self.joined
    }

    /// The coordinator in this member's view: the coordinator of its group (see the crate
    /// documentation's emergent leader). Every member computes it from its own view,
    /// without an election: a group's coordinator is its oldest live member by
    /// `(joined, id)` when it forms, and is succeeded by the next oldest of the group when
    /// it is declared dead; a group that merges into another takes the other's.
    ///
    /// Before this member has a join stamp, it is the oldest live member it knows by
    /// `(joined, id)`, one that has not set its stamp yet counting as the youngest.
    #[must_use]
    pub fn coordinator(&self) -> NodeId {
        if self.joined != 0 {
            return self.group;
        }
        let own = rank(self.joined, self.config.id);
        match self.index.ranks.first() {
            Some(&(oldest, id)) if oldest < own => id,
            _ => self.config.id,
        }
    }

    /// How many entries the view holds (dead tombstones included, itself not).
    #[must_use]
    pub fn known(&self) -> usize {
        self.members.len()
    }

    /// How many gossip updates wait to be sent.
    #[must_use]
    pub fn gossip_queued(&self) -> usize {
        self.gossip.len()
    }

    /// How many indirect probes this member is relaying.
    #[must_use]
    pub fn relays(&self) -> usize {
        self.relays.len()
    }

    /// What this member did so far.
    #[must_use]
    pub fn stats(&self) -> MemberStats {
        let kv = self.kv.stats;
        MemberStats {
            kv_resets_sent: kv.resets_sent,
            kv_resets_taken: kv.resets_taken,
            kv_refused: kv.refused,
            kv_collected: kv.collected,
            kv_stale_refused: kv.stale_refused,
            kv_over_bytes: kv.over_bytes,
            ..self.stats
        }
    }

    // ---- key-values ------------------------------------------------------------------

    /// The value of `owner`'s `key` in this member's copy (its own, for itself); `None` if
    /// the key is not set, deleted, or no copy of `owner`'s key-values is held.
    #[must_use]
    pub fn get(&self, owner: NodeId, key: &str) -> Option<&[u8]> {
        self.kv.get(owner, key)
    }

    /// `owner`'s keys and values in this member's copy, by key (deleted keys left out).
    pub fn key_values(&self, owner: NodeId) -> impl Iterator<Item = (&str, &[u8])> {
        self.kv.iter(owner)
    }

    /// The members whose key-values this member holds a copy of, itself included, by id.
    #[must_use]
    pub fn key_value_owners(&self) -> Vec<NodeId> {
        self.kv.owners().collect()
    }

    /// What this member holds of `owner`'s key-values: the owner's start, the version up
    /// to which it holds every change, and its collection mark.
    #[must_use]
    pub fn key_value_digest(&self, owner: NodeId) -> Option<Digest> {
        self.kv.digest_of(owner)
    }

    /// Keys held over every copy, its own included (deleted ones not yet collected too).
    #[must_use]
    pub fn keys_held(&self) -> usize {
        self.kv.keys_held()
    }

    /// The bytes of other members' key-values this member holds (keys and values, copies
    /// being taken included): at most
    /// [`MemberConfig::held_bytes_max`](crate::MemberConfig::held_bytes_max).
    #[must_use]
    pub fn held_bytes(&self) -> usize {
        self.kv.held_bytes()
    }

    // ---- time ------------------------------------------------------------------------

    fn scaled(&self, ms: u64) -> Duration {
        let factor = if self.config.lifeguard {
            u64::from(self.awareness) + 1
        } else {
            1
        };
        Duration::from_millis(ms.saturating_mul(factor))
    }

    /// Members not believed dead, this one included.
    fn live_count(&self) -> usize {
        1 + self.members.len() - self.index.dead
    }

    /// How many independent confirmations (beyond the first suspecter) Lifeguard waits
    /// for: the suspicion timeout shrinks to its minimum at this many, so a suspect keeps
    /// at most one more confirmer than this.
    fn confirmations_max(&self) -> usize {
        self.config.suspicion_mult.saturating_sub(2) as usize
    }

    /// Whether `by` may count as a suspecter of `suspect`: this member, or another member
    /// of its view not believed dead. Anyone else is a name a peer made up, which must
    /// neither take memory nor shorten a suspicion.
    fn may_confirm(&self, suspect: NodeId, by: NodeId) -> bool {
        by != suspect
            && (by == self.config.id
                || self
                    .members
                    .get(&by)
                    .is_some_and(|e| e.state != MemberState::Dead))
    }

    /// How long a suspicion with `confirmations` independent confirmations (beyond the
    /// first suspecter) lasts before the member is declared dead.
    fn suspicion_timeout(&self, live: usize, confirmations: usize) -> Duration {
        let n = live as f64;
        let periods = f64::from(self.config.suspicion_mult) * n.log10().max(1.0);
        let min = self.config.probe_interval_ms as f64 * periods;
        if !self.config.lifeguard {
            return Duration::from_millis(min as u64);
        }
        let max = min * f64::from(self.config.suspicion_max_mult);
        let mut k = self.confirmations_max();
        if live.saturating_sub(2) < k {
            k = 0;
        }
        if k == 0 {
            return Duration::from_millis(min as u64);
        }
        let fraction = ((confirmations + 1) as f64).ln() / ((k + 1) as f64).ln();
        let timeout = (max - (max - min) * fraction).max(min);
        Duration::from_millis(timeout as u64)
    }

    /// When the suspicion of `entry` times out, with `live` members not believed dead.
    fn suspicion_deadline(&self, live: usize, entry: &Entry) -> Time {
        let confirmations = entry.confirmers.len().saturating_sub(1);
        entry.changed_at + self.suspicion_timeout(live, confirmations)
    }

    fn retransmit_limit(&self) -> u32 {
        let n = self.live_count() as f64;
        let factor = (n + 1.0).log10().ceil().max(1.0) as u32;
        self.config.retransmit_mult.saturating_mul(factor)
    }

    fn adjust_awareness(&mut self, delta: i64) {
        if !self.config.lifeguard {
            return;
        }
        let max = i64::from(self.config.awareness_max) - 1;
        let next = (i64::from(self.awareness) + delta).clamp(0, max);
        self.awareness = u32::try_from(next).unwrap_or(0);
    }

    // ---- sending ---------------------------------------------------------------------

    fn own_update(&self) -> Update {
        Update {
            id: self.config.id,
            generation: self.generation,
            incarnation: self.incarnation,
            state: MemberState::Alive,
            joined: self.joined,
            by: self.config.id,
            group: self.group,
            group_size: self.group_size(),
            merged_from: self.merged_from,
        }
    }

    /// The members of this member's group in its view, itself included.
    fn group_size(&self) -> u32 {
        if self.joined == 0 {
            return 1;
        }
        let others = self.index.groups.get(&self.group).copied().unwrap_or(0);
        others.saturating_add(1)
    }

    fn update_of(&self, id: NodeId, by: NodeId) -> Option<Update> {
        let e = self.members.get(&id)?;
        Some(Update {
            id,
            generation: e.generation,
            incarnation: e.incarnation,
            state: e.state,
            joined: e.joined,
            by: if e.state == MemberState::Suspect {
                e.confirmers.iter().next().copied().unwrap_or(by)
            } else {
                by
            },
            group: e.group,
            group_size: e.group_size,
            merged_from: e.merged_from,
        })
    }

    fn header(&self, body: Body) -> Message {
        Message {
            generation: self.generation,
            incarnation: self.incarnation,
            joined: self.joined,
            group: self.group,
            group_size: self.group_size(),
            merged_from: self.merged_from,
            kv_floor: self.kv.own_floor(),
            body,
            updates: Vec::new(),
        }
    }

    /// Sends `body` to `to` with as much gossip as fits in the message limit, least sent
    /// first. With Lifeguard, a message to a member this one suspects or believes dead
    /// starts with that belief, so that the member can refute it (the buddy system).
    fn send(&mut self, to: NodeId, body: Body) {
        let mut message = self.header(body);
        let mut budget = self
            .config
            .message_bytes_max
            .saturating_sub(message.encode().len() + 4);
        if let Some(e) = self.members.get(&to)
            && e.state != MemberState::Alive
            && self.config.lifeguard
            && let Some(update) = self.update_of(to, self.config.id)
        {
            budget = budget.saturating_sub(update_bytes(&update));
            message.updates.push(update);
        }
        let limit = self.retransmit_limit();
        self.gossip.take(budget, limit, &mut message.updates);
        self.emit(to, message);
    }

    fn emit(&mut self, to: NodeId, message: Message) {
        debug_assert_ne!(to, self.config.id, "a member never sends to itself");
        self.stats.messages_sent += 1;
        self.stats.bytes_sent += message.encode().len() as u64;
        self.effects.push_back(Effect::Send { to, message });
    }

    /// Sends this member's whole view (or, past the sync limit, the part of it after a
    /// rotating cursor) to `to`.
    fn send_sync(&mut self, to: NodeId, reply: bool) {
        let mut message = self.header(Body::Sync { reply });
        let mut budget = self
            .config
            .sync_bytes_max
            .saturating_sub(message.encode().len() + 4);
        let own = self.own_update();
        budget = budget.saturating_sub(update_bytes(&own));
        message.updates.push(own);
        let ids: Vec<NodeId> = self.members.keys().copied().collect();
        let start = if ids.is_empty() {
            0
        } else {
            self.sync_cursor % ids.len()
        };
        let mut sent = 0;
        for i in 0..ids.len() {
            let id = ids[(start + i) % ids.len()];
            let Some(update) = self.update_of(id, self.config.id) else {
                continue;
            };
            let bytes = update_bytes(&update);
            if bytes > budget {
                break;
            }
            budget -= bytes;
            message.updates.push(update);
            sent += 1;
        }
        self.sync_cursor = start + sent;
        self.emit(to, message);
    }

    /// The hash of this member's whole view, itself included, as a [`Body::SyncOffer`]
    /// carries it.
    fn view_hash(&self) -> u64 {
        let me = self.config.id;
        let mut view: Vec<Update> = self
            .members
            .keys()
            .filter_map(|&id| self.update_of(id, me))
            .collect();
        view.push(self.own_update());
        view.sort_unstable_by_key(|u| u.id);
        view_hash(&view)
    }

    fn event(&mut self, id: NodeId, generation: u64, state: Option<MemberState>, at: Time) {
        self.effects
            .push_back(Effect::Apply(ViewChange::Member(MemberEvent {
                id,
                generation,
                state,
                at,
            })));
    }

    fn enqueue(&mut self, update: Update) {
        self.gossip.push(update, self.config.gossip_queue_max);
    }

    // ---- merging what others say ------------------------------------------------------

    /// Takes in one update; returns whether this member's view changed.
    fn merge(&mut self, now: Time, update: Update) -> bool {
        self.merge_from(now, update, false)
    }

    /// Takes in one update, which is what its member says of itself when `first_hand` (a
    /// message's header); returns whether this member's view changed.
    ///
    /// A member's own word about its generation is believed however far ahead of the one
    /// held it is: a renewal may take a member further than [`GENERATION_STEP_MAX`] past a
    /// generation that a member which heard nothing for a while still holds, and only the
    /// member can vouch for it. Damage or a lie in a header is undone the same way, by the
    /// member's next message (see `receive`), and what others repeat of it is judged from
    /// the generation they hold.
    ///
    /// [`GENERATION_STEP_MAX`]: crate::GENERATION_STEP_MAX
    fn merge_from(&mut self, now: Time, update: Update, first_hand: bool) -> bool {
        let me = self.config.id;
        if update.id == me {
            if self.config.broken.no_refutation {
                return false;
            }
            if beyond_reach(self.generation, update.generation) {
                // Damage or a lie that no start could make true: the others ignore it too
                // once they know this generation, so it is not worth outliving (and at
                // `u64::MAX` nothing could).
                self.stats.generations_refused += 1;
                return false;
            }
            if update.generation > self.generation {
                // No start of this member used that generation: others may believe it all
                // the same, and only a later (generation, incarnation) beats it.
                self.renew(update.generation, update.incarnation);
                return false;
            }
            if update.generation == self.generation
                && update.state != MemberState::Alive
                && update.incarnation >= self.incarnation
            {
                // Refute: only this member raises its own incarnation, past any said of
                // it; at the largest incarnation, only a new generation beats it.
                let Some(incarnation) = update.incarnation.checked_add(1) else {
                    self.renew(update.generation, update.incarnation);
                    return false;
                };
                self.incarnation = incarnation;
                self.stats.refutations += 1;
                self.adjust_awareness(1);
                let own = self.own_update();
                self.enqueue(own);
                return true;
            }
            return false;
        }
        // Only a member of the view counts as a suspecter, and no more of them are kept
        // than the suspicion timeout can use.
        let counts = update.state == MemberState::Suspect && self.may_confirm(update.id, update.by);
        let confirmers_max = self.confirmations_max() + 1;
        match self.members.get_mut(&update.id) {
            Some(entry) if !first_hand && beyond_reach(entry.generation, update.generation) => {
                self.stats.generations_refused += 1;
                false
            }
            Some(entry) => {
                if update.precedence() > entry.precedence() {
                    let new_generation = update.generation != entry.generation;
                    let state_changed = entry.state != update.state || new_generation;
                    self.index.remove(update.id, entry);
                    entry.generation = update.generation;
                    entry.incarnation = update.incarnation;
                    entry.state = update.state;
                    entry.joined = update.joined;
                    entry.group = update.group;
                    entry.group_size = update.group_size;
                    entry.merged_from = update.merged_from;
                    entry.changed_at = now;
                    entry.confirmers.clear();
                    if counts {
                        entry.confirmers.insert(update.by);
                    }
                    self.index.add(update.id, entry);
                    if state_changed {
                        self.event(update.id, update.generation, Some(update.state), now);
                    }
                    if update.state == MemberState::Dead {
                        // Only live members' key-values are held: a dead member's copy
                        // could be behind a collection mark by the time it comes back.
                        self.drop_key_values(update.id, now);
                    }
                    self.enqueue(update);
                    self.news_of_group(now, update.id);
                    true
                } else if update.precedence() == entry.precedence()
                    && entry.joined == 0
                    && update.joined != 0
                {
                    // The join stamp is fixed for one incarnation; 0 only means unknown.
                    self.index.remove(update.id, entry);
                    entry.joined = update.joined;
                    entry.group = update.group;
                    entry.group_size = update.group_size;
                    entry.merged_from = update.merged_from;
                    self.index.add(update.id, entry);
                    self.news_of_group(now, update.id);
                    true
                } else if update.precedence() == entry.precedence()
                    && counts
                    && entry.confirmers.len() < confirmers_max
                    && entry.confirmers.insert(update.by)
                {
                    // An independent confirmation shortens the suspicion (Lifeguard), and
                    // is passed on so that others count it too.
                    self.enqueue(update);
                    true
                } else {
                    false
                }
            }
            None => {
                // Only a member's being alive introduces it: a suspicion or death of a
                // member this one does not know (never met, or already forgotten) is
                // stale news, and taking it in would let tombstones circulate for ever.
                if update.state != MemberState::Alive {
                    return false;
                }
                if self.members.len() >= self.config.members_max && !self.evict_tombstone(now) {
                    self.stats.members_full += 1;
                    return false;
                }
                let entry = Entry {
                    generation: update.generation,
                    incarnation: update.incarnation,
                    state: update.state,
                    joined: update.joined,
                    group: update.group,
                    group_size: update.group_size,
                    merged_from: update.merged_from,
                    changed_at: now,
                    confirmers: BTreeSet::new(),
                };
                self.index.add(update.id, &entry);
                self.members.insert(update.id, entry);
                self.event(update.id, update.generation, Some(update.state), now);
                self.enqueue(update);
                self.news_of_group(now, update.id);
                true
            }
        }
    }

    /// Forgets the oldest dead member to make room, telling the application as a reap
    /// does; false if none is dead.
    fn evict_tombstone(&mut self, now: Time) -> bool {
        let Some(&(died, id)) = self.index.tombstones.first() else {
            return false;
        };
        self.forget_dead(died, id, now);
        true
    }

    /// Forgets `id`, dead since `died`, and hands up that it is gone (`state: None`).
    fn forget_dead(&mut self, died: Time, id: NodeId, now: Time) {
        match self.forget(id, now) {
            Some(generation) => self.event(id, generation, None, now),
            None => {
                debug_assert!(false, "a tombstone of a member not in the view");
                self.index.tombstones.remove(&(died, id));
            }
        }
    }

    /// Removes `id` from the view and the gossip queue, and drops its key-values; returns
    /// its generation.
    fn forget(&mut self, id: NodeId, now: Time) -> Option<u64> {
        let entry = self.members.remove(&id)?;
        self.index.remove(id, &entry);
        self.gossip.remove(id);
        self.drop_key_values(id, now);
        self.kv.forget_floor(id);
        Some(entry.generation)
    }

    /// Drops this member's copy of `owner`'s key-values, handing up each key as gone.
    fn drop_key_values(&mut self, owner: NodeId, now: Time) {
        let mut changes = Vec::new();
        self.kv.drop_owner(owner, now, &mut changes);
        self.key_changes(changes);
    }

    fn key_changes(&mut self, changes: Vec<KeyChange>) {
        for change in changes {
            self.effects
                .push_back(Effect::Apply(ViewChange::Key(change)));
        }
    }

    /// Takes a new `(generation, incarnation)` while running, past a claim at
    /// `(past, incarnation)` that no incarnation of this start's generation can beat: like a
    /// start's, the generation is persisted first and used only once `Input::Persisted`
    /// acknowledges it (`adopt`).
    ///
    /// The renewal stays within [`GENERATION_STEP_MAX`](crate::GENERATION_STEP_MAX) of this
    /// start's generation when it can, so that a member holding this start believes what
    /// is gossiped of the renewal, not only what this member tells it: `past + 1` if that is
    /// within reach, otherwise (`past` is at the edge, since `merge` ignores claims further
    /// ahead) `past` itself at one incarnation above the claim. Only a claim at the edge
    /// and at the largest incarnation needs `past + 1` beyond reach; members holding this
    /// start then take it from this member's own messages (`merge_from`). At `u64::MAX`
    /// nothing beats the claim, which is possible only if this start's own durable
    /// generation is that close to it.
    fn renew(&mut self, past: u64, incarnation: u64) {
        let edge = self.generation.saturating_add(crate::GENERATION_STEP_MAX);
        let target = if past < edge {
            (past + 1, 0)
        } else if let Some(above) = incarnation.checked_add(1) {
            (past, above)
        } else if let Some(generation) = past.checked_add(1) {
            (generation, 0)
        } else {
            return;
        };
        if self.renewing.is_some_and(|pending| pending >= target) {
            return;
        }
        self.persist = self.persist.next();
        self.renewing = Some(target);
        self.effects.push_back(Effect::Persist {
            token: self.persist,
            write: MemberWrite {
                generation: target.0,
            },
        });
    }

    /// Uses the generation `renew` made durable, at the incarnation it chose: the same join
    /// stamp (it is still the same running member), gossiped as alive.
    fn adopt(&mut self, (generation, incarnation): (u64, u64)) {
        self.generation = generation;
        self.incarnation = incarnation;
        self.kv.renew(generation);
        self.stats.renewals += 1;
        let own = self.own_update();
        self.enqueue(own);
    }

    // ---- the protocol period ----------------------------------------------------------

    fn become_ready(&mut self, now: Time) {
        self.ready = true;
        let own = self.own_update();
        self.enqueue(own);
        let interval = self.config.probe_interval_ms;
        self.next_probe_at = now + Duration::from_millis(self.rng.below(interval));
        self.next_gossip_at = now + Duration::from_millis(self.config.gossip_interval_ms);
        let push_pull = self.config.push_pull_interval_ms;
        self.next_sync_at = now + Duration::from_millis(push_pull / 2 + self.rng.below(push_pull));
        let kv = self.config.kv_interval_ms;
        self.next_kv_at = now + Duration::from_millis(self.rng.below(kv) + 1);
        // Join: announce this start to every seed and take their views.
        for seed in self.config.seeds.clone() {
            self.send_sync(seed, true);
        }
    }

    fn tick(&mut self, now: Time) {
        self.indirect_probe(now);
        if now >= self.next_probe_at {
            self.end_probe(now);
            self.start_probe(now);
            self.ping_unseen_seeds(now);
        }
        if now >= self.next_gossip_at {
            self.gossip_round(now);
        }
        self.expire_suspicions(now);
        self.expire_relays(now);
        if now >= self.next_sync_at {
            self.push_pull(now);
        }
        self.kv.collect(now);
        if now >= self.next_kv_at {
            self.key_value_round(now);
        }
        self.reap(now);
    }

    /// The bytes a key-value message may fill besides its header, the update about the
    /// receiver that the buddy system may add, and the body's own fields and lengths.
    fn kv_budget(&self) -> usize {
        let header = self.header(Body::Gossip).encode().len();
        self.config
            .sync_bytes_max
            .saturating_sub(header + UPDATE_BYTES_MAX + 48)
    }

    /// Starts the key-value exchange with one random live member: a digest of what this
    /// member holds, answered with what it lacks.
    fn key_value_round(&mut self, now: Time) {
        self.next_kv_at = now + Duration::from_millis(self.config.kv_interval_ms);
        let live: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, e)| e.state == MemberState::Alive)
            .map(|(&id, _)| id)
            .collect();
        if live.is_empty() {
            return;
        }
        let to = live[self.rng.below(live.len() as u64) as usize];
        let budget = self.kv_budget();
        let (lo, hi, digests) = self.kv.digest(budget);
        self.send(to, Body::KvSyn { lo, hi, digests });
    }

    /// Whether this member keeps a copy of `owner`'s key-values: a member of its view not
    /// believed dead.
    fn holds_key_values(&self, owner: NodeId) -> bool {
        self.members
            .get(&owner)
            .is_some_and(|e| e.state != MemberState::Dead)
    }

    fn take_deltas(&mut self, now: Time, from: NodeId, deltas: Vec<crate::kv::Delta>) {
        let mut changes = Vec::new();
        for delta in deltas {
            let holds = self.holds_key_values(delta.owner);
            self.kv.apply(now, from, delta, holds, &mut changes);
        }
        self.key_changes(changes);
    }

    fn indirect_probe(&mut self, now: Time) {
        let Some(probe) = &self.probe else {
            return;
        };
        if probe.acked || probe.indirect_sent || now < probe.indirect_at {
            return;
        }
        let (target, seq) = (probe.target, probe.seq);
        let mut relays: Vec<NodeId> = self
            .members
            .iter()
            .filter(|&(&id, e)| id != target && e.state == MemberState::Alive)
            .map(|(&id, _)| id)
            .collect();
        let k = self.config.indirect_probes.min(relays.len());
        for i in 0..k {
            let j = i + self.rng.below((relays.len() - i) as u64) as usize;
            relays.swap(i, j);
        }
        relays.truncate(k);
        for &relay in &relays {
            self.send(relay, Body::PingReq { seq, target });
        }
        if let Some(probe) = &mut self.probe {
            probe.indirect_sent = true;
            probe.nacks_expected = u32::try_from(k).unwrap_or(u32::MAX);
        }
    }

    /// Sends the queued gossip to a few random live members (memberlist's gossip round),
    /// so that news does not wait for the next probes.
    fn gossip_round(&mut self, now: Time) {
        self.next_gossip_at = now + Duration::from_millis(self.config.gossip_interval_ms);
        if self.gossip.is_empty() {
            return;
        }
        let mut live: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, e)| e.state != MemberState::Dead)
            .map(|(&id, _)| id)
            .collect();
        let fanout = self.config.gossip_fanout.min(live.len());
        for i in 0..fanout {
            let j = i + self.rng.below((live.len() - i) as u64) as usize;
            live.swap(i, j);
        }
        for &to in &live[..fanout] {
            if self.gossip.is_empty() {
                break;
            }
            self.send(to, Body::Gossip);
        }
    }

    fn end_probe(&mut self, now: Time) {
        let Some(probe) = self.probe.take() else {
            return;
        };
        if probe.acked {
            self.adjust_awareness(-1);
            return;
        }
        self.stats.probes_failed += 1;
        // Lifeguard: missing nacks mean this member's own messages are not getting
        // through, so it is likelier the problem than the target is.
        let delta = if probe.nacks_expected > 0 {
            i64::from(probe.nacks_expected.saturating_sub(probe.nacks))
        } else {
            1
        };
        self.adjust_awareness(delta);
        let me = self.config.id;
        if let Some(e) = self.members.get(&probe.target)
            && e.generation == probe.generation
            && e.state != MemberState::Dead
            && let Some(known) = self.update_of(probe.target, me)
        {
            let suspect = Update {
                state: MemberState::Suspect,
                by: me,
                ..known
            };
            self.merge(now, suspect);
        }
    }

    fn start_probe(&mut self, now: Time) {
        self.next_probe_at = now + self.scaled(self.config.probe_interval_ms);
        let Some(target) = self.next_target() else {
            return;
        };
        let Some(generation) = self.members.get(&target).map(|e| e.generation) else {
            return;
        };
        self.seq += 1;
        let seq = self.seq;
        self.probe = Some(Probe {
            target,
            generation,
            seq,
            indirect_at: now + self.scaled(self.config.probe_timeout_ms),
            indirect_sent: false,
            acked: false,
            nacks_expected: 0,
            nacks: 0,
        });
        self.send(target, Body::Ping { seq });
    }

    /// Pings each seed this start has not heard from, once a protocol period, and declares
    /// dead one that answered none of `unseen_seed_probes` pings (see
    /// [`MemberConfigBuilder::unseen_seed_probes`](crate::MemberConfigBuilder::unseen_seed_probes)).
    /// Any message from a seed puts it in the view, which ends its count.
    fn ping_unseen_seeds(&mut self, now: Time) {
        let members = &self.members;
        self.unseen.retain(|seed, _| !members.contains_key(seed));
        let probes = self.config.unseen_seed_probes;
        let seeds: Vec<NodeId> = self.unseen.keys().copied().collect();
        for seed in seeds {
            let Some(sent) = self.unseen.get_mut(&seed) else {
                continue;
            };
            if *sent > probes {
                continue;
            }
            if *sent == probes {
                *sent += 1;
                self.stats.seeds_unseen_dead += 1;
                self.event(seed, 0, Some(MemberState::Dead), now);
                continue;
            }
            *sent += 1;
            self.seq += 1;
            let seq = self.seq;
            // Without gossip: a seed that may not run would waste its retransmissions.
            let ping = self.header(Body::Ping { seq });
            self.emit(seed, ping);
        }
    }

    /// The next member to probe: round robin over the live members in an order shuffled
    /// at every pass, which bounds the time until any member is probed.
    fn next_target(&mut self) -> Option<NodeId> {
        for _ in 0..2 {
            while self.probe_cursor < self.probe_order.len() {
                let id = self.probe_order[self.probe_cursor];
                self.probe_cursor += 1;
                if self
                    .members
                    .get(&id)
                    .is_some_and(|e| e.state != MemberState::Dead)
                {
                    return Some(id);
                }
            }
            self.probe_order = self
                .members
                .iter()
                .filter(|(_, e)| e.state != MemberState::Dead)
                .map(|(&id, _)| id)
                .collect();
            for i in (1..self.probe_order.len()).rev() {
                let j = self.rng.below(i as u64 + 1) as usize;
                self.probe_order.swap(i, j);
            }
            self.probe_cursor = 0;
        }
        None
    }

    fn expire_suspicions(&mut self, now: Time) {
        let live = self.live_count();
        let expired: Vec<NodeId> = self
            .index
            .suspects
            .iter()
            .filter(|id| {
                self.members
                    .get(id)
                    .is_some_and(|e| self.suspicion_deadline(live, e) <= now)
            })
            .copied()
            .collect();
        let me = self.config.id;
        for id in expired {
            if let Some(known) = self.update_of(id, me) {
                let dead = Update {
                    state: MemberState::Dead,
                    by: me,
                    ..known
                };
                self.merge(now, dead);
            }
        }
    }

    fn expire_relays(&mut self, now: Time) {
        let due: Vec<u64> = self
            .relays
            .iter()
            .filter(|(_, r)| r.nack_at <= now)
            .map(|(&seq, _)| seq)
            .collect();
        for seq in due {
            if let Some(relay) = self.relays.remove(&seq)
                && self.config.lifeguard
            {
                self.send(
                    relay.origin,
                    Body::Nack {
                        seq: relay.origin_seq,
                        target: relay.target,
                    },
                );
            }
        }
    }

    /// Syncs the whole view with one member: a live one, or (half the time, when there
    /// are any) a seed or a dead member, so that the sides of a healed partition, which
    /// believe each other dead, find each other again.
    /// Sets this start's join stamp, once: one more than the largest this member knows.
    fn rank(&mut self) {
        if self.joined != 0 {
            return;
        }
        let largest = self.members.values().map(|e| e.joined).max().unwrap_or(0);
        self.joined = largest.saturating_add(1);
        // The largest group this member sees (a tie to the older coordinator), or a group
        // of its own if it sees none.
        let best = self
            .index
            .claimants
            .iter()
            .filter_map(|&id| self.claim(id).map(|claim| (claim, id)))
            .reduce(|a, b| if self.beats(b.0, a.0) { b } else { a });
        self.group = best.map_or(self.config.id, |(_, id)| id);
        // A new incarnation, so that the stamp overrides what others heard before.
        self.bump();
    }

    /// Raises this member's incarnation and gossips its update: it has something new to
    /// say of itself (a join stamp, a group). At the largest incarnation it takes a new
    /// generation instead, which gossips it once durable.
    fn bump(&mut self) {
        match self.incarnation.checked_add(1) {
            Some(incarnation) => {
                self.incarnation = incarnation;
                let own = self.own_update();
                self.enqueue(own);
            }
            None => self.renew(self.generation, self.incarnation),
        }
    }

    // ---- groups (the emergent leader) ---------------------------------------------------

    /// What group `coordinator` claims in this member's view: its size as the coordinator
    /// last said (this member's own count if it is this member) and the coordinator's age.
    fn claim(&self, coordinator: NodeId) -> Option<Claim> {
        if coordinator == self.config.id {
            return Some((self.group_size(), rank(self.joined, coordinator)));
        }
        let e = self.members.get(&coordinator)?;
        Some((e.group_size, rank(e.joined, coordinator)))
    }

    /// Whether group claim `a` wins a merge against `b`: the larger group, and between
    /// groups of one size the one whose coordinator is older by `(joined, id)`.
    fn beats(&self, a: Claim, b: Claim) -> bool {
        if self.config.broken.own_side_wins_ties && a.0 == b.0 {
            // Broken on purpose: each side keeps its own coordinator in a tie.
            return b.1.1 != self.group && a.1.1 == self.group;
        }
        a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
    }

    /// Brings this member's group up to date with its view, one change at a time: its
    /// group merged into another (a member that was in it says so), its coordinator is
    /// gone (the oldest member of the group succeeds it), or a rival coordinator's group
    /// wins against it. Hands up each merge this member learns of, once.
    fn settle_group(&mut self, now: Time) {
        if self.joined == 0 {
            return;
        }
        self.forget_merged_from();
        // Each change joins another group; a few are enough for any view, and the next
        // input carries on.
        for _ in 0..4 {
            if !self.settle_step(now) {
                break;
            }
        }
        let me = self.config.id;
        if self.group == me {
            let size = self.group_size();
            if size != self.announced {
                // A coordinator tells how large its group is: that decides a merge.
                self.announced = size;
                self.bump();
            }
        }
    }

    /// Forgets the group this member's group merged from once that group's coordinator is
    /// believed dead or is forgotten, as `forget_merges` forgets the merges handed up, and
    /// gossips it (a new incarnation). Kept, it would hide the next merge with a group of
    /// that coordinator (after a partition in which it formed one again) from this member:
    /// `news_of_group` takes a member that came from the group this member came from for
    /// old news, and this member would never be told.
    fn forget_merged_from(&mut self) {
        let me = self.config.id;
        if let Some(from) = self.merged_from
            && from != me
            && self
                .members
                .get(&from)
                .is_none_or(|e| e.state == MemberState::Dead)
        {
            self.merged_from = None;
            self.bump();
        }
    }

    /// One change of group, if the view calls for one; whether it made one.
    fn settle_step(&mut self, now: Time) -> bool {
        let me = self.config.id;
        let g = self.group;
        let first = NodeId::new(1);
        let last = NodeId::new(u64::MAX);
        // A member that was in this group moved to another because the group merged into
        // it: so does this member, if that group is one it would merge into itself (a
        // live coordinator whose group wins against this one), so that what members that
        // moved long ago still say of the group they left moves nobody. A move into this
        // member means its group and the one it merged into swapped (each side decided on
        // claims the other had changed): the swap ends with this member coordinating.
        let moved = self
            .index
            .merged_out
            .range((g, first)..=(g, last))
            .filter_map(|&(_, id)| self.members.get(&id).map(|e| e.group))
            .find(|&into| {
                into != g
                    && (into == me
                        || (self.coordinates(into)
                            && matches!(
                                (self.claim(into), self.claim(g)),
                                (Some(theirs), Some(mine)) if self.beats(theirs, mine)
                            )))
            });
        // Above all, the coordinator itself says its group merged into another (one not
        // believed dead: what it said of an earlier merge is no news once that group's
        // coordinator is gone).
        let moved = self
            .members
            .get(&g)
            .filter(|e| e.state != MemberState::Dead && e.merged_from == Some(g) && e.group != g)
            .map(|e| e.group)
            .filter(|&into| {
                into == me
                    || self
                        .members
                        .get(&into)
                        .is_some_and(|e| e.state != MemberState::Dead)
            })
            .or(moved);
        if let Some(into) = moved {
            self.join_group(now, into, Some(g));
            return true;
        }
        // The coordinator is dead, restarted, or moved to another group without a merge
        // (a merge is the case above): the oldest member left in the group succeeds it.
        if g != me
            && self.members.get(&g).is_some_and(|e| {
                e.state == MemberState::Dead
                    || e.joined == 0
                    || (e.group != g && e.merged_from != Some(g) && self.coordinates(e.group))
            })
        {
            // Members that saw the coordinator gone first may have moved already: to the
            // group of the oldest member left, which coordinates it now, and whose age is
            // what this member compares as they did.
            let oldest = self
                .index
                .by_group
                .range((g, (0, first), first)..=(g, (u64::MAX, last), last))
                .map(|&(_, age, id)| (age, id))
                .find(|&(_, id)| id != g);
            let successor = self
                .index
                .claimants
                .iter()
                .filter_map(|&c| self.members.get(&c).map(|e| (rank(e.joined, c), c)))
                .min();
            let own = (rank(self.joined, me), me);
            let next = [oldest, successor]
                .into_iter()
                .flatten()
                .fold(own, std::cmp::min)
                .1;
            self.join_group(now, next, None);
            return true;
        }
        // Another live coordinator with a group of its own (the two formed apart): the
        // smaller group merges into the larger. Only while this member's own coordinator
        // is believed alive, so that a succession in progress is no merge.
        let settled = g == me
            || self
                .members
                .get(&g)
                .is_some_and(|e| e.state == MemberState::Alive && e.group == g);
        if settled && let Some(mine) = self.claim(g) {
            let rivals: Vec<(NodeId, Claim)> = self
                .index
                .claimants
                .iter()
                .filter(|&&r| r != g)
                .filter_map(|&r| self.claim(r).map(|claim| (r, claim)))
                .collect();
            for (r, theirs) in rivals {
                if self.beats(theirs, mine) {
                    self.join_group(now, r, Some(g));
                    return true;
                }
                self.tell_merge(now, g, r, g);
            }
        }
        false
    }

    /// Hands up a merge into this member's group that news of `id` shows: `id` came into
    /// the group from another that merged into it, or `id` is the coordinator of a group
    /// that members of this one came from, believed live again. Told once that coordinator
    /// is believed live, as a merge is forgotten once it is not (`forget_merges`), so that
    /// members keeping the group they came from tell nothing new. Looked at for the member
    /// the news is about only, so that it costs no pass over the view.
    fn news_of_group(&mut self, now: Time, id: NodeId) {
        let g = self.group;
        let Some(e) = self.members.get(&id) else {
            return;
        };
        if e.state == MemberState::Dead || self.joined == 0 {
            return;
        }
        let live = |m: &Member, x: NodeId| {
            x != g
                && m.merged_from != Some(x)
                && m.members
                    .get(&x)
                    .is_some_and(|e| e.state != MemberState::Dead)
        };
        if e.group == g
            && e.joined != 0
            && let Some(from) = e.merged_from
            && live(self, from)
        {
            self.tell_merge(now, g, from, g);
        }
        let (first, last) = (NodeId::new(1), NodeId::new(u64::MAX));
        if live(self, id)
            && self
                .index
                .merged_in
                .range((g, id, first)..=(g, id, last))
                .next()
                .is_some()
        {
            self.tell_merge(now, g, id, g);
        }
    }

    /// Whether `id` coordinates a group in this member's view: itself, or a member not
    /// believed dead whose group is its own.
    fn coordinates(&self, id: NodeId) -> bool {
        id == self.config.id
            || self
                .members
                .get(&id)
                .is_some_and(|e| e.state != MemberState::Dead && e.joined != 0 && e.group == id)
    }

    /// Hands up the merge of this member's group `group` with `other`, unless it did.
    fn tell_merge(&mut self, now: Time, group: NodeId, other: NodeId, winner: NodeId) {
        let key = (group, other, winner);
        if self.merges_told.contains_key(&key) {
            return;
        }
        if self.merges_told.len() >= self.config.members_max
            && let Some((&oldest, _)) = self.merges_told.iter().min_by_key(|(_, at)| **at)
        {
            self.merges_told.remove(&oldest);
        }
        self.merges_told.insert(key, now);
        self.effects.push_back(Effect::Apply(ViewChange::Merged {
            group,
            other,
            winner,
            at: now,
        }));
    }

    /// Moves this member to `group`: from a merge of `from` into it, or (with `None`) as
    /// the succession of its coordinator.
    fn join_group(&mut self, now: Time, group: NodeId, from: Option<NodeId>) {
        self.group = group;
        self.merged_from = from;
        self.announced = 0;
        if let Some(from) = from {
            self.stats.merges_lost += 1;
            self.tell_merge(now, from, group, group);
        }
        self.bump();
    }

    /// Forgets the merges handed up whose other group's coordinator this member no longer
    /// believes live (cut off again, or gone): a later merge with it, after another
    /// partition, is handed up again.
    fn forget_merges(&mut self) {
        let me = self.config.id;
        let members = &self.members;
        self.merges_told.retain(|&(_, other, _), _| {
            other == me
                || members
                    .get(&other)
                    .is_some_and(|e| e.state != MemberState::Dead)
        });
    }

    fn push_pull(&mut self, now: Time) {
        self.rank();
        let interval = self.config.push_pull_interval_ms;
        self.next_sync_at = now + Duration::from_millis(interval / 2 + self.rng.below(interval));
        if self.config.broken.no_push_pull {
            return;
        }
        let alive: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, e)| e.state != MemberState::Dead)
            .map(|(&id, _)| id)
            .collect();
        let mut away: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, e)| e.state == MemberState::Dead)
            .map(|(&id, _)| id)
            .collect();
        for &seed in &self.config.seeds {
            if self
                .members
                .get(&seed)
                .is_none_or(|e| e.state == MemberState::Dead)
            {
                away.push(seed);
            }
        }
        away.sort_unstable();
        away.dedup();
        let from_away = !away.is_empty() && (alive.is_empty() || self.rng.below(2) == 0);
        let pool = if from_away { &away } else { &alive };
        if pool.is_empty() {
            return;
        }
        let to = pool[self.rng.below(pool.len() as u64) as usize];
        if from_away {
            // Believed dead, or a seed not in the view: the views differ, so the whole
            // view goes at once.
            self.send_sync(to, true);
        } else {
            let hash = self.view_hash();
            self.send(to, Body::SyncOffer { hash });
        }
    }

    fn reap(&mut self, now: Time) {
        self.forget_merges();
        let reap = Duration::from_millis(self.config.dead_reap_ms);
        while let Some(&(died, id)) = self.index.tombstones.first()
            && died + reap <= now
        {
            self.forget_dead(died, id, now);
        }
    }

    fn next_wake(&self) -> Time {
        let live = self.live_count();
        let mut at = self
            .next_probe_at
            .min(self.next_sync_at)
            .min(self.next_gossip_at);
        if let Some(p) = &self.probe
            && !p.acked
            && !p.indirect_sent
        {
            at = at.min(p.indirect_at);
        }
        for id in &self.index.suspects {
            if let Some(e) = self.members.get(id) {
                at = at.min(self.suspicion_deadline(live, e));
            }
        }
        if let Some(&(died, _)) = self.index.tombstones.first() {
            at = at.min(died + Duration::from_millis(self.config.dead_reap_ms));
        }
        for r in self.relays.values() {
            at = at.min(r.nack_at);
        }
        at = at.min(self.next_kv_at);
        if let Some(collect) = self.kv.next_collection() {
            at = at.min(collect);
        }
        at
    }

    // ---- messages ---------------------------------------------------------------------

    fn receive(&mut self, now: Time, from: NodeId, message: Message) {
        if from == self.config.id {
            self.stats.messages_dropped += 1;
            return;
        }
        if let Some(known) = self.members.get(&from).map(|e| e.generation)
            && known > message.generation
        {
            if !beyond_reach(message.generation, known) {
                // From an earlier start of the sender, delayed in the network.
                self.stats.messages_dropped += 1;
                return;
            }
            // The generation held for the sender is further ahead of what it says of
            // itself than its starts could have taken it: a claim taken in before this
            // member knew any better. The sender's own word replaces it.
            self.stats.generations_refused += 1;
            if let Some(generation) = self.forget(from, now) {
                self.event(from, generation, None, now);
            }
        }
        // A message from a member is first-hand news that it is alive.
        self.merge_from(
            now,
            Update {
                id: from,
                generation: message.generation,
                incarnation: message.incarnation,
                state: MemberState::Alive,
                joined: message.joined,
                by: from,
                group: message.group,
                group_size: message.group_size,
                merged_from: message.merged_from,
            },
            true,
        );
        if self.holds_key_values(from) {
            self.kv.learn(from, message.generation, message.kv_floor);
        }
        let limit = self.config.members_max.saturating_add(1);
        let sync = matches!(message.body, Body::Sync { .. });
        let limit_kv = self.config.members_max.saturating_add(1);
        for &update in message.updates.iter().take(limit) {
            let mut update = update;
            if sync && update.state == MemberState::Dead && update.id != self.config.id {
                // A whole view may be old news (the sender was cut off): its deaths count
                // as suspicions here, so that a member alive on this side can refute them
                // before it is declared dead.
                update.state = MemberState::Suspect;
            }
            self.merge(now, update);
        }
        match message.body {
            Body::Ping { seq } => self.send(from, Body::Ack { seq }),
            Body::Ack { seq } => {
                if let Some(p) = &mut self.probe
                    && p.seq == seq
                    && p.target == from
                {
                    p.acked = true;
                } else if let Some(relay) = self.relays.get(&seq).copied()
                    && relay.target == from
                {
                    self.relays.remove(&seq);
                    self.send(
                        relay.origin,
                        Body::IndirectAck {
                            seq: relay.origin_seq,
                            target: from,
                        },
                    );
                }
            }
            Body::PingReq { seq, target } => {
                if target == self.config.id {
                    self.send(from, Body::IndirectAck { seq, target });
                } else if self.relays.len() < self.config.relays_max {
                    self.seq += 1;
                    let own_seq = self.seq;
                    // Nack a little before the asker gives up on the period, so it arrives.
                    let nack_after = self.config.probe_timeout_ms * 4 / 5;
                    self.relays.insert(
                        own_seq,
                        Relay {
                            origin: from,
                            origin_seq: seq,
                            target,
                            nack_at: now + Duration::from_millis(nack_after.max(1)),
                        },
                    );
                    self.send(target, Body::Ping { seq: own_seq });
                }
            }
            Body::IndirectAck { seq, target } => {
                if let Some(p) = &mut self.probe
                    && p.seq == seq
                    && p.target == target
                {
                    p.acked = true;
                }
            }
            Body::Nack { seq, target } => {
                if let Some(p) = &mut self.probe
                    && p.seq == seq
                    && p.target == target
                {
                    p.nacks = p.nacks.saturating_add(1);
                }
            }
            Body::Gossip => {}
            Body::SyncOffer { hash } => {
                if hash == self.view_hash() {
                    self.stats.syncs_matched += 1;
                } else {
                    self.send_sync(from, true);
                }
            }
            Body::KvSyn { lo, hi, digests } => {
                let budget = self.kv_budget();
                // Sorted for the lookup below: a peer's digests come in its own order.
                let mut holds: Vec<NodeId> = digests
                    .iter()
                    .take(limit_kv)
                    .map(|d| d.owner)
                    .filter(|&o| self.holds_key_values(o))
                    .collect();
                holds.sort_unstable();
                let (deltas, wants) = self.kv.answer(
                    lo,
                    hi,
                    &digests[..digests.len().min(limit_kv)],
                    budget,
                    |o| holds.binary_search(&o).is_ok(),
                );
                if !deltas.is_empty() || !wants.is_empty() {
                    self.send(from, Body::KvAck { deltas, wants });
                }
            }
            Body::KvAck { deltas, wants } => {
                self.take_deltas(now, from, deltas);
                if !wants.is_empty() {
                    let budget = self.kv_budget();
                    let wants = &wants[..wants.len().min(limit_kv)];
                    let deltas = self.kv.deltas(wants, budget);
                    if !deltas.is_empty() {
                        self.send(from, Body::KvDelta { deltas });
                    }
                }
            }
            Body::KvDelta { deltas } => self.take_deltas(now, from, deltas),
            Body::Sync { reply } => {
                if reply {
                    self.send_sync(from, false);
                } else {
                    // The answer to a sync this member asked for: it knows the cluster's
                    // stamps now, and takes the next one, joining a group it sees. If it
                    // sees none (the cluster is starting too), it waits for its first
                    // push-pull round, by when one may have formed, rather than form
                    // a group of its own at once and merge it later.
                    if !self.index.claimants.is_empty() {
                        self.rank();
                    }
                }
            }
        }
    }

    /// Whether the index agrees with the view (checked after every input in debug builds,
    /// in views of up to 32 members).
    fn index_is_consistent(&self) -> bool {
        let mut fresh = Index::default();
        for (&id, e) in &self.members {
            fresh.add(id, e);
        }
        fresh == self.index
    }

    fn schedule_wake(&mut self) {
        if !self.ready || self.left {
            return;
        }
        let at = self.next_wake();
        if self.wake_at != Some(at) {
            self.wake_at = Some(at);
            self.effects.push_back(Effect::WakeAt(at));
        }
    }
}

impl Protocol for Member {
    type Message = Message;
    type Request = MemberRequest;
    type Response = MemberResponse;
    type Write = MemberWrite;
    type Apply = ViewChange;

    fn id(&self) -> NodeId {
        self.config.id
    }

    fn handle(&mut self, now: Time, input: InputOf<Self>) {
        if self.ready && !self.left {
            // A member that heard nothing, not even its own wake-ups, for half the grace
            // may have slept through a collection of tombstones: its copies could bring
            // deleted keys back, so it takes them again.
            let half = Duration::from_millis(self.config.kv_grace_ms / 2);
            if self.last_input_at.is_some_and(|last| last + half <= now) {
                let mut changes = Vec::new();
                self.kv.drop_others(now, &mut changes);
                self.stats.kv_pauses += 1;
                self.key_changes(changes);
            }
            self.last_input_at = Some(now);
        }
        match input {
            Input::Persisted(token) => {
                if token >= self.persist && !self.left {
                    if !self.ready {
                        self.become_ready(now);
                    } else if let Some(generation) = self.renewing.take() {
                        self.adopt(generation);
                    }
                }
            }
            Input::Wake => {
                self.wake_at = None;
                if self.ready && !self.left {
                    self.tick(now);
                }
            }
            Input::Message { from, message } => {
                if self.ready && !self.left {
                    self.receive(now, from, message);
                } else {
                    self.stats.messages_dropped += 1;
                }
            }
            Input::Request { id, request } => self.answer(now, id, request),
        }
        // Rebuilding the index costs a pass over the view: checked after every input in
        // views of up to 8 members, and after every 32nd in views of up to 64.
        self.inputs = self.inputs.wrapping_add(1);
        let check =
            self.members.len() <= 8 || (self.members.len() <= 64 && self.inputs.is_multiple_of(32));
        debug_assert!(
            !check || self.index_is_consistent(),
            "the view's index drifted"
        );
        if self.ready && !self.left {
            self.settle_group(now);
            let coordinator = self.coordinator();
            if self.coordinator != Some(coordinator) {
                self.coordinator = Some(coordinator);
                self.effects
                    .push_back(Effect::Apply(ViewChange::Coordinator {
                        id: coordinator,
                        at: now,
                    }));
            }
        }
        self.schedule_wake();
    }

    fn poll(&mut self) -> Option<EffectOf<Self>> {
        self.effects.pop_front()
    }
}

impl Member {
    fn answer(&mut self, now: Time, id: RequestId, request: MemberRequest) {
        let response = match request {
            MemberRequest::Members => MemberResponse::Members(self.members()),
            MemberRequest::Leave => {
                self.leave();
                MemberResponse::Left
            }
            MemberRequest::Set { key, value } => self.write_key(now, key, Some(value)),
            MemberRequest::Delete { key } => self.write_key(now, key, None),
        };
        self.effects.push_back(Effect::Reply { id, response });
    }

    fn write_key(&mut self, now: Time, key: String, value: Option<Vec<u8>>) -> MemberResponse {
        match self.kv.write(now, key, value) {
            Ok(version) => MemberResponse::Written { version },
            Err(e) => MemberResponse::Refused(e),
        }
    }

    /// Declares this start dead at a new incarnation, which outranks everything said of it
    /// so far, tells every live member directly, and stops. Before it is ready it has
    /// said nothing, so it only stops.
    fn leave(&mut self) {
        if self.left {
            return;
        }
        self.left = true;
        self.probe = None;
        self.relays.clear();
        if !self.ready {
            return;
        }
        self.incarnation = self.incarnation.saturating_add(1);
        let farewell = Update {
            state: MemberState::Dead,
            ..self.own_update()
        };
        let live: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, e)| e.state != MemberState::Dead)
            .map(|(&id, _)| id)
            .collect();
        for to in live {
            let mut message = self.header(Body::Gossip);
            message.updates.push(farewell);
            self.emit(to, message);
        }
    }
}
