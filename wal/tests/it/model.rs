//! Model-based test: the log against a `Vec` of records, through appends, syncs,
//! truncations, purges, crashes in every mode and reopens.

use proptest::prelude::*;
use synod_wal::testing::{CrashMode, FaultyStorage};
use synod_wal::{LogIndex, SyncPolicy, Wal};

use crate::util::{env_u64, small_config};

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<usize>),
    Sync,
    Truncate(u8),
    Purge(u8),
    Crash(u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => prop::collection::vec(0usize..700, 1..6).prop_map(Op::Append),
        3 => Just(Op::Sync),
        1 => any::<u8>().prop_map(Op::Truncate),
        1 => any::<u8>().prop_map(Op::Purge),
        1 => any::<u8>().prop_map(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

/// The model: the first index and the records from it on, and how many of them are durable.
struct Model {
    first: u64,
    records: Vec<Vec<u8>>,
    durable: u64,
}

impl Model {
    fn next(&self) -> u64 {
        self.first + self.records.len() as u64
    }
}

fn check_equal(wal: &Wal<FaultyStorage>, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(wal.first_index().get(), model.first);
    prop_assert_eq!(wal.next_index().get(), model.next());
    for (k, want) in model.records.iter().enumerate() {
        let got = wal
            .read(LogIndex::new(model.first + k as u64))
            .expect("readable");
        prop_assert_eq!(&got[..], &want[..]);
    }
    Ok(())
}

fn run(seed: u64, ops: Vec<Op>, policy: SyncPolicy) -> Result<(), TestCaseError> {
    let disk = FaultyStorage::new(seed);
    let config = small_config(policy);
    let (mut wal, _) = Wal::open(disk.clone(), config.clone()).expect("opens");
    let mut model = Model {
        first: 1,
        records: Vec::new(),
        durable: 0,
    };
    let mut counter = 0u64;
    for op in ops {
        match op {
            Op::Append(lens) => {
                let payloads: Vec<Vec<u8>> = lens
                    .iter()
                    .map(|&len| {
                        counter += 1;
                        let mut p = counter.to_le_bytes().to_vec();
                        p.resize(len.max(8), (counter % 251) as u8);
                        p
                    })
                    .collect();
                let last = wal.append_batch(payloads.clone()).expect("append");
                model.records.extend(payloads);
                prop_assert_eq!(last.get(), model.next() - 1);
                if policy != SyncPolicy::Manual {
                    model.durable = model.next() - 1;
                }
            }
            Op::Sync => {
                let d = wal.sync().expect("sync");
                model.durable = model.next() - 1;
                prop_assert_eq!(d.get(), model.durable);
            }
            Op::Truncate(x) => {
                let keep = model.first - 1 + u64::from(x) % (model.records.len() as u64 + 1);
                wal.truncate_after(LogIndex::new(keep)).expect("truncate");
                model.records.truncate((keep + 1 - model.first) as usize);
                model.durable = model.durable.min(keep);
            }
            Op::Purge(x) => {
                let mark = 1 + u64::from(x) % (model.next() + 3);
                let first = wal.purge_before(LogIndex::new(mark)).expect("purge").get();
                prop_assert!(first <= mark.max(model.first));
                if mark > model.next() || first > model.next() {
                    model.first = first;
                    model.records.clear();
                    model.durable = model.durable.max(first - 1);
                } else {
                    prop_assert!(first >= model.first);
                    model.records.drain(..(first - model.first) as usize);
                    model.first = first;
                }
            }
            Op::Crash(m) => {
                drop(wal);
                disk.crash(CrashMode::ALL[usize::from(m) % CrashMode::ALL.len()]);
                wal = Wal::open(disk.clone(), config.clone()).expect("recovers").0;
                // The recovered log is a prefix of the model that keeps every durable record.
                let next = wal.next_index().get();
                prop_assert_eq!(wal.first_index().get(), model.first);
                prop_assert!(
                    next > model.durable && next <= model.next(),
                    "next {} durable {} model next {}",
                    next,
                    model.durable,
                    model.next()
                );
                model.records.truncate((next - model.first) as usize);
                model.durable = next - 1;
            }
            Op::Reopen => {
                drop(wal);
                wal = Wal::open(disk.clone(), config.clone()).expect("reopens").0;
                if policy == SyncPolicy::Manual {
                    // Unsynced records were never written: a reopen without a crash keeps the rest.
                    model
                        .records
                        .truncate((model.durable + 1).saturating_sub(model.first) as usize);
                }
                model.durable = model.next() - 1;
            }
        }
        check_equal(&wal, &model)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: env_u64("SYNOD_WAL_PROPTEST_CASES", 256) as u32, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_a_vec_model_manual(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..60)) {
        run(seed, ops, SyncPolicy::Manual)?;
    }

    #[test]
    fn log_matches_a_vec_model_always(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..60)) {
        run(seed, ops, SyncPolicy::Always)?;
    }
}
