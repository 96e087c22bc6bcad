//! `mooncake_master` as a process: Mooncake's command line, the sample config file, the
//! embedded metadata server, metrics, gRPC, bad flags and graceful shutdown.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use mooncake_store::grpc::{GrpcClientConfig, GrpcMasterClient};
use mooncake_store::{ClientId, MasterApi, ReplicateConfig, Segment, SegmentId};

fn master_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mooncake_master"))
}

/// Starts `cmd` and waits for its first announcement, which must say the master listens;
/// stdout is closed afterwards (the master must not mind).
fn spawn_listening(cmd: &mut Command) -> std::process::Child {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(
        first.starts_with("mooncake_master rpc listening on 127.0.0.1:"),
        "{first}"
    );
    child
}

fn http(addr: &str, req: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_command_line_works_with_the_sample_config() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/mooncake_config.yaml");
    let mut child = master_cmd()
        .args([
            "--rpc_port=0",
            &format!("--config_path={config}"),
            "--enable_http_metadata_server=1",
            "-v=1",
        ])
        .args([
            "--rpc_address=127.0.0.1",
            "--http_metadata_server_host=127.0.0.1",
            "--http_metadata_server_port=0",
        ])
        .args(["--metrics_host", "127.0.0.1", "--metrics_port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr = |prefix: &str| {
        let line = lines.next().unwrap().unwrap();
        assert!(line.starts_with(prefix), "{line}");
        line.rsplit(' ')
            .next()
            .unwrap()
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_owned()
    };
    let rpc = addr("mooncake_master rpc listening on 127.0.0.1:");
    let meta = addr("mooncake_master http metadata server on http://127.0.0.1:");
    let metrics = addr("mooncake_master metrics on http://127.0.0.1:");
    let put = http(&meta, "PUT /metadata?key=mooncake%2Fram%2Fx HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
    assert!(put.starts_with("HTTP/1.1 200"), "{put}");
    let client = GrpcMasterClient::connect(&rpc, GrpcClientConfig::default())
        .await
        .unwrap();
    let seg = Segment {
        id: SegmentId(1),
        name: "127.0.0.1:13001".into(),
        base: 1 << 40,
        size: 1 << 26,
        te_endpoint: "127.0.0.1:13001".into(),
        protocol: "tcp".into(),
        host_id: "127.0.0.1".into(),
        durable: false,
    };
    client
        .remount_segments(ClientId(1), vec![seg])
        .await
        .unwrap();
    client
        .put_start(ClientId(2), "k", 10, &ReplicateConfig::default())
        .await
        .unwrap();
    let m = http(
        &metrics,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(m.contains("master_total_capacity_bytes 67108864"), "{m}");
    assert!(http(
        &metrics,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ends_with("OK"));
    // Graceful shutdown on SIGTERM.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn unknown_flags_and_bad_values_are_named() {
    let out = master_cmd().arg("--no_such_flag=1").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no_such_flag"));
    let out = master_cmd()
        .args([
            "--rpc_port=0",
            "--metrics_port=0",
            "--eviction_high_watermark_ratio=1.5",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("eviction_high_watermark_ratio") && err.contains("not within [0, 1]"),
        "{err}"
    );
    let out = master_cmd()
        .args(["--enable_http_metadata_server=maybe"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a boolean"));
    let dir = std::env::temp_dir().join(format!("mc-master-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "rpc_port: 0\nmetrics_port: 0\nno_such_setting: 3\n").unwrap();
    let out = master_cmd()
        .arg(format!("--config_path={}", bad.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no_such_setting") && err.contains("bad.yaml"),
        "{err}"
    );
}

#[test]
fn flags_on_the_command_line_beat_the_config_file() {
    let dir = std::env::temp_dir().join(format!("mc-master-prec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("c.json");
    // The file asks for an invalid ratio; the command line overrides it with a valid one.
    std::fs::write(&cfg, r#"{"eviction_high_watermark_ratio": 7, "rpc_port": 0, "metrics_port": 0, "rpc_address": "127.0.0.1", "metrics_host": "127.0.0.1"}"#).unwrap();
    let out = master_cmd()
        .arg(format!("--config_path={}", cfg.display()))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("eviction_high_watermark_ratio"),
        "the file value applies"
    );
    let mut child = spawn_listening(
        master_cmd()
            .arg(format!("--config_path={}", cfg.display()))
            .arg("--eviction_high_watermark_ratio=0.5"),
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_closed_stdout_does_not_kill_the_master() {
    // `spawn_listening` drops the reader after the first line: later announcements (at
    // the latest "stopped") hit a closed pipe.
    let mut child = spawn_listening(
        master_cmd()
            .args([
                "--rpc_port=0",
                "--rpc_address=127.0.0.1",
                "--metrics_host=127.0.0.1",
                "--metrics_port=0",
            ])
            .args([
                "--enable_http_metadata_server=1",
                "--http_metadata_server_host=127.0.0.1",
                "--http_metadata_server_port=0",
            ]),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the master died when its stdout closed"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the master must exit cleanly on SIGTERM with a closed stdout: {status}"
    );
}

/// `(soft, hard)` "Max open files" of process `pid`, from `/proc/<pid>/limits`.
fn open_file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_owned();
    let words: Vec<&str> = line.split_whitespace().collect();
    (words[3].to_owned(), words[4].to_owned())
}

#[test]
fn the_master_raises_its_open_file_limit_to_the_hard_limit() {
    let hard = open_file_limits(std::process::id()).1;
    if hard.parse::<u64>().is_ok_and(|h| h <= 256) {
        return; // nothing to raise to
    }
    // Started under a low soft limit, as a login shell's default would be.
    let bin = env!("CARGO_BIN_EXE_mooncake_master");
    let mut child = spawn_listening(Command::new("sh").arg("-c").arg(format!(
        "ulimit -Sn 256 && exec {bin} --rpc_port=0 --rpc_address=127.0.0.1 \
         --metrics_host=127.0.0.1 --metrics_port=0"
    )));
    let (soft, now_hard) = open_file_limits(child.id());
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    assert_eq!(
        soft, now_hard,
        "soft open-file limit raised to the hard one"
    );
    assert_ne!(soft, "256");
}
