//! [`GenerationStore`]: a generation kept in one small file, replaced atomically.
// tidy: driver: writes the generation file (temporary file, fsync, rename, directory fsync).
//!
//! # Protocol
//!
//! To store generation `g` the store writes the 24-byte record below to
//! `generation.tmp`, fsyncs it, renames it over `generation`, and fsyncs the directory.
//! Only then does [`GenerationStore::store`] return, so a generation is durable before the
//! caller uses it. A crash at any point leaves either the old file or the new one (rename
//! is atomic), possibly with a stray `generation.tmp`, which [`GenerationStore::open`]
//! ignores and removes. `open` then fsyncs the directory, so that a generation whose
//! rename a crashed process did not make durable is durable before it is used again.
//!
//! # File format (version 1)
//!
//! | bytes  | content                                              |
//! |--------|------------------------------------------------------|
//! | 0..8   | magic `SYNODGEN`                                     |
//! | 8..12  | format version, `u32` big-endian, `1`                |
//! | 12..20 | generation, `u64` big-endian                         |
//! | 20..24 | CRC-32 (IEEE) of bytes 0..20, `u32` big-endian       |
//!
//! A file that is not exactly this is reported as [`GenerationStoreError::Corrupt`], never
//! read as generation zero: silently starting over would reuse generations.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::generation::Generation;

/// The name of the generation file inside the store's directory.
pub const FILE_NAME: &str = "generation";
/// The name of the temporary file used while replacing it.
pub const TEMP_FILE_NAME: &str = "generation.tmp";
/// The length of the generation file.
pub const FILE_LEN: usize = 24;
const MAGIC: &[u8; 8] = b"SYNODGEN";
const VERSION: u32 = 1;

/// Encodes a generation as the 24-byte file record.
pub fn encode(generation: Generation) -> [u8; FILE_LEN] {
    let mut out = [0u8; FILE_LEN];
    out[..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_be_bytes());
    out[12..20].copy_from_slice(&generation.get().to_be_bytes());
    let crc = crc32fast::hash(&out[..20]);
    out[20..].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Decodes the 24-byte file record.
///
/// # Errors
///
/// A description of what is wrong if `bytes` is not a valid version-1 record.
pub fn decode(bytes: &[u8]) -> Result<Generation, &'static str> {
    if bytes.len() != FILE_LEN {
        return Err("wrong length");
    }
    if &bytes[..8] != MAGIC {
        return Err("bad magic");
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[20..]);
    if crc32fast::hash(&bytes[..20]) != u32::from_be_bytes(crc) {
        return Err("checksum mismatch");
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&bytes[8..12]);
    if u32::from_be_bytes(version) != VERSION {
        return Err("unknown format version");
    }
    let mut value = [0u8; 8];
    value.copy_from_slice(&bytes[12..20]);
    Ok(Generation::new(u64::from_be_bytes(value)))
}

/// Why the generation store failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum GenerationStoreError {
    /// An I/O operation failed. After a failed [`GenerationStore::store`] the generation on
    /// disk is either the old or the new one; reopen the store to learn which.
    Io {
        /// What the store was doing.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The generation file exists but is not a valid record.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A generation lower than the stored one was to be stored: generations never go back.
    Stale {
        /// The stored generation.
        current: Generation,
        /// The generation that was refused.
        requested: Generation,
    },
    /// The stored generation is `u64::MAX`; there is no next one.
    Exhausted,
}

impl fmt::Display for GenerationStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GenerationStoreError::Io { op, path, source } => {
                write!(f, "generation store: {op} {}: {source}", path.display())
            }
            GenerationStoreError::Corrupt { path, reason } => {
                write!(f, "generation file {} is corrupt: {reason}", path.display())
            }
            GenerationStoreError::Stale { current, requested } => {
                write!(
                    f,
                    "refusing to store generation {requested} below the stored {current}"
                )
            }
            GenerationStoreError::Exhausted => write!(f, "generation space exhausted"),
        }
    }
}

