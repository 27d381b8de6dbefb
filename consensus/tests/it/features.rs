//! Reads (read index, lease, follower reads), snapshots with chunked transfer, membership
//! changes and leader transfer, on nodes stepped by hand (`stepped.rs`).

use bytes::Bytes;
use synod_consensus::{
    CompactError, LogIndex, Membership, MembershipError, Message, MessageBody, NodeId,
    ProposeError, ReadId, ReadWaitList, Role, TransferError,
};

use crate::stepped::Cluster;

fn n(id: u64) -> NodeId {
    NodeId::new(id)
}

fn settle(c: &mut Cluster, ticks: u64) {
    for _ in 0..ticks {
        c.tick_all();
        c.deliver_all();
    }
}

// ----- Reads -------------------------------------------------------------------------------

#[test]
fn read_index_is_confirmed_by_a_quorum_round_at_the_commit_index() {
    let mut c = Cluster::new(3, |b| b);
    c.elect(n(1));
    let index = c.propose(n(1), "x");
    c.deliver_all();
    c.call(n(1), |r| r.read_index(ReadId(7))).unwrap();
    assert!(c.reads(n(1)).is_empty(), "not before the round");
    c.deliver_all();
    let reads = c.reads(n(1));
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].id, ReadId(7));
    assert_eq!(reads[0].index, Some(index));
}

#[test]
fn read_index_on_a_follower_is_forwarded_to_the_leader() {
    let mut c = Cluster::new(3, |b| b);
    c.elect(n(1));
    let index = c.propose(n(1), "x");
    c.deliver_all();
    c.call(n(3), |r| r.read_index(ReadId(1))).unwrap();
    c.deliver_all();
    assert_eq!(c.reads(n(3))[0].index, Some(index));
}

/// Reads asked on a follower before it hands out its messages go to the leader as one
/// request, and the leader's one answer answers each of them.
#[test]
fn reads_asked_together_on_a_follower_are_forwarded_as_one_request() {
    let mut c = Cluster::new(3, |b| b);
    c.elect(n(1));
    let index = c.propose(n(1), "x");
    c.deliver_all();
    let requests = c.call(n(3), |r| {
        for id in 1..=5 {
            r.read_index(ReadId(id)).unwrap();
        }
        r.ready()
            .messages
            .into_iter()
            .filter(|m| matches!(m.body, MessageBody::ReadIndex { .. }))
            .count()
    });
    assert_eq!(requests, 1, "one request for the five reads");
    // The same again through the cluster, which delivers what the follower sends.
    c.call(n(3), |r| {
        for id in 6..=10 {
            r.read_index(ReadId(id)).unwrap();
        }
    });
    c.deliver_all();
    let mut answered: Vec<u64> = c
        .reads(n(3))
        .iter()
        .inspect(|r| assert_eq!(r.index, Some(index), "{r:?}"))
        .map(|r| r.id.0)
        .collect();
    answered.sort_unstable();
    assert_eq!(answered, (6..=10).collect::<Vec<_>>());
}

#[test]
fn a_heartbeat_answer_for_a_round_never_sent_confirms_no_read() {
    let mut c = Cluster::new(3, |b| b);
    c.elect(n(1));
    c.propose(n(1), "x");
    c.deliver_all();
    // n1 is cut off; its read waits for a round that nobody answers.
    c.isolate(n(1));
    c.call(n(1), |r| r.read_index(ReadId(7))).unwrap();
    c.deliver_all();
    // An answer naming a round far past any n1 sent, in n1's term.
    let term = c.node(n(1)).term();
    let last_index = c.node(n(1)).last_index();
    for round in [1 << 40, u64::MAX] {
        c.call(n(1), |r| {
            r.step(Message {
                from: n(2),
                to: n(1),
                term,
                body: MessageBody::HeartbeatResponse { round, last_index },
            });
        });
    }
    assert!(
        c.reads(n(1)).is_empty(),
        "a forged round confirmed a read: {:?}",
        c.reads(n(1))
    );
    // Once healed, the next real round confirms the read.
    c.heal();
    c.drop_all();
    settle(&mut c, 3);
    assert_eq!(c.reads(n(1)).len(), 1);
    assert!(c.reads(n(1))[0].index.is_some());
}

