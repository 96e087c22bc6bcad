//! `cargo xtask bench`: the full `store_bench` (master + one store service as processes,
//! a pure client) and a `transfer_engine_bench` sweep, written to `docs/bench/report.md`
//! with an SVG chart of throughput by value size beside the C++ baseline figures of
//! `shared/spec/observed-behaviour.md` §4.2 (best of its two runs).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;

use anyhow::{bail, Result};

use crate::stack::Stack;

/// C++ Mooncake, single client, MB/s (best of the two runs in observed-behaviour.md §4.2).
const BASELINE: &[(&str, &str, f64)] = &[
    ("4KiB", "put", 11.0),
    ("4KiB", "get", 24.0),
    ("4KiB", "put_from", 13.0),
    ("4KiB", "get_into", 20.0),
    ("4KiB", "put_batch[32]", 79.0),
    ("4KiB", "get_batch[32]", 99.0),
    ("4KiB", "batch_put_from[32]", 84.0),
    ("4KiB", "batch_get_into[32]", 99.0),
    ("64KiB", "put", 184.0),
    ("64KiB", "get", 195.0),
    ("64KiB", "put_from", 150.0),
    ("64KiB", "get_into", 212.0),
    ("64KiB", "put_batch[32]", 888.0),
    ("64KiB", "get_batch[32]", 742.0),
    ("64KiB", "batch_put_from[32]", 905.0),
    ("64KiB", "batch_get_into[32]", 847.0),
    ("1MiB", "put", 843.0),
    ("1MiB", "get", 707.0),
    ("1MiB", "put_from", 1540.0),
    ("1MiB", "get_into", 1822.0),
    ("1MiB", "put_batch[32]", 1221.0),
    ("1MiB", "get_batch[32]", 644.0),
    ("1MiB", "batch_put_from[32]", 1726.0),
    ("1MiB", "batch_get_into[32]", 1089.0),
    ("16MiB", "put", 1160.0),
    ("16MiB", "get", 1020.0),
    ("16MiB", "put_from", 2548.0),
    ("16MiB", "get_into", 2319.0),
    ("16MiB", "put_batch[32]", 1313.0),
    ("16MiB", "get_batch[32]", 580.0),
    ("16MiB", "batch_put_from[32]", 1672.0),
    ("16MiB", "batch_get_into[32]", 1689.0),
];

pub(crate) fn run() -> Result<()> {
    let stack = Stack::start("2 GB")?;
    let json = crate::root().join("target/store_bench.json");
    let status = Command::new(crate::root().join("target/release/store_bench"))
        .arg(format!("--master_server_address={}", stack.rpc))
        .arg(format!("--metadata_server={}", stack.metadata))
        .arg(format!("--json={}", json.display()))
        .status()?;
    if !status.success() {
        bail!("store_bench failed ({status})");
    }
    let rows: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    write_report(&rows)
}

pub(crate) fn human(size: u64) -> String {
    if size >= 1 << 20 {
        format!("{}MiB", size >> 20)
    } else {
        format!("{}KiB", size >> 10)
    }
}

/// The C++ baseline of a row, MB/s.
pub(crate) fn baseline(size: &str, op: &str) -> Option<f64> {
    BASELINE
        .iter()
        .find(|(s, o, _)| *s == size && *o == op)
        .map(|(_, _, v)| *v)
}

fn write_report(rows: &[serde_json::Value]) -> Result<()> {
    let baseline: BTreeMap<(String, String), f64> = BASELINE
        .iter()
        .map(|(s, o, v)| (((*s).to_owned(), (*o).to_owned()), *v))
        .collect();
    let mut md = String::from("# store_bench report\n\nOne store service (2 GB segment), one pure client, all on 127.0.0.1. ");
    md.push_str("C++ = best of the two runs in `shared/spec/observed-behaviour.md` §4.2 (measured on the same machine type, not in this run).\n\n");
    md.push_str("| size | op | items | Rust MB/s | C++ MB/s | Rust / C++ | p50 µs | p99 µs |\n|---|---|---:|---:|---:|---:|---:|---:|\n");
    let mut bars = Vec::new();
    for r in rows {
        let size = r["size"].as_u64().unwrap_or(0);
        let op = r["op"].as_str().unwrap_or("").to_owned();
        let mbps = r["mb_per_s"].as_f64().unwrap_or(0.0);
        let base = baseline.get(&(human(size), op.clone())).copied();
        let ratio = base
            .map(|b| format!("{:.1}x", mbps / b))
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "| {} | {op} | {} | {mbps:.0} | {} | {ratio} | {:.0} | {:.0} |",
            human(size),
            r["items"],
            base.map(|b| format!("{b:.0}")).unwrap_or_default(),
            r["p50_us"].as_f64().unwrap_or(0.0),
            r["p99_us"].as_f64().unwrap_or(0.0)
        );
        if let Some(b) = base {
            bars.push((format!("{} {op}", human(size)), mbps, b));
        }
    }
    let dir = crate::root().join("docs/bench");
    std::fs::create_dir_all(&dir)?;
    md.push_str("\n![throughput by value size](store_bench.svg)\n");
    std::fs::write(dir.join("report.md"), &md)?;
    std::fs::write(
        dir.join("store_bench.svg"),
        svg(
            "store_bench MB/s (log scale): Rust (blue) vs C++ baseline (grey)",
            &bars,
        ),
    )?;
    println!("{md}\nwritten to docs/bench/report.md and docs/bench/store_bench.svg");
    Ok(())
}

/// A grouped horizontal bar chart (log scale): Rust and C++ MB/s per workload.
pub(crate) fn svg(title: &str, bars: &[(String, f64, f64)]) -> String {
    let (row, left, width) = (22.0, 190.0, 560.0);
    let height = 40.0 + row * bars.len() as f64;
    let x = |v: f64| left + width * (v.max(1.0).log10() / 4.0).min(1.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"800\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"16\" font-size=\"13\">{title}</text>\n",
        height + 14.0
    );
    for decade in 0..=4 {
        let v = 10f64.powi(decade);
        let _ = writeln!(s, "<line x1=\"{0}\" x2=\"{0}\" y1=\"26\" y2=\"{1}\" stroke=\"#ddd\"/><text x=\"{0}\" y=\"{2}\" text-anchor=\"middle\">{v}</text>", x(v), height - 8.0, height + 8.0);
    }
    for (i, (label, ours, base)) in bars.iter().enumerate() {
        let y = 30.0 + row * i as f64;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{label}</text>",
            left - 6.0,
            y + 13.0
        );
        let _ = writeln!(
            s,
            "<rect x=\"{left}\" y=\"{y}\" width=\"{}\" height=\"9\" fill=\"#1f77b4\"/>",
            x(*ours) - left
        );
        let _ = writeln!(
            s,
            "<rect x=\"{left}\" y=\"{}\" width=\"{}\" height=\"9\" fill=\"#aaa\"/>",
            y + 9.0,
            x(*base) - left
        );
    }
    s.push_str("</svg>\n");
    s
}
