//! Requests a follower sends on to the leader, as completions: what travels between the
//! two nodes, and the follower's table of requests waiting for the leader's answer.
//!
//! A follower's worker numbers each request it cannot take itself (a write, or opening or
//! closing a session) and gathers those it meets in one drain into one one-way peer
//! message per leader ([`Batches`]), at most [`FORWARD_BATCH_BYTES_MAX`] each, so that a
//! pipelining client's writes cost one message, not one transport request each. The
//! request waits in [`InFlight`] with its client's answer slot; no thread waits on it. The
//! leader answers the requests of one drain the same way, in one message per follower, and
//! the follower's transport reader that receives it completes each client's answer (the
//! client event loop writes the reply). At most [`FORWARDS_IN_FLIGHT_MAX`] requests of one
//! node wait for a leader at once; past that a client is told to try again.
//!
//! Delivery between two nodes is in order and at most once (what is queued on a connection
//! when it drops is lost), so a request whose message was sent and whose answer never came
//! may or may not have been carried out: the follower answers it unknown once the
//! connection to that leader is down, or at the request's deadline. Unknown means exactly
//! that, also later: a request may still be carried out after its client was told so. The
//! leader may take it up late (a leader paused past the deadline reads it when it resumes),
//! and on a connection this node dials, a message sent while the connection is down waits
//! in the transport's queue and goes out once it is dialled again (`synod-transport`'s
//! `admit` keeps it while a dialer exists), after the follower gave its requests up at a
//! tick; since one connection keeps its order, it still reaches that leader before the
//! client's later requests sent there. A message the transport refused (not connected and
//! not dialling, queue full) was not sent: its requests are certainly not done and are
//! tried again.
//!
//! The payloads start with a tag byte that no Raft message starts with (those start with
//! their format version, [`synod_consensus::WIRE_VERSION`]), then the number of items as
//! four bytes (little-endian), then the requests or answers one after another, each the
//! `postcard` encoding of its number and itself. A batch is taken whole or not at all
//! ([`decode_peer_batch`]): one whose items do not decode, are fewer than its count says (a
//! truncated batch) or are followed by more bytes is refused, none of its requests carried
//! out, as if the message had been lost.

use std::collections::BTreeMap;
use std::time::Instant;

use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use synod_consensus::NodeId;

use super::node::{Request, Response};
use crate::resp::Answer;

/// The first byte of a follower's batch of forwarded requests. Batches without an item
/// count were tagged 0xF0 and 0xF1: the tags changed with the format, so that a node of
/// either format takes the other's batches for a message it cannot read and drops them
/// (the requests in them end as unknown at their deadline) rather than misreading the count
/// as an item, or an item as the count.
const FORWARDS_TAG: u8 = 0xF2;
/// The first byte of a leader's batch of answers to forwarded requests.
const ANSWERS_TAG: u8 = 0xF3;
/// The tag and the item count before a batch's items.
const HEADER_BYTES: usize = 5;

/// A batch is sealed once it holds this many bytes; a request or answer larger than this
/// travels alone (the largest, a command of
/// [`COMMAND_BYTES_MAX`](super::server::COMMAND_BYTES_MAX), fits one peer frame).
pub const FORWARD_BATCH_BYTES_MAX: usize = 256 << 10;

/// Requests of one node waiting for a leader's answer at once, beyond which a client's
/// request that needs the leader is answered `TRYAGAIN`.
pub const FORWARDS_IN_FLIGHT_MAX: usize = 8192;

/// What a peer sent, told apart by its first byte.
#[derive(Debug)]
pub(super) enum PeerPayload {
    /// A follower's requests, each with the follower's number for it.
    Forwards(Vec<(u64, Request)>),
    /// A leader's answers, each with the number of the request it answers.
    Answers(Vec<(u64, Response)>),
    /// Anything else (a Raft message, or nothing this node understands).
    Other,
}

