//! A batch put whose commit (`batch_put_end`) fails must not report success: the master
//! discards uncommitted objects, so a key said to be stored would be lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mooncake_master::{Master, MasterConfig};
use mooncake_metadata::{HttpMetadataServer, HttpMetadataServerConfig};
use mooncake_store::types::{
    ClientId, PingReply, ProtocolVersion, ReplicaDescriptor, ReplicaList, Segment, SegmentId,
};
use mooncake_store::{BatchResult, Client, ClientConfig, ErrorCode, MasterApi, ReplicateConfig};

/// The real master, except that `batch_put_end` fails as a whole while `fail` is set.
#[derive(Debug)]
struct FlakyCommit {
    master: Arc<Master>,
    fail: AtomicBool,
}

#[async_trait]
impl MasterApi for FlakyCommit {
    async fn connect(&self, v: ProtocolVersion) -> Result<ProtocolVersion, ErrorCode> {
        self.master.connect(v).await
    }
    async fn mount_segment(&self, c: ClientId, s: Segment) -> Result<(), ErrorCode> {
        self.master.mount_segment(c, s).await
    }
    async fn remount_segments(&self, c: ClientId, s: Vec<Segment>) -> Result<(), ErrorCode> {
        self.master.remount_segments(c, s).await
    }
    async fn unmount_segment(&self, c: ClientId, s: SegmentId) -> Result<(), ErrorCode> {
        self.master.unmount_segment(c, s).await
    }
    async fn ping(&self, c: ClientId) -> Result<PingReply, ErrorCode> {
        self.master.ping(c).await
    }
    async fn exist_key(&self, k: &str) -> Result<bool, ErrorCode> {
        self.master.exist_key(k).await
    }
    async fn batch_exist_key(&self, k: &[String]) -> BatchResult<bool> {
        self.master.batch_exist_key(k).await
    }
    async fn get_replica_list(&self, k: &str) -> Result<ReplicaList, ErrorCode> {
        self.master.get_replica_list(k).await
    }
    async fn batch_get_replica_list(&self, k: &[String]) -> BatchResult<ReplicaList> {
        self.master.batch_get_replica_list(k).await
    }
    async fn put_start(
        &self,
        c: ClientId,
        k: &str,
        n: u64,
        cfg: &ReplicateConfig,
    ) -> Result<Vec<ReplicaDescriptor>, ErrorCode> {
        self.master.put_start(c, k, n, cfg).await
    }
    async fn batch_put_start(
        &self,
        c: ClientId,
        items: &[(String, u64)],
        cfg: &ReplicateConfig,
    ) -> BatchResult<Vec<ReplicaDescriptor>> {
        self.master.batch_put_start(c, items, cfg).await
    }
    async fn put_end(&self, c: ClientId, k: &str) -> Result<(), ErrorCode> {
        self.master.put_end(c, k).await
    }
    async fn batch_put_end(&self, c: ClientId, k: &[String]) -> BatchResult<()> {
        if self.fail.load(Ordering::Relaxed) {
            return Err(ErrorCode::RpcTimeout);
        }
        self.master.batch_put_end(c, k).await
    }
    async fn put_revoke(&self, c: ClientId, k: &str) -> Result<(), ErrorCode> {
        self.master.put_revoke(c, k).await
    }
    async fn batch_put_revoke(&self, c: ClientId, k: &[String]) -> BatchResult<()> {
        self.master.batch_put_revoke(c, k).await
    }
    async fn upsert_start(
        &self,
        c: ClientId,
        k: &str,
        n: u64,
        cfg: &ReplicateConfig,
    ) -> Result<Vec<ReplicaDescriptor>, ErrorCode> {
        self.master.upsert_start(c, k, n, cfg).await
    }
    async fn remove(&self, k: &str, force: bool) -> Result<(), ErrorCode> {
        self.master.remove(k, force).await
    }
    async fn batch_remove(&self, k: &[String], force: bool) -> BatchResult<()> {
        self.master.batch_remove(k, force).await
    }
    async fn remove_all(&self, force: bool) -> Result<u64, ErrorCode> {
        self.master.remove_all(force).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_put_whose_commit_fails_reports_the_failure_for_every_key() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metadata = format!("http://{}/metadata", listener.local_addr().unwrap());
    tokio::spawn(
        HttpMetadataServer::new(HttpMetadataServerConfig::default())
            .run(listener, std::future::pending()),
    );
    let master = Master::new(MasterConfig::default());
    let flaky = Arc::new(FlakyCommit {
        master,
        fail: AtomicBool::new(true),
    });
    let config = ClientConfig {
        metadata_server: metadata,
        global_segment_size: 16 << 20,
        local_buffer_size: 4 << 20,
        ping_interval: Duration::from_millis(100),
        ..ClientConfig::default()
    };
    let client = Client::with_master(config, flaky.clone() as Arc<dyn MasterApi>)
        .await
        .unwrap();
    let cfg = ReplicateConfig::default();
    let items: Vec<(&str, &[u8])> = vec![("c1", b"one"), ("c2", b"two")];
    let out = client.put_batch(&items, &cfg).await;
    assert_eq!(out, vec![Err(ErrorCode::RpcTimeout); 2]);
    assert_eq!(client.is_exist("c1").await, Ok(false));
    // Zero-copy batches go the same way.
    let staged = client
        .engine()
        .allocate_buffer(4096, "cpu:0")
        .await
        .unwrap();
    let from = client
        .batch_put_from(&[("c3", staged.addr(), 100)], &cfg)
        .await;
    assert_eq!(from, vec![Err(ErrorCode::RpcTimeout)]);
    // Once commits work again, the same keys are stored.
    flaky.fail.store(false, Ordering::Relaxed);
    let items: Vec<(&str, &[u8])> = vec![("d1", b"one"), ("d2", b"two")];
    assert_eq!(client.put_batch(&items, &cfg).await, vec![Ok(()), Ok(())]);
    assert_eq!(client.get("d2").await.unwrap(), b"two");
    client.close().await.unwrap();
}
