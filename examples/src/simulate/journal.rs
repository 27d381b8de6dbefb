//! The journal a simulated Consistent Core node keeps on its simulated disk: every write to
//! the Raft log store (entries, truncations, term and vote, snapshots) as a checksummed
//! record, replayed at restart up to the first torn or damaged record.
//!
//! [`JournalStore`] is an in-memory [`LogStore`] that also records its writes; the driver
//! takes them with [`JournalStore::take_written`], appends them with [`frame`] and syncs
//! when the node asks. Both simulations of the Consistent Core (`synod sim raft-kv` and the
//! crate's `core_sim` test) use this one journal.

use serde::{Deserialize, Serialize};
use synod_consensus::{
    Entry, HardState, LogIndex, LogStore, MemLogStore, Membership, Snapshot, Term,
};

/// The longest journal record accepted on replay (a snapshot of this small store is far
/// smaller).
const RECORD_BYTES_MAX: usize = 1 << 20;

/// One write to the log store, as journaled.
#[derive(Debug, Serialize, Deserialize)]
pub enum JournalOp {
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
    written: Vec<JournalOp>,
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

    /// The writes made since the last call, for the driver to [`frame`] onto its disk.
    pub fn take_written(&mut self) -> Vec<JournalOp> {
        std::mem::take(&mut self.written)
    }
}

impl LogStore for JournalStore {
    fn hard_state(&self) -> HardState {
        self.mem.hard_state()
    }
    fn set_hard_state(&mut self, hard_state: HardState) {
        self.written.push(JournalOp::HardState(hard_state));
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
        self.written.push(JournalOp::Append(entries.to_vec()));
        self.mem.append(entries);
    }
    fn truncate_after(&mut self, index: LogIndex) {
        self.written.push(JournalOp::TruncateAfter(index));
        self.mem.truncate_after(index);
    }
    fn compact(&mut self, snapshot: Snapshot) {
        self.written.push(JournalOp::Compact(snapshot.clone()));
        self.mem.compact(snapshot);
    }
    fn install_snapshot(&mut self, snapshot: Snapshot) {
        self.written.push(JournalOp::Install(snapshot.clone()));
        self.mem.install_snapshot(snapshot);
    }
}

/// FNV-1a over 32 bits: enough to tell a torn or bit-flipped record from a whole one.
fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A record: body length and checksum (little-endian `u32`s), then the body (postcard).
pub fn frame(op: &JournalOp, out: &mut Vec<u8>) {
    let body = postcard::to_stdvec(op).expect("journal operations encode");
    out.extend_from_slice(
        &u32::try_from(body.len())
            .expect("a journal record is far below 4 GiB")
            .to_le_bytes(),
    );
    out.extend_from_slice(&checksum(&body).to_le_bytes());
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
        if checksum(body) != sum {
            break;
        }
        let Ok(op) = postcard::from_bytes::<JournalOp>(body) else {
            break;
        };
        match op {
            JournalOp::Append(entries) => {
                // A record that does not continue the log is damage, not data.
                if entries.first().map(|e| e.index) != Some(store.last_index().next()) {
                    break;
                }
                store.append(&entries);
            }
            JournalOp::TruncateAfter(index) => store.truncate_after(index),
            JournalOp::HardState(hard_state) => store.set_hard_state(hard_state),
            JournalOp::Compact(snapshot) => store.compact(snapshot),
            JournalOp::Install(snapshot) => store.install_snapshot(snapshot),
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
    use synod_consensus::Payload;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index: LogIndex(index),
            term: Term::new(term),
            payload: Payload::Noop,
        }
    }

    #[test]
    fn replay_stops_at_the_first_torn_corrupt_or_out_of_place_record() {
        let membership = Membership::new([synod_consensus::NodeId::new(1)], []).expect("valid");
        let mut journal = Vec::new();
        frame(
            &JournalOp::Append(vec![entry(1, 1), entry(2, 1)]),
            &mut journal,
        );
        frame(&JournalOp::TruncateAfter(LogIndex(1)), &mut journal);
        let good = journal.len();
        let (store, len) = replay(&journal, &membership);
        assert_eq!((store.last_index(), len), (LogIndex(1), good));

        let mut torn = journal.clone();
        frame(&JournalOp::Append(vec![entry(2, 2)]), &mut torn);
        torn.pop();
        assert_eq!(replay(&torn, &membership).1, good);

        let mut flipped = journal.clone();
        flipped[10] ^= 1;
        assert_eq!(replay(&flipped, &membership).1, 0);

        let mut gap = journal.clone();
        frame(&JournalOp::Append(vec![entry(5, 2)]), &mut gap);
        assert_eq!(replay(&gap, &membership).1, good);
    }
}
