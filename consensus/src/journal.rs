//! A journal of the node's log writes: a checksummed byte encoding of the [`StoreWrite`]s
//! of its [`RaftWrite`](crate::RaftWrite)s that replays up to a torn tail and reports
//! damage anywhere else.
//!
//! This is the layout to reach for when the node's "disk" is something the caller owns as
//! bytes: a simulator's disk, a test's buffer, a file the caller appends to. The driver
//! takes the write of each persist effect, appends its ops as [`JournalWriter::encode`]
//! lays them out, tells the writer when a sync of them completes
//! ([`JournalWriter::synced`]), and acknowledges persistence once its bytes are durable; at
//! restart [`replay`] rebuilds the log the node is built from out of the bytes that
//! survived. No I/O happens here.
//!
//! # Record format
//!
//! A record is a 20-byte header, then the body, a [`StoreWrite`] in postcard's format. The
//! header, little-endian: the body's length (`u32`); the *durable mark* (`u64`), how many
//! bytes of the journal were durable when the record was written; the CRC-32 of those
//! twelve bytes (`u32`); the CRC-32 of the body (`u32`).
//!
//! # Damage and torn tails
//!
//! A crash can leave the last records partly written, or (on a disk that writes blocks out
//! of order) leave a gap followed by later records; none of those had been synced. A
//! flipped bit in a record that had been synced is another thing: the records after it may
//! have been acknowledged. The durable mark tells the two apart, as synod-wal's does, but
//! only where a later record vouches for the sync:
//!
//! - **Detected**: a bad record at offset `x` followed, anywhere later, by a good header
//!   whose durable mark is past `x`. That header was written after a sync covering `x`, so
//!   [`replay`] refuses the journal with a [`JournalDamage`] naming both offsets, and the
//!   operator sees it instead of losing what follows.
//! - **Not detected**: damage in records written after the last sync that a surviving
//!   header records. That takes in a real torn tail, but also damage to the *last synced*
//!   records when nothing was written after their sync completed (or when everything
//!   written after it is damaged or lost too): no later header carries a durable mark past
//!   them, so they look exactly like an unsynced tail. Replay stops before the first bad
//!   record and returns the length of the good part, for the driver to cut the file there;
//!   records in that part may have been acknowledged, and are cut off without an error.
//!
//! So a record's damage is reported once a later record proves it was synced; the
//! journal's final synced stretch has no such proof until the next record is written.
//!
//! A record is bad if its header checksum fails, its length is over [`RECORD_BYTES_MAX`],
//! its body is cut short, fails its checksum or does not decode, its durable mark is behind
//! an earlier record's or not before the record itself, or it does not fit the log as a
//! node would have written it: entries that do not continue the log densely, a truncation
//! into the snapshot, a snapshot or an entry past [`INDEX_MAX`], a term
//! past [`TERM_MAX`], a snapshot whose membership is invalid. Such a
//! record passed its checksums, so only a bug or forged bytes make one; replay treats it as
//! any other bad record rather than panic in the store.

use std::fmt;

use crate::membership::Membership;
use crate::raft::{INDEX_MAX, TERM_MAX};
pub use crate::storage::StoreWrite;
use crate::storage::{MemLogStore, Snapshot};

/// The longest record body [`JournalWriter::encode`] writes and [`replay`] accepts (64 MiB):
/// a bound on what one length field read back from damaged bytes can claim. A larger
/// snapshot belongs in a store made for it (such as the `wal` feature's store), not in a
/// journal.
pub const RECORD_BYTES_MAX: usize = 64 << 20;

/// Bytes of a record's header: body length, durable mark, their CRC-32, the body's CRC-32.
const HEADER_BYTES: usize = 20;

/// The driver's account of its journal: how long it is, and how much of it is durable, so
/// that every record it encodes carries its durable mark.
///
/// A driver makes one when it starts: [`JournalWriter::new`] with the length [`replay`]
/// returned, once the journal is cut there. Then, for every batch of writes,
/// [`encode`](JournalWriter::encode) and append the bytes; when it asks for a sync, note
/// [`end`](JournalWriter::end), and when that sync completes, pass it to
/// [`synced`](JournalWriter::synced).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalWriter {
    end: u64,
    durable: u64,
}

