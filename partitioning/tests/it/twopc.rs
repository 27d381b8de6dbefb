//! Two-phase commit stepped by hand: what leaves a coordinator and a participant, and when,
//! around their persists and restarts.

use synod_node::{Effect, Input, NodeId, PersistToken, Protocol, RequestId, Time};
use synod_partitioning::{
    Coordinator, CoordinatorConfig, CoordinatorRecord, LockMode, Op, Participant,
    ParticipantConfig, ParticipantRecord, TxnId, TxnMessage, TxnRequest, TxnResponse, TxnWrite,
    Vote, participant_of,
};

type Effects<P> = Vec<synod_node::EffectOf<P>>;

fn drain<P: Protocol>(p: &mut P) -> Effects<P> {
    std::iter::from_fn(|| p.poll()).collect()
}

fn n(i: u64) -> NodeId {
    NodeId::new(i)
}

fn txn(seq: u64) -> TxnId {
    TxnId {
        epoch: 1,
        seq,
        coordinator: n(1),
    }
}

fn t(ms: u64) -> Time {
    Time::from_millis(ms)
}

fn sends<M: Clone, R, W, A>(effects: &[Effect<M, R, W, A>]) -> Vec<(NodeId, M)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send { to, message } => Some((*to, message.clone())),
            _ => None,
        })
        .collect()
}

fn persists<M, R, W: Clone, A>(effects: &[Effect<M, R, W, A>]) -> Vec<(PersistToken, W)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Persist { token, write } => Some((*token, write.clone())),
            _ => None,
        })
        .collect()
}

fn prepare(
    p: &mut Participant,
    now: Time,
    id: TxnId,
    priority: TxnId,
    ops: Vec<Op>,
) -> Effects<Participant> {
    p.handle(
        now,
        Input::Message {
            from: id.coordinator,
            message: TxnMessage::Prepare {
                txn: id,
                priority,
                ops,
            },
        },
    );
    drain(p)
}

#[test]
fn a_yes_vote_leaves_only_once_the_prepare_is_durable_and_survives_a_restart_with_its_locks() {
    let config = ParticipantConfig::new(n(2)).initial_value(100);
    let mut p = Participant::new(config.clone());
    let effects = prepare(
        &mut p,
        t(1),
        txn(1),
        txn(1),
        vec![Op::Add(7, -30), Op::Read(8)],
    );
    let records = persists(&effects);
    assert_eq!(records.len(), 1);
    assert!(
        sends(&effects).is_empty(),
        "no vote before the record is durable: {effects:?}"
    );
    let TxnWrite::Participant(record @ ParticipantRecord::Prepared { .. }) = records[0].1.clone()
    else {
        panic!("a prepare record")
    };
    p.handle(t(2), Input::Persisted(records[0].0));
    let votes = sends(&drain(&mut p));
    assert_eq!(
        votes,
        [(
            n(1),
            TxnMessage::Vote {
                txn: txn(1),
                vote: Vote::Yes {
                    reads: vec![(8, 100)]
                }
            }
        )]
    );

    // Crash, and restart from the record: still prepared, holding both locks.
    let mut p = Participant::restore(config, vec![record], t(10));
    assert_eq!(p.in_doubt().collect::<Vec<_>>(), [txn(1)]);
    assert_eq!(
        p.locks_of(txn(1)),
        [(7, LockMode::Exclusive), (8, LockMode::Shared)]
    );
    // It asks its coordinator at once, and never aborts on its own however long it waits.
    let effects = drain(&mut p);
    assert!(effects.contains(&Effect::WakeAt(t(10))), "{effects:?}");
    for ms in [10, 500, 60_000] {
        p.handle(t(ms), Input::Wake);
        let effects = drain(&mut p);
        assert!(
            sends(&effects).contains(&(n(1), TxnMessage::Query { txn: txn(1) })),
            "{effects:?}"
        );
        assert!(persists(&effects).is_empty());
    }
    // Another transaction on the key waits behind the lock; an older one wounds it through
    // the coordinator (a prepared transaction is only aborted by its coordinator).
    let younger = prepare(&mut p, t(60_001), txn(2), txn(2), vec![Op::Read(7)]);
    assert!(sends(&younger).is_empty(), "{younger:?}");
    let older = TxnId {
        epoch: 0,
        seq: 9,
        coordinator: n(1),
    };
    let wounding = prepare(&mut p, t(60_001), older, older, vec![Op::Add(7, 1)]);
    assert_eq!(
        sends(&wounding),
        [(n(1), TxnMessage::Wound { txn: txn(1) })]
    );
    assert_eq!(p.in_doubt().collect::<Vec<_>>(), [txn(1)]);

    // The decision: committed once, idempotently; the waiting transactions go on.
    p.handle(
        t(60_002),
        Input::Message {
            from: n(1),
            message: TxnMessage::Decision {
                txn: txn(1),
                commit: true,
            },
        },
    );
    let effects = drain(&mut p);
    assert_eq!(
        persists(&effects).len(),
        2,
        "the commit record, then the next prepare's: {effects:?}"
    );
    assert_eq!(p.value(7), 70);
    for commit in [true, false] {
        p.handle(
            t(60_003),
            Input::Message {
                from: n(1),
                message: TxnMessage::Decision {
                    txn: txn(1),
                    commit,
                },
            },
        );
        drain(&mut p);
        assert_eq!(
            p.outcome(txn(1)),
            Some(true),
            "a repeated or contrary decision changes nothing"
        );
        assert_eq!(p.value(7), 70);
    }
}

