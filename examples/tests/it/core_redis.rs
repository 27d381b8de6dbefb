//! Real Redis clients against a three-node Consistent Core cluster of real `synod node`
//! processes on loopback: `redis-cli` runs commands through every node (followers forward
//! writes and linearizable reads to the leader) and gets errors for what the store refuses;
//! `redis-benchmark` writes through a follower without an error; then what both wrote is
//! read back from every node with follower reads, once each node has applied everything the
//! leader committed, and every node answers the same. The nodes run secured (a client
//! password and the cluster's secret): each client authenticates, as a Redis client does
//! against `requirepass` (`REDISCLI_AUTH` for `redis-cli`, `-a` for `redis-benchmark`, the
//! library's `password`).
//!
//! The clients come from Debian's `redis-tools`. Without them on `PATH` the tests print a
//! notice and pass, so that a fresh checkout's `cargo test` works; CI sets
//! `SYNOD_REQUIRE_REDIS_TOOLS=1`, which turns their absence into a failure.

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::core_cluster::{Cluster, DEADLINE, TEST_PASSWORD};

/// Whether `redis-cli` and `redis-benchmark` can be run. Missing tools are a failure when
/// `SYNOD_REQUIRE_REDIS_TOOLS=1`, and a printed notice otherwise.
fn redis_tools_present(test: &str) -> bool {
    let missing: Vec<&str> = ["redis-cli", "redis-benchmark"]
        .into_iter()
        .filter(|tool| {
            Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_err()
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let required = std::env::var("SYNOD_REQUIRE_REDIS_TOOLS").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "{} not found on PATH and SYNOD_REQUIRE_REDIS_TOOLS=1: install redis-tools \
         (Debian/Ubuntu: `apt-get install -y redis-tools`)",
        missing.join(" and ")
    );
    // Straight to standard error, past the test harness's capture, so that it is seen.
    let _ = writeln!(
        std::io::stderr(),
        "NOTICE: {test} skipped: {} not found on PATH; install redis-tools \
         (Debian/Ubuntu: `apt-get install -y redis-tools`) to run it, or set \
         SYNOD_REQUIRE_REDIS_TOOLS=1 to make this a failure",
        missing.join(" and ")
    );
    false
}

/// A three-node cluster whose every node is up and answering on its own ports, secured, with
/// the leader's id (see [`Cluster::up_secured`] for the retry when a port is taken).
fn cluster() -> (Cluster, usize) {
    Cluster::up_secured(3, &[])
}

/// `redis-cli`, authenticating with the test password (from the environment, where `ps`
/// does not show it and `redis-cli` prints no warning about it).
fn redis_cli_command() -> Command {
    let mut command = Command::new("redis-cli");
    command.env("REDISCLI_AUTH", TEST_PASSWORD);
    command
}

/// Runs `command` with `input` on its standard input; kills it and fails the test if it
/// has not finished within [`DEADLINE`] (a client waiting on a stuck node would otherwise
/// hang the test).
fn run(mut command: Command, input: &str, cluster: &Cluster) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the client starts");
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = reader(Box::new(child.stdout.take().expect("stdout")));
    let stderr = reader(Box::new(child.stderr.take().expect("stderr")));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("input written");
    drop(stdin);
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} did not finish in {DEADLINE:?}\n{}",
                cluster.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// The client port of node `id`.
fn port(cluster: &Cluster, id: usize) -> String {
    let addr = cluster.addr(id);
    addr.rsplit_once(':').expect("host:port").1.to_string()
}

/// Runs `redis-cli` against node `id` with `args` (one command) or, when `args` is empty,
/// with `script` on its standard input (one command a line, all on one connection).
/// Returns its output, with error replies as `(error) ...` lines.
fn redis_cli(cluster: &Cluster, id: usize, args: &[&str], script: &str) -> String {
    let mut command = redis_cli_command();
    command
        .args(["-h", "127.0.0.1", "-p", &port(cluster, id), "--no-raw"])
        .args(args);
    let out = run(command, script, cluster);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("Could not connect"),
        "redis-cli {args:?} to node {id}: {stderr}"
    );
    // Error replies come as `(error) ...` on standard output, connection trouble on standard
    // error: both are part of what the test checks.
    format!("{}{stderr}", String::from_utf8_lossy(&out.stdout))
        .trim_end()
        .to_string()
}

