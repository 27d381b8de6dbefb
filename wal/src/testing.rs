//! A fault-injecting, in-memory [`Storage`] for testing recovery code (feature `testing`).
//!
//! [`FaultyStorage`] keeps files in memory and remembers which bytes and directory entries
//! are durable. A test (or `synod-sim`, which uses it for each simulated node's disk) drops
//! the log handle to "kill the process", calls [`FaultyStorage::crash`] to apply what a power
//! loss does to everything not yet synced, then reopens the log on the same storage.
//!
//! Everything is deterministic from the seed given to [`FaultyStorage::new`], which seeds a
//! [`synod_node::Rng`] (the workspace's one seeded generator) that every random choice is drawn
//! from: no OS randomness, no clock, no threads. Clones share one disk, so a clone kept by the test
//! survives the log that used the other.
//!
//! What it models:
//!
//! - writes that reach the page cache at once (reads see them) but survive a crash only after
//!   a `sync_data` of their file; directory changes that survive only after `sync_dir`, and
//!   then in the order they were made;
//! - at a crash ([`CrashMode`]): every unsynced write lost; a prefix of them kept; the last
//!   kept write torn at any byte, at a 512-byte or a 4 KiB boundary; unsynced 4 KiB blocks
//!   kept or lost independently (reordering); a bit flipped in the surviving unsynced bytes;
//! - bit flips anywhere at any time ([`FaultyStorage::flip_bit`]), synced data included;
//! - injected faults ([`Fault`]): a sync that fails and drops the file's dirty data, or
//!   one that fails and leaves it readable in the cache but never written (as Linux file
//!   systems do after writeback errors), `ENOSPC`, short writes, I/O errors;
//! - a disk that stops after a given number of mutating operations
//!   ([`FaultyStorage::halt_after`]), to crash a program at an exact point.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::Arc;

use parking_lot::Mutex;
use synod_node::Rng;

use crate::storage::{Storage, StorageFile};

/// What a crash does to the writes and directory changes that were not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum CrashMode {
    /// Every unsynced write and directory change is lost.
    DropUnsynced,
    /// A random prefix (in issue order) of each file's unsynced writes survives, and a random
    /// prefix of the unsynced directory changes.
    KeepPrefix,
    /// As `KeepPrefix`, and the first write past the prefix is torn: a prefix of its bytes
    /// survives, cut at a random byte, a 512-byte boundary or a 4 KiB boundary.
    TearLast,
    /// Each unsynced write is cut into 4 KiB-aligned blocks, and each block survives or not
    /// independently: writes reach the disk out of order.
    Reorder,
    /// As `KeepPrefix`, and one bit in the surviving unsynced bytes is flipped.
    FlipBit,
    /// Everything survives, as after a clean shutdown of the machine.
    KeepAll,
}

impl CrashMode {
    /// Every crash mode.
    pub const ALL: [CrashMode; 6] = [
        CrashMode::DropUnsynced,
        CrashMode::KeepPrefix,
        CrashMode::TearLast,
        CrashMode::Reorder,
        CrashMode::FlipBit,
        CrashMode::KeepAll,
    ];

    /// A short name for reports.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            CrashMode::DropUnsynced => "drop-unsynced",
            CrashMode::KeepPrefix => "keep-prefix",
            CrashMode::TearLast => "tear-last",
            CrashMode::Reorder => "reorder",
            CrashMode::FlipBit => "flip-bit",
            CrashMode::KeepAll => "keep-all",
        }
    }
}

/// A one-shot fault, injected with [`FaultyStorage::inject`] and fired by the next matching
/// operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The next `sync_data` fails with an I/O error, and the file's unsynced data is dropped
    /// (reads then return the last synced contents).
    SyncError,
    /// The next `sync_data` fails with an I/O error, and the file's unsynced data stays in
    /// the page cache, marked clean but never written: reads (by this process and by a
    /// reopened log) still return it, later syncs do not write it, and a crash loses it.
    /// This is what ext4 and XFS do after a writeback error.
    SyncErrorKeepsCache,
    /// The next `write_at` fails with `StorageFull` and writes nothing.
    NoSpace,
    /// The next `write_at` writes only part of its buffer (at least one byte).
    ShortWrite,
    /// The next `write_at` fails with an I/O error and writes nothing.
    WriteError,
    /// The next `sync_dir` fails with an I/O error (the directory changes stay unsynced).
    DirSyncError,
}

