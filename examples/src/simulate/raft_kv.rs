//! The `raft-kv` system: the Consistent Core node (Raft and its key-value store) under
//! `synod-sim`.
//!
//! [`CoreNode`] is the node that `synod node` runs as a real process: `synod-consensus`'s
//! Raft plus the key-value state machine, with no I/O of its own, on the node contract.
//! Here the same code runs in the simulator through synod-sim's one adapter for every
//! contract state machine, `ProtocolNode` ([`RaftKvNode`]), given what only this system
//! knows ([`CoreStore`]) and wrapped in what the simulation does around it ([`SimCore`]).
//! What the adapter and the store do is what any driver of a Raft node owes it:
//!
//! - **A durable log.** The node keeps its log in memory and hands every change to it
//!   (appends, truncations, the term and vote, snapshots) out with a persistence request
//!   (`Effect::Persist`); the store applies each write to the production log store,
//!   `synod_consensus::WalLogStore`, on the simulated disk (its entry log and meta log in
//!   directories of their own, through the disk's `synod_wal::Storage`; a snapshot's file
//!   and record are written and synced as the write is applied) and writes out what the
//!   logs buffered ([`WalLogStore::flush`]); the adapter asks the disk for a sync and hands
//!   the token back only once the sync is done: Raft must not vote or acknowledge entries it
//!   could lose.
//! - **Recovery.** On start the store is opened on what survived on the disk, and its own
//!   recovery runs: torn tails cut, a compaction or snapshot install that a crash cut short
//!   reconciled. Damage it cannot repair (which the simulated disk never causes to synced
//!   data) stops the node with the store's error.
//! - **Time.** Every input reaches the node with the node's simulated monotonic clock read
//!   at that moment: the clock the nemesis makes drift, that clock jumps do not move (they
//!   step the wall reading only), and that runs on while the node is paused. The node runs
//!   Raft's ticks (5 ms each) for the time passed before it looks at the input, so a lease
//!   read is checked against the time it is taken at; it asks to be woken for the next tick
//!   (and for its hand-over and membership-change times) when no other input comes.
//! - **Fail-stop.** A node whose disk fails, or that reports it cannot continue, stops
//!   and answers nothing more; the simulator injects neither, so the invariant reports it.
//!
//! The nodes ([`NodeOptions`]; `synod sim raft-kv` runs the defaults) take lease reads,
//! with the margin ([`lease_drift_ticks`]) that the simulation's clock-drift bound
//! ([`CLOCK_DRIFT_PPM_MAX`], to which the nemesis's drift is set) requires; snapshot and
//! compact their logs every 200 applied entries, so that a node that lags or restarts
//! behind the leader's snapshot installs it; and, while they lead, hand their leadership
//! over (Raft's leadership transfer, [`Command::HandOver`]) every 300 ms of their clock. A
//! [`Tally`] counts what the nodes did ([`Activity`]): lease reads served under a lease and
//! those that fell back to a read index, compactions, snapshot installs, hand-overs,
//! transfers, and membership changes proposed and committed. Membership changes
//! ([`Command::ProposeMembership`]) are off by default and on in the CI test
//! ([`NodeOptions::with_membership_changes`]): a leader, every so often on its clock, proposes
//! one drawn at random among the simulated nodes ([`membership_change`]). Clients reach
//! learners and removed nodes as any other node that does not lead.
//!
//! `synod sim raft-kv`'s clients ([`clients`]) write and read eight keys, holding unique
//! values, half of the reads through Raft's read index and half under the leader's lease,
//! each request sent to the leader the client last heard of, or to a random node. "Not the
//! leader" and "retry" mean the command was not and will not be applied, so the operation
//! failed; "unknown" (a proposal the node lost track of in a leadership change) may still
//! be applied, and no answer in time is unknown too.
//!
//! After every event an invariant checks that no node stopped, and hands every running
//! node's Raft state to `synod-consensus`'s [`SafetyChecker`]: the five properties of the
//! Raft paper's Figure 3 (Election Safety, Leader Append-Only, Log Matching, Leader
//! Completeness, State Machine Safety) and commit and applied indexes that never go back
//! while a node is up. A crashed node is missing from the check, so the checker knows that
//! the node it sees next is a restart. The checker only reads the nodes: it draws no
//! randomness and changes no event, so runs and trace hashes are the same as without it. A
//! violation fails the run with its event.
//!
//! [`simulation_watched`] also runs watchers ([`super::watchers`]): each node keeps a watch
//! hub fed by what its core applied, and streams that move between nodes are checked
//! against the six watch guarantees in the same invariant.
//!
//! The CI test `tests/it/core_sim.rs` runs the same cluster through [`simulation`], with
//! its own timing, clients that also compare-and-set and, in every other seed, send each
//! request to a random node ([`KvClients`]), [`NodeOptions`] of its own, and scenarios that
//! cut off a leader whose process is paused, or whose clock drifts, past its lease.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::rc::Rc;
use std::time::Duration;

use synod_consensus::invariants::SafetyChecker;
use synod_consensus::{
    Config, ConfigError, LogStore, Membership, Message, MessageBody, Node, RaftWrite, Role,
    StoreWrite, WalLogStore, WalStoreOptions,
};
use synod_sim::timeline::{Describe, Recorder, Role as TimelineRole};
use synod_sim::{
    Boot, Completion, Disk, DiskStorage, KvOutput, NodeId, ProtocolNode, ProtocolStore, SimConfig,
    SimRng, Simulation, View, Workload,
};

use super::clients::{Answer, KvClients, KvService, LeaderHint};
use super::watchers::{NodeWatch, Watchers};
use super::{RunSummary, progress_after_healing};
use crate::consistent_core::kv::{Expiry, KvCommand, KvQuery, KvReply, PutCondition, TxOp};
use crate::consistent_core::node::{self as core_node, Command, CoreNode, Fatal, ReadMode};
use synod_membership::lease::{LeaseCommand, LeaseId};
use synod_node::{Effect, EffectOf, Input, InputOf, Protocol, Time};

/// Keys the clients use: enough that each key's history stays small for the checker,
/// however many writes end unknown while the leader changes.
pub const KEYS: u64 = 8;

/// The longest command a node takes (Raft's `entry_bytes_max`), and so the longest entry
/// its entry log holds.
const COMMAND_BYTES_MAX: u64 = 64 << 10;

/// The segment size of the node's two logs on its simulated disk: room for a snapshot chunk
/// record (256 KiB) and the longest command, small enough that logs roll over and purge.
const SEGMENT_BYTES: u64 = 320 << 10;
/// The length of a Raft tick; the node asks to be woken for each.
const TICK_EVERY: Duration = Duration::from_millis(5);
/// Raft's election timeout, in ticks: 50 to 100 ms.
const ELECTION_TIMEOUT_TICKS: std::ops::Range<u64> = 10..20;
/// Snapshot (and compact the log) every this many applied entries: a few times in a run
/// of ten thousand events, so snapshots are exercised too.
const SNAPSHOT_ENTRIES: u64 = 200;
/// How often, on its own clock, a leader of `synod sim raft-kv` hands its leadership over
/// (about 20 times in a run of ten thousand events).
const HAND_OVER_EVERY: Duration = Duration::from_millis(300);
/// The clock-drift bound of `synod sim raft-kv` and of the CI test: the nemesis drifts no
/// node's clock further from true time than this, either way (10%, far beyond a real
/// oscillator's tens of ppm), and the leader's lease keeps the margin it needs under it
/// ([`lease_drift_ticks`]).
pub const CLOCK_DRIFT_PPM_MAX: u32 = 100_000;
/// Client requests a node remembers; a request whose client has long timed out is
/// forgotten first.
const REQUESTS_MAX: usize = 1024;

