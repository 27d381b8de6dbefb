//! Two-phase commit's vocabulary: transaction ids, operations, the messages between a
//! coordinator and its participants, what each persists, and the gate that holds every
//! effect behind the persists issued before it.

use std::fmt;

use serde::{Deserialize, Serialize};
use synod_node::{Effect, NodeId, PersistToken, RequestId, Time};

use crate::fixed::partition_of;
use crate::lock::LockMode;

/// A key of the transactional store (an account number in the bank example).
pub type Key = u64;
/// A value of the transactional store (a balance).
pub type Value = i64;

/// A transaction's identity, issued by its coordinator: the coordinator's epoch (a count of
/// its starts, durable before it issues any id, so no id is issued twice), a sequence
/// number within the epoch, and the coordinator.
///
/// Ids are ordered by (epoch, sequence, coordinator); the lock manager takes a smaller id
/// as older. A transaction retried after it was wounded keeps its first attempt's id as its
/// *priority*, so it ages and, once the oldest, always wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TxnId {
    /// The coordinator's start count.
    pub epoch: u64,
    /// The transaction's number within the epoch, from 1.
    pub seq: u64,
    /// The coordinator that decides it.
    pub coordinator: NodeId,
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}.{}.{}", self.coordinator.get(), self.epoch, self.seq)
    }
}

/// One operation of a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Op {
    /// Read the key (a shared lock); its value comes back with the commit.
    Read(Key),
    /// Add to the key's value (an exclusive lock). A missing key holds the participant's
    /// initial value.
    Add(Key, Value),
}

impl Op {
    /// The key the operation touches.
    #[must_use]
    pub fn key(self) -> Key {
        match self {
            Op::Read(k) | Op::Add(k, _) => k,
        }
    }

    /// The lock it needs.
    #[must_use]
    pub fn mode(self) -> LockMode {
        match self {
            Op::Read(_) => LockMode::Shared,
            Op::Add(..) => LockMode::Exclusive,
        }
    }
}

/// The participant that holds `key` among `participants`: the key's fixed partition
/// ([`partition_of`] of its big-endian bytes) among as many partitions as participants.
///
/// # Panics
///
/// If `participants` is empty.
#[must_use]
pub fn participant_of(key: Key, participants: &[NodeId]) -> NodeId {
    let count = u32::try_from(participants.len()).expect("a few participants");
    participants[partition_of(&key.to_be_bytes(), count).0 as usize]
}

/// Why a participant voted no.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Refusal {
    /// Its locks were in the way of an older transaction (wound-wait), or an older one
    /// held them (wait-die), or it waited for them too long: worth retrying.
    Conflict,
    /// A limit was reached (locks, waiting transactions, transactions in flight).
    Busy,
    /// The prepare was too old: the participant has forgotten transactions this old.
    Stale,
}

/// A participant's vote.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Vote {
    /// Prepared: the pending writes and the locks are durable, and it will commit if told
    /// to. Carries the values its reads saw.
    Yes {
        /// The values read, by key.
        reads: Vec<(Key, Value)>,
    },
    /// Will not prepare; the transaction must abort.
    No(Refusal),
}

/// What coordinators and participants send each other.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TxnMessage {
    /// Coordinator to participant: lock, compute and durably record these operations, and
    /// vote.
    Prepare {
        /// The transaction.
        txn: TxnId,
        /// Its age for deadlock avoidance (its first attempt's id).
        priority: TxnId,
        /// The operations on this participant's keys.
        ops: Vec<Op>,
    },
    /// Participant to coordinator.
    Vote {
        /// The transaction.
        txn: TxnId,
        /// The vote.
        vote: Vote,
    },
    /// Coordinator to participant: the durable decision.
    Decision {
        /// The transaction.
        txn: TxnId,
        /// Commit (true) or abort.
        commit: bool,
    },
    /// Participant to coordinator: the decision is carried out and durable.
    Ack {
        /// The transaction.
        txn: TxnId,
    },
    /// Participant to coordinator: a prepared transaction has waited long for its
    /// decision; what is it?
    Query {
        /// The transaction.
        txn: TxnId,
    },
    /// Participant to coordinator: this prepared transaction holds locks an older one
    /// needs; abort it if it is not decided yet (wound-wait across nodes).
    Wound {
        /// The transaction.
        txn: TxnId,
    },
}

/// A client's transaction: operations on any keys, run atomically.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TxnRequest {
    /// The operations.
    pub ops: Vec<Op>,
}

/// The outcome a client hears.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TxnResponse {
    /// Committed; the values read, by key.
    Committed {
        /// The values read.
        reads: Vec<(Key, Value)>,
    },
    /// Aborted (after its retries); nothing was written.
    Aborted,
    /// Refused before it started: too many transactions in flight, or an empty or
    /// oversized one, or a participant node that is not a coordinator.
    Refused,
}

