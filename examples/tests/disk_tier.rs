//! The disk tier end to end, all real processes: a store service with 256 MB of memory
//! and a 2 GB disk tier keeps 1 GiB of 1 MiB objects readable byte for byte; a store
//! service killed with SIGKILL while it demotes, restarted on the same directory, serves
//! every record that completed (and none that fails its checksum) without a re-put; a
//! master killed and restarted on its state directory serves the disk tier again; a key
//! removed while its holder was down does not come back when the holder restarts.

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{cli, last_word, spawn, Proc};

type Master = common::LocalMaster;

fn start_master() -> Master {
    common::start_local_master(&[])
}

fn start_store(
    m: &Master,
    memory: &str,
    disk: &Path,
    capacity: &str,
) -> (Proc, BufReader<ChildStdout>) {
    let args = vec![
        "--host=127.0.0.1".into(),
        "--port=0".into(),
        format!("--global_segment_size={memory}"),
        format!("--master_server_address={}", m.rpc),
        format!("--metadata_server={}", m.meta),
        format!("--disk_path={}", disk.display()),
        format!("--disk_capacity={capacity}"),
    ];
    let (p, mut out) = spawn(env!("CARGO_BIN_EXE_mooncake_store_service"), &args);
    let _ = last_word(&mut out, "mooncake_store_service segment");
    (p, out)
}

/// `GET path` on the master's admin port.
fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

fn metric(m: &Master, name: &str) -> u64 {
    let text = http_get(&m.admin, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("mooncake-e2e-disk-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The keys of the complete records in a tier's directory (read from their headers).
fn record_keys(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir.join("objects")) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let bytes = std::fs::read(e.path()).ok()?;
            let len = u32::from_le_bytes(bytes.get(12..16)?.try_into().ok()?) as usize;
            let key = String::from_utf8(bytes.get(40..40 + len)?.to_vec()).ok()?;
            Some((key, e.path()))
        })
        .collect()
}

#[test]
fn a_gigabyte_of_one_mib_objects_survives_a_256_mb_segment() {
    let m = start_master();
    let dir = TempDir::new("gib");
    let (_store, _out) = start_store(&m, "256 MB", &dir.0, "2 GB");
    let args = ["--count=1024", "--size=1MiB", "--prefix=gib"];
    let filled = cli(&m.rpc, &m.meta, &[args[0], args[1], args[2], "fill"]);
    assert!(
        filled.status.success(),
        "{}",
        String::from_utf8_lossy(&filled.stdout)
    );
    let verified = cli(&m.rpc, &m.meta, &[args[0], args[1], args[2], "verify"]);
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(
        text.contains("verified 1024 objects byte for byte"),
        "{text}"
    );
    // Most of it came back from disk: memory holds at most a quarter.
    assert!(metric(&m, "master_disk_demotions_total") >= 768);
    assert!(metric(&m, "master_disk_hits_total") >= 768);
    assert_eq!(metric(&m, "master_disk_corrupt_records_total"), 0);
    let q = http_get(&m.admin, "/query_key?key=gib-0");
    assert!(q.contains("\"tier\":\"LOCAL_DISK\""), "{q}");
    // Batches mix memory and disk: each group of keys is served as its loads land.
    let verified = cli(
        &m.rpc,
        &m.meta,
        &[args[0], args[1], args[2], "verify", "--batch=32"],
    );
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(
        text.contains("verified 1024 objects byte for byte"),
        "{text}"
    );
    assert_eq!(metric(&m, "master_disk_corrupt_records_total"), 0);
}

#[test]
fn a_batch_lookup_queues_disk_loads_without_waiting_and_a_second_call_waits_for_them() {
    use mooncake_store::grpc::{GrpcClientConfig, GrpcMasterClient};
    use mooncake_store::{ErrorCode, MasterApi};
    let m = start_master();
    let dir = TempDir::new("or-load");
    let (_store, _out) = start_store(&m, "64 MB", &dir.0, "1 GB");
    let filled = cli(
        &m.rpc,
        &m.meta,
        &["--count=128", "--size=1MiB", "--prefix=ol", "fill"],
    );
    assert!(filled.status.success());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let master = GrpcMasterClient::connect(&m.rpc, GrpcClientConfig::default())
            .await
            .unwrap();
        // The first keys were demoted: only their disk copies are left.
        let keys: Vec<String> = (0..16).map(|i| format!("ol-{i}")).collect();
        let quick = master.batch_get_replica_list_or_load(&keys).await.unwrap();
        let loading = quick
            .iter()
            .filter(|r| **r == Err(ErrorCode::ReplicaIsNotReady))
            .count();
        assert!(loading >= 8, "{quick:?}");
        let lists = master.batch_get_replica_list(&keys).await.unwrap();
        assert!(lists.iter().all(Result::is_ok), "{lists:?}");
    });
    assert!(metric(&m, "master_disk_hits_total") >= 8);
}

