//! What the benchmarks of real `synod node` clusters share: a cluster of processes on
//! loopback (of any system; a later node may join the first ones), each under a watchdog
//! that kills it when the bench ends however it ends, the CPU time its nodes spent, the run
//! plan, and the figures' medians and quantiles. Included by each bench with `#[path]`
//! (benches are separate crates).

// Each bench uses part of it.
#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use synod_examples::consistent_core::client::Client;
use synod_examples::resp::Value;

/// How long the cluster may take to elect a leader.
pub const ELECTION_DEADLINE: Duration = Duration::from_secs(30);

/// Whether `SYNOD_BENCH_QUICK=1` asks for a quick run.
pub fn quick() -> bool {
    std::env::var("SYNOD_BENCH_QUICK").is_ok_and(|v| v == "1")
}

/// How many repetitions, and how long, the benches of a cluster run.
pub struct Plan {
    pub reps: usize,
    /// Samples per repetition of a latency figure (fdatasync, ping-pong, 1-client SET).
    pub samples: usize,
    /// How long one repetition of a rate figure runs.
    pub rep: Duration,
}

impl Plan {
    /// Five short repetitions in a quick run ([`quick`]), seven longer ones otherwise.
    pub fn new() -> Plan {
        if quick() {
            Plan {
                reps: 5,
                samples: 200,
                rep: Duration::from_millis(700),
            }
        } else {
            Plan {
                reps: 7,
                samples: 2000,
                rep: Duration::from_secs(3),
            }
        }
    }
}

/// Median, min and max.
pub fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// Prints median and min-max of per-repetition figures; returns the median.
pub fn report(label: &str, unit: &str, v: &[f64]) -> f64 {
    let (median, min, max) = stats(v);
    println!(
        "{label}: median {median:.1} {unit} (min {min:.1}, max {max:.1}, {} reps)",
        v.len()
    );
    median
}

/// The `q` quantile (0 to 1) of `samples`, in microseconds.
pub fn quantile_us(samples: &mut [Duration], q: f64) -> f64 {
    samples.sort();
    let last = samples.len().saturating_sub(1);
    let at = ((last as f64) * q).round() as usize;
    samples[at.min(last)].as_secs_f64() * 1e6
}

/// p50 of durations, in microseconds.
pub fn p50_us(samples: &mut [Duration]) -> f64 {
    quantile_us(samples, 0.5)
}

/// The file system `path` lives on, from `/proc/self/mounts` (the longest mount point
/// that is a prefix of it), or `unknown`.
pub fn file_system(path: &Path) -> String {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return "unknown".into();
    };
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, at, kind) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(at).then(|| (at.len(), kind.to_string()))
        })
        .max()
        .map_or_else(|| "unknown".into(), |(_, kind)| kind)
}

// ---------------------------------------------------------------------------------------
// The cluster.

/// Runs the node (`$0 "$@"`) in the background and, beside it, a watchdog reading the
/// bench's pipe on fd 3: end of file (the bench closed it, or died) kills the node. The
/// script exits with the node's status when the node exits by itself.
pub const WATCHDOG: &str = r#"exec 3<&0
"$0" "$@" &
node=$!
( read -r _ <&3; kill -9 "$node" 2>/dev/null ) &
watchdog=$!
wait "$node"
status=$?
kill "$watchdog" 2>/dev/null
exit "$status""#;

pub struct Process {
    sh: Child,
    /// Closing it kills the node.
    pipe: Option<ChildStdin>,
    /// What the script runs.
    program: OsString,
}

impl Process {
    /// Starts `program args` under the watchdog, its stdout discarded and its stderr into
    /// `log`. Dropping the `Process` kills it.
    pub fn watched(program: &OsStr, args: &[OsString], log: File) -> Process {
        let mut sh = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sh starts");
        let pipe = sh.stdin.take();
        Process {
            sh,
            pipe,
            program: program.to_os_string(),
        }
    }