/// Counters of what the disk has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Mutating operations (writes, length changes, syncs, creations, renames, removals).
    pub ops: u64,
    /// `write_at` calls.
    pub writes: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// `sync_data` calls.
    pub syncs: u64,
    /// `sync_dir` calls.
    pub dir_syncs: u64,
    /// Crashes applied.
    pub crashes: u64,
    /// Injected faults that fired.
    pub faults_fired: u64,
    /// Writes torn by a crash.
    pub torn_writes: u64,
    /// Bits flipped (by a crash or by `flip_bit`).
    pub bits_flipped: u64,
}

/// What one crash did to the unsynced state, for coverage counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// Unsynced writes and length changes at the crash.
    pub unsynced_ops: u64,
    /// Of those, how many were lost entirely (a reordered write counts as lost if none of
    /// its blocks survived).
    pub ops_lost: u64,
    /// Whether a write was torn.
    pub torn: bool,
    /// Bits flipped.
    pub bits_flipped: u64,
    /// Unsynced directory changes at the crash, and how many of them were lost.
    pub dir_ops: u64,
    /// Unsynced directory changes lost.
    pub dir_ops_lost: u64,
}

#[derive(Debug, Clone)]
enum PendingOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone, Default)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<PendingOp>,
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(String, u64),
    Unlink(String),
    Rename(String, String),
}

fn apply_dir(dir: &mut BTreeMap<String, u64>, op: &DirOp) {
    match op {
        DirOp::Link(name, inode) => {
            dir.insert(name.clone(), *inode);
        }
        DirOp::Unlink(name) => {
            dir.remove(name);
        }
        DirOp::Rename(from, to) => {
            if let Some(inode) = dir.remove(from) {
                dir.insert(to.clone(), inode);
            }
        }
    }
}

fn apply_op(buf: &mut Vec<u8>, op: &PendingOp) {
    match op {
        PendingOp::Write { offset, data } => write_into(buf, *offset, data),
        PendingOp::SetLen(len) => buf.resize(usize::try_from(*len).unwrap_or(usize::MAX), 0),
    }
}

fn write_into(buf: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    let end = start + data.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[start..end].copy_from_slice(data);
}

#[derive(Debug)]
struct Disk {
    rng: Rng,
    /// Bumped at every crash: handles opened before it fail, like a dead process's.
    epoch: u64,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    dir: BTreeMap<String, u64>,
    durable_dir: BTreeMap<String, u64>,
    dir_ops: Vec<DirOp>,
    capacity_bytes: Option<u64>,
    faults: VecDeque<Fault>,
    halt_after_ops: Option<u64>,
    stats: DiskStats,
}

impl Disk {
    fn used_bytes(&self) -> u64 {
        self.inodes.values().map(|i| i.current.len() as u64).sum()
    }

    /// Counts a mutating operation; fails once the disk has halted.
    fn mutate(&mut self) -> io::Result<()> {
        if let Some(left) = self.halt_after_ops {
            if left == 0 {
                return Err(io::Error::other(
                    "simulated disk halted (the process is crashing)",
                ));
            }
            self.halt_after_ops = Some(left - 1);
        }
        self.stats.ops += 1;
        Ok(())
    }

    fn take_fault(&mut self, matches: impl Fn(Fault) -> bool) -> Option<Fault> {
        let pos = self.faults.iter().position(|f| matches(*f))?;
        self.stats.faults_fired += 1;
        self.faults.remove(pos)
    }

    /// Forgets files that no directory state, present or possible after a crash, names.
    fn gc(&mut self) {
        let mut live: Vec<u64> = self
            .dir
            .values()
            .chain(self.durable_dir.values())
            .copied()
            .collect();
        for op in &self.dir_ops {
            if let DirOp::Link(_, id) = op {
                live.push(*id);
            }
        }
        self.inodes.retain(|id, _| live.contains(id));
    }

