//! The real binaries as separate processes: `http_metadata_server` and a
//! `transfer_engine_bench --mode=target`, driven by an engine in this test process.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mooncake_metadata::{HttpStore, HttpStoreConfig, MetadataStore};
use mooncake_transfer_engine::{EngineConfig, Opcode, TransferEngine, TransferRequest};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn metadata_server() -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_http_metadata_server"))
        .args(["--host", "127.0.0.1", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    (Proc(child), url)
}

fn target(url: &str, name: &str, buffer: u64) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_transfer_engine_bench"))
        .args(["--mode=target", "--protocol=tcp"])
        .arg(format!("--local_server_name={name}"))
        .arg(format!("--metadata_server={url}"))
        .arg(format!("--buffer_size={buffer}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc(child)
}

async fn wait_published(meta: &HttpStore, name: &str) {
    let start = Instant::now();
    loop {
        if let Some(v) = meta.get(&format!("mooncake/ram/{name}")).await.unwrap() {
            if !v.starts_with(b"{\"buffers\":[]") {
                return;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "target never published its buffer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i % 251) as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_in_two_processes_move_every_size_both_ways() {
    let (_server, url) = metadata_server();
    let name = "127.0.0.1:17501";
    let _target = target(&url, name, 160 << 20);
    let meta = Arc::new(HttpStore::new(&url, HttpStoreConfig::default()).unwrap());
    wait_published(&meta, name).await;
    let engine = TransferEngine::start(EngineConfig::new("127.0.0.1:17502"), meta.clone())
        .await
        .unwrap();
    let local = engine.allocate_buffer(128 << 20, "cpu:0").await.unwrap();
    let seg = engine.open_segment(name).await.unwrap();
    let remote = engine.fetch_descriptor(name).await.unwrap().buffers[0].addr;
    for (i, size) in [1usize, 13, 4096, 65_537, 1 << 20, 64 << 20]
        .into_iter()
        .enumerate()
    {
        let data = pattern(size, i as u8);
        local.write_at(0, &data);
        let write = TransferRequest {
            opcode: Opcode::Write,
            source: local.addr(),
            target: seg,
            target_offset: remote + 11,
            length: size as u64,
        };
        engine.transfer(&[write]).await.unwrap();
        let read = TransferRequest {
            opcode: Opcode::Read,
            source: local.addr() + (64 << 20),
            ..write
        };
        engine.transfer(&[read]).await.unwrap();
        assert!(
            local.to_vec(64 << 20, size) == data,
            "{size} bytes differ after the round trip"
        );
    }
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_killed_mid_transfer_fails_requests_within_a_bounded_time() {
    let (_server, url) = metadata_server();
    let name = "127.0.0.1:17511";
    let mut target = target(&url, name, 64 << 20);
    let meta = Arc::new(HttpStore::new(&url, HttpStoreConfig::default()).unwrap());
    wait_published(&meta, name).await;
    let engine = TransferEngine::start(EngineConfig::new("127.0.0.1:17512"), meta.clone())
        .await
        .unwrap();
    let local = engine.allocate_buffer(64 << 20, "cpu:0").await.unwrap();
    let seg = engine.open_segment(name).await.unwrap();
    let remote = engine.fetch_descriptor(name).await.unwrap().buffers[0].addr;
    let req = TransferRequest {
        opcode: Opcode::Write,
        source: local.addr(),
        target: seg,
        target_offset: remote,
        length: 64 << 20,
    };
    let running = {
        let engine = engine.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = engine.transfer(&[req; 4]).await {
                    return e;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    target.0.kill().unwrap();
    let killed = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("transfers hung")
        .unwrap();
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "took {:?}",
        killed.elapsed()
    );
    assert!(err.code() < 0, "{err}");
}

#[test]
fn bench_refuses_unknown_protocols_and_bad_metadata_strings() {
    let out = Command::new(env!("CARGO_BIN_EXE_transfer_engine_bench"))
        .args(["--mode=target", "--protocol=rdma"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--protocol=rdma is not available in this build"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_transfer_engine_bench"))
        .args(["--mode=target", "--metadata_server=ftp://x/y"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--metadata_server=ftp://x/y") && err.contains("unknown scheme `ftp`"),
        "{err}"
    );
}
