//! Crash consistency of a `synod_wal::Wal` on the simulated disk, through [`Disk::storage`]:
//! random appends, synchronous syncs (some made to fail), group commits as `ProtocolNode`
//! makes them (`Wal::flush`, then an asynchronous sync of the disk that completes later or
//! fails, after which the writer is rebuilt from the disk), truncations and purges, crashed
//! (between operations or in the middle of one) under every crash mode, over many seeds;
//! half the recoveries are themselves crashed part-way, in the same mode, before the one
//! that is checked.
//! Every record acknowledged durable must come back unchanged, and nothing may come back
//! that was never written (a torn or flipped record returned as valid) or that a truncation
//! or a recovery removed, even when a crash interrupts a later truncation. Two deliberately
//! broken writers run through the same check, which must catch them: one that reports
//! durable without syncing, and a log without checksums.
//!
//! `SYNOD_SIM_WAL_SEEDS` sets the seeds per crash mode of the sweep (default 300).

use std::collections::BTreeMap;
use std::sync::Arc;

use synod_node::Rng;
use synod_wal::{LogIndex, ManualClock, SyncPolicy, Wal, WalConfig};

use super::*;

/// Seeds per crash mode (each run crashes and recovers `CYCLES` times), unless
/// `SYNOD_SIM_WAL_SEEDS` says otherwise.
const SEEDS_DEFAULT: u64 = 300;
const CYCLES: u32 = 3;
/// Operations before a crash, at most.
const OPS_MAX: u64 = 50;
/// Payload bytes of a record, at most.
const PAYLOAD_BYTES_MAX: u64 = 480;
/// Storage operations a recovery makes before a crash stops it, at most.
const RECOVERY_OPS_MAX: u64 = 12;

fn seeds() -> u64 {
    std::env::var("SYNOD_SIM_WAL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEEDS_DEFAULT)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// The real `Wal`.
    Wal,
    /// The `Wal`, but `sync` reports durable without syncing (broken).
    AckBeforeSync,
    /// A plain log of length-prefixed records without checksums (broken).
    NoChecksum,
}

fn wal_config() -> WalConfig {
    WalConfig::builder()
        .sync_policy(SyncPolicy::Manual)
        .segment_bytes_max(4096)
        .record_bytes_max(512)
        .pending_bytes_max(1024)
        .clock(Arc::new(ManualClock::new(0)))
        .build()
        .expect("valid config")
}

/// A log under test, as the checker drives it.
enum Log {
    Wal {
        wal: Wal<DiskStorage>,
        ack_before_sync: bool,
    },
    Plain(Plain),
}

type Outcome<T> = Result<T, String>;

/// Recovered records: (index, payload), in order.
type Records = Vec<(u64, Vec<u8>)>;

impl Log {
    fn open(writer: Writer, disk: &Disk) -> Outcome<(Log, Records)> {
        if writer == Writer::NoChecksum {
            let (plain, records) = Plain::open(disk.storage()).map_err(|e| e.to_string())?;
            return Ok((Log::Plain(plain), records));
        }
        let (wal, _report) =
            Wal::open(disk.storage(), wal_config()).map_err(|e| format!("open: {e}"))?;
        let mut records = Vec::new();
        for i in wal.first_index().get()..wal.next_index().get() {
            let payload = wal
                .read(LogIndex::new(i))
                .map_err(|e| format!("read {i}: {e}"))?;
            records.push((i, payload.to_vec()));
        }
        let log = Log::Wal {
            wal,
            ack_before_sync: writer == Writer::AckBeforeSync,
        };
        Ok((log, records))
    }

    fn first(&self) -> u64 {
        match self {
            Log::Wal { wal, .. } => wal.first_index().get(),
            Log::Plain(p) => p.first,
        }
    }

    fn next(&self) -> u64 {
        match self {
            Log::Wal { wal, .. } => wal.next_index().get(),
            Log::Plain(p) => p.first + p.offsets.len() as u64,
        }
    }

    fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        match self {
            Log::Wal { wal, .. } => wal
                .append(payload.to_vec())
                .map(drop)
                .map_err(io::Error::other),
            Log::Plain(p) => p.append(payload),
        }
    }

    /// Writes what is queued, without syncing.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Log::Wal { wal, .. } => wal.flush().map(drop).map_err(io::Error::other),
            Log::Plain(_) => Ok(()), // writes at once
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        match self {
            Log::Wal {
                ack_before_sync: true,
                ..
            } => Ok(()),
            Log::Wal { wal, .. } => wal.sync().map(drop).map_err(io::Error::other),
            Log::Plain(p) => p.file.sync_data(),
        }
    }

    fn truncate_after(&mut self, last_kept: u64) -> io::Result<()> {
        match self {
            Log::Wal { wal, .. } => wal
                .truncate_after(LogIndex::new(last_kept))
                .map_err(io::Error::other),
            Log::Plain(p) => p.truncate_after(last_kept),
        }
    }

    fn purge_before(&mut self, mark: u64) -> io::Result<()> {
        match self {
            Log::Wal { wal, .. } => wal
                .purge_before(LogIndex::new(mark))
                .map(drop)
                .map_err(io::Error::other),
            Log::Plain(_) => Ok(()), // keeps everything, which the check allows
        }
    }
}

