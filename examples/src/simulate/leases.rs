//! Leases, locks and expiring keys in the `raft-kv` simulation, checked by simulated
//! global time.
//!
//! [`LeaseClients`] run against the Consistent Core nodes of [`super::raft_kv`] under
//! the simulator's faults. The even-numbered clients (so at least one) are lock holders,
//! each doing what `synod kv lock` does: grant a lease, take the lock under it (a
//! transaction that creates the lock's key if absent and reads its create revision, the
//! fencing token, in the same entry), keep the lease alive every third of its TTL, write
//! the lock's data fenced by its token (a transaction that also reads the lock's token at
//! the write), and now and then release (revoke the lease) or *pause*: stop for two to
//! three TTLs, with no keep-alive, and on resuming write with the token it had, as a
//! process stopped in its critical section does. The other clients set keys with an
//! expiry of their own (`SET ttl<n> v PX ttl`), each key once.
//!
//! [`Leases::check`], an invariant of the run, checks after every event, against the
//! history's true times and the nodes' replicated state:
//!
//! - **One holder.** A holder holds from the answer that gave it the lock until the time
//!   it sent its last keep-alive that was answered (the grant, if none), plus the TTL
//!   shortened by the clock-drift bound (`ttl × 10⁶ / (10⁶ + drift_ppm)`: a leader's clock
//!   may run that much fast), or until it asked for its lease to be revoked. No two
//!   holders of one lock may hold at one instant.
//! - **Fencing.** A fenced write that was applied read, in its entry, the lock's token:
//!   it must be the write's own. A stale token applied is a violation.
//! - **Never before the TTL.** A lease may be removed from a replica's table (its keys
//!   with it) no earlier than its last answered keep-alive's send time plus the shortened
//!   TTL, unless revoked; an expiring key may be deleted no earlier than its set's send
//!   time plus its shortened TTL.
//! - **No later than the bound.** A leader ends every lease within the time the log gave
//!   it, stretched by the drift bound (`× 10⁶ / (10⁶ − drift_ppm)`, its clock may run that
//!   much slow): from a renewal it applied while leading, the TTL; from its takeover, the
//!   remaining TTL its replicated table held (what the last checkpoint recorded) plus an
//!   election timeout of grace unless that was zero; and then an expiry tick. Once that
//!   time has passed and the leader has appended an entry since (the expiry is proposed
//!   before anything the leader proposes later), the leader must find the lease gone when
//!   it has applied that far. This is the module `synod_membership::lease`'s bound taken
//!   one leader at a time, so it holds under every fault: a cluster without a leader
//!   expires nothing, and is not asked to.
//!
//! The simulator hands a workload no clock, so the clients read the true time the checker
//! last saw (at the event before); their decisions (when to keep alive, how long to pause)
//! use it, the checks never do.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use synod_membership::lease::{LeaseConfig, LeaseId};
use synod_sim::{
    ClientId, Completion, Invocation, NodeId, Outcome, SimConfig, SimRng, SimTime, Simulation,
    View, Workload,
};

use super::RunSummary;
use super::raft_kv::{
    self, LeaseReply, NodeOptions, RaftKvNode, Request, Response, Tally, expiring_key,
};
use crate::consistent_core::kv::{KvQuery, KvReply};
use crate::consistent_core::node::CoreNode;

/// Chance in a million that a holder pauses at one of its turns while it holds the lock.
const PAUSE_PPM: u64 = 50_000;
/// Chance in a million that a holder releases at one of its turns while it holds the lock.
const RELEASE_PPM: u64 = 30_000;

/// A client of expiring keys sets one at one turn in this many (and reads otherwise), so
/// that a leader seldom holds more leases than one expiry tick expires.
const KEY_ONE_IN: u64 = 4;

