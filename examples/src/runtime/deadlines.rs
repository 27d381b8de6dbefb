//! One deadline per key (a client connection's), fired once, in order, never early, at a
//! cost that does not grow with how often the deadlines move.
//!
//! The client loop's connections each have at most one deadline at a time (the earliest of
//! their requests' timeouts, a TLS handshake's, a close's), and it moves with nearly every
//! request: a request answered moves it later, a new one sets it when none was set. A heap
//! with an entry per move grows with requests per second times the timeout (hundreds of
//! thousands of entries under load), each popped in turn long after it stopped mattering.
//! [`Deadlines`] keeps, per key, the deadline wanted and the entry in its heap: a deadline
//! moved later leaves the entry where it is and moves it on only when it comes to the top
//! (once per key per timeout, not once per request); a deadline moved earlier adds an entry
//! and leaves the old one to be dropped when it comes to the top. Entries left that way are
//! bounded: past [`COMPACT_SLACK`] more than two per key, the heap is rebuilt from the keys.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// Stale heap entries tolerated beyond two per key before the heap is rebuilt.
pub const COMPACT_SLACK: usize = 64;

/// A key's deadline: the one wanted, and the time of its entry in the heap (never later).
#[derive(Clone, Copy, Debug)]
struct Timer<T> {
    due: T,
    armed: T,
}

/// Each key's one deadline; see the module's documentation.
#[derive(Debug)]
pub struct Deadlines<K, T> {
    heap: BinaryHeap<Reverse<(T, K)>>,
    keys: BTreeMap<K, Timer<T>>,
}

