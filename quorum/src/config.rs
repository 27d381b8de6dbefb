//! Quorum systems: which sets of nodes are enough to decide.
//!
//! Four shapes, all validated once at construction and immutable afterwards:
//!
//! - [`Threshold`]: any `needed` of `n` voters (the building block; consistency levels
//!   ONE, QUORUM and ALL are thresholds 1, `n/2 + 1` and `n`).
//! - [`MajorityConfig`]: any `floor(n/2) + 1` of `n` voters.
//! - [`JointConfig`]: a majority of the old configuration *and* a majority of the new one,
//!   for membership changes (Raft's joint consensus).
//! - [`FlexibleConfig`]: separate read and write thresholds with `R + W > N` checked, so
//!   that every read quorum meets every write quorum.
//!
//! Each implements [`Quorum`], which decides a vote ([`Quorum::tally`]) and finds the
//! largest index held by a quorum ([`Quorum::committed_index`]). Both take a lookup
//! function rather than a collection, so callers keep their own per-node state and nothing
//! is allocated.

use std::fmt;

use crate::node::NodeId;
use crate::tracker::{Outcome, Part, QuorumUnreachable};

/// Why a quorum configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A configuration needs at least one voter.
    NoVoters,
    /// The same node was listed twice (usually a caller bug, so it is not silently merged).
    DuplicateVoter(NodeId),
    /// A threshold must be between 1 and the number of voters.
    ThresholdOutOfRange {
        /// The threshold asked for.
        needed: usize,
        /// The number of voters.
        voters: usize,
    },
    /// `read + write <= voters`: a read quorum could miss the latest write entirely.
    QuorumsDoNotOverlap {
        /// The read quorum size.
        read: usize,
        /// The write quorum size.
        write: usize,
        /// The number of voters.
        voters: usize,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoVoters => write!(f, "a quorum configuration needs at least one voter"),
            Self::DuplicateVoter(node) => write!(f, "voter {node} is listed twice"),
            Self::ThresholdOutOfRange { needed, voters } => write!(
                f,
                "a threshold of {needed} is impossible with {voters} voters (it must be 1..={voters})"
            ),
            Self::QuorumsDoNotOverlap {
                read,
                write,
                voters,
            } => write!(
                f,
                "read quorum {read} + write quorum {write} <= {voters} voters: \
                 a read could miss the latest write (need R + W > N)"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A quorum system: decides votes and finds the largest index a quorum holds.
///
/// Implemented by [`Threshold`], [`MajorityConfig`], [`JointConfig`] and references to
/// them. Votes and indexes are looked up through a function from node to value, so the
/// caller keeps per-node state wherever it likes; nodes that are not voters are never
/// asked about.
pub trait Quorum {
    /// Every voter once, in ascending order.
    fn voters(&self) -> &[NodeId];

    /// Whether `node` is a voter.
    fn contains(&self, node: NodeId) -> bool {
        self.voters().binary_search(&node).is_ok()
    }

    /// Decides a vote as early as the votes allow.
    ///
    /// `vote(node)` is `Some(true)` for a grant, `Some(false)` for a rejection and `None`
    /// for no answer yet. The outcome is [`Outcome::Won`] as soon as the grants form a
    /// quorum, [`Outcome::Lost`] as soon as even a grant from every silent voter could not
    /// form one, and [`Outcome::Pending`] otherwise.
    fn tally(&self, vote: impl FnMut(NodeId) -> Option<bool>) -> Outcome;

    /// The largest index held by a quorum: the largest `i` such that the voters whose
    /// acknowledged index is at least `i` form a quorum.
    ///
    /// `acked(node)` is that node's acknowledged index, `None` if it has acknowledged
    /// nothing. Returns `None` when no quorum has acknowledged anything. Allocation-free
    /// for configurations of up to 16 voters.
    fn committed_index<I: Ord + Copy>(&self, acked: impl FnMut(NodeId) -> Option<I>) -> Option<I>;
}

impl<Q: Quorum + ?Sized> Quorum for &Q {
    fn voters(&self) -> &[NodeId] {
        (**self).voters()
    }

    fn contains(&self, node: NodeId) -> bool {
        (**self).contains(node)
    }

    fn tally(&self, vote: impl FnMut(NodeId) -> Option<bool>) -> Outcome {
        (**self).tally(vote)
    }

    fn committed_index<I: Ord + Copy>(&self, acked: impl FnMut(NodeId) -> Option<I>) -> Option<I> {
        (**self).committed_index(acked)
    }
}

/// Sorts and checks a voter list: non-empty, no duplicates.
fn voter_list(voters: impl IntoIterator<Item = NodeId>) -> Result<Vec<NodeId>, ConfigError> {
    let mut list: Vec<NodeId> = voters.into_iter().collect();
    if list.is_empty() {
        return Err(ConfigError::NoVoters);
    }
    list.sort_unstable();
    if let Some(pair) = list.windows(2).find(|w| w[0] == w[1]) {
        return Err(ConfigError::DuplicateVoter(pair[0]));
    }
    Ok(list)
}

/// Voter counts up to this size are handled in a stack buffer.
const STACK_VOTERS: usize = 16;

/// The `k`-th largest acknowledged index among `voters` (1-based `k`), `None` ranking
/// lowest. This is the largest index that at least `k` voters hold.
fn kth_largest<I: Ord + Copy>(
    voters: &[NodeId],
    k: usize,
    acked: &mut impl FnMut(NodeId) -> Option<I>,
) -> Option<I> {
    debug_assert!(
        k >= 1 && k <= voters.len(),
        "threshold checked at construction"
    );
    if voters.len() <= STACK_VOTERS {
        let mut buf = [None; STACK_VOTERS];
        for (slot, &node) in buf.iter_mut().zip(voters) {
            *slot = acked(node);
        }
        let buf = &mut buf[..voters.len()];
        // Descending: `buf[k - 1]` is then held by exactly the first k voters (and maybe more).
        buf.sort_unstable_by(|a, b| b.cmp(a));
        buf[k - 1]
    } else {
        let mut buf: Vec<Option<I>> = voters.iter().map(|&node| acked(node)).collect();
        buf.sort_unstable_by(|a, b| b.cmp(a));
        buf[k - 1]
    }
}

/// Counts grants and rejections among `voters` and decides.
fn tally_threshold(
    part: Part,
    voters: &[NodeId],
    needed: usize,
    vote: &mut impl FnMut(NodeId) -> Option<bool>,
) -> Outcome {
    let (mut granted, mut rejected) = (0, 0);
    for &node in voters {
        match vote(node) {
            Some(true) => granted += 1,
            Some(false) => rejected += 1,
            None => {}
        }
    }
    if granted >= needed {
        Outcome::Won
    } else if voters.len() - rejected < needed {
        Outcome::Lost(QuorumUnreachable::new(
            part,
            needed,
            voters.len(),
            granted,
            rejected,
        ))
    } else {
        Outcome::Pending
    }
}

/// Any `needed` of a set of voters.
///
/// The general counting quorum: a majority is `Threshold::majority`, Cassandra's
/// consistency levels ONE, QUORUM and ALL are thresholds 1, `n/2 + 1` and `n` over the
/// replicas of a key.
///
/// ```
/// use synod_quorum::{NodeId, Outcome, Quorum, Threshold};
///
/// let two_of_three = Threshold::new([1, 2, 3].map(NodeId::new), 2)?;
/// let outcome = two_of_three.tally(|n| (n.get() != 2).then_some(true));
/// assert_eq!(outcome, Outcome::Won);
/// # Ok::<(), synod_quorum::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Threshold {
    voters: Vec<NodeId>,
    needed: usize,
}

impl Threshold {
    /// Any `needed` of `voters`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NoVoters`], [`ConfigError::DuplicateVoter`], or
    /// [`ConfigError::ThresholdOutOfRange`] unless `1 <= needed <= voters`.
    pub fn new(
        voters: impl IntoIterator<Item = NodeId>,
        needed: usize,
    ) -> Result<Self, ConfigError> {
        let voters = voter_list(voters)?;
        if needed == 0 || needed > voters.len() {
            return Err(ConfigError::ThresholdOutOfRange {
                needed,
                voters: voters.len(),
            });
        }
        Ok(Self { voters, needed })
    }

    /// A strict majority, `floor(n/2) + 1`, of `voters`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NoVoters`] or [`ConfigError::DuplicateVoter`].
    pub fn majority(voters: impl IntoIterator<Item = NodeId>) -> Result<Self, ConfigError> {
        let voters = voter_list(voters)?;
        let needed = majority_of(voters.len());
        Ok(Self { voters, needed })
    }

    /// How many grants decide.
    #[must_use]
    pub fn needed(&self) -> usize {
        self.needed
    }

    /// The number of voters.
    #[must_use]
    pub fn len(&self) -> usize {
        self.voters.len()
    }

    /// Always false: a configuration has at least one voter.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.voters.is_empty()
    }

    /// How many voters may fail (crash or reject) with a quorum still possible.
    #[must_use]
    pub fn fault_tolerance(&self) -> usize {
        self.voters.len() - self.needed
    }
}

