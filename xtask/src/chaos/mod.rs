//! `cargo xtask chaos` (and `cargo xtask soak`): a master, store services and client
//! processes on loopback under a mixed workload, with faults injected at random moments
//! (SIGKILL and restart of store services and clients, SIGSTOP/SIGCONT of a holder, a
//! master restart). Invariants, checked throughout and reported at the end:
//! no get returns wrong or stale bytes; no acknowledged put is lost unless a fault since
//! could have taken its replicas; after each fault a probe put+get succeeds within
//! [`RECOVERY_BOUND`]; every process's memory and descriptors stay bounded.

mod client;
mod procs;
mod value;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use client::{now_ms, ClientArgs, Stats};
use procs::{Cluster, Usage};

pub(crate) use client::run as run_client;

/// A fault must be followed by a working put+get within this bound.
const RECOVERY_BOUND: Duration = Duration::from_secs(20);

/// A small xorshift generator (the run is reproducible from its seed).
#[derive(Debug, Clone)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0 | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Settings of one run.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) duration: Duration,
    pub(crate) services: usize,
    pub(crate) clients: usize,
    pub(crate) faults: bool,
    pub(crate) release: bool,
    pub(crate) seed: u64,
    pub(crate) name: &'static str,
    /// Keys per client, and the largest value.
    pub(crate) keys: usize,
    pub(crate) max_value: usize,
    /// Each store service's segment, e.g. `128MB`.
    pub(crate) segment: &'static str,
    /// Run every process in its own network namespace ("host") where the machine allows
    /// it (`--loopback` turns it off).
    pub(crate) network: bool,
}

fn parse(args: &[String], mut plan: Plan) -> Result<Plan> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .with_context(|| format!("{flag} needs a value"))
                .cloned()
        };
        match a.as_str() {
            "--seconds" => plan.duration = Duration::from_secs(value(a)?.parse()?),
            "--clients" => plan.clients = value(a)?.parse()?,
            "--services" => plan.services = value(a)?.parse()?,
            "--seed" => plan.seed = value(a)?.parse()?,
            "--keys" => plan.keys = value(a)?.parse()?,
            "--release" => plan.release = true,
            "--no-faults" => plan.faults = false,
            "--loopback" => plan.network = false,
            other => bail!(
                "unknown argument {other:?}; use --seconds N, --clients N, --services N, --seed N, --keys N, --release, --no-faults, --loopback"
            ),
        }
    }
    Ok(plan)
}

/// `cargo xtask chaos [--seconds 300] [--seed N] [--release]`.
pub(crate) fn chaos(args: &[String]) -> Result<()> {
    let seed = now_ms();
    let plan = parse(
        args,
        Plan {
            duration: Duration::from_secs(300),
            services: 3,
            clients: 4,
            faults: true,
            release: false,
            seed,
            name: "chaos",
            keys: 200,
            max_value: 128 << 10,
            segment: "128MB",
            network: true,
        },
    )?;
    run(&plan)
}

/// `cargo xtask soak [--seconds 300] [--clients 16]`: no faults, many clients.
pub(crate) fn soak(args: &[String]) -> Result<()> {
    if cfg!(debug_assertions) {
        println!("soak: the workload clients are this xtask binary, built without optimisation; for representative latencies run `cargo run --release -p xtask -- soak`");
    }
    let plan = parse(
        args,
        Plan {
            duration: Duration::from_secs(300),
            services: 2,
            clients: 16,
            faults: false,
            release: true,
            seed: now_ms(),
            name: "soak",
            keys: 5_000,
            max_value: 4 << 10,
            segment: "512MB",
            network: false,
        },
    )?;
    run(&plan)
}

/// A fault and how long the cluster took to serve again.
struct Recovery {
    at: Duration,
    fault: String,
    took: Option<Duration>,
}