#[test]
fn the_decision_leaves_the_coordinator_only_once_durable() {
    let participants = vec![n(2), n(3)];
    let (a, b) = (0..)
        .map(|k| (k, k + 1))
        .find(|&(a, b)| participant_of(a, &participants) != participant_of(b, &participants))
        .unwrap();
    let mut c = Coordinator::new(CoordinatorConfig::new(n(1), participants.clone()));
    c.handle(
        t(0),
        Input::Request {
            id: RequestId(1),
            request: TxnRequest {
                ops: vec![Op::Add(a, -5), Op::Add(b, 5)],
            },
        },
    );
    let effects = drain(&mut c);
    let epoch = persists(&effects);
    assert_eq!(epoch.len(), 1);
    assert!(matches!(
        epoch[0].1,
        TxnWrite::Coordinator(CoordinatorRecord::Epoch(1))
    ));
    assert!(
        sends(&effects).is_empty(),
        "no id leaves before its epoch is durable"
    );
    c.handle(t(1), Input::Persisted(epoch[0].0));
    let prepares = sends(&drain(&mut c));
    assert_eq!(prepares.len(), 2);
    let TxnMessage::Prepare { txn: id, .. } = prepares[0].1.clone() else {
        panic!()
    };
    for p in &participants {
        c.handle(
            t(2),
            Input::Message {
                from: *p,
                message: TxnMessage::Vote {
                    txn: id,
                    vote: Vote::Yes { reads: vec![] },
                },
            },
        );
    }
    let effects = drain(&mut c);
    let decided = persists(&effects);
    assert!(matches!(
        decided[..],
        [(
            _,
            TxnWrite::Coordinator(CoordinatorRecord::Decided { commit: true, .. })
        )]
    ));
    assert!(
        sends(&effects).is_empty(),
        "the decision waits for its persist: {effects:?}"
    );
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Reply { .. })),
        "so does the client's answer"
    );
    c.handle(t(3), Input::Persisted(decided[0].0));
    let effects = drain(&mut c);
    assert_eq!(sends(&effects).len(), 2);
    assert!(effects.contains(&Effect::Reply {
        id: RequestId(1),
        response: TxnResponse::Committed { reads: vec![] }
    }));

    // A restart before every acknowledgement came: the decision goes out again.
    let TxnWrite::Coordinator(record) = decided[0].1.clone() else {
        panic!()
    };
    let mut c = Coordinator::restore(
        CoordinatorConfig::new(n(1), participants.clone()),
        vec![CoordinatorRecord::Epoch(1), record],
    );
    assert_eq!(c.in_doubt().collect::<Vec<_>>(), [(id, true)]);
    let effects = drain(&mut c);
    c.handle(t(0), Input::Persisted(persists(&effects)[0].0));
    let resent = sends(&drain(&mut c));
    assert_eq!(resent.len(), 2);
    assert!(resent.iter().all(|(_, m)| *m
        == TxnMessage::Decision {
            txn: id,
            commit: true
        }));
    assert_eq!(
        c.epoch(),
        2,
        "a restart starts a new epoch: no id is issued twice"
    );
    // Its compacted log restores the same coordinator (one epoch on).
    let again = Coordinator::restore(
        CoordinatorConfig::new(n(1), participants.clone()),
        c.compacted(),
    );
    assert_eq!(
        again.in_doubt().collect::<Vec<_>>(),
        c.in_doubt().collect::<Vec<_>>()
    );
    assert_eq!(again.epoch(), 3);
    // A participant asking about a transaction the coordinator has no record of hears abort.
    let unknown = TxnId {
        epoch: 1,
        seq: 99,
        coordinator: n(1),
    };
    c.handle(
        t(1),
        Input::Message {
            from: n(2),
            message: TxnMessage::Query { txn: unknown },
        },
    );
    assert_eq!(
        sends(&drain(&mut c)),
        [(
            n(2),
            TxnMessage::Decision {
                txn: unknown,
                commit: false
            }
        )]
    );
}