#[test]
fn a_store_service_killed_while_it_demotes_serves_its_complete_records_after_a_restart() {
    let m = start_master();
    let dir = TempDir::new("kill");
    let (mut store, _out) = start_store(&m, "64 MB", &dir.0, "1 GB");
    // Fill in the background; kill the store service once demotion is well under way.
    let mut filler = Command::new(env!("CARGO_BIN_EXE_mooncake_store_cli"))
        .arg(format!("--master_server_address={}", m.rpc))
        .arg(format!("--metadata_server={}", m.meta))
        .args(["--count=400", "--size=1MiB", "--prefix=kill", "fill"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while record_keys(&dir.0).len() < 100 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "demotion never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    store.0.kill().unwrap();
    let _ = store.0.wait();
    let _ = filler.kill();
    let _ = filler.wait();
    // Let the master notice the death and drop what it knew (client_ttl 2 s).
    std::thread::sleep(Duration::from_secs(4));
    let records = record_keys(&dir.0);
    assert!(records.len() >= 100);
    // Damage one record's value: it must be dropped, never served.
    let (bad_key, bad_path) = records[0].clone();
    let mut bytes = std::fs::read(&bad_path).unwrap();
    bytes[4096 + 100] ^= 0x55;
    std::fs::write(&bad_path, bytes).unwrap();

    let (_store, _out) = start_store(&m, "64 MB", &dir.0, "1 GB");
    let keys = http_get(&m.admin, "/get_all_keys");
    let mut listed: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
    listed.sort_unstable();
    let mut on_disk: Vec<&str> = records.iter().map(|(k, _)| k.as_str()).collect();
    on_disk.sort_unstable();
    assert_eq!(listed, on_disk, "the master's view is the disk's");
    let verified = cli(
        &m.rpc,
        &m.meta,
        &["--count=400", "--size=1MiB", "--prefix=kill", "verify"],
    );
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(!text.contains("content differs"), "{text}");
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("kill-")).collect();
    // Every record but the damaged one is served; keys never recorded are missing.
    assert_eq!(failed.len(), 400 - (records.len() - 1), "{text}");
    assert!(
        failed.iter().any(|l| l.starts_with(&format!("{bad_key}:"))),
        "{text}"
    );
    assert_eq!(metric(&m, "master_disk_corrupt_records_total"), 1);
}

#[test]
fn a_disk_path_in_use_or_unusable_is_refused_at_start() {
    let m = start_master();
    let dir = TempDir::new("busy");
    let (_store, _out) = start_store(&m, "16 MB", &dir.0, "64 MB");
    let run = |disk: &str, cap: &str| {
        Command::new(env!("CARGO_BIN_EXE_mooncake_store_service"))
            .env("RUST_BACKTRACE", "0")
            .args([
                "--host=127.0.0.1",
                "--port=0",
                "--global_segment_size=16 MB",
                &format!("--master_server_address={}", m.rpc),
                &format!("--metadata_server={}", m.meta),
                &format!("--disk_path={disk}"),
                &format!("--disk_capacity={cap}"),
            ])
            .output()
            .unwrap()
    };
    let busy = run(&dir.0.display().to_string(), "64 MB");
    assert!(!busy.status.success());
    let err = String::from_utf8_lossy(&busy.stderr);
    assert!(err.contains("in use by another running service"), "{err}");
    let full = run(&dir.0.join("x").display().to_string(), "900000 GB");
    let err = String::from_utf8_lossy(&full.stderr);
    assert!(!full.status.success() && err.contains("free"), "{err}");
    let bad = run("/proc/no-such/dir", "64 MB");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("not writable"),
        "{err}"
    );
}