impl Quorum for Threshold {
    fn voters(&self) -> &[NodeId] {
        &self.voters
    }

    fn tally(&self, mut vote: impl FnMut(NodeId) -> Option<bool>) -> Outcome {
        tally_threshold(Part::Whole, &self.voters, self.needed, &mut vote)
    }

    fn committed_index<I: Ord + Copy>(
        &self,
        mut acked: impl FnMut(NodeId) -> Option<I>,
    ) -> Option<I> {
        kth_largest(&self.voters, self.needed, &mut acked)
    }
}

/// `floor(n/2) + 1`: the smallest count of which any two overlap.
#[must_use]
pub const fn majority_of(voters: usize) -> usize {
    voters / 2 + 1
}

/// A majority quorum: any `floor(n/2) + 1` of `n` voters.
///
/// Any two majorities share a voter, which is what lets a leader election or a commit
/// decided by one majority be seen by the next. Tolerates `(n - 1) / 2` failures.
///
/// ```
/// use synod_quorum::{MajorityConfig, NodeId, Quorum};
///
/// let config = MajorityConfig::new([1, 2, 3, 4, 5].map(NodeId::new))?;
/// assert_eq!(config.quorum_size(), 3);
/// // Acknowledged log indexes per node: n1 10, n2 7, n3 12, n4 nothing, n5 3.
/// let acked = |n: NodeId| [Some(10u64), Some(7), Some(12), None, Some(3)][n.get() as usize - 1];
/// assert_eq!(config.committed_index(acked), Some(7));
/// # Ok::<(), synod_quorum::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MajorityConfig {
    inner: Threshold,
}