fn run(plan: &Plan) -> Result<()> {
    let dir = crate::root().join("target").join(plan.name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    println!(
        "{}: {} s, {} store services, {} clients, faults {}, seed {} (logs in {})",
        plan.name,
        plan.duration.as_secs(),
        plan.services,
        plan.clients,
        if plan.faults { "on" } else { "off" },
        plan.seed,
        dir.display()
    );
    let net = if !plan.network {
        None
    } else if crate::netns::Net::available() {
        let hosts = 1 + plan.services + plan.clients;
        Some(crate::netns::Net::create("mcx", 211, hosts)?)
    } else {
        println!(
            "{}: network namespaces are not available here (needs root and iproute2); every process runs on loopback",
            plan.name
        );
        None
    };
    let netem = match &net {
        Some(n) => {
            let h = &n.hosts[0];
            let ok = crate::netns::Net::netem(h, 1, 0)?;
            if ok {
                crate::netns::Net::throttle(h, false)?;
            }
            ok
        }
        None => false,
    };
    match (&net, netem) {
        (Some(n), true) => println!(
            "{}: {} hosts in network namespaces on 10.211.0.0/24; network faults: partitions, rate limits, netem delay and loss",
            plan.name,
            n.hosts.len()
        ),
        (Some(n), false) => println!(
            "{}: {} hosts in network namespaces on 10.211.0.0/24; network faults: partitions and rate limits (this kernel has no tc netem, so no delay or loss)",
            plan.name,
            n.hosts.len()
        ),
        (None, _) => {}
    }
    procs::build(plan.release)?;
    let faults_log = dir.join("faults.log");
    std::fs::write(&faults_log, "")?;
    let mut cluster = Cluster::start(&dir, plan.release, plan.services, plan.segment, net)?;
    let usage_base = cluster.usage();
    let start = Instant::now();
    let until_ms = now_ms() + plan.duration.as_millis() as u64;
    let (master, metadata) = (cluster.master_addr.clone(), cluster.metadata.clone());
    let client_ips: Vec<String> = (0..plan.clients).map(|i| cluster.ip(i, true)).collect();
    let client_args = |index: usize, generation: u64| ClientArgs {
        index,
        generation,
        master: master.clone(),
        metadata: metadata.clone(),
        local_hostname: client_ips[index].clone(),
        until_ms,
        faults: faults_log.clone(),
        stats: dir.join(format!("client-{index}-{generation}.json")),
        keys: plan.keys,
        max_value: plan.max_value,
        replicas: 2.min(plan.services),
        seed: plan.seed,
    };
    for i in 0..plan.clients {
        cluster.start_client(i, &client_args(i, 0))?;
    }
    let mut rng = Rng(plan.seed);
    let probe = procs::Probe::new(&cluster)?;
    let mut recoveries = Vec::new();
    let mut usage_peak: Vec<Usage> = Vec::new();
    let mut generations = vec![0u64; plan.clients];
    let mut next_fault = Duration::from_secs(5);
    let mut order: Vec<u64> = Vec::new();
    while start.elapsed() < plan.duration {
        std::thread::sleep(Duration::from_millis(250));
        procs::merge_peak(&mut usage_peak, &cluster.usage());
        if !plan.faults || start.elapsed() < next_fault {
            continue;
        }
        if plan.duration.saturating_sub(start.elapsed()) < Duration::from_secs(8) {
            continue; // leave the end of the run quiet for the final checks
        }
        // Every kind of fault comes once per round, in a shuffled order.
        if order.is_empty() {
            order = if cluster.net.is_some() {
                vec![0, 4, 6, 9, 10, 12, 13]
            } else {
                vec![0, 4, 6, 9]
            };
            for i in (1..order.len()).rev() {
                order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
            }
        }
        let dice = order.pop().unwrap_or(0);
        let fault = match dice {
            10..=11 => {
                let i = (rng.next() % plan.services as u64) as usize;
                let host = cluster.service_host(i).context("no host")?;
                log_fault(&faults_log, "partition-service", i)?;
                crate::netns::Net::partition(&host, true)?;
                std::thread::sleep(Duration::from_millis(1500 + rng.next() % 2000));
                crate::netns::Net::partition(&host, false)?;
                format!("network partition of store service {i} for a while, healed")
            }
            12 => {
                let i = (rng.next() % plan.services as u64) as usize;
                let host = cluster.service_host(i).context("no host")?;
                crate::netns::Net::throttle(&host, true)?;
                std::thread::sleep(Duration::from_secs(3));
                crate::netns::Net::throttle(&host, false)?;
                format!("store service {i}'s link limited to 20 Mbit/s for 3 s")
            }
            13 if netem => {
                let i = (rng.next() % plan.services as u64) as usize;
                let host = cluster.service_host(i).context("no host")?;
                crate::netns::Net::netem(&host, 20, 5)?;
                std::thread::sleep(Duration::from_secs(3));
                crate::netns::Net::throttle(&host, false)?;
                format!("store service {i}'s link: 20 ms delay, 5% loss for 3 s")
            }
            13 => {
                let i = (rng.next() % plan.services as u64) as usize;
                let host = cluster.service_host(i).context("no host")?;
                log_fault(&faults_log, "partition-service", i)?;
                crate::netns::Net::partition(&host, true)?;
                std::thread::sleep(Duration::from_millis(500));
                crate::netns::Net::partition(&host, false)?;
                format!("short network partition of store service {i}")
            }
            0..=3 => {
                let i = (rng.next() % plan.services as u64) as usize;
                cluster.kill_service(i)?;
                log_fault(&faults_log, "kill-service", i)?;
                std::thread::sleep(Duration::from_millis(500 + rng.next() % 1500));
                cluster.restart_service(i)?;
                format!("SIGKILL store service {i}, restarted")
            }
            4..=5 => {
                let i = (rng.next() % plan.clients as u64) as usize;
                cluster.kill_client(i)?;
                generations[i] += 1;
                cluster.start_client(i, &client_args(i, generations[i]))?;
                format!("SIGKILL client {i}, restarted")
            }
            6..=8 => {
                let i = (rng.next() % plan.services as u64) as usize;
                log_fault(&faults_log, "stop-service", i)?;
                cluster.signal_service(i, "STOP")?;
                std::thread::sleep(Duration::from_millis(1000 + rng.next() % 2000));
                cluster.signal_service(i, "CONT")?;
                format!("SIGSTOP store service {i} for a while, SIGCONT")
            }
            _ => {
                log_fault(&faults_log, "restart-master", 0)?;
                cluster.restart_master()?;
                "SIGKILL the master, restarted on the same ports".to_owned()
            }
        };
        let at = start.elapsed();
        let took = probe.until_served(RECOVERY_BOUND);
        println!(
            "{:>6.1}s {fault}: served again after {}",
            at.as_secs_f64(),
            took.map_or("(not within the bound)".to_owned(), |t| format!(
                "{:.2} s",
                t.as_secs_f64()
            ))
        );
        recoveries.push(Recovery { at, fault, took });
        next_fault = start.elapsed() + Duration::from_millis(2_000 + rng.next() % 4_000);
    }
    // Let every client finish and write its last stats.
    cluster.wait_clients(Duration::from_secs(30));
    let master_keys = probe.key_count();
    let usage_end = cluster.usage();
    procs::merge_peak(&mut usage_peak, &usage_end);
    drop(probe);
    cluster.stop();
    report(
        plan,
        &dir,
        &recoveries,
        &usage_base,
        &usage_peak,
        master_keys,
    )
}

fn log_fault(path: &Path, kind: &str, target: usize) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
    writeln!(f, "{} {kind} {target}", now_ms())?;
    Ok(())
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(
    plan: &Plan,
    dir: &Path,
    recoveries: &[Recovery],
    base: &[Usage],
    peak: &[Usage],
    master_keys: Option<u64>,
) -> Result<()> {
    let mut total = Stats::default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for f in &files {
        let s: Stats = serde_json::from_slice(&std::fs::read(f)?)
            .with_context(|| format!("reading {}", f.display()))?;
        total.ops += s.ops;
        total.puts_ok += s.puts_ok;
        total.puts_failed += s.puts_failed;
        total.gets_ok += s.gets_ok;
        total.gets_missing += s.gets_missing;
        total.gets_failed += s.gets_failed;
        total.removes += s.removes;
        total.bytes_verified += s.bytes_verified;
        total.wrong_bytes += s.wrong_bytes;
        total.stale += s.stale;
        total.lost_explained += s.lost_explained;
        total.lost_unexplained += s.lost_unexplained;
        total.latencies_us.extend(s.latencies_us);
        total.violations.extend(s.violations);
    }
    total.latencies_us.sort_unstable();
    let secs = plan.duration.as_secs_f64();
    println!(
        "\n== {} report ({} client incarnations) ==",
        plan.name,
        files.len()
    );
    println!(
        "operations {} ({:.0}/s): puts {} ok / {} failed, gets {} ok / {} missing / {} failed, removes {}",
        total.ops,
        total.ops as f64 / secs,
        total.puts_ok,
        total.puts_failed,
        total.gets_ok,
        total.gets_missing,
        total.gets_failed,
        total.removes
    );
    println!(
        "bytes verified {} MiB; latency p50 {} µs, p99 {} µs, max {} µs",
        total.bytes_verified >> 20,
        percentile(&total.latencies_us, 0.5),
        percentile(&total.latencies_us, 0.99),
        total.latencies_us.last().copied().unwrap_or(0)
    );
    println!(
        "wrong bytes {}, stale reads {}, acknowledged puts lost: {} after a fault that could take their replicas, {} with no such fault",
        total.wrong_bytes, total.stale, total.lost_explained, total.lost_unexplained
    );
    for r in recoveries {
        println!(
            "  {:>6.1}s {:<50} {}",
            r.at.as_secs_f64(),
            r.fault,
            r.took.map_or("NOT RECOVERED".to_owned(), |t| format!(
                "served again after {:.2} s",
                t.as_secs_f64()
            ))
        );
    }
    let recovered: Vec<f64> = recoveries
        .iter()
        .filter_map(|r| r.took.map(|t| t.as_secs_f64()))
        .collect();
    println!(
        "faults injected {}, recovered within {} s: {} (slowest {:.2} s)",
        recoveries.len(),
        RECOVERY_BOUND.as_secs(),
        recovered.len(),
        recovered.iter().copied().fold(0.0, f64::max)
    );
    let mut failures = Vec::new();
    for u in peak {
        let before = base.iter().find(|e| e.name == u.name);
        println!(
            "{:<28} rss peak {:>6} MiB (at start: {:>6}), fds peak {:>5} (at start: {:>5})",
            u.name,
            u.rss_kib >> 10,
            before.map_or(0, |b| b.rss_kib >> 10),
            u.fds,
            before.map_or(0, |b| b.fds)
        );
        if u.fds > 2_000 || u.rss_kib > (2 << 20) {
            failures.push(format!(
                "{} grew beyond the bound (fds {}, rss {} KiB)",
                u.name, u.fds, u.rss_kib
            ));
        }
    }
    let master_peak = peak.iter().find(|u| u.name == "mooncake_master");
    let master_base = base.iter().find(|u| u.name == "mooncake_master");
    if let (Some(keys), Some(p), Some(b)) = (master_keys, master_peak, master_base) {
        if keys > 0 {
            let grown = p.rss_kib.saturating_sub(b.rss_kib) as f64 / 1024.0;
            println!(
                "master: {keys} keys at the end, rss grew {grown:.1} MiB over the run: {:.0} MiB per million keys",
                grown / (keys as f64 / 1e6)
            );
        }
    }
    if total.wrong_bytes > 0 || total.stale > 0 {
        failures.push(format!(
            "{} wrong and {} stale reads",
            total.wrong_bytes, total.stale
        ));
    }
    if total.lost_unexplained > 0 {
        failures.push(format!(
            "{} acknowledged puts lost without a fault",
            total.lost_unexplained
        ));
    }
    if recovered.len() < recoveries.len() {
        failures.push(format!(
            "{} faults not recovered from within {} s",
            recoveries.len() - recovered.len(),
            RECOVERY_BOUND.as_secs()
        ));
    }
    if total.gets_ok == 0 || total.puts_ok == 0 {
        failures.push("no successful put or get at all".to_owned());
    }
    if !plan.faults && (total.puts_failed + total.gets_failed) > 0 {
        failures.push(format!(
            "{} unexpected errors without faults",
            total.puts_failed + total.gets_failed
        ));
    }
    for v in total.violations.iter().take(10) {
        println!("  violation: {v}");
    }
    if failures.is_empty() {
        println!("{}: PASSED", plan.name);
        Ok(())
    } else {
        bail!("{} FAILED: {}", plan.name, failures.join("; "))
    }
}
