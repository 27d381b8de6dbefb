//! Deterministic simulation of distributed state machines, with faults and checkers.
//!
//! `synod-sim` runs a whole cluster in one thread from one seed, in the manner of
//! FoundationDB's simulator and TigerBeetle's VOPR: virtual time, an event queue, a network
//! that delays, drops, duplicates, reorders and partitions, disks that lose unsynced writes
//! at a crash, clocks that drift and jump, processes that crash, restart and pause. A
//! nemesis draws the faults from the seed. Client operations are recorded as a history and
//! checked for linearizability. The same seed gives the same run, event for event, which a
//! trace hash verifies; a failing seed replays with one environment variable.
//!
//! It is how Synod tests its own protocols, and a tool in its own right: any I/O-free
//! ("sans-I/O") state machine that implements the small [`Node`] trait can be run under it.
//!
//! # Patterns
//!
//! *Patterns of Distributed Systems* has no pattern for the simulator itself; this crate is
//! how the others are shown correct under the failures they exist to survive: the
//! **Write-Ahead Log** (disks that tear and lose writes), **Quorum** and **Majority
//! Quorum** (partitions, lost and duplicated messages), **HeartBeat** and leases (pauses,
//! clock drift and jumps), **Leader and Followers**, **Replicated Log** and **Paxos** (all
//! of it at once). The tests in this crate put a quorum register (Attiya, Bar-Noy and
//! Dolev's) through it.
//!
//! # What it does not do
//!
//! - It runs I/O-free state machines only: code that opens sockets, reads the OS clock or
//!   spawns threads cannot be simulated (Synod's protocol crates are written this way).
//! - It is single-threaded: it finds interleavings of messages and faults, not data races
//!   between threads.
//! - It models a process crash as the loss of everything in memory, and a machine crash's
//!   effect on unsynced disk writes; it does not model partial failures inside a process.
//! - The linearizability checker decides histories of a sequential model; it does not
//!   check weaker models (serializability, causal consistency) beyond what an invariant
//!   over the history can express.
//!
//! # Main types
//!
//! - [`Node`]: what a simulated node implements; [`Context`]: what it acts through.
//! - [`ProtocolNode`]: any `synod_node::Protocol` as a [`Node`], given a [`ProtocolStore`]
//!   (how its writes are laid out on the [`Disk`], how it is built from what the disk holds,
//!   with a [`Boot`]). Every Synod state machine on the node contract is simulated through it.
//! - [`Workload`]: what clients ask, and what the answers mean for the history.
//! - [`SimConfig`] (built by [`SimConfig::builder`]), [`Simulation`], [`RunReport`].
//! - [`NemesisConfig`], [`FaultKind`], [`FaultProfile`], [`Coverage`], [`Counter`]: the
//!   fault schedule and how often each fault fired; [`FaultLog`] of [`FaultEntry`]s, each
//!   a [`Fault`] with its time and [`FaultSource`]: when each fault fired and what it did;
//!   [`Action`]: a fault scheduled by hand. [`LinkConfig`], [`DelayDistribution`],
//!   [`Cut`], [`PartitionShape`]: the network. [`Disk`], [`CrashMode`], [`CrashReport`]:
//!   the disks; [`DiskStorage`]: a disk as a `synod_wal::Storage`, so that a
//!   `synod_wal::Wal` or a production log store runs on it.
//! - [`History`], [`Linearizability`], [`Model`], [`KvModel`], [`OkInvariant`],
//!   [`HistoryChecker`], [`Verdict`]: histories and their checkers; [`HistoryFormat`]:
//!   a key-value history written for checkers Synod did not write (Jepsen's EDN history,
//!   porcupine's operations as JSON). [`WatchChecker`]: the six guarantees of watch
//!   streams (ordered, unique, atomic, reliable, resumable, progress) across resumptions
//!   on any replica.
//! - [`timeline`]: a run drawn as one self-contained HTML page ([`timeline::Timeline`],
//!   recorded by a [`timeline::Recorder`], described by [`timeline::Describe`]), and
//!   [`Culprit`]: the operations behind a linearizability violation.
//! - [`Stepper`]: the same nodes stepped by hand, each message, clock and sync moved by
//!   the test ([`Envelope`]: a message in flight), to reproduce one schedule exactly.
//! - [`seeds::SeedRunner`]: many seeds, and the replay command of a failing one.
//! - [`mutate`]: bit flips, truncations, splices and length fields set to 0 or huge, for
//!   testing decoders of bytes from disk or network.
//! - [`SimRng`] (xoshiro256** seeded by splitmix64), [`SimTime`], [`TraceHasher`].
//!
//! # Putting a state machine under simulation
//!
//! A node is a value with five handlers; a workload says what clients send. Here a
//! single-node durable register logs each write and answers only once what the answer
//! depends on is synced. Under crashes, pauses and clock jumps its history is
//! linearizable; the same node answering before the sync is caught within a few seeds.
//!
//! ```
//! use std::time::Duration;
//! use synod_sim::{
//!     ClientId, Completion, Context, CrashMode, FaultKind, Invocation, KvInput, KvModel,
//!     KvOutput, Linearizability, NemesisConfig, Node, NodeId, RequestId, SimConfig, SimRng,
//!     Simulation, SyncToken, TimerId, Workload,
//! };
//!
//! /// A one-node register: the value lives in memory and in an append-only log on disk.
//! struct Register {
//!     careless: bool, // answer before the log is synced (a bug)
//!     value: Option<u64>,
//!     syncs: u64,
//!     waiting: Vec<(u64, RequestId, KvOutput)>, // (sync awaited, request, answer)
//! }
//!
//! impl Node for Register {
//!     type Message = ();
//!     type Request = KvInput;
//!     type Response = KvOutput;
//!
//!     fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
//!         // Recover from what survived: whole 8-byte records; a torn tail is cut off.
//!         if let Some(log) = ctx.disk().read("log") {
//!             let whole = log.len() / 8 * 8;
//!             self.value = log[..whole].chunks_exact(8).last().map(|r| {
//!                 u64::from_le_bytes(r.try_into().expect("8 bytes"))
//!             });
//!             ctx.disk().set_len("log", whole as u64).expect("simulated disk");
//!         }
//!     }
//!
//!     fn on_request(&mut self, ctx: &mut Context<'_, Self>, id: RequestId, op: KvInput) {
//!         let answer = match op {
//!             KvInput::Write { value, .. } => {
//!                 self.value = Some(value);
//!                 ctx.disk().append("log", &value.to_le_bytes()).expect("simulated disk");
//!                 KvOutput::Written
//!             }
//!             KvInput::Read { .. } => KvOutput::Read(self.value),
//!             KvInput::Cas { .. } => return, // not used by this workload
//!         };
//!         if self.careless {
//!             ctx.reply(id, answer);
//!             return;
//!         }
//!         self.syncs += 1;
//!         ctx.sync(SyncToken(self.syncs));
//!         self.waiting.push((self.syncs, id, answer));
//!     }
//!
//!     fn on_synced(&mut self, ctx: &mut Context<'_, Self>, token: SyncToken) {
//!         for (_, id, answer) in self.waiting.extract_if(.., |(s, _, _)| *s <= token.0) {
//!             ctx.reply(id, answer);
//!         }
//!     }
//!
//!     fn on_message(&mut self, _: &mut Context<'_, Self>, _: NodeId, _: ()) {}
//!     fn on_timer(&mut self, _: &mut Context<'_, Self>, _: TimerId) {}
//! }
//!
//! /// Clients reading and writing unique values.
//! struct Clients(u64);
//!
//! impl Workload<Register> for Clients {
//!     type Input = KvInput;
//!     type Output = KvOutput;
//!
//!     fn invoke(&mut self, _: ClientId, _: usize, rng: &mut SimRng)
//!         -> Option<Invocation<KvInput, KvInput>>
//!     {
//!         self.0 += 1;
//!         let op = if rng.below(2) == 0 {
//!             KvInput::Read { key: 0 }
//!         } else {
//!             KvInput::Write { key: 0, value: self.0 }
//!         };
//!         Some(Invocation { node: NodeId::new(1), request: op, input: op })
//!     }
//!
//!     fn complete(&mut self, _: ClientId, _: &KvInput, out: &KvOutput) -> Completion<KvOutput> {
//!         Completion::Ok(*out)
//!     }
//! }
//!
//! // Crashes (this toy log has no checksums, so only modes that do not corrupt bytes),
//! // pauses and clock jumps; a single node may be down.
//! let nemesis = NemesisConfig::builder()
//!     .kinds(&[FaultKind::Crash, FaultKind::Pause, FaultKind::ClockJump])
//!     .crash_modes(&[CrashMode::DropUnsynced, CrashMode::KeepPrefix, CrashMode::TearLast])
//!     .crashed_nodes_max(1)
//!     .build();
//! let config = SimConfig::builder(1)
//!     .clients(3)
//!     .safety_time(Duration::from_millis(200))
//!     .nemesis(nemesis)
//!     .build()?;
//! let run = |careless: bool, seed: u64| {
//!     let node = move |_| Register { careless, value: None, syncs: 0, waiting: Vec::new() };
//!     Simulation::new(config.clone(), seed, node, Clients(0))
//!         // Liveness: once healed, some new operation must succeed.
//!         .progress(|view| view.healed_at().is_some_and(|t| view.history().ok_invoked_since(t) > 0))
//!         .run()
//! };
//! for seed in 0..20 {
//!     let report = run(false, seed);
//!     assert_eq!(report.check(&mut Linearizability::new(KvModel)), Ok(()), "seed {seed}");
//!     assert_eq!(run(false, seed).trace_hash, report.trace_hash); // deterministic
//! }
//! let caught = (0..20).find(|&seed| {
//!     run(true, seed).check(&mut Linearizability::new(KvModel)).is_err()
//! });
//! assert!(caught.is_some(), "answering before the sync loses acknowledged writes");
//! # Ok::<(), synod_sim::ConfigError>(())
//! ```
//!
//! A state machine written on `synod-node`'s contract needs no [`Node`] of its own:
//! [`ProtocolNode`] drives it (its documentation runs the contract's register this way).
//!
//! For more nodes, send messages with [`Context::send`], keep timers with
//! [`Context::set_timer`], and check an invariant over all nodes after every event with
//! [`Simulation::invariant`].
//!
//! # The node interface
//!
//! For each node the simulator calls, in virtual-time order:
//!
//! 1. [`Node::on_start`] when the node boots, and again after every restart. Each start
//!    gets a fresh value from the factory given to [`Simulation::new`], so nothing
//!    volatile survives a crash; the node rebuilds its state from [`Context::disk`].
//! 2. Then any number of [`Node::on_message`], [`Node::on_timer`], [`Node::on_request`]
//!    [`Node::on_synced`] and [`Node::on_sync_failed`], one at a time, each running to
//!    completion.
//!
//! Within a call a node reads its clock ([`Context::now`], [`Context::clock`]), draws
//! randomness ([`Context::rng`]), and emits effects: sends ([`Context::send`]), timers
//! ([`Context::set_timer`]), replies ([`Context::reply`]), disk writes ([`Context::disk`],
//! applied at once to the page cache) and syncs ([`Context::sync`]). The simulator carries
//! the effects out in order right after the call returns. While a node is paused its
//! inputs wait and are delivered in order when it resumes; a crash drops the node value,
//! its pending timers and sync completions, and its undelivered inputs (messages already
//! on the network still arrive if it is back by then).
//!
//! # Replaying a seed
//!
//! A run is a pure function of its configuration, its seed and the node and workload code:
//! every random draw (network, nemesis, clients, disks, each node's [`Context::rng`]) comes
//! from generators derived from the seed, time is virtual, and the event queue breaks ties
//! by insertion order. [`RunReport::trace_hash`] digests every event processed (its time,
//! kind, node and whole payload: messages, requests and replies through their `Hash`), every
//! clock reading a node is given, what survived on a node's disk each time it starts, each
//! crash's mode and effect, and each fault the nemesis picks; the tests run a sample of seeds
//! twice and compare, and check that changing one delivered message changes the hash.
//!
//! Tests run seeds through [`seeds::SeedRunner`], which prints the seed and the exact
//! command that replays a failure, for example:
//!
//! ```text
//! seed 102 failed: linearizability: violation: partition 1 (57 operations) is not linearizable: ...
//! replay with: SYNOD_SEED=102 cargo test -p synod-sim --test it register::register_without_write_back_is_caught -- --exact --nocapture
//! ```
//!
//! To see what happened, print [`RunReport::faults`], the run's fault schedule: one line
//! per fault with its virtual time and details, for example (some lines of
//! `synod sim register --seed 7`):
//!
//! ```text
//! 0.151582s  partition one-way: n1->n2 n3->n2
//! 0.286749s  crash n1 mode=tear-last disk: unsynced_ops=1 lost=0 torn
//! 0.327426s  restart n1
//! 0.344372s  partition healed
//! ```
//!
//! Set [`SimConfigBuilder::trace_lines_max`] to keep the last events as text in
//! [`RunReport::trace`], and print [`RunReport::history`].
//!
//! Environment variables read by [`seeds::SeedRunner`]:
//!
//! - `SYNOD_SEED=<n>`: run only seed `n` (decimal or `0x` hex);
//! - `SYNOD_SEEDS=<count>`: run this many seeds instead of the test's default (CI runs the
//!   defaults; use a large count for a long hunt);
//! - `SYNOD_SEED_BASE=<n>`: start the range at `n`, to explore new seeds.
//!
//! This crate's own tests also read `SYNOD_CATCH_RATE=1` (count how many seeds catch each
//! broken register); `cargo test -p synod-sim --test it register::print_some_runs --
//! --ignored --nocapture` prints a summary of ten runs.
//!
//! # Fault model
//!
//! - **Network** ([`LinkConfig`], set for all links with [`SimConfigBuilder::link`] and per
//!   link with [`SimConfigBuilder::link_between`]): every ordered pair of nodes is a link
//!   with its own delay distribution ([`DelayDistribution`]: uniform, with an optional slow
//!   tail), loss and duplication. Links are FIFO unless a reordering period is on (the
//!   second copy of a duplicated message gets its own delay, so it may arrive out of
//!   order). A partition cuts links ([`Cut`]); the nemesis draws the shapes of
//!   [`PartitionShape`]: halves, one node isolated, one-way, a bridge node, and the
//!   majorities ring. A shape that cuts no link on the cluster's size (a majorities ring
//!   on 3 nodes, where each node's ring neighbours are all the others) is not applied nor
//!   counted as a partition ([`PartitionShape::cuts_links`]). A message is dropped if its
//!   link is cut when it is sent or when it would arrive. A clogged link holds messages
//!   until the clog ends. Client links have their own delays and loss but are never cut
//!   and never duplicate (a duplicated request is a retry, which is the workload's call).
//!   A run holds up to [`NODES_MAX`] (512) nodes: a cut is one bit per link (32 KiB at 512
//!   nodes, copied into each fault-log entry), a link's own configuration is kept only for
//!   the links given one, and each link's clog and FIFO state takes 16 bytes.
//! - **Disks** ([`Disk`]): `synod-wal`'s fault-injecting storage, one per node. At a
//!   crash, unsynced writes are treated per a [`CrashMode`] drawn from the run's enabled
//!   modes: all dropped, a prefix kept, the last one torn (at any byte, a 512-byte or a 4 KiB
//!   boundary), 4 KiB blocks kept independently, a bit flipped in the surviving unsynced
//!   bytes, or all kept; unsynced creations, renames and removals survive as a prefix. A
//!   sync ([`Context::sync`]) covers exactly the writes issued before it was requested and
//!   completes after the configured sync delay; the data it covers is durable from then
//!   on, and a crash before then may lose it. Writes issued after the request stay
//!   unsynced (the disk sets them aside while it syncs), so a node that acknowledges them
//!   on the strength of an earlier sync is caught. Directory changes (creations, renames,
//!   removals) are synced whole at a sync's completion.
//! - **Clocks**: each node's clock is a `synod_clocks::ManualClock` with an initial offset
//!   (when clock faults are on), drift changes and wall-clock jumps forward and back.
//!   Timers run on the node's monotonic clock: drift makes them fire early or late in true
//!   time; jumps do not move them.
//! - **Processes**: crash (memory lost, disk crashed per its mode, restart after a random
//!   down time through [`Node::on_start`]) and pause (inputs held until resume, as under a
//!   long garbage-collection pause or `SIGSTOP`). At most a minority is down at once by
//!   default ([`NemesisConfigBuilder::crashed_nodes_max`]).
//! - **Nemesis** ([`NemesisConfig`]): at random intervals it applies one fault of an
//!   enabled [`FaultKind`], or ends it (a partition heals, a lossy period ends). With swarm
//!   testing (the default) each seed enables a random subset of the kinds and crash modes
//!   with random intensities ([`FaultProfile`]). [`Coverage`] counts what fired, so a test
//!   can assert that every fault really happened, and [`RunReport::faults`] lists each
//!   fault applied, in order, with its virtual time and details: a partition's shape and
//!   cut links, a clog's link and duration, the start and end of lossy, duplicating and
//!   reordering periods with their intensity, a clock jump's size, a new drift, pauses and
//!   resumes, each crash with its mode and what the disk did ([`CrashReport`]: unsynced
//!   operations, how many were lost, a torn write, flipped bits), restarts, and the
//!   healing at the start of the liveness phase. Scripted actions are logged too, marked
//!   [`FaultSource::Scripted`]. The log is deterministic, bounded
//!   ([`SimConfigBuilder::fault_log_max`], default [`FAULT_LOG_ENTRIES_DEFAULT`]; past it
//!   the oldest entries are dropped and counted), and not part of the trace hash.
//! - **Scripts**: [`Simulation::schedule`] runs an [`Action`] (a partition, a crash with a
//!   given mode, a pause, a clock jump...) at a chosen time, for scenario tests; with the
//!   nemesis disabled a run is a pure script. For a schedule finer than that (this message
//!   delivered, that one lost, this node's clock moved, its sync completed), a
//!   [`Stepper`] runs the same nodes with the test as the scheduler.
//! - **Phases**: a safety phase with faults, the invariant checked after every event; then
//!   a liveness phase in which every fault is healed (clocks keep their offset and drift)
//!   and the progress condition must hold within [`SimConfigBuilder::liveness_time_max`].
//! - **I/O errors** are scripted, not drawn by the nemesis: [`Action::FailNextSync`] makes
//!   a node's next sync fail as a failed `fsync` can (the writes it covered are dropped
//!   from the page cache and never reach the disk, and the node gets [`Node::on_sync_failed`], or a synchronous
//!   `sync_data` through [`Disk::storage`] returns an `io::Error`), and
//!   [`Action::FillDisk`] makes writes that would grow its files fail with `StorageFull`
//!   (`ENOSPC`, returned by the [`Disk`] call). They are opt-in because a node must be
//!   written to handle them; they have no coverage counters, but the fault log records
//!   them.
//!
//! Not modelled today: I/O errors drawn by the nemesis, failed reads, slow disks beyond
//! the sync delay distribution, frozen clocks, and message corruption on the wire.
//!
//! # Checking histories
//!
//! Every client operation is recorded with its invocation and completion in virtual time:
//! `Ok` with its output, `Fail` (certainly not applied), or `Unknown` (no answer before the
//! client's timeout, an answer the workload maps to [`Completion::Unknown`], or the run
//! ended). [`Linearizability`] checks a history against a sequential [`Model`] with a
//! search in the line of Wing and Gong's, Lowe's memoization (as in porcupine) and
//! just-in-time linearization (as in Lowe's checker and Knossos), one partition (key) at a
//! time, treating unknown operations as possibly applied at any point after their
//! invocation and trying them only where they can change what follows, and giving up with
//! [`Verdict::GaveUp`] after a bounded number of steps, or once its memo reaches a bounded
//! size in bytes, rather than hanging or exhausting memory. [`OkInvariant`] is the hook for invariants over completed
//! operations, such as a bank's constant total; anything implementing [`HistoryChecker`]
//! can be used with [`RunReport::check`] (pass or an error text) or [`RunReport::verdict`]
//! (pass, violation or gave up, to tell them apart without matching on text).
//!
//! Two things are the workload's responsibility, and the checker trusts them:
//!
//! - **Failures are final.** The checker leaves `Fail` operations out, as if never
//!   invoked. Map a response to [`Completion::Fail`] only if the protocol guarantees the
//!   operation did not and will not take effect; anything weaker ("timed out", "leader
//!   changed") is [`Completion::Unknown`]. The register in this crate's tests never
//!   fails an operation; a Raft client would map "not the leader, never appended" to
//!   `Fail` and "term ended before commit" to `Unknown`.
//! - **Partitions are independent.** Checking per key is exact only if every operation
//!   touches one key and its legality depends on that key alone (see [`Model::Partition`]);
//!   [`KvModel`] is such a model.
//!
//! Giving up is never a pass: [`Verdict::is_pass`] is false for it and
//! [`RunReport::check`] returns it as an error.
//!
//! A key-value history can also be written for a checker Synod did not write, with
//! [`HistoryFormat::write`]: Jepsen's EDN history (as Knossos and Elle read it) or
//! porcupine's operations as JSON.
//!
//! # Drawing a run
//!
//! A run can be looked at as well as checked. Implement [`timeline::Describe`] for your
//! state machine (the name of its role and its term, the kind of each message; optionally
//! its commit and snapshot positions), record the simulation with
//! [`Simulation::record`]`(`[`timeline::Recorder::protocol`]`())`, and turn the report into a
//! page with [`timeline::Timeline::of_run`] and [`timeline::Timeline::write_html`]: a lane
//! per node coloured by role, the fault log's partitions, loss, pauses and crashes as
//! shaded regions, messages as arrows filterable by kind, client operations as bars
//! coloured by outcome, a latency plot, and the verdict; with the culprit of
//! [`Linearizability::check_explained`] the page opens on the violation, highlighted. The
//! page is self-contained (nothing is fetched) and the same seed gives the same bytes. The
//! [`timeline`] module has a runnable example; `synod sim raft-kv --seed 7 --html run.html`
//! draws the Consistent Core's run.
//!
//! # Performance
//!
//! The event queue is a binary heap of small `(time, sequence, slot)` keys with payloads in
//! a reused slab, so the loop allocates nothing per event beyond what messages own.
//! `cargo bench -p synod-sim --bench sim` measures, against a bare heap push-and-pop
//! baseline: 2.3 to 4.3 million simulated events per second on the register workload and
//! 230 to 400 seeds per second for 3-node runs of 10,000 events, on a shared 2-core machine
//! under heavy load (see `BENCHMARKS.md`).
//!
//! # Crate features
//!
//! None. The crate depends on `synod-wal` with its `testing` feature, for the
//! fault-injecting storage.
//!
//! # Sibling crates
//!
//! `synod-wal` provides the disks and `synod-clocks` the clocks. `synod-quorum`,
//! `synod-membership`, `synod-partitioning` and `synod-consensus` are tested under this
//! simulator; the `synod sim` command of `synod-examples` runs it on the reference
//! systems and prints each run's fault schedule from [`RunReport::faults`].

