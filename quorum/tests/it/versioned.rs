//! The versioned store against a model: a plain list of every write, searched by brute force.

use proptest::prelude::*;
use synod_quorum::{VersionedError, VersionedStore};

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8, u16),
    Delete(u8, u8),
    Gc(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..6, 0u8..30, any::<u16>()).prop_map(|(k, v, x)| Op::Put(k, v, x)),
        2 => (0u8..6, 0u8..30).prop_map(|(k, v)| Op::Delete(k, v)),
        1 => (0u8..30).prop_map(Op::Gc),
    ]
}

/// Every accepted write, and the mark.
#[derive(Default)]
struct Model {
    writes: Vec<(u8, u8, Option<u16>)>,
    mark: Option<u8>,
}

impl Model {
    fn as_of(&self, key: u8, version: u8) -> Option<(u8, u16)> {
        let newest = self
            .writes
            .iter()
            .filter(|(k, v, _)| *k == key && *v <= version)
            .max_by_key(|(_, v, _)| *v)?;
        Some((newest.1, newest.2?))
    }

    fn latest(&self, key: u8) -> Option<(u8, u16)> {
        self.as_of(key, u8::MAX)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn store_matches_model(ops in prop::collection::vec(op(), 1..80)) {
        let mut store: VersionedStore<u8, u16, u8> = VersionedStore::new();
        let mut model = Model::default();
        for op in ops {
            let write = match op {
                Op::Put(k, v, x) => Some((k, v, Some(x))),
                Op::Delete(k, v) => Some((k, v, None)),
                Op::Gc(_) => None,
            };
            let apply = |store: &mut VersionedStore<u8, u16, u8>, k, v, value: Option<u16>| match value {
                Some(x) => store.put(k, v, x),
                None => store.delete(k, v),
            };
            match (write, op) {
                (Some((k, v, value)), _) => {
                    let got = apply(&mut store, k, v, value);
                    if model.mark.is_some_and(|m| v < m) {
                        let below = matches!(got, Err(VersionedError::BelowGcMark { .. }));
                        prop_assert!(below);
                    } else if model.writes.iter().any(|w| w.0 == k && w.1 == v) {
                        prop_assert_eq!(got, Err(VersionedError::VersionExists { version: v }));
                    } else {
                        prop_assert_eq!(got, Ok(()));
                        model.writes.push((k, v, value));
                    }
                }
                (None, Op::Gc(mark)) => {
                    store.collect_garbage(mark);
                    if model.mark.is_none_or(|m| mark > m) {
                        model.mark = Some(mark);
                    }
                }
                (None, _) => unreachable!("only Gc has no write"),
            }
            // Every read the store still answers agrees with the model.
            for key in 0..6u8 {
                prop_assert_eq!(
                    store.latest(&key).map(|(v, x)| (*v, *x)),
                    model.latest(key)
                );
                for version in 0..32u8 {
                    let got = store.as_of(&key, &version);
                    if model.mark.is_some_and(|m| version < m) {
                        let refused = matches!(got, Err(VersionedError::BelowGcMark { .. }));
                        prop_assert!(refused);
                    } else {
                        prop_assert_eq!(got.unwrap().map(|(v, x)| (*v, *x)), model.as_of(key, version));
                    }
                }
            }
            // Scans at a version agree with point reads, in key order.
            let at = model.mark.unwrap_or(0).max(12);
            let scanned: Vec<(u8, u8, u16)> =
                store.scan_as_of(1..5, &at).unwrap().map(|(k, v, x)| (*k, *v, *x)).collect();
            let expected: Vec<(u8, u8, u16)> = (1..5u8)
                .filter_map(|k| model.as_of(k, at).map(|(v, x)| (k, v, x)))
                .collect();
            prop_assert_eq!(scanned, expected);
            let latest: Vec<(u8, u8, u16)> =
                store.scan_latest(..).map(|(k, v, x)| (*k, *v, *x)).collect();
            let expected: Vec<(u8, u8, u16)> = (0..6u8)
                .filter_map(|k| model.latest(k).map(|(v, x)| (k, v, x)))
                .collect();
            prop_assert_eq!(latest, expected);
        }
    }
}

#[test]
fn garbage_collection_keeps_what_the_mark_sees_and_drops_dead_keys() {
    let mut store = VersionedStore::new();
    for v in 1..=5u32 {
        store.put("live", v, v * 10).unwrap();
    }
    store.put("dead", 1, 1).unwrap();
    store.delete("dead", 2).unwrap();
    assert_eq!(store.version_count(), 7);
    let stats = store.collect_garbage(3);
    // live: versions 1 and 2 go, 3 stays (visible as of 3); dead: both go.
    assert_eq!(stats.versions_removed, 4);
    assert_eq!(stats.keys_removed, 1);
    assert_eq!(store.version_count(), 3);
    assert_eq!(store.key_count(), 1);
    assert_eq!(store.as_of("live", &3).unwrap(), Some((&3, &30)));
    assert_eq!(store.history("live").count(), 3);
    // The mark never goes back.
    assert_eq!(store.collect_garbage(1).versions_removed, 0);
    assert_eq!(store.gc_mark(), Some(&3));
    let err = store.as_of("live", &2).unwrap_err();
    assert!(
        err.to_string()
            .contains("below the garbage-collection mark"),
        "{err}"
    );
}
