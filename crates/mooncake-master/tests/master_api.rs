//! The `MasterApi` conformance suite: the same cases against every implementation of the
//! seam, each on a fresh master: the in-process `Master`, and the store's gRPC client over
//! the tunnel (TCP, and the master's local socket) and over HTTP/2. A new implementation
//! (a replicated or HA master) adds one test here.

use std::future::Future;
use std::sync::Arc;

use mooncake_master::{Master, MasterConfig, MasterServer, ServerConfig};
use mooncake_store::grpc::{GrpcClientConfig, GrpcMasterClient};
use mooncake_store::{
    ClientId, ClientStatus, ErrorCode, MasterApi, ProtocolVersion, ReplicateConfig, SegmentId,
};

mod common;
use common::{segment, MIB};

mod cases {
    use super::*;

    /// Version handshake, put, lease, remove, with Mooncake's semantics.
    pub(super) async fn lifecycle(m: &dyn MasterApi) {
        assert_eq!(
            m.connect(ProtocolVersion::CURRENT).await,
            Ok(ProtocolVersion::CURRENT)
        );
        let owner = ClientId(0xABCD_0000_0000_0000_0000_0000_0000_0001);
        m.remount_segments(owner, vec![segment(1, "127.0.0.1:13001", 64 * MIB)])
            .await
            .unwrap();
        assert_eq!(m.ping(owner).await.unwrap().status, ClientStatus::Ok);
        let w = ClientId(2);
        let cfg = ReplicateConfig::default();
        let replicas = m.put_start(w, "k", 4096, &cfg).await.unwrap();
        assert_eq!(replicas.len(), 1);
        assert_eq!(replicas[0].transport_endpoint, "127.0.0.1:13001");
        assert!(!m.exist_key("k").await.unwrap(), "invisible until put_end");
        m.put_end(w, "k").await.unwrap();
        assert!(m.exist_key("k").await.unwrap());
        assert_eq!(
            m.put_start(w, "k", 10, &cfg).await,
            Err(ErrorCode::ObjectAlreadyExists)
        );
        let list = m.get_replica_list("k").await.unwrap();
        assert_eq!((list.size(), list.lease_ttl_ms), (4096, 10_000));
        assert_eq!(list.replicas[0].buffer_address, replicas[0].buffer_address);
        assert_eq!(m.remove("k", false).await, Err(ErrorCode::ObjectHasLease));
        assert_eq!(m.remove("k", true).await, Ok(()));
        assert_eq!(
            m.get_replica_list("k").await,
            Err(ErrorCode::ObjectNotFound)
        );
        assert_eq!(m.remove("k", true).await, Err(ErrorCode::ObjectNotFound));
    }

    /// A revoked put leaves nothing; an upsert replaces a complete object.
    pub(super) async fn revoke_and_upsert(m: &dyn MasterApi) {
        m.mount_segment(ClientId(1), segment(1, "a:1", 64 * MIB))
            .await
            .unwrap();
        let w = ClientId(2);
        let cfg = ReplicateConfig::default();
        m.put_start(w, "r", 100, &cfg).await.unwrap();
        assert_eq!(m.put_revoke(w, "r").await, Ok(()));
        assert!(!m.exist_key("r").await.unwrap());
        m.put_start(w, "u", 100, &cfg).await.unwrap();
        m.put_end(w, "u").await.unwrap();
        m.upsert_start(w, "u", 300, &cfg).await.unwrap();
        m.put_end(w, "u").await.unwrap();
        assert_eq!(m.get_replica_list("u").await.unwrap().size(), 300);
        assert_eq!(m.remove_all(true).await, Ok(1));
    }

