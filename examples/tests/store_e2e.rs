//! Master, two store services and two clients, all separate processes: 1,000 objects with
//! two replicas survive a store service killed with SIGKILL, and 1,000 objects with one
//! replica survive a store service stopped with SIGTERM (it drains them first).

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(bin: &str, args: &[String]) -> (Proc, BufReader<ChildStdout>) {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    (Proc(child), out)
}

fn last_word(out: &mut BufReader<ChildStdout>, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "no line starting with {prefix:?}"
        );
        if line.starts_with(prefix) {
            return line.trim().rsplit(' ').next().unwrap().to_owned();
        }
    }
}

fn cli(rpc: &str, meta: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mooncake_store_cli"))
        .arg(format!("--master_server_address={rpc}"))
        .arg(format!("--metadata_server={meta}"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn objects_with_two_replicas_survive_a_killed_store_service() {
    let (_master, mut out) = spawn(
        env!("CARGO_BIN_EXE_mooncake_master"),
        &[
            "--rpc_port=0",
            "--rpc_address=127.0.0.1",
            "--enable_http_metadata_server=1",
            "--http_metadata_server_host=127.0.0.1",
            "--http_metadata_server_port=0",
            "--metrics_host=127.0.0.1",
            "--metrics_port=0",
            "--client_ttl=2",
        ]
        .map(String::from),
    );
    let rpc = last_word(&mut out, "mooncake_master rpc listening on");
    let meta = last_word(&mut out, "mooncake_master http metadata server on");
    let store = |_: usize| {
        spawn(
            env!("CARGO_BIN_EXE_mooncake_store_service"),
            &[
                "--host=127.0.0.1".into(),
                "--port=0".into(),
                "--global_segment_size=128 MB".into(),
                format!("--master_server_address={rpc}"),
                format!("--metadata_server={meta}"),
            ],
        )
    };
    let (mut victim, mut out1) = store(1);
    let (_survivor, mut out2) = store(2);
    last_word(&mut out1, "mooncake_store_service segment");
    last_word(&mut out2, "mooncake_store_service segment");

    let filled = cli(
        &rpc,
        &meta,
        &["--count=1000", "--size=16KiB", "fill", "--replicas=2"],
    );
    assert!(
        filled.status.success(),
        "{}",
        String::from_utf8_lossy(&filled.stdout)
    );
    victim.0.kill().unwrap();
    let _ = victim.0.wait();
    let killed = Instant::now();
    let verified = cli(&rpc, &meta, &["--count=1000", "--size=16KiB", "verify"]);
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success(), "{text}");
    assert!(
        text.contains("verified 1000 objects byte for byte"),
        "{text}"
    );
    assert!(killed.elapsed() < Duration::from_secs(30));
    // After the liveness timeout the dead segment is gone and the data is still all there.
    std::thread::sleep(Duration::from_secs(3));
    let again = cli(&rpc, &meta, &["--count=1000", "--size=16KiB", "verify"]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
}

fn start_master() -> (Proc, String, String) {
    let (master, mut out) = spawn(
        env!("CARGO_BIN_EXE_mooncake_master"),
        &[
            "--rpc_port=0",
            "--rpc_address=127.0.0.1",
            "--enable_http_metadata_server=1",
            "--http_metadata_server_host=127.0.0.1",
            "--http_metadata_server_port=0",
            "--metrics_host=127.0.0.1",
            "--metrics_port=0",
            "--client_ttl=2",
        ]
        .map(String::from),
    );
    let rpc = last_word(&mut out, "mooncake_master rpc listening on");
    let meta = last_word(&mut out, "mooncake_master http metadata server on");
    (master, rpc, meta)
}

/// Starts a store service; returns it, its stdout and its segment name.
fn start_store(rpc: &str, meta: &str) -> (Proc, BufReader<ChildStdout>, String) {
    let (p, mut out) = spawn(
        env!("CARGO_BIN_EXE_mooncake_store_service"),
        &[
            "--host=127.0.0.1".into(),
            "--port=0".into(),
            "--global_segment_size=128 MB".into(),
            format!("--master_server_address={rpc}"),
            format!("--metadata_server={meta}"),
        ],
    );
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "no segment line");
        if let Some(rest) = line.strip_prefix("mooncake_store_service segment ") {
            let name = rest.split(' ').next().unwrap().to_owned();
            return (p, out, name);
        }
    }
}

#[test]
fn a_store_service_stopped_with_sigterm_drains_its_objects_first() {
    let (_master, rpc, meta) = start_master();
    let (first, mut out1, seg1) = start_store(&rpc, &meta);
    let (_second, _out2, _) = start_store(&rpc, &meta);
    let preferred = format!("--preferred={seg1}");
    let filled = cli(
        &rpc,
        &meta,
        &["--count=1000", "--size=16KiB", "fill", &preferred],
    );
    assert!(
        filled.status.success(),
        "{}",
        String::from_utf8_lossy(&filled.stdout)
    );
    let pid = first.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let stopped = last_word(&mut out1, "mooncake_store_service stopped");
    assert_eq!(stopped, "unmounted");
    drop(first);
    // The first segment is gone; every object was copied to the second before it went.
    let verified = cli(&rpc, &meta, &["--count=1000", "--size=16KiB", "verify"]);
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success(), "{text}");
    assert!(
        text.contains("verified 1000 objects byte for byte"),
        "{text}"
    );
}