/// The unit-level check of the rule above catches the deliberately broken coordinator.
#[test]
fn the_broken_coordinator_sends_its_decision_before_it_is_durable() {
    let participants = vec![n(2)];
    let config = CoordinatorConfig::new(n(1), participants).broken_send_before_durable();
    let mut c = Coordinator::new(config);
    c.handle(
        t(0),
        Input::Request {
            id: RequestId(1),
            request: TxnRequest {
                ops: vec![Op::Add(1, 1)],
            },
        },
    );
    let token = persists(&drain(&mut c))[0].0;
    c.handle(t(0), Input::Persisted(token));
    let prepares = sends(&drain(&mut c));
    let TxnMessage::Prepare { txn: id, .. } = prepares[0].1.clone() else {
        panic!()
    };
    c.handle(
        t(1),
        Input::Message {
            from: n(2),
            message: TxnMessage::Vote {
                txn: id,
                vote: Vote::Yes { reads: vec![] },
            },
        },
    );
    let effects = drain(&mut c);
    let first_send = effects
        .iter()
        .position(|e| matches!(e, Effect::Send { .. }));
    let first_persist = effects
        .iter()
        .position(|e| matches!(e, Effect::Persist { .. }));
    assert!(
        first_send < first_persist,
        "the broken one sends first: {effects:?}"
    );
}

/// A coordinator whose end record was lost resends a decision the participant carried out
/// and has since forgotten: it is acknowledged, or the coordinator would resend it for ever.
#[test]
fn a_decision_carried_out_and_forgotten_is_acknowledged_again() {
    let mut p = Participant::new(ParticipantConfig::new(n(2)).finished_max(1));
    for seq in [1, 2] {
        let effects = prepare(&mut p, t(seq), txn(seq), txn(seq), vec![Op::Add(seq, 1)]);
        p.handle(t(seq), Input::Persisted(persists(&effects)[0].0));
        p.handle(
            t(seq),
            Input::Message {
                from: n(1),
                message: TxnMessage::Decision {
                    txn: txn(seq),
                    commit: true,
                },
            },
        );
        let effects = drain(&mut p);
        p.handle(t(seq), Input::Persisted(persists(&effects)[0].0));
        drain(&mut p);
    }
    assert_eq!(p.outcome(txn(1)), None, "forgotten");
    p.handle(
        t(3),
        Input::Message {
            from: n(1),
            message: TxnMessage::Decision {
                txn: txn(1),
                commit: true,
            },
        },
    );
    assert_eq!(
        sends(&drain(&mut p)),
        [(n(1), TxnMessage::Ack { txn: txn(1) })]
    );
    assert_eq!(p.value(1), 1, "and not applied twice");
    // A prepare that old is refused.
    let effects = prepare(&mut p, t(4), txn(1), txn(1), vec![Op::Add(1, 1)]);
    assert!(matches!(
        sends(&effects)[..],
        [(
            _,
            TxnMessage::Vote {
                vote: Vote::No(_),
                ..
            }
        )]
    ));
}

