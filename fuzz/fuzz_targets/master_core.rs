//! The master's sans-io state machine, `mooncake_master::MasterCore`, driven by a sequence
//! of arbitrary requests (every public request method: mount / remount / unmount, ping,
//! tick, put_start / upsert_start / put_end / put_revoke, exist_key, get_replica_list,
//! remove / remove_all / remove_by_regex / batch_replica_clear, drain_start / drain_end,
//! copy / move tasks, drain jobs, eviction) with arbitrary replica numbers, sizes, keys,
//! segment sizes and names, and an arbitrary (valid) `MasterConfig`. After every request
//! `MasterCore::check_invariants` must hold, and the answers must be consistent with the
//! request (replica count, sizes, distinct segment names).
#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use common::*;
use libfuzzer_sys::fuzz_target;
use mooncake_master::{MasterConfig, MasterCore};
use mooncake_store::placement::PlacementStrategy;
use mooncake_store::TaskId;

#[derive(Debug, Arbitrary)]
struct FuzzConfig {
    strategy: u8,
    high_watermark: u8,
    eviction_ratio: u8,
    allow_evict_soft: bool,
    lease_ms: u16,
    client_ttl_ms: u16,
    discard_ms: u16,
    release_ms: u16,
    grace_ms: Option<u16>,
    seed: u64,
}

