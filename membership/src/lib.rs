//! Cluster membership: failure detection and gossip dissemination, as I/O-free state
//! machines.
//!
//! A cluster whose members come and go needs every member to know who else is up, without a
//! central registry that could itself fail. This crate gives each member that knowledge:
//! heartbeat failure detectors as plain values, and [`Member`], a SWIM member with
//! Lifeguard's refinements that detects failures and spreads what it learns by gossip. It
//! is written on `synod-node`'s contract, so the same member runs under `synod-sim`'s
//! deterministic simulation and behind any transport a user brings, as foca is embedded.
//!
//! # Patterns
//!
//! From *Patterns of Distributed Systems* (Unmesh Joshi); [the tour
//! below](#the-three-patterns-at-work) runs all three in one example:
//!
//! - **HeartBeat** (as failure detection): [`FixedTimeout`] and the phi accrual detector
//!   [`PhiAccrual`], fed with heartbeat times and asked about a time; and SWIM's probes
//!   inside [`Member`], where an acknowledged probe is the heartbeat.
//! - **Gossip Dissemination**: every change a member learns rides, a bounded number of
//!   times, on the probes it sends anyway and on short gossip rounds to a few random
//!   members, and a periodic push-pull sync exchanges whole views, so that news reaches
//!   every member in `O(log n)` rounds and a healed partition always merges. Beside its
//!   heartbeat each member owns versioned key-values ([`MemberRequest::Set`],
//!   [`Member::get`], [`ViewChange::Key`]), spread by scuttlebutt anti-entropy: digests,
//!   then deltas of what the other lacks ([see below](#key-values-on-the-gossip)).
//! - **Emergent Leader**: [`Member::coordinator`], the oldest member of the member's group
//!   by join stamp ([`Update::joined`]), which every member computes from its own view
//!   without an election; a change is handed up as [`ViewChange::Coordinator`]. Groups that
//!   formed apart (the sides of a partition) merge when they meet, the smaller into the
//!   larger, and both sides are told with a [`ViewChange::Merged`].
//! - **Lease**: [`lease`], a lease table replicated through a log (grant, keep-alive,
//!   revoke, checkpoint, expiry) and the leader's expirer, with keys deleted with their
//!   lease and fencing by the lock key's create revision.
//! - **State Watch**: [`watch::WatchHub`], fed a store's changes in revision order, with
//!   etcd's six guarantees to every watcher, bounded buffers and history, and the
//!   compacted error instead of a silent gap (see [`watch`]).
//!
//! # How a member works
//!
//! Every protocol period (`probe_interval_ms`) a member probes one other, in a round-robin
//! order shuffled at every pass, so that every member is probed within two passes:
//!
//! 1. It sends a `Ping`; an `Ack` within `probe_timeout_ms` ends the probe.
//! 2. Otherwise it asks `k` other members (`PingReq`) to probe the target for it; any
//!    `IndirectAck` before the period ends is as good as an `Ack`. A relay that hears
//!    nothing sends a `Nack`, which tells the asker its own messages are getting through.
//! 3. A target that answered neither way is *suspected*: the suspicion is gossiped, and
//!    every member that hears it starts a timer. A suspected member that hears of it
//!    *refutes* by raising its incarnation number and gossiping itself alive; only the
//!    member itself raises its incarnation, and between two updates about a member the
//!    larger `(generation, incarnation, state)` wins ([`Update::precedence`]). A
//!    suspicion that times out unrefuted makes the member *dead*.
//!
//! A member probes only members it has heard from, so a seed that stopped (or never
//! started) before anyone heard of it could never be suspected. Each start therefore also
//! pings, once a protocol period, every configured seed missing from its view, and hands up
//! as dead a seed that answered none of
//! [`unseen_seed_probes`](MemberConfigBuilder::unseen_seed_probes) pings (5 by default);
//! a seed that comes up later is news that it is alive, as any new member.
//!
//! Lifeguard (Dadgar, Phillips and Currey, 2018) adds three things, switched on and off
//! together with [`MemberConfigBuilder::lifeguard`]: a *local health* score (from 0 to
//! `awareness_max - 1`) that grows when this member misses acks and nacks or has to refute
//! a suspicion of itself (signs that it is the slow one), shrinks with every answered
//! probe, and multiplies its own probe interval and timeout; a suspicion timeout that starts
//! at `suspicion_max_mult` times the base (`suspicion_mult × max(1, log10 n)` periods) and
//! shrinks towards the base, logarithmically, as independent members confirm the
//! suspicion (only members of the view count, and at most `suspicion_mult - 2`
//! confirmations are kept: the timeout is at its base by then); and the *buddy system*: a message to a suspected member tells it so, so that
//! it refutes at once. Without Lifeguard the suspicion timeout is the base.
//!
//! Gossip: each change is queued once per member and sent on the next messages (probes,
//! acknowledgements, and a gossip round every `gossip_interval_ms` to `gossip_fanout`
//! random live members), least sent first, as many as fit in `message_bytes_max`, each at
//! most `retransmit_mult × ceil(log10(n + 1))` times. Every `push_pull_interval_ms` a member
//! syncs its whole view with one other: a live member, or, half the time when there are
//! any, a seed or a member it believes dead. To a live member it first offers a hash of its
//! view, and the views are sent only if the other's hashes differently, so that members
//! whose views agree (a cluster at rest) pay a few bytes per push-pull and not two views;
//! to a seed or a dead member the view goes at once. That re-announce is what merges the two sides
//! of a healed partition, which believe each other dead and so would never probe each
//! other. Deaths in a sync count only as suspicions (the sender may have been cut off), and
//! a member learns of another only from news that it is alive, so that stale gossip about
//! a member already forgotten never brings its tombstone back.
//!
//! Restarts: a member's *generation* is the only thing it persists. Each start persists
//! the last generation plus one (an `Effect::Persist` of a [`MemberWrite`]) and sends
//! nothing until it is durable, so two starts never share a generation, and a restarted
//! member's updates replace everything said about its earlier starts, dead or alive. A
//! running member that hears something of itself that no incarnation of its generation can
//! beat (a suspicion at the largest incarnation, or any claim at a generation it never
//! had, which is a lie or damage) persists a larger generation the same way and then uses
//! it, so nothing a peer says keeps a live member dead for the rest of its start. A claim
//! more than [`GENERATION_STEP_MAX`] generations ahead of what a member knows is not
//! believed at all (no run of starts gets there, and a claim at `u64::MAX` could never be
//! outlived), unless the member says it of itself: its own messages replace such a claim
//! taken in before, and carry a renewal to members that still hold a start so old that
//! the renewal is out of their reach. A renewal stays within reach of the renewing start
//! when it can (at the edge, it takes the claimed generation at a larger incarnation), so
//! that gossip alone carries it to every member that holds that start. Dead
//! members are kept as tombstones for `dead_reap_ms`, then forgotten (or earlier, oldest
//! first, when a new member needs room in a full view); either way the application gets a
//! [`MemberEvent`] with `state: None`. A member that leaves
//! on purpose ([`MemberRequest::Leave`]) declares itself dead at a new incarnation, tells
//! every live member directly and stops, so the others mark it dead at once instead of
//! suspecting it first.
//!
//! Emergent leader: each start takes a join stamp once, one more than the largest it knows,
//! when a sync answer shows it a group to join (or at its first push-pull round, if none
//! does), and gossips it with its liveness. Every member is in a *group*, named by the
//! group's coordinator ([`Update::group`]), and gossips which group it is in; a new member
//! joins the largest group it sees, or forms one of its own if it sees none. A group's
//! coordinator is its oldest member by `(joined, id)`: a crashed coordinator is succeeded,
//! once it is declared dead, by the oldest member left in the group, and a restarted one
//! comes back as the youngest. No member is elected; each computes the coordinator from
//! its own view, so members that agree on the view agree on it.
//!
//! Split groups: during a partition, each side declares the other dead and forms a group
//! of its own under its oldest member. When the two meet again, each member that sees a
//! live member coordinating another group (while its own coordinator is alive) compares the
//! two groups by the size each coordinator last gossiped for its own group
//! ([`Update::group_size`], which a coordinator gossips again whenever it changes): **the
//! smaller group merges into the larger, and between groups of one size the group whose
//! coordinator joined first (the smaller `(joined, id)`) wins**. A member of the losing
//! group moves to the winner's, and says where it came from ([`Update::merged_from`]), so
//! that members of its old group that never see the other coordinator themselves follow
//! it. Every member, on both sides, hands up one [`ViewChange::Merged`] naming the group
//! it was in, the other group and the winner, so an application can reconcile what the two
//! groups did apart; a member whose coordinator changed is also told with a
//! [`ViewChange::Coordinator`]. Members that start at the same moment may each form a
//! group before they hear of the others; those groups merge the same way.
//!
//! Every limit is explicit in [`MemberConfig`]: members kept (`members_max`; a full view
//! drops its oldest tombstone first), gossip updates queued, indirect probes relayed at
//! once, and the bytes of a message and of a sync. A member reads no clock: its timers are
//! one `Effect::WakeAt`.
//!
//! # Example
//!
//! Two members, stepped by hand: member 2 starts, makes its generation durable and joins
//! through member 1; member 1 learns of it from the join, and the answer gives member 2
//! its join stamp.
//!
//! ```
//! use synod_membership::{Member, MemberConfig, MemberState, Message};
//! use synod_node::{Effect, Input, NodeId, PersistToken, Protocol, Time};
//!
//! let (one, two) = (NodeId::new(1), NodeId::new(2));
//! let mut a = Member::start(MemberConfig::builder(one, 1).build()?, 0);
//! let mut b = Member::start(MemberConfig::builder(two, 2).seeds([one]).build()?, 0);
//! let now = Time::from_millis(10);
//!
//! // Deliver every message `from` sends to `to`, and drop everything else.
//! fn deliver(from: &mut Member, to: &mut Member, now: Time) -> usize {
//!     let sent: Vec<Message> = std::iter::from_fn(|| from.poll())
//!         .filter_map(|e| match e {
//!             Effect::Send { message, .. } => Some(message),
//!             _ => None,
//!         })
//!         .collect();
//!     for message in &sent {
//!         // What a transport would do: bytes on the wire, checked on the way in.
//!         let bytes = message.encode();
//!         let message = Message::decode(&bytes, 65_536).expect("a valid message");
//!         to.handle(now, Input::Message { from: from.config().id(), message });
//!     }
//!     sent.len()
//! }
//!
//! // Each start persists its generation first and sends nothing until it is durable.
//! for m in [&mut a, &mut b] {
//!     assert!(matches!(m.poll(), Some(Effect::Persist { .. })));
//!     m.handle(now, Input::Persisted(PersistToken(1)));
//! }
//! assert_eq!(deliver(&mut b, &mut a, now), 1); // b's join: a sync of its view
//! assert_eq!(a.state_of(two), Some(MemberState::Alive));
//! assert_eq!(deliver(&mut a, &mut b, now), 1); // a's answer: its own view
//! assert_eq!(b.live_members(), [one, two]);
//! // Neither has a join stamp yet, so neither is in a group: each takes one when a sync
//! // answer shows it a group to join, or at its first push-pull round. Until then the
//! // coordinator is the oldest ranked, an unstamped member counting by its id.
//! assert_eq!(b.joined(), 0);
//! assert_eq!(b.coordinator(), one);
//! # Ok::<(), synod_membership::ConfigError>(())
//! ```
//!
//! # The three patterns at work
//!
//! Three members on a network that delivers every message within one 10 ms step, and
//! drops those to or from a crashed member. The members join through member 1 and agree
//! on the view and on a coordinator (the emergent leader, the member that joined first)
//! with no election; the coordinator crashes; probes of it go unanswered (the heartbeat),
//! the suspicion and then the death reach every member by gossip, and the oldest member
//! left coordinates.
//!
//! ```
//! use synod_membership::{ConfigError, Member, MemberConfig, MemberState};
//! use synod_node::{Effect, Input, NodeId, Protocol, Time};
//!
//! /// One 10 ms step: every running member wakes and sends; each message reaches its
//! /// destination at once if that member runs too.
//! fn step(members: &mut [Member], up: &[bool], now: Time) {
//!     let mut sent = Vec::new();
//!     for (member, _) in members.iter_mut().zip(up).filter(|(_, up)| **up) {
//!         member.handle(now, Input::Wake);
//!         while let Some(effect) = member.poll() {
//!             match effect {
//!                 // A driver makes the generation durable, then says so.
//!                 Effect::Persist { token, .. } => {
//!                     member.handle(now, Input::Persisted(token));
//!                 }
//!                 Effect::Send { to, message } => {
//!                     sent.push((member.config().id(), to, message));
//!                 }
//!                 _ => {} // wake-ups (this driver wakes everyone), events for the application
//!             }
//!         }
//!     }
//!     for (from, to, message) in sent {
//!         let i = to.get() as usize - 1;
//!         if up[i] {
//!             members[i].handle(now, Input::Message { from, message });
//!         }
//!     }
//! }
//!
//! let ids: Vec<NodeId> = (1..=3).map(NodeId::new).collect();
//! let mut members = ids
//!     .iter()
//!     .map(|&id| {
//!         let config = MemberConfig::builder(id, id.get()) // the id seeds its random choices
//!             .seeds([ids[0]])
//!             .probe(100, 50) // a protocol period of 100 ms, a probe timeout of 50 ms
//!             .build()?;
//!         Ok(Member::start(config, 0))
//!     })
//!     .collect::<Result<Vec<_>, ConfigError>>()?;
//! let mut up = [true; 3];
//! let mut now = Time::ZERO;
//! let mut run_until = |members: &mut [Member], up: &[bool], done: &dyn Fn(&[Member]) -> bool| {
//!     while !done(members) {
//!         now += std::time::Duration::from_millis(10);
//!         assert!(now < Time::from_secs(30), "not done in 30 s");
//!         step(members, up, now);
//!     }
//! };
//!
//! // Gossip: every member learns of every other, and each takes a join stamp.
//! run_until(&mut members, &up, &|ms| {
//!     ms.iter().all(|m| m.live_members() == ids && m.joined() != 0)
//! });
//! // Emergent leader: all name the same coordinator, the member that joined first (by join
//! // stamp, then id).
//! let oldest = |ms: &[&Member]| {
//!     let m = ms.iter().min_by_key(|m| (m.joined(), m.config().id())).unwrap();
//!     m.config().id()
//! };
//! let first = oldest(&members.iter().collect::<Vec<_>>());
//! assert!(members.iter().all(|m| m.coordinator() == first));
//!
//! // HeartBeat: the coordinator crashes; the others stop hearing its acks.
//! up[first.get() as usize - 1] = false;
//! let live: Vec<usize> = (0..3).filter(|&i| up[i]).collect();
//! run_until(&mut members, &up, &|ms| {
//!     live.iter().all(|&i| ms[i].state_of(first) == Some(MemberState::Dead))
//! });
//! // Both survivors hold it dead and agree on its successor, the oldest member left.
//! let (a, b) = (&members[live[0]], &members[live[1]]);
//! assert_eq!(a.coordinator(), oldest(&[a, b]));
//! assert_eq!(b.coordinator(), oldest(&[a, b]));
//! # Ok::<(), ConfigError>(())
//! ```
//!
//! # Key-values on the gossip
//!
//! Each member owns key-values that every other live member comes to hold a copy of: an
//! application publishes what it serves, its load, its address for clients. Keys are set
//! and deleted with [`MemberRequest::Set`] and [`MemberRequest::Delete`], read with
//! [`Member::get`] and [`Member::key_values`] (for any owner, the member itself included),
//! and every change to a copy is handed up as a [`ViewChange::Key`] ([`KeyChange`]).
//!
//! Every `key_value_interval` a member sends one random live member a digest (per owner:
//! the owner's start, the version up to which it holds every change, and its collection
//! mark); the other answers with the keys the first lacks, in version order, and with its
//! own digest of the owners the first holds newer, which the first answers in turn. Every
//! message is bounded by `sync_bytes_max`: a state that does not fit goes in parts, each
//! taken only after the one before, so a copy is always the owner's state at some version.
//! Key-values belong to one start of their owner: a new start (a new generation) replaces
//! its old state everywhere. A deleted key is a tombstone until each member has held it
//! for `tombstone_grace`; a member whose copy is behind a collection mark is sent the
//! whole state to replace its copy (a *reset*) instead of the deltas, which could no
//! longer carry the delete. A reset goes newest first, in parts if it is large, into a
//! staging copy that replaces the held one only once complete, so only what differs is
//! handed up, and each part follows on from the last however far the mark moved. A member drops its
//! copy of a member it declares dead, and all its copies after a pause of half the grace
//! or more, so that a holder that slept through a collection does not bring a deleted key
//! back. A holder cut off from the key-value exchange while staying alive keeps a copy
//! behind the owner's collection mark until a holder past it resets it; so that it hands
//! the deleted key to no one, every message tells its sender's *deletion floor* (the
//! version of its newest delete) and every digest each owner's floor as far as its sender
//! knows, and no member takes or hands out a whole state below the floor it knows
//! ([`MemberStats::kv_stale_refused`]). A member that hears the floor within the tombstone
//! grace of the delete (from the owner, or from any member that heard it) never takes the
//! deleted key from a stale holder; one that hears from neither for the whole grace can,
//! until it declares the owner dead or a holder past the mark resets it. The limits:
//! `keys_max` keys per member (tombstones included), the largest key and value
//! ([`MemberConfigBuilder::key_value_limits`]), and the bytes held of all other members'
//! key-values ([`MemberConfigBuilder::held_bytes_max`], 64 MiB by default: past it a copy
//! stops below the key that would cross it, counted in [`MemberStats::kv_over_bytes`]). A key taken from another member that is
//! over this member's own size limits is gone past and counted
//! ([`MemberStats::kv_refused`]); the copy, lacking it, is never handed out from there on.
//!
//! ```
//! use synod_membership::{Member, MemberConfig, MemberRequest, ViewChange};
//! use synod_node::{Effect, Input, NodeId, Protocol, RequestId, Time};
//!
//! let (one, two) = (NodeId::new(1), NodeId::new(2));
//! let config = |id: NodeId| {
//!     MemberConfig::builder(id, id.get())
//!         .seeds([one])
//!         .key_values(100, 10_000) // an exchange every 100 ms
//!         .build()
//! };
//! let mut members = [Member::start(config(one)?, 0), Member::start(config(two)?, 0)];
//! // Member 2 publishes a key before it has even joined.
//! let set = MemberRequest::Set {
//!     key: "zone".into(),
//!     value: b"eu-1".to_vec(),
//! };
//! members[1].handle(Time::ZERO, Input::Request { id: RequestId(1), request: set });
//! // Every 10 ms each member wakes; what it sends arrives at once.
//! let mut changes = Vec::new();
//! for step in 1..=100 {
//!     let now = Time::from_millis(10 * step);
//!     let mut sent = Vec::new();
//!     for m in &mut members {
//!         m.handle(now, Input::Wake);
//!         while let Some(effect) = m.poll() {
//!             match effect {
//!                 Effect::Persist { token, .. } => m.handle(now, Input::Persisted(token)),
//!                 Effect::Send { to, message } => sent.push((m.id(), to, message)),
//!                 Effect::Apply(ViewChange::Key(change)) => changes.push(change),
//!                 _ => {}
//!             }
//!         }
//!     }
//!     for (from, to, message) in sent {
//!         members[to.get() as usize - 1].handle(now, Input::Message { from, message });
//!     }
//! }
//! assert_eq!(members[0].get(two, "zone"), Some(b"eu-1".as_slice()));
//! assert_eq!(changes[0].key, "zone"); // member 1 was told
//! # Ok::<(), synod_membership::ConfigError>(())
//! ```
//!
//! Under `synod-sim`, `synod_sim::ProtocolNode` drives a member with a `ProtocolStore` that
//! appends each [`MemberWrite`] to a file and starts the member from the largest one; this
//! crate's tests run clusters of up to 128 members (512 on request) that way, with loss,
//! slow links, pauses, crashes, restarts and partitions. Over a real network the driver is a short
//! loop: the crate's `loopback` example (`cargo run -p synod-membership --example
//! loopback`) runs eight members on threads with `synod-transport`'s TCP channels on
//! loopback, stops one and prints how long the others took to declare it dead; the
//! `processes` example runs a few dozen members as separate processes and kills one. Both
//! use `net` (the `transport` feature): `net::drive`, the loop, and
//! `net::TcpMember`, a member on a thread of its own, in a few lines.
//!
//! # What it does not do
//!
//! - No I/O (outside the optional `net`): a driver carries the messages (encoded with
//!   [`Message::encode`], checked with [`Message::decode`]), makes the generation durable
//!   and delivers the wake-ups.
//! - No authentication or encryption of messages: `from` is whoever the driver says.
//! - A member identifies others by `NodeId` only; addresses are the transport's business.
//! - Key-values are volatile: a member's own are lost with its start (the application
//!   sets them again), and nothing is made durable but the generation.
//! - A member that holds no copy of an owner's key-values takes the first whole state
//!   offered. If it comes from a member that missed a delete and its collection without
//!   declaring the owner dead or pausing (cut off for longer than the tombstone grace but
//!   not long enough to declare the owner dead), the deleted key is back in that copy until
//!   a member past the collection mark resets it. Keep `tombstone_grace` well above the time
//!   the cluster takes to declare a silent member dead (the defaults: 60 s, against a
//!   suspicion timeout of 8 to 48 s for 100 members).
//! - The coordinator is a view, not a lease: two members may name different coordinators
//!   while their views differ (during a partition, or before news has spread). The merge
//!   rule decides on the sizes the coordinators gossiped; members that hold different
//!   sizes for a moment may decide differently, and the group they end in is settled by the
//!   same rule once the sizes agree (each such change is handed up as a merge too).
//!
//! # Crate features
//!
//! - `broken` (off by default): deliberately broken variants
//!   (`MemberConfigBuilder::broken_without_refutation`,
//!   `MemberConfigBuilder::broken_without_push_pull`,
//!   `MemberConfigBuilder::broken_own_side_wins_ties`,
//!   `MemberConfigBuilder::broken_collecting_without_mark`,
//!   `MemberConfigBuilder::broken_ignoring_deletion_floors`,
//!   `lease::LeaseExpirer::broken_renew_on_election`,
//!   `lease::LeaseExpirer::broken_expire_while_following`,
//!   `watch::WatchHub::broken_skipping_on_catch_up`), which this crate's tests run to
//!   show that their checkers catch them. Never in a build that serves members.
//! - `transport` (off by default): `net`, a member over `synod-transport`'s TCP: the
//!   driver loop, a member on a thread of its own taking requests from any thread, and a
//!   file for its generation.
//!
//! # Sibling crates
//!
//! `synod-node` holds the contract (`Time`, `NodeId`, `Rng`, `Protocol`) this crate is
//! written on; `synod-sim` runs a cluster of members deterministically; `synod-transport`
//! carries their messages between processes (see `net`).

mod config;
mod detector;
mod kv;
pub mod lease;
mod member;
#[cfg(feature = "transport")]
pub mod net;
pub mod watch;
mod wire;

pub use config::{
    ConfigError, KEY_VALUE_OVERHEAD_BYTES, MESSAGE_BYTES_MIN, MemberConfig, MemberConfigBuilder,
};
pub use detector::{FixedTimeout, PhiAccrual, PhiConfig, PhiConfigError, PhiModel};
pub use kv::{Delta, Digest, KeyChange, KeyUpdate, KvError};
pub use member::{
    Member, MemberEvent, MemberInfo, MemberRequest, MemberResponse, MemberStats, MemberWrite,
    ViewChange,
};
pub use wire::{
    Body, DecodeError, GENERATION_STEP_MAX, MemberState, Message, Update, WIRE_VERSION,
};
