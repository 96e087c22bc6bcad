//! The shell's side of disk tiers: holders long-poll for their tasks, and calls that need
//! a disk task to finish first (a read of a disk-only object, a put waiting for memory a
//! demotion frees) wait for it here, so clients see an ordinary, slower answer.

use std::fmt::Write;
use std::time::{Duration, Instant};

use mooncake_store::{
    ClientId, DiskRecord, DiskTask, DiskTaskResult, ErrorCode, ReplicaList, SegmentId,
};
use tokio::sync::Notify;

use super::Master;
use crate::core::{LoadState, MasterCore};

/// The longest a read waits for its object to come back from disk, or a put for memory
/// a demotion frees, before it fails as it would without a disk tier.
const DISK_WAIT: Duration = Duration::from_secs(10);

/// How often a read waiting for room in its holder's segment looks again.
const NO_ROOM_RETRY: Duration = Duration::from_millis(20);

/// How long a holder's poll waits at most for a task.
const POLL_WAIT_MAX: Duration = Duration::from_secs(5);

/// Wake-ups between the core's disk tasks and the calls waiting on them.
#[derive(Debug, Default)]
pub(crate) struct DiskSignals {
    /// Holders waiting for tasks.
    tasks: Notify,
    /// Calls waiting for a task to finish.
    done: Notify,
}

impl Master {
    /// Wakes the holders' polls if the core queued disk tasks (cheap when it did not).
    pub(super) fn wake_holders(&self, core: &mut MasterCore) {
        if core.take_disk_signal() {
            self.disk.tasks.notify_waiters();
        }
    }

    /// The replica lists of `keys`, with a load queued for each key that has only a disk
    /// copy (answered `ReplicaIsNotReady` here): every load starts at once, so the holders
    /// read them in parallel.
    pub(super) fn lookup_or_load(&self, keys: &[String]) -> Vec<Result<ReplicaList, ErrorCode>> {
        let now = Instant::now();
        let mut core = self.lock_core();
        let rs: Vec<_> = keys.iter().map(|k| core.get_replica_list(k, now)).collect();
        for (k, r) in keys.iter().zip(&rs) {
            if r == &Err(ErrorCode::ReplicaIsNotReady) {
                core.request_load(k, now);
            }
        }
        self.wake_holders(&mut core);
        rs
    }

    /// For a read that found no memory replica: loads the object from its holder's disk
    /// and waits for it (at most [`DISK_WAIT`]); `ReplicaIsNotReady` as before when it has
    /// no disk copy.
    pub(super) async fn read_through_disk(&self, key: &str) -> Result<ReplicaList, ErrorCode> {
        let deadline = Instant::now() + DISK_WAIT;
        loop {
            let done = self.disk.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            let now = Instant::now();
            let state = {
                let mut core = self.lock_core();
                let s = core.request_load(key, now);
                self.wake_holders(&mut core);
                if s == LoadState::Ready {
                    return core.get_replica_list(key, now);
                }
                s
            };
            if state == LoadState::Unavailable || now >= deadline {
                return Err(ErrorCode::ReplicaIsNotReady);
            }
            // No room: leases that end free memory without any task finishing, so look
            // again soon even if nothing wakes us.
            let until = match state {
                LoadState::NoRoom => deadline.min(now + NO_ROOM_RETRY),
                _ => deadline,
            };
            let _ = tokio::time::timeout_at(until.into(), done).await;
        }
    }

    /// Runs `attempt` again while it fails with `NoAvailableHandle` and demotions are in
    /// flight (they will free memory), for at most [`DISK_WAIT`].
    pub(super) async fn wait_for_demotions<T>(
        &self,
        mut attempt: impl FnMut(&mut MasterCore, Instant) -> Result<T, ErrorCode>,
    ) -> Result<T, ErrorCode> {
        let deadline = Instant::now() + DISK_WAIT;
        loop {
            let done = self.disk.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            let now = Instant::now();
            let busy = {
                let mut core = self.lock_core();
                let r = attempt(&mut core, now);
                self.wake_holders(&mut core);
                match r {
                    Err(ErrorCode::NoAvailableHandle) if core.demotions_in_flight() => {}
                    r => return r,
                }
                true
            };
            if !busy || now >= deadline {
                return Err(ErrorCode::NoAvailableHandle);
            }
            let _ = tokio::time::timeout_at(deadline.into(), done).await;
        }
    }

    pub(super) fn disk_mount(
        &self,
        client: ClientId,
        segment: SegmentId,
        capacity: u64,
        records: Vec<DiskRecord>,
    ) -> Result<Vec<DiskRecord>, ErrorCode> {
        let n = records.len();
        let r =
            self.lock_core()
                .mount_disk_tier(client, segment, capacity, records, Instant::now());
        match &r {
            Ok(stale) => tracing::info!(
                segment = format!("{:x}", segment.0),
                capacity,
                records = n,
                stale = stale.len(),
                "disk tier mounted; its records are served again"
            ),
            Err(e) => tracing::warn!(error = %e, "disk tier mount refused"),
        }
        self.disk.done.notify_waiters();
        r
    }

    pub(super) async fn disk_poll(
        &self,
        client: ClientId,
        segment: SegmentId,
        wait: Duration,
    ) -> Result<Vec<DiskTask>, ErrorCode> {
        let deadline = Instant::now() + wait.min(POLL_WAIT_MAX);
        loop {
            let more = self.disk.tasks.notified();
            tokio::pin!(more);
            more.as_mut().enable();
            let tasks = self.lock_core().take_disk_tasks(client, segment)?;
            if !tasks.is_empty() || Instant::now() >= deadline {
                return Ok(tasks);
            }
            let _ = tokio::time::timeout_at(deadline.into(), more).await;
        }
    }

    pub(super) fn disk_finish(
        &self,
        client: ClientId,
        segment: SegmentId,
        results: &[DiskTaskResult],
        evicted: &[DiskRecord],
    ) -> Result<(), ErrorCode> {
        let r = {
            let mut core = self.lock_core();
            let r = core.finish_disk_tasks(client, segment, results, evicted, Instant::now());
            self.wake_holders(&mut core);
            r
        };
        self.disk.done.notify_waiters();
        r
    }
}

/// Appends the disk-tier metrics.
pub(super) fn render(core: &MasterCore, out: &mut String) {
    let s = core.disk_stats();
    let gauges = [
        ("master_disk_capacity_bytes", s.disk_capacity),
        ("master_disk_objects", s.disk_objects),
        ("master_disk_bytes", s.disk_bytes),
        ("master_disk_only_objects", s.disk_only_objects),
        ("master_memory_bytes", core.allocated()),
    ];
    for (name, v) in gauges {
        let _ = writeln!(out, "# TYPE {name} gauge\n{name} {v}");
    }
    let counters = [
        ("master_disk_demotions_total", s.demotions),
        ("master_disk_write_throughs_total", s.write_throughs),
        ("master_disk_demotion_failures_total", s.demotion_failures),
        ("master_disk_full_total", s.disk_full),
        ("master_disk_hits_total", s.disk_hits),
        ("master_disk_load_failures_total", s.load_failures),
        ("master_disk_corrupt_records_total", s.corrupt_records),
        ("master_disk_evictions_total", s.disk_evictions),
    ];
    for (name, v) in counters {
        let _ = writeln!(out, "# TYPE {name} counter\n{name} {v}");
    }
}
