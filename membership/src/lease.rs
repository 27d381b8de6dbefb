//! Lease: time-bound ownership replicated through a log, expired by the leader alone.
//!
//! A *lease* (Patterns of Distributed Systems) lets a client hold something (a lock, a
//! registration, a key) only for as long as it keeps saying it is alive: if it crashes or
//! is cut off, the lease runs out and what it held is released, without anyone having to
//! decide that the client is dead. This module is the state of such leases in a cluster
//! that replicates a log (the Consistent Core): every change goes through the log, so every
//! replica holds the same leases, and only the log's leader decides that time is up.
//!
//! Two halves, neither of which reads a clock or does I/O:
//!
//! - [`LeaseTable`], the replicated state. It changes only when an applied log entry says
//!   so ([`LeaseTable::apply`] of a [`LeaseCommand`]: grant, keep-alive, revoke, checkpoint,
//!   expire), plus the attaching and detaching of keys that the application's own commands
//!   do ([`LeaseTable::attach`], [`LeaseTable::grant_for_key`], [`LeaseTable::detach`]).
//!   Every replica applying the same entries in the same order ends with the same table;
//!   it is serialized into the application's snapshot.
//! - [`LeaseExpirer`], the leader's timer. It is handed the leader's monotonic time and
//!   what the table applied, and says which leases to propose for expiry (at most
//!   [`LeaseConfig::expiries_per_tick_max`] every [`LeaseConfig::expiry_tick_ms`]) and
//!   when to propose a checkpoint of their remaining time to live.
//!
//! # Time
//!
//! A lease's TTL is counted on the *leader's monotonic clock*, from the moment the leader
//! applies the entry that granted or kept it alive. A client that sent that keep-alive at
//! time `s` on its own clock and got the answer may believe it holds the lease until
//! `s + ttl - skew`, where `skew` bounds how much faster the leader's clock may run than
//! the client's over one TTL: the leader applied the entry after `s`, so it expires the
//! lease no earlier than `s + ttl` in its own time.
//!
//! Every node, leading or not, notes on its own monotonic clock when it applied each
//! lease's last renewal or checkpoint ([`LeaseExpirer::applied`]); that is where a node
//! that takes over counts the time left from. No two nodes' clocks are ever compared.
//! Replicated time (the milliseconds stamped on each log entry by its proposer, which
//! every replica sees alike) only answers "about how long is left" on any replica
//! ([`LeaseTable::remaining_ms`]); it decides nothing, because stamps of different
//! proposers are not comparable: a node that restarts carries its replicated clock on
//! from the last entry it applied, so its stamps lag the others' by as long as it was down,
//! and the replicated time between its stamp and a later leader's counts that lag as time
//! passed. (Capping a checkpoint by it, as an earlier version did, ended leases seconds
//! before their TTL once such a node had stamped a keep-alive.)
//!
//! # Only the leader expires, and a deposed leader never does
//!
//! Expiry is itself a log entry ([`LeaseCommand::Expire`]), proposed by the expirer of the
//! node that leads. It names the lease *and the renewal it expires* (the log index of the
//! grant or keep-alive the expirer last saw applied). The table applies it only if the
//! lease is still at that renewal; otherwise it does nothing ([`LeaseApplied::Stale`]).
//! Together with the log this gives:
//!
//! - An expiry proposed by a leader that is deposed before the entry commits is either
//!   overwritten by the next leader's log (a Raft entry that does not commit is never
//!   applied, so it revokes nothing) or committed later in its place in the log, after
//!   exactly the entries its proposer had before it; in that case the leader that proposed
//!   it had applied every keep-alive before it that it knew of, and one it had not yet
//!   applied (a keep-alive committed at an index below the expiry but not yet applied on
//!   the old leader) has moved the lease to a newer renewal, so the expiry is stale and
//!   does nothing. A keep-alive placed after the expiry in the log finds the lease gone and
//!   is refused, so its sender never believes it renewed.
//! - A node that stops leading calls [`LeaseExpirer::demote`] and proposes nothing more; a
//!   stuck old leader that wakes up after a pause and still thinks it leads can only
//!   propose, and its proposals do not commit once another leader has been elected
//!   (etcd's #12528 and #15247, a stuck leader revoking every lease, cannot happen).
//!
//! # A new leader does not renew leases forever
//!
//! A new leader does not know when the old one would have expired each lease (clocks are
//! not compared across nodes), so it must be generous, never early: it gives each lease
//! its *checkpointed* remaining TTL, counted from when it applied the entry that recorded
//! it (the renewal, or the last checkpoint), plus one election timeout of grace from the
//! later of that end and its takeover (so that clients cut off by the election can get a
//! keep-alive through to it) ([`LeaseExpirer::promote`]), unless the checkpoint says
//! nothing is left. The remaining TTL is checkpointed through the log: every
//! [`LeaseConfig::checkpoint_interval_ms`], and at once when a node takes over, the leader
//! proposes a [`LeaseCommand::Checkpoint`] of the leases whose last renewal or checkpoint
//! is older than that interval (at most [`LeaseConfig::checkpoints_per_entry_max`] each
//! time, oldest first). A checkpoint reports the time left *without* the grace (zero once
//! that has run out), so the grace never carries over from one leader to the next, and a
//! lease checkpointed at zero gets no grace from the next leader. Without checkpoints every
//! new leader would restart each lease at its full TTL, and a cluster electing leaders more
//! often than a TTL would keep a dead client's lease for ever (etcd #9888, kubernetes
//! #65497).
//!
//! Counting from the apply, not from the takeover, is what makes checkpoints enough: a
//! node that applied a checkpoint and later takes over has seen the time between the two
//! pass on its own clock, so however often leaders change, the time left falls as true
//! time passes (less the time each checkpoint took to reach the node that next takes
//! over). The one exception is a node that restarted, or installed a snapshot: it cannot
//! know when the entries it replayed were first applied, so it counts them from its
//! restart ([`LeaseExpirer::restored`]), which is later, never earlier, than the truth.
//!
//! The bound. A lease last renewed at `r` (when the leader applied the renewal, proposed at
//! `q <= r`) and not renewed again:
//!
//! - is never expired before `q + ttl` on any leader's clock (so never before a client
//!   that sent the renewal at `s <= q` may believe it holds the lease): a checkpoint
//!   proposed at `p` records at most what its leader had left, `d - p` for a deadline `d`
//!   that is at least `q + ttl` by induction, and a node that applies it does so after
//!   `p`, so its deadline, the apply plus what was recorded, is at least `d`;
//! - with no change of leader, is expired at the first expiry tick at or after
//!   `r + ttl` (its entry applied one commit later, and later still only when more than
//!   [`LeaseConfig::expiries_per_tick_max`] leases are due at once);
//! - otherwise, is expired by the leader that ends it an election timeout of grace (none
//!   if it took over with a checkpoint of zero), a tick and a commit after the later of
//!   its takeover and the deadline it took over with: `r + ttl` plus the time the lease's
//!   last checkpoint it applied took to reach it, plus, for each node that restarted since
//!   `r` and then led, the age at its restart of the last checkpoint it had applied (at
//!   most twice `checkpoint_interval_ms` and the time the election took while leaders
//!   stay up long enough to commit a checkpoint; with more than `checkpoints_per_entry_max`
//!   leases due, a multiple of it). These add up: a restarted leader's checkpoints carry
//!   what its restart added on to the next leader, which cannot tell it apart.
//!
//! So a lease nobody keeps alive ends, whatever the number of changes of leader in
//! between, by the later of the last takeover and `r + ttl + k × (2 ×
//! checkpoint_interval_ms + election time)` for `k` leaders that restarted before they
//! led (`k = 1` at most for a single restart), plus an election timeout, an expiry tick
//! and a commit; once a checkpoint of zero has committed, the next leader expires it at
//! once. Restarted leaders cannot keep a lease for ever: a restarted node stands for
//! election only after an election timeout without hearing from a leader, and time spent
//! so is not added (its restart is what it counts from), so each such takeover still
//! takes at least an election timeout off what the last checkpoint left.
//!
//! # Minimum TTL
//!
//! [`LeaseConfig::ttl_ms_min`] is one and a half election timeouts (rounded up), as etcd
//! has it: a leader change takes up to an election timeout before a new leader accepts
//! keep-alives, and a client that keeps alive every third of its TTL must be able to get
//! one through after that and before its lease ends. [`LeaseConfig::grant_ttl_ms`] raises a
//! shorter TTL to it. A key's own expiry ([`LeaseTable::grant_for_key`], Redis's `EX`) has
//! no keep-alive and so no minimum.
//!
//! # Keys and fencing
//!
//! Keys may be attached to a lease; revoking or expiring the lease deletes them with it
//! (the application deletes the keys [`LeaseApplied::Removed`] lists, in the same applied
//! entry, so no replica ever holds the keys of a lease that is gone). A key is attached
//! to at most one lease.
//!
//! A lease alone does not make a lock safe: a holder paused past its TTL still believes it
//! holds the lock when it resumes. The lock recipe therefore hands out a *fencing token*:
//! the lock is a key created under the holder's lease, and the token is that key's create
//! revision (the log index of the entry that created it, as etcd's lock returns the key's
//! `create_revision`). Every later holder's key is created at a larger revision, so a
//! store that accepts a write only with the current holder's token (compared with the lock
//! key's create revision when the write is applied) refuses a paused former holder's.
//!
//! # Example
//!
//! A lease granted, kept alive and expired by the leader, with a key deleted with it:
//!
//! ```
//! use synod_membership::lease::{
//!     LeaseApplied, LeaseCommand, LeaseConfig, LeaseExpirer, LeaseTable,
//! };
//! use synod_node::Time;
//!
//! let config = LeaseConfig::builder(1_000).build()?; // election timeout 1 s
//! assert_eq!(config.ttl_ms_min(), 1_500);
//! let mut table: LeaseTable<String> = LeaseTable::new(config.limits());
//! let mut expirer = LeaseExpirer::new(config.clone());
//! expirer.promote(Time::ZERO, &table); // this node leads
//!
//! // Log index 1: a grant of 2 s, applied at 0 ms on the leader's clock.
//! let ttl_ms = config.grant_ttl_ms(2_000)?;
//! let granted = table.apply(1, 0, &LeaseCommand::Grant { ttl_ms });
//! let LeaseApplied::Granted { lease, .. } = granted else { panic!("{granted:?}") };
//! expirer.applied(Time::ZERO, &granted);
//! table.attach("lock/a".to_string(), lease)?;
//!
//! // Index 2: a keep-alive at 1.5 s restarts the TTL.
//! let renewed = table.apply(2, 1_500, &LeaseCommand::KeepAlive { lease });
//! expirer.applied(Time::from_millis(1_500), &renewed);
//! assert!(expirer.expired(Time::from_millis(3_000)).is_empty());
//!
//! // At 3.5 s it has run out: the leader proposes its expiry, and applying it (index 3)
//! // removes the lease and lists its keys for deletion.
//! let expire = expirer.expired(Time::from_millis(3_500));
//! assert_eq!(expire, [LeaseCommand::Expire { lease, renewal: 2 }]);
//! let removed = table.apply(3, 3_500, &expire[0]);
//! assert_eq!(
//!     removed,
//!     LeaseApplied::Removed { lease, keys: vec!["lock/a".to_string()], expired: true }
//! );
//! assert!(table.get(lease).is_none() && table.lease_of(&"lock/a".to_string()).is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use synod_node::Time;

