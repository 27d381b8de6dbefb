//! Elections: terms and votes, pre-vote, check-quorum, becoming follower or leader, and
//! leader transfer.

use std::collections::BTreeMap;

use synod_quorum::{Outcome, Quorum};

use super::{Node, Role, TransferError};
use crate::config::Config;
use crate::message::{Message, MessageBody};
use crate::storage::HardState;
use crate::types::{LogIndex, NodeId, Payload, Term, next_term};
use synod_node::Rng;

/// The election timer, and the votes of an election this node runs.
#[derive(Debug)]
pub(super) struct Election {
    /// Ticks since this node last heard from its leader (on a leader: since its last
    /// quorum check).
    pub(super) elapsed: u64,
    /// The randomized timeout after which a follower campaigns, drawn again at each reset.
    pub(super) timeout: u64,
    /// Vote requests are ignored until this tick after a start (the lease a crashed
    /// follower must still honour).
    lease_guard_until_tick: u64,
    /// The answers to this node's vote or pre-vote requests.
    votes: BTreeMap<NodeId, bool>,
    /// The write that recorded a candidate's vote for itself: counted once durable.
    self_vote_seq: u64,
}

/// An election timeout drawn from `config.election_timeout_ticks` (`start..end`; `start`
/// if the range is empty).
fn draw_timeout(rng: &mut Rng, config: &Config) -> u64 {
    let ticks = &config.election_timeout_ticks;
    ticks.start + rng.below(ticks.end.saturating_sub(ticks.start))
}

impl Election {
    /// The timer of a node that just started, its first timeout drawn from `rng`.
    pub(super) fn new(config: &Config, rng: &mut Rng) -> Election {
        let timeout = draw_timeout(rng, config);
        let lease_guard_until_tick = if config.check_quorum {
            config.election_timeout_ticks.start
        } else {
            0
        };
        Election {
            elapsed: 0,
            timeout,
            lease_guard_until_tick,
            votes: BTreeMap::new(),
            self_vote_seq: 0,
        }
    }
}

/// A leadership transfer in progress, and whether one was tried in this term.
#[derive(Debug, Default)]
pub(super) struct Transfer {
    /// The node leadership is being handed to.
    pub(super) to: Option<NodeId>,
    /// Set once this leader has sent a `TimeoutNow` in its term: no more lease reads in it.
    pub(super) tried_in_term: bool,
}

impl Node {
    pub(super) fn is_voter(&self) -> bool {
        self.membership.current().is_voter(self.config.id)
    }

    pub(super) fn voters_len(&self) -> usize {
        self.membership.current().voters().len()
    }

    pub(super) fn in_lease(&self) -> bool {
        if !self.config.check_quorum {
            return false;
        }
        if self.ticks < self.election.lease_guard_until_tick {
            return true;
        }
        self.leader.is_some() && self.election.elapsed < self.config.election_timeout_ticks.start
    }

    fn reset_election_timer(&mut self) {
        self.election.elapsed = 0;
        self.election.timeout = draw_timeout(&mut self.rng, &self.config);
    }

    pub(super) fn campaign(&mut self, transfer: bool) {
        if self.config.pre_vote && !transfer {
            self.role = Role::PreCandidate;
            self.leader = None;
            self.election.votes.clear();
            self.reset_election_timer();
            self.fail_reads();
            self.election.votes.insert(self.config.id, true);
            let (last_index, last_term) = self.last_entry();
            let ask = next_term(self.term);
            for voter in self.other_voters() {
                self.outbox.push(Message {
                    from: self.config.id,
                    to: voter,
                    term: ask,
                    body: MessageBody::PreVote {
                        last_index,
                        last_term,
                    },
                });
            }
            self.tally_votes();
        } else {
            self.campaign_now(transfer);
        }
    }

    pub(super) fn campaign_now(&mut self, transfer: bool) {
        let term = next_term(self.term);
        self.set_term(term, Some(self.config.id));
        self.role = Role::Candidate;
        self.leader = None;
        self.election.votes.clear();
        self.reset_election_timer();
        self.fail_reads();
        self.election.self_vote_seq = self.durability.written();
        let (last_index, last_term) = self.last_entry();
        for voter in self.other_voters() {
            self.send(
                voter,
                MessageBody::Vote {
                    last_index,
                    last_term,
                    transfer,
                },
            );
        }
        self.tally_votes();
    }

    pub(super) fn tally_votes(&mut self) {
        // A candidate counts its own vote only once it is durable, so that a crash cannot
        // leave it leader of a term it has forgotten.
        let self_durable = self.role == Role::PreCandidate
            || self.durability.is_durable(self.election.self_vote_seq)
            || self.config.broken().skip_vote_persistence;
        let id = self.config.id;
        let outcome = self.membership.voters().tally(|voter| {
            if voter == id {
                self_durable.then_some(true)
            } else {
                self.election.votes.get(&voter).copied()
            }
        });
        match outcome {
            Outcome::Won => match self.role {
                Role::PreCandidate => self.campaign_now(false),
                Role::Candidate => self.become_leader(),
                _ => {}
            },
            Outcome::Lost(_) => self.become_follower(self.term, None),
            Outcome::Pending => {}
        }
    }

