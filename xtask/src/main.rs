//! `cargo xtask`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! - `test`: every test the README promises (the README's test command): the Rust
//!   tests, then the Python package's pytest suite;
//! - `lint`: rustfmt, clippy `-D warnings` on all targets, rustdoc `-D warnings`;
//! - `ci`: `lint` then `test`;
//! - `demo`: the end-to-end demo, the first thing a new user runs;
//! - `interop`: byte-exact transfers with the C++ wheel, both directions (opt-in);
//!   `--etcd` does them through a real etcd instead of our HTTP metadata server.
#![allow(clippy::print_stdout)]

mod bench;
mod chaos;
mod cluster_bench;
mod demo;
mod interop;
mod netns;
mod py_bench;
mod python;
mod shm_bench;
mod stack;
mod te_compare;
#[cfg(test)]
mod tidy;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    match task {
        "test" => test(),
        "lint" => lint(),
        "ci" => {
            lint()?;
            test()
        }
        "demo" => demo::run(),
        "chaos" => chaos::chaos(&args[1..]),
        "cluster-bench" => cluster_bench::run(&args[1..]),
        "soak" => chaos::soak(&args[1..]),
        "chaos-client" => chaos::run_client(args.get(1).map(String::as_str).unwrap_or("")),
        "interop" => interop::run(&args[1..]),
        "bench" => bench::run(),
        "shm-bench" => shm_bench::run(&args[1..]),
        "py-test" => python::test(),
        "py-bench" => py_bench::run(&args[1..]),
        "wheel" => python::install_wheel(true).map(|py| {
            println!("installed the release wheel into {}", py.display());
        }),
        "help" | "--help" | "-h" => {
            println!("usage: cargo xtask <test|lint|ci|demo|interop|bench|shm-bench|py-test|py-bench|wheel>");
            println!("  test  run every test (unit, integration, conformance, end-to-end)");
            println!("  lint  cargo fmt --check, clippy -D warnings, rustdoc -D warnings");
            println!("  ci    lint, then test");
            println!("  bench     the full store_bench against a master and a store service, into docs/bench/report.md");
            println!("  shm-bench [ROUNDS]  1/16 MiB put_from/get_into, shared memory vs TCP, alternating, into docs/bench/shm.md");
            println!("  chaos [--seconds 300] [--seed N] [--release]  faults (SIGKILL/SIGSTOP/master restart) under load; invariants checked");
            println!("  soak [--seconds 300] [--clients 16]  many clients, no faults: zero errors, p99, master memory per key");
            println!("  cluster-bench [--delay_us N] [--procs 4] [--sizes L] [--loopback]  store_bench with master, 2 store services and client on separate hosts (namespaces), into docs/bench/cluster.md");
            println!("  py-test  build the Python wheel (dev profile) and run its pytest suite");
            println!("  py-bench [--tcp] [--redis] [--procs 4] [--rounds 2]  the Python-level store benchmark, ours vs the C++ wheel (and Redis), into docs/bench/python.md (python-tcp.md with --tcp)");
            println!("  interop [--bench] [--etcd]  byte-exact transfers with the C++ wheel (mooncake-transfer-engine-non-cuda 0.3.13.post1), both directions, through our HTTP metadata server; --etcd: through one real etcd (/usr/bin/etcd) instead, plus two Rust engines through it and a check of the keys they wrote; --bench (HTTP mode): then C++ and Rust transfer_engine_bench side by side");
            println!("  wheel    build the release wheel into target/wheels and install it into target/py-venv");
            println!(
                "  demo  start a master and a store service, run a short store_bench, stop them"
            );
            Ok(())
        }
        other => bail!("unknown xtask `{other}`; run `cargo xtask help`"),
    }
}

/// The workspace root (the parent of this crate's folder).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

pub(crate) fn run(mut cmd: Command) -> Result<()> {
    println!("$ {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn test() -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--locked"]);
    run(cmd)?;
    python::test()
}

fn lint() -> Result<()> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    run(fmt)?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy)?;
    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps", "--lib", "--locked"])
        .env("RUSTDOCFLAGS", "-Dwarnings");
    run(doc)
}
