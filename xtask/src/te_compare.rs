//! Side-by-side runs of the C++ and the Rust `transfer_engine_bench` on loopback TCP.
//!
//! Each implementation gets its own target process; the initiators alternate (C++, Rust,
//! C++, Rust) on every case and the best run of each is kept, because two runs of one
//! binary here differ by up to 3x. Results go to stdout and `target/te-compare.md`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::interop::{start_metadata_server, Guard};

const BUFFER: &str = "1073741824";

struct Bench {
    name: &'static str,
    bin: PathBuf,
    target: &'static str,
    initiator: &'static str,
}

fn cpp_bench(venv: &Path) -> Result<PathBuf> {
    let lib = venv.join("lib");
    for entry in std::fs::read_dir(&lib)?.flatten() {
        let p = entry
            .path()
            .join("site-packages/mooncake/transfer_engine_bench");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("the C++ transfer_engine_bench is not in {}", lib.display())
}

fn start_target(b: &Bench, url: &str) -> Result<Guard> {
    let child = Command::new(&b.bin)
        .args([
            "--mode=target",
            "--protocol=tcp",
            &format!("--buffer_size={BUFFER}"),
        ])
        .arg(format!("--local_server_name={}", b.target))
        .arg(format!("--metadata_server={url}"))
        .env("MC_TCP_BIND_ADDRESS", "127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", b.bin.display()))?;
    Ok(Guard(child))
}

fn initiate(b: &Bench, url: &str, op: &str, block: u64, threads: u64, secs: u64) -> Result<f64> {
    let out = Command::new(&b.bin)
        .args([
            "--mode=initiator",
            "--protocol=tcp",
            "--batch_size=128",
            &format!("--buffer_size={BUFFER}"),
        ])
        .arg(format!("--local_server_name={}", b.initiator))
        .arg(format!("--segment_id={}", b.target))
        .arg(format!("--metadata_server={url}"))
        .arg(format!("--operation={op}"))
        .arg(format!("--block_size={block}"))
        .arg(format!("--threads={threads}"))
        .arg(format!("--duration={secs}"))
        .env("MC_TCP_BIND_ADDRESS", "127.0.0.1")
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.contains("Test completed"))
        .with_context(|| {
            format!(
                "{} initiator printed no result ({}):\n{}",
                b.name,
                out.status,
                text.lines().rev().take(5).collect::<Vec<_>>().join("\n")
            )
        })?;
    let gbps = line
        .split("throughput ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("unparsable throughput")?;
    Ok(gbps)
}

pub(crate) fn run(venv: &Path) -> Result<()> {
    let benches = [
        Bench {
            name: "C++",
            bin: cpp_bench(venv)?,
            target: "127.0.0.1:17401",
            initiator: "127.0.0.1:17402",
        },
        Bench {
            name: "Rust",
            bin: crate::root().join("target/release/transfer_engine_bench"),
            target: "127.0.0.1:17411",
            initiator: "127.0.0.1:17412",
        },
    ];
    let (_server, url) = start_metadata_server()?;
    let _targets: Vec<Guard> = benches
        .iter()
        .map(|b| start_target(b, &url))
        .collect::<Result<_>>()?;
    std::thread::sleep(Duration::from_secs(4));
    let secs = std::env::var("TE_COMPARE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let mut rows = Vec::new();
    for op in ["read", "write"] {
        for block in [65_536u64, 1 << 20] {
            for threads in [1u64, 4] {
                let mut best = [0f64; 2];
                for _round in 0..2 {
                    for (i, b) in benches.iter().enumerate() {
                        let g = initiate(b, &url, op, block, threads, secs)?;
                        best[i] = best[i].max(g);
                    }
                }
                let row = format!(
                    "| {op} | {} KiB | 128 | {threads} | {:.2} | {:.2} | {:.1}x |",
                    block / 1024,
                    best[0],
                    best[1],
                    best[1] / best[0].max(1e-9)
                );
                println!("{row}");
                rows.push(row);
            }
        }
    }
    let table = format!(
        "| op | block | batch | threads | C++ GB/s | Rust GB/s | Rust / C++ |\n|---|---|---|---|---:|---:|---:|\n{}\n",
        rows.join("\n")
    );
    std::fs::write(crate::root().join("target/te-compare.md"), &table)?;
    println!(
        "\n{table}(best of 2 alternating runs of {secs} s each; written to target/te-compare.md)"
    );
    Ok(())
}