/// What a client asks a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Request {
    /// Read a key, linearizably (Raft's read index).
    Read(u64),
    /// Write a value to a key.
    Write(u64, u64),
    /// Set a key to `new` if it holds `expect` (`None`: absent).
    Cas {
        /// The key.
        key: u64,
        /// The value it must hold.
        expect: Option<u64>,
        /// The value to set.
        new: u64,
    },
    /// Read a key under the leader's lease if it holds one, else as [`Request::Read`]
    /// (and as that on a node that does not lead).
    LeaseRead(u64),
    /// Read a key from the node's own applied state, possibly stale: not linearizable, for
    /// showing that the checker catches it.
    FollowerRead(u64),
    /// Grant a lease of this many milliseconds ([`super::leases`]' clients).
    LeaseGrant(u64),
    /// Keep this lease alive.
    LeaseKeepAlive(u64),
    /// Revoke this lease, deleting its keys.
    LeaseRevoke(u64),
    /// Take a lock under a lease: create the lock's key if it is absent, attached to the
    /// lease with the lease's id as its value (`SET lock id NX LEASE id`), and read the key's
    /// create revision, the fencing token, in the same entry (a transaction).
    Acquire {
        /// The lock.
        lock: u64,
        /// The lease.
        lease: u64,
    },
    /// Write `value` to the lock's data key fenced by `token` (`SET data value FENCE lock
    /// token`), and read the lock key's create revision in the same entry (a transaction).
    FencedWrite {
        /// The lock.
        lock: u64,
        /// The fencing token.
        token: u64,
        /// The value.
        value: u64,
    },
    /// Set one of the keys with an expiry of their own (`SET ttl<key> v PX ttl_ms`).
    SetExpiring {
        /// The key's number.
        key: u64,
        /// Its time to live.
        ttl_ms: u64,
    },
}

impl Request {
    /// A [`Request::Cas`] (a function, to hand to [`KvClients::with_cas`]).
    #[must_use]
    pub fn cas(key: u64, expect: Option<u64>, new: u64) -> Request {
        Request::Cas { key, expect, new }
    }
}

/// What a node answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Response {
    /// The value read.
    Read(Option<u64>),
    /// The write is committed and applied.
    Written,
    /// This node does not lead; it names the leader it knows of. The command was not
    /// appended anywhere.
    NotLeader(Option<NodeId>),
    /// Certainly not done, and never will be (refused, or its log slot taken by another
    /// committed entry).
    Refused(String),
    /// Perhaps done, perhaps later (a proposal the node lost track of in a leadership
    /// change), or an answer that makes no sense for the request.
    Unsure(String),
    /// The compare-and-set is committed and applied; whether it set the key.
    Cas(bool),
    /// What a lease, lock or expiring-key request did.
    Lease(LeaseReply),
}

/// What a node answers a lease, lock or expiring-key request ([`super::leases`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseReply {
    /// The lease granted, by id.
    Granted(u64),
    /// The lease was kept alive.
    KeptAlive,
    /// The lease was revoked.
    Revoked,
    /// There is no such lease (it expired or was revoked): nothing was done.
    NoLease,
    /// The lock is held under the lease asked for, with this fencing token.
    Acquired(u64),
    /// Another lease holds the lock, with this token.
    Held(u64),
    /// A fenced write: whether it was applied, and the lock key's create revision when it
    /// was (0: the lock was not held).
    Fenced {
        /// Whether the write was applied.
        applied: bool,
        /// The lock's token at the write.
        lock_token: u64,
    },
    /// The expiring key was set.
    Set,
    /// A paused holder's read was answered (it asks nothing else while paused).
    Idle,
}

/// How each simulated node is set up, where `synod sim raft-kv` and the CI test
/// (`tests/it/core_sim.rs`) differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeOptions {
    snapshot_entries: u64,
    raft_limits: Option<(usize, u64)>,
    lease_drift_ppm: Option<u32>,
    hand_over_every: Option<Duration>,
    membership_change_every: Option<Duration>,
    #[cfg(feature = "broken")]
    broken: synod_consensus::Broken,
    #[cfg(feature = "broken")]
    broken_lease_renewal: bool,
    #[cfg(feature = "broken")]
    broken_fences: bool,
}

impl Default for NodeOptions {
    /// `synod sim raft-kv`'s: a snapshot every 200 applied entries, Raft's default limits,
    /// lease reads under the drift bound [`CLOCK_DRIFT_PPM_MAX`], and a leader that hands
    /// its leadership over every 300 ms of its clock.
    fn default() -> Self {
        NodeOptions {
            snapshot_entries: SNAPSHOT_ENTRIES,
            raft_limits: None,
            lease_drift_ppm: Some(CLOCK_DRIFT_PPM_MAX),
            hand_over_every: Some(HAND_OVER_EVERY),
            membership_change_every: None,
            #[cfg(feature = "broken")]
            broken: synod_consensus::Broken::default(),
            #[cfg(feature = "broken")]
            broken_lease_renewal: false,
            #[cfg(feature = "broken")]
            broken_fences: false,
        }
    }
}

impl NodeOptions {
    /// Never snapshots.
    #[must_use]
    pub fn without_snapshots(mut self) -> Self {
        self.snapshot_entries = u64::MAX;
        self
    }

    /// Snapshots (and compacts the log) every `entries` applied entries (at least 1).
    #[must_use]
    pub fn with_snapshot_entries(mut self, entries: u64) -> Self {
        self.snapshot_entries = entries.max(1);
        self
    }

    /// Raft sends at most `in_flight_max` appends to a follower before it answers, each of
    /// at most `append_bytes_max` bytes of entries (small values exercise flow control and
    /// catching up in many steps).
    ///
    /// # Errors
    ///
    /// The Raft configuration's error if either is zero.
    pub fn with_raft_limits(
        mut self,
        in_flight_max: usize,
        append_bytes_max: u64,
    ) -> Result<Self, ConfigError> {
        Config::builder(NodeId::new(1))
            .in_flight_max(in_flight_max)
            .append_bytes_max(append_bytes_max)
            .build()?;
        self.raft_limits = Some((in_flight_max, append_bytes_max));
        Ok(self)
    }

    /// The leader takes lease reads, keeping the margin that a clock drift of up to
    /// `drift_ppm` parts per million either way needs ([`lease_drift_ticks`]; clamped to
    /// the simulator's largest drift, 500,000). The simulation must drift no clock further
    /// than that: a smaller figure than the nemesis's drift is a known-bad setup, for
    /// showing that the checker catches the stale reads it allows.
    #[must_use]
    pub fn with_lease_drift_ppm(mut self, drift_ppm: u32) -> Self {
        self.lease_drift_ppm = Some(drift_ppm.min(DRIFT_PPM_LIMIT));
        self
    }

    /// No lease: a lease read is a read index.
    #[must_use]
    pub fn without_lease(mut self) -> Self {
        self.lease_drift_ppm = None;
        self
    }

    /// A node that leads hands its leadership to the most up-to-date other voter
    /// ([`Command::HandOver`]: Raft's leadership transfer) every `every` of its clock, from a
    /// start drawn at random within the first `every`; `None` never hands over.
    #[must_use]
    pub fn with_hand_overs(mut self, every: Option<Duration>) -> Self {
        self.hand_over_every = every.filter(|d| !d.is_zero());
        self
    }

