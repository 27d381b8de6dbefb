//! Scenario tests, one per rule of the Raft paper (Ongaro and Ousterhout, 2014), on Raft
//! nodes stepped by hand through synod-sim's `Stepper` and `ProtocolNode` (see
//! [`crate::stepped`]). Each names the section it checks.

use synod_consensus::invariants::{Invariant, Violation};
use synod_consensus::{
    AppendResult, LogIndex, Message, MessageBody, NodeId, Payload, ProposeError, RequestError,
    Role, Term,
};

use crate::stepped::Cluster;

fn n(id: u64) -> NodeId {
    NodeId::new(id)
}

fn quiet(c: synod_consensus::ConfigBuilder) -> synod_consensus::ConfigBuilder {
    c
}

// ----- 5.2 Leader election ----------------------------------------------------------------

#[test]
fn s5_2_a_leader_is_elected_by_timeouts_and_others_follow() {
    let mut c = Cluster::new(3, quiet);
    let leader = c.run_until_leader(200).expect("a leader within 200 ticks");
    let term = c.node(leader).term();
    for id in c.ids() {
        assert_eq!(c.node(id).term(), term);
        if id != leader {
            assert_eq!(c.node(id).role(), Role::Follower);
            assert_eq!(c.node(id).leader(), Some(leader));
        }
    }
    assert!(c.violation.is_none(), "{:?}", c.violation);
}

#[test]
fn s5_2_randomized_timeouts_come_from_the_seed() {
    // Same seeds, same history: the first leader and its term are reproducible.
    let run = || {
        let mut c = Cluster::new(5, quiet);
        let leader = c.run_until_leader(500).unwrap();
        (leader, c.node(leader).term())
    };
    assert_eq!(run(), run());
}

#[test]
fn s5_2_a_node_votes_at_most_once_per_term() {
    let mut c = Cluster::new(3, |b| b.pre_vote(false).check_quorum(false));
    let term = Term::new(1);
    let vote = |from: u64| Message {
        from: n(from),
        to: n(1),
        term,
        body: MessageBody::Vote {
            last_index: LogIndex::ZERO,
            last_term: Term::ZERO,
            transfer: false,
        },
    };
    c.deliver(vote(2));
    c.deliver(vote(3));
    let grants: Vec<(NodeId, bool)> = c
        .net()
        .filter_map(|m| match m.body {
            MessageBody::VoteResponse { granted } => Some((m.to, granted)),
            _ => None,
        })
        .collect();
    assert_eq!(grants, vec![(n(2), true), (n(3), false)]);
    assert_eq!(c.node(n(1)).vote(), Some(n(2)));
}

#[test]
fn s5_2_a_higher_term_makes_a_leader_step_down() {
    let mut c = Cluster::new(3, |b| b.check_quorum(false));
    c.elect(n(1));
    let term = c.node(n(1)).term();
    c.deliver(Message {
        from: n(2),
        to: n(1),
        term: Term::new(term.get() + 5),
        body: MessageBody::HeartbeatResponse {
            round: 0,
            last_index: LogIndex::ZERO,
        },
    });
    assert_eq!(c.node(n(1)).role(), Role::Follower);
    assert_eq!(c.node(n(1)).term(), Term::new(term.get() + 5));
}

#[test]
fn s5_2_a_split_vote_is_resolved_by_a_later_election() {
    let mut c = Cluster::new(4, |b| b.pre_vote(false).check_quorum(false));
    // Nodes 1 and 2 campaign in the same term; 3 votes for 1, 4 votes for 2: no majority.
    for id in [1, 2] {
        c.deliver(Message {
            from: n(3),
            to: n(id),
            term: Term::ZERO,
            body: MessageBody::TimeoutNow,
        });
    }
    let mut msgs: Vec<Message> = c.take_all();
    msgs.retain(|m| !((m.from == n(1) && m.to == n(4)) || (m.from == n(2) && m.to == n(3))));
    for m in msgs {
        c.deliver(m);
    }
    c.deliver_all();
    assert_eq!(c.leader(), None, "a split vote elects nobody");
    let leader = c.run_until_leader(500).expect("a later election succeeds");
    assert!(c.node(leader).term() > Term::new(1));
}

// ----- Pre-vote and check-quorum (thesis 9.6) -------------------------------------------------

