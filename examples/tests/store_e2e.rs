//! Master, two store services and two clients, all separate processes: 1,000 objects with
//! two replicas survive a store service killed with SIGKILL, and 1,000 objects with one
//! replica survive a store service stopped with SIGTERM (it drains them first).

use std::io::{BufRead, BufReader};
use std::process::{ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{cli, last_word, spawn, Proc};

#[test]
fn objects_with_two_replicas_survive_a_killed_store_service() {
    let (_master, rpc, meta) = start_master();
    let (mut victim, _out1, _) = start_store(&rpc, &meta);
    let (_survivor, _out2, _) = start_store(&rpc, &meta);

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
    kill9(&mut victim);
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
    start_master_with(&[])
}

fn start_master_with(extra: &[&str]) -> (Proc, String, String) {
    let m = common::start_local_master(extra);
    (m.proc, m.rpc, m.meta)
}

/// Starts a store service; returns it, its stdout and its segment name.
fn start_store(rpc: &str, meta: &str) -> (Proc, BufReader<ChildStdout>, String) {
    start_store_with(rpc, meta, &[])
}

fn start_store_with(
    rpc: &str,
    meta: &str,
    extra: &[String],
) -> (Proc, BufReader<ChildStdout>, String) {
    let mut args = vec![
        "--host=127.0.0.1".into(),
        "--port=0".into(),
        "--global_segment_size=128 MB".into(),
        format!("--master_server_address={rpc}"),
        format!("--metadata_server={meta}"),
    ];
    args.extend(extra.iter().cloned());
    let (p, mut out) = spawn(env!("CARGO_BIN_EXE_mooncake_store_service"), &args);
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

/// A durable segment file under /dev/shm, removed (with its side file) before and after.
struct DurablePath(std::path::PathBuf);

impl DurablePath {
    fn new(tag: &str) -> Self {
        let p = std::path::PathBuf::from(format!(
            "/dev/shm/mooncake-e2e-{tag}-{}",
            std::process::id()
        ));
        let me = Self(p);
        me.clean();
        me
    }

    fn arg(&self) -> String {
        format!("--segment_path={}", self.0.display())
    }

    fn clean(&self) {
        let _ = std::fs::remove_file(&self.0);
        let mut side = self.0.as_os_str().to_owned();
        side.push(".mooncake.json");
        let _ = std::fs::remove_file(side);
    }
}

impl Drop for DurablePath {
    fn drop(&mut self) {
        self.clean();
    }
}

fn kill9(p: &mut Proc) {
    p.0.kill().unwrap();
    let _ = p.0.wait();
}

#[test]
fn a_durable_store_service_killed_and_restarted_serves_every_object_again() {
    let (_master, rpc, meta) = start_master_with(&["--durable_segment_grace_sec=30"]);
    let path = DurablePath::new("restart");
    let (mut first, _out1, seg1) = start_store_with(&rpc, &meta, &[path.arg()]);
    let preferred = format!("--preferred={seg1}");
    let args = ["--count=1000", "--size=16KiB"];
    let filled = cli(&rpc, &meta, &[args[0], args[1], "fill", &preferred]);
    assert!(
        filled.status.success(),
        "{}",
        String::from_utf8_lossy(&filled.stdout)
    );
    kill9(&mut first);
    // During the gap: clean errors, never wrong bytes.
    let gap = cli(&rpc, &meta, &[args[0], args[1], "verify"]);
    let text = String::from_utf8_lossy(&gap.stdout);
    assert!(!text.contains("content differs"), "{text}");
    // Restarted on the same file, right away (before the master noticed the death).
    let (_second, _out2, _) = start_store_with(&rpc, &meta, &[path.arg()]);
    let verified = cli(&rpc, &meta, &[args[0], args[1], "verify"]);
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success(), "{text}");
    assert!(
        text.contains("verified 1000 objects byte for byte"),
        "{text}"
    );
    // While it runs, the file cannot be taken by a second store service.
    let (mut third, _) = spawn(
        env!("CARGO_BIN_EXE_mooncake_store_service"),
        &[
            "--host=127.0.0.1".into(),
            "--port=0".into(),
            "--global_segment_size=128 MB".into(),
            format!("--master_server_address={rpc}"),
            format!("--metadata_server={meta}"),
            path.arg(),
        ],
    );
    let status = third.0.wait().unwrap();
    assert!(
        !status.success(),
        "a second owner of a live durable segment must fail"
    );
}

#[test]
fn a_durable_segment_back_after_its_grace_period_serves_nothing_stale() {
    let (_master, rpc, meta) =
        start_master_with(&["--client_ttl=1", "--durable_segment_grace_sec=1"]);
    let path = DurablePath::new("grace");
    let (mut first, _out1, seg1) = start_store_with(&rpc, &meta, &[path.arg()]);
    let preferred = format!("--preferred={seg1}");
    let filled = cli(
        &rpc,
        &meta,
        &["--count=100", "--size=4KiB", "fill", &preferred],
    );
    assert!(filled.status.success());
    kill9(&mut first);
    std::thread::sleep(Duration::from_secs(4));
    let (_second, _out2, _) = start_store_with(&rpc, &meta, &[path.arg()]);
    let verified = cli(&rpc, &meta, &["--count=100", "--size=4KiB", "verify"]);
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(!verified.status.success());
    assert!(!text.contains("content differs"), "{text}");
    assert_eq!(
        text.matches("(-704)").count(),
        100,
        "every object reported missing: {text}"
    );

    // The same file with another size, or for another master: refused, nothing changed.
    let before = std::fs::metadata(&path.0).unwrap().len();
    let out = Command::new(env!("CARGO_BIN_EXE_mooncake_store_service"))
        .args([
            "--host=127.0.0.1",
            "--port=0",
            "--global_segment_size=64 MB",
            &format!("--master_server_address={rpc}"),
            &format!("--metadata_server={meta}"),
            &path.arg(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(std::fs::metadata(&path.0).unwrap().len(), before);
}

/// Runs the store service under `sh` with file sizes capped (`ulimit -f`) and SIGXFSZ
/// ignored, so reserving its shared memory fails exactly as on a full `/dev/shm`.
fn store_without_shm_room(rpc: &str, meta: &str, extra: &str) -> std::process::Child {
    let script = format!(
        "trap '' XFSZ; ulimit -f 1024; exec {} --host=127.0.0.1 --port=0 \
         --global_segment_size=64MB --master_server_address={rpc} --metadata_server={meta} {extra}",
        env!("CARGO_BIN_EXE_mooncake_store_service")
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn no_room_in_shared_memory_is_a_clear_error_for_durable_segments_and_a_fallback_otherwise() {
    let (_master, rpc, meta) = start_master();
    let path = DurablePath::new("full");
    let durable = store_without_shm_room(&rpc, &meta, &path.arg())
        .wait_with_output()
        .unwrap();
    let err = String::from_utf8_lossy(&durable.stderr);
    assert!(!durable.status.success());
    assert!(
        err.contains("cannot reserve") && err.contains(&path.0.display().to_string()),
        "{err}"
    );
    assert!(!path.0.exists(), "nothing is left behind");

    // Without a segment path the service falls back to private memory and still serves.
    let mut child = store_without_shm_room(&rpc, &meta, "");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut fallback = Proc(child);
    let mounted = last_word(&mut out, "mooncake_store_service segment");
    assert_eq!(mounted, "mounted");
    let filled = cli(&rpc, &meta, &["--count=50", "--size=4KiB", "fill"]);
    assert!(
        filled.status.success(),
        "{}",
        String::from_utf8_lossy(&filled.stdout)
    );
    let verified = cli(&rpc, &meta, &["--count=50", "--size=4KiB", "verify"]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    kill9(&mut fallback);
}
