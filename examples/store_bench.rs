//! `store_bench`: the baseline's store workload plan (`observed-behaviour.md` §2) against a
//! running master and store service, as a pure client (every byte crosses the transport).
//!
//! Value sizes 4 KiB, 64 KiB, 1 MiB, 16 MiB; single calls and batches of 32; the copying
//! (`put`/`get`) and zero-copy (`put_from`/`get_into`) APIs; a warm-up; a progress bar; a
//! result table (MB/s, ops/s, p50/p99 µs per call) and JSON output. `--procs=N` runs N
//! client processes released together (aggregate throughput). `--redis=host:port` runs the
//! copying and batch rows of the same plan against a Redis server instead.
#![allow(clippy::print_stdout)]

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use mooncake_cli::flags::parse_size;
use mooncake_store::{Client, ClientConfig, ReplicateConfig};
use mooncake_transfer_engine::LocalBuffer;

#[path = "store_bench/target.rs"]
mod target;
use target::Target;

/// Runs the store workload plan and prints a table.
#[derive(Debug, Parser, Clone)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    cluster: mooncake_cli::flags::ClusterArgs,
    /// This client's host.
    #[arg(long = "local_hostname", default_value = "127.0.0.1")]
    local_hostname: String,
    /// Staging buffer of the copying APIs.
    #[arg(long = "local_buffer_size", value_parser = parse_size, default_value = "1 GB")]
    local_buffer_size: u64,
    /// Value sizes, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_size, default_value = "4KiB,64KiB,1MiB,16MiB")]
    sizes: Vec<u64>,
    /// Which API pairs to run, comma-separated: `copy` (put/get), `zero_copy`
    /// (put_from/get_into), `batch` (put_batch/get_batch), `batch_zero_copy`
    /// (batch_put_from/batch_get_into).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "copy,zero_copy,batch,batch_zero_copy"
    )]
    apis: Vec<Api>,
    /// Multiplies every call count (0.1 for a quick run).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Bytes written and read before measuring (pre-faults the contributor's segment).
    #[arg(long = "warmup_bytes", value_parser = parse_size, default_value = "1.5 GB")]
    warmup_bytes: u64,
    /// Concurrent client processes for the concurrency workload (0 skips it).
    #[arg(long, value_delimiter = ',', default_value = "2,4")]
    procs: Vec<usize>,
    /// Skip the single-client workloads (run only the concurrency cases).
    #[arg(long)]
    only_procs: bool,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
    /// Record and verify CRC-32C checksums of every value (to measure their cost).
    #[arg(long = "verify_checksums")]
    verify_checksums: bool,
    /// Measure the Redis server at this `host:port` (or `redis://` URL) instead: the
    /// `copy` and `batch` rows as SET/GET and MSET/MGET, and the concurrency rows; the
    /// zero-copy APIs have no Redis counterpart and are skipped.
    #[arg(long)]
    redis: Option<String>,
    /// Internal: run as one worker of the concurrency workload.
    #[arg(long, hide = true)]
    worker: Option<String>,
}

/// A pair of store APIs measured together (the put fills what the get reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
enum Api {
    Copy,
    ZeroCopy,
    Batch,
    BatchZeroCopy,
}

#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    size: u64,
    op: String,
    items: u64,
    mb_per_s: f64,
    ops_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

fn counts(size: u64) -> (u64, u64) {
    match size {
        s if s <= 4 << 10 => (2000, 60),
        s if s <= 64 << 10 => (1000, 30),
        s if s <= 1 << 20 => (256, 12),
        _ => (48, 3),
    }
}

fn human(size: u64) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{}MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{}KiB", s >> 10),
        s => format!("{s}B"),
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    mooncake_cli::init_tracing_at("warn");
    // As the Python package does: the values of `get` and `get_batch` (and Redis's) are new
    // allocations, which glibc would otherwise fault in again for every batch.
    mooncake_cli::retain_freed_memory();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            if let Some(spec) = args.worker.clone() {
                return worker(&args, &spec).await;
            }
            run(args).await
        })
}

async fn client(args: &Args, local_buffer: u64) -> Result<Client> {
    let config = ClientConfig {
        local_hostname: args.local_hostname.clone(),
        metadata_server: args.cluster.metadata_server.clone(),
        global_segment_size: 0,
        local_buffer_size: local_buffer,
        master_server_addr: args.cluster.master_server_address.clone(),
        cluster_id: args.cluster.cluster_id.clone(),
        verify_checksums: args.verify_checksums,
        auth_token: args.cluster.auth.token().map_err(anyhow::Error::msg)?,
        ..ClientConfig::default()
    };
    Client::setup(config).await.context("store client setup")
}

