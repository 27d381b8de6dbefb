//! The demo's cluster: `synod node` child processes on loopback, their data in a fresh
//! temporary directory, and a watchdog that cleans up if the demo itself dies.
// tidy: driver: starts and kills processes, opens sockets, creates and removes files.
//!
//! Cleaning up on every exit path, Ctrl-C included, without a signal handler (safe Rust
//! cannot install one without a new dependency): the nodes are in the demo's process
//! group, so the terminal's SIGINT reaches them too. For the files, and for a demo killed
//! any other way, [`Cluster::new`] starts a watchdog, `/bin/sh` in a process group of its
//! own that ignores SIGINT and SIGHUP and waits on a pipe from the demo. The pipe closes
//! when the demo exits, however it exits; unless the demo said first that it cleaned up
//! itself, the watchdog then SIGKILLs the nodes listed in the directory's `pids` file and
//! removes the directory (or keeps it, with `--keep-data`).
//!
//! The cluster runs secured, as a cluster off one machine must: [`Cluster::new`] draws a
//! client password and a cluster secret from the operating system's random source into
//! files in the directory (readable by the owner only), every node is started with
//! `--password-file` and `--peer-secret-file`, and the demo's clients authenticate.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::resp::{Limits, Value};

/// The watchdog's script: `$1` is the directory, `$2` is `keep` or `remove`.
const WATCHDOG: &str = r#"trap '' INT HUP
IFS= read -r word
[ "$word" = done ] && exit 0
[ -f "$1/pids" ] && kill -9 $(cat "$1/pids") 2>/dev/null
[ "$2" = keep ] || rm -rf "$1"
"#;

/// What INFO says about a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NodeInfo {
    /// Whether it says it leads.
    pub(crate) leader: bool,
    /// Its current term.
    pub(crate) term: u64,
    /// Its commit index.
    pub(crate) commit: u64,
    /// Its applied index.
    pub(crate) applied: u64,
}

/// A cluster of `synod node` processes; see the module documentation.
#[derive(Debug)]
pub(crate) struct Cluster {
    dir: PathBuf,
    keep_data: bool,
    peers: String,
    peer_addrs: Vec<SocketAddr>,
    client_addrs: Vec<SocketAddr>,
    children: Vec<Option<Child>>,
    watchdog: Option<(Child, ChildStdin)>,
    /// The clients' password (in `password` in the directory).
    password: Vec<u8>,
    /// The system its nodes run (`synod node --system`), and the nodes started first: a
    /// later node has them and itself as its peers, and joins (the cluster is named).
    system: &'static str,
    members: usize,
}

/// The files of the demo's secrets, in its directory.
const PASSWORD_FILE: &str = "password";
const PEER_SECRET_FILE: &str = "peer-secret";

/// `bytes` fresh random bytes from the operating system, in hex.
fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut raw = vec![0u8; bytes];
    getrandom::fill(&mut raw).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `text` to a new file at `path` that only its owner can read.
fn write_secret(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)?.write_all(text.as_bytes())
}

fn free_addr() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// A new, empty directory under the system's temporary directory.
fn fresh_dir() -> std::io::Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let dir = base.join(format!(
            "synod-demo-{}-{:08x}",
            std::process::id(),
            nanos.wrapping_add(attempt)
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(format!(
        "no free directory name in {}",
        base.display()
    )))
}

fn start_watchdog(dir: &Path, keep_data: bool) -> std::io::Result<(Child, ChildStdin)> {
    let mut command = Command::new("/bin/sh");
    command
        .args(["-c", WATCHDOG, "synod-demo-watchdog"])
        .arg(dir)
        .arg(if keep_data { "keep" } else { "remove" })
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        command.process_group(0);
    }
    let mut child = command.spawn()?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("the watchdog has no stdin"))?;
    Ok((child, stdin))
}

impl Cluster {
    /// Creates the directory and the watchdog, and picks free loopback ports for `nodes`
    /// nodes; starts nothing yet.
    pub(crate) fn new(nodes: usize, keep_data: bool) -> std::io::Result<Cluster> {
        Cluster::of_system("consistent-core", nodes, nodes, keep_data)
    }

