//! Mooncake's `ErrorCode`: the numeric values the C++ store and its Python API return.

/// Mooncake's store error codes (`mooncake-store/include/types.h`), with their numeric
/// values. Every store error maps to exactly one of these; the Python API returns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(i32)]
pub enum ErrorCode {
    /// An unexpected internal failure.
    #[error("internal error")]
    InternalError = -1,
    /// A buffer is too small.
    #[error("buffer overflow")]
    BufferOverflow = -10,
    /// The segment is not mounted.
    #[error("segment not found")]
    SegmentNotFound = -101,
    /// A segment with this id or name is already mounted by another client.
    #[error("segment already exists")]
    SegmentAlreadyExists = -102,
    /// The client id is unknown.
    #[error("client not found")]
    ClientNotFound = -103,
    /// No segment has room for the object (store full and nothing evictable).
    #[error("no available handle: the store is full")]
    NoAvailableHandle = -200,
    /// Client and master speak incompatible protocol versions.
    #[error("invalid protocol version")]
    InvalidVersion = -300,
    /// The key is invalid.
    #[error("invalid key")]
    InvalidKey = -400,
    /// Writing failed.
    #[error("write failed")]
    WriteFail = -500,
    /// A parameter is invalid (empty key, zero size, bad config).
    #[error("invalid parameters")]
    InvalidParams = -600,
    /// Another client started this put.
    #[error("illegal client")]
    IllegalClient = -601,
    /// The object is not in a writable state.
    #[error("invalid write")]
    InvalidWrite = -700,
    /// The object is not in a readable state.
    #[error("invalid read")]
    InvalidRead = -701,
    /// A replica is invalid.
    #[error("invalid replica")]
    InvalidReplica = -702,
    /// No replica of the object is complete yet.
    #[error("replica is not ready")]
    ReplicaIsNotReady = -703,
    /// The key does not exist.
    #[error("object not found")]
    ObjectNotFound = -704,
    /// The key already exists (a put of an existing key).
    #[error("object already exists")]
    ObjectAlreadyExists = -705,
    /// The object is leased by a reader and cannot be removed.
    #[error("object has a lease")]
    ObjectHasLease = -706,
    /// The read lease expired before the read finished.
    #[error("lease expired")]
    LeaseExpired = -707,
    /// A copy or move is in flight.
    #[error("object has a replication task")]
    ObjectHasReplicationTask = -708,
    /// The replica is gone.
    #[error("replica is gone")]
    ReplicaIsGone = -712,
    /// A replica is pinned by another operation.
    #[error("object replica busy")]
    ObjectReplicaBusy = -714,
    /// Moving bytes failed.
    #[error("transfer failed")]
    TransferFail = -800,
    /// The RPC to the master failed (unreachable, connection refused).
    #[error("rpc to the master failed")]
    RpcFail = -900,
    /// The RPC to the master timed out.
    #[error("rpc to the master timed out")]
    RpcTimeout = -901,
    /// The segment's state forbids it (draining, drained, unmounting).
    #[error("unavailable in current status")]
    UnavailableInCurrentStatus = -1010,
    /// The master is not serving (a standby).
    #[error("unavailable in current mode")]
    UnavailableInCurrentMode = -1011,
    /// Not supported by this implementation.
    #[error("not supported")]
    NotSupported = -1012,
    /// No task with that id (never created, or pruned).
    #[error("task not found")]
    TaskNotFound = -1400,
    /// The master's task queue is full.
    #[error("task pending limit exceeded")]
    TaskPendingLimitExceeded = -1401,
    /// No drain job with that id.
    #[error("job not found")]
    JobNotFound = -1402,
    /// A DFS replica was asked for; this master has no DFS tier.
    #[error("dfs service unavailable")]
    DfsServiceUnavailable = -1601,
}

impl ErrorCode {
    /// The numeric value (negative).
    pub fn code(self) -> i32 {
        self as i32
    }

