//! What a leader knows about each follower's log: how far it matches (`match_index`), what
//! to send next (`next_index`), and how many appends are in flight.
//!
//! A follower is in one of three states, as in etcd's raft:
//! - **Probe**: the leader does not know where the logs diverge; it sends one append at a
//!   time and waits for the answer (or the next heartbeat) before sending another.
//! - **Replicate**: the logs match up to `match_index`; the leader streams appends without
//!   waiting, up to `in_flight_max` unacknowledged messages (pipelining).
//! - **Snapshot**: the entries the follower needs are compacted away; the leader sends the
//!   snapshot in chunks, one at a time.

use std::collections::VecDeque;

use crate::types::LogIndex;

/// The replication state of one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProgressState {
    /// One append at a time; `paused` while it is outstanding.
    Probe { paused: bool },
    /// Appends streamed optimistically.
    Replicate,
    /// A snapshot at `index` is being sent; `offset` is the next byte the follower wants;
    /// `acked` says whether it answered since the last heartbeat interval.
    Snapshot {
        index: LogIndex,
        offset: u64,
        acked: bool,
    },
}

/// The leader's view of one follower (or learner).
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    pub(crate) match_index: LogIndex,
    pub(crate) next_index: LogIndex,
    pub(crate) state: ProgressState,
    /// The last index of each append in flight, oldest first.
    pub(crate) in_flight: VecDeque<LogIndex>,
    /// Heard from since the last check-quorum.
    pub(crate) recent_active: bool,
    /// The tick of the last increase of `match_index`, to detect a stalled pipeline.
    pub(crate) progress_tick: u64,
    /// The highest heartbeat round the follower answered.
    pub(crate) acked_round: u64,
    /// The commit index the follower was last told (capped by what it held then).
    pub(crate) commit_sent: LogIndex,
    /// The highest read index answered to a read this follower forwarded: it serves the
    /// read once it has applied that far, so it is told a commit index up to there at once
    /// (other commit indexes wait for the next append, heartbeat or tick).
    pub(crate) commit_wanted: LogIndex,
    /// The first heartbeat round sent in `Replicate` since the last answer checked, with
    /// the last index streamed to the follower before it. Over a link that delivers in
    /// order, an answer to that round (or a later one) reporting a shorter log means
    /// appends were lost or forgotten; an answer reporting less than what was streamed
    /// *after* the heartbeat means nothing, since those appends were still on their way. (A
    /// link that reorders can make the leader probe and send entries again, never skip
    /// them.)
    pub(crate) heartbeat_check: Option<(u64, LogIndex)>,
}

impl Progress {
    pub(crate) fn new(next_index: LogIndex, tick: u64) -> Progress {
        Progress {
            match_index: LogIndex::ZERO,
            next_index,
            state: ProgressState::Probe { paused: false },
            in_flight: VecDeque::new(),
            recent_active: true,
            progress_tick: tick,
            acked_round: 0,
            commit_sent: LogIndex::ZERO,
            commit_wanted: LogIndex::ZERO,
            heartbeat_check: None,
        }
    }

    /// Back to probing from `next_index`, forgetting what is in flight.
    pub(crate) fn probe(&mut self, next_index: LogIndex) {
        self.state = ProgressState::Probe { paused: false };
        self.next_index = next_index.max(self.match_index.next());
        self.in_flight.clear();
        self.heartbeat_check = None;
    }

    /// Notes a heartbeat of `round` sent now, unless an earlier one still waits for its
    /// answer to be checked (a lost answer must not keep the check from ever running: any
    /// later answer checks the earlier round's figure, which is no higher).
    pub(crate) fn heartbeat_sent(&mut self, round: u64) {
        if self.state == ProgressState::Replicate && self.heartbeat_check.is_none() {
            self.heartbeat_check = Some((round, self.next_index.prev()));
        }
    }

    /// Checks the follower's answer to heartbeat `round`, which found its log ending at
    /// `last_index`. Returns whether entries streamed before the heartbeat are missing
    /// there: lost on the way, or forgotten by a follower that restarted.
    pub(crate) fn heartbeat_answered(&mut self, round: u64, last_index: LogIndex) -> bool {
        match self.heartbeat_check {
            Some((sent_round, sent_last)) if round >= sent_round => {
                self.heartbeat_check = None;
                self.state == ProgressState::Replicate && last_index < sent_last
            }
            _ => false,
        }
    }

    /// Records that the follower holds everything up to `index`. Returns whether that is
    /// new.
    pub(crate) fn accept(&mut self, index: LogIndex, tick: u64) -> bool {
        while self.in_flight.front().is_some_and(|&last| last <= index) {
            self.in_flight.pop_front();
        }
        if index > self.match_index {
            self.match_index = index;
            self.next_index = self.next_index.max(index.next());
            self.progress_tick = tick;
            true
        } else {
            false
        }
    }
}
