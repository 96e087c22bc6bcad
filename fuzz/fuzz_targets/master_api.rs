//! The in-process master, `mooncake_master::Master`, through its `MasterApi` (the calls the
//! gRPC server forwards from the network), including every batch form (batch_put_start,
//! batch_upsert_start, batch_put_end, batch_put_revoke, batch_exist_key,
//! batch_get_replica_list, batch_remove, batch_replica_clear, drain_segment_end), with
//! batches up to past `MAX_BATCH_SIZE`, plus the admin calls (`create_drain_job`,
//! `query_key`, `segment_names`, `render_metrics`). Time is the real clock.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;

use arbitrary::Arbitrary;
use common::*;
use libfuzzer_sys::fuzz_target;
use mooncake_master::{Master, MasterConfig};
use mooncake_store::{MasterApi, ProtocolVersion, TaskId, MAX_BATCH_SIZE};

/// Keys of a batch: a few chosen ones, or many generated ones (to cross the batch limit).
#[derive(Debug, Arbitrary)]
enum Batch {
    Few(Vec<KeyChoice>),
    Many(u32),
}

impl Batch {
    fn get(&self) -> Vec<String> {
        match self {
            Batch::Few(k) => keys(k),
            Batch::Many(n) => (0..(*n as usize % (MAX_BATCH_SIZE + 2)))
                .map(|i| KEYS[i % KEYS.len()].to_owned())
                .collect(),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Op {
    Connect { major: u32, minor: u32 },
    Mount { client: u8, seg: SegSpec },
    Remount { client: u8, segs: Vec<SegSpec> },
    Unmount { client: u8, seg: u8 },
    Ping { client: u8 },
    Tick,
    ExistKey { key: KeyChoice },
    BatchExistKey { keys: Batch },
    GetReplicaList { key: KeyChoice },
    BatchGetReplicaList { keys: Batch },
    PutStart { client: u8, key: KeyChoice, size: Num, cfg: Cfg },
    BatchPutStart { client: u8, items: Vec<(KeyChoice, Num)>, many: Option<u32>, cfg: Cfg },
    UpsertStart { client: u8, key: KeyChoice, size: Num, cfg: Cfg },
    BatchUpsertStart { client: u8, items: Vec<(KeyChoice, Num)>, cfg: Cfg },
    PutEnd { client: u8, key: KeyChoice },
    BatchPutEnd { client: u8, keys: Batch },
    PutRevoke { client: u8, key: KeyChoice },
    BatchPutRevoke { client: u8, keys: Batch },
    DrainStart { client: u8, seg: u8 },
    DrainEnd { client: u8, results: Vec<(KeyChoice, bool)> },
    Remove { key: KeyChoice, force: bool },
    BatchRemove { keys: Batch, force: bool },
    RemoveAll { force: bool },
    BatchReplicaClear { client: u8, keys: Batch, segment: NameChoice },
    RemoveByRegex { pattern: Pattern, force: bool },
    CreateCopyTask { key: KeyChoice, targets: Vec<NameChoice> },
    CreateMoveTask { key: KeyChoice, source: NameChoice, target: NameChoice },
    QueryTask { id: IdChoice },
    FetchTasks { client: u8 },
    FinishTask { client: u8, id: IdChoice, copied: bool, message: String },
    CreateDrainJob { segments: Vec<NameChoice>, targets: Vec<NameChoice>, max_concurrency: Num },
    QueryDrainJob { id: IdChoice },
    CancelDrainJob { id: IdChoice },
    Admin { key: KeyChoice, name: NameChoice },
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    })
}

fn batch_len<T>(r: &mooncake_store::BatchResult<T>, n: usize) {
    match r {
        Ok(v) => {
            assert!(n <= MAX_BATCH_SIZE, "a batch of {n} was accepted");
            assert_eq!(v.len(), n, "one result per item");
        }
        Err(_) => {}
    }
}

async fn run(master: Arc<Master>, ops: Vec<Op>) {
    let api: &dyn MasterApi = &*master;
    let mut ids: Vec<TaskId> = Vec::new();
    for op in ops.iter().take(64) {
        match op {
            Op::Connect { major, minor } => {
                let _ = api.connect(ProtocolVersion { major: *major, minor: *minor }).await;
            }
            Op::Mount { client: c, seg } => {
                let _ = api.mount_segment(client(*c), seg.get()).await;
            }
            Op::Remount { client: c, segs } => {
                let segs = segs.iter().take(8).map(SegSpec::get).collect();
                let _ = api.remount_segments(client(*c), segs).await;
            }
            Op::Unmount { client: c, seg } => {
                let _ = api.unmount_segment(client(*c), segment_id(*seg)).await;
            }
            Op::Ping { client: c } => {
                let _ = api.ping(client(*c)).await;
            }
            Op::Tick => {
                let _ = master.tick();
            }
            Op::ExistKey { key } => {
                let _ = api.exist_key(&key.get()).await;
            }
            Op::BatchExistKey { keys } => {
                let k = keys.get();
                batch_len(&api.batch_exist_key(&k).await, k.len());
            }
            Op::GetReplicaList { key } => {
                let _ = api.get_replica_list(&key.get()).await;
            }
            Op::BatchGetReplicaList { keys } => {
                let k = keys.get();
                batch_len(&api.batch_get_replica_list(&k).await, k.len());
            }
            Op::PutStart { client: c, key, size, cfg } => {
                let _ = api.put_start(client(*c), &key.get(), size.get(), &cfg.get()).await;
            }
            Op::BatchPutStart { client: c, items, many, cfg } => {
                let mut items: Vec<(String, u64)> =
                    items.iter().take(64).map(|(k, n)| (k.get(), n.get())).collect();
                if let Some(m) = many {
                    let n = *m as usize % (MAX_BATCH_SIZE + 2);
                    items.extend((0..n).map(|i| (format!("m{i}"), 1)));
                }
                let r = api.batch_put_start(client(*c), &items, &cfg.get()).await;
                batch_len(&r, items.len());
            }
            Op::UpsertStart { client: c, key, size, cfg } => {
                let _ = api.upsert_start(client(*c), &key.get(), size.get(), &cfg.get()).await;
            }
            Op::BatchUpsertStart { client: c, items, cfg } => {
                let items: Vec<(String, u64)> =
                    items.iter().take(64).map(|(k, n)| (k.get(), n.get())).collect();
                let r = api.batch_upsert_start(client(*c), &items, &cfg.get()).await;
                batch_len(&r, items.len());
            }
            Op::PutEnd { client: c, key } => {
                let _ = api.put_end(client(*c), &key.get()).await;
            }
            Op::BatchPutEnd { client: c, keys } => {
                let k = keys.get();
                batch_len(&api.batch_put_end(client(*c), &k).await, k.len());
            }
            Op::PutRevoke { client: c, key } => {
                let _ = api.put_revoke(client(*c), &key.get()).await;
            }
            Op::BatchPutRevoke { client: c, keys } => {
                let k = keys.get();
                batch_len(&api.batch_put_revoke(client(*c), &k).await, k.len());
            }
            Op::DrainStart { client: c, seg } => {
                let _ = api.drain_segment_start(client(*c), segment_id(*seg)).await;
            }
            Op::DrainEnd { client: c, results } => {
                let results: Vec<(String, bool)> =
                    results.iter().take(64).map(|(k, b)| (k.get(), *b)).collect();
                let r = api.drain_segment_end(client(*c), &results).await;
                batch_len(&r, results.len());
            }
            Op::Remove { key, force } => {
                let _ = api.remove(&key.get(), *force).await;
            }
            Op::BatchRemove { keys, force } => {
                let k = keys.get();
                batch_len(&api.batch_remove(&k, *force).await, k.len());
            }
            Op::RemoveAll { force } => {
                let _ = api.remove_all(*force).await;
            }
            Op::BatchReplicaClear { client: c, keys, segment } => {
                let k = keys.get();
                if let Ok(cleared) = api.batch_replica_clear(client(*c), &k, &segment.get()).await {
                    assert!(cleared.len() <= k.len());
                }
            }
            Op::RemoveByRegex { pattern, force } => {
                let _ = api.remove_by_regex(&pattern.get(), *force).await;
            }
            Op::CreateCopyTask { key, targets } => {
                if let Ok(id) = api.create_copy_task(&key.get(), &names(targets)).await {
                    ids.push(id);
                }
            }
            Op::CreateMoveTask { key, source, target } => {
                if let Ok(id) = api.create_move_task(&key.get(), &source.get(), &target.get()).await
                {
                    ids.push(id);
                }
            }
            Op::QueryTask { id } => {
                let _ = api.query_task(id.get(&ids)).await;
            }
            Op::FetchTasks { client: c } => {
                let _ = api.fetch_tasks(client(*c)).await;
            }
            Op::FinishTask { client: c, id, copied, message } => {
                let _ = api.finish_task(client(*c), id.get(&ids), *copied, message).await;
            }
            Op::CreateDrainJob { segments, targets, max_concurrency } => {
                if let Ok(id) =
                    master.create_drain_job(&names(segments), &names(targets), max_concurrency.get())
                {
                    ids.push(id);
                }
            }
            Op::QueryDrainJob { id } => {
                let _ = master.query_drain_job(id.get(&ids));
            }
            Op::CancelDrainJob { id } => {
                let _ = master.cancel_drain_job(id.get(&ids));
            }
            Op::Admin { key, name } => {
                let _ = master.query_key(&key.get());
                let _ = master.segment_names();
                let _ = master.segment_status(&name.get());
                let _ = master.keys();
                let _ = master.render_metrics();
            }
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let master = Master::new(MasterConfig::default());
    runtime().block_on(run(master, ops));
});