fn random_value(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Recorder {
    lat: Vec<Duration>,
    start: Instant,
}

impl Recorder {
    fn new() -> Self {
        Self {
            lat: Vec::new(),
            start: Instant::now(),
        }
    }

    fn row(mut self, size: u64, op: &str, items: u64) -> Row {
        let secs = self.start.elapsed().as_secs_f64();
        self.lat.sort();
        let pct = |p: f64| {
            let i = ((self.lat.len() as f64 - 1.0) * p).round() as usize;
            self.lat
                .get(i)
                .map(|d| d.as_secs_f64() * 1e6)
                .unwrap_or(0.0)
        };
        Row {
            size,
            op: op.into(),
            items,
            mb_per_s: (items * size) as f64 / secs / 1e6,
            ops_per_s: items as f64 / secs,
            p50_us: pct(0.5),
            p99_us: pct(0.99),
        }
    }
}

/// The store the plan runs against, as the arguments say.
async fn target(args: &Args, local_buffer: u64) -> Result<Target> {
    Ok(match &args.redis {
        Some(addr) => Target::redis(addr).await?,
        None => Target::Mooncake(client(args, local_buffer).await?),
    })
}

async fn run(args: Args) -> Result<()> {
    let t = target(&args, args.local_buffer_size).await?;
    let max = args.sizes.iter().copied().max().unwrap_or(1 << 20);
    let zc = match t.mooncake() {
        Some(c) => Some(
            c.engine()
                .allocate_buffer((256 << 20).max(32 * max), "cpu:0")
                .await?,
        ),
        None => None,
    };
    // Redis has no counterpart of the zero-copy APIs.
    let apis: Vec<Api> = args
        .apis
        .iter()
        .copied()
        .filter(|a| zc.is_some() || matches!(a, Api::Copy | Api::Batch))
        .collect();
    let mut rows = Vec::new();
    if !args.only_procs {
        warmup(&t, zc.as_ref(), args.warmup_bytes, args.quiet).await?;
        let total: u64 = args
            .sizes
            .iter()
            .map(|s| {
                let (n, b) = counts(*s);
                let singles = [Api::Copy, Api::ZeroCopy];
                let per = |api: &Api| -> u64 {
                    let calls = if singles.contains(api) { n } else { b };
                    2 * ((calls as f64 * args.scale).ceil() as u64)
                };
                apis.iter().map(per).sum::<u64>()
            })
            .sum();
        let bar = if args.quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(total)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} calls  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        for &size in &args.sizes {
            rows.extend(single_client(&t, zc.as_ref(), size, &apis, &args, &bar).await?);
        }
        bar.finish_and_clear();
    }
    for &n in args.procs.iter().filter(|n| **n > 0) {
        for (size, count) in [(64u64 << 10, 600u64), (1 << 20, 150)] {
            let count = ((count as f64 * args.scale).ceil() as u64).max(1);
            rows.extend(concurrency(&args, n, size, count).await?);
        }
    }
    print_table(&rows);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)?;
        println!("results written to {}", path.display());
    }
    t.close().await;
    Ok(())
}

/// Writes and reads `bytes` in values of 16 MiB, then removes them: pre-faults the
/// contributor's segment (and, for the store, the zero-copy buffer the reads fill).
async fn warmup(t: &Target, zc: Option<&LocalBuffer>, bytes: u64, quiet: bool) -> Result<()> {
    let chunk = 16u64 << 20;
    let n = bytes / chunk;
    if n == 0 {
        return Ok(());
    }
    if !quiet {
        eprintln!("warm-up: writing and reading {} MiB", n * 16);
    }
    let value = random_value(chunk as usize, 99);
    let keys: Vec<String> = (0..n).map(|i| format!("warmup-{i}")).collect();
    match (t.mooncake(), zc) {
        (Some(c), Some(zc)) => {
            zc.write_at(0, &value);
            for k in &keys {
                c.put_from(k, zc.addr(), chunk, &ReplicateConfig::default())
                    .await
                    .map_err(|e| anyhow::anyhow!("warm-up put: {e}"))?;
            }
            for k in &keys {
                c.get_into(k, zc.addr() + chunk, chunk)
                    .await
                    .map_err(|e| anyhow::anyhow!("warm-up get: {e}"))?;
            }
        }
        _ => {
            for k in &keys {
                t.put(k, &value).await.context("warm-up put")?;
            }
            for k in &keys {
                t.get(k).await.context("warm-up get")?;
            }
        }
    }
    t.remove(&keys).await;
    Ok(())
}

