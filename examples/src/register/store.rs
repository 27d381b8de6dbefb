//! How a node of the register store keeps its records: one log of checksummed records,
//! written against `synod_wal::Storage` (a directory of files on a real disk in a process).
//!
//! # Format (version 2)
//!
//! The file [`LOG_FILE`] is a sequence of records, each a 20-byte header and a body:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | the body's length, little-endian `u32`, at most [`RECORD_BYTES_MAX`] |
//! | 4..8 | CRC-32 (IEEE) of the version byte, the synced mark and the body |
//! | 8 | the format version, 2 |
//! | 9..12 | zero |
//! | 12..20 | the synced mark: how many bytes of the log had been synced when the record was written, little-endian `u64` |
//! | 20.. | the body: a [`Record`] in postcard's format |
//!
//! Records of version 1 (a 12-byte header: no synced mark, the CRC covering the version
//! byte and the body) are still read; every record written is of version 2.
//!
//! # Recovery
//!
//! [`RegisterLog::open`] reads the records in order up to the first that is torn, fails
//! its checksum or does not decode, and folds what it read into a [`Recovered`]: the
//! node's last generation and each key's newest value. What follows that first bad record
//! decides what it is:
//!
//! - a crash damages only writes that were never synced, so no record written after them
//!   can say they had been synced: if no valid record further on has a synced mark past the
//!   bad record, it is a torn or damaged tail, and the file is cut there (and the cut
//!   synced). The register acknowledged nothing on the strength of what is cut, so the cut
//!   loses nothing acknowledged;
//! - a valid record further on whose synced mark is past the bad record proves that the bad
//!   record had been synced: the disk damaged synced data, which no crash does. The log is
//!   then not opened (an error names the file and both offsets) and nothing is cut: cutting
//!   would silently drop synced records, start records among them, and roll the node's
//!   generation back. Whoever runs the node decides (restore the directory, or move it
//!   aside and let the node start empty).
//!
//! Damage to the very last record that was synced, with nothing valid after it, cannot be
//! told from a crash and is cut; the process takes the generation of each start from the
//! data directory's start counter as well ([`crate::register::node`]), so even that never
//! makes a start reuse a generation. The search past a bad record looks at every byte
//! offset (records are not aligned), so bytes inside a later value that happen to form a
//! valid record with such a mark make the log refuse to open too: that errs on the side of
//! refusing. A length past [`RECORD_BYTES_MAX`] is damage, read without allocating it.
//!
//! # Compaction
//!
//! Every write appends a record, so the log grows with the writes. Once it is at least
//! [`COMPACT_BYTES_MIN`] long and more than twice the size of what it holds (each key's
//! newest record and the newest start record), it is rewritten with only those, after an
//! append or at open: written under a temporary name, synced, renamed over the log, and the
//! directory synced, so a crash leaves the old log or the new one, whole (and the new one
//! makes the records appended before it durable early, which is never wrong). Each record
//! copied gets its offset in the new log as its synced mark, since all of the new log is
//! synced before it replaces the old one. The log is
//! thus at most about twice what it holds, or [`COMPACT_BYTES_MIN`], and each byte appended
//! is copied at most once more on average.

use std::collections::BTreeMap;
use std::io;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;
use synod_wal::storage::read_full_at;
use synod_wal::{Storage, StorageFile};

use super::machine::{Record, Recovered};

/// The log's file name.
pub const LOG_FILE: &str = "registers.log";
/// The name the log is compacted under before it replaces the log.
const COMPACT_FILE: &str = "registers.log.tmp";
/// The longest record body read or written: room for a key and a value of 1 MiB each, and
/// their tag (the register store's commands take less).
pub const RECORD_BYTES_MAX: u32 = (2 << 20) + 1024;
/// The shortest log that is compacted.
pub const COMPACT_BYTES_MIN: u64 = 64 << 10;
/// The record format's version: what every record written carries.
const VERSION: u8 = 2;
/// The earlier record format, still read: no synced mark.
const VERSION_1: u8 = 1;
/// A record's header.
const HEADER_BYTES: usize = 20;
/// A version 1 record's header.
const HEADER_V1_BYTES: usize = 12;
/// How much of the log the search for a proof past a bad record reads at once.
const SCAN_CHUNK_BYTES: usize = 64 << 10;

/// Why a record cannot be written.
fn too_long(len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("a record of {len} bytes is longer than {RECORD_BYTES_MAX}"),
    )
}

