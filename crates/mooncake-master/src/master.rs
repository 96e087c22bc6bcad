//! `Master`: the core behind a lock, with the clock, metrics and the periodic tick;
//! usable in-process as an `Arc<dyn MasterApi>`.

use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use mooncake_store::{
    BatchResult, ClientId, DrainMove, ErrorCode, MasterApi, PingReply, ProtocolVersion,
    ReplicaDescriptor, ReplicaList, ReplicateConfig, Segment, SegmentId, TaskAssignment, TaskId,
    TaskInfo, MAX_BATCH_SIZE,
};
use parking_lot::Mutex;

use crate::core::{DrainJobView, MasterCore, SegmentStatus, TickReport};
use crate::metrics::{Metrics, Op};
use crate::MasterConfig;

/// The master: thread-safe, cheap to share (`Arc`).
#[derive(Debug)]
pub struct Master {
    core: Mutex<MasterCore>,
    metrics: Metrics,
    version: ProtocolVersion,
}

impl Master {
    /// A master with an empty state. Its view version is the start time in ms, so clients
    /// notice a restart.
    pub fn new(config: MasterConfig) -> Arc<Self> {
        Self::with_version(config, ProtocolVersion::CURRENT)
    }

    /// The same, speaking another protocol version (for upgrade tests).
    pub fn with_version(config: MasterConfig, version: ProtocolVersion) -> Arc<Self> {
        let view = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(1);
        Arc::new(Self {
            core: Mutex::new(MasterCore::new(config, view)),
            metrics: Metrics::default(),
            version,
        })
    }

    /// Runs the periodic work once (client expiry, abandoned puts, eviction).
    pub fn tick(&self) -> TickReport {
        let report = self.core.lock().tick(Instant::now());
        for c in &report.expired_clients {
            tracing::info!(
                client = format!("{:x}", c.0),
                action = "client_expired",
                "client expired; its segments are unmounted"
            );
        }
        if report.evicted > 0 {
            tracing::debug!(evicted = report.evicted, "eviction pass");
        }
        report
    }

