//! `RedisStore` against a real redis-server started by the test (skipped when
//! `redis-server` is absent, unless `MOONCAKE_TEST_REQUIRE_SERVICES=1`).

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mooncake_metadata::testing::Suite;
use mooncake_metadata::{
    connect, MetadataError, MetadataStore, RedisCredentials, RedisStore, RedisStoreConfig,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_conforms() {
    let Some(redis) = support::start_redis(&[]) else {
        return;
    };
    let store = connect(&format!("redis://{}", redis.addr)).unwrap();
    let started = Instant::now();
    Suite::test_all(store).await;
    eprintln!("redis conformance suite: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_values_are_plain_strings_as_the_cpp_engine_stores_them() {
    let Some(redis) = support::start_redis(&[]) else {
        return;
    };
    let store = RedisStore::new(
        &format!("redis://{}/3", redis.addr),
        RedisStoreConfig::default(),
    )
    .unwrap();
    let key = "mooncake/rpc_meta/127.0.0.1:17101";
    // What jsoncpp's FastWriter writes: compact JSON ending in a newline.
    let value = Bytes::from_static(b"{\"ip_or_host_name\":\"127.0.0.1\",\"rpc_port\":15001}\n");
    store.put(key, value.clone()).await.unwrap();
    // A plain string under the key itself, in the selected database.
    assert_eq!(
        raw(&redis.addr, &[&["SELECT", "3"], &["TYPE", key]]),
        "+OK\r\n+string\r\n"
    );
    assert_eq!(
        raw(&redis.addr, &[&["SELECT", "3"], &["GET", key]]),
        format!(
            "+OK\r\n${}\r\n{}\r\n",
            value.len(),
            std::str::from_utf8(&value).unwrap()
        )
    );
    assert_eq!(
        raw(&redis.addr, &[&["EXISTS", key]]),
        ":0\r\n",
        "database 0 untouched"
    );
    assert!(store.delete(key).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_and_acl_user_log_in_and_wrong_ones_are_rejected() {
    let Some(redis) = support::start_redis(&["--requirepass", "s3cr3t"]) else {
        return;
    };
    let url = format!("redis://{}", redis.addr);
    let with = |credentials| RedisStoreConfig {
        credentials,
        ..RedisStoreConfig::default()
    };
    let good = RedisStore::new(
        &url,
        with(RedisCredentials {
            password: Some("s3cr3t".into()),
            ..RedisCredentials::default()
        }),
    )
    .unwrap();
    good.put("mooncake/auth", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    let acl_user = RedisStore::new(
        &format!("redis://default:s3cr3t@{}/1", redis.addr),
        RedisStoreConfig::default(),
    )
    .unwrap();
    assert_eq!(
        acl_user.get("mooncake/auth").await.unwrap(),
        None,
        "database 1"
    );
    let wrong = RedisStore::new(
        &url,
        with(RedisCredentials {
            password: Some("wrong".into()),
            ..RedisCredentials::default()
        }),
    )
    .unwrap();
    let err = wrong.get("mooncake/auth").await.unwrap_err();
    assert!(
        matches!(&err, MetadataError::Rejected { url, .. } if url == &format!("redis://{}/0", redis.addr)),
        "{err:?}"
    );
    assert!(!err.to_string().contains("wrong"), "{err}");
}

#[tokio::test]
async fn an_unreachable_redis_is_a_clear_error_within_the_timeout() {
    let dead = format!("127.0.0.2:{}", support::free_port());
    let store = RedisStore::new(
        &format!("redis://{dead}"),
        RedisStoreConfig {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            ..RedisStoreConfig::default()
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
        MetadataError::Unreachable { url, .. } => assert_eq!(url, &format!("redis://{dead}/0")),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    // A later request tries again (and fails the same way) rather than hanging.
    let err = store
        .put("mooncake/ram/x", Bytes::from_static(b"{}"))
        .await
        .unwrap_err();
    assert!(matches!(err, MetadataError::Unreachable { .. }), "{err:?}");
}

/// Sends `commands` in RESP on a fresh connection and returns the raw replies.
fn raw(addr: &str, commands: &[&[&str]]) -> String {
    let mut request = String::new();
    for command in commands.iter().chain([&&["QUIT"][..]]) {
        request.push_str(&format!("*{}\r\n", command.len()));
        for word in *command {
            request.push_str(&format!("${}\r\n{word}\r\n", word.len()));
        }
    }
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.strip_suffix("+OK\r\n")
        .unwrap_or_else(|| panic!("no reply to QUIT: {out:?}"))
        .to_owned()
}
