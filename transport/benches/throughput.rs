//! The headline benchmark of synod-transport, against raw TCP over loopback measured in
//! the same run.
//!
//! Three figures, each a ratio of the transport to its raw baseline:
//!
//! - `transport.rtt_depth1_vs_raw`: round-trip time of one 64-byte request at a time,
//!   against a blocking `TcpStream` ping-pong (lower is better; goal at most 1.3);
//! - `transport.pipeline_depth64_64b_vs_raw`: requests per second with 64 in flight,
//!   against a raw pipelined echo with a window of 64 (higher is better; goal at least 0.5).
//!   Like with like: 64-byte messages, a window of 64, and on the client one thread that
//!   refills the window in bulk (the raw writer writes every message that fits in one call;
//!   the transport's caller sends them with one `request_batch`) and one that reads (the
//!   raw reader; the transport's reader thread, which completes the requests). The server
//!   is one thread that reads and answers in both. `..._request_each_vs_raw` is the same
//!   window refilled with one `request` call per request, for comparison;
//! - `transport.batch_64b_vs_raw_stream`: one-way 64-byte messages per second, sent 100
//!   at a time with `send_batch` and taken by the receiver with `recv_into`, against a raw
//!   stream of length-prefixed 64-byte messages written through a buffer (higher is
//!   better; goal at least 0.5). `transport.send_each_64b_vs_raw_stream` is the same with
//!   one `send` call per message; `transport.batch_64b_on_reader_vs_raw_stream` the same
//!   with the messages taken by a batch handler on the connection's reader thread
//!   (`bind_with_batch_handler`) instead of a receiving thread.
//!
//! `SYNOD_BENCH_QUICK=1` runs fewer, shorter repetitions (under 30 seconds in all). A filter
//! argument runs only the figures whose name contains it (`cargo bench -p synod-transport
//! --bench throughput -- batch` for the `send_batch` stream and its baseline, `-- stream` for
//! both one-way streams).

