//! The lock manager of two-phase commit's participants: shared and exclusive locks per
//! key, granted all at once per transaction, with deadlock avoidance by wound-wait or
//! wait-die.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// How a transaction holds a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LockMode {
    /// Many readers at once.
    Shared,
    /// One writer, no readers.
    Exclusive,
}

impl LockMode {
    fn compatible(self, other: LockMode) -> bool {
        self == LockMode::Shared && other == LockMode::Shared
    }
}

/// What a transaction that would wait for a younger one's lock does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DeadlockPolicy {
    /// An older transaction *wounds* the younger holders in its way (they abort, unless
    /// they can no longer: a prepared transaction is only ever aborted by its coordinator)
    /// and waits; a younger one waits for older holders. Spanner's choice.
    #[default]
    WoundWait,
    /// An older transaction waits for younger holders; a younger one that meets an older
    /// holder *dies* (aborts at once, to be retried with its original age).
    WaitDie,
}

/// The answer to [`LockManager::request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acquire<T> {
    /// Every lock asked for is held.
    Granted,
    /// The request waits in line; these younger holders are in its way (wound-wait's
    /// victims; always empty under wait-die).
    Wait {
        /// The holders to wound.
        wound: Vec<T>,
    },
    /// Wait-die: an older transaction holds a lock asked for; the requester aborts.
    Die,
    /// A limit was reached (keys or waiting transactions); nothing was granted.
    Busy,
}

/// What a [`LockManager::release`] let through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Released<T> {
    /// Waiting transactions now granted every lock they asked for, oldest first.
    pub granted: Vec<T>,
    /// Wait-die only: waiting transactions that would now wait for an older one, removed
    /// from the line; they abort.
    pub died: Vec<T>,
}

/// Locks per key for transactions of type `T`, whose order is their age (smaller is older,
/// and older wins).
///
/// A transaction asks for all its locks in one [`LockManager::request`]: granted together,
/// or the request waits in line, and later [`LockManager::release`]s grant it when nothing
/// in its way remains. Waiting requests are granted oldest first, and a younger request is
/// not granted a lock an older waiting one wants, so the oldest transaction is never
/// starved (under wait-die, such a younger request dies). Limits: at most `keys_max` keys locked and `waiting_max` requests waiting.
#[derive(Clone, Debug)]
pub struct LockManager<K, T> {
    policy: DeadlockPolicy,
    keys_max: usize,
    waiting_max: usize,
    /// Who holds each locked key, and how.
    held: BTreeMap<K, (LockMode, BTreeSet<T>)>,
    /// What each holder holds.
    holds: BTreeMap<T, Vec<(K, LockMode)>>,
    /// Waiting requests, oldest first.
    waiting: BTreeMap<T, Vec<(K, LockMode)>>,
}

impl<K: Ord + Clone + fmt::Debug, T: Ord + Copy + fmt::Debug> LockManager<K, T> {
    /// An empty lock table.
    #[must_use]
    pub fn new(policy: DeadlockPolicy, keys_max: usize, waiting_max: usize) -> Self {
        LockManager {
            policy,
            keys_max,
            waiting_max,
            held: BTreeMap::new(),
            holds: BTreeMap::new(),
            waiting: BTreeMap::new(),
        }
    }

    /// The holders in the way of `txn` taking `locks` (not `txn` itself).
    fn blockers(&self, txn: T, locks: &[(K, LockMode)]) -> BTreeSet<T> {
        let mut out = BTreeSet::new();
        for (key, mode) in locks {
            if let Some((held_mode, holders)) = self.held.get(key)
                && !mode.compatible(*held_mode)
            {
                out.extend(holders.iter().filter(|&&h| h != txn));
            }
        }
        out
    }

    /// Whether an older waiting request wants a key of `locks` in a conflicting mode.
    fn older_waiter_wants(&self, txn: T, locks: &[(K, LockMode)]) -> bool {
        self.waiting.range(..txn).any(|(_, theirs)| {
            theirs.iter().any(|(k, m)| {
                locks
                    .iter()
                    .any(|(key, mode)| key == k && !mode.compatible(*m))
            })
        })
    }