/// The broken writer without checksums: one file of `[index u64][length u32][payload]`.
struct Plain {
    file: DiskFile,
    first: u64,
    /// Where each record starts, and where the next one goes.
    offsets: Vec<u64>,
    end: u64,
}

impl Plain {
    const NAME: &'static str = "plain.log";

    fn open(storage: DiskStorage) -> io::Result<(Plain, Records)> {
        let file = match storage.open(Self::NAME) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let f = storage.create(Self::NAME)?;
                storage.sync_dir()?;
                f
            }
            Err(e) => return Err(e),
        };
        let len = file.len()?;
        let mut bytes = vec![0u8; usize::try_from(len).expect("small")];
        synod_wal::storage::read_full_at(&file, &mut bytes, 0)?;
        let (mut records, mut offsets, mut at) = (Vec::new(), Vec::new(), 0usize);
        let mut first = 1;
        while let Some(header) = bytes.get(at..at + 12) {
            let index = u64::from_le_bytes(header[..8].try_into().expect("8"));
            let n = u32::from_le_bytes(header[8..].try_into().expect("4")) as usize;
            let Some(payload) = bytes.get(at + 12..at + 12 + n) else {
                break;
            };
            if records.is_empty() {
                first = index;
            } else if index != first + records.len() as u64 {
                break;
            }
            offsets.push(at as u64);
            records.push((index, payload.to_vec()));
            at += 12 + n;
        }
        let plain = Plain {
            file,
            first,
            offsets,
            end: at as u64,
        };
        Ok((plain, records))
    }

    fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        let index = self.first + self.offsets.len() as u64;
        let mut record = index.to_le_bytes().to_vec();
        record.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_le_bytes());
        record.extend_from_slice(payload);
        synod_wal::storage::write_all_at(&self.file, &record, self.end)?;
        self.offsets.push(self.end);
        self.end += record.len() as u64;
        Ok(())
    }

    fn truncate_after(&mut self, last_kept: u64) -> io::Result<()> {
        let keep = usize::try_from(last_kept + 1 - self.first).expect("small");
        self.end = self.offsets.get(keep).copied().unwrap_or(self.end);
        self.offsets.truncate(keep);
        self.file.set_len(self.end)?;
        self.file.sync_data()
    }
}

/// What the writer was told, for the check after a crash.
#[derive(Debug, Default)]
struct Model {
    /// Per index, every payload written there that a crash may bring back: records that a
    /// completed truncation or a recovery removed are no longer here.
    versions: BTreeMap<u64, Vec<Vec<u8>>>,
    /// The payload at each index as the writer last wrote it.
    current: BTreeMap<u64, Vec<u8>>,
    /// Records `low..acked` were acknowledged durable and must come back unchanged.
    low: u64,
    acked: u64,
}

impl Model {
    /// The model after a recovery found `records`: what came back is all there is, and
    /// durable. Records it cut off stay in their segments' bytes, but must never come back.
    fn from_recovered(records: &[(u64, Vec<u8>)], next: u64) -> Model {
        let mut m = Model {
            low: records.first().map_or(next, |r| r.0),
            acked: next,
            ..Model::default()
        };
        for (i, p) in records {
            m.versions.insert(*i, vec![p.clone()]);
            m.current.insert(*i, p.clone());
        }
        m
    }

    /// Checks a recovered log.
    fn check(&self, records: &[(u64, Vec<u8>)]) -> Outcome<()> {
        for pair in records.windows(2) {
            if pair[1].0 != pair[0].0 + 1 {
                return Err(format!("a gap after index {}", pair[0].0));
            }
        }
        for (i, p) in records {
            if !self.versions.get(i).is_some_and(|v| v.contains(p)) {
                return Err(format!(
                    "index {i}: a record that was never written, or that a cut removed"
                ));
            }
        }
        let got: BTreeMap<u64, &Vec<u8>> = records.iter().map(|(i, p)| (*i, p)).collect();
        for i in self.low..self.acked {
            if got.get(&i) != self.current.get(&i).as_ref() {
                return Err(format!(
                    "index {i}: an acknowledged record was lost or changed"
                ));
            }
        }
        Ok(())
    }
}

