//! Every decoder of bytes from a peer or a disk, fed random bytes and damaged valid
//! encodings (bit flips, truncations, splices, length fields set to 0 or huge:
//! `synod_sim::mutate`): `Message::decode`, `journal::replay` and, with the `wal` feature,
//! `WalLogStore::open`. Each answers with an error or a valid value, never panics, and
//! holds at most [`ALLOC_FACTOR`] times its input plus [`ALLOC_SLACK_BYTES`] allocated at
//! once, measured by the counting allocator of `alloc.rs`. The crate's cargo-fuzz targets
//! (`consensus/fuzz`) run the same decoders with coverage feedback.

use bytes::Bytes;
use proptest::prelude::*;
use synod_consensus::journal::{self, JournalWriter, StoreWrite};
use synod_consensus::{
    AppendResult, Entry, HardState, INDEX_MAX, LogIndex, Membership, Message, MessageBody, NodeId,
    Payload, ReadId, Snapshot, SnapshotMeta, Term,
};
use synod_sim::SimRng;
use synod_sim::mutate::mutate;

use crate::alloc::peak;

/// A decoded value may take this many times its encoding: an entry of a few bytes on the
/// wire is a 48-byte `Entry` in memory, in a vector that may have doubled.
const ALLOC_FACTOR: usize = 64;
/// What a decoder may hold whatever its input: serde caps the capacity it reserves for a
/// sequence whose length a message claims at 1 MiB (`size_hint::cautious`), and a message
/// nests two sequences (entries, then a membership's voters).
const ALLOC_SLACK_BYTES: usize = 2 << 20;

fn alloc_bound(input: usize) -> usize {
    input * ALLOC_FACTOR + ALLOC_SLACK_BYTES
}

fn membership(rng: &mut SimRng) -> Membership {
    let voters = (1..=rng.between(1, 5)).map(NodeId::new);
    let learners = (10..10 + rng.below(3)).map(NodeId::new);
    Membership::new(voters, learners).expect("valid")
}

fn entries(rng: &mut SimRng, first: u64) -> Vec<Entry> {
    (first..first + rng.below(6))
        .map(|i| Entry {
            term: Term::new(rng.between(1, 3)),
            index: LogIndex(i),
            payload: match rng.below(3) {
                0 => Payload::Noop,
                1 => Payload::Command(Bytes::from(vec![i as u8; rng.below(40) as usize])),
                _ => Payload::Membership(membership(rng)),
            },
        })
        .collect()
}

/// A valid message of a kind drawn from `rng`.
fn message(rng: &mut SimRng) -> Message {
    let index = LogIndex(rng.below(1000));
    let term = Term::new(rng.below(100));
    let body = match rng.below(8) {
        0 => MessageBody::Vote {
            last_index: index,
            last_term: term,
            transfer: rng.below(2) == 0,
        },
        1 => MessageBody::Append {
            prev_index: index,
            prev_term: term,
            entries: entries(rng, index.0 + 1),
            commit: index,
        },
        2 => MessageBody::AppendResponse {
            result: AppendResult::Rejected {
                rejected_prev: index,
                hint_index: index,
                hint_term: term,
            },
        },
        3 => MessageBody::Heartbeat {
            commit: index,
            round: rng.next_u64(),
        },
        4 => MessageBody::ReadIndexResponse {
            id: ReadId(rng.next_u64()),
            index: Some(index),
        },
        5 => MessageBody::Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                membership: membership(rng),
            },
            offset: rng.below(1 << 20),
            data: Bytes::from(vec![7; rng.below(100) as usize]),
            done: rng.below(2) == 0,
        },
        6 => MessageBody::SnapshotResponse {
            index,
            next_offset: rng.next_u64(),
            done: false,
        },
        _ => MessageBody::TimeoutNow,
    };
    Message {
        from: NodeId::new(rng.between(1, 5)),
        to: NodeId::new(rng.between(1, 5)),
        term: Term::new(rng.below(1 << 40)),
        body,
    }
}