mod check;
mod clock;
mod disk;
mod export;
mod fault_log;
mod history;
mod linearize;
pub mod mutate;
mod nemesis;
mod net;
mod node;
mod protocol;
mod rng;
pub mod seeds;
mod sim;
mod stepper;
mod time;
pub mod timeline;
mod trace;
mod watch_check;

pub use check::{
    CULPRIT_BEFORE_MAX, Culprit, HistoryChecker, KvInput, KvModel, KvOutput,
    LINEARIZABILITY_MEMO_BYTES_MAX, LINEARIZABILITY_STEPS_MAX, Linearizability, Model, OkInvariant,
    Verdict,
};
pub use disk::{CrashMode, Disk, DiskFile, DiskStorage};
pub use export::HistoryFormat;
pub use fault_log::{
    CrashReport, FAULT_LOG_ENTRIES_DEFAULT, Fault, FaultEntry, FaultLog, FaultSource,
};
pub use history::{History, HistoryError, OpId, Operation, Outcome};
pub use nemesis::{
    Counter, Coverage, FaultKind, FaultProfile, MID_WRITE_OPS_MAX, NemesisConfig,
    NemesisConfigBuilder,
};
pub use net::{Cut, DelayDistribution, LinkConfig, PartitionShape};
pub use node::{ClientId, Context, Node, NodeId, RequestId, SyncToken, TimerId};
pub use protocol::{Boot, ProtocolNode, ProtocolStore};
pub use rng::{Probability, SimRng, splitmix64};
pub use sim::{
    Action, CLIENTS_MAX, Completion, ConfigError, DURATION_MAX, Failure, Invocation, NODES_MAX,
    NoClients, Phase, RunReport, SimConfig, SimConfigBuilder, Simulation, View, Workload,
};
pub use stepper::{DELIVERIES_MAX, Envelope, Stepper};
pub use time::SimTime;
pub use trace::TraceHasher;
pub use watch_check::{WatchChange, WatchChecker, WatchCounts, WatchFilter, WatchViolation};