impl PeerPayload {
    /// Reads a payload. A batch that [`decode_peer_batch`] refuses is `Other`: nothing
    /// this node understands, dropped as a lost message is (the follower answers its
    /// requests unknown at their deadline), none of its requests carried out.
    pub(super) fn decode(bytes: &[u8]) -> PeerPayload {
        match decode_peer_batch(bytes) {
            Some(Ok(PeerBatch::Forwards(items))) => PeerPayload::Forwards(items),
            Some(Ok(PeerBatch::Answers(items))) => PeerPayload::Answers(items),
            Some(Err(_)) | None => PeerPayload::Other,
        }
    }
}

/// A batch one Consistent Core node sends another: a follower's requests forwarded to the
/// leader, or the leader's answers to them, each item with the follower's number for the
/// request.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerBatch {
    /// A follower's requests.
    Forwards(Vec<(u64, Request)>),
    /// A leader's answers, each to the request of that number.
    Answers(Vec<(u64, Response)>),
}

/// Why a batch was refused. Whatever the cause, none of its items is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchDecodeError {
    /// The payload ends inside the header (the tag and the item count).
    NoCount,
    /// Item `item` (from 0) does not decode, at `offset` bytes into the payload.
    BadItem {
        /// Which item.
        item: usize,
        /// Where it starts.
        offset: usize,
    },
    /// The header announces `announced` items and the payload holds `found`: a truncated
    /// batch (fewer), or one with bytes after its last item (more).
    WrongCount {
        /// The item count in the header.
        announced: u32,
        /// Items found before the payload ended, or before bytes past the announced count.
        found: usize,
    },
}

impl std::fmt::Display for BatchDecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchDecodeError::NoCount => write!(f, "batch shorter than its header"),
            BatchDecodeError::BadItem { item, offset } => {
                write!(f, "batch item {item} at byte {offset} does not decode")
            }
            BatchDecodeError::WrongCount { announced, found } => write!(
                f,
                "batch announces {announced} items and holds {found}{}",
                if *found < *announced as usize {
                    " (truncated)"
                } else {
                    " and more bytes"
                }
            ),
        }
    }
}

impl std::error::Error for BatchDecodeError {}

/// Reads a batch a peer sent: `None` if `bytes` are not a batch (a Raft message, which
/// starts with another byte), otherwise the whole batch or why it was refused. Never
/// panics, and holds no more than a few times `bytes.len()` in memory, whatever the count
/// in the header claims.
///
/// # Errors
///
/// [`BatchDecodeError`] for a tagged payload that is not a whole batch: garbage, a
/// truncated batch (even one cut between two items), or a batch with bytes after its
/// last item.
#[must_use]
pub fn decode_peer_batch(bytes: &[u8]) -> Option<Result<PeerBatch, BatchDecodeError>> {
    match bytes.first() {
        Some(&FORWARDS_TAG) => Some(decode_items(bytes).map(PeerBatch::Forwards)),
        Some(&ANSWERS_TAG) => Some(decode_items(bytes).map(PeerBatch::Answers)),
        _ => None,
    }
}

/// Encodes `batch` as one message (however large: the node itself splits its batches at
/// [`FORWARD_BATCH_BYTES_MAX`]), as [`decode_peer_batch`] reads it.
#[must_use]
pub fn encode_peer_batch(batch: &PeerBatch) -> Vec<u8> {
    fn encode<T: Serialize>(tag: u8, items: &[(u64, T)]) -> Vec<u8> {
        let mut bytes = header(tag);
        for (id, item) in items {
            bytes = encode_item(*id, item, bytes);
        }
        set_count(&mut bytes, items.len());
        bytes
    }
    match batch {
        PeerBatch::Forwards(items) => encode(FORWARDS_TAG, items),
        PeerBatch::Answers(items) => encode(ANSWERS_TAG, items),
    }
}

/// A batch's bytes before its first item, with a count of 0.
fn header(tag: u8) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(64);
    bytes.push(tag);
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes
}

/// Writes `count` into a batch's header.
fn set_count(bytes: &mut [u8], count: usize) {
    // A batch holds at most FORWARD_BATCH_BYTES_MAX bytes of items, or one item: far fewer
    // than u32::MAX items, each at least two bytes.
    let count = u32::try_from(count).expect("a batch's items fit the count");
    bytes[1..HEADER_BYTES].copy_from_slice(&count.to_le_bytes());
}