/// A valid journal of a few writes, each synced before the next: appends, a truncation,
/// hard states, a compaction.
fn journal(rng: &mut SimRng) -> Vec<u8> {
    let first = entries(rng, 1);
    let last = first.len() as u64;
    let mut writes = vec![
        StoreWrite::Append(first),
        StoreWrite::HardState(HardState {
            term: Term::new(rng.between(1, 9)),
            vote: Some(NodeId::new(2)),
        }),
    ];
    if last > 1 {
        let cut = rng.between(1, last);
        writes.push(StoreWrite::TruncateAfter(LogIndex(cut)));
        writes.push(StoreWrite::Compact(Snapshot {
            meta: SnapshotMeta {
                index: LogIndex(cut),
                term: Term::new(1),
                membership: membership(rng),
            },
            data: Bytes::from(vec![1; rng.below(64) as usize]),
        }));
        writes.push(StoreWrite::Append(entries(rng, cut + 1)));
    }
    encoded(&writes)
}

/// `writes` as a journal, each synced before the next is written.
fn encoded(writes: &[StoreWrite]) -> Vec<u8> {
    let mut writer = JournalWriter::new(0);
    let mut out = Vec::new();
    for write in writes {
        writer.encode(std::slice::from_ref(write), &mut out);
        writer.synced(writer.end());
    }
    out
}

fn random_bytes(rng: &mut SimRng) -> Vec<u8> {
    (0..rng.below(200)).map(|_| rng.next_u64() as u8).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn raft_messages_decode_to_an_error_or_a_message_in_bounded_memory(seed in any::<u64>()) {
        let mut rng = SimRng::new(seed);
        let valid = message(&mut rng).encode();
        for bytes in [random_bytes(&mut rng), mutate(&valid, &mut rng), valid] {
            let (decoded, held) = peak(|| Message::decode(&bytes));
            prop_assert!(held <= alloc_bound(bytes.len()), "{held} bytes for {}", bytes.len());
            if let Ok(message) = decoded {
                prop_assert_eq!(Message::decode(&message.encode()), Ok(message));
            }
        }
    }

    #[test]
    fn journal_replay_stops_at_damage_in_bounded_memory(seed in any::<u64>()) {
        let mut rng = SimRng::new(seed);
        let membership = Membership::new([NodeId::new(1)], []).expect("one voter");
        let valid = journal(&mut rng);
        for bytes in [random_bytes(&mut rng), mutate(&valid, &mut rng), valid] {
            let (replayed, held) = peak(|| journal::replay(&bytes, &membership));
            prop_assert!(held <= alloc_bound(bytes.len()), "{held} bytes for {}", bytes.len());
            let (store, good) = match replayed {
                Ok(replayed) => replayed,
                Err(damage) => {
                    prop_assert!(damage.offset < damage.proof);
                    prop_assert!(damage.proof < bytes.len() as u64);
                    continue;
                }
            };
            prop_assert!(good <= bytes.len());
            let (again, good_again) =
                journal::replay(&bytes[..good], &membership).expect("the good part replays");
            prop_assert_eq!(good_again, good);
            prop_assert_eq!(again.last_index(), store.last_index());
            prop_assert_eq!(again.hard_state(), store.hard_state());
        }
    }
}

/// Records that pass their checksum but do not fit the log (a writer's bug, or damage made
/// before the checksum was computed) must end the replay as a bad record does. The first
/// three panicked inside `MemLogStore` when `journal::replay` checked only that an append's
/// first entry continues the log (the `journal` fuzz target found them); a term past
/// `TERM_MAX` replayed, and made `Node::new` panic on the store.
#[test]
fn journal_records_that_do_not_fit_the_log_end_the_replay() {
    let membership = Membership::new([NodeId::new(1)], []).expect("one voter");
    let entry = |index| Entry {
        term: Term::new(1),
        index: LogIndex(index),
        payload: Payload::Noop,
    };
    let snapshot = |index| Snapshot {
        meta: SnapshotMeta {
            index: LogIndex(index),
            term: Term::new(1),
            membership: membership.clone(),
        },
        data: Bytes::new(),
    };
    let cases = [
        // An append whose first entry continues the log but whose next ones skip ahead.
        vec![StoreWrite::Append(vec![entry(1), entry(3)])],
        // A truncation below the snapshot.
        vec![
            StoreWrite::Compact(snapshot(5)),
            StoreWrite::TruncateAfter(LogIndex(2)),
        ],
        // A snapshot past the highest index a node can reach (an append after it would
        // overflow the index).
        vec![StoreWrite::Install(snapshot(u64::MAX))],
        // A snapshot at the highest index, then an entry past it.
        vec![
            StoreWrite::Install(snapshot(INDEX_MAX.0)),
            StoreWrite::Append(vec![entry(INDEX_MAX.0 + 1)]),
        ],
        // A term no node can reach.
        vec![StoreWrite::HardState(HardState {
            term: Term::new(u64::MAX),
            vote: None,
        })],
    ];
    for writes in cases {
        // Nothing after the bad record was written once it was synced: a torn tail, so
        // the replay ends before it.
        let good = encoded(&writes[..writes.len() - 1]).len();
        let bytes = encoded(&writes);
        let (_, len) = journal::replay(&bytes, &membership).expect("a torn tail, not damage");
        assert_eq!(len, good, "{writes:?}");
    }
}

