//! A checker of watch streams: the six guarantees etcd's watches give (and its robustness
//! tests check), over every watcher's stream, across disconnections and resumptions.
//!
//! The checker learns the truth from the replicas: each time a replica applies a
//! revision, the driver records what that revision changed
//! ([`WatchChecker::applied`]); every replica must report the same changes for the same
//! revision. Each watcher is one logical stream, from the revision it first asked for,
//! kept across reconnections: the driver reports what it was delivered
//! ([`WatchChecker::events`], [`WatchChecker::progress`], [`WatchChecker::compacted`]) and
//! resumes it from [`WatchChecker::resume_from`], on any replica. The guarantees:
//!
//! 1. **Ordered**: a stream's revisions never go down.
//! 2. **Unique**: no revision's events come twice.
//! 3. **Atomic**: a batch holds all of each of its revisions' matching changes.
//! 4. **Reliable**: no matching change between the stream's next revision and the last
//!    revision of a batch is missing.
//! 5. **Resumable**: a stream started (or resumed) at revision `r` gets every matching
//!    change from `r` on, `r` included.
//! 6. **Progress**: a progress notification at `p` comes only once every matching
//!    change up to `p` has been delivered.
//!
//! A compacted error must carry a compacted revision at or above the revision the stream
//! needed next (it is a promise that the gap is real, not a silent one).

use std::collections::BTreeMap;
use std::fmt;

/// One key's change in a revision: its new value, or `None` for a delete.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchChange {
    /// The key.
    pub key: Vec<u8>,
    /// The new value, `None` if deleted.
    pub value: Option<Vec<u8>>,
}

/// Which keys a stream follows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WatchFilter {
    /// One key.
    Key(Vec<u8>),
    /// Every key with this prefix.
    Prefix(Vec<u8>),
}

impl WatchFilter {
    fn matches(&self, key: &[u8]) -> bool {
        match self {
            WatchFilter::Key(k) => k == key,
            WatchFilter::Prefix(p) => key.starts_with(p),
        }
    }
}

/// A broken guarantee, with the stream and revisions involved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchViolation(pub String);

impl fmt::Display for WatchViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WatchViolation {}

#[derive(Clone, Debug)]
struct Stream {
    filter: WatchFilter,
    /// The next revision the stream must be given.
    next: u64,
    /// Ended by a compacted error.
    ended: bool,
}

/// Counts of what the checker saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchCounts {
    /// Events checked.
    pub events: u64,
    /// Batches checked.
    pub batches: u64,
    /// Progress notifications checked.
    pub progress: u64,
    /// Streams ended by a compacted error.
    pub compacted: u64,
    /// Resumptions.
    pub resumed: u64,
}

/// Checks watch streams against the revisions the replicas applied. See the module
/// documentation.
#[derive(Clone, Debug, Default)]
pub struct WatchChecker {
    truth: BTreeMap<u64, Vec<WatchChange>>,
    streams: BTreeMap<u64, Stream>,
    counts: WatchCounts,
}

impl WatchChecker {
    /// An empty checker.
    #[must_use]
    pub fn new() -> WatchChecker {
        WatchChecker::default()
    }

    /// What it counted.
    #[must_use]
    pub fn counts(&self) -> WatchCounts {
        self.counts
    }

    /// The highest revision any replica applied.
    #[must_use]
    pub fn revision(&self) -> u64 {
        self.truth.keys().next_back().copied().unwrap_or(0)
    }

    /// A replica applied `revision` with these changes; an error if another replica
    /// applied it with other changes.
    pub fn applied(
        &mut self,
        replica: u64,
        revision: u64,
        changes: Vec<WatchChange>,
    ) -> Result<(), WatchViolation> {
        match self.truth.get(&revision) {
            Some(known) if *known != changes => Err(WatchViolation(format!(
                "replica {replica} applied revision {revision} as {changes:?}, another as {known:?}"
            ))),
            Some(_) => Ok(()),
            None => {
                self.truth.insert(revision, changes);
                Ok(())
            }
        }
    }

    /// Starts stream `id` on `filter` from `start` (inclusive).
    pub fn start(&mut self, id: u64, filter: WatchFilter, start: u64) {
        self.streams.insert(
            id,
            Stream {
                filter,
                next: start,
                ended: false,
            },
        );
    }

    /// Where stream `id` resumes (one past the last revision it was promised), or `None`
    /// if it is unknown or ended.
    pub fn resume_from(&mut self, id: u64) -> Option<u64> {
        let stream = self.streams.get(&id).filter(|s| !s.ended)?;
        self.counts.resumed += 1;
        Some(stream.next)
    }

    /// The matching changes of `revision`, or an error if no replica reported it.
    fn expected(
        &self,
        id: u64,
        filter: &WatchFilter,
        revision: u64,
    ) -> Result<Vec<WatchChange>, WatchViolation> {
        let changes = self.truth.get(&revision).ok_or_else(|| {
            WatchViolation(format!(
                "stream {id} needs revision {revision}, which no replica reported applying"
            ))
        })?;
        Ok(changes
            .iter()
            .filter(|c| filter.matches(&c.key))
            .cloned()
            .collect())
    }

    fn stream(&self, id: u64) -> Result<Stream, WatchViolation> {
        match self.streams.get(&id) {
            Some(s) if !s.ended => Ok(s.clone()),
            Some(_) => Err(WatchViolation(format!(
                "stream {id} was delivered more after its compacted error"
            ))),
            None => Err(WatchViolation(format!("stream {id} was never started"))),
        }
    }

