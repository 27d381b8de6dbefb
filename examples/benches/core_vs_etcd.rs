//! The Consistent Core beside etcd 3.4, in the same run on the same machine: a three-node
//! Consistent Core cluster of real `synod node` processes and a three-member etcd cluster
//! (Debian's `etcd-server`), both on loopback with their data on the same file system,
//! driven by one load generator (`support/load.rs`): N clients, each on its own thread with
//! its own connection and one blocking request in flight, at 1, 16, 64 and 256 clients.
//!
//! Prints one `ratio <name> <value>` line per figure, Synod's rate over etcd's (higher is
//! better for Synod; the goal is 3.0 at least), with both absolute rates after it:
//!
//! - `core.writes_<N>c_vs_etcd`: committed `SET`s per second against etcd `Put`s per second.
//! - `core.reads_<N>c_vs_etcd`: linearizable `GET`s per second (the Consistent Core's
//!   default read) against linearizable `Range`s per second (etcd's default read).
//!
//! Keys are 10 bytes (`key:000123`, 4,096 of them, written once before the reads) and
//! values 32 bytes on both. Every request goes to the leader: the Consistent Core's found
//! by `INFO` (`role:leader`), etcd's by its `Status` call (the member whose leader id is its
//! own). The Consistent Core runs secured, as a cluster off one machine must (a client
//! password, every connection authenticated once; the peers prove the cluster's secret);
//! etcd runs with its defaults (an `fdatasync` per batch of its log) and without
//! authentication, which would add a token check to each of its requests.
//!
//! etcd is spoken to through its gRPC API, over HTTP/2 (`h2`), by `support/etcd.rs`: one
//! connection per client, each driven by a runtime on the client's own thread, as a
//! blocking Consistent Core client reads and writes its own socket. Not through etcd's
//! HTTP/JSON gateway, which adds a proxy hop inside etcd.
//!
//! Beside each rate the bench prints the CPU time each request cost, as medians: the three
//! servers' together (user and system time from `/proc/PID/stat`), and the load
//! generator's (this process's), so that a difference in the clients' cost shows; and,
//! once, what each cluster spends a second with no client at all.
//!
//! For each figure and repetition the two systems run one after the other (which one first
//! alternates), so that both see the same machine; each figure is the median over the
//! repetitions, printed with min and max.
//!
//! Needs the `peers` feature and the `etcd` program (`apt-get install etcd-server`, or
//! `SYNOD_ETCD=/path/to/etcd`); without it the bench says so and measures nothing.
//! `SYNOD_BENCH_QUICK=1` runs three repetitions of one second a figure (about two minutes
//! in all); without it, five of three seconds.

use std::path::Path;
use std::time::Duration;

use synod_examples::consistent_core::client::Client;
use synod_examples::resp::Value;
use synod_examples::resp::client::{Credentials, set_program_credentials};

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/etcd.rs"]
mod etcd;
#[path = "support/load.rs"]
mod load;

use cluster::{Cluster, cpu_seconds, file_system, report, stats};
use etcd::{Etcd, EtcdClient};
use load::{Run, closed_loop};

/// The client counts of the figures.
const CLIENT_COUNTS: [usize; 4] = [1, 16, 64, 256];
/// Keys written and read (a bounded key space, as `redis-benchmark -r` has).
const KEYS: usize = 4096;
/// Bytes of each value written.
const VALUE_BYTES: usize = 32;
/// The Consistent Core's client password and cluster secret.
const PASSWORD: &str = "synod-bench-client-password";
const PEER_SECRET: &str = "synod-bench-cluster-secret-0123456789";
/// How long one call may take on either system before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

struct Plan {
    reps: usize,
    /// How long one run of one figure lasts.
    rep: Duration,
}

