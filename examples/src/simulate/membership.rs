//! The `membership` system under `synod-sim`: `synod-membership`'s [`Member`] (SWIM with
//! Lifeguard, gossip, push-pull sync, the emergent leader) as the nodes of the simulator.
//!
//! Each node keeps the one thing a member persists, its generation, in a file of its
//! simulated disk ([`GenerationStore`]); `synod-sim`'s generic adapter, [`ProtocolNode`],
//! does the rest (messages, timers, syncs, restarts). There are no clients: what a run
//! checks is the members themselves.
//!
//! - **Invariant**, after every event: no start of a member takes part with a generation
//!   an earlier start of it used, whatever a crash did to the unsynced write of the last
//!   one (two starts sharing one would let the old one's news pass for the new one's).
//! - **Liveness**, after every fault is healed: within the run's liveness bound, every
//!   member is up, ready and not paused, and every view holds every member alive.
//! - **Figures**: for each crash of a ready member, the protocol periods until a first
//!   live member, and then every live member, held it dead (or had forgotten it), measured
//!   at period boundaries (a member restarted before that counts as neither); the periods
//!   from the heal until all views agreed, next to `log2 n`; and the suspicions refuted.
//!
//! The protocol period is [`PERIOD_MS`], short so that the simulator's two seconds of
//! liveness phase hold 100 periods; links take 0.1 to 2 ms, with a 20 ms tail on 5% of
//! messages, so a tenth of the period is not always enough for a direct probe.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use synod_membership::{Body, Member, MemberConfig, MemberState, MemberWrite, Message};
use synod_node::Protocol;
use synod_sim::timeline::{Observation, Recorder, Role};
use synod_sim::{
    Boot, Disk, NoClients, NodeId, ProtocolNode, ProtocolStore, SimConfig, SimTime, Simulation,
    View,
};

use super::RunSummary;

/// The protocol period (probe interval) of the simulated members, in milliseconds.
pub const PERIOD_MS: u64 = 20;
/// The smallest and largest `--nodes` the membership simulation takes. At 512 a run takes
/// 20 to 40 s of CPU (seeds 1 and 2 on 2026-12-07, views agreed 7.7 to 7.9 periods after
/// the heal, log2 n = 9).
pub const NODES: (usize, usize) = (2, 512);

/// The file of a node's disk that holds its generations.
const FILE: &str = "generation";
/// The bytes that start every record.
const MAGIC: [u8; 4] = *b"SGEN";
/// One record: [`MAGIC`], a generation (little-endian), and the CRC-32 of the generation's
/// bytes (little-endian).
const RECORD_BYTES: usize = 16;

/// The members' configuration: members 1 and 2 are the seeds; a probe times out after half
/// a period; gossip rounds every fifth of a period to 3 members; a push-pull sync every 5
/// periods; the dead forgotten after 300 periods.
fn config(id: NodeId, rng_seed: u64) -> MemberConfig {
    MemberConfig::builder(id, rng_seed)
        .seeds([NodeId::new(1), NodeId::new(2)])
        .probe(PERIOD_MS, PERIOD_MS / 2)
        .gossip(PERIOD_MS / 5, 3)
        .push_pull_interval_ms(5 * PERIOD_MS)
        .dead_reap_ms(300 * PERIOD_MS)
        .build()
        .expect("a valid configuration: every value is fixed here")
}

/// The record of `generation`.
fn record(generation: u64) -> [u8; RECORD_BYTES] {
    let value = generation.to_le_bytes();
    let mut out = [0; RECORD_BYTES];
    out[..4].copy_from_slice(&MAGIC);
    out[4..12].copy_from_slice(&value);
    out[12..].copy_from_slice(&crc32fast::hash(&value).to_le_bytes());
    out
}

/// The largest generation in `bytes` (0 if none). A record is looked for at every offset,
/// so a record torn at a crash, or damaged (its checksum then fails), leaves the records
/// appended after the restart readable; only a write the member never saw synced is lost
/// that way, and the member never used that generation.
fn largest_generation(bytes: &[u8]) -> u64 {
    bytes
        .windows(RECORD_BYTES)
        .filter(|w| w[..4] == MAGIC)
        .filter_map(|w| {
            let value: [u8; 8] = w[4..12].try_into().ok()?;
            let check = u32::from_le_bytes(w[12..].try_into().ok()?);
            (crc32fast::hash(&value) == check).then(|| u64::from_le_bytes(value))
        })
        .max()
        .unwrap_or(0)
}

/// How a simulated member keeps its generation: one record appended per write to
/// the file `generation` of the node's disk, made durable by the adapter's syncs.
#[derive(Debug, Default)]
pub struct GenerationStore;

