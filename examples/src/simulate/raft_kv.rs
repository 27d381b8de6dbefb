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
//!   simulated disk as a checksummed, length-prefixed record. When the node asks for
//!   persistence ([`core_node::Effect::Persist`]) the driver syncs the disk and hands the token back
//!   only once the sync is done: Raft must not vote or acknowledge entries it could lose.
//! - **Recovery.** On start the journal is replayed up to the first torn or corrupt
//!   record and cut there; everything after it was never synced, so never acknowledged.
//! - **Time.** A tick every 5 ms of the node's own clock (which the simulator may skew,
//!   drift and jump) drives elections and heartbeats.
//!
//! Clients write and read (linearizably, through Raft's read index) eight keys, holding
//! unique values. A client sends to the leader it last heard of, or to a random node.
//! "Not the leader" and "retry" mean the command was not and will not be applied, so the
//! operation failed; "unknown" (a proposal the node lost track of in a leadership change)
//! may still be applied, and no answer in time is unknown too. After every event an invariant checks
//! that no two nodes lead in the same term (Raft's election safety).

use std::collections::BTreeMap;
use std::time::Duration;

use synod_consensus::journal::{JournalStore, encode, replay};
use synod_consensus::{Config, Membership, Message, Node, PersistToken, Role, Term};
use synod_sim::{
    ClientId, Completion, Context, Invocation, KvInput, KvModel, KvOutput, Linearizability, NodeId,
    RequestId, SimConfig, SimRng, Simulation, SyncToken, TimerId, Workload,
};

use super::{RunSummary, Settings};
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
    /// Read a key, linearizably.
    Read(u64),
    /// Write a value to a key.
    Write(u64, u64),
}

/// What a node answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Response {
    /// The value read.
    Read(Option<u64>),
    /// The write is committed and applied.
    Written,
    /// This node does not lead; it names the leader it knows of (a simulator node index).
    /// The command was not appended anywhere.
    NotLeader(Option<u32>),
    /// Certainly not done, and never will be (refused, or its log slot taken by another
    /// committed entry).
    Refused(String),
    /// Perhaps done, perhaps later (a proposal the node lost track of in a leadership
    /// change), or an answer that makes no sense for the request.
    Unsure(String),
}

fn key_bytes(key: u64) -> Vec<u8> {
    format!("k{key}").into_bytes()
}

fn consensus_id(id: NodeId) -> synod_consensus::NodeId {
    synod_consensus::NodeId::new(u64::from(id.get()) + 1)
}

fn sim_id(id: u64) -> Option<NodeId> {
    u32::try_from(id.checked_sub(1)?).ok().map(NodeId::new)
}

/// One simulated node: a [`CoreNode`] over a journaled log store.
#[derive(Debug)]
pub struct RaftKvNode {
    id: NodeId,
    nodes: usize,
    core: Option<CoreNode<JournalStore>>,
    /// The simulator's request behind each of the node's client tags.
    requests: BTreeMap<Tag, (RequestId, Request)>,
    next_tag: Tag,
    /// Persistence tokens waiting for a sync, by the sync's number.
    syncs: BTreeMap<u64, PersistToken>,
    next_sync: u64,
}

impl RaftKvNode {
    /// Node `id` of a cluster of `nodes`.
    #[must_use]
    pub fn new(id: NodeId, nodes: usize) -> Self {
        RaftKvNode {
            id,
            nodes,
            core: None,
            requests: BTreeMap::new(),
            next_tag: 0,
            syncs: BTreeMap::new(),
            next_sync: 0,
        }
    }

    /// The term this node leads in, if it leads.
    #[must_use]
    pub fn leading(&self) -> Option<Term> {
        let raft = self.core.as_ref()?.raft();
        (raft.role() == Role::Leader).then(|| raft.term())
    }

    /// Feeds `input` to the node and carries out what it asks.
    fn handle(&mut self, ctx: &mut Context<'_, Self>, input: Input) {
        if let Some(core) = self.core.as_mut() {
            let effects = core.handle(input);
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
            for op in &written {
                encode(op, &mut bytes);
            }
            if ctx.disk().append(JOURNAL, &bytes).is_err() {
                self.core = None; // fail-stop: never acknowledge what could not be stored
                return;
            }
        }
        for effect in effects {
            match effect {
                core_node::Effect::Send(message) => {
                    if let Some(to) = sim_id(message.to.get()) {
                        ctx.send(to, message);
                    }
                }
                core_node::Effect::Persist(token) => {
                    self.next_sync += 1;
                    self.syncs.insert(self.next_sync, token);
                    ctx.sync(SyncToken(self.next_sync));
                }
                core_node::Effect::Reply { tag, response } => {
                    if let Some((id, request)) = self.requests.remove(&tag) {
                        ctx.reply(id, translate(request, response));
                    }
                }
                core_node::Effect::Fatal(_) => {
                    self.core = None;
                    return;
                }
            }
        }
    }
}

/// The node's answer in the simulator's terms.
fn translate(request: Request, response: core_node::Response) -> Response {
    match (request, response) {
        (Request::Read(_), core_node::Response::Kv(KvReply::Nil)) => Response::Read(None),
        (Request::Read(_), core_node::Response::Kv(KvReply::Bulk(bytes))) => {
            match std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.parse().ok())
            {
                Some(value) => Response::Read(Some(value)),
                None => Response::Unsure(format!("unexpected value {bytes:?}")),
            }
        }
        (Request::Write(..), core_node::Response::Kv(KvReply::Ok)) => Response::Written,
        (_, core_node::Response::NotLeader { leader }) => {
            Response::NotLeader(leader.and_then(sim_id).map(NodeId::get))
        }
        (_, core_node::Response::Retry(why)) => Response::Refused(why),
        (_, core_node::Response::Unknown(why)) => Response::Unsure(why),
        (_, other) => Response::Unsure(format!("unexpected answer {other:?}")),
    }
}