    /// The process id of the program the watchdog's script runs: the child of the script
    /// whose command line starts with the program (the other child is the watchdog).
    pub fn program_pid(&self) -> Option<u32> {
        let sh = self.sh.id();
        let children = std::fs::read_to_string(format!("/proc/{sh}/task/{sh}/children")).ok()?;
        children
            .split_whitespace()
            .filter_map(|pid| pid.parse::<u32>().ok())
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|line| {
                    line.split(|&b| b == 0).next() == Some(self.program.as_encoded_bytes())
                })
            })
    }

    /// How the process ended, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.sh.try_wait().ok().flatten()
    }

    /// Closes the pipe: the watchdog kills the process.
    fn signal_stop(&mut self) {
        self.pipe = None;
    }

    /// Waits (up to 5 s) for the watchdog's script to end after [`Process::signal_stop`],
    /// and reaps it.
    fn reap(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.sh.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // A script that did not end (it should not happen): end it, and reap it.
        let _ = self.sh.kill();
        let _ = self.sh.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.signal_stop();
        self.reap();
    }
}

/// CPU time (user and system) the process `pid` (`"self"` for this one) has used so far,
/// in seconds, from `/proc/PID/stat`; 0 if it cannot be read.
pub fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // After the command's closing parenthesis: the state is the first field, utime the
    // 12th and stime the 13th, in clock ticks (USER_HZ, 100 a second on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Stops every process of `processes` at once (their watchdogs all kill at the same time),
/// then reaps them.
fn stop_all(processes: &mut [Process]) {
    for p in processes.iter_mut() {
        p.signal_stop();
    }
    for p in processes.iter_mut() {
        p.reap();
    }
}

/// The processes of one cluster, each under the watchdog, with their data and logs in one
/// temporary directory. Dropping it kills them and removes the directory.
pub struct Members {
    dir: tempfile::TempDir,
    /// What a member is called, in its log's name (`node1.log`) and in messages.
    kind: &'static str,
    processes: Vec<Process>,
}

impl Members {
    pub fn new(root: &Path, kind: &'static str) -> Members {
        Members {
            dir: tempfile::tempdir_in(root).expect("cluster dir"),
            kind,
            processes: Vec::new(),
        }
    }

    /// The directory of the members' data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the next member (numbered from 1), its stderr into its log.
    pub fn spawn(&mut self, program: &OsStr, args: &[OsString]) {
        let log = File::create(self.log_path(self.processes.len() + 1)).expect("member log");
        self.processes.push(Process::watched(program, args, log));
    }

    pub fn log_path(&self, member: usize) -> PathBuf {
        self.dir.path().join(format!("{}{member}.log", self.kind))
    }

    /// What the members wrote to stderr, for a failure message.
    pub fn logs(&self) -> String {
        (1..=self.processes.len())
            .map(|m| {
                let text = std::fs::read_to_string(self.log_path(m)).unwrap_or_default();
                format!("--- {} {m}\n{text}", self.kind)
            })
            .collect()
    }

    /// CPU time the members have used so far, in seconds ([`cpu_seconds`]).
    pub fn cpu_seconds(&self) -> f64 {
        self.processes
            .iter()
            .filter_map(Process::program_pid)
            .map(|pid| cpu_seconds(&pid.to_string()))
            .sum()
    }

    /// How many members were started.
    pub fn len(&self) -> usize {
        self.processes.len()
    }

    /// Panics with the members' logs if one has exited.
    pub fn check_running(&mut self) {
        for (i, p) in self.processes.iter_mut().enumerate() {
            if let Some(status) = p.exited() {
                let logs = self.logs();
                panic!("{} {} exited ({status}):\n{logs}", self.kind, i + 1);
            }
        }
    }
}

impl Drop for Members {
    fn drop(&mut self) {
        // Closing the pipes makes every watchdog kill its process, then its script exits.
        stop_all(&mut self.processes);
        // The TempDir removes the data directories after this.
    }
}

