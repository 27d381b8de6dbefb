//! Reading a log directory back: the recovery scan shared by [`crate::Wal::open`],
//! [`crate::check`] and [`crate::dump`].
//!
//! The scan never allocates more than one read window (1 MiB, or one maximum-size record if
//! that is larger) per scanning thread (at most [`SCAN_THREADS_MAX`]), whatever lengths it
//! finds on disk, and never panics on what it reads.
//! It cuts the log at the first damage and says why; the caller decides, by recovery mode,
//! whether that is an error.

use std::io;

use crate::error::{Corruption, CorruptionKind};
use crate::format::{
    self, CORRUPT_SUFFIX, FLAG_BASE, FLAG_CUT, HeaderError, RECORD_ALIGN, RECORD_HEADER_BYTES,
    RecordHeader, SEGMENT_HEADER_BYTES, SPARE_SUFFIX, SegmentHeader, TMP_SUFFIX,
};
use crate::storage::{Storage, StorageFile, read_full_at};
use crate::{LogIndex, WalError};

const WINDOW_BYTES: usize = 1 << 20;

/// At most this many threads scan the segments of one log at once, each with its own read
/// window: the copy out of the page cache is what a scan spends most of its time on, and
/// it runs on as many cores as read.
const SCAN_THREADS_MAX: usize = 4;

/// A log whose segment files hold fewer bytes than this is scanned by the calling thread
/// alone: starting threads costs more than they would save.
const PARALLEL_SCAN_BYTES_MIN: u64 = 16 << 20;

/// A read window over one file, so that a sequential scan makes few large reads.
struct Window<'a, F: StorageFile> {
    file: &'a F,
    file_len: u64,
    start: u64,
    buf: Vec<u8>,
}

impl<'a, F: StorageFile> Window<'a, F> {
    fn new(file: &'a F, file_len: u64) -> Self {
        Window {
            file,
            file_len,
            start: 0,
            buf: Vec::new(),
        }
    }

    /// The `len` bytes at `offset`, or `None` if they run past the end of the file.
    /// `len` must already be bounded by the caller (a header, or a checked record length).
    fn get(&mut self, offset: u64, len: usize) -> io::Result<Option<&[u8]>> {
        let end = match offset.checked_add(len as u64) {
            Some(end) if end <= self.file_len => end,
            _ => return Ok(None),
        };
        let have_end = self.start + self.buf.len() as u64;
        if offset < self.start || end > have_end {
            let want = usize::try_from((self.file_len - offset).min(WINDOW_BYTES.max(len) as u64))
                .expect("bounded by the window size");
            self.buf.resize(want, 0);
            let got = read_full_at(self.file, &mut self.buf, offset)?;
            self.buf.truncate(got);
            self.start = offset;
            if got < len {
                return Ok(None);
            }
        }
        let at = usize::try_from(offset - self.start).expect("inside the window");
        Ok(Some(&self.buf[at..at + len]))
    }
}

/// What follows the last valid record of the last segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Zeros, leftovers of another generation, or the end of the file: appends may go on here.
    Clean,
    /// A partly written record of this generation (a torn write).
    Torn,
    /// Valid records of this generation follow a gap, all written after the last sync
    /// before the gap (blocks that reached the disk out of order): cut off, and appends
    /// must go to a new segment so that these never come back.
    StaleRecords,
}

/// One segment as scanned.
#[derive(Debug)]
pub(crate) struct ScannedSegment {
    pub(crate) name: String,
    pub(crate) header: SegmentHeader,
    pub(crate) file_len: u64,
    /// Offset of each valid record, in index order from `header.first`.
    pub(crate) offsets: Vec<u32>,
    /// Offset just past the last valid record.
    pub(crate) end: u64,
    /// The highest index the valid records' durable marks prove was synced, if any.
    pub(crate) proven: Option<LogIndex>,
}

