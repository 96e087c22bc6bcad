//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use mooncake_metadata::MemoryStore;
use mooncake_transfer_engine::{
    EngineConfig, LocalBuffer, Opcode, SegmentHandle, TransferEngine, TransferRequest,
};

/// Bytes that differ at every offset and per `seed`.
pub(crate) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 11) as u8)
        .collect()
}

/// An engine named `name` publishing to `meta`.
pub(crate) async fn engine(meta: &Arc<MemoryStore>, name: &str) -> TransferEngine {
    let mut config = EngineConfig::new(name);
    config.republish_interval = Duration::from_millis(100);
    TransferEngine::start(config, meta.clone()).await.unwrap()
}

/// Writes `data` from the start of `from` to `at` in `to` (a buffer of the engine behind
/// `seg`) with one WRITE, checks it landed byte for byte, and returns the request (to
/// read it back with).
pub(crate) async fn write_and_check(
    engine: &TransferEngine,
    from: &LocalBuffer,
    seg: SegmentHandle,
    to: &LocalBuffer,
    at: u64,
    data: &[u8],
) -> TransferRequest {
    from.write_at(0, data);
    let write = TransferRequest {
        opcode: Opcode::Write,
        source: from.addr(),
        target: seg,
        target_offset: to.addr() + at,
        length: data.len() as u64,
    };
    engine.transfer(&[write]).await.unwrap();
    assert!(
        to.to_vec(at, data.len()) == data,
        "write of {} bytes corrupted",
        data.len()
    );
    write
}
