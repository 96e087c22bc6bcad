//! `Client`: the store API users call (Mooncake's `MooncakeDistributedStore` in Rust).
//!
//! Control goes to the master (`Arc<dyn MasterApi>`); value bytes go straight between the
//! caller's memory (or the staging buffer) and the contributors' segments through the
//! transfer engine. A client with `global_segment_size > 0` contributes memory: it mounts
//! a segment and keeps itself alive with a ping every second.

mod durable;
mod extra;
mod locations;
mod sessions;
mod staging;
mod tasks;

pub use self::sessions::Fragment;
pub use self::staging::StagedValue;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mooncake_transfer_engine::{
    DirectRange, EngineConfig, LocalBuffer, Opcode, TransferEngine, TransferRequest,
};
use tokio::sync::watch;

use self::locations::Locations;
use self::staging::Staging;
use crate::grpc::{GrpcClientConfig, GrpcMasterClient};
use crate::types::{
    ClientId, ClientStatus, ReplicaDescriptor, ReplicaList, ReplicateConfig, Segment, SegmentId,
};
use crate::{ErrorCode, MasterApi};

/// Mooncake's `setup(local_hostname, metadata_server, global_segment_size,
/// local_buffer_size, protocol, device_name, master_server_addr)`.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// This host's address as peers reach it (`127.0.0.1`, or `host:port`).
    pub local_hostname: String,
    /// Metadata connection string (`http://h:p/metadata`).
    pub metadata_server: String,
    /// Bytes this client contributes to the pool (0 = pure client).
    pub global_segment_size: u64,
    /// Bytes of the staging buffer used by `put` / `get` (the copying APIs).
    pub local_buffer_size: u64,
    /// Transport; `tcp`.
    pub protocol: String,
    /// RDMA devices (unused by TCP).
    pub device_name: String,
    /// The master's `host:port`.
    pub master_server_addr: String,
    /// Liveness heartbeat period (Mooncake: 1 s).
    pub ping_interval: Duration,
    /// Keep the contributed segment in this named shared-memory file (e.g.
    /// `/dev/shm/mooncake-store-1`) so it survives this process: a client started again with
    /// the same path (after a crash or an upgrade) re-attaches the memory and remounts the
    /// same segment, and the master serves its objects again if that happens within its
    /// grace period. A side file `<path>.mooncake.json` records the segment. `close()` leaves
    /// a durable segment in place (no drain, no unmount). Default none.
    pub segment_path: Option<std::path::PathBuf>,
    /// Back the contributed segment with a shared-memory file in `/dev/shm`, so clients on
    /// the same host read and write it with `memcpy` instead of TCP. Falls back to
    /// anonymous memory (with a warning) when `/dev/shm` has no room. Default true.
    pub shared_memory: bool,
    /// On [`Client::close`], how long a contributing client may spend copying the objects
    /// only its segment holds to other segments before unmounting it (0 = do not drain,
    /// Mooncake's behaviour: those objects are lost).
    pub drain_timeout: Duration,
    /// The cluster's token, presented to the master, the metadata server (writes) and
    /// peers' transfer engines, and required from peers' data connections. Default none
    /// (binaries and the Python package fill it from `--auth_token` / `MOONCAKE_AUTH_TOKEN`).
    pub auth_token: Option<mooncake_metadata::AuthToken>,
    /// End-to-end checksums: single-object writes record the value's CRC-32C with the
    /// object, and reads verify it (a replica that fails is reported and the next one is
    /// tried). Off by default; see docs/configuration.md for what it covers and costs.
    pub verify_checksums: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            local_hostname: "127.0.0.1".into(),
            metadata_server: "http://127.0.0.1:8080/metadata".into(),
            global_segment_size: 0,
            local_buffer_size: 16 << 20,
            protocol: "tcp".into(),
            device_name: String::new(),
            master_server_addr: "127.0.0.1:50051".into(),
            ping_interval: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(30),
            shared_memory: true,
            segment_path: None,
            auth_token: None,
            verify_checksums: false,
        }
    }
}

/// What [`Client::drain`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Objects copied to other segments; they survive the unmount.
    pub moved: usize,
    /// Objects no other segment had room for, or whose copy failed or did not finish in
    /// time; they go with the segment.
    pub lost: Vec<String>,
}

/// Why `setup` failed; each message names what could not be reached or used.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The protocol is not available in this build, or the configuration is unusable.
    #[error("{0}")]
    Protocol(String),
    /// The metadata connection string is unusable.
    #[error("metadata server {url}: {source}")]
    Metadata {
        /// The string given.
        url: String,
        /// The parse or connection error.
        #[source]
        source: mooncake_metadata::MetadataError,
    },
    /// The master could not be reached or refused the client.
    #[error("master {addr}: {code}")]
    Master {
        /// The address given.
        addr: String,
        /// What happened.
        code: ErrorCode,
    },
    /// A listener could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The transfer engine could not start or allocate memory.
    #[error("transfer engine: {0}")]
    Engine(#[from] mooncake_transfer_engine::TransferError),
}

struct Inner {
    config: ClientConfig,
    engine: TransferEngine,
    master: Arc<dyn MasterApi>,
    id: ClientId,
    segment: Option<(Segment, LocalBuffer)>,
    staging: Option<Arc<Staging>>,
    locations: Locations,
    /// Reads that met a replica failing its checksum.
    checksum_failures: std::sync::atomic::AtomicU64,
    sessions: sessions::Sessions,
    /// Segments mounted after setup (`mount_segment`, `allocate_and_mount_segment`).
    extras: parking_lot::Mutex<Vec<extra::Extra>>,
    /// Whether the heartbeat and task polling run (from setup for a contributing client,
    /// from its first extra segment otherwise).
    loops: std::sync::atomic::AtomicBool,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("segment", &self.engine.segment_name())
            .finish_non_exhaustive()
    }
}

/// A store client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// Placements a put tries: a holder that cannot be reached is excluded and the master
/// asked again, so one dead holder never fails a put while other segments have room.
const PLACEMENT_ATTEMPTS: usize = 3;

fn random_u64() -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut rng = crate::placement::Rng::new(t ^ (u64::from(std::process::id()) << 32));
    rng.next_u64()
}

impl Client {
    /// Connects to the metadata service and the master (gRPC), starts the transfer engine
    /// and, when `global_segment_size > 0`, mounts a segment.
    pub async fn setup(config: ClientConfig) -> Result<Self, SetupError> {
        let grpc = GrpcClientConfig {
            auth_token: config.auth_token.clone(),
            ..GrpcClientConfig::default()
        };
        let master = GrpcMasterClient::connect(&config.master_server_addr, grpc)
            .await
            .map_err(|code| SetupError::Master {
                addr: config.master_server_addr.clone(),
                code,
            })?;
        Self::with_master(config, Arc::new(master)).await
    }

