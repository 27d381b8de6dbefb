//! The accepting side: the handshake's checks, the connection limit, the idle timeout, and
//! garbage on the port.

use std::io::Write;
use std::net::TcpStream;

use bytes::Bytes;
use synod_transport::handshake::{HandshakeError, RejectReason};
use synod_transport::{ClusterId, Config, Disconnect, NodeId, RequestError, TcpTransport};

use crate::support::{PATIENCE, closed_by_server, config, start, wait_for};

fn handshake_failure(result: Result<Bytes, RequestError>) -> HandshakeError {
    match result {
        Err(RequestError::ConnectionLost {
            reason: Disconnect::Handshake(err),
            ..
        }) => err,
        other => panic!("expected a handshake failure, got {other:?}"),
    }
}

/// Requests from `client` to node 1 until one fails with a handshake error (the first
/// may be queued after the first refusal, and fail at the next attempt).
fn refused(client: &TcpTransport) -> HandshakeError {
    let handle = client
        .request(NodeId::new(1), Bytes::new(), PATIENCE)
        .unwrap();
    handshake_failure(handle.wait())
}

#[test]
fn a_wrong_cluster_id_is_refused_with_a_clear_error_on_both_sides() {
    let a = start(config(1));
    let stranger = TcpTransport::bind(
        Config::builder(ClusterId(99), NodeId::new(2))
            .build()
            .unwrap(),
        "127.0.0.1:0",
    )
    .unwrap();
    stranger.add_peer(NodeId::new(1), a.local_addr());
    let expected = RejectReason::WrongCluster {
        expected: ClusterId(7),
        got: ClusterId(99),
    };
    // The dialer's side.
    let err = refused(&stranger);
    assert_eq!(err, HandshakeError::RejectedByPeer(expected.clone()));
    println!("dialer sees: {err}");
    // The acceptor's side.
    assert!(wait_for(|| a.recent_events().iter().any(|e| e.reason
        == Disconnect::Handshake(HandshakeError::Refused(
            expected.clone()
        )))));
    let event = a.recent_events().into_iter().next().unwrap();
    println!("acceptor sees: {} from {:?}", event.reason, event.peer);
    assert_eq!(event.peer, Some(NodeId::new(2)));
    assert!(!a.is_connected(NodeId::new(2)));
}

#[test]
fn a_dialer_reaching_the_wrong_node_is_refused() {
    let a = start(config(1));
    let b = start(config(5));
    // Node 5 believes node 3 lives at node 1's address.
    b.add_peer(NodeId::new(3), a.local_addr());
    let handle = b.request(NodeId::new(3), Bytes::new(), PATIENCE).unwrap();
    assert_eq!(
        handshake_failure(handle.wait()),
        HandshakeError::RejectedByPeer(RejectReason::WrongNode {
            expected: NodeId::new(1),
            got: NodeId::new(3)
        })
    );
}

#[test]
fn the_connection_limit_refuses_extra_peers_and_keeps_serving_the_others() {
    let a = start(config(1).connections_max(2));
    let b = start(config(2));
    let c = start(config(3));
    b.add_peer(NodeId::new(1), a.local_addr());
    c.add_peer(NodeId::new(1), a.local_addr());
    assert!(b.wait_connected(NodeId::new(1), PATIENCE));
    assert!(c.wait_connected(NodeId::new(1), PATIENCE));
    let d = start(config(4));
    d.add_peer(NodeId::new(1), a.local_addr());
    assert_eq!(
        refused(&d),
        HandshakeError::RejectedByPeer(RejectReason::ConnectionLimit { max: 2 })
    );
    // The two admitted peers still work.
    for client in [&b, &c] {
        let h = client
            .request(NodeId::new(1), Bytes::from_static(b"q"), PATIENCE)
            .unwrap();
        let req = a.recv(PATIENCE).unwrap();
        a.respond(&req, Bytes::from_static(b"a")).unwrap();
        assert_eq!(&h.wait().unwrap()[..], b"a");
    }
    // When one leaves, the refused one gets in on its next attempt.
    drop(b);
    assert!(d.wait_connected(NodeId::new(1), PATIENCE));
}

