//! Simulated disks: one per node, on `synod-wal`'s fault-injecting storage.
//!
//! A node writes through [`Disk`] (reachable from [`crate::Context::disk`]). Each disk is a
//! `synod_wal::testing::FaultyStorage`: writes land in the "page cache" at once and are
//! readable immediately, but survive a crash only once a sync has made them durable
//! ([`crate::Context::sync`], completed by [`crate::Node::on_synced`]). When the nemesis
//! crashes a node, the simulator drops the node and crashes its storage with a
//! [`CrashMode`] drawn from the run's enabled modes: unsynced writes are dropped, kept in
//! part, torn (at any byte, a 512-byte or a 4 KiB boundary), reordered by 4 KiB block, or
//! corrupted by a flipped bit, and unsynced creations, renames and removals survive only as
//! a prefix. Synced data is never touched: a correct program that checksums its records
//! recovers from every mode.
//!
//! A sync is asynchronous: the simulator performs it (`sync_data` of every file written
//! since the last sync, then a directory sync) when it completes, after the configured
//! sync delay, and then calls [`crate::Node::on_synced`]. A crash before completion loses
//! what the sync would have made durable. (A write issued *between* a sync's request and
//! its completion also becomes durable at the completion, earlier than a real disk
//! promises; see the crate documentation, "Fault model".)

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;

pub use synod_wal::testing::CrashMode;
use synod_wal::testing::{FaultyFile, FaultyStorage};
use synod_wal::{Storage, StorageFile};

/// What a crash did to a disk, for coverage counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CrashOutcome {
    /// There were unsynced operations when the crash came.
    pub(crate) unsynced: bool,
    pub(crate) torn: bool,
    pub(crate) bit_flipped: bool,
}

/// A node's disk: a flat directory of named files, with a page cache that a crash partly
/// loses. Files are created by their first write.
///
/// Reads see every write, synced or not (as a real page cache does). Operations return
/// `io::Result` because the underlying storage can fail (the simulator does not inject
/// I/O errors today; see the crate documentation).
pub struct Disk {
    storage: FaultyStorage,
    /// Open handles, dropped at a crash (they stop working then).
    files: BTreeMap<String, FaultyFile>,
    /// Files written since the last completed sync.
    dirty: BTreeSet<String>,
}

impl fmt::Debug for Disk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Disk")
            .field("files", &self.storage.file_names())
            .field("unsynced_ops", &self.storage.unsynced_ops())
            .finish_non_exhaustive()
    }
}

