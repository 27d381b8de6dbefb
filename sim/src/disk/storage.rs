//! A simulated [`Disk`](super::Disk) as a `synod_wal::Storage`, so that code written for real
//! files (a `synod_wal::Wal`, a production log store) runs on it unchanged.
//!
//! What its syncs mean is documented on [`DiskStorage`].

use std::fmt;
use std::io;
use std::sync::Arc;

use parking_lot::Mutex;
use synod_wal::testing::FaultyFile;
use synod_wal::{Storage, StorageFile};

use super::{FileId, State};

/// A simulated [`Disk`](crate::Disk) as a `synod_wal::Storage`, from
/// [`Disk::storage`](crate::Disk::storage). Clones share the disk.
///
/// Every write through a [`DiskFile`] goes through the disk's bookkeeping, exactly as a
/// write through [`Disk::write`](crate::Disk::write) does: it is readable at once, counts
/// against a full disk's limit, and is set aside when an asynchronous
/// [`Context::sync`](crate::Context::sync) requested before it completes. The two kinds of
/// sync differ only in when they happen:
///
/// - [`StorageFile::sync_data`] and [`Storage::sync_dir`] are synchronous, as `fdatasync`
///   and a directory `fsync` are to the thread that calls them: when they return `Ok`, the
///   file's writes so far (or the directory's changes so far) are durable, and no crash can
///   take them back. A store that syncs a snapshot file and its directory before writing
///   the record that names it is tested on exactly that order.
/// - [`Context::sync`](crate::Context::sync) is asynchronous: it covers every write issued
///   before it, through either interface, and makes them durable when it completes.
///
/// A failure queued by [`Action::FailNextSync`](crate::Action::FailNextSync) fails the
/// disk's next sync of either kind. A failed `sync_data` returns an `io::Error` and drops the
/// file's unsynced writes from the page cache (the file reads as it was at its last sync, and
/// a crash finds it so);
/// a failed `sync_dir` returns an `io::Error` and leaves the directory's changes unsynced.
/// A crash stops every handle opened before it: their operations fail from then on.
///
/// ```
/// use synod_sim::Disk;
/// use synod_wal::{SyncPolicy, Wal, WalConfig};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let disk = Disk::new(7);
/// let config = WalConfig::builder().sync_policy(SyncPolicy::Manual).build()?;
/// let (wal, _) = Wal::open(disk.storage(), config.clone())?;
/// wal.append(b"hello".to_vec())?;
/// wal.sync()?; // synchronous: durable now
/// drop(wal);
/// let (wal, _) = Wal::open(disk.storage(), config)?;
/// assert_eq!(&wal.read(wal.last_index())?[..], b"hello");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DiskStorage {
    state: Arc<Mutex<State>>,
    /// What the disk's names of this storage's files start with: empty, or a directory
    /// and `/` ([`Disk::storage_in`](crate::Disk::storage_in)).
    prefix: String,
}

impl DiskStorage {
    pub(super) fn new(state: Arc<Mutex<State>>, prefix: String) -> Self {
        DiskStorage { state, prefix }
    }

    /// The disk's name of this storage's file `name`.
    fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn file(&self, id: FileId, handle: FaultyFile, crashes: u64) -> DiskFile {
        DiskFile {
            state: Arc::clone(&self.state),
            id,
            handle,
            crashes,
        }
    }
}

impl fmt::Debug for DiskStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskStorage")
            .field("dir", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Storage for DiskStorage {
    type File = DiskFile;

    fn list(&self) -> io::Result<Vec<String>> {
        let names = self.state.lock().storage.file_names();
        Ok(names
            .into_iter()
            .filter_map(|n| n.strip_prefix(&self.prefix).map(str::to_owned))
            .filter(|n| !n.contains('/'))
            .collect())
    }

    fn open(&self, name: &str) -> io::Result<DiskFile> {
        let path = self.path(name);
        let mut state = self.state.lock();
        let id = state.open(&path)?;
        let handle = state.storage.open(&path)?;
        Ok(self.file(id, handle, state.crashes))
    }

    fn create(&self, name: &str) -> io::Result<DiskFile> {
        let path = self.path(name);
        let mut state = self.state.lock();
        let id = state.create(&path)?;
        let handle = state.storage.open(&path)?;
        Ok(self.file(id, handle, state.crashes))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.state.lock().rename(&self.path(from), &self.path(to))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.state.lock().remove(&self.path(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.state.lock().sync_dir()
    }
}

/// A file of a [`DiskStorage`]. It keeps working after a rename of its name, as an open
/// file does, and stops at a crash: its operations fail from then on.
///
/// Once its name is gone (removed, or replaced by a rename or a creation), it keeps working
/// only until the directory sync that makes that durable ([`Storage::sync_dir`], or the
/// directory sync of a completed [`Context::sync`](crate::Context::sync)): the simulated
/// disk forgets the file then, and every operation on the handle fails with
/// `io::ErrorKind::Unsupported`. A real open file would keep working until closed; code
/// that relies on that cannot be tested on this disk.
pub struct DiskFile {
    state: Arc<Mutex<State>>,
    id: FileId,
    /// Its own handle to the file (the disk's follows the name, this one the file).
    handle: FaultyFile,
    /// The disk's crash count when it was opened.
    crashes: u64,
}

impl DiskFile {
    /// Its handle, or the error that says why it stopped working: a crash (the storage's
    /// own error), or the disk forgot the file after its unlinking became durable.
    fn handle(&self) -> io::Result<&FaultyFile> {
        match self.handle.len() {
            Ok(_) => Ok(&self.handle),
            Err(e) if self.state.lock().crashes != self.crashes => Err(e),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the file's name is gone and the directory was synced since: the simulated \
                 disk has forgotten the file, though a real open file would keep working",
            )),
        }
    }
}

impl fmt::Debug for DiskFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskFile")
            .field("id", &self.id.0)
            .finish_non_exhaustive()
    }
}

impl StorageFile for DiskFile {
    fn len(&self) -> io::Result<u64> {
        self.handle()?.len()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.handle()?.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        let handle = self.handle()?;
        self.state
            .lock()
            .write(self.id, Some(handle), offset, buf)?;
        Ok(buf.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let handle = self.handle()?;
        self.state.lock().set_len(self.id, Some(handle), len)
    }

    fn sync_data(&self) -> io::Result<()> {
        let handle = self.handle()?;
        self.state.lock().sync_file(self.id, handle)
    }
}
