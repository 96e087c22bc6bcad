//! The store client against an in-process master, real transfer engines and a real HTTP
//! metadata server on 127.0.0.1: every behaviour of `observed-behaviour.md` §3.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mooncake_master::{Master, MasterConfig};
use mooncake_metadata::{HttpMetadataServer, HttpMetadataServerConfig};
use mooncake_store::{Client, ClientConfig, ErrorCode, MasterApi, Pin, ReplicateConfig};

const MIB: u64 = 1 << 20;

struct Cluster {
    master: Arc<Master>,
    metadata: String,
}

async fn cluster(config: MasterConfig) -> Cluster {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metadata = format!("http://{}/metadata", listener.local_addr().unwrap());
    tokio::spawn(
        HttpMetadataServer::new(HttpMetadataServerConfig::default())
            .run(listener, std::future::pending()),
    );
    let master = Master::new(config);
    tokio::spawn(
        master
            .clone()
            .run_ticker(Duration::from_millis(10), std::future::pending()),
    );
    Cluster { master, metadata }
}

impl Cluster {
    /// A client contributing `segment` bytes of private memory (no shared memory), so
    /// other clients reach it over TCP only, as a holder on another host.
    async fn tcp_holder(&self, segment: u64) -> Client {
        let config = ClientConfig {
            metadata_server: self.metadata.clone(),
            global_segment_size: segment,
            local_buffer_size: 0,
            shared_memory: false,
            ..ClientConfig::default()
        };
        Client::with_master(config, self.master.clone() as Arc<dyn MasterApi>)
            .await
            .unwrap()
    }

    async fn client(&self, segment: u64, buffer: u64) -> Client {
        let config = ClientConfig {
            metadata_server: self.metadata.clone(),
            global_segment_size: segment,
            local_buffer_size: buffer,
            ping_interval: Duration::from_millis(100),
            ..ClientConfig::default()
        };
        Client::with_master(config, self.master.clone() as Arc<dyn MasterApi>)
            .await
            .unwrap()
    }
}

/// `get_batch_lent` of `keys` into fresh memory of `len` bytes each.
async fn lent_batch(user: &Client, keys: &[&str], len: usize) -> Vec<bool> {
    use std::mem::MaybeUninit;
    let mut outs: Vec<Vec<MaybeUninit<u8>>> = keys
        .iter()
        .map(|_| vec![MaybeUninit::uninit(); len])
        .collect();
    let mut items: Vec<(&str, &mut [MaybeUninit<u8>])> = keys
        .iter()
        .zip(outs.iter_mut())
        .map(|(k, o)| (*k, &mut o[..]))
        .collect();
    user.get_batch_lent(&mut items).await
}

