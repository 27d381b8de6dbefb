//! The interface a simulated node implements, and the context it acts through.
//!
//! # Order of calls
//!
//! For each node the simulator calls, in virtual-time order:
//!
//! 1. [`Node::on_start`] once when the node boots, and again after every restart. A fresh
//!    value from the node factory receives it, so nothing volatile survives a crash; the
//!    node reads whatever survived on [`Context::disk`].
//! 2. Then any number of [`Node::on_message`], [`Node::on_timer`], [`Node::on_request`],
//!    [`Node::on_synced`] and [`Node::on_sync_failed`], one at a time, each running to
//!    completion. While a node is paused, its inputs wait and are delivered in order when
//!    it resumes. A crash drops the node value, its pending timers, sync notifications and
//!    undelivered inputs.
//!
//! Within a call the node acts only through the [`Context`]: it reads its clock
//! ([`Context::now`]), draws randomness ([`Context::rng`]), sends ([`Context::send`]), sets
//! timers ([`Context::set_timer`]), replies to clients ([`Context::reply`]), writes its disk
//! ([`Context::disk`]) and asks for a sync ([`Context::sync`]). Effects are collected
//! while the call runs and carried out, in the order they were emitted, right after it
//! returns.

use std::fmt;
use std::hash::Hash;
use std::time::Duration;

use synod_clocks::ManualClock;

use crate::disk::Disk;
use crate::rng::SimRng;
use crate::time::SimTime;

/// A simulated node: `synod-node`'s `NodeId`, the one every Synod crate uses. A cluster of
/// `n` nodes is numbered `1..=n`, as a real cluster is, so a node's id in a simulation is the
/// id its protocol sees.
pub use synod_node::NodeId;

/// The node at position `i` (from 0) of the simulator's tables.
pub(crate) fn node_at(i: usize) -> NodeId {
    NodeId::new(i as u64 + 1)
}

/// The position (from 0) of node `id` in the simulator's tables; ids past the cluster give
/// positions past its end, which callers check.
pub(crate) fn slot_of(id: NodeId) -> usize {
    usize::try_from(id.get() - 1).unwrap_or(usize::MAX)
}

/// A simulated client, numbered from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(u32);

impl ClientId {
    /// The client with index `index`.
    #[must_use]
    pub const fn new(index: u32) -> Self {
        ClientId(index)
    }

    /// The client's number.
    #[must_use]
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// Identifies one client request; a node passes it back to [`Context::reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId {
    client: ClientId,
    seq: u64,
}

impl RequestId {
    pub(crate) const fn new(client: ClientId, seq: u64) -> Self {
        RequestId { client, seq }
    }

    /// The client that sent the request.
    #[must_use]
    pub const fn client(self) -> ClientId {
        self.client
    }

    /// The request's number among that client's requests.
    #[must_use]
    pub const fn seq(self) -> u64 {
        self.seq
    }
}

/// A node's name for one of its timers, chosen by the node and handed back to
/// [`Node::on_timer`].
///
/// Timers cannot be cancelled: a node that re-arms a timer should ignore expiries it no
/// longer wants (for example by keeping a generation number in the id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerId(pub u64);

/// A node's name for one sync request, handed back to [`Node::on_synced`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SyncToken(pub u64);

/// A state machine the simulator can run.
///
/// See the crate documentation ("The node interface") for the order of calls. Message, request and
/// response types are hashed into the run's trace hash, so their `Hash` must be
/// deterministic (derive it; do not hash pointers or `HashMap`s).
pub trait Node {
    /// What nodes send each other. Cloned when the network duplicates a message.
    type Message: Clone + fmt::Debug + Hash;
    /// What clients send a node.
    type Request: Clone + fmt::Debug + Hash;
    /// What a node answers a client.
    type Response: Clone + fmt::Debug + Hash;