#[test]
fn a_master_killed_and_restarted_serves_the_disk_tier_again() {
    let dir = TempDir::new("master");
    let state = TempDir::new("master-state");
    let (_meta_server, mut meta_out) = spawn(
        env!("CARGO_BIN_EXE_http_metadata_server"),
        &["--host=127.0.0.1".into(), "--port=0".into()],
    );
    let meta = last_word(&mut meta_out, "http metadata server listening on");
    let master_at = |port: u16| {
        let args: Vec<String> = vec![
            format!("--rpc_port={port}"),
            "--rpc_address=127.0.0.1".into(),
            "--metrics_host=127.0.0.1".into(),
            "--metrics_port=0".into(),
            "--client_ttl=5".into(),
            format!("--state_dir={}", state.0.display()),
        ];
        let (p, mut out) = spawn(env!("CARGO_BIN_EXE_mooncake_master"), &args);
        let rpc = last_word(&mut out, "mooncake_master rpc listening on");
        let metrics = last_word(&mut out, "mooncake_master metrics on");
        let admin = metrics
            .trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .to_owned();
        Master {
            proc: p,
            rpc,
            meta: meta.clone(),
            admin,
        }
    };
    let mut first = master_at(0);
    let port: u16 = first.rpc.rsplit(':').next().unwrap().parse().unwrap();
    let (_store, _out) = start_store(&first, "32 MB", &dir.0, "1 GB");
    let args = ["--count=128", "--size=1MiB", "--prefix=mr"];
    let filled = cli(&first.rpc, &meta, &[args[0], args[1], args[2], "fill"]);
    assert!(
        filled.status.success(),
        "{}",
        String::from_utf8_lossy(&filled.stdout)
    );
    assert!(metric(&first, "master_disk_only_objects") >= 96);
    // SIGKILL the master; a new one on the same port restores the memory replicas from
    // its state directory, and the store service remounts its segment and its tier.
    first.proc.0.kill().unwrap();
    let _ = first.proc.0.wait();
    let second = master_at(port);
    // Generous: this runs beside the other tests of this file on a small machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let keys = http_get(&second.admin, "/get_all_keys");
        let n = keys.lines().filter(|l| !l.is_empty()).count();
        if n >= 128 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the tier was never mounted again: {n} keys; master metrics:\n{}",
            http_get(&second.admin, "/metrics")
                .lines()
                .filter(|l| l.starts_with("master_") && !l.contains("_total"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let verified = cli(&second.rpc, &meta, &[args[0], args[1], args[2], "verify"]);
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(
        text.contains("verified 128 objects byte for byte"),
        "{text}"
    );
    assert!(metric(&second, "master_disk_hits_total") >= 96);
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct SmallFs(PathBuf);

impl SmallFs {
    /// `None` where this process may not mount (not root, or no mount namespace rights).
    fn mount(name: &str, size: &str) -> Option<Self> {
        let p = std::env::temp_dir().join(format!("mooncake-e2e-fs-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&p).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&p)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::fs::remove_dir(&p);
            return None;
        }
        Some(Self(p))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A real `ENOSPC`: the tier's filesystem fills up under it (a 100 MB tmpfs, 90 MB of it
/// taken by another file after the tier started). Demotion stops, the objects it could
/// not keep are evicted cleanly (every put succeeds), the master counts it, and what the
/// tier did keep is still served byte for byte. Needs a mount (root); elsewhere it says so
/// and checks nothing.
#[test]
fn a_full_device_stops_demotion_and_evicts_cleanly() {
    let Some(fs) = SmallFs::mount("enospc", "100m") else {
        eprintln!("a_full_device_stops_demotion_and_evicts_cleanly: cannot mount a tmpfs here (needs root); not run");
        return;
    };
    let m = start_master();
    let (_store, _out) = start_store(&m, "64 MB", &fs.0.join("tier"), "64 MB");
    // Leave about 10 MB of the device free: the tier believes it has 64 MB.
    std::fs::write(fs.0.join("ballast"), vec![7u8; 90 << 20]).unwrap();
    let args = ["--count=128", "--size=1MiB", "--prefix=full"];
    let filled = cli(&m.rpc, &m.meta, &[args[0], args[1], args[2], "fill"]);
    assert!(
        filled.status.success(),
        "{}",
        String::from_utf8_lossy(&filled.stdout)
    );
    assert!(metric(&m, "master_disk_full_total") >= 1);
    assert!(metric(&m, "master_disk_demotion_failures_total") >= 1);
    let kept = metric(&m, "master_disk_objects");
    assert!(
        (1..=10).contains(&kept),
        "{kept} records on a 10 MB remainder"
    );
    // Whatever is listed is served with the right bytes; the rest is simply missing.
    let verified = cli(&m.rpc, &m.meta, &[args[0], args[1], args[2], "verify"]);
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(!text.contains("content differs"), "{text}");
    let missing = text.lines().filter(|l| l.starts_with("full-")).count() as u64;
    let listed = http_get(&m.admin, "/get_all_keys")
        .lines()
        .filter(|l| !l.is_empty())
        .count() as u64;
    assert_eq!(missing, 128 - listed, "{text}");
    assert!(missing > 0, "the device could not hold everything: {text}");
    assert!(listed >= kept);
}

/// `--disk_write_through`: every put reaches the holder's disk in the background, so a
/// store service killed with SIGKILL (its memory gone) and restarted on the same
/// directory serves every object, not only the ones memory pressure had demoted.
#[test]
fn with_write_through_every_object_survives_the_loss_of_the_holders_memory() {
    let m = common::start_local_master(&["--disk_write_through"]);
    let dir = TempDir::new("write-through");
    let store = start_store(&m, "64 MB", &dir.0, "1 GB");
    let args = ["--count=128", "--size=1MiB", "--prefix=wt"];
    let filled = cli(&m.rpc, &m.meta, &[args[0], args[1], args[2], "fill"]);
    assert!(filled.status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&m, "master_disk_write_throughs_total") < 128 {
        assert!(Instant::now() < deadline, "the copies did not land");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(store);
    // Let the master notice the death and drop the segment (client_ttl 2 s).
    std::thread::sleep(Duration::from_secs(4));
    let (_store, _out) = start_store(&m, "64 MB", &dir.0, "1 GB");
    let verified = cli(&m.rpc, &m.meta, &[args[0], args[1], args[2], "verify"]);
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(
        text.contains("verified 128 objects byte for byte"),
        "{text}"
    );
}

#[test]
fn a_key_removed_while_its_holder_was_down_does_not_come_back_with_the_holder() {
    let m = start_master();
    let dir = TempDir::new("tomb");
    let (mut store, _out) = start_store(&m, "64 MB", &dir.0, "1 GB");
    let filled = cli(
        &m.rpc,
        &m.meta,
        &["--count=150", "--size=1MiB", "--prefix=tomb", "fill"],
    );
    assert!(filled.status.success(), "{filled:?}");
    // Wait until most values live on the disk only, then kill the holder.
    let started = Instant::now();
    // 150 MiB into 64 MB of memory: at least ~86 of them are demoted.
    while record_keys(&dir.0).len() < 50 {
        assert!(started.elapsed() < Duration::from_secs(60), "no demotion");
        std::thread::sleep(Duration::from_millis(20));
    }
    store.0.kill().unwrap();
    let _ = store.0.wait();
    std::thread::sleep(Duration::from_secs(4)); // client_ttl 2 s: the master drops it
    let mut on_disk: Vec<String> = record_keys(&dir.0).into_iter().map(|(k, _)| k).collect();
    on_disk.sort_unstable();
    // While the holder is down, the user removes two keys whose only copy is on its disk.
    let removed = [on_disk[0].clone(), on_disk[1].clone()];
    for key in &removed {
        let out = Command::new(env!("CARGO_BIN_EXE_mooncake"))
            .arg(format!("--master_server_address={}", m.rpc))
            .arg(format!("--metadata_server={}", m.meta))
            .arg(format!("--admin_address={}", m.admin))
            .args(["remove", key])
            .output()
            .unwrap();
        // The master no longer lists the key: "not found" is the answer, but the removal
        // must still stick.
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("object not found")
                || out.status.success(),
            "{out:?}"
        );
    }
    let (_store, _out) = start_store(&m, "64 MB", &dir.0, "1 GB");
    let keys = http_get(&m.admin, "/get_all_keys");
    let listed: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
    for key in &removed {
        assert!(
            !listed.contains(&key.as_str()),
            "{key} came back: {listed:?}"
        );
    }
    assert_eq!(
        listed.len(),
        on_disk.len() - removed.len(),
        "every other record is served again"
    );
    // The holder deletes the refused records.
    let started = Instant::now();
    loop {
        let left: Vec<String> = record_keys(&dir.0).into_iter().map(|(k, _)| k).collect();
        if removed.iter().all(|k| !left.contains(k)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "refused records stay on disk"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
