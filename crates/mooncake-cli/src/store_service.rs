//! `mooncake_store_service` (the C++ wheel's `mooncake_client`): contributes memory to the
//! pool so cached data outlives inference servers. Same flags as the C++ binary.
use crate::flags::{parse_secs, parse_size};
use anyhow::Result;
use clap::Parser;
use mooncake_store::{ClientConfig, StoreService, StoreServiceConfig};

/// Contributes a memory segment to a Mooncake store.
#[derive(Debug, Parser)]
#[command(version, about, args_override_self = true)]
struct Args {
    /// Address peers use to reach this process (segment name `<host>:<free port>`);
    /// `MC_TCP_BIND_ADDRESS` overrides it.
    #[arg(long, default_value = "0.0.0.0")]
    host: String,
    /// Port of this process's `/health` and `/metrics` (0 picks one).
    #[arg(long, default_value_t = 50052)]
    port: u16,
    /// Memory contributed, e.g. `"4 GB"` (binary units), `4GiB`, `4294967296`.
    #[arg(long = "global_segment_size", value_parser = parse_size, default_value = "4 GB")]
    global_segment_size: u64,
    /// Staging buffer for the copying APIs (a pure contributor needs none).
    #[arg(long = "local_buffer_size", value_parser = parse_size, default_value = "0")]
    local_buffer_size: u64,
    #[command(flatten)]
    cluster: crate::flags::ClusterArgs,
    /// Transport; this build has `tcp`.
    #[arg(long, default_value = "tcp")]
    protocol: String,
    /// RDMA devices (accepted for compatibility).
    #[arg(long = "device_names", default_value = "")]
    device_names: String,
    /// On SIGTERM/SIGINT, seconds spent copying the objects only this segment holds to
    /// other segments before unmounting it (0 = drop them, as the C++ `mooncake_client` does).
    #[arg(long = "drain_timeout", value_parser = parse_secs, default_value = "30")]
    drain_timeout: std::time::Duration,
    /// Keep the segment in this named shared-memory file (e.g. `/dev/shm/mooncake-seg-1`;
    /// hugetlbfs works too): a store service restarted with the same path after a crash or
    /// an upgrade re-attaches the memory and serves its objects again, if the master's
    /// grace period has not run out. Such a segment is not drained on shutdown.
    #[arg(long = "segment_path")]
    segment_path: Option<std::path::PathBuf>,
    /// Put the segment in a shared-memory file (`/dev/shm`), so clients on this host copy
    /// with `memcpy` instead of TCP (falls back to private memory if `/dev/shm` is full).
    #[arg(long = "shared_memory", value_parser = crate::flags::parse_bool, num_args = 0..=1, default_missing_value = "true", default_value = "true")]
    shared_memory: bool,
    /// A disk tier in this directory: objects the master evicts from this segment are
    /// demoted to it instead of dropped, and read back on demand (docs/disk-tier.md).
    #[arg(long = "disk_path")]
    disk_path: Option<std::path::PathBuf>,
    /// Bytes the disk tier may take, e.g. `"200 GB"` (default: 80% of the free space).
    #[arg(long = "disk_capacity", value_parser = parse_size)]
    disk_capacity: Option<u64>,
    /// Disk requests in flight at most (threads of the tier's I/O pool).
    #[arg(long = "disk_io_threads", default_value_t = 8)]
    disk_io_threads: usize,
    /// Sync every disk record (`fdatasync`, and its directory after the rename) before it
    /// counts as complete: records survive a power loss, at a cost per demotion
    /// (docs/disk-tier.md measures it).
    #[arg(long = "disk_fsync", value_parser = crate::flags::parse_bool, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    disk_fsync: bool,
    /// Mooncake's spelling: a disk tier at `MOONCAKE_OFFLOAD_FILE_STORAGE_PATH` of
    /// `MOONCAKE_OFFLOAD_TOTAL_SIZE_LIMIT_BYTES` (unless `--disk_path` is given).
    #[arg(long = "enable_offload", value_parser = crate::flags::parse_bool, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    enable_offload: bool,
    /// Accepted for compatibility.
    #[arg(long, default_value_t = 1, hide = true)]
    threads: usize,
    /// Log verbosity: 0 info, 1 debug, 2 trace.
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    verbosity: u8,
    /// Parse and validate the flags, print the settings and exit 0 without starting: a
    /// deployment's command line checked before it is rolled out.
    #[arg(long = "check_flags", value_parser = crate::flags::parse_bool, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    check_flags: bool,
}

