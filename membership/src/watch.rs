//! State Watch: clients told of every change to a key or a prefix, in revision order,
//! resumable from where they stopped.
//!
//! A [`WatchHub`] sits beside a replicated store's state machine and is fed, in revision
//! order, the changes each applied revision made ([`WatchHub::apply`]). Watchers register
//! on a key or a prefix ([`Filter`]) from a start revision and take their
//! [`Notification`]s with [`WatchHub::poll`]. The hub does no I/O and reads no clock: the
//! driver polls the watchers [`WatchHub::ready`] names whenever it can deliver, and hands
//! in the time for periodic progress notifications ([`WatchHub::wake`]).
//!
//! # Guarantees
//!
//! These are etcd's, and every watcher's stream keeps them:
//!
//! 1. **Ordered**: events come in increasing revision order (within a revision, in the
//!    order the revision made them).
//! 2. **Unique**: no event is delivered twice.
//! 3. **Atomic**: a revision's matching events come in one [`Notification::Events`],
//!    never split over two.
//! 4. **Reliable**: no matching event is skipped. When the hub cannot deliver one (the
//!    start revision, or the next revision of a watcher that fell behind, is no longer in
//!    its history), the watcher is cancelled with [`WatchError::Compacted`], which carries
//!    the compacted revision; it never skips silently.
//! 5. **Resumable**: a watcher started at revision `r` gets every matching event from `r`
//!    (inclusive) on, so a client that saw everything up to `last` resumes, on this hub or
//!    on another replica's, from `last + 1`.
//! 6. **Progress**: a [`Notification::Progress`] at revision `p` promises that every
//!    matching event up to `p` has been delivered (so a client resuming after it may start
//!    from `p + 1`); sent when asked ([`WatchHub::request_progress`]) and every
//!    [`WatchConfig::progress_interval_ms`] once the watcher has nothing else to deliver.
//!
//! # Limits and slow watchers
//!
//! Every bound is a field of [`WatchConfig`]: watchers in all, watchers per owner (a
//! driver's connection), events buffered per watcher, and the history kept, in revisions
//! and in bytes. A watcher whose buffer is full stops taking events as they are applied
//! and *falls behind*: once the driver has drained its buffer, it catches up from the
//! history, a buffer at a time. If the revision it needs next has meanwhile left the
//! history, it is cancelled with [`WatchError::Compacted`]. A revision is never split to
//! fit a buffer: an empty buffer takes a whole revision, however many events it holds.
//!
//! When the store's state jumps forward by more than a revision (a replica installing a
//! snapshot from its leader), the driver calls [`WatchHub::reset`]: the history is
//! dropped, and watchers that needed the revisions skipped get the error.
//!
//! # Example
//!
//! ```
//! use synod_membership::watch::{Event, Filter, Notification, WatchConfig, WatchError, WatchHub};
//!
//! // A store at revision 0; the hub keeps history from there.
//! let mut hub = WatchHub::new(WatchConfig::default(), 0);
//! let connection = 1;
//! let w = hub.watch(connection, Filter::Prefix("app/".into()), Some(1))?;
//!
//! // Revision 1 sets app/a and other/b; revision 2 deletes app/a.
//! hub.apply(1, vec![Event::put(1, "app/a", "x", 1, 1), Event::put(1, "other/b", "y", 1, 1)])?;
//! hub.apply(2, vec![Event::delete(2, "app/a")])?;
//!
//! assert_eq!(hub.ready(), vec![w]);
//! let Some(Notification::Events(events)) = hub.poll(w) else { panic!() };
//! assert_eq!(events.iter().map(|e| e.revision).collect::<Vec<_>>(), [1, 2]);
//! assert!(events[1].value.is_none()); // a delete
//!
//! // Asked for, a progress notification says everything up to revision 2 was delivered.
//! hub.request_progress(w);
//! assert_eq!(hub.poll(w), Some(Notification::Progress(2)));
//!
//! // A client that saw revision 2 resumes from 3, here or on another replica's hub.
//! hub.cancel(w);
//! let again = hub.watch(connection, Filter::Prefix("app/".into()), Some(3))?;
//! assert_eq!(hub.poll(again), None);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use synod_node::Time;

