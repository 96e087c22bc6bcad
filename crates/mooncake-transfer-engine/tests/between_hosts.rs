//! Two engines on this machine's own non-loopback address, so that the engine treats the
//! peer as another host (large WRITEs are exchanged by two threads: `transport/tcp.rs`).
//! Skipped, with a message, on a machine without such an address.

use std::net::{IpAddr, UdpSocket};
use std::sync::Arc;

use mooncake_metadata::MemoryStore;

mod common;
use common::{engine, pattern, write_and_check};
use mooncake_transfer_engine::{two_thread_exchanges, Opcode, TransferRequest};

/// An address of this machine other than loopback (the one a route out would use; no
/// packet is sent).
fn own_address() -> Option<IpAddr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("10.255.255.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

async fn large_writes_to_another_host_land_byte_exact() {
    let Some(ip) = own_address() else {
        eprintln!("skipped: this machine has no non-loopback address");
        return;
    };
    let meta = Arc::new(MemoryStore::new());
    let a = engine(&meta, &format!("{ip}:17301")).await;
    let b = engine(&meta, &format!("{ip}:17302")).await;
    let cap: usize = 40 << 20;
    let a_buf = a.allocate_buffer(cap as u64, "cpu:0").await.unwrap();
    let b_buf = b.allocate_buffer(cap as u64 + 4096, "cpu:0").await.unwrap();
    let seg = a.open_segment(&format!("{ip}:17302")).await.unwrap();
    // Sizes below, at and above the two-thread threshold (2 MiB), an odd one, and a
    // batch whose halves cut a request in two.
    for (i, size) in [
        (2usize << 20) - 1,
        2 << 20,
        (3 << 20) + 7,
        9 << 20,
        33 << 20,
    ]
    .into_iter()
    .enumerate()
    {
        // From registered memory.
        write_and_check(&a, &a_buf, seg, &b_buf, 5, &pattern(size, i as u8)).await;
        if size > 32 << 20 {
            continue; // lent memory: one direct exchange at most (32 MiB), else staged
        }
        // From lent (ordinary) memory, in three pieces.
        let lent = pattern(size, i as u8 + 100);
        let (x, rest) = lent.split_at(size / 3);
        let (y, z) = rest.split_at(rest.len() / 2);
        let base = b_buf.addr() + 5;
        let items = [
            (base, x),
            (base + x.len() as u64, y),
            (base + (x.len() + y.len()) as u64, z),
        ];
        assert!(
            a.write_lent(seg, &items).await,
            "lent write of {size} refused"
        );
        assert!(
            b_buf.to_vec(5, size) == lent,
            "lent write of {size} bytes corrupted"
        );
        // And back, to check the reads the split leaves alone.
        let mut back = vec![0u8; size];
        assert!(a.read_lent(seg, base, &mut back).await);
        assert!(back == lent, "read of {size} bytes corrupted");
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_a_worker_thread() {
    // The test body runs on the runtime's `block_on` thread; run it on a worker too.
    large_writes_to_another_host_land_byte_exact().await;
    tokio::spawn(async {
        let Some(ip) = own_address() else {
            return;
        };
        let meta = Arc::new(MemoryStore::new());
        let a = engine(&meta, &format!("{ip}:17311")).await;
        let b = engine(&meta, &format!("{ip}:17312")).await;
        let size = 12 << 20;
        let b_buf = b.allocate_buffer(size as u64, "cpu:0").await.unwrap();
        let seg = a.open_segment(&format!("{ip}:17312")).await.unwrap();
        let data = pattern(size, 7);
        assert!(a.write_lent(seg, &[(b_buf.addr(), &data)]).await);
        assert!(b_buf.to_vec(0, size) == data);
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn on_a_single_threaded_runtime_one_thread_does_it() {
    large_writes_to_another_host_land_byte_exact().await;
}

/// Whether one 9 MiB WRITE to another host, from this thread, was exchanged on two
/// threads; `None` without a non-loopback address.
async fn one_large_write_split(ports: (u16, u16)) -> Option<bool> {
    let ip = own_address()?;
    let meta = Arc::new(MemoryStore::new());
    let a = engine(&meta, &format!("{ip}:{}", ports.0)).await;
    let b = engine(&meta, &format!("{ip}:{}", ports.1)).await;
    let size = 9 << 20;
    let a_buf = a.allocate_buffer(size as u64, "cpu:0").await.unwrap();
    let b_buf = b.allocate_buffer(size as u64, "cpu:0").await.unwrap();
    a_buf.write_at(0, &pattern(size, 3));
    let seg = a.open_segment(&format!("{ip}:{}", ports.1)).await.unwrap();
    let before = two_thread_exchanges();
    a.transfer(&[TransferRequest {
        opcode: Opcode::Write,
        source: a_buf.addr(),
        target: seg,
        target_offset: b_buf.addr(),
        length: size as u64,
    }])
    .await
    .unwrap();
    let split = two_thread_exchanges() > before;
    assert!(b_buf.to_vec(0, size) == pattern(size, 3));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    Some(split)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_write_to_another_host_is_exchanged_by_two_threads() {
    if let Some(split) = one_large_write_split((17321, 17322)).await {
        assert!(split, "not exchanged by two threads");
    }
}

#[tokio::test]
async fn a_single_threaded_runtime_keeps_one_exchange() {
    if let Some(split) = one_large_write_split((17331, 17332)).await {
        assert!(!split, "a single-threaded runtime cannot block in place");
    }
}

/// A batch larger than two direct exchanges carry (5 x 20 MiB) goes window by window,
/// each window on two threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_of_writes_goes_window_by_window() {
    let Some(ip) = own_address() else {
        eprintln!("skipped: this machine has no non-loopback address");
        return;
    };
    let meta = Arc::new(MemoryStore::new());
    let a = engine(&meta, &format!("{ip}:17341")).await;
    let b = engine(&meta, &format!("{ip}:17342")).await;
    let (each, n) = (20usize << 20, 5usize);
    let a_buf = a.allocate_buffer((each * n) as u64, "cpu:0").await.unwrap();
    let b_buf = b.allocate_buffer((each * n) as u64, "cpu:0").await.unwrap();
    let data = pattern(each * n, 9);
    a_buf.write_at(0, &data);
    let seg = a.open_segment(&format!("{ip}:17342")).await.unwrap();
    let batch: Vec<TransferRequest> = (0..n)
        .map(|k| TransferRequest {
            opcode: Opcode::Write,
            source: a_buf.addr() + (k * each) as u64,
            target: seg,
            // In reverse order, so that a mix-up of requests shows.
            target_offset: b_buf.addr() + ((n - 1 - k) * each) as u64,
            length: each as u64,
        })
        .collect();
    let before = two_thread_exchanges();
    a.transfer(&batch).await.unwrap();
    assert!(two_thread_exchanges() - before >= 2, "not window by window");
    for k in 0..n {
        let want = &data[k * each..(k + 1) * each];
        assert!(
            b_buf.to_vec(((n - 1 - k) * each) as u64, each) == want,
            "value {k} corrupted"
        );
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
