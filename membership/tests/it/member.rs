//! One `Member` stepped by hand: the contract's order, refutation, Lifeguard's suspicion
//! timeout, limits, and bytes off the wire.

use std::time::Duration;

use proptest::prelude::*;
use synod_membership::{
    Body, Member, MemberConfig, MemberEvent, MemberState, MemberWrite, Message, Update, ViewChange,
};
use synod_node::{Effect, EffectOf, Input, NodeId, PersistToken, Protocol, Time};
use synod_sim::SimRng;

use crate::cluster::n;

fn drain(m: &mut Member) -> Vec<EffectOf<Member>> {
    std::iter::from_fn(|| m.poll()).collect()
}

fn sends(effects: &[EffectOf<Member>]) -> Vec<(NodeId, Message)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send { to, message } => Some((*to, message.clone())),
            _ => None,
        })
        .collect()
}

fn events(effects: &[EffectOf<Member>]) -> Vec<MemberEvent> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Apply(ViewChange::Member(event)) => Some(*event),
            _ => None,
        })
        .collect()
}

fn alive(id: NodeId, incarnation: u64) -> Update {
    Update {
        id,
        generation: 1,
        incarnation,
        state: MemberState::Alive,
        joined: 1,
        by: id,
        group: n(2),
        group_size: 1,
        merged_from: None,
    }
}

fn message(body: Body, updates: Vec<Update>) -> Message {
    Message {
        generation: 1,
        incarnation: 0,
        joined: 1,
        group: n(2),
        group_size: 1,
        merged_from: None,
        kv_floor: 0,
        body,
        updates,
    }
}

/// Member 1, ready, knowing members 2..=others+1 alive.
fn ready(
    others: u64,
    config: impl FnOnce(synod_membership::MemberConfigBuilder) -> synod_membership::MemberConfigBuilder,
) -> Member {
    let config = config(MemberConfig::builder(n(1), 7).probe(100, 50))
        .build()
        .unwrap();
    let mut m = Member::start(config, 0);
    drain(&mut m);
    m.handle(Time::ZERO, Input::Persisted(PersistToken(1)));
    drain(&mut m);
    let updates = (2..=others + 1).map(|i| alive(n(i), 0)).collect();
    m.handle(
        Time::ZERO,
        Input::Message {
            from: n(2),
            message: message(Body::Gossip, updates),
        },
    );
    drain(&mut m);
    m
}

#[test]
fn the_generation_is_durable_before_anything_is_sent() {
    let config = MemberConfig::builder(n(1), 1)
        .seeds([n(2)])
        .build()
        .unwrap();
    let mut m = Member::start(config, 4);
    assert_eq!(m.generation(), 5);
    let first = drain(&mut m);
    assert_eq!(
        first,
        [Effect::Persist {
            token: PersistToken(1),
            write: MemberWrite { generation: 5 }
        }]
    );
    // Before the acknowledgement: a probe is dropped unanswered, a wake does nothing.
    m.handle(
        Time::from_millis(1),
        Input::Message {
            from: n(2),
            message: message(Body::Ping { seq: 1 }, vec![]),
        },
    );
    m.handle(Time::from_millis(2), Input::Wake);
    assert_eq!(drain(&mut m), []);
    assert!(!m.is_ready());
    // Once durable, it joins through its seed.
    m.handle(Time::from_millis(3), Input::Persisted(PersistToken(1)));
    let after = drain(&mut m);
    let sent = sends(&after);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, n(2));
    assert_eq!(sent[0].1.body, Body::Sync { reply: true });
    assert_eq!(sent[0].1.generation, 5);
    assert!(after.iter().any(|e| matches!(e, Effect::WakeAt(_))));
}

/// Wakes `m` every 10 ms from `from` until it offers a push-pull; returns when and the hash.
fn next_offer(m: &mut Member, from: Time) -> (Time, NodeId, u64) {
    let mut t = from;
    for _ in 0..1_000 {
        t += Duration::from_millis(10);
        m.handle(t, Input::Wake);
        for (to, msg) in sends(&drain(m)) {
            if let Body::SyncOffer { hash } = msg.body {
                return (t, to, hash);
            }
            assert!(
                !matches!(msg.body, Body::Sync { .. }),
                "a whole view sent to live {to}, not an offer"
            );
        }
    }
    panic!("no push-pull offer in 10 s");
}