    fn crash(&mut self, mode: CrashMode) -> CrashReport {
        let mut report = CrashReport::default();
        self.stats.crashes += 1;
        self.epoch += 1;
        // Directory: a prefix of the unsynced changes survives, in order.
        let keep_dir = match mode {
            CrashMode::DropUnsynced => 0,
            CrashMode::KeepAll => self.dir_ops.len(),
            _ => usize::try_from(self.rng.below(self.dir_ops.len() as u64 + 1)).unwrap_or(0),
        };
        report.dir_ops = self.dir_ops.len() as u64;
        report.dir_ops_lost = (self.dir_ops.len() - keep_dir) as u64;
        let mut dir = self.durable_dir.clone();
        for op in &self.dir_ops[..keep_dir] {
            apply_dir(&mut dir, op);
        }
        self.dir = dir.clone();
        self.durable_dir = dir;
        self.dir_ops.clear();
        let ids: Vec<u64> = self.inodes.keys().copied().collect();
        for id in ids {
            let mut inode = self.inodes.remove(&id).expect("listed");
            let mut result = inode.durable.clone();
            let pending = std::mem::take(&mut inode.pending);
            report.unsynced_ops += pending.len() as u64;
            match mode {
                CrashMode::DropUnsynced => report.ops_lost += pending.len() as u64,
                CrashMode::KeepAll => pending.iter().for_each(|op| apply_op(&mut result, op)),
                CrashMode::KeepPrefix | CrashMode::FlipBit | CrashMode::TearLast => {
                    let keep =
                        usize::try_from(self.rng.below(pending.len() as u64 + 1)).unwrap_or(0);
                    let mut touched = Vec::new();
                    report.ops_lost += (pending.len() - keep) as u64;
                    for op in &pending[..keep] {
                        apply_op(&mut result, op);
                        if let PendingOp::Write { offset, data } = op {
                            touched.push((*offset, data.len()));
                        }
                    }
                    if mode == CrashMode::TearLast
                        && let Some(PendingOp::Write { offset, data }) = pending.get(keep)
                    {
                        let cut = self.tear_point(*offset, data.len());
                        write_into(&mut result, *offset, &data[..cut]);
                        self.stats.torn_writes += 1;
                        report.torn = true;
                        report.ops_lost = report.ops_lost.saturating_sub(1);
                    }
                    if mode == CrashMode::FlipBit {
                        let total: u64 = touched.iter().map(|(_, l)| *l as u64).sum();
                        if total > 0 {
                            let mut pick = self.rng.below(total);
                            for (offset, len) in touched {
                                if pick < len as u64 {
                                    let at = usize::try_from(offset + pick).unwrap_or(usize::MAX);
                                    if let Some(b) = result.get_mut(at) {
                                        *b ^= 1 << self.rng.below(8);
                                        self.stats.bits_flipped += 1;
                                        report.bits_flipped += 1;
                                    }
                                    break;
                                }
                                pick -= len as u64;
                            }
                        }
                    }
                }
                CrashMode::Reorder => {
                    for op in &pending {
                        match op {
                            PendingOp::SetLen(_) => {
                                if self.rng.below(2) == 1 {
                                    apply_op(&mut result, op);
                                } else {
                                    report.ops_lost += 1;
                                }
                            }
                            PendingOp::Write { offset, data } => {
                                let mut kept_any = false;
                                let mut at = 0usize;
                                while at < data.len() {
                                    let abs = offset + at as u64;
                                    let block_end = (abs / 4096 + 1) * 4096;
                                    let len = usize::try_from(block_end - abs)
                                        .unwrap_or(usize::MAX)
                                        .min(data.len() - at);
                                    if self.rng.below(2) == 1 {
                                        write_into(&mut result, abs, &data[at..at + len]);
                                        kept_any = true;
                                    }
                                    at += len;
                                }
                                if !kept_any {
                                    report.ops_lost += 1;
                                }
                            }
                        }
                    }
                }
            }
            inode.durable = result.clone();
            inode.current = result;
            self.inodes.insert(id, inode);
        }
        self.gc();
        report
    }