/// An operation of [`LeaseClients`], as the history records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseOp {
    /// A lease granted for this TTL.
    Grant {
        /// Its TTL in milliseconds.
        ttl_ms: u64,
    },
    /// A lease kept alive.
    KeepAlive(u64),
    /// A lease revoked.
    Revoke(u64),
    /// A lock taken under a lease.
    Acquire {
        /// The lock.
        lock: u64,
        /// The lease.
        lease: u64,
    },
    /// A fenced write of the lock's data.
    FencedWrite {
        /// The lock.
        lock: u64,
        /// The token it carries.
        token: u64,
    },
    /// An expiring key set.
    SetExpiring {
        /// The key's number.
        key: u64,
        /// Its TTL in milliseconds.
        ttl_ms: u64,
    },
    /// A paused holder's turn, or a key setter's idle one: nothing asked of the cluster
    /// but a read.
    Paused,
}

/// What a holder has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holding {
    Nothing,
    Lease { lease: u64, ttl_ms: u64 },
    Lock { lease: u64, ttl_ms: u64, token: u64 },
}

#[derive(Debug, Clone, Copy)]
struct Holder {
    lock: u64,
    holding: Holding,
    next_keep_alive: SimTime,
    paused_until: SimTime,
    /// A fenced write is due as soon as the pause ends.
    write_after_pause: bool,
}

/// The clients (see the module documentation).
#[derive(Debug)]
pub struct LeaseClients {
    world: Leases,
    ttl_min_ms: u64,
    holders: Vec<Holder>,
    next_key: u64,
    next_value: u64,
}

impl LeaseClients {
    /// Clients whose leases last one to three times `ttl_min_ms` (at least the cluster's
    /// minimum TTL), checked by `world`'s checker.
    #[must_use]
    pub fn new(world: &Leases, ttl_min_ms: u64) -> LeaseClients {
        LeaseClients {
            world: world.clone(),
            ttl_min_ms: ttl_min_ms.max(1),
            holders: Vec::new(),
            next_key: 0,
            next_value: 0,
        }
    }

    fn now(&self) -> SimTime {
        self.world.0.borrow().now
    }

    /// Client `client`'s holder state (made on its first turn), if it is a holder: the
    /// even-numbered clients are.
    fn holder(&mut self, client: ClientId) -> Option<usize> {
        let c = client.get() as usize;
        if c % 2 == 1 {
            return None;
        }
        let i = c / 2;
        while self.holders.len() <= i {
            self.holders.push(Holder {
                // One lock, which every holder competes for.
                lock: 0,
                holding: Holding::Nothing,
                next_keep_alive: SimTime::ZERO,
                paused_until: SimTime::ZERO,
                write_after_pause: false,
            });
        }
        Some(i)
    }

    fn holder_turn(&mut self, i: usize, rng: &mut SimRng) -> (Request, LeaseOp) {
        let now = self.now();
        let ttl_min_ms = self.ttl_min_ms;
        self.next_value += 1;
        let value = self.next_value;
        let h = &mut self.holders[i];
        if now < h.paused_until {
            return (Request::Read(0), LeaseOp::Paused);
        }
        match h.holding {
            Holding::Nothing => {
                let ttl_ms = ttl_min_ms + rng.below(2 * ttl_min_ms + 1);
                (Request::LeaseGrant(ttl_ms), LeaseOp::Grant { ttl_ms })
            }
            Holding::Lock { token, .. } if h.write_after_pause => {
                h.write_after_pause = false;
                let lock = h.lock;
                (
                    Request::FencedWrite { lock, token, value },
                    LeaseOp::FencedWrite { lock, token },
                )
            }
            Holding::Lease { lease, .. } | Holding::Lock { lease, .. }
                if now >= h.next_keep_alive =>
            {
                (Request::LeaseKeepAlive(lease), LeaseOp::KeepAlive(lease))
            }
            Holding::Lease { lease, .. } => {
                let lock = h.lock;
                (
                    Request::Acquire { lock, lease },
                    LeaseOp::Acquire { lock, lease },
                )
            }
            Holding::Lock {
                lease,
                ttl_ms,
                token,
            } => {
                let draw = rng.below(1_000_000);
                if draw < PAUSE_PPM {
                    // Stopped for two to three TTLs; on resuming, it writes first.
                    let ms = 2 * ttl_ms + rng.below(ttl_ms + 1);
                    h.paused_until = now.saturating_add(Duration::from_millis(ms));
                    h.write_after_pause = true;
                    self.world.0.borrow_mut().counts.pauses += 1;
                    (Request::Read(0), LeaseOp::Paused)
                } else if draw < PAUSE_PPM + RELEASE_PPM {
                    (Request::LeaseRevoke(lease), LeaseOp::Revoke(lease))
                } else {
                    let lock = h.lock;
                    (
                        Request::FencedWrite { lock, token, value },
                        LeaseOp::FencedWrite { lock, token },
                    )
                }
            }
        }
    }