#[test]
fn a_push_pull_offer_is_answered_with_the_view_only_when_the_views_differ() {
    let mut m = ready(3, |b| b.push_pull_interval_ms(500));
    // Its own offer carries the hash of its view; the same hash back is answered with
    // nothing, the view unchanged by the offer's header (what it holds of member 2).
    let (t, to, hash) = next_offer(&mut m, Time::ZERO);
    assert!((2..=4).contains(&to.get()), "offered to {to}");
    let offer = |hash| Input::Message {
        from: n(2),
        message: message(Body::SyncOffer { hash }, vec![]),
    };
    m.handle(t, offer(hash));
    let answer = sends(&drain(&mut m));
    assert!(
        answer
            .iter()
            .all(|(_, msg)| !matches!(msg.body, Body::Sync { .. })),
        "views that agree are exchanged: {answer:?}"
    );
    assert_eq!(m.stats().syncs_matched, 1);
    // Another hash: the view goes back, asking for the offerer's in return.
    m.handle(t, offer(hash ^ 1));
    let answer = sends(&drain(&mut m));
    let sync: Vec<_> = answer
        .iter()
        .filter(|(_, msg)| msg.body == Body::Sync { reply: true })
        .collect();
    assert_eq!(sync.len(), 1, "{answer:?}");
    assert_eq!(sync[0].0, n(2));
    let mut ids: Vec<u64> = sync[0].1.updates.iter().map(|u| u.id.get()).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3, 4]);
    assert_eq!(m.stats().syncs_matched, 1);
    // A change of view changes the hash it offers.
    m.handle(
        t,
        Input::Message {
            from: n(3),
            message: message(Body::Gossip, vec![alive(n(4), 5)]),
        },
    );
    drain(&mut m);
    let (_, _, changed) = next_offer(&mut m, t);
    assert_ne!(changed, hash);
}

/// The merges `m` handed up, as `(group, other, winner)`.
fn merges(effects: &[EffectOf<Member>]) -> Vec<(u64, u64, u64)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Apply(ViewChange::Merged {
                group,
                other,
                winner,
                ..
            }) => Some((group.get(), other.get(), winner.get())),
            _ => None,
        })
        .collect()
}

/// Member 1 first joins group 5, which then merges into the larger group 4; later member 5
/// is declared dead (a partition), forms a group again and merges it into group 4 after the
/// heal. Member 1, on group 4's side, is told of that merge although it once came from group
/// 5 itself: that old merge ended with member 5's death. It was not told before (its
/// `merged_from` kept naming 5, and a member from 5 looked like old news), which the split
/// test hit in 9 members split 4/5.
#[test]
fn a_member_that_came_from_a_group_is_told_when_that_group_merges_in_again() {
    let mut m = ready(0, |b| b);
    let t = |ms| Time::from_millis(ms);
    let coordinator = |id: u64, incarnation: u64, joined: u64, size: u32| Update {
        id: n(id),
        generation: 1,
        incarnation,
        state: MemberState::Alive,
        joined,
        by: n(id),
        group: n(id),
        group_size: size,
        merged_from: None,
    };
    // Group 5 answers the join: member 1 takes a stamp and joins it.
    let sync = |from: u64, updates| Input::Message {
        from: n(from),
        message: Message {
            generation: 1,
            incarnation: 0,
            joined: 1,
            group: n(from),
            group_size: 2,
            merged_from: None,
            kv_floor: 0,
            body: Body::Sync { reply: false },
            updates,
        },
    };
    m.handle(t(10), sync(5, vec![coordinator(5, 0, 1, 2)]));
    drain(&mut m);
    assert_eq!(m.coordinator(), n(5));
    // Group 4, larger, and as old: member 1 moves into it from 5.
    m.handle(
        t(20),
        Input::Message {
            from: n(3),
            message: message(Body::Gossip, vec![coordinator(4, 0, 1, 5)]),
        },
    );
    let first = merges(&drain(&mut m));
    assert!(first.contains(&(5, 4, 4)), "{first:?}");
    assert_eq!(m.coordinator(), n(4));
    // Member 5 is declared dead (cut off), then comes back, its group merged into 4.
    let dead = Update {
        state: MemberState::Dead,
        by: n(4),
        ..coordinator(5, 0, 1, 2)
    };
    m.handle(
        t(30),
        Input::Message {
            from: n(4),
            message: message(Body::Gossip, vec![dead]),
        },
    );
    m.handle(t(35), Input::Wake);
    drain(&mut m);
    assert_eq!(m.state_of(n(5)), Some(MemberState::Dead));
    let back = Update {
        group: n(4),
        merged_from: Some(n(5)),
        ..coordinator(5, 3, 1, 1)
    };
    m.handle(
        t(40),
        Input::Message {
            from: n(4),
            message: message(Body::Gossip, vec![back]),
        },
    );
    let told = merges(&drain(&mut m));
    assert_eq!(m.state_of(n(5)), Some(MemberState::Alive));
    assert!(
        told.contains(&(4, 5, 4)),
        "member 1 was not told that group 5 merged into 4 again: {told:?}"
    );
}

