//! A journal of log-store writes: an in-memory [`LogStore`] that records every write, and a
//! checksummed byte encoding of those writes that replays up to the first torn or damaged
//! record.
//!
//! This is the store to reach for when the node's "disk" is something the caller owns as
//! bytes: a simulator's disk, a test's buffer, a file the caller appends to. The driver
//! takes the writes with [`JournalStore::take_written`] after each call into the node,
//! appends them with [`encode`], and acknowledges persistence once its bytes are durable; at
//! restart [`replay`] rebuilds the store from the bytes that survived. No I/O happens here.
//!
//! Record format: body length (`u32`, little-endian), CRC-32 of the body (`u32`,
//! little-endian), then the body: a [`StoreWrite`] in postcard's format. Replay stops at a
//! length over [`RECORD_BYTES_MAX`], a short or checksum-failing body, an undecodable body,
//! or an append that does not continue the log: damage, never data.

use crate::membership::Membership;
use crate::storage::{HardState, LogStore, MemLogStore, Snapshot};
use crate::types::{Entry, LogIndex, Term};
use serde::{Deserialize, Serialize};

/// The longest record [`encode`] writes and [`replay`] accepts (64 MiB): a bound on what
/// one length field read back from damaged bytes can claim. A larger snapshot belongs in a
/// store made for it (such as the `wal` feature's store), not in a journal.
pub const RECORD_BYTES_MAX: usize = 64 << 20;

/// One write to the log store, as journaled.
#[derive(Debug, Serialize, Deserialize)]
pub enum StoreWrite {
    /// Entries appended.
    Append(Vec<Entry>),
    /// The log cut after an index.
    TruncateAfter(LogIndex),
    /// The term and vote.
    HardState(HardState),
    /// A snapshot taken and the log below it dropped.
    Compact(Snapshot),
    /// A snapshot received from the leader.
    Install(Snapshot),
}

/// A log store in memory that also records every write, for the driver to journal.
#[derive(Debug)]
pub struct JournalStore {
    mem: MemLogStore,
    written: Vec<StoreWrite>,
}

impl JournalStore {
    /// A journaling store over `mem` (an empty store, or one rebuilt by [`replay`]).
    #[must_use]
    pub fn new(mem: MemLogStore) -> JournalStore {
        JournalStore {
            mem,
            written: Vec::new(),
        }
    }

    /// The in-memory store underneath, which holds everything written so far.
    #[must_use]
    pub fn mem(&self) -> &MemLogStore {
        &self.mem
    }

    /// The writes made since the last call, for the driver to [`encode`] onto its disk.
    pub fn take_written(&mut self) -> Vec<StoreWrite> {
        std::mem::take(&mut self.written)
    }
}

impl LogStore for JournalStore {
    fn hard_state(&self) -> HardState {
        self.mem.hard_state()
    }
    fn set_hard_state(&mut self, hard_state: HardState) {
        self.written.push(StoreWrite::HardState(hard_state));
        self.mem.set_hard_state(hard_state);
    }
    fn snapshot(&self) -> &Snapshot {
        self.mem.snapshot()
    }
    fn last_index(&self) -> LogIndex {
        self.mem.last_index()
    }
    fn term(&self, index: LogIndex) -> Option<Term> {
        self.mem.term(index)
    }
    fn entries(&self, lo: LogIndex, hi: LogIndex, bytes_max: u64, out: &mut Vec<Entry>) {
        self.mem.entries(lo, hi, bytes_max, out);
    }
    fn append(&mut self, entries: &[Entry]) {
        self.written.push(StoreWrite::Append(entries.to_vec()));
        self.mem.append(entries);
    }
    fn truncate_after(&mut self, index: LogIndex) {
        self.written.push(StoreWrite::TruncateAfter(index));
        self.mem.truncate_after(index);
    }
    fn compact(&mut self, snapshot: Snapshot) {
        self.written.push(StoreWrite::Compact(snapshot.clone()));
        self.mem.compact(snapshot);
    }
    fn install_snapshot(&mut self, snapshot: Snapshot) {
        self.written.push(StoreWrite::Install(snapshot.clone()));
        self.mem.install_snapshot(snapshot);
    }
}

/// Appends `write` to `out` as one record: body length and CRC-32 of the body
/// (little-endian `u32`s), then the body (postcard).
///
/// # Panics
///
/// If the encoded write is longer than [`RECORD_BYTES_MAX`]: [`replay`] would refuse it, so
/// writing it would lose it.
pub fn encode(write: &StoreWrite, out: &mut Vec<u8>) {
    let body = postcard::to_stdvec(write).expect("store writes encode");
    assert!(
        body.len() <= RECORD_BYTES_MAX,
        "a journal record of {} bytes is over RECORD_BYTES_MAX ({RECORD_BYTES_MAX})",
        body.len()
    );
    let len = u32::try_from(body.len()).expect("RECORD_BYTES_MAX fits in a u32");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

/// Replays a journal up to its first torn or corrupt record; returns the store and the
/// length of the good part.
pub fn replay(journal: &[u8], membership: &Membership) -> (MemLogStore, usize) {
    let mut store = MemLogStore::new(membership.clone());
    let mut at = 0;
    while let Some(header) = journal.get(at..at + 8) {
        let word =
            |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let (len, sum) = (word(0) as usize, word(4));
        if len > RECORD_BYTES_MAX {
            break;
        }
        let Some(body) = journal.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32fast::hash(body) != sum {
            break;
        }
        let Ok(op) = postcard::from_bytes::<StoreWrite>(body) else {
            break;
        };
        match op {
            StoreWrite::Append(entries) => {
                // A record that does not continue the log is damage, not data.
                if entries.first().map(|e| e.index) != Some(store.last_index().next()) {
                    break;
                }
                store.append(&entries);
            }
            StoreWrite::TruncateAfter(index) => store.truncate_after(index),
            StoreWrite::HardState(hard_state) => store.set_hard_state(hard_state),
            StoreWrite::Compact(snapshot) => store.compact(snapshot),
            StoreWrite::Install(snapshot) => store.install_snapshot(snapshot),
        }
        at += 8 + len;
    }
    // Everything replayed is on disk: the in-memory store's own durability mark agrees.
    store.sync();
    (store, at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Payload;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index: LogIndex(index),
            term: Term::new(term),
            payload: Payload::Noop,
        }
    }

    #[test]
    fn replay_stops_at_the_first_torn_corrupt_or_out_of_place_record() {
        let membership = Membership::new([crate::types::NodeId::new(1)], []).expect("valid");
        let mut journal = Vec::new();
        encode(
            &StoreWrite::Append(vec![entry(1, 1), entry(2, 1)]),
            &mut journal,
        );
        encode(&StoreWrite::TruncateAfter(LogIndex(1)), &mut journal);
        let good = journal.len();
        let (store, len) = replay(&journal, &membership);
        assert_eq!((store.last_index(), len), (LogIndex(1), good));

        let mut torn = journal.clone();
        encode(&StoreWrite::Append(vec![entry(2, 2)]), &mut torn);
        torn.pop();
        assert_eq!(replay(&torn, &membership).1, good);

        let mut flipped = journal.clone();
        flipped[10] ^= 1;
        assert_eq!(replay(&flipped, &membership).1, 0);

        let mut gap = journal.clone();
        encode(&StoreWrite::Append(vec![entry(5, 2)]), &mut gap);
        assert_eq!(replay(&gap, &membership).1, good);
    }
}
