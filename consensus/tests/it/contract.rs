//! Raft on the node contract: inputs with the time, effects out of `poll` in the order the
//! contract promises, persistence as a `RaftWrite` acknowledged by token, ticks run from
//! the time handed in, and messages whose claimed sender is not the authenticated one
//! dropped.

use bytes::Bytes;
use synod_consensus::{
    Apply, Config, Entry, HardState, LogIndex, LogStore, MemLogStore, Membership, Message,
    MessageBody, Node, NodeId, Payload, RaftWrite, ReadError, ReadId, Request, RequestError,
    Response, Role, StoreWrite, Term,
};
use synod_node::{Effect, EffectOf, Input, Protocol, RequestId, Time};

fn n(id: u64) -> NodeId {
    NodeId::new(id)
}

const TICK_MS: u64 = 10;

fn node(id: u64, voters: u64) -> Node {
    let membership = Membership::new((1..=voters).map(n), []).unwrap();
    let config = Config::builder(n(id))
        .election_timeout_ticks(10..20)
        .tick_interval_us(TICK_MS * 1000)
        .build()
        .unwrap();
    Node::new(config, MemLogStore::new(membership))
}

fn effects(node: &mut Node) -> Vec<EffectOf<Node>> {
    std::iter::from_fn(|| node.poll()).collect()
}

/// Drains `node`, applying its writes to `disk` and acknowledging them at once, until it
/// has nothing more to do; returns every effect it handed out.
fn settle(node: &mut Node, disk: &mut MemLogStore, now: Time) -> Vec<EffectOf<Node>> {
    let mut all = Vec::new();
    loop {
        let batch = effects(node);
        if batch.is_empty() {
            return all;
        }
        for effect in &batch {
            if let Effect::Persist { token, write } = effect {
                disk.apply(write);
                disk.sync();
                node.handle(now, Input::Persisted(*token));
            }
        }
        all.extend(batch);
    }
}

/// A single voter made leader through the contract alone: wake-ups at the times it asks,
/// from the first one, which a node just built asks for before any input.
fn single_leader() -> (Node, MemLogStore, Time) {
    let mut node = node(1, 1);
    let mut disk = MemLogStore::new(Membership::new([n(1)], []).unwrap());
    let mut now = Time::from_secs(3);
    for _ in 0..100 {
        let wake = settle(&mut node, &mut disk, now)
            .into_iter()
            .rev()
            .find_map(|e| match e {
                Effect::WakeAt(t) => Some(t),
                _ => None,
            });
        if node.role() == Role::Leader {
            return (node, disk, now);
        }
        let wake = wake.expect("a follower waiting for its election asks to be woken");
        // A wake-up asked for in the past (the first: at once) is handed in now.
        now = now.max(wake);
        node.handle(now, Input::Wake);
    }
    panic!("no leader after 100 wake-ups");
}

#[test]
fn a_node_just_built_asks_to_be_woken_at_once_before_any_input() {
    let mut node = node(1, 3);
    assert_eq!(effects(&mut node), vec![Effect::WakeAt(Time::ZERO)]);
    assert_eq!(effects(&mut node), vec![], "asked once");
    // Its first input starts the clock; from then on it asks for its next tick.
    node.handle(Time::from_secs(3), Input::Wake);
    let tick = Time::from_secs(3) + std::time::Duration::from_millis(TICK_MS);
    assert_eq!(effects(&mut node), vec![Effect::WakeAt(tick)]);
}

/// A node no message reaches, on synod-sim's `Stepper` with a store that hands it nothing
/// at its start: its clock alone must bring its election.
#[test]
fn a_node_nothing_reaches_still_campaigns_when_its_clock_runs() {
    let mut c = crate::stepped::Cluster::new(3, |b| b.pre_vote(false));
    for _ in 0..40 {
        c.tick(n(1));
    }
    assert_eq!(c.node(n(1)).role(), Role::Candidate);
    assert!(
        c.net().any(|m| m.from == n(1)),
        "node 1 asks the others for votes"
    );
    assert_eq!(c.violation, None);
}

