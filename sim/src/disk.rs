//! Simulated disks: one per node, with a page cache that a crash partly loses.
//!
//! A node writes through [`Disk`] (reachable from [`crate::Context::disk`]); writes land in
//! the "page cache" at once and are readable immediately, but survive a crash only once a
//! sync that was issued after them has completed ([`crate::Context::sync`] and
//! [`crate::Node::on_synced`]). At a crash the simulator chooses a [`CrashMode`] from the
//! ones the run enables, and the unsynced writes are dropped, kept in part, torn, reordered
//! or corrupted accordingly. Synced data is never touched: a correct program that checksums
//! its records must be able to recover from any of these.
//!
//! The storage itself sits behind the crate-private `DiskBackend` trait. Today the backend
//! is an in-memory one written here; it is meant to be replaced by `synod-wal`'s
//! fault-injecting storage once that lands, without changing the [`Disk`] API.

use std::collections::BTreeMap;

use crate::rng::SimRng;

/// What happens to a node's unsynced writes when it crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum CrashMode {
    /// Every unsynced write is lost.
    DropUnsynced,
    /// A random prefix of the unsynced writes (in issue order) survives.
    KeepPrefix,
    /// A random prefix survives and the next write is torn: only a prefix of its bytes (at
    /// an arbitrary byte, or at a 512-byte boundary) reaches the disk.
    TearLast,
    /// A random subset of the unsynced writes survives, in any combination.
    Reorder,
    /// A random prefix survives, and one bit inside the surviving unsynced bytes is flipped.
    FlipBit,
}

impl CrashMode {
    /// Every crash mode.
    pub const ALL: [CrashMode; 5] = [
        CrashMode::DropUnsynced,
        CrashMode::KeepPrefix,
        CrashMode::TearLast,
        CrashMode::Reorder,
        CrashMode::FlipBit,
    ];

    /// A short name, as used in coverage reports.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            CrashMode::DropUnsynced => "disk.drop_unsynced",
            CrashMode::KeepPrefix => "disk.keep_prefix",
            CrashMode::TearLast => "disk.tear_last",
            CrashMode::Reorder => "disk.reorder",
            CrashMode::FlipBit => "disk.flip_bit",
        }
    }
}

/// A write or truncation that has not been synced yet.
#[derive(Debug, Clone)]
enum PendingOp {
    Write { offset: u64, data: Vec<u8> },
    Truncate { len: u64 },
}

#[derive(Debug, Clone, Default)]
struct File {
    /// What a crash certainly keeps.
    durable: Vec<u8>,
    /// What reads see: `durable` with every pending op applied.
    current: Vec<u8>,
    /// Unsynced ops in issue order, each with the disk-wide sequence number it was issued at.
    pending: Vec<(u64, PendingOp)>,
}

fn apply(buf: &mut Vec<u8>, op: &PendingOp) {
    match op {
        PendingOp::Write { offset, data } => write_at(buf, *offset, data),
        PendingOp::Truncate { len } => buf.truncate(usize::try_from(*len).unwrap_or(usize::MAX)),
    }
}

fn write_at(buf: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    let end = start + data.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[start..end].copy_from_slice(data);
}

/// The storage operations the simulator needs from a disk backend.
///
/// Crate-private on purpose: it is the seam where `synod-wal`'s fault-injecting storage is
/// meant to plug in (see the module docs).
pub(crate) trait DiskBackend {
    fn read(&self, file: &str) -> Option<&[u8]>;
    fn write(&mut self, file: &str, offset: u64, data: &[u8]);
    fn truncate(&mut self, file: &str, len: u64);
    fn remove(&mut self, file: &str);
    fn file_names(&self) -> Vec<String>;
    /// The sequence number the next write will get; a sync issued now covers everything
    /// before it.
    fn sync_point(&self) -> u64;
    /// Makes every op issued before `point` durable.
    fn sync_through(&mut self, point: u64);
    /// Applies `mode` to the unsynced ops and returns what happened.
    fn crash(&mut self, mode: CrashMode, rng: &mut SimRng) -> CrashOutcome;
    fn unsynced_ops(&self) -> usize;
}

/// What a crash did to a disk, for coverage counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CrashOutcome {
    pub(crate) ops_lost: u64,
    pub(crate) torn: bool,
    pub(crate) bit_flipped: bool,
}

/// The in-memory backend: files as byte vectors plus a list of unsynced ops.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemDisk {
    files: BTreeMap<String, File>,
    next_seq: u64,
    /// Files removed since the last sync: a crash may bring them back.
    removed: Vec<(u64, String, File)>,
}

impl MemDisk {
    fn file_mut(&mut self, name: &str) -> &mut File {
        if !self.files.contains_key(name) {
            self.files.insert(name.to_owned(), File::default());
        }
        self.files.get_mut(name).expect("inserted above")
    }

