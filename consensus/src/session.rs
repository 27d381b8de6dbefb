//! Idempotent Receiver: client sessions, so a retried command is applied once.
//!
//! A client that times out does not know whether its command was applied; it retries, and
//! the retry may be appended to the log a second time (by the same leader, or by the next
//! one). To apply it once, every replica's state machine keeps, per client session, the
//! responses to recent requests by sequence number, and answers a duplicate from there
//! instead of applying it again (Raft thesis, section 6.3; ZooKeeper sessions; Kafka's
//! idempotent producer).
//!
//! Everything here runs inside the replicated state machine, on committed entries, so
//! every replica makes the same decisions:
//!
//! - A session is **registered through the log**: its id is the log index of its
//!   [`SessionEntry::Register`] entry, unique and the same on every replica.
//! - Each request carries the session, a sequence number, and `ack_below`: the client
//!   has its answers for every sequence number below it, so those saved responses can go.
//! - **Time is replicated**: each entry carries a time, and [`Sessions`] only ever moves
//!   its notion of "now" forward to the largest value seen in the log. Sessions idle for
//!   longer than the timeout expire at the same log position on every replica, whatever
//!   their own clocks say.
//! - **No wall clock sets it.** The proposer stamps its entries with a [`ReplicatedClock`]:
//!   the latest replicated time it has applied, moved on by its own *monotonic* clock.
//!   A leader whose wall clock is set minutes ahead cannot expire every session at once,
//!   and a new leader carries on from where the log left off, not from its own clock.
//! - **Bounded, and cheap to expire.** At most `sessions_max` sessions exist. A
//!   registration past that closes the least recently active session that has never
//!   applied a request: it holds no saved response, so closing it cannot let a retry be
//!   applied twice (its first request is refused as [`SessionError::UnknownSession`] and
//!   never applied). A flood of registrations that are never used so cannot lock other
//!   clients out, and sessions registered by retries that were never used make room. A
//!   session that has applied a request is never closed to make room: only when every
//!   open session has is a registration refused ([`SessionError::TableFull`]). Sessions
//!   are indexed by their last activity, so expiring them costs the sessions that expire,
//!   not a walk over every session; the choice depends only on the table, so every
//!   replica makes the same one.
//!
//! ```
//! use synod_consensus::session::{Outcome, SessionConfig, Sessions};
//! use synod_consensus::LogIndex;
//!
//! let mut sessions = Sessions::new(SessionConfig::new(60_000, 16, 1000)?);
//! let mut counter = 0;
//! // The register entry committed at index 5: session 5.
//! let id = sessions.register(LogIndex(5), 1_000)?;
//! // Request 1 is applied...
//! let first = sessions.apply(id, 1, 1, 1_010, || { counter += 1; counter })?;
//! assert_eq!(first, Outcome::Applied(1));
//! // ...and its retry, committed again later, is answered from the saved response.
//! let retry = sessions.apply(id, 1, 1, 1_020, || { counter += 1; counter })?;
//! assert_eq!(retry, Outcome::Duplicate(1));
//! assert_eq!(counter, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::types::LogIndex;

/// A client session's id: the log index of the entry that registered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// What an application proposes through the log to use sessions: wrap each command.
/// The `time` fields are the proposer's [`ReplicatedClock`] reading (any unit,
/// consistently), which becomes the replicated time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionEntry<C> {
    /// Open a session; its id is this entry's log index.
    Register {
        /// The proposer's reading of replicated time.
        time: u64,
    },
    /// A command in a session.
    Request {
        /// The session.
        session: SessionId,
        /// The request's sequence number in the session, from 1.
        seq: u64,
        /// The client holds the answers to every sequence number below this.
        ack_below: u64,
        /// The proposer's reading of replicated time.
        time: u64,
        /// The application's command.
        command: C,
    },
    /// Close a session.
    Unregister {
        /// The session.
        session: SessionId,
        /// The proposer's reading of replicated time.
        time: u64,
    },
}

/// Limits of a [`Sessions`] table, validated by [`SessionConfig::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    timeout: u64,
    responses_per_session_max: usize,
    sessions_max: usize,
}

/// Why a session configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionConfigError {
    /// A limit that must be at least 1 is zero.
    Zero(&'static str),
}

