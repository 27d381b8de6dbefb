//! `--history FILE` of `synod sim` and `synod demo`: the history the checker decided,
//! written for a checker Synod did not write.
// tidy: driver: writes the history file.
//!
//! The format is Jepsen's EDN history (Knossos, Elle) or porcupine's operations as JSON
//! (see [`synod_sim::HistoryFormat`]), chosen by `--history-format` or else by the file's
//! extension (`.edn` or `.json`). The file is created before the run, so a path that cannot
//! be written is refused at once, and written once the history is checked.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use synod_sim::{History, HistoryFormat, KvInput, KvOutput};

/// The `--history` and `--history-format` options.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct HistoryArgs {
    /// Write the history the checker decided to FILE, for another checker: Jepsen's EDN
    /// history if FILE ends in .edn, porcupine's operations as JSON if in .json (synod
    /// sim: with --seed).
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// The format of --history whatever its extension: jepsen or porcupine.
    #[arg(long, value_name = "FORMAT", requires = "history", value_parser = parse_format)]
    pub history_format: Option<HistoryFormat>,
}

impl HistoryArgs {
    /// The file the options name, if any.
    ///
    /// # Errors
    ///
    /// As [`HistoryFile::new`].
    pub fn file(self) -> Result<Option<HistoryFile>, HistoryFileError> {
        self.history
            .map(|path| HistoryFile::new(path, self.history_format))
            .transpose()
    }
}

/// Where to write a history, and in which format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryFile {
    path: PathBuf,
    format: HistoryFormat,
}

/// Why a history file cannot be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum HistoryFileError {
    /// Neither `--history-format` nor the file's extension names a format.
    UnknownFormat(PathBuf),
    /// The file could not be created or written.
    Io(PathBuf, io::Error),
}

impl fmt::Display for HistoryFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryFileError::UnknownFormat(path) => write!(
                f,
                "cannot tell the history format of {}: name the file .edn (Jepsen's history) \
                 or .json (porcupine's operations), or give --history-format jepsen|porcupine",
                path.display()
            ),
            HistoryFileError::Io(path, e) => {
                write!(f, "cannot write the history to {}: {e}", path.display())
            }
        }
    }
}

impl std::error::Error for HistoryFileError {}

/// Parses `--history-format` (`jepsen` or `porcupine`).
///
/// # Errors
///
/// A message naming the formats, for any other name.
pub fn parse_format(text: &str) -> Result<HistoryFormat, String> {
    HistoryFormat::from_name(text.trim()).ok_or_else(|| {
        let names: Vec<&str> = HistoryFormat::ALL.iter().map(|f| f.name()).collect();
        format!(
            "`{text}` is not a history format: give {}",
            names.join(" or ")
        )
    })
}

impl HistoryFile {
    /// The file `path` in `format`, or in the format its extension names.
    ///
    /// # Errors
    ///
    /// [`HistoryFileError::UnknownFormat`] if `format` is `None` and the extension is
    /// neither `.edn` nor `.json`.
    pub fn new(path: PathBuf, format: Option<HistoryFormat>) -> Result<Self, HistoryFileError> {
        match format.or_else(|| HistoryFormat::from_path(&path)) {
            Some(format) => Ok(HistoryFile { path, format }),
            None => Err(HistoryFileError::UnknownFormat(path)),
        }
    }

    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format it is written in.
    #[must_use]
    pub fn format(&self) -> HistoryFormat {
        self.format
    }

    /// Creates (or empties) the file, to be written by [`HistoryWriter::write`].
    ///
    /// # Errors
    ///
    /// [`HistoryFileError::Io`] if it cannot be created.
    pub fn create(&self) -> Result<HistoryWriter, HistoryFileError> {
        let file = File::create(&self.path).map_err(|e| self.io(e))?;
        Ok(HistoryWriter {
            file,
            target: self.clone(),
        })
    }

    fn io(&self, e: io::Error) -> HistoryFileError {
        HistoryFileError::Io(self.path.clone(), e)
    }
}

/// A history file created and waiting for its history.
#[derive(Debug)]
pub struct HistoryWriter {
    file: File,
    target: HistoryFile,
}

impl HistoryWriter {
    /// Writes `history` and syncs the file.
    ///
    /// # Errors
    ///
    /// [`HistoryFileError::Io`] if a write or the sync fails.
    pub fn write(mut self, history: &History<KvInput, KvOutput>) -> Result<(), HistoryFileError> {
        let target = &self.target;
        target
            .format
            .write(history, &mut self.file)
            .and_then(|()| self.file.flush())
            .and_then(|()| self.file.sync_all())
            .map_err(|e| target.io(e))
    }
}

impl fmt::Display for HistoryFile {
    /// `PATH (FORMAT)`, for example `run.edn (Jepsen's EDN history)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.path.display(), self.format.description())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_comes_from_the_option_or_the_extension() {
        let file = |p: &str, f| HistoryFile::new(PathBuf::from(p), f);
        assert_eq!(file("a.edn", None).unwrap().format(), HistoryFormat::Jepsen);
        assert_eq!(
            file("a.json", None).unwrap().format(),
            HistoryFormat::Porcupine
        );
        let named = file("a.txt", Some(HistoryFormat::Porcupine)).unwrap();
        assert_eq!(named.format(), HistoryFormat::Porcupine);
        assert_eq!(named.path(), Path::new("a.txt"));
        let err = file("a.txt", None).unwrap_err().to_string();
        assert!(
            err.contains(".edn") && err.contains("--history-format"),
            "{err}"
        );
        assert_eq!(parse_format("jepsen"), Ok(HistoryFormat::Jepsen));
        assert!(
            parse_format("knossos")
                .unwrap_err()
                .contains("jepsen or porcupine")
        );
    }
}
