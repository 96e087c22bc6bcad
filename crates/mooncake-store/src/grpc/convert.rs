//! Conversions between the generated wire messages ([`pb`]) and the domain types.
//!
//! Domain → wire is infallible (`From`); wire → domain is fallible (`TryFrom`, or the
//! `*_from_pb` helpers): an unknown enum value, a missing message or a malformed batch
//! becomes [`ErrorCode::InvalidParams`], never a panic.

use super::pb;
use crate::task::{TaskAssignment, TaskId, TaskInfo, TaskKind, TaskStatus};
use crate::types::{
    ClientId, ClientStatus, Pin, PingReply, ProtocolVersion, ReplicaDescriptor, ReplicaList,
    ReplicateConfig, Segment, SegmentId,
};
use crate::ErrorCode;

/// Splits a 128-bit id into its `(hi, lo)` wire halves.
pub(crate) fn split(id: u128) -> (u64, u64) {
    ((id >> 64) as u64, id as u64)
}

/// Joins the `(hi, lo)` wire halves of a 128-bit id.
pub(crate) fn join(hi: u64, lo: u64) -> u128 {
    (u128::from(hi) << 64) | u128::from(lo)
}

/// The wire halves of a client id.
pub(crate) fn client_to_pb(client: ClientId) -> (u64, u64) {
    split(client.0)
}

/// A client id from its wire halves.
pub(crate) fn client_from_pb(hi: u64, lo: u64) -> ClientId {
    ClientId(join(hi, lo))
}

/// The wire `error_code` of a result: `0` or Mooncake's negative code.
pub(crate) fn code_of<T>(r: &Result<T, ErrorCode>) -> i32 {
    crate::to_code(r)
}

/// A wire `error_code` back into a result. Codes this build does not know become
/// `InternalError` (as [`ErrorCode::from_code`] does), so a newer master's errors stay errors.
pub(crate) fn check(code: i32) -> Result<(), ErrorCode> {
    if code == 0 {
        Ok(())
    } else {
        Err(ErrorCode::from_code(code))
    }
}

/// The per-item results of a batch response, checked against the request's item count.
pub(crate) fn batch_from_pb<M, T>(
    code: i32,
    results: Vec<M>,
    expected: usize,
    item: impl Fn(M) -> Result<T, ErrorCode>,
) -> Result<Vec<Result<T, ErrorCode>>, ErrorCode> {
    check(code)?;
    if results.len() != expected {
        return Err(ErrorCode::InvalidParams);
    }
    Ok(results.into_iter().map(item).collect())
}

/// The wire form of a batch result: the outer code and the per-item messages.
pub(crate) fn batch_to_pb<T, M>(
    r: Result<Vec<Result<T, ErrorCode>>, ErrorCode>,
    item: impl Fn(Result<T, ErrorCode>) -> M,
) -> (i32, Vec<M>) {
    match r {
        Ok(items) => (0, items.into_iter().map(item).collect()),
        Err(e) => (e.code(), Vec::new()),
    }
}

impl From<ProtocolVersion> for pb::ConnectRequest {
    fn from(v: ProtocolVersion) -> Self {
        Self {
            major: v.major,
            minor: v.minor,
        }
    }
}

impl From<pb::ConnectRequest> for ProtocolVersion {
    fn from(v: pb::ConnectRequest) -> Self {
        Self {
            major: v.major,
            minor: v.minor,
        }
    }
}

impl From<Result<ProtocolVersion, ErrorCode>> for pb::ConnectResponse {
    fn from(r: Result<ProtocolVersion, ErrorCode>) -> Self {
        let v = r.unwrap_or(ProtocolVersion { major: 0, minor: 0 });
        Self {
            error_code: code_of(&r),
            major: v.major,
            minor: v.minor,
        }
    }
}

impl TryFrom<pb::ConnectResponse> for ProtocolVersion {
    type Error = ErrorCode;
    fn try_from(r: pb::ConnectResponse) -> Result<Self, ErrorCode> {
        check(r.error_code)?;
        Ok(Self {
            major: r.major,
            minor: r.minor,
        })
    }
}

impl From<Segment> for pb::Segment {
    fn from(s: Segment) -> Self {
        let (id_hi, id_lo) = split(s.id.0);
        Self {
            id_hi,
            id_lo,
            name: s.name,
            base: s.base,
            size: s.size,
            te_endpoint: s.te_endpoint,
            protocol: s.protocol,
            host_id: s.host_id,
            durable: s.durable,
        }
    }
}

impl From<pb::Segment> for Segment {
    fn from(s: pb::Segment) -> Self {
        Self {
            id: SegmentId(join(s.id_hi, s.id_lo)),
            name: s.name,
            base: s.base,
            size: s.size,
            te_endpoint: s.te_endpoint,
            protocol: s.protocol,
            host_id: s.host_id,
            durable: s.durable,
        }
    }
}