/// Two prepares time out waiting for locks at the same wake-up; refusing the first lets the
/// second through, which prepares and votes yes. It must not then be refused as well: that
/// was a yes-voter aborting on its own (found by the bank simulation, seed 9, as a lost
/// update).
#[test]
fn a_prepare_let_through_by_a_timed_out_one_is_not_refused_after_its_yes() {
    let mut p = Participant::new(ParticipantConfig::new(n(2)).lock_wait_ms(10));
    let effects = prepare(&mut p, t(0), txn(1), txn(1), vec![Op::Read(5)]);
    p.handle(t(0), Input::Persisted(persists(&effects)[0].0));
    drain(&mut p);
    // txn 2 wants the key exclusively and waits for txn 1; txn 3 only reads it, but
    // queues behind the older txn 2.
    assert!(sends(&prepare(&mut p, t(1), txn(2), txn(2), vec![Op::Add(5, 1)])).is_empty());
    assert!(sends(&prepare(&mut p, t(1), txn(3), txn(3), vec![Op::Read(5)])).is_empty());
    p.handle(t(20), Input::Wake);
    let effects = drain(&mut p);
    let votes = sends(&effects);
    assert!(
        votes.contains(&(
            n(1),
            TxnMessage::Vote {
                txn: txn(2),
                vote: Vote::No(synod_partitioning::Refusal::Conflict)
            }
        )),
        "{effects:?}"
    );
    assert!(
        !votes.iter().any(
            |(_, m)| matches!(m, TxnMessage::Vote { txn: t3, vote: Vote::No(_) } if *t3 == txn(3))
        ),
        "txn 3 prepared: it is never refused: {effects:?}"
    );
    assert_eq!(p.in_doubt().collect::<Vec<_>>(), [txn(1), txn(3)]);
    assert_eq!(p.locks_of(txn(3)), [(5, LockMode::Shared)]);
}

/// A participant restored from its compacted records is the one restored from its whole
/// log: the same values, the same in-doubt transactions with their locks, the same
/// finished ones and the same refusals of stale prepares.
#[test]
fn a_participant_restored_from_its_compacted_records_is_the_same() {
    let config = ParticipantConfig::new(n(2))
        .finished_max(3)
        .initial_value(50);
    let mut p = Participant::new(config.clone());
    let mut log = Vec::new();
    let step = |p: &mut Participant, log: &mut Vec<ParticipantRecord>, input| {
        p.handle(t(1), input);
        for e in drain(p) {
            if let Effect::Persist {
                token,
                write: TxnWrite::Participant(r),
            } = e
            {
                log.push(r);
                p.handle(t(1), Input::Persisted(token));
                drain(p);
            }
        }
    };
    for seq in 1..=6 {
        let ops = vec![Op::Add(seq % 3, seq as i64), Op::Read(9)];
        step(
            &mut p,
            &mut log,
            Input::Message {
                from: n(1),
                message: TxnMessage::Prepare {
                    txn: txn(seq),
                    priority: txn(seq),
                    ops,
                },
            },
        );
        if seq < 6 {
            step(
                &mut p,
                &mut log,
                Input::Message {
                    from: n(1),
                    message: TxnMessage::Decision {
                        txn: txn(seq),
                        commit: seq % 2 == 0,
                    },
                },
            );
        }
    }
    let whole = Participant::restore(config.clone(), log, t(2));
    let compact = Participant::restore(config, p.compacted(), t(2));
    assert!(p.compacted().len() < 12);
    for r in [&whole, &compact] {
        assert_eq!(
            (0..10).map(|k| r.value(k)).collect::<Vec<_>>(),
            (0..10).map(|k| p.value(k)).collect::<Vec<_>>()
        );
        assert_eq!(r.in_doubt().collect::<Vec<_>>(), [txn(6)]);
        assert_eq!(r.locks_of(txn(6)), p.locks_of(txn(6)));
        for seq in 1..=5 {
            assert_eq!(r.outcome(txn(seq)), p.outcome(txn(seq)), "{seq}");
        }
    }
    assert_eq!(compact.compacted(), p.compacted());
}
