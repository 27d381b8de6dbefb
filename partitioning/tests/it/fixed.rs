//! Fixed partitions: the pinned hash, the table against a brute-force search for the
//! least movement, balance and movement at scale, and routing with stale tables.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use synod_node::NodeId;
use synod_partitioning::{
    Lookup, NodeSpec, PartitionId, PartitionTable, TableVersion, Zone, key_hash, partition_of,
};

fn n(i: u64) -> NodeId {
    NodeId::new(i)
}

fn plain(ids: impl IntoIterator<Item = u64>) -> Vec<(NodeId, NodeSpec)> {
    ids.into_iter().map(|i| (n(i), NodeSpec::new())).collect()
}

/// The hash and the partition function never change: these vectors were computed by an
/// independent implementation of the documented definition.
#[test]
fn the_key_hash_is_pinned() {
    let all: Vec<u8> = (0..=255).collect();
    let vectors: [(&[u8], u64, u32, u32, u32); 5] = [
        (b"", 0xefd0_1f60_ba99_2926, 15348, 253, 959),
        (b"a", 0x82a2_a958_a9be_ce5b, 8360, 138, 522),
        (b"user:42", 0x9988_17be_e671_8248, 9826, 162, 614),
        (b"synod", 0x5583_119a_8f98_99b2, 5472, 90, 342),
        (&all, 0x2067_db6d_bd4e_fa06, 2073, 34, 129),
    ];
    for (key, hash, p16384, p271, p1024) in vectors {
        assert_eq!(key_hash(key), hash, "{key:?}");
        assert_eq!(partition_of(key, 16_384), PartitionId(p16384));
        assert_eq!(partition_of(key, 271), PartitionId(p271));
        assert_eq!(partition_of(key, 1_024), PartitionId(p1024));
    }
}

#[test]
fn keys_spread_evenly_over_partitions() {
    let partitions = 271;
    let mut counts = vec![0u32; partitions as usize];
    let keys = 271_000;
    for i in 0..keys {
        counts[partition_of(format!("key-{i}").as_bytes(), partitions).0 as usize] += 1;
    }
    let max = *counts.iter().max().unwrap();
    let min = *counts.iter().min().unwrap();
    // 1,000 keys a partition on average; a binomial spread of ~32 either way.
    assert!(max < 1_150 && min > 850, "min {min} max {max}");
}

/// Each node's exact share of `total` by weight, capped at `cap`, as (floor, ceil); written
/// again here, independently of the table's code, for the brute-force check.
fn exact_shares(
    total: usize,
    weights: &BTreeMap<NodeId, u32>,
    cap: usize,
) -> BTreeMap<NodeId, (usize, usize)> {
    let mut capped = BTreeSet::new();
    loop {
        let left = total - capped.len() * cap;
        let total_w: u64 = weights
            .iter()
            .filter(|(n, _)| !capped.contains(*n))
            .map(|(_, &w)| u64::from(w))
            .sum();
        let w = total_w;
        let over: Vec<NodeId> = weights
            .iter()
            .filter(|(n, wn)| {
                !capped.contains(*n) && left as u64 * u64::from(**wn) > cap as u64 * total_w
            })
            .map(|(&n, _)| n)
            .collect();
        if over.is_empty() {
            return weights
                .iter()
                .map(|(&n, &wn)| {
                    if capped.contains(&n) {
                        (n, (cap, cap))
                    } else {
                        let x = left as u64 * u64::from(wn);
                        (n, ((x / w) as usize, x.div_ceil(w) as usize))
                    }
                })
                .collect();
        }
        capped.extend(over);
    }
}

fn loads(table: &PartitionTable) -> BTreeMap<NodeId, usize> {
    table
        .nodes()
        .map(|(node, _)| (node, table.load(node)))
        .collect()
}

fn assert_balanced(table: &PartitionTable) {
    let weights: BTreeMap<NodeId, u32> = table.nodes().map(|(n, s)| (n, s.weight_of())).collect();
    let total = table.partitions() as usize * table.replication();
    let want = exact_shares(total, &weights, table.partitions() as usize);
    for (node, load) in loads(table) {
        let (lo, hi) = want[&node];
        assert!(
            lo <= load && load <= hi,
            "{node} holds {load}, share {lo}..={hi}"
        );
    }
    for p in 0..table.partitions() {
        let r = table.replicas(PartitionId(p));
        assert_eq!(r.len(), table.replication());
        assert_eq!(
            r.iter().collect::<BTreeSet<_>>().len(),
            r.len(),
            "distinct replicas"
        );
    }
}