#[test]
fn a_deposed_leader_serves_no_stale_read() {
    let mut c = Cluster::new(3, |b| b);
    c.elect(n(1));
    c.deliver_all();
    c.isolate(n(1));
    c.call(n(1), |r| r.read_index(ReadId(1))).unwrap();
    c.deliver_all();
    // The majority elects node 2 and writes; node 1 cannot confirm its read.
    c.elect(n(2));
    c.propose(n(2), "newer");
    c.deliver_all();
    settle(&mut c, 40);
    let reads = c.reads(n(1));
    assert!(
        reads.iter().all(|r| r.index.is_none()),
        "the old leader answered a read: {reads:?}"
    );
    assert_eq!(
        reads.len(),
        1,
        "the read was failed when the leader stepped down"
    );
}

/// A leader removing itself from two voters leaves one voter, another node, in the new
/// configuration: that node is its quorum and may elect itself under it, so the leader
/// must not confirm reads without hearing from it.
#[test]
fn a_leader_removing_itself_confirms_no_read_alone() {
    let mut c = Cluster::new(2, |b| b);
    c.elect(n(1));
    c.deliver_all();
    settle(&mut c, 3);
    let only_2 = Membership::new(vec![n(2)], Vec::new()).unwrap();
    c.call(n(1), |r| r.propose_membership(only_2)).unwrap();
    // Node 2 takes the new configuration; its answers are lost from now on.
    c.blocked.insert((n(2), n(1)));
    c.deliver_all();
    assert_eq!(c.node(n(1)).role(), Role::Leader);
    c.call(n(1), |r| r.read_index(ReadId(7))).unwrap();
    for _ in 0..4 {
        c.tick(n(1));
        c.deliver_all();
    }
    let reads = c.reads(n(1));
    assert!(
        reads.iter().all(|r| r.index.is_none()),
        "read confirmed without the one voter: {reads:?}"
    );
}

#[test]
fn a_new_leader_answers_reads_only_after_committing_in_its_term() {
    let mut c = Cluster::new(3, |b| b);
    c.elect(n(1));
    c.deliver_all();
    c.elect(n(2));
    // Node 2's no-op is committed by the time the election settles; a read right after
    // the election but before the no-op commits waits for it.
    let mut c2 = Cluster::new(3, |b| b);
    c2.set_auto_sync(true);
    let term = c2.node(n(1)).term();
    c2.call(n(1), |r| {
        r.step(Message {
            from: n(2),
            to: n(1),
            term,
            body: MessageBody::TimeoutNow,
        });
    });
    // Deliver the votes only, so node 1 is leader with its no-op uncommitted.
    for _ in 0..2 {
        let msgs = c2.take_all();
        for m in msgs {
            if matches!(
                m.body,
                MessageBody::Vote { .. } | MessageBody::VoteResponse { .. }
            ) {
                c2.deliver(m);
            }
        }
    }
    assert_eq!(c2.node(n(1)).role(), Role::Leader);
    c2.drop_all();
    c2.call(n(1), |r| r.read_index(ReadId(3))).unwrap();
    assert!(c2.reads(n(1)).is_empty());
    settle(&mut c2, 4);
    let noop = c2.node(n(1)).commit_index();
    assert_eq!(c2.reads(n(1))[0].index, Some(noop));
    assert!(c.violation.is_none());
}

