//! Every decoder of bytes a Consistent Core node or its client reads, fed random bytes and
//! damaged valid encodings (bit flips, truncations, splices, length fields set to 0 or
//! huge: `synod_sim::mutate`): client requests as the server reads them
//! (`resp::parse_command`, in chunks), replies as the client library reads them
//! (`Value::parse` under `resp::client::reply_limits`), and what peers send: forwarded requests
//! and their answers, alone and in the batches followers and leaders exchange
//! (`decode_peer_batch`), committed log commands, snapshots of the state machine. Each answers
//! with an error or a valid value, never panics, and holds at most [`ALLOC_FACTOR`] times
//! its input plus [`ALLOC_SLACK_BYTES`] allocated at once, measured by the counting
//! allocator of `alloc.rs`. The cargo-fuzz targets in `examples/fuzz` run the same
//! decoders with coverage feedback.

use proptest::prelude::*;
use synod_consensus::LogIndex;
use synod_consensus::session::{SessionEntry, SessionId};
use synod_examples::consistent_core::kv::{
    KvCommand, KvQuery, KvReply, KvStore, LogCommand, PutCondition,
};
use synod_examples::consistent_core::node::{ReadMode, Request, Response, SessionSeq};
use synod_examples::consistent_core::{PeerBatch, decode_peer_batch, encode_peer_batch};
use synod_examples::resp::client::reply_limits;
use synod_examples::resp::{Limits, Value, parse_command};
use synod_sim::SimRng;
use synod_sim::mutate::mutate;

use crate::alloc::peak;

/// A value may take this many times its encoding in memory (a one-byte RESP argument is a
/// 24-byte `Vec` plus its allocation, in a vector that may have doubled).
const ALLOC_FACTOR: usize = 64;
/// What a decoder may hold whatever its input: the argument list reserved up front for
/// the count a command announces (at most `args_max`, 4,096 by default, of 24 bytes), and
/// serde's cap of 1 MiB on what it reserves for a sequence whose length a postcard
/// encoding claims (`size_hint::cautious`), for each of two nested sequences.
const ALLOC_SLACK_BYTES: usize = 2 << 20;

fn alloc_bound(input: usize) -> usize {
    input * ALLOC_FACTOR + ALLOC_SLACK_BYTES
}

fn random_bytes(rng: &mut SimRng) -> Vec<u8> {
    (0..rng.below(200)).map(|_| rng.next_u64() as u8).collect()
}

fn word(rng: &mut SimRng) -> Vec<u8> {
    (0..rng.below(12))
        .map(|_| b"ab\r\n $*:-+0123456789"[rng.below(20) as usize])
        .collect()
}

fn value(rng: &mut SimRng, depth: u32) -> Value {
    match rng.below(if depth > 2 { 7 } else { 10 }) {
        0 => Value::Simple("OK".into()),
        1 => Value::Error("ERR no".into()),
        2 => Value::Int(rng.next_u64() as i64),
        3 => Value::Bulk(word(rng)),
        4 => Value::Nil,
        5 => Value::Null,
        6 => Value::Boolean(rng.below(2) == 0),
        7 => Value::Push((0..rng.below(4)).map(|_| value(rng, depth + 1)).collect()),
        8 => Value::Map(
            (0..rng.below(3))
                .map(|_| (value(rng, depth + 1), value(rng, depth + 1)))
                .collect(),
        ),
        _ => Value::Array((0..rng.below(4)).map(|_| value(rng, depth + 1)).collect()),
    }
}

/// A few client commands, pipelined as clients send them.
fn commands(rng: &mut SimRng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.between(1, 3) {
        if rng.below(4) == 0 {
            out.extend_from_slice(b"GET key\r\n");
            continue;
        }
        let args = (0..rng.between(1, 4))
            .map(|_| Value::Bulk(word(rng)))
            .collect();
        Value::Array(args).encode(&mut out);
    }
    out
}