    /// Until `shutdown` completes: checks eviction every `period` (Mooncake's eviction
    /// thread runs every 10 ms) and runs the full [`Master::tick`] about once a second
    /// (client monitor, abandoned puts).
    pub async fn run_ticker(
        self: Arc<Self>,
        period: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let per_second =
            (Duration::from_secs(1).as_nanos() / period.as_nanos().max(1)).max(1) as u64;
        let mut n = 0u64;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = &mut shutdown => return,
            }
            n += 1;
            if n.is_multiple_of(per_second) {
                self.tick();
            } else {
                self.core.lock().evict_if_needed(Instant::now());
            }
            // Drain jobs are scheduled twice a second, as in Mooncake.
            if n.is_multiple_of((per_second / 2).max(1)) {
                self.core
                    .lock()
                    .process_drain_jobs(Instant::now(), wall_ms());
            }
        }
    }

    /// The request counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Keys of every complete object.
    pub fn keys(&self) -> Vec<String> {
        self.core.lock().keys()
    }

    /// The replicas of a key as JSON lines, without granting a lease (`/query_key`).
    pub fn query_key(&self, key: &str) -> Option<String> {
        let list = self.core.lock().peek_replicas(key)?;
        let mut out = String::new();
        for r in list {
            let _ = writeln!(
                out,
                "{{\"buffer_address\":{},\"size\":{},\"transport_endpoint\":\"{}\",\"segment\":\"{}\"}}",
                r.buffer_address, r.size, r.transport_endpoint, r.segment_name
            );
        }
        Some(out)
    }

    /// Names of mounted segments.
    pub fn segment_names(&self) -> Vec<String> {
        let core = self.core.lock();
        core.segment_usage()
            .into_iter()
            .map(|(n, _, _)| n)
            .filter(|n| core.segment_status(n) == Ok(SegmentStatus::Ok))
            .collect()
    }

    /// Starts a drain job (`POST /api/v1/drain_jobs`).
    pub fn create_drain_job(
        &self,
        segments: &[String],
        targets: &[String],
        max_concurrency: u64,
    ) -> Result<TaskId, ErrorCode> {
        let r = self
            .core
            .lock()
            .create_drain_job(segments, targets, max_concurrency, wall_ms());
        if let Ok(id) = &r {
            tracing::info!(job = ?id, ?segments, "drain job created");
        }
        r
    }

    /// A drain job's state.
    pub fn query_drain_job(&self, id: TaskId) -> Result<DrainJobView, ErrorCode> {
        self.core.lock().query_drain_job(id)
    }

    /// Cancels a drain job.
    pub fn cancel_drain_job(&self, id: TaskId) -> Result<(), ErrorCode> {
        self.core.lock().cancel_drain_job(id, wall_ms())
    }

    /// A mounted segment's status.
    pub fn segment_status(&self, name: &str) -> Result<SegmentStatus, ErrorCode> {
        self.core.lock().segment_status(name)
    }

    /// Prometheus text of every gauge and counter (Mooncake's names).
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        {
            let core = self.core.lock();
            let stats = core.eviction_stats();
            let gauges = [
                ("master_allocated_bytes", core.allocated()),
                ("master_total_capacity_bytes", core.capacity()),
                ("master_key_count", core.key_count() as u64),
                (
                    "master_soft_pin_key_count",
                    core.soft_pin_key_count() as u64,
                ),
                ("master_active_clients", core.active_clients() as u64),
            ];
            for (name, v) in gauges {
                let _ = writeln!(out, "# TYPE {name} gauge\n{name} {v}");
            }
            for (seg, cap, used) in core.segment_usage() {
                let _ = writeln!(out, "segment_allocated_bytes{{segment=\"{seg}\"}} {used}");
                let _ = writeln!(
                    out,
                    "segment_total_capacity_bytes{{segment=\"{seg}\"}} {cap}"
                );
            }
            let counters = [
                ("master_successful_evictions_total", stats.successful_passes),
                ("master_attempted_evictions_total", stats.attempted_passes),
                ("master_evicted_key_count", stats.evicted_keys),
                ("master_evicted_size_bytes", stats.evicted_bytes),
            ];
            for (name, v) in counters {
                let _ = writeln!(out, "# TYPE {name} counter\n{name} {v}");
            }
        }
        self.metrics.render(&mut out);
        out
    }

    fn count<T>(&self, op: Op, r: Result<T, ErrorCode>) -> Result<T, ErrorCode> {
        self.metrics.record(op, 1, u64::from(r.is_err()));
        r
    }

    /// Runs `f` for every item under one lock acquisition and one clock reading, and
    /// counts the calls (the batch RPCs are one critical section, not one per key).
    fn batch<I, T>(
        &self,
        op: Op,
        items: &[I],
        mut f: impl FnMut(&mut MasterCore, &I, Instant) -> Result<T, ErrorCode>,
    ) -> BatchResult<T> {
        check_batch(items.len())?;
        let now = Instant::now();
        let rs = {
            let mut core = self.core.lock();
            items.iter().map(|i| f(&mut core, i, now)).collect()
        };
        self.count_batch(op, rs)
    }

    fn count_batch<T>(&self, op: Op, rs: Vec<Result<T, ErrorCode>>) -> BatchResult<T> {
        let failed = rs.iter().filter(|r| r.is_err()).count() as u64;
        self.metrics.record(op, rs.len() as u64, failed);
        self.metrics.record_batch(op, rs.len() as u64);
        Ok(rs)
    }
}

/// Refuses a batch of more than [`MAX_BATCH_SIZE`] items, loudly.
fn check_batch(len: usize) -> Result<(), ErrorCode> {
    if len > MAX_BATCH_SIZE {
        tracing::warn!(
            items = len,
            limit = MAX_BATCH_SIZE,
            "refused a batch call larger than the limit"
        );
        return Err(ErrorCode::InvalidParams);
    }
    Ok(())
}