/// The least number of replicas any balanced table over `new`'s nodes adds to `old`,
/// by trying every table.
fn brute_force_least_added(old: &PartitionTable, new: &PartitionTable) -> usize {
    let nodes: Vec<NodeId> = new.nodes().map(|(n, _)| n).collect();
    let r = new.replication();
    let weights: BTreeMap<NodeId, u32> = new.nodes().map(|(n, s)| (n, s.weight_of())).collect();
    let want = exact_shares(
        new.partitions() as usize * r,
        &weights,
        new.partitions() as usize,
    );
    let mut sets: Vec<Vec<NodeId>> = Vec::new();
    let k = nodes.len();
    for mask in 0u32..(1 << k) {
        if mask.count_ones() as usize == r {
            sets.push(
                (0..k)
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| nodes[i])
                    .collect(),
            );
        }
    }
    let old_sets: Vec<BTreeSet<NodeId>> = (0..old.partitions())
        .map(|p| old.replicas(PartitionId(p)).iter().copied().collect())
        .collect();
    let mut best = usize::MAX;
    let mut choice = vec![0usize; new.partitions() as usize];
    loop {
        let mut load: BTreeMap<NodeId, usize> = BTreeMap::new();
        let mut added = 0;
        for (p, &c) in choice.iter().enumerate() {
            for node in &sets[c] {
                *load.entry(*node).or_default() += 1;
                if !old_sets[p].contains(node) {
                    added += 1;
                }
            }
        }
        let balanced = nodes.iter().all(|node| {
            let l = load.get(node).copied().unwrap_or(0);
            want[node].0 <= l && l <= want[node].1
        });
        if balanced {
            best = best.min(added);
        }
        // Next choice, like an odometer.
        let mut i = 0;
        loop {
            if i == choice.len() {
                return best;
            }
            choice[i] += 1;
            if choice[i] < sets.len() {
                break;
            }
            choice[i] = 0;
            i += 1;
        }
    }
}

#[derive(Clone, Debug)]
enum Change {
    Join(u32),
    Leave(usize),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (1u32..=3).prop_map(Change::Join),
        (0usize..8).prop_map(Change::Leave)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Small tables, every change checked against every possible table: balanced, and no
    /// balanced table could have moved fewer replicas.
    #[test]
    fn a_change_moves_no_more_than_a_brute_force_search_finds(
        partitions in 1u32..=5,
        replication in 1usize..=2,
        weights in prop::collection::vec(1u32..=3, 2..=3),
        changes in prop::collection::vec(change(), 1..6),
    ) {
        let start = weights.iter().enumerate().map(|(i, &w)| (n(i as u64 + 1), NodeSpec::new().weight(w)));
        let mut table = PartitionTable::new(partitions, replication, start).unwrap();
        assert_balanced(&table);
        let mut next_id = weights.len() as u64 + 1;
        for c in changes {
            let (next, moved) = match c {
                Change::Join(w) => {
                    if table.nodes().count() == 4 { continue; }
                    next_id += 1;
                    table.join(n(next_id), NodeSpec::new().weight(w)).unwrap()
                }
                Change::Leave(i) => {
                    let ids: Vec<NodeId> = table.nodes().map(|(n, _)| n).collect();
                    match table.leave(ids[i % ids.len()]) {
                        Ok(x) => x,
                        Err(_) => continue, // too few nodes left
                    }
                }
            };
            assert_balanced(&next);
            prop_assert_eq!(next.version(), TableVersion(table.version().0 + 1));
            let least = brute_force_least_added(&table, &next);
            prop_assert_eq!(moved.replicas_added, least, "{:?} -> {:?}", table, next);
            table = next;
        }
    }