#[test]
fn a_suspicion_of_itself_is_refuted_with_a_higher_incarnation() {
    let mut m = ready(3, |b| b);
    let suspicion = Update {
        id: n(1),
        generation: 1,
        incarnation: 0,
        state: MemberState::Suspect,
        joined: 1,
        by: n(3),
        group: n(2),
        group_size: 1,
        merged_from: None,
    };
    m.handle(
        Time::from_millis(10),
        Input::Message {
            from: n(3),
            message: message(Body::Ping { seq: 9 }, vec![suspicion]),
        },
    );
    assert_eq!(m.incarnation(), 1);
    let sent = sends(&drain(&mut m));
    let (to, ack) = &sent[0];
    assert_eq!(*to, n(3));
    assert_eq!(ack.body, Body::Ack { seq: 9 });
    assert_eq!(ack.incarnation, 1);
    assert!(ack.updates.contains(&Update {
        id: n(1),
        generation: 1,
        incarnation: 1,
        state: MemberState::Alive,
        joined: 0,
        by: n(1),
        group: n(1),
        group_size: 1,
        merged_from: None,
    }));
    // A suspicion of an older incarnation, or of an earlier start, changes nothing.
    for old in [
        suspicion,
        Update {
            generation: 0,
            incarnation: 5,
            ..suspicion
        },
    ] {
        m.handle(
            Time::from_millis(11),
            Input::Message {
                from: n(3),
                message: message(Body::Gossip, vec![old]),
            },
        );
    }
    assert_eq!(m.incarnation(), 1);
    assert_eq!(m.stats().refutations, 1);
}

/// A suspicion of member 10 (generation 1, incarnation 0) by member `by`.
fn suspect_10(by: u64) -> Update {
    Update {
        id: n(10),
        generation: 1,
        incarnation: 0,
        state: MemberState::Suspect,
        joined: 1,
        by: n(by),
        group: n(2),
        group_size: 1,
        merged_from: None,
    }
}

/// How long after `t0` member 10 is declared dead, found by waking `m` every 10 ms and
/// answering nothing (so that member 10 is not probed into something else).
fn member_10_dead_after(m: &mut Member, t0: Time) -> Duration {
    let mut now = t0;
    while now < Time::from_secs(100) {
        now += Duration::from_millis(10);
        m.handle(now, Input::Wake);
        if events(&drain(m))
            .iter()
            .any(|e| e.id == n(10) && e.state == Some(MemberState::Dead))
        {
            return now.saturating_duration_since(t0);
        }
    }
    panic!("never declared dead");
}

#[test]
fn confirmations_shorten_the_suspicion_with_lifeguard() {
    // Declared dead at the first wake at or after the deadline: find it by stepping.
    fn declared_dead_after(confirmers: &[u64], lifeguard: bool) -> Duration {
        let mut m = ready(9, |b| {
            b.lifeguard(lifeguard, 8).push_pull_interval_ms(1_000_000)
        });
        let t0 = Time::from_millis(1);
        for &by in confirmers {
            m.handle(
                t0,
                Input::Message {
                    from: n(by),
                    message: message(Body::Sync { reply: false }, vec![suspect_10(by)]),
                },
            );
        }
        drain(&mut m);
        member_10_dead_after(&mut m, t0)
    }
    // Ten members: min = 4 x log10(10) x 100 ms = 400 ms; max = 6 x min; k = 2.
    let alone = declared_dead_after(&[2], true);
    let one = declared_dead_after(&[2, 3], true);
    let two = declared_dead_after(&[2, 3, 4], true);
    let plain = declared_dead_after(&[2], false);
    println!(
        "suspicion timeouts: lifeguard {alone:?} / {one:?} / {two:?} with 0 / 1 / 2 confirmations; plain SWIM {plain:?}"
    );
    assert!(alone > one && one > two, "{alone:?} {one:?} {two:?}");
    assert!((Duration::from_millis(2_400)..Duration::from_millis(2_420)).contains(&alone));
    assert!((Duration::from_millis(400)..Duration::from_millis(420)).contains(&two));
    assert!((Duration::from_millis(400)..Duration::from_millis(420)).contains(&plain));
}

