//! Two engines on this machine's own non-loopback address, so that the engine treats the
//! peer as another host (large WRITEs are exchanged by two threads: `transport/tcp.rs`).
//! Skipped, with a message, on a machine without such an address.

use std::net::{IpAddr, UdpSocket};
use std::sync::Arc;

use mooncake_metadata::MemoryStore;

mod common;
use common::{engine, pattern, write_and_check};
use mooncake_transfer_engine::{
    lent_exchanges_on_lanes, two_thread_exchanges, Opcode, TransferRequest,
};

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

/// Large lent READs from another host take the lanes (`transport/tcp.rs`,
/// `lent_reads_for_lanes`), small ones stay direct; every byte lands, also while other
/// tasks write to the same peer over the same lanes, and no clone of the lent memory
/// outlives a call (the engine aborts the process if one does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_lent_reads_from_another_host_take_the_lanes() {
    let Some(ip) = own_address() else {
        eprintln!("skipped: this machine has no non-loopback address");
        return;
    };
    let meta = Arc::new(MemoryStore::new());
    let a = Arc::new(engine(&meta, &format!("{ip}:17351")).await);
    let b = engine(&meta, &format!("{ip}:17352")).await;
    let size = 9usize << 20;
    let b_buf = b.allocate_buffer(3 * size as u64, "cpu:0").await.unwrap();
    let data = pattern(size, 11);
    b_buf.write_at(0, &data);
    let seg = a.open_segment(&format!("{ip}:17352")).await.unwrap();

    // One large READ goes to the lanes; one of 4 MiB (the lanes' threshold) does not.
    let before = lent_exchanges_on_lanes();
    let mut back = vec![0u8; size];
    assert!(a.read_lent(seg, b_buf.addr(), &mut back).await);
    assert!(back == data, "lent read of {size} bytes corrupted");
    assert_eq!(lent_exchanges_on_lanes() - before, 1, "not on the lanes");
    let mut small = vec![0u8; 4 << 20];
    assert!(a.read_lent(seg, b_buf.addr() + 3, &mut small).await);
    assert!(small == data[3..3 + (4 << 20)], "4 MiB lent read corrupted");
    assert_eq!(
        lent_exchanges_on_lanes() - before,
        1,
        "4 MiB took the lanes"
    );

    // Readers on two tasks while a third writes to the same peer from registered memory.
    let writer = {
        let a = a.clone();
        let to = b_buf.addr() + 2 * size as u64;
        tokio::spawn(async move {
            let from = a.allocate_buffer(size as u64, "cpu:0").await.unwrap();
            from.write_at(0, &pattern(size, 12));
            for _ in 0..8 {
                let write = TransferRequest {
                    opcode: Opcode::Write,
                    source: from.addr(),
                    target: seg,
                    target_offset: to,
                    length: size as u64,
                };
                a.transfer(&[write]).await.unwrap();
            }
        })
    };
    let readers: Vec<_> = (0..2u64)
        .map(|k| {
            let (a, data) = (a.clone(), data.clone());
            let at = b_buf.addr();
            tokio::spawn(async move {
                for round in 0..6u64 {
                    // Each round reads from a different offset into a fresh buffer.
                    let skip = (k * 6 + round) as usize * 4096;
                    let mut out = vec![0u8; size - skip];
                    assert!(a.read_lent(seg, at + skip as u64, &mut out).await);
                    assert!(out == data[skip..], "reader {k} round {round} corrupted");
                }
            })
        })
        .collect();
    for r in readers {
        r.await.unwrap();
    }
    writer.await.unwrap();
    assert!(b_buf.to_vec(2 * size as u64, size) == pattern(size, 12));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_single_threaded_runtime_reads_lent_memory_directly() {
    let Some(ip) = own_address() else {
        return;
    };
    let meta = Arc::new(MemoryStore::new());
    let a = engine(&meta, &format!("{ip}:17361")).await;
    let b = engine(&meta, &format!("{ip}:17362")).await;
    let size = 9usize << 20;
    let b_buf = b.allocate_buffer(size as u64, "cpu:0").await.unwrap();
    b_buf.write_at(0, &pattern(size, 13));
    let seg = a.open_segment(&format!("{ip}:17362")).await.unwrap();
    let before = lent_exchanges_on_lanes();
    let mut back = vec![0u8; size];
    assert!(a.read_lent(seg, b_buf.addr(), &mut back).await);
    assert!(back == pattern(size, 13));
    assert_eq!(
        lent_exchanges_on_lanes(),
        before,
        "cannot block in place here"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// A large lent exchange (a READ on the lanes, a WRITE on two threads) beside another
/// future in one `join!`, on a thread inside `Runtime::block_on` (as Python's calling
/// thread is): the other future's wake-up must reach it while the exchange blocks in
/// place. A nested `block_on` on the caller's thread swallowed it, and the call hung.
#[test]
fn large_lent_exchanges_beside_other_futures_keep_their_wakeups() {
    let Some(ip) = own_address() else {
        eprintln!("skipped: this machine has no non-loopback address");
        return;
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let meta = Arc::new(MemoryStore::new());
            let a = engine(&meta, &format!("{ip}:17371")).await;
            let b = engine(&meta, &format!("{ip}:17372")).await;
            let size = 9usize << 20;
            let b_buf = b.allocate_buffer(size as u64, "cpu:0").await.unwrap();
            let seg = a.open_segment(&format!("{ip}:17372")).await.unwrap();
            let tick = || tokio::time::sleep(std::time::Duration::from_millis(1));
            for round in 0..4u8 {
                let data = pattern(size, round);
                let items = [(b_buf.addr(), data.as_slice())];
                let (_, wrote) = tokio::join!(tick(), a.write_lent(seg, &items));
                assert!(wrote, "lent write refused");
                let mut back = vec![0u8; size];
                let (_, read) = tokio::join!(tick(), a.read_lent(seg, b_buf.addr(), &mut back));
                assert!(read && back == data, "round {round} corrupted");
            }
            a.shutdown().await.unwrap();
            b.shutdown().await.unwrap();
        });
        let _ = tx.send(());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(()) => {}
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("a join! beside a large lent exchange hung: a wake-up was lost")
        }
        Err(_) => panic!("the exchanges failed (see the panic above)"),
    }
}