#[test]
fn pre_vote_a_partitioned_node_does_not_raise_its_term_or_depose_the_leader() {
    let mut c = Cluster::new(3, quiet);
    let leader = c.run_until_leader(200).unwrap();
    let term = c.node(leader).term();
    let other = c.ids().into_iter().find(|x| *x != leader).unwrap();
    c.isolate(other);
    for _ in 0..200 {
        c.tick_all();
        c.deliver_all();
    }
    assert_eq!(c.node(other).term(), term, "pre-vote keeps the term");
    c.heal();
    for _ in 0..50 {
        c.tick_all();
        c.deliver_all();
    }
    assert_eq!(c.leader(), Some(leader));
    assert_eq!(c.node(leader).term(), term);
}

#[test]
fn check_quorum_an_isolated_leader_steps_down() {
    let mut c = Cluster::new(3, quiet);
    let leader = c.run_until_leader(200).unwrap();
    c.isolate(leader);
    for _ in 0..60 {
        c.tick_all();
        c.deliver_all();
    }
    assert_ne!(c.node(leader).role(), Role::Leader);
    let new = c.leader().expect("the majority elects a new leader");
    assert_ne!(new, leader);
}

#[test]
fn check_quorum_followers_ignore_votes_while_they_hear_from_the_leader() {
    let mut c = Cluster::new(3, quiet);
    let leader = c.run_until_leader(200).unwrap();
    let term = c.node(leader).term();
    let follower = c.ids().into_iter().find(|x| *x != leader).unwrap();
    c.deliver(Message {
        from: n(99),
        to: follower,
        term: Term::new(term.get() + 1),
        body: MessageBody::Vote {
            last_index: LogIndex(1000),
            last_term: term,
            transfer: false,
        },
    });
    assert_eq!(
        c.node(follower).term(),
        term,
        "the disruptive vote was ignored"
    );
}

// ----- 5.4.1 Election restriction --------------------------------------------------------------

#[test]
fn s5_4_1_a_candidate_with_a_stale_log_cannot_win() {
    let mut c = Cluster::new(3, |b| b.check_quorum(false));
    c.elect(n(1));
    // Node 3 misses an entry that nodes 1 and 2 hold (so it is committed).
    c.blocked.insert((n(1), n(3)));
    c.propose(n(1), "x");
    c.deliver_all();
    c.heal();
    c.crash(n(1));
    // Node 3 campaigns: node 2 refuses, its log is more up to date.
    let term = c.node(n(3)).term();
    c.deliver(Message {
        from: n(2),
        to: n(3),
        term,
        body: MessageBody::TimeoutNow,
    });
    c.deliver_all();
    assert_ne!(c.node(n(3)).role(), Role::Leader);
    c.elect(n(2));
    assert!(c.violation.is_none(), "{:?}", c.violation);
}

// ----- 5.3 Log replication ---------------------------------------------------------------------

#[test]
fn s5_3_entries_commit_on_a_majority_and_apply_in_order_everywhere() {
    let mut c = Cluster::new(3, quiet);
    c.elect(n(1));
    for i in 0..10 {
        c.propose(n(1), &format!("cmd{i}"));
    }
    c.deliver_all();
    c.tick_all();
    c.deliver_all();
    for id in c.ids() {
        let cmds: Vec<String> = c
            .applied_commands(id)
            .iter()
            .map(|(_, d)| String::from_utf8(d.to_vec()).unwrap())
            .collect();
        let expected: Vec<String> = (0..10).map(|i| format!("cmd{i}")).collect();
        assert_eq!(cmds, expected, "on {id}");
    }
    assert!(c.violation.is_none(), "{:?}", c.violation);
}

#[test]
fn s5_3_a_new_leader_appends_a_noop_of_its_term() {
    let mut c = Cluster::new(3, quiet);
    c.elect(n(2));
    let log = c.log(n(2));
    let last = log.last().unwrap();
    assert_eq!(last.payload, Payload::Noop);
    assert_eq!(last.term, c.node(n(2)).term());
    assert_eq!(c.node(n(2)).commit_index(), last.index);
}

#[test]
fn s5_3_proposals_to_a_follower_name_the_leader() {
    let mut c = Cluster::new(3, quiet);
    c.elect(n(1));
    let err = c.try_propose(n(2), "x").unwrap_err();
    assert_eq!(
        err,
        RequestError::Propose(ProposeError::NotLeader { leader: Some(n(1)) })
    );
    assert_eq!(err.to_string(), "not the leader; the leader is n1");
}

