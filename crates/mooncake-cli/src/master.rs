//! `mooncake_master`: Mooncake's master with its command line (gflags spelling:
//! `--rpc_port=50051 --enable_http_metadata_server=1 --config_path=mooncake_config.yaml -v=1`).
use std::path::PathBuf;
use std::time::Duration;

use crate::flags::{config_file_args, parse_bool, parse_ms, parse_secs};
use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser};
use mooncake_master::{HaConfig, MasterConfig, MasterServer, ServerConfig, StateConfig};
use mooncake_store::placement::PlacementStrategy;

/// Mooncake's master: object metadata, allocation, leases, eviction, liveness.
#[derive(Debug, Parser)]
#[command(version, about, args_override_self = true)]
struct Args {
    /// Master RPC port (0 picks a free port, printed on start).
    #[arg(long = "rpc_port", default_value_t = 50051)]
    rpc_port: u16,
    /// Deprecated alias of --rpc_port.
    #[arg(long = "port", hide = true)]
    port: Option<u16>,
    /// Address the RPC server binds.
    #[arg(long = "rpc_address", default_value = "0.0.0.0")]
    rpc_address: String,
    /// Run the embedded HTTP metadata server for transfer engines.
    #[arg(long = "enable_http_metadata_server", value_parser = parse_bool, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    enable_http_metadata_server: bool,
    /// Address of the embedded HTTP metadata server (bound exactly, unlike the C++ master).
    #[arg(long = "http_metadata_server_host", default_value = "0.0.0.0")]
    http_metadata_server_host: String,
    /// Port of the embedded HTTP metadata server.
    #[arg(long = "http_metadata_server_port", default_value_t = 8080)]
    http_metadata_server_port: u16,
    /// Address of the metrics and admin HTTP server.
    #[arg(long = "metrics_host", default_value = "0.0.0.0")]
    metrics_host: String,
    /// Port of the metrics and admin HTTP server (`/metrics`, `/health`).
    #[arg(long = "metrics_port", default_value_t = 9003)]
    metrics_port: u16,
    /// Accepted for compatibility; metrics are always served.
    #[arg(long = "enable_metric_reporting", value_parser = parse_bool, num_args = 0..=1, default_missing_value = "true", default_value = "true", hide = true)]
    enable_metric_reporting: bool,
    /// A JSON or YAML file of settings (keys are flag names; `client_live_ttl_sec` for
    /// --client_ttl). Flags given on the command line win over the file.
    #[arg(long = "config_path")]
    config_path: Option<PathBuf>,
    /// Read lease granted by exist and get, in ms (or `10s`).
    #[arg(long = "default_kv_lease_ttl", value_parser = parse_ms, default_value = "10000")]
    default_kv_lease_ttl: Duration,
    /// Read lease of an object that also has a disk copy, in ms, plus 10 ms per MB of
    /// value (at most `--default_kv_lease_ttl`): its memory copy is cheap to drop and reload.
    #[arg(long = "disk_replica_lease_ttl", value_parser = parse_ms, default_value = "100")]
    disk_replica_lease_ttl: Duration,
    /// Write every completed object to its holder's disk tier in the background (the
    /// memory copy stays): objects survive the loss of the holder's memory.
    #[arg(long = "disk_write_through", value_parser = crate::flags::parse_bool, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    disk_write_through: bool,
    /// Soft-pin duration, in ms (or `30m`).
    #[arg(long = "default_kv_soft_pin_ttl", value_parser = parse_ms, default_value = "1800000")]
    default_kv_soft_pin_ttl: Duration,
    /// Longest soft pin a put may ask for (`soft_pin_ttl_ms`), in ms.
    #[arg(long = "max_kv_soft_pin_ttl", value_parser = parse_ms, default_value = "86400000")]
    max_kv_soft_pin_ttl: Duration,
    /// Whether soft-pinned objects may be evicted after all others.
    #[arg(long = "allow_evict_soft_pinned_objects", value_parser = parse_bool, num_args = 0..=1, default_missing_value = "true", default_value = "true")]
    allow_evict_soft_pinned_objects: bool,
    /// Eviction starts above this fraction of capacity (1.0 disables proactive eviction).
    #[arg(long = "eviction_high_watermark_ratio", default_value_t = 0.90)]
    eviction_high_watermark_ratio: f64,
    /// Fraction of capacity one eviction pass frees.
    #[arg(long = "eviction_ratio", default_value_t = 0.05)]
    eviction_ratio: f64,
    /// A contributing client silent this long (seconds) is expired.
    #[arg(long = "client_ttl", value_parser = parse_secs, default_value = "10")]
    client_ttl: Duration,
    /// A durable segment (a store service with `--segment_path`) whose owner went silent
    /// keeps its objects this long (seconds) for a restarted owner; 0 = client_ttl + 5 s.
    #[arg(long = "durable_segment_grace_sec", value_parser = parse_secs, default_value = "0")]
    durable_segment_grace_sec: Duration,
    /// An unfinished put older than this (seconds) is discarded.
    #[arg(long = "put_start_discard_timeout_sec", value_parser = parse_secs, default_value = "30")]
    put_start_discard_timeout_sec: Duration,
    /// Space of a discarded put is reused after this (seconds).
    #[arg(long = "put_start_release_timeout_sec", value_parser = parse_secs, default_value = "600")]
    put_start_release_timeout_sec: Duration,
    /// Keep the master's state (mounted segments, complete objects and their replicas) in
    /// this directory, so that a restarted master (SIGKILL included) serves every completed
    /// object again once the store services remount. Unset: a restart starts empty.
    #[arg(long = "state_dir")]
    state_dir: Option<PathBuf>,
    /// With --state_dir: fsync the log in the background every this many ms (bounds what a
    /// machine crash can lose; a killed master loses nothing); 0 fsyncs before every answer.
    #[arg(long = "state_fsync_ms", value_parser = parse_ms, default_value = "100")]
    state_fsync_ms: Duration,
    /// With --state_dir: restored segments whose owner has not remounted them after this
    /// many seconds are dropped with their objects.
    #[arg(long = "state_restore_grace_sec", value_parser = parse_secs, default_value = "60")]
    state_restore_grace_sec: Duration,
    /// Join an HA group of masters electing their leader through etcd
    /// (--ha_backend_connstring or --etcd_endpoints); standbys follow the leader's state.
    #[arg(long = "enable_ha", value_parser = parse_bool, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    enable_ha: bool,
    /// The HA backend; only `etcd`.
    #[arg(long = "ha_backend_type", default_value = "etcd", value_parser = ["etcd"])]
    ha_backend_type: String,
    /// The etcd cluster of the HA group: `etcd://h1:2379;h2:2379` or `h1:2379;h2:2379`.
    #[arg(long = "ha_backend_connstring", default_value = "")]
    ha_backend_connstring: String,
    /// Legacy form of --enable_ha --ha_backend_connstring=… (`h1:2379;h2:2379`).
    #[arg(long = "etcd_endpoints", default_value = "")]
    etcd_endpoints: String,
    /// The HA group: its leader is named under `mooncake-store/<cluster_id>/master_view`.
    #[arg(long = "cluster_id", env = "MC_STORE_CLUSTER_ID", default_value = mooncake_store::grpc::DEFAULT_CLUSTER_ID)]
    cluster_id: String,
    /// The leader's etcd lease in seconds: a leader killed outright is replaced about this
    /// long after its last renewal.
    #[arg(long = "ha_lease_ttl_sec", value_parser = parse_secs, default_value = "3")]
    ha_lease_ttl_sec: Duration,
    /// The RPC address published while this master leads (default: --rpc_address and the
    /// bound port; required when --rpc_address is a wildcard such as 0.0.0.0).
    #[arg(long = "ha_advertise_address", default_value = "")]
    ha_advertise_address: String,
    /// Where the replication stream to standbys is served while this master leads (port 0
    /// picks one; default: --rpc_address, any port).
    #[arg(long = "ha_replication_address", default_value = "")]
    ha_replication_address: String,
    /// How long a call waits for a standby's acknowledgement before that standby is dropped
    /// from the in-sync set (ms).
    #[arg(long = "ha_replication_timeout_ms", value_parser = parse_ms, default_value = "1000")]
    ha_replication_timeout_ms: Duration,
    /// With --enable_ha: answer a call only once the in-sync standbys have its changes (no
    /// acknowledged change lost on failover); false trades that window (about one round
    /// trip) for write throughput.
    #[arg(long = "ha_sync_replication", value_parser = parse_bool, num_args = 0..=1, default_missing_value = "true", default_value = "true")]
    ha_sync_replication: bool,
    /// Accepted for compatibility: with --enable_ha the leader always streams its changes
    /// to the standbys.
    #[arg(long = "enable_oplog", value_parser = parse_bool, num_args = 0..=1, default_missing_value = "true", default_value = "false", hide = true)]
    enable_oplog: bool,
    /// Replica placement: random, free_ratio_first, local_first.
    #[arg(long = "allocation_strategy", default_value = "random")]
    allocation_strategy: PlacementStrategy,
    /// Segment allocator; only `offset` (Mooncake's default) is implemented.
    #[arg(long = "memory_allocator", default_value = "offset", value_parser = ["offset"])]
    memory_allocator: String,
    /// RPC worker threads (0 = one per core).
    #[arg(long = "rpc_thread_num", default_value_t = 0)]
    rpc_thread_num: usize,
    #[command(flatten)]
    auth: crate::flags::AuthArgs,
    /// RPC connections served at once (further clients wait in the accept backlog).
    #[arg(long = "max_connections", default_value_t = 4096)]
    max_connections: usize,
    /// Log verbosity: 0 info, 1 debug, 2 trace.
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    verbosity: u8,
    /// Accepted for compatibility with glog command lines; logs go to stderr.
    #[arg(long, value_parser = parse_bool, num_args = 0..=1, default_missing_value = "true", default_value = "false", hide = true)]
    logtostderr: bool,
    /// Parse and validate the flags (and --config_path), print the addresses and exit 0
    /// without starting: a deployment's command line checked before it is rolled out.
    #[arg(long = "check_flags", value_parser = parse_bool, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    check_flags: bool,
}

