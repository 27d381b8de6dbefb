//! How a node of the leaderless store keeps its records: a `synod_wal::Wal` (segmented,
//! checksummed, recovered to its last good record) written against `synod_wal::Storage`,
//! the data directory's files in a process and the simulated disk in `synod sim`.
//!
//! # Format (version 1)
//!
//! Each WAL record is one byte of format version, 1, then a [`Record`] in postcard's
//! format. The WAL checks lengths and checksums; a record that passes them and still does
//! not decode (a version this code does not know) makes the log refuse to open, with its
//! index, rather than be skipped.
//!
//! # Compaction
//!
//! Each record replaces the one before it of the same slot (the start, the member's
//! generation, a key of each key space), and a key the quorum store no longer holds (a
//! record of no state) empties its slot, so the log grows with the writes while what it
//! holds follows the keys held. Once it holds more than twice its live records and at least
//! [`COMPACT_RECORDS_MIN`], the live records are appended again at its end, synced, and
//! every record before them purged (whole segments, crash-safe: a crash in between leaves
//! both copies, and replaying both gives the same state). The log thus stays within about
//! twice its live records. The store keeps the live records' encodings in memory for this.

use std::collections::BTreeMap;
use std::io;

use serde::Serialize;
use serde::de::DeserializeOwned;
use synod_wal::{LogIndex, Storage, SyncPolicy, Wal, WalConfig};

use super::machine::{Key, Record, Recovered};

/// The record format's version.
pub const FORMAT_VERSION: u8 = 1;
/// The fewest records a log holds before it is compacted.
pub const COMPACT_RECORDS_MIN: u64 = 1_024;
/// The size of each segment file.
pub const SEGMENT_BYTES: u64 = 8 << 20;
/// The longest record: a key and a value of the longest, with siblings and headers.
pub const RECORD_BYTES_MAX: usize = 4 << 20;

/// How a [`LeaderlessLog`] is opened: [`LogOptions::default`] is a process's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// The fewest records the log holds before it is compacted.
    pub compact_records_min: u64,
    /// The size of each segment file (each is written out whole when created).
    pub segment_bytes: u64,
    /// The longest record; it must fit in a segment with the segment's header.
    pub record_bytes_max: usize,
    /// Stamp segment files with a fixed time (so a simulation's seed writes the same bytes).
    pub fixed_time: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            compact_records_min: COMPACT_RECORDS_MIN,
            segment_bytes: SEGMENT_BYTES,
            record_bytes_max: RECORD_BYTES_MAX,
            fixed_time: false,
        }
    }
}

/// Which earlier record a record replaces.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Start,
    Member,
    Store(Key),
    AbdStart,
    Abd(Key),
    Cas(Key),
    Admitted,
    Left(synod_node::NodeId),
    Leaving,
    Move(synod_node::NodeId),
    Removing(synod_node::NodeId),
    Permit(synod_node::NodeId),
}

fn slot<S>(record: &Record<S>) -> Slot {
    match record {
        Record::Start { .. } => Slot::Start,
        Record::Member(_) => Slot::Member,
        Record::Store { key, .. } => Slot::Store(key.clone()),
        Record::Abd(r) => r.key.clone().map_or(Slot::AbdStart, Slot::Abd),
        Record::Cas(w) => Slot::Cas(w.key.clone()),
        Record::Admitted { .. } => Slot::Admitted,
        Record::Left { id } => Slot::Left(*id),
        Record::Leaving => Slot::Leaving,
        Record::Move { id, .. } => Slot::Move(*id),
        Record::Removing { id } => Slot::Removing(*id),
        Record::Permit { id, .. } => Slot::Permit(*id),
    }
}

/// Notes `record` (encoded as `bytes`) as its slot's last: a key no longer held leaves no
/// slot, so what the log keeps follows the keys held, not every key ever held. Its earlier
/// records are dropped with the rest of the log before the next compaction's copy (or, in
/// the segment the purge keeps, are followed there by the record that emptied the slot).
fn keep<S>(live: &mut BTreeMap<Slot, Vec<u8>>, record: &Record<S>, bytes: Vec<u8>) {
    match record {
        Record::Store { key, state: None } => {
            live.remove(&Slot::Store(key.clone()));
        }
        // A move slot given back leaves no slot either.
        Record::Permit {
            id, round: None, ..
        } => {
            live.remove(&Slot::Permit(*id));
        }
        _ => {
            live.insert(slot(record), bytes);
        }
    }
}

