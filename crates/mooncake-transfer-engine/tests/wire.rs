//! The engine's data port against raw sockets: exact bytes, malformed and hostile input,
//! and peers that die or hang mid-transfer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mooncake_metadata::{MemoryStore, MetadataStore};
use mooncake_transfer_engine::{
    EngineConfig, LocalBuffer, Opcode, TransferEngine, TransferError, TransferRequest,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const OK: [u8; 8] = [0, 0, 0, 0, 0x56, 0x54, 0x43, 0x4D];
const REJECTED: [u8; 8] = [1, 0, 0, 0, 0x56, 0x54, 0x43, 0x4D];

fn header(size: u64, addr: u64, opcode: u8) -> [u8; 24] {
    let mut h = [0xAAu8; 24]; // garbage padding, as the C++ client sends
    h[0..8].copy_from_slice(&size.to_le_bytes());
    h[8..16].copy_from_slice(&addr.to_le_bytes());
    h[16] = opcode;
    h
}

async fn target() -> (TransferEngine, LocalBuffer, SocketAddr) {
    let meta = Arc::new(MemoryStore::new());
    let e = TransferEngine::start(EngineConfig::new("127.0.0.1:9"), meta)
        .await
        .unwrap();
    let buf = e.allocate_buffer(1 << 20, "*").await.unwrap();
    let addr = e.data_addr();
    (e, buf, addr)
}

async fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn v2_write_and_read_exact_bytes_on_one_persistent_connection() {
    let (_e, buf, addr) = target().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&header(4, buf.addr() + 64, 0x81))
        .await
        .unwrap();
    s.write_all(b"abcd").await.unwrap();
    let mut status = [0u8; 8];
    s.read_exact(&mut status).await.unwrap();
    assert_eq!(status, OK);
    assert_eq!(buf.to_vec(64, 4), b"abcd");
    for opcode in [0x80u8, 0x82, 0xFF] {
        s.write_all(&header(4, buf.addr() + 64, opcode))
            .await
            .unwrap();
        let mut reply = [0u8; 12];
        s.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply[..8], &OK, "opcode {opcode:#x}");
        assert_eq!(&reply[8..], b"abcd", "opcode {opcode:#x} is a READ");
    }
}

#[tokio::test]
async fn pipelined_writes_of_mixed_sizes_land_exactly_across_read_ahead_boundaries() {
    let (_e, buf, addr) = target().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Small, large (beyond the server's read-ahead), small after large, and a run of
    // small ones whose headers straddle read boundaries: sent as one stream.
    let sizes: Vec<usize> = [4096, 300 * 1024, 24, 1]
        .into_iter()
        .chain((0..40).map(|i| 4096 + i * 7))
        .chain([200 * 1024, 5])
        .collect();
    let mut wire = Vec::new();
    let mut expect = Vec::new();
    let mut at = 0u64;
    for (i, n) in sizes.iter().enumerate() {
        let payload: Vec<u8> = (0..*n).map(|j| (i * 31 + j) as u8).collect();
        wire.extend_from_slice(&header(*n as u64, buf.addr() + at, 0x81));
        wire.extend_from_slice(&payload);
        expect.push((at, payload));
        at += *n as u64;
    }
    assert!(at <= 1 << 20);
    let (mut rd, mut wr) = s.split();
    let send = async { wr.write_all(&wire).await.unwrap() };
    let answers = async {
        let mut statuses = vec![0u8; 8 * sizes.len()];
        rd.read_exact(&mut statuses).await.unwrap();
        statuses
    };
    let ((), statuses) = tokio::join!(send, answers);
    assert!(statuses.chunks(8).all(|c| c == OK));
    for (off, payload) in expect {
        assert_eq!(buf.to_vec(off, payload.len()), payload, "write at {off}");
    }
}

#[tokio::test]
async fn v1_requests_get_no_status_frames() {
    let (_e, buf, addr) = target().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&header(3, buf.addr(), 0x01)).await.unwrap();
    s.write_all(b"xyz").await.unwrap();
    s.write_all(&header(3, buf.addr(), 0x00)).await.unwrap();
    let mut reply = [0u8; 3];
    s.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"xyz");
    // v1 with a bad address: the server closes without a word.
    s.write_all(&header(3, 16, 0x00)).await.unwrap();
    assert!(closed(&mut s).await);
}

#[tokio::test]
async fn bad_ranges_get_the_rejection_frame_then_close_and_nothing_is_written() {
    let (_e, buf, addr) = target().await;
    let end = buf.addr() + (1 << 20);
    for (size, at, op) in [
        (4096, end - 100, 0x81u8),
        (4096, 4096, 0x80),
        (0, buf.addr(), 0x81),
        (1 << 63, buf.addr(), 0x81),
        (u64::MAX, buf.addr(), 0x80),
        (16, u64::MAX - 4, 0x81),
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&header(size, at, op)).await.unwrap();
        let mut status = [0u8; 8];
        s.read_exact(&mut status).await.unwrap();
        assert_eq!(status, REJECTED, "size {size} at {at:#x}");
        assert!(closed(&mut s).await, "connection closes after a rejection");
    }
    assert!(
        buf.to_vec(0, 1 << 20).iter().all(|b| *b == 0),
        "nothing was written"
    );
}

