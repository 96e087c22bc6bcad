//! Every `mooncake` admin command against real processes (a master and two store
//! services), in table and `--json` form, and its error when the master is unreachable.

use std::time::Duration;

mod ops;
use ops::{mooncake, stderr, stdout, Pool};

#[test]
fn every_command_works_against_a_live_pool() {
    let pool = Pool::start(2);
    let dir = std::env::temp_dir().join(format!("mooncake-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let value: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let input = dir.join("value.bin");
    std::fs::write(&input, &value).unwrap();

    // put, then get to a file, to stdout, and as JSON.
    let put = pool.cli_json(&["put", "k1", input.to_str().unwrap()]);
    assert_eq!(
        (put["key"].as_str(), put["size"].as_u64()),
        (Some("k1"), Some(3_000_000))
    );
    let put = pool.cli(&["put", "k2", input.to_str().unwrap(), "--replicas=2"]);
    assert!(
        stdout(&put).contains("k2: stored 2.9 MiB with 2 replica(s)"),
        "{}",
        stderr(&put)
    );
    let output = dir.join("out.bin");
    let got = pool.cli(&["get", "k1", "-o", output.to_str().unwrap()]);
    assert!(got.status.success(), "{}", stderr(&got));
    assert_eq!(std::fs::read(&output).unwrap(), value);
    let raw = pool.cli(&["get", "k2"]);
    assert!(raw.status.success(), "{}", stderr(&raw));
    assert_eq!(
        raw.stdout, value,
        "get without -o writes the bytes to stdout"
    );
    let missing = pool.cli(&["get", "never-put"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("never-put: object not found (-704)"),
        "{}",
        stderr(&missing)
    );

    // status, segments, clients: tables and JSON.
    let status = pool.cli_json(&["status"]);
    assert_eq!(status["key_count"], 2);
    assert_eq!(status["segments"].as_array().unwrap().len(), 2);
    let table = stdout(&pool.cli(&["status"]));
    assert!(table.contains("keys           2"), "{table}");
    assert!(table.contains("never_written=1"), "{table}");
    let segments = pool.cli_json(&["segments"]);
    let names: Vec<&str> = segments
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    let mut expected: Vec<&str> = pool.stores.iter().map(|(_, n)| n.as_str()).collect();
    expected.sort();
    assert_eq!(names, expected);
    assert!(segments
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["alive"] == true));
    let used: u64 = segments
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["used"].as_u64().unwrap())
        .sum();
    assert!(used >= 3 * 3_000_000, "three replicas of 3 MB: {used}");
    let table = stdout(&pool.cli(&["segments"]));
    assert!(
        table.starts_with("SEGMENT") && table.contains(expected[0]),
        "{table}"
    );
    let clients = pool.cli_json(&["clients"]);
    assert!(
        clients
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["alive"] == true)
            .count()
            >= 2
    );
    assert!(stdout(&pool.cli(&["clients"])).contains("alive"));

    // explain: table and JSON.
    let e = pool.cli_json(&["explain", "k1"]);
    assert_eq!(e["now"]["state"], "readable");
    let kinds: Vec<&str> = e["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["placed", "committed"]);
    let text = stdout(&pool.cli(&["explain", "never-put"]));
    assert!(
        text.contains("never-put: a lookup misses now: never_written"),
        "{text}"
    );

    // remove (refused while leased, then forced), and explain says why it is gone.
    let refused = pool.cli(&["remove", "k1"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("object has a lease (-706)"),
        "{}",
        stderr(&refused)
    );
    let removed = pool.cli_json(&["remove", "k1", "--force"]);
    assert_eq!(removed["removed"], true);
    let e = pool.cli_json(&["explain", "k1"]);
    assert_eq!(e["now"]["cause"], "removed");
    let kinds: Vec<&str> = e["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["placed", "committed", "lease_conflict", "removed"]);

    // drain: every object leaves the segment, which then shows as drained. (k2 has a
    // replica on each segment: its copy could go nowhere, so it goes first.)
    assert_eq!(pool.cli_json(&["remove", "k2", "--force"])["removed"], true);
    let victim = pool.stores[0].1.clone();
    for i in 0..8 {
        let k = format!("d{i}");
        let put = pool.cli(&["put", &k, input.to_str().unwrap()]);
        assert!(put.status.success(), "{}", stderr(&put));
    }
    let job = pool.cli_json(&["drain", &victim, "--timeout_sec=60"]);
    assert_eq!(job["status_name"], "SUCCEEDED", "{job}");
    // The moved replicas' old ranges are freed once the move commits (after any lease).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let segments = pool.cli_json(&["segments"]);
        let drained = segments
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == victim.as_str())
            .unwrap()
            .clone();
        assert_eq!(drained["status"], "drained");
        if drained["used"] == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{drained}");
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in 0..8 {
        let got = pool.cli(&["get", &format!("d{i}")]);
        assert_eq!(
            got.stdout,
            value,
            "d{i} readable after the drain: {}",
            stderr(&got)
        );
    }
    let unknown = pool.cli(&["drain", "no-such-segment"]);
    assert!(stderr(&unknown).contains("no segment \"no-such-segment\" is mounted"));

    // get-dir then put-dir under another prefix: the same bytes come back.
    let backup = dir.join("backup");
    let got = pool.cli_json(&["get-dir", backup.to_str().unwrap(), "--prefix=d"]);
    assert_eq!(
        (got["written"].as_u64(), got["bytes"].as_u64()),
        (Some(8), Some(8 * 3_000_000))
    );
    assert_eq!(std::fs::read(backup.join("d3")).unwrap(), value);
    std::fs::write(backup.join("a%2Fslash"), b"slash").unwrap();
    let put = pool.cli(&["put-dir", backup.to_str().unwrap(), "--prefix=copy/"]);
    assert!(
        stdout(&put).contains("stored 9 files"),
        "{}{}",
        stdout(&put),
        stderr(&put)
    );
    assert_eq!(pool.cli(&["get", "copy/d5"]).stdout, value);
    assert_eq!(pool.cli(&["get", "copy/a/slash"]).stdout, b"slash");
    let removed = pool.cli_json(&["remove-all", "--yes", "--force"]);
    assert_eq!(removed["removed"], 17);
    for i in 0..8 {
        let put = pool.cli(&["put", &format!("d{i}"), input.to_str().unwrap()]);
        assert!(put.status.success(), "{}", stderr(&put));
    }

    // remove-all wants --yes.
    let refused = pool.cli(&["remove-all"]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("pass --yes"));
    let all = pool.cli_json(&["remove-all", "--yes", "--force"]);
    assert_eq!(all["removed"], 8);
    assert_eq!(pool.cli_json(&["status"])["key_count"], 0);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_unreachable_master_is_named_in_the_error() {
    // A port nobody listens on: bind, note it, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let meta = format!("http://{dead}/metadata");
    for args in [
        &["status"][..],
        &["segments"],
        &["clients"],
        &["explain", "k"],
        &["drain", "s"],
        &["--json", "status"],
    ] {
        let out = mooncake(&dead, &meta, &dead, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "cannot reach the master's admin HTTP server at {dead}"
            )),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty());
    }
    for args in [
        &["get", "k"][..],
        &["put", "k", "/dev/null"],
        &["remove", "k"],
        &["remove-all", "--yes"],
        &["put-dir", "/tmp"],
        &["get-dir", "/tmp/never-written-by-this-test"],
    ] {
        let started = std::time::Instant::now();
        let out = mooncake(&dead, &meta, &dead, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("cannot reach the master at {dead}")),
            "{args:?}: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
}
