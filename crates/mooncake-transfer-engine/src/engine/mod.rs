//! The engine: registration, publication, segment handles and transfers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use mooncake_metadata::{MetadataError, MetadataStore};
use parking_lot::{Mutex, RwLock};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::batch::BatchTable;
use crate::codec::{Opcode, ProtoVersion};
use crate::descriptor::{timestamp, BufferDesc, RpcMeta, SegmentDescriptor};
use crate::handshake::{self, HandshakeState, Notification};
use crate::memory::{ForeignMemory, LentRegion, Region};
use crate::peer_rpc::PeerDirectory;
use crate::registry::BufferRegistry;
use crate::tcp::{self, TcpClient, TcpClientConfig};
use crate::{EngineConfig, TransferError};

pub(crate) type SharedRegistry = Arc<RwLock<BufferRegistry<Arc<Region>>>>;

/// A process-local handle of an opened segment; [`SegmentHandle::LOCAL`] is the engine's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentHandle(pub u64);

impl SegmentHandle {
    /// The engine's own segment (Mooncake's segment id 0).
    pub const LOCAL: SegmentHandle = SegmentHandle(0);
}

/// One transfer: `length` bytes between local address `source` (inside a registered
/// buffer) and `target_offset` (an absolute address in the target segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferRequest {
    /// READ copies remote -> local; WRITE copies local -> remote.
    pub opcode: Opcode,
    /// Local address; must lie inside one locally registered buffer.
    pub source: u64,
    /// Target segment.
    pub target: SegmentHandle,
    /// Absolute address in the target process.
    pub target_offset: u64,
    /// Bytes to move; 0 completes at once.
    pub length: u64,
}

/// A buffer the engine allocated and registered: pre-faulted anonymous memory.
///
/// The memory stays mapped while this handle (or a transfer using it) exists, even after
/// [`TransferEngine::unregister`].
#[derive(Debug, Clone)]
pub struct LocalBuffer {
    region: Arc<Region>,
}

impl LocalBuffer {
    /// Start address (what peers use as `target_offset`, and local `source`).
    pub fn addr(&self) -> u64 {
        self.region.addr()
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.region.len()
    }

    /// Whether the buffer is empty (never, for an allocated buffer).
    pub fn is_empty(&self) -> bool {
        self.region.is_empty()
    }

    /// Copies `data` into the buffer at `offset`. Panics if it does not fit.
    pub fn write_at(&self, offset: u64, data: &[u8]) {
        self.region.write(self.addr() + offset, data);
    }

    /// Copies bytes out of the buffer at `offset` into `out`. Panics if out of range.
    pub fn read_at(&self, offset: u64, out: &mut [u8]) {
        self.read_at_uninit(offset, crate::memory::as_uninit(out));
    }

    /// Like [`LocalBuffer::read_at`], into memory that may be uninitialised (a fresh
    /// allocation): large reads are split between threads, page faults included.
    pub fn read_at_uninit(&self, offset: u64, out: &mut [std::mem::MaybeUninit<u8>]) {
        self.region.read_uninit(self.addr() + offset, out);
    }

    /// The bytes at `offset..offset+len` as a new vector.
    pub fn to_vec(&self, offset: u64, len: usize) -> Vec<u8> {
        self.region.to_vec(self.addr() + offset, len)
    }
}

/// An opened peer segment.
#[derive(Debug)]
struct PeerSegment {
    name: String,
    route: RwLock<Route>,
    /// The peer's shared-memory buffers mapped here (same host only).
    shm: RwLock<Vec<PeerShm>>,
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
    path: std::path::PathBuf,
    ino: u64,
}

