//! A master with `--state_dir`, killed with SIGKILL and restarted on the same port and
//! directory, serves every completed object again once the store service has remounted:
//! separate processes (HTTP metadata server, master, store service, CLI clients), 1,000
//! objects read back byte for byte, and nothing was put again.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{cli, last_word, spawn, Proc};

/// A fresh directory under the system's temp dir, removed afterwards.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts the master; returns it, its RPC address and its metrics `host:port`.
fn start_master(port: u16, state_dir: &std::path::Path) -> (Proc, String, String) {
    let args: Vec<String> = vec![
        format!("--rpc_port={port}"),
        "--rpc_address=127.0.0.1".into(),
        "--metrics_host=127.0.0.1".into(),
        "--metrics_port=0".into(),
        "--client_ttl=5".into(),
        format!("--state_dir={}", state_dir.display()),
    ];
    let (master, mut out) = spawn(env!("CARGO_BIN_EXE_mooncake_master"), &args);
    let rpc = last_word(&mut out, "mooncake_master rpc listening on");
    let metrics = last_word(&mut out, "mooncake_master metrics on");
    let metrics = metrics
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_owned();
    (master, rpc, metrics)
}

/// The value of a metric line `name value` on the master's `/metrics`.
fn metric(addr: &str, name: &str) -> Option<f64> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Waits (at most 15 s) until the store service has remounted at the master whose metrics
/// are at `metrics`: it notices a new master at its next ping.
fn wait_for_remount(metrics: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(metrics, "master_remount_segment_requests_total").unwrap_or(0.0) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the store service never remounted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A metadata server, a master keeping its state in a fresh directory named after `tag`,
/// and one store service with a `segment` in private memory.
struct Cluster {
    _meta_server: Proc,
    meta: String,
    master: Proc,
    rpc: String,
    port: u16,
    metrics: String,
    _store: Proc,
    state: TempDir,
}

fn start_cluster(tag: &str, segment: &str) -> Cluster {
    let state =
        TempDir(std::env::temp_dir().join(format!("mooncake-e2e-{tag}-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&state.0);
    let (meta_server, mut meta_out) = spawn(
        env!("CARGO_BIN_EXE_http_metadata_server"),
        &["--host=127.0.0.1".into(), "--port=0".into()],
    );
    let meta = last_word(&mut meta_out, "http metadata server listening on");
    let (master, rpc, metrics) = start_master(0, &state.0);
    let port: u16 = rpc.rsplit(':').next().unwrap().parse().unwrap();
    let (store, mut store_out) = spawn(
        env!("CARGO_BIN_EXE_mooncake_store_service"),
        &[
            "--host=127.0.0.1".into(),
            "--port=0".into(),
            format!("--global_segment_size={segment}"),
            "--shared_memory=false".into(),
            format!("--master_server_address={rpc}"),
            format!("--metadata_server={meta}"),
        ],
    );
    last_word(&mut store_out, "mooncake_store_service segment");
    Cluster {
        _meta_server: meta_server,
        meta,
        master,
        rpc,
        port,
        metrics,
        _store: store,
        state,
    }
}

#[test]
fn a_master_killed_with_sigkill_comes_back_with_every_object() {
    let started = Instant::now();
    let c = start_cluster("state", "64 MB");
    let (meta, rpc, port, metrics) = (c.meta.clone(), c.rpc.clone(), c.port, c.metrics.clone());
    let state = &c.state;
    let mut master = c.master;

    let args = ["--count=1000", "--size=16KiB"];
    let filled = cli(&rpc, &meta, &[args[0], args[1], "fill"]);
    assert!(
        filled.status.success(),
        "{}",
        String::from_utf8_lossy(&filled.stdout)
    );
    assert_eq!(
        metric(&metrics, "master_put_end_requests_total"),
        Some(1000.0)
    );

    // SIGKILL: no clean shutdown, no final snapshot; only the log has the puts.
    master.0.kill().unwrap();
    let _ = master.0.wait();
    let killed = Instant::now();
    let (_master2, rpc2, metrics2) = start_master(port, &state.0);
    assert_eq!(rpc2, rpc);
    assert_eq!(metric(&metrics2, "master_restored_key_count"), Some(1000.0));
    wait_for_remount(&metrics2);
    let remounted = killed.elapsed();

    let verified = cli(&rpc, &meta, &[args[0], args[1], "verify"]);
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success(), "{text}");
    assert!(
        text.contains("verified 1000 objects byte for byte"),
        "{text}"
    );
    // Nothing was put again: the new master saw no put before this one.
    assert_eq!(
        metric(&metrics2, "master_put_start_requests_total"),
        Some(0.0)
    );
    let fresh = cli(
        &rpc,
        &meta,
        &["--count=1", "--size=16KiB", "--prefix=after", "fill"],
    );
    assert!(
        fresh.status.success(),
        "{}",
        String::from_utf8_lossy(&fresh.stdout)
    );
    assert_eq!(
        metric(&metrics2, "master_put_end_requests_total"),
        Some(1.0)
    );
    // A second master on the same directory is refused, naming why.
    let second = Command::new(env!("CARGO_BIN_EXE_mooncake_master"))
        .args([
            "--rpc_port=0",
            "--rpc_address=127.0.0.1",
            "--metrics_port=0",
            &format!("--state_dir={}", state.0.display()),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(err.contains("is in use by another running master"), "{err}");
    eprintln!(
        "restart to remount {remounted:?}, whole test {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// Bytes that differ per `seed` and along the value.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed.wrapping_mul(97)) as u8
        })
        .collect()
}

/// Small puts go into slots the master reserved ahead. After the master is killed and
/// restarted (it knows nothing of the slots it lent), a client still holding some must not
/// write into them: the new master may have handed those ranges to another client's puts.
/// Here client B puts after the restart (its ranges are the free ones, including A's old
/// slots), then A puts with its stale pool; every value of B must still read back.
#[test]
fn stale_reserved_slots_are_never_written_after_a_master_restart() {
    use mooncake_store::{Client, ClientConfig, ReplicateConfig};
    let c = start_cluster("slots", "16 MB");
    let (meta, rpc, port) = (c.meta.clone(), c.rpc.clone(), c.port);
    let state = &c.state;
    let mut master = c.master;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let config = ClientConfig {
        metadata_server: meta.clone(),
        master_server_addr: rpc.clone(),
        shared_memory: false,
        ..ClientConfig::default()
    };
    let rc = ReplicateConfig::default();
    let (a, b) = rt.block_on(async {
        let a = Client::setup(config.clone()).await.unwrap();
        let b = Client::setup(config).await.unwrap();
        for i in 0..32 {
            a.put(&format!("a{i}"), &pattern(4096, i), &rc)
                .await
                .unwrap();
        }
        (a, b)
    });
    assert!(a.reserved_slots_held() > 0, "A holds slots");

    master.0.kill().unwrap();
    let _ = master.0.wait();
    let (_master2, _, metrics2) = start_master(port, &state.0);
    wait_for_remount(&metrics2);
    rt.block_on(async {
        for i in 0..64 {
            b.put(&format!("b{i}"), &pattern(4096, 1000 + i), &rc)
                .await
                .unwrap();
        }
        for i in 0..64 {
            a.put(&format!("a2-{i}"), &pattern(4096, 2000 + i), &rc)
                .await
                .unwrap();
        }
        for i in 0..64 {
            let got = b.get(&format!("b{i}")).await.unwrap();
            assert!(got == pattern(4096, 1000 + i), "b{i} was overwritten");
        }
        for i in 0..64 {
            let got = b.get(&format!("a2-{i}")).await.unwrap();
            assert!(got == pattern(4096, 2000 + i), "a2-{i} corrupted");
        }
        for i in 0..32 {
            let got = b.get(&format!("a{i}")).await.unwrap();
            assert!(got == pattern(4096, i), "restored a{i} corrupted");
        }
    });
}
