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
//! - **Time is replicated**: each entry carries the proposer's clock reading, and
//!   [`Sessions`] only ever moves its notion of "now" forward to the largest value seen
//!   in the log. Sessions idle for longer than the timeout expire at the same log position
//!   on every replica, whatever their own clocks say.
//!
//! ```
//! use synod_consensus::session::{Outcome, SessionConfig, Sessions};
//! use synod_consensus::LogIndex;
//!
//! let mut sessions = Sessions::new(SessionConfig::new(60_000, 16, 1000)?);
//! let mut counter = 0;
//! // The register entry committed at index 5: session 5.
//! let id = sessions.register(LogIndex(5), 1_000);
//! // Request 1 is applied...
//! let first = sessions.apply(id, 1, 1, 1_010, || { counter += 1; counter })?;
//! assert_eq!(first, Outcome::Applied(1));
//! // ...and its retry, committed again later, is answered from the saved response.
//! let retry = sessions.apply(id, 1, 1, 1_020, || { counter += 1; counter })?;
//! assert_eq!(retry, Outcome::Duplicate(1));
//! assert_eq!(counter, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
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
/// The `time` fields are the proposer's clock reading (any unit, consistently), which
/// becomes the replicated time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionEntry<C> {
    /// Open a session; its id is this entry's log index.
    Register {
        /// The proposer's clock.
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
        /// The proposer's clock.
        time: u64,
        /// The application's command.
        command: C,
    },
    /// Close a session.
    Unregister {
        /// The session.
        session: SessionId,
        /// The proposer's clock.
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
    /// `sessions_max` sessions exist (registering one more expires the least recently
    /// active).
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

/// The session table of a replicated state machine. Part of the state machine: include it
/// in snapshots (it is `Serialize` when `R` is).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sessions<R> {
    #[serde(skip, default = "default_config")]
    config: Option<SessionConfig>,
    now: u64,
    sessions: BTreeMap<SessionId, Session<R>>,
}

fn default_config() -> Option<SessionConfig> {
    None
}

impl<R: Clone> Sessions<R> {
    /// An empty table.
    #[must_use]
    pub fn new(config: SessionConfig) -> Sessions<R> {
        Sessions {
            config: Some(config),
            now: 0,
            sessions: BTreeMap::new(),
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
    /// Returns the expired sessions.
    pub fn advance(&mut self, time: u64) -> Vec<SessionId> {
        self.now = self.now.max(time);
        let timeout = self.config().timeout;
        let now = self.now;
        let expired: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| now.saturating_sub(s.last_active) > timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            self.sessions.remove(id);
        }
        expired
    }

    /// Applies a committed [`SessionEntry::Register`] at `index`: opens the session whose
    /// id is `index`. If the table is full, the least recently active session is closed.
    pub fn register(&mut self, index: LogIndex, time: u64) -> SessionId {
        self.advance(time);
        let id = SessionId(index.0);
        if self.sessions.len() >= self.config().sessions_max {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(id, s)| (s.last_active, **id))
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.sessions.remove(&oldest);
            }
        }
        self.sessions.insert(
            id,
            Session {
                last_active: self.now,
                ack_below: 1,
                responses: BTreeMap::new(),
            },
        );
        id
    }

    /// Applies a committed [`SessionEntry::Unregister`].
    pub fn unregister(&mut self, session: SessionId, time: u64) {
        self.advance(time);
        self.sessions.remove(&session);
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
        s.last_active = now;
        if ack_below > s.ack_below {
            s.ack_below = ack_below;
            s.responses = s.responses.split_off(&ack_below);
        }
        if let Some(saved) = s.responses.get(&seq) {
            return Ok(Outcome::Duplicate(saved.clone()));
        }
        if seq < s.ack_below {
            return Err(SessionError::Stale { session, seq });
        }
        if s.responses.len() >= responses_max {
            return Err(SessionError::TooManyOutstanding(session));
        }
        let response = apply();
        s.responses.insert(seq, response.clone());
        Ok(Outcome::Applied(response))
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
