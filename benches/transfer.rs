//! Loopback transfers between two engines in one process (real sockets on 127.0.0.1).
#![allow(missing_docs)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mooncake_metadata::MemoryStore;
use mooncake_transfer_engine::{EngineConfig, Opcode, TransferEngine, TransferRequest};

fn transfer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let meta = Arc::new(MemoryStore::new());
    let (a, b) = rt.block_on(async {
        let a = TransferEngine::start(EngineConfig::new("127.0.0.1:1"), meta.clone())
            .await
            .expect("engine a");
        let b = TransferEngine::start(EngineConfig::new("127.0.0.1:2"), meta.clone())
            .await
            .expect("engine b");
        (a, b)
    });
    let (a_buf, b_buf, seg) = rt.block_on(async {
        let a_buf = a
            .allocate_buffer(64 << 20, "cpu:0")
            .await
            .expect("buffer a");
        let b_buf = b
            .allocate_buffer(64 << 20, "cpu:0")
            .await
            .expect("buffer b");
        let seg = a.open_segment("127.0.0.1:2").await.expect("open");
        (a_buf, b_buf, seg)
    });
    let mut group = c.benchmark_group("loopback_batch32");
    group.sample_size(20);
    for block in [4096u64, 65_536, 1 << 20] {
        for opcode in [Opcode::Read, Opcode::Write] {
            let reqs: Vec<TransferRequest> = (0..32)
                .map(|i| TransferRequest {
                    opcode,
                    source: a_buf.addr() + i * block,
                    target: seg,
                    target_offset: b_buf.addr() + i * block,
                    length: block,
                })
                .collect();
            group.throughput(Throughput::Bytes(32 * block));
            group.bench_function(format!("{opcode:?}/{}KiB", block / 1024), |bench| {
                bench.iter(|| rt.block_on(a.transfer(&reqs)).expect("transfer"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, transfer);
criterion_main!(benches);
