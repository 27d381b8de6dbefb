//! Fixed Partitions: a stable key-to-partition hash, and a versioned table that maps each
//! partition to an ordered replica list and is rebalanced with as few moves as possible.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use synod_node::NodeId;

/// The most partitions a table may have (Redis Cluster's 16,384 slots fit many times over).
pub const PARTITIONS_MAX: u32 = 1 << 20;
/// The most replicas a partition may have.
pub const REPLICATION_MAX: usize = 16;
/// The most nodes a table may hold.
pub const NODES_MAX: usize = 4_096;
/// The largest weight a node may have (weights are relative; 1 is the default).
pub const WEIGHT_MAX: u32 = 1_000;

/// A partition's number, `0..partitions` of its table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionId(pub u32);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// The version of a [`PartitionTable`]: every change makes a table with the next version.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct TableVersion(pub u64);

impl fmt::Display for TableVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// A failure domain (a rack, an availability zone). Replicas of one partition are placed in
/// different zones where the nodes allow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Zone(pub u32);

/// The stable 64-bit hash of a key that [`partition_of`] maps to a partition.
///
/// It is FNV-1a (64-bit: offset basis `0xcbf29ce484222325`, prime `0x100000001b3`) over the
/// key's bytes, followed by MurmurHash3's 64-bit finalizer (`h ^= h >> 33; h *=
/// 0xff51afd7ed558ccd; h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53; h ^= h >> 33`), which spreads
/// FNV's weak high bits. Only byte operations and wrapping `u64` arithmetic: the same on
/// every platform, endianness and version of this crate. The crate's tests pin it with
/// vectors; changing it would move every key, so it never changes.
#[must_use]
pub fn key_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The partition of `key` among `partitions`: `(key_hash(key) * partitions) >> 64`, the
/// hash scaled to the partition count (multiply and shift, with no modulo bias). Stable:
/// the same key goes to the same partition for as long as the count stays the same, which is
/// why the count is fixed up front.
///
/// # Panics
///
/// If `partitions` is 0.
#[must_use]
pub fn partition_of(key: &[u8], partitions: u32) -> PartitionId {
    assert!(partitions > 0, "a table has at least one partition");
    let scaled = (u128::from(key_hash(key)) * u128::from(partitions)) >> 64;
    PartitionId(u32::try_from(scaled).expect("below partitions"))
}

/// A node of a partition table: its relative weight (its share of replicas) and its zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeSpec {
    weight: u32,
    zone: Option<Zone>,
}

impl NodeSpec {
    /// Weight 1, no zone.
    #[must_use]
    pub const fn new() -> NodeSpec {
        NodeSpec {
            weight: 1,
            zone: None,
        }
    }

    /// Sets the node's weight: a node of weight 2 holds twice the replicas of one of weight
    /// 1 (at most one replica per partition). Checked by the table against [`WEIGHT_MAX`].
    #[must_use]
    pub const fn weight(mut self, weight: u32) -> NodeSpec {
        self.weight = weight;
        self
    }

    /// Sets the node's zone.
    #[must_use]
    pub const fn zone(mut self, zone: Zone) -> NodeSpec {
        self.zone = Some(zone);
        self
    }

    /// The node's weight.
    #[must_use]
    pub const fn weight_of(&self) -> u32 {
        self.weight
    }

    /// The node's zone, if it has one.
    #[must_use]
    pub const fn zone_of(&self) -> Option<Zone> {
        self.zone
    }
}

impl Default for NodeSpec {
    fn default() -> NodeSpec {
        NodeSpec::new()
    }
}

/// Why a partition table could not be built or changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TableError {
    /// The partition count is 0 or above [`PARTITIONS_MAX`].
    Partitions(u32),
    /// The replication factor is 0 or above [`REPLICATION_MAX`].
    Replication(usize),
    /// Fewer nodes than the replication factor (a partition's replicas are distinct nodes).
    TooFewNodes {
        /// Nodes the table would have.
        nodes: usize,
        /// The replication factor.
        replication: usize,
    },
    /// More than [`NODES_MAX`] nodes.
    TooManyNodes(usize),
    /// A weight of 0 or above [`WEIGHT_MAX`].
    Weight(NodeId, u32),
    /// The node is already in the table (join) or listed twice (new).
    Duplicate(NodeId),
    /// The node is not in the table (leave).
    Unknown(NodeId),
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::Partitions(n) => {
                write!(f, "{n} partitions: a table has 1 to {PARTITIONS_MAX}")
            }
            TableError::Replication(r) => {
                write!(f, "replication {r}: must be 1 to {REPLICATION_MAX}")
            }
            TableError::TooFewNodes { nodes, replication } => {
                write!(
                    f,
                    "{nodes} nodes cannot hold {replication} distinct replicas"
                )
            }
            TableError::TooManyNodes(n) => write!(f, "{n} nodes: at most {NODES_MAX}"),
            TableError::Weight(node, w) => {
                write!(f, "{node} has weight {w}: must be 1 to {WEIGHT_MAX}")
            }
            TableError::Duplicate(node) => write!(f, "{node} is already in the table"),
            TableError::Unknown(node) => write!(f, "{node} is not in the table"),
        }
    }
}