/// One value size's share of the plan: the calls per row, the value, the keys.
struct Plan<'a> {
    size: u64,
    /// Single calls per row.
    n: u64,
    /// Batches of 32 per row.
    b: u64,
    value: Vec<u8>,
    tag: String,
    keys: Vec<String>,
    bar: &'a ProgressBar,
}

impl Plan<'_> {
    fn batches(&self) -> impl Iterator<Item = &[String]> {
        self.keys.chunks(32).take(self.b as usize)
    }
}

/// The rows of one value size, in the order of `Api`: each pair of `apis` puts then gets,
/// and its keys are removed after it. The zero-copy pairs run only against the store
/// (with its registered buffer `zc`).
async fn single_client(
    target: &Target,
    zc: Option<&LocalBuffer>,
    size: u64,
    apis: &[Api],
    args: &Args,
    bar: &ProgressBar,
) -> Result<Vec<Row>> {
    let (n, b) = counts(size);
    let n = ((n as f64 * args.scale).ceil() as u64).max(1);
    let b = ((b as f64 * args.scale).ceil() as u64).max(1);
    let tag = human(size);
    let plan = Plan {
        size,
        n,
        b,
        value: random_value(size as usize, size),
        keys: (0..n.max(b * 32))
            .map(|i| format!("bench-{tag}-{i}"))
            .collect(),
        tag,
        bar,
    };
    let store = target.mooncake().zip(zc);
    let mut rows = Vec::new();
    let order = [Api::Copy, Api::ZeroCopy, Api::Batch, Api::BatchZeroCopy];
    for api in order.iter().filter(|a| apis.contains(a)) {
        match (api, store) {
            (Api::Copy, _) => rows.extend(copy_rows(target, &plan).await?),
            (Api::Batch, _) => rows.extend(batch_rows(target, &plan).await?),
            (Api::ZeroCopy, Some((c, zc))) => rows.extend(zero_copy_rows(c, zc, &plan).await?),
            (Api::BatchZeroCopy, Some((c, zc))) => {
                rows.extend(batch_zero_copy_rows(c, zc, &plan).await?);
            }
            (Api::ZeroCopy | Api::BatchZeroCopy, None) => {}
        }
    }
    Ok(rows)
}

/// `put` then `get`, one value per call.
async fn copy_rows(target: &Target, p: &Plan<'_>) -> Result<Vec<Row>> {
    let (size, tag, bar) = (p.size, &p.tag, p.bar);
    let keys = &p.keys[..p.n as usize];
    bar.set_message(format!("{tag} put"));
    let mut rec = Recorder::new();
    for k in keys {
        let t = Instant::now();
        target
            .put(k, &p.value)
            .await
            .with_context(|| format!("put of {tag}"))?;
        rec.lat.push(t.elapsed());
        bar.inc(1);
    }
    let mut rows = vec![rec.row(size, "put", p.n)];
    bar.set_message(format!("{tag} get"));
    let mut rec = Recorder::new();
    for (i, k) in keys.iter().enumerate() {
        let t = Instant::now();
        let v = target
            .get(k)
            .await
            .with_context(|| format!("get of {tag}"))?;
        rec.lat.push(t.elapsed());
        if v.len() != size as usize || (i == 0 && v != p.value) {
            bail!("get of {tag} returned wrong data");
        }
        bar.inc(1);
    }
    rows.push(rec.row(size, "get", p.n));
    target.remove(&p.keys).await;
    Ok(rows)
}