/// The items of a whole batch (`bytes` with its tag), all or none.
fn decode_items<T: DeserializeOwned>(bytes: &[u8]) -> Result<Vec<(u64, T)>, BatchDecodeError> {
    let count = bytes
        .get(1..HEADER_BYTES)
        .and_then(|c| <[u8; 4]>::try_from(c).ok())
        .map(u32::from_le_bytes)
        .ok_or(BatchDecodeError::NoCount)?;
    let mut rest = &bytes[HEADER_BYTES..];
    // Not reserved from the count, which a peer could set to anything: grown as items come.
    let mut items = Vec::new();
    while !rest.is_empty() {
        if items.len() == count as usize {
            return Err(BatchDecodeError::WrongCount {
                announced: count,
                found: items.len() + 1,
            });
        }
        let offset = bytes.len() - rest.len();
        let (item, tail) =
            postcard::take_from_bytes::<(u64, T)>(rest).map_err(|_| BatchDecodeError::BadItem {
                item: items.len(),
                offset,
            })?;
        items.push(item);
        rest = tail;
    }
    if items.len() != count as usize {
        return Err(BatchDecodeError::WrongCount {
            announced: count,
            found: items.len(),
        });
    }
    Ok(items)
}

/// One message's worth of numbered items for one peer: the encoded payload, and what the
/// sender keeps of each item (`E`) by its number.
#[derive(Debug)]
pub(super) struct Batch<E> {
    pub(super) bytes: Vec<u8>,
    pub(super) kept: Vec<(u64, E)>,
}

/// Items gathered for peers during one drain, encoded as they come, in messages of at most
/// [`FORWARD_BATCH_BYTES_MAX`] (but for one item larger than that, alone).
#[derive(Debug)]
pub(super) struct Batches<E> {
    tag: u8,
    open: BTreeMap<NodeId, Batch<E>>,
    sealed: Vec<(NodeId, Batch<E>)>,
    items: usize,
}

impl<E> Batches<E> {
    /// Batches of forwarded requests (from a follower to a leader).
    pub(super) fn forwards() -> Batches<E> {
        Batches::new(FORWARDS_TAG)
    }

    /// Batches of answers (from a leader to followers).
    pub(super) fn answers() -> Batches<E> {
        Batches::new(ANSWERS_TAG)
    }

    fn new(tag: u8) -> Batches<E> {
        Batches {
            tag,
            open: BTreeMap::new(),
            sealed: Vec::new(),
            items: 0,
        }
    }

    /// Items gathered and not taken yet.
    pub(super) fn len(&self) -> usize {
        self.items
    }

    /// Adds `item`, numbered `id`, to the message for `to`, keeping `kept` beside it.
    pub(super) fn push<T: Serialize>(&mut self, to: NodeId, id: u64, item: &T, kept: E) {
        self.add(to, id, kept, |_, bytes| encode_item(id, item, bytes));
    }

    /// Adds an item numbered `id` to the message for `to`: the part `item` picks of what is
    /// kept of it.
    pub(super) fn push_kept<T: Serialize>(
        &mut self,
        to: NodeId,
        id: u64,
        kept: E,
        item: impl FnOnce(&E) -> &T,
    ) {
        self.add(to, id, kept, |kept, bytes| {
            encode_item(id, item(kept), bytes)
        });
    }

