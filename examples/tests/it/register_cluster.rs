//! The register store as real processes: three `synod node --system register` nodes on
//! loopback, writes and reads over RESP through every node, nodes killed with SIGKILL and
//! restarted on their data directories with every acknowledged write read back, and
//! garbage on the peer and client ports refused without a panic. The nodes run secured
//! (a client password and a peer secret), as a cluster off one machine must. Every wait
//! polls a condition against a deadline.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use synod_examples::resp::Value;
use synod_examples::resp::client::Connection;

use crate::core_cluster::{
    DEADLINE, NodeSpec, TEST_PASSWORD, free_port_on, names_itself, secure_args, test_credentials,
};

/// Nodes of a leaderless system (the register store's, or another's: see
/// [`Registers::up_system`]), each on its own ports and data directory, secured with a
/// client password and a peer secret ([`secure_args`]).
pub(crate) struct Registers {
    system: &'static str,
    dir: tempfile::TempDir,
    /// Each node's addresses and launcher.
    nodes: Vec<NodeSpec>,
    /// The `synod node` options of the secret files, written once before any node starts.
    secured: Vec<String>,
    /// The nodes started first (`1..=members`), each other's peers; a later node has them
    /// and itself as its peers, and joins.
    members: usize,
    children: Vec<Option<Child>>,
}

impl Registers {
    /// A cluster of `nodes`, every node started and answering: the ports are picked free
    /// and let go, so another program can take one first; such a cluster is thrown away
    /// for a new one, up to three times.
    fn up(nodes: usize) -> Registers {
        Registers::up_system("register", nodes)
    }

    /// A cluster of `nodes` of `system` (`synod node --system NAME`), as [`Registers::up`].
    pub(crate) fn up_system(system: &'static str, nodes: usize) -> Registers {
        Registers::up_joining(system, nodes, nodes)
    }

    /// Room for `nodes` of `system`, the first `members` started and answering (as
    /// [`Registers::up`]); [`Registers::start`] starts a later one, which joins them.
    pub(crate) fn up_joining(system: &'static str, nodes: usize, members: usize) -> Registers {
        let loopback = |_| {
            let on = |port: u16| format!("127.0.0.1:{port}");
            NodeSpec {
                listen: on(free_port_on("127.0.0.1")),
                client: on(free_port_on("127.0.0.1")),
                launcher: Vec::new(),
            }
        };
        Registers::up_on(system, members, || (0..nodes).map(loopback).collect())
    }

    /// Room for the nodes `nodes()` makes (node `i + 1` at its `i`th), the first `members`
    /// started and answering, as [`Registers::up_joining`]; `nodes` is asked again for each
    /// new attempt.
    pub(crate) fn up_on(
        system: &'static str,
        members: usize,
        nodes: impl Fn() -> Vec<NodeSpec>,
    ) -> Registers {
        crate::core_cluster::up_afresh(
            || {
                let nodes = nodes();
                let dir = tempfile::tempdir().expect("tempdir");
                let secured = secure_args(dir.path());
                let mut cluster = Registers {
                    system,
                    dir,
                    secured,
                    members,
                    children: nodes.iter().map(|_| None).collect(),
                    nodes,
                };
                for id in 1..=members {
                    cluster.start(id);
                }
                cluster
            },
            // Each node names itself: a port another test's node holds does not pass.
            |cluster| (1..=members).all(|id| names_itself(&cluster.call(id, &["INFO"]), id)),
            Registers::logs,
        )
    }