/// A lease's id: from 1, assigned by the table in the order grants are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LeaseId(pub u64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Leases a table holds unless configured otherwise (every key with its own expiry takes
/// one).
pub const LEASES_MAX_DEFAULT: usize = 1_000_000;
/// Keys attached to one lease unless configured otherwise.
pub const KEYS_PER_LEASE_MAX_DEFAULT: usize = 10_000;
/// The longest TTL unless configured otherwise: one year, in milliseconds.
pub const TTL_MS_MAX_DEFAULT: u64 = 365 * 24 * 3600 * 1000;
/// Leases proposed for expiry per expiry tick unless configured otherwise (with the
/// default tick, 1,000 a second, etcd's default revoke rate).
pub const EXPIRIES_PER_TICK_MAX_DEFAULT: usize = 50;
/// The expiry tick unless configured otherwise, in milliseconds.
pub const EXPIRY_TICK_MS_DEFAULT: u64 = 50;
/// Leases one checkpoint entry carries unless configured otherwise.
pub const CHECKPOINTS_PER_ENTRY_MAX_DEFAULT: usize = 1_000;

/// What the replicated table checks when it applies an entry; every replica must use the
/// same (they are part of the state machine's definition).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseLimits {
    /// Leases held at once: a grant past it is refused.
    pub leases_max: usize,
    /// Keys attached to one lease: an attach past it is refused.
    pub keys_per_lease_max: usize,
    /// The longest TTL, in milliseconds: a grant of more is refused.
    pub ttl_ms_max: u64,
}

