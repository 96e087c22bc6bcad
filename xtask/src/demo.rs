//! `cargo xtask demo`: the end-to-end demo. Builds in release, starts `mooncake_master`
//! (with its embedded HTTP metadata server) and one `mooncake_store_service` as processes,
//! runs a short `store_bench` as a pure client (every byte crosses the transport), prints
//! the table and stops everything it started, also on an error or Ctrl-C.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::stack::Stack;

pub(crate) fn run() -> Result<()> {
    let stack = Stack::start("512 MB")?;
    println!("running store_bench as a pure client (global_segment_size=0)...");
    let status = Command::new(crate::root().join("target/release/store_bench"))
        .arg(format!("--master_server_address={}", stack.rpc))
        .arg(format!("--metadata_server={}", stack.metadata))
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
