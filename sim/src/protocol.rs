//! Any `synod_node::Protocol` as a simulated [`Node`]: the one driver every Synod state
//! machine is simulated through.
//!
//! The [`ProtocolNode`] adapter and the [`ProtocolStore`] a protocol's author writes for it.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::io;
use std::time::Duration;

use synod_clocks::PhysicalClock;
use synod_node::{Effect, Input, InputOf, PersistToken, Protocol, Time};

use crate::disk::Disk;
use crate::node::{Context, Node, NodeId, RequestId, SyncToken, TimerId};
use crate::rng::SimRng;

/// What a protocol's author tells [`ProtocolNode`]: how its writes are laid out on a
/// simulated [`Disk`], and how the state machine is built from what a disk holds.
///
/// A fresh store comes with every start of a node (the node factory builds one), so a store
/// may keep volatile bookkeeping (where the next record goes) without it surviving a crash.
///
/// # A store on real storage code
///
/// A store may keep its data with code written for real files, such as a
/// `synod_wal::Wal` or a production log store: it opens it at [`ProtocolStore::recover`] on
/// `boot.disk.storage()` (a [`crate::DiskStorage`], or [`Disk::storage_in`] for one
/// directory), and writes through it in [`ProtocolStore::write`]. Every write must reach the
/// disk before `write` returns, because the adapter's sync covers only what was written
/// before it was asked for: under `synod_wal::SyncPolicy::Manual` a `Wal` keeps appended
/// records in memory until its own sync, so the store calls `Wal::flush`. The store's own
/// syncs (a `Wal::sync`, a roll-over to a new segment) are synchronous and make the data
/// durable at once; a failed one returns an error from `write` (fail-stop).
///
/// ```
/// use std::io;
/// use std::sync::Arc;
/// use synod_sim::{
///     Boot, CrashMode, Disk, DiskStorage, FaultKind, NemesisConfig, NoClients, NodeId,
///     ProtocolNode, ProtocolStore, SimConfig, Simulation,
/// };
/// use synod_wal::{ManualClock, SyncPolicy, Wal, WalConfig};
/// # use synod_node::{Effect, EffectOf, Input, InputOf, PersistToken, Protocol, Time};
/// # /// Counts its durable records; persists one at its start.
/// # struct Counter { id: NodeId, records: u64, effects: Vec<EffectOf<Counter>> }
/// # impl Protocol for Counter {
/// #     type Message = ();
/// #     type Request = ();
/// #     type Response = u64;
/// #     type Write = u64;
/// #     type Apply = ();
/// #     fn id(&self) -> NodeId { self.id }
/// #     fn handle(&mut self, _now: Time, input: InputOf<Self>) {
/// #         if let Input::Persisted(_) = input { self.records += 1; }
/// #     }
/// #     fn poll(&mut self) -> Option<EffectOf<Self>> { self.effects.pop() }
/// # }
///
/// /// Each write of the counter is a record of a write-ahead log on the node's disk.
/// struct WalStore {
///     wal: Option<Wal<DiskStorage>>,
/// }
///
/// impl ProtocolStore for WalStore {
///     type Protocol = Counter;
///
///     fn recover(&mut self, boot: Boot<'_>) -> io::Result<Counter> {
///         let config = WalConfig::builder()
///             .sync_policy(SyncPolicy::Manual) // the adapter syncs the disk
///             .clock(Arc::new(ManualClock::new(0))) // segment stamps from no real clock
///             .build()
///             .map_err(io::Error::other)?;
///         let (wal, report) = Wal::open(boot.disk.storage(), config).map_err(io::Error::other)?;
///         self.wal = Some(wal);
///         let first = Effect::Persist { token: PersistToken::default().next(), write: report.records };
///         Ok(Counter { id: boot.id, records: report.records, effects: vec![first] })
///     }
///
///     fn write(&mut self, _disk: &mut Disk, write: &u64) -> io::Result<()> {
///         let wal = self.wal.as_ref().expect("recovered");
///         wal.append(write.to_le_bytes().to_vec()).map_err(io::Error::other)?;
///         // Onto the disk now, so that the adapter's sync covers it.
///         wal.flush().map_err(io::Error::other)?;
///         Ok(())
///     }
/// }
///
/// // Crashed and restarted (each crash in any mode), it counts every start it made durable.
/// let nemesis = NemesisConfig::builder().kinds(&[FaultKind::Crash]).crash_modes(&CrashMode::ALL).build();
/// let config = SimConfig::builder(1).nemesis(nemesis).build()?;
/// for seed in 0..5 {
///     let factory = |_| ProtocolNode::new(WalStore { wal: None });
///     let report = Simulation::new(config.clone(), seed, factory, NoClients)
///         .progress(|view| {
///             let counter = view.node(NodeId::new(1)).and_then(|n| n.protocol());
///             counter.is_some_and(|c| c.records >= 1)
///         })
///         .run();
///     assert!(report.failure.is_none(), "seed {seed}: {:?}", report.failure);
/// }
/// # Ok::<(), synod_sim::ConfigError>(())
/// ```
pub trait ProtocolStore {
    /// The state machine this store persists.
    type Protocol: Protocol;

