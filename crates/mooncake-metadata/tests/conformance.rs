//! The conformance suite against every backend of this crate.

use std::sync::Arc;

use mooncake_metadata::testing::Suite;
use mooncake_metadata::{
    HttpMetadataServer, HttpMetadataServerConfig, HttpStore, HttpStoreConfig, MemoryStore,
};
use tokio::sync::oneshot;

#[tokio::test]
async fn memory_store_conforms() {
    Suite::test_all(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_store_against_http_server_conforms() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = HttpMetadataServer::new(HttpMetadataServerConfig::default());
    let table = server.table().clone();
    let task = tokio::spawn(server.run(listener, async {
        let _ = stopped.await;
    }));
    let store = HttpStore::new(
        &format!("http://{addr}/metadata"),
        HttpStoreConfig::default(),
    )
    .unwrap();
    Suite::test_all(Arc::new(store)).await;
    // The suite deletes what it writes, except its opaque and concurrency keys.
    assert!(!table.is_empty());
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