fn value(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_put_keeps_the_first_value_and_upsert_overwrites() {
    let c = cluster(MasterConfig::default()).await;
    let _store = c.client(64 * MIB, 0).await;
    let user = c.client(0, 16 * MIB).await;
    let cfg = ReplicateConfig::default();
    user.put("k", b"first", &cfg).await.unwrap();
    assert_eq!(
        user.put("k", b"second", &cfg).await,
        Ok(()),
        "a duplicate put returns 0"
    );
    assert_eq!(user.get("k").await.unwrap(), b"first");
    let batch = user
        .put_batch(&[("k", b"third"), ("n", b"new"), ("n", b"dup")], &cfg)
        .await;
    assert!(batch.iter().all(Result::is_ok), "{batch:?}");
    assert_eq!(user.get("k").await.unwrap(), b"first");
    assert_eq!(user.get("n").await.unwrap(), b"new");
    user.upsert("k", b"replaced value", &cfg).await.unwrap();
    assert_eq!(user.get("k").await.unwrap(), b"replaced value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_keys_and_bad_input() {
    let c = cluster(MasterConfig::default()).await;
    let _store = c.client(64 * MIB, 0).await;
    let user = c.client(0, 16 * MIB).await;
    let cfg = ReplicateConfig::default();
    assert_eq!(user.get("missing").await, Err(ErrorCode::ObjectNotFound));
    assert_eq!(
        user.get_size("missing").await,
        Err(ErrorCode::ObjectNotFound)
    );
    assert_eq!(
        user.remove("missing", false).await,
        Err(ErrorCode::ObjectNotFound)
    );
    assert_eq!(user.is_exist("missing").await, Ok(false));
    assert_eq!(
        user.put("", b"x", &cfg).await,
        Err(ErrorCode::InvalidParams)
    );
    assert_eq!(
        user.put("k", b"", &cfg).await,
        Err(ErrorCode::InvalidParams)
    );
    let same_node = ReplicateConfig {
        prefer_alloc_in_same_node: true,
        ..Default::default()
    };
    assert_eq!(
        user.put("k", b"x", &same_node).await,
        Err(ErrorCode::InvalidParams)
    );
    // A buffer that was never registered.
    assert_eq!(
        user.put_from("k", 4096, 100, &cfg).await,
        Err(ErrorCode::InvalidParams)
    );
    assert_eq!(
        user.is_exist("k").await,
        Ok(false),
        "a failed put leaves nothing behind"
    );
    assert_eq!(
        user.put_from("zero", 4096, 0, &cfg).await,
        Ok(()),
        "put_from of 0 bytes stores nothing"
    );
    assert_eq!(user.is_exist("zero").await, Ok(false));
    // get_into a buffer smaller than the value: error, buffer untouched.
    user.put("v", &value(1000, 1), &cfg).await.unwrap();
    let buf = user.engine().allocate_buffer(4096, "cpu:0").await.unwrap();
    buf.write_at(0, &[0xEE; 999]);
    assert_eq!(
        user.get_into("v", buf.addr(), 999).await,
        Err(ErrorCode::InvalidParams)
    );
    assert!(buf.to_vec(0, 999).iter().all(|b| *b == 0xEE));
    assert_eq!(user.get_into("v", buf.addr(), 4096).await, Ok(1000));
    assert_eq!(buf.to_vec(0, 1000), value(1000, 1));
    let got = user
        .batch_get_into(&[
            ("v", buf.addr(), 4096),
            ("missing", buf.addr() + 2048, 2048),
        ])
        .await;
    assert_eq!(got, vec![Ok(1000), Err(ErrorCode::ObjectNotFound)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_blocks_remove_until_it_expires() {
    let config = MasterConfig {
        default_kv_lease_ttl: Duration::from_millis(300),
        ..MasterConfig::default()
    };
    let c = cluster(config).await;
    let _store = c.client(64 * MIB, 0).await;
    let user = c.client(0, 16 * MIB).await;
    user.put("k", b"v", &ReplicateConfig::default())
        .await
        .unwrap();
    user.get("k").await.unwrap();
    let leased = Instant::now();
    assert_eq!(
        user.remove("k", false).await,
        Err(ErrorCode::ObjectHasLease)
    );
    while user.remove("k", false).await == Err(ErrorCode::ObjectHasLease) {
        assert!(leased.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(leased.elapsed() >= Duration::from_millis(250));
    user.put("f", b"v", &ReplicateConfig::default())
        .await
        .unwrap();
    assert_eq!(user.is_exist("f").await, Ok(true));
    assert_eq!(
        user.remove("f", true).await,
        Ok(()),
        "force ignores the lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_larger_than_the_local_buffer_need_the_zero_copy_path() {
    let c = cluster(MasterConfig::default()).await;
    let _store = c.client(128 * MIB, 0).await;
    let user = c.client(0, 16 * MIB).await;
    let cfg = ReplicateConfig::default();
    let big = value((32 * MIB) as usize, 5);
    assert_eq!(
        user.put("big", &big, &cfg).await,
        Err(ErrorCode::InvalidParams)
    );
    let buf = user
        .engine()
        .allocate_buffer(64 * MIB, "cpu:0")
        .await
        .unwrap();
    buf.write_at(0, &big);
    user.put_from("big", buf.addr(), 32 * MIB, &cfg)
        .await
        .unwrap();
    assert_eq!(
        user.get("big").await,
        Err(ErrorCode::InvalidParams),
        "too large for the staging buffer"
    );
    assert_eq!(
        user.get_into("big", buf.addr() + 32 * MIB, 32 * MIB).await,
        Ok(32 * MIB)
    );
    assert!(buf.to_vec(32 * MIB, (32 * MIB) as usize) == big);
    assert_eq!(
        user.put_from("huge", buf.addr(), 64 * MIB, &ReplicateConfig::default())
            .await,
        Ok(())
    );
    let whole = user
        .engine()
        .allocate_buffer(200 * MIB, "cpu:0")
        .await
        .unwrap();
    assert_eq!(
        user.put_from("too-big", whole.addr(), 200 * MIB, &cfg)
            .await,
        Err(ErrorCode::NoAvailableHandle)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_evicts_instead_of_failing() {
    let c = cluster(MasterConfig::default()).await;
    let _store = c.client(64 * MIB, 0).await;
    let user = c.client(0, 16 * MIB).await;
    let v = value(MIB as usize, 3);
    for i in 0..192 {
        user.put(&format!("k{i}"), &v, &ReplicateConfig::default())
            .await
            .unwrap_or_else(|e| panic!("put {i}: {e}"));
    }
    assert_eq!(user.get("k191").await.unwrap(), v);
    assert_eq!(user.is_exist("k0").await, Ok(false), "oldest evicted first");
    // Every key leased: exactly what fits succeeds, then the store is full.
    user.remove_all(true).await.unwrap();
    let mut ok = 0;
    for i in 0..80 {
        let key = format!("l{i}");
        match user.put(&key, &v, &ReplicateConfig::default()).await {
            Ok(()) => {
                ok += 1;
                assert_eq!(user.is_exist(&key).await, Ok(true));
            }
            Err(e) => assert_eq!(e, ErrorCode::NoAvailableHandle),
        }
    }
    assert_eq!(ok, 64);
    user.remove_all(true).await.unwrap();
    let pinned = ReplicateConfig {
        pin: Pin::Hard,
        ..Default::default()
    };
    let results: Vec<_> = futures_lite(&user, &v, &pinned).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 64);
}

async fn futures_lite(
    user: &Client,
    v: &[u8],
    cfg: &ReplicateConfig,
) -> Vec<Result<(), ErrorCode>> {
    let mut out = Vec::new();
    for i in 0..70 {
        out.push(user.put(&format!("h{i}"), v, cfg).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_fail_over_to_a_surviving_replica_and_dead_contributors_expire() {
    let config = MasterConfig {
        client_ttl: Duration::from_millis(800),
        ..MasterConfig::default()
    };
    let c = cluster(config).await;
    let a = c.client(64 * MIB, 0).await;
    let _b = c.client(64 * MIB, 0).await;
    let user = c.client(0, 16 * MIB).await;
    let two = ReplicateConfig {
        replica_num: 2,
        ..Default::default()
    };
    for i in 0..20 {
        user.put(&format!("r{i}"), &value(10_000, i as u8), &two)
            .await
            .unwrap();
    }
    let one = ReplicateConfig {
        preferred_segments: vec![a.segment().unwrap().name.clone()],
        ..Default::default()
    };
    let a_name = a.segment().unwrap().name.clone();
    user.put("only-on-a", b"lost", &one).await.unwrap();
    // The contributor dies without unmounting: no more pings, its engine stops serving.
    // (Dropped in-process, its engine stops asynchronously; wait until its data port is
    // closed, as a dead process's would be at once, or a fast read may still be served.)
    let a_data = a.engine().data_addr();
    drop(a);
    let dropped = Instant::now();
    while std::net::TcpStream::connect(a_data).is_ok() {
        assert!(
            dropped.elapsed() < Duration::from_secs(5),
            "the engine kept serving"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..20 {
        assert_eq!(
            user.get(&format!("r{i}")).await.unwrap(),
            value(10_000, i as u8),
            "r{i}"
        );
    }
    assert_eq!(user.read_transfer_failures(), 0, "a failover is no miss");
    assert_eq!(
        user.get("only-on-a").await,
        Err(ErrorCode::TransferFail),
        "fails cleanly, no hang"
    );
    assert_eq!(
        user.read_transfer_failures(),
        1,
        "the master named a replica: only the client sees this miss"
    );
    let died = Instant::now();
    while user.is_exist("only-on-a").await == Ok(true) {
        assert!(
            died.elapsed() < Duration::from_secs(5),
            "liveness never expired the dead contributor"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(user.get("r3").await.unwrap(), value(10_000, 3));
    // Once liveness dropped the holder, the master knows why the key misses.
    match c.master.explain("only-on-a").key.now {
        mooncake_master::KeyState::Missing { cause, .. } => {
            assert_eq!(cause, mooncake_master::MissCause::HolderLost)
        }
        other => panic!("{other:?}"),
    }
    let segments = c.master.segment_names();
    assert!(!segments.contains(&a_name), "{segments:?}");
}

#[tokio::test]
async fn an_unreachable_master_or_metadata_server_fails_setup_clearly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = Instant::now();
    let config = ClientConfig {
        master_server_addr: format!("127.0.0.1:{port}"),
        ..ClientConfig::default()
    };
    let err = Client::setup(config).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(6));
    assert_eq!(
        err.to_string(),
        format!("master 127.0.0.1:{port}: rpc to the master failed")
    );
    let master = Master::new(MasterConfig::default());
    let config = ClientConfig {
        metadata_server: format!("http://127.0.0.1:{port}/metadata"),
        ..ClientConfig::default()
    };
    let err = Client::with_master(config, master as Arc<dyn MasterApi>)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{port}/metadata")) && text.contains("unreachable"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_buffer_objects_are_concatenated_and_need_an_exact_fit_to_read() {
    let c = cluster(MasterConfig::default()).await;
    let _store = c.client(64 * MIB, 0).await;
    let user = c.client(0, 16 * MIB).await;
    let cfg = ReplicateConfig::default();
    let buf = user.engine().allocate_buffer(MIB, "cpu:0").await.unwrap();
    let (a, b) = (value(1000, 1), value(3000, 2));
    buf.write_at(0, &a);
    buf.write_at(4096, &b);
    let parts = vec![(buf.addr(), 1000), (buf.addr() + 4096, 3000)];
    let put = user
        .batch_put_parts_from(&[("mb", parts.clone()), ("mb2", parts)], &cfg, false)
        .await;
    assert_eq!(put, vec![Ok(()), Ok(())]);
    let mut whole = a.clone();
    whole.extend_from_slice(&b);
    assert_eq!(user.get("mb").await.unwrap(), whole);

    // Scatter into three ranges of a second area.
    let base = buf.addr() + 64 * 1024;
    let split = vec![(base, 10), (base + 100, 2990), (base + 8192, 1000)];
    assert_eq!(user.get_into_parts("mb", &split).await, Ok(4000));
    assert_eq!(buf.to_vec(64 * 1024, 10), whole[..10]);
    assert_eq!(buf.to_vec(64 * 1024 + 100, 2990), whole[10..3000]);
    assert_eq!(buf.to_vec(64 * 1024 + 8192, 1000), whole[3000..]);

    // Too short: -600; too long: -800; missing: -704; a mix keeps input order.
    let short = vec![(base, 3999)];
    let long = vec![(base, 4001)];
    let got = user
        .batch_get_into_parts(&[("mb2", short), ("mb2", long), ("nope", vec![(base, 10)])])
        .await;
    assert_eq!(
        got,
        vec![
            Err(ErrorCode::InvalidParams),
            Err(ErrorCode::TransferFail),
            Err(ErrorCode::ObjectNotFound)
        ]
    );

    // Upsert through parts replaces the value, also with a new size.
    let parts = vec![(buf.addr() + 4096, 3000), (buf.addr(), 1000)];
    user.put_parts_from("mb", &parts, &cfg, true).await.unwrap();
    let mut swapped = b.clone();
    swapped.extend_from_slice(&a);
    assert_eq!(user.get("mb").await.unwrap(), swapped);
    user.put_parts("pp", &[b"head-", b"tail"], &cfg, false)
        .await
        .unwrap();
    assert_eq!(user.get("pp").await.unwrap(), b"head-tail");
    let up = user
        .upsert_batch(&[("pp", b"new"), ("q", b"fresh")], &cfg)
        .await;
    assert_eq!(up, vec![Ok(()), Ok(())]);
    assert_eq!(user.get("pp").await.unwrap(), b"new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_started_from_a_stale_cached_location_are_never_returned() {
    let c = cluster(MasterConfig::default()).await;
    let _store = c.client(64 * MIB, 0).await;
    let reader = c.client(0, 16 * MIB).await;
    let writer = c.client(0, 16 * MIB).await;
    let cfg = ReplicateConfig::default();
    let (a, b) = (value(4096, 1), value(4096, 2));
    reader.put("k", &a, &cfg).await.unwrap(); // the reader now caches k's location
    let old = c.master.get_replica_list("k").await.unwrap().replicas[0].clone();
    assert_eq!(reader.get("k").await.unwrap(), a);

    // Another client removes k and stores other bytes in the very same range (an upsert:
    // a put would go to a slot reserved ahead, elsewhere).
    writer.remove("k", true).await.unwrap();
    writer.upsert("other", &b, &cfg).await.unwrap();
    let reused = c.master.get_replica_list("other").await.unwrap().replicas[0].clone();
    assert_eq!(
        reused.buffer_address, old.buffer_address,
        "the test needs the range reused"
    );
    assert_eq!(reader.get("k").await, Err(ErrorCode::ObjectNotFound));
    let buf = reader.engine().allocate_buffer(MIB, "cpu:0").await.unwrap();
    assert_eq!(
        reader.get_into("k", buf.addr(), MIB).await,
        Err(ErrorCode::ObjectNotFound)
    );

    // k comes back with the same size at the same range: a new version, so the cached
    // guess (same address and size) is still refused and the value read again.
    reader.put("k", &a, &cfg).await.unwrap();
    writer.remove("k", true).await.unwrap();
    writer.remove("other", true).await.unwrap();
    let d = value(4096, 9);
    writer.upsert("k", &d, &cfg).await.unwrap();
    assert_eq!(reader.get("k").await.unwrap(), d);
    assert_eq!(reader.get_into("k", buf.addr(), MIB).await, Ok(4096));
    assert_eq!(buf.to_vec(0, 4096), d);
    // And with another size.
    writer.upsert("k", &value(9000, 3), &cfg).await.unwrap();
    assert_eq!(reader.get("k").await.unwrap(), value(9000, 3));
    assert_eq!(reader.get_into("k", buf.addr(), MIB).await, Ok(9000));
    assert_eq!(buf.to_vec(0, 9000), value(9000, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2phandshake_clients_need_no_metadata_server() {
    let master = Master::new(MasterConfig::default());
    let client = |segment: u64| {
        let master = master.clone();
        async move {
            let config = ClientConfig {
                metadata_server: "P2PHANDSHAKE".into(),
                global_segment_size: segment,
                ..ClientConfig::default()
            };
            Client::with_master(config, master as Arc<dyn MasterApi>)
                .await
                .unwrap()
        }
    };
    let store = client(64 * MIB).await;
    let user = client(0).await;
    let name = store.segment().unwrap().name.clone();
    assert_eq!(
        name,
        format!("127.0.0.1:{}", store.engine().rpc_port()),
        "P2P segment names are <host>:<rpc port>"
    );
    let v = value(100_000, 4);
    user.put("p2p", &v, &ReplicateConfig::default())
        .await
        .unwrap();
    assert_eq!(user.get("p2p").await.unwrap(), v);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_go_straight_into_shared_memory_and_through_staging_over_tcp() {
    let c = cluster(MasterConfig::default()).await;
    let shm = c.client(16 * MIB, 0).await;
    let tcp = c.tcp_holder(16 * MIB).await;
    let user = c.client(0, 4 * MIB).await;
    for (holder, name) in [(&shm, "shm"), (&tcp, "tcp")] {
        let at = ReplicateConfig {
            preferred_segments: vec![holder.segment().unwrap().name.clone()],
            ..ReplicateConfig::default()
        };
        let before = user.engine().shm_bytes();
        let v = value(300_000, 9);
        user.put(&format!("{name}-one"), &v, &at).await.unwrap();
        user.put_parts(
            &format!("{name}-parts"),
            &[&v[..1000], &v[1000..]],
            &at,
            false,
        )
        .await
        .unwrap();
        let w = value(200_000, 10);
        let (a, b) = (format!("{name}-batch-a"), format!("{name}-batch-b"));
        let batch = user
            .put_batch(&[(a.as_str(), &v[..]), (b.as_str(), &w[..])], &at)
            .await;
        assert!(batch.iter().all(Result::is_ok), "{name}: {batch:?}");
        let moved = user.engine().shm_bytes() - before;
        assert_eq!(
            moved,
            if name == "shm" { 1_100_000 } else { 0 },
            "{name}: bytes copied through shared memory"
        );
        assert_eq!(user.get(&format!("{name}-one")).await.unwrap(), v, "{name}");
        assert_eq!(
            user.get(&format!("{name}-parts")).await.unwrap(),
            v,
            "{name}"
        );
        assert_eq!(user.get(&a).await.unwrap(), v, "{name}");
        assert_eq!(user.get(&b).await.unwrap(), w, "{name}");
        let got = user.get_batch(&[a.as_str(), "absent", b.as_str()]).await;
        assert_eq!(got[0].as_deref(), Ok(&v[..]), "{name}");
        assert_eq!(got[1], Err(ErrorCode::ObjectNotFound), "{name}");
        assert_eq!(got[2].as_deref(), Ok(&w[..]), "{name}");
        // `get_value` hands out the replica's own bytes when it maps them.
        let found = user.get_value(&b).await.unwrap();
        let mapped = matches!(found, mooncake_store::Value::Mapped(_));
        assert_eq!(mapped, name == "shm", "{name}: {found:?}");
        assert_eq!(found.len(), w.len(), "{name}");
        assert_eq!(found.to_vec(), w, "{name}");
        let staged = user.get_batch_staged(&[a.as_str()]).await;
        assert_eq!(
            staged[0].as_ref().map(|s| s.to_vec()),
            Ok(v.clone()),
            "{name}"
        );
    }
    // Two replicas, one reached by a copy and one over TCP: the staged bytes serve the
    // TCP one, and both hold the value.
    let both = ReplicateConfig {
        replica_num: 2,
        ..ReplicateConfig::default()
    };
    let v = value(250_000, 11);
    let batch = user.put_batch(&[("both", &v[..])], &both).await;
    assert!(batch.iter().all(Result::is_ok), "{batch:?}");
    assert_eq!(user.get("both").await.unwrap(), v);
    // Closing the shared-memory holder leaves the TCP replica (an object with another
    // replica is not drained), so this read is served by the staged copy.
    shm.close().await.unwrap();
    assert_eq!(user.get("both").await.unwrap(), v, "the TCP replica");
    tcp.close().await.unwrap();
}

/// Values this client remembers on a machine it reaches over TCP are read straight into
/// the caller's memory (`get_lent`, `get_batch_lent`), as much as one lent exchange
/// carries; the rest, and any value larger than one exchange, are left to the staged
/// path up front, so no memory is filled for an exchange that cannot run. Asked for
/// more, the engine takes as many exchanges as it needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lent_reads_over_tcp_take_as_many_exchanges_as_they_need() {
    use mooncake_transfer_engine::TransferEngine;
    use std::mem::MaybeUninit;
    let c = cluster(MasterConfig::default()).await;
    let tcp = c.tcp_holder(128 * MIB).await;
    let user = c.client(0, 40 * MIB).await;
    let at = ReplicateConfig {
        preferred_segments: vec![tcp.segment().unwrap().name.clone()],
        ..ReplicateConfig::default()
    };
    let big = usize::try_from(TransferEngine::LENT_MAX_BYTES / 4).unwrap();
    let keys: Vec<String> = (0..6).map(|i| format!("lent-{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        user.put(k, &value(big, i as u8), &at).await.unwrap();
    }
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    // The writer remembers where each value went; four of them fill one exchange, so
    // only those are offered, but the engine reads all six when asked (two exchanges).
    let sizes = user.remembered_network_sizes(&refs).await;
    let fit: Vec<Option<u64>> = (0..6).map(|i| (i < 4).then_some(big as u64)).collect();
    assert_eq!(sizes, fit, "offered for lent reads: one exchange's worth");
    // (The bytes themselves are checked from Python, where they become `bytes`.)
    assert_eq!(lent_batch(&user, &refs, big).await, vec![true; 6]);
    let mut one = vec![MaybeUninit::uninit(); big];
    assert_eq!(user.get_lent(&keys[5], &mut one).await, Ok(true));
    // A value larger than one exchange is never offered for a lent read.
    let huge = value(
        usize::try_from(TransferEngine::LENT_MAX_BYTES).unwrap() + 1,
        7,
    );
    user.put("lent-huge", &huge, &at).await.unwrap();
    assert_eq!(user.remembered_network_size("lent-huge").await, None);
    assert_eq!(user.get("lent-huge").await.unwrap(), huge);
    tcp.close().await.unwrap();
}

/// Small puts go into slots the master reserved ahead (one master call each); the values
/// read back from any client, and a key that exists keeps its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_puts_go_into_reserved_slots() {
    let c = cluster(MasterConfig::default()).await;
    let _store = c.client(64 * MIB, 0).await;
    let writer = c.client(0, 16 * MIB).await;
    let reader = c.client(0, 16 * MIB).await;
    let cfg = ReplicateConfig::default();
    assert_eq!(writer.reserved_slots_held(), 0);
    for i in 0..20u8 {
        writer
            .put(&format!("s{i}"), &value(4096, i), &cfg)
            .await
            .unwrap();
    }
    assert!(
        writer.reserved_slots_held() > 0,
        "the writer holds slots for its next puts"
    );
    for i in 0..20u8 {
        assert_eq!(reader.get(&format!("s{i}")).await.unwrap(), value(4096, i));
    }
    // An existing key keeps its value and the put succeeds.
    writer.put("s0", &value(4096, 99), &cfg).await.unwrap();
    assert_eq!(reader.get("s0").await.unwrap(), value(4096, 0));
    // Registered memory too.
    let buf = writer.engine().allocate_buffer(MIB, "cpu:0").await.unwrap();
    buf.write_at(0, &value(5000, 7));
    writer
        .put_from("reg", buf.addr(), 5000, &cfg)
        .await
        .unwrap();
    assert_eq!(reader.get("reg").await.unwrap(), value(5000, 7));
    // Batches too: one call for 40 values of two sizes, one of which exists already.
    let keys: Vec<String> = (0..40).map(|i| format!("b{i}")).collect();
    let vals: Vec<Vec<u8>> = (0..40u8)
        .map(|i| value(1000 + 3000 * usize::from(i % 2), i))
        .collect();
    writer.put("b7", &value(4000, 200), &cfg).await.unwrap();
    let items: Vec<(&str, &[u8])> = keys
        .iter()
        .map(String::as_str)
        .zip(vals.iter().map(Vec::as_slice))
        .collect();
    let held = writer.reserved_slots_held();
    assert!(writer
        .put_batch(&items, &cfg)
        .await
        .iter()
        .all(Result::is_ok));
    // Each committed slot comes back with a fresh one (the batch took a few the pool
    // held, and reserved the rest).
    assert!(
        writer.reserved_slots_held() >= held + 30,
        "the batch did not go into slots"
    );
    for (i, k) in keys.iter().enumerate() {
        let want = if i == 7 {
            value(4000, 200)
        } else {
            vals[i].clone()
        };
        assert_eq!(reader.get(k).await.unwrap(), want, "{k}");
    }
    // Slots unconfirmed for a while (their lender may have been replaced) are dropped,
    // never written, and given back to the master, which frees them at once; the next put
    // reserves afresh.
    let allocated = || {
        let text = c.master.render_metrics();
        text.lines()
            .find_map(|l| {
                l.strip_prefix("master_allocated_bytes ")?
                    .parse::<u64>()
                    .ok()
            })
            .unwrap()
    };
    assert!(writer.reserved_slots_held() > 8);
    let before = allocated();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    writer.put("late", &value(4096, 4), &cfg).await.unwrap();
    assert!(writer.reserved_slots_held() <= 4, "the stale pool was kept");
    assert_eq!(reader.get("late").await.unwrap(), value(4096, 4));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let after = allocated();
    assert!(
        after + 20_000 < before,
        "the dropped slots were not given back: {before} then {after}"
    );
    // Larger values and configs a slot cannot take go the usual way.
    writer
        .put("big", &value(2 * MIB as usize, 3), &cfg)
        .await
        .unwrap();
    assert_eq!(reader.get("big").await.unwrap(), value(2 * MIB as usize, 3));
}

/// A batch whose values sit on two holders reached over TCP moves in one exchange (one
/// round trip for the batch, not one per holder), byte for byte: batch reads through the
/// staging buffer and into lent memory, and a batch put of small values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_over_two_holders_move_in_one_exchange() {
    use mooncake_transfer_engine::spread_exchanges;
    let c = cluster(MasterConfig::default()).await;
    let holder = || async { c.tcp_holder(64 * MIB).await };
    let (a, b) = (holder().await, holder().await);
    let user = c.client(0, 16 * MIB).await;
    let on = |h: &Client| ReplicateConfig {
        preferred_segments: vec![h.segment().unwrap().name.clone()],
        ..ReplicateConfig::default()
    };
    let keys: Vec<String> = (0..32).map(|i| format!("spread-{i}")).collect();
    let values: Vec<Vec<u8>> = (0..32).map(|i| value(4096, i as u8)).collect();
    for (i, (k, v)) in keys.iter().zip(&values).enumerate() {
        let at = if i % 2 == 0 { on(&a) } else { on(&b) };
        user.put(k, v, &at).await.unwrap();
    }
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();

    let before = spread_exchanges();
    let got = user.get_batch(&refs).await;
    assert!(
        spread_exchanges() > before,
        "the staged batch read was not spread"
    );
    for (g, v) in got.into_iter().zip(&values) {
        assert_eq!(&g.unwrap(), v);
    }

    let before = spread_exchanges();
    assert_eq!(lent_batch(&user, &refs, 4096).await, vec![true; 32]);
    assert!(
        spread_exchanges() > before,
        "the lent batch read was not spread"
    );

    // A batch put: its slots lie on both holders (placed at random, one by one).
    let fresh: Vec<Vec<u8>> = (0..32).map(|i| value(4096, 100 + i as u8)).collect();
    let new_keys: Vec<String> = (0..32).map(|i| format!("spread-put-{i}")).collect();
    let batch: Vec<(&str, &[u8])> = new_keys
        .iter()
        .zip(&fresh)
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    let before = spread_exchanges();
    let put = user.put_batch(&batch, &ReplicateConfig::default()).await;
    assert!(put.iter().all(Result::is_ok), "{put:?}");
    assert!(spread_exchanges() > before, "the batch put was not spread");
    let reader = c.client(0, 16 * MIB).await;
    for (k, v) in new_keys.iter().zip(&fresh) {
        assert_eq!(&reader.get(k).await.unwrap(), v);
    }
    for h in [a, b, user, reader] {
        h.close().await.unwrap();
    }
}
