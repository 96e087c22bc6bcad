//! End-to-end checksums (`ClientConfig::verify_checksums`): a writer records the value's
//! CRC-32C with the object; a reader that meets a corrupted replica reports it and reads
//! another one; with every replica corrupted the read fails instead of returning garbage.

use std::sync::Arc;
use std::time::Duration;

use mooncake_master::{Master, MasterConfig};
use mooncake_metadata::{HttpMetadataServer, HttpMetadataServerConfig};
use mooncake_store::{Client, ClientConfig, ErrorCode, MasterApi, ReplicateConfig};
use mooncake_transfer_engine::{Opcode, TransferRequest};

const MIB: u64 = 1 << 20;

async fn client(master: &Arc<Master>, metadata: &str, segment: u64, verify: bool) -> Client {
    let config = ClientConfig {
        metadata_server: metadata.to_owned(),
        global_segment_size: segment,
        local_buffer_size: 16 * MIB,
        ping_interval: Duration::from_millis(100),
        verify_checksums: verify,
        ..ClientConfig::default()
    };
    Client::with_master(config, master.clone() as Arc<dyn MasterApi>)
        .await
        .unwrap()
}

/// A master, two holders, a writer and a reader with checksums on, a client without.
struct Setup {
    master: Arc<Master>,
    /// Two replicas per object.
    two: ReplicateConfig,
    _holders: [Client; 2],
    writer: Client,
    reader: Client,
    careless: Client,
}

async fn setup() -> Setup {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metadata = format!("http://{}/metadata", listener.local_addr().unwrap());
    tokio::spawn(
        HttpMetadataServer::new(HttpMetadataServerConfig::default())
            .run(listener, std::future::pending()),
    );
    let master = Master::new(MasterConfig::default());
    let _holders = [
        client(&master, &metadata, 64 * MIB, false).await,
        client(&master, &metadata, 64 * MIB, false).await,
    ];
    Setup {
        two: ReplicateConfig {
            replica_num: 2,
            ..ReplicateConfig::default()
        },
        writer: client(&master, &metadata, 0, true).await,
        reader: client(&master, &metadata, 0, true).await,
        careless: client(&master, &metadata, 0, false).await,
        master,
        _holders,
    }
}

/// Overwrites replica `i` of `key` with garbage, through `via`'s transfer engine.
async fn corrupt(master: &Master, via: &Client, key: &str, i: usize) {
    let list = master.get_replica_list(key).await.unwrap();
    let rep = &list.replicas[i];
    let engine = via.engine();
    let garbage = engine.allocate_buffer(rep.size, "cpu:0").await.unwrap();
    garbage.write_at(0, &vec![0x5A; rep.size as usize]);
    let target = engine.open_segment(&rep.transport_endpoint).await.unwrap();
    engine
        .transfer(&[TransferRequest {
            opcode: Opcode::Write,
            source: garbage.addr(),
            target,
            target_offset: rep.buffer_address,
            length: rep.size,
        }])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_replica_is_reported_and_another_one_is_read() {
    let s = setup().await;
    let value: Vec<u8> = (0..MIB as usize).map(|i| (i * 7 % 251) as u8).collect();
    s.writer.put("k", &value, &s.two).await.unwrap();
    assert!(s
        .master
        .get_replica_list("k")
        .await
        .unwrap()
        .checksum
        .is_some());
    assert!(s.reader.get("k").await.unwrap() == value);

    corrupt(&s.master, &s.careless, "k", 0).await;
    for round in 0..3 {
        assert!(s.reader.get("k").await.unwrap() == value, "round {round}");
    }
    assert!(s.reader.checksum_failures() >= 1);
    let staged = s.reader.get_staged("k").await.unwrap();
    assert!(staged.to_vec() == value);
    let into = s
        .reader
        .engine()
        .allocate_buffer(MIB, "cpu:0")
        .await
        .unwrap();
    assert_eq!(s.reader.get_into("k", into.addr(), MIB).await, Ok(MIB));
    assert!(into.to_vec(0, MIB as usize) == value);

    corrupt(&s.master, &s.careless, "k", 1).await;
    assert_eq!(s.reader.get("k").await, Err(ErrorCode::TransferFail));
    assert_eq!(
        s.reader.get_into("k", into.addr(), MIB).await,
        Err(ErrorCode::TransferFail)
    );
    // Without checksums the garbage would have been returned.
    assert!(s.careless.get("k").await.unwrap() == vec![0x5A; MIB as usize]);
}

/// Batch reads verify too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_reads_verify_every_value() {
    let s = setup().await;
    let values: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i + 1; 64 << 10]).collect();
    for (i, v) in values.iter().enumerate() {
        s.writer.put(&format!("b{i}"), v, &s.two).await.unwrap();
    }
    corrupt(&s.master, &s.careless, "b1", 0).await;
    corrupt(&s.master, &s.careless, "b3", 0).await;
    corrupt(&s.master, &s.careless, "b3", 1).await;
    let got = s.reader.get_batch(&["b0", "b1", "b2", "b3"]).await;
    assert!(got[0].as_ref().unwrap() == &values[0]);
    assert!(
        got[1].as_ref().unwrap() == &values[1],
        "read from the good replica"
    );
    assert!(got[2].as_ref().unwrap() == &values[2]);
    assert!(
        got[3] == Err(ErrorCode::TransferFail),
        "no good replica left"
    );
    assert!(s.reader.checksum_failures() >= 2);
}
