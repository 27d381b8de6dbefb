//! The messages Raft nodes exchange.
//!
//! Every message carries the sender's term. The wire form is the `postcard` encoding of
//! [`Message`] (see [`Message::encode`]), prefixed by a one-byte format version, currently
//! [`WIRE_VERSION`]; a decoder refuses other versions and malformed bytes with an error,
//! never a panic. Framing and checksums belong to the transport.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::storage::SnapshotMeta;
use crate::types::{Entry, LogIndex, NodeId, Term};

/// The version byte in front of every encoded message.
pub const WIRE_VERSION: u8 = 1;

/// A caller-chosen id for a read request, echoed back with its read index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReadId(pub u64);

/// A message from one node to another.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The recipient.
    pub to: NodeId,
    /// The sender's term (for a pre-vote request, the term it would campaign in).
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of Raft message.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MessageBody {
    /// "Would you vote for me in `term`?" Sent without raising the sender's term.
    PreVote {
        /// The index of the sender's last entry.
        last_index: LogIndex,
        /// The term of the sender's last entry.
        last_term: Term,
    },
    /// The answer to [`MessageBody::PreVote`].
    PreVoteResponse {
        /// Whether the pre-vote is granted.
        granted: bool,
    },
    /// "Vote for me in `term`."
    Vote {
        /// The index of the candidate's last entry.
        last_index: LogIndex,
        /// The term of the candidate's last entry.
        last_term: Term,
        /// The election follows a leader transfer: voters ignore their leader lease.
        transfer: bool,
    },
    /// The answer to [`MessageBody::Vote`], sent only once the vote is durable.
    VoteResponse {
        /// Whether the vote is granted.
        granted: bool,
    },
    /// Entries to append after `prev_index`, whose entry must have `prev_term`.
    Append {
        /// The index of the entry before the first one carried.
        prev_index: LogIndex,
        /// The term of the entry at `prev_index`.
        prev_term: Term,
        /// The entries, dense from `prev_index + 1`.
        entries: Vec<Entry>,
        /// The leader's commit index (High-Water Mark).
        commit: LogIndex,
    },
    /// The answer to [`MessageBody::Append`], sent once the entries are durable.
    AppendResponse {
        /// Accepted or rejected, with a hint for a rejection.
        result: AppendResult,
    },
    /// The leader's periodic heartbeat, also used to confirm leadership for read-index and
    /// lease reads.
    Heartbeat {
        /// The commit index, capped by what the follower is known to hold.
        commit: LogIndex,
        /// The leader's heartbeat round, echoed back.
        round: u64,
    },
    /// The answer to [`MessageBody::Heartbeat`].
    HeartbeatResponse {
        /// The round being answered.
        round: u64,
        /// The follower's last log index: a leader that had streamed entries past it
        /// before sending the heartbeat knows they were lost (links deliver in order) and
        /// goes back to probing.
        last_index: LogIndex,
    },
    /// A follower asks the leader for a read index on behalf of the reads its clients
    /// asked since its last such request (one answer serves them all).
    ReadIndex {
        /// The follower's id for the request: the id of the first of those reads.
        id: ReadId,
    },
    /// The leader's answer to [`MessageBody::ReadIndex`].
    ReadIndexResponse {
        /// The request being answered.
        id: ReadId,
        /// The index to wait for before reading, or `None` if the leader could not confirm
        /// its leadership.
        index: Option<LogIndex>,
    },
    /// One chunk of a snapshot, for a follower whose next entry was compacted away.
    Snapshot {
        /// What the snapshot covers.
        meta: SnapshotMeta,
        /// The position of `data` in the snapshot.
        offset: u64,
        /// The chunk.
        data: Bytes,
        /// Whether this is the last chunk.
        done: bool,
    },
    /// The answer to a snapshot chunk.
    SnapshotResponse {
        /// The index of the snapshot being received.
        index: LogIndex,
        /// The next offset the follower expects.
        next_offset: u64,
        /// Whether the whole snapshot is installed.
        done: bool,
    },
    /// The leader hands over: the recipient starts an election at once.
    TimeoutNow,
}

/// The outcome of an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AppendResult {
    /// The follower's log matches the leader's up to `match_index`.
    Accepted {
        /// The last index known to match (the last entry of the append).
        match_index: LogIndex,
    },
    /// The entry at `rejected_prev` did not have the expected term.
    Rejected {
        /// The `prev_index` of the rejected append.
        rejected_prev: LogIndex,
        /// The largest index at or below `rejected_prev` whose term is at most the leader's
        /// `prev_term` (or the follower's last index if it is shorter).
        hint_index: LogIndex,
        /// The follower's term at `hint_index`.
        hint_term: Term,
    },
}

/// Why bytes could not be decoded as a [`Message`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// No bytes at all.
    Empty,
    /// A version this code does not understand.
    Version(u8),
    /// The bytes are not a valid message.
    Malformed,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty message"),
            DecodeError::Version(v) => {
                write!(f, "message format version {v}, expected {WIRE_VERSION}")
            }
            DecodeError::Malformed => write!(f, "malformed message"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl Message {
    /// Encodes the message: the version byte, then its `postcard` encoding.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![WIRE_VERSION];
        // Serializing an in-memory value to a Vec cannot fail.
        out.extend(postcard::to_stdvec(self).expect("postcard encodes to a Vec"));
        out
    }

    /// Decodes bytes produced by [`Message::encode`].
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for empty input, an unknown version, or malformed bytes
    /// (including a membership with no voters).
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let (&version, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if version != WIRE_VERSION {
            return Err(DecodeError::Version(version));
        }
        let message: Message = postcard::from_bytes(rest).map_err(|_| DecodeError::Malformed)?;
        let valid = match &message.body {
            MessageBody::Snapshot { meta, .. } => meta.membership.is_valid(),
            MessageBody::Append { entries, .. } => entries.iter().all(|e| match &e.payload {
                crate::types::Payload::Membership(m) => m.is_valid(),
                _ => true,
            }),
            _ => true,
        };
        if valid {
            Ok(message)
        } else {
            Err(DecodeError::Malformed)
        }
    }
}
