//! The WAL-backed log store (feature `wal`): a node's log, hard state and snapshot survive
//! a restart from real files, a snapshot of any size included; a truncated suffix stays
//! truncated; a command longer than the limit is refused before it reaches the log.

use bytes::Bytes;
use synod_consensus::{
    Config, HardState, LogIndex, LogStore, Membership, Node, NodeId, ProposeError, Role,
    WalLogStore, WalStoreOptions,
};
use synod_wal::FileStorage;

fn open(dir: &std::path::Path) -> WalLogStore<FileStorage> {
    let membership = Membership::new([NodeId::new(1)], []).unwrap();
    WalLogStore::open(
        FileStorage::new(dir.join("entries")).unwrap(),
        FileStorage::new(dir.join("meta")).unwrap(),
        membership,
    )
    .unwrap()
}

fn drive(node: &mut Node<WalLogStore<FileStorage>>) -> Vec<LogIndex> {
    let mut applied = Vec::new();
    while node.has_ready() {
        let ready = node.ready();
        if let Some(token) = ready.persist {
            node.store_mut().sync().unwrap();
            node.persisted(token);
        }
        applied.extend(ready.committed.iter().map(|e| e.index));
    }
    applied
}

#[test]
fn a_single_node_recovers_its_log_hard_state_and_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::builder(NodeId::new(1)).build().unwrap();
    let mut node = Node::new(config.clone(), open(dir.path()));
    for _ in 0..40 {
        node.tick();
        drive(&mut node);
    }
    assert_eq!(node.role(), Role::Leader);
    for i in 0..20 {
        node.propose(Bytes::from(format!("v{i}"))).unwrap();
    }
    drive(&mut node);
    let (term, last) = (node.term(), node.last_index());
    assert_eq!(node.commit_index(), last);
    node.compact(LogIndex(10), Bytes::from_static(b"state at 10"))
        .unwrap();
    drop(node);

    let store = open(dir.path());
    assert_eq!(
        store.hard_state(),
        HardState {
            term,
            vote: Some(NodeId::new(1))
        }
    );
    assert_eq!(store.last_index(), last);
    assert_eq!(store.snapshot().meta.index, LogIndex(10));
    assert_eq!(store.snapshot().data, Bytes::from_static(b"state at 10"));
    assert_eq!(store.term(last), Some(term));
    let mut node = Node::new(config, store);
    let ready = node.ready();
    assert_eq!(ready.snapshot.map(|s| s.meta.index), Some(LogIndex(10)));
}

#[test]
fn a_truncated_suffix_stays_truncated_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let entry = |i: u64, t: u64| synod_consensus::Entry {
        term: synod_consensus::Term::new(t),
        index: LogIndex(i),
        payload: synod_consensus::Payload::Command(Bytes::from(format!("{i}/{t}"))),
    };
    store.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
    store.sync().unwrap();
    store.truncate_after(LogIndex(1));
    store.append(&[entry(2, 2)]);
    store.sync().unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.last_index(), LogIndex(2));
    assert_eq!(store.term(LogIndex(2)), Some(synod_consensus::Term::new(2)));
}

#[test]
fn a_snapshot_many_times_the_record_and_segment_size_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalStoreOptions::default()
        .segment_bytes_max(1 << 20)
        .entry_bytes_max(64 << 10);
    let open_small = || {
        WalLogStore::open_with(
            FileStorage::new(dir.path().join("entries")).unwrap(),
            FileStorage::new(dir.path().join("meta")).unwrap(),
            Membership::new([NodeId::new(1)], []).unwrap(),
            options,
        )
        .unwrap()
    };
    let config = Config::builder(NodeId::new(1))
        .entry_bytes_max(64 << 10)
        .build()
        .unwrap();
    let mut node = Node::new(config.clone(), open_small());
    for _ in 0..40 {
        node.tick();
        drive(&mut node);
    }
    assert_eq!(node.role(), Role::Leader);
    // A command at the limit is stored; one byte more is refused before the log.
    node.propose(Bytes::from(vec![7u8; 64 << 10])).unwrap();
    assert_eq!(
        node.propose(Bytes::from(vec![7u8; (64 << 10) + 1])),
        Err(ProposeError::TooLarge {
            bytes: (64 << 10) + 1,
            max: 64 << 10
        })
    );
    for i in 0..20 {
        node.propose(Bytes::from(format!("v{i}"))).unwrap();
    }
    drive(&mut node);
    // 5 MiB of state: five segments, twenty snapshot chunks.
    let state: Vec<u8> = (0..5u32 << 20).map(|i| (i % 251) as u8).collect();
    node.compact(LogIndex(10), Bytes::from(state.clone()))
        .unwrap();
    drive(&mut node);
    let last = node.last_index();
    drop(node);

    let store = open_small();
    assert_eq!(store.snapshot().meta.index, LogIndex(10));
    assert!(
        store.snapshot().data == state,
        "the snapshot came back different"
    );
    assert_eq!(store.last_index(), last);
    // A second snapshot replaces the first, and hard-state writes after it do not rewrite it.
    let mut node = Node::new(config, store);
    for _ in 0..40 {
        node.tick();
        drive(&mut node);
    }
    assert!(node.applied_index() >= LogIndex(20));
    let smaller = Bytes::from(vec![1u8; 300 << 10]);
    node.compact(LogIndex(20), smaller.clone()).unwrap();
    drive(&mut node);
    drop(node);
    let store = open_small();
    assert_eq!(store.snapshot().meta.index, LogIndex(20));
    assert_eq!(store.snapshot().data, smaller);
}