#[test]
fn a_node_driven_only_by_wake_ups_at_the_times_it_asks_elects_itself_and_commits() {
    let (mut node, mut disk, now) = single_leader();
    node.handle(
        now,
        Input::Request {
            id: RequestId(7),
            request: Request::Propose(Bytes::from_static(b"x")),
        },
    );
    let out = settle(&mut node, &mut disk, now);
    let index = out.iter().find_map(|e| match e {
        Effect::Reply { id, response } => {
            assert_eq!(*id, RequestId(7));
            Some(response.clone().expect("the leader takes it"))
        }
        _ => None,
    });
    let Some(Response::Proposed(index)) = index else {
        panic!("no proposal reply: {out:?}");
    };
    assert!(out.iter().any(|e| matches!(e,
        Effect::Apply(Apply::Entry(Entry { index: i, payload: Payload::Command(c), .. }))
            if *i == index && c.as_ref() == b"x")));
    // What the node handed out to persist is what it holds: the disk rebuilds it.
    assert_eq!(disk.last_index(), node.last_index());
    assert_eq!(disk.durable_hard_state(), node.log().hard_state());
}

#[test]
fn the_persist_comes_before_the_sends_and_a_read_is_answered_after_the_entries_before_it() {
    let (mut node, mut disk, now) = single_leader();
    node.handle(
        now,
        Input::Request {
            id: RequestId(1),
            request: Request::Propose(Bytes::from_static(b"y")),
        },
    );
    let first = effects(&mut node);
    assert!(
        matches!(first[0], Effect::Reply { .. }),
        "an immediate reply first"
    );
    let Some(Effect::Persist { token, write }) = first.get(1) else {
        panic!("then the persist: {first:?}");
    };
    let appended = write
        .ops()
        .iter()
        .any(|op| matches!(op, StoreWrite::Append(_)));
    assert!(appended, "{write:?}");
    disk.apply(write);
    disk.sync();
    // The acknowledgement commits the entry; a read asked before the next drain is
    // confirmed at its index and must come out after it.
    node.handle(now, Input::Persisted(*token));
    node.handle(
        now,
        Input::Request {
            id: RequestId(2),
            request: Request::ReadIndex(ReadId(99)),
        },
    );
    let out = effects(&mut node);
    let entry_at = out
        .iter()
        .position(|e| matches!(e, Effect::Apply(Apply::Entry(e)) if e.payload == Payload::Command(Bytes::from_static(b"y"))))
        .unwrap_or_else(|| panic!("the entry is applied: {out:?}"));
    let read_at = out
        .iter()
        .position(|e| matches!(e, Effect::Reply { id: RequestId(2), response: Ok(Response::Read(r)) } if r.index == Some(node.commit_index())))
        .unwrap_or_else(|| panic!("the read is answered: {out:?}"));
    assert!(entry_at < read_at, "{out:?}");
}

#[test]
fn a_message_whose_sender_is_not_the_authenticated_one_is_dropped() {
    let vote = |from: u64| Message {
        from: n(from),
        to: n(2),
        term: Term::new(5),
        body: MessageBody::Vote {
            last_index: LogIndex(0),
            last_term: Term::ZERO,
            // A transfer's vote: a node that has just started ignores other elections.
            transfer: true,
        },
    };
    let now = Time::from_secs(1);
    // Claims to come from node 3, arrives from node 1: dropped, nothing changes.
    let mut forged = node(2, 3);
    forged.handle(
        now,
        Input::Message {
            from: n(1),
            message: vote(3),
        },
    );
    assert_eq!(forged.term(), Term::ZERO);
    assert!(
        effects(&mut forged)
            .iter()
            .all(|e| matches!(e, Effect::WakeAt(_))),
        "nothing but a wake-up"
    );
    // The same message from its real sender is taken: the term rises, the vote is
    // persisted before it is sent.
    let mut honest = node(2, 3);
    honest.handle(
        now,
        Input::Message {
            from: n(3),
            message: vote(3),
        },
    );
    assert_eq!(honest.term(), Term::new(5));
    let out = effects(&mut honest);
    let Some(Effect::Persist { token, write }) = out.first() else {
        panic!("{out:?}");
    };
    assert_eq!(
        write.ops(),
        &[StoreWrite::HardState(HardState {
            term: Term::new(5),
            vote: Some(n(3)),
        })],
        "two hard-state writes coalesce into the last"
    );
    assert!(
        !out.iter().any(|e| matches!(e, Effect::Send { .. })),
        "the vote waits for its persist: {out:?}"
    );
    honest.handle(now, Input::Persisted(*token));
    let out = effects(&mut honest);
    assert!(
        out.iter().any(|e| matches!(e, Effect::Send { to, message }
            if *to == n(3) && message.body == MessageBody::VoteResponse { granted: true })),
        "{out:?}"
    );
}

