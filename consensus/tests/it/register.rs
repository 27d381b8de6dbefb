//! The per-key Paxos register under duelling coordinators, loss, duplication and
//! reordering: every history of reads and compare-and-sets is linearizable (synod-sim's
//! checker with its key-value model); a replica that forgets its promises is caught.
//!
//! `SYNOD_REGISTER_SEEDS` sets the seed count (default 1000).

use synod_consensus::paxos::register::{
    CasCoordinator, CasStatus, RegisterAcceptor, RegisterMessage,
};
use synod_consensus::{NodeId, SplitMix64};
use synod_sim::{
    ClientId, History, KvInput, KvModel, KvOutput, Linearizability, OpId, SimTime, Verdict,
};

fn n(id: u64) -> NodeId {
    NodeId::new(id)
}

struct Client {
    op: Option<(OpId, KvInput, CasCoordinator<u64, u64>)>,
    retry_at: Option<u64>,
    next_at: u64,
    done: u64,
}

/// One run; returns the checker's verdict and how many operations completed.
fn run(seed: u64, forgetful: bool) -> (Verdict, u64) {
    let mut rng = SplitMix64::new(seed);
    let replica_count = if rng.range(0, 2) == 0 { 3 } else { 5 };
    let ids: Vec<NodeId> = (1..=replica_count).map(n).collect();
    let mut replicas: Vec<RegisterAcceptor<u64, u64>> =
        ids.iter().map(|_| RegisterAcceptor::new(16)).collect();
    let mut clients: Vec<Client> = (0..3)
        .map(|_| Client {
            op: None,
            retry_at: None,
            next_at: rng.range(0, 10),
            done: 0,
        })
        .collect();
    let mut history: History<KvInput, KvOutput> = History::new();
    // (from, to, message): replicas are 1..=5, clients 101..
    let mut net: Vec<(NodeId, NodeId, RegisterMessage<u64, u64>)> = Vec::new();
    let mut next_value = 0u64;
    let mut completed = 0;
    for step in 0..4000u64 {
        let now = SimTime::from_micros(step);
        for (c, client) in clients.iter_mut().enumerate() {
            let me = n(101 + c as u64);
            if client.op.is_none() && step >= client.next_at && client.done < 8 {
                next_value += 1;
                let (input, coordinator) = match rng.range(0, 3) {
                    0 => (
                        KvInput::Read { key: 0 },
                        CasCoordinator::read(me, ids.clone(), 0).unwrap(),
                    ),
                    _ => {
                        let expect = match rng.range(0, 3) {
                            0 => None,
                            _ => Some(next_value.saturating_sub(rng.range(1, 4))),
                        };
                        (
                            KvInput::Cas {
                                key: 0,
                                expect,
                                new: next_value,
                            },
                            CasCoordinator::compare_and_set(me, ids.clone(), 0, expect, next_value)
                                .unwrap(),
                        )
                    }
                };
                let op = history.invoke(ClientId::new(c as u32), input, now);
                client.op = Some((op, input, coordinator));
                client.retry_at = Some(step);
            }
            if client.retry_at == Some(step)
                && let Some((_, _, coordinator)) = client.op.as_mut()
            {
                for (to, m) in coordinator.start(0) {
                    net.push((me, to, m));
                }
                client.retry_at = None;
            }
        }
        if net.is_empty() {
            continue;
        }
        let at = rng.range(0, net.len() as u64) as usize;
        let (from, to, msg) = net.swap_remove(at);
        if rng.range(0, 10) == 0 {
            continue;
        }
        if rng.range(0, 20) == 0 {
            net.push((from, to, msg.clone()));
        }
        let raw = to.get();
        if raw <= replica_count {
            let r = (raw - 1) as usize;
            if forgetful && r == 0 && rng.range(0, 3) == 0 {
                // A replica that loses its state (as if it never persisted it).
                replicas[0] = RegisterAcceptor::new(16);
            }
            if let Some(reply) = replicas[r].handle(msg) {
                net.push((to, from, reply));
            }
        } else {
            let c = (raw - 101) as usize;
            let client = &mut clients[c];
            let Some((op, input, coordinator)) = client.op.as_mut() else {
                continue;
            };
            let (out, status) = coordinator.handle(from, msg);
            for (dest, m) in out {
                net.push((to, dest, m));
            }
            match status {
                CasStatus::Pending => {}
                CasStatus::Retry => client.retry_at = Some(step + rng.range(1, 40)),
                CasStatus::Unknown => {
                    // Left unanswered in the history: it may or may not take effect.
                    client.op = None;
                    client.done += 1;
                    client.next_at = step + rng.range(1, 20);
                }
                CasStatus::Done { applied, value } => {
                    let output = match input {
                        KvInput::Read { .. } => KvOutput::Read(value),
                        _ => KvOutput::Cas(applied),
                    };
                    history.ok(*op, output, now).unwrap();
                    completed += 1;
                    client.op = None;
                    client.done += 1;
                    client.next_at = step + rng.range(1, 20);
                }
            }
        }
    }
    (Linearizability::new(KvModel).check(&history), completed)
}

#[test]
fn duelling_compare_and_sets_are_linearizable() {
    let seeds: u64 = std::env::var("SYNOD_REGISTER_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let mut completed = 0;
    for seed in 0..seeds {
        let (verdict, done) = run(seed, false);
        assert_eq!(verdict, Verdict::Pass, "seed {seed}");
        completed += done;
    }
    println!("paxos register: {seeds} seeds, {completed} operations completed, 0 violations");
    assert!(completed > seeds * 5);
}

#[test]
fn a_replica_forgetting_its_promises_is_caught() {
    // Measured: first caught at seed 846.
    let caught = (0..2000).find(|&seed| matches!(run(seed, true).0, Verdict::Violation(_)));
    let seed = caught.expect("caught within 2000 seeds");
    println!("forgetful replica caught at seed {seed}");
}
