//! `cargo xtask shm-bench [ROUNDS]`: the same-host comparison of issue 8. A master and one
//! store service (3 GB segment) as processes, and `store_bench` as a pure client doing
//! 1 MiB and 16 MiB `put_from`/`get_into`, with the store service's segment in shared
//! memory (copies) and in private memory (TCP), alternating, ROUNDS times each (default
//! 5); the best MB/s per row and mode go to `docs/bench/shm.md` beside the C++ figures.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::stack::Stack;

/// C++ Mooncake, MB/s (best of the two runs in observed-behaviour.md §4.2).
const BASELINE: &[(u64, &str, f64)] = &[
    (1 << 20, "put_from", 1540.0),
    (1 << 20, "get_into", 1822.0),
    (16 << 20, "put_from", 2548.0),
    (16 << 20, "get_into", 2319.0),
];

const MODES: [(&str, &str); 2] = [("tcp", "false"), ("shm", "true")];

pub(crate) fn run(args: &[String]) -> Result<()> {
    let rounds: usize = match args.first() {
        Some(n) => n.parse().context("shm-bench takes a number of rounds")?,
        None => 5,
    };
    // (size, op) -> mode -> MB/s of every round
    let mut runs: BTreeMap<(u64, String), BTreeMap<&str, Vec<f64>>> = BTreeMap::new();
    for round in 1..=rounds {
        for (mode, shared) in MODES {
            println!("round {round}/{rounds}: {mode}");
            let stack = Stack::start_with("3 GB", &[format!("--shared_memory={shared}")])?;
            let json = crate::root().join(format!("target/shm_bench_{mode}.json"));
            let status = Command::new(crate::root().join("target/release/store_bench"))
                .arg(format!("--master_server_address={}", stack.rpc))
                .arg(format!("--metadata_server={}", stack.metadata))
                .args([
                    "--sizes=1MiB,16MiB",
                    "--apis=zero_copy",
                    "--procs=0",
                    "--quiet",
                ])
                .arg(format!("--json={}", json.display()))
                .status()?;
            drop(stack);
            if !status.success() {
                bail!("store_bench failed ({status})");
            }
            let rows: Vec<serde_json::Value> =
                serde_json::from_str(&std::fs::read_to_string(&json)?)?;
            for r in rows {
                let size = r["size"].as_u64().unwrap_or(0);
                let op = r["op"].as_str().unwrap_or("").to_owned();
                let mbs = r["mb_per_s"].as_f64().unwrap_or(0.0);
                runs.entry((size, op))
                    .or_default()
                    .entry(mode)
                    .or_default()
                    .push(mbs);
            }
        }
    }
    let md = report(&runs, rounds)?;
    let path = crate::root().join("docs/bench/shm.md");
    std::fs::write(&path, &md)?;
    println!("{md}\nwritten to {}", path.display());
    Ok(())
}

fn report(
    runs: &BTreeMap<(u64, String), BTreeMap<&str, Vec<f64>>>,
    rounds: usize,
) -> Result<String> {
    let best = |v: Option<&Vec<f64>>| v.map_or(0.0, |v| v.iter().copied().fold(0.0, f64::max));
    let mut md = String::from("# Same-host transport: shared memory vs TCP\n\n");
    writeln!(
        md,
        "`cargo xtask shm-bench {rounds}`: one store service (3 GB segment) and `store_bench` as a pure client on 127.0.0.1; the segment in `/dev/shm` (the client copies) or in private memory (TCP), alternating, {rounds} rounds each; best MB/s per row. C++ = best of the two runs in `shared/spec/observed-behaviour.md` §4.2 (TCP; measured on the same machine type, not in this run).\n"
    )?;
    md.push_str("| size | op | TCP MB/s | shm MB/s | shm / TCP | C++ MB/s | shm / C++ | TCP runs | shm runs |\n|---|---|---:|---:|---:|---:|---:|---|---|\n");
    for ((size, op), modes) in runs {
        let (tcp, shm) = (best(modes.get("tcp")), best(modes.get("shm")));
        let cpp = BASELINE
            .iter()
            .find(|(s, o, _)| s == size && o == op)
            .map_or(0.0, |b| b.2);
        let list = |m: &str| {
            modes
                .get(m)
                .map(|v| {
                    v.iter()
                        .map(|x| format!("{x:.0}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        };
        writeln!(
            md,
            "| {} MiB | {op} | {tcp:.0} | {shm:.0} | {:.1}x | {cpp:.0} | {:.1}x | {} | {} |",
            size >> 20,
            shm / tcp.max(1.0),
            shm / cpp.max(1.0),
            list("tcp"),
            list("shm")
        )?;
    }
    Ok(md)
}