/// A required segment field: missing is `InvalidParams`.
pub(crate) fn segment_from_pb(s: Option<pb::Segment>) -> Result<Segment, ErrorCode> {
    s.map(Segment::from).ok_or(ErrorCode::InvalidParams)
}

impl From<Pin> for pb::Pin {
    fn from(p: Pin) -> Self {
        match p {
            Pin::None => pb::Pin::None,
            Pin::Soft => pb::Pin::Soft,
            Pin::Hard => pb::Pin::Hard,
        }
    }
}

/// A wire pin value; unknown values are `InvalidParams`.
pub(crate) fn pin_from_pb(v: i32) -> Result<Pin, ErrorCode> {
    match pb::Pin::try_from(v).map_err(|_| ErrorCode::InvalidParams)? {
        pb::Pin::None => Ok(Pin::None),
        pb::Pin::Soft => Ok(Pin::Soft),
        pb::Pin::Hard => Ok(Pin::Hard),
    }
}

impl From<&ReplicateConfig> for pb::ReplicateConfig {
    fn from(c: &ReplicateConfig) -> Self {
        Self {
            // usize is at most 64 bits on every target Rust supports.
            replica_num: c.replica_num as u64,
            pin: pb::Pin::from(c.pin) as i32,
            preferred_segments: c.preferred_segments.clone(),
            prefer_alloc_in_same_node: c.prefer_alloc_in_same_node,
            excluded_segments: c.excluded_segments.clone(),
            soft_pin_ttl_ms: c.soft_pin_ttl_ms,
            checksum: c.checksum,
        }
    }
}

/// A required replicate config: missing, an unknown pin or a replica count that does not
/// fit `usize` is `InvalidParams`.
pub(crate) fn config_from_pb(c: Option<pb::ReplicateConfig>) -> Result<ReplicateConfig, ErrorCode> {
    let c = c.ok_or(ErrorCode::InvalidParams)?;
    Ok(ReplicateConfig {
        replica_num: usize::try_from(c.replica_num).map_err(|_| ErrorCode::InvalidParams)?,
        pin: pin_from_pb(c.pin)?,
        preferred_segments: c.preferred_segments,
        prefer_alloc_in_same_node: c.prefer_alloc_in_same_node,
        excluded_segments: c.excluded_segments,
        soft_pin_ttl_ms: c.soft_pin_ttl_ms,
        checksum: c.checksum,
    })
}

impl From<ReplicaDescriptor> for pb::ReplicaDescriptor {
    fn from(r: ReplicaDescriptor) -> Self {
        Self {
            buffer_address: r.buffer_address,
            size: r.size,
            object_version: r.version,
            transport_endpoint: r.transport_endpoint,
            protocol: r.protocol,
            segment_name: r.segment_name,
        }
    }
}

impl From<pb::ReplicaDescriptor> for ReplicaDescriptor {
    fn from(r: pb::ReplicaDescriptor) -> Self {
        Self {
            buffer_address: r.buffer_address,
            size: r.size,
            version: r.object_version,
            transport_endpoint: r.transport_endpoint,
            protocol: r.protocol,
            segment_name: r.segment_name,
        }
    }
}

impl From<TaskInfo> for pb::TaskInfo {
    fn from(t: TaskInfo) -> Self {
        let (id_hi, id_lo) = t.id.halves();
        let (client_hi, client_lo) = client_to_pb(t.assigned_client);
        Self {
            id_hi,
            id_lo,
            kind: t.kind as i32,
            status: t.status as i32,
            created_at_ms: t.created_at_ms,
            updated_at_ms: t.updated_at_ms,
            client_hi,
            client_lo,
            message: t.message,
        }
    }
}

fn kind_from_pb(v: i32) -> TaskKind {
    if v == TaskKind::Move as i32 {
        TaskKind::Move
    } else {
        TaskKind::Copy
    }
}

impl From<pb::TaskInfo> for TaskInfo {
    fn from(t: pb::TaskInfo) -> Self {
        Self {
            id: TaskId::from_halves(t.id_hi, t.id_lo),
            kind: kind_from_pb(t.kind),
            status: TaskStatus::from_code(t.status),
            created_at_ms: t.created_at_ms,
            updated_at_ms: t.updated_at_ms,
            assigned_client: client_from_pb(t.client_hi, t.client_lo),
            message: t.message,
        }
    }
}

impl From<TaskAssignment> for pb::TaskAssignment {
    fn from(t: TaskAssignment) -> Self {
        let (id_hi, id_lo) = t.id.halves();
        Self {
            id_hi,
            id_lo,
            kind: t.kind as i32,
            key: t.key,
            source: Some(t.source.into()),
            targets: replicas_to_pb(t.targets),
        }
    }
}

