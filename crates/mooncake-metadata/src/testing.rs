//! The conformance suite every [`MetadataStore`] backend runs (`testing` feature).
//!
//! ```text
//! mooncake_metadata::testing::Suite::test_all(Arc::new(MemoryStore::new())).await;
//! ```
//! Each case works under its own unique key prefix, so one store (even a long-lived
//! external server) can run the whole suite, repeatedly and concurrently.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::keys::KeySpace;
use crate::{MetadataError, MetadataStore};

/// The conformance suite. Every case panics with a message naming the backend on failure.
#[derive(Debug)]
pub struct Suite;

fn unique_prefix(case: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("conformance/{case}/{}-{nanos}-{n}/", std::process::id())
}

impl Suite {
    /// Runs every case against `store`.
    pub async fn test_all(store: Arc<dyn MetadataStore>) {
        Self::put_get_overwrite_delete(&*store).await;
        Self::missing_keys(&*store).await;
        Self::empty_key_is_refused(&*store).await;
        Self::keys_that_need_escaping(&*store).await;
        Self::large_values(&*store).await;
        Self::binary_and_empty_values(&*store).await;
        Self::mooncake_key_layout(&*store).await;
        Self::concurrent_writers(store).await;
    }

    /// Put, get, overwrite, delete, and delete again.
    pub async fn put_get_overwrite_delete(store: &dyn MetadataStore) {
        let who = store.describe();
        let key = format!("{}k", unique_prefix("basic"));
        store
            .put(&key, Bytes::from_static(b"{\"v\":1}"))
            .await
            .unwrap();
        assert_eq!(
            store.get(&key).await.unwrap().as_deref(),
            Some(&b"{\"v\":1}"[..]),
            "{who}"
        );
        store
            .put(&key, Bytes::from_static(b"{\"v\":2}"))
            .await
            .unwrap();
        assert_eq!(
            store.get(&key).await.unwrap().as_deref(),
            Some(&b"{\"v\":2}"[..]),
            "{who}"
        );
        assert!(
            store.delete(&key).await.unwrap(),
            "{who}: delete of a present key"
        );
        assert_eq!(
            store.get(&key).await.unwrap(),
            None,
            "{who}: get after delete"
        );
        assert!(!store.delete(&key).await.unwrap(), "{who}: second delete");
    }

    /// Reading or deleting a key that was never written.
    pub async fn missing_keys(store: &dyn MetadataStore) {
        let key = format!("{}never-written", unique_prefix("missing"));
        assert_eq!(store.get(&key).await.unwrap(), None, "{}", store.describe());
        assert!(!store.delete(&key).await.unwrap(), "{}", store.describe());
    }

    /// The empty key is refused by every operation.
    pub async fn empty_key_is_refused(store: &dyn MetadataStore) {
        assert_eq!(store.get("").await, Err(MetadataError::EmptyKey));
        assert_eq!(
            store.put("", Bytes::from_static(b"x")).await,
            Err(MetadataError::EmptyKey)
        );
        assert_eq!(store.delete("").await, Err(MetadataError::EmptyKey));
    }

    /// Keys with `/`, spaces, `?`, `&`, `%`, `+`, `=`, `#` and non-ASCII round-trip, and keys
    /// that differ only in escaping stay distinct.
    pub async fn keys_that_need_escaping(store: &dyn MetadataStore) {
        let who = store.describe();
        let prefix = unique_prefix("escaping");
        let names = [
            "with/slash/inside",
            "with space",
            "q?x=1",
            "a&b=c",
            "100%",
            "%20",
            "plus+sign",
            "hash#frag",
            "ünïcødé",
            "colon:17101",
            "tab\tand\"quote",
        ];
        for (i, name) in names.iter().enumerate() {
            let key = format!("{prefix}{name}");
            store
                .put(&key, Bytes::from(format!("{{\"i\":{i}}}")))
                .await
                .unwrap();
        }
        for (i, name) in names.iter().enumerate() {
            let key = format!("{prefix}{name}");
            let got = store.get(&key).await.unwrap();
            assert_eq!(
                got,
                Some(Bytes::from(format!("{{\"i\":{i}}}"))),
                "{who}: key {key:?}"
            );
        }
        for name in names {
            assert!(
                store.delete(&format!("{prefix}{name}")).await.unwrap(),
                "{who}: {name:?}"
            );
        }
    }

