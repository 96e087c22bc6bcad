//! The edge of the Mooncake processes: the servers' command lines and mains, the
//! gflags-style flag parsers, the one reader of the C++ engine's environment variables,
//! logging set-up and shutdown signals. The `examples/` binaries are thin mains over this
//! crate, and the Python wheel's console scripts (`mooncake_master`,
//! `mooncake_store_service`, `mooncake_client`) run the same code in-process.
//!
//! Key items: [`master::run`] and [`store_service::run`] (a server's `main`, given its
//! `argv`), [`flags::AuthArgs`] and [`flags::config_file_args`] (flags shared by the
//! binaries), [`env::engine_config`] (an `EngineConfig` with Mooncake's `MC_*` variables
//! applied), [`init_tracing`] and [`shutdown_signal`].
//!
//! Library crates never read the environment or install signal handlers; the processes
//! do, through this crate.

pub mod env;
pub mod flags;
pub mod master;
pub mod store_service;

/// Installs the `tracing` subscriber. `verbosity` is Mooncake's `-v=N` (0 = info,
/// 1 = debug, 2+ = trace); `RUST_LOG` overrides it.
pub fn init_tracing(verbosity: u8) {
    let level = match verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    init_tracing_at(level);
}

/// Installs the `tracing` subscriber at `level` (e.g. `"warn"` for load generators whose
/// stdout is a report; `RUST_LOG` overrides it), then the process's data-path tunables
/// read from the environment (`MC_RPC_SPIN_US`, `MC_HUGE_PAGE_READS`; a bad value is
/// logged). Every binary and the Python package start here.
pub fn init_tracing_at(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    mooncake_transfer_engine::Tunables::from_env().install();
}

/// Lets glibc keep up to `MC_MALLOC_RETAIN` bytes of freed heap (default
/// [`env::DEFAULT_MALLOC_RETAIN`]) and serve allocations of up to 32 MiB from the heap,
/// once per process; a later call does nothing. For processes that receive values as new
/// allocations (the Python package's `bytes`, `Client::get` and `get_batch`): glibc
/// otherwise hands the memory a batch of large values freed back to the kernel, and the
/// next batch faults it in again page by page (a `get_batch` of 32 values of 1 MiB: 8,160
/// page faults, half the throughput here). Never more than the process's own peak. `0`,
/// or glibc's own `MALLOC_TRIM_THRESHOLD_` or `MALLOC_MMAP_THRESHOLD_`, leaves the
/// allocator alone; so does a C library other than glibc. A value that is no size is
/// logged as a warning and changes nothing.
pub fn retain_freed_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| match env::malloc_retain() {
        Ok(Some(bytes)) => {
            let ok = mooncake_transfer_engine::keep_freed_heap(bytes);
            tracing::debug!(bytes, ok, "malloc keeps freed memory for the next values");
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("{e}; freed memory is handed back to the kernel as usual"),
    });
}

/// Raises this process's soft limit on open files to its hard limit, as servers do: the
/// master and the store service hold a socket per client connection (two while one
/// sleeps on the reactor) and a common soft default of 1024 runs out long before the
/// machine does. A failure is logged and changes nothing.
pub fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

/// Prints one line to stdout, ignoring a closed stdout: a supervisor that stopped reading
/// our announcements must not be able to kill a running server (`println!` panics on EPIPE).
pub fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Completes on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        _ = term => tracing::info!("SIGTERM received, shutting down"),
    }
}
