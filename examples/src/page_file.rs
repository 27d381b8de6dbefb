//! `--html FILE` of `synod sim` and `synod demo`: the run drawn as one self-contained page
//! ([`synod_sim::timeline`]).
// tidy: driver: writes the page file.
//!
//! The file is created before the run, so a path that cannot be written is refused at
//! once, and written once the run is checked; its size is printed.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use synod_sim::timeline::Timeline;

/// A page file, created and not yet written.
#[derive(Debug)]
pub struct PageFile {
    path: PathBuf,
    file: File,
}

/// Why a page could not be written: its path and the error.
#[derive(Debug)]
pub struct PageFileError(PathBuf, io::Error);

impl fmt::Display for PageFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot write the page {}: {}", self.0.display(), self.1)
    }
}

impl std::error::Error for PageFileError {}

impl PageFile {
    /// Creates (or truncates) the file at `path`.
    ///
    /// # Errors
    ///
    /// The file cannot be created.
    pub fn create(path: &Path) -> Result<PageFile, PageFileError> {
        match File::create(path) {
            Ok(file) => Ok(PageFile {
                path: path.to_owned(),
                file,
            }),
            Err(e) => Err(PageFileError(path.to_owned(), e)),
        }
    }

    /// Writes `timeline`'s page and returns the line that reports it: the path, the page's
    /// size, and what it holds.
    ///
    /// # Errors
    ///
    /// A write failed.
    pub fn write(mut self, timeline: &Timeline) -> Result<String, PageFileError> {
        let mut out = io::BufWriter::new(&mut self.file);
        let bytes = timeline
            .write_html(&mut out)
            .and_then(|bytes| out.flush().map(|()| bytes))
            .map_err(|e| PageFileError(self.path.clone(), e))?;
        drop(out);
        self.file
            .sync_all()
            .map_err(|e| PageFileError(self.path.clone(), e))?;
        Ok(format!(
            "page written to {}: {bytes} bytes ({} KiB), {} nodes",
            self.path.display(),
            bytes.div_ceil(1024),
            timeline.nodes()
        ))
    }
}
