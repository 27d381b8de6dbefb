//! Cluster membership: who votes, who only learns.
//!
//! A [`Membership`] is the set of voters (who elect leaders and form quorums) and learners
//! (who receive the log but never vote or count towards a quorum, for example a new node
//! catching up before it is promoted, or a read replica).
//!
//! Changes go through the log one voter at a time ("single-server changes", Ongaro's
//! thesis, section 4.1): any two configurations that differ by one voter have overlapping
//! majorities, so no joint configuration is needed, and each node uses the newest
//! configuration in its log as soon as the entry is appended. The leader accepts a change
//! only once the previous one has committed and once it has committed an entry of its own
//! term (the fix for the single-server-change bug found after the thesis). Learners can be
//! added and removed freely because they never count.
//!
//! Why not joint consensus: it allows replacing several voters at once, at the cost of a
//! two-phase change and joint quorums in every vote and commit; adding or removing one node
//! at a time covers the common operations (replace a failed node, grow 3 to 5) with less
//! state to get wrong.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// A cluster configuration: voters and learners, disjoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Membership {
    voters: BTreeSet<NodeId>,
    learners: BTreeSet<NodeId>,
}

/// Why a membership or a membership change is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MembershipError {
    /// A configuration needs at least one voter.
    NoVoters,
    /// A node is listed both as voter and as learner.
    VoterIsLearner(NodeId),
    /// The change would add or remove more than one voter at once.
    MoreThanOneVoterChanged,
}

impl fmt::Display for MembershipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MembershipError::NoVoters => write!(f, "a configuration needs at least one voter"),
            MembershipError::VoterIsLearner(id) => {
                write!(f, "node {id} is listed both as voter and as learner")
            }
            MembershipError::MoreThanOneVoterChanged => write!(
                f,
                "a membership change may add or remove at most one voter at a time"
            ),
        }
    }
}

impl std::error::Error for MembershipError {}

impl Membership {
    /// A configuration with these voters and learners.
    ///
    /// # Errors
    ///
    /// [`MembershipError::NoVoters`] if `voters` is empty, and
    /// [`MembershipError::VoterIsLearner`] if the sets overlap.
    pub fn new(
        voters: impl IntoIterator<Item = NodeId>,
        learners: impl IntoIterator<Item = NodeId>,
    ) -> Result<Membership, MembershipError> {
        let voters: BTreeSet<NodeId> = voters.into_iter().collect();
        let learners: BTreeSet<NodeId> = learners.into_iter().collect();
        if voters.is_empty() {
            return Err(MembershipError::NoVoters);
        }
        if let Some(id) = voters.intersection(&learners).next() {
            return Err(MembershipError::VoterIsLearner(*id));
        }
        Ok(Membership { voters, learners })
    }

    /// The voters, in id order.
    #[must_use]
    pub fn voters(&self) -> &BTreeSet<NodeId> {
        &self.voters
    }

    /// The learners, in id order.
    #[must_use]
    pub fn learners(&self) -> &BTreeSet<NodeId> {
        &self.learners
    }

    /// Whether `id` votes.
    #[must_use]
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    /// Whether `id` is a voter or a learner.
    #[must_use]
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Every member, voters and learners, in id order.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        let mut all: Vec<NodeId> = self.voters.iter().chain(&self.learners).copied().collect();
        all.sort_unstable();
        all.into_iter()
    }

    /// Whether `next` differs from `self` by at most one voter, as a single-server change
    /// requires.
    ///
    /// # Errors
    ///
    /// [`MembershipError::MoreThanOneVoterChanged`] otherwise.
    pub fn check_change(&self, next: &Membership) -> Result<(), MembershipError> {
        let changed = self.voters.symmetric_difference(&next.voters).count();
        if changed > 1 {
            return Err(MembershipError::MoreThanOneVoterChanged);
        }
        Ok(())
    }

    /// Whether a value can be decoded from the wire: non-empty voters, disjoint sets.
    pub(crate) fn is_valid(&self) -> bool {
        !self.voters.is_empty() && self.voters.is_disjoint(&self.learners)
    }
}
