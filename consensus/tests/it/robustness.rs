//! Input from the network never panics a node: random bytes through the decoder, and
//! well-formed messages with extreme or contradictory fields through `step`.

use bytes::Bytes;
use synod_consensus::{
    AppendResult, Entry, INDEX_MAX, LogIndex, Membership, Message, MessageBody, NodeId, Payload,
    ReadId, Role, SnapshotMeta, TERM_MAX, Term,
};

use synod_node::Rng;

use crate::stepped::{Cluster, ids};

/// A number for a term, an index or a round: often small enough to be taken seriously,
/// often at or next to a bound the node must enforce (`TERM_MAX`, `INDEX_MAX`) or to
/// `u64::MAX`.
fn pick(rng: &mut Rng) -> u64 {
    let bounds = [TERM_MAX.get(), INDEX_MAX.0];
    match rng.below(8) {
        0 => 0,
        1 => 1,
        2 => u64::MAX,
        3 => u64::MAX - 1,
        4 | 5 => {
            let bound = bounds[rng.below(2) as usize];
            bound - 1 + rng.below(3)
        }
        6 => rng.below(10),
        _ => rng.next_u64(),
    }
}

/// A membership of some of the nodes 1 to 4 (a valid one: at least one voter).
fn any_membership(rng: &mut Rng) -> Membership {
    let voters: Vec<NodeId> = (1..=4)
        .filter(|_| rng.below(3) != 0)
        .map(NodeId::new)
        .collect();
    let voters = if voters.is_empty() { ids(1) } else { voters };
    let learners = (1..=4)
        .map(NodeId::new)
        .filter(|id| !voters.contains(id) && rng.below(2) == 0);
    Membership::new(voters.clone(), learners).unwrap()
}

#[test]
fn random_bytes_never_panic_the_decoder() {
    let mut rng = Rng::new(7);
    let mut decoded = 0;
    for _ in 0..20_000 {
        let len = rng.below(64) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if !bytes.is_empty() && rng.below(2) == 0 {
            bytes[0] = synod_consensus::WIRE_VERSION;
        }
        if Message::decode(&bytes).is_ok() {
            decoded += 1;
        }
    }
    // Round trip of a real message.
    let msg = Message {
        from: NodeId::new(1),
        to: NodeId::new(2),
        term: Term::new(3),
        body: MessageBody::ReadIndex { id: ReadId(9) },
    };
    assert_eq!(Message::decode(&msg.encode()), Ok(msg));
    assert!(Message::decode(&[]).is_err());
    assert!(Message::decode(&[99, 0]).is_err());
    println!("decoder: 20000 random inputs, {decoded} decoded, 0 panics");
}