    fn add(&mut self, to: NodeId, id: u64, kept: E, encode: impl FnOnce(&E, Vec<u8>) -> Vec<u8>) {
        let tag = self.tag;
        let batch = self.open.entry(to).or_insert_with(|| Batch {
            bytes: header(tag),
            kept: Vec::new(),
        });
        let start = batch.bytes.len();
        batch.bytes = encode(&kept, std::mem::take(&mut batch.bytes));
        batch.kept.push((id, kept));
        self.items += 1;
        if batch.bytes.len() <= FORWARD_BATCH_BYTES_MAX {
            return;
        }
        // Too large with this item: what came before it goes as one message, and the item
        // starts the next (or goes alone, if it is that large itself).
        let Some(mut full) = self.open.remove(&to) else {
            return;
        };
        if start > HEADER_BYTES {
            let mut next = header(tag);
            next.extend_from_slice(&full.bytes[start..]);
            full.bytes.truncate(start);
            let last = full.kept.pop().into_iter().collect();
            set_count(&mut full.bytes, full.kept.len());
            self.sealed.push((to, full));
            full = Batch {
                bytes: next,
                kept: last,
            };
        }
        if full.bytes.len() > FORWARD_BATCH_BYTES_MAX {
            set_count(&mut full.bytes, full.kept.len());
            self.sealed.push((to, full));
        } else {
            self.open.insert(to, full);
        }
    }

    /// Every message gathered, in the order each peer's items came, to send now.
    pub(super) fn take(&mut self) -> Vec<(NodeId, Batch<E>)> {
        self.items = 0;
        let mut all = std::mem::take(&mut self.sealed);
        all.extend(
            std::mem::take(&mut self.open)
                .into_iter()
                .map(|(to, mut batch)| {
                    set_count(&mut batch.bytes, batch.kept.len());
                    (to, batch)
                }),
        );
        all
    }
}

/// Appends the encoding of `(id, item)` to `bytes`.
fn encode_item<T: Serialize>(id: u64, item: &T, bytes: Vec<u8>) -> Vec<u8> {
    // Encoding an in-memory value into a Vec cannot fail.
    postcard::to_extend(&(id, item), bytes).expect("postcard encodes to a Vec")
}

/// A forwarded request waiting for its leader's answer.
#[derive(Debug)]
pub(super) struct Sent {
    /// The leader it was sent to: only that node's answer completes it.
    pub(super) leader: NodeId,
    pub(super) request: Request,
    pub(super) answer: Answer<Response>,
    /// When the node stops waiting and answers it itself.
    pub(super) deadline: Instant,
}

/// The follower's forwarded requests waiting for an answer, by number: filled by the
/// worker as it sends them, emptied by the transport reader that receives the answers (or
/// by the worker, for those whose answer will not come).
#[derive(Debug, Default)]
pub(super) struct InFlight {
    sent: Mutex<BTreeMap<u64, Sent>>,
}

impl InFlight {
    pub(super) fn len(&self) -> usize {
        self.sent.lock().len()
    }

    /// Records requests about to be sent.
    pub(super) fn insert(&self, sent: impl IntoIterator<Item = (u64, Sent)>) {
        self.sent.lock().extend(sent);
    }

    /// Takes back the requests numbered `ids` (their message could not be sent).
    pub(super) fn remove(&self, ids: impl IntoIterator<Item = u64>) -> Vec<Sent> {
        let mut sent = self.sent.lock();
        ids.into_iter().filter_map(|id| sent.remove(&id)).collect()
    }

    /// Takes the requests `answers` answer, each with its answer, if `from` is the leader
    /// it was sent to (an answer from another node, or for a request no longer waiting, is
    /// dropped).
    pub(super) fn answered(
        &self,
        from: NodeId,
        answers: Vec<(u64, Response)>,
    ) -> Vec<(Sent, Response)> {
        let mut sent = self.sent.lock();
        answers
            .into_iter()
            .filter_map(|(id, response)| match sent.get(&id) {
                Some(s) if s.leader == from => sent.remove(&id).map(|s| (s, response)),
                _ => None,
            })
            .collect()
    }