    fn holder_answer(&mut self, i: usize, op: LeaseOp, reply: LeaseReply) {
        let now = self.now();
        let h = &mut self.holders[i];
        let every = |ttl_ms: u64| Duration::from_millis((ttl_ms / 3).max(1));
        match (op, reply, h.holding) {
            (LeaseOp::Grant { ttl_ms }, LeaseReply::Granted(lease), _) => {
                h.holding = Holding::Lease { lease, ttl_ms };
                h.next_keep_alive = now.saturating_add(every(ttl_ms));
            }
            (LeaseOp::KeepAlive(_), LeaseReply::KeptAlive, Holding::Lease { ttl_ms, .. })
            | (LeaseOp::KeepAlive(_), LeaseReply::KeptAlive, Holding::Lock { ttl_ms, .. }) => {
                h.next_keep_alive = now.saturating_add(every(ttl_ms));
            }
            (_, LeaseReply::NoLease | LeaseReply::Revoked, _) => h.holding = Holding::Nothing,
            (
                LeaseOp::Acquire { .. },
                LeaseReply::Acquired(token),
                Holding::Lease { lease, ttl_ms },
            ) => {
                h.holding = Holding::Lock {
                    lease,
                    ttl_ms,
                    token,
                };
            }
            // Refused: the lock is someone else's now; keep the lease and try again.
            (
                LeaseOp::FencedWrite { .. },
                LeaseReply::Fenced { applied: false, .. },
                Holding::Lock { lease, ttl_ms, .. },
            ) => h.holding = Holding::Lease { lease, ttl_ms },
            _ => {}
        }
    }
}

fn reply_of(response: &Response) -> Completion<LeaseReply> {
    match response {
        Response::Lease(reply) => Completion::Ok(*reply),
        Response::Read(_) => Completion::Ok(LeaseReply::Idle),
        Response::NotLeader(_) | Response::Refused(_) => Completion::Fail,
        _ => Completion::Unknown,
    }
}

impl Workload<RaftKvNode> for LeaseClients {
    type Input = LeaseOp;
    type Output = LeaseReply;

    fn invoke(
        &mut self,
        client: ClientId,
        nodes: usize,
        rng: &mut SimRng,
    ) -> Option<Invocation<Request, LeaseOp>> {
        let node = NodeId::new(rng.below(nodes as u64) + 1);
        let (request, input) = if let Some(i) = self.holder(client) {
            self.holder_turn(i, rng)
        } else if rng.below(KEY_ONE_IN) != 0 {
            (Request::Read(0), LeaseOp::Paused)
        } else {
            self.next_key += 1;
            let key = self.next_key;
            let ttl_ms = self.ttl_min_ms / 3 + rng.below(2 * self.ttl_min_ms);
            (
                Request::SetExpiring { key, ttl_ms },
                LeaseOp::SetExpiring { key, ttl_ms },
            )
        };
        Some(Invocation {
            node,
            request,
            input,
        })
    }

