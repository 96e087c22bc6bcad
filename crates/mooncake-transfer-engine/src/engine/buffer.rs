//! Buffers the engine hands out: [`LocalBuffer`] (memory it allocated and registered)
//! and [`DirectRange`] (memory it reaches with a copy).

use std::sync::Arc;

use crate::memory::Region;

/// A buffer the engine allocated and registered: pre-faulted anonymous memory.
///
/// The memory stays mapped while this handle (or a transfer using it) exists, even after
/// [`TransferEngine::unregister`](crate::TransferEngine::unregister).
#[derive(Debug, Clone)]
pub struct LocalBuffer {
    pub(super) region: Arc<Region>,
}

crate::memory::byte_accessors!(LocalBuffer);

/// A range of memory an engine reaches with a copy (its own registered memory, or a
/// same-host peer's shared memory), found by [`TransferEngine::direct_range`](crate::TransferEngine::direct_range). It keeps the
/// mapping alive; its bytes are whatever the range holds when they are read.
#[derive(Debug)]
pub struct DirectRange {
    pub(super) region: Option<Arc<Region>>,
    pub(super) addr: u64,
    pub(super) len: usize,
}

impl DirectRange {
    /// Bytes in the range.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the range into `out`, which may be uninitialised (fresh memory) and must be
    /// exactly [`DirectRange::len`] bytes long (panics otherwise).
    pub fn read_into_uninit(&self, out: &mut [std::mem::MaybeUninit<u8>]) {
        assert_eq!(out.len(), self.len, "destination length");
        if let Some(region) = &self.region {
            region.read_uninit(self.addr, out);
        }
    }

    /// CRC-32C of the range's bytes (read in place).
    pub fn crc32c(&self) -> u32 {
        self.region
            .as_ref()
            .map_or(0, |r| crc32c::crc32c(r.slice(self.addr, self.len)))
    }

    /// The range's bytes as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        self.region
            .as_ref()
            .map_or_else(Vec::new, |r| r.to_vec(self.addr, self.len))
    }
}
