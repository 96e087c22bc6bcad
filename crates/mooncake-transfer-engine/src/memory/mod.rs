//! Registered memory: the only module of this crate with `unsafe` code.
//!
//! A [`Region`] is a range of this process's memory that remote peers may read and write
//! through the engine, like an RDMA memory region. It is engine-allocated (an anonymous,
//! pre-faulted mapping owned by the region), shared (a file in `/dev/shm` mapped
//! `MAP_SHARED`, which same-host peers map too and copy with `memcpy`), a peer's shared
//! file mapped here, or caller-owned (the caller promised, when registering, that the range
//! stays valid until it is unregistered).
//!
//! Concurrent transfers into one region are not synchronised with each other or with the
//! owner's own accesses, exactly as with RDMA: the store protocol (allocation, leases)
//! keeps writers of one object apart. The engine never hands out Rust references into a
//! region beyond the duration of one socket read or write or one copy.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use memmap2::{MmapMut, MmapOptions};

mod copy;
mod file_io;

/// This process's effective user id (to check what other local processes hand us).
pub fn effective_uid() -> u32 {
    // SAFETY: `geteuid` has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The user id of the process at the other end of a connected Unix socket
/// (`SO_PEERCRED`), or `None` when the kernel does not say.
pub fn peer_uid(socket: std::os::fd::BorrowedFd<'_>) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given, and the socket is
    // a live descriptor borrowed for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::addr_of_mut!(cred).cast(),
            &mut len,
        )
    };
    (rc == 0 && len as usize == std::mem::size_of::<libc::ucred>()).then_some(cred.uid)
}

/// Where shared-memory segment files live; peers' files are mapped only from here.
pub(crate) const SHM_DIR: &str = "/dev/shm";

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

/// A [`Region`] over ordinary memory the caller lends for one exchange that the caller
/// itself drives to the end ([`crate::tcp`]'s direct exchanges: no task outlives it), so
/// that a value need not be staged in registered memory first. The borrow keeps the memory
/// alive and unaliased for as long as this guard lives; the guard checks on drop that no
/// clone of the region escaped (one would point at memory the borrow no longer protects)
/// and aborts the process rather than let one be used.
pub(crate) struct LentRegion<'a> {
    region: std::sync::Arc<Region>,
    _memory: std::marker::PhantomData<&'a mut [u8]>,
}

impl<'a> LentRegion<'a> {
    /// Lends `data` for reading only (the exchange may only send it: WRITE requests).
    pub(crate) fn shared(data: &'a [u8]) -> Self {
        Self::over(data.as_ptr() as u64, data.len() as u64)
    }

    /// Lends memory not yet initialised to be written (READ requests land in it; the
    /// caller treats it as initialised only where an exchange completed). Callers prepare
    /// fresh memory with [`prefault_fresh`] first.
    pub(crate) fn uninit(data: &'a mut [std::mem::MaybeUninit<u8>]) -> Self {
        Self::over(data.as_mut_ptr() as u64, data.len() as u64)
    }

    fn over(addr: u64, len: u64) -> Self {
        Self {
            region: std::sync::Arc::new(Region {
                addr,
                len,
                owner: None,
                shm: None,
                peer_file: None,
            }),
            _memory: std::marker::PhantomData,
        }
    }

    /// The region, to put in the exchange's requests (clones must be gone by the drop).
    pub(crate) fn region(&self) -> &std::sync::Arc<Region> {
        &self.region
    }
}

impl Drop for LentRegion<'_> {
    fn drop(&mut self) {
        if std::sync::Arc::strong_count(&self.region) != 1 {
            // A clone outlives the borrow: using it would touch freed memory.
            eprintln!("mooncake-transfer-engine: a lent memory region escaped its exchange");
            std::process::abort();
        }
    }
}