    fn complete(
        &mut self,
        client: ClientId,
        input: &LeaseOp,
        response: &Response,
    ) -> Completion<LeaseReply> {
        let completion = reply_of(response);
        if let Completion::Ok(reply) = completion
            && let Some(i) = self.holder(client)
        {
            self.holder_answer(i, *input, reply);
        }
        completion
    }
}

/// What the checker knows of a lease from the history.
#[derive(Debug, Clone, Copy)]
struct KnownLease {
    ttl_ms: u64,
    /// When its last answered renewal (the grant or a keep-alive) was sent.
    renewed: SimTime,
    /// When a revoke of it was first sent.
    revoked: Option<SimTime>,
    /// When a replica was first seen without it after holding it.
    removed: Option<SimTime>,
    /// The highest renewal index seen in a replica's table: a replica that applied that
    /// far and does not hold it has removed it.
    seen_at: u64,
}

/// One holder's hold of a lock.
#[derive(Debug, Clone, Copy)]
struct Hold {
    client: ClientId,
    lease: u64,
    token: u64,
    from: SimTime,
}

/// What the checker knows of an expiring key.
#[derive(Debug, Clone, Copy)]
struct KnownKey {
    ttl_ms: u64,
    set: SimTime,
    /// Its create revision, once seen on a replica.
    created: Option<u64>,
}

/// A leader's tenure: when it took over, and each lease's deadline by its clock.
#[derive(Debug)]
struct Tenure {
    term: u64,
    last_index: u64,
    /// Per lease: the renewal the deadline is for, the time by which the leader must have
    /// proposed its expiry, and the log index after which every entry comes after it.
    leases: BTreeMap<LeaseId, (u64, SimTime, Option<u64>)>,
}

/// Figures of a run: what the clients did and how late leases ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseCounts {
    /// Locks taken (answered).
    pub acquired: u64,
    /// Fenced writes applied.
    pub fenced_applied: u64,
    /// Fenced writes refused (stale tokens, most after a pause).
    pub fenced_refused: u64,
    /// Holder pauses.
    pub pauses: u64,
    /// Leases seen removed, and expiring keys seen deleted.
    pub ended: u64,
    /// Leader tenures over which a lease's end was checked.
    pub ends_checked: u64,
    /// The latest a lease or key ended after its TTL from its last answered renewal, in
    /// milliseconds.
    pub late_ms_max: u64,
}

impl LeaseCounts {
    /// Adds `other`'s counts to these (the latest lateness of both).
    pub fn merge(&mut self, other: &LeaseCounts) {
        self.acquired += other.acquired;
        self.fenced_applied += other.fenced_applied;
        self.fenced_refused += other.fenced_refused;
        self.pauses += other.pauses;
        self.ended += other.ended;
        self.ends_checked += other.ends_checked;
        self.late_ms_max = self.late_ms_max.max(other.late_ms_max);
    }
}

impl std::fmt::Display for LeaseCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} locks taken, {} fenced writes applied and {} refused, {} holder pauses; \
             {} leases and expiring keys ended, {} ends checked against a leader's bound, \
             the latest {} ms after its TTL",
            self.acquired,
            self.fenced_applied,
            self.fenced_refused,
            self.pauses,
            self.ended,
            self.ends_checked,
            self.late_ms_max
        )
    }
}

/// The checker's state and the time it last saw (see the module documentation).
#[derive(Debug)]
struct LeaseWorld {
    now: SimTime,
    drift_ppm: u64,
    election_timeout_ms: u64,
    expiry_tick_ms: u64,
    expiries_per_tick_max: usize,
    /// History operations not yet final, by index, and the next one to look at.
    pending: Vec<usize>,
    next_op: usize,
    leases: BTreeMap<u64, KnownLease>,
    holds: BTreeMap<u64, Vec<Hold>>,
    keys: BTreeMap<u64, KnownKey>,
    tenures: BTreeMap<NodeId, Tenure>,
    /// Bumped whenever a lease or key becomes known, and per node the applied index and
    /// this count when its replica was last checked: a replica that applied nothing since,
    /// with nothing new known, holds nothing new to check (its state is a function of the
    /// entries it applied), so it is skipped.
    known: u64,
    checked: BTreeMap<NodeId, (u64, u64)>,
    counts: LeaseCounts,
    violation: Option<String>,
}

