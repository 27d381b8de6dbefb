//! Multi-Paxos with competing leaders over a lossy, duplicating, reordering network: no
//! slot ever has two chosen values, no command is chosen twice, and a final leader fills
//! every gap so the log has no holes.
//!
//! `SYNOD_MULTI_PAXOS_SEEDS` sets the seed count (default 300).

use std::collections::{BTreeMap, BTreeSet};

use synod_consensus::paxos::multi::{
    LeaderStatus, MultiAcceptor, MultiLeader, MultiMessage, SlotValue,
};
use synod_consensus::{NodeId, SplitMix64};

fn n(id: u64) -> NodeId {
    NodeId::new(id)
}

type Net = Vec<(NodeId, NodeId, MultiMessage<u64>)>;

fn deliver(
    net: &mut Net,
    at: usize,
    acceptors: &mut [MultiAcceptor<u64>],
    leaders: &mut [MultiLeader<u64>],
) {
    let (from, to, msg) = net.swap_remove(at);
    let raw = to.get();
    if raw <= acceptors.len() as u64 {
        if let Some(reply) = acceptors[(raw - 1) as usize].handle(msg) {
            net.push((to, from, reply));
        }
    } else {
        let l = (raw - 101) as usize;
        for (dest, m) in leaders[l].handle(from, msg) {
            net.push((to, dest, m));
        }
    }
}

fn run(seed: u64, broken: bool) -> Result<usize, String> {
    let mut rng = SplitMix64::new(seed);
    let count = if rng.range(0, 2) == 0 { 3 } else { 5 };
    let ids: Vec<NodeId> = (1..=count).map(n).collect();
    let mut acceptors: Vec<MultiAcceptor<u64>> =
        ids.iter().map(|_| MultiAcceptor::new(4096)).collect();
    let mut leaders: Vec<MultiLeader<u64>> = (0..2)
        .map(|l| {
            let leader = MultiLeader::new(n(101 + l), ids.clone(), 8).unwrap();
            if broken && l == 1 {
                leader.broken_ignoring_reports()
            } else {
                leader
            }
        })
        .collect();
    let mut net: Net = Vec::new();
    let mut wake = [rng.range(0, 10), rng.range(0, 10)];
    let mut next_command = 0u64;
    // Every value anyone saw chosen, per slot.
    let mut seen: BTreeMap<u64, SlotValue<u64>> = BTreeMap::new();
    for step in 0..3000u64 {
        for l in 0..2 {
            let me = n(101 + l as u64);
            match leaders[l].status() {
                // Idle, deposed, or phase one stalled (messages lost): prepare again.
                LeaderStatus::Idle | LeaderStatus::Deposed | LeaderStatus::Preparing
                    if wake[l] <= step =>
                {
                    for (to, m) in leaders[l].prepare(0) {
                        net.push((me, to, m));
                    }
                    wake[l] = step + rng.range(50, 200);
                }
                LeaderStatus::Leading if rng.range(0, 8) == 0 => {
                    next_command += 1;
                    if let Ok(out) = leaders[l].propose(next_command) {
                        for (to, m) in out {
                            net.push((me, to, m));
                        }
                    }
                }
                _ => {}
            }
        }
        if !net.is_empty() {
            let at = rng.range(0, net.len() as u64) as usize;
            if rng.range(0, 10) == 0 {
                net.swap_remove(at);
            } else {
                if rng.range(0, 20) == 0 {
                    let copy = net[at].clone();
                    net.push(copy);
                }
                deliver(&mut net, at, &mut acceptors, &mut leaders);
            }
        }
        for leader in &leaders {
            for (slot, value) in leader.chosen_slots() {
                match seen.get(slot) {
                    Some(v) if v != value => {
                        return Err(format!(
                            "seed {seed}: slot {slot} chosen as {v:?} and {value:?}"
                        ));
                    }
                    Some(_) => {}
                    None => {
                        seen.insert(*slot, value.clone());
                    }
                }
            }
        }
    }
    let mut commands = BTreeSet::new();
    for value in seen.values() {
        if let SlotValue::Command(c) = value
            && !commands.insert(*c)
        {
            return Err(format!("seed {seed}: command {c} chosen twice"));
        }
    }
    // A final leader, over a reliable network, fills every hole.
    let mut last = MultiLeader::new(n(103), ids.clone(), 8).unwrap();
    let mut leaders = vec![leaders.remove(0), leaders.remove(0), last.clone()];
    let mut out: Net = leaders[2]
        .prepare(1000)
        .into_iter()
        .map(|(to, m)| (n(103), to, m))
        .collect();
    while !out.is_empty() {
        deliver(&mut out, 0, &mut acceptors, &mut leaders);
    }
    last = leaders.remove(2);
    if last.status() != LeaderStatus::Leading {
        return Err(format!("seed {seed}: the final leader did not take over"));
    }
    let max = seen.keys().next_back().copied();
    if let Some(max) = max {
        for slot in 0..=max {
            match (last.chosen(slot), seen.get(&slot)) {
                (None, _) => return Err(format!("seed {seed}: hole at slot {slot}")),
                (Some(v), Some(s)) if v != s => {
                    return Err(format!("seed {seed}: slot {slot} changed"));
                }
                _ => {}
            }
        }
    }
    Ok(seen.len())
}

#[test]
fn competing_leaders_never_choose_two_values_for_a_slot() {
    let seeds: u64 = std::env::var("SYNOD_MULTI_PAXOS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut slots = 0;
    for seed in 0..seeds {
        slots += run(seed, false).unwrap();
    }
    println!("multi-paxos: {seeds} seeds, {slots} slots chosen, 0 conflicts, 0 holes");
    assert!(slots > seeds as usize * 10, "the leaders made progress");
}

#[test]
fn a_leader_ignoring_promised_values_is_caught() {
    let caught = (0..500).find(|&seed| run(seed, true).is_err());
    let seed = caught.expect("caught within 500 seeds");
    println!(
        "broken leader caught at seed {seed}: {}",
        run(seed, true).unwrap_err()
    );
}