    /// Whether a younger waiting request wants a key of `locks` in a conflicting mode.
    fn younger_waiter_wants(&self, txn: T, locks: &[(K, LockMode)]) -> bool {
        use std::ops::Bound;
        self.waiting
            .range((Bound::Excluded(txn), Bound::Unbounded))
            .any(|(_, theirs)| {
                theirs.iter().any(|(k, m)| {
                    locks
                        .iter()
                        .any(|(key, mode)| key == k && !mode.compatible(*m))
                })
            })
    }

    /// Asks for every lock of `locks` for `txn`.
    pub fn request(&mut self, txn: T, locks: Vec<(K, LockMode)>) -> Acquire<T> {
        let blockers = self.blockers(txn, &locks);
        let behind_older = self.older_waiter_wants(txn, &locks);
        // Under wait-die an older request queues behind a younger waiter rather than take
        // a lock ahead of it, which would leave the younger one waiting for an older one.
        let before_younger =
            self.policy == DeadlockPolicy::WaitDie && self.younger_waiter_wants(txn, &locks);
        if blockers.is_empty() && !behind_older && !before_younger {
            let new_keys = locks
                .iter()
                .filter(|(k, _)| !self.held.contains_key(k))
                .count();
            if self.held.len() + new_keys > self.keys_max {
                return Acquire::Busy;
            }
            self.grant(txn, locks);
            return Acquire::Granted;
        }
        let wound = match self.policy {
            DeadlockPolicy::WoundWait => blockers.into_iter().filter(|&b| b > txn).collect(),
            DeadlockPolicy::WaitDie => {
                // Waiting behind an older waiter is waiting for an older transaction too:
                // wait-die lets only older transactions wait for younger ones, which is
                // what keeps its waits free of cycles.
                if behind_older || blockers.iter().any(|&b| b < txn) {
                    return Acquire::Die;
                }
                Vec::new()
            }
        };
        if !self.waiting.contains_key(&txn) && self.waiting.len() >= self.waiting_max {
            return Acquire::Busy;
        }
        self.waiting.insert(txn, locks);
        Acquire::Wait { wound }
    }

    /// Grants `locks` to `txn` without checking (a participant restoring the locks of its
    /// prepared transactions after a restart: they were held together before).
    pub fn grant(&mut self, txn: T, locks: Vec<(K, LockMode)>) {
        for (key, mode) in &locks {
            let entry = self
                .held
                .entry(key.clone())
                .or_insert((*mode, BTreeSet::new()));
            if *mode == LockMode::Exclusive {
                entry.0 = LockMode::Exclusive;
            }
            entry.1.insert(txn);
        }
        self.holds.entry(txn).or_default().extend(locks);
        self.waiting.remove(&txn);
    }

    /// Releases everything `txn` holds and withdraws its waiting request; returns the
    /// waiting transactions granted as a result, oldest first, and (under wait-die) those
    /// that must die because they would now wait for an older transaction.
    pub fn release(&mut self, txn: T) -> Released<T> {
        self.waiting.remove(&txn);
        for (key, _) in self.holds.remove(&txn).unwrap_or_default() {
            if let Some((mode, holders)) = self.held.get_mut(&key) {
                holders.remove(&txn);
                if holders.is_empty() {
                    self.held.remove(&key);
                } else if *mode == LockMode::Exclusive {
                    // Only the remaining holders' modes count.
                    *mode = LockMode::Shared;
                }
            }
        }
        let mut released = Released {
            granted: Vec::new(),
            died: Vec::new(),
        };
        let waiting: Vec<T> = self.waiting.keys().copied().collect();
        for w in waiting {
            let locks = self.waiting[&w].clone();
            let blockers = self.blockers(w, &locks);
            let behind_older = self.older_waiter_wants(w, &locks);
            if blockers.is_empty() && !behind_older {
                let new_keys = locks
                    .iter()
                    .filter(|(k, _)| !self.held.contains_key(k))
                    .count();
                if self.held.len() + new_keys <= self.keys_max {
                    self.grant(w, locks);
                    released.granted.push(w);
                }
            } else if self.policy == DeadlockPolicy::WaitDie
                && (behind_older || blockers.iter().any(|&b| b < w))
            {
                // An older transaction was granted ahead of it: under wait-die it may not
                // wait for it.
                self.waiting.remove(&w);
                released.died.push(w);
            }
        }
        released
    }

