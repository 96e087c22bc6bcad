//! The wire of reserved slots (`ReserveSlots`, `PutReserved`; ours, see
//! `MasterApi::reserve_slots`): the client's calls and the server's handlers.

use tonic::{Request, Response, Status};

use super::answer::FromClient;
use super::convert::{check, client_from_pb, client_to_pb, config_from_pb};
use super::pb;
use crate::master_api::MasterApi;
use crate::types::{ClientId, ReplicateConfig, ReservedSlot};
use crate::ErrorCode;

impl From<ReservedSlot> for pb::ReservedSlot {
    fn from(s: ReservedSlot) -> Self {
        Self {
            id: s.id,
            replica: Some(s.replica.into()),
        }
    }
}

/// A slot from the wire; `None` without its replica.
fn slot_from_pb(s: pb::ReservedSlot) -> Option<ReservedSlot> {
    Some(ReservedSlot {
        id: s.id,
        replica: s.replica?.into(),
    })
}

// ---- client side ----

/// One `ReserveSlots`. A master without reserved slots answers `UNIMPLEMENTED`, which
/// reaches the caller as an error like any failed call: it puts the usual way.
pub(super) async fn reserve(
    client: &super::client::GrpcMasterClient,
    id: ClientId,
    size: u64,
    count: usize,
) -> Result<Vec<ReservedSlot>, ErrorCode> {
    let (client_hi, client_lo) = client_to_pb(id);
    let req = pb::ReserveSlotsRequest {
        client_hi,
        client_lo,
        size,
        count: u32::try_from(count).unwrap_or(u32::MAX),
    };
    let r = client
        .call(
            "ReserveSlots",
            |mut c| async move { c.reserve_slots(req).await },
        )
        .await?;
    check(r.error_code)?;
    Ok(r.slots.into_iter().filter_map(slot_from_pb).collect())
}

/// One `PutReserved`.
pub(super) async fn put(
    client: &super::client::GrpcMasterClient,
    id: ClientId,
    key: &str,
    slot: u64,
    size: u64,
    config: &ReplicateConfig,
) -> Result<Option<ReservedSlot>, ErrorCode> {
    let (client_hi, client_lo) = client_to_pb(id);
    let req = pb::PutReservedRequest {
        client_hi,
        client_lo,
        key: key.to_owned(),
        slot,
        size,
        config: Some(config.into()),
    };
    let r = client
        .call(
            "PutReserved",
            |mut c| async move { c.put_reserved(req).await },
        )
        .await?;
    check(r.error_code)?;
    Ok(r.next.and_then(slot_from_pb))
}

/// One `BatchPutReserved` (at most `MAX_BATCH_SIZE` items; callers batch no more).
pub(super) async fn batch_put(
    client: &super::client::GrpcMasterClient,
    id: ClientId,
    items: &[(String, u64, u64)],
    config: &ReplicateConfig,
) -> crate::BatchResult<Option<ReservedSlot>> {
    let (client_hi, client_lo) = client_to_pb(id);
    let req = pb::BatchPutReservedRequest {
        client_hi,
        client_lo,
        keys: items.iter().map(|i| i.0.clone()).collect(),
        slots: items.iter().map(|i| i.1).collect(),
        sizes: items.iter().map(|i| i.2).collect(),
        config: Some(config.into()),
    };
    let r = client
        .call("BatchPutReserved", |mut c| async move {
            c.batch_put_reserved(req).await
        })
        .await?;
    super::convert::batch_from_pb(r.error_code, r.results, items.len(), |m| {
        check(m.error_code)?;
        Ok(m.next.and_then(slot_from_pb))
    })
}

/// One `ReleaseSlots`.
pub(super) async fn release(
    client: &super::client::GrpcMasterClient,
    id: ClientId,
    ids: &[u64],
) -> Result<(), ErrorCode> {
    let (client_hi, client_lo) = client_to_pb(id);
    let req = pb::ReleaseSlotsRequest {
        client_hi,
        client_lo,
        ids: ids.to_vec(),
    };
    let r = client
        .call(
            "ReleaseSlots",
            |mut c| async move { c.release_slots(req).await },
        )
        .await?;
    check(r.error_code)
}

