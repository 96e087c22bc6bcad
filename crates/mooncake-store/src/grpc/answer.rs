//! The server's side of every RPC's shape, written once: the caller's client id read from
//! any request that carries one, and every result turned into its wire answer (`error_code`
//! 0 with the value, or the store's code with an empty value; batches with their per-item
//! answers). The handlers in `server.rs` are then one call each.

use super::convert::{batch_to_pb, client_from_pb, code_of};
use super::pb;
use crate::task::{TaskAssignment, TaskId, TaskInfo};
use crate::types::{ClientId, DrainMove, ReplicaDescriptor, ReplicaList};
use crate::{BatchResult, ErrorCode};

/// A request naming its caller (`client_hi`, `client_lo`).
pub(super) trait FromClient {
    /// The caller's client id.
    fn client(&self) -> ClientId;
}

macro_rules! from_client {
    ($($request:ty),* $(,)?) => {$(
        impl FromClient for $request {
            fn client(&self) -> ClientId {
                client_from_pb(self.client_hi, self.client_lo)
            }
        }
    )*};
}

from_client!(
    pb::MountSegmentRequest,
    pb::RemountSegmentsRequest,
    pb::UnmountSegmentRequest,
    pb::PingRequest,
    pb::PutStartRequest,
    pb::BatchPutStartRequest,
    pb::ClientKeyRequest,
    pb::ClientKeysRequest,
    pb::DrainStartRequest,
    pb::DrainEndRequest,
    pb::ReplicaClearRequest,
    pb::FinishTaskRequest,
);

impl From<Result<(), ErrorCode>> for pb::StatusResponse {
    fn from(r: Result<(), ErrorCode>) -> Self {
        Self {
            error_code: code_of(&r),
        }
    }
}

/// `From<Result<T, ErrorCode>>` for an answer whose fields other than `error_code` carry
/// the value, and are left empty on an error.
macro_rules! answer {
    ($response:ty, $value:ty, |$v:ident| { $($field:ident: $expr:expr),* $(,)? }) => {
        impl From<Result<$value, ErrorCode>> for $response {
            fn from(r: Result<$value, ErrorCode>) -> Self {
                match r {
                    Ok($v) => Self { error_code: 0, $($field: $expr),* },
                    Err(e) => Self { error_code: e.code(), ..Self::default() },
                }
            }
        }
    };
}

answer!(pb::DrainStartResponse, Vec<DrainMove>, |moves| {
    moves: moves
        .into_iter()
        .map(|m| pb::DrainMove {
            key: m.key,
            source: Some(m.source.into()),
            target: m.target.map(Into::into),
        })
        .collect(),
});
answer!(pb::KeysResponse, Vec<String>, |keys| { keys: keys });
answer!(pb::ExplainResponse, String, |json| { json: json });
answer!(pb::QueryTaskResponse, TaskInfo, |task| { task: Some(task.into()) });
answer!(pb::FetchTasksResponse, Vec<TaskAssignment>, |tasks| {
    tasks: tasks.into_iter().map(Into::into).collect(),
});
answer!(pb::TaskIdResponse, TaskId, |id| {
    id_hi: id.halves().0,
    id_lo: id.halves().1,
});

/// `From<BatchResult<T>>` for a batch answer: the outer code and one item answer each.
macro_rules! batch_answer {
    ($($response:ty => $value:ty as $item:ty),* $(,)?) => {$(
        impl From<BatchResult<$value>> for $response {
            fn from(r: BatchResult<$value>) -> Self {
                let (error_code, results) = batch_to_pb(r, <$item>::from);
                Self { error_code, results }
            }
        }
    )*};
}

batch_answer!(
    pb::BatchStatusResponse => () as pb::StatusResponse,
    pb::BatchExistKeyResponse => bool as pb::ExistKeyResponse,
    pb::BatchGetReplicaListResponse => ReplicaList as pb::GetReplicaListResponse,
    pb::BatchPutStartResponse => Vec<ReplicaDescriptor> as pb::PutStartResponse,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_carry_the_value_or_the_code_and_nothing_else() {
        let r = pb::BatchStatusResponse::from(Ok(vec![Ok(()), Err(ErrorCode::ObjectNotFound)]));
        assert_eq!(r.error_code, 0);
        assert_eq!(
            r.results.iter().map(|m| m.error_code).collect::<Vec<_>>(),
            vec![0, -704]
        );
        let r = pb::BatchStatusResponse::from(Err(ErrorCode::InternalError));
        assert_eq!((r.error_code, r.results.len()), (-1, 0));
        let id = TaskId::from_halves(7, 9);
        let r = pb::TaskIdResponse::from(Ok(id));
        assert_eq!((r.error_code, r.id_hi, r.id_lo), (0, 7, 9));
        let r = pb::TaskIdResponse::from(Err(ErrorCode::TaskNotFound));
        assert_eq!((r.id_hi, r.id_lo), (0, 0));
        assert_eq!(r.error_code, ErrorCode::TaskNotFound.code());
        let r = pb::KeysResponse::from(Err(ErrorCode::InvalidParams));
        assert!(r.keys.is_empty() && r.error_code == ErrorCode::InvalidParams.code());
        let r = pb::PingRequest {
            client_hi: 1,
            client_lo: 2,
        };
        assert_eq!(r.client(), client_from_pb(1, 2));
    }
}