/// A node's log on `S`.
#[derive(Debug)]
pub struct LeaderlessLog<S: Storage> {
    wal: Wal<S>,
    /// Each slot's last record, encoded.
    live: BTreeMap<Slot, Vec<u8>>,
    /// Records in the log.
    records: u64,
    compact_records_min: u64,
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

impl<S: Storage> LeaderlessLog<S> {
    /// Opens the log on `storage` and reads what it holds.
    ///
    /// # Errors
    ///
    /// The WAL's errors (damage before its tail is reported, not cut), or a record that
    /// does not decode.
    pub fn open<St>(storage: S) -> io::Result<(Self, Recovered<St>)>
    where
        St: Serialize + DeserializeOwned,
    {
        Self::open_with(storage, LogOptions::default())
    }

    /// [`LeaderlessLog::open`] with `options` (a simulation's: small segments, compacted
    /// early, stamped with a fixed time).
    ///
    /// # Errors
    ///
    /// As [`LeaderlessLog::open`], and options the WAL refuses (a record that does not fit
    /// in a segment).
    pub fn open_with<St>(storage: S, options: LogOptions) -> io::Result<(Self, Recovered<St>)>
    where
        St: Serialize + DeserializeOwned,
    {
        let LogOptions {
            compact_records_min,
            segment_bytes,
            record_bytes_max,
            fixed_time,
        } = options;
        let builder = if fixed_time {
            WalConfig::builder().clock(std::sync::Arc::new(synod_wal::ManualClock::new(0)))
        } else {
            WalConfig::builder()
        };
        let config = builder
            .sync_policy(SyncPolicy::Manual)
            .first_index(LogIndex::new(1))
            .segment_bytes_max(segment_bytes)
            .record_bytes_max(record_bytes_max)
            .pending_bytes_max(record_bytes_max.max(4 << 20))
            .build()
            .map_err(|e| io::Error::other(e.to_string()))?;
        let (wal, _report) =
            Wal::open(storage, config).map_err(|e| io::Error::other(e.to_string()))?;
        let mut recovered = Recovered::default();
        let mut live = BTreeMap::new();
        let mut records = 0;
        if !wal.is_empty() {
            for item in wal.range(wal.first_index(), wal.next_index()) {
                let (index, bytes) = item.map_err(|e| io::Error::other(e.to_string()))?;
                let record: Record<St> = decode(&bytes)
                    .map_err(|why| invalid(format!("record {}: {why}", index.get())))?;
                keep(&mut live, &record, bytes.to_vec());
                recovered.take(record);
                records += 1;
            }
        }
        let log = LeaderlessLog {
            wal,
            live,
            records,
            compact_records_min,
        };
        Ok((log, recovered))
    }

    /// Appends `record` (written out, durable at the next sync).
    ///
    /// # Errors
    ///
    /// The WAL's (a poisoned log, a full disk).
    pub fn append<St: Serialize>(&mut self, record: &Record<St>) -> io::Result<()> {
        let body = postcard::to_stdvec(record)
            .map_err(|e| io::Error::other(format!("a record does not encode: {e}")))?;
        let mut bytes = Vec::with_capacity(1 + body.len());
        bytes.push(FORMAT_VERSION);
        bytes.extend_from_slice(&body);
        self.wal
            .submit(bytes.clone())
            .map_err(|e| io::Error::other(e.to_string()))?;
        keep(&mut self.live, record, bytes);
        self.records += 1;
        Ok(())
    }

    /// Writes out what was appended, without syncing (for a driver whose sync covers the
    /// storage: the simulated disk's).
    ///
    /// # Errors
    ///
    /// The WAL's.
    pub fn flush(&mut self) -> io::Result<()> {
        self.wal
            .flush()
            .map(|_| ())
            .map_err(|e| io::Error::other(e.to_string()))
    }

    /// Makes every record appended durable, then compacts if the log is due.
    ///
    /// # Errors
    ///
    /// The WAL's; after a failed sync the log refuses writes until reopened.
    pub fn sync(&mut self) -> io::Result<()> {
        self.wal
            .sync()
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.compact_if_due()
    }