use std::collections::VecDeque;
use std::io::{BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use synod_transport::{ClusterId, Config, NodeId, Received, ResponseHandle, TcpTransport};

const MSG: usize = 64;
const DEPTH: usize = 64;
/// Messages per `send_batch` call in the one-way stream.
const STREAM_BATCH: usize = 100;

struct Plan {
    reps: usize,
    window: Duration,
}

fn plan() -> Plan {
    if std::env::var_os("SYNOD_BENCH_QUICK").is_some() {
        Plan {
            reps: 5,
            window: Duration::from_millis(300),
        }
    } else {
        Plan {
            reps: 9,
            window: Duration::from_secs(2),
        }
    }
}

/// CPU time this process has used (all its threads, user and system), in seconds, from
/// `/proc/self/stat` (clock ticks of 10 ms); 0 where that file cannot be read.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The fields after the command name, which is in parentheses and may hold spaces.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// One run of a one-way stream, measured from the first message sent to the last one
/// delivered: set-up (binding, connecting, starting threads) and tear-down are outside it.
struct Sample {
    messages: u64,
    seconds: f64,
    /// CPU time of the whole process (all threads, both ends) over the same span.
    cpu_seconds: f64,
}

impl Sample {
    /// Starts measuring: call right before the first message is sent.
    fn start() -> (Instant, f64) {
        (Instant::now(), cpu_seconds())
    }

    /// Ends measuring: call right after the last message is delivered.
    fn end((start, cpu): (Instant, f64), messages: u64) -> Sample {
        Sample {
            seconds: start.elapsed().as_secs_f64(),
            cpu_seconds: cpu_seconds() - cpu,
            messages,
        }
    }

    fn rate(&self) -> f64 {
        self.messages as f64 / self.seconds
    }
}

/// The CPU a kind of stream spent over its runs, per message delivered.
#[derive(Default)]
struct Cpu {
    seconds: f64,
    messages: u64,
}

impl Cpu {
    /// Adds `sample`'s CPU and messages; returns its rate.
    fn add(&mut self, sample: &Sample) -> f64 {
        self.seconds += sample.cpu_seconds;
        self.messages += sample.messages;
        sample.rate()
    }

    fn ns_per_message(&self) -> f64 {
        self.seconds * 1e9 / self.messages.max(1) as f64
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(name: &str, unit: &str, v: &mut [f64]) -> f64 {
    let m = median(v);
    println!(
        "{name:<44} median {m:>12.1} {unit}  (min {:.1}, max {:.1}, n={})",
        v[0],
        v[v.len() - 1],
        v.len()
    );
    m
}

/// Runs `op` repeatedly for `window` and returns operations per second.
fn rate(window: Duration, mut op: impl FnMut() -> u64) -> f64 {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < window {
        n += op();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

// ---- raw baselines -------------------------------------------------------------------

/// A raw echo server: echoes whatever it reads, in chunks.
fn raw_echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                stream.set_nodelay(true).unwrap();
                let mut buf = vec![0; 64 << 10];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Microseconds per blocking 64-byte round trip.
fn raw_rtt_us(addr: std::net::SocketAddr, window: Duration) -> f64 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let msg = [7u8; MSG];
    let mut back = [0u8; MSG];
    let per_sec = rate(window, || {
        s.write_all(&msg).unwrap();
        s.read_exact(&mut back).unwrap();
        1
    });
    1e6 / per_sec
}

/// 64-byte messages per second echoed with at most `DEPTH` outstanding: a writer thread
/// keeps the window full (writing as many as fit in one call), the reader counts echoes.
fn raw_pipeline_rate(addr: std::net::SocketAddr, window: Duration) -> f64 {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let mut s = s.try_clone().unwrap();
        let (received, stop) = (Arc::clone(&received), Arc::clone(&stop));
        std::thread::spawn(move || {
            let chunk = vec![7u8; MSG * DEPTH];
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let room = DEPTH as u64 - (sent - received.load(Ordering::Acquire));
                if room == 0 {
                    std::thread::yield_now();
                    continue;
                }
                s.write_all(&chunk[..room as usize * MSG]).unwrap();
                sent += room;
            }
        })
    };
    let mut s = s;
    let mut buf = vec![0u8; 64 << 10];
    let mut bytes = 0u64;
    let start = Instant::now();
    while start.elapsed() < window {
        let n = s.read(&mut buf).unwrap();
        bytes += n as u64;
        received.store(bytes / MSG as u64, Ordering::Release);
    }
    let per_sec = (bytes / MSG as u64) as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    // Drain until the writer stops.
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    while !writer.is_finished() {
        if s.read(&mut buf).is_err() {
            received.store(u64::MAX / 2, Ordering::Release);
        }
    }
    writer.join().unwrap();
    per_sec
}

/// One-way 64-byte messages, each prefixed with its length, written through a buffer for
/// `window` and parsed by the receiver.
fn raw_stream_sample(window: Duration) -> Sample {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let counter = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 64 << 10];
        let mut pending = 0usize;
        let mut messages = 0u64;
        loop {
            let n = match s.read(&mut buf[pending..]) {
                Ok(0) | Err(_) => return messages,
                Ok(n) => n,
            };
            let end = pending + n;
            let mut at = 0;
            while end - at >= 4 {
                let len = u32::from_le_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
                if end - at < 4 + len {
                    break;
                }
                std::hint::black_box(&buf[at + 4..at + 4 + len]);
                at += 4 + len;
                messages += 1;
            }
            buf.copy_within(at..end, 0);
            pending = end - at;
        }
    });
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut w = BufWriter::with_capacity(64 << 10, s);
    let mut msg = Vec::with_capacity(4 + MSG);
    msg.extend_from_slice(&(MSG as u32).to_le_bytes());
    msg.extend_from_slice(&[7u8; MSG]);
    let measuring = Sample::start();
    let start = Instant::now();
    while start.elapsed() < window {
        for _ in 0..1000 {
            w.write_all(&msg).unwrap();
        }
    }
    w.flush().unwrap();
    drop(w);
    // The receiver returns once it has parsed the last message and seen the end.
    let messages = counter.join().unwrap();
    Sample::end(measuring, messages)
}

