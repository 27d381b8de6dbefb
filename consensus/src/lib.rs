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
//! touches a file, reads a clock or draws OS randomness: time arrives as calls to
//! [`Node::tick`], messages as [`Node::step`], and the node hands out what it wants done
//! (messages to send, entries to make durable, committed entries to apply) in a [`Ready`].
//! The caller performs it and reports back with [`Node::persisted`]. The same node runs in
//! a real process and in `synod-sim`'s deterministic simulation; this is the shape of
//! raft-rs's `RawNode`/`Ready` and of quinn-proto.
//!
//! # Driving a node
//!
//! The calls, in order:
//!
//! 1. **Inputs**, any number, in any order: [`Node::tick`] at a fixed interval (every
//!    timeout is a number of ticks), [`Node::step`] for each message received,
//!    [`Node::propose`] for client commands (on the leader), [`Node::read_index`] for
//!    linearizable reads.
//! 2. **Drain**: while [`Node::has_ready`], take a [`Ready`] with [`Node::ready`] and
//!    handle it:
//!    - **persist**: if [`Ready::persist`] is set, make the store durable (for
//!      [`MemLogStore`], [`MemLogStore::sync`]; for a WAL, one `fsync`, possibly covering
//!      several readies), then **acknowledge** with [`Node::persisted`];
//!    - **send** [`Ready::messages`]: the node holds back any message that depends on an
//!      unpersisted write (a vote, an append acknowledgement) until that write is
//!      acknowledged, so these are always safe to send at once;
//!    - **apply**: load [`Ready::snapshot`] if set, then apply [`Ready::committed`] in
//!      order; answer [`Ready::reads`] once their index is applied.
//!
//! A three-node cluster in one process, from election to a command applied everywhere:
//!
//! ```
//! use std::collections::VecDeque;
//!
//! use bytes::Bytes;
//! use synod_consensus::{Config, Membership, MemLogStore, Message, Node, NodeId, Payload, Role};
//!
//! /// Handles everything `node` wants done: persist and acknowledge, send, apply.
//! fn drain(node: &mut Node<MemLogStore>, network: &mut VecDeque<Message>, applied: &mut Vec<Bytes>) {
//!     while node.has_ready() {
//!         let ready = node.ready();
//!         if let Some(token) = ready.persist {
//!             node.store_mut().sync(); // a real store would fsync here
//!             node.persisted(token);
//!         }
//!         network.extend(ready.messages);
//!         for entry in ready.committed {
//!             if let Payload::Command(data) = entry.payload {
//!                 applied.push(data);
//!             }
//!         }
//!     }
//! }
//!
//! let ids = [1, 2, 3].map(NodeId::new);
//! let membership = Membership::new(ids, [])?;
//! let mut nodes = Vec::new();
//! for id in ids {
//!     let config = Config::builder(id)
//!         .election_timeout_ticks(10..20)
//!         .heartbeat_interval_ticks(2)
//!         .build()?;
//!     nodes.push(Node::new(config, MemLogStore::new(membership.clone())));
//! }
//! let mut network = VecDeque::new();
//! let mut applied = vec![Vec::new(); 3];
//! let mut run = |nodes: &mut Vec<Node<MemLogStore>>, ticks: usize| {
//!     for _ in 0..ticks {
//!         for (i, node) in nodes.iter_mut().enumerate() {
//!             node.tick();
//!             drain(node, &mut network, &mut applied[i]);
//!         }
//!         while let Some(msg) = network.pop_front() {
//!             let i = (msg.to.get() - 1) as usize;
//!             nodes[i].step(msg);
//!             drain(&mut nodes[i], &mut network, &mut applied[i]);
//!         }
//!     }
//! };
//! run(&mut nodes, 50); // randomized election timeouts elect a leader
//! let leader = nodes.iter().position(|n| n.role() == Role::Leader).expect("a leader");
//! nodes[leader].propose(Bytes::from_static(b"x = 1"))?;
//! run(&mut nodes, 5);
//! for copy in &applied {
//!     assert_eq!(copy, &[Bytes::from_static(b"x = 1")]);
//! }
//! // A follower refuses proposals, and says who leads.
//! let follower = (leader + 1) % 3;
//! let err = nodes[follower].propose(Bytes::from_static(b"y = 2")).unwrap_err();
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
//! once its own store has acknowledged it. Followers learn the mark from the leader, and
//! only entries below it are applied. Kafka's high watermark, Raft's commitIndex.
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
//! with learners ([`membership`]). The store is a small trait, [`LogStore`], with
//! [`MemLogStore`] and, behind the `wal` feature, a store on `synod-wal`. etcd, TiKV,
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
//! quorum round of heartbeats confirms leadership; followers forward the request and then
//! read locally), lease reads ([`Node::read_lease`]) under a stated clock-drift bound, and
//! read-your-writes on any replica by waiting until it has applied the client's last index
//! ([`ReadWaitList`]). etcd's and TiKV's read index and follower read, Consul's
//! `consistent`/`default`/`stale` modes, ZooKeeper's `sync` then read, Spanner's and
//! Chubby's leases.
//!
//! # What is implemented, and what is not
//!
//! Implemented and tested: everything above, with one scenario test per rule of the Raft
//! paper (elections, log matching, commitment, Figure 8, persistence before response);
//! randomized whole-cluster runs on the crate's own harness and under `synod-sim` (every
//! fault kind, Raft's safety properties after every event, linearizability of a key-value
//! store's history, progress after healing), the harness runs also compacting the log,
//! installing snapshots in chunks, changing membership and transferring leadership, on
//! in-memory stores and on the WAL-backed store crashed at random storage operations;
//! reintroduced bugs (committing an old-term entry by counting replicas; not persisting
//! the vote; a compaction dropping later entries; acknowledging before the sync; snapshot
//! chunks taken at any offset; membership changes before the last committed; transfers to
//! a lagging node) caught within a stated
//! number of seeds on the crate's harness, and the vote bug also under `synod-sim` in a
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
//! [`MemLogStore`] keeps everything in memory; [`journal::JournalStore`] does too and also
//! records every write, so a driver that owns its "disk" as bytes (a simulator, a test)
//! appends them with [`journal::JournalWriter`] and rebuilds the store at restart with
//! [`journal::replay`], which reports damage to records that a later record proves synced
//! and cuts off a bad tail that none does (a torn tail, or damage to the last synced
//! records when nothing was written after their sync);
//! `WalLogStore` (feature `wal`) stores the log in `synod-wal`.
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
//! variables: `SYNOD_CONSENSUS_SEEDS` (randomized harness runs, default 2000; the runs
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
pub use config::{Config, ConfigBuilder, ConfigError, ENTRY_BYTES_MAX_DEFAULT};
pub use membership::{Membership, MembershipError};
pub use message::{AppendResult, DecodeError, Message, MessageBody, ReadId, WIRE_VERSION};
pub use raft::{
    CompactError, INDEX_MAX, Node, PersistToken, ProposeError, ReadError, ReadState, Ready, Role,
    TERM_MAX, TransferError,
};
pub use reads::{ReadWaitError, ReadWaitList};
pub use storage::{HardState, LogStore, MemLogStore, Snapshot, SnapshotMeta};
pub use types::{Entry, LogIndex, NodeId, Payload, Term};
#[cfg(feature = "wal")]
pub use wal_store::{WalLogStore, WalStoreError, WalStoreOptions};