/// `put_batch` then `get_batch`, 32 values per call.
async fn batch_rows(target: &Target, p: &Plan<'_>) -> Result<Vec<Row>> {
    let (size, tag, bar) = (p.size, &p.tag, p.bar);
    bar.set_message(format!("{tag} put_batch"));
    let mut rec = Recorder::new();
    for ks in p.batches() {
        let items: Vec<(&str, &[u8])> = ks
            .iter()
            .map(|k| (k.as_str(), p.value.as_slice()))
            .collect();
        let t = Instant::now();
        target
            .put_batch(&items)
            .await
            .with_context(|| format!("put_batch of {tag}"))?;
        rec.lat.push(t.elapsed());
        bar.inc(1);
    }
    let mut rows = vec![rec.row(size, "put_batch[32]", p.b * 32)];
    bar.set_message(format!("{tag} get_batch"));
    let mut rec = Recorder::new();
    for ks in p.batches() {
        let refs: Vec<&str> = ks.iter().map(String::as_str).collect();
        let t = Instant::now();
        let r = target
            .get_batch(&refs)
            .await
            .with_context(|| format!("get_batch of {tag}"))?;
        rec.lat.push(t.elapsed());
        if r.iter().any(|v| v.len() != size as usize) {
            bail!("get_batch of {tag}: wrong length");
        }
        bar.inc(1);
    }
    rows.push(rec.row(size, "get_batch[32]", p.b * 32));
    target.remove(&p.keys).await;
    Ok(rows)
}

/// Slot `i` of the registered buffer (64 at most, each holding the value).
fn fill_slots(zc: &LocalBuffer, p: &Plan<'_>) -> impl Fn(u64) -> u64 {
    let size = p.size;
    let slots = (zc.len() / size).clamp(1, 64);
    for s in 0..slots {
        zc.write_at(s * size, &p.value);
    }
    let base = zc.addr();
    move |i: u64| base + (i % slots) * size
}

/// `put_from` then `get_into`, one value per call, from and into registered memory.
async fn zero_copy_rows(c: &Client, zc: &LocalBuffer, p: &Plan<'_>) -> Result<Vec<Row>> {
    let (size, tag, bar) = (p.size, &p.tag, p.bar);
    let cfg = ReplicateConfig::default();
    let slot = fill_slots(zc, p);
    let keys = &p.keys[..p.n as usize];
    bar.set_message(format!("{tag} put_from"));
    let mut rec = Recorder::new();
    for (i, k) in keys.iter().enumerate() {
        let t = Instant::now();
        c.put_from(k, slot(i as u64), size, &cfg)
            .await
            .map_err(|e| anyhow::anyhow!("put_from of {tag}: {e}"))?;
        rec.lat.push(t.elapsed());
        bar.inc(1);
    }
    let mut rows = vec![rec.row(size, "put_from", p.n)];
    bar.set_message(format!("{tag} get_into"));
    let mut rec = Recorder::new();
    for (i, k) in keys.iter().enumerate() {
        let t = Instant::now();
        let got = c
            .get_into(k, slot(i as u64), size)
            .await
            .map_err(|e| anyhow::anyhow!("get_into of {tag}: {e}"))?;
        rec.lat.push(t.elapsed());
        if got != size {
            bail!("get_into of {tag} returned {got} bytes");
        }
        bar.inc(1);
    }
    rows.push(rec.row(size, "get_into", p.n));
    if zc.to_vec(0, size as usize) != p.value {
        bail!("get_into of {tag}: content differs");
    }
    c.batch_remove(&p.keys, true).await;
    Ok(rows)
}

/// `batch_put_from` then `batch_get_into`, 32 values per call.
async fn batch_zero_copy_rows(c: &Client, zc: &LocalBuffer, p: &Plan<'_>) -> Result<Vec<Row>> {
    let (size, tag, bar) = (p.size, &p.tag, p.bar);
    let cfg = ReplicateConfig::default();
    let slot = fill_slots(zc, p);
    bar.set_message(format!("{tag} batch_put_from"));
    let mut rec = Recorder::new();
    for ks in p.batches() {
        let items = zero_copy_items(ks, &slot, size);
        let t = Instant::now();
        let r = c.batch_put_from(&items, &cfg).await;
        rec.lat.push(t.elapsed());
        if let Some(Err(e)) = r.into_iter().find(Result::is_err) {
            bail!("batch_put_from of {tag}: {e}");
        }
        bar.inc(1);
    }
    let mut rows = vec![rec.row(size, "batch_put_from[32]", p.b * 32)];
    bar.set_message(format!("{tag} batch_get_into"));
    let mut rec = Recorder::new();
    for ks in p.batches() {
        let items = zero_copy_items(ks, &slot, size);
        let t = Instant::now();
        let r = c.batch_get_into(&items).await;
        rec.lat.push(t.elapsed());
        if let Some(Err(e)) = r.into_iter().find(Result::is_err) {
            bail!("batch_get_into of {tag}: {e}");
        }
        bar.inc(1);
    }
    rows.push(rec.row(size, "batch_get_into[32]", p.b * 32));
    c.batch_remove(&p.keys, true).await;
    Ok(rows)
}

