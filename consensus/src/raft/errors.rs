//! Why a request to the node was refused: one error per kind of request.

use std::fmt;

use crate::membership::MembershipError;
use crate::message::ReadId;
use crate::types::{LogIndex, NodeId};

/// Why a proposal was refused.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProposeError {
    /// Only the leader accepts proposals; `leader` is the leader this node knows of, if any.
    NotLeader {
        /// Where to retry.
        leader: Option<NodeId>,
    },
    /// The leader is handing over to another node.
    TransferInProgress,
    /// Too many entries are uncommitted (`uncommitted_entries_max`); retry later.
    Backpressure,
    /// A membership change is still uncommitted, or the leader has not yet committed an
    /// entry of its term.
    MembershipChangePending,
    /// The new membership is not acceptable.
    Membership(MembershipError),
    /// The command is longer than the configured `entry_bytes_max`.
    TooLarge {
        /// The command's length.
        bytes: u64,
        /// The limit.
        max: u64,
    },
}

impl fmt::Display for ProposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProposeError::NotLeader { leader: Some(l) } => {
                write!(f, "not the leader; the leader is {l}")
            }
            ProposeError::NotLeader { leader: None } => {
                write!(f, "not the leader; no leader is known")
            }
            ProposeError::TransferInProgress => write!(f, "leadership transfer in progress"),
            ProposeError::Backpressure => write!(f, "too many uncommitted entries"),
            ProposeError::MembershipChangePending => {
                write!(f, "a membership change is still in progress")
            }
            ProposeError::Membership(e) => write!(f, "membership change refused: {e}"),
            ProposeError::TooLarge { bytes, max } => write!(
                f,
                "a command of {bytes} bytes is longer than entry_bytes_max ({max} bytes)"
            ),
        }
    }
}

impl std::error::Error for ProposeError {}

/// Why a read request was refused.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReadError {
    /// No leader is known to forward the read to.
    NoLeader,
    /// Too many reads are waiting (`read_pending_max`).
    Backpressure,
    /// A read with this id, asked through [`Request::ReadIndex`](crate::Request::ReadIndex),
    /// is still waiting for its answer: read ids must not repeat.
    IdInUse(ReadId),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::NoLeader => write!(f, "no leader known"),
            ReadError::Backpressure => write!(f, "too many reads waiting"),
            ReadError::IdInUse(id) => write!(f, "read id {} is in use", id.0),
        }
    }
}

impl std::error::Error for ReadError {}

/// Why a leadership transfer was refused.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransferError {
    /// Only the leader can transfer leadership.
    NotLeader,
    /// The target is not a voter other than this node.
    NotAVoter(NodeId),
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::NotLeader => write!(f, "only the leader can transfer leadership"),
            TransferError::NotAVoter(id) => write!(f, "{id} is not another voter"),
        }
    }
}

impl std::error::Error for TransferError {}

/// Why the log could not be compacted.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CompactError {
    /// The snapshot index is above what has been applied.
    NotApplied {
        /// The requested index.
        index: LogIndex,
        /// The applied index.
        applied: LogIndex,
    },
    /// The index is already compacted.
    AlreadyCompacted(LogIndex),
}

impl fmt::Display for CompactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompactError::NotApplied { index, applied } => write!(
                f,
                "cannot snapshot at {index}: only {applied} has been applied"
            ),
            CompactError::AlreadyCompacted(index) => write!(f, "{index} is already compacted"),
        }
    }
}

impl std::error::Error for CompactError {}