    fn push(&mut self, name: &str, op: PendingOp) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let file = self.file_mut(name);
        apply(&mut file.current, &op);
        file.pending.push((seq, op));
    }
}

impl DiskBackend for MemDisk {
    fn read(&self, file: &str) -> Option<&[u8]> {
        self.files.get(file).map(|f| f.current.as_slice())
    }

    fn write(&mut self, file: &str, offset: u64, data: &[u8]) {
        self.push(
            file,
            PendingOp::Write {
                offset,
                data: data.to_vec(),
            },
        );
    }

    fn truncate(&mut self, file: &str, len: u64) {
        self.push(file, PendingOp::Truncate { len });
    }

    fn remove(&mut self, file: &str) {
        if let Some(f) = self.files.remove(file) {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.removed.push((seq, file.to_owned(), f));
        }
    }

    fn file_names(&self) -> Vec<String> {
        self.files.keys().cloned().collect()
    }

    fn sync_point(&self) -> u64 {
        self.next_seq
    }

    fn sync_through(&mut self, point: u64) {
        self.removed.retain(|(seq, _, _)| *seq >= point);
        for file in self.files.values_mut() {
            let done = file
                .pending
                .iter()
                .take_while(|(seq, _)| *seq < point)
                .count();
            for (_, op) in file.pending.drain(..done) {
                apply(&mut file.durable, &op);
            }
        }
    }

    fn crash(&mut self, mode: CrashMode, rng: &mut SimRng) -> CrashOutcome {
        let mut outcome = CrashOutcome::default();
        // A removal that was not synced may be undone by the crash.
        for (_, name, file) in std::mem::take(&mut self.removed) {
            if mode != CrashMode::DropUnsynced && rng.below(2) == 0 {
                continue;
            }
            self.files.entry(name).or_insert(file);
        }
        for file in self.files.values_mut() {
            let pending = std::mem::take(&mut file.pending);
            let n = pending.len();
            let mut result = std::mem::take(&mut file.durable);
            let mut kept = 0usize;
            match mode {
                CrashMode::DropUnsynced => {}
                CrashMode::KeepPrefix => {
                    kept = rng.below(n as u64 + 1) as usize;
                    for (_, op) in &pending[..kept] {
                        apply(&mut result, op);
                    }
                }
                CrashMode::TearLast => {
                    kept = rng.below(n as u64 + 1) as usize;
                    for (_, op) in &pending[..kept] {
                        apply(&mut result, op);
                    }
                    if let Some((_, PendingOp::Write { offset, data })) = pending.get(kept)
                        && !data.is_empty()
                    {
                        let cut = if data.len() > 512 && rng.below(2) == 0 {
                            (rng.below((data.len() / 512) as u64) as usize) * 512
                        } else {
                            rng.below(data.len() as u64) as usize
                        };
                        write_at(&mut result, *offset, &data[..cut]);
                        outcome.torn = true;
                    }
                }
                CrashMode::Reorder => {
                    for (_, op) in &pending {
                        if rng.below(2) == 0 {
                            apply(&mut result, op);
                            kept += 1;
                        }
                    }
                }
                CrashMode::FlipBit => {
                    kept = rng.below(n as u64 + 1) as usize;
                    let mut candidates = Vec::new();
                    for (_, op) in &pending[..kept] {
                        apply(&mut result, op);
                        if let PendingOp::Write { offset, data } = op
                            && !data.is_empty()
                        {
                            candidates.push((*offset, data.len() as u64));
                        }
                    }
                    if let Some(&(offset, len)) = rng.pick(&candidates) {
                        let byte = offset + rng.below(len);
                        if let Some(b) = usize::try_from(byte).ok().and_then(|i| result.get_mut(i))
                        {
                            *b ^= 1 << rng.below(8);
                            outcome.bit_flipped = true;
                        }
                    }
                }
            }
            outcome.ops_lost += (n - kept) as u64;
            file.current.clone_from(&result);
            file.durable = result;
        }
        outcome
    }

    fn unsynced_ops(&self) -> usize {
        self.files.values().map(|f| f.pending.len()).sum::<usize>() + self.removed.len()
    }
}

/// A node's disk: named files of bytes, with a page cache that a crash partly loses.
///
/// Reads see every write, synced or not (as a real page cache does). Only writes covered by
/// a completed sync are guaranteed to survive a crash; see [`CrashMode`] for what happens
/// to the rest. Files are created by their first write.
#[derive(Debug, Clone, Default)]
pub struct Disk {
    backend: MemDisk,
}

impl Disk {
    /// An empty disk.
    #[must_use]
    pub fn new() -> Self {
        Disk::default()
    }

    /// The current contents of `file` (including unsynced writes), or `None` if it does not
    /// exist.
    #[must_use]
    pub fn read(&self, file: &str) -> Option<&[u8]> {
        self.backend.read(file)
    }