    /// How many bytes of a torn write of `len` bytes at `offset` survive.
    fn tear_point(&mut self, offset: u64, len: usize) -> usize {
        let style = self.rng.below(3);
        let cut = match style {
            0 => self.rng.below(len as u64),
            _ => {
                let sector = if style == 1 { 512 } else { 4096 };
                // Boundaries strictly inside the write, as offsets from its start.
                let first = (offset / sector + 1) * sector - offset;
                if first >= len as u64 {
                    0
                } else {
                    let count = (len as u64 - first).div_ceil(sector);
                    first + self.rng.below(count) * sector
                }
            }
        };
        usize::try_from(cut).unwrap_or(0).min(len)
    }
}

/// A deterministic, fault-injecting, in-memory disk. Clones share the same disk.
///
/// See the [module documentation](self) for what it models.
///
/// ```
/// use synod_wal::testing::{CrashMode, FaultyStorage};
/// use synod_wal::{Wal, WalConfig, SyncPolicy};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let disk = FaultyStorage::new(42);
/// let config = WalConfig::builder().sync_policy(SyncPolicy::Manual).segment_bytes_max(64 * 1024).build()?;
/// let (wal, _) = Wal::open(disk.clone(), config.clone())?;
/// wal.append(b"synced".to_vec())?;
/// wal.sync()?;
/// wal.append(b"not synced".to_vec())?;
/// drop(wal);                          // the process dies...
/// disk.crash(CrashMode::DropUnsynced); // ...and so does the machine
/// let (wal, _) = Wal::open(disk, config)?;
/// assert_eq!(wal.last_index().get(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct FaultyStorage {
    disk: Arc<Mutex<Disk>>,
}

impl FaultyStorage {
    /// An empty disk whose random choices (at crashes, short writes) all come from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> FaultyStorage {
        FaultyStorage {
            disk: Arc::new(Mutex::new(Disk {
                rng: Rng::new(seed),
                epoch: 0,
                inodes: BTreeMap::new(),
                next_inode: 1,
                dir: BTreeMap::new(),
                durable_dir: BTreeMap::new(),
                dir_ops: Vec::new(),
                capacity_bytes: None,
                faults: VecDeque::new(),
                halt_after_ops: None,
                stats: DiskStats::default(),
            })),
        }
    }

    /// Applies a crash: what was not synced is treated as `mode` says, and every file handle
    /// opened before now stops working. Also clears [`FaultyStorage::halt_after`] and any
    /// queued fault. Returns what the crash did.
    pub fn crash(&self, mode: CrashMode) -> CrashReport {
        let mut disk = self.disk.lock();
        disk.halt_after_ops = None;
        disk.faults.clear();
        disk.crash(mode)
    }

    /// Queues a one-shot fault for the next operation it applies to.
    pub fn inject(&self, fault: Fault) {
        self.disk.lock().faults.push_back(fault);
    }

    /// Drops every queued fault that has not fired.
    pub fn clear_faults(&self) {
        self.disk.lock().faults.clear();
    }

    /// Makes writes fail with `StorageFull` once files would hold more than `bytes` in
    /// total; `None` removes the limit.
    pub fn set_capacity_bytes(&self, bytes: Option<u64>) {
        self.disk.lock().capacity_bytes = bytes;
    }

    /// After `ops` more mutating operations, every further one fails, as if the process
    /// had died at that point; `None` removes the limit. Reads keep working.
    pub fn halt_after(&self, ops: Option<u64>) {
        self.disk.lock().halt_after_ops = ops;
    }

    /// The mutating operations left before the disk halts, as [`FaultyStorage::halt_after`]
    /// set it (`Some(0)`: halted); `None` if it will not halt.
    #[must_use]
    pub fn halt_remaining(&self) -> Option<u64> {
        self.disk.lock().halt_after_ops
    }

    /// Flips bit `bit % 8` of the byte at `offset` of file `name`, in the synced and the
    /// current contents alike (media corruption).
    ///
    /// # Errors
    ///
    /// `NotFound` if there is no such file or the offset is past its end.
    pub fn flip_bit(&self, name: &str, offset: u64, bit: u8) -> io::Result<()> {
        let mut disk = self.disk.lock();
        let id = *disk.dir.get(name).ok_or(io::ErrorKind::NotFound)?;
        let at = usize::try_from(offset).map_err(|_| io::ErrorKind::NotFound)?;
        let inode = disk.inodes.get_mut(&id).expect("linked inode exists");
        let mask = 1u8 << (bit % 8);
        for buf in [&mut inode.durable, &mut inode.current] {
            if let Some(b) = buf.get_mut(at) {
                *b ^= mask;
            }
        }
        if at >= inode.current.len() {
            return Err(io::ErrorKind::NotFound.into());
        }
        for op in &mut inode.pending {
            if let PendingOp::Write { offset: o, data } = op
                && let Some(rel) = offset.checked_sub(*o)
                && let Some(b) = usize::try_from(rel).ok().and_then(|r| data.get_mut(r))
            {
                *b ^= mask;
            }
        }
        disk.stats.bits_flipped += 1;
        Ok(())
    }

    /// The current contents of a file (what a read sees), or `None` if it does not exist.
    #[must_use]
    pub fn contents(&self, name: &str) -> Option<Vec<u8>> {
        let disk = self.disk.lock();
        let id = disk.dir.get(name)?;
        disk.inodes.get(id).map(|i| i.current.clone())
    }

    /// Replaces a file's contents with `bytes`, durably (file and directory entry), as if
    /// written and synced long ago. For planting known-bad input.
    pub fn put_durable(&self, name: &str, bytes: &[u8]) {
        let mut disk = self.disk.lock();
        let id = disk.next_inode;
        disk.next_inode += 1;
        disk.inodes.insert(
            id,
            Inode {
                durable: bytes.to_vec(),
                current: bytes.to_vec(),
                pending: Vec::new(),
            },
        );
        disk.dir.insert(name.to_owned(), id);
        disk.durable_dir.insert(name.to_owned(), id);
        disk.gc();
    }

    /// The names of the files, sorted.
    #[must_use]
    pub fn file_names(&self) -> Vec<String> {
        self.disk.lock().dir.keys().cloned().collect()
    }

    /// What the disk has done so far.
    #[must_use]
    pub fn stats(&self) -> DiskStats {
        self.disk.lock().stats
    }

    /// Number of unsynced writes and directory changes (0 means a crash would change nothing).
    #[must_use]
    pub fn unsynced_ops(&self) -> usize {
        let disk = self.disk.lock();
        disk.dir_ops.len() + disk.inodes.values().map(|i| i.pending.len()).sum::<usize>()
    }
}