    /// Like [`Client::setup`] with a given master (e.g. one linked into the process).
    pub async fn with_master(
        config: ClientConfig,
        master: Arc<dyn MasterApi>,
    ) -> Result<Self, SetupError> {
        if config.protocol != "tcp" {
            return Err(SetupError::Protocol(format!(
                "protocol {:?} is not available in this build; use tcp",
                config.protocol
            )));
        }
        // `P2PHANDSHAKE`: no central store; the engine exchanges descriptors itself.
        let metadata = match mooncake_metadata::connect_with(
            &config.metadata_server,
            config.auth_token.clone(),
        ) {
            Ok(m) => Some(m),
            Err(mooncake_metadata::MetadataError::NoCentralStore { .. }) => None,
            Err(source) => {
                return Err(SetupError::Metadata {
                    url: config.metadata_server.clone(),
                    source,
                })
            }
        };
        master
            .connect(crate::ProtocolVersion::CURRENT)
            .await
            .map_err(|code| SetupError::Master {
                addr: config.master_server_addr.clone(),
                code,
            })?;
        let host = config
            .local_hostname
            .split(':')
            .next()
            .unwrap_or("127.0.0.1")
            .to_owned();
        // A durable segment comes back under the name and id it had.
        let previous = match (&config.segment_path, config.global_segment_size) {
            (Some(path), size) if size > 0 => {
                durable::existing(path, size, &config.master_server_addr)
                    .map_err(SetupError::Protocol)?
            }
            _ => None,
        };
        let engine = match &previous {
            Some(p) => {
                let mut again = config.clone();
                again.local_hostname = p.name.clone();
                match start_engine(&again, &host, metadata.clone()).await {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::info!(name = %p.name, error = %e, "the durable segment's old name is taken; using a new one");
                        start_engine(&config, &host, metadata).await?
                    }
                }
            }
            None => start_engine(&config, &host, metadata).await?,
        };
        let id = ClientId((u128::from(random_u64()) << 64) | u128::from(random_u64()));
        let segment = if config.global_segment_size > 0 {
            let (buffer, attached) = allocate_segment(&engine, &config).await?;
            let segment_id = match (&previous, attached) {
                (Some(p), true) => p.id().unwrap_or(SegmentId(0)),
                _ => SegmentId((u128::from(random_u64()) << 64) | u128::from(random_u64())),
            };
            let seg = Segment {
                id: segment_id,
                name: engine.segment_name().to_owned(),
                base: buffer.addr(),
                size: buffer.len(),
                te_endpoint: engine.segment_name().to_owned(),
                protocol: "tcp".into(),
                host_id: host.clone(),
                durable: config.segment_path.is_some(),
            };
            if let Some(path) = &config.segment_path {
                let identity = durable::Identity {
                    segment_id: format!("{:x}", seg.id.0),
                    name: seg.name.clone(),
                    size: seg.size,
                    master: config.master_server_addr.clone(),
                };
                durable::record(path, &identity).map_err(|e| {
                    SetupError::Protocol(format!(
                        "cannot record the segment beside {}: {e}",
                        path.display()
                    ))
                })?;
                tracing::info!(path = %path.display(), attached, segment = %seg.name, "durable segment");
            }
            master
                .remount_segments(id, vec![seg.clone()])
                .await
                .map_err(|code| SetupError::Master {
                    addr: config.master_server_addr.clone(),
                    code,
                })?;
            Some((seg, buffer))
        } else {
            None
        };
        let staging = match config.local_buffer_size {
            0 => None,
            n => Some(Staging::new(engine.allocate_buffer(n, "cpu:0").await?)),
        };
        let (stop, _) = watch::channel(false);
        let client = Self {
            inner: Arc::new(Inner {
                config,
                engine,
                master,
                id,
                segment,
                staging,
                locations: Locations::default(),
                checksum_failures: std::sync::atomic::AtomicU64::new(0),
                sessions: sessions::Sessions::default(),
                extras: parking_lot::Mutex::new(Vec::new()),
                loops: std::sync::atomic::AtomicBool::new(false),
                stop,
            }),
        };
        if client.inner.segment.is_some() {
            client
                .inner
                .loops
                .store(true, std::sync::atomic::Ordering::Release);
            let (weak, stop) = (Arc::downgrade(&client.inner), &client.inner.stop);
            tokio::spawn(every_period(weak.clone(), stop.subscribe(), ping));
            tokio::spawn(every_period(weak, stop.subscribe(), |inner| async move {
                Client { inner }.run_tasks().await
            }));
        }
        Ok(client)
    }

    /// The configuration this client was set up with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The transfer engine (to register buffers for the zero-copy APIs).
    pub fn engine(&self) -> &TransferEngine {
        &self.inner.engine
    }

    /// This client's identity at the master.
    pub fn id(&self) -> ClientId {
        self.inner.id
    }

    /// The master this client talks to.
    pub fn master(&self) -> &Arc<dyn MasterApi> {
        &self.inner.master
    }

    /// The segment this client contributes, if any.
    pub fn segment(&self) -> Option<&Segment> {
        self.inner.segment.as_ref().map(|(s, _)| s)
    }

    // ---- writes ----

    /// Stores `value` under `key` through the staging buffer. A key that already exists
    /// keeps its value and the call succeeds (Mooncake's semantics).
    pub async fn put(
        &self,
        key: &str,
        value: &[u8],
        config: &ReplicateConfig,
    ) -> Result<(), ErrorCode> {
        self.write_value(key, value, config, false).await
    }

    /// Stores `size` bytes at `addr` (inside a buffer registered with the engine) without
    /// copying. `size == 0` stores nothing and succeeds, as in Mooncake.
    pub async fn put_from(
        &self,
        key: &str,
        addr: u64,
        size: u64,
        config: &ReplicateConfig,
    ) -> Result<(), ErrorCode> {
        self.put_parts_from(key, &[(addr, size)], config, false)
            .await
    }

    /// Stores the concatenation of `parts` (`(addr, len)` ranges of registered memory, in
    /// order) as one object without copying; `upsert` replaces an existing value, otherwise
    /// an existing key keeps its value and the call succeeds. A zero total stores nothing.
    pub async fn put_parts_from(
        &self,
        key: &str,
        parts: &[(u64, u64)],
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Result<(), ErrorCode> {
        if total(parts) == 0 {
            return if key.is_empty() {
                Err(ErrorCode::InvalidParams)
            } else {
                Ok(())
            };
        }
        self.write(key, parts, config, upsert).await
    }

    /// Stores the concatenation of byte slices as one object, through the staging buffer.
    pub async fn put_parts(
        &self,
        key: &str,
        parts: &[&[u8]],
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Result<(), ErrorCode> {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if len == 0 {
            return Err(ErrorCode::InvalidParams);
        }
        self.write_bytes(key, parts, config, upsert).await
    }

    /// Puts (or upserts) byte slices as one object. Replicas this client reaches without the
    /// network (same-host shared memory) get the bytes copied straight in; the others get
    /// them through the staging buffer, which is reserved first either way (a value larger
    /// than the free staging buffer is `InvalidParams`, as in Mooncake).
    async fn write_bytes(
        &self,
        key: &str,
        parts: &[&[u8]],
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Result<(), ErrorCode> {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if len == 0 {
            return Err(ErrorCode::InvalidParams);
        }
        let slice = self.stage(len)?;
        let mut config = std::borrow::Cow::Borrowed(config);
        if self.inner.config.verify_checksums {
            let crc = parts.iter().fold(0, |c, p| crc32c::crc32c_append(c, p));
            config.to_mut().checksum = Some(crc);
        }
        let mut filled = false;
        let mut attempt = 1;
        loop {
            let replicas = match self.start(key, len, &config, upsert).await {
                Err(ErrorCode::ObjectAlreadyExists) => return Ok(()),
                other => other?,
            };
            let mut remote = Vec::new();
            for rep in &replicas {
                if !self.copy_direct(rep, parts).await && !self.send_lent(rep, parts).await {
                    remote.push(rep.clone());
                }
            }
            let src = [(slice.addr(), len)];
            let pushed = if remote.is_empty() {
                Ok(())
            } else {
                if !std::mem::replace(&mut filled, true) {
                    let mut off = 0;
                    for p in parts {
                        slice.fill_at(off, p);
                        off += p.len() as u64;
                    }
                }
                self.push(&src, &remote).await
            };
            if pushed == Err(ErrorCode::TransferFail) && attempt < PLACEMENT_ATTEMPTS {
                if let Some(dead) = self.unreachable(key, &src, &remote).await {
                    config.to_mut().excluded_segments.extend(dead);
                    attempt += 1;
                    continue;
                }
            }
            return self.finish(key, &replicas, pushed).await;
        }
    }

    /// Copies `parts`, end to end, straight into `rep` if it needs no network.
    async fn copy_direct(&self, rep: &ReplicaDescriptor, parts: &[&[u8]]) -> bool {
        let Ok(target) = self
            .inner
            .engine
            .open_segment(&rep.transport_endpoint)
            .await
        else {
            return false;
        };
        let mut off = rep.buffer_address;
        for p in parts {
            // Parts of one replica all go the same way; a later part that cannot (it should
            // not happen) sends the whole value through the staging buffer instead.
            match self.inner.engine.write_direct(target, off, p) {
                Ok(true) => off += p.len() as u64,
                _ => return false,
            }
        }
        true
    }

    /// Sends `parts`, end to end, to `rep` over the network straight from the caller's
    /// memory (no staging copy); `false` if that path did not apply or did not complete,
    /// and the staging path (with its retries and error reports) must run.
    async fn send_lent(&self, rep: &ReplicaDescriptor, parts: &[&[u8]]) -> bool {
        let engine = &self.inner.engine;
        let Ok(target) = engine.open_segment(&rep.transport_endpoint).await else {
            return false;
        };
        let mut at = rep.buffer_address;
        let items: Vec<(u64, &[u8])> = parts
            .iter()
            .map(|p| {
                let item = (at, *p);
                at += p.len() as u64;
                item
            })
            .collect();
        engine.write_lent(target, &items).await
    }

    /// Sends `(item, replica, value)` writes straight from the caller's memory, one
    /// exchange per holder. Each group comes back with `true` if its exchange wrote all
    /// of it, `false` if it must go through the staging buffer.
    async fn send_lent_groups<'a>(
        &self,
        lent: &[LentWrite<'a>],
    ) -> Vec<(bool, Vec<LentWrite<'a>>)> {
        let mut groups: Vec<(&str, Vec<LentWrite<'a>>)> = Vec::new();
        for &(j, rep, value) in lent {
            match groups.iter_mut().find(|g| g.0 == rep.transport_endpoint) {
                Some(g) => g.1.push((j, rep, value)),
                None => groups.push((&rep.transport_endpoint, vec![(j, rep, value)])),
            }
        }
        let engine = &self.inner.engine;
        let mut out = Vec::with_capacity(groups.len());
        for (endpoint, group) in groups {
            let sent = match engine.open_segment(endpoint).await {
                Ok(target) => {
                    let items: Vec<(u64, &[u8])> = group
                        .iter()
                        .map(|(_, r, v)| (r.buffer_address, *v))
                        .collect();
                    engine.write_lent(target, &items).await
                }
                Err(_) => false,
            };
            out.push((sent, group));
        }
        out
    }

    /// `put_start` or `upsert_start`.
    async fn start(
        &self,
        key: &str,
        size: u64,
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Result<Vec<ReplicaDescriptor>, ErrorCode> {
        let m = &self.inner.master;
        if upsert {
            m.upsert_start(self.inner.id, key, size, config).await
        } else {
            m.put_start(self.inner.id, key, size, config).await
        }
    }

    /// Commits a written object (and remembers where it is), or revokes a failed one so
    /// nothing half-written is ever visible.
    async fn finish(
        &self,
        key: &str,
        replicas: &[ReplicaDescriptor],
        written: Result<(), ErrorCode>,
    ) -> Result<(), ErrorCode> {
        let m = &self.inner.master;
        match written {
            Ok(()) => {
                m.put_end(self.inner.id, key).await?;
                self.remember(key, replicas);
                Ok(())
            }
            Err(e) => {
                let _ = m.put_revoke(self.inner.id, key).await;
                Err(e)
            }
        }
    }

    /// Stores `value`, replacing any existing value.
    pub async fn upsert(
        &self,
        key: &str,
        value: &[u8],
        config: &ReplicateConfig,
    ) -> Result<(), ErrorCode> {
        self.write_value(key, value, config, true).await
    }

    /// Stores many values (one `batch_put_start`, parallel transfers, one `batch_put_end`).
    /// Per-key results; existing keys succeed and keep their value.
    pub async fn put_batch(
        &self,
        items: &[(&str, &[u8])],
        config: &ReplicateConfig,
    ) -> Vec<Result<(), ErrorCode>> {
        self.write_values(items, config, false).await
    }

    /// Like [`Client::put_batch`], replacing existing values.
    pub async fn upsert_batch(
        &self,
        items: &[(&str, &[u8])],
        config: &ReplicateConfig,
    ) -> Vec<Result<(), ErrorCode>> {
        self.write_values(items, config, true).await
    }

    async fn write_values(
        &self,
        items: &[(&str, &[u8])],
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Vec<Result<(), ErrorCode>> {
        let mut slices = Vec::with_capacity(items.len());
        for (_, v) in items {
            if v.is_empty() {
                slices.push(Err(ErrorCode::InvalidParams));
                continue;
            }
            slices.push(self.stage(v.len() as u64));
        }
        let sources: Vec<Result<Source, ErrorCode>> = slices
            .into_iter()
            .zip(items)
            .map(|(s, (_, v))| s.map(|slice| Source::Bytes(v, slice)))
            .collect();
        let keys: Vec<&str> = items.iter().map(|(k, _)| *k).collect();
        self.write_batch(&keys, &sources, config, upsert).await
    }

    /// Zero-copy batch put from registered memory: `(key, addr, size)` per item.
    pub async fn batch_put_from(
        &self,
        items: &[(&str, u64, u64)],
        config: &ReplicateConfig,
    ) -> Vec<Result<(), ErrorCode>> {
        let keys: Vec<&str> = items.iter().map(|(k, _, _)| *k).collect();
        let sources: Vec<Result<Source, ErrorCode>> = items
            .iter()
            .map(|(_, a, n)| Ok(Source::Registered(vec![(*a, *n)])))
            .collect();
        self.write_batch(&keys, &sources, config, false).await
    }

    /// Zero-copy batch put where each object is the concatenation of several registered
    /// ranges (Mooncake's `batch_put_from_multi_buffers`); `upsert` replaces existing values.
    pub async fn batch_put_parts_from(
        &self,
        items: &[(&str, Vec<(u64, u64)>)],
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Vec<Result<(), ErrorCode>> {
        let keys: Vec<&str> = items.iter().map(|(k, _)| *k).collect();
        let sources: Vec<Result<Source, ErrorCode>> = items
            .iter()
            .map(|(_, p)| Ok(Source::Registered(p.clone())))
            .collect();
        self.write_batch(&keys, &sources, config, upsert).await
    }

    /// Copies `value` into the staging buffer and writes it (put or upsert).
    async fn write_value(
        &self,
        key: &str,
        value: &[u8],
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Result<(), ErrorCode> {
        self.write_bytes(key, &[value], config, upsert).await
    }

    fn stage(&self, len: u64) -> Result<staging::Slice, ErrorCode> {
        let staging = self
            .inner
            .staging
            .as_ref()
            .ok_or(ErrorCode::InvalidParams)?;
        staging.take(len).ok_or_else(|| {
            tracing::warn!(len, buffer = self.inner.config.local_buffer_size, "Failed to allocate buffer for put operation: value larger than the free local buffer");
            ErrorCode::InvalidParams
        })
    }

    async fn write(
        &self,
        key: &str,
        src: &[(u64, u64)],
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Result<(), ErrorCode> {
        let mut config = std::borrow::Cow::Borrowed(config);
        if self.inner.config.verify_checksums {
            config.to_mut().checksum = Some(self.local_crc(src)?);
        }
        let mut attempt = 1;
        loop {
            let replicas = match self.start(key, total(src), &config, upsert).await {
                Err(ErrorCode::ObjectAlreadyExists) => return Ok(()),
                other => other?,
            };
            let pushed = self.push(src, &replicas).await;
            if pushed == Err(ErrorCode::TransferFail) && attempt < PLACEMENT_ATTEMPTS {
                if let Some(dead) = self.unreachable(key, src, &replicas).await {
                    config.to_mut().excluded_segments.extend(dead);
                    attempt += 1;
                    continue;
                }
            }
            return self.finish(key, &replicas, pushed).await;
        }
    }

    /// After a write to `replicas` that failed in transit: the segments among them that
    /// cannot be written (each tried on its own; a local error such as unregistered source
    /// memory blames no holder). When there are some, the put is revoked so that it can be
    /// placed again without them; `None` (nothing revoked) when every holder answers.
    async fn unreachable(
        &self,
        key: &str,
        src: &[(u64, u64)],
        replicas: &[ReplicaDescriptor],
    ) -> Option<Vec<String>> {
        let mut dead = Vec::new();
        for rep in replicas {
            if self.push(src, std::slice::from_ref(rep)).await == Err(ErrorCode::TransferFail) {
                dead.push(rep.segment_name.clone());
            }
        }
        if dead.is_empty() {
            return None;
        }
        // Placing again needs the first reservation gone: if the revoke fails, a new
        // put_start would meet this very put (-705) and report a success that never was.
        if let Err(e) = self.inner.master.put_revoke(self.inner.id, key).await {
            tracing::warn!(key, error = %e, "cannot revoke the put; not placing it again");
            return None;
        }
        tracing::warn!(key, segments = ?dead, "replica holders unreachable; placed the put elsewhere");
        Some(dead)
    }

    async fn write_batch(
        &self,
        keys: &[&str],
        sources: &[Result<Source<'_>, ErrorCode>],
        config: &ReplicateConfig,
        upsert: bool,
    ) -> Vec<Result<(), ErrorCode>> {
        let mut out: Vec<Result<(), ErrorCode>> = sources
            .iter()
            .map(|s| s.as_ref().map(|_| ()).map_err(|e| *e))
            .collect();
        let mut seen = std::collections::HashSet::new();
        let mut idx = Vec::new();
        let mut items = Vec::new();
        for (i, (k, s)) in keys.iter().zip(sources).enumerate() {
            match s.as_ref().map(Source::len) {
                Ok(0) => {}
                Ok(n) if seen.insert(*k) => {
                    idx.push(i);
                    items.push(((*k).to_owned(), n));
                }
                _ => {}
            }
        }
        if items.is_empty() {
            return out;
        }
        let m = &self.inner.master;
        let started = if upsert {
            m.batch_upsert_start(self.inner.id, &items, config).await
        } else {
            m.batch_put_start(self.inner.id, &items, config).await
        };
        let started = match started {
            Ok(s) => s,
            Err(e) => {
                idx.iter().for_each(|i| out[*i] = Err(e));
                return out;
            }
        };
        let mut queued = Queued::default();
        let mut dead: Vec<Vec<String>> = vec![Vec::new(); started.len()];
        let mut lent: Vec<LentWrite<'_>> = Vec::new();
        for (j, r) in started.iter().enumerate() {
            let i = idx[j];
            match r {
                Ok(replicas) => {
                    let Ok(src) = &sources[i] else { continue };
                    for rep in replicas {
                        let parts: std::borrow::Cow<'_, [(u64, u64)]> = match src {
                            Source::Registered(parts) => parts.into(),
                            Source::Bytes(value, _) => {
                                if !self.copy_direct(rep, &[value]).await {
                                    lent.push((j, rep, *value));
                                }
                                continue;
                            }
                        };
                        if let Err(e) = queued.add(self, j, &parts, rep).await {
                            out[i] = Err(e);
                            dead[j].push(rep.segment_name.clone());
                        }
                    }
                }
                Err(ErrorCode::ObjectAlreadyExists) => {}
                Err(e) => out[i] = Err(*e),
            }
        }
        // Values in ordinary memory go to each holder straight from the caller's memory,
        // one exchange per holder; a holder that exchange does not complete gets them
        // through the staging buffer with the registered sources.
        for (sent, group) in self.send_lent_groups(&lent).await {
            if sent {
                continue;
            }
            for (j, rep, value) in group {
                let i = idx[j];
                let Ok(Source::Bytes(_, slice)) = &sources[i] else {
                    continue;
                };
                slice.fill(value);
                let staged = [(slice.addr(), value.len() as u64)];
                if let Err(e) = queued.add(self, j, &staged, rep).await {
                    out[i] = Err(e);
                    dead[j].push(rep.segment_name.clone());
                }
            }
        }
        let failed = self.transfer_each(&queued.requests).await;
        for (k, ok) in failed.iter().enumerate() {
            if !ok {
                let j = queued.owners[k];
                out[idx[j]] = Err(ErrorCode::TransferFail);
                dead[j].push(queued.holders[k].clone());
            }
        }
        let (mut end, mut revoke) = (Vec::new(), Vec::new());
        for (j, r) in started.iter().enumerate() {
            if r.is_ok() {
                let i = idx[j];
                if out[i].is_ok() {
                    end.push(items[j].0.clone())
                } else {
                    revoke.push(items[j].0.clone())
                }
            }
        }
        // Keys whose revoke failed must not be placed again (see `unreachable`).
        let mut unrevoked = std::collections::HashSet::new();
        if !revoke.is_empty() {
            match self
                .inner
                .master
                .batch_put_revoke(self.inner.id, &revoke)
                .await
            {
                Ok(rs) => {
                    for (key, r) in revoke.iter().zip(rs) {
                        if r.is_err() {
                            unrevoked.insert(key.clone());
                        }
                    }
                }
                Err(_) => unrevoked.extend(revoke.iter().cloned()),
            }
        }
        if !end.is_empty() {
            // A commit that fails as a whole fails every key it carried: the master would
            // discard those objects, so none of them may be reported stored.
            let ends = match self.inner.master.batch_put_end(self.inner.id, &end).await {
                Ok(ends) if ends.len() == end.len() => ends,
                Ok(_) => vec![Err(ErrorCode::RpcFail); end.len()],
                Err(e) => vec![Err(e); end.len()],
            };
            for (key, r) in end.iter().zip(ends) {
                if let (Err(e), Some(i)) = (r, keys.iter().position(|k| k == key)) {
                    out[i] = Err(e);
                }
            }
        }
        for (j, r) in started.iter().enumerate() {
            if let (Ok(replicas), Ok(())) = (r, &out[idx[j]]) {
                self.remember(&items[j].0, replicas);
            }
        }
        // A key whose holder could not be reached is placed again without it, on its own.
        for (j, segs) in dead.iter().enumerate() {
            let i = idx[j];
            if segs.is_empty()
                || out[i] != Err(ErrorCode::TransferFail)
                || unrevoked.contains(keys[i])
            {
                continue;
            }
            let mut again = config.clone();
            again.excluded_segments.extend(segs.iter().cloned());
            out[i] = match &sources[i] {
                Ok(Source::Registered(parts)) => self.write(keys[i], parts, &again, upsert).await,
                Ok(Source::Bytes(value, slice)) => {
                    slice.fill(value);
                    let src = [(slice.addr(), value.len() as u64)];
                    self.write(keys[i], &src, &again, upsert).await
                }
                Err(e) => Err(*e),
            };
        }
        // Duplicates of a key within the batch share its result.
        for (i, k) in keys.iter().enumerate() {
            if !idx.contains(&i) && sources[i].as_ref().is_ok_and(|p| p.len() > 0) {
                if let Some(first) = keys.iter().position(|x| x == k) {
                    out[i] = out[first];
                }
            }
        }
        out
    }

    /// One request per part of `local`, laid end to end in the replica.
    async fn requests(
        &self,
        opcode: Opcode,
        local: &[(u64, u64)],
        rep: &ReplicaDescriptor,
    ) -> Result<Vec<TransferRequest>, ErrorCode> {
        let target = self.inner.engine.open_segment(&rep.transport_endpoint).await.map_err(|e| {
            tracing::warn!(segment = %rep.transport_endpoint, error = %e, "cannot open replica segment");
            ErrorCode::TransferFail
        })?;
        let mut offset = rep.buffer_address;
        let mut out = Vec::with_capacity(local.len());
        for &(source, length) in local {
            if length > 0 {
                out.push(TransferRequest {
                    opcode,
                    source,
                    target,
                    target_offset: offset,
                    length,
                });
            }
            offset += length;
        }
        Ok(out)
    }

    /// Writes one object to every replica in parallel.
    async fn push(
        &self,
        src: &[(u64, u64)],
        replicas: &[ReplicaDescriptor],
    ) -> Result<(), ErrorCode> {
        let mut reqs = Vec::with_capacity(replicas.len() * src.len());
        for r in replicas {
            reqs.extend(self.requests(Opcode::Write, src, r).await?);
        }
        self.inner.engine.transfer(&reqs).await.map_err(|e| {
            tracing::warn!(error = %e, "write to a replica failed");
            map_transfer(&e)
        })
    }

    /// Runs requests concurrently; returns per-request success.
    async fn transfer_each(&self, reqs: &[TransferRequest]) -> Vec<bool> {
        self.inner
            .engine
            .transfer_each(reqs)
            .await
            .iter()
            .map(Result::is_ok)
            .collect()
    }

    /// The master's replica lists for `keys`, asked while the reads of `guesses` (per key,
    /// destination parts and the replica this client last saw it in) run. A guess is a
    /// hit when its read succeeded and the master lists the very same replica (same
    /// version: the bytes were not rewritten) and, with checksums on, the bytes verify;
    /// stale guesses are forgotten. The batch form of [`Client::get_into`]'s speculation.
    async fn batch_lookup(
        &self,
        keys: &[String],
        guesses: &[Option<Guess>],
    ) -> Result<(Vec<Result<ReplicaList, ErrorCode>>, Vec<bool>), ErrorCode> {
        let mut reqs = Vec::new();
        let mut owner = Vec::new();
        let mut hits: Vec<bool> = guesses.iter().map(Option::is_some).collect();
        for (i, guess) in guesses.iter().enumerate() {
            if let Some((dst, rep)) = guess {
                match self.requests(Opcode::Read, dst, rep).await {
                    Ok(r) => {
                        owner.extend(r.iter().map(|_| i));
                        reqs.extend(r);
                    }
                    Err(_) => hits[i] = false,
                }
            }
        }
        let master = self.inner.master.batch_get_replica_list(keys);
        let (lists, reads) = if reqs.is_empty() {
            (master.await, Vec::new())
        } else {
            tokio::join!(master, self.inner.engine.transfer_each(&reqs))
        };
        let lists = lists?;
        for (k, r) in reads.iter().enumerate() {
            if r.is_err() {
                hits[owner[k]] = false;
            }
        }
        for (i, guess) in guesses.iter().enumerate() {
            let Some((dst, rep)) = guess else { continue };
            hits[i] = hits[i]
                && matches!(lists.get(i), Some(Ok(l)) if l.replicas.contains(rep)
                    && self.checksum_ok(&keys[i], l, || self.local_crc(dst).unwrap_or(0)));
            if !hits[i] {
                self.inner.locations.remove(&keys[i]);
            }
        }
        Ok((lists, hits))
    }

    /// Reads many objects: one pass over every object's preferred replica (copies inline,
    /// network reads concurrently), then the full failover path for the ones that failed.
    async fn pull_many(
        &self,
        jobs: &[(Vec<(u64, u64)>, ReplicaList)],
    ) -> Vec<Result<(), ErrorCode>> {
        let mut reqs = Vec::new();
        let mut owner = Vec::new();
        let mut out: Vec<Result<(), ErrorCode>> = vec![Ok(()); jobs.len()];
        for (j, (dst, list)) in jobs.iter().enumerate() {
            let Some(rep) = self.preferred(&list.replicas) else {
                out[j] = Err(ErrorCode::ReplicaIsNotReady);
                continue;
            };
            match self.requests(Opcode::Read, dst, rep).await {
                Ok(r) => {
                    owner.extend(r.iter().map(|_| j));
                    reqs.extend(r);
                }
                Err(e) => out[j] = Err(e),
            }
        }
        for (k, ok) in self.transfer_each(&reqs).await.into_iter().enumerate() {
            if !ok {
                out[owner[k]] = Err(ErrorCode::TransferFail);
            }
        }
        let mut set = tokio::task::JoinSet::new();
        for (j, (dst, list)) in jobs.iter().enumerate() {
            if out[j].is_err() && out[j] != Err(ErrorCode::ReplicaIsNotReady) {
                let (c, dst, list) = (self.clone(), dst.clone(), list.clone());
                set.spawn(async move { (j, c.pull(&dst, &list.replicas).await.map(|_| ())) });
            }
        }
        while let Some(Ok((j, r))) = set.join_next().await {
            out[j] = r;
        }
        // With checksums on, every value read is verified (the key is not known here:
        // reports name the object by its first replica).
        if self.inner.config.verify_checksums {
            for (j, (dst, list)) in jobs.iter().enumerate() {
                if out[j].is_ok() && list.checksum.is_some() {
                    let name = list
                        .replicas
                        .first()
                        .map(|r| format!("{}@{:#x}", r.segment_name, r.buffer_address))
                        .unwrap_or_default();
                    if !self.checksum_ok(&name, list, || self.local_crc(dst).unwrap_or(0)) {
                        out[j] = self.read_verified(&name, dst, list, false).await;
                    }
                }
            }
        }
        out
    }

    // ---- checksums ----

    /// CRC-32C of registered local memory laid end to end (`InvalidParams` when a part is
    /// not registered).
    fn local_crc(&self, parts: &[(u64, u64)]) -> Result<u32, ErrorCode> {
        parts.iter().try_fold(0, |crc, &(addr, len)| {
            self.inner
                .engine
                .crc32c_append(crc, addr, len)
                .ok_or(ErrorCode::InvalidParams)
        })
    }

    /// Whether `crc` (of what was read) is what the writer recorded for `key`; counts and
    /// reports a mismatch. Always true when checksums are off or none was recorded.
    fn checksum_ok(&self, key: &str, list: &ReplicaList, crc: impl FnOnce() -> u32) -> bool {
        let Some(want) = list.checksum.filter(|_| self.inner.config.verify_checksums) else {
            return true;
        };
        let got = crc();
        if got != want {
            self.inner
                .checksum_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(
                key,
                want = format_args!("{want:#010x}"),
                got = format_args!("{got:#010x}"),
                "a replica failed its checksum; trying the others"
            );
        }
        got == want
    }

    /// [`Client::read_and_remember`], then the checksum check (with the replica-by-replica
    /// fallback on a mismatch).
    async fn read_checked(
        &self,
        key: &str,
        dst: &[(u64, u64)],
        list: &ReplicaList,
    ) -> Result<(), ErrorCode> {
        self.read_and_remember(key, dst, &list.replicas).await?;
        if self.checksum_ok(key, list, || self.local_crc(dst).unwrap_or(0)) {
            return Ok(());
        }
        self.read_verified(key, dst, list, true).await
    }

    /// Reads `key` into `dst` replica by replica until one passes its checksum; the
    /// fallback after a read that failed it. `TransferFail` when none does.
    async fn read_verified(
        &self,
        key: &str,
        dst: &[(u64, u64)],
        list: &ReplicaList,
        remember: bool,
    ) -> Result<(), ErrorCode> {
        for rep in &list.replicas {
            let Ok(reqs) = self.requests(Opcode::Read, dst, rep).await else {
                continue;
            };
            if self.inner.engine.transfer(&reqs).await.is_err() {
                continue;
            }
            if self.checksum_ok(key, list, || self.local_crc(dst).unwrap_or(0)) {
                if remember {
                    self.inner.locations.insert(key, rep);
                }
                return Ok(());
            }
        }
        if remember {
            self.inner.locations.remove(key);
        }
        tracing::error!(
            key,
            replicas = list.replicas.len(),
            "no replica passed its checksum"
        );
        Err(ErrorCode::TransferFail)
    }

    /// Reads that found a replica failing its checksum (each is also logged).
    pub fn checksum_failures(&self) -> u64 {
        self.inner
            .checksum_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    // ---- reads ----

    /// The value of `key`, copied through the staging buffer.
    ///
    /// A replica this client reaches with a copy (its own segment, or a same-host peer's
    /// shared memory) is copied straight into the new vector; others are read through the
    /// staging buffer. Either way the value must fit in the staging buffer (Mooncake's
    /// rule: larger values need [`Client::get_into`]).
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, ErrorCode> {
        let list = match self.inner.locations.get(key) {
            Some(rep) => {
                let Some(range) = self.direct_range(&rep).await else {
                    return Ok(self.get_staged(key).await?.to_vec());
                };
                let _room = self.stage(rep.size)?;
                let master = self.inner.master.get_replica_list(key);
                let (list, v) = tokio::join!(master, async { range.to_vec() });
                let list = list.inspect_err(|_| self.inner.locations.remove(key))?;
                if list.replicas.contains(&rep) {
                    if self.checksum_ok(key, &list, || crc32c::crc32c(&v)) {
                        return Ok(v);
                    }
                    return Ok(self.reread(key, &list).await?.to_vec());
                }
                self.inner.locations.remove(key);
                list
            }
            None => self.inner.master.get_replica_list(key).await?,
        };
        Ok(self.read_listed(key, &list, None).await?.to_vec())
    }

    /// `key`'s value read again into the staging buffer, replica by replica, verified.
    async fn reread(&self, key: &str, list: &ReplicaList) -> Result<Value, ErrorCode> {
        let slice = self.stage(list.size())?;
        self.read_verified(key, &[(slice.addr(), list.size())], list, true)
            .await?;
        Ok(Value::Staged(StagedValue(slice)))
    }

    /// The value of `key`, to be copied out once by the caller ([`Value::read_into_uninit`],
    /// e.g. straight into a Python `bytes`): the range itself if this client reaches the
    /// replica with a copy (no copy made yet), else the value read into the staging buffer
    /// (as [`Client::get_staged`], including its read from a cached location started
    /// alongside the master call). The value must fit in the staging buffer either way.
    pub async fn get_value(&self, key: &str) -> Result<Value, ErrorCode> {
        let mut known = None;
        if let Some(rep) = self.inner.locations.get(key) {
            match self.direct_range(&rep).await {
                Some(range) => known = Some((rep, range)),
                None => return self.get_staged(key).await.map(Value::Staged),
            }
        }
        let list = self.inner.master.get_replica_list(key).await?;
        self.read_listed(key, &list, known).await
    }

    /// `key`'s value from the replicas the master listed: the preferred replica's range if
    /// this client reaches it with a copy (`known` is one already found for a replica), else
    /// read into the staging buffer with failover. Either way the value must fit in the
    /// staging buffer, and the replica used is remembered.
    async fn read_listed(
        &self,
        key: &str,
        list: &ReplicaList,
        known: Option<(ReplicaDescriptor, DirectRange)>,
    ) -> Result<Value, ErrorCode> {
        let slice = self.stage(list.size())?;
        if let Some(rep) = self.preferred(&list.replicas) {
            let range = match known {
                Some((cached, range)) if cached == *rep => Some(range),
                _ => self.direct_range(rep).await,
            };
            if let Some(range) = range {
                if self.checksum_ok(key, list, || range.crc32c()) {
                    self.inner.locations.insert(key, rep);
                    return Ok(Value::Mapped(range));
                }
                drop(slice);
                return self.reread(key, list).await;
            }
        }
        self.read_checked(key, &[(slice.addr(), list.size())], list)
            .await?;
        Ok(Value::Staged(StagedValue(slice)))
    }

    /// `rep`'s bytes as a range this client reaches with a copy, if it does (a segment
    /// that cannot be opened is left to the transfer path, which reports the problem).
    async fn direct_range(&self, rep: &ReplicaDescriptor) -> Option<DirectRange> {
        let engine = &self.inner.engine;
        let target = engine.open_segment(&rep.transport_endpoint).await.ok()?;
        let len = usize::try_from(rep.size).ok()?;
        let found = engine.direct_range(target, rep.buffer_address, len);
        found.ok().flatten()
    }

    /// The value of `key`, left in the staging buffer: copy it out with
    /// [`StagedValue::read_into`] (one copy, e.g. straight into a Python `bytes`).
    pub async fn get_staged(&self, key: &str) -> Result<StagedValue, ErrorCode> {
        let cached = self.inner.locations.get(key);
        let guess = cached
            .as_ref()
            .and_then(|r| Some((r, self.stage(r.size).ok()?)));
        let list = match guess {
            Some((rep, slice)) => {
                let dst = [(slice.addr(), rep.size)];
                match self.speculate(key, &dst, rep).await? {
                    (_, true) => return Ok(StagedValue(slice)),
                    (list, false) => list,
                }
            }
            None => self.inner.master.get_replica_list(key).await?,
        };
        let size = list.size();
        let slice = self.stage(size)?;
        self.read_checked(key, &[(slice.addr(), size)], &list)
            .await?;
        Ok(StagedValue(slice))
    }

    /// Reads `rep` into `dst` while asking the master for `key`'s replicas. `(list, true)`:
    /// the master confirmed the cached replica (same address, size, segment and version)
    /// and `dst` holds the value (verified, when checksums are on). `(list, false)`: the
    /// guess was stale, its read failed or its bytes failed their checksum; `dst` must be
    /// written again from `list`.
    async fn speculate(
        &self,
        key: &str,
        dst: &[(u64, u64)],
        rep: &ReplicaDescriptor,
    ) -> Result<(ReplicaList, bool), ErrorCode> {
        let read = async {
            let reqs = self.requests(Opcode::Read, dst, rep).await?;
            self.inner
                .engine
                .transfer(&reqs)
                .await
                .map_err(|e| map_transfer(&e))
        };
        let (list, read) = tokio::join!(self.inner.master.get_replica_list(key), read);
        let list = list.inspect_err(|_| self.inner.locations.remove(key))?;
        if read.is_ok()
            && list.replicas.contains(rep)
            && self.checksum_ok(key, &list, || self.local_crc(dst).unwrap_or(0))
        {
            return Ok((list, true));
        }
        self.inner.locations.remove(key);
        Ok((list, false))
    }

    /// The size of `key`'s value if this client remembers a replica of it that it reads
    /// over the network: the size to allocate for [`Client::get_lent`].
    pub async fn remembered_network_size(&self, key: &str) -> Option<u64> {
        let rep = self.inner.locations.get(key)?;
        self.direct_range(&rep).await.is_none().then_some(rep.size)
    }

    /// Reads `key` straight into `out` (ordinary memory, not registered; exactly the size
    /// [`Client::remembered_network_size`] gave) from the replica this client remembers,
    /// while the master confirms that replica, as [`Client::get_into`]'s speculative read
    /// does, but without the staging copy. `Ok(true)`: all of `out` holds the value.
    /// `Ok(false)`: nothing is known of `out`; read the value the usual way.
    pub async fn get_lent(
        &self,
        key: &str,
        out: &mut [std::mem::MaybeUninit<u8>],
    ) -> Result<bool, ErrorCode> {
        let Some(rep) = self
            .inner
            .locations
            .get(key)
            .filter(|r| r.size == out.len() as u64)
        else {
            return Ok(false);
        };
        let engine = &self.inner.engine;
        let Ok(target) = engine.open_segment(&rep.transport_endpoint).await else {
            return Ok(false);
        };
        let (list, read) = tokio::join!(
            self.inner.master.get_replica_list(key),
            engine.read_lent_uninit(target, rep.buffer_address, out)
        );
        let list = list.inspect_err(|_| self.inner.locations.remove(key))?;
        // Checksums are verified on the staged path; with them on, only that path serves.
        if read
            && list.replicas.contains(&rep)
            && list
                .checksum
                .is_none_or(|_| !self.inner.config.verify_checksums)
        {
            return Ok(true);
        }
        if !list.replicas.contains(&rep) {
            self.inner.locations.remove(key);
        }
        Ok(false)
    }

    /// The sizes [`Client::remembered_network_size`] gives, for many keys.
    pub async fn remembered_network_sizes(&self, keys: &[&str]) -> Vec<Option<u64>> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.remembered_network_size(key).await);
        }
        out
    }

    /// The batch form of [`Client::get_lent`]: reads each `(key, out)` of `items` straight
    /// into its `out` (each exactly the size [`Client::remembered_network_sizes`] gave)
    /// from the replica this client remembers, one exchange per holder, while one master
    /// call confirms the replicas. For each item, `true`: all of its `out` holds the value;
    /// `false`: nothing is known of its `out`, read it the usual way.
    pub async fn get_batch_lent(
        &self,
        items: &mut [(&str, &mut [std::mem::MaybeUninit<u8>])],
    ) -> Vec<bool> {
        let engine = &self.inner.engine;
        let mut served = vec![false; items.len()];
        // Per holder: its handle and the items read from it.
        let mut holders: Vec<(String, mooncake_transfer_engine::SegmentHandle, Vec<usize>)> =
            Vec::new();
        let mut reps = Vec::with_capacity(items.len());
        for (i, (key, out)) in items.iter().enumerate() {
            let rep = self
                .inner
                .locations
                .get(key)
                .filter(|r| r.size == out.len() as u64);
            if let Some(rep) = &rep {
                match holders.iter_mut().find(|h| h.0 == rep.transport_endpoint) {
                    Some(h) => h.2.push(i),
                    None => {
                        if let Ok(handle) = engine.open_segment(&rep.transport_endpoint).await {
                            holders.push((rep.transport_endpoint.clone(), handle, vec![i]));
                        }
                    }
                }
            }
            reps.push(rep);
        }
        let keys: Vec<String> = items.iter().map(|(k, _)| (*k).to_owned()).collect();
        // Split the outputs per holder (each item belongs to at most one).
        let mut outs: Vec<Option<&mut [std::mem::MaybeUninit<u8>]>> =
            items.iter_mut().map(|(_, out)| Some(&mut **out)).collect();
        let mut jobs = Vec::with_capacity(holders.len());
        for (_, handle, idx) in &holders {
            let job: Vec<(u64, &mut [std::mem::MaybeUninit<u8>])> = idx
                .iter()
                .filter_map(|&i| {
                    let at = reps[i].as_ref()?.buffer_address;
                    Some((at, outs[i].take()?))
                })
                .collect();
            jobs.push((*handle, job));
        }
        let reads = join_all(
            jobs.iter_mut()
                .map(|(handle, job)| engine.read_lent_uninit_many(*handle, job))
                .collect(),
        );
        let (lists, reads) = tokio::join!(self.inner.master.batch_get_replica_list(&keys), reads);
        let Ok(lists) = lists else { return served };
        for ((_, _, idx), read) in holders.iter().zip(reads) {
            for &i in idx {
                let Some(rep) = &reps[i] else { continue };
                let confirmed = matches!(lists.get(i), Some(Ok(l)) if l.replicas.contains(rep)
                    && l.checksum.is_none_or(|_| !self.inner.config.verify_checksums));
                served[i] = read && confirmed;
                if !matches!(lists.get(i), Some(Ok(l)) if l.replicas.contains(rep)) {
                    self.inner.locations.remove(&keys[i]);
                }
            }
        }
        served
    }

    /// [`Client::pull`], then remembers the replica that served the read.
    async fn read_and_remember(
        &self,
        key: &str,
        dst: &[(u64, u64)],
        replicas: &[ReplicaDescriptor],
    ) -> Result<(), ErrorCode> {
        let served = self.pull(dst, replicas).await?;
        self.inner.locations.insert(key, served);
        Ok(())
    }

    /// Remembers where `key`'s bytes are (the replica reads try first), so that the next
    /// read of it can start before the master answers.
    fn remember(&self, key: &str, replicas: &[ReplicaDescriptor]) {
        if let Some(r) = self.preferred(replicas) {
            self.inner.locations.insert(key, r);
        }
    }

    /// The replica reads try first: the local one, else the first.
    fn preferred<'a>(&self, replicas: &'a [ReplicaDescriptor]) -> Option<&'a ReplicaDescriptor> {
        let me = self.inner.engine.segment_name();
        replicas
            .iter()
            .find(|r| r.transport_endpoint == me)
            .or(replicas.first())
    }

    /// Reads `key` into `[addr, addr+capacity)` (inside a registered buffer) without
    /// copying; returns the value's size. A buffer smaller than the value is
    /// `InvalidParams` and is left untouched.
    ///
    /// A read from the replica this client last used for `key` may start before the master
    /// answers; if the master names another replica, the buffer is written again from it.
    pub async fn get_into(&self, key: &str, addr: u64, capacity: u64) -> Result<u64, ErrorCode> {
        let list = match self.inner.locations.get(key) {
            Some(rep) if rep.size <= capacity => {
                match self.speculate(key, &[(addr, rep.size)], &rep).await? {
                    (_, true) => return Ok(rep.size),
                    (list, false) => list,
                }
            }
            _ => self.inner.master.get_replica_list(key).await?,
        };
        let size = list.size();
        if size > capacity {
            return Err(ErrorCode::InvalidParams);
        }
        self.read_checked(key, &[(addr, size)], &list).await?;
        Ok(size)
    }

    /// Reads `key` scattered over `parts` (`(addr, len)` ranges of registered memory, in
    /// order); returns the value's size. Mooncake's exact-fit rule: ranges shorter than the
    /// value are `InvalidParams`, longer are `TransferFail`; either way nothing is written.
    pub async fn get_into_parts(&self, key: &str, parts: &[(u64, u64)]) -> Result<u64, ErrorCode> {
        let list = self.inner.master.get_replica_list(key).await?;
        self.pull_exact(parts, &list).await
    }

    async fn pull_exact(&self, parts: &[(u64, u64)], list: &ReplicaList) -> Result<u64, ErrorCode> {
        let size = list.size();
        match total(parts).cmp(&size) {
            std::cmp::Ordering::Less => Err(ErrorCode::InvalidParams),
            std::cmp::Ordering::Greater => Err(ErrorCode::TransferFail),
            std::cmp::Ordering::Equal => {
                self.pull(parts, &list.replicas).await?;
                Ok(size)
            }
        }
    }

    /// Batch form of [`Client::get_into_parts`]: one master call, parallel transfers.
    pub async fn batch_get_into_parts(
        &self,
        items: &[(&str, Vec<(u64, u64)>)],
    ) -> Vec<Result<u64, ErrorCode>> {
        let owned: Vec<String> = items.iter().map(|(k, _)| (*k).to_owned()).collect();
        let lists = match self.inner.master.batch_get_replica_list(&owned).await {
            Ok(l) => l,
            Err(e) => return items.iter().map(|_| Err(e)).collect(),
        };
        let mut out: Vec<Result<u64, ErrorCode>> = vec![Err(ErrorCode::InternalError); items.len()];
        let mut jobs = Vec::new();
        let mut idx = Vec::new();
        for (i, (l, (_, parts))) in lists.into_iter().zip(items).enumerate() {
            match l.map(|l| (total(parts).cmp(&l.size()), l)) {
                Ok((std::cmp::Ordering::Less, _)) => out[i] = Err(ErrorCode::InvalidParams),
                Ok((std::cmp::Ordering::Greater, _)) => out[i] = Err(ErrorCode::TransferFail),
                Ok((std::cmp::Ordering::Equal, l)) => {
                    jobs.push((parts.clone(), l));
                    idx.push(i);
                }
                Err(e) => out[i] = Err(e),
            }
        }
        let results = self.pull_many(&jobs).await;
        for ((i, (_, l)), r) in idx.into_iter().zip(&jobs).zip(results) {
            if r.is_ok() {
                self.remember(items[i].0, &l.replicas);
            }
            out[i] = r.map(|()| l.size());
        }
        out
    }

    /// Values of many keys (missing keys are `ObjectNotFound`).
    ///
    /// Values reached with a copy (as in [`Client::get`]) go straight into their vectors;
    /// the others are read through the staging buffer, where every value must fit at the
    /// same time.
    pub async fn get_batch(&self, keys: &[&str]) -> Vec<Result<Vec<u8>, ErrorCode>> {
        self.batch_read(keys, true)
            .await
            .into_iter()
            .map(|r| {
                r.map(|v| match v {
                    Fetched::Copied(v) => v,
                    Fetched::Staged(s) => s.to_vec(),
                })
            })
            .collect()
    }

    /// Values of many keys, left in the staging buffer (see [`Client::get_staged`]); every
    /// value must fit in the staging buffer at the same time.
    pub async fn get_batch_staged(&self, keys: &[&str]) -> Vec<Result<StagedValue, ErrorCode>> {
        self.batch_read(keys, false)
            .await
            .into_iter()
            .map(|r| {
                r.and_then(|v| match v {
                    Fetched::Staged(s) => Ok(s),
                    Fetched::Copied(_) => Err(ErrorCode::InternalError),
                })
            })
            .collect()
    }

    /// One `batch_get_replica_list`, a staging slice reserved per value (all held until
    /// the end), then each value copied straight into a new vector if `copy_out` and this
    /// client reaches its preferred replica with a copy, else read into its slice (network
    /// reads concurrently, with failover).
    async fn batch_read(&self, keys: &[&str], copy_out: bool) -> Vec<Result<Fetched, ErrorCode>> {
        let owned: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        // Keys read or written here before are read into the staging buffer while the
        // master answers, unless this client reaches their bytes with a plain copy.
        let mut staged_guesses = Vec::with_capacity(keys.len());
        for key in keys {
            let guess = match self.inner.locations.get(key) {
                Some(rep) if !copy_out || self.direct_range(&rep).await.is_none() => self
                    .inner
                    .staging
                    .as_ref()
                    .and_then(|st| st.take(rep.size))
                    .map(|s| (rep, s)),
                _ => None,
            };
            staged_guesses.push(guess);
        }
        let guesses: Vec<_> = staged_guesses
            .iter()
            .map(|g| {
                g.as_ref()
                    .map(|(rep, s)| (vec![(s.addr(), rep.size)], rep.clone()))
            })
            .collect();
        let (lists, hits) = match self.batch_lookup(&owned, &guesses).await {
            Ok(found) => found,
            Err(e) => return keys.iter().map(|_| Err(e)).collect(),
        };
        let mut out: Vec<Result<Fetched, ErrorCode>> = Vec::with_capacity(keys.len());
        let mut jobs = Vec::new();
        let mut slices = Vec::new();
        let mut held = Vec::new();
        for (((key, l), hit), guess) in keys.iter().zip(lists).zip(hits).zip(staged_guesses) {
            if let (true, Some((_, s))) = (hit, guess) {
                out.push(Ok(Fetched::Staged(StagedValue(s))));
                continue;
            }
            let (l, s) = match l.and_then(|l| self.stage(l.size()).map(|s| (l, s))) {
                Ok(staged) => staged,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            let rep = self.preferred(&l.replicas).filter(|_| copy_out);
            let copied = match rep {
                Some(rep) => self.direct_range(rep).await.map(|r| r.to_vec()),
                None => None,
            };
            // A copy that fails its checksum is read again below, replica by replica.
            if let Some(v) = copied.filter(|v| self.checksum_ok(key, &l, || crc32c::crc32c(v))) {
                out.push(Ok(Fetched::Copied(v)));
                held.push(s);
                continue;
            }
            out.push(Err(ErrorCode::InternalError));
            jobs.push((vec![(s.addr(), l.size())], l));
            slices.push((out.len() - 1, s));
        }
        let results = self.pull_many(&jobs).await;
        for (((i, s), r), (_, l)) in slices.into_iter().zip(results).zip(&jobs) {
            if r.is_ok() {
                self.remember(keys[i], &l.replicas);
            }
            out[i] = r.map(|()| Fetched::Staged(StagedValue(s)));
        }
        drop(held);
        out
    }

    /// Zero-copy batch get: `(key, addr, capacity)` per item; per-item size or error.
    pub async fn batch_get_into(&self, items: &[(&str, u64, u64)]) -> Vec<Result<u64, ErrorCode>> {
        let owned: Vec<String> = items.iter().map(|(k, _, _)| (*k).to_owned()).collect();
        let guesses: Vec<_> = items
            .iter()
            .map(|(key, addr, cap)| {
                let rep = self.inner.locations.get(key).filter(|r| r.size <= *cap)?;
                Some((vec![(*addr, rep.size)], rep))
            })
            .collect();
        let (lists, hits) = match self.batch_lookup(&owned, &guesses).await {
            Ok(found) => found,
            Err(e) => return items.iter().map(|_| Err(e)).collect(),
        };
        let mut out: Vec<Result<u64, ErrorCode>> = vec![Err(ErrorCode::InternalError); items.len()];
        let mut jobs = Vec::new();
        let mut idx = Vec::new();
        for (i, (l, (_, addr, cap))) in lists.into_iter().zip(items).enumerate() {
            if hits[i] {
                out[i] = Ok(l.map(|l| l.size()).unwrap_or(0));
                continue;
            }
            match l {
                Ok(l) if l.size() > *cap => out[i] = Err(ErrorCode::InvalidParams),
                Ok(l) => {
                    jobs.push((vec![(*addr, l.size())], l));
                    idx.push(i);
                }
                Err(e) => out[i] = Err(e),
            }
        }
        let results = self.pull_many(&jobs).await;
        for ((i, (_, l)), r) in idx.into_iter().zip(&jobs).zip(results) {
            if r.is_ok() {
                self.remember(items[i].0, &l.replicas);
            }
            out[i] = r.map(|()| l.size());
        }
        out
    }

    /// Reads one object, trying the local replica first and failing over to the others.
    async fn pull<'a>(
        &self,
        dst: &[(u64, u64)],
        replicas: &'a [ReplicaDescriptor],
    ) -> Result<&'a ReplicaDescriptor, ErrorCode> {
        let me = self.inner.engine.segment_name();
        let mut order: Vec<&ReplicaDescriptor> = replicas.iter().collect();
        order.sort_by_key(|r| r.transport_endpoint != me);
        let mut last = ErrorCode::ReplicaIsNotReady;
        for r in order {
            let reqs = match self.requests(Opcode::Read, dst, r).await {
                Ok(reqs) => reqs,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match self.inner.engine.transfer(&reqs).await {
                Ok(()) => return Ok(r),
                Err(e) => {
                    tracing::warn!(segment = %r.transport_endpoint, error = %e, "read from a replica failed; trying the next");
                    last = map_transfer(&e);
                }
            }
        }
        Err(last)
    }

    // ---- metadata-only calls ----

    /// Whether `key` exists (grants a read lease, as in Mooncake).
    pub async fn is_exist(&self, key: &str) -> Result<bool, ErrorCode> {
        self.inner.master.exist_key(key).await
    }

    /// Existence of many keys.
    pub async fn batch_is_exist(&self, keys: &[String]) -> Vec<Result<bool, ErrorCode>> {
        match self.inner.master.batch_exist_key(keys).await {
            Ok(r) => r,
            Err(e) => keys.iter().map(|_| Err(e)).collect(),
        }
    }

    /// The size of `key`'s value.
    pub async fn get_size(&self, key: &str) -> Result<u64, ErrorCode> {
        Ok(self.inner.master.get_replica_list(key).await?.size())
    }

    /// Removes `key`; `ObjectHasLease` while a reader holds a lease, unless `force`.
    pub async fn remove(&self, key: &str, force: bool) -> Result<(), ErrorCode> {
        self.inner.locations.remove(key);
        self.inner.master.remove(key, force).await
    }

    /// Removes many keys.
    pub async fn batch_remove(&self, keys: &[String], force: bool) -> Vec<Result<(), ErrorCode>> {
        match self.inner.master.batch_remove(keys, force).await {
            Ok(r) => r,
            Err(e) => keys.iter().map(|_| Err(e)).collect(),
        }
    }

    /// Removes every object; returns how many.
    pub async fn remove_all(&self, force: bool) -> Result<u64, ErrorCode> {
        self.inner.master.remove_all(force).await
    }

    /// Stops pinging, unmounts the contributed segment and stops the engine. A contributing
    /// client first drains its segment (see [`Client::drain`]) for up to
    /// [`ClientConfig::drain_timeout`], so the objects only it holds survive its exit. A
    /// durable segment ([`ClientConfig::segment_path`]) is neither drained nor unmounted:
    /// it stays for a restarted client to re-attach.
    pub async fn close(&self) -> Result<(), ErrorCode> {
        if *self.inner.stop.borrow() {
            return Ok(());
        }
        let timeout = self.inner.config.drain_timeout;
        let durable = self.inner.config.segment_path.is_some();
        if self.inner.segment.is_some() && !timeout.is_zero() && !durable {
            match self.drain(timeout).await {
                Ok(r) if r.lost.is_empty() => {
                    tracing::info!(moved = r.moved, "segment drained");
                }
                Ok(r) => tracing::warn!(
                    moved = r.moved,
                    lost = r.lost.len(),
                    first = ?r.lost.iter().take(10).collect::<Vec<_>>(),
                    "segment drained; some objects could not be moved and are lost"
                ),
                Err(ErrorCode::NotSupported) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot drain the segment; its objects are lost")
                }
            }
        }
        if self.inner.stop.send_replace(true) {
            return Ok(());
        }
        // Stop the engine first: copies cut short by the drain timeout must not land after
        // the master reuses their ranges (it frees them when the segment is unmounted).
        let stopped = self
            .inner
            .engine
            .shutdown()
            .await
            .map_err(|e| map_transfer(&e));
        self.unmount_extras().await;
        if let Some((seg, _)) = &self.inner.segment {
            self.inner
                .master
                .unmount_segment(self.inner.id, seg.id)
                .await?;
        }
        stopped
    }

    /// Copies every object whose only replica is on this client's segment to other
    /// segments (the master picks the ranges and stops placing new objects here), for up to
    /// `timeout`. Reads keep working throughout; afterwards the copied objects have a
    /// replica elsewhere. A client without a segment has nothing to drain.
    pub async fn drain(&self, timeout: Duration) -> Result<DrainReport, ErrorCode> {
        let Some((seg, _)) = &self.inner.segment else {
            return Ok(DrainReport::default());
        };
        let m = &self.inner.master;
        let moves = m.drain_segment_start(self.inner.id, seg.id).await?;
        let mut report = DrainReport::default();
        let mut reqs = Vec::with_capacity(moves.len());
        let mut keys = Vec::with_capacity(moves.len());
        for mv in moves {
            let Some(target) = &mv.target else {
                report.lost.push(mv.key);
                continue;
            };
            let src = [(mv.source.buffer_address, mv.source.size)];
            match self.requests(Opcode::Write, &src, target).await {
                Ok(r) => {
                    reqs.extend(r);
                    keys.push(mv.key);
                }
                Err(_) => report.lost.push(mv.key),
            }
        }
        tracing::info!(
            objects = keys.len(),
            "draining: copying objects to other segments"
        );
        let copied = match tokio::time::timeout(timeout, self.transfer_each(&reqs)).await {
            Ok(ok) => ok,
            Err(_) => {
                tracing::warn!(?timeout, "drain timed out");
                vec![false; reqs.len()]
            }
        };
        // Only successful copies are reported: a copy cut short keeps its range reserved
        // until the segment is unmounted, after the engine has stopped.
        let mut done = Vec::new();
        for (key, ok) in keys.into_iter().zip(copied) {
            if ok {
                done.push((key, true));
            } else {
                report.lost.push(key);
            }
        }
        if !done.is_empty() {
            let results = m.drain_segment_end(self.inner.id, &done).await?;
            for ((key, _), r) in done.into_iter().zip(results) {
                match r {
                    Ok(()) => report.moved += 1,
                    // Removed or rewritten during the drain: nothing was lost.
                    Err(ErrorCode::ObjectNotFound) => {}
                    Err(_) => report.lost.push(key),
                }
            }
        }
        Ok(report)
    }
}

/// A value found by [`Client::get_value`], not yet copied out.
#[derive(Debug)]
pub enum Value {
    /// The replica's own bytes, in memory this client maps (its segment, or a same-host
    /// peer's shared memory).
    Mapped(DirectRange),
    /// A copy in the staging buffer.
    Staged(StagedValue),
}

impl Value {
    /// The value's size in bytes.
    pub fn len(&self) -> usize {
        match self {
            Value::Mapped(r) => r.len(),
            Value::Staged(s) => s.len(),
        }
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the value into `out` (exactly [`Value::len`] bytes, possibly uninitialised).
    pub fn read_into_uninit(&self, out: &mut [std::mem::MaybeUninit<u8>]) {
        match self {
            Value::Mapped(r) => r.read_into_uninit(out),
            Value::Staged(s) => s.read_into_uninit(out),
        }
    }

    /// The value as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        match self {
            Value::Mapped(r) => r.to_vec(),
            Value::Staged(s) => s.to_vec(),
        }
    }
}

/// The replica writes of a batch put that go through registered memory: requests, the
/// batch item each belongs to, and its holder.
#[derive(Default)]
struct Queued<'r> {
    requests: Vec<TransferRequest>,
    owners: Vec<usize>,
    holders: Vec<&'r String>,
}

impl<'r> Queued<'r> {
    /// Queues item `j`'s write of `parts` (registered memory) into `rep`.
    async fn add(
        &mut self,
        client: &Client,
        j: usize,
        parts: &[(u64, u64)],
        rep: &'r ReplicaDescriptor,
    ) -> Result<(), ErrorCode> {
        let reqs = client.requests(Opcode::Write, parts, rep).await?;
        self.owners.extend(reqs.iter().map(|_| j));
        self.holders.extend(reqs.iter().map(|_| &rep.segment_name));
        self.requests.extend(reqs);
        Ok(())
    }
}

/// A batch item's value bound for one holder, sent from the caller's memory.
type LentWrite<'a> = (usize, &'a ReplicaDescriptor, &'a [u8]);

/// A read started before the master answers: destination parts and the replica this
/// client last saw the key in.
type Guess = (Vec<(u64, u64)>, ReplicaDescriptor);

/// One value of a batch read: copied straight into a new vector, or in the staging buffer.
enum Fetched {
    Copied(Vec<u8>),
    Staged(StagedValue),
}

/// Where the bytes of one object of a batch put come from.
enum Source<'a> {
    /// Ranges of registered memory, laid end to end.
    Registered(Vec<(u64, u64)>),
    /// A value in ordinary memory and the staging slice reserved for it: copied straight
    /// into the replicas this client reaches without the network, staged (once) for the
    /// others.
    Bytes(&'a [u8], staging::Slice),
}

impl Source<'_> {
    fn len(&self) -> u64 {
        match self {
            Source::Registered(parts) => total(parts),
            Source::Bytes(value, _) => value.len() as u64,
        }
    }
}

