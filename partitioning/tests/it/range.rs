//! Key-range partitions against a `BTreeMap` model: the table stays sorted, contiguous and
//! covering through splits, merges and moves; stale clients are redirected and never write
//! to a node that does not own the key; scans miss and repeat no key while ranges split
//! and merge between their pages.

use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;
use synod_node::NodeId;
use synod_partitioning::{
    Generation, KeyRange, RangeCache, RangeError, RangeId, RangeMiss, RangeTable, ScanRequest,
    SplitPolicy,
};

type Store = BTreeMap<Vec<u8>, u32>;

/// A cluster of nodes, each holding the data of the ranges it owns, and the table they
/// all share (the current one).
struct Cluster {
    table: RangeTable,
    stores: BTreeMap<NodeId, Store>,
}

impl Cluster {
    fn new(nodes: u64) -> Cluster {
        Cluster {
            table: RangeTable::new(NodeId::new(1)),
            stores: (1..=nodes)
                .map(|i| (NodeId::new(i), Store::new()))
                .collect(),
        }
    }

    /// Moves the keys of `range` from `from` to `to`.
    fn hand_over(&mut self, range: &KeyRange, from: NodeId, to: NodeId) {
        let keys: Vec<Vec<u8>> = self.stores[&from]
            .keys()
            .filter(|k| range.contains(k))
            .cloned()
            .collect();
        for k in keys {
            let v = self.stores.get_mut(&from).unwrap().remove(&k).unwrap();
            self.stores.get_mut(&to).unwrap().insert(k, v);
        }
    }

