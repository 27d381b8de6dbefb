//! Response tracking: counting votes or acknowledgements until a quorum decides.
//!
//! A [`ResponseTracker`] is what an election, a replicated write or a quorum read waits
//! on. It records at most one response per voter (the first; later duplicates, such as a
//! message the network delivered twice or a late retry, are reported and ignored), ignores
//! nodes outside the configuration, and reports [`Outcome::Won`] or [`Outcome::Lost`] as
//! soon as the responses allow. A loss carries a [`QuorumUnreachable`] that says which
//! configuration can no longer reach its quorum and by how much.

use std::fmt;

use crate::config::Quorum;
use crate::node::NodeId;

/// Which configuration of a quorum system a count refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Part {
    /// A single (non-joint) configuration.
    Whole,
    /// The old (outgoing) configuration of a joint configuration.
    Old,
    /// The new (incoming) configuration of a joint configuration.
    New,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Whole => "the configuration",
            Self::Old => "the old configuration",
            Self::New => "the new configuration",
        })
    }
}

/// Why a quorum can no longer be met: too many voters rejected (or were given up on).
///
/// ```
/// use synod_quorum::{MajorityConfig, NodeId, Outcome, Quorum};
///
/// let config = MajorityConfig::new([1, 2, 3].map(NodeId::new))?;
/// let Outcome::Lost(why) = config.tally(|n| (n.get() >= 2).then_some(false)) else {
///     unreachable!()
/// };
/// assert_eq!(why.rejected(), 2);
/// assert_eq!(
///     why.to_string(),
///     "quorum can no longer be met: the configuration needs 2 of 3 voters, \
///      0 granted, 2 rejected, 1 not answered, so at most 1 can grant"
/// );
/// # Ok::<(), synod_quorum::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumUnreachable {
    part: Part,
    needed: usize,
    voters: usize,
    granted: usize,
    rejected: usize,
}

impl QuorumUnreachable {
    pub(crate) fn new(
        part: Part,
        needed: usize,
        voters: usize,
        granted: usize,
        rejected: usize,
    ) -> Self {
        debug_assert!(granted + rejected <= voters);
        debug_assert!(voters - rejected < needed);
        Self {
            part,
            needed,
            voters,
            granted,
            rejected,
        }
    }

    /// The configuration that cannot reach its quorum.
    #[must_use]
    pub fn part(&self) -> Part {
        self.part
    }

    /// Grants that configuration needs.
    #[must_use]
    pub fn needed(&self) -> usize {
        self.needed
    }

    /// Voters in that configuration.
    #[must_use]
    pub fn voters(&self) -> usize {
        self.voters
    }

    /// Grants received from it.
    #[must_use]
    pub fn granted(&self) -> usize {
        self.granted
    }

    /// Rejections (or failures) received from it.
    #[must_use]
    pub fn rejected(&self) -> usize {
        self.rejected
    }

    /// Voters in it that have not answered.
    #[must_use]
    pub fn outstanding(&self) -> usize {
        self.voters - self.granted - self.rejected
    }
}

impl fmt::Display for QuorumUnreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "quorum can no longer be met: {} needs {} of {} voters, {} granted, {} rejected, \
             {} not answered, so at most {} can grant",
            self.part,
            self.needed,
            self.voters,
            self.granted,
            self.rejected,
            self.outstanding(),
            self.voters - self.rejected,
        )
    }
}

impl std::error::Error for QuorumUnreachable {}

/// The state of a vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not decided: more responses are needed.
    Pending,
    /// The grants form a quorum.
    Won,
    /// No quorum is possible any more, whatever the silent voters answer.
    Lost(QuorumUnreachable),
}

impl Outcome {
    /// Whether the vote is decided either way.
    #[must_use]
    pub fn is_decided(&self) -> bool {
        !matches!(self, Self::Pending)
    }

    /// Whether the vote is won.
    #[must_use]
    pub fn is_won(&self) -> bool {
        matches!(self, Self::Won)
    }
}

/// What [`ResponseTracker::record`] did with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The first response from this voter: counted.
    Counted,
    /// This voter already answered; the response was ignored (the first answer stands).
    Duplicate,
    /// The sender is not a voter; the response was ignored.
    NotAVoter,
}

/// Counts at most one response per voter of a quorum system and decides early.
///
/// Allocates once, at construction (one slot per voter); recording and deciding do not
/// allocate.
///
/// ```
/// use synod_quorum::{MajorityConfig, NodeId, Outcome, Recorded, ResponseTracker};
///
/// let config = MajorityConfig::new([1, 2, 3].map(NodeId::new))?;
/// let mut votes = ResponseTracker::new(config);
/// assert_eq!(votes.record(NodeId::new(1), true), Recorded::Counted);
/// // The network delivered n1's vote twice: counted once.
/// assert_eq!(votes.record(NodeId::new(1), true), Recorded::Duplicate);
/// assert_eq!(votes.record(NodeId::new(9), true), Recorded::NotAVoter);
/// assert_eq!(votes.outcome(), Outcome::Pending);
/// votes.record(NodeId::new(3), true);
/// assert_eq!(votes.outcome(), Outcome::Won);
/// # Ok::<(), synod_quorum::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ResponseTracker<Q> {
    quorum: Q,
    /// One slot per voter, in the order of `quorum.voters()`.
    responses: Vec<Option<bool>>,
}

impl<Q: Quorum> ResponseTracker<Q> {
    /// A tracker with no responses yet.
    pub fn new(quorum: Q) -> Self {
        let responses = vec![None; quorum.voters().len()];
        Self { quorum, responses }
    }

    /// Records `from`'s response: `true` for a grant or acknowledgement, `false` for a
    /// rejection or failure (a timeout, an error reply, a node known to be down).
    pub fn record(&mut self, from: NodeId, granted: bool) -> Recorded {
        let Ok(slot) = self.quorum.voters().binary_search(&from) else {
            return Recorded::NotAVoter;
        };
        match &mut self.responses[slot] {
            Some(_) => Recorded::Duplicate,
            empty @ None => {
                *empty = Some(granted);
                Recorded::Counted
            }
        }
    }

    /// The decision so far.
    #[must_use]
    pub fn outcome(&self) -> Outcome {
        let voters = self.quorum.voters();
        self.quorum.tally(|node| {
            voters
                .binary_search(&node)
                .ok()
                .and_then(|slot| self.responses[slot])
        })
    }

    /// `node`'s recorded response, if any.
    #[must_use]
    pub fn response(&self, node: NodeId) -> Option<bool> {
        let slot = self.quorum.voters().binary_search(&node).ok()?;
        self.responses[slot]
    }

    /// The voters that granted, ascending.
    pub fn granted(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.with_response(true)
    }

    /// The voters that rejected, ascending.
    pub fn rejected(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.with_response(false)
    }

    /// The voters that have not answered, ascending.
    pub fn outstanding(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.quorum
            .voters()
            .iter()
            .zip(&self.responses)
            .filter(|(_, r)| r.is_none())
            .map(|(&node, _)| node)
    }

    fn with_response(&self, granted: bool) -> impl Iterator<Item = NodeId> + '_ {
        self.quorum
            .voters()
            .iter()
            .zip(&self.responses)
            .filter(move |(_, r)| **r == Some(granted))
            .map(|(&node, _)| node)
    }

    /// Forgets every response, keeping the allocation (for the next round of a vote).
    pub fn reset(&mut self) {
        self.responses.fill(None);
    }

    /// The quorum system being counted.
    #[must_use]
    pub fn quorum(&self) -> &Q {
        &self.quorum
    }
}