#[test]
fn requests_are_refused_with_the_error_of_the_call_and_read_ids_in_use_too() {
    let mut follower = node(2, 3);
    let now = Time::from_secs(1);
    let ask = |node: &mut Node, id: u64, request: Request| {
        node.handle(
            now,
            Input::Request {
                id: RequestId(id),
                request,
            },
        );
        effects(node)
            .into_iter()
            .find_map(|e| match e {
                Effect::Reply { id: r, response } if r == RequestId(id) => Some(response),
                _ => None,
            })
            .expect("answered at once")
    };
    assert!(matches!(
        ask(&mut follower, 1, Request::Propose(Bytes::new())),
        Err(RequestError::Propose(_))
    ));
    assert_eq!(
        ask(&mut follower, 2, Request::ReadIndex(ReadId(1))),
        Err(RequestError::Read(ReadError::NoLeader))
    );
    // Once it knows a leader, the read is forwarded and waits; the same id again is
    // refused rather than left without its own answer.
    follower.handle(
        now,
        Input::Message {
            from: n(1),
            message: Message {
                from: n(1),
                to: n(2),
                term: Term::new(1),
                body: MessageBody::Heartbeat {
                    commit: LogIndex(0),
                    round: 1,
                },
            },
        },
    );
    effects(&mut follower);
    follower.handle(
        now,
        Input::Request {
            id: RequestId(3),
            request: Request::ReadIndex(ReadId(1)),
        },
    );
    assert!(
        !effects(&mut follower)
            .iter()
            .any(|e| matches!(e, Effect::Reply { .. })),
        "the read waits for the leader"
    );
    assert_eq!(
        ask(&mut follower, 4, Request::ReadIndex(ReadId(1))),
        Err(RequestError::Read(ReadError::IdInUse(ReadId(1))))
    );
}

#[test]
fn a_raft_write_coalesces_adjacent_appends_and_hard_states_and_nothing_else() {
    let entry = |i: u64| Entry {
        term: Term::new(1),
        index: LogIndex(i),
        payload: Payload::Noop,
    };
    let hs = |t: u64| HardState {
        term: Term::new(t),
        vote: None,
    };
    let write = RaftWrite::from(vec![
        StoreWrite::HardState(hs(1)),
        StoreWrite::HardState(hs(2)),
        StoreWrite::Append(vec![entry(1)]),
        StoreWrite::Append(vec![entry(2), entry(3)]),
        StoreWrite::TruncateAfter(LogIndex(1)),
        StoreWrite::Append(vec![entry(2)]),
        StoreWrite::HardState(hs(3)),
    ]);
    assert_eq!(
        write.ops(),
        &[
            StoreWrite::HardState(hs(2)),
            StoreWrite::Append(vec![entry(1), entry(2), entry(3)]),
            StoreWrite::TruncateAfter(LogIndex(1)),
            StoreWrite::Append(vec![entry(2)]),
            StoreWrite::HardState(hs(3)),
        ]
    );
    let mut store = MemLogStore::new(Membership::new([n(1)], []).unwrap());
    write.apply_to(&mut store);
    assert_eq!(store.last_index(), LogIndex(2));
    assert_eq!(store.hard_state(), hs(3));
}
