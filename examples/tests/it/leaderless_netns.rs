//! A network partition of a real four-node leaderless cluster: node 3 runs in its own
//! network namespace (`ip netns`), joined to the others by a veth pair (the Consistent
//! Core's test's namespace, `core_netns::Netns`), and is cut off by taking its end of the
//! pair down while the recorded workload of `leaderless_cluster` runs through the other
//! three at every level. The others hold node 3 dead and hint its writes to a fallback (four
//! nodes, so that each of its keys has one); the link comes back, node 3 is alive again and
//! every hint is handed off to it. The clients' history is checked with the simulation's
//! checks: ABD and CAS linearizable per key, no acknowledged QUORUM write lost from the
//! state read at ALL through node 3 and through node 1, no stale read at QUORUM.
//!
//! Namespaces need root and iproute2; without them the test prints why it is skipped and
//! passes, unless `SYNOD_REQUIRE_NETNS=1` (set by CI). Every wait polls a condition against
//! a deadline.

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::core_cluster::{NodeSpec, free_port_on};
use super::core_netns::netns_or_skip;
use super::leaderless_cluster::{Kind, Recorded, info, info_number, poll};
use super::register_cluster::Registers;

/// The node in the namespace, cut off.
const ISOLATED: usize = 3;
/// The nodes in the root namespace, which the clients use.
const OTHERS: [usize; 3] = [1, 2, 4];

#[test]
fn a_node_cut_off_in_a_network_namespace_gets_its_hints_after_the_heal_and_no_level_breaks_its_promise()
 {
    // Dropped in reverse order: the cluster (its processes killed) before the namespace.
    let Some(net) = netns_or_skip("leaderless_netns") else {
        return;
    };
    let attempt = Cell::new(0u16);
    let nodes = || {
        let root = |_| {
            let on = |port: u16| format!("{}:{port}", net.root_ip);
            NodeSpec {
                listen: on(free_port_on(&net.root_ip)),
                client: on(free_port_on(&net.root_ip)),
                launcher: Vec::new(),
            }
        };
        let mut nodes: Vec<NodeSpec> = (0..4).map(root).collect();
        // The namespace is new and its own: fixed ports are free there (a new pair per
        // attempt, in case an old connection lingers).
        let n = attempt.replace(attempt.get() + 1);
        nodes[ISOLATED - 1] = NodeSpec {
            listen: format!("{}:{}", net.ns_ip, 7001 + n),
            client: format!("{}:{}", net.ns_ip, 6001 + n),
            launcher: net.launcher(),
        };
        nodes
    };
    let cluster = Registers::up_on("leaderless", 4, nodes);
    let addrs: Vec<String> = (1..=4).map(|id| cluster.client_addr(id)).collect();
    let recorded = Recorded::new(4);
    let route = |client: u32, _: Kind| OTHERS[client as usize % OTHERS.len()];
    let hints = || -> usize {
        OTHERS
            .iter()
            .filter_map(|&id| info_number(&info(&cluster, id), "hints"))
            .sum()
    };
    let state_of_3 = |id: usize| {
        info(&cluster, id)
            .lines()
            .find(|l| l.starts_with("member:n3 "))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
            .unwrap_or_default()
    };
    let mut most_hints = 0;
    let (mut held_dead_in, mut back_in) = (Duration::ZERO, Duration::ZERO);
    recorded.run(&addrs, &route, || {
        assert!(
            poll(|| recorded.ok_total() >= 24),
            "no operations\n{}",
            cluster.logs()
        );
        net.cut();
        let cut_at = Instant::now();
        // The others hold node 3 dead, and its writes go on at QUORUM, hinted.
        let dead = poll(|| OTHERS.iter().all(|&id| state_of_3(id) == "state=dead"));
        assert!(
            dead,
            "node 3 as the others see it: {:?}\n{}",
            OTHERS.map(state_of_3),
            cluster.logs()
        );
        held_dead_in = cut_at.elapsed();
        let before = recorded.ok_total();
        let hinted = poll(|| {
            most_hints = most_hints.max(hints());
            recorded.ok_total() >= before + 48 && most_hints > 0
        });
        assert!(
            hinted,
            "while node 3 is cut off: {} operations, {most_hints} hints\n{}",
            recorded.ok_total() - before,
            cluster.logs()
        );
        // Healed: node 3 is alive again and every hint is handed off to it.
        net.heal();
        let healed_at = Instant::now();
        let back =
            poll(|| OTHERS.iter().all(|&id| state_of_3(id) == "state=alive") && hints() == 0);
        assert!(
            back,
            "after the heal: node 3 {:?}, {} hints\n{}",
            OTHERS.map(state_of_3),
            hints(),
            cluster.logs()
        );
        back_in = healed_at.elapsed();
    });
    let checking = Instant::now();
    let found = recorded.assert_levels_kept(&cluster, &[ISOLATED, 1]);
    println!(
        "leaderless_netns: node 3 held dead {:.1} s after the cut, {most_hints} hints held at \
         most; alive again with every hint handed off {:.1} s after the heal; {} QUORUM \
         writes acknowledged; checked in {:.1} s",
        held_dead_in.as_secs_f64(),
        back_in.as_secs_f64(),
        found.acknowledged,
        checking.elapsed().as_secs_f64()
    );
}
