//! The framing codec: any chunking of a stream decodes to the same messages; oversize,
//! truncated and corrupted input never yields a message.

use bytes::Bytes;
use proptest::prelude::*;
use synod_transport::frame::{
    Envelope, FrameDecoder, FrameError, FrameKind, HEADER_BYTES, MAGIC, MessageKind, VERSION,
    begin_frame, decode_envelopes, finish_frame,
};
use synod_transport::{CorrelationId, NodeId};

const MAX: usize = 4096;

fn envelope_strategy() -> impl Strategy<Value = Envelope> {
    (
        any::<u64>(),
        0u8..3,
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(c, k, from, to, payload)| Envelope {
            correlation: CorrelationId(c),
            kind: [
                MessageKind::Request,
                MessageKind::Response,
                MessageKind::OneWay,
            ][k as usize],
            from: NodeId::new(from),
            to: NodeId::new(to),
            payload: Bytes::from(payload),
        })
}

/// Encodes `envelopes` as frames of `per_frame` envelopes each (a Request Batch), with a
/// keep-alive frame between batches.
fn encode(envelopes: &[Envelope], per_frame: usize) -> Vec<u8> {
    let mut wire = Vec::new();
    for batch in envelopes.chunks(per_frame.max(1)) {
        let start = begin_frame(&mut wire);
        for e in batch {
            e.encode_into(&mut wire);
        }
        finish_frame(&mut wire, start, FrameKind::Messages, MAX).expect("fits");
        let start = begin_frame(&mut wire);
        finish_frame(&mut wire, start, FrameKind::KeepAlive, MAX).unwrap();
    }
    wire
}

/// Feeds `wire` split at `cuts` and returns every envelope decoded.
fn decode(wire: &[u8], cuts: &[usize]) -> Result<Vec<Envelope>, FrameError> {
    let mut decoder = FrameDecoder::new(MAX);
    let mut out = Vec::new();
    let mut at = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.push(wire.len());
    for cut in cuts {
        decoder.extend(&wire[at..cut.max(at)]);
        at = cut.max(at);
        while let Some(frame) = decoder.next_frame()? {
            if frame.kind == FrameKind::Messages {
                out.extend(decode_envelopes(&frame.payload)?);
            }
        }
    }
    assert!(
        !decoder.is_mid_frame(),
        "whole stream, no partial frame left"
    );
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_chunkings_decode_to_the_same_messages(
        envelopes in proptest::collection::vec(envelope_strategy(), 1..12),
        per_frame in 1usize..5,
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        let wire = encode(&envelopes, per_frame);
        prop_assert_eq!(decode(&wire, &cuts).unwrap(), envelopes.clone());
        // All coalesced into one chunk.
        prop_assert_eq!(decode(&wire, &[]).unwrap(), envelopes);
    }

    #[test]
    fn a_stream_cut_short_anywhere_delivers_only_whole_frames(
        envelopes in proptest::collection::vec(envelope_strategy(), 1..6),
        cut in any::<usize>(),
    ) {
        let wire = encode(&envelopes, 1);
        let cut = cut % wire.len();
        let mut decoder = FrameDecoder::new(MAX);
        decoder.extend(&wire[..cut]);
        let mut got = Vec::new();
        while let Some(frame) = decoder.next_frame().unwrap() {
            if frame.kind == FrameKind::Messages {
                got.extend(decode_envelopes(&frame.payload).unwrap());
            }
        }
        // A prefix of the messages, never a piece of one.
        prop_assert!(got.len() <= envelopes.len());
        prop_assert_eq!(&got[..], &envelopes[..got.len()]);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_never_buffer_past_the_limit(
        bytes in proptest::collection::vec(any::<u8>(), 0..2000),
        chunk in 1usize..64,
    ) {
        let mut decoder = FrameDecoder::new(256);
        for piece in bytes.chunks(chunk) {
            decoder.extend(piece);
            while let Ok(Some(frame)) = decoder.next_frame() {
                let _ = decode_envelopes(&frame.payload);
            }
            prop_assert!(decoder.buffered_bytes() <= HEADER_BYTES + 256 + chunk);
        }
    }
}

#[test]
fn a_stream_split_at_every_byte_boundary_decodes_the_same() {
    let envelopes: Vec<Envelope> = (0..5u64)
        .map(|n| Envelope {
            correlation: CorrelationId(n * 1000),
            kind: MessageKind::Request,
            from: NodeId::new(1),
            to: NodeId::new(2),
            payload: Bytes::from(vec![n as u8; (n * 37) as usize]),
        })
        .collect();
    let wire = encode(&envelopes, 2);
    for split in 0..=wire.len() {
        assert_eq!(
            decode(&wire, &[split]).unwrap(),
            envelopes,
            "split at {split}"
        );
    }
    // And one byte at a time.
    let every: Vec<usize> = (0..wire.len()).collect();
    assert_eq!(decode(&wire, &every).unwrap(), envelopes);
    println!(
        "codec: {} bytes split at each of {} boundaries: same {} messages",
        wire.len(),
        wire.len() + 1,
        envelopes.len()
    );
}

#[test]
fn oversize_frame_is_refused_without_buffering_it() {
    let mut header = Vec::new();
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&[VERSION, 4, 0, 0]);
    header.extend_from_slice(&((MAX + 1) as u32).to_le_bytes());
    header.extend_from_slice(&[0; 4]);
    let mut decoder = FrameDecoder::new(MAX);
    decoder.extend(&header);
    assert_eq!(
        decoder.next_frame(),
        Err(FrameError::TooLarge {
            len: MAX as u64 + 1,
            max: MAX
        })
    );
    // Whatever follows is not buffered either.
    decoder.extend(&vec![0; MAX]);
    assert_eq!(decoder.buffered_bytes(), 0);
}

#[test]
fn truncated_frame_delivers_nothing() {
    let wire = encode(
        &[Envelope {
            correlation: CorrelationId(1),
            kind: MessageKind::OneWay,
            from: NodeId::new(1),
            to: NodeId::new(2),
            payload: Bytes::from_static(b"payload"),
        }],
        1,
    );
    // The messages frame is followed by a 16-byte keep-alive; cut inside the first frame.
    let first_frame_len = wire.len() - HEADER_BYTES;
    for cut in 0..first_frame_len {
        let mut decoder = FrameDecoder::new(MAX);
        decoder.extend(&wire[..cut]);
        assert_eq!(decoder.next_frame(), Ok(None), "cut at {cut}");
        assert_eq!(decoder.is_mid_frame(), cut > 0);
    }
}