/// The accessors every handle on a [`Region`] (in a field `region`) offers: address,
/// length and bounds-checked copies in and out, written once for [`SharedMemory`] and
/// [`LocalBuffer`](crate::LocalBuffer).
macro_rules! byte_accessors {
    ($handle:ty) => {
        impl $handle {
            /// Start address in this process (what peers use as `target_offset`).
            pub fn addr(&self) -> u64 {
                self.region.addr()
            }

            /// Length in bytes.
            pub fn len(&self) -> u64 {
                self.region.len()
            }

            /// Whether it is empty (never, once allocated).
            pub fn is_empty(&self) -> bool {
                self.region.is_empty()
            }

            /// Copies `data` in at `offset`. Panics if it does not fit.
            pub fn write_at(&self, offset: u64, data: &[u8]) {
                self.region.write(self.addr() + offset, data);
            }

            /// Copies bytes out at `offset` into `out`. Panics if out of range.
            pub fn read_at(&self, offset: u64, out: &mut [u8]) {
                self.read_at_uninit(offset, $crate::memory::as_uninit(out));
            }

            /// Like `read_at`, into memory that may be uninitialised (a fresh allocation):
            /// large reads are split between threads, page faults included.
            pub fn read_at_uninit(&self, offset: u64, out: &mut [std::mem::MaybeUninit<u8>]) {
                self.region.read_uninit(self.addr() + offset, out);
            }

            /// Reads `file` from `file_offset` into `head`, then `[offset, offset+len)` of
            /// this memory, then `tail` (vectored reads straight into place, no copy) until
            /// all three are full or the file ends; returns the bytes read. With an
            /// `O_DIRECT` file every part must be aligned as the device wants. Panics if the
            /// range is out of bounds.
            pub fn read_file_into(
                &self,
                file: &std::fs::File,
                file_offset: u64,
                head: &mut [u8],
                offset: u64,
                len: usize,
                tail: &mut [u8],
            ) -> std::io::Result<usize> {
                self.region
                    .pread_into(file, file_offset, head, self.addr() + offset, len, tail)
            }

            /// CRC-32C of the bytes at `offset..offset+len`, continuing `crc` (read in
            /// place). Panics if out of range.
            pub fn crc32c_append_at(&self, crc: u32, offset: u64, len: usize) -> u32 {
                crc32c::crc32c_append(crc, self.region.slice(self.addr() + offset, len))
            }

            /// The bytes at `offset..offset+len` as a new vector. Panics if out of range.
            pub fn to_vec(&self, offset: u64, len: usize) -> Vec<u8> {
                self.region.to_vec(self.addr() + offset, len)
            }
        }
    };
}
pub(crate) use byte_accessors;

/// A shared-memory file this process created and maps, to hand to another process by
/// path (e.g. a standalone client's memory pool, which its store service maps and
/// registers). Mode 0600; removed when dropped.
#[derive(Debug)]
pub struct SharedMemory {
    region: Region,
}

impl SharedMemory {
    /// Creates `path` with `len` bytes, all reserved, and maps it.
    pub fn create(path: &Path, len: u64) -> io::Result<Self> {
        Region::shared(path, len, true).map(|region| Self { region })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        self.region.shm_path().unwrap_or(Path::new(""))
    }
}

byte_accessors!(SharedMemory);

/// `out` seen as possibly-uninitialised bytes (to be overwritten).
pub(crate) fn as_uninit(out: &mut [u8]) -> &mut [std::mem::MaybeUninit<u8>] {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and every write through the result
    // stores initialised bytes, so `out` stays initialised.
    unsafe { &mut *(out as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) }
}

/// Tells the C library's allocator to keep up to `bytes` of freed heap for the next
/// allocations instead of handing it back to the kernel, and to serve allocations of up to
/// 32 MiB (glibc's largest setting) from that heap: a process that allocates and frees
/// large buffers again and again (new Python `bytes` per `get_batch`) then reuses warm
/// memory instead of faulting it in each time. Process-wide; glibc only (`mallopt`
/// `M_MMAP_THRESHOLD` and `M_TRIM_THRESHOLD`); `false` where it is not available or
/// refused.
pub fn keep_freed_heap(bytes: u64) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let trim = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: `mallopt` only changes glibc's allocation thresholds; it may be called
        // at any time, from any thread.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, trim) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = bytes;
        false
    }
}

