//! Quorum arithmetic against brute force over all subsets of voters.
//!
//! The brute-force side never uses the crate's counting: it defines "is a quorum" directly
//! (`2|S| > |V|` for a majority, both halves for a joint configuration) and then enumerates
//! every subset to find what a tally and a commit index must be.

use proptest::prelude::*;
use synod_quorum::{
    ConfigError, FlexibleConfig, JointConfig, MajorityConfig, NodeId, Outcome, Quorum, Recorded,
    ResponseTracker, Threshold,
};

/// Node ids 1..=UNIVERSE appear in tests (bit `i` of a mask is node `i + 1`); voters are
/// subsets of them.
const UNIVERSE: u32 = 7;

fn ids(mask: u32) -> Vec<NodeId> {
    (0..UNIVERSE)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| NodeId::new(u64::from(i) + 1))
        .collect()
}

/// The brute-force definition of a quorum system, as bitmasks.
#[derive(Debug, Clone, Copy)]
enum Model {
    Threshold { voters: u32, needed: u32 },
    Majority { voters: u32 },
    Joint { old: u32, new: u32 },
}

impl Model {
    fn voters(self) -> u32 {
        match self {
            Self::Threshold { voters, .. } | Self::Majority { voters } => voters,
            Self::Joint { old, new } => old | new,
        }
    }

    fn is_quorum(self, set: u32) -> bool {
        let majority = |voters: u32| 2 * (set & voters).count_ones() > voters.count_ones();
        match self {
            Self::Threshold { voters, needed } => (set & voters).count_ones() >= needed,
            Self::Majority { voters } => majority(voters),
            Self::Joint { old, new } => majority(old) && majority(new),
        }
    }

    /// What a tally must say, by enumerating every way the silent voters could answer.
    fn tally(self, granted: u32, rejected: u32) -> &'static str {
        let voters = self.voters();
        let (granted, rejected) = (granted & voters, rejected & voters);
        let silent = voters & !granted & !rejected;
        let mut all_win = true;
        let mut any_win = false;
        // Every subset of the silent voters is a possible set of further grants.
        let mut sub = silent;
        loop {
            let wins = self.is_quorum(granted | sub);
            all_win &= wins;
            any_win |= wins;
            if sub == 0 {
                break;
            }
            sub = (sub - 1) & silent;
        }
        if all_win {
            "won"
        } else if !any_win {
            "lost"
        } else {
            "pending"
        }
    }

    /// The largest index held by a quorum: max over quorums S of min over S.
    fn committed(self, acked: &[Option<u8>]) -> Option<u8> {
        let voters = self.voters();
        let mut best: Option<u8> = None;
        let mut sub = voters;
        loop {
            if sub != 0 && self.is_quorum(sub) {
                let held = ids(sub)
                    .into_iter()
                    .map(|n| acked[n.get() as usize - 1])
                    .min()
                    .expect("non-empty");
                best = best.max(held);
            }
            if sub == 0 {
                break;
            }
            sub = (sub - 1) & voters;
        }
        best
    }
}

fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Pending => "pending",
        Outcome::Won => "won",
        Outcome::Lost(_) => "lost",
    }
}

/// The crate's quorum system for a model.
enum Real {
    Threshold(Threshold),
    Majority(MajorityConfig),
    Joint(JointConfig),
}

impl Real {
    fn of(model: Model) -> Self {
        match model {
            Model::Threshold { voters, needed } => {
                Self::Threshold(Threshold::new(ids(voters), needed as usize).expect("valid"))
            }
            Model::Majority { voters } => {
                Self::Majority(MajorityConfig::new(ids(voters)).expect("valid"))
            }
            Model::Joint { old, new } => Self::Joint(JointConfig::joint(
                MajorityConfig::new(ids(old)).expect("valid"),
                MajorityConfig::new(ids(new)).expect("valid"),
            )),
        }
    }

    fn tally(&self, votes: &[Option<bool>]) -> Outcome {
        let lookup = |n: NodeId| votes[n.get() as usize - 1];
        match self {
            Self::Threshold(q) => q.tally(lookup),
            Self::Majority(q) => q.tally(lookup),
            Self::Joint(q) => q.tally(lookup),
        }
    }