#[test]
fn lease_reads_hold_while_a_quorum_answers_and_lapse_when_isolated() {
    let mut c = Cluster::new(3, |b| b.lease_reads(2));
    c.elect(n(1));
    c.deliver_all();
    assert_eq!(
        c.node(n(1)).read_lease(),
        None,
        "no lease before a heartbeat round"
    );
    settle(&mut c, 3);
    let commit = c.node(n(1)).commit_index();
    assert_eq!(c.node(n(1)).read_lease(), Some(commit));
    c.isolate(n(1));
    let min = c.node(n(1)).config().election_timeout_ticks().start;
    for _ in 0..min {
        c.tick(n(1));
        c.drop_all();
    }
    assert_eq!(c.node(n(1)).read_lease(), None, "the lease lapsed");
}

/// A `TimeoutNow` delayed past the end of an abandoned transfer still elects its target,
/// whose election overrides the voters' check-quorum: the old leader must not have taken
/// lease reads again in the meantime.
#[test]
fn no_lease_reads_after_a_leadership_transfer_was_tried_in_the_term() {
    let mut c = Cluster::new(3, |b| b.lease_reads(2));
    c.elect(n(1));
    c.deliver_all();
    settle(&mut c, 3);
    assert!(c.node(n(1)).read_lease().is_some());
    c.call(n(1), |r| r.transfer_leadership(n(3))).unwrap();
    let at = c
        .net()
        .position(|m| m.to == n(3) && matches!(m.body, MessageBody::TimeoutNow))
        .expect("the target is caught up: TimeoutNow goes at once");
    let delayed = c.take(at).unwrap();
    let min = c.node(n(1)).config().election_timeout_ticks().start;
    settle(&mut c, min + 2);
    assert_eq!(c.node(n(1)).role(), Role::Leader);
    assert!(
        c.call(n(1), |r| r.propose(Bytes::from_static(b"x")))
            .is_ok(),
        "the transfer was abandoned"
    );
    settle(&mut c, 3);
    assert_eq!(
        c.node(n(1)).read_lease(),
        None,
        "no lease while a TimeoutNow may still be on its way"
    );
    // The delayed message arrives: the target wins despite check-quorum.
    c.deliver(delayed);
    c.deliver_all();
    assert_eq!(c.node(n(3)).role(), Role::Leader);
    assert!(c.node(n(3)).term() > c.node(n(1)).term() || c.node(n(1)).role() != Role::Leader);
}

/// A forwarded read whose answer never comes (here: the request is lost) is answered
/// `None` after an election timeout, and frees its place: lost answers once leaked the
/// follower's count of forwarded reads until every read was refused for backpressure.
#[test]
fn a_forwarded_read_that_gets_no_answer_fails_and_frees_its_place() {
    let mut c = Cluster::new(3, |b| b.read_pending_max(1).check_quorum(false));
    c.elect(n(1));
    c.deliver_all();
    c.call(n(2), |r| r.read_index(ReadId(1))).unwrap();
    assert_eq!(
        c.call(n(2), |r| r.read_index(ReadId(2))),
        Err(synod_consensus::ReadError::Backpressure)
    );
    c.drop_all();
    let end = c.node(n(2)).config().election_timeout_ticks().end;
    settle(&mut c, end);
    assert_eq!(c.node(n(2)).leader(), Some(n(1)));
    let reads = c.reads(n(2));
    assert!(
        reads.iter().any(|r| r.id == ReadId(1) && r.index.is_none()),
        "the lost read is failed: {reads:?}"
    );
    // A late answer to it is ignored.
    c.deliver(Message {
        from: n(1),
        to: n(2),
        term: c.node(n(2)).term(),
        body: MessageBody::ReadIndexResponse {
            id: ReadId(1),
            index: Some(LogIndex(1)),
        },
    });
    let reads = c.reads(n(2));
    assert!(!reads.iter().any(|r| r.index.is_some()), "{reads:?}");
    assert!(
        c.call(n(2), |r| r.read_index(ReadId(3))).is_ok(),
        "its place is free"
    );
}

