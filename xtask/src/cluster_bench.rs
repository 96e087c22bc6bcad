//! `cargo xtask cluster-bench`: `store_bench` between "machines": the master, two store
//! services and the client each on its own host (a network namespace on a bridge, see
//! `netns.rs`), segments in private memory, so every byte crosses TCP as it would between
//! machines. Optional `--delay_us N` adds `tc netem` delay on every link (where the kernel
//! has netem). Without namespaces (not root, no iproute2) it runs everything on loopback
//! with `--shared_memory=false` and says so. Where `redis-server` is installed, a Redis
//! server on the first store host is measured with the same plan from the same client
//! host (`store_bench --redis`), alternating with the store for `--rounds N`; each row
//! keeps its best. Report and chart: `docs/bench/cluster.md`. `--bin_dir DIR` runs another
//! build's binaries (an A/B against an older commit) and reports under `target/`.

use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::netns::{Host, Net};

struct Options {
    delay_us: u32,
    sizes: String,
    procs: String,
    scale: String,
    loopback: bool,
    /// Alternating rounds of the store and Redis; each row keeps its best.
    rounds: usize,
    /// Measure Redis beside the store (off with `--no_redis`, or without `redis-server`).
    redis: bool,
    /// Run these binaries (`--bin_dir DIR`: another build's `mooncake_master`,
    /// `mooncake_store_service` and `store_bench`) instead of building the workspace's;
    /// the report then goes to `target/cluster-bench/`, not over `docs/bench/`.
    bin_dir: Option<std::path::PathBuf>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        delay_us: 0,
        sizes: "4KiB,64KiB,1MiB,16MiB".into(),
        procs: "4".into(),
        scale: "0.5".into(),
        loopback: false,
        rounds: 1,
        redis: true,
        bin_dir: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--delay_us" => o.delay_us = value()?.parse()?,
            "--sizes" => o.sizes = value()?,
            "--procs" => o.procs = value()?,
            "--scale" => o.scale = value()?,
            "--loopback" => o.loopback = true,
            "--rounds" => o.rounds = value()?.parse::<usize>()?.max(1),
            "--no_redis" => o.redis = false,
            "--bin_dir" => o.bin_dir = Some(value()?.into()),
            other => bail!("unknown argument {other:?}; use --delay_us N, --sizes L, --procs L, --scale X, --rounds N, --no_redis, --loopback, --bin_dir DIR"),
        }
    }
    Ok(o)
}

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(
    host: Option<&Host>,
    bin_dir: &std::path::Path,
    bin: &str,
    args: &[String],
    log: &std::path::Path,
) -> Result<Running> {
    let exe = bin_dir.join(bin);
    let mut cmd = match host {
        Some(h) => Net::command(h, &exe),
        None => Command::new(&exe),
    };
    let out = std::fs::File::create(log)?;
    let child = cmd
        .args(args)
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(out))
        .spawn()
        .with_context(|| format!("cannot start {bin}"))?;
    Ok(Running(child))
}

