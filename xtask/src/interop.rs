//! `cargo xtask interop`: our TCP transfer engine against the official C++ wheel
//! (`mooncake-transfer-engine-non-cuda==0.3.13.post1`), both directions, byte-exact,
//! through one HTTP metadata server of ours.
//!
//! `cargo xtask interop --bench` then runs the C++ and the Rust `transfer_engine_bench`
//! side by side on the same cases, alternating, and prints the best of each with ratios.
//!
//! `cargo xtask interop --etcd` does the same transfers through one real etcd instead of
//! the HTTP metadata server (see [`etcd`]).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use mooncake_transfer_engine::{
    EngineConfig, LocalBuffer, Opcode, TransferEngine, TransferError, TransferRequest,
};

mod etcd;

const WHEEL: &str = "mooncake-transfer-engine-non-cuda==0.3.13.post1";
const APT: &[&str] = &["libibverbs1", "librdmacm1", "libnuma1", "libaio1"];
const SIZES: &[u64] = &[
    1,
    7,
    4095,
    4096,
    65_537,
    1 << 20,
    (3 << 20) + 5,
    16 << 20,
    64 << 20,
];
const REGION: u64 = 128 << 20;

/// Kills the child process when dropped.
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pattern(off: u64, n: u64, seed: u64) -> Vec<u8> {
    (off..off + n)
        .map(|i| (((i % 251) * 7 + seed) % 256) as u8)
        .collect()
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    if args.iter().any(|a| a == "--etcd") {
        return etcd::run();
    }
    let venv = prepare_venv()?;
    let mut build = crate::cargo();
    build.args(["build", "--release", "--locked", "-p", "mooncake-examples"]);
    crate::run(build)?;
    let (server, url) = start_metadata_server()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(cpp_initiator_rust_target(&venv, &url))?;
    rt.block_on(rust_initiator_cpp_target(&venv, &url))?;
    println!("interop: both directions passed, byte-exact, sizes 1 B .. 64 MiB");
    drop(server);
    if args.iter().any(|a| a == "--bench") {
        crate::te_compare::run(&venv)?;
    }
    Ok(())
}

/// Installs the apt libraries the wheel links against and the wheel into a venv.
pub(crate) fn prepare_venv() -> Result<PathBuf> {
    let missing: Vec<&str> = APT
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg")
                .args(["-s", p])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if !missing.is_empty() {
        crate::run({
            let mut c = Command::new("apt-get");
            c.arg("update").arg("-qq");
            c
        })?;
        crate::run({
            let mut c = Command::new("apt-get");
            c.args(["install", "-y", "-qq"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive");
            c
        })?;
    }
    let venv = crate::root().join("target/interop-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        crate::run({
            let mut c = Command::new("python3");
            c.args(["-m", "venv"]).arg(&venv);
            c
        })?;
    }
    let has_wheel = Command::new(&python)
        .args(["-c", "import mooncake.engine"])
        .env("MC_TCP_BIND_ADDRESS", "127.0.0.1")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_wheel {
        crate::run({
            let mut c = Command::new(venv.join("bin/pip"));
            c.args(["install", "--quiet", WHEEL]);
            c
        })?;
    }
    Ok(venv)
}

