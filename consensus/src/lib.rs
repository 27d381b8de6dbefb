//! Consensus: a Raft replicated log, Paxos, client sessions and follower reads, as
//! state machines that do no I/O.
//!
//! `synod-consensus` is the heart of Synod: the part that makes several machines agree on
//! one ordered log of commands, so that each can apply them to a copy of the same state
//! machine and the copies never diverge, whatever crashes, partitions and delays the
//! network throws at them. It is what etcd, TiKV, Consul and Kafka's KRaft controller are
//! built on.
//!
//! Like every protocol crate in Synod, it does no I/O. A [`Node`] never opens a socket,
//! touches a file, reads a clock or draws OS randomness. It follows the `synod-node`
//! contract ([`synod_node::Protocol`]): inputs arrive with the time they happened at
//! ([`Protocol::handle`](synod_node::Protocol::handle): a message, a client [`Request`], a
//! persistence acknowledgement, a wake-up), and what the node wants done comes out of
//! [`Protocol::poll`](synod_node::Protocol::poll) as effects: messages to send, a
//! [`RaftWrite`] to make durable with its token, replies, entries to [`Apply`], and when to
//! wake it. The node keeps its log in memory; its durable store ([`LogStore`]) is the
//! driver's, written from the node's [`RaftWrite`]s and read only when the node is built
//! again after a restart. The same node runs in a real process and in `synod-sim`'s
//! deterministic simulation; this is the shape of etcd's raft, raft-rs's `RawNode`/`Ready`
//! and quinn-proto. The crate's `simulated_cluster` example is a worked one: three nodes on
//! the production `WalLogStore`, under the simulator's crashes and partitions through
//! `synod-sim`'s generic `ProtocolNode`, checked for State Machine Safety
//! (`cargo run -p synod-consensus --features wal --example simulated_cluster`).
//!
//! # Driving a node
//!
//! Through the contract, the calls are:
//!
//! 1. **Build** the node from its [`Config`] and the log its store recovered
//!    ([`Node::new`]; a new node's log is [`MemLogStore::new`] with the initial membership,
//!    a restarted one's what `WalLogStore::open` or [`journal::replay`] returns).
//! 2. **Handle** inputs with the time: every input first runs the Raft ticks due at that
//!    time (one per [`ConfigBuilder::tick_interval_us`]); [`Input::Wake`](synod_node::Input::Wake)
//!    at the time the last [`Effect::WakeAt`](synod_node::Effect::WakeAt) asked for brings
//!    them when nothing else arrives. A node just built asks to be woken at once, before any
//!    input, so its clock starts when it starts even if no message reaches it.
//! 3. **Drain** [`Protocol::poll`](synod_node::Protocol::poll) until `None`, in order:
//!    - **persist**: apply the [`RaftWrite`] to the store ([`LogStore::apply`]) and sync
//!      (one sync may cover several), then hand back
//!      [`Input::Persisted`](synod_node::Input::Persisted) with the token;
//!    - **send**: the node holds back any message that depends on an unpersisted write (a
//!      vote, an append acknowledgement) until that write is acknowledged, so these are
//!      always safe to send at once;
//!    - **reply** to requests, and **apply**: a snapshot to restore, committed entries in
//!      order, then confirmed reads (serve one once its index is applied).
//!
//! The same node can also be driven by hand, raft-rs style: [`Node::tick`], [`Node::step`],
//! [`Node::propose`], [`Node::read_index`], then [`Node::ready`] for a [`Ready`] holding the
//! same things, and [`Node::persisted`]. The crate's own tests do, to control every tick.
//!
//! A three-node cluster in one process, from election to a command applied everywhere:
//!
//! ```
//! use std::collections::VecDeque;
//!
//! use bytes::Bytes;
//! use synod_consensus::{
//!     Apply, Config, LogStore, MemLogStore, Membership, Message, Node, NodeId, Payload,
//!     Request, Response, Role,
//! };
//! use synod_node::{Effect, Input, Protocol, RequestId, Time};
//!
//! /// Carries out everything `node` wants done: persist to its disk and acknowledge, send,
//! /// apply; returns the replies.
//! fn drain(
//!     now: Time,
//!     node: &mut Node,
//!     disk: &mut MemLogStore,
//!     network: &mut VecDeque<Message>,
//!     applied: &mut Vec<Bytes>,
//! ) -> Vec<Result<Response, synod_consensus::RequestError>> {
//!     let mut replies = Vec::new();
//!     while let Some(effect) = node.poll() {
//!         match effect {
//!             Effect::Persist { token, write } => {
//!                 disk.apply(&write);
//!                 disk.sync(); // a real store would fsync here, once for many writes
//!                 node.handle(now, Input::Persisted(token));
//!             }
//!             Effect::Send { message, .. } => network.push_back(message),
//!             Effect::Apply(Apply::Entry(entry)) => {
//!                 if let Payload::Command(data) = entry.payload {
//!                     applied.push(data);
//!                 }
//!             }
//!             Effect::Reply { response, .. } => replies.push(response),
//!             Effect::Apply(_) | Effect::WakeAt(_) => {}
//!         }
//!     }
//!     replies
//! }
//!
//! let ids = [1, 2, 3].map(NodeId::new);
//! let membership = Membership::new(ids, [])?;
//! let mut nodes = Vec::new();
//! let mut disks = Vec::new();
//! for id in ids {
//!     let config = Config::builder(id)
//!         .election_timeout_ticks(10..20)
//!         .heartbeat_interval_ticks(2)
//!         .tick_interval_us(10_000)
//!         .build()?;
//!     nodes.push(Node::new(config, MemLogStore::new(membership.clone())));
//!     disks.push(MemLogStore::new(membership.clone()));
//! }
//! let mut network = VecDeque::new();
//! let mut applied = vec![Vec::new(); 3];
//! let mut now = Time::ZERO;
//! let mut run = |nodes: &mut Vec<Node>, now: &mut Time, ms: u64| {
//!     for _ in 0..ms / 10 {
//!         *now = *now + std::time::Duration::from_millis(10);
//!         for (i, node) in nodes.iter_mut().enumerate() {
//!             node.handle(*now, Input::Wake);
//!             drain(*now, node, &mut disks[i], &mut network, &mut applied[i]);
//!         }
//!         while let Some(message) = network.pop_front() {
//!             let i = (message.to.get() - 1) as usize;
//!             nodes[i].handle(*now, Input::Message { from: message.from, message });
//!             drain(*now, &mut nodes[i], &mut disks[i], &mut network, &mut applied[i]);
//!         }
//!     }
//! };
//! run(&mut nodes, &mut now, 500); // randomized election timeouts elect a leader
//! let leader = nodes.iter().position(|n| n.role() == Role::Leader).expect("a leader");
//! let propose = Request::Propose(Bytes::from_static(b"x = 1"));
//! nodes[leader].handle(now, Input::Request { id: RequestId(1), request: propose });
//! run(&mut nodes, &mut now, 50);
//! for copy in &applied {
//!     assert_eq!(copy, &[Bytes::from_static(b"x = 1")]);
//! }
//! // A follower refuses proposals, and says who leads.
//! let follower = (leader + 1) % 3;
//! let request = Request::Propose(Bytes::from_static(b"y = 2"));
//! nodes[follower].handle(now, Input::Request { id: RequestId(2), request });
//! let mut sink = (VecDeque::new(), Vec::new());
//! let replies = drain(now, &mut nodes[follower], &mut disks[follower], &mut sink.0, &mut sink.1);
//! let err = replies[0].as_ref().unwrap_err();
//! assert_eq!(err.to_string(), format!("not the leader; the leader is {}", ids[leader]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The patterns
//!
//! From *Patterns of Distributed Systems* (Unmesh Joshi). Each with what it is, when to use
//! it, and who uses it.
//!
//! **Leader and Followers.** One node, elected by a majority, orders all writes; the others
//! follow. A follower whose leader goes quiet for its election timeout (drawn at random
//! from [`ConfigBuilder::election_timeout_ticks`], with the seed from
//! [`ConfigBuilder::seed`], so that nodes rarely time out together) stands for election. A
//! node votes once per term, and only for a candidate whose log is at least as up to date
//! as its own (last term, then last index), so a winner holds every committed entry.
//! *Pre-vote* ([`ConfigBuilder::pre_vote`]) first asks whether the node could win without
//! raising its term, so a node returning from a partition does not depose a healthy leader;
//! *check-quorum* ([`ConfigBuilder::check_quorum`]) makes a leader that has lost its
//! majority step down, and followers that hear from a leader ignore elections. Leadership
//! can be handed over with [`Node::transfer_leadership`]. Used by etcd, TiKV, Consul,
//! CockroachDB (Raft), Kafka's KRaft controller, ZooKeeper (Zab), MongoDB replica sets.
//!
//! **HeartBeat.** The leader sends a heartbeat every
//! [`ConfigBuilder::heartbeat_interval_ticks`], well under the election timeout, so
//! followers know it is alive; heartbeats also carry the commit index and confirm
//! leadership for reads. Every leader-based system above does this.
//!
//! **Generation Clock.** The [`Term`] (synod-clocks' `Generation`) numbers leaderships.
//! Every message carries the sender's term; a lower one is rejected, a higher one makes
//! the receiver adopt it and step down. The node writes its term and vote to the store
//! ([`HardState`]) and uses them (votes, answers) only once they are acknowledged durable,
//! so a restarted node never votes twice in a term. Raft's term, Zab's epoch, Kafka's
//! controller and leader epochs, fencing tokens.
//!
//! **High-Water Mark.** The commit index ([`Node::commit_index`]): the highest entry stored
//! durably on a majority. The leader advances it only through an entry of its own term
//! (an older entry on a majority can still be overwritten: the paper's Figure 8), which is
//! why each new leader appends a no-op ([`Payload::Noop`]); it counts its own copy only
//! once its own store has acknowledged it. Followers learn the mark from the leader, on its
//! next append or heartbeat, or at its next tick if neither went out (not in a message of
//! its own per commit), and at once when a read they forwarded waits for it; only entries
//! below it are applied. Kafka's high watermark, Raft's commitIndex.
//!
//! **Replicated Log.** The leader appends entries and sends them with the index and term of
//! the entry before them; a follower accepts only if its log has that entry (so logs that
//! agree on one entry agree on everything before it), replacing a conflicting suffix. A
//! rejection carries a hint so the leader skips a whole conflicting term per round trip.
//! Appends are pipelined, at most [`ConfigBuilder::in_flight_max`] messages of at most
//! [`ConfigBuilder::append_bytes_max`] bytes in flight per follower. A follower whose
//! entries were compacted away receives a snapshot in chunks
//! ([`ConfigBuilder::snapshot_chunk_bytes_max`], at most
//! [`ConfigBuilder::snapshot_bytes_max`] in all); [`Node::compact`] takes a snapshot and
//! moves the Low-Water Mark. Membership changes go through the log one voter at a time,
//! with learners ([`membership`]). The durable store is a small trait on the driver's
//! side, [`LogStore`], with [`MemLogStore`] and, behind the `wal` feature, a store on
//! `synod-wal`. etcd, TiKV,
//! Consul, RabbitMQ quorum queues, Kafka KRaft's metadata log.
//!
//! **Paxos.** [`paxos`]: single-decree Paxos (proposers, acceptors, learners, ballots of
//! round and node id); in [`paxos::register`], a per-key compare-and-set register run as
//! Paxos rounds per key; in [`paxos::multi`], a Multi-Paxos log whose stable leader runs
//! phase one once for all slots, then one round trip per command, and fills gaps with
//! no-ops. Chubby and Spanner (Multi-Paxos), Cassandra's lightweight transactions (the
//! register's model), Megastore. Each runs as a node on the `synod-node` contract
//! ([`paxos::PaxosNode`], [`paxos::MultiPaxosNode`], [`paxos::CasRegisterNode`]: the roles a
//! process runs together, acceptor state persisted as an effect and every answer held
//! until it is durable, stalled rounds retried after a seeded delay, restart from what was
//! persisted); the roles themselves stay the place to read the algorithm.
//!
//! **Idempotent Receiver.** [`session`]: client sessions registered through the log,
//! per-session sequence numbers, saved responses returned for retries, expiry on time
//! carried in the log, so a retried command is applied once on every replica. ZooKeeper
//! sessions, Kafka's idempotent producer, the Raft thesis's client sessions (section 6.3).
//!
//! **Follower Reads.** [`reads`]: linearizable reads through [`Node::read_index`] (a
//! quorum round of heartbeats confirms leadership, one round for every read waiting;
//! followers forward the reads asked together as one request and then read locally),
//! lease reads ([`Node::read_lease`]) under a stated clock-drift bound, and
//! read-your-writes on any replica by waiting until it has applied the client's last index
//! ([`ReadWaitList`]). etcd's and TiKV's read index and follower read, Consul's
//! `consistent`/`default`/`stale` modes, ZooKeeper's `sync` then read, Spanner's and
//! Chubby's leases.
//!
//! # What is implemented, and what is not
//!
//! Implemented and tested: everything above, with one scenario test per rule of the Raft
//! paper (elections, log matching, commitment, Figure 8, persistence before response), each
//! on nodes run by `synod-sim`'s `ProtocolNode` and stepped by hand (`synod_sim::Stepper`:
//! the test picks every message, tick and sync);
//! randomized whole-cluster runs on the same stepped nodes with every step drawn from a
//! seed, and under `synod-sim`'s `Simulation` (every fault kind, Raft's safety properties
//! after every event, linearizability of a key-value store's history, progress after
//! healing), the stepped runs also compacting the log, installing snapshots in chunks,
//! changing membership and transferring leadership, on journalled in-memory logs and on
//! the WAL-backed store on the simulated disk, stopped at random storage operations;
//! reintroduced bugs (committing an old-term entry by counting replicas; not persisting
//! the vote; a compaction dropping later entries; acknowledging before the sync; snapshot
//! chunks taken at any offset; membership changes before the last committed; transfers to
//! a lagging node) caught within a stated
//! number of seeds of the stepped runs, and the vote bug also under `synod-sim` in a
//! storm of quick crashes (its default faults keep a node down longer than an election
//! timeout, which hides it); through the Paxos nodes, under loss, duplication,
//! reordering and crashes that lose unsynced writes: Paxos choosing at most one value with
//! duelling proposers, the register linearizable with duelling coordinators, Multi-Paxos
//! never choosing two values for a slot with competing leaders, and leaving no holes; the
//! register's nodes linearizable under `synod-sim` too. Each of those checks also catches a
//! deliberately broken variant.
//!
//! Not implemented:
//!
//! - **Joint consensus.** Membership changes are single-server (one voter added or
//!   removed per change, thesis section 4.1), which needs no joint quorums; replacing
//!   several voters takes several changes. See [`membership`].
//! - **Multi-Paxos beyond the core**: the log has no snapshots, no leases and no
//!   membership changes, and a node that missed the news of chosen slots learns them only
//!   when it next leads (no catch-up, no request forwarding to the leader); Raft is the
//!   crate's production replicated log.
//! - **Flexible or weighted quorums** for Raft (majorities only), and **witnesses**.
//! - The node keeps no metrics; the caller observes [`Node::role`], [`Node::term`],
//!   [`Node::commit_index`], [`Node::match_index`] and friends.
//!
//! # Wire format
//!
//! [`Message::encode`] is version byte [`WIRE_VERSION`] (1) followed by the `postcard`
//! encoding of [`Message`]; [`Message::decode`] refuses other versions and malformed input
//! with a [`DecodeError`], never a panic. Framing and checksums are the transport's job.
//!
//! # Log stores
//!
//! The node keeps its log in memory (a [`MemLogStore`]) and hands its changes out as
//! [`RaftWrite`]s: ordered lists of [`StoreWrite`]s (appends, truncations, term and vote,
//! snapshots taken or installed). The durable side is the driver's, behind the small
//! [`LogStore`] trait (apply a write, sync): [`MemLogStore`] is one, with a sync point and a
//! crash that loses what was not synced, for tests; `WalLogStore` (feature `wal`) stores
//! the log in `synod-wal` and recovers it at open; a driver that owns its "disk" as bytes
//! (a simulator, a test) appends the writes with [`journal::JournalWriter`] and rebuilds the
//! log at restart with [`journal::replay`], which reports damage to records that a later
//! record proves synced and cuts off a bad tail that none does (a torn tail, or damage to
//! the last synced records when nothing was written after their sync).
//!
//! # Checking a cluster
//!
//! [`invariants::SafetyChecker`] checks the five safety properties of the Raft paper's
//! Figure 3 (Election Safety, Leader Append-Only, Log Matching, Leader Completeness, State
//! Machine Safety), and that commit and applied indexes never go back, over a whole
//! cluster after every event of a test or a simulation. It reads the nodes through their
//! accessors, remembers only digests of committed entries not yet compacted everywhere, and
//! returns a typed [`invariants::Violation`]. The crate's own randomized runs, its
//! `synod-sim` runs and the Consistent Core's simulation (`synod sim raft-kv`) all use it.
//!
//! # Tests and their knobs
//!
//! `cargo test -p synod-consensus` runs a CI budget; larger runs through environment
//! variables: `SYNOD_CONSENSUS_SEEDS` (randomized stepped runs, default 2000; the runs
//! on the WAL-backed store take a tenth) and `SYNOD_CONSENSUS_SEED` (replay one); `SYNOD_SEEDS` / `SYNOD_SEED` (the `synod-sim`
//! key-value runs, default 100); `SYNOD_PAXOS_SEEDS` (default 1000);
//! `SYNOD_REGISTER_SEEDS` (default 1000); `SYNOD_REGISTER_SIM_SEEDS` (the register's nodes
//! under `synod-sim`, default 200); `SYNOD_MULTI_PAXOS_SEEDS` (default 200). The WAL-backed store's tests need
//! `--features wal`.
//!
//! # Crate features
//!
//! - `wal`: `WalLogStore` (module `wal_store`), a [`LogStore`] on two
//!   `synod-wal` logs (entries aligned with Raft indexes; hard state and snapshot records,
//!   each snapshot's data in a file of its own beside them, of any size), laid out by
//!   `WalStoreOptions`
//!   (segment size, longest entry: at least [`Config::entry_bytes_max`]).
//! - `broken`: the deliberately broken variants the crate's tests run to show that the
//!   checkers catch what they break: `ConfigBuilder::broken` (the Figure 8 commit, an
//!   unpersisted vote, membership changes without waiting, transfers without catch-up,
//!   snapshot chunks at any offset) and the Paxos family's `broken_*` constructors. Never
//!   enable it in a build that serves data.
//!
//! # Sibling crates
//!
//! [`synod-quorum`](synod_quorum) counts votes, acknowledgements and heartbeat rounds
//! (majority configurations); [`synod-clocks`](synod_clocks) provides [`Term`] and
//! [`NodeId`]; `synod-wal` stores the log (feature `wal`); `synod-sim` tests it all under
//! faults; `synod-transport` carries the messages between real processes.

