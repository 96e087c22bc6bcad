//! Request counters with Mooncake's metric names, rendered as Prometheus text.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// The master RPCs that are counted (`master_<op>_requests_total` / `_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Op {
    /// exist_key
    ExistKey,
    /// get_replica_list
    GetReplicaList,
    /// put_start
    PutStart,
    /// put_end
    PutEnd,
    /// put_revoke
    PutRevoke,
    /// remove
    Remove,
    /// remove_all
    RemoveAll,
    /// mount_segment
    MountSegment,
    /// unmount_segment
    UnmountSegment,
    /// remount_segment
    RemountSegment,
    /// ping
    Ping,
    /// upsert_start (ours)
    UpsertStart,
    /// batch_replica_clear
    BatchReplicaClear,
    /// remove_by_regex
    RemoveByRegex,
    /// create_copy_task
    CreateCopyTask,
    /// create_move_task
    CreateMoveTask,
    /// query_task
    QueryTask,
    /// fetch_tasks
    FetchTasks,
    /// update_task
    UpdateTask,
}

const OPS: [(Op, &str); 19] = [
    (Op::ExistKey, "exist_key"),
    (Op::GetReplicaList, "get_replica_list"),
    (Op::PutStart, "put_start"),
    (Op::PutEnd, "put_end"),
    (Op::PutRevoke, "put_revoke"),
    (Op::Remove, "remove"),
    (Op::RemoveAll, "remove_all"),
    (Op::MountSegment, "mount_segment"),
    (Op::UnmountSegment, "unmount_segment"),
    (Op::RemountSegment, "remount_segment"),
    (Op::Ping, "ping"),
    (Op::UpsertStart, "upsert_start"),
    (Op::BatchReplicaClear, "batch_replica_clear"),
    (Op::RemoveByRegex, "remove_by_regex"),
    (Op::CreateCopyTask, "create_copy_task"),
    (Op::CreateMoveTask, "create_move_task"),
    (Op::QueryTask, "query_task"),
    (Op::FetchTasks, "fetch_tasks"),
    (Op::UpdateTask, "update_task"),
];

/// Lock-free counters of the master.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [AtomicU64; 19],
    failures: [AtomicU64; 19],
    batch_items: [AtomicU64; 19],
    /// Clients refused for an incompatible protocol version.
    pub version_rejections: AtomicU64,
    /// Objects restored from the state directory at startup.
    restored_keys: AtomicU64,
    /// How long the restore took, in µs.
    restore_micros: AtomicU64,
    /// Time spent in the master per call (lock wait and core), by op.
    latency: [Histogram; 19],
}

/// Upper bounds of the latency buckets, in µs (Prometheus `le` in seconds).
const LATENCY_BOUNDS_US: [u64; 10] = [10, 25, 50, 100, 250, 500, 1_000, 2_500, 10_000, 100_000];

/// A lock-free latency histogram (cumulative when rendered).
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; 11],
    sum_ns: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: std::time::Duration) {
        let us = d.as_micros() as u64;
        let i = LATENCY_BOUNDS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, op: &str, out: &mut String) {
        let mut total = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            total += b.load(Ordering::Relaxed);
            let le = LATENCY_BOUNDS_US
                .get(i)
                .map_or("+Inf".to_owned(), |us| format!("{}", *us as f64 / 1e6));
            let _ = writeln!(out, "{name}_bucket{{op=\"{op}\",le=\"{le}\"}} {total}");
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{op=\"{op}\"}} {sum:.9}");
        let _ = writeln!(out, "{name}_count{{op=\"{op}\"}} {total}");
    }
}

impl Metrics {
    /// Counts `n` requests of `op`, `failed` of which failed.
    pub fn record(&self, op: Op, n: u64, failed: u64) {
        self.requests[op as usize].fetch_add(n, Ordering::Relaxed);
        if failed > 0 {
            self.failures[op as usize].fetch_add(failed, Ordering::Relaxed);
        }
    }

    /// Records the time one call of `op` spent in the master (lock wait and core).
    pub fn observe(&self, op: Op, elapsed: std::time::Duration) {
        self.latency[op as usize].observe(elapsed);
    }

    /// Counts the items of one batch call of `op`.
    pub fn record_batch(&self, op: Op, items: u64) {
        self.batch_items[op as usize].fetch_add(items, Ordering::Relaxed);
    }

    /// Records the restore from the state directory at startup.
    pub fn record_restore(&self, objects: u64, seconds: f64) {
        self.restored_keys.store(objects, Ordering::Relaxed);
        self.restore_micros
            .store((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// Objects restored from the state directory at startup.
    pub fn restored_keys(&self) -> u64 {
        self.restored_keys.load(Ordering::Relaxed)
    }

    /// Requests of `op` so far.
    pub fn requests(&self, op: Op) -> u64 {
        self.requests[op as usize].load(Ordering::Relaxed)
    }

    /// Failures of `op` so far.
    pub fn failures(&self, op: Op) -> u64 {
        self.failures[op as usize].load(Ordering::Relaxed)
    }

    /// Appends the counters in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        for (op, name) in OPS {
            let i = op as usize;
            let _ = writeln!(out, "# TYPE master_{name}_requests_total counter");
            let _ = writeln!(
                out,
                "master_{name}_requests_total {}",
                self.requests[i].load(Ordering::Relaxed)
            );
            let _ = writeln!(out, "# TYPE master_{name}_failures_total counter");
            let _ = writeln!(
                out,
                "master_{name}_failures_total {}",
                self.failures[i].load(Ordering::Relaxed)
            );
            let items = self.batch_items[i].load(Ordering::Relaxed);
            if items > 0 {
                let _ = writeln!(out, "master_batch_{name}_items_total {items}");
            }
        }
        let _ = writeln!(
            out,
            "# TYPE master_restored_key_count gauge\nmaster_restored_key_count {}",
            self.restored_keys.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE master_restore_duration_seconds gauge\nmaster_restore_duration_seconds {:.6}",
            self.restore_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let name = "master_rpc_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time a call spent in the master (lock wait and core; network excluded).\n# TYPE {name} histogram"
        );
        for (op, label) in OPS {
            let h = &self.latency[op as usize];
            if h.buckets.iter().any(|b| b.load(Ordering::Relaxed) > 0)
                || matches!(
                    op,
                    Op::GetReplicaList | Op::PutStart | Op::PutEnd | Op::ExistKey
                )
            {
                h.render(name, label, out);
            }
        }
        let _ = writeln!(out, "# TYPE master_version_rejections_total counter");
        let _ = writeln!(
            out,
            "master_version_rejections_total {}",
            self.version_rejections.load(Ordering::Relaxed)
        );
    }
}