/// A record's bytes, header and body, written when the first `synced` bytes of the log had
/// been synced.
///
/// # Errors
///
/// A record that does not encode, or whose body is longer than [`RECORD_BYTES_MAX`].
pub fn encode<K: Serialize, V: Serialize>(
    record: &Record<K, V>,
    synced: u64,
) -> io::Result<Vec<u8>> {
    let body =
        postcard::to_stdvec(record).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    frame(&body, synced)
}

/// The checksum of a version 2 record.
fn checksum(synced: u64, body: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[VERSION]);
    crc.update(&synced.to_le_bytes());
    crc.update(body);
    crc.finalize()
}

/// A version 2 record of `body`, with `synced` as its synced mark.
fn frame(body: &[u8], synced: u64) -> io::Result<Vec<u8>> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&len| len <= RECORD_BYTES_MAX)
        .ok_or_else(|| too_long(body.len()))?;
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(synced, body).to_le_bytes());
    out.extend_from_slice(&[VERSION, 0, 0, 0]);
    out.extend_from_slice(&synced.to_le_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// A valid record found in the log.
struct Found<K, V> {
    record: Record<K, V>,
    /// Where its body starts.
    body: u64,
    /// Where it ends.
    end: u64,
}

/// The record at `at` in `file` (whose length is `len`), or `None` if what is there is
/// torn, damaged or no record.
fn read_record<F: StorageFile, K: DeserializeOwned, V: DeserializeOwned>(
    file: &F,
    at: u64,
    len: u64,
) -> io::Result<Option<Found<K, V>>> {
    let mut header = [0u8; HEADER_BYTES];
    let room = usize::try_from(len.saturating_sub(at).min(HEADER_BYTES as u64)).unwrap_or(0);
    if room < HEADER_V1_BYTES || read_full_at(file, &mut header[..room], at)? < room {
        return Ok(None);
    }
    let word =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let (body_len, sum) = (word(0), word(4));
    let (header_len, synced) = match header[8..12] {
        [VERSION_1, 0, 0, 0] => (HEADER_V1_BYTES, None),
        [VERSION, 0, 0, 0] if room == HEADER_BYTES => {
            let mut mark = [0u8; 8];
            mark.copy_from_slice(&header[12..20]);
            (HEADER_BYTES, Some(u64::from_le_bytes(mark)))
        }
        _ => return Ok(None),
    };
    if body_len > RECORD_BYTES_MAX {
        return Ok(None);
    }
    let body_at = at + header_len as u64;
    let end = body_at + u64::from(body_len);
    if end > len {
        return Ok(None);
    }
    let mut body = vec![0u8; body_len as usize];
    if read_full_at(file, &mut body, body_at)? < body.len() {
        return Ok(None);
    }
    let expected = match synced {
        Some(synced) => checksum(synced, &body),
        None => {
            let mut crc = crc32fast::Hasher::new();
            crc.update(&[VERSION_1]);
            crc.update(&body);
            crc.finalize()
        }
    };
    if expected != sum {
        return Ok(None);
    }
    Ok(postcard::from_bytes(&body).ok().map(|record| Found {
        record,
        body: body_at,
        end,
    }))
}

/// The offset of a valid record after `bad` in `file` (whose length is `len`) whose synced
/// mark is past `bad`: proof that the bytes at `bad` had been synced. Every offset is a
/// candidate (records are not aligned); only those with a version 2 header whose mark
/// could be a record's (past `bad`, and not past the candidate itself) are read in full.
fn synced_past<F: StorageFile, K: DeserializeOwned, V: DeserializeOwned>(
    file: &F,
    bad: u64,
    len: u64,
) -> io::Result<Option<u64>> {
    let mut from = bad + 1;
    let mut chunk = vec![0u8; SCAN_CHUNK_BYTES + HEADER_BYTES];
    while from + HEADER_BYTES as u64 <= len {
        let n = usize::try_from((len - from).min(chunk.len() as u64)).unwrap_or(0);
        let n = read_full_at(file, &mut chunk[..n], from)?;
        if n < HEADER_BYTES {
            break;
        }
        for k in 0..=(n - HEADER_BYTES).min(SCAN_CHUNK_BYTES - 1) {
            let at = from + k as u64;
            if chunk[k + 8..k + 12] != [VERSION, 0, 0, 0] {
                continue;
            }
            let mut mark = [0u8; 8];
            mark.copy_from_slice(&chunk[k + 12..k + 20]);
            let mark = u64::from_le_bytes(mark);
            if mark > bad && mark <= at && read_record::<_, K, V>(file, at, len)?.is_some() {
                return Ok(Some(at));
            }
        }
        from += SCAN_CHUNK_BYTES as u64;
    }
    Ok(None)
}

/// Why a log whose synced records are damaged is not opened.
fn damaged(bad: u64, proof: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{LOG_FILE}: the record at byte {bad} is damaged, and the record at byte {proof} was written after it had been synced: the disk damaged synced records, which no crash does; refusing to start rather than drop them (restore the directory, or move it aside to start this node empty)"
        ),
    )
}

