//! Two-phase commit's coordinator, a `synod_node::Protocol` state machine: it prepares a
//! transaction on its participants, makes its decision durable before anyone hears it, and
//! finishes every decided transaction, after a restart too.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use synod_node::{EffectOf, Input, InputOf, NodeId, Protocol, RequestId, Time};

use crate::txn::{
    CoordinatorRecord, Gate, Op, Refusal, TxnId, TxnMessage, TxnOutcome, TxnRequest, TxnResponse,
    TxnWrite, Vote, participant_of,
};

/// How long a coordinator waits between resending a prepare or a decision, by default, in
/// milliseconds.
pub const RESEND_MS_DEFAULT: u64 = 50;
/// How long a transaction may take to prepare before it is aborted, by default, in
/// milliseconds.
pub const PREPARE_TIMEOUT_MS_DEFAULT: u64 = 400;
/// How many transactions a coordinator runs at once, by default.
pub const TXNS_MAX_DEFAULT: usize = 1_024;
/// How many times a transaction aborted by a conflict is tried, by default.
pub const ATTEMPTS_MAX_DEFAULT: u32 = 32;
/// The most operations one transaction may have.
pub const OPS_MAX: usize = 1_024;

/// A coordinator's configuration.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    id: NodeId,
    participants: Vec<NodeId>,
    resend_ms: u64,
    prepare_timeout_ms: u64,
    txns_max: usize,
    attempts_max: u32,
    #[cfg(feature = "broken")]
    broken_send_before_durable: bool,
}

impl CoordinatorConfig {
    /// Coordinator `id` of transactions over `participants` (keys are spread over them by
    /// [`participant_of`]), with the default timings and limits.
    ///
    /// # Panics
    ///
    /// If `participants` is empty.
    #[must_use]
    pub fn new(id: NodeId, participants: Vec<NodeId>) -> CoordinatorConfig {
        assert!(!participants.is_empty(), "a coordinator needs participants");
        CoordinatorConfig {
            id,
            participants,
            resend_ms: RESEND_MS_DEFAULT,
            prepare_timeout_ms: PREPARE_TIMEOUT_MS_DEFAULT,
            txns_max: TXNS_MAX_DEFAULT,
            attempts_max: ATTEMPTS_MAX_DEFAULT,
            #[cfg(feature = "broken")]
            broken_send_before_durable: false,
        }
    }

    /// Sets the delay between resends (at least 1 ms).
    #[must_use]
    pub fn resend_ms(mut self, ms: u64) -> CoordinatorConfig {
        self.resend_ms = ms.max(1);
        self
    }

    /// Sets how long a transaction may take to prepare (at least 1 ms).
    #[must_use]
    pub fn prepare_timeout_ms(mut self, ms: u64) -> CoordinatorConfig {
        self.prepare_timeout_ms = ms.max(1);
        self
    }

    /// Sets how many transactions may run at once, counting those decided and waiting for
    /// their participants' acknowledgements (at least 1); one more is refused.
    #[must_use]
    pub fn txns_max(mut self, n: usize) -> CoordinatorConfig {
        self.txns_max = n.max(1);
        self
    }

    /// Sets how many times a transaction aborted by a conflict is tried (at least 1).
    #[must_use]
    pub fn attempts_max(mut self, n: u32) -> CoordinatorConfig {
        self.attempts_max = n.max(1);
        self
    }

    /// Deliberately broken: the coordinator sends its decision before the decision is
    /// durable, so a crash in between can leave participants committed while the restarted
    /// coordinator presumes abort. For tests that show the atomicity checker catches it.
    #[cfg(feature = "broken")]
    #[must_use]
    pub fn broken_send_before_durable(mut self) -> CoordinatorConfig {
        self.broken_send_before_durable = true;
        self
    }

    fn resend(&self) -> Duration {
        Duration::from_millis(self.resend_ms)
    }
}

/// A transaction being prepared.
#[derive(Clone, Debug)]
struct Preparing {
    priority: TxnId,
    request: RequestId,
    attempt: u32,
    ops: Vec<Op>,
    /// The operations of each participant.
    shares: BTreeMap<NodeId, Vec<Op>>,
    /// The yes votes so far, with their reads.
    yes: BTreeMap<NodeId, Vec<(u64, i64)>>,
    deadline: Time,
    resend_at: Time,
}

/// A decided transaction whose participants have not all acknowledged.
#[derive(Clone, Debug)]
struct Decided {
    commit: bool,
    waiting: BTreeSet<NodeId>,
    resend_at: Time,
}