/// The lease clients' and checker's shared world; cloning shares it.
#[derive(Clone, Debug)]
pub struct Leases(Rc<RefCell<LeaseWorld>>);

impl Leases {
    /// A world for the clients of a cluster whose leases are configured by `config`, whose
    /// clocks drift at most `drift_ppm` parts per million from true time.
    #[must_use]
    pub fn new(config: &LeaseConfig, drift_ppm: u32) -> Leases {
        Leases(Rc::new(RefCell::new(LeaseWorld {
            now: SimTime::ZERO,
            drift_ppm: u64::from(drift_ppm).min(999_999),
            election_timeout_ms: config.election_timeout_ms(),
            expiry_tick_ms: config.expiry_tick_ms(),
            expiries_per_tick_max: config.expiries_per_tick_max(),
            pending: Vec::new(),
            next_op: 0,
            leases: BTreeMap::new(),
            holds: BTreeMap::new(),
            keys: BTreeMap::new(),
            tenures: BTreeMap::new(),
            known: 0,
            checked: BTreeMap::new(),
            counts: LeaseCounts::default(),
            violation: None,
        })))
    }

    /// What the run did.
    #[must_use]
    pub fn counts(&self) -> LeaseCounts {
        self.0.borrow().counts
    }

    /// The checker: an invariant of the simulation.
    pub fn check(&self, view: &View<'_, RaftKvNode, LeaseOp, LeaseReply>) -> Result<(), String> {
        let mut world = self.0.borrow_mut();
        if let Some(v) = &world.violation {
            return Err(v.clone());
        }
        world.now = view.now();
        if let Err(v) = world.check(view) {
            world.violation = Some(v.clone());
            return Err(v);
        }
        Ok(())
    }
}

/// A node's core, unless it is down or stopped.
fn core_of(node: &RaftKvNode) -> Option<&CoreNode> {
    raft_kv::raft_of(node)?;
    node.protocol().map(raft_kv::SimCore::core)
}

/// `ms` of a clock that runs fast by `drift_ppm`, in true time: the least time a TTL may
/// last.
fn shortest(drift_ppm: u64, ms: u64) -> Duration {
    nanos(u128::from(ms) * 1_000_000_000_000 / u128::from(1_000_000 + drift_ppm))
}

/// `ms` of a clock that runs slow by `drift_ppm` (below a million), in true time: the most
/// time a TTL may last.
fn longest(drift_ppm: u64, ms: u64) -> Duration {
    nanos((u128::from(ms) * 1_000_000_000_000).div_ceil(u128::from(1_000_000 - drift_ppm)))
}

