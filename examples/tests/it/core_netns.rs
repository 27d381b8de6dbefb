//! A network partition of a real three-node Consistent Core cluster: the leader runs in its
//! own network namespace (`ip netns`), joined to the other two nodes by a veth pair, and is
//! cut off by taking its end of the pair down while clients write and read through the
//! other two nodes. The majority elects a new leader and goes on committing; clients of
//! the isolated old leader get no acknowledgement; the link comes back and the old leader
//! rejoins as a follower and catches up. The whole client history is checked for
//! linearizability with synod-sim's checker, and every acknowledged write is read back
//! from every node, the rejoined one included.
//!
//! The clients: four threads of the linearizability workload of `core_cluster` (reads,
//! writes and compare-and-sets on three keys, through nodes 1 and 2); one writer of unique
//! keys, whose every acknowledged key is read back at the end; and, run inside the
//! namespace right after the cut, `synod kv put` and `synod kv get` against the isolated
//! node, recorded in the same history (the put first opens a session, itself a replicated
//! write that the isolated node cannot commit; the get is a linearizable read, which needs
//! a quorum too). The partition lasts as long as those two take to give up (about 10 s,
//! the client's timeout); the whole test about 15 s.
//!
//! Namespaces need root and iproute2. Without them the test prints why it is skipped and
//! passes, so that a fresh checkout's `cargo test` works; CI sets `SYNOD_REQUIRE_NETNS=1`,
//! which turns the reason into a failure. The namespace, the veth pair and the /30 subnet
//! between them are named after the test process's id, so two runs never collide; they
//! are deleted when the test ends, panics included.
//!
//! How the namespaced node comes to lead, with no leader-transfer command to ask for it:
//! nodes 3 (namespaced) and 1 start alone. If node 1 wins, node 3 is given node 1's log,
//! node 1 is killed and node 2 starts with an empty log: of nodes 2 and 3, only node 3 has
//! a log up to date enough to be voted for, so it wins; node 1 then restarts on its data
//! directory as a follower. Every wait polls a condition against a deadline.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use synod_examples::consistent_core::client::Client;
use synod_examples::resp::Value;
use synod_sim::{ClientId, History, KvInput, KvModel, KvOutput, Linearizability, Outcome, SimTime};

use super::core_cluster::{
    Cluster, DEADLINE, NodeSpec, assert_linearizable, client_thread, free_port_on, test_credentials,
};

/// The node that runs in the namespace and is cut off.
const ISOLATED: usize = 3;
/// The nodes in the root namespace, which the clients use.
const MAJORITY: [usize; 2] = [1, 2];
/// Client threads of the linearizability workload.
const CLIENTS: u32 = 4;
/// Operations of each client thread.
const OPS_PER_CLIENT: usize = 100;
/// Operations completed before the cut, so that it lands in a running workload.
const OPS_BEFORE_CUT: usize = 40;
/// Acknowledged unique-key writes, sent after the cut, that show the majority's progress.
const WRITES_AFTER_CUT_MIN: usize = 20;

type KvHistory = History<KvInput, KvOutput>;

/// Runs `ip ARGS`; an error names the command and carries its standard error.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("`ip {}` could not be run: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace holding one end of a veth pair, the other end in the root
/// namespace, with a /30 subnet between them. Dropping it deletes both.
pub(crate) struct Netns {
    /// The namespace's name.
    pub(crate) name: String,
    veth_root: String,
    veth_ns: String,
    /// The root end's address.
    pub(crate) root_ip: String,
    /// The namespace's end's address.
    pub(crate) ns_ip: String,
}

