//! Log shipping under load, on nodes stepped by hand (`stepped.rs`): a healthy follower is sent each
//! entry once, and a follower that lost entries is still found and caught up.

use std::collections::BTreeSet;

use synod_consensus::{Message, MessageBody, NodeId, ReadId};

use crate::stepped::Cluster;

fn n(id: u64) -> NodeId {
    NodeId::new(id)
}

/// How many entries `delivered` carried to a node that had already been sent them.
fn entries_delivered_twice(delivered: &[Message]) -> (u64, u64) {
    let mut seen = BTreeSet::new();
    let (mut entries, mut twice) = (0, 0);
    for msg in delivered {
        if let MessageBody::Append { entries: sent, .. } = &msg.body {
            for e in sent {
                entries += 1;
                if !seen.insert((msg.to, e.index)) {
                    twice += 1;
                }
            }
        }
    }
    (entries, twice)
}

/// Every network hop the leader takes a proposal and a tick, so appends are always in
/// flight when a heartbeat's answer comes back, reporting a log that ends before them. With
/// first-in-first-out links and nothing lost, that answer says nothing about lost appends:
/// a leader that took it for one went back to probing and sent its whole window again at
/// almost every heartbeat.
#[test]
fn steady_proposals_send_each_entry_once_to_a_healthy_follower() {
    let mut c = Cluster::new(3, |b| b);
    c.elect(n(1));
    c.record_delivered = true;
    for step in 0..2_000 {
        c.propose(n(1), &format!("w{step}"));
        c.tick_all();
        c.deliver_hop();
    }
    c.deliver_all();
    // The last commit index rides on no append: followers hear it at the next tick.
    c.tick_all();
    c.deliver_all();
    assert_eq!(c.leader(), Some(n(1)), "one leader throughout");
    let last = c.node(n(1)).last_index();
    for id in [n(1), n(2), n(3)] {
        assert_eq!(c.node(id).commit_index(), last, "{id}");
    }
    assert!(c.violation.is_none(), "{:?}", c.violation);
    let heartbeats = c
        .delivered
        .iter()
        .filter(|m| matches!(m.body, MessageBody::Heartbeat { .. }))
        .count();
    let (entries, twice) = entries_delivered_twice(&c.delivered);
    println!(
        "steady proposals: 2000 proposals, {heartbeats} heartbeats, {entries} entries delivered, {twice} twice"
    );
    assert!(heartbeats >= 1_000, "heartbeats interleaved: {heartbeats}");
    assert_eq!(twice, 0, "entries delivered to a follower twice");
}

/// Appends that carry no entries, delivered to a follower.
fn empty_appends(delivered: &[Message]) -> usize {
    delivered
        .iter()
        .filter(|m| matches!(&m.body, MessageBody::Append { entries, .. } if entries.is_empty()))
        .count()
}

/// Each commit used to be announced to every follower in an empty append of its own, which
/// each follower answered: two messages per follower per commit. The commit index now rides
/// on the next append, and reaches an idle follower at the leader's next tick.
#[test]
fn a_commit_rides_on_the_next_append_and_reaches_an_idle_follower_within_a_tick() {
    let mut c = Cluster::new(3, |b| b);
    c.elect(n(1));
    c.deliver_all();
    c.record_delivered = true;
    let mut last = c.node(n(1)).last_index();
    for step in 0..20 {
        let before = last;
        last = c.propose(n(1), &format!("w{step}"));
        c.deliver_all();
        assert_eq!(c.node(n(1)).commit_index(), last);
        for id in [n(2), n(3)] {
            // What the append of `last` said was committed when it left.
            assert_eq!(c.node(id).commit_index(), before, "{id} at {step}");
        }
    }
    assert_eq!(empty_appends(&c.delivered), 0, "commit-only appends sent");
    c.tick(n(1));
    c.deliver_all();
    for id in [n(2), n(3)] {
        assert_eq!(c.node(id).commit_index(), last, "{id} after a tick");
        assert_eq!(c.applied(id), last, "{id} applied");
    }
    assert!(c.violation.is_none(), "{:?}", c.violation);
}

/// Delivers every message but those to `held_for`, until none is left; returns those, in
/// the order they were sent (a link that delays, and keeps its order).
fn deliver_all_but(c: &mut Cluster, held_for: NodeId) -> Vec<Message> {
    let mut held = Vec::new();
    while c.in_flight() > 0 {
        for message in c.take_all() {
            if message.to == held_for {
                held.push(message);
            } else {
                c.deliver(message);
            }
        }
    }
    held
}