/// Runs `mooncake_store_service` with `argv` (program name first) until SIGINT or
/// SIGTERM, then unmounts the segment.
pub fn run(argv: Vec<String>) -> Result<()> {
    let args = Args::parse_from(argv);
    crate::init_tracing(args.verbosity);
    crate::raise_fd_limit();
    let host = crate::env::setting("MC_TCP_BIND_ADDRESS").unwrap_or(args.host.clone());
    let offload = if args.enable_offload {
        crate::env::offload_settings()
    } else {
        (None, None)
    };
    let disk = disk_config(
        DiskFlags {
            path: args.disk_path.clone(),
            capacity: args.disk_capacity,
            io_threads: args.disk_io_threads,
            fsync: args.disk_fsync,
            enable_offload: args.enable_offload,
        },
        offload,
        |p| mooncake_transfer_engine::free_bytes(p).ok(),
    )?;
    let config = StoreServiceConfig {
        client: ClientConfig {
            local_hostname: host.clone(),
            metadata_server: args.cluster.metadata_server,
            global_segment_size: args.global_segment_size,
            local_buffer_size: args.local_buffer_size,
            protocol: args.protocol,
            device_name: args.device_names,
            master_server_addr: args.cluster.master_server_address,
            cluster_id: args.cluster.cluster_id,
            drain_timeout: args.drain_timeout,
            shared_memory: args.shared_memory,
            segment_path: args.segment_path,
            disk,
            auth_token: args.cluster.auth.token().map_err(anyhow::Error::msg)?,
            ..ClientConfig::default()
        },
        http_addr: Some(format!("{host}:{}", args.port)),
    };
    if args.check_flags {
        let c = &config.client;
        let summary = format!(
            "segment {} bytes on {host}, master {}, metadata {}, drain timeout {:?}, segment path {}",
            c.global_segment_size,
            c.master_server_addr,
            c.metadata_server,
            c.drain_timeout,
            c.segment_path
                .as_ref()
                .map_or("none".into(), |p| p.display().to_string()),
        );
        crate::announce(&crate::flags::checked("mooncake_store_service", &summary));
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let service = StoreService::start(config, None).await?;
            let seg = service
                .client()
                .segment()
                .map(|s| (s.name.clone(), s.size))
                .unwrap_or_default();
            crate::announce(&format!(
                "mooncake_store_service segment {} ({} bytes) mounted",
                seg.0, seg.1
            ));
            if let Some(a) = service.http_addr() {
                crate::announce(&format!(
                    "mooncake_store_service metrics on http://{a}/metrics"
                ));
            }
            service.run(crate::shutdown_signal()).await?;
            crate::announce("mooncake_store_service stopped: segment drained and unmounted");
            Ok(())
        })
}

/// The disk-tier settings as given (flags, or the Python `setup` arguments).
#[derive(Debug, Clone, Default)]
pub struct DiskFlags {
    /// `--disk_path` / `ssd_offload_path`.
    pub path: Option<std::path::PathBuf>,
    /// `--disk_capacity`.
    pub capacity: Option<u64>,
    /// `--disk_io_threads`.
    pub io_threads: usize,
    /// `--disk_fsync`.
    pub fsync: bool,
    /// `--enable_offload` / `enable_ssd_offload`.
    pub enable_offload: bool,
}

/// The disk tier from the flags, or from Mooncake's offload environment with
/// `--enable_offload`; the capacity defaults to 80% of the free space where the tier
/// lives (`free` asks the filesystem, after the directory is created).
pub fn disk_config(
    flags: DiskFlags,
    (env_path, env_limit): (Option<String>, Option<String>),
    free: impl Fn(&std::path::Path) -> Option<u64>,
) -> Result<Option<mooncake_store::DiskConfig>> {
    let path = match (flags.path, env_path) {
        (Some(p), _) => p,
        (None, Some(p)) => std::path::PathBuf::from(p),
        (None, None) if flags.enable_offload => anyhow::bail!(
            "--enable_offload needs --disk_path or MOONCAKE_OFFLOAD_FILE_STORAGE_PATH"
        ),
        (None, None) => return Ok(None),
    };
    let capacity = match (flags.capacity, env_limit) {
        (Some(c), _) => c,
        (None, Some(v)) => parse_size(&v)
            .map_err(|e| anyhow::anyhow!("MOONCAKE_OFFLOAD_TOTAL_SIZE_LIMIT_BYTES={v:?}: {e}"))?,
        (None, None) => {
            std::fs::create_dir_all(&path)
                .map_err(|e| anyhow::anyhow!("disk tier {}: not writable: {e}", path.display()))?;
            let f = free(&path).unwrap_or(0);
            let c = f / 10 * 8;
            tracing::info!(
                path = %path.display(),
                capacity = c,
                "no --disk_capacity: using 80% of the free space"
            );
            c
        }
    };
    Ok(Some(mooncake_store::DiskConfig {
        io_threads: flags.io_threads.max(1),
        fsync: flags.fsync,
        ..mooncake_store::DiskConfig::new(path, capacity)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_flags_and_mooncake_offload_spelling() {
        let none = |_: &std::path::Path| None;
        assert!(disk_config(DiskFlags::default(), (None, None), none)
            .unwrap()
            .is_none());
        let flags = DiskFlags {
            path: Some("/d".into()),
            capacity: Some(200 << 30),
            io_threads: 4,
            fsync: true,
            enable_offload: false,
        };
        let c = disk_config(flags, (None, None), none).unwrap().unwrap();
        assert_eq!((c.capacity, c.io_threads, c.fsync), (200 << 30, 4, true));
        let offload = DiskFlags {
            enable_offload: true,
            io_threads: 8,
            ..DiskFlags::default()
        };
        let c = disk_config(
            offload.clone(),
            (Some("/ssd".into()), Some("1073741824".into())),
            none,
        )
        .unwrap()
        .unwrap();
        assert_eq!((c.path.to_str(), c.capacity), (Some("/ssd"), 1 << 30));
        let err = disk_config(offload.clone(), (None, None), none).unwrap_err();
        assert!(
            err.to_string()
                .contains("MOONCAKE_OFFLOAD_FILE_STORAGE_PATH"),
            "{err}"
        );
        let err =
            disk_config(offload, (Some("/ssd".into()), Some("lots".into())), none).unwrap_err();
        assert!(
            err.to_string()
                .contains("MOONCAKE_OFFLOAD_TOTAL_SIZE_LIMIT_BYTES"),
            "{err}"
        );
    }
}