#[test]
fn garbage_on_the_port_closes_that_connection_and_the_server_keeps_serving() {
    let a = start(config(1));
    let mut junk = TcpStream::connect(a.local_addr()).unwrap();
    junk.write_all(b"GET / HTTP/1.1\r\nHost: synod\r\n\r\n")
        .unwrap();
    assert!(closed_by_server(&mut junk), "garbage connection left open");
    assert!(wait_for(|| a
        .recent_events()
        .iter()
        .any(|e| matches!(e.reason, Disconnect::Protocol(_)))));
    // Garbage after a proper handshake also closes only that connection.
    let mut raw = crate::support::raw_dial(a.local_addr(), 3, 1);
    raw.write_all(&[0xFF; 64]).unwrap();
    assert!(closed_by_server(&mut raw));
    // A well-behaved peer is served.
    let b = start(config(2));
    b.add_peer(NodeId::new(1), a.local_addr());
    let h = b
        .request(NodeId::new(1), Bytes::from_static(b"hi"), PATIENCE)
        .unwrap();
    let req = a.recv(PATIENCE).unwrap();
    a.respond(&req, Bytes::from_static(b"hello")).unwrap();
    assert_eq!(&h.wait().unwrap()[..], b"hello");
    println!(
        "garbage: {} connections refused, the server still answers",
        a.stats().connections_refused
    );
}

#[test]
fn an_idle_accepted_connection_is_closed() {
    let a = start(
        config(1)
            .idle_timeout_ms(200)
            .keepalive_interval_ms(20)
            .keepalive_timeout_ms(2000),
    );
    let mut raw = crate::support::raw_dial(a.local_addr(), 2, 1);
    assert!(closed_by_server(&mut raw));
    assert!(wait_for(|| a
        .recent_events()
        .iter()
        .any(|e| e.reason == Disconnect::IdleTimeout { idle_ms: 200 })));
}

#[test]
fn before_the_handshake_a_large_frame_is_refused_at_the_handshake_limit() {
    let a = start(config(1));
    let mut raw = TcpStream::connect(a.local_addr()).unwrap();
    // A hello announcing 1 MiB: an unknown peer may not make the server buffer that much.
    let mut header = Vec::new();
    header.extend_from_slice(&synod_transport::frame::MAGIC);
    header.extend_from_slice(&[synod_transport::frame::VERSION, 1, 0, 0]);
    header.extend_from_slice(&(1u32 << 20).to_le_bytes());
    header.extend_from_slice(&[0; 4]);
    raw.write_all(&header).unwrap();
    assert!(closed_by_server(&mut raw));
    assert!(wait_for(|| a.recent_events().iter().any(|e| e.reason
        == Disconnect::Protocol(
            synod_transport::frame::FrameError::TooLarge {
                len: 1 << 20,
                max: synod_transport::handshake::HANDSHAKE_BYTES_MAX
            }
        ))));
}

#[test]
fn peers_that_come_and_go_leave_no_channel_behind() {
    let a = start(config(1));
    for id in 10..20 {
        let mut raw = crate::support::raw_dial(a.local_addr(), id, 1);
        assert!(a.wait_connected(NodeId::new(id), PATIENCE));
        raw.write_all(&crate::support::message(
            synod_transport::frame::MessageKind::OneWay,
            0,
            id,
            1,
            b"hi",
        ))
        .unwrap();
        drop(raw);
    }
    assert!(wait_for(|| a.peers().is_empty()), "left: {:?}", a.peers());
    // Each said hello before leaving (connections are served in parallel: any order).
    let mut senders: Vec<u64> = (10..20)
        .map(|_| a.recv(PATIENCE).unwrap().from().get())
        .collect();
    senders.sort_unstable();
    assert_eq!(senders, (10..20).collect::<Vec<_>>());
    // A peer this node dials stays known while disconnected.
    let b = start(config(5));
    b.add_peer(NodeId::new(1), a.local_addr());
    assert_eq!(b.peers(), vec![NodeId::new(1)]);
}
