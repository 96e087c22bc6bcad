//! `mooncake_store_cli`: fill a store with verifiable objects, or verify them, from the
//! command line (a pure client). Handy for smoke tests and failure drills:
//! `fill --count=1000 --replicas=2`, kill a store service, then `verify --count=1000`.
#![allow(clippy::print_stdout)]

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use mooncake_cli::flags::parse_size;
use mooncake_store::{Client, ClientConfig, ReplicateConfig};

#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    cluster: mooncake_cli::flags::ClusterArgs,
    /// Key prefix.
    #[arg(long, default_value = "cli")]
    prefix: String,
    /// Number of objects.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Index of the first object (keys `<prefix>-<first>` … `<prefix>-<first+count-1>`).
    #[arg(long, default_value_t = 0)]
    first: usize,
    /// Bytes per object.
    #[arg(long, value_parser = parse_size, default_value = "16KiB")]
    size: u64,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Stores `count` objects whose bytes derive from their index.
    Fill {
        /// Replicas per object.
        #[arg(long, default_value_t = 1)]
        replicas: usize,
        /// A segment name (`host:port`) to place the objects on first.
        #[arg(long)]
        preferred: Option<String>,
    },
    /// Reads every object back and compares it byte for byte; prints the throughput.
    Verify {
        /// Read this many keys per call (`get_batch`); 1 reads them one by one.
        #[arg(long, default_value_t = 1)]
        batch: usize,
    },
    /// Reads every object without comparing its bytes (only its length): the read
    /// throughput, without the cost of generating the expected content.
    Read {
        /// Read this many keys per call (`get_batch`).
        #[arg(long, default_value_t = 32)]
        batch: usize,
    },
    /// Times single `get`s of the first `count` objects, twice (the second pass finds
    /// what the first brought into memory); prints p50/p90/p99 of each pass.
    Latency,
}

/// p50, p90 and p99 of `samples` (microseconds), sorted in place.
fn percentiles(samples: &mut [u64]) -> (u64, u64, u64) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.9), at(0.99))
}

fn content(i: usize, size: u64) -> Vec<u8> {
    (0..size as usize)
        .map(|j| ((i * 31 + j * 7) % 251) as u8)
        .collect()
}

fn main() -> Result<()> {
    let args = Args::parse();
    mooncake_cli::init_tracing_at("warn");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let config = ClientConfig {
                metadata_server: args.cluster.metadata_server.clone(),
                master_server_addr: args.cluster.master_server_address.clone(),
                cluster_id: args.cluster.cluster_id.clone(),
                local_buffer_size: (args.size * 64).max(16 << 20),
                auth_token: args.cluster.auth.token().map_err(anyhow::Error::msg)?,
                ..ClientConfig::default()
            };
            let client = Client::setup(config).await?;
            let keys: Vec<String> = (args.first..args.first + args.count)
                .map(|i| format!("{}-{i}", args.prefix))
                .collect();
            match args.command {
                Cmd::Fill {
                    replicas,
                    preferred,
                } => {
                    let cfg = ReplicateConfig {
                        replica_num: replicas,
                        preferred_segments: preferred.into_iter().collect(),
                        ..Default::default()
                    };
                    for (c, chunk) in keys.chunks(32).enumerate() {
                        let values: Vec<Vec<u8>> = (0..chunk.len())
                            .map(|j| content(args.first + c * 32 + j, args.size))
                            .collect();
                        let items: Vec<(&str, &[u8])> = chunk
                            .iter()
                            .map(String::as_str)
                            .zip(values.iter().map(Vec::as_slice))
                            .collect();
                        for (k, r) in chunk.iter().zip(client.put_batch(&items, &cfg).await) {
                            if let Err(e) = r {
                                bail!("put {k}: {e} ({})", e.code());
                            }
                        }
                    }
                    println!(
                        "stored {} objects of {} bytes with {replicas} replica(s)",
                        args.count, args.size
                    );
                }
                Cmd::Verify { batch } => {
                    let mut bad = 0;
                    let started = std::time::Instant::now();
                    for (c, chunk) in keys.chunks(batch.max(1)).enumerate() {
                        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                        let got = if refs.len() == 1 {
                            vec![client.get(refs[0]).await]
                        } else {
                            client.get_batch(&refs).await
                        };
                        for (j, (k, r)) in chunk.iter().zip(got).enumerate() {
                            match r {
                                Ok(v)
                                    if v == content(
                                        args.first + c * batch.max(1) + j,
                                        args.size,
                                    ) => {}
                                Ok(_) => {
                                    bad += 1;
                                    println!("{k}: content differs");
                                }
                                Err(e) => {
                                    bad += 1;
                                    println!("{k}: {e} ({})", e.code());
                                }
                            }
                        }
                    }
                    let secs = started.elapsed().as_secs_f64();
                    println!(
                        "read {} objects in {secs:.3} s: {:.1} MB/s",
                        args.count,
                        (args.count as u64 * args.size) as f64 / secs / 1e6
                    );
                    if bad > 0 {
                        bail!(
                            "{bad} of {} objects could not be read back intact",
                            args.count
                        );
                    }
                    println!("verified {} objects byte for byte", args.count);
                }
                Cmd::Read { batch } => {
                    let started = std::time::Instant::now();
                    let mut bytes = 0u64;
                    for chunk in keys.chunks(batch.max(1)) {
                        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                        for (k, r) in chunk.iter().zip(client.get_batch(&refs).await) {
                            match r {
                                Ok(v) if v.len() as u64 == args.size => bytes += args.size,
                                Ok(v) => bail!("{k}: {} bytes, want {}", v.len(), args.size),
                                Err(e) => bail!("{k}: {e} ({})", e.code()),
                            }
                        }
                    }
                    let secs = started.elapsed().as_secs_f64();
                    println!(
                        "read {} objects ({bytes} bytes) in {secs:.3} s: {:.1} MB/s",
                        args.count,
                        bytes as f64 / secs / 1e6
                    );
                }
                Cmd::Latency => {
                    for pass in ["first", "second"] {
                        let mut us = Vec::with_capacity(keys.len());
                        for k in &keys {
                            let t = std::time::Instant::now();
                            if let Err(e) = client.get(k).await {
                                bail!("get {k}: {e}");
                            }
                            us.push(t.elapsed().as_micros() as u64);
                        }
                        let (p50, p90, p99) = percentiles(&mut us);
                        println!(
                            "{pass} pass: {} gets, p50 {p50} us, p90 {p90} us, p99 {p99} us",
                            keys.len()
                        );
                    }
                }
            }
            client.close().await.ok();
            Ok(())
        })
}
