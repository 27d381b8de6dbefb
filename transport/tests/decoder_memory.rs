//! What a frame header alone makes a receiver hold: a peer past the handshake sends a
//! 16-byte header announcing a frame of up to `frame_bytes_max` and nothing more. The
//! decoder's room for the payload grows with the bytes that arrive, so the header costs the
//! receiver about as little as it cost the sender, not the announced length (zero-filled,
//! so resident) for as long as the peer trickles a byte per keep-alive.
//!
//! Alone in its binary so that no other test's allocations move the process's resident size.

use synod_transport::frame::{FrameDecoder, FrameKind, HEADER_BYTES, encode_frame};

/// The process's resident memory in KiB (`/proc/self/statm`, pages of 4 KiB).
fn resident_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .expect("resident pages");
    pages * 4
}

#[test]
fn a_frame_header_alone_does_not_make_its_payload_resident() {
    const ANNOUNCED: usize = 64 << 20;
    const DECODERS: usize = 4;
    let payload = vec![7; ANNOUNCED];
    let mut wire = Vec::new();
    encode_frame(FrameKind::Messages, &payload, ANNOUNCED, &mut wire).expect("encoded");
    drop(payload);
    let header = wire[..HEADER_BYTES].to_vec();
    let before = resident_kib();
    let mut decoders = Vec::new();
    for _ in 0..DECODERS {
        let mut decoder = FrameDecoder::new(ANNOUNCED);
        decoder.extend(&header);
        assert_eq!(decoder.next_frame(), Ok(None), "waits for the payload");
        decoders.push(decoder);
    }
    let grown_kib = resident_kib().saturating_sub(before);
    // Room zeroed for the whole payload would be 64 MiB a decoder; the bound is a quarter
    // of one announced payload for all four.
    assert!(
        grown_kib < (ANNOUNCED / 4 / 1024) as u64,
        "{DECODERS} decoders given a {HEADER_BYTES}-byte header announcing {ANNOUNCED} bytes \
         made {grown_kib} KiB resident"
    );
    // The frame, fed in pieces as a connection reads it, is still decoded whole.
    let mut decoder = decoders.pop().expect("a decoder");
    let mut frames = Vec::new();
    for piece in wire[HEADER_BYTES..].chunks(1 << 20) {
        decoder.extend(piece);
        while let Some(frame) = decoder.next_frame().expect("valid framing") {
            frames.push(frame);
        }
    }
    assert_eq!(frames.len(), 1, "one frame");
    assert_eq!(decoder.buffered_bytes(), 0);
}