impl MajorityConfig {
    /// A majority configuration over `voters`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NoVoters`] or [`ConfigError::DuplicateVoter`].
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Result<Self, ConfigError> {
        Ok(Self {
            inner: Threshold::majority(voters)?,
        })
    }

    /// `floor(n/2) + 1`.
    #[must_use]
    pub fn quorum_size(&self) -> usize {
        self.inner.needed
    }

    /// The number of voters.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Always false: a configuration has at least one voter.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// This configuration as a plain threshold.
    #[must_use]
    pub fn as_threshold(&self) -> &Threshold {
        &self.inner
    }
}

impl Quorum for MajorityConfig {
    fn voters(&self) -> &[NodeId] {
        &self.inner.voters
    }

    fn tally(&self, vote: impl FnMut(NodeId) -> Option<bool>) -> Outcome {
        self.inner.tally(vote)
    }

    fn committed_index<I: Ord + Copy>(&self, acked: impl FnMut(NodeId) -> Option<I>) -> Option<I> {
        self.inner.committed_index(acked)
    }
}

/// A joint configuration: a majority of the old voters *and* a majority of the new ones.
///
/// Used while a membership change is in flight (Raft's joint consensus, raft-rs's
/// `JointConfig`): no decision can be taken by the old or the new configuration alone,
/// so the two can never decide differently. A non-joint configuration (only the new
/// voters) is built with `JointConfig::from(config)`, so a caller can hold one type
/// throughout.
///
/// ```
/// use synod_quorum::{JointConfig, MajorityConfig, NodeId, Outcome, Quorum};
///
/// let old = MajorityConfig::new([1, 2, 3].map(NodeId::new))?;
/// let new = MajorityConfig::new([3, 4, 5].map(NodeId::new))?;
/// let joint = JointConfig::joint(old, new);
/// // n1, n2 grant: a majority of the old configuration, not of the new one.
/// let outcome = joint.tally(|n| (n.get() <= 2).then_some(true));
/// assert_eq!(outcome, Outcome::Pending);
/// // n4 and n5 grant too: now both.
/// assert_eq!(joint.tally(|n| (n.get() != 3).then_some(true)), Outcome::Won);
/// # Ok::<(), synod_quorum::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JointConfig {
    new: MajorityConfig,
    old: Option<MajorityConfig>,
    /// The union of both voter sets, sorted.
    voters: Vec<NodeId>,
}

