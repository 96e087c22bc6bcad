//! The gRPC layer end to end: a small in-test `MasterApi` served with `grpc::serve` on
//! 127.0.0.1:0, driven through `GrpcMasterClient` (every RPC, batch forms, u128 ids, error
//! codes, version refusal, timeouts, an unreachable master, shutdown) and through the raw
//! generated client (invalid wire values).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mooncake_metadata::AuthToken;
use mooncake_store::grpc::pb::master_service_client::MasterServiceClient;
use mooncake_store::grpc::{pb, serve_with, GrpcClientConfig, GrpcMasterClient, ServeOptions};
use mooncake_store::{
    BatchResult, ClientId, ClientStatus, ErrorCode, MasterApi, Pin, PingReply, ProtocolVersion,
    ReplicaDescriptor, ReplicaList, ReplicateConfig, Segment, SegmentId,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------
// A small fake master: enough behaviour to tell results apart on the far side of the wire.
// (The real master lives in `mooncake-master`; this one exists only for this test.)
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Object {
    owner: ClientId,
    replicas: Vec<ReplicaDescriptor>,
    complete: bool,
}

#[derive(Debug, Default)]
struct State {
    segments: HashMap<SegmentId, (ClientId, Segment)>,
    alive: HashSet<ClientId>,
    objects: HashMap<String, Object>,
    last_config: Option<ReplicateConfig>,
}

#[derive(Debug, Default)]
struct FakeMaster {
    /// Refuse every client version.
    refuse: bool,
    /// Delay of every `ping`.
    ping_delay: Duration,
    /// Calls of `connect` that reached the master.
    connects: std::sync::atomic::AtomicUsize,
    state: Mutex<State>,
}

const LEASE_MS: u64 = 5_000;
const VIEW_VERSION: i64 = 7;

impl FakeMaster {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    fn start(
        &self,
        client: ClientId,
        key: &str,
        size: u64,
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Result<Vec<ReplicaDescriptor>, ErrorCode> {
        if key.is_empty() || size == 0 || config.replica_num == 0 {
            return Err(ErrorCode::InvalidParams);
        }
        let mut st = self.state();
        st.last_config = Some(config.clone());
        if !upsert && st.objects.contains_key(key) {
            return Err(ErrorCode::ObjectAlreadyExists);
        }
        let replicas: Vec<_> = (0..config.replica_num)
            .map(|i| ReplicaDescriptor {
                buffer_address: 0x7f00_0000_0000 + (i as u64) * size,
                size,
                version: 7 + i as u64,
                transport_endpoint: format!("te-{i}"),
                protocol: "tcp".into(),
                segment_name: config
                    .preferred_segments
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("seg-{i}")),
            })
            .collect();
        st.objects.insert(
            key.to_owned(),
            Object {
                owner: client,
                replicas: replicas.clone(),
                complete: false,
            },
        );
        Ok(replicas)
    }

    fn end(&self, client: ClientId, key: &str, revoke: bool) -> Result<(), ErrorCode> {
        let mut st = self.state();
        let obj = st.objects.get_mut(key).ok_or(ErrorCode::ObjectNotFound)?;
        if obj.owner != client {
            return Err(ErrorCode::IllegalClient);
        }
        if revoke {
            st.objects.remove(key);
        } else {
            obj.complete = true;
        }
        Ok(())
    }
}

/// The fake's batch convention: an empty batch fails as a whole (to test the outer code).
fn batch<T>(keys: &[String], f: impl Fn(&str) -> Result<T, ErrorCode>) -> BatchResult<T> {
    if keys.is_empty() {
        return Err(ErrorCode::InvalidParams);
    }
    Ok(keys.iter().map(|k| f(k)).collect())
}

#[async_trait]
impl MasterApi for FakeMaster {
    async fn connect(&self, client: ProtocolVersion) -> Result<ProtocolVersion, ErrorCode> {
        self.connects
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let master = ProtocolVersion::CURRENT;
        if self.refuse || !master.accepts(client) {
            return Err(ErrorCode::InvalidVersion);
        }
        Ok(master)
    }

    async fn mount_segment(&self, client: ClientId, segment: Segment) -> Result<(), ErrorCode> {
        let mut st = self.state();
        match st.segments.get(&segment.id) {
            Some((owner, _)) if *owner != client => Err(ErrorCode::SegmentAlreadyExists),
            _ => {
                st.segments.insert(segment.id, (client, segment));
                Ok(())
            }
        }
    }

    async fn remount_segments(
        &self,
        client: ClientId,
        segments: Vec<Segment>,
    ) -> Result<(), ErrorCode> {
        let mut st = self.state();
        for s in segments {
            st.segments.insert(s.id, (client, s));
        }
        st.alive.insert(client);
        Ok(())
    }

    async fn unmount_segment(&self, client: ClientId, segment: SegmentId) -> Result<(), ErrorCode> {
        let mut st = self.state();
        match st.segments.get(&segment) {
            Some((owner, _)) if *owner != client => Err(ErrorCode::IllegalClient),
            Some(_) => {
                st.segments.remove(&segment);
                Ok(())
            }
            None => Err(ErrorCode::SegmentNotFound),
        }
    }

    async fn ping(&self, client: ClientId) -> Result<PingReply, ErrorCode> {
        tokio::time::sleep(self.ping_delay).await;
        let status = if self.state().alive.contains(&client) {
            ClientStatus::Ok
        } else {
            ClientStatus::NeedRemount
        };
        Ok(PingReply {
            view_version: VIEW_VERSION,
            status,
        })
    }

    async fn exist_key(&self, key: &str) -> Result<bool, ErrorCode> {
        if key.is_empty() {
            return Err(ErrorCode::InvalidParams);
        }
        Ok(self.state().objects.get(key).is_some_and(|o| o.complete))
    }

    async fn batch_exist_key(&self, keys: &[String]) -> BatchResult<bool> {
        batch(keys, |k| {
            if k.is_empty() {
                Err(ErrorCode::InvalidParams)
            } else {
                Ok(self.state().objects.get(k).is_some_and(|o| o.complete))
            }
        })
    }

    async fn get_replica_list(&self, key: &str) -> Result<ReplicaList, ErrorCode> {
        let st = self.state();
        let obj = st.objects.get(key).ok_or(ErrorCode::ObjectNotFound)?;
        if !obj.complete {
            return Err(ErrorCode::ReplicaIsNotReady);
        }
        Ok(ReplicaList {
            replicas: obj.replicas.clone(),
            lease_ttl_ms: LEASE_MS,
            checksum: None,
            disk_segments: Vec::new(),
        })
    }

    async fn batch_get_replica_list(&self, keys: &[String]) -> BatchResult<ReplicaList> {
        let mut out = Vec::new();
        for k in keys {
            out.push(self.get_replica_list(k).await);
        }
        if out.is_empty() {
            return Err(ErrorCode::InvalidParams);
        }
        Ok(out)
    }

    async fn put_start(
        &self,
        client: ClientId,
        key: &str,
        size: u64,
        config: &ReplicateConfig,
    ) -> Result<Vec<ReplicaDescriptor>, ErrorCode> {
        self.start(client, key, size, config, false)
    }

    async fn batch_put_start(
        &self,
        client: ClientId,
        items: &[(String, u64)],
        config: &ReplicateConfig,
    ) -> BatchResult<Vec<ReplicaDescriptor>> {
        if items.is_empty() {
            return Err(ErrorCode::InvalidParams);
        }
        Ok(items
            .iter()
            .map(|(k, s)| self.start(client, k, *s, config, false))
            .collect())
    }

    async fn put_end(&self, client: ClientId, key: &str) -> Result<(), ErrorCode> {
        self.end(client, key, false)
    }

    async fn batch_put_end(&self, client: ClientId, keys: &[String]) -> BatchResult<()> {
        batch(keys, |k| self.end(client, k, false))
    }

    async fn put_revoke(&self, client: ClientId, key: &str) -> Result<(), ErrorCode> {
        self.end(client, key, true)
    }

    async fn batch_put_revoke(&self, client: ClientId, keys: &[String]) -> BatchResult<()> {
        batch(keys, |k| self.end(client, k, true))
    }

    async fn upsert_start(
        &self,
        client: ClientId,
        key: &str,
        size: u64,
        config: &ReplicateConfig,
    ) -> Result<Vec<ReplicaDescriptor>, ErrorCode> {
        self.start(client, key, size, config, true)
    }

    async fn remove(&self, key: &str, force: bool) -> Result<(), ErrorCode> {
        let mut st = self.state();
        if !st.objects.contains_key(key) {
            return Err(ErrorCode::ObjectNotFound);
        }
        // Keys named `leased*` hold a read lease.
        if key.starts_with("leased") && !force {
            return Err(ErrorCode::ObjectHasLease);
        }
        st.objects.remove(key);
        Ok(())
    }

    async fn batch_remove(&self, keys: &[String], force: bool) -> BatchResult<()> {
        let mut out = Vec::new();
        for k in keys {
            out.push(self.remove(k, force).await);
        }
        if out.is_empty() {
            return Err(ErrorCode::InvalidParams);
        }
        Ok(out)
    }

    async fn remove_all(&self, force: bool) -> Result<u64, ErrorCode> {
        let mut st = self.state();
        let before = st.objects.len();
        st.objects.retain(|k, _| !force && k.starts_with("leased"));
        Ok((before - st.objects.len()) as u64)
    }
}

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), std::io::Error>>,
}

