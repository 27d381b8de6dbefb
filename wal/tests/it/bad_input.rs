//! Hostile and damaged bytes: bad lengths, zero-filled and garbage tails, bad headers,
//! decreasing indexes, and a seeded fuzz of whole segment images. Nothing panics, and no
//! read (hence no buffer) is larger than the bound, whatever a length field says.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use synod_wal::format::{self, FLAG_BASE, SegmentHeader, encode_record};
use synod_wal::testing::{FaultyFile, FaultyStorage};
use synod_wal::{
    CorruptionKind, LogIndex, RecoveryMode, Storage, StorageFile, SyncPolicy, Wal, WalConfig,
    WalError,
};

/// Storage that remembers the largest single read.
#[derive(Debug, Clone)]
struct Counting {
    inner: FaultyStorage,
    max_read: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct CountingFile {
    inner: FaultyFile,
    max_read: Arc<AtomicUsize>,
}

impl Storage for Counting {
    type File = CountingFile;
    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }
    fn open(&self, name: &str) -> io::Result<CountingFile> {
        Ok(CountingFile {
            inner: self.inner.open(name)?,
            max_read: self.max_read.clone(),
        })
    }
    fn create(&self, name: &str) -> io::Result<CountingFile> {
        Ok(CountingFile {
            inner: self.inner.create(name)?,
            max_read: self.max_read.clone(),
        })
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }
    fn sync_dir(&self) -> io::Result<()> {
        self.inner.sync_dir()
    }
}

impl StorageFile for CountingFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.max_read.fetch_max(buf.len(), Ordering::SeqCst);
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.inner.write_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
}

const SEGMENT: u64 = 16 * 1024;
const RECORD_MAX: usize = 512;

fn config(mode: RecoveryMode) -> WalConfig {
    WalConfig::builder()
        .segment_bytes_max(SEGMENT)
        .record_bytes_max(RECORD_MAX)
        .sync_policy(SyncPolicy::Manual)
        .recovery_mode(mode)
        .build()
        .unwrap()
}

/// The largest read allowed: one window, which is the smaller of 1 MiB and the file, or
/// one maximum-size record.
fn read_bound() -> usize {
    (SEGMENT as usize).clamp(RECORD_MAX + format::RECORD_HEADER_BYTES, 1 << 20)
}

/// A segment image: header (generation 1) and records `first..first+n` of 40 bytes.
fn image(first: u64, n: u64) -> Vec<u8> {
    let header = SegmentHeader {
        first: LogIndex::new(first),
        generation: 1,
        created_ms: 0,
        flags: FLAG_BASE,
    };
    let mut out = header.encode().to_vec();
    for i in (0..n).map(|k| first + k) {
        encode_record(
            &mut out,
            LogIndex::new(i),
            format::tag_of(1),
            1,
            &[i as u8; 40],
        );
    }
    out
}

fn disk_with(name_first: u64, bytes: &[u8]) -> Counting {
    let disk = FaultyStorage::new(1);
    disk.put_durable(&format::segment_name(LogIndex::new(name_first)), bytes);
    Counting {
        inner: disk,
        max_read: Arc::new(AtomicUsize::new(0)),
    }
}

fn open(
    disk: &Counting,
    mode: RecoveryMode,
) -> Result<(Wal<Counting>, synod_wal::RecoveryReport), WalError> {
    let r = Wal::open(disk.clone(), config(mode));
    assert!(
        disk.max_read.load(Ordering::SeqCst) <= read_bound(),
        "a read of {} bytes",
        disk.max_read.load(Ordering::SeqCst)
    );
    r
}

/// Appends a record header with the given length field (tag of generation 1) and a bad checksum.
fn bad_header(out: &mut Vec<u8>, index: u64, len: u32) {
    out.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&format::tag_of(1).to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
}

#[test]
fn bad_lengths_at_the_tail_are_torn_tails() {
    for len in [
        0u32,
        1,
        40,
        RECORD_MAX as u32 + 1,
        u32::MAX,
        u32::MAX / 2,
        15_000,
    ] {
        let mut bytes = image(1, 10);
        bad_header(&mut bytes, 11, len);
        bytes.extend_from_slice(&[7u8; 100]);
        let disk = disk_with(1, &bytes);
        let (wal, report) = open(&disk, RecoveryMode::TolerateTornTail).unwrap();
        assert_eq!(wal.last_index(), LogIndex::new(10), "len {len}");
        assert!(report.torn_tail.is_some(), "len {len}");
        drop(wal);
        let disk = disk_with(1, &bytes);
        match open(&disk, RecoveryMode::Strict) {
            Err(WalError::Corrupt(c)) => assert_eq!(c.kind, CorruptionKind::TornTail),
            other => panic!("len {len}: strict mode accepted a torn tail: {other:?}"),
        }
    }
}

