//! The master's status page in a real headless browser (Debian's `chromium`), against a
//! live master with two store services: the page's script renders the segments and the
//! counters, and refreshes them from `/api/v1/status`.
//!
//! Skipped with a message when `chromium` is not installed, unless
//! `MOONCAKE_TEST_REQUIRE_SERVICES=1` (CI, whose `.ci/run` installs it), which makes a
//! missing browser a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod ops;
use ops::{stderr, Pool};

fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .flat_map(|d| [d.join("chromium"), d.join("chromium-browser")])
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let required = std::env::var("MOONCAKE_TEST_REQUIRE_SERVICES").as_deref() == Ok("1");
        assert!(
            !required,
            "`chromium` is not on PATH and MOONCAKE_TEST_REQUIRE_SERVICES=1: install the Debian package `chromium`"
        );
        eprintln!(
            "skipped: `chromium` is not on PATH (install the Debian package `chromium`; \
             MOONCAKE_TEST_REQUIRE_SERVICES=1 makes this a failure)"
        );
    }
    found
}

/// Runs headless chromium with `args` on `url` (killed after 90 s); returns its stdout.
fn run_chromium(bin: &Path, profile: &Path, args: &[&str], url: &str) -> String {
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).ok();
        s
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium {args:?} failed: {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {args:?} did not finish in 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

#[test]
fn the_status_page_shows_segments_and_counters_in_a_browser() {
    let Some(bin) = chromium() else {
        return;
    };
    let pool = Pool::start(2);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("status-page-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let value = dir.join("value.bin");
    std::fs::write(&value, vec![7u8; 5 << 20]).unwrap();
    for k in ["a", "b", "c"] {
        let out = pool.cli(&["put", k, value.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(pool.cli(&["get", "a", "-o", "/dev/null"]).status.success());
    assert!(!pool.cli(&["get", "never-written"]).status.success());
    let url = format!("http://{}/", pool.admin);

    let dom = run_chromium(
        &bin,
        &dir.join("profile-dom"),
        &["--virtual-time-budget=5000", "--dump-dom"],
        &url,
    );
    // Rendered by the page's script into table cells (the embedded JSON has no <td>).
    for (_, segment) in &pool.stores {
        assert!(
            dom.contains(&format!("<td>{segment}</td>")),
            "segment {segment} not rendered:\n{dom}"
        );
    }
    assert_eq!(
        dom.matches("<td class=\"ok\">alive</td>").count(),
        4,
        "two alive segments and two alive clients:\n{dom}"
    );
    assert!(
        dom.contains("<div class=\"v\" id=\"keys\">3</div>"),
        "{dom}"
    );
    assert!(dom.contains("<td>get_replica_list</td>"), "{dom}");
    // One hit of "a" by the CLI's size lookup, one by its read; one miss, never written.
    assert!(
        dom.contains("<div class=\"v\" id=\"hitrate\">66.7%</div>"),
        "{dom}"
    );
    assert!(
        dom.contains("<td class=\"n warn\">1</td>"),
        "the never_written miss:\n{dom}"
    );
    // Rates need a second data set: they appear only after the script's own fetch.
    assert!(
        !dom.contains("id=\"putrate\">-<"),
        "no refresh from /api/v1/status:\n{dom}"
    );
    assert!(
        dom.contains("<span id=\"error\" class=\"bad\"></span>"),
        "{dom}"
    );

    let shot = dir.join("status-page.png");
    run_chromium(
        &bin,
        &dir.join("profile-shot"),
        &[
            "--virtual-time-budget=5000",
            "--hide-scrollbars",
            "--window-size=1200,860",
            &format!("--screenshot={}", shot.display()),
        ],
        &url,
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
}