#[test]
fn hostile_messages_never_panic_a_node() {
    let mut rng = Rng::new(11);
    let mut c = Cluster::new(3, |b| b);
    let mut installed = 0_u64;
    for step in 0..20_000 {
        // A fresh cluster now and then: a node that adopted a term near the bound ignores
        // everything below it, and the test would stop reaching past the term check.
        if step % 500 == 0 {
            c = Cluster::new(3, |b| b);
            c.checking = false;
            c.elect(NodeId::new(1));
            c.propose(NodeId::new(1), "x");
            c.deliver_all();
        }
        let to = NodeId::new(rng.between(1, 3));
        let from = NodeId::new(rng.between(1, 4));
        // Half the messages carry the recipient's term (or the next), so that they are
        // not dismissed as stale and reach the handling of every field.
        let term = match rng.below(4) {
            0 => c.node(to).term(),
            1 => c.node(to).term().next().unwrap_or(Term::ZERO),
            _ => Term::new(pick(&mut rng)),
        };
        let index = if rng.below(4) == 0 {
            LogIndex(c.node(to).last_index().0.saturating_add(rng.below(3)))
        } else {
            LogIndex(pick(&mut rng))
        };
        let body = match rng.below(14) {
            0 => MessageBody::PreVote {
                last_index: index,
                last_term: Term::new(pick(&mut rng)),
            },
            1 => MessageBody::Vote {
                last_index: index,
                last_term: Term::new(pick(&mut rng)),
                transfer: rng.below(2) == 0,
            },
            2 => {
                let entries = (0..rng.below(3))
                    .map(|i| Entry {
                        term: Term::new(pick(&mut rng)),
                        index: LogIndex(index.0.wrapping_add(1 + i)),
                        payload: Payload::Command(Bytes::from_static(b"z")),
                    })
                    .collect();
                MessageBody::Append {
                    prev_index: index,
                    prev_term: Term::new(pick(&mut rng)),
                    entries,
                    commit: LogIndex(pick(&mut rng)),
                }
            }
            3 => MessageBody::AppendResponse {
                result: if rng.below(2) == 0 {
                    AppendResult::Accepted { match_index: index }
                } else {
                    AppendResult::Rejected {
                        rejected_prev: index,
                        hint_index: LogIndex(pick(&mut rng)),
                        hint_term: Term::new(pick(&mut rng)),
                    }
                },
            },
            4 => MessageBody::Heartbeat {
                commit: index,
                round: pick(&mut rng),
            },
            5 => MessageBody::HeartbeatResponse {
                round: pick(&mut rng),
                last_index: index,
            },
            6 => MessageBody::ReadIndexResponse {
                id: ReadId(pick(&mut rng)),
                index: (rng.below(4) != 0).then_some(index),
            },
            7 => MessageBody::SnapshotResponse {
                index,
                next_offset: pick(&mut rng),
                done: rng.below(2) == 0,
            },
            8 => MessageBody::VoteResponse {
                granted: rng.below(2) == 0,
            },
            9 => MessageBody::PreVoteResponse {
                granted: rng.below(2) == 0,
            },
            10 => MessageBody::ReadIndex {
                id: ReadId(pick(&mut rng)),
            },
            11 | 12 => {
                let data: Vec<u8> = (0..rng.below(8)).map(|_| rng.next_u64() as u8).collect();
                MessageBody::Snapshot {
                    meta: SnapshotMeta {
                        index,
                        term: Term::new(pick(&mut rng)),
                        membership: any_membership(&mut rng),
                    },
                    offset: if rng.below(2) == 0 { 0 } else { pick(&mut rng) },
                    data: Bytes::from(data),
                    done: rng.below(3) != 0,
                }
            }
            _ => MessageBody::TimeoutNow,
        };
        let snapshot_index = match &body {
            MessageBody::Snapshot { meta, .. } => Some(meta.index),
            _ => None,
        };
        c.deliver(Message {
            from,
            to,
            term,
            body,
        });
        if snapshot_index.is_some_and(|i| i.0 >= 1 << 32 && c.node(to).commit_index() == i) {
            installed += 1;
        }
        c.drop_all();
        for _ in 0..rng.below(2) {
            c.tick_all();
            c.drop_all();
        }
    }
    // The messages reach the node's handling: some snapshots far ahead are taken.
    assert!(installed > 0, "no snapshot far ahead was installed");
    println!(
        "hostile messages: 20000 stepped, 0 panics, {installed} snapshots beyond index 2^32 installed"
    );
}

/// What a node looks like from outside, to show that a message changed nothing.
fn state(c: &Cluster, id: NodeId) -> (Term, Role, Option<NodeId>, LogIndex, LogIndex, LogIndex) {
    let n = c.node(id);
    (
        n.term(),
        n.role(),
        n.leader(),
        n.commit_index(),
        n.applied_index(),
        n.last_index(),
    )
}

