//! The master's gRPC messages (`mooncake_store::grpc::pb`, generated from
//! `proto/master.proto`): the first input byte picks one of the 44 message types, the rest
//! is decoded with `prost::Message::decode`; whatever decodes must re-encode and decode to
//! the same message, and goes through every public conversion into the store's types
//! (`Segment`, `ReplicaDescriptor`, `TaskInfo`, `ProtocolVersion`, `ReplicaList`,
//! `PingReply`, `ErrorCode::from_code`, `TaskStatus::from_code`) and back.
//! The request-side conversions the server applies (`config_from_pb`, `pin_from_pb`,
//! `put_items_from_pb`, …) are `pub(crate)`; see docs/fuzzing.md.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mooncake_store::grpc::pb;
use mooncake_store::{
    ErrorCode, PingReply, ProtocolVersion, ReplicaDescriptor, ReplicaList, Segment, TaskInfo,
    TaskStatus,
};
use prost::Message;

fn decode<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Option<M> {
    let m = M::decode(bytes).ok()?;
    let again = M::decode(m.encode_to_vec().as_slice()).expect("re-encoded message decodes");
    assert_eq!(again, m);
    assert_eq!(m.encoded_len(), m.encode_to_vec().len());
    Some(m)
}

fn codes(error_code: i32) {
    let e = ErrorCode::from_code(error_code);
    let _ = e.name();
    assert_eq!(ErrorCode::from_code(e.code()), e);
}

fn segment(s: pb::Segment) {
    let seg = Segment::from(s.clone());
    assert_eq!(pb::Segment::from(seg), s);
}

fn replica(r: pb::ReplicaDescriptor) {
    let d = ReplicaDescriptor::from(r.clone());
    assert_eq!(pb::ReplicaDescriptor::from(d), r);
}

fn task(t: pb::TaskInfo) {
    let info = TaskInfo::from(t);
    let _ = TaskStatus::from_code(info.status as i32).is_finished();
    let back = TaskInfo::from(pb::TaskInfo::from(info.clone()));
    assert_eq!(format!("{back:?}"), format!("{info:?}"));
}

macro_rules! msgs {
    ($sel:expr, $bytes:expr, $($ty:ident => $f:expr),* $(,)?) => {{
        let mut i = 0u8;
        $(
            if $sel == i {
                if let Some(m) = decode::<pb::$ty>($bytes) {
                    #[allow(clippy::redundant_closure_call)]
                    ($f)(m);
                }
                return;
            }
            i += 1;
        )*
        let _ = i;
    }};
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let sel = sel % 44;
    msgs!(sel, bytes,
        Segment => segment,
        ReplicateConfig => |c: pb::ReplicateConfig| { let _ = pb::Pin::try_from(c.pin); },
        ReplicaDescriptor => replica,
        StatusResponse => |r: pb::StatusResponse| codes(r.error_code),
        BatchStatusResponse => |r: pb::BatchStatusResponse| { let _ = r; },
        KeyRequest => |r: pb::KeyRequest| { let _ = r; },
        KeysRequest => |r: pb::KeysRequest| { let _ = r; },
        ClientKeyRequest => |r: pb::ClientKeyRequest| { let _ = r; },
        ClientKeysRequest => |r: pb::ClientKeysRequest| { let _ = r; },
        ConnectRequest => |r: pb::ConnectRequest| {
            let v = ProtocolVersion::from(r);
            let _ = ProtocolVersion::CURRENT.accepts(v);
            let _ = v.accepts(ProtocolVersion::CURRENT);
            // Finding 1 of docs/fuzzing.md (overflow at minor u32::MAX, fixed in 331a45b);
            // fuzz/repro/store_pb-accepts-overflow.bin is its regression input.
            let _ = v.accepts(v);
            let _ = v.to_string();
        },
        ConnectResponse => |r: pb::ConnectResponse| {
            codes(r.error_code);
            if let Ok(v) = ProtocolVersion::try_from(r) {
                let _ = ProtocolVersion::CURRENT.accepts(v);
                let _ = v.accepts(ProtocolVersion::CURRENT);
            }
        },
        MountSegmentRequest => |r: pb::MountSegmentRequest| { if let Some(s) = r.segment { segment(s) } },
        RemountSegmentsRequest => |r: pb::RemountSegmentsRequest| { r.segments.into_iter().for_each(segment) },
        UnmountSegmentRequest => |r: pb::UnmountSegmentRequest| { let _ = r; },
        PingRequest => |r: pb::PingRequest| { let _ = r; },
        PingResponse => |r: pb::PingResponse| {
            codes(r.error_code);
            let _ = PingReply::try_from(r);
        },
        ExistKeyResponse => |r: pb::ExistKeyResponse| codes(r.error_code),
        BatchExistKeyResponse => |r: pb::BatchExistKeyResponse| { let _ = r; },
        GetReplicaListResponse => |r: pb::GetReplicaListResponse| {
            codes(r.error_code);
            r.replicas.iter().cloned().for_each(replica);
            if let Ok(list) = ReplicaList::try_from(r) {
                let _ = list.size();
            }
        },
        BatchGetReplicaListResponse => |r: pb::BatchGetReplicaListResponse| {
            for item in r.results {
                if let Ok(list) = ReplicaList::try_from(item) {
                    let _ = list.size();
                }
            }
        },
        PutStartRequest => |r: pb::PutStartRequest| { let _ = r; },
        PutStartResponse => |r: pb::PutStartResponse| { r.replicas.into_iter().for_each(replica) },
        BatchPutStartRequest => |r: pb::BatchPutStartRequest| { let _ = r; },
        BatchPutStartResponse => |r: pb::BatchPutStartResponse| { let _ = r; },
        RemoveRequest => |r: pb::RemoveRequest| { let _ = r; },
        BatchRemoveRequest => |r: pb::BatchRemoveRequest| { let _ = r; },
        RemoveAllRequest => |r: pb::RemoveAllRequest| { let _ = r; },
        RemoveAllResponse => |r: pb::RemoveAllResponse| codes(r.error_code),
        DrainStartRequest => |r: pb::DrainStartRequest| { let _ = r; },
        DrainMove => |m: pb::DrainMove| {
            if let Some(s) = m.source { replica(s) }
            if let Some(t) = m.target { replica(t) }
        },
        DrainStartResponse => |r: pb::DrainStartResponse| { let _ = r; },
        DrainEndRequest => |r: pb::DrainEndRequest| { let _ = r; },
        ReplicaClearRequest => |r: pb::ReplicaClearRequest| { let _ = r; },
        KeysResponse => |r: pb::KeysResponse| codes(r.error_code),
        RemoveByRegexRequest => |r: pb::RemoveByRegexRequest| { let _ = r; },
        CopyTaskRequest => |r: pb::CopyTaskRequest| { let _ = r; },
        MoveTaskRequest => |r: pb::MoveTaskRequest| { let _ = r; },
        TaskIdRequest => |r: pb::TaskIdRequest| { let _ = r; },
        TaskIdResponse => |r: pb::TaskIdResponse| codes(r.error_code),
        TaskInfo => task,
        QueryTaskResponse => |r: pb::QueryTaskResponse| { if let Some(t) = r.task { task(t) } },
        TaskAssignment => |r: pb::TaskAssignment| { let _ = r; },
        FetchTasksResponse => |r: pb::FetchTasksResponse| { let _ = r; },
        FinishTaskRequest => |r: pb::FinishTaskRequest| { let _ = r; },
    );
});
