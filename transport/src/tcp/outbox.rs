//! A channel's outbound queue, kept encoded: frames back to back in one buffer, handed

//! whole to whichever thread writes next, and the rest of a write a sender began itself.

use crate::frame::{Envelope, FrameKind, HEADER_BYTES, begin_frame, finish_frame};

#[derive(Debug)]
pub(super) struct Unfinished {
    /// The connection it was begun on: only that connection may carry the rest.
    pub(super) connection: u64,
    pub(super) buf: Vec<u8>,
    /// Bytes of `buf` already written.
    pub(super) written: usize,
    /// Messages in `buf`.
    pub(super) messages: u64,
}

/// One envelope about to be queued, with its encoded length.
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) envelope: Envelope,
    pub(super) len: usize,
}

impl Queued {
    pub(super) fn envelope_bytes(&self) -> usize {
        self.len
    }
}

/// A channel's outbound queue, already encoded: frames back to back in one buffer, ready
/// to be written with one system call. Every frame but the last is finished (header and
/// checksum filled in) when the next one begins; whoever takes the buffer finishes the
/// last one outside the channel lock. Queueing a message copies it into the buffer, which
/// is reused from write to write, so it allocates nothing in the steady state.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    pub(super) bytes: Vec<u8>,
    /// Where the last (open) frame begins in `bytes`, if there is one.
    pub(super) open: Option<usize>,
    /// Frames in `bytes`, the open one included.
    pub(super) frames: u64,
    /// Messages in `bytes`.
    pub(super) messages: usize,
    /// Encoded envelope bytes, frame headers excluded: what `outbound_bytes_max` bounds.
    pub(super) envelope_bytes: usize,
}

impl Outbox {
    pub(super) fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// Appends `queued`, in the open frame if it fits within `batch_bytes_max` (or the
    /// frame is empty), else in a new one.
    pub(super) fn push(&mut self, queued: &Queued, batch_bytes_max: usize, frame_bytes_max: usize) {
        self.open_frame_for(queued.len, batch_bytes_max, frame_bytes_max);
        queued.envelope.encode_into(&mut self.bytes);
        self.messages += 1;
        self.envelope_bytes += queued.len;
    }

    /// Appends envelopes already encoded back to back in `encoded`, from offset `from` on:
    /// envelope `k` ends at `ends[k]`. Frames are split as [`push`](Self::push) splits
    /// them, but each frame's share is copied in one piece.
    pub(super) fn push_encoded(
        &mut self,
        encoded: &[u8],
        mut from: usize,
        ends: &[usize],
        batch_bytes_max: usize,
        frame_bytes_max: usize,
    ) {
        let mut k = 0;
        while k < ends.len() {
            let start = self.open_frame_for(ends[k] - from, batch_bytes_max, frame_bytes_max);
            // Envelope k goes in this frame; so do those after it that end within its room.
            let room = (start + HEADER_BYTES + batch_bytes_max).saturating_sub(self.bytes.len());
            let mut j = k + 1;
            while j < ends.len() && ends[j] - from <= room {
                j += 1;
            }
            let end = ends[j - 1];
            self.bytes.extend_from_slice(&encoded[from..end]);
            self.messages += j - k;
            self.envelope_bytes += end - from;
            from = end;
            k = j;
        }
    }

    /// Makes sure a frame is open that an envelope of `len` bytes may join (the open one
    /// if it stays within `batch_bytes_max`, or a new, empty one); returns where it begins.
    fn open_frame_for(
        &mut self,
        len: usize,
        batch_bytes_max: usize,
        frame_bytes_max: usize,
    ) -> usize {
        if let Some(start) = self.open {
            if self.bytes.len() - start - HEADER_BYTES + len <= batch_bytes_max {
                return start;
            }
            finish_frame(&mut self.bytes, start, FrameKind::Messages, frame_bytes_max)
                .expect("a frame holds at most batch_bytes_max, or one message");
        }
        let start = begin_frame(&mut self.bytes);
        self.open = Some(start);
        self.frames += 1;
        start
    }