impl Default for LeaseLimits {
    fn default() -> Self {
        LeaseLimits {
            leases_max: LEASES_MAX_DEFAULT,
            keys_per_lease_max: KEYS_PER_LEASE_MAX_DEFAULT,
            ttl_ms_max: TTL_MS_MAX_DEFAULT,
        }
    }
}

/// How leases are timed and bounded. Built with [`LeaseConfig::builder`] from the cluster's
/// election timeout, which the minimum TTL and a new leader's grace are derived from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    election_timeout_ms: u64,
    limits: LeaseLimits,
    expiries_per_tick_max: usize,
    expiry_tick_ms: u64,
    checkpoint_interval_ms: u64,
    checkpoints_per_entry_max: usize,
}

/// Builds a [`LeaseConfig`]; [`LeaseConfigBuilder::build`] checks it.
#[derive(Clone, Debug)]
pub struct LeaseConfigBuilder {
    config: LeaseConfig,
}

/// A [`LeaseConfig`] value out of range.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseConfigError {
    /// A duration or limit that must be above zero is zero (its name).
    Zero(&'static str),
    /// The longest TTL is below the minimum.
    TtlMax {
        /// The configured longest TTL.
        ttl_ms_max: u64,
        /// The minimum, from the election timeout.
        ttl_ms_min: u64,
    },
}

impl fmt::Display for LeaseConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseConfigError::Zero(name) => write!(f, "{name} must be above zero"),
            LeaseConfigError::TtlMax {
                ttl_ms_max,
                ttl_ms_min,
            } => write!(
                f,
                "ttl_ms_max ({ttl_ms_max}) is below the minimum TTL ({ttl_ms_min} ms, 1.5 election timeouts)"
            ),
        }
    }
}

impl std::error::Error for LeaseConfigError {}

impl LeaseConfig {
    /// A configuration for a cluster whose election timeout is at most
    /// `election_timeout_ms` (the longest one a node may draw), with the defaults: a
    /// checkpoint every half election timeout (so that leaders changing no faster than
    /// elections do still lose time on every lease between changes), [`EXPIRIES_PER_TICK_MAX_DEFAULT`] expiries
    /// every [`EXPIRY_TICK_MS_DEFAULT`], [`CHECKPOINTS_PER_ENTRY_MAX_DEFAULT`] leases per
    /// checkpoint and [`LeaseLimits::default`].
    #[must_use]
    pub fn builder(election_timeout_ms: u64) -> LeaseConfigBuilder {
        LeaseConfigBuilder {
            config: LeaseConfig {
                election_timeout_ms,
                limits: LeaseLimits::default(),
                expiries_per_tick_max: EXPIRIES_PER_TICK_MAX_DEFAULT,
                expiry_tick_ms: EXPIRY_TICK_MS_DEFAULT,
                checkpoint_interval_ms: (election_timeout_ms / 2).max(1),
                checkpoints_per_entry_max: CHECKPOINTS_PER_ENTRY_MAX_DEFAULT,
            },
        }
    }

    /// The election timeout (the longest), in milliseconds: a new leader's grace.
    #[must_use]
    pub fn election_timeout_ms(&self) -> u64 {
        self.election_timeout_ms
    }

    /// The shortest TTL a lease is granted: one and a half election timeouts, rounded up.
    #[must_use]
    pub fn ttl_ms_min(&self) -> u64 {
        self.election_timeout_ms
            .saturating_mul(3)
            .div_ceil(2)
            .max(1)
    }

    /// The table's limits.
    #[must_use]
    pub fn limits(&self) -> LeaseLimits {
        self.limits
    }

    /// Leases proposed for expiry at most per [`LeaseConfig::expiry_tick_ms`].
    #[must_use]
    pub fn expiries_per_tick_max(&self) -> usize {
        self.expiries_per_tick_max
    }

    /// How often the expirer looks for expired leases, in milliseconds.
    #[must_use]
    pub fn expiry_tick_ms(&self) -> u64 {
        self.expiry_tick_ms
    }

    /// How often remaining TTLs are checkpointed, in milliseconds.
    #[must_use]
    pub fn checkpoint_interval_ms(&self) -> u64 {
        self.checkpoint_interval_ms
    }

    /// Leases one checkpoint entry carries at most.
    #[must_use]
    pub fn checkpoints_per_entry_max(&self) -> usize {
        self.checkpoints_per_entry_max
    }

    /// The TTL to propose for a grant that asks for `requested_ms`: raised to
    /// [`LeaseConfig::ttl_ms_min`]; refused when zero or above the longest TTL. Done by the
    /// node that takes the request, so that the log holds the TTL every replica applies.
    ///
    /// # Errors
    ///
    /// [`LeaseError::Ttl`] for zero or more than `ttl_ms_max`.
    pub fn grant_ttl_ms(&self, requested_ms: u64) -> Result<u64, LeaseError> {
        if requested_ms == 0 || requested_ms > self.limits.ttl_ms_max {
            return Err(LeaseError::Ttl {
                ttl_ms: requested_ms,
                max: self.limits.ttl_ms_max,
            });
        }
        Ok(requested_ms.max(self.ttl_ms_min()))
    }
}

