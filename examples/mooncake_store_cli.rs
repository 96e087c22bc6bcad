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
    /// Reads every object back and compares it byte for byte.
    Verify,
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
            let keys: Vec<String> = (0..args.count)
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
                            .map(|j| content(c * 32 + j, args.size))
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
                Cmd::Verify => {
                    let mut bad = 0;
                    for (i, k) in keys.iter().enumerate() {
                        match client.get(k).await {
                            Ok(v) if v == content(i, args.size) => {}
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
                    if bad > 0 {
                        bail!(
                            "{bad} of {} objects could not be read back intact",
                            args.count
                        );
                    }
                    println!("verified {} objects byte for byte", args.count);
                }
            }
            client.close().await.ok();
            Ok(())
        })
}
