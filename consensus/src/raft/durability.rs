//! Persistence before use: every write to the store gets a sequence number, and what
//! depends on a write (a message, the leader's count of its own copy) waits until a
//! [`PersistToken`] covering it is acknowledged.

use super::{Node, Role};
use crate::message::{Message, MessageBody};
use crate::storage::LogStore;
use crate::types::NodeId;

/// Acknowledges a persistence request: hand it back to [`Node::persisted`] once everything
/// written to the store before the [`Ready`](super::Ready) that carried it is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PersistToken(pub(super) u64);

impl<S: LogStore> Node<S> {
    /// Acknowledges that everything written to the store before the [`Ready`](super::Ready) that
    /// carried `token` is durable. Releases the messages that waited for it and lets the
    /// leader count its own copy of those entries.
    ///
    /// # Panics
    ///
    /// Panics if `token` was not handed out by this node.
    pub fn persisted(&mut self, token: PersistToken) {
        assert!(
            token.0 <= self.requested_seq,
            "persisted: token {} was never handed out",
            token.0
        );
        if token.0 <= self.durable_seq {
            return;
        }
        self.durable_seq = token.0;
        while let Some(&(seq, index)) = self.marks.front() {
            if seq > token.0 {
                break;
            }
            self.marks.pop_front();
            self.durable_index = self.durable_index.max(index);
        }
        while self.held.front().is_some_and(|(seq, _)| *seq <= token.0) {
            if let Some((_, msg)) = self.held.pop_front() {
                self.outbox.push(msg);
            }
        }
        if self.role == Role::Leader && self.maybe_commit() {
            self.needs_broadcast = true;
        } else if self.role == Role::Candidate {
            self.tally_votes();
        }
    }

    /// Queues a message that must wait until every store write made so far is durable.
    pub(super) fn send(&mut self, to: NodeId, body: MessageBody) {
        let msg = Message {
            from: self.config.id,
            to,
            term: self.term,
            body,
        };
        if self.write_seq > self.durable_seq {
            self.held.push_back((self.write_seq, msg));
        } else {
            self.outbox.push(msg);
        }
    }

    /// Queues a message that may leave at once.
    pub(super) fn send_now(&mut self, to: NodeId, body: MessageBody) {
        self.outbox.push(Message {
            from: self.config.id,
            to,
            term: self.term,
            body,
        });
    }
}
