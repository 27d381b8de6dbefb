//! The per-key Paxos register through `CasRegisterNode`, with clients at every node, under
//! loss, duplication, reordering and crashes that lose unsynced writes: every history of
//! reads and compare-and-sets is linearizable (synod-sim's checker with its key-value
//! model); a replica that forgets its promises (restarts from an empty disk) is caught.
//! The same nodes run under synod-sim too, through its generic `ProtocolNode` adapter, with
//! its fault model and checker.
//!
//! `SYNOD_REGISTER_SEEDS` sets the seed count of the hand-stepped runs (default 1000),
//! `SYNOD_REGISTER_SIM_SEEDS` that of the simulated ones (default 200).

use synod_consensus::NodeId;
use synod_consensus::paxos::Ballot;
use synod_consensus::paxos::register::RegisterMessage;
use synod_consensus::paxos::{
    CasRegisterNode, CasReply, CasRequest, KeyWrite, NodeConfig, RequestError,
};
use synod_node::{Probability, RequestId, Rng};
use synod_sim::{
    ClientId, History, KvInput, KvModel, KvOutput, Linearizability, OpId, SimTime, Verdict,
};

use crate::paxos::{Cluster, Faults, promise_waits_for_its_persist};

fn n(id: u64) -> NodeId {
    NodeId::new(id)
}

const KEYS_MAX: usize = 16;

/// A client of the register: one operation at a time, sent to a random node.
struct Client {
    /// The operation waiting for its reply: request id, history op, input, give-up step.
    op: Option<(RequestId, OpId, KvInput, u64)>,
    next_at: u64,
    done: u64,
}

type Node = CasRegisterNode<u64, u64>;

fn cluster(seed: u64, size: u64, forgetful: bool) -> Cluster<Node> {
    Cluster::new(
        seed,
        size,
        Faults::storm(),
        Box::new(move |id, durable: &[KeyWrite<u64, u64>]| {
            let config = NodeConfig::new(id, (1..=size).map(n))
                .unwrap()
                .retry_timeout_ms(40)
                .seed(seed ^ id.get());
            if forgetful && id == n(1) {
                // A replica that loses its state (as if it never persisted it).
                CasRegisterNode::new(config, KEYS_MAX)
            } else {
                CasRegisterNode::restore(config, KEYS_MAX, durable.iter().cloned())
            }
        }),
    )
}

/// One run; returns the checker's verdict, how many operations completed, and crashes.
fn run(seed: u64, forgetful: bool) -> (Verdict, u64, u64) {
    let mut rng = Rng::new(seed);
    let size = if rng.below(2) == 0 { 3 } else { 5 };
    let mut c = cluster(seed, size, forgetful);
    let mut clients: Vec<Client> = (0..3)
        .map(|_| Client {
            op: None,
            next_at: rng.below(10),
            done: 0,
        })
        .collect();
    let mut history: History<KvInput, KvOutput> = History::new();
    let mut next_value = 0u64;
    let mut next_request = 0u64;
    let mut completed = 0;
    let mut seen = 0;
    for step in 0..4000u64 {
        let now = SimTime::from_micros(step);
        for (i, client) in clients.iter_mut().enumerate() {
            if client.op.is_none() && step >= client.next_at && client.done < 8 {
                next_value += 1;
                next_request += 1;
                let (input, request) = if rng.below(3) == 0 {
                    (KvInput::Read { key: 0 }, CasRequest::Read { key: 0 })
                } else {
                    let expect = match rng.below(3) {
                        0 => None,
                        _ => Some(next_value.saturating_sub(rng.between(1, 3))),
                    };
                    let input = KvInput::Cas {
                        key: 0,
                        expect,
                        new: next_value,
                    };
                    let request = CasRequest::CompareAndSet {
                        key: 0,
                        expect,
                        new: next_value,
                    };
                    (input, request)
                };
                let op = history.invoke(ClientId::new(i as u32), input, now);
                let id = RequestId(next_request);
                client.op = Some((id, op, input, step + 600));
                let node = n(rng.between(1, size));
                c.request(node, id, request);
            }
            // A client that hears nothing (its node crashed) gives up: the op stays open.
            if let Some((_, _, _, give_up)) = client.op
                && step >= give_up
            {
                client.op = None;
                client.done += 1;
                client.next_at = step + rng.between(1, 20);
            }
        }
        if forgetful && rng.chance(Probability::from_ppm(30_000)) {
            c.crash(0);
        }
        c.step();
        for (_, id, response) in &c.replies[seen..] {
            let Some(client) = clients
                .iter_mut()
                .find(|cl| cl.op.is_some_and(|(r, ..)| r == *id))
            else {
                continue; // a reply after its client gave up
            };
            let (_, op, input, _) = client.op.take().expect("matched above");
            match response {
                Ok(CasReply { applied, value }) => {
                    let output = match input {
                        KvInput::Read { .. } => KvOutput::Read(*value),
                        _ => KvOutput::Cas(*applied),
                    };
                    history.ok(op, output, now).unwrap();
                    completed += 1;
                }
                Err(RequestError::Unknown) => {} // left open: it may or may not apply
                Err(_) => history.fail(op, now).unwrap(),
            }
            client.done += 1;
            client.next_at = step + rng.between(1, 20);
        }
        seen = c.replies.len();
    }
    let verdict = Linearizability::new(KvModel).check(&history);
    (verdict, completed, c.crashes)
}

