//! The `MasterApi` seam: every master RPC the store client needs.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::disk::{DiskRecord, DiskTask, DiskTaskResult};
use crate::task::{TaskAssignment, TaskId, TaskInfo};
use crate::types::{
    ClientId, DrainMove, PingReply, ProtocolVersion, ReplicaDescriptor, ReplicaList,
    ReplicateConfig, ReservedSlot, Segment, SegmentId,
};
use crate::ErrorCode;

/// Per-key results of a batch call; the outer error is a failure of the whole call (RPC).
pub type BatchResult<T> = Result<Vec<Result<T, ErrorCode>>, ErrorCode>;

/// Runs a batch call over `items` in calls of at most [`crate::MAX_BATCH_SIZE`] items (the
/// master refuses larger ones) and joins the answers in order. A failed call fails the
/// whole batch, as one call would.
pub(crate) async fn chunked<'a, I, T, F, Fut>(items: &'a [I], mut call: F) -> BatchResult<T>
where
    F: FnMut(&'a [I]) -> Fut,
    Fut: std::future::Future<Output = BatchResult<T>>,
{
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(crate::MAX_BATCH_SIZE) {
        out.extend(call(chunk).await?);
    }
    Ok(out)
}

/// The master's RPCs. Object-safe: clients hold an `Arc<dyn MasterApi>`, which is either
/// the gRPC client of a remote master or a master linked into the process.
///
/// Errors are Mooncake's [`ErrorCode`]s; transport failures are `RpcFail` / `RpcTimeout`.
#[async_trait]
pub trait MasterApi: Send + Sync + Debug {
    /// Exchanges protocol versions; a master refuses clients more than one minor version
    /// older, or of another major version, with `InvalidVersion`. Returns the master's.
    async fn connect(&self, client: ProtocolVersion) -> Result<ProtocolVersion, ErrorCode>;

    /// Mounts a segment (idempotent by id). The client is not alive until it remounts.
    async fn mount_segment(&self, client: ClientId, segment: Segment) -> Result<(), ErrorCode>;

    /// Re-mounts every segment of a client and marks it alive.
    async fn remount_segments(
        &self,
        client: ClientId,
        segments: Vec<Segment>,
    ) -> Result<(), ErrorCode>;

    /// Unmounts a segment (idempotent); its replicas disappear at once.
    async fn unmount_segment(&self, client: ClientId, segment: SegmentId) -> Result<(), ErrorCode>;

    /// Liveness heartbeat of a contributing client (every second).
    async fn ping(&self, client: ClientId) -> Result<PingReply, ErrorCode>;

    /// Whether the key has a readable replica; `true` grants a read lease.
    async fn exist_key(&self, key: &str) -> Result<bool, ErrorCode>;

    /// [`MasterApi::exist_key`] for many keys in one call.
    async fn batch_exist_key(&self, keys: &[String]) -> BatchResult<bool>;

    /// The readable replicas of a key; grants or extends its read lease.
    async fn get_replica_list(&self, key: &str) -> Result<ReplicaList, ErrorCode>;

    /// [`MasterApi::get_replica_list`] for many keys in one call.
    async fn batch_get_replica_list(&self, keys: &[String]) -> BatchResult<ReplicaList>;

    /// [`MasterApi::batch_get_replica_list`] without waiting for disk tiers: the objects
    /// whose only copy is on a holder's disk have their loads queued and are answered
    /// `ReplicaIsNotReady` at once; asking for them again with
    /// [`MasterApi::batch_get_replica_list`] waits for those loads. A reader serves what is
    /// in memory, and each group of loaded keys, while the rest load. By default (a master
    /// without disk tiers) the same as `batch_get_replica_list`.
    async fn batch_get_replica_list_or_load(&self, keys: &[String]) -> BatchResult<ReplicaList> {
        self.batch_get_replica_list(keys).await
    }

    /// Allocates the replicas of a new object (invisible to readers until `put_end`).
    /// `ObjectAlreadyExists` if the key exists (clients treat it as success).
    async fn put_start(
        &self,
        client: ClientId,
        key: &str,
        size: u64,
        config: &ReplicateConfig,
    ) -> Result<Vec<ReplicaDescriptor>, ErrorCode>;

    /// [`MasterApi::put_start`] for many `(key, size)` pairs; results are per key, not atomic.
    async fn batch_put_start(
        &self,
        client: ClientId,
        items: &[(String, u64)],
        config: &ReplicateConfig,
    ) -> BatchResult<Vec<ReplicaDescriptor>>;

    /// Reserves up to `count` ranges of `size` bytes for `client`'s next puts of exactly
    /// that size (fewer or none when space is short; never evicts). By default (a master
    /// without reserved slots) `UnavailableInCurrentStatus`: the caller puts the usual way.
    async fn reserve_slots(
        &self,
        client: ClientId,
        size: u64,
        count: usize,
    ) -> Result<Vec<ReservedSlot>, ErrorCode> {
        let _ = (client, size, count);
        Err(ErrorCode::UnavailableInCurrentStatus)
    }

    /// Makes `key` a complete object on reserved slot `slot` (the value already written
    /// there), in one call: `put_start` and `put_end` together. Answers with a new slot of
    /// the same size when the master could reserve one. `UnavailableInCurrentStatus`: the
    /// slot is unknown or unusable (a restarted master, an expired slot, a segment that
    /// left), so the caller puts the usual way; `ObjectAlreadyExists`: the slot stays the
    /// caller's. By default `UnavailableInCurrentStatus`.
    async fn put_reserved(
        &self,
        client: ClientId,
        key: &str,
        slot: u64,
        size: u64,
        config: &ReplicateConfig,
    ) -> Result<Option<ReservedSlot>, ErrorCode> {
        let _ = (client, key, slot, size, config);
        Err(ErrorCode::UnavailableInCurrentStatus)
    }

    /// Gives back `client`'s slots among `ids` that it dropped unwritten; the master frees
    /// them at once (unknown ids are ignored). By default nothing.
    async fn release_slots(&self, client: ClientId, ids: &[u64]) -> Result<(), ErrorCode> {
        let _ = (client, ids);
        Ok(())
    }

    /// [`MasterApi::put_reserved`] for many `(key, slot, size)` items with one config;
    /// results are per item. By default `UnavailableInCurrentStatus` as a whole.
    async fn batch_put_reserved(
        &self,
        client: ClientId,
        items: &[(String, u64, u64)],
        config: &ReplicateConfig,
    ) -> BatchResult<Option<ReservedSlot>> {
        let _ = (client, items, config);
        Err(ErrorCode::UnavailableInCurrentStatus)
    }

    /// Makes a put (or upsert) visible.
    async fn put_end(&self, client: ClientId, key: &str) -> Result<(), ErrorCode>;

    /// [`MasterApi::put_end`] for many keys.
    async fn batch_put_end(&self, client: ClientId, keys: &[String]) -> BatchResult<()>;

    /// Abandons a put (or upsert): its space is freed and the key disappears.
    async fn put_revoke(&self, client: ClientId, key: &str) -> Result<(), ErrorCode>;

    /// [`MasterApi::put_revoke`] for many keys.
    async fn batch_put_revoke(&self, client: ClientId, keys: &[String]) -> BatchResult<()>;

    /// Like `put_start`, but replaces an existing object.
    async fn upsert_start(
        &self,
        client: ClientId,
        key: &str,
        size: u64,
        config: &ReplicateConfig,
    ) -> Result<Vec<ReplicaDescriptor>, ErrorCode>;

    /// [`MasterApi::upsert_start`] for many `(key, size)` pairs; results are per key.
    /// The default issues one `upsert_start` per key, in order (the wire protocol has no
    /// batch upsert).
    async fn batch_upsert_start(
        &self,
        client: ClientId,
        items: &[(String, u64)],
        config: &ReplicateConfig,
    ) -> BatchResult<Vec<ReplicaDescriptor>> {
        let mut out = Vec::with_capacity(items.len());
        for (key, size) in items {
            out.push(self.upsert_start(client, key, *size, config).await);
        }
        Ok(out)
    }

    /// Starts draining `segment` (owned by `client`): no new object is placed on it, and
    /// every complete object whose only replica is there gets a range elsewhere. The owner
    /// copies each [`DrainMove`] and reports with [`MasterApi::drain_segment_end`]. Masters
    /// without draining answer `NotSupported`.
    async fn drain_segment_start(
        &self,
        client: ClientId,
        segment: SegmentId,
    ) -> Result<Vec<DrainMove>, ErrorCode> {
        let _ = (client, segment);
        Err(ErrorCode::NotSupported)
    }

    /// Commits (`true`) or abandons (`false`) the copies of [`MasterApi::drain_segment_start`],
    /// per key.
    async fn drain_segment_end(
        &self,
        client: ClientId,
        results: &[(String, bool)],
    ) -> BatchResult<()> {
        let _ = (client, results);
        Err(ErrorCode::NotSupported)
    }

    /// Removes an object; refused with `ObjectHasLease` while leased unless `force`.
    async fn remove(&self, key: &str, force: bool) -> Result<(), ErrorCode>;

    /// [`MasterApi::remove`] for many keys.
    async fn batch_remove(&self, keys: &[String], force: bool) -> BatchResult<()>;

    /// Removes every object (leased ones only with `force`); returns how many.
    async fn remove_all(&self, force: bool) -> Result<u64, ErrorCode>;

    /// Mooncake's `BatchReplicaClear`: of `keys`, the objects `client` created that have no
    /// active lease are removed (or only their replicas on `segment`, when not empty);
    /// returns the keys cleared, in order. Skipped keys are simply left out.
    async fn batch_replica_clear(
        &self,
        client: ClientId,
        keys: &[String],
        segment: &str,
    ) -> Result<Vec<String>, ErrorCode> {
        let _ = (client, keys, segment);
        Err(ErrorCode::NotSupported)
    }

    /// Removes every object whose key matches the regular expression; returns how many.
    async fn remove_by_regex(&self, pattern: &str, force: bool) -> Result<u64, ErrorCode> {
        let _ = (pattern, force);
        Err(ErrorCode::NotSupported)
    }

    /// Queues a copy of `key` to the `targets` segments (executed by the owner of one of
    /// its replicas' segments).
    async fn create_copy_task(&self, key: &str, targets: &[String]) -> Result<TaskId, ErrorCode> {
        let _ = (key, targets);
        Err(ErrorCode::NotSupported)
    }

    /// Queues a move of `key`'s replica on `source` to `target`.
    async fn create_move_task(
        &self,
        key: &str,
        source: &str,
        target: &str,
    ) -> Result<TaskId, ErrorCode> {
        let _ = (key, source, target);
        Err(ErrorCode::NotSupported)
    }

    /// A task's state; `TaskNotFound` for an unknown or pruned id.
    async fn query_task(&self, id: TaskId) -> Result<TaskInfo, ErrorCode> {
        let _ = id;
        Err(ErrorCode::NotSupported)
    }

    /// The pending tasks assigned to `client`, now processing, with their target ranges.
    async fn fetch_tasks(&self, client: ClientId) -> Result<Vec<TaskAssignment>, ErrorCode> {
        let _ = client;
        Err(ErrorCode::NotSupported)
    }

    /// Reports a fetched task: `copied` commits the new replicas (and, for a move, drops
    /// the source one); otherwise the reserved ranges are freed and the task fails with
    /// `message`.
    async fn finish_task(
        &self,
        client: ClientId,
        id: TaskId,
        copied: bool,
        message: &str,
    ) -> Result<(), ErrorCode> {
        let _ = (client, id, copied, message);
        Err(ErrorCode::NotSupported)
    }

    /// What the master knows of `key` (its state now, why a lookup misses, its recent
    /// events) as JSON, the body of the admin port's `GET /explain?key=`. Grants no lease.
    async fn explain_key(&self, key: &str) -> Result<String, ErrorCode> {
        let _ = key;
        Err(ErrorCode::NotSupported)
    }

    /// Registers the disk tier of `client`'s memory `segment` (`capacity` bytes) with the
    /// records found on it; returns the records to delete (another version of the key
    /// exists). Records of keys the master does not know are served again (disk only).
    async fn mount_disk_tier(
        &self,
        client: ClientId,
        segment: SegmentId,
        capacity: u64,
        records: Vec<DiskRecord>,
    ) -> Result<Vec<DiskRecord>, ErrorCode> {
        let _ = (client, segment, capacity, records);
        Err(ErrorCode::NotSupported)
    }

    /// The disk tasks waiting for `segment`'s tier; waits up to `wait` (at most 5 s) for
    /// one when there is none. `SegmentNotFound` when the tier must be mounted (again).
    async fn poll_disk_tasks(
        &self,
        client: ClientId,
        segment: SegmentId,
        wait: std::time::Duration,
    ) -> Result<Vec<DiskTask>, ErrorCode> {
        let _ = (client, segment, wait);
        Err(ErrorCode::NotSupported)
    }

    /// Reports disk tasks' outcomes and the records the tier's LRU evicted.
    async fn finish_disk_tasks(
        &self,
        client: ClientId,
        segment: SegmentId,
        results: &[DiskTaskResult],
        evicted: &[DiskRecord],
    ) -> Result<(), ErrorCode> {
        let _ = (client, segment, results, evicted);
        Err(ErrorCode::NotSupported)
    }
}
