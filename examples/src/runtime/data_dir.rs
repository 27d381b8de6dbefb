//! The data directory and the identity file that says whose it is.
// tidy: driver: creates directories and reads and writes the identity file.
//!
//! A [`IDENTITY_FILE`] in the data directory names the node and the cluster it belongs to
//! (`node=ID` and `members=...`), so a node started on another node's directory, or on one
//! of another cluster, is refused before it reads or writes anything there. The file is
//! written durably (under a temporary name, synced, renamed into place, the directory synced):
//! a crash leaves it whole or absent.
//!
//! An [`INCARNATION_FILE`] counts the node's starts on the directory: [`next_incarnation`]
//! reads it, adds one and writes it back the same durable way before the node serves, so
//! no two starts on a directory get the same number, whatever the wall clock says.

use std::io;
use std::path::Path;

use synod_wal::{FileStorage, Storage, StorageFile};

use super::{NodeOptions, StartError};

/// The file in the data directory naming the node and its cluster.
pub const IDENTITY_FILE: &str = "synod-node";

/// The file in the data directory counting the node's starts on it.
pub const INCARNATION_FILE: &str = "incarnation";

/// The longest identity file read: a node id and a few hundred members.
const IDENTITY_BYTES_MAX: u64 = 64 << 10;

/// The longest incarnation file read: one decimal number and a newline.
const INCARNATION_BYTES_MAX: u64 = 32;

pub(crate) fn data_err(dir: &Path, error: impl std::fmt::Display) -> StartError {
    StartError::DataDir {
        dir: dir.to_path_buf(),
        error: error.to_string(),
    }
}

/// Creates the data directory if need be and checks that it is this node's: its identity
/// file names this node and cluster, or there is none and nothing of `state` (the names of
/// the entries a system keeps there, such as `log`), in which case the file is written.
///
/// # Errors
///
/// [`StartError::ForeignDataDir`] for another node's or cluster's directory, or one that
/// holds state but no identity; [`StartError::DataDir`] if it cannot be read or written.
pub fn claim(options: &NodeOptions, state: &[&str]) -> Result<(), StartError> {
    let dir = options.data_dir();
    create_dir_durably(dir).map_err(|e| data_err(dir, e))?;
    let storage = FileStorage::new(dir).map_err(|e| data_err(dir, e))?;
    let want = options.identity();
    match read_identity(&storage) {
        Ok(Some(found)) if found == want => Ok(()),
        Ok(Some(found)) => Err(StartError::ForeignDataDir(format!(
            "data directory {} belongs to another node or cluster: it says `{}`, but this node is `{}`; use a fresh --data-dir or the matching --id/--peers",
            dir.display(),
            found.trim().replace('\n', " "),
            want.trim().replace('\n', " ")
        ))),
        Ok(None) => {
            if let Some(held) = state.iter().find(|name| dir.join(name).exists()) {
                return Err(StartError::ForeignDataDir(format!(
                    "data directory {} holds a {held} but no {IDENTITY_FILE} file; refusing to guess whose it is",
                    dir.display()
                )));
            }
            write_identity(&storage, &want).map_err(|e| data_err(dir, e))
        }
        Err(e) => Err(data_err(dir, e)),
    }
}

/// The identity file's contents, or `None` if there is none.
pub(crate) fn read_identity(storage: &impl Storage) -> io::Result<Option<String>> {
    read_small(
        storage,
        IDENTITY_FILE,
        IDENTITY_BYTES_MAX,
        "an identity is a few lines",
    )
}

/// The text of the small file `name`, or `None` if there is none; a file longer than
/// `bytes_max` (`expected` says what it should hold) or not text is an error.
fn read_small(
    storage: &impl Storage,
    name: &str,
    bytes_max: u64,
    expected: &str,
) -> io::Result<Option<String>> {
    let file = match storage.open(name) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.len()?;
    if len > bytes_max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{name} is {len} bytes long; {expected}"),
        ));
    }
    let mut bytes = vec![0; usize::try_from(len).unwrap_or(0)];
    let mut at = 0;
    while at < bytes.len() {
        match file.read_at(&mut bytes[at..], at as u64)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => at += n,
        }
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("{name} is not text")))
}

/// Writes the identity file durably: under a temporary name, synced, renamed into place,
/// and the directory synced. Without the last, a crash could lose the rename while the log
/// written next survives, and the node would then refuse its own directory (a log but no
/// identity) on every start. A crash at any point leaves the file whole or absent.
pub(crate) fn write_identity(storage: &impl Storage, identity: &str) -> io::Result<()> {
    write_durably(storage, IDENTITY_FILE, identity)
}

/// Writes `text` to the file `name` durably, as [`write_identity`] does.
fn write_durably(storage: &impl Storage, name: &str, text: &str) -> io::Result<()> {
    let tmp = format!("{name}.tmp");
    let file = storage.create(&tmp)?;
    let mut at = 0;
    while at < text.len() {
        match file.write_at(&text.as_bytes()[at..], at as u64)? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => at += n,
        }
    }
    file.sync_data()?;
    storage.rename(&tmp, name)?;
    storage.sync_dir()
}