#[test]
fn follower_read_your_writes_waits_for_the_clients_index() {
    let mut c = Cluster::new(3, |b| b);
    c.elect(n(1));
    c.deliver_all();
    c.blocked.insert((n(1), n(3)));
    let write = c.propose(n(1), "mine");
    c.deliver_all();
    let mut waiting = ReadWaitList::new(16);
    let applied = c.applied(n(3));
    assert!(applied < write);
    assert_eq!(waiting.wait(write, applied, "read").unwrap(), None);
    c.heal();
    settle(&mut c, 4);
    let applied = c.applied(n(3));
    assert!(applied >= write);
    assert_eq!(waiting.applied(applied), vec!["read"]);
    let mut full = ReadWaitList::new(1);
    full.wait(LogIndex(10), LogIndex(0), 1).unwrap();
    assert!(full.wait(LogIndex(10), LogIndex(0), 2).is_err());
}

// ----- Snapshots and compaction -------------------------------------------------------------

#[test]
fn a_lagging_follower_catches_up_from_a_chunked_snapshot() {
    let mut c = Cluster::new(3, |b| b.snapshot_chunk_bytes_max(10));
    c.elect(n(1));
    c.deliver_all();
    c.crash(n(3));
    for i in 0..20 {
        c.propose(n(1), &format!("v{i}"));
    }
    c.deliver_all();
    let applied = c.node(n(1)).applied_index();
    let state = Bytes::from(vec![7u8; 95]);
    c.call(n(1), |r| r.compact(applied, state.clone())).unwrap();
    assert_eq!(c.node(n(1)).log().snapshot().meta.index, applied);
    assert_eq!(
        c.call(n(1), |r| r.compact(applied, state.clone())),
        Err(CompactError::AlreadyCompacted(applied))
    );
    c.propose(n(1), "after");
    c.deliver_all();
    c.restart(n(3));
    c.record_delivered = true;
    settle(&mut c, 10);
    let chunks = c
        .delivered
        .iter()
        .filter(|m| m.to == n(3) && matches!(m.body, MessageBody::Snapshot { .. }))
        .count();
    assert!(chunks >= 10, "95 bytes in chunks of 10: {chunks} chunks");
    let follower = c.node(n(3));
    assert_eq!(follower.log().snapshot().meta.index, applied);
    assert_eq!(follower.log().snapshot().data, state);
    assert_eq!(follower.last_index(), c.node(n(1)).last_index());
    let cmds: Vec<Bytes> = c
        .applied_commands(n(3))
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert_eq!(
        cmds,
        vec![Bytes::from_static(b"after")],
        "entries after the snapshot are applied"
    );
    assert!(c.violation.is_none(), "{:?}", c.violation);
}

/// A snapshot that arrives after the follower already holds (and may have acknowledged)
/// entries beyond it, as when the leader falls back to a snapshot while acknowledgements
/// are still in flight: the follower keeps those entries (figure 13, step 6) instead of
/// wiping its log, or the leader would count copies that no longer exist.
#[test]
fn a_snapshot_older_than_the_log_keeps_the_entries_after_it() {
    use synod_consensus::{
        Config, Entry, MemLogStore, Message, Node, Payload, Ready, Snapshot, SnapshotMeta, Term,
    };
    let members = Membership::new(vec![n(1), n(2), n(3)], Vec::new()).unwrap();
    let config = Config::builder(n(2)).seed(5).build().unwrap();
    let mut node = Node::new(config, MemLogStore::new(members.clone()));
    let t1 = Term::new(1);
    let entries: Vec<Entry> = (1..=20)
        .map(|i| Entry {
            term: t1,
            index: LogIndex(i),
            payload: Payload::Command(Bytes::from(format!("e{i}"))),
        })
        .collect();
    let drain = |node: &mut Node| -> Ready {
        let ready = node.ready();
        if let Some((token, _)) = &ready.persist {
            node.persisted(*token);
        }
        ready
    };
    node.step(Message {
        from: n(1),
        to: n(2),
        term: t1,
        body: MessageBody::Append {
            prev_index: LogIndex(0),
            prev_term: Term::ZERO,
            entries,
            commit: LogIndex(14),
        },
    });
    drain(&mut node);
    drain(&mut node);
    assert_eq!(node.commit_index(), LogIndex(14));
    node.step(Message {
        from: n(1),
        to: n(2),
        term: t1,
        body: MessageBody::Snapshot {
            meta: SnapshotMeta {
                index: LogIndex(18),
                term: t1,
                membership: members,
            },
            offset: 0,
            data: Bytes::from_static(b"state at 18"),
            done: true,
        },
    });
    let ready = drain(&mut node);
    assert_eq!(
        ready.snapshot.map(|s: Snapshot| s.meta.index),
        Some(LogIndex(18))
    );
    assert_eq!(node.commit_index(), LogIndex(18));
    assert_eq!(node.log().snapshot().meta.index, LogIndex(18));
    assert_eq!(
        node.last_index(),
        LogIndex(20),
        "entries 19 and 20 are kept"
    );
    assert_eq!(node.log().term(LogIndex(20)), Some(t1));
}