impl std::error::Error for TableError {}

/// What a change of the table moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Movement {
    /// Replicas placed on a node that did not hold the partition: each is a copy of the
    /// partition's data.
    pub replicas_added: usize,
    /// Replicas taken off a node that stays in the table (a departed node's are not counted).
    pub replicas_removed: usize,
    /// Partitions whose first replica (the owner) changed; no data moves for these alone.
    pub owners_changed: usize,
}

/// Where a request for a key goes, as [`PartitionTable::lookup`] answers it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Lookup {
    /// The asker's table is current: the key's partition and its owner.
    Current {
        /// The key's partition.
        partition: PartitionId,
        /// The first of its replicas.
        owner: NodeId,
    },
    /// The asker's table is stale: where the key is now.
    Redirect(Redirect),
}

/// The answer to a request routed with a stale table: the partition's replicas now, and the
/// version of the table that says so. The asker updates its table (or just this partition)
/// and sends the request to `owner`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Redirect {
    /// The current table's version.
    pub version: TableVersion,
    /// The key's partition.
    pub partition: PartitionId,
    /// The partition's owner in the current table.
    pub owner: NodeId,
    /// Every replica of the partition, the owner first.
    pub replicas: Vec<NodeId>,
}

/// A versioned map from each of a fixed number of partitions to its ordered replica list.
///
/// The first replica of a partition is its *owner* (where writes go); the rest are its
/// followers. Every partition has `replication` distinct replicas. A table is a value:
/// [`PartitionTable::join`] and [`PartitionTable::leave`] return the next version and what
/// moved, and leave `self` unchanged, so a node can keep serving the old version while the
/// new one is being copied.
///
/// **Balance.** Each node's share of the `partitions * replication` replicas is its weight
/// over the total (at most one replica per partition); every node holds its share rounded
/// down or up. Owners are balanced the same way among each partition's replicas, by
/// reordering lists, which moves no data.
///
/// **Movement.** A change keeps every replica it can: a node keeps its replicas up to its
/// new share, and a departed node's replicas and the replicas above a node's share are
/// placed on the nodes below theirs. So a join copies only the new node's share onto it,
/// and a leave only the departed node's replicas, the least any balanced table could. The
/// placement is greedy: when a hole can only be filled by a node that already holds its
/// partition, that node takes another partition's replica whose holder moves to the hole,
/// which can cost a copy more than the least. The crate's tests compare every change of
/// small tables with a brute-force search for the least, and measure the ratio at scale.
///
/// **Zones.** A replica is placed, where the nodes allow it, on a node of a zone the
/// partition does not use yet; balance comes first, so zones are a preference.
///
/// **On the wire.** A table serializes with serde (its version, counts, nodes and the
/// replica lists), and deserializing one checks it whole: the limits, every replica a
/// node of the table, every partition with `replication` distinct replicas. A table that
/// came from another node can be looked up without a panic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TableWire")]
pub struct PartitionTable {
    version: TableVersion,
    partitions: u32,
    replication: usize,
    nodes: BTreeMap<NodeId, NodeSpec>,
    /// Every partition's replicas, `replication` a partition, one after the other: one
    /// allocation, so a lookup reads one cache line past the index.
    replicas: Vec<NodeId>,
}

impl PartitionTable {
    /// Version 1 of a table of `partitions` partitions, each with `replication` replicas,
    /// over `nodes`.
    ///
    /// # Errors
    ///
    /// A [`TableError`] for a count, replication factor, weight or node list out of bounds.
    pub fn new(
        partitions: u32,
        replication: usize,
        nodes: impl IntoIterator<Item = (NodeId, NodeSpec)>,
    ) -> Result<PartitionTable, TableError> {
        if partitions == 0 || partitions > PARTITIONS_MAX {
            return Err(TableError::Partitions(partitions));
        }
        if replication == 0 || replication > REPLICATION_MAX {
            return Err(TableError::Replication(replication));
        }
        let mut specs = BTreeMap::new();
        for (node, spec) in nodes {
            if specs.insert(node, spec).is_some() {
                return Err(TableError::Duplicate(node));
            }
        }
        check_nodes(&specs, replication)?;
        let empty = PartitionTable {
            version: TableVersion(0),
            partitions,
            replication,
            nodes: BTreeMap::new(),
            replicas: Vec::new(),
        };
        Ok(empty.rebalance(specs).0)
    }