/// Prepares memory a network read is about to fill, each exclusively borrowed buffer of
/// `outs`: large ones are backed with huge pages where the kernel allows (see
/// [`copy::advise_fresh`], as the copying reads do), then unbacked pages are faulted in on
/// several threads (see [`copy::prefault`]) instead of one at a time by the socket read.
pub(crate) fn prefault_fresh<'a>(
    outs: impl IntoIterator<Item = &'a mut [std::mem::MaybeUninit<u8>]>,
) {
    let ranges: Vec<(*mut u8, usize)> = outs
        .into_iter()
        .map(|o| (o.as_mut_ptr().cast::<u8>(), o.len()))
        .collect();
    for &(p, len) in &ranges {
        copy::advise_fresh(p, len);
    }
    // SAFETY: each range is an exclusively borrowed slice, valid for writes and read by
    // no one until this returns; writing bytes into `MaybeUninit` memory is sound.
    unsafe { copy::prefault(&ranges) }
}

/// A registered memory range.
#[derive(Debug)]
pub(crate) struct Region {
    addr: u64,
    len: u64,
    owner: Option<MmapMut>,
    shm: Option<ShmFile>,
    /// A peer's file mapped here: kept open to probe its owner's `flock`.
    peer_file: Option<std::fs::File>,
}

/// The shared-memory file behind a region this process created.
#[derive(Debug)]
struct ShmFile {
    path: PathBuf,
    /// Remove the file when the region goes (files the engine named itself).
    unlink: bool,
    /// Every shared file stays open with an exclusive `flock`, which the kernel releases
    /// when this process dies: peers that map it can tell a dead owner from a live one
    /// ([`Region::owner_alive`]), and a restarted owner of a durable file knows the old
    /// one is gone when it gets the lock.
    _lock: Option<std::fs::File>,
}

/// Takes an exclusive `flock` on `file` (opened from `path`) without waiting: held until
/// the file is closed or the process dies. Fails with [`io::ErrorKind::AddrInUse`] when
/// another live process holds it (the master guards its state directory with it).
pub fn try_lock_exclusive(file: &std::fs::File, path: &Path) -> io::Result<()> {
    lock_exclusive(file, path)
}

/// Bytes available to this user on the filesystem holding `path` (`statvfs`'s
/// `f_bavail * f_frsize`); the disk tier compares its capacity with it at start.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a NUL-terminated path and `st` a writable statvfs the call fills.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Takes the exclusive `flock` of a durable segment file, or says who cannot.
fn lock_exclusive(file: &std::fs::File, path: &Path) -> io::Result<()> {
    // A peer probing a dead owner holds a shared lock for a few microseconds: retry
    // briefly before calling the file busy.
    let mut tries = 0;
    let e = loop {
        // SAFETY: `flock` on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        tries += 1;
        if e.kind() != io::ErrorKind::WouldBlock || tries == 50 {
            break e;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    if e.kind() == io::ErrorKind::WouldBlock {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use by another live process", path.display()),
        ));
    }
    Err(e)
}

