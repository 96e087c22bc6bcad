//! Mooncake's batch API: allocate a batch, submit requests, poll per-request status, free.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::{TransferEngine, TransferError, TransferRequest};

/// A checked batch handle (the C++ engine uses a raw pointer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchId(pub u64);

/// Status of one request, with Mooncake's numeric values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TransferStatus {
    /// Submitted, not finished.
    Waiting = 0,
    /// Unused by the TCP engine (kept for the numeric mapping).
    Pending = 1,
    /// Unused by the TCP engine.
    Invalid = 2,
    /// Unused by the TCP engine.
    Canceled = 3,
    /// Done; for a v2 WRITE, acknowledged by the peer.
    Completed = 4,
    /// The peer did not answer in time.
    Timeout = 5,
    /// Failed (refused address, broken connection, unknown segment…).
    Failed = 6,
}

impl TransferStatus {
    fn from_u8(v: u8) -> Self {
        match v {
            4 => Self::Completed,
            5 => Self::Timeout,
            6 => Self::Failed,
            _ => Self::Waiting,
        }
    }

    /// Whether the request has finished, successfully or not.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Timeout | Self::Failed | Self::Canceled
        )
    }
}

/// Status of one request of a batch and the bytes it moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStatus {
    /// The status.
    pub status: TransferStatus,
    /// Bytes transferred (the whole length once completed, else 0).
    pub transferred: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

#[derive(Debug, Default)]
struct Task {
    status: AtomicU8,
    transferred: AtomicU64,
    observed: AtomicBool,
    error: Mutex<Option<String>>,
}

#[derive(Debug)]
struct Batch {
    capacity: usize,
    tasks: Vec<Arc<Task>>,
    done: Arc<Notify>,
}

/// The engine's table of live batches.
#[derive(Debug, Default)]
pub(crate) struct BatchTable {
    map: Mutex<HashMap<u64, Batch>>,
    next: AtomicU64,
}

impl TransferEngine {
    /// Allocates a batch that can hold `capacity` requests over one or more submits.
    pub fn allocate_batch(&self, capacity: usize) -> BatchId {
        let t = self.batches();
        let id = t.next.fetch_add(1, Ordering::Relaxed) + 1;
        t.map.lock().insert(
            id,
            Batch {
                capacity,
                tasks: Vec::new(),
                done: Arc::new(Notify::new()),
            },
        );
        BatchId(id)
    }

    /// Submits requests to a batch; they start at once and run concurrently.
    pub fn submit(
        &self,
        batch: BatchId,
        requests: &[TransferRequest],
    ) -> Result<(), TransferError> {
        let mut map = self.batches().map.lock();
        let b = map.get_mut(&batch.0).ok_or_else(|| unknown(batch))?;
        let requested = b.tasks.len() + requests.len();
        if requested > b.capacity {
            return Err(TransferError::TooManyRequests {
                capacity: b.capacity,
                requested,
            });
        }
        // The whole submission moves as one group: requests to one peer share
        // connections and vectored writes instead of each waking its own task.
        let tasks: Vec<Arc<Task>> = requests.iter().map(|_| Arc::new(Task::default())).collect();
        b.tasks.extend(tasks.iter().cloned());
        let (engine, requests, done) = (self.clone(), requests.to_vec(), b.done.clone());
        self.runtime().spawn(async move {
            let results = engine.transfer_each(&requests).await;
            for ((task, r), result) in tasks.iter().zip(&requests).zip(results) {
                let (status, error) = match result {
                    Ok(()) => {
                        task.transferred.store(r.length, Ordering::Relaxed);
                        (TransferStatus::Completed, None)
                    }
                    Err(e @ TransferError::Timeout { .. }) => {
                        (TransferStatus::Timeout, Some(e.to_string()))
                    }
                    Err(e) => (TransferStatus::Failed, Some(e.to_string())),
                };
                *task.error.lock() = error;
                task.status.store(status as u8, Ordering::Release);
            }
            done.notify_waiters();
        });
        Ok(())
    }

    /// Status of request `index` of a batch; a terminal status counts as observed.
    pub fn status(&self, batch: BatchId, index: usize) -> Result<TaskStatus, TransferError> {
        let map = self.batches().map.lock();
        let b = map.get(&batch.0).ok_or_else(|| unknown(batch))?;
        let task = b.tasks.get(index).ok_or_else(|| {
            TransferError::InvalidArgument(format!("batch {} has no request {index}", batch.0))
        })?;
        Ok(observe(task))
    }

    /// COMPLETED if every request completed, FAILED if any failed or timed out, else WAITING.
    /// Marks every terminal request as observed.
    pub fn batch_status(&self, batch: BatchId) -> Result<TransferStatus, TransferError> {
        let map = self.batches().map.lock();
        let b = map.get(&batch.0).ok_or_else(|| unknown(batch))?;
        Ok(summarise(b))
    }

    /// Waits until every request of the batch is terminal and returns the batch status.
    pub async fn wait_batch(&self, batch: BatchId) -> Result<TransferStatus, TransferError> {
        loop {
            let done = {
                let map = self.batches().map.lock();
                let b = map.get(&batch.0).ok_or_else(|| unknown(batch))?;
                if all_terminal(b) {
                    return Ok(summarise(b));
                }
                b.done.clone()
            };
            let notified = done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Re-check after registering interest, so a completion in between is not lost.
            let finished = {
                let map = self.batches().map.lock();
                map.get(&batch.0).map(all_terminal).unwrap_or(true)
            };
            if !finished {
                notified.await;
            }
        }
    }

    /// Frees a batch; refused with `BatchBusy` until every request was observed terminal.
    pub fn free_batch(&self, batch: BatchId) -> Result<(), TransferError> {
        let mut map = self.batches().map.lock();
        let b = map.get(&batch.0).ok_or_else(|| unknown(batch))?;
        if !b.tasks.iter().all(|t| t.observed.load(Ordering::Acquire)) {
            return Err(TransferError::BatchBusy(batch.0));
        }
        map.remove(&batch.0);
        Ok(())
    }
}

fn unknown(batch: BatchId) -> TransferError {
    TransferError::InvalidArgument(format!("unknown batch {}", batch.0))
}

fn all_terminal(b: &Batch) -> bool {
    b.tasks
        .iter()
        .all(|t| TransferStatus::from_u8(t.status.load(Ordering::Acquire)).is_terminal())
}

fn observe(task: &Task) -> TaskStatus {
    let status = TransferStatus::from_u8(task.status.load(Ordering::Acquire));
    if status.is_terminal() {
        task.observed.store(true, Ordering::Release);
    }
    TaskStatus {
        status,
        transferred: task.transferred.load(Ordering::Relaxed),
        error: task.error.lock().clone(),
    }
}

fn summarise(b: &Batch) -> TransferStatus {
    let mut all_done = true;
    let mut failed = false;
    for t in &b.tasks {
        match observe(t).status {
            TransferStatus::Completed => {}
            TransferStatus::Failed | TransferStatus::Timeout => failed = true,
            _ => all_done = false,
        }
    }
    if failed {
        TransferStatus::Failed
    } else if all_done {
        TransferStatus::Completed
    } else {
        TransferStatus::Waiting
    }
}
