//! `Master`: the core behind a lock, with the clock, metrics and the periodic tick;
//! usable in-process as an `Arc<dyn MasterApi>`.

use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use mooncake_store::{
    BatchResult, ClientId, DrainMove, ErrorCode, MasterApi, PingReply, ProtocolVersion,
    ReplicaDescriptor, ReplicaList, ReplicateConfig, ReservedSlot, Segment, SegmentId,
    TaskAssignment, TaskId, TaskInfo, MAX_BATCH_SIZE,
};
use parking_lot::Mutex;

use crate::core::{DrainJobView, MasterCore, SegmentStatus, TickReport};
use crate::ha::Replicator;

mod disk;
pub(crate) mod gate;
mod guard;
mod render;

use crate::metrics::{Metrics, Op};
use crate::state::{StateDir, StateError};
use crate::{MasterConfig, StateConfig};
use guard::CoreGuard;
pub(crate) use guard::{deferring_waits, must_wait_for};

/// The master: thread-safe, cheap to share (`Arc`).
#[derive(Debug)]
pub struct Master {
    core: Mutex<MasterCore>,
    metrics: Metrics,
    version: ProtocolVersion,
    /// The state directory, if the master keeps its state across restarts.
    pub(crate) state: Option<StateDir>,
    /// The standbys this leader streams its changes to (HA), if any.
    pub(crate) repl: Option<Arc<Replicator>>,
    /// Wake-ups of disk-tier polls and of calls waiting for disk tasks.
    disk: disk::DiskSignals,
    /// Allocating calls wait until then (`master/gate.rs`).
    allocations_open: Instant,
}

impl Master {
    /// A master with an empty state. Its view version is the start time in ms, so clients
    /// notice a restart.
    pub fn new(config: MasterConfig) -> Arc<Self> {
        Self::with_version(config, ProtocolVersion::CURRENT)
    }

    /// The same, speaking another protocol version (for upgrade tests).
    pub fn with_version(config: MasterConfig, version: ProtocolVersion) -> Arc<Self> {
        Arc::new(Self {
            core: Mutex::new(MasterCore::new(config, view_version())),
            metrics: Metrics::default(),
            version,
            state: None,
            repl: None,
            disk: disk::DiskSignals::default(),
            allocations_open: gate::opens_at(),
        })
    }

    /// The master of a new HA term: `state` (what a standby followed) restored as
    /// after a restart (segments wait `grace` for their owners to remount them), every
    /// later change streamed to the standbys through `repl`.
    pub(crate) fn promote(
        config: MasterConfig,
        state: crate::DurableState,
        grace: Duration,
        repl: Arc<Replicator>,
    ) -> Arc<Self> {
        let started = Instant::now();
        let mut core = MasterCore::new(config, view_version());
        let report = core.restore_state(state, Instant::now(), grace);
        core.enable_journal();
        let master = Self {
            core: Mutex::new(core),
            metrics: Metrics::default(),
            version: ProtocolVersion::CURRENT,
            state: None,
            repl: Some(repl),
            disk: disk::DiskSignals::default(),
            allocations_open: gate::opens_at(),
        };
        let seconds = started.elapsed().as_secs_f64();
        master
            .metrics
            .record_restore(report.objects as u64, seconds);
        tracing::info!(
            objects = report.objects,
            segments = report.segments,
            dropped = report.dropped,
            seconds,
            "leader state restored from replication; its segments serve again once their owners remount them"
        );
        Arc::new(master)
    }

    /// The core's lock without the journal hand-off (for a standby's snapshot, which
    /// changes nothing).
    pub(crate) fn raw_core(&self) -> &Mutex<MasterCore> {
        &self.core
    }