impl fmt::Display for SessionConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionConfigError::Zero(name) => write!(f, "{name} must be at least 1"),
        }
    }
}

impl std::error::Error for SessionConfigError {}

impl SessionConfig {
    /// Sessions idle for `timeout` (in the unit of the entries' `time`) expire; each keeps
    /// at most `responses_per_session_max` unacknowledged responses; at most
    /// `sessions_max` sessions exist (a registration past it closes the least recently
    /// active session that has never applied a request, and is refused with
    /// [`SessionError::TableFull`] if every open session has).
    ///
    /// # Errors
    ///
    /// [`SessionConfigError::Zero`] if a value is zero.
    pub fn new(
        timeout: u64,
        responses_per_session_max: usize,
        sessions_max: usize,
    ) -> Result<SessionConfig, SessionConfigError> {
        if timeout == 0 {
            return Err(SessionConfigError::Zero("timeout"));
        }
        if responses_per_session_max == 0 {
            return Err(SessionConfigError::Zero("responses_per_session_max"));
        }
        if sessions_max == 0 {
            return Err(SessionConfigError::Zero("sessions_max"));
        }
        Ok(SessionConfig {
            timeout,
            responses_per_session_max,
            sessions_max,
        })
    }
}

/// How a request was handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<R> {
    /// Applied now; the response is saved for retries.
    Applied(R),
    /// Already applied: the saved response.
    Duplicate(R),
}

impl<R> Outcome<R> {
    /// The response, either way.
    pub fn into_response(self) -> R {
        match self {
            Outcome::Applied(r) | Outcome::Duplicate(r) => r,
        }
    }
}

/// Why a request was not applied. Every replica reaches the same answer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionError {
    /// The session expired or never existed: the client must register again (and cannot
    /// know whether its outstanding requests were applied).
    UnknownSession(SessionId),
    /// The sequence number is below what the client acknowledged: the response is gone.
    Stale {
        /// The session.
        session: SessionId,
        /// The request's sequence number.
        seq: u64,
    },
    /// The session already holds `responses_per_session_max` unacknowledged responses.
    TooManyOutstanding(SessionId),
    /// A registration found `sessions_max` sessions open, each of which has applied a
    /// request: it is refused (closing one of them would let its retries be applied
    /// twice).
    TableFull {
        /// The configured limit.
        sessions_max: usize,
    },
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::UnknownSession(s) => write!(f, "session {s} expired or unknown"),
            SessionError::Stale { session, seq } => write!(
                f,
                "request {seq} of session {session} was already acknowledged"
            ),
            SessionError::TooManyOutstanding(s) => {
                write!(f, "session {s} has too many unacknowledged responses")
            }
            SessionError::TableFull { sessions_max } => write!(
                f,
                "the session table is full ({sessions_max} sessions are open and in use); close a session or wait for an idle one to expire"
            ),
        }
    }
}

impl std::error::Error for SessionError {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Session<R> {
    last_active: u64,
    ack_below: u64,
    responses: BTreeMap<u64, R>,
}

impl<R> Session<R> {
    /// Whether the session holds deduplication state: it has applied a request (a saved
    /// response, or one acknowledged and dropped). One that has not may be closed to make
    /// room without a retry ever being applied twice.
    fn in_use(&self) -> bool {
        self.ack_below > 1 || !self.responses.is_empty()
    }
}

/// The session table of a replicated state machine. Part of the state machine: include it
/// in snapshots (it is `Serialize` when `R` is; its encoding is the replicated time and
/// the sessions, the limits and the expiry index being configured or rebuilt on decoding).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(
    from = "SessionsWire<R>",
    bound(deserialize = "R: Deserialize<'de>", serialize = "R: Serialize")
)]
pub struct Sessions<R> {
    #[serde(skip)]
    config: Option<SessionConfig>,
    now: u64,
    sessions: BTreeMap<SessionId, Session<R>>,
    /// Every session by `(last_active, id)`: the first are the first to expire. Derived
    /// from `sessions`, so not encoded.
    #[serde(skip)]
    by_activity: BTreeSet<(u64, SessionId)>,
    /// The sessions not [`in use`](Session::in_use) by `(last_active, id)`: the first is
    /// the one closed to make room for a registration. Derived, so not encoded.
    #[serde(skip)]
    unused: BTreeSet<(u64, SessionId)>,
    /// Sessions looked at by expiry, to show its cost in tests.
    #[cfg(test)]
    #[serde(skip)]
    expiry_visits: u64,
}