/// A fetched task; one without a source replica is `InvalidParams`.
pub(crate) fn assignment_from_pb(t: pb::TaskAssignment) -> Result<TaskAssignment, ErrorCode> {
    Ok(TaskAssignment {
        id: TaskId::from_halves(t.id_hi, t.id_lo),
        kind: kind_from_pb(t.kind),
        key: t.key,
        source: t.source.ok_or(ErrorCode::InvalidParams)?.into(),
        targets: replicas_from_pb(t.targets),
    })
}

fn replicas_to_pb(rs: Vec<ReplicaDescriptor>) -> Vec<pb::ReplicaDescriptor> {
    rs.into_iter().map(pb::ReplicaDescriptor::from).collect()
}

fn replicas_from_pb(rs: Vec<pb::ReplicaDescriptor>) -> Vec<ReplicaDescriptor> {
    rs.into_iter().map(ReplicaDescriptor::from).collect()
}

impl From<Result<ReplicaList, ErrorCode>> for pb::GetReplicaListResponse {
    fn from(r: Result<ReplicaList, ErrorCode>) -> Self {
        match r {
            Ok(l) => Self {
                error_code: 0,
                replicas: replicas_to_pb(l.replicas),
                lease_ttl_ms: l.lease_ttl_ms,
                checksum: l.checksum,
                disk_segments: l.disk_segments,
            },
            Err(e) => Self {
                error_code: e.code(),
                ..Default::default()
            },
        }
    }
}

impl TryFrom<pb::GetReplicaListResponse> for ReplicaList {
    type Error = ErrorCode;
    fn try_from(r: pb::GetReplicaListResponse) -> Result<Self, ErrorCode> {
        check(r.error_code)?;
        Ok(Self {
            replicas: replicas_from_pb(r.replicas),
            lease_ttl_ms: r.lease_ttl_ms,
            checksum: r.checksum,
            disk_segments: r.disk_segments,
        })
    }
}

impl From<Result<Vec<ReplicaDescriptor>, ErrorCode>> for pb::PutStartResponse {
    fn from(r: Result<Vec<ReplicaDescriptor>, ErrorCode>) -> Self {
        match r {
            Ok(rs) => Self {
                error_code: 0,
                replicas: replicas_to_pb(rs),
            },
            Err(e) => Self {
                error_code: e.code(),
                replicas: Vec::new(),
            },
        }
    }
}

/// The replicas of a put-start response.
pub(crate) fn put_start_from_pb(
    r: pb::PutStartResponse,
) -> Result<Vec<ReplicaDescriptor>, ErrorCode> {
    check(r.error_code)?;
    Ok(replicas_from_pb(r.replicas))
}

impl From<Result<bool, ErrorCode>> for pb::ExistKeyResponse {
    fn from(r: Result<bool, ErrorCode>) -> Self {
        Self {
            error_code: code_of(&r),
            exists: r.unwrap_or(false),
        }
    }
}

/// The answer of an exist-key response.
pub(crate) fn exist_from_pb(r: pb::ExistKeyResponse) -> Result<bool, ErrorCode> {
    check(r.error_code)?;
    Ok(r.exists)
}

impl From<Result<PingReply, ErrorCode>> for pb::PingResponse {
    fn from(r: Result<PingReply, ErrorCode>) -> Self {
        match r {
            Ok(p) => Self {
                error_code: 0,
                view_version: p.view_version,
                status: match p.status {
                    ClientStatus::Ok => pb::ClientStatus::Ok,
                    ClientStatus::NeedRemount => pb::ClientStatus::NeedRemount,
                } as i32,
            },
            Err(e) => Self {
                error_code: e.code(),
                ..Default::default()
            },
        }
    }
}

impl TryFrom<pb::PingResponse> for PingReply {
    type Error = ErrorCode;
    fn try_from(r: pb::PingResponse) -> Result<Self, ErrorCode> {
        check(r.error_code)?;
        let status = match pb::ClientStatus::try_from(r.status) {
            Ok(pb::ClientStatus::Ok) => ClientStatus::Ok,
            Ok(pb::ClientStatus::NeedRemount) => ClientStatus::NeedRemount,
            Ok(pb::ClientStatus::Unspecified) | Err(_) => return Err(ErrorCode::InvalidParams),
        };
        Ok(Self {
            view_version: r.view_version,
            status,
        })
    }
}

impl From<Result<u64, ErrorCode>> for pb::RemoveAllResponse {
    fn from(r: Result<u64, ErrorCode>) -> Self {
        Self {
            error_code: code_of(&r),
            removed: r.unwrap_or(0),
        }
    }
}

