//! What a message from the network must satisfy before the node handles it.
//!
//! Terms grow by one per election and indexes by one per entry: one near `u64::MAX` is
//! corruption or malice, and adopting it would leave no room for the next elections, or
//! overflow the first index computed from it. So no term may exceed [`TERM_MAX`] and no
//! index [`INDEX_MAX`]; entries must follow on from where they say they start, with terms
//! that never go down and never pass the sender's; memberships must have a voter.

use super::{INDEX_MAX, TERM_MAX};
use crate::message::{AppendResult, Message, MessageBody};
use crate::types::{Entry, LogIndex, Payload, Term};

/// Whether `msg` may be handled: see the module documentation.
pub(super) fn valid(msg: &Message) -> bool {
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
        } => index_ok(*commit) && valid_entries(msg.term, *prev_index, *prev_term, entries),
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

fn index_ok(index: LogIndex) -> bool {
    index <= INDEX_MAX
}

/// Whether `entries`, sent in `term` to follow the entry at `prev_index` of `prev_term`,
/// follow on from it, with terms that never go down and never pass `term`.
fn valid_entries(term: Term, prev_index: LogIndex, prev_term: Term, entries: &[Entry]) -> bool {
    if !index_ok(prev_index) || prev_term > term {
        return false;
    }
    let mut index = prev_index;
    let mut last_term = prev_term;
    for e in entries {
        // No overflow: `index` is at most `INDEX_MAX` here.
        index = LogIndex(index.0 + 1);
        if !index_ok(index) || e.index != index || e.term < last_term || e.term > term {
            return false;
        }
        if let Payload::Membership(m) = &e.payload
            && !m.is_valid()
        {
            return false;
        }
        last_term = e.term;
    }
    true
}