    /// Batch forms are one call with one answer per key, in order.
    pub(super) async fn batches(m: &dyn MasterApi) {
        m.remount_segments(ClientId(1), vec![segment(1, "a:1", 64 * MIB)])
            .await
            .unwrap();
        let w = ClientId(2);
        let items: Vec<(String, u64)> = (0..32).map(|i| (format!("k{i}"), 4096)).collect();
        let keys: Vec<String> = items.iter().map(|(k, _)| k.clone()).collect();
        let started = m
            .batch_put_start(w, &items, &ReplicateConfig::default())
            .await
            .unwrap();
        assert!(started
            .iter()
            .all(|r| r.as_ref().is_ok_and(|v| v.len() == 1)));
        assert!(m
            .batch_put_end(w, &keys)
            .await
            .unwrap()
            .iter()
            .all(Result::is_ok));
        let mut probe = keys.clone();
        probe.push("missing".into());
        let exist = m.batch_exist_key(&probe).await.unwrap();
        assert_eq!(exist.iter().filter(|r| **r == Ok(true)).count(), 32);
        assert_eq!(exist[32], Ok(false));
        let lists = m.batch_get_replica_list(&probe).await.unwrap();
        assert_eq!(lists[32], Err(ErrorCode::ObjectNotFound));
        let removed = m.batch_remove(&probe, true).await.unwrap();
        assert_eq!(removed.iter().filter(|r| r.is_ok()).count(), 32);
        assert_eq!(removed[32], Err(ErrorCode::ObjectNotFound));
        assert_eq!(m.remove_all(true).await, Ok(0));
    }

    /// Bad input gets the documented codes, never a panic or a hang.
    pub(super) async fn bad_input(m: &dyn MasterApi) {
        m.remount_segments(ClientId(1), vec![segment(1, "a:1", 64 * MIB)])
            .await
            .unwrap();
        let w = ClientId(2);
        let cfg = ReplicateConfig::default();
        assert_eq!(
            m.put_start(w, "", 10, &cfg).await,
            Err(ErrorCode::InvalidParams)
        );
        assert_eq!(
            m.put_start(w, &"k".repeat(5000), 10, &cfg).await,
            Err(ErrorCode::InvalidParams)
        );
        assert_eq!(
            m.put_start(w, "k", 0, &cfg).await,
            Err(ErrorCode::InvalidParams)
        );
        let five = ReplicateConfig {
            replica_num: 5,
            ..Default::default()
        };
        assert_eq!(
            m.put_start(w, "k", 10, &five).await.unwrap().len(),
            1,
            "more replicas than segments: as many as possible"
        );
        assert_eq!(
            m.put_start(w, "big", 128 * MIB, &cfg).await,
            Err(ErrorCode::NoAvailableHandle)
        );
        assert_eq!(
            m.unmount_segment(ClientId(1), SegmentId(77)).await,
            Ok(()),
            "unknown segment: idempotent"
        );
        assert_eq!(
            m.mount_segment(ClientId(9), segment(1, "a:1", MIB)).await,
            Err(ErrorCode::SegmentAlreadyExists)
        );
        assert_eq!(
            m.put_end(w, "never-started").await,
            Err(ErrorCode::ObjectNotFound)
        );
        assert_eq!(
            m.put_revoke(ClientId(3), "k").await,
            Err(ErrorCode::IllegalClient)
        );
        assert_eq!(
            m.ping(ClientId(42)).await.unwrap().status,
            ClientStatus::NeedRemount
        );
    }
}

/// Runs every case, each against a fresh master from `fresh`.
async fn test_all<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn MasterApi>>,
{
    cases::lifecycle(&*fresh().await).await;
    cases::revoke_and_upsert(&*fresh().await).await;
    cases::batches(&*fresh().await).await;
    cases::bad_input(&*fresh().await).await;
}

/// A served master on 127.0.0.1:0 and a gRPC client of it with `config`; the server runs
/// until the test's runtime ends.
async fn served(config: GrpcClientConfig) -> Arc<dyn MasterApi> {
    let server = MasterServer::bind(ServerConfig {
        master: MasterConfig::default(),
        ..ServerConfig::new("127.0.0.1:0")
    })
    .await
    .unwrap();
    let rpc = server.rpc_addr();
    tokio::spawn(server.serve(std::future::pending()));
    Arc::new(
        GrpcMasterClient::connect(&rpc.to_string(), config)
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_master_conforms() {
    test_all(|| async { Master::new(MasterConfig::default()) as Arc<dyn MasterApi> }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_client_over_the_tcp_tunnel_conforms() {
    test_all(|| {
        served(GrpcClientConfig {
            local_socket: false,
            ..GrpcClientConfig::default()
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_client_over_the_local_socket_conforms() {
    test_all(|| served(GrpcClientConfig::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_client_over_http2_conforms() {
    test_all(|| {
        served(GrpcClientConfig {
            tunnel: false,
            ..GrpcClientConfig::default()
        })
    })
    .await;
}
