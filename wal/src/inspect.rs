//! [`check`] and [`dump`]: read-only inspection of a log directory, with printable results
//! (the `synod wal check|dump DIR` subcommands print them).

use std::fmt;
use std::path::Path;

use crate::error::Corruption;
use crate::format::{self, RECORD_HEADER_BYTES};
use crate::scan::{self, Tail};
use crate::storage::{FileStorage, Storage, read_full_at};
use crate::{LogIndex, WalError};

/// The largest record `check` and `dump` accept: the format's own limit, since they do not
/// know the configuration the log was written with.
const RECORD_BYTES_MAX: usize = u32::MAX as usize / 2;

/// One segment, as [`check`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    /// The file name.
    pub name: String,
    /// The first index.
    pub first: LogIndex,
    /// Valid records in the segment's range.
    pub records: u64,
    /// Bytes used by the header and those records.
    pub bytes_used: u64,
    /// The file's length.
    pub file_bytes: u64,
}

/// The result of [`check`]: what the log holds and any damage found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The segments that make up the log, in order.
    pub segments: Vec<SegmentSummary>,
    /// Valid records.
    pub records: u64,
    /// The first index (equal to `next_index` when empty).
    pub first_index: Option<LogIndex>,
    /// The index the next append would get.
    pub next_index: Option<LogIndex>,
    /// Bytes used by headers and valid records.
    pub bytes_used: u64,
    /// The first damage found, with its location: the log would not open in the default
    /// recovery mode.
    pub corruption: Option<Corruption>,
    /// Where a torn tail starts (segment, offset), which opening the log cuts off.
    pub torn_tail: Option<(String, u64)>,
    /// Segments after the damage, not checked.
    pub unchecked: Vec<String>,
    /// Spare segment files.
    pub spares: usize,
}

impl CheckReport {
    /// Whether no damage was found (a torn tail is not damage).
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.corruption.is_none()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "segments: {}", self.segments.len())?;
        for s in &self.segments {
            writeln!(
                f,
                "  {}  first {}  records {}  bytes {} of {}",
                s.name, s.first, s.records, s.bytes_used, s.file_bytes
            )?;
        }
        writeln!(f, "records: {}", self.records)?;
        match (self.first_index, self.next_index) {
            (Some(first), Some(next)) if first < next => {
                writeln!(f, "first index: {first}\nlast index: {}", next.get() - 1)?;
            }
            (_, Some(next)) => writeln!(f, "empty; next index: {next}")?,
            _ => writeln!(f, "no segments")?,
        }
        writeln!(f, "bytes: {}", self.bytes_used)?;
        writeln!(f, "spares: {}", self.spares)?;
        if let Some((segment, offset)) = &self.torn_tail {
            writeln!(
                f,
                "torn tail: {segment} at offset {offset} (cut off when the log is opened)"
            )?;
        }
        match &self.corruption {
            Some(c) => {
                writeln!(f, "corruption: {c}")?;
                if !self.unchecked.is_empty() {
                    writeln!(f, "not checked past it: {}", self.unchecked.join(", "))?;
                }
                Ok(())
            }
            None => writeln!(f, "corruption: none"),
        }
    }
}

/// Verifies every record of the log in `dir` without changing anything.
///
/// # Errors
///
/// [`WalError::Io`] if the directory cannot be read. Damage is not an error: it is in the
/// report.
pub fn check(dir: impl AsRef<Path>) -> Result<CheckReport, WalError> {
    let storage = FileStorage::existing(dir.as_ref())
        .map_err(|e| WalError::io("open", &dir.as_ref().display().to_string(), e))?;
    check_storage(&storage)
}

/// [`check`] on any [`Storage`].
///
/// # Errors
///
/// As [`check`].
pub fn check_storage<S: Storage>(storage: &S) -> Result<CheckReport, WalError> {
    let scan = scan::scan(storage, RECORD_BYTES_MAX)?;
    let segments: Vec<SegmentSummary> = scan
        .segments
        .iter()
        .map(|s| SegmentSummary {
            name: s.name.clone(),
            first: s.header.first,
            records: s.offsets.len() as u64,
            bytes_used: s.end,
            file_bytes: s.file_len,
        })
        .collect();
    Ok(CheckReport {
        records: segments.iter().map(|s| s.records).sum(),
        first_index: segments.first().map(|s| s.first),
        next_index: segments
            .last()
            .map(|s| LogIndex::new(s.first.get() + s.records)),
        bytes_used: segments.iter().map(|s| s.bytes_used).sum(),
        segments,
        corruption: scan.corruption,
        torn_tail: scan
            .tail
            .and_then(|(t, s, o)| (t != Tail::Clean).then_some((s, o))),
        unchecked: scan.past_cut,
        spares: scan.spares.len(),
    })
}

