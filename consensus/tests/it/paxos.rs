//! Single-decree Paxos with duelling proposers over a lossy, duplicating, reordering
//! network: at most one value is ever chosen, across thousands of seeds; an acceptor that
//! hides its accepted value from promises is caught.
//!
//! `SYNOD_PAXOS_SEEDS` sets the seed count (default 2000).

use std::collections::BTreeSet;

use synod_consensus::paxos::{Acceptor, Learner, PaxosMessage, Proposer};
use synod_consensus::{NodeId, SplitMix64};

fn n(id: u64) -> NodeId {
    NodeId::new(id)
}

/// One run: acceptors 1..=a, proposers 101.. each proposing its own value. Returns the
/// set of values anyone learned as chosen, or an error at the first second value.
fn run(seed: u64, broken: bool) -> Result<Option<u64>, String> {
    let mut rng = SplitMix64::new(seed);
    let acceptor_count = if rng.range(0, 2) == 0 { 3 } else { 5 };
    let acceptor_ids: Vec<NodeId> = (1..=acceptor_count).map(n).collect();
    let mut acceptors: Vec<Acceptor<u64>> = acceptor_ids
        .iter()
        .enumerate()
        .map(|(i, _)| {
            if broken && i == 0 {
                Acceptor::broken_hiding_accepted()
            } else {
                Acceptor::new()
            }
        })
        .collect();
    let proposer_count = rng.range(2, 4);
    let mut proposers: Vec<Proposer<u64>> = (0..proposer_count)
        .map(|p| Proposer::new(n(101 + p), acceptor_ids.clone()).unwrap())
        .collect();
    let mut learners: Vec<Learner<u64>> = (0..2)
        .map(|_| Learner::new(acceptor_ids.clone(), 64).unwrap())
        .collect();
    // (from, to, message); `to` >= 101 is a proposer, 1..=5 an acceptor, 201.. a learner.
    let mut net: Vec<(NodeId, NodeId, PaxosMessage<u64>)> = Vec::new();
    let mut timers: Vec<u64> = (0..proposer_count).map(|_| rng.range(0, 20)).collect();
    let mut chosen: BTreeSet<u64> = BTreeSet::new();
    for step in 0..3000u64 {
        // Proposers (re)start when their randomized timer fires.
        for p in 0..proposer_count as usize {
            if timers[p] == step && proposers[p].chosen().is_none() {
                let from = n(101 + p as u64);
                for (to, m) in proposers[p].propose(1000 + p as u64) {
                    net.push((from, to, m));
                }
                timers[p] = step + rng.range(20, 80);
            }
        }
        if net.is_empty() {
            continue;
        }
        let at = rng.range(0, net.len() as u64) as usize;
        let (from, to, msg) = net.swap_remove(at);
        if rng.range(0, 10) == 0 {
            continue; // lost
        }
        if rng.range(0, 20) == 0 {
            net.push((from, to, msg.clone())); // duplicated
        }
        let to_raw = to.get();
        if (1..=acceptor_count).contains(&to_raw) {
            let a = (to_raw - 1) as usize;
            if let Some(reply) = acceptors[a].handle(msg) {
                if matches!(reply, PaxosMessage::Accepted { ok: true, .. }) {
                    for l in 0..learners.len() as u64 {
                        net.push((to, n(201 + l), reply.clone()));
                    }
                }
                net.push((to, from, reply));
            }
        } else if (101..200).contains(&to_raw) {
            let p = (to_raw - 101) as usize;
            let (out, decided) = proposers[p].handle(from, msg);
            for (dest, m) in out {
                net.push((to, dest, m));
            }
            if let Some(v) = decided {
                chosen.insert(v);
            }
        } else {
            let l = (to_raw - 201) as usize;
            if let Some(v) = learners[l].handle(from, &msg) {
                chosen.insert(v);
            }
        }
        if chosen.len() > 1 {
            return Err(format!("seed {seed}: two values chosen: {chosen:?}"));
        }
    }
    Ok(chosen.into_iter().next())
}

#[test]
fn duelling_proposers_choose_at_most_one_value() {
    let seeds: u64 = std::env::var("SYNOD_PAXOS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let mut decided = 0;
    for seed in 0..seeds {
        if run(seed, false).unwrap().is_some() {
            decided += 1;
        }
    }
    println!("paxos: {seeds} seeds, {decided} decided, 0 with two values chosen");
    assert!(decided * 10 > seeds * 9, "most runs decide: {decided}");
}

#[test]
fn an_acceptor_hiding_its_accepted_value_is_caught() {
    let caught = (0..2000).find(|&seed| run(seed, true).is_err());
    let seed = caught.expect("caught within 2000 seeds");
    println!(
        "broken acceptor caught at seed {seed}: {}",
        run(seed, true).unwrap_err()
    );
}

#[test]
fn a_restored_acceptor_keeps_its_promise() {
    let mut a: Acceptor<u64> = Acceptor::new();
    let b = |round| synod_consensus::paxos::Ballot { round, node: n(9) };
    a.handle(PaxosMessage::Prepare { ballot: b(5) });
    let mut restored = Acceptor::restore(a.state().clone());
    let reply = restored.handle(PaxosMessage::Accept {
        ballot: b(4),
        value: 1,
    });
    assert!(matches!(
        reply,
        Some(PaxosMessage::Accepted { ok: false, .. })
    ));
}