impl synod_sim::Node for RaftKvNode {
    type Message = Message;
    type Request = Request;
    type Response = Response;

    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        let voters = (0..self.nodes as u32).map(|i| consensus_id(NodeId::new(i)));
        let membership = Membership::new(voters, []).expect("at least one voter, no learners");
        let journal = ctx.disk().read(JOURNAL).unwrap_or_default();
        let (mem, good) = replay(&journal, &membership);
        if good < journal.len() && ctx.disk().set_len(JOURNAL, good as u64).is_err() {
            return; // fail-stop
        }
        let config = Config::builder(consensus_id(self.id))
            .election_timeout_ticks(10..20)
            .heartbeat_interval_ticks(2)
            .seed(ctx.rng().next_u64())
            .build()
            .expect("a valid Raft configuration");
        let store = JournalStore::new(mem);
        let mut core = CoreNode::new(Node::new(config, store), SNAPSHOT_ENTRIES)
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
        let now_ms = ctx.now().as_micros() / 1000;
        self.handle(ctx, Input::Tick { now_ms });
        if self.core.is_some() {
            ctx.set_timer(TICK_EVERY, TICK);
        }
    }

    fn on_synced(&mut self, ctx: &mut Context<'_, Self>, token: SyncToken) {
        // A sync covers every write issued before it, so it settles earlier syncs too.
        let later = self.syncs.split_off(&(token.0 + 1));
        for (_, persisted) in std::mem::replace(&mut self.syncs, later) {
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
        let request = match request {
            Request::Read(key) => core_node::Request::Read {
                query: KvQuery::Get(key_bytes(key)),
                mode: ReadMode::Linearizable,
            },
            Request::Write(key, value) => core_node::Request::Write {
                command: KvCommand::Put {
                    key: key_bytes(key),
                    value: value.to_string().into_bytes(),
                    condition: PutCondition::Always,
                },
                session: None,
            },
        };
        let tag = self.next_tag;
        self.handle(ctx, Input::Client { tag, request });
    }
}

/// Clients writing unique values to and reading random keys, through the leader they
/// last heard of.
#[derive(Debug, Default)]
pub struct Clients {
    last_value: u64,
    leader: Option<u32>,
}

impl Workload<RaftKvNode> for Clients {
    type Input = KvInput;
    type Output = KvOutput;

    fn invoke(
        &mut self,
        _: ClientId,
        nodes: usize,
        rng: &mut SimRng,
    ) -> Option<Invocation<Request, KvInput>> {
        let node = match self.leader {
            Some(leader) if (leader as usize) < nodes => NodeId::new(leader),
            _ => NodeId::new(rng.below(nodes as u64) as u32),
        };
        let key = rng.below(KEYS);
        if rng.below(2) == 0 {
            return Some(Invocation {
                node,
                request: Request::Read(key),
                input: KvInput::Read { key },
            });
        }
        self.last_value += 1;
        let value = self.last_value;
        Some(Invocation {
            node,
            request: Request::Write(key, value),
            input: KvInput::Write { key, value },
        })
    }

    fn complete(&mut self, _: ClientId, _: &KvInput, response: &Response) -> Completion<KvOutput> {
        match response {
            Response::Read(value) => Completion::Ok(KvOutput::Read(*value)),
            Response::Written => Completion::Ok(KvOutput::Written),
            Response::NotLeader(leader) => {
                self.leader = *leader;
                Completion::Fail
            }
            Response::Refused(_) => {
                self.leader = None;
                Completion::Fail
            }
            Response::Unsure(_) => {
                self.leader = None;
                Completion::Unknown
            }
        }
    }
}

/// Election safety: at most one leader per term among the nodes that are up.
fn one_leader_per_term(leaders: impl Iterator<Item = (NodeId, Term)>) -> Result<(), String> {
    let mut seen: BTreeMap<Term, NodeId> = BTreeMap::new();
    for (id, term) in leaders {
        if let Some(other) = seen.insert(term, id) {
            return Err(format!("{other} and {id} both lead in term {term:?}"));
        }
    }
    Ok(())
}

/// Runs the cluster once with `seed`.
pub(super) fn run(seed: u64, settings: &Settings, config: SimConfig) -> RunSummary {
    let nodes = settings.nodes();
    let report = Simulation::new(
        config,
        seed,
        move |id| RaftKvNode::new(id, nodes),
        Clients::default(),
    )
    .invariant(move |view| {
        one_leader_per_term(
            view.nodes()
                .filter_map(|(id, node)| node.leading().map(|term| (id, term))),
        )
    })
    .progress(|view| {
        view.healed_at()
            .is_some_and(|t| view.history().ok_invoked_since(t) > 0)
    })
    .run();
    let verdict = report.verdict(&mut Linearizability::new(KvModel));
    RunSummary::new(&report, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn election_safety_rejects_two_leaders_in_one_term() {
        let n = NodeId::new;
        assert!(
            one_leader_per_term([(n(0), Term::new(2)), (n(1), Term::new(3))].into_iter()).is_ok()
        );
        assert!(
            one_leader_per_term([(n(0), Term::new(3)), (n(2), Term::new(3))].into_iter()).is_err()
        );
    }
}