    /// The next version with `node` added, and what moved.
    ///
    /// # Errors
    ///
    /// [`TableError::Duplicate`] if `node` is in the table; a limit it would break.
    pub fn join(
        &self,
        node: NodeId,
        spec: NodeSpec,
    ) -> Result<(PartitionTable, Movement), TableError> {
        let mut specs = self.nodes.clone();
        if specs.insert(node, spec).is_some() {
            return Err(TableError::Duplicate(node));
        }
        check_nodes(&specs, self.replication)?;
        Ok(self.rebalance(specs))
    }

    /// The next version without `node`, and what moved.
    ///
    /// # Errors
    ///
    /// [`TableError::Unknown`] if `node` is not in the table; [`TableError::TooFewNodes`] if
    /// too few would be left.
    pub fn leave(&self, node: NodeId) -> Result<(PartitionTable, Movement), TableError> {
        let mut specs = self.nodes.clone();
        if specs.remove(&node).is_none() {
            return Err(TableError::Unknown(node));
        }
        check_nodes(&specs, self.replication)?;
        Ok(self.rebalance(specs))
    }

    /// The table without `node`, in which only the partitions `node` held change: in each,
    /// a node that does not hold the partition takes `node`'s place in its list (the node
    /// holding the fewest replicas for its weight, one of a zone the partition does not use
    /// yet first), and every other replica stays where it was. [`leave`](Self::leave) moves
    /// as few replicas as any balanced table could, but may get there by moving a replica
    /// between two nodes that stay; a system whose leaving node hands its own partitions to
    /// their new replicas needs no other partition to change, and pays for it in balance
    /// (a node may end above its share).
    ///
    /// # Errors
    ///
    /// [`TableError::Unknown`] if `node` is not in the table; what [`leave`](Self::leave)
    /// returns if too few nodes would remain.
    pub fn leave_in_place(&self, node: NodeId) -> Result<(PartitionTable, Movement), TableError> {
        let mut specs = self.nodes.clone();
        if specs.remove(&node).is_none() {
            return Err(TableError::Unknown(node));
        }
        check_nodes(&specs, self.replication)?;
        let mut replicas = self.lists();
        let mut load: BTreeMap<NodeId, u64> = specs.keys().map(|&n| (n, 0)).collect();
        for n in replicas.iter().flatten() {
            if let Some(held) = load.get_mut(n) {
                *held += 1;
            }
        }
        let mut movement = Movement::default();
        for (p, list) in replicas.iter_mut().enumerate() {
            let Some(at) = list.iter().position(|&n| n == node) else {
                continue;
            };
            let used: BTreeSet<Zone> = list
                .iter()
                .filter_map(|n| specs.get(n).and_then(|spec| spec.zone))
                .collect();
            // Fewest replicas for the weight: load / weight, compared as load * 2^32 /
            // weight (a weight is at most u32::MAX, so the order is exact enough).
            let best = specs
                .iter()
                .filter(|(n, _)| !list.contains(n))
                .min_by_key(|&(n, spec)| {
                    let new_zone = spec.zone.is_none_or(|z| !used.contains(&z));
                    let share =
                        u128::from(load[n]) * u128::from(u32::MAX) / u128::from(spec.weight.max(1));
                    (!new_zone, share, std::cmp::Reverse(scatter(p, *n)))
                })
                .map(|(&n, _)| n)
                .expect("more nodes than a partition's other replicas (checked above)");
            if at == 0 {
                movement.owners_changed += 1;
            }
            list[at] = best;
            *load.get_mut(&best).expect("a node of the table") += 1;
            movement.replicas_added += 1;
        }
        Ok((self.next(specs, replicas), movement))
    }

    /// The table's version.
    #[must_use]
    pub fn version(&self) -> TableVersion {
        self.version
    }

    /// The number of partitions (fixed for the table's life).
    #[must_use]
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Replicas per partition.
    #[must_use]
    pub fn replication(&self) -> usize {
        self.replication
    }