    /// [`Cluster::new`] for `nodes` of `system`, the first `members` of them the cluster's
    /// first members and each later one a node that joins them.
    pub(crate) fn of_system(
        system: &'static str,
        nodes: usize,
        members: usize,
        keep_data: bool,
    ) -> std::io::Result<Cluster> {
        let dir = fresh_dir()?;
        let watchdog = match start_watchdog(&dir, keep_data) {
            Ok(w) => Some(w),
            Err(e) => {
                eprintln!(
                    "synod demo: no watchdog (/bin/sh: {e}); if the demo is interrupted, remove {} by hand",
                    dir.display()
                );
                None
            }
        };
        let password = random_hex(24)?;
        write_secret(&dir.join(PASSWORD_FILE), &password)?;
        write_secret(&dir.join(PEER_SECRET_FILE), &random_hex(32)?)?;
        // The demo's own clients (the workload, the checks) authenticate with it.
        crate::resp::client::set_program_credentials(crate::resp::client::Credentials {
            user: None,
            password: password.clone().into_bytes(),
        });
        let mut cluster = Cluster {
            dir,
            keep_data,
            peers: String::new(),
            peer_addrs: Vec::new(),
            client_addrs: Vec::new(),
            children: (0..nodes).map(|_| None).collect(),
            watchdog,
            password: password.into_bytes(),
            system,
            members,
        };
        cluster.pick_ports()?;
        Ok(cluster)
    }

    /// Picks new free ports for every node (before any runs).
    pub(crate) fn pick_ports(&mut self) -> std::io::Result<()> {
        let n = self.children.len();
        self.peer_addrs = (0..n).map(|_| free_addr()).collect::<Result<_, _>>()?;
        self.client_addrs = (0..n).map(|_| free_addr()).collect::<Result<_, _>>()?;
        self.peers = self
            .peer_addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        Ok(())
    }

    /// The temporary directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Node ids, 1 to n.
    pub(crate) fn ids(&self) -> Vec<usize> {
        (1..=self.children.len()).collect()
    }

    /// Node `id`'s RESP address.
    pub(crate) fn client_addr(&self, id: usize) -> SocketAddr {
        self.client_addrs[id - 1]
    }

    /// Node `id`'s peer address.
    pub(crate) fn peer_addr(&self, id: usize) -> SocketAddr {
        self.peer_addrs[id - 1]
    }

    /// Every node's RESP address.
    pub(crate) fn client_addrs(&self) -> Vec<String> {
        self.client_addrs.iter().map(ToString::to_string).collect()
    }

    fn log_path(&self, id: usize) -> PathBuf {
        self.dir.join(format!("node{id}.log"))
    }

    /// Node `id`'s process id, if it runs.
    pub(crate) fn pid(&self, id: usize) -> Option<u32> {
        self.children[id - 1].as_ref().map(Child::id)
    }

    fn write_pids(&self) {
        let pids: String = self
            .children
            .iter()
            .flatten()
            .map(|c| format!("{} ", c.id()))
            .collect();
        // The watchdog's list; if it cannot be written, the watchdog kills nothing.
        let _ = std::fs::write(self.dir.join("pids"), pids);
    }

