//! The ABD register's coordinator, driven by hand: duplicated and late replies count once,
//! a silent quorum times out, and the in-flight limit refuses more.
//!
//! The register under faults (the correct one linearizable, the broken variants caught) is
//! tested under `synod-sim` in `sim_abd.rs`.

use synod_node::{Effect, Input, PersistToken, Protocol, RequestId, Time};
use synod_quorum::{
    AbdConfig, AbdError, AbdMessage, AbdNode, AbdOpId, AbdRequest, AbdResponse, Incarnation, NodeId,
};

/// The incarnation of every node's first start in these tests.
const FIRST: Incarnation = Incarnation::new(1);

type Node = AbdNode<u64>;

/// What a node did, without its persists (acknowledged at once: these tests do not crash
/// nodes) and wake-up requests.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Done {
    Send {
        to: NodeId,
        message: AbdMessage<u64>,
    },
    Reply {
        id: RequestId,
        response: AbdResponse<u64>,
    },
}

/// The time of every input in these tests, unless a test moves it.
const NOW: Time = Time::from_millis(1);

/// Drains `node`'s effects at `now`, acknowledging each persist as soon as it is polled.
fn effects_at(node: &mut Node, now: Time) -> Vec<Done> {
    let mut done = Vec::new();
    let mut persisted: Option<PersistToken> = None;
    loop {
        while let Some(effect) = node.poll() {
            match effect {
                Effect::Send { to, message } => done.push(Done::Send { to, message }),
                Effect::Reply { id, response } => done.push(Done::Reply { id, response }),
                Effect::Persist { token, .. } => persisted = Some(token),
                Effect::WakeAt(_) => {}
                Effect::Apply(never) => match never {},
            }
        }
        let Some(token) = persisted.take() else {
            return done;
        };
        node.handle(now, Input::Persisted(token));
    }
}

fn effects(node: &mut Node) -> Vec<Done> {
    effects_at(node, NOW)
}

/// Hands `node` a client request `id`.
fn request(node: &mut Node, id: u64, request: AbdRequest<u64>) -> RequestId {
    node.handle(
        NOW,
        Input::Request {
            id: RequestId(id),
            request,
        },
    );
    RequestId(id)
}

fn deliver(node: &mut Node, from: NodeId, message: AbdMessage<u64>) {
    node.handle(NOW, Input::Message { from, message });
}

/// The operation a coordinator's messages are about.
fn op_of(sent: &[Done]) -> AbdOpId {
    sent.iter()
        .find_map(|e| match e {
            Done::Send {
                message: AbdMessage::Query { op } | AbdMessage::Update { op, .. },
                ..
            } => Some(*op),
            _ => None,
        })
        .expect("a query or an update")
}

/// The reply `replica` gives to the first message `coordinator` sent it.
fn reply_of(replica: &mut Node, from: NodeId, sent: &[Done], to: NodeId) -> AbdMessage<u64> {
    let message = sent
        .iter()
        .find_map(|e| match e {
            Done::Send { to: t, message } if *t == to => Some(message.clone()),
            _ => None,
        })
        .expect("a message to the replica");
    deliver(replica, from, message);
    match effects(replica).pop() {
        Some(Done::Send { message, .. }) => message,
        other => panic!("expected a reply, got {other:?}"),
    }
}

#[test]
fn duplicated_and_late_replies_are_counted_once() {
    // Five voters: a quorum is three, the coordinator's own replica one of them (it answers
    // itself without the network).
    let voters = [1, 2, 3, 4, 5].map(NodeId::new);
    let mut nodes: Vec<Node> = voters
        .iter()
        .map(|&me| AbdNode::new(AbdConfig::majority(me, FIRST, voters).unwrap()))
        .collect();
    let [n0, n1, n2, n3, _] = voters;
    let client = request(&mut nodes[0], 1, AbdRequest::Write(5));
    let queries = effects(&mut nodes[0]);
    assert_eq!(queries.len(), 4, "a query to every other voter");
    // n1's reply arrives three times: with n0's own, still two of the three a quorum needs.
    let reply = reply_of(&mut nodes[1], n0, &queries, n1);
    for _ in 0..3 {
        deliver(&mut nodes[0], n1, reply.clone());
    }
    assert_eq!(
        effects(&mut nodes[0]),
        vec![],
        "a duplicated reply completed the phase"
    );
    let reply = reply_of(&mut nodes[2], n0, &queries, n2);
    deliver(&mut nodes[0], n2, reply);
    let updates = effects(&mut nodes[0]);
    assert_eq!(updates.len(), 4, "the update phase starts: {updates:?}");
    // A late query reply (from n3) after the phase ended is ignored.
    let late = reply_of(&mut nodes[3], n0, &queries, n3);
    deliver(&mut nodes[0], n3, late);
    assert_eq!(effects(&mut nodes[0]), vec![]);
    // n1's acknowledgement, duplicated, is one acknowledgement.
    let ack = reply_of(&mut nodes[1], n0, &updates, n1);
    deliver(&mut nodes[0], n1, ack.clone());
    deliver(&mut nodes[0], n1, ack);
    assert_eq!(effects(&mut nodes[0]), vec![]);
    let ack = reply_of(&mut nodes[2], n0, &updates, n2);
    deliver(&mut nodes[0], n2, ack.clone());
    assert_eq!(
        effects(&mut nodes[0]),
        vec![Done::Reply {
            id: client,
            response: AbdResponse::Written
        }]
    );
    // An acknowledgement for a finished operation changes nothing.
    deliver(&mut nodes[0], n2, ack);
    assert_eq!(effects(&mut nodes[0]), vec![]);
    let (tag, value) = nodes[1].replica_state();
    assert_eq!((tag.sequence, tag.writer, value), (1, Some(n0), Some(&5)));
}