/// Chunks past `snapshot_bytes_max` are dropped with what was received: a sender that
/// never says `done` cannot make a follower buffer without end.
#[test]
fn a_snapshot_larger_than_snapshot_bytes_max_is_dropped() {
    use synod_consensus::{Config, MemLogStore, Message, Node, SnapshotMeta, Term};
    let members = Membership::new(vec![n(1), n(2), n(3)], Vec::new()).unwrap();
    let config = Config::builder(n(2))
        .snapshot_bytes_max(16)
        .build()
        .unwrap();
    let mut node = Node::new(config, MemLogStore::new(members.clone()));
    let chunk = |offset: u64, done: bool| Message {
        from: n(1),
        to: n(2),
        term: Term::new(1),
        body: MessageBody::Snapshot {
            meta: SnapshotMeta {
                index: LogIndex(5),
                term: Term::new(1),
                membership: members.clone(),
            },
            offset,
            data: Bytes::from_static(b"0123456789"),
            done,
        },
    };
    node.step(chunk(0, false));
    node.step(chunk(10, false));
    node.step(chunk(20, true));
    let ready = node.ready();
    assert!(ready.snapshot.is_none(), "nothing was installed");
    assert_eq!(node.commit_index(), LogIndex(0));
    assert_eq!(node.log().snapshot().meta.index, LogIndex(0));
    // The same snapshot within the limit installs.
    let config = Config::builder(n(2))
        .snapshot_bytes_max(20)
        .build()
        .unwrap();
    let mut node = Node::new(config, MemLogStore::new(members.clone()));
    node.step(chunk(0, false));
    node.step(chunk(10, true));
    assert_eq!(node.commit_index(), LogIndex(5));
}

#[test]
fn compaction_above_the_applied_index_is_refused() {
    let mut c = Cluster::new(1, |b| b);
    assert_eq!(
        c.run_until_leader(100),
        Some(n(1)),
        "a single node elects itself"
    );
    let applied = c.node(n(1)).applied_index();
    let err = c
        .call(n(1), |r| r.compact(applied.next(), Bytes::new()))
        .unwrap_err();
    assert!(matches!(err, CompactError::NotApplied { .. }));
}

// ----- Membership -----------------------------------------------------------------------

#[test]
fn a_learner_receives_the_log_but_does_not_count() {
    let mut c = Cluster::with_members(vec![n(1), n(2), n(3)], vec![n(4)], &[], |b| b);
    c.elect(n(1));
    // Node 3 is down: nodes 1 and 2 form the majority; the learner does not count.
    c.crash(n(3));
    c.crash(n(2));
    let index = c.propose(n(1), "x");
    c.deliver_all();
    assert_eq!(
        c.node(n(4)).last_index(),
        index,
        "the learner holds the entry"
    );
    assert!(
        c.node(n(1)).commit_index() < index,
        "a learner's copy does not commit"
    );
    c.restart(n(2));
    settle(&mut c, 4);
    assert!(c.node(n(1)).commit_index() >= index);
    // A learner never campaigns.
    c.isolate(n(4));
    settle(&mut c, 100);
    assert_ne!(c.node(n(4)).role(), Role::Candidate);
    assert_ne!(c.node(n(4)).role(), Role::PreCandidate);
}