    fn committed(&self, acked: &[Option<u8>]) -> Option<u8> {
        let lookup = |n: NodeId| acked[n.get() as usize - 1];
        match self {
            Self::Threshold(q) => q.committed_index(lookup),
            Self::Majority(q) => q.committed_index(lookup),
            Self::Joint(q) => q.committed_index(lookup),
        }
    }
}

fn model() -> impl Strategy<Value = Model> {
    let voters = 1u32..(1 << UNIVERSE);
    prop_oneof![
        voters.clone().prop_flat_map(|voters| {
            (1..=voters.count_ones()).prop_map(move |needed| Model::Threshold { voters, needed })
        }),
        voters.clone().prop_map(|voters| Model::Majority { voters }),
        (voters.clone(), voters).prop_map(|(old, new)| Model::Joint { old, new }),
    ]
}

fn masks(votes: &[Option<bool>]) -> (u32, u32) {
    let mut granted = 0;
    let mut rejected = 0;
    for (i, v) in votes.iter().enumerate() {
        match v {
            Some(true) => granted |= 1 << i,
            Some(false) => rejected |= 1 << i,
            None => {}
        }
    }
    (granted, rejected)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// A tally is won exactly when every way the silent voters could answer wins, lost
    /// exactly when none does: it decides as early as the votes allow, and no earlier.
    #[test]
    fn tally_matches_brute_force(
        model in model(),
        votes in prop::collection::vec(prop::option::of(any::<bool>()), UNIVERSE as usize),
    ) {
        let (granted, rejected) = masks(&votes);
        let real = Real::of(model);
        let got = real.tally(&votes);
        prop_assert_eq!(outcome_name(&got), model.tally(granted, rejected));
        if let Outcome::Lost(why) = got {
            // The explanation is arithmetic that adds up.
            prop_assert!(why.voters() - why.rejected() < why.needed());
            prop_assert_eq!(why.granted() + why.rejected() + why.outstanding(), why.voters());
        }
    }

    /// The commit index is the largest index held by a quorum.
    #[test]
    fn committed_index_matches_brute_force(
        model in model(),
        acked in prop::collection::vec(prop::option::of(0u8..6), UNIVERSE as usize),
    ) {
        let real = Real::of(model);
        prop_assert_eq!(real.committed(&acked), model.committed(&acked));
    }

    /// A tracker fed responses in any order, with duplicates and strangers, decides like
    /// the brute force on the first response of each voter, and never undoes a decision.
    #[test]
    fn tracker_counts_each_voter_once(
        model in model(),
        responses in prop::collection::vec((0..UNIVERSE + 2, any::<bool>()), 0..24),
    ) {
        match Real::of(model) {
            Real::Threshold(q) => check_tracker(ResponseTracker::new(&q), model, &responses)?,
            Real::Majority(q) => check_tracker(ResponseTracker::new(&q), model, &responses)?,
            Real::Joint(q) => check_tracker(ResponseTracker::new(&q), model, &responses)?,
        }
    }

    /// Every read quorum meets every write quorum exactly when R + W > N, and the
    /// constructor accepts exactly those.
    #[test]
    fn flexible_quorums_overlap_exactly_when_checked(
        (voters, read, write) in (1u32..(1 << UNIVERSE)).prop_flat_map(|voters| {
            let n = voters.count_ones();
            (Just(voters), 1..=n, 1..=n)
        }),
    ) {
        let mut always_meet = true;
        let mut r = voters;
        loop {
            let mut w = voters;
            loop {
                if r.count_ones() == read && w.count_ones() == write && r & w == 0 {
                    always_meet = false;
                }
                if w == 0 { break; }
                w = (w - 1) & voters;
            }
            if r == 0 { break; }
            r = (r - 1) & voters;
        }
        let built = FlexibleConfig::new(ids(voters), read as usize, write as usize);
        prop_assert_eq!(built.is_ok(), always_meet);
        let unchecked = FlexibleConfig::broken_without_overlap_check(ids(voters), read as usize, write as usize)
            .expect("sizes in range");
        prop_assert_eq!(unchecked.overlaps(), always_meet);
    }
}

