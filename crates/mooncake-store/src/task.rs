//! Copy and move tasks (`python-api-2.md` §3): the master queues them, the client that owns
//! the source segment fetches, executes and reports them.

use crate::types::{ClientId, ReplicaDescriptor};

/// Mooncake's `UuidToString`: a 128-bit id as its two u64 halves in decimal, `hi-lo`
/// (task, job and segment ids as the wheel and the admin API show them).
pub fn uuid_string(id: u128) -> String {
    format!("{}-{}", (id >> 64) as u64, id as u64)
}

/// A task's id (a UUID in Mooncake: two u64, shown as `hi-lo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TaskId(pub u128);

impl TaskId {
    /// The `(hi, lo)` halves.
    pub fn halves(self) -> (u64, u64) {
        ((self.0 >> 64) as u64, self.0 as u64)
    }

    /// An id from its halves.
    pub fn from_halves(hi: u64, lo: u64) -> Self {
        Self((u128::from(hi) << 64) | u128::from(lo))
    }
}

/// What a task does (Mooncake's `TaskType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskKind {
    /// Add replicas of an object on target segments.
    #[default]
    Copy = 0,
    /// Copy to a target, then drop the source replica.
    Move = 1,
}

/// Where a task is (Mooncake's `TaskStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskStatus {
    /// Queued, not yet fetched by its executor.
    #[default]
    Pending = 0,
    /// Fetched; the executor is copying.
    Processing = 1,
    /// Finished without effect (see the message).
    Failed = 2,
    /// Finished; the replicas are in place.
    Success = 3,
}

impl TaskStatus {
    /// The status for its numeric value.
    pub fn from_code(v: i32) -> Self {
        match v {
            1 => Self::Processing,
            2 => Self::Failed,
            3 => Self::Success,
            _ => Self::Pending,
        }
    }

    /// Whether the task is over.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Failed | Self::Success)
    }
}

/// What `query_task` answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskInfo {
    /// The task's id.
    pub id: TaskId,
    /// Copy or move.
    pub kind: TaskKind,
    /// Where it is.
    pub status: TaskStatus,
    /// Creation, Unix time in ms.
    pub created_at_ms: u64,
    /// Last status change, Unix time in ms.
    pub updated_at_ms: u64,
    /// The client that executes it (the source segment's owner).
    pub assigned_client: ClientId,
    /// Empty until finished.
    pub message: String,
}

/// A task handed to its executor by `fetch_tasks`: copy `source` (a replica in the
/// executor's own segment) into every range of `targets`, then report with `finish_task`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskAssignment {
    /// The task's id.
    pub id: TaskId,
    /// Copy or move.
    pub kind: TaskKind,
    /// The object's key.
    pub key: String,
    /// The replica to copy from.
    pub source: ReplicaDescriptor,
    /// Ranges reserved for the new replicas (none when every target already had one).
    pub targets: Vec<ReplicaDescriptor>,
}
