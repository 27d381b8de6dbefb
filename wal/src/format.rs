//! The on-disk format, version 2: file names, the segment header and the record frame.
//!
//! Everything here is pure: encoding into buffers and decoding from byte slices, with every
//! length checked before it is used, so that nothing read from disk can panic or make the
//! decoder allocate. The layout is described in the crate documentation ("On-disk format").

use crate::LogIndex;

/// The format version written by this crate.
pub const FORMAT_VERSION: u32 = 2;

/// The oldest format version this crate reads. Version 1 differs only in that it has no
/// [`FLAG_CUT`]: a version-1 log reads as it always did.
pub const FORMAT_VERSION_MIN: u32 = 1;

/// The first eight bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SYNODWAL";

/// Size of the segment header; the first record starts at this offset.
pub const SEGMENT_HEADER_BYTES: usize = 48;

/// Size of a record's header (checksum, length, index, tag, lag); the payload follows.
pub const RECORD_HEADER_BYTES: usize = 24;

/// Records start at offsets that are multiples of this; the gap is zero padding.
pub const RECORD_ALIGN: usize = 8;

/// Segment header flag: this segment starts a new base for the log, and every segment with
/// a smaller first index is obsolete (written by a purge past the end of the log).
pub const FLAG_BASE: u32 = 1;

/// Segment header flag (since version 2): this segment was made by a truncation that cut the
/// log just before its first index, and every segment after it with a smaller generation is
/// obsolete (one the truncation had not yet removed when it stopped). The cut is made durable
/// by this segment's creation, before any segment after the cut is removed, so that the end
/// of the segment before it is never left unrecorded.
pub const FLAG_CUT: u32 = 2;

/// The suffix of segment file names.
pub const SEGMENT_SUFFIX: &str = ".wal";
/// The suffix of spare (pre-written or recycled) segment files.
pub const SPARE_SUFFIX: &str = ".spare";
/// The suffix of files being prepared; removed at open.
pub const TMP_SUFFIX: &str = ".tmp";
/// The suffix given to segments set aside by [`crate::RecoveryMode::SkipAndReport`].
pub const CORRUPT_SUFFIX: &str = ".corrupt";

/// The file name of the segment whose first record has index `first`: 20 zero-padded
/// digits, so that names sort like indexes.
#[must_use]
pub fn segment_name(first: LogIndex) -> String {
    format!("{:020}{SEGMENT_SUFFIX}", first.get())
}

/// The first index of a segment file name, or `None` if `name` is not a segment name.
#[must_use]
pub fn parse_segment_name(name: &str) -> Option<LogIndex> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(LogIndex::new)
}

/// The decoded header of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Index of the first record in the segment.
    pub first: LogIndex,
    /// A number never reused for another segment of the same log; records carry its low 32
    /// bits as their tag, so that records left over in a recycled file are not taken for new ones.
    pub generation: u64,
    /// When the segment was created, in milliseconds of the log's clock.
    pub created_ms: u64,
    /// `FLAG_*` bits.
    pub flags: u32,
}

/// Why a segment header was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// The file is shorter than a header.
    Short,
    /// The first eight bytes are not `SYNODWAL`.
    BadMagic,
    /// A version this crate does not read.
    UnsupportedVersion(u32),
    /// The header's checksum does not match.
    BadChecksum,
}

impl SegmentHeader {
    /// The header as bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut b = [0u8; SEGMENT_HEADER_BYTES];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.first.get().to_le_bytes());
        b[24..32].copy_from_slice(&self.generation.to_le_bytes());
        b[32..40].copy_from_slice(&self.created_ms.to_le_bytes());
        let crc = crc32fast::hash(&b[0..40]);
        b[40..44].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a header from the start of `bytes`.
    ///
    /// # Errors
    ///
    /// Returns why the bytes are not a valid header of a version this crate reads.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, HeaderError> {
        let b = bytes
            .get(..SEGMENT_HEADER_BYTES)
            .ok_or(HeaderError::Short)?;
        if b[0..8] != SEGMENT_MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let version = u32_at(b, 8);
        if !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&version) {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        if crc32fast::hash(&b[0..40]) != u32_at(b, 40) {
            return Err(HeaderError::BadChecksum);
        }
        Ok(SegmentHeader {
            flags: u32_at(b, 12),
            first: LogIndex::new(u64_at(b, 16)),
            generation: u64_at(b, 24),
            created_ms: u64_at(b, 32),
        })
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The tag records of a segment with this generation carry.
#[must_use]
pub const fn tag_of(generation: u64) -> u32 {
    // Truncation is the point: the tag is the low 32 bits.
    (generation & 0xffff_ffff) as u32
}

/// Bytes a record with a payload of `payload_bytes` takes on disk, padding included.
#[must_use]
pub const fn record_bytes(payload_bytes: usize) -> usize {
    let raw = RECORD_HEADER_BYTES + payload_bytes;
    raw.div_ceil(RECORD_ALIGN) * RECORD_ALIGN
}

/// Appends one record frame to `out`.
///
/// `lag` is the record's index minus the last index known durable when it was written
/// (saturated): recovery uses it to tell a torn, never-synced tail from damage to records
/// that had been synced. Records that recovery copies into a segment synced before it
/// joins the log carry 0: each was durable as soon as it was part of the log.
pub fn encode_record(out: &mut Vec<u8>, index: LogIndex, tag: u32, lag: u32, payload: &[u8]) {
    let start = out.len();
    let len =
        u32::try_from(payload.len()).expect("payload length checked against record_bytes_max");
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&index.get().to_le_bytes());
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&lag.to_le_bytes());
    out.extend_from_slice(payload);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&out[start + 4..]);
    let crc = hasher.finalize();
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    let padded = start + record_bytes(payload.len());
    out.resize(padded, 0);
}