#[async_trait]
impl MasterApi for Master {
    async fn connect(&self, client: ProtocolVersion) -> Result<ProtocolVersion, ErrorCode> {
        if !self.version.accepts(client) {
            self.metrics
                .version_rejections
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(%client, master = %self.version, "refused a client of an incompatible protocol version");
            return Err(ErrorCode::InvalidVersion);
        }
        Ok(self.version)
    }

    async fn mount_segment(&self, client: ClientId, segment: Segment) -> Result<(), ErrorCode> {
        let r = self
            .core
            .lock()
            .mount_segment(client, segment, Instant::now());
        self.count(Op::MountSegment, r)
    }

    async fn remount_segments(
        &self,
        client: ClientId,
        segments: Vec<Segment>,
    ) -> Result<(), ErrorCode> {
        let r = self
            .core
            .lock()
            .remount_segments(client, segments, Instant::now());
        self.count(Op::RemountSegment, r)
    }

    async fn unmount_segment(&self, client: ClientId, segment: SegmentId) -> Result<(), ErrorCode> {
        let r = self.core.lock().unmount_segment(client, segment);
        self.count(Op::UnmountSegment, r)
    }

    async fn ping(&self, client: ClientId) -> Result<PingReply, ErrorCode> {
        let r = self.core.lock().ping(client, Instant::now());
        self.count(Op::Ping, Ok(r))
    }

    async fn exist_key(&self, key: &str) -> Result<bool, ErrorCode> {
        let r = self.core.lock().exist_key(key, Instant::now());
        self.count(Op::ExistKey, Ok(r))
    }

    async fn batch_exist_key(&self, keys: &[String]) -> BatchResult<bool> {
        self.batch(
            Op::ExistKey,
            keys,
            |core, k, now| Ok(core.exist_key(k, now)),
        )
    }

    async fn get_replica_list(&self, key: &str) -> Result<ReplicaList, ErrorCode> {
        let r = self.core.lock().get_replica_list(key, Instant::now());
        self.count(Op::GetReplicaList, r)
    }

    async fn batch_get_replica_list(&self, keys: &[String]) -> BatchResult<ReplicaList> {
        self.batch(Op::GetReplicaList, keys, |core, k, now| {
            core.get_replica_list(k, now)
        })
    }

    async fn put_start(
        &self,
        client: ClientId,
        key: &str,
        size: u64,
        config: &ReplicateConfig,
    ) -> Result<Vec<ReplicaDescriptor>, ErrorCode> {
        let r = self
            .core
            .lock()
            .put_start(client, key, size, config, Instant::now());
        self.count(Op::PutStart, r)
    }

    async fn batch_put_start(
        &self,
        client: ClientId,
        items: &[(String, u64)],
        config: &ReplicateConfig,
    ) -> BatchResult<Vec<ReplicaDescriptor>> {
        self.batch(Op::PutStart, items, |core, (k, n), now| {
            core.put_start(client, k, *n, config, now)
        })
    }

    async fn put_end(&self, client: ClientId, key: &str) -> Result<(), ErrorCode> {
        let r = self.core.lock().put_end(client, key, Instant::now());
        self.count(Op::PutEnd, r)
    }

    async fn batch_put_end(&self, client: ClientId, keys: &[String]) -> BatchResult<()> {
        self.batch(Op::PutEnd, keys, |core, k, now| {
            core.put_end(client, k, now)
        })
    }

    async fn put_revoke(&self, client: ClientId, key: &str) -> Result<(), ErrorCode> {
        let r = self.core.lock().put_revoke(client, key);
        self.count(Op::PutRevoke, r)
    }

    async fn batch_put_revoke(&self, client: ClientId, keys: &[String]) -> BatchResult<()> {
        self.batch(Op::PutRevoke, keys, |core, k, _| core.put_revoke(client, k))
    }

