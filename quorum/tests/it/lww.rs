//! Last-write-wins against a model: whatever order replicas merge in, each ends with the
//! write of the largest timestamp and, at a tie, the delete (as in Cassandra), then the
//! larger value.

use proptest::prelude::*;
use synod_clocks::WallTime;
use synod_quorum::{LastWriteWins, NodeId, Resolver, Timestamp};

/// A timestamp of whole seconds, from few values, so that ties are common.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct At(u8);

impl Timestamp for At {
    fn wall_time(&self) -> WallTime {
        WallTime::from_secs(u64::from(self.0))
    }
}

type Lww = LastWriteWins<At, u8>;
type State = <Lww as Resolver>::State;
type Write = <Lww as Resolver>::Write;

/// Few timestamps and values, so that ties are common.
fn write() -> impl Strategy<Value = Write> {
    (0u8..4, prop::option::of(0u8..3)).prop_map(|(at, value)| (At(at), value))
}

fn state() -> impl Strategy<Value = State> {
    prop::option::of(write())
}

/// The model's winner: the largest by (timestamp, is a delete, value), found by brute force.
fn model(writes: &[Write]) -> State {
    writes
        .iter()
        .copied()
        .max_by_key(|&(at, value)| (at, value.is_none(), value))
}

fn merged(a: State, b: State) -> State {
    let mut into = a;
    Lww::new().merge(&mut into, &b);
    into
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn merge_is_commutative_associative_and_idempotent(a in state(), b in state(), c in state()) {
        prop_assert_eq!(merged(a, b), merged(b, a));
        prop_assert_eq!(merged(merged(a, b), c), merged(a, merged(b, c)));
        prop_assert_eq!(merged(a, a), a);
        let both: Vec<Write> = [a, b].into_iter().flatten().collect();
        prop_assert_eq!(merged(a, b), model(&both));
    }

    /// Writes land on three replicas, which then exchange states in a random order: once
    /// every replica has merged every other, all hold the model's winner.
    #[test]
    fn replicas_converge_on_the_model_winner(
        writes in prop::collection::vec((0usize..3, write()), 1..16),
        exchanges in prop::collection::vec((0usize..3, 0usize..3), 0..30),
    ) {
        let lww = Lww::new();
        let mut replicas: [State; 3] = [None; 3];
        for &(at, write) in &writes {
            lww.coordinate(NodeId::new(1), Some(&mut replicas[at]), write).unwrap();
        }
        for (from, to) in exchanges {
            let sent = replicas[from];
            lww.merge(&mut replicas[to], &sent);
        }
        for from in 0..3 {
            for to in 0..3 {
                let sent = replicas[from];
                lww.merge(&mut replicas[to], &sent);
            }
        }
        let winner = model(&writes.iter().map(|&(_, w)| w).collect::<Vec<_>>());
        for replica in replicas {
            prop_assert_eq!(replica, winner);
        }
    }
}