    /// A node that leads proposes a membership change ([`Command::ProposeMembership`])
    /// every `every` of its clock, from a start drawn at random within the first `every`;
    /// `None` (the default) never changes the membership. The change is drawn from the
    /// simulation's generator among the simulated nodes ([`membership_change`]): in a
    /// cluster of five or more, a node outside the configuration added as a learner, a
    /// learner promoted or removed, a voter demoted or removed, keeping three voters or
    /// more; in a smaller one, a voter demoted to learner or a learner promoted back.
    #[must_use]
    pub fn with_membership_changes(mut self, every: Option<Duration>) -> Self {
        self.membership_change_every = every.filter(|d| !d.is_zero());
        self
    }

    /// Reintroduces known Raft bugs, for tests that show the checkers catch them (only with
    /// the `broken` feature). With `skip_membership_change_wait`, a leader's
    /// membership-change timer proposes two changes in a row (a correct node refuses the
    /// second while the first is uncommitted).
    #[cfg(feature = "broken")]
    #[must_use]
    pub fn broken(mut self, broken: synod_consensus::Broken) -> Self {
        self.broken = broken;
        self
    }

    /// Deliberately broken (only with the `broken` feature): a new leader restarts every
    /// lease at its full TTL instead of its checkpointed remaining one
    /// (`CoreNode::broken_lease_renewal_on_election`), so elections renew leases.
    #[cfg(feature = "broken")]
    #[must_use]
    pub fn broken_lease_renewal_on_election(mut self) -> Self {
        self.broken_lease_renewal = true;
        self
    }

    /// Deliberately broken (only with the `broken` feature): the store applies a fenced
    /// write without checking its token (`CoreNode::broken_unchecked_fences`).
    #[cfg(feature = "broken")]
    #[must_use]
    pub fn broken_unchecked_fences(mut self) -> Self {
        self.broken_fences = true;
        self
    }

    /// The core with this node's deliberately broken lease variants, if any.
    fn break_leases(&self, core: CoreNode) -> CoreNode {
        #[cfg(feature = "broken")]
        {
            let core = if self.broken_lease_renewal {
                core.broken_lease_renewal_on_election()
            } else {
                core
            };
            if self.broken_fences {
                core.broken_unchecked_fences()
            } else {
                core
            }
        }
        #[cfg(not(feature = "broken"))]
        core
    }

    /// Whether the leader proposes two membership changes at a time (a broken variant).
    fn changes_twice(&self) -> bool {
        #[cfg(feature = "broken")]
        return self.broken.skip_membership_change_wait;
        #[cfg(not(feature = "broken"))]
        false
    }

    /// The lease configuration of the nodes (from their election timeout).
    #[must_use]
    pub fn lease_config(&self) -> synod_membership::lease::LeaseConfig {
        core_node::lease_config(&self.raft_config(NodeId::new(1), 0))
    }

    /// The Raft configuration of node `id`, its elections seeded with `seed`.
    fn raft_config(&self, id: NodeId, seed: u64) -> Config {
        let mut config = Config::builder(id)
            .election_timeout_ticks(ELECTION_TIMEOUT_TICKS)
            .heartbeat_interval_ticks(2)
            .tick_interval_us(duration_nanos(TICK_EVERY) / 1_000)
            .entry_bytes_max(COMMAND_BYTES_MAX)
            .seed(seed);
        #[cfg(feature = "broken")]
        {
            config = config.broken(self.broken);
        }
        if let Some((in_flight_max, append_bytes_max)) = self.raft_limits {
            config = config
                .in_flight_max(in_flight_max)
                .append_bytes_max(append_bytes_max);
        }
        if let Some(drift_ppm) = self.lease_drift_ppm {
            config = config.lease_reads(lease_drift_ticks(ELECTION_TIMEOUT_TICKS.start, drift_ppm));
        }
        config.build().expect(
            "a valid Raft configuration: the limits were checked in NodeOptions, and the \
             lease's margin is below the election timeout for any drift up to the limit",
        )
    }
}

/// The largest drift a simulated clock can have, in parts per million (`synod-clocks`'s
/// `DRIFT_PPM_MAX`).
const DRIFT_PPM_LIMIT: u32 = 500_000;

/// The margin, in ticks, that a leader's lease must keep when every node's clock runs
/// within `drift_ppm` parts per million of true time (either way) and elections time out
/// after at least `election_timeout_min` ticks: the `drift_ticks` of
/// `synod_consensus::ConfigBuilder::lease_reads`.
///
/// A lease taken from a heartbeat round sent at tick `t` lasts until the leader's tick
/// `t + election_timeout_min - margin`. A voter that answered the round heard it after it
/// was sent, and votes for no one else until its election timer has counted
/// `election_timeout_min` ticks since: more than `election_timeout_min - 1` ticks of its
/// clock, since a tick can fall just after it heard. In the worst case the leader's clock
/// runs slow and the voter's fast, so the lease is safe if
/// `(election_timeout_min - margin) / (1 - drift) <= (election_timeout_min - 1) / (1 + drift)`;
/// this is the smallest such margin (1 without drift).
#[must_use]
pub fn lease_drift_ticks(election_timeout_min: u64, drift_ppm: u32) -> u64 {
    const MILLION: u128 = 1_000_000;
    let drift = u128::from(drift_ppm).min(MILLION - 1);
    let voter_ticks = u128::from(election_timeout_min.saturating_sub(1));
    let lease_ticks = voter_ticks * (MILLION - drift) / (MILLION + drift);
    election_timeout_min - u64::try_from(lease_ticks).expect("at most election_timeout_min")
}

/// What the nodes of a simulation did, summed over every node and every restart: how many
/// lease reads the leaders served under their lease and how many fell back to a read index,
/// how often a log was compacted or replaced by a snapshot from the leader, and how often
/// a leader handed its leadership over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    /// Lease reads taken by a leader holding a lease: no quorum round.
    pub lease_reads: u64,
    /// Lease reads taken by a leader holding no lease (it had not yet heard from a quorum
    /// in its term, or tried to hand its leadership over in it): a read index instead.
    pub lease_fallbacks: u64,
    /// Lease reads sent to a node that did not lead: a read index, through the leader.
    pub lease_reads_elsewhere: u64,
    /// Snapshots taken, the log below them dropped.
    pub compactions: u64,
    /// Snapshots received from a leader in place of the log.
    pub snapshot_installs: u64,
    /// Hand-overs asked of a node that led.
    pub hand_overs: u64,
    /// `TimeoutNow` messages sent: a transfer's target told to campaign at once.
    pub transfers: u64,
    /// Membership changes a leader proposed (and its Raft node took).
    pub membership_proposed: u64,
    /// Membership changes their proposer applied as committed (a proposer that crashed
    /// or lost track of its change in a leadership change does not count it, even if
    /// another leader committed it).
    pub membership_committed: u64,
    /// Crashes part-way through a write to the log store (the disk halted under it, as
    /// the nemesis's mid-write crashes make it), by the write's weightiest part: a snapshot
    /// installed, a snapshot taken (compaction), a truncation, an append (or only a term
    /// and vote).
    pub crashes_in_install: u64,
    /// See [`Activity::crashes_in_install`].
    pub crashes_in_compaction: u64,
    /// See [`Activity::crashes_in_install`].
    pub crashes_in_truncation: u64,
    /// See [`Activity::crashes_in_install`].
    pub crashes_in_append: u64,
    /// Crashes part-way through the store's recovery at a start.
    pub crashes_in_recovery: u64,
    /// Incarnations a failed sync ended, the node rebuilt from its disk.
    pub rebuilds_after_failed_sync: u64,
}