    /// One change to the ranges, chosen by `pick`.
    fn reshape(&mut self, op: &Reshape) {
        let ranges: Vec<KeyRange> = self.table.ranges().cloned().collect();
        match *op {
            Reshape::Split(ref at) => {
                let id = self.table.locate(at).id;
                match self.table.split(id, at) {
                    Ok(_) | Err(RangeError::SplitOutside(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            Reshape::Merge(i) => {
                let left = &ranges[i % ranges.len()];
                if let Some(end) = &left.end {
                    let right = self.table.locate(end).clone();
                    self.table.merge(left.id).unwrap();
                    self.hand_over(&right, right.owner, left.owner);
                } else {
                    assert_eq!(
                        self.table.merge(left.id),
                        Err(RangeError::NoNeighbour(left.id))
                    );
                }
            }
            Reshape::Move(i, to) => {
                let r = &ranges[i % ranges.len()];
                let to = NodeId::new(u64::from(to % 3) + 1);
                self.table.move_range(r.id, to).unwrap();
                self.hand_over(r, r.owner, to);
            }
        }
        check_layout(&self.table);
    }
}

#[derive(Clone, Debug)]
enum Reshape {
    Split(Vec<u8>),
    Merge(usize),
    Move(usize, u8),
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..4, 0..4)
}

fn reshape() -> impl Strategy<Value = Reshape> {
    prop_oneof![
        3 => key().prop_map(Reshape::Split),
        1 => any::<usize>().prop_map(Reshape::Merge),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, n)| Reshape::Move(i, n)),
    ]
}

#[derive(Clone, Debug)]
enum Op {
    Put(Vec<u8>, u32),
    Delete(Vec<u8>),
    Reshape(Reshape),
    /// A client takes a snapshot of the table, which goes stale from then on.
    Snapshot,
    /// A scan of `from..to` in pages of `page`, with these changes between pages.
    Scan(Vec<u8>, Option<Vec<u8>>, usize, Vec<Reshape>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (key(), any::<u32>()).prop_map(|(k, v)| Op::Put(k, v)),
        1 => key().prop_map(Op::Delete),
        2 => reshape().prop_map(Op::Reshape),
        1 => Just(Op::Snapshot),
        2 => (key(), prop::option::of(key()), 1usize..4, prop::collection::vec(reshape(), 0..6))
            .prop_map(|(f, t, p, r)| Op::Scan(f, t, p, r)),
    ]
}

/// Sorted, contiguous, covering, and exactly one range for every key.
fn check_layout(table: &RangeTable) {
    let ranges: Vec<&KeyRange> = table.ranges().collect();
    assert!(ranges[0].start.is_empty());
    for w in ranges.windows(2) {
        assert_eq!(w[0].end.as_ref(), Some(&w[1].start), "contiguous");
        assert!(w[0].start < w[1].start, "sorted, none empty");
    }
    assert_eq!(ranges.last().unwrap().end, None);
    for k in [vec![], vec![0], vec![1, 2], vec![3, 3, 3, 3], vec![255]] {
        let holding: Vec<_> = ranges.iter().filter(|r| r.contains(&k)).collect();
        assert_eq!(holding.len(), 1, "{k:?} is in exactly one range");
        assert_eq!(table.locate(&k).id, holding[0].id);
    }
}

/// Sends a request for `key` the way a client does: to the owner its cache names, with the
/// range and generation it names, learning from redirects. Returns the node that accepted
/// and how many redirects it took.
fn route(cluster: &Cluster, cache: &mut RangeCache, key: &[u8]) -> (NodeId, usize) {
    for redirects in 0..3 {
        let Some(r) = cache.locate(key).cloned() else {
            *cache = RangeCache::from_table(&cluster.table);
            continue;
        };
        match cluster.table.check(key, r.id, r.generation) {
            Ok(current) => {
                assert_eq!(current.owner, r.owner, "a current range names its owner");
                return (r.owner, redirects);
            }
            Err(RangeMiss::Redirect(redirect)) => {
                assert!(
                    cache.learn(redirect.current),
                    "the current range is learned"
                );
            }
            Err(miss) => panic!("the current table is never behind: {miss}"),
        }
    }
    panic!("a redirect leads to the owner");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn ranges_against_a_btreemap(ops in prop::collection::vec(op(), 1..60)) {
        let mut cluster = Cluster::new(3);
        let mut model: Store = BTreeMap::new();
        let mut cache = RangeCache::from_table(&cluster.table);
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    let (to, _) = route(&cluster, &mut cache, &k);
                    prop_assert_eq!(cluster.table.locate(&k).owner, to, "the write lands on the owner");
                    cluster.stores.get_mut(&to).unwrap().insert(k.clone(), v);
                    model.insert(k, v);
                }
                Op::Delete(k) => {
                    let (to, _) = route(&cluster, &mut cache, &k);
                    cluster.stores.get_mut(&to).unwrap().remove(&k);
                    model.remove(&k);
                }
                Op::Reshape(r) => cluster.reshape(&r),
                Op::Snapshot => cache = RangeCache::from_table(&cluster.table),
                Op::Scan(from, end, page, mut changes) => {
                    let mut got = Vec::new();
                    let mut next = Some(from.clone());
                    let mut pages = 0;
                    while let Some(at) = next {
                        pages += 1;
                        prop_assert!(pages < 200, "the scan ends");
                        if let Some(c) = changes.pop() {
                            cluster.reshape(&c); // between two pages
                        }
                        let (owner, _) = route(&cluster, &mut cache, &at);
                        let r = cache.locate(&at).unwrap().clone();
                        let request = ScanRequest { range: r.id, generation: r.generation, from: at, end: end.clone() };
                        let result = cluster.table.scan(&cluster.stores[&owner], &request, page);
                        let result = result.expect("routed to the current range");
                        got.extend(result.entries);
                        next = result.next;
                    }
                    let want: Vec<(Vec<u8>, u32)> = model
                        .iter()
                        .filter(|(k, _)| **k >= from && end.as_ref().is_none_or(|e| *k < e))
                        .map(|(k, v)| (k.clone(), *v))
                        .collect();
                    prop_assert_eq!(got, want, "no key missed or repeated");
                }
            }
            // Every key is where its range's owner is.
            for (k, v) in &model {
                let owner = cluster.table.locate(k).owner;
                prop_assert_eq!(cluster.stores[&owner].get(k), Some(v));
            }
        }
    }
}