/// One record, as [`dump`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedRecord {
    /// The record's index.
    pub index: LogIndex,
    /// The segment file it is in.
    pub segment: String,
    /// Its byte offset in that file.
    pub offset: u64,
    /// Payload length.
    pub len: u32,
    /// The stored checksum.
    pub crc: u32,
    /// The first bytes of the payload (up to 32).
    pub preview: Vec<u8>,
}

/// The result of [`dump`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpReport {
    /// The records, in index order.
    pub records: Vec<DumpedRecord>,
    /// Damage that ends the readable log, if any.
    pub corruption: Option<Corruption>,
}

impl fmt::Display for DumpReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.records {
            write!(
                f,
                "{:>10}  {} @{:<10} len {:<8} crc {:08x}  ",
                r.index, r.segment, r.offset, r.len, r.crc
            )?;
            for &b in &r.preview {
                let c = if b.is_ascii_graphic() || b == b' ' {
                    char::from(b)
                } else {
                    '.'
                };
                write!(f, "{c}")?;
            }
            if (r.len as usize) > r.preview.len() {
                write!(f, "...")?;
            }
            writeln!(f)?;
        }
        if let Some(c) = &self.corruption {
            writeln!(f, "corruption: {c}")?;
        }
        Ok(())
    }
}

/// Lists up to `limit` records of the log in `dir` from index `from` on, without changing
/// anything.
///
/// # Errors
///
/// [`WalError::Io`] if the directory or a segment cannot be read.
pub fn dump(dir: impl AsRef<Path>, from: LogIndex, limit: usize) -> Result<DumpReport, WalError> {
    let storage = FileStorage::existing(dir.as_ref())
        .map_err(|e| WalError::io("open", &dir.as_ref().display().to_string(), e))?;
    dump_storage(&storage, from, limit)
}

/// [`dump`] on any [`Storage`].
///
/// # Errors
///
/// As [`dump`].
pub fn dump_storage<S: Storage>(
    storage: &S,
    from: LogIndex,
    limit: usize,
) -> Result<DumpReport, WalError> {
    let scan = scan::scan(storage, RECORD_BYTES_MAX)?;
    let mut records = Vec::new();
    'segments: for seg in &scan.segments {
        let first = seg.header.first.get();
        if first + seg.offsets.len() as u64 <= from.get() {
            continue;
        }
        let file = storage
            .open(&seg.name)
            .map_err(|e| WalError::io("open", &seg.name, e))?;
        let skip = usize::try_from(from.get().saturating_sub(first)).unwrap_or(usize::MAX);
        for (k, &offset) in seg.offsets.iter().enumerate().skip(skip) {
            if records.len() >= limit {
                break 'segments;
            }
            let mut head = [0u8; RECORD_HEADER_BYTES + 32];
            let end = seg.offsets.get(k + 1).map_or(seg.end, |&o| u64::from(o));
            let want = usize::try_from(end - u64::from(offset))
                .unwrap_or(usize::MAX)
                .min(head.len());
            // Short only if the file ends inside the zero padding after the last record,
            // which the scan checked holds the whole header and payload.
            let want = read_full_at(&file, &mut head[..want], u64::from(offset))
                .map_err(|e| WalError::io("read", &seg.name, e))?;
            let h = format::RecordHeader::parse(&head).expect("a full header was read");
            let shown = (h.len as usize)
                .min(32)
                .min(want.saturating_sub(RECORD_HEADER_BYTES));
            records.push(DumpedRecord {
                index: h.index,
                segment: seg.name.clone(),
                offset: u64::from(offset),
                len: h.len,
                crc: h.crc,
                preview: head[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + shown].to_vec(),
            });
        }
    }
    Ok(DumpReport {
        records,
        corruption: scan.corruption,
    })
}
