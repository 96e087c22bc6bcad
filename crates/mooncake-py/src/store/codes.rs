//! The wheel's integer results (`python-api.md` §1) from the clients' `Result`s.

use mooncake_store::{ErrorCode, TaskId};

/// -600, the code of a malformed call.
pub(super) const INVALID: i32 = ErrorCode::InvalidParams as i32;

/// A task id as the wheel shows it: `(hi, lo)`.
pub(super) type PyTaskId = (u64, u64);

/// `(task_id, 0)` or `((0, 0), code)`.
pub(super) fn task_id_result(r: Result<TaskId, ErrorCode>) -> (PyTaskId, i32) {
    match r {
        Ok(id) => (id.halves(), 0),
        Err(e) => ((0, 0), e.code()),
    }
}

/// A size, or a negative code.
pub(super) fn size_code(r: Result<u64, ErrorCode>) -> i64 {
    match r {
        Ok(n) => n as i64,
        Err(e) => e.code().into(),
    }
}

/// 1 exists, 0 does not, or a negative code.
pub(super) fn exist_code(r: Result<bool, ErrorCode>) -> i32 {
    match r {
        Ok(b) => i32::from(b),
        Err(e) => e.code(),
    }
}
