//! Registered memory: the only module of this crate with `unsafe` code.
//!
//! A [`Region`] is a range of this process's memory that remote peers may read and write
//! through the engine, like an RDMA memory region. It is either engine-allocated (an
//! anonymous, pre-faulted mapping owned by the region) or caller-owned (the caller promised,
//! when registering, that the range stays valid until it is unregistered).
//!
//! Concurrent transfers into one region are not synchronised with each other or with the
//! owner's own accesses, exactly as with RDMA: the store protocol (allocation, leases)
//! keeps writers of one object apart. The engine never hands out Rust references into a
//! region beyond the duration of one socket read or write or one copy.

use std::io;

use memmap2::{MmapMut, MmapOptions};

/// Caller-owned memory offered for registration with
/// [`crate::TransferEngine::register_memory`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForeignMemory {
    addr: u64,
    len: u64,
}

impl ForeignMemory {
    /// Names a range of this process's memory.
    ///
    /// # Safety
    /// `[addr, addr+len)` must be valid, writable memory of this process from now until the
    /// engine's `unregister` for it has returned (it waits for in-flight transfers), and
    /// the caller must not hold Rust references into it while peers may write it.
    pub unsafe fn new(addr: u64, len: u64) -> Self {
        Self { addr, len }
    }

    /// Start address.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A registered memory range.
#[derive(Debug)]
pub(crate) struct Region {
    addr: u64,
    len: u64,
    owner: Option<MmapMut>,
}

impl Region {
    /// Maps `len` bytes of anonymous memory, pre-faulted (`MAP_POPULATE`) so the first
    /// transfer does not pay for page faults.
    pub(crate) fn anonymous(len: u64) -> io::Result<Self> {
        let size = usize::try_from(len).map_err(|_| io::Error::other("length exceeds usize"))?;
        let map = MmapOptions::new().len(size).populate().map_anon()?;
        Ok(Self {
            addr: map.as_ptr() as u64,
            len,
            owner: Some(map),
        })
    }

    /// A caller-owned range (the promise travels with [`ForeignMemory`]).
    pub(crate) fn borrowed(memory: ForeignMemory) -> Self {
        Self {
            addr: memory.addr,
            len: memory.len,
            owner: None,
        }
    }

    /// Start address.
    pub(crate) fn addr(&self) -> u64 {
        self.addr
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Whether the memory belongs to the caller (registered) rather than to the region.
    pub(crate) fn is_borrowed(&self) -> bool {
        self.owner.is_none()
    }

    /// Whether the region is empty (never true for a registered region).
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, addr: u64, len: usize) -> usize {
        let end = addr.checked_add(len as u64);
        assert!(
            addr >= self.addr && end.is_some_and(|e| e <= self.addr + self.len),
            "range {addr:#x}+{len} outside region {:#x}+{}",
            self.addr,
            self.len
        );
        addr as usize
    }

    /// The bytes of `[addr, addr+len)`, which must lie inside the region (checked).
    pub(crate) fn slice(&self, addr: u64, len: usize) -> &[u8] {
        let p = self.check(addr, len);
        // SAFETY: the range lies inside the region (checked above), which is valid memory
        // for the region's lifetime (owned mapping, or the caller's registration promise).
        unsafe { std::slice::from_raw_parts(p as *const u8, len) }
    }

    /// The bytes of `[addr, addr+len)` for writing, which must lie inside the region.
    #[allow(clippy::mut_from_ref)]
    pub(crate) fn slice_mut(&self, addr: u64, len: usize) -> &mut [u8] {
        let p = self.check(addr, len);
        // SAFETY: as in `slice`; the memory is shared with remote peers by design (see the
        // module docs), and the slice lives only for one socket read or copy.
        unsafe { std::slice::from_raw_parts_mut(p as *mut u8, len) }
    }

    /// Copies `len` bytes from `src` (inside `src_region`) to `dst` (inside `self`).
    pub(crate) fn copy_from(&self, dst: u64, src_region: &Region, src: u64, len: usize) {
        let d = self.check(dst, len);
        let s = src_region.check(src, len);
        // SAFETY: both ranges are inside valid regions (checked); `copy` allows overlap.
        unsafe { std::ptr::copy(s as *const u8, d as *mut u8, len) }
    }
}