fn inode(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

impl PeerSegment {
    /// The mapped region and local address of `[remote, remote+len)`, if it lies inside a
    /// shared buffer of the peer whose file still exists. A mapping whose file is gone (the
    /// peer exited or unregistered the buffer) is dropped; the request then goes over TCP.
    ///
    /// A write also needs the peer alive (`write`): bytes copied into the memory of a
    /// peer that has died would be acknowledged and then lost with it, so such a write
    /// goes to TCP, where it fails and the writer places the object elsewhere.
    fn shm_target(&self, remote: u64, len: u64, write: bool) -> Option<(Arc<Region>, u64)> {
        let end = remote.checked_add(len)?;
        let found = self
            .shm
            .read()
            .iter()
            .position(|m| remote >= m.remote && end <= m.remote + m.len)?;
        let mut maps = self.shm.write();
        let m = maps.get(found)?;
        if inode(&m.path) != Some(m.ino) {
            tracing::debug!(segment = %self.name, path = ?m.path, "the peer's shared memory is gone; using TCP");
            maps.remove(found);
            return None;
        }
        if write && !m.region.owner_alive() {
            tracing::debug!(segment = %self.name, path = ?m.path, "the peer holding this shared memory is dead; not writing into it");
            return None;
        }
        Some((m.region.clone(), m.region.addr() + (remote - m.remote)))
    }
}

#[derive(Debug, Clone, Copy)]
struct Route {
    data: SocketAddr,
    version: ProtoVersion,
}

struct Inner {
    config: EngineConfig,
    metadata: Arc<dyn MetadataStore>,
    registry: SharedRegistry,
    data_addr: SocketAddr,
    rpc_addr: SocketAddr,
    handshake: Arc<HandshakeState>,
    /// `P2PHANDSHAKE` mode: peers' names carry their handshake address.
    p2p: bool,
    /// Handshake addresses of peers, resolved by name.
    peers: PeerDirectory,
    segments: RwLock<HashMap<u64, Arc<PeerSegment>>>,
    names: Mutex<HashMap<String, SegmentHandle>>,
    next_segment: AtomicU64,
    tcp: TcpClient,
    batches: BatchTable,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<JoinSet<()>>,
    publish_lock: tokio::sync::Mutex<()>,
    runtime: tokio::runtime::Handle,
    /// This host's kernel boot id (`/proc/sys/kernel/random/boot_id`), if readable.
    boot_id: Option<String>,
    /// Bytes moved by copies through peers' shared memory.
    shm_bytes: AtomicU64,
    /// Names of the shared-memory files this engine creates.
    next_shm: AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferEngine")
            .field("segment", &self.config.local_server_name)
            .field("data_addr", &self.data_addr)
            .field("rpc_addr", &self.rpc_addr)
            .finish_non_exhaustive()
    }
}

/// A range of memory an engine reaches with a copy (its own registered memory, or a
/// same-host peer's shared memory), found by [`TransferEngine::direct_range`]. It keeps the
/// mapping alive; its bytes are whatever the range holds when they are read.
#[derive(Debug)]
pub struct DirectRange {
    region: Option<Arc<Region>>,
    addr: u64,
    len: usize,
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

/// The transfer engine: one per process and segment name.
///
/// Cheap to clone (an `Arc`). Start it with [`TransferEngine::start`]; stop it with
/// [`TransferEngine::shutdown`], which removes its metadata entries.
#[derive(Debug, Clone)]
pub struct TransferEngine {
    inner: Arc<Inner>,
}

impl TransferEngine {
    /// Binds the data and handshake listeners, publishes `rpc_meta` and an empty
    /// descriptor, and starts the serving and re-publishing tasks.
    pub async fn start(
        config: EngineConfig,
        metadata: Arc<dyn MetadataStore>,
    ) -> Result<Self, TransferError> {
        Self::start_with(config, Some(metadata)).await
    }

    /// Starts in Mooncake's `P2PHANDSHAKE` mode: no central metadata store. The segment is
    /// renamed `<host>:<handshake port>` (as the C++ engine does), serves its own
    /// descriptor on the handshake port, and fetches peers' descriptors from the peers.
    pub async fn start_p2p(config: EngineConfig) -> Result<Self, TransferError> {
        Self::start_with(config, None).await
    }

    /// [`TransferEngine::start`] with a metadata connection string; `P2PHANDSHAKE` selects
    /// [`TransferEngine::start_p2p`].
    pub async fn start_uri(config: EngineConfig, metadata: &str) -> Result<Self, TransferError> {
        match mooncake_metadata::connect_with(metadata, config.auth_token.clone()) {
            Ok(m) => Self::start(config, m).await,
            Err(MetadataError::NoCentralStore { .. }) => Self::start_p2p(config).await,
            Err(e) => Err(e.into()),
        }
    }