/// A suspicion of member 10 from member 2 at `t0`, then `fakes` more naming suspecters
/// that are not in the view, all sent by member 2.
fn suspected_with_made_up_confirmers(m: &mut Member, t0: Time, fakes: u64) {
    let mut updates = vec![suspect_10(2)];
    updates.extend((0..fakes).map(|i| suspect_10(1_000 + i)));
    for chunk in updates.chunks(20) {
        m.handle(
            t0,
            Input::Message {
                from: n(2),
                message: message(Body::Gossip, chunk.to_vec()),
            },
        );
        drain(m);
    }
}

#[test]
fn suspecters_outside_the_view_take_no_memory() {
    let mut m = ready(9, |b| b.push_pull_interval_ms(1_000_000));
    let t0 = Time::from_millis(1);
    suspected_with_made_up_confirmers(&mut m, t0, 0);
    let before = format!("{m:?}").len();
    suspected_with_made_up_confirmers(&mut m, t0, 4_000);
    let after = format!("{m:?}").len();
    assert_eq!(m.known(), 9);
    assert_eq!(m.state_of(n(10)), Some(MemberState::Suspect));
    // The gossip queue holds one update per member, so nothing else may grow.
    assert!(
        after < before + 200,
        "the member grew from {before} to {after} bytes of Debug for a view of 10"
    );
}

#[test]
fn suspecters_outside_the_view_do_not_shorten_a_suspicion() {
    // Ten members with Lifeguard: 2.4 s with no confirmation, 400 ms with two (as in
    // `confirmations_shorten_the_suspicion_with_lifeguard`).
    let mut m = ready(9, |b| b.lifeguard(true, 8).push_pull_interval_ms(1_000_000));
    let t0 = Time::from_millis(1);
    suspected_with_made_up_confirmers(&mut m, t0, 50);
    let dead_after = member_10_dead_after(&mut m, t0);
    assert!(
        dead_after >= Duration::from_millis(2_400),
        "declared dead after {dead_after:?}: made-up suspecters counted as confirmations"
    );
}

#[test]
fn a_tombstone_evicted_to_make_room_is_handed_up_as_forgotten() {
    // A view of at most 3: members 2, 3 and 4, then 4 dies and 5 arrives.
    let mut m = ready(3, |b| b.limits(3, 64, 8));
    let dead = Update {
        state: MemberState::Dead,
        by: n(2),
        ..alive(n(4), 0)
    };
    m.handle(
        Time::from_millis(1),
        Input::Message {
            from: n(2),
            message: message(Body::Gossip, vec![dead]),
        },
    );
    drain(&mut m);
    assert_eq!(m.state_of(n(4)), Some(MemberState::Dead));
    m.handle(
        Time::from_millis(2),
        Input::Message {
            from: n(2),
            message: message(Body::Gossip, vec![alive(n(5), 0)]),
        },
    );
    let seen = events(&drain(&mut m));
    assert_eq!(m.state_of(n(4)), None, "4 made room for 5");
    assert_eq!(m.state_of(n(5)), Some(MemberState::Alive));
    assert!(
        seen.contains(&MemberEvent {
            id: n(4),
            generation: 1,
            state: None,
            at: Time::from_millis(2),
        }),
        "member 4 left the view with no event: {seen:?}"
    );
}

