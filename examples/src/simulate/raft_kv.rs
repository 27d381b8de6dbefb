//! The `raft-kv` system: the Consistent Core node (Raft and its key-value store) under
//! `synod-sim`.
//!
//! [`CoreNode`] is the node that `synod node` runs as a real process: `synod-consensus`'s
//! Raft plus the key-value state machine, with no I/O of its own. Here the same code runs
//! in the simulator; only the driver differs. [`RaftKvNode`] is that driver, and it shows
//! what any driver of a Raft node owes it:
//!
//! - **A durable log.** Every write the node makes to its log store (appends, truncations,
//!   the term and vote, snapshots) is recorded by [`JournalStore`] and appended to the
//!   simulated disk as a checksummed, length-prefixed record that carries how much of the
//!   journal was durable when it was written ([`JournalWriter`]). When the node asks for
//!   persistence ([`core_node::Effect::Persist`]) the driver syncs the disk and hands the token back
//!   only once the sync is done: Raft must not vote or acknowledge entries it could lose.
//! - **Recovery.** On start the journal is replayed up to its torn tail and cut there;
//!   everything after it was never synced, so never acknowledged. Damage to records that
//!   had been synced (which the simulated disk never does) stops the node, with the
//!   offset, and cuts nothing.
//! - **Time.** A tick every 5 ms of the node's own clock (which the simulator may skew,
//!   drift and jump) drives elections and heartbeats.
//!
//! - **Fail-stop.** A node whose disk fails, or that reports it cannot continue, stops
//!   and answers nothing more; the simulator injects neither, so the invariant reports it.
//!
//! `synod sim raft-kv`'s clients ([`clients`]) write and read (linearizably, through Raft's
//! read index) eight keys, holding unique values, each sent to the leader the client last
//! heard of, or to a random node. "Not the leader" and "retry" mean the command was not and
//! will not be applied, so the operation failed; "unknown" (a proposal the node lost track
//! of in a leadership change) may still be applied, and no answer in time is unknown too.
//!
//! After every event an invariant checks that no node stopped, and hands every running
//! node's Raft state to `synod-consensus`'s [`SafetyChecker`]: the five properties of the
//! Raft paper's Figure 3 (Election Safety, Leader Append-Only, Log Matching, Leader
//! Completeness, State Machine Safety) and commit and applied indexes that never go back
//! while a node is up. A crashed node is missing from the check, so the checker knows that
//! the node it sees next is a restart. The checker only reads the nodes: it draws no
//! randomness and changes no event, so runs and trace hashes are the same as without it. A
//! violation fails the run with its event; with the vote-persistence bug of
//! `synod-consensus` switched on (and pre-vote and check-quorum off), `core_sim` seed 2730
//! ends with `invariant violated at 1.506138s (event 1885): election safety: n1 and n2
//! both led g17`.
//!
//! The CI test `tests/it/core_sim.rs` runs the same cluster through [`simulation`], with
//! its own timing, clients that also compare-and-set and read under the leader's lease
//! (see [`KvClients`]), and [`NodeOptions`] of its own.

use std::collections::BTreeMap;
use std::time::Duration;

use synod_consensus::invariants::SafetyChecker;
use synod_consensus::journal::{JournalStore, JournalWriter, replay};
use synod_consensus::{Config, ConfigError, Membership, Message, Node, PersistToken, Role, Term};
use synod_sim::{
    Completion, Context, KvInput, KvModel, KvOutput, Linearizability, NodeId, RequestId, SimConfig,
    Simulation, SyncToken, TimerId, View,
};

use super::clients::{Answer, KvClients, KvService, LeaderHint};
use super::{RunSummary, progress_after_healing};
use crate::consistent_core::kv::{KvCommand, KvQuery, KvReply, PutCondition};
use crate::consistent_core::node::{self as core_node, CoreNode, Input, ReadMode, Tag};

/// Keys the clients use: enough that each key's history stays small for the checker,
/// however many writes end unknown while the leader changes.
pub const KEYS: u64 = 8;