#[test]
fn a_stale_generation_is_redirected_with_the_current_range() {
    let mut table = RangeTable::new(NodeId::new(1));
    let first = table.locate(b"m").clone();
    let right = table.split(first.id, b"k").unwrap();
    let redirect = |r| match r {
        Err(RangeMiss::Redirect(r)) => r,
        other => panic!("not a redirect: {other:?}"),
    };
    let redirect = redirect(table.check(b"m", first.id, first.generation));
    assert_eq!(redirect.current.id, right);
    assert_eq!(redirect.current.start, b"k");
    assert_eq!(redirect.current.generation, Generation(2));
    // The left half kept its id, at a new generation.
    let redirect = match table.check(b"a", first.id, first.generation) {
        Err(RangeMiss::Redirect(r)) => r,
        other => panic!("not a redirect: {other:?}"),
    };
    assert_eq!(redirect.current.id, first.id);
    assert!(table.check(b"a", first.id, Generation(2)).is_ok());
    // A merge bumps the generation above both.
    table.merge(first.id).unwrap();
    assert_eq!(table.get(first.id).unwrap().generation, Generation(3));
    assert_eq!(table.get(right), None);
    assert_eq!(
        table.split(RangeId(1), b""),
        Err(RangeError::SplitOutside(RangeId(1)))
    );
}

#[test]
fn split_policy_splits_by_size_or_load_at_the_middle() {
    let policy = SplitPolicy {
        split_bytes_max: 512 << 20,
        split_load_per_s_max: 2_500,
        merge_bytes_below: 128 << 20,
    };
    assert!(policy.should_split(600 << 20, 0));
    assert!(policy.should_split(1, 3_000));
    assert!(!policy.should_split(100 << 20, 100));
    assert!(policy.should_merge((10 << 20, 20 << 20), (10, 20)));
    assert!(!policy.should_merge((100 << 20, 100 << 20), (10, 20)));
    assert!(!policy.should_merge((1, 1), (1_000, 1_000)));
    let keys: Vec<(Vec<u8>, u64)> = (0u8..10).map(|i| (vec![i], 10)).collect();
    let at = SplitPolicy::split_key(keys.iter().map(|(k, w)| (k.as_slice(), *w)));
    assert_eq!(at, Some(vec![5]), "half the weight on each side");
    // A hot key: split right after it, so the load is divided.
    let hot = [(&b"a"[..], 1_000u64), (&b"b"[..], 1), (&b"c"[..], 1)];
    assert_eq!(
        SplitPolicy::split_key(hot.iter().copied()),
        Some(b"b".to_vec())
    );
    assert_eq!(
        SplitPolicy::split_key([(&b"a"[..], 5u64)].iter().copied()),
        None
    );
}

/// A range table that arrives from another node is checked whole: a damaged one is
/// refused, never looked up into a panic.
#[test]
fn a_damaged_range_table_from_the_wire_is_refused() {
    let mut table = RangeTable::new(NodeId::new(1));
    let id = table.locate(b"m").id;
    table.split(id, b"g").unwrap();
    table.split(id, b"c").unwrap();
    let bytes = postcard::to_stdvec(&table).unwrap();
    assert_eq!(postcard::from_bytes::<RangeTable>(&bytes).unwrap(), table);
    let mut refused = 0;
    for at in 0..bytes.len() {
        for flip in [1u8, 0x80, 0xff] {
            let mut damaged = bytes.clone();
            damaged[at] ^= flip;
            match postcard::from_bytes::<RangeTable>(&damaged) {
                Ok(t) => {
                    for k in [&b""[..], b"a", b"d", b"h", b"zzz"] {
                        assert!(t.locate(k).contains(k));
                    }
                }
                Err(_) => refused += 1,
            }
        }
    }
    assert!(refused > 0);
}

