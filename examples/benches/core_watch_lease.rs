//! Headline benchmark of the Consistent Core's State Watch and Lease: a three-node cluster
//! of real `synod node` processes on loopback (the cluster of the `consistent_core` bench),
//! each figure against a plain `SET`'s commit latency on the same cluster, measured in the
//! same repetitions.
//!
//! Prints one `ratio <name> <value>` line per figure:
//!
//! - `core.watch_1w_p50_vs_set`, `core.watch_1w_p99_vs_set`: the time from sending a `SET`
//!   of a watched key to the leader to its event reaching a `WATCHSTREAM KEY` watcher on
//!   the leader (one watcher), p50 and p99, over the p50 and p99 of a plain `SET`'s
//!   latency (sent to its reply: committed, durable on the leader and a follower) of a key
//!   nobody watches. A watcher cannot see a commit before the writer could, so 1.0 is the
//!   floor: the ratio says what delivery adds to a commit.
//! - `core.watch_1000w_p50_vs_set`, `core.watch_1000w_p99_vs_set`: the same with 1,000
//!   watchers of the key (20 connections of 50 streams each, each connection read by its
//!   own thread), over every watcher's event of every write.
//! - `core.keepalive_1c_p50_vs_set`: p50 latency of `LEASE KEEPALIVE` (through the log, as
//!   a write) by one client, over the plain `SET`'s p50.
//! - `core.keepalives_64c_vs_sets`: keep-alives per second with 64 clients (each keeping
//!   its own lease alive, one blocking request in flight each), over `SET`s per second
//!   with 64 clients, measured in alternation with it. 1.0 means a keep-alive costs what a
//!   write does.
//!
//! Each ratio is the ratio of the medians over the repetitions; each line carries both
//! figures. The SETs of the baseline go to a key no watcher follows, so that it is the
//! plain commit latency; the SETs of the watched keys' own replies are printed too.
//!
//! `SYNOD_BENCH_QUICK=1` runs five short repetitions (well under 60 seconds once built);
//! without it, seven longer ones.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use synod_examples::consistent_core::client::Client;
use synod_examples::resp::{Limits, Value};

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/load.rs"]
mod load;
use cluster::{Cluster, file_system, quantile_us, report};

/// Bytes of each value written.
const VALUE_BYTES: usize = 32;
/// Watchers of the many-watcher figure.
const WATCHERS_MANY: usize = 1_000;
/// Watch streams per connection in the many-watcher figure (at most 64 per connection).
const STREAMS_PER_CONNECTION: usize = 50;
/// Clients of the throughput figures.
const CLIENTS: usize = 64;
/// The key no watcher follows: the baseline's.
const PLAIN_KEY: &str = "bench:plain";
/// The key one watcher follows.
const KEY_1W: &str = "bench:watched:1";
/// The key [`WATCHERS_MANY`] watchers follow.
const KEY_MANY: &str = "bench:watched:many";
/// How long a watcher's event may take before the bench gives up.
const EVENT_DEADLINE: Duration = Duration::from_secs(20);
/// Lease TTL the keep-alive clients ask for, in milliseconds.
const LEASE_TTL_MS: &str = "60000";

struct Plan {
    reps: usize,
    /// Writes per repetition of the baseline, the one-watcher and the keep-alive figures.
    samples: usize,
    /// Writes per repetition of the many-watcher figure (each makes 1,000 events).
    samples_many: usize,
    /// How long one repetition of a rate figure runs.
    rep: Duration,
}

fn plan() -> Plan {
    if cluster::quick() {
        Plan {
            reps: 5,
            samples: 100,
            samples_many: 20,
            rep: Duration::from_millis(700),
        }
    } else {
        Plan {
            reps: 7,
            samples: 1000,
            samples_many: 150,
            rep: Duration::from_secs(3),
        }
    }
}

/// A client of `addr` (the leader).
fn client(addr: &str) -> Client {
    Client::new(&[addr.to_string()]).with_timeout(Duration::from_secs(20))
}

fn set(client: &mut Client, key: &str, value: &[u8]) {
    match client.call(&[b"SET", key.as_bytes(), value]) {
        Ok(Value::Simple(ok)) if ok == "OK" => {}
        other => panic!("SET {key}: {other:?}"),
    }
}

fn int(reply: Result<Value, impl std::fmt::Debug>, what: &str) -> i64 {
    match reply {
        Ok(Value::Int(n)) => n,
        other => panic!("{what}: {other:?}"),
    }
}