#[test]
fn the_view_and_every_message_stay_within_their_limits() {
    let mut m = ready(0, |b| b.limits(50, 20, 4).message_bytes_max(200, 400));
    // A flood of members: the view keeps at most 50.
    let flood: Vec<Update> = (2..=5_000).map(|i| alive(n(i), 0)).collect();
    m.handle(
        Time::from_millis(1),
        Input::Message {
            from: n(2),
            message: message(Body::Sync { reply: true }, flood),
        },
    );
    assert_eq!(m.known(), 50);
    assert!(m.gossip_queued() <= 20);
    assert!(m.stats().members_full > 0);
    let mut now = Time::from_millis(1);
    let mut checked = 0;
    for step in 0..2_000u64 {
        now += Duration::from_millis(7);
        // Relay requests for many targets: at most 4 relayed at once.
        m.handle(
            now,
            Input::Message {
                from: n(2 + step % 40),
                message: message(
                    Body::PingReq {
                        seq: step,
                        target: n(100 + step),
                    },
                    vec![],
                ),
            },
        );
        m.handle(now, Input::Wake);
        assert!(m.relays() <= 4);
        for effect in drain(&mut m) {
            if let Effect::Send { to, message } = effect {
                assert_ne!(to, n(1));
                let limit = if matches!(message.body, Body::Sync { .. }) {
                    400
                } else {
                    200
                };
                let bytes = message.encode();
                assert!(bytes.len() <= limit, "{} bytes: {message:?}", bytes.len());
                assert_eq!(Message::decode(&bytes, limit).as_ref(), Ok(&message));
                checked += 1;
            }
        }
    }
    assert!(checked > 1_000);
}

proptest! {
    /// Damaged bytes are an error or a message, never a panic; and whatever decodes, the
    /// member takes without panicking.
    #[test]
    fn garbage_is_an_error_or_a_message_and_never_a_panic(seed in any::<u64>()) {
        let mut rng = SimRng::new(seed);
        let valid = message(
            Body::PingReq { seq: 3, target: n(4) },
            vec![alive(n(2), 1), Update { state: MemberState::Dead, ..alive(n(3), 2) }],
        )
        .encode();
        let damaged = synod_sim::mutate::mutate(&valid, &mut rng);
        let mut m = ready(3, |b| b);
        if let Ok(decoded) = Message::decode(&damaged, 1_400) {
            m.handle(Time::from_millis(5), Input::Message { from: n(2), message: decoded });
            m.handle(Time::from_millis(500), Input::Wake);
            drain(&mut m);
        }
    }
}

#[test]
fn stale_news_never_revives_a_forgotten_member_nor_an_earlier_start() {
    let mut m = ready(3, |b| b.dead_reap_ms(1_000));
    let t = |ms: u64| Time::from_millis(ms);
    let dead = Update {
        state: MemberState::Dead,
        ..alive(n(4), 0)
    };
    m.handle(
        t(1),
        Input::Message {
            from: n(2),
            message: message(Body::Gossip, vec![dead]),
        },
    );
    assert_eq!(m.state_of(n(4)), Some(MemberState::Dead));
    // A stale alive of the same incarnation does not override the tombstone.
    m.handle(
        t(2),
        Input::Message {
            from: n(2),
            message: message(Body::Gossip, vec![alive(n(4), 0)]),
        },
    );
    assert_eq!(m.state_of(n(4)), Some(MemberState::Dead));
    // Forgotten after the grace period; then its suspicion or death is stale news.
    let forgotten = (0..200u64)
        .map(|i| t(10 + i * 10))
        .find(|&now| {
            m.handle(now, Input::Wake);
            let changes = events(&drain(&mut m));
            changes.iter().any(|e| e.id == n(4) && e.state.is_none())
        })
        .expect("forgotten");
    assert!(forgotten >= t(1_001));
    for stale in [
        dead,
        Update {
            state: MemberState::Suspect,
            ..alive(n(4), 0)
        },
    ] {
        m.handle(
            forgotten,
            Input::Message {
                from: n(2),
                message: message(Body::Sync { reply: false }, vec![stale]),
            },
        );
        assert_eq!(m.state_of(n(4)), None);
    }
    // An earlier start of member 3: its news loses to what the later start said, and a
    // message from it is dropped whole.
    m.handle(
        forgotten,
        Input::Message {
            from: n(3),
            message: Message {
                generation: 2,
                ..message(Body::Gossip, vec![])
            },
        },
    );
    let dropped = m.stats().messages_dropped;
    m.handle(
        forgotten,
        Input::Message {
            from: n(3),
            message: message(Body::Ping { seq: 1 }, vec![]),
        },
    );
    assert_eq!(m.stats().messages_dropped, dropped + 1);
    assert!(
        sends(&drain(&mut m)).is_empty(),
        "no ack to an earlier start"
    );
    let info = m.members().into_iter().find(|i| i.id == n(3)).unwrap();
    assert_eq!((info.generation, info.state), (2, MemberState::Alive));
}