impl LeaseConfigBuilder {
    /// The table's limits.
    #[must_use]
    pub fn limits(mut self, limits: LeaseLimits) -> Self {
        self.config.limits = limits;
        self
    }

    /// Leases proposed for expiry at most every expiry tick.
    #[must_use]
    pub fn expiries_per_tick_max(mut self, n: usize) -> Self {
        self.config.expiries_per_tick_max = n;
        self
    }

    /// How often the expirer looks for expired leases, in milliseconds.
    #[must_use]
    pub fn expiry_tick_ms(mut self, ms: u64) -> Self {
        self.config.expiry_tick_ms = ms;
        self
    }

    /// How often remaining TTLs are checkpointed, in milliseconds.
    #[must_use]
    pub fn checkpoint_interval_ms(mut self, ms: u64) -> Self {
        self.config.checkpoint_interval_ms = ms;
        self
    }

    /// Leases one checkpoint entry carries at most.
    #[must_use]
    pub fn checkpoints_per_entry_max(mut self, n: usize) -> Self {
        self.config.checkpoints_per_entry_max = n;
        self
    }

    /// Checks the configuration.
    ///
    /// # Errors
    ///
    /// [`LeaseConfigError`] for a zero duration or limit, or a longest TTL below the
    /// minimum.
    pub fn build(self) -> Result<LeaseConfig, LeaseConfigError> {
        let c = self.config;
        let zero = [
            ("election_timeout_ms", c.election_timeout_ms == 0),
            ("expiries_per_tick_max", c.expiries_per_tick_max == 0),
            ("expiry_tick_ms", c.expiry_tick_ms == 0),
            ("checkpoint_interval_ms", c.checkpoint_interval_ms == 0),
            (
                "checkpoints_per_entry_max",
                c.checkpoints_per_entry_max == 0,
            ),
            ("leases_max", c.limits.leases_max == 0),
            ("keys_per_lease_max", c.limits.keys_per_lease_max == 0),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, z)| *z) {
            return Err(LeaseConfigError::Zero(name));
        }
        if c.limits.ttl_ms_max < c.ttl_ms_min() {
            return Err(LeaseConfigError::TtlMax {
                ttl_ms_max: c.limits.ttl_ms_max,
                ttl_ms_min: c.ttl_ms_min(),
            });
        }
        Ok(c)
    }
}

/// Why a lease operation was refused. Deterministic: every replica refuses alike.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum LeaseError {
    /// No such lease (never granted, revoked or expired).
    NotFound(LeaseId),
    /// The table holds `max` leases.
    TooMany {
        /// The limit.
        max: usize,
    },
    /// The lease holds `max` keys.
    TooManyKeys {
        /// The lease.
        lease: LeaseId,
        /// The limit.
        max: usize,
    },
    /// A TTL of zero or above the longest.
    Ttl {
        /// The TTL asked for, in milliseconds.
        ttl_ms: u64,
        /// The longest, in milliseconds.
        max: u64,
    },
}

impl fmt::Display for LeaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseError::NotFound(id) => write!(f, "lease {id} not found (expired or revoked)"),
            LeaseError::TooMany { max } => write!(f, "too many leases: at most {max}"),
            LeaseError::TooManyKeys { lease, max } => {
                write!(f, "lease {lease} holds its most keys ({max})")
            }
            LeaseError::Ttl { ttl_ms, max } => {
                write!(f, "TTL {ttl_ms} ms out of range: from 1 to {max} ms")
            }
        }
    }
}

impl std::error::Error for LeaseError {}

/// Whether a lease was granted on its own (kept alive, shared by any keys attached) or
/// made for one key's expiry (dropped as soon as the key leaves it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LeaseKind {
    /// Granted by [`LeaseCommand::Grant`].
    Shared,
    /// Made by [`LeaseTable::grant_for_key`] for its one key.
    Key,
}

/// One lease in the table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease<K: Ord> {
    /// The TTL it was granted, in milliseconds.
    pub ttl_ms: u64,
    /// The log index of the grant or the last keep-alive applied.
    pub renewal: u64,
    /// The remaining TTL at the last renewal (the TTL) or checkpoint, in milliseconds.
    pub remaining_ms: u64,
    /// The replicated time of that renewal or checkpoint, in milliseconds (a checkpoint
    /// stamped earlier than the last keeps the later).
    pub stamped_ms: u64,
    /// Shared or a key's own.
    pub kind: LeaseKind,
    /// The keys attached to it.
    pub keys: BTreeSet<K>,
}

/// A lease's remaining TTL, as its leader measured it (part of a
/// [`LeaseCommand::Checkpoint`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The lease.
    pub lease: LeaseId,
    /// The renewal the measure is of: a checkpoint of an older renewal is ignored.
    pub renewal: u64,
    /// Milliseconds left.
    pub remaining_ms: u64,
}

/// A change to the lease table, carried by the log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LeaseCommand {
    /// Grants a shared lease of `ttl_ms` (from [`LeaseConfig::grant_ttl_ms`]).
    Grant {
        /// The TTL, in milliseconds.
        ttl_ms: u64,
    },
    /// Restarts a lease's TTL.
    KeepAlive {
        /// The lease.
        lease: LeaseId,
    },
    /// Removes a lease and its keys.
    Revoke {
        /// The lease.
        lease: LeaseId,
    },
    /// Records the leader's measure of remaining TTLs (each at most the lease's TTL).
    Checkpoint {
        /// One per lease.
        leases: Vec<Checkpoint>,
    },
    /// Removes a lease and its keys if it is still at `renewal` (proposed by the leader's
    /// [`LeaseExpirer`]).
    Expire {
        /// The lease.
        lease: LeaseId,
        /// The renewal the proposer saw run out.
        renewal: u64,
    },
}