/// One run: `CYCLES` times, random operations then a crash in `mode`, and the check.
/// Returns how many crashes left unsynced data, tore or flipped, how many truncations a
/// crash (or a failure) interrupted, and how many recoveries a crash stopped part-way.
fn run(writer: Writer, seed: u64, mode: CrashMode) -> Outcome<[u32; 5]> {
    let mut disk = Disk::new(seed);
    let mut rng = Rng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ mode as u64);
    let mut made = 0u64;
    let mut seen = [0u32; 5];
    let (log, records) = Log::open(writer, &disk)?;
    let mut model = Model::from_recovered(&records, log.next());
    // `None` once a rebuild stopped part-way (a halted disk).
    let mut log = Some(log);
    for cycle in 0..CYCLES {
        let halting = rng.below(3) == 0;
        if halting {
            // Stop the disk part-way through an operation.
            disk.halt_after(Some(rng.below(80)));
        }
        // Asynchronous syncs requested and not completed: (sync point, records covered).
        let mut requested: Vec<(u64, u64)> = Vec::new();
        for _ in 0..1 + rng.below(OPS_MAX) {
            let Some(l) = log.as_mut() else { break };
            let result = match rng.below(12) {
                0..=5 => append(l, &mut model, &mut rng, &mut made, (seed, cycle)),
                6 => l.sync().map(|()| model.acked = l.next()),
                7 => {
                    // Group commit as ProtocolNode does it: the queued records are written
                    // out, then a sync of the whole disk is asked for; it completes later.
                    let result = l.flush();
                    if result.is_ok() {
                        requested.push((disk.sync_point(), l.next()));
                    }
                    result
                }
                8 if !requested.is_empty() => {
                    let (point, covered) = requested.remove(0);
                    if rng.below(4) == 0 {
                        // The sync fails: as ProtocolNode does, end the writer, make what the
                        // disk holds durable and rebuild from it.
                        requested.clear();
                        match rebuild(writer, &mut disk, point, log.take().expect("open")) {
                            Ok((reopened, records)) => {
                                model.check(&records).map_err(|e| {
                                    format!(
                                        "seed {seed} {mode:?} cycle {cycle}, after a failed \
                                         sync: {e}"
                                    )
                                })?;
                                model = Model::from_recovered(&records, reopened.next());
                                log = Some(reopened);
                                Ok(())
                            }
                            // The disk halted part-way: crash now.
                            Err(_) if halting => break,
                            Err(e) => return Err(format!("seed {seed} {mode:?}: {e}")),
                        }
                    } else {
                        let result = disk.sync_through(point);
                        if result.is_ok() {
                            model.acked = model.acked.max(covered);
                        }
                        result
                    }
                }
                8 | 9 => {
                    // A synchronous sync, which fails one time in eight: the writer must not
                    // call it durable.
                    if rng.below(8) == 0 {
                        disk.fail_next_sync();
                    }
                    let result = l.sync().map(|()| model.acked = l.next());
                    disk.clear_failing_syncs(); // not used if there was nothing to sync
                    result
                }
                10 => {
                    let (first, next) = (l.first(), l.next());
                    let last_kept = first - 1 + rng.below(next - first + 1);
                    let result = l.truncate_after(last_kept);
                    // Records after the cut are gone for good once it returns; a crash part-way
                    // may leave them, but never brings back what an earlier cut removed.
                    // Those before it are not made durable by a cut of records still queued.
                    if result.is_ok() {
                        model.versions.retain(|&i, _| i <= last_kept);
                        model.current.retain(|&i, _| i <= last_kept);
                    } else {
                        seen[3] += 1;
                    }
                    model.acked = model.acked.min(last_kept + 1);
                    model.low = model.low.min(last_kept + 1);
                    for r in &mut requested {
                        r.1 = r.1.min(last_kept + 1);
                    }
                    result
                }
                _ => {
                    let first = l.first();
                    let mark = first + rng.below(model.acked.saturating_sub(first) + 1);
                    model.low = model.low.max(mark);
                    l.purge_before(mark)
                }
            };
            if result.is_err() {
                break; // the writer is poisoned (or the disk halted): crash now
            }
        }
        // The process writes a few more records out before it dies, so that the crash
        // meets unsynced data. (A failed sync, which ends many cycles since it poisons the
        // writer, leaves nothing unsynced: it dropped the unsynced writes.)
        if let Some(l) = log.as_mut() {
            let _poisoned_or_halted = (0..1 + rng.below(4)).try_for_each(|_| {
                append(l, &mut model, &mut rng, &mut made, (seed, cycle))?;
                l.flush()
            });
        }
        drop(log);
        let outcome = disk.crash_outcome(mode);
        disk.clear_failing_syncs();
        seen[0] += u32::from(outcome.unsynced);
        seen[1] += u32::from(outcome.torn);
        seen[2] += u32::from(outcome.bit_flipped);
        if rng.below(2) == 0 {
            // The recovery itself crashes part-way, in the same mode: whatever it writes to
            // make the log safe must never put a synced record at risk.
            disk.halt_after(Some(rng.below(RECOVERY_OPS_MAX)));
            if Log::open(writer, &disk).is_err() {
                seen[4] += 1;
            }
            let outcome = disk.crash_outcome(mode);
            seen[1] += u32::from(outcome.torn);
            seen[2] += u32::from(outcome.bit_flipped);
        }
        let (reopened, records) = Log::open(writer, &disk)
            .map_err(|e| format!("seed {seed} {mode:?} cycle {cycle}: {e}"))?;
        model
            .check(&records)
            .map_err(|e| format!("seed {seed} {mode:?} cycle {cycle}: {e}"))?;
        // Recovering twice gives the same log.
        drop(reopened);
        let (reopened, again) = Log::open(writer, &disk)?;
        if again != records {
            return Err(format!(
                "seed {seed} {mode:?} cycle {cycle}: a second recovery differs"
            ));
        }
        model = Model::from_recovered(&records, reopened.next());
        log = Some(reopened);
    }
    Ok(seen)
}

