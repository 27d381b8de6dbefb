//! Fuzz target: what a Consistent Core node decodes from its peers: a Raft message
//! (`Message::decode`), a write forwarded by a follower and the leader's answer to one
//! (postcard `Request` and `Response`, as the server decodes transport requests and their
//! replies), a batch of forwarded requests or of their answers (`decode_peer_batch`, what
//! followers and the leader exchange), a committed log command (`LogCommand::decode`), and
//! a snapshot of the state machine, received from the leader or read back from disk
//! (`KvStore::restore`).
//!
//! The first byte chooses the decoder; the rest is the payload. Checks: nothing panics;
//! whatever decodes re-encodes to bytes that decode to the same value. Run from
//! `examples/fuzz` with `cargo fuzz run peer`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use synod_consensus::Message;
use synod_examples::consistent_core::kv::{KvStore, LogCommand};
use synod_examples::consistent_core::node::{Request, Response};
use synod_examples::consistent_core::{decode_peer_batch, encode_peer_batch};

fn round_trip<T>(bytes: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = postcard::from_bytes::<T>(bytes) {
        let again = postcard::to_stdvec(&value).expect("encodes");
        assert_eq!(postcard::from_bytes::<T>(&again).ok(), Some(value));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, payload)) = data.split_first() else {
        return;
    };
    match control % 6 {
        0 => {
            if let Ok(message) = Message::decode(payload) {
                assert_eq!(Message::decode(&message.encode()), Ok(message));
            }
        }
        1 => round_trip::<Request>(payload),
        2 => round_trip::<Response>(payload),
        5 => {
            // The payload as it arrives, tag first.
            if let Some(Ok(batch)) = decode_peer_batch(payload) {
                let again = encode_peer_batch(&batch);
                assert_eq!(decode_peer_batch(&again), Some(Ok(batch)));
            }
        }
        3 => {
            if let Some(command) = LogCommand::decode(payload) {
                assert_eq!(LogCommand::decode(&command.encode()), Some(command));
            }
        }
        _ => {
            if let Some(store) = KvStore::restore(payload) {
                assert_eq!(KvStore::restore(&store.snapshot()), Some(store));
            }
        }
    }
});
