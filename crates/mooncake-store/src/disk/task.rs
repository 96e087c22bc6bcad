//! The messages between the master and a holder's disk tier (the wire types of
//! `MountDiskTier`, `PollDiskTasks` and `FinishDiskTasks`).

/// One complete record on a holder's disk: what the holder reports when it mounts its
/// tier (after a scan) and when its LRU evicts a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskRecord {
    /// The object key.
    pub key: String,
    /// The object version the record holds (see [`crate::ReplicaDescriptor::version`]).
    pub version: u64,
    /// Value bytes.
    pub size: u64,
    /// CRC-32C of the value, as recorded in the record's header.
    pub checksum: u32,
}

/// What the master asks a holder's disk tier to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskTaskKind {
    /// Copy `[address, +size)` of the holder's own segment into a new disk record.
    Demote,
    /// Read the record into `[address, +size)` of the holder's own segment.
    Load,
    /// Delete the record (the object was removed or replaced).
    Delete,
}

/// One disk task, assigned to the owner of the segment that holds the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskTask {
    /// The master's id of this task (echoed in [`DiskTaskResult`]).
    pub id: u64,
    /// What to do.
    pub kind: DiskTaskKind,
    /// The object key.
    pub key: String,
    /// The object version.
    pub version: u64,
    /// Value bytes.
    pub size: u64,
    /// Absolute address in the holder's segment: the source of a demotion, the target of
    /// a load; 0 for a delete.
    pub address: u64,
}

/// How a disk task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskOutcome {
    /// Done: the record is complete (demote), the bytes are in memory (load), or the
    /// record is gone (delete).
    Done,
    /// The device is full (`ENOSPC`) or the tier cannot make room: the object is evicted
    /// instead of demoted.
    Full,
    /// The record is missing or failed its checksum: it is dropped, never served.
    Corrupt,
    /// Any other failure (I/O error, range not in the segment).
    Failed,
}

/// The answer to one [`DiskTask`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskTaskResult {
    /// The task's id.
    pub id: u64,
    /// How it ended.
    pub outcome: DiskOutcome,
}

impl DiskOutcome {
    /// The wire value (`0` done, `1` full, `2` corrupt, `3` failed).
    pub fn to_wire(self) -> i32 {
        match self {
            DiskOutcome::Done => 0,
            DiskOutcome::Full => 1,
            DiskOutcome::Corrupt => 2,
            DiskOutcome::Failed => 3,
        }
    }

    /// Decodes a wire value; unknown values are failures.
    pub fn from_wire(v: i32) -> Self {
        match v {
            0 => DiskOutcome::Done,
            1 => DiskOutcome::Full,
            2 => DiskOutcome::Corrupt,
            _ => DiskOutcome::Failed,
        }
    }
}

impl DiskTaskKind {
    /// The wire value (`0` demote, `1` load, `2` delete).
    pub fn to_wire(self) -> i32 {
        match self {
            DiskTaskKind::Demote => 0,
            DiskTaskKind::Load => 1,
            DiskTaskKind::Delete => 2,
        }
    }

    /// Decodes a wire value (`None` for an unknown kind, which the holder skips).
    pub fn from_wire(v: i32) -> Option<Self> {
        match v {
            0 => Some(DiskTaskKind::Demote),
            1 => Some(DiskTaskKind::Load),
            2 => Some(DiskTaskKind::Delete),
            _ => None,
        }
    }
}