#[test]
fn single_server_changes_add_promote_and_remove() {
    // Node 4 is outside the configuration, with it as its view, until a change adds it.
    let mut c = Cluster::with_members(vec![n(1), n(2), n(3)], vec![], &[n(4)], |b| b);
    c.elect(n(1));
    c.deliver_all();
    let start = Membership::new([n(1), n(2), n(3)], [n(4)]).unwrap();
    c.call(n(1), |r| r.propose_membership(start)).unwrap();
    settle(&mut c, 4);
    assert!(c.node(n(4)).membership().learners().contains(&n(4)));
    // Two voters at once is refused.
    let two = Membership::new([n(1), n(2), n(3), n(4), n(5)], []).unwrap();
    assert_eq!(
        c.call(n(1), |r| r.propose_membership(two)),
        Err(ProposeError::Membership(
            MembershipError::MoreThanOneVoterChanged
        ))
    );
    // Promote the learner.
    let four = Membership::new([n(1), n(2), n(3), n(4)], []).unwrap();
    c.call(n(1), |r| r.propose_membership(four.clone()))
        .unwrap();
    // A second change before the first commits is refused.
    assert_eq!(
        c.call(n(1), |r| r.propose_membership(four.clone())),
        Err(ProposeError::MembershipChangePending)
    );
    settle(&mut c, 4);
    for id in [1, 2, 3, 4] {
        assert_eq!(c.node(n(id)).membership(), &four, "on n{id}");
    }
    // With four voters, three are needed: nodes 1, 2 and 4 suffice without node 3.
    c.crash(n(3));
    let index = c.propose(n(1), "with four");
    settle(&mut c, 4);
    assert!(c.node(n(1)).commit_index() >= index);
    // Remove node 3 again.
    let three = Membership::new([n(1), n(2), n(4)], []).unwrap();
    c.call(n(1), |r| r.propose_membership(three.clone()))
        .unwrap();
    settle(&mut c, 4);
    assert_eq!(c.node(n(2)).membership(), &three);
    assert!(c.violation.is_none(), "{:?}", c.violation);
}

#[test]
fn a_leader_removed_from_the_voters_steps_down_once_the_change_commits() {
    let mut c = Cluster::new(3, |b| b);
    c.elect(n(1));
    c.deliver_all();
    let without_leader = Membership::new([n(2), n(3)], []).unwrap();
    c.call(n(1), |r| r.propose_membership(without_leader))
        .unwrap();
    settle(&mut c, 2);
    assert_ne!(c.node(n(1)).role(), Role::Leader);
    let leader = c.run_until_leader(200).unwrap();
    assert_ne!(leader, n(1));
}

#[test]
fn leader_transfer_hands_over_and_refuses_proposals_meanwhile() {
    let mut c = Cluster::new(3, |b| b);
    c.elect(n(1));
    c.deliver_all();
    c.call(n(1), |r| r.transfer_leadership(n(3))).unwrap();
    assert_eq!(
        c.call(n(1), |r| r.propose(Bytes::from_static(b"x"))),
        Err(ProposeError::TransferInProgress)
    );
    c.deliver_all();
    assert_eq!(c.leader(), Some(n(3)));
    assert_eq!(c.node(n(1)).role(), Role::Follower);
    assert_eq!(
        c.call(n(1), |r| r.transfer_leadership(n(2))),
        Err(TransferError::NotLeader)
    );
    assert_eq!(
        c.call(n(3), |r| r.transfer_leadership(n(9))),
        Err(TransferError::NotAVoter(n(9)))
    );
}