impl Netns {
    /// Creates the namespace and the link, named after this process, or says why it
    /// cannot (not root, no `ip`, no namespaces or veth in this kernel or container).
    fn create() -> Result<Netns, String> {
        let uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
            })
            .ok_or("cannot read the effective user id from /proc/self/status")?;
        if uid != "0" {
            return Err(format!(
                "network namespaces need root (effective user id {uid})"
            ));
        }
        let pid = std::process::id();
        // 10.64.0.0/10 holds 2^20 /30 subnets: one for each process id up to 2^20, and
        // process ids that far apart do not run at once.
        let base = (10u32 << 24 | 64 << 16) + (pid % (1 << 20)) * 4;
        let dotted = |a: u32| std::net::Ipv4Addr::from(a).to_string();
        let name = format!("synod-{pid}");
        ip(&["netns", "add", &name])?;
        // From here on the guard cleans up whatever was made, if a later step fails.
        let net = Netns {
            veth_root: format!("synod{pid}r"),
            veth_ns: format!("synod{pid}n"),
            root_ip: dotted(base + 1),
            ns_ip: dotted(base + 2),
            name,
        };
        let (ns, vr, vn) = (&net.name, &net.veth_root, &net.veth_ns);
        ip(&[
            "link", "add", vr, "type", "veth", "peer", "name", vn, "netns", ns,
        ])?;
        ip(&["addr", "add", &format!("{}/30", net.root_ip), "dev", vr])?;
        ip(&["link", "set", vr, "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/30", net.ns_ip),
            "dev",
            vn,
        ])?;
        ip(&["-n", ns, "link", "set", vn, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(net)
    }

    /// Takes the namespace's end of the link down: nothing passes either way, while each
    /// side keeps its own address (the namespaced node still answers clients inside).
    pub(crate) fn cut(&self) {
        ip(&["-n", &self.name, "link", "set", &self.veth_ns, "down"]).expect("cut");
    }

    /// Brings the namespace's end of the link back up.
    pub(crate) fn heal(&self) {
        ip(&["-n", &self.name, "link", "set", &self.veth_ns, "up"]).expect("heal");
    }

    /// `ip netns exec NAME`: runs the program after it inside the namespace.
    pub(crate) fn launcher(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.name]
            .map(String::from)
            .to_vec()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting either end of a veth pair deletes both; the namespace goes once the
        // processes in it have exited (the cluster, dropped first, killed them).
        for args in [
            vec!["link", "del", &self.veth_root],
            vec!["netns", "del", &self.name],
        ] {
            if let Err(e) = ip(&args) {
                let _ = writeln!(std::io::stderr(), "core_netns cleanup: {e}");
            }
        }
    }
}