/// The file holding a node's journal.
const JOURNAL: &str = "raft.journal";
/// The node's one timer.
const TICK: TimerId = TimerId(0);
const TICK_EVERY: Duration = Duration::from_millis(5);
/// Snapshot (and compact the log) every this many applied entries: a few times in a run
/// of ten thousand events, so snapshots are exercised too.
const SNAPSHOT_ENTRIES: u64 = 200;
/// Client requests a node remembers; a request whose client has long timed out is
/// forgotten first.
const REQUESTS_MAX: usize = 1024;

/// What a client asks a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Request {
    /// Read a key, linearizably (Raft's read index).
    Read(u64),
    /// Write a value to a key.
    Write(u64, u64),
    /// Set a key to `new` if it holds `expect` (`None`: absent).
    Cas {
        /// The key.
        key: u64,
        /// The value it must hold.
        expect: Option<u64>,
        /// The value to set.
        new: u64,
    },
    /// Read a key under the leader's lease if it holds one, else as [`Request::Read`].
    LeaseRead(u64),
    /// Read a key from the node's own applied state, possibly stale: not linearizable, for
    /// showing that the checker catches it.
    FollowerRead(u64),
}

impl Request {
    /// A [`Request::Cas`] (a function, to hand to [`KvClients::with_cas`]).
    #[must_use]
    pub fn cas(key: u64, expect: Option<u64>, new: u64) -> Request {
        Request::Cas { key, expect, new }
    }
}

/// What a node answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Response {
    /// The value read.
    Read(Option<u64>),
    /// The write is committed and applied.
    Written,
    /// This node does not lead; it names the leader it knows of. The command was not
    /// appended anywhere.
    NotLeader(Option<NodeId>),
    /// Certainly not done, and never will be (refused, or its log slot taken by another
    /// committed entry).
    Refused(String),
    /// Perhaps done, perhaps later (a proposal the node lost track of in a leadership
    /// change), or an answer that makes no sense for the request.
    Unsure(String),
    /// The compare-and-set is committed and applied; whether it set the key.
    Cas(bool),
}

/// How each simulated node is set up, where `synod sim raft-kv` and the CI test
/// (`tests/it/core_sim.rs`) differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeOptions {
    snapshot_entries: u64,
    raft_limits: Option<(usize, u64)>,
}

impl Default for NodeOptions {
    /// `synod sim raft-kv`'s: a snapshot every 200 applied entries, Raft's default limits.
    fn default() -> Self {
        NodeOptions {
            snapshot_entries: SNAPSHOT_ENTRIES,
            raft_limits: None,
        }
    }
}

impl NodeOptions {
    /// Never snapshots. The journal makes a snapshot durable at the next sync, not when
    /// the store call returns as `synod-consensus`'s `LogStore` contract asks; the CI test
    /// keeps to the contract (snapshots are tested in the Consistent Core's unit tests).
    #[must_use]
    pub fn without_snapshots(mut self) -> Self {
        self.snapshot_entries = u64::MAX;
        self
    }

    /// Raft sends at most `in_flight_max` appends to a follower before it answers, each of
    /// at most `append_bytes_max` bytes of entries (small values exercise flow control and
    /// catching up in many steps).
    ///
    /// # Errors
    ///
    /// The Raft configuration's error if either is zero.
    pub fn with_raft_limits(
        mut self,
        in_flight_max: usize,
        append_bytes_max: u64,
    ) -> Result<Self, ConfigError> {
        Config::builder(NodeId::new(1))
            .in_flight_max(in_flight_max)
            .append_bytes_max(append_bytes_max)
            .build()?;
        self.raft_limits = Some((in_flight_max, append_bytes_max));
        Ok(self)
    }
}

fn key_bytes(key: u64) -> Vec<u8> {
    format!("k{key}").into_bytes()
}

fn value_bytes(value: u64) -> Vec<u8> {
    value.to_string().into_bytes()
}