/// What a coordinator persists.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CoordinatorRecord {
    /// A start: ids of this epoch may be issued once it is durable.
    Epoch(u64),
    /// A decision, durable before any participant hears it.
    Decided {
        /// The transaction.
        txn: TxnId,
        /// Commit (true) or abort.
        commit: bool,
        /// The participants that must hear it.
        participants: Vec<NodeId>,
    },
    /// Every participant acknowledged the decision: the transaction can be forgotten.
    Ended(TxnId),
}

/// What a participant persists.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ParticipantRecord {
    /// Prepared: the pending writes (new values) and the locks, durable before the yes
    /// vote leaves.
    Prepared {
        /// The transaction.
        txn: TxnId,
        /// The new value of each written key.
        writes: Vec<(Key, Value)>,
        /// The locks it holds.
        locks: Vec<(Key, LockMode)>,
        /// The values its reads saw (sent again with a repeated vote).
        reads: Vec<(Key, Value)>,
    },
    /// Committed: the pending writes are applied.
    Committed(TxnId),
    /// Aborted: the pending writes are dropped.
    Aborted(TxnId),
    /// The start of a compacted log ([`crate::Participant::compacted`]): the committed
    /// values, and per coordinator the newest transaction forgotten. The records after it
    /// are the finished and in-doubt transactions it remembers.
    Snapshot {
        /// Every key's committed value.
        values: Vec<(Key, Value)>,
        /// Per coordinator, the newest finished transaction forgotten.
        forgotten: Vec<(NodeId, TxnId)>,
    },
}

/// What either side persists.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TxnWrite {
    /// A coordinator's record.
    Coordinator(CoordinatorRecord),
    /// A participant's record.
    Participant(ParticipantRecord),
}

/// What a node hands up: a transaction's outcome as this node carried it out (the
/// coordinator when its decision is durable, a participant when it applies it). A checker
/// collects them and finds any transaction with both outcomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TxnOutcome {
    /// The node.
    pub node: NodeId,
    /// The transaction.
    pub txn: TxnId,
    /// Committed (true) or aborted.
    pub committed: bool,
}

/// The effects of the two-phase commit state machines.
pub(crate) type TxnEffect = Effect<TxnMessage, TxnResponse, TxnWrite, TxnOutcome>;

/// Effects in the order they were made, each held back until every gating persist issued
/// before it is acknowledged (synod-node's [`synod_node::Gate`]), with the two-phase commit
/// machines' rule for wake-ups.
#[derive(Clone, Debug, Default)]
pub(crate) struct Gate {
    inner: synod_node::Gate<TxnMessage, TxnResponse, TxnWrite, TxnOutcome>,
    wake: Option<Time>,
}

impl Gate {
    pub(crate) fn persist(&mut self, write: TxnWrite) {
        self.inner.persist(write);
    }

    /// Asks for `write` to be made durable without holding later effects for it: for a
    /// record nothing depends on (a coordinator's end of a transaction, which if lost only
    /// makes a restarted coordinator resend a decision every participant has carried out).
    pub(crate) fn persist_lazily(&mut self, write: TxnWrite) {
        self.inner.persist_lazily(write);
    }

    pub(crate) fn send(&mut self, to: NodeId, message: TxnMessage) {
        self.inner.send(to, message);
    }

    /// Sends at once, ahead of the persists not yet durable: only the deliberately broken
    /// coordinator does this.
    #[cfg(feature = "broken")]
    pub(crate) fn send_now(&mut self, to: NodeId, message: TxnMessage) {
        self.inner.push(Effect::Send { to, message });
    }

    pub(crate) fn reply(&mut self, id: RequestId, response: TxnResponse) {
        self.inner.reply(id, response);
    }

    pub(crate) fn apply(&mut self, outcome: TxnOutcome) {
        self.inner.apply(outcome);
    }

    /// Asks to be woken at `at` (the earliest thing the state machine waits for), unless
    /// that is already asked.
    pub(crate) fn wake_at(&mut self, at: Option<Time>) {
        if let Some(time) = at
            && at != self.wake
        {
            self.wake = at;
            self.inner.push(Effect::WakeAt(time));
        }
    }

    /// The wake-up asked for has come.
    pub(crate) fn woken(&mut self) {
        self.wake = None;
    }

    /// Every persist up to `token` is durable; a token never issued counts as the last one
    /// issued.
    pub(crate) fn persisted(&mut self, token: PersistToken) {
        self.inner.persisted(token);
    }

    pub(crate) fn poll(&mut self) -> Option<TxnEffect> {
        self.inner.poll()
    }
}