// ---- server side ----

impl FromClient for pb::ReserveSlotsRequest {
    fn client(&self) -> ClientId {
        client_from_pb(self.client_hi, self.client_lo)
    }
}

impl FromClient for pb::ReleaseSlotsRequest {
    fn client(&self) -> ClientId {
        client_from_pb(self.client_hi, self.client_lo)
    }
}

impl FromClient for pb::BatchPutReservedRequest {
    fn client(&self) -> ClientId {
        client_from_pb(self.client_hi, self.client_lo)
    }
}

impl FromClient for pb::PutReservedRequest {
    fn client(&self) -> ClientId {
        client_from_pb(self.client_hi, self.client_lo)
    }
}

pub(super) async fn serve_reserve(
    api: &dyn MasterApi,
    req: Request<pb::ReserveSlotsRequest>,
) -> Result<Response<pb::ReserveSlotsResponse>, Status> {
    let r = req.into_inner();
    let answer = match api
        .reserve_slots(r.client(), r.size, r.count as usize)
        .await
    {
        Ok(slots) => pb::ReserveSlotsResponse {
            error_code: 0,
            slots: slots.into_iter().map(Into::into).collect(),
        },
        Err(e) => pb::ReserveSlotsResponse {
            error_code: e.code(),
            slots: Vec::new(),
        },
    };
    Ok(Response::new(answer))
}

pub(super) async fn serve_put(
    api: &dyn MasterApi,
    req: Request<pb::PutReservedRequest>,
) -> Result<Response<pb::PutReservedResponse>, Status> {
    let r = req.into_inner();
    let client = r.client();
    let result = match config_from_pb(r.config) {
        Ok(config) => {
            api.put_reserved(client, &r.key, r.slot, r.size, &config)
                .await
        }
        Err(e) => Err(e),
    };
    Ok(Response::new(put_answer(result)))
}

/// The answer of one item (or of a whole call, as its code).
fn put_answer(r: Result<Option<ReservedSlot>, ErrorCode>) -> pb::PutReservedResponse {
    match r {
        Ok(next) => pb::PutReservedResponse {
            error_code: 0,
            next: next.map(Into::into),
        },
        Err(e) => pb::PutReservedResponse {
            error_code: e.code(),
            next: None,
        },
    }
}

pub(super) async fn serve_batch_put(
    api: &dyn MasterApi,
    req: Request<pb::BatchPutReservedRequest>,
) -> Result<Response<pb::BatchPutReservedResponse>, Status> {
    let r = req.into_inner();
    let client = r.client();
    let n = r.keys.len();
    let result = if r.slots.len() != n || r.sizes.len() != n {
        Err(ErrorCode::InvalidParams)
    } else {
        match config_from_pb(r.config) {
            Ok(config) => {
                let items: Vec<(String, u64, u64)> = r
                    .keys
                    .into_iter()
                    .zip(r.slots)
                    .zip(r.sizes)
                    .map(|((k, s), n)| (k, s, n))
                    .collect();
                api.batch_put_reserved(client, &items, &config).await
            }
            Err(e) => Err(e),
        }
    };
    let answer = match result {
        Ok(results) => pb::BatchPutReservedResponse {
            error_code: 0,
            results: results.into_iter().map(put_answer).collect(),
        },
        Err(e) => pb::BatchPutReservedResponse {
            error_code: e.code(),
            results: Vec::new(),
        },
    };
    Ok(Response::new(answer))
}

pub(super) async fn serve_release(
    api: &dyn MasterApi,
    req: Request<pb::ReleaseSlotsRequest>,
) -> Result<Response<pb::StatusResponse>, Status> {
    let r = req.into_inner();
    let done = api.release_slots(r.client(), &r.ids).await;
    Ok(Response::new(done.into()))
}
