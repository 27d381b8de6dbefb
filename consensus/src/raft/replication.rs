//! Log shipping. The leader's side: the progress of each follower, appends within flow
//! control, heartbeats, and the commit index. The follower's side: accepting or rejecting
//! an append.

use synod_quorum::Quorum;

use super::{Node, Role};
use crate::message::{AppendResult, MessageBody};
use crate::progress::{Progress, ProgressState};
use crate::types::{Entry, LogIndex, NodeId, Term};

impl Node {
    pub(super) fn sync_progress(&mut self) {
        let next = self.log.last_index().next();
        let ticks = self.ticks;
        let members: Vec<NodeId> = self.membership.current().members().collect();
        self.progress.retain(|id, _| members.contains(id));
        for id in members {
            if id != self.config.id {
                self.progress
                    .entry(id)
                    .or_insert_with(|| Progress::new(next, ticks));
            }
        }
    }

    /// Sends `peer` what it lacks, within flow control. Returns whether it sent anything.
    pub(super) fn send_append(&mut self, peer: NodeId, allow_empty: bool) -> bool {
        let last = self.log.last_index();
        let commit = self.commit;
        let Some(pr) = self.progress.get(&peer) else {
            return false;
        };
        match pr.state {
            ProgressState::Snapshot { .. } | ProgressState::Probe { paused: true } => return false,
            ProgressState::Replicate if pr.in_flight.len() >= self.config.in_flight_max => {
                return false;
            }
            _ => {}
        }
        let next = pr.next_index;
        let prev_index = next.prev();
        let Some(prev_term) = self.term_of(prev_index) else {
            self.start_snapshot(peer);
            return true;
        };
        let mut entries = Vec::new();
        if next <= last {
            self.log
                .entries(next, last, self.config.append_bytes_max, &mut entries);
            if entries.is_empty() {
                // The entries were compacted between the term lookup and now.
                self.start_snapshot(peer);
                return true;
            }
        }
        let probing = matches!(pr.state, ProgressState::Probe { .. });
        if entries.is_empty() && !allow_empty && !probing {
            return false;
        }
        let msg_last = prev_index.plus(entries.len() as u64);
        let pr = self
            .progress
            .get_mut(&peer)
            .expect("progress checked above");
        pr.commit_sent = pr.commit_sent.max(commit.min(msg_last));
        match pr.state {
            ProgressState::Probe { .. } => pr.state = ProgressState::Probe { paused: true },
            ProgressState::Replicate if !entries.is_empty() => {
                pr.next_index = msg_last.next();
                pr.in_flight.push_back(msg_last);
            }
            _ => {}
        }
        let sent_entries = !entries.is_empty();
        self.send_now(
            peer,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            },
        );
        sent_entries || probing || allow_empty
    }

    /// Fills the follower's pipeline; if there was nothing to send, tells it about a
    /// commit index a read it forwarded waits for (see [`Node::send_commit`]).
    pub(super) fn send_appends(&mut self, peer: NodeId) {
        let mut sent = false;
        while self.send_append(peer, false) {
            sent = true;
            let pipelined = self
                .progress
                .get(&peer)
                .is_some_and(|p| p.state == ProgressState::Replicate);
            if !pipelined {
                break;
            }
        }
        if !sent {
            self.send_commit(peer, false);
        }
    }

    /// An empty append at the follower's match index, carrying the commit index: it
    /// cannot be rejected, whatever else is in flight. Sent only if the follower was not
    /// told that far yet, and, unless `due`, only as far as a read it forwarded waits for:
    /// a commit index nothing waits for rides on the next append or heartbeat, or goes out
    /// at the next tick (`due`), instead of costing each follower a message, a wake-up and
    /// an answer per commit.
    pub(super) fn send_commit(&mut self, peer: NodeId, due: bool) {
        let commit = self.commit;
        let Some(pr) = self.progress.get(&peer) else {
            return;
        };
        let mut target = commit.min(pr.match_index);
        if !due {
            target = target.min(pr.commit_wanted);
        }
        if pr.state != ProgressState::Replicate || pr.commit_sent >= target {
            return;
        }
        let prev_index = pr.match_index;
        let Some(prev_term) = self.term_of(prev_index) else {
            return;
        };
        if let Some(pr) = self.progress.get_mut(&peer) {
            pr.commit_sent = commit.min(prev_index);
        }
        self.send_now(
            peer,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries: Vec::new(),
                commit,
            },
        );
    }

    pub(super) fn handle_append_response(&mut self, from: NodeId, result: AppendResult) {
        if self.role != Role::Leader {
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        match result {
            AppendResult::Accepted { match_index } => self.append_accepted(from, match_index),
            AppendResult::Rejected {
                rejected_prev,
                hint_index,
                hint_term,
            } => self.append_rejected(from, rejected_prev, hint_index, hint_term),
        }
    }

    /// `from` holds the leader's log up to `match_index`.
    fn append_accepted(&mut self, from: NodeId, match_index: LogIndex) {
        if match_index > self.log.last_index() {
            return;
        }
        let ticks = self.ticks;
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        let advanced = pr.accept(match_index, ticks);
        match pr.state {
            ProgressState::Probe { .. } => {
                pr.state = ProgressState::Replicate;
                pr.next_index = pr.match_index.next();
                pr.in_flight.clear();
            }
            ProgressState::Snapshot { index, .. } if pr.match_index >= index => {
                pr.probe(pr.match_index.next());
            }
            _ => {}
        }
        if advanced && self.maybe_commit() {
            self.needs_broadcast = true;
        }
        self.send_appends(from);
        self.maybe_send_timeout_now(from);
    }

    /// `from` rejected an append after `rejected_prev`: its log differs there, and it
    /// holds an entry of `hint_term` at `hint_index`.
    fn append_rejected(
        &mut self,
        from: NodeId,
        rejected_prev: LogIndex,
        hint_index: LogIndex,
        hint_term: Term,
    ) {
        let Some(pr) = self.progress.get(&from) else {
            return;
        };
        let stale = match pr.state {
            ProgressState::Replicate => rejected_prev <= pr.match_index,
            ProgressState::Probe { .. } => rejected_prev != pr.next_index.prev(),
            ProgressState::Snapshot { .. } => true,
        };
        if stale {
            return;
        }
        // Fast backtracking: skip back over the follower's whole conflicting term at once,
        // to the last index where the leader's term is no later than the follower's,
        // instead of one entry per round trip.
        let mut k = hint_index.min(rejected_prev.prev());
        let floor = self.log.snapshot().meta.index;
        while k > floor {
            match self.log.term(k) {
                Some(t) if t > hint_term => k = k.prev(),
                _ => break,
            }
        }
        let pr = self
            .progress
            .get_mut(&from)
            .expect("progress checked above");
        let next = k.next().min(rejected_prev).max(pr.match_index.next());
        pr.probe(next);
        if next > rejected_prev {
            // The follower rejects what it already acknowledged: it is broken or lost its
            // disk. Retry at the next heartbeat rather than in a tight loop.
            pr.state = ProgressState::Probe { paused: true };
        } else {
            self.send_append(from, false);
        }
    }

    /// Advances the commit index to the highest index stored durably on a majority of
    /// voters, if that entry is of the leader's own term. Returns whether it moved.
    pub(super) fn maybe_commit(&mut self) -> bool {
        let id = self.config.id;
        let durable = self.durability.durable_index();
        let progress = &self.progress;
        let candidate = self
            .membership
            .voters()
            .committed_index(|voter| {
                if voter == id {
                    Some(durable)
                } else {
                    progress.get(&voter).map(|p| p.match_index)
                }
            })
            .unwrap_or(LogIndex::ZERO);
        if candidate <= self.commit {
            return false;
        }
        // Figure 8 of the paper: an entry of an earlier term stored on a majority can
        // still be overwritten, so only an entry of the current term commits by counting;
        // earlier ones commit with it.
        let own_term = self.term_of(candidate) == Some(self.term);
        if !own_term && !self.config.broken().commit_old_term_by_counting {
            return false;
        }
        self.commit = candidate;
        self.on_commit_advanced();
        true
    }

    fn on_commit_advanced(&mut self) {
        if self.term_of(self.commit) == Some(self.term) {
            self.reads.committed_in_term(self.commit);
        }
        if self.role == Role::Leader && !self.is_voter() && self.commit >= self.membership.index() {
            // A leader removed from the voters leads until the change commits, then steps
            // down (thesis, section 4.2.2).
            self.become_follower(self.term, None);
        }
    }

    pub(super) fn broadcast_heartbeat(&mut self) {
        let round = self.reads.next_round(self.ticks);
        let ticks = self.ticks;
        let stall_ticks = self.config.election_timeout_ticks.start;
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for peer in peers {
            let pr = self.progress.get_mut(&peer).expect("peer listed above");
            let commit = self.commit.min(pr.match_index);
            let mut resend_snapshot = false;
            match &mut pr.state {
                ProgressState::Probe { paused } => *paused = false,
                ProgressState::Replicate => {
                    // The last append of a burst may have been lost: nothing would then
                    // trigger a rejection, so fall back to probing after a quiet spell.
                    if !pr.in_flight.is_empty() && ticks - pr.progress_tick >= stall_ticks {
                        let next = pr.match_index.next();
                        pr.probe(next);
                        pr.progress_tick = ticks;
                    }
                }
                ProgressState::Snapshot { acked, .. } => {
                    resend_snapshot = !*acked;
                    *acked = false;
                }
            }
            pr.heartbeat_sent(round);
            pr.commit_sent = pr.commit_sent.max(commit);
            self.send_now(peer, MessageBody::Heartbeat { commit, round });
            if resend_snapshot {
                self.send_snapshot_chunk(peer);
            } else {
                self.send_append(peer, false);
            }
        }
        // Only a leader that is itself the one voter confirms a round alone: a leader
        // being removed, whose new configuration's one voter is another node, must hear
        // from that node (which may already have elected itself under it).
        if self.voters_len() == 1 && self.is_voter() {
            self.confirm_round(round);
        }
    }

    pub(super) fn handle_heartbeat_response(
        &mut self,
        from: NodeId,
        round: u64,
        last_index: LogIndex,
    ) {
        // A round this leader has not sent yet (rounds are numbered across terms) comes from
        // a forged or corrupted message: counted, it would confirm reads and the lease for
        // every round up to it before the follower answered any of them.
        if self.role != Role::Leader || round > self.reads.round() {
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.acked_round = pr.acked_round.max(round);
        if let ProgressState::Probe { paused } = &mut pr.state {
            *paused = false;
        } else if pr.heartbeat_answered(round, last_index) {
            // Appends streamed before the heartbeat are missing from the follower's log
            // (it restarted, or the link dropped them): start again from what it has.
            pr.probe(last_index.next());
        }
        let needs_more = pr.match_index < self.log.last_index();
        let id = self.config.id;
        let own = self.reads.round();
        let progress = &self.progress;
        let confirmed = self
            .membership
            .voters()
            .committed_index(|voter| {
                if voter == id {
                    Some(own)
                } else {
                    progress.get(&voter).map(|p| p.acked_round)
                }
            })
            .unwrap_or(0);
        self.confirm_round(confirmed);
        if needs_more {
            self.send_append(from, false);
        }
    }

    /// The leader's heartbeat: learns the commit index (no further than its log goes) and
    /// answers with how far its log goes.
    pub(super) fn handle_heartbeat(&mut self, from: NodeId, commit: LogIndex, round: u64) {
        let commit = commit.min(self.log.last_index());
        if commit > self.commit {
            self.commit = commit;
        }
        let last_index = self.log.last_index();
        self.send(from, MessageBody::HeartbeatResponse { round, last_index });
    }

    pub(super) fn handle_append(
        &mut self,
        from: NodeId,
        mut prev_index: LogIndex,
        mut prev_term: Term,
        mut entries: Vec<Entry>,
        leader_commit: LogIndex,
    ) {
        let msg_last = prev_index.plus(entries.len() as u64);
        if prev_index < self.commit {
            // Entries up to the commit index are known to match the leader's.
            if msg_last <= self.commit {
                self.send(
                    from,
                    MessageBody::AppendResponse {
                        result: AppendResult::Accepted {
                            match_index: msg_last,
                        },
                    },
                );
                return;
            }
            let skip = usize::try_from(self.commit.0 - prev_index.0).unwrap_or(usize::MAX);
            entries.drain(..skip.min(entries.len()));
            prev_index = self.commit;
            prev_term = self.term_of(prev_index).unwrap_or(Term::ZERO);
        }
        if self.term_of(prev_index) != Some(prev_term) {
            self.reject_append(from, prev_index, prev_term);
            return;
        }
        if !self.append_new_entries(&entries) {
            return;
        }
        let new_commit = leader_commit.min(msg_last);
        if new_commit > self.commit {
            self.commit = new_commit;
        }
        self.send(
            from,
            MessageBody::AppendResponse {
                result: AppendResult::Accepted {
                    match_index: msg_last,
                },
            },
        );
    }

    /// Answers an append whose previous entry this node does not hold with the leader's
    /// `prev_term`, with a hint for fast backtracking: the last index at or below
    /// `prev_index` (and above the commit index) whose term is no later than `prev_term`.
    fn reject_append(&mut self, from: NodeId, prev_index: LogIndex, prev_term: Term) {
        let last = self.log.last_index();
        let mut hint_index = prev_index.min(last);
        while hint_index > self.commit {
            match self.term_of(hint_index) {
                Some(t) if t > prev_term => hint_index = hint_index.prev(),
                _ => break,
            }
        }
        let hint_term = self.term_of(hint_index).unwrap_or(Term::ZERO);
        self.send(
            from,
            MessageBody::AppendResponse {
                result: AppendResult::Rejected {
                    rejected_prev: prev_index,
                    hint_index,
                    hint_term,
                },
            },
        );
    }

    /// Appends the entries of a matching append that this node does not hold yet, cutting
    /// off a suffix that conflicts with them. Returns `false`, appending nothing, if they
    /// contradict a committed entry: the leader is broken.
    fn append_new_entries(&mut self, entries: &[Entry]) -> bool {
        let last = self.log.last_index();
        let mut start = entries.len();
        for (at, entry) in entries.iter().enumerate() {
            if entry.index > last {
                start = at;
                break;
            }
            if self.term_of(entry.index) != Some(entry.term) {
                if entry.index <= self.commit {
                    return false;
                }
                self.truncate_after(entry.index.prev());
                start = at;
                break;
            }
        }
        self.append_entries(&entries[start..]);
        true
    }
}
