//! Headline benchmark of the leaderless store (`synod node --system leaderless`): three
//! nodes of real processes on loopback with durable logs, against the Consistent Core on
//! the same machine and against the physical limits a write sits on, every baseline
//! measured in the same run.
//!
//! Prints one `ratio <name> <value>` line per figure:
//!
//! - `leaderless.writes_64c_vs_core`: QUORUM `SET`s per second with 64 clients (one
//!   connection and one blocking request in flight each, spread over the three nodes: any
//!   node coordinates), over the Consistent Core's committed `SET`s per second with 64
//!   clients (all on its leader, the only node that takes writes), both clusters of three
//!   nodes up side by side and measured in alternation. Every write is of a key not written
//!   before: a blind write of a key that holds a value would add a sibling to it (version
//!   vectors), which no client of the store does. A node holds at most 10,000 keys
//!   (`Config::keys_max`), so a repetition is a fixed count of writes, 16 by each client
//!   (1,024), not a fixed time; the Core's clients write the same keys.
//! - `leaderless.reads_64c_vs_core`: QUORUM `GET`s per second with 64 clients, of keys
//!   written once before the measurements, over the Core's `GET`s per second (linearizable
//!   reads on its leader) of the same keys, in the same way.
//! - `leaderless.write_1c_p50_vs_floor`, `leaderless.write_1c_p99_vs_floor`: the latency of
//!   a QUORUM `SET` by one client of a key it has just read with `GETCTX` (the read untimed;
//!   the write carries its context, so it replaces the value instead of adding a sibling),
//!   sent to node 1, a replica of every key: it answers once the write is durable on itself
//!   and then on one other replica (it sends the write on once it is durable on itself: the
//!   write's version names it). p50 and p99, over the floor: one loopback round trip (a
//!   blocking 64-byte ping-pong) plus one `pwrite` + `fdatasync` of such a write's log
//!   record into a pre-written file, each floor sample one sync and one round trip, at the
//!   same quantile. The coordinator's path is two syncs and two round
//!   trips one after the other, so 2.0 is the least this design can reach: the ratio says
//!   what a write costs beyond the least a durable write over the network could (the bench
//!   prints the p50 over twice the floor too).
//! - `leaderless.join_replicas_moved_vs_min`: when a fourth node joins a three-node cluster
//!   (replication 3 on 64 partitions, every node a replica of every partition), the
//!   partition replicas that moved (placed on a node that did not hold the partition: the
//!   new node's replicas in the members' tables, as their INFO reports them), over the
//!   least any balanced table could move: the new node's share, `partitions x replication
//!   / 4` rounded down. The members' tables are checked against synod-partitioning's own
//!   account of the change (`PartitionTable::join`'s `Movement`).
//! - `leaderless.join_keys_sent_vs_moved`: the keys the members sent the new node in the
//!   join's streams (INFO's `keys_streamed`, resends included; their bytes printed beside),
//!   over the keys of the partitions it takes, the least a join could send: 1.0 when each
//!   reaches it once (from the replica it replaces), 3.0 if every old replica sent it.
//! - `leaderless.join_keys_streamed_vs_needed`: the keys the new node holds once the join
//!   has settled (it starts empty and no client writes meanwhile, so each was streamed to
//!   it by the join, or brought by anti-entropy), over the keys of the partitions it replicates (the bench knows
//!   every key it wrote). 1.0 when every key it needs has arrived; the time that took is
//!   printed for information.
//!
//! The throughput and latency figures are the medians over the repetitions, the clusters
//! and the baselines measured in alternation so that each sees the same machine; the node
//! processes' CPU time per operation (from `/proc`) is printed beside each throughput, as
//! the machine is CPU-bound at 64 clients. The baselines are measured while one thread per
//! core spins (see the `consistent_core` bench: an idle virtual core's wake-up is not the
//! disk's latency); the idle figures are printed too. The join is measured once, on a
//! cluster of its own, after the others are stopped.
//!
//! The nodes run open (no client password, no peer secret), on loopback only, as the
//! `consistent_core` bench runs its own. Their data directories and the raw baseline file
//! are in a temporary directory under `CARGO_TARGET_TMPDIR`; each node runs under the
//! watchdog of `support/cluster.rs`, so that it is killed however the bench ends.
//!
//! `SYNOD_BENCH_QUICK=1` runs five short repetitions; without it, seven longer ones. The
//! shapes (clients, keys, values, cluster sizes) are the same in both modes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use synod_clocks::VersionVector;
use synod_examples::consistent_core::client::Client;
use synod_examples::leaderless::{Config, Record, Vv};
use synod_examples::resp::Value;
use synod_node::NodeId;
use synod_partitioning::{NodeSpec, PartitionTable};
use synod_quorum::Resolver;
use synod_wal::format::record_bytes;