#[tokio::test]
async fn truncated_headers_and_dropped_payloads_do_not_hurt_the_server() {
    let (_e, buf, addr) = target().await;
    {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&header(8, buf.addr(), 0x81)[..10])
            .await
            .unwrap();
    }
    {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&header(1 << 20, buf.addr(), 0x81))
            .await
            .unwrap();
        s.write_all(&[7u8; 1000]).await.unwrap();
    }
    {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&[0xFF; 200]).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&header(2, buf.addr() + 10, 0x81))
        .await
        .unwrap();
    s.write_all(b"ok").await.unwrap();
    let mut status = [0u8; 8];
    s.read_exact(&mut status).await.unwrap();
    assert_eq!(status, OK);
    assert_eq!(buf.to_vec(10, 2), b"ok");
}

/// Publishes a descriptor for a fake peer listening at `addr`.
async fn fake_peer(meta: &MemoryStore, name: &str, addr: SocketAddr) {
    let desc = format!(
        r#"{{"buffers":[{{"addr":4096,"length":1048576,"name":"{name}"}}],"name":"{name}","protocol":"tcp","tcp_data_host":"127.0.0.1","tcp_data_port":{},"tcp_proto_version":2}}"#,
        addr.port()
    );
    meta.put(&format!("mooncake/ram/{name}"), Bytes::from(desc))
        .await
        .unwrap();
}

async fn initiator(meta: Arc<MemoryStore>, io_timeout: Duration) -> (TransferEngine, LocalBuffer) {
    let mut config = EngineConfig::new("127.0.0.1:8");
    config.io_timeout = io_timeout;
    let e = TransferEngine::start(config, meta).await.unwrap();
    let buf = e.allocate_buffer(1 << 20, "*").await.unwrap();
    (e, buf)
}

#[tokio::test]
async fn a_peer_that_dies_mid_transfer_fails_the_request_quickly() {
    let meta = Arc::new(MemoryStore::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    fake_peer(&meta, "dying", listener.local_addr().unwrap()).await;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut h = [0u8; 24];
            let _ = s.read_exact(&mut h).await;
            let _ = s.write_all(&OK).await;
            let _ = s.write_all(&[1u8; 100]).await; // then dies with most of the payload unsent
        }
    });
    let (e, buf) = initiator(meta, Duration::from_secs(30)).await;
    let seg = e.open_segment("dying").await.unwrap();
    let start = Instant::now();
    let req = TransferRequest {
        opcode: Opcode::Read,
        source: buf.addr(),
        target: seg,
        target_offset: 4096,
        length: 1 << 20,
    };
    let err = e.transfer(&[req]).await.unwrap_err();
    assert!(matches!(err, TransferError::Io { .. }), "{err}");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_hung_peer_times_out() {
    let meta = Arc::new(MemoryStore::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    fake_peer(&meta, "hung", listener.local_addr().unwrap()).await;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let (e, buf) = initiator(meta, Duration::from_millis(300)).await;
    let seg = e.open_segment("hung").await.unwrap();
    let start = Instant::now();
    let req = TransferRequest {
        opcode: Opcode::Write,
        source: buf.addr(),
        target: seg,
        target_offset: 4096,
        length: 4096,
    };
    let batch = e.allocate_batch(1);
    e.submit(batch, &[req]).unwrap();
    assert_eq!(
        e.wait_batch(batch).await.unwrap(),
        mooncake_transfer_engine::TransferStatus::Failed
    );
    let status = e.status(batch, 0).unwrap();
    assert_eq!(
        status.status,
        mooncake_transfer_engine::TransferStatus::Timeout
    );
    assert!(status.error.unwrap().contains("did not answer within"));
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_v1_peer_gets_v1_opcodes() {
    let meta = Arc::new(MemoryStore::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let desc = format!(
        r#"{{"buffers":[{{"addr":4096,"length":65536,"name":"old"}}],"name":"old","protocol":"tcp","tcp_data_port":{}}}"#,
        addr.port()
    );
    meta.put("mooncake/ram/old", Bytes::from(desc))
        .await
        .unwrap();
    meta.put(
        "mooncake/rpc_meta/old",
        Bytes::from_static(br#"{"ip_or_host_name":"127.0.0.1","rpc_port":1}"#),
    )
    .await
    .unwrap();
    let seen = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut h = [0u8; 24];
        s.read_exact(&mut h).await.unwrap();
        let mut payload = vec![0u8; 16];
        s.read_exact(&mut payload).await.unwrap();
        (h, payload)
    });
    let (e, buf) = initiator(meta, Duration::from_secs(5)).await;
    buf.write_at(0, b"0123456789abcdef");
    let seg = e.open_segment("old").await.unwrap();
    let req = TransferRequest {
        opcode: Opcode::Write,
        source: buf.addr(),
        target: seg,
        target_offset: 8192,
        length: 16,
    };
    e.transfer(&[req]).await.unwrap();
    let (h, payload) = seen.await.unwrap();
    assert_eq!(h[16], 0x01, "v1 WRITE opcode");
    assert_eq!(&h[17..], &[0u8; 7], "padding is zeroed");
    assert_eq!(payload, b"0123456789abcdef");
}