/// What applying a lease operation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseApplied<K> {
    /// A lease was granted (shared, or a key's own).
    Granted {
        /// Its id.
        lease: LeaseId,
        /// Its TTL, in milliseconds.
        ttl_ms: u64,
        /// The log index of the grant.
        renewal: u64,
    },
    /// A lease was kept alive.
    Renewed {
        /// The lease.
        lease: LeaseId,
        /// Its TTL, in milliseconds.
        ttl_ms: u64,
        /// The log index of the keep-alive.
        renewal: u64,
    },
    /// A lease was removed; the application must delete `keys` in the same step.
    Removed {
        /// The lease.
        lease: LeaseId,
        /// The keys that were attached to it, in order.
        keys: Vec<K>,
        /// Whether it expired (rather than being revoked or left by its key).
        expired: bool,
    },
    /// Checkpoints recorded: the leases whose checkpoint matched their renewal.
    Checkpointed(Vec<LeaseId>),
    /// An expiry of a renewal the lease is no longer at, or of a lease already gone:
    /// nothing done.
    Stale,
    /// Refused; nothing done.
    Refused(LeaseError),
}

/// The replicated lease table. See the module documentation.
///
/// Serialized as its leases and the next id; the key index is rebuilt on deserialization,
/// and the limits are the deserializing replica's ([`LeaseTable::set_limits`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    from = "TableData<K>",
    bound(
        serialize = "K: Ord + Serialize",
        deserialize = "K: Ord + Clone + Deserialize<'de>"
    )
)]
pub struct LeaseTable<K: Ord> {
    next_id: u64,
    leases: BTreeMap<LeaseId, Lease<K>>,
    #[serde(skip)]
    by_key: BTreeMap<K, LeaseId>,
    #[serde(skip)]
    limits: LeaseLimits,
}

/// [`LeaseTable`]'s serialized fields.
#[derive(Deserialize)]
#[serde(bound(deserialize = "K: Ord + Deserialize<'de>"))]
struct TableData<K: Ord> {
    next_id: u64,
    leases: BTreeMap<LeaseId, Lease<K>>,
}

impl<K: Ord + Clone> From<TableData<K>> for LeaseTable<K> {
    fn from(data: TableData<K>) -> Self {
        let mut by_key = BTreeMap::new();
        for (id, lease) in &data.leases {
            for key in &lease.keys {
                by_key.insert(key.clone(), *id);
            }
        }
        LeaseTable {
            next_id: data.next_id,
            leases: data.leases,
            by_key,
            limits: LeaseLimits::default(),
        }
    }
}

impl<K: Ord + Clone> Default for LeaseTable<K> {
    fn default() -> Self {
        LeaseTable::new(LeaseLimits::default())
    }
}

impl<K: Ord + Clone> LeaseTable<K> {
    /// An empty table.
    #[must_use]
    pub fn new(limits: LeaseLimits) -> LeaseTable<K> {
        LeaseTable {
            next_id: 1,
            leases: BTreeMap::new(),
            by_key: BTreeMap::new(),
            limits,
        }
    }

    /// Sets the limits (after deserializing: they are not in the encoding).
    pub fn set_limits(&mut self, limits: LeaseLimits) {
        self.limits = limits;
    }

    /// Leases held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether it holds no lease.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// A lease.
    #[must_use]
    pub fn get(&self, lease: LeaseId) -> Option<&Lease<K>> {
        self.leases.get(&lease)
    }

    /// Every lease, by id.
    pub fn iter(&self) -> impl Iterator<Item = (LeaseId, &Lease<K>)> {
        self.leases.iter().map(|(id, l)| (*id, l))
    }

    /// The lease `key` is attached to.
    #[must_use]
    pub fn lease_of(&self, key: &K) -> Option<LeaseId> {
        self.by_key.get(key).copied()
    }

    /// The remaining TTL of `lease` at replicated time `time_ms`, from its last renewal or
    /// checkpoint: an estimate any replica can give (the leader's own clock decides).
    #[must_use]
    pub fn remaining_ms(&self, lease: LeaseId, time_ms: u64) -> Option<u64> {
        let l = self.leases.get(&lease)?;
        Some(
            l.remaining_ms
                .saturating_sub(time_ms.saturating_sub(l.stamped_ms)),
        )
    }

    /// Applies a command from the log entry at `index`, stamped with replicated time
    /// `time_ms`. Deterministic.
    pub fn apply(&mut self, index: u64, time_ms: u64, command: &LeaseCommand) -> LeaseApplied<K> {
        match *command {
            LeaseCommand::Grant { ttl_ms } => {
                match self.grant(index, time_ms, ttl_ms, LeaseKind::Shared) {
                    Ok(lease) => LeaseApplied::Granted {
                        lease,
                        ttl_ms,
                        renewal: index,
                    },
                    Err(e) => LeaseApplied::Refused(e),
                }
            }
            LeaseCommand::KeepAlive { lease } => match self.leases.get_mut(&lease) {
                Some(l) => {
                    l.renewal = index;
                    l.remaining_ms = l.ttl_ms;
                    l.stamped_ms = time_ms;
                    LeaseApplied::Renewed {
                        lease,
                        ttl_ms: l.ttl_ms,
                        renewal: index,
                    }
                }
                None => LeaseApplied::Refused(LeaseError::NotFound(lease)),
            },
            LeaseCommand::Revoke { lease } => match self.remove(lease, false) {
                Some(removed) => removed,
                None => LeaseApplied::Refused(LeaseError::NotFound(lease)),
            },
            LeaseCommand::Checkpoint { ref leases } => {
                let mut recorded = Vec::new();
                for c in leases {
                    // What the leader measured on its own clock, never more than the TTL.
                    // (Not capped by replicated time: stamps of different proposers are
                    // not comparable, see the module documentation.)
                    if let Some(l) = self.leases.get_mut(&c.lease)
                        && l.renewal == c.renewal
                    {
                        l.remaining_ms = c.remaining_ms.min(l.ttl_ms);
                        l.stamped_ms = l.stamped_ms.max(time_ms);
                        recorded.push(c.lease);
                    }
                }
                LeaseApplied::Checkpointed(recorded)
            }
            LeaseCommand::Expire { lease, renewal } => {
                if self
                    .leases
                    .get(&lease)
                    .is_some_and(|l| l.renewal == renewal)
                {
                    self.remove(lease, true).unwrap_or(LeaseApplied::Stale)
                } else {
                    LeaseApplied::Stale
                }
            }
        }
    }