    /// A master that keeps its state in `state` (none: as [`Master::new`]): it restores
    /// the segments and complete objects found there (their owners must remount them),
    /// writes a fresh snapshot, and from then on logs every durable change before
    /// answering the call that made it.
    pub fn open(
        config: MasterConfig,
        state: Option<&StateConfig>,
    ) -> Result<Arc<Self>, StateError> {
        let Some(sc) = state else {
            return Ok(Self::new(config));
        };
        let started = Instant::now();
        let (dir, loaded) = StateDir::open(sc)?;
        let mut core = MasterCore::new(config, view_version());
        let report = core.restore(loaded.changes, Instant::now(), sc.restore_grace);
        let master = Self {
            core: Mutex::new(core),
            metrics: Metrics::default(),
            version: ProtocolVersion::CURRENT,
            state: None,
            repl: None,
            disk: disk::DiskSignals::default(),
            allocations_open: gate::opens_at(),
        };
        dir.compact(&master.core)?;
        master.lock_core().enable_journal();
        let master = Arc::new(Self {
            state: Some(dir),
            ..master
        });
        let seconds = started.elapsed().as_secs_f64();
        master
            .metrics
            .record_restore(report.objects as u64, seconds);
        tracing::info!(
            dir = %sc.dir.display(),
            objects = report.objects,
            segments = report.segments,
            dropped = report.dropped,
            torn_tail = loaded.dropped_tail,
            seconds,
            grace_sec = sc.restore_grace.as_secs(),
            "state restored; its segments serve again once their owners remount them"
        );
        Ok(master)
    }

    /// Runs `f` on the core under its lock (read-only views: `explain.rs`).
    pub(crate) fn inspect<R>(&self, f: impl FnOnce(&MasterCore) -> R) -> R {
        f(&self.lock_core())
    }