/// One command through `redis-cli`.
fn cli(cluster: &Cluster, id: usize, args: &[&str]) -> String {
    redis_cli(cluster, id, args, "")
}

/// Polls INFO until every node's applied index reaches the leader's commit index.
fn wait_all_applied(cluster: &Cluster, leader: usize) -> u64 {
    let commit: u64 = cluster
        .field(leader, "commit_index")
        .and_then(|c| c.parse().ok())
        .expect("the leader reports its commit index");
    let deadline = Instant::now() + DEADLINE;
    for id in 1..=3 {
        loop {
            let applied: Option<u64> = cluster
                .field(id, "applied_index")
                .and_then(|a| a.parse().ok());
            if applied.is_some_and(|a| a >= commit) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} did not apply up to {commit} (at {applied:?})\n{}",
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    commit
}

/// The values of a `--no-raw` multi-line reply: `1) "a"` lines become `a`, `(nil)` stays.
fn items(reply: &str) -> Vec<String> {
    reply
        .lines()
        .map(|line| {
            let line = line.trim();
            let line = line.split_once(") ").map_or(line, |(n, rest)| {
                if n.chars().all(|c| c.is_ascii_digit()) {
                    rest
                } else {
                    line
                }
            });
            line.trim_matches('"').to_string()
        })
        .collect()
}

#[test]
fn redis_cli_commands_through_every_node_and_errors_for_what_is_refused() {
    if !redis_tools_present("redis_cli_commands_through_every_node_and_errors_for_what_is_refused")
    {
        return;
    }
    let (cluster, leader) = cluster();
    let followers: Vec<usize> = (1..=3).filter(|&id| id != leader).collect();
    let (f1, f2) = (followers[0], followers[1]);
    println!("leader node {leader}, followers {f1} and {f2}");

    assert_eq!(cli(&cluster, f1, &["PING"]), "PONG");
    // A write through a follower, read through the other follower and the leader.
    assert_eq!(cli(&cluster, f1, &["SET", "greeting", "hello"]), "OK");
    for id in [f2, leader, f1] {
        assert_eq!(cli(&cluster, id, &["GET", "greeting"]), "\"hello\"");
    }
    // INCR through each node in turn: one counter, three increments.
    for (n, id) in [f1, f2, leader].into_iter().enumerate() {
        assert_eq!(
            cli(&cluster, id, &["INCR", "visits"]),
            format!("(integer) {}", n + 1),
            "INCR through node {id}"
        );
    }
    assert_eq!(
        items(&cli(
            &cluster,
            f2,
            &["MGET", "greeting", "visits", "missing"]
        )),
        ["hello", "3", "(nil)"]
    );
    assert_eq!(
        cli(&cluster, f1, &["EXISTS", "greeting", "visits", "missing"]),
        "(integer) 2"
    );
    // Compare-and-set: written when the value matches, refused when it does not.
    assert_eq!(
        cli(&cluster, f2, &["CAS", "greeting", "hello", "world"]),
        "(integer) 1"
    );
    assert_eq!(
        cli(&cluster, f1, &["CAS", "greeting", "hello", "again"]),
        "(integer) 0"
    );
    assert_eq!(cli(&cluster, leader, &["GET", "greeting"]), "\"world\"");
    assert_eq!(
        cli(&cluster, f1, &["SET", "greeting", "x", "NX"]),
        "(nil)",
        "NX on a present key"
    );
    assert_eq!(cli(&cluster, f2, &["SET", "fresh", "y", "XX"]), "(nil)");
    // SCANPREFIX: by prefix, in key order, from every node.
    for (key, value) in [
        ("app/b", "2"),
        ("app/a", "1"),
        ("apple", "3"),
        ("other", "4"),
    ] {
        assert_eq!(cli(&cluster, f2, &["SET", key, value]), "OK");
    }
    for id in 1..=3 {
        assert_eq!(
            items(&cli(&cluster, id, &["SCANPREFIX", "app/"])),
            ["app/a", "1", "app/b", "2"],
            "SCANPREFIX app/ on node {id}"
        );
    }
    // DEL through a follower; the keys are gone everywhere.
    assert_eq!(
        cli(&cluster, f1, &["DEL", "greeting", "visits", "missing"]),
        "(integer) 2"
    );
    for id in 1..=3 {
        assert_eq!(cli(&cluster, id, &["GET", "greeting"]), "(nil)");
        assert_eq!(
            cli(&cluster, id, &["EXISTS", "greeting", "visits"]),
            "(integer) 0"
        );
    }

    // Refused commands: errors, and the connection goes on to answer the next command.
    let unknown = cli(&cluster, f1, &["FLUSHALL"]);
    assert!(
        unknown.contains("ERR unknown command 'flushall'"),
        "{unknown}"
    );
    let expiry = cli(&cluster, f2, &["SET", "k", "v", "EX", "0"]);
    assert!(expiry.contains("ERR invalid expire time"), "{expiry}");

    // Expiry: a key set with EX through a follower, its TTL read on every node; PERSIST
    // clears it; a key set with PX goes by itself.
    assert_eq!(cli(&cluster, f2, &["SET", "ttl", "v", "EX", "100"]), "OK");
    for id in 1..=3 {
        let ttl = cli(&cluster, id, &["TTL", "ttl"]);
        let secs: i64 = ttl
            .strip_prefix("(integer) ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("TTL answered {ttl}"));
        assert!((1..=100).contains(&secs), "TTL {secs}");
    }
    assert_eq!(cli(&cluster, f1, &["TTL", "missing"]), "(integer) -2");
    assert_eq!(cli(&cluster, f1, &["PERSIST", "ttl"]), "(integer) 1");
    assert_eq!(cli(&cluster, f1, &["TTL", "ttl"]), "(integer) -1");
    assert_eq!(cli(&cluster, f1, &["SET", "short", "v", "PX", "300"]), "OK");
    let deadline = Instant::now() + DEADLINE;
    while cli(&cluster, f2, &["EXISTS", "short"]) != "(integer) 0" {
        assert!(
            Instant::now() < deadline,
            "a key set with PX 300 never expired"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let session = redis_cli(
        &cluster,
        f1,
        &[],
        "FLUSHALL\nSET k v EX 0\nGET\nSET k v2\nGET k\n",
    );
    let lines: Vec<&str> = session.lines().collect();
    assert_eq!(lines.len(), 5, "{session}");
    assert!(
        session.contains("ERR unknown command 'flushall'")
            && session.contains("ERR invalid expire time")
            && session.contains("ERR wrong number of arguments for 'get' command"),
        "{session}"
    );
    assert!(
        lines.contains(&"OK") && lines.contains(&"\"v2\""),
        "{session}"
    );
    assert_eq!(
        cli(&cluster, leader, &["GET", "k"]),
        "\"v2\"",
        "the refused SET ... EX wrote nothing; the later SET did"
    );

    // Follower reads (READONLY) on every node once each has applied all that is committed.
    let commit = wait_all_applied(&cluster, leader);
    for id in 1..=3 {
        let reply = redis_cli(&cluster, id, &[], "READONLY\nMGET k app/a apple greeting\n");
        assert_eq!(
            items(&reply),
            ["OK", "v2", "1", "3", "(nil)"],
            "follower read on node {id}"
        );
    }
    let role = cli(&cluster, f1, &["INFO"]);
    assert!(role.contains("role:follower"), "{role}");
    println!("redis-cli: every command answered as expected on every node (commit index {commit})");
}

/// The requests each `redis-benchmark` test sends, and the key range it draws from.
const BENCH_REQUESTS: u64 = 2000;
const BENCH_KEYS: u64 = 100;

#[test]
fn redis_benchmark_through_a_follower_and_every_node_reads_back_what_it_wrote() {
    if !redis_tools_present(
        "redis_benchmark_through_a_follower_and_every_node_reads_back_what_it_wrote",
    ) {
        return;
    }
    let (cluster, leader) = cluster();
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");

    // SET key:__rand_int__ <3 bytes>, GET key:__rand_int__, INCR counter:__rand_int__, with
    // __rand_int__ a 12-digit number below -r: 8 connections to a follower, which forwards.
    // The value is the same for every SET of a run (redis-benchmark 7 draws its bytes at
    // random once; older versions send "xxx").
    let mut command = Command::new("redis-benchmark");
    command
        .args(["-h", "127.0.0.1", "-p", &port(&cluster, follower)])
        .args(["-a", TEST_PASSWORD])
        .args(["-t", "set,get,incr", "-c", "8", "-d", "3", "--csv"])
        .args(["-n", &BENCH_REQUESTS.to_string()])
        .args(["-r", &BENCH_KEYS.to_string()]);
    let out = run(command, "", &cluster);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "redis-benchmark -t set,get,incr -n {BENCH_REQUESTS} -c 8 -r {BENCH_KEYS} against follower node {follower} (leader {leader}):\n{stdout}"
    );
    assert!(
        out.status.success(),
        "redis-benchmark failed: {stdout}{stderr}\n{}",
        cluster.logs()
    );
    // redis-benchmark stops at the first error reply, printing it.
    assert!(
        !stdout.contains("Error") && !stderr.contains("Error"),
        "redis-benchmark saw errors: {stdout}{stderr}"
    );
    // One CSV row per test, each with a positive rate.
    for test in ["SET", "GET", "INCR"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("\"{test}\",")))
            .unwrap_or_else(|| panic!("no {test} row in {stdout}"));
        let rps: f64 = row
            .split(',')
            .nth(1)
            .and_then(|f| f.trim_matches('"').parse().ok())
            .unwrap_or_else(|| panic!("no rate in {row}"));
        assert!(rps > 0.0, "{row}");
    }

    // Every node, once it has applied everything the leader committed, answers follower
    // reads with the same keys and values.
    let commit = wait_all_applied(&cluster, leader);
    let expected_keys: Vec<String> = (0..BENCH_KEYS).map(|n| format!("key:{n:012}")).collect();
    let mget = format!("MGET {}", expected_keys.join(" "));
    let mut first: Option<(Vec<String>, Vec<String>)> = None;
    for id in 1..=3 {
        let reply = redis_cli(
            &cluster,
            id,
            &[],
            &format!("READONLY\nSCANPREFIX key: 1000\nSCANPREFIX counter: 1000\n{mget}\n"),
        );
        let values = items(&reply);
        let expected_len = 1 + 2 * BENCH_KEYS as usize;
        assert!(
            values.len() > expected_len && values[0] == "OK",
            "node {id}: {reply}"
        );
        // 2000 SETs over 100 keys leave none unwritten but with odds of about 2e-7.
        let keys = &values[1..expected_len];
        let pairs: Vec<(&String, &String)> = keys.chunks(2).map(|p| (&p[0], &p[1])).collect();
        assert_eq!(
            pairs.iter().map(|(k, _)| (*k).clone()).collect::<Vec<_>>(),
            expected_keys,
            "SCANPREFIX key: on node {id}"
        );
        let value = pairs[0].1;
        assert!(
            value.len() == 3 && pairs.iter().all(|(_, v)| *v == value),
            "node {id}: one 3-byte value for every key: {reply}"
        );
        let rest = &values[expected_len..];
        let (counters, got) = rest.split_at(rest.len() - BENCH_KEYS as usize);
        assert!(
            got.iter().all(|v| v == value),
            "MGET of the benchmark's keys on node {id}: {got:?}"
        );
        // Every INCR applied exactly once: the counters add up to the requests sent.
        assert_eq!(counters.len() % 2, 0, "node {id}: {counters:?}");
        let mut total = 0u64;
        for pair in counters.chunks(2) {
            let n: u64 = pair[0]
                .strip_prefix("counter:")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("node {id}: unexpected key {}", pair[0]));
            assert!(n < BENCH_KEYS, "node {id}: {}", pair[0]);
            total += pair[1]
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("node {id}: counter value {}", pair[1]));
        }
        assert_eq!(total, BENCH_REQUESTS, "node {id}: the INCRs add up");
        let view = (keys.to_vec(), counters.to_vec());
        match &first {
            None => first = Some(view),
            Some(seen) => assert_eq!(seen, &view, "node {id} differs from node 1"),
        }
        println!(
            "node {id}: {} keys all {value:?}, {} counters summing to {total}",
            pairs.len(),
            counters.len() / 2
        );
    }
    println!("all three nodes agree at commit index {commit}");
}

