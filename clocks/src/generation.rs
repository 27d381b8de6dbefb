//! Generation clocks: [`Generation`], a durable, monotonically increasing epoch.
//!
//! A generation (Raft's *term*, Zab's *epoch*, Kafka's controller epoch, a fencing token)
//! numbers the reigns of leaders. Every request carries the sender's generation; a receiver
//! that sees a lower one rejects the request, and one that sees a higher one learns that it
//! is out of date (a leader steps down). A generation must be persisted before it is used,
//! so that a restarted node never reuses one: see
//! [`GenerationStore`](crate::GenerationStore), the durable store.

use core::fmt;

use serde::{Deserialize, Serialize};

/// A generation number (an epoch, a term).
///
/// ```
/// use synod_clocks::{Generation, Incoming};
///
/// let mine = Generation::new(5);
/// assert_eq!(mine.classify(Generation::new(4)), Incoming::Stale);   // reject the request
/// assert_eq!(mine.classify(Generation::new(5)), Incoming::Current); // accept it
/// assert_eq!(mine.classify(Generation::new(6)), Incoming::Newer);   // step down, adopt 6
///
/// let mut term = Generation::ZERO;
/// assert_eq!(term.observe(Generation::new(3)), Incoming::Newer);
/// assert_eq!(term, Generation::new(3));
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Generation(u64);

/// How an incoming generation compares with the local one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Incoming {
    /// Lower than ours: the sender is out of date; reject its request.
    Stale,
    /// Equal to ours.
    Current,
    /// Higher than ours: we are out of date; adopt it (persisting it first) and step down.
    Newer,
}

impl Generation {
    /// The generation before the first one.
    pub const ZERO: Generation = Generation(0);

    /// The generation with this number.
    pub const fn new(value: u64) -> Self {
        Generation(value)
    }

    /// The number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The next generation, or `None` at `u64::MAX`.
    pub const fn next(self) -> Option<Generation> {
        match self.0.checked_add(1) {
            Some(v) => Some(Generation(v)),
            None => None,
        }
    }

    /// How `incoming` compares with `self` (the local generation).
    pub fn classify(self, incoming: Generation) -> Incoming {
        match incoming.cmp(&self) {
            core::cmp::Ordering::Less => Incoming::Stale,
            core::cmp::Ordering::Equal => Incoming::Current,
            core::cmp::Ordering::Greater => Incoming::Newer,
        }
    }

    /// Classifies `incoming` and, if it is newer, adopts it. The caller must persist the
    /// new value before acting in it (a vote, a write).
    pub fn observe(&mut self, incoming: Generation) -> Incoming {
        let order = self.classify(incoming);
        if order == Incoming::Newer {
            *self = incoming;
        }
        order
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "g{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stops_at_the_end() {
        assert_eq!(Generation::new(1).next(), Some(Generation::new(2)));
        assert_eq!(Generation::new(u64::MAX).next(), None);
    }

    #[test]
    fn observe_adopts_only_higher() {
        let mut g = Generation::new(5);
        assert_eq!(g.observe(Generation::new(2)), Incoming::Stale);
        assert_eq!(g, Generation::new(5));
        assert_eq!(g.observe(Generation::new(5)), Incoming::Current);
        assert_eq!(g.observe(Generation::new(9)), Incoming::Newer);
        assert_eq!(g, Generation::new(9));
    }
}
