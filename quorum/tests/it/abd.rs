//! The ABD register's coordinator, driven by hand: duplicated and late replies count once,
//! a silent quorum times out, and the in-flight limit refuses more.
//!
//! The register under faults (the correct one linearizable, the broken variants caught) is
//! tested under `synod-sim` in `sim_abd.rs`.

use synod_quorum::{AbdConfig, AbdEffect, AbdMessage, AbdNode, Incarnation, NodeId};

/// The incarnation of every node's first start in these tests.
const FIRST: Incarnation = Incarnation::new(1);

/// Drains `node`'s effects, persisting nothing (this test does not crash nodes).
fn effects(node: &mut AbdNode<u64>) -> Vec<AbdEffect<u64>> {
    std::iter::from_fn(|| node.poll_effect())
        .filter(|e| !matches!(e, AbdEffect::Persist { .. }))
        .collect()
}

/// The reply `replica` gives to the first message `coordinator` sent it.
fn reply_of(
    replica: &mut AbdNode<u64>,
    from: NodeId,
    sent: &[AbdEffect<u64>],
    to: NodeId,
) -> AbdMessage<u64> {
    let message = sent
        .iter()
        .find_map(|e| match e {
            AbdEffect::Send { to: t, message } if *t == to => Some(message.clone()),
            _ => None,
        })
        .expect("a message to the replica");
    replica.handle(from, message);
    match effects(replica).pop() {
        Some(AbdEffect::Send { message, .. }) => message,
        other => panic!("expected a reply, got {other:?}"),
    }
}

#[test]
fn duplicated_and_late_replies_are_counted_once() {
    let voters = [1, 2, 3].map(NodeId::new);
    let mut nodes: Vec<AbdNode<u64>> = voters
        .iter()
        .map(|&me| AbdNode::new(AbdConfig::majority(me, FIRST, voters).unwrap()))
        .collect();
    let [n0, n1, n2] = voters;
    let op = nodes[0].write(5).unwrap();
    let queries = effects(&mut nodes[0]);
    assert_eq!(queries.len(), 3, "a query to every voter");
    // n1's reply arrives three times: still one of the two replies a majority needs.
    let reply = reply_of(&mut nodes[1], n0, &queries, n1);
    for _ in 0..3 {
        nodes[0].handle(n1, reply.clone());
    }
    assert_eq!(
        effects(&mut nodes[0]),
        vec![],
        "a duplicated reply completed the phase"
    );
    let reply = reply_of(&mut nodes[2], n0, &queries, n2);
    nodes[0].handle(n2, reply);
    let updates = effects(&mut nodes[0]);
    assert_eq!(updates.len(), 3, "the update phase starts: {updates:?}");
    // A late query reply (from n0 itself) after the phase ended is ignored.
    let late = reply_of(&mut nodes[0].clone(), n0, &queries, n0);
    nodes[0].handle(n0, late);
    assert_eq!(effects(&mut nodes[0]), vec![]);
    // n1's acknowledgement, duplicated, is one acknowledgement.
    let ack = reply_of(&mut nodes[1], n0, &updates, n1);
    nodes[0].handle(n1, ack.clone());
    nodes[0].handle(n1, ack);
    assert_eq!(effects(&mut nodes[0]), vec![]);
    let ack = reply_of(&mut nodes[2], n0, &updates, n2);
    nodes[0].handle(n2, ack.clone());
    assert_eq!(effects(&mut nodes[0]), vec![AbdEffect::WriteDone { op }]);
    // An acknowledgement for a finished operation changes nothing.
    nodes[0].handle(n2, ack);
    assert_eq!(effects(&mut nodes[0]), vec![]);
    let (tag, value) = nodes[1].replica_state();
    assert_eq!((tag.sequence, tag.writer, value), (1, Some(n0), Some(&5)));
}

#[test]
fn a_silent_quorum_times_out_and_the_limit_refuses_more() {
    let voters = [1, 2, 3].map(NodeId::new);
    let config = AbdConfig::majority(voters[0], FIRST, voters)
        .unwrap()
        .limits(1, 2, 5)
        .unwrap();
    let mut node: AbdNode<u64> = AbdNode::new(config);
    let op = node.read().unwrap();
    assert!(matches!(
        node.write(1),
        Err(synod_quorum::AbdError::TooManyInFlight {
            ops_in_flight_max: 1
        })
    ));
    let mut resent = 0;
    let mut failed = None;
    for _ in 0..5 {
        node.tick();
        for effect in effects(&mut node) {
            match effect {
                AbdEffect::Send { .. } => resent += 1,
                AbdEffect::Failed { op, error } => failed = Some((op, error)),
                other => panic!("{other:?}"),
            }
        }
    }
    assert!(resent >= 3, "silent voters were not retried");
    let (failed_op, error) = failed.expect("timed out");
    assert_eq!(failed_op, op);
    assert!(error.to_string().contains("timed out"), "{error}");
    assert_eq!(node.ops_in_flight(), 0);
}

