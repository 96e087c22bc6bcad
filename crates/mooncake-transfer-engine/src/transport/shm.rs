//! [`ShmTransport`]: a same-host peer's shared-memory buffers, mapped into this process.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use super::Transport;
use crate::descriptor::SegmentDescriptor;
use crate::memory::Region;

/// The copy path to a same-host peer: its buffers backed by shared-memory files
/// (`shm_path` in its descriptor), mapped here, so requests are a `memcpy`.
///
/// Buffers that cannot be mapped (another mount namespace, no permission) are left to
/// the carrier, and so is a mapping whose file is gone or whose owner died.
#[derive(Debug)]
pub(crate) struct ShmTransport {
    /// The peer segment's name, for logs.
    segment: String,
    maps: RwLock<Vec<PeerShm>>,
}

/// A same-host peer's buffer, mapped into this process.
#[derive(Debug)]
struct PeerShm {
    /// The buffer's address in the peer.
    remote: u64,
    len: u64,
    region: Arc<Region>,
    /// The file and its inode when mapped: a peer that exits removes its file, and a
    /// mapping of a removed file must not keep serving (nor keep its memory alive).
    path: PathBuf,
    ino: u64,
}

fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

impl ShmTransport {
    /// Maps the shared-memory buffers that `desc` (the descriptor of `segment`, a peer on
    /// this host) lists; `None` when none could be mapped.
    pub(crate) fn map(segment: &str, desc: &SegmentDescriptor) -> Option<Self> {
        let maps: Vec<PeerShm> = desc
            .buffers
            .iter()
            .filter_map(|b| {
                let path = Path::new(b.shm_path.as_ref()?);
                let ino = inode(path)?;
                match Region::map_peer(path, b.length) {
                    Ok(region) => Some(PeerShm {
                        remote: b.addr,
                        len: b.length,
                        region: Arc::new(region),
                        path: path.to_path_buf(),
                        ino,
                    }),
                    Err(e) => {
                        tracing::debug!(segment = %desc.name, ?path, error = %e, "cannot map the peer's shared memory; using TCP");
                        None
                    }
                }
            })
            .collect();
        (!maps.is_empty()).then(|| Self {
            segment: segment.to_owned(),
            maps: RwLock::new(maps),
        })
    }
}

impl Transport for ShmTransport {
    fn name(&self) -> &'static str {
        "shm"
    }

    /// The mapped region and local address of `[remote, remote+len)`, if it lies inside a
    /// shared buffer of the peer whose file still exists. A mapping whose file is gone (the
    /// peer exited or unregistered the buffer) is dropped; the request then goes over TCP.
    ///
    /// A write also needs the peer alive (`write`): bytes copied into the memory of a
    /// peer that has died would be acknowledged and then lost with it, so such a write
    /// goes to TCP, where it fails and the writer places the object elsewhere.
    fn mapped(&self, remote: u64, len: u64, write: bool) -> Option<(Arc<Region>, u64)> {
        let end = remote.checked_add(len)?;
        let found = self
            .maps
            .read()
            .iter()
            .position(|m| remote >= m.remote && end <= m.remote + m.len)?;
        let mut maps = self.maps.write();
        let m = maps.get(found)?;
        if inode(&m.path) != Some(m.ino) {
            tracing::debug!(segment = %self.segment, path = ?m.path, "the peer's shared memory is gone; using TCP");
            maps.remove(found);
            return None;
        }
        if write && !m.region.owner_alive() {
            tracing::debug!(segment = %self.segment, path = ?m.path, "the peer holding this shared memory is dead; not writing into it");
            return None;
        }
        Some((m.region.clone(), m.region.addr() + (remote - m.remote)))
    }
}