    fn grant(
        &mut self,
        index: u64,
        time_ms: u64,
        ttl_ms: u64,
        kind: LeaseKind,
    ) -> Result<LeaseId, LeaseError> {
        if ttl_ms == 0 || ttl_ms > self.limits.ttl_ms_max {
            return Err(LeaseError::Ttl {
                ttl_ms,
                max: self.limits.ttl_ms_max,
            });
        }
        if self.leases.len() >= self.limits.leases_max {
            return Err(LeaseError::TooMany {
                max: self.limits.leases_max,
            });
        }
        let id = LeaseId(self.next_id);
        self.next_id += 1;
        self.leases.insert(
            id,
            Lease {
                ttl_ms,
                renewal: index,
                remaining_ms: ttl_ms,
                stamped_ms: time_ms,
                kind,
                keys: BTreeSet::new(),
            },
        );
        Ok(id)
    }

    fn remove(&mut self, lease: LeaseId, expired: bool) -> Option<LeaseApplied<K>> {
        let l = self.leases.remove(&lease)?;
        for key in &l.keys {
            self.by_key.remove(key);
        }
        Some(LeaseApplied::Removed {
            lease,
            keys: l.keys.into_iter().collect(),
            expired,
        })
    }

    /// Attaches `key` to the shared lease `lease`, detaching it from any other first.
    /// Returns what the detaching removed (a key's own lease), if anything.
    ///
    /// # Errors
    ///
    /// [`LeaseError::NotFound`] for a lease that is not held (or is a key's own),
    /// [`LeaseError::TooManyKeys`] for a full one; nothing changes then.
    pub fn attach(
        &mut self,
        key: K,
        lease: LeaseId,
    ) -> Result<Option<LeaseApplied<K>>, LeaseError> {
        self.can_attach(&key, lease)?;
        if self.lease_of(&key) == Some(lease) {
            return Ok(None);
        }
        let detached = self.detach(&key);
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.insert(key.clone());
        }
        self.by_key.insert(key, lease);
        Ok(detached)
    }

    /// Whether [`LeaseTable::attach`] of `key` to `lease` would succeed (for an
    /// application that must check before it changes anything else).
    ///
    /// # Errors
    ///
    /// What [`LeaseTable::attach`] would refuse with.
    pub fn can_attach(&self, key: &K, lease: LeaseId) -> Result<(), LeaseError> {
        let max = self.limits.keys_per_lease_max;
        match self.leases.get(&lease) {
            Some(l) if l.kind == LeaseKind::Shared => {
                if l.keys.len() >= max && !l.keys.contains(key) {
                    return Err(LeaseError::TooManyKeys { lease, max });
                }
                Ok(())
            }
            _ => Err(LeaseError::NotFound(lease)),
        }
    }

    /// Gives `key` a lease of its own of `ttl_ms` (a Redis key's expiry), granted by the
    /// entry at `index`, detaching it from any other first. Returns the grant, and what the
    /// detaching removed if anything.
    ///
    /// # Errors
    ///
    /// [`LeaseError::Ttl`] or [`LeaseError::TooMany`]; nothing changes then.
    pub fn grant_for_key(
        &mut self,
        index: u64,
        time_ms: u64,
        key: K,
        ttl_ms: u64,
    ) -> Result<(LeaseApplied<K>, Option<LeaseApplied<K>>), LeaseError> {
        self.can_grant_for_key(&key, ttl_ms)?;
        let detached = self.detach(&key);
        let lease = self.grant(index, time_ms, ttl_ms, LeaseKind::Key)?;
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.insert(key.clone());
        }
        self.by_key.insert(key, lease);
        Ok((
            LeaseApplied::Granted {
                lease,
                ttl_ms,
                renewal: index,
            },
            detached,
        ))
    }

    /// Whether [`LeaseTable::grant_for_key`] of `key` for `ttl_ms` would succeed (for an
    /// application that must check before it changes anything else).
    ///
    /// # Errors
    ///
    /// What [`LeaseTable::grant_for_key`] would refuse with.
    pub fn can_grant_for_key(&self, key: &K, ttl_ms: u64) -> Result<(), LeaseError> {
        let replaces_own = self
            .lease_of(key)
            .and_then(|id| self.leases.get(&id))
            .is_some_and(|l| l.kind == LeaseKind::Key);
        if ttl_ms == 0 || ttl_ms > self.limits.ttl_ms_max {
            return Err(LeaseError::Ttl {
                ttl_ms,
                max: self.limits.ttl_ms_max,
            });
        }
        if !replaces_own && self.leases.len() >= self.limits.leases_max {
            return Err(LeaseError::TooMany {
                max: self.limits.leases_max,
            });
        }
        Ok(())
    }

    /// Detaches `key` from its lease (the key was deleted or overwritten without its
    /// expiry). A key's own lease goes with it: the removal is returned (not expired).
    pub fn detach(&mut self, key: &K) -> Option<LeaseApplied<K>> {
        let lease = self.by_key.remove(key)?;
        let l = self.leases.get_mut(&lease)?;
        l.keys.remove(key);
        if l.kind == LeaseKind::Key {
            return self.remove(lease, false);
        }
        None
    }
}