    /// Takes every request `give_up` says will not be answered.
    pub(super) fn take_if(&self, mut give_up: impl FnMut(&Sent) -> bool) -> Vec<Sent> {
        let mut sent = self.sent.lock();
        let ids: Vec<u64> = sent
            .iter()
            .filter(|(_, s)| give_up(s))
            .map(|(&id, _)| id)
            .collect();
        ids.into_iter().filter_map(|id| sent.remove(&id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consistent_core::kv::{KvCommand, KvReply, PutCondition};

    fn put(key: &str, value_bytes: usize) -> Request {
        Request::Write {
            command: KvCommand::Put {
                key: key.into(),
                value: vec![7; value_bytes],
                condition: PutCondition::Always,
            },
            session: None,
        }
    }

    fn requests(bytes: &[u8]) -> Vec<(u64, Request)> {
        match PeerPayload::decode(bytes) {
            PeerPayload::Forwards(items) => items,
            other => panic!("not a batch of requests: {other:?}"),
        }
    }

    #[test]
    fn requests_and_answers_round_trip_in_order_and_are_told_from_raft_messages() {
        let mut batches = Batches::forwards();
        let to = NodeId::new(2);
        for i in 0..100 {
            batches.push(to, i, &put(&format!("k{i}"), 10), ());
        }
        assert_eq!(batches.len(), 100);
        let taken = batches.take();
        assert_eq!(taken.len(), 1, "100 small requests make one message");
        let (peer, batch) = &taken[0];
        assert_eq!(*peer, to);
        let decoded = requests(&batch.bytes);
        let expected: Vec<(u64, Request)> =
            (0..100).map(|i| (i, put(&format!("k{i}"), 10))).collect();
        assert_eq!(decoded, expected);
        assert_eq!(batches.len(), 0);
        assert!(batches.take().is_empty());

        let mut answers = Batches::answers();
        answers.push(to, 9, &Response::Kv(KvReply::Ok), ());
        answers.push(to, 3, &Response::Retry("no".into()), ());
        let taken = answers.take();
        match PeerPayload::decode(&taken[0].1.bytes) {
            PeerPayload::Answers(items) => assert_eq!(
                items,
                vec![
                    (9, Response::Kv(KvReply::Ok)),
                    (3, Response::Retry("no".into()))
                ]
            ),
            other => panic!("not answers: {other:?}"),
        }
        // A Raft message starts with its version byte: not taken for either.
        let heartbeat = synod_consensus::WIRE_VERSION;
        assert!(matches!(
            PeerPayload::decode(&[heartbeat, 0, 0]),
            PeerPayload::Other
        ));
        assert!(matches!(PeerPayload::decode(&[]), PeerPayload::Other));
    }

    #[test]
    fn a_batch_is_sealed_at_its_byte_limit_and_a_larger_request_travels_alone() {
        let mut batches = Batches::forwards();
        let (a, b) = (NodeId::new(2), NodeId::new(3));
        // 40 requests of 10 KiB: more than one message's worth.
        for i in 0..40 {
            batches.push(a, i, &put("k", 10 << 10), i);
        }
        batches.push(b, 100, &put("big", FORWARD_BATCH_BYTES_MAX * 2), 100);
        batches.push(a, 40, &put("k", 1), 40);
        let taken = batches.take();
        let mut to_a = Vec::new();
        for (peer, batch) in &taken {
            let decoded = requests(&batch.bytes);
            let ids: Vec<u64> = decoded.iter().map(|(id, _)| *id).collect();
            let kept: Vec<u64> = batch.kept.iter().map(|(id, _)| *id).collect();
            assert_eq!(ids, kept, "what is kept matches what is sent");
            if *peer == a {
                assert!(batch.bytes.len() <= FORWARD_BATCH_BYTES_MAX);
                to_a.extend(ids);
            } else {
                assert_eq!(ids, vec![100], "the large request goes alone");
            }
        }
        assert_eq!(to_a, (0..=40).collect::<Vec<u64>>(), "in order, none lost");
        assert!(taken.iter().filter(|(p, _)| *p == a).count() >= 2);
    }

    /// Regression: a batch cut short kept the requests before the cut, and the leader
    /// carried them out; cut between two items it even decoded without complaint. Every
    /// truncation of a batch is now refused whole, and so is a batch with bytes after its
    /// last item.
    #[test]
    fn a_truncated_batch_is_refused_whole_and_keeps_no_prefix() {
        let sent: Vec<(u64, Request)> = (0..3).map(|i| (i, put(&format!("k{i}"), 5))).collect();
        let bytes = encode_peer_batch(&PeerBatch::Forwards(sent.clone()));
        assert_eq!(
            decode_peer_batch(&bytes),
            Some(Ok(PeerBatch::Forwards(sent)))
        );
        for len in 1..bytes.len() {
            let cut = &bytes[..len];
            let decoded = decode_peer_batch(cut).expect("still tagged");
            assert!(decoded.is_err(), "cut to {len} bytes: {decoded:?}");
            assert!(
                matches!(PeerPayload::decode(cut), PeerPayload::Other),
                "cut to {len} bytes, the leader would take some requests"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode_peer_batch(&longer),
            Some(Err(BatchDecodeError::WrongCount {
                announced: 3,
                found: 4
            }))
        ));
        assert_eq!(
            decode_peer_batch(&bytes[..3]),
            Some(Err(BatchDecodeError::NoCount))
        );
        // A count far beyond what the bytes hold reserves nothing for it.
        let mut lying = bytes;
        lying[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_peer_batch(&lying),
            Some(Err(BatchDecodeError::WrongCount { found: 3, .. }))
        ));
    }

    proptest::proptest! {
        /// Whatever a peer sends after either tag decodes without a panic, to no more items
        /// than its bytes could hold (each takes two at least); undamaged, to what was sent.
        #[test]
        fn any_bytes_after_a_tag_decode_without_a_panic_to_a_bounded_batch(
            answers in proptest::bool::ANY,
            valid in proptest::collection::vec((proptest::num::u64::ANY, 0usize..40), 0..8),
            flips in proptest::collection::vec((proptest::num::usize::ANY, 1u8..=255), 0..4),
            cut in proptest::option::of(proptest::num::usize::ANY),
            garbage in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let tag = if answers { ANSWERS_TAG } else { FORWARDS_TAG };
            let mut batches = Batches::new(tag);
            let retry = |bytes: usize| Response::Retry("x".repeat(bytes));
            for &(id, bytes) in &valid {
                if answers {
                    batches.push(NodeId::new(1), id, &retry(bytes), ());
                } else {
                    batches.push(NodeId::new(1), id, &put("k", bytes), ());
                }
            }
            let mut bytes = batches.take().pop().map_or_else(|| header(tag), |(_, b)| b.bytes);
            let damaged = !flips.is_empty() || cut.is_some() || !garbage.is_empty();
            let flipped = !flips.is_empty();
            for (at, flip) in flips {
                let at = at % bytes.len();
                if at > 0 {
                    bytes[at] ^= flip;
                }
            }
            let full = bytes.len();
            let mut cut_short = false;
            if let Some(cut) = cut {
                bytes.truncate(1 + cut % full);
                cut_short = bytes.len() < full;
            }
            let garbage_after = !garbage.is_empty();
            bytes.extend(garbage);
            let decoded = decode_peer_batch(&bytes).expect("a tagged payload is a batch");
            if !flipped && cut_short != garbage_after {
                // Cut short, or with bytes after its last item: refused whole, no prefix kept.
                proptest::prop_assert!(decoded.is_err(), "{:?}", decoded);
            }
            let items = match decoded {
                Ok(PeerBatch::Forwards(items)) => {
                    proptest::prop_assert!(!answers);
                    if !damaged {
                        let sent: Vec<_> = valid.iter().map(|&(id, b)| (id, put("k", b))).collect();
                        proptest::prop_assert_eq!(&items, &sent);
                    }
                    items.len()
                }
                Ok(PeerBatch::Answers(items)) => {
                    proptest::prop_assert!(answers);
                    if !damaged {
                        let sent: Vec<_> = valid.iter().map(|&(id, b)| (id, retry(b))).collect();
                        proptest::prop_assert_eq!(&items, &sent);
                    }
                    items.len()
                }
                Err(e) => {
                    proptest::prop_assert!(damaged, "an undamaged batch refused: {}", e);
                    0
                }
            };
            proptest::prop_assert!(items * 2 < bytes.len().max(2));
        }
    }
}