/// The result of scanning a directory.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// The usable segments, in index order; the log is their records.
    pub(crate) segments: Vec<ScannedSegment>,
    /// The damage that cut the log, if any.
    pub(crate) corruption: Option<Corruption>,
    /// Where a torn tail (or stale records past a gap) was cut, and which.
    pub(crate) tail: Option<(Tail, String, u64)>,
    /// Segments past a cut (by damage), in order.
    pub(crate) past_cut: Vec<String>,
    /// Segments made obsolete by a later base segment, or by an earlier cut segment newer
    /// than they are.
    pub(crate) obsolete: Vec<String>,
    /// Spare segment files.
    pub(crate) spares: Vec<String>,
    /// Files left over from an interrupted preparation.
    pub(crate) tmp: Vec<String>,
    /// The highest generation in any header, spares included.
    pub(crate) max_generation: u64,
}

fn header_corruption(name: &str, err: HeaderError) -> Corruption {
    let kind = match err {
        HeaderError::Short => CorruptionKind::BadSegmentHeader("file shorter than a header".into()),
        HeaderError::BadMagic => CorruptionKind::BadSegmentHeader("bad magic number".into()),
        HeaderError::BadChecksum => CorruptionKind::BadSegmentHeader("bad header checksum".into()),
        HeaderError::UnsupportedVersion(v) => CorruptionKind::UnsupportedVersion(v),
    };
    Corruption {
        segment: name.to_owned(),
        offset: 0,
        index: None,
        kind,
    }
}

fn io_err<'a>(op: &'static str, name: &'a str) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |e| WalError::io(op, name, e)
}

/// Reads a segment header from an open file.
fn read_header<F: StorageFile>(
    file: &F,
    name: &str,
) -> Result<Result<SegmentHeader, Corruption>, WalError> {
    let mut buf = [0u8; SEGMENT_HEADER_BYTES];
    let got = read_full_at(file, &mut buf, 0).map_err(io_err("read header of", name))?;
    Ok(SegmentHeader::decode(&buf[..got]).map_err(|e| header_corruption(name, e)))
}

/// The outcome of checking the record at one offset.
enum Step {
    Valid(RecordHeader, u64),
    Invalid,
}

fn check_at<F: StorageFile>(
    win: &mut Window<'_, F>,
    offset: u64,
    tag: u32,
    record_bytes_max: usize,
) -> io::Result<Step> {
    let Some(head) = win.get(offset, RECORD_HEADER_BYTES)? else {
        return Ok(Step::Invalid);
    };
    let Some(h) = RecordHeader::parse(head) else {
        return Ok(Step::Invalid);
    };
    let len = h.len as usize;
    // No record has index u64::MAX: the log never gets there (its next index would
    // overflow), so one on disk is damage, and refusing it keeps `expected + 1` in range.
    if h.tag != tag || len > record_bytes_max || h.index.get() == u64::MAX {
        return Ok(Step::Invalid);
    }
    let Some(frame) = win.get(offset, RECORD_HEADER_BYTES + len)? else {
        return Ok(Step::Invalid);
    };
    match format::check_record(frame) {
        Some(h) => Ok(Step::Valid(h, offset + format::record_bytes(len) as u64)),
        None => Ok(Step::Invalid),
    }
}

