//! Criterion micro-benchmarks of the Raft step function: nanoseconds per message handled
//! (including draining the resulting ready).

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use synod_consensus::{
    AppendResult, Config, Entry, LogIndex, MemLogStore, Membership, Message, MessageBody, Node,
    NodeId, Payload, Role, Term,
};

fn node(id: u64) -> Node {
    let ids: Vec<NodeId> = (1..=3).map(NodeId::new).collect();
    let membership = Membership::new(ids, []).expect("valid membership");
    let config = Config::builder(NodeId::new(id))
        .uncommitted_entries_max(u64::MAX)
        .in_flight_max(1 << 20)
        .build()
        .expect("valid config");
    Node::new(config, MemLogStore::new(membership))
}

fn drain(node: &mut Node) -> usize {
    let mut n = 0;
    while node.has_ready() {
        let ready = node.ready();
        // The driver's write and sync are not what this measures: the token is
        // acknowledged at once.
        if let Some((token, _write)) = ready.persist {
            node.persisted(token);
        }
        n += ready.messages.len() + ready.committed.len();
    }
    n
}

fn follower_append(c: &mut Criterion) {
    let mut follower = node(2);
    let term = Term::new(1);
    let mut index = LogIndex::ZERO;
    let data = Bytes::from_static(&[1u8; 64]);
    c.bench_function("step/follower_append_1_entry", |b| {
        b.iter(|| {
            let entry = Entry {
                term,
                index: index.next(),
                payload: Payload::Command(data.clone()),
            };
            follower.step(Message {
                from: NodeId::new(1),
                to: NodeId::new(2),
                term,
                body: MessageBody::Append {
                    prev_index: index,
                    prev_term: if index == LogIndex::ZERO {
                        Term::ZERO
                    } else {
                        term
                    },
                    entries: vec![entry],
                    commit: index,
                },
            });
            index = index.next();
            drain(&mut follower)
        });
    });
}

fn leader_append_response(c: &mut Criterion) {
    let mut leader = node(1);
    let term = leader.term();
    leader.step(Message {
        from: NodeId::new(2),
        to: NodeId::new(1),
        term,
        body: MessageBody::TimeoutNow,
    });
    drain(&mut leader);
    for from in [2, 3] {
        leader.step(Message {
            from: NodeId::new(from),
            to: NodeId::new(1),
            term: leader.term(),
            body: MessageBody::VoteResponse { granted: true },
        });
    }
    drain(&mut leader);
    assert_eq!(leader.role(), Role::Leader);
    let term = leader.term();
    let data = Bytes::from_static(&[1u8; 64]);
    c.bench_function("step/leader_propose_and_ack", |b| {
        b.iter(|| {
            let index = leader.propose(data.clone()).expect("leader");
            drain(&mut leader);
            for from in [2, 3] {
                leader.step(Message {
                    from: NodeId::new(from),
                    to: NodeId::new(1),
                    term,
                    body: MessageBody::AppendResponse {
                        result: AppendResult::Accepted { match_index: index },
                    },
                });
            }
            drain(&mut leader)
        });
    });
}

criterion_group!(benches, follower_append, leader_append_response);
criterion_main!(benches);