impl Storage for FaultyStorage {
    type File = FaultyFile;

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.file_names())
    }

    fn open(&self, name: &str) -> io::Result<FaultyFile> {
        let disk = self.disk.lock();
        let inode = *disk.dir.get(name).ok_or(io::ErrorKind::NotFound)?;
        Ok(FaultyFile {
            disk: Arc::clone(&self.disk),
            inode,
            epoch: disk.epoch,
        })
    }

    fn create(&self, name: &str) -> io::Result<FaultyFile> {
        let mut disk = self.disk.lock();
        disk.mutate()?;
        let inode = disk.next_inode;
        disk.next_inode += 1;
        disk.inodes.insert(inode, Inode::default());
        let op = DirOp::Link(name.to_owned(), inode);
        apply_dir(&mut disk.dir, &op);
        disk.dir_ops.push(op);
        Ok(FaultyFile {
            disk: Arc::clone(&self.disk),
            inode,
            epoch: disk.epoch,
        })
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut disk = self.disk.lock();
        if !disk.dir.contains_key(from) {
            return Err(io::ErrorKind::NotFound.into());
        }
        disk.mutate()?;
        let op = DirOp::Rename(from.to_owned(), to.to_owned());
        apply_dir(&mut disk.dir, &op);
        disk.dir_ops.push(op);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut disk = self.disk.lock();
        if !disk.dir.contains_key(name) {
            return Err(io::ErrorKind::NotFound.into());
        }
        disk.mutate()?;
        let op = DirOp::Unlink(name.to_owned());
        apply_dir(&mut disk.dir, &op);
        disk.dir_ops.push(op);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut disk = self.disk.lock();
        disk.mutate()?;
        disk.stats.dir_syncs += 1;
        if disk.take_fault(|f| f == Fault::DirSyncError).is_some() {
            return Err(io::Error::other("injected directory sync error"));
        }
        let ops = std::mem::take(&mut disk.dir_ops);
        for op in &ops {
            apply_dir(&mut disk.durable_dir, op);
        }
        disk.gc();
        Ok(())
    }
}