/// A store's revision: how many changing entries it has applied.
pub type Revision = u64;

/// One key changed by one revision.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    /// The revision that made the change (the key's mod revision).
    pub revision: Revision,
    /// The key.
    pub key: Bytes,
    /// Its new value; `None` if the revision deleted it.
    pub value: Option<Bytes>,
    /// The revision that created the key (0 for a delete).
    pub create_revision: Revision,
    /// Writes to the key since it was created, this one included (0 for a delete).
    pub version: u64,
}

impl Event {
    /// `key` set to `value` at `revision`.
    pub fn put(
        revision: Revision,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        create_revision: Revision,
        version: u64,
    ) -> Event {
        Event {
            revision,
            key: key.into(),
            value: Some(value.into()),
            create_revision,
            version,
        }
    }

    /// `key` deleted at `revision`.
    pub fn delete(revision: Revision, key: impl Into<Bytes>) -> Event {
        Event {
            revision,
            key: key.into(),
            value: None,
            create_revision: 0,
            version: 0,
        }
    }

    /// Bytes the event counts for against [`WatchConfig::history_bytes_max`].
    fn bytes(&self) -> usize {
        EVENT_OVERHEAD_BYTES + self.key.len() + self.value.as_ref().map_or(0, Bytes::len)
    }
}

/// What each event counts for in the history besides its key and value.
pub const EVENT_OVERHEAD_BYTES: usize = 64;

/// Which keys a watcher follows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Filter {
    /// This key only.
    Key(Bytes),
    /// Every key that starts with these bytes (the empty prefix: every key).
    Prefix(Bytes),
}

impl Filter {
    /// Whether `key` is followed.
    #[must_use]
    pub fn matches(&self, key: &[u8]) -> bool {
        match self {
            Filter::Key(k) => k.as_ref() == key,
            Filter::Prefix(p) => key.starts_with(p),
        }
    }
}

/// A watcher's id in its hub (never reused by that hub).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatchId(pub u64);

/// Why a watcher could not be made, or was cancelled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchError {
    /// The revision the watcher needs (its start, or the next one after what it was
    /// given) is at or below `compacted`, which the history no longer holds: resume from
    /// a state read at `current` or later (etcd's `ErrCompacted`).
    Compacted {
        /// The newest revision the history no longer holds.
        compacted: Revision,
        /// The hub's revision.
        current: Revision,
    },
    /// The owner already has [`WatchConfig::watchers_per_owner_max`] watchers.
    OwnerFull {
        /// The limit.
        max: usize,
    },
    /// The hub already has [`WatchConfig::watchers_max`] watchers.
    HubFull {
        /// The limit.
        max: usize,
    },
}

impl std::fmt::Display for WatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchError::Compacted { compacted, current } => write!(
                f,
                "revisions up to {compacted} are compacted (current revision {current}); read the state again and watch from after it"
            ),
            WatchError::OwnerFull { max } => {
                write!(f, "at most {max} watchers per connection")
            }
            WatchError::HubFull { max } => write!(f, "at most {max} watchers on this node"),
        }
    }
}

impl std::error::Error for WatchError {}

/// Why [`WatchHub::apply`] or [`WatchHub::reset`] refused what it was fed (a driver's
/// mistake: the hub is unchanged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedError {
    /// Revisions must come one after another: `expected` was next.
    OutOfOrder {
        /// The revision fed.
        got: Revision,
        /// The one the hub expected.
        expected: Revision,
    },
    /// An event carried another revision than the one it was fed at.
    WrongRevision {
        /// The revision fed.
        revision: Revision,
        /// The event's.
        event: Revision,
    },
}

impl std::fmt::Display for FeedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FeedError::OutOfOrder { got, expected } => {
                write!(f, "revision {got} fed, {expected} expected")
            }
            FeedError::WrongRevision { revision, event } => {
                write!(f, "an event of revision {event} fed at revision {revision}")
            }
        }
    }
}

impl std::error::Error for FeedError {}

