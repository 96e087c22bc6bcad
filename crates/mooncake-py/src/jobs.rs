//! Transfers started by `batch_transfer_async_*`, `batch_transfer_async` and
//! `transfer_submit_write`, under the ids the Python caller waits on or polls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use mooncake_transfer_engine::{TransferEngine, TransferError, TransferRequest};
use parking_lot::Mutex;
use pyo3::Python;
use tokio::task::JoinHandle;

use crate::runtime::{block, runtime};

/// One request of a batch, running on the shared runtime.
type Job = JoinHandle<Result<(), TransferError>>;

/// The batches in flight, by id (never 0, which means failure to the caller).
#[derive(Debug, Default)]
pub(crate) struct Jobs {
    table: Mutex<HashMap<u64, Vec<Job>>>,
    next: AtomicU64,
}

impl Jobs {
    /// Starts every request at once; the batch's id.
    pub(crate) fn submit(&self, engine: &TransferEngine, requests: Vec<TransferRequest>) -> u64 {
        let jobs = requests
            .into_iter()
            .map(|r| {
                let engine = engine.clone();
                runtime().spawn(async move { engine.transfer(&[r]).await })
            })
            .collect();
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.table.lock().insert(id, jobs);
        id
    }

    /// Waits for every batch of `ids` and forgets them: 0 when every request completed,
    /// -1 when one failed or an id is unknown (never issued, or already finished).
    pub(crate) fn wait_all(&self, py: Python<'_>, ids: &[u64]) -> i32 {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let (jobs, unknown) = {
            let mut table = self.table.lock();
            let mut jobs = Vec::new();
            let mut unknown = false;
            for id in &ids {
                match table.remove(id) {
                    Some(batch) => jobs.extend(batch),
                    None => unknown = true,
                }
            }
            (jobs, unknown)
        };
        if unknown {
            tracing::warn!(?ids, "get_batch_transfer_status: unknown batch id");
        }
        let results = join(py, jobs);
        if unknown || results.iter().any(|r| failed(r, "batch transfer")) {
            -1
        } else {
            0
        }
    }

    /// 1 completed (the id is forgotten), 0 pending, -1 failed (forgotten) or unknown,
    /// -2 timed out (forgotten).
    pub(crate) fn poll(&self, py: Python<'_>, id: u64) -> i32 {
        let mut table = self.table.lock();
        let Some(jobs) = table.get(&id) else {
            return -1;
        };
        if !jobs.iter().all(JoinHandle::is_finished) {
            return 0;
        }
        let jobs = table.remove(&id).unwrap_or_default();
        drop(table);
        let results = join(py, jobs);
        if results
            .iter()
            .any(|r| matches!(r, Err(TransferError::Timeout { .. })))
        {
            -2
        } else if results.iter().any(|r| failed(r, "transfer")) {
            -1
        } else {
            1
        }
    }
}

fn join(py: Python<'_>, jobs: Vec<Job>) -> Vec<Result<(), TransferError>> {
    block(py, async move {
        let mut out = Vec::with_capacity(jobs.len());
        for j in jobs {
            out.push(j.await.unwrap_or(Err(TransferError::Shutdown)));
        }
        out
    })
}

fn failed(r: &Result<(), TransferError>, what: &str) -> bool {
    match r {
        Ok(()) => false,
        Err(e) => {
            tracing::warn!("{what} failed: {e}");
            true
        }
    }
}