#[test]
fn s5_3_log_matching_a_follower_rejects_an_append_whose_prev_does_not_match() {
    let mut c = Cluster::new(3, quiet);
    c.elect(n(1));
    let term = c.node(n(1)).term();
    c.deliver(Message {
        from: n(1),
        to: n(2),
        term,
        body: MessageBody::Append {
            prev_index: LogIndex(7),
            prev_term: term,
            entries: Vec::new(),
            commit: LogIndex::ZERO,
        },
    });
    let reply = c.take_all().pop().unwrap();
    assert!(matches!(
        reply.body,
        MessageBody::AppendResponse {
            result: AppendResult::Rejected {
                rejected_prev: LogIndex(7),
                ..
            }
        }
    ));
}

#[test]
fn s5_3_a_conflicting_follower_suffix_is_replaced_by_the_leaders() {
    let mut c = Cluster::new(3, |b| b.check_quorum(false));
    c.elect(n(1));
    // Node 1 appends entries that only it holds, then loses leadership.
    c.isolate(n(1));
    for i in 0..5 {
        c.propose(n(1), &format!("lost{i}"));
    }
    c.deliver_all();
    c.heal();
    c.elect(n(2));
    for i in 0..3 {
        c.propose(n(2), &format!("kept{i}"));
    }
    c.deliver_all();
    c.tick_all();
    c.deliver_all();
    assert_eq!(c.log_terms(n(1)), c.log_terms(n(2)));
    let applied = c.applied_commands(n(1));
    let cmds: Vec<&[u8]> = applied.iter().map(|(_, d)| &d[..]).collect();
    assert_eq!(cmds, vec![&b"kept0"[..], b"kept1", b"kept2"]);
    assert!(c.violation.is_none(), "{:?}", c.violation);
}

#[test]
fn s5_3_fast_backtracking_skips_a_whole_conflicting_term_per_round_trip() {
    let mut c = Cluster::new(3, |b| b.check_quorum(false).append_bytes_max(1 << 20));
    c.elect(n(1));
    c.isolate(n(1));
    for i in 0..200 {
        c.propose(n(1), &format!("stale{i}"));
    }
    c.drop_all();
    c.heal();
    c.crash(n(1));
    c.elect(n(2));
    for i in 0..50 {
        c.propose(n(2), &format!("new{i}"));
    }
    c.deliver_all();
    c.restart(n(1));
    c.record_delivered = true;
    for _ in 0..5 {
        c.tick_all();
        c.deliver_all();
    }
    let rejections = c
        .delivered
        .iter()
        .filter(|m| {
            matches!(
                m.body,
                MessageBody::AppendResponse {
                    result: AppendResult::Rejected { .. }
                }
            )
        })
        .count();
    assert_eq!(c.log_terms(n(1)), c.log_terms(n(2)));
    // 200 divergent entries of one term: a few rejections, not 200.
    assert!(rejections <= 3, "{rejections} rejections");
}

#[test]
fn s5_3_flow_control_bounds_messages_in_flight_and_bytes_per_message() {
    let mut c = Cluster::new(2, |b| b.in_flight_max(3).append_bytes_max(100));
    c.elect(n(1));
    c.deliver_all();
    // Node 2 stops answering; node 1 proposes 50 entries of 40 bytes.
    let data = "y".repeat(40);
    for _ in 0..50 {
        c.propose(n(1), &data);
    }
    let appends: Vec<&Message> = c
        .net()
        .filter(|m| matches!(m.body, MessageBody::Append { .. }))
        .collect();
    assert!(appends.len() <= 3, "{} appends in flight", appends.len());
    for m in &appends {
        let MessageBody::Append { entries, .. } = &m.body else {
            unreachable!()
        };
        let bytes: u64 = entries.iter().map(synod_consensus::Entry::size_bytes).sum();
        assert!(
            bytes <= 100 || entries.len() == 1,
            "{bytes} bytes in one append"
        );
    }
    c.deliver_all();
    c.tick_all();
    c.deliver_all();
    assert_eq!(c.node(n(2)).last_index(), c.node(n(1)).last_index());
}

// ----- 5.4.2 Committing entries from previous terms (Figure 8) ---------------------------------

