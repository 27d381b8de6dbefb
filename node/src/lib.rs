//! The shape of every Synod node: one identity, time as a value, inputs in and effects out,
//! persistence as an effect acknowledged by token.
//!
//! Every protocol in Synod (Raft, Paxos, the quorum coordinator, the ABD register, failure
//! detection and gossip, leases, two-phase commit) is a state machine that does no I/O. This
//! crate is the contract they share, so that a reader learns it once and a driver is written
//! once: the same driver runs any of them under `synod-sim`'s deterministic simulation and as
//! a real process. It holds no protocol; it is what the protocol crates, the simulator and
//! the process runtime agree on.
//!
//! # The contract
//!
//! - **One closed enum of inputs**, [`Input`], handed to [`Protocol::handle`] with the time it
//!   happened, [`Time`]: a message from a peer, a client request, a persistence
//!   acknowledgement, a wake-up. A state machine never reads a clock; it reads `now`.
//! - **Effects drained from one method**, [`Protocol::poll`], as one enum, [`Effect`]: send a
//!   message, reply to a client, persist a write (with a [`PersistToken`]), apply something
//!   to the application above, wake me at a time.
//! - **Persistence is an effect.** A state machine never writes a file. It emits
//!   [`Effect::Persist`]; the driver writes, syncs (one `fsync` may cover many writes) and
//!   hands back [`Input::Persisted`] with the last token it covered. Nothing that depends on
//!   a write (a vote, an acknowledgement, a reply) leaves the state machine before that
//!   acknowledgement, so a driver can send every message the moment it is polled.
//!   [`Gate`] is that rule as a value a state machine can keep its effects in.
//! - **One identity**, [`NodeId`]: numbered from 1 in every crate, in the simulator and in a
//!   real cluster; zero names no node and cannot be built.
//! - **One seeded generator**, [`Rng`], for every draw a protocol or the simulator makes.
//!
//! # What it does not do
//!
//! No I/O, no threads, no drivers: `synod-sim` holds the simulated driver and the `synod`
//! program's runtime the real one. It does not fix how a state machine is built or restarted
//! (each protocol's constructor takes its configuration and what its store recovered), nor
//! the layout of anything on disk (each protocol's store decides).
//!
//! # Example
//!
//! A register that makes each value durable before it acknowledges it, and a driver loop
//! that persists, acknowledges and replies. A real driver would batch the persist effects
//! of many inputs into one `fsync`.
//!
//! ```
//! use std::collections::VecDeque;
//! use std::convert::Infallible;
//! use synod_node::{Effect, EffectOf, Input, InputOf, NodeId, PersistToken, Protocol, RequestId, Time};
//!
//! /// Stores one number; acknowledges a write once it is durable, and answers reads with
//! /// the last durable value (a value still being written could be lost in a crash, and a
//! /// read that had seen it would then have seen a write that never happened).
//! struct Register {
//!     id: NodeId,
//!     durable: u64,
//!     last_token: PersistToken,
//!     waiting: VecDeque<(PersistToken, RequestId, u64)>,
//!     effects: VecDeque<EffectOf<Register>>,
//! }
//!
//! impl Protocol for Register {
//!     type Message = Infallible; // a single node sends nothing
//!     type Request = Option<u64>; // Some(v) writes v, None reads
//!     type Response = u64;
//!     type Write = u64;
//!     type Apply = Infallible;
//!
//!     fn id(&self) -> NodeId {
//!         self.id
//!     }
//!
//!     fn handle(&mut self, _now: Time, input: InputOf<Self>) {
//!         match input {
//!             Input::Request { id, request: Some(v) } => {
//!                 self.last_token = self.last_token.next();
//!                 self.waiting.push_back((self.last_token, id, v));
//!                 self.effects.push_back(Effect::Persist { token: self.last_token, write: v });
//!             }
//!             Input::Request { id, request: None } => {
//!                 self.effects.push_back(Effect::Reply { id, response: self.durable });
//!             }
//!             Input::Persisted(token) => {
//!                 // Everything up to `token` is durable: answer those writes, in order.
//!                 while let Some(&(t, id, v)) = self.waiting.front() && t <= token {
//!                     self.waiting.pop_front();
//!                     self.durable = v;
//!                     self.effects.push_back(Effect::Reply { id, response: v });
//!                 }
//!             }
//!             Input::Message { message, .. } => match message {},
//!             Input::Wake => {}
//!         }
//!     }
//!
//!     fn poll(&mut self) -> Option<EffectOf<Self>> {
//!         self.effects.pop_front()
//!     }
//! }
//!
//! let mut node = Register {
//!     id: NodeId::new(1),
//!     durable: 0,
//!     last_token: PersistToken::default(),
//!     waiting: VecDeque::new(),
//!     effects: VecDeque::new(),
//! };
//! let mut disk = Vec::new();
//! let mut replies = Vec::new();
//! let now = Time::from_millis(5);
//! node.handle(now, Input::Request { id: RequestId(1), request: Some(7) });
//! node.handle(now, Input::Request { id: RequestId(2), request: Some(8) });
//! node.handle(now, Input::Request { id: RequestId(3), request: None });
//! // Drain: the read is answered with what is durable; both writes are written, then one
//! // "sync" acknowledges the last token, covering both.
//! let mut last = None;
//! while let Some(effect) = node.poll() {
//!     match effect {
//!         Effect::Persist { token, write } => {
//!             disk.push(write);
//!             last = Some(token);
//!         }
//!         Effect::Reply { id, response } => replies.push((id, response)),
//!         _ => unreachable!("this register only persists and replies"),
//!     }
//! }
//! assert_eq!(replies, [(RequestId(3), 0)], "a read sees no write that is not durable");
//! assert_eq!(disk, [7, 8]);
//! replies.clear();
//! node.handle(now, Input::Persisted(last.unwrap()));
//! while let Some(effect) = node.poll() {
//!     if let Effect::Reply { id, response } = effect {
//!         replies.push((id, response));
//!     }
//! }
//! assert_eq!(replies, [(RequestId(1), 7), (RequestId(2), 8)]);
//! ```
//!
//! # Sibling crates
//!
//! Every protocol crate builds on this one: `synod-consensus` (Raft, Paxos), `synod-quorum`
//! (quorum reads and writes, the ABD register), `synod-membership`, `synod-partitioning`.
//! `synod-sim` runs any [`Protocol`] in a deterministic simulation; `synod-clocks` has the
//! wall-clock and hybrid timestamps that may cross the network, which a [`Time`] never does.

mod contract;
mod gate;
mod id;
mod rng;
mod time;

pub use contract::{Effect, EffectOf, Input, InputOf, PersistToken, Protocol};
pub use gate::Gate;
pub use id::{NodeId, RequestId};
pub use rng::{Probability, Rng, splitmix64};
pub use time::Time;