    fn data_dir(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("node{id}"))
    }

    pub(crate) fn start(&mut self, id: usize) {
        self.start_as(id, id);
    }

    /// Starts a process in node `slot`'s place (its addresses, data directory and log)
    /// that claims to be node `id`: its peers are the members and itself, with `slot`'s
    /// address as `id`'s. With `slot != id`, a second node under a member's id.
    pub(crate) fn start_as(&mut self, slot: usize, id: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node{slot}.log")))
            .expect("log file");
        let peers: Vec<String> = (1..=self.members.max(id))
            .map(|i| {
                let at = if i == id { slot } else { i };
                format!("{i}={}", self.nodes[at - 1].listen)
            })
            .collect();
        let node = &self.nodes[slot - 1];
        let child = node
            .command()
            .args(["node", "--system", self.system, "--id", &id.to_string()])
            .args([
                "--listen",
                &node.listen,
                "--client",
                &node.client,
                "--peers",
                &peers.join(","),
            ])
            .arg("--data-dir")
            .arg(self.data_dir(slot))
            // A name of this cluster's own: the tests' clusters share their secrets, and a
            // node of one that dials a port another cluster's node took since must be
            // refused, not let in.
            .args(["--cluster", &self.cluster_name()])
            .args(&self.secured)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("synod node starts");
        self.children[slot - 1] = Some(child);
    }

    /// The cluster's name (`--cluster`): its directory's, unique among the tests'.
    fn cluster_name(&self) -> String {
        let dir = self.dir.path().file_name().unwrap_or_default();
        format!("synod-test-{}", dir.to_string_lossy())
    }

    /// Waits (until the tests' deadline) for node `slot`'s process to exit: its status,
    /// or `None` if it still runs.
    pub(crate) fn exited(&mut self, slot: usize) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + DEADLINE;
        let child = self.children[slot - 1].as_mut()?;
        let mut status = None;
        synod_examples::runtime::poll_until(deadline, || {
            status = child.try_wait().expect("waitable");
            status.is_some()
        });
        status
    }

    /// Kills node `id` with SIGKILL and reaps it.
    pub(crate) fn kill(&mut self, id: usize) {
        if let Some(mut child) = self.children[id - 1].take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
        }
    }

    /// Sends a signal (`STOP`, `CONT`) to node `id`.
    pub(crate) fn signal(&self, id: usize, name: &str) {
        crate::core_cluster::signal(self.children[id - 1].as_ref().expect("running"), name);
    }

    /// Whether node `id`'s process is still running.
    fn running(&mut self, id: usize) -> bool {
        self.children[id - 1]
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("waitable").is_none())
    }

    /// Where node `id` serves clients.
    pub(crate) fn client_addr(&self, id: usize) -> String {
        self.nodes[id - 1].client.clone()
    }

    /// A new connection to node `id`, authenticated.
    pub(crate) fn connect(&self, id: usize) -> std::io::Result<Connection> {
        Connection::open_as(&self.client_addr(id), Some(&test_credentials()))
    }

    /// Sends `command` to node `id` on a new connection: its reply, or the error.
    pub(crate) fn call(&self, id: usize, command: &[&str]) -> std::io::Result<Value> {
        let mut conn = self.connect(id)?;
        conn.set_read_timeout(Duration::from_secs(10))?;
        let args: Vec<&[u8]> = command.iter().map(|a| a.as_bytes()).collect();
        conn.roundtrip(&args)
    }

    /// Polls node `id` with `command` until it answers other than `TRYAGAIN` (or not at
    /// all): that answer.
    pub(crate) fn settle(&self, id: usize, command: &[&str]) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.call(id, command) {
                Ok(Value::Error(e)) if e.starts_with("TRYAGAIN") => {}
                Ok(value) => return value,
                Err(_) => {}
            }
            assert!(
                Instant::now() < deadline,
                "node {id} did not answer {command:?} in {DEADLINE:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn logs(&self) -> String {
        (1..=self.nodes.len())
            .map(|id| {
                let path = self.dir.path().join(format!("node{id}.log"));
                let text = std::fs::read_to_string(path).unwrap_or_default();
                format!("--- node {id}\n{text}")
            })
            .collect()
    }
}

impl Drop for Registers {
    fn drop(&mut self) {
        for id in 1..=self.children.len() {
            self.kill(id);
        }
    }
}

fn ok() -> Value {
    Value::Simple("OK".into())
}

fn bulk(s: &str) -> Value {
    Value::Bulk(s.as_bytes().to_vec())
}