impl FuzzConfig {
    fn get(&self) -> MasterConfig {
        MasterConfig {
            default_kv_lease_ttl: Duration::from_millis(u64::from(self.lease_ms)),
            client_ttl: Duration::from_millis(u64::from(self.client_ttl_ms) + 1),
            put_start_discard_timeout: Duration::from_millis(u64::from(self.discard_ms)),
            put_start_release_timeout: Duration::from_millis(u64::from(self.release_ms)),
            eviction_high_watermark_ratio: f64::from(self.high_watermark) / 255.0,
            eviction_ratio: f64::from(self.eviction_ratio) / 255.0,
            allow_evict_soft_pinned_objects: self.allow_evict_soft,
            allocation_strategy: match self.strategy % 3 {
                0 => PlacementStrategy::Random,
                1 => PlacementStrategy::FreeRatioFirst,
                _ => PlacementStrategy::LocalFirst,
            },
            durable_segment_grace: self.grace_ms.map(|g| Duration::from_millis(u64::from(g))),
            seed: self.seed,
            ..MasterConfig::default()
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Op {
    Advance(u16),
    AdvanceLong(u8),
    Mount { client: u8, seg: SegSpec },
    Remount { client: u8, segs: Vec<SegSpec> },
    Unmount { client: u8, seg: u8 },
    Ping { client: u8 },
    Tick,
    EvictIfNeeded,
    Evict { target: Num },
    ExistKey { key: KeyChoice },
    GetReplicaList { key: KeyChoice },
    PutStart { client: u8, key: KeyChoice, size: Num, cfg: Cfg },
    UpsertStart { client: u8, key: KeyChoice, size: Num, cfg: Cfg },
    PutEnd { client: u8, key: KeyChoice },
    PutRevoke { client: u8, key: KeyChoice },
    Remove { key: KeyChoice, force: bool },
    RemoveAll { force: bool },
    RemoveByRegex { pattern: Pattern, force: bool },
    BatchReplicaClear { client: u8, keys: Vec<KeyChoice>, segment: NameChoice },
    DrainStart { client: u8, seg: u8 },
    DrainEnd { client: u8, results: Vec<(KeyChoice, bool)> },
    CreateCopyTask { key: KeyChoice, targets: Vec<NameChoice> },
    CreateMoveTask { key: KeyChoice, source: NameChoice, target: NameChoice },
    QueryTask { id: IdChoice },
    FetchTasks { client: u8 },
    FinishTask { client: u8, id: IdChoice, copied: bool, message: String },
    CreateDrainJob { segments: Vec<NameChoice>, targets: Vec<NameChoice>, max_concurrency: Num },
    QueryDrainJob { id: IdChoice },
    CancelDrainJob { id: IdChoice },
    ProcessDrainJobs,
    SegmentStatus { name: NameChoice },
    Peek { key: KeyChoice },
}

#[derive(Debug, Arbitrary)]
struct Input {
    config: FuzzConfig,
    view_version: i64,
    ops: Vec<Op>,
}

fn check_put(
    r: &Result<Vec<mooncake_store::ReplicaDescriptor>, mooncake_store::ErrorCode>,
    size: u64,
    replica_num: usize,
) {
    if let Ok(replicas) = r {
        assert!(!replicas.is_empty(), "a put succeeded with no replica");
        assert!(replicas.len() <= replica_num, "more replicas than asked for");
        let names: HashSet<&str> = replicas.iter().map(|r| r.segment_name.as_str()).collect();
        assert_eq!(names.len(), replicas.len(), "two replicas on one segment name");
        assert!(replicas.iter().all(|r| r.size == size));
    }
}

fuzz_target!(|input: Input| {
    let Ok(config) = input.config.get().validate() else {
        return;
    };
    let mut core = MasterCore::new(config, input.view_version);
    let start = Instant::now();
    let mut now = start;
    let mut ids: Vec<TaskId> = Vec::new();
    for op in input.ops.iter().take(128) {
        let wall_ms = now.duration_since(start).as_millis() as u64 + 1_700_000_000_000;
        match op {
            Op::Advance(ms) => now += Duration::from_millis(u64::from(*ms)),
            Op::AdvanceLong(min) => now += Duration::from_secs(60 * u64::from(*min)),
            Op::Mount { client: c, seg } => {
                let _ = core.mount_segment(client(*c), seg.get(), now);
            }
            Op::Remount { client: c, segs } => {
                let segs = segs.iter().take(8).map(SegSpec::get).collect();
                let _ = core.remount_segments(client(*c), segs, now);
            }
            Op::Unmount { client: c, seg } => {
                let _ = core.unmount_segment(client(*c), segment_id(*seg));
            }
            Op::Ping { client: c } => {
                let _ = core.ping(client(*c), now);
            }
            Op::Tick => {
                let _ = core.tick(now);
            }
            Op::EvictIfNeeded => {
                let _ = core.evict_if_needed(now);
            }
            Op::Evict { target } => {
                let _ = core.evict(target.get(), now);
            }
            Op::ExistKey { key } => {
                let _ = core.exist_key(&key.get(), now);
            }
            Op::GetReplicaList { key } => {
                if let Ok(list) = core.get_replica_list(&key.get(), now) {
                    assert!(!list.replicas.is_empty());
                    let size = list.size();
                    assert!(list.replicas.iter().all(|r| r.size == size));
                }
            }
            Op::PutStart { client: c, key, size, cfg } => {
                let cfg = cfg.get();
                let r = core.put_start(client(*c), &key.get(), size.get(), &cfg, now);
                check_put(&r, size.get(), cfg.replica_num);
            }
            Op::UpsertStart { client: c, key, size, cfg } => {
                let cfg = cfg.get();
                let r = core.upsert_start(client(*c), &key.get(), size.get(), &cfg, now);
                check_put(&r, size.get(), cfg.replica_num);
            }
            Op::PutEnd { client: c, key } => {
                let _ = core.put_end(client(*c), &key.get(), now);
            }
            Op::PutRevoke { client: c, key } => {
                let _ = core.put_revoke(client(*c), &key.get());
            }
            Op::Remove { key, force } => {
                let _ = core.remove(&key.get(), *force, now);
            }
            Op::RemoveAll { force } => {
                let _ = core.remove_all(*force, now);
            }
            Op::RemoveByRegex { pattern, force } => {
                let _ = core.remove_by_regex(&pattern.get(), *force, now);
            }
            Op::BatchReplicaClear { client: c, keys: k, segment } => {
                let k = keys(k);
                let cleared = core.batch_replica_clear(client(*c), &k, &segment.get(), now);
                assert!(cleared.len() <= k.len());
            }
            Op::DrainStart { client: c, seg } => {
                let _ = core.drain_start(client(*c), segment_id(*seg));
            }
            Op::DrainEnd { client: c, results } => {
                let results: Vec<(String, bool)> =
                    results.iter().take(64).map(|(k, b)| (k.get(), *b)).collect();
                let out = core.drain_end(client(*c), &results);
                assert_eq!(out.len(), results.len());
            }
            Op::CreateCopyTask { key, targets } => {
                if let Ok(id) = core.create_copy_task(&key.get(), &names(targets), now, wall_ms) {
                    ids.push(id);
                }
            }
            Op::CreateMoveTask { key, source, target } => {
                if let Ok(id) =
                    core.create_move_task(&key.get(), &source.get(), &target.get(), now, wall_ms)
                {
                    ids.push(id);
                }
            }
            Op::QueryTask { id } => {
                let _ = core.query_task(id.get(&ids));
            }
            Op::FetchTasks { client: c } => {
                let _ = core.fetch_tasks(client(*c), now, wall_ms);
            }
            Op::FinishTask { client: c, id, copied, message } => {
                let _ = core.finish_task(client(*c), id.get(&ids), *copied, message, now, wall_ms);
            }
            Op::CreateDrainJob { segments, targets, max_concurrency } => {
                if let Ok(id) = core.create_drain_job(
                    &names(segments),
                    &names(targets),
                    max_concurrency.get(),
                    wall_ms,
                ) {
                    ids.push(id);
                }
            }
            Op::QueryDrainJob { id } => {
                let _ = core.query_drain_job(id.get(&ids));
            }
            Op::CancelDrainJob { id } => {
                let _ = core.cancel_drain_job(id.get(&ids), wall_ms);
            }
            Op::ProcessDrainJobs => core.process_drain_jobs(now, wall_ms),
            Op::SegmentStatus { name } => {
                let _ = core.segment_status(&name.get());
            }
            Op::Peek { key } => {
                let k = key.get();
                let _ = core.peek_replicas(&k);
                let _ = core.lease_until(&k);
                let _ = core.contains(&k);
            }
        }
        if let Err(e) = core.check_invariants() {
            panic!("invariant broken after {op:?}: {e}");
        }
        assert!(core.allocated() <= core.capacity(), "allocated above capacity");
        let _ = core.keys();
        let _ = core.segment_usage();
        let _ = core.soft_pin_key_count();
        let _ = core.active_clients();
        let _ = core.key_count();
    }
});