/// Whether nobody holds the shared-memory file at `path`: its owner keeps an exclusive
/// `flock` on it for as long as it lives, which the kernel drops when it dies, so this is
/// right across PID namespaces (containers sharing `/dev/shm`), where a PID is not.
pub(crate) fn shm_owner_gone(path: &Path) -> bool {
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    else {
        return false;
    };
    // SAFETY: `flock` on a descriptor we own; no memory is involved. Closing the file (at
    // the end of this function) releases the lock if we got it.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

impl Drop for Region {
    fn drop(&mut self) {
        if let Some(shm) = &self.shm {
            if shm.unlink {
                let _ = std::fs::remove_file(&shm.path);
            }
        }
    }
}

fn usize_len(len: u64) -> io::Result<usize> {
    usize::try_from(len).map_err(|_| io::Error::other("length exceeds usize"))
}

impl Region {
    /// Maps `len` bytes of anonymous memory, pre-faulted (`MAP_POPULATE`) so the first
    /// transfer does not pay for page faults.
    pub(crate) fn anonymous(len: u64) -> io::Result<Self> {
        let map = MmapOptions::new()
            .len(usize_len(len)?)
            .populate()
            .map_anon()?;
        Ok(Self {
            addr: map.as_ptr() as u64,
            len,
            owner: Some(map),
            shm: None,
            peer_file: None,
        })
    }

    /// Creates the shared-memory file `path` (mode 0600: only this user's processes may
    /// map it), reserves all of its `len` bytes up front (so a full `/dev/shm` is an error
    /// here, never a `SIGBUS` later) and maps it shared and pre-faulted. An existing file is
    /// refused, so nothing is ever overwritten. `unlink`: remove the file when the region
    /// is dropped.
    pub(crate) fn shared(path: &Path, len: u64, unlink: bool) -> io::Result<Self> {
        let size = usize_len(len)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        let cleanup = |e: io::Error| {
            let _ = std::fs::remove_file(path);
            e
        };
        let off = libc::off_t::try_from(len)
            .map_err(|_| cleanup(io::Error::other("length exceeds off_t")))?;
        // SAFETY: `fallocate`-style reservation on a file descriptor we own; no memory is
        // touched. It returns an errno value (0 on success) instead of setting errno.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, off) };
        if rc != 0 {
            let e = io::Error::from_raw_os_error(rc);
            return Err(cleanup(io::Error::new(
                e.kind(),
                format!("cannot reserve {len} bytes for {}: {e}", path.display()),
            )));
        }
        // SAFETY: the file is ours (just created, mode 0600) and sized to `len`; other
        // processes that map it write it only through the engine's copies, with the same
        // no-references discipline as remote peers (see the module docs).
        let map =
            unsafe { MmapOptions::new().len(size).populate().map_mut(&file) }.map_err(cleanup)?;
        lock_exclusive(&file, path).map_err(cleanup)?;
        let lock = Some(file);
        Ok(Self {
            addr: map.as_ptr() as u64,
            len,
            owner: Some(map),
            shm: Some(ShmFile {
                path: path.to_path_buf(),
                unlink,
                _lock: lock,
            }),
            peer_file: None,
        })
    }

    /// Maps an existing shared-memory file of exactly `len` bytes that this process will
    /// own and serve (a durable segment re-attached after a restart); it is never removed.
    /// Fails if another live process holds it.
    pub(crate) fn attach(path: &Path, len: u64) -> io::Result<Self> {
        let size = usize_len(len)?;
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        lock_exclusive(&file, path)?;
        let have = file.metadata()?.len();
        if have != len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} has {have} bytes, not the {len} asked for; nothing was changed",
                    path.display()
                ),
            ));
        }
        // SAFETY: as in `shared`: the mapping is only accessed through bounded copies.
        let map = unsafe { MmapOptions::new().len(size).populate().map_mut(&file) }?;
        Ok(Self {
            addr: map.as_ptr() as u64,
            len,
            owner: Some(map),
            shm: Some(ShmFile {
                path: path.to_path_buf(),
                unlink: false,
                _lock: Some(file),
            }),
            peer_file: None,
        })
    }

    /// Maps a same-host peer's shared-memory file (at least `len` bytes) into this
    /// process, so transfers to that peer are copies.
    ///
    /// The path comes from another process (the metadata service, a standalone client's
    /// hello), so nothing it names is trusted: it must be a file directly in `/dev/shm`
    /// (no symbolic link, opened with `O_NOFOLLOW`), a regular file owned by this process's
    /// user, and exactly `len` bytes long.
    pub(crate) fn map_peer(path: &Path, len: u64) -> io::Result<Self> {
        let refuse = |why: String| {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("refusing to map {}: {why}", path.display()),
            ))
        };
        let in_shm = path.parent() == Some(Path::new(SHM_DIR))
            && path
                .file_name()
                .is_some_and(|n| n != ".." && n != "." && !n.is_empty());
        if !in_shm {
            return refuse(format!("not a file directly in {SHM_DIR}"));
        }
        let size = usize_len(len)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return refuse("not a regular file".into());
        }
        let me = effective_uid();
        if std::os::unix::fs::MetadataExt::uid(&meta) != me {
            return refuse(format!(
                "owned by uid {}, not this process's user ({me})",
                std::os::unix::fs::MetadataExt::uid(&meta)
            ));
        }
        let have = meta.len();
        if have != len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} has {have} bytes, the peer publishes {len}",
                    path.display()
                ),
            ));
        }
        // SAFETY: as in `shared`: the mapping is only accessed through bounded copies.
        let map = unsafe { MmapOptions::new().len(size).map_mut(&file) }?;
        Ok(Self {
            addr: map.as_ptr() as u64,
            len,
            owner: Some(map),
            shm: None,
            peer_file: Some(file),
        })
    }

    /// For a peer's file mapped with [`Region::map_peer`]: whether its owner still holds
    /// it (its exclusive `flock`, which the kernel drops when the owner dies, even by
    /// SIGKILL). `true` for other regions and when the probe itself fails.
    pub(crate) fn owner_alive(&self) -> bool {
        let Some(file) = &self.peer_file else {
            return true;
        };
        let fd = file.as_raw_fd();
        // SAFETY: `flock` on a descriptor this region owns; no memory is involved.
        if unsafe { libc::flock(fd, libc::LOCK_SH | libc::LOCK_NB) } != 0 {
            return true;
        }
        // We got it: nobody holds the file exclusively any more. Give it back at once.
        // SAFETY: as above.
        unsafe { libc::flock(fd, libc::LOCK_UN) };
        false
    }

    /// The shared-memory file of a region this process created with [`Region::shared`].
    pub(crate) fn shm_path(&self) -> Option<&Path> {
        self.shm.as_ref().map(|s| s.path.as_path())
    }

    /// A caller-owned range (the promise travels with [`ForeignMemory`]).
    pub(crate) fn borrowed(memory: ForeignMemory) -> Self {
        Self {
            addr: memory.addr,
            len: memory.len,
            owner: None,
            shm: None,
            peer_file: None,
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

    /// The bytes of `[addr, addr+len)` for writing, which must lie inside the region
    /// (checked: a range outside it panics).
    ///
    /// # Safety
    ///
    /// While the returned slice lives, the caller must not use any other reference into an
    /// overlapping range of this region from this process, and must only write through the
    /// slice (never rely on reading back what is there: peers in other processes may write
    /// the same bytes through shared memory, as with RDMA). In the engine this holds because
    /// the store protocol gives one object's range one writer at a time (allocation,
    /// leases), and each such slice lives for one socket read only.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice_mut(&self, addr: u64, len: usize) -> &mut [u8] {
        let p = self.check(addr, len);
        // SAFETY: the range lies inside the region (checked), valid memory for the region's
        // lifetime; exclusivity within this process is the caller's promise (see above).
        unsafe { std::slice::from_raw_parts_mut(p as *mut u8, len) }
    }

    /// Copies `len` bytes from `src` (inside `src_region`) to `dst` (inside `self`); large
    /// copies stream and use the copy helper threads (see [`copy`]).
    pub(crate) fn copy_from(&self, dst: u64, src_region: &Region, src: u64, len: usize) {
        let d = self.check(dst, len);
        let s = src_region.check(src, len);
        // SAFETY: both ranges are inside valid regions (checked); `copy` allows overlap and
        // no reference into the region outlives a copy (module docs).
        unsafe { copy::copy(d as *mut u8, s as *const u8, len) }
    }

    /// Copies `[addr, addr+out.len())`, which must lie inside the region (checked), into
    /// `out`, which may be uninitialised (fresh memory: large ones get huge pages where
    /// the kernel allows, see [`copy::advise_fresh`]); large reads take the bulk path (see
    /// [`copy`]), which also splits the first-touch page faults between threads.
    pub(crate) fn read_uninit(&self, addr: u64, out: &mut [std::mem::MaybeUninit<u8>]) {
        let s = self.check(addr, out.len());
        copy::advise_fresh(out.as_mut_ptr().cast::<u8>(), out.len());
        // SAFETY: the source is inside the region (checked); `out` is a live, exclusively
        // borrowed slice of the same length, and writing bytes into `MaybeUninit` is sound.
        unsafe { copy::copy(out.as_mut_ptr().cast::<u8>(), s as *const u8, out.len()) }
    }

    /// `[addr, addr+len)` (inside the region, checked) as a new vector, through
    /// [`Region::read_uninit`].
    pub(crate) fn to_vec(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len);
        self.read_uninit(addr, &mut v.spare_capacity_mut()[..len]);
        // SAFETY: `read_uninit` initialised all `len` bytes of the spare capacity.
        unsafe { v.set_len(len) };
        v
    }

    /// Copies `data` to `[addr, addr+len)`, which must lie inside the region (checked).
    pub(crate) fn write(&self, addr: u64, data: &[u8]) {
        let d = self.check(addr, data.len());
        // SAFETY: the destination is inside the region (checked); `data` is a live slice.
        unsafe { copy::copy(d as *mut u8, data.as_ptr(), data.len()) }
    }
}

