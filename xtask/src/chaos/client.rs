//! One workload process of `cargo xtask chaos` (run as `xtask chaos-client <json>`): a
//! store client doing a mixed put/get/remove workload on keys of its own, with values
//! that carry their own checksum, recording what it saw in a stats file twice a second
//! (so a SIGKILLed client still reports what it did).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use mooncake_store::{Client, ClientConfig, ErrorCode, ReplicateConfig};
use serde::{Deserialize, Serialize};

use super::value;
use super::Rng;

/// What the controller tells a client process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ClientArgs {
    pub(crate) index: usize,
    pub(crate) generation: u64,
    pub(crate) master: String,
    pub(crate) metadata: String,
    /// The address this client's engine binds and advertises.
    pub(crate) local_hostname: String,
    /// Unix time (ms) at which the client stops.
    pub(crate) until_ms: u64,
    /// The controller's fault log (`<unix ms> <kind> <target>` per line).
    pub(crate) faults: PathBuf,
    pub(crate) stats: PathBuf,
    pub(crate) keys: usize,
    pub(crate) max_value: usize,
    pub(crate) replicas: usize,
    pub(crate) seed: u64,
}

/// What a client saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Stats {
    pub(crate) ops: u64,
    pub(crate) puts_ok: u64,
    pub(crate) puts_failed: u64,
    pub(crate) gets_ok: u64,
    pub(crate) gets_missing: u64,
    pub(crate) gets_failed: u64,
    pub(crate) removes: u64,
    pub(crate) bytes_verified: u64,
    /// Gets that returned bytes that are not a value of the key: must stay 0.
    pub(crate) wrong_bytes: u64,
    /// Gets that returned an older version than one acknowledged since: must stay 0.
    pub(crate) stale: u64,
    /// Acknowledged puts found missing after a fault that may have taken their replicas
    /// (a holder killed or stopped, or the master restarted, after the put).
    pub(crate) lost_explained: u64,
    /// Acknowledged puts found missing with no such fault: must stay 0.
    pub(crate) lost_unexplained: u64,
    /// A sample of operation latencies, in µs.
    pub(crate) latencies_us: Vec<u32>,
    /// The first violations, described.
    pub(crate) violations: Vec<String>,
}

impl Stats {
    fn violation(&mut self, what: String) {
        if self.violations.len() < 20 {
            eprintln!("VIOLATION: {what}");
            self.violations.push(what);
        }
    }

    fn sample(&mut self, rng: &mut Rng, took: Duration) {
        let us = took.as_micros().min(u128::from(u32::MAX)) as u32;
        if self.latencies_us.len() < 20_000 {
            self.latencies_us.push(us);
        } else {
            let i = (rng.next() % self.ops.max(1)) as usize;
            if i < self.latencies_us.len() {
                self.latencies_us[i] = us;
            }
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether a fault that can take an object's replicas happened at or after `since_ms`.
fn fault_since(faults: &std::path::Path, since_ms: u64) -> bool {
    let text = std::fs::read_to_string(faults).unwrap_or_default();
    text.lines().any(|l| {
        let mut parts = l.split_whitespace();
        let t: u64 = parts.next().and_then(|t| t.parse().ok()).unwrap_or(0);
        let kind = parts.next().unwrap_or("");
        t + 2_000 >= since_ms && matches!(kind, "kill-service" | "stop-service" | "restart-master")
    })
}

fn save(path: &std::path::Path, stats: &Stats) {
    let tmp = path.with_extension("tmp");
    if let Ok(text) = serde_json::to_vec(stats) {
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
}

/// Runs the workload until `until_ms`.
pub(crate) fn run(json: &str) -> Result<()> {
    let args: ClientArgs = serde_json::from_str(json).context("chaos-client arguments")?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(workload(args))
}

async fn workload(args: ClientArgs) -> Result<()> {
    let config = ClientConfig {
        local_hostname: args.local_hostname.clone(),
        metadata_server: args.metadata.clone(),
        master_server_addr: args.master.clone(),
        global_segment_size: 0,
        local_buffer_size: 32 << 20,
        ..ClientConfig::default()
    };
    let client = loop {
        match Client::setup(config.clone()).await {
            Ok(c) => break c,
            Err(e) if now_ms() < args.until_ms => {
                eprintln!("setup failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let mut rng = Rng(args.seed ^ (args.index as u64) << 32 ^ args.generation);
    let mut stats = Stats::default();
    // key -> (version, unix ms of the acknowledgement)
    let mut acked: HashMap<String, (u64, u64)> = HashMap::new();
    let mut counter = 0u64;
    let replicate = ReplicateConfig {
        replica_num: args.replicas,
        ..ReplicateConfig::default()
    };
    let mut last_save = Instant::now();
    while now_ms() < args.until_ms {
        let key = format!("c{}-k{}", args.index, rng.next() % args.keys as u64);
        let dice = rng.next() % 100;
        let t0 = Instant::now();
        if dice < 45 {
            counter += 1;
            let version = (args.generation << 40) | counter;
            let len = 1 + (rng.next() % args.max_value as u64) as usize;
            let v = value::encode(&key, version, len);
            match client.upsert(&key, &v, &replicate).await {
                Ok(()) => {
                    stats.puts_ok += 1;
                    acked.insert(key, (version, now_ms()));
                }
                Err(_) => {
                    stats.puts_failed += 1;
                    // Unknown outcome: the old value or the new one may be stored.
                    acked.remove(&key);
                }
            }
        } else if dice < 92 {
            match client.get(&key).await {
                Ok(bytes) => match value::verify(&key, &bytes) {
                    Ok(version) => {
                        stats.gets_ok += 1;
                        stats.bytes_verified += bytes.len() as u64;
                        if let Some((want, _)) = acked.get(&key) {
                            if version < *want {
                                stats.stale += 1;
                                stats.violation(format!(
                                    "{key}: read version {version:#x} after {want:#x} was acknowledged"
                                ));
                            }
                        }
                    }
                    Err(why) => {
                        stats.wrong_bytes += 1;
                        stats.violation(format!("{key}: {} bytes read: {why}", bytes.len()));
                    }
                },
                Err(ErrorCode::ObjectNotFound) => {
                    stats.gets_missing += 1;
                    if let Some((version, at)) = acked.remove(&key) {
                        if fault_since(&args.faults, at) {
                            stats.lost_explained += 1;
                        } else {
                            stats.lost_unexplained += 1;
                            stats.violation(format!(
                                "{key}: version {version:#x} acknowledged at {at} is gone with no fault since"
                            ));
                        }
                    }
                }
                Err(_) => stats.gets_failed += 1,
            }
        } else {
            if client.remove(&key, false).await.is_ok() {
                stats.removes += 1;
            }
            // Removed, or not (a lease): either way nothing is promised any more.
            acked.remove(&key);
        }
        stats.ops += 1;
        stats.sample(&mut rng, t0.elapsed());
        if last_save.elapsed() > Duration::from_millis(500) {
            save(&args.stats, &stats);
            last_save = Instant::now();
        }
    }
    save(&args.stats, &stats);
    let _ = client.close().await;
    Ok(())
}