/// Starts our HTTP metadata server on a free loopback port; returns it and its URL.
pub(crate) fn start_metadata_server() -> Result<(Guard, String)> {
    let bin = crate::root().join("target/release/http_metadata_server");
    let mut child = Command::new(&bin)
        .args(["--host", "127.0.0.1", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let guard = Guard(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_owned();
    ensure!(
        url.starts_with("http://"),
        "unexpected line from the metadata server: {line:?}"
    );
    Ok((guard, url))
}

fn python(
    venv: &Path,
    script: &'static str,
    args: &[String],
) -> Result<(Guard, BufReader<ChildStdout>)> {
    let path = crate::root()
        .join("target")
        .join(format!("interop-{}.py", args.len()));
    std::fs::write(&path, script)?;
    let mut child = Command::new(venv.join("bin/python"))
        .arg(&path)
        .args(args)
        .env("MC_TCP_BIND_ADDRESS", "127.0.0.1")
        .env("GLOG_minloglevel", "2")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let out = BufReader::new(child.stdout.take().context("no stdout")?);
    Ok((Guard(child), out))
}

/// One of our engines on the metadata store `url` names (`http://…` or `etcd://…`).
async fn engine(url: &str, name: &str) -> Result<TransferEngine> {
    Ok(TransferEngine::start_uri(EngineConfig::new(name), url).await?)
}

async fn cpp_initiator_rust_target(venv: &Path, url: &str) -> Result<()> {
    let rust = engine(url, "127.0.0.1:17381").await?;
    let buf = rust.allocate_buffer(2 * REGION, "cpu:0").await?;
    buf.write_at(0, &pattern(0, REGION, 1));
    let sizes: Vec<String> = SIZES.iter().map(u64::to_string).collect();
    let args = [
        url.to_owned(),
        rust.segment_name().to_owned(),
        buf.addr().to_string(),
        (buf.addr() + REGION).to_string(),
        sizes.join(","),
        "1".into(),
        "2".into(),
    ];
    let (mut child, out) = python(venv, include_str!("interop/cpp_initiator.py"), &args)?;
    let mut done = false;
    for line in out.lines() {
        let line = line?;
        println!("  [c++ initiator] {line}");
        done |= line == "DONE";
    }
    let status = child.0.wait()?;
    ensure!(
        status.success() && done,
        "the C++ initiator failed ({status})"
    );
    let total: u64 = SIZES.iter().sum();
    ensure!(
        buf.to_vec(REGION, total as usize) == pattern(0, total, 2),
        "bytes written by C++ differ"
    );
    println!("interop: C++ initiator -> Rust target: {total} bytes read and written, verified on both sides");
    rust.shutdown().await?;
    Ok(())
}

async fn rust_initiator_cpp_target(venv: &Path, url: &str) -> Result<()> {
    let name = "127.0.0.1:17382";
    let args = [
        url.to_owned(),
        name.to_owned(),
        REGION.to_string(),
        "3".into(),
    ];
    let (mut child, mut out) = python(venv, include_str!("interop/cpp_target.py"), &args)?;
    let mut line = String::new();
    out.read_line(&mut line)?;
    let Some(base) = line
        .trim()
        .strip_prefix("READY ")
        .and_then(|a| a.parse::<u64>().ok())
    else {
        bail!("the C++ target did not start: {line:?}");
    };
    let rust = engine(url, "127.0.0.1:17383").await?;
    let local: LocalBuffer = rust.allocate_buffer(REGION, "cpu:0").await?;
    let seg = rust.open_segment(name).await?;
    let mut off = 0;
    let start = Instant::now();
    for &n in SIZES {
        let req = |opcode, target_offset| TransferRequest {
            opcode,
            source: local.addr(),
            target: seg,
            target_offset,
            length: n,
        };
        rust.transfer(&[req(Opcode::Read, base + off)]).await?;
        ensure!(
            local.to_vec(0, n as usize) == pattern(off, n, 3),
            "read of {n} bytes from C++ differs"
        );
        local.write_at(0, &pattern(off, n, 4));
        rust.transfer(&[req(Opcode::Write, base + REGION + off)])
            .await?;
        println!("  [rust initiator] rust->c++ ok {n} bytes");
        off += n;
    }
    let bad = TransferRequest {
        opcode: Opcode::Read,
        source: local.addr(),
        target: seg,
        target_offset: base + 2 * REGION - 100,
        length: 4096,
    };
    match rust.transfer(&[bad]).await {
        Err(TransferError::Rejected { .. }) => {
            println!("  [rust initiator] out-of-range read refused by the C++ target")
        }
        other => bail!("an out-of-range read of the C++ target gave {other:?}"),
    }
    let again = TransferRequest {
        target_offset: base,
        ..bad
    };
    rust.transfer(&[again])
        .await
        .context("read after a rejection")?;
    let stdin = child.0.stdin.as_mut().context("no stdin")?;
    writeln!(stdin, "VERIFY 4 {off}")?;
    line.clear();
    out.read_line(&mut line)?;
    ensure!(
        line.starts_with("VERIFIED"),
        "the C++ target says: {line:?}"
    );
    println!("interop: Rust initiator -> C++ target: {off} bytes each way in {:?}, verified on both sides", start.elapsed());
    let _ = child.0.wait_timeout_compat(Duration::from_secs(10));
    rust.shutdown().await?;
    Ok(())
}

trait WaitCompat {
    fn wait_timeout_compat(&mut self, limit: Duration) -> Option<std::process::ExitStatus>;
}

impl WaitCompat for Child {
    fn wait_timeout_compat(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(s)) = self.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}