#[test]
fn a_client_asking_for_the_view_gets_every_member_in_order() {
    use synod_membership::{MemberInfo, MemberRequest, MemberResponse};
    use synod_node::RequestId;
    let mut m = ready(2, |b| b);
    m.handle(
        Time::from_millis(1),
        Input::Request {
            id: RequestId(7),
            request: MemberRequest::Members,
        },
    );
    let replies: Vec<_> = drain(&mut m)
        .into_iter()
        .filter_map(|e| match e {
            Effect::Reply { id, response } => Some((id, response)),
            _ => None,
        })
        .collect();
    let info = |id: u64, incarnation: u64| MemberInfo {
        id: n(id),
        generation: 1,
        incarnation,
        state: MemberState::Alive,
    };
    assert_eq!(
        replies,
        [(
            RequestId(7),
            MemberResponse::Members(vec![info(1, 0), info(2, 0), info(3, 0)])
        )]
    );
}

/// Member `id` of members 1, 2 and 3, ready and knowing the others alive.
fn one_of_three(id: u64) -> Member {
    one_of_three_after(id, 0)
}

/// Member `id` of members 1, 2 and 3 (each known to the others at generation 1), started
/// after a start that made `last_generation` durable.
fn one_of_three_after(id: u64, last_generation: u64) -> Member {
    let config = MemberConfig::builder(n(id), id).build().unwrap();
    let mut m = Member::start(config, last_generation);
    drain(&mut m);
    m.handle(Time::ZERO, Input::Persisted(PersistToken(1)));
    drain(&mut m);
    let others = (1..=3)
        .filter(|&o| o != id)
        .map(|o| alive(n(o), 0))
        .collect();
    m.handle(
        Time::ZERO,
        Input::Message {
            from: n(if id == 1 { 2 } else { 1 }),
            message: message(Body::Gossip, others),
        },
    );
    drain(&mut m);
    m
}

#[test]
fn a_member_that_leaves_is_dead_at_once_everywhere_and_answers_nothing() {
    use synod_membership::{MemberRequest, MemberResponse};
    use synod_node::RequestId;
    let mut members: Vec<Member> = (1..=3).map(one_of_three).collect();
    let t = Time::from_millis(5);
    members[0].handle(
        t,
        Input::Request {
            id: RequestId(1),
            request: MemberRequest::Leave,
        },
    );
    let effects = drain(&mut members[0]);
    assert!(effects.contains(&Effect::Reply {
        id: RequestId(1),
        response: MemberResponse::Left
    }));
    let farewells = sends(&effects);
    assert_eq!(
        farewells.iter().map(|(to, _)| *to).collect::<Vec<_>>(),
        [n(2), n(3)]
    );
    for (to, farewell) in farewells {
        let member = &mut members[to.get() as usize - 1];
        member.handle(
            t,
            Input::Message {
                from: n(1),
                message: farewell,
            },
        );
        let seen = events(&drain(member));
        let about_one: Vec<_> = seen
            .iter()
            .filter(|e| e.id == n(1))
            .map(|e| e.state)
            .collect();
        assert_eq!(
            about_one,
            [Some(MemberState::Dead)],
            "{to}: no suspicion first"
        );
        assert_eq!(member.state_of(n(1)), Some(MemberState::Dead));
        assert_eq!(member.live_members(), [n(2), n(3)]);
    }
    // The member that left answers no probe and wakes for nothing.
    members[0].handle(
        t,
        Input::Message {
            from: n(2),
            message: message(Body::Ping { seq: 4 }, vec![]),
        },
    );
    members[0].handle(Time::from_secs(10), Input::Wake);
    assert_eq!(drain(&mut members[0]), []);
}

/// Member 1 hears `lie` about itself from member 2, and so does member 3, which cannot
/// tell that it is a lie; member 1 must make member 3 take it as alive again, whatever the
/// lie said. Returns members 1 and 3.
fn outlive(lie: Update) -> (Member, Member) {
    let [mut one, _, mut three] = [1, 2, 3].map(one_of_three);
    for m in [&mut one, &mut three] {
        m.handle(
            Time::from_millis(1),
            Input::Message {
                from: n(2),
                message: message(Body::Gossip, vec![lie]),
            },
        );
    }
    drain(&mut three);
    assert_ne!(three.state_of(n(1)), Some(MemberState::Alive));
    // Member 1 acknowledges whatever it persists, then talks to member 3.
    for effect in drain(&mut one) {
        if let Effect::Persist { token, write } = effect {
            assert!(write.generation > one.generation());
            one.handle(Time::from_millis(2), Input::Persisted(token));
        }
    }
    let mut now = Time::from_millis(2);
    let mut reached = false;
    while !reached && now < Time::from_secs(10) {
        now += Duration::from_millis(10);
        one.handle(now, Input::Wake);
        for (to, message) in sends(&drain(&mut one)) {
            if to == n(3) {
                three.handle(
                    now,
                    Input::Message {
                        from: n(1),
                        message,
                    },
                );
                reached = true;
            }
        }
    }
    assert!(reached, "member 1 never sent to member 3");
    drain(&mut three);
    (one, three)
}