    /// Every key has exactly one partition and that partition one owner, its first replica,
    /// whatever the table; a stale version gets a redirect that names the same owner.
    #[test]
    fn a_lookup_finds_exactly_one_owner(
        partitions in 1u32..=300,
        nodes in 3u64..=9,
        keys in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..16), 1..50),
    ) {
        let table = PartitionTable::new(partitions, 3, plain(1..=nodes)).unwrap();
        let (next, _) = table.join(n(nodes + 1), NodeSpec::new()).unwrap();
        for key in keys {
            let p = next.partition_of(&key);
            prop_assert!(p.0 < partitions);
            let owners: Vec<NodeId> = next.nodes().map(|(x, _)| x).filter(|&x| next.admit(x, p).is_ok()).collect();
            prop_assert_eq!(owners.clone(), vec![next.owner(p)]);
            prop_assert_eq!(next.lookup(&key, next.version()), Lookup::Current { partition: p, owner: owners[0] });
            match next.lookup(&key, table.version()) {
                Lookup::Redirect(r) => {
                    prop_assert_eq!(r.owner, owners[0]);
                    prop_assert_eq!(r.version, next.version());
                    prop_assert_eq!(&r.replicas[..], next.replicas(p));
                }
                Lookup::Current { .. } => prop_assert!(false, "a stale version must be redirected"),
            }
        }
    }

    /// Clients route writes with tables of every older version; nodes hold the current one.
    /// No write lands on a node that does not own its key, and one redirect always suffices.
    #[test]
    fn a_client_with_a_stale_table_never_writes_to_a_non_owner(
        changes in prop::collection::vec(change(), 1..8),
        keys in prop::collection::vec(any::<u64>(), 1..64),
    ) {
        let mut versions = vec![PartitionTable::new(64, 2, plain(1..=4)).unwrap()];
        let mut next_id = 5;
        for c in changes {
            let last = versions.last().unwrap();
            let next = match c {
                Change::Join(w) => {
                    next_id += 1;
                    last.join(n(next_id), NodeSpec::new().weight(w)).map(|x| x.0)
                }
                Change::Leave(i) => {
                    let ids: Vec<NodeId> = last.nodes().map(|(n, _)| n).collect();
                    last.leave(ids[i % ids.len()]).map(|x| x.0)
                }
            };
            if let Ok(next) = next {
                versions.push(next);
            }
        }
        let current = versions.last().unwrap();
        let live: BTreeSet<NodeId> = current.nodes().map(|(x, _)| x).collect();
        for (i, key) in keys.iter().enumerate() {
            let key = key.to_be_bytes();
            let client = &versions[i % versions.len()];
            let p = client.partition_of(&key);
            let mut to = client.owner(p);
            let mut hops = 0;
            loop {
                // A departed node answers nothing; the client falls back to any live node.
                if !live.contains(&to) {
                    to = *live.iter().next().unwrap();
                }
                match current.admit(to, p) {
                    Ok(()) => break,
                    Err(redirect) => {
                        prop_assert_eq!(redirect.version, current.version());
                        to = redirect.owner;
                        hops += 1;
                        prop_assert!(hops <= 2, "a redirect leads to the owner");
                    }
                }
            }
            prop_assert_eq!(to, current.owner(p), "the write landed on the owner");
        }
    }
}

/// The headline figures: a join or leave moves the least any balanced table could (the
/// joining node's share, the leaving node's replicas), and load stays even.
#[test]
fn joins_and_leaves_at_scale_move_the_minimum_and_stay_even() {
    for (partitions, replication, nodes) in
        [(271u32, 1usize, 7u64), (1_024, 3, 10), (16_384, 3, 24)]
    {
        let mut table = PartitionTable::new(partitions, replication, plain(1..=nodes)).unwrap();
        let slots = partitions as usize * replication;
        for step in 0..4u64 {
            let joining = nodes + 1 + step;
            let (next, moved) = table.join(n(joining), NodeSpec::new()).unwrap();
            let least = slots / (table.nodes().count() + 1);
            let ratio = moved.replicas_added as f64 / least as f64;
            println!(
                "{partitions} partitions x{replication}, join of node {}: moved {} for a minimum of {least} (ratio {ratio:.3})",
                table.nodes().count() + 1,
                moved.replicas_added
            );
            assert!(
                ratio <= 1.05,
                "join moved {} for a minimum of {least}",
                moved.replicas_added
            );
            assert_eq!(next.load(n(joining)), moved.replicas_added);
            assert_balanced(&next);
            table = next;
        }
        for leaving in [2u64, 5] {
            let least = table.load(n(leaving));
            let (next, moved) = table.leave(n(leaving)).unwrap();
            assert_eq!(
                moved.replicas_added, least,
                "a leave moves only the leaver's replicas"
            );
            assert_eq!(moved.replicas_removed, 0);
            assert_balanced(&next);
            table = next;
        }
        // Owners are even too: max over mean at most one partition above.
        let live: Vec<NodeId> = table.nodes().map(|(x, _)| x).collect();
        let mean = partitions as f64 / live.len() as f64;
        let most = live.iter().map(|&x| table.owned(x)).max().unwrap();
        assert!(
            most as f64 <= mean.ceil(),
            "owners {most} for a mean of {mean}"
        );
    }
}