/// What a watcher is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notification {
    /// Matching events of one or more whole revisions, in order.
    Events(Vec<Event>),
    /// Every matching event up to this revision has been delivered.
    Progress(Revision),
    /// The watcher is gone (and [`WatchHub::poll`] forgets it after this).
    Cancelled(WatchError),
}

/// Watchers in a hub, unless configured otherwise.
pub const WATCHERS_MAX_DEFAULT: usize = 10_000;
/// Watchers per owner, unless configured otherwise.
pub const WATCHERS_PER_OWNER_MAX_DEFAULT: usize = 64;
/// Events buffered per watcher, unless configured otherwise.
pub const BUFFERED_EVENTS_MAX_DEFAULT: usize = 1_024;
/// Revisions of history kept, unless configured otherwise.
pub const HISTORY_REVISIONS_MAX_DEFAULT: usize = 10_000;
/// Bytes of history kept, unless configured otherwise.
pub const HISTORY_BYTES_MAX_DEFAULT: usize = 64 << 20;
/// Time between periodic progress notifications, unless configured otherwise.
pub const PROGRESS_INTERVAL_MS_DEFAULT: u64 = 10_000;

/// A hub's limits. Every field is at least 1 (a zero is taken as 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchConfig {
    /// Watchers in the hub.
    pub watchers_max: usize,
    /// Watchers per owner.
    pub watchers_per_owner_max: usize,
    /// Events a watcher buffers before it falls behind (a single revision with more
    /// events is still taken whole into an empty buffer).
    pub buffered_events_max: usize,
    /// Revisions the history keeps.
    pub history_revisions_max: usize,
    /// Bytes the history keeps (each event counts its key, its value and
    /// [`EVENT_OVERHEAD_BYTES`]); the newest revision is kept whatever its size.
    pub history_bytes_max: usize,
    /// Time between periodic progress notifications, in milliseconds.
    pub progress_interval_ms: u64,
}

impl Default for WatchConfig {
    fn default() -> WatchConfig {
        WatchConfig {
            watchers_max: WATCHERS_MAX_DEFAULT,
            watchers_per_owner_max: WATCHERS_PER_OWNER_MAX_DEFAULT,
            buffered_events_max: BUFFERED_EVENTS_MAX_DEFAULT,
            history_revisions_max: HISTORY_REVISIONS_MAX_DEFAULT,
            history_bytes_max: HISTORY_BYTES_MAX_DEFAULT,
            progress_interval_ms: PROGRESS_INTERVAL_MS_DEFAULT,
        }
    }
}

#[derive(Clone, Debug)]
struct Watcher {
    owner: u64,
    filter: Filter,
    /// The first revision not yet taken into `pending`.
    next: Revision,
    /// Taken, not yet delivered: whole revisions, in order.
    pending: Vec<Event>,
    /// Stopped taking events as they are applied (buffer full, or started in the past):
    /// catches up from the history once `pending` is delivered.
    behind: bool,
    progress_due: bool,
    cancelled: Option<WatchError>,
}

/// The watchers of one replica's store, fed its changes in revision order. See the
/// [module documentation](self).
#[derive(Clone, Debug)]
pub struct WatchHub {
    config: WatchConfig,
    /// The last revision fed.
    revision: Revision,
    /// The history holds the revisions after this one.
    compacted: Revision,
    /// Each revision's events, from `compacted + 1` to `revision`.
    history: VecDeque<Vec<Event>>,
    history_bytes: usize,
    watchers: BTreeMap<WatchId, Watcher>,
    next_id: u64,
    next_progress: Option<Time>,
    /// The broken variant: a watcher catching up from the history skips a revision.
    skips_on_catch_up: bool,
}

impl WatchHub {
    /// A hub for a store at `revision`, with no history (a watcher may start after
    /// `revision`, not at or before it).
    #[must_use]
    pub fn new(config: WatchConfig, revision: Revision) -> WatchHub {
        let config = WatchConfig {
            watchers_max: config.watchers_max.max(1),
            watchers_per_owner_max: config.watchers_per_owner_max.max(1),
            buffered_events_max: config.buffered_events_max.max(1),
            history_revisions_max: config.history_revisions_max.max(1),
            history_bytes_max: config.history_bytes_max.max(1),
            progress_interval_ms: config.progress_interval_ms.max(1),
        };
        WatchHub {
            config,
            revision,
            compacted: revision,
            history: VecDeque::new(),
            history_bytes: 0,
            watchers: BTreeMap::new(),
            next_id: 1,
            next_progress: None,
            skips_on_catch_up: false,
        }
    }