// ---- the transport ---------------------------------------------------------------------

fn echo_pair(
    builder: impl Fn(u64) -> synod_transport::ConfigBuilder,
) -> (TcpTransport, TcpTransport) {
    let server =
        TcpTransport::bind_with_handler(builder(1).build().unwrap(), "127.0.0.1:0", |req| {
            Some(req.payload().clone())
        })
        .unwrap();
    let client = TcpTransport::bind(builder(2).build().unwrap(), "127.0.0.1:0").unwrap();
    client.add_peer(NodeId::new(1), server.local_addr());
    assert!(client.wait_connected(NodeId::new(1), Duration::from_secs(10)));
    (server, client)
}

fn config(node: u64) -> synod_transport::ConfigBuilder {
    Config::builder(ClusterId(1), NodeId::new(node))
}

fn transport_rtt_us(client: &TcpTransport, window: Duration) -> f64 {
    let payload = Bytes::from_static(&[7u8; MSG]);
    let per_sec = rate(window, || {
        client
            .request(NodeId::new(1), payload.clone(), Duration::from_secs(10))
            .unwrap()
            .wait()
            .unwrap();
        1
    });
    1e6 / per_sec
}

fn transport_pipeline_rate(client: &TcpTransport, window: Duration) -> f64 {
    let payload = Bytes::from_static(&[7u8; MSG]);
    let mut in_flight = VecDeque::with_capacity(DEPTH);
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < window {
        while in_flight.len() < DEPTH {
            in_flight.push_back(
                client
                    .request(NodeId::new(1), payload.clone(), Duration::from_secs(10))
                    .unwrap(),
            );
        }
        in_flight.pop_front().unwrap().wait().unwrap();
        done += 1;
    }
    let per_sec = done as f64 / start.elapsed().as_secs_f64();
    for h in in_flight {
        h.wait().unwrap();
    }
    per_sec
}

/// Like [`transport_pipeline_rate`], but the window is refilled the way the raw baseline's
/// writer refills its own: every request that fits, in one call (`request_batch`), after
/// taking every response already there.
fn transport_pipeline_batch_rate(client: &TcpTransport, window: Duration) -> f64 {
    let payload = Bytes::from_static(&[7u8; MSG]);
    let mut in_flight = VecDeque::with_capacity(DEPTH);
    let mut fresh = Vec::with_capacity(DEPTH);
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < window {
        let room = DEPTH - in_flight.len();
        client
            .request_batch(
                NodeId::new(1),
                std::iter::repeat_n(payload.clone(), room),
                Duration::from_secs(10),
                &mut fresh,
            )
            .unwrap();
        in_flight.extend(fresh.drain(..));
        loop {
            in_flight.pop_front().unwrap().wait().unwrap();
            done += 1;
            if !in_flight.front().is_some_and(ResponseHandle::is_ready) {
                break;
            }
        }
    }
    let per_sec = done as f64 / start.elapsed().as_secs_f64();
    for h in in_flight {
        h.wait().unwrap();
    }
    per_sec
}

/// A sender connected to `receiver` (node 1), batching for up to 200 us.
fn stream_sender(receiver: &TcpTransport) -> TcpTransport {
    let sender = TcpTransport::bind(
        config(2).batch_delay_us_max(200).build().unwrap(),
        "127.0.0.1:0",
    )
    .unwrap();
    sender.add_peer(NodeId::new(1), receiver.local_addr());
    assert!(sender.wait_connected(NodeId::new(1), Duration::from_secs(10)));
    sender
}

/// Sends 64-byte one-way messages to node 1 for `window`: `batch` payloads per
/// `send_batch` call, or one `send` call per message when `batch` is 1. Returns how many.
fn send_stream(sender: &TcpTransport, window: Duration, batch: usize) -> u64 {
    let payload = Bytes::from_static(&[7u8; MSG]);
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < window {
        // `send` takes a `Bytes`; `send_batch` copies whatever bytes it is given, here
        // slices of one buffer, as the raw stream writes its messages from one.
        if batch == 1 {
            for _ in 0..1000 {
                sender.send(NodeId::new(1), payload.clone()).unwrap();
            }
            sent += 1000;
        } else {
            for _ in 0..1000 / batch {
                let n = sender
                    .send_batch(NodeId::new(1), std::iter::repeat_n(&payload[..], batch))
                    .unwrap();
                sent += n as u64;
            }
        }
    }
    sent
}