/// A client request between two attempts.
#[derive(Clone, Debug)]
struct Retry {
    priority: TxnId,
    request: RequestId,
    attempt: u32,
    ops: Vec<Op>,
    at: Time,
}

/// The coordinator of two-phase commit, on the node contract.
///
/// **Phase one.** A client's [`TxnRequest`] gets a [`TxnId`]; each participant holding
/// one of its keys gets a [`TxnMessage::Prepare`] with its operations, resent until it
/// votes.
///
/// **Decision.** All yes: commit. Any no, or no answer within the prepare timeout: abort.
/// The decision is persisted ([`CoordinatorRecord::Decided`]) and nothing about it leaves
/// (not the [`TxnMessage::Decision`]s, not the client's reply) before the persist is
/// acknowledged: a coordinator that crashes before that has told no one, and presumes
/// abort after its restart; one that crashes after finds the decision on its disk.
///
/// **Phase two.** The decision is resent to each participant until it acknowledges; then
/// the transaction is ended ([`CoordinatorRecord::Ended`], persisted lazily: nothing waits
/// for it, and if a crash loses it the restarted coordinator resends a decision the
/// participants acknowledge again) and forgotten. A participant
/// asking about a transaction the coordinator has no record of hears abort (*presumed
/// abort*): it was never decided, or it ended after every participant acknowledged.
///
/// **Retries.** A transaction aborted because a participant refused it for a conflict
/// (wound-wait, wait-die, a lock wait too long) or timed out is tried again with a new id
/// and its first attempt's id as its priority, up to `attempts_max` times, so it ages and
/// eventually wins every conflict. The client hears the outcome of the last attempt.
///
/// **Restart.** [`Coordinator::restore`] rebuilds it from its records: a new epoch (durable
/// before any new id is used), and every decided transaction that did not end, whose
/// decision is resent at once: in-doubt participants are resolved.
#[derive(Clone, Debug)]
pub struct Coordinator {
    config: CoordinatorConfig,
    epoch: u64,
    seq: u64,
    preparing: BTreeMap<TxnId, Preparing>,
    decided: BTreeMap<TxnId, Decided>,
    retries: Vec<Retry>,
    gate: Gate,
}

impl Coordinator {
    /// A coordinator that has never run.
    #[must_use]
    pub fn new(config: CoordinatorConfig) -> Coordinator {
        Coordinator::restore(config, Vec::new())
    }

    /// A coordinator rebuilt from the records it persisted, in order (a torn last record
    /// left out). Its first effect persists its new epoch; everything else waits for it.
    #[must_use]
    pub fn restore(config: CoordinatorConfig, records: Vec<CoordinatorRecord>) -> Coordinator {
        let mut epoch = 0;
        let mut decided: BTreeMap<TxnId, Decided> = BTreeMap::new();
        for record in records {
            match record {
                CoordinatorRecord::Epoch(e) => epoch = epoch.max(e),
                CoordinatorRecord::Decided {
                    txn,
                    commit,
                    participants,
                } => {
                    decided.insert(
                        txn,
                        Decided {
                            commit,
                            waiting: participants.into_iter().collect(),
                            resend_at: Time::ZERO,
                        },
                    );
                }
                CoordinatorRecord::Ended(txn) => {
                    decided.remove(&txn);
                }
            }
        }
        let mut gate = Gate::default();
        // The new epoch is durable before any id of it leaves (everything waits for it).
        gate.persist(TxnWrite::Coordinator(CoordinatorRecord::Epoch(epoch + 1)));
        let mut coordinator = Coordinator {
            config,
            epoch: epoch + 1,
            seq: 0,
            preparing: BTreeMap::new(),
            decided,
            retries: Vec::new(),
            gate,
        };
        // In-doubt transactions: their decisions go out again at once, and are handed up
        // again (an outcome is handed up at least once, from the durable decision).
        let pending: Vec<(TxnId, bool)> = coordinator.in_doubt().collect();
        for (txn, committed) in pending {
            coordinator.send_decision(txn);
            coordinator.gate.apply(TxnOutcome {
                node: coordinator.config.id,
                txn,
                committed,
            });
        }
        let wake = coordinator.next_wake();
        coordinator.gate.wake_at(wake);
        coordinator
    }