#[test]
fn duelling_compare_and_sets_are_linearizable() {
    let seeds: u64 = std::env::var("SYNOD_REGISTER_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let (mut completed, mut crashes) = (0, 0);
    for seed in 0..seeds {
        let (verdict, done, crashed) = run(seed, false);
        assert_eq!(verdict, Verdict::Pass, "seed {seed}");
        completed += done;
        crashes += crashed;
    }
    println!(
        "paxos register nodes: {seeds} seeds, {completed} operations completed, {crashes} crashes, 0 violations"
    );
    assert!(completed > seeds * 5);
}

#[test]
fn a_replica_forgetting_its_promises_is_caught() {
    let caught = (0..2000).find(|&seed| matches!(run(seed, true).0, Verdict::Violation(_)));
    let seed = caught.expect("caught within 2000 seeds");
    println!("forgetful replica caught at seed {seed}");
}

#[test]
fn a_promise_is_not_sent_before_its_persist_is_acknowledged() {
    let config = NodeConfig::new(n(2), [1, 2, 3].map(n)).unwrap();
    let mut node: Node = CasRegisterNode::new(config, KEYS_MAX);
    let ballot = Ballot {
        round: 1,
        node: n(1),
    };
    let write = promise_waits_for_its_persist(
        &mut node,
        &RegisterMessage::Prepare { key: 0, ballot },
        None,
        |m| matches!(m, RegisterMessage::Promise { ok: true, .. }),
    );
    assert_eq!(write.state.promised, Some(ballot));
}

// Under synod-sim: the register's nodes run by the simulator's generic adapter, with its
// network faults (loss, duplication, delay, partitions), crashes that lose or tear
// unsynced writes, pauses and clock faults, swarm-tested from each seed.

/// The store of one simulated node: each `KeyWrite` appended to a log as a record of its
/// length, its postcard bytes and a checksum; at a start, the valid prefix is replayed
/// (a torn or damaged tail is cut off, so later appends follow whole records).
struct RegisterLog {
    nodes: usize,
}

const LOG_FILE: &str = "register.log";
/// A record longer than this is damage, not a write.
const RECORD_BYTES_MAX: usize = 1024;

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The whole, valid records at the start of `log`, and how many bytes they take.
fn replay(log: &[u8]) -> (Vec<KeyWrite<u64, u64>>, usize) {
    let mut writes = Vec::new();
    let mut at = 0;
    while let Some(header) = log.get(at..at + 4) {
        let len = u32::from_le_bytes(header.try_into().expect("4 bytes")) as usize;
        let end = at + 4 + len + 8;
        if len > RECORD_BYTES_MAX || end > log.len() {
            break;
        }
        let body = &log[at + 4..at + 4 + len];
        let sum = u64::from_le_bytes(log[end - 8..end].try_into().expect("8 bytes"));
        let Ok(write) = postcard::from_bytes(body) else {
            break;
        };
        if sum != checksum(body) {
            break;
        }
        writes.push(write);
        at = end;
    }
    (writes, at)
}

impl synod_sim::ProtocolStore for RegisterLog {
    type Protocol = Node;

    fn recover(&mut self, boot: synod_sim::Boot<'_>) -> std::io::Result<Node> {
        let log = boot.disk.read(LOG_FILE).unwrap_or_default();
        let (writes, valid) = replay(&log);
        if valid < log.len() {
            boot.disk.set_len(LOG_FILE, valid as u64)?;
        }
        let config = NodeConfig::new(boot.id, (1..=self.nodes as u64).map(n))
            .expect("a member")
            .retry_timeout_ms(10)
            .seed(boot.rng.next_u64());
        Ok(CasRegisterNode::restore(config, KEYS_MAX, writes))
    }

    fn write(
        &mut self,
        disk: &mut synod_sim::Disk,
        write: &KeyWrite<u64, u64>,
    ) -> std::io::Result<()> {
        let body = postcard::to_stdvec(write).expect("a key write encodes");
        let mut record = (body.len() as u32).to_le_bytes().to_vec();
        record.extend_from_slice(&body);
        record.extend_from_slice(&checksum(&body).to_le_bytes());
        disk.append(LOG_FILE, &record)
    }
}

type SimNode = synod_sim::ProtocolNode<RegisterLog>;

/// Clients of the simulated register: reads and compare-and-sets of key 0 at random nodes.
#[derive(Default)]
struct SimClients {
    next_value: u64,
}

impl synod_sim::Workload<SimNode> for SimClients {
    type Input = KvInput;
    type Output = KvOutput;

    fn invoke(
        &mut self,
        _: ClientId,
        nodes: usize,
        rng: &mut synod_sim::SimRng,
    ) -> Option<synod_sim::Invocation<CasRequest<u64, u64>, KvInput>> {
        let node = n(rng.below(nodes as u64) + 1);
        self.next_value += 1;
        Some(if rng.below(3) == 0 {
            synod_sim::Invocation {
                node,
                request: CasRequest::Read { key: 0 },
                input: KvInput::Read { key: 0 },
            }
        } else {
            let expect = match rng.below(3) {
                0 => None,
                _ => Some(self.next_value.saturating_sub(rng.below(3) + 1)),
            };
            let new = self.next_value;
            synod_sim::Invocation {
                node,
                request: CasRequest::CompareAndSet {
                    key: 0,
                    expect,
                    new,
                },
                input: KvInput::Cas {
                    key: 0,
                    expect,
                    new,
                },
            }
        })
    }

    fn complete(
        &mut self,
        _: ClientId,
        input: &KvInput,
        response: &Result<CasReply<u64>, RequestError>,
    ) -> synod_sim::Completion<KvOutput> {
        use synod_sim::Completion;
        match response {
            Ok(CasReply { applied, value }) => Completion::Ok(match input {
                KvInput::Read { .. } => KvOutput::Read(*value),
                _ => KvOutput::Cas(*applied),
            }),
            Err(RequestError::Unknown) => Completion::Unknown,
            // Refused before anything was proposed.
            Err(_) => Completion::Fail,
        }
    }
}

fn simulated(seed: u64, nodes: usize) -> synod_sim::RunReport<KvInput, KvOutput> {
    let config = synod_sim::SimConfig::builder(nodes)
        .clients(4)
        .safety_time(std::time::Duration::from_millis(300))
        .liveness_time_max(std::time::Duration::from_secs(2))
        .client_timeout(std::time::Duration::from_millis(200))
        .build()
        .expect("a valid simulation config");
    synod_sim::Simulation::new(
        config,
        seed,
        move |_| synod_sim::ProtocolNode::new(RegisterLog { nodes }),
        SimClients::default(),
    )
    .progress(|view| {
        view.healed_at()
            .is_some_and(|t| view.history().ok_invoked_since(t) > 0)
    })
    .run()
}

#[test]
fn the_register_nodes_are_linearizable_under_the_simulator() {
    let seeds: u64 = std::env::var("SYNOD_REGISTER_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let mut ok = 0;
    for seed in 0..seeds {
        let nodes = if seed % 2 == 0 { 3 } else { 5 };
        let report = simulated(seed, nodes);
        assert_eq!(
            report.check(&mut Linearizability::new(KvModel)),
            Ok(()),
            "seed {seed} ({nodes} nodes)"
        );
        ok += report.history.ok_count();
    }
    println!("paxos register under synod-sim: {seeds} seeds, {ok} operations ok, 0 violations");
    assert!(ok as u64 > seeds * 10, "the register made progress: {ok}");
}