/// One simulated node: a [`CoreNode`] over a journaled log store.
#[derive(Debug)]
pub struct RaftKvNode {
    id: NodeId,
    nodes: usize,
    options: NodeOptions,
    core: Option<CoreNode<JournalStore>>,
    /// Why the node stopped, if it did (see [`RaftKvNode::stopped`]).
    stopped: Option<String>,
    /// The simulator's request behind each of the node's client tags.
    requests: BTreeMap<Tag, (RequestId, Request)>,
    next_tag: Tag,
    /// Persistence tokens waiting for a sync, by the sync's number, with the journal's
    /// length when it was asked for.
    syncs: BTreeMap<u64, (PersistToken, u64)>,
    next_sync: u64,
    journal: JournalWriter,
    /// Timer expiries since the node (re)started: the node's monotonic clock is their
    /// count times [`TICK_EVERY`], so it runs one Raft tick per expiry, as the simulator
    /// schedules them (on this node's drifting clock). Its clock reading would not do: the
    /// nemesis jumps it backwards, which would freeze the node's timers.
    ticks: u64,
}

impl RaftKvNode {
    /// Node `id` of a cluster of `nodes`.
    #[must_use]
    pub fn new(id: NodeId, nodes: usize, options: NodeOptions) -> Self {
        RaftKvNode {
            id,
            nodes,
            options,
            core: None,
            stopped: None,
            requests: BTreeMap::new(),
            next_tag: 0,
            syncs: BTreeMap::new(),
            next_sync: 0,
            journal: JournalWriter::new(0),
            ticks: 0,
        }
    }

    /// The term this node leads in, if it leads.
    #[must_use]
    pub fn leading(&self) -> Option<Term> {
        let raft = self.raft()?;
        (raft.role() == Role::Leader).then(|| raft.term())
    }

    /// The node's Raft state machine, unless the node stopped.
    #[must_use]
    pub fn raft(&self) -> Option<&Node<JournalStore>> {
        Some(self.core.as_ref()?.raft())
    }

    /// Why the node stopped (fail-stop), if it did: a disk operation failed, or the node
    /// reported it cannot continue. The simulator injects no I/O errors and every record
    /// is checksummed, so either is a bug, and the run's invariant reports it.
    #[must_use]
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// Stops the node: it never acknowledges anything again.
    fn stop(&mut self, why: String) {
        self.core = None;
        self.stopped = Some(why);
    }

    /// Feeds `input` to the node and carries out what it asks.
    fn handle(&mut self, ctx: &mut Context<'_, Self>, input: Input) {
        if let Some(core) = self.core.as_mut() {
            let now = TICK_EVERY * u32::try_from(self.ticks).unwrap_or(u32::MAX);
            let effects = core.handle(now, input);
            self.carry_out(ctx, effects);
        }
    }

    fn carry_out(&mut self, ctx: &mut Context<'_, Self>, effects: Vec<core_node::Effect>) {
        let Some(core) = self.core.as_mut() else {
            return;
        };
        // The log writes go to disk before anything the node asks next, so that the
        // sync of a persist request covers them.
        let written = core.store_mut().take_written();
        if !written.is_empty() {
            let mut bytes = Vec::new();
            self.journal.encode(&written, &mut bytes);
            if let Err(e) = ctx.disk().append(JOURNAL, &bytes) {
                // Never acknowledge what could not be stored.
                return self.stop(format!("journal append failed: {e}"));
            }
        }
        for effect in effects {
            match effect {
                core_node::Effect::Send(message) => {
                    ctx.send(message.to, message);
                }
                core_node::Effect::Persist(token) => {
                    self.next_sync += 1;
                    self.syncs
                        .insert(self.next_sync, (token, self.journal.end()));
                    ctx.sync(SyncToken(self.next_sync));
                }
                core_node::Effect::Reply { tag, response } => {
                    if let Some((id, request)) = self.requests.remove(&tag) {
                        ctx.reply(id, translate(request, response));
                    }
                }
                core_node::Effect::Fatal(why) => return self.stop(format!("fatal: {why}")),
            }
        }
    }
}