impl JointConfig {
    /// A joint configuration: decisions need a majority of `old` and of `new`.
    #[must_use]
    pub fn joint(old: MajorityConfig, new: MajorityConfig) -> Self {
        let mut voters: Vec<NodeId> = old.voters().iter().chain(new.voters()).copied().collect();
        voters.sort_unstable();
        voters.dedup();
        Self {
            new,
            old: Some(old),
            voters,
        }
    }

    /// Whether a change is in flight (there is an old configuration).
    #[must_use]
    pub fn is_joint(&self) -> bool {
        self.old.is_some()
    }

    /// The new (incoming) configuration; the only one when not joint.
    #[must_use]
    pub fn new_config(&self) -> &MajorityConfig {
        &self.new
    }

    /// The old (outgoing) configuration, while joint.
    #[must_use]
    pub fn old_config(&self) -> Option<&MajorityConfig> {
        self.old.as_ref()
    }

    /// The configuration after the change completes: the new voters only.
    #[must_use]
    pub fn leave_joint(&self) -> Self {
        Self::from(self.new.clone())
    }
}

impl From<MajorityConfig> for JointConfig {
    fn from(config: MajorityConfig) -> Self {
        let voters = config.voters().to_vec();
        Self {
            new: config,
            old: None,
            voters,
        }
    }
}

impl Quorum for JointConfig {
    fn voters(&self) -> &[NodeId] {
        &self.voters
    }

    fn tally(&self, mut vote: impl FnMut(NodeId) -> Option<bool>) -> Outcome {
        let Some(old) = &self.old else {
            return tally_threshold(
                Part::Whole,
                self.new.voters(),
                self.new.quorum_size(),
                &mut vote,
            );
        };
        let new = tally_threshold(
            Part::New,
            self.new.voters(),
            self.new.quorum_size(),
            &mut vote,
        );
        let old = tally_threshold(Part::Old, old.voters(), old.quorum_size(), &mut vote);
        match (new, old) {
            (Outcome::Lost(why), _) | (_, Outcome::Lost(why)) => Outcome::Lost(why),
            (Outcome::Won, Outcome::Won) => Outcome::Won,
            _ => Outcome::Pending,
        }
    }