/// Total length of `(addr, len)` parts.
fn total(parts: &[(u64, u64)]) -> u64 {
    parts.iter().map(|(_, n)| n).sum()
}

fn map_transfer(e: &mooncake_transfer_engine::TransferError) -> ErrorCode {
    match e {
        mooncake_transfer_engine::TransferError::AddressNotRegistered { .. } => {
            ErrorCode::InvalidParams
        }
        _ => ErrorCode::TransferFail,
    }
}

/// The contributed segment's memory and whether it was re-attached: the durable file of
/// [`ClientConfig::segment_path`]; else shared memory (so same-host readers copy instead of
/// using TCP) when [`ClientConfig::shared_memory`] allows and `/dev/shm` has room; else
/// anonymous memory.
async fn allocate_segment(
    engine: &TransferEngine,
    config: &ClientConfig,
) -> Result<(LocalBuffer, bool), SetupError> {
    let len = config.global_segment_size;
    if let Some(path) = &config.segment_path {
        return Ok(engine.attach_shared_buffer(path, len, "cpu:0").await?);
    }
    if config.shared_memory {
        match engine.allocate_shared_buffer(len, "cpu:0").await {
            Ok(b) => return Ok((b, false)),
            Err(e) => tracing::warn!(
                bytes = len, error = %e,
                "cannot put the segment in shared memory; same-host readers will use TCP"
            ),
        }
    }
    Ok((engine.allocate_buffer(len, "cpu:0").await?, false))
}

