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
        let open = match self.open {
            Some(start)
                if self.bytes.len() - start - HEADER_BYTES + queued.len > batch_bytes_max =>
            {
                finish_frame(&mut self.bytes, start, FrameKind::Messages, frame_bytes_max)
                    .expect("a frame holds at most batch_bytes_max, or one message");
                None
            }
            open => open,
        };
        if open.is_none() {
            self.open = Some(begin_frame(&mut self.bytes));
            self.frames += 1;
        }
        queued.envelope.encode_into(&mut self.bytes);
        self.messages += 1;
        self.envelope_bytes += queued.len;
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
}
