//! A node applies a committed entry before its own copy is durable (the copy is durable on
//! a majority: the Raft thesis, 10.2.1), so its state machine can be snapshotted at an
//! index its durable log does not reach, in a term its durable hard state has not reached
//! either. These tests crash a node right after such a snapshot and check that it does not
//! come back with a snapshot ahead of what else it kept in a way that breaks Raft: its term
//! below its snapshot's (so that it takes an older leader's appends as current, and
//! acknowledges entries it does not hold), an acknowledged write lost, or a panic.
//!
//! They run on the crate's journal and on `WalLogStore` (which syncs the hard state with
//! each snapshot), in every crash mode, and on a store that makes a snapshot durable as
//! soon as it is written but leaves the hard state written before it to the next sync (what
//! `MemLogStore`, the disk of the Consistent Core's own tests, did until it kept the two
//! together): there the restarted node answers an older leader's append as its follower,
//! in that leader's term.

use std::io;

use bytes::Bytes;
use synod_consensus::journal::{JournalWriter, replay};
use synod_consensus::{
    AppendResult, LogIndex, MemLogStore, Membership, Message, MessageBody, NodeId, Payload,
    RaftWrite, StoreWrite, Term,
};
use synod_sim::{CrashMode, Disk};
use synod_wal::storage::write_all_at;
use synod_wal::{Storage, StorageFile};

use crate::stepped::{Cluster, Journal, RaftDisk, ids};

fn n(id: u64) -> NodeId {
    NodeId::new(id)
}

/// The journal, except that a snapshot (taken or installed) is durable as soon as it is
/// written, in a file of its own, while the hard state written before it waits for the
/// journal's next sync: a store that breaks the order of the node's writes for snapshots.
#[derive(Default)]
struct SnapshotFirst(Journal);

/// Where [`SnapshotFirst`] keeps its snapshot: a journal of that one write.
const SNAPSHOT_FILE: &str = "snapshot-first";

impl RaftDisk for SnapshotFirst {
    fn recover(
        &mut self,
        id: NodeId,
        disk: &mut Disk,
        membership: &Membership,
    ) -> io::Result<MemLogStore> {
        let mut log = self.0.recover(id, disk, membership)?;
        let kept = disk.read(SNAPSHOT_FILE).unwrap_or_default();
        let (kept, _) = replay(&kept, membership).map_err(io::Error::other)?;
        let snapshot = kept.snapshot();
        if snapshot.meta.index > log.snapshot().meta.index {
            if log.term(snapshot.meta.index) == Some(snapshot.meta.term) {
                log.compact(snapshot.clone());
            } else {
                log.install_snapshot(snapshot.clone());
            }
            log.sync();
        }
        Ok(log)
    }

    fn write(&mut self, disk: &mut Disk, write: &RaftWrite) -> io::Result<()> {
        for op in write.ops() {
            if let StoreWrite::Compact(_) | StoreWrite::Install(_) = op {
                let mut bytes = Vec::new();
                JournalWriter::new(0).encode(std::slice::from_ref(op), &mut bytes);
                let storage = disk.storage();
                let file = storage.create(SNAPSHOT_FILE)?;
                write_all_at(&file, &bytes, 0)?;
                file.set_len(bytes.len() as u64)?;
                file.sync_data()?;
                storage.sync_dir()?;
            }
        }
        self.0.append(disk, write.ops())
    }
}

/// What the restarted node did wrong, if anything.
type Outcome = Result<(), String>;

