//! `cargo xtask py-bench`: the store workload plan at the Python level
//! (`crates/mooncake-py/bench/store_bench.py`), run side by side with the C++ wheel in one
//! sitting: for each round, our wheel's `mooncake_master` + `mooncake_client` + pure client,
//! then the C++ wheel's; rounds alternate and each row keeps its best. Writes
//! `docs/bench/python.md` with ratios and the Redis figures of `observed-behaviour.md` §5.
//! `--tcp` turns our store service's shared memory off (every byte crosses TCP, as between
//! hosts) and writes `docs/bench/python-tcp.md`; `--redis` measures a live `redis-server`
//! with redis-py in the same rounds; `--procs N` adds the concurrency rows (§4.3).
//! `--netns` (with `--tcp`) puts every server (master, store service, `redis-server`) on one
//! "host" and the Python client on another (network namespaces on a bridge, `netns.rs`), so
//! all three systems are measured between hosts; it writes `docs/bench/python-netns.md`.

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

fn wait_port(ip: &str, port: u16, what: &str) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if std::net::TcpStream::connect((ip, port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not open port {port}")
}

/// Where the servers and the client run: all on loopback, or (`--netns`) the servers on
/// one namespace "host" and the client on another.
struct Hosts {
    net: Option<crate::netns::Net>,
}

impl Hosts {
    /// The servers' address.
    fn server_ip(&self) -> String {
        self.net
            .as_ref()
            .map_or("127.0.0.1".into(), |n| n.hosts[0].ip.clone())
    }

    /// The client's address.
    fn client_ip(&self) -> String {
        self.net
            .as_ref()
            .map_or("127.0.0.1".into(), |n| n.hosts[1].ip.clone())
    }

    /// `program` to run on the servers' host (`server`) or the client's.
    fn command(&self, server: bool, program: &Path) -> Command {
        match &self.net {
            Some(n) => crate::netns::Net::command(&n.hosts[usize::from(!server)], program),
            None => Command::new(program),
        }
    }
}

/// One run of the Python bench against a master and store service from `venv`.
fn run_side(venv: &Path, opts: &Options, hosts: &Hosts, ours: bool) -> Result<Vec<Value>> {
    let (rpc, http, metrics) = (free_port()?, free_port()?, free_port()?);
    let bin = venv.join("bin");
    let ip = hosts.server_ip();
    let _master = Guard(
        hosts
            .command(true, &bin.join("mooncake_master"))
            .args([
                format!("--rpc_port={rpc}"),
                "--enable_http_metadata_server=1".into(),
                format!("--http_metadata_server_host={ip}"),
                format!("--http_metadata_server_port={http}"),
                format!("--metrics_port={metrics}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mooncake_master")?,
    );
    wait_port(&ip, rpc, "mooncake_master")?;
    wait_port(&ip, http, "the HTTP metadata server")?;
    let metadata = format!("http://{ip}:{http}/metadata");
    let mut services = Vec::with_capacity(opts.stores);
    for _ in 0..opts.stores {
        let svc = free_port()?;
        services.push(Guard(
            hosts
                .command(true, &bin.join("mooncake_client"))
                .args([
                    format!("--host={ip}"),
                    format!("--port={svc}"),
                    "--global_segment_size=3GB".into(),
                    format!("--master_server_address={ip}:{rpc}"),
                    format!("--metadata_server={metadata}"),
                    "--protocol=tcp".into(),
                ])
                .args(
                    // Ours would serve a same-host client through shared memory; the C++
                    // store service always uses TCP.
                    (ours && opts.tcp).then_some("--shared_memory=false"),
                )
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting mooncake_client")?,
        ));
    }
    // The C++ store service prints nothing we can wait for; give it time to mount.
    std::thread::sleep(Duration::from_secs(3));
    let master = format!("{ip}:{rpc}");
    bench_script(
        venv,
        opts,
        hosts,
        &["--master", &master, "--metadata", &metadata],
    )
}

/// Runs `store_bench.py` with `args` in `venv` on the client's host; its rows.
fn bench_script(venv: &Path, opts: &Options, hosts: &Hosts, args: &[&str]) -> Result<Vec<Value>> {
    let script = crate::root().join("crates/mooncake-py/bench/store_bench.py");
    let out = hosts
        .command(false, &venv.join("bin/python"))
        .arg(script)
        .args(args)
        .args(["--local-hostname", &hosts.client_ip()])
        .args(["--procs", &opts.procs.to_string()])
        .args(opts.sizes.iter().flat_map(|s| ["--sizes", s.as_str()]))
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

/// One run of the plan against a fresh `redis-server` (no persistence) with redis-py.
fn run_redis(venv: &Path, opts: &Options, hosts: &Hosts) -> Result<Vec<Value>> {
    let port = free_port()?;
    let ip = hosts.server_ip();
    let _server = start_redis(hosts.command(true, Path::new("redis-server")), &ip, port)?;
    bench_script(venv, opts, hosts, &["--redis", &format!("{ip}:{port}")])
}

/// Starts `redis-server` through `cmd` (a plain command or one inside a namespace host)
/// on `ip:port`, without persistence, and waits until it accepts connections.
pub(crate) fn start_redis(mut cmd: Command, ip: &str, port: u16) -> Result<Guard> {
    let server = Guard(
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            ip,
            // Bound to loopback, or to a private namespace host's address that only
            // this run's client reaches: no password needed.
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting redis-server (apt-get install redis-server)")?,
    );
    wait_port(ip, port, "redis-server")?;
    Ok(server)
}

/// What `cargo xtask py-bench` was asked for.
#[derive(Debug)]
struct Options {
    /// Our store service without shared memory: every byte crosses TCP, as between hosts.
    tcp: bool,
    /// Client processes of the concurrency rows (0: none).
    procs: usize,
    rounds: usize,
    /// Measure Redis live (else the §5 figures).
    redis: bool,
    /// Servers and client on two network-namespace hosts.
    netns: bool,
    /// Store services (`--stores N`, 1): with several, a batch's values sit on several
    /// holders (the spread exchanges of `docs/bench/tcp.md` §17).
    stores: usize,
    /// Only these value sizes (bytes, comma-separated), for a quick side-by-side: the
    /// table is printed and written under `target/`, not over the full one in `docs/`.
    sizes: Option<String>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let mut o = Options {
            tcp: false,
            procs: 4,
            rounds: ROUNDS,
            redis: false,
            netns: false,
            stores: 1,
            sizes: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| -> Result<usize> {
                it.next()
                    .and_then(|v| v.parse().ok())
                    .with_context(|| format!("{name} needs a number"))
            };
            match a.as_str() {
                "--tcp" => o.tcp = true,
                "--redis" => o.redis = true,
                "--netns" => o.netns = true,
                "--procs" => o.procs = value("--procs")?,
                "--rounds" => o.rounds = value("--rounds")?.max(1),
                "--stores" => o.stores = value("--stores")?.clamp(1, 8),
                "--sizes" => {
                    let list = it
                        .next()
                        .context("--sizes needs a list such as 65536,1048576")?;
                    if list
                        .split(',')
                        .any(|v| v.trim().parse::<u64>().map_or(true, |n| n == 0))
                    {
                        bail!("py-bench: --sizes takes sizes in bytes, comma-separated (65536,1048576), not {list:?}");
                    }
                    o.sizes = Some(list.clone());
                }
                other => bail!("py-bench: unknown argument {other}"),
            }
        }
        if o.netns && !o.tcp {
            bail!("py-bench: --netns needs --tcp (between hosts every byte crosses TCP)");
        }
        Ok(o)
    }
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

pub(crate) fn run(args: &[String]) -> Result<()> {
    let opts = Options::parse(args)?;
    let ours = crate::python::install_wheel(true)?;
    let ours = ours
        .parent()
        .and_then(Path::parent)
        .context("venv layout")?
        .to_path_buf();
    if opts.redis {
        crate::python::pip_install_into(&ours, &["redis", "hiredis"])?;
    }
    let cpp = crate::interop::prepare_venv()?;
    let hosts = Hosts {
        net: if opts.netns {
            if !crate::netns::Net::available() {
                bail!("py-bench --netns: network namespaces are not available here (root and iproute2 are needed)");
            }
            Some(crate::netns::Net::create("mpb", 213, 2)?)
        } else {
            None
        },
    };
    let (mut a, mut b, mut r, mut order) = (Best::new(), Best::new(), Best::new(), Vec::new());
    for round in 1..=opts.rounds {
        println!("py-bench round {round}/{}: ours", opts.rounds);
        keep_best(&mut a, &run_side(&ours, &opts, &hosts, true)?, &mut order);
        println!("py-bench round {round}/{}: C++ wheel", opts.rounds);
        keep_best(&mut b, &run_side(&cpp, &opts, &hosts, false)?, &mut order);
        if opts.redis {
            println!("py-bench round {round}/{}: Redis", opts.rounds);
            keep_best(&mut r, &run_redis(&ours, &opts, &hosts)?, &mut order);
        }
    }
    let md = report(&opts, &a, &b, &r, &order)?;
    let base = if opts.netns {
        "python-netns"
    } else if opts.tcp {
        "python-tcp"
    } else {
        "python"
    };
    let name = match opts.stores {
        1 => format!("{base}.md"),
        n => format!("{base}-{n}stores.md"),
    };
    let path = if opts.sizes.is_some() {
        crate::root().join("target").join(&name)
    } else {
        crate::root().join("docs/bench").join(&name)
    };
    std::fs::write(&path, &md)?;
    println!("{md}");
    println!("wrote {}", path.display());
    Ok(())
}

fn report(opts: &Options, a: &Best, b: &Best, r: &Best, order: &[(u64, String)]) -> Result<String> {
    let mut md = String::new();
    let setting = if opts.netns {
        "every server (master, store service, `redis-server`) on one host and the Python \
         client on another: two network namespaces on a bridge (veth links), so every byte \
         crosses TCP between hosts (our store service with `--shared_memory=false`)"
    } else if opts.tcp {
        "our store service with `--shared_memory=false`, so every byte crosses loopback TCP \
         as it would between hosts (the C++ store service always uses TCP)"
    } else {
        "our store service with its default shared-memory segment (a same-host client copies \
         through it; the C++ store service uses TCP)"
    };
    let redis = if opts.redis && opts.netns {
        "Redis: `redis-server` (no persistence) on the servers' host with redis-py on the \
         client's, the same plan (`SET`/`GET`, `MSET`/`MGET` of 32 keys), measured in the \
         same rounds"
    } else if opts.redis {
        "Redis: `redis-server` (no persistence) on loopback with redis-py, the same plan \
         (`SET`/`GET`, `MSET`/`MGET` of 32 keys), measured in the same rounds"
    } else {
        "Redis: the redis-py figures of §5 (best of its two runs)"
    };
    writeln!(
        md,
        "# Python-level store benchmark: ours vs the C++ wheel and Redis"
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "`cargo xtask py-bench {}{}`: `crates/mooncake-py/bench/store_bench.py` (the workload \
         plan of `observed-behaviour.md` §2 and §4.3, pure client, {} with a 3 GB segment \
         each, 1 GiB local buffer, `mmap` buffer for the zero-copy calls) run \
         with our wheel and with `mooncake-transfer-engine-non-cuda==0.3.13.post1`: {setting}. \
         {redis}. Sides alternate, {} rounds, best MB/s and best p50 per row.",
        match (opts.netns, opts.tcp) {
            (true, _) => "--tcp --netns --redis",
            (false, true) => "--tcp --redis",
            _ => "",
        },
        match opts.stores {
            1 => String::new(),
            n => format!(" --stores {n}"),
        },
        match opts.stores {
            1 => "one separate store service".to_owned(),
            n => format!("{n} separate store services on the servers' host (a batch's values spread over them, placed at random)"),
        },
        opts.rounds
    )?;
    writeln!(md)?;
    writeln!(md, "| size | op | ours MB/s | C++ MB/s | ours/C++ | Redis MB/s | ours/Redis | ours p50 µs | C++ p50 µs | Redis p50 µs |")?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    let p50 = |v: f64| {
        if v > 0.0 && v < f64::MAX {
            format!("{v:.0}")
        } else {
            String::new()
        }
    };
    for key in order {
        let Some(x) = a.get(key) else { continue };
        let y = b.get(key);
        let z = if opts.redis {
            r.get(key).copied()
        } else {
            REDIS
                .iter()
                .find(|(s, op, _)| *s == key.0 && *op == key.1)
                .map(|r| (r.2, 0.0))
        };
        let ratio =
            |other: Option<f64>| other.map(|o| format!("{:.2}", x.0 / o)).unwrap_or_default();
        let mb = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_default();
        writeln!(
            md,
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            human(key.0),
            key.1,
            x.0,
            mb(y.map(|y| y.0)),
            ratio(y.map(|y| y.0)),
            mb(z.map(|z| z.0)),
            ratio(z.map(|z| z.0)),
            p50(x.1),
            y.map(|y| p50(y.1)).unwrap_or_default(),
            z.map(|z| p50(z.1)).unwrap_or_default(),
        )?;
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::Options;

    fn parse(args: &[&str]) -> anyhow::Result<Options> {
        Options::parse(&args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn sizes_narrow_the_plan_and_bad_lists_are_refused() {
        let o = parse(&["--tcp", "--sizes", "65536,1048576"]).unwrap();
        assert_eq!(o.sizes.as_deref(), Some("65536,1048576"));
        assert!(parse(&[]).unwrap().sizes.is_none());
        let e = parse(&["--sizes", "64KiB"]).unwrap_err().to_string();
        assert!(e.contains("sizes in bytes"), "{e}");
        assert!(parse(&["--sizes", "0"]).is_err());
        assert!(parse(&["--sizes"]).is_err());
        assert!(parse(&["--netns"]).is_err(), "--netns needs --tcp");
    }

    #[test]
    fn stores_default_to_one_and_take_a_count() {
        assert_eq!(parse(&["--tcp"]).unwrap().stores, 1);
        assert_eq!(parse(&["--tcp", "--stores", "2"]).unwrap().stores, 2);
        assert_eq!(parse(&["--tcp", "--stores", "0"]).unwrap().stores, 1);
        assert!(parse(&["--stores", "two"]).is_err());
    }
}
