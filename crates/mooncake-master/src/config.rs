use std::path::PathBuf;
use std::time::Duration;

use mooncake_store::placement::PlacementStrategy;

/// Settings of the master core; defaults are Mooncake's.
#[derive(Debug, Clone, PartialEq)]
pub struct MasterConfig {
    /// Read lease granted by exist / get_replica_list (`--default_kv_lease_ttl`, 10 s).
    pub default_kv_lease_ttl: Duration,
    /// Read lease of an object that also has a disk copy (`--disk_replica_lease_ttl`,
    /// 100 ms, plus 10 ms per MB of value so a reader at 100 MB/s finishes in time; at
    /// most `default_kv_lease_ttl`): its memory copy is cheap to drop and load again, and
    /// a long lease would hold a scan of a disk tier larger than memory to memory/lease.
    pub disk_replica_lease_ttl: Duration,
    /// Write every completed object to its holder's disk tier in the background, keeping
    /// its memory copy (`--disk_write_through`, off): objects then survive the loss of the
    /// holder's memory, and evicting them costs no demotion.
    pub disk_write_through: bool,
    /// Soft-pin duration (`--default_kv_soft_pin_ttl`, 30 min).
    pub default_kv_soft_pin_ttl: Duration,
    /// Longest soft pin a put may ask for (`--max_kv_soft_pin_ttl`, 24 h); longer is
    /// `InvalidParams`.
    pub max_kv_soft_pin_ttl: Duration,
    /// Whether soft-pinned objects may be evicted after all others (`true`).
    pub allow_evict_soft_pinned_objects: bool,
    /// A contributing client silent this long is expired (`--client_ttl`, 10 s).
    pub client_ttl: Duration,
    /// An unfinished put older than this may be preempted / is discarded (30 s).
    pub put_start_discard_timeout: Duration,
    /// Space of a preempted put is reused only after this (600 s): its writer may still write.
    pub put_start_release_timeout: Duration,
    /// Eviction starts above this fraction of capacity (0.90; 1.0 disables it).
    pub eviction_high_watermark_ratio: f64,
    /// Fraction of capacity each eviction pass frees (0.05).
    pub eviction_ratio: f64,
    /// Replica placement (`--allocation_strategy`, `random`).
    pub allocation_strategy: PlacementStrategy,
    /// How long a durable segment whose owner went silent keeps its objects, waiting for a
    /// restarted owner to remount it (`--durable_segment_grace_sec`); `None` is
    /// `client_ttl` + 5 s.
    pub durable_segment_grace: Option<Duration>,
    /// Seed of placement's random choices.
    pub seed: u64,
}

impl Default for MasterConfig {
    fn default() -> Self {
        Self {
            default_kv_lease_ttl: Duration::from_secs(10),
            disk_replica_lease_ttl: Duration::from_millis(100),
            disk_write_through: false,
            default_kv_soft_pin_ttl: Duration::from_secs(30 * 60),
            max_kv_soft_pin_ttl: Duration::from_secs(24 * 3600),
            allow_evict_soft_pinned_objects: true,
            client_ttl: Duration::from_secs(10),
            put_start_discard_timeout: Duration::from_secs(30),
            put_start_release_timeout: Duration::from_secs(600),
            eviction_high_watermark_ratio: 0.90,
            eviction_ratio: 0.05,
            allocation_strategy: PlacementStrategy::Random,
            durable_segment_grace: None,
            seed: 0x5EED,
        }
    }
}

/// Restart durability (`--state_dir`): where the master keeps its journal and snapshot,
/// and how hard it syncs them. Without it (the default) a restarted master starts empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// The state directory (`--state_dir`); created if missing, locked while the master
    /// runs.
    pub dir: PathBuf,
    /// How often the log is fsynced in the background (`--state_fsync_ms`, 100 ms). Every
    /// change is written to the log before its call is answered, so a killed master loses
    /// nothing; a machine crash may lose the changes of the last interval. Zero fsyncs
    /// before every answer.
    pub fsync_interval: Duration,
    /// How long restored segments wait for their owners to remount them before they and
    /// their objects are dropped (`--state_restore_grace_sec`, 60 s).
    pub restore_grace: Duration,
    /// The log is folded into a new snapshot when it grows past this many bytes (64 MiB).
    pub compact_bytes: u64,
}

impl StateConfig {
    /// Mooncake-in-Rust's defaults for a state directory at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            fsync_interval: Duration::from_millis(100),
            restore_grace: Duration::from_secs(60),
            compact_bytes: 64 << 20,
        }
    }
}

/// A setting outside its valid range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid master setting {field}: {reason}")]
pub struct ConfigError {
    /// The flag / config-file key.
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl MasterConfig {
    /// The read lease of an object of `size` bytes that also has a disk copy: the base
    /// lease plus 10 ns per byte (100 MB/s), at most the default lease.
    pub fn disk_lease(&self, size: u64) -> Duration {
        (self.disk_replica_lease_ttl + Duration::from_nanos(size.saturating_mul(10)))
            .min(self.default_kv_lease_ttl)
    }

    /// The grace period of durable segments.
    pub fn durable_grace(&self) -> Duration {
        self.durable_segment_grace
            .unwrap_or(self.client_ttl + Duration::from_secs(5))
    }

    /// Checks ranges (the C++ master refuses to start on the same errors).
    pub fn validate(self) -> Result<Self, ConfigError> {
        if !(0.0..=1.0).contains(&self.eviction_high_watermark_ratio) {
            return Err(ConfigError {
                field: "eviction_high_watermark_ratio",
                reason: format!(
                    "{} is not within [0, 1]",
                    self.eviction_high_watermark_ratio
                ),
            });
        }
        if !(0.0..=1.0).contains(&self.eviction_ratio) {
            return Err(ConfigError {
                field: "eviction_ratio",
                reason: format!("{} is not within [0, 1]", self.eviction_ratio),
            });
        }
        if self.client_ttl.is_zero() {
            return Err(ConfigError {
                field: "client_ttl",
                reason: "must be positive".into(),
            });
        }
        Ok(self)
    }
}