/// Five nodes. Node 1 leads term t1 and, cut off, appends four entries only it holds (3 to
/// 6); its appends to node 3 are held back in the network. Node 2 is elected in t2 by nodes
/// 4 and 5 (node 3 does not hear of the election) and commits a no-op and three writes at
/// 3 to 6 on them. Node 3 then gets node 2's probe: it takes t2 and the entries, and applies
/// them up to the commit index the probe carries, with none of it synced (its durable log
/// ends at 2, its durable term is t1). It snapshots its state at 4, crashes in `mode` and
/// restarts. Checked: its term is at least the term of everything its log holds; node 1's
/// delayed appends of t1 are answered as stale (in a term at least that of the snapshot);
/// and once everything heals, every node applies node 2's writes and the safety checker saw
/// no violation.
fn snapshot_above_the_durable_log_then_crash<D: RaftDisk>(
    disk: impl FnMut(NodeId) -> D + 'static,
    mode: CrashMode,
) -> Outcome {
    let membership = Membership::new(ids(5), []).expect("five voters");
    let mut c = Cluster::with_disks(membership, &[], |b| b, disk);
    c.elect(n(1));
    c.propose(n(1), "a");
    c.deliver_all();
    let t1 = c.node(n(1)).term();

    c.isolate(n(1));
    for k in 1..=4 {
        c.propose(n(1), &format!("x{k}"));
    }
    let stale: Vec<Message> = c
        .take_all()
        .into_iter()
        .filter(|m| m.to == n(3) && matches!(m.body, MessageBody::Append { .. }))
        .collect();
    assert_eq!(stale.len(), 4, "node 1's appends of x1..x4 to node 3");

    c.isolate(n(3));
    c.elect(n(2));
    let t2 = c.node(n(2)).term();
    assert!(t2 > t1);
    for k in 1..=3 {
        c.propose(n(2), &format!("b{k}"));
    }
    c.deliver_all();
    let committed = c.node(n(2)).commit_index();
    assert_eq!(
        committed,
        LogIndex(6),
        "the no-op and b1..b3 on nodes 2, 4, 5"
    );

    // Node 3 hears from node 2 (and only from it) and syncs nothing.
    c.blocked.remove(&(n(2), n(3)));
    c.blocked.remove(&(n(3), n(2)));
    c.set_auto_sync(false);
    let heartbeat = c.node(n(2)).config().heartbeat_interval_ticks();
    for _ in 0..heartbeat {
        c.tick(n(2));
    }
    for m in c.take_all() {
        if m.to == n(3) {
            c.deliver(m);
        }
    }
    let node = c.node(n(3));
    assert_eq!(node.term(), t2);
    assert_eq!(node.applied_index(), committed, "applied before its sync");
    assert_eq!(node.durable_index(), LogIndex(2));
    c.call(n(3), |node| {
        node.compact(LogIndex(4), Bytes::from_static(b"b1"))
    })
    .expect("applied and above the snapshot");

    c.crash_in(n(3), mode);
    c.drop_all();
    c.restart(n(3));
    let node = c.node(n(3));
    let last = node.last_index();
    let last_term = node.log().term(last).unwrap_or(Term::ZERO);
    let mut wrong = Vec::new();
    if node.term() < last_term {
        wrong.push(format!(
            "restarted in {} with a log ending at {last} of {last_term}",
            node.term()
        ));
    }
    let snapshot_term = node.log().snapshot().meta.term;

    // Node 1's appends of t1, delayed in the network, reach it.
    c.set_auto_sync(true);
    c.blocked.remove(&(n(1), n(3)));
    c.blocked.remove(&(n(3), n(1)));
    for m in stale {
        c.deliver(m);
    }
    for m in c.take_all() {
        if m.from != n(3) || m.to != n(1) {
            continue;
        }
        if let MessageBody::AppendResponse {
            result: AppendResult::Accepted { match_index },
        } = m.body
            && m.term < snapshot_term
            && match_index > LogIndex(2)
        {
            wrong.push(format!(
                "answered node 1's append of {} as its follower (up to {match_index}) \
                 holding a snapshot of {snapshot_term}",
                m.term
            ));
        }
    }
    if !wrong.is_empty() {
        return Err(wrong.join("; "));
    }

    c.heal();
    for _ in 0..60 {
        c.tick_all();
        c.deliver_all();
    }
    if let Some(v) = &c.violation {
        return Err(format!("safety: {v}"));
    }
    for id in c.ids() {
        let applied = c.node(id).applied_index();
        if applied < committed {
            return Err(format!("{id} applied up to {applied} only"));
        }
    }
    let leader = c.leader().ok_or("no leader after healing")?;
    let log = c.log(leader);
    let at = |i: u64| log.iter().find(|e| e.index == LogIndex(i));
    for (i, want) in [(5, "b2"), (6, "b3")] {
        let entry = at(i).ok_or(format!("{leader} lacks {i}"))?;
        if entry.payload != Payload::Command(Bytes::from_static(want.as_bytes())) {
            return Err(format!("{leader} holds {entry:?} at {i}, not {want}"));
        }
    }
    Ok(())
}

#[test]
fn a_snapshot_above_the_durable_log_survives_a_crash_on_the_journal() {
    for mode in CrashMode::ALL {
        assert_eq!(
            snapshot_above_the_durable_log_then_crash(|_| Journal::default(), mode),
            Ok(()),
            "{mode:?}"
        );
    }
}

#[cfg(feature = "wal")]
#[test]
fn a_snapshot_above_the_durable_log_survives_a_crash_on_the_wal_store() {
    use crate::random::wal::WalDisk;
    use crate::random::{RandomDisk, StoreBug};
    for mode in CrashMode::ALL {
        assert_eq!(
            snapshot_above_the_durable_log_then_crash(
                |id| WalDisk::open(id, 7, StoreBug::None),
                mode
            ),
            Ok(()),
            "{mode:?}"
        );
    }
}

/// The check is shown to catch a store that makes a snapshot durable before the hard state
/// written before it.
#[test]
fn a_store_that_keeps_a_snapshot_without_its_hard_state_is_caught() {
    let outcome = snapshot_above_the_durable_log_then_crash(
        |_| SnapshotFirst::default(),
        CrashMode::DropUnsynced,
    );
    let why = outcome.expect_err("the broken store is caught");
    println!("caught: {why}");
}

/// `MemLogStore` as a disk makes a snapshot durable as soon as it is written: the hard
/// state written before it goes with it (a crash used to bring back the snapshot with the
/// hard state of the last sync, a term below the snapshot's).
#[test]
fn mem_log_store_makes_the_hard_state_durable_with_a_snapshot() {
    let membership = Membership::new(ids(3), []).expect("three voters");
    let entry = |index: u64, term: u64| synod_consensus::Entry {
        term: Term::new(term),
        index: LogIndex(index),
        payload: Payload::Noop,
    };
    let hard_state = |term: u64| synod_consensus::HardState {
        term: Term::new(term),
        vote: None,
    };
    for install in [false, true] {
        let mut disk = MemLogStore::new(membership.clone());
        disk.set_hard_state(hard_state(1));
        disk.append(&[entry(1, 1)]);
        disk.sync();
        disk.set_hard_state(hard_state(2));
        disk.append(&[entry(2, 2), entry(3, 2)]);
        let snapshot = synod_consensus::Snapshot {
            meta: synod_consensus::SnapshotMeta {
                index: LogIndex(2),
                term: Term::new(2),
                membership: membership.clone(),
            },
            data: Bytes::from_static(b"state at 2"),
        };
        if install {
            disk.install_snapshot(snapshot);
        } else {
            disk.compact(snapshot);
        }
        disk.crash();
        assert_eq!(
            disk.snapshot().meta.index,
            LogIndex(2),
            "install: {install}"
        );
        assert_eq!(disk.hard_state(), hard_state(2), "install: {install}");
        assert_eq!(disk.last_index(), LogIndex(2), "entry 3 was not synced");
    }
}
