//! The configuration of a [`Member`](crate::Member): timing, limits and seeds, validated once.

use std::fmt;
use std::time::Duration;

use synod_node::NodeId;

use crate::wire::UPDATE_BYTES_MAX;

/// How a [`Member`](crate::Member) probes, suspects, gossips and syncs, and the limit on
/// everything it keeps. Built with [`MemberConfig::builder`]; the defaults are
/// hashicorp/memberlist's LAN settings where it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberConfig {
    pub(crate) id: NodeId,
    pub(crate) seeds: Vec<NodeId>,
    pub(crate) rng_seed: u64,
    pub(crate) probe_interval_ms: u64,
    pub(crate) probe_timeout_ms: u64,
    pub(crate) indirect_probes: usize,
    pub(crate) suspicion_mult: u32,
    pub(crate) suspicion_max_mult: u32,
    pub(crate) awareness_max: u32,
    pub(crate) retransmit_mult: u32,
    pub(crate) gossip_interval_ms: u64,
    pub(crate) gossip_fanout: usize,
    pub(crate) push_pull_interval_ms: u64,
    pub(crate) dead_reap_ms: u64,
    pub(crate) members_max: usize,
    pub(crate) gossip_queue_max: usize,
    pub(crate) relays_max: usize,
    pub(crate) message_bytes_max: usize,
    pub(crate) sync_bytes_max: usize,
    pub(crate) lifeguard: bool,
    pub(crate) unseen_seed_probes: u32,
    pub(crate) kv_interval_ms: u64,
    pub(crate) kv_grace_ms: u64,
    pub(crate) kv_keys_max: usize,
    pub(crate) kv_key_bytes_max: usize,
    pub(crate) kv_value_bytes_max: usize,
    pub(crate) kv_held_bytes_max: usize,
    /// Whether the key-value limits were set (otherwise the value limit shrinks to fit a
    /// small `sync_bytes_max`).
    pub(crate) kv_limits_set: bool,
    pub(crate) broken: Broken,
}

/// The deliberately broken behaviours a [`MemberConfig`] can be switched to, only with the
/// `broken` feature (without it every flag stays false).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Broken {
    /// Never refute a suspicion or a death: a member that was paused stays dead.
    pub(crate) no_refutation: bool,
    /// No periodic push-pull sync and no re-announce: a healed partition never merges.
    pub(crate) no_push_pull: bool,
    /// Between groups of one size, each member keeps its own group's coordinator instead
    /// of the older one: two groups of one size never merge.
    pub(crate) own_side_wins_ties: bool,
    /// Tombstones of key-values are collected without moving the collection mark: a
    /// holder that missed a delete is never reset and keeps the key for ever.
    pub(crate) collect_without_mark: bool,
    /// Owners' deletion floors are ignored: a member takes a whole state from any holder.
    pub(crate) ignore_floors: bool,
}

