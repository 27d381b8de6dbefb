//! The leaderless store as real processes: three `synod node --system leaderless` nodes on
//! loopback, spoken to over RESP: writes at QUORUM through any node read back through
//! every other, siblings from concurrent writes shown and resolved with their context, a
//! node killed with SIGKILL while the others take writes at QUORUM, restarted on its data
//! directory and reading them at ALL, CAS through Paxos, and INFO showing the membership
//! view and the partitions each member owns. Every wait polls a condition against a deadline.

use synod_examples::resp::Value;

use crate::register_cluster::Registers;

fn bulk(s: &str) -> Value {
    Value::Bulk(s.as_bytes().to_vec())
}

/// Sends `commands` on one connection to node `id` (a level set with CONSISTENCY holds for
/// the ones after it), polling until the last is answered other than `TRYAGAIN`.
fn on_one_connection(cluster: &Registers, id: usize, commands: &[&[&str]]) -> Value {
    let deadline = std::time::Instant::now() + crate::core_cluster::DEADLINE;
    loop {
        let answer = (|| {
            let mut conn = cluster.connect(id)?;
            let mut last = Value::Nil;
            for command in commands {
                let args: Vec<&[u8]> = command.iter().map(|a| a.as_bytes()).collect();
                last = conn.roundtrip(&args)?;
            }
            Ok::<Value, std::io::Error>(last)
        })();
        match answer {
            Ok(Value::Error(e)) if e.starts_with("TRYAGAIN") => {}
            Ok(value) => return value,
            Err(_) => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no answer\n{}",
            cluster.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn leaderless_writes_survive_sigkill_siblings_resolve_and_info_shows_ownership() {
    let mut cluster = Registers::up_system("leaderless", 3);
    let ok = Value::Simple("OK".into());
    for i in 0..6 {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        assert_eq!(cluster.settle(1 + i % 3, &["SET", &key, &value]), ok);
    }
    for id in 1..=3 {
        assert_eq!(cluster.settle(id, &["GET", "k0"]), bulk("v0"));
    }
    // Node 3 is killed; QUORUM writes go on through the other two.
    cluster.kill(3);
    for i in 0..6 {
        let (key, value) = (format!("k{i}"), format!("w{i}"));
        let read = cluster.settle(1, &["GETCTX", &key]);
        let Value::Array(items) = read else {
            panic!("GETCTX answered {read:?}");
        };
        let Value::Bulk(token) = &items[0] else {
            panic!("no context in {items:?}");
        };
        let token = String::from_utf8_lossy(token).into_owned();
        let set = [
            "SET",
            key.as_str(),
            value.as_str(),
            "CONTEXT",
            token.as_str(),
        ];
        assert_eq!(cluster.settle(2, &set), ok);
    }
    // Restarted on its directory, it reads every acknowledged write at ALL.
    cluster.start(3);
    for i in 0..6 {
        let key = format!("k{i}");
        let read = on_one_connection(&cluster, 3, &[&["CONSISTENCY", "ALL"], &["GET", &key]]);
        assert_eq!(read, bulk(&format!("w{i}")), "{key}");
    }
    // Two blind writes of one key are siblings; a write with their context resolves them.
    assert_eq!(cluster.settle(1, &["SET", "s", "a"]), ok);
    assert_eq!(cluster.settle(2, &["SET", "s", "b"]), ok);
    let Value::Array(items) = cluster.settle(3, &["GETCTX", "s"]) else {
        panic!("no siblings");
    };
    assert_eq!(items.len(), 3, "a context and two siblings: {items:?}");
    let Value::Bulk(token) = &items[0] else {
        panic!("no context");
    };
    let token = String::from_utf8_lossy(token).into_owned();
    assert_eq!(
        cluster.settle(3, &["SET", "s", "ab", "CONTEXT", &token]),
        ok
    );
    assert_eq!(cluster.settle(1, &["GET", "s"]), bulk("ab"));
    // Compare-and-set through Paxos, on its own key space.
    let cas = cluster.settle(1, &["CAS", "c", "x"]);
    assert_eq!(cas, Value::Array(vec![Value::Int(1), bulk("x")]));
    let cas = cluster.settle(2, &["CAS", "c", "wrong", "y"]);
    assert_eq!(cas, Value::Array(vec![Value::Int(0), bulk("x")]));
    assert_eq!(cluster.settle(3, &["CGET", "c"]), bulk("x"));
    // INFO: the view and the ownership of the 64 partitions.
    let Value::Bulk(info) = cluster.settle(2, &["INFO"]) else {
        panic!("INFO");
    };
    let info = String::from_utf8_lossy(&info).into_owned();
    assert!(info.contains("system:leaderless"), "{info}");
    let owned: usize = info
        .lines()
        .filter(|l| l.starts_with("member:"))
        .filter_map(|l| l.split("owned=").nth(1)?.trim().parse::<usize>().ok())
        .sum();
    assert_eq!(owned, 64, "{info}");
}

/// An authenticated connection to the node serving clients at `addr`.
fn open(addr: &str) -> std::io::Result<synod_examples::resp::client::Connection> {
    let credentials = crate::core_cluster::test_credentials();
    synod_examples::resp::client::Connection::open_as(addr, Some(&credentials))
}

/// Polls `done` until it holds or the tests' deadline passes: whether it held.
fn poll(done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + crate::core_cluster::DEADLINE;
    synod_examples::runtime::poll_until(deadline, done)
}

/// A key's GETCTX at QUORUM through `conn`: its context token and its values.
fn read_with_context(
    conn: &mut synod_examples::resp::client::Connection,
    key: &str,
) -> std::io::Result<Option<(String, Vec<String>)>> {
    let text = |v: &Value| match v {
        Value::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    };
    Ok(match conn.roundtrip(&[b"GETCTX", key.as_bytes()])? {
        Value::Array(items) if !items.is_empty() => {
            let token = text(&items[0]).unwrap_or_default();
            Some((token, items[1..].iter().filter_map(text).collect()))
        }
        _ => None,
    })
}

/// What one writer learned of its keys: per key, the last value whose write was
/// acknowledged, and the values written after it with an unknown outcome.
type Writes = std::collections::BTreeMap<String, (Option<String>, Vec<String>)>;

/// Writes `keys` in turn, each a read of its context then a write replacing what it read,
/// through `node()` (asked again for every operation), until `stop`; `through_4` counts
/// the writes acknowledged through node 4.
fn write_until(
    cluster_addrs: &[String],
    node: &dyn Fn() -> usize,
    writer: usize,
    keys: &[String],
    stop: &std::sync::atomic::AtomicBool,
    through_4: &std::sync::atomic::AtomicUsize,
) -> Writes {
    let mut writes: Writes = keys
        .iter()
        .map(|k| (k.clone(), (None, Vec::new())))
        .collect();
    let mut seq = 0u64;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        for key in keys {
            seq += 1;
            let value = format!("w{writer}-{seq}");
            let via = node();
            let addr = &cluster_addrs[via - 1];
            let answer = open(addr).and_then(|mut c| {
                c.set_read_timeout(std::time::Duration::from_secs(10))?;
                let Some((token, _)) = read_with_context(&mut c, key)? else {
                    return Ok(None);
                };
                let set = [
                    b"SET".as_slice(),
                    key.as_bytes(),
                    value.as_bytes(),
                    b"CONTEXT",
                    token.as_bytes(),
                ];
                c.roundtrip(&set).map(Some)
            });
            let entry = writes.get_mut(key).expect("a key of this writer");
            match answer {
                Ok(Some(Value::Simple(ok))) if ok == "OK" => {
                    *entry = (Some(value), Vec::new());
                    if via == 4 {
                        through_4.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                Ok(Some(Value::Error(e))) if e.starts_with("TRYAGAIN") => {}
                Ok(None) => {}
                // UNKNOWN, or the connection lost after the write was sent.
                _ => entry.1.push(value),
            }
        }
    }
    writes
}

#[test]
fn a_fourth_node_joins_during_a_workload_gets_its_partitions_and_no_acknowledged_write_is_lost() {
    let mut cluster = Registers::up_joining("leaderless", 4, 3);
    let addrs: Vec<String> = (1..=4).map(|id| cluster.client_addr(id)).collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let joined = std::sync::atomic::AtomicBool::new(false);
    let through_4 = std::sync::atomic::AtomicUsize::new(0);
    let writers = 3;
    /// Stops the writers when dropped, so that a failed assertion below ends the test
    /// instead of leaving the scope waiting for writers that never stop.
    struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let writes: Vec<Writes> = std::thread::scope(|s| {
        let _stop_on_drop = StopOnDrop(&stop);
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let (addrs, stop, joined, through_4) = (&addrs, &stop, &joined, &through_4);
                s.spawn(move || {
                    let keys: Vec<String> = (0..8).map(|k| format!("j{w}-{k}")).collect();
                    // Once node 4 has joined, the last writer goes through it: writes of
                    // keys it does not replicate are forwarded.
                    let node = move || {
                        if w == writers - 1 && joined.load(std::sync::atomic::Ordering::SeqCst) {
                            4
                        } else {
                            1 + w % 3
                        }
                    };
                    write_until(addrs, &node, w, &keys, stop, through_4)
                })
            })
            .collect();
        // Some writes first, then node 4 joins while they go on.
        let written = poll(|| {
            (0..writers).all(|w| {
                let key = format!("j{w}-0");
                matches!(cluster.call(1 + w % 3, &["GET", &key]), Ok(Value::Bulk(_)))
            })
        });
        assert!(written, "no write acknowledged\n{}", cluster.logs());
        cluster.start(4);
        let info_of_4 = || match cluster.call(4, &["INFO"]) {
            Ok(Value::Bulk(info)) => String::from_utf8_lossy(&info).into_owned(),
            _ => String::new(),
        };
        // It takes its share of the partitions, and the keys of its partitions are
        // streamed to it.
        let holds_keys = poll(|| {
            let info = info_of_4();
            let keys = info
                .lines()
                .find_map(|l| l.strip_prefix("keys:")?.trim().parse::<usize>().ok());
            info.lines()
                .any(|l| l.starts_with("member:n4 ") && !l.contains("owned=0"))
                && keys.is_some_and(|k| k > 0)
        });
        assert!(holds_keys, "node 4: {}\n{}", info_of_4(), cluster.logs());
        joined.store(true, std::sync::atomic::Ordering::SeqCst);
        // The workload goes on, one writer through node 4.
        let went_on = poll(|| through_4.load(std::sync::atomic::Ordering::SeqCst) >= 24);
        assert!(went_on, "node 4: {}\n{}", info_of_4(), cluster.logs());
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        handles
            .into_iter()
            .map(|h| h.join().expect("a writer"))
            .collect()
    });
    // Every acknowledged write is still there, on every node's reads at ALL (or replaced
    // by a write of the same writer sent after it whose outcome is unknown).
    for writes in &writes {
        for (key, (last, after)) in writes {
            let Some(last) = last else {
                continue;
            };
            for via in [4, 1] {
                let kept = poll(|| {
                    let read = (|| {
                        let mut c = open(&addrs[via - 1])?;
                        c.set_read_timeout(std::time::Duration::from_secs(10))?;
                        c.roundtrip(&[b"CONSISTENCY", b"ALL"])?;
                        read_with_context(&mut c, key)
                    })();
                    read.ok().flatten().is_some_and(|(_, values)| {
                        values.iter().any(|v| v == last || after.contains(v))
                    })
                });
                assert!(
                    kept,
                    "{key}: the acknowledged {last} is lost (read via node {via})\n{}",
                    cluster.logs()
                );
            }
        }
    }
    let acknowledged: usize = writes
        .iter()
        .map(|w| w.values().filter(|(l, _)| l.is_some()).count())
        .sum();
    assert!(
        acknowledged >= writers * 8 / 2,
        "{acknowledged} keys written"
    );
}
