//! Real etcd and Redis servers for tests, started from `PATH` on free loopback ports.
//!
//! When the binary is missing the test is skipped with a message on stderr, unless
//! `MOONCAKE_TEST_REQUIRE_SERVICES=1` (CI), which makes it a failure.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The binary `name` from `PATH`; `None` (after saying why) when the test should skip.
///
/// # Panics
/// When it is missing and `MOONCAKE_TEST_REQUIRE_SERVICES=1`.
pub(crate) fn require_binary(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let required = std::env::var("MOONCAKE_TEST_REQUIRE_SERVICES").as_deref() == Ok("1");
        assert!(
            !required,
            "`{name}` is not on PATH and MOONCAKE_TEST_REQUIRE_SERVICES=1: install the Debian package `{package}`"
        );
        eprintln!(
            "skipped: `{name}` is not on PATH (install the Debian package `{package}`; \
             MOONCAKE_TEST_REQUIRE_SERVICES=1 makes this a failure)"
        );
    }
    found
}

/// A port that was free a moment ago on 127.0.0.1 and that no other test in this
/// process was given: the tests run in parallel threads, and a port one test released
/// (to hand it to its server) may otherwise be handed out again before that server
/// binds it, so that two servers race for one port.
pub(crate) fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind 127.0.0.1:0");
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("mooncake-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server process, killed on drop.
pub(crate) struct Server {
    child: Child,
    /// `host:port` of its client port.
    pub(crate) addr: String,
    log: PathBuf,
    _dir: TempDir,
}

impl Server {
    /// The server's process id (to stop and continue it).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's output so far, for failure messages.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the server answers `probe` on its client port (a request and a
    /// text its answer must contain: an accepted connection alone can be a loopback
    /// connection to itself, or another process that holds the port); the server's log
    /// when it exited first (for example because another process took its port).
    fn wait_listening(mut self, probe: (&[u8], &str)) -> Result<Self, String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("server exited with {status}:\n{}", self.log()));
            }
            if answers(&self.addr, probe) {
                // A server that lost its port exits at once: look again before trusting
                // the connection (it may have reached whoever holds the port).
                std::thread::sleep(Duration::from_millis(100));
                if let Ok(Some(status)) = self.child.try_wait() {
                    return Err(format!("server exited with {status}:\n{}", self.log()));
                }
                return Ok(self);
            }
            assert!(
                Instant::now() < deadline,
                "server at {} did not listen within 20 s:\n{}",
                self.addr,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether the server at `addr` answers `request` with a reply containing `expect`.
fn answers(addr: &str, (request, expect): (&[u8], &str)) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(request).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    let mut got = Vec::new();
    while let Ok(n @ 1..) = s.read(&mut buf) {
        got.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&got).contains(expect) {
            return true;
        }
    }
    false
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server `args(ports)` describes, on fresh ports until one start listens
/// (three tries: a port that was free a moment ago can be taken by another process).
fn spawn(
    binary: &Path,
    tag: &str,
    ports: usize,
    probe: (&[u8], &str),
    args: impl Fn(&Path, &[u16]) -> Vec<String>,
) -> Server {
    let mut last = String::new();
    for _ in 0..3 {
        let dir = TempDir::new(tag);
        let ports: Vec<u16> = (0..ports).map(|_| free_port()).collect();
        let log = dir.path().join("server.log");
        let out = std::fs::File::create(&log).expect("create log");
        let err = out.try_clone().expect("clone log");
        let child = Command::new(binary)
            .args(args(dir.path(), &ports))
            // etcd 3.4 refuses to start on arm64 without it; harmless elsewhere.
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let server = Server {
            child,
            addr: format!("127.0.0.1:{}", ports[0]),
            log,
            _dir: dir,
        };
        match server.wait_listening(probe) {
            Ok(server) => return server,
            Err(log) => last = log,
        }
    }
    panic!(
        "{} did not start in three tries; last: {last}",
        binary.display()
    )
}

/// A single-member etcd on free loopback ports with a temporary data dir; `None` when
/// the test should skip. Requests up to 32 MiB are allowed (stock etcd: 1.5 MiB), so
/// the conformance suite's 2 MiB descriptor fits.
pub(crate) fn start_etcd() -> Option<Server> {
    let binary = require_binary("etcd", "etcd-server")?;
    // Healthy: elected and serving.
    let health: (&[u8], &str) = (b"GET /health HTTP/1.0\r\n\r\n", "\"health\":\"true\"");
    Some(spawn(&binary, "etcd", 2, health, |dir, ports| {
        let client_url = format!("http://127.0.0.1:{}", ports[0]);
        let peer_url = format!("http://127.0.0.1:{}", ports[1]);
        vec![
            "--name=mooncake-test".to_owned(),
            format!("--data-dir={}", dir.join("data").display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=mooncake-test={peer_url}"),
            "--max-request-bytes=33554432".to_owned(),
            "--log-level=warn".to_owned(),
        ]
    }))
}

/// A Redis server on a free loopback port without persistence; `None` when the test
/// should skip. `extra` are more `--option value` arguments (e.g. `--requirepass`).
pub(crate) fn start_redis(extra: &[&str]) -> Option<Server> {
    let binary = require_binary("redis-server", "redis-server")?;
    // A server with `--requirepass` answers NOAUTH, which is an answer too.
    let ping: (&[u8], &str) = (b"PING\r\n", "\r\n");
    Some(spawn(&binary, "redis", 1, ping, |dir, ports| {
        let fixed = [
            "--port".to_owned(),
            ports[0].to_string(),
            "--bind".to_owned(),
            "127.0.0.1".to_owned(),
            "--save".to_owned(),
            String::new(),
            "--appendonly".to_owned(),
            "no".to_owned(),
            "--dir".to_owned(),
            dir.display().to_string(),
        ];
        fixed
            .into_iter()
            .chain(extra.iter().map(|s| (*s).to_owned()))
            .collect()
    }))
}
