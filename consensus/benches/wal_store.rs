//! What a hard-state write costs the WAL-backed store's caller, and how long the worst one
//! stalls it: every write of the term and vote goes to the meta log and is synced, and
//! once the meta log holds enough records it is compacted, on the caller's thread.
//!
//! For each snapshot size, a store on real files (the Consistent Core's segment size) takes
//! a snapshot, then 2,100 hard-state writes, each synced as a node syncs before it votes;
//! the 1,024th and 2,048th compact the meta log. Printed: the median, 99th percentile and
//! worst write, the two compacting writes, and the slower of those over the median (the
//! stall a compaction adds; the baseline is the same store's ordinary write in the same
//! run).
//!
//! `SYNOD_BENCH_QUICK=1` runs two snapshot sizes instead of four.

use std::time::{Duration, Instant};

use bytes::Bytes;
use synod_consensus::{
    Entry, HardState, LogIndex, LogStore, Membership, NodeId, Payload, RaftWrite, Snapshot,
    SnapshotMeta, StoreWrite, Term, WalLogStore, WalStoreOptions,
};
use synod_wal::FileStorage;

const WRITES: u64 = 2_100;

fn store(dir: &std::path::Path) -> WalLogStore<FileStorage> {
    let options = WalStoreOptions::default()
        .segment_bytes_max(8 << 20)
        .entry_bytes_max(2 << 20);
    WalLogStore::open_with(
        FileStorage::new(dir.join("entries")).expect("entry log directory"),
        FileStorage::new(dir.join("meta")).expect("meta log directory"),
        Membership::new([NodeId::new(1)], []).expect("one voter"),
        options,
    )
    .expect("a new store opens")
    .0
}

/// Applies one write to `store`.
fn write(store: &mut WalLogStore<FileStorage>, op: StoreWrite) {
    store.apply(&RaftWrite::from(vec![op]));
}

/// The time of each of `WRITES` synced hard-state writes after a snapshot of `bytes`.
fn run(bytes: usize) -> Vec<Duration> {
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tempfile::tempdir_in(root).expect("bench directory");
    let mut store = store(dir.path());
    let entries: Vec<Entry> = (1..=10)
        .map(|i| Entry {
            index: LogIndex(i),
            term: Term::new(1),
            payload: Payload::Command(Bytes::from_static(b"command")),
        })
        .collect();
    write(&mut store, StoreWrite::Append(entries));
    store.sync().expect("synced");
    write(
        &mut store,
        StoreWrite::Compact(Snapshot {
            meta: SnapshotMeta {
                index: LogIndex(10),
                term: Term::new(1),
                membership: Membership::new([NodeId::new(1)], []).expect("one voter"),
            },
            data: Bytes::from(vec![0x5a; bytes]),
        }),
    );
    store.sync().expect("synced");
    (0..WRITES)
        .map(|i| {
            let start = Instant::now();
            let hard_state = HardState {
                term: Term::new(2 + i),
                vote: Some(NodeId::new(1)),
            };
            write(&mut store, StoreWrite::HardState(hard_state));
            store.sync().expect("synced");
            start.elapsed()
        })
        .collect()
}

fn main() {
    let quick = std::env::var("SYNOD_BENCH_QUICK").is_ok_and(|v| v == "1");
    let sizes: &[usize] = if quick {
        &[0, 16 << 20]
    } else {
        &[0, 1 << 20, 16 << 20, 64 << 20]
    };
    println!("wal_store: {WRITES} synced hard-state writes after a snapshot, real files");
    for &bytes in sizes {
        let times = run(bytes);
        // Every 1,024th hard-state write after the snapshot compacts the meta log.
        let compactions: Vec<Duration> = times.iter().skip(1023).step_by(1024).copied().collect();
        let compaction = compactions.iter().max().copied().unwrap_or_default();
        let mut sorted = times.clone();
        sorted.sort();
        let median = sorted[sorted.len() / 2];
        let mib = bytes >> 20;
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "snapshot {mib:>3} MiB: median {:>8.1} us, p99 {:>8.1} us, worst {:>9.1} us; \
             the writes that compact the meta log: {}",
            us(median),
            us(sorted[sorted.len() * 99 / 100]),
            us(sorted[sorted.len() - 1]),
            compactions
                .iter()
                .map(|&d| format!("{:.1} us", us(d)))
                .collect::<Vec<_>>()
                .join(", "),
        );
        println!(
            "ratio consensus.wal_store_meta_compaction_vs_median_{mib}mib {:.1}",
            compaction.as_secs_f64() / median.as_secs_f64()
        );
        println!(
            "value consensus.wal_store_meta_compaction_us_{mib}mib {:.0}",
            us(compaction)
        );
    }
}