impl std::error::Error for GenerationStoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GenerationStoreError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A durable generation: the highest generation stored in a directory.
///
/// ```
/// use synod_clocks::{Generation, GenerationStore};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let mut store = GenerationStore::open(dir.path())?;
/// assert_eq!(store.current(), Generation::ZERO);
/// let g = store.increment()?;                 // durable before it is returned
/// assert_eq!(g, Generation::new(1));
/// store.store(Generation::new(7))?;      // adopt a higher generation seen from a peer
///
/// let reopened = GenerationStore::open(dir.path())?; // after a crash or restart
/// assert_eq!(reopened.current(), Generation::new(7));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct GenerationStore {
    dir: PathBuf,
    current: Generation,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> GenerationStoreError + use<> {
    let path = path.to_path_buf();
    move |source| GenerationStoreError::Io { op, path, source }
}

impl GenerationStore {
    /// Opens the store in `dir`. A missing directory is created (and its parent fsynced);
    /// a directory without a generation file holds [`Generation::ZERO`]. A leftover
    /// temporary file from an interrupted store is removed, and the directory is fsynced
    /// so that the generation read is durable.
    ///
    /// # Errors
    ///
    /// [`GenerationStoreError::Corrupt`] if the file is not a valid record, and
    /// [`GenerationStoreError::Io`] if the directory or file cannot be read or synced.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, GenerationStoreError> {
        let dir = dir.as_ref().to_path_buf();
        match fs::metadata(&dir) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
                // Make the new directory's entry durable too, or a crash could take the
                // directory, and the generation in it, away.
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    sync_dir(parent)?;
                }
            }
            Err(e) => return Err(io_err("inspect directory", &dir)(e)),
        }
        let path = dir.join(FILE_NAME);
        let current = match read_record(&path) {
            Ok(bytes) => decode(&bytes).map_err(|reason| GenerationStoreError::Corrupt {
                path: path.clone(),
                reason,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Generation::ZERO,
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let temp = dir.join(TEMP_FILE_NAME);
        match fs::remove_file(&temp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &temp)(e)),
        }
        // A previous process may have crashed after renaming a new generation into place
        // but before fsyncing the directory: the generation just read would then be in
        // the page cache only, and a power failure after this process used it could bring
        // back the older one. Make what was read durable before it is used.
        sync_dir(&dir)?;
        Ok(GenerationStore { dir, current })
    }

    /// The stored generation.
    pub fn current(&self) -> Generation {
        self.current
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores `generation` durably. Storing the current generation again does nothing.
    ///
    /// # Errors
    ///
    /// [`GenerationStoreError::Stale`] if `generation` is below the stored one;
    /// [`GenerationStoreError::Io`] if a write, sync or rename fails, in which case the
    /// in-memory value is unchanged.
    pub fn store(&mut self, generation: Generation) -> Result<(), GenerationStoreError> {
        if generation < self.current {
            return Err(GenerationStoreError::Stale {
                current: self.current,
                requested: generation,
            });
        }
        if generation == self.current {
            return Ok(());
        }
        write_durably(&self.dir, &encode(generation), Step::SyncDir)?;
        self.current = generation;
        Ok(())
    }

    /// Stores and returns the next generation (for a node starting an election).
    ///
    /// # Errors
    ///
    /// [`GenerationStoreError::Exhausted`] at `u64::MAX`, or as [`store`](Self::store).
    pub fn increment(&mut self) -> Result<Generation, GenerationStoreError> {
        let next = self.current.next().ok_or(GenerationStoreError::Exhausted)?;
        self.store(next)?;
        Ok(next)
    }
}

/// The steps of a durable replace, in order. Tests stop after any of them to model a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Step {
    CreateTemp,
    WriteTemp,
    SyncTemp,
    Rename,
    SyncDir,
}

/// Runs the replace protocol up to and including `last`.
pub(crate) fn write_durably(
    dir: &Path,
    bytes: &[u8],
    last: Step,
) -> Result<(), GenerationStoreError> {
    let temp = dir.join(TEMP_FILE_NAME);
    let path = dir.join(FILE_NAME);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(io_err("create", &temp))?;
    if last == Step::CreateTemp {
        return Ok(());
    }
    file.write_all(bytes).map_err(io_err("write", &temp))?;
    if last == Step::WriteTemp {
        return Ok(());
    }
    file.sync_all().map_err(io_err("fsync", &temp))?;
    drop(file);
    if last == Step::SyncTemp {
        return Ok(());
    }
    fs::rename(&temp, &path).map_err(io_err("rename", &temp))?;
    if last == Step::Rename {
        return Ok(());
    }
    sync_dir(dir)
}

