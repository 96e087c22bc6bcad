//! Helpers shared by the master's integration tests.

use mooncake_store::{Segment, SegmentId};

pub(crate) const MIB: u64 = 1 << 20;

/// A TCP segment `name` of `size` bytes at a base address derived from `id`.
pub(crate) fn segment(id: u128, name: &str, size: u64) -> Segment {
    Segment {
        id: SegmentId(id),
        name: name.into(),
        base: 0x7f00_0000_0000 + (id as u64) * (1 << 32),
        size,
        te_endpoint: name.into(),
        protocol: "tcp".into(),
        host_id: "127.0.0.1".into(),
        durable: false,
    }
}