    pub(super) fn handle_pre_vote(
        &mut self,
        from: NodeId,
        term: Term,
        last_index: LogIndex,
        last_term: Term,
    ) {
        let granted =
            term > self.term && !self.in_lease() && self.log_up_to_date(last_index, last_term);
        let reply_term = if granted { term } else { self.term };
        self.outbox.push(Message {
            from: self.config.id,
            to: from,
            term: reply_term,
            body: MessageBody::PreVoteResponse { granted },
        });
    }

    pub(super) fn handle_vote(
        &mut self,
        from: NodeId,
        last_index: LogIndex,
        last_term: Term,
        transfer: bool,
    ) {
        let can_vote = self.vote.is_none_or(|v| v == from) && self.leader.is_none();
        let trusted = transfer && self.config.broken().transfer_without_catch_up;
        let granted = can_vote && (trusted || self.log_up_to_date(last_index, last_term));
        if granted {
            self.reset_election_timer();
            if self.vote != Some(from) {
                self.set_term(self.term, Some(from));
            }
        }
        if self.config.broken().skip_vote_persistence {
            self.send_now(from, MessageBody::VoteResponse { granted });
        } else {
            self.send(from, MessageBody::VoteResponse { granted });
        }
    }

    /// An answer to this node's pre-vote request for `term`.
    pub(super) fn handle_pre_vote_response(&mut self, from: NodeId, term: Term, granted: bool) {
        if self.role == Role::PreCandidate
            && (term == next_term(self.term) || (!granted && term == self.term))
        {
            self.election.votes.insert(from, granted);
            self.tally_votes();
        }
    }

    /// An answer to this node's vote request.
    pub(super) fn handle_vote_response(&mut self, from: NodeId, granted: bool) {
        if self.role == Role::Candidate {
            self.election.votes.insert(from, granted);
            self.tally_votes();
        }
    }

    /// The leader hands over to this node: it campaigns at once, and its vote requests say
    /// so, for the voters to set their leader lease aside.
    pub(super) fn handle_timeout_now(&mut self) {
        if self.role != Role::Leader && self.is_voter() {
            self.campaign_now(true);
        }
    }

    /// Raft's up-to-date check: a candidate's log must end in a later term, or the same
    /// term and at least as far, for this node to vote for it.
    fn log_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        let (our_index, our_term) = self.last_entry();
        (last_term, last_index) >= (our_term, our_index)
    }

    fn other_voters(&self) -> Vec<NodeId> {
        self.membership
            .current()
            .voters()
            .iter()
            .copied()
            .filter(|v| *v != self.config.id)
            .collect()
    }

    fn set_term(&mut self, term: Term, vote: Option<NodeId>) {
        self.term = term;
        self.vote = vote;
        let stored_vote = if self.config.broken().skip_vote_persistence {
            None
        } else {
            vote
        };
        self.log.set_hard_state(HardState {
            term,
            vote: stored_vote,
        });
        self.durability.wrote();
    }

    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term || self.role != Role::Follower {
            self.reset_election_timer();
        }
        if term > self.term {
            self.set_term(term, None);
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.election.votes.clear();
        self.progress.clear();
        self.transfer.to = None;
        self.reads.end_lease();
        self.fail_reads();
    }

    /// Hears from the leader of the current term.
    pub(super) fn follow(&mut self, leader: NodeId) {
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(leader));
        }
        self.leader = Some(leader);
        self.election.elapsed = 0;
    }

    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.election.votes.clear();
        self.transfer = Transfer::default();
        self.election.elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reads.start_term();
        self.progress.clear();
        self.sync_progress();
        // The no-op lets the new leader commit, and so learn the commit index of,
        // everything its predecessors left uncommitted (the paper's section 8).
        self.append_local(Payload::Noop);
        self.needs_broadcast = true;
    }

    pub(super) fn quorum_active(&mut self) -> bool {
        let id = self.config.id;
        let progress = &self.progress;
        let active = self.membership.voters().tally(|voter| {
            Some(voter == id || progress.get(&voter).is_some_and(|p| p.recent_active))
        });
        for p in self.progress.values_mut() {
            p.recent_active = false;
        }
        active == Outcome::Won
    }

    /// Hands leadership to `to`: the leader stops taking proposals, brings `to` up to date
    /// and tells it to campaign at once. Abandoned after an election timeout.
    ///
    /// # Errors
    ///
    /// [`TransferError::NotLeader`] or [`TransferError::NotAVoter`].
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader);
        }
        if to == self.config.id || !self.membership.current().is_voter(to) {
            return Err(TransferError::NotAVoter(to));
        }
        self.transfer.to = Some(to);
        self.election.elapsed = 0;
        let caught_up = self
            .progress
            .get(&to)
            .is_some_and(|p| p.match_index == self.log.last_index())
            || self.config.broken().transfer_without_catch_up;
        if caught_up {
            self.transfer.tried_in_term = true;
            self.send_now(to, MessageBody::TimeoutNow);
        } else {
            self.send_append(to, true);
        }
        Ok(())
    }

    pub(super) fn maybe_send_timeout_now(&mut self, peer: NodeId) {
        if let Some(to) = self.transfer.to {
            let caught_up = self
                .progress
                .get(&peer)
                .is_some_and(|p| p.match_index == self.log.last_index());
            if to == peer && caught_up {
                self.transfer.tried_in_term = true;
                self.send_now(peer, MessageBody::TimeoutNow);
            }
        }
    }
}
