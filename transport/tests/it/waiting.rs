//! The Request Waiting List against a simple model: a list of entries scanned in full.

use std::collections::BTreeSet;

use proptest::prelude::*;
use synod_transport::{NodeId, Progress, Quorum, WaitError, WaitingList};

#[derive(Clone, Debug)]
enum Op {
    Insert {
        key: u8,
        needed: usize,
        deadline: u64,
    },
    Respond {
        key: u8,
        from: u64,
    },
    Expire {
        now: u64,
    },
    Remove {
        key: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..8, 1usize..4, 0u64..100).prop_map(|(key, needed, deadline)| Op::Insert {
            key,
            needed,
            deadline
        }),
        (0u8..8, 1u64..6).prop_map(|(key, from)| Op::Respond { key, from }),
        (0u8..8, 1u64..6).prop_map(|(key, from)| Op::Respond { key, from }),
        (0u64..120).prop_map(|now| Op::Expire { now }),
        (0u8..8).prop_map(|key| Op::Remove { key }),
    ]
}

struct ModelEntry {
    key: u8,
    needed: usize,
    deadline: u64,
    from: BTreeSet<u64>,
}

const ENTRIES_MAX: usize = 5;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn waiting_list_matches_a_naive_model(ops in proptest::collection::vec(op(), 1..80)) {
        let mut real: WaitingList<u8, Quorum<u64>, u64> = WaitingList::new(ENTRIES_MAX);
        let mut model: Vec<ModelEntry> = Vec::new();
        for op in ops {
            match op {
                Op::Insert { key, needed, deadline } => {
                    let expected = if model.iter().any(|e| e.key == key) {
                        Err(WaitError::Duplicate)
                    } else if model.len() >= ENTRIES_MAX {
                        Err(WaitError::Full { max: ENTRIES_MAX })
                    } else {
                        model.push(ModelEntry { key, needed, deadline, from: BTreeSet::new() });
                        Ok(())
                    };
                    prop_assert_eq!(real.insert(key, Quorum::new(needed), deadline), expected);
                }
                Op::Respond { key, from } => {
                    let got = real.on_response(&key, NodeId::new(from), from);
                    match model.iter().position(|e| e.key == key) {
                        None => prop_assert_eq!(got, Progress::Unknown),
                        Some(i) => {
                            model[i].from.insert(from);
                            if model[i].from.len() >= model[i].needed {
                                let entry = model.remove(i);
                                let Progress::Completed(acks) = got else {
                                    return Err(TestCaseError::fail("expected completion"));
                                };
                                // Each node counted once, with its own response.
                                let nodes: BTreeSet<u64> = acks.keys().map(|n| n.get()).collect();
                                prop_assert_eq!(&nodes, &entry.from);
                                prop_assert!(acks.iter().all(|(n, r)| n.get() == *r));
                            } else {
                                prop_assert_eq!(got, Progress::Pending);
                            }
                        }
                    }
                }
                Op::Expire { now } => {
                    let mut expected: Vec<(u64, u8)> = model
                        .iter()
                        .filter(|e| e.deadline <= now)
                        .map(|e| (e.deadline, e.key))
                        .collect();
                    expected.sort_unstable();
                    model.retain(|e| e.deadline > now);
                    let got: Vec<u8> = real.expire(now).into_iter().map(|(k, _)| k).collect();
                    let expected: Vec<u8> = expected.into_iter().map(|(_, k)| k).collect();
                    prop_assert_eq!(got, expected);
                }
                Op::Remove { key } => {
                    let expected = model.iter().position(|e| e.key == key).map(|i| model.remove(i));
                    prop_assert_eq!(real.remove(&key).is_some(), expected.is_some());
                }
            }
            prop_assert_eq!(real.len(), model.len());
            prop_assert_eq!(real.next_deadline(), model.iter().map(|e| e.deadline).min());
        }
    }
}