    /// Starts node `id` (again, on its data directory, if it ran before).
    pub(crate) fn start(&mut self, id: usize) -> std::io::Result<()> {
        let exe = std::env::current_exe()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))?;
        let peers = if self.members == self.children.len() {
            self.peers.clone()
        } else {
            // The first members know each other; a later node knows them and itself.
            let known = self.members.max(id);
            self.peer_addrs[..known]
                .iter()
                .enumerate()
                .map(|(i, a)| format!("{}={a}", i + 1))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut command = Command::new(exe);
        command
            .arg("node")
            .args(["--system", self.system])
            .args(["--id", &id.to_string()])
            .args(["--listen", &self.peer_addr(id).to_string()])
            .args(["--client", &self.client_addr(id).to_string()])
            .args(["--peers", &peers]);
        if self.members != self.children.len() {
            command.args(["--cluster", "synod-demo"]);
        }
        let child = command
            .arg("--data-dir")
            .arg(self.dir.join(format!("node{id}")))
            .arg("--password-file")
            .arg(self.dir.join(PASSWORD_FILE))
            .arg("--peer-secret-file")
            .arg(self.dir.join(PEER_SECRET_FILE))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.children[id - 1] = Some(child);
        self.write_pids();
        Ok(())
    }

    /// SIGKILLs node `id` and waits for it to be gone.
    pub(crate) fn kill(&mut self, id: usize) {
        if let Some(mut child) = self.children[id - 1].take() {
            // Fails only if it already exited; it is reaped either way.
            let _ = child.kill();
            let _ = child.wait();
        }
        self.write_pids();
    }

    /// Sends node `id` the signal `name` (`STOP`, `CONT`) with `kill`: whether it was sent.
    pub(crate) fn signal(&self, id: usize, name: &str) -> bool {
        let Some(pid) = self.pid(id) else {
            return false;
        };
        Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Node `id`'s INFO text, or `None` if it does not answer within a fraction of a second.
    pub(crate) fn info_text(&self, id: usize) -> Option<String> {
        self.children[id - 1].as_ref()?;
        info_text(self.client_addr(id), &self.password)
    }

    /// A node that exited on its own, with its exit status, if any did.
    pub(crate) fn exited(&mut self) -> Option<(usize, String)> {
        for (i, slot) in self.children.iter_mut().enumerate() {
            if let Some(child) = slot
                && let Ok(Some(status)) = child.try_wait()
            {
                *slot = None;
                return Some((i + 1, status.to_string()));
            }
        }
        None
    }

    /// Node `id`'s INFO, or `None` if it does not answer within a fraction of a second.
    pub(crate) fn info(&self, id: usize) -> Option<NodeInfo> {
        self.children[id - 1].as_ref()?;
        let text = info_text(self.client_addr(id), &self.password)?;
        let field = |name: &str| {
            text.lines()
                .filter_map(|l| l.trim().split_once(':'))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let number = |name: &str| field(name)?.parse::<u64>().ok();
        Some(NodeInfo {
            leader: field("role")? == "leader",
            term: number("term")?,
            commit: number("commit_index")?,
            applied: number("applied_index")?,
        })
    }

    /// The running node that says it leads in the highest term, with what it says.
    pub(crate) fn leader(&self) -> Option<(usize, NodeInfo)> {
        self.ids()
            .into_iter()
            .filter_map(|id| Some((id, self.info(id)?)))
            .filter(|(_, info)| info.leader)
            .max_by_key(|(_, info)| info.term)
    }

    /// The last lines of every node's log, for a failure report.
    pub(crate) fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for id in self.ids() {
            let text = std::fs::read_to_string(self.log_path(id)).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let _ = writeln!(out, "--- node {id} ({})", self.log_path(id).display());
            for line in &all[all.len().saturating_sub(lines)..] {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }

    /// Kills every node and removes the directory unless it is kept; tells the watchdog
    /// it has nothing left to do. Returns the directory if kept.
    pub(crate) fn shut_down(&mut self) -> Option<PathBuf> {
        for id in self.ids() {
            self.kill(id);
        }
        let kept = if self.keep_data {
            Some(self.dir.clone())
        } else {
            if let Err(e) = std::fs::remove_dir_all(&self.dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                eprintln!("synod demo: could not remove {}: {e}", self.dir.display());
            }
            None
        };
        if let Some((mut child, mut stdin)) = self.watchdog.take() {
            // If the watchdog is gone already, there is nothing to tell it.
            let _ = stdin.write_all(b"done\n");
            drop(stdin);
            let _ = child.wait();
        }
        kept
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.watchdog.is_some() || self.children.iter().any(Option::is_some) {
            self.shut_down();
        }
    }
}

/// One INFO request on a fresh connection, with short timeouts: a dead node is reported
/// at once, not after a client's retries.
fn info_text(addr: SocketAddr, password: &[u8]) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    let mut request = crate::resp::client::encode_command(&[b"AUTH", password]);
    request.extend(crate::resp::client::encode_command(&[b"INFO"]));
    stream.write_all(&request).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let limits = Limits::default();
    let mut authenticated = false;
    loop {
        match Value::parse(&buf, &limits) {
            Ok(Some((Value::Simple(_), used))) if !authenticated => {
                authenticated = true;
                buf.drain(..used);
                continue;
            }
            Ok(Some((Value::Bulk(text), _))) if authenticated => {
                return String::from_utf8(text).ok();
            }
            Ok(Some(_)) | Err(_) => return None,
            Ok(None) => {}
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
