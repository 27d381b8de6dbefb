//! Criterion micro-benchmarks: encoding and checking one record, in nanoseconds.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use synod_wal::LogIndex;
use synod_wal::format::{check_record, encode_record};

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    for size in [128usize, 4096] {
        let payload = vec![0x5au8; size];
        group.throughput(Throughput::Elements(1));
        let mut buf = Vec::with_capacity(size + 64);
        group.bench_function(format!("encode_{size}b"), |b| {
            b.iter(|| {
                buf.clear();
                encode_record(
                    &mut buf,
                    LogIndex::new(42),
                    7,
                    1,
                    std::hint::black_box(&payload),
                );
                std::hint::black_box(buf.len())
            });
        });
        let mut frame = Vec::new();
        encode_record(&mut frame, LogIndex::new(42), 7, 1, &payload);
        group.bench_function(format!("decode_{size}b"), |b| {
            b.iter(|| std::hint::black_box(check_record(std::hint::black_box(&frame))).is_some());
        });
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
