//! Criterion micro-benchmarks of the framing codec (nanoseconds per operation): encoding an
//! envelope, framing a batch, and decoding a batch frame back into envelopes.

#![allow(missing_docs)] // criterion_group! generates undocumented functions.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use synod_transport::frame::{
    Envelope, FrameDecoder, FrameKind, MessageKind, begin_frame, decode_envelopes, finish_frame,
};
use synod_transport::{CorrelationId, NodeId};

fn envelope(n: u64) -> Envelope {
    Envelope {
        correlation: CorrelationId(n),
        kind: MessageKind::Request,
        from: NodeId::new(2),
        to: NodeId::new(1),
        payload: Bytes::from_static(&[7; 64]),
    }
}

fn batch_frame(messages: u64) -> Vec<u8> {
    let mut wire = Vec::new();
    let start = begin_frame(&mut wire);
    for n in 0..messages {
        envelope(n).encode_into(&mut wire);
    }
    finish_frame(&mut wire, start, FrameKind::Messages, 1 << 20).unwrap();
    wire
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_envelope_64b", |b| {
        let e = envelope(12345);
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            out.clear();
            black_box(&e).encode_into(&mut out);
            black_box(out.len())
        });
    });
    group.throughput(Throughput::Elements(64));
    group.bench_function("frame_batch_64x64b", |b| {
        b.iter(|| black_box(batch_frame(64)));
    });
    let wire = batch_frame(64);
    group.bench_function("decode_batch_64x64b", |b| {
        b.iter(|| {
            let mut decoder = FrameDecoder::new(1 << 20);
            decoder.extend(black_box(&wire));
            let frame = decoder.next_frame().unwrap().unwrap();
            black_box(decode_envelopes(&frame.payload).unwrap().len())
        });
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
