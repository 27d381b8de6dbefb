//! Fuzz target: recovery (`Wal::open` in each recovery mode), `check_storage` and
//! `dump_storage` on arbitrary segment files, in synod-wal's in-memory `FaultyStorage`.
//!
//! The first byte chooses the recovery mode and how the rest becomes segment files:
//!
//! - raw (bit 7 set): the bytes are the first segment file, after a valid segment header if
//!   bit 6 is set;
//! - built (bit 7 clear): the bytes after a 4-byte edit spec are records (a length byte,
//!   then the payload), written as valid records into one segment, or two if bit 6 is set;
//!   then one edit (a bit flip, a truncation, a 32-bit field set to 0 or `u32::MAX`, a
//!   byte overwritten) is applied at the offset the spec gives, so the scan meets valid
//!   checksums and damage in every place.
//!
//! Checks: nothing panics and nothing is read or allocated past the bounds (run with
//! `-malloc_limit_mb`); a log that opens reads back every record it reports; a built log
//! returns a prefix of the records written (one edit of at most 32 bits can never pass the
//! CRC-32 check); opening again returns the same records. Run from `wal/fuzz` with
//! `cargo fuzz run segment_scan`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use synod_wal::format::{FLAG_BASE, SegmentHeader, encode_record, segment_name, tag_of};
use synod_wal::testing::FaultyStorage;
use synod_wal::{LogIndex, RecoveryMode, SyncPolicy, Wal, WalConfig};

const SEGMENT_BYTES: u64 = 64 << 10;
const RECORD_BYTES_MAX: usize = 4096;

fn header(first: u64, flags: u32) -> Vec<u8> {
    SegmentHeader {
        first: LogIndex::new(first),
        generation: 1,
        created_ms: 0,
        flags,
    }
    .encode()
    .to_vec()
}

/// Segment files (name, bytes) and the payloads written, from the fuzzer's bytes.
fn build(bytes: &[u8], two_segments: bool) -> (Vec<(String, Vec<u8>)>, Vec<Vec<u8>>) {
    let (edit, mut rest) = bytes.split_at(bytes.len().min(4));
    let mut payloads = Vec::new();
    let mut lags = Vec::new();
    while let Some((&len, tail)) = rest.split_first() {
        let (payload, tail) = tail.split_at(usize::from(len % 64).min(tail.len()));
        payloads.push(payload.to_vec());
        lags.push(u32::from(len >> 6));
        rest = tail;
    }
    let split = if two_segments {
        payloads.len() / 2
    } else {
        payloads.len()
    };
    let mut files = vec![(segment_name(LogIndex::new(1)), header(1, FLAG_BASE))];
    for (i, payload) in payloads.iter().enumerate() {
        if i == split && i > 0 {
            let first = i as u64 + 1;
            files.push((segment_name(LogIndex::new(first)), header(first, 0)));
        }
        let index = LogIndex::new(i as u64 + 1);
        let file = &mut files.last_mut().expect("one file").1;
        encode_record(file, index, tag_of(1), lags[i], payload);
    }
    if let [kind, lo, hi, value] = *edit {
        let which = usize::from(value) % files.len();
        let target = &mut files[which].1;
        let at = usize::from(u16::from_le_bytes([lo, hi])) % target.len();
        let end = (at + 4).min(target.len());
        match kind % 6 {
            1 => target[at] ^= 1 << (value % 8),
            2 => target.truncate(at),
            3 => target[at..end].fill(0),
            4 => target[at..end].fill(0xff),
            5 => target[at] = value,
            _ => {}
        }
    }
    (files, payloads)
}

fn config(mode: RecoveryMode) -> WalConfig {
    WalConfig::builder()
        .segment_bytes_max(SEGMENT_BYTES)
        .record_bytes_max(RECORD_BYTES_MAX)
        .sync_policy(SyncPolicy::Manual)
        .recovery_mode(mode)
        .build()
        .expect("valid config")
}

/// Opens the log and reads every record back; `None` if it does not open.
fn recover(disk: &FaultyStorage, mode: RecoveryMode) -> Option<Vec<(u64, Vec<u8>)>> {
    let (wal, report) = Wal::open(disk.clone(), config(mode)).ok()?;
    let _ = format!("{report:?}");
    let records = wal
        .range(wal.first_index(), wal.next_index())
        .map(|r| {
            let (index, bytes) = r.expect("a record the log reports reads back");
            (index.get(), bytes.to_vec())
        })
        .collect();
    Some(records)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let mode = [
        RecoveryMode::Strict,
        RecoveryMode::TolerateTornTail,
        RecoveryMode::SkipAndReport,
    ][usize::from(control % 3)];
    let (files, payloads) = if control & 0x80 != 0 {
        let mut file = if control & 0x40 != 0 {
            header(1, FLAG_BASE)
        } else {
            Vec::new()
        };
        file.extend_from_slice(rest);
        (vec![(segment_name(LogIndex::new(1)), file)], None)
    } else {
        let (files, payloads) = build(rest, control & 0x40 != 0);
        (files, Some(payloads))
    };
    let disk = FaultyStorage::new(u64::from(control));
    for (name, bytes) in &files {
        disk.put_durable(name, bytes);
    }
    if let Ok(report) = synod_wal::check_storage(&disk) {
        let _ = report.to_string();
    }
    if let Ok(dump) = synod_wal::dump_storage(&disk, LogIndex::new(0), 64) {
        let _ = dump.to_string();
    }
    let Some(records) = recover(&disk, mode) else {
        return;
    };
    if let Some(payloads) = payloads {
        for (k, (index, bytes)) in records.iter().enumerate() {
            assert_eq!(*index, k as u64 + 1, "records are dense from 1");
            assert_eq!(
                Some(bytes),
                payloads.get(k),
                "record {index} is what was written"
            );
        }
    }
    // Recovery is idempotent: what one open kept, the next open returns again.
    assert_eq!(recover(&disk, mode), Some(records));
});