/// A record header as read, before its payload is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// The stored checksum.
    pub crc: u32,
    /// Payload length in bytes.
    pub len: u32,
    /// The record's index.
    pub index: LogIndex,
    /// Low 32 bits of the generation of the segment it was written to.
    pub tag: u32,
    /// Index minus the last durable index when written.
    pub lag: u32,
}

impl RecordHeader {
    /// Reads a header from the first [`RECORD_HEADER_BYTES`] of `b`, or `None` if `b` is shorter.
    #[must_use]
    pub fn parse(b: &[u8]) -> Option<RecordHeader> {
        let b = b.get(..RECORD_HEADER_BYTES)?;
        Some(RecordHeader {
            crc: u32_at(b, 0),
            len: u32_at(b, 4),
            index: LogIndex::new(u64_at(b, 8)),
            tag: u32_at(b, 16),
            lag: u32_at(b, 20),
        })
    }

    /// Whether every header byte is zero (pre-written, never-used space).
    #[must_use]
    pub fn is_zero(&self) -> bool {
        self.crc == 0 && self.len == 0 && self.index.get() == 0 && self.tag == 0 && self.lag == 0
    }

    /// The last index that was durable when this record was written.
    #[must_use]
    pub fn durable_mark(&self) -> Option<LogIndex> {
        self.index
            .get()
            .checked_sub(u64::from(self.lag))
            .map(LogIndex::new)
    }
}

/// Checks a whole record frame: `frame` starts at the record and holds at least its header
/// and payload. Returns the header if the checksum matches.
#[must_use]
pub fn check_record(frame: &[u8]) -> Option<RecordHeader> {
    let header = RecordHeader::parse(frame)?;
    let end = RECORD_HEADER_BYTES.checked_add(usize::try_from(header.len).ok()?)?;
    let body = frame.get(4..end)?;
    (crc32fast::hash(body) == header.crc).then_some(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_like_indexes_and_round_trip() {
        let a = segment_name(LogIndex::new(9));
        let b = segment_name(LogIndex::new(10));
        assert!(a < b);
        assert_eq!(parse_segment_name(&b), Some(LogIndex::new(10)));
        assert_eq!(parse_segment_name("10.wal"), None);
        assert_eq!(parse_segment_name("0000000000000000000x.wal"), None);
        assert_eq!(
            parse_segment_name(&segment_name(LogIndex::new(u64::MAX))),
            Some(LogIndex::new(u64::MAX))
        );
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = SegmentHeader {
            first: LogIndex::new(7),
            generation: 3,
            created_ms: 99,
            flags: FLAG_BASE,
        };
        let mut b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        assert_eq!(SegmentHeader::decode(&b[..10]), Err(HeaderError::Short));
        b[20] ^= 1;
        assert_eq!(SegmentHeader::decode(&b), Err(HeaderError::BadChecksum));
        b[8] = 3;
        assert_eq!(
            SegmentHeader::decode(&b),
            Err(HeaderError::UnsupportedVersion(3))
        );
        b[0] = b'X';
        assert_eq!(SegmentHeader::decode(&b), Err(HeaderError::BadMagic));
    }

    #[test]
    fn a_version_1_header_still_reads() {
        let h = SegmentHeader {
            first: LogIndex::new(7),
            generation: 3,
            created_ms: 99,
            flags: 0,
        };
        let mut b = h.encode();
        assert_eq!(u32_at(&b, 8), FORMAT_VERSION);
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32fast::hash(&b[0..40]);
        b[40..44].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
    }

    #[test]
    fn record_round_trips_and_is_aligned() {
        for len in [0usize, 1, 7, 8, 100] {
            let payload = vec![0xab; len];
            let mut out = vec![1, 2, 3];
            out.truncate(0);
            encode_record(&mut out, LogIndex::new(5), 9, 2, &payload);
            assert_eq!(out.len(), record_bytes(len));
            assert_eq!(out.len() % RECORD_ALIGN, 0);
            let h = check_record(&out).expect("valid");
            assert_eq!(
                (h.len as usize, h.index, h.tag, h.durable_mark()),
                (len, LogIndex::new(5), 9, Some(LogIndex::new(3)))
            );
            let mut bad = out.clone();
            let at = RECORD_HEADER_BYTES.min(bad.len() - 1);
            bad[at] ^= 0x10;
            if len > 0 {
                assert_eq!(check_record(&bad), None);
            }
            assert_eq!(
                check_record(&out[..RECORD_HEADER_BYTES + len - usize::from(len > 0)]).is_some(),
                len == 0
            );
        }
    }
}