impl Activity {
    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &Activity) {
        self.lease_reads += other.lease_reads;
        self.lease_fallbacks += other.lease_fallbacks;
        self.lease_reads_elsewhere += other.lease_reads_elsewhere;
        self.compactions += other.compactions;
        self.snapshot_installs += other.snapshot_installs;
        self.hand_overs += other.hand_overs;
        self.transfers += other.transfers;
        self.membership_proposed += other.membership_proposed;
        self.membership_committed += other.membership_committed;
        self.crashes_in_install += other.crashes_in_install;
        self.crashes_in_compaction += other.crashes_in_compaction;
        self.crashes_in_truncation += other.crashes_in_truncation;
        self.crashes_in_append += other.crashes_in_append;
        self.crashes_in_recovery += other.crashes_in_recovery;
        self.rebuilds_after_failed_sync += other.rebuilds_after_failed_sync;
    }
}

impl std::fmt::Display for Activity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "lease reads: {} at a leader under its lease, {} at a leader without one, {} at \
             a follower; {} compactions, {} snapshot installs; {} hand-overs, {} transfers; \
             {} membership changes proposed, {} committed; crashes part-way through {} \
             snapshot installs, {} compactions, {} truncations, {} appends, {} recoveries; \
             {} rebuilds after a failed sync",
            self.lease_reads,
            self.lease_fallbacks,
            self.lease_reads_elsewhere,
            self.compactions,
            self.snapshot_installs,
            self.hand_overs,
            self.transfers,
            self.membership_proposed,
            self.membership_committed,
            self.crashes_in_install,
            self.crashes_in_compaction,
            self.crashes_in_truncation,
            self.crashes_in_append,
            self.crashes_in_recovery,
            self.rebuilds_after_failed_sync
        )
    }
}

/// A shared counter of a simulation's [`Activity`]: every node of the simulation holds a
/// clone and adds to it; read it once the run is over. It only counts: the nodes behave,
/// and the run's trace hash is, the same whoever holds one.
#[derive(Debug, Clone, Default)]
pub struct Tally(Rc<Cell<Activity>>);

impl Tally {
    /// A tally at zero.
    #[must_use]
    pub fn new() -> Self {
        Tally::default()
    }

    /// The counts so far.
    #[must_use]
    pub fn get(&self) -> Activity {
        self.0.get()
    }

    fn add(&self, count: impl FnOnce(&mut Activity)) {
        let mut activity = self.0.get();
        count(&mut activity);
        self.0.set(activity);
    }
}

fn key_bytes(key: u64) -> Vec<u8> {
    format!("k{key}").into_bytes()
}

fn value_bytes(value: u64) -> Vec<u8> {
    value.to_string().into_bytes()
}

/// One simulated node: synod-sim's generic adapter for any node-contract state machine,
/// running [`SimCore`] (the [`CoreNode`]) over [`CoreStore`] (a `WalLogStore` on its
/// simulated disk).
pub type RaftKvNode = ProtocolNode<CoreStore>;

/// A node's Raft state machine, unless the node is down or stopped.
#[must_use]
pub fn raft_of(node: &RaftKvNode) -> Option<&Node> {
    node.protocol()
        .filter(|core| core.stopped.is_none())
        .map(|core| core.core.raft())
}

/// Why a node stopped (fail-stop), if it did: its log store failed or did not open, or the
/// node reported it cannot continue. A store failing on a fault the simulator made (a
/// failed sync, a crash part-way through its writes) makes the process exit
/// ([`Disk::exit`]) and the simulator crashes and restarts it, as a supervisor restarts a
/// real one; any other failure is a bug, and the run's invariant reports the node stopped.
#[must_use]
pub fn stopped(node: &RaftKvNode) -> Option<&str> {
    node.store()
        .failed
        .as_deref()
        .or_else(|| node.protocol()?.stopped.as_deref())
}

/// What the node's own requests were for, to read their answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Own {
    HandOver,
    MembershipChange,
}

/// The first request id of the node's own requests (hand-overs, membership changes), far
/// above the adapter's ids for the clients' requests.
const OWN_REQUESTS_FROM: u64 = 1 << 62;

/// The Consistent Core node as the simulation runs it: the [`CoreNode`], the simulation's
/// requests and answers translated to and from it, and what the simulation does around it
/// on the node's clock: a leader hands its leadership over and proposes membership changes
/// every so often ([`NodeOptions`]); what it does is counted in the [`Tally`].
#[derive(Debug)]
pub struct SimCore {
    core: CoreNode,
    nodes: u64,
    options: NodeOptions,
    tally: Tally,
    rng: SimRng,
    /// The simulation's request behind each client request id.
    requests: BTreeMap<synod_node::RequestId, Request>,
    own: BTreeMap<synod_node::RequestId, Own>,
    next_own: u64,
    hand_over_at: Option<Time>,
    membership_at: Option<Time>,
    /// The wake-up the core asked for last, and the one this node asked for last.
    core_wake: Option<Time>,
    wake: Option<Time>,
    effects: VecDeque<EffectOf<SimCore>>,
    /// Why the node stopped, if it did.
    stopped: Option<String>,
    /// The membership changes the core had seen committed, as last tallied.
    changes_committed: u64,
    /// Its watch hub and its part in the simulation's watchers, if they are on.
    watch: Option<NodeWatch>,
    /// The last index of the latest snapshot the core compacted to or installed.
    snapshot: Option<u64>,
}

impl SimCore {
    /// The Consistent Core node (for checkers that look at its state).
    #[must_use]
    pub fn core(&self) -> &CoreNode {
        &self.core
    }

    /// Whether the core leads.
    fn leading(&self) -> bool {
        self.core.raft().role() == Role::Leader
    }

    fn own(&mut self, now: Time, what: Own, request: Command) {
        self.next_own += 1;
        let id = synod_node::RequestId(OWN_REQUESTS_FROM + self.next_own);
        self.own.insert(id, what);
        self.core.handle(now, Input::Request { id, request });
        self.collect();
    }

    /// Runs the hand-over and membership-change timers due at `now`.
    fn timers(&mut self, now: Time) {
        if let Some(at) = self.hand_over_at
            && now >= at
        {
            if self.leading() {
                self.tally.add(|a| a.hand_overs += 1);
                self.own(now, Own::HandOver, Command::HandOver);
            }
            self.hand_over_at = self.options.hand_over_every.map(|every| now + every);
        }
        if let Some(at) = self.membership_at
            && now >= at
        {
            if self.leading() {
                let tries = if self.options.changes_twice() { 2 } else { 1 };
                for _ in 0..tries {
                    let current = self.core.raft().membership().clone();
                    let Some(next) = membership_change(&mut self.rng, &current, self.nodes) else {
                        break;
                    };
                    self.own(now, Own::MembershipChange, Command::ProposeMembership(next));
                }
            }
            self.membership_at = self
                .options
                .membership_change_every
                .map(|every| now + every);
        }
    }

