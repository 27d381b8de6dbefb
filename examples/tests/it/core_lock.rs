//! The lock recipe between real processes: `synod kv lock` holders against a three-node
//! Consistent Core cluster. A holder paused with SIGSTOP past its lease's TTL loses the lock
//! to a second holder, the paused holder's fenced write (its old token) is refused, and,
//! resumed, it finds its lease gone and exits with an error; the second holder releases
//! when its standard input closes. Holders release on SIGINT (Ctrl-C) and SIGTERM: one
//! holding the lock, and one waiting for it (its lease revoked, so the lock key never comes
//! to it). Every wait polls a condition against a deadline.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use synod_examples::consistent_core::client::Client;
use synod_examples::resp::Value;

use crate::core_cluster::{Cluster, DEADLINE, TEST_PASSWORD};

/// A `synod kv lock` process and its output.
struct Holder {
    child: Child,
    out: BufReader<ChildStdout>,
    /// Its standard error so far (read by a thread, so a full pipe never blocks it).
    err: Arc<Mutex<String>>,
}

impl Holder {
    fn start(addr: &str, name: &str, ttl_ms: u64) -> Holder {
        let mut child = Command::new(env!("CARGO_BIN_EXE_synod"))
            .env("SYNOD_PASSWORD", TEST_PASSWORD)
            .args(["kv", "--addr", addr, "lock", name, &ttl_ms.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("synod kv lock starts");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let err = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&err);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 1024];
            while let Ok(n @ 1..) = stderr.read(&mut chunk) {
                let text = String::from_utf8_lossy(&chunk[..n]);
                sink.lock().expect("not poisoned").push_str(&text);
            }
        });
        Holder { child, out, err }
    }

    /// What it wrote to its standard error so far.
    fn stderr(&self) -> String {
        self.err.lock().expect("not poisoned").clone()
    }

    /// The fencing token it prints once it holds the lock.
    fn token(&mut self) -> u64 {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("reads its output");
        line.trim()
            .strip_prefix("token ")
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "not a token line: {line:?}; its standard error: {:?}",
                    self.stderr()
                )
            })
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for it to exit; its exit code.
    fn wait(&mut self) -> Option<i32> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("waits") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the holder never exited; its standard error: {:?}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for it to exit and fails unless its exit code is `code`, saying what it wrote
    /// to its standard error and what each node reports.
    fn exits_with(&mut self, code: i32, cluster: &Cluster) {
        let exit = self.wait();
        assert_eq!(
            exit,
            Some(code),
            "exit {exit:?} (None: ended by a signal); its standard error: {:?}\n{}{}",
            self.stderr(),
            cluster.infos(),
            cluster.logs()
        );
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fenced_set(client: &mut Client, token: u64, value: &str) -> Value {
    let token = token.to_string();
    client
        .call(&[
            b"SET",
            b"data",
            value.as_bytes(),
            b"FENCE",
            b"lock/job",
            token.as_bytes(),
        ])
        .expect("answered")
}

#[test]
fn a_holder_paused_past_its_ttl_loses_the_lock_and_its_fenced_write_is_refused() {
    let (cluster, _leader) = Cluster::up_secured(3, &[]);
    let addrs: Vec<String> = (1..=3).map(|id| cluster.addr(id)).collect();
    let mut client = cluster
        .client_of(&addrs)
        .with_timeout(Duration::from_secs(20));
    // The shortest TTL the cluster grants: 1.5 election timeouts (20 ticks of 50 ms).
    let mut first = Holder::start(&addrs[0], "job", 1_500);
    let token = first.token();
    assert_eq!(
        fenced_set(&mut client, token, "one"),
        Value::Simple("OK".into())
    );

    // Paused: it cannot keep its lease alive. A second holder waits for the lock.
    first.signal("STOP");
    let mut second = Holder::start(&addrs[1], "job", 1_500);
    let newer = second.token();
    assert!(newer > token, "token {newer} after {token}");

    // The paused holder's write, with its old token, is refused; the new holder's is not.
    let stale = fenced_set(&mut client, token, "stale");
    assert!(
        matches!(&stale, Value::Error(e) if e.starts_with("FENCED")),
        "{stale:?}"
    );
    assert_eq!(
        fenced_set(&mut client, newer, "two"),
        Value::Simple("OK".into())
    );
    assert_eq!(
        client.call(&[b"GET", b"data"]).expect("answered"),
        Value::Bulk(b"two".to_vec())
    );

    // Resumed, the first holder finds its lease expired and exits with an error.
    first.signal("CONT");
    first.exits_with(1, &cluster);

    // The second releases when its standard input closes: the lock key goes at once.
    drop(second.child.stdin.take());
    second.exits_with(0, &cluster);
    assert_eq!(
        client.call(&[b"EXISTS", b"lock/job"]).expect("answered"),
        Value::Int(0)
    );
}

/// The lease ids a `LEASE TTL` of each id up to `max` finds held (time left, `>= 0`), not
/// those it finds gone (`-2`). Any other answer (an error, none) fails the test, so that
/// it is never taken for a lease held, nor for one gone.
fn held_leases(client: &mut Client, max: i64, cluster: &Cluster) -> Vec<i64> {
    (1..=max)
        .filter(|id| {
            let arg = id.to_string();
            match client.call(&[b"LEASE", b"TTL", arg.as_bytes()]) {
                Ok(Value::Int(-2)) => false,
                Ok(Value::Int(ttl)) if ttl >= 0 => true,
                other => panic!(
                    "LEASE TTL {id} answered {other:?}\n{}{}",
                    cluster.infos(),
                    cluster.logs()
                ),
            }
        })
        .collect()
}

#[test]
fn a_holder_releases_its_lock_on_sigint_and_a_waiter_its_lease_on_sigterm() {
    let (cluster, _leader) = Cluster::up_secured(3, &[]);
    let addrs: Vec<String> = (1..=3).map(|id| cluster.addr(id)).collect();
    let mut client = cluster
        .client_of(&addrs)
        .with_timeout(Duration::from_secs(20));
    // A TTL of a minute: a lock that goes within the test went because it was released.
    let mut holder = Holder::start(&addrs[0], "job", 60_000);
    let token = holder.token();
    // A second holder waits for the lock; its lease is granted before it first tries.
    let mut waiter = Holder::start(&addrs[1], "job", 60_000);
    let deadline = Instant::now() + DEADLINE;
    while held_leases(&mut client, 4, &cluster).len() < 2 {
        assert!(Instant::now() < deadline, "the waiter never took a lease");
        std::thread::sleep(Duration::from_millis(20));
    }

    // SIGTERM to the waiter: it revokes its lease and exits 0, never holding the lock.
    waiter.signal("TERM");
    waiter.exits_with(0, &cluster);
    assert_eq!(
        held_leases(&mut client, 4, &cluster),
        [1],
        "the waiter's lease is gone, the holder's is not"
    );

    // Ctrl-C to the holder: it revokes its lease, so the lock key goes before it exits 0.
    holder.signal("INT");
    holder.exits_with(0, &cluster);
    assert_eq!(
        client.call(&[b"EXISTS", b"lock/job"]).expect("answered"),
        Value::Int(0),
        "the lock (token {token}) was not released"
    );
    assert_eq!(held_leases(&mut client, 4, &cluster), [0_i64; 0]);
}