/// Delivers every message in `sent` addressed to `to` (from `from`) and returns the replies.
fn replies(
    replica: &mut AbdNode<u64>,
    from: NodeId,
    sent: &[AbdEffect<u64>],
) -> Vec<AbdMessage<u64>> {
    let me = replica.config().node();
    for effect in sent {
        if let AbdEffect::Send { to, message } = effect
            && *to == me
        {
            replica.handle(from, message.clone());
        }
    }
    effects(replica)
        .into_iter()
        .filter_map(|e| match e {
            AbdEffect::Send { to, message } if to == from => Some(message),
            _ => None,
        })
        .collect()
}

/// Delivers every message until none is left (a perfect network, except that messages to
/// the node `down` are lost); returns what finished.
fn settle(nodes: &mut [AbdNode<u64>], down: Option<NodeId>) -> Vec<AbdEffect<u64>> {
    let mut done = Vec::new();
    loop {
        let mut sent = Vec::new();
        for node in nodes.iter_mut() {
            let from = node.config().node();
            for effect in effects(node) {
                match effect {
                    AbdEffect::Send { to, message } => sent.push((from, to, message)),
                    finished => done.push(finished),
                }
            }
        }
        if sent.is_empty() {
            return done;
        }
        for (from, to, message) in sent {
            if Some(to) != down {
                nodes[to.get() as usize - 1].handle(from, message);
            }
        }
    }
}

#[test]
fn a_reply_to_an_operation_of_an_earlier_incarnation_is_not_counted() {
    // n0 starts a read; n1's reply is delayed in the network while n0 crashes (having
    // persisted nothing). A write of 7 then completes on n1 and n2. n0 restarts (a new
    // incarnation) and starts a read, its first operation again. The delayed reply
    // answers the *old* operation: counting it would let the new read miss the write.
    let voters = [1, 2, 3].map(NodeId::new);
    let [n0, n1, _] = voters;
    let config = |me, incarnation| AbdConfig::majority(me, incarnation, voters).unwrap();
    let mut nodes: Vec<AbdNode<u64>> = voters
        .iter()
        .map(|&me| AbdNode::new(config(me, FIRST)))
        .collect();
    let old_read = nodes[0].read().unwrap();
    let queries = effects(&mut nodes[0]);
    let delayed = replies(&mut nodes[1], n0, &queries);
    assert_eq!(delayed.len(), 1);

    let write = nodes[2].write(7).unwrap();
    assert_eq!(
        settle(&mut nodes, Some(n0)),
        [AbdEffect::WriteDone { op: write }]
    );

    let second = Incarnation::new(2);
    nodes[0] = AbdNode::recover(config(n0, second), Default::default(), None);
    let read = nodes[0].read().unwrap();
    assert_eq!(
        read.get(),
        old_read.get(),
        "the test needs the op number reused"
    );
    // The delayed reply from n0's previous life arrives first, then everything else.
    nodes[0].handle(n1, delayed[0].clone());
    let outcome = settle(&mut nodes, None);
    assert_eq!(
        outcome,
        [AbdEffect::ReadDone {
            op: read,
            value: Some(7)
        }],
        "a read that started after a write completed missed it"
    );
}

#[test]
fn a_reply_with_the_largest_sequence_fails_the_write_without_a_panic() {
    // A buggy or malicious replica answers a query with sequence u64::MAX: the writer
    // cannot pick a larger one. The write fails with an error; the node does not panic.
    let voters = [1, 2, 3].map(NodeId::new);
    let [n0, n1, _] = voters;
    let mut node: AbdNode<u64> = AbdNode::new(AbdConfig::majority(n0, FIRST, voters).unwrap());
    let op = node.write(1).unwrap();
    let queries = effects(&mut node);
    for reply in replies(&mut node.clone(), n0, &queries) {
        node.handle(n0, reply);
    }
    node.handle(
        n1,
        AbdMessage::QueryReply {
            op,
            tag: synod_quorum::Tag {
                sequence: u64::MAX,
                writer: Some(n1),
                incarnation: 0,
                op: 0,
            },
            value: Some(9),
        },
    );
    let after = effects(&mut node);
    match after.as_slice() {
        [AbdEffect::Failed { op: failed, error }] => {
            assert_eq!(*failed, op);
            assert!(error.to_string().contains("sequence"), "{error}");
        }
        other => panic!("expected the write to fail, got {other:?}"),
    }
    assert_eq!(node.ops_in_flight(), 0);
    // A read of that value still works: nothing needs a larger sequence.
    let read = node.read().unwrap();
    assert!(!effects(&mut node).is_empty(), "{read:?}");
}
