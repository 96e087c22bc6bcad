//! `cargo xtask cluster-bench`: `store_bench` between "machines": the master, two store
//! services and the client each on its own host (a network namespace on a bridge, see
//! `netns.rs`), segments in private memory, so every byte crosses TCP as it would between
//! machines. Optional `--delay_us N` adds `tc netem` delay on every link (where the kernel
//! has netem). Without namespaces (not root, no iproute2) it runs everything on loopback
//! with `--shared_memory=false` and says so. Report and chart: `docs/bench/cluster.md`.

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
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        delay_us: 0,
        sizes: "4KiB,64KiB,1MiB,16MiB".into(),
        procs: "4".into(),
        scale: "0.5".into(),
        loopback: false,
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
            other => bail!("unknown argument {other:?}; use --delay_us N, --sizes L, --procs L, --scale X, --loopback"),
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
    bin: &str,
    args: &[String],
    log: &std::path::Path,
) -> Result<Running> {
    let exe = crate::root().join("target/release").join(bin);
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
    let mut build = crate::cargo();
    build.args(["build", "--release", "--locked", "-p", "mooncake-examples"]);
    crate::run(build)?;
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
    let json = dir.join("store_bench.json");
    let exe = crate::root().join("target/release/store_bench");
    let mut cmd = match host(3) {
        Some(h) => Net::command(h, &exe),
        None => Command::new(&exe),
    };
    let status = cmd
        .args([
            format!("--master_server_address={master}"),
            format!("--metadata_server={metadata}"),
            format!("--local_hostname={}", ip(3)),
            format!("--sizes={}", o.sizes),
            format!("--procs={}", o.procs),
            format!("--scale={}", o.scale),
            "--warmup_bytes=512 MB".into(),
            format!("--json={}", json.display()),
        ])
        .status()?;
    if !status.success() {
        bail!("store_bench failed ({status}); logs in {}", dir.display());
    }
    drop(services);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    write_report(&rows, &setting)
}

fn write_report(rows: &[serde_json::Value], setting: &str) -> Result<()> {
    let mut md = String::from("# store_bench between hosts (`cargo xtask cluster-bench`)\n\n");
    let _ = writeln!(
        md,
        "Setting: {setting}. Every byte crosses TCP. C++ = the same-host figures of `shared/spec/observed-behaviour.md` §4.2 (best of its two runs, client and store on one host), for scale only: not measured in this run, and not between hosts.\n"
    );
    md.push_str("| size | op | items | MB/s | C++ MB/s | ratio | p50 µs | p99 µs |\n|---|---|---:|---:|---:|---:|---:|---:|\n");
    let mut bars = Vec::new();
    for r in rows {
        let size = crate::bench::human(r["size"].as_u64().unwrap_or(0));
        let op = r["op"].as_str().unwrap_or("").to_owned();
        let mbps = r["mb_per_s"].as_f64().unwrap_or(0.0);
        let base = crate::bench::baseline(&size, &op);
        let _ = writeln!(
            md,
            "| {size} | {op} | {} | {mbps:.0} | {} | {} | {:.0} | {:.0} |",
            r["items"],
            base.map(|b| format!("{b:.0}")).unwrap_or_default(),
            base.map(|b| format!("{:.1}x", mbps / b))
                .unwrap_or_default(),
            r["p50_us"].as_f64().unwrap_or(0.0),
            r["p99_us"].as_f64().unwrap_or(0.0)
        );
        if let Some(b) = base {
            bars.push((format!("{size} {op}"), mbps, b));
        }
    }
    md.push_str("\n![throughput by value size](cluster.svg)\n");
    let docs = crate::root().join("docs/bench");
    std::fs::write(docs.join("cluster.md"), &md)?;
    std::fs::write(
        docs.join("cluster.svg"),
        crate::bench::svg("store_bench between hosts, MB/s (log scale): Rust (blue) vs C++ same-host baseline (grey)", &bars),
    )?;
    println!("{md}\nwritten to docs/bench/cluster.md and docs/bench/cluster.svg");
    Ok(())
}