/// What the expirer tracks of a lease while its node leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tracked {
    /// When it runs out, on the leader's clock, by its renewal or checkpoint alone (what a
    /// checkpoint reports).
    deadline: Time,
    /// When it is expired: the deadline, or, for a lease this leader took over, the
    /// deadline plus an election timeout of grace (never checkpointed).
    expire_at: Time,
    /// The renewal it runs out at.
    renewal: u64,
    /// Its TTL.
    ttl_ms: u64,
    /// The next time the expirer acts on it: `expire_at`, or a retry of an expiry already
    /// proposed.
    next: Time,
    /// When it was last renewed or checkpointed (on this leader's clock; a lease taken
    /// over counts as due for a checkpoint at once).
    stamped: Time,
}

/// The leader's lease timer. See the module documentation.
///
/// Fed with [`LeaseExpirer::promote`] when its node becomes leader (with the table as
/// applied so far), [`LeaseExpirer::applied`] for everything the table applies while it
/// leads, and [`LeaseExpirer::demote`] as soon as it stops leading. While it leads,
/// [`LeaseExpirer::expired`] and [`LeaseExpirer::checkpoint`] say what to propose.
#[derive(Clone, Debug)]
pub struct LeaseExpirer {
    config: LeaseConfig,
    leading: bool,
    /// Per lease, when this node applied the entry that last set its time left (its
    /// renewal, or a checkpoint of it), on this node's clock, whether it led or not: the
    /// time left counts from there when it takes over.
    seen: BTreeMap<LeaseId, Time>,
    tracked: BTreeMap<LeaseId, Tracked>,
    /// `(next, lease)` for every tracked lease.
    queue: BTreeSet<(Time, LeaseId)>,
    /// `(stamped, lease)` for every tracked lease.
    stamps: BTreeSet<(Time, LeaseId)>,
    next_tick: Time,
    next_checkpoint: Time,
    #[cfg(feature = "broken")]
    broken: BrokenExpirer,
}

/// The expirer's deliberately broken behaviours (only with the `broken` feature).
#[cfg(feature = "broken")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct BrokenExpirer {
    /// A new leader gives every lease its full TTL, whatever was checkpointed.
    renew_on_election: bool,
    /// Expires even while not leading.
    expire_while_following: bool,
}

fn after(t: Time, ms: u64) -> Time {
    t.saturating_add(Duration::from_millis(ms))
}

impl LeaseExpirer {
    /// An expirer of a node that does not lead (yet).
    #[must_use]
    pub fn new(config: LeaseConfig) -> LeaseExpirer {
        LeaseExpirer {
            config,
            leading: false,
            seen: BTreeMap::new(),
            tracked: BTreeMap::new(),
            queue: BTreeSet::new(),
            stamps: BTreeSet::new(),
            next_tick: Time::ZERO,
            next_checkpoint: Time::ZERO,
            #[cfg(feature = "broken")]
            broken: BrokenExpirer::default(),
        }
    }

    /// Deliberately broken: a new leader restarts every lease at its full TTL instead of
    /// its checkpointed remaining one, so a cluster that keeps electing leaders renews
    /// leases for ever. For tests that show a checker catches it.
    #[cfg(feature = "broken")]
    #[must_use]
    pub fn broken_renew_on_election(mut self) -> Self {
        self.broken.renew_on_election = true;
        self
    }

    /// Deliberately broken: [`LeaseExpirer::demote`] keeps the deadlines, and
    /// [`LeaseExpirer::expired`] goes on proposing on a node that no longer leads. For
    /// tests that show a checker catches it.
    #[cfg(feature = "broken")]
    #[must_use]
    pub fn broken_expire_while_following(mut self) -> Self {
        self.broken.expire_while_following = true;
        self
    }

    fn renews_on_election(&self) -> bool {
        #[cfg(feature = "broken")]
        {
            self.broken.renew_on_election
        }
        #[cfg(not(feature = "broken"))]
        false
    }

