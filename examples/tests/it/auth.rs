//! Authentication end to end, through real `synod node` processes: a client that has not
//! authenticated can do nothing but authenticate (`NOAUTH`), a wrong password is refused
//! (`WRONGPASS`) and slowed, a read-only user cannot write (`NOPERM`), a connection that
//! never authenticates is closed, `redis-cli -a` and `--user/--pass` work; ten thousand
//! unauthenticated connections are all closed while an authenticated client is served; a
//! peer without the cluster's secret is refused, and the vote, snapshot and request it
//! sends change nothing. No test asserts a time: reads wait on conditions with
//! deadlines.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use synod_consensus::{LogIndex, Membership, Message, MessageBody, NodeId, SnapshotMeta, Term};
use synod_examples::resp::client::encode_command;
use synod_examples::resp::{Limits, Value};
use synod_examples::runtime::CLIENT_CONNECTIONS_MAX;
use synod_examples::runtime::auth::{AUTH_FAILURES_MAX, PeerSecret};
use synod_examples::runtime::peers::transport_builder;
use synod_examples::runtime::refusals::REFUSAL_LINES_PER_INTERVAL_MAX;
use synod_transport::TcpTransport;

use crate::core_cluster::{Cluster, DEADLINE, TEST_PASSWORD, TEST_READER, TEST_WRITER, number};

/// A read timeout that only a hung node reaches.
const HUNG: Duration = Duration::from_secs(60);

fn connect(cluster: &Cluster) -> TcpStream {
    let stream = TcpStream::connect(cluster.addr(1)).expect("connect");
    stream.set_read_timeout(Some(HUNG)).expect("timeout");
    stream
}

/// Sends one command.
fn send(stream: &mut TcpStream, args: &[&str]) {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    stream.write_all(&encode_command(&args)).expect("sent");
}