fn nanos(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

/// How much later than `due` `at` is, in milliseconds (0 if it is not).
fn late_ms(at: SimTime, due: SimTime) -> u64 {
    u64::try_from(at.saturating_duration_since(due).as_millis()).unwrap_or(u64::MAX)
}

impl LeaseWorld {
    fn check(&mut self, view: &View<'_, RaftKvNode, LeaseOp, LeaseReply>) -> Result<(), String> {
        let ops = view.history().operations();
        let new = self.next_op..ops.len();
        self.pending.extend(new);
        self.next_op = ops.len();
        let mut pending = std::mem::take(&mut self.pending);
        let mut result = Ok(());
        pending.retain(|&i| {
            let op = &ops[i];
            if let LeaseOp::Revoke(lease) = op.input
                && let Some(l) = self.leases.get_mut(&lease)
            {
                l.revoked.get_or_insert(op.invoked_at);
            }
            if let LeaseOp::SetExpiring { key, ttl_ms } = op.input {
                self.known += 1;
                self.keys.entry(key).or_insert(KnownKey {
                    ttl_ms,
                    set: op.invoked_at,
                    created: None,
                });
            }
            match &op.outcome {
                Outcome::Pending => true,
                Outcome::Ok(reply) => {
                    if result.is_ok() {
                        let at = op.completed_at.unwrap_or(op.invoked_at);
                        result = self.answered(op.client, op.input, *reply, op.invoked_at, at);
                    }
                    false
                }
                Outcome::Fail | Outcome::Unknown => false,
            }
        });
        self.pending = pending;
        result?;
        self.replicas(view)?;
        self.leaders(view)
    }

    /// An operation answered at `at`, sent at `sent`.
    fn answered(
        &mut self,
        client: ClientId,
        op: LeaseOp,
        reply: LeaseReply,
        sent: SimTime,
        at: SimTime,
    ) -> Result<(), String> {
        match (op, reply) {
            (LeaseOp::Grant { ttl_ms }, LeaseReply::Granted(lease)) => {
                self.known += 1;
                self.leases.insert(
                    lease,
                    KnownLease {
                        ttl_ms,
                        renewed: sent,
                        revoked: None,
                        removed: None,
                        seen_at: 0,
                    },
                );
            }
            (LeaseOp::KeepAlive(lease), LeaseReply::KeptAlive) => {
                if let Some(l) = self.leases.get_mut(&lease) {
                    l.renewed = l.renewed.max(sent);
                }
                return self.one_holder(lease);
            }
            (LeaseOp::Acquire { lock, lease }, LeaseReply::Acquired(token)) => {
                self.counts.acquired += 1;
                self.holds.entry(lock).or_default().push(Hold {
                    client,
                    lease,
                    token,
                    from: at,
                });
                return self.one_holder(lease);
            }
            (
                LeaseOp::FencedWrite { lock, token },
                LeaseReply::Fenced {
                    applied,
                    lock_token,
                },
            ) => {
                if !applied {
                    self.counts.fenced_refused += 1;
                    return Ok(());
                }
                self.counts.fenced_applied += 1;
                if lock_token != token {
                    return Err(format!(
                        "a write to lock {lock}'s data fenced by token {token} was applied \
                         while the lock's token was {lock_token} ({client:?}, sent at {sent})"
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// When a hold under `lease` ends, as its holder may believe.
    fn hold_end(&self, lease: u64) -> SimTime {
        let Some(l) = self.leases.get(&lease) else {
            return SimTime::ZERO;
        };
        let end = l.renewed.saturating_add(shortest(self.drift_ppm, l.ttl_ms));
        l.revoked.map_or(end, |r| r.min(end))
    }

    /// Checks that no two holds of the lock `lease` is held under overlap.
    fn one_holder(&self, lease: u64) -> Result<(), String> {
        for (lock, holds) in &self.holds {
            let Some(mine) = holds.iter().rev().find(|h| h.lease == lease) else {
                continue;
            };
            let mine_end = self.hold_end(lease);
            if mine.from >= mine_end {
                continue;
            }
            for other in holds.iter().filter(|h| h.lease != lease) {
                let end = self.hold_end(other.lease);
                if other.from < mine_end && mine.from < end {
                    return Err(format!(
                        "two holders of lock {lock}: {:?} (token {}) from {} to {} and \
                         {:?} (token {}) from {} to {}",
                        other.client,
                        other.token,
                        other.from,
                        end,
                        mine.client,
                        mine.token,
                        mine.from,
                        mine_end
                    ));
                }
            }
        }
        Ok(())
    }

    /// Leases and expiring keys gone from a replica: never before their TTL.
    fn replicas(&mut self, view: &View<'_, RaftKvNode, LeaseOp, LeaseReply>) -> Result<(), String> {
        let now = view.now();
        let drift_ppm = self.drift_ppm;
        for (id, node) in view.nodes() {
            let Some(core) = core_of(node) else {
                continue;
            };
            let applied = core.raft().applied_index().get();
            if self.checked.insert(id, (applied, self.known)) == Some((applied, self.known)) {
                continue;
            }
            let table = core.kv().leases();
            for (&id, known) in &mut self.leases {
                if known.removed.is_some() {
                    continue;
                }
                match table.get(LeaseId(id)) {
                    Some(lease) => known.seen_at = known.seen_at.max(lease.renewal),
                    None if known.seen_at > 0 && applied >= known.seen_at => {
                        known.removed = Some(now);
                        self.counts.ended += 1;
                        if known.revoked.is_none() {
                            let due = known
                                .renewed
                                .saturating_add(Duration::from_millis(known.ttl_ms));
                            self.counts.late_ms_max =
                                self.counts.late_ms_max.max(late_ms(now, due));
                        }
                        let earliest = known
                            .renewed
                            .saturating_add(shortest(drift_ppm, known.ttl_ms));
                        if now < earliest && known.revoked.is_none_or(|r| now < r) {
                            return Err(format!(
                                "lease {id} removed at {now}, before its TTL of {} ms from \
                                 its last keep-alive sent at {} ran out (at {earliest})",
                                known.ttl_ms, known.renewed
                            ));
                        }
                    }
                    None => {}
                }
            }
            let revision = core.kv().revision();
            let mut gone = Vec::new();
            for (&key, known) in &mut self.keys {
                let query = KvQuery::GetRevisions(expiring_key(key));
                let KvReply::Entry { revisions, .. } = core.kv().query(&query) else {
                    continue;
                };
                if revisions.create > 0 {
                    known.created.get_or_insert(revisions.create);
                    continue;
                }
                if known.created.is_some_and(|c| revision >= c) {
                    gone.push(key);
                }
            }
            for key in gone {
                let Some(known) = self.keys.remove(&key) else {
                    continue;
                };
                self.counts.ended += 1;
                let due = known
                    .set
                    .saturating_add(Duration::from_millis(known.ttl_ms));
                self.counts.late_ms_max = self.counts.late_ms_max.max(late_ms(now, due));
                let earliest = known.set.saturating_add(shortest(drift_ppm, known.ttl_ms));
                if now < earliest {
                    return Err(format!(
                        "expiring key {key} deleted at {now}, before its TTL of {} ms from \
                         its set sent at {} ran out (at {earliest})",
                        known.ttl_ms, known.set
                    ));
                }
            }
        }
        Ok(())
    }

    /// Each leader ends the leases it tracks within the bound (see the module
    /// documentation).
    fn leaders(&mut self, view: &View<'_, RaftKvNode, LeaseOp, LeaseReply>) -> Result<(), String> {
        let now = view.now();
        let drift_ppm = self.drift_ppm;
        let mut leading = Vec::new();
        for (id, node) in view.nodes() {
            let Some(core) = core_of(node) else {
                continue;
            };
            if !core.expires_leases() {
                continue;
            }
            leading.push(id);
            let raft = core.raft();
            let term = raft.term().get();
            let last_index = raft.last_index().get();
            let applied = raft.applied_index().get();
            let grace = self.election_timeout_ms;
            let tick = longest(drift_ppm, self.expiry_tick_ms);
            let table = core.kv().leases();
            let taking_over = self.tenures.get(&id).is_none_or(|t| t.term != term);
            if taking_over {
                // Promoted in this event, with the table as it is now.
                let leases = table
                    .iter()
                    .map(|(lease, l)| {
                        let left = l.remaining_ms + if l.remaining_ms > 0 { grace } else { 0 };
                        let due = now.saturating_add(longest(drift_ppm, left) + tick);
                        (lease, (l.renewal, due, None))
                    })
                    .collect();
                self.tenures.insert(
                    id,
                    Tenure {
                        term,
                        last_index,
                        leases,
                    },
                );
                continue;
            }
            let Some(tenure) = self.tenures.get_mut(&id) else {
                continue;
            };
            let appended = last_index > tenure.last_index;
            tenure.last_index = last_index;
            // More leases than one expiry tick proposes: the bound is stretched by the
            // rate limit, and not checked while it may be.
            let limited = table.len() > self.expiries_per_tick_max;
            let before = tenure.leases.len();
            tenure.leases.retain(|lease, _| table.get(*lease).is_some());
            self.counts.ends_checked += (before - tenure.leases.len()) as u64;
            for (lease, l) in table.iter() {
                let entry = tenure.leases.entry(lease).or_insert((0, now, None));
                if entry.0 != l.renewal {
                    // Renewed (or granted) while this node leads: the TTL from now.
                    let due = now.saturating_add(longest(drift_ppm, l.ttl_ms) + tick);
                    *entry = (l.renewal, due, None);
                    continue;
                }
                if limited {
                    entry.2 = None;
                    continue;
                }
                if entry.2.is_none() && appended && now >= entry.1 {
                    entry.2 = Some(last_index);
                }
                if let Some(mark) = entry.2
                    && applied >= mark
                {
                    let due_then = table.len();
                    return Err(format!(
                        "{id}, leading in term {term}, still holds lease {lease} at {now}: \
                         its expiry was due by {} and it has applied index {applied}, past \
                         every entry it proposed then (renewal {}, TTL {} ms, {} ms left at \
                         the last checkpoint; {due_then} leases held)",
                        entry.1, l.renewal, l.ttl_ms, l.remaining_ms
                    ));
                }
            }
        }
        self.tenures.retain(|id, _| leading.contains(id));
        Ok(())
    }
}

/// A cluster of `config.nodes()` Consistent Core nodes set up by `options`, driven by
/// [`LeaseClients`] and checked by `leases`' checker after every event (with the raft-kv
/// invariant: no node stopped, Raft's safety properties), with progress required after
/// healing. `ttl_min_ms` is the shortest lease the clients ask for.
#[must_use]
pub fn simulation(
    config: SimConfig,
    seed: u64,
    options: NodeOptions,
    leases: &Leases,
    ttl_min_ms: u64,
    tally: &Tally,
) -> Simulation<RaftKvNode, LeaseClients> {
    let clients = LeaseClients::new(leases, ttl_min_ms);
    let checker = leases.clone();
    raft_kv::simulation_with(config, seed, options, clients, tally, move |view| {
        checker.check(view)
    })
}

/// Runs the lease simulation once with `seed` (`synod sim lease`).
pub(super) fn run(seed: u64, config: SimConfig, record: bool) -> RunSummary {
    let options = NodeOptions::default();
    let lease_config = options.lease_config();
    let leases = Leases::new(&lease_config, raft_kv::CLOCK_DRIFT_PPM_MAX);
    let simulation = simulation(
        config,
        seed,
        options,
        &leases,
        lease_config.ttl_ms_min(),
        &Tally::new(),
    );
    let simulation = if record {
        simulation.record(synod_sim::timeline::Recorder::protocol())
    } else {
        simulation
    };
    let report = simulation.run();
    let figures = vec![format!("leases: {}", leases.counts())];
    RunSummary::of_figures(
        report,
        figures,
        "one lock holder at a time, no stale fenced write applied, leases and expiring keys \
         ended neither before their TTL nor after a leader's bound, invariant held, progress \
         after healing",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drift_bound_shortens_and_stretches_a_ttl() {
        assert_eq!(shortest(100_000, 1_100), Duration::from_millis(1_000));
        assert_eq!(longest(100_000, 900), Duration::from_millis(1_000));
        assert_eq!(shortest(0, 7), longest(0, 7));
    }
}
