//! `mooncake`: the operator's command line for a Mooncake pool.
//!
//! Read-only views come from the master's admin HTTP port (`--admin_address`, the
//! master's `--metrics_port`): `status`, `segments`, `clients`, `explain <key>`, and
//! `drain <segment>` (a drain job, followed with a progress bar). Data commands speak to
//! the master's RPC port (`--master_server_address`) as a store client: `get`, `put`,
//! `remove`, `remove-all --yes`. Tables for people, `--json` for scripts.
#![allow(clippy::print_stdout)]

mod bulk;
mod http;
mod tables;

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use mooncake_store::grpc::{GrpcClientConfig, GrpcMasterClient};
use mooncake_store::{Client, ClientConfig, MasterApi, ReplicateConfig};
use serde_json::{json, Value};

use crate::http::Admin;
use crate::tables::{bytes, percent, print_table};

#[derive(Debug, Parser)]
#[command(version, about = "Look at and operate a Mooncake pool")]
struct Args {
    #[command(flatten)]
    cluster: mooncake_cli::flags::ClusterArgs,
    /// The master's admin HTTP server (`--metrics_host:--metrics_port`).
    #[arg(
        long = "admin_address",
        default_value = "127.0.0.1:9003",
        global = true
    )]
    admin_address: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The pool at a glance: keys, capacity, hit rate, misses by cause.
    Status,
    /// Mounted segments: capacity, use, holder, liveness.
    Segments,
    /// Clients known to the master.
    Clients,
    /// What the master knows of a key: its state and recent history.
    Explain {
        /// The key.
        key: String,
    },
    /// Reads a value (to stdout, or to `-o file`).
    Get {
        /// The key.
        key: String,
        /// Write the value here instead of stdout.
        #[arg(short = 'o', long = "output")]
        output: Option<std::path::PathBuf>,
    },
    /// Stores a file's bytes under a key.
    Put {
        /// The key.
        key: String,
        /// The file to store.
        file: std::path::PathBuf,
        /// Replicas.
        #[arg(long, default_value_t = 1)]
        replicas: usize,
    },
    /// Stores every file of a directory (key = prefix + file name), with a progress bar.
    PutDir {
        /// The directory.
        dir: std::path::PathBuf,
        /// Put before every file name to make the key.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Replicas.
        #[arg(long, default_value_t = 1)]
        replicas: usize,
    },
    /// Writes every key starting with a prefix to a directory, with a progress bar.
    GetDir {
        /// The directory (created if missing).
        dir: std::path::PathBuf,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Largest value expected (the client's staging buffer).
        #[arg(long = "max_value_size", value_parser = mooncake_cli::flags::parse_size, default_value = "64MB")]
        max_value_size: u64,
    },
    /// Removes a key.
    Remove {
        /// The key.
        key: String,
        /// Remove even while a reader holds a lease.
        #[arg(long)]
        force: bool,
    },
    /// Removes every key (asks for `--yes`).
    RemoveAll {
        /// Confirms that every key goes.
        #[arg(long)]
        yes: bool,
        /// Remove leased keys too.
        #[arg(long)]
        force: bool,
    },
    /// Drains a segment: moves its objects elsewhere, then keeps new objects off it.
    Drain {
        /// The segment's name (see `mooncake segments`).
        segment: String,
        /// Move objects only to these segments (default: any in service).
        #[arg(long = "target", value_delimiter = ',')]
        targets: Vec<String>,
        /// Moves in flight at once.
        #[arg(long = "max_concurrency", default_value_t = 4)]
        max_concurrency: u64,
        /// Give up waiting after this many seconds (the job goes on).
        #[arg(long = "timeout_sec", default_value_t = 600)]
        timeout_sec: u64,
    },
}