    /// Moves the queue into `out` (which must be empty), leaving this outbox empty; returns
    /// where the last, open frame begins in `out` and how many frames and messages it
    /// holds. `None` if the outbox was empty.
    pub(super) fn take(&mut self, out: &mut Vec<u8>) -> Option<Taken> {
        debug_assert!(out.is_empty());
        let open = self.open.take()?;
        std::mem::swap(&mut self.bytes, out);
        let taken = Taken {
            open,
            frames: self.frames,
            messages: self.messages as u64,
            envelope_bytes: self.envelope_bytes,
        };
        self.frames = 0;
        self.messages = 0;
        self.envelope_bytes = 0;
        Some(taken)
    }

    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.open = None;
        self.frames = 0;
        self.messages = 0;
        self.envelope_bytes = 0;
    }
}

/// What [`Outbox::take`] moved out.
#[derive(Clone, Copy, Debug)]
pub(super) struct Taken {
    pub(super) open: usize,
    pub(super) frames: u64,
    pub(super) messages: u64,
    pub(super) envelope_bytes: usize,
}

/// A write buffer kept between writes is shrunk back to this many times
/// `batch_bytes_max` (plus headers) if a burst grew it beyond, so that an idle channel
/// does not hold on to up to `outbound_bytes_max` of memory twice.
pub(super) const SPARE_BATCHES_MAX: usize = 4;

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::frame::{FrameDecoder, MessageKind, decode_envelopes_into};
    use crate::ids::{CorrelationId, NodeId};

    fn queued(n: u64, len: usize) -> Queued {
        let envelope = Envelope {
            correlation: CorrelationId(n),
            kind: MessageKind::OneWay,
            from: NodeId::new(2),
            to: NodeId::new(1),
            payload: Bytes::from(vec![n as u8; len]),
        };
        let len = envelope.encoded_len();
        Queued { envelope, len }
    }

    #[test]
    fn the_outbox_lays_out_whole_frames_within_the_batch_limit_in_order() {
        let batch_bytes_max = 100;
        let mut outbox = Outbox::default();
        // 10-byte payloads (15-byte envelopes), one larger than a batch, then small again.
        let lens = [10, 10, 10, 10, 10, 10, 10, 300, 10, 10];
        for (n, &len) in lens.iter().enumerate() {
            outbox.push(&queued(n as u64, len), batch_bytes_max, 1 << 20);
        }
        assert_eq!(outbox.messages, lens.len());
        let mut buf = Vec::new();
        let taken = outbox.take(&mut buf).expect("not empty");
        assert!(outbox.is_empty() && outbox.bytes.is_empty());
        assert_eq!(outbox.take(&mut Vec::new()).map(|t| t.messages), None);
        finish_frame(&mut buf, taken.open, FrameKind::Messages, 1 << 20).unwrap();
        let mut decoder = FrameDecoder::new(1 << 20);
        decoder.extend(&buf);
        let mut envelopes = Vec::new();
        let mut frames = 0;
        while let Some(frame) = decoder.next_frame().unwrap() {
            frames += 1;
            let before = envelopes.len();
            decode_envelopes_into(&frame.payload, &mut envelopes).unwrap();
            assert!(
                frame.payload.len() <= batch_bytes_max || envelopes.len() - before == 1,
                "a frame over the batch limit holds one message"
            );
        }
        // 6 small envelopes fill a frame (90 bytes), the 7th starts another, the large one
        // has its own, and the last two share one.
        assert_eq!(frames, 4);
        assert_eq!(taken.frames, 4);
        assert_eq!(taken.messages, lens.len() as u64);
        let got: Vec<(u64, usize)> = envelopes
            .iter()
            .map(|e| (e.correlation.0, e.payload.len()))
            .collect();
        let want: Vec<(u64, usize)> = lens
            .iter()
            .enumerate()
            .map(|(n, &l)| (n as u64, l))
            .collect();
        assert_eq!(got, want);
        // Cleared after a lost connection: nothing is left to write.
        outbox.push(&queued(1, 10), batch_bytes_max, 1 << 20);
        outbox.clear();
        assert!(outbox.is_empty() && outbox.take(&mut Vec::new()).is_none());
    }

    #[test]
    fn envelopes_queued_already_encoded_lay_out_exactly_as_one_at_a_time() {
        // Small, one over the batch limit, then small again, across several frames; the
        // encoded ones are queued in two pieces, the first ending mid-frame.
        let lens = [10, 10, 10, 10, 10, 10, 10, 300, 10, 10, 0, 40, 40];
        let (batch_bytes_max, frame_bytes_max) = (100, 1 << 20);
        let mut one_at_a_time = Outbox::default();
        let mut encoded = Vec::new();
        let mut ends = Vec::new();
        for (n, &len) in lens.iter().enumerate() {
            let q = queued(n as u64, len);
            one_at_a_time.push(&q, batch_bytes_max, frame_bytes_max);
            q.envelope.encode_into(&mut encoded);
            ends.push(encoded.len());
        }
        let mut together = Outbox::default();
        together.push_encoded(&encoded, 0, &ends[..4], batch_bytes_max, frame_bytes_max);
        together.push_encoded(
            &encoded,
            ends[3],
            &ends[4..],
            batch_bytes_max,
            frame_bytes_max,
        );
        assert_same_layout(&together, &one_at_a_time, "one batch");
        assert_eq!(together.frames, 5);
    }

    /// Asserts `together` holds byte for byte what `one_at_a_time` does, with the same open
    /// frame and counts.
    fn assert_same_layout(together: &Outbox, one_at_a_time: &Outbox, what: &str) {
        assert_eq!(together.bytes, one_at_a_time.bytes, "{what}");
        assert_eq!(together.open, one_at_a_time.open, "{what}");
        assert_eq!(
            (together.frames, together.messages, together.envelope_bytes),
            (
                one_at_a_time.frames,
                one_at_a_time.messages,
                one_at_a_time.envelope_bytes
            ),
            "{what}"
        );
    }

    /// review12 probe: envelopes queued already encoded, in chunks split anywhere, lay out
    /// byte for byte as one at a time, for batch limits from one byte (a frame per
    /// message) to several envelopes, with empty and over-the-limit payloads mixed in.
    #[test]
    fn encoded_chunks_split_anywhere_lay_out_as_one_at_a_time_for_every_batch_limit() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |bound: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % bound
        };
        for round in 0..400 {
            let batch_bytes_max = [1, 5, 15, 64, 100, 257, 1000][round % 7];
            let count = 1 + next(40) as usize;
            let lens: Vec<usize> = (0..count)
                .map(|_| match next(10) {
                    0 => 0,
                    1 => 200 + next(900) as usize,
                    _ => next(40) as usize,
                })
                .collect();
            let mut one_at_a_time = Outbox::default();
            let mut encoded = Vec::new();
            let mut ends = Vec::new();
            for (n, &len) in lens.iter().enumerate() {
                let q = queued(n as u64, len);
                one_at_a_time.push(&q, batch_bytes_max, 1 << 20);
                q.envelope.encode_into(&mut encoded);
                ends.push(encoded.len());
            }
            let mut together = Outbox::default();
            let (mut k, mut from) = (0, 0);
            while k < ends.len() {
                let j = k + 1 + next((ends.len() - k) as u64) as usize;
                together.push_encoded(&encoded, from, &ends[k..j], batch_bytes_max, 1 << 20);
                from = ends[j - 1];
                k = j;
            }
            assert_same_layout(&together, &one_at_a_time, &format!("round {round}"));
        }
    }
}