/// One batch's `(key, address, length)` items, one slot of the buffer each.
fn zero_copy_items<'a>(
    ks: &'a [String],
    slot: &dyn Fn(u64) -> u64,
    size: u64,
) -> Vec<(&'a str, u64, u64)> {
    ks.iter()
        .enumerate()
        .map(|(j, k)| (k.as_str(), slot(j as u64), size))
        .collect()
}

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

/// N worker processes: all put at a barrier, then all get; aggregate = bytes / (last end - first start).
async fn concurrency(args: &Args, procs: usize, size: u64, count: u64) -> Result<Vec<Row>> {
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for p in 0..procs {
        let mut child = Command::new(&exe)
            .arg(format!(
                "--master_server_address={}",
                args.cluster.master_server_address
            ))
            .arg(format!(
                "--metadata_server={}",
                args.cluster.metadata_server
            ))
            .arg(format!("--cluster_id={}", args.cluster.cluster_id))
            .arg(format!("--local_hostname={}", args.local_hostname))
            .args(args.redis.iter().map(|r| format!("--redis={r}")))
            .arg(format!("--worker={p}:{size}:{count}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut out = std::io::BufReader::new(child.stdout.take().context("stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        if line.trim() != "ready" {
            bail!("worker {p} did not start: {line:?}");
        }
        children.push((child, out));
    }
    let mut rows = Vec::new();
    for phase in ["put", "get"] {
        for (child, _) in children.iter_mut() {
            writeln!(child.stdin.as_mut().context("stdin")?, "{phase}")?;
        }
        let (mut first, mut last) = (u128::MAX, 0u128);
        for (_, out) in children.iter_mut() {
            let mut line = String::new();
            out.read_line(&mut line)?;
            let mut it = line.split_whitespace();
            let (Some(s), Some(e)) = (
                it.next().and_then(|v| v.parse().ok()),
                it.next().and_then(|v| v.parse().ok()),
            ) else {
                bail!("worker failed during {phase}: {line:?}");
            };
            first = first.min(s);
            last = last.max(e);
        }
        let secs = (last - first) as f64 / 1e6;
        let items = count * procs as u64;
        rows.push(Row {
            size,
            op: format!("{procs} procs {phase}"),
            items,
            mb_per_s: (items * size) as f64 / secs / 1e6,
            ops_per_s: items as f64 / secs,
            p50_us: 0.0,
            p99_us: 0.0,
        });
    }
    for (mut child, _) in children {
        drop(child.stdin.take());
        let _ = child.wait();
    }
    Ok(rows)
}

async fn worker(args: &Args, spec: &str) -> Result<()> {
    let parts: Vec<u64> = spec.split(':').filter_map(|p| p.parse().ok()).collect();
    let [p, size, count] = parts[..] else {
        bail!("bad --worker spec {spec:?}")
    };
    let t = target(args, 64 << 20).await?;
    let value = random_value(size as usize, size + p);
    let keys: Vec<String> = (0..count).map(|i| format!("proc{p}-{size}-{i}")).collect();
    let stdin = std::io::stdin();
    println!("ready");
    std::io::stdout().flush()?;
    for line in stdin.lock().lines() {
        let phase = line?;
        let start = now_us();
        for k in &keys {
            if phase == "put" {
                t.put(k, &value).await?;
            } else {
                let v = t.get(k).await?;
                if v.len() != size as usize {
                    bail!("get returned {} bytes", v.len());
                }
            }
        }
        println!("{start} {}", now_us());
        std::io::stdout().flush()?;
        if phase == "get" {
            t.remove(&keys).await;
            break;
        }
    }
    t.close().await;
    Ok(())
}

fn print_table(rows: &[Row]) {
    println!("| size | op | items | MB/s | ops/s | p50 µs | p99 µs |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            human(r.size),
            r.op,
            r.items,
            r.mb_per_s,
            r.ops_per_s,
            r.p50_us,
            r.p99_us
        );
    }
}