/// One-way messages from one thread to another ([`send_stream`]), taken by a receiving
/// thread with `recv_into`.
fn transport_stream_sample(window: Duration, batch: usize) -> Sample {
    let receiver = TcpTransport::bind(config(1).build().unwrap(), "127.0.0.1:0").unwrap();
    let sender = stream_sender(&receiver);
    let receiver = Arc::new(receiver);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let counter = {
        let (receiver, stop, delivered) = (
            Arc::clone(&receiver),
            Arc::clone(&stop),
            Arc::clone(&delivered),
        );
        std::thread::spawn(move || {
            let mut batch = Received::new();
            loop {
                batch.clear();
                let got = receiver.recv_into(&mut batch, 1024, Duration::from_millis(20));
                for m in &batch {
                    std::hint::black_box(m.payload());
                }
                delivered.fetch_add(got as u64, Ordering::Release);
                if got == 0 && stop.load(Ordering::Acquire) {
                    return;
                }
            }
        })
    };
    let measuring = Sample::start();
    let sent = send_stream(&sender, window, batch);
    // Until the receiving application has taken the last message: the rate is of messages
    // delivered to it.
    while delivered.load(Ordering::Acquire) < sent {
        std::thread::yield_now();
    }
    let sample = Sample::end(measuring, sent);
    stop.store(true, Ordering::Release);
    counter.join().unwrap();
    assert_eq!(
        delivered.load(Ordering::Acquire),
        sent,
        "every message delivered"
    );
    sample
}