fn wait_for(log: &std::path::Path, needle: &str) -> Result<()> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        if std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains(needle)
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{} never printed {needle:?}", log.display())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let bin_dir = match &o.bin_dir {
        Some(d) => {
            for bin in ["mooncake_master", "mooncake_store_service", "store_bench"] {
                if !d.join(bin).is_file() {
                    bail!("--bin_dir {}: no {bin} there", d.display());
                }
            }
            d.canonicalize()?
        }
        None => {
            let mut build = crate::cargo();
            build.args(["build", "--release", "--locked", "-p", "mooncake-examples"]);
            crate::run(build)?;
            crate::root().join("target/release")
        }
    };
    let dir = crate::root().join("target/cluster-bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let net = if !o.loopback && Net::available() {
        Some(Net::create("mcb", 212, 4)?)
    } else {
        println!("cluster-bench: network namespaces are not available (or --loopback); all on loopback, segments in private memory");
        None
    };
    let mut setting = match &net {
        Some(_) => "4 hosts (network namespaces on a bridge, veth links): master, two store services, the client".to_owned(),
        None => "loopback, segments in private memory (`--shared_memory=false`)".to_owned(),
    };
    if o.delay_us > 0 {
        let mut applied = net.is_some();
        for h in net.iter().flat_map(|n| n.hosts.iter()) {
            applied &= Net::netem_delay_us(h, o.delay_us)?;
        }
        if applied {
            let _ = write!(setting, "; netem delay {} µs on every link", o.delay_us);
        } else {
            println!("cluster-bench: this kernel has no tc netem; running without added delay");
            setting.push_str("; no added delay (this kernel has no tc netem)");
        }
    }
    let ip = |i: usize| {
        net.as_ref()
            .map_or("127.0.0.1".to_owned(), |n| n.hosts[i].ip.clone())
    };
    let host = |i: usize| net.as_ref().map(|n| &n.hosts[i]);
    let (rpc, http, metrics) = (free_port()?, free_port()?, free_port()?);
    let master_log = dir.join("master.log");
    let _master = start(
        host(0),
        &bin_dir,
        "mooncake_master",
        &[
            format!("--rpc_port={rpc}"),
            format!("--rpc_address={}", ip(0)),
            "--enable_http_metadata_server=1".into(),
            format!("--http_metadata_server_host={}", ip(0)),
            format!("--http_metadata_server_port={http}"),
            format!("--metrics_host={}", ip(0)),
            format!("--metrics_port={metrics}"),
        ],
        &master_log,
    )?;
    wait_for(&master_log, "metrics on")?;
    let master = format!("{}:{rpc}", ip(0));
    let metadata = format!("http://{}:{http}/metadata", ip(0));
    let mut services = Vec::new();
    for i in 1..=2 {
        let log = dir.join(format!("service-{i}.log"));
        services.push(start(
            host(i),
            &bin_dir,
            "mooncake_store_service",
            &[
                format!("--host={}", ip(i)),
                "--port=0".into(),
                "--global_segment_size=2 GB".into(),
                format!("--master_server_address={master}"),
                format!("--metadata_server={metadata}"),
                "--shared_memory=false".into(),
            ],
            &log,
        )?);
        wait_for(&log, "mounted")?;
    }
    let redis_port = free_port()?;
    let redis = if o.redis && has_redis_server() {
        let cmd = match host(1) {
            Some(h) => Net::command(h, std::path::Path::new("redis-server")),
            None => Command::new("redis-server"),
        };
        Some(crate::py_bench::start_redis(cmd, &ip(1), redis_port)?)
    } else {
        if o.redis {
            println!("cluster-bench: redis-server is not installed; measuring the store only");
        }
        None
    };
    let common = [
        format!("--local_hostname={}", ip(3)),
        format!("--sizes={}", o.sizes),
        format!("--procs={}", o.procs),
        format!("--scale={}", o.scale),
        "--warmup_bytes=512 MB".into(),
    ];
    let store_args = [
        format!("--master_server_address={master}"),
        format!("--metadata_server={metadata}"),
    ];
    let redis_args = [format!("--redis={}:{redis_port}", ip(1))];
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 1..=o.rounds {
        let json = dir.join(format!("store_bench-{round}.json"));
        let run = |target: &[String], json: &std::path::Path| {
            store_bench(host(3), &bin_dir, target, &common, json, &dir)
        };
        ours.push(run(&store_args, &json)?);
        if redis.is_some() {
            let json = dir.join(format!("redis-{round}.json"));
            theirs.push(run(&redis_args, &json)?);
        }
    }
    drop(services);
    drop(redis);
    if o.rounds > 1 {
        let _ = write!(
            setting,
            "; best of {} rounds alternating the store and Redis",
            o.rounds
        );
    }
    let out = match o.bin_dir {
        Some(_) => dir,
        None => crate::root().join("docs/bench"),
    };
    write_report(&ours, &theirs, &setting, &out)
}