    /// The nodes and their specs, in id order.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, NodeSpec)> + '_ {
        self.nodes.iter().map(|(&n, &s)| (n, s))
    }

    /// The partition of `key` ([`partition_of`] with this table's count).
    #[must_use]
    pub fn partition_of(&self, key: &[u8]) -> PartitionId {
        partition_of(key, self.partitions)
    }

    /// The replicas of `partition`, its owner first.
    ///
    /// # Panics
    ///
    /// If `partition` is not below [`PartitionTable::partitions`].
    #[must_use]
    pub fn replicas(&self, partition: PartitionId) -> &[NodeId] {
        let start = partition.0 as usize * self.replication;
        &self.replicas[start..start + self.replication]
    }

    /// The owner (first replica) of `partition`.
    ///
    /// # Panics
    ///
    /// If `partition` is not below [`PartitionTable::partitions`].
    #[must_use]
    pub fn owner(&self, partition: PartitionId) -> NodeId {
        self.replicas(partition)[0]
    }

    /// How many replicas `node` holds.
    #[must_use]
    pub fn load(&self, node: NodeId) -> usize {
        self.replicas.iter().filter(|&&r| r == node).count()
    }

    /// How many partitions `node` owns.
    #[must_use]
    pub fn owned(&self, node: NodeId) -> usize {
        self.replicas
            .chunks_exact(self.replication)
            .filter(|r| r[0] == node)
            .count()
    }

    /// Where a request for `key` goes, for an asker whose table has version `known`: the
    /// owner if `known` is this table's version, a [`Redirect`] if it is older (or newer:
    /// this node is the one behind, and the asker learns which version it has).
    #[must_use]
    pub fn lookup(&self, key: &[u8], known: TableVersion) -> Lookup {
        let partition = self.partition_of(key);
        if known == self.version {
            Lookup::Current {
                partition,
                owner: self.owner(partition),
            }
        } else {
            Lookup::Redirect(self.redirect(partition))
        }
    }

    /// What node `me` answers a write to `partition`: `Ok` if `me` owns it in this table,
    /// else a [`Redirect`] to the owner. The asker's table version does not matter here:
    /// a node with this table never takes a write for a partition it does not own.
    ///
    /// # Errors
    ///
    /// The redirect, if `me` is not the owner (or `partition` is out of range, which a
    /// request from outside can carry: then the redirect names partition 0's owner
    /// of a table the asker must fetch again).
    pub fn admit(&self, me: NodeId, partition: PartitionId) -> Result<(), Redirect> {
        if partition.0 >= self.partitions {
            return Err(self.redirect(PartitionId(0)));
        }
        if self.owner(partition) == me {
            Ok(())
        } else {
            Err(self.redirect(partition))
        }
    }

    /// The redirect for `partition` in this table.
    ///
    /// # Panics
    ///
    /// If `partition` is not below [`PartitionTable::partitions`].
    #[must_use]
    pub fn redirect(&self, partition: PartitionId) -> Redirect {
        Redirect {
            version: self.version,
            partition,
            owner: self.owner(partition),
            replicas: self.replicas(partition).to_vec(),
        }
    }

    /// The table over `specs` with the next version: replicas kept up to each node's new
    /// share, the rest placed on nodes below theirs, owners balanced.
    fn rebalance(&self, specs: BTreeMap<NodeId, NodeSpec>) -> (PartitionTable, Movement) {
        let partitions = self.partitions as usize;
        let slots = partitions * self.replication;
        let old = self.lists();
        let mut replicas = old.clone();
        // Departed nodes' replicas go first.
        for list in &mut replicas {
            list.retain(|n| specs.contains_key(n));
        }
        let mut load: BTreeMap<NodeId, usize> = specs.keys().map(|&n| (n, 0)).collect();
        for list in &replicas {
            for n in list {
                *load.get_mut(n).expect("retained above") += 1;
            }
        }
        let weights: BTreeMap<NodeId, u64> = specs
            .iter()
            .map(|(&n, s)| (n, u64::from(s.weight)))
            .collect();
        let caps: BTreeMap<NodeId, usize> = specs.keys().map(|&n| (n, partitions)).collect();
        // Each node's share, rounded down; the shares' fractions add up to `ups` more. A
        // node holding more than its rounded-down share keeps one of them (while they
        // last); the rest go, during the filling below, to nodes that need them.
        let (mut target, fractional) = quotas(slots, &weights, &caps);
        let mut ups = slots - target.values().sum::<usize>();
        let mut upped = BTreeSet::new();
        for n in &fractional {
            if ups > 0 && load[n] > target[n] {
                *target.get_mut(n).expect("every node") += 1;
                upped.insert(*n);
                ups -= 1;
            }
        }
        let mut movement = Movement::default();
        // Nodes above their share give up replicas, from the partitions with the fewest
        // holes so far (so that holes spread out and a joining node, which can fill one
        // hole per partition, can fill them), followers before owners.
        let mut holes: Vec<usize> = replicas
            .iter()
            .map(|list| self.replication - list.len())
            .collect();
        // Among those, from the partitions that the most nodes with room could fill.
        let fillers: Vec<NodeId> = target
            .iter()
            .filter(|&(n, &t)| load[n] < t || (fractional.contains(n) && !upped.contains(n)))
            .map(|(&n, _)| n)
            .collect();
        for (&node, &t) in &target {
            let excess = load[&node].saturating_sub(t);
            if excess == 0 {
                continue;
            }
            let mut held: Vec<usize> = (0..partitions)
                .filter(|&p| replicas[p].contains(&node))
                .collect();
            held.sort_by_key(|&p| {
                let absent = fillers.iter().filter(|f| !replicas[p].contains(f)).count();
                (
                    holes[p],
                    std::cmp::Reverse(absent),
                    replicas[p][0] == node,
                    p,
                )
            });
            for &p in &held[..excess] {
                replicas[p].retain(|&x| x != node);
                holes[p] += 1;
                movement.replicas_removed += 1;
            }
            *load.get_mut(&node).expect("every node") = t;
        }
        // Fill the holes, the partitions with most first, each with the node furthest
        // below its share that the partition does not hold, preferring a new zone.
        let mut order: Vec<usize> = (0..partitions).collect();
        order.sort_by_key(|&p| (replicas[p].len(), p));
        // The replicas placed by this change, per partition.
        let mut placed: Vec<Vec<NodeId>> = vec![Vec::new(); partitions];
        for p in order {
            while replicas[p].len() < self.replication {
                let used: BTreeSet<Zone> =
                    replicas[p].iter().filter_map(|n| specs[n].zone).collect();
                let room = Room {
                    target: &target,
                    load: &load,
                    fractional: &fractional,
                    upped: &upped,
                    ups,
                };
                let best = target
                    .keys()
                    .filter(|n| room.of(**n) > 0 && !replicas[p].contains(n))
                    .max_by_key(|&n| {
                        let new_zone = specs[n].zone.is_none_or(|z| !used.contains(&z));
                        (new_zone, room.of(*n), scatter(p, *n))
                    })
                    .copied();
                if let Some(n) = best {
                    if load[&n] == target[&n] {
                        // Takes one of the fractions' ups.
                        *target.get_mut(&n).expect("every node") += 1;
                        upped.insert(n);
                        ups -= 1;
                    }
                    replicas[p].push(n);
                    placed[p].push(n);
                    *load.get_mut(&n).expect("every node") += 1;
                    movement.replicas_added += 1;
                    continue;
                }
                // Every node below its share already holds p: a node u below its share
                // takes the place of a node v in another partition q, and v comes to p.
                let swap = swap_through(&replicas, &placed, self.replication, p, &room);
                let Swap {
                    u,
                    q,
                    v,
                    was_placed,
                } = swap;
                if load[&u] == target[&u] {
                    *target.get_mut(&u).expect("every node") += 1;
                    upped.insert(u);
                    ups -= 1;
                }
                replicas[q].retain(|&x| x != v);
                placed[q].retain(|&x| x != v);
                replicas[q].push(u);
                placed[q].push(u);
                replicas[p].push(v);
                placed[p].push(v);
                *load.get_mut(&u).expect("every node") += 1;
                if was_placed {
                    // v was a copy this change made anyway: it lands on p instead of q.
                    movement.replicas_added += 1;
                } else {
                    movement.replicas_added += 2;
                    movement.replicas_removed += 1;
                }
            }
        }
        debug_assert_eq!(ups, 0, "every hole took a share or an up");
        balance_owners(&mut replicas, &specs, &weights);
        movement.owners_changed = replicas
            .iter()
            .zip(&old)
            .filter(|(new, old)| old.first() != new.first())
            .count();
        (self.next(specs, replicas), movement)
    }

    /// The next version of this table: `specs`' nodes holding `replicas` (a list per
    /// partition), checked whole.
    fn next(
        &self,
        specs: BTreeMap<NodeId, NodeSpec>,
        replicas: Vec<Vec<NodeId>>,
    ) -> PartitionTable {
        let table = PartitionTable {
            version: TableVersion(self.version.0 + 1),
            partitions: self.partitions,
            replication: self.replication,
            nodes: specs,
            replicas: replicas.into_iter().flatten().collect(),
        };
        table.assert_valid();
        table
    }

    /// Every partition's replica list (empty lists for the table before the first).
    fn lists(&self) -> Vec<Vec<NodeId>> {
        if self.replicas.is_empty() {
            return vec![Vec::new(); self.partitions as usize];
        }
        self.replicas
            .chunks_exact(self.replication)
            .map(<[NodeId]>::to_vec)
            .collect()
    }

    fn assert_valid(&self) {
        assert_eq!(
            self.replicas.len(),
            self.partitions as usize * self.replication
        );
        for list in self.replicas.chunks_exact(self.replication) {
            assert_eq!(list.len(), self.replication, "every partition is full");
            let distinct: BTreeSet<_> = list.iter().collect();
            assert_eq!(distinct.len(), list.len(), "replicas are distinct nodes");
        }
    }
}

