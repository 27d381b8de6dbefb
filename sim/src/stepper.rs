//! [`Stepper`]: a cluster stepped by hand, the test its scheduler.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use crate::clock::NodeClock;
use crate::disk::{CrashMode, Disk};
use crate::fault_log::CrashReport;
use crate::node::{ClientId, Context, Effect, Node, NodeId, RequestId, SyncToken, TimerId};
use crate::node::{node_at, slot_of};
use crate::rng::{SimRng, splitmix64};
use crate::time::SimTime;

/// The most messages [`Stepper::deliver_all`] delivers before it decides the nodes never
/// stop sending.
pub const DELIVERIES_MAX: u64 = 1_000_000;

/// The most rounds of syncs a node may ask for in a row, each caused by the completion of
/// the one before, while the stepper completes syncs as they are asked for.
const SYNC_ROUNDS_MAX: u32 = 10_000;

/// A message in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope<M> {
    /// The sending node.
    pub from: NodeId,
    /// The receiving node.
    pub to: NodeId,
    /// The message.
    pub message: M,
}

/// One node of a [`Stepper`].
struct Slot<N> {
    node: Option<N>,
    rng: SimRng,
    disk: Disk,
    clock: NodeClock,
    /// The node's own time, which only [`Stepper::elapse`] moves.
    now: SimTime,
    /// Timers set and not yet fired: local time due, timer.
    timers: Vec<(SimTime, TimerId)>,
    /// Syncs asked for and not yet completed, oldest first, each with its disk point.
    syncs: VecDeque<(SyncToken, u64)>,
    /// Whether the node's next sync fails.
    fail_next_sync: bool,
}

/// A cluster stepped by hand: the same [`Node`]s a [`Simulation`](crate::Simulation) runs
/// (a [`ProtocolNode`](crate::ProtocolNode) for any state machine on the node contract),
/// with the test as the scheduler.
///
/// A [`Simulation`](crate::Simulation) draws its schedule from a seed; a [`Stepper`] has
/// none. The test delivers the messages it chooses, in the order it chooses (changed, if it
/// likes, as a network that loses part of a batch would), moves each node's clock on its
/// own, completes each node's syncs when it says, and crashes and restarts nodes between
/// two steps. That reaches a schedule a random run meets rarely, such as the Raft paper's
/// figure 8, the same way every time.
///
/// Each node has its own clock, which only [`Stepper::elapse`] moves; timers fire on it,
/// in order, when it passes their time. A message is delivered at its receiver's time. A
/// crash drops the node, its timers and its syncs not yet completed, and its disk loses
/// what the crash mode says; messages to a node that is down are dropped when delivered.
///
/// ```
/// use std::convert::Infallible;
/// use std::io;
/// use std::time::Duration;
/// use synod_node::{Effect, EffectOf, Input, InputOf, Protocol, Time};
/// use synod_sim::{Boot, Disk, NodeId, ProtocolNode, ProtocolStore, Stepper};
///
/// /// Greets every other node once it has been up for 10 ms; counts the greetings.
/// struct Greeter { id: NodeId, nodes: u64, heard: u64, effects: Vec<EffectOf<Greeter>> }
///
/// impl Protocol for Greeter {
///     type Message = ();
///     type Request = Infallible;
///     type Response = Infallible;
///     type Write = ();
///     type Apply = ();
///     fn id(&self) -> NodeId { self.id }
///     fn handle(&mut self, _now: Time, input: InputOf<Self>) {
///         match input {
///             Input::Wake => {
///                 for to in (1..=self.nodes).map(NodeId::new).filter(|&to| to != self.id) {
///                     self.effects.push(Effect::Send { to, message: () });
///                 }
///             }
///             Input::Message { .. } => self.heard += 1,
///             _ => {}
///         }
///     }
///     fn poll(&mut self) -> Option<EffectOf<Self>> { self.effects.pop() }
/// }
///
/// struct NoDisk;
///
/// impl ProtocolStore for NoDisk {
///     type Protocol = Greeter;
///     fn recover(&mut self, boot: Boot<'_>) -> io::Result<Greeter> {
///         let wake = Effect::WakeAt(boot.now + Duration::from_millis(10));
///         Ok(Greeter { id: boot.id, nodes: boot.nodes as u64, heard: 0, effects: vec![wake] })
///     }
///     fn write(&mut self, _: &mut Disk, _: &()) -> io::Result<()> { Ok(()) }
/// }
///
/// let mut cluster = Stepper::new(3, 7, |_| ProtocolNode::new(NoDisk));
/// let (n1, n2, n3) = (NodeId::new(1), NodeId::new(2), NodeId::new(3));
/// cluster.elapse(n1, Duration::from_millis(9));
/// assert!(cluster.in_flight().is_empty(), "not yet");
/// cluster.elapse(n1, Duration::from_millis(1));
/// assert_eq!(cluster.in_flight().len(), 2);
/// // Node 3 hears nothing: its greeting is dropped on the way.
/// let to_3 = cluster.in_flight().iter().position(|m| m.to == n3).expect("sent");
/// cluster.take(to_3);
/// cluster.deliver_all();
/// let heard = |c: &Stepper<_>, id| c.node(id).and_then(ProtocolNode::protocol).map(|g: &Greeter| g.heard);
/// assert_eq!((heard(&cluster, n2), heard(&cluster, n3)), (Some(1), Some(0)));
/// // Between two steps, a test may call into a state machine itself.
/// let forgot = cluster.with_node(n2, |node, ctx| {
///     node.with_protocol(ctx, |g| std::mem::take(&mut g.heard))
/// });
/// assert_eq!(forgot, Some(Some(1)));
/// assert_eq!(heard(&cluster, n2), Some(0));
/// ```
pub struct Stepper<N: Node> {
    slots: Vec<Slot<N>>,
    factory: Box<dyn FnMut(NodeId) -> N>,
    in_flight: VecDeque<Envelope<N::Message>>,
    replies: Vec<(RequestId, N::Response)>,
    effects: Vec<Effect<N::Message, N::Response>>,
    requests: u64,
    auto_sync: bool,
}