    /// Takes what the core hands out: the simulation's answers, the effects to pass on,
    /// and the counts.
    fn collect(&mut self) {
        while self.stopped.is_none()
            && let Some(effect) = self.core.poll()
        {
            match effect {
                Effect::Send { to, message } => {
                    if message.body == MessageBody::TimeoutNow {
                        self.tally.add(|a| a.transfers += 1);
                    }
                    self.effects.push_back(Effect::Send { to, message });
                }
                Effect::Persist { token, write } => {
                    for op in write.ops() {
                        match op {
                            StoreWrite::Compact(_) => self.tally.add(|a| a.compactions += 1),
                            StoreWrite::Install(_) => self.tally.add(|a| a.snapshot_installs += 1),
                            _ => {}
                        }
                        if let StoreWrite::Compact(snapshot) | StoreWrite::Install(snapshot) = op {
                            self.snapshot = Some(snapshot.meta.index.get());
                        }
                    }
                    self.effects.push_back(Effect::Persist { token, write });
                }
                Effect::Reply { id, response } => {
                    if let Some(own) = self.own.remove(&id) {
                        let accepted = response == core_node::Response::Kv(KvReply::Ok);
                        if own == Own::MembershipChange && accepted {
                            self.tally.add(|a| a.membership_proposed += 1);
                        }
                    } else if let Some(request) = self.requests.remove(&id) {
                        let response = translate(request, response);
                        self.effects.push_back(Effect::Reply { id, response });
                    }
                }
                Effect::Apply(Fatal(why)) => {
                    // The node stops: it never answers or acknowledges anything again.
                    self.stopped = Some(format!("fatal: {why}"));
                    self.effects.clear();
                    return;
                }
                Effect::WakeAt(at) => self.core_wake = Some(at),
            }
        }
        let committed = self.core.membership_changes_committed();
        if committed > self.changes_committed {
            let new = committed - self.changes_committed;
            self.tally.add(|a| a.membership_committed += new);
        }
        self.changes_committed = committed;
        let next = [self.core_wake, self.hand_over_at, self.membership_at]
            .into_iter()
            .flatten()
            .min();
        if let Some(at) = next
            && self.wake != Some(at)
        {
            self.wake = Some(at);
            self.effects.push_back(Effect::WakeAt(at));
        }
    }
}

impl SimCore {
    /// Hands the watchers what the core applied, and lets them poll.
    fn watch(&mut self, now: Time) {
        if let Some(watch) = &mut self.watch {
            watch.step(now, self.core.take_watch_feed());
        }
    }
}

impl Protocol for SimCore {
    type Message = Message;
    type Request = Request;
    type Response = Response;
    type Write = RaftWrite;
    type Apply = std::convert::Infallible;

    fn id(&self) -> NodeId {
        self.core.id()
    }

    fn handle(&mut self, now: Time, input: InputOf<Self>) {
        if self.stopped.is_some() {
            return;
        }
        match input {
            Input::Request { id, request } => {
                if self.requests.len() >= REQUESTS_MAX {
                    self.requests.pop_first();
                }
                self.requests.insert(id, request);
                if let Request::LeaseRead(_) = request {
                    // Raft's ticks up to `now` first, so the lease looked at is the one the
                    // read is taken under (handing the read in at the same time runs no
                    // more ticks).
                    self.core.handle(now, Input::Wake);
                    let leading = self.leading();
                    let leased = self.core.raft().read_lease().is_some();
                    self.tally.add(|a| match (leading, leased) {
                        (true, true) => a.lease_reads += 1,
                        (true, false) => a.lease_fallbacks += 1,
                        (false, _) => a.lease_reads_elsewhere += 1,
                    });
                }
                let request = Command::Client(core_request(request));
                self.core.handle(now, Input::Request { id, request });
            }
            Input::Message { from, message } => {
                self.core.handle(now, Input::Message { from, message });
            }
            Input::Persisted(token) => self.core.handle(now, Input::Persisted(token)),
            Input::Wake => {
                self.core.handle(now, Input::Wake);
                self.collect();
                self.timers(now);
            }
        }
        self.collect();
        self.watch(now);
    }

    fn poll(&mut self) -> Option<EffectOf<Self>> {
        self.effects.pop_front()
    }
}

/// What the timeline page draws of a node: Raft's role and term, its commit index, its
/// latest snapshot, and its messages by kind.
impl Describe for SimCore {
    fn role(&self) -> Option<TimelineRole> {
        if self.stopped.is_some() {
            return None;
        }
        let raft = self.core.raft();
        let name = match raft.role() {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        };
        Some(TimelineRole::new(name, raft.term().get()))
    }

    fn message_kind(message: &Message) -> &'static str {
        match message.body {
            MessageBody::PreVote { .. } => "pre-vote",
            MessageBody::PreVoteResponse { .. } => "pre-vote-response",
            MessageBody::Vote { .. } => "vote",
            MessageBody::VoteResponse { .. } => "vote-response",
            MessageBody::Append { .. } => "append",
            MessageBody::AppendResponse { .. } => "append-response",
            MessageBody::Heartbeat { .. } => "heartbeat",
            MessageBody::HeartbeatResponse { .. } => "heartbeat-response",
            MessageBody::ReadIndex { .. } => "read-index",
            MessageBody::ReadIndexResponse { .. } => "read-index-response",
            MessageBody::Snapshot { .. } => "snapshot",
            MessageBody::SnapshotResponse { .. } => "snapshot-response",
            MessageBody::TimeoutNow => "timeout-now",
            _ => "other",
        }
    }

    fn committed(&self) -> Option<u64> {
        self.stopped
            .is_none()
            .then(|| self.core.raft().commit_index().get())
    }

    fn snapshot(&self) -> Option<u64> {
        self.snapshot
    }
}

/// The Consistent Core's store under the simulator: the production log store,
/// `WalLogStore`, on the node's simulated disk (its entry log and meta log in directories of
/// their own), and how a [`SimCore`] is built from what it recovers.
#[derive(Debug)]
pub struct CoreStore {
    nodes: usize,
    options: NodeOptions,
    tally: Tally,
    store: Option<WalLogStore<DiskStorage>>,
    /// Why the store failed or did not open, if it did.
    failed: Option<String>,
    watchers: Watchers,
}

impl CoreStore {
    /// The store of a node of a cluster of `nodes`, set up by `options`, counting what the
    /// node does in `tally`.
    #[must_use]
    pub fn new(nodes: usize, options: NodeOptions, tally: Tally) -> CoreStore {
        CoreStore {
            nodes,
            options,
            tally,
            store: None,
            failed: None,
            watchers: Watchers::off(),
        }
    }

    /// Also runs the simulation's watchers on the node (see [`super::watchers`]).
    #[must_use]
    pub fn with_watchers(mut self, watchers: Watchers) -> CoreStore {
        self.watchers = watchers;
        self
    }

    fn fail(&mut self, why: String) -> io::Error {
        self.store = None;
        self.failed = Some(why.clone());
        io::Error::other(why)
    }
}

impl ProtocolStore for CoreStore {
    type Protocol = SimCore;