impl Running {
    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
    }
}

async fn start(api: Arc<FakeMaster>) -> Running {
    start_at(api, "127.0.0.1:0".parse().unwrap()).await
}

async fn start_at(api: Arc<FakeMaster>, addr: SocketAddr) -> Running {
    start_with(api, addr, ServeOptions::default()).await
}

async fn start_with(api: Arc<FakeMaster>, addr: SocketAddr, options: ServeOptions) -> Running {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_with(listener, api, options, async move {
        let _ = rx.await;
    }));
    Running {
        addr,
        stop: Some(tx),
        task,
    }
}

fn config() -> GrpcClientConfig {
    config_over(true)
}

/// The client config over the tunnel transport (through the master's local Unix socket)
/// or over HTTP/2.
fn config_over(tunnel: bool) -> GrpcClientConfig {
    GrpcClientConfig {
        connect_timeout: Duration::from_secs(5),
        rpc_timeout: Duration::from_secs(10),
        tunnel,
        local_socket: true,
        auth_token: None,
    }
}

const BIG_CLIENT: ClientId = ClientId(0xfedc_ba98_7654_3210_0123_4567_89ab_cdef);
const OTHER_CLIENT: ClientId = ClientId(1 << 64); // differs from BIG_CLIENT in both halves

fn segment(id: u128, name: &str) -> Segment {
    Segment {
        id: SegmentId(id),
        name: name.into(),
        base: 0x7f12_3456_0000,
        size: 64 << 20,
        te_endpoint: format!("{name}-te"),
        protocol: "tcp".into(),
        host_id: "10.0.0.1".into(),
        durable: false,
    }
}

