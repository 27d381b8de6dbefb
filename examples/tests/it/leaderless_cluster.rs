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