impl<N: Node> fmt::Debug for Stepper<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stepper")
            .field("nodes", &self.slots.len())
            .field("in_flight", &self.in_flight.len())
            .field("auto_sync", &self.auto_sync)
            .finish_non_exhaustive()
    }
}

impl<N: Node> Stepper<N> {
    /// Nodes `1..=nodes`, each built by `factory` and started at once (its clock at zero),
    /// with generators and disks seeded from `seed`. Syncs complete as soon as they are
    /// asked for until [`Stepper::set_auto_sync`] says otherwise.
    ///
    /// # Panics
    ///
    /// If `nodes` is 0.
    pub fn new(nodes: usize, seed: u64, factory: impl FnMut(NodeId) -> N + 'static) -> Self {
        assert!(nodes > 0, "a cluster has at least one node");
        let mut root = seed;
        let mut node_rng = SimRng::new(splitmix64(&mut root));
        let mut disk_seeds = SimRng::new(splitmix64(&mut root));
        let slots = (0..nodes)
            .map(|_| Slot {
                node: None,
                rng: node_rng.fork(),
                disk: Disk::new(disk_seeds.next_u64()),
                clock: NodeClock::new(0),
                now: SimTime::ZERO,
                timers: Vec::new(),
                syncs: VecDeque::new(),
                fail_next_sync: false,
            })
            .collect();
        let mut stepper = Stepper {
            slots,
            factory: Box::new(factory),
            in_flight: VecDeque::new(),
            replies: Vec::new(),
            effects: Vec::new(),
            requests: 0,
            auto_sync: true,
        };
        for i in 0..nodes {
            stepper.start(node_at(i));
        }
        stepper
    }

    /// Whether syncs complete as soon as they are asked for (on by default). Off, a
    /// node's writes stay unsynced, and its state machine unacknowledged, until
    /// [`Stepper::sync`].
    pub fn set_auto_sync(&mut self, on: bool) {
        self.auto_sync = on;
    }

    /// Every node id, `1..=n`.
    pub fn ids(&self) -> impl Iterator<Item = NodeId> + use<N> {
        (0..self.slots.len()).map(node_at)
    }

    /// Node `id`, if it is up.
    #[must_use]
    pub fn node(&self, id: NodeId) -> Option<&N> {
        self.slots.get(slot_of(id))?.node.as_ref()
    }