/// Whether `redis-server` can be started.
fn has_redis_server() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One `store_bench` run from the client host; its rows.
fn store_bench(
    host: Option<&Host>,
    bin_dir: &std::path::Path,
    target: &[String],
    common: &[String],
    json: &std::path::Path,
    dir: &std::path::Path,
) -> Result<Vec<serde_json::Value>> {
    let exe = bin_dir.join("store_bench");
    let mut cmd = match host {
        Some(h) => Net::command(h, &exe),
        None => Command::new(&exe),
    };
    let status = cmd
        .args(target)
        .args(common)
        .arg(format!("--json={}", json.display()))
        .status()?;
    if !status.success() {
        bail!("store_bench failed ({status}); logs in {}", dir.display());
    }
    Ok(serde_json::from_str(&std::fs::read_to_string(json)?)?)
}

/// One row of the report: the best of the rounds, and every round's MB/s.
struct Best {
    size: u64,
    op: String,
    items: u64,
    mbps: f64,
    p50: f64,
    /// p99 of the round with the best p50.
    p99: f64,
    runs: Vec<f64>,
}

/// Each row's best over the rounds (rows keyed by size and op, in the first round's order).
fn best_of(rounds: &[Vec<serde_json::Value>]) -> Vec<Best> {
    let mut out: Vec<Best> = Vec::new();
    for r in rounds.iter().flatten() {
        let size = r["size"].as_u64().unwrap_or(0);
        let op = r["op"].as_str().unwrap_or("").to_owned();
        let (mbps, p50, p99) = (
            r["mb_per_s"].as_f64().unwrap_or(0.0),
            r["p50_us"].as_f64().unwrap_or(0.0),
            r["p99_us"].as_f64().unwrap_or(0.0),
        );
        match out.iter_mut().find(|b| b.size == size && b.op == op) {
            Some(b) => {
                b.mbps = b.mbps.max(mbps);
                if p50 > 0.0 && (b.p50 == 0.0 || p50 < b.p50) {
                    (b.p50, b.p99) = (p50, p99);
                }
                b.runs.push(mbps);
            }
            None => out.push(Best {
                size,
                op,
                items: r["items"].as_u64().unwrap_or(0),
                mbps,
                p50,
                p99,
                runs: vec![mbps],
            }),
        }
    }
    out
}