#[test]
fn a_replica_answers_nothing_that_depends_on_a_write_before_it_is_durable() {
    let voters = [1, 2, 3].map(NodeId::new);
    let [n0, n1, _] = voters;
    let mut replica: Node = AbdNode::new(AbdConfig::majority(n1, FIRST, voters).unwrap());
    let mut coordinator: Node = AbdNode::new(AbdConfig::majority(n0, FIRST, voters).unwrap());
    request(&mut coordinator, 1, AbdRequest::Write(5));
    let op = op_of(&effects(&mut coordinator));
    let tag = synod_quorum::Tag {
        sequence: 1,
        writer: Some(n0),
        incarnation: FIRST.get(),
        op: op.get(),
    };
    deliver(
        &mut replica,
        n0,
        AbdMessage::Update {
            op,
            tag,
            value: Some(5),
        },
    );
    // A query arriving while the write is not durable: its answer would show the value.
    deliver(&mut replica, n0, AbdMessage::Query { op });
    let token = match replica.poll() {
        Some(Effect::Persist { token, write }) => {
            assert_eq!((write.tag, write.value), (tag, Some(5)));
            token
        }
        other => panic!("expected the write first, got {other:?}"),
    };
    assert_eq!(
        replica.poll(),
        None,
        "an answer left before the write was durable"
    );
    replica.handle(NOW, Input::Persisted(token));
    let answers: Vec<_> = std::iter::from_fn(|| replica.poll()).collect();
    assert_eq!(
        answers,
        [
            Effect::Send {
                to: n0,
                message: AbdMessage::UpdateAck { op }
            },
            Effect::Send {
                to: n0,
                message: AbdMessage::QueryReply {
                    op,
                    tag,
                    value: Some(5)
                }
            },
        ]
    );
}

#[test]
fn a_silent_quorum_times_out_and_the_limit_refuses_more() {
    let voters = [1, 2, 3].map(NodeId::new);
    let config = AbdConfig::majority(voters[0], FIRST, voters)
        .unwrap()
        .limits(1, 10, 25)
        .unwrap();
    let mut node: Node = AbdNode::new(config);
    let read = request(&mut node, 1, AbdRequest::Read);
    let write = request(&mut node, 2, AbdRequest::Write(1));
    let mut sent = 0;
    let mut refused = None;
    let (replies, mut wake) = take(&mut node, &mut sent);
    for (id, response) in replies {
        assert_eq!(id, write);
        refused = Some(response);
    }
    assert_eq!(
        refused,
        Some(AbdResponse::Failed(AbdError::TooManyInFlight {
            ops_in_flight_max: 1
        }))
    );
    // The driver wakes the node when it asked; it retransmits, then gives up.
    let mut failed = None;
    let mut now = NOW;
    for _ in 0..5 {
        let at = wake.expect("a wake-up asked for while an operation runs");
        assert!(at > now, "a wake-up asked for the past");
        now = at;
        node.handle(now, Input::Wake);
        let (replies, next) = take(&mut node, &mut sent);
        wake = next;
        if let Some((id, response)) = replies.into_iter().next() {
            failed = Some((id, response, now));
            break;
        }
    }
    assert!(
        sent >= 2 + 2 * 2,
        "silent voters were not retried: {sent} sent"
    );
    let (failed_request, response, at) = failed.expect("timed out");
    assert_eq!(failed_request, read);
    assert_eq!(at, NOW + std::time::Duration::from_millis(25));
    let AbdResponse::Failed(error) = response else {
        panic!("{response:?}")
    };
    assert!(error.to_string().contains("timed out"), "{error}");
    assert_eq!(node.ops_in_flight(), 0);
}