mod config;
pub mod invariants;
pub mod journal;
pub mod membership;
mod message;
pub mod paxos;
mod progress;
mod raft;
pub mod reads;
pub mod session;
mod storage;
mod types;
#[cfg(feature = "wal")]
pub mod wal_store;

#[cfg(feature = "broken")]
pub use config::Broken;
pub use config::{
    Config, ConfigBuilder, ConfigError, ENTRY_BYTES_MAX_DEFAULT, TICK_INTERVAL_US_DEFAULT,
};
pub use membership::{Membership, MembershipError};
pub use message::{AppendResult, DecodeError, Message, MessageBody, ReadId, WIRE_VERSION};
pub use raft::{
    Apply, CompactError, INDEX_MAX, Node, ProposeError, ReadError, ReadState, Ready, Request,
    RequestError, Response, Role, TERM_MAX, TransferError,
};
pub use reads::{ReadWaitError, ReadWaitList};
pub use storage::{
    HardState, LogStore, MemLogStore, RaftWrite, Snapshot, SnapshotMeta, StoreWrite,
};
pub use synod_node::PersistToken;
pub use types::{Entry, LogIndex, NodeId, Payload, Term};
#[cfg(feature = "wal")]
pub use wal_store::{WalLogStore, WalStoreError, WalStoreOptions, WalSyncer};
