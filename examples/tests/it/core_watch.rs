//! Watches between real processes: `synod kv watch` streams against a three-node
//! Consistent Core cluster of real `synod node` processes. Watchers attached to the leader
//! and to a follower keep printing while the leader is killed with SIGKILL and writes go on
//! through the others; each stream, once it has reached the last write, holds every change
//! the store made (read back with `GETREV`) exactly once, in revision order: no gap and no
//! duplicate across the resumption on another node. Every wait polls against a deadline.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use synod_examples::consistent_core::client::Client;
use synod_examples::resp::Value;

use crate::core_cluster::{Cluster, DEADLINE, TEST_PASSWORD};

/// A `synod kv watch` process, its output lines arriving on a channel.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Watcher {
    fn start(addrs: &[String], prefix: &str) -> Watcher {
        let mut child = Command::new(env!("CARGO_BIN_EXE_synod"))
            .env("SYNOD_PASSWORD", TEST_PASSWORD)
            .args([
                "kv",
                "--addr",
                &addrs.join(","),
                "watch",
                prefix,
                "--from",
                "1",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("synod kv watch starts");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Watcher {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits until it has printed a change at `revision` or later; everything it printed.
    fn until(&mut self, revision: u64) -> &[String] {
        let deadline = Instant::now() + DEADLINE;
        let reached = |seen: &[String]| {
            seen.last()
                .and_then(|l| l.split(' ').next())
                .and_then(|r| r.parse::<u64>().ok())
                .is_some_and(|r| r >= revision)
        };
        while !reached(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "the watcher never reached revision {revision}; it printed {:?}",
                    self.seen
                ),
            }
        }
        &self.seen
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(mod_revision, "revision set key value")` for a key as the store holds it now.
fn truth(client: &mut Client, key: &str) -> Option<(u64, String)> {
    match client.call(&[b"GETREV", key.as_bytes()]).expect("answered") {
        Value::Array(items) => match (&items[0], &items[2]) {
            (Value::Bulk(v), Value::Int(modified)) => {
                let modified = u64::try_from(*modified).expect("a revision");
                let line = format!("{modified} set {key} {}", String::from_utf8_lossy(v));
                Some((modified, line))
            }
            _ => None,
        },
        other => panic!("GETREV {key}: {other:?}"),
    }
}

#[test]
fn watchers_resume_on_another_node_with_no_gap_and_no_duplicate_across_a_leader_kill() {
    let (mut cluster, leader) = Cluster::up_secured(3, &[]);
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    let addrs = |first: usize| -> Vec<String> {
        std::iter::once(first)
            .chain((1..=3).filter(|&id| id != first))
            .map(|id| cluster.addr(id))
            .collect()
    };
    // One stream starts on the leader, one on a follower; both resume elsewhere.
    let mut on_leader = Watcher::start(&addrs(leader), "w/");
    let mut on_follower = Watcher::start(&addrs(follower), "w/");
    let mut client = cluster
        .client_of(&addrs(follower))
        .with_timeout(Duration::from_secs(20));
    client.register().expect("a session");
    let keys: Vec<String> = (0..60).map(|i| format!("w/{i:02}")).collect();
    let write = |client: &mut Client, key: &str| {
        // A write whose outcome is unknown is resent in its session: applied once.
        for _ in 0..20 {
            match client.call(&[b"SET", key.as_bytes(), b"v"]) {
                Ok(Value::Simple(ok)) if ok == "OK" => return,
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        panic!("{key} was never written");
    };
    for key in &keys[..30] {
        write(&mut client, key);
    }
    // Both have seen the first half before the leader goes.
    let (half, _) = truth(&mut client, &keys[29]).expect("written");
    on_leader.until(half);
    on_follower.until(half);
    cluster.kill(leader);
    // An unrelated key changes too: it is not the streams' business.
    write(&mut client, "other");
    for key in &keys[30..] {
        write(&mut client, key);
    }
    let expected: Vec<(u64, String)> = keys
        .iter()
        .map(|k| truth(&mut client, k).expect("written"))
        .collect();
    let last = expected.iter().map(|(r, _)| *r).max().expect("writes");
    let expected: Vec<String> = {
        let mut e = expected;
        e.sort();
        e.into_iter().map(|(_, line)| line).collect()
    };
    for (name, watcher) in [
        ("leader's", &mut on_leader),
        ("follower's", &mut on_follower),
    ] {
        let seen = watcher.until(last).to_vec();
        assert_eq!(
            seen, expected,
            "the stream first attached to the {name} node missed, repeated or reordered a change"
        );
    }
}