/// A [`PartitionTable`] as it arrives, before it is checked.
#[derive(Deserialize)]
struct TableWire {
    version: TableVersion,
    partitions: u32,
    replication: usize,
    nodes: BTreeMap<NodeId, NodeSpec>,
    replicas: Vec<NodeId>,
}

/// Why a table that arrived was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TableWireError {
    /// A count, factor, weight or node list out of bounds.
    Table(TableError),
    /// Not `partitions * replication` replicas.
    Length,
    /// A replica that is not a node of the table.
    UnknownReplica(NodeId),
    /// A partition that lists a node twice.
    Repeated(PartitionId),
}

impl fmt::Display for TableWireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableWireError::Table(e) => write!(f, "{e}"),
            TableWireError::Length => write!(f, "the replica lists do not fill the table"),
            TableWireError::UnknownReplica(n) => write!(f, "replica {n} is not in the table"),
            TableWireError::Repeated(p) => write!(f, "{p} lists a node twice"),
        }
    }
}

impl std::error::Error for TableWireError {}

impl TryFrom<TableWire> for PartitionTable {
    type Error = TableWireError;

    fn try_from(w: TableWire) -> Result<PartitionTable, TableWireError> {
        if w.partitions == 0 || w.partitions > PARTITIONS_MAX {
            return Err(TableWireError::Table(TableError::Partitions(w.partitions)));
        }
        if w.replication == 0 || w.replication > REPLICATION_MAX {
            return Err(TableWireError::Table(TableError::Replication(
                w.replication,
            )));
        }
        check_nodes(&w.nodes, w.replication).map_err(TableWireError::Table)?;
        if w.replicas.len() != w.partitions as usize * w.replication {
            return Err(TableWireError::Length);
        }
        for (p, list) in w.replicas.chunks_exact(w.replication).enumerate() {
            for (i, n) in list.iter().enumerate() {
                if !w.nodes.contains_key(n) {
                    return Err(TableWireError::UnknownReplica(*n));
                }
                if list[..i].contains(n) {
                    let p = u32::try_from(p).expect("below partitions");
                    return Err(TableWireError::Repeated(PartitionId(p)));
                }
            }
        }
        Ok(PartitionTable {
            version: w.version,
            partitions: w.partitions,
            replication: w.replication,
            nodes: w.nodes,
            replicas: w.replicas,
        })
    }
}