/// Scans the records of one segment from its header on. `until` is the first index of the
/// next segment (for a closed segment); `None` for the last segment.
fn scan_records<F: StorageFile>(
    file: &F,
    name: &str,
    header: &SegmentHeader,
    until: Option<LogIndex>,
    record_bytes_max: usize,
) -> Result<(ScannedSegment, Option<Corruption>, Option<Tail>), WalError> {
    let file_len = file.len().map_err(io_err("stat", name))?;
    let mut win = Window::new(file, file_len);
    let tag = format::tag_of(header.generation);
    let mut offsets = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES as u64;
    let mut expected = header.first;
    let mut proven: Option<LogIndex> = None;
    let seg = |offsets: Vec<u32>, end: u64, proven: Option<LogIndex>| ScannedSegment {
        name: name.to_owned(),
        header: *header,
        file_len,
        offsets,
        end,
        proven,
    };
    loop {
        if until == Some(expected) {
            return Ok((seg(offsets, offset, proven), None, None));
        }
        let step =
            check_at(&mut win, offset, tag, record_bytes_max).map_err(io_err("read", name))?;
        match step {
            Step::Valid(h, next) if h.index == expected => {
                offsets.push(u32::try_from(offset).map_err(|_| {
                    WalError::Corrupt(Corruption {
                        segment: name.to_owned(),
                        offset,
                        index: Some(expected),
                        kind: CorruptionKind::BadRecord,
                    })
                })?);
                offset = next;
                expected = expected.next();
                proven = proven.max(h.durable_mark());
            }
            Step::Valid(h, _) => {
                let c = Corruption {
                    segment: name.to_owned(),
                    offset,
                    index: Some(expected),
                    kind: CorruptionKind::IndexMismatch {
                        expected,
                        found: h.index,
                    },
                };
                return Ok((seg(offsets, offset, proven), Some(c), None));
            }
            Step::Invalid => {
                if until.is_some() {
                    let kind = if win.get(offset, 1).map_err(io_err("read", name))?.is_none() {
                        CorruptionKind::MissingRecords { expected }
                    } else {
                        CorruptionKind::BadRecord
                    };
                    let c = Corruption {
                        segment: name.to_owned(),
                        offset,
                        index: Some(expected),
                        kind,
                    };
                    return Ok((seg(offsets, offset, proven), Some(c), None));
                }
                // The last segment: a torn tail, or damage to records that had been synced?
                let (corruption, tail) =
                    classify_tail(&mut win, name, offset, expected, tag, record_bytes_max)?;
                return Ok((seg(offsets, offset, proven), corruption, Some(tail)));
            }
        }
    }
}

/// Decides what an invalid record at `offset` of the last segment is: a valid record of
/// this generation further on whose durable mark covers `expected` proves that `expected`
/// had been synced, so the bad record is damage; valid records without that proof were all
/// written after the last sync (a torn, reordered tail).
fn classify_tail<F: StorageFile>(
    win: &mut Window<'_, F>,
    name: &str,
    offset: u64,
    expected: LogIndex,
    tag: u32,
    record_bytes_max: usize,
) -> Result<(Option<Corruption>, Tail), WalError> {
    let torn_here = {
        let head = win
            .get(offset, RECORD_HEADER_BYTES)
            .map_err(io_err("read", name))?;
        match head.and_then(RecordHeader::parse) {
            Some(h) => h.tag == tag && !h.is_zero(),
            // A partial header at the very end of the file: torn if anything but zeros.
            None => false,
        }
    };
    let mut stale = false;
    let mut at = offset + RECORD_ALIGN as u64;
    // Look at every aligned position after the bad record for a record of this generation,
    // a chunk at a time: all-zero chunks (pre-written space) are skipped at memory speed,
    // and only positions whose tag word matches are checked in full.
    const CHUNK_BYTES: u64 = 64 * 1024;
    while at + RECORD_HEADER_BYTES as u64 <= win.file_len {
        let n = (win.file_len - at).min(CHUNK_BYTES);
        let n_usize = usize::try_from(n).expect("bounded by CHUNK_BYTES");
        let mut candidates = Vec::new();
        {
            let chunk = win
                .get(at, n_usize)
                .map_err(io_err("read", name))?
                .unwrap_or(&[]);
            // A comparison with a zero block runs as `memcmp`, many bytes per cycle.
            static ZEROS: [u8; CHUNK_BYTES as usize] = [0; CHUNK_BYTES as usize];
            if chunk != &ZEROS[..chunk.len()] {
                let mut k = 0;
                while k + RECORD_HEADER_BYTES <= chunk.len() {
                    if chunk[k + 16..k + 20] == tag.to_le_bytes() {
                        candidates.push(at + k as u64);
                    }
                    k += RECORD_ALIGN;
                }
            }
        }
        for candidate in candidates {
            if let Step::Valid(h, _) =
                check_at(win, candidate, tag, record_bytes_max).map_err(io_err("read", name))?
                && h.index > expected
            {
                if h.durable_mark().is_some_and(|m| m >= expected) {
                    let c = Corruption {
                        segment: name.to_owned(),
                        offset,
                        index: Some(expected),
                        kind: CorruptionKind::BadRecord,
                    };
                    return Ok((Some(c), Tail::StaleRecords));
                }
                stale = true;
            }
        }
        // The next chunk starts at the first position this one could not hold a header for.
        let scanned =
            (n_usize.saturating_sub(RECORD_HEADER_BYTES) / RECORD_ALIGN + 1) * RECORD_ALIGN;
        at += scanned as u64;
    }
    let tail = if stale {
        Tail::StaleRecords
    } else if torn_here {
        Tail::Torn
    } else {
        Tail::Clean
    };
    Ok((None, tail))
}