    /// Builds the state machine from what `boot.disk` holds: at a node's first start (an
    /// empty disk), after every restart, and after a failed sync ended its incarnation.
    /// Anything the state machine must make durable before it serves (a new generation, say)
    /// it asks for with its first `Effect::Persist`, polled right after this returns.
    ///
    /// # Errors
    ///
    /// A disk error (a full disk refusing a repair); the node then stops (fail-stop) until
    /// the simulator restarts it.
    fn recover(&mut self, boot: Boot<'_>) -> io::Result<Self::Protocol>;

    /// Writes `write` to `disk` (or through a storage handle the store took from the disk at
    /// [`ProtocolStore::recover`]), after every earlier write, and onto the disk before it
    /// returns. The adapter syncs; a store's own syncs are synchronous.
    ///
    /// # Errors
    ///
    /// A disk error (a full disk); the node then stops (fail-stop), as a process that
    /// cannot write its log must, until the simulator restarts it.
    fn write(
        &mut self,
        disk: &mut Disk,
        write: &<Self::Protocol as Protocol>::Write,
    ) -> io::Result<()>;

    /// Takes what the state machine hands up with `Effect::Apply`. The default drops it.
    fn apply(&mut self, apply: <Self::Protocol as Protocol>::Apply) {
        let _ = apply;
    }
}

/// What [`ProtocolStore::recover`] builds a state machine from.
#[derive(Debug)]
#[non_exhaustive]
pub struct Boot<'a> {
    /// The node starting.
    pub id: NodeId,
    /// How many nodes the cluster has (ids `1..=nodes`).
    pub nodes: usize,
    /// What survived on the node's disk.
    pub disk: &'a mut Disk,
    /// The node's generator, seeded from the run's seed (for a protocol's own seed).
    pub rng: &'a mut SimRng,
    /// The node's clock at the start.
    pub now: Time,
}

