//! Starting and stopping the project's binaries as processes for `demo` and `bench`.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A child process stopped with SIGTERM (then SIGKILL after 5 s) when dropped, so an
/// error or a panic never leaves it running.
pub(crate) struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    /// Starts `target/release/<name>` with its stdout piped.
    pub(crate) fn start(
        name: &'static str,
        args: &[String],
    ) -> Result<(Self, BufReader<ChildStdout>)> {
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
pub(crate) fn wait_for(out: &mut BufReader<ChildStdout>, prefix: &str) -> Result<String> {
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

/// A master (with its embedded HTTP metadata server) and one store service, on free
/// loopback ports. Dropping it stops both, store service first.
pub(crate) struct Stack {
    /// The master's gRPC `host:port`.
    pub(crate) rpc: String,
    /// The metadata URL.
    pub(crate) metadata: String,
    _store: Proc,
    _master: Proc,
    // Kept open so the services' later announcements do not hit a closed pipe.
    _outputs: Vec<BufReader<ChildStdout>>,
}

impl Stack {
    /// Builds the binaries in release and starts the stack with a `segment` ("512 MB").
    pub(crate) fn start(segment: &str) -> Result<Self> {
        Self::start_with(segment, &[])
    }

    /// Like [`Stack::start`], with more flags for the store service.
    pub(crate) fn start_with(segment: &str, store_flags: &[String]) -> Result<Self> {
        let mut build = crate::cargo();
        build.args(["build", "--release", "--locked", "-p", "mooncake-examples"]);
        crate::run(build)?;
        let flags = [
            "--rpc_port=0",
            "--rpc_address=127.0.0.1",
            "--enable_http_metadata_server=1",
            "--http_metadata_server_host=127.0.0.1",
            "--http_metadata_server_port=0",
            "--metrics_host=127.0.0.1",
            "--metrics_port=0",
        ];
        let (master, mut master_out) = Proc::start("mooncake_master", &flags.map(String::from))?;
        let rpc = wait_for(&mut master_out, "mooncake_master rpc listening on")?;
        let metadata = wait_for(&mut master_out, "mooncake_master http metadata server on")?;
        let metrics = wait_for(&mut master_out, "mooncake_master metrics on")?;
        println!("started mooncake_master: rpc {rpc}, metadata {metadata}, metrics {metrics}");
        let mut args = vec![
            "--host=127.0.0.1".into(),
            "--port=0".into(),
            format!("--global_segment_size={segment}"),
            format!("--master_server_address={rpc}"),
            format!("--metadata_server={metadata}"),
        ];
        args.extend_from_slice(store_flags);
        let (store, mut out) = Proc::start("mooncake_store_service", &args)?;
        wait_for(&mut out, "mooncake_store_service segment")?;
        println!("started mooncake_store_service: {segment} segment mounted");
        Ok(Self {
            rpc,
            metadata,
            _store: store,
            _master: master,
            _outputs: vec![master_out, out],
        })
    }
}
