//! The disk-tier RPCs on the wire: conversions, the client calls and the server handlers
//! (kept here so the general client and server stay small).

use std::time::Duration;

use tonic::{Request, Response, Status};

use super::convert::{check, client_to_pb, join, split};
use super::pb;
use crate::disk::{DiskOutcome, DiskRecord, DiskTask, DiskTaskKind, DiskTaskResult};
use crate::master_api::MasterApi;
use crate::types::{ClientId, SegmentId};
use crate::ErrorCode;

/// The longest a master holds a poll (a larger `wait_ms` is cut to it).
pub(crate) const MAX_POLL_WAIT: Duration = Duration::from_secs(5);

impl From<&DiskRecord> for pb::DiskRecord {
    fn from(r: &DiskRecord) -> Self {
        Self {
            key: r.key.clone(),
            version: r.version,
            size: r.size,
            checksum: r.checksum,
        }
    }
}

impl From<pb::DiskRecord> for DiskRecord {
    fn from(r: pb::DiskRecord) -> Self {
        Self {
            key: r.key,
            version: r.version,
            size: r.size,
            checksum: r.checksum,
        }
    }
}

fn ids(client: ClientId, segment: SegmentId) -> (u64, u64, u64, u64) {
    let (client_hi, client_lo) = client_to_pb(client);
    let (segment_hi, segment_lo) = split(segment.0);
    (client_hi, client_lo, segment_hi, segment_lo)
}

fn caller(hi: u64, lo: u64, shi: u64, slo: u64) -> (ClientId, SegmentId) {
    (ClientId(join(hi, lo)), SegmentId(join(shi, slo)))
}

// ---- client side ----

pub(super) fn mount_request(
    client: ClientId,
    segment: SegmentId,
    capacity: u64,
    records: &[DiskRecord],
) -> pb::MountDiskTierRequest {
    let (client_hi, client_lo, segment_hi, segment_lo) = ids(client, segment);
    pb::MountDiskTierRequest {
        client_hi,
        client_lo,
        segment_hi,
        segment_lo,
        capacity,
        records: records.iter().map(Into::into).collect(),
    }
}

pub(super) fn mount_answer(r: pb::MountDiskTierResponse) -> Result<Vec<DiskRecord>, ErrorCode> {
    check(r.error_code)?;
    Ok(r.stale.into_iter().map(Into::into).collect())
}

pub(super) fn poll_request(
    client: ClientId,
    segment: SegmentId,
    wait: Duration,
) -> pb::PollDiskTasksRequest {
    let (client_hi, client_lo, segment_hi, segment_lo) = ids(client, segment);
    pb::PollDiskTasksRequest {
        client_hi,
        client_lo,
        segment_hi,
        segment_lo,
        wait_ms: wait.as_millis().min(u128::from(u32::MAX)) as u32,
    }
}

pub(super) fn poll_answer(r: pb::PollDiskTasksResponse) -> Result<Vec<DiskTask>, ErrorCode> {
    check(r.error_code)?;
    Ok(r.tasks
        .into_iter()
        .filter_map(|t| {
            Some(DiskTask {
                id: t.id,
                kind: DiskTaskKind::from_wire(t.kind)?,
                key: t.key,
                version: t.version,
                size: t.size,
                address: t.address,
            })
        })
        .collect())
}

pub(super) fn finish_request(
    client: ClientId,
    segment: SegmentId,
    results: &[DiskTaskResult],
    evicted: &[DiskRecord],
) -> pb::FinishDiskTasksRequest {
    let (client_hi, client_lo, segment_hi, segment_lo) = ids(client, segment);
    pb::FinishDiskTasksRequest {
        client_hi,
        client_lo,
        segment_hi,
        segment_lo,
        results: results
            .iter()
            .map(|r| pb::DiskTaskResult {
                id: r.id,
                outcome: r.outcome.to_wire(),
            })
            .collect(),
        evicted: evicted.iter().map(Into::into).collect(),
    }
}