    /// Records in the log, and live ones.
    #[must_use]
    pub fn counts(&self) -> (u64, usize) {
        (self.records, self.live.len())
    }

    fn compact_if_due(&mut self) -> io::Result<()> {
        let live = self.live.len() as u64;
        if self.records < self.compact_records_min || self.records <= 2 * live {
            return Ok(());
        }
        let wal_error = |e: synod_wal::WalError| io::Error::other(e.to_string());
        let mark = self.wal.next_index();
        for bytes in self.live.values() {
            self.wal.submit(bytes.clone()).map_err(wal_error)?;
        }
        self.wal.sync().map_err(wal_error)?;
        self.wal.purge_before(mark).map_err(wal_error)?;
        self.records = live;
        Ok(())
    }
}

fn decode<St: DeserializeOwned>(bytes: &[u8]) -> Result<Record<St>, String> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, body)) => {
            postcard::from_bytes(body).map_err(|e| format!("does not decode: {e}"))
        }
        Some((version, _)) => Err(format!(
            "format version {version}; this build reads {FORMAT_VERSION}"
        )),
        None => Err("empty".into()),
    }
}

#[cfg(test)]
mod tests {
    use synod_wal::FileStorage;

    use super::*;
    use crate::leaderless::machine::Lww;

    type State = <Lww as synod_quorum::Resolver>::State;

    fn options() -> LogOptions {
        LogOptions {
            compact_records_min: 8,
            fixed_time: true,
            ..LogOptions::default()
        }
    }

    #[test]
    fn records_come_back_and_compaction_keeps_the_last_of_each_slot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = || FileStorage::new(dir.path()).expect("storage");
        let (mut log, recovered) =
            LeaderlessLog::open_with::<State>(storage(), options()).expect("opens");
        assert_eq!(recovered.generation, 0);
        log.append::<State>(&Record::Start { generation: 1 })
            .expect("appends");
        for i in 0..40u64 {
            let state: State = Some((synod_clocks::WallTime::from_nanos(i), Some(vec![i as u8])));
            let record = Record::Store {
                key: vec![(i % 3) as u8],
                state: Some(state),
            };
            log.append(&record).expect("appends");
            log.sync().expect("syncs");
        }
        let (records, live) = log.counts();
        assert!(
            records <= 2 * live as u64 + 1,
            "{records} records for {live} live"
        );
        drop(log);
        let (_, recovered) =
            LeaderlessLog::open_with::<State>(storage(), options()).expect("opens");
        assert_eq!(recovered.generation, 1);
        assert_eq!(recovered.store.len(), 3);
        assert_eq!(
            recovered.store[&vec![0u8]],
            Some((synod_clocks::WallTime::from_nanos(39), Some(vec![39u8])))
        );
    }

    #[test]
    fn a_key_no_longer_held_leaves_no_slot_and_is_not_brought_back_by_compaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = || FileStorage::new(dir.path()).expect("storage");
        let (mut log, _) = LeaderlessLog::open_with::<State>(storage(), options()).expect("opens");
        let held: State = Some((synod_clocks::WallTime::from_nanos(1), Some(vec![1])));
        // Every key is written, and all but every hundredth one is then no longer held:
        // the log and its memory follow the 20 keys held, not the 2,000 ever held.
        for i in 0..2_000u32 {
            let key = i.to_be_bytes().to_vec();
            log.append(&Record::Store {
                key: key.clone(),
                state: Some(held.clone()),
            })
            .expect("appends");
            if i % 100 != 0 {
                log.append::<State>(&Record::Store { key, state: None })
                    .expect("appends");
            }
            if i % 20 == 19 {
                log.sync().expect("syncs");
            }
        }
        let (records, live) = log.counts();
        assert!(live <= 20, "{live} live slots for 20 keys held");
        assert!(records <= 2 * 20 + 8, "{records} records for 20 keys held");
        drop(log);
        let (log, recovered) =
            LeaderlessLog::open_with::<State>(storage(), options()).expect("opens");
        let kept: Vec<u32> = recovered
            .store
            .keys()
            .map(|k| u32::from_be_bytes(k.as_slice().try_into().expect("4 bytes")))
            .collect();
        assert_eq!(kept, (0..2_000).step_by(100).collect::<Vec<u32>>());
        assert!(
            log.counts().1 <= 20,
            "{} live slots after reopening",
            log.counts().1
        );
    }
}