/// Starts the engine under `<host>:<port>` with a port from Mooncake's client range
/// (12300-14300), retrying on a name clash.
async fn start_engine(
    config: &ClientConfig,
    host: &str,
    metadata: Option<Arc<dyn mooncake_metadata::MetadataStore>>,
) -> Result<TransferEngine, SetupError> {
    let explicit = config
        .local_hostname
        .contains(':')
        .then(|| config.local_hostname.clone());
    let mut last = None;
    for _ in 0..20 {
        let name = explicit
            .clone()
            .unwrap_or_else(|| format!("{host}:{}", 12_300 + random_u64() % 2_000));
        let engine = EngineConfig {
            auth_token: config.auth_token.clone(),
            ..EngineConfig::new(name)
        };
        let started = match &metadata {
            Some(m) => TransferEngine::start(engine, m.clone()).await,
            None => TransferEngine::start_p2p(engine).await,
        };
        match started {
            Ok(e) => return Ok(e),
            Err(e @ mooncake_transfer_engine::TransferError::InvalidArgument(_))
                if explicit.is_none() =>
            {
                last = Some(e)
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.map_or(
        SetupError::Protocol("no free segment name".into()),
        SetupError::Engine,
    ))
}

/// Runs `each` every ping period until the client stops or is dropped.
async fn every_period<F, Fut>(
    inner: std::sync::Weak<Inner>,
    mut stop: watch::Receiver<bool>,
    mut each: F,
) where
    F: FnMut(Arc<Inner>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let period = match inner.upgrade() {
        Some(i) => i.config.ping_interval,
        None => return,
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        each(inner).await;
    }
}

/// The liveness heartbeat: a ping, and a remount when the master asks for one.
async fn ping(inner: Arc<Inner>) {
    match inner.master.ping(inner.id).await {
        Ok(reply) if reply.status == ClientStatus::NeedRemount => {
            let client = Client {
                inner: inner.clone(),
            };
            let all = client.all_segments();
            if !all.is_empty() {
                tracing::info!(segments = all.len(), "master asked for a remount");
                let _ = inner.master.remount_segments(inner.id, all).await;
            }
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "ping failed"),
    }
}

/// Runs `futures` concurrently in the calling task; their outputs in order.
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