#[cfg(feature = "wal")]
mod wal_store {
    use super::*;
    use synod_consensus::{LogStore, RaftWrite, StoreWrite, WalLogStore, WalStoreOptions};
    use synod_wal::testing::FaultyStorage;

    /// The smallest segments the store accepts (a snapshot chunk must fit in one).
    const SEGMENT_BYTES: u64 = 320 << 10;

    fn options() -> WalStoreOptions {
        WalStoreOptions::default()
            .segment_bytes_max(SEGMENT_BYTES)
            .entry_bytes_max(4096)
    }

    fn voters() -> Membership {
        Membership::new([NodeId::new(1), NodeId::new(2)], []).expect("valid")
    }

    /// The files of a store's two logs after a few writes: (log, name, bytes).
    fn written(rng: &mut SimRng) -> Vec<(usize, String, Vec<u8>)> {
        let disks = [FaultyStorage::new(1), FaultyStorage::new(2)];
        let (mut store, _) =
            WalLogStore::open_with(disks[0].clone(), disks[1].clone(), voters(), options())
                .expect("opens");
        let mut write = RaftWrite::new();
        write.push(StoreWrite::HardState(HardState {
            term: Term::new(2),
            vote: Some(NodeId::new(1)),
        }));
        let first = entries(rng, 1);
        let last = first.len() as u64;
        write.push(StoreWrite::Append(first.clone()));
        if last > 1 && rng.below(2) == 0 {
            write.push(StoreWrite::Compact(Snapshot {
                meta: SnapshotMeta {
                    index: LogIndex(last - 1),
                    term: first[last as usize - 2].term,
                    membership: voters(),
                },
                data: Bytes::from(vec![3; rng.below(100) as usize]),
            }));
        }
        write.push(StoreWrite::Append(entries(rng, last + 1)));
        store.apply(&write);
        store.sync().expect("syncs");
        drop(store);
        let mut files = Vec::new();
        for (log, disk) in disks.iter().enumerate() {
            for name in disk.file_names() {
                let bytes = disk.contents(&name).expect("listed");
                files.push((log, name, bytes));
            }
        }
        files
    }

    /// `bytes` with damage in its written part (a segment is mostly zeros past it).
    fn damaged(bytes: &[u8], rng: &mut SimRng) -> Vec<u8> {
        let used = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        let mut out = mutate(&bytes[..used], rng);
        if out.len() >= used {
            out.resize(out.len().max(bytes.len()), 0);
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn the_wal_store_opens_damaged_logs_or_refuses_them(seed in any::<u64>()) {
            let mut rng = SimRng::new(seed);
            let mut files = written(&mut rng);
            let victim = rng.below(files.len() as u64) as usize;
            files[victim].2 = damaged(&files[victim].2, &mut rng);
            let disks = [FaultyStorage::new(3), FaultyStorage::new(4)];
            for (log, name, bytes) in &files {
                disks[*log].put_durable(name, bytes);
            }
            let input: usize = files.iter().map(|f| f.2.len()).sum();
            let open = || {
                WalLogStore::open_with(disks[0].clone(), disks[1].clone(), voters(), options())
            };
            let (opened, held) = peak(open);
            prop_assert!(held <= alloc_bound(input), "{held} bytes for {input}");
            if let Ok((_, store)) = opened {
                let mut all = Vec::new();
                store.entries(store.first_index(), store.last_index(), u64::MAX, &mut all);
                let expected = store.last_index().0 - store.snapshot().meta.index.0;
                prop_assert_eq!(all.len() as u64, expected);
            }
        }
    }
}