    /// Whether `txn` holds any lock.
    #[must_use]
    pub fn holds(&self, txn: T) -> bool {
        self.holds.contains_key(&txn)
    }

    /// The locks `txn` holds.
    #[must_use]
    pub fn held_by(&self, txn: T) -> &[(K, LockMode)] {
        self.holds.get(&txn).map_or(&[], Vec::as_slice)
    }

    /// Whether `txn` waits for locks.
    #[must_use]
    pub fn is_waiting(&self, txn: T) -> bool {
        self.waiting.contains_key(&txn)
    }

    /// How many keys are locked.
    #[must_use]
    pub fn keys_locked(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LockMode::{Exclusive, Shared};

    #[test]
    fn shared_locks_share_and_exclusive_ones_do_not() {
        let mut m: LockManager<u64, u64> = LockManager::new(DeadlockPolicy::WoundWait, 16, 16);
        assert_eq!(m.request(1, vec![(7, Shared)]), Acquire::Granted);
        assert_eq!(m.request(2, vec![(7, Shared)]), Acquire::Granted);
        // 3 is younger than both holders: it waits, wounding nobody.
        assert_eq!(
            m.request(3, vec![(7, Exclusive)]),
            Acquire::Wait { wound: vec![] }
        );
        assert!(m.release(1).granted.is_empty());
        assert_eq!(m.release(2).granted, vec![3]);
        assert_eq!(m.held_by(3), &[(7, Exclusive)]);
    }

    #[test]
    fn wound_wait_wounds_younger_holders_and_wait_die_kills_younger_requesters() {
        let mut m: LockManager<u64, u64> = LockManager::new(DeadlockPolicy::WoundWait, 16, 16);
        assert_eq!(m.request(5, vec![(1, Exclusive)]), Acquire::Granted);
        assert_eq!(
            m.request(2, vec![(1, Shared)]),
            Acquire::Wait { wound: vec![5] }
        );
        assert_eq!(
            m.request(9, vec![(1, Shared)]),
            Acquire::Wait { wound: vec![] }
        );
        // The older waiter goes first, the younger one right after it (both shared).
        assert_eq!(m.release(5).granted, vec![2, 9]);

        let mut m: LockManager<u64, u64> = LockManager::new(DeadlockPolicy::WaitDie, 16, 16);
        assert_eq!(m.request(5, vec![(1, Exclusive)]), Acquire::Granted);
        assert_eq!(m.request(9, vec![(1, Exclusive)]), Acquire::Die);
        assert_eq!(
            m.request(2, vec![(1, Exclusive)]),
            Acquire::Wait { wound: vec![] }
        );
        // Behind the older waiter 2, a younger request dies.
        assert_eq!(m.request(7, vec![(1, Shared)]), Acquire::Die);
        // 6 waits for 9 (older waits for younger) until 9 releases and 2, older than 6,
        // takes the lock first: then 6 would wait for an older one, and dies.
        let mut m: LockManager<u64, u64> = LockManager::new(DeadlockPolicy::WaitDie, 16, 16);
        assert_eq!(m.request(9, vec![(1, Exclusive)]), Acquire::Granted);
        assert_eq!(
            m.request(6, vec![(1, Exclusive)]),
            Acquire::Wait { wound: vec![] }
        );
        assert_eq!(
            m.request(2, vec![(1, Exclusive)]),
            Acquire::Wait { wound: vec![] }
        );
        let released = m.release(9);
        assert_eq!((released.granted, released.died), (vec![2], vec![6]));
    }

    #[test]
    fn an_older_waiter_is_not_overtaken_and_limits_hold() {
        let mut m: LockManager<u64, u64> = LockManager::new(DeadlockPolicy::WoundWait, 2, 1);
        assert_eq!(m.request(3, vec![(1, Shared)]), Acquire::Granted);
        assert_eq!(
            m.request(2, vec![(1, Exclusive)]),
            Acquire::Wait { wound: vec![3] }
        );
        // A younger shared request would be compatible with 3 but not with waiting 2.
        assert_eq!(
            m.request(4, vec![(1, Shared)]),
            Acquire::Busy,
            "one waiter at most"
        );
        assert_eq!(
            m.request(5, vec![(8, Exclusive), (9, Exclusive)]),
            Acquire::Busy,
            "two keys at most"
        );
        assert_eq!(m.release(3).granted, vec![2]);
    }
}