    /// Mooncake's upper-case name (`toString(ErrorCode)`), e.g. `OBJECT_NOT_FOUND`.
    pub fn name(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InternalError => "INTERNAL_ERROR",
            BufferOverflow => "BUFFER_OVERFLOW",
            SegmentNotFound => "SEGMENT_NOT_FOUND",
            SegmentAlreadyExists => "SEGMENT_ALREADY_EXISTS",
            ClientNotFound => "CLIENT_NOT_FOUND",
            NoAvailableHandle => "NO_AVAILABLE_HANDLE",
            InvalidVersion => "INVALID_VERSION",
            InvalidKey => "INVALID_KEY",
            WriteFail => "WRITE_FAIL",
            InvalidParams => "INVALID_PARAMS",
            IllegalClient => "ILLEGAL_CLIENT",
            InvalidWrite => "INVALID_WRITE",
            InvalidRead => "INVALID_READ",
            InvalidReplica => "INVALID_REPLICA",
            ReplicaIsNotReady => "REPLICA_IS_NOT_READY",
            ObjectNotFound => "OBJECT_NOT_FOUND",
            ObjectAlreadyExists => "OBJECT_ALREADY_EXISTS",
            ObjectHasLease => "OBJECT_HAS_LEASE",
            LeaseExpired => "LEASE_EXPIRED",
            ObjectHasReplicationTask => "OBJECT_HAS_REPLICATION_TASK",
            ReplicaIsGone => "REPLICA_IS_GONE",
            ObjectReplicaBusy => "OBJECT_REPLICA_BUSY",
            TransferFail => "TRANSFER_FAIL",
            RpcFail => "RPC_FAIL",
            RpcTimeout => "RPC_TIMEOUT",
            UnavailableInCurrentStatus => "UNAVAILABLE_IN_CURRENT_STATUS",
            UnavailableInCurrentMode => "UNAVAILABLE_IN_CURRENT_MODE",
            NotSupported => "NOT_SUPPORTED",
            TaskNotFound => "TASK_NOT_FOUND",
            TaskPendingLimitExceeded => "TASK_PENDING_LIMIT_EXCEEDED",
            JobNotFound => "JOB_NOT_FOUND",
            DfsServiceUnavailable => "DFS_SERVICE_UNAVAILABLE",
        }
    }

    /// The code for a numeric value; unknown values become `InternalError`.
    pub fn from_code(code: i32) -> Self {
        use ErrorCode::*;
        const ALL: [ErrorCode; 32] = [
            InternalError,
            BufferOverflow,
            SegmentNotFound,
            SegmentAlreadyExists,
            ClientNotFound,
            NoAvailableHandle,
            InvalidVersion,
            InvalidKey,
            WriteFail,
            InvalidParams,
            IllegalClient,
            InvalidWrite,
            InvalidRead,
            InvalidReplica,
            ReplicaIsNotReady,
            ObjectNotFound,
            ObjectAlreadyExists,
            ObjectHasLease,
            LeaseExpired,
            ObjectHasReplicationTask,
            ReplicaIsGone,
            ObjectReplicaBusy,
            TransferFail,
            RpcFail,
            RpcTimeout,
            UnavailableInCurrentStatus,
            UnavailableInCurrentMode,
            NotSupported,
            TaskNotFound,
            TaskPendingLimitExceeded,
            JobNotFound,
            DfsServiceUnavailable,
        ];
        ALL.into_iter()
            .find(|c| c.code() == code)
            .unwrap_or(InternalError)
    }
}

/// Converts a result into Mooncake's integer convention: `0` or the negative code.
pub fn to_code<T>(r: &Result<T, ErrorCode>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.code(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_values_match_mooncake() {
        assert_eq!(ErrorCode::NoAvailableHandle.code(), -200);
        assert_eq!(ErrorCode::InvalidParams.code(), -600);
        assert_eq!(ErrorCode::ObjectNotFound.code(), -704);
        assert_eq!(ErrorCode::ObjectAlreadyExists.code(), -705);
        assert_eq!(ErrorCode::ObjectHasLease.code(), -706);
        assert_eq!(ErrorCode::TransferFail.code(), -800);
        assert_eq!(ErrorCode::RpcFail.code(), -900);
        for c in [
            -1, -10, -101, -200, -300, -600, -703, -704, -705, -706, -800, -900, -901, -1010,
            -1011, -1012, -1400, -1401, -1402, -1601,
        ] {
            assert_eq!(ErrorCode::from_code(c).code(), c);
        }
        assert_eq!(ErrorCode::from_code(-12345), ErrorCode::InternalError);
        assert_eq!(ErrorCode::ObjectNotFound.name(), "OBJECT_NOT_FOUND");
        assert_eq!(
            ErrorCode::UnavailableInCurrentStatus.name(),
            "UNAVAILABLE_IN_CURRENT_STATUS"
        );
        assert_eq!(to_code(&Ok::<(), ErrorCode>(())), 0);
        assert_eq!(to_code(&Err::<(), _>(ErrorCode::ObjectHasLease)), -706);
    }
}
