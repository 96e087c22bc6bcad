//! `EtcdStore` against a real etcd started by the test (skipped when `etcd` is absent,
//! unless `MOONCAKE_TEST_REQUIRE_SERVICES=1`).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mooncake_metadata::testing::Suite;
use mooncake_metadata::{connect, EtcdStore, EtcdStoreConfig, MetadataError, MetadataStore};

/// Waits until the fresh etcd has elected itself and serves requests.
async fn ready(store: &dyn MetadataStore) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.get("mooncake/ready-probe").await {
            Ok(_) => return,
            Err(e) if Instant::now() > deadline => panic!("etcd never became ready: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_conforms() {
    let Some(etcd) = support::start_etcd() else {
        return;
    };
    let store = connect(&format!("etcd://{}", etcd.addr)).unwrap();
    ready(&*store).await;
    let started = Instant::now();
    Suite::test_all(store).await;
    eprintln!("etcd conformance suite: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_values_are_stored_verbatim_as_the_cpp_engine_stores_them() {
    let Some(etcd) = support::start_etcd() else {
        return;
    };
    // A bare host:port list is etcd, as in Mooncake.
    let store = connect(&etcd.addr).unwrap();
    ready(&*store).await;
    let key = "mooncake/ram/127.0.0.1:17101";
    // What jsoncpp's FastWriter writes: compact JSON ending in a newline.
    let value =
        Bytes::from_static(b"{\"buffers\":[],\"name\":\"127.0.0.1:17101\",\"protocol\":\"tcp\"}\n");
    store.put(key, value.clone()).await.unwrap();
    // The etcd v3 HTTP gateway shows the raw key and value (base64): no prefix, no
    // escaping, no envelope.
    let raw = etcd_v3_get(&etcd.addr, key);
    assert!(
        raw.contains(&format!("\"key\":\"{}\"", b64(key.as_bytes())))
            && raw.contains(&format!("\"value\":\"{}\"", b64(&value))),
        "{raw}"
    );
    assert_eq!(store.get(key).await.unwrap(), Some(value));
    assert!(store.delete(key).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_is_skipped_for_a_live_one() {
    let Some(etcd) = support::start_etcd() else {
        return;
    };
    let dead = format!("127.0.0.2:{}", support::free_port());
    let store = connect(&format!("etcd://{dead};{}", etcd.addr)).unwrap();
    ready(&*store).await;
    store
        .put("mooncake/failover", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert_eq!(
        store.get("mooncake/failover").await.unwrap().as_deref(),
        Some(&b"{}"[..])
    );
}

#[tokio::test]
async fn an_unreachable_etcd_is_a_clear_error_within_the_timeout() {
    let dead = format!("127.0.0.2:{}", support::free_port());
    let store = EtcdStore::new(
        &format!("etcd://{dead}"),
        EtcdStoreConfig {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
        },
    )
    .unwrap();
    let started = Instant::now();
    let err = store.get("mooncake/ram/x").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    match &err {
        MetadataError::Unreachable { url, reason } => {
            assert_eq!(url, &format!("etcd://{dead}"));
            assert!(reason.starts_with(&format!("{dead}: ")), "{reason}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(err.to_string().contains(&dead), "{err}");
    let err = store
        .put("mooncake/ram/x", Bytes::from_static(b"{}"))
        .await
        .unwrap_err();
    assert!(matches!(err, MetadataError::Unreachable { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_over_the_server_limit_is_rejected_not_unreachable() {
    let Some(etcd) = support::start_etcd() else {
        return;
    };
    let store = Arc::new(EtcdStore::new(&etcd.addr, EtcdStoreConfig::default()).unwrap());
    ready(&*store).await;
    // The test server allows 32 MiB requests; 33 MiB is over both its and our limit.
    let err = store
        .put("mooncake/ram/huge", Bytes::from(vec![b'x'; 33 << 20]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, MetadataError::Rejected { url, .. } if url == &format!("etcd://{}", etcd.addr)),
        "{err:?}"
    );
}

/// `POST /v3/kv/range` on etcd's HTTP gateway, with a blocking raw HTTP/1.1 request.
fn etcd_v3_get(addr: &str, key: &str) -> String {
    use std::io::{Read, Write};
    let body = format!("{{\"key\":\"{}\"}}", b64(key.as_bytes()));
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v3/kv/range HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_and_create_if_absent_as_leader_election_uses_them() {
    let Some(etcd) = support::start_etcd() else {
        return;
    };
    let store =
        EtcdStore::new(&format!("etcd://{}", etcd.addr), EtcdStoreConfig::default()).unwrap();
    ready(&store).await;
    let key = "mooncake-store/test/master_view";
    let (first, granted) = store.grant_lease(Duration::from_secs(5)).await.unwrap();
    assert_eq!(granted, Duration::from_secs(5));
    let (second, _) = store.grant_lease(Duration::from_secs(5)).await.unwrap();
    assert_ne!(first, second);
    let rev = store
        .create_with_lease(key, Bytes::from_static(b"10.0.0.1:50051"), first)
        .await
        .unwrap()
        .expect("the key was absent");
    // The loser learns who holds it, since when and on which lease.
    let held = store
        .create_with_lease(key, Bytes::from_static(b"10.0.0.2:50051"), second)
        .await
        .unwrap()
        .expect_err("the key exists");
    assert_eq!(&held.value[..], b"10.0.0.1:50051");
    assert_eq!((held.create_revision, held.lease), (rev, first));
    assert_eq!(store.get_versioned(key).await.unwrap(), Some(held));
    store
        .put_with_lease(
            "mooncake-store/test/candidates/b",
            Bytes::from_static(b"2"),
            first,
        )
        .await
        .unwrap();
    store
        .put_with_lease(
            "mooncake-store/test/candidates/a",
            Bytes::from_static(b"1"),
            first,
        )
        .await
        .unwrap();
    store
        .put("mooncake-store/test/candidatesX", Bytes::from_static(b"no"))
        .await
        .unwrap();
    let listed = store
        .list_prefix("mooncake-store/test/candidates/")
        .await
        .unwrap();
    assert_eq!(
        listed,
        vec![
            (
                "mooncake-store/test/candidates/a".to_owned(),
                Bytes::from_static(b"1")
            ),
            (
                "mooncake-store/test/candidates/b".to_owned(),
                Bytes::from_static(b"2")
            ),
        ]
    );
    let ttl = store.keep_alive(first).await.unwrap().expect("lease alive");
    assert!(ttl > Duration::from_secs(3), "{ttl:?}");
    // Revoking the lease deletes the key with it; the lease is gone.
    store.revoke_lease(first).await.unwrap();
    assert_eq!(store.get_versioned(key).await.unwrap(), None);
    assert!(store
        .list_prefix("mooncake-store/test/candidates/")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.keep_alive(first).await.unwrap(), None);
    // A lease nobody renews expires and takes its key along.
    let (short, _) = store.grant_lease(Duration::from_secs(1)).await.unwrap();
    store
        .create_with_lease(key, Bytes::from_static(b"x"), short)
        .await
        .unwrap()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.get_versioned(key).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the key outlived its lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store.keep_alive(short).await.unwrap(), None);
}
