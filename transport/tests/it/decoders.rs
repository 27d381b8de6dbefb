//! The decoders of bytes from a peer, fed random bytes and damaged valid encodings (bit
//! flips, truncations, splices, length fields set to 0 or huge: `synod_sim::mutate`): the
//! frame decoder with the envelopes inside a messages frame, and both sides of the
//! handshake (`decode_hello` and `check_hello` for the acceptor, `decode_answer` for the
//! dialer). Each answers with an error or a valid value and never panics; the frame decoder
//! never buffers more than one frame past its limit. The cargo-fuzz targets in
//! `transport/fuzz` run the same decoders with coverage feedback.

use bytes::Bytes;
use proptest::prelude::*;
use synod_sim::SimRng;
use synod_sim::mutate::mutate;
use synod_transport::frame::{
    Envelope, FrameDecoder, FrameKind, HEADER_BYTES, MessageKind, decode_envelopes, encode_frame,
};
use synod_transport::handshake::{
    self, HANDSHAKE_BYTES_MAX, HandshakeError, Hello, PROTOCOL, RejectReason, Welcome,
};
use synod_transport::{ClusterId, CorrelationId, NodeId};

const MAX: usize = 1024;
const CLUSTER: ClusterId = ClusterId(7);

fn random_bytes(rng: &mut SimRng) -> Vec<u8> {
    (0..rng.below(300)).map(|_| rng.next_u64() as u8).collect()
}

/// A few frames of every kind, as a peer sends them after the handshake.
fn frames(rng: &mut SimRng) -> Vec<u8> {
    let mut wire = Vec::new();
    for _ in 0..rng.between(1, 3) {
        let mut payload = Vec::new();
        for n in 0..rng.between(1, 3) {
            Envelope {
                correlation: CorrelationId(rng.next_u64()),
                kind: MessageKind::Request,
                from: NodeId::new(2),
                to: NodeId::new(1),
                payload: Bytes::from(vec![n as u8; rng.below(60) as usize]),
            }
            .encode_into(&mut payload);
        }
        encode_frame(FrameKind::Messages, &payload, MAX, &mut wire).expect("fits");
        encode_frame(FrameKind::KeepAlive, &[], MAX, &mut wire).expect("fits");
    }
    wire
}

/// What one side of a handshake sends first: a hello, or an answer to one.
fn handshake_frame(rng: &mut SimRng) -> Vec<u8> {
    let mut wire = Vec::new();
    let (kind, payload) = match rng.below(3) {
        0 => {
            let hello = Hello {
                protocol: PROTOCOL,
                cluster: CLUSTER,
                from: NodeId::new(2),
                to: NodeId::new(1),
            };
            (FrameKind::Hello, postcard::to_allocvec(&hello))
        }
        1 => {
            let welcome = Welcome {
                cluster: CLUSTER,
                node: NodeId::new(2),
            };
            (FrameKind::Welcome, postcard::to_allocvec(&welcome))
        }
        _ => {
            let reason = RejectReason::ConnectionLimit { max: 256 };
            (FrameKind::Reject, postcard::to_allocvec(&reason))
        }
    };
    let payload = payload.expect("encodes");
    encode_frame(kind, &payload, HANDSHAKE_BYTES_MAX, &mut wire).expect("fits");
    wire
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn damaged_frames_decode_to_frames_or_an_error_within_the_limit(seed in any::<u64>()) {
        let mut rng = SimRng::new(seed);
        let valid = frames(&mut rng);
        for stream in [random_bytes(&mut rng), mutate(&valid, &mut rng), valid] {
            let chunk = rng.between(1, 64) as usize;
            let mut decoder = FrameDecoder::new(MAX);
            'stream: for piece in stream.chunks(chunk) {
                decoder.extend(piece);
                prop_assert!(decoder.buffered_bytes() <= HEADER_BYTES + MAX + chunk);
                loop {
                    match decoder.next_frame() {
                        Ok(Some(frame)) => {
                            prop_assert!(frame.payload.len() <= MAX);
                            if frame.kind == FrameKind::Messages {
                                let _ = decode_envelopes(&frame.payload);
                            }
                        }
                        Ok(None) => break,
                        Err(_) => break 'stream,
                    }
                }
            }
        }
    }

    #[test]
    fn damaged_handshakes_are_refused_or_name_the_expected_peer(seed in any::<u64>()) {
        let mut rng = SimRng::new(seed);
        let valid = handshake_frame(&mut rng);
        for stream in [random_bytes(&mut rng), mutate(&valid, &mut rng), valid] {
            let mut decoder = FrameDecoder::new(HANDSHAKE_BYTES_MAX);
            decoder.extend(&stream);
            prop_assert!(decoder.buffered_bytes() <= HEADER_BYTES + HANDSHAKE_BYTES_MAX + stream.len());
            let Ok(Some(frame)) = decoder.next_frame() else {
                continue;
            };
            // The acceptor's side.
            if let Ok(hello) = handshake::decode_hello(&frame) {
                prop_assert_eq!(frame.kind, FrameKind::Hello);
                if handshake::check_hello(&hello, CLUSTER, NodeId::new(1), false, None).is_ok() {
                    prop_assert_eq!((hello.cluster, hello.to), (CLUSTER, NodeId::new(1)));
                }
            }
            // The dialer's side.
            match handshake::decode_answer(&frame, CLUSTER, NodeId::new(2)) {
                Ok(welcome) => prop_assert_eq!((welcome.cluster, welcome.node), (CLUSTER, NodeId::new(2))),
                Err(HandshakeError::RejectedByPeer(_)) => prop_assert_eq!(frame.kind, FrameKind::Reject),
                Err(_) => {}
            }
        }
    }
}
