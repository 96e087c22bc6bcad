//! The master's pure cores: the offset allocator and the object-metadata core.
#![allow(missing_docs)]

use std::time::Instant;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mooncake_master::binary::{decode_changes, encode_changes, BatchKind};
use mooncake_master::{
    Change, DurableState, MasterConfig, MasterCore, ObjectRecord, ReplicaRecord,
};
use mooncake_store::allocator::OffsetAllocator;
use mooncake_store::{ClientId, Pin, ReplicateConfig, Segment, SegmentId};

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
    // A small put into a reserved slot (`put_reserved`: commit, then place and lend the
    // next slot), as a 4 KiB put or each key of a `put_batch` costs the master.
    let mut slots = core
        .reserve_slots(ClientId(2), 4096, 1, now)
        .expect("reserve");
    let mut r = 0usize;
    c.bench_function("core_put_reserved_remove", |b| {
        b.iter(|| {
            let k = &keys[r % keys.len()];
            r += 1;
            let slot = slots.pop().expect("a slot");
            let next = core
                .put_reserved(ClientId(2), k, slot.id, 4096, &cfg, now)
                .expect("put_reserved");
            slots.extend(next);
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

/// One replicated call of a 32-key batch put: the leader encodes its changes, each standby
/// decodes and applies them (to a state of 100,000 objects), in JSON and in the binary
/// encoding the leader sends standbys that read it.
fn replication(c: &mut Criterion) {
    let batch = |n: usize| -> Vec<Change> {
        (0..32)
            .map(|i| {
                Change::Object(ObjectRecord {
                    key: format!("store-bench-4KiB-put_batch-{n:08}-{i:02}"),
                    size: 4096,
                    version: (n * 32 + i) as u64,
                    pin: Pin::None,
                    soft_pin_ttl_ms: 0,
                    owner: ClientId(0x1234_5678_9abc_def0_1234_5678_9abc_def0),
                    checksum: None,
                    replicas: vec![ReplicaRecord {
                        segment: SegmentId(0xfeed_0000_0000_0000_0000_0000_0000_0001),
                        offset: ((n * 32 + i) as u64) << 12,
                    }],
                })
            })
            .collect()
    };
    let changes = batch(0);
    c.bench_function("replication_encode_32_json", |b| {
        b.iter(|| serde_json::to_vec(black_box(&changes)).expect("json"))
    });
    let mut out = Vec::new();
    c.bench_function("replication_encode_32_binary", |b| {
        b.iter(|| {
            out.clear();
            encode_changes(BatchKind::Batch, 1, black_box(&changes), &mut out);
        })
    });
    let json = serde_json::to_vec(&changes).expect("json");
    c.bench_function("replication_decode_32_json", |b| {
        b.iter(|| serde_json::from_slice::<Vec<Change>>(black_box(&json)).expect("decode"))
    });
    c.bench_function("replication_decode_32_binary", |b| {
        b.iter(|| decode_changes(black_box(&out)).expect("decode"))
    });
    let mut state: DurableState = (0..3125).flat_map(batch).collect();
    let batches: Vec<Vec<Change>> = (3125..3125 + 1000).map(batch).collect();
    let mut n = 0usize;
    c.bench_function("replication_apply_32_to_100k", |b| {
        b.iter_batched(
            || {
                n += 1;
                batches[n % batches.len()].clone()
            },
            |changes| changes.into_iter().for_each(|c| state.apply(c)),
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, allocator, core, replication);
criterion_main!(benches);