impl ProtocolStore for GenerationStore {
    type Protocol = Member;

    fn recover(&mut self, boot: Boot<'_>) -> io::Result<Member> {
        let last = largest_generation(&boot.disk.read(FILE).unwrap_or_default());
        Ok(Member::start(config(boot.id, boot.rng.next_u64()), last))
    }

    fn write(&mut self, disk: &mut Disk, write: &MemberWrite) -> io::Result<()> {
        disk.append(FILE, &record(write.generation))
    }
}

/// One simulated member.
pub type MemberNode = ProtocolNode<GenerationStore>;

/// A crash of a ready member, followed until every live member holds it dead.
#[derive(Debug)]
struct Crash {
    id: NodeId,
    generation: u64,
    at: SimTime,
    first: Option<f64>,
}

/// What the invariant follows from event to event.
#[derive(Debug, Default)]
struct Watch {
    /// Per member (index = id): the generation its last ready start used.
    used: Vec<u64>,
    /// Per member: the generation it runs ready with, if it does.
    running: Vec<Option<u64>>,
    crashes: Vec<Crash>,
    next_round: SimTime,
    /// Detection times of crashes, in periods: by a first member, and by every one.
    first: Vec<f64>,
    all: Vec<f64>,
    /// Crashed members that restarted before every live member held them dead.
    back_first: u64,
    /// Suspicions refuted, summed over the starts running at the last round.
    refutations: u64,
}

fn periods(since: SimTime, now: SimTime) -> f64 {
    now.saturating_duration_since(since).as_secs_f64() * 1_000.0 / PERIOD_MS as f64
}

type MemberView<'a> = View<'a, MemberNode, (), ()>;

impl Watch {
    fn new(nodes: usize) -> Self {
        Watch {
            used: vec![0; nodes + 1],
            running: vec![None; nodes + 1],
            ..Watch::default()
        }
    }

    /// Checks the generations and notes crashes; at each period boundary, measures
    /// detection.
    fn check(&mut self, view: &MemberView<'_>) -> Result<(), String> {
        let now = view.now();
        for (slot, running) in self.running.iter_mut().enumerate().skip(1) {
            let id = NodeId::new(slot as u64);
            let member = view.node(id).and_then(|n| n.protocol());
            if let Some(member) = member {
                let used = self.used[slot];
                let reused = if member.is_ready() {
                    member.generation() < used
                } else {
                    member.generation() <= used
                };
                if reused {
                    return Err(format!(
                        "{id} starts with generation {} after it used {used}",
                        member.generation()
                    ));
                }
                if member.is_ready() {
                    self.used[slot] = member.generation();
                }
            }
            let now_running = member.filter(|m| m.is_ready()).map(Member::generation);
            if let (Some(generation), None) = (*running, view.node(id)) {
                self.crashes.push(Crash {
                    id,
                    generation,
                    at: now,
                    first: None,
                });
            }
            *running = now_running;
        }
        if now >= self.next_round {
            self.next_round = now.saturating_add(Duration::from_millis(PERIOD_MS));
            self.round(view);
        }
        Ok(())
    }

    fn round(&mut self, view: &MemberView<'_>) {
        let mut refutations = 0;
        for (_, node) in view.nodes() {
            refutations += node.protocol().map_or(0, |m| m.stats().refutations);
        }
        self.refutations = refutations;
        let now = view.now();
        let running = &self.running;
        let mut done = Vec::new();
        for (i, crash) in self.crashes.iter_mut().enumerate() {
            if running[crash.id.get() as usize].is_some_and(|g| g > crash.generation) {
                // Back with a new start before every member held it dead.
                self.back_first += 1;
                done.push(i);
                continue;
            }
            let observers: Vec<bool> = view
                .nodes()
                .filter(|&(id, _)| id != crash.id && !view.is_paused(id))
                .filter_map(|(_, node)| node.protocol())
                .filter(|m| m.is_ready())
                .map(|m| {
                    m.state_of(crash.id)
                        .is_none_or(|state| state == MemberState::Dead)
                })
                .collect();
            if crash.first.is_none() && observers.iter().any(|&dead| dead) {
                crash.first = Some(periods(crash.at, now));
                self.first.push(periods(crash.at, now));
            }
            if !observers.is_empty() && observers.iter().all(|&dead| dead) {
                self.all.push(periods(crash.at, now));
                done.push(i);
            }
        }
        for i in done.into_iter().rev() {
            self.crashes.remove(i);
        }
    }
}

