//! `unregister` of caller-owned memory against a stuck transfer (here because it needs
//! `unsafe` to offer caller memory, which this module alone may use).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mooncake_metadata::{MemoryStore, MetadataStore};

use crate::memory::ForeignMemory;
use crate::{EngineConfig, Opcode, TransferEngine, TransferError, TransferRequest};

/// `unregister` of caller-owned memory waits for the transfers using it only up to
/// `unregister_timeout`: then the buffer stays registered and the error says so; once the
/// transfer ended, unregistering succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregister_gives_up_on_a_stuck_transfer_and_keeps_the_buffer() {
    let meta = Arc::new(MemoryStore::new());
    let mut config = EngineConfig::new("127.0.0.1:17401");
    config.unregister_timeout = Duration::from_millis(300);
    config.io_timeout = Duration::from_secs(2);
    config.shared_memory = false;
    let a = TransferEngine::start(config, meta.clone()).await.unwrap();
    // A peer that accepts data connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let descriptor = format!(
        r#"{{"buffers":[{{"addr":1048576,"length":1048576,"name":"silent"}}],"name":"silent","protocol":"tcp","rdma_server_name":"","tcp_data_host":"127.0.0.1","tcp_data_port":{port},"tcp_proto_version":2,"timestamp":""}}"#
    );
    meta.put("mooncake/ram/silent", bytes::Bytes::from(descriptor))
        .await
        .unwrap();
    let mut memory = vec![0u8; 64 << 10];
    let addr = memory.as_mut_ptr() as u64;
    // SAFETY: `memory` outlives every use: the transfer ends (times out) before it drops.
    let foreign = unsafe { ForeignMemory::new(addr, memory.len() as u64) };
    a.register_memory(foreign, "cpu:0").await.unwrap();
    let seg = a.open_segment("silent").await.unwrap();
    let stuck = {
        let a = a.clone();
        tokio::spawn(async move {
            a.transfer(&[TransferRequest {
                opcode: Opcode::Read,
                source: addr,
                target: seg,
                target_offset: 1 << 20,
                length: 64 << 10,
            }])
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    let err = a.unregister(addr).await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert!(
        matches!(err, TransferError::BufferBusy { .. })
            && err.to_string().contains("stays registered"),
        "{err}"
    );
    assert_eq!(
        a.registered_capacity(addr),
        Some(64 << 10),
        "still registered"
    );
    assert!(
        stuck.await.unwrap().is_err(),
        "the silent peer's transfer times out"
    );
    a.unregister(addr).await.unwrap();
    assert_eq!(a.registered_capacity(addr), None);
    drop(memory);
    a.shutdown().await.unwrap();
}