/// How [`Sessions`] is decoded: its encoded fields, from which the expiry index is rebuilt.
#[derive(Deserialize)]
struct SessionsWire<R> {
    now: u64,
    sessions: BTreeMap<SessionId, Session<R>>,
}

impl<R> From<SessionsWire<R>> for Sessions<R> {
    fn from(wire: SessionsWire<R>) -> Sessions<R> {
        let by_activity = wire
            .sessions
            .iter()
            .map(|(id, s)| (s.last_active, *id))
            .collect();
        let unused = wire
            .sessions
            .iter()
            .filter(|(_, s)| !s.in_use())
            .map(|(id, s)| (s.last_active, *id))
            .collect();
        Sessions {
            config: None,
            now: wire.now,
            sessions: wire.sessions,
            by_activity,
            unused,
            #[cfg(test)]
            expiry_visits: 0,
        }
    }
}

impl<R: PartialEq> PartialEq for Sessions<R> {
    /// Equal limits, time and sessions (the index follows from the sessions).
    fn eq(&self, other: &Sessions<R>) -> bool {
        self.config == other.config && self.now == other.now && self.sessions == other.sessions
    }
}

impl<R: Eq> Eq for Sessions<R> {}

impl<R: Clone> Sessions<R> {
    /// An empty table.
    #[must_use]
    pub fn new(config: SessionConfig) -> Sessions<R> {
        Sessions {
            config: Some(config),
            now: 0,
            sessions: BTreeMap::new(),
            by_activity: BTreeSet::new(),
            unused: BTreeSet::new(),
            #[cfg(test)]
            expiry_visits: 0,
        }
    }

    /// Sets the limits after the table was restored from a snapshot (which does not carry
    /// them).
    pub fn set_config(&mut self, config: SessionConfig) {
        self.config = Some(config);
    }

    fn config(&self) -> SessionConfig {
        self.config.unwrap_or(SessionConfig {
            timeout: u64::MAX,
            responses_per_session_max: usize::MAX,
            sessions_max: usize::MAX,
        })
    }

    /// The replicated time: the largest `time` seen in applied entries.
    #[must_use]
    pub fn now(&self) -> u64 {
        self.now
    }

    /// How many sessions are open.
    #[must_use]
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is open.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Whether `session` is open.
    #[must_use]
    pub fn contains(&self, session: SessionId) -> bool {
        self.sessions.contains_key(&session)
    }

    /// Moves replicated time forward to `time` (never back) and expires idle sessions.
    /// Returns the expired sessions, least recently active first. Costs the sessions that
    /// expire (and one look at the next), however many are open.
    pub fn advance(&mut self, time: u64) -> Vec<SessionId> {
        self.now = self.now.max(time);
        let timeout = self.config().timeout;
        let mut expired = Vec::new();
        while let Some(&(last_active, id)) = self.by_activity.first() {
            #[cfg(test)]
            {
                self.expiry_visits += 1;
            }
            if self.now.saturating_sub(last_active) <= timeout {
                break;
            }
            self.by_activity.pop_first();
            self.unused.remove(&(last_active, id));
            self.sessions.remove(&id);
            expired.push(id);
        }
        expired
    }

    /// Applies a committed [`SessionEntry::Register`] at `index`: opens the session whose
    /// id is `index`. If `sessions_max` sessions are open (after those idle for longer
    /// than the timeout expired), the least recently active session that has never
    /// applied a request is closed to make room.
    ///
    /// # Errors
    ///
    /// [`SessionError::TableFull`] if `sessions_max` sessions are open and every one has
    /// applied a request: no session is opened, and none is closed.
    pub fn register(&mut self, index: LogIndex, time: u64) -> Result<SessionId, SessionError> {
        self.advance(time);
        let id = SessionId(index.0);
        let sessions_max = self.config().sessions_max;
        if self.sessions.len() >= sessions_max && !self.sessions.contains_key(&id) {
            let Some((last_active, unused)) = self.unused.pop_first() else {
                return Err(SessionError::TableFull { sessions_max });
            };
            self.by_activity.remove(&(last_active, unused));
            self.sessions.remove(&unused);
        }
        let session = Session {
            last_active: self.now,
            ack_below: 1,
            responses: BTreeMap::new(),
        };
        if let Some(old) = self.sessions.insert(id, session) {
            self.forget(id, &old);
        }
        self.by_activity.insert((self.now, id));
        self.unused.insert((self.now, id));
        Ok(id)
    }

