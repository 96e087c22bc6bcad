//! `cargo xtask demo`: the end-to-end demo. Builds in release, starts `mooncake_master`
//! (with its embedded HTTP metadata server) and one `mooncake_store_service` as processes,
//! runs a short `store_bench` as a pure client (every byte crosses the transport), prints
//! the table and stops everything it started, also on an error or Ctrl-C.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A child process stopped with SIGTERM (then SIGKILL) when dropped.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn start(name: &'static str, args: &[String]) -> Result<(Self, BufReader<ChildStdout>)> {
        let bin = crate::root().join("target/release").join(name);
        let mut child = Command::new(&bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let out = BufReader::new(child.stdout.take().context("no stdout")?);
        Ok((Self { name, child }, out))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                println!("stopped {} (pid {})", self.name, self.child.id());
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads lines until one starts with `prefix`; returns its last word.
fn wait_for(out: &mut BufReader<ChildStdout>, prefix: &str) -> Result<String> {
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line)? == 0 {
            bail!("process exited before printing {prefix:?}");
        }
        if line.starts_with(prefix) {
            return Ok(line
                .trim()
                .rsplit(' ')
                .next()
                .unwrap_or_default()
                .to_owned());
        }
    }
}

pub(crate) fn run() -> Result<()> {
    let mut build = crate::cargo();
    build.args(["build", "--release", "--locked", "-p", "mooncake-examples"]);
    crate::run(build)?;
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let (_master, mut out) = Proc::start(
        "mooncake_master",
        &args(&[
            "--rpc_port=0",
            "--rpc_address=127.0.0.1",
            "--enable_http_metadata_server=1",
            "--http_metadata_server_host=127.0.0.1",
            "--http_metadata_server_port=0",
            "--metrics_host=127.0.0.1",
            "--metrics_port=0",
        ]),
    )?;
    let rpc = wait_for(&mut out, "mooncake_master rpc listening on")?;
    let metadata = wait_for(&mut out, "mooncake_master http metadata server on")?;
    let metrics = wait_for(&mut out, "mooncake_master metrics on")?;
    println!("started mooncake_master: rpc {rpc}, metadata {metadata}, metrics {metrics}");
    let (_store, mut out) = Proc::start(
        "mooncake_store_service",
        &[
            "--host=127.0.0.1".into(),
            "--port=0".into(),
            "--global_segment_size=512 MB".into(),
            format!("--master_server_address={rpc}"),
            format!("--metadata_server={metadata}"),
        ],
    )?;
    let line = wait_for(&mut out, "mooncake_store_service segment")?;
    println!("started mooncake_store_service: 512 MiB segment mounted ({line})");
    println!("running store_bench as a pure client (global_segment_size=0)...");
    let status = Command::new(crate::root().join("target/release/store_bench"))
        .arg(format!("--master_server_address={rpc}"))
        .arg(format!("--metadata_server={metadata}"))
        .args(["--scale=0.25", "--warmup_bytes=256 MB", "--procs=2"])
        .arg("--sizes=4KiB,64KiB,1MiB,16MiB")
        .status()
        .context("cannot start store_bench")?;
    if !status.success() {
        bail!("store_bench failed ({status})");
    }
    println!("demo finished; stopping the processes it started");
    Ok(())
}