/// The next reply, or `None` once the node closed the connection.
fn reply(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Value> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Ok(Some((value, used))) = Value::parse(buf, &Limits::default()) {
            buf.drain(..used);
            return Some(value);
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn call(stream: &mut TcpStream, buf: &mut Vec<u8>, args: &[&str]) -> Value {
    send(stream, args);
    reply(stream, buf).expect("a reply")
}

fn error(text: &str) -> Value {
    Value::Error(text.into())
}

fn ok() -> Value {
    Value::Simple("OK".into())
}

const NOAUTH: &str = "NOAUTH Authentication required.";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

#[test]
fn a_client_must_authenticate_a_wrong_password_is_refused_and_a_reader_cannot_write() {
    // Long enough for a guesser's five held-back failures (100 ms doubling: 3.1 s).
    let (cluster, _) = Cluster::up_secured(1, &["--auth-timeout-ms", "4000"]);
    let mut buf = Vec::new();
    // Opened first, so that its deadline runs while the rest of the test does.
    let mut silent = connect(&cluster);

    // Before authenticating: every command but AUTH, HELLO's AUTH, PING and QUIT is refused.
    let mut s = connect(&cluster);
    for command in [
        &["GET", "k"][..],
        &["SET", "k", "v"],
        &["INFO"],
        &["DEL", "k"],
    ] {
        assert_eq!(
            call(&mut s, &mut buf, command),
            error(NOAUTH),
            "{command:?}"
        );
    }
    assert_eq!(
        call(&mut s, &mut buf, &["PING"]),
        Value::Simple("PONG".into())
    );
    let Value::Error(hello) = call(&mut s, &mut buf, &["HELLO", "3"]) else {
        panic!("HELLO without AUTH answered")
    };
    assert!(hello.starts_with("NOAUTH"), "{hello}");
    // A wrong password, a wrong user: WRONGPASS. Whatever follows a failed AUTH is answered
    // after it, once its held-back reply is out.
    send(&mut s, &["AUTH", "not-the-password"]);
    send(&mut s, &["PING"]);
    assert_eq!(reply(&mut s, &mut buf), Some(error(WRONGPASS)));
    assert_eq!(reply(&mut s, &mut buf), Some(Value::Simple("PONG".into())));
    assert_eq!(
        call(&mut s, &mut buf, &["AUTH", "nobody", TEST_PASSWORD]),
        error(WRONGPASS)
    );
    // The read-only user reads and cannot write.
    assert_eq!(
        call(&mut s, &mut buf, &["AUTH", TEST_READER.0, TEST_READER.1]),
        ok()
    );
    assert_eq!(call(&mut s, &mut buf, &["GET", "k"]), Value::Nil);
    for (command, name) in [
        (&["SET", "k", "v"][..], "set"),
        (&["INCR", "n"], "incr"),
        (&["LEASE", "GRANT", "5000"], "lease"),
    ] {
        assert_eq!(
            call(&mut s, &mut buf, command),
            error(&format!(
                "NOPERM User reader has no permissions to run the '{name}' command"
            ))
        );
    }
    // The read-write user writes; the reader sees it.
    let mut w = connect(&cluster);
    let mut wbuf = Vec::new();
    assert_eq!(
        call(&mut w, &mut wbuf, &["AUTH", TEST_WRITER.0, TEST_WRITER.1]),
        ok()
    );
    assert_eq!(call(&mut w, &mut wbuf, &["SET", "k", "v"]), ok());
    assert_eq!(
        call(&mut s, &mut buf, &["GET", "k"]),
        Value::Bulk(b"v".to_vec())
    );
    // HELLO 3 AUTH authenticates and switches to RESP3 at once; AUTH password is the
    // default user.
    let mut h = connect(&cluster);
    let mut hbuf = Vec::new();
    let answer = call(
        &mut h,
        &mut hbuf,
        &["HELLO", "3", "AUTH", TEST_WRITER.0, TEST_WRITER.1],
    );
    assert!(matches!(answer, Value::Map(_)), "{answer:?}");
    assert_eq!(
        call(&mut h, &mut hbuf, &["GET", "k"]),
        Value::Bulk(b"v".to_vec())
    );
    let mut d = connect(&cluster);
    let mut dbuf = Vec::new();
    assert_eq!(call(&mut d, &mut dbuf, &["AUTH", TEST_PASSWORD]), ok());
    assert_eq!(call(&mut d, &mut dbuf, &["INCR", "n"]), Value::Int(1));

    // One that keeps failing is closed after its last failure's reply.
    let mut guesser = connect(&cluster);
    let mut gbuf = Vec::new();
    for _ in 0..AUTH_FAILURES_MAX {
        send(&mut guesser, &["AUTH", "guess"]);
    }
    for _ in 0..AUTH_FAILURES_MAX {
        assert_eq!(reply(&mut guesser, &mut gbuf), Some(error(WRONGPASS)));
    }
    assert_eq!(
        reply(&mut guesser, &mut gbuf),
        None,
        "open after the last failure"
    );
    // One that sends more than a few KiB without authenticating is closed (PINGs are
    // allowed, and answered, until then).
    let mut chatty = connect(&cluster);
    let pings = b"PING\r\n".repeat(4000);
    let _ = chatty.write_all(&pings);
    let mut answered = 0;
    let mut cbuf = Vec::new();
    while let Some(value) = reply(&mut chatty, &mut cbuf) {
        assert_eq!(value, Value::Simple("PONG".into()));
        answered += 1;
    }
    assert!(
        answered < 4000,
        "all {answered} PINGs answered: no byte budget"
    );
    // A connection that never authenticates is closed after the deadline.
    assert!(
        crate::register_cluster::closed(&mut silent),
        "left open without authenticating"
    );
    // The authenticated connections were not touched by any of it.
    assert_eq!(
        call(&mut w, &mut wbuf, &["GET", "n"]),
        Value::Bulk(b"1".to_vec())
    );

    // redis-cli, as a user would run it (installed by .ci; skipped where it is not).
    let Ok(version) = Command::new("redis-cli").arg("--version").output() else {
        println!("redis-cli is not installed: its part is not run");
        return;
    };
    println!("{}", String::from_utf8_lossy(&version.stdout).trim());
    let port = cluster
        .addr(1)
        .rsplit_once(':')
        .expect("port")
        .1
        .to_string();
    let redis = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port, "--no-auth-warning"])
            .args(args)
            .output()
            .expect("redis-cli runs");
        // redis-cli reports a refused AUTH on standard error, a command's reply on output.
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        text.trim().to_string()
    };
    assert_eq!(redis(&["-a", TEST_PASSWORD, "SET", "r", "1"]), "OK");
    assert_eq!(
        redis(&["--user", TEST_READER.0, "--pass", TEST_READER.1, "GET", "r"]),
        "1"
    );
    assert!(
        redis(&[
            "--user",
            TEST_READER.0,
            "--pass",
            TEST_READER.1,
            "SET",
            "r",
            "2"
        ])
        .contains("NOPERM"),
    );
    assert!(redis(&["-a", "wrong", "GET", "r"]).contains("WRONGPASS"));
    assert!(redis(&["GET", "r"]).contains("NOAUTH"));
}