    /// Opens the store on what survived on the disk (its own recovery runs: torn tails
    /// cut, a compaction or snapshot install that a crash cut short reconciled) and builds
    /// the node from the log it recovered, its clock started at the boot time.
    fn recover(&mut self, boot: Boot<'_>) -> io::Result<SimCore> {
        // The store of a start recovers once; again only after a failed sync ended the
        // node's incarnation (the adapter keeps its store for the rebuild).
        if self.store.take().is_some() {
            self.tally.add(|a| a.rebuilds_after_failed_sync += 1);
        }
        let voters = (1..=self.nodes as u64).map(NodeId::new);
        let membership = Membership::new(voters, []).expect("at least one voter, no learners");
        let syncs_failed = boot.disk.syncs_failed();
        let opened = WalLogStore::open_with(
            boot.disk.storage_in("entries"),
            boot.disk.storage_in("meta"),
            membership,
            WalStoreOptions::default()
                .segment_bytes_max(SEGMENT_BYTES)
                .entry_bytes_max(COMMAND_BYTES_MAX)
                // The same seed writes the same bytes.
                .segment_time_fixed(true),
        );
        let (store, log) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                let halted = boot.disk.is_halted();
                if halted {
                    self.tally.add(|a| a.crashes_in_recovery += 1);
                }
                if halted || boot.disk.syncs_failed() > syncs_failed {
                    // A crash or a failed sync the simulator made: the process exits, and is
                    // restarted, as the real one is by its supervisor. Any other failure
                    // stops the node, for the run's invariant to report.
                    boot.disk.exit();
                }
                return Err(self.fail(format!("the log store does not open: {e}")));
            }
        };
        self.store = Some(store);
        let config = self.options.raft_config(boot.id, boot.rng.next_u64());
        let core = CoreNode::new(Node::new(config, log), self.options.snapshot_entries)
            .with_read_ids_from(boot.rng.next_u64() >> 1);
        let core = self.options.break_leases(core);
        let mut rng = SimRng::new(boot.rng.next_u64());
        let first = |every: Option<Duration>, rng: &mut SimRng| {
            every.map(|every| boot.now + Duration::from_nanos(rng.below(duration_nanos(every)) + 1))
        };
        let hand_over_at = first(self.options.hand_over_every, &mut rng);
        let membership_at = first(self.options.membership_change_every, &mut rng);
        // Drawn last, and only with watchers on, so runs without them are unchanged.
        let watch = if self.watchers.is_on() {
            let seed = boot.rng.next_u64();
            self.watchers.node(boot.id, seed)
        } else {
            None
        };
        let core = if watch.is_some() {
            core.with_watch_feed()
        } else {
            core
        };
        let mut node = SimCore {
            core,
            nodes: self.nodes as u64,
            options: self.options,
            tally: self.tally.clone(),
            rng,
            requests: BTreeMap::new(),
            own: BTreeMap::new(),
            next_own: 0,
            hand_over_at,
            membership_at,
            core_wake: None,
            wake: None,
            effects: VecDeque::new(),
            stopped: None,
            changes_committed: 0,
            watch,
            snapshot: None,
        };
        // The boot time starts Raft's clock; the snapshot is loaded and the committed log
        // replayed.
        node.core.handle(boot.now, Input::Wake);
        node.collect();
        node.watch(boot.now);
        Ok(node)
    }

    /// Lays `write` out on the two logs (a snapshot's file and record written and synced
    /// here) and writes out what the logs buffered, for the adapter's sync to cover.
    fn write(&mut self, disk: &mut Disk, write: &RaftWrite) -> io::Result<()> {
        let Some(store) = self.store.as_mut() else {
            return Err(io::Error::other("the log store failed earlier"));
        };
        let syncs_failed = disk.syncs_failed();
        store.apply(write);
        if let Err(e) = store.flush() {
            let halted = disk.is_halted();
            if halted {
                self.tally.add(|a| count_crash_in(a, write));
            }
            if halted || disk.syncs_failed() > syncs_failed {
                // A crash or a failed sync the simulator made: never acknowledge what could
                // not be stored; the process exits, and is restarted, as the real one is by
                // its supervisor. Any other failure stops the node, for the run's invariant
                // to report.
                disk.exit();
            }
            return Err(self.fail(format!("the log store failed: {e}")));
        }
        Ok(())
    }
}

/// Counts a crash part-way through `write` by its weightiest part.
fn count_crash_in(activity: &mut Activity, write: &RaftWrite) {
    let has = |f: fn(&StoreWrite) -> bool| write.ops().iter().any(f);
    if has(|op| matches!(op, StoreWrite::Install(_))) {
        activity.crashes_in_install += 1;
    } else if has(|op| matches!(op, StoreWrite::Compact(_))) {
        activity.crashes_in_compaction += 1;
    } else if has(|op| matches!(op, StoreWrite::TruncateAfter(_))) {
        activity.crashes_in_truncation += 1;
    } else {
        activity.crashes_in_append += 1;
    }
}

/// The node's answer in the simulator's terms.
fn translate(request: Request, response: core_node::Response) -> Response {
    use core_node::Response::Kv;
    let read = matches!(
        request,
        Request::Read(_) | Request::LeaseRead(_) | Request::FollowerRead(_)
    );
    match (request, response) {
        (_, Kv(KvReply::Nil)) if read => Response::Read(None),
        (_, Kv(KvReply::Bulk(bytes))) if read => match std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.parse().ok())
        {
            Some(value) => Response::Read(Some(value)),
            None => Response::Unsure(format!("unexpected value {bytes:?}")),
        },
        (Request::Write(..), Kv(KvReply::Ok)) => Response::Written,
        (
            Request::LeaseGrant(_)
            | Request::LeaseKeepAlive(_)
            | Request::LeaseRevoke(_)
            | Request::Acquire { .. }
            | Request::FencedWrite { .. }
            | Request::SetExpiring { .. },
            Kv(reply),
        ) => lease_reply(request, reply),
        (Request::Cas { .. }, Kv(KvReply::Int(n @ (0 | 1)))) => Response::Cas(n == 1),
        (_, core_node::Response::NotLeader { leader }) => {
            Response::NotLeader(leader.and_then(NodeId::try_new))
        }
        (_, core_node::Response::Retry(why)) => Response::Refused(why),
        (_, core_node::Response::Unknown(why)) => Response::Unsure(why),
        (_, other) => Response::Unsure(format!("unexpected answer {other:?}")),
    }
}

/// What a lease, lock or expiring-key request's reply from the store means.
fn lease_reply(request: Request, reply: KvReply) -> Response {
    let token = |reply: &KvReply| match reply {
        KvReply::Entry {
            value, revisions, ..
        } => Some((value.clone(), revisions.create)),
        _ => None,
    };
    let answer = match (request, &reply) {
        (Request::LeaseGrant(_), KvReply::Int(id)) => {
            u64::try_from(*id).ok().map(LeaseReply::Granted)
        }
        (Request::LeaseKeepAlive(_), KvReply::Int(_)) => Some(LeaseReply::KeptAlive),
        (Request::LeaseRevoke(_), KvReply::Int(_)) => Some(LeaseReply::Revoked),
        (Request::LeaseKeepAlive(_) | Request::LeaseRevoke(_), KvReply::Error(_)) => {
            Some(LeaseReply::NoLease)
        }
        (Request::SetExpiring { .. }, KvReply::Ok) => Some(LeaseReply::Set),
        (Request::Acquire { lease, .. }, KvReply::Multi(replies)) => match replies.as_slice() {
            [KvReply::Ok, read] => token(read).map(|(_, t)| LeaseReply::Acquired(t)),
            // Held already: by this lease (an earlier try that went through unanswered)
            // or another.
            [KvReply::Nil, read] => token(read).map(|(value, t)| {
                if value == Some(value_bytes(lease)) {
                    LeaseReply::Acquired(t)
                } else {
                    LeaseReply::Held(t)
                }
            }),
            [KvReply::Error(_), _] => Some(LeaseReply::NoLease),
            _ => None,
        },
        (Request::FencedWrite { .. }, KvReply::Multi(replies)) => match replies.as_slice() {
            [done @ (KvReply::Ok | KvReply::Error(_)), read] => {
                token(read).map(|(_, lock_token)| LeaseReply::Fenced {
                    applied: *done == KvReply::Ok,
                    lock_token,
                })
            }
            _ => None,
        },
        _ => None,
    };
    match answer {
        Some(answer) => Response::Lease(answer),
        // A grant or an expiring set the store refused (a limit) did nothing.
        None if matches!(reply, KvReply::Error(_)) => Response::Refused(format!("{reply:?}")),
        None => Response::Unsure(format!("unexpected answer {reply:?} to {request:?}")),
    }
}

