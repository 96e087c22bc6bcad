//! `store_bench --redis`: the plan's copying, batch and concurrency rows against a real
//! `redis-server` (skipped when it is not installed, unless
//! `MOONCAKE_TEST_REQUIRE_SERVICES=1`), and a clear error for an unreachable one.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` killed on drop.
struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Redis server without persistence on a free loopback port; `None` to skip.
fn start_redis() -> Option<(Redis, u16)> {
    let available = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        let required = std::env::var("MOONCAKE_TEST_REQUIRE_SERVICES").as_deref() == Ok("1");
        assert!(
            !required,
            "redis-server is not installed and MOONCAKE_TEST_REQUIRE_SERVICES=1"
        );
        eprintln!("skipped: redis-server is not installed");
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let server = Redis(child);
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "redis-server never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((server, port))
}

/// One inline command's reply, as text.
fn redis_command(port: u16, command: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
    s.write_all(format!("{command}\r\n").as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn the_plan_runs_against_redis_and_leaves_no_keys() {
    let Some((_server, port)) = start_redis() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("store-bench-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("rows.json");
    let out = Command::new(env!("CARGO_BIN_EXE_store_bench"))
        .arg(format!("--redis=127.0.0.1:{port}"))
        .args(["--sizes=4KiB", "--scale=0.05", "--procs=2", "--quiet"])
        .args(["--warmup_bytes=32 MiB"])
        .arg(format!("--json={}", json.display()))
        .output()
        .expect("run store_bench");
    assert!(
        out.status.success(),
        "store_bench --redis failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let ops: Vec<(u64, &str)> = rows
        .iter()
        .map(|r| (r["size"].as_u64().unwrap(), r["op"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ops,
        [
            (4096, "put"),
            (4096, "get"),
            (4096, "put_batch[32]"),
            (4096, "get_batch[32]"),
            (65536, "2 procs put"),
            (65536, "2 procs get"),
            (1 << 20, "2 procs put"),
            (1 << 20, "2 procs get"),
        ],
        "the copying, batch and concurrency rows, and no zero-copy rows"
    );
    for r in &rows {
        assert!(r["mb_per_s"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert_eq!(redis_command(port, "DBSIZE"), ":0\r\n", "every key removed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unreachable_redis_is_named_in_the_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_store_bench"))
        .arg(format!("--redis=127.0.0.1:{port}"))
        .args(["--sizes=4KiB", "--procs=0", "--quiet"])
        .output()
        .expect("run store_bench");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot connect to redis at 127.0.0.1:{port}")),
        "{err}"
    );
}
