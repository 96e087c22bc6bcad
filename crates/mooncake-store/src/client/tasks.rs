//! The client's side of copy and move tasks, replica clearing and regex removal.
//!
//! A contributing client polls the master for the tasks assigned to it (it owns their
//! source segment) every ping period (`run_tasks`, spawned by `setup`), copies each source
//! replica into the ranges the master reserved, and reports the outcome.

use mooncake_transfer_engine::Opcode;

use super::Client;
use crate::task::{TaskAssignment, TaskId, TaskInfo};
use crate::ErrorCode;

impl Client {
    /// Mooncake's `batch_replica_clear`: of `keys`, the objects this client created that no
    /// reader holds a lease on are removed (or only their replicas on `segment` when it is
    /// not empty). Returns the keys cleared; everything else is left out, errors included.
    pub async fn batch_replica_clear(&self, keys: &[String], segment: &str) -> Vec<String> {
        match self
            .inner
            .master
            .batch_replica_clear(self.inner.id, keys, segment)
            .await
        {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "batch_replica_clear failed");
                Vec::new()
            }
        }
    }

    /// Removes every object whose key matches `pattern` (leased ones only with `force`);
    /// returns how many.
    pub async fn remove_by_regex(&self, pattern: &str, force: bool) -> Result<u64, ErrorCode> {
        self.inner.master.remove_by_regex(pattern, force).await
    }

    /// Queues a copy of `key` to the `targets` segments; the owner of one of its replicas
    /// executes it within about a second.
    pub async fn create_copy_task(
        &self,
        key: &str,
        targets: &[String],
    ) -> Result<TaskId, ErrorCode> {
        self.inner.master.create_copy_task(key, targets).await
    }

    /// Queues a move of `key`'s replica on `source` to `target`.
    pub async fn create_move_task(
        &self,
        key: &str,
        source: &str,
        target: &str,
    ) -> Result<TaskId, ErrorCode> {
        self.inner
            .master
            .create_move_task(key, source, target)
            .await
    }

    /// Each key's readable replicas (one master call; grants read leases).
    pub async fn replica_lists(
        &self,
        keys: &[String],
    ) -> Vec<Result<crate::ReplicaList, ErrorCode>> {
        match self.inner.master.batch_get_replica_list(keys).await {
            Ok(r) => r,
            Err(e) => vec![Err(e); keys.len()],
        }
    }

    /// A task's state.
    pub async fn query_task(&self, id: TaskId) -> Result<TaskInfo, ErrorCode> {
        self.inner.master.query_task(id).await
    }

    /// Copies a fetched task's source replica (in this client's segment) into its targets.
    async fn execute(&self, task: &TaskAssignment) -> Result<(), ErrorCode> {
        let src = [(task.source.buffer_address, task.source.size)];
        let mut reqs = Vec::new();
        for target in &task.targets {
            reqs.extend(self.requests(Opcode::Write, &src, target).await?);
        }
        self.inner
            .engine
            .transfer(&reqs)
            .await
            .map_err(|e| super::map_transfer(&e))
    }

    /// Fetches this client's tasks once and runs each.
    pub(super) async fn run_tasks(&self) {
        let tasks = match self.inner.master.fetch_tasks(self.inner.id).await {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(error = %e, "fetching tasks failed");
                return;
            }
        };
        for task in tasks {
            let outcome = self.execute(&task).await;
            let message = match outcome {
                Ok(()) => String::new(),
                Err(e) => format!("{} (max retries reached: 0)", e.name()),
            };
            tracing::info!(key = %task.key, kind = ?task.kind, ok = outcome.is_ok(), "task done");
            if let Err(e) = self
                .inner
                .master
                .finish_task(self.inner.id, task.id, outcome.is_ok(), &message)
                .await
            {
                tracing::warn!(key = %task.key, error = %e, "cannot report a task");
            }
        }
    }
}