    /// Writes `data` at `offset` in `file`, creating it and zero-filling any gap.
    pub fn write(&mut self, file: &str, offset: u64, data: &[u8]) {
        self.backend.write(file, offset, data);
    }

    /// Appends `data` to `file`.
    pub fn append(&mut self, file: &str, data: &[u8]) {
        let len = self.backend.read(file).map_or(0, <[u8]>::len) as u64;
        self.backend.write(file, len, data);
    }

    /// Cuts `file` to `len` bytes (a no-op if it is shorter).
    pub fn truncate(&mut self, file: &str, len: u64) {
        self.backend.truncate(file, len);
    }

    /// Removes `file`. Until a later sync completes, a crash may bring it back.
    pub fn remove(&mut self, file: &str) {
        self.backend.remove(file);
    }

    /// The names of the existing files, sorted.
    #[must_use]
    pub fn file_names(&self) -> Vec<String> {
        self.backend.file_names()
    }

    /// The number of writes, truncations and removals not yet covered by a completed sync.
    #[must_use]
    pub fn unsynced_ops(&self) -> usize {
        self.backend.unsynced_ops()
    }

    pub(crate) fn sync_point(&self) -> u64 {
        self.backend.sync_point()
    }

    pub(crate) fn sync_through(&mut self, point: u64) {
        self.backend.sync_through(point);
    }

    pub(crate) fn crash(&mut self, mode: CrashMode, rng: &mut SimRng) -> CrashOutcome {
        self.backend.crash(mode, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_with_synced_and_unsynced() -> Disk {
        let mut d = Disk::new();
        d.append("log", b"synced--");
        let p = d.sync_point();
        d.sync_through(p);
        d.append("log", b"unsynced1");
        d.append("log", b"unsynced2");
        d
    }

    #[test]
    fn reads_see_unsynced_writes_and_sync_makes_them_durable() {
        let mut d = disk_with_synced_and_unsynced();
        assert_eq!(d.read("log"), Some(&b"synced--unsynced1unsynced2"[..]));
        assert_eq!(d.unsynced_ops(), 2);
        let p = d.sync_point();
        d.sync_through(p);
        assert_eq!(d.unsynced_ops(), 0);
        let out = d.crash(CrashMode::DropUnsynced, &mut SimRng::new(1));
        assert_eq!(out.ops_lost, 0);
        assert_eq!(d.read("log"), Some(&b"synced--unsynced1unsynced2"[..]));
    }

    #[test]
    fn a_sync_covers_only_writes_issued_before_it() {
        let mut d = Disk::new();
        d.append("f", b"a");
        let p = d.sync_point();
        d.append("f", b"b");
        d.sync_through(p);
        d.crash(CrashMode::DropUnsynced, &mut SimRng::new(1));
        assert_eq!(d.read("f"), Some(&b"a"[..]));
    }

    #[test]
    fn every_crash_mode_keeps_synced_data_and_yields_plausible_content() {
        for seed in 0..200 {
            for mode in CrashMode::ALL {
                let mut d = disk_with_synced_and_unsynced();
                let mut rng = SimRng::new(seed);
                d.crash(mode, &mut rng);
                let got = d.read("log").expect("file exists").to_vec();
                assert!(got.starts_with(b"synced--"), "{mode:?} {seed}: {got:?}");
                assert!(got.len() <= b"synced--unsynced1unsynced2".len());
                assert_eq!(d.unsynced_ops(), 0);
                if mode == CrashMode::DropUnsynced {
                    assert_eq!(got, b"synced--");
                }
            }
        }
    }

    #[test]
    fn tear_and_flip_really_happen() {
        let mut torn = 0;
        let mut flipped = 0;
        for seed in 0..100 {
            let mut d = disk_with_synced_and_unsynced();
            torn += u32::from(d.crash(CrashMode::TearLast, &mut SimRng::new(seed)).torn);
            let mut d = disk_with_synced_and_unsynced();
            let out = d.crash(CrashMode::FlipBit, &mut SimRng::new(seed));
            if out.bit_flipped {
                flipped += 1;
                let got = d.read("log").expect("exists");
                let clean = &b"synced--unsynced1unsynced2"[..got.len()];
                assert_ne!(got, clean);
            }
        }
        assert!(torn > 10 && flipped > 10, "torn {torn} flipped {flipped}");
    }

    #[test]
    fn unsynced_removal_may_come_back() {
        let mut back = 0;
        for seed in 0..50 {
            let mut d = Disk::new();
            d.append("old", b"x");
            let p = d.sync_point();
            d.sync_through(p);
            d.remove("old");
            assert_eq!(d.read("old"), None);
            d.crash(CrashMode::KeepPrefix, &mut SimRng::new(seed));
            back += u32::from(d.read("old").is_some());
        }
        assert!(back > 0 && back < 50);
    }
}