/// Appends a record of random length, and notes it in the model.
fn append(
    l: &mut Log,
    model: &mut Model,
    rng: &mut Rng,
    made: &mut u64,
    (seed, cycle): (u64, u32),
) -> io::Result<()> {
    *made += 1;
    let mut payload = format!("{seed}/{cycle}/{made}:").into_bytes();
    let filler = rng.below(PAYLOAD_BYTES_MAX) as usize;
    payload.extend(std::iter::repeat_n(*made as u8, filler));
    let index = l.next();
    model
        .versions
        .entry(index)
        .or_default()
        .push(payload.clone());
    model.current.insert(index, payload.clone());
    l.append(&payload)
}

/// A failed asynchronous sync of everything before `point`, and what ProtocolNode does
/// then: the writer ends, a sync of the whole disk is asked for, and once it completes the
/// writer is rebuilt from what the disk holds.
fn rebuild(writer: Writer, disk: &mut Disk, point: u64, log: Log) -> Outcome<(Log, Records)> {
    disk.fail_through(point).map_err(|e| e.to_string())?;
    drop(log);
    let all = disk.sync_point();
    disk.sync_through(all).map_err(|e| e.to_string())?;
    Log::open(writer, disk)
}

#[test]
fn a_wal_on_the_simulated_disk_recovers_every_acknowledged_record_under_every_crash_mode() {
    let mut seen = [0u32; 5];
    for mode in CrashMode::ALL {
        for seed in 0..seeds() {
            let s = run(Writer::Wal, seed, mode).unwrap_or_else(|e| panic!("{e}"));
            for (total, n) in seen.iter_mut().zip(s) {
                *total += n;
            }
        }
    }
    // The crashes really hit unsynced data, and tore and flipped it.
    let [unsynced, torn, flipped, interrupted, recoveries] = seen;
    eprintln!(
        "{} crashes: {unsynced} with unsynced data, {torn} torn, {flipped} flipped; \
         {interrupted} truncations interrupted; {recoveries} recoveries stopped part-way",
        seeds() * CrashMode::ALL.len() as u64 * u64::from(CYCLES)
    );
    // Per 300 seeds, more than 4,000 crashes with unsynced data, 400 tears and flips,
    // 25 interrupted truncations and 500 interrupted recoveries.
    let n = seeds();
    assert!(
        u64::from(unsynced) * 300 > 4000 * n
            && u64::from(torn) * 300 > 400 * n
            && u64::from(flipped) * 300 > 400 * n
            && u64::from(interrupted) * 300 > 25 * n
            && u64::from(recoveries) * 300 > 500 * n,
        "{seen:?}"
    );
}

#[test]
fn the_check_catches_a_writer_that_acknowledges_before_syncing_and_one_without_checksums() {
    for (writer, modes) in [
        (Writer::AckBeforeSync, &CrashMode::ALL[..]),
        // Only a flipped bit makes a record without a checksum read back wrong: a torn one
        // is cut short by its length.
        (Writer::NoChecksum, &[CrashMode::FlipBit][..]),
    ] {
        let runs = SEEDS_DEFAULT * modes.len() as u64;
        let caught = modes
            .iter()
            .flat_map(|&mode| (0..SEEDS_DEFAULT).map(move |seed| (mode, seed)))
            .filter(|&(mode, seed)| run(writer, seed, mode).is_err())
            .count() as u64;
        eprintln!("{writer:?}: caught in {caught} of {runs} runs");
        assert!(
            caught * 2 > runs,
            "{writer:?}: caught in only {caught} of {runs} runs"
        );
    }
}