    fn committed_index<I: Ord + Copy>(
        &self,
        mut acked: impl FnMut(NodeId) -> Option<I>,
    ) -> Option<I> {
        let new = kth_largest(self.new.voters(), self.new.quorum_size(), &mut acked);
        match &self.old {
            // Held by a majority of both: the smaller of the two (`None` ranks lowest).
            Some(old) => new.min(kth_largest(old.voters(), old.quorum_size(), &mut acked)),
            None => new,
        }
    }
}

/// Flexible quorums: a read threshold `R` and a write threshold `W` over the same `N`
/// voters, with `R + W > N` so that every read quorum meets every write quorum.
///
/// Dynamo-style stores pick `R` and `W` per workload (`R = 1, W = N` for cheap reads;
/// `R = N, W = 1` for cheap writes); Flexible Paxos uses the same rule for its phase-one
/// and phase-two quorums. Note that `R + W > N` does not make two *writes* overlap; that
/// needs `W > N/2` as well, which this type does not require.
///
/// ```
/// use synod_quorum::{ConfigError, FlexibleConfig, NodeId};
///
/// let nodes = [1, 2, 3, 4, 5].map(NodeId::new);
/// let config = FlexibleConfig::new(nodes, 2, 4)?;
/// assert_eq!(config.read_quorum().needed(), 2);
/// assert!(matches!(
///     FlexibleConfig::new(nodes, 2, 3),
///     Err(ConfigError::QuorumsDoNotOverlap { read: 2, write: 3, voters: 5 })
/// ));
/// # Ok::<(), synod_quorum::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlexibleConfig {
    read: Threshold,
    write: Threshold,
}

impl FlexibleConfig {
    /// Read and write thresholds over `voters`, checked to overlap.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NoVoters`], [`ConfigError::DuplicateVoter`],
    /// [`ConfigError::ThresholdOutOfRange`], or [`ConfigError::QuorumsDoNotOverlap`] when
    /// `read + write <= voters`.
    pub fn new(
        voters: impl IntoIterator<Item = NodeId>,
        read: usize,
        write: usize,
    ) -> Result<Self, ConfigError> {
        let config = Self::unchecked(voters, read, write)?;
        let n = config.read.len();
        if read + write <= n {
            return Err(ConfigError::QuorumsDoNotOverlap {
                read,
                write,
                voters: n,
            });
        }
        Ok(config)
    }

    /// **Broken on purpose** (feature `broken`): like [`FlexibleConfig::new`] but accepting
    /// `R + W <= N`: reads may then miss acknowledged writes. Exists to demonstrate that
    /// failure (the fault tests build a broken register with it); never use it for data you
    /// care about.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NoVoters`], [`ConfigError::DuplicateVoter`] or
    /// [`ConfigError::ThresholdOutOfRange`].
    #[cfg(feature = "broken")]
    pub fn broken_without_overlap_check(
        voters: impl IntoIterator<Item = NodeId>,
        read: usize,
        write: usize,
    ) -> Result<Self, ConfigError> {
        Self::unchecked(voters, read, write)
    }

    /// The thresholds over `voters`, each checked on its own but not against each other.
    fn unchecked(
        voters: impl IntoIterator<Item = NodeId>,
        read: usize,
        write: usize,
    ) -> Result<Self, ConfigError> {
        let read = Threshold::new(voters, read)?;
        let write = Threshold::new(read.voters.iter().copied(), write)?;
        Ok(Self { read, write })
    }

    /// The read quorum.
    #[must_use]
    pub fn read_quorum(&self) -> &Threshold {
        &self.read
    }

    /// The write quorum.
    #[must_use]
    pub fn write_quorum(&self) -> &Threshold {
        &self.write
    }

    /// Whether every read quorum meets every write quorum (`R + W > N`).
    #[must_use]
    pub fn overlaps(&self) -> bool {
        self.read.needed + self.write.needed > self.read.len()
    }
}