#[test]
fn weights_give_proportional_shares() {
    let specs = [
        (n(1), NodeSpec::new().weight(1)),
        (n(2), NodeSpec::new().weight(2)),
        (n(3), NodeSpec::new().weight(5)),
    ];
    let table = PartitionTable::new(800, 1, specs).unwrap();
    assert_eq!(
        [table.load(n(1)), table.load(n(2)), table.load(n(3))],
        [100, 200, 500]
    );
    // With three replicas the heavy node is capped at one replica per partition.
    let table = PartitionTable::new(800, 3, specs).unwrap();
    assert_eq!(
        [table.load(n(1)), table.load(n(2)), table.load(n(3))],
        [800, 800, 800]
    );
}

#[test]
fn replicas_spread_over_zones() {
    let specs: Vec<_> = (1..=9u64)
        .map(|i| (n(i), NodeSpec::new().zone(Zone((i % 3) as u32))))
        .collect();
    let table = PartitionTable::new(256, 3, specs).unwrap();
    for p in 0..256 {
        let zones: BTreeSet<_> = table
            .replicas(PartitionId(p))
            .iter()
            .map(|x| table.nodes().find(|(y, _)| y == x).unwrap().1.zone_of())
            .collect();
        assert_eq!(zones.len(), 3, "partition {p} spans every zone");
    }
}

/// A table that arrives from another node is checked whole: a damaged one is refused,
/// never looked up into a panic.
#[test]
fn a_damaged_table_from_the_wire_is_refused() {
    let table = PartitionTable::new(16, 2, plain(1..=3)).unwrap();
    let bytes = postcard::to_stdvec(&table).unwrap();
    assert_eq!(
        postcard::from_bytes::<PartitionTable>(&bytes).unwrap(),
        table
    );
    let mut refused = 0;
    for at in 0..bytes.len() {
        for flip in [1u8, 0x80, 0xff] {
            let mut damaged = bytes.clone();
            damaged[at] ^= flip;
            match postcard::from_bytes::<PartitionTable>(&damaged) {
                Ok(t) => {
                    // Whatever was accepted is a whole table: every lookup works.
                    for p in 0..t.partitions() {
                        assert_eq!(t.replicas(PartitionId(p)).len(), t.replication());
                        let _ = t.owner(PartitionId(p));
                    }
                    let _ = t.lookup(b"k", TableVersion(0));
                }
                Err(_) => refused += 1,
            }
        }
    }
    assert!(refused > 0);
    for cut in 0..bytes.len() {
        assert!(postcard::from_bytes::<PartitionTable>(&bytes[..cut]).is_err());
    }
}

#[test]
fn a_leave_in_place_changes_only_the_leavers_partitions() {
    for nodes in 3u64..=12 {
        for replication in 1..=3usize.min(nodes as usize - 1) {
            let specs = (1..=nodes).map(|i| (n(i), NodeSpec::new().weight(1 + (i % 3) as u32)));
            let table = PartitionTable::new(64, replication, specs).unwrap();
            for leaving in 1..=nodes {
                let (next, moved) = table.leave_in_place(n(leaving)).unwrap();
                assert!(next.nodes().all(|(x, _)| x != n(leaving)));
                assert_eq!(moved.replicas_added, table.load(n(leaving)));
                assert_eq!(moved.replicas_removed, 0);
                for p in (0..64).map(PartitionId) {
                    let (old, new) = (table.replicas(p), next.replicas(p));
                    let distinct: BTreeSet<_> = new.iter().collect();
                    assert_eq!(distinct.len(), replication, "{p:?}: {new:?}");
                    if old.contains(&n(leaving)) {
                        let kept = old.iter().filter(|x| new.contains(x)).count();
                        assert_eq!(kept, replication - 1, "{p:?}: {old:?} -> {new:?}");
                    } else {
                        assert_eq!(old, new, "{p:?} changed though n{leaving} did not hold it");
                    }
                }
            }
        }
    }
}