    /// What this coordinator's log can be replaced with: its epoch, and the decision of
    /// every transaction not every participant has acknowledged. [`Coordinator::restore`]
    /// from these builds the same coordinator as from the whole log (a store rewrites its
    /// log with them once it grows: write aside, sync, rename).
    #[must_use]
    pub fn compacted(&self) -> Vec<CoordinatorRecord> {
        let mut out = vec![CoordinatorRecord::Epoch(self.epoch)];
        for (&txn, d) in &self.decided {
            out.push(CoordinatorRecord::Decided {
                txn,
                commit: d.commit,
                participants: d.waiting.iter().copied().collect(),
            });
        }
        out
    }

    /// The transactions being prepared.
    pub fn preparing(&self) -> impl Iterator<Item = TxnId> + '_ {
        self.preparing.keys().copied()
    }

    /// The decided transactions not every participant has acknowledged, with their
    /// decisions.
    pub fn in_doubt(&self) -> impl Iterator<Item = (TxnId, bool)> + '_ {
        self.decided.iter().map(|(&t, d)| (t, d.commit))
    }

    /// The coordinator's epoch (its start count).
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    fn next_id(&mut self) -> TxnId {
        self.seq += 1;
        TxnId {
            epoch: self.epoch,
            seq: self.seq,
            coordinator: self.config.id,
        }
    }

    fn request(&mut self, now: Time, id: RequestId, request: TxnRequest) {
        // Decided transactions still waiting for acknowledgements count too: a participant
        // that never answers holds the coordinator back rather than growing its memory.
        let active = self.preparing.len() + self.retries.len() + self.decided.len();
        if request.ops.is_empty() || request.ops.len() > OPS_MAX || active >= self.config.txns_max {
            self.gate.reply(id, TxnResponse::Refused);
            return;
        }
        let txn = self.next_id();
        self.start(now, txn, txn, id, 1, request.ops);
    }

    /// Starts attempt `attempt` of a transaction as `txn`.
    fn start(
        &mut self,
        now: Time,
        txn: TxnId,
        priority: TxnId,
        request: RequestId,
        attempt: u32,
        ops: Vec<Op>,
    ) {
        let mut shares: BTreeMap<NodeId, Vec<Op>> = BTreeMap::new();
        for &op in &ops {
            shares
                .entry(participant_of(op.key(), &self.config.participants))
                .or_default()
                .push(op);
        }
        for (&p, share) in &shares {
            self.gate.send(
                p,
                TxnMessage::Prepare {
                    txn,
                    priority,
                    ops: share.clone(),
                },
            );
        }
        self.preparing.insert(
            txn,
            Preparing {
                priority,
                request,
                attempt,
                ops,
                shares,
                yes: BTreeMap::new(),
                deadline: now + Duration::from_millis(self.config.prepare_timeout_ms),
                resend_at: now + self.config.resend(),
            },
        );
    }

    fn vote(&mut self, now: Time, from: NodeId, txn: TxnId, vote: Vote) {
        let Some(p) = self.preparing.get_mut(&txn) else {
            return; // decided already, or not ours: a late or duplicated vote
        };
        if !p.shares.contains_key(&from) {
            return;
        }
        match vote {
            Vote::Yes { reads } => {
                p.yes.insert(from, reads);
                if p.yes.len() == p.shares.len() {
                    self.decide(now, txn, true, true);
                }
            }
            Vote::No(refusal) => {
                let retry = refusal != Refusal::Busy;
                self.decide(now, txn, false, retry);
            }
        }
    }

    /// Decides `txn`: persists the decision, then (once durable) tells the participants
    /// and the client, or schedules another attempt.
    fn decide(&mut self, now: Time, txn: TxnId, commit: bool, retry: bool) {
        let p = self
            .preparing
            .remove(&txn)
            .expect("deciding a transaction being prepared");
        let participants: Vec<NodeId> = p.shares.keys().copied().collect();
        #[cfg(feature = "broken")]
        if self.config.broken_send_before_durable {
            for &to in &participants {
                self.gate.send_now(to, TxnMessage::Decision { txn, commit });
            }
        }
        self.gate
            .persist(TxnWrite::Coordinator(CoordinatorRecord::Decided {
                txn,
                commit,
                participants: participants.clone(),
            }));
        self.decided.insert(
            txn,
            Decided {
                commit,
                waiting: participants.into_iter().collect(),
                resend_at: now + self.config.resend(),
            },
        );
        self.send_decision(txn);
        self.gate.apply(TxnOutcome {
            node: self.config.id,
            txn,
            committed: commit,
        });
        if commit {
            let reads = p.yes.into_values().flatten().collect();
            self.gate.reply(p.request, TxnResponse::Committed { reads });
        } else if retry && p.attempt < self.config.attempts_max {
            // Back off a little, longer each attempt, and try again with the same age.
            let backoff = self.config.resend() * p.attempt.min(8);
            self.retries.push(Retry {
                priority: p.priority,
                request: p.request,
                attempt: p.attempt + 1,
                ops: p.ops,
                at: now + backoff,
            });
        } else {
            self.gate.reply(p.request, TxnResponse::Aborted);
        }
    }

    fn send_decision(&mut self, txn: TxnId) {
        let d = &self.decided[&txn];
        let commit = d.commit;
        for &to in &d.waiting {
            self.gate.send(to, TxnMessage::Decision { txn, commit });
        }
    }

    fn ack(&mut self, from: NodeId, txn: TxnId) {
        let Some(d) = self.decided.get_mut(&txn) else {
            return;
        };
        d.waiting.remove(&from);
        if d.waiting.is_empty() {
            self.decided.remove(&txn);
            self.gate
                .persist_lazily(TxnWrite::Coordinator(CoordinatorRecord::Ended(txn)));
        }
    }

    fn query(&mut self, from: NodeId, txn: TxnId) {
        if let Some(d) = self.decided.get(&txn) {
            let commit = d.commit;
            self.gate.send(from, TxnMessage::Decision { txn, commit });
        } else if !self.preparing.contains_key(&txn) && txn.coordinator == self.config.id {
            // No record: never decided, or ended after every participant acknowledged.
            self.gate
                .send(from, TxnMessage::Decision { txn, commit: false });
        }
    }

    fn wound(&mut self, now: Time, txn: TxnId) {
        if self.preparing.contains_key(&txn) {
            self.decide(now, txn, false, true);
        }
    }

    fn tick(&mut self, now: Time) {
        let expired: Vec<TxnId> = self
            .preparing
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&t, _)| t)
            .collect();
        for txn in expired {
            self.decide(now, txn, false, true);
        }
        let resend = self.config.resend();
        let mut prepares = Vec::new();
        for (&txn, p) in &mut self.preparing {
            if p.resend_at <= now {
                p.resend_at = now + resend;
                for (&to, share) in &p.shares {
                    if !p.yes.contains_key(&to) {
                        prepares.push((to, txn, p.priority, share.clone()));
                    }
                }
            }
        }
        for (to, txn, priority, ops) in prepares {
            self.gate
                .send(to, TxnMessage::Prepare { txn, priority, ops });
        }
        let mut decisions = Vec::new();
        for (&txn, d) in &mut self.decided {
            if d.resend_at <= now {
                d.resend_at = now + resend;
                decisions.push(txn);
            }
        }
        for txn in decisions {
            self.send_decision(txn);
        }
        let (due, later): (Vec<Retry>, Vec<Retry>) = std::mem::take(&mut self.retries)
            .into_iter()
            .partition(|r| r.at <= now);
        self.retries = later;
        for r in due {
            let txn = self.next_id();
            self.start(now, txn, r.priority, r.request, r.attempt, r.ops);
        }
    }

    fn next_wake(&self) -> Option<Time> {
        let preparing = self.preparing.values().map(|p| p.deadline.min(p.resend_at));
        let decided = self.decided.values().map(|d| d.resend_at);
        let retries = self.retries.iter().map(|r| r.at);
        preparing.chain(decided).chain(retries).min()
    }
}

impl Protocol for Coordinator {
    type Message = TxnMessage;
    type Request = TxnRequest;
    type Response = TxnResponse;
    type Write = TxnWrite;
    type Apply = TxnOutcome;

    fn id(&self) -> NodeId {
        self.config.id
    }

    fn handle(&mut self, now: Time, input: InputOf<Self>) {
        match input {
            Input::Request { id, request } => self.request(now, id, request),
            Input::Message { from, message } => match message {
                TxnMessage::Vote { txn, vote } => self.vote(now, from, txn, vote),
                TxnMessage::Ack { txn } => self.ack(from, txn),
                TxnMessage::Query { txn } => self.query(from, txn),
                TxnMessage::Wound { txn } => self.wound(now, txn),
                // Meant for participants.
                TxnMessage::Prepare { .. } | TxnMessage::Decision { .. } => {}
            },
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