fn check_nodes(specs: &BTreeMap<NodeId, NodeSpec>, replication: usize) -> Result<(), TableError> {
    if specs.len() > NODES_MAX {
        return Err(TableError::TooManyNodes(specs.len()));
    }
    if specs.len() < replication {
        return Err(TableError::TooFewNodes {
            nodes: specs.len(),
            replication,
        });
    }
    for (&node, spec) in specs {
        if spec.weight == 0 || spec.weight > WEIGHT_MAX {
            return Err(TableError::Weight(node, spec.weight));
        }
    }
    Ok(())
}

/// Each node's share of `total` items by weight, each at most its cap, rounded down; and
/// the nodes whose exact share has a fraction (the rounded-down shares fall short of
/// `total` by as many of them as must be rounded up). A node whose exact share is above its
/// cap gets the cap, and the others share the rest.
fn quotas(
    total: usize,
    weights: &BTreeMap<NodeId, u64>,
    caps: &BTreeMap<NodeId, usize>,
) -> (BTreeMap<NodeId, usize>, BTreeSet<NodeId>) {
    let mut out = BTreeMap::new();
    let mut rest: BTreeMap<NodeId, u64> = weights.clone();
    let mut left = total as u128;
    loop {
        let weight: u128 = rest.values().map(|&w| u128::from(w)).sum();
        let over: Vec<NodeId> = rest
            .iter()
            .filter(|&(n, &w)| left * u128::from(w) > caps[n] as u128 * weight)
            .map(|(&n, _)| n)
            .collect();
        if over.is_empty() {
            break;
        }
        for n in over {
            rest.remove(&n);
            out.insert(n, caps[&n]);
            left -= caps[&n] as u128;
        }
    }
    let weight: u128 = rest.values().map(|&w| u128::from(w)).sum();
    let mut fractional = BTreeSet::new();
    for (&n, &w) in &rest {
        let exact = left * u128::from(w);
        out.insert(n, usize::try_from(exact / weight).expect("at most total"));
        if !exact.is_multiple_of(weight) {
            fractional.insert(n);
        }
    }
    (out, fractional)
}