    fn expires_while_following(&self) -> bool {
        #[cfg(feature = "broken")]
        {
            self.broken.expire_while_following
        }
        #[cfg(not(feature = "broken"))]
        false
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Whether it acts (its node leads).
    #[must_use]
    pub fn is_leading(&self) -> bool {
        self.leading
    }

    /// Leases tracked.
    #[must_use]
    pub fn tracked(&self) -> usize {
        self.tracked.len()
    }

    /// Its node became leader at `now`, with `table` as applied so far: every lease runs
    /// out at its checkpointed remaining TTL counted from when this node applied the
    /// entry that recorded it ([`LeaseExpirer::applied`]; from `now` for one it never saw
    /// applied, restored from a snapshot say), and is expired an election timeout after
    /// that or after `now`, whichever is later (the grace, which no checkpoint carries on
    /// to the next leader, and which a lease checkpointed with nothing left does not get).
    /// Every lease is due for a checkpoint at once.
    pub fn promote<K: Ord + Clone>(&mut self, now: Time, table: &LeaseTable<K>) {
        self.clear();
        self.leading = true;
        let due = now.saturating_sub(Duration::from_millis(self.config.checkpoint_interval_ms));
        for (id, lease) in table.iter() {
            let (from, left) = if self.renews_on_election() {
                (now, lease.ttl_ms)
            } else {
                let seen = self.seen.get(&id).copied().unwrap_or(now);
                (seen.min(now), lease.remaining_ms)
            };
            let deadline = after(from, left);
            // No grace for a lease a checkpoint found run out: under leaders changing
            // faster than an election timeout, a grace from each would renew it for ever.
            let expire_at = if left == 0 {
                deadline
            } else {
                after(deadline.max(now), self.config.election_timeout_ms)
            };
            self.track(id, lease.renewal, lease.ttl_ms, (deadline, expire_at), due);
        }
        self.next_tick = now;
        self.next_checkpoint = now;
    }

    /// This node's leases were replaced at `now` by `table` (a snapshot installed, or
    /// loaded at a restart): it counts each one's time left from `now`, as it does for an
    /// entry it applies. A node that leads is promoted again after this.
    pub fn restored<K: Ord + Clone>(&mut self, now: Time, table: &LeaseTable<K>) {
        self.seen = table.iter().map(|(id, _)| (id, now)).collect();
    }

    /// Its node does not lead any more: forget every deadline, propose nothing.
    pub fn demote(&mut self) {
        if self.expires_while_following() {
            return;
        }
        self.leading = false;
        self.clear();
    }

    fn clear(&mut self) {
        self.tracked.clear();
        self.queue.clear();
        self.stamps.clear();
    }

    fn untrack(&mut self, id: LeaseId) {
        if let Some(t) = self.tracked.remove(&id) {
            self.queue.remove(&(t.next, id));
            self.stamps.remove(&(t.stamped, id));
        }
    }

    fn track(
        &mut self,
        id: LeaseId,
        renewal: u64,
        ttl_ms: u64,
        (deadline, expire_at): (Time, Time),
        stamped: Time,
    ) {
        self.untrack(id);
        let t = Tracked {
            deadline,
            expire_at,
            renewal,
            ttl_ms,
            next: expire_at,
            stamped,
        };
        self.tracked.insert(id, t);
        self.queue.insert((expire_at, id));
        self.stamps.insert((stamped, id));
    }

    /// The table applied `what` at `now` (the node's monotonic time when it applied the
    /// entry). Fed on every node, leading or not: a node that takes over counts each
    /// lease's time left from when it applied the entry that recorded it.
    pub fn applied<K>(&mut self, now: Time, what: &LeaseApplied<K>) {
        match what {
            LeaseApplied::Granted { lease, .. } | LeaseApplied::Renewed { lease, .. } => {
                self.seen.insert(*lease, now);
            }
            LeaseApplied::Checkpointed(leases) => {
                for lease in leases {
                    self.seen.insert(*lease, now);
                }
            }
            LeaseApplied::Removed { lease, .. } => {
                self.seen.remove(lease);
            }
            LeaseApplied::Stale | LeaseApplied::Refused(_) => {}
        }
        if !self.leading {
            return;
        }
        match *what {
            LeaseApplied::Granted {
                lease,
                ttl_ms,
                renewal,
            }
            | LeaseApplied::Renewed {
                lease,
                ttl_ms,
                renewal,
            } => {
                let deadline = after(now, ttl_ms);
                self.track(lease, renewal, ttl_ms, (deadline, deadline), now);
            }
            LeaseApplied::Removed { lease, .. } => self.untrack(lease),
            LeaseApplied::Checkpointed(_) | LeaseApplied::Stale | LeaseApplied::Refused(_) => {}
        }
    }

    /// The expiries to propose at `now`: leases whose deadline has passed, at most
    /// [`LeaseConfig::expiries_per_tick_max`] once per [`LeaseConfig::expiry_tick_ms`].
    /// Each is proposed again an election timeout later if its entry has not been applied
    /// by then (a proposal lost in a leadership change). Nothing while not leading.
    pub fn expired(&mut self, now: Time) -> Vec<LeaseCommand> {
        if !self.leading || now < self.next_tick {
            return Vec::new();
        }
        self.next_tick = after(now, self.config.expiry_tick_ms);
        let mut out = Vec::new();
        while out.len() < self.config.expiries_per_tick_max {
            let Some(&(next, id)) = self.queue.first() else {
                break;
            };
            if next > now {
                break;
            }
            self.queue.remove(&(next, id));
            let Some(t) = self.tracked.get_mut(&id) else {
                continue;
            };
            t.next = after(now, self.config.election_timeout_ms.max(1));
            self.queue.insert((t.next, id));
            out.push(LeaseCommand::Expire {
                lease: id,
                renewal: t.renewal,
            });
        }
        out
    }

    /// The checkpoint to propose at `now`, once every
    /// [`LeaseConfig::checkpoint_interval_ms`]: the remaining TTL of the leases whose last
    /// renewal or checkpoint is at least that old, oldest first, at most
    /// [`LeaseConfig::checkpoints_per_entry_max`]. `None` when none is due or not leading.
    pub fn checkpoint(&mut self, now: Time) -> Option<LeaseCommand> {
        if !self.leading || now < self.next_checkpoint {
            return None;
        }
        self.next_checkpoint = after(now, self.config.checkpoint_interval_ms);
        let interval_ms = self.config.checkpoint_interval_ms;
        let due: Vec<LeaseId> = self
            .stamps
            .iter()
            .take_while(|(stamped, _)| after(*stamped, interval_ms) <= now)
            .take(self.config.checkpoints_per_entry_max)
            .map(|(_, id)| *id)
            .collect();
        let mut leases = Vec::with_capacity(due.len());
        for id in due {
            let Some(t) = self.tracked.get_mut(&id) else {
                continue;
            };
            self.stamps.remove(&(t.stamped, id));
            t.stamped = now;
            self.stamps.insert((now, id));
            let remaining = t.deadline.saturating_duration_since(now);
            leases.push(Checkpoint {
                lease: id,
                renewal: t.renewal,
                remaining_ms: u64::try_from(remaining.as_millis())
                    .unwrap_or(u64::MAX)
                    .min(t.ttl_ms),
            });
        }
        (!leases.is_empty()).then_some(LeaseCommand::Checkpoint { leases })
    }

    /// When it next has something to do (an expiry or a checkpoint), if it leads.
    #[must_use]
    pub fn next_wake(&self) -> Option<Time> {
        if !self.leading {
            return None;
        }
        let expiry = self.queue.first().map(|(t, _)| (*t).max(self.next_tick));
        let checkpoint = (!self.tracked.is_empty()).then_some(self.next_checkpoint);
        match (expiry, checkpoint) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How long until this leader expires `lease`, by its clock at `now` (grace
    /// included), if it tracks it.
    #[must_use]
    pub fn remaining(&self, now: Time, lease: LeaseId) -> Option<Duration> {
        self.tracked
            .get(&lease)
            .map(|t| t.expire_at.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests;