/// A cluster of `synod node` processes. Dropping it kills them and removes their data.
pub struct Cluster {
    members: Members,
    /// `--system`.
    system: &'static str,
    /// Each node's peer address.
    peer_addrs: Vec<String>,
    client_addrs: Vec<String>,
    /// The nodes started first (`1..=founders`), each other's peers; a later node has them
    /// and itself as its peers, and joins.
    founders: usize,
    /// Options added to every node's.
    extra: Vec<OsString>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Cluster {
    /// A Consistent Core cluster of `nodes`, every node started.
    pub fn start(root: &Path, nodes: usize) -> Cluster {
        Cluster::start_with(root, nodes, &[])
    }

    /// [`Cluster::start`], with `extra` added to every node's options (a secured
    /// cluster's `--password-file` and `--peer-secret-file`, say).
    pub fn start_with(root: &Path, nodes: usize, extra: &[OsString]) -> Cluster {
        Cluster::start_system(root, "consistent-core", nodes, nodes, extra)
    }

    /// Room for `nodes` of `system` (`synod node --system NAME`), the first `founders`
    /// started, with `extra` added to every node's options; [`Cluster::start_node`] starts
    /// a later one, which joins them.
    pub fn start_system(
        root: &Path,
        system: &'static str,
        nodes: usize,
        founders: usize,
        extra: &[OsString],
    ) -> Cluster {
        let mut cluster = Cluster {
            members: Members::new(root, "node"),
            system,
            peer_addrs: (0..nodes)
                .map(|_| format!("127.0.0.1:{}", free_port()))
                .collect(),
            client_addrs: (0..nodes)
                .map(|_| format!("127.0.0.1:{}", free_port()))
                .collect(),
            founders,
            extra: extra.to_vec(),
        };
        for _ in 0..founders {
            cluster.start_node();
        }
        cluster
    }

    /// Starts the next node (node 1 first): its peers are the first nodes and itself.
    pub fn start_node(&mut self) {
        let id = self.members.len() + 1;
        let peers = (1..=self.founders.max(id))
            .map(|i| format!("{i}={}", self.peer_addrs[i - 1]))
            .collect::<Vec<_>>()
            .join(",");
        let mut args: Vec<OsString> = ["node", "--system", self.system, "--id", &id.to_string()]
            .iter()
            .map(OsString::from)
            .collect();
        args.extend(
            [
                "--listen",
                &self.peer_addrs[id - 1],
                "--client",
                &self.client_addrs[id - 1],
                "--peers",
                &peers,
                // A name of its own (its directory's): the cluster's id is drawn from it,
                // not from the peer list, so a later node, with one peer more, is one of them.
                "--cluster",
                &self.cluster_name(),
                "--data-dir",
            ]
            .iter()
            .map(OsString::from),
        );
        args.push(self.members.dir().join(format!("node{id}")).into());
        args.extend(self.extra.iter().cloned());
        self.members
            .spawn(OsStr::new(env!("CARGO_BIN_EXE_synod")), &args);
    }

    /// The cluster's name (`--cluster`): its directory's, unique among the benches'.
    fn cluster_name(&self) -> String {
        let dir = self.members.dir().file_name().unwrap_or_default();
        format!("synod-bench-{}", dir.to_string_lossy())
    }

    /// Where node `id` serves clients.
    pub fn client_addr(&self, id: usize) -> String {
        self.client_addrs[id - 1].clone()
    }

    pub fn log_path(&self, id: usize) -> PathBuf {
        self.members.log_path(id)
    }

    /// What the nodes wrote to stderr, for a failure message.
    pub fn logs(&self) -> String {
        self.members.logs()
    }

    /// Panics with the nodes' logs if a node has exited.
    pub fn check_running(&mut self) {
        self.members.check_running();
    }

    /// CPU time the nodes have used so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        self.members.cpu_seconds()
    }

    /// Node `id`'s INFO text, if it answers within a second.
    pub fn info(&self, id: usize) -> Option<String> {
        let mut client =
            Client::new(&[self.client_addrs[id - 1].clone()]).with_timeout(Duration::from_secs(1));
        match client.call(&[b"INFO"]) {
            Ok(Value::Bulk(text)) => Some(String::from_utf8_lossy(&text).into_owned()),
            _ => None,
        }
    }

    pub fn role(&self, id: usize) -> Option<String> {
        info_field(&self.info(id)?, "role").map(str::to_string)
    }

    /// Polls until a node says it leads; returns its RESP address.
    pub fn wait_leader(&mut self) -> String {
        let deadline = Instant::now() + ELECTION_DEADLINE;
        while Instant::now() < deadline {
            self.check_running();
            for id in 1..=self.members.len() {
                if self.role(id).as_deref() == Some("leader") {
                    return self.client_addrs[id - 1].clone();
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "no leader in {ELECTION_DEADLINE:?}; node logs:\n{}",
            self.logs()
        );
    }
}

/// A client of the node at `addr` (20 s a call), connected: a `connect` of
/// `support/load.rs`'s `closed_loop`.
pub fn connected(addr: &str) -> Result<Client, String> {
    let mut client = Client::new(&[addr.to_string()]).with_timeout(Duration::from_secs(20));
    client
        .call(&[b"PING"])
        .map_err(|e| format!("{addr}: {e}"))?;
    Ok(client)
}

/// The value of a `name:value` line of an INFO text.
pub fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}