    /// Stream `id` was delivered a batch of `(revision, change)`s.
    pub fn events(&mut self, id: u64, batch: &[(u64, WatchChange)]) -> Result<(), WatchViolation> {
        let mut stream = self.stream(id)?;
        let Some(&(last, _)) = batch.last() else {
            return Ok(());
        };
        let mut at = 0;
        for w in batch.windows(2) {
            if w[1].0 < w[0].0 {
                return Err(WatchViolation(format!(
                    "stream {id}: revision {} after {} in one batch (ordered)",
                    w[1].0, w[0].0
                )));
            }
        }
        if batch[0].0 < stream.next {
            return Err(WatchViolation(format!(
                "stream {id}: revision {} delivered when {} was next (ordered, unique)",
                batch[0].0, stream.next
            )));
        }
        for revision in stream.next..=last {
            let expected = self.expected(id, &stream.filter, revision)?;
            let got: Vec<WatchChange> = batch[at..]
                .iter()
                .take_while(|(r, _)| *r == revision)
                .map(|(_, c)| c.clone())
                .collect();
            at += got.len();
            if got != expected {
                let what = if got.is_empty() {
                    "missing (reliable)"
                } else if expected.is_empty() {
                    "not a matching change of it"
                } else {
                    "not all its changes, or not those (atomic)"
                };
                return Err(WatchViolation(format!(
                    "stream {id}: revision {revision} delivered as {got:?}, expected {expected:?}: {what}"
                )));
            }
        }
        stream.next = last + 1;
        self.counts.events += batch.len() as u64;
        self.counts.batches += 1;
        self.streams.insert(id, stream);
        Ok(())
    }

    /// Stream `id` was told every matching change up to `revision` was delivered.
    pub fn progress(&mut self, id: u64, revision: u64) -> Result<(), WatchViolation> {
        let mut stream = self.stream(id)?;
        for r in stream.next..=revision {
            let expected = self.expected(id, &stream.filter, r)?;
            if !expected.is_empty() {
                return Err(WatchViolation(format!(
                    "stream {id}: progress at {revision} before revision {r}'s {expected:?} was delivered"
                )));
            }
        }
        stream.next = stream.next.max(revision + 1);
        self.counts.progress += 1;
        self.streams.insert(id, stream);
        Ok(())
    }

    /// Stream `id` was cancelled as compacted up to `compacted`: it ends (a client would
    /// read the state again and start a new stream).
    pub fn compacted(&mut self, id: u64, compacted: u64) -> Result<(), WatchViolation> {
        let mut stream = self.stream(id)?;
        if compacted < stream.next {
            return Err(WatchViolation(format!(
                "stream {id}: a compacted error at {compacted} while revision {} is what it needs",
                stream.next
            )));
        }
        stream.ended = true;
        self.counts.compacted += 1;
        self.streams.insert(id, stream);
        Ok(())
    }

    /// Stream `id`, not ended, has been given everything up to `revision` (a replica at
    /// `revision` has nothing more for it): an error if a matching change is missing.
    pub fn caught_up(&mut self, id: u64, revision: u64) -> Result<(), WatchViolation> {
        let stream = self.stream(id)?;
        for r in stream.next..=revision {
            let expected = self.expected(id, &stream.filter, r)?;
            if !expected.is_empty() {
                return Err(WatchViolation(format!(
                    "stream {id}: its replica, at revision {revision}, has nothing more for it, but revision {r}'s {expected:?} was never delivered (reliable)"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> WatchChange {
        WatchChange {
            key: key.into(),
            value: Some(value.into()),
        }
    }

    fn checker() -> WatchChecker {
        let mut c = WatchChecker::new();
        c.applied(1, 1, vec![put("a", "1"), put("b", "1")]).unwrap();
        c.applied(1, 2, vec![put("b", "2")]).unwrap();
        c.applied(2, 1, vec![put("a", "1"), put("b", "1")]).unwrap();
        c.applied(1, 3, vec![put("a", "3")]).unwrap();
        c.start(7, WatchFilter::Prefix(b"a".to_vec()), 1);
        c
    }

    #[test]
    fn a_correct_stream_across_a_resumption_passes() {
        let mut c = checker();
        c.events(7, &[(1, put("a", "1"))]).unwrap();
        c.progress(7, 2).unwrap();
        assert_eq!(c.resume_from(7), Some(3));
        c.events(7, &[(3, put("a", "3"))]).unwrap();
        c.caught_up(7, 3).unwrap();
        c.compacted(7, 5).unwrap();
        assert_eq!(c.resume_from(7), None);
    }

    #[test]
    fn each_broken_guarantee_is_caught() {
        // Replicas disagree.
        assert!(checker().applied(3, 2, vec![put("b", "9")]).is_err());
        // A skipped event (reliable), in a batch or behind a progress notification.
        assert!(checker().events(7, &[(3, put("a", "3"))]).is_err());
        assert!(checker().progress(7, 3).is_err());
        let mut c = checker();
        c.events(7, &[(1, put("a", "1"))]).unwrap();
        // A duplicate (unique), a step back (ordered).
        assert!(c.clone().events(7, &[(1, put("a", "1"))]).is_err());
        assert!(
            c.clone()
                .events(7, &[(3, put("a", "3")), (1, put("a", "1"))])
                .is_err()
        );
        // A revision split (atomic): b's change of revision 1 without a's.
        let mut all = checker();
        all.start(8, WatchFilter::Prefix(Vec::new()), 1);
        assert!(all.events(8, &[(1, put("a", "1"))]).is_err());
        // A compacted error that hides a gap it could have filled.
        let mut c = checker();
        c.events(7, &[(1, put("a", "1"))]).unwrap();
        assert!(c.compacted(7, 1).is_err());
        // A stream left without an event its replica had.
        assert!(checker().caught_up(7, 3).is_err());
    }
}