impl JournalWriter {
    /// A writer for a journal of `len` bytes, all of them durable: a new journal (0), or
    /// the good part that [`replay`] returned, cut there. Those bytes survived a crash, so a
    /// simulated disk holds them; a driver of a real file syncs it once before writing, as
    /// the page cache may still hold what it read back.
    #[must_use]
    pub fn new(len: u64) -> JournalWriter {
        JournalWriter {
            end: len,
            durable: len,
        }
    }

    /// Appends `writes` to `out` as records, and moves [`end`](Self::end) past them.
    ///
    /// # Panics
    ///
    /// If an encoded write is longer than [`RECORD_BYTES_MAX`]: [`replay`] would refuse it,
    /// so writing it would lose it.
    pub fn encode(&mut self, writes: &[StoreWrite], out: &mut Vec<u8>) {
        for write in writes {
            let at = out.len();
            encode(write, self.durable, out);
            self.end += (out.len() - at) as u64;
        }
    }

    /// The journal's length with everything encoded so far: what a sync requested now
    /// makes durable.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Records that the journal's first `len` bytes are durable: a sync requested when
    /// [`end`](Self::end) was `len` has completed. Records encoded from now on say so.
    pub fn synced(&mut self, len: u64) {
        self.durable = self.durable.max(len.min(self.end));
    }
}

/// Appends `write` to `out` as one record whose durable mark is `durable`.
fn encode(write: &StoreWrite, durable: u64, out: &mut Vec<u8>) {
    let body = postcard::to_stdvec(write).expect("store writes encode");
    assert!(
        body.len() <= RECORD_BYTES_MAX,
        "a journal record of {} bytes is over RECORD_BYTES_MAX ({RECORD_BYTES_MAX})",
        body.len()
    );
    let len = u32::try_from(body.len()).expect("RECORD_BYTES_MAX fits in a u32");
    let at = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&durable.to_le_bytes());
    let head = crc32fast::hash(&out[at..]);
    out.extend_from_slice(&head.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

/// A record's header, checked on its own.
struct Header {
    len: usize,
    durable: u64,
    body_crc: u32,
}

/// The header at `at`, if the bytes there are one whose checksum holds and whose length is
/// in range.
fn header_at(journal: &[u8], at: usize) -> Option<Header> {
    let bytes = journal.get(at..at.checked_add(HEADER_BYTES)?)?;
    let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[..12]) != word(12) {
        return None;
    }
    let len = word(0) as usize;
    (len <= RECORD_BYTES_MAX).then(|| Header {
        len,
        durable: u64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes")),
        body_crc: word(16),
    })
}

/// The record at `at`: its write, where it ends and its durable mark; or why it is not
/// part of the log.
fn record_at(
    journal: &[u8],
    at: usize,
    durable_min: u64,
    store: &MemLogStore,
) -> Result<(StoreWrite, usize, u64), &'static str> {
    let header = header_at(journal, at).ok_or("a bad header")?;
    if header.durable < durable_min || header.durable > at as u64 {
        return Err("a durable mark out of order");
    }
    let end = at + HEADER_BYTES + header.len;
    let body = journal.get(at + HEADER_BYTES..end).ok_or("a short body")?;
    if crc32fast::hash(body) != header.body_crc {
        return Err("a body that fails its checksum");
    }
    let write = postcard::from_bytes::<StoreWrite>(body).map_err(|_| "an undecodable body")?;
    fits(&write, store)?;
    Ok((write, end, header.durable))
}

/// Whether `write` can be applied to `store` as the node would have made it: an append
/// continues the log densely and stays within [`INDEX_MAX`], a truncation keeps the
/// snapshot, a snapshot is within [`INDEX_MAX`] with a valid membership, a term within
/// [`TERM_MAX`]. A record that passes its checksums but does not fit was never written by
/// a node (a bug, or bytes forged to match their checksums): the replay ends before it,
/// as before any other bad record, instead of panicking in the store.
fn fits(write: &StoreWrite, store: &MemLogStore) -> Result<(), &'static str> {
    let snapshot_fits = |snapshot: &Snapshot| {
        if snapshot.meta.index > INDEX_MAX {
            Err("a snapshot past the highest index")
        } else if !snapshot.meta.membership.is_valid() {
            Err("a snapshot with an invalid membership")
        } else {
            Ok(())
        }
    };
    match write {
        StoreWrite::Append(entries) => {
            // The store's last index is at most `INDEX_MAX`: every write checked here
            // keeps it there, so the next index exists.
            let next = store.last_index().0 + 1;
            if entries.first().map(|e| e.index.0) != Some(next) {
                return Err("entries that do not continue the log");
            }
            let dense = entries
                .iter()
                .zip(next..)
                .all(|(entry, index)| entry.index.0 == index && entry.index <= INDEX_MAX);
            if dense {
                Ok(())
            } else {
                Err("entries that do not follow each other")
            }
        }
        StoreWrite::TruncateAfter(index) if *index < store.snapshot().meta.index => {
            Err("a truncation into the snapshot")
        }
        StoreWrite::HardState(hard_state) if hard_state.term > TERM_MAX => {
            Err("a term past the highest term")
        }
        StoreWrite::TruncateAfter(_) | StoreWrite::HardState(_) => Ok(()),
        StoreWrite::Compact(snapshot) | StoreWrite::Install(snapshot) => snapshot_fits(snapshot),
    }
}

