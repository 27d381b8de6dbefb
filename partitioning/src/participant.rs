//! Two-phase commit's participant, a `synod_node::Protocol` state machine: it locks,
//! records its pending writes and locks durably before it votes yes, and from then on
//! waits for its coordinator's decision, asking again when it waits too long.

use std::collections::BTreeMap;
use std::time::Duration;

use synod_node::{EffectOf, Input, InputOf, NodeId, Protocol, Time};

use crate::lock::{Acquire, DeadlockPolicy, LockManager, LockMode};
use crate::txn::{
    Gate, Key, Op, ParticipantRecord, Refusal, TxnId, TxnMessage, TxnOutcome, TxnWrite, Value, Vote,
};

/// How long a prepared participant waits for a decision before it asks the coordinator,
/// and again between asks, by default, in milliseconds.
pub const QUERY_AFTER_MS_DEFAULT: u64 = 100;
/// How long a prepare may wait for locks before the participant votes no, by default, in
/// milliseconds.
pub const LOCK_WAIT_MS_DEFAULT: u64 = 200;
/// How many keys may be locked at once, by default.
pub const KEYS_LOCKED_MAX_DEFAULT: usize = 65_536;
/// How many transactions may wait for locks at once, by default.
pub const WAITING_MAX_DEFAULT: usize = 1_024;
/// How many finished transactions a participant remembers, by default (to refuse a
/// duplicated prepare of one; older prepares are refused as stale).
pub const FINISHED_MAX_DEFAULT: usize = 4_096;

/// A participant's configuration.
#[derive(Clone, Debug)]
pub struct ParticipantConfig {
    id: NodeId,
    policy: DeadlockPolicy,
    query_after_ms: u64,
    lock_wait_ms: u64,
    keys_locked_max: usize,
    waiting_max: usize,
    finished_max: usize,
    initial_value: Value,
    #[cfg(feature = "broken")]
    broken_abort_after_yes: bool,
}

impl ParticipantConfig {
    /// Participant `id`, wound-wait, default timings and limits, keys starting at 0.
    #[must_use]
    pub fn new(id: NodeId) -> ParticipantConfig {
        ParticipantConfig {
            id,
            policy: DeadlockPolicy::WoundWait,
            query_after_ms: QUERY_AFTER_MS_DEFAULT,
            lock_wait_ms: LOCK_WAIT_MS_DEFAULT,
            keys_locked_max: KEYS_LOCKED_MAX_DEFAULT,
            waiting_max: WAITING_MAX_DEFAULT,
            finished_max: FINISHED_MAX_DEFAULT,
            initial_value: 0,
            #[cfg(feature = "broken")]
            broken_abort_after_yes: false,
        }
    }

    /// Sets the deadlock policy.
    #[must_use]
    pub fn policy(mut self, policy: DeadlockPolicy) -> ParticipantConfig {
        self.policy = policy;
        self
    }

    /// Sets how long a prepared transaction waits before asking its coordinator (at least
    /// 1 ms).
    #[must_use]
    pub fn query_after_ms(mut self, ms: u64) -> ParticipantConfig {
        self.query_after_ms = ms.max(1);
        self
    }

    /// Sets how long a prepare may wait for locks (at least 1 ms).
    #[must_use]
    pub fn lock_wait_ms(mut self, ms: u64) -> ParticipantConfig {
        self.lock_wait_ms = ms.max(1);
        self
    }

    /// Sets the lock limits: keys locked and transactions waiting (each at least 1).
    #[must_use]
    pub fn lock_limits(mut self, keys_locked_max: usize, waiting_max: usize) -> ParticipantConfig {
        self.keys_locked_max = keys_locked_max.max(1);
        self.waiting_max = waiting_max.max(1);
        self
    }

    /// Sets how many finished transactions are remembered (at least 1).
    #[must_use]
    pub fn finished_max(mut self, n: usize) -> ParticipantConfig {
        self.finished_max = n.max(1);
        self
    }

    /// Sets the value a key holds before its first write (a bank's opening balance).
    #[must_use]
    pub fn initial_value(mut self, value: Value) -> ParticipantConfig {
        self.initial_value = value;
        self
    }

    /// Deliberately broken: a participant that voted yes and hears nothing for a while
    /// aborts on its own, where a correct one asks its coordinator. For tests that show the
    /// atomicity checker catches it.
    #[cfg(feature = "broken")]
    #[must_use]
    pub fn broken_abort_after_yes(mut self) -> ParticipantConfig {
        self.broken_abort_after_yes = true;
        self
    }
}