#[test]
fn a_suspicion_at_the_largest_incarnation_is_outlived_with_a_new_generation() {
    let lie = Update {
        id: n(1),
        generation: 1,
        incarnation: u64::MAX,
        state: MemberState::Dead,
        joined: 1,
        by: n(2),
        group: n(2),
        group_size: 1,
        merged_from: None,
    };
    let (one, three) = outlive(lie);
    assert_eq!(one.generation(), 2);
    assert_eq!(one.incarnation(), 0);
    assert_eq!(one.stats().renewals, 1);
    assert_eq!(three.state_of(n(1)), Some(MemberState::Alive));
}

#[test]
fn a_generation_this_member_never_had_is_outlived_with_a_larger_one() {
    let lie = Update {
        id: n(1),
        generation: 40,
        incarnation: 0,
        state: MemberState::Dead,
        joined: 1,
        by: n(2),
        group: n(2),
        group_size: 1,
        merged_from: None,
    };
    let (one, three) = outlive(lie);
    assert_eq!(one.generation(), 41);
    assert_eq!(three.state_of(n(1)), Some(MemberState::Alive));
}

#[test]
fn a_member_that_leaves_before_its_generation_is_durable_never_joins() {
    let config = MemberConfig::builder(n(1), 1)
        .seeds([n(2)])
        .build()
        .unwrap();
    let mut m = Member::start(config, 0);
    drain(&mut m);
    m.handle(
        Time::ZERO,
        Input::Request {
            id: synod_node::RequestId(1),
            request: synod_membership::MemberRequest::Leave,
        },
    );
    drain(&mut m);
    m.handle(Time::from_millis(1), Input::Persisted(PersistToken(1)));
    m.handle(Time::from_secs(1), Input::Wake);
    assert_eq!(sends(&drain(&mut m)), []);
}

/// A claim at a generation no start could reach, however many times its member restarted
/// (damage, or a lie): member 3 hears member 1 declared dead at `u64::MAX`, a member that
/// never met member 1 hears of it first through a claim that it is alive at `u64::MAX`.
/// Neither may keep member 1 dead for ever: once member 1 talks to them, both hold it alive
/// at its real generation, and member 1 keeps that generation.
#[test]
fn a_claim_at_the_largest_generation_keeps_no_member_dead() {
    let at_max = |state| Update {
        id: n(1),
        generation: u64::MAX,
        incarnation: 0,
        state,
        joined: 1,
        by: n(2),
        group: n(2),
        group_size: 1,
        merged_from: None,
    };
    let [mut one, _, mut three] = [1, 2, 3].map(one_of_three);
    // Member 4 knows only member 2, and hears of member 1 from the lie.
    let config = MemberConfig::builder(n(4), 4).build().unwrap();
    let mut four = Member::start(config, 0);
    drain(&mut four);
    four.handle(Time::ZERO, Input::Persisted(PersistToken(1)));
    drain(&mut four);
    let t = Time::from_millis(1);
    for (m, lie) in [
        (&mut one, at_max(MemberState::Dead)),
        (&mut three, at_max(MemberState::Dead)),
        (&mut four, at_max(MemberState::Alive)),
    ] {
        m.handle(
            t,
            Input::Message {
                from: n(2),
                message: message(Body::Gossip, vec![lie]),
            },
        );
        drain(m);
    }
    // Whatever member 1 persists is acknowledged; it then talks to members 3 and 4.
    for effect in drain(&mut one) {
        if let Effect::Persist { token, .. } = effect {
            one.handle(t, Input::Persisted(token));
        }
    }
    drain(&mut one);
    let from_one = |one: &Member| Message {
        generation: one.generation(),
        incarnation: one.incarnation(),
        joined: one.joined(),
        group: n(1),
        group_size: 1,
        merged_from: None,
        kv_floor: 0,
        body: Body::Ping { seq: 1 },
        updates: Vec::new(),
    };
    for m in [&mut three, &mut four] {
        m.handle(
            Time::from_millis(2),
            Input::Message {
                from: n(1),
                message: from_one(&one),
            },
        );
        drain(m);
        let seen = m.members().into_iter().find(|i| i.id == n(1));
        assert_eq!(
            seen.map(|i| (i.generation, i.state)),
            Some((1, MemberState::Alive)),
            "member {} holds member 1 as {seen:?}",
            m.config().id()
        );
    }
    assert_eq!(one.generation(), 1);
    assert_eq!(one.stats().renewals, 0);
}

