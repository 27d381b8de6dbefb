//! A linearizability checker for a single read/write register, and its own tests.
//!
//! Histories are small (tens of operations), so a depth-first search over linearization
//! orders with memoisation on (operations done, register value) is fast enough: at each
//! step any operation may go next whose invocation precedes every pending completion.
//! Written values are unique, writes with an unknown outcome may take effect at any point
//! after their invocation or never, and failed reads are left out by the caller.

use std::collections::BTreeSet;

/// One operation of a history. Times are virtual; `completed: None` means the outcome is
/// unknown (only allowed for writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    pub invoked: u64,
    pub completed: Option<u64>,
    pub kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Write(u64),
    /// The value read; `None` for the initial, never-written register.
    Read(Option<u64>),
}

/// Whether the history has a linearization; on failure, a short description.
pub fn check(history: &[Op]) -> Result<(), String> {
    assert!(history.len() <= 128, "history too long for the checker");
    assert!(
        history
            .iter()
            .all(|op| op.completed.is_some() || matches!(op.kind, Kind::Write(_))),
        "only writes may have unknown outcomes"
    );
    let mut memo = BTreeSet::new();
    if search(history, 0, None, &mut memo) {
        Ok(())
    } else {
        Err(format!(
            "no linearization of {} operations: {history:?}",
            history.len()
        ))
    }
}

fn search(
    history: &[Op],
    done: u128,
    value: Option<u64>,
    memo: &mut BTreeSet<(u128, Option<u64>)>,
) -> bool {
    // Finished when every operation with a known outcome is linearized.
    let all_known_done = history
        .iter()
        .enumerate()
        .all(|(i, op)| done & (1 << i) != 0 || op.completed.is_none());
    if all_known_done {
        return true;
    }
    if !memo.insert((done, value)) {
        return false;
    }
    // The earliest completion among operations not yet linearized bounds who may go next.
    let horizon = history
        .iter()
        .enumerate()
        .filter(|(i, _)| done & (1 << i) == 0)
        .filter_map(|(_, op)| op.completed)
        .min()
        .unwrap_or(u64::MAX);
    for (i, op) in history.iter().enumerate() {
        if done & (1 << i) != 0 || op.invoked > horizon {
            continue;
        }
        let next = match op.kind {
            Kind::Write(v) => Some(v),
            Kind::Read(seen) if seen == value => value,
            Kind::Read(_) => continue,
        };
        if search(history, done | (1 << i), next, memo) {
            return true;
        }
    }
    false
}

fn op(invoked: u64, completed: u64, kind: Kind) -> Op {
    Op {
        invoked,
        completed: Some(completed),
        kind,
    }
}

#[test]
fn accepts_sequential_and_concurrent_histories() {
    let h = [
        op(0, 1, Kind::Read(None)),
        op(2, 3, Kind::Write(1)),
        op(4, 5, Kind::Read(Some(1))),
    ];
    check(&h).unwrap();
    // A read concurrent with a write may see either value.
    let h = [
        op(0, 10, Kind::Write(1)),
        op(1, 2, Kind::Read(Some(1))),
        op(3, 4, Kind::Read(Some(1))),
    ];
    check(&h).unwrap();
    // An unknown write may have happened...
    let h = [
        Op {
            invoked: 0,
            completed: None,
            kind: Kind::Write(7),
        },
        op(5, 6, Kind::Read(Some(7))),
    ];
    check(&h).unwrap();
    // ...or not.
    let h = [
        Op {
            invoked: 0,
            completed: None,
            kind: Kind::Write(7),
        },
        op(5, 6, Kind::Read(None)),
    ];
    check(&h).unwrap();
}

#[test]
fn rejects_known_bad_histories() {
    // A stale read after a completed write.
    let h = [op(0, 1, Kind::Write(1)), op(2, 3, Kind::Read(None))];
    assert!(check(&h).is_err());
    // A new-old inversion: two sequential reads during one long write.
    let h = [
        op(0, 1, Kind::Write(1)),
        op(2, 20, Kind::Write(2)),
        op(3, 4, Kind::Read(Some(2))),
        op(5, 6, Kind::Read(Some(1))),
    ];
    assert!(check(&h).is_err());
    // A value nobody wrote.
    let h = [op(0, 1, Kind::Read(Some(9)))];
    assert!(check(&h).is_err());
    // A read from the future: the write starts after the read ends.
    let h = [op(0, 1, Kind::Read(Some(3))), op(2, 3, Kind::Write(3))];
    assert!(check(&h).is_err());
}