/// Each node's share of `total` items by weight, each at most its cap, as whole numbers:
/// the exact share rounded down or up, the ups going first to the nodes that hold more
/// than their rounded-down share now (so they keep it), then by id.
fn shares(
    total: usize,
    weights: &BTreeMap<NodeId, u64>,
    caps: &BTreeMap<NodeId, usize>,
    held: &BTreeMap<NodeId, usize>,
) -> BTreeMap<NodeId, usize> {
    let (mut out, fractional) = quotas(total, weights, caps);
    let mut ups = total - out.values().sum::<usize>();
    let mut order: Vec<NodeId> = fractional.into_iter().collect();
    order.sort_by_key(|n| (held.get(n).copied().unwrap_or(0) <= out[n], *n));
    for n in order.into_iter().take(ups) {
        *out.get_mut(&n).expect("inserted") += 1;
        ups -= 1;
    }
    debug_assert_eq!(ups, 0, "the fractions add up to the remainder");
    out
}

/// A tie-break between equally good nodes for a replica of partition `p`, which differs from
/// partition to partition (as rendezvous hashing does), so that the nodes that share
/// partitions with one node are spread over all the others: when it leaves, every node can
/// take some of its replicas, and copies come from many nodes at once.
fn scatter(p: usize, n: NodeId) -> u64 {
    let mut h = (p as u64).rotate_left(32) ^ n.get();
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// How many more replicas each node may take while holes are filled.
struct Room<'a> {
    target: &'a BTreeMap<NodeId, usize>,
    load: &'a BTreeMap<NodeId, usize>,
    fractional: &'a BTreeSet<NodeId>,
    upped: &'a BTreeSet<NodeId>,
    ups: usize,
}

impl Room<'_> {
    /// Up to its share, plus one of the fractions' ups while any is left.
    fn of(&self, n: NodeId) -> usize {
        let up = self.ups > 0 && self.fractional.contains(&n) && !self.upped.contains(&n);
        self.target[&n] - self.load[&n] + usize::from(up)
    }
}

/// How a hole that no node below its share can fill is filled: `u`, below its share, joins
/// `q` in place of `v`, which moves to the hole's partition.
struct Swap {
    u: NodeId,
    q: usize,
    v: NodeId,
    /// Whether `v`'s replica of `q` was placed by this change (moving it copies nothing more).
    was_placed: bool,
}

/// For a partition `p` that no node below its share can join: a node `u` below its share
/// (which holds `p`), a partition `q` without `u`, and a node `v` of `q` not in `p`,
/// preferring a `v` this change placed on `q`.
fn swap_through(
    replicas: &[Vec<NodeId>],
    placed: &[Vec<NodeId>],
    replication: usize,
    p: usize,
    room: &Room<'_>,
) -> Swap {
    let mut fallback = None;
    let mut fallback_full = false;
    for &u in room.target.keys() {
        if room.of(u) == 0 {
            continue;
        }
        for (q, list) in replicas.iter().enumerate() {
            if q == p || list.contains(&u) {
                continue;
            }
            if let Some(&v) = placed[q].iter().find(|v| !replicas[p].contains(v)) {
                return Swap {
                    u,
                    q,
                    v,
                    was_placed: true,
                };
            }
            // Otherwise a kept replica, preferably of a full partition (taking one from a
            // partition with a hole of its own would only move the problem there).
            let full = list.len() == replication;
            if (fallback.is_none() || full && !fallback_full)
                && let Some(&v) = list.iter().find(|v| !replicas[p].contains(v))
            {
                fallback = Some(Swap {
                    u,
                    q,
                    v,
                    was_placed: false,
                });
                fallback_full = full;
            }
        }
    }
    fallback.expect("a partition with a hole and a node below its share always has a swap")
}

