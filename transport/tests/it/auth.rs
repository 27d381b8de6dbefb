//! Peer authentication at the handshake: members that hold the same secret connect; a peer
//! without it, with another, or replaying a recorded handshake is refused on both sides and
//! nothing it sends is delivered.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use synod_transport::frame::{FrameKind, MessageKind};
use synod_transport::handshake::{
    Challenge, HandshakeError, PeerAuthenticator, Proof, RejectReason,
};
use synod_transport::{Disconnect, NodeId, TcpTransport};

use crate::support::{PATIENCE, closed_by_server, config, hello, message, start, wait_for};

/// A keyed hash for the tests (not a MAC anyone should deploy: the transport's plumbing is
/// what is tested here). Challenges come from a counter and the key, so every one is fresh.
struct ToyAuth {
    key: u64,
    drawn: AtomicU64,
    refusals: Mutex<Vec<(Option<SocketAddr>, NodeId, HandshakeError)>>,
}

impl ToyAuth {
    fn new(key: u64) -> Arc<ToyAuth> {
        Arc::new(ToyAuth {
            key,
            drawn: AtomicU64::new(0),
            refusals: Mutex::new(Vec::new()),
        })
    }

    fn refusals(&self) -> usize {
        self.refusals.lock().len()
    }
}

fn mix(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl PeerAuthenticator for ToyAuth {
    fn challenge(&self) -> Challenge {
        let n = self.drawn.fetch_add(1, Ordering::Relaxed);
        let mut out = [0u8; 32];
        for (i, chunk) in out.chunks_mut(8).enumerate() {
            let word = mix(
                self.key ^ 0x9E37,
                &[n.to_le_bytes(), (i as u64).to_le_bytes()].concat(),
            );
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        Challenge(out)
    }

    fn prove(&self, transcript: &[u8]) -> Proof {
        let mut out = [0u8; 32];
        for (i, chunk) in out.chunks_mut(8).enumerate() {
            let word = mix(self.key.rotate_left(i as u32 * 8), transcript);
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        Proof(out)
    }

    fn verify(&self, transcript: &[u8], proof: &Proof) -> bool {
        self.prove(transcript) == *proof
    }

    fn refused(&self, remote: Option<SocketAddr>, peer: NodeId, why: &HandshakeError) {
        self.refusals.lock().push((remote, peer, why.clone()));
    }
}

fn node(id: u64, auth: Option<Arc<ToyAuth>>) -> TcpTransport {
    let builder = config(id);
    let builder = match auth {
        Some(auth) => builder.authenticator(auth),
        None => builder,
    };
    start(builder)
}

fn handshake_error(client: &TcpTransport) -> HandshakeError {
    let handle = client
        .request(NodeId::new(1), Bytes::from_static(b"hi"), PATIENCE)
        .unwrap();
    match handle.wait() {
        Err(synod_transport::RequestError::ConnectionLost {
            reason: Disconnect::Handshake(err),
            ..
        }) => err,
        other => panic!("expected a handshake failure, got {other:?}"),
    }
}

fn refused_with(transport: &TcpTransport, reason: &RejectReason) -> bool {
    wait_for(|| {
        transport.recent_events().iter().any(|e| {
            e.reason == Disconnect::Handshake(HandshakeError::Refused(reason.clone()))
                && e.remote.is_some()
        })
    })
}

#[test]
fn members_holding_the_secret_connect_and_exchange_messages() {
    let a = node(1, Some(ToyAuth::new(42)));
    member_gets_in(&a);
    assert_eq!(a.stats().connections_refused, 0);
}

/// A member (node 2) holding `a`'s secret dials `a` (node 1), and a request and its answer
/// go through.
fn member_gets_in(a: &TcpTransport) {
    let b = node(2, Some(ToyAuth::new(42)));
    b.add_peer(NodeId::new(1), a.local_addr());
    let handle = b
        .request(NodeId::new(1), Bytes::from_static(b"q"), PATIENCE)
        .unwrap();
    let request = a.recv(PATIENCE).expect("the member's request arrives");
    a.respond(&request, Bytes::from_static(b"a")).unwrap();
    assert_eq!(&handle.wait().unwrap()[..], b"a");
}

#[test]
fn a_peer_with_another_secret_is_refused_on_both_sides_and_delivers_nothing() {
    let a_auth = ToyAuth::new(42);
    let a = node(1, Some(Arc::clone(&a_auth)));
    let b_auth = ToyAuth::new(43);
    let b = node(2, Some(Arc::clone(&b_auth)));
    b.add_peer(NodeId::new(1), a.local_addr());
    // The acceptor proves itself first: the dialer finds the proof wrong and hangs up.
    assert_eq!(handshake_error(&b), HandshakeError::PeerNotAuthenticated);
    assert!(refused_with(&a, &RejectReason::AuthenticationFailed));
    assert!(wait_for(|| a_auth.refusals() > 0 && b_auth.refusals() > 0));
    let (remote, peer, _) = a_auth.refusals.lock()[0].clone();
    assert_eq!(peer, NodeId::new(2));
    assert!(remote.is_some(), "the refused peer's address is reported");
    assert!(a.try_recv().is_none());
    assert!(!a.is_connected(NodeId::new(2)));
}

#[test]
fn a_peer_without_a_secret_is_refused_and_so_is_a_hello_followed_by_messages() {
    let a_auth = ToyAuth::new(42);
    let a = node(1, Some(Arc::clone(&a_auth)));
    let open = node(2, None);
    open.add_peer(NodeId::new(1), a.local_addr());
    assert_eq!(
        handshake_error(&open),
        HandshakeError::RejectedByPeer(RejectReason::AuthenticationRequired)
    );
    assert!(refused_with(&a, &RejectReason::AuthenticationRequired));
    // A raw peer that sends the open hello and its messages straight after, without
    // waiting for an answer: none of them is read.
    let mut raw = TcpStream::connect(a.local_addr()).unwrap();
    let mut bytes = hello(crate::support::CLUSTER, 3, 1);
    bytes.extend(message(MessageKind::OneWay, 0, 3, 1, b"vote for me"));
    raw.write_all(&bytes).unwrap();
    assert!(closed_by_server(&mut raw));
    assert!(a.try_recv().is_none());
    assert!(wait_for(|| a_auth.refusals() >= 2));
    // The converse: an open acceptor tells an authenticating dialer what is wrong.
    let plain = node(1, None);
    let auth = node(2, Some(ToyAuth::new(42)));
    auth.add_peer(NodeId::new(1), plain.local_addr());
    assert_eq!(
        handshake_error(&auth),
        HandshakeError::RejectedByPeer(RejectReason::AuthenticationNotConfigured)
    );
}

/// Forwards one connection from `listener` to `target`, keeping what the dialer sent.
fn recording_proxy(target: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&recorded);
    std::thread::spawn(move || {
        let Ok((mut from_dialer, _)) = listener.accept() else {
            return;
        };
        let Ok(mut to_acceptor) = TcpStream::connect(target) else {
            return;
        };
        let (mut back_from, mut back_to) = (
            to_acceptor.try_clone().unwrap(),
            from_dialer.try_clone().unwrap(),
        );
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut back_from, &mut back_to);
        });
        let mut buf = [0u8; 4096];
        while let Ok(n) = from_dialer.read(&mut buf) {
            if n == 0 {
                break;
            }
            keep.lock().extend_from_slice(&buf[..n]);
            if to_acceptor.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    (addr, recorded)
}

#[test]
fn a_recorded_handshake_replayed_is_refused_and_its_messages_are_not_delivered() {
    let a_auth = ToyAuth::new(42);
    let a = node(1, Some(Arc::clone(&a_auth)));
    let b = node(2, Some(ToyAuth::new(42)));
    let (proxy, recorded) = recording_proxy(a.local_addr());
    b.add_peer(NodeId::new(1), proxy);
    assert!(b.wait_connected(NodeId::new(1), PATIENCE));
    b.send(NodeId::new(1), Bytes::from_static(b"set x=1"))
        .unwrap();
    let got = a.recv(PATIENCE).expect("the genuine message arrives");
    assert_eq!(&got.payload()[..], b"set x=1");
    let transcript = recorded.lock().clone();
    assert!(
        transcript.len() > 100,
        "the recording holds the handshake and the message"
    );
    // The attacker replays every byte node 2 sent, handshake and message alike.
    let mut replay = TcpStream::connect(a.local_addr()).unwrap();
    replay.write_all(&transcript).unwrap();
    assert!(closed_by_server(&mut replay));
    assert!(refused_with(&a, &RejectReason::AuthenticationFailed));
    assert!(a.try_recv().is_none(), "a replayed message was delivered");
    assert!(wait_for(|| a_auth.refusals() > 0));
    // The genuine member is still connected and served.
    b.send(NodeId::new(1), Bytes::from_static(b"set y=2"))
        .unwrap();
    let got = a.recv(PATIENCE).expect("the member is still served");
    assert_eq!(&got.payload()[..], b"set y=2");
}

/// A stranger that sends its hello a byte now and then, never finishing it, loses its
/// connection (and its slot under `connections_max`) when the handshake's deadline passes,
/// however often a byte arrives; a member that holds the secret then gets in.
#[test]
fn a_stranger_trickling_its_hello_is_closed_at_the_handshake_deadline_and_frees_its_slot() {
    let a = start(
        config(1)
            .connections_max(1)
            .connect_timeout_ms(500)
            .authenticator(ToyAuth::new(42)),
    );
    // A hello frame that claims 240 payload bytes, sent one byte every 100 ms: it would take
    // 24 s to finish, and each byte comes well within any per-read timeout.
    let bytes = crate::support::frame(FrameKind::Hello, &[0u8; 240]);
    let mut reader = TcpStream::connect(a.local_addr()).unwrap();
    let mut writer = reader.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for byte in bytes {
            if writer.write_all(&[byte]).is_err() {
                return;
            }
            // The stranger's pace, not a wait for a condition.
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
    assert!(
        closed_by_server(&mut reader),
        "the acceptor keeps a handshake that never finishes"
    );
    trickle.join().unwrap();
    member_gets_in(&a);
}

/// Connections beyond `connections_max` are told so by a bounded number of threads; a flood
/// past that is closed at once instead of each connection holding a thread until its
/// handshake times out.
#[test]
fn a_flood_of_connections_past_the_limit_is_closed_at_once() {
    // A long handshake bound: before the flood is closed at once, each connection would sit
    // in a thread of its own for a minute.
    let a = start(config(1).connections_max(1).connect_timeout_ms(60_000));
    let mut held = Vec::new();
    for _ in 0..40 {
        held.push(TcpStream::connect(a.local_addr()).unwrap());
    }
    let last = held.last_mut().unwrap();
    assert!(
        closed_by_server(last),
        "a connection far past the limit waits for its handshake"
    );
    assert!(a.stats().connections_refused >= 20);
    let full = Disconnect::Handshake(HandshakeError::Refused(RejectReason::ConnectionLimit {
        max: 1,
    }));
    assert!(
        a.recent_events().iter().any(|e| e.reason == full),
        "a connection closed at once is recorded as refused for the limit"
    );
}