/// Runs `synod kv --addr ADDR ARGS` inside the namespace `ns`, killed at [`DEADLINE`].
fn kv_in_namespace(ns: &str, addr: &str, args: &[&str]) -> Output {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_synod")])
        .args(["kv", "--addr", addr])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ip netns exec runs");
    let deadline = Instant::now() + DEADLINE;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// The namespace, or `None` after printing why the test is skipped; a failure instead
/// when `SYNOD_REQUIRE_NETNS=1`.
pub(crate) fn netns_or_skip(test: &str) -> Option<Netns> {
    match Netns::create() {
        Ok(net) => Some(net),
        Err(why) => {
            let required = std::env::var("SYNOD_REQUIRE_NETNS").is_ok_and(|v| v == "1");
            assert!(!required, "{test}: {why}, and SYNOD_REQUIRE_NETNS=1");
            // Straight to standard error, past the test harness's capture, so that it is seen.
            let _ = writeln!(
                std::io::stderr(),
                "NOTICE: {test} skipped: {why}; run the tests as root with iproute2 to run \
                 it, or set SYNOD_REQUIRE_NETNS=1 to make this a failure"
            );
            None
        }
    }
}

/// Polls `condition` every 50 ms until it holds; fails with `what`, what each node says
/// of itself and the nodes' logs after [`DEADLINE`].
fn wait_for(cluster: &Cluster, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        if Instant::now() >= deadline {
            let states: Vec<String> = [1, 2, ISOLATED]
                .into_iter()
                .map(|id| {
                    let fields = ["role", "leader", "term", "commit_index", "applied_index"];
                    let said: Vec<String> = fields
                        .iter()
                        .map(|f| format!("{f} {}", cluster.field(id, f).unwrap_or("-".into())))
                        .collect();
                    format!(
                        "node {id} ({}): {}",
                        process_state(cluster, id),
                        said.join(", ")
                    )
                })
                .collect();
            panic!(
                "waited {DEADLINE:?} for {what}; INFO ('-': no answer):\n{}\n{}",
                states.join("\n"),
                cluster.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether node `id`'s process still runs: a node that does not answer may be stuck, or
/// gone (a zombie, not reaped yet, when it crashed or something else killed it).
fn process_state(cluster: &Cluster, id: usize) -> String {
    let Some(pid) = cluster.pid(id) else {
        return "not started".into();
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state is the field after the parenthesised program name.
    match stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
    {
        Some("Z") => format!("pid {pid} exited"),
        Some(state) => format!("pid {pid} state {state}"),
        None => format!("pid {pid} gone"),
    }
}

fn number(cluster: &Cluster, id: usize, field: &str) -> Option<u64> {
    cluster.field(id, field).and_then(|v| v.parse().ok())
}

/// Waits until each of `ids` answers INFO with its own id and knows a leader. `false`:
/// a node lost its port to another program between picking and binding it.
fn nodes_up(cluster: &Cluster, ids: &[usize]) -> bool {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let up = ids.iter().all(|&id| {
            cluster.field(id, "node_id") == Some(id.to_string())
                && cluster.field(id, "leader").is_some_and(|l| l != "none")
        });
        if up {
            return true;
        }
        let logs = cluster.logs();
        if logs.contains("already in use") {
            println!("a port was taken before its node bound it; starting afresh:\n{logs}");
            return false;
        }
        assert!(
            Instant::now() < deadline,
            "nodes {ids:?} did not come up in {DEADLINE:?}\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A three-node cluster, node [`ISOLATED`] in the namespace and the others on the root
/// end's address, led by node [`ISOLATED`], every node caught up. See the module
/// documentation for how the leader is chosen. Returns whether node 1 had won first.
fn cluster_led_from_the_namespace(net: &Netns) -> (Cluster, bool) {
    for attempt in 0..3u16 {
        let root = |port: u16| format!("{}:{port}", net.root_ip);
        let mut specs: Vec<NodeSpec> = MAJORITY
            .iter()
            .map(|_| NodeSpec {
                listen: root(free_port_on(&net.root_ip)),
                client: root(free_port_on(&net.root_ip)),
                launcher: Vec::new(),
            })
            .collect();
        // The namespace is new and its own: fixed ports are free there (a new pair per
        // attempt, in case an old connection lingers).
        specs.push(NodeSpec {
            listen: format!("{}:{}", net.ns_ip, 7001 + attempt),
            client: format!("{}:{}", net.ns_ip, 6001 + attempt),
            launcher: net.launcher(),
        });
        // Secured (password, users, peer secret), on the veth pair's addresses.
        let mut cluster = Cluster::with_nodes(specs).secured();
        cluster.start(ISOLATED);
        cluster.start(1);
        if !nodes_up(&cluster, &[1, ISOLATED]) {
            continue;
        }
        let first = cluster.wait_leader(&[1, ISOLATED]);
        if first == 1 {
            // Node 3 gets everything node 1 committed, then node 1 goes and node 2 comes
            // with an empty log: node 2 votes for node 3, and node 3 never for node 2.
            let mut client = Client::new(&[cluster.addr(1)])
                .with_credentials(test_credentials())
                .with_timeout(DEADLINE);
            let reply = client.call(&[b"SET", b"netns-setup", b"1"]);
            assert!(
                matches!(&reply, Ok(Value::Simple(ok)) if ok == "OK"),
                "SET through node 1: {reply:?}\n{}",
                cluster.logs()
            );
            let commit = number(&cluster, 1, "commit_index").expect("node 1's commit index");
            wait_for(&cluster, "node 3 to apply node 1's log", || {
                number(&cluster, ISOLATED, "applied_index").is_some_and(|a| a >= commit)
            });
            cluster.kill(1);
            cluster.start(2);
            if !nodes_up(&cluster, &[2, ISOLATED]) {
                continue;
            }
            assert_eq!(
                cluster.wait_leader(&[2, ISOLATED]),
                ISOLATED,
                "node 2 has an empty log, so only node 3 can win\n{}",
                cluster.logs()
            );
            cluster.start(1);
        } else {
            cluster.start(2);
        }
        if !nodes_up(&cluster, &[1, 2, ISOLATED]) {
            continue;
        }
        wait_for(&cluster, "every node to follow node 3 and catch up", || {
            let Some(commit) = number(&cluster, ISOLATED, "commit_index") else {
                return false;
            };
            cluster.field(ISOLATED, "role").as_deref() == Some("leader")
                && MAJORITY.iter().all(|&id| {
                    cluster.field(id, "leader") == Some(ISOLATED.to_string())
                        && number(&cluster, id, "applied_index").is_some_and(|a| a >= commit)
                })
        });
        return (cluster, first == 1);
    }
    panic!("three clusters in a row lost a port to another program");
}

/// `role` and `term` from INFO text.
fn role_and_term(info: &str) -> (String, String) {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
            .unwrap_or("?")
            .to_string()
    };
    (field("role"), field("term"))
}

fn sim_now(start: Instant) -> SimTime {
    SimTime::from_micros(u64::try_from(start.elapsed().as_micros()).expect("small"))
}

/// Runs `synod kv ARGS` inside the namespace `ns` against the node at `addr`, recorded in
/// the history as `input` by client `client`: `Ok` with what it answered, or `Unknown` if
/// it failed. Returns the answer, if any, and what the program said.
fn recorded_kv_in_namespace(
    ns: &str,
    addr: &str,
    args: &[&str],
    input: KvInput,
    history: &Mutex<KvHistory>,
    start: Instant,
    client: u32,
) -> (Option<KvOutput>, String) {
    let op = history
        .lock()
        .expect("lock")
        .invoke(ClientId::new(client), input, sim_now(start));
    let out = kv_in_namespace(ns, addr, args);
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let said = format!(
        "{}: {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let output = match (out.status.success(), input, stdout.as_str()) {
        (true, KvInput::Write { .. }, "OK") => Some(KvOutput::Written),
        (true, KvInput::Read { .. }, "(nil)") => Some(KvOutput::Read(None)),
        (true, KvInput::Read { .. }, v) => v
            .trim_matches('"')
            .parse()
            .ok()
            .map(|v| KvOutput::Read(Some(v))),
        _ => None,
    };
    let mut h = history.lock().expect("lock");
    match output {
        Some(o) => h.ok(op, o, sim_now(start)).expect("recorded"),
        None => h.unknown(op).expect("recorded"),
    }
    (output, said)
}

/// What the unique-key writer has done so far.
#[derive(Default)]
struct Writes {
    /// `netns-I = I` acknowledged, with when it was sent.
    acked: Vec<(u64, Instant)>,
    /// Writes that got no answer (they may or may not have been applied).
    unanswered: usize,
}

impl Writes {
    fn sent_since(&self, t: Instant) -> usize {
        self.acked.iter().filter(|&&(_, sent)| sent >= t).count()
    }
}

/// Writes `netns-I = I` for I = 1, 2, ... through `addrs` in a session, one at a time,
/// until `stop` (or [`DEADLINE`], should the test have failed without stopping it). After
/// a write with no answer, the client's next write takes the session's next number by
/// itself.
fn unique_writer(addrs: &[String], stop: &AtomicBool, writes: &Mutex<Writes>) {
    let began = Instant::now();
    let running = || !stop.load(Ordering::Acquire) && began.elapsed() < DEADLINE;
    let mut client = Client::new(addrs)
        .with_credentials(test_credentials())
        .with_timeout(Duration::from_secs(15));
    while client.register().is_err() {
        if !running() {
            return;
        }
    }
    let mut i = 0u64;
    while running() {
        i += 1;
        let (key, value) = (format!("netns-{i}"), i.to_string());
        let sent = Instant::now();
        let reply = client.call(&[b"SET", key.as_bytes(), value.as_bytes()]);
        let mut writes = writes.lock().expect("lock");
        match reply {
            Ok(Value::Simple(ok)) if ok == "OK" => writes.acked.push((i, sent)),
            _ => writes.unanswered += 1,
        }
    }
}

#[test]
fn a_leader_cut_off_in_a_network_namespace_is_replaced_and_rejoins_losing_no_acknowledged_write() {
    let test = "core_netns";
    // Dropped in reverse order: the cluster (its processes killed) before the namespace.
    let Some(net) = netns_or_skip(test) else {
        return;
    };
    let began = Instant::now();
    let (cluster, node1_won_first) = cluster_led_from_the_namespace(&net);
    let set_up_in = began.elapsed();

    let history = Arc::new(Mutex::new(KvHistory::new()));
    let values = Arc::new(AtomicU64::new(1));
    let ok_ops = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let majority_addrs: Vec<String> = MAJORITY.iter().map(|&id| cluster.addr(id)).collect();
    let workload: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let mut addrs = majority_addrs.clone();
            addrs.rotate_left(client as usize % MAJORITY.len());
            let (history, values, ok_ops) = (
                Arc::clone(&history),
                Arc::clone(&values),
                Arc::clone(&ok_ops),
            );
            std::thread::spawn(move || {
                client_thread(
                    addrs,
                    Some(test_credentials()),
                    client,
                    OPS_PER_CLIENT,
                    &history,
                    start,
                    &values,
                    &ok_ops,
                );
            })
        })
        .collect();
    let writes = Arc::new(Mutex::new(Writes::default()));
    let writer = {
        let (addrs, stop, writes) = (
            majority_addrs.clone(),
            Arc::clone(&stop),
            Arc::clone(&writes),
        );
        std::thread::spawn(move || unique_writer(&addrs, &stop, &writes))
    };

    // Cut the leader off once the workload is under way.
    wait_for(&cluster, "the workload to get going", || {
        ok_ops.load(Ordering::Relaxed) >= OPS_BEFORE_CUT
    });
    wait_for(&cluster, "node 3 to lead before the cut", || {
        cluster.field(ISOLATED, "role").as_deref() == Some("leader")
    });
    let old_term: u64 = number(&cluster, ISOLATED, "term").expect("node 3's term");
    net.cut();
    let cut_at = Instant::now();
    let cut_sim = sim_now(start);
    // Asked from inside the namespace: does the cut node still say it leads in that term?
    // Then it led at the moment of the cut (a term has one leader, who leads until it
    // steps down).
    let probe = kv_in_namespace(&net.name, &cluster.addr(ISOLATED), &["INFO"]);
    let probe = String::from_utf8_lossy(&probe.stdout).into_owned();
    let (probe_role, probe_term) = role_and_term(&probe);
    let led_at_cut = probe_role == "leader" && probe_term == old_term.to_string();

    // Clients inside the namespace write and read through the isolated node meanwhile.
    let value = values.fetch_add(1, Ordering::Relaxed);
    let in_namespace = |args: &[&str], input: KvInput, client: u32| {
        let (ns, addr, history) = (
            net.name.clone(),
            cluster.addr(ISOLATED),
            Arc::clone(&history),
        );
        let args: Vec<String> = args.iter().map(|a| (*a).to_string()).collect();
        std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            recorded_kv_in_namespace(&ns, &addr, &args, input, &history, start, client)
        })
    };
    let isolated = [
        in_namespace(
            &["put", "lin-0", &value.to_string()],
            KvInput::Write { key: 0, value },
            100,
        ),
        in_namespace(&["get", "lin-0"], KvInput::Read { key: 0 }, 101),
    ];

    // The majority elects a new leader and goes on committing.
    let mut new_leader = None;
    wait_for(&cluster, "nodes 1 and 2 to elect a new leader", || {
        new_leader = MAJORITY.iter().copied().find(|&id| {
            cluster.field(id, "role").as_deref() == Some("leader")
                && number(&cluster, id, "term").is_some_and(|t| t > old_term)
        });
        new_leader.is_some()
    });
    let leaderless = cut_at.elapsed();
    let new_leader = new_leader.expect("found");
    let new_term = number(&cluster, new_leader, "term").expect("term");
    // Progress: writes sent after the cut are acknowledged.
    wait_for(
        &cluster,
        "writes sent after the cut to be acknowledged",
        || writes.lock().expect("lock").sent_since(cut_at) >= WRITES_AFTER_CUT_MIN,
    );
    stop.store(true, Ordering::Release);
    writer.join().expect("writer thread");
    let writes = std::mem::take(&mut *writes.lock().expect("lock"));
    for t in workload {
        t.join().expect("client thread");
    }
    let isolated: Vec<(Option<KvOutput>, String)> = isolated
        .into_iter()
        .map(|t| t.join().expect("isolated client"))
        .collect();
    let partition_lasted = cut_at.elapsed();

    // Heal: the old leader rejoins as a follower and catches up with the leader.
    let mut leader = None;
    wait_for(
        &cluster,
        "nodes 1 and 2 to have a leader before the heal",
        || {
            leader = MAJORITY
                .into_iter()
                .find(|&id| cluster.field(id, "role").as_deref() == Some("leader"));
            leader.is_some()
        },
    );
    let commit = number(&cluster, leader.expect("found"), "commit_index").expect("commit index");
    net.heal();
    let healed_at = Instant::now();
    wait_for(
        &cluster,
        "node 3 to rejoin as a follower and apply the leader's log",
        || {
            cluster.field(ISOLATED, "role").as_deref() == Some("follower")
                && cluster
                    .field(ISOLATED, "leader")
                    .is_some_and(|l| l != "none")
                && number(&cluster, ISOLATED, "applied_index").is_some_and(|a| a >= commit)
        },
    );
    let caught_up_in = healed_at.elapsed();

    // Every node, the rejoined one too, holds every acknowledged write: its own state,
    // read with follower reads now that it has applied everything committed.
    for id in [1, 2, ISOLATED] {
        wait_for(
            &cluster,
            &format!("node {id} to apply index {commit}"),
            || number(&cluster, id, "applied_index").is_some_and(|a| a >= commit),
        );
        let mut reader = Client::new(&[cluster.addr(id)])
            .with_credentials(test_credentials())
            .with_timeout(DEADLINE);
        let mode = reader.call(&[b"CLIENT", b"READMODE", b"follower"]);
        assert_eq!(mode.ok(), Some(Value::Simple("OK".into())));
        for &(i, _) in &writes.acked {
            let key = format!("netns-{i}");
            let got = reader.call(&[b"GET", key.as_bytes()]).ok();
            assert_eq!(
                got,
                Some(Value::Bulk(i.to_string().into_bytes())),
                "node {id}: acknowledged {key} lost\n{}",
                cluster.logs()
            );
        }
    }
    // And linearizable reads of the workload's keys through every node, recorded in the
    // history, so the checker sees that the acknowledged writes survived.
    for (n, id) in [1, 2, ISOLATED].into_iter().enumerate() {
        let mut reader = Client::new(&[cluster.addr(id)])
            .with_credentials(test_credentials())
            .with_timeout(DEADLINE);
        for key in 0..3u64 {
            let client = ClientId::new(200 + u32::try_from(n).expect("small"));
            let op =
                history
                    .lock()
                    .expect("lock")
                    .invoke(client, KvInput::Read { key }, sim_now(start));
            let got = reader.call(&[b"GET", format!("lin-{key}").as_bytes()]);
            let output = match got {
                Ok(Value::Nil) => KvOutput::Read(None),
                Ok(Value::Bulk(b)) => {
                    KvOutput::Read(Some(String::from_utf8_lossy(&b).parse().expect("a number")))
                }
                other => panic!("node {id}: GET lin-{key}: {other:?}\n{}", cluster.logs()),
            };
            history
                .lock()
                .expect("lock")
                .ok(op, output, sim_now(start))
                .expect("recorded");
        }
    }

    let history = history.lock().expect("lock");
    let verdict = Linearizability::new(KvModel).check(&history);
    let is_ack_write = |o: &&synod_sim::Operation<KvInput, KvOutput>| {
        matches!(
            o.outcome,
            Outcome::Ok(KvOutput::Written | KvOutput::Cas(true))
        )
    };
    let workload_acked = history.operations().iter().filter(is_ack_write).count();
    let workload_acked_after_cut = history
        .operations()
        .iter()
        .filter(is_ack_write)
        .filter(|o| o.invoked_at >= cut_sim)
        .count();
    let workload_after_cut = history
        .operations()
        .iter()
        .filter(|o| o.invoked_at >= cut_sim)
        .count();
    let _ = writeln!(
        std::io::stderr(),
        "core_netns: node 3 led term {old_term} at the cut ({}; set up in {:.1} s{}); \
         {:.0} ms without a leader, then node {new_leader} in term {new_term}; \
         partition {:.1} s, rejoined and caught up to index {commit} in {:.0} ms; \
         history: {} operations ({} ok, {} unknown outcome; {workload_after_cut} invoked \
         after the cut), acknowledged writes {workload_acked} ({workload_acked_after_cut} \
         sent after the cut); unique-key writes: {} acknowledged ({} sent after the cut), \
         {} unknown outcome; the isolated node's clients: put {}, get {}; \
         {verdict:?}; {:.1} s in all",
        if led_at_cut {
            "it still said so from inside the namespace after the cut".to_string()
        } else {
            format!("asked after the cut it said role {probe_role}, term {probe_term}")
        },
        set_up_in.as_secs_f64(),
        if node1_won_first {
            ", node 1 won first and was replaced"
        } else {
            ""
        },
        leaderless.as_secs_f64() * 1e3,
        partition_lasted.as_secs_f64(),
        caught_up_in.as_secs_f64() * 1e3,
        history.len(),
        history.ok_count(),
        history.unknown_count(),
        writes.acked.len(),
        writes.sent_since(cut_at),
        writes.unanswered,
        isolated[0].1,
        isolated[1].1,
        began.elapsed().as_secs_f64(),
    );
    assert_linearizable(&verdict, || format!("{history}\n{}", cluster.logs()));
    assert!(
        isolated.iter().all(|(output, _)| output.is_none()),
        "the isolated old leader answered a client: {isolated:?}\n{}",
        cluster.logs()
    );
    assert!(
        workload_acked_after_cut > 0,
        "the workload's writes after the cut were never acknowledged\n{history}"
    );
    assert!(new_term > old_term);
}