fn keys(ks: &[&str]) -> Vec<String> {
    ks.iter().map(|k| k.to_string()).collect()
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn every_rpc_round_trips_over_the_tunnel() {
    every_rpc_round_trips(true).await;
}

#[tokio::test]
async fn every_rpc_round_trips_over_http2() {
    every_rpc_round_trips(false).await;
}

#[tokio::test]
async fn every_rpc_round_trips_over_the_tunnel_on_tcp() {
    every_rpc_round_trips_with(GrpcClientConfig {
        local_socket: false,
        ..config()
    })
    .await;
}

async fn every_rpc_round_trips(tunnel: bool) {
    every_rpc_round_trips_with(config_over(tunnel)).await;
}

async fn every_rpc_round_trips_with(config: GrpcClientConfig) {
    let fake = Arc::new(FakeMaster::default());
    let server = start(fake.clone()).await;
    let c = GrpcMasterClient::connect(&server.addr.to_string(), config)
        .await
        .unwrap();
    assert_eq!(c.master_version(), ProtocolVersion::CURRENT);
    assert_eq!(
        c.connect(ProtocolVersion::CURRENT).await,
        Ok(ProtocolVersion::CURRENT)
    );
    let future = ProtocolVersion {
        major: ProtocolVersion::CURRENT.major + 1,
        minor: 0,
    };
    assert_eq!(c.connect(future).await, Err(ErrorCode::InvalidVersion));

    // Segments and liveness, with ids that use both 64-bit halves.
    let seg_a = segment(u128::MAX - 1, "node-a:1234");
    let seg_b = segment(0xdead_beef_u128 << 64 | 0x1234, "node-b:1234");
    assert_eq!(
        c.ping(BIG_CLIENT).await.unwrap(),
        PingReply {
            view_version: VIEW_VERSION,
            status: ClientStatus::NeedRemount
        }
    );
    c.mount_segment(BIG_CLIENT, seg_a.clone()).await.unwrap();
    assert_eq!(
        c.mount_segment(OTHER_CLIENT, seg_a.clone()).await,
        Err(ErrorCode::SegmentAlreadyExists)
    );
    c.remount_segments(BIG_CLIENT, vec![seg_a.clone(), seg_b.clone()])
        .await
        .unwrap();
    {
        let st = fake.state();
        assert_eq!(
            st.segments.get(&seg_a.id),
            Some(&(BIG_CLIENT, seg_a.clone()))
        );
        assert_eq!(
            st.segments.get(&seg_b.id),
            Some(&(BIG_CLIENT, seg_b.clone()))
        );
        assert!(st.alive.contains(&BIG_CLIENT));
    }
    assert_eq!(c.ping(BIG_CLIENT).await.unwrap().status, ClientStatus::Ok);
    assert_eq!(
        c.ping(OTHER_CLIENT).await.unwrap().status,
        ClientStatus::NeedRemount
    );
    assert_eq!(
        c.unmount_segment(OTHER_CLIENT, seg_b.id).await,
        Err(ErrorCode::IllegalClient)
    );
    c.unmount_segment(BIG_CLIENT, seg_b.id).await.unwrap();
    assert_eq!(
        c.unmount_segment(BIG_CLIENT, seg_b.id).await,
        Err(ErrorCode::SegmentNotFound)
    );

    // A put: start (config on the wire), end, read back.
    let cfg = ReplicateConfig {
        replica_num: 2,
        pin: Pin::Hard,
        preferred_segments: vec!["node-a:1234".into()],
        prefer_alloc_in_same_node: true,
        ..ReplicateConfig::default()
    };
    let replicas = c.put_start(BIG_CLIENT, "k1", 4096, &cfg).await.unwrap();
    assert_eq!(replicas.len(), 2);
    assert_eq!(replicas[0].segment_name, "node-a:1234");
    assert_eq!(replicas[1].buffer_address, 0x7f00_0000_0000 + 4096);
    assert_eq!(fake.state().last_config.as_ref(), Some(&cfg));
    assert_eq!(
        c.put_start(BIG_CLIENT, "k1", 4096, &cfg).await,
        Err(ErrorCode::ObjectAlreadyExists)
    );
    assert_eq!(
        c.put_start(BIG_CLIENT, "", 4096, &cfg).await,
        Err(ErrorCode::InvalidParams)
    );
    assert_eq!(
        c.get_replica_list("k1").await,
        Err(ErrorCode::ReplicaIsNotReady)
    );
    assert_eq!(c.exist_key("k1").await, Ok(false));
    assert_eq!(
        c.put_end(OTHER_CLIENT, "k1").await,
        Err(ErrorCode::IllegalClient)
    );
    c.put_end(BIG_CLIENT, "k1").await.unwrap();
    assert_eq!(c.exist_key("k1").await, Ok(true));
    let list = c.get_replica_list("k1").await.unwrap();
    assert_eq!(
        (list.replicas, list.lease_ttl_ms),
        (replicas.clone(), LEASE_MS)
    );
    assert_eq!(
        c.get_replica_list("nope").await,
        Err(ErrorCode::ObjectNotFound)
    );
    assert_eq!(
        c.put_end(BIG_CLIENT, "nope").await,
        Err(ErrorCode::ObjectNotFound)
    );

    // Upsert replaces; revoke drops.
    let up = c
        .upsert_start(BIG_CLIENT, "k1", 100, &ReplicateConfig::default())
        .await
        .unwrap();
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].size, 100);
    assert_eq!(fake.state().last_config, Some(ReplicateConfig::default()));
    c.put_revoke(BIG_CLIENT, "k1").await.unwrap();
    assert_eq!(c.exist_key("k1").await, Ok(false));
    assert_eq!(
        c.put_revoke(BIG_CLIENT, "k1").await,
        Err(ErrorCode::ObjectNotFound)
    );

    // Batch forms: per-item codes, in order; an empty batch fails as a whole in this fake.
    let items = vec![
        ("b1".to_string(), 10),
        ("b2".to_string(), 0),
        ("leased-b3".to_string(), 30),
    ];
    let started = c.batch_put_start(BIG_CLIENT, &items, &cfg).await.unwrap();
    assert_eq!(started.len(), 3);
    assert_eq!(started[0].as_ref().unwrap().len(), 2);
    assert_eq!(started[1], Err(ErrorCode::InvalidParams));
    assert_eq!(started[2].as_ref().unwrap()[0].size, 30);
    assert_eq!(
        c.batch_put_start(BIG_CLIENT, &[], &cfg).await,
        Err(ErrorCode::InvalidParams)
    );
    let ended = c
        .batch_put_end(BIG_CLIENT, &keys(&["b1", "b2", "leased-b3"]))
        .await
        .unwrap();
    assert_eq!(ended, vec![Ok(()), Err(ErrorCode::ObjectNotFound), Ok(())]);
    assert_eq!(
        c.batch_put_end(BIG_CLIENT, &[]).await,
        Err(ErrorCode::InvalidParams)
    );
    let exist = c
        .batch_exist_key(&keys(&["b1", "b2", "", "leased-b3"]))
        .await
        .unwrap();
    assert_eq!(
        exist,
        vec![Ok(true), Ok(false), Err(ErrorCode::InvalidParams), Ok(true)]
    );
    assert_eq!(c.batch_exist_key(&[]).await, Err(ErrorCode::InvalidParams));
    let lists = c
        .batch_get_replica_list(&keys(&["b1", "b2"]))
        .await
        .unwrap();
    assert_eq!(lists[0].as_ref().unwrap().replicas.len(), 2);
    assert_eq!(lists[0].as_ref().unwrap().size(), 10);
    assert_eq!(lists[1], Err(ErrorCode::ObjectNotFound));
    assert_eq!(
        c.batch_get_replica_list(&[]).await,
        Err(ErrorCode::InvalidParams)
    );

    c.batch_put_start(
        BIG_CLIENT,
        &[("r1".to_string(), 1), ("r2".to_string(), 1)],
        &cfg,
    )
    .await
    .unwrap();
    let revoked = c
        .batch_put_revoke(BIG_CLIENT, &keys(&["r1", "r2", "r3"]))
        .await
        .unwrap();
    assert_eq!(
        revoked,
        vec![Ok(()), Ok(()), Err(ErrorCode::ObjectNotFound)]
    );
    assert_eq!(
        c.batch_put_revoke(BIG_CLIENT, &[]).await,
        Err(ErrorCode::InvalidParams)
    );

    // Removal, leases and force.
    assert_eq!(
        c.remove("leased-b3", false).await,
        Err(ErrorCode::ObjectHasLease)
    );
    assert_eq!(
        c.remove("nope", false).await,
        Err(ErrorCode::ObjectNotFound)
    );
    let removed = c
        .batch_remove(&keys(&["b1", "leased-b3", "nope"]), false)
        .await
        .unwrap();
    assert_eq!(
        removed,
        vec![
            Ok(()),
            Err(ErrorCode::ObjectHasLease),
            Err(ErrorCode::ObjectNotFound)
        ]
    );
    assert_eq!(
        c.batch_remove(&[], true).await,
        Err(ErrorCode::InvalidParams)
    );
    c.remove("leased-b3", true).await.unwrap();
    for k in ["x1", "x2", "leased-x3"] {
        c.put_start(BIG_CLIENT, k, 1, &cfg).await.unwrap();
    }
    assert_eq!(c.remove_all(false).await, Ok(2));
    assert_eq!(c.remove_all(true).await, Ok(1));
    assert_eq!(c.remove_all(true).await, Ok(0));

    server.stop().await;
}