    async fn upsert_start(
        &self,
        client: ClientId,
        key: &str,
        size: u64,
        config: &ReplicateConfig,
    ) -> Result<Vec<ReplicaDescriptor>, ErrorCode> {
        let r = self
            .core
            .lock()
            .upsert_start(client, key, size, config, Instant::now());
        self.count(Op::UpsertStart, r)
    }

    async fn remove(&self, key: &str, force: bool) -> Result<(), ErrorCode> {
        let r = self.core.lock().remove(key, force, Instant::now());
        self.count(Op::Remove, r)
    }

    async fn batch_remove(&self, keys: &[String], force: bool) -> BatchResult<()> {
        self.batch(Op::Remove, keys, |core, k, now| core.remove(k, force, now))
    }

    async fn remove_all(&self, force: bool) -> Result<u64, ErrorCode> {
        let r = self.core.lock().remove_all(force, Instant::now());
        self.count(Op::RemoveAll, Ok(r))
    }

    async fn drain_segment_start(
        &self,
        client: ClientId,
        segment: SegmentId,
    ) -> Result<Vec<DrainMove>, ErrorCode> {
        let r = self.core.lock().drain_start(client, segment);
        if let Ok(moves) = &r {
            tracing::info!(segment = ?segment, objects = moves.len(), "draining a segment");
        }
        r
    }

    async fn drain_segment_end(
        &self,
        client: ClientId,
        results: &[(String, bool)],
    ) -> BatchResult<()> {
        let r = self.core.lock().drain_end(client, results);
        let kept = r.iter().filter(|x| x.is_ok()).count();
        tracing::info!(kept, lost = r.len() - kept, "drained objects committed");
        Ok(r)
    }

    async fn batch_replica_clear(
        &self,
        client: ClientId,
        keys: &[String],
        segment: &str,
    ) -> Result<Vec<String>, ErrorCode> {
        check_batch(keys.len())?;
        let cleared = self
            .core
            .lock()
            .batch_replica_clear(client, keys, segment, Instant::now());
        self.count(Op::BatchReplicaClear, Ok(cleared))
    }

    async fn remove_by_regex(&self, pattern: &str, force: bool) -> Result<u64, ErrorCode> {
        let r = self
            .core
            .lock()
            .remove_by_regex(pattern, force, Instant::now());
        self.count(Op::RemoveByRegex, r)
    }

    async fn create_copy_task(&self, key: &str, targets: &[String]) -> Result<TaskId, ErrorCode> {
        let r = self
            .core
            .lock()
            .create_copy_task(key, targets, Instant::now(), wall_ms());
        self.count(Op::CreateCopyTask, r)
    }

    async fn create_move_task(
        &self,
        key: &str,
        source: &str,
        target: &str,
    ) -> Result<TaskId, ErrorCode> {
        let r = self
            .core
            .lock()
            .create_move_task(key, source, target, Instant::now(), wall_ms());
        self.count(Op::CreateMoveTask, r)
    }

    async fn query_task(&self, id: TaskId) -> Result<TaskInfo, ErrorCode> {
        let r = self.core.lock().query_task(id);
        self.count(Op::QueryTask, r)
    }

    async fn fetch_tasks(&self, client: ClientId) -> Result<Vec<TaskAssignment>, ErrorCode> {
        let tasks = self
            .core
            .lock()
            .fetch_tasks(client, Instant::now(), wall_ms());
        self.count(Op::FetchTasks, Ok(tasks))
    }

    async fn finish_task(
        &self,
        client: ClientId,
        id: TaskId,
        copied: bool,
        message: &str,
    ) -> Result<(), ErrorCode> {
        let r =
            self.core
                .lock()
                .finish_task(client, id, copied, message, Instant::now(), wall_ms());
        self.count(Op::UpdateTask, r)
    }
}

/// Unix time in ms.
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