/// Zips a batch put-start request's parallel lists; different lengths are `InvalidParams`.
pub(crate) fn put_items_from_pb(
    keys: Vec<String>,
    sizes: Vec<u64>,
) -> Result<Vec<(String, u64)>, ErrorCode> {
    if keys.len() != sizes.len() {
        return Err(ErrorCode::InvalidParams);
    }
    Ok(keys.into_iter().zip(sizes).collect())
}

/// The request of a call on one key by `client`.
pub(super) fn key_request(client: ClientId, key: &str) -> pb::ClientKeyRequest {
    let (client_hi, client_lo) = client_to_pb(client);
    pb::ClientKeyRequest {
        client_hi,
        client_lo,
        key: key.to_owned(),
    }
}

/// The request of a call on many keys by `client`.
pub(super) fn keys_request(client: ClientId, keys: &[String]) -> pb::ClientKeysRequest {
    let (client_hi, client_lo) = client_to_pb(client);
    pb::ClientKeysRequest {
        client_hi,
        client_lo,
        keys: keys.to_vec(),
    }
}

/// The request of a `PutStart` (or `UpsertStart`).
pub(super) fn put_start_request(
    client: ClientId,
    key: &str,
    size: u64,
    config: &ReplicateConfig,
) -> pb::PutStartRequest {
    let (client_hi, client_lo) = client_to_pb(client);
    pb::PutStartRequest {
        client_hi,
        client_lo,
        key: key.to_owned(),
        size,
        config: Some(config.into()),
    }
}

/// The per-key results of a batch status answer.
pub(super) fn status_batch(r: pb::BatchStatusResponse, expected: usize) -> crate::BatchResult<()> {
    batch_from_pb(r.error_code, r.results, expected, |m| check(m.error_code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_split_and_join() {
        for id in [
            0u128,
            1,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
            1 << 64,
        ] {
            let (hi, lo) = split(id);
            assert_eq!(join(hi, lo), id);
        }
        assert_eq!(split(1 << 64), (1, 0));
    }

    #[test]
    fn unknown_wire_values_are_invalid_params() {
        assert_eq!(pin_from_pb(7), Err(ErrorCode::InvalidParams));
        assert_eq!(pin_from_pb(-1), Err(ErrorCode::InvalidParams));
        assert_eq!(pin_from_pb(2), Ok(Pin::Hard));
        assert_eq!(config_from_pb(None), Err(ErrorCode::InvalidParams));
        assert_eq!(segment_from_pb(None), Err(ErrorCode::InvalidParams));
        let bad = pb::PingResponse {
            error_code: 0,
            view_version: 1,
            status: 0,
        };
        assert_eq!(PingReply::try_from(bad), Err(ErrorCode::InvalidParams));
        let bad = pb::PingResponse {
            error_code: 0,
            view_version: 1,
            status: 99,
        };
        assert_eq!(PingReply::try_from(bad), Err(ErrorCode::InvalidParams));
        assert_eq!(
            put_items_from_pb(vec!["a".into()], vec![]),
            Err(ErrorCode::InvalidParams)
        );
        let short = batch_from_pb(0, vec![pb::StatusResponse { error_code: 0 }], 2, |m| {
            check(m.error_code)
        });
        assert_eq!(short, Err(ErrorCode::InvalidParams));
    }

    #[test]
    fn error_codes_round_trip() {
        assert_eq!(check(0), Ok(()));
        assert_eq!(check(-704), Err(ErrorCode::ObjectNotFound));
        assert_eq!(check(-99_999), Err(ErrorCode::InternalError));
        assert_eq!(
            pb::StatusResponse::from(Err(ErrorCode::ObjectHasLease)).error_code,
            -706
        );
        let (code, items) =
            batch_to_pb::<(), pb::StatusResponse>(Err(ErrorCode::RpcFail), From::from);
        assert_eq!((code, items.len()), (-900, 0));
    }

    #[test]
    fn config_round_trips() {
        let c = ReplicateConfig {
            replica_num: 3,
            pin: Pin::Soft,
            preferred_segments: vec!["a:1".into(), "b:2".into()],
            prefer_alloc_in_same_node: true,
            excluded_segments: vec!["c:3".into()],
            soft_pin_ttl_ms: Some(0),
            checksum: Some(0xDEAD_BEEF),
        };
        assert_eq!(config_from_pb(Some(pb::ReplicateConfig::from(&c))), Ok(c));
    }

    #[test]
    fn replica_lists_carry_the_checksum() {
        let l = ReplicaList {
            replicas: Vec::new(),
            lease_ttl_ms: 5,
            checksum: Some(7),
            disk_segments: vec!["h:1".into()],
        };
        let wire = pb::GetReplicaListResponse::from(Ok(l.clone()));
        assert_eq!(ReplicaList::try_from(wire), Ok(l));
    }
}