/// The key of lock `lock`, of its data, and of expiring key `key` ([`Request::Acquire`],
/// [`Request::FencedWrite`], [`Request::SetExpiring`]).
#[must_use]
pub fn lock_key(lock: u64) -> Vec<u8> {
    format!("lock{lock}").into_bytes()
}

fn data_key(lock: u64) -> Vec<u8> {
    format!("data{lock}").into_bytes()
}

/// The key [`Request::SetExpiring`] sets for `key`.
#[must_use]
pub fn expiring_key(key: u64) -> Vec<u8> {
    format!("ttl{key}").into_bytes()
}

/// The Consistent Core's request for `request`.
fn core_request(request: Request) -> core_node::Request {
    let read = |key, mode| core_node::Request::Read {
        query: KvQuery::Get(key_bytes(key)),
        mode,
    };
    let write = |command| core_node::Request::Write {
        command,
        session: None,
    };
    match request {
        Request::Read(key) => read(key, ReadMode::Linearizable),
        Request::LeaseRead(key) => read(key, ReadMode::Lease),
        Request::FollowerRead(key) => read(key, ReadMode::Follower),
        Request::Write(key, value) => write(KvCommand::Put {
            key: key_bytes(key),
            value: value_bytes(value),
            condition: PutCondition::Always,
        }),
        Request::Cas { key, expect, new } => write(KvCommand::Cas {
            key: key_bytes(key),
            expected: expect.map(value_bytes),
            new: value_bytes(new),
        }),
        Request::LeaseGrant(ttl_ms) => write(KvCommand::Lease(LeaseCommand::Grant { ttl_ms })),
        Request::LeaseKeepAlive(lease) => write(KvCommand::Lease(LeaseCommand::KeepAlive {
            lease: LeaseId(lease),
        })),
        Request::LeaseRevoke(lease) => write(KvCommand::Lease(LeaseCommand::Revoke {
            lease: LeaseId(lease),
        })),
        Request::Acquire { lock, lease } => write(KvCommand::Transaction {
            watched: Vec::new(),
            ops: vec![
                TxOp::Write(KvCommand::PutExpiring {
                    key: lock_key(lock),
                    value: value_bytes(lease),
                    condition: PutCondition::IfAbsent,
                    expiry: Expiry::Lease(LeaseId(lease)),
                }),
                TxOp::Read(KvQuery::GetRevisions(lock_key(lock))),
            ],
        }),
        Request::FencedWrite { lock, token, value } => write(KvCommand::Transaction {
            watched: Vec::new(),
            ops: vec![
                TxOp::Write(KvCommand::Fenced {
                    lock: lock_key(lock),
                    token,
                    command: Box::new(KvCommand::Put {
                        key: data_key(lock),
                        value: value_bytes(value),
                        condition: PutCondition::Always,
                    }),
                }),
                TxOp::Read(KvQuery::GetRevisions(lock_key(lock))),
            ],
        }),
        Request::SetExpiring { key, ttl_ms } => write(KvCommand::PutExpiring {
            key: expiring_key(key),
            value: value_bytes(key),
            condition: PutCondition::Always,
            expiry: Expiry::TtlMs(ttl_ms),
        }),
    }
}

impl KvService for RaftKvNode {
    fn read(key: u64) -> Request {
        Request::Read(key)
    }

    fn write(key: u64, value: u64) -> Request {
        Request::Write(key, value)
    }

    fn answer(response: &Response) -> Answer {
        let (completion, leader) = match response {
            Response::Read(value) => (Completion::Ok(KvOutput::Read(*value)), LeaderHint::Same),
            Response::Written => (Completion::Ok(KvOutput::Written), LeaderHint::Same),
            Response::Cas(set) => (Completion::Ok(KvOutput::Cas(*set)), LeaderHint::Same),
            Response::NotLeader(leader) => (
                Completion::Fail,
                leader.map_or(LeaderHint::Unknown, LeaderHint::Is),
            ),
            Response::Refused(_) => (Completion::Fail, LeaderHint::Unknown),
            Response::Unsure(_) | Response::Lease(_) => (Completion::Unknown, LeaderHint::Unknown),
        };
        Answer { completion, leader }
    }
}

/// `synod sim raft-kv`'s clients: reads (half through Raft's read index, half under the
/// leader's lease) and writes of [`KEYS`] keys, each sent to the leader the last answer
/// named.
#[must_use]
pub fn clients() -> KvClients<RaftKvNode> {
    KvClients::new(KEYS)
        .with_reads(&[Request::Read, Request::LeaseRead])
        .following_the_leader()
}

/// The fewest voters [`membership_change`] leaves a cluster of five nodes or more with.
pub const VOTERS_MIN: usize = 3;