    /// Applies a committed [`SessionEntry::Unregister`].
    pub fn unregister(&mut self, session: SessionId, time: u64) {
        self.advance(time);
        if let Some(old) = self.sessions.remove(&session) {
            self.forget(session, &old);
        }
    }

    /// Removes a session no longer in the table from the indexes.
    fn forget(&mut self, id: SessionId, old: &Session<R>) {
        self.by_activity.remove(&(old.last_active, id));
        self.unused.remove(&(old.last_active, id));
    }

    /// Applies a committed [`SessionEntry::Request`]: runs `apply` unless the request is a
    /// duplicate, in which case the saved response is returned and `apply` is not run.
    ///
    /// # Errors
    ///
    /// [`SessionError::UnknownSession`], [`SessionError::Stale`] or
    /// [`SessionError::TooManyOutstanding`]; `apply` is not run.
    pub fn apply(
        &mut self,
        session: SessionId,
        seq: u64,
        ack_below: u64,
        time: u64,
        apply: impl FnOnce() -> R,
    ) -> Result<Outcome<R>, SessionError> {
        self.advance(time);
        let now = self.now;
        let responses_max = self.config().responses_per_session_max;
        let s = self
            .sessions
            .get_mut(&session)
            .ok_or(SessionError::UnknownSession(session))?;
        // Out of the indexes while it changes, back in under its new activity after.
        self.by_activity.remove(&(s.last_active, session));
        self.unused.remove(&(s.last_active, session));
        s.last_active = now;
        if ack_below > s.ack_below {
            s.ack_below = ack_below;
            s.responses = s.responses.split_off(&ack_below);
        }
        let outcome = if let Some(saved) = s.responses.get(&seq) {
            Ok(Outcome::Duplicate(saved.clone()))
        } else if seq < s.ack_below {
            Err(SessionError::Stale { session, seq })
        } else if s.responses.len() >= responses_max {
            Err(SessionError::TooManyOutstanding(session))
        } else {
            let response = apply();
            s.responses.insert(seq, response.clone());
            Ok(Outcome::Applied(response))
        };
        self.by_activity.insert((now, session));
        if !s.in_use() {
            self.unused.insert((now, session));
        }
        outcome
    }
}

/// A proposer's reading of replicated time, to stamp on the [`SessionEntry`]s it proposes.
///
/// Replicated time decides when sessions expire on every replica, so no one node's wall
/// clock may set it: a leader whose clock is set 15 minutes ahead would otherwise expire
/// every session on every replica, and leave replicated time ahead for good. Instead it
/// moves on by the time that passes on this node's *monotonic* clock ([`tick`]), from the
/// latest replicated time this node has applied ([`observe`]). A new leader so carries on
/// from where the log left off, and an offset between the nodes' clocks changes nothing.
///
/// It never reads ahead of true time elapsed (each reading is a replicated time, itself
/// no later than true time when it was stamped, plus time elapsed since), short of clock
/// drift; it reads behind while no node runs and between a new leader's election and its
/// applying the log, so sessions can only live a little longer than their timeout, never
/// shorter.
///
/// [`tick`]: ReplicatedClock::tick
/// [`observe`]: ReplicatedClock::observe
///
/// ```
/// use synod_consensus::session::ReplicatedClock;
///
/// let mut clock = ReplicatedClock::new();
/// clock.tick(900_000); // the first reading only sets the origin: any offset is harmless
/// clock.observe(5_000); // the log's replicated time, as applied here
/// clock.tick(900_250);
/// assert_eq!(clock.now(), 5_250);
/// clock.observe(5_100); // applied entries stamped behind this reading change nothing
/// assert_eq!(clock.now(), 5_250);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicatedClock {
    now: u64,
    local: Option<u64>,
}

impl ReplicatedClock {
    /// A clock at replicated time 0 that has not read the local clock yet.
    #[must_use]
    pub fn new() -> ReplicatedClock {
        ReplicatedClock::default()
    }

