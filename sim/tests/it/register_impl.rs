//! A small replicated register to put the simulator to work: the two-phase quorum register
//! of Attiya, Bar-Noy and Dolev (ABD), with a deliberately broken variant or two.
//!
//! Any node coordinates a client's operation. A write asks a majority for their
//! timestamps, picks a higher one and stores `(timestamp, value)` on a majority. A read asks
//! a majority, picks the value with the highest timestamp and, before answering, writes it
//! back to a majority (the step that makes reads linearizable). A replica appends every
//! store to a checksummed log on its disk and acknowledges only once the log is synced;
//! after a crash it rebuilds its state from the longest valid prefix of the log and cuts
//! off the rest.
//!
//! Shared by the tests (`register.rs`) and the benchmark (`benches/sim.rs`).

#![allow(dead_code)]

use std::time::Duration;

use synod_sim::{
    ClientId, Completion, Context, Invocation, KvInput, KvOutput, Node, NodeId, RequestId, SimRng,
    SyncToken, TimerId, Workload,
};

/// Which register to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// ABD as published.
    Correct,
    /// Reads answer without writing back: not linearizable.
    NoWriteBack,
    /// Replicas acknowledge a store before it is durable: a crash loses acknowledged data.
    AckBeforeSync,
    /// Group commit off by one: a store arriving while a sync is in flight is acknowledged
    /// when that sync completes, although the sync was requested before the store was
    /// written and does not cover it.
    AckOnEarlierSync,
}

/// The number of keys clients use.
pub const KEYS: u64 = 2;

