//! `transfer_engine_bench`: Mooncake's transfer-engine benchmark, same flags and the same
//! `Test completed: … throughput X GB/s` line, plus `--json`.
//!
//! Target: `--mode=target` registers `--buffer_size` bytes and serves until SIGINT/SIGTERM.
//! Initiator: `threads` workers each submit batches of `batch_size` requests of
//! `block_size` bytes to `--segment_id` for `--duration` seconds.
#![allow(clippy::print_stdout)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use mooncake_transfer_engine::{Opcode, TransferEngine, TransferRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Target,
    Initiator,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Operation {
    Read,
    Write,
}

/// Flags follow the C++ `transfer_engine_bench` (gflags spelling: `--block_size=65536`).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// `target` serves a buffer; `initiator` drives transfers to a target.
    #[arg(long, value_enum, default_value = "initiator")]
    mode: Mode,
    /// Metadata connection string, e.g. `http://127.0.0.1:8080/metadata`.
    #[arg(
        long = "metadata_server",
        default_value = "http://127.0.0.1:8080/metadata"
    )]
    metadata_server: String,
    /// This engine's segment name. Default: `127.0.0.1:<pid>`.
    #[arg(long = "local_server_name")]
    local_server_name: Option<String>,
    /// The target's segment name (initiator).
    #[arg(long = "segment_id", default_value = "")]
    segment_id: String,
    /// `read` (target -> initiator) or `write` (initiator -> target).
    #[arg(long, value_enum, default_value = "read")]
    operation: Operation,
    /// Bytes per request.
    #[arg(long = "block_size", default_value_t = 65536)]
    block_size: u64,
    /// Requests per batch.
    #[arg(long = "batch_size", default_value_t = 128)]
    batch_size: u64,
    /// Concurrent submitting workers.
    #[arg(long, default_value_t = 4)]
    threads: u64,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Bytes registered on each side.
    #[arg(long = "buffer_size", default_value_t = 1 << 30)]
    buffer_size: u64,
    /// Transport; this build has `tcp`.
    #[arg(long, default_value = "tcp")]
    protocol: String,
    /// RDMA device names (accepted for compatibility; unused by TCP).
    #[arg(long = "device_name", default_value = "")]
    device_name: String,
    /// Unit of the throughput line: GB, GiB, MB, MiB.
    #[arg(long = "report_unit", default_value = "GB")]
    report_unit: String,
    /// Decimals of the throughput line.
    #[arg(long = "report_precision", default_value_t = 2)]
    report_precision: usize,
    /// Pipelined TCP connections per peer (ours; default 4, as the C++ engine's lanes).
    #[arg(long = "connections_per_peer")]
    connections_per_peer: Option<usize>,
    /// Also print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// Accepted for compatibility with glog command lines; logs go to stderr anyway.
    #[arg(long, hide = true)]
    logtostderr: bool,
    /// Log verbosity: 0 info, 1 debug, 2 trace.
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    verbosity: u8,
}

fn unit(name: &str) -> Result<f64> {
    Ok(match name {
        "GB" => 1e9,
        "GiB" => (1u64 << 30) as f64,
        "MB" => 1e6,
        "MiB" => (1u64 << 20) as f64,
        "KB" => 1e3,
        "KiB" => 1024.0,
        other => bail!("--report_unit={other} is not one of GB, GiB, MB, MiB, KB, KiB"),
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    mooncake_cli::init_tracing(args.verbosity);
    if args.protocol != "tcp" {
        bail!(
            "--protocol={} is not available in this build; use --protocol=tcp",
            args.protocol
        );
    }
    let per_unit = unit(&args.report_unit)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args, per_unit))
}

async fn run(args: Args, per_unit: f64) -> Result<()> {
    let name = args
        .local_server_name
        .clone()
        .unwrap_or_else(|| format!("127.0.0.1:{}", std::process::id()));
    let config = mooncake_cli::env::engine_config(&name);
    let metadata =
        mooncake_metadata::connect_with(&args.metadata_server, config.auth_token.clone())
            .with_context(|| format!("--metadata_server={}", args.metadata_server))?;
    let engine = TransferEngine::start(config, metadata).await?;
    let buffer = engine.allocate_buffer(args.buffer_size, "cpu:0").await?;
    let result = match args.mode {
        Mode::Target => {
            mooncake_cli::announce(&format!(
                "target ready: segment {name}, data port {}, buffer {:#x}+{}",
                engine.data_addr().port(),
                buffer.addr(),
                buffer.len()
            ));
            mooncake_cli::shutdown_signal().await;
            Ok(())
        }
        Mode::Initiator => initiate(&args, &engine, buffer.addr(), per_unit).await,
    };
    engine.shutdown().await?;
    result
}

async fn initiate(
    args: &Args,
    engine: &TransferEngine,
    local_base: u64,
    per_unit: f64,
) -> Result<()> {
    if args.segment_id.is_empty() {
        bail!("--segment_id is required in initiator mode");
    }
    let span = args.batch_size * args.threads * args.block_size;
    if span > args.buffer_size {
        bail!(
            "batch_size * threads * block_size = {span} exceeds --buffer_size={}",
            args.buffer_size
        );
    }
    let target = engine.open_segment(&args.segment_id).await?;
    let desc = engine.fetch_descriptor(&args.segment_id).await?;
    if desc.buffers.is_empty() {
        bail!("segment {} has no registered buffer", args.segment_id);
    }
    let opcode = match args.operation {
        Operation::Read => Opcode::Read,
        Operation::Write => Opcode::Write,
    };
    let batches = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for t in 0..args.threads {
        let remote = &desc.buffers[(t as usize) % desc.buffers.len()];
        if remote.length < span {
            bail!(
                "the target's buffer ({} bytes) is smaller than batch_size * threads * block_size",
                remote.length
            );
        }
        // The C++ bench's access pattern: request i of worker t uses slot i*threads + t.
        let requests: Vec<TransferRequest> = (0..args.batch_size)
            .map(|i| {
                let slot = (i * args.threads + t) * args.block_size;
                TransferRequest {
                    opcode,
                    source: local_base + slot,
                    target,
                    target_offset: remote.addr + slot,
                    length: args.block_size,
                }
            })
            .collect();
        let (engine, batches) = (engine.clone(), batches.clone());
        workers.spawn(async move {
            while Instant::now() < deadline {
                engine.transfer(&requests).await?;
                batches.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, mooncake_transfer_engine::TransferError>(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let count = batches.load(Ordering::Relaxed);
    let bytes = count * args.batch_size * args.block_size;
    let throughput = bytes as f64 / elapsed / per_unit;
    println!(
        "Test completed: duration {elapsed:.2}, batch count {count}, throughput {throughput:.prec$} {}/s",
        args.report_unit,
        prec = args.report_precision
    );
    if args.json {
        let op = match args.operation {
            Operation::Read => "read",
            Operation::Write => "write",
        };
        let json = serde_json::json!({
            "operation": op, "block_size": args.block_size, "batch_size": args.batch_size,
            "threads": args.threads, "duration_s": elapsed, "batch_count": count, "bytes": bytes,
            "throughput_gbps": bytes as f64 / elapsed / 1e9,
        });
        println!("{json}");
    }
    Ok(())
}
