//! Messages taken from a [`TcpTransport`](crate::TcpTransport) many at a time, without an
//! object or a reference count per message: [`Received`] and [`ReceivedMessage`].

use std::collections::{VecDeque, vec_deque};
use std::fmt;

use bytes::Bytes;

use crate::ids::{CorrelationId, NodeId};
use crate::transport::Incoming;

/// Requests and one-way messages received, oldest first, as
/// [`TcpTransport::recv_into`](crate::TcpTransport::recv_into) hands them over.
///
/// The payload of each frame that arrived is kept once, and each message is a place in it:
/// [`iter`](Self::iter) lends each message's bytes as a slice
/// ([`ReceivedMessage::payload`]), so taking a thousand messages and dropping them touches
/// the frames' reference counts, not one per message, and allocates nothing per message.
/// [`ReceivedMessage::to_incoming`] makes an owned [`Incoming`] of one message when it must
/// outlive the batch.
///
/// Keep one and reuse it (cleared) from call to call: taking everything that waits into an
/// empty `Received` trades buffers with the transport's queue rather than moving each
/// message. It holds at most what it was given: the transport's queue is bounded by
/// `inbound_messages_max` messages, each frame by `frame_bytes_max` bytes.
///
/// ```
/// # use std::time::Duration;
/// # use bytes::Bytes;
/// # use synod_transport::{ClusterId, Config, NodeId, Received, TcpTransport};
/// # let node1 = TcpTransport::bind(Config::builder(ClusterId(1), NodeId::new(1)).build()?, "127.0.0.1:0")?;
/// # let node2 = TcpTransport::bind(Config::builder(ClusterId(1), NodeId::new(2)).build()?, "127.0.0.1:0")?;
/// # node2.add_peer(NodeId::new(1), node1.local_addr());
/// # assert!(node2.wait_connected(NodeId::new(1), Duration::from_secs(10)));
/// let payloads = (0..10u8).map(|i| Bytes::from(vec![i; 3]));
/// node2.send_batch(NodeId::new(1), payloads)?;
/// let mut received = Received::new();
/// let mut sum = 0u32;
/// while sum < 3 * 45 {
///     received.clear();
///     node1.recv_into(&mut received, 1024, Duration::from_secs(10));
///     for message in &received {
///         assert_eq!(message.from(), NodeId::new(2));
///         sum += message.payload().iter().map(|&b| u32::from(b)).sum::<u32>();
///     }
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct Received {
    /// The frames the messages are in, oldest first: each with how many of the messages
    /// are its, never zero; their counts add up to [`len`](Self::len).
    runs: VecDeque<Run>,
    /// The messages, from `entries[head]` on (those before `head` were taken one by one).
    entries: Vec<Entry>,
    head: usize,
}

/// Consecutive messages of one frame from one peer.
#[derive(Clone, Debug)]
struct Run {
    from: NodeId,
    frame: Bytes,
    count: usize,
}

/// One message: its correlation id (for a request) and where its payload lies in its frame,
/// in 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The correlation id of a request; zero for a one-way message.
    correlation: u64,
    /// Where the payload starts in the frame, below 2^31; [`REQUEST`] is set for a request.
    start: u32,
    /// Where it ends, below 2^31.
    end: u32,
}

/// The bit of [`Entry::start`] that marks a request.
const REQUEST: u32 = 1 << 31;

impl Entry {
    /// A message whose payload is `start..end` of its frame; `None` if the frame is too
    /// large for an entry (2 GiB, far above `FRAME_BYTES_MAX_LIMIT`).
    #[inline]
    pub(crate) fn new(
        correlation: Option<CorrelationId>,
        start: usize,
        end: usize,
    ) -> Option<Entry> {
        if end >= REQUEST as usize {
            return None;
        }
        // Both below 2^31 (start is at most end).
        let (start, end) = (start as u32, end as u32);
        Some(match correlation {
            Some(CorrelationId(id)) => Entry {
                correlation: id,
                start: start | REQUEST,
                end,
            },
            None => Entry {
                correlation: 0,
                start,
                end,
            },
        })
    }