/// A transaction this participant knows and has not finished.
#[derive(Clone, Debug)]
enum Pending {
    /// Waiting for locks since `since`.
    Waiting { ops: Vec<Op>, since: Time },
    /// Prepared (durably once its record's persist is acknowledged; the yes vote waits for
    /// that): waiting for the decision, asking again at `ask_at`.
    Prepared {
        writes: Vec<(Key, Value)>,
        reads: Vec<(Key, Value)>,
        ask_at: Time,
    },
}

/// A participant of two-phase commit, on the node contract.
///
/// A [`TxnMessage::Prepare`] takes the locks its operations need (shared to read,
/// exclusive to add) from a [`LockManager`], computes the new values, persists a
/// [`ParticipantRecord::Prepared`] with the pending writes and the locks, and votes yes
/// only once that record is durable. Waiting for locks, it wounds younger holders (or,
/// under wait-die, dies); a prepare that waits longer than `lock_wait_ms` votes no.
///
/// Having voted yes it never aborts on its own: it holds its locks until the
/// coordinator's [`TxnMessage::Decision`], and asks ([`TxnMessage::Query`]) every
/// `query_after_ms` while it waits. A decision is persisted
/// ([`ParticipantRecord::Committed`] or [`ParticipantRecord::Aborted`]), applied, and
/// acknowledged once durable; a repeated decision is acknowledged again and changes
/// nothing (commit and abort are idempotent).
///
/// [`Participant::restore`] rebuilds it from its records: committed writes applied, and
/// every transaction prepared but not decided in doubt again, its locks held, asking its
/// coordinator at once.
#[derive(Clone, Debug)]
pub struct Participant {
    config: ParticipantConfig,
    store: BTreeMap<Key, Value>,
    locks: LockManager<Key, Age>,
    /// Each transaction's priority (its age for the lock manager is its priority, then id).
    pending: BTreeMap<TxnId, (TxnId, Pending)>,
    /// Finished transactions: committed (true) or aborted, at most `finished_max`.
    finished: BTreeMap<TxnId, bool>,
    /// Per coordinator, the newest finished transaction forgotten: prepares at or before
    /// it are refused as stale.
    forgotten: BTreeMap<NodeId, TxnId>,
    gate: Gate,
}

/// A transaction's age for the lock manager: its priority, then its id.
type Age = (TxnId, TxnId);

impl Participant {
    /// A participant that has never run.
    #[must_use]
    pub fn new(config: ParticipantConfig) -> Participant {
        Participant::restore(config, Vec::new(), Time::ZERO)
    }

    /// A participant rebuilt from the records it persisted, in order (a torn last record
    /// left out), at a start at `now`.
    #[must_use]
    pub fn restore(
        config: ParticipantConfig,
        records: Vec<ParticipantRecord>,
        now: Time,
    ) -> Participant {
        let mut p = Participant {
            locks: LockManager::new(config.policy, config.keys_locked_max, config.waiting_max),
            config,
            store: BTreeMap::new(),
            pending: BTreeMap::new(),
            finished: BTreeMap::new(),
            forgotten: BTreeMap::new(),
            gate: Gate::default(),
        };
        let mut locks: BTreeMap<TxnId, Vec<(Key, LockMode)>> = BTreeMap::new();
        for record in records {
            match record {
                ParticipantRecord::Prepared {
                    txn,
                    writes,
                    locks: held,
                    reads,
                } => {
                    locks.insert(txn, held);
                    let prepared = Pending::Prepared {
                        writes,
                        reads,
                        ask_at: now,
                    };
                    p.pending.insert(txn, (txn, prepared));
                }
                ParticipantRecord::Committed(txn) => {
                    locks.remove(&txn);
                    if let Some((_, Pending::Prepared { writes, .. })) = p.pending.remove(&txn) {
                        p.store.extend(writes);
                    }
                    p.finish(txn, true);
                }
                ParticipantRecord::Aborted(txn) => {
                    locks.remove(&txn);
                    p.pending.remove(&txn);
                    p.finish(txn, false);
                }
                ParticipantRecord::Snapshot { values, forgotten } => {
                    p.store = values.into_iter().collect();
                    p.forgotten = forgotten.into_iter().collect();
                }
            }
        }
        // In-doubt transactions hold their locks again (they held them together before).
        for (txn, held) in locks {
            let priority = p.pending.get(&txn).map_or(txn, |(prio, _)| *prio);
            p.locks.grant((priority, txn), held);
        }
        // In-doubt transactions ask their coordinators at once: nothing else may ever
        // wake this participant.
        let wake = p.next_wake();
        p.gate.wake_at(wake);
        p
    }