/// Writes all of `bytes` at `at`.
fn write_all_at<F: StorageFile>(file: &F, bytes: &[u8], at: u64) -> io::Result<()> {
    let mut done = 0;
    while done < bytes.len() {
        match file.write_at(&bytes[done..], at + done as u64)? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => done += n,
        }
    }
    Ok(())
}

/// Where a record lies in the log: its offset, its length and its header's.
#[derive(Debug, Clone, Copy)]
struct Place {
    at: u64,
    len: u64,
    header: u64,
}

/// A node's log of records on `S`, for keys `K` and values `V`.
#[derive(Debug)]
pub struct RegisterLog<S: Storage, K, V> {
    storage: S,
    file: S::File,
    /// Where the next record goes.
    len: u64,
    /// How many bytes of the log are known to be synced: each record appended carries it.
    synced: u64,
    /// Where each key's newest record lies, and the newest start record.
    newest: BTreeMap<K, Place>,
    start: Option<Place>,
    /// The bytes of those records: what a compacted log would hold.
    live: u64,
    /// The shortest log that is compacted.
    compact_bytes_min: u64,
    values: PhantomData<fn(V)>,
}

impl<S, K, V> RegisterLog<S, K, V>
where
    S: Storage,
    K: Ord + Clone + Serialize + DeserializeOwned,
    V: Clone + Serialize + DeserializeOwned,
{
    /// Opens the log in `storage` (an empty one if there is none), cuts off a torn or
    /// damaged tail, syncs it, compacts it if it is mostly stale, and returns it with what
    /// it holds. Logs shorter than [`COMPACT_BYTES_MIN`] are never compacted.
    ///
    /// # Errors
    ///
    /// The storage's, or [`io::ErrorKind::InvalidData`] naming the file and the offset of
    /// a damaged record that had been synced (see the [module documentation](self)); the
    /// log is left as it was.
    pub fn open(storage: S) -> io::Result<(Self, Recovered<K, V>)> {
        Self::open_with(storage, COMPACT_BYTES_MIN)
    }

    /// Like [`RegisterLog::open`], with logs shorter than `compact_bytes_min` never
    /// compacted (a simulation compacts small logs, so that crashes meet compactions).
    ///
    /// # Errors
    ///
    /// As [`RegisterLog::open`].
    pub fn open_with(storage: S, compact_bytes_min: u64) -> io::Result<(Self, Recovered<K, V>)> {
        let file = match storage.open(LOG_FILE) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let file = storage.create(LOG_FILE)?;
                storage.sync_dir()?;
                file
            }
            Err(e) => return Err(e),
        };
        let len = file.len()?;
        let mut log = RegisterLog {
            storage,
            file,
            len: 0,
            synced: 0,
            newest: BTreeMap::new(),
            start: None,
            live: 0,
            compact_bytes_min,
            values: PhantomData,
        };
        let mut recovered = Recovered::default();
        while let Some(found) = read_record::<_, K, V>(&log.file, log.len, len)? {
            log.note(found.record.key.clone(), found.body - log.len, found.end);
            recovered.take(found.record);
        }
        if log.len < len {
            if let Some(proof) = synced_past::<_, K, V>(&log.file, log.len, len)? {
                return Err(damaged(log.len, proof));
            }
            // A torn or damaged tail: cut it (durably, with the sync below), so a record
            // written next is not hidden behind it at the next start.
            log.file.set_len(log.len)?;
        }
        // What was read is served from: it is made durable (a process that stopped may
        // have left writes the kernel holds unsynced), and every record appended from now
        // on says so.
        log.file.sync_data()?;
        log.synced = log.len;
        log.compact_if_stale()?;
        Ok((log, recovered))
    }

    /// Notes the record of `key` (a start record for `None`), with a header of `header`
    /// bytes, that ends at `end`, just after the log's end until now.
    fn note(&mut self, key: Option<K>, header: u64, end: u64) {
        let place = Place {
            at: self.len,
            len: end - self.len,
            header,
        };
        let old = match key {
            Some(key) => self.newest.insert(key, place),
            None => self.start.replace(place),
        };
        self.live = self.live - old.map_or(0, |p| p.len) + place.len;
        self.len = end;
    }

    /// Rewrites the log with only the records it needs, if they are less than half of it.
    fn compact_if_stale(&mut self) -> io::Result<()> {
        if self.len < self.compact_bytes_min || self.live * 2 > self.len {
            return Ok(());
        }
        let file = self.storage.create(COMPACT_FILE)?;
        let mut at = 0;
        let mut copy = |place: Place| -> io::Result<Place> {
            let body_len = place.len - place.header;
            let mut body = vec![0u8; usize::try_from(body_len).unwrap_or(usize::MAX)];
            if read_full_at(&self.file, &mut body, place.at + place.header)? < body.len() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            // All of the new log is synced before it replaces this one.
            let bytes = frame(&body, at)?;
            write_all_at(&file, &bytes, at)?;
            let moved = Place {
                at,
                len: bytes.len() as u64,
                header: HEADER_BYTES as u64,
            };
            at += moved.len;
            Ok(moved)
        };
        let start = self.start.map(&mut copy).transpose()?;
        let mut newest = BTreeMap::new();
        for (key, place) in &self.newest {
            newest.insert(key.clone(), copy(*place)?);
        }
        file.sync_data()?;
        self.storage.rename(COMPACT_FILE, LOG_FILE)?;
        self.storage.sync_dir()?;
        self.file = file;
        self.len = at;
        self.synced = at;
        self.live = at;
        self.start = start;
        self.newest = newest;
        Ok(())
    }

    /// Appends `record` after every earlier one, without syncing it (unless the log is
    /// compacted now, which syncs everything).
    ///
    /// # Errors
    ///
    /// The storage's, or a record longer than [`RECORD_BYTES_MAX`].
    pub fn append(&mut self, record: &Record<K, V>) -> io::Result<()> {
        let bytes = encode(record, self.synced)?;
        write_all_at(&self.file, &bytes, self.len)?;
        self.note(
            record.key.clone(),
            HEADER_BYTES as u64,
            self.len + bytes.len() as u64,
        );
        self.compact_if_stale()
    }

    /// Makes every record appended so far durable.
    ///
    /// # Errors
    ///
    /// The storage's: the records since the last sync must be taken as lost.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        self.synced = self.len;
        Ok(())
    }

    /// The log's length in bytes.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the log holds nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes of the records the log needs: what it holds once compacted.
    #[must_use]
    pub fn live_bytes(&self) -> u64 {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use synod_node::NodeId;
    use synod_quorum::Tag;
    use synod_wal::testing::{CrashMode, FaultyStorage};

    use super::*;

    type Log = RegisterLog<FaultyStorage, Vec<u8>, Vec<u8>>;

    fn record(generation: u64, key: &str, value: &str, sequence: u64) -> Record<Vec<u8>, Vec<u8>> {
        Record {
            generation,
            key: Some(key.as_bytes().to_vec()),
            tag: Tag {
                sequence,
                writer: Some(NodeId::new(2)),
                incarnation: generation,
                op: sequence,
            },
            value: Some(value.as_bytes().to_vec()),
        }
    }

    fn value(recovered: &Recovered<Vec<u8>, Vec<u8>>, key: &str) -> Option<String> {
        let (_, value) = recovered.registers.get(key.as_bytes())?;
        value
            .as_ref()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    #[test]
    fn synced_records_survive_every_crash_and_a_torn_tail_is_cut() {
        for mode in CrashMode::ALL {
            let disk = FaultyStorage::new(1);
            let (mut log, recovered) = Log::open(disk.clone()).expect("opens");
            assert_eq!(recovered, Recovered::default());
            log.append(&record(1, "a", "1", 1)).expect("appended");
            log.append(&record(1, "a", "2", 2)).expect("appended");
            log.append(&record(1, "b", "x", 3)).expect("appended");
            log.sync().expect("synced");
            // Not synced: a crash may keep it, tear it or drop it.
            log.append(&record(2, "b", "y", 4)).expect("appended");
            disk.crash(mode);
            let (mut log, recovered) = Log::open(disk.clone()).expect("opens after the crash");
            assert_eq!(value(&recovered, "a").as_deref(), Some("2"), "{mode:?}");
            let b = value(&recovered, "b");
            assert!(matches!(b.as_deref(), Some("x" | "y")), "{mode:?}: {b:?}");
            // What is written after the cut is read at the next start.
            log.append(&record(3, "c", "z", 5)).expect("appended");
            log.sync().expect("synced");
            disk.crash(mode);
            let (_, recovered) = Log::open(disk).expect("opens again");
            assert_eq!(value(&recovered, "c").as_deref(), Some("z"), "{mode:?}");
            assert_eq!(recovered.generation, 3);
        }
    }

    /// Flips one bit of the byte at `at` of the log.
    fn flip(disk: &FaultyStorage, at: u64) {
        let file = disk.open(LOG_FILE).expect("the log");
        let mut byte = [0u8; 1];
        file.read_at(&mut byte, at).expect("read");
        file.write_at(&[byte[0] ^ 0x20], at).expect("write");
    }

    fn start_record(generation: u64) -> Record<Vec<u8>, Vec<u8>> {
        Record {
            generation,
            key: None,
            tag: Tag::default(),
            value: None,
        }
    }

    #[test]
    fn damage_to_synced_records_in_the_middle_refuses_to_open_and_cuts_nothing() {
        let disk = FaultyStorage::new(5);
        // A first start: its generation, a write, synced.
        let (mut log, _) = Log::open(disk.clone()).expect("opens");
        log.append(&start_record(1)).expect("appended");
        let first = log.len();
        log.append(&record(1, "a", "1", 1)).expect("appended");
        log.sync().expect("synced");
        drop(log);
        // A second start, after a restart: its generation and a write, synced.
        let (mut log, recovered) = Log::open(disk.clone()).expect("opens");
        assert_eq!(recovered.generation, 1);
        log.append(&start_record(2)).expect("appended");
        log.append(&record(2, "b", "2", 1)).expect("appended");
        log.sync().expect("synced");
        let len = log.len();
        drop(log);
        // One flipped bit in the first start's write, which had been synced.
        flip(&disk, first + 14);
        let refused = Log::open(disk.clone()).map(|(_, recovered)| recovered.generation);
        let error = refused.expect_err("a log whose synced records are damaged is refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        let message = error.to_string();
        assert!(
            message.contains(LOG_FILE) && message.contains(&format!("byte {first}")),
            "{message}"
        );
        // Nothing was cut: the later start and its write are still there.
        let file = disk.open(LOG_FILE).expect("the log");
        assert_eq!(file.len().expect("len"), len);
        // Once the damaged byte is repaired, the log opens with everything in it.
        flip(&disk, first + 14);
        let (_, recovered) = Log::open(disk).expect("opens");
        assert_eq!(recovered.generation, 2);
        assert_eq!(value(&recovered, "a").as_deref(), Some("1"));
        assert_eq!(value(&recovered, "b").as_deref(), Some("2"));
    }

    #[test]
    fn a_damaged_tail_and_huge_lengths_end_the_log_without_a_panic() {
        let disk = FaultyStorage::new(2);
        let (mut log, _) = Log::open(disk.clone()).expect("opens");
        log.append(&record(1, "a", "1", 1)).expect("appended");
        let first = log.len();
        log.append(&record(1, "b", "2", 2)).expect("appended");
        log.append(&record(1, "c", "3", 3)).expect("appended");
        drop(log);
        // A flipped bit in the second record's body, with a valid record after it: all
        // three were written since the last sync, as a crash that flips unsynced bytes
        // leaves them, so the tail is cut from there.
        flip(&disk, first + HEADER_BYTES as u64 + 2);
        let (log, recovered) = Log::open(disk.clone()).expect("opens");
        assert_eq!(log.len(), first);
        assert_eq!(value(&recovered, "a").as_deref(), Some("1"));
        assert_eq!(value(&recovered, "b"), None);
        assert_eq!(value(&recovered, "c"), None);
        drop(log);
        // A header claiming 4 GiB is read as the end of the log, not allocated.
        let file = disk.open(LOG_FILE).expect("the log");
        let len = file.len().expect("len");
        let mut huge = vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, VERSION, 0, 0, 0];
        huge.extend_from_slice(&len.to_le_bytes());
        write_all_at(&file, &huge, len).expect("write");
        let (log, recovered) = Log::open(disk).expect("opens");
        assert_eq!(log.len(), first);
        assert_eq!(value(&recovered, "a").as_deref(), Some("1"));
    }

    #[test]
    fn records_of_version_1_are_read_and_compacted_into_version_2() {
        let disk = FaultyStorage::new(6);
        let file = disk.create(LOG_FILE).expect("created");
        let mut at = 0;
        for sequence in 1..=3u64 {
            let body = postcard::to_stdvec(&record(1, "a", &sequence.to_string(), sequence))
                .expect("encodes");
            let mut crc = crc32fast::Hasher::new();
            crc.update(&[VERSION_1]);
            crc.update(&body);
            let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
            bytes.extend_from_slice(&crc.finalize().to_le_bytes());
            bytes.extend_from_slice(&[VERSION_1, 0, 0, 0]);
            bytes.extend_from_slice(&body);
            write_all_at(&file, &bytes, at).expect("written");
            at += bytes.len() as u64;
        }
        file.sync_data().expect("synced");
        drop(file);
        // Compacted at once (any length is long enough here): one record of version 2.
        let (log, recovered) = Log::open_with(disk.clone(), 0).expect("opens");
        assert_eq!(value(&recovered, "a").as_deref(), Some("3"));
        let one = encode(&record(1, "a", "3", 3), 0).expect("encodes").len() as u64;
        assert_eq!(log.len(), one);
        drop(log);
        let (_, recovered) = Log::open(disk).expect("opens again");
        assert_eq!(value(&recovered, "a").as_deref(), Some("3"));
    }

    #[test]
    fn the_log_stays_within_twice_what_it_holds_and_says_the_same_after_every_crash() {
        let disk = FaultyStorage::new(3);
        let (mut log, _) = Log::open(disk.clone()).expect("opens");
        let mut last = BTreeMap::new();
        let mut longest = 0;
        for sequence in 1..=4_000u64 {
            let key = ["a", "b", "c"][sequence as usize % 3];
            let value = "x".repeat(sequence as usize % 97) + &sequence.to_string();
            log.append(&record(1, key, &value, sequence))
                .expect("appended");
            last.insert(key.to_string(), value);
            longest = longest.max(log.len());
            assert!(
                log.len() <= (2 * log.live_bytes()).max(COMPACT_BYTES_MIN),
                "{} bytes for {} live",
                log.len(),
                log.live_bytes()
            );
        }
        assert!(
            longest < 2 * COMPACT_BYTES_MIN,
            "the log reached {longest} bytes"
        );
        log.sync().expect("synced");
        drop(log);
        for mode in CrashMode::ALL {
            disk.crash(mode);
            let (_, recovered) = Log::open(disk.clone()).expect("opens");
            for (key, expected) in &last {
                assert_eq!(value(&recovered, key).as_ref(), Some(expected), "{mode:?}");
            }
            assert_eq!(recovered.registers.len(), 3);
        }
    }

    #[test]
    fn a_crash_while_compacting_leaves_every_synced_record() {
        for ops in 0..8 {
            for mode in CrashMode::ALL {
                let disk = FaultyStorage::new(ops);
                let (mut log, _) = Log::open(disk.clone()).expect("opens");
                let stale = |sequence| record(1, "a", &"y".repeat(200), sequence);
                // Fill the log until it has been compacted once, then keep one record of
                // `b`, and fill it again to just short of the next compaction, all synced.
                let mut sequence = 0;
                loop {
                    sequence += 1;
                    let before = log.len();
                    log.append(&stale(sequence)).expect("appended");
                    if log.len() < before {
                        break;
                    }
                }
                log.append(&record(1, "b", "kept", sequence))
                    .expect("appended");
                let step = encode(&stale(sequence), 0).expect("encodes").len() as u64;
                while log.len() + step < COMPACT_BYTES_MIN {
                    sequence += 1;
                    log.append(&stale(sequence)).expect("appended");
                }
                log.sync().expect("synced");
                // The disk stops after `ops` more operations, in the middle of the appends
                // and the compaction they bring on.
                disk.halt_after(Some(ops));
                for more in 0..4 {
                    let written =
                        log.append(&record(1, "a", &"z".repeat(200), sequence + 10 + more));
                    if written.is_err() {
                        break;
                    }
                }
                drop(log);
                disk.crash(mode);
                let (_, recovered) = Log::open(disk.clone()).expect("opens after the crash");
                assert_eq!(
                    value(&recovered, "b").as_deref(),
                    Some("kept"),
                    "{ops} {mode:?}"
                );
                assert!(value(&recovered, "a").is_some(), "{ops} {mode:?}");
            }
        }
    }
}