    /// This node's monotonic clock reads `local` (any origin, in the unit of the entries'
    /// `time`): replicated time moves on by the time elapsed since the previous reading.
    /// The first reading only sets the origin; a reading below an earlier one moves nothing.
    pub fn tick(&mut self, local: u64) {
        match self.local {
            Some(before) if local > before => {
                self.now = self.now.saturating_add(local - before);
                self.local = Some(local);
            }
            Some(_) => {}
            None => self.local = Some(local),
        }
    }

    /// This node has applied entries up to replicated time `replicated`
    /// ([`Sessions::now`]): the clock never reads below it.
    pub fn observe(&mut self, replicated: u64) {
        self.now = self.now.max(replicated);
    }

    /// The time to stamp on a proposal.
    #[must_use]
    pub fn now(&self) -> u64 {
        self.now
    }
}

impl<C: Serialize> SessionEntry<C> {
    /// Encodes the entry with `postcard`, for [`Node::propose`](crate::Node::propose).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("postcard encodes to a Vec")
    }
}

impl<C: serde::de::DeserializeOwned> SessionEntry<C> {
    /// Decodes an entry produced by [`SessionEntry::encode`]; `None` if the bytes are not
    /// a valid entry.
    #[must_use]
    pub fn decode(bytes: &[u8]) -> Option<SessionEntry<C>> {
        postcard::from_bytes(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of up to `max` sessions that expire after `timeout`.
    fn table(timeout: u64, max: usize) -> Sessions<u64> {
        Sessions::new(SessionConfig::new(timeout, 4, max).expect("valid"))
    }

    #[test]
    fn expiry_looks_only_at_the_sessions_that_expire_least_recently_active_first() {
        let n = 10_000u64;
        let mut s = table(n, 20_000);
        // Session i + 1 registered at time i: all open at time n - 1.
        for i in 0..n {
            s.register(LogIndex(i + 1), i).expect("room");
        }
        assert_eq!(s.len(), 10_000);
        let active = SessionId(n);
        s.expiry_visits = 0;
        let (mut calls, mut expired) = (0u64, Vec::new());
        // One request a millisecond in the active session: about one other session
        // expires at each, oldest first.
        for k in 0..n {
            expired.extend(s.advance(n + k));
            let seq = k + 1;
            s.apply(active, seq, seq, n + k, || k).expect("applied");
            calls += 2;
        }
        let expected: Vec<SessionId> = (1..n).map(SessionId).collect();
        assert!(
            expired == expected,
            "{} expired, not in order of last activity",
            expired.len()
        );
        assert!(s.contains(active));
        // Each call looks at what expires, and at most one session that does not: 20,000
        // calls cost about 30,000 visits, where a walk over the table would cost 10^8.
        let visits = s.expiry_visits;
        assert!(
            visits <= expired.len() as u64 + calls,
            "{visits} sessions visited for {} expired in {calls} calls",
            expired.len()
        );
    }

    /// The sessions that should be open, by brute force: registered, not closed, and not
    /// idle for longer than the timeout at any time since (replicated time only grows, so
    /// checking at the end is enough, given `last_active` is the latest activity). Each
    /// with its last activity and whether it has applied a request.
    #[derive(Clone, Debug, Default)]
    struct Model {
        now: u64,
        open: BTreeMap<SessionId, (u64, bool)>,
    }

    impl Model {
        fn advance(&mut self, time: u64, timeout: u64) -> Vec<SessionId> {
            self.now = self.now.max(time);
            let now = self.now;
            let mut expired: Vec<(u64, SessionId)> = self
                .open
                .iter()
                .filter(|&(_, &(active, _))| now.saturating_sub(active) > timeout)
                .map(|(&id, &(active, _))| (active, id))
                .collect();
            expired.sort_unstable();
            for (_, id) in &expired {
                self.open.remove(id);
            }
            expired.into_iter().map(|(_, id)| id).collect()
        }

        /// The least recently active session that has applied nothing, by a walk.
        fn unused_first(&self) -> Option<SessionId> {
            self.open
                .iter()
                .filter(|&(_, &(_, used))| !used)
                .map(|(&id, &(active, _))| (active, id))
                .min()
                .map(|(_, id)| id)
        }
    }

    #[test]
    fn expiry_from_the_index_agrees_with_a_walk_over_every_session_and_survives_decoding() {
        let (timeout, max) = (50u64, 12usize);
        for seed in 1..=40u64 {
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut next = move |below: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % below
            };
            let mut s = table(timeout, max);
            let mut model = Model::default();
            let mut time = 0u64;
            for index in 1..=600u64 {
                // Mostly forward, sometimes a step back (replicated time never follows it).
                time = (time + next(12)).saturating_sub(next(4));
                let known: Vec<SessionId> = model.open.keys().copied().collect();
                let pick = |r: u64| known.get(r as usize % known.len().max(1)).copied();
                match next(10) {
                    0..=3 => {
                        model.advance(time, timeout);
                        let full = model.open.len() >= max;
                        let result = s.register(LogIndex(index), time);
                        match (full, model.unused_first()) {
                            (true, None) => assert_eq!(
                                result,
                                Err(SessionError::TableFull { sessions_max: max })
                            ),
                            (full, unused) => {
                                assert_eq!(result, Ok(SessionId(index)));
                                if let (true, Some(evicted)) = (full, unused) {
                                    model.open.remove(&evicted);
                                }
                                model.open.insert(SessionId(index), (model.now, false));
                            }
                        }
                    }
                    4..=6 => {
                        // A request in an open session (or one that expired meanwhile).
                        let id = pick(next(1_000)).unwrap_or(SessionId(index));
                        model.advance(time, timeout);
                        let result = s.apply(id, index, index, time, || index);
                        match model.open.get_mut(&id) {
                            Some(entry) => {
                                // Applied (or answered as a duplicate): in use.
                                *entry = (model.now, true);
                                assert!(result.is_ok(), "{result:?}");
                            }
                            None => assert_eq!(result, Err(SessionError::UnknownSession(id))),
                        }
                    }
                    7 => {
                        let id = pick(next(1_000)).unwrap_or(SessionId(index));
                        model.advance(time, timeout);
                        model.open.remove(&id);
                        s.unregister(id, time);
                    }
                    8 => assert_eq!(s.advance(time), model.advance(time, timeout)),
                    _ => {
                        // A snapshot taken and restored: the index is rebuilt from it.
                        let bytes = postcard::to_stdvec(&s).expect("encodes");
                        let mut restored: Sessions<u64> =
                            postcard::from_bytes(&bytes).expect("decodes");
                        restored.set_config(s.config());
                        assert_eq!(restored, s);
                        s = restored;
                    }
                }
                assert_eq!(s.now(), model.now, "seed {seed}, entry {index}");
                let open: Vec<SessionId> = model.open.keys().copied().collect();
                let have: Vec<SessionId> = s.sessions.keys().copied().collect();
                assert_eq!(have, open, "seed {seed}, entry {index}");
                let index_ids: BTreeSet<SessionId> = s.by_activity.iter().map(|e| e.1).collect();
                assert_eq!(index_ids.len(), s.by_activity.len(), "one index entry each");
                assert!(index_ids.into_iter().eq(open), "seed {seed}, entry {index}");
                let unused: Vec<SessionId> = s.unused.iter().map(|e| e.1).collect();
                let mut expected: Vec<(u64, SessionId)> = model
                    .open
                    .iter()
                    .filter(|&(_, &(_, used))| !used)
                    .map(|(&id, &(active, _))| (active, id))
                    .collect();
                expected.sort_unstable();
                let expected: Vec<SessionId> = expected.into_iter().map(|e| e.1).collect();
                assert_eq!(unused, expected, "seed {seed}, entry {index}");
            }
        }
    }

    #[test]
    fn the_replicated_clock_follows_elapsed_time_not_the_local_clock_s_origin() {
        let mut clock = ReplicatedClock::new();
        clock.observe(1_000);
        // A clock set 15 minutes ahead: its origin is not taken, only time elapsed on it.
        clock.tick(15 * 60 * 1000);
        assert_eq!(clock.now(), 1_000);
        clock.tick(15 * 60 * 1000 + 300);
        assert_eq!(clock.now(), 1_300);
        // A reading that goes back moves nothing, and the next one counts from the highest.
        clock.tick(5);
        clock.tick(15 * 60 * 1000 + 350);
        assert_eq!(clock.now(), 1_350);
        // The log moved further on meanwhile (another leader): carried on from there.
        clock.observe(9_000);
        clock.tick(15 * 60 * 1000 + 400);
        assert_eq!(clock.now(), 9_050);
    }
}