impl Disk {
    /// An empty disk whose crash behaviour is drawn from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Disk {
            storage: FaultyStorage::new(seed),
            files: BTreeMap::new(),
            dirty: BTreeSet::new(),
        }
    }

    fn handle(&mut self, file: &str) -> io::Result<&FaultyFile> {
        if !self.files.contains_key(file) {
            let handle = match self.storage.open(file) {
                Ok(h) => h,
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.storage.create(file)?,
                Err(e) => return Err(e),
            };
            self.files.insert(file.to_owned(), handle);
        }
        Ok(&self.files[file])
    }

    /// A copy of the current contents of `file` (including unsynced writes), or `None` if
    /// it does not exist. Meant for recovery in [`crate::Node::on_start`]; a node keeps its
    /// working state in memory.
    #[must_use]
    pub fn read(&self, file: &str) -> Option<Vec<u8>> {
        self.storage.contents(file)
    }

    /// The length of `file`, or `None` if it does not exist.
    #[must_use]
    pub fn len(&self, file: &str) -> Option<u64> {
        self.storage.contents(file).map(|c| c.len() as u64)
    }

    /// Writes `data` at `offset` in `file`, creating it and zero-filling any gap.
    ///
    /// # Errors
    ///
    /// The storage's error (none are injected today).
    pub fn write(&mut self, file: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        let handle = self.handle(file)?;
        let mut done = 0usize;
        while done < data.len() {
            match handle.write_at(&data[done..], offset + done as u64)? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => done += n,
            }
        }
        self.dirty.insert(file.to_owned());
        Ok(())
    }

    /// Appends `data` to `file`.
    ///
    /// # Errors
    ///
    /// As for [`Disk::write`].
    pub fn append(&mut self, file: &str, data: &[u8]) -> io::Result<()> {
        let len = self.handle(file)?.len()?;
        self.write(file, len, data)
    }

    /// Sets the length of `file`, cutting it or extending it with zeros.
    ///
    /// # Errors
    ///
    /// As for [`Disk::write`].
    pub fn set_len(&mut self, file: &str, len: u64) -> io::Result<()> {
        self.handle(file)?.set_len(len)?;
        self.dirty.insert(file.to_owned());
        Ok(())
    }

    /// Renames `from` to `to` atomically, replacing `to`. Durable after the next sync.
    ///
    /// # Errors
    ///
    /// `NotFound` if `from` does not exist, or the storage's error.
    pub fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        self.storage.rename(from, to)?;
        self.files.remove(from);
        self.files.remove(to);
        if self.dirty.remove(from) {
            self.dirty.insert(to.to_owned());
        }
        Ok(())
    }

    /// Removes `file`. Until a later sync completes, a crash may bring it back.
    ///
    /// # Errors
    ///
    /// `NotFound` if it does not exist, or the storage's error.
    pub fn remove(&mut self, file: &str) -> io::Result<()> {
        self.storage.remove(file)?;
        self.files.remove(file);
        self.dirty.remove(file);
        Ok(())
    }

    /// The names of the existing files, sorted.
    #[must_use]
    pub fn file_names(&self) -> Vec<String> {
        self.storage.file_names()
    }

    /// The number of writes and directory changes not yet durable.
    #[must_use]
    pub fn unsynced_ops(&self) -> usize {
        self.storage.unsynced_ops()
    }

    /// Makes everything written so far durable: every written file's data, then the
    /// directory.
    pub(crate) fn sync_all(&mut self) -> io::Result<()> {
        for name in std::mem::take(&mut self.dirty) {
            // A renamed file has no cached handle under its new name: open it again.
            if !self.files.contains_key(&name) {
                match self.storage.open(&name) {
                    Ok(h) => {
                        self.files.insert(name.clone(), h);
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
            self.files[&name].sync_data()?;
        }
        self.storage.sync_dir()
    }

    /// Crashes the disk: open handles are dropped and unsynced data treated as `mode` says.
    pub(crate) fn crash(&mut self, mode: CrashMode) -> CrashOutcome {
        let before = self.storage.stats();
        let unsynced = self.storage.unsynced_ops() > 0;
        self.files.clear();
        self.dirty.clear();
        self.storage.crash(mode);
        let after = self.storage.stats();
        CrashOutcome {
            unsynced,
            torn: after.torn_writes > before.torn_writes,
            bit_flipped: after.bits_flipped > before.bits_flipped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_with_synced_and_unsynced(seed: u64) -> Disk {
        let mut d = Disk::new(seed);
        d.append("log", b"synced--").expect("append");
        d.sync_all().expect("sync");
        d.append("log", b"unsynced1").expect("append");
        d.append("log", b"unsynced2").expect("append");
        d
    }

    #[test]
    fn reads_see_unsynced_writes_and_sync_makes_them_durable() {
        let mut d = disk_with_synced_and_unsynced(1);
        assert_eq!(
            d.read("log").as_deref(),
            Some(&b"synced--unsynced1unsynced2"[..])
        );
        assert_eq!(d.unsynced_ops(), 2);
        d.sync_all().expect("sync");
        assert_eq!(d.unsynced_ops(), 0);
        let out = d.crash(CrashMode::DropUnsynced);
        assert!(!out.unsynced);
        assert_eq!(
            d.read("log").as_deref(),
            Some(&b"synced--unsynced1unsynced2"[..])
        );
        // Handles are reopened after a crash.
        d.append("log", b"!").expect("append after crash");
        assert_eq!(d.len("log"), Some(27));
    }

    #[test]
    fn every_crash_mode_keeps_synced_data() {
        for seed in 0..100 {
            for mode in CrashMode::ALL {
                let mut d = disk_with_synced_and_unsynced(seed);
                let out = d.crash(mode);
                assert!(out.unsynced);
                let got = d.read("log").expect("file exists");
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
        let (mut torn, mut flipped) = (0, 0);
        for seed in 0..100 {
            torn += u32::from(
                disk_with_synced_and_unsynced(seed)
                    .crash(CrashMode::TearLast)
                    .torn,
            );
            flipped += u32::from(
                disk_with_synced_and_unsynced(seed)
                    .crash(CrashMode::FlipBit)
                    .bit_flipped,
            );
        }
        assert!(torn > 10 && flipped > 10, "torn {torn} flipped {flipped}");
    }

    #[test]
    fn unsynced_removal_may_come_back_and_rename_is_atomic() {
        let mut back = 0;
        for seed in 0..50 {
            let mut d = Disk::new(seed);
            d.append("old", b"x").expect("append");
            d.sync_all().expect("sync");
            d.remove("old").expect("remove");
            assert_eq!(d.read("old"), None);
            d.crash(CrashMode::KeepPrefix);
            back += u32::from(d.read("old").is_some());
        }
        assert!(back > 0 && back < 50);
        let mut d = Disk::new(1);
        d.append("tmp", b"new").expect("append");
        d.rename("tmp", "state").expect("rename");
        d.sync_all().expect("sync");
        d.crash(CrashMode::DropUnsynced);
        assert_eq!(d.read("state").as_deref(), Some(&b"new"[..]));
        assert_eq!(d.file_names(), vec!["state".to_owned()]);
    }
}