/// A timestamp: a counter, then a tag unique to the write (the node id in the top 16 bits,
/// the coordinator's operation number below).
///
/// The tag must be unique per write, not merely per node: a node that restarts may compute
/// the same counter again after its earlier write reached only a minority, and two
/// different values under one timestamp break the register. (The simulator found this in
/// the first version, which used `(counter, node id)`: seed 11 of the regression file.)
pub type Ts = (u64, u64);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Msg {
    Get {
        op: u64,
        key: u64,
    },
    GetReply {
        op: u64,
        ts: Ts,
        value: Option<u64>,
    },
    Put {
        op: u64,
        key: u64,
        ts: Ts,
        value: Option<u64>,
    },
    PutAck {
        op: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Request {
    Read { key: u64 },
    Write { key: u64, value: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Response {
    Read(Option<u64>),
    Written,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Query,
    Store,
}

#[derive(Debug, Clone)]
struct Pending {
    op: u64,
    client: RequestId,
    key: u64,
    /// `Some(v)` for a write of `v`, `None` for a read.
    write: Option<u64>,
    phase: Phase,
    /// Bit `i` set: node `i` answered the current phase.
    answered: u64,
    best: (Ts, Option<u64>),
    store: (Ts, Option<u64>),
}

const TICK: TimerId = TimerId(0);
const TICK_EVERY: Duration = Duration::from_millis(10);
const RECORD_BYTES: usize = 8 + 8 + 8 + 1 + 8 + 8;
const LOG: &str = "register.log";

/// One replica and coordinator.
#[derive(Debug)]
pub struct RegisterNode {
    variant: Variant,
    id: NodeId,
    nodes: usize,
    /// Per key: the stored timestamp and value.
    store: Vec<(Ts, Option<u64>)>,
    pending: Vec<Pending>,
    next_op: u64,
    /// Acknowledgements waiting for a sync: (sync token, to, op).
    acks: Vec<(u64, NodeId, u64)>,
    next_sync: u64,
    /// The last sync token completed.
    synced: u64,
}

fn checksum(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn encode(key: u64, ts: Ts, value: Option<u64>) -> [u8; RECORD_BYTES] {
    let mut r = [0u8; RECORD_BYTES];
    r[0..8].copy_from_slice(&key.to_le_bytes());
    r[8..16].copy_from_slice(&ts.0.to_le_bytes());
    r[16..24].copy_from_slice(&ts.1.to_le_bytes());
    r[24] = u8::from(value.is_some());
    r[25..33].copy_from_slice(&value.unwrap_or(0).to_le_bytes());
    let c = checksum(&r[..33]);
    r[33..41].copy_from_slice(&c.to_le_bytes());
    r
}

fn decode(r: &[u8]) -> Option<(u64, Ts, Option<u64>)> {
    let word = |i: usize| u64::from_le_bytes(r[i..i + 8].try_into().expect("8 bytes"));
    if r.len() != RECORD_BYTES || word(33) != checksum(&r[..33]) || r[24] > 1 {
        return None;
    }
    Some((word(0), (word(8), word(16)), (r[24] == 1).then(|| word(25))))
}

impl RegisterNode {
    pub fn new(variant: Variant, id: NodeId, nodes: usize) -> Self {
        RegisterNode {
            variant,
            id,
            nodes,
            store: vec![((0, 0), None); KEYS as usize],
            pending: Vec::new(),
            next_op: 0,
            acks: Vec::new(),
            next_sync: 0,
            synced: 0,
        }
    }

    /// The stored timestamp and value of `key`.
    pub fn stored(&self, key: u64) -> (Ts, Option<u64>) {
        self.store[key as usize]
    }

    fn majority(&self) -> u32 {
        (self.nodes / 2 + 1) as u32
    }

    fn broadcast(&self, ctx: &mut Context<'_, Self>, p: &Pending) {
        for to in ctx.node_ids() {
            if p.answered & (1 << to.get()) != 0 {
                continue;
            }
            let msg = match p.phase {
                Phase::Query => Msg::Get {
                    op: p.op,
                    key: p.key,
                },
                Phase::Store => Msg::Put {
                    op: p.op,
                    key: p.key,
                    ts: p.store.0,
                    value: p.store.1,
                },
            };
            ctx.send(to, msg);
        }
    }

    fn advance(&mut self, ctx: &mut Context<'_, Self>, index: usize) {
        let majority = self.majority();
        let p = &mut self.pending[index];
        if p.answered.count_ones() < majority {
            return;
        }
        match p.phase {
            Phase::Query => {
                p.store = match p.write {
                    Some(v) => {
                        let tag = (self.id.get() << 48) | (p.op & ((1 << 48) - 1));
                        (((p.best.0).0 + 1, tag), Some(v))
                    }
                    None => p.best,
                };
                if p.write.is_none() && self.variant == Variant::NoWriteBack {
                    let p = self.pending.swap_remove(index);
                    ctx.reply(p.client, Response::Read(p.best.1));
                    return;
                }
                p.phase = Phase::Store;
                p.answered = 0;
                let p = p.clone();
                self.broadcast(ctx, &p);
            }
            Phase::Store => {
                let p = self.pending.swap_remove(index);
                let response = match p.write {
                    Some(_) => Response::Written,
                    None => Response::Read(p.store.1),
                };
                ctx.reply(p.client, response);
            }
        }
    }
}

impl Node for RegisterNode {
    type Message = Msg;
    type Request = Request;
    type Response = Response;

    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        // Operation ids must not repeat across incarnations: start from a random base.
        self.next_op = ctx.rng().next_u64() >> 16;
        let mut valid = 0usize;
        if let Some(log) = ctx.disk().read(LOG) {
            let log = log.as_slice();
            for record in log.chunks(RECORD_BYTES) {
                let Some((key, ts, value)) = decode(record) else {
                    break;
                };
                if let Some(slot) = self.store.get_mut(key as usize)
                    && ts > slot.0
                {
                    *slot = (ts, value);
                }
                valid += RECORD_BYTES;
            }
            if valid < log.len() {
                // Cut off a torn or corrupt tail so that new records follow valid ones.
                ctx.disk()
                    .set_len(LOG, valid as u64)
                    .expect("simulated disk");
            }
        }
        ctx.set_timer(TICK_EVERY, TICK);
    }

    fn on_message(&mut self, ctx: &mut Context<'_, Self>, from: NodeId, msg: Msg) {
        match msg {
            Msg::Get { op, key } => {
                let Some(&(ts, value)) = self.store.get(key as usize) else {
                    return;
                };
                ctx.send(from, Msg::GetReply { op, ts, value });
            }
            Msg::Put { op, key, ts, value } => {
                let Some(slot) = self.store.get_mut(key as usize) else {
                    return;
                };
                if ts > slot.0 {
                    *slot = (ts, value);
                    ctx.disk()
                        .append(LOG, &encode(key, ts, value))
                        .expect("simulated disk");
                }
                if self.variant == Variant::AckBeforeSync {
                    ctx.send(from, Msg::PutAck { op });
                    return;
                }
                if self.variant == Variant::AckOnEarlierSync && self.next_sync > self.synced {
                    // The bug: ride on the sync already in flight.
                    self.acks.push((self.next_sync, from, op));
                    return;
                }
                // Acknowledge only once everything written so far is durable.
                self.next_sync += 1;
                ctx.sync(SyncToken(self.next_sync));
                self.acks.push((self.next_sync, from, op));
            }
            Msg::GetReply { op, ts, value } => {
                let Some(i) = self.pending.iter().position(|p| p.op == op) else {
                    return;
                };
                let p = &mut self.pending[i];
                if p.phase != Phase::Query {
                    return;
                }
                p.answered |= 1 << from.get();
                if ts > p.best.0 {
                    p.best = (ts, value);
                }
                self.advance(ctx, i);
            }
            Msg::PutAck { op } => {
                let Some(i) = self.pending.iter().position(|p| p.op == op) else {
                    return;
                };
                let p = &mut self.pending[i];
                if p.phase != Phase::Store {
                    return;
                }
                p.answered |= 1 << from.get();
                self.advance(ctx, i);
            }
        }
    }

    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, _timer: TimerId) {
        // Retransmit every unfinished phase to the nodes that have not answered.
        for i in 0..self.pending.len() {
            let p = self.pending[i].clone();
            self.broadcast(ctx, &p);
        }
        ctx.set_timer(TICK_EVERY, TICK);
    }

    fn on_request(&mut self, ctx: &mut Context<'_, Self>, id: RequestId, request: Request) {
        let (key, write) = match request {
            Request::Read { key } => (key, None),
            Request::Write { key, value } => (key, Some(value)),
        };
        if key >= KEYS || self.pending.len() >= 64 {
            return;
        }
        self.next_op += 1;
        let p = Pending {
            op: self.next_op,
            client: id,
            key,
            write,
            phase: Phase::Query,
            answered: 0,
            best: ((0, 0), None),
            store: ((0, 0), None),
        };
        self.broadcast(ctx, &p);
        self.pending.push(p);
    }

    fn on_synced(&mut self, ctx: &mut Context<'_, Self>, token: SyncToken) {
        self.synced = self.synced.max(token.0);
        let mut i = 0;
        while i < self.acks.len() {
            let (t, to, op) = self.acks[i];
            if t <= token.0 {
                ctx.send(to, Msg::PutAck { op });
                self.acks.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }
}

/// Clients reading and writing unique values on random keys through random nodes.
#[derive(Debug, Default)]
pub struct RegisterWorkload {
    next_value: u64,
}

impl Workload<RegisterNode> for RegisterWorkload {
    type Input = KvInput;
    type Output = KvOutput;

    fn invoke(
        &mut self,
        _client: ClientId,
        nodes: usize,
        rng: &mut SimRng,
    ) -> Option<Invocation<Request, KvInput>> {
        let node = NodeId::new(rng.below(nodes as u64) + 1);
        let key = rng.below(KEYS);
        Some(if rng.below(2) == 0 {
            Invocation {
                node,
                request: Request::Read { key },
                input: KvInput::Read { key },
            }
        } else {
            self.next_value += 1;
            let value = self.next_value;
            Invocation {
                node,
                request: Request::Write { key, value },
                input: KvInput::Write { key, value },
            }
        })
    }

    fn complete(&mut self, _: ClientId, _: &KvInput, response: &Response) -> Completion<KvOutput> {
        Completion::Ok(match response {
            Response::Read(v) => KvOutput::Read(*v),
            Response::Written => KvOutput::Written,
        })
    }
}