/// Every member up, ready, not paused, and holding every member alive.
fn views_agree(view: &MemberView<'_>, everyone: &[NodeId]) -> bool {
    everyone.iter().all(|&id| {
        !view.is_paused(id)
            && view
                .node(id)
                .and_then(|node| node.protocol())
                .is_some_and(|m| m.is_ready() && m.live_members() == everyone)
    })
}

/// The mean and 99th percentile of `xs`, as text.
fn mean_p99(xs: &mut [f64]) -> String {
    if xs.is_empty() {
        return "none measured".to_owned();
    }
    xs.sort_by(f64::total_cmp);
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let at = ((xs.len() as f64 * 0.99).ceil() as usize).clamp(1, xs.len()) - 1;
    format!(
        "mean {mean:.1}, p99 {:.1} periods ({} crashes)",
        xs[at],
        xs.len()
    )
}

/// What the timeline page draws of a member: the coordinator in its own view (the emergent
/// leader), a member, or a start whose generation is not durable yet, with its generation
/// as the term. `Member` is synod-membership's and `Describe` synod-sim's, so the recorder
/// is given these by hand rather than through `Describe`.
fn member_role(member: &Member) -> Role {
    let name = if !member.is_ready() {
        "joining"
    } else if member.coordinator() == member.id() {
        "coordinator"
    } else {
        "member"
    };
    Role::new(name, member.generation())
}

/// The kind of a member's message, for the timeline page.
fn message_kind(message: &Message) -> &'static str {
    match message.body {
        Body::Ping { .. } => "ping",
        Body::Ack { .. } => "ack",
        Body::PingReq { .. } => "ping-req",
        Body::IndirectAck { .. } => "indirect-ack",
        Body::Nack { .. } => "nack",
        Body::Gossip => "gossip",
        Body::SyncOffer { .. } => "sync-offer",
        Body::Sync { .. } => "sync",
        Body::KvSyn { .. } => "kv-digest",
        Body::KvAck { .. } => "kv-answer",
        Body::KvDelta { .. } => "kv-delta",
    }
}

/// The recorder of the members' runs for the timeline page.
fn recorder() -> Recorder<MemberNode> {
    Recorder::new(
        |node: &MemberNode| Observation {
            role: node.protocol().map(member_role),
            ..Observation::default()
        },
        message_kind,
    )
}

/// Runs the members once with `seed`.
pub(super) fn run(seed: u64, config: SimConfig, record: bool) -> RunSummary {
    let nodes = config.nodes();
    let watch = Rc::new(RefCell::new(Watch::new(nodes)));
    let watched = watch.clone();
    let everyone: Vec<NodeId> = (1..=nodes as u64).map(NodeId::new).collect();
    let simulation = Simulation::new(
        config,
        seed,
        |_| ProtocolNode::new(GenerationStore),
        NoClients,
    )
    .invariant(move |view| watched.borrow_mut().check(view))
    .progress(move |view| views_agree(view, &everyone));
    let simulation = if record {
        simulation.record(recorder())
    } else {
        simulation
    };
    let report = simulation.run();
    let mut watch = watch.take();
    let agreed = match (report.failure.is_none(), report.healed_at) {
        (true, Some(healed)) => format!(
            "{:.1} periods after the heal (log2 n = {:.1})",
            periods(healed, report.end_time),
            (nodes as f64).log2()
        ),
        _ => "no".to_owned(),
    };
    let figures = vec![
        format!(
            "crashed member first held dead: {}",
            mean_p99(&mut watch.first)
        ),
        format!(
            "held dead by every live member: {}; {} restarted before that",
            mean_p99(&mut watch.all),
            watch.back_first
        ),
        format!("views agreed: {agreed}"),
        format!(
            "suspicions refuted: {} (by the starts running at the end)",
            watch.refutations
        ),
    ];
    RunSummary::of_figures(
        report,
        figures,
        "generations never reused, all views agreed after healing",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_whole_record_is_the_generation_whatever_a_crash_left() {
        let mut bytes = Vec::new();
        for g in [1, 2, 3] {
            bytes.extend_from_slice(&record(g));
        }
        assert_eq!(largest_generation(&bytes), 3);
        // A torn record, then one written after the restart.
        bytes.extend_from_slice(&record(9)[..5]);
        bytes.extend_from_slice(&record(4));
        assert_eq!(largest_generation(&bytes), 4);
        // A flipped bit in the last record loses only that record.
        let last = bytes.len() - 10;
        bytes[last] ^= 0x10;
        assert_eq!(largest_generation(&bytes), 3);
        assert_eq!(largest_generation(&[]), 0);
    }
}