    /// A 2 MiB segment descriptor (thousands of buffers) round-trips byte for byte.
    pub async fn large_values(store: &dyn MetadataStore) {
        let key = format!("{}ram/big-segment", unique_prefix("large"));
        let mut json = String::from("{\"buffers\":[");
        let mut i = 0u64;
        while json.len() < (2 << 20) {
            if i > 0 {
                json.push(',');
            }
            json.push_str(&format!(
                "{{\"addr\":{},\"length\":1048576,\"name\":\"127.0.0.1:17101\"}}",
                139_677_308_416_000u64 + i * 1_048_576
            ));
            i += 1;
        }
        json.push_str("],\"name\":\"127.0.0.1:17101\",\"protocol\":\"tcp\"}");
        let value = Bytes::from(json);
        store.put(&key, value.clone()).await.unwrap();
        let got = store.get(&key).await.unwrap().unwrap();
        assert_eq!(got.len(), value.len(), "{}", store.describe());
        assert!(got == value, "{}: large value corrupted", store.describe());
        store.delete(&key).await.unwrap();
    }

    /// Values are opaque: non-JSON text and the empty value are stored verbatim.
    pub async fn binary_and_empty_values(store: &dyn MetadataStore) {
        let prefix = unique_prefix("opaque");
        let text = Bytes::from_static(b"not json at all \n\r\t {");
        store
            .put(&format!("{prefix}text"), text.clone())
            .await
            .unwrap();
        store
            .put(&format!("{prefix}empty"), Bytes::new())
            .await
            .unwrap();
        assert_eq!(
            store.get(&format!("{prefix}text")).await.unwrap(),
            Some(text)
        );
        assert_eq!(
            store.get(&format!("{prefix}empty")).await.unwrap(),
            Some(Bytes::new())
        );
    }

    /// The sequence a C++ engine performs: rpc_meta, own-descriptor lookup (404), empty
    /// descriptor, full descriptor, then removal of both on shutdown.
    pub async fn mooncake_key_layout(store: &dyn MetadataStore) {
        let who = store.describe();
        let cluster = unique_prefix("layout").replace('/', "-");
        let ks = KeySpace::with_cluster_id(&cluster);
        let name = "127.0.0.1:17101";
        let rpc = Bytes::from_static(b"{\"ip_or_host_name\":\"127.0.0.1\",\"rpc_port\":15001}");
        store.put(&ks.rpc_meta(name), rpc.clone()).await.unwrap();
        assert_eq!(store.get(&ks.segment(name)).await.unwrap(), None, "{who}");
        let empty = Bytes::from_static(
            b"{\"buffers\":[],\"name\":\"127.0.0.1:17101\",\"protocol\":\"tcp\"}",
        );
        store.put(&ks.segment(name), empty).await.unwrap();
        let full = Bytes::from_static(
            b"{\"buffers\":[{\"addr\":139677308416000,\"length\":1048576,\"name\":\"127.0.0.1:17101\"}],\
              \"name\":\"127.0.0.1:17101\",\"protocol\":\"tcp\",\"rdma_server_name\":\"\",\
              \"tcp_data_host\":\"127.0.0.1\",\"tcp_data_port\":15489,\"tcp_proto_version\":2}",
        );
        store.put(&ks.segment(name), full.clone()).await.unwrap();
        assert_eq!(
            store.get(&ks.segment(name)).await.unwrap(),
            Some(full),
            "{who}"
        );
        assert_eq!(
            store.get(&ks.rpc_meta(name)).await.unwrap(),
            Some(rpc),
            "{who}"
        );
        assert!(store.delete(&ks.rpc_meta(name)).await.unwrap(), "{who}");
        assert!(store.delete(&ks.segment(name)).await.unwrap(), "{who}");
        assert_eq!(store.get(&ks.segment(name)).await.unwrap(), None, "{who}");
    }

    /// 16 writers, each with its own keys and all on one shared key: every private key
    /// holds its writer's value and the shared key holds one of the written values.
    pub async fn concurrent_writers(store: Arc<dyn MetadataStore>) {
        let prefix = unique_prefix("concurrent");
        let shared = format!("{prefix}shared");
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..16u32 {
            let store = store.clone();
            let (prefix, shared) = (prefix.clone(), shared.clone());
            tasks.spawn(async move {
                for i in 0..20u32 {
                    let value = Bytes::from(format!("{{\"w\":{w},\"i\":{i}}}"));
                    store
                        .put(&format!("{prefix}w{w}/k{i}"), value.clone())
                        .await
                        .unwrap();
                    store.put(&shared, value).await.unwrap();
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        for w in 0..16u32 {
            for i in 0..20u32 {
                let got = store.get(&format!("{prefix}w{w}/k{i}")).await.unwrap();
                assert_eq!(got, Some(Bytes::from(format!("{{\"w\":{w},\"i\":{i}}}"))));
            }
        }
        let last = store.get(&shared).await.unwrap().unwrap();
        assert!(
            last.starts_with(b"{\"w\":") && last.ends_with(b",\"i\":19}"),
            "{last:?}"
        );
    }
}