/// A membership change that `current` allows, drawn from `rng` among nodes `1..=nodes`:
/// with five nodes or more, a node outside the configuration added as a learner, a
/// learner promoted or removed, or a voter demoted or removed, keeping [`VOTERS_MIN`]
/// voters or more; with fewer, a voter demoted to learner while every node votes, or a
/// learner promoted back. `None` if there is no such change.
#[must_use]
pub fn membership_change(rng: &mut SimRng, current: &Membership, nodes: u64) -> Option<Membership> {
    #[derive(Clone, Copy)]
    enum Change {
        Add,
        Promote,
        RemoveLearner,
        Demote,
        RemoveVoter,
    }
    let voters: Vec<NodeId> = current.voters().iter().copied().collect();
    let learners: Vec<NodeId> = current.learners().iter().copied().collect();
    let outside: Vec<NodeId> = (1..=nodes)
        .map(NodeId::new)
        .filter(|&id| !current.contains(id))
        .collect();
    let large = nodes >= 5;
    let voters_min = if large {
        VOTERS_MIN
    } else {
        usize::try_from(nodes)
            .unwrap_or(usize::MAX)
            .saturating_sub(1)
            .max(1)
    };
    let mut changes = Vec::new();
    if large && !outside.is_empty() {
        changes.push(Change::Add);
    }
    if !learners.is_empty() {
        changes.push(Change::Promote);
        if large {
            changes.push(Change::RemoveLearner);
        }
    }
    if voters.len() > voters_min {
        changes.push(Change::Demote);
        if large {
            changes.push(Change::RemoveVoter);
        }
    }
    let pick = |rng: &mut SimRng, from: &[NodeId]| {
        from[usize::try_from(rng.below(from.len() as u64)).unwrap_or(0)]
    };
    let change = *changes.get(usize::try_from(rng.below(changes.len() as u64)).ok()?)?;
    let (mut v, mut l) = (voters.clone(), learners.clone());
    match change {
        Change::Add => l.push(pick(rng, &outside)),
        Change::Promote | Change::RemoveLearner => {
            let id = pick(rng, &learners);
            l.retain(|&x| x != id);
            if matches!(change, Change::Promote) {
                v.push(id);
            }
        }
        Change::Demote | Change::RemoveVoter => {
            let id = pick(rng, &voters);
            v.retain(|&x| x != id);
            if matches!(change, Change::Demote) {
                l.push(id);
            }
        }
    }
    Membership::new(v, l).ok()
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The invariant checked after every event: no node stopped, and Raft's safety properties
/// hold over the nodes that are up (see the module documentation), and `also` holds.
fn invariant<I, O>(
    nodes: usize,
    watchers: Watchers,
    mut also: impl FnMut(&View<'_, RaftKvNode, I, O>) -> Result<(), String> + 'static,
) -> impl FnMut(&View<'_, RaftKvNode, I, O>) -> Result<(), String> + 'static {
    let mut checker = SafetyChecker::new();
    move |view| {
        if let Some(violation) = watchers.violation() {
            return Err(format!("watch: {violation}"));
        }
        also(view)?;
        if let Some((id, why)) = view
            .nodes()
            .find_map(|(id, node)| stopped(node).map(|why| (id, why)))
        {
            return Err(format!("{id} stopped: {why}"));
        }
        // The checker walks the nodes more than once, so it takes an iterator it can
        // clone (and this allocates nothing).
        let up = (1..=nodes as u64)
            .filter_map(|i| view.node(NodeId::new(i)))
            .filter_map(raft_of);
        checker.check(up).map_err(|violation| violation.to_string())
    }
}

/// A cluster of `config.nodes()` [`RaftKvNode`]s set up by `options`, driven by `clients`
/// with every randomness drawn from `seed`, checking after every event that no node
/// stopped and that Raft's safety properties hold ([`SafetyChecker`]: election safety,
/// leader append-only, log matching, leader completeness, state-machine safety, commit and
/// applied indexes that never go back), and requiring some operation invoked after healing
/// to succeed. Check the run's history with
/// [`Linearizability`](synod_sim::Linearizability)`::new(`[`KvModel`](synod_sim::KvModel)`)`.
#[must_use]
pub fn simulation(
    config: SimConfig,
    seed: u64,
    options: NodeOptions,
    clients: KvClients<RaftKvNode>,
    tally: &Tally,
) -> Simulation<RaftKvNode, KvClients<RaftKvNode>> {
    simulation_watched(config, seed, options, clients, tally, &Watchers::off())
}

/// [`simulation`] with the simulation's watchers on every node ([`super::watchers`]): a
/// stream that breaks one of the six watch guarantees fails the run's invariant.
#[must_use]
pub fn simulation_watched(
    config: SimConfig,
    seed: u64,
    options: NodeOptions,
    clients: KvClients<RaftKvNode>,
    tally: &Tally,
    watchers: &Watchers,
) -> Simulation<RaftKvNode, KvClients<RaftKvNode>> {
    watched_with(config, seed, options, clients, tally, watchers, |_| Ok(()))
}

/// [`simulation`] with any clients, and `check` as well as the invariant after every event
/// (the lease simulation's checker, [`super::leases`]).
#[must_use]
pub fn simulation_with<W: Workload<RaftKvNode> + 'static>(
    config: SimConfig,
    seed: u64,
    options: NodeOptions,
    clients: W,
    tally: &Tally,
    check: impl FnMut(&View<'_, RaftKvNode, W::Input, W::Output>) -> Result<(), String> + 'static,
) -> Simulation<RaftKvNode, W> {
    watched_with(
        config,
        seed,
        options,
        clients,
        tally,
        &Watchers::off(),
        check,
    )
}

fn watched_with<W: Workload<RaftKvNode> + 'static>(
    config: SimConfig,
    seed: u64,
    options: NodeOptions,
    clients: W,
    tally: &Tally,
    watchers: &Watchers,
    check: impl FnMut(&View<'_, RaftKvNode, W::Input, W::Output>) -> Result<(), String> + 'static,
) -> Simulation<RaftKvNode, W> {
    let nodes = config.nodes();
    let tally = tally.clone();
    let node_watchers = watchers.clone();
    Simulation::new(
        config,
        seed,
        move |_| {
            let store = CoreStore::new(nodes, options, tally.clone());
            ProtocolNode::new(store.with_watchers(node_watchers.clone()))
        },
        clients,
    )
    .invariant(invariant(nodes, watchers.clone(), check))
    .progress(progress_after_healing)
}

/// Runs the cluster once with `seed`.
pub(super) fn run(seed: u64, config: SimConfig, record: bool) -> RunSummary {
    let tally = Tally::new();
    let simulation = simulation(config, seed, NodeOptions::default(), clients(), &tally);
    let simulation = if record {
        simulation.record(Recorder::protocol())
    } else {
        simulation
    };
    RunSummary::judged(simulation.run())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::{EVENTS_DEFAULT, FaultSelection, Settings, System};
    use synod_sim::{KvModel, Linearizability};

    #[test]
    fn synod_sim_raft_kv_serves_lease_reads_installs_snapshots_and_hands_leadership_over() {
        let settings = Settings::new(System::RAFT_KV, 3, EVENTS_DEFAULT, FaultSelection::Swarm)
            .expect("valid settings");
        let tally = Tally::new();
        for seed in 0..SEEDS {
            let report = simulation(
                settings.sim_config(),
                seed,
                NodeOptions::default(),
                clients(),
                &tally,
            )
            .run();
            let verdict = report.verdict(&mut Linearizability::new(KvModel));
            assert!(verdict.is_pass(), "seed {seed}: {verdict:?}");
        }
        let activity = tally.get();
        println!("synod sim raft-kv, seeds 0..{SEEDS}: {activity}");
        assert!(
            activity.lease_reads > 2 * activity.lease_fallbacks,
            "most lease reads a leader takes are served under its lease: {activity}"
        );
        assert!(
            activity.compactions > 0 && activity.snapshot_installs > 0 && activity.transfers > 0,
            "{activity}"
        );
    }

    /// Seeds of `synod sim raft-kv`'s defaults the test above runs.
    const SEEDS: u64 = 10;

    #[test]
    fn the_lease_margin_grows_with_the_drift_bound_and_always_leaves_a_lease() {
        let min = ELECTION_TIMEOUT_TICKS.start;
        assert_eq!(
            lease_drift_ticks(min, 0),
            1,
            "a tick's rounding, without drift"
        );
        assert_eq!(lease_drift_ticks(min, 100_000), 3);
        assert_eq!(lease_drift_ticks(min, DRIFT_PPM_LIMIT), 7);
        for ppm in [0, 1, 10_000, 100_000, 250_000, DRIFT_PPM_LIMIT] {
            let margin = lease_drift_ticks(min, ppm);
            // The lease, on a clock slow by the bound, ends before a voter's timer, on a
            // clock fast by it, can have run out (in millionths of a tick).
            let lease = u128::from(min - margin) * 1_000_000 * 1_000_000;
            let slow = 1_000_000 - u128::from(ppm);
            let fast = 1_000_000 + u128::from(ppm);
            assert!(lease / slow <= u128::from(min - 1) * 1_000_000 * 1_000_000 / fast);
            // One tick less would not do.
            let longer = u128::from(min - margin + 1) * 1_000_000 * 1_000_000;
            assert!(longer / slow > u128::from(min - 1) * 1_000_000 * 1_000_000 / fast);
            let options = NodeOptions::default().with_lease_drift_ppm(ppm);
            let config = options.raft_config(NodeId::new(1), 7);
            assert_eq!(config.lease_drift_ticks(), Some(margin));
        }
        let clamped = NodeOptions::default().with_lease_drift_ppm(u32::MAX);
        assert_eq!(
            clamped,
            NodeOptions::default().with_lease_drift_ppm(DRIFT_PPM_LIMIT)
        );
    }
}