/// `BatchGetReplicaListOrLoad` from `client`, in calls of at most `MAX_BATCH_SIZE` keys.
pub(super) async fn lookup_or_load(
    client: &super::client::GrpcMasterClient,
    keys: &[String],
) -> crate::BatchResult<crate::types::ReplicaList> {
    if keys.len() > crate::types::MAX_BATCH_SIZE {
        return crate::master_api::chunked(keys, |c| or_load_call(client, c)).await;
    }
    or_load_call(client, keys).await
}

/// One `BatchGetReplicaListOrLoad`; a master from before this call answers
/// `UNIMPLEMENTED` (or one failed): then the waiting `BatchGetReplicaList`, as before.
async fn or_load_call(
    client: &super::client::GrpcMasterClient,
    keys: &[String],
) -> crate::BatchResult<crate::types::ReplicaList> {
    let req = pb::KeysRequest { keys: keys.into() };
    let call =
        |mut c: super::client::Rpc| async move { c.batch_get_replica_list_or_load(req).await };
    match client.call("BatchGetReplicaListOrLoad", call).await {
        Ok(r) => super::convert::batch_from_pb(
            r.error_code,
            r.results,
            keys.len(),
            crate::types::ReplicaList::try_from,
        ),
        Err(_) => client.batch_get_replica_list(keys).await,
    }
}

// ---- server side ----

type RpcResult<T> = Result<Response<T>, Status>;

pub(super) async fn serve_mount(
    api: &dyn MasterApi,
    req: Request<pb::MountDiskTierRequest>,
) -> RpcResult<pb::MountDiskTierResponse> {
    let r = req.into_inner();
    let (client, segment) = caller(r.client_hi, r.client_lo, r.segment_hi, r.segment_lo);
    let records: Vec<DiskRecord> = r.records.into_iter().map(Into::into).collect();
    let answer = match api
        .mount_disk_tier(client, segment, r.capacity, records)
        .await
    {
        Ok(stale) => pb::MountDiskTierResponse {
            error_code: 0,
            stale: stale.iter().map(Into::into).collect(),
        },
        Err(e) => pb::MountDiskTierResponse {
            error_code: e.code(),
            stale: Vec::new(),
        },
    };
    Ok(Response::new(answer))
}

pub(super) async fn serve_poll(
    api: &dyn MasterApi,
    req: Request<pb::PollDiskTasksRequest>,
) -> RpcResult<pb::PollDiskTasksResponse> {
    let r = req.into_inner();
    let (client, segment) = caller(r.client_hi, r.client_lo, r.segment_hi, r.segment_lo);
    let wait = Duration::from_millis(u64::from(r.wait_ms)).min(MAX_POLL_WAIT);
    let answer = match api.poll_disk_tasks(client, segment, wait).await {
        Ok(tasks) => pb::PollDiskTasksResponse {
            error_code: 0,
            tasks: tasks
                .into_iter()
                .map(|t| pb::DiskTask {
                    id: t.id,
                    kind: t.kind.to_wire(),
                    key: t.key,
                    version: t.version,
                    size: t.size,
                    address: t.address,
                })
                .collect(),
        },
        Err(e) => pb::PollDiskTasksResponse {
            error_code: e.code(),
            tasks: Vec::new(),
        },
    };
    Ok(Response::new(answer))
}

pub(super) async fn serve_finish(
    api: &dyn MasterApi,
    req: Request<pb::FinishDiskTasksRequest>,
) -> RpcResult<pb::StatusResponse> {
    let r = req.into_inner();
    let (client, segment) = caller(r.client_hi, r.client_lo, r.segment_hi, r.segment_lo);
    let results: Vec<DiskTaskResult> = r
        .results
        .iter()
        .map(|x| DiskTaskResult {
            id: x.id,
            outcome: DiskOutcome::from_wire(x.outcome),
        })
        .collect();
    let evicted: Vec<DiskRecord> = r.evicted.into_iter().map(Into::into).collect();
    let res = api
        .finish_disk_tasks(client, segment, &results, &evicted)
        .await;
    Ok(Response::new(res.into()))
}
