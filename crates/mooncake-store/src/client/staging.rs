//! The client's staging buffer: a registered buffer carved by an offset allocator, so the
//! copying (`bytes`) APIs move value bytes through memory the transfer engine can use.

use std::sync::Arc;

use mooncake_transfer_engine::LocalBuffer;
use parking_lot::Mutex;

use crate::allocator::{AllocHandle, OffsetAllocator};

/// The staging buffer shared by one client's calls.
#[derive(Debug)]
pub(crate) struct Staging {
    buffer: LocalBuffer,
    alloc: Mutex<OffsetAllocator>,
}

/// A range of the staging buffer, returned to it on drop.
#[derive(Debug)]
pub(crate) struct Slice {
    staging: Arc<Staging>,
    handle: AllocHandle,
    offset: u64,
    len: u64,
}

impl Staging {
    pub(crate) fn new(buffer: LocalBuffer) -> Arc<Self> {
        let alloc = Mutex::new(OffsetAllocator::new(buffer.len()));
        Arc::new(Self { buffer, alloc })
    }

    /// A range of `len` bytes, or `None` when the buffer has no room.
    pub(crate) fn take(self: &Arc<Self>, len: u64) -> Option<Slice> {
        let a = self.alloc.lock().allocate(len)?;
        Some(Slice {
            staging: self.clone(),
            handle: a.handle,
            offset: a.offset,
            len,
        })
    }
}

impl Slice {
    /// The range's address (a transfer source or destination).
    pub(crate) fn addr(&self) -> u64 {
        self.staging.buffer.addr() + self.offset
    }

    /// Copies `data` (at most `len` bytes) into the range.
    pub(crate) fn fill(&self, data: &[u8]) {
        self.staging.buffer.write_at(self.offset, data);
    }

    /// The range's bytes.
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        self.staging.buffer.to_vec(self.offset, self.len as usize)
    }
}

impl Drop for Slice {
    fn drop(&mut self) {
        // The handle came from this allocator and is freed once.
        let _ = self.staging.alloc.lock().free(self.handle);
    }
}
