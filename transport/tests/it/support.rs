//! Helpers: configurations, waiting on conditions with deadlines, and a raw peer that
//! speaks the handshake by hand and then misbehaves.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use synod_transport::frame::{Envelope, FrameDecoder, FrameKind, MessageKind, encode_frame};
use synod_transport::handshake::{Hello, PROTOCOL, Welcome};
use synod_transport::{ClusterId, Config, ConfigBuilder, CorrelationId, NodeId, TcpTransport};

/// A generous bound for conditions that should hold quickly; only a broken transport
/// reaches it.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub const CLUSTER: ClusterId = ClusterId(7);

pub fn config(node: u64) -> ConfigBuilder {
    Config::builder(CLUSTER, NodeId::new(node))
}

pub fn start(builder: ConfigBuilder) -> TcpTransport {
    TcpTransport::bind(builder.build().expect("valid config"), "127.0.0.1:0").expect("bind")
}

/// Polls `condition` until it holds or `PATIENCE` passes; returns whether it held.
pub fn wait_for(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::yield_now();
        std::thread::sleep(Duration::from_millis(1));
    }
    condition()
}

pub fn frame(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(kind, payload, 1 << 20, &mut out).expect("small frame");
    out
}

pub fn hello(cluster: ClusterId, from: u64, to: u64) -> Vec<u8> {
    let hello = Hello {
        protocol: PROTOCOL,
        cluster,
        from: NodeId::new(from),
        to: NodeId::new(to),
    };
    frame(FrameKind::Hello, &postcard::to_allocvec(&hello).unwrap())
}

pub fn welcome(cluster: ClusterId, node: u64) -> Vec<u8> {
    let welcome = Welcome {
        cluster,
        node: NodeId::new(node),
    };
    frame(
        FrameKind::Welcome,
        &postcard::to_allocvec(&welcome).unwrap(),
    )
}

/// A messages frame holding one envelope.
pub fn message(kind: MessageKind, correlation: u64, from: u64, to: u64, payload: &[u8]) -> Vec<u8> {
    let envelope = Envelope {
        correlation: CorrelationId(correlation),
        kind,
        from: NodeId::new(from),
        to: NodeId::new(to),
        payload: Bytes::copy_from_slice(payload),
    };
    let mut body = Vec::new();
    envelope.encode_into(&mut body);
    frame(FrameKind::Messages, &body)
}

/// Reads one frame from a raw socket.
pub fn read_frame(stream: &mut TcpStream) -> Option<synod_transport::frame::Frame> {
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut byte = [0u8; 1];
    loop {
        if let Some(frame) = decoder.next_frame().ok()? {
            return Some(frame);
        }
        match stream.read(&mut byte) {
            Ok(1) => decoder.extend(&byte),
            _ => return None,
        }
    }
}

/// Dials `addr` as raw node `from` and completes the handshake.
pub fn raw_dial(addr: SocketAddr, from: u64, to: u64) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(&hello(CLUSTER, from, to)).unwrap();
    let answer = read_frame(&mut stream).expect("an answer to the hello");
    assert_eq!(answer.kind, FrameKind::Welcome, "raw dial refused");
    stream
}

/// A raw node `node` that accepts one dialer, welcomes it, and hands back the socket.
pub fn raw_acceptor(node: u64) -> (SocketAddr, std::thread::JoinHandle<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let hello = read_frame(&mut stream).expect("a hello");
        assert_eq!(hello.kind, FrameKind::Hello);
        stream.write_all(&welcome(CLUSTER, node)).unwrap();
        stream
    });
    (addr, handle)
}

/// Whether the server closed this raw socket (end of stream or reset), reading whatever
/// it still sends.
pub fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}