fn check_tracker<Q: Quorum>(
    mut tracker: ResponseTracker<Q>,
    model: Model,
    responses: &[(u32, bool)],
) -> Result<(), TestCaseError> {
    let voters: Vec<NodeId> = tracker.quorum().voters().to_vec();
    let mut first: Vec<Option<bool>> = vec![None; UNIVERSE as usize + 2];
    let mut decided: Option<&'static str> = None;
    for &(node, granted) in responses {
        let node_id = NodeId::new(u64::from(node) + 1);
        let expected = if !voters.contains(&node_id) {
            Recorded::NotAVoter
        } else if first[node as usize].is_some() {
            Recorded::Duplicate
        } else {
            first[node as usize] = Some(granted);
            Recorded::Counted
        };
        prop_assert_eq!(tracker.record(node_id, granted), expected);
        let (g, r) = masks(&first);
        let got = outcome_name(&tracker.outcome());
        prop_assert_eq!(got, model.tally(g, r));
        if let Some(before) = decided {
            prop_assert_eq!(got, before, "a decision was undone");
        } else if got != "pending" {
            decided = Some(got);
        }
    }
    prop_assert_eq!(
        tracker.granted().count() + tracker.rejected().count() + tracker.outstanding().count(),
        voters.len()
    );
    Ok(())
}

/// Every assignment of votes for majorities of 1 to 5 voters, exhaustively.
#[test]
fn majority_tally_exhaustive_up_to_five() {
    let mut checked = 0;
    for n in 1..=5u32 {
        let voters = (1 << n) - 1;
        let model = Model::Majority { voters };
        let real = Real::of(model);
        for assignment in 0..3u32.pow(n) {
            let mut votes = vec![None; UNIVERSE as usize];
            let mut a = assignment;
            for vote in votes.iter_mut().take(n as usize) {
                *vote = [None, Some(true), Some(false)][(a % 3) as usize];
                a /= 3;
            }
            let (g, r) = masks(&votes);
            assert_eq!(
                outcome_name(&real.tally(&votes)),
                model.tally(g, r),
                "{votes:?}"
            );
            checked += 1;
        }
    }
    println!("majority tallies checked exhaustively: {checked}");
    assert_eq!(checked, 3 + 9 + 27 + 81 + 243);
}

#[test]
fn configurations_are_validated_at_construction() {
    assert_eq!(MajorityConfig::new([]), Err(ConfigError::NoVoters));
    assert_eq!(
        MajorityConfig::new([1, 2, 1].map(NodeId::new)),
        Err(ConfigError::DuplicateVoter(NodeId::new(1)))
    );
    assert_eq!(
        Threshold::new([1, 2].map(NodeId::new), 3),
        Err(ConfigError::ThresholdOutOfRange {
            needed: 3,
            voters: 2
        })
    );
    assert_eq!(
        Threshold::new([1, 2].map(NodeId::new), 0),
        Err(ConfigError::ThresholdOutOfRange {
            needed: 0,
            voters: 2
        })
    );
    let err = FlexibleConfig::new([1, 2, 3].map(NodeId::new), 1, 2).unwrap_err();
    assert!(err.to_string().contains("R + W > N"), "{err}");
}

#[test]
fn joint_loss_names_the_configuration_that_cannot_decide() {
    let old = MajorityConfig::new([1, 2, 3].map(NodeId::new)).unwrap();
    let new = MajorityConfig::new([4, 5, 6].map(NodeId::new)).unwrap();
    let mut tracker = ResponseTracker::new(JointConfig::joint(old, new));
    for n in [1, 2, 3] {
        tracker.record(NodeId::new(n), true);
    }
    tracker.record(NodeId::new(4), false);
    assert_eq!(tracker.outcome(), Outcome::Pending);
    tracker.record(NodeId::new(5), false);
    let Outcome::Lost(why) = tracker.outcome() else {
        panic!("expected a loss, got {:?}", tracker.outcome());
    };
    assert_eq!(why.part(), synod_quorum::Part::New);
    assert!(
        why.to_string()
            .contains("the new configuration needs 2 of 3"),
        "{why}"
    );
    tracker.reset();
    assert_eq!(tracker.outcome(), Outcome::Pending);
}

#[test]
fn committed_index_beyond_the_stack_buffer() {
    // 20 voters: the heap path. Voter i acknowledged index i.
    let config = MajorityConfig::new((1..=20).map(NodeId::new)).unwrap();
    // A majority of 20 is 11: indexes 9..=19 are held by 11 voters.
    assert_eq!(config.committed_index(|n| Some(n.get() - 1)), Some(9));
    assert_eq!(config.committed_index(|_| None::<u64>), None);
}
