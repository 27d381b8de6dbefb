//! The Consistent Core's limits, end to end through real `synod node` processes: the
//! largest command the client protocol takes is replicated like any other (through the
//! leader and through a follower that forwards it), and a command over the limit is
//! refused with the same error on every node; a client pipelining large reads without
//! reading the replies costs the node about one reply of memory, not all of them (its peak
//! resident memory is read from `/proc`); `synod kv` without an address is a usage error.
//! Every wait polls a condition against a deadline.

use std::time::Duration;

use synod_examples::consistent_core::client::Client;
use synod_examples::resp::client::encode_command;
use synod_examples::resp::{Limits, Value};

use super::core_cluster::{Cluster, TEST_PASSWORD, number, wait_applied};

fn client(cluster: &Cluster, id: usize) -> Client {
    cluster
        .client_of(&[cluster.addr(id)])
        .with_timeout(Duration::from_secs(20))
}

#[test]
fn a_value_as_large_as_the_client_protocol_takes_reaches_every_node() {
    // RESP takes bulk strings of up to `bulk_bytes_max` (1 MiB): a SET of such a value,
    // once encoded for the log, is a little over 1 MiB, under the 2 MiB command limit.
    let big = Limits::default().bulk_bytes_max;
    let value = |tag: u8| {
        let mut v = vec![b'v'; big];
        v[0] = tag;
        v
    };
    let (cluster, leader) = Cluster::up_secured(3, &[]);
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    for (through, key, tag) in [(leader, "big-1", b'1'), (follower, "big-2", b'2')] {
        let reply = client(&cluster, through)
            .call(&[b"SET", key.as_bytes(), &value(tag)])
            .expect("SET answered");
        assert_eq!(
            reply,
            Value::Simple("OK".into()),
            "SET {key} of {big} bytes through node {through}\n{}",
            cluster.logs()
        );
    }
    // A key and a value of 1 MiB each: over the command limit, refused alike everywhere.
    for through in [leader, follower] {
        let reply = client(&cluster, through)
            .call(&[b"SET", &value(b'k'), &value(b'x')])
            .expect("SET answered");
        assert!(
            matches!(&reply, Value::Error(e) if e.starts_with("ERR the command is too large")),
            "an oversize SET through node {through}: {reply:?}"
        );
    }
    // The cluster still commits ordinary writes after them.
    let reply = client(&cluster, follower)
        .call(&[b"SET", b"small", b"x"])
        .expect("SET answered");
    assert_eq!(reply, Value::Simple("OK".into()));
    let commit = number(&cluster, leader, "commit_index");
    for id in 1..=3 {
        wait_applied(&cluster, id, commit);
        let mut reader = client(&cluster, id);
        assert_eq!(
            reader.call(&[b"READONLY"]).expect("READONLY"),
            Value::Simple("OK".into())
        );
        for (key, tag) in [("big-1", b'1'), ("big-2", b'2')] {
            let got = reader.call(&[b"GET", key.as_bytes()]).expect("GET");
            assert!(
                got == Value::Bulk(value(tag)),
                "node {id} does not hold {key} whole"
            );
        }
    }
    println!("values of {big} bytes written through the leader and a follower: on every node");
}

/// The peak resident memory of process `pid`, in bytes (Linux's `VmHWM`).
fn peak_rss(pid: u32) -> u64 {
    memory(pid, "VmHWM")
}

/// The memory figure `field` (`VmRSS`, `VmHWM`...) of process `pid`, in bytes.
pub(crate) fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kib << 10
}

#[test]
fn a_client_pipelining_large_reads_without_reading_costs_the_node_about_one_reply() {
    use std::io::{Read, Write};
    const VALUE_BYTES: usize = 1 << 20;
    const KEYS_PER_MGET: usize = 24;
    const MGETS: usize = 24;
    let (cluster, _) = Cluster::up_secured(1, &[]);
    let pid = cluster.pid(1).expect("running");
    let reply = client(&cluster, 1)
        .call(&[b"SET", b"big", &vec![b'v'; VALUE_BYTES]])
        .expect("SET answered");
    assert_eq!(reply, Value::Simple("OK".into()));
    let before = peak_rss(pid);
    // 24 MGETs of 24 MiB each, pipelined in one write of a few KiB; the replies (576 MiB
    // in all) are read only once every command is sent.
    let mut mget = format!("*{}\r\n$4\r\nMGET\r\n", KEYS_PER_MGET + 1);
    for _ in 0..KEYS_PER_MGET {
        mget += "$3\r\nbig\r\n";
    }
    let mut stream = std::net::TcpStream::connect(cluster.addr(1)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    // Authenticated first, in the same write: its `+OK` comes before the replies.
    let auth = encode_command(&[b"AUTH", TEST_PASSWORD.as_bytes()]);
    stream
        .write_all(&[auth, mget.repeat(MGETS).into_bytes()].concat())
        .expect("pipelined");
    let one_reply = format!("*{KEYS_PER_MGET}\r\n").len()
        + KEYS_PER_MGET * (format!("${VALUE_BYTES}\r\n").len() + VALUE_BYTES + 2);
    let mut left = "+OK\r\n".len() + one_reply * MGETS;
    let mut chunk = vec![0u8; 1 << 20];
    while left > 0 {
        let n = match stream.read(&mut chunk) {
            // A read with a timeout returns EINTR when this process is stopped and resumed
            // (seen on a loaded machine): not the node's doing.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            read => read.expect("replies"),
        };
        assert!(
            n > 0,
            "the node closed the connection with {left} bytes unread"
        );
        left = left.saturating_sub(n);
    }
    let peak = peak_rss(pid);
    println!(
        "{MGETS} pipelined MGETs of {} MiB each: node's peak memory {} MiB, {} MiB before",
        one_reply >> 20,
        peak >> 20,
        before >> 20
    );
    assert!(
        peak < before + 8 * (one_reply as u64),
        "the node held {} MiB for replies of {} MiB each",
        (peak - before) >> 20,
        one_reply >> 20
    );
}

#[test]
fn synod_kv_without_an_address_is_a_usage_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(["kv", "--addr", ",", "get", "k"])
        .output()
        .expect("synod kv runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("give the address of at least one node"),
        "{err}"
    );
}