    /// The nodes that are up.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &N)> + Clone {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((node_at(i), s.node.as_ref()?)))
    }

    /// Node `id`'s disk.
    #[must_use]
    pub fn disk(&self, id: NodeId) -> Option<&Disk> {
        self.slots.get(slot_of(id)).map(|s| &s.disk)
    }

    /// Node `id`'s time.
    #[must_use]
    pub fn now(&self, id: NodeId) -> Option<SimTime> {
        self.slots.get(slot_of(id)).map(|s| s.now)
    }

    /// The messages in flight, oldest first.
    #[must_use]
    pub fn in_flight(&self) -> &VecDeque<Envelope<N::Message>> {
        &self.in_flight
    }

    /// Takes the message at `at` off the network (to drop it, or deliver it changed).
    pub fn take(&mut self, at: usize) -> Option<Envelope<N::Message>> {
        self.in_flight.remove(at)
    }

    /// Puts `envelope` on the network, last in flight: a duplicate of one taken off it, or
    /// one the test held back.
    pub fn send(&mut self, envelope: Envelope<N::Message>) {
        self.in_flight.push_back(envelope);
    }

    /// Takes every message in flight off the network.
    pub fn take_all(&mut self) -> Vec<Envelope<N::Message>> {
        self.in_flight.drain(..).collect()
    }

    /// Delivers `envelope` to its receiver now: one taken off the network, or one the test
    /// made (a forged sender included). `false` if the receiver is down or outside the
    /// cluster, and the message is dropped.
    pub fn deliver(&mut self, envelope: Envelope<N::Message>) -> bool {
        let Envelope { from, to, message } = envelope;
        self.call(to, |node, ctx| node.on_message(ctx, from, message))
    }

    /// Delivers the messages in flight, oldest first, and those they cause, until none is
    /// left. Returns how many were taken off the network.
    ///
    /// # Panics
    ///
    /// After [`DELIVERIES_MAX`] messages: the nodes never stop sending.
    pub fn deliver_all(&mut self) -> u64 {
        let mut delivered = 0;
        while let Some(envelope) = self.in_flight.pop_front() {
            delivered += 1;
            assert!(delivered <= DELIVERIES_MAX, "messages never stop");
            self.deliver(envelope);
        }
        delivered
    }

    /// Delivers the messages in flight now, oldest first, and not those they cause: one
    /// network hop.
    pub fn deliver_hop(&mut self) {
        for envelope in self.take_all() {
            self.deliver(envelope);
        }
    }

    /// Moves node `id`'s clock on by `by`, firing its timers as their time comes, in
    /// order (a timer set by one that fired fires too if it is due by then).
    pub fn elapse(&mut self, id: NodeId, by: Duration) {
        let Some(slot) = self.slots.get_mut(slot_of(id)) else {
            return;
        };
        let until = slot.now.saturating_add(by);
        loop {
            let slot = &mut self.slots[slot_of(id)];
            let due = slot
                .timers
                .iter()
                .enumerate()
                .filter(|(_, (at, _))| *at <= until)
                .min_by_key(|(i, (at, _))| (*at, *i))
                .map(|(i, _)| i);
            let Some(i) = due else {
                slot.now = until;
                return;
            };
            let (at, timer) = slot.timers.remove(i);
            slot.now = slot.now.max(at);
            self.call(id, |node, ctx| node.on_timer(ctx, timer));
        }
    }

    /// Moves every node's clock on by `by`, node 1 first.
    pub fn elapse_all(&mut self, by: Duration) {
        for id in self.ids() {
            self.elapse(id, by);
        }
    }

    /// Completes the syncs node `id` has asked for (not those their completion causes),
    /// oldest first. Returns how many.
    pub fn sync(&mut self, id: NodeId) -> usize {
        let Some(slot) = self.slots.get_mut(slot_of(id)) else {
            return 0;
        };
        let pending: Vec<(SyncToken, u64)> = slot.syncs.drain(..).collect();
        let count = pending.len();
        for (token, point) in pending {
            let slot = &mut self.slots[slot_of(id)];
            if slot.node.is_none() {
                break;
            }
            // The disk's bookkeeping cannot fail on the points it handed out.
            if std::mem::take(&mut slot.fail_next_sync) {
                slot.disk
                    .fail_through(point)
                    .expect("simulated disk bookkeeping");
                self.call(id, |node, ctx| node.on_sync_failed(ctx, token));
            } else {
                slot.disk
                    .sync_through(point)
                    .expect("simulated disk bookkeeping");
                self.call(id, |node, ctx| node.on_synced(ctx, token));
            }
        }
        count
    }

    /// Completes every node's syncs.
    pub fn sync_all(&mut self) {
        for id in self.ids() {
            self.sync(id);
        }
    }

    /// Makes node `id`'s next sync fail (see [`Node::on_sync_failed`]).
    pub fn fail_next_sync(&mut self, id: NodeId) {
        if let Some(slot) = self.slots.get_mut(slot_of(id)) {
            slot.fail_next_sync = true;
        }
    }

    /// Hands `request` to node `id` as a client's; its reply, if any, is kept for
    /// [`Stepper::take_replies`]. `None` if the node is down.
    pub fn request(&mut self, id: NodeId, request: N::Request) -> Option<RequestId> {
        self.requests += 1;
        let handle = RequestId::new(ClientId::new(0), self.requests);
        self.call(id, |node, ctx| node.on_request(ctx, handle, request))
            .then_some(handle)
    }

    /// The replies nodes sent since the last call, in order.
    pub fn take_replies(&mut self) -> Vec<(RequestId, N::Response)> {
        std::mem::take(&mut self.replies)
    }

    /// Crashes node `id`: the node, its timers and its pending syncs are dropped, and its
    /// disk keeps what `mode` says of its unsynced writes. `None` if it was down.
    pub fn crash(&mut self, id: NodeId, mode: CrashMode) -> Option<CrashReport> {
        let slot = self.slots.get_mut(slot_of(id))?;
        slot.node.take()?;
        slot.timers.clear();
        slot.syncs.clear();
        slot.fail_next_sync = false;
        Some(slot.disk.crash(mode))
    }

    /// Starts node `id` again, from what its disk kept. Nothing if it is up.
    pub fn restart(&mut self, id: NodeId) {
        if self
            .slots
            .get(slot_of(id))
            .is_some_and(|s| s.node.is_none())
        {
            self.start(id);
        }
    }

    fn start(&mut self, id: NodeId) {
        let node = (self.factory)(id);
        self.slots[slot_of(id)].node = Some(node);
        self.call(id, N::on_start);
    }

    /// Calls `f` on node `id` at its time and carries out what it did (completing its syncs
    /// first, with auto-sync on): a test reaching into a node between two steps, as
    /// [`ProtocolNode::with_protocol`](crate::ProtocolNode::with_protocol) does to call a
    /// state machine's own methods. `None` if the node is down.
    pub fn with_node<R>(
        &mut self,
        id: NodeId,
        f: impl FnOnce(&mut N, &mut Context<'_, N>) -> R,
    ) -> Option<R> {
        let nodes = self.slots.len();
        let slot = self.slots.get_mut(slot_of(id))?;
        let node = slot.node.as_mut()?;
        let clock = slot.clock.at(slot.now);
        let mut ctx = Context {
            id,
            nodes,
            now: slot.now,
            clock,
            rng: &mut slot.rng,
            disk: &mut slot.disk,
            effects: &mut self.effects,
        };
        let out = f(node, &mut ctx);
        self.apply_effects(id);
        if self.auto_sync {
            let mut rounds = 0;
            while self.sync(id) > 0 {
                rounds += 1;
                assert!(
                    rounds < SYNC_ROUNDS_MAX,
                    "{id} never stops asking for syncs"
                );
            }
        }
        Some(out)
    }

    /// Calls into node `id` at its time and carries out what it did; `false` if it is
    /// down.
    fn call(&mut self, id: NodeId, f: impl FnOnce(&mut N, &mut Context<'_, N>)) -> bool {
        self.with_node(id, f).is_some()
    }

    fn apply_effects(&mut self, from: NodeId) {
        let nodes = self.slots.len();
        let slot = &mut self.slots[slot_of(from)];
        for effect in self.effects.drain(..) {
            match effect {
                Effect::Send { to, message } => {
                    if slot_of(to) < nodes {
                        self.in_flight.push_back(Envelope { from, to, message });
                    }
                }
                Effect::Timer { after, timer } => {
                    slot.timers.push((slot.now.saturating_add(after), timer));
                }
                Effect::Reply { id, response } => self.replies.push((id, response)),
                Effect::Sync { token, point } => slot.syncs.push_back((token, point)),
            }
        }
    }
}