/// Reorders replica lists so that each node owns its share of partitions (by weight, at
/// most the partitions it holds): an owner above its share hands ownership to a replica of
/// the same partition below its share. Moves no data.
fn balance_owners(
    replicas: &mut [Vec<NodeId>],
    specs: &BTreeMap<NodeId, NodeSpec>,
    weights: &BTreeMap<NodeId, u64>,
) {
    let mut held: BTreeMap<NodeId, usize> = specs.keys().map(|&n| (n, 0)).collect();
    let mut owned: BTreeMap<NodeId, usize> = specs.keys().map(|&n| (n, 0)).collect();
    for list in replicas.iter() {
        for n in list {
            *held.get_mut(n).expect("every node") += 1;
        }
        *owned.get_mut(&list[0]).expect("every node") += 1;
    }
    let target = shares(replicas.len(), weights, &held, &owned);
    // First the cheap hand-overs: an owner above its share to a replica below its.
    for list in replicas.iter_mut() {
        let owner = list[0];
        if owned[&owner] <= target[&owner] {
            continue;
        }
        let pick = (1..list.len())
            .filter(|&i| owned[&list[i]] < target[&list[i]])
            .max_by_key(|&i| target[&list[i]] - owned[&list[i]]);
        if let Some(i) = pick {
            let new = list[i];
            list.swap(0, i);
            *owned.get_mut(&owner).expect("every node") -= 1;
            *owned.get_mut(&new).expect("every node") += 1;
        }
    }
    // Then chains: an owner above its share hands a partition to a replica at its share,
    // which hands one of its own on, until a node below its share takes one. Each chain is
    // a shortest path found breadth first; each lowers the excess by one.
    while let Some((start, path)) = owner_chain(replicas, &owned, &target) {
        for &(p, to) in &path {
            let list = &mut replicas[p];
            let i = list.iter().position(|&x| x == to).expect("a replica of p");
            list.swap(0, i);
        }
        let &(_, end) = path.last().expect("a chain has a step");
        *owned.get_mut(&start).expect("every node") -= 1;
        *owned.get_mut(&end).expect("every node") += 1;
    }
}

/// A shortest chain of ownership hand-overs from a node above its share of owners to one
/// below it: steps `(partition, new owner)`, each partition owned by the previous step's
/// new owner (the first by the node above its share).
fn owner_chain(
    replicas: &[Vec<NodeId>],
    owned: &BTreeMap<NodeId, usize>,
    target: &BTreeMap<NodeId, usize>,
) -> Option<(NodeId, Vec<(usize, NodeId)>)> {
    let mut by_owner: BTreeMap<NodeId, Vec<usize>> = BTreeMap::new();
    for (p, list) in replicas.iter().enumerate() {
        by_owner.entry(list[0]).or_default().push(p);
    }
    let starts: Vec<NodeId> = owned
        .iter()
        .filter(|&(n, &o)| o > target[n])
        .map(|(&n, _)| n)
        .collect();
    for start in starts {
        // came_from[node] = (partition, previous owner) of the step that reached node.
        let mut came_from: BTreeMap<NodeId, (usize, NodeId)> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut seen = BTreeSet::from([start]);
        while let Some(x) = queue.pop_front() {
            for &p in by_owner.get(&x).map_or(&[][..], Vec::as_slice) {
                for &y in &replicas[p][1..] {
                    if !seen.insert(y) {
                        continue;
                    }
                    came_from.insert(y, (p, x));
                    if owned[&y] < target[&y] {
                        let mut path = Vec::new();
                        let mut at = y;
                        while at != start {
                            let (p, prev) = came_from[&at];
                            path.push((p, at));
                            at = prev;
                        }
                        path.reverse();
                        return Some((start, path));
                    }
                    queue.push_back(y);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: std::ops::RangeInclusive<u64>) -> Vec<(NodeId, NodeSpec)> {
        ids.map(|i| (NodeId::new(i), NodeSpec::new())).collect()
    }

    #[test]
    fn limits_are_refused() {
        assert_eq!(
            PartitionTable::new(0, 1, nodes(1..=3)),
            Err(TableError::Partitions(0))
        );
        assert_eq!(
            PartitionTable::new(8, 0, nodes(1..=3)),
            Err(TableError::Replication(0))
        );
        assert_eq!(
            PartitionTable::new(8, 4, nodes(1..=3)),
            Err(TableError::TooFewNodes {
                nodes: 3,
                replication: 4
            })
        );
        let heavy = [(NodeId::new(1), NodeSpec::new().weight(WEIGHT_MAX + 1))];
        assert!(matches!(
            PartitionTable::new(8, 1, heavy),
            Err(TableError::Weight(..))
        ));
        let t = PartitionTable::new(8, 2, nodes(1..=2)).unwrap();
        assert_eq!(
            t.leave(NodeId::new(2)).unwrap_err(),
            TableError::TooFewNodes {
                nodes: 1,
                replication: 2
            }
        );
        assert_eq!(
            t.leave(NodeId::new(9)).unwrap_err(),
            TableError::Unknown(NodeId::new(9))
        );
    }

    #[test]
    fn shares_round_toward_what_is_held() {
        let w: BTreeMap<_, _> = (1..=3).map(|i| (NodeId::new(i), 1)).collect();
        let caps: BTreeMap<_, _> = (1..=3).map(|i| (NodeId::new(i), 10)).collect();
        let held: BTreeMap<_, _> = [(NodeId::new(3), 4)].into_iter().collect();
        let s = shares(10, &w, &caps, &held);
        assert_eq!(s.values().sum::<usize>(), 10);
        assert_eq!(s[&NodeId::new(3)], 4, "n3 keeps the one above its floor");
    }
}