    /// A deliberately broken hub: a watcher that catches up from the history (it started
    /// in the past, or fell behind) skips the first revision it needs, an off-by-one
    /// that silently loses an event. Only for showing that a checker catches it.
    #[cfg(feature = "broken")]
    #[must_use]
    pub fn broken_skipping_on_catch_up(config: WatchConfig, revision: Revision) -> WatchHub {
        WatchHub {
            skips_on_catch_up: true,
            ..WatchHub::new(config, revision)
        }
    }

    /// The limits.
    #[must_use]
    pub fn config(&self) -> &WatchConfig {
        &self.config
    }

    /// The last revision fed.
    #[must_use]
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The newest revision the history no longer holds: a watcher can start after it.
    #[must_use]
    pub fn compacted(&self) -> Revision {
        self.compacted
    }

    /// Watchers in the hub.
    #[must_use]
    pub fn len(&self) -> usize {
        self.watchers.len()
    }

    /// Whether the hub has no watchers.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.watchers.is_empty()
    }

    /// Watchers `owner` has.
    #[must_use]
    pub fn owned_by(&self, owner: u64) -> usize {
        self.watchers.values().filter(|w| w.owner == owner).count()
    }

    /// Starts a watcher for `owner` on the keys `filter` names, from `start` (inclusive;
    /// `None`: from the next revision). Refused with [`WatchError::Compacted`] if `start`
    /// is at or below [`WatchHub::compacted`], or when a limit is reached.
    pub fn watch(
        &mut self,
        owner: u64,
        filter: Filter,
        start: Option<Revision>,
    ) -> Result<WatchId, WatchError> {
        if self.watchers.len() >= self.config.watchers_max {
            return Err(WatchError::HubFull {
                max: self.config.watchers_max,
            });
        }
        if self.owned_by(owner) >= self.config.watchers_per_owner_max {
            return Err(WatchError::OwnerFull {
                max: self.config.watchers_per_owner_max,
            });
        }
        let next = start.unwrap_or(self.revision + 1);
        if next <= self.compacted {
            return Err(self.compacted_error());
        }
        let id = WatchId(self.next_id);
        self.next_id += 1;
        self.watchers.insert(
            id,
            Watcher {
                owner,
                filter,
                next,
                pending: Vec::new(),
                behind: next <= self.revision,
                progress_due: false,
                cancelled: None,
            },
        );
        Ok(id)
    }

    /// Removes a watcher; whether it was there.
    pub fn cancel(&mut self, id: WatchId) -> bool {
        self.watchers.remove(&id).is_some()
    }

    /// Removes every watcher of `owner` (its connection closed); how many.
    pub fn cancel_owner(&mut self, owner: u64) -> usize {
        let before = self.watchers.len();
        self.watchers.retain(|_, w| w.owner != owner);
        before - self.watchers.len()
    }

    /// Asks for a [`Notification::Progress`] for the watcher, sent once everything
    /// before it has been delivered.
    pub fn request_progress(&mut self, id: WatchId) {
        if let Some(w) = self.watchers.get_mut(&id) {
            w.progress_due = true;
        }
    }

    /// Feeds the changes revision `revision` made (the next revision: one more than the
    /// last fed), in the order it made them.
    pub fn apply(&mut self, revision: Revision, events: Vec<Event>) -> Result<(), FeedError> {
        if revision != self.revision + 1 {
            return Err(FeedError::OutOfOrder {
                got: revision,
                expected: self.revision + 1,
            });
        }
        if let Some(e) = events.iter().find(|e| e.revision != revision) {
            return Err(FeedError::WrongRevision {
                revision,
                event: e.revision,
            });
        }
        let buffered_max = self.config.buffered_events_max;
        for w in self.watchers.values_mut() {
            if w.behind || w.cancelled.is_some() || w.next > revision {
                continue;
            }
            if !take_revision(w, &events, buffered_max) {
                w.behind = true;
            }
        }
        self.revision = revision;
        self.history_bytes += events.iter().map(Event::bytes).sum::<usize>();
        self.history.push_back(events);
        while self.history.len() > self.config.history_revisions_max
            || (self.history_bytes > self.config.history_bytes_max && self.history.len() > 1)
        {
            let dropped = self.history.pop_front().unwrap_or_default();
            self.history_bytes -= dropped.iter().map(Event::bytes).sum::<usize>();
            self.compacted += 1;
        }
        Ok(())
    }

    /// The store's state jumped to `revision` without the revisions between being fed
    /// (a snapshot installed): the history is dropped, and every watcher that needed a
    /// revision skipped is cancelled with [`WatchError::Compacted`] once it has been
    /// given what it buffered. A `revision` at or below the hub's changes nothing.
    pub fn reset(&mut self, revision: Revision) {
        if revision <= self.revision {
            return;
        }
        for w in self.watchers.values_mut() {
            if w.next <= revision {
                w.behind = true;
            }
        }
        self.revision = revision;
        self.compacted = revision;
        self.history.clear();
        self.history_bytes = 0;
    }

    /// Marks a progress notification due for every watcher if
    /// [`WatchConfig::progress_interval_ms`] has passed since the last time this did.
    pub fn wake(&mut self, now: Time) {
        match self.next_progress {
            None => self.next_progress = Some(self.progress_after(now)),
            Some(at) if now >= at => {
                for w in self.watchers.values_mut() {
                    w.progress_due = true;
                }
                self.next_progress = Some(self.progress_after(now));
            }
            Some(_) => {}
        }
    }

    /// When [`WatchHub::wake`] next has something to do (`None` before its first call).
    #[must_use]
    pub fn next_wake(&self) -> Option<Time> {
        self.next_progress
    }

    fn progress_after(&self, now: Time) -> Time {
        now.saturating_add(std::time::Duration::from_millis(
            self.config.progress_interval_ms,
        ))
    }

    /// The watchers [`WatchHub::poll`] has something for, in id order.
    #[must_use]
    pub fn ready(&self) -> Vec<WatchId> {
        self.watchers
            .iter()
            .filter(|(_, w)| {
                w.cancelled.is_some() || !w.pending.is_empty() || w.behind || w.progress_due
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// The watcher's next notification, if any: its buffered events (whole revisions);
    /// then, for a watcher that fell behind, the next buffer from the history, or the
    /// error if the history no longer holds what it needs; then a progress notification
    /// if one is due. A cancelled watcher is forgotten once its error is taken.
    pub fn poll(&mut self, id: WatchId) -> Option<Notification> {
        let compacted = self.compacted_error();
        let w = self.watchers.get_mut(&id)?;
        if let Some(error) = w.cancelled.take() {
            self.watchers.remove(&id);
            return Some(Notification::Cancelled(error));
        }
        if w.pending.is_empty() && w.behind {
            self.catch_up(id);
        }
        let w = self.watchers.get_mut(&id)?;
        if !w.pending.is_empty() {
            return Some(Notification::Events(std::mem::take(&mut w.pending)));
        }
        if w.behind && w.next <= self.compacted {
            self.watchers.remove(&id);
            return Some(Notification::Cancelled(compacted));
        }
        if w.progress_due && !w.behind {
            w.progress_due = false;
            // Nothing buffered and not behind: everything up to the hub's revision that
            // matches has been delivered (a watcher starting later has nothing before).
            return Some(Notification::Progress(self.revision));
        }
        None
    }

    /// Fills a watcher that fell behind from the history, whole revisions, as far as its
    /// buffer takes; it is caught up once it reaches the hub's revision.
    fn catch_up(&mut self, id: WatchId) {
        let Some(w) = self.watchers.get_mut(&id) else {
            return;
        };
        if w.next <= self.compacted {
            return; // poll cancels it
        }
        let first = self.compacted + 1;
        if self.skips_on_catch_up && w.next < self.revision {
            w.next += 1;
        }
        while w.next <= self.revision {
            let offset = usize::try_from(w.next - first).unwrap_or(usize::MAX);
            let Some(events) = self.history.get(offset) else {
                break;
            };
            if !take_revision(w, events, self.config.buffered_events_max) {
                return;
            }
        }
        w.behind = false;
    }

    fn compacted_error(&self) -> WatchError {
        WatchError::Compacted {
            compacted: self.compacted,
            current: self.revision,
        }
    }
}

/// Takes a revision's matching events into the watcher's buffer, whole, if they fit (or
/// the buffer is empty), and moves it on; `false` if they did not fit.
fn take_revision(w: &mut Watcher, events: &[Event], buffered_max: usize) -> bool {
    let matching = events.iter().filter(|e| w.filter.matches(&e.key)).count();
    if matching > 0 && !w.pending.is_empty() && w.pending.len() + matching > buffered_max {
        return false;
    }
    w.pending
        .extend(events.iter().filter(|e| w.filter.matches(&e.key)).cloned());
    w.next += 1;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(revision: Revision, key: &str) -> Event {
        Event::put(
            revision,
            key.to_owned(),
            format!("v{revision}"),
            revision,
            1,
        )
    }

    fn revisions(n: Option<Notification>) -> Vec<Revision> {
        match n {
            Some(Notification::Events(events)) => events.iter().map(|e| e.revision).collect(),
            other => panic!("{other:?}"),
        }
    }

    fn config(buffered: usize, history: usize) -> WatchConfig {
        WatchConfig {
            buffered_events_max: buffered,
            history_revisions_max: history,
            ..WatchConfig::default()
        }
    }

    #[test]
    fn a_start_at_or_below_the_compacted_revision_is_refused_with_it() {
        let mut hub = WatchHub::new(config(10, 3), 5);
        assert_eq!(
            hub.watch(1, Filter::Prefix(Bytes::new()), Some(5)),
            Err(WatchError::Compacted {
                compacted: 5,
                current: 5
            })
        );
        for r in 6..=10 {
            hub.apply(r, vec![put(r, "k")]).unwrap();
        }
        // History holds 8, 9, 10.
        assert_eq!(hub.compacted(), 7);
        assert!(hub.watch(1, Filter::Key("k".into()), Some(7)).is_err());
        let w = hub.watch(1, Filter::Key("k".into()), Some(8)).unwrap();
        assert_eq!(revisions(hub.poll(w)), [8, 9, 10]);
        assert_eq!(hub.poll(w), None);
    }

    #[test]
    fn a_slow_watcher_catches_up_from_history_or_gets_the_error_never_a_gap() {
        let mut hub = WatchHub::new(config(2, 4), 0);
        let w = hub.watch(1, Filter::Prefix(Bytes::new()), None).unwrap();
        for r in 1..=4 {
            hub.apply(r, vec![put(r, "a")]).unwrap();
        }
        // Its buffer took 1 and 2; 3 and 4 come from the history.
        assert_eq!(revisions(hub.poll(w)), [1, 2]);
        assert_eq!(revisions(hub.poll(w)), [3, 4]);
        for r in 5..=6 {
            hub.apply(r, vec![put(r, "a")]).unwrap();
        }
        assert_eq!(revisions(hub.poll(w)), [5, 6]);
        // Now it is not polled while eight revisions pass: 7 and 8 are buffered, 9 and
        // 10 leave the history (which keeps 11 to 14).
        for r in 7..=14 {
            hub.apply(r, vec![put(r, "a")]).unwrap();
        }
        assert_eq!(hub.compacted(), 10);
        assert_eq!(revisions(hub.poll(w)), [7, 8]);
        assert_eq!(
            hub.poll(w),
            Some(Notification::Cancelled(WatchError::Compacted {
                compacted: 10,
                current: 14
            }))
        );
        assert!(hub.is_empty());
    }

    #[test]
    fn a_revision_is_never_split_even_if_larger_than_the_buffer() {
        let mut hub = WatchHub::new(config(2, 10), 0);
        let w = hub.watch(1, Filter::Prefix("p".into()), None).unwrap();
        hub.apply(1, vec![put(1, "p1")]).unwrap();
        let big: Vec<Event> = (0..5).map(|i| put(2, &format!("p{i}"))).collect();
        hub.apply(2, big).unwrap();
        assert_eq!(revisions(hub.poll(w)), [1]);
        assert_eq!(revisions(hub.poll(w)), [2, 2, 2, 2, 2]);
    }

    #[test]
    fn a_snapshot_jump_cancels_the_watchers_that_needed_the_skipped_revisions() {
        let mut hub = WatchHub::new(config(10, 10), 0);
        let now = hub.watch(1, Filter::Key("k".into()), None).unwrap();
        let later = hub.watch(2, Filter::Key("k".into()), Some(20)).unwrap();
        hub.apply(1, vec![put(1, "k")]).unwrap();
        hub.reset(9);
        assert_eq!(revisions(hub.poll(now)), [1]);
        assert!(matches!(
            hub.poll(now),
            Some(Notification::Cancelled(WatchError::Compacted {
                compacted: 9,
                ..
            }))
        ));
        assert_eq!(hub.poll(later), None);
        assert!(hub.apply(9, vec![]).is_err());
        hub.apply(10, vec![put(10, "k")]).unwrap();
        assert_eq!(hub.poll(later), None, "starts at 20");
    }

    #[test]
    fn progress_comes_after_the_events_it_covers_on_request_and_periodically() {
        let mut hub = WatchHub::new(config(10, 10), 0);
        let w = hub.watch(1, Filter::Key("k".into()), None).unwrap();
        hub.apply(1, vec![put(1, "k")]).unwrap();
        hub.apply(2, vec![put(2, "other")]).unwrap();
        hub.request_progress(w);
        assert_eq!(revisions(hub.poll(w)), [1]);
        assert_eq!(hub.poll(w), Some(Notification::Progress(2)));
        assert_eq!(hub.poll(w), None);
        hub.wake(Time::from_millis(0));
        assert!(hub.ready().is_empty());
        hub.wake(Time::from_millis(PROGRESS_INTERVAL_MS_DEFAULT - 1));
        assert!(hub.ready().is_empty());
        hub.wake(Time::from_millis(PROGRESS_INTERVAL_MS_DEFAULT));
        assert_eq!(hub.ready(), [w]);
        assert_eq!(hub.poll(w), Some(Notification::Progress(2)));
    }

    #[test]
    fn limits_per_owner_and_per_hub() {
        let mut hub = WatchHub::new(
            WatchConfig {
                watchers_max: 3,
                watchers_per_owner_max: 2,
                ..WatchConfig::default()
            },
            0,
        );
        let f = || Filter::Key("k".into());
        hub.watch(1, f(), None).unwrap();
        hub.watch(1, f(), None).unwrap();
        assert_eq!(
            hub.watch(1, f(), None),
            Err(WatchError::OwnerFull { max: 2 })
        );
        hub.watch(2, f(), None).unwrap();
        assert_eq!(hub.watch(3, f(), None), Err(WatchError::HubFull { max: 3 }));
        assert_eq!(hub.cancel_owner(1), 2);
        hub.watch(3, f(), None).unwrap();
    }

    #[test]
    fn feeding_out_of_order_is_refused_and_changes_nothing() {
        let mut hub = WatchHub::new(WatchConfig::default(), 0);
        assert_eq!(
            hub.apply(2, vec![]),
            Err(FeedError::OutOfOrder {
                got: 2,
                expected: 1
            })
        );
        assert_eq!(
            hub.apply(1, vec![put(2, "k")]),
            Err(FeedError::WrongRevision {
                revision: 1,
                event: 2
            })
        );
        assert_eq!(hub.revision(), 0);
    }

    #[test]
    fn history_is_bounded_in_bytes_too() {
        let mut hub = WatchHub::new(
            WatchConfig {
                history_bytes_max: 3 * (EVENT_OVERHEAD_BYTES + 100),
                ..WatchConfig::default()
            },
            0,
        );
        for r in 1..=10 {
            let e = Event::put(r, vec![b'k'; 50], vec![b'v'; 50], r, 1);
            hub.apply(r, vec![e]).unwrap();
        }
        assert_eq!(hub.compacted(), 7);
    }
}
