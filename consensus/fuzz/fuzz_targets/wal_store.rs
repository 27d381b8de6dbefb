//! Fuzz target: `WalLogStore::open` on arbitrary contents of its two logs, in synod-wal's
//! in-memory `FaultyStorage`.
//!
//! The first byte chooses how the rest becomes the logs:
//!
//! - records (bit 0 clear): a sequence of (control byte, body); bit 7 of the control byte
//!   says which log the body is appended to (the entry log or the meta log) as a valid
//!   synod-wal record, bit 6 puts the meta format's version byte in front, and the low six
//!   bits are the body's length. The store's own decoding of entries, hard states and
//!   snapshot chunks then meets every shape of record;
//! - raw (bit 0 set): the bytes, split where the second byte says, are the first segment
//!   file of the entry log and of the meta log, so that the store opens whatever the
//!   write-ahead log recovers.
//!
//! Checks: nothing panics; a store that opens has every entry from its first index to its
//! last, and opens again to the same hard state, snapshot and entries. Run from
//! `consensus/fuzz` with `cargo fuzz run wal_store`.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use synod_consensus::{
    Entry, HardState, LogIndex, MemLogStore, Membership, NodeId, Snapshot, WalLogStore,
    WalStoreOptions,
};
use synod_wal::format::segment_name;
use synod_wal::testing::FaultyStorage;
use synod_wal::{LogIndex as WalIndex, SyncPolicy, Wal, WalConfig};

const SEGMENT_BYTES: u64 = 320 << 10;
const ENTRY_BYTES_MAX: u64 = 4096;

fn options() -> WalStoreOptions {
    WalStoreOptions::default()
        .segment_bytes_max(SEGMENT_BYTES)
        .entry_bytes_max(ENTRY_BYTES_MAX)
}

/// A log in which to plant records: the store's own settings would accept every one.
fn log(disk: &FaultyStorage) -> Wal<FaultyStorage> {
    let config = WalConfig::builder()
        .sync_policy(SyncPolicy::Manual)
        .first_index(WalIndex::new(1))
        .segment_bytes_max(SEGMENT_BYTES)
        .record_bytes_max(64 << 10)
        .build()
        .expect("valid config");
    Wal::open(disk.clone(), config)
        .expect("an empty log opens")
        .0
}

fn records(mut bytes: &[u8], entries: &FaultyStorage, meta: &FaultyStorage) {
    let (entry_log, meta_log) = (log(entries), log(meta));
    while let Some((&control, rest)) = bytes.split_first() {
        let (body, rest) = rest.split_at(usize::from(control & 0x3f).min(rest.len()));
        let mut record = Vec::with_capacity(body.len() + 1);
        if control & 0x40 != 0 {
            record.push(1);
        }
        record.extend_from_slice(body);
        let log = if control & 0x80 == 0 {
            &entry_log
        } else {
            &meta_log
        };
        log.submit(Bytes::from(record)).expect("appends");
        bytes = rest;
    }
    entry_log.sync().expect("syncs");
    meta_log.sync().expect("syncs");
}

/// What an opened store recovered, to compare two opens.
fn contents(store: &MemLogStore) -> (HardState, Snapshot, Vec<Entry>) {
    let mut entries = Vec::new();
    store.entries(
        store.first_index(),
        store.last_index(),
        u64::MAX,
        &mut entries,
    );
    let expected = store.last_index().0 - store.snapshot().meta.index.0;
    assert_eq!(
        entries.len() as u64,
        expected,
        "every entry from first to last"
    );
    for (k, entry) in entries.iter().enumerate() {
        assert_eq!(entry.index, LogIndex(store.first_index().0 + k as u64));
    }
    (store.hard_state(), store.snapshot().clone(), entries)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let (entries, meta) = (FaultyStorage::new(1), FaultyStorage::new(2));
    if control & 1 == 0 {
        records(rest, &entries, &meta);
    } else {
        let Some((&split, rest)) = rest.split_first() else {
            return;
        };
        let (a, b) = rest.split_at(usize::from(split).min(rest.len()));
        let name = segment_name(WalIndex::new(1));
        entries.put_durable(&name, a);
        meta.put_durable(&name, b);
    }
    let voters = [NodeId::new(1), NodeId::new(2), NodeId::new(3)];
    let membership = Membership::new(voters, []).expect("three voters");
    let open =
        || WalLogStore::open_with(entries.clone(), meta.clone(), membership.clone(), options());
    let first = match open() {
        Ok((_, log)) => contents(&log),
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let again = open().expect("a store that opened opens again");
    assert_eq!(contents(&again.1), first);
});
