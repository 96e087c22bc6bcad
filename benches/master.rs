//! The master's pure cores: the offset allocator and the object-metadata core.
#![allow(missing_docs)]

use std::time::Instant;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mooncake_master::{MasterConfig, MasterCore};
use mooncake_store::allocator::OffsetAllocator;
use mooncake_store::{ClientId, ReplicateConfig, Segment, SegmentId};

fn allocator(c: &mut Criterion) {
    let mut a = OffsetAllocator::new(16 << 30);
    let live: Vec<_> = (0..10_000).filter_map(|_| a.allocate(64 << 10)).collect();
    c.bench_function("allocator_alloc_free_64KiB_10k_live", |b| {
        b.iter(|| {
            let x = a.allocate(black_box(64 << 10)).expect("room");
            a.free(x.handle).expect("live handle");
        })
    });
    drop(live);
}

fn core(c: &mut Criterion) {
    let mut core = MasterCore::new(MasterConfig::default(), 1);
    let now = Instant::now();
    let seg = |id: u128| Segment {
        id: SegmentId(id),
        name: format!("127.0.0.1:{id}"),
        base: 1 << 40,
        size: 64 << 30,
        te_endpoint: format!("127.0.0.1:{id}"),
        protocol: "tcp".into(),
        host_id: "127.0.0.1".into(),
        durable: false,
    };
    core.remount_segments(ClientId(1), vec![seg(1), seg(2)], now)
        .expect("mount");
    let cfg = ReplicateConfig::default();
    let keys: Vec<String> = (0..100_000).map(|i| format!("key-{i}")).collect();
    let mut i = 0usize;
    c.bench_function("core_put_start_put_end_remove", |b| {
        b.iter(|| {
            let k = &keys[i % keys.len()];
            i += 1;
            core.put_start(ClientId(2), k, 4096, &cfg, now)
                .expect("put_start");
            core.put_end(ClientId(2), k, now).expect("put_end");
            core.remove(k, true, now).expect("remove");
        })
    });
    for k in &keys {
        core.put_start(ClientId(2), k, 4096, &cfg, now)
            .expect("put_start");
        core.put_end(ClientId(2), k, now).expect("put_end");
    }
    let mut j = 0usize;
    c.bench_function("core_get_replica_list_100k_keys", |b| {
        b.iter(|| {
            j += 1;
            core.get_replica_list(&keys[j % keys.len()], now)
                .expect("get")
        })
    });
}

criterion_group!(benches, allocator, core);
criterion_main!(benches);