/// Any `synod_node::Protocol` as a simulated [`Node`]: the one driver every Synod state
/// machine is simulated through. Build one per start in the node factory:
/// `move |_id| ProtocolNode::new(MyStore::default())`.
///
/// A protocol written on the node contract (inputs in with the time, effects out through
/// `poll`, persistence acknowledged by token) needs nothing simulator-specific but two
/// things only its author knows: how a `Protocol::Write` is laid out on a [`Disk`], and
/// how the state machine is built from what a disk holds. [`ProtocolStore`] is those two;
/// this adapter is the rest, written once:
///
/// | Simulator | Protocol |
/// |---|---|
/// | [`Node::on_start`] | [`ProtocolStore::recover`] builds a fresh state machine from the disk (restart is construction) |
/// | [`Node::on_message`] | `Input::Message` |
/// | [`Node::on_request`] | `Input::Request`, with a `synod_node::RequestId` of the adapter's; `Effect::Reply` goes back to the client |
/// | `Effect::WakeAt` | one timer per node: a later `WakeAt` replaces the earlier, and `Input::Wake` is never delivered before its time |
/// | `Effect::Persist` | [`ProtocolStore::write`], then one [`Context::sync`] covering every write of the drain (group commit) |
/// | [`Node::on_synced`] | `Input::Persisted` with the highest token the sync covered |
/// | [`Node::on_sync_failed`] | the incarnation ends: the state machine is dropped and rebuilt from the disk |
/// | `Effect::Apply` | [`ProtocolStore::apply`] |
///
/// The time handed to the protocol is the node's simulated *monotonic* clock, as a real
/// process reads `Instant`: it drifts as the run decides and keeps moving while the node is
/// paused, but a step of the node's wall clock (a clock jump) does not move it, as an NTP
/// step does not move `CLOCK_MONOTONIC`. A state machine that needs wall-clock time (a
/// last-write-wins timestamp) takes it in its own inputs or configuration. The times handed
/// to one state machine never go backwards.
///
/// A failed sync ends the incarnation (the contract's rule 5), but the state machine is
/// not rebuilt at once: writes issued after the failed sync are still in the page cache,
/// readable but not durable, and a state machine built from them could answer from data a
/// crash then loses. The adapter first asks for a sync of everything on the disk and
/// rebuilds only once that sync has completed (asking again if it fails too). A node that
/// stopped on a disk write error stays stopped until the simulator restarts it.
///
/// # Example
///
/// The register of `synod-node`'s crate documentation (it makes each write durable before
/// it answers), with a store that appends each write to a log, run under crashes, pauses
/// and clock jumps, and checked for linearizability.
///
/// ```
/// use std::collections::VecDeque;
/// use std::convert::Infallible;
/// use std::io;
/// use std::time::Duration;
/// use synod_node::{Effect, EffectOf, Input, InputOf, PersistToken, Protocol, Time};
/// use synod_sim::{
///     Boot, ClientId, Completion, CrashMode, Disk, FaultKind, Invocation, KvInput, KvModel,
///     KvOutput, Linearizability, NemesisConfig, NodeId, ProtocolNode, ProtocolStore,
///     SimConfig, SimRng, Simulation, Workload,
/// };
///
/// /// Stores one number; acknowledges a write once it is durable and answers reads with the
/// /// last durable value (a read that saw a value a crash then lost would be a stale read).
/// struct Register {
///     id: NodeId,
///     durable: Option<u64>,
///     last_token: PersistToken,
///     waiting: VecDeque<(PersistToken, synod_node::RequestId, u64)>,
///     effects: VecDeque<EffectOf<Register>>,
/// }
///
/// impl Protocol for Register {
///     type Message = Infallible; // a single node sends nothing
///     type Request = Option<u64>; // Some(v) writes v, None reads
///     type Response = Option<u64>;
///     type Write = u64;
///     type Apply = Infallible;
///
///     fn id(&self) -> NodeId {
///         self.id
///     }
///
///     fn handle(&mut self, _now: Time, input: InputOf<Self>) {
///         match input {
///             Input::Request { id, request: Some(v) } => {
///                 self.last_token = self.last_token.next();
///                 self.waiting.push_back((self.last_token, id, v));
///                 self.effects.push_back(Effect::Persist { token: self.last_token, write: v });
///             }
///             Input::Request { id, request: None } => {
///                 self.effects.push_back(Effect::Reply { id, response: self.durable });
///             }
///             Input::Persisted(token) => {
///                 while let Some(&(t, id, v)) = self.waiting.front() && t <= token {
///                     self.waiting.pop_front();
///                     self.durable = Some(v);
///                     self.effects.push_back(Effect::Reply { id, response: Some(v) });
///                 }
///             }
///             Input::Message { message, .. } => match message {},
///             Input::Wake => {}
///         }
///     }
///
///     fn poll(&mut self) -> Option<EffectOf<Self>> {
///         self.effects.pop_front()
///     }
/// }
///
/// /// The register's log: whole 8-byte records, the last one is the value.
/// struct Log;
///
/// impl ProtocolStore for Log {
///     type Protocol = Register;
///
///     fn recover(&mut self, boot: Boot<'_>) -> io::Result<Register> {
///         let log = boot.disk.read("log").unwrap_or_default();
///         let whole = log.len() / 8 * 8; // a torn tail was never acknowledged: cut it off
///         boot.disk.set_len("log", whole as u64)?;
///         let durable = log[..whole].chunks_exact(8).last().map(|record| {
///             u64::from_le_bytes(record.try_into().expect("8 bytes"))
///         });
///         Ok(Register {
///             id: boot.id,
///             durable,
///             last_token: PersistToken::default(),
///             waiting: VecDeque::new(),
///             effects: VecDeque::new(),
///         })
///     }
///
///     fn write(&mut self, disk: &mut Disk, value: &u64) -> io::Result<()> {
///         disk.append("log", &value.to_le_bytes())
///     }
/// }
///
/// /// Clients reading and writing unique values.
/// struct Clients(u64);
///
/// impl Workload<ProtocolNode<Log>> for Clients {
///     type Input = KvInput;
///     type Output = KvOutput;
///
///     fn invoke(&mut self, _: ClientId, _: usize, rng: &mut SimRng)
///         -> Option<Invocation<Option<u64>, KvInput>>
///     {
///         self.0 += 1;
///         let (request, input) = if rng.below(2) == 0 {
///             (None, KvInput::Read { key: 0 })
///         } else {
///             (Some(self.0), KvInput::Write { key: 0, value: self.0 })
///         };
///         Some(Invocation { node: NodeId::new(1), request, input })
///     }
///
///     fn complete(&mut self, _: ClientId, input: &KvInput, out: &Option<u64>)
///         -> Completion<KvOutput>
///     {
///         Completion::Ok(match input {
///             KvInput::Read { .. } => KvOutput::Read(*out),
///             _ => KvOutput::Written,
///         })
///     }
/// }
///
/// let nemesis = NemesisConfig::builder()
///     .kinds(&[FaultKind::Crash, FaultKind::Pause, FaultKind::ClockJump])
///     .crash_modes(&[CrashMode::DropUnsynced, CrashMode::KeepPrefix, CrashMode::TearLast])
///     .crashed_nodes_max(1)
///     .build();
/// let config = SimConfig::builder(1)
///     .clients(3)
///     .safety_time(Duration::from_millis(200))
///     .nemesis(nemesis)
///     .build()?;
/// for seed in 0..10 {
///     let report = Simulation::new(config.clone(), seed, |_| ProtocolNode::new(Log), Clients(0))
///         .progress(|view| view.healed_at().is_some_and(|t| view.history().ok_invoked_since(t) > 0))
///         .run();
///     assert_eq!(report.check(&mut Linearizability::new(KvModel)), Ok(()), "seed {seed}");
/// }
/// # Ok::<(), synod_sim::ConfigError>(())
/// ```
pub struct ProtocolNode<S: ProtocolStore> {
    store: S,
    /// The running state machine; `None` before the start and after a disk error.
    protocol: Option<S::Protocol>,
    /// The latest time handed to the state machine.
    now: Time,
    /// The client request behind each request id handed to the state machine.
    requests: BTreeMap<synod_node::RequestId, RequestId>,
    requests_started: u64,
    /// The deadline of the latest `WakeAt`, and the timer that carries it (earlier timers
    /// are stale and ignored).
    wake_at: Option<Time>,
    wake_timer: u64,
    /// Syncs in flight, in order, each with the highest persist token it covers.
    syncs: VecDeque<(SyncToken, PersistToken)>,
    syncs_requested: u64,
    /// Incarnations ended by a failed sync.
    restarts: u64,
    /// After a failed sync: the sync of everything on the disk that must complete before
    /// the state machine is rebuilt.
    rebuild_after: Option<SyncToken>,
    /// Stopped by a disk error until the simulator restarts the node.
    halted: bool,
}

