//! A live pool for the operator tests: a master and store services as processes, and
//! the `mooncake` CLI run against them.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{ChildStdout, Command, Output};

#[path = "../common/mod.rs"]
mod common;
pub(crate) use common::{spawn, Proc};

/// A master with its RPC, metadata and admin addresses, and its store services.
pub(crate) struct Pool {
    pub(crate) rpc: String,
    pub(crate) meta: String,
    pub(crate) admin: String,
    /// The store services and their segment names.
    pub(crate) stores: Vec<(Proc, String)>,
    pub(crate) master: Proc,
}

/// The rest of the first line of `out` that starts with `prefix`.
fn line_after(out: &mut BufReader<ChildStdout>, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "no line starting with {prefix:?}"
        );
        if let Some(rest) = line.strip_prefix(prefix) {
            return rest.trim().to_owned();
        }
    }
}

impl Pool {
    /// A master and `stores` store services of 64 MB each, on 127.0.0.1.
    pub(crate) fn start(stores: usize) -> Pool {
        let m = common::start_local_master(&[]);
        let (master, rpc, meta, admin) = (m.proc, m.rpc, m.meta, m.admin);
        let mut pool = Pool {
            rpc,
            meta,
            admin,
            stores: Vec::new(),
            master,
        };
        for _ in 0..stores {
            pool.add_store();
        }
        pool
    }

    /// Starts one more store service; returns its segment name.
    pub(crate) fn add_store(&mut self) -> String {
        let args = vec![
            "--host=127.0.0.1".into(),
            "--port=0".into(),
            "--global_segment_size=64 MB".into(),
            format!("--master_server_address={}", self.rpc),
            format!("--metadata_server={}", self.meta),
        ];
        let (p, mut out) = spawn(env!("CARGO_BIN_EXE_mooncake_store_service"), &args);
        let rest = line_after(&mut out, "mooncake_store_service segment ");
        let name = rest.split(' ').next().unwrap().to_owned();
        // Keep the pipe drained so the service never blocks on a full stdout.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink);
        });
        self.stores.push((p, name.clone()));
        name
    }

    /// Runs `mooncake` with this pool's addresses and `args`.
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        mooncake(&self.rpc, &self.meta, &self.admin, args)
    }

    /// Runs `mooncake … --json args` and parses its stdout; panics (with stderr) if it
    /// failed.
    pub(crate) fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        assert!(out.status.success(), "mooncake {args:?}: {}", stderr(&out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("mooncake {args:?}: not JSON ({e}): {}", stdout(&out)))
    }

    /// `GET path` on the master's admin port: the body.
    pub(crate) fn http_get(&self, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(&self.admin).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default()
    }
}

/// Runs `mooncake` against the given addresses.
pub(crate) fn mooncake(rpc: &str, meta: &str, admin: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mooncake"))
        .arg(format!("--master_server_address={rpc}"))
        .arg(format!("--metadata_server={meta}"))
        .arg(format!("--admin_address={admin}"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