#[test]
fn a_record_running_past_the_end_of_the_file_is_a_torn_tail() {
    let mut bytes = image(1, 5);
    let mut rec = Vec::new();
    encode_record(
        &mut rec,
        LogIndex::new(6),
        format::tag_of(1),
        1,
        &[6u8; 400],
    );
    bytes.extend_from_slice(&rec[..200]);
    let disk = disk_with(1, &bytes);
    let (wal, report) = open(&disk, RecoveryMode::TolerateTornTail).unwrap();
    assert_eq!(wal.last_index(), LogIndex::new(5));
    assert!(report.torn_tail.is_some());
}

/// Regression (found by the `segment_scan` fuzz target): a file that ends inside the zero
/// padding after its last record (a write torn after the payload) holds that record whole;
/// the log refused to open (an I/O error, end of file, rewriting it), opened and failed to
/// read it back, or failed to dump it, as each read the padding too.
#[test]
fn a_file_ending_inside_the_last_records_padding_reads_back() {
    let mut bytes = image(1, 2);
    let mut rec = Vec::new();
    encode_record(&mut rec, LogIndex::new(3), format::tag_of(1), 1, &[3u8; 3]);
    assert_eq!(rec.len(), 32, "24 + 3 bytes, padded to 32");
    bytes.extend_from_slice(&rec[..27]);
    let dump = synod_wal::dump_storage(&disk_with(1, &bytes), LogIndex::new(0), 10).unwrap();
    assert_eq!(dump.records.len(), 3);
    assert_eq!(dump.records[2].preview, [3u8; 3]);
    for mode in [
        RecoveryMode::Strict,
        RecoveryMode::TolerateTornTail,
        RecoveryMode::SkipAndReport,
    ] {
        let disk = disk_with(1, &bytes);
        let (wal, _) = open(&disk, mode).unwrap();
        assert_eq!(wal.last_index(), LogIndex::new(3), "{mode:?}");
        assert_eq!(
            &wal.read(LogIndex::new(3)).unwrap()[..],
            &[3u8; 3],
            "{mode:?}"
        );
        // Appending after it and reopening keeps both.
        wal.append(bytes::Bytes::from_static(b"four")).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (wal, _) = open(&disk, mode).unwrap();
        assert_eq!(
            &wal.read(LogIndex::new(3)).unwrap()[..],
            &[3u8; 3],
            "{mode:?}"
        );
        assert_eq!(
            &wal.read(LogIndex::new(4)).unwrap()[..],
            b"four",
            "{mode:?}"
        );
    }
}

#[test]
fn zero_filled_and_garbage_tails() {
    // Zeros after the last record: a pre-written segment, a clean end.
    let mut bytes = image(1, 10);
    bytes.resize(SEGMENT as usize, 0);
    let disk = disk_with(1, &bytes);
    let (wal, report) = open(&disk, RecoveryMode::Strict).unwrap();
    assert_eq!(wal.last_index(), LogIndex::new(10));
    assert_eq!(report.torn_tail, None);
    assert_eq!(wal.append(b"next".to_vec()).unwrap(), LogIndex::new(11));
    // Garbage after the last record: cut off, valid records kept.
    let mut rng = 0x1234_5678u64;
    let mut bytes = image(1, 10);
    for _ in 0..3000 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        bytes.push(rng as u8);
    }
    let disk = disk_with(1, &bytes);
    let (wal, _) = open(&disk, RecoveryMode::TolerateTornTail).unwrap();
    assert_eq!(wal.last_index(), LogIndex::new(10));
    for i in 1..=10 {
        assert_eq!(&wal.read(LogIndex::new(i)).unwrap()[..], &[i as u8; 40][..]);
    }
}

#[test]
fn bad_magic_version_and_header_are_reported() {
    let mut bad_magic = image(1, 3);
    bad_magic[0] = b'X';
    let mut bad_version = image(1, 3);
    bad_version[8] = 9;
    let mut bad_crc = image(1, 3);
    bad_crc[33] ^= 1;
    let short = image(1, 0)[..20].to_vec();
    for (bytes, want) in [
        (bad_magic, "bad magic"),
        (bad_version, "unsupported format version 9"),
        (bad_crc, "bad header checksum"),
        (short, "shorter than a header"),
    ] {
        let disk = disk_with(1, &bytes);
        match open(&disk, RecoveryMode::TolerateTornTail) {
            Err(WalError::Corrupt(c)) => {
                assert_eq!(c.offset, 0);
                assert!(c.to_string().contains(want), "{c}");
            }
            other => panic!("{want}: {other:?}"),
        }
        let report = synod_wal::check_storage(&disk).unwrap();
        assert!(report.to_string().contains(want), "{report}");
    }
    // A header naming another first index than the file name.
    let disk = disk_with(5, &image(1, 3));
    assert!(
        matches!(open(&disk, RecoveryMode::TolerateTornTail), Err(WalError::Corrupt(c)) if matches!(c.kind, CorruptionKind::BadSegmentHeader(_)))
    );
}