    pub(crate) fn correlation(self) -> Option<CorrelationId> {
        (self.start & REQUEST != 0).then_some(CorrelationId(self.correlation))
    }

    fn range(self) -> std::ops::Range<usize> {
        (self.start & !REQUEST) as usize..self.end as usize
    }
}

impl Received {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many messages it holds.
    pub fn len(&self) -> usize {
        self.entries.len() - self.head
    }

    /// Whether it holds no message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every message, keeping the room for the next batch.
    pub fn clear(&mut self) {
        self.runs.clear();
        self.entries.clear();
        self.head = 0;
    }

    /// The messages, oldest first.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            runs: self.runs.iter(),
            run: None,
            current: [].iter(),
            rest: &self.entries[self.head..],
        }
    }

    /// Appends the messages `entries` of `frame` (a messages frame's payload; every entry's
    /// range lies within it) from `from`.
    pub(crate) fn push_run(&mut self, from: NodeId, frame: &Bytes, entries: &[Entry]) {
        self.make_room_at_front();
        self.entries.extend_from_slice(entries);
        self.add_run(from, frame, entries.len());
    }

    /// Takes back the room of messages taken one by one, once they are past the middle
    /// (each message is moved at most once more than it is pushed, on average).
    fn make_room_at_front(&mut self) {
        if self.head > 0 && self.head >= self.entries.len() / 2 {
            self.entries.drain(..self.head);
            self.head = 0;
        }
    }

    fn add_run(&mut self, from: NodeId, frame: &Bytes, count: usize) {
        if count > 0 {
            self.runs.push_back(Run {
                from,
                frame: frame.clone(),
                count,
            });
        }
    }

    /// Where the next message [`push_entry`](Self::push_entry) adds will be: the mark to
    /// give [`end_run`](Self::end_run) or [`discard_from`](Self::discard_from).
    pub(crate) fn mark(&mut self) -> usize {
        self.make_room_at_front();
        self.entries.len()
    }

    /// Appends a message of a frame not yet given; until [`end_run`](Self::end_run) gives
    /// it, the batch must not be read.
    #[inline]
    pub(crate) fn push_entry(&mut self, entry: Entry) {
        self.entries.push(entry);
    }

    /// The messages pushed since `mark` are those of `frame`, from `from`.
    pub(crate) fn end_run(&mut self, from: NodeId, frame: &Bytes, mark: usize) {
        self.add_run(from, frame, self.entries.len() - mark);
    }

    /// Drops the messages pushed since `mark` (a frame that turned out bad).
    pub(crate) fn discard_from(&mut self, mark: usize) {
        self.entries.truncate(mark);
    }

    /// Each run: its sender, its frame and its messages.
    pub(crate) fn runs(&self) -> impl Iterator<Item = (NodeId, &Bytes, &[Entry])> {
        let mut rest = &self.entries[self.head..];
        self.runs.iter().map(move |run| {
            let (now, later) = rest.split_at(run.count.min(rest.len()));
            rest = later;
            (run.from, &run.frame, now)
        })
    }

    /// Takes the oldest message out as an [`Incoming`].
    pub(crate) fn pop_front(&mut self) -> Option<Incoming> {
        let entry = *self.entries.get(self.head)?;
        self.head += 1;
        let run = self.runs.front_mut()?;
        let incoming = Incoming::new(run.from, slice(&run.frame, entry), entry.correlation());
        run.count -= 1;
        if run.count == 0 {
            self.runs.pop_front();
        }
        if self.head == self.entries.len() {
            self.entries.clear();
            self.head = 0;
        }
        Some(incoming)
    }

    /// Moves the oldest `n` messages (at most all) to the end of `out`. Into an empty `out`,
    /// all of them trade places with `out`'s empty buffers instead of being moved one by one.
    pub(crate) fn move_front_into(&mut self, out: &mut Received, n: usize) {
        let n = n.min(self.len());
        if n == self.len() && out.is_empty() {
            std::mem::swap(self, out);
            self.clear();
            return;
        }
        out.entries
            .extend_from_slice(&self.entries[self.head..self.head + n]);
        self.head += n;
        let mut left = n;
        while left > 0 {
            let Some(run) = self.runs.front_mut() else {
                break;
            };
            if run.count <= left {
                left -= run.count;
                out.runs.extend(self.runs.pop_front());
            } else {
                run.count -= left;
                out.runs.push_back(Run {
                    from: run.from,
                    frame: run.frame.clone(),
                    count: left,
                });
                left = 0;
            }
        }
    }
}