/// A file of [`FaultyStorage`].
#[derive(Debug)]
pub struct FaultyFile {
    disk: Arc<Mutex<Disk>>,
    inode: u64,
    epoch: u64,
}

impl FaultyFile {
    fn with<T>(&self, f: impl FnOnce(&mut Disk) -> io::Result<T>) -> io::Result<T> {
        let mut disk = self.disk.lock();
        if disk.epoch != self.epoch || !disk.inodes.contains_key(&self.inode) {
            return Err(io::Error::other(
                "file handle from before a simulated crash",
            ));
        }
        f(&mut disk)
    }
}

impl StorageFile for FaultyFile {
    fn len(&self) -> io::Result<u64> {
        self.with(|d| Ok(d.inodes[&self.inode].current.len() as u64))
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with(|d| {
            let data = &d.inodes[&self.inode].current;
            let Ok(start) = usize::try_from(offset) else {
                return Ok(0);
            };
            if start >= data.len() {
                return Ok(0);
            }
            let n = buf.len().min(data.len() - start);
            buf[..n].copy_from_slice(&data[start..start + n]);
            Ok(n)
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.with(|d| {
            d.mutate()?;
            d.stats.writes += 1;
            if buf.is_empty() {
                return Ok(0);
            }
            match d
                .take_fault(|f| matches!(f, Fault::NoSpace | Fault::WriteError | Fault::ShortWrite))
            {
                Some(Fault::NoSpace) => return Err(io::ErrorKind::StorageFull.into()),
                Some(Fault::WriteError) => return Err(io::Error::other("injected write error")),
                Some(Fault::ShortWrite) => {
                    let n = usize::try_from(
                        1 + d
                            .rng
                            .below(buf.len() as u64 - 1 + u64::from(buf.len() == 1)),
                    )
                    .unwrap_or(1)
                    .min(buf.len());
                    return write_now(d, self.inode, &buf[..n], offset).map(|()| n);
                }
                _ => {}
            }
            write_now(d, self.inode, buf, offset).map(|()| buf.len())
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|d| {
            d.mutate()?;
            let inode = d.inodes.get_mut(&self.inode).expect("checked");
            let op = PendingOp::SetLen(len);
            apply_op(&mut inode.current, &op);
            inode.pending.push(op);
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(|d| {
            d.mutate()?;
            d.stats.syncs += 1;
            let failed = d.take_fault(|f| f == Fault::SyncError).is_some();
            let failed_kept =
                !failed && d.take_fault(|f| f == Fault::SyncErrorKeepsCache).is_some();
            let inode = d.inodes.get_mut(&self.inode).expect("checked");
            let pending = std::mem::take(&mut inode.pending);
            if failed_kept {
                // The pages are clean now: no later sync writes them, and a crash resets
                // the file to its durable contents.
                return Err(io::Error::other(
                    "injected fsync error (dirty data kept in the cache, unwritten)",
                ));
            }
            if failed {
                inode.current = inode.durable.clone();
                return Err(io::Error::other(
                    "injected fsync error (dirty data dropped)",
                ));
            }
            for op in &pending {
                apply_op(&mut inode.durable, op);
            }
            Ok(())
        })
    }
}

fn write_now(d: &mut Disk, inode: u64, buf: &[u8], offset: u64) -> io::Result<()> {
    if let Some(cap) = d.capacity_bytes {
        let current = d.inodes[&inode].current.len() as u64;
        let grows = (offset + buf.len() as u64).saturating_sub(current);
        if d.used_bytes() + grows > cap {
            return Err(io::ErrorKind::StorageFull.into());
        }
    }
    d.stats.bytes_written += buf.len() as u64;
    let node = d.inodes.get_mut(&inode).expect("checked");
    write_into(&mut node.current, offset, buf);
    node.pending.push(PendingOp::Write {
        offset,
        data: buf.to_vec(),
    });
    Ok(())
}