/// A [`MemberConfig`] value out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A duration that must be above zero is zero.
    ZeroDuration(&'static str),
    /// The probe timeout is not shorter than the probe interval.
    ProbeTimeout,
    /// A count or limit that must be at least one is zero.
    ZeroLimit(&'static str),
    /// The suspicion multipliers: `suspicion_mult` at least 1 and `suspicion_max_mult` at
    /// least 1.
    Suspicion,
    /// A message limit too small for a message with one update.
    MessageBytes(&'static str),
    /// The largest key and value do not fit in one sync message together
    /// (`key_bytes_max + value_bytes_max + KEY_VALUE_OVERHEAD_BYTES` over `sync_bytes_max`).
    KeyValueBytes,
    /// The tombstone grace is below twice the longer of the probe and key-value exchange
    /// intervals: a member would take its own wake-ups for a pause and drop its copies, and
    /// tombstones could be collected before the exchange spread them.
    TombstoneGrace,
    /// The bytes held of others' key-values in all (`held_bytes_max`) are below one
    /// largest key and value (`key_bytes_max + value_bytes_max`).
    HeldBytes,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::ZeroDuration(what) => write!(f, "{what} must be above 0 ms"),
            ConfigError::ProbeTimeout => {
                f.write_str("probe_timeout_ms must be shorter than probe_interval_ms")
            }
            ConfigError::ZeroLimit(what) => write!(f, "{what} must be at least 1"),
            ConfigError::Suspicion => {
                f.write_str("suspicion_mult and suspicion_max_mult must be at least 1")
            }
            ConfigError::MessageBytes(what) => write!(
                f,
                "{what} must be at least {MESSAGE_BYTES_MIN} bytes (a message with one update)"
            ),
            ConfigError::KeyValueBytes => write!(
                f,
                "key_bytes_max + value_bytes_max + {KEY_VALUE_OVERHEAD_BYTES} must fit in sync_bytes_max"
            ),
            ConfigError::HeldBytes => {
                f.write_str("held_bytes_max must be at least key_bytes_max + value_bytes_max")
            }
            ConfigError::TombstoneGrace => f.write_str(
                "tombstone_grace_ms must be at least twice the longer of probe_interval_ms and \
                 key_value_interval_ms",
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The smallest message limit: a header of the largest size (the version byte, the
/// sender's fields and the largest body, under 96 bytes) and one update of the largest
/// size.
pub const MESSAGE_BYTES_MIN: usize = 96 + UPDATE_BYTES_MAX;

/// What a key-value exchange message needs besides one key and its value: the message's
/// header, a delta's fields and a digest, each at their largest.
pub const KEY_VALUE_OVERHEAD_BYTES: usize = 320;

impl MemberConfig {
    /// The configuration of member `id`, whose random draws (probe order, indirect probe
    /// relays, sync peers) come from `rng_seed`, with the defaults below; change them with
    /// the builder's methods.
    ///
    /// | Setting | Default |
    /// |---|---|
    /// | probe interval / timeout | 1,000 ms / 500 ms |
    /// | indirect probes (`k`) | 3 |
    /// | suspicion timeout | `4 × max(1, log10 n) × probe interval`, up to 6 × that with Lifeguard |
    /// | local health multiplier | up to 8 |
    /// | gossip retransmissions | `4 × ceil(log10(n + 1))` |
    /// | gossip rounds | every 200 ms, to 3 members |
    /// | push-pull sync | every 10,000 ms |
    /// | dead members forgotten after | 60,000 ms |
    /// | members / gossip queue / relayed probes | 4,096 / 4,096 / 1,024 |
    /// | message / sync bytes | 1,400 / 65,536 |
    /// | Lifeguard | on |
    /// | a seed never heard from declared dead after | 5 unanswered pings, one a protocol period |
    /// | key-value exchange | every 1,000 ms, with one member |
    /// | deleted keys (tombstones) collected after | 60,000 ms |
    /// | keys per member / key bytes / value bytes | 1,024 / 128 / 4,096 |
    /// | bytes held of others' key-values, in all | 64 MiB |
    #[must_use]
    pub fn builder(id: NodeId, rng_seed: u64) -> MemberConfigBuilder {
        MemberConfigBuilder {
            config: MemberConfig {
                id,
                seeds: Vec::new(),
                rng_seed,
                probe_interval_ms: 1_000,
                probe_timeout_ms: 500,
                indirect_probes: 3,
                suspicion_mult: 4,
                suspicion_max_mult: 6,
                awareness_max: 8,
                retransmit_mult: 4,
                gossip_interval_ms: 200,
                gossip_fanout: 3,
                push_pull_interval_ms: 10_000,
                dead_reap_ms: 60_000,
                members_max: 4_096,
                gossip_queue_max: 4_096,
                relays_max: 1_024,
                message_bytes_max: 1_400,
                sync_bytes_max: 65_536,
                lifeguard: true,
                unseen_seed_probes: 5,
                kv_interval_ms: 1_000,
                kv_grace_ms: 60_000,
                kv_keys_max: 1_024,
                kv_key_bytes_max: 128,
                kv_value_bytes_max: 4_096,
                kv_held_bytes_max: 64 << 20,
                kv_limits_set: false,
                broken: Broken::default(),
            },
        }
    }

    /// This member.
    #[must_use]
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The members contacted to join, and re-announced to while they seem down.
    #[must_use]
    pub fn seeds(&self) -> &[NodeId] {
        &self.seeds
    }

    /// The protocol period: how often a member probes one other.
    #[must_use]
    pub fn probe_interval(&self) -> Duration {
        Duration::from_millis(self.probe_interval_ms)
    }

    /// The largest probe, acknowledgement or gossip message, in bytes.
    #[must_use]
    pub fn message_bytes_max(&self) -> usize {
        self.message_bytes_max
    }

    /// The largest push-pull sync message, in bytes.
    #[must_use]
    pub fn sync_bytes_max(&self) -> usize {
        self.sync_bytes_max
    }

    /// The most members (alive, suspected or dead tombstones) a member keeps.
    #[must_use]
    pub fn members_max(&self) -> usize {
        self.members_max
    }

    /// How long a dead member is kept (as a tombstone that stale gossip cannot revive)
    /// before it is forgotten.
    #[must_use]
    pub fn dead_reap(&self) -> Duration {
        Duration::from_millis(self.dead_reap_ms)
    }

    /// Whether Lifeguard's refinements are on.
    #[must_use]
    pub fn lifeguard(&self) -> bool {
        self.lifeguard
    }

    /// How many pings a seed this start never heard from goes unanswered before this
    /// member declares it dead (see [`MemberConfigBuilder::unseen_seed_probes`]).
    #[must_use]
    pub fn unseen_seed_probes(&self) -> u32 {
        self.unseen_seed_probes
    }

    /// How often a member runs the key-value exchange with one other.
    #[must_use]
    pub fn key_value_interval(&self) -> Duration {
        Duration::from_millis(self.kv_interval_ms)
    }

    /// How long a deleted key's tombstone is kept, by each member from when it learnt of
    /// the delete, before it is collected.
    #[must_use]
    pub fn tombstone_grace(&self) -> Duration {
        Duration::from_millis(self.kv_grace_ms)
    }

    /// The most keys a member owns (deleted ones not yet collected included), and so holds
    /// of each other member.
    #[must_use]
    pub fn keys_max(&self) -> usize {
        self.kv_keys_max
    }

    /// The most bytes (keys and values, tombstones' keys included) of other members'
    /// key-values this member holds in all, copies being taken included: past it a copy
    /// stops below the key that would cross it (see [`MemberConfigBuilder::held_bytes_max`]).
    #[must_use]
    pub fn held_bytes_max(&self) -> usize {
        self.kv_held_bytes_max
    }

    pub(crate) fn kv_limits(&self) -> crate::kv::KvLimits {
        crate::kv::KvLimits {
            held_bytes_max: self.kv_held_bytes_max,
            keys_max: self.kv_keys_max,
            key_bytes_max: self.kv_key_bytes_max,
            value_bytes_max: self.kv_value_bytes_max,
            grace_ms: self.kv_grace_ms,
            collect_without_mark: self.broken.collect_without_mark,
            ignore_floors: self.broken.ignore_floors,
        }
    }
}

/// Builds a [`MemberConfig`]; see [`MemberConfig::builder`] for the defaults.
#[derive(Debug, Clone)]
pub struct MemberConfigBuilder {
    config: MemberConfig,
}

impl MemberConfigBuilder {
    /// The members to join through (this member among them is ignored).
    #[must_use]
    pub fn seeds(mut self, seeds: impl IntoIterator<Item = NodeId>) -> Self {
        let id = self.config.id;
        let mut seeds: Vec<NodeId> = seeds.into_iter().filter(|&s| s != id).collect();
        seeds.sort_unstable();
        seeds.dedup();
        self.config.seeds = seeds;
        self
    }

    /// The protocol period and the time a direct probe waits for its acknowledgement before
    /// asking `k` others to probe indirectly.
    #[must_use]
    pub fn probe(mut self, interval_ms: u64, timeout_ms: u64) -> Self {
        self.config.probe_interval_ms = interval_ms;
        self.config.probe_timeout_ms = timeout_ms;
        self
    }

    /// How many members are asked to probe a silent member indirectly (`k`).
    #[must_use]
    pub fn indirect_probes(mut self, k: usize) -> Self {
        self.config.indirect_probes = k;
        self
    }

    /// The suspicion timeout: `mult × max(1, log10 n)` protocol periods, and with
    /// Lifeguard up to `max_mult` times that, shrinking as independent confirmations come.
    #[must_use]
    pub fn suspicion(mut self, mult: u32, max_mult: u32) -> Self {
        self.config.suspicion_mult = mult;
        self.config.suspicion_max_mult = max_mult;
        self
    }

    /// How many times each gossip update is sent: `mult × ceil(log10(n + 1))` (lambda).
    #[must_use]
    pub fn retransmit_mult(mut self, mult: u32) -> Self {
        self.config.retransmit_mult = mult;
        self
    }

    /// How often a member sends the gossip it has queued to `fanout` random live members,
    /// besides what rides on its probes (0 members: only on probes).
    #[must_use]
    pub fn gossip(mut self, interval_ms: u64, fanout: usize) -> Self {
        self.config.gossip_interval_ms = interval_ms;
        self.config.gossip_fanout = fanout;
        self
    }

    /// How often a member syncs its whole view with one other (a live member, or a seed or
    /// dead member to re-announce itself to), so that a healed partition always merges.
    #[must_use]
    pub fn push_pull_interval_ms(mut self, ms: u64) -> Self {
        self.config.push_pull_interval_ms = ms;
        self
    }

    /// How long a dead member is kept as a tombstone before it is forgotten.
    #[must_use]
    pub fn dead_reap_ms(mut self, ms: u64) -> Self {
        self.config.dead_reap_ms = ms;
        self
    }

    /// The limits: members kept, gossip updates queued, indirect probes relayed at once.
    #[must_use]
    pub fn limits(
        mut self,
        members_max: usize,
        gossip_queue_max: usize,
        relays_max: usize,
    ) -> Self {
        self.config.members_max = members_max;
        self.config.gossip_queue_max = gossip_queue_max;
        self.config.relays_max = relays_max;
        self
    }

    /// The largest message (probes, acknowledgements and their gossip) and the largest
    /// push-pull sync, in bytes.
    #[must_use]
    pub fn message_bytes_max(mut self, message_bytes_max: usize, sync_bytes_max: usize) -> Self {
        self.config.message_bytes_max = message_bytes_max;
        self.config.sync_bytes_max = sync_bytes_max;
        self
    }

    /// Lifeguard (Dadgar, Phillips and Currey, 2018) on or off: the local health multiplier
    /// (up to `awareness_max`) that slows a member's own probing when it misses acks and
    /// nacks, the suspicion timeout that starts long and shrinks with independent
    /// confirmations, and the buddy system (a probe of a suspected member tells it). Off,
    /// the member is plain SWIM.
    #[must_use]
    pub fn lifeguard(mut self, on: bool, awareness_max: u32) -> Self {
        self.config.lifeguard = on;
        self.config.awareness_max = awareness_max;
        self
    }

    /// How many unanswered pings declare dead a seed this start never heard from. A SWIM
    /// member probes only members it has heard from, so a configured seed that stopped (or
    /// never started) before any member heard of it would otherwise never be declared dead,
    /// and an application waiting for a death (to hand its work to others) would wait for
    /// ever. So a member pings every seed missing from its view once a protocol period; a
    /// seed that answered none of `probes` pings (each given a whole period) is handed up
    /// dead ([`MemberEvent`] with `state: Some(Dead)` and generation 0), within
    /// `probes + 2` protocol periods of this member becoming ready (longer while the local
    /// health multiplier stretches its periods). Nothing is gossiped of it: each member
    /// judges its own seeds. A seed that starts later is taken in as any new member (its
    /// first message is news that it is alive), and handed up alive. Default 5; at least 1
    /// ([`ConfigError::ZeroLimit`]).
    ///
    /// [`MemberEvent`]: crate::MemberEvent
    #[must_use]
    pub fn unseen_seed_probes(mut self, probes: u32) -> Self {
        self.config.unseen_seed_probes = probes;
        self
    }

    /// How often a member runs the key-value exchange (a digest to one random live member,
    /// which answers with what the member lacks and asks for what it lacks itself), and how
    /// long each member keeps a deleted key's tombstone before collecting it. The grace
    /// should be well above the time a member takes to declare a silent member dead: a
    /// member cut off for longer drops its copies of the other side's key-values then, and
    /// one that stays behind the collection mark is reset. It must be at least twice the
    /// longer of the probe interval and `interval_ms` ([`ConfigError::TombstoneGrace`]).
    #[must_use]
    pub fn key_values(mut self, interval_ms: u64, tombstone_grace_ms: u64) -> Self {
        self.config.kv_interval_ms = interval_ms;
        self.config.kv_grace_ms = tombstone_grace_ms;
        self
    }

    /// The key-value limits: keys a member owns (and holds of each other member), and the
    /// largest key and value, in bytes. Together with [`KEY_VALUE_OVERHEAD_BYTES`] the
    /// largest key and value must fit in `sync_bytes_max`; left unset, the value limit
    /// shrinks to fit.
    #[must_use]
    pub fn key_value_limits(
        mut self,
        keys_max: usize,
        key_bytes_max: usize,
        value_bytes_max: usize,
    ) -> Self {
        self.config.kv_keys_max = keys_max;
        self.config.kv_key_bytes_max = key_bytes_max;
        self.config.kv_value_bytes_max = value_bytes_max;
        self.config.kv_limits_set = true;
        self
    }

    /// The most bytes of other members' key-values this member holds in all: keys and
    /// values (a deleted key's key until its tombstone is collected) of every copy, and of
    /// every copy being taken (a reset replacing a copy needs room for both until it is
    /// swapped in). Without it the per-owner limits alone would let a member of a large
    /// cluster hold `members_max × keys_max × (key + value bytes)` (about 17.7 GB with the
    /// defaults). A key that would take the member past it is not taken: the copy stops
    /// below it (still the owner's state at some version, readable), a copy of an owner not
    /// held yet is not started, and either goes on once deletes collected or owners gone
    /// make room; each such key is counted ([`MemberStats::kv_over_bytes`]). A reset
    /// replacing a copy held (the owner's new start) is measured without that copy, so the
    /// bytes held may pass the limit by at most that one copy while it is taken. This member's
    /// own key-values are bounded by `keys_max` and the key and value limits instead.
    /// Default 64 MiB; at least `key_bytes_max + value_bytes_max`
    /// ([`ConfigError::HeldBytes`]).
    ///
    /// [`MemberStats::kv_over_bytes`]: crate::MemberStats::kv_over_bytes
    #[must_use]
    pub fn held_bytes_max(mut self, bytes: usize) -> Self {
        self.config.kv_held_bytes_max = bytes;
        self
    }

    /// Broken on purpose: deleted keys' tombstones are collected after the grace without
    /// moving the collection mark, so a member that missed the delete is never reset and
    /// keeps the key (and may hand it to others) for ever.
    #[cfg(feature = "broken")]
    #[must_use]
    pub fn broken_collecting_without_mark(mut self) -> Self {
        self.config.broken.collect_without_mark = true;
        self
    }

    /// Broken on purpose: owners' deletion floors are ignored, so a member takes a whole
    /// state of an owner from any holder, and a holder cut off from the key-value exchange
    /// through a collection hands a deleted key to a member holding no copy.
    #[cfg(feature = "broken")]
    #[must_use]
    pub fn broken_ignoring_deletion_floors(mut self) -> Self {
        self.config.broken.ignore_floors = true;
        self
    }

    /// Broken on purpose: the member never refutes a suspicion of itself, so a member that
    /// was paused is declared dead and stays so. For tests that show a checker catches it.
    #[cfg(feature = "broken")]
    #[must_use]
    pub fn broken_without_refutation(mut self) -> Self {
        self.config.broken.no_refutation = true;
        self
    }

    /// Broken on purpose: no push-pull sync and no re-announce to seeds and dead members,
    /// so the two sides of a healed partition never find each other again.
    #[cfg(feature = "broken")]
    #[must_use]
    pub fn broken_without_push_pull(mut self) -> Self {
        self.config.broken.no_push_pull = true;
        self
    }

    /// Broken on purpose: when two groups of the same size meet, each member's own group
    /// wins, where the rule says the group with the older coordinator wins; so neither
    /// merges, and a healed cluster keeps two coordinators.
    #[cfg(feature = "broken")]
    #[must_use]
    pub fn broken_own_side_wins_ties(mut self) -> Self {
        self.config.broken.own_side_wins_ties = true;
        self
    }

    /// The configuration.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for a zero duration or limit, a probe timeout not shorter than the
    /// interval, a tombstone grace below twice the longer of the probe and key-value
    /// intervals, a suspicion multiplier of zero, a message limit below
    /// [`MESSAGE_BYTES_MIN`], a largest key and value that do not fit in a sync, or a
    /// `held_bytes_max` below one largest key and value.
    pub fn build(self) -> Result<MemberConfig, ConfigError> {
        let c = self.config;
        for (value, what) in [
            (c.probe_interval_ms, "probe_interval_ms"),
            (c.probe_timeout_ms, "probe_timeout_ms"),
            (c.push_pull_interval_ms, "push_pull_interval_ms"),
            (c.gossip_interval_ms, "gossip_interval_ms"),
            (c.dead_reap_ms, "dead_reap_ms"),
            (c.kv_interval_ms, "key_value_interval_ms"),
            (c.kv_grace_ms, "tombstone_grace_ms"),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroDuration(what));
            }
        }
        if c.probe_timeout_ms >= c.probe_interval_ms {
            return Err(ConfigError::ProbeTimeout);
        }
        if c.kv_grace_ms / 2 < c.probe_interval_ms.max(c.kv_interval_ms) {
            return Err(ConfigError::TombstoneGrace);
        }
        for (value, what) in [
            (c.members_max, "members_max"),
            (c.gossip_queue_max, "gossip_queue_max"),
            (c.relays_max, "relays_max"),
            (c.retransmit_mult as usize, "retransmit_mult"),
            (c.awareness_max as usize, "awareness_max"),
            (c.unseen_seed_probes as usize, "unseen_seed_probes"),
            (c.kv_keys_max, "keys_max"),
            (c.kv_key_bytes_max, "key_bytes_max"),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroLimit(what));
            }
        }
        if c.suspicion_mult == 0 || c.suspicion_max_mult == 0 {
            return Err(ConfigError::Suspicion);
        }
        if c.message_bytes_max < MESSAGE_BYTES_MIN {
            return Err(ConfigError::MessageBytes("message_bytes_max"));
        }
        if c.sync_bytes_max < MESSAGE_BYTES_MIN {
            return Err(ConfigError::MessageBytes("sync_bytes_max"));
        }
        let mut c = c;
        if !c.kv_limits_set {
            // The default value limit gives way to a small sync limit.
            let room = c
                .sync_bytes_max
                .saturating_sub(c.kv_key_bytes_max + KEY_VALUE_OVERHEAD_BYTES);
            c.kv_value_bytes_max = c.kv_value_bytes_max.min(room);
        }
        let kv_bytes = c
            .kv_key_bytes_max
            .saturating_add(c.kv_value_bytes_max)
            .saturating_add(KEY_VALUE_OVERHEAD_BYTES);
        if c.kv_limits_set && kv_bytes > c.sync_bytes_max {
            return Err(ConfigError::KeyValueBytes);
        }
        if c.kv_held_bytes_max < c.kv_key_bytes_max.saturating_add(c.kv_value_bytes_max) {
            return Err(ConfigError::HeldBytes);
        }
        Ok(c)
    }
}
