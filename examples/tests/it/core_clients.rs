//! The client event loop under load, end to end through a real `synod node` process: ten
//! thousand client connections served by one node and the next one refused with an error,
//! which it reads though it sent a request first (the node's memory per idle connection
//! printed and bounded); a client pipelining
//! 100,000 requests gets every answer, in order; a client that takes none of its replies
//! holds back no other client. Through a follower, which forwards writes to the leader: a
//! client pipelining writes gets every answer in order, and a leader killed while they are
//! in flight loses none that was acknowledged. The nodes run secured (a client password and
//! the cluster's secret) and every client authenticates first. No test asserts a time: read
//! timeouts only turn a hang into a failure.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use synod_examples::resp::{Limits, Value};
use synod_examples::runtime::CLIENT_CONNECTIONS_MAX;

use super::core_cluster::Cluster;
use super::core_limits::memory;

/// A connection to node 1, authenticated.
fn connect(cluster: &Cluster) -> TcpStream {
    connect_to(cluster, 1)
}

/// A connection to node `id`, authenticated.
fn connect_to(cluster: &Cluster, id: usize) -> TcpStream {
    cluster
        .connect_raw(id)
        .expect("connected and authenticated")
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

/// Reads replies from `stream` into `buf` until one parses: the reply.
fn read_reply(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Value> {
    let limits = Limits {
        bulk_bytes_max: 8 << 20,
        ..Limits::default()
    };
    let mut chunk = [0u8; 64 << 10];
    loop {
        if let Ok(Some((value, used))) = Value::parse(buf, &limits) {
            buf.drain(..used);
            return Some(value);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

#[test]
fn ten_thousand_clients_are_served_by_one_node_and_the_next_is_refused_with_an_error() {
    let clients = CLIENT_CONNECTIONS_MAX;
    // This process holds every client socket; the node, its own.
    let needed = clients as u64 + 256;
    if open_files_max() < needed {
        println!(
            "not run: this process may open {} files, the test needs {needed} (raise `ulimit -n`)",
            open_files_max()
        );
        return;
    }
    let (cluster, _) = Cluster::up_secured(1, &[]);
    let pid = cluster.pid(1).expect("running");
    let mut probe = connect(&cluster);
    let mut buf = Vec::new();
    probe.write_all(b"PING\r\n").expect("PING");
    assert_eq!(
        read_reply(&mut probe, &mut buf),
        Some(Value::Simple("PONG".into()))
    );
    let before = memory(pid, "VmRSS");
    // The probe is one of them.
    let mut streams = vec![probe];
    while streams.len() < clients {
        streams.push(connect(&cluster));
    }
    // Every one is served: a PING each, all sent before any reply is read.
    for stream in &mut streams {
        stream.write_all(b"PING\r\n").expect("PING");
    }
    for (i, stream) in streams.iter_mut().enumerate() {
        let mut pong = [0u8; 7];
        stream.read_exact(&mut pong).expect("PONG");
        assert_eq!(&pong, b"+PONG\r\n", "connection {i}");
    }
    let after = memory(pid, "VmRSS");
    let per_connection = after.saturating_sub(before) / clients as u64;
    println!(
        "{clients} open connections: the node's resident memory went from {} KiB to {} KiB, {per_connection} bytes per connection",
        before >> 10,
        after >> 10
    );
    // An idle connection keeps no buffers: its socket, its place in the loop's table, its
    // RESP state. (The kernel's socket buffers are not in the process's memory.)
    assert!(
        per_connection < 8 << 10,
        "{per_connection} bytes per idle connection"
    );
    // One more: refused with an error saying why (before it could authenticate), and closed,
    // though it sends a request before it reads (the node reads and drops it rather than
    // close with it unread, which would reset the connection).
    let mut extra = TcpStream::connect(cluster.addr(1)).expect("connect");
    extra
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    extra
        .write_all(b"PING\r\n")
        .expect("a request before reading");
    // Once the refusal has arrived, another: a connection reset would fail it.
    let mut first = [0u8; 1];
    assert_eq!(extra.peek(&mut first).expect("the refusal arrives"), 1);
    extra
        .write_all(b"PING\r\n")
        .expect("the node reads what is sent after the refusal");
    let mut said = Vec::new();
    extra
        .read_to_end(&mut said)
        .expect("the refusal, then the end, without a reset");
    assert_eq!(
        String::from_utf8_lossy(&said),
        "-ERR max number of clients reached\r\n"
    );
    // The others are still served; once one leaves, a new client is.
    for stream in streams.iter_mut().step_by(97) {
        stream.write_all(b"PING\r\n").expect("PING");
        let mut pong = [0u8; 7];
        stream.read_exact(&mut pong).expect("PONG");
        assert_eq!(&pong, b"+PONG\r\n");
    }
    drop(streams.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let served = synod_examples::runtime::poll_until(deadline, || {
        let Some(mut stream) = cluster.connect_raw(1) else {
            return false;
        };
        let mut buf = Vec::new();
        stream.write_all(b"PING\r\n").is_ok()
            && read_reply(&mut stream, &mut buf) == Some(Value::Simple("PONG".into()))
    });
    assert!(served, "no client was served after one left");
}

#[test]
fn a_client_pipelining_100_000_requests_gets_every_answer_in_order() {
    const REQUESTS: i64 = 100_000;
    let (cluster, _) = Cluster::up_secured(1, &[]);
    incr_pipelined_in_order(connect(&cluster), REQUESTS, &cluster);
    println!("{REQUESTS} pipelined INCRs answered 1 to {REQUESTS}, in order");
}

#[test]
fn a_client_that_takes_none_of_its_replies_holds_back_no_other_client() {
    const VALUE_BYTES: usize = 64 << 10;
    const GETS: usize = 4_000;
    let (cluster, _) = Cluster::up_secured(1, &[]);
    let mut setup = connect(&cluster);
    let mut buf = Vec::new();
    let set = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${VALUE_BYTES}\r\n");
    setup.write_all(set.as_bytes()).expect("SET");
    setup.write_all(&vec![b'v'; VALUE_BYTES]).expect("SET");
    setup.write_all(b"\r\n").expect("SET");
    assert_eq!(
        read_reply(&mut setup, &mut buf),
        Some(Value::Simple("OK".into()))
    );
    // 4,000 GETs of 64 KiB (250 MiB of replies), sent and not read: the node stops reading
    // them once its buffer for this client and the socket's are full.
    let mut slow = connect(&cluster);
    let mut slow_writer = slow.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        slow_writer
            .write_all("GET big\r\n".repeat(GETS).as_bytes())
            .expect("pipelined");
    });
    // Meanwhile other clients write and read.
    for i in 0..200 {
        let mut other = connect(&cluster);
        let mut buf = Vec::new();
        other
            .write_all(format!("SET k{i} {i}\r\nGET k{i}\r\n").as_bytes())
            .expect("write");
        assert_eq!(
            read_reply(&mut other, &mut buf),
            Some(Value::Simple("OK".into()))
        );
        assert_eq!(
            read_reply(&mut other, &mut buf),
            Some(Value::Bulk(i.to_string().into_bytes()))
        );
    }
    // The slow client then gets every reply, whole and in order.
    let mut buf = Vec::new();
    for i in 0..GETS {
        let reply = read_reply(&mut slow, &mut buf);
        assert!(
            matches!(&reply, Some(Value::Bulk(v)) if v.len() == VALUE_BYTES),
            "reply {i} of the slow client"
        );
    }
    sender.join().expect("sent");
    println!("200 clients served while one held {GETS} replies of {VALUE_BYTES} bytes unread");
}

#[test]
fn writes_pipelined_through_a_follower_are_forwarded_and_answered_in_order() {
    const REQUESTS: i64 = 20_000;
    let (cluster, leader) = Cluster::up_secured(3, &[]);
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    // Each INCR answered with the count it made: the follower sent them on in the order
    // they came, and the leader applied them in that order.
    incr_pipelined_in_order(connect_to(&cluster, follower), REQUESTS, &cluster);
    println!(
        "{REQUESTS} INCRs pipelined through node {follower} (a follower of {leader}) answered 1 to {REQUESTS}, in order"
    );
}

/// Sends `requests` `INCR n` on `stream` in writes of 1,000 commands while it reads the
/// replies, and asserts they count 1 to `requests` in order.
fn incr_pipelined_in_order(mut stream: TcpStream, requests: i64, cluster: &Cluster) {
    let mut writer = stream.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        let chunk = "INCR n\r\n".repeat(1000);
        for _ in 0..requests / 1000 {
            writer.write_all(chunk.as_bytes()).expect("pipelined");
        }
    });
    let mut buf = Vec::new();
    for expected in 1..=requests {
        let reply = read_reply(&mut stream, &mut buf);
        assert_eq!(
            reply,
            Some(Value::Int(expected)),
            "reply {expected}\n{}",
            cluster.logs()
        );
    }
    sender.join().expect("sent");
}

/// One pipelined window of `SET KEY VALUE`s, each key `w-{first + i}`.
fn set_window(stream: &mut TcpStream, first: usize, size: usize) {
    let mut out = String::new();
    for i in first..first + size {
        out += &format!("SET w-{i} v{i}\r\n");
    }
    stream.write_all(out.as_bytes()).expect("pipelined");
}

#[test]
fn a_leader_killed_while_a_follower_forwards_pipelined_writes_loses_none_acknowledged() {
    const WINDOW: usize = 256;
    const AFTER_KILL: usize = 1000;
    let (mut cluster, leader) = Cluster::up_secured(3, &[]);
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    let mut stream = connect_to(&cluster, follower);
    let mut buf = Vec::new();
    let mut acknowledged = Vec::new();
    let (mut sent, mut windows) = (0, 0);
    let mut killed = false;
    let mut after_kill = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while after_kill < AFTER_KILL {
        assert!(
            std::time::Instant::now() < deadline,
            "{after_kill} writes acknowledged after the kill\n{}",
            cluster.logs()
        );
        set_window(&mut stream, sent, WINDOW);
        // The leader dies with a window of writes sent to the follower and unanswered.
        if windows == 8 {
            cluster.kill(leader);
            killed = true;
        }
        for i in sent..sent + WINDOW {
            match read_reply(&mut stream, &mut buf) {
                Some(Value::Simple(ok)) if ok == "OK" => {
                    acknowledged.push(i);
                    if killed {
                        after_kill += 1;
                    }
                }
                // Certainly not done, or perhaps done: neither is acknowledged.
                Some(Value::Error(e)) if e.starts_with("TRYAGAIN") || e.starts_with("UNKNOWN") => {}
                other => panic!("write {i}: {other:?}\n{}", cluster.logs()),
            }
        }
        sent += WINDOW;
        windows += 1;
    }
    // Every acknowledged write is there, read linearizably at both survivors.
    let survivors: Vec<usize> = (1..=3).filter(|&id| id != leader).collect();
    let second = cluster.wait_leader(&survivors);
    for id in survivors {
        let mut reader = connect_to(&cluster, id);
        let mut buf = Vec::new();
        for chunk in acknowledged.chunks(WINDOW) {
            let mut out = String::new();
            for i in chunk {
                out += &format!("GET w-{i}\r\n");
            }
            reader.write_all(out.as_bytes()).expect("pipelined");
            for i in chunk {
                assert_eq!(
                    read_reply(&mut reader, &mut buf),
                    Some(Value::Bulk(format!("v{i}").into_bytes())),
                    "acknowledged write w-{i} at node {id}"
                );
            }
        }
    }
    println!(
        "{} of {sent} writes through node {follower} acknowledged across the kill of leader {leader} (node {second} leads now), all found",
        acknowledged.len()
    );
}

/// From the outside review (review7): a client's writes on one connection are applied in
/// the order it sent them across a change of leader. Two clients, one on each follower,
/// each INCR their own key at a steady pace (one every 5 ms, pipelined: they never wait
/// for a reply before the next), and the leader is killed. While no leader is known, a
/// follower keeps the writes it cannot send for its next tick; the follower that wins the
/// election takes the writes that reach it after it leads at once, before those it kept.
/// Each connection's INCR replies must then still rise (a reply smaller than an earlier
/// one means a later write was applied first).
#[test]
fn writes_pipelined_through_a_follower_stay_in_order_across_a_change_of_leader() {
    const PACE: Duration = Duration::from_millis(5);
    const WRITES: usize = 2_000;
    let (mut cluster, leader) = Cluster::up_secured(3, &[]);
    let followers: Vec<usize> = (1..=3).filter(|&id| id != leader).collect();
    let mut readers = Vec::new();
    for &id in &followers {
        let stream = connect_to(&cluster, id);
        let mut writer = stream.try_clone().expect("clone");
        let key = format!("order-{id}");
        let sender = std::thread::spawn(move || {
            for _ in 0..WRITES {
                let command = format!("INCR {key}\r\n");
                if writer.write_all(command.as_bytes()).is_err() {
                    return;
                }
                std::thread::sleep(PACE);
            }
        });
        readers.push((id, stream, sender));
    }
    // The leader dies a second into the run.
    std::thread::sleep(Duration::from_secs(1));
    cluster.kill(leader);
    let mut out_of_order = Vec::new();
    for (id, mut stream, sender) in readers {
        let mut buf = Vec::new();
        let mut last = 0i64;
        let mut counted = 0;
        let mut last_applied_at = 0;
        for i in 0..WRITES {
            match read_reply(&mut stream, &mut buf) {
                Some(Value::Int(v)) => {
                    counted += 1;
                    last_applied_at = i;
                    if v <= last {
                        out_of_order.push(format!(
                            "node {id}: write {i} answered {v} after a write answered {last}"
                        ));
                    }
                    last = last.max(v);
                }
                Some(Value::Error(e)) if e.starts_with("TRYAGAIN") || e.starts_with("UNKNOWN") => {}
                other => panic!("node {id}, write {i}: {other:?}\n{}", cluster.logs()),
            }
        }
        sender.join().expect("sent");
        println!("node {id}: {counted} INCRs answered, the last {last}");
        // The writes went on under the new leader (the kill came about a fifth of the way
        // in): an order checked only before the kill would check nothing.
        assert!(
            last_applied_at >= WRITES / 2,
            "node {id}: no write after the {last_applied_at}th of {WRITES} was applied\n{}",
            cluster.logs()
        );
    }
    assert!(
        out_of_order.is_empty(),
        "writes of one connection applied out of order: {} ({:?}...)",
        out_of_order.len(),
        &out_of_order[..out_of_order.len().min(5)]
    );
}

#[test]
fn replies_before_quit_reach_a_client_that_pipelined_more_after_it() {
    // A client pipelines PINGs with large messages, QUIT, and a megabyte of requests after
    // it, and reads. The node answers up to QUIT and closes: were it to close with those
    // last requests unread in its socket, the kernel would reset the connection, and the
    // client would lose replies still queued to it, or at least see the reset instead of
    // the end of the stream.
    const MESSAGE_BYTES: usize = 256 << 10;
    const PINGS: usize = 16;
    let (cluster, _) = Cluster::up_secured(1, &[]);
    let mut client = connect(&cluster);
    client
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let message = "m".repeat(MESSAGE_BYTES);
    let mut requests =
        format!("*2\r\n$4\r\nPING\r\n${MESSAGE_BYTES}\r\n{message}\r\n").repeat(PINGS);
    requests.push_str("QUIT\r\n");
    requests.push_str(&"PING\r\n".repeat(170_000));
    let mut writer = client.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        // The node stops reading at QUIT: the write may fail once it closes.
        let _ = writer.write_all(requests.as_bytes());
        let _ = writer.shutdown(std::net::Shutdown::Write);
    });
    let mut received = Vec::new();
    let outcome = client.read_to_end(&mut received);
    sender.join().expect("sent");
    let mut expected = format!("${MESSAGE_BYTES}\r\n{message}\r\n").repeat(PINGS);
    expected.push_str("+OK\r\n");
    assert!(
        outcome.is_ok() && received == expected.as_bytes(),
        "{} of {} reply bytes, then {outcome:?}",
        received.len(),
        expected.len()
    );
}