/// Reads at most one byte more than a record, so that a damaged file of any size is
/// reported as corrupt without being read whole.
fn read_record(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(FILE_LEN + 1);
    File::open(path)?
        .take(FILE_LEN as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Fsyncs a directory, making the entries in it (a rename, a new file) durable.
fn sync_dir(dir: &Path) -> Result<(), GenerationStoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_crash_point_leaves_the_old_or_the_new_generation() {
        let steps = [
            Step::CreateTemp,
            Step::WriteTemp,
            Step::SyncTemp,
            Step::Rename,
            Step::SyncDir,
        ];
        let mut cases = 0;
        for (k, &step) in steps.iter().enumerate() {
            // A torn temporary file: every prefix of the record, for the write step.
            let torn_lengths: Vec<usize> = if step == Step::WriteTemp {
                (0..=FILE_LEN).collect()
            } else {
                vec![FILE_LEN]
            };
            for len in torn_lengths {
                let dir = tempfile::tempdir().unwrap();
                let mut store = GenerationStore::open(dir.path()).unwrap();
                store.store(Generation::new(5)).unwrap();
                let bytes = encode(Generation::new(6));
                write_durably(dir.path(), &bytes[..len], step).unwrap();
                // Crash: the process dies here; nothing was acknowledged.
                let mut reopened = GenerationStore::open(dir.path()).unwrap();
                let g = reopened.current();
                let expected = if step >= Step::Rename {
                    Generation::new(6)
                } else {
                    Generation::new(5)
                };
                assert_eq!(
                    g, expected,
                    "crash after step {k} ({step:?}), {len} bytes written"
                );
                assert!(
                    !dir.path().join(TEMP_FILE_NAME).exists(),
                    "stray temp file removed"
                );
                // The next generation is above everything acknowledged before the crash.
                assert!(reopened.increment().unwrap() > Generation::new(5));
                cases += 1;
            }
        }
        println!("generation store: {cases} crash points, 0 generations reused");
        assert_eq!(cases, 4 + FILE_LEN + 1);
    }

    #[test]
    fn a_damaged_file_is_an_error_never_generation_zero() {
        let good = encode(Generation::new(9));
        assert_eq!(decode(&good), Ok(Generation::new(9)));
        let mut rejected = 0;
        for bit in 0..FILE_LEN * 8 {
            let mut bad = good;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&bad).is_err(), "bit {bit} flip accepted");
            rejected += 1;
        }
        for len in 0..FILE_LEN {
            assert!(decode(&good[..len]).is_err());
            rejected += 1;
        }
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), &good[..10]).unwrap();
        let err = GenerationStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, GenerationStoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("corrupt"));
        // A valid record followed by garbage (a file of any length) is corrupt too.
        let mut long = good.to_vec();
        long.resize(1 << 20, 0xAB);
        fs::write(dir.path().join(FILE_NAME), &long).unwrap();
        assert!(matches!(
            GenerationStore::open(dir.path()),
            Err(GenerationStoreError::Corrupt {
                reason: "wrong length",
                ..
            })
        ));
        assert_eq!(rejected, FILE_LEN * 9);
    }

    #[test]
    fn a_missing_directory_is_created() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("node-1").join("term");
        let mut store = GenerationStore::open(&dir).unwrap();
        assert_eq!(store.increment().unwrap(), Generation::new(1));
        assert_eq!(
            GenerationStore::open(&dir).unwrap().current(),
            Generation::new(1)
        );
    }

    #[test]
    fn stale_stores_are_refused_and_exhaustion_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = GenerationStore::open(dir.path()).unwrap();
        store.store(Generation::new(u64::MAX)).unwrap();
        assert!(matches!(
            store.store(Generation::new(3)),
            Err(GenerationStoreError::Stale { .. })
        ));
        assert!(matches!(
            store.increment(),
            Err(GenerationStoreError::Exhausted)
        ));
        assert_eq!(
            GenerationStore::open(dir.path()).unwrap().current(),
            Generation::new(u64::MAX)
        );
    }
}
