//! Two engines that find each other through a real etcd (`etcd://` metadata), as engines
//! of a Mooncake cluster with an etcd metadata server do. Skipped when `etcd` is not on
//! `PATH`, unless `MOONCAKE_TEST_REQUIRE_SERVICES=1`.

// The metadata crate's server harness (start etcd/redis from PATH on free ports).
#[path = "../../mooncake-metadata/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use mooncake_metadata::keys::KeySpace;
use mooncake_transfer_engine::{EngineConfig, Opcode, TransferEngine, TransferRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_transfer_through_etcd_metadata() {
    let Some(etcd) = support::start_etcd() else {
        return;
    };
    let uri = format!("etcd://{}", etcd.addr);
    // Each engine opens its own client, as two processes would.
    let meta_a = mooncake_metadata::connect(&uri).unwrap();
    let meta_b = mooncake_metadata::connect(&uri).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = meta_a.get("mooncake/ready-probe").await {
        assert!(Instant::now() < deadline, "etcd never became ready: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a = TransferEngine::start(EngineConfig::new("127.0.0.1:17201"), meta_a.clone())
        .await
        .unwrap();
    let b = TransferEngine::start(EngineConfig::new("127.0.0.1:17202"), meta_b)
        .await
        .unwrap();
    let b_buf = b.allocate_buffer(1 << 20, "cpu:0").await.unwrap();
    let a_buf = a.allocate_buffer(1 << 20, "cpu:0").await.unwrap();

    // B's descriptor is in etcd under the C++ key, as JSON naming its buffer.
    let keys = KeySpace::default();
    let descriptor = meta_a.get(&keys.segment("127.0.0.1:17202")).await.unwrap();
    let descriptor = String::from_utf8(descriptor.unwrap().to_vec()).unwrap();
    assert!(
        descriptor.contains(&format!("\"addr\":{}", b_buf.addr())),
        "{descriptor}"
    );
    assert!(meta_a
        .get(&keys.rpc_meta("127.0.0.1:17202"))
        .await
        .unwrap()
        .is_some());

    let data: Vec<u8> = (0..(256 << 10)).map(|i: u32| (i % 251) as u8).collect();
    a_buf.write_at(0, &data);
    let seg = a.open_segment("127.0.0.1:17202").await.unwrap();
    let write = TransferRequest {
        opcode: Opcode::Write,
        source: a_buf.addr(),
        target: seg,
        target_offset: b_buf.addr() + 5,
        length: data.len() as u64,
    };
    a.transfer(&[write]).await.unwrap();
    assert!(
        b_buf.to_vec(5, data.len()) == data,
        "write through etcd metadata corrupted"
    );

    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
    // A clean shutdown removes both of B's entries, as the C++ engine does.
    assert_eq!(
        meta_a.get(&keys.segment("127.0.0.1:17202")).await.unwrap(),
        None
    );
    assert_eq!(
        meta_a.get(&keys.rpc_meta("127.0.0.1:17202")).await.unwrap(),
        None
    );
}
