//! The `Member` state machine: SWIM failure detection with Lifeguard, gossip piggybacked on
//! probes, push-pull sync, on the node contract.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use synod_node::{
    Effect, EffectOf, Input, InputOf, NodeId, PersistToken, Protocol, RequestId, Rng, Time,
};

use crate::config::MemberConfig;
use crate::wire::{Body, MemberState, Message, Update, beyond_reach, update_bytes};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemberRequest {
    /// The member's view: every member it knows, itself included.
    Members,
    /// Leave the cluster for good (this start): tell every live member, then take no
    /// further part. The others mark it dead at once, without a suspicion, and forget it
    /// after `dead_reap_ms`; a later start (a new generation) joins again.
    Leave,
}

/// The answer to a [`MemberRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemberResponse {
    /// The view, ordered by id.
    Members(Vec<MemberInfo>),
    /// The member has told the others it leaves, and takes no further part.
    Left,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViewChange {
    /// A member's state changed in this member's view.
    Member(MemberEvent),
    /// The coordinator (the oldest live member, the emergent leader) is now `id` in this
    /// member's view: a member that coordinates learns it here, and so does every member
    /// of a group that merged with another after a partition.
    Coordinator {
        /// The new coordinator.
        id: NodeId,
        /// When this member learnt it (its own `now`).
        at: Time,
    },
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
    /// Claims ignored because their generation was further ahead of the one this member
    /// knows (for itself, its own) than [`GENERATION_STEP_MAX`](crate::GENERATION_STEP_MAX)
    /// starts could take it, and entries replaced because their member's own message showed
    /// such a claim had been taken in before this member knew better.
    pub generations_refused: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    generation: u64,
    incarnation: u64,
    state: MemberState,
    joined: u64,
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
#[derive(Debug, Default)]
struct Index {
    dead: usize,
    suspects: BTreeSet<NodeId>,
    tombstones: BTreeSet<(Time, NodeId)>,
    ranks: BTreeSet<((u64, NodeId), NodeId)>,
}

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
    coordinator: Option<NodeId>,
    persist: PersistToken,
    ready: bool,
    /// A new generation being made durable while the member runs (see `renew`).
    renewing: Option<u64>,
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
    effects: VecDeque<EffectOf<Member>>,
    wake_at: Option<Time>,
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
        let persist = PersistToken::default().next();
        let mut effects = VecDeque::new();
        effects.push_back(Effect::Persist {
            token: persist,
            write: MemberWrite { generation },
        });
        Member {
            rng: Rng::new(config.rng_seed ^ generation.rotate_left(32)),
            config,
            generation,
            incarnation: 0,
            joined: 0,
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
            effects,
            wake_at: None,
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

    /// The coordinator in this member's view: the oldest live (not dead) member by
    /// `(joined, id)`, a member that has not set its stamp yet counting as the youngest.
    /// Every member computes it from its own view, without an election, so members that
    /// agree on who is live agree on the coordinator.
    #[must_use]
    pub fn coordinator(&self) -> NodeId {
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
        self.stats
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
        }
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
        })
    }

    fn header(&self, body: Body) -> Message {
        Message {
            generation: self.generation,
            incarnation: self.incarnation,
            joined: self.joined,
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
                // the same, and only a larger generation beats it.
                self.renew(update.generation);
                return false;
            }
            if update.generation == self.generation
                && update.state != MemberState::Alive
                && update.incarnation >= self.incarnation
            {
                // Refute: only this member raises its own incarnation, past any said of
                // it; at the largest incarnation, only a new generation beats it.
                let Some(incarnation) = update.incarnation.checked_add(1) else {
                    self.renew(update.generation);
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
            Some(entry) if beyond_reach(entry.generation, update.generation) => {
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
                    entry.changed_at = now;
                    entry.confirmers.clear();
                    if counts {
                        entry.confirmers.insert(update.by);
                    }
                    self.index.add(update.id, entry);
                    if state_changed {
                        self.event(update.id, update.generation, Some(update.state), now);
                    }
                    self.enqueue(update);
                    true
                } else if update.precedence() == entry.precedence()
                    && entry.joined == 0
                    && update.joined != 0
                {
                    // The join stamp is fixed for one incarnation; 0 only means unknown.
                    self.index.remove(update.id, entry);
                    entry.joined = update.joined;
                    self.index.add(update.id, entry);
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
                    changed_at: now,
                    confirmers: BTreeSet::new(),
                };
                self.index.add(update.id, &entry);
                self.members.insert(update.id, entry);
                self.event(update.id, update.generation, Some(update.state), now);
                self.enqueue(update);
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
        match self.forget(id) {
            Some(generation) => self.event(id, generation, None, now),
            None => {
                debug_assert!(false, "a tombstone of a member not in the view");
                self.index.tombstones.remove(&(died, id));
            }
        }
    }

    /// Removes `id` from the view and the gossip queue; returns its generation.
    fn forget(&mut self, id: NodeId) -> Option<u64> {
        let entry = self.members.remove(&id)?;
        self.index.remove(id, &entry);
        self.gossip.remove(id);
        Some(entry.generation)
    }

    /// Takes a generation above `past` while running, so that this member's updates beat
    /// whatever was said of it up to `past`: like a start's, the generation is persisted
    /// first and used only once `Input::Persisted` acknowledges it (`adopt`). `past` is
    /// within [`GENERATION_STEP_MAX`](crate::GENERATION_STEP_MAX) of this start's
    /// generation (`merge` ignores claims further ahead), so it is `u64::MAX` only if this
    /// start's own durable generation is that close to it; then nothing beats it.
    fn renew(&mut self, past: u64) {
        let Some(generation) = past.checked_add(1) else {
            return;
        };
        if self.renewing.is_some_and(|pending| pending >= generation) {
            return;
        }
        self.persist = self.persist.next();
        self.renewing = Some(generation);
        self.effects.push_back(Effect::Persist {
            token: self.persist,
            write: MemberWrite { generation },
        });
    }

    /// Uses the generation `renew` made durable: a fresh incarnation space, the same join
    /// stamp (it is still the same running member), gossiped as alive.
    fn adopt(&mut self, generation: u64) {
        self.generation = generation;
        self.incarnation = 0;
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
        }
        if now >= self.next_gossip_at {
            self.gossip_round(now);
        }
        self.expire_suspicions(now);
        self.expire_relays(now);
        if now >= self.next_sync_at {
            self.push_pull(now);
        }
        self.reap(now);
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
        {
            let suspect = Update {
                id: probe.target,
                generation: e.generation,
                incarnation: e.incarnation,
                state: MemberState::Suspect,
                joined: e.joined,
                by: me,
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
            if let Some(e) = self.members.get(&id) {
                let dead = Update {
                    id,
                    generation: e.generation,
                    incarnation: e.incarnation,
                    state: MemberState::Dead,
                    joined: e.joined,
                    by: me,
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
        // A new incarnation, so that the stamp overrides what others heard before.
        self.incarnation = self.incarnation.saturating_add(1);
        let own = self.own_update();
        self.enqueue(own);
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
        self.send_sync(to, true);
    }

    fn reap(&mut self, now: Time) {
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
            if let Some(generation) = self.forget(from) {
                self.event(from, generation, None, now);
            }
        }
        // A message from a member is first-hand news that it is alive.
        self.merge(
            now,
            Update {
                id: from,
                generation: message.generation,
                incarnation: message.incarnation,
                state: MemberState::Alive,
                joined: message.joined,
                by: from,
            },
        );
        let limit = self.config.members_max.saturating_add(1);
        let sync = matches!(message.body, Body::Sync { .. });
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
            Body::Sync { reply } => {
                if reply {
                    self.send_sync(from, false);
                } else {
                    // The answer to a sync this member asked for: it knows the cluster's
                    // stamps now, and takes the next one.
                    self.rank();
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
        fresh.dead == self.index.dead
            && fresh.suspects == self.index.suspects
            && fresh.tombstones == self.index.tombstones
            && fresh.ranks == self.index.ranks
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
            Input::Request { id, request } => self.answer(id, request),
        }
        // Rebuilding the index costs a pass over the view: checked in small views only.
        debug_assert!(
            self.members.len() > 32 || self.index_is_consistent(),
            "the view's index drifted"
        );
        if self.ready && !self.left {
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
    fn answer(&mut self, id: RequestId, request: MemberRequest) {
        let response = match request {
            MemberRequest::Members => MemberResponse::Members(self.members()),
            MemberRequest::Leave => {
                self.leave();
                MemberResponse::Left
            }
        };
        self.effects.push_back(Effect::Reply { id, response });
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
