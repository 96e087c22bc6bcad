//! The transfer engine's pure cores: header and status codec, and remote-range validation.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mooncake_transfer_engine::codec::{Header, Opcode, ProtoVersion, Status};
use mooncake_transfer_engine::BufferRegistry;

fn codec(c: &mut Criterion) {
    let h = Header {
        size: 65_536,
        addr: 0x7f00_0000_0040,
        opcode: Opcode::Write,
        version: ProtoVersion::V2,
    };
    let bytes = h.encode();
    c.bench_function("header_encode", |b| b.iter(|| black_box(&h).encode()));
    c.bench_function("header_decode", |b| {
        b.iter(|| Header::decode(black_box(&bytes)))
    });
    let ok = Status::Ok.encode();
    c.bench_function("status_decode", |b| {
        b.iter(|| Status::decode(black_box(&ok)))
    });
    let mut reg = BufferRegistry::default();
    for i in 0..64u64 {
        reg.insert(0x1000_0000 + i * (1 << 24), 1 << 24, "cpu:0", i)
            .unwrap_or_default();
    }
    c.bench_function("registry_find_64_buffers", |b| {
        b.iter(|| {
            reg.find(
                black_box(0x1000_0000 + 37 * (1 << 24) + 4096),
                black_box(65_536),
            )
            .map(|e| e.value)
        })
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