#[path = "support/baseline.rs"]
mod baseline;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/load.rs"]
mod load;
use baseline::{awake, prewritten, raw_fdatasync_times, tcp_rtt_times};
use cluster::{Cluster, Plan, file_system, info_field, quantile_us, report};
use load::Run;

/// Clients of the throughput figures.
const CLIENTS: usize = 64;
/// Bytes of each value written.
const VALUE_BYTES: usize = 32;
/// Keys each client writes before the measurements (and reads in them): with one more
/// client's worth for the one-client latency, the key set of the join.
const KEYS_PER_CLIENT: usize = 16;
/// Keys not written before that each client writes in one repetition of the throughput
/// figure (and in the warm-up): the store's cap on keys, not a time, bounds these.
const WRITES_PER_CLIENT: usize = 16;
/// Nodes of the clusters measured; the join adds one.
const NODES: usize = 3;
/// How long the cluster may take to serve, and the join to settle.
const DEADLINE: Duration = Duration::from_secs(60);

/// A key written before the measurements: client `c`'s `i`-th.
fn key(c: usize, i: usize) -> String {
    format!("key:{c:02}:{:03}", i % KEYS_PER_CLIENT)
}

/// A key written once in the measurements: repetition `rep`'s, client `c`'s `i`-th.
fn fresh_key(rep: usize, c: usize, i: usize) -> String {
    format!("w:{rep}:{c:02}:{i}")
}

/// Bytes of the log record of a QUORUM write as a replica logs it: a key of the one-client
/// figure with a 32-byte value and one version, and the WAL record that holds it.
fn write_record_bytes() -> (usize, usize) {
    let mut state = <Vv as Resolver>::State::default();
    let value = Some(vec![b'v'; VALUE_BYTES]);
    Vv::default()
        .coordinate(
            NodeId::new(1),
            Some(&mut state),
            (VersionVector::default(), value),
        )
        .expect("a first write of a key");
    let record = Record::Store {
        key: key(CLIENTS, 0).into_bytes(),
        state: Some(state),
    };
    // The log's format byte, then the record.
    let payload = 1 + postcard::to_stdvec(&record)
        .expect("postcard encodes")
        .len();
    (payload, record_bytes(payload))
}

/// Prints a baseline's p50 and p99 with every core kept awake and its p50 with none, in
/// microseconds; returns the first two medians.
fn report_baseline(label: &str, [p50, p99, idle]: [&[f64]; 3]) -> (f64, f64) {
    let p50 = report(&format!("{label} p50, every core kept awake"), "us", p50);
    let p99 = report("  the same, p99", "us", p99);
    report(
        "(for information: the same with no core kept awake, p50)",
        "us",
        idle,
    );
    (p50, p99)
}

fn set(client: &mut Client, key: &str, value: &[u8]) -> bool {
    matches!(
        client.call(&[b"SET", key.as_bytes(), value]),
        Ok(Value::Simple(ref ok)) if ok == "OK"
    )
}

/// `clients` closed-loop clients of `cluster`, client `c` on its node at
/// `addrs[c % addrs.len()]`, each calling `op(client, c, i)` for its `i`-th request until
/// `duration` has passed or `op` answers `None` (`support/load.rs`): the run, and the CPU
/// seconds the cluster's nodes spent in it.
fn closed_loop(
    cluster: &Cluster,
    addrs: &[String],
    clients: usize,
    duration: Duration,
    op: impl Fn(&mut Client, usize, usize) -> Option<bool> + Sync,
) -> (Run, f64) {
    let (run, before, after) = load::closed_loop_until(
        clients,
        duration,
        |c| cluster::connected(&addrs[c % addrs.len()]),
        |client, c, i| op(client, c, i as usize),
        || cluster.cpu_seconds(),
    );
    (run, after - before)
}

/// The context token of `key`'s `GETCTX` read, if it answered one.
fn read_context(client: &mut Client, key: &str) -> Option<Vec<u8>> {
    match client.call(&[b"GETCTX", key.as_bytes()]) {
        Ok(Value::Array(items)) => match items.into_iter().next() {
            Some(Value::Bulk(token)) => Some(token),
            _ => None,
        },
        _ => None,
    }
}