/// One-way messages sent as [`transport_stream_sample`] sends them, but taken by a batch handler
/// on the connection's reader thread (no receiving thread, as the raw stream's receiver
/// reads the socket itself).
fn transport_stream_on_reader_sample(window: Duration, batch: usize) -> Sample {
    let got = Arc::new(AtomicU64::new(0));
    let receiver =
        TcpTransport::bind_with_batch_handler(config(1).build().unwrap(), "127.0.0.1:0", {
            let got = Arc::clone(&got);
            move |received, _| {
                for m in received {
                    std::hint::black_box(m.payload());
                }
                got.fetch_add(received.len() as u64, Ordering::Release);
            }
        })
        .unwrap();
    let sender = stream_sender(&receiver);
    let measuring = Sample::start();
    let sent = send_stream(&sender, window, batch);
    while got.load(Ordering::Acquire) < sent {
        std::thread::yield_now();
    }
    let sample = Sample::end(measuring, sent);
    assert_eq!(got.load(Ordering::Acquire), sent, "every message delivered");
    sample
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument runs only the figures whose name
    // contains it (`-- batch` for the batched one-way stream alone).
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let plan = plan();
    println!(
        "synod-transport throughput: {} repetitions of {:?} each, 64-byte messages over loopback",
        plan.reps, plan.window
    );
    println!(
        "like with like: rtt = one request at a time from one thread, both sides; pipeline = \
         window of 64, client refills in bulk on one thread and reads on another, server one \
         thread, both sides; stream = one sending thread, one receiving thread, both sides"
    );

    let echo = raw_echo_server();
    let (_server, client) = echo_pair(config);

    let mut raw_rtt = Vec::new();
    let mut rtt = Vec::new();
    let mut raw_pipe = Vec::new();
    let mut pipe = Vec::new();
    let mut pipe_each = Vec::new();
    let mut raw_stream = Vec::new();
    let mut stream = Vec::new();
    let mut stream_each = Vec::new();
    let mut stream_reader = Vec::new();
    let mut cpu = [
        Cpu::default(),
        Cpu::default(),
        Cpu::default(),
        Cpu::default(),
    ];
    for _ in 0..plan.reps {
        // Interleave baseline and component so that load on the machine hits both alike.
        if wanted("transport.rtt_depth1_vs_raw") {
            raw_rtt.push(raw_rtt_us(echo, plan.window));
            rtt.push(transport_rtt_us(&client, plan.window));
        }
        if wanted("transport.pipeline_depth64_64b") {
            raw_pipe.push(raw_pipeline_rate(echo, plan.window));
            pipe.push(transport_pipeline_batch_rate(&client, plan.window));
            pipe_each.push(transport_pipeline_rate(&client, plan.window));
        }
        let (batched, each, on_reader) = (
            wanted("transport.batch_64b_vs_raw_stream"),
            wanted("transport.send_each_64b_vs_raw_stream"),
            wanted("transport.batch_64b_on_reader_vs_raw_stream"),
        );
        let w = plan.window;
        if batched || each || on_reader {
            raw_stream.push(cpu[0].add(&raw_stream_sample(w)));
        }
        if batched {
            stream.push(cpu[1].add(&transport_stream_sample(w, STREAM_BATCH)));
        }
        if each {
            stream_each.push(cpu[2].add(&transport_stream_sample(w, 1)));
        }
        if on_reader {
            stream_reader.push(cpu[3].add(&transport_stream_on_reader_sample(w, STREAM_BATCH)));
        }
    }
    if !raw_stream.is_empty() {
        let raw_stream = report("raw buffered stream", "msg/s", &mut raw_stream);
        println!(
            "  CPU per message, both ends (all threads, from the first message sent to the last \
             delivered; ticks of 10 ms): raw {:.0} ns",
            cpu[0].ns_per_message()
        );
        if !stream.is_empty() {
            let stream = report(
                "transport one-way (send_batch of 100)",
                "msg/s",
                &mut stream,
            );
            println!(
                "  CPU per message: send_batch {:.0} ns",
                cpu[1].ns_per_message()
            );
            println!(
                "ratio transport.batch_64b_vs_raw_stream {:.3}",
                stream / raw_stream
            );
        }
        if !stream_reader.is_empty() {
            let stream_reader = report(
                "transport one-way (send_batch, batch handler)",
                "msg/s",
                &mut stream_reader,
            );
            println!(
                "  CPU per message: batch handler {:.0} ns",
                cpu[3].ns_per_message()
            );
            println!(
                "ratio transport.batch_64b_on_reader_vs_raw_stream {:.3}",
                stream_reader / raw_stream
            );
        }
        if !stream_each.is_empty() {
            let stream_each = report("transport one-way (send each)", "msg/s", &mut stream_each);
            println!(
                "  CPU per message: send each {:.0} ns",
                cpu[2].ns_per_message()
            );
            println!(
                "ratio transport.send_each_64b_vs_raw_stream {:.3}",
                stream_each / raw_stream
            );
        }
    }
    if !rtt.is_empty() {
        let raw_rtt = report("raw ping-pong rtt", "us", &mut raw_rtt);
        let rtt = report("transport request rtt (depth 1)", "us", &mut rtt);
        println!("ratio transport.rtt_depth1_vs_raw {:.3}", rtt / raw_rtt);
    }
    if !pipe.is_empty() {
        let raw_pipe = report("raw pipelined echo (depth 64)", "msg/s", &mut raw_pipe);
        let pipe = report(
            "transport pipeline (depth 64, request_batch)",
            "req/s",
            &mut pipe,
        );
        let pipe_each = report(
            "transport pipeline (depth 64, request each)",
            "req/s",
            &mut pipe_each,
        );
        println!(
            "ratio transport.pipeline_depth64_64b_vs_raw {:.3}",
            pipe / raw_pipe
        );
        println!(
            "ratio transport.pipeline_depth64_64b_request_each_vs_raw {:.3}",
            pipe_each / raw_pipe
        );
    }
    let (c, s) = (client.stats(), _server.stats());
    println!(
        "request batches (rtt and pipeline runs): {:.1} requests per frame, {:.1} responses per frame",
        c.messages_sent as f64 / c.batches_sent.max(1) as f64,
        s.messages_sent as f64 / s.batches_sent.max(1) as f64
    );
}
