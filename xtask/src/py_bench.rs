//! `cargo xtask py-bench`: the store workload plan at the Python level
//! (`crates/mooncake-py/bench/store_bench.py`), run side by side with the C++ wheel in one
//! sitting: for each round, our wheel's `mooncake_master` + `mooncake_client` + pure client,
//! then the C++ wheel's; rounds alternate and each row keeps its best. Writes
//! `docs/bench/python.md` with ratios and the Redis figures of `observed-behaviour.md` §5.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::interop::Guard;

/// Redis 7 + redis-py, MB/s, best of the two runs of observed-behaviour.md §5
/// (`SET`/`GET`, `MSET`/`MGET` of 32 keys for the batch rows).
const REDIS: &[(u64, &str, f64)] = &[
    (4 << 10, "put", 26.0),
    (4 << 10, "get", 32.0),
    (4 << 10, "put_batch[32]", 395.0),
    (4 << 10, "get_batch[32]", 628.0),
    (64 << 10, "put", 390.0),
    (64 << 10, "get", 485.0),
    (64 << 10, "get_batch[32]", 1400.0),
    (1 << 20, "put", 1288.0),
    (1 << 20, "get", 2105.0),
    (16 << 20, "put", 442.0),
    (16 << 20, "get", 903.0),
];

const ROUNDS: usize = 2;

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_port(port: u16, what: &str) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not open port {port}")
}

/// One run of the Python bench against a master and store service from `venv`.
fn run_side(venv: &Path) -> Result<Vec<Value>> {
    let (rpc, http, metrics, svc) = (free_port()?, free_port()?, free_port()?, free_port()?);
    let bin = venv.join("bin");
    let _master = Guard(
        Command::new(bin.join("mooncake_master"))
            .args([
                format!("--rpc_port={rpc}"),
                "--enable_http_metadata_server=1".into(),
                "--http_metadata_server_host=127.0.0.1".into(),
                format!("--http_metadata_server_port={http}"),
                format!("--metrics_port={metrics}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mooncake_master")?,
    );
    wait_port(rpc, "mooncake_master")?;
    wait_port(http, "the HTTP metadata server")?;
    let metadata = format!("http://127.0.0.1:{http}/metadata");
    let _service = Guard(
        Command::new(bin.join("mooncake_client"))
            .args([
                "--host=127.0.0.1".into(),
                format!("--port={svc}"),
                "--global_segment_size=3GB".into(),
                format!("--master_server_address=127.0.0.1:{rpc}"),
                format!("--metadata_server={metadata}"),
                "--protocol=tcp".into(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mooncake_client")?,
    );
    // The C++ store service prints nothing we can wait for; give it time to mount.
    std::thread::sleep(Duration::from_secs(3));
    let script = crate::root().join("crates/mooncake-py/bench/store_bench.py");
    let out = Command::new(bin.join("python"))
        .arg(script)
        .args([
            "--master",
            &format!("127.0.0.1:{rpc}"),
            "--metadata",
            &metadata,
        ])
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!(
            "store_bench.py failed with {} ({})",
            out.status,
            venv.display()
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["rows"].as_array().cloned().unwrap_or_default())
}

type Best = BTreeMap<(u64, String), (f64, f64)>;

fn keep_best(best: &mut Best, rows: &[Value], order: &mut Vec<(u64, String)>) {
    for r in rows {
        let key = (
            r["size"].as_u64().unwrap_or(0),
            r["op"].as_str().unwrap_or("").to_owned(),
        );
        let (mb, p50) = (
            r["mb_s"].as_f64().unwrap_or(0.0),
            r["p50_us"].as_f64().unwrap_or(f64::MAX),
        );
        if !order.contains(&key) {
            order.push(key.clone());
        }
        let e = best.entry(key).or_insert((0.0, f64::MAX));
        e.0 = e.0.max(mb);
        e.1 = e.1.min(p50);
    }
}

fn human(size: u64) -> String {
    match size {
        s if s >= 1 << 20 => format!("{}MiB", s >> 20),
        s => format!("{}KiB", s >> 10),
    }
}

pub(crate) fn run() -> Result<()> {
    let ours = crate::python::install_wheel(true)?;
    let ours = ours
        .parent()
        .and_then(Path::parent)
        .context("venv layout")?
        .to_path_buf();
    let cpp = crate::interop::prepare_venv()?;
    let (mut a, mut b, mut order) = (Best::new(), Best::new(), Vec::new());
    for round in 1..=ROUNDS {
        println!("py-bench round {round}/{ROUNDS}: ours");
        keep_best(&mut a, &run_side(&ours)?, &mut order);
        println!("py-bench round {round}/{ROUNDS}: C++ wheel");
        keep_best(&mut b, &run_side(&cpp)?, &mut order);
    }
    let mut md = String::new();
    writeln!(md, "# Python-level store benchmark: ours vs the C++ wheel")?;
    writeln!(md)?;
    writeln!(
        md,
        "`cargo xtask py-bench`: `crates/mooncake-py/bench/store_bench.py` (the workload plan of \
         `observed-behaviour.md` §2, pure client, one separate store service with a 3 GB segment, \
         1 GiB local buffer, `mmap` buffer for the zero-copy calls) run with our wheel and with \
         `mooncake-transfer-engine-non-cuda==0.3.13.post1`, alternating, {ROUNDS} rounds, best \
         MB/s and best p50 per row. Redis: redis-py figures of §5 (best of its two runs)."
    )?;
    writeln!(md)?;
    writeln!(md, "| size | op | ours MB/s | C++ MB/s | ours/C++ | ours p50 µs | C++ p50 µs | Redis MB/s | ours/Redis |")?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|")?;
    for key in &order {
        let (Some(x), Some(y)) = (a.get(key), b.get(key)) else {
            continue;
        };
        let redis = REDIS
            .iter()
            .find(|(s, op, _)| *s == key.0 && *op == key.1)
            .map(|r| r.2);
        let (rcol, rratio) = match redis {
            Some(r) => (format!("{r:.0}"), format!("{:.2}", x.0 / r)),
            None => ("".into(), "".into()),
        };
        writeln!(
            md,
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {} | {} |",
            human(key.0),
            key.1,
            x.0,
            y.0,
            x.0 / y.0,
            x.1,
            y.1,
            rcol,
            rratio
        )?;
    }
    let path = crate::root().join("docs/bench/python.md");
    std::fs::write(&path, &md)?;
    println!("{md}");
    println!("wrote {}", path.display());
    Ok(())
}