/// A GET answered with a value (or, from the leaderless store, siblings).
fn get(client: &mut Client, key: &str) -> bool {
    matches!(
        client.call(&[b"GET", key.as_bytes()]),
        Ok(Value::Bulk(_) | Value::Array(_))
    )
}

/// Writes every key of the key set once ([`key`], clients `0..=CLIENTS`) through `addrs`
/// of `cluster`; panics if one fails.
fn fill(cluster: &Cluster, addrs: &[String]) {
    let value = vec![b'v'; VALUE_BYTES];
    let (load, _) = closed_loop(cluster, addrs, CLIENTS + 1, DEADLINE, |client, c, i| {
        (i < KEYS_PER_CLIENT).then(|| set(client, &key(c, i), &value))
    });
    let want = ((CLIENTS + 1) * KEYS_PER_CLIENT) as u64;
    assert!(
        load.failures == 0 && load.done == want,
        "filling the key set: {} of {want} written, {} failed",
        load.done,
        load.failures
    );
}

/// A throughput figure's repetitions: operations per second, and node CPU microseconds per
/// operation.
#[derive(Default)]
struct Rates {
    rate: Vec<f64>,
    cpu_us: Vec<f64>,
}

impl Rates {
    /// Records a run's rate and the nodes' CPU time per operation ([`closed_loop`]'s
    /// answer); adds its failures to `failures`.
    fn record(&mut self, failures: &mut u64, (run, cpu_seconds): (Run, f64)) {
        if run.done > 0 {
            self.cpu_us.push(cpu_seconds * 1e6 / run.done as f64);
        }
        self.rate.push(run.rate);
        *failures += run.failures;
    }

    /// Prints the figure; returns its median rate.
    fn report(&self, label: &str) -> f64 {
        let median = report(label, "ops/s", &self.rate);
        if !self.cpu_us.is_empty() {
            report("  node CPU per operation", "us", &self.cpu_us);
        }
        median
    }
}

/// Prints a throughput figure of the store and the Core's beside it, and their ratio
/// `leaderless.{name}_64c_vs_core`.
fn compare(name: &str, ops: &str, [store, core]: [&Rates; 2]) {
    let core = core.report(&format!("core {ops}, {CLIENTS} clients on the leader"));
    let store = store.report(&format!(
        "leaderless QUORUM {ops}, {CLIENTS} clients over {NODES} nodes"
    ));
    println!(
        "ratio leaderless.{name}_64c_vs_core {:.3} ({store:.0} QUORUM {ops}/s; core {core:.0} {ops}/s)",
        store / core
    );
}

/// Polls until every one of the first `members` nodes of a leaderless cluster serves and
/// sees `members` members alive.
fn wait_serving(cluster: &mut Cluster, members: usize) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        cluster.check_running();
        let ready = (1..=members).all(|id| {
            cluster.info(id).is_some_and(|info| {
                let alive = info
                    .lines()
                    .filter(|l| l.starts_with("member:") && l.contains("state=alive"))
                    .count();
                info_field(&info, "serving") == Some("true") && alive == members
            })
        });
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the leaderless cluster did not serve in {DEADLINE:?}; node logs:\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A number INFO shows as `name:N`.
fn info_number(info: &str, name: &str) -> Option<usize> {
    info_field(info, name)?.trim().parse().ok()
}