/// Parses the command line, with the config file's settings placed before the flags.
fn parse_args(cli: Vec<String>) -> Result<Args> {
    let first = Args::try_parse_from(&cli).unwrap_or_else(|e| e.exit());
    let Some(path) = &first.config_path else {
        return Ok(first);
    };
    let mut argv = vec![cli[0].clone()];
    argv.extend(
        config_file_args(path, &[("client_live_ttl_sec", "client_ttl")])
            .map_err(anyhow::Error::msg)?,
    );
    argv.extend(cli[1..].iter().cloned());
    let matches = Args::command()
        .try_get_matches_from(&argv)
        .with_context(|| format!("in config file {}", path.display()))?;
    Ok(Args::from_arg_matches(&matches)?)
}

/// Runs `mooncake_master` with `argv` (program name first) until SIGINT or SIGTERM.
pub fn run(argv: Vec<String>) -> Result<()> {
    let args = parse_args(argv)?;
    crate::init_tracing(args.verbosity);
    crate::raise_fd_limit();
    let master = MasterConfig {
        default_kv_lease_ttl: args.default_kv_lease_ttl,
        disk_replica_lease_ttl: args.disk_replica_lease_ttl,
        disk_write_through: args.disk_write_through,
        default_kv_soft_pin_ttl: args.default_kv_soft_pin_ttl,
        max_kv_soft_pin_ttl: args.max_kv_soft_pin_ttl,
        allow_evict_soft_pinned_objects: args.allow_evict_soft_pinned_objects,
        client_ttl: args.client_ttl,
        put_start_discard_timeout: args.put_start_discard_timeout_sec,
        put_start_release_timeout: args.put_start_release_timeout_sec,
        eviction_high_watermark_ratio: args.eviction_high_watermark_ratio,
        eviction_ratio: args.eviction_ratio,
        allocation_strategy: args.allocation_strategy,
        durable_segment_grace: (!args.durable_segment_grace_sec.is_zero())
            .then_some(args.durable_segment_grace_sec),
        ..MasterConfig::default()
    }
    .validate()?;
    let rpc_port = args
        .port
        .filter(|_| args.rpc_port == 50051)
        .unwrap_or(args.rpc_port);
    let etcd = if args.ha_backend_connstring.is_empty() {
        args.etcd_endpoints.clone()
    } else {
        args.ha_backend_connstring.clone()
    };
    let ha = if args.enable_ha || !args.etcd_endpoints.is_empty() {
        if etcd.is_empty() {
            anyhow::bail!("--enable_ha needs the etcd cluster: --ha_backend_connstring=etcd://host:2379 (or --etcd_endpoints=host:2379)");
        }
        let advertise = if args.ha_advertise_address.is_empty() {
            if args.rpc_address == "0.0.0.0" || args.rpc_address == "::" {
                anyhow::bail!("--enable_ha: --rpc_address={} is a wildcard; give --rpc_address (or --ha_advertise_address) an address clients can reach", args.rpc_address);
            }
            // The bound port when --rpc_port=0.
            String::new()
        } else {
            args.ha_advertise_address.clone()
        };
        if args.ha_lease_ttl_sec < Duration::from_secs(2)
            || args.ha_lease_ttl_sec.subsec_nanos() != 0
        {
            anyhow::bail!("--ha_lease_ttl_sec must be a whole number of seconds, at least 2 (etcd leases are whole seconds), not {:?}", args.ha_lease_ttl_sec);
        }
        Some(HaConfig {
            cluster_id: args.cluster_id.clone(),
            lease_ttl: args.ha_lease_ttl_sec,
            replication_addr: if args.ha_replication_address.is_empty() {
                format!("{}:0", args.rpc_address)
            } else {
                args.ha_replication_address.clone()
            },
            replication_timeout: args.ha_replication_timeout_ms,
            sync_replication: args.ha_sync_replication,
            restore_grace: args.state_restore_grace_sec,
            ..HaConfig::new(etcd, advertise)
        })
    } else {
        None
    };
    let config = ServerConfig {
        master,
        rpc_addr: format!("{}:{}", args.rpc_address, rpc_port),
        http_metadata_addr: args.enable_http_metadata_server.then(|| {
            format!(
                "{}:{}",
                args.http_metadata_server_host, args.http_metadata_server_port
            )
        }),
        metrics_addr: Some(format!("{}:{}", args.metrics_host, args.metrics_port)),
        auth_token: args.auth.token().map_err(anyhow::Error::msg)?,
        max_connections: args.max_connections,
        state: args.state_dir.map(|dir| StateConfig {
            fsync_interval: args.state_fsync_ms,
            restore_grace: args.state_restore_grace_sec,
            ..StateConfig::new(dir)
        }),
        ha,
    };
    if args.check_flags {
        crate::announce(&crate::flags::checked(
            "mooncake_master",
            &config_summary(&config),
        ));
        return Ok(());
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if args.rpc_thread_num > 0 {
        runtime.worker_threads(args.rpc_thread_num);
    }
    runtime.enable_all().build()?.block_on(async move {
        let server = MasterServer::bind(config).await?;
        crate::announce(&format!(
            "mooncake_master rpc listening on {}",
            server.rpc_addr()
        ));
        if let Some(a) = server.http_metadata_addr() {
            crate::announce(&format!(
                "mooncake_master http metadata server on http://{a}/metadata"
            ));
        }
        if let Some(a) = server.replication_addr() {
            crate::announce(&format!("mooncake_master ha replication on {a}"));
        }
        if let Some(a) = server.metrics_addr() {
            crate::announce(&format!("mooncake_master metrics on http://{a}/metrics"));
        }
        server.serve(crate::shutdown_signal()).await?;
        crate::announce("mooncake_master stopped");
        Ok(())
    })
}

/// What `--check_flags` prints: where the master would listen.
fn config_summary(c: &ServerConfig) -> String {
    format!(
        "rpc {}, metrics {}, http metadata {}, state {}",
        c.rpc_addr,
        c.metrics_addr.as_deref().unwrap_or("off"),
        c.http_metadata_addr.as_deref().unwrap_or("off"),
        c.state
            .as_ref()
            .map_or("off".into(), |s| s.dir.display().to_string()),
    )
}