impl<S: ProtocolStore> ProtocolNode<S> {
    /// A node that will run the state machine `store` recovers when the simulator starts it.
    #[must_use]
    pub fn new(store: S) -> Self {
        ProtocolNode {
            store,
            protocol: None,
            now: Time::ZERO,
            requests: BTreeMap::new(),
            requests_started: 0,
            wake_at: None,
            wake_timer: 0,
            syncs: VecDeque::new(),
            syncs_requested: 0,
            restarts: 0,
            rebuild_after: None,
            halted: false,
        }
    }

    /// The running state machine (for invariants over the cluster); `None` before the node
    /// started and after a disk error stopped it.
    #[must_use]
    pub fn protocol(&self) -> Option<&S::Protocol> {
        self.protocol.as_ref()
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &S {
        &self.store
    }

    /// How many times a failed sync ended the state machine's incarnation since the
    /// simulator started this node.
    #[must_use]
    pub fn restarts(&self) -> u64 {
        self.restarts
    }
}

impl<S> ProtocolNode<S>
where
    S: ProtocolStore,
    <S::Protocol as Protocol>::Message: Clone + fmt::Debug + Hash,
    <S::Protocol as Protocol>::Request: Clone + fmt::Debug + Hash,
    <S::Protocol as Protocol>::Response: Clone + fmt::Debug + Hash,
{
    /// The node's clock as the state machine sees it: never behind a time it was handed.
    fn read_clock(&mut self, ctx: &Context<'_, Self>) -> Time {
        let reading = ctx.clock().monotonic();
        self.now = self.now.max(reading);
        self.now
    }

    /// Runs `f` on the running state machine and carries out the effects it left, at the
    /// node's time: for a test that calls one of the state machine's own methods (outside
    /// the node contract) between two steps, through [`Stepper::with_node`]. `None` if the
    /// state machine is not running.
    ///
    /// [`Stepper::with_node`]: crate::Stepper::with_node
    pub fn with_protocol<R>(
        &mut self,
        ctx: &mut Context<'_, Self>,
        f: impl FnOnce(&mut S::Protocol) -> R,
    ) -> Option<R> {
        let now = self.read_clock(ctx);
        let out = f(self.protocol.as_mut()?);
        self.drain(ctx, now);
        Some(out)
    }

    /// Builds the state machine from the disk and carries out its first effects.
    fn boot(&mut self, ctx: &mut Context<'_, Self>) {
        let now = self.read_clock(ctx);
        let start = Boot {
            id: ctx.id,
            nodes: ctx.nodes,
            disk: &mut *ctx.disk,
            rng: &mut *ctx.rng,
            now,
        };
        match self.store.recover(start) {
            Ok(protocol) => {
                self.protocol = Some(protocol);
                self.drain(ctx, now);
            }
            Err(_) => self.halt(),
        }
    }

    /// Fail-stop on a disk error: nothing more leaves this node until the simulator
    /// restarts it (a fresh adapter from the node factory).
    fn halt(&mut self) {
        self.protocol = None;
        self.halted = true;
        self.rebuild_after = None;
    }

    /// Hands `input` to the state machine at the node's current time and carries out what
    /// it asks for.
    fn input(&mut self, ctx: &mut Context<'_, Self>, input: InputOf<S::Protocol>)
    where
        Self: Node<
                Message = <S::Protocol as Protocol>::Message,
                Response = <S::Protocol as Protocol>::Response,
            >,
    {
        let now = self.read_clock(ctx);
        let Some(protocol) = self.protocol.as_mut() else {
            return;
        };
        protocol.handle(now, input);
        self.drain(ctx, now);
    }

    /// Carries out every effect the state machine has, in order; persists are written as
    /// they come and covered by one sync at the end.
    fn drain(&mut self, ctx: &mut Context<'_, Self>, now: Time) {
        let Some(protocol) = self.protocol.as_mut() else {
            return;
        };
        let mut covered = None;
        while let Some(effect) = protocol.poll() {
            match effect {
                Effect::Send { to, message } => ctx.send(to, message),
                Effect::Reply { id, response } => {
                    if let Some(request) = self.requests.remove(&id) {
                        ctx.reply(request, response);
                    }
                }
                Effect::Persist { token, write } => {
                    if self.store.write(ctx.disk(), &write).is_err() {
                        self.halt();
                        return;
                    }
                    covered = Some(token);
                }
                Effect::Apply(apply) => self.store.apply(apply),
                Effect::WakeAt(at) => {
                    self.wake_at = Some(at);
                    self.wake_timer += 1;
                    let after = at.saturating_duration_since(now);
                    ctx.set_timer(after, TimerId(self.wake_timer));
                }
            }
        }
        if let Some(token) = covered {
            self.syncs_requested += 1;
            let sync = SyncToken(self.syncs_requested);
            ctx.sync(sync);
            self.syncs.push_back((sync, token));
        }
    }
}

impl<S: ProtocolStore> fmt::Debug for ProtocolNode<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtocolNode")
            .field("running", &self.protocol.is_some())
            .field("now", &self.now)
            .field("requests", &self.requests.len())
            .field("wake_at", &self.wake_at)
            .field("syncs", &self.syncs.len())
            .field("restarts", &self.restarts)
            .finish_non_exhaustive()
    }
}

