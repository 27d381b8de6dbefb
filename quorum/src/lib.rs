//! Quorums and versioned values, as I/O-free state machines.
//!
//! This crate decides when *enough* nodes have answered, and keeps the versions a
//! replicated value goes through. It owns two patterns of *Patterns of Distributed
//! Systems* (Unmesh Joshi), **Majority Quorum** and **Versioned Value**, and builds two
//! replication protocols on them: a Dynamo-style quorum read/write [`Coordinator`] for
//! leaderless stores, and the linearizable [`AbdNode`] register.
//!
//! Everything here is logic without I/O: nothing reads a clock, opens a socket or touches a
//! file. The protocols take messages and the time as inputs and return what to send as
//! effects, which the caller drains and carries out; the simulator (`synod-sim`) and real
//! drivers run the same code.
//!
//! # Main types
//!
//! | Type | What it is |
//! |---|---|
//! | [`MajorityConfig`], [`JointConfig`], [`FlexibleConfig`], [`Threshold`] | Quorum systems, validated at construction; all implement [`Quorum`] |
//! | [`ResponseTracker`] | Counts one response per voter, decides [`Outcome::Won`] or [`Outcome::Lost`] as early as possible |
//! | [`Quorum::committed_index`] | The largest index held by a quorum (Raft's commit index) |
//! | [`VersionedStore`] | An ordered multi-version store: latest and as-of reads, scans at a version, GC |
//! | [`Coordinator`] | One node of a leaderless store, a `synod_node::Protocol`: [`StoreRequest`] in, [`StoreResponse`] out; consistency levels, read repair, hints |
//! | [`LastWriteWins`], [`VersionVectors`] | How the coordinator resolves conflicting versions ([`Resolver`]) |
//! | [`AbdNode`] | One node of a linearizable ABD register, a `synod_node::Protocol`: [`AbdRequest`] in, [`AbdResponse`] out, [`AbdWrite`] persisted |
//! | [`NodeId`] | A node's identity (the same type as `synod_clocks::NodeId`) |
//! | [`Incarnation`] | One start of a node, required by both protocols' configurations |
//!
//! # Majority Quorum
//!
//! **What.** A decision (a leader elected, an entry committed, a write acknowledged) is
//! taken once a *quorum* agrees: `floor(n/2) + 1` of `n` nodes. Any two majorities share a
//! node, so whatever one majority decided, the next one hears of it: that overlap is the
//! whole safety argument of Raft, Paxos and ABD. A majority of `n` tolerates
//! `(n - 1) / 2` failures.
//!
//! **When.** Whenever replicas must not diverge: elections, log replication, quorum reads
//! and writes. During a membership change use a *joint* quorum, a majority of the old
//! configuration *and* of the new one, so that neither can decide alone
//! ([`JointConfig`]). Where reads and writes have different costs, *flexible* quorums pick
//! a read size `R` and a write size `W` with `R + W > N` ([`FlexibleConfig`] checks it).
//!
//! **Who uses it.** etcd, ZooKeeper, Consul (Raft and Zab majorities); raft-rs, whose
//! `quorum` module has the same majority and joint configurations and commit-index
//! computation as [`Quorum::committed_index`]; Cassandra and ScyllaDB (`QUORUM`,
//! `LOCAL_QUORUM`); Flexible Paxos.
//!
//! ```
//! use synod_quorum::{JointConfig, MajorityConfig, NodeId, Outcome, Quorum, ResponseTracker};
//!
//! let nodes = |ids: &[u64]| ids.iter().copied().map(NodeId::new).collect::<Vec<_>>();
//! let config = MajorityConfig::new(nodes(&[1, 2, 3, 4, 5]))?;
//!
//! // An election: one vote per node, decided as soon as it can be.
//! let mut votes = ResponseTracker::new(config.clone());
//! votes.record(NodeId::new(1), true);
//! votes.record(NodeId::new(2), false);
//! votes.record(NodeId::new(3), false);
//! assert_eq!(votes.outcome(), Outcome::Pending); // n4 and n5 could still make it 3
//! votes.record(NodeId::new(4), false);
//! let Outcome::Lost(why) = votes.outcome() else { unreachable!() };
//! assert_eq!(why.rejected(), 3); // and `why` prints the arithmetic
//!
//! // The commit index: the largest log index a majority has stored.
//! let matched = [9u64, 7, 7, 3, 12];
//! assert_eq!(config.committed_index(|n| Some(matched[n.get() as usize - 1])), Some(7));
//!
//! // During a change from {1,2,3,4,5} to {4,5,6}, both majorities must hold it.
//! let joint = JointConfig::joint(config, MajorityConfig::new(nodes(&[4, 5, 6]))?);
//! let matched = |n: NodeId| [9u64, 7, 7, 3, 12, 2].get(n.get() as usize - 1).copied();
//! assert_eq!(joint.committed_index(matched), Some(3));
//! # Ok::<(), synod_quorum::ConfigError>(())
//! ```
//!
//! # Versioned Value
//!
//! **What.** A write does not overwrite: it adds a version `(key, version) -> value`, kept
//! in key order and, within a key, version order. A read asks for the latest version or for
//! the newest one *as of* some version, which gives a reader a consistent snapshot while
//! writers go on. Deletes are versions too (tombstones). Old versions are garbage-collected
//! below a mark that no reader needs any more.
//!
//! **When.** Multi-version concurrency control (snapshot reads, transactions reading at a
//! timestamp), keeping history for watches, or serving reads at a replica's applied
//! version. The version is whatever orders your writes: a log index, a counter, a
//! `synod_clocks::HybridTimestamp`.
//!
//! **Who uses it.** CockroachDB's MVCC (keys suffixed with hybrid-logical timestamps,
//! garbage-collected after a TTL), etcd's revision-keyed store, Spanner and TiKV (reads at
//! a timestamp), FoundationDB's storage servers (five seconds of versions).
//!
//! ```
//! use synod_quorum::VersionedStore;
//!
//! let mut store: VersionedStore<&str, i64, u64> = VersionedStore::new();
//! store.put("alice", 1, 100)?; // version 1: alice has 100
//! store.put("bob", 1, 50)?;
//! store.put("alice", 2, 70)?; // version 2: alice pays bob 30
//! store.put("bob", 2, 80)?;
//! // A snapshot at version 1 sees the balances before the transfer, total 150.
//! let total: i64 = store.scan_as_of("a".."z", &1)?.map(|(_, _, v)| *v).sum();
//! assert_eq!(total, 150);
//! assert_eq!(store.latest("alice"), Some((&2, &70)));
//! store.collect_garbage(2); // nobody reads below version 2 any more
//! assert_eq!(store.version_count(), 2);
//! # Ok::<(), synod_quorum::VersionedError<u64>>(())
//! ```
//!
//! # Quorum reads and writes, and the ABD register
//!
//! Both replicate a value over `N` nodes with no leader, and both wait for a quorum. They
//! promise different things.
//!
//! The [`Coordinator`] is how Dynamo, Cassandra, ScyllaDB and Riak serve requests: each
//! operation picks a [`Consistency`] level (`ONE`, `QUORUM`, `ALL`), a write is sent to
//! every replica and acknowledged once that many answered, a read merges the versions that
//! many replicas return. It is fast (one round trip) and stays available with replicas
//! down (hinted writes, [`ReadRepair`] to converge them later), but it is **not
//! linearizable**: two reads concurrent with a write may see new then old, a failed write
//! may still surface later, and concurrent writes conflict. Conflicts are resolved by a
//! [`Resolver`]: [`LastWriteWins`] on timestamps (Cassandra: simple, but a skewed clock
//! silently discards a later write) or [`VersionVectors`] (Riak: concurrent writes come
//! back as *siblings* for the application to merge).
//!
//! The [`AbdNode`] register (Attiya, Bar-Noy and Dolev) is **linearizable**: every
//! operation appears to take effect at one instant between its call and its return. It
//! pays two round trips per operation: a write first asks a quorum for the newest tag,
//! and a read, after finding the newest value, *writes it back* to a quorum before
//! returning it, so no later read can return anything older. It has one value per
//! register, no conflicts and no siblings, and it blocks (times out) rather than answer
//! without a quorum. This crate's fault tests show both halves of that claim: the register
//! passes the simulator's linearizability checker on thousands of seeds with messages lost,
//! duplicated, reordered and partitioned and nodes crashing, and fails it quickly without
//! the write-back or with quorums that need not overlap.
//!
//! ```
//! use synod_clocks::VersionVector;
//! use synod_node::{Effect, Input, Protocol, Time};
//! use synod_quorum::{
//!     Consistency, Coordinator, CoordinatorConfig, Incarnation, NodeId, Placement, RequestId,
//!     StoreRequest, StoreResponse, VersionVectors,
//! };
//!
//! // A three-replica leaderless store with version vectors; a perfect network, and one
//! // clock reading for every node (version vectors do not look at it).
//! let now = Time::from_secs(1_700_000_000);
//! let ids = [1, 2, 3].map(NodeId::new);
//! let mut nodes: Vec<_> = ids
//!     .iter()
//!     .map(|&id| {
//!         let config = CoordinatorConfig::new(id, Incarnation::new(1)); // the first start
//!         Coordinator::new(config, VersionVectors::new())
//!     })
//!     .collect();
//! type Node = Coordinator<&'static str, VersionVectors<&'static str>>;
//! let run = |nodes: &mut Vec<Node>| {
//!     let mut done = Vec::new();
//!     loop {
//!         let mut sent = Vec::new();
//!         for (i, node) in nodes.iter_mut().enumerate() {
//!             while let Some(effect) = node.poll() {
//!                 match effect {
//!                     Effect::Send { to, message } => sent.push((ids[i], to, message)),
//!                     Effect::Reply { response, .. } => done.push(response),
//!                     _ => {}
//!                 }
//!             }
//!         }
//!         if sent.is_empty() {
//!             return done;
//!         }
//!         for (from, to, message) in sent {
//!             nodes[to.get() as usize - 1].handle(now, Input::Message { from, message });
//!         }
//!     }
//! };
//! let placement = Placement::new(ids)?;
//! // Two clients write the same key without reading it first, through different nodes.
//! let write = |request: u64, value| {
//!     let request = RequestId::new(request);
//!     let write = (VersionVector::new(), value); // blind: no context
//!     let (key, consistency, placement) = ("cart", Consistency::Quorum, placement.clone());
//!     StoreRequest::Write { request, key, write, consistency, placement }
//! };
//! let id = synod_node::RequestId;
//! nodes[0].handle(now, Input::Request { id: id(1), request: write(1, "milk") });
//! nodes[1].handle(now, Input::Request { id: id(2), request: write(2, "eggs") });
//! run(&mut nodes);
//! // A read returns both as siblings, with the context to resolve them.
//! let read = StoreRequest::Read { key: "cart", consistency: Consistency::Quorum, placement };
//! nodes[2].handle(now, Input::Request { id: id(3), request: read });
//! let Some(StoreResponse::Read(Ok(siblings))) = run(&mut nodes).pop() else {
//!     unreachable!()
//! };
//! let mut values: Vec<_> = siblings.values().copied().collect();
//! values.sort();
//! assert_eq!(values, ["eggs", "milk"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The ABD register, by contrast, has a single value per register and runs each operation
//! as two quorum phases; see [`AbdNode`] for a runnable example and the [`abd`] module for
//! how to drive it. It follows the node contract of `synod-node` (`synod_node::Protocol`):
//! requests, messages, persistence acknowledgements and wake-ups in with the time, effects
//! out of one `poll`, its replica state persisted as an effect ([`AbdWrite`]) and every
//! answer that depends on it held until the write is durable.
//!
//! # What it does not do
//!
//! - No I/O and no timers of its own: callers deliver messages and requests, persist what
//!   the [`AbdNode`] asks to persist, wake both when they ask, and decide which nodes are
//!   down (a [`StoreRequest::NodeFailed`]). The [`Coordinator`]'s wall clock is its `now`
//!   offset by a configured epoch ([`CoordinatorConfig::wall_clock_at_zero`]), and it
//!   refuses last-write-wins timestamps further ahead of it than a configured drift bound.
//! - No durable storage for the [`Coordinator`]'s replica data: it lives in memory, and a
//!   node that restarts starts empty (with a fresh [`Incarnation`], so that answers from
//!   before the restart are not counted for its new operations).
//! - No placement: the caller says which nodes replicate a key ([`Placement`]);
//!   partitioning belongs to `synod-partitioning`.
//! - No anti-entropy (Merkle-tree repair): replicas converge through read repair and
//!   hinted hand-off only.
//! - No `ANY`, `LOCAL_QUORUM` or `EACH_QUORUM` levels (no data-centre awareness), no
//!   sloppy quorums (a hint never counts towards a level), no speculative retries.
//!
//! # Testing
//!
//! `cargo test -p synod-quorum` runs property tests of the quorum arithmetic against brute
//! force over every subset of voters, a model-based test of the versioned store, scenario
//! tests of the coordinator and a randomised one (retries, duplicated, reordered and lost
//! messages: no write applied twice or lost, over 300 schedules), last-write-wins against a
//! model (replicas merging in any order converge on the largest timestamp, and at a tie on
//! the delete), a clock far ahead refused wherever its timestamps arrive, tombstones and
//! hints collected after their grace period with every entry count bounded over a long
//! run, the clock-skew
//! demonstration (`tests/it/skew.rs`), and the ABD register under `synod-sim`
//! (`SYNOD_SEEDS=<n>`, default 2000 seeds; `SYNOD_SEED=<s>` replays one and a failure prints
//! the command), where the broken variants (R + W <= N and no read write-back, each on three
//! and five nodes; a replica acknowledging an update before it is durable, on three nodes)
//! are caught.
//!
//! # Crate features
//!
//! - `broken` (off by default): the deliberately broken variants, each named `broken_...`
//!   (`FlexibleConfig::broken_without_overlap_check`, `AbdConfig::broken_without_write_back`,
//!   `AbdConfig::broken_ack_before_persist`), which exist to show that the tests catch what
//!   they break. The crate's own tests enable it; never enable it in a build that serves data.
//!
//! # Sibling crates
//!
//! - `synod-clocks` provides [`NodeId`], the hybrid timestamps that order last-write-wins
//!   writes and versions, and the dotted version vectors behind [`VersionVectors`].
//! - `synod-consensus` counts votes and commits with [`ResponseTracker`],
//!   [`JointConfig`] and [`Quorum::committed_index`].
//! - `synod-node` defines the contract the [`AbdNode`] follows.
//! - `synod-sim` runs this crate's register in its simulator, through its generic adapter
//!   for the contract (a dev-dependency only).

pub mod abd;
pub mod config;
pub mod coordinator;
mod node;
pub mod resolve;
pub mod tracker;
pub mod versioned;

pub use abd::{
    ABD_HELD_REPLIES_MAX, AbdConfig, AbdConfigError, AbdError, AbdMessage, AbdNode, AbdOpId,
    AbdRequest, AbdResponse, AbdWrite, Tag,
};
pub use config::{
    ConfigError, FlexibleConfig, JointConfig, MajorityConfig, Quorum, Threshold, majority_of,
};
pub use coordinator::{
    CLOCK_DRIFT_MAX_LIMIT_MS, CLOCK_DRIFT_MAX_MS, Consistency, Coordinator, CoordinatorConfig,
    CoordinatorStats, Placement, ReadRepair, RequestId, StoreConfigError, StoreError, StoreMessage,
    StoreOpId, StoreRequest, StoreResponse, WriteReport,
};
pub use node::{Incarnation, NodeId};
pub use resolve::{LastWriteWins, ResolveError, Resolver, Timestamp, VersionVectors};
pub use tracker::{Outcome, Part, QuorumUnreachable, Recorded, ResponseTracker};
pub use versioned::{GcStats, VersionedError, VersionedStore};