/// A redirect that arrives late (or from a node that is behind) names an older version of
/// ranges the cache already knows newer: the cache keeps the newer ones.
#[test]
fn a_delayed_redirect_never_replaces_a_newer_cached_range() {
    let mut table = RangeTable::new(NodeId::new(1));
    let first = table.locate(b"m").clone();
    let old = table.clone();
    table.split(first.id, b"k").unwrap();
    let mut cache = RangeCache::from_table(&table);
    let newer = cache.locate(b"m").unwrap().clone();
    // The redirect that names the range before the split arrives now.
    cache.learn(old.locate(b"m").clone());
    assert_eq!(cache.locate(b"m"), Some(&newer), "the newer range is kept");
    assert_eq!(
        cache.locate(b"a"),
        table.get(first.id),
        "and so is its left half"
    );
    // After a merge the merged range is newer than both halves and replaces them.
    table.merge(first.id).unwrap();
    cache.learn(table.locate(b"m").clone());
    assert_eq!(cache.locate(b"a"), table.get(first.id));
    assert_eq!(cache.locate(b"z"), table.get(first.id));
}

/// A node that is behind (the request names a newer generation than its table has for the
/// key) says so, and does not redirect the client to its older range.
#[test]
fn a_node_that_is_behind_says_so_and_teaches_nothing() {
    let mut ahead = RangeTable::new(NodeId::new(1));
    let first = ahead.locate(b"m").clone();
    let behind = ahead.clone();
    let right = ahead.split(first.id, b"k").unwrap();
    ahead.move_range(right, NodeId::new(2)).unwrap();
    let cache = RangeCache::from_table(&ahead);
    for key in [&b"a"[..], b"m"] {
        let mine = cache.locate(key).unwrap();
        assert_eq!(
            behind.check(key, mine.id, mine.generation),
            Err(RangeMiss::Behind {
                asked: mine.generation,
                have: first.generation
            }),
            "{key:?}"
        );
        assert!(ahead.check(key, mine.id, mine.generation).is_ok());
    }
    // A node that is ahead still redirects a client that is behind.
    let stale = RangeCache::from_table(&behind);
    let old = stale.locate(b"m").unwrap();
    assert!(matches!(
        ahead.check(b"m", old.id, old.generation),
        Err(RangeMiss::Redirect(r)) if r.current.id == right
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Redirects from nodes at every point of a table's history, delivered in any order:
    /// the cache never replaces a range by an older version of it (for every key, the
    /// cached generation only grows while the key stays cached), a range from the current
    /// table is always learned, and the cache never holds two ranges that overlap.
    #[test]
    fn a_cache_never_goes_back_to_an_older_range(
        changes in prop::collection::vec(reshape(), 1..20),
        deliveries in prop::collection::vec((any::<usize>(), key()), 1..40),
    ) {
        let mut cluster = Cluster::new(3);
        let mut history = vec![cluster.table.clone()];
        for c in &changes {
            cluster.reshape(c);
            history.push(cluster.table.clone());
        }
        let probes: Vec<Vec<u8>> = (0u8..4)
            .flat_map(|a| (0u8..4).map(move |b| vec![a, b]))
            .chain([vec![], vec![3, 3, 3, 3]])
            .collect();
        let mut cache = RangeCache::default();
        for (at, key) in deliveries {
            // The node at this point of the history answers with its range for the key.
            let table = &history[at % history.len()];
            let newest = at % history.len() == history.len() - 1;
            let before: Vec<Option<Generation>> =
                probes.iter().map(|p| cache.locate(p).map(|r| r.generation)).collect();
            let range = table.locate(&key).clone();
            let learned = cache.learn(range.clone());
            if newest {
                prop_assert!(learned, "a current range is always learned");
            }
            if learned {
                prop_assert_eq!(cache.locate(&key), Some(&range));
            }
            for (p, was) in probes.iter().zip(before) {
                let now = cache.locate(p).map(|r| r.generation);
                if let (Some(was), Some(now)) = (was, now) {
                    prop_assert!(now >= was, "{:?}: generation {:?} after {:?}", p, now, was);
                }
                // At most one cached range holds each key.
                let holding: HashSet<&KeyRange> = history.iter().flat_map(RangeTable::ranges)
                    .filter(|r| r.contains(p) && cache.locate(&r.start) == Some(*r))
                    .collect();
                let holding = holding.len();
                prop_assert!(holding <= 1, "{:?} is in {} cached ranges", p, holding);
            }
        }
    }
}
