//! [`impl_master_api_by_route!`](crate::impl_master_api_by_route): a [`MasterApi`](crate::MasterApi)
//! whose every call goes through one method of the type, which picks the master to ask (and
//! may retry on another). Used by the master's HA switch (the leader or "not serving") and
//! by the client that follows the leader named in etcd.

#[doc(hidden)]
pub mod __private {
    pub use async_trait::async_trait;
}

/// Implements [`MasterApi`](crate::MasterApi) for `$t` by sending every call through
/// `$t::route`, an inherent method with this shape:
///
/// ```ignore
/// async fn route<T, F, Fut>(&self, op: &'static str, call: F) -> Result<T, ErrorCode>
/// where
///     T: Send,
///     F: Fn(Arc<dyn MasterApi>) -> Fut + Send + Sync,
///     Fut: Future<Output = Result<T, ErrorCode>> + Send;
/// ```
///
/// `call` may be run more than once (on another master after a failover).
#[macro_export]
macro_rules! impl_master_api_by_route {
    ($t:ty) => {
        #[$crate::route::__private::async_trait]
        impl $crate::MasterApi for $t {
            async fn connect(
                &self,
                client: $crate::ProtocolVersion,
            ) -> Result<$crate::ProtocolVersion, $crate::ErrorCode> {
                self.route("connect", move |m| async move { m.connect(client).await })
                    .await
            }
            async fn mount_segment(
                &self,
                client: $crate::ClientId,
                segment: $crate::Segment,
            ) -> Result<(), $crate::ErrorCode> {
                self.route("mount_segment", move |m| {
                    let segment = segment.clone();
                    async move { m.mount_segment(client, segment).await }
                })
                .await
            }
            async fn remount_segments(
                &self,
                client: $crate::ClientId,
                segments: Vec<$crate::Segment>,
            ) -> Result<(), $crate::ErrorCode> {
                self.route("remount_segments", move |m| {
                    let segments = segments.clone();
                    async move { m.remount_segments(client, segments).await }
                })
                .await
            }
            async fn unmount_segment(
                &self,
                client: $crate::ClientId,
                segment: $crate::SegmentId,
            ) -> Result<(), $crate::ErrorCode> {
                self.route("unmount_segment", move |m| async move {
                    m.unmount_segment(client, segment).await
                })
                .await
            }
            async fn ping(
                &self,
                client: $crate::ClientId,
            ) -> Result<$crate::PingReply, $crate::ErrorCode> {
                self.route("ping", move |m| async move { m.ping(client).await })
                    .await
            }
            async fn exist_key(&self, key: &str) -> Result<bool, $crate::ErrorCode> {
                self.route("exist_key", move |m| async move { m.exist_key(key).await })
                    .await
            }
            async fn batch_exist_key(&self, keys: &[String]) -> $crate::BatchResult<bool> {
                self.route("batch_exist_key", move |m| async move {
                    m.batch_exist_key(keys).await
                })
                .await
            }
            async fn get_replica_list(
                &self,
                key: &str,
            ) -> Result<$crate::ReplicaList, $crate::ErrorCode> {
                self.route("get_replica_list", move |m| async move {
                    m.get_replica_list(key).await
                })
                .await
            }
            async fn batch_get_replica_list(
                &self,
                keys: &[String],
            ) -> $crate::BatchResult<$crate::ReplicaList> {
                self.route("batch_get_replica_list", move |m| async move {
                    m.batch_get_replica_list(keys).await
                })
                .await
            }
            async fn batch_get_replica_list_or_load(
                &self,
                keys: &[String],
            ) -> $crate::BatchResult<$crate::ReplicaList> {
                self.route("batch_get_replica_list_or_load", move |m| async move {
                    m.batch_get_replica_list_or_load(keys).await
                })
                .await
            }
            async fn put_start(
                &self,
                client: $crate::ClientId,
                key: &str,
                size: u64,
                config: &$crate::ReplicateConfig,
            ) -> Result<Vec<$crate::ReplicaDescriptor>, $crate::ErrorCode> {
                self.route("put_start", move |m| async move {
                    m.put_start(client, key, size, config).await
                })
                .await
            }
            async fn batch_put_start(
                &self,
                client: $crate::ClientId,
                items: &[(String, u64)],
                config: &$crate::ReplicateConfig,
            ) -> $crate::BatchResult<Vec<$crate::ReplicaDescriptor>> {
                self.route("batch_put_start", move |m| async move {
                    m.batch_put_start(client, items, config).await
                })
                .await
            }
            async fn reserve_slots(
                &self,
                client: $crate::ClientId,
                size: u64,
                count: usize,
            ) -> Result<Vec<$crate::ReservedSlot>, $crate::ErrorCode> {
                self.route("reserve_slots", move |m| async move {
                    m.reserve_slots(client, size, count).await
                })
                .await
            }
            async fn release_slots(
                &self,
                client: $crate::ClientId,
                ids: &[u64],
            ) -> Result<(), $crate::ErrorCode> {
                self.route("release_slots", move |m| async move {
                    m.release_slots(client, ids).await
                })
                .await
            }
            async fn batch_put_reserved(
                &self,
                client: $crate::ClientId,
                items: &[(String, u64, u64)],
                config: &$crate::ReplicateConfig,
            ) -> $crate::BatchResult<Option<$crate::ReservedSlot>> {
                self.route("batch_put_reserved", move |m| async move {
                    m.batch_put_reserved(client, items, config).await
                })
                .await
            }
            async fn put_reserved(
                &self,
                client: $crate::ClientId,
                key: &str,
                slot: u64,
                size: u64,
                config: &$crate::ReplicateConfig,
            ) -> Result<Option<$crate::ReservedSlot>, $crate::ErrorCode> {
                self.route("put_reserved", move |m| async move {
                    m.put_reserved(client, key, slot, size, config).await
                })
                .await
            }
            async fn put_end(
                &self,
                client: $crate::ClientId,
                key: &str,
            ) -> Result<(), $crate::ErrorCode> {
                self.route(
                    "put_end",
                    move |m| async move { m.put_end(client, key).await },
                )
                .await
            }
            async fn batch_put_end(
                &self,
                client: $crate::ClientId,
                keys: &[String],
            ) -> $crate::BatchResult<()> {
                self.route("batch_put_end", move |m| async move {
                    m.batch_put_end(client, keys).await
                })
                .await
            }
            async fn put_revoke(
                &self,
                client: $crate::ClientId,
                key: &str,
            ) -> Result<(), $crate::ErrorCode> {
                self.route("put_revoke", move |m| async move {
                    m.put_revoke(client, key).await
                })
                .await
            }
            async fn batch_put_revoke(
                &self,
                client: $crate::ClientId,
                keys: &[String],
            ) -> $crate::BatchResult<()> {
                self.route("batch_put_revoke", move |m| async move {
                    m.batch_put_revoke(client, keys).await
                })
                .await
            }
            async fn upsert_start(
                &self,
                client: $crate::ClientId,
                key: &str,
                size: u64,
                config: &$crate::ReplicateConfig,
            ) -> Result<Vec<$crate::ReplicaDescriptor>, $crate::ErrorCode> {
                self.route("upsert_start", move |m| async move {
                    m.upsert_start(client, key, size, config).await
                })
                .await
            }
            async fn batch_upsert_start(
                &self,
                client: $crate::ClientId,
                items: &[(String, u64)],
                config: &$crate::ReplicateConfig,
            ) -> $crate::BatchResult<Vec<$crate::ReplicaDescriptor>> {
                self.route("batch_upsert_start", move |m| async move {
                    m.batch_upsert_start(client, items, config).await
                })
                .await
            }
            async fn drain_segment_start(
                &self,
                client: $crate::ClientId,
                segment: $crate::SegmentId,
            ) -> Result<Vec<$crate::DrainMove>, $crate::ErrorCode> {
                self.route("drain_segment_start", move |m| async move {
                    m.drain_segment_start(client, segment).await
                })
                .await
            }
            async fn drain_segment_end(
                &self,
                client: $crate::ClientId,
                results: &[(String, bool)],
            ) -> $crate::BatchResult<()> {
                self.route("drain_segment_end", move |m| async move {
                    m.drain_segment_end(client, results).await
                })
                .await
            }
            async fn remove(&self, key: &str, force: bool) -> Result<(), $crate::ErrorCode> {
                self.route("remove", move |m| async move { m.remove(key, force).await })
                    .await
            }
            async fn batch_remove(&self, keys: &[String], force: bool) -> $crate::BatchResult<()> {
                self.route("batch_remove", move |m| async move {
                    m.batch_remove(keys, force).await
                })
                .await
            }
            async fn remove_all(&self, force: bool) -> Result<u64, $crate::ErrorCode> {
                self.route(
                    "remove_all",
                    move |m| async move { m.remove_all(force).await },
                )
                .await
            }
            async fn batch_replica_clear(
                &self,
                client: $crate::ClientId,
                keys: &[String],
                segment: &str,
            ) -> Result<Vec<String>, $crate::ErrorCode> {
                self.route("batch_replica_clear", move |m| async move {
                    m.batch_replica_clear(client, keys, segment).await
                })
                .await
            }
            async fn remove_by_regex(
                &self,
                pattern: &str,
                force: bool,
            ) -> Result<u64, $crate::ErrorCode> {
                self.route("remove_by_regex", move |m| async move {
                    m.remove_by_regex(pattern, force).await
                })
                .await
            }
            async fn create_copy_task(
                &self,
                key: &str,
                targets: &[String],
            ) -> Result<$crate::TaskId, $crate::ErrorCode> {
                self.route("create_copy_task", move |m| async move {
                    m.create_copy_task(key, targets).await
                })
                .await
            }
            async fn create_move_task(
                &self,
                key: &str,
                source: &str,
                target: &str,
            ) -> Result<$crate::TaskId, $crate::ErrorCode> {
                self.route("create_move_task", move |m| async move {
                    m.create_move_task(key, source, target).await
                })
                .await
            }
            async fn query_task(
                &self,
                id: $crate::TaskId,
            ) -> Result<$crate::TaskInfo, $crate::ErrorCode> {
                self.route("query_task", move |m| async move { m.query_task(id).await })
                    .await
            }
            async fn fetch_tasks(
                &self,
                client: $crate::ClientId,
            ) -> Result<Vec<$crate::TaskAssignment>, $crate::ErrorCode> {
                self.route("fetch_tasks", move |m| async move {
                    m.fetch_tasks(client).await
                })
                .await
            }
            async fn mount_disk_tier(
                &self,
                client: $crate::ClientId,
                segment: $crate::SegmentId,
                capacity: u64,
                records: Vec<$crate::DiskRecord>,
            ) -> Result<Vec<$crate::DiskRecord>, $crate::ErrorCode> {
                self.route("mount_disk_tier", move |m| {
                    let records = records.clone();
                    async move { m.mount_disk_tier(client, segment, capacity, records).await }
                })
                .await
            }
            async fn poll_disk_tasks(
                &self,
                client: $crate::ClientId,
                segment: $crate::SegmentId,
                wait: std::time::Duration,
            ) -> Result<Vec<$crate::DiskTask>, $crate::ErrorCode> {
                self.route("poll_disk_tasks", move |m| async move {
                    m.poll_disk_tasks(client, segment, wait).await
                })
                .await
            }
            async fn finish_disk_tasks(
                &self,
                client: $crate::ClientId,
                segment: $crate::SegmentId,
                results: &[$crate::DiskTaskResult],
                evicted: &[$crate::DiskRecord],
            ) -> Result<(), $crate::ErrorCode> {
                self.route("finish_disk_tasks", move |m| async move {
                    m.finish_disk_tasks(client, segment, results, evicted).await
                })
                .await
            }
            async fn explain_key(&self, key: &str) -> Result<String, $crate::ErrorCode> {
                self.route(
                    "explain_key",
                    move |m| async move { m.explain_key(key).await },
                )
                .await
            }
            async fn finish_task(
                &self,
                client: $crate::ClientId,
                id: $crate::TaskId,
                copied: bool,
                message: &str,
            ) -> Result<(), $crate::ErrorCode> {
                self.route("finish_task", move |m| async move {
                    m.finish_task(client, id, copied, message).await
                })
                .await
            }
        }
    };
}