/// Counts this start on the data directory: the number in its [`INCARNATION_FILE`] (0 if
/// there is none) plus one, written back durably before it is returned. Each start on the
/// directory gets a number above every earlier start's, the wall clock playing no part;
/// a crash while writing leaves the old number or the new one, and a start that fails
/// after this only skips a number.
///
/// # Errors
///
/// [`StartError::DataDir`] if the file cannot be read or written, does not hold a number,
/// or holds `incarnations_max` already (the node would have to reuse a number).
pub fn next_incarnation(options: &NodeOptions, incarnations_max: u64) -> Result<u64, StartError> {
    let dir = options.data_dir();
    let storage = FileStorage::new(dir).map_err(|e| data_err(dir, e))?;
    let next = bump_incarnation(&storage, incarnations_max).map_err(|e| data_err(dir, e))?;
    Ok(next)
}

/// [`next_incarnation`] on `storage`.
fn bump_incarnation(storage: &impl Storage, incarnations_max: u64) -> io::Result<u64> {
    let last = match read_small(
        storage,
        INCARNATION_FILE,
        INCARNATION_BYTES_MAX,
        "it holds one number",
    )? {
        None => 0,
        Some(text) => text.trim().parse::<u64>().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{INCARNATION_FILE} holds `{}`, not a number", text.trim()),
            )
        })?,
    };
    if last >= incarnations_max {
        return Err(io::Error::other(format!(
            "{INCARNATION_FILE} says this node started {last} times on this directory, the most it may ({incarnations_max}); start it on a fresh --data-dir"
        )));
    }
    let next = last + 1;
    write_durably(storage, INCARNATION_FILE, &format!("{next}\n"))?;
    Ok(next)
}

/// Creates `dir` and its missing parents, and syncs each new directory's entry in its
/// parent, so that a crash cannot lose the directory holding a log that was synced.
///
/// # Errors
///
/// The first error creating or syncing a directory.
pub fn create_dir_durably(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        missing.push(path);
        at = path.parent();
    }
    std::fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        let parent = created.parent().filter(|p| !p.as_os_str().is_empty());
        std::fs::File::open(parent.unwrap_or(Path::new(".")))?.sync_all()?;
    }
    Ok(())
}

/// A storage for the directory `name` inside the data directory, created durably.
///
/// # Errors
///
/// [`StartError::DataDir`] if it cannot be created or opened.
pub fn storage(options: &NodeOptions, name: &Path) -> Result<FileStorage, StartError> {
    let dir = options.data_dir();
    let path = dir.join(name);
    create_dir_durably(&path).map_err(|e| data_err(dir, e))?;
    FileStorage::new(path).map_err(|e| data_err(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_start_counts_one_incarnation_above_the_last_and_bad_counts_are_errors() {
        use synod_wal::testing::{CrashMode, FaultyStorage};
        let disk = FaultyStorage::new(3);
        assert_eq!(bump_incarnation(&disk, 10).expect("counted"), 1);
        assert_eq!(bump_incarnation(&disk, 10).expect("counted"), 2);
        // A crash while counting leaves the last number or the next, never an earlier one.
        for ops in 0..8 {
            for mode in CrashMode::ALL {
                let disk = FaultyStorage::new(ops);
                bump_incarnation(&disk, 10).expect("counted");
                disk.halt_after(Some(ops));
                let counted = bump_incarnation(&disk, 10);
                disk.crash(mode);
                let next = bump_incarnation(&disk, 10).expect("counted after the crash");
                match counted {
                    Ok(n) => assert_eq!((n, next), (2, 3), "{ops} {mode:?}"),
                    Err(_) => assert!(next == 2 || next == 3, "{ops} {mode:?}: {next}"),
                }
            }
        }
        // At the limit, or with something else in the file, the node does not start.
        let disk = FaultyStorage::new(5);
        assert_eq!(bump_incarnation(&disk, 1).expect("counted"), 1);
        assert!(bump_incarnation(&disk, 1).is_err());
        write_durably(&disk, INCARNATION_FILE, "seven\n").expect("written");
        assert!(bump_incarnation(&disk, 10).is_err());
        write_durably(&disk, INCARNATION_FILE, &"9".repeat(64)).expect("written");
        assert!(bump_incarnation(&disk, 10).is_err());
    }

    #[test]
    fn the_identity_file_survives_a_crash_once_written_and_a_crash_while_writing_leaves_it_whole_or_absent()
     {
        use synod_wal::testing::{CrashMode, FaultyStorage};
        let identity = "node=1\nmembers=1,2,3\n";
        for mode in CrashMode::ALL {
            let disk = FaultyStorage::new(7);
            write_identity(&disk, identity).expect("written");
            disk.crash(mode);
            let found = read_identity(&disk).expect("readable");
            assert_eq!(found.as_deref(), Some(identity), "{mode:?}");
        }
        // The process dies after each of the writing's storage operations in turn.
        for ops in 0..8 {
            for mode in CrashMode::ALL {
                let disk = FaultyStorage::new(ops);
                disk.halt_after(Some(ops));
                let written = write_identity(&disk, identity);
                disk.crash(mode);
                let found = read_identity(&disk).expect("readable");
                match written {
                    Ok(()) => assert_eq!(found.as_deref(), Some(identity), "{ops} {mode:?}"),
                    Err(_) => assert!(
                        found.is_none() || found.as_deref() == Some(identity),
                        "{ops} {mode:?}: {found:?}"
                    ),
                }
            }
        }
    }
}
