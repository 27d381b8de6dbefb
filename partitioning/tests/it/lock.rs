//! The lock manager against its rules, for random requests and releases: no two
//! transactions ever hold one key in conflicting modes, a waiting request always waits for
//! something (a holder, an older waiter, or under wait-die a younger waiter it queues
//! behind), and under wait-die no transaction is ever left waiting for an older holder.

use std::collections::BTreeMap;

use proptest::prelude::*;
use synod_partitioning::{Acquire, DeadlockPolicy, LockManager, LockMode};

#[derive(Clone, Debug)]
enum Step {
    Request(u8, Vec<(u8, bool)>),
    Release(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u8..8, prop::collection::vec((0u8..4, any::<bool>()), 1..3)).prop_map(|(t, l)| Step::Request(t, l)),
        2 => (0u8..8).prop_map(Step::Release),
    ]
}

fn conflicts(a: LockMode, b: LockMode) -> bool {
    a == LockMode::Exclusive || b == LockMode::Exclusive
}

proptest! {
    #[test]
    fn locks_never_conflict_and_waits_follow_the_policy(
        wait_die in any::<bool>(),
        steps in prop::collection::vec(step(), 1..60),
    ) {
        let policy = if wait_die { DeadlockPolicy::WaitDie } else { DeadlockPolicy::WoundWait };
        let mut m: LockManager<u8, u8> = LockManager::new(policy, 64, 64);
        // The model: what each transaction holds and what each waits for.
        let mut holds: BTreeMap<u8, Vec<(u8, LockMode)>> = BTreeMap::new();
        let mut waits: BTreeMap<u8, Vec<(u8, LockMode)>> = BTreeMap::new();
        for s in steps {
            match s {
                Step::Request(t, locks) => {
                    if holds.contains_key(&t) || waits.contains_key(&t) {
                        continue; // one request per transaction, as a participant makes
                    }
                    let mut wanted: BTreeMap<u8, LockMode> = BTreeMap::new();
                    for (k, x) in locks {
                        let mode = if x { LockMode::Exclusive } else { LockMode::Shared };
                        let e = wanted.entry(k).or_insert(mode);
                        *e = (*e).max(mode);
                    }
                    let wanted: Vec<(u8, LockMode)> = wanted.into_iter().collect();
                    match m.request(t, wanted.clone()) {
                        Acquire::Granted => { holds.insert(t, wanted); }
                        Acquire::Wait { wound } => {
                            prop_assert!(wound.iter().all(|&w| w > t), "only younger ones are wounded");
                            if wait_die { prop_assert!(wound.is_empty()); }
                            waits.insert(t, wanted);
                        }
                        Acquire::Die => prop_assert!(wait_die),
                        Acquire::Busy => prop_assert!(false, "no limit is near"),
                    }
                }
                Step::Release(t) => {
                    holds.remove(&t);
                    waits.remove(&t);
                    let released = m.release(t);
                    for g in released.granted {
                        let w = waits.remove(&g).expect("a waiter was granted");
                        holds.insert(g, w);
                    }
                    for d in released.died {
                        prop_assert!(wait_die);
                        waits.remove(&d).expect("a waiter died");
                    }
                }
            }
            // No two holders conflict.
            for (a, la) in &holds {
                for (b, lb) in &holds {
                    if a < b {
                        for (ka, ma) in la {
                            for (kb, mb) in lb {
                                prop_assert!(!(ka == kb && conflicts(*ma, *mb)), "{a} and {b} both hold {ka}");
                            }
                        }
                    }
                }
            }
            // Every waiter is blocked by a holder or an older waiter; under wait-die, only
            // by younger holders.
            for (w, lw) in &waits {
                let blocked_by = |others: &BTreeMap<u8, Vec<(u8, LockMode)>>, older_only: bool| {
                    others.iter().filter(|(o, _)| *o != w && (!older_only || *o < w)).any(|(_, lo)| {
                        lo.iter().any(|(k, mo)| lw.iter().any(|(kw, mw)| k == kw && conflicts(*mo, *mw)))
                    })
                };
                // Under wait-die an older request also queues behind a younger waiter.
                prop_assert!(blocked_by(&holds, false) || blocked_by(&waits, !wait_die), "{w} waits for nothing");
                if wait_die {
                    prop_assert!(!blocked_by(&holds, true), "{w} waits for an older holder");
                }
                prop_assert!(m.is_waiting(*w));
            }
            for h in holds.keys() {
                prop_assert!(m.holds(*h));
            }
        }
    }
}