#[test]
fn a_client_whose_request_and_end_arrive_together_is_answered_and_closed() {
    // A client that sends its last request and then the end of its stream (`shutdown` of
    // its sending side, as `printf ... | nc -N` does) waits for the node to answer and
    // close. Sent with MSG_MORE, the request is held in the client's socket until the
    // shutdown, so the request and the FIN leave as one segment: the node's socket is
    // readable once, and one read returns the request with the FIN already queued behind
    // it, which no later edge-triggered event will announce. A node that takes a read
    // shorter than its buffer for an emptied socket never reads the end: it answers, but
    // keeps the connection open until its idle timeout (five minutes).
    /// Linux's `MSG_MORE`: more data follows, hold this in the socket.
    const MSG_MORE: i32 = 0x8000;
    let (cluster, _) = Cluster::up_secured(1, &[]);
    let mut client = connect(&cluster);
    // Well inside the node's idle timeout: the node closing for idleness does not pass.
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let sent = socket2::SockRef::from(&client)
        .send_with_flags(b"PING\r\n", MSG_MORE)
        .expect("sent");
    assert_eq!(sent, 6);
    client
        .shutdown(std::net::Shutdown::Write)
        .expect("shut down");
    let mut received = Vec::new();
    let outcome = client.read_to_end(&mut received);
    assert!(
        outcome.is_ok() && received == b"+PONG\r\n",
        "{:?}, then {outcome:?}",
        String::from_utf8_lossy(&received)
    );
}
