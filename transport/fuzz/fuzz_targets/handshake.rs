//! Fuzz target: both sides of the handshake, on arbitrary bytes from the peer.
//!
//! The first byte chooses the side and the chunk size; the rest is what the peer sent. The
//! acceptor reads the dialer's first frame with a decoder limited to `HANDSHAKE_BYTES_MAX`
//! and decides on the hello (`decode_hello`, `check_hello`); the dialer reads the
//! acceptor's answer (`decode_answer`), as `TcpTransport` does. Checks: nothing panics; the
//! decoder never buffers more than one handshake frame plus the last chunk; an accepted
//! hello or welcome names what the checks asked for, and re-encodes to a frame that reads
//! back the same. Run from `transport/fuzz` with `cargo fuzz run handshake`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use synod_transport::frame::{FrameDecoder, FrameKind, HEADER_BYTES, encode_frame};
use synod_transport::handshake::{
    self, HANDSHAKE_BYTES_MAX, HandshakeError, PROTOCOL, decode_answer, decode_hello,
};
use synod_transport::{ClusterId, NodeId};

const CLUSTER: ClusterId = ClusterId(7);
const ME: NodeId = NodeId::new(1);
const PEER: NodeId = NodeId::new(2);

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let acceptor = control & 1 == 0;
    let chunk = usize::from(control >> 1).max(1);
    let mut decoder = FrameDecoder::new(HANDSHAKE_BYTES_MAX);
    let mut frame = None;
    for piece in bytes.chunks(chunk) {
        decoder.extend(piece);
        assert!(decoder.buffered_bytes() <= HEADER_BYTES + HANDSHAKE_BYTES_MAX + chunk);
        match decoder.next_frame() {
            Ok(None) => {}
            Ok(Some(f)) => {
                frame = Some(f);
                break;
            }
            Err(_) => return,
        }
    }
    let Some(frame) = frame else { return };
    assert!(frame.payload.len() <= HANDSHAKE_BYTES_MAX);
    let mut again = Vec::new();
    if acceptor {
        let Ok(hello) = decode_hello(&frame) else {
            return;
        };
        let decision = handshake::check_hello(&hello, CLUSTER, ME, false, None);
        if decision.is_ok() {
            assert!(matches!(
                hello.protocol,
                PROTOCOL | handshake::PROTOCOL_AUTHENTICATED
            ));
            assert_eq!((hello.cluster, hello.to), (CLUSTER, ME));
            assert_ne!(hello.from, ME);
        }
        let payload = postcard::to_allocvec(&hello).expect("encodes");
        encode_frame(FrameKind::Hello, &payload, HANDSHAKE_BYTES_MAX, &mut again)
            .expect("a hello fits");
        let mut decoder = FrameDecoder::new(HANDSHAKE_BYTES_MAX);
        decoder.extend(&again);
        let back = decoder.next_frame().expect("valid").expect("whole");
        assert_eq!(decode_hello(&back), Ok(hello));
    } else {
        match decode_answer(&frame, CLUSTER, PEER) {
            Ok(welcome) => {
                assert_eq!((welcome.cluster, welcome.node), (CLUSTER, PEER));
                assert_eq!(frame.kind, FrameKind::Welcome);
            }
            Err(HandshakeError::RejectedByPeer(reason)) => {
                assert_eq!(frame.kind, FrameKind::Reject);
                let _ = reason.to_string();
            }
            Err(other) => {
                let _ = other.to_string();
            }
        }
    }
});