/// A follower serves a linearizable read once it has applied the leader's read index, so
/// that index reaches it at once, not at the next tick, even when the entry behind it
/// reaches the follower only after the leader confirmed the read.
#[test]
fn a_follower_read_has_its_index_committed_there_without_waiting_for_a_tick() {
    let mut c = Cluster::new(3, |b| b);
    c.elect(n(1));
    c.deliver_all();
    let index = c.propose(n(1), "x");
    // n3's link is slow: n2's acknowledgement commits the entry, and then n2's answer to
    // the heartbeat round confirms n3's read, while the append, the round and the answer
    // are still on their way to n3.
    let mut held = deliver_all_but(&mut c, n(3));
    assert_eq!(c.node(n(1)).commit_index(), index);
    c.call(n(3), |r| r.read_index(ReadId(1))).unwrap();
    held.extend(deliver_all_but(&mut c, n(3)));
    assert!(c.reads(n(3)).is_empty(), "the answer is held");
    for message in held {
        c.deliver(message);
    }
    c.deliver_all();
    assert_eq!(c.reads(n(3))[0].index, Some(index));
    assert_eq!(c.node(n(3)).commit_index(), index);
    assert_eq!(c.applied(n(3)), index);
}

/// Runs the cluster a tick and a full delivery at a time until `id` holds the leader's
/// log, and checks that it took no more than two heartbeat intervals.
fn catches_up_within_two_heartbeats(c: &mut Cluster, id: NodeId) {
    let interval = c.node(n(1)).config().heartbeat_interval_ticks();
    let mut ticks = 0;
    while c.node(id).last_index() != c.node(n(1)).last_index() {
        assert!(
            ticks < 2 * interval,
            "{id} has not caught up after {ticks} ticks, heartbeats every {interval}"
        );
        c.tick_all();
        c.deliver_all();
        ticks += 1;
    }
}

/// A long election timeout, so that the leader's fallback for a silent pipeline (probing
/// again after a quiet election timeout) cannot be what finds the missing entries.
fn slow_stall(b: synod_consensus::ConfigBuilder) -> synod_consensus::ConfigBuilder {
    b.election_timeout_ticks(40..50)
}

/// The last appends of a burst are lost on the way to a follower: nothing follows them to
/// be rejected, so it is the answer to the next heartbeat, reporting a log that ends before
/// what was sent ahead of that heartbeat, that sends the leader back to probing.
#[test]
fn a_follower_that_missed_the_last_appends_is_caught_up_at_the_next_heartbeat() {
    let mut c = Cluster::new(3, slow_stall);
    c.elect(n(1));
    c.deliver_all();
    let before = c.node(n(2)).last_index();
    for step in 0..5 {
        c.propose(n(1), &format!("w{step}"));
    }
    let lost = c.in_flight();
    c.retain(|m| !(m.to == n(2) && matches!(m.body, MessageBody::Append { .. })));
    assert!(c.in_flight() < lost, "the appends to n2 are in flight");
    c.deliver_all();
    assert_eq!(c.node(n(2)).last_index(), before, "n2 missed the entries");
    assert_eq!(c.node(n(1)).commit_index(), c.node(n(1)).last_index());
    catches_up_within_two_heartbeats(&mut c, n(2));
    assert!(c.violation.is_none(), "{:?}", c.violation);
}

/// A follower restarts having lost entries it had appended but not yet made durable (and so
/// not acknowledged): its log is shorter than what the leader streamed to it, and the leader
/// finds out from the answer to its next heartbeat.
#[test]
fn a_restarted_follower_that_lost_unsynced_entries_is_caught_up_at_the_next_heartbeat() {
    let mut c = Cluster::new(3, slow_stall);
    c.elect(n(1));
    c.deliver_all();
    let durable = c.node(n(2)).last_index();
    c.set_auto_sync(false);
    for step in 0..5 {
        c.propose(n(1), &format!("w{step}"));
    }
    c.deliver_hop(); // the appends reach both followers
    assert!(c.node(n(2)).last_index() > durable);
    c.sync(n(1));
    c.sync(n(3));
    c.deliver_all(); // n3's acknowledgement commits the entries
    assert_eq!(c.node(n(1)).commit_index(), c.node(n(1)).last_index());
    c.crash(n(2));
    c.restart(n(2));
    c.set_auto_sync(true);
    assert_eq!(
        c.node(n(2)).last_index(),
        durable,
        "n2 lost what it had not synced"
    );
    catches_up_within_two_heartbeats(&mut c, n(2));
    assert_eq!(c.log(n(2)), c.log(n(1)));
    assert!(c.violation.is_none(), "{:?}", c.violation);
}
