//! Fuzz target: both sides of the handshake, on arbitrary bytes from the peer, the
//! authenticated steps included.
//!
//! The first byte chooses the step (its low two bits) and the chunk size (the rest); the
//! rest of the input is what the peer sent. Each step reads one frame with a decoder limited
//! to `HANDSHAKE_BYTES_MAX`, as `TcpTransport` does:
//! - the acceptor decides on a hello (`decode_hello`, `check_hello`);
//! - the dialer reads the acceptor's answer (`decode_answer`);
//! - the acceptor reads an auth step (`decode_auth`): a challenge gets its answer
//!   (`acceptor_answer`), anything else is checked as the dialer's proof
//!   (`check_dialer_proof`) against a transcript with fixed challenges;
//! - the dialer reads an auth step as the acceptor's answer (`dialer_proof`).
//!
//! Checks: nothing panics; the decoder never buffers more than one handshake frame plus the
//! last chunk; an accepted hello or welcome names what the checks asked for; a decoded hello
//! or auth step re-encodes to a frame that reads back the same; a dialer's proof passes only
//! if it is the proof over the transcript, and an acceptor's answer only if its proof is.
//! Run from `transport/fuzz` with `cargo fuzz run handshake`. A frame carries a CRC-32, so
//! random bytes seldom make one: a corpus seeded with real frames (a control byte, then an
//! auth frame of each step) reaches the authenticated steps within seconds.

#![no_main]

use libfuzzer_sys::fuzz_target;
use synod_transport::frame::{FrameDecoder, FrameKind, HEADER_BYTES, encode_frame};
use synod_transport::handshake::{
    self, AuthStep, CHALLENGE_BYTES, Challenge, HANDSHAKE_BYTES_MAX, HandshakeError, PROOF_BYTES,
    PROTOCOL, PeerAuthenticator, Proof, Side, Transcript, decode_answer, decode_auth, decode_hello,
};
use synod_transport::{ClusterId, NodeId};

const CLUSTER: ClusterId = ClusterId(7);
const ME: NodeId = NodeId::new(1);
const PEER: NodeId = NodeId::new(2);

/// A stand-in for the cluster's secret: a fixed challenge and a keyed checksum as the proof
/// (the target exercises the handshake's logic, not the MAC).
struct Toy;

impl PeerAuthenticator for Toy {
    fn challenge(&self) -> Challenge {
        Challenge([9; CHALLENGE_BYTES])
    }

    fn prove(&self, transcript: &[u8]) -> Proof {
        let mut out = [0x5au8; PROOF_BYTES];
        for (i, b) in transcript.iter().enumerate() {
            let at = i % PROOF_BYTES;
            out[at] = out[at].rotate_left(3) ^ b;
        }
        Proof(out)
    }

    fn verify(&self, transcript: &[u8], proof: &Proof) -> bool {
        self.prove(transcript) == *proof
    }
}

/// An auth step re-encoded reads back the same.
fn round_trips(step: AuthStep) {
    let payload = postcard::to_allocvec(&step).expect("encodes");
    let mut again = Vec::new();
    encode_frame(FrameKind::Auth, &payload, HANDSHAKE_BYTES_MAX, &mut again).expect("fits");
    let mut decoder = FrameDecoder::new(HANDSHAKE_BYTES_MAX);
    decoder.extend(&again);
    let back = decoder.next_frame().expect("valid").expect("whole");
    assert_eq!(decode_auth(&back), Ok(step));
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let step = control & 3;
    let chunk = usize::from(control >> 2).max(1);
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
    if step == 2 {
        // The acceptor, after a hello from PEER.
        let Ok(auth) = decode_auth(&frame) else {
            return;
        };
        round_trips(auth);
        if let AuthStep::Challenge(challenge) = auth {
            let (transcript, answer) =
                handshake::acceptor_answer(&Toy, CLUSTER, PEER, ME, challenge);
            assert_eq!(transcript.dialer_challenge, challenge);
            let AuthStep::Answer { proof, .. } = answer else {
                panic!("an answer carries a proof")
            };
            assert!(Toy.verify(&transcript.bytes(Side::Acceptor), &proof));
            return;
        }
        let transcript = Transcript {
            cluster: CLUSTER,
            dialer: PEER,
            acceptor: ME,
            dialer_challenge: Challenge([1; CHALLENGE_BYTES]),
            acceptor_challenge: Toy.challenge(),
        };
        let expected = AuthStep::Proof(Toy.prove(&transcript.bytes(Side::Dialer)));
        let checked = handshake::check_dialer_proof(&Toy, &transcript, auth);
        assert_eq!(checked.is_ok(), auth == expected);
        return;
    }
    if step == 3 {
        // The dialer, after its challenge to PEER.
        let Ok(auth) = decode_auth(&frame) else {
            return;
        };
        round_trips(auth);
        let mine = Toy.challenge();
        match handshake::dialer_proof(&Toy, CLUSTER, ME, PEER, mine, auth) {
            Ok(proof) => {
                let AuthStep::Answer {
                    challenge,
                    proof: theirs,
                } = auth
                else {
                    panic!("a proof answered a step that is not an answer")
                };
                let transcript = Transcript {
                    cluster: CLUSTER,
                    dialer: ME,
                    acceptor: PEER,
                    dialer_challenge: mine,
                    acceptor_challenge: challenge,
                };
                assert!(Toy.verify(&transcript.bytes(Side::Acceptor), &theirs));
                assert_eq!(
                    proof,
                    AuthStep::Proof(Toy.prove(&transcript.bytes(Side::Dialer)))
                );
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        return;
    }
    if step == 0 {
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