/// A lie told to member 1 alone, that it is dead at the furthest generation a member
/// believes (`1 + GENERATION_STEP_MAX`), makes it take a new generation; member 3, which
/// never heard the lie and still holds generation 1 for member 1, must take member 1's new
/// generation, so that a suspicion of member 1 at generation 1 (a probe lost at member 2)
/// is outlived there instead of ending with the live member 1 dead. Member 1 is at
/// generation `1 + restarts` (member 3 did not hear of its restarts) and returns the
/// generation it renewed to.
fn a_renewal_past_a_lie_reaches_a_member_that_never_heard_it(restarts: u64) -> u64 {
    let step = synod_membership::GENERATION_STEP_MAX;
    let lie = Update {
        state: MemberState::Dead,
        by: n(2),
        generation: 1 + step,
        ..alive(n(1), 0)
    };
    let mut one = one_of_three_after(1, restarts);
    let mut three = one_of_three(3);
    one.handle(
        Time::from_millis(1),
        Input::Message {
            from: n(2),
            message: message(Body::Gossip, vec![lie]),
        },
    );
    for effect in drain(&mut one) {
        if let Effect::Persist { token, .. } = effect {
            one.handle(Time::from_millis(2), Input::Persisted(token));
        }
    }
    drain(&mut one);
    assert_eq!(one.stats().renewals, 1);
    // Its updates beat the lie.
    assert!((one.generation(), one.incarnation()) > (lie.generation, lie.incarnation));
    // Member 2 suspects member 1 at the generation it knows (a probe lost), and says so.
    let suspicion = Update {
        state: MemberState::Suspect,
        by: n(2),
        ..alive(n(1), 0)
    };
    three.handle(
        Time::from_millis(3),
        Input::Message {
            from: n(2),
            message: message(Body::Gossip, vec![suspicion]),
        },
    );
    drain(&mut three);
    // Members 1 and 3 talk for 10 s.
    let mut now = Time::from_millis(3);
    while now < Time::from_secs(10) {
        now += Duration::from_millis(10);
        one.handle(now, Input::Wake);
        for (to, message) in sends(&drain(&mut one)) {
            if to == n(3) {
                three.handle(
                    now,
                    Input::Message {
                        from: n(1),
                        message,
                    },
                );
            }
        }
        three.handle(now, Input::Wake);
        for (to, message) in sends(&drain(&mut three)) {
            if to == n(1) {
                one.handle(
                    now,
                    Input::Message {
                        from: n(3),
                        message,
                    },
                );
            }
        }
    }
    let seen = three.members().into_iter().find(|i| i.id == n(1));
    assert_eq!(
        seen.map(|i| (i.generation, i.incarnation, i.state)),
        Some((one.generation(), one.incarnation(), MemberState::Alive)),
        "member 3 holds the live member 1 as {seen:?} (refused: {})",
        three.stats().generations_refused
    );
    one.generation()
}

#[test]
fn a_renewal_past_a_lie_stays_within_reach_and_reaches_members_that_never_heard_it() {
    let step = synod_membership::GENERATION_STEP_MAX;
    // Member 1 at generation 1: the lie is at the edge of its reach, so it renews to the
    // lie's generation at a larger incarnation, which everyone holding generation 1 believes
    // whoever repeats it.
    assert_eq!(
        a_renewal_past_a_lie_reaches_a_member_that_never_heard_it(0),
        1 + step
    );
    // Member 1 at generation 2, of which member 3 did not hear: the renewal is beyond the
    // reach of what member 3 holds, which takes it from member 1's own messages.
    assert_eq!(
        a_renewal_past_a_lie_reaches_a_member_that_never_heard_it(1),
        2 + step
    );
}