/// The node's answer in the simulator's terms.
fn translate(request: Request, response: core_node::Response) -> Response {
    use core_node::Response::Kv;
    let read = matches!(
        request,
        Request::Read(_) | Request::LeaseRead(_) | Request::FollowerRead(_)
    );
    match (request, response) {
        (_, Kv(KvReply::Nil)) if read => Response::Read(None),
        (_, Kv(KvReply::Bulk(bytes))) if read => match std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.parse().ok())
        {
            Some(value) => Response::Read(Some(value)),
            None => Response::Unsure(format!("unexpected value {bytes:?}")),
        },
        (Request::Write(..), Kv(KvReply::Ok)) => Response::Written,
        (Request::Cas { .. }, Kv(KvReply::Int(n @ (0 | 1)))) => Response::Cas(n == 1),
        (_, core_node::Response::NotLeader { leader }) => {
            Response::NotLeader(leader.and_then(NodeId::try_new))
        }
        (_, core_node::Response::Retry(why)) => Response::Refused(why),
        (_, core_node::Response::Unknown(why)) => Response::Unsure(why),
        (_, other) => Response::Unsure(format!("unexpected answer {other:?}")),
    }
}

/// The Consistent Core's request for `request`.
fn core_request(request: Request) -> core_node::Request {
    let read = |key, mode| core_node::Request::Read {
        query: KvQuery::Get(key_bytes(key)),
        mode,
    };
    let write = |command| core_node::Request::Write {
        command,
        session: None,
    };
    match request {
        Request::Read(key) => read(key, ReadMode::Linearizable),
        Request::LeaseRead(key) => read(key, ReadMode::Lease),
        Request::FollowerRead(key) => read(key, ReadMode::Follower),
        Request::Write(key, value) => write(KvCommand::Put {
            key: key_bytes(key),
            value: value_bytes(value),
            condition: PutCondition::Always,
        }),
        Request::Cas { key, expect, new } => write(KvCommand::Cas {
            key: key_bytes(key),
            expected: expect.map(value_bytes),
            new: value_bytes(new),
        }),
    }
}

impl synod_sim::Node for RaftKvNode {
    type Message = Message;
    type Request = Request;
    type Response = Response;

    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        let voters = (1..=self.nodes as u64).map(NodeId::new);
        let membership = Membership::new(voters, []).expect("at least one voter, no learners");
        let journal = ctx.disk().read(JOURNAL).unwrap_or_default();
        let (mem, good) = match replay(&journal, &membership) {
            Ok(replayed) => replayed,
            Err(e) => return self.stop(e.to_string()),
        };
        if good < journal.len()
            && let Err(e) = ctx.disk().set_len(JOURNAL, good as u64)
        {
            return self.stop(format!("cutting the journal's torn tail failed: {e}"));
        }
        self.journal = JournalWriter::new(good as u64);
        let mut config = Config::builder(self.id)
            .election_timeout_ticks(10..20)
            .heartbeat_interval_ticks(2)
            .seed(ctx.rng().next_u64());
        if let Some((in_flight_max, append_bytes_max)) = self.options.raft_limits {
            config = config
                .in_flight_max(in_flight_max)
                .append_bytes_max(append_bytes_max);
        }
        let config = config
            .build()
            .expect("a valid Raft configuration: the limits were checked in NodeOptions");
        let store = JournalStore::new(mem);
        self.ticks = 0;
        let mut core = CoreNode::new(
            Node::new(config, store),
            TICK_EVERY,
            self.options.snapshot_entries,
        )
        .with_read_ids_from(ctx.rng().next_u64() >> 1);
        let effects = core.poll();
        self.core = Some(core);
        self.carry_out(ctx, effects);
        ctx.set_timer(TICK_EVERY, TICK);
    }

    fn on_message(&mut self, ctx: &mut Context<'_, Self>, _: NodeId, message: Message) {
        self.handle(ctx, Input::Peer(message));
    }

    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, _: TimerId) {
        self.ticks += 1;
        self.handle(ctx, Input::Tick);
        if self.core.is_some() {
            ctx.set_timer(TICK_EVERY, TICK);
        }
    }

    fn on_synced(&mut self, ctx: &mut Context<'_, Self>, token: SyncToken) {
        // A sync covers every write issued before it, so it settles earlier syncs too.
        let later = self.syncs.split_off(&(token.0 + 1));
        for (_, (persisted, len)) in std::mem::replace(&mut self.syncs, later) {
            self.journal.synced(len);
            self.handle(ctx, Input::Persisted(persisted));
        }
    }

    fn on_request(&mut self, ctx: &mut Context<'_, Self>, id: RequestId, request: Request) {
        if self.core.is_none() {
            return; // a stopped node answers nothing
        }
        if self.requests.len() >= REQUESTS_MAX {
            self.requests.pop_first();
        }
        self.next_tag += 1;
        self.requests.insert(self.next_tag, (id, request));
        let tag = self.next_tag;
        self.handle(
            ctx,
            Input::Client {
                tag,
                request: core_request(request),
            },
        );
    }
}