    /// What this participant's log can be replaced with: a [`ParticipantRecord::Snapshot`]
    /// of the committed values, then a record per finished transaction it remembers and per
    /// prepared one (in doubt). [`Participant::restore`] from these builds the same
    /// participant as from the whole log, so a store can rewrite its log with them (write
    /// aside, sync, rename) once it grows, and keep it within about what it holds rather
    /// than every transaction ever. Call it between inputs, with the log's every earlier
    /// record written; transactions waiting for locks hold nothing durable and are left
    /// out.
    #[must_use]
    pub fn compacted(&self) -> Vec<ParticipantRecord> {
        let mut out = vec![ParticipantRecord::Snapshot {
            values: self.store.iter().map(|(&k, &v)| (k, v)).collect(),
            forgotten: self.forgotten.iter().map(|(&n, &t)| (n, t)).collect(),
        }];
        for (&txn, &committed) in &self.finished {
            out.push(if committed {
                ParticipantRecord::Committed(txn)
            } else {
                ParticipantRecord::Aborted(txn)
            });
        }
        for (&txn, (priority, p)) in &self.pending {
            if let Pending::Prepared { writes, reads, .. } = p {
                out.push(ParticipantRecord::Prepared {
                    txn,
                    writes: writes.clone(),
                    locks: self.locks.held_by((*priority, txn)).to_vec(),
                    reads: reads.clone(),
                });
            }
        }
        out
    }

    /// The committed value of `key`.
    #[must_use]
    pub fn value(&self, key: Key) -> Value {
        self.store
            .get(&key)
            .copied()
            .unwrap_or(self.config.initial_value)
    }

