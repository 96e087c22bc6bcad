//! The engine: one [`TransferEngine`] per process, its shared state and lifecycle
//! (start, shutdown). Its jobs live in sibling files, one `impl TransferEngine` block each:
//!
//! - `buffer`: [`LocalBuffer`] and [`DirectRange`], the memory handles it hands out;
//! - `register`: allocating, attaching and registering memory, and unregistering it;
//! - `publish`: the descriptor and `rpc_meta` in the metadata service, and re-publishing;
//! - `peer`: opening peer segments and picking the transports that reach them;
//! - `transfer`: the transfer path (inline copies, then each peer's carrier, one retry);
//! - `lent`: transfers from or into memory lent for one call.

mod buffer;
mod lent;
mod peer;
mod publish;
mod register;
mod transfer;

pub use buffer::{DirectRange, LocalBuffer};
pub use lent::Holder;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use mooncake_metadata::{MetadataError, MetadataStore};
use parking_lot::{Mutex, RwLock};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::batch::BatchTable;
use crate::codec::Opcode;
use crate::handshake::{self, HandshakeState, Notification};
use crate::memory::Region;
use crate::peer_rpc::PeerDirectory;
use crate::registry::BufferRegistry;
use crate::tcp::{self, TcpClient, TcpClientConfig};
use crate::{EngineConfig, TransferError};

use peer::PeerSegment;

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

/// The engine's shared state, behind the `Arc` every clone of [`TransferEngine`] holds.
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
    /// Opened peer segments by handle, and their handles by name.
    segments: RwLock<HashMap<u64, Arc<PeerSegment>>>,
    names: Mutex<HashMap<String, SegmentHandle>>,
    next_segment: AtomicU64,
    /// The TCP client every peer's `TcpTransport` shares (connections pooled per address).
    tcp: Arc<TcpClient>,
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
            tcp: Arc::new(TcpClient::new(TcpClientConfig {
                connect_timeout: config.connect_timeout,
                io_timeout: config.io_timeout,
                lanes_per_peer: config.max_connections_per_peer.max(1),
                auth_token: config.auth_token.clone(),
            })),
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
            tasks.spawn(publish::republish_loop(
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

/// A listener on `host`, on a port the system picks.
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

/// The first address of `host:port`.
async fn lookup(host: &str, port: u16) -> Result<SocketAddr, String> {
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve host {host:?}: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("host {host:?} has no address"))
}
