//! Batches spread over several peers: every peer's requests leave in one exchange (one
//! round trip for the batch, not one per peer), byte for byte, and a dead peer fails only
//! its own requests.

use std::sync::Arc;

use mooncake_metadata::MemoryStore;

mod common;
use common::{engine, pattern};
use mooncake_transfer_engine::{
    spread_exchanges, LocalBuffer, Opcode, SegmentHandle, TransferEngine, TransferRequest,
};

const VALUE: usize = 4096;
const COUNT: usize = 32;

/// `COUNT` requests of `VALUE` bytes alternating between the two holders: request `k`
/// moves `[k * VALUE, +VALUE)` of `local` to or from the same offset of its holder's buffer.
fn batch(
    opcode: Opcode,
    local: &LocalBuffer,
    holders: [(SegmentHandle, &LocalBuffer); 2],
) -> Vec<TransferRequest> {
    (0..COUNT)
        .map(|k| {
            let (seg, remote) = holders[k % 2];
            TransferRequest {
                opcode,
                source: local.addr() + (k * VALUE) as u64,
                target: seg,
                target_offset: remote.addr() + (k * VALUE) as u64,
                length: VALUE as u64,
            }
        })
        .collect()
}

/// The values `k` of `data` with `k % 2 == parity` (those of one holder), each to the
/// same offset of `remote`.
fn lent_items<'a>(data: &'a [u8], remote: &LocalBuffer, parity: usize) -> Vec<(u64, &'a [u8])> {
    (0..COUNT)
        .filter(|k| k % 2 == parity)
        .map(|k| {
            let at = remote.addr() + (k * VALUE) as u64;
            (at, &data[k * VALUE..(k + 1) * VALUE])
        })
        .collect()
}

/// An initiator and two holders on loopback, each holder with a buffer of `COUNT` values.
async fn three(ports: [u16; 3]) -> ([TransferEngine; 3], [LocalBuffer; 3], [SegmentHandle; 2]) {
    let meta = Arc::new(MemoryStore::new());
    let name = |p: u16| format!("127.0.0.1:{p}");
    let a = engine(&meta, &name(ports[0])).await;
    let b = engine(&meta, &name(ports[1])).await;
    let c = engine(&meta, &name(ports[2])).await;
    let size = (COUNT * VALUE) as u64;
    let bufs = [
        a.allocate_buffer(size, "cpu:0").await.unwrap(),
        b.allocate_buffer(size, "cpu:0").await.unwrap(),
        c.allocate_buffer(size, "cpu:0").await.unwrap(),
    ];
    let segs = [
        a.open_segment(&name(ports[1])).await.unwrap(),
        a.open_segment(&name(ports[2])).await.unwrap(),
    ];
    ([a, b, c], bufs, segs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_two_peers_is_one_exchange_byte_for_byte() {
    let ([a, b, c], [a_buf, b_buf, c_buf], [to_b, to_c]) = three([17381, 17382, 17383]).await;
    let data = pattern(COUNT * VALUE, 5);
    a_buf.write_at(0, &data);
    let holders = [(to_b, &b_buf), (to_c, &c_buf)];

    // Registered memory: the WRITEs land on both holders, one exchange for the batch.
    let before = spread_exchanges();
    let results = a
        .transfer_each(&batch(Opcode::Write, &a_buf, holders))
        .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(spread_exchanges(), before + 1);
    for k in 0..COUNT {
        let held = if k % 2 == 0 { &b_buf } else { &c_buf };
        assert!(held.to_vec((k * VALUE) as u64, VALUE) == data[k * VALUE..(k + 1) * VALUE]);
    }
    // ... and read back into a cleared buffer the same way.
    a_buf.write_at(0, &vec![0; COUNT * VALUE]);
    let results = a.transfer_each(&batch(Opcode::Read, &a_buf, holders)).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(spread_exchanges(), before + 2);
    assert!(a_buf.to_vec(0, COUNT * VALUE) == data);

    // Lent memory: writes from ordinary memory, reads into fresh memory.
    let fresh = pattern(COUNT * VALUE, 9);
    let holders_lent = vec![
        (to_b, lent_items(&fresh, &b_buf, 0)),
        (to_c, lent_items(&fresh, &c_buf, 1)),
    ];
    assert_eq!(
        a.write_lent_spread(&holders_lent).await,
        Some(vec![true, true])
    );
    assert_eq!(spread_exchanges(), before + 3);
    let mut out = vec![0u8; COUNT * VALUE];
    let mut per: [Vec<(u64, &mut [u8])>; 2] = [Vec::new(), Vec::new()];
    for (k, chunk) in out.chunks_mut(VALUE).enumerate() {
        let remote = if k % 2 == 0 { &b_buf } else { &c_buf };
        per[k % 2].push((remote.addr() + (k * VALUE) as u64, chunk));
    }
    let [even, odd] = per;
    let read = a.read_lent_spread(vec![(to_b, even), (to_c, odd)]).await;
    assert_eq!(read, Some(vec![true, true]));
    assert_eq!(spread_exchanges(), before + 4);
    assert!(out == fresh);

    // One holder alone is not spread: nothing done, the caller reads per holder.
    let one = vec![(to_b, vec![(b_buf.addr(), &mut out[..VALUE])])];
    assert_eq!(a.read_lent_spread(one).await, None);
    for e in [a, b, c] {
        e.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_fails_only_its_own_requests() {
    let ([a, b, c], [a_buf, b_buf, c_buf], [to_b, to_c]) = three([17384, 17385, 17386]).await;
    let data = pattern(COUNT * VALUE, 11);
    a_buf.write_at(0, &data);
    c.shutdown().await.unwrap();
    drop(c);
    let results = a
        .transfer_each(&batch(
            Opcode::Write,
            &a_buf,
            [(to_b, &b_buf), (to_c, &c_buf)],
        ))
        .await;
    for (k, r) in results.iter().enumerate() {
        if k % 2 == 0 {
            assert!(r.is_ok(), "request {k} to the live peer: {r:?}");
            assert!(b_buf.to_vec((k * VALUE) as u64, VALUE) == data[k * VALUE..(k + 1) * VALUE]);
        } else {
            assert!(r.is_err(), "request {k} to the dead peer succeeded");
        }
    }
    let holders = [
        (to_b, lent_items(&data, &b_buf, 0)),
        (to_c, lent_items(&data, &c_buf, 1)),
    ];
    let sent = a.write_lent_spread(&holders).await;
    assert_eq!(sent, Some(vec![true, false]));
    for e in [a, b] {
        e.shutdown().await.unwrap();
    }
}