/// What scanning one segment's records gives.
type SegmentScan = Result<(ScannedSegment, Option<Corruption>, Option<Tail>), WalError>;

/// Scans the records of every segment whose header is valid, each from its header to
/// `until(i)`, on up to [`SCAN_THREADS_MAX`] threads when the log is large enough to gain
/// from it; returns a result per segment (`None` where the header was damaged, or where
/// the log is small and nothing was scanned ahead). The results of segments after a
/// damaged one are computed and then dropped by the caller, which never looks past the
/// first damage: scanning ahead changes how long a scan takes, never what it finds.
fn scan_all<F: StorageFile>(
    opened: &[(String, F, Result<SegmentHeader, Corruption>)],
    until: &(dyn Fn(usize) -> Option<LogIndex> + Sync),
    record_bytes_max: usize,
) -> Vec<Option<SegmentScan>> {
    let mut results: Vec<Option<SegmentScan>> = opened.iter().map(|_| None).collect();
    let bytes: u64 = opened
        .iter()
        .filter_map(|(_, file, _)| file.len().ok())
        .sum();
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(SCAN_THREADS_MAX)
        .min(opened.len());
    if threads < 2 || bytes < PARALLEL_SCAN_BYTES_MIN {
        return results;
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = parking_lot::Mutex::new(&mut results);
    let work = || {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some((name, file, header)) = opened.get(i) else {
                return;
            };
            if let Ok(header) = header {
                let result = scan_records(file, name, header, until(i), record_bytes_max);
                done.lock()[i] = Some(result);
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            // A thread that cannot be started leaves its share to the others.
            let _ = std::thread::Builder::new()
                .name("synod-wal-scan".into())
                .spawn_scoped(scope, work);
        }
        work();
    });
    results
}

/// Whether `stem` is the 20-digit number this crate puts in the names it makes.
fn is_number(stem: &str) -> bool {
    stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())
}

