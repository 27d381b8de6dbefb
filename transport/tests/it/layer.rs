//! The stream layer hook: a layer sees every accepted and dialed connection before the
//! handshake, the transport speaks only through the stream it returns, and a layer's
//! refusal closes that connection alone and is listed with the peer's address.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use synod_transport::{Disconnect, NodeId, RequestError, Stream, StreamLayer, TcpTransport};

use crate::support::{CLUSTER, PATIENCE, config, hello, start, wait_for};

/// A stand-in for TLS: every byte on the wire is the plaintext byte XOR a key, so a peer
/// without the layer sees garbage, and one with another key too.
#[derive(Debug)]
struct Xor {
    key: u8,
    accepted: AtomicUsize,
    dialed: AtomicUsize,
    /// Accepted connections are refused.
    refuse: bool,
}

impl Xor {
    fn layer(key: u8) -> Arc<Xor> {
        Arc::new(Xor {
            key,
            accepted: AtomicUsize::new(0),
            dialed: AtomicUsize::new(0),
            refuse: false,
        })
    }
}

#[derive(Debug)]
struct XorStream {
    socket: TcpStream,
    key: u8,
}

impl Stream for XorStream {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let n = Read::read(&mut &self.socket, buf)?;
        for b in &mut buf[..n] {
            *b ^= self.key;
        }
        Ok(n)
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        let wire: Vec<u8> = buf.iter().map(|b| b ^ self.key).collect();
        Write::write(&mut &self.socket, &wire)
    }

    fn socket(&self) -> &TcpStream {
        &self.socket
    }
}

impl StreamLayer for Xor {
    fn accepted(
        &self,
        socket: TcpStream,
        _: Option<SocketAddr>,
        _: Instant,
    ) -> io::Result<Box<dyn Stream>> {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        if self.refuse {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "not one of ours",
            ));
        }
        Ok(Box::new(XorStream {
            socket,
            key: self.key,
        }))
    }

    fn dialed(
        &self,
        socket: TcpStream,
        _: NodeId,
        _: SocketAddr,
        _: Instant,
    ) -> io::Result<Box<dyn Stream>> {
        self.dialed.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(XorStream {
            socket,
            key: self.key,
        }))
    }
}

fn layered(node: u64, layer: Arc<Xor>) -> TcpTransport {
    let echo: synod_transport::Handler = Arc::new(|incoming| Some(incoming.payload().clone()));
    TcpTransport::bind_layered(
        config(node).build().unwrap(),
        "127.0.0.1:0",
        layer,
        Some(echo),
    )
    .unwrap()
}

#[test]
fn a_layer_carries_every_byte_of_both_directions() {
    let (layer1, layer2) = (Xor::layer(0x5a), Xor::layer(0x5a));
    let a = layered(1, Arc::clone(&layer1));
    let b = layered(2, Arc::clone(&layer2));
    b.add_peer(NodeId::new(1), a.local_addr());
    // Large enough that writes are split and finished by the writer thread.
    let big: Bytes = (0..512 * 1024)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    for payload in [Bytes::from_static(b"small"), big] {
        let echoed = b
            .request(NodeId::new(1), payload.clone(), PATIENCE)
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(echoed, payload);
    }
    assert_eq!(layer1.accepted.load(Ordering::Relaxed), 1);
    assert_eq!(layer2.dialed.load(Ordering::Relaxed), 1);
}

#[test]
fn a_peer_without_the_layer_is_refused_both_ways() {
    let a = layered(1, Xor::layer(0x5a));
    // A plain hello reaches the layered node as garbage.
    let mut raw = TcpStream::connect(a.local_addr()).unwrap();
    raw.write_all(&hello(CLUSTER, 2, 1)).unwrap();
    assert!(wait_for(|| a
        .recent_events()
        .iter()
        .any(|e| matches!(e.reason, Disconnect::Protocol(_)))));
    assert_eq!(a.stats().connections_established, 0);
    // A plain node dialed by a layered one sees garbage too.
    let plain = start(config(1));
    let dialer = layered(2, Xor::layer(0x5a));
    dialer.add_peer(NodeId::new(1), plain.local_addr());
    let _ = dialer.send(NodeId::new(1), Bytes::from_static(b"x"));
    assert!(wait_for(|| plain.stats().connections_refused > 0));
    assert_eq!(plain.stats().connections_established, 0);
}

#[test]
fn a_layer_refusal_closes_that_connection_and_names_the_address() {
    let refusing = Arc::new(Xor {
        key: 0x5a,
        accepted: AtomicUsize::new(0),
        dialed: AtomicUsize::new(0),
        refuse: true,
    });
    let a = layered(1, Arc::clone(&refusing));
    let b = layered(2, Xor::layer(0x5a));
    b.add_peer(NodeId::new(1), a.local_addr());
    let result = b
        .request(NodeId::new(1), Bytes::from_static(b"hi"), PATIENCE)
        .unwrap()
        .wait();
    assert!(
        matches!(result, Err(RequestError::ConnectionLost { .. })),
        "{result:?}"
    );
    assert!(wait_for(|| a.recent_events().iter().any(|e| {
        matches!(
            e.reason,
            Disconnect::Layer {
                kind: io::ErrorKind::PermissionDenied,
                ..
            }
        ) && e.remote.is_some()
            && e.accepted
    })));
    assert_eq!(a.stats().connections_established, 0);
    assert!(refusing.accepted.load(Ordering::Relaxed) >= 1);
}
