//! The crate's safety checker ([`SafetyChecker`]) on real nodes, where its unit tests use
//! hand-made states: snapshots taken, sent and restarted from raise no false alarm, and
//! what the checker remembers of committed entries shrinks as the nodes compact.
//!
//! The checker's catches on real bugs are in `random.rs` (Figure 8's old-term commit, the
//! vote not made durable, and one bug for each of compaction, acknowledged syncs,
//! membership changes and leadership transfer) and `raft_paper.rs` (Figure 8 by hand).
//!
//! [`SafetyChecker`]: synod_consensus::invariants::SafetyChecker

use bytes::Bytes;
use synod_consensus::NodeId;

use crate::stepped::Cluster;

fn n(id: u64) -> NodeId {
    NodeId::new(id)
}

fn settle(c: &mut Cluster, ticks: usize) {
    for _ in 0..ticks {
        c.tick_all();
        c.deliver_all();
    }
}

/// Proposes `count` commands on the leader `n1` and delivers everything.
fn write(c: &mut Cluster, from: usize, count: usize) {
    for k in from..from + count {
        c.propose(n(1), &format!("v{k}"));
    }
    c.deliver_all();
}

/// Every node that is up compacts up to what it applied.
fn compact_all(c: &mut Cluster) {
    for id in c.ids() {
        if c.is_down(id) {
            continue;
        }
        c.call(id, |node| {
            let applied = node.applied_index();
            if applied > node.log().snapshot().meta.index {
                node.compact(applied, Bytes::from_static(b"state"))
                    .expect("applied and above the snapshot");
            }
        });
    }
}

#[test]
fn snapshots_raise_no_alarm_and_the_checker_forgets_what_every_node_compacted() {
    let mut c = Cluster::new(3, |b| b);
    c.elect(n(1));
    c.deliver_all();
    // n3 is down, its snapshot at 0, while 600 entries commit and the others compact every
    // 100: the checker keeps every committed index, since n3 may still need them.
    c.crash(n(3));
    for round in 0..6 {
        write(&mut c, round * 100, 100);
        compact_all(&mut c);
    }
    assert_eq!(c.violation, None);
    let kept_while_down = c.checker.retained_indexes();
    assert!(kept_while_down >= 600, "{kept_while_down}");
    // n3 comes back and installs n1's snapshot: now every node has compacted past 600.
    c.restart(n(3));
    settle(&mut c, 20);
    assert!(c.node(n(3)).log().snapshot().meta.index >= c.node(n(1)).log().snapshot().meta.index);
    // n2 restarts from its snapshot; more writes, compacted everywhere.
    c.crash(n(2));
    c.restart(n(2));
    settle(&mut c, 20);
    for round in 6..10 {
        write(&mut c, round * 100, 100);
        compact_all(&mut c);
    }
    settle(&mut c, 5);
    assert_eq!(c.violation, None);
    let kept = c.checker.retained_indexes();
    println!(
        "committed indexes the checker keeps: {kept_while_down} while a node was down with \
         nothing compacted, {kept} once all compact every 100 entries ({} checks)",
        c.checker.checks()
    );
    assert!(kept <= 120, "{kept}");
}