/// Scans the directory of `storage`, cutting the log at the first damage.
pub(crate) fn scan<S: Storage>(storage: &S, record_bytes_max: usize) -> Result<Scan, WalError> {
    let mut names = storage.list().map_err(io_err("list", ""))?;
    names.sort();
    let mut result = Scan::default();
    let mut segments: Vec<(LogIndex, String)> = Vec::new();
    for name in names {
        if let Some(first) = format::parse_segment_name(&name) {
            segments.push((first, name));
        } else if name.strip_suffix(SPARE_SUFFIX).is_some_and(is_number) {
            result.spares.push(name);
        } else if name.strip_suffix(TMP_SUFFIX).is_some_and(|stem| {
            is_number(stem) || stem.strip_suffix(SPARE_SUFFIX).is_some_and(is_number)
        }) {
            result.tmp.push(name);
        }
        // Anything else (`*.corrupt`, files of other programs, names this crate never makes
        // such as `notes.tmp`) is not ours to touch: open would otherwise remove it, or
        // reuse it as a segment file.
    }
    debug_assert!(!CORRUPT_SUFFIX.ends_with(format::SEGMENT_SUFFIX));
    segments.sort();
    for spare in &result.spares {
        // Spare names are numbered from the generation counter too: never reuse one.
        if let Some(n) = spare
            .strip_suffix(SPARE_SUFFIX)
            .and_then(|d| d.parse::<u64>().ok())
        {
            result.max_generation = result.max_generation.max(n);
        }
        if let Ok(file) = storage.open(spare)
            && let Ok(Ok(h)) = read_header(&file, spare)
        {
            result.max_generation = result.max_generation.max(h.generation);
        }
    }
    // Headers first: a base segment makes every earlier one obsolete, damaged or not.
    let mut opened = Vec::new();
    for (first, name) in segments {
        let file = storage.open(&name).map_err(io_err("open", &name))?;
        let header = read_header(&file, &name)?.and_then(|h| {
            if h.first == first {
                Ok(h)
            } else {
                Err(Corruption {
                    segment: name.clone(),
                    offset: 0,
                    index: None,
                    kind: CorruptionKind::BadSegmentHeader(format!(
                        "first index {} does not match the name",
                        h.first
                    )),
                })
            }
        });
        if let Ok(h) = &header {
            result.max_generation = result.max_generation.max(h.generation);
        }
        opened.push((name, file, header));
    }
    if let Some(base) = opened
        .iter()
        .rposition(|(_, _, h)| h.as_ref().is_ok_and(|h| h.flags & FLAG_BASE != 0))
    {
        result.obsolete = opened.drain(..base).map(|(name, _, _)| name).collect();
    }
    // A cut segment makes every later segment older than it obsolete: the truncation that
    // made it was removing them when it stopped. Damaged headers are left for the range
    // checks below to report.
    let mut cut_generation: Option<u64> = None;
    let mut kept = Vec::with_capacity(opened.len());
    for (name, file, header) in opened {
        if let Ok(h) = &header {
            if cut_generation.is_some_and(|g| h.generation < g) {
                result.obsolete.push(name);
                continue;
            }
            if h.flags & FLAG_CUT != 0 {
                cut_generation = cut_generation.max(Some(h.generation));
            }
        }
        kept.push((name, file, header));
    }
    let opened = kept;
    let count = opened.len();
    // A segment's range ends where the next one starts, as the next one's name says: a
    // damaged header does not make the name wrong (a segment file gets its name only once
    // its header is synced), and reading on past it would bring back the records a
    // truncation removed when it made that next segment.
    let firsts: Vec<Option<LogIndex>> = opened
        .iter()
        .map(|(name, _, _)| format::parse_segment_name(name))
        .collect();
    let until = |i: usize| if i + 1 < count { firsts[i + 1] } else { None };
    // The records of every segment with a readable header, scanned ahead (in parallel on a
    // large log); the loop below takes the results in order and stops at the first damage.
    let mut scanned = scan_all(&opened, &until, record_bytes_max);
    for (i, (name, file, header)) in opened.into_iter().enumerate() {
        if result.corruption.is_some() {
            result.past_cut.push(name);
            continue;
        }
        let header = match header {
            Ok(h) => h,
            Err(c) => {
                result.corruption = Some(c);
                result.past_cut.push(name);
                continue;
            }
        };
        // Segments must continue where the previous one's range ends.
        if let Some(prev) = result.segments.last() {
            let expected = LogIndex::new(prev.header.first.get() + prev.offsets.len() as u64);
            if expected != header.first {
                result.corruption = Some(Corruption {
                    segment: name.clone(),
                    offset: 0,
                    index: Some(expected),
                    kind: CorruptionKind::SegmentGap { expected },
                });
                result.past_cut.push(name);
                continue;
            }
        }
        let (seg, corruption, tail) = match scanned[i].take() {
            Some(ahead) => ahead?,
            None => scan_records(&file, &name, &header, until(i), record_bytes_max)?,
        };
        if let Some(tail) = tail
            && tail != Tail::Clean
        {
            result.tail = Some((tail, name.clone(), seg.end));
        }
        result.segments.push(seg);
        if corruption.is_some() {
            result.corruption = corruption;
        }
    }
    Ok(result)
}