#[tokio::test]
async fn the_master_refusing_the_version_fails_connect() {
    let server = start(Arc::new(FakeMaster {
        refuse: true,
        ..Default::default()
    }))
    .await;
    let r = GrpcMasterClient::connect(&server.addr.to_string(), config()).await;
    assert_eq!(r.unwrap_err(), ErrorCode::InvalidVersion);
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_master_is_rpc_fail() {
    // A port that was just free: nothing listens there.
    let addr = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let t0 = Instant::now();
    let r = GrpcMasterClient::connect(&addr.to_string(), config()).await;
    assert_eq!(r.unwrap_err(), ErrorCode::RpcFail);
    assert!(
        t0.elapsed() < Duration::from_secs(6),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(
        GrpcMasterClient::connect("not an address", config())
            .await
            .unwrap_err(),
        ErrorCode::RpcFail
    );
}

#[tokio::test]
async fn a_slow_master_is_rpc_timeout() {
    let fake = FakeMaster {
        ping_delay: Duration::from_secs(3),
        ..Default::default()
    };
    let server = start(Arc::new(fake)).await;
    let cfg = GrpcClientConfig {
        rpc_timeout: Duration::from_millis(300),
        ..config()
    };
    let c = GrpcMasterClient::connect(&server.addr.to_string(), cfg)
        .await
        .unwrap();
    let t0 = Instant::now();
    assert_eq!(c.ping(BIG_CLIENT).await, Err(ErrorCode::RpcTimeout));
    assert!(t0.elapsed() < Duration::from_secs(2));
    // The connection is still usable afterwards.
    assert_eq!(c.exist_key("k").await, Ok(false));
    server.stop().await;
}

#[tokio::test]
async fn concurrent_calls_over_the_tunnel_and_a_restarted_master() {
    concurrent_calls_share_one_client_and_shutdown_ends_service(true).await;
}

#[tokio::test]
async fn concurrent_calls_over_http2_and_a_restarted_master() {
    concurrent_calls_share_one_client_and_shutdown_ends_service(false).await;
}

async fn concurrent_calls_share_one_client_and_shutdown_ends_service(tunnel: bool) {
    let server = start(Arc::new(FakeMaster::default())).await;
    let c = GrpcMasterClient::connect(&server.addr.to_string(), config_over(tunnel))
        .await
        .unwrap();
    let cfg = ReplicateConfig::default();
    let mut tasks = Vec::new();
    for i in 0..64u128 {
        let c = c.clone();
        let cfg = cfg.clone();
        tasks.push(tokio::spawn(async move {
            let client = ClientId(i << 64 | i);
            let key = format!("key-{i}");
            c.put_start(client, &key, 8, &cfg).await.unwrap();
            c.put_end(client, &key).await.unwrap();
            c.exist_key(&key).await.unwrap()
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap());
    }
    assert_eq!(c.remove_all(true).await, Ok(64));

    let server_addr = server.addr;
    server.stop().await;
    let r = c.exist_key("key-1").await;
    assert_eq!(r, Err(ErrorCode::RpcFail));

    // A master restarted on the same address: the same client reconnects by itself.
    let server = start_at(Arc::new(FakeMaster::default()), server_addr).await;
    let mut r = c.exist_key("key-1").await;
    for _ in 0..50 {
        if r.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        r = c.exist_key("key-1").await;
    }
    assert_eq!(r, Ok(false));
    server.stop().await;
}

#[tokio::test]
async fn invalid_wire_values_are_invalid_params() {
    let fake = Arc::new(FakeMaster::default());
    let server = start(fake.clone()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw = MasterServiceClient::new(channel);
    let good = pb::ReplicateConfig {
        replica_num: 1,
        pin: 0,
        preferred_segments: vec![],
        prefer_alloc_in_same_node: false,
        ..Default::default()
    };

    // Unknown pin.
    let req = pb::PutStartRequest {
        client_hi: 1,
        client_lo: 2,
        key: "k".into(),
        size: 1,
        config: Some(pb::ReplicateConfig {
            pin: 42,
            ..good.clone()
        }),
    };
    assert_eq!(
        raw.put_start(req).await.unwrap().into_inner().error_code,
        ErrorCode::InvalidParams.code()
    );
    // Missing config, on upsert.
    let req = pb::PutStartRequest {
        client_hi: 1,
        client_lo: 2,
        key: "k".into(),
        size: 1,
        config: None,
    };
    assert_eq!(
        raw.upsert_start(req).await.unwrap().into_inner().error_code,
        ErrorCode::InvalidParams.code()
    );
    // Keys and sizes of different lengths.
    let req = pb::BatchPutStartRequest {
        client_hi: 1,
        client_lo: 2,
        keys: vec!["a".into(), "b".into()],
        sizes: vec![1],
        config: Some(good.clone()),
    };
    let r = raw.batch_put_start(req).await.unwrap().into_inner();
    assert_eq!(
        (r.error_code, r.results.len()),
        (ErrorCode::InvalidParams.code(), 0)
    );
    // Missing segment.
    let req = pb::MountSegmentRequest {
        client_hi: 1,
        client_lo: 2,
        segment: None,
    };
    assert_eq!(
        raw.mount_segment(req)
            .await
            .unwrap()
            .into_inner()
            .error_code,
        ErrorCode::InvalidParams.code()
    );
    // None of them reached the master.
    assert!(fake.state().objects.is_empty() && fake.state().segments.is_empty());
    // A well-formed one does, with the id halves joined as hi:lo.
    let req = pb::PutStartRequest {
        client_hi: 1,
        client_lo: 2,
        key: "k".into(),
        size: 1,
        config: Some(good),
    };
    assert_eq!(raw.put_start(req).await.unwrap().into_inner().error_code, 0);
    assert_eq!(fake.state().objects["k"].owner, ClientId(1 << 64 | 2));

    server.stop().await;
}

fn token(text: &str) -> Option<AuthToken> {
    AuthToken::new(text).unwrap()
}

/// A master with a token admits only clients presenting it, over every transport: the
/// others fail to connect and never reach the master; the right token works.
#[tokio::test]
async fn a_master_with_a_token_refuses_everyone_else() {
    let fake = Arc::new(FakeMaster::default());
    let options = ServeOptions {
        auth_token: token("s3cr3t"),
        ..ServeOptions::default()
    };
    let server = start_with(fake.clone(), "127.0.0.1:0".parse().unwrap(), options).await;
    let addr = server.addr.to_string();
    let transports = [(true, true), (true, false), (false, false)];
    for (tunnel, local_socket) in transports {
        for presented in [None, token("wrong"), token("s3cr3")] {
            let cfg = GrpcClientConfig {
                local_socket,
                auth_token: presented.clone(),
                ..config_over(tunnel)
            };
            let refused = GrpcMasterClient::connect(&addr, cfg).await;
            assert_eq!(
                refused.err(),
                Some(ErrorCode::RpcFail),
                "tunnel {tunnel}, local {local_socket}, token {:?}",
                presented.is_some()
            );
        }
    }
    assert_eq!(
        fake.connects.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no refused call reached the master"
    );
    for (tunnel, local_socket) in transports {
        let cfg = GrpcClientConfig {
            local_socket,
            auth_token: token("s3cr3t"),
            ..config_over(tunnel)
        };
        let c = GrpcMasterClient::connect(&addr, cfg).await.unwrap();
        assert_eq!(c.exist_key("k").await, Ok(false));
    }
    server.stop().await;
}

/// The refusal says why, to a client that reads the status (the raw generated client
/// over HTTP/2 without a token).
#[tokio::test]
async fn an_unauthenticated_rpc_says_authentication_failed() {
    let options = ServeOptions {
        auth_token: token("s3cr3t"),
        ..ServeOptions::default()
    };
    let server = start_with(Arc::default(), "127.0.0.1:0".parse().unwrap(), options).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw = MasterServiceClient::new(channel);
    let status = raw
        .exist_key(pb::KeyRequest { key: "k".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(
        status.message().contains("authentication failed"),
        "{}",
        status.message()
    );
    server.stop().await;
}

/// With `max_connections` = 1, a second client waits (its call times out) while the first
/// holds the only connection, and is served once the first is gone.
#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_one() {
    let options = ServeOptions {
        max_connections: 1,
        ..ServeOptions::default()
    };
    let server = start_with(Arc::default(), "127.0.0.1:0".parse().unwrap(), options).await;
    let addr = server.addr.to_string();
    let short = GrpcClientConfig {
        rpc_timeout: Duration::from_millis(300),
        ..config()
    };
    let first = GrpcMasterClient::connect(&addr, config()).await.unwrap();
    assert_eq!(
        GrpcMasterClient::connect(&addr, short.clone()).await.err(),
        Some(ErrorCode::RpcTimeout)
    );
    drop(first);
    let mut served = None;
    for _ in 0..50 {
        if let Ok(c) = GrpcMasterClient::connect(&addr, short.clone()).await {
            served = Some(c);
            break;
        }
    }
    assert_eq!(served.unwrap().exist_key("k").await, Ok(false));
    server.stop().await;
}