#[test]
fn a_decreasing_index_is_corruption() {
    let mut bytes = image(1, 3);
    encode_record(&mut bytes, LogIndex::new(2), format::tag_of(1), 1, b"again");
    encode_record(&mut bytes, LogIndex::new(3), format::tag_of(1), 1, b"again");
    let disk = disk_with(1, &bytes);
    match open(&disk, RecoveryMode::TolerateTornTail) {
        Err(WalError::Corrupt(c)) => {
            assert_eq!(
                c.kind,
                CorruptionKind::IndexMismatch {
                    expected: LogIndex::new(4),
                    found: LogIndex::new(2)
                }
            );
            assert_eq!(c.offset, 48 + 3 * 64);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn fuzzed_segment_images_never_panic_or_overread() {
    let base: Vec<u8> = {
        let mut b = image(1, 60);
        b.resize(SEGMENT as usize / 2, 0);
        b
    };
    let second = image(61, 20);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut opened = 0;
    let mut refused = 0;
    for case in 0..1500 {
        let mut a = base.clone();
        let mut b = second.clone();
        for _ in 0..1 + next() % 4 {
            let target = if next() % 3 == 0 { &mut b } else { &mut a };
            if target.is_empty() {
                continue;
            }
            let at = (next() % target.len() as u64) as usize;
            match next() % 5 {
                0 => target[at] ^= 1 << (next() % 8),
                1 => target.truncate(at),
                2 => {
                    let end = (at + 1 + (next() % 64) as usize).min(target.len());
                    target[at..end].fill(0xff);
                }
                3 => {
                    let end = (at + 1 + (next() % 64) as usize).min(target.len());
                    target[at..end].fill(0);
                }
                _ => {
                    let end = (at + 4).min(target.len());
                    let v = (next() as u32).to_le_bytes();
                    target[at..end].copy_from_slice(&v[..end - at]);
                }
            }
        }
        let disk = FaultyStorage::new(case);
        disk.put_durable(&format::segment_name(LogIndex::new(1)), &a);
        disk.put_durable(&format::segment_name(LogIndex::new(61)), &b);
        let counting = Counting {
            inner: disk.clone(),
            max_read: Arc::new(AtomicUsize::new(0)),
        };
        let _ = synod_wal::check_storage(&counting);
        let _ = synod_wal::dump_storage(&counting, LogIndex::new(0), 1000).map(|d| d.to_string());
        for mode in [
            RecoveryMode::Strict,
            RecoveryMode::TolerateTornTail,
            RecoveryMode::SkipAndReport,
        ] {
            let copy = FaultyStorage::new(case);
            for name in disk.file_names() {
                copy.put_durable(&name, &disk.contents(&name).unwrap());
            }
            let counting = Counting {
                inner: copy,
                max_read: Arc::new(AtomicUsize::new(0)),
            };
            match open(&counting, mode) {
                Ok((wal, _)) => {
                    opened += 1;
                    for r in wal.range(wal.first_index(), wal.next_index()) {
                        let (i, bytes) = r.expect("recovered records read back");
                        assert_eq!(
                            &bytes[..],
                            &[i.get() as u8; 40][..],
                            "case {case}: a wrong record came back"
                        );
                    }
                }
                Err(WalError::Corrupt(_)) => refused += 1,
                Err(e) => panic!("case {case}: {e}"),
            }
        }
    }
    println!("fuzzed images: opened {opened}, refused as corrupt {refused}, panics 0");
    assert!(opened > 0 && refused > 0);
}

/// Regression: a segment whose records reach index u64::MAX made the scan compute the index
/// after it and overflow (a panic in debug builds); a spare or header claiming generation
/// u64::MAX overflowed the generation counter at open. Odd file names are left alone.
#[test]
fn indexes_and_generations_at_u64_max_and_odd_names_do_not_panic() {
    let first = u64::MAX - 2;
    let disk = disk_with(first, &image(first, 3));
    disk.inner
        .put_durable("18446744073709551615.spare", &[0u8; 64]);
    for odd in [
        "notes.tmp",
        "notes.spare",
        "1.spare",
        "00000000000000000001.wal.tmp.x",
        "99999999999999999999.wal",
        "0000000000000000001.wal",
        "-0000000000000000001.wal",
        "00000000000000000001.WAL",
    ] {
        disk.inner.put_durable(odd, b"not a segment");
    }
    for mode in [
        RecoveryMode::Strict,
        RecoveryMode::TolerateTornTail,
        RecoveryMode::SkipAndReport,
    ] {
        match open(&disk, mode) {
            Ok((wal, _)) => {
                assert!(wal.last_index().get() < u64::MAX);
                assert!(matches!(
                    wal.truncate_after(LogIndex::new(u64::MAX)),
                    Err(WalError::OutOfRange { .. })
                ));
                // Appending past the end of the index space is an error, not a panic.
                for _ in 0..4 {
                    if wal.append(b"x".to_vec()).is_err() {
                        break;
                    }
                }
            }
            Err(e) => assert!(matches!(e, WalError::Corrupt(_)), "{e}"),
        }
    }
    // Files that are not the log's are not touched.
    for odd in [
        "99999999999999999999.wal",
        "00000000000000000001.WAL",
        "notes.tmp",
        "notes.spare",
        "1.spare",
    ] {
        assert!(disk.inner.contents(odd).is_some(), "{odd} kept");
    }
}

/// One change to a segment image, for the property test below (synod-sim's `mutate`,
/// which the other crates use, depends on this crate).
#[derive(Debug, Clone)]
enum Damage {
    Flip(usize, u8),
    Truncate(usize),
    /// A copy of 1 to 64 bytes from the first position inserted at the second.
    Splice(usize, usize, usize),
    /// A 32-bit field (a record length, say) set to 0 or `u32::MAX`.
    Field(usize, u32),
}

fn damage() -> impl proptest::strategy::Strategy<Value = Damage> {
    use proptest::prelude::*;
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Damage::Flip(a, b)),
        any::<usize>().prop_map(Damage::Truncate),
        (any::<usize>(), 1usize..64, any::<usize>()).prop_map(|(a, n, b)| Damage::Splice(a, n, b)),
        (any::<usize>(), prop_oneof![Just(0u32), Just(u32::MAX)])
            .prop_map(|(a, v)| Damage::Field(a, v)),
    ]
}

impl Damage {
    fn apply(&self, bytes: &mut Vec<u8>) {
        let n = bytes.len().max(1);
        match *self {
            Damage::Flip(at, bit) if !bytes.is_empty() => bytes[at % n] ^= 1 << (bit % 8),
            Damage::Truncate(at) => bytes.truncate(at % n),
            Damage::Splice(from, len, to) if !bytes.is_empty() => {
                let from = from % n;
                let copy = bytes[from..(from + len).min(n)].to_vec();
                let to = to % n;
                bytes.splice(to..to, copy);
            }
            Damage::Field(at, value) if bytes.len() >= 4 => {
                // Record fields sit at multiples of 4 from an aligned record start.
                let at = (at % (bytes.len() - 3)) & !3;
                bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
            _ => {}
        }
    }
}

/// A disk holding `files`, each the segment of the index it names.
fn disk_of(files: &[(u64, Vec<u8>)]) -> Counting {
    let disk = disk_with(files[0].0, &files[0].1);
    for (first, bytes) in &files[1..] {
        disk.inner
            .put_durable(&format::segment_name(LogIndex::new(*first)), bytes);
    }
    disk
}

/// Opens the log on `disk` in `mode` and returns its records, checking every read's size.
fn recovered(disk: &Counting, mode: RecoveryMode) -> Option<Vec<(u64, Vec<u8>)>> {
    let (wal, _) = open(disk, mode).ok()?;
    let records = wal
        .range(wal.first_index(), wal.next_index())
        .map(|r| {
            let (i, bytes) = r.expect("a record the log reports reads back");
            (i.get(), bytes.to_vec())
        })
        .collect();
    assert!(disk.max_read.load(Ordering::SeqCst) <= read_bound());
    Some(records)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Damaged and random segment images: recovery in each mode opens a log of records
    /// that are each the one written at their index, or refuses it; no read is larger
    /// than the bound whatever a length field says; recovering again changes nothing.
    #[test]
    fn damaged_and_random_segments_recover_written_records_or_refuse(
        damages in proptest::collection::vec(damage(), 1..4),
        second in proptest::prelude::any::<bool>(),
        random in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
    ) {
        let mut files = vec![(1, image(1, 12))];
        if second {
            files.push((13, image(13, 5)));
        }
        let victim = damages.len() % files.len();
        for d in &damages {
            d.apply(&mut files[victim].1);
        }
        let mut garbage = image(1, 0);
        garbage.extend_from_slice(&random);
        for files in [files, vec![(1, garbage)]] {
            for mode in [
                RecoveryMode::Strict,
                RecoveryMode::TolerateTornTail,
                RecoveryMode::SkipAndReport,
            ] {
                let disk = disk_of(&files);
                let _ = synod_wal::check_storage(&disk);
                let Some(records) = recovered(&disk, mode) else {
                    continue;
                };
                for (i, bytes) in &records {
                    proptest::prop_assert_eq!(bytes, &vec![*i as u8; 40]);
                }
                proptest::prop_assert_eq!(recovered(&disk, mode), Some(records));
            }
        }
    }
}
