//! Idempotent Receiver on a replicated counter: retries across a leader change are applied
//! once on every replica; sessions expire at the same log position everywhere.

use std::collections::BTreeMap;

use bytes::Bytes;
use synod_consensus::session::{
    Outcome, SessionConfig, SessionEntry, SessionError, SessionId, Sessions,
};
use synod_consensus::{LogIndex, NodeId};

use crate::stepped::Cluster;

fn n(id: u64) -> NodeId {
    NodeId::new(id)
}

/// A counter state machine behind sessions, replayed from a node's applied log.
fn replay(c: &Cluster, id: NodeId) -> (u64, Vec<Result<Outcome<u64>, SessionError>>) {
    let mut sessions: Sessions<u64> = Sessions::new(SessionConfig::new(1_000, 8, 16).unwrap());
    let mut counter = 0;
    let mut outcomes = Vec::new();
    for (index, data) in c.applied_commands(id) {
        match SessionEntry::<u64>::decode(&data).expect("valid entry") {
            SessionEntry::Register { time } => {
                sessions
                    .register(index, time)
                    .expect("room for the session");
            }
            SessionEntry::Request {
                session,
                seq,
                ack_below,
                time,
                command,
            } => outcomes.push(sessions.apply(session, seq, ack_below, time, || {
                counter += command;
                counter
            })),
            SessionEntry::Unregister { session, time } => sessions.unregister(session, time),
        }
    }
    (counter, outcomes)
}

fn propose(c: &mut Cluster, leader: NodeId, entry: &SessionEntry<u64>) -> LogIndex {
    c.call(leader, |r| r.propose(Bytes::from(entry.encode())))
        .unwrap()
}

#[test]
fn a_retry_after_a_leader_change_is_applied_once_everywhere() {
    let mut c = Cluster::new(3, |b| b);
    c.elect(n(1));
    c.deliver_all();
    let register = propose(&mut c, n(1), &SessionEntry::Register { time: 10 });
    c.deliver_all();
    let session = SessionId(register.0);
    let request = SessionEntry::Request {
        session,
        seq: 1,
        ack_below: 1,
        time: 20,
        command: 5,
    };
    // The request reaches a majority, but the leader crashes before it answers.
    propose(&mut c, n(1), &request);
    c.deliver_all();
    c.crash(n(1));
    // The client retries at the new leader: the command is in the log twice.
    c.elect(n(2));
    let mut retry = request.clone();
    if let SessionEntry::Request { time, .. } = &mut retry {
        *time = 30;
    }
    propose(&mut c, n(2), &retry);
    c.deliver_all();
    c.restart(n(1));
    for _ in 0..10 {
        c.tick_all();
        c.deliver_all();
    }
    for id in [1, 2, 3] {
        let (counter, outcomes) = replay(&c, n(id));
        assert_eq!(counter, 5, "applied once on n{id}");
        assert_eq!(
            outcomes,
            vec![Ok(Outcome::Applied(5)), Ok(Outcome::Duplicate(5))],
            "on n{id}"
        );
    }
}

#[test]
fn sessions_expire_on_replicated_time_at_the_same_entry_everywhere() {
    let mut c = Cluster::new(3, |b| b);
    c.elect(n(1));
    let a = SessionId(propose(&mut c, n(1), &SessionEntry::Register { time: 0 }).0);
    let b = SessionId(propose(&mut c, n(1), &SessionEntry::Register { time: 0 }).0);
    // Session b stays active; a is idle for longer than the timeout (1000).
    for (i, time) in [(1, 600), (2, 1200)] {
        propose(
            &mut c,
            n(1),
            &SessionEntry::Request {
                session: b,
                seq: i,
                ack_below: i,
                time,
                command: 1,
            },
        );
    }
    propose(
        &mut c,
        n(1),
        &SessionEntry::Request {
            session: a,
            seq: 1,
            ack_below: 1,
            time: 1300,
            command: 100,
        },
    );
    c.deliver_all();
    for _ in 0..4 {
        c.tick_all();
        c.deliver_all();
    }
    let mut results = BTreeMap::new();
    for id in [1u64, 2, 3] {
        let (counter, outcomes) = replay(&c, n(id));
        results.insert(id, (counter, outcomes.clone()));
        assert_eq!(
            counter, 2,
            "the expired session's command is not applied on n{id}"
        );
        assert_eq!(outcomes[2], Err(SessionError::UnknownSession(a)));
    }
    assert!(results.values().all(|r| r == &results[&1]));
}

