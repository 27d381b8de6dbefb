//! Persistence before use: every write to the store gets a sequence number, and what
//! depends on a write (a message, the leader's count of its own copy) waits until a
//! [`PersistToken`] covering it is acknowledged.

use std::collections::VecDeque;

use synod_node::PersistToken;

use super::{Node, Role};
use crate::message::{Message, MessageBody};
use crate::types::{LogIndex, NodeId};

/// The writes made to the store, numbered in order, and what waits for them to be durable.
#[derive(Debug)]
pub(super) struct Durability {
    /// The number of the last write made to the store.
    written: u64,
    /// The last write covered by a token handed out.
    requested: u64,
    /// The last write acknowledged as durable.
    durable: u64,
    /// For each token handed out and not yet acknowledged: its write, and the log's last
    /// index when it was handed out (durable with it).
    marks: VecDeque<(u64, LogIndex)>,
    /// The highest index known to be durable in this node's log.
    durable_index: LogIndex,
    /// Messages that may leave only once a write is durable, with that write's number.
    held: VecDeque<(u64, Message)>,
}

impl Durability {
    /// Nothing written yet; the log is durable up to `durable_index` (the store holds only
    /// durable state when the node starts).
    pub(super) fn new(durable_index: LogIndex) -> Durability {
        Durability {
            written: 0,
            requested: 0,
            durable: 0,
            marks: VecDeque::new(),
            durable_index,
            held: VecDeque::new(),
        }
    }

    /// Notes one more write to the store, and returns its number.
    pub(super) fn wrote(&mut self) -> u64 {
        self.written += 1;
        self.written
    }

    /// The number of the last write made.
    pub(super) fn written(&self) -> u64 {
        self.written
    }

    /// Whether write `seq` is acknowledged as durable.
    pub(super) fn is_durable(&self, seq: u64) -> bool {
        self.durable >= seq
    }

    /// Whether writes were made since the last token handed out.
    pub(super) fn has_unrequested(&self) -> bool {
        self.written > self.requested
    }

    /// The highest index known to be durable in this node's log.
    pub(super) fn durable_index(&self) -> LogIndex {
        self.durable_index
    }

    /// A token covering every write so far, if any is not covered yet; the log up to
    /// `last_index` is durable once it is acknowledged.
    pub(super) fn request(&mut self, last_index: LogIndex) -> Option<PersistToken> {
        self.has_unrequested().then(|| {
            self.requested = self.written;
            self.marks.push_back((self.written, last_index));
            PersistToken(self.written)
        })
    }

    /// Takes the acknowledgement of `token`: moves the durable index and releases into
    /// `outbox` the messages that waited for it. Returns whether it was news.
    ///
    /// # Panics
    ///
    /// Panics if `token` was never handed out.
    fn acknowledge(&mut self, token: PersistToken, outbox: &mut Vec<Message>) -> bool {
        assert!(
            token.0 <= self.requested,
            "persisted: token {} was never handed out",
            token.0
        );
        if token.0 <= self.durable {
            return false;
        }
        self.durable = token.0;
        while let Some(&(seq, index)) = self.marks.front() {
            if seq > token.0 {
                break;
            }
            self.marks.pop_front();
            self.durable_index = self.durable_index.max(index);
        }
        while self.held.front().is_some_and(|(seq, _)| *seq <= token.0) {
            if let Some((_, msg)) = self.held.pop_front() {
                outbox.push(msg);
            }
        }
        true
    }

    /// Puts `msg` into `outbox` if every write so far is durable, or holds it until then.
    fn send_when_durable(&mut self, msg: Message, outbox: &mut Vec<Message>) {
        if self.written > self.durable {
            self.held.push_back((self.written, msg));
        } else {
            outbox.push(msg);
        }
    }

    /// The log lost everything after `index`: none of it is durable any more, whatever a
    /// token handed out before said.
    pub(super) fn cut_after(&mut self, index: LogIndex) {
        self.durable_index = self.durable_index.min(index);
        for mark in &mut self.marks {
            mark.1 = mark.1.min(index);
        }
    }

    /// The log was replaced by a snapshot at `index`.
    pub(super) fn replaced_by_snapshot(&mut self, index: LogIndex) {
        self.durable_index = index;
        for mark in &mut self.marks {
            mark.1 = mark.1.min(index);
        }
    }

    /// The log's start moved to a snapshot at `index`, which it already held.
    pub(super) fn compacted_to(&mut self, index: LogIndex) {
        self.durable_index = self.durable_index.max(index);
    }
}

impl Node {
    /// Acknowledges that the writes handed out with `token` (in a
    /// [`Ready`](super::Ready) or an `Effect::Persist`), and every earlier one, are durable. Releases the messages that
    /// waited for it and lets the leader count its own copy of those entries.
    ///
    /// # Panics
    ///
    /// Panics if `token` was not handed out by this node.
    pub fn persisted(&mut self, token: PersistToken) {
        if !self.durability.acknowledge(token, &mut self.outbox) {
            return;
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
        self.durability.send_when_durable(msg, &mut self.outbox);
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