fn plan() -> Plan {
    if cluster::quick() {
        Plan {
            reps: 3,
            rep: Duration::from_secs(1),
        }
    } else {
        Plan {
            reps: 5,
            rep: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Write,
    Read,
}

/// Client `client`'s `i`-th key: the clients start spread over the key space.
fn key(client: usize, i: u64) -> String {
    let at = (client as u64 * 131 + i) % KEYS as u64;
    format!("key:{at:06}")
}

fn value() -> Vec<u8> {
    vec![b'v'; VALUE_BYTES]
}

// ---------------------------------------------------------------------------------------
// The two systems under the one load generator.

fn core_connect(leader: &str) -> Result<Client, String> {
    let mut client = Client::new(&[leader.to_string()]).with_timeout(CALL_TIMEOUT);
    // Connect (and authenticate) before the clock runs.
    client.call(&[b"PING"]).map_err(|e| e.to_string())?;
    Ok(client)
}

fn core_request(client: &mut Client, op: Op, key: &str, value: &[u8]) -> bool {
    match op {
        Op::Write => matches!(
            client.call(&[b"SET", key.as_bytes(), value]),
            Ok(Value::Simple(ref ok)) if ok == "OK"
        ),
        Op::Read => matches!(
            client.call(&[b"GET", key.as_bytes()]),
            Ok(Value::Bulk(ref v)) if v.len() == VALUE_BYTES
        ),
    }
}

fn etcd_request(client: &mut EtcdClient, op: Op, key: &str, value: &[u8]) -> bool {
    match op {
        Op::Write => client.put(key.as_bytes(), value).is_ok(),
        Op::Read => matches!(client.get(key.as_bytes()), Ok(Some(v)) if v.len() == VALUE_BYTES),
    }
}

/// CPU time of the servers (`servers`, in seconds) and of this process, the load
/// generator.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    servers: f64,
    generator: f64,
}

fn cpu(servers: &dyn Fn() -> f64) -> Cpu {
    Cpu {
        servers: servers(),
        generator: cpu_seconds("self"),
    }
}

/// One run's rate, and what it cost per request answered, in microseconds of CPU: the
/// three servers together, and the load generator.
struct Measured {
    run: Run,
    servers_us: f64,
    generator_us: f64,
}

fn measured(run: (Run, Cpu, Cpu)) -> Measured {
    let (run, before, after) = run;
    let per_op = |seconds: f64| seconds * 1e6 / run.done.max(1) as f64;
    Measured {
        servers_us: per_op(after.servers - before.servers),
        generator_us: per_op(after.generator - before.generator),
        run,
    }
}

fn core_run(core: &Cluster, leader: &str, clients: usize, op: Op, duration: Duration) -> Measured {
    let value = value();
    measured(closed_loop(
        clients,
        duration,
        |_| core_connect(leader),
        |client, c, i| core_request(client, op, &key(c, i), &value),
        || cpu(&|| core.cpu_seconds()),
    ))
}

fn etcd_run(etcd: &Etcd, leader: &str, clients: usize, op: Op, duration: Duration) -> Measured {
    let value = value();
    measured(closed_loop(
        clients,
        duration,
        |_| EtcdClient::connect(leader),
        |client, c, i| etcd_request(client, op, &key(c, i), &value),
        || cpu(&|| etcd.cpu_seconds()),
    ))
}

/// A figure's repetitions on one system.
#[derive(Default)]
struct Figure {
    rates: Vec<f64>,
    servers_us: Vec<f64>,
    generator_us: Vec<f64>,
    failures: u64,
}

impl Figure {
    fn add(&mut self, m: &Measured) {
        self.rates.push(m.run.rate);
        self.servers_us.push(m.servers_us);
        self.generator_us.push(m.generator_us);
        self.failures += m.run.failures;
    }

    /// Prints the figure; returns its median rate.
    fn report(&self, label: &str) -> f64 {
        let rate = report(label, "ops/s", &self.rates);
        let (servers, _, _) = stats(&self.servers_us);
        let (generator, _, _) = stats(&self.generator_us);
        println!(
            "    CPU per request, medians: {servers:.1} us in the three servers, {generator:.1} us in the load generator"
        );
        rate
    }
}

/// Writes every key once on both systems, with 16 clients each, so that every read finds
/// its value.
fn load_keys(core: &str, etcd: &str) {
    const WRITERS: usize = 16;
    let value = value();
    std::thread::scope(|scope| {
        for w in 0..WRITERS {
            let value = &value;
            scope.spawn(move || {
                let mut c = core_connect(core).expect("connect to the Consistent Core");
                let mut e = EtcdClient::connect(etcd).expect("connect to etcd");
                for at in (w..KEYS).step_by(WRITERS) {
                    let key = format!("key:{at:06}");
                    assert!(
                        core_request(&mut c, Op::Write, &key, value),
                        "the Consistent Core refused to SET {key}"
                    );
                    assert!(
                        etcd_request(&mut e, Op::Write, &key, value),
                        "etcd refused to put {key}"
                    );
                }
            });
        }
    });
}

/// Writes the secured Consistent Core's password and secret files into `dir`, and
/// returns the `synod node` options that use them.
fn secure_args(dir: &Path) -> Vec<std::ffi::OsString> {
    let (password, secret) = (dir.join("password"), dir.join("peer-secret"));
    std::fs::write(&password, PASSWORD).expect("password file");
    std::fs::write(&secret, PEER_SECRET).expect("peer secret file");
    vec![
        "--password-file".into(),
        password.into(),
        "--peer-secret-file".into(),
        secret.into(),
    ]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn main() {
    let Some(etcd_binary) = etcd::binary() else {
        println!(
            "core_vs_etcd: etcd-server not installed (no `etcd` on the PATH, no SYNOD_ETCD): \
             skipped; `apt-get install etcd-server` to run it"
        );
        return;
    };
    let plan = plan();
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temporary directory");
    println!(
        "synod core_vs_etcd benchmark: 3 nodes of {} beside 3 members of {} ({}); data in {} ({}); \
         {} reps of {:?}; load average {}",
        env!("CARGO_BIN_EXE_synod"),
        etcd_binary.display(),
        etcd::version(&etcd_binary),
        root.path().display(),
        file_system(root.path()),
        plan.reps,
        plan.rep,
        load_average()
    );
    set_program_credentials(Credentials {
        user: None,
        password: PASSWORD.as_bytes().to_vec(),
    });
    let mut core = Cluster::start_with(root.path(), 3, &secure_args(root.path()));
    let mut etcd = Etcd::start(&etcd_binary, root.path(), 3);
    let core_leader = core.wait_leader();
    let etcd_leader = etcd.wait_leader();
    println!("leaders: the Consistent Core's at {core_leader}, etcd's at {etcd_leader}");

    load_keys(&core_leader, &etcd_leader);
    // Warm up: connections, server threads, the page cache, the logs' first segments.
    for op in [Op::Write, Op::Read] {
        core_run(&core, &core_leader, 64, op, plan.rep / 2);
        etcd_run(&etcd, &etcd_leader, 64, op, plan.rep / 2);
    }

    // What each cluster spends with no client, for the CPU per request at few clients.
    let idle = |cpu: &dyn Fn() -> f64| {
        let (before, start) = (cpu(), std::time::Instant::now());
        std::thread::sleep(plan.rep);
        (cpu() - before) / start.elapsed().as_secs_f64() * 1e3
    };
    println!(
        "idle, no clients: the Consistent Core's three nodes used {:.1} ms of CPU a second, etcd's three members {:.1} ms",
        idle(&|| core.cpu_seconds()),
        idle(&|| etcd.cpu_seconds())
    );

    let mut failures = (0u64, 0u64);
    for op in [Op::Write, Op::Read] {
        for clients in CLIENT_COUNTS {
            let (mut synod, mut peer) = (Figure::default(), Figure::default());
            for rep in 0..plan.reps {
                let run_core = |synod: &mut Figure| {
                    synod.add(&core_run(&core, &core_leader, clients, op, plan.rep));
                };
                let run_etcd = |peer: &mut Figure| {
                    peer.add(&etcd_run(&etcd, &etcd_leader, clients, op, plan.rep));
                };
                if rep % 2 == 0 {
                    run_core(&mut synod);
                    run_etcd(&mut peer);
                } else {
                    run_etcd(&mut peer);
                    run_core(&mut synod);
                }
                core.check_running();
                etcd.check_running();
            }
            failures.0 += synod.failures;
            failures.1 += peer.failures;
            let (name, synod_op, etcd_op) = match op {
                Op::Write => ("writes", "SETs", "Puts"),
                Op::Read => ("reads", "linearizable GETs", "linearizable Ranges"),
            };
            let by = if clients == 1 {
                "1 client".to_string()
            } else {
                format!("{clients} clients")
            };
            let got = synod.report(&format!("synod {synod_op}, {by}"));
            let base = peer.report(&format!("etcd {etcd_op}, {by}"));
            println!(
                "ratio core.{name}_{clients}c_vs_etcd {:.3} (synod {got:.0} {synod_op}/s; etcd {base:.0} {etcd_op}/s)",
                got / base
            );
        }
    }
    println!("load average at the end: {}", load_average());
    if failures != (0, 0) {
        println!(
            "warning: requests failed or were refused during the measurements: {} on the \
             Consistent Core, {} on etcd",
            failures.0, failures.1
        );
    }
}