/// Delivers the messages in flight between the listed (from, to) pairs, dropping the rest.
fn keep(c: &mut Cluster, allowed: &[(u64, u64)], votes_only: bool) {
    for _ in 0..4 {
        let msgs: Vec<Message> = c.take_all();
        for m in msgs {
            let is_vote = matches!(
                m.body,
                MessageBody::Vote { .. } | MessageBody::VoteResponse { .. }
            );
            if allowed.contains(&(m.from.get(), m.to.get())) && (is_vote || !votes_only) {
                c.deliver(m);
            }
        }
    }
}

/// Makes `id` campaign (as after a leader transfer) until it wins, delivering only
/// election messages between the listed pairs.
fn campaign_until_leader(c: &mut Cluster, id: u64, allowed: &[(u64, u64)]) {
    for _ in 0..4 {
        let term = c.node(n(id)).term();
        c.deliver(Message {
            from: n(if id == 1 { 2 } else { 1 }),
            to: n(id),
            term,
            body: MessageBody::TimeoutNow,
        });
        keep(c, allowed, true);
        if c.node(n(id)).role() == Role::Leader {
            c.drop_all();
            return;
        }
    }
    panic!("{id} did not win");
}

/// Figure 8: an entry of an old term stored on a majority is not committed by counting;
/// the leader must commit an entry of its own term. With the rule broken on purpose, the
/// checker sees a committed entry overwritten.
fn figure_8(bug: bool) -> Option<Violation> {
    let mut c = Cluster::new(5, move |b| {
        b.check_quorum(false)
            .pre_vote(false)
            .append_bytes_max(1)
            .broken(synod_consensus::Broken {
                commit_old_term_by_counting: bug,
                ..Default::default()
            })
    });
    // (a) S1 leads term 1 (its no-op reaches everyone) and replicates X at index 2 to S2
    // only.
    c.elect(n(1));
    c.deliver_all();
    c.propose(n(1), "X");
    keep(&mut c, &[(1, 2), (2, 1)], false);
    c.drop_all();
    assert_eq!(c.node(n(2)).last_index(), LogIndex(2));
    // (b) S1 crashes; S5 wins term 2 with votes from S3 and S4; its no-op, at index 2,
    // reaches nobody; it crashes.
    c.crash(n(1));
    campaign_until_leader(&mut c, 5, &[(5, 3), (5, 4), (3, 5), (4, 5)]);
    c.crash(n(5));
    // (c) S1 restarts and wins term 3 with S2 and S3; it replicates X to S3 (and learns
    // that S2 holds it), but its own entries (index 3 on, term 3) reach nobody.
    c.restart(n(1));
    campaign_until_leader(&mut c, 1, &[(1, 2), (1, 3), (2, 1), (3, 1)]);
    c.propose(n(1), "Z");
    c.drop_all();
    for _ in 0..2 {
        c.tick(n(1));
    }
    for _ in 0..10 {
        let msgs: Vec<Message> = c.take_all();
        for mut m in msgs {
            // Appends to S3 lose every entry past X on the way (as if sent one at a
            // time and the later ones lost).
            let through = match &mut m.body {
                MessageBody::Append { entries, .. } => {
                    entries.retain(|e| e.index <= LogIndex(2));
                    m.to == n(2) || m.to == n(3)
                }
                MessageBody::AppendResponse { .. } | MessageBody::HeartbeatResponse { .. } => {
                    m.from == n(2) || m.from == n(3)
                }
                MessageBody::Heartbeat { .. } => m.to == n(2) || m.to == n(3),
                _ => false,
            };
            if through {
                c.deliver(m);
            }
        }
        c.tick(n(1));
    }
    c.drop_all();
    assert_eq!(c.node(n(3)).last_index(), LogIndex(2), "S3 holds X");
    let x_committed = c.node(n(1)).commit_index() >= LogIndex(2);
    assert_eq!(x_committed, bug, "X commits by counting only with the bug");
    // (d) S1 crashes; S5 restarts and wins with S2, S3 and S4 (its last term, 2, is
    // higher than theirs) and overwrites index 2.
    c.crash(n(1));
    c.restart(n(5));
    campaign_until_leader(&mut c, 5, &[(5, 2), (5, 3), (5, 4), (2, 5), (3, 5), (4, 5)]);
    c.crash(n(1));
    for _ in 0..10 {
        c.tick_all();
        c.deliver_all();
    }
    if !bug {
        assert_eq!(c.log(n(3))[1].term, Term::new(2), "S5's entry replaced X");
    }
    c.violation.clone()
}

