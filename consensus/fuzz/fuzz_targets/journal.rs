//! Fuzz target: `journal::replay` on arbitrary journal bytes.
//!
//! The first byte chooses how the rest becomes a journal: as it is (bit 0 clear), or as
//! record bodies (a length byte, then the body) given a valid header and CRC-32 each, so
//! that replay meets bodies that pass the checksum and then must be decoded and applied.
//!
//! Checks: nothing panics; damage is reported at an offset before its proof, inside the
//! input; otherwise the good length returned lies within the input, and replaying just the
//! good part gives the same length and the same store. Run from `consensus/fuzz` with
//! `cargo fuzz run journal`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use synod_consensus::journal::replay;
use synod_consensus::{LogIndex, Membership, NodeId};

/// Each body (a length byte, then that many bytes) as a journal record with a valid
/// header; the length byte's top bit says whether the record's durable mark is its own
/// offset (everything before it synced) or 0.
fn framed(mut bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some((&control, rest)) = bytes.split_first() {
        let (body, rest) = rest.split_at(usize::from(control & 0x7f).min(rest.len()));
        let durable = if control & 0x80 != 0 {
            out.len() as u64
        } else {
            0
        };
        let start = out.len();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&durable.to_le_bytes());
        let header_crc = crc32fast::hash(&out[start..start + 12]);
        out.extend_from_slice(&header_crc.to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        out.extend_from_slice(body);
        bytes = rest;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let journal = if control & 1 == 0 {
        rest.to_vec()
    } else {
        framed(rest)
    };
    let voters = [NodeId::new(1), NodeId::new(2), NodeId::new(3)];
    let membership = Membership::new(voters, []).expect("three voters");
    let (store, good) = match replay(&journal, &membership) {
        Ok(replayed) => replayed,
        Err(damage) => {
            assert!(damage.offset < damage.proof && damage.proof < journal.len() as u64);
            let _ = damage.to_string();
            return;
        }
    };
    assert!(good <= journal.len());
    let (again, good_again) = replay(&journal[..good], &membership).expect("the good part replays");
    assert_eq!(good_again, good);
    assert_eq!(again.hard_state(), store.hard_state());
    assert_eq!(again.snapshot(), store.snapshot());
    assert_eq!(again.last_index(), store.last_index());
    let mut all = Vec::new();
    store.entries(LogIndex::ZERO, store.last_index(), u64::MAX, &mut all);
    let mut all_again = Vec::new();
    again.entries(LogIndex::ZERO, again.last_index(), u64::MAX, &mut all_again);
    assert_eq!(all, all_again);
});