/// The soft limit on this process's open files (`/proc/self/limits`).
fn open_files_max() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("limits");
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .unwrap_or(u64::MAX)
}

#[test]
fn ten_thousand_unauthenticated_connections_are_all_refused_and_closed_while_a_client_is_served() {
    // With the authenticated probe, the node's whole connection limit.
    let strangers = CLIENT_CONNECTIONS_MAX - 1;
    let needed = strangers as u64 + 256;
    if open_files_max() < needed {
        println!(
            "not run: this process may open {} files, the test needs {needed} (raise `ulimit -n`)",
            open_files_max()
        );
        return;
    }
    let (cluster, _) = Cluster::up_secured(1, &["--auth-timeout-ms", "2000"]);
    let mut probe = connect(&cluster);
    let mut pbuf = Vec::new();
    assert_eq!(call(&mut probe, &mut pbuf, &["AUTH", TEST_PASSWORD]), ok());
    // Every stranger sends a wrong password: each reply is held back on the node's timer.
    let flood = Instant::now();
    let mut streams = Vec::with_capacity(strangers);
    let wrong = encode_command(&[b"AUTH", b"guess"]);
    while streams.len() < strangers {
        let mut stream = connect(&cluster);
        stream.write_all(&wrong).expect("AUTH sent");
        streams.push(stream);
    }
    // Meanwhile the authenticated client is served, for writes and reads.
    assert_eq!(call(&mut probe, &mut pbuf, &["SET", "served", "yes"]), ok());
    assert_eq!(
        call(&mut probe, &mut pbuf, &["GET", "served"]),
        Value::Bulk(b"yes".to_vec())
    );
    // Each stranger is refused, and then closed at its deadline: none is held open.
    for (i, stream) in streams.iter_mut().enumerate() {
        let mut buf = Vec::new();
        assert_eq!(
            reply(stream, &mut buf),
            Some(error(WRONGPASS)),
            "stranger {i}"
        );
        assert!(
            crate::register_cluster::closed(stream),
            "stranger {i} left open"
        );
    }
    drop(streams);
    // The probe is still served, and new clients get in: the strangers left nothing behind.
    assert_eq!(
        call(&mut probe, &mut pbuf, &["GET", "served"]),
        Value::Bulk(b"yes".to_vec())
    );
    let mut late = connect(&cluster);
    let mut lbuf = Vec::new();
    assert_eq!(call(&mut late, &mut lbuf, &["AUTH", TEST_PASSWORD]), ok());
    // The failures are logged, at most REFUSAL_LINES_PER_INTERVAL_MAX lines a second, not a
    // line each.
    let seconds = flood.elapsed().as_secs() + 1;
    let logs = cluster.logs();
    let lines = logs.matches("wrong password for user 'default'").count() as u64;
    assert!(lines > 0, "failures are logged");
    assert!(
        lines <= u64::from(REFUSAL_LINES_PER_INTERVAL_MAX) * (seconds + 1),
        "{lines} lines for {strangers} failures in {seconds} s"
    );
    // The ones not logged are counted in a later line, though no failure comes after the
    // flood to carry the count: every failure is written or counted.
    let told = |logs: &str| {
        logs.lines()
            .filter(|l| l.contains("wrong password for user 'default'"))
            .map(|l| {
                1 + l
                    .split("[and ")
                    .nth(1)
                    .and_then(|rest| rest.split(' ').next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum::<u64>()
    };
    let deadline = Instant::now() + DEADLINE;
    while told(&cluster.logs()) < strangers as u64 {
        assert!(
            Instant::now() < deadline,
            "{} of {strangers} failures written or counted",
            told(&cluster.logs())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs = cluster.logs();
    assert_eq!(told(&logs), strangers as u64, "every failure told once");
    assert!(!logs.contains("panicked"), "{logs}");
}

#[test]
fn a_peer_without_the_cluster_secret_is_refused_and_its_vote_snapshot_and_request_change_nothing() {
    let (cluster, leader) = Cluster::up_secured(3, &[]);
    let mut client = cluster.client(leader);
    client.register().expect("session");
    assert_eq!(client.call(&[b"SET", b"k", b"before"]).expect("SET"), ok());
    let term = number(&cluster, 1, "term");

    // Intruders dial node 1 as node 3 (a member's id): one with another secret, one with
    // none. Each sends a vote for a far later term, a snapshot chunk of that term, and a
    // request (which a member's would be answered).
    let huge = Term::new(term + 1000);
    let vote = Message {
        from: NodeId::new(3),
        to: NodeId::new(1),
        term: huge,
        body: MessageBody::Vote {
            last_index: LogIndex(u64::MAX >> 1),
            last_term: huge,
            transfer: true,
        },
    };
    let snapshot = Message {
        from: NodeId::new(3),
        to: NodeId::new(1),
        term: huge,
        body: MessageBody::Snapshot {
            meta: SnapshotMeta {
                index: LogIndex(1 << 40),
                term: huge,
                membership: Membership::new([NodeId::new(3)], []).expect("a voter"),
            },
            offset: 0,
            data: Bytes::from_static(b"not a snapshot"),
            done: true,
        },
    };
    let wrong = Arc::new(PeerSecret::new(b"another-cluster-secret-0123456789", 3).expect("long"));
    let config = |secret: Option<Arc<PeerSecret>>| {
        let builder = transport_builder(cluster_id(&cluster), 3, 1 << 20);
        match secret {
            Some(s) => builder.authenticator(s),
            None => builder,
        }
        .build()
        .expect("valid")
    };
    for (what, intruder) in [
        ("another secret", config(Some(wrong))),
        ("no secret", config(None)),
    ] {
        let intruder = TcpTransport::bind(intruder, "127.0.0.1:0").expect("bind");
        let to = NodeId::new(1);
        intruder.add_peer(to, cluster.listen_addr(1).parse().expect("address"));
        let _ = intruder.send(to, Bytes::from(vote.encode()));
        let _ = intruder.send(to, Bytes::from(snapshot.encode()));
        let forwarded = intruder
            .request(to, Bytes::from_static(b"\x00garbage"), DEADLINE)
            .expect("queued")
            .wait();
        assert!(forwarded.is_err(), "{what}: the intruder got an answer");
        // Node 1 logs the refusal with the intruder's address.
        let deadline = Instant::now() + DEADLINE;
        loop {
            let logs = cluster.logs();
            let logged = logs.lines().any(|l| {
                l.contains("refused a connection from 127.0.0.1:")
                    && l.contains("claiming to be node 3")
                    && (what == "another secret" || l.contains("requires peers to prove"))
            });
            if logged {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the refusal is not logged\n{logs}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            intruder.stats().connections_established == 0,
            "{what}: a connection was established"
        );
    }
    // Nothing changed: the term is the cluster's own, the key its own, and the cluster
    // serves on.
    let after = number(&cluster, 1, "term");
    assert!(
        after < term + 1000,
        "the vote raised node 1's term to {after}"
    );
    assert_eq!(client.call(&[b"SET", b"k", b"after"]).expect("SET"), ok());
    let mut reader = cluster.client(1);
    assert_eq!(
        reader.call(&[b"GET", b"k"]).expect("GET"),
        Value::Bulk(b"after".to_vec())
    );
    let deadline = Instant::now() + DEADLINE;
    while number(&cluster, 1, "term") != number(&cluster, leader, "term") {
        assert!(Instant::now() < deadline, "node 1 left the cluster's term");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The cluster id the nodes derive from their member list (as `synod node` does).
fn cluster_id(cluster: &Cluster) -> u64 {
    let peers = (1..=3)
        .map(|id| format!("{id}={}", cluster.listen_addr(id)))
        .collect::<Vec<_>>()
        .join(",");
    synod_examples::runtime::NodeOptions::new(
        1,
        &cluster.listen_addr(1),
        Some(&cluster.addr(1)),
        &peers,
        cluster.dir(),
    )
    .expect("options")
    .cluster_id()
}