/// The payload of `entry`, a message of `frame`, as [`payload_of`] makes it.
pub(crate) fn slice(frame: &Bytes, entry: Entry) -> Bytes {
    payload_of(frame, entry.range())
}

/// Bytes of a frame's payload up to which a received message's [`Bytes`] shares the frame
/// whatever its own size.
///
/// A message handed out as a [`Bytes`] (an [`Incoming`]'s payload, a response,
/// [`ReceivedMessage::payload_bytes`]) keeps alive what it is a slice of for as long as the
/// application holds it. It shares its frame (no copy) when the frame is at most this long,
/// or at most 8 times as long as the message; otherwise (a small message in a large frame)
/// it is a copy of its own. So a message kept holds at most the larger of this and 8 times
/// its own length, not up to `frame_bytes_max` (64 MiB at most) for a message of a few
/// bytes. Frames a sender fills up to its default `batch_bytes_max` (64 KiB) are shared.
pub const SHARED_FRAME_BYTES_MAX: usize = 64 << 10;

/// The bytes `range` of `frame` as a [`Bytes`]: a slice sharing the frame, or a copy where
/// sharing would keep a frame much larger than them alive ([`SHARED_FRAME_BYTES_MAX`]).
#[inline]
pub(crate) fn payload_of(frame: &Bytes, range: std::ops::Range<usize>) -> Bytes {
    // Frames are at most FRAME_BYTES_MAX_LIMIT (64 MiB): the product cannot overflow.
    if frame.len() <= SHARED_FRAME_BYTES_MAX || range.len().saturating_mul(8) >= frame.len() {
        frame.slice(range)
    } else {
        Bytes::copy_from_slice(&frame[range])
    }
}

impl<'a> IntoIterator for &'a Received {
    type Item = ReceivedMessage<'a>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// The messages of a [`Received`], oldest first.
#[derive(Debug)]
pub struct Iter<'a> {
    runs: vec_deque::Iter<'a, Run>,
    /// The run whose messages `current` goes through.
    run: Option<&'a Run>,
    current: std::slice::Iter<'a, Entry>,
    /// The messages of the runs after it.
    rest: &'a [Entry],
}

impl<'a> Iterator for Iter<'a> {
    type Item = ReceivedMessage<'a>;

    #[inline]
    fn next(&mut self) -> Option<ReceivedMessage<'a>> {
        let entry = loop {
            if let Some(entry) = self.current.next() {
                break entry;
            }
            let run = self.runs.next()?;
            let (now, later) = self.rest.split_at_checked(run.count)?;
            self.run = Some(run);
            self.current = now.iter();
            self.rest = later;
        };
        let run = self.run?;
        Some(ReceivedMessage {
            from: run.from,
            correlation: entry.correlation(),
            frame: &run.frame,
            payload: run.frame.get(entry.range())?,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.current.len() + self.rest.len();
        (n, Some(n))
    }
}

impl ExactSizeIterator for Iter<'_> {}

/// One message of a [`Received`]: who sent it, its bytes (borrowed from the frame it came
/// in), and for a request the correlation id to answer it with.
#[derive(Clone, Copy)]
pub struct ReceivedMessage<'a> {
    from: NodeId,
    correlation: Option<CorrelationId>,
    frame: &'a Bytes,
    payload: &'a [u8],
}