#[test]
fn messages_with_an_index_past_the_bound_are_ignored() {
    let (n1, n2, n3) = (NodeId::new(1), NodeId::new(2), NodeId::new(3));
    for bad in [LogIndex(INDEX_MAX.0 + 1), LogIndex(u64::MAX)] {
        let mut c = Cluster::new(3, |b| b);
        c.elect(n1);
        c.propose(n1, "x");
        c.deliver_all();
        // A read forwarded by n2, so that an answer to it would be taken.
        c.call(n2, |r| r.read_index(ReadId(7))).unwrap();
        c.drop_all();
        let term = c.node(n1).term();
        let last = c.node(n2).last_index();
        let to_follower = [
            MessageBody::Heartbeat {
                commit: bad,
                round: 1,
            },
            MessageBody::Append {
                prev_index: last,
                prev_term: term,
                entries: Vec::new(),
                commit: bad,
            },
            MessageBody::Append {
                prev_index: bad,
                prev_term: term,
                entries: Vec::new(),
                commit: last,
            },
            MessageBody::Snapshot {
                meta: SnapshotMeta {
                    index: bad,
                    term,
                    membership: Membership::new(ids(3), []).unwrap(),
                },
                offset: 0,
                data: Bytes::from_static(b"s"),
                done: true,
            },
            MessageBody::ReadIndexResponse {
                id: ReadId(7),
                index: Some(bad),
            },
        ];
        let from_candidate = [
            MessageBody::PreVote {
                last_index: bad,
                last_term: term,
            },
            MessageBody::Vote {
                last_index: bad,
                last_term: term,
                transfer: true,
            },
        ];
        let to_leader = [
            MessageBody::AppendResponse {
                result: AppendResult::Accepted { match_index: bad },
            },
            MessageBody::AppendResponse {
                result: AppendResult::Rejected {
                    rejected_prev: bad,
                    hint_index: last,
                    hint_term: term,
                },
            },
            MessageBody::AppendResponse {
                result: AppendResult::Rejected {
                    rejected_prev: last,
                    hint_index: bad,
                    hint_term: term,
                },
            },
            MessageBody::HeartbeatResponse {
                round: 1,
                last_index: bad,
            },
            MessageBody::SnapshotResponse {
                index: bad,
                next_offset: 0,
                done: true,
            },
        ];
        let cases = (to_follower.into_iter().map(|b| (n1, n2, b)))
            .chain(from_candidate.into_iter().map(|b| (n3, n2, b)))
            .chain(to_leader.into_iter().map(|b| (n2, n1, b)));
        for (from, to, body) in cases {
            let before = state(&c, to);
            let shown = format!("{body:?}");
            c.deliver(Message {
                from,
                to,
                term,
                body,
            });
            assert_eq!(state(&c, to), before, "{to} changed on {shown}");
            assert_eq!(
                c.in_flight(),
                0,
                "{to} answered {shown}: {:?}",
                c.take_all()
            );
            assert!(
                c.reads(to).is_empty(),
                "{to} took a read index from {shown}"
            );
        }
    }
}

#[test]
fn a_snapshot_at_the_index_bound_is_taken_and_nothing_past_it_panics() {
    let (n1, n2) = (NodeId::new(1), NodeId::new(2));
    // The safety checker stays on: a snapshot at the bound costs it one remembered entry,
    // not one per index below (it used to allocate a slot for each, and ran out of memory).
    let mut c = Cluster::new(3, |b| b);
    c.elect(n1);
    c.propose(n1, "x");
    c.deliver_all();
    let term = c.node(n1).term();
    c.deliver(Message {
        from: n1,
        to: n2,
        term,
        body: MessageBody::Snapshot {
            meta: SnapshotMeta {
                index: INDEX_MAX,
                term,
                membership: Membership::new(ids(3), []).unwrap(),
            },
            offset: 0,
            data: Bytes::from_static(b"s"),
            done: true,
        },
    });
    assert_eq!(c.node(n2).commit_index(), INDEX_MAX);
    assert_eq!(c.node(n2).applied_index(), INDEX_MAX);
    c.drop_all();
    // The node with the longest log wins an election and appends past the bound, but the
    // others refuse entries beyond it, as they refuse terms beyond `TERM_MAX`: replication
    // stops there, without a panic.
    c.elect(n2);
    let index = c.propose(n2, "y");
    assert_eq!(index, INDEX_MAX.plus(2));
    for _ in 0..50 {
        c.tick_all();
        c.deliver_all();
    }
    assert_eq!(c.node(n2).role(), Role::Leader);
    assert_eq!(c.node(n2).last_index(), index);
    for id in [n1, NodeId::new(3)] {
        assert!(c.node(id).last_index() <= INDEX_MAX, "{id}");
    }
    let kept = c.checker.retained_indexes();
    assert!(kept <= 4, "the checker remembers {kept} committed indexes");
    assert_eq!(c.violation, None);
}
