//! Data partitioning and distributed transactions: fixed partitions, key-range partitions,
//! and two-phase commit with a lock manager.
//!
//! A data set too large or too busy for one node is split into partitions that live on
//! different nodes. This crate gives the three patterns of *Patterns of Distributed
//! Systems* (Unmesh Joshi) that do it, and keep a transaction that spans partitions atomic:
//!
//! | Pattern | Types | Answers |
//! |---|---|---|
//! | [Fixed Partitions](#fixed-partitions) | [`partition_of`], [`PartitionTable`], [`Redirect`] | which node holds a key, when nodes come and go |
//! | [Key-Range Partitions](#key-range-partitions) | [`RangeTable`], [`RangeCache`], [`SplitPolicy`] | the same, with keys kept in order for range scans |
//! | [Two-Phase Commit](#two-phase-commit) | [`Coordinator`], [`Participant`], [`LockManager`] | how a write to several partitions happens everywhere or nowhere |
//!
//! # What it does not do
//!
//! No I/O. Tables are values: a change returns the next version, and sending it to the nodes
//! is the caller's business. The coordinator and participants are state machines on
//! `synod-node`'s contract (inputs in with the time, effects out, persistence acknowledged
//! by token): the caller sends, persists and wakes them as they ask. Nothing here copies a
//! partition's data, replicates a partition (a reference system runs a Raft group or a
//! quorum per partition) or keeps versions of values (`synod-quorum`'s versioned store
//! does).
//!
//! # Fixed Partitions
//!
//! **What.** Many more partitions than nodes, fixed up front; a key's partition is a stable
//! hash of the key, so it never changes. What changes is which nodes hold a partition: a
//! versioned [`PartitionTable`] maps each partition to an ordered replica list (the first is
//! the owner), balanced by weight, with replicas spread over zones. When a node joins or
//! leaves, whole partitions move, as few as possible: a join copies only the new node's
//! share onto it, a leave only the departed node's replicas. A request routed with an old
//! table is answered with a [`Redirect`] naming the owner now. **When.** Keys are looked up
//! one at a time (no range scans), and the cluster grows and shrinks. **Who.** Hazelcast
//! (271 partitions), Apache Ignite (1,024), Redis Cluster (16,384 slots), Riak (a ring of
//! 64), Cassandra and Akka's sharding.
//!
//! The key-to-partition function is FNV-1a with MurmurHash3's finalizer, scaled to the
//! partition count ([`key_hash`] documents it); the tests pin it with vectors, and it never
//! changes.
//!
//! ```
//! use synod_partitioning::{Lookup, NodeId, NodeSpec, PartitionTable, TableError};
//!
//! let nodes = (1..=3).map(|i| (NodeId::new(i), NodeSpec::new()));
//! let v1 = PartitionTable::new(271, 2, nodes)?; // 271 partitions, 2 replicas each
//! let p = v1.partition_of(b"user:42");
//! let owner = v1.owner(p);
//! assert_eq!(v1.replicas(p).len(), 2);
//!
//! // A fourth node joins: it takes its share (542 / 4, rounded), and nothing else moves.
//! let (v2, moved) = v1.join(NodeId::new(4), NodeSpec::new())?;
//! assert_eq!(moved.replicas_added, v2.load(NodeId::new(4)));
//! assert!((135..=136).contains(&moved.replicas_added));
//!
//! // A client still routing with version 1 is redirected to the owner in version 2.
//! match v2.lookup(b"user:42", v1.version()) {
//!     Lookup::Redirect(r) => assert_eq!(r.owner, v2.owner(p)),
//!     Lookup::Current { .. } => unreachable!("version 1 is stale"),
//! }
//! // And a node that does not own the partition refuses the write.
//! let not_owner = (1..=4).map(NodeId::new).find(|&n| n != v2.owner(p)).unwrap();
//! assert!(v2.admit(not_owner, p).is_err());
//! # let _ = owner;
//! # Ok::<(), TableError>(())
//! ```
//!
//! # Key-Range Partitions
//!
//! **What.** The keys, in order, are cut into contiguous ranges: the first starts at the
//! empty key, each ends where the next starts, the last has no end. A range that grows
//! too large or too busy is split ([`SplitPolicy`] finds the key in the middle of its size
//! or load), and small neighbours are merged. Every split, merge or move bumps the
//! [`Generation`] of the ranges it changes, so a request that names a stale range is
//! answered with a [`RangeRedirect`] carrying the range now (TiKV's region epoch), and a
//! request that names a newer generation than the node has is told the node is behind
//! ([`RangeMiss::Behind`]) rather than taught an older range. A client's [`RangeCache`]
//! never replaces a range by an older version of it. A scan
//! resumes from a key, never from a range: a range that splits between two pages of a scan
//! cannot make it miss or repeat a key. **When.** Range scans matter (ordered keys,
//! prefixes, time series), or the key distribution is unknown up front. **Who.**
//! CockroachDB (split at 512 MiB, or by load), TiKV regions, HBase regions, Bigtable
//! tablets, Spanner splits.
//!
//! ```
//! use std::collections::BTreeMap;
//! use synod_partitioning::{NodeId, RangeCache, RangeError, RangeMiss, RangeTable, ScanRequest};
//!
//! let mut table = RangeTable::new(NodeId::new(1));
//! let data: BTreeMap<Vec<u8>, u32> = (0u8..10).map(|i| (vec![b'a' + i], u32::from(i))).collect();
//! let client = RangeCache::from_table(&table); // the client's copy, about to go stale
//!
//! // A scan reads its first page...
//! let first = table.locate(b"a").clone();
//! let request = |from: &[u8], r: &synod_partitioning::KeyRange| ScanRequest {
//!     range: r.id, generation: r.generation, from: from.to_vec(), end: None,
//! };
//! let page = table.scan(&data, &request(b"a", &first), 3).expect("current");
//! assert_eq!(page.entries.len(), 3);
//! let next = page.next.expect("more to come");
//!
//! // ...the range splits between two pages...
//! table.split(first.id, b"e")?;
//! let stale = client.locate(&next).unwrap().clone();
//! let Err(RangeMiss::Redirect(redirect)) = table.scan(&data, &request(&next, &stale), 3) else {
//!     panic!("a stale range is redirected");
//! };
//! assert_eq!(redirect.current.end.as_deref(), Some(&b"e"[..]));
//!
//! // ...and the scan goes on from the key it reached, with the range it was told of.
//! let mut seen = page.entries;
//! let mut from = Some(next);
//! while let Some(key) = from {
//!     let page = table.scan(&data, &request(&key, table.locate(&key)), 3).expect("current");
//!     seen.extend(page.entries);
//!     from = page.next;
//! }
//! assert_eq!(seen.len(), 10, "no key missed or repeated");
//! # Ok::<(), RangeError>(())
//! ```
//!
//! # Two-Phase Commit
//!
//! **What.** A transaction that writes to several partitions commits on all or none. Its
//! [`Coordinator`] sends each [`Participant`] a prepare with its operations; a participant
//! takes the locks they need from its [`LockManager`], computes the new values, makes them
//! and the locks durable, and only then votes yes. All yes: the coordinator decides commit;
//! anything else: abort. The decision is made durable before anyone hears it, and sent
//! until every participant acknowledges. A participant that voted yes never aborts on its
//! own: it holds its locks, survives restarts still prepared, and asks the coordinator
//! again while it waits. A restarted coordinator resends every decision not acknowledged
//! and presumes abort for a transaction it has no record of. Deadlocks are avoided by
//! wound-wait (an older transaction aborts the younger ones in its way; Spanner) or
//! wait-die ([`DeadlockPolicy`]); a transaction retried keeps its first attempt's age, so
//! it eventually wins. **When.** A write must span partitions atomically, and blocking
//! while a coordinator is down is acceptable (a coordinator replicated by consensus removes
//! that). **Who.** XA and every relational database's distributed transactions, Spanner and
//! CockroachDB (their coordinators' decisions replicated), Kafka's transactions.
//!
//! One transfer, stepped by hand: the participant's yes vote waits for its prepare record,
//! the coordinator's decision for its own.
//!
//! ```
//! use synod_node::{Effect, Input, NodeId, Protocol, RequestId, Time};
//! use synod_partitioning::{
//!     Coordinator, CoordinatorConfig, Op, Participant, ParticipantConfig, TxnNode, TxnRequest,
//!     TxnResponse, participant_of,
//! };
//!
//! let parts = [NodeId::new(2), NodeId::new(3)];
//! let mut nodes = vec![TxnNode::Coordinator(Coordinator::new(CoordinatorConfig::new(
//!     NodeId::new(1),
//!     parts.to_vec(),
//! )))];
//! for p in parts {
//!     nodes.push(TxnNode::Participant(Participant::new(
//!         ParticipantConfig::new(p).initial_value(100),
//!     )));
//! }
//! // Two accounts on different participants.
//! let (a, b) = (0..).map(|k| (k, k + 1))
//!     .find(|&(a, b)| participant_of(a, &parts) != participant_of(b, &parts))
//!     .unwrap();
//! let now = Time::from_millis(1);
//! let ops = vec![Op::Add(a, -30), Op::Add(b, 30)];
//! nodes[0].handle(now, Input::Request { id: RequestId(1), request: TxnRequest { ops } });
//!
//! // A toy driver: every persist is durable at once, every message delivered in order.
//! let mut inbox = std::collections::VecDeque::new();
//! let mut reply = None;
//! loop {
//!     let mut busy = false;
//!     for node in &mut nodes {
//!         let mut synced = None;
//!         while let Some(effect) = node.poll() {
//!             match effect {
//!                 Effect::Send { to, message } => inbox.push_back((node.id(), to, message)),
//!                 Effect::Persist { token, .. } => synced = Some(token), // "written"
//!                 Effect::Reply { response, .. } => reply = Some(response),
//!                 Effect::Apply(_) | Effect::WakeAt(_) => {}
//!             }
//!         }
//!         if let Some(token) = synced {
//!             node.handle(now, Input::Persisted(token)); // "synced"
//!             busy = true;
//!         }
//!     }
//!     if let Some((from, to, message)) = inbox.pop_front() {
//!         let i = (to.get() - 1) as usize;
//!         nodes[i].handle(now, Input::Message { from, message });
//!     } else if !busy {
//!         break;
//!     }
//! }
//! assert_eq!(reply, Some(TxnResponse::Committed { reads: vec![] }));
//! let balance = |k| nodes.iter().find_map(|n| match n {
//!     TxnNode::Participant(p) if p.id() == participant_of(k, &parts) => Some(p.value(k)),
//!     _ => None,
//! });
//! assert_eq!((balance(a), balance(b)), (Some(70), Some(130)));
//! ```
//!
//! The `synod` program of the `synod-examples` crate runs the same state machines under
//! `synod-sim` (`synod sim twopc`: a bank with audits under every fault), and its tests
//! crash the coordinator and prepared participants at every point of a transaction, run a
//! workload built to deadlock, and catch the two deliberately broken variants. `synod sim
//! partitions` and `synod sim ranges` run clients with stale tables against these tables
//! while they change: every write reaches its key's owner through redirects, and scans
//! paged across splits, merges and moves miss and repeat no key.
//!
//! # Crate features
//!
//! - `broken` (off by default): the deliberately broken variants,
//!   `CoordinatorConfig::broken_send_before_durable` and
//!   `ParticipantConfig::broken_abort_after_yes`, which exist only to show that the
//!   crate's checkers catch what they break. Never in a build that serves data.
//!
//! # Sibling crates
//!
//! `synod-node` holds the contract and [`NodeId`]; `synod-sim` runs the two-phase commit
//! state machines under deterministic simulation; `synod-clocks` has the hybrid timestamps
//! a transactional store orders its versions by; `synod-consensus` the Raft groups that
//! would replicate each partition.