impl<'a> ReceivedMessage<'a> {
    /// The sender.
    pub fn from(&self) -> NodeId {
        self.from
    }

    /// The application's bytes.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The application's bytes as a [`Bytes`]: sharing the frame they came in (no copy),
    /// unless that frame is much larger than them ([`SHARED_FRAME_BYTES_MAX`]).
    pub fn payload_bytes(&self) -> Bytes {
        let start = self.payload.as_ptr() as usize - self.frame.as_ptr() as usize;
        payload_of(self.frame, start..start + self.payload.len())
    }

    /// The correlation id to respond with, for a request; `None` for a one-way message.
    pub fn correlation(&self) -> Option<CorrelationId> {
        self.correlation
    }

    /// Whether the sender waits for a response.
    pub fn is_request(&self) -> bool {
        self.correlation.is_some()
    }

    /// This message as an owned [`Incoming`] (its payload as
    /// [`payload_bytes`](Self::payload_bytes) makes it), for example to
    /// answer it with [`TcpTransport::respond`](crate::TcpTransport::respond).
    pub fn to_incoming(&self) -> Incoming {
        Incoming::new(self.from, self.payload_bytes(), self.correlation)
    }
}

impl fmt::Debug for ReceivedMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceivedMessage")
            .field("from", &self.from)
            .field("correlation", &self.correlation)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> Bytes {
        Bytes::from((0..20).map(|i| n * 20 + i).collect::<Vec<u8>>())
    }

    fn entry(start: usize, request: Option<u64>) -> Entry {
        Entry::new(request.map(CorrelationId), start, start + 2).expect("small")
    }

    /// Whether `payload` lies within `frame`'s bytes (shares it).
    fn shares(payload: &Bytes, frame: &Bytes) -> bool {
        let (p, f) = (payload.as_ptr() as usize, frame.as_ptr() as usize);
        p >= f && p + payload.len() <= f + frame.len()
    }

    #[test]
    fn a_payload_shares_its_frame_unless_the_frame_is_much_larger() {
        let big = Bytes::from(vec![3u8; 8 * SHARED_FRAME_BYTES_MAX]);
        let small = Bytes::from(vec![4u8; SHARED_FRAME_BYTES_MAX]);
        // (frame, range, shared)
        let cases = [
            (&big, 10..74, false),
            (&big, 0..SHARED_FRAME_BYTES_MAX - 1, false),
            (&big, 0..SHARED_FRAME_BYTES_MAX, true),
            (&big, 100..big.len(), true),
            (&small, 10..11, true),
            (&small, 0..small.len(), true),
        ];
        for (frame, range, shared) in cases {
            let payload = payload_of(frame, range.clone());
            assert_eq!(&payload[..], &frame[range.clone()]);
            assert_eq!(
                shares(&payload, frame),
                shared,
                "{range:?} of {}",
                frame.len()
            );
        }
        // Through a batch: each message as an Incoming, and lent then made a Bytes.
        let mut batch = Received::new();
        let entries = [
            Entry::new(None, 10, 74).expect("small"),
            Entry::new(None, 100, big.len()).expect("small"),
        ];
        batch.push_run(NodeId::new(2), &big, &entries);
        let lent: Vec<bool> = batch
            .iter()
            .map(|m| shares(&m.payload_bytes(), &big))
            .collect();
        assert_eq!(lent, [false, true]);
        let first = batch.pop_front().expect("first");
        let second = batch.pop_front().expect("second");
        assert!(!shares(first.payload(), &big));
        assert!(shares(second.payload(), &big));
    }

    /// What a message says: sender, correlation id, payload.
    type Seen = (NodeId, Option<CorrelationId>, Vec<u8>);

    /// Three runs from two peers: 3 messages of frame 0, 2 of frame 1, 4 of frame 2.
    fn sample() -> (Received, Vec<Seen>) {
        let mut received = Received::new();
        let mut want = Vec::new();
        for (n, from, count) in [(0u8, 2u64, 3usize), (1, 3, 2), (2, 2, 4)] {
            let f = frame(n);
            let entries: Vec<Entry> = (0..count)
                .map(|i| entry(i * 4, (i % 2 == 1).then_some(i as u64)))
                .collect();
            for e in &entries {
                want.push((NodeId::new(from), e.correlation(), f[e.range()].to_vec()));
            }
            if n == 1 {
                // Pushed one by one, as the reader does.
                let mark = received.mark();
                for &e in &entries {
                    received.push_entry(e);
                }
                received.end_run(NodeId::new(from), &f, mark);
            } else {
                received.push_run(NodeId::new(from), &f, &entries);
            }
        }
        (received, want)
    }

    fn contents(received: &Received) -> Vec<Seen> {
        received
            .iter()
            .map(|m| (m.from(), m.correlation(), m.payload().to_vec()))
            .collect()
    }

    #[test]
    fn messages_come_out_in_order_by_iteration_and_one_at_a_time() {
        let (mut received, want) = sample();
        assert_eq!(received.len(), 9);
        assert_eq!(received.iter().len(), 9);
        assert_eq!(contents(&received), want);
        // Owned copies agree with the borrowed views.
        let owned: Vec<_> = received.iter().map(|m| m.to_incoming()).collect();
        for (incoming, (from, correlation, payload)) in owned.iter().zip(&want) {
            assert_eq!(
                (
                    incoming.from(),
                    incoming.correlation(),
                    &incoming.payload()[..]
                ),
                (*from, *correlation, &payload[..])
            );
        }
        let mut popped = Vec::new();
        while let Some(incoming) = received.pop_front() {
            popped.push((
                incoming.from(),
                incoming.correlation(),
                incoming.payload().to_vec(),
            ));
        }
        assert_eq!(popped, want);
        assert!(received.is_empty() && received.runs.is_empty());
        // An empty run adds nothing; a discarded one neither.
        received.push_run(NodeId::new(2), &frame(0), &[]);
        let mark = received.mark();
        received.push_entry(entry(0, None));
        received.discard_from(mark);
        received.end_run(NodeId::new(2), &frame(0), mark);
        assert!(received.runs.is_empty() && received.is_empty());
        // Entries keep their fields: a request with id 0 is still a request.
        let e = Entry::new(Some(CorrelationId(0)), 5, 9).unwrap();
        assert_eq!((e.correlation(), e.range()), (Some(CorrelationId(0)), 5..9));
        assert_eq!(Entry::new(None, 1 << 31, 1 << 31), None);
    }

    #[test]
    fn moving_any_number_of_messages_splits_runs_and_keeps_the_order() {
        for n in 0..=10 {
            for out_empty in [true, false] {
                let (mut queue, want) = sample();
                let mut out = Received::new();
                let mut expected_out = Vec::new();
                if !out_empty {
                    let f = frame(9);
                    out.push_run(NodeId::new(7), &f, &[entry(0, None)]);
                    expected_out.push((NodeId::new(7), None, f[0..2].to_vec()));
                }
                queue.move_front_into(&mut out, n);
                let moved = n.min(9);
                expected_out.extend(want[..moved].iter().cloned());
                assert_eq!(contents(&out), expected_out, "n {n}, out empty {out_empty}");
                assert_eq!(contents(&queue), want[moved..].to_vec(), "n {n}");
                for r in [&queue, &out] {
                    assert_eq!(r.runs.iter().map(|run| run.count).sum::<usize>(), r.len());
                    assert!(r.runs.iter().all(|run| run.count > 0));
                }
            }
        }
    }
}
