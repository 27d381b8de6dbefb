//! The linearizability checker against a brute-force oracle on small random histories:
//! both must agree on every history, linearizable or not. A second property draws
//! histories in which most operations have an unknown outcome, many of them identical,
//! which is where the checker prunes its search most.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use synod_sim::{
    ClientId, History, KvInput, KvModel, KvOutput, Linearizability, Model, Outcome, SimTime,
    Verdict,
};

#[derive(Debug, Clone)]
struct Op {
    input: KvInput,
    call: u64,
    /// `None`: unknown outcome.
    ret: Option<(u64, KvOutput)>,
    failed: bool,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    op_with_unknown_in_ten(1)
}

/// An operation whose outcome is unknown `unknown` times in ten, failed once in ten, and
/// otherwise completed.
fn op_with_unknown_in_ten(unknown: u8) -> impl Strategy<Value = Op> {
    (0u8..5, 0u64..4, 0u64..4, 0u64..60, 1u64..30, 0u8..10).prop_map(
        move |(kind, value, seen, call, len, fate)| {
            // Reads and writes, and a compare-and-set now and then (whose effect depends
            // on the state, and whose output may claim it applied or not).
            let (input, output) = match kind {
                0 | 1 => (
                    KvInput::Read { key: 0 },
                    KvOutput::Read((seen > 0).then_some(seen)),
                ),
                2 | 3 => (KvInput::Write { key: 0, value }, KvOutput::Written),
                _ => (
                    KvInput::Cas {
                        key: 0,
                        expect: (seen > 0).then_some(seen),
                        new: value,
                    },
                    KvOutput::Cas(value % 2 == 0),
                ),
            };
            Op {
                input,
                call,
                ret: (fate >= unknown).then_some((call + len, output)),
                failed: fate == unknown,
            }
        },
    )
}

fn history_of(ops: &[Op]) -> History<KvInput, KvOutput> {
    let mut sorted = ops.to_vec();
    sorted.sort_by_key(|o| o.call);
    let mut h = History::new();
    for (i, op) in sorted.iter().enumerate() {
        let id = h.invoke(
            ClientId::new(i as u32),
            op.input,
            SimTime::from_micros(op.call),
        );
        match (op.failed, op.ret) {
            (true, Some((ret, _))) => h.fail(id, SimTime::from_micros(ret)).expect("valid"),
            (false, Some((ret, out))) => h.ok(id, out, SimTime::from_micros(ret)).expect("valid"),
            (_, None) => h.unknown(id).expect("valid"),
        }
    }
    h
}

/// Tries every order consistent with real time; unknown operations may also be left out.
fn brute_force(history: &History<KvInput, KvOutput>) -> bool {
    struct Entry {
        input: KvInput,
        call: u64,
        ret: u64,
        output: Option<KvOutput>,
    }
    let entries: Vec<Entry> = history
        .operations()
        .iter()
        .filter(|o| !matches!(o.outcome, Outcome::Fail))
        .map(|o| Entry {
            input: o.input,
            call: o.invoked_at.as_micros(),
            ret: o.completed_at.map_or(u64::MAX, SimTime::as_micros),
            output: match o.outcome {
                Outcome::Ok(out) => Some(out),
                _ => None,
            },
        })
        .collect();
    /// Whether the operations not `done` can follow in `state`; `failed` remembers the
    /// configurations already found hopeless, so that histories of a dozen operations
    /// stay quick (a configuration's future depends on nothing else).
    fn search(
        entries: &[Entry],
        done: &mut Vec<bool>,
        state: Option<u64>,
        failed: &mut HashSet<(Vec<bool>, Option<u64>)>,
    ) -> bool {
        let pending: Vec<usize> = (0..entries.len()).filter(|&i| !done[i]).collect();
        if pending.iter().all(|&i| entries[i].output.is_none()) {
            return true; // the rest never took effect
        }
        if failed.contains(&(done.clone(), state)) {
            return false;
        }
        for &i in &pending {
            // `i` can go next if no pending operation returned before `i` was called.
            if pending.iter().any(|&j| entries[j].ret < entries[i].call) {
                continue;
            }
            if let Some(next) = KvModel.step(&state, &entries[i].input, entries[i].output.as_ref())
            {
                done[i] = true;
                let ok = search(entries, done, next, failed);
                done[i] = false;
                if ok {
                    return true;
                }
            }
        }
        failed.insert((done.clone(), state));
        false
    }
    search(
        &entries,
        &mut vec![false; entries.len()],
        None,
        &mut HashSet::new(),
    )
}

/// Checks `ops` both ways, asserts that the verdicts agree, and counts the verdict.
fn agree(ops: &[Op], counts: &[AtomicU64; 2]) -> Result<(), TestCaseError> {
    let h = history_of(ops);
    let expected = brute_force(&h);
    let got = Linearizability::new(KvModel).check(&h);
    prop_assert!(!matches!(got, Verdict::GaveUp(_)), "{}", got);
    prop_assert_eq!(got.is_pass(), expected, "history:\n{}", h);
    counts[usize::from(!expected)].fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Linearizable and not, as the brute force found them.
static SMALL: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
static UNKNOWN: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn checker_agrees_with_brute_force(ops in proptest::collection::vec(op_strategy(), 1..8)) {
        agree(&ops, &SMALL)?;
    }

    #[test]
    fn checker_agrees_with_brute_force_on_many_unknown_operations(
        ops in proptest::collection::vec(op_with_unknown_in_ten(6), 1..14)
    ) {
        agree(&ops, &UNKNOWN)?;
    }
}

#[test]
fn the_random_histories_include_both_verdicts() {
    // Run the properties first (they are cheap), then look at what they saw.
    checker_agrees_with_brute_force();
    checker_agrees_with_brute_force_on_many_unknown_operations();
    for (name, counts) in [("small", &SMALL), ("mostly unknown", &UNKNOWN)] {
        let [a, r] = [0, 1].map(|i| counts[i].load(Ordering::Relaxed));
        println!(
            "checker vs brute force, {name} histories: {a} linearizable, {r} not, all agreeing"
        );
        assert!(a > 100 && r > 100, "{name}: accepted {a}, rejected {r}");
    }
}