#[test]
fn shutdown_hands_over_the_leadership_and_tells_connected_clients_to_go_elsewhere() {
    if !redis_tools_present("shutdown_hands_over_the_leadership...") {
        return;
    }
    let (mut cluster, leader) = cluster();
    assert_eq!(cli(&cluster, leader, &["SET", "before", "1"]), "OK");
    // A client that stays connected to the leader while it shuts down.
    let mut stays = cluster.connect_raw(leader).expect("connected");
    stays.write_all(b"PING\r\n").expect("ping");
    let mut buf = [0u8; 256];
    let n = stays.read(&mut buf).expect("pong");
    assert_eq!(&buf[..n], b"+PONG\r\n");

    // redis-cli's SHUTDOWN returns when the node closes its connection, which is once the
    // node has handed over and the client above has gone: run it aside.
    let port = port(&cluster, leader);
    let shutdown = std::thread::spawn(move || {
        redis_cli_command()
            .args(["-h", "127.0.0.1", "-p", &port, "SHUTDOWN"])
            .output()
            .expect("redis-cli runs")
    });
    let said = |text: &str| {
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            if cluster.logs().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    };
    let shutting = format!("synod node {leader}: shutting down");
    assert!(said(&shutting), "no shutdown began:\n{}", cluster.logs());
    // The connected client's next request is refused, with where to go, and the node closes
    // the connection; nothing of it was applied.
    stays
        .write_all(b"*3\r\n$3\r\nSET\r\n$7\r\nrefused\r\n$1\r\nx\r\n")
        .expect("send");
    let mut reply = Vec::new();
    let _ = stays.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.starts_with(&format!("-TRYAGAIN node {leader} is shutting down")),
        "{reply}"
    );
    drop(stays);
    let out = shutdown.join().expect("redis-cli thread");
    assert!(out.status.success(), "redis-cli SHUTDOWN: {out:?}");
    assert!(
        said(&format!("synod node {leader}: stopped")),
        "{}",
        cluster.logs()
    );
    assert!(
        cluster
            .logs()
            .contains(&format!("synod node {leader}: leadership handed over")),
        "{}",
        cluster.logs()
    );

    // The others carry on under a new leader, with the write made before and without the
    // refused one.
    let others: Vec<usize> = (1..=3).filter(|&id| id != leader).collect();
    let new_leader = cluster.wait_leader(&others);
    assert_ne!(new_leader, leader);
    assert_eq!(cli(&cluster, new_leader, &["GET", "before"]), "\"1\"");
    assert_eq!(
        cli(&cluster, new_leader, &["EXISTS", "refused"]),
        "(integer) 0"
    );
    assert_eq!(cli(&cluster, new_leader, &["SET", "after", "2"]), "OK");

    // Restarted on its data directory, the node rejoins and serves what it missed.
    cluster.start(leader);
    let deadline = Instant::now() + DEADLINE;
    // It answers once it has replayed its log and bound its ports (slower on a loaded machine).
    while cluster.field(leader, "node_id").is_none() {
        assert!(
            Instant::now() < deadline,
            "restarted node never answered:\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    loop {
        let got = redis_cli(&cluster, leader, &[], "READONLY\nGET after\n");
        if got.ends_with("\"2\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted node never caught up: {got}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `redis-cli` subscriber (`SUBSCRIBE` or `PSUBSCRIBE`, in RESP2 or RESP3) whose output
/// lines (`--raw`: one value a line) arrive on a channel; killed when dropped.
struct Subscriber {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Subscriber {
    fn start(cluster: &Cluster, id: usize, args: &[&str]) -> Subscriber {
        use std::io::BufRead;
        let mut child = redis_cli_command()
            .args(["-h", "127.0.0.1", "-p", &port(cluster, id), "--raw"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli starts");
        let out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Subscriber {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits until its output ends with `tail`; everything it printed.
    fn until(&mut self, tail: &[&str]) -> &[String] {
        let deadline = Instant::now() + DEADLINE;
        while !self
            .seen
            .ends_with(&tail.iter().map(|s| (*s).to_string()).collect::<Vec<_>>())
        {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "redis-cli never printed {tail:?}; it printed {:?}",
                    self.seen
                ),
            }
        }
        &self.seen
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn redis_cli_subscribes_to_key_events_on_any_node_in_resp2_and_resp3() {
    if !redis_tools_present("redis_cli_subscribes_to_key_events_on_any_node_in_resp2_and_resp3") {
        return;
    }
    let (cluster, leader) = cluster();
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    // A key subscriber on a follower (RESP2), a pattern subscriber on the leader (RESP3).
    let mut key = Subscriber::start(&cluster, follower, &["SUBSCRIBE", "__keyspace@0__:job"]);
    key.until(&["subscribe", "__keyspace@0__:job", "1"]);
    let mut pattern =
        Subscriber::start(&cluster, leader, &["-3", "PSUBSCRIBE", "__keyspace@0__:j*"]);
    pattern.until(&["psubscribe", "__keyspace@0__:j*", "1"]);
    assert_eq!(cli(&cluster, leader, &["SET", "job", "a"]), "OK");
    assert_eq!(cli(&cluster, leader, &["SET", "other", "b"]), "OK");
    assert_eq!(cli(&cluster, follower, &["DEL", "job"]), "(integer) 1");
    // Each event carries the revision of its write: the DEL made the store's newest.
    let now: u64 = cluster
        .field(leader, "revision")
        .and_then(|r| r.parse().ok())
        .expect("the leader reports its revision");
    let (set, del) = (format!("set {}", now - 2), format!("del {now}"));
    // Every change of the key, in order, with its revision; nothing of the other key.
    let seen = key.until(&["message", "__keyspace@0__:job", &del]).to_vec();
    assert_eq!(
        seen[3..],
        [
            "message",
            "__keyspace@0__:job",
            &set,
            "message",
            "__keyspace@0__:job",
            &del
        ]
    );
    let seen = pattern
        .until(&["pmessage", "__keyspace@0__:j*", "__keyspace@0__:job", &del])
        .to_vec();
    assert_eq!(
        seen[3..],
        [
            "pmessage",
            "__keyspace@0__:j*",
            "__keyspace@0__:job",
            &set,
            "pmessage",
            "__keyspace@0__:j*",
            "__keyspace@0__:job",
            &del
        ]
    );
    // A channel that is not a key's is refused: there is no PUBLISH.
    let refused = cli(&cluster, leader, &["SUBSCRIBE", "news"]);
    assert!(refused.contains("key events only"), "{refused}");
}

/// Whether Python's `redis` library, version 5 or later, can be imported by `python3`.
/// Missing, it is a failure when `SYNOD_REQUIRE_REDIS_PY=1` (CI installs it), and a printed
/// notice otherwise.
fn redis_py_present(test: &str) -> bool {
    let check =
        "import redis, sys; sys.exit(0 if int(redis.__version__.split('.')[0]) >= 5 else 1)";
    let present = Command::new("python3")
        .args(["-c", check])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return true;
    }
    let required = std::env::var("SYNOD_REQUIRE_REDIS_PY").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "python3 with the `redis` library (5 or later) not found and SYNOD_REQUIRE_REDIS_PY=1: \
         install it with `python3 -m pip install 'redis>=5'`"
    );
    let _ = writeln!(
        std::io::stderr(),
        "NOTICE: {test} skipped: python3 with the `redis` library (5 or later) not found; \
         install it with `python3 -m pip install 'redis>=5'` to run it, or set \
         SYNOD_REQUIRE_REDIS_PY=1 to make this a failure"
    );
    false
}

#[test]
fn python_redis_library_consumes_watches_runs_transactions_and_scans() {
    if !redis_py_present("python_redis_library_consumes_watches_runs_transactions_and_scans") {
        return;
    }
    let (cluster, leader) = cluster();
    // The library's main connection on the leader, its subscriber and the racing writer on
    // the followers.
    let ports: Vec<String> = std::iter::once(leader)
        .chain((1..=3).filter(|&id| id != leader))
        .map(|id| port(&cluster, id))
        .collect();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/redis_py/client_library.py"
    );
    let mut command = Command::new("python3");
    command
        .env("SYNOD_PASSWORD", TEST_PASSWORD)
        .arg(script)
        .arg(ports.join(","));
    let out = run(command, "", &cluster);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.trim() == "ok",
        "the redis library's script failed:\n{stdout}\n{stderr}"
    );
}
