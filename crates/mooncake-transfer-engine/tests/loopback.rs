//! Two engines in one process over real loopback sockets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mooncake_metadata::keys::KeySpace;
use mooncake_metadata::{MemoryStore, MetadataStore};
use mooncake_transfer_engine::descriptor::SegmentDescriptor;
use mooncake_transfer_engine::{
    EngineConfig, Opcode, TransferEngine, TransferError, TransferRequest, TransferStatus,
};

mod common;
use common::{engine, pattern, write_and_check};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_every_size_both_ways_byte_exact() {
    let meta = Arc::new(MemoryStore::new());
    let a = engine(&meta, "127.0.0.1:17101").await;
    let b = engine(&meta, "127.0.0.1:17102").await;
    let cap = 64 << 20;
    let a_buf = a.allocate_buffer(2 * cap, "cpu:0").await.unwrap();
    let b_buf = b.allocate_buffer(cap + 4096, "cpu:0").await.unwrap();
    let seg = a.open_segment("127.0.0.1:17102").await.unwrap();
    for (i, size) in [
        1usize,
        7,
        4096,
        12_345,
        1 << 20,
        (3 << 20) + 7,
        9 << 20,
        64 << 20,
    ]
    .into_iter()
    .enumerate()
    {
        let data = pattern(size, i as u8);
        let write = write_and_check(&a, &a_buf, seg, &b_buf, 3, &data).await;
        let read = TransferRequest {
            opcode: Opcode::Read,
            source: a_buf.addr() + cap,
            ..write
        };
        a.transfer(&[read]).await.unwrap();
        assert!(
            a_buf.to_vec(cap, size) == data,
            "read of {size} bytes corrupted"
        );
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_many_small_requests() {
    let meta = Arc::new(MemoryStore::new());
    let a = engine(&meta, "127.0.0.1:1").await;
    let b = engine(&meta, "127.0.0.1:2").await;
    let a_buf = a.allocate_buffer(1 << 20, "*").await.unwrap();
    let b_buf = b.allocate_buffer(1 << 20, "*").await.unwrap();
    a_buf.write_at(0, &pattern(1 << 20, 9));
    let seg = a.open_segment("/127.0.0.1:2").await.unwrap();
    assert_eq!(
        seg,
        a.open_segment("127.0.0.1:2").await.unwrap(),
        "handles are cached"
    );
    let reqs: Vec<_> = (0..128u64)
        .map(|i| TransferRequest {
            opcode: Opcode::Write,
            source: a_buf.addr() + i * 8192,
            target: seg,
            target_offset: b_buf.addr() + i * 8192,
            length: 8192,
        })
        .collect();
    let batch = a.allocate_batch(128);
    assert!(matches!(
        a.submit(batch, &reqs[..1].repeat(129)),
        Err(TransferError::TooManyRequests {
            capacity: 128,
            requested: 129
        })
    ));
    a.submit(batch, &reqs[..100]).unwrap();
    a.submit(batch, &reqs[100..]).unwrap();
    assert_eq!(
        a.wait_batch(batch).await.unwrap(),
        TransferStatus::Completed
    );
    for i in 0..128 {
        let s = a.status(batch, i).unwrap();
        assert_eq!((s.status, s.transferred), (TransferStatus::Completed, 8192));
    }
    assert!(a.status(batch, 128).is_err());
    a.free_batch(batch).unwrap();
    assert!(a.free_batch(batch).is_err(), "freed twice");
    assert!(b_buf.to_vec(0, 1 << 20) == a_buf.to_vec(0, 1 << 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_before_observing_is_busy() {
    let meta = Arc::new(MemoryStore::new());
    let a = engine(&meta, "127.0.0.1:1").await;
    let buf = a.allocate_buffer(4096, "*").await.unwrap();
    let batch = a.allocate_batch(1);
    let req = TransferRequest {
        opcode: Opcode::Write,
        source: buf.addr(),
        target: mooncake_transfer_engine::SegmentHandle::LOCAL,
        target_offset: buf.addr() + 2048,
        length: 2048,
    };
    a.submit(batch, &[req]).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(matches!(
        a.free_batch(batch),
        Err(TransferError::BatchBusy(_))
    ));
    assert_eq!(
        a.status(batch, 0).unwrap().status,
        TransferStatus::Completed
    );
    a.free_batch(batch).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_requests_fail_and_the_server_keeps_serving() {
    let meta = Arc::new(MemoryStore::new());
    let a = engine(&meta, "127.0.0.1:1").await;
    let b = engine(&meta, "127.0.0.1:2").await;
    let a_buf = a.allocate_buffer(1 << 20, "*").await.unwrap();
    let b_buf = b.allocate_buffer(1 << 20, "*").await.unwrap();
    let seg = a.open_segment("127.0.0.1:2").await.unwrap();
    let ok = TransferRequest {
        opcode: Opcode::Write,
        source: a_buf.addr(),
        target: seg,
        target_offset: b_buf.addr(),
        length: 4096,
    };
    for (opcode, target_offset, length) in [
        (Opcode::Write, b_buf.addr() + (1 << 20) - 100, 4096),
        (Opcode::Read, b_buf.addr() + (1 << 20) - 100, 4096),
        (Opcode::Write, 4096, 4096),
        (Opcode::Read, u64::MAX - 10, 4096),
    ] {
        let bad = TransferRequest {
            opcode,
            target_offset,
            length,
            ..ok
        };
        let err = a.transfer(&[bad]).await.unwrap_err();
        assert!(matches!(err, TransferError::Rejected { .. }), "{err}");
        assert_eq!(err.code(), -3);
        a.transfer(&[ok]).await.unwrap();
    }
    let unregistered = TransferRequest { source: 4096, ..ok };
    assert!(matches!(
        a.transfer(&[unregistered]).await,
        Err(TransferError::AddressNotRegistered { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptor_is_mooncake_json_and_is_removed_on_shutdown() {
    let meta = Arc::new(MemoryStore::new());
    let a = engine(&meta, "127.0.0.1:17101").await;
    let buf = a.allocate_buffer(1 << 20, "cpu:0").await.unwrap();
    let ks = KeySpace::default();
    let bytes = meta
        .get(&ks.segment("127.0.0.1:17101"))
        .await
        .unwrap()
        .unwrap();
    let desc = SegmentDescriptor::from_json("127.0.0.1:17101", &bytes).unwrap();
    assert_eq!(desc.protocol, "tcp");
    assert_eq!(desc.tcp_proto_version, 2);
    assert_eq!(desc.tcp_data_host.as_deref(), Some("127.0.0.1"));
    assert_eq!(desc.tcp_data_port, a.data_addr().port());
    assert_eq!(
        (desc.buffers[0].addr, desc.buffers[0].length),
        (buf.addr(), 1 << 20)
    );
    assert_eq!(desc.buffers[0].name, "127.0.0.1:17101");
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(text.starts_with("{\"buffers\":[{\"addr\":"), "{text}");
    let rpc = meta
        .get(&ks.rpc_meta("127.0.0.1:17101"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        String::from_utf8(rpc.to_vec()).unwrap(),
        format!(
            "{{\"ip_or_host_name\":\"127.0.0.1\",\"rpc_port\":{}}}",
            a.rpc_port()
        )
    );
    a.unregister(buf.addr()).await.unwrap();
    let bytes = meta
        .get(&ks.segment("127.0.0.1:17101"))
        .await
        .unwrap()
        .unwrap();
    assert!(SegmentDescriptor::from_json("x", &bytes)
        .unwrap()
        .buffers
        .is_empty());
    assert!(matches!(
        a.unregister(buf.addr()).await,
        Err(TransferError::AddressNotRegistered { .. })
    ));
    a.shutdown().await.unwrap();
    assert!(meta.is_empty(), "shutdown removes rpc_meta and ram");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_lost_by_the_server_is_republished() {
    let meta = Arc::new(MemoryStore::new());
    let a = engine(&meta, "127.0.0.1:1").await;
    let _buf = a.allocate_buffer(4096, "*").await.unwrap();
    meta.clear();
    let start = Instant::now();
    while meta.len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(5), "not re-published");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = engine(&meta, "127.0.0.1:2").await;
    b.open_segment("127.0.0.1:1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_unknown_or_invalid_segments_fails_clearly() {
    let meta = Arc::new(MemoryStore::new());
    let a = engine(&meta, "127.0.0.1:1").await;
    let err = a.open_segment("nobody").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "segment \"nobody\" is not published in the metadata service"
    );
    assert!(matches!(
        a.open_segment("").await,
        Err(TransferError::InvalidArgument(_))
    ));
    meta.put(
        "mooncake/ram/bad",
        bytes::Bytes::from_static(
            br#"{"buffers":[{"addr":0,"length":1,"name":"x"}],"name":"bad","protocol":"tcp"}"#,
        ),
    )
    .await
    .unwrap();
    assert!(matches!(
        a.open_segment("bad").await,
        Err(TransferError::InvalidDescriptor { .. })
    ));
    meta.put(
        "mooncake/ram/rdma",
        bytes::Bytes::from_static(br#"{"buffers":[],"name":"rdma","protocol":"rdma"}"#),
    )
    .await
    .unwrap();
    assert!(matches!(
        a.open_segment("rdma").await,
        Err(TransferError::NotSupportedTransport { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_a_crash_replaces_the_stale_rpc_meta_but_not_a_live_one() {
    use mooncake_metadata::{
        HttpMetadataServer, HttpMetadataServerConfig, HttpStore, HttpStoreConfig,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metadata", listener.local_addr().unwrap());
    tokio::spawn(
        HttpMetadataServer::new(HttpMetadataServerConfig::default())
            .run(listener, std::future::pending()),
    );
    let meta: Arc<dyn MetadataStore> =
        Arc::new(HttpStore::new(&url, HttpStoreConfig::default()).unwrap());
    // A crashed engine left its entry behind: nobody listens on its rpc port.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let stale = format!("{{\"ip_or_host_name\":\"127.0.0.1\",\"rpc_port\":{dead_port}}}");
    meta.put("mooncake/rpc_meta/127.0.0.1:5", bytes::Bytes::from(stale))
        .await
        .unwrap();
    let first = TransferEngine::start(EngineConfig::new("127.0.0.1:5"), meta.clone())
        .await
        .unwrap();
    // The same name while the first engine lives is refused, naming the owner.
    let err = TransferEngine::start(EngineConfig::new("127.0.0.1:5"), meta.clone())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("is in use by a live engine"),
        "{err}"
    );
    first.shutdown().await.unwrap();
}

/// 64 requests of `len` bytes to one peer, request 31 out of range; `kind(i)` picks each
/// one's opcode. Every other request must complete, and every WRITE must land.
async fn one_bad_request_among(len: u64, kind: impl Fn(u64) -> Opcode, names: (&str, &str)) {
    let meta = Arc::new(MemoryStore::new());
    let mut config = EngineConfig::new(names.0);
    config.republish_interval = Duration::from_millis(100);
    let a = TransferEngine::start(config, meta.clone()).await.unwrap();
    let b = engine(&meta, names.1).await;
    let a_buf = a.allocate_buffer(1 << 20, "*").await.unwrap();
    let b_buf = b.allocate_buffer(1 << 20, "*").await.unwrap();
    a_buf.write_at(0, &pattern(1 << 20, 3));
    b_buf.write_at(0, &pattern(1 << 20, 5));
    let seg = a.open_segment(names.1).await.unwrap();
    let mut reqs: Vec<_> = (0..64u64)
        .map(|i| TransferRequest {
            opcode: kind(i),
            source: a_buf.addr() + i * len,
            target: seg,
            target_offset: b_buf.addr() + i * len,
            length: len,
        })
        .collect();
    reqs[31].target_offset = b_buf.addr() + (1 << 20) - 10;
    let batch = a.allocate_batch(64);
    a.submit(batch, &reqs).unwrap();
    assert_eq!(a.wait_batch(batch).await.unwrap(), TransferStatus::Failed);
    for i in 0..64 {
        let s = a.status(batch, i).unwrap();
        let want = if i == 31 {
            TransferStatus::Failed
        } else {
            TransferStatus::Completed
        };
        assert_eq!(s.status, want, "request {i}: {:?}", s.error);
    }
    a.free_batch(batch).unwrap();
    for i in (0..64).filter(|&i| i != 31) {
        let off = i * len;
        assert!(
            b_buf.to_vec(off, len as usize) == a_buf.to_vec(off, len as usize),
            "request {i} ({:?})",
            reqs[i as usize].opcode
        );
    }
}

fn alternate(i: u64) -> Opcode {
    if i.is_multiple_of(2) {
        Opcode::Write
    } else {
        Opcode::Read
    }
}

/// Mixed READs and WRITEs, 1 MiB in all: the pipelined lanes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_request_does_not_fail_its_pipelined_neighbours() {
    one_bad_request_among(16384, alternate, ("127.0.0.1:1", "127.0.0.1:2")).await;
}

/// READs only: the caller's direct exchange (1 MiB: four stripes read together), refused
/// at request 31; the rest go on to the lanes. WRITEs only: four stripes sent together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_request_does_not_fail_its_neighbours_in_a_direct_exchange() {
    one_bad_request_among(16384, |_| Opcode::Read, ("127.0.0.1:3", "127.0.0.1:4")).await;
    one_bad_request_among(16384, |_| Opcode::Write, ("127.0.0.1:5", "127.0.0.1:6")).await;
    // Small and mixed: direct too.
    one_bad_request_among(2048, alternate, ("127.0.0.1:7", "127.0.0.1:8")).await;
}

/// Direct exchanges reuse their connections: a thousand small calls open only a few.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_calls_reuse_pooled_connections() {
    let meta = Arc::new(MemoryStore::new());
    let a = engine(&meta, "127.0.0.1:9").await;
    let b = engine(&meta, "127.0.0.1:10").await;
    let a_buf = a.allocate_buffer(1 << 20, "*").await.unwrap();
    let b_buf = b.allocate_buffer(1 << 20, "*").await.unwrap();
    b_buf.write_at(0, &pattern(1 << 20, 7));
    let seg = a.open_segment("127.0.0.1:10").await.unwrap();
    let port = |e: &TransferEngine| e.data_addr().port();
    let before = established_to(port(&b));
    for i in 0..1000u64 {
        let off = (i % 256) * 4096;
        a.transfer(&[TransferRequest {
            opcode: Opcode::Read,
            source: a_buf.addr() + off,
            target: seg,
            target_offset: b_buf.addr() + off,
            length: 4096,
        }])
        .await
        .unwrap();
        assert!(
            a_buf.to_vec(off, 4096) == b_buf.to_vec(off, 4096),
            "call {i}"
        );
    }
    let opened = established_to(port(&b)) - before;
    assert!(
        opened <= 2,
        "{opened} connections for 1000 sequential calls"
    );
}

/// Established TCP connections whose remote port is `port` (from /proc/net/tcp).
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[3] == "01" && f[2].rsplit(':').next() == Some(&format!("{port:04X}"))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_host_peers_copy_through_shared_memory_and_fall_back_to_tcp() {
    let meta = Arc::new(MemoryStore::new());
    let a = engine(&meta, "127.0.0.1:17131").await;
    let b = engine(&meta, "127.0.0.1:17132").await;
    let src = a.allocate_buffer(8 << 20, "cpu:0").await.unwrap();
    let shared = b.allocate_shared_buffer(4 << 20, "cpu:0").await.unwrap();
    let plain = b.allocate_buffer(4 << 20, "cpu:0").await.unwrap();
    let desc = b.descriptor();
    let find = |addr: u64| desc.buffers.iter().find(|d| d.addr == addr).unwrap();
    let path = find(shared.addr())
        .shm_path
        .clone()
        .expect("the shared buffer is published");
    assert!(desc.shm_boot_id.is_some());
    assert!(find(plain.addr()).shm_path.is_none());
    assert!(std::path::Path::new(&path).exists());
    let json = String::from_utf8(desc.to_json()).unwrap();
    assert!(
        json.contains("\"tcp_data_port\""),
        "C++ peers still get the TCP fields"
    );

    let seg = a.open_segment("127.0.0.1:17132").await.unwrap();
    let data = pattern(3 << 20, 5);
    src.write_at(0, &data);
    let req = |opcode, source, target_offset, length| TransferRequest {
        opcode,
        source,
        target: seg,
        target_offset,
        length,
    };
    a.transfer(&[req(Opcode::Write, src.addr(), shared.addr() + 1, 3 << 20)])
        .await
        .unwrap();
    assert!(shared.to_vec(1, 3 << 20) == data);
    a.transfer(&[req(
        Opcode::Read,
        src.addr() + (4 << 20),
        shared.addr() + 1,
        3 << 20,
    )])
    .await
    .unwrap();
    assert!(src.to_vec(4 << 20, 3 << 20) == data);
    assert_eq!(a.shm_bytes(), 6 << 20, "both went through shared memory");

    // The anonymous buffer of the same peer is reached over TCP.
    a.transfer(&[req(Opcode::Write, src.addr(), plain.addr(), 4096)])
        .await
        .unwrap();
    assert!(plain.to_vec(0, 4096) == data[..4096]);
    assert_eq!(a.shm_bytes(), 6 << 20);
    // A range crossing the end of the shared buffer is not served from it (nor anywhere).
    assert!(a
        .transfer(&[req(
            Opcode::Read,
            src.addr(),
            shared.addr() + (4 << 20) - 10,
            20
        )])
        .await
        .is_err());

    // A peer whose shared memory cannot be mapped here (another mount namespace, say) is
    // reached over TCP: c opens b after b's file disappeared from /dev/shm.
    std::fs::remove_file(&path).unwrap();
    // An engine that mapped it before notices the file is gone and switches to TCP.
    a.transfer(&[req(Opcode::Write, src.addr(), shared.addr() + 64, 4096)])
        .await
        .unwrap();
    assert!(shared.to_vec(64, 4096) == data[..4096]);
    assert_eq!(a.shm_bytes(), 6 << 20, "not through the removed file");
    let c = engine(&meta, "127.0.0.1:17133").await;
    let cbuf = c.allocate_buffer(4096, "cpu:0").await.unwrap();
    let seg_c = c.open_segment("127.0.0.1:17132").await.unwrap();
    cbuf.write_at(0, b"over tcp");
    c.transfer(&[TransferRequest {
        opcode: Opcode::Write,
        source: cbuf.addr(),
        target: seg_c,
        target_offset: shared.addr(),
        length: 8,
    }])
    .await
    .unwrap();
    assert_eq!(shared.to_vec(0, 8), b"over tcp");
    assert_eq!(c.shm_bytes(), 0);

    // The engine removes the files it created once their buffers are unregistered and gone.
    let other = b.allocate_shared_buffer(4096, "cpu:0").await.unwrap();
    let other_path = b
        .descriptor()
        .buffers
        .iter()
        .find(|d| d.addr == other.addr())
        .and_then(|d| d.shm_path.clone())
        .unwrap();
    assert!(std::path::Path::new(&other_path).exists());
    b.unregister(other.addr()).await.unwrap();
    drop(other);
    assert!(!std::path::Path::new(&other_path).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2phandshake_engines_find_each_other_without_a_metadata_store() {
    let a = TransferEngine::start_uri(EngineConfig::new("127.0.0.1"), "P2PHANDSHAKE")
        .await
        .unwrap();
    let b = TransferEngine::start_uri(EngineConfig::new("127.0.0.1"), "P2PHANDSHAKE")
        .await
        .unwrap();
    assert_eq!(
        b.segment_name(),
        format!("127.0.0.1:{}", b.rpc_port()),
        "renamed <host>:<rpc port>, as the C++ engine does"
    );
    let src = a.allocate_buffer(1 << 20, "cpu:0").await.unwrap();
    let dst = b.allocate_buffer(1 << 20, "cpu:0").await.unwrap();
    let data = pattern(1 << 20, 3);
    src.write_at(0, &data);
    let seg = a.open_segment(b.segment_name()).await.unwrap();
    a.transfer(&[TransferRequest {
        opcode: Opcode::Write,
        source: src.addr(),
        target: seg,
        target_offset: dst.addr(),
        length: 1 << 20,
    }])
    .await
    .unwrap();
    assert!(dst.to_vec(0, 1 << 20) == data);
    let fetched = a.fetch_descriptor(b.segment_name()).await.unwrap();
    assert_eq!(
        (fetched.buffers, fetched.tcp_data_port),
        (b.descriptor().buffers, b.descriptor().tcp_data_port)
    );
    // A name that is not <host>:<port>, or a port where nobody answers: clear errors.
    assert!(a.open_segment("not-a-p2p-name").await.is_err());
    let err = a.open_segment("127.0.0.1:1").await.unwrap_err().to_string();
    assert!(err.contains("127.0.0.1:1"), "{err}");
}

/// An engine with a token serves only peers presenting it: a wrong or missing token gets
/// an error saying authentication failed, and not one byte is read or written. An engine
/// without a token accepts peers that present one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_keeps_strangers_from_reading_or_writing() {
    let meta = Arc::new(MemoryStore::new());
    let with = |name: &str, token: &str| {
        let mut config = EngineConfig::new(name);
        config.auth_token = mooncake_metadata::AuthToken::new(token).unwrap();
        config.shared_memory = false;
        TransferEngine::start(config, meta.clone())
    };
    let holder = with("127.0.0.1:17301", "s3cr3t").await.unwrap();
    let friend = with("127.0.0.1:17302", "s3cr3t").await.unwrap();
    let open = with("127.0.0.1:17305", "").await.unwrap();
    let secret = pattern(64 << 10, 9);
    let held = holder.allocate_buffer(64 << 10, "cpu:0").await.unwrap();
    held.write_at(0, &secret);
    for (name, token) in [("127.0.0.1:17303", "wrong"), ("127.0.0.1:17304", "")] {
        let stranger = with(name, token).await.unwrap();
        let buf = stranger.allocate_buffer(64 << 10, "cpu:0").await.unwrap();
        buf.write_at(0, &[0xAA; 64 << 10]);
        let seg = stranger.open_segment("127.0.0.1:17301").await.unwrap();
        for opcode in [Opcode::Read, Opcode::Write] {
            let err = stranger
                .transfer(&[TransferRequest {
                    opcode,
                    source: buf.addr(),
                    target: seg,
                    target_offset: held.addr(),
                    length: 64 << 10,
                }])
                .await
                .unwrap_err();
            assert!(
                matches!(err, TransferError::Unauthenticated { .. })
                    && err.to_string().contains("authentication failed"),
                "token {token:?}, {opcode:?}: {err}"
            );
        }
        assert!(
            buf.to_vec(0, 64 << 10) == vec![0xAA; 64 << 10],
            "nothing was read"
        );
        stranger.shutdown().await.unwrap();
    }
    assert!(held.to_vec(0, 64 << 10) == secret, "nothing was written");
    // The same token works both ways; a peer without a token takes ours.
    let fbuf = friend.allocate_buffer(64 << 10, "cpu:0").await.unwrap();
    let seg = friend.open_segment("127.0.0.1:17301").await.unwrap();
    let read = TransferRequest {
        opcode: Opcode::Read,
        source: fbuf.addr(),
        target: seg,
        target_offset: held.addr(),
        length: 64 << 10,
    };
    friend.transfer(&[read]).await.unwrap();
    assert!(fbuf.to_vec(0, 64 << 10) == secret);
    let obuf = open.allocate_buffer(64 << 10, "cpu:0").await.unwrap();
    let seg = friend.open_segment("127.0.0.1:17305").await.unwrap();
    friend
        .transfer(&[TransferRequest {
            opcode: Opcode::Write,
            target: seg,
            target_offset: obuf.addr(),
            ..read
        }])
        .await
        .unwrap();
    assert!(obuf.to_vec(0, 64 << 10) == secret);
    for e in [holder, friend, open] {
        e.shutdown().await.unwrap();
    }
}

/// A large WRITE or READ is cut into stripes on several connections: every byte lands
/// where it belongs, for sizes that do not divide evenly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn striped_transfers_land_byte_for_byte() {
    let meta = Arc::new(MemoryStore::new());
    let config = EngineConfig::new("127.0.0.1:11");
    let a = TransferEngine::start(config, meta.clone()).await.unwrap();
    let b = engine(&meta, "127.0.0.1:12").await;
    let a_buf = a.allocate_buffer(8 << 20, "*").await.unwrap();
    let b_buf = b.allocate_buffer(8 << 20, "*").await.unwrap();
    let seg = a.open_segment("127.0.0.1:12").await.unwrap();
    // Large jobs of one kind travel in stripes on several connections, sent and (for
    // READs) read back on all of them at once: every byte must land where it belongs.
    for opcode in [Opcode::Write, Opcode::Read] {
        let (from, to) = match opcode {
            Opcode::Write => (&a_buf, &b_buf),
            Opcode::Read => (&b_buf, &a_buf),
        };
        for (off, len) in [
            (0u64, (3 << 20) + 5),
            (7, 1 << 20),
            (4 << 20, (4 << 20) - 13),
        ] {
            from.write_at(0, &pattern(8 << 20, 11 + off as u8));
            to.write_at(0, &vec![0u8; 8 << 20]);
            a.transfer(&[TransferRequest {
                opcode,
                source: a_buf.addr() + off,
                target: seg,
                target_offset: b_buf.addr() + off,
                length: len,
            }])
            .await
            .unwrap();
            let len = len as usize;
            let what = format!("{opcode:?} of {len} bytes at {off}");
            assert!(to.to_vec(off, len) == from.to_vec(off, len), "{what}");
            assert!(
                to.to_vec(0, off as usize).iter().all(|&x| x == 0),
                "{what}: before"
            );
            let end = off as usize + len;
            assert!(
                to.to_vec(end as u64, (8 << 20) - end)
                    .iter()
                    .all(|&x| x == 0),
                "{what}: after"
            );
        }
    }
}

/// A peer that moved to another data port since the segment was opened (a restart under
/// the same name) is found again: the request that failed against the old port is
/// retried once, over TCP to the new one, and lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_moved_to_another_port_gets_the_failed_request_again() {
    let meta = Arc::new(MemoryStore::new());
    let mut config = EngineConfig::new("127.0.0.1:17501");
    config.shared_memory = false;
    let a = TransferEngine::start(config, meta.clone()).await.unwrap();
    let mut config = EngineConfig::new("127.0.0.1:17502");
    // Only this test re-publishes b's descriptor.
    config.republish_interval = Duration::from_secs(3600);
    let b = TransferEngine::start(config, meta.clone()).await.unwrap();
    let len = 1 << 20;
    let a_buf = a.allocate_buffer(len, "cpu:0").await.unwrap();
    let b_buf = b.allocate_buffer(len, "cpu:0").await.unwrap();
    // `a` opens the segment while its descriptor names a port nobody listens on any more.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut old = b.descriptor();
    old.tcp_data_port = gone.local_addr().unwrap().port();
    drop(gone);
    let key = KeySpace::default().segment("127.0.0.1:17502");
    meta.put(&key, bytes::Bytes::from(old.to_json()))
        .await
        .unwrap();
    let seg = a.open_segment("127.0.0.1:17502").await.unwrap();
    b.publish().await.unwrap();
    let data = pattern(len as usize, 9);
    b_buf.write_at(0, &data);
    let read = TransferRequest {
        opcode: Opcode::Read,
        source: a_buf.addr(),
        target: seg,
        target_offset: b_buf.addr(),
        length: len,
    };
    a.transfer(&[read]).await.unwrap();
    assert!(
        a_buf.to_vec(0, len as usize) == data,
        "read from the peer at its new port"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
