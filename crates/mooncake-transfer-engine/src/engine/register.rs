//! Registration: memory the engine allocates (anonymous or shared-memory files) or is
//! given, registered so that peers can reach it, and unregistered again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{LocalBuffer, TransferEngine};
use crate::memory::{ForeignMemory, Region};
use crate::TransferError;

impl TransferEngine {
    /// Allocates `len` bytes of pre-faulted memory, registers it under `location` and
    /// publishes the new descriptor.
    pub async fn allocate_buffer(
        &self,
        len: u64,
        location: &str,
    ) -> Result<LocalBuffer, TransferError> {
        let (buffer, ()) = self
            .allocate_with(len, location, "mmap", move || {
                Region::anonymous(len).map(|r| (r, ()))
            })
            .await?;
        Ok(buffer)
    }

    /// Checks `len`, builds a region off the async threads (mapping and pre-faulting large
    /// buffers takes a while), registers and publishes it.
    async fn allocate_with<T: Send + 'static>(
        &self,
        len: u64,
        location: &str,
        what: &'static str,
        make: impl FnOnce() -> std::io::Result<(Region, T)> + Send + 'static,
    ) -> Result<(LocalBuffer, T), TransferError> {
        if len == 0 {
            return Err(TransferError::InvalidArgument(
                "cannot allocate a zero-length buffer".into(),
            ));
        }
        let (region, extra) = tokio::task::spawn_blocking(make)
            .await
            .map_err(|e| TransferError::InvalidArgument(format!("allocation task failed: {e}")))?
            .map_err(|source| TransferError::Io {
                peer: self.inner.data_addr,
                what,
                source,
            })?;
        let region = Arc::new(region);
        self.insert(region.clone(), location).await?;
        Ok((LocalBuffer { region }, extra))
    }

    /// Like [`TransferEngine::allocate_buffer`], backed by a new shared-memory file in
    /// `/dev/shm` (mode 0600, removed when the buffer goes). Same-host peers map it and copy
    /// with `memcpy` instead of using TCP; other peers still use TCP. All `len` bytes are
    /// reserved up front: a full `/dev/shm` is an error here.
    pub async fn allocate_shared_buffer(
        &self,
        len: u64,
        location: &str,
    ) -> Result<LocalBuffer, TransferError> {
        let n = self.inner.next_shm.fetch_add(1, Ordering::Relaxed);
        if n == 0 {
            reap_stale_shm_files();
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::path::PathBuf::from(format!(
            "/dev/shm/mooncake-{}-{n}-{nanos:x}",
            std::process::id()
        ));
        let (buffer, ()) = self
            .allocate_with(len, location, "shared memory", move || {
                Region::shared(&path, len, true).map(|r| (r, ()))
            })
            .await?;
        Ok(buffer)
    }

    /// A buffer backed by the named shared-memory file `path` that outlives this process (a
    /// durable segment): created with all `len` bytes reserved if it does not exist,
    /// re-attached (its contents kept) if it does and has exactly `len` bytes. Returns the
    /// buffer and whether it was re-attached. The file is never removed by the engine.
    pub async fn attach_shared_buffer(
        &self,
        path: &std::path::Path,
        len: u64,
        location: &str,
    ) -> Result<(LocalBuffer, bool), TransferError> {
        let path = path.to_path_buf();
        self.allocate_with(len, location, "shared memory", move || {
            if path.exists() {
                Region::attach(&path, len).map(|r| (r, true))
            } else {
                Region::shared(&path, len, false).map(|r| (r, false))
            }
        })
        .await
    }

    /// Maps another local process's shared-memory file (e.g. a standalone client's pool)
    /// and registers it, so transfers can read and write it directly. Unregister it (then
    /// drop the buffer) when that process goes.
    pub async fn register_shared_file(
        &self,
        path: &std::path::Path,
        len: u64,
        location: &str,
    ) -> Result<LocalBuffer, TransferError> {
        let region = Region::map_peer(path, len).map_err(|source| TransferError::Io {
            peer: self.inner.data_addr,
            what: "shared memory",
            source,
        })?;
        let region = Arc::new(region);
        self.insert(region.clone(), location).await?;
        Ok(LocalBuffer { region })
    }

    /// Registers caller-owned memory so peers can read and write it, and publishes it.
    /// `location` is Mooncake's tag (`"cpu:0"`, `"*"`); TCP ignores it.
    pub async fn register_memory(
        &self,
        memory: ForeignMemory,
        location: &str,
    ) -> Result<(), TransferError> {
        if memory.addr() == 0 || memory.is_empty() {
            return Err(TransferError::InvalidArgument(
                "cannot register a null or empty range".into(),
            ));
        }
        self.insert(Arc::new(Region::borrowed(memory)), location)
            .await
    }

    /// Registers `region` under `location` and publishes the new descriptor.
    async fn insert(&self, region: Arc<Region>, location: &str) -> Result<(), TransferError> {
        let (addr, len) = (region.addr(), region.len());
        self.inner
            .registry
            .write()
            .insert(addr, len, location, region)?;
        self.publish().await
    }

    /// Unregisters the buffer starting at `addr`, publishes the new descriptor, and waits
    /// until no transfer uses it any more.
    ///
    /// Caller-owned memory may be freed once this returns `Ok`, so the wait is for every
    /// in-flight transfer touching it, bounded by [`EngineConfig::unregister_timeout`](crate::EngineConfig::unregister_timeout):
    /// past it the buffer is registered again and [`TransferError::BufferBusy`] says so
    /// (the memory must not be freed yet; try again later).
    pub async fn unregister(&self, addr: u64) -> Result<(), TransferError> {
        let entry = self.inner.registry.write().remove(addr);
        let Some(entry) = entry else {
            return Err(TransferError::AddressNotRegistered { addr, len: 0 });
        };
        let published = self.publish().await;
        let region = entry.value;
        let timeout = self.inner.config.unregister_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        while Arc::strong_count(&region) > 1 && region.is_borrowed() {
            if tokio::time::Instant::now() >= deadline {
                let in_flight = Arc::strong_count(&region) - 1;
                self.insert(region, &entry.location).await?;
                return Err(TransferError::BufferBusy {
                    addr,
                    in_flight,
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        published
    }

    /// CRC-32C of registered local memory `[addr, addr+len)`, continuing from `crc` (0 for a
    /// fresh checksum; chain calls over the parts of a value), read in place. `None` when
    /// the range is not inside one registered buffer.
    pub fn crc32c_append(&self, crc: u32, addr: u64, len: u64) -> Option<u32> {
        let region = self.inner.registry.read().find(addr, len)?.value.clone();
        let len = usize::try_from(len).ok()?;
        Some(crc32c::crc32c_append(crc, region.slice(addr, len)))
    }

    /// The bytes from `addr` to the end of the registered buffer containing it, or `None`
    /// when `addr` lies in no registered buffer.
    pub fn registered_capacity(&self, addr: u64) -> Option<u64> {
        let registry = self.inner.registry.read();
        registry.find(addr, 1).map(|e| e.addr + e.len - addr)
    }

    /// The registered region wholly containing `[addr, addr+len)`.
    pub(super) fn registered(&self, addr: u64, len: u64) -> Result<Arc<Region>, TransferError> {
        self.inner
            .registry
            .read()
            .find(addr, len)
            .map(|e| e.value.clone())
            .ok_or(TransferError::AddressNotRegistered { addr, len })
    }
}

/// Removes `/dev/shm/mooncake-<pid>-*` files whose process is gone (a crashed engine
/// cannot remove its own). Files of live processes, and anything else, are left alone.
fn reap_stale_shm_files() {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("mooncake-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        // Its owner must be provably dead: the owner's `flock` is gone (right across PID
        // namespaces) and, for files of engines that predate the lock, no process of that
        // PID is visible here either.
        let pid_gone = !std::path::Path::new(&format!("/proc/{pid}")).exists();
        if pid_gone && crate::memory::shm_owner_gone(&entry.path()) {
            tracing::info!(file = ?entry.path(), "removing the shared memory of a dead engine");
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod reaper_tests {
    use crate::memory::Region;

    #[test]
    fn a_file_whose_owner_holds_its_lock_is_never_reaped_even_if_its_pid_is_not_visible() {
        // A PID no process here has: as for an engine in another PID namespace.
        let name = |tag: &str| format!("/dev/shm/mooncake-4000000000-{tag}-{}", std::process::id());
        let (held, dead) = (name("held"), name("dead"));
        let _ = std::fs::remove_file(&held);
        // A live owner: the region holds the file's lock (and keeps the file when dropped).
        let owner = Region::shared(std::path::Path::new(&held), 4096, false).unwrap();
        std::fs::File::create(&dead).unwrap();
        super::reap_stale_shm_files();
        assert!(std::path::Path::new(&held).exists(), "its owner is alive");
        assert!(!std::path::Path::new(&dead).exists(), "nobody holds it");
        drop(owner);
        let _ = std::fs::remove_file(&held);
    }
}
