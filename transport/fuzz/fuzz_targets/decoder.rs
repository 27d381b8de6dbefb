//! Fuzz target: the frame decoder and the envelope and handshake decoders, fed arbitrary
//! bytes in arbitrary chunks.
//!
//! Checks: nothing panics; the decoder never buffers more than one maximal frame plus the
//! last chunk; reading straight into a decoder (`read_from`) gives what feeding it chunks
//! gives; a decoder that failed stays failed; every frame it returns re-encodes to
//! bytes that decode to the same frame; the hand-written envelope decoder agrees with
//! postcard on envelopes written in their fewest bytes (and refuses any other). Run from `transport/fuzz` with
//! `cargo fuzz run decoder` (needs cargo-fuzz and a nightly toolchain).

#![no_main]

use libfuzzer_sys::fuzz_target;
use synod_transport::frame::{
    Envelope, FrameDecoder, FrameKind, HEADER_BYTES, decode_envelopes, encode_frame,
};
use synod_transport::handshake::{Hello, RejectReason, Welcome};

const MAX: usize = 4096;

/// The envelopes as postcard reads them, each only if written in its fewest bytes (postcard
/// writes it back as long as it read it); `None` otherwise.
fn with_postcard(mut bytes: &[u8]) -> Option<Vec<Envelope>> {
    if bytes.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (envelope, rest) = postcard::take_from_bytes::<Envelope>(bytes).ok()?;
        let canonical = postcard::to_allocvec(&envelope).ok()?;
        if canonical.len() != bytes.len() - rest.len() {
            return None;
        }
        out.push(envelope);
        bytes = rest;
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the chunk size, so that the same bytes are also tried split
    // differently.
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut decoder = FrameDecoder::new(MAX);
    // The same bytes read straight into a second decoder's buffer, as a connection does.
    let mut direct = FrameDecoder::new(MAX);
    let mut failed = false;
    for piece in bytes.chunks(chunk) {
        decoder.extend(piece);
        let read = direct.read_from(chunk, chunk, |room| {
            let n = piece.len().min(room.len());
            room[..n].copy_from_slice(&piece[..n]);
            Ok(n)
        });
        assert_eq!(read.ok(), Some(piece.len()), "room for a whole piece");
        loop {
            let next = decoder.next_frame();
            assert_eq!(direct.next_frame(), next, "both ways of feeding agree");
            match next {
                Ok(Some(frame)) => {
                    assert!(!failed, "a failed decoder produced a frame");
                    assert!(frame.payload.len() <= MAX);
                    match frame.kind {
                        FrameKind::Messages => {
                            // The hand-written decoder accepts exactly what postcard does
                            // when written in its fewest bytes.
                            let ours = decode_envelopes(&frame.payload).ok();
                            assert_eq!(ours, with_postcard(&frame.payload));
                        }
                        FrameKind::Hello => {
                            let _ = postcard::from_bytes::<Hello>(&frame.payload);
                        }
                        FrameKind::Welcome => {
                            let _ = postcard::from_bytes::<Welcome>(&frame.payload);
                        }
                        FrameKind::Reject => {
                            let _ = postcard::from_bytes::<RejectReason>(&frame.payload);
                        }
                        _ => {}
                    }
                    // Round trip: re-encoded, the frame decodes to itself.
                    let mut wire = Vec::new();
                    encode_frame(frame.kind, &frame.payload, MAX, &mut wire)
                        .expect("within the limit");
                    let mut again = FrameDecoder::new(MAX);
                    again.extend(&wire);
                    assert_eq!(again.next_frame(), Ok(Some(frame)));
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        assert!(decoder.buffered_bytes() <= HEADER_BYTES + MAX + chunk);
        assert_eq!(direct.buffered_bytes(), decoder.buffered_bytes());
    }
});