    /// The core's lock (see [`CoreGuard`]).
    fn lock_core(&self) -> CoreGuard<'_> {
        CoreGuard {
            master: self,
            guard: Some(self.core.lock()),
        }
    }

    /// Fsyncs the state log every `fsync_interval` until `shutdown` completes (nothing to
    /// do but wait without a state directory or with an interval of zero).
    pub async fn run_state_syncer(
        self: Arc<Self>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let Some(period) = self
            .state
            .as_ref()
            .map(|s| s.fsync_interval())
            .filter(|p| !p.is_zero())
        else {
            // The server ends when its first task does: this one lasts until shutdown too.
            shutdown.await;
            return;
        };
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = &mut shutdown => return,
            }
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(s) = &me.state {
                    s.sync();
                }
            })
            .await;
        }
    }

    /// Writes a final snapshot (a clean shutdown's last step; a no-op without a state
    /// directory).
    pub fn save_state(&self) -> Result<(), StateError> {
        match &self.state {
            Some(s) => {
                s.compact(&self.core)?;
                tracing::info!(dir = %s.dir().display(), "state saved");
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Runs the periodic work once (client expiry, abandoned puts, eviction).
    pub fn tick(&self) -> TickReport {
        let report = {
            let mut core = self.lock_core();
            let r = core.tick(Instant::now());
            self.wake_holders(&mut core);
            r
        };
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
                let mut core = self.lock_core();
                core.evict_if_needed(Instant::now());
                self.wake_holders(&mut core);
            }
            // Drain jobs are scheduled twice a second, as in Mooncake.
            if n.is_multiple_of((per_second / 2).max(1)) {
                self.lock_core()
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
        self.lock_core().keys()
    }

    /// The replicas of a key as JSON lines, without granting a lease (`/query_key`).
    pub fn query_key(&self, key: &str) -> Option<String> {
        let (list, disk, size) = {
            let core = self.lock_core();
            let list = core.peek_replicas(key)?;
            (list, core.disk_holder(key), core.object_size(key))
        };
        let mut out = String::new();
        for r in list {
            let _ = writeln!(
                out,
                "{{\"buffer_address\":{},\"size\":{},\"transport_endpoint\":\"{}\",\"segment\":\"{}\",\"tier\":\"MEMORY\"}}",
                r.buffer_address, r.size, r.transport_endpoint, r.segment_name
            );
        }
        // Mooncake's name for a copy on its holder's own disk.
        if let Some(holder) = disk {
            let _ = writeln!(
                out,
                "{{\"size\":{},\"segment\":\"{holder}\",\"tier\":\"LOCAL_DISK\"}}",
                size.unwrap_or(0)
            );
        }
        Some(out)
    }

    /// Names of mounted segments.
    pub fn segment_names(&self) -> Vec<String> {
        let core = self.lock_core();
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
            .lock_core()
            .create_drain_job(segments, targets, max_concurrency, wall_ms());
        if let Ok(id) = &r {
            tracing::info!(job = ?id, ?segments, "drain job created");
        }
        r
    }

    /// A drain job's state.
    pub fn query_drain_job(&self, id: TaskId) -> Result<DrainJobView, ErrorCode> {
        self.lock_core().query_drain_job(id)
    }

    /// Cancels a drain job.
    pub fn cancel_drain_job(&self, id: TaskId) -> Result<(), ErrorCode> {
        self.lock_core().cancel_drain_job(id, wall_ms())
    }

    /// A mounted segment's status.
    pub fn segment_status(&self, name: &str) -> Result<SegmentStatus, ErrorCode> {
        self.lock_core().segment_status(name)
    }

    /// Prometheus text of every gauge and counter (Mooncake's names).
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        {
            let core = self.lock_core();
            render::core_metrics(&core, &mut out);
            disk::render(&core, &mut out);
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
            let mut core = self.lock_core();
            items.iter().map(|i| f(&mut core, i, now)).collect()
        };
        self.metrics.observe(op, now.elapsed());
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
            .lock_core()
            .mount_segment(client, segment, Instant::now());
        self.count(Op::MountSegment, r)
    }

    async fn remount_segments(
        &self,
        client: ClientId,
        segments: Vec<Segment>,
    ) -> Result<(), ErrorCode> {
        let r = self
            .lock_core()
            .remount_segments(client, segments, Instant::now());
        self.count(Op::RemountSegment, r)
    }

    async fn unmount_segment(&self, client: ClientId, segment: SegmentId) -> Result<(), ErrorCode> {
        let r = self.lock_core().unmount_segment(client, segment);
        self.count(Op::UnmountSegment, r)
    }

    async fn ping(&self, client: ClientId) -> Result<PingReply, ErrorCode> {
        let r = self.lock_core().ping(client, Instant::now());
        self.count(Op::Ping, Ok(r))
    }

    async fn exist_key(&self, key: &str) -> Result<bool, ErrorCode> {
        let t = Instant::now();
        let r = self.lock_core().exist_key(key, t);
        self.metrics.observe(Op::ExistKey, t.elapsed());
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
        let t = Instant::now();
        // The lock guard must be gone before the await.
        let first = self.lock_core().get_replica_list(key, t);
        let r = match first {
            Err(ErrorCode::ReplicaIsNotReady) => self.read_through_disk(key).await,
            r => r,
        };
        self.metrics.observe(Op::GetReplicaList, t.elapsed());
        self.count(Op::GetReplicaList, r)
    }

    async fn batch_get_replica_list(&self, keys: &[String]) -> BatchResult<ReplicaList> {
        check_batch(keys.len())?;
        let mut rs = self.lookup_or_load(keys);
        for (k, r) in keys.iter().zip(rs.iter_mut()) {
            if r == &Err(ErrorCode::ReplicaIsNotReady) {
                *r = self.read_through_disk(k).await;
            }
        }
        self.count_batch(Op::GetReplicaList, rs)
    }

    async fn batch_get_replica_list_or_load(&self, keys: &[String]) -> BatchResult<ReplicaList> {
        check_batch(keys.len())?;
        let rs = self.lookup_or_load(keys);
        // Keys left loading are counted when they are asked for again (and wait).
        let left = rs
            .iter()
            .filter(|r| **r == Err(ErrorCode::ReplicaIsNotReady))
            .count() as u64;
        let failed = rs.iter().filter(|r| r.is_err()).count() as u64 - left;
        let n = rs.len() as u64;
        self.metrics.record(Op::GetReplicaList, n - left, failed);
        self.metrics.record_batch(Op::GetReplicaList, n);
        Ok(rs)
    }

    async fn put_start(
        &self,
        client: ClientId,
        key: &str,
        size: u64,
        config: &ReplicateConfig,
    ) -> Result<Vec<ReplicaDescriptor>, ErrorCode> {
        gate::wait_until(self.allocations_open).await;
        let t = Instant::now();
        let first = self.lock_core().put_start(client, key, size, config, t);
        let r = match first {
            Err(ErrorCode::NoAvailableHandle) => {
                self.wait_for_demotions(|core, now| core.put_start(client, key, size, config, now))
                    .await
            }
            r => r,
        };
        self.metrics.observe(Op::PutStart, t.elapsed());
        self.count(Op::PutStart, r)
    }

    async fn batch_put_start(
        &self,
        client: ClientId,
        items: &[(String, u64)],
        config: &ReplicateConfig,
    ) -> BatchResult<Vec<ReplicaDescriptor>> {
        gate::wait_until(self.allocations_open).await;
        let mut rs = self.batch(Op::PutStart, items, |core, (k, n), now| {
            core.put_start(client, k, *n, config, now)
        })?;
        // Items that found no room while demotions were freeing some: once more, waiting.
        for ((k, n), r) in items.iter().zip(rs.iter_mut()) {
            if r == &Err(ErrorCode::NoAvailableHandle) {
                *r = self
                    .wait_for_demotions(|core, now| core.put_start(client, k, *n, config, now))
                    .await;
            }
        }
        Ok(rs)
    }

    /// Counted as `put_start` calls in the metrics.
    async fn reserve_slots(
        &self,
        client: ClientId,
        size: u64,
        count: usize,
    ) -> Result<Vec<ReservedSlot>, ErrorCode> {
        gate::wait_until(self.allocations_open).await;
        let t = Instant::now();
        let count = count.min(crate::core::MAX_SLOTS_PER_CALL);
        let r = self.lock_core().reserve_slots(client, size, count, t);
        self.metrics.observe(Op::PutStart, t.elapsed());
        self.count(Op::PutStart, r)
    }

    async fn release_slots(&self, client: ClientId, ids: &[u64]) -> Result<(), ErrorCode> {
        self.lock_core().release_slots(client, ids);
        Ok(())
    }

    /// Counted as `put_end` calls in the metrics.
    async fn batch_put_reserved(
        &self,
        client: ClientId,
        items: &[(String, u64, u64)],
        config: &ReplicateConfig,
    ) -> BatchResult<Option<ReservedSlot>> {
        gate::wait_until(self.allocations_open).await;
        self.batch(Op::PutEnd, items, |core, (key, slot, size), now| {
            core.put_reserved(client, key, *slot, *size, config, now)
        })
    }

    /// Counted as `put_end` calls in the metrics.
    async fn put_reserved(
        &self,
        client: ClientId,
        key: &str,
        slot: u64,
        size: u64,
        config: &ReplicateConfig,
    ) -> Result<Option<ReservedSlot>, ErrorCode> {
        gate::wait_until(self.allocations_open).await;
        let t = Instant::now();
        let r = self
            .lock_core()
            .put_reserved(client, key, slot, size, config, t);
        self.metrics.observe(Op::PutEnd, t.elapsed());
        self.count(Op::PutEnd, r)
    }

    async fn put_end(&self, client: ClientId, key: &str) -> Result<(), ErrorCode> {
        let t = Instant::now();
        let r = self.lock_core().put_end(client, key, t);
        self.metrics.observe(Op::PutEnd, t.elapsed());
        self.count(Op::PutEnd, r)
    }

    async fn batch_put_end(&self, client: ClientId, keys: &[String]) -> BatchResult<()> {
        self.batch(Op::PutEnd, keys, |core, k, now| {
            core.put_end(client, k, now)
        })
    }

    async fn put_revoke(&self, client: ClientId, key: &str) -> Result<(), ErrorCode> {
        let r = self.lock_core().put_revoke(client, key);
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
        gate::wait_until(self.allocations_open).await;
        let r = self
            .lock_core()
            .upsert_start(client, key, size, config, Instant::now());
        self.count(Op::UpsertStart, r)
    }

    async fn remove(&self, key: &str, force: bool) -> Result<(), ErrorCode> {
        let r = {
            let mut core = self.lock_core();
            let r = core.remove(key, force, Instant::now());
            self.wake_holders(&mut core);
            r
        };
        self.count(Op::Remove, r)
    }

    async fn batch_remove(&self, keys: &[String], force: bool) -> BatchResult<()> {
        self.batch(Op::Remove, keys, |core, k, now| core.remove(k, force, now))
    }

    async fn remove_all(&self, force: bool) -> Result<u64, ErrorCode> {
        let r = self.lock_core().remove_all(force, Instant::now());
        self.count(Op::RemoveAll, Ok(r))
    }

    async fn drain_segment_start(
        &self,
        client: ClientId,
        segment: SegmentId,
    ) -> Result<Vec<DrainMove>, ErrorCode> {
        gate::wait_until(self.allocations_open).await;
        let r = self.lock_core().drain_start(client, segment);
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
        let r = self.lock_core().drain_end(client, results);
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
            .lock_core()
            .batch_replica_clear(client, keys, segment, Instant::now());
        self.count(Op::BatchReplicaClear, Ok(cleared))
    }

    async fn remove_by_regex(&self, pattern: &str, force: bool) -> Result<u64, ErrorCode> {
        let r = self
            .lock_core()
            .remove_by_regex(pattern, force, Instant::now());
        self.count(Op::RemoveByRegex, r)
    }

    async fn create_copy_task(&self, key: &str, targets: &[String]) -> Result<TaskId, ErrorCode> {
        gate::wait_until(self.allocations_open).await;
        let r = self
            .lock_core()
            .create_copy_task(key, targets, Instant::now(), wall_ms());
        self.count(Op::CreateCopyTask, r)
    }

    async fn create_move_task(
        &self,
        key: &str,
        source: &str,
        target: &str,
    ) -> Result<TaskId, ErrorCode> {
        gate::wait_until(self.allocations_open).await;
        let r = self
            .lock_core()
            .create_move_task(key, source, target, Instant::now(), wall_ms());
        self.count(Op::CreateMoveTask, r)
    }

    async fn query_task(&self, id: TaskId) -> Result<TaskInfo, ErrorCode> {
        let r = self.lock_core().query_task(id);
        self.count(Op::QueryTask, r)
    }

    async fn fetch_tasks(&self, client: ClientId) -> Result<Vec<TaskAssignment>, ErrorCode> {
        let tasks = self
            .lock_core()
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
            self.lock_core()
                .finish_task(client, id, copied, message, Instant::now(), wall_ms());
        self.count(Op::UpdateTask, r)
    }

    async fn explain_key(&self, key: &str) -> Result<String, ErrorCode> {
        crate::explain::explain_json(self, key)
    }

    async fn mount_disk_tier(
        &self,
        client: ClientId,
        segment: SegmentId,
        capacity: u64,
        records: Vec<mooncake_store::DiskRecord>,
    ) -> Result<Vec<mooncake_store::DiskRecord>, ErrorCode> {
        self.disk_mount(client, segment, capacity, records)
    }

    async fn poll_disk_tasks(
        &self,
        client: ClientId,
        segment: SegmentId,
        wait: Duration,
    ) -> Result<Vec<mooncake_store::DiskTask>, ErrorCode> {
        self.disk_poll(client, segment, wait).await
    }

    async fn finish_disk_tasks(
        &self,
        client: ClientId,
        segment: SegmentId,
        results: &[mooncake_store::DiskTaskResult],
        evicted: &[mooncake_store::DiskRecord],
    ) -> Result<(), ErrorCode> {
        self.disk_finish(client, segment, results, evicted)
    }
}

/// A new incarnation's view version: the start time in ms.
fn view_version() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as i64)
}

/// Unix time in ms.
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