/// Watch streams of one key on one node, over connections of at most
/// [`STREAMS_PER_CONNECTION`] streams, each connection read by a thread that reports the
/// revision of every event frame and when it was read.
struct Watchers {
    streams: usize,
    events: mpsc::Receiver<(i64, Instant)>,
    connections: Vec<TcpStream>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// Reads one RESP value from `stream` into `buf` (what follows it stays in `buf`).
fn read_value(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Value> {
    let mut chunk = [0u8; 16 << 10];
    loop {
        match Value::parse(buf, &Limits::default()) {
            Ok(Some((value, used))) => {
                buf.drain(..used);
                return Some(value);
            }
            Ok(None) => {}
            Err(e) => panic!("a watch connection sent bad RESP: {e}"),
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The revision of an event frame (`[event, id, revision, [...]]`), if `value` is one.
fn event_revision(value: &Value) -> Option<i64> {
    let (Value::Array(items) | Value::Push(items)) = value else {
        return None;
    };
    match (items.first(), items.get(2)) {
        (Some(Value::Bulk(kind)), Some(Value::Int(revision))) if kind == b"event" => {
            Some(*revision)
        }
        _ => None,
    }
}

impl Watchers {
    fn open(addr: &str, key: &str, streams: usize) -> Watchers {
        let (tx, events) = mpsc::channel();
        let mut connections = Vec::new();
        let mut readers = Vec::new();
        let mut left = streams;
        while left > 0 {
            let n = left.min(STREAMS_PER_CONNECTION);
            left -= n;
            let mut stream = TcpStream::connect(addr).expect("connect a watcher");
            stream.set_nodelay(true).expect("nodelay");
            let command = format!("WATCHSTREAM KEY {key}\r\n").repeat(n);
            stream.write_all(command.as_bytes()).expect("watch");
            let mut buf = Vec::new();
            for _ in 0..n {
                match read_value(&mut stream, &mut buf) {
                    Some(Value::Array(items))
                        if items.first() == Some(&Value::Bulk(b"watching".to_vec())) => {}
                    other => panic!("WATCHSTREAM KEY {key}: {other:?}"),
                }
            }
            connections.push(stream.try_clone().expect("clone"));
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                while let Some(value) = read_value(&mut stream, &mut buf) {
                    if let Some(revision) = event_revision(&value) {
                        let _ = tx.send((revision, Instant::now()));
                    }
                }
            }));
        }
        Watchers {
            streams,
            events,
            connections,
            readers,
        }
    }

    /// Writes `samples` values of `key` with `writer`, one at a time, each once every
    /// watcher has its event: the delay from each write's send to each watcher's event,
    /// and each write's own latency.
    fn measure(
        &self,
        writer: &mut Client,
        key: &str,
        samples: usize,
    ) -> (Vec<Duration>, Vec<Duration>) {
        let value = vec![b'v'; VALUE_BYTES];
        let mut delivered = Vec::with_capacity(samples * self.streams);
        let mut writes = Vec::with_capacity(samples);
        for _ in 0..samples {
            let sent = Instant::now();
            set(writer, key, &value);
            writes.push(sent.elapsed());
            let mut revision = None;
            for _ in 0..self.streams {
                let (rev, at) = self
                    .events
                    .recv_timeout(EVENT_DEADLINE)
                    .expect("every watcher gets the write's event");
                // Writes wait for all their events, so these are all one revision's.
                assert!(
                    *revision.get_or_insert(rev) == rev,
                    "events of two revisions mixed"
                );
                delivered.push(at.saturating_duration_since(sent));
            }
        }
        (delivered, writes)
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        for c in &self.connections {
            let _ = c.shutdown(Shutdown::Both);
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// `samples` plain SETs of `key`, one at a time: their latencies.
fn plain_sets(writer: &mut Client, key: &str, samples: usize) -> Vec<Duration> {
    let value = vec![b'v'; VALUE_BYTES];
    (0..samples)
        .map(|_| {
            let sent = Instant::now();
            set(writer, key, &value);
            sent.elapsed()
        })
        .collect()
}

/// `samples` keep-alives of `lease`, one at a time: their latencies.
fn keep_alives(client: &mut Client, lease: &[u8], samples: usize) -> Vec<Duration> {
    (0..samples)
        .map(|_| {
            let sent = Instant::now();
            int(
                client.call(&[b"LEASE", b"KEEPALIVE", lease]),
                "LEASE KEEPALIVE",
            );
            sent.elapsed()
        })
        .collect()
}

/// What the rate figure's clients do.
#[derive(Clone, Copy)]
enum Op {
    Set,
    KeepAlive,
}

/// [`CLIENTS`] clients, each with its own connection (and, for keep-alives, its own
/// lease), doing `op` for `duration`: operations per second.
fn rate(leader: &str, op: Op, duration: Duration) -> f64 {
    let value = vec![b'v'; VALUE_BYTES];
    // Each client connects, and takes its lease for keep-alives, before the clock runs.
    let connect = |_c: usize| {
        let mut client = cluster::connected(leader)?;
        let lease = match op {
            Op::Set => Vec::new(),
            Op::KeepAlive => {
                let id = int(
                    client.call(&[b"LEASE", b"GRANT", LEASE_TTL_MS.as_bytes()]),
                    "LEASE GRANT",
                );
                id.to_string().into_bytes()
            }
        };
        Ok((client, lease))
    };
    let (run, (), ()) = load::closed_loop(
        CLIENTS,
        duration,
        connect,
        |(client, lease): &mut (Client, Vec<u8>), c, _i| {
            match op {
                Op::Set => set(client, &format!("bench:rate:{c:02}"), &value),
                Op::KeepAlive => {
                    int(client.call(&[b"LEASE", b"KEEPALIVE", lease]), "KEEPALIVE");
                }
            }
            true
        },
        || (),
    );
    run.rate
}

/// Prints `ratio name got/base` with both figures.
fn ratio(name: &str, got: f64, base: f64, unit: &str, what: &str) {
    println!(
        "ratio {name} {:.3} ({what} {got:.1} {unit}; plain SET {base:.1} {unit})",
        got / base
    );
}

fn main() {
    let plan = plan();
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temporary directory");
    println!(
        "synod core_watch_lease benchmark: 3 nodes of {}; data in {} ({}); {} reps",
        env!("CARGO_BIN_EXE_synod"),
        root.path().display(),
        file_system(root.path()),
        plan.reps
    );
    let mut cluster = Cluster::start(root.path(), 3);
    let leader = cluster.wait_leader();
    println!("leader: {leader}; watchers on the leader");

    let mut writer = client(&leader);
    let one = Watchers::open(&leader, KEY_1W, 1);
    let many = Watchers::open(&leader, KEY_MANY, WATCHERS_MANY);
    let lease = int(
        writer.call(&[b"LEASE", b"GRANT", LEASE_TTL_MS.as_bytes()]),
        "LEASE GRANT",
    )
    .to_string()
    .into_bytes();
    // Warm up: connections, server threads, the page cache, the log's first segment.
    plain_sets(&mut writer, PLAIN_KEY, plan.samples / 4);
    one.measure(&mut writer, KEY_1W, plan.samples / 10);
    many.measure(&mut writer, KEY_MANY, 2);

    let (mut set_p50, mut set_p99, mut ka_p50) = (Vec::new(), Vec::new(), Vec::new());
    let (mut w1_p50, mut w1_p99, mut w1_set) = (Vec::new(), Vec::new(), Vec::new());
    let (mut wm_p50, mut wm_p99, mut wm_set) = (Vec::new(), Vec::new(), Vec::new());
    let (mut sets, mut kas) = (Vec::new(), Vec::new());
    for _ in 0..plan.reps {
        let mut plain = plain_sets(&mut writer, PLAIN_KEY, plan.samples);
        set_p50.push(quantile_us(&mut plain, 0.5));
        set_p99.push(quantile_us(&mut plain, 0.99));
        let (mut d, mut w) = one.measure(&mut writer, KEY_1W, plan.samples);
        w1_p50.push(quantile_us(&mut d, 0.5));
        w1_p99.push(quantile_us(&mut d, 0.99));
        w1_set.push(quantile_us(&mut w, 0.5));
        let (mut d, mut w) = many.measure(&mut writer, KEY_MANY, plan.samples_many);
        wm_p50.push(quantile_us(&mut d, 0.5));
        wm_p99.push(quantile_us(&mut d, 0.99));
        wm_set.push(quantile_us(&mut w, 0.5));
        let mut k = keep_alives(&mut writer, &lease, plan.samples);
        ka_p50.push(quantile_us(&mut k, 0.5));
        sets.push(rate(&leader, Op::Set, plan.rep));
        kas.push(rate(&leader, Op::KeepAlive, plan.rep));
        cluster.check_running();
    }

    let base50 = report("plain SET latency p50 (unwatched key)", "us", &set_p50);
    let base99 = report("plain SET latency p99 (unwatched key)", "us", &set_p99);
    let got = report("1 watcher: SET sent to event read, p50", "us", &w1_p50);
    ratio("core.watch_1w_p50_vs_set", got, base50, "us", "event p50");
    let got = report("1 watcher: SET sent to event read, p99", "us", &w1_p99);
    ratio("core.watch_1w_p99_vs_set", got, base99, "us", "event p99");
    report(
        "(the watched SET's own latency p50, 1 watcher)",
        "us",
        &w1_set,
    );
    let got = report(
        &format!("{WATCHERS_MANY} watchers: SET sent to each event read, p50"),
        "us",
        &wm_p50,
    );
    ratio(
        "core.watch_1000w_p50_vs_set",
        got,
        base50,
        "us",
        "event p50",
    );
    let got = report(
        &format!("{WATCHERS_MANY} watchers: SET sent to each event read, p99"),
        "us",
        &wm_p99,
    );
    ratio(
        "core.watch_1000w_p99_vs_set",
        got,
        base99,
        "us",
        "event p99",
    );
    report(
        &format!("(the watched SET's own latency p50, {WATCHERS_MANY} watchers)"),
        "us",
        &wm_set,
    );
    let got = report("LEASE KEEPALIVE latency p50, 1 client", "us", &ka_p50);
    ratio(
        "core.keepalive_1c_p50_vs_set",
        got,
        base50,
        "us",
        "keep-alive p50",
    );
    let base = report(&format!("SETs/s, {CLIENTS} clients"), "ops/s", &sets);
    let got = report(&format!("keep-alives/s, {CLIENTS} clients"), "ops/s", &kas);
    ratio(
        "core.keepalives_64c_vs_sets",
        got,
        base,
        "ops/s",
        "keep-alives",
    );
    drop(many);
    drop(one);
}