    async fn start_with(
        mut config: EngineConfig,
        metadata: Option<Arc<dyn MetadataStore>>,
    ) -> Result<Self, TransferError> {
        if config.local_server_name.is_empty() {
            return Err(TransferError::InvalidArgument(
                "local_server_name is empty".into(),
            ));
        }
        let advertise = config.advertised_host();
        let bind_host = config
            .bind_host
            .clone()
            .unwrap_or_else(|| advertise.clone());
        let data_listener = bind(&bind_host).await?;
        let rpc_listener = bind(&bind_host).await?;
        let local = |l: &TcpListener| {
            l.local_addr().map_err(|source| TransferError::Io {
                peer: SocketAddr::from(([0, 0, 0, 0], 0)),
                what: "local_addr",
                source,
            })
        };
        let (data_addr, rpc_addr) = (local(&data_listener)?, local(&rpc_listener)?);
        let handshake = Arc::new(HandshakeState::new());
        let p2p = metadata.is_none();
        let metadata = match metadata {
            Some(m) => m,
            None => {
                config.advertise_host = Some(advertise.clone());
                config.local_server_name = if advertise.contains(':') {
                    format!("[{advertise}]:{}", rpc_addr.port())
                } else {
                    format!("{advertise}:{}", rpc_addr.port())
                };
                Arc::new(crate::p2p::P2pMetadata::new(
                    config.local_server_name.clone(),
                    handshake.clone(),
                ))
            }
        };
        let registry: SharedRegistry = Arc::default();
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            tcp: TcpClient::new(TcpClientConfig {
                connect_timeout: config.connect_timeout,
                io_timeout: config.io_timeout,
                lanes_per_peer: config.max_connections_per_peer.max(1),
                auth_token: config.auth_token.clone(),
                striped_loopback_reads: config.striped_loopback_reads,
            }),
            config,
            metadata,
            registry: registry.clone(),
            data_addr,
            rpc_addr,
            handshake,
            p2p,
            peers: PeerDirectory::default(),
            segments: RwLock::default(),
            names: Mutex::default(),
            next_segment: AtomicU64::new(1),
            batches: BatchTable::default(),
            shutdown,
            tasks: Mutex::new(JoinSet::new()),
            publish_lock: tokio::sync::Mutex::new(()),
            runtime: tokio::runtime::Handle::current(),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
            shm_bytes: AtomicU64::new(0),
            next_shm: AtomicU64::new(0),
        });
        let engine = Self { inner };
        engine.publish_rpc_meta().await?;
        engine.publish().await?;
        {
            let inner = &engine.inner;
            let mut tasks = inner.tasks.lock();
            tasks.spawn(tcp::serve(
                data_listener,
                registry,
                inner.shutdown.subscribe(),
                inner.config.max_inbound_connections,
                inner.config.auth_token.clone(),
            ));
            let mut stop = inner.shutdown.subscribe();
            let state = inner.handshake.clone();
            tasks.spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = handshake::serve(rpc_listener, state, stopped).await {
                    tracing::warn!(error = %e, "handshake daemon stopped");
                }
            });
            tasks.spawn(republish_loop(
                Arc::downgrade(&engine.inner),
                inner.shutdown.subscribe(),
            ));
        }
        tracing::info!(
            segment = %engine.inner.config.local_server_name, %data_addr, %rpc_addr,
            "transfer engine started"
        );
        Ok(engine)
    }

    /// The segment name.
    pub fn segment_name(&self) -> &str {
        &self.inner.config.local_server_name
    }

    /// Address of the TCP data listener.
    pub fn data_addr(&self) -> SocketAddr {
        self.inner.data_addr
    }

    /// Port of the handshake daemon (published in `rpc_meta`).
    pub fn rpc_port(&self) -> u16 {
        self.inner.rpc_addr.port()
    }

    /// The metadata store this engine publishes to.
    pub fn metadata(&self) -> &Arc<dyn MetadataStore> {
        &self.inner.metadata
    }

    /// Whether the engine runs in `P2PHANDSHAKE` mode (no central metadata store).
    pub fn is_p2p(&self) -> bool {
        self.inner.p2p
    }

    /// A number that identifies this engine in this process (the address of its shared
    /// state): what the C++ wheel's `get_engine_ptr()` returns, an opaque handle.
    pub fn instance_addr(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    pub(crate) fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub(crate) fn peers(&self) -> &PeerDirectory {
        &self.inner.peers
    }

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

    /// Bytes this engine moved by copying through same-host peers' shared memory.
    pub fn shm_bytes(&self) -> u64 {
        self.inner.shm_bytes.load(Ordering::Relaxed)
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
    /// in-flight transfer touching it, bounded by [`EngineConfig::unregister_timeout`]:
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

    /// The descriptor this engine publishes now.
    pub fn descriptor(&self) -> SegmentDescriptor {
        let name = &self.inner.config.local_server_name;
        let buffers = self
            .inner
            .registry
            .read()
            .iter_in_registration_order()
            .map(|e| BufferDesc {
                addr: e.addr,
                length: e.len,
                lkey: vec![],
                name: name.clone(),
                rkey: vec![],
                shm_path: e.value.shm_path().map(|p| p.display().to_string()),
            })
            .collect::<Vec<_>>();
        let shm_boot_id = buffers
            .iter()
            .any(|b| b.shm_path.is_some())
            .then(|| self.inner.boot_id.clone())
            .flatten();
        SegmentDescriptor {
            buffers,
            devices: vec![],
            name: name.clone(),
            priority_matrix: None,
            protocol: "tcp".into(),
            rdma_server_name: String::new(),
            shm_boot_id,
            tcp_data_host: Some(self.inner.config.advertised_host()),
            tcp_data_port: self.inner.data_addr.port(),
            tcp_proto_version: 2,
            timestamp: timestamp(SystemTime::now()),
        }
    }

    fn rpc_meta(&self) -> RpcMeta {
        RpcMeta {
            ip_or_host_name: self.inner.config.advertised_host(),
            rpc_port: self.rpc_port(),
        }
    }

    /// Publishes `rpc_meta`. A Mooncake metadata server refuses to replace an existing
    /// `rpc_meta` (HTTP 400), which makes an engine restarted after a crash unable to start
    /// under its old name. If the old owner no longer answers probes, its stale entry is
    /// removed and ours written; a live owner is reported as a name clash.
    async fn publish_rpc_meta(&self) -> Result<(), TransferError> {
        let key = self.inner.config.key_space.rpc_meta(self.segment_name());
        let value = Bytes::from(self.rpc_meta().to_json());
        let err = match self.inner.metadata.put(&key, value.clone()).await {
            Ok(()) => return Ok(()),
            Err(e @ MetadataError::Status { status: 400, .. }) => e,
            Err(e) => return Err(e.into()),
        };
        let old = self.inner.metadata.get(&key).await?;
        let old = old.and_then(|b| RpcMeta::from_json(self.segment_name(), &b).ok());
        if let Some(old) = old {
            let alive = match lookup(&old.ip_or_host_name, old.rpc_port).await {
                Ok(addr) => handshake::probe(addr, Duration::from_secs(1)).await.is_ok(),
                Err(_) => false,
            };
            if alive {
                return Err(TransferError::InvalidArgument(format!(
                    "segment name {:?} is in use by a live engine at {}:{} ({err})",
                    self.segment_name(),
                    old.ip_or_host_name,
                    old.rpc_port
                )));
            }
            tracing::warn!(segment = %self.segment_name(), "replacing the stale rpc_meta of a dead engine");
        }
        self.inner.metadata.delete(&key).await?;
        self.inner.metadata.put(&key, value).await?;
        Ok(())
    }

    /// Publishes the current descriptor (whole document, as Mooncake does).
    pub async fn publish(&self) -> Result<(), TransferError> {
        let _serial = self.inner.publish_lock.lock().await;
        let key = self.inner.config.key_space.segment(self.segment_name());
        self.inner
            .metadata
            .put(&key, Bytes::from(self.descriptor().to_json()))
            .await?;
        Ok(())
    }

    /// Re-publishes whatever is missing or stale in the metadata service.
    pub async fn republish_if_missing(&self) -> Result<bool, TransferError> {
        let ks = &self.inner.config.key_space;
        let mut repaired = false;
        let rpc_key = ks.rpc_meta(self.segment_name());
        if self.inner.metadata.get(&rpc_key).await?.is_none() {
            self.publish_rpc_meta().await?;
            repaired = true;
        }
        let key = ks.segment(self.segment_name());
        let current = self.inner.metadata.get(&key).await?;
        let ours = self.descriptor();
        let stale = match current {
            None => true,
            Some(bytes) => SegmentDescriptor::from_json(self.segment_name(), &bytes)
                .map(|d| d.buffers != ours.buffers || d.tcp_data_port != ours.tcp_data_port)
                .unwrap_or(true),
        };
        if stale {
            self.publish().await?;
            repaired = true;
        }
        Ok(repaired)
    }

    /// Opens a peer segment by name: fetches and validates its descriptor, caches it.
    /// A leading `/` is stripped. Opening the same name twice returns the same handle.
    pub async fn open_segment(&self, name: &str) -> Result<SegmentHandle, TransferError> {
        let name = name.strip_prefix('/').unwrap_or(name);
        if name.is_empty() {
            return Err(TransferError::InvalidArgument(
                "segment name is empty".into(),
            ));
        }
        if name == self.segment_name() {
            return Ok(SegmentHandle::LOCAL);
        }
        if let Some(h) = self.inner.names.lock().get(name) {
            return Ok(*h);
        }
        let (route, desc) = self.resolve(name).await?;
        let shm = self.map_shm(&desc);
        let mut names = self.inner.names.lock();
        if let Some(h) = names.get(name) {
            return Ok(*h);
        }
        let handle = SegmentHandle(self.inner.next_segment.fetch_add(1, Ordering::Relaxed));
        let seg = Arc::new(PeerSegment {
            name: name.to_owned(),
            route: RwLock::new(route),
            shm: RwLock::new(shm),
        });
        self.inner.segments.write().insert(handle.0, seg);
        names.insert(name.to_owned(), handle);
        Ok(handle)
    }

    /// Fetches and validates the current descriptor of a segment by name.
    pub async fn fetch_descriptor(&self, name: &str) -> Result<SegmentDescriptor, TransferError> {
        let name = name.strip_prefix('/').unwrap_or(name);
        let key = self.inner.config.key_space.segment(name);
        let bytes = self
            .inner
            .metadata
            .get(&key)
            .await?
            .ok_or_else(|| TransferError::SegmentNotFound(name.to_owned()))?;
        SegmentDescriptor::from_json(name, &bytes)
    }

    /// Maps the shared-memory buffers of a same-host peer (same boot id); buffers that
    /// cannot be mapped (another mount namespace, no permission) are reached over TCP.
    fn map_shm(&self, desc: &SegmentDescriptor) -> Vec<PeerShm> {
        let same_host = self.inner.config.shared_memory
            && self.inner.boot_id.is_some()
            && desc.shm_boot_id == self.inner.boot_id;
        if !same_host {
            return Vec::new();
        }
        desc.buffers
            .iter()
            .filter_map(|b| {
                let path = std::path::Path::new(b.shm_path.as_ref()?);
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
            .collect()
    }

    /// Fetches a segment's descriptor and works out where to send data.
    async fn resolve(&self, name: &str) -> Result<(Route, SegmentDescriptor), TransferError> {
        let ks = &self.inner.config.key_space;
        let desc = self.fetch_descriptor(name).await?;
        if desc.protocol != "tcp" {
            return Err(TransferError::NotSupportedTransport {
                segment: name.to_owned(),
                protocol: desc.protocol,
            });
        }
        let host = match desc.tcp_data_host.clone().filter(|h| !h.is_empty()) {
            Some(h) => h,
            None => {
                let meta = self
                    .inner
                    .metadata
                    .get(&ks.rpc_meta(name))
                    .await?
                    .ok_or_else(|| TransferError::SegmentNotFound(format!("{name} (rpc_meta)")))?;
                RpcMeta::from_json(name, &meta)?.ip_or_host_name
            }
        };
        let data = lookup(&host, desc.tcp_data_port).await.map_err(|reason| {
            TransferError::InvalidDescriptor {
                segment: name.to_owned(),
                reason,
            }
        })?;
        let version = if desc.tcp_proto_version >= 2
            && self.inner.config.max_proto_version == ProtoVersion::V2
        {
            ProtoVersion::V2
        } else {
            ProtoVersion::V1
        };
        Ok((Route { data, version }, desc))
    }

    /// Moves every request; returns the first failure (all requests are attempted).
    pub async fn transfer(&self, requests: &[TransferRequest]) -> Result<(), TransferError> {
        match requests {
            [] => Ok(()),
            [one] => self.transfer_one(*one).await,
            many => self
                .transfer_each(many)
                .await
                .into_iter()
                .find(Result::is_err)
                .unwrap_or(Ok(())),
        }
    }

    /// Moves every request and reports each one's outcome, in order. Requests that are
    /// copies (local, or a same-host peer's shared memory) run inline; the others go over
    /// the network, all requests to one peer together (sharing connections and vectored writes) and
    /// the peers concurrently.
    pub async fn transfer_each(
        &self,
        requests: &[TransferRequest],
    ) -> Vec<Result<(), TransferError>> {
        let mut out: Vec<Option<Result<(), TransferError>>> =
            requests.iter().map(|_| None).collect();
        let mut groups: Vec<(u64, Vec<usize>)> = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            match self.try_inline(*r) {
                Some(done) => out[i] = Some(done),
                None => match groups.iter_mut().find(|g| g.0 == r.target.0) {
                    Some(g) => g.1.push(i),
                    None => groups.push((r.target.0, vec![i])),
                },
            }
        }
        let pick = |idx: &[usize]| idx.iter().map(|&i| requests[i]).collect::<Vec<_>>();
        if let [(_, idx)] = groups.as_slice() {
            // One peer (the common case): no task to spawn.
            for (&i, r) in idx.iter().zip(self.transfer_group(&pick(idx)).await) {
                out[i] = Some(r);
            }
        } else {
            let mut set = JoinSet::new();
            for (_, idx) in groups {
                let (engine, reqs) = (self.clone(), pick(&idx));
                set.spawn(async move { (idx, engine.transfer_group(&reqs).await) });
            }
            while let Some(joined) = set.join_next().await {
                if let Ok((idx, results)) = joined {
                    for (i, r) in idx.into_iter().zip(results) {
                        out[i] = Some(r);
                    }
                }
            }
        }
        out.into_iter()
            .map(|o| o.unwrap_or(Err(TransferError::Shutdown)))
            .collect()
    }

    /// Copies `data` straight to `[target_offset, +len)` of `target` when this engine
    /// reaches that range without the network (its own registered memory, or a same-host
    /// peer's shared memory); `Ok(false)` when it needs a transfer. Saves staging the bytes
    /// in registered memory first.
    pub fn write_direct(
        &self,
        target: SegmentHandle,
        target_offset: u64,
        data: &[u8],
    ) -> Result<bool, TransferError> {
        if data.is_empty() {
            return Ok(true);
        }
        let Some((region, at)) = self.direct(target, target_offset, data.len() as u64, true)?
        else {
            return Ok(false);
        };
        region.write(at, data);
        Ok(true)
    }

    /// Writes each `(target_offset, bytes)` of `items` (ordinary memory) to `target` over a
    /// connection this call drives itself, without staging the bytes in registered memory
    /// first; all or nothing. `false`: not done, nothing to report (the target is
    /// reached with a copy, speaks the old framing, or the exchange failed): write from
    /// registered memory instead, which also reports errors and retries.
    pub async fn write_lent(&self, target: SegmentHandle, items: &[(u64, &[u8])]) -> bool {
        let lent: Vec<LentRegion<'_>> = items.iter().map(|(_, p)| LentRegion::shared(p)).collect();
        let pieces: Vec<_> = items
            .iter()
            .zip(&lent)
            .map(|((at, p), l)| (l.region().clone(), p.as_ptr() as u64, *at, p.len() as u64))
            .collect();
        self.exchange_lent(target, Opcode::Write, pieces).await
    }

    /// Reads `[target_offset, +out.len())` of `target` into `out` (ordinary memory) over a
    /// connection this call drives itself. `false`: not done (as [`Self::write_lent`]);
    /// `out` may hold part of the bytes.
    pub async fn read_lent(
        &self,
        target: SegmentHandle,
        target_offset: u64,
        out: &mut [u8],
    ) -> bool {
        let (addr, len) = (out.as_ptr() as u64, out.len() as u64);
        let lent = LentRegion::exclusive(out);
        let pieces = vec![(lent.region().clone(), addr, target_offset, len)];
        self.exchange_lent(target, Opcode::Read, pieces).await
    }

    /// [`Self::read_lent`] into memory not yet initialised (a new Python `bytes`, say):
    /// `true` means all of `out` was written.
    pub async fn read_lent_uninit(
        &self,
        target: SegmentHandle,
        target_offset: u64,
        out: &mut [std::mem::MaybeUninit<u8>],
    ) -> bool {
        let (addr, len) = (out.as_ptr() as u64, out.len() as u64);
        let lent = LentRegion::uninit(out);
        let pieces = vec![(lent.region().clone(), addr, target_offset, len)];
        self.exchange_lent(target, Opcode::Read, pieces).await
    }

    /// [`Self::read_lent_uninit`] of several ranges of one `target` in one exchange: each
    /// `(target_offset, out)` of `items`. `true` means every `out` was written in full;
    /// `false`, that nothing is known of any of them.
    pub async fn read_lent_uninit_many(
        &self,
        target: SegmentHandle,
        items: &mut [(u64, &mut [std::mem::MaybeUninit<u8>])],
    ) -> bool {
        let mut lent = Vec::with_capacity(items.len());
        let mut places = Vec::with_capacity(items.len());
        for (at, out) in items.iter_mut() {
            places.push((out.as_ptr() as u64, *at, out.len() as u64));
            lent.push(LentRegion::uninit(out));
        }
        let pieces = lent
            .iter()
            .zip(places)
            .map(|(l, (addr, at, len))| (l.region().clone(), addr, at, len))
            .collect();
        self.exchange_lent(target, Opcode::Read, pieces).await
    }

    /// Runs `(region, local, remote, len)` pieces to one network peer, sliced, on the
    /// caller's own connection; whether all completed. The region clones are gone when it
    /// returns.
    async fn exchange_lent(
        &self,
        target: SegmentHandle,
        opcode: Opcode,
        pieces: Vec<(Arc<Region>, u64, u64, u64)>,
    ) -> bool {
        if pieces.iter().all(|p| p.3 == 0) || target == SegmentHandle::LOCAL {
            return pieces.iter().all(|p| p.3 == 0);
        }
        let seg = self.inner.segments.read().get(&target.0).cloned();
        let Some(seg) = seg else { return false };
        if pieces
            .iter()
            .any(|p| seg.shm_target(p.2, p.3, opcode == Opcode::Write).is_some())
        {
            return false;
        }
        let route = *seg.route.read();
        let mut ops = Vec::new();
        for (region, local, remote, len) in pieces {
            let r = TransferRequest {
                opcode,
                source: local,
                target,
                target_offset: remote,
                length: len,
            };
            ops.extend(self.slices(route, &r).map(|op| (op, region.clone())));
        }
        let done = self.inner.tcp.exchange_only(&ops).await;
        drop(ops);
        done.is_some_and(|results| results.iter().all(Result::is_ok))
    }

    /// `[target_offset, +len)` of `target`, if this engine reaches it without the network,
    /// to be copied out by the caller ([`DirectRange::read_into_uninit`]), straight into
    /// memory it allocates once it knows the size (a Python `bytes`, say).
    pub fn direct_range(
        &self,
        target: SegmentHandle,
        target_offset: u64,
        len: usize,
    ) -> Result<Option<DirectRange>, TransferError> {
        if len == 0 {
            return Ok(Some(DirectRange {
                region: None,
                addr: 0,
                len: 0,
            }));
        }
        let found = self.direct(target, target_offset, len as u64, false)?;
        Ok(found.map(|(region, addr)| DirectRange {
            region: Some(region),
            addr,
            len,
        }))
    }

    /// The mapped region and local address of `[offset, +len)` of `target`, if this engine
    /// reaches it with a copy: its own registered memory, or a same-host peer's shared
    /// memory (counted in [`TransferEngine::shm_bytes`]).
    fn direct(
        &self,
        target: SegmentHandle,
        offset: u64,
        len: u64,
        write: bool,
    ) -> Result<Option<(Arc<Region>, u64)>, TransferError> {
        if target == SegmentHandle::LOCAL {
            return Ok(Some((self.registered(offset, len)?, offset)));
        }
        let Some(seg) = self.inner.segments.read().get(&target.0).cloned() else {
            return Ok(None);
        };
        let found = seg.shm_target(offset, len, write);
        if found.is_some() {
            self.inner.shm_bytes.fetch_add(len, Ordering::Relaxed);
        }
        Ok(found)
    }

    /// The outcome of `r` if it is a copy that needs no network (`None` otherwise).
    fn try_inline(&self, r: TransferRequest) -> Option<Result<(), TransferError>> {
        if r.length == 0 {
            return Some(Ok(()));
        }
        if *self.inner.shutdown.borrow() {
            return Some(Err(TransferError::Shutdown));
        }
        let local = match self.registered(r.source, r.length) {
            Ok(l) => l,
            Err(e) => return Some(Err(e)),
        };
        if r.target == SegmentHandle::LOCAL {
            return Some(self.local_copy(&local, r));
        }
        let seg = self.inner.segments.read().get(&r.target.0).cloned()?;
        self.try_shm(&seg, &local, r)
    }

    /// Moves one request, slicing it over several connections when it is large.
    pub(crate) async fn transfer_one(&self, r: TransferRequest) -> Result<(), TransferError> {
        self.transfer_each(&[r])
            .await
            .pop()
            .unwrap_or(Err(TransferError::Shutdown))
    }

    /// Moves network requests that all target one peer segment: sliced, then handed to
    /// the TCP initiator together, so that they share connections, vectored writes and
    /// answer reads instead of each paying its own round of wake-ups. Requests that fail
    /// because the peer broke or refused get one retry after the segment is resolved
    /// again (it may have restarted elsewhere or re-registered).
    async fn transfer_group(&self, requests: &[TransferRequest]) -> Vec<Result<(), TransferError>> {
        let Some(handle) = requests.first().map(|r| r.target) else {
            return Vec::new();
        };
        let seg = self.inner.segments.read().get(&handle.0).cloned();
        let Some(seg) = seg else {
            let unknown =
                || TransferError::InvalidArgument(format!("unknown segment handle {}", handle.0));
            return requests.iter().map(|_| Err(unknown())).collect();
        };
        let mut out: Vec<Result<(), TransferError>> = Vec::with_capacity(requests.len());
        let mut locals = Vec::with_capacity(requests.len());
        for r in requests {
            match self.registered(r.source, r.length) {
                Ok(local) => {
                    locals.push(Some(local));
                    out.push(Ok(()));
                }
                Err(e) => {
                    locals.push(None);
                    out.push(Err(e));
                }
            }
        }
        let route = *seg.route.read();
        let mut ops = Vec::new();
        let mut owner = Vec::new();
        for (i, (r, local)) in requests.iter().zip(&locals).enumerate() {
            if let Some(local) = local {
                for op in self.slices(route, r) {
                    ops.push((op, local.clone()));
                    owner.push(i);
                }
            }
        }
        for (i, result) in owner
            .into_iter()
            .zip(self.inner.tcp.execute_many(ops).await)
        {
            if let (Err(e), true) = (result, out[i].is_ok()) {
                out[i] = Err(e);
            }
        }
        let recoverable = |r: &Result<(), TransferError>| {
            matches!(
                r,
                Err(TransferError::Io { .. } | TransferError::Rejected { .. })
            )
        };
        if !out.iter().any(recoverable) {
            return out;
        }
        // The peer may have restarted on another port or re-registered: refresh once and
        // retry each such request once.
        self.inner.tcp.forget(route.data);
        let Ok((new_route, desc)) = self.resolve(&seg.name).await else {
            return out;
        };
        *seg.shm.write() = self.map_shm(&desc);
        for (i, r) in requests.iter().enumerate() {
            if !recoverable(&out[i]) {
                continue;
            }
            let Some(local) = &locals[i] else { continue };
            let err = std::mem::replace(&mut out[i], Ok(()));
            let Err(err) = err else { continue };
            out[i] = self
                .retry_moved(&seg, local, *r, err, route, new_route)
                .await;
        }
        out
    }

    /// After a failure, retries once if the peer's data address moved (or it rejected the
    /// request and has since moved).
    async fn retry_moved(
        &self,
        seg: &PeerSegment,
        local: &Arc<Region>,
        r: TransferRequest,
        err: TransferError,
        old: Route,
        route: Route,
    ) -> Result<(), TransferError> {
        let rejected = matches!(err, TransferError::Rejected { .. });
        if route.data == old.data && !rejected {
            return Err(err);
        }
        *seg.route.write() = route;
        if let Some(done) = self.try_shm(seg, local, r) {
            return done;
        }
        if route.data == old.data {
            return Err(err);
        }
        tracing::info!(segment = %seg.name, from = %old.data, to = %route.data, "segment moved; retrying");
        self.run_slices(seg, local, r).await
    }

    /// Serves `r` by copying through the peer's shared memory, if the target lies there.
    fn try_shm(
        &self,
        seg: &PeerSegment,
        local: &Region,
        r: TransferRequest,
    ) -> Option<Result<(), TransferError>> {
        let write = r.opcode == Opcode::Write;
        let (region, at) = seg.shm_target(r.target_offset, r.length, write)?;
        let Ok(len) = usize::try_from(r.length) else {
            return Some(Err(TransferError::InvalidArgument(
                "length exceeds usize".into(),
            )));
        };
        match r.opcode {
            Opcode::Read => local.copy_from(r.source, &region, at, len),
            Opcode::Write => region.copy_from(at, local, r.source, len),
        }
        self.inner.shm_bytes.fetch_add(r.length, Ordering::Relaxed);
        Some(Ok(()))
    }

    async fn run_slices(
        &self,
        seg: &PeerSegment,
        local: &Arc<Region>,
        r: TransferRequest,
    ) -> Result<(), TransferError> {
        let route = *seg.route.read();
        let ops = self
            .slices(route, &r)
            .map(|op| (op, local.clone()))
            .collect();
        self.inner
            .tcp
            .execute_many(ops)
            .await
            .into_iter()
            .find(Result::is_err)
            .unwrap_or(Ok(()))
    }

    /// The wire requests of `r`: slices of at most `slice_size` bytes, so that a large
    /// request spreads over several connections.
    fn slices(&self, route: Route, r: &TransferRequest) -> impl Iterator<Item = tcp::WireOp> {
        let slice = self.inner.config.slice_size.max(1);
        let r = *r;
        (0..r.length.div_ceil(slice)).map(move |k| {
            let offset = k * slice;
            tcp::WireOp {
                peer: route.data,
                version: route.version,
                opcode: r.opcode,
                local_addr: r.source + offset,
                remote_addr: r.target_offset.wrapping_add(offset),
                len: slice.min(r.length - offset),
            }
        })
    }

    /// The registered region wholly containing `[addr, addr+len)`.
    fn registered(&self, addr: u64, len: u64) -> Result<Arc<Region>, TransferError> {
        self.inner
            .registry
            .read()
            .find(addr, len)
            .map(|e| e.value.clone())
            .ok_or(TransferError::AddressNotRegistered { addr, len })
    }

    fn local_copy(&self, local: &Region, r: TransferRequest) -> Result<(), TransferError> {
        let remote = self.registered(r.target_offset, r.length)?;
        let len = usize::try_from(r.length)
            .map_err(|_| TransferError::InvalidArgument("length exceeds usize".into()))?;
        match r.opcode {
            Opcode::Read => local.copy_from(r.source, &remote, r.target_offset, len),
            Opcode::Write => remote.copy_from(r.target_offset, local, r.source, len),
        }
        Ok(())
    }

    /// Drains the notifications received on the handshake port.
    pub fn drain_notifications(&self) -> Vec<Notification> {
        self.inner.handshake.drain_notifications()
    }

    pub(crate) fn batches(&self) -> &BatchTable {
        &self.inner.batches
    }

    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.inner.runtime
    }

    /// Stops serving, removes `rpc_meta` then the descriptor from the metadata service
    /// (the order the C++ engine uses), and waits for the engine's tasks.
    pub async fn shutdown(&self) -> Result<(), TransferError> {
        if self.inner.shutdown.send_replace(true) {
            return Ok(());
        }
        let mut tasks = std::mem::take(&mut *self.inner.tasks.lock());
        while tasks.join_next().await.is_some() {}
        let ks = &self.inner.config.key_space;
        self.inner
            .metadata
            .delete(&ks.rpc_meta(self.segment_name()))
            .await?;
        self.inner
            .metadata
            .delete(&ks.segment(self.segment_name()))
            .await?;
        tracing::info!(segment = %self.segment_name(), "transfer engine stopped");
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        self.tasks.get_mut().abort_all();
    }
}

async fn bind(host: &str) -> Result<TcpListener, TransferError> {
    let addr = lookup(host, 0)
        .await
        .map_err(TransferError::InvalidArgument)?;
    TcpListener::bind(addr)
        .await
        .map_err(|source| TransferError::Io {
            peer: addr,
            what: "bind",
            source,
        })
}

async fn lookup(host: &str, port: u16) -> Result<SocketAddr, String> {
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve host {host:?}: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("host {host:?} has no address"))
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

async fn republish_loop(engine: std::sync::Weak<Inner>, mut stop: watch::Receiver<bool>) {
    loop {
        let interval = match engine.upgrade() {
            Some(inner) => inner.config.republish_interval,
            None => return,
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(inner) = engine.upgrade() else {
            return;
        };
        let engine_ref = TransferEngine { inner };
        match engine_ref.republish_if_missing().await {
            Ok(true) => {
                tracing::info!(segment = %engine_ref.segment_name(), "re-published missing metadata")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "metadata check failed"),
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
