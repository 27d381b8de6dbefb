//! Error types: [`WalError`] for every operation, [`Corruption`] for damage found on disk.

use std::fmt;
use std::io;

use crate::LogIndex;

/// What is wrong with the bytes at a [`Corruption`]'s location.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptionKind {
    /// The segment header is missing, has a bad magic number or checksum, or names another
    /// first index than the file name.
    BadSegmentHeader(String),
    /// The segment's format version is not one this crate reads.
    UnsupportedVersion(u32),
    /// A record's checksum or length is wrong, and valid records written after it was
    /// synced follow it (or it lies in a closed segment): this is damage, not a torn tail.
    BadRecord,
    /// A record with a valid checksum carries another index than the position expects
    /// (for example a decreasing index).
    IndexMismatch {
        /// The index the position requires.
        expected: LogIndex,
        /// The index found.
        found: LogIndex,
    },
    /// A closed segment ends before the record the next segment's name requires.
    MissingRecords {
        /// The first missing index.
        expected: LogIndex,
    },
    /// The last segment ends in a partly written record (reported only by
    /// [`crate::RecoveryMode::Strict`]; the default mode truncates it).
    TornTail,
    /// Two segments overlap or leave a gap between them.
    SegmentGap {
        /// The first index the segment should have started at.
        expected: LogIndex,
    },
}

/// Damage found in a log directory, with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// The segment file name.
    pub segment: String,
    /// Byte offset of the damaged header or record in the segment file.
    pub offset: u64,
    /// The index expected at that position, where known.
    pub index: Option<LogIndex>,
    /// What is wrong.
    pub kind: CorruptionKind,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at offset {}", self.segment, self.offset)?;
        if let Some(index) = self.index {
            write!(f, " (index {index})")?;
        }
        match &self.kind {
            CorruptionKind::BadSegmentHeader(why) => write!(f, ": bad segment header: {why}"),
            CorruptionKind::UnsupportedVersion(v) => write!(f, ": unsupported format version {v}"),
            CorruptionKind::BadRecord => {
                write!(
                    f,
                    ": bad record (checksum or length) followed by synced records"
                )
            }
            CorruptionKind::IndexMismatch { expected, found } => {
                write!(f, ": record has index {found}, expected {expected}")
            }
            CorruptionKind::MissingRecords { expected } => {
                write!(f, ": closed segment ends before index {expected}")
            }
            CorruptionKind::TornTail => write!(f, ": partly written record at the tail"),
            CorruptionKind::SegmentGap { expected } => {
                write!(f, ": segment should start at index {expected}")
            }
        }
    }
}

/// The error of every log operation.
#[derive(Debug)]
#[non_exhaustive]
pub enum WalError {
    /// A storage operation failed.
    Io {
        /// What the log was doing.
        op: &'static str,
        /// The file involved, if any.
        file: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The log found damage it will not repair on its own (see [`crate::RecoveryMode`]).
    Corrupt(Corruption),
    /// An earlier write or sync failed; the log refuses further writes until it is reopened.
    /// Records not yet reported durable when it failed may or may not survive the reopen.
    Poisoned {
        /// The failure that poisoned the log.
        cause: String,
    },
    /// A payload is larger than the configured `record_bytes_max`.
    RecordTooLarge {
        /// The payload's size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// An index outside the log's current range `[first, next)`.
    OutOfRange {
        /// The index asked for.
        index: LogIndex,
        /// The first index in the log.
        first: LogIndex,
        /// The index the next append gets.
        next: LogIndex,
    },
    /// The configuration is not valid.
    InvalidConfig(String),
    /// The record a blocking append was waiting on was removed by a concurrent
    /// [`crate::Wal::truncate_after`] (or a purge past the end of the log) before it became
    /// durable; it is not in the log, whatever record holds its index now.
    Truncated {
        /// The index the record had.
        index: LogIndex,
    },
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::Io { op, file, source } if file.is_empty() => {
                write!(f, "wal: {op}: {source}")
            }
            WalError::Io { op, file, source } => write!(f, "wal: {op} {file}: {source}"),
            WalError::Corrupt(c) => write!(f, "wal: corruption in {c}"),
            WalError::Poisoned { cause } => {
                write!(
                    f,
                    "wal: refusing writes after an earlier failure ({cause}); reopen the log"
                )
            }
            WalError::RecordTooLarge { bytes, max } => {
                write!(
                    f,
                    "wal: record of {bytes} bytes is larger than record_bytes_max {max}"
                )
            }
            WalError::OutOfRange { index, first, next } => {
                write!(f, "wal: index {index} is outside the log [{first}, {next})")
            }
            WalError::InvalidConfig(why) => write!(f, "wal: invalid configuration: {why}"),
            WalError::Truncated { index } => write!(
                f,
                "wal: record {index} was truncated before it became durable"
            ),
        }
    }
}

impl std::error::Error for WalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WalError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// An I/O error from outside the log, such as opening its storage
/// (`FileStorage::new(dir)?` in a function that returns `Result<_, WalError>`). The error
/// names no operation or file beyond what the `io::Error` itself says; errors from the
/// log's own operations carry both.
impl From<io::Error> for WalError {
    fn from(source: io::Error) -> WalError {
        WalError::Io {
            op: "storage",
            file: String::new(),
            source,
        }
    }
}

impl WalError {
    pub(crate) fn io(op: &'static str, file: &str, source: io::Error) -> WalError {
        WalError::Io {
            op,
            file: file.to_owned(),
            source,
        }
    }
}