impl<S> Node for ProtocolNode<S>
where
    S: ProtocolStore,
    <S::Protocol as Protocol>::Message: Clone + fmt::Debug + Hash,
    <S::Protocol as Protocol>::Request: Clone + fmt::Debug + Hash,
    <S::Protocol as Protocol>::Response: Clone + fmt::Debug + Hash,
{
    type Message = <S::Protocol as Protocol>::Message;
    type Request = <S::Protocol as Protocol>::Request;
    type Response = <S::Protocol as Protocol>::Response;

    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        self.boot(ctx);
    }

    fn on_message(&mut self, ctx: &mut Context<'_, Self>, from: NodeId, message: Self::Message) {
        self.input(ctx, Input::Message { from, message });
    }

    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, timer: TimerId) {
        let Some(at) = self.wake_at else {
            return;
        };
        if timer != TimerId(self.wake_timer) {
            return; // replaced by a later WakeAt
        }
        let now = self.read_clock(ctx);
        if now < at {
            // The clock was stepped back or ran slow: wait for the rest, never wake early.
            let rest = at
                .saturating_duration_since(now)
                .max(Duration::from_micros(1));
            ctx.set_timer(rest, timer);
            return;
        }
        self.wake_at = None;
        self.input(ctx, Input::Wake);
    }

    fn on_request(&mut self, ctx: &mut Context<'_, Self>, id: RequestId, request: Self::Request) {
        if self.protocol.is_none() {
            return; // stopped: the client hears nothing and records the request unknown
        }
        self.requests_started += 1;
        let handle = synod_node::RequestId(self.requests_started);
        self.requests.insert(handle, id);
        self.input(
            ctx,
            Input::Request {
                id: handle,
                request,
            },
        );
    }

    fn on_synced(&mut self, ctx: &mut Context<'_, Self>, token: SyncToken) {
        if self.halted {
            return;
        }
        if let Some(rebuild) = self.rebuild_after {
            // Between incarnations: only the sync of everything on the disk matters.
            if token >= rebuild {
                self.rebuild_after = None;
                self.boot(ctx);
            }
            return;
        }
        // A sync makes every write issued before it durable, so it covers earlier syncs too.
        let mut covered = None;
        while let Some(&(sync, persisted)) = self.syncs.front()
            && sync <= token
        {
            covered = Some(persisted);
            self.syncs.pop_front();
        }
        if let Some(persisted) = covered {
            self.input(ctx, Input::Persisted(persisted));
        }
    }

    fn on_sync_failed(&mut self, ctx: &mut Context<'_, Self>, token: SyncToken) {
        if self.halted {
            return;
        }
        match self.rebuild_after {
            // A sync of the ended incarnation failing too: the pending rebuild sync,
            // requested after it, still decides.
            Some(rebuild) if token < rebuild => return,
            // The rebuild sync failed: ask again below.
            Some(_) => {}
            // The contract's rule: a failed sync ends the incarnation; never retry and carry
            // on. Everything volatile goes (requests in flight end unknown).
            None => {
                self.restarts += 1;
                self.protocol = None;
                self.requests.clear();
                self.syncs.clear();
                self.wake_at = None;
            }
        }
        // Writes issued after the failed sync are readable but not durable: make what the
        // disk holds durable before a state machine is built from it.
        self.syncs_requested += 1;
        let rebuild = SyncToken(self.syncs_requested);
        ctx.sync(rebuild);
        self.rebuild_after = Some(rebuild);
    }
}