impl KvService for RaftKvNode {
    fn read(key: u64) -> Request {
        Request::Read(key)
    }

    fn write(key: u64, value: u64) -> Request {
        Request::Write(key, value)
    }

    fn answer(response: &Response) -> Answer {
        let (completion, leader) = match response {
            Response::Read(value) => (Completion::Ok(KvOutput::Read(*value)), LeaderHint::Same),
            Response::Written => (Completion::Ok(KvOutput::Written), LeaderHint::Same),
            Response::Cas(set) => (Completion::Ok(KvOutput::Cas(*set)), LeaderHint::Same),
            Response::NotLeader(leader) => (
                Completion::Fail,
                leader.map_or(LeaderHint::Unknown, LeaderHint::Is),
            ),
            Response::Refused(_) => (Completion::Fail, LeaderHint::Unknown),
            Response::Unsure(_) => (Completion::Unknown, LeaderHint::Unknown),
        };
        Answer { completion, leader }
    }
}

/// `synod sim raft-kv`'s clients: linearizable reads and writes of [`KEYS`] keys, each
/// sent to the leader the last answer named.
#[must_use]
pub fn clients() -> KvClients<RaftKvNode> {
    KvClients::new(KEYS).following_the_leader()
}

/// The invariant checked after every event: no node stopped, and Raft's safety properties
/// hold over the nodes that are up (see the module documentation).
fn invariant(
    nodes: usize,
) -> impl FnMut(&View<'_, RaftKvNode, KvInput, KvOutput>) -> Result<(), String> + 'static {
    let mut checker = SafetyChecker::new();
    move |view| {
        if let Some((id, why)) = view
            .nodes()
            .find_map(|(id, node)| node.stopped().map(|why| (id, why)))
        {
            return Err(format!("{id} stopped: {why}"));
        }
        // The checker walks the nodes more than once, so it takes an iterator it can
        // clone (and this allocates nothing).
        let up = (1..=nodes as u64)
            .filter_map(|i| view.node(NodeId::new(i)))
            .filter_map(RaftKvNode::raft);
        checker.check(up).map_err(|violation| violation.to_string())
    }
}

/// A cluster of `config.nodes()` [`RaftKvNode`]s set up by `options`, driven by `clients`
/// with every randomness drawn from `seed`, checking after every event that no node
/// stopped and that Raft's safety properties hold ([`SafetyChecker`]: election safety,
/// leader append-only, log matching, leader completeness, state-machine safety, commit and
/// applied indexes that never go back), and requiring some operation invoked after healing
/// to succeed. Check the run's history with
/// [`Linearizability`]`::new(`[`KvModel`]`)`.
#[must_use]
pub fn simulation(
    config: SimConfig,
    seed: u64,
    options: NodeOptions,
    clients: KvClients<RaftKvNode>,
) -> Simulation<RaftKvNode, KvClients<RaftKvNode>> {
    let nodes = config.nodes();
    Simulation::new(
        config,
        seed,
        move |id| RaftKvNode::new(id, nodes, options),
        clients,
    )
    .invariant(invariant(nodes))
    .progress(progress_after_healing)
}

/// Runs the cluster once with `seed`.
pub(super) fn run(seed: u64, config: SimConfig) -> RunSummary {
    let report = simulation(config, seed, NodeOptions::default(), clients()).run();
    let verdict = report.verdict(&mut Linearizability::new(KvModel));
    RunSummary::new(report, verdict)
}
