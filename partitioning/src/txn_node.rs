//! One node type for a cluster of coordinators and participants, so that one driver (or
//! one simulation) runs both.

use synod_node::{EffectOf, InputOf, NodeId, Protocol, Time};

use crate::coordinator::Coordinator;
use crate::participant::Participant;
use crate::txn::{TxnMessage, TxnOutcome, TxnRequest, TxnResponse, TxnWrite};

/// A node of a two-phase commit cluster: a [`Coordinator`] or a [`Participant`], behind one
/// [`Protocol`] (both speak [`TxnMessage`] and persist [`TxnWrite`]s).
#[derive(Clone, Debug)]
pub enum TxnNode {
    /// Runs clients' transactions.
    Coordinator(Coordinator),
    /// Holds keys.
    Participant(Participant),
}

impl Protocol for TxnNode {
    type Message = TxnMessage;
    type Request = TxnRequest;
    type Response = TxnResponse;
    type Write = TxnWrite;
    type Apply = TxnOutcome;

    fn id(&self) -> NodeId {
        match self {
            TxnNode::Coordinator(c) => c.id(),
            TxnNode::Participant(p) => p.id(),
        }
    }

    fn handle(&mut self, now: Time, input: InputOf<Self>) {
        match self {
            TxnNode::Coordinator(c) => c.handle(now, input),
            TxnNode::Participant(p) => p.handle(now, input),
        }
    }

    fn poll(&mut self) -> Option<EffectOf<Self>> {
        match self {
            TxnNode::Coordinator(c) => c.poll(),
            TxnNode::Participant(p) => p.poll(),
        }
    }
}
