//! `master_bench`: a load generator for the master's gRPC service. Reports RPC/s for
//! single calls and keys/s for batches of 32, with `--concurrency` callers.
//! Without `--master_server_address` it starts a master in-process on 127.0.0.1:0.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use mooncake_master::{MasterServer, ServerConfig, StateConfig};
use mooncake_store::grpc::{GrpcClientConfig, GrpcMasterClient};
use mooncake_store::{ClientId, MasterApi, ReplicateConfig, Segment, SegmentId};

/// Drives a master with exist/get/put calls and prints rates.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// `host:port` of a running master; default: start one in this process.
    #[arg(long = "master_server_address")]
    master_server_address: Option<String>,
    /// Concurrent callers (each with its own gRPC connection).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds per workload.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Keys in a batch call.
    #[arg(long = "batch_size", default_value_t = 32)]
    batch_size: usize,
    /// Also print the results as JSON.
    #[arg(long)]
    json: bool,
    /// Only put this many 4 KiB objects (batches of 1,000), print the rate, keep the
    /// contributing client alive for --hold_secs, and exit (to measure restores and
    /// failovers of a large master).
    #[arg(long, default_value_t = 0)]
    fill: u64,
    /// With --fill: seconds to keep the objects' segment alive afterwards.
    #[arg(long = "hold_secs", default_value_t = 0)]
    hold_secs: u64,
    /// The in-process master keeps its state in this directory (`mooncake_master
    /// --state_dir`), to measure what durability costs.
    #[arg(long = "state_dir")]
    state_dir: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug)]
enum Workload {
    ExistSingle,
    GetSingle,
    PutSingle,
    ExistBatch,
    GetBatch,
    PutBatch,
}

fn main() -> Result<()> {
    let args = Args::parse();
    mooncake_cli::init_tracing(0);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let (addr, _stop) = match &args.master_server_address {
        Some(a) => (a.clone(), None),
        None => {
            let server = MasterServer::bind(ServerConfig {
                state: args.state_dir.clone().map(StateConfig::new),
                ..ServerConfig::new("127.0.0.1:0")
            })
            .await?;
            let addr = server.rpc_addr().to_string();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(server.serve(async {
                let _ = rx.await;
            }));
            (addr, Some(tx))
        }
    };
    let grpc = GrpcClientConfig {
        auth_token: mooncake_metadata::AuthToken::from_env(),
        ..GrpcClientConfig::default()
    };
    let setup = GrpcMasterClient::connect(&addr, grpc.clone()).await?;
    let seg = Segment {
        id: SegmentId(0xBE4C),
        name: "127.0.0.1:19999".into(),
        base: 1 << 40,
        size: 64 << 30,
        te_endpoint: "127.0.0.1:19999".into(),
        protocol: "tcp".into(),
        host_id: "127.0.0.1".into(),
        durable: false,
    };
    setup.remount_segments(ClientId(0xBE4C), vec![seg]).await?;
    // Keep the contributing client alive for the whole run, as a store service would.
    let pinger = setup.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = pinger.ping(ClientId(0xBE4C)).await;
        }
    });
    if args.fill > 0 {
        let started = Instant::now();
        let mut n = 0;
        while n < args.fill {
            let items: Vec<(String, u64)> = (n..(n + 1000).min(args.fill))
                .map(|i| (format!("fill-{i}"), 4096))
                .collect();
            setup
                .batch_put_start(ClientId(7), &items, &ReplicateConfig::default())
                .await?;
            let ks: Vec<String> = items.into_iter().map(|(k, _)| k).collect();
            setup.batch_put_end(ClientId(7), &ks).await?;
            n += ks.len() as u64;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "filled {n} objects in {secs:.2} s ({:.0} keys/s)",
            n as f64 / secs
        );
        tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
        return Ok(());
    }
    let keys: Arc<Vec<String>> = Arc::new((0..4096).map(|i| format!("bench-{i}")).collect());
    let items: Vec<(String, u64)> = keys.iter().map(|k| (k.clone(), 4096)).collect();
    for chunk in items.chunks(256) {
        setup
            .batch_put_start(ClientId(7), chunk, &ReplicateConfig::default())
            .await?;
        let ks: Vec<String> = chunk.iter().map(|(k, _)| k.clone()).collect();
        setup.batch_put_end(ClientId(7), &ks).await?;
    }
    let mut results = Vec::new();
    println!("{:<14} {:>12} {:>12}", "workload", "calls/s", "keys/s");
    for w in [
        Workload::ExistSingle,
        Workload::GetSingle,
        Workload::PutSingle,
        Workload::ExistBatch,
        Workload::GetBatch,
        Workload::PutBatch,
    ] {
        let (calls, keys_done, secs) = drive(&addr, &args, w, keys.clone()).await?;
        let (cps, kps) = (calls as f64 / secs, keys_done as f64 / secs);
        println!("{:<14} {:>12.0} {:>12.0}", format!("{w:?}"), cps, kps);
        results.push(serde_json::json!({"workload": format!("{w:?}"), "calls_per_s": cps, "keys_per_s": kps}));
    }
    if args.json {
        println!("{}", serde_json::Value::Array(results));
    }
    Ok(())
}