/// Drains `node`: counts its sends into `sent`, returns its replies and the wake-up it
/// asked for last.
fn take(node: &mut Node, sent: &mut usize) -> (Vec<(RequestId, AbdResponse<u64>)>, Option<Time>) {
    let (mut replies, mut wake) = (Vec::new(), None);
    while let Some(effect) = node.poll() {
        match effect {
            Effect::Send { .. } => *sent += 1,
            Effect::Reply { id, response } => replies.push((id, response)),
            Effect::WakeAt(at) => wake = Some(at),
            other => panic!("{other:?}"),
        }
    }
    (replies, wake)
}

/// Delivers every message in `sent` addressed to `replica` (from `from`) and returns its
/// answers to `from`.
fn replies(replica: &mut Node, from: NodeId, sent: &[Done]) -> Vec<AbdMessage<u64>> {
    let me = replica.config().node();
    for effect in sent {
        if let Done::Send { to, message } = effect
            && *to == me
        {
            deliver(replica, from, message.clone());
        }
    }
    effects(replica)
        .into_iter()
        .filter_map(|e| match e {
            Done::Send { to, message } if to == from => Some(message),
            Done::Send { .. } | Done::Reply { .. } => None,
        })
        .collect()
}

/// Delivers every message until none is left (a perfect network, except that messages to
/// the node `down` are lost); returns the replies to clients.
fn settle(nodes: &mut [Node], down: Option<NodeId>) -> Vec<Done> {
    let mut done = Vec::new();
    loop {
        let mut sent = Vec::new();
        for node in nodes.iter_mut() {
            let from = node.config().node();
            for effect in effects(node) {
                match effect {
                    Done::Send { to, message } => sent.push((from, to, message)),
                    reply @ Done::Reply { .. } => done.push(reply),
                }
            }
        }
        if sent.is_empty() {
            return done;
        }
        for (from, to, message) in sent {
            if Some(to) != down {
                deliver(&mut nodes[to.get() as usize - 1], from, message);
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
    let mut nodes: Vec<Node> = voters
        .iter()
        .map(|&me| AbdNode::new(config(me, FIRST)))
        .collect();
    request(&mut nodes[0], 1, AbdRequest::Read);
    let queries = effects(&mut nodes[0]);
    let old_read = op_of(&queries);
    let delayed = replies(&mut nodes[1], n0, &queries);
    assert_eq!(delayed.len(), 1);

    let write = request(&mut nodes[2], 2, AbdRequest::Write(7));
    assert_eq!(
        settle(&mut nodes, Some(n0)),
        [Done::Reply {
            id: write,
            response: AbdResponse::Written
        }]
    );

    let second = Incarnation::new(2);
    nodes[0] = AbdNode::recover(config(n0, second), Default::default(), None);
    let read = request(&mut nodes[0], 3, AbdRequest::Read);
    let queries = effects(&mut nodes[0]);
    assert_eq!(
        op_of(&queries).get(),
        old_read.get(),
        "the test needs the op number reused"
    );
    // The delayed reply from n0's previous life arrives first, then everything else.
    deliver(&mut nodes[0], n1, delayed[0].clone());
    for (to, message) in queries.into_iter().filter_map(|e| match e {
        Done::Send { to, message } => Some((to, message)),
        Done::Reply { .. } => None,
    }) {
        deliver(&mut nodes[to.get() as usize - 1], n0, message);
    }
    let outcome = settle(&mut nodes, None);
    assert_eq!(
        outcome,
        [Done::Reply {
            id: read,
            response: AbdResponse::Read(Some(7))
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
    let mut node: Node = AbdNode::new(AbdConfig::majority(n0, FIRST, voters).unwrap());
    let write = request(&mut node, 1, AbdRequest::Write(1));
    let op = op_of(&effects(&mut node));
    deliver(
        &mut node,
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
        [
            Done::Reply {
                id,
                response: AbdResponse::Failed(error),
            },
        ] => {
            assert_eq!(*id, write);
            assert!(error.to_string().contains("sequence"), "{error}");
        }
        other => panic!("expected the write to fail, got {other:?}"),
    }
    assert_eq!(node.ops_in_flight(), 0);
    // A read of that value still works: nothing needs a larger sequence.
    request(&mut node, 2, AbdRequest::Read);
    assert!(!effects(&mut node).is_empty());
}