    /// The node boots, for the first time or after a crash; `ctx.disk()` holds what
    /// survived.
    fn on_start(&mut self, ctx: &mut Context<'_, Self>)
    where
        Self: Sized;

    /// A message from `from` arrived.
    fn on_message(&mut self, ctx: &mut Context<'_, Self>, from: NodeId, message: Self::Message)
    where
        Self: Sized;

    /// A timer set with [`Context::set_timer`] expired.
    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, timer: TimerId)
    where
        Self: Sized;

    /// A client sent a request; answer it (now or later) with [`Context::reply`].
    fn on_request(&mut self, ctx: &mut Context<'_, Self>, id: RequestId, request: Self::Request)
    where
        Self: Sized;

    /// A sync requested with [`Context::sync`] completed: every disk write issued before
    /// that request is now durable. The default ignores it.
    ///
    /// A sync fails only when a test schedules [`crate::Action::FailNextSync`]; then
    /// [`Node::on_sync_failed`] is called instead.
    fn on_synced(&mut self, ctx: &mut Context<'_, Self>, token: SyncToken)
    where
        Self: Sized,
    {
        let _ = (ctx, token);
    }

    /// A sync requested with [`Context::sync`] failed (an `fsync` returning `EIO`): the
    /// writes it covered were dropped from the page cache and are not durable; writes
    /// issued after the request are still there, unsynced. The node must not acknowledge
    /// anything that depended on them; the usual answer is to rebuild its state from
    /// [`Context::disk`] (as [`Node::on_start`] does) or to stop serving.
    ///
    /// Only [`crate::Action::FailNextSync`] makes a sync fail; the nemesis does not. The
    /// default ignores it, so a node that waits for [`Node::on_synced`] for this token
    /// waits forever (safe, but the liveness phase will notice).
    fn on_sync_failed(&mut self, ctx: &mut Context<'_, Self>, token: SyncToken)
    where
        Self: Sized,
    {
        let _ = (ctx, token);
    }
}

/// An effect a node emitted during one call.
#[derive(Debug)]
pub(crate) enum Effect<M, R> {
    Send { to: NodeId, message: M },
    Timer { after: Duration, timer: TimerId },
    Reply { id: RequestId, response: R },
    Sync { token: SyncToken, point: u64 },
}

/// What a node can see and do during one call.
pub struct Context<'a, N: Node> {
    pub(crate) id: NodeId,
    pub(crate) nodes: usize,
    pub(crate) now: SimTime,
    pub(crate) clock: &'a ManualClock,
    pub(crate) rng: &'a mut SimRng,
    pub(crate) disk: &'a mut Disk,
    pub(crate) effects: &'a mut Vec<Effect<N::Message, N::Response>>,
}

impl<N: Node> fmt::Debug for Context<'_, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("id", &self.id)
            .field("nodes", &self.nodes)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl<N: Node> Context<'_, N> {
    /// This node's id.
    #[must_use]
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// How many nodes the cluster has (ids `1..=nodes`).
    #[must_use]
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Every node id of the cluster, this one included.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + use<N> {
        (0..self.nodes).map(node_at)
    }

    /// This node's clock reading, which may be offset from true time, drift and jump.
    #[must_use]
    pub fn now(&self) -> SimTime {
        self.now
    }

    /// This node's clock, for code that reads a `synod_clocks::PhysicalClock` itself (a
    /// `HybridClock`, for example). Its true time is the event's virtual time; its wall
    /// reading is what [`Context::now`] returns, in nanoseconds. Keep a clone if you like:
    /// the simulator moves it forward before every call.
    #[must_use]
    pub fn clock(&self) -> &ManualClock {
        self.clock
    }

    /// This node's random-number generator, seeded from the run's seed.
    pub fn rng(&mut self) -> &mut SimRng {
        self.rng
    }

    /// This node's disk. Writes are readable at once but durable only after a sync.
    pub fn disk(&mut self) -> &mut Disk {
        self.disk
    }

    /// Sends `message` to `to`. The network may delay, drop, duplicate or reorder it.
    /// A message to this node itself is delivered through the network too. A message to a
    /// node outside the cluster (an id above `nodes()`) is dropped.
    pub fn send(&mut self, to: NodeId, message: N::Message) {
        self.effects.push(Effect::Send { to, message });
    }

    /// Asks for [`Node::on_timer`] with `timer` after `after` has passed on this node's
    /// clock.
    pub fn set_timer(&mut self, after: Duration, timer: TimerId) {
        self.effects.push(Effect::Timer { after, timer });
    }

    /// Answers the client request `id`. The reply may be lost on its way.
    pub fn reply(&mut self, id: RequestId, response: N::Response) {
        self.effects.push(Effect::Reply { id, response });
    }

    /// Asks the disk to make every write issued so far durable; [`Node::on_synced`] with
    /// `token` follows when it has (unless the node crashes first). Writes issued after
    /// this call are not promised durable by it.
    pub fn sync(&mut self, token: SyncToken) {
        let point = self.disk.sync_point();
        self.effects.push(Effect::Sync { token, point });
    }
}