#[test]
fn register_writes_are_read_through_every_node_and_survive_sigkill_of_every_node() {
    let mut cluster = Registers::up(3);
    // Writes through every node, each acknowledged once a majority stored it.
    let mut written = Vec::new();
    for i in 0..12 {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        let via = i % 3 + 1;
        assert_eq!(
            cluster.settle(via, &["SET", &key, &value]),
            ok(),
            "{key} via {via}"
        );
        written.push((key, value));
    }
    for id in 1..=3 {
        for (key, value) in &written {
            assert_eq!(
                cluster.settle(id, &["GET", key]),
                bulk(value),
                "{key} at node {id}"
            );
        }
        assert_eq!(cluster.settle(id, &["GET", "never-written"]), Value::Nil);
    }
    // One node killed: the other two are a majority and go on.
    cluster.kill(1);
    for i in 0..6 {
        let (key, value) = ("k0".to_string(), format!("after-kill-{i}"));
        assert_eq!(cluster.settle(2 + i % 2, &["SET", &key, &value]), ok());
        written[0].1 = value;
    }
    cluster.start(1);
    assert_eq!(cluster.settle(1, &["GET", "k0"]), bulk(&written[0].1));
    // Every node killed at once, and restarted on its data directory: every acknowledged
    // write is read back, through every node.
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.start(id);
    }
    for id in 1..=3 {
        for (key, value) in &written {
            assert_eq!(
                cluster.settle(id, &["GET", key]),
                bulk(value),
                "{key} at node {id} after every node was killed"
            );
        }
    }
    // And the store takes writes again.
    assert_eq!(cluster.settle(2, &["SET", "k1", "again"]), ok());
    assert_eq!(cluster.settle(3, &["GET", "k1"]), bulk("again"));
    let logs = cluster.logs();
    assert!(!logs.contains("panicked"), "{logs}");
}

/// Whether the other side closed `stream` (end of stream or reset) before its read
/// timeout, reading whatever it still sends.
pub(crate) fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

#[test]
fn garbage_on_the_register_peer_and_client_ports_is_refused_without_a_panic() {
    let mut cluster = Registers::up(3);
    assert_eq!(cluster.settle(1, &["SET", "k", "before"]), ok());
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for (what, addr) in [
        ("peer", &cluster.nodes[0].listen),
        ("client", &cluster.nodes[0].client),
    ] {
        let mut stream = TcpStream::connect(addr).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        // A RESP array header followed by bytes that are no RESP, and no Synod frame.
        stream
            .write_all(b"*2\r\n$3\r\nGET\r\n$-7\r\n")
            .expect("written");
        let _ = stream.write_all(&garbage);
        assert!(
            closed(&mut stream),
            "the {what} port kept a connection sending garbage"
        );
    }
    // The node is up, serving clients and its peers.
    assert!(cluster.running(1), "{}", cluster.logs());
    assert_eq!(cluster.settle(1, &["SET", "k", "after"]), ok());
    assert_eq!(cluster.settle(2, &["GET", "k"]), bulk("after"));
    let logs = cluster.logs();
    assert!(!logs.contains("panicked"), "{logs}");
}

#[test]
fn synod_kv_reads_and_writes_the_register_store() {
    let cluster = Registers::up(3);
    let addrs = format!("{},{}", cluster.nodes[0].client, cluster.nodes[1].client);
    let kv = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_synod"))
            .args(["kv", "--system", "register", "--addr", &addrs])
            .args(args)
            .env("SYNOD_PASSWORD", TEST_PASSWORD)
            .output()
            .expect("synod kv runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // The first write may find the nodes still starting (TRYAGAIN): poll it.
    let deadline = Instant::now() + DEADLINE;
    while kv(&["put", "greeting", "hello"]) != (Some(0), "OK\n".into()) {
        assert!(
            Instant::now() < deadline,
            "no write taken\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(kv(&["get", "greeting"]), (Some(0), "\"hello\"\n".into()));
    assert_eq!(kv(&["get", "nothing"]), (Some(0), "(nil)\n".into()));
    let (code, _) = kv(&["put", "only-a-key"]);
    assert_eq!(code, Some(2));
}