fn main() {
    let args = Args::parse();
    mooncake_cli::init_tracing_at("error");
    if let Err(e) = run(args) {
        eprintln!("mooncake: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let token = args.cluster.auth.token().map_err(anyhow::Error::msg)?;
    let admin = Admin {
        addr: args.admin_address.clone(),
        token: token.as_ref().map(|t| t.as_str().to_owned()),
    };
    let json_out = args.json;
    match args.command {
        Cmd::Status => status(&admin, json_out),
        Cmd::Segments => segments(&admin, json_out),
        Cmd::Clients => clients(&admin, json_out),
        Cmd::Explain { key } => explain(&admin, &key, json_out),
        Cmd::Drain {
            segment,
            targets,
            max_concurrency,
            timeout_sec,
        } => drain(
            &admin,
            &segment,
            &targets,
            max_concurrency,
            Duration::from_secs(timeout_sec),
            json_out,
        ),
        cmd => runtime()?.block_on(data_command(&args.cluster, &admin, token, cmd, json_out)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn status(admin: &Admin, json_out: bool) -> Result<()> {
    let s = admin.get_json("/api/v1/status")?;
    if json_out {
        return print_json(&s);
    }
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let segs = s["segments"].as_array().cloned().unwrap_or_default();
    let clients = s["clients"].as_array().cloned().unwrap_or_default();
    let alive = |xs: &[Value]| xs.iter().filter(|x| x["alive"] == true).count();
    println!("master         {}", admin.addr);
    println!("keys           {}", n(&s["key_count"]));
    println!(
        "capacity       {} used of {} ({})",
        bytes(n(&s["allocated_bytes"])),
        bytes(n(&s["capacity_bytes"])),
        percent(n(&s["allocated_bytes"]), n(&s["capacity_bytes"]))
    );
    println!("segments       {} ({} alive)", segs.len(), alive(&segs));
    println!(
        "clients        {} ({} alive)",
        clients.len(),
        alive(&clients)
    );
    println!("evicted keys   {}", n(&s["evicted_keys"]));
    println!("lease conflicts {}", n(&s["lease_conflicts"]));
    let mut rows = Vec::new();
    for l in s["lookups"].as_array().into_iter().flatten() {
        let hits = n(&l["hits"]);
        let misses: Vec<(String, u64)> = l["misses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| (m[0].as_str().unwrap_or("?").to_owned(), n(&m[1])))
            .collect();
        let total: u64 = hits + misses.iter().map(|m| m.1).sum::<u64>();
        let causes: Vec<String> = misses
            .iter()
            .filter(|m| m.1 > 0)
            .map(|(c, v)| format!("{c}={v}"))
            .collect();
        rows.push(vec![
            l["op"].as_str().unwrap_or("?").to_owned(),
            hits.to_string(),
            (total - hits).to_string(),
            percent(hits, total),
            if causes.is_empty() {
                "-".into()
            } else {
                causes.join(" ")
            },
        ]);
    }
    println!();
    print_table(
        &["LOOKUP", "HITS", "MISSES", "HIT RATE", "MISSES BY CAUSE"],
        &rows,
    );
    Ok(())
}

fn segments(admin: &Admin, json_out: bool) -> Result<()> {
    let s = admin.get_json("/api/v1/status")?;
    if json_out {
        return print_json(&s["segments"]);
    }
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let rows: Vec<Vec<String>> = s["segments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            vec![
                g["name"].as_str().unwrap_or("?").to_owned(),
                bytes(n(&g["capacity"])),
                bytes(n(&g["used"])),
                percent(n(&g["used"]), n(&g["capacity"])),
                g["holder"].as_str().unwrap_or("?").to_owned(),
                if g["alive"] == true { "alive" } else { "lost" }.to_owned(),
                g["status"].as_str().unwrap_or("?").to_owned(),
            ]
        })
        .collect();
    print_table(
        &[
            "SEGMENT", "CAPACITY", "USED", "USE", "HOLDER", "LIVENESS", "STATUS",
        ],
        &rows,
    );
    Ok(())
}

fn clients(admin: &Admin, json_out: bool) -> Result<()> {
    let s = admin.get_json("/api/v1/status")?;
    if json_out {
        return print_json(&s["clients"]);
    }
    let rows: Vec<Vec<String>> = s["clients"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let segs: Vec<&str> = c["segments"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            vec![
                c["id"].as_str().unwrap_or("?").to_owned(),
                if c["alive"] == true {
                    "alive"
                } else {
                    "must remount"
                }
                .to_owned(),
                if segs.is_empty() {
                    "-".into()
                } else {
                    segs.join(",")
                },
                c["expires_in_ms"]
                    .as_u64()
                    .map_or("-".into(), |ms| format!("{:.1} s", ms as f64 / 1000.0)),
            ]
        })
        .collect();
    print_table(&["CLIENT", "LIVENESS", "SEGMENTS", "EXPIRES IN"], &rows);
    Ok(())
}

fn explain(admin: &Admin, key: &str, json_out: bool) -> Result<()> {
    let path = format!(
        "/explain?key={}",
        percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC)
    );
    let e = admin.get_json(&path)?;
    if json_out {
        return print_json(&e);
    }
    let now = &e["now"];
    let state = now["state"].as_str().unwrap_or("?");
    match state {
        "readable" => println!(
            "{key}: readable, {} on {}; read {} times; lease {} ms left; pin {}",
            bytes(now["size"].as_u64().unwrap_or(0)),
            now["replicas"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            now["reads"],
            now["lease_left_ms"],
            now["pin"].as_str().unwrap_or("?"),
        ),
        _ => println!(
            "{key}: a lookup misses now: {}{}",
            now["cause"].as_str().unwrap_or("?"),
            now["misses"]
                .as_u64()
                .map(|m| format!(" ({m} misses since)"))
                .unwrap_or_default()
        ),
    }
    let asked = e["asked_at_unix_ms"].as_u64().unwrap_or(0);
    let rows: Vec<Vec<String>> = e["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|ev| {
            let ago = ev["ago_ms"].as_u64().unwrap_or(0);
            vec![
                format!(
                    "{} ({:.1} s ago)",
                    unix_ms_text(asked.saturating_sub(ago)),
                    ago as f64 / 1000.0
                ),
                ev["kind"].as_str().unwrap_or("?").to_owned(),
                ev["detail"].as_str().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no recorded events (never written, or older than the master's history)");
    } else {
        print_table(&["WHEN (UTC)", "EVENT", "DETAIL"], &rows);
    }
    Ok(())
}

/// `HH:MM:SS.mmm` of a Unix time in ms (UTC).
fn unix_ms_text(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
}

fn drain(
    admin: &Admin,
    segment: &str,
    targets: &[String],
    max_concurrency: u64,
    timeout: Duration,
    json_out: bool,
) -> Result<()> {
    let status = admin.get_json("/api/v1/status")?;
    let Some(seg) = status["segments"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == segment)
    else {
        bail!("no segment {segment:?} is mounted (see `mooncake segments`)");
    };
    let total = seg["used"].as_u64().unwrap_or(0);
    let body = json!({
        "segments": [segment],
        "target_segments": targets,
        "max_concurrency": max_concurrency,
    });
    let created = admin.post_json("/api/v1/drain_jobs", &body.to_string())?;
    let id = created["job_id"]
        .as_str()
        .context("the master's answer has no job_id")?
        .to_owned();
    let bar = if json_out {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total.max(1))
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(format!("draining {segment}"));
    let deadline = std::time::Instant::now() + timeout;
    let view = loop {
        let v = admin.get_json(&format!("/api/v1/drain_jobs/query?job_id={id}"))?;
        bar.set_position(v["migrated_bytes"].as_u64().unwrap_or(0).min(total.max(1)));
        match v["status_name"].as_str() {
            Some("SUCCEEDED" | "FAILED" | "CANCELED") => break v,
            _ if std::time::Instant::now() > deadline => {
                bar.abandon();
                bail!(
                    "drain job {id} still running after {timeout:?} ({} moved, {} blocked: {}); it goes on in the master",
                    v["succeeded_units"],
                    v["blocked_units"],
                    v["message"]
                );
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    bar.finish_and_clear();
    if json_out {
        print_json(&view)?;
    } else {
        println!(
            "drain job {id} {}: {} objects moved ({}), {} failed, {} blocked",
            view["status_name"].as_str().unwrap_or("?"),
            view["succeeded_units"],
            bytes(view["migrated_bytes"].as_u64().unwrap_or(0)),
            view["failed_units"],
            view["blocked_units"],
        );
    }
    if view["status_name"] != "SUCCEEDED" {
        bail!(
            "drain job {id} ended {}: {}",
            view["status_name"],
            view["message"]
        );
    }
    Ok(())
}

async fn master(
    cluster: &mooncake_cli::flags::ClusterArgs,
    token: Option<mooncake_metadata::AuthToken>,
) -> Result<GrpcMasterClient> {
    let addr = &cluster.master_server_address;
    GrpcMasterClient::connect(
        addr,
        GrpcClientConfig {
            connect_timeout: Duration::from_secs(3),
            auth_token: token,
            ..GrpcClientConfig::default()
        },
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the master at {addr} (--master_server_address): {e} ({})",
            e.code()
        )
    })
}

async fn store_client(
    cluster: &mooncake_cli::flags::ClusterArgs,
    token: Option<mooncake_metadata::AuthToken>,
    buffer: u64,
) -> Result<Client> {
    let config = ClientConfig {
        metadata_server: cluster.metadata_server.clone(),
        master_server_addr: cluster.master_server_address.clone(),
        local_buffer_size: buffer.next_multiple_of(1 << 20).max(16 << 20),
        auth_token: token,
        ..ClientConfig::default()
    };
    Client::setup(config).await.with_context(|| {
        format!(
            "cannot set up a store client (master {}, metadata {})",
            cluster.master_server_address, cluster.metadata_server
        )
    })
}

async fn data_command(
    cluster: &mooncake_cli::flags::ClusterArgs,
    admin: &Admin,
    token: Option<mooncake_metadata::AuthToken>,
    cmd: Cmd,
    json_out: bool,
) -> Result<()> {
    let m = master(cluster, token.clone()).await?;
    match cmd {
        Cmd::Get { key, output } => {
            let list = m.get_replica_list(&key).await.map_err(|e| {
                anyhow::anyhow!(
                    "{key}: {e} ({}); `mooncake explain {key}` says why",
                    e.code()
                )
            })?;
            let client = store_client(cluster, token, list.size()).await?;
            let value = client.get(&key).await;
            client.close().await.ok();
            let value = value.map_err(|e| anyhow::anyhow!("{key}: {e} ({})", e.code()))?;
            match output {
                Some(path) => {
                    std::fs::write(&path, &value)
                        .with_context(|| format!("writing {}", path.display()))?;
                    if json_out {
                        print_json(&json!({"key": key, "size": value.len(), "file": path}))?;
                    } else {
                        println!(
                            "{key}: {} written to {}",
                            bytes(value.len() as u64),
                            path.display()
                        );
                    }
                }
                None => std::io::stdout().write_all(&value)?,
            }
        }
        Cmd::Put {
            key,
            file,
            replicas,
        } => {
            let value =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let client = store_client(cluster, token, value.len() as u64).await?;
            let config = ReplicateConfig {
                replica_num: replicas,
                ..ReplicateConfig::default()
            };
            let r = client.put(&key, &value, &config).await;
            client.close().await.ok();
            r.map_err(|e| anyhow::anyhow!("put {key}: {e} ({})", e.code()))?;
            if json_out {
                print_json(&json!({"key": key, "size": value.len(), "replicas": replicas}))?;
            } else {
                println!(
                    "{key}: stored {} with {replicas} replica(s)",
                    bytes(value.len() as u64)
                );
            }
        }
        Cmd::PutDir {
            dir,
            prefix,
            replicas,
        } => {
            let files = bulk::files(&dir)?;
            let largest = files.iter().map(|f| f.2).max().unwrap_or(0);
            let client = store_client(cluster, token, largest).await?;
            let config = ReplicateConfig {
                replica_num: replicas,
                ..ReplicateConfig::default()
            };
            let r = bulk::put_dir(&client, &files, &prefix, &config, json_out).await;
            client.close().await.ok();
            let r = r?;
            if json_out {
                print_json(&r)?;
            } else {
                println!(
                    "stored {} files ({}) from {}",
                    r["stored"],
                    bytes(r["bytes"].as_u64().unwrap_or(0)),
                    dir.display()
                );
            }
        }
        Cmd::GetDir {
            dir,
            prefix,
            max_value_size,
        } => {
            let keys = bulk::keys_with_prefix(admin, &prefix)?;
            let client = store_client(cluster, token, max_value_size).await?;
            let r = bulk::get_dir(&client, &keys, &dir, json_out).await;
            client.close().await.ok();
            let r = r?;
            if json_out {
                print_json(&r)?;
            } else {
                println!(
                    "wrote {} keys ({}) to {}",
                    r["written"],
                    bytes(r["bytes"].as_u64().unwrap_or(0)),
                    dir.display()
                );
            }
        }
        Cmd::Remove { key, force } => {
            m.remove(&key, force)
                .await
                .map_err(|e| anyhow::anyhow!("remove {key}: {e} ({})", e.code()))?;
            if json_out {
                print_json(&json!({"key": key, "removed": true}))?;
            } else {
                println!("{key}: removed");
            }
        }
        Cmd::RemoveAll { yes, force } => {
            if !yes {
                bail!("remove-all removes every key of the pool: pass --yes to confirm");
            }
            let n = m
                .remove_all(force)
                .await
                .map_err(|e| anyhow::anyhow!("remove-all: {e} ({})", e.code()))?;
            if json_out {
                print_json(&json!({"removed": n}))?;
            } else {
                println!("removed {n} keys");
            }
        }
        _ => unreachable!("admin commands are handled before the runtime starts"),
    }
    Ok(())
}