#[test]
fn s5_4_2_figure_8_an_old_term_entry_is_not_committed_by_counting() {
    assert_eq!(figure_8(false), None);
}

#[test]
fn s5_4_2_figure_8_the_reintroduced_bug_is_caught() {
    let violation = figure_8(true).expect("the checker must catch the Figure 8 bug");
    assert!(
        matches!(
            violation.invariant(),
            Invariant::StateMachineSafety | Invariant::LeaderCompleteness
        ),
        "{violation}"
    );
    println!("figure 8 bug caught: {violation}");
}

// ----- Persistence before response (5.1, 5.2: persistent state) --------------------------------

#[test]
fn persistence_a_follower_answers_an_append_only_once_the_entries_are_durable() {
    let mut c = Cluster::new(3, quiet);
    c.elect(n(1));
    c.set_auto_sync(false);
    c.propose(n(1), "x");
    c.sync(n(1));
    let appends: Vec<Message> = c.take_all();
    for m in appends {
        c.deliver(m);
    }
    let early = c
        .net()
        .filter(|m| matches!(m.body, MessageBody::AppendResponse { .. }))
        .count();
    assert_eq!(early, 0, "no acknowledgement before the sync");
    // A crash now loses the entry, and nobody was told it was stored.
    c.crash(n(2));
    c.restart(n(2));
    assert_eq!(c.node(n(2)).last_index(), LogIndex(1));
    c.sync(n(3));
    let acks = c
        .net()
        .filter(|m| matches!(m.body, MessageBody::AppendResponse { .. }))
        .count();
    assert_eq!(acks, 1, "node 3 acknowledges after its sync");
}

#[test]
fn persistence_the_leader_counts_its_own_entry_only_once_durable() {
    let mut c = Cluster::new(3, quiet);
    c.elect(n(1));
    c.blocked.insert((n(1), n(3)));
    c.set_auto_sync(false);
    let index = c.propose(n(1), "x");
    // Node 2 stores and acknowledges; the leader has not synced: 1 of 3 durable copies.
    let msgs: Vec<Message> = c.take_all();
    for m in msgs {
        c.deliver(m);
    }
    c.sync(n(2));
    c.deliver_all();
    assert!(
        c.node(n(1)).commit_index() < index,
        "not committed before the leader's sync"
    );
    c.sync(n(1));
    assert_eq!(c.node(n(1)).commit_index(), index);
}

#[test]
fn persistence_a_vote_is_granted_only_once_durable_and_survives_a_crash() {
    let mut c = Cluster::new(3, |b| b.pre_vote(false).check_quorum(false));
    c.set_auto_sync(false);
    let vote = |from: u64, term: u64| Message {
        from: n(from),
        to: n(1),
        term: Term::new(term),
        body: MessageBody::Vote {
            last_index: LogIndex::ZERO,
            last_term: Term::ZERO,
            transfer: false,
        },
    };
    c.deliver(vote(2, 1));
    assert!(c.net().next().is_none(), "the grant waits for the sync");
    c.sync(n(1));
    assert_eq!(c.net().count(), 1);
    c.drop_all();
    c.crash(n(1));
    c.restart(n(1));
    assert_eq!(c.node(n(1)).vote(), Some(n(2)));
    c.deliver(vote(3, 1));
    c.sync(n(1));
    let granted = c
        .net()
        .any(|m| matches!(m.body, MessageBody::VoteResponse { granted: true }));
    assert!(!granted, "no second vote in term 1 after a restart");
}

#[test]
fn persistence_a_crash_before_the_sync_forgets_an_ungranted_vote() {
    let mut c = Cluster::new(3, |b| b.pre_vote(false).check_quorum(false));
    c.set_auto_sync(false);
    c.deliver(Message {
        from: n(2),
        to: n(1),
        term: Term::new(1),
        body: MessageBody::Vote {
            last_index: LogIndex::ZERO,
            last_term: Term::ZERO,
            transfer: false,
        },
    });
    c.crash(n(1));
    c.restart(n(1));
    assert_eq!(c.node(n(1)).vote(), None);
    assert!(c.net().next().is_none(), "nothing was promised");
}
