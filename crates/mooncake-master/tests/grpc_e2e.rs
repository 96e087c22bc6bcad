//! The master over gRPC on 127.0.0.1:0, driven by the store's gRPC client.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use mooncake_master::{Master, MasterConfig, MasterServer, ServerConfig};
use mooncake_store::grpc::{GrpcClientConfig, GrpcMasterClient};
use mooncake_store::{
    ClientId, ClientStatus, ErrorCode, MasterApi, ProtocolVersion, ReplicateConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::{segment, MIB};

async fn start() -> (
    GrpcMasterClient,
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
) {
    let server = MasterServer::bind(ServerConfig {
        master: MasterConfig::default(),
        rpc_addr: "127.0.0.1:0".into(),
        http_metadata_addr: Some("127.0.0.1:0".into()),
        metrics_addr: Some("127.0.0.1:0".into()),
        ..ServerConfig::new("127.0.0.1:0")
    })
    .await
    .unwrap();
    let rpc = server.rpc_addr();
    let metrics = server.metrics_addr().unwrap();
    assert_eq!(rpc.ip().to_string(), "127.0.0.1");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    let client = GrpcMasterClient::connect(&rpc.to_string(), GrpcClientConfig::default())
        .await
        .unwrap();
    (client, metrics, stop)
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_remove_round_trip_with_mooncake_semantics() {
    let (m, metrics, _stop) = start().await;
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
    let text = http_get(metrics, "/metrics").await;
    assert!(
        text.contains(&format!("master_total_capacity_bytes {}", 64 * MIB)),
        "{text}"
    );
    assert!(text.contains("master_put_start_requests_total 2"), "{text}");
    assert!(http_get(metrics, "/get_all_segments")
        .await
        .ends_with("127.0.0.1:13001\n"));
    assert!(http_get(metrics, "/health").await.ends_with("OK"));
}

#[tokio::test]
async fn incompatible_clients_are_refused_with_a_metric() {
    let master = Master::with_version(
        MasterConfig::default(),
        ProtocolVersion { major: 1, minor: 2 },
    );
    assert_eq!(
        master.connect(ProtocolVersion { major: 1, minor: 1 }).await,
        Ok(ProtocolVersion { major: 1, minor: 2 })
    );
    assert_eq!(
        master.connect(ProtocolVersion { major: 1, minor: 0 }).await,
        Err(ErrorCode::InvalidVersion)
    );
    assert_eq!(
        master.connect(ProtocolVersion { major: 2, minor: 2 }).await,
        Err(ErrorCode::InvalidVersion)
    );
    assert_eq!(
        master.metrics().version_rejections.load(Ordering::Relaxed),
        2
    );
    assert!(master
        .render_metrics()
        .contains("master_version_rejections_total 2"));
    let api: Arc<dyn MasterApi> = master;
    assert!(api.exist_key("x").await.is_ok());
}

#[tokio::test]
async fn an_unreachable_master_is_rpc_fail() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = std::time::Instant::now();
    let err = GrpcMasterClient::connect(&format!("127.0.0.1:{port}"), GrpcClientConfig::default())
        .await
        .unwrap_err();
    assert_eq!(err, ErrorCode::RpcFail);
    assert!(start.elapsed() < std::time::Duration::from_secs(6));
}

/// A batch larger than `MAX_BATCH_SIZE` is refused whole by the master (one call must not
/// hold the master's lock for millions of keys); the gRPC client splits such batches, so
/// users see every answer in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_batches_are_refused_by_the_master_and_split_by_the_client() {
    let keys: Vec<String> = (0..mooncake_store::MAX_BATCH_SIZE + 5)
        .map(|i| format!("k{i}"))
        .collect();
    let master = Master::new(MasterConfig::default());
    assert_eq!(
        master.batch_exist_key(&keys).await,
        Err(ErrorCode::InvalidParams)
    );
    assert_eq!(
        master.batch_remove(&keys, true).await,
        Err(ErrorCode::InvalidParams)
    );
    let (client, _, stop) = start().await;
    let c = ClientId(7);
    client
        .mount_segment(c, segment(1, "seg", 64 * MIB))
        .await
        .unwrap();
    let last = keys.last().unwrap().clone();
    client
        .put_start(c, &last, 10, &ReplicateConfig::default())
        .await
        .unwrap();
    client.put_end(c, &last).await.unwrap();
    let exist = client.batch_exist_key(&keys).await.unwrap();
    assert_eq!(exist.len(), keys.len());
    assert!(exist[..keys.len() - 1].iter().all(|e| *e == Ok(false)));
    assert_eq!(exist[keys.len() - 1], Ok(true), "answers stay in order");
    let _ = stop.send(());
}