#[cfg(test)]
mod liveness_tests {
    use super::Region;

    #[test]
    fn a_peer_file_is_mapped_only_from_dev_shm_regular_unlinked_and_of_the_published_size() {
        let base = format!("/dev/shm/mooncake-mapcheck-{}", std::process::id());
        let real = format!("{base}-real");
        let link = format!("{base}-link");
        let _ = std::fs::remove_file(&real);
        let _ = std::fs::remove_file(&link);
        let owner = Region::shared(std::path::Path::new(&real), 8192, false).unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(Region::map_peer(std::path::Path::new(&real), 8192).is_ok());
        let refused = |p: &str, len| Region::map_peer(std::path::Path::new(p), len).unwrap_err();
        assert_eq!(
            refused(&link, 8192).raw_os_error(),
            Some(libc::ELOOP),
            "a symlink"
        );
        assert_eq!(
            refused(&real, 4096).kind(),
            std::io::ErrorKind::InvalidData,
            "size"
        );
        let outside = std::env::temp_dir().join("mooncake-mapcheck-outside");
        std::fs::write(&outside, [0u8; 8192]).unwrap();
        let e = Region::map_peer(&outside, 8192).unwrap_err();
        assert!(
            e.to_string().contains("not a file directly in /dev/shm"),
            "{e}"
        );
        let e = refused("/dev/shm/../tmp/x", 8192);
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
        let _ = std::fs::remove_dir_all(format!("{base}-dir"));
        std::fs::create_dir(format!("{base}-dir")).unwrap();
        // A directory: refused (by `open` itself, before the regular-file check).
        assert!(Region::map_peer(std::path::Path::new(&format!("{base}-dir")), 8192).is_err());
        drop(owner);
        for p in [&real, &link] {
            let _ = std::fs::remove_file(p);
        }
        let _ = std::fs::remove_dir(format!("{base}-dir"));
        let _ = std::fs::remove_file(&outside);
    }

    #[test]
    fn a_peer_tells_a_live_owner_from_a_dead_one_by_its_lock() {
        let path =
            std::path::PathBuf::from(format!("/dev/shm/mooncake-liveness-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        // A durable-style owner (file kept when it goes), so the peer can still map it.
        let owner = Region::shared(&path, 4096, false).unwrap();
        let peer = Region::map_peer(&path, 4096).unwrap();
        assert!(peer.owner_alive());
        assert!(
            peer.owner_alive(),
            "probing does not take the owner's lock away"
        );
        assert!(!super::shm_owner_gone(&path));
        drop(owner);
        assert!(!peer.owner_alive(), "the lock went with its owner");
        assert!(super::shm_owner_gone(&path));
        // A restarted owner takes the file again, and is alive for the peer.
        let again = Region::attach(&path, 4096).unwrap();
        assert!(peer.owner_alive());
        drop(again);
        drop(peer);
        let _ = std::fs::remove_file(&path);
    }
}

#[cfg(test)]
mod unregister_tests;