/// Reads `stream` `chunk` bytes at a time as the server does; the commands and whether it
/// ended in an error.
fn read_commands(stream: &[u8], chunk: usize, limits: &Limits) -> (Vec<Vec<Vec<u8>>>, bool) {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for piece in stream.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match parse_command(&buf, limits) {
                Ok(Some((args, used))) => {
                    assert!(used > 0 && used <= buf.len());
                    assert!(args.len() <= limits.args_max);
                    buf.drain(..used);
                    out.push(args);
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fn read_replies(stream: &[u8], chunk: usize) -> (Vec<Value>, bool) {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for piece in stream.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match Value::parse(&buf, &reply_limits()) {
                Ok(Some((value, used))) => {
                    assert!(used > 0 && used <= buf.len());
                    buf.drain(..used);
                    out.push(value);
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fn kv_command(rng: &mut SimRng) -> KvCommand {
    let key = word(rng);
    match rng.below(3) {
        0 => KvCommand::Put {
            key,
            value: word(rng),
            condition: PutCondition::Always,
        },
        1 => KvCommand::Delete {
            keys: vec![key.clone(), key],
        },
        _ => KvCommand::Cas {
            key,
            expected: Some(word(rng)),
            new: word(rng),
        },
    }
}

/// A valid encoding of each thing a node decodes from its peers, and from its disk.
fn peer_payloads(rng: &mut SimRng) -> [Vec<u8>; 6] {
    let request = Request::Write {
        command: kv_command(rng),
        session: Some(SessionSeq {
            session: SessionId(rng.below(9)),
            seq: rng.between(1, 9),
            ack_below: 1,
        }),
    };
    let read = Request::Read {
        query: KvQuery::Get(word(rng)),
        mode: ReadMode::Follower,
    };
    let response = Response::Kv(KvReply::Values(vec![Some(word(rng)), None]));
    let logged = if rng.below(2) == 0 {
        LogCommand::Plain {
            time: rng.next_u64(),
            command: kv_command(rng),
        }
    } else {
        LogCommand::Session(SessionEntry::Request {
            session: SessionId(3),
            seq: 1,
            ack_below: 1,
            time: 5,
            command: kv_command(rng),
        })
    };
    let mut store = KvStore::new();
    store.apply(
        LogIndex(1),
        LogCommand::Session(SessionEntry::Register { time: 1 }),
    );
    for i in 2..rng.between(2, 6) {
        store.apply(
            LogIndex(i),
            LogCommand::Plain {
                time: i,
                command: kv_command(rng),
            },
        );
    }
    let encode = |r: &Request| postcard::to_stdvec(r).expect("encodes");
    let forwards = PeerBatch::Forwards(vec![(rng.next_u64(), request.clone()), (7, read.clone())]);
    let answers = PeerBatch::Answers(vec![
        (rng.below(99), response.clone()),
        (3, Response::Retry("again".into())),
    ]);
    [
        if rng.below(2) == 0 {
            encode(&request)
        } else {
            encode(&read)
        },
        postcard::to_stdvec(&response).expect("encodes"),
        logged.encode(),
        store.snapshot(),
        encode_peer_batch(&forwards),
        encode_peer_batch(&answers),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn client_requests_read_in_any_chunks_are_commands_or_errors(seed in any::<u64>()) {
        let mut rng = SimRng::new(seed);
        let valid = commands(&mut rng);
        let small = Limits { args_max: 4, bulk_bytes_max: 8, request_bytes_max: 64 };
        for stream in [random_bytes(&mut rng), mutate(&valid, &mut rng), valid] {
            for limits in [Limits::default(), small] {
                let chunk = rng.between(1, 16) as usize;
                let ((chunked, failed), held) = peak(|| read_commands(&stream, chunk, &limits));
                prop_assert!(held <= alloc_bound(stream.len()), "{held} bytes for {}", stream.len());
                let (whole, whole_failed) = read_commands(&stream, stream.len(), &limits);
                prop_assert_eq!(chunked, whole);
                prop_assert_eq!(failed, whole_failed);
            }
        }
    }

    #[test]
    fn replies_read_in_any_chunks_are_values_or_errors(seed in any::<u64>()) {
        let mut rng = SimRng::new(seed);
        let mut valid = Vec::new();
        for _ in 0..rng.between(1, 3) {
            let one = value(&mut rng, 0);
            let before = valid.len();
            one.encode(&mut valid);
            prop_assert_eq!(valid.len() - before, one.encoded_len(), "{:?}", one);
        }
        for stream in [random_bytes(&mut rng), mutate(&valid, &mut rng), valid] {
            let chunk = rng.between(1, 16) as usize;
            let ((chunked, failed), held) = peak(|| read_replies(&stream, chunk));
            prop_assert!(held <= alloc_bound(stream.len()), "{held} bytes for {}", stream.len());
            let (whole, whole_failed) = read_replies(&stream, stream.len());
            prop_assert_eq!(chunked, whole);
            prop_assert_eq!(failed, whole_failed);
        }
    }

    #[test]
    fn what_peers_send_decodes_to_an_error_or_a_value_in_bounded_memory(seed in any::<u64>()) {
        let mut rng = SimRng::new(seed);
        let valid = peer_payloads(&mut rng);
        for (kind, valid) in valid.iter().enumerate() {
            for bytes in [random_bytes(&mut rng), mutate(valid, &mut rng), valid.clone()] {
                let (ok, held) = peak(|| match kind {
                    0 => postcard::from_bytes::<Request>(&bytes).is_ok(),
                    1 => postcard::from_bytes::<Response>(&bytes).is_ok(),
                    2 => LogCommand::decode(&bytes).is_some(),
                    3 => KvStore::restore(&bytes).is_some(),
                    _ => matches!(decode_peer_batch(&bytes), Some(Ok(_))),
                });
                prop_assert!(held <= alloc_bound(bytes.len()), "{held} bytes for {}", bytes.len());
                if &bytes == valid {
                    prop_assert!(ok, "a valid encoding of kind {kind} decodes");
                }
            }
            if kind >= 4 {
                // A batch cut short is refused whole, wherever the cut falls: none of its
                // requests (or answers) is taken.
                let cut = rng.below(valid.len() as u64) as usize;
                let decoded = decode_peer_batch(&valid[..cut]);
                prop_assert!(
                    matches!(decoded, Some(Err(_)) | None),
                    "a batch cut to {cut} of {} bytes: {decoded:?}", valid.len()
                );
            }
        }
    }
}

/// A forward batch as a node from before the item count (2d2e174) reads it: the tag, then
/// `(number, item)` pairs one after another until the bytes stop making sense.
fn decode_items_as_before_the_count<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    tag: u8,
) -> Vec<(u64, T)> {
    let Some((&first, mut rest)) = bytes.split_first() else {
        return Vec::new();
    };
    let mut items = Vec::new();
    if first != tag {
        return items;
    }
    while let Ok((item, tail)) = postcard::take_from_bytes::<(u64, T)>(rest) {
        items.push(item);
        rest = tail;
    }
    items
}

/// Review (review11): the batch format changed (an item count after the tag) under the same
/// tags, 0xF0 and 0xF1, so a node from before the change, in a cluster being upgraded one
/// node at a time, reads a new node's batch as valid items: the four count bytes are taken
/// for the start of an item. An old leader carries out a request nobody sent, and an old
/// follower takes an answer for a request number the leader never answered (`Ok` for a
/// write that was never done). Either side must refuse the other's batches (another tag,
/// as a Raft message's version byte does), or read exactly what was sent: the new format
/// has its own tags.
#[test]
fn a_new_forward_batch_is_not_misread_by_a_node_from_before_the_count() {
    let put = |k: &str| Request::Write {
        command: KvCommand::Put {
            key: k.as_bytes().to_vec(),
            value: b"v".to_vec(),
            condition: PutCondition::Always,
        },
        session: None,
    };
    let sent: Vec<(u64, Request)> = (0..3).map(|i| (i, put(&format!("k{i}")))).collect();
    let bytes = encode_peer_batch(&PeerBatch::Forwards(sent.clone()));
    // The old format's tags: 0xF0 for forwarded requests, 0xF1 for answers.
    let old_leader = decode_items_as_before_the_count::<Request>(&bytes, 0xF0);
    let answered: Vec<(u64, Response)> = (0..3).map(|i| (i, Response::Kv(KvReply::Ok))).collect();
    let bytes = encode_peer_batch(&PeerBatch::Answers(answered.clone()));
    let old_follower = decode_items_as_before_the_count::<Response>(&bytes, 0xF1);
    assert!(
        (old_leader.is_empty() || old_leader == sent)
            && (old_follower.is_empty() || old_follower == answered),
        "an old leader reads {old_leader:?} from a batch of {sent:?}; \
         an old follower reads {old_follower:?} from answers {answered:?}"
    );
    // And the other way: a batch in the old format (the old tag, then items with no count)
    // is not a batch to a new node, which drops it as a message it cannot read.
    let mut old = vec![0xF0];
    for item in &sent {
        old.extend(postcard::to_allocvec(item).expect("encode"));
    }
    assert_eq!(decode_peer_batch(&old), None);
}
