//! What a message from the network must satisfy before the node handles it.

use super::{INDEX_MAX, Node, TERM_MAX};
use crate::message::{AppendResult, Message, MessageBody};
use crate::storage::LogStore;
use crate::types::{LogIndex, Payload};

impl<S: LogStore> Node<S> {
    /// Checks what a message from the network claims before trusting it.
    pub(super) fn valid(&self, msg: &Message) -> bool {
        // Terms grow by one per election and indexes by one per entry: one near `u64::MAX`
        // is corruption or malice, and adopting it would leave no room for the next
        // elections, or overflow the first index computed from it.
        let index_ok = |index: LogIndex| index <= INDEX_MAX;
        if msg.term > TERM_MAX {
            return false;
        }
        match &msg.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            }
            | MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => index_ok(*last_index) && *last_term <= TERM_MAX,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                if !index_ok(*prev_index) || !index_ok(*commit) || *prev_term > msg.term {
                    return false;
                }
                let mut index = *prev_index;
                let mut term = *prev_term;
                for e in entries {
                    // No overflow: `index` is at most `INDEX_MAX` here.
                    index = LogIndex(index.0 + 1);
                    if !index_ok(index) || e.index != index || e.term < term || e.term > msg.term {
                        return false;
                    }
                    if let Payload::Membership(m) = &e.payload
                        && !m.is_valid()
                    {
                        return false;
                    }
                    term = e.term;
                }
                true
            }
            MessageBody::AppendResponse {
                result: AppendResult::Accepted { match_index },
            } => index_ok(*match_index),
            MessageBody::AppendResponse {
                result:
                    AppendResult::Rejected {
                        rejected_prev,
                        hint_index,
                        hint_term,
                    },
            } => index_ok(*rejected_prev) && index_ok(*hint_index) && *hint_term <= TERM_MAX,
            MessageBody::Heartbeat { commit: index, .. }
            | MessageBody::HeartbeatResponse {
                last_index: index, ..
            }
            | MessageBody::ReadIndexResponse {
                index: Some(index), ..
            }
            | MessageBody::SnapshotResponse { index, .. } => index_ok(*index),
            // The snapshot ends with an entry of the sender's log, as an append's entries.
            MessageBody::Snapshot { meta, .. } => {
                index_ok(meta.index) && meta.term <= msg.term && meta.membership.is_valid()
            }
            MessageBody::PreVoteResponse { .. }
            | MessageBody::VoteResponse { .. }
            | MessageBody::ReadIndex { .. }
            | MessageBody::ReadIndexResponse { index: None, .. }
            | MessageBody::TimeoutNow => true,
        }
    }
}
