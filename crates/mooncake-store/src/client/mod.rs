//! `Client`: the store API users call (Mooncake's `MooncakeDistributedStore` in Rust).
//!
//! Control goes to the master (`Arc<dyn MasterApi>`); value bytes go straight between the
//! caller's memory (or the staging buffer) and the contributors' segments through the
//! transfer engine. A client with `global_segment_size > 0` contributes memory: it mounts
//! a segment and keeps itself alive with a ping every second.

mod disk;
mod drain;
mod durable;
mod extra;
mod locations;
mod read;
mod read_batch;
mod sessions;
mod setup;
mod slots;
mod staging;
mod tasks;
mod write;

pub use self::read::Value;
pub use self::sessions::Fragment;
pub use self::staging::StagedValue;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mooncake_transfer_engine::{
    DirectRange, EngineConfig, LocalBuffer, Opcode, TransferEngine, TransferRequest,
};
use tokio::sync::watch;

use self::locations::Locations;
use self::setup::{every_period, ping};
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
    /// The master's `host:port`, or `etcd://h1:2379;h2:2379` to follow the leader of an
    /// HA group of masters (the key `mooncake-store/<cluster_id>/master_view`).
    pub master_server_addr: String,
    /// The HA cluster whose leader an `etcd://` master address names (`--cluster_id` /
    /// `MC_STORE_CLUSTER_ID`; default `mooncake_cluster`).
    pub cluster_id: String,
    /// With an `etcd://` master address: how long a call keeps looking for a leader after
    /// the one it used went away (default 15 s).
    pub master_failover_timeout: Duration,
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
    /// A disk tier for this client's segment (`--disk_path`/`--disk_capacity`, or
    /// Mooncake's `enable_ssd_offload`/`ssd_offload_path`): objects the master evicts from
    /// the segment are demoted there and read back on demand. Needs
    /// `global_segment_size > 0`. Default none.
    pub disk: Option<crate::disk::DiskConfig>,
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
            cluster_id: crate::grpc::DEFAULT_CLUSTER_ID.into(),
            master_failover_timeout: Duration::from_secs(15),
            ping_interval: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(30),
            shared_memory: true,
            segment_path: None,
            auth_token: None,
            verify_checksums: false,
            disk: None,
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
    /// The disk tier could not start.
    #[error("{0}")]
    Disk(#[from] crate::disk::DiskError),
}

struct Inner {
    config: ClientConfig,
    engine: TransferEngine,
    master: Arc<dyn MasterApi>,
    id: ClientId,
    segment: Option<(Segment, LocalBuffer)>,
    /// The segment's disk tier, if any.
    disk: Option<Arc<crate::disk::DiskTier>>,
    staging: Option<Arc<Staging>>,
    locations: Locations,
    /// Reads that met a replica failing its checksum.
    checksum_failures: std::sync::atomic::AtomicU64,
    /// Reads that missed because no replica the master named could be transferred (a miss
    /// the master cannot see).
    read_transfer_failures: std::sync::atomic::AtomicU64,
    sessions: sessions::Sessions,
    /// Slots reserved for this client's next puts (`slots.rs`).
    slots: slots::SlotPool,
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