    /// The transactions prepared here and not decided yet (in doubt).
    pub fn in_doubt(&self) -> impl Iterator<Item = TxnId> + '_ {
        self.pending
            .iter()
            .filter(|(_, (_, p))| matches!(p, Pending::Prepared { .. }))
            .map(|(&t, _)| t)
    }

    /// The locks `txn` holds here.
    #[must_use]
    pub fn locks_of(&self, txn: TxnId) -> Vec<(Key, LockMode)> {
        let Some((priority, _)) = self.pending.get(&txn) else {
            return Vec::new();
        };
        self.locks.held_by((*priority, txn)).to_vec()
    }

    /// How `txn` finished here, if this participant remembers: committed (true) or aborted.
    #[must_use]
    pub fn outcome(&self, txn: TxnId) -> Option<bool> {
        self.finished.get(&txn).copied()
    }

    fn age(&self, txn: TxnId) -> Age {
        (self.pending.get(&txn).map_or(txn, |(prio, _)| *prio), txn)
    }

    fn finish(&mut self, txn: TxnId, committed: bool) {
        self.finished.insert(txn, committed);
        if self.finished.len() > self.config.finished_max {
            let (&old, _) = self.finished.iter().next().expect("not empty");
            self.finished.remove(&old);
            let floor = self.forgotten.entry(old.coordinator).or_insert(old);
            *floor = (*floor).max(old);
        }
    }

    fn prepare_message(
        &mut self,
        now: Time,
        from: NodeId,
        txn: TxnId,
        priority: TxnId,
        ops: Vec<Op>,
    ) {
        if from != txn.coordinator {
            return; // only its coordinator prepares a transaction
        }
        if let Some(&committed) = self.finished.get(&txn) {
            if !committed {
                self.vote(txn, Vote::No(Refusal::Conflict));
            }
            return; // a duplicate of a committed transaction's prepare: nothing to say
        }
        if self
            .forgotten
            .get(&txn.coordinator)
            .is_some_and(|&f| txn <= f)
        {
            self.vote(txn, Vote::No(Refusal::Stale));
            return;
        }
        match self.pending.get(&txn) {
            Some((_, Pending::Prepared { reads, .. })) => {
                // A resent prepare: vote again (after the record is durable, as the first).
                let reads = reads.clone();
                self.vote(txn, Vote::Yes { reads });
                return;
            }
            Some((_, Pending::Waiting { .. })) => return,
            None => {}
        }
        if ops.is_empty() || ops.len() > crate::coordinator::OPS_MAX {
            self.vote(txn, Vote::No(Refusal::Busy));
            return;
        }
        let mut wanted: BTreeMap<Key, LockMode> = BTreeMap::new();
        for op in &ops {
            let mode = wanted.entry(op.key()).or_insert(op.mode());
            *mode = (*mode).max(op.mode());
        }
        self.pending
            .insert(txn, (priority, Pending::Waiting { ops, since: now }));
        match self
            .locks
            .request((priority, txn), wanted.into_iter().collect())
        {
            Acquire::Granted => self.prepare(now, txn),
            Acquire::Wait { wound } => {
                for (_, victim) in wound {
                    self.wound(now, victim);
                }
            }
            Acquire::Die => self.refuse(now, txn, Refusal::Conflict),
            Acquire::Busy => self.refuse(now, txn, Refusal::Busy),
        }
    }

    /// The locks of `txn` are granted: compute, persist the record, vote yes once durable.
    fn prepare(&mut self, now: Time, txn: TxnId) {
        let Some((priority, Pending::Waiting { ops, .. })) = self.pending.get(&txn).cloned() else {
            return;
        };
        let mut reads = Vec::new();
        let mut writes: BTreeMap<Key, Value> = BTreeMap::new();
        for op in ops {
            let current = writes
                .get(&op.key())
                .copied()
                .unwrap_or_else(|| self.value(op.key()));
            match op {
                Op::Read(k) => reads.push((k, current)),
                Op::Add(k, delta) => {
                    writes.insert(k, current.saturating_add(delta));
                }
            }
        }
        let writes: Vec<(Key, Value)> = writes.into_iter().collect();
        let locks = self.locks.held_by((priority, txn)).to_vec();
        self.gate
            .persist(TxnWrite::Participant(ParticipantRecord::Prepared {
                txn,
                writes: writes.clone(),
                locks,
                reads: reads.clone(),
            }));
        self.pending.insert(
            txn,
            (
                priority,
                Pending::Prepared {
                    writes,
                    reads: reads.clone(),
                    ask_at: now + Duration::from_millis(self.config.query_after_ms),
                },
            ),
        );
        self.vote(txn, Vote::Yes { reads });
    }

    fn vote(&mut self, txn: TxnId, vote: Vote) {
        self.gate
            .send(txn.coordinator, TxnMessage::Vote { txn, vote });
    }

    /// Votes no for a transaction that has not prepared here, and lets it go. One that has
    /// prepared meanwhile (a release earlier in the same step let it through) is left
    /// alone: it voted yes, and only its coordinator may abort it now.
    fn refuse(&mut self, now: Time, txn: TxnId, refusal: Refusal) {
        if matches!(self.pending.get(&txn), Some((_, Pending::Prepared { .. }))) {
            return;
        }
        let age = self.age(txn);
        self.pending.remove(&txn);
        self.finish(txn, false);
        self.vote(txn, Vote::No(refusal));
        self.release(now, age);
    }

    /// Releases the locks of `age` and prepares whatever that lets through.
    fn release(&mut self, now: Time, age: Age) {
        let released = self.locks.release(age);
        for (_, died) in released.died {
            self.refuse(now, died, Refusal::Conflict);
        }
        for (_, granted) in released.granted {
            self.prepare(now, granted);
        }
    }

    /// An older transaction needs `victim`'s locks.
    fn wound(&mut self, now: Time, victim: TxnId) {
        match self.pending.get(&victim) {
            Some((_, Pending::Waiting { .. })) => self.refuse(now, victim, Refusal::Conflict),
            // Prepared: only its coordinator may abort it.
            Some((_, Pending::Prepared { .. })) => {
                self.gate
                    .send(victim.coordinator, TxnMessage::Wound { txn: victim });
            }
            None => {}
        }
    }

    fn decision(&mut self, now: Time, from: NodeId, txn: TxnId, commit: bool) {
        if from != txn.coordinator {
            return;
        }
        let forgotten = self.forgotten.get(&from).is_some_and(|&f| txn <= f);
        if self.finished.contains_key(&txn) || forgotten {
            // Carried out already (and perhaps forgotten since): acknowledge again.
            self.gate.send(from, TxnMessage::Ack { txn });
            return;
        }
        match self.pending.get(&txn).cloned() {
            Some((priority, Pending::Prepared { writes, .. })) => {
                let record = if commit {
                    ParticipantRecord::Committed(txn)
                } else {
                    ParticipantRecord::Aborted(txn)
                };
                self.gate.persist(TxnWrite::Participant(record));
                if commit {
                    self.store.extend(writes);
                }
                self.pending.remove(&txn);
                self.finish(txn, commit);
                self.gate.apply(TxnOutcome {
                    node: self.config.id,
                    txn,
                    committed: commit,
                });
                self.gate.send(from, TxnMessage::Ack { txn });
                self.release(now, (priority, txn));
            }
            Some((_, Pending::Waiting { .. })) if !commit => {
                self.refuse(now, txn, Refusal::Conflict);
                self.gate.send(from, TxnMessage::Ack { txn });
            }
            // A commit of a transaction that never prepared here cannot be carried out;
            // a correct coordinator never sends one.
            Some((_, Pending::Waiting { .. })) => {}
            None => {
                if !commit {
                    // Remember it, so a late prepare of it is refused.
                    self.finish(txn, false);
                    self.gate.send(from, TxnMessage::Ack { txn });
                }
            }
        }
    }

    fn tick(&mut self, now: Time) {
        let lock_wait = Duration::from_millis(self.config.lock_wait_ms);
        let query_after = Duration::from_millis(self.config.query_after_ms);
        let mut too_long = Vec::new();
        let mut ask = Vec::new();
        for (&txn, (_, p)) in &mut self.pending {
            match p {
                Pending::Waiting { since, .. } => {
                    if *since + lock_wait <= now {
                        too_long.push(txn);
                    }
                }
                Pending::Prepared { ask_at, .. } => {
                    if *ask_at <= now {
                        *ask_at = now + query_after;
                        ask.push(txn);
                    }
                }
            }
        }
        for txn in too_long {
            self.refuse(now, txn, Refusal::Conflict);
        }
        for txn in ask {
            #[cfg(feature = "broken")]
            if self.config.broken_abort_after_yes {
                self.broken_abort(now, txn);
                continue;
            }
            self.gate.send(txn.coordinator, TxnMessage::Query { txn });
        }
    }

    /// The broken participant's unilateral abort of a transaction it voted yes for.
    #[cfg(feature = "broken")]
    fn broken_abort(&mut self, now: Time, txn: TxnId) {
        let age = self.age(txn);
        self.gate
            .persist(TxnWrite::Participant(ParticipantRecord::Aborted(txn)));
        self.pending.remove(&txn);
        self.finish(txn, false);
        self.gate.apply(TxnOutcome {
            node: self.config.id,
            txn,
            committed: false,
        });
        self.release(now, age);
    }

    fn next_wake(&self) -> Option<Time> {
        let lock_wait = Duration::from_millis(self.config.lock_wait_ms);
        self.pending
            .values()
            .map(|(_, p)| match p {
                Pending::Waiting { since, .. } => *since + lock_wait,
                Pending::Prepared { ask_at, .. } => *ask_at,
            })
            .min()
    }
}