impl<K: Ord + Copy, T: Ord + Copy> Default for Deadlines<K, T> {
    fn default() -> Self {
        Deadlines {
            heap: BinaryHeap::new(),
            keys: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Copy, T: Ord + Copy> Deadlines<K, T> {
    /// Sets `key`'s deadline to `due`, replacing the one before (`None`: it has none).
    pub fn set(&mut self, key: K, due: Option<T>) {
        let Some(due) = due else {
            self.keys.remove(&key);
            self.bound();
            return;
        };
        match self.keys.get_mut(&key) {
            Some(timer) => {
                timer.due = due;
                if due < timer.armed {
                    timer.armed = due;
                    self.heap.push(Reverse((due, key)));
                }
            }
            None => {
                self.keys.insert(key, Timer { due, armed: due });
                self.heap.push(Reverse((due, key)));
            }
        }
        self.bound();
    }

    /// `key`'s deadline, if it has one.
    #[must_use]
    pub fn get(&self, key: K) -> Option<T> {
        self.keys.get(&key).map(|t| t.due)
    }

    /// The earliest deadline.
    pub fn earliest(&mut self) -> Option<T> {
        self.settle_top();
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// A key whose deadline is at or before `now`, the earliest first; its deadline is
    /// cleared (it fires once).
    pub fn pop_due(&mut self, now: T) -> Option<K> {
        self.settle_top();
        let &Reverse((t, key)) = self.heap.peek()?;
        if t > now {
            return None;
        }
        self.heap.pop();
        self.keys.remove(&key);
        self.bound();
        Some(key)
    }

    /// Keys with a deadline.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key has a deadline.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Entries in the heap, stale ones included (at most two per key and
    /// [`COMPACT_SLACK`]).
    #[must_use]
    pub fn entries(&self) -> usize {
        self.heap.len()
    }

    /// Drops stale entries from the top of the heap and moves a key whose deadline moved
    /// later on to it, until the top is a key's deadline as wanted (or the heap is empty).
    fn settle_top(&mut self) {
        while let Some(&Reverse((t, key))) = self.heap.peek() {
            match self.keys.get_mut(&key) {
                Some(timer) if timer.armed == t => {
                    if timer.due == t {
                        return;
                    }
                    timer.armed = timer.due;
                    let due = timer.due;
                    self.heap.pop();
                    self.heap.push(Reverse((due, key)));
                }
                // The key's deadline was cleared, or moved earlier (its entry is elsewhere).
                _ => {
                    self.heap.pop();
                }
            }
        }
    }

    /// Rebuilds the heap if it holds more than two entries per key and
    /// [`COMPACT_SLACK`].
    fn bound(&mut self) {
        if self.heap.len() > 2 * self.keys.len() + COMPACT_SLACK {
            self.compact();
        }
    }

    /// Rebuilds the heap with one entry per key, at its deadline.
    fn compact(&mut self) {
        for timer in self.keys.values_mut() {
            timer.armed = timer.due;
        }
        self.heap = self
            .keys
            .iter()
            .map(|(&key, timer)| Reverse((timer.due, key)))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_node::Rng;

    /// Pops every key due at `now`, in the order fired.
    fn fire(d: &mut Deadlines<u64, u64>, now: u64) -> Vec<u64> {
        std::iter::from_fn(|| d.pop_due(now)).collect()
    }

    #[test]
    fn a_deadline_moved_later_fires_at_the_later_time_only() {
        let mut d = Deadlines::default();
        d.set(1, Some(10));
        d.set(1, Some(30));
        assert_eq!(d.earliest(), Some(30));
        assert_eq!(fire(&mut d, 29), Vec::<u64>::new());
        assert_eq!(fire(&mut d, 30), vec![1]);
        assert_eq!(fire(&mut d, 100), Vec::<u64>::new());
        assert!(d.is_empty());
    }

    #[test]
    fn a_deadline_moved_earlier_fires_at_the_earlier_time_once() {
        let mut d = Deadlines::default();
        d.set(1, Some(30));
        d.set(1, Some(10));
        assert_eq!(d.earliest(), Some(10));
        assert_eq!(fire(&mut d, 10), vec![1]);
        assert_eq!(fire(&mut d, 30), Vec::<u64>::new());
        assert_eq!(d.earliest(), None);
    }

    #[test]
    fn a_cleared_deadline_never_fires() {
        let mut d = Deadlines::default();
        d.set(1, Some(10));
        d.set(2, Some(20));
        d.set(1, None);
        assert_eq!(d.get(1), None);
        assert_eq!(fire(&mut d, 100), vec![2]);
    }

    #[test]
    fn keys_fire_in_the_order_of_their_deadlines() {
        let mut d = Deadlines::default();
        d.set(3, Some(5));
        d.set(1, Some(50));
        d.set(2, Some(7));
        d.set(3, Some(60));
        assert_eq!(fire(&mut d, 100), vec![2, 1, 3]);
    }

    /// Random sets, clears and advances of the time against a plain map of the deadlines
    /// wanted: every deadline fires once, at the first advance that reaches it, in order
    /// of time, never before; and the heap stays within its bound.
    #[test]
    fn fires_every_deadline_once_in_order_never_early_as_a_plain_map_would() {
        for seed in 0..200 {
            let mut rng = Rng::new(seed);
            let mut d: Deadlines<u64, u64> = Deadlines::default();
            let mut wanted: BTreeMap<u64, u64> = BTreeMap::new();
            let mut now = 0;
            for _ in 0..2_000 {
                let key = rng.below(16);
                match rng.below(10) {
                    0..=5 => {
                        let t = now + rng.between(1, 100);
                        d.set(key, Some(t));
                        wanted.insert(key, t);
                    }
                    6 => {
                        d.set(key, None);
                        wanted.remove(&key);
                    }
                    _ => {
                        now += rng.below(40);
                        let mut expected: Vec<(u64, u64)> = wanted
                            .iter()
                            .filter(|&(_, &t)| t <= now)
                            .map(|(&k, &t)| (t, k))
                            .collect();
                        expected.sort_unstable();
                        let fired = fire(&mut d, now);
                        let order: Vec<u64> = expected.iter().map(|&(_, k)| k).collect();
                        assert_eq!(fired, order, "seed {seed} at {now}");
                        for k in fired {
                            wanted.remove(&k);
                        }
                    }
                }
                assert_eq!(d.earliest(), wanted.values().min().copied(), "seed {seed}");
                assert_eq!(d.len(), wanted.len());
                assert!(d.entries() <= 2 * d.len() + COMPACT_SLACK);
            }
        }
    }

    /// A key whose deadline moves later with every request (each answered, the next
    /// sent) keeps one entry in the heap, however many times it moves.
    #[test]
    fn a_deadline_moved_later_over_and_over_keeps_one_entry() {
        let mut d = Deadlines::default();
        for request in 0..100_000u64 {
            d.set(7, Some(1_000 + request));
        }
        assert_eq!(d.entries(), 1);
        assert_eq!(d.earliest(), Some(100_999));
        assert_eq!(d.entries(), 1);
    }
}