mod coordinator;
mod fixed;
mod lock;
mod participant;
mod range;
mod txn;
mod txn_node;

pub use coordinator::{
    ATTEMPTS_MAX_DEFAULT, Coordinator, CoordinatorConfig, OPS_MAX, PREPARE_TIMEOUT_MS_DEFAULT,
    RESEND_MS_DEFAULT, TXNS_MAX_DEFAULT,
};
pub use fixed::{
    Lookup, Movement, NODES_MAX, NodeSpec, PARTITIONS_MAX, PartitionId, PartitionTable,
    REPLICATION_MAX, Redirect, TableError, TableVersion, TableWireError, WEIGHT_MAX, Zone,
    key_hash, partition_of,
};
pub use lock::{Acquire, DeadlockPolicy, LockManager, LockMode, Released};
pub use participant::{
    FINISHED_MAX_DEFAULT, KEYS_LOCKED_MAX_DEFAULT, LOCK_WAIT_MS_DEFAULT, Participant,
    ParticipantConfig, QUERY_AFTER_MS_DEFAULT, WAITING_MAX_DEFAULT,
};
pub use range::{
    Generation, KEY_BYTES_MAX, KeyRange, RANGES_MAX, RangeCache, RangeError, RangeId, RangeMiss,
    RangeRedirect, RangeTable, RangeTableWireError, ScanPage, ScanRequest, SplitPolicy,
};
pub use synod_node::NodeId;
pub use txn::{
    CoordinatorRecord, Key, Op, ParticipantRecord, Refusal, TxnId, TxnMessage, TxnOutcome,
    TxnRequest, TxnResponse, TxnWrite, Value, Vote, participant_of,
};
pub use txn_node::TxnNode;
