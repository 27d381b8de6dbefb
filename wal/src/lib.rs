//! A durable, segmented write-ahead log.
//!
//! `synod-wal` is the storage under Synod's replicated log, and a crate you can use on its
//! own wherever a program must not lose what it acknowledged: append records, learn which
//! index is durable, read them back after a crash. It is written to be tested: the storage
//! under it is a small trait, and a fault-injecting implementation (feature `testing`) loses,
//! tears, reorders and flips what a real disk would, deterministically from a seed.
//!
//! ```
//! use synod_wal::{FileStorage, LogIndex, Wal, WalConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let (wal, _report) = Wal::open(FileStorage::new(dir.path())?, WalConfig::default())?;
//! let first = wal.append(b"set x = 1".to_vec())?; // durable when it returns
//! wal.append_batch([b"set y = 2".to_vec(), b"set z = 3".to_vec()])?;
//! assert_eq!(first, LogIndex::new(1));
//! drop(wal);
//!
//! // After a restart the log is replayed from disk.
//! let (wal, report) = Wal::open(FileStorage::new(dir.path())?, WalConfig::default())?;
//! assert_eq!(report.records, 3);
//! let replay: Vec<_> = wal.range(wal.first_index(), wal.next_index()).collect::<Result<_, _>>()?;
//! assert_eq!(&replay[1].1[..], b"set y = 2");
//! # Ok(()) }
//! ```
//!
//! # Patterns
//!
//! From *Patterns of Distributed Systems* (Unmesh Joshi). This crate owns three.
//!
//! ## Write-Ahead Log
//!
//! Every state change is appended to a log as a checksummed record and made durable before
//! it is acknowledged; after a crash, the state is rebuilt by replaying the log. Use it
//! whenever acknowledged updates must survive a crash without writing the whole state each
//! time: PostgreSQL's WAL, etcd's `wal` package, Kafka's partitions, TiKV's raft-engine and
//! every Raft implementation's log do this.
//!
//! Here a record is an opaque payload ([`bytes::Bytes`]) with a dense index ([`LogIndex`]).
//! Durability is explicit: [`Wal::durable_index`] says how far the log is durable, and
//! [`SyncPolicy`] says who syncs. The crash below is simulated with the fault-injecting
//! storage: the record that was synced survives, the one that was not is gone.
//!
//! ```
//! # #[cfg(feature = "testing")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use synod_wal::testing::{CrashMode, FaultyStorage};
//! use synod_wal::{LogIndex, SyncPolicy, Wal, WalConfig};
//!
//! let disk = FaultyStorage::new(7); // seeded: every run is the same
//! let config = WalConfig::builder().sync_policy(SyncPolicy::Manual).segment_bytes_max(64 << 10).build()?;
//! let (wal, _) = Wal::open(disk.clone(), config.clone())?;
//! wal.append(b"debit A 10".to_vec())?;
//! assert_eq!(wal.sync()?, LogIndex::new(1)); // durable up to index 1
//! wal.append(b"credit B 10".to_vec())?; // not synced yet
//! drop(wal);
//! disk.crash(CrashMode::DropUnsynced); // power loss
//! let (wal, _) = Wal::open(disk, config)?;
//! assert_eq!(wal.last_index(), LogIndex::new(1));
//! assert_eq!(&wal.read(LogIndex::new(1))?[..], b"debit A 10");
//! # Ok(()) }
//! # #[cfg(not(feature = "testing"))]
//! # fn main() {}
//! ```
//!
//! ## Segmented Log
//!
//! The log is a sequence of files, segments, each named by the index of its first record; a
//! new segment starts when the current one reaches a size limit. Old data then goes a whole
//! file at a time, and recovery reads only what it must. Kafka's log segments, etcd's
//! `0000000000000001-0000000000000001.wal` files and raft-engine's log files are segmented
//! logs.
//!
//! Here segments are `segment_bytes_max` long ([`WalConfigBuilder::segment_bytes_max`]),
//! named `<first index, 20 digits>.wal`, and pre-written with zeros (or recycled from purged
//! segments) before use, because syncing a write into an already-written file costs about
//! half as much as syncing one that grows the file. Under [`SyncPolicy::Group`] the
//! log keeps one spare pre-written ahead, on a thread of its own (`synod-wal-spares`), so
//! that a roll-over under steady load takes it instead of pre-writing a segment while every
//! writer waits; under the other policies (which start no thread) a roll-over without a
//! spare (one a purge left) pre-writes it inline. A spare is written and synced a chunk at
//! a time under a temporary name, then renamed and the directory synced: a crash leaves
//! either a whole spare or a temporary file, which open removes. Reads by index
//! and [`Wal::range`] cross segments transparently.
//!
//! ```
//! use synod_wal::{FileStorage, LogIndex, Wal, WalConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let config = WalConfig::builder().segment_bytes_max(16 * 1024).build()?;
//! let (wal, _) = Wal::open(FileStorage::new(dir.path())?, config)?;
//! wal.append_batch((0..100u32).map(|i| i.to_le_bytes().repeat(64)))?; // 100 x 256 bytes
//! assert!(wal.segment_count() > 1);
//! let names: Vec<String> = std::fs::read_dir(dir.path())?
//!     .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
//!     .collect::<Result<_, _>>()?;
//! assert!(names.contains(&"00000000000000000001.wal".to_string()));
//! // A range read that crosses segment boundaries.
//! let middle: Vec<_> = wal.range(LogIndex::new(40), LogIndex::new(80)).collect::<Result<_, _>>()?;
//! assert_eq!(middle.len(), 40);
//! assert_eq!(&middle[0].1[..4], &39u32.to_le_bytes());
//! # Ok(()) }
//! ```
//!
//! ## Low-Water Mark
//!
//! An index below which the log may be discarded: everything a snapshot covers (Raft log
//! compaction, ZooKeeper's snapshots and purge), or everything older than a retention period
//! (Kafka's `retention.ms`). Here [`Wal::purge_before`] takes a snapshot's mark and
//! [`Wal::purge_older_than`] an age; both delete (or recycle) whole segments, so the first
//! index may stay a little below the mark, and both are crash-safe: segments go oldest
//! first, so a crash part-way leaves a contiguous log. A mark past the end empties the log,
//! which then continues at the mark (a follower that installed a newer snapshot).
//!
//! ```
//! use std::sync::Arc;
//! use synod_wal::{FileStorage, LogIndex, ManualClock, Wal, WalConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let clock = Arc::new(ManualClock::new(0)); // stamps segments; the system clock by default
//! let config = WalConfig::builder().segment_bytes_max(8 * 1024).clock(clock.clone()).build()?;
//! let (wal, _) = Wal::open(FileStorage::new(dir.path())?, config)?;
//! for i in 0..200u64 {
//!     clock.set(i * 1000);
//!     wal.append(vec![0u8; 200])?;
//! }
//! // A snapshot covers everything up to index 99.
//! let first = wal.purge_before(LogIndex::new(100))?;
//! assert!(first > LogIndex::new(1) && first <= LogIndex::new(100));
//! // Keep one minute of history, as of t = 200 s.
//! let first = wal.purge_older_than(200_000, 60_000)?;
//! assert!(first > LogIndex::new(100));
//! assert_eq!(wal.last_index(), LogIndex::new(200));
//! # Ok(()) }
//! ```
//!
//! # Main types
//!
//! - [`Wal`]: the log handle. Cheap to clone and shared by many threads: [`Wal::append`],
//!   [`Wal::append_batch`], the non-blocking [`Wal::submit`] and [`Wal::submit_batch`],
//!   [`Wal::sync`], [`Wal::wait_durable`], [`Wal::set_durable_listener`], [`Wal::read`],
//!   [`Wal::range`], [`Wal::truncate_after`], [`Wal::purge_before`], [`Wal::purge_older_than`].
//! - [`WalConfig`], built and validated once by [`WalConfig::builder`]; [`SyncPolicy`],
//!   [`RecoveryMode`], [`Clock`].
//! - [`Storage`] and [`StorageFile`]: what the log needs from a directory; [`FileStorage`]
//!   is the real one, `testing::FaultyStorage` the fault-injecting one.
//! - [`check`] and [`dump`]: read-only inspection with printable results ([`CheckReport`],
//!   [`DumpReport`]), behind `synod wal check|dump DIR`.
//! - [`WalError`], [`Corruption`]: errors, and damage with its segment and offset.
//!
//! # Durability
//!
//! An index is reported durable ([`Wal::durable_index`], the return of a blocking append,
//! the durable listener) only after a sync that covered it returned success. The policies:
//!
//! - [`SyncPolicy::Always`] (the default): every [`Wal::append`] returns once its record is
//!   durable. Concurrent appenders share syncs: the thread that finds no sync under way
//!   writes and syncs everything pending, the others wait for it. No background thread.
//! - [`SyncPolicy::Group`]: group commit by one background thread, which syncs once
//!   `batch_bytes_max` bytes are pending or the oldest pending record has waited
//!   `batch_delay_us_max`, and as soon as it can when a writer waits for a record (a
//!   blocking append, [`Wal::wait_durable`]): the records queued while that sync runs make
//!   the next batch. A writer is released only by a sync that covered its record. The end
//!   of a sync wakes every writer it covered with one system call (or, when the next batch
//!   is already waiting to be written, wakes one of them, who wakes the rest, so that the
//!   write is not held up); and the next sync waits while writers the last one woke are
//!   still on their way out of the log and have not queued their next record (at most
//!   `batch_delay_us_max` from the end of the last sync), so that writers who each block
//!   on every record share one sync rather than the first few back taking one of their
//!   own. A writer that has left the log and not queued again is not waited for, and
//!   [`Wal::sync`], [`Wal::wait_durable`], [`Wal::close`] and a submitter waiting for room
//!   (`pending_bytes_max`) wait for no one. [`SyncPolicy::group()`] gives the values to
//!   start from (1 ms, 1 MiB) and why.
//! - [`SyncPolicy::Manual`]: nothing is written or synced until [`Wal::sync`] (or
//!   [`Wal::wait_durable`]). The log then does all its I/O in the caller's thread and never
//!   starts one, which is what a deterministic simulator needs.
//!
//! Pipelining: [`Wal::submit`] returns the index at once; the caller learns later that it
//! is durable, by polling [`Wal::durable_index`], by a listener, or by
//! [`Wal::wait_durable`]. This is how a consensus leader sends entries to followers while
//! its own disk write is under way.
//!
//! **A failed sync is final.** If a write or sync fails, the records of that batch are not
//! reported durable, waiters get an error, and the log refuses every later write
//! ([`WalError::Poisoned`]) until it is reopened: after a failed `fsync` Linux may have
//! dropped the dirty pages, so retrying until a sync succeeds would acknowledge data that is
//! gone. After reopening, the batch is all there or all gone. Linux file systems may keep
//! the failed batch readable in the page cache, marked clean but never written, so that no
//! later sync writes it; [`Wal::open`] therefore copies the records of the last segment that
//! no later record proves synced (at most the last batch or two) into a new segment, synced
//! before it takes over their indexes (a rename, or a rename over the old segment when the
//! copy is all of it). It never writes them again in place: some of them had been synced,
//! and a crash during such a rewrite could tear or flip the only copy of a synced record.
//! The copies carry lag 0 (each proves itself synced), so a restart with nothing new
//! appended copies nothing. The fault-injecting storage models both kernels' behaviours
//! (pages dropped, or kept clean).
//!
//! Segment roll-over syncs the full segment before the next one exists, so a closed segment
//! always holds its whole range; segment creation, renames and removals are followed by a
//! sync of the directory.
//!
//! **A cut stays made.** [`Wal::truncate_after`] leaves the records after the cut in the bytes
//! of the segment that held them; the segment's range ends where the next segment starts, and
//! that next segment is the record of the cut. A truncation therefore creates its new segment
//! at the cut (marked as a cut segment, synced, renamed, directory synced) before it removes any
//! segment after the cut, and recovery treats a segment after a cut segment and older than
//! it as one that truncation was removing. A crash at any point of a truncation leaves the
//! log as it was before (with at least the records up to the cut) or as after it, and never
//! brings back records that an earlier truncation, or a recovery cutting a torn tail, removed.
//!
//! # Recovery
//!
//! [`Wal::open`] scans the segments in order, checking each record's length, checksum, tag
//! and index, and cuts the log at the first record that fails. What that failure means:
//!
//! - In a closed segment, or with a valid record after it that was written after the failed
//!   one had been synced: damage. Each record carries the last index that was durable when
//!   it was written (as `lag`, below), so a later record proves that an earlier one had been
//!   synced. Damage is an error naming segment and offset ([`WalError::Corrupt`]): the log
//!   never silently drops a record that had been durable.
//! - Otherwise a torn tail: the unsynced end of the log, partly written or written out of
//!   order. It is cut off, and appends go on in a new segment so that stray records of the
//!   torn batch can never come back.
//!
//! [`RecoveryMode::TolerateTornTail`] (the default) does exactly that; [`RecoveryMode::Strict`]
//! refuses a torn tail too; [`RecoveryMode::SkipAndReport`] opens whatever valid prefix there
//! is, reports the damage in the [`RecoveryReport`], and renames the segments past it to
//! `*.corrupt`. A segment's range ends where the next segment's name says that one starts,
//! even when the next one's header is damaged, so a salvage never reads on into records a
//! truncation cut. One limit: damage inside the last synced batch, with nothing written after
//! it, cannot be told from a torn write of that batch, and is cut off as a torn tail. The
//! scan reads at most one 1 MiB window (or one maximum-size record) at a time per segment it
//! is reading, whatever a length field says, and nothing on disk can make it panic. A log
//! of 16 MiB or more is scanned by up to four threads (no more than the machine has cores),
//! a segment each at a time; what they find is taken in order, so the log is cut at the
//! first damage exactly as a scan in order would cut it.
//!
//! # On-disk format, version 2
//!
//! All integers little-endian. A segment file `<first index, 20 digits>.wal` is
//! `segment_bytes_max` bytes long:
//!
//! | Offset | Size | Segment header |
//! |---|---|---|
//! | 0 | 8 | magic `SYNODWAL` |
//! | 8 | 4 | format version, 2 (1 is read too) |
//! | 12 | 4 | flags (bit 0: base segment, every segment before it is obsolete; bit 1: cut segment, every segment after it with a smaller generation is obsolete) |
//! | 16 | 8 | first index (must match the file name) |
//! | 24 | 8 | generation: never reused within a log directory |
//! | 32 | 8 | creation time, milliseconds of the configured [`Clock`] |
//! | 40 | 4 | CRC32 (crc32fast) of bytes 0..40 |
//! | 44 | 4 | reserved, 0 |
//!
//! Records follow from offset 48, each starting at a multiple of 8:
//!
//! | Offset | Size | Record |
//! |---|---|---|
//! | 0 | 4 | CRC32 of bytes 4..24 and the payload |
//! | 4 | 4 | payload length |
//! | 8 | 8 | index |
//! | 16 | 4 | tag: the low 32 bits of the segment's generation |
//! | 20 | 4 | lag: index minus the last index durable when written (saturating); 0 in a copy recovery made |
//! | 24 | len | payload, then zeros up to a multiple of 8 |
//!
//! The tag makes records left over in a recycled file invalid for the segment's new
//! generation. Records past a closed segment's range (left there by a truncation) keep their
//! segment's tag; the next segment's first index ends the range.
//!
//! Version 2 adds the cut flag (bit 1), which a truncation sets on the segment it creates.
//! A version-1 log (whose truncations removed the segments after the cut first, and could
//! lose a cut to a crash part-way) is read as before, and its segments stay version 1; new
//! segments are written as version 2, which a reader of version 1 only refuses
//! ([`CorruptionKind::UnsupportedVersion`]). Spare files are `<20 digits>.spare`,
//! files being prepared `<20 digits>.tmp` or `<20 digits>.spare.tmp` (removed at open);
//! other names in the directory are left alone. The [`format`](mod@format) module has the
//! constants and codecs.
//!
//! # Memory
//!
//! The in-memory index is one `u32` offset per record: 4 bytes per record, at most 8 while
//! the active segment's vector grows, and closed segments are shrunk to fit. A test appends
//! 100,000 records and checks [`Wal::index_bytes`] against 8 bytes per record.
//!
//! # What it does not do
//!
//! It stores opaque payloads with dense, increasing indexes. It does not interpret them,
//! keep a key index, compress, encrypt or replicate anything: replication is
//! `synod-consensus`'s job. It does not use `O_DIRECT` or memory maps.
//!
//! # Crate features
//!
//! - `testing`: the `testing` module, with `FaultyStorage`, an in-memory, seeded,
//!   fault-injecting [`Storage`] (crash modes: drop unsynced writes, keep a prefix, tear the
//!   last write at any byte or at a 512 B or 4 KiB boundary, reorder unsynced 4 KiB blocks,
//!   flip a bit; injected faults: failing syncs that drop dirty data, `ENOSPC`, short writes,
//!   write errors; a disk that halts after N operations). Use it to test your own recovery
//!   code; `synod-sim` uses it for every simulated node's disk.
//!
//! # Tests and benchmarks
//!
//! `cargo test -p synod-wal` runs, among others, a crash-point sweep (12,000 crash points over
//! every crash mode by default; `SYNOD_WAL_CRASH_POINTS` sets another count) and a
//! model-based property test against a `Vec` (`SYNOD_WAL_PROPTEST_CASES`, default 256).
//! `cargo bench -p synod-wal --bench throughput` compares the log with raw `pwrite` +
//! `fdatasync` and crc32fast measured in the same run (`SYNOD_BENCH_QUICK=1` for a short
//! run); `--bench codec` has criterion micro-benchmarks of the record codec.
//!
//! # Sibling crates
//!
//! `synod-consensus` offers a log store built on this crate (its `wal` feature);
//! `synod-sim` uses the fault-injecting storage for simulated disks; `synod-examples`
//! wires [`check`] and [`dump`] into `synod wal check|dump DIR`.

mod config;
mod error;
pub mod format;
mod index;
mod inspect;
mod scan;
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;
mod wal;

pub use config::{
    Clock, ManualClock, RecoveryMode, SyncPolicy, SystemClock, WalConfig, WalConfigBuilder,
};
pub use error::{Corruption, CorruptionKind, WalError};
pub use index::LogIndex;
pub use inspect::{
    CheckReport, DumpReport, DumpedRecord, SegmentSummary, check, check_storage, dump, dump_storage,
};
pub use storage::{FileStorage, Storage, StorageFile};
pub use wal::{Records, RecoveryReport, Wal};