fn write_report(
    ours: &[Vec<serde_json::Value>],
    redis: &[Vec<serde_json::Value>],
    setting: &str,
    out: &std::path::Path,
) -> Result<()> {
    let mut md = String::from("# store_bench between hosts (`cargo xtask cluster-bench`)\n\n");
    let _ = writeln!(
        md,
        "Setting: {setting}. Every byte crosses TCP. C++ = the same-host figures of `shared/spec/observed-behaviour.md` §4.2 (best of its two runs, client and store on one host), for scale only: not measured in this run, and not between hosts (the C++ wheel measured between hosts, beside ours and Redis, is in `python-netns.md` and, with two store services, `python-netns-2stores.md`). Redis = `redis-server` (no persistence) on the first store host, measured from the same client host with the same plan (`store_bench --redis`: SET/GET, MSET/MGET for batches of 32, the same worker processes), in the same run; the zero-copy rows have no Redis counterpart.\n"
    );
    md.push_str("| size | op | items | MB/s | C++ MB/s | ratio | Redis MB/s | ratio | p50 µs | p99 µs | Redis p50 µs | runs MB/s |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    let theirs = best_of(redis);
    let mut bars = Vec::new();
    for b in best_of(ours) {
        let size = crate::bench::human(b.size);
        let base = crate::bench::baseline(&size, &b.op);
        let other = theirs.iter().find(|t| t.size == b.size && t.op == b.op);
        let ratio = |x: Option<f64>| x.map(|x| format!("{:.1}x", b.mbps / x)).unwrap_or_default();
        let runs: Vec<String> = b.runs.iter().map(|r| format!("{r:.0}")).collect();
        let _ = writeln!(
            md,
            "| {size} | {} | {} | {:.0} | {} | {} | {} | {} | {:.0} | {:.0} | {} | {} |",
            b.op,
            b.items,
            b.mbps,
            base.map(|x| format!("{x:.0}")).unwrap_or_default(),
            ratio(base),
            other.map(|t| format!("{:.0}", t.mbps)).unwrap_or_default(),
            ratio(other.map(|t| t.mbps)),
            b.p50,
            b.p99,
            other
                .filter(|t| t.p50 > 0.0)
                .map(|t| format!("{:.0}", t.p50))
                .unwrap_or_default(),
            runs.join(", "),
        );
        if let Some(x) = base {
            bars.push((format!("{size} {}", b.op), b.mbps, x));
        }
    }
    md.push_str("\n![throughput by value size](cluster.svg)\n");
    std::fs::write(out.join("cluster.md"), &md)?;
    std::fs::write(
        out.join("cluster.svg"),
        crate::bench::svg("store_bench between hosts, MB/s (log scale): Rust (blue) vs C++ same-host baseline (grey)", &bars),
    )?;
    println!(
        "{md}\nwritten to {} and cluster.svg beside it",
        out.join("cluster.md").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(size: u64, op: &str, mbps: f64, p50: f64, p99: f64) -> serde_json::Value {
        serde_json::json!({"size": size, "op": op, "items": 10, "mb_per_s": mbps, "p50_us": p50, "p99_us": p99})
    }

    #[test]
    fn each_row_keeps_its_best_round_and_every_rounds_throughput() {
        let rounds = vec![
            vec![
                row(4096, "put", 80.0, 40.0, 90.0),
                row(4096, "get", 100.0, 30.0, 60.0),
            ],
            vec![
                row(4096, "put", 95.0, 45.0, 70.0),
                row(4096, "get", 90.0, 25.0, 99.0),
            ],
        ];
        let best = best_of(&rounds);
        assert_eq!(best.len(), 2, "rows are keyed by size and op");
        let put = &best[0];
        assert_eq!(
            (put.op.as_str(), put.mbps, put.runs.clone()),
            ("put", 95.0, vec![80.0, 95.0])
        );
        assert_eq!(
            (put.p50, put.p99),
            (40.0, 90.0),
            "p99 of the round with the best p50"
        );
        let get = &best[1];
        assert_eq!((get.mbps, get.p50, get.p99), (100.0, 25.0, 99.0));
        // The concurrency rows have no latency: a zero p50 is never the best.
        let procs = best_of(&[
            vec![row(65536, "4 procs get", 900.0, 0.0, 0.0)],
            vec![row(65536, "4 procs get", 950.0, 0.0, 0.0)],
        ]);
        assert_eq!((procs[0].mbps, procs[0].p50), (950.0, 0.0));
    }

    #[test]
    fn rounds_and_redis_are_options() {
        let args = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let o = parse(&args(&[])).unwrap();
        assert_eq!((o.rounds, o.redis), (1, true));
        let o = parse(&args(&["--rounds", "3", "--no_redis"])).unwrap();
        assert_eq!((o.rounds, o.redis), (3, false));
        assert_eq!(parse(&args(&["--rounds", "0"])).unwrap().rounds, 1);
        assert!(parse(&args(&["--rounds"])).is_err());
        let e = parse(&args(&["--redis"])).err().unwrap().to_string();
        assert!(e.contains("--no_redis"), "{e}");
        assert_eq!(o.bin_dir, None);
        let o = parse(&args(&["--bin_dir", "/tmp/b"])).unwrap();
        assert_eq!(o.bin_dir.as_deref(), Some(std::path::Path::new("/tmp/b")));
        assert!(parse(&args(&["--bin_dir"])).is_err());
    }
}
