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

    /// Copies `data` into the range at `offset` (within the range).
    pub(crate) fn fill_at(&self, offset: u64, data: &[u8]) {
        self.staging.buffer.write_at(self.offset + offset, data);
    }

    /// The range's length.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Copies the range's bytes into `out` (exactly `len` bytes long).
    pub(crate) fn read_into(&self, out: &mut [u8]) {
        self.staging.buffer.read_at(self.offset, out);
    }

    /// Copies the range's bytes into `out` (exactly `len` bytes long, maybe uninitialised).
    pub(crate) fn read_into_uninit(&self, out: &mut [std::mem::MaybeUninit<u8>]) {
        self.staging.buffer.read_at_uninit(self.offset, out);
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

/// A value read by [`crate::Client::get_staged`], still in the staging buffer (whose room
/// returns when this is dropped).
#[derive(Debug)]
pub struct StagedValue(pub(super) Slice);

impl StagedValue {
    /// The value's length in bytes.
    pub fn len(&self) -> usize {
        self.0.len() as usize
    }

    /// Whether the value is empty (never, for a stored object).
    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// Copies the value into `out`, which must be exactly [`StagedValue::len`] bytes long.
    pub fn read_into(&self, out: &mut [u8]) {
        self.0.read_into(out);
    }

    /// Like [`StagedValue::read_into`], into memory that may be uninitialised (a fresh
    /// allocation, e.g. a Python `bytes` object): large values are copied, and their new
    /// pages faulted in, by two threads at once.
    pub fn read_into_uninit(&self, out: &mut [std::mem::MaybeUninit<u8>]) {
        self.0.read_into_uninit(out);
    }

    /// The value as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_vec()
    }
}
