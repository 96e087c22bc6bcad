//! Every lookup miss cause, driven through a real master over gRPC, checked in both the
//! `master_lookup_misses_total` counters of `/metrics` and `GET /explain?key=`.

use mooncake_master::{MasterConfig, MasterServer, ServerConfig};
use mooncake_store::grpc::{GrpcClientConfig, GrpcMasterClient};
use mooncake_store::{ClientId, ErrorCode, MasterApi, ReplicateConfig, SegmentId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::{segment, MIB};

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} missing from /metrics"))
}

async fn explain(addr: std::net::SocketAddr, key: &str) -> serde_json::Value {
    serde_json::from_str(&http_get(addr, &format!("/explain?key={key}")).await).unwrap()
}

fn kinds(e: &serde_json::Value) -> Vec<String> {
    e["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_miss_cause_is_counted_and_explained() {
    let server = MasterServer::bind(ServerConfig {
        master: MasterConfig::default(),
        metrics_addr: Some("127.0.0.1:0".into()),
        ..ServerConfig::new("127.0.0.1:0")
    })
    .await
    .unwrap();
    let rpc = server.rpc_addr().to_string();
    let http = server.metrics_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    let m = GrpcMasterClient::connect(&rpc, GrpcClientConfig::default())
        .await
        .unwrap();
    let (a, b) = (ClientId(0xA), ClientId(0xB));
    m.remount_segments(a, vec![segment(1, "127.0.0.1:14001", 8 * MIB)])
        .await
        .unwrap();
    m.remount_segments(b, vec![segment(2, "127.0.0.1:14002", 8 * MIB)])
        .await
        .unwrap();
    let only_a = ReplicateConfig {
        excluded_segments: vec!["127.0.0.1:14002".into()],
        ..ReplicateConfig::default()
    };
    let only_b = ReplicateConfig {
        excluded_segments: vec!["127.0.0.1:14001".into()],
        ..ReplicateConfig::default()
    };

    // evicted: a put that does not fit next to "old" on segment A evicts it.
    m.put_start(a, "old", 6 * MIB, &only_a).await.unwrap();
    m.put_end(a, "old").await.unwrap();
    m.put_start(a, "new", 6 * MIB, &only_a).await.unwrap();
    m.put_end(a, "new").await.unwrap();
    // put_in_progress
    m.put_start(a, "wip", 1024, &only_a).await.unwrap();
    // put_abandoned
    m.put_start(a, "revoked", 1024, &only_a).await.unwrap();
    m.put_revoke(a, "revoked").await.unwrap();
    // removed
    m.put_start(a, "removed", 1024, &only_a).await.unwrap();
    m.put_end(a, "removed").await.unwrap();
    m.remove("removed", false).await.unwrap();
    // holder_lost: the only replica lived on B, which B unmounts.
    m.put_start(b, "on-b", 1024, &only_b).await.unwrap();
    m.put_end(b, "on-b").await.unwrap();
    m.unmount_segment(b, SegmentId(2)).await.unwrap();
    // a hit, then a remove refused because of the reader's lease.
    m.put_start(a, "leased", 1024, &only_a).await.unwrap();
    m.put_end(a, "leased").await.unwrap();
    assert!(m.get_replica_list("leased").await.is_ok());
    assert_eq!(
        m.remove("leased", false).await,
        Err(ErrorCode::ObjectHasLease)
    );

    let expected = [
        ("never-written", "never_written"),
        ("wip", "put_in_progress"),
        ("revoked", "put_abandoned"),
        ("old", "evicted"),
        ("removed", "removed"),
        ("on-b", "holder_lost"),
    ];
    for (key, _) in expected {
        assert!(m.get_replica_list(key).await.is_err(), "{key} must miss");
    }
    assert!(!m.exist_key("old").await.unwrap());

    let metrics = http_get(http, "/metrics").await;
    for (key, cause) in expected {
        let series =
            format!("master_lookup_misses_total{{op=\"get_replica_list\",cause=\"{cause}\"}}");
        assert_eq!(counter(&metrics, &series), 1, "{key}: {series}");
        let e = explain(http, key).await;
        assert_eq!(e["key"], key);
        assert_eq!(e["now"]["cause"], cause, "{key}: {e}");
    }
    assert_eq!(
        counter(
            &metrics,
            "master_lookup_misses_total{op=\"exist_key\",cause=\"evicted\"}"
        ),
        1
    );
    assert_eq!(
        counter(
            &metrics,
            "master_lookup_hits_total{op=\"get_replica_list\"}"
        ),
        1
    );
    assert_eq!(counter(&metrics, "master_lease_conflicts_total"), 1);

    // The histories say what happened and where.
    let old = explain(http, "old").await;
    assert_eq!(kinds(&old), ["placed", "committed", "evicted"]);
    assert_eq!(old["events"][0]["segments"][0], "127.0.0.1:14001");
    assert_eq!(old["now"]["misses"], 2, "one get and one exist missed it");
    assert_eq!(
        kinds(&explain(http, "revoked").await),
        ["placed", "revoked"]
    );
    assert_eq!(
        kinds(&explain(http, "removed").await),
        ["placed", "committed", "removed"]
    );
    let on_b = explain(http, "on-b").await;
    assert_eq!(kinds(&on_b), ["placed", "committed", "holder_lost"]);
    assert_eq!(on_b["events"][2]["segments"][0], "127.0.0.1:14002");
    assert_eq!(
        kinds(&explain(http, "never-written").await),
        Vec::<String>::new()
    );
    let leased = explain(http, "leased").await;
    assert_eq!(leased["now"]["state"], "readable");
    assert_eq!(leased["now"]["reads"], 1);
    assert_eq!(kinds(&leased), ["placed", "committed", "lease_conflict"]);

    // The same explanation over the RPC.
    let over_rpc: serde_json::Value =
        serde_json::from_str(&m.explain_key("old").await.unwrap()).unwrap();
    assert_eq!(over_rpc["now"]["cause"], "evicted");
    assert_eq!(over_rpc["now"]["misses"], old["now"]["misses"]);
    assert_eq!(kinds(&over_rpc), ["placed", "committed", "evicted"]);
    let _ = stop.send(());
}
