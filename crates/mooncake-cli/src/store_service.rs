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