async fn drive(
    addr: &str,
    args: &Args,
    w: Workload,
    keys: Arc<Vec<String>>,
) -> Result<(u64, u64, f64)> {
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..args.concurrency {
        let client = GrpcMasterClient::connect(
            addr,
            GrpcClientConfig {
                auth_token: mooncake_metadata::AuthToken::from_env(),
                ..GrpcClientConfig::default()
            },
        )
        .await?;
        let keys = keys.clone();
        let batch = args.batch_size;
        tasks.spawn(async move {
            let (mut calls, mut done, mut i) = (0u64, 0u64, t * 997);
            let me = ClientId(1000 + t as u128);
            let cfg = ReplicateConfig::default();
            while Instant::now() < deadline {
                let n = keys.len();
                match w {
                    Workload::ExistSingle => {
                        assert_eq!(client.exist_key(&keys[i % n]).await, Ok(true))
                    }
                    Workload::GetSingle => {
                        assert!(client.get_replica_list(&keys[i % n]).await.is_ok())
                    }
                    Workload::PutSingle => {
                        let k = format!("w{t}-{i}");
                        client
                            .put_start(me, &k, 4096, &cfg)
                            .await
                            .expect("put_start");
                        client.put_end(me, &k).await.expect("put_end");
                        client.remove(&k, true).await.expect("remove");
                        calls += 2;
                    }
                    Workload::ExistBatch | Workload::GetBatch | Workload::PutBatch => {
                        let ks: Vec<String> =
                            (0..batch).map(|j| keys[(i + j) % n].clone()).collect();
                        match w {
                            Workload::ExistBatch => {
                                let r = client.batch_exist_key(&ks).await.expect("batch_exist_key");
                                assert!(r.iter().all(|x| *x == Ok(true)));
                            }
                            Workload::GetBatch => {
                                let r =
                                    client.batch_get_replica_list(&ks).await.expect("batch_get");
                                assert!(r.iter().all(Result::is_ok));
                            }
                            _ => {
                                let ks: Vec<String> =
                                    (0..batch).map(|j| format!("w{t}-{i}-{j}")).collect();
                                let items: Vec<(String, u64)> =
                                    ks.iter().map(|k| (k.clone(), 4096)).collect();
                                let r = client
                                    .batch_put_start(me, &items, &cfg)
                                    .await
                                    .expect("batch_put_start");
                                assert!(r.iter().all(Result::is_ok));
                                client.batch_put_end(me, &ks).await.expect("batch_put_end");
                                client.batch_remove(&ks, true).await.expect("batch_remove");
                                calls += 2;
                            }
                        }
                        done += batch as u64 - 1;
                    }
                }
                calls += 1;
                done += 1;
                i += batch;
            }
            (calls, done)
        });
    }
    let (mut calls, mut done) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let (c, d) = r?;
        calls += c;
        done += d;
    }
    Ok((calls, done, start.elapsed().as_secs_f64()))
}