/// The offset of the first header after `at` whose durable mark is past `at`: proof that
/// the bytes at `at` had been synced.
fn synced_proof(journal: &[u8], at: usize) -> Option<usize> {
    (at + 1..journal.len().saturating_sub(HEADER_BYTES - 1)).find(|&y| {
        // The mark first: comparing it is cheaper than the checksum that makes it count.
        let mark = u64::from_le_bytes(journal[y + 4..y + 12].try_into().expect("8 bytes"));
        mark > at as u64
            && mark <= y as u64
            && header_at(journal, y).is_some_and(|h| h.durable == mark)
    })
}

/// A journal damaged in a part that a later record proves had been synced: [`replay`]
/// refuses it rather than cut off what follows. (Damage that no later record proves synced
/// is taken for a torn tail: see the module docs.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalDamage {
    /// The offset of the bad record.
    pub offset: u64,
    /// What is wrong with it.
    pub what: &'static str,
    /// The offset of a later record written once the bad one was durable.
    pub proof: u64,
}

impl fmt::Display for JournalDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "journal damaged at byte {}: {}; the record at byte {} was written after it was \
             synced, so this is not a torn tail",
            self.offset, self.what, self.proof
        )
    }
}

impl std::error::Error for JournalDamage {}

/// Replays a journal: returns the store and the length of the good part, which ends at the
/// journal's end or at the first bad record that no later record proves synced (the driver
/// cuts the journal there). That bad tail may hold the last synced records, if nothing was
/// written after their sync: see the module documentation.
///
/// # Errors
///
/// [`JournalDamage`] if a bad record is followed by one written after it was synced (see
/// the [module documentation](self)).
pub fn replay(
    journal: &[u8],
    membership: &Membership,
) -> Result<(MemLogStore, usize), JournalDamage> {
    let mut store = MemLogStore::new(membership.clone());
    let mut at = 0;
    let mut durable_min = 0;
    while at < journal.len() {
        let (op, end, durable) = match record_at(journal, at, durable_min, &store) {
            Ok(record) => record,
            Err(what) => {
                if let Some(proof) = synced_proof(journal, at) {
                    return Err(JournalDamage {
                        offset: at as u64,
                        what,
                        proof: proof as u64,
                    });
                }
                break;
            }
        };
        store.write(&op);
        durable_min = durable;
        at = end;
    }
    // Everything replayed is on disk: the in-memory store's own durability mark agrees.
    store.sync();
    Ok((store, at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Payload;
    use crate::types::{Entry, LogIndex, Term};

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index: LogIndex(index),
            term: Term::new(term),
            payload: Payload::Noop,
        }
    }

    fn membership() -> Membership {
        Membership::new([crate::types::NodeId::new(1)], []).expect("valid")
    }

    /// A journal of `writes`, each synced before the next is written; and where each
    /// record starts.
    fn synced_journal(writes: &[StoreWrite]) -> (Vec<u8>, Vec<usize>) {
        let mut writer = JournalWriter::new(0);
        let mut journal = Vec::new();
        let mut starts = Vec::new();
        for write in writes {
            starts.push(journal.len());
            writer.encode(std::slice::from_ref(write), &mut journal);
            writer.synced(writer.end());
        }
        assert_eq!(writer.end(), journal.len() as u64);
        (journal, starts)
    }

    fn appends(indexes: std::ops::RangeInclusive<u64>) -> Vec<StoreWrite> {
        indexes
            .map(|i| StoreWrite::Append(vec![entry(i, 1)]))
            .collect()
    }

    #[test]
    fn replay_returns_every_write_of_a_whole_journal() {
        let mut writes = appends(1..=3);
        writes.push(StoreWrite::TruncateAfter(LogIndex(2)));
        let (journal, _) = synced_journal(&writes);
        let (store, len) = replay(&journal, &membership()).expect("no damage");
        assert_eq!((store.last_index(), len), (LogIndex(2), journal.len()));
    }

    #[test]
    fn a_flipped_bit_in_a_synced_record_before_others_is_damage_at_its_offset() {
        let (journal, starts) = synced_journal(&appends(1..=4));
        for (at, why) in [
            (starts[1] + 2, "a bad header"),
            (
                starts[1] + HEADER_BYTES + 1,
                "a body that fails its checksum",
            ),
            (starts[2] + 17, "a body that fails its checksum"),
        ] {
            let mut flipped = journal.clone();
            flipped[at] ^= 0x10;
            let damage = replay(&flipped, &membership()).expect_err("damage is not a torn tail");
            let record = starts.iter().rev().find(|&&s| s <= at).copied().unwrap();
            assert_eq!(damage.offset, record as u64, "flip at {at}");
            assert_eq!(damage.what, why, "flip at {at}");
            assert!(damage.proof > damage.offset, "{damage}");
            assert!(
                damage.to_string().contains(&format!("byte {record}")),
                "{damage}"
            );
        }
    }

    #[test]
    fn a_flipped_bit_in_the_last_record_is_a_torn_tail() {
        let (journal, starts) = synced_journal(&appends(1..=4));
        let mut flipped = journal.clone();
        flipped[starts[3] + HEADER_BYTES] ^= 1;
        let (store, len) = replay(&flipped, &membership()).expect("a torn tail");
        assert_eq!((store.last_index(), len), (LogIndex(3), starts[3]));
        // Cut short anywhere, likewise.
        for cut in starts[3] + 1..journal.len() {
            let (store, len) = replay(&journal[..cut], &membership()).expect("a torn tail");
            assert_eq!(
                (store.last_index(), len),
                (LogIndex(3), starts[3]),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn damage_followed_only_by_records_written_before_a_sync_is_a_torn_tail() {
        // Records 3 and 4 written together after the last sync; a crash loses the blocks
        // of 3 but keeps those of 4 (a disk that writes blocks out of order).
        let mut writer = JournalWriter::new(0);
        let mut journal = Vec::new();
        writer.encode(&appends(1..=2), &mut journal);
        writer.synced(writer.end());
        let good = journal.len();
        writer.encode(&appends(3..=4), &mut journal);
        let third = good + HEADER_BYTES + postcard::to_stdvec(&appends(3..=3)[0]).unwrap().len();
        journal[good..third].fill(0);
        let (store, len) = replay(&journal, &membership()).expect("a torn tail");
        assert_eq!((store.last_index(), len), (LogIndex(2), good));
    }

    #[test]
    fn records_that_do_not_continue_the_log_or_lower_the_mark_end_it() {
        let (mut journal, _) = synced_journal(&appends(1..=2));
        let good = journal.len();
        let mut gap = journal.clone();
        encode(&appends(5..=5)[0], good as u64, &mut gap);
        let (store, len) = replay(&gap, &membership()).expect("a torn tail");
        assert_eq!((store.last_index(), len), (LogIndex(2), good));
        // A record whose mark is behind an earlier record's is a leftover, not the next.
        encode(&appends(3..=3)[0], 1, &mut journal);
        let (store, len) = replay(&journal, &membership()).expect("a torn tail");
        assert_eq!((store.last_index(), len), (LogIndex(2), good));
    }

    #[test]
    fn replay_never_panics_on_mutated_or_random_journals() {
        let (journal, _) = synced_journal(&appends(1..=6));
        let mut rng = synod_sim::SimRng::new(7);
        for round in 0..2000 {
            let mut bytes: Vec<u8> = if round % 4 == 0 {
                (0..rng.below(200)).map(|_| rng.next_u64() as u8).collect()
            } else {
                journal.clone()
            };
            for _ in 0..rng.between(1, 4) {
                if bytes.is_empty() {
                    break;
                }
                let at = rng.below(bytes.len() as u64) as usize;
                match rng.below(3) {
                    0 => bytes[at] ^= 1 << rng.below(8),
                    1 => bytes.truncate(at),
                    _ => bytes[at] = rng.next_u64() as u8,
                }
            }
            match replay(&bytes, &membership()) {
                Ok((_, len)) => assert!(len <= bytes.len()),
                Err(damage) => assert!(damage.proof < bytes.len() as u64),
            }
        }
    }
}