#[test]
fn acknowledged_responses_are_dropped_and_outstanding_ones_are_bounded() {
    let mut s: Sessions<u64> = Sessions::new(SessionConfig::new(100, 2, 4).unwrap());
    let id = s.register(LogIndex(1), 0).expect("room");
    assert_eq!(s.apply(id, 1, 1, 1, || 10), Ok(Outcome::Applied(10)));
    assert_eq!(s.apply(id, 2, 1, 2, || 20), Ok(Outcome::Applied(20)));
    assert_eq!(
        s.apply(id, 3, 1, 3, || 30),
        Err(SessionError::TooManyOutstanding(id))
    );
    // The client acknowledges 1 and 2: room again; 1 is now stale.
    assert_eq!(s.apply(id, 3, 3, 4, || 30), Ok(Outcome::Applied(30)));
    assert_eq!(
        s.apply(id, 1, 3, 5, || 99),
        Err(SessionError::Stale {
            session: id,
            seq: 1
        })
    );
    // Registering past the limit closes the least recently active session that has
    // applied nothing (2), never the one that has (the least recently active of all).
    for i in 2..=4 {
        s.register(LogIndex(i), 6).expect("room");
    }
    assert_eq!(s.register(LogIndex(5), 7), Ok(SessionId(5)));
    assert_eq!(s.len(), 4);
    assert!(s.contains(id) && !s.contains(SessionId(2)));
    // Once every open session has applied a request, a registration is refused.
    for i in 3..=5 {
        assert_eq!(
            s.apply(SessionId(i), 1, 1, 7, || 1),
            Ok(Outcome::Applied(1))
        );
    }
    assert_eq!(
        s.register(LogIndex(6), 7),
        Err(SessionError::TableFull { sessions_max: 4 })
    );
    assert_eq!(s.len(), 4);
    // Time never goes backwards.
    s.advance(3);
    assert_eq!(s.now(), 7);
    assert!(SessionConfig::new(0, 1, 1).is_err());
}

#[test]
fn a_flood_of_unused_registrations_locks_no_one_out_and_closes_no_session_in_use() {
    // Two clients' sessions in use, then another client registering in a loop and never
    // using what it registers (or retries that left sessions behind).
    let mut s: Sessions<u64> = Sessions::new(SessionConfig::new(1_000, 8, 16).unwrap());
    let live = s.register(LogIndex(1), 0).expect("room");
    assert_eq!(s.apply(live, 1, 1, 1, || 7), Ok(Outcome::Applied(7)));
    // This one's answer was acknowledged: it holds no saved response, but is in use.
    let acked = s.register(LogIndex(2), 1).expect("room");
    assert_eq!(s.apply(acked, 1, 1, 1, || 5), Ok(Outcome::Applied(5)));
    assert_eq!(s.apply(acked, 2, 2, 1, || 6), Ok(Outcome::Applied(6)));
    assert_eq!(s.apply(acked, 3, 3, 1, || 0), Ok(Outcome::Applied(0)));
    for i in 3..=1_000 {
        s.register(LogIndex(i), 2)
            .expect("an unused session makes room");
    }
    assert_eq!(s.len(), 16);
    // Another client can still register (at once, not after the timeout), and use it.
    let fresh = s.register(LogIndex(1_001), 3).expect("room");
    assert_eq!(s.apply(fresh, 1, 1, 3, || 11), Ok(Outcome::Applied(11)));
    // The sessions in use were not closed to make room: their retries are still
    // deduplicated, and their next requests are applied.
    assert_eq!(s.apply(live, 1, 1, 4, || 99), Ok(Outcome::Duplicate(7)));
    assert_eq!(s.apply(live, 2, 2, 4, || 8), Ok(Outcome::Applied(8)));
    assert_eq!(
        s.apply(acked, 2, 3, 4, || 99),
        Err(SessionError::Stale {
            session: acked,
            seq: 2
        })
    );
    // The flood closed its own sessions, least recently active first: its latest are open.
    assert!(s.contains(SessionId(1_000)) && !s.contains(SessionId(3)));
    // The same decisions after a snapshot: the index of unused sessions is rebuilt.
    let bytes = postcard::to_stdvec(&s).unwrap();
    let mut restored: Sessions<u64> = postcard::from_bytes(&bytes).unwrap();
    restored.set_config(SessionConfig::new(1_000, 8, 16).unwrap());
    for i in 1_002..=1_100 {
        s.register(LogIndex(i), 5).expect("room");
        restored.register(LogIndex(i), 5).expect("room");
    }
    assert_eq!(restored, s);
    assert!(s.contains(live) && s.contains(acked) && s.contains(fresh));
    // Only when every open session has applied a request is a registration refused.
    for i in 1_088..=1_100 {
        assert_eq!(
            s.apply(SessionId(i), 1, 1, 6, || 1),
            Ok(Outcome::Applied(1))
        );
    }
    assert_eq!(
        s.register(LogIndex(1_101), 6),
        Err(SessionError::TableFull { sessions_max: 16 })
    );
    assert_eq!(s.len(), 16);
    let error = SessionError::TableFull { sessions_max: 16 }.to_string();
    assert!(error.contains("full") && error.contains("16"), "{error}");
}
