//! The Consistent Core's limits, end to end through real `synod node` processes: the
//! largest command the client protocol takes is replicated like any other (through the
//! leader and through a follower that forwards it), and a command over the limit is
//! refused with the same error on every node. Every wait polls a condition against a
//! deadline.

use std::time::{Duration, Instant};

use synod_examples::consistent_core::client::Client;
use synod_examples::consistent_core::resp::{Limits, Value};

use super::core_cluster::{Cluster, DEADLINE};

/// INFO field `name` of node `id` as a number (0 while it does not answer).
fn number(cluster: &Cluster, id: usize, name: &str) -> u64 {
    cluster
        .field(id, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Polls until node `id` has applied index `index`.
fn wait_applied(cluster: &Cluster, id: usize, index: u64) {
    let deadline = Instant::now() + DEADLINE;
    while number(cluster, id, "applied_index") < index {
        assert!(
            Instant::now() < deadline,
            "node {id} never applied index {index}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn client(cluster: &Cluster, id: usize) -> Client {
    Client::new(&[cluster.addr(id)]).with_timeout(Duration::from_secs(20))
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
    let (cluster, leader) = Cluster::up(3);
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
