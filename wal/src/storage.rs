//! The storage under the log: a small trait pair, and [`FileStorage`], the real files.
//!
//! The log sees its directory as flat file names with positional reads and writes, a data
//! sync per file and a sync of the directory itself. That is all a write-ahead log needs,
//! and small enough that a fault-injecting implementation (`testing::FaultyStorage`) can
//! model every way a disk loses data.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A directory of files the log lives in.
///
/// Implementations are shared between threads. Names are plain file names, never paths.
/// The durability contract the log relies on: file data is durable once
/// [`StorageFile::sync_data`] has returned `Ok` after it was written; creations, renames and
/// removals are durable once [`Storage::sync_dir`] has returned `Ok` after them, and survive
/// a crash in the order they were made.
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// An open file.
    type File: StorageFile;

    /// The names of the files in the directory, in any order.
    ///
    /// # Errors
    ///
    /// The underlying I/O error.
    fn list(&self) -> io::Result<Vec<String>>;

    /// Opens an existing file for reading and writing.
    ///
    /// # Errors
    ///
    /// The underlying I/O error; `NotFound` if there is no such file.
    fn open(&self, name: &str) -> io::Result<Self::File>;

    /// Creates an empty file, replacing any file of that name.
    ///
    /// # Errors
    ///
    /// The underlying I/O error.
    fn create(&self, name: &str) -> io::Result<Self::File>;

    /// Renames a file atomically, replacing any file named `to`.
    ///
    /// # Errors
    ///
    /// The underlying I/O error.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;

    /// Removes a file. Open handles to it stay readable.
    ///
    /// # Errors
    ///
    /// The underlying I/O error.
    fn remove(&self, name: &str) -> io::Result<()>;

    /// Makes creations, renames and removals so far durable (fsync of the directory).
    ///
    /// # Errors
    ///
    /// The underlying I/O error.
    fn sync_dir(&self) -> io::Result<()>;
}

/// An open file with positional I/O.
// `is_empty` would add nothing to a file trait: callers ask for the length.
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: Send + Sync + fmt::Debug + 'static {
    /// The file's length in bytes.
    ///
    /// # Errors
    ///
    /// The underlying I/O error.
    fn len(&self) -> io::Result<u64>;

    /// Reads into `buf` from `offset`; returns the bytes read, 0 at end of file.
    ///
    /// # Errors
    ///
    /// The underlying I/O error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Writes from `buf` at `offset`; returns the bytes written, which may be fewer.
    ///
    /// # Errors
    ///
    /// The underlying I/O error (`StorageFull` when the disk is full).
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize>;

    /// Sets the file's length, cutting or extending it with zeros.
    ///
    /// # Errors
    ///
    /// The underlying I/O error.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Makes the file's data durable (fdatasync). After an error the data written since
    /// the last successful sync must be assumed lost, even if a later sync succeeds.
    ///
    /// # Errors
    ///
    /// The underlying I/O error.
    fn sync_data(&self) -> io::Result<()>;
}

/// Reads up to `buf.len()` bytes at `offset`, stopping early only at end of file; returns
/// how many it read.
///
/// # Errors
///
/// The underlying I/O error.
pub fn read_full_at<F: StorageFile + ?Sized>(
    file: &F,
    buf: &mut [u8],
    offset: u64,
) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Writes all of `buf` at `offset`, continuing after short writes.
///
/// # Errors
///
/// `WriteZero` if the file takes no more bytes; otherwise the underlying I/O error.
pub fn write_all_at<F: StorageFile + ?Sized>(
    file: &F,
    mut buf: &[u8],
    mut offset: u64,
) -> io::Result<()> {
    while !buf.is_empty() {
        match file.write_at(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The real thing: a directory on the local file system.
#[derive(Debug, Clone)]
pub struct FileStorage {
    dir: PathBuf,
}

impl FileStorage {
    /// Storage in `dir`, which is created (with its parents) if it does not exist.
    ///
    /// # Errors
    ///
    /// The I/O error from creating the directory.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<FileStorage> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(FileStorage { dir })
    }

    /// Storage in an existing directory, without creating it (for inspection).
    ///
    /// # Errors
    ///
    /// `NotFound` if `dir` is not a directory.
    pub fn existing(dir: impl Into<PathBuf>) -> io::Result<FileStorage> {
        let dir = dir.into();
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not a directory", dir.display()),
            ));
        }
        Ok(FileStorage { dir })
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Storage for FileStorage {
    type File = RealFile;

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn open(&self, name: &str) -> io::Result<RealFile> {
        let path = self.dir.join(name);
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => File::open(&path)?,
            other => other?,
        };
        Ok(RealFile { file })
    }

    fn create(&self, name: &str) -> io::Result<RealFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.dir.join(name))?;
        Ok(RealFile { file })
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.dir.join(from), self.dir.join(to))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.dir.join(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

/// A file of [`FileStorage`].
#[derive(Debug)]
pub struct RealFile {
    file: File,
}

impl StorageFile for RealFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.file.write_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}
