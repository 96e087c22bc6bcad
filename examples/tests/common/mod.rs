//! Helpers shared by the end-to-end tests that start the binaries as processes.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Output, Stdio};

/// A child process, killed when dropped.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bin` with `args`, its stdout piped for [`last_word`].
pub(crate) fn spawn(bin: &str, args: &[String]) -> (Proc, BufReader<ChildStdout>) {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    (Proc(child), out)
}

/// The last word of the first line of `out` that starts with `prefix` (an address the
/// binaries announce).
pub(crate) fn last_word(out: &mut BufReader<ChildStdout>, prefix: &str) -> String {
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

/// Runs `mooncake_store_cli` against the master `rpc` and metadata server `meta`.
pub(crate) fn cli(rpc: &str, meta: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mooncake_store_cli"))
        .arg(format!("--master_server_address={rpc}"))
        .arg(format!("--metadata_server={meta}"))
        .args(args)
        .output()
        .unwrap()
}

/// A master on 127.0.0.1 (free ports) with its embedded HTTP metadata server.
pub(crate) struct LocalMaster {
    pub(crate) proc: Proc,
    /// Its RPC `host:port`.
    pub(crate) rpc: String,
    /// Its metadata URL.
    pub(crate) meta: String,
    /// Its admin/metrics `host:port`.
    pub(crate) admin: String,
}

/// Starts a master on 127.0.0.1 with `--client_ttl=2`, its HTTP metadata server and
/// `extra` flags.
pub(crate) fn start_local_master(extra: &[&str]) -> LocalMaster {
    let mut args: Vec<String> = [
        "--rpc_port=0",
        "--rpc_address=127.0.0.1",
        "--enable_http_metadata_server=1",
        "--http_metadata_server_host=127.0.0.1",
        "--http_metadata_server_port=0",
        "--metrics_host=127.0.0.1",
        "--metrics_port=0",
        "--client_ttl=2",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let (proc, mut out) = spawn(env!("CARGO_BIN_EXE_mooncake_master"), &args);
    let rpc = last_word(&mut out, "mooncake_master rpc listening on");
    let meta = last_word(&mut out, "mooncake_master http metadata server on");
    let admin = last_word(&mut out, "mooncake_master metrics on")
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_owned();
    LocalMaster {
        proc,
        rpc,
        meta,
        admin,
    }
}