impl Protocol for Participant {
    type Message = TxnMessage;
    type Request = crate::txn::TxnRequest;
    type Response = crate::txn::TxnResponse;
    type Write = TxnWrite;
    type Apply = TxnOutcome;

    fn id(&self) -> NodeId {
        self.config.id
    }

    fn handle(&mut self, now: Time, input: InputOf<Self>) {
        match input {
            Input::Message { from, message } => match message {
                TxnMessage::Prepare { txn, priority, ops } => {
                    self.prepare_message(now, from, txn, priority, ops);
                }
                TxnMessage::Decision { txn, commit } => self.decision(now, from, txn, commit),
                // Meant for coordinators.
                TxnMessage::Vote { .. }
                | TxnMessage::Ack { .. }
                | TxnMessage::Query { .. }
                | TxnMessage::Wound { .. } => {}
            },
            // A participant runs no transactions of its own.
            Input::Request { id, .. } => self.gate.reply(id, crate::txn::TxnResponse::Refused),
            Input::Persisted(token) => self.gate.persisted(token),
            Input::Wake => {
                self.gate.woken();
                self.tick(now);
            }
        }
        let wake = self.next_wake();
        self.gate.wake_at(wake);
    }

    fn poll(&mut self) -> Option<EffectOf<Self>> {
        self.gate.poll()
    }
}