/// From an INFO text, member `id`'s `replicas=` count.
fn replicas_of(info: &str, id: usize) -> Option<usize> {
    let prefix = format!("member:n{id} ");
    info.lines()
        .find(|l| l.starts_with(&prefix))?
        .split("replicas=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The table a node of the store builds for members `1..=nodes` (the first `replication`
/// placed at once, each later one joined), as the store's `table_of` does.
fn table_of(partitions: u32, replication: usize, nodes: usize) -> PartitionTable {
    let ids = (1..=nodes as u64).map(NodeId::new);
    let first = ids
        .clone()
        .take(replication)
        .map(|id| (id, NodeSpec::default()));
    let mut table = PartitionTable::new(partitions, replication, first).expect("a table");
    for id in ids.skip(replication) {
        table = table.join(id, NodeSpec::default()).expect("a join").0;
    }
    table
}

/// The join figures, on a three-node cluster of its own: fills the key set, starts a
/// fourth node, waits until it holds every key of its partitions, and prints the ratios.
fn join(root: &std::path::Path) {
    let mut cluster = Cluster::start_system(root, "leaderless", NODES + 1, NODES, &[]);
    wait_serving(&mut cluster, NODES);
    let addrs: Vec<String> = (1..=NODES).map(|id| cluster.client_addr(id)).collect();
    fill(&cluster, &addrs);
    let before = cluster.info(1).expect("node 1 answers INFO");
    let partitions = info_number(&before, "partitions").expect("INFO partitions") as u32;
    let replication = info_number(&before, "replication").expect("INFO replication");
    let replicas_before: Vec<usize> = (1..=NODES)
        .map(|id| {
            let info = cluster.info(id).expect("a member answers INFO");
            replicas_of(&info, id).expect("INFO shows the member")
        })
        .collect();

    // What synod-partitioning says the change moves, and the keys the new node needs.
    let old = table_of(partitions, replication, NODES);
    let (new, movement) = old
        .join(NodeId::new(NODES as u64 + 1), NodeSpec::default())
        .expect("a join");
    let joiner = NodeId::new(NODES as u64 + 1);
    let keys: BTreeSet<String> = (0..=CLIENTS)
        .flat_map(|c| (0..KEYS_PER_CLIENT).map(move |i| key(c, i)))
        .collect();
    let needed = keys
        .iter()
        .filter(|k| {
            new.replicas(new.partition_of(k.as_bytes()))
                .contains(&joiner)
        })
        .count();

    let started = Instant::now();
    cluster.start_node();
    let deadline = started + DEADLINE;
    let (mut streamed, mut settled_in) = (0, None);
    while Instant::now() < deadline {
        cluster.check_running();
        let info = cluster.info(NODES + 1).unwrap_or_default();
        streamed = info_number(&info, "keys").unwrap_or(0);
        // Every member's table holds the new node.
        let tables = (1..=NODES).all(|id| {
            cluster
                .info(id)
                .is_some_and(|i| replicas_of(&i, NODES + 1).is_some_and(|r| r > 0))
        });
        if tables && streamed >= needed {
            settled_in = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let infos: Vec<String> = (1..=NODES + 1)
        .map(|id| cluster.info(id).unwrap_or_default())
        .collect();
    // The new node's replicas in each member's table (they agree once it settled).
    let moved: Vec<Option<usize>> = infos.iter().map(|i| replicas_of(i, NODES + 1)).collect();
    let removed: usize = (1..=NODES)
        .map(|id| {
            replicas_before[id - 1].saturating_sub(replicas_of(&infos[id - 1], id).unwrap_or(0))
        })
        .sum();
    let moved_1 = moved[0].unwrap_or(0);
    let least = partitions as usize * replication / (NODES + 1);
    println!(
        "join: {partitions} partitions x {replication} replicas; a fourth node joins 3 holding {} keys",
        keys.len()
    );
    println!(
        "join: the new node's replicas in each node's table {moved:?}; replicas the members gave up {removed}; \
         synod-partitioning's account of the change: {} added, {} removed, {} owners changed",
        movement.replicas_added, movement.replicas_removed, movement.owners_changed
    );
    if moved.iter().any(|m| *m != Some(movement.replicas_added))
        || removed != movement.replicas_added
    {
        println!("warning: the members' tables do not show the move synod-partitioning computes");
    }
    match settled_in {
        Some(t) => println!(
            "join: settled (every table holds the new node; it holds its {needed} keys) in {:.0} ms, for information",
            t.as_secs_f64() * 1e3
        ),
        None => println!(
            "warning: the join did not settle in {DEADLINE:?}: the new node holds {streamed} of its {needed} keys; \
             node logs:\n{}",
            cluster.logs()
        ),
    }
    println!(
        "ratio leaderless.join_replicas_moved_vs_min {:.3} ({moved_1} partition replicas moved; least {least} = {partitions} x {replication} / 4)",
        moved_1 as f64 / least as f64
    );
    println!(
        "ratio leaderless.join_keys_streamed_vs_needed {:.3} ({streamed} keys streamed to the new node; {needed} of the {} keys are in its partitions)",
        streamed as f64 / needed as f64,
        keys.len()
    );
    // What the members sent the new node: each key it takes once, from the replica it
    // replaces (every old replica would send it three times).
    let sent: Vec<usize> = infos[..NODES]
        .iter()
        .map(|i| info_number(i, "keys_streamed").unwrap_or(0))
        .collect();
    let bytes: Vec<usize> = infos[..NODES]
        .iter()
        .map(|i| info_number(i, "bytes_streamed").unwrap_or(0))
        .collect();
    let (sent_all, bytes_all) = (sent.iter().sum::<usize>(), bytes.iter().sum::<usize>());
    println!(
        "ratio leaderless.join_keys_sent_vs_moved {:.3} ({sent_all} keys, {bytes_all} bytes, streamed by the members {sent:?} \
         {bytes:?}; {needed} keys moved, the least)",
        sent_all as f64 / needed as f64
    );
    // What the members still hold that is no longer theirs: not collected after a join.
    let held: Vec<usize> = infos[..NODES]
        .iter()
        .map(|i| info_number(i, "keys").unwrap_or(0))
        .collect();
    let theirs: Vec<usize> = (1..=NODES as u64)
        .map(|id| {
            let id = NodeId::new(id);
            keys.iter()
                .filter(|k| new.replicas(new.partition_of(k.as_bytes())).contains(&id))
                .count()
        })
        .collect();
    println!(
        "join: keys the three members hold {held:?}, of which their partitions' {theirs:?}, for information"
    );
}

fn main() {
    let plan = Plan::new();
    // Every key the store is given must fit under a node's cap (each holds every key).
    let keys_max = Config::new(NodeId::new(1), [NodeId::new(1)]).keys_max;
    let keys =
        (CLIENTS + 1) * KEYS_PER_CLIENT + (plan.reps.max(7) + 1) * CLIENTS * WRITES_PER_CLIENT;
    assert!(
        keys <= keys_max,
        "the bench writes {keys} keys; a node holds at most {keys_max}"
    );
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temporary directory");
    let (payload, record) = write_record_bytes();
    println!(
        "synod leaderless benchmark: {NODES} nodes of the leaderless store and {NODES} of the Consistent Core, \
         of {}; data in {} ({}); {} reps",
        env!("CARGO_BIN_EXE_synod"),
        root.path().display(),
        file_system(root.path()),
        plan.reps
    );
    println!(
        "a QUORUM write of a {VALUE_BYTES} B value is a {payload} B log record, a {record} B WAL record"
    );
    let raw = prewritten(root.path());
    let mut core = Cluster::start(root.path(), NODES);
    let leader = core.wait_leader();
    let mut store = Cluster::start_system(root.path(), "leaderless", NODES, NODES, &[]);
    wait_serving(&mut store, NODES);
    let nodes: Vec<String> = (1..=NODES).map(|id| store.client_addr(id)).collect();
    let core_addrs = [leader.clone()];
    println!(
        "core leader: {leader}; leaderless nodes: {}",
        nodes.join(", ")
    );

    // The key set the reads read, on both; it also warms connections and logs.
    fill(&store, &nodes);
    fill(&core, &core_addrs);
    let value = vec![b'v'; VALUE_BYTES];
    let mut one = Client::new(&nodes[..1]).with_timeout(Duration::from_secs(20));
    let writes = |rep: usize| {
        let value = &value;
        move |client: &mut Client, c: usize, i: usize| {
            (i < WRITES_PER_CLIENT).then(|| set(client, &fresh_key(rep, c, i), value))
        }
    };
    let reads = |client: &mut Client, c: usize, i: usize| Some(get(client, &key(c, i)));
    // Warm up the measured paths (repetition numbers from `reps` on are the warm-up's).
    let warm = plan.rep / 2;
    closed_loop(&store, &nodes, CLIENTS, DEADLINE, writes(plan.reps));
    closed_loop(&core, &core_addrs, CLIENTS, DEADLINE, writes(plan.reps));
    closed_loop(&store, &nodes, CLIENTS, warm, reads);
    closed_loop(&core, &core_addrs, CLIENTS, warm, reads);

    let mut failures = 0u64;
    let (mut fsync_p50, mut fsync_p99, mut idle) = (Vec::new(), Vec::new(), Vec::new());
    let (mut rtt_p50, mut rtt_p99, mut rtt_idle) = (Vec::new(), Vec::new(), Vec::new());
    let (mut lat_p50, mut lat_p99) = (Vec::new(), Vec::new());
    let (mut floor_p50, mut floor_p99) = (Vec::new(), Vec::new());
    let (mut store_w, mut core_w, mut store_r, mut core_r) = (
        Rates::default(),
        Rates::default(),
        Rates::default(),
        Rates::default(),
    );
    for rep in 0..plan.reps {
        let mut f = awake(|| raw_fdatasync_times(&raw, record, plan.samples));
        let (f50, f99) = (quantile_us(&mut f, 0.5), quantile_us(&mut f, 0.99));
        idle.push(quantile_us(
            &mut raw_fdatasync_times(&raw, record, plan.samples / 4),
            0.5,
        ));
        let mut r = awake(|| tcp_rtt_times(plan.samples));
        let (r50, r99) = (quantile_us(&mut r, 0.5), quantile_us(&mut r, 0.99));
        rtt_idle.push(quantile_us(&mut tcp_rtt_times(plan.samples / 4), 0.5));
        fsync_p50.push(f50);
        fsync_p99.push(f99);
        rtt_p50.push(r50);
        rtt_p99.push(r99);
        // The floor's own distribution: a sync and a round trip, paired in the order taken.
        let mut floor: Vec<Duration> = f.iter().zip(&r).map(|(f, r)| *f + *r).collect();
        floor_p50.push(quantile_us(&mut floor, 0.5));
        floor_p99.push(quantile_us(&mut floor, 0.99));

        let mut times = Vec::with_capacity(plan.samples);
        for i in 0..plan.samples {
            let key = key(CLIENTS, i);
            let Some(context) = read_context(&mut one, &key) else {
                failures += 1;
                continue;
            };
            let start = Instant::now();
            let ok = matches!(
                one.call(&[b"SET", key.as_bytes(), &value, b"CONTEXT", &context]),
                Ok(Value::Simple(ref ok)) if ok == "OK"
            );
            times.push(start.elapsed());
            failures += u64::from(!ok);
        }
        lat_p50.push(quantile_us(&mut times, 0.5));
        lat_p99.push(quantile_us(&mut times, 0.99));

        let run = closed_loop(&core, &core_addrs, CLIENTS, DEADLINE, writes(rep));
        core_w.record(&mut failures, run);
        let run = closed_loop(&store, &nodes, CLIENTS, DEADLINE, writes(rep));
        store_w.record(&mut failures, run);
        let run = closed_loop(&core, &core_addrs, CLIENTS, plan.rep, reads);
        core_r.record(&mut failures, run);
        let run = closed_loop(&store, &nodes, CLIENTS, plan.rep, reads);
        store_r.record(&mut failures, run);
        core.check_running();
        store.check_running();
    }

    let (f50, f99) = report_baseline(
        &format!("baseline pwrite+fdatasync {record} B"),
        [&fsync_p50, &fsync_p99, &idle],
    );
    let (r50, r99) = report_baseline(
        "baseline loopback TCP ping-pong 64 B RTT",
        [&rtt_p50, &rtt_p99, &rtt_idle],
    );
    let base50 = report(
        "floor = fdatasync + RTT (each sample a pair), p50",
        "us",
        &floor_p50,
    );
    let base99 = report("  the same, p99", "us", &floor_p99);
    let got50 = report(
        "leaderless QUORUM SET latency, 1 client, p50",
        "us",
        &lat_p50,
    );
    let got99 = report(
        "leaderless QUORUM SET latency, 1 client, p99",
        "us",
        &lat_p99,
    );
    println!(
        "ratio leaderless.write_1c_p50_vs_floor {:.3} (SET p50 {got50:.1} us; floor {base50:.1} us: fdatasync {f50:.1} and ping-pong {r50:.1} alone)",
        got50 / base50
    );
    println!(
        "ratio leaderless.write_1c_p99_vs_floor {:.3} (SET p99 {got99:.1} us; floor {base99:.1} us: fdatasync {f99:.1} and ping-pong {r99:.1} alone)",
        got99 / base99
    );

    println!(
        "(for information: the store's own serial path is longer, 2 syncs and 2 round trips, as the \
         coordinator's write is durable on it before it goes to a replica (its version's dot must be): \
         SET p50 over 2 x the floor's p50 {:.3})",
        got50 / (2.0 * base50)
    );
    compare("writes", "SETs", [&store_w, &core_w]);
    compare("reads", "GETs", [&store_r, &core_r]);
    if failures > 0 {
        println!("warning: {failures} operations failed or were refused during the measurements");
    }
    drop(core);
    drop(store);

    join(root.path());
}
